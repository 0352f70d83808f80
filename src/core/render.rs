//! Plans and tag listings for people (text, in the style of a terraform plan) and for machines
//! (versioned JSON). Pure: values in, strings out.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ipnet::Ipv4Net;
use serde::Serialize;

use super::desired::{Dropped, FitMode, Origin};
use super::plan::Plan;
use super::service_tags::{Cloud, Format, ServiceTag, ServiceTags};

/// Version of the JSON plan format; bumped on any incompatible change.
pub const PLAN_FORMAT_VERSION: u32 = 1;

pub use super::text::thousands;

fn plural(n: usize, one: &str, many: &str) -> String {
    format!(
        "{} {}",
        thousands(n as u64),
        if n == 1 { one } else { many }
    )
}

/// The human plan.
pub fn plan_text(plan: &Plan) -> String {
    let mut out = String::new();
    write_header(&mut out, plan);
    if plan.has_changes() {
        let _ = writeln!(
            out,
            "tagfence will change the {}'s IP rules as follows ({}):",
            plan.kind.noun(),
            legend(plan)
        );
        out.push('\n');
        write_changes(&mut out, plan);
        out.push('\n');
    }
    write_unmanaged(&mut out, plan);
    write_coincident(&mut out, plan);
    if plan.unreadable > 0 {
        let _ = writeln!(
            out,
            "Rules tagfence cannot read: {} (kept as they are; they count against the limit).",
            plan.unreadable
        );
        out.push('\n');
    }
    write_summary(&mut out, plan);
    out
}

/// `storage account` → `Storage account`.
fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

