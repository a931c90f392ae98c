//! Shared harness for telesink's integration tests.
//!
//! Three pieces, all plain blocking APIs so tests stay ordinary `#[test]` functions:
//!
//! * [`TestUpstream`]: a tiny real DNS server (UDP and TCP on one ephemeral port of 127.0.0.1)
//!   that telesink forwards to. Answers are configured per name with [`Reply`]; every question it
//!   receives is recorded, so a test can assert that a name was *not* forwarded.
//! * [`Telesink`] (a builder) and [`TelesinkProcess`]: write a `config.toml` and list files into
//!   a temporary directory, start `telesink run -c <config>` on free ports, wait until it answers,
//!   and kill it on drop (printing its stdout/stderr when the test failed).
//! * A DNS client: [`query`] / [`try_query`] with [`QueryOpts`] (UDP or TCP, EDNS payload size
//!   and DO bit, query ID, exact question case, source address 127.0.0.x so that every test can
//!   play several distinct clients), plus [`send_raw_udp`] / [`send_raw_tcp`] for malformed input.
//!
//! Besides, [`cli`] runs one `telesink` subcommand to completion and captures its output.
//!
//! Environment: `TELESINK_TEST_KEEP=1` keeps the temporary directories (config, lists, logs,
//! query log) and prints their paths.

#![allow(dead_code)]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, MessageType, OpCode, Query};
pub use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, HTTPS, SOA, SVCB, TXT};
pub use hickory_proto::rr::{Name, RData, Record, RecordType};

/// Path of the telesink binary built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_telesink");

/// Directory of the test fixtures (`tests/fixtures/dns`).
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dns")
}

/// `127.0.0.x`: a distinct client source address on the loopback network.
pub fn client(x: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, x)
}

/// A name in canonical comparison form: lower case, no trailing dot.
pub fn norm(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

// ---------------------------------------------------------------------------------------------
// Test upstream
// ---------------------------------------------------------------------------------------------

/// Transport a question arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

/// One question the [`TestUpstream`] received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenQuestion {
    /// As received (case kept), without the trailing dot.
    pub name: String,
    pub qtype: RecordType,
    pub transport: Transport,
}

/// How the [`TestUpstream`] answers a name.
#[derive(Clone, Debug)]
pub enum Reply {
    /// A records for type A, AAAA records for AAAA, both for ANY; NODATA (with SOA) for the rest.
    Addrs {
        v4: Vec<Ipv4Addr>,
        v6: Vec<Ipv6Addr>,
        ttl: u32,
    },
    /// `qname CNAME chain[0]`, `chain[0] CNAME chain[1]`, …, then `chain[last] A v4` for A/ANY
    /// queries (for other types only the CNAMEs).
    CnameChain {
        chain: Vec<String>,
        v4: Ipv4Addr,
        ttl: u32,
    },
    /// An HTTPS record (priority 1) whose target name is `target`, for HTTPS queries; plus the
    /// default addresses for A/AAAA.
    Https { target: String },
    /// An SVCB record (priority 1) whose target name is `target`, for SVCB queries; plus the
    /// default addresses for A/AAAA.
    Svcb { target: String },
    /// TXT strings for TXT queries; NODATA for the rest.
    Txt(Vec<String>),
    /// NXDOMAIN with an SOA.
    NxDomain,
    /// SERVFAIL.
    ServFail,
    /// The inner reply, sent after a delay.
    Delay(Duration, Box<Reply>),
    /// Never answer (the question is still recorded).
    Never,
}

impl Reply {
    /// One A record, TTL 300.
    pub fn a(ip: Ipv4Addr) -> Reply {
        Reply::Addrs {
            v4: vec![ip],
            v6: vec![],
            ttl: 300,
        }
    }
    /// One AAAA record, TTL 300.
    pub fn aaaa(ip: Ipv6Addr) -> Reply {
        Reply::Addrs {
            v4: vec![],
            v6: vec![ip],
            ttl: 300,
        }
    }
    /// `n` A records (198.18.x.y), TTL 300: too large for a 512-byte UDP answer when n ≥ 35.
    pub fn many_a(n: usize) -> Reply {
        let v4 = (0..n)
            .map(|i| Ipv4Addr::new(198, 18, (i / 250) as u8, (i % 250 + 1) as u8))
            .collect();
        Reply::Addrs {
            v4,
            v6: vec![],
            ttl: 300,
        }
    }
    /// A TXT answer of about `bytes` bytes, in 200-byte strings.
    pub fn long_txt(bytes: usize) -> Reply {
        let mut parts = Vec::new();
        let mut left = bytes;
        let mut i = 0u8;
        while left > 0 {
            let n = left.min(200);
            parts.push(((b'a' + i % 26) as char).to_string().repeat(n));
            left -= n;
            i = i.wrapping_add(1);
        }
        Reply::Txt(parts)
    }
    /// A CNAME chain ending in an A record.
    pub fn cname_chain(chain: &[&str], v4: Ipv4Addr) -> Reply {
        Reply::CnameChain {
            chain: chain.iter().map(|s| s.to_string()).collect(),
            v4,
            ttl: 300,
        }
    }
    pub fn https(target: &str) -> Reply {
        Reply::Https {
            target: target.to_string(),
        }
    }
    pub fn svcb(target: &str) -> Reply {
        Reply::Svcb {
            target: target.to_string(),
        }
    }
    pub fn delayed(d: Duration, inner: Reply) -> Reply {
        Reply::Delay(d, Box::new(inner))
    }
}

