fn main() {
    let t0 = std::time::Instant::now();
    let path = std::env::args().nth(1).unwrap();
    let only: Vec<String> = std::env::args().skip(2).collect();
    let bytes: Vec<u8> = if std::env::var_os("READ").is_some() {
        std::fs::read(&path).unwrap()
    } else {
        tagfence::cli::read_input(std::path::Path::new(&path))
            .unwrap()
            .to_vec()
    };
    let t1 = t0.elapsed();
    let doc = if only.is_empty() {
        tagfence::core::service_tags::ServiceTags::parse(&bytes)
    } else {
        tagfence::core::service_tags::ServiceTags::parse_only(&bytes, &only)
    }
    .unwrap();
    let t2 = t0.elapsed();
    eprintln!("read {:?} parse {:?} tags {}", t1, t2 - t1, doc.len());
}
