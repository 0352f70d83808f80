//! Built-in selections: names that stand for a set of service tags.
//!
//! - `azure-devops`: the `AzureDevOps` tag, Azure DevOps' own inbound ranges. That is what a vault
//!   linked to a variable group needs (Azure DevOps reads the secrets from its own IPs).
//! - `hosted-agents:<geography>`: where Microsoft-hosted agents of an organisation in that
//!   geography may run. That is `AzureCloud.<region>` for every region of the geography, plus
//!   the regions of Microsoft's documented capacity fallback geography where there is one, plus
//!   `AzureDevOps`.
//!
//! # Sources (read 2026-11-26)
//! - The geographies an Azure DevOps organisation can live in (Australia, Brazil, Canada, Asia
//!   Pacific, Europe, India, United Kingdom, United States): "Data locations for Azure DevOps",
//!   <https://learn.microsoft.com/azure/devops/organizations/security/data-location>.
//! - "Your hosted agents run in the same Azure geography as your organization … you must use the
//!   IP ranges from all of the regions that are contained in your geography", and the capacity
//!   fallbacks: Brazil South → United States, West Europe → France: "Microsoft-hosted agents",
//!   section "Agent IP ranges",
//!   <https://learn.microsoft.com/azure/devops/pipelines/agents/hosted#agent-ip-ranges>.
//! - Which regions make up each geography: Azure geographies,
//!   <https://azure.microsoft.com/explore/global-infrastructure/geographies/>, as reported by ARM
//!   (`GET /subscriptions/{id}/locations`, `metadata.geography`).
//! - The region names are those of the weekly Service Tags file, which are not always ARM's:
//!   `AzureCloud.centralfrance` and `AzureCloud.southfrance` for France Central and France South,
//!   `AzureCloud.brazilse` for Brazil Southeast (checked against the file of change number 365 in
//!   `tests/fixtures`).
//!
//! Left out on purpose: canary (`…euap`) and staging (`usstage…`) regions, restricted regions
//! (Jio India), and regions the file lists with only a few prefixes and no public announcement
//! (`northeurope2`, `brazilne`, `southeastus`, `southcentralus2`). Add any of them with `--tag`
//! when needed; this table is reviewed when Microsoft opens a region.

/// One geography: its `AzureCloud` regions, as the Service Tags file names them, and its
/// capacity fallback geography.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geography {
    /// The name a profile uses, e.g. `europe`.
    pub name: &'static str,
    /// Other accepted spellings.
    pub aliases: &'static [&'static str],
    /// As Microsoft's geography table calls it.
    pub display: &'static str,
    pub regions: &'static [&'static str],
    /// Where hosted agents may run when the geography is out of capacity.
    pub fallback: Option<&'static str>,
}

/// Every geography a profile may name.
pub const GEOGRAPHIES: &[Geography] = &[
    Geography {
        name: "united-states",
        aliases: &["us", "usa", "unitedstates"],
        display: "United States",
        regions: &[
            "eastus",
            "eastus2",
            "centralus",
            "northcentralus",
            "southcentralus",
            "westcentralus",
            "westus",
            "westus2",
            "westus3",
        ],
        fallback: None,
    },
    Geography {
        name: "europe",
        aliases: &["eu"],
        display: "Europe",
        regions: &["westeurope", "northeurope"],
        fallback: Some("france"),
    },
    Geography {
        name: "united-kingdom",
        aliases: &["uk", "unitedkingdom"],
        display: "United Kingdom",
        regions: &["uksouth", "ukwest"],
        fallback: None,
    },
    Geography {
        name: "canada",
        aliases: &[],
        display: "Canada",
        regions: &["canadacentral", "canadaeast"],
        fallback: None,
    },
    Geography {
        name: "brazil",
        aliases: &[],
        display: "Brazil",
        regions: &["brazilsouth", "brazilse"],
        fallback: Some("united-states"),
    },
    Geography {
        name: "australia",
        aliases: &[],
        display: "Australia",
        regions: &[
            "australiaeast",
            "australiasoutheast",
            "australiacentral",
            "australiacentral2",
        ],
        fallback: None,
    },
    Geography {
        name: "asia-pacific",
        aliases: &["apac", "asiapacific"],
        display: "Asia Pacific",
        regions: &["eastasia", "southeastasia"],
        fallback: None,
    },
    Geography {
        name: "india",
        aliases: &[],
        display: "India",
        regions: &["centralindia", "southindia", "westindia"],
        fallback: None,
    },
    // Not an Azure DevOps geography, but Europe's capacity fallback.
    Geography {
        name: "france",
        aliases: &[],
        display: "France",
        regions: &["centralfrance", "southfrance"],
        fallback: None,
    },
];

/// The tag of Azure DevOps' own inbound ranges.
pub const AZURE_DEVOPS_TAG: &str = "AzureDevOps";

/// Why a profile name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    #[error(
        "unknown geography '{given}' in profile '{profile}'; known: {}",
        known_geographies()
    )]
    UnknownGeography { profile: String, given: String },
    #[error("unknown profile '{0}'; known: azure-devops, hosted-agents:<geography>")]
    UnknownProfile(String),
}

