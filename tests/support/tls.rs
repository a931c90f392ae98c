//! Encrypted DNS from the client's side: [`TestCa`], a CA made at run time that signs server
//! certificates (PEM files for `server.tls_cert` / `tls_key`), and [`DotClient`], a DNS-over-TLS
//! client (rustls, blocking) that sends any server name (SNI) and can pipeline queries.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use rustls::pki_types::{CertificateDer, ServerName};

/// A CA and the means to sign server certificates with it.
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub cert_der: CertificateDer<'static>,
}

/// A server certificate: the chain and key as PEM, and its DER for comparing.
pub struct ServerCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

impl TestCa {
    pub fn new() -> TestCa {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "telesink test DoT CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            cert_der: CertificateDer::from(cert.der().to_vec()),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A certificate for `name` and `*.name`.
    pub fn server_cert(&self, name: &str) -> ServerCert {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec![name.to_string(), format!("*.{name}")]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        ServerCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// An expired certificate for `name`.
    pub fn expired_cert(&self, name: &str) -> ServerCert {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        ServerCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert_der.clone()).unwrap();
        let mut c = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(c)
    }
}

/// One DoT connection.
pub struct DotClient {
    tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
}

impl DotClient {
    /// Connects to `addr` asking for server name `sni`, and completes the handshake.
    pub fn connect(ca: &TestCa, addr: SocketAddr, sni: &str) -> Result<DotClient, String> {
        let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let conn = rustls::ClientConnection::new(
            ca.client_config(&[b"dot"]),
            ServerName::try_from(sni.to_string()).unwrap(),
        )
        .map_err(|e| e.to_string())?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn
                .complete_io(&mut tls.sock)
                .map_err(|e| e.to_string())?;
        }
        Ok(DotClient { tls })
    }

    /// The DER of the certificate the server presented.
    pub fn peer_cert(&self) -> Vec<u8> {
        self.tls.conn.peer_certificates().unwrap()[0].to_vec()
    }

    /// Sends one query (not waiting for the answer).
    pub fn send(&mut self, id: u16, name: &str, qtype: RecordType) {
        let mut m = Message::query();
        m.metadata.id = id;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        let bytes = m.to_vec().unwrap();
        let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        self.tls.write_all(&framed).unwrap();
        self.tls.flush().unwrap();
    }

    /// Reads the next answer.
    pub fn recv(&mut self) -> Message {
        let mut len = [0u8; 2];
        self.tls.read_exact(&mut len).unwrap();
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        self.tls.read_exact(&mut buf).unwrap();
        Message::from_vec(&buf).unwrap()
    }

    pub fn query(&mut self, name: &str, qtype: RecordType) -> Message {
        self.send(0x4242, name, qtype);
        self.recv()
    }
}
