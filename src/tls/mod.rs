//! Encrypted DNS's certificate and names: the PEM files of `server.tls_cert` / `tls_key`, read
//! and checked ([`load`]), served through a store a renewal swaps ([`Certificates`]), and the
//! device id a client's TLS server name (SNI) or DoH path carries ([`device_id`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Why a certificate cannot be served; each message names the file.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("server.tls_cert {path}: cannot read: {source}")]
    CertUnreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "server.tls_cert {path}: no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)"
    )]
    NoCertificate { path: PathBuf },
    #[error("server.tls_key {path}: cannot read: {source}")]
    KeyUnreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "server.tls_key {path}: no PEM private key in it (expected -----BEGIN PRIVATE KEY-----)"
    )]
    NoKey { path: PathBuf },
    #[error("server.tls_key {path}: unsupported private key: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("server.tls_key {key} does not belong to the certificate in server.tls_cert {cert}")]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("server.tls_cert {path}: not a valid X.509 certificate: {reason}")]
    BadCertificate { path: PathBuf, reason: String },
    #[error(
        "server.tls_cert {path}: expired on {not_after}; renew it (certbot renew, lego renew)"
    )]
    Expired { path: PathBuf, not_after: String },
    #[error("server.tls_cert {path}: not valid before {not_before}; check the clock")]
    NotYetValid { path: PathBuf, not_before: String },
}

/// Reads and checks the certificate chain at `cert` and the key at `key`: both readable PEM, the
/// key the certificate's, the certificate valid now.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, CertError> {
    let cert_pem = std::fs::read(cert).map_err(|source| CertError::CertUnreadable {
        path: cert.to_path_buf(),
        source,
    })?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .filter_map(Result::ok)
        .collect();
    let Some(leaf) = chain.first() else {
        return Err(CertError::NoCertificate {
            path: cert.to_path_buf(),
        });
    };
    check_validity(cert, leaf)?;
    let key_pem = std::fs::read(key).map_err(|source| CertError::KeyUnreadable {
        path: key.to_path_buf(),
        source,
    })?;
    let der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| CertError::NoKey {
        path: key.to_path_buf(),
    })?;
    let signing = any_supported_type(&der).map_err(|e| CertError::BadKey {
        path: key.to_path_buf(),
        reason: e.to_string(),
    })?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|_| CertError::Mismatch {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
    })?;
    Ok(Arc::new(certified))
}

fn check_validity(path: &Path, leaf: &CertificateDer<'_>) -> Result<(), CertError> {
    let (_, x509) = x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| {
        CertError::BadCertificate {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    })?;
    let validity = x509.validity();
    let now = x509_parser::time::ASN1Time::now();
    if now > validity.not_after {
        return Err(CertError::Expired {
            path: path.to_path_buf(),
            not_after: validity.not_after.to_string(),
        });
    }
    if now < validity.not_before {
        return Err(CertError::NotYetValid {
            path: path.to_path_buf(),
            not_before: validity.not_before.to_string(),
        });
    }
    Ok(())
}

/// The certificate served to new connections; [`Certificates::replace`] swaps it (a renewal)
/// without touching connections already open.
#[derive(Debug)]
pub struct Certificates {
    current: ArcSwap<CertifiedKey>,
}

impl Certificates {
    pub fn new(first: Arc<CertifiedKey>) -> Arc<Certificates> {
        Arc::new(Certificates {
            current: ArcSwap::new(first),
        })
    }

    /// Whether `other` holds the chain served now (a change event that changed nothing).
    pub fn serves(&self, other: &CertifiedKey) -> bool {
        self.current.load().cert == other.cert
    }

    pub fn replace(&self, next: Arc<CertifiedKey>) {
        self.current.store(next);
    }

    /// A rustls server configuration serving the current certificate, offering `alpn`.
    pub fn server_config(self: &Arc<Self>, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("ring supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(self.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The longest device id taken from a name or path (a DNS label's length).
const MAX_ID: usize = 63;

/// The device id in a TLS server name: `anna-phone` for `anna-phone.dns.home.example` when
/// `tls_name` is `dns.home.example`. The bare `tls_name`, another name, or a label that is not
/// a client name's shape give none.
pub fn device_id(server_name: &str, tls_name: &str) -> Option<Arc<str>> {
    let name = server_name.trim_end_matches('.');
    let prefix = name
        .len()
        .checked_sub(tls_name.len() + 1)
        .filter(|&n| n > 0)?;
    if !name.is_char_boundary(prefix)
        || !name[prefix + 1..].eq_ignore_ascii_case(tls_name)
        || name.as_bytes()[prefix] != b'.'
    {
        return None;
    }
    id_label(&name[..prefix])
}

/// A device id as written in a DoH path (`/dns-query/anna-phone`) or an SNI label: letters,
/// digits, `-` and `_`, at most 63; lower-cased.
pub fn id_label(s: &str) -> Option<Arc<str>> {
    let ok = !s.is_empty()
        && s.len() <= MAX_ID
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then(|| s.to_ascii_lowercase().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_come_from_the_label_before_tls_name() {
        let t = "dns.home.example";
        assert_eq!(
            device_id("anna-phone.dns.home.example", t).as_deref(),
            Some("anna-phone")
        );
        assert_eq!(
            device_id("Anna-Phone.DNS.home.example.", t).as_deref(),
            Some("anna-phone")
        );
        assert_eq!(device_id("dns.home.example", t), None);
        assert_eq!(device_id("a.b.dns.home.example", t), None);
        assert_eq!(device_id("anna.other.example", t), None);
        assert_eq!(device_id("xdns.home.example", t), None);
        assert_eq!(id_label("tv"), Some("tv".into()));
        assert_eq!(id_label("a/b"), None);
        assert_eq!(id_label(""), None);
    }
}