/// What the plan is of: the vault, the source, the selection, the grace tags and the desired
/// rules, then a blank line.
fn write_header(out: &mut String, plan: &Plan) {
    let desired = &plan.desired;
    match &plan.vault {
        Some(name) => writeln!(
            out,
            "{} {name}: firewall plan",
            capitalised(plan.kind.noun())
        ),
        None => writeln!(out, "Firewall plan"),
    }
    .expect("writing to a String");
    let _ = writeln!(
        out,
        "  Source:    Service Tags {}, change number {}",
        plan.source.cloud, plan.source.change_number
    );
    let mut selected: Vec<String> = desired
        .tags
        .iter()
        .map(|t| format!("{} (change {})", t.name, t.change_number))
        .collect();
    if !desired.static_rules.is_empty() {
        selected.push(plural(
            desired.static_rules.len(),
            "static rule",
            "static rules",
        ));
    }
    let _ = writeln!(out, "  Selection: {}", selected.join(", "));
    if !desired.grace.is_empty() {
        let kept: Vec<String> = desired
            .grace
            .iter()
            .map(|t| {
                format!(
                    "{} (change {}, {})",
                    t.name,
                    t.change_number,
                    plural(t.ipv4_prefixes, "IPv4 prefix", "IPv4 prefixes")
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "  Grace:     also the previous ranges of {}",
            kept.join(", ")
        );
    }
    let _ = writeln!(out, "  Desired:   {}", desired_facts(plan).join("; "));
    out.push('\n');
}

/// The desired rules' count against the limit, and what the fit and the filters cost, when
/// they cost anything.
fn desired_facts(plan: &Plan) -> Vec<String> {
    let desired = &plan.desired;
    let mut facts = vec![format!(
        "{} of at most {}",
        plural(desired.rules.len(), "rule", "rules"),
        thousands(plan.max_rules as u64)
    )];
    if desired.extra_addresses > 0 {
        facts.push(format!(
            "{} extra addresses admitted (summarized)",
            thousands(desired.extra_addresses)
        ));
    }
    if desired.dropped.ipv6 > 0 || desired.dropped.private > 0 {
        facts.push(format!(
            "dropped {} IPv6 and {} reserved-range prefixes",
            thousands(desired.dropped.ipv6 as u64),
            thousands(desired.dropped.private as u64)
        ));
    }
    if !plan.granted.is_empty() {
        facts.push(format!(
            "{} of live just-in-time grants besides",
            plural(plan.granted.len(), "rule", "rules")
        ));
    }
    if !plan.grant_removals.is_empty() {
        facts.push(format!(
            "{} of ended grants to remove",
            plural(plan.grant_removals.len(), "rule", "rules")
        ));
    }
    facts
}

/// The rules on the vault that no selected tag explains and tagfence did not add (drift), when
/// there are any.
fn write_unmanaged(out: &mut String, plan: &Plan) {
    if plan.unmanaged.is_empty() {
        return;
    }
    if plan.prune {
        let _ = writeln!(out, "Unmanaged rules (not from the selection, not added by tagfence; removed because of --prune):");
    } else {
        let _ = writeln!(
            out,
            "Unmanaged rules (not from the selection, not added by tagfence; kept):"
        );
    }
    for rule in &plan.unmanaged {
        let _ = writeln!(out, "         {}", plan.kind.rule_value(*rule));
    }
    out.push('\n');
}

/// The desired rules a person put on the vault first, when there are any: kept as theirs, or
/// adopted.
fn write_coincident(out: &mut String, plan: &Plan) {
    if plan.coincident.is_empty() {
        return;
    }
    if plan.adopting {
        let _ = writeln!(out, "Adopted (desired rules a person put on the vault first; tagfence manages them from now on, because of --adopt-existing):");
    } else {
        let _ = writeln!(out, "A person's rules equal to desired rules (on the vault before tagfence wanted them; kept even when the range is retired; --adopt-existing lets tagfence manage them):");
    }
    for rule in &plan.coincident {
        let _ = writeln!(out, "         {}", plan.kind.rule_value(*rule));
    }
    out.push('\n');
}

/// The one closing line, worded differently for an empty plan so that the two never look alike.
fn write_summary(out: &mut String, plan: &Plan) {
    if plan.has_changes() {
        let _ = writeln!(
            out,
            "Plan: {} to add, {} to remove, {} unchanged, {} unmanaged {}.",
            plan.add.len(),
            plan.remove.len(),
            plan.unchanged,
            plan.unmanaged.len(),
            if plan.prune { "removed" } else { "kept" }
        );
    } else {
        let _ = writeln!(
            out,
            "No changes. The {} firewall matches the selected Service Tags ({} unchanged, {} unmanaged kept).",
            plan.kind.noun(),
            plan.unchanged,
            plan.unmanaged.len()
        );
    }
}

fn legend(plan: &Plan) -> String {
    let mut parts = Vec::new();
    if !plan.add.is_empty() {
        parts.push("+ add");
    }
    if !plan.remove.is_empty() {
        parts.push("- remove");
    }
    parts.join(", ")
}

/// Rows grouped by where the rule comes from: each selected tag in selection order, then the
/// static rules, then removals.
fn write_changes(out: &mut String, plan: &Plan) {
    let desired = &plan.desired;
    // Rules as the firewall holds them: a storage account's single addresses bare.
    let spelled = |rule: &Ipv4Net| plan.kind.rule_value(*rule);
    let mut groups: Vec<(String, Vec<String>)> = desired
        .tags
        .iter()
        .map(|t| (format!("# {}", t.name), Vec::new()))
        .collect();
    let static_group = groups.len();
    groups.push(("# static rules".to_owned(), Vec::new()));
    let retired_group = groups.len();
    groups.push(("# no longer selected".to_owned(), Vec::new()));
    let unmanaged_group = groups.len();
    groups.push(("# unmanaged (--prune)".to_owned(), Vec::new()));
    let granted_group = groups.len();
    groups.push(("# just-in-time grants".to_owned(), Vec::new()));
    let ended_group = groups.len();
    groups.push(("# ended grants".to_owned(), Vec::new()));

    for rule in &plan.add {
        // An added rule is desired, or a live grant's.
        let Some(info) = desired.info_of(rule) else {
            groups[granted_group]
                .1
                .push(format!("      +  {}", spelled(rule)));
            continue;
        };
        let group = match info.origin {
            Origin::Tag(i) => i,
            Origin::Static => static_group,
        };
        let row = if info.extra_addresses > 0 {
            format!(
                "      +  {:<18}  (+{} extra addresses)",
                spelled(rule),
                thousands(info.extra_addresses)
            )
        } else {
            format!("      +  {}", spelled(rule))
        };
        groups[group].1.push(row);
    }
    for rule in &plan.remove {
        let group = if plan.grant_removals.binary_search(rule).is_ok() {
            ended_group
        } else if plan.unmanaged.binary_search(rule).is_ok() {
            unmanaged_group
        } else {
            retired_group
        };
        groups[group].1.push(format!("      -  {}", spelled(rule)));
    }
    for (title, rows) in groups {
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(out, "  {title}");
        for row in rows {
            let _ = writeln!(out, "{row}");
        }
    }
}

fn strings(nets: &[Ipv4Net]) -> Vec<String> {
    nets.iter().map(ToString::to_string).collect()
}

/// The machine plan (`--output json`), field order as documented:
/// `{"format_version":1, "vault", "source", "selection", "static_rules", "fit", "max_rules",
/// "desired", "add", "remove", "unchanged", "unmanaged", "prune", "changes"}`.
#[derive(Debug, Serialize)]
pub struct PlanDocument<'p> {
    pub format_version: u32,
    pub vault: Option<&'p str>,
    /// The firewall's kind (`key_vault`, `storage_account`, `container_registry`).
    pub kind: &'static str,
    pub source: SourceDocument<'p>,
    /// The selected tags, as the document spells them.
    pub selection: Vec<&'p str>,
    pub static_rules: Vec<String>,
    pub fit: FitMode,
    pub max_rules: usize,
    pub desired: DesiredDocument,
    pub add: Vec<String>,
    pub remove: Vec<String>,
    pub unchanged: usize,
    pub unmanaged: Vec<String>,
    /// Desired rules a person put on the vault first (kept as theirs unless adopted).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub coincident: Vec<String>,
    /// Whether the coincident rules are adopted (`--adopt-existing`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub adopt: bool,
    /// IP rules on the vault tagfence cannot read (kept verbatim).
    #[serde(skip_serializing_if = "is_zero")]
    pub unreadable: usize,
    pub prune: bool,
    pub changes: bool,
    /// Previous change numbers of selected tags whose ranges are kept in the grace window.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub grace: BTreeMap<&'p str, u64>,
    /// Whether the desired rules were reused from the last apply (nothing they depend on moved).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub reused: bool,
    /// The rules live just-in-time grants keep or add besides the desired ones.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub granted: Vec<String>,
    /// The removals that are rules of ended grants.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub grant_removals: Vec<String>,
    /// Whether only grants' rules change (a grant, revoke or sweep).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub grants_only: bool,
}

#[derive(Debug, Serialize)]
pub struct SourceDocument<'p> {
    pub cloud: Cloud,
    pub change_number: u64,
    /// Each selected tag's own change number, by name.
    pub tag_change_numbers: BTreeMap<&'p str, u64>,
}

