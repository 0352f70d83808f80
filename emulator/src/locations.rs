//! Azure public-cloud locations, for the routes that name one (a vault's `location`, the
//! Service Tags routes' `{location}`).
//!
//! ARM accepts a location's name (`westeurope`) or its display name (`West Europe`): the two
//! compare equal without case and spaces. The list holds the names `az account list-locations`
//! gives for the public cloud's physical regions (Microsoft Learn, "Azure regions"), compiled by
//! hand: a region that exists and is missing here is a bug in the emulator.

/// Public-cloud region names, as ARM lists them.
pub const PUBLIC: &[&str] = &[
    "eastus",
    "eastus2",
    "southcentralus",
    "westus2",
    "westus3",
    "australiaeast",
    "southeastasia",
    "northeurope",
    "swedencentral",
    "uksouth",
    "westeurope",
    "centralus",
    "southafricanorth",
    "centralindia",
    "eastasia",
    "indonesiacentral",
    "japaneast",
    "japanwest",
    "koreacentral",
    "malaysiawest",
    "newzealandnorth",
    "canadacentral",
    "francecentral",
    "germanywestcentral",
    "italynorth",
    "norwayeast",
    "polandcentral",
    "spaincentral",
    "switzerlandnorth",
    "mexicocentral",
    "uaenorth",
    "brazilsouth",
    "israelcentral",
    "qatarcentral",
    "chilecentral",
    "austriaeast",
    "belgiumcentral",
    "denmarkeast",
    "northcentralus",
    "westus",
    "westcentralus",
    "southindia",
    "westindia",
    "koreasouth",
    "canadaeast",
    "francesouth",
    "germanynorth",
    "norwaywest",
    "switzerlandwest",
    "ukwest",
    "uaecentral",
    "brazilsoutheast",
    "australiacentral",
    "australiacentral2",
    "australiasoutheast",
    "southafricawest",
    "jioindiacentral",
    "jioindiawest",
    "swedensouth",
];

/// A location's comparable form: lower case, no whitespace (`West Europe` is `westeurope`).
pub fn normalise(location: &str) -> String {
    location
        .chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Whether `location` names a public-cloud region.
pub fn is_known(location: &str) -> bool {
    let wanted = normalise(location);
    PUBLIC.contains(&wanted.as_str())
}

/// The list ARM puts in its refusals: `a,b,c` (or `a, b, c` with `separator`).
pub fn listed(separator: &str) -> String {
    PUBLIC.join(separator)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_display_names_are_known_and_others_are_not() {
        assert!(is_known("westeurope"));
        assert!(is_known("West Europe"));
        assert!(is_known("EASTUS2"));
        assert!(!is_known("nowhere"));
        assert!(!is_known(""));
        assert_eq!(normalise(" North Central US "), "northcentralus");
        assert!(listed(",").starts_with("eastus,eastus2,"));
    }
}