/// The default answer of a [`TestUpstream`] for names without a configured reply.
pub const DEFAULT_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The default AAAA answer of a [`TestUpstream`].
pub const DEFAULT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
/// TTL of the default answer.
pub const DEFAULT_TTL: u32 = 300;

struct UpstreamState {
    seen: Mutex<Vec<SeenQuestion>>,
    /// Key: (normalized name, Some(type) for a per-type reply or None for every type).
    replies: Mutex<HashMap<(String, Option<RecordType>), Reply>>,
    default: Mutex<Reply>,
}

impl UpstreamState {
    fn reply_for(&self, name: &str, qtype: RecordType) -> Reply {
        let n = norm(name);
        let replies = self.replies.lock().unwrap();
        if let Some(r) = replies.get(&(n.clone(), Some(qtype))) {
            return r.clone();
        }
        if let Some(r) = replies.get(&(n, None)) {
            return r.clone();
        }
        self.default.lock().unwrap().clone()
    }
}

/// A small real DNS server on 127.0.0.1 (UDP and TCP on the same port), on its own thread and
/// tokio runtime. Stopped by [`TestUpstream::stop`] or on drop.
///
/// Unknown names get [`DEFAULT_V4`] / [`DEFAULT_V6`] with TTL [`DEFAULT_TTL`]. Over UDP, an answer
/// larger than the query's payload size (512 without EDNS) is sent truncated with TC set, like a
/// real server, so that a resolver retries over TCP.
pub struct TestUpstream {
    addr: SocketAddr,
    state: Arc<UpstreamState>,
    stop_tx: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestUpstream {
    /// Start a server with the default answer for every name.
    pub fn start() -> TestUpstream {
        let (udp, tcp) = bind_udp_tcp_same_port();
        let addr = udp.local_addr().unwrap();
        udp.set_nonblocking(true).unwrap();
        tcp.set_nonblocking(true).unwrap();
        let state = Arc::new(UpstreamState {
            seen: Mutex::new(Vec::new()),
            replies: Mutex::new(HashMap::new()),
            default: Mutex::new(Reply::Addrs {
                v4: vec![DEFAULT_V4],
                v6: vec![DEFAULT_V6],
                ttl: DEFAULT_TTL,
            }),
        });
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name(format!("test-upstream-{}", addr.port()))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(upstream_main(udp, tcp, st, stop_rx));
            })
            .unwrap();
        TestUpstream {
            addr,
            state,
            stop_tx: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// The address to put in `[upstream] servers`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answer `name` (any type, case-insensitive, trailing dot optional) with `reply`.
    pub fn set(&self, name: &str, reply: Reply) -> &Self {
        self.state
            .replies
            .lock()
            .unwrap()
            .insert((norm(name), None), reply);
        self
    }

    /// Answer `name` with `reply` for type `qtype` only (takes precedence over [`Self::set`]).
    pub fn set_for(&self, name: &str, qtype: RecordType, reply: Reply) -> &Self {
        self.state
            .replies
            .lock()
            .unwrap()
            .insert((norm(name), Some(qtype)), reply);
        self
    }

    /// Change the answer for names without a configured reply.
    pub fn set_default(&self, reply: Reply) -> &Self {
        *self.state.default.lock().unwrap() = reply;
        self
    }

    /// Every question received so far, in order.
    pub fn seen(&self) -> Vec<SeenQuestion> {
        self.state.seen.lock().unwrap().clone()
    }

    /// How many questions for `name` (any type, case-insensitive) were received.
    pub fn count(&self, name: &str) -> usize {
        let n = norm(name);
        self.seen().iter().filter(|q| norm(&q.name) == n).count()
    }

    /// How many questions for `name` and `qtype` were received.
    pub fn count_type(&self, name: &str, qtype: RecordType) -> usize {
        let n = norm(name);
        self.seen()
            .iter()
            .filter(|q| norm(&q.name) == n && q.qtype == qtype)
            .count()
    }

    /// Whether any question for `name` or a name under it was received.
    pub fn saw_under(&self, name: &str) -> bool {
        let n = norm(name);
        let suffix = format!(".{n}");
        self.seen().iter().any(|q| {
            let q = norm(&q.name);
            q == n || q.ends_with(&suffix)
        })
    }

    /// Panic (listing what was seen) if `name` or a name under it reached the upstream.
    #[track_caller]
    pub fn assert_not_forwarded(&self, name: &str) {
        assert!(
            !self.saw_under(name),
            "{name} must not be forwarded, but the upstream received: {:#?}",
            self.seen()
        );
    }

    /// Forget the recorded questions.
    pub fn clear(&self) {
        self.state.seen.lock().unwrap().clear();
    }

    /// Stop the server and join its thread.
    pub fn stop(&mut self) {
        if let Some(tx) = self.stop_tx.take() {
            let _ = tx.send(true);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Bind UDP on 127.0.0.1:0, then TCP on the same port; retry if that TCP port is taken.
fn bind_udp_tcp_same_port() -> (UdpSocket, TcpListener) {
    for _ in 0..50 {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = udp.local_addr().unwrap().port();
        if let Ok(tcp) = TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            return (udp, tcp);
        }
    }
    panic!("could not bind UDP and TCP on one free port of 127.0.0.1");
}

async fn upstream_main(
    udp: UdpSocket,
    tcp: TcpListener,
    state: Arc<UpstreamState>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let udp = Arc::new(tokio::net::UdpSocket::from_std(udp).unwrap());
    let tcp = tokio::net::TcpListener::from_std(tcp).unwrap();
    let mut buf = vec![0u8; 65535];
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            r = udp.recv_from(&mut buf) => {
                let Ok((n, peer)) = r else { continue };
                let packet = buf[..n].to_vec();
                let (st, sock) = (state.clone(), udp.clone());
                tokio::spawn(async move {
                    if let Some(resp) = upstream_answer(&st, &packet, Transport::Udp).await {
                        let _ = sock.send_to(&resp, peer).await;
                    }
                });
            }
            r = tcp.accept() => {
                let Ok((stream, _)) = r else { continue };
                let st = state.clone();
                tokio::spawn(upstream_tcp_conn(stream, st));
            }
        }
    }
}

async fn upstream_tcp_conn(mut stream: tokio::net::TcpStream, state: Arc<UpstreamState>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let mut len = [0u8; 2];
        if stream.read_exact(&mut len).await.is_err() {
            return;
        }
        let mut packet = vec![0u8; u16::from_be_bytes(len) as usize];
        if stream.read_exact(&mut packet).await.is_err() {
            return;
        }
        // Answered in order; a "never" reply stalls this connection, as a dead server would.
        if let Some(resp) = upstream_answer(&state, &packet, Transport::Tcp).await {
            let mut framed = (resp.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&resp);
            if stream.write_all(&framed).await.is_err() {
                return;
            }
        }
    }
}

