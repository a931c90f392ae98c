//! A DNS client for the tests: questions from a chosen 127.0.0.x source address over UDP or
//! TCP, with EDNS options, exact IDs and question case, and raw bytes for malformed input.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::{norm, Transport};

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