fn known_geographies() -> String {
    GEOGRAPHIES
        .iter()
        .map(|g| g.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The geography called `name` (or one of its aliases), case-insensitive.
pub fn geography(name: &str) -> Option<&'static Geography> {
    let name = name.trim();
    GEOGRAPHIES.iter().find(|g| {
        g.name.eq_ignore_ascii_case(name) || g.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
    })
}

/// Whether `name` names a profile rather than a tag: profiles are `azure-devops` and anything
/// with a `:` (no service tag name has one).
pub fn is_profile(name: &str) -> bool {
    let name = name.trim();
    name.contains(':') || name.eq_ignore_ascii_case("azure-devops")
}

/// The tags a profile stands for.
///
/// # Errors
/// [`ProfileError`] naming the unknown profile or geography.
pub fn profile_tags(profile: &str) -> Result<Vec<String>, ProfileError> {
    let profile = profile.trim();
    if profile.eq_ignore_ascii_case("azure-devops") {
        return Ok(vec![AZURE_DEVOPS_TAG.to_owned()]);
    }
    let Some((kind, argument)) = profile.split_once(':') else {
        return Err(ProfileError::UnknownProfile(profile.to_owned()));
    };
    if !kind.trim().eq_ignore_ascii_case("hosted-agents") {
        return Err(ProfileError::UnknownProfile(profile.to_owned()));
    }
    let home = geography(argument).ok_or_else(|| ProfileError::UnknownGeography {
        profile: profile.to_owned(),
        given: argument.trim().to_owned(),
    })?;
    let fallback = home.fallback.and_then(geography);
    let mut tags: Vec<String> = std::iter::once(home)
        .chain(fallback)
        .flat_map(|g| g.regions.iter())
        .map(|region| format!("AzureCloud.{region}"))
        .collect();
    tags.push(AZURE_DEVOPS_TAG.to_owned());
    Ok(tags)
}

/// `names` with every profile replaced by its tags, in order, without repeats
/// (case-insensitive).
///
/// # Errors
/// The first [`ProfileError`].
pub fn expand(names: &[String]) -> Result<Vec<String>, ProfileError> {
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for name in names {
        let expanded = if is_profile(name) {
            profile_tags(name)?
        } else {
            vec![name.trim().to_owned()]
        };
        for tag in expanded {
            if !out.iter().any(|t| t.eq_ignore_ascii_case(&tag)) {
                out.push(tag);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::service_tags::ServiceTags;

    #[test]
    fn hosted_agents_of_a_geography_add_its_fallback_and_azure_devops() {
        assert_eq!(
            profile_tags("hosted-agents:europe").unwrap(),
            [
                "AzureCloud.westeurope",
                "AzureCloud.northeurope",
                "AzureCloud.centralfrance",
                "AzureCloud.southfrance",
                "AzureDevOps"
            ]
        );
        let brazil = profile_tags("Hosted-Agents:Brazil").unwrap();
        assert_eq!(brazil.len(), 2 + 9 + 1);
        assert!(brazil.contains(&"AzureCloud.westus3".to_owned()));
        assert_eq!(
            profile_tags("hosted-agents:uk").unwrap(),
            ["AzureCloud.uksouth", "AzureCloud.ukwest", "AzureDevOps"]
        );
        assert_eq!(profile_tags("azure-devops").unwrap(), ["AzureDevOps"]);
    }

    #[test]
    fn unknown_profiles_and_geographies_are_named() {
        assert_eq!(
            profile_tags("hosted-agents:mars").unwrap_err().to_string(),
            "unknown geography 'mars' in profile 'hosted-agents:mars'; known: united-states, europe, united-kingdom, canada, brazil, australia, asia-pacific, india, france"
        );
        assert_eq!(
            expand(&["AzureDevOps".into(), "self-hosted:x".into()])
                .unwrap_err()
                .to_string(),
            "unknown profile 'self-hosted:x'; known: azure-devops, hosted-agents:<geography>"
        );
    }

    #[test]
    fn expansion_keeps_order_and_drops_repeats() {
        let names = vec![
            "AzureDevOps".to_owned(),
            "hosted-agents:uk".to_owned(),
            "azurecloud.uksouth".to_owned(),
            "Sql.WestEurope".to_owned(),
        ];
        assert_eq!(
            expand(&names).unwrap(),
            [
                "AzureDevOps",
                "AzureCloud.uksouth",
                "AzureCloud.ukwest",
                "Sql.WestEurope"
            ]
        );
    }

    #[test]
    fn every_region_of_every_geography_is_a_tag_of_the_real_file() {
        let gz = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/ServiceTags_Public.changeNumber-365.json.gz"
        ))
        .unwrap();
        let doc = ServiceTags::parse(&gz).unwrap();
        for geography in GEOGRAPHIES {
            for tag in profile_tags(&format!("hosted-agents:{}", geography.name)).unwrap() {
                let found = doc
                    .find(&tag)
                    .unwrap_or_else(|| panic!("{tag} ({}) is not in the file", geography.display));
                assert!(!found.ipv4.is_empty(), "{tag} has no IPv4 prefixes");
            }
        }
    }
}