/// Build the upstream's answer to one packet (None: no answer).
async fn upstream_answer(
    state: &UpstreamState,
    packet: &[u8],
    transport: Transport,
) -> Option<Vec<u8>> {
    let req = Message::from_vec(packet).ok()?;
    let q = req.queries.first()?.clone();
    let qname = q.name().to_ascii();
    state.seen.lock().unwrap().push(SeenQuestion {
        name: qname.trim_end_matches('.').to_string(),
        qtype: q.query_type(),
        transport,
    });
    let mut reply = state.reply_for(&qname, q.query_type());
    loop {
        match reply {
            Reply::Delay(d, inner) => {
                tokio::time::sleep(d).await;
                reply = *inner;
            }
            Reply::Never => return None,
            _ => break,
        }
    }
    let mut resp = Message::response(req.metadata.id, OpCode::Query);
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.add_query(q.clone());
    if req.edns.is_some() {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        resp.set_edns(e);
    }
    let owner = q.name().clone();
    let qtype = q.query_type();
    let rec = |name: &Name, ttl: u32, data: RData| Record::from_rdata(name.clone(), ttl, data);
    let addrs = |resp: &mut Message, name: &Name, v4: &[Ipv4Addr], v6: &[Ipv6Addr], ttl: u32| {
        if matches!(qtype, RecordType::A | RecordType::ANY) {
            for ip in v4 {
                resp.add_answer(rec(name, ttl, RData::A(A(*ip))));
            }
        }
        if matches!(qtype, RecordType::AAAA | RecordType::ANY) {
            for ip in v6 {
                resp.add_answer(rec(name, ttl, RData::AAAA(AAAA(*ip))));
            }
        }
    };
    match reply {
        Reply::Addrs { v4, v6, ttl } => addrs(&mut resp, &owner, &v4, &v6, ttl),
        Reply::CnameChain { chain, v4, ttl } => {
            let mut cur = owner.clone();
            for t in &chain {
                let next = Name::from_ascii(format!("{}.", t.trim_end_matches('.'))).unwrap();
                resp.add_answer(rec(&cur, ttl, RData::CNAME(CNAME(next.clone()))));
                cur = next;
            }
            if matches!(qtype, RecordType::A | RecordType::ANY) {
                resp.add_answer(rec(&cur, ttl, RData::A(A(v4))));
            }
        }
        Reply::Https { target } | Reply::Svcb { target }
            if matches!(qtype, RecordType::HTTPS | RecordType::SVCB) =>
        {
            let t = Name::from_ascii(format!("{}.", target.trim_end_matches('.'))).unwrap();
            let svcb = SVCB::new(1, t, vec![]);
            let data = if qtype == RecordType::HTTPS {
                RData::HTTPS(HTTPS(svcb))
            } else {
                RData::SVCB(svcb)
            };
            resp.add_answer(rec(&owner, 300, data));
        }
        Reply::Https { .. } | Reply::Svcb { .. } => {
            addrs(&mut resp, &owner, &[DEFAULT_V4], &[DEFAULT_V6], DEFAULT_TTL)
        }
        Reply::Txt(parts) => {
            if matches!(qtype, RecordType::TXT | RecordType::ANY) {
                resp.add_answer(rec(&owner, 300, RData::TXT(TXT::new(parts))));
            }
        }
        Reply::NxDomain => resp.metadata.response_code = ResponseCode::NXDomain,
        Reply::ServFail => resp.metadata.response_code = ResponseCode::ServFail,
        Reply::Delay(..) | Reply::Never => unreachable!(),
    }
    if resp.answers.is_empty() && resp.metadata.response_code != ResponseCode::ServFail {
        // Negative answer: an SOA for the name's parent zone, as a real server sends.
        let zone = if owner.num_labels() > 1 {
            owner.base_name()
        } else {
            owner.clone()
        };
        let soa = SOA::new(
            Name::from_ascii("ns.upstream.test.").unwrap(),
            Name::from_ascii("hostmaster.upstream.test.").unwrap(),
            1,
            3600,
            600,
            86400,
            60,
        );
        resp.add_authority(Record::from_rdata(zone, 60, RData::SOA(soa)));
    }
    let bytes = resp.to_vec().ok()?;
    if transport == Transport::Udp {
        let max = req
            .edns
            .as_ref()
            .map(|e| e.max_payload().max(512))
            .unwrap_or(512) as usize;
        if bytes.len() > max {
            return resp.truncate().to_vec().ok();
        }
    }
    Some(bytes)
}

