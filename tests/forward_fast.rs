//! The UDP fast path for forwarded queries (issue 17): queries over UDP to plain upstreams are
//! sent by the listener thread on upstream sockets of its own, and their answers handled there.
//! These tests drive it through the real binary: many clients' pipelined queries each get their
//! own answer, with their ID and question case; the upstream sees several source ports and
//! random IDs (RFC 5452); what the fast path hands on (a timeout, an error code, a truncated
//! answer) reaches the other upstream, SERVFAIL or TCP without asking the first one twice; an
//! authoritative server's answer (NS and glue after the A record), judged from its bytes, reaches
//! the client as the general path would send it.
//! Forged answers on this path: `tests/forward_spoofing.rs` (its queries take this path).

mod support;

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use hickory_proto::serialize::binary::BinDecodable;

use support::upstream::Transport as UpTransport;
use support::*;

/// What the recording upstream saw of one query.
#[derive(Debug, Clone)]
struct Seen {
    port: u16,
    id: u16,
    name: String,
}

/// An upstream on a plain UDP socket that records each query's source port, ID and name (case
/// kept) and answers `name A` with the address [`address_for`] gives.
struct RecordingUpstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The address the recording upstream answers for `name` (lower case): 198.51.C.Q for
/// `qQ.cC.fast.example`, so every client's every query has an answer of its own.
fn address_for(name: &str) -> Ipv4Addr {
    let labels: Vec<&str> = name.split('.').collect();
    let num = |l: &str| l[1..].parse::<u8>().unwrap_or(0);
    Ipv4Addr::new(198, 51, num(labels[1]), num(labels[0]))
}

