//! Why a configuration was refused. Each message is one lowercase line naming the setting at
//! fault, as the flag and its environment form, or the file.

/// Why the configuration was refused. Each names the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML file could not be read, or is not valid (an unknown key is an error).
    #[error("reading the configuration file {path}: {detail}")]
    File { path: String, detail: String },
    /// A listed vault is not an ARM resource id of a Key Vault.
    #[error("invalid vault '{given}' ({origin}): {reason}")]
    Vault {
        given: String,
        /// Which list named it: the flag and variable, the file's `vaults`, a `[[vault]]`.
        origin: &'static str,
        reason: String,
    },
    /// Two listed vaults are the same vault (resource ids compare case-insensitively).
    #[error("vault {vault} is listed twice")]
    DuplicateVault { vault: String },
    /// A vault would get neither a tag nor a static rule.
    #[error("vault {vault}: no tags or static rules selected (give --tag/TAGFENCE_TAGS, or tags in the configuration file)")]
    NothingSelected { vault: String },
    /// A vault's static rule is not a public IPv4 address or prefix without host bits.
    #[error("vault {vault}: invalid static rule: {reason}")]
    StaticRule { vault: String, reason: String },
    /// A vault's tags name an unknown profile or geography.
    #[error("vault {vault}: {reason}")]
    Profile { vault: String, reason: String },
    /// A discovered vault's tag value does not make a valid target.
    #[error("its tag {tag}='{value}': {reason}")]
    Discovered {
        tag: String,
        value: String,
        reason: String,
    },
    /// A setting's value is out of range, malformed, or conflicts with another.
    #[error("{setting}: {reason}")]
    Setting {
        setting: &'static str,
        reason: String,
    },
}