// ---------------------------------------------------------------------------------------------
// telesink process
// ---------------------------------------------------------------------------------------------

/// Builder of a telesink configuration in a fresh temporary directory.
///
/// The generated `config.toml` always has these tables, filled from the builder:
///
/// ```toml
/// [server]
/// listen = ["127.0.0.1:<free port>"]
/// allow_networks = [...]          # only if set with allow_networks()
/// rate_limit_qps = 0              # off unless set with rate_limit_qps()
/// <server_toml lines>
/// [upstream]
/// servers = ["127.0.0.1:<TestUpstream port>"]
/// timeout_ms = ...                # only if set with timeout_ms()
/// <upstream_toml lines>
/// [metrics]
/// listen = "127.0.0.1:<free port>"
/// <metrics_toml lines>
/// [querylog]
/// path = "<tempdir>/q.db"
/// <querylog_toml lines>
/// <toml(): everything else, e.g. [blocking], [[list]], [[client]], [[group]], [default], [[record]], [allow]>
/// ```
///
/// List files are written with [`Telesink::file`] or copied from `tests/fixtures/dns` with
/// [`Telesink::fixture`]; a list's `source` is relative to the config file, so `source = "x.txt"`
/// names a file written with `.file("x.txt", ...)`.
pub struct Telesink {
    dir: tempfile::TempDir,
    upstreams: Vec<String>,
    allow_networks: Option<Vec<String>>,
    rate_limit_qps: u32,
    timeout_ms: Option<u64>,
    server_toml: String,
    upstream_toml: String,
    metrics_toml: String,
    querylog_toml: String,
    body: String,
}

impl Default for Telesink {
    fn default() -> Self {
        Self::new()
    }
}

impl Telesink {
    pub fn new() -> Telesink {
        let dir = tempfile::Builder::new()
            .prefix("telesink-test-")
            .tempdir()
            .unwrap();
        Telesink {
            dir,
            upstreams: Vec::new(),
            allow_networks: None,
            rate_limit_qps: 0,
            timeout_ms: None,
            server_toml: String::new(),
            upstream_toml: String::new(),
            metrics_toml: String::new(),
            querylog_toml: String::new(),
            body: String::new(),
        }
    }

    /// Forward to this test upstream (may be called several times).
    pub fn upstream(mut self, up: &TestUpstream) -> Self {
        self.upstreams.push(up.addr().to_string());
        self
    }

    /// Forward to this address/URL as written in `[upstream] servers`.
    pub fn upstream_server(mut self, server: &str) -> Self {
        self.upstreams.push(server.to_string());
        self
    }

    pub fn allow_networks(mut self, nets: &[&str]) -> Self {
        self.allow_networks = Some(nets.iter().map(|s| s.to_string()).collect());
        self
    }

    /// Default 0 (off), so that tests can send many queries from one address.
    pub fn rate_limit_qps(mut self, qps: u32) -> Self {
        self.rate_limit_qps = qps;
        self
    }

    pub fn timeout_ms(mut self, ms: u64) -> Self {
        self.timeout_ms = Some(ms);
        self
    }

    /// Extra raw lines for the `[server]` table.
    pub fn server_toml(mut self, lines: &str) -> Self {
        self.server_toml.push_str(lines);
        self.server_toml.push('\n');
        self
    }

    /// Extra raw lines for the `[upstream]` table.
    pub fn upstream_toml(mut self, lines: &str) -> Self {
        self.upstream_toml.push_str(lines);
        self.upstream_toml.push('\n');
        self
    }

    /// Extra raw lines for the `[metrics]` table.
    pub fn metrics_toml(mut self, lines: &str) -> Self {
        self.metrics_toml.push_str(lines);
        self.metrics_toml.push('\n');
        self
    }

    /// Extra raw lines for the `[querylog]` table.
    pub fn querylog_toml(mut self, lines: &str) -> Self {
        self.querylog_toml.push_str(lines);
        self.querylog_toml.push('\n');
        self
    }

    /// Further TOML appended after the fixed tables.
    pub fn toml(mut self, text: &str) -> Self {
        self.body.push_str(text);
        self.body.push('\n');
        self
    }

    /// Write a file (a list, usually) at `rel` inside the config directory.
    pub fn file(self, rel: &str, contents: impl AsRef<[u8]>) -> Self {
        let p = self.dir.path().join(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&p, contents).unwrap();
        self
    }

    /// Copy `tests/fixtures/dns/<name>` to `<name>` inside the config directory.
    pub fn fixture(self, name: &str) -> Self {
        let src = fixtures_dir().join(name);
        let data = fs::read(&src).unwrap_or_else(|e| panic!("fixture {}: {e}", src.display()));
        self.file(name, data)
    }