impl RecordingUpstream {
    fn start() -> RecordingUpstream {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !stop2.load(Ordering::Relaxed) {
                let Ok((n, src)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(query) = Message::from_bytes(&buf[..n]) else {
                    continue;
                };
                let Some(q) = query.queries.first().cloned() else {
                    continue;
                };
                let name = q.name().to_string();
                let name = name.trim_end_matches('.').to_string();
                seen2.lock().unwrap().push(Seen {
                    port: src.port(),
                    id: query.metadata.id,
                    name: name.clone(),
                });
                let mut answer = Message::response(query.metadata.id, OpCode::Query);
                answer.metadata.recursion_desired = true;
                answer.metadata.recursion_available = true;
                answer.add_query(q.clone());
                if q.query_type() == RecordType::A {
                    answer.add_answer(Record::from_rdata(
                        q.name().clone(),
                        300,
                        RData::A(A(address_for(&name.to_ascii_lowercase()))),
                    ));
                }
                let _ = socket.send_to(&answer.to_vec().unwrap(), src);
            }
        });
        RecordingUpstream {
            addr,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for RecordingUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `name` with every other letter upper-cased, starting at `offset`.
fn mixed_case(name: &str, offset: usize) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| {
            if (i + offset).is_multiple_of(2) {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

#[test]
fn pipelined_queries_from_many_clients_each_get_their_own_answer() {
    const CLIENTS: u8 = 4;
    const QUERIES: u16 = 60;
    let up = RecordingUpstream::start();
    let ts = Telesink::new()
        .upstream_server(&up.addr.to_string())
        .timeout_ms(5000)
        .start();

    // Every client sends all its queries at once, then reads the answers: they are in flight
    // together, on the fast path's sockets.
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let addr = ts.addr();
            std::thread::spawn(move || {
                let socket = UdpSocket::bind((client(30 + c), 0)).unwrap();
                socket
                    .set_read_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                let mut sent = HashMap::new();
                for i in 0..QUERIES {
                    let name = mixed_case(&format!("q{i}.c{c}.fast.example"), i as usize);
                    let id = 1000 * u16::from(c) + i;
                    let opts = QueryOpts::udp().edns(1232).id(id);
                    let bytes = encode_query(&name, RecordType::A, &opts, id);
                    socket.send_to(&bytes, addr).unwrap();
                    sent.insert(id, name);
                }
                let mut answers = HashMap::new();
                let deadline = Instant::now() + Duration::from_secs(20);
                let mut buf = [0u8; 4096];
                while answers.len() < sent.len() && Instant::now() < deadline {
                    if let Ok(n) = socket.recv(&mut buf) {
                        answers.insert(u16::from_be_bytes([buf[0], buf[1]]), buf[..n].to_vec());
                    }
                }
                (c, sent, answers)
            })
        })
        .collect();

    for t in clients {
        let (c, sent, answers) = t.join().unwrap();
        assert_eq!(
            answers.len(),
            sent.len(),
            "client {c}: every query answered"
        );
        for (id, name) in &sent {
            let raw = &answers[id];
            let m = Message::from_bytes(raw).unwrap();
            assert_eq!(m.metadata.id, *id);
            assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
            // The question exactly as the client wrote it.
            assert_eq!(
                raw_first_qname(raw).unwrap(),
                encode_name(name),
                "{name}: question case"
            );
            let a: Vec<Ipv4Addr> = m
                .answers
                .iter()
                .filter_map(|r| match &r.data {
                    RData::A(a) => Some(a.0),
                    _ => None,
                })
                .collect();
            assert_eq!(
                a,
                vec![address_for(&name.to_ascii_lowercase())],
                "{name}: its own answer"
            );
        }
    }

    let seen = up.seen();
    assert_eq!(
        seen.len(),
        usize::from(CLIENTS) * usize::from(QUERIES),
        "each name forwarded once"
    );
    // RFC 5452: more than one source port, and IDs that are not the clients' (telesink picks
    // its own) nor all alike.
    let ports: HashSet<u16> = seen.iter().map(|s| s.port).collect();
    assert!(ports.len() >= 2, "source ports: {ports:?}");
    // The fast path's sockets are kept (a few per listener thread, one per core), not one
    // opened per query as hickory's pool does.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(
        ports.len() <= 8 * threads,
        "{} source ports for {} queries: a socket per query",
        ports.len(),
        seen.len()
    );
    // Each name once, in the client's case (the question is sent as the client wrote it).
    let names: HashSet<&str> = seen.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names.len(), seen.len());
    assert!(names.iter().any(|n| n.starts_with('Q')), "{names:?}");
    let ids: HashSet<u16> = seen.iter().map(|s| s.id).collect();
    assert!(ids.len() > seen.len() / 2, "IDs repeat: {ids:?}");
    let client_ids: HashSet<u16> = (0..CLIENTS)
        .flat_map(|c| (0..QUERIES).map(move |i| 1000 * u16::from(c) + i))
        .collect();
    assert!(
        ids.iter().filter(|id| client_ids.contains(id)).count() < seen.len() / 4,
        "the clients' IDs were passed upstream"
    );
    // And the answers were cached: asked again, the upstream is not asked.
    let r = ts.query(client(40), "q3.c1.fast.example", RecordType::A);
    assert_eq!(r.a(), vec![address_for("q3.c1.fast.example")]);
    assert_eq!(up.seen().len(), seen.len());
}

#[test]
fn a_timeout_on_the_first_upstream_goes_to_the_next_without_asking_it_again() {
    let dead = TestUpstream::start();
    dead.set("slow.example", upstream::Reply::Never);
    let good = TestUpstream::start();
    good.set(
        "slow.example",
        upstream::Reply::a(Ipv4Addr::new(203, 0, 113, 7)),
    );
    let ts = Telesink::new()
        .upstream(&dead)
        .upstream(&good)
        .timeout_ms(2000)
        .start();
    let r = ts.query_with(
        client(50),
        "slow.example",
        RecordType::A,
        &QueryOpts::udp().edns(1232).timeout(Duration::from_secs(5)),
    );
    assert_eq!(r.rcode(), ResponseCode::NoError, "{}", r.summary());
    assert_eq!(r.a(), vec![Ipv4Addr::new(203, 0, 113, 7)]);
    assert_eq!(dead.count("slow.example"), 1, "the dead one asked once");
    assert_eq!(good.count("slow.example"), 1);
}