#[derive(Debug, Serialize)]
pub struct DesiredDocument {
    pub rules: Vec<String>,
    pub count: usize,
    pub extra_addresses: u64,
    pub dropped: Dropped,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The machine plan for `plan`.
pub fn plan_json(plan: &Plan) -> PlanDocument<'_> {
    let desired = &plan.desired;
    PlanDocument {
        format_version: PLAN_FORMAT_VERSION,
        vault: plan.vault.as_deref(),
        kind: plan.kind.name(),
        source: SourceDocument {
            cloud: plan.source.cloud,
            change_number: plan.source.change_number,
            tag_change_numbers: desired
                .tags
                .iter()
                .map(|t| (t.name.as_str(), t.change_number))
                .collect(),
        },
        selection: desired.tags.iter().map(|t| t.name.as_str()).collect(),
        static_rules: strings(&desired.static_rules),
        fit: plan.fit,
        max_rules: plan.max_rules,
        desired: DesiredDocument {
            rules: strings(&desired.rules),
            count: desired.rules.len(),
            extra_addresses: desired.extra_addresses,
            dropped: desired.dropped,
        },
        add: strings(&plan.add),
        remove: strings(&plan.remove),
        unchanged: plan.unchanged,
        unmanaged: strings(&plan.unmanaged),
        coincident: strings(&plan.coincident),
        adopt: plan.adopting,
        unreadable: plan.unreadable,
        prune: plan.prune,
        changes: plan.has_changes(),
        grace: desired
            .grace
            .iter()
            .map(|t| (t.name.as_str(), t.change_number))
            .collect(),
        reused: plan.reused,
        granted: strings(&plan.granted),
        grant_removals: strings(&plan.grant_removals),
        grants_only: plan.grants_only,
    }
}

/// The tag listing: one row per tag with its counts.
pub fn tags_table(doc: &ServiceTags) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Service Tags {}, change number {}: {}",
        doc.cloud,
        doc.change_number,
        plural(doc.len(), "tag", "tags")
    );
    out.push('\n');
    let name_width = doc.tags().map(|t| t.name.len()).max().unwrap_or(4).max(4);
    let region_width = doc
        .tags()
        .map(|t| region_name(t.region).len())
        .max()
        .unwrap_or(6)
        .max(6);
    let service_width = doc
        .tags()
        .map(|t| t.system_service.len())
        .max()
        .unwrap_or(14)
        .max(14);
    let _ = writeln!(
        out,
        "{:<name_width$}  {:<region_width$}  {:<service_width$}  {:>6}  {:>5}  {:>5}",
        "NAME", "REGION", "SYSTEM SERVICE", "CHANGE", "IPV4", "IPV6"
    );
    for tag in doc.tags() {
        let _ = writeln!(
            out,
            "{:<name_width$}  {:<region_width$}  {:<service_width$}  {:>6}  {:>5}  {:>5}",
            tag.name,
            region_name(tag.region),
            or_dash(tag.system_service),
            tag.change_number,
            tag.ipv4.len(),
            tag.ipv6.len()
        );
    }
    out
}