    /// The config directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Path the config is written to.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    fn render(&self, dns: u16, metrics: u16) -> String {
        let q = |s: &str| format!("{:?}", s); // TOML basic string (ASCII paths)
        let list = |v: &[String]| v.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ");
        let mut t = String::new();
        writeln!(t, "[server]").unwrap();
        writeln!(t, "listen = [\"127.0.0.1:{dns}\"]").unwrap();
        if let Some(n) = &self.allow_networks {
            writeln!(t, "allow_networks = [{}]", list(n)).unwrap();
        }
        writeln!(t, "rate_limit_qps = {}", self.rate_limit_qps).unwrap();
        t.push_str(&self.server_toml);
        writeln!(t, "\n[upstream]").unwrap();
        let ups = if self.upstreams.is_empty() {
            vec!["127.0.0.1:1".to_string()]
        } else {
            self.upstreams.clone()
        };
        writeln!(t, "servers = [{}]", list(&ups)).unwrap();
        if let Some(ms) = self.timeout_ms {
            writeln!(t, "timeout_ms = {ms}").unwrap();
        }
        t.push_str(&self.upstream_toml);
        writeln!(t, "\n[metrics]").unwrap();
        writeln!(t, "listen = \"127.0.0.1:{metrics}\"").unwrap();
        t.push_str(&self.metrics_toml);
        writeln!(t, "\n[querylog]").unwrap();
        writeln!(
            t,
            "path = {}",
            q(&self.dir.path().join("q.db").to_string_lossy())
        )
        .unwrap();
        t.push_str(&self.querylog_toml);
        t.push('\n');
        t.push_str(&self.body);
        t
    }

    /// Write `config.toml` (with placeholder ports) without starting anything: for CLI tests.
    pub fn write_config(&self) -> PathBuf {
        let dns = free_port_udp_tcp();
        let metrics = free_port_udp_tcp();
        let p = self.config_path();
        fs::write(&p, self.render(dns, metrics)).unwrap();
        p
    }

    /// Run `telesink <args…> -c <config>` to completion (the config is written first).
    pub fn cli(&self, args: &[&str]) -> CliOutput {
        let cfg = self.write_config();
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        all.push("-c".into());
        all.push(cfg.to_string_lossy().into_owned());
        cli_in(
            self.dir(),
            &all.iter().map(String::as_str).collect::<Vec<_>>(),
        )
    }

    /// Write the config, start `telesink run -c <config>` and wait until it answers over UDP.
    /// Retries with new ports if a port was taken between picking and binding.
    pub fn start(self) -> TelesinkProcess {
        let mut last_err = String::new();
        for attempt in 0..4 {
            let dns = free_port_udp_tcp();
            let metrics = free_port_tcp();
            let config = self.render(dns, metrics);
            let cfg_path = self.config_path();
            fs::write(&cfg_path, &config).unwrap();
            let stdout_path = self.dir.path().join(format!("stdout.{attempt}.log"));
            let stderr_path = self.dir.path().join(format!("stderr.{attempt}.log"));
            let child = Command::new(BIN)
                .arg("run")
                .arg("-c")
                .arg(&cfg_path)
                .current_dir(self.dir.path())
                .stdin(Stdio::null())
                .stdout(fs::File::create(&stdout_path).unwrap())
                .stderr(fs::File::create(&stderr_path).unwrap())
                .spawn()
                .expect("spawn telesink");
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, dns));
            let mut proc = TelesinkProcess {
                child: Some(child),
                addr,
                metrics_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, metrics)),
                config_path: cfg_path,
                stdout_path,
                stderr_path,
                config,
                dir: None,
            };
            match proc.wait_ready(Duration::from_secs(10)) {
                Ok(()) => {
                    proc.dir = Some(self.dir);
                    return proc;
                }
                Err(e) => {
                    let logs = proc.logs();
                    let race = logs.to_ascii_lowercase().contains("in use");
                    proc.kill();
                    last_err = format!("{e}\n{logs}");
                    if !race {
                        break;
                    }
                }
            }
        }
        let keep = self.dir.keep();
        panic!(
            "telesink did not start (files kept in {}):\n{last_err}",
            keep.display()
        );
    }
}

/// Pick a port free for both UDP and TCP on 127.0.0.1 (bind both, drop, reuse).
pub fn free_port_udp_tcp() -> u16 {
    let (udp, tcp) = bind_udp_tcp_same_port();
    let port = udp.local_addr().unwrap().port();
    drop((udp, tcp));
    port
}

/// Pick a port free for TCP on 127.0.0.1.
pub fn free_port_tcp() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `telesink run`. Killed (by its PID) on drop; its stdout/stderr are printed then if
/// the test is panicking.
pub struct TelesinkProcess {
    child: Option<Child>,
    addr: SocketAddr,
    metrics_addr: SocketAddr,
    config_path: PathBuf,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    config: String,
    dir: Option<tempfile::TempDir>,
}

