//! How every state document writes its values: the format versions, timestamps (RFC 3339 in
//! UTC, to the millisecond) and clouds (`Public`, `AzureGovernment`, `AzureChina`). Shared by
//! the current documents (`documents.rs`) and the older formats (`legacy.rs`).

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};

/// Version of the source and run documents; bumped on an incompatible change.
pub const STATE_FORMAT_VERSION: u32 = 1;

/// Version of the vault documents ([`VaultState`](super::VaultState)): 4 since they hold the
/// vault's just-in-time grants (a build that knows only format 3 must refuse such a record
/// rather than rewrite it without its grants, which would leave their rules on the vault for
/// good). Format 3 is the same shape without grants; formats 1 and 2 are read and upgraded
/// (see the `state` module's docs).
pub const VAULT_STATE_FORMAT: u32 = 4;

/// An RFC 3339 timestamp, as every state document writes them: UTC, to the millisecond.
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses a timestamp written by [`timestamp`] (or any RFC 3339 timestamp).
pub fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// `at` as a state document keeps it: cut to the millisecond. A record built with it equals the
/// record read back after writing it (the reconcile compares the two).
pub fn stored_time(at: DateTime<Utc>) -> DateTime<Utc> {
    at.trunc_subsecs(3)
}

/// Timestamps as every state document writes them: RFC 3339 in UTC to the millisecond
/// (`2026-12-07T12:25:08.907Z`, [`timestamp`]). Finer precision is cut on writing, so a value
/// that will be compared with what is read back is made with [`stored_time`];
/// any RFC 3339 timestamp is read.
pub(super) mod rfc3339 {
    use chrono::{DateTime, Utc};
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::state::format::{parse_timestamp, timestamp};

    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, out: S) -> Result<S::Ok, S::Error> {
        out.serialize_str(&timestamp(*at))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(input: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(input)?;
        parse_timestamp(&text)
            .ok_or_else(|| D::Error::custom(format!("'{text}' is not an RFC 3339 timestamp")))
    }
}

/// [`rfc3339`] for an optional timestamp (`null` or absent: none).
pub(super) mod optional_rfc3339 {
    use chrono::{DateTime, Utc};
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::state::format::{parse_timestamp, timestamp};

    pub fn serialize<S: Serializer>(at: &Option<DateTime<Utc>>, out: S) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => out.serialize_str(&timestamp(*at)),
            None => out.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        input: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        match Option::<String>::deserialize(input)? {
            None => Ok(None),
            Some(text) => parse_timestamp(&text)
                .map(Some)
                .ok_or_else(|| D::Error::custom(format!("'{text}' is not an RFC 3339 timestamp"))),
        }
    }
}

/// A cloud as the state writes it: `Public`, `AzureGovernment` or `AzureChina` (the names the
/// state has always used, fixed here rather than taken from the core's `Cloud`).
pub(super) mod cloud_name {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::core::service_tags::Cloud;

    pub(super) fn name(cloud: Cloud) -> &'static str {
        match cloud {
            Cloud::Public => "Public",
            Cloud::AzureGovernment => "AzureGovernment",
            Cloud::AzureChina => "AzureChina",
        }
    }

    pub(super) fn parse<E: serde::de::Error>(name: &str) -> Result<Cloud, E> {
        match name {
            "Public" => Ok(Cloud::Public),
            "AzureGovernment" => Ok(Cloud::AzureGovernment),
            "AzureChina" => Ok(Cloud::AzureChina),
            other => Err(E::custom(format!(
                "unknown cloud '{other}' (expected Public, AzureGovernment or AzureChina)"
            ))),
        }
    }

    pub fn serialize<S: Serializer>(cloud: &Cloud, out: S) -> Result<S::Ok, S::Error> {
        out.serialize_str(name(*cloud))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(input: D) -> Result<Cloud, D::Error> {
        parse::<D::Error>(&String::deserialize(input)?)
    }
}

/// [`cloud_name`] for a cloud that may be missing (`null`).
pub(super) mod optional_cloud_name {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::core::service_tags::Cloud;
    use crate::state::format::cloud_name;

    pub fn serialize<S: Serializer>(cloud: &Option<Cloud>, out: S) -> Result<S::Ok, S::Error> {
        match cloud {
            Some(cloud) => out.serialize_some(cloud_name::name(*cloud)),
            None => out.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(input: D) -> Result<Option<Cloud>, D::Error> {
        Option::<String>::deserialize(input)?
            .map(|name| cloud_name::parse::<D::Error>(&name))
            .transpose()
    }
}
