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
    /// The CA certificate as PEM (for curl's `--cacert`).
    pub cert_pem: String,
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
            cert_pem: cert.pem(),
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

/// What [`doh`] got back.
#[derive(Debug)]
pub struct DohResponse {
    pub status: u16,
    /// `2` or `1.1`.
    pub http_version: String,
    /// Header lines, lower-cased names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl DohResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn message(&self) -> Message {
        Message::from_vec(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }
}

/// One DoH request with curl (Debian `curl`): `https://<host>:<port><path_and_query>` with
/// `host` resolved to `addr`'s IP, trusting only `ca_file`. `post` = (content type, body).
pub fn doh(
    ca_file: &std::path::Path,
    host: &str,
    addr: SocketAddr,
    path_and_query: &str,
    post: Option<(&str, &[u8])>,
    http2: bool,
) -> DohResponse {
    let dir = tempfile::tempdir().unwrap();
    let body_file = dir.path().join("body");
    let head_file = dir.path().join("head");
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "--cacert"])
        .arg(ca_file)
        .arg("--resolve")
        .arg(format!("{host}:{}:{}", addr.port(), addr.ip()))
        .arg(if http2 { "--http2" } else { "--http1.1" })
        .arg("-o")
        .arg(&body_file)
        .arg("-D")
        .arg(&head_file)
        .args(["-w", "%{http_code} %{http_version}"]);
    if let Some((ct, body)) = post {
        let req = dir.path().join("req");
        std::fs::write(&req, body).unwrap();
        cmd.args(["-H", &format!("content-type: {ct}"), "--data-binary"])
            .arg(format!("@{}", req.display()));
    }
    cmd.arg(format!("https://{host}:{}{path_and_query}", addr.port()));
    let out = cmd.output().expect("curl (Debian package curl) runs");
    let w = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "curl {path_and_query} failed: {w} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut parts = w.split_whitespace();
    let status = parts.next().unwrap().parse().unwrap();
    let http_version = parts.next().unwrap_or("").to_string();
    let headers = std::fs::read_to_string(&head_file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    DohResponse {
        status,
        http_version,
        headers,
        body: std::fs::read(&body_file).unwrap_or_default(),
    }
}

/// A query for `name`/`qtype` as DNS wire bytes (ID 0, as RFC 8484 recommends for GET).
pub fn query_bytes(name: &str, qtype: RecordType) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = 0;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    m.to_vec().unwrap()
}

/// One HTTP/2 DoH connection (the `h2` crate over tokio-rustls, ALPN `h2`), for sending many
/// requests at once on one connection.
pub struct H2Client {
    send: h2::client::SendRequest<hyper::body::Bytes>,
    authority: String,
}

impl H2Client {
    /// Connects to `addr` as `host` (SNI and `:authority`); the connection runs in a task of the
    /// current runtime.
    pub async fn connect(ca: &TestCa, addr: SocketAddr, host: &str) -> H2Client {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(ca.client_config(&[b"h2"]))
            .connect(ServerName::try_from(host.to_string()).unwrap(), tcp)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (send, conn) = h2::client::handshake(tls).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        H2Client {
            send,
            authority: format!("{host}:{}", addr.port()),
        }
    }

    fn request(
        &self,
        method: &str,
        path_and_query: &str,
        content_type: Option<&str>,
    ) -> hyper::Request<()> {
        let mut r = hyper::Request::builder()
            .method(method)
            .uri(format!("https://{}{path_and_query}", self.authority));
        if let Some(ct) = content_type {
            r = r.header("content-type", ct);
        }
        r.body(()).unwrap()
    }

    /// Sends a GET (not waiting for the response); the stream's id and its response.
    pub async fn get(&mut self, path_and_query: &str) -> (u32, h2::client::ResponseFuture) {
        self.send = self.send.clone().ready().await.unwrap();
        let (response, _) = self
            .send
            .send_request(self.request("GET", path_and_query, None), true)
            .unwrap();
        (response.stream_id().as_u32(), response)
    }

    /// Starts a POST whose body is sent later, through the returned stream.
    pub async fn post(
        &mut self,
        path: &str,
        content_type: &str,
    ) -> (
        h2::client::ResponseFuture,
        h2::SendStream<hyper::body::Bytes>,
    ) {
        self.send = self.send.clone().ready().await.unwrap();
        self.send
            .send_request(self.request("POST", path, Some(content_type)), false)
            .unwrap()
    }
}

/// A response's status and whole body.
pub async fn h2_response(response: h2::client::ResponseFuture) -> (u16, Vec<u8>) {
    let response = response.await.unwrap();
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut out = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    (status, out)
}