impl TelesinkProcess {
    /// DNS address (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Metrics HTTP address.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The config directory (lists, query log, logs).
    pub fn dir(&self) -> &Path {
        self.config_path.parent().unwrap()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Captured stdout and stderr so far, plus the config, for failure messages.
    pub fn logs(&self) -> String {
        let out = fs::read_to_string(&self.stdout_path).unwrap_or_default();
        let err = fs::read_to_string(&self.stderr_path).unwrap_or_default();
        format!(
            "--- config.toml ---\n{}\n--- telesink stdout ---\n{out}\n--- telesink stderr ---\n{err}\n--- end ---",
            self.config
        )
    }

    /// Send a signal by PID with kill(1), e.g. "HUP" (reload) or "TERM" (graceful shutdown).
    pub fn signal(&self, sig: &str) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(pid.to_string())
                .status();
        }
    }

    /// SIGTERM, then wait up to `timeout` for the exit status (None: still running, then killed).
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        self.signal("TERM");
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    self.child = None;
                    return Some(st);
                }
            } else {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
        None
    }

    /// SIGKILL by PID and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Write (or replace) a file in the config directory of the running server, e.g. a list
    /// or `config.toml`, for reload tests. Written to a temporary name and renamed into place,
    /// as editors do.
    pub fn write_file(&self, rel: &str, contents: impl AsRef<[u8]>) {
        let p = self.dir().join(rel);
        let tmp = self.dir().join(format!(".{rel}.tmp"));
        fs::write(&tmp, contents).unwrap();
        fs::rename(&tmp, &p).unwrap();
    }

    /// `GET /metrics` from the metrics listener: (status, body).
    pub fn metrics(&self) -> (u16, String) {
        http_get(self.metrics_addr, "/metrics").unwrap_or_else(|e| panic!("GET /metrics: {e}"))
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let opts = QueryOpts::udp().timeout(Duration::from_millis(200));
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    return Err(format!("telesink exited early with {st}"));
                }
            }
            // Any well-formed answer counts (even REFUSED): the server is up.
            if try_query(
                self.addr,
                Ipv4Addr::LOCALHOST,
                "localhost.",
                RecordType::A,
                &opts,
            )
            .is_ok()
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "telesink did not answer on {} within {timeout:?}",
            self.addr
        ))
    }

    /// Query this server (see [`query`]).
    #[track_caller]
    pub fn query(&self, from: Ipv4Addr, name: &str, qtype: RecordType) -> Response {
        self.query_with(from, name, qtype, &QueryOpts::udp())
    }

    /// Query this server with options; panics (with the server's logs) on timeout or bad answer.
    #[track_caller]
    pub fn query_with(
        &self,
        from: Ipv4Addr,
        name: &str,
        qtype: RecordType,
        opts: &QueryOpts,
    ) -> Response {
        match try_query(self.addr, from, name, qtype, opts) {
            Ok(r) => r,
            Err(e) => panic!(
                "query {name} {qtype} from {from} ({:?}): {e}",
                opts.transport
            ),
        }
    }
}

impl Drop for TelesinkProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        if std::env::var_os("TELESINK_TEST_KEEP").is_some() {
            if let Some(d) = self.dir.take() {
                eprintln!("kept telesink test dir {}", d.keep().display());
            }
        }
    }
}

/// A minimal HTTP/1.0 GET: (status code, body). 5 s timeout.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP header end")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line: {head:?}"))?;
    Ok((status, body.to_string()))
}

/// Output of one finished `telesink` command.
#[derive(Debug)]
pub struct CliOutput {
    /// Exit code (None: killed by a signal or the 60 s limit).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// stdout and stderr together, for content checks that should not care which stream.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Display for CliOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Run `telesink <args>` in `cwd` to completion (killed after 60 s).
pub fn cli_in(cwd: &Path, args: &[&str]) -> CliOutput {
    let out_path = tempfile::NamedTempFile::new().unwrap();
    let err_path = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(out_path.reopen().unwrap())
        .stderr(err_path.reopen().unwrap())
        .spawn()
        .expect("spawn telesink");
    let deadline = Instant::now() + Duration::from_secs(60);
    let code = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break st.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    CliOutput {
        code,
        stdout: fs::read_to_string(out_path.path()).unwrap_or_default(),
        stderr: fs::read_to_string(err_path.path()).unwrap_or_default(),
    }
}

/// Run `telesink <args>` in a scratch directory.
pub fn cli(args: &[&str]) -> CliOutput {
    let d = tempfile::tempdir().unwrap();
    cli_in(d.path(), args)
}

// ---------------------------------------------------------------------------------------------
// DNS client
// ---------------------------------------------------------------------------------------------

/// EDNS(0) settings of a query.
#[derive(Clone, Copy, Debug)]
pub struct EdnsOpts {
    pub payload: u16,
    pub dnssec_ok: bool,
}

/// Options of [`query`]. Default: UDP, no EDNS, random ID, RD set, 3 s timeout.
#[derive(Clone, Debug)]
pub struct QueryOpts {
    pub transport: Transport,
    pub edns: Option<EdnsOpts>,
    pub id: Option<u16>,
    pub recursion_desired: bool,
    pub timeout: Duration,
}

impl Default for QueryOpts {
    fn default() -> Self {
        QueryOpts {
            transport: Transport::Udp,
            edns: None,
            id: None,
            recursion_desired: true,
            timeout: Duration::from_secs(3),
        }
    }
}

impl QueryOpts {
    pub fn udp() -> Self {
        Self::default()
    }
    pub fn tcp() -> Self {
        QueryOpts {
            transport: Transport::Tcp,
            ..Self::default()
        }
    }
    /// Add an OPT record with this UDP payload size.
    pub fn edns(mut self, payload: u16) -> Self {
        self.edns = Some(EdnsOpts {
            payload,
            dnssec_ok: self.edns.map(|e| e.dnssec_ok).unwrap_or(false),
        });
        self
    }
    /// Add an OPT record (payload 1232 unless set) with the DO bit.
    pub fn dnssec_ok(mut self) -> Self {
        self.edns = Some(EdnsOpts {
            payload: self.edns.map(|e| e.payload).unwrap_or(1232),
            dnssec_ok: true,
        });
        self
    }
    pub fn id(mut self, id: u16) -> Self {
        self.id = Some(id);
        self
    }
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }
    pub fn no_recursion(mut self) -> Self {
        self.recursion_desired = false;
        self
    }
}

/// A parsed answer plus its wire bytes.
#[derive(Clone, Debug)]
pub struct Response {
    pub msg: Message,
    pub raw: Vec<u8>,
    /// Time from sending the query to receiving this answer.
    pub elapsed: Duration,
}