#[test]
fn an_error_code_from_the_first_upstream_goes_to_the_next() {
    let failing = TestUpstream::start();
    failing.set("broken.example", upstream::Reply::ServFail);
    let good = TestUpstream::start();
    good.set(
        "broken.example",
        upstream::Reply::a(Ipv4Addr::new(203, 0, 113, 8)),
    );
    let ts = Telesink::new()
        .upstream(&failing)
        .upstream(&good)
        .timeout_ms(3000)
        .start();
    let r = ts.query_with(
        client(51),
        "broken.example",
        RecordType::A,
        &QueryOpts::udp().edns(1232),
    );
    assert_eq!(
        r.a(),
        vec![Ipv4Addr::new(203, 0, 113, 8)],
        "{}",
        r.summary()
    );
    assert_eq!(failing.count("broken.example"), 1);
    assert_eq!(good.count("broken.example"), 1);
}

#[test]
fn a_single_upstream_that_never_answers_gives_servfail_after_one_question() {
    let dead = TestUpstream::start();
    dead.set("gone.example", upstream::Reply::Never);
    let ts = Telesink::new().upstream(&dead).timeout_ms(1000).start();
    let r = ts.query_with(
        client(52),
        "gone.example",
        RecordType::A,
        &QueryOpts::udp().edns(1232).timeout(Duration::from_secs(5)),
    );
    assert_eq!(r.rcode(), ResponseCode::ServFail, "{}", r.summary());
    assert_eq!(dead.count("gone.example"), 1);
}

#[test]
fn a_truncated_answer_is_asked_again_over_tcp() {
    let up = TestUpstream::start();
    up.set("big.example", upstream::Reply::long_txt(1600));
    let ts = Telesink::new().upstream(&up).start();
    // Over TCP the client gets all of it: it came to telesink over TCP too.
    let r = ts.query_with(
        client(53),
        "big.example",
        RecordType::TXT,
        &QueryOpts::udp().edns(1232),
    );
    assert_eq!(r.rcode(), ResponseCode::NoError, "{}", r.summary());
    let transports: Vec<UpTransport> = up
        .seen()
        .iter()
        .filter(|s| s.name.eq_ignore_ascii_case("big.example"))
        .map(|s| s.transport)
        .collect();
    assert!(
        transports.contains(&UpTransport::Udp) && transports.contains(&UpTransport::Tcp),
        "asked over UDP, then TCP: {transports:?}"
    );
    let r = ts.query_with(
        client(54),
        "big.example",
        RecordType::TXT,
        &QueryOpts::tcp(),
    );
    let txt_bytes: usize = r
        .answers_of(RecordType::TXT)
        .iter()
        .map(|rec| match &rec.data {
            RData::TXT(t) => t.txt_data.iter().map(|s| s.len()).sum::<usize>(),
            _ => 0,
        })
        .sum();
    assert!(txt_bytes >= 1600, "the whole answer: {txt_bytes} bytes");
}

#[test]
fn forwarded_answers_are_counted_and_logged_as_forwarded() {
    let up = RecordingUpstream::start();
    let ts = Telesink::new()
        .upstream_server(&up.addr.to_string())
        .start();
    for i in 0..5 {
        let r = ts.query(client(60), &format!("q{i}.c9.fast.example"), RecordType::A);
        assert_eq!(r.rcode(), ResponseCode::NoError);
    }
    let expo = ts.scrape();
    let forwarded = expo.sum("telesink_queries_total", &[("result", "forwarded")]);
    assert_eq!(forwarded, 5.0, "telesink_queries_total{{result=forwarded}}");
}

