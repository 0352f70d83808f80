//! TLS on loopback: the certificate the emulator serves https with, and the rustls server
//! configuration built from it.
//!
//! Microsoft's SDKs, `az` and Terraform send a bearer token only over https (azure-core's
//! `BearerTokenCredentialPolicy` refuses plain http), so a local stand-in for ARM has to speak
//! TLS to be usable unchanged. [`TlsIdentity::generate`] makes a throw-away CA and a server
//! certificate for `localhost`, `127.0.0.1` and `::1` signed by it (ECDSA P-256, through rcgen
//! on aws-lc-rs, as the root crate's own tests make Azurite's); a client then trusts the CA's
//! PEM ([`TlsIdentity::ca_pem`]), e.g. through `REQUESTS_CA_BUNDLE` or `SSL_CERT_FILE`.
//! [`TlsIdentity::from_pem`] serves a certificate chain and key the caller made instead.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A server certificate chain and its key (PEM), and the CA that issued it when the emulator
/// made it.
#[derive(Clone)]
pub struct TlsIdentity {
    cert_chain_pem: String,
    key_pem: String,
    ca_pem: Option<String>,
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rcgen could not make the CA or the server certificate.
    #[error("generating the TLS certificates: {0}")]
    Generate(String),
    /// The given PEM holds no certificate, no key, or something that does not parse.
    #[error("reading the TLS {what}: {detail}")]
    Pem {
        /// `certificate chain` or `private key`.
        what: &'static str,
        /// What went wrong.
        detail: String,
    },
    /// rustls refused the certificate and key (a key that does not match, an unsupported
    /// algorithm).
    #[error("setting up TLS with the certificate and key: {0}")]
    Config(String),
}

impl fmt::Debug for TlsIdentity {
    // The private key stays out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("generated_ca", &self.ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// A new CA (`CN=tagfence-emulator local CA`) and a server certificate for `localhost`,
    /// `127.0.0.1` and `::1` signed by it. Both keys live only in memory; nothing is written.
    ///
    /// # Errors
    ///
    /// [`TlsError::Generate`] when rcgen fails (it does not for these fixed parameters).
    pub fn generate() -> Result<TlsIdentity, TlsError> {
        let fail = |error: rcgen::Error| TlsError::Generate(error.to_string());
        let ca_key = KeyPair::generate().map_err(fail)?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "tagfence-emulator local CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).map_err(fail)?;
        let issuer = Issuer::new(ca, ca_key);

        let key = KeyPair::generate().map_err(fail)?;
        let mut server = CertificateParams::new(vec!["localhost".to_owned()]).map_err(fail)?;
        server.subject_alt_names.extend([
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        ]);
        server
            .distinguished_name
            .push(DnType::CommonName, "tagfence-emulator");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        server.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let cert = server.signed_by(&key, &issuer).map_err(fail)?;
        Ok(TlsIdentity {
            cert_chain_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            ca_pem: Some(ca_cert.pem()),
        })
    }

    /// Serves the given certificate chain (leaf first) and private key, both PEM. The CA is the
    /// caller's: [`TlsIdentity::ca_pem`] is `None`.
    ///
    /// # Errors
    ///
    /// [`TlsError::Pem`] or [`TlsError::Config`] when they cannot be used.
    pub fn from_pem(cert_chain_pem: &str, key_pem: &str) -> Result<TlsIdentity, TlsError> {
        let identity = TlsIdentity {
            cert_chain_pem: cert_chain_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            ca_pem: None,
        };
        identity.server_config()?;
        Ok(identity)
    }

    /// The PEM of the CA that issued the server certificate, when the emulator made it.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// The server certificate chain, PEM.
    pub fn cert_chain_pem(&self) -> &str {
        &self.cert_chain_pem
    }

    /// rustls' server configuration: this certificate, TLS 1.2 and 1.3, HTTP/1.1 by ALPN.
    pub(crate) fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let chain = CertificateDer::pem_slice_iter(self.cert_chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| TlsError::Pem {
                what: "certificate chain",
                detail: error.to_string(),
            })?;
        if chain.is_empty() {
            return Err(TlsError::Pem {
                what: "certificate chain",
                detail: "no CERTIFICATE block".to_owned(),
            });
        }
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).map_err(|error| {
            TlsError::Pem {
                what: "private key",
                detail: error.to_string(),
            }
        })?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| TlsError::Config(error.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|error| TlsError::Config(error.to_string()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// The first byte of a TLS connection: a handshake record (RFC 8446 §5.1, content type 22).
/// A plain HTTP request starts with a method's first letter, so one peeked byte tells them
/// apart and both can share a port.
pub(crate) const TLS_HANDSHAKE: u8 = 0x16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_identity_serves_and_hides_its_key() {
        let identity = TlsIdentity::generate().unwrap();
        assert!(identity
            .ca_pem()
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(identity.server_config().is_ok());
        assert!(!format!("{identity:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn given_pem_is_checked() {
        let made = TlsIdentity::generate().unwrap();
        let given = TlsIdentity::from_pem(made.cert_chain_pem(), &made.key_pem).unwrap();
        assert!(given.ca_pem().is_none());
        assert!(matches!(
            TlsIdentity::from_pem("", &made.key_pem),
            Err(TlsError::Pem {
                what: "certificate chain",
                ..
            })
        ));
        assert!(matches!(
            TlsIdentity::from_pem(made.cert_chain_pem(), "nonsense"),
            Err(TlsError::Pem {
                what: "private key",
                ..
            })
        ));
        let other = TlsIdentity::generate().unwrap();
        assert!(matches!(
            TlsIdentity::from_pem(made.cert_chain_pem(), &other.key_pem),
            Err(TlsError::Config(_))
        ));
    }
}