impl Response {
    pub fn rcode(&self) -> ResponseCode {
        self.msg.metadata.response_code
    }
    pub fn id(&self) -> u16 {
        self.msg.metadata.id
    }
    pub fn aa(&self) -> bool {
        self.msg.metadata.authoritative
    }
    pub fn tc(&self) -> bool {
        self.msg.metadata.truncation
    }
    pub fn answers(&self) -> &[Record] {
        &self.msg.answers
    }
    /// Addresses of the A records in the answer section.
    pub fn a(&self) -> Vec<Ipv4Addr> {
        self.msg
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect()
    }
    /// Addresses of the AAAA records in the answer section.
    pub fn aaaa(&self) -> Vec<Ipv6Addr> {
        self.msg
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::AAAA(a) => Some(a.0),
                _ => None,
            })
            .collect()
    }
    /// Every address (A and AAAA) in the answer section.
    pub fn ips(&self) -> Vec<IpAddr> {
        self.a()
            .into_iter()
            .map(IpAddr::V4)
            .chain(self.aaaa().into_iter().map(IpAddr::V6))
            .collect()
    }
    /// CNAME targets in the answer section (lower case, no trailing dot).
    pub fn cnames(&self) -> Vec<String> {
        self.msg
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::CNAME(c) => Some(norm(&c.0.to_ascii())),
                _ => None,
            })
            .collect()
    }
    /// Answer records of one type.
    pub fn answers_of(&self, t: RecordType) -> Vec<&Record> {
        self.msg
            .answers
            .iter()
            .filter(|r| r.record_type() == t)
            .collect()
    }
    /// The first SOA in the authority section, with its record TTL.
    pub fn authority_soa(&self) -> Option<(u32, SOA)> {
        self.msg.authorities.iter().find_map(|r| match &r.data {
            RData::SOA(s) => Some((r.ttl, s.clone())),
            _ => None,
        })
    }
    /// Whether the answer carries an OPT record.
    pub fn has_opt(&self) -> bool {
        self.msg.edns.is_some()
    }
    /// Extended DNS Errors (RFC 8914): (info code, extra text) of each EDE option.
    pub fn ede(&self) -> Vec<(u16, String)> {
        let Some(e) = &self.msg.edns else {
            return vec![];
        };
        e.options()
            .options
            .iter()
            .filter_map(|(code, opt)| match (code, opt) {
                (EdnsCode::Unknown(15), EdnsOption::Unknown(15, data)) if data.len() >= 2 => {
                    Some((
                        u16::from_be_bytes([data[0], data[1]]),
                        String::from_utf8_lossy(&data[2..]).into_owned(),
                    ))
                }
                _ => None,
            })
            .collect()
    }
    /// Wire bytes of the question section's first name (case preserved), from the raw answer.
    pub fn raw_qname(&self) -> Option<Vec<u8>> {
        raw_first_qname(&self.raw)
    }
    /// A one-line summary for assertion messages.
    pub fn summary(&self) -> String {
        let recs: Vec<String> = self
            .msg
            .answers
            .iter()
            .map(|r| format!("{} {} {} {}", r.name, r.ttl, r.record_type(), r.data))
            .collect();
        let auth: Vec<String> = self
            .msg
            .authorities
            .iter()
            .map(|r| format!("{} {} {}", r.name, r.ttl, r.record_type()))
            .collect();
        format!(
            "rcode={:?} aa={} tc={} answers={:?} authority={:?} opt={} ede={:?}",
            self.rcode(),
            self.aa(),
            self.tc(),
            recs,
            auth,
            self.has_opt(),
            self.ede()
        )
    }
}

fn next_id() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let seed = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        & 0xffff) as u16;
    NEXT.fetch_add(1, Ordering::Relaxed)
        .wrapping_mul(7919)
        .wrapping_add(seed)
}

/// Wire-encode a name exactly as written (case kept; a trailing dot optional; "." is the root).
/// Labels are taken byte for byte, so underscores and odd characters are sent as they are.
pub fn encode_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let n = name.strip_suffix('.').unwrap_or(name);
    if !n.is_empty() {
        for label in n.split('.') {
            assert!(
                label.len() < 64 && !label.is_empty(),
                "bad label in {name:?}"
            );
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
    }
    out.push(0);
    out
}

/// Wire-encode a query by hand (so the question is byte-exact): header, one question (class IN),
/// and an OPT record if `opts.edns` is set.
pub fn encode_query(name: &str, qtype: RecordType, opts: &QueryOpts, id: u16) -> Vec<u8> {
    let mut b = Vec::with_capacity(64);
    b.extend_from_slice(&id.to_be_bytes());
    b.push(if opts.recursion_desired { 0x01 } else { 0x00 }); // QR=0 OPCODE=0 RD
    b.push(0x00);
    b.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    b.extend_from_slice(&0u16.to_be_bytes()); // ANCOUNT
    b.extend_from_slice(&0u16.to_be_bytes()); // NSCOUNT
    b.extend_from_slice(&(opts.edns.is_some() as u16).to_be_bytes()); // ARCOUNT
    b.extend_from_slice(&encode_name(name));
    b.extend_from_slice(&u16::from(qtype).to_be_bytes());
    b.extend_from_slice(&1u16.to_be_bytes()); // IN
    if let Some(e) = opts.edns {
        b.push(0); // root
        b.extend_from_slice(&41u16.to_be_bytes());
        b.extend_from_slice(&e.payload.to_be_bytes());
        b.extend_from_slice(&[0, 0]); // extended rcode, version
        b.extend_from_slice(&(if e.dnssec_ok { 0x8000u16 } else { 0 }).to_be_bytes());
        b.extend_from_slice(&0u16.to_be_bytes()); // rdlen
    }
    b
}

