//! Criterion benches for the pure core on the real Service Tags files (tests/fixtures).
//!
//! Run: `cargo bench --bench core`. Figures and how they were taken: BENCHMARKS.md.

use std::io::Read;
use std::path::Path;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ipnet::Ipv4Net;
use tagfence::core::cidr;
use tagfence::core::desired::{desired_rules, FitMode, Limits, Selection};
use tagfence::core::fit::{fit, Allowed, Slash31};
use tagfence::core::service_tags::ServiceTags;

const US_REGIONS: [&str; 9] = [
    "AzureCloud.eastus",
    "AzureCloud.eastus2",
    "AzureCloud.centralus",
    "AzureCloud.northcentralus",
    "AzureCloud.southcentralus",
    "AzureCloud.westcentralus",
    "AzureCloud.westus",
    "AzureCloud.westus2",
    "AzureCloud.westus3",
];

fn fixture(change_number: u32) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
        "tests/fixtures/ServiceTags_Public.changeNumber-{change_number}.json.gz"
    ));
    let gz = std::fs::read(&path).expect("fixture present");
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut json)
        .expect("fixture is gzip");
    json
}

fn selection(tags: &[&str]) -> Selection {
    Selection {
        tags: tags.iter().map(|t| t.to_string()).collect(),
        ..Selection::default()
    }
}

fn parse(c: &mut Criterion) {
    let json = fixture(365);
    let gz = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/ServiceTags_Public.changeNumber-365.json.gz"),
    )
    .unwrap();
    let mut group = c.benchmark_group("parse");
    group.throughput(criterion::Throughput::Bytes(json.len() as u64));
    group.bench_function("public_365_json", |b| {
        b.iter(|| ServiceTags::parse(&json).unwrap())
    });
    group.bench_function("public_365_gzip", |b| {
        b.iter(|| ServiceTags::parse(&gz).unwrap())
    });
    // What `tagfence plan` does: read the prefixes of the selected tags only.
    let devops = vec!["AzureDevOps".to_owned()];
    group.bench_function("public_365_json_only_AzureDevOps", |b| {
        b.iter(|| ServiceTags::parse_only(&json, &devops).unwrap())
    });
    let us: Vec<String> = US_REGIONS.iter().map(|t| t.to_string()).collect();
    group.bench_function("public_365_json_only_US_9_regions", |b| {
        b.iter(|| ServiceTags::parse_only(&json, &us).unwrap())
    });
    group.finish();
}

fn select_and_collapse(c: &mut Criterion) {
    let doc = ServiceTags::parse(&fixture(365)).unwrap();
    let unbounded = Limits {
        max_rules: usize::MAX,
        ..Limits::default()
    };
    let mut group = c.benchmark_group("select_collapse");
    for (name, tags) in [
        ("AzureDevOps", &["AzureDevOps"][..]),
        (
            "Europe",
            &["AzureCloud.westeurope", "AzureCloud.northeurope"][..],
        ),
        ("US_9_regions", &US_REGIONS[..]),
        ("AzureCloud", &["AzureCloud"][..]),
    ] {
        let selection = selection(tags);
        group.bench_with_input(BenchmarkId::from_parameter(name), &selection, |b, s| {
            b.iter(|| desired_rules(&doc, s, &unbounded, 0).unwrap())
        });
    }
    group.finish();
}

fn fit_to_limit(c: &mut Criterion) {
    let doc = ServiceTags::parse(&fixture(365)).unwrap();
    let space = |tags: &[&str]| -> Vec<Ipv4Net> {
        let mut public = Vec::new();
        for name in tags {
            cidr::drop_reserved(doc.find(name).unwrap().ipv4, &mut public);
        }
        cidr::collapse(&public)
    };
    let azure_cloud = space(&["AzureCloud"]);
    let us = space(&US_REGIONS);
    let mut group = c.benchmark_group("fit");
    for budget in [1000usize, 400, 200] {
        group.bench_with_input(BenchmarkId::new("AzureCloud", budget), &budget, |b, &k| {
            b.iter(|| fit(&azure_cloud, k, &Allowed::anywhere(), Slash31::Split).unwrap())
        });
    }
    group.bench_function("US_9_regions/1000", |b| {
        b.iter(|| fit(&us, 1000, &Allowed::anywhere(), Slash31::Split).unwrap())
    });
    let envelope = Allowed::within(&us, &azure_cloud);
    group.bench_function("US_9_regions/1000/envelope_AzureCloud", |b| {
        b.iter(|| fit(&us, 1000, &envelope, Slash31::Split).unwrap())
    });
    group.finish();

    // The whole summarize path, as `tagfence plan --fit summarize` runs it.
    let summarize = Limits {
        fit: FitMode::Summarize,
        ..Limits::default()
    };
    let us_selection = selection(&US_REGIONS);
    c.bench_function("desired/US_9_regions/summarize_1000", |b| {
        b.iter(|| desired_rules(&doc, &us_selection, &summarize, 0).unwrap())
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = parse, select_and_collapse, fit_to_limit
}
criterion_main!(benches);
