//! [`ListMirror`]: a small real HTTPS server (rustls) on 127.0.0.1 that serves list files, as a
//! list mirror or raw.githubusercontent.com does (or plain HTTP: [`ListMirror::start_plain`]): `ETag` and `Last-Modified` on every 200, 304
//! to a matching `If-None-Match` or `If-Modified-Since`. It can fail on purpose (503) and go
//! down (connections refused). Its certificate is signed by a CA made at run time
//! ([`ListMirror::ca_file`]): telesink trusts it through `SSL_CERT_FILE`, as a real private
//! mirror would be trusted, with no test-only hook in telesink.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Where telesink caches a URL list, relative to the state directory (the query log's): the
/// name rule of `lists::sources::cache_path`, written out.
pub fn cache_rel(url: &str) -> String {
    let bare = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url);
    let name: String = bare
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(".telesink-cache/{name}.txt")
}

/// One file the mirror serves.
#[derive(Clone, Debug)]
pub struct MirrorFile {
    pub etag: String,
    pub last_modified: String,
    pub body: String,
}

/// One request the mirror received.
#[derive(Clone, Debug, Default)]
pub struct MirrorRequest {
    pub path: String,
    pub if_none_match: Option<String>,
    pub if_modified_since: Option<String>,
    /// The status answered.
    pub status: u16,
}

#[derive(Default)]
struct MirrorState {
    files: Mutex<HashMap<String, MirrorFile>>,
    requests: Mutex<Vec<MirrorRequest>>,
    /// Answer every request with this status (e.g. 503) instead.
    fail_with: Mutex<Option<u16>>,
}

pub struct ListMirror {
    port: u16,
    state: Arc<MirrorState>,
    /// None: plain HTTP.
    tls: Option<Arc<rustls::ServerConfig>>,
    ca_file: PathBuf,
    _dir: tempfile::TempDir,
    running: Option<(Arc<AtomicBool>, thread::JoinHandle<()>)>,
}

impl ListMirror {
    /// A CA, a certificate for 127.0.0.1 and localhost signed by it, and the server, up.
    pub fn start() -> ListMirror {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "telesink test list CA");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);

        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "telesink test list mirror");
        let cert = params.signed_by(&key, &issuer).unwrap();

        let dir = tempfile::Builder::new()
            .prefix("telesink-mirror-")
            .tempdir()
            .unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_cert.pem()).unwrap();

        let chain = vec![CertificateDer::from(cert.der().to_vec())];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let tls = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let mut m = ListMirror {
            port: 0,
            state: Arc::new(MirrorState::default()),
            tls: Some(Arc::new(tls)),
            ca_file,
            _dir: dir,
            running: None,
        };
        m.up();
        m
    }

    /// The same mirror over plain HTTP (no CA: [`ca_file`](Self::ca_file) names no file).
    pub fn start_plain() -> ListMirror {
        let dir = tempfile::Builder::new()
            .prefix("telesink-mirror-")
            .tempdir()
            .unwrap();
        let mut m = ListMirror {
            port: 0,
            state: Arc::new(MirrorState::default()),
            tls: None,
            ca_file: dir.path().join("none.pem"),
            _dir: dir,
            running: None,
        };
        m.up();
        m
    }

    /// The PEM file of the CA that signed the mirror's certificate (for `SSL_CERT_FILE`).
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}/{path}", self.port)
    }

    /// Serves `body` at `/path` with these validators.
    pub fn put(&self, path: &str, etag: &str, last_modified: &str, body: &str) {
        self.state.files.lock().unwrap().insert(
            format!("/{path}"),
            MirrorFile {
                etag: etag.into(),
                last_modified: last_modified.into(),
                body: body.into(),
            },
        );
    }

    /// Answers every request with `status` (Some(503)), or normally again (None).
    pub fn fail_with(&self, status: Option<u16>) {
        *self.state.fail_with.lock().unwrap() = status;
    }

    pub fn requests(&self) -> Vec<MirrorRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Requests for `/path`.
    pub fn requests_for(&self, path: &str) -> Vec<MirrorRequest> {
        let p = format!("/{path}");
        self.requests()
            .into_iter()
            .filter(|r| r.path == p)
            .collect()
    }

    pub fn up(&mut self) {
        // Back on its old port: another test's socket may hold it for a moment (CI once got
        // "address in use" here), so try for a while before failing.
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind((Ipv4Addr::LOCALHOST, self.port)) {
                Ok(l) => break l,
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 50 => {
                    tries += 1;
                    thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("list mirror on port {}: {e}", self.port),
            }
        };
        self.port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (state, tls, stop2) = (self.state.clone(), self.tls.clone(), stop.clone());
        let h = thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        conn.set_nonblocking(false).unwrap();
                        let _ = serve(conn, &tls, &state);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        self.running = Some((stop, h));
    }

    /// Closes the listening socket: connections are refused.
    pub fn down(&mut self) {
        if let Some((stop, h)) = self.running.take() {
            stop.store(true, Ordering::SeqCst);
            h.join().unwrap();
        }
    }
}

impl Drop for ListMirror {
    fn drop(&mut self) {
        self.down();
    }
}

fn serve(
    conn: TcpStream,
    tls: &Option<Arc<rustls::ServerConfig>>,
    state: &MirrorState,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    match tls {
        Some(tls) => {
            let server =
                rustls::ServerConnection::new(tls.clone()).map_err(std::io::Error::other)?;
            let mut stream = rustls::StreamOwned::new(server, conn);
            answer(&mut stream, state)?;
            stream.conn.send_close_notify();
            let _ = stream.flush();
            Ok(())
        }
        None => {
            let mut conn = conn;
            answer(&mut conn, state)
        }
    }
}

/// Reads one request from `stream` and answers it.
fn answer(stream: &mut (impl Read + Write), state: &MirrorState) -> std::io::Result<()> {
    let mut req = MirrorRequest::default();
    {
        let mut reader = BufReader::new(&mut *stream);
        let mut first = String::new();
        reader.read_line(&mut first)?;
        req.path = first.split_whitespace().nth(1).unwrap_or("").to_string();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                let v = v.trim().to_string();
                if k.eq_ignore_ascii_case("if-none-match") {
                    req.if_none_match = Some(v);
                } else if k.eq_ignore_ascii_case("if-modified-since") {
                    req.if_modified_since = Some(v);
                }
            }
        }
    }
    let file = state.files.lock().unwrap().get(&req.path).cloned();
    let fail = *state.fail_with.lock().unwrap();
    let response = match (fail, file) {
        (Some(status), _) => {
            req.status = status;
            format!("HTTP/1.1 {status} Failing on purpose\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        }
        (None, None) => {
            req.status = 404;
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
        }
        (None, Some(f)) => {
            // An empty etag: the file is served with Last-Modified only.
            let etag = if f.etag.is_empty() {
                String::new()
            } else {
                format!("ETag: {}\r\n", f.etag)
            };
            let fresh = (!f.etag.is_empty()
                && req.if_none_match.as_deref() == Some(f.etag.as_str()))
                || (req.if_none_match.is_none()
                    && req.if_modified_since.as_deref() == Some(f.last_modified.as_str()));
            if fresh {
                req.status = 304;
                format!(
                    "HTTP/1.1 304 Not Modified\r\n{etag}Last-Modified: {}\r\nConnection: close\r\n\r\n",
                    f.last_modified
                )
            } else {
                req.status = 200;
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n{etag}Last-Modified: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                    f.last_modified,
                    f.body.len(),
                    f.body
                )
            }
        }
    };
    state.requests.lock().unwrap().push(req);
    stream.write_all(response.as_bytes())?;
    stream.flush()
}