/// The first question name of a message, as raw wire bytes (no decompression needed for a
/// question right after the header).
pub fn raw_first_qname(msg: &[u8]) -> Option<Vec<u8>> {
    let mut i = 12;
    loop {
        let len = *msg.get(i)? as usize;
        if len == 0 {
            return Some(msg.get(12..=i)?.to_vec());
        }
        if len & 0xC0 != 0 {
            return None;
        }
        i += 1 + len;
    }
}

/// Send one query from `from` (a 127.0.0.x address, port chosen by the OS) and return the parsed
/// answer. Over UDP, stray datagrams with another ID are ignored until the timeout.
pub fn try_query(
    server: SocketAddr,
    from: Ipv4Addr,
    name: &str,
    qtype: RecordType,
    opts: &QueryOpts,
) -> Result<Response, String> {
    let id = opts.id.unwrap_or_else(next_id);
    let packet = encode_query(name, qtype, opts, id);
    let start = Instant::now();
    let raw = match opts.transport {
        Transport::Udp => {
            let sock = UdpSocket::bind((from, 0)).map_err(|e| format!("bind {from}: {e}"))?;
            sock.send_to(&packet, server)
                .map_err(|e| format!("send: {e}"))?;
            let deadline = start + opts.timeout;
            let mut buf = vec![0u8; 65535];
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(format!("no UDP answer within {:?}", opts.timeout));
                }
                sock.set_read_timeout(Some(left)).unwrap();
                match sock.recv_from(&mut buf) {
                    Ok((n, peer)) if peer == server && n >= 2 && buf[..2] == id.to_be_bytes() => {
                        break buf[..n].to_vec()
                    }
                    Ok(_) => continue,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        return Err(format!("no UDP answer within {:?}", opts.timeout))
                    }
                    Err(e) => return Err(format!("recv: {e}")),
                }
            }
        }
        Transport::Tcp => {
            let mut framed = (packet.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&packet);
            let mut s = tcp_connect_from(server, from, opts.timeout)?;
            s.set_read_timeout(Some(opts.timeout)).unwrap();
            s.write_all(&framed)
                .map_err(|e| format!("tcp write: {e}"))?;
            let mut len = [0u8; 2];
            s.read_exact(&mut len)
                .map_err(|e| format!("tcp read length: {e}"))?;
            let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
            s.read_exact(&mut msg)
                .map_err(|e| format!("tcp read message: {e}"))?;
            msg
        }
    };
    let elapsed = start.elapsed();
    let msg =
        Message::from_vec(&raw).map_err(|e| format!("unparseable answer ({e}): {raw:02x?}"))?;
    if msg.metadata.id != id {
        return Err(format!("answer ID {} != query ID {id}", msg.metadata.id));
    }
    if msg.metadata.message_type != MessageType::Response {
        return Err("answer has QR=0".into());
    }
    Ok(Response { msg, raw, elapsed })
}

/// [`try_query`], panicking with the error.
#[track_caller]
pub fn query(
    server: SocketAddr,
    from: Ipv4Addr,
    name: &str,
    qtype: RecordType,
    opts: &QueryOpts,
) -> Response {
    try_query(server, from, name, qtype, opts)
        .unwrap_or_else(|e| panic!("query {name} {qtype} from {from}: {e}"))
}

/// A TCP connection to `server` from the address `from` (std cannot bind before connecting, so
/// this goes through tokio's `TcpSocket` on a throwaway runtime, then hands back a std stream).
pub fn tcp_connect_from(
    server: SocketAddr,
    from: Ipv4Addr,
    timeout: Duration,
) -> Result<TcpStream, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let s = rt.block_on(async {
        let sock = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
        sock.bind(SocketAddr::from((from, 0)))
            .map_err(|e| format!("bind {from}: {e}"))?;
        match tokio::time::timeout(timeout, sock.connect(server)).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(format!("tcp connect {server}: {e}")),
            Err(_) => Err(format!("tcp connect {server}: timeout")),
        }
    })?;
    let s = s.into_std().map_err(|e| e.to_string())?;
    s.set_nonblocking(false).map_err(|e| e.to_string())?;
    Ok(s)
}

/// Send raw bytes as one UDP datagram from `from`; the answer datagram, if any within 1.5 s.
pub fn send_raw_udp(server: SocketAddr, from: Ipv4Addr, bytes: &[u8]) -> Option<Vec<u8>> {
    let sock = UdpSocket::bind((from, 0)).unwrap();
    sock.send_to(bytes, server).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut buf = vec![0u8; 65535];
    match sock.recv_from(&mut buf) {
        Ok((n, _)) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

/// Open a TCP connection from `from`, write `bytes` exactly as given (the caller frames them, or
/// not), then read until the server closes or 1.5 s pass. Returns what was read (possibly empty),
/// or None if the connection could not be made.
pub fn send_raw_tcp(server: SocketAddr, from: Ipv4Addr, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut s = tcp_connect_from(server, from, Duration::from_secs(3)).ok()?;
    let _ = s.write_all(bytes);
    s.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    Some(out)
}

/// RCODE of a raw DNS message (low 4 bits of byte 3), if it has a header.
pub fn raw_rcode(msg: &[u8]) -> Option<u8> {
    (msg.len() >= 12).then(|| msg[3] & 0x0f)
}

/// A raw Query (`Query::query`) helper re-exported for tests building their own messages.
pub fn question(name: &str, t: RecordType) -> Query {
    Query::query(Name::from_ascii(name).unwrap(), t)
}
