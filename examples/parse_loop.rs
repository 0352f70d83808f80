fn main() {
    let path = std::env::args().nth(1).unwrap();
    let n: usize = std::env::args().nth(2).map_or(50, |s| s.parse().unwrap());
    let only: Vec<String> = std::env::args().skip(3).collect();
    let bytes = std::fs::read(&path).unwrap();
    let mut times = Vec::new();
    for _ in 0..n {
        let t0 = std::time::Instant::now();
        let doc = if only.is_empty() {
            tagfence::core::service_tags::ServiceTags::parse(&bytes)
        } else {
            tagfence::core::service_tags::ServiceTags::parse_only(&bytes, &only)
        };
        std::hint::black_box(doc.unwrap());
        times.push(t0.elapsed());
    }
    eprintln!(
        "first {:?} second {:?} third {:?} last {:?}",
        times[0],
        times[1],
        times[2],
        times[n - 1]
    );
}
