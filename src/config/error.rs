//! Why a configuration was refused: one [`ConfigError`] per problem, each one lowercase line
//! naming the setting as the user wrote it (`TAGFENCE_MAX_RULES=lots`, `--max-rules 2000`,
//! `tagfence.toml: [defaults] max_rules = 2000`) and what is allowed; all of them together in
//! [`ConfigErrors`].

use std::fmt;

/// One problem with the configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The TOML file could not be read, or is not TOML.
    #[error("reading the configuration file {path}: {detail}")]
    File { path: String, detail: String },
    /// A setting's value is malformed or out of range. `setting` names it with its value, as
    /// the user wrote it.
    #[error("{setting}: {reason}")]
    Invalid { setting: String, reason: String },
    /// A setting that makes sense only with another one, or not with another one.
    #[error("{setting}: {reason}")]
    Conflict { setting: String, reason: String },
    /// A setting this command needs was not given.
    #[error("{setting} is needed: {reason}")]
    Missing { setting: String, reason: String },
    /// Two listed resources are the same resource (resource ids compare case-insensitively,
    /// and `resources` and `vaults` are one list). `noun`: what the resource is
    /// ([`Kind::noun`](crate::core::kind::Kind::noun)).
    #[error("{noun} {vault} is listed twice: {first} and {again}")]
    DuplicateVault {
        noun: &'static str,
        vault: String,
        first: String,
        again: String,
    },
    /// A resource would get neither a tag nor a static rule. `noun`: what the resource is.
    #[error("{noun} {vault}: no tags or static rules selected; give {hint}")]
    NothingSelected {
        noun: &'static str,
        vault: String,
        hint: String,
    },
    /// Neither a listed resource nor a discovery scope: nothing to manage.
    #[error("no resources to manage; give {hint}")]
    NoVaults { hint: String },
    /// A discovered vault's tag value does not make a valid target.
    #[error("its tag {tag}='{value}': {reason}")]
    Discovered {
        tag: String,
        value: String,
        reason: String,
    },
}

/// Every problem found in one validation pass, in the order found, none repeated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigErrors(Vec<ConfigError>);

impl ConfigErrors {
    /// Adds `error`, unless the same problem is there already (a `[defaults]` value every
    /// vault inherits is one problem, not one per vault).
    pub fn push(&mut self, error: ConfigError) {
        if !self.0.contains(&error) {
            self.0.push(error);
        }
    }

    /// Adds every problem of `other`.
    pub fn extend(&mut self, other: ConfigErrors) {
        for error in other.0 {
            self.push(error);
        }
    }

    /// The problems, in the order found.
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }

    /// How many problems were found.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none was.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Each problem as its one line.
    pub fn lines(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }

    /// `value` when no problem was found, else the problems. Steps that found one give a
    /// stand-in value so that the pass can go on and find the others; it is dropped here.
    ///
    /// # Errors
    /// `self`, when it holds any problem.
    pub fn into_result<T>(self, value: T) -> Result<T, ConfigErrors> {
        if self.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> Self {
        ConfigErrors(vec![error])
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// On one line: the problems joined with `; `. Callers that can show lines show
/// [`ConfigErrors::lines`] instead.
impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.lines().join("; "))
    }
}

impl std::error::Error for ConfigErrors {}