/// A tag's region for people: Microsoft publishes global tags with an empty region. (The JSON
/// listing keeps the region as published, empty for global tags.)
fn region_name(region: &str) -> &str {
    if region.is_empty() {
        "global"
    } else {
        region
    }
}

fn or_dash(text: &str) -> &str {
    if text.is_empty() {
        "-"
    } else {
        text
    }
}

/// One tag's prefixes, for people.
pub fn tag_detail(tag: &ServiceTag<'_>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} (region: {}, system service: {}, change number {})",
        tag.name,
        region_name(tag.region),
        or_dash(tag.system_service),
        tag.change_number
    );
    let _ = writeln!(out, "  IPv4 ({}):", tag.ipv4.len());
    for net in tag.ipv4 {
        let _ = writeln!(out, "    {net}");
    }
    let _ = writeln!(out, "  IPv6 ({}):", tag.ipv6.len());
    for net in tag.ipv6 {
        let _ = writeln!(out, "    {net}");
    }
    out
}

/// The tag listing for machines.
#[derive(Debug, Serialize)]
pub struct TagsDocument<'d> {
    pub format_version: u32,
    pub cloud: Cloud,
    pub change_number: u64,
    pub format: Format,
    pub tags: Vec<TagDocument<'d>>,
}

/// One tag: counts in the listing, prefixes when asked for by name.
#[derive(Debug, Serialize)]
pub struct TagDocument<'d> {
    pub name: &'d str,
    pub region: &'d str,
    pub system_service: &'d str,
    pub change_number: u64,
    pub ipv4_count: usize,
    pub ipv6_count: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Vec<String>>,
}

/// The tag listing for machines: counts for every tag, or also the prefixes of the given tags.
pub fn tags_json<'d>(doc: &'d ServiceTags, detail: &[ServiceTag<'d>]) -> TagsDocument<'d> {
    let row = |t: &ServiceTag<'d>, prefixes: bool| TagDocument {
        name: t.name,
        region: t.region,
        system_service: t.system_service,
        change_number: t.change_number,
        ipv4_count: t.ipv4.len(),
        ipv6_count: t.ipv6.len(),
        ipv4: prefixes.then(|| t.ipv4.iter().map(ToString::to_string).collect()),
        ipv6: prefixes.then(|| t.ipv6.iter().map(ToString::to_string).collect()),
    };
    let tags = if detail.is_empty() {
        doc.tags().map(|t| row(&t, false)).collect()
    } else {
        detail.iter().map(|t| row(t, true)).collect()
    };
    TagsDocument {
        format_version: PLAN_FORMAT_VERSION,
        cloud: doc.cloud,
        change_number: doc.change_number,
        format: doc.format,
        tags,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_thousands() {
        for (n, s) in [
            (0, "0"),
            (999, "999"),
            (1000, "1,000"),
            (1234567, "1,234,567"),
            (4294967296, "4,294,967,296"),
        ] {
            assert_eq!(thousands(n), s);
        }
    }

    #[test]
    fn a_global_tag_reads_global_in_every_text_view_and_as_published_in_json() {
        let doc = ServiceTags::parse(
            br#"{"changeNumber": 7, "cloud": "Public", "values": [
              {"name": "AzureDevOps", "properties": {"changeNumber": 3, "region": "", "systemService": "AzureDevOps", "addressPrefixes": ["20.37.158.0/23"]}},
              {"name": "AzureCloud.westeurope", "properties": {"changeNumber": 9, "region": "westeurope", "systemService": "", "addressPrefixes": ["20.38.0.0/24"]}}]}"#,
        )
        .unwrap();
        let table = tags_table(&doc);
        let row = table
            .lines()
            .find(|l| l.starts_with("AzureDevOps "))
            .unwrap();
        assert!(row.contains(" global "), "{row}");
        let detail = tag_detail(&doc.find("AzureDevOps").unwrap());
        assert!(
            detail.starts_with("AzureDevOps (region: global,"),
            "{detail}"
        );
        let json = serde_json::to_value(tags_json(&doc, &[])).unwrap();
        assert_eq!(json["tags"][0]["region"], "");
    }
}