#[test]
fn a_first_upstream_with_nothing_listening_gives_way_to_the_next() {
    // A port nobody listens on: the kernel answers with ICMP port unreachable.
    let closed = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let good = TestUpstream::start();
    good.set(
        "down.example",
        upstream::Reply::a(Ipv4Addr::new(203, 0, 113, 9)),
    );
    let ts = Telesink::new()
        .upstream_server(&closed.to_string())
        .upstream(&good)
        .timeout_ms(3000)
        .start();
    let r = ts.query_with(
        client(55),
        "down.example",
        RecordType::A,
        &QueryOpts::udp().edns(1232),
    );
    assert_eq!(
        r.a(),
        vec![Ipv4Addr::new(203, 0, 113, 9)],
        "{}",
        r.summary()
    );
    assert_eq!(good.count("down.example"), 1);
}

/// The sections of an answer with the question's own name written as `QNAME` and TTLs left
/// out: what two answers to different names of the same shape must share.
fn shape(r: &Response, qname: &str) -> Vec<String> {
    let m = &r.msg;
    let show = |section: &str, records: &[Record]| {
        records
            .iter()
            .map(|rec| {
                let owner = rec.name.to_ascii().to_lowercase().replace(qname, "QNAME");
                format!("{section} {owner} {} {}", rec.record_type(), rec.data)
            })
            .collect::<Vec<_>>()
    };
    let mut out = show("answer", &m.answers);
    out.extend(show("authority", &m.authorities));
    out.extend(show("additional", &m.additionals));
    out.push(format!(
        "edns {:?}",
        m.edns.as_ref().map(|e| e.max_payload())
    ));
    out
}

/// An authoritative server's answer (the A record, then its zone's NS in the authority
/// section and the NS's address in the additional, then the OPT), the shape NSD gives: on the
/// UDP fast path it is judged from its bytes and sent as the upstream wrote it. The client gets
/// what the general path (hickory's decoding and encoding; here a query over TCP) gives for the
/// same shape, NS and glue included, fresh and from the cache; the glue's private address is no
/// rebinding hit (the answer's records alone count), a private address in the answer is.
#[test]
fn an_authoritative_answer_reaches_the_client_alike_on_both_paths() {
    let up = TestUpstream::start();
    let auth = |v4: [u8; 4]| Reply::Authoritative {
        v4: Ipv4Addr::from(v4),
        glue: Ipv4Addr::new(10, 0, 0, 53),
    };
    up.set("udp.zone.example", auth([192, 0, 2, 7]));
    up.set("tcp.zone.example", auth([192, 0, 2, 7]));
    up.set("inside.zone.example", auth([10, 1, 2, 3]));
    let ts = Telesink::new().upstream(&up).start();
    let udp_opts = QueryOpts::udp().edns(1232);
    let fast = ts.query_with(client(70), "udp.zone.example", RecordType::A, &udp_opts);
    let general = ts.query_with(
        client(70),
        "tcp.zone.example",
        RecordType::A,
        &QueryOpts::tcp().edns(1232),
    );
    assert_eq!(fast.rcode(), ResponseCode::NoError);
    assert_eq!(
        shape(&fast, "udp.zone.example."),
        shape(&general, "tcp.zone.example."),
        "fast path against general path"
    );
    assert_eq!(fast.msg.authorities.len(), 1, "the zone's NS kept");
    assert_eq!(fast.msg.additionals.len(), 1, "its address kept");
    // From the cache (the stored bytes): the same, and the upstream asked once.
    let hit = ts.query_with(client(71), "udp.zone.example", RecordType::A, &udp_opts);
    assert_eq!(
        shape(&hit, "udp.zone.example."),
        shape(&fast, "udp.zone.example.")
    );
    assert_eq!(up.count("udp.zone.example"), 1);
    // A private address in the answer itself: rebinding protection blocks it.
    let inside = ts.query_with(client(70), "inside.zone.example", RecordType::A, &udp_opts);
    assert_eq!(inside.rcode(), ResponseCode::NoError);
    assert_eq!(
        inside.a(),
        vec![Ipv4Addr::UNSPECIFIED],
        "blocked with the null answer"
    );
}
