//! The test upstream: a small real DNS server that telesink forwards to, answering as each
//! test configures it and recording every question it receives.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, HTTPS, NS, SOA, SVCB, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::norm;

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
    /// As an authoritative server answers: `qname A v4` (TTL 300), the zone's NS (the qname's
    /// parent, TTL 3600) in the authority section and the NS's address, `glue`, in the
    /// additional (TTL 3600), for A queries; NODATA for the rest.
    Authoritative { v4: Ipv4Addr, glue: Ipv4Addr },
    /// NXDOMAIN with an SOA.
    NxDomain,
    /// SERVFAIL.
    ServFail,
    /// The inner reply, sent after a delay.
    Delay(Duration, Box<Reply>),
    /// Never answer (the question is still recorded).
    Never,
    /// Random bytes of random length; every third starts with the query's ID and the QR bit,
    /// so that the resolver has to parse the garbage rather than drop it for a wrong ID.
    Garbage,
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
    /// Garbage answers sent so far: seeds the next one.
    garbage: std::sync::atomic::AtomicU64,
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
        let mut up = TestUpstream {
            addr: udp.local_addr().unwrap(),
            state: Arc::new(UpstreamState {
                seen: Mutex::new(Vec::new()),
                replies: Mutex::new(HashMap::new()),
                default: Mutex::new(Reply::Addrs {
                    v4: vec![DEFAULT_V4],
                    v6: vec![DEFAULT_V6],
                    ttl: DEFAULT_TTL,
                }),
                garbage: Default::default(),
            }),
            stop_tx: None,
            thread: None,
        };
        up.serve(udp, tcp);
        up
    }

    /// Start again after [`stop`](Self::stop), on the same port, with the same replies and
    /// record of questions: an upstream that was down and is back.
    pub fn restart(&mut self) {
        assert!(self.thread.is_none(), "the upstream is running");
        let udp = UdpSocket::bind(self.addr).expect("rebind the upstream's UDP port");
        let tcp = TcpListener::bind(self.addr).expect("rebind the upstream's TCP port");
        self.serve(udp, tcp);
    }

    fn serve(&mut self, udp: UdpSocket, tcp: TcpListener) {
        udp.set_nonblocking(true).unwrap();
        tcp.set_nonblocking(true).unwrap();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let st = self.state.clone();
        let thread = std::thread::Builder::new()
            .name(format!("test-upstream-{}", self.addr.port()))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(upstream_main(udp, tcp, st, stop_rx));
            })
            .unwrap();
        self.stop_tx = Some(stop_tx);
        self.thread = Some(thread);
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

    /// Stop the server (both ports closed) and join its thread.
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
pub fn bind_udp_tcp_same_port() -> (UdpSocket, TcpListener) {
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
            Reply::Garbage => return Some(garbage(state, packet)),
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
        Reply::Authoritative { v4, glue } => {
            if qtype == RecordType::A {
                let zone = owner.base_name();
                let ns = Name::from_ascii("ns")
                    .unwrap()
                    .append_domain(&zone)
                    .unwrap();
                resp.add_answer(rec(&owner, 300, RData::A(A(v4))));
                resp.add_authority(rec(&zone, 3600, RData::NS(NS(ns.clone()))));
                resp.add_additional(rec(&ns, 3600, RData::A(A(glue))));
            }
        }
        Reply::NxDomain => resp.metadata.response_code = ResponseCode::NXDomain,
        Reply::ServFail => resp.metadata.response_code = ResponseCode::ServFail,
        Reply::Delay(..) | Reply::Never | Reply::Garbage => unreachable!(),
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

/// A [`Reply::Garbage`] answer to `packet`.
fn garbage(state: &UpstreamState, packet: &[u8]) -> Vec<u8> {
    let n = state.garbage.fetch_add(1, Ordering::Relaxed) + 1;
    // xorshift64, seeded by the answer's number: reproducible from run to run.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ n;
    let mut out: Vec<u8> = (0..(n * 37 % 300 + 1))
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    if n.is_multiple_of(3) && packet.len() >= 2 && out.len() >= 3 {
        out[..2].copy_from_slice(&packet[..2]);
        out[2] |= 0x80;
    }
    out
}
