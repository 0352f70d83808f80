//! Azurite, the real Azure Storage emulator, started per test in the mode production runs in:
//! HTTPS (a test CA made here, trusted by tagfence through `TAGFENCE_STATE_CA_FILE`) and OAuth
//! (`--oauth basic`: bearer tokens are required and their issuer, audience and lifetime are
//! checked, but not their signature), in memory, on a free loopback port.
//!
//! The binary comes from `AZURITE_BIN`, else from `.tools/azurite`, where `scripts/test`
//! installs the pinned version (npm `azurite@3.35.0`; 3.37 needs Node 22).

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// The account Azurite serves by default, in path-style URLs.
pub const ACCOUNT: &str = "devstoreaccount1";

/// A running Azurite blob service; stopped when dropped.
pub struct Azurite {
    child: Child,
    pub port: u16,
    dir: PathBuf,
    /// The PEM of the CA that signed Azurite's certificate.
    pub ca_file: PathBuf,
}

fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("AZURITE_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let installed = super::repo(".tools/azurite/node_modules/.bin/azurite-blob");
    assert!(
        installed.exists(),
        "Azurite is not installed: run scripts/test (it installs azurite@3.35.0 into .tools/azurite) or set AZURITE_BIN to an azurite-blob binary"
    );
    installed
}

/// A CA and a certificate for 127.0.0.1 and localhost signed by it, as PEM files in `dir`.
fn make_certificates(dir: &std::path::Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "tagfence test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate().expect("server key");
    let mut server = CertificateParams::new(vec!["localhost".to_owned()]).expect("server params");
    server
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    server
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    let cert = server.signed_by(&key, &issuer).expect("server certificate");

    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

impl Azurite {
    /// Starts Azurite and waits until it listens.
    pub fn start() -> Azurite {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tagfence-azurite-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (ca_file, cert, key) = make_certificates(&dir);
        let mut child = Command::new(binary())
            .args(["--blobHost", "127.0.0.1", "--blobPort", "0"])
            .args([
                "--inMemoryPersistence",
                "--disableTelemetry",
                "--skipApiVersionCheck",
            ])
            .args(["--oauth", "basic"])
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("Azurite starts (is Node.js installed?)");

        // It prints the address once listening; read it, then keep draining its output so a
        // full pipe never blocks it.
        let (lines, seen) = mpsc::channel::<String>();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let forward = move |stream: Box<dyn std::io::Read + Send>, lines: mpsc::Sender<String>| {
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = lines.send(line);
                }
            });
        };
        forward(Box::new(stdout), lines.clone());
        forward(Box::new(stderr), lines);
        let mut output = Vec::new();
        let port = loop {
            match seen.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => {
                    if let Some(address) = line.split("listens on https://127.0.0.1:").nth(1) {
                        break address.trim().parse::<u16>().expect("a port number");
                    }
                    output.push(line);
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!("Azurite did not start; it said:\n{}", output.join("\n"));
                }
            }
        };
        Azurite {
            child,
            port,
            dir,
            ca_file,
        }
    }

    /// The state URL of `container` (path-style: account, then container).
    pub fn container_url(&self, container: &str) -> String {
        format!("https://127.0.0.1:{}/{ACCOUNT}/{container}", self.port)
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
