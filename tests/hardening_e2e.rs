//! Hardening (issue 6), end to end against a real `telesink run`: abuse, faults, bad input.
//!
//! * Abuse: a flooding client is REFUSED past its rate and counted in
//!   `telesink_queries_total{result="refused"}`; TCP connections are capped (over the cap the
//!   longest-idle connection is closed to make room, RFC 7766 §6.2.3, so a burst of clients over
//!   the cap is still answered) and idle or stalled ones are closed, after which new ones work; pipelined TCP queries are answered concurrently (a slow one does not
//!   hold up the rest, RFC 7766); `ANY` is answered minimally (RFC 8482), never forwarded.
//! * Faults: upstream down → SERVFAIL within `timeout_ms`, and answers again when it is back,
//!   without a restart; an upstream answering garbage → SERVFAIL within `timeout_ms`; a list file
//!   deleted or replaced by a directory under load → every query still answered with the old
//!   policy, the failed reload counted; the query-log database on a read-only or full file
//!   system → DNS answers, the fault is logged and the lost rows counted, and writing resumes
//!   when space is back; SIGTERM with queries waiting on a slow upstream → they are answered,
//!   their rows written, exit 0.
//!
//! The file-system tests mount small tmpfs file systems (root only, as CI runs); elsewhere they
//! fall back to what an unprivileged user can do, or say why they are skipped.

mod support;

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use support::*;

/// Null mode, the vendor list blocked by default, and one local record.
fn base() -> Telesink {
    Telesink::new()
        .blocking_mode("null")
        .vendor_blocked()
        .record("nas.home.arpa", "A", "192.168.1.10")
}

fn metric(ts: &TelesinkProcess, name: &str, labels: &[(&str, &str)]) -> f64 {
    ts.scrape().sum(name, labels)
}

#[track_caller]
fn wait_until(what: &str, within: Duration, ts: &TelesinkProcess, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(
            t0.elapsed() < within,
            "{what}: not within {within:?}\n{}",
            ts.logs()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// Abuse
// ---------------------------------------------------------------------------------------------

#[test]
fn rate_limited_queries_are_refused_and_counted() {
    let up = TestUpstream::start();
    let ts = base()
        .upstream(&up)
        .rate_limit_qps(5)
        .server_toml("rate_limit_burst = 5")
        .start();
    let flood = client(60);
    let opts = QueryOpts::udp()
        .edns(1232)
        .timeout(Duration::from_millis(500));
    let (mut refused, mut ok) = (0u32, 0u32);
    let mut ede_text = String::new();
    for _ in 0..60 {
        match try_query(ts.addr(), flood, "nas.home.arpa", RecordType::A, &opts) {
            Ok(r) if r.rcode() == ResponseCode::Refused => {
                refused += 1;
                if let Some((_, t)) = r.ede().into_iter().next() {
                    ede_text = t;
                }
            }
            Ok(r) => {
                assert_eq!(r.rcode(), ResponseCode::NoError, "{}", r.summary());
                ok += 1;
            }
            Err(e) => panic!("a rate-limited client still gets an answer: {e}"),
        }
    }
    // 60 back-to-back queries take well under a second: the burst (5) and a few refills pass.
    assert!((5..=20).contains(&ok), "answered {ok}, refused {refused}");
    assert!(refused >= 40, "answered {ok}, refused {refused}");
    assert!(ede_text.contains("rate limited"), "EDE text {ede_text:?}");
    // Counted, under the client's own label.
    wait_until("refused counted", Duration::from_secs(5), &ts, || {
        metric(
            &ts,
            "telesink_queries_total",
            &[("result", "refused"), ("client", "127.0.0.60")],
        ) >= refused as f64
    });
    // Another client is not affected; the flooder gets answers again after a pause.
    let r = ts.query(client(61), "nas.home.arpa", RecordType::A);
    assert_eq!(r.rcode(), ResponseCode::NoError, "{}", r.summary());
    thread::sleep(Duration::from_millis(1100));
    let r = ts.query(flood, "nas.home.arpa", RecordType::A);
    assert_eq!(r.rcode(), ResponseCode::NoError, "{}", r.summary());
}

/// Reads from `s` until EOF, a reset, or `within`; `Some(bytes)` when the server closed it.
fn closed_within(s: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let t0 = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    while t0.elapsed() < within {
        match s.read(&mut buf) {
            Ok(0) => return Some(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some(out),
        }
    }
    None
}

/// One framed query on an open connection; the answer's rcode.
fn tcp_exchange(s: &mut TcpStream, name: &str, id: u16) -> Result<ResponseCode, String> {
    let q = encode_query(name, RecordType::A, &QueryOpts::tcp(), id);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.write_all(&framed).map_err(|e| e.to_string())?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).map_err(|e| e.to_string())?;
    let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut msg).map_err(|e| e.to_string())?;
    let m = Message::from_vec(&msg).map_err(|e| e.to_string())?;
    if m.metadata.id != id {
        return Err(format!("ID {} != {id}", m.metadata.id));
    }
    Ok(m.metadata.response_code)
}

/// Reads one framed answer; its ID and rcode.
fn tcp_read_answer(s: &mut TcpStream) -> Result<(u16, ResponseCode), String> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).map_err(|e| e.to_string())?;
    let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut msg).map_err(|e| e.to_string())?;
    let m = Message::from_vec(&msg).map_err(|e| e.to_string())?;
    Ok((m.metadata.id, m.metadata.response_code))
}

/// RFC 7766 §6.2.1.1: pipelined queries on one connection are answered concurrently, so a query
/// waiting on a slow upstream does not hold up a local or blocked answer sent after it.
#[test]
fn tcp_pipelined_queries_are_not_held_behind_a_slow_one() {
    let up = TestUpstream::start();
    up.set(
        "slow.example",
        Reply::delayed(
            Duration::from_millis(1500),
            Reply::a(Ipv4Addr::new(192, 0, 2, 7)),
        ),
    );
    let ts = base().upstream(&up).timeout_ms(4000).start();
    let mut s = tcp_connect_from(ts.addr(), client(86), Duration::from_secs(3)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut framed = Vec::new();
    for (name, id) in [
        ("slow.example", 1u16),
        ("nas.home.arpa", 2),
        ("tracking.vendor.example", 3),
    ] {
        let q = encode_query(name, RecordType::A, &QueryOpts::tcp(), id);
        framed.extend_from_slice(&(q.len() as u16).to_be_bytes());
        framed.extend_from_slice(&q);
    }
    s.write_all(&framed).unwrap();
    // Answered in order, the first answer would be the slow one (ID 1).
    let mut fast = vec![
        tcp_read_answer(&mut s).unwrap(),
        tcp_read_answer(&mut s).unwrap(),
    ];
    fast.sort_by_key(|a| a.0);
    assert_eq!(
        fast,
        vec![(2, ResponseCode::NoError), (3, ResponseCode::NoError)],
        "the local and the blocked answer come first"
    );
    assert_eq!(
        tcp_read_answer(&mut s).unwrap(),
        (1, ResponseCode::NoError),
        "the slow one still arrives"
    );
}

/// Issue 16 item 4 (RFC 7766 §6.2.3): at `max_tcp_connections`, a new connection is not refused:
/// telesink closes the connection idle the longest and answers the new one. Idle and stalled
/// connections are closed after `tcp_idle_timeout`.
#[test]
fn tcp_connections_are_capped_and_idle_ones_closed() {
    let up = TestUpstream::start();
    let ts = base()
        .upstream(&up)
        .server_toml("max_tcp_connections = 4\ntcp_idle_timeout = \"1s\"")
        .start();
    let connect = |x: u8| tcp_connect_from(ts.addr(), client(x), Duration::from_secs(3)).unwrap();

    // Four connections: one silent (the oldest), one that stalls inside a frame (one byte of
    // the length), two that ask.
    let mut held = vec![connect(70)];
    thread::sleep(Duration::from_millis(30));
    held.extend((71..74).map(connect));
    held[1].write_all(&[0]).unwrap();
    for (i, s) in held.iter_mut().enumerate().skip(2) {
        assert_eq!(
            tcp_exchange(s, "nas.home.arpa", i as u16),
            Ok(ResponseCode::NoError)
        );
    }
    // Past the grace a new connection gets before it may be closed for another.
    thread::sleep(Duration::from_millis(300));

    // The fifth is over the cap: it is answered, and the silent connection, idle the longest,
    // is closed to make room.
    let mut fifth = connect(75);
    assert_eq!(
        tcp_exchange(&mut fifth, "nas.home.arpa", 99),
        Ok(ResponseCode::NoError),
        "a connection over the cap is served\n{}",
        ts.logs()
    );
    assert!(
        closed_within(&mut held[0], Duration::from_millis(1000)).is_some(),
        "the longest-idle connection is closed to make room"
    );

    // The others keep working (this also restarts the idle clock of the last one).
    assert_eq!(
        tcp_exchange(&mut held[3], "nas.home.arpa", 7),
        Ok(ResponseCode::NoError)
    );
    let t0 = Instant::now();

    // After tcp_idle_timeout (1 s) with nothing received, all are closed, the stalled one
    // included: a slow client cannot hold a slot.
    let mut rest: Vec<&mut TcpStream> = held.iter_mut().skip(1).collect();
    rest.push(&mut fifth);
    for (i, s) in rest.into_iter().enumerate() {
        let left = Duration::from_millis(3000).saturating_sub(t0.elapsed());
        assert!(
            closed_within(s, left).is_some(),
            "connection {i} still open {:?} after the idle timeout\n{}",
            t0.elapsed(),
            ts.logs()
        );
    }
    assert!(
        t0.elapsed() >= Duration::from_millis(700),
        "closed too early: {:?}",
        t0.elapsed()
    );

    // Their slots are free again: four new connections all work.
    thread::sleep(Duration::from_millis(300));
    let mut fresh: Vec<TcpStream> = (76..80).map(connect).collect();
    for (i, s) in fresh.iter_mut().enumerate() {
        assert_eq!(
            tcp_exchange(s, "nas.home.arpa", 100 + i as u16),
            Ok(ResponseCode::NoError)
        );
    }
}

/// Issue 16 item 4: a burst of well-behaved clients (connect, ask, read the answer, close) over
/// `max_tcp_connections`, while idle pooled connections hold every slot, all get answers.
/// Before, every connection over the cap was closed unanswered.
#[test]
fn tcp_burst_over_the_cap_does_not_fail_well_behaved_clients() {
    let up = TestUpstream::start();
    let ts = base()
        .upstream(&up)
        .server_toml("max_tcp_connections = 4\ntcp_idle_timeout = \"10s\"")
        .start();
    // Four pooled connections that asked once and stay open, idle: every slot is taken.
    let mut pooled: Vec<TcpStream> = (90..94)
        .map(|x| tcp_connect_from(ts.addr(), client(x), Duration::from_secs(3)).unwrap())
        .collect();
    for (i, s) in pooled.iter_mut().enumerate() {
        assert_eq!(
            tcp_exchange(s, "nas.home.arpa", i as u16),
            Ok(ResponseCode::NoError)
        );
    }
    thread::sleep(Duration::from_millis(300));

    // 16 clients at once, each on its own connection; a blocked and a local name.
    let addr = ts.addr();
    let results: Vec<Result<ResponseCode, String>> = thread::scope(|scope| {
        let handles: Vec<_> = (0..16u8)
            .map(|k| {
                scope.spawn(move || {
                    let mut s = tcp_connect_from(addr, client(100 + k), Duration::from_secs(3))
                        .map_err(|e| format!("connect: {e}"))?;
                    let name = if k % 2 == 0 {
                        "nas.home.arpa"
                    } else {
                        "tracking.vendor.example"
                    };
                    tcp_exchange(&mut s, name, 1000 + u16::from(k))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let failed: Vec<_> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| !matches!(r, Ok(ResponseCode::NoError)))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of 16 clients over the cap failed: {failed:?}\n{}",
        failed.len(),
        ts.logs()
    );
    // Room was made by closing idle pooled connections, not by refusing the burst.
    let closed = pooled
        .iter_mut()
        .filter_map(|s| closed_within(s, Duration::from_millis(200)))
        .count();
    assert!(closed >= 1, "no pooled idle connection was closed");
}

#[test]
fn any_queries_get_a_minimal_answer_and_are_not_forwarded() {
    let up = TestUpstream::start();
    up.set("big.example", Reply::many_a(60));
    let ts = base().upstream(&up).start();

    for opts in [
        QueryOpts::udp(),
        QueryOpts::udp().edns(4096),
        QueryOpts::tcp(),
    ] {
        let r = ts.query_with(client(80), "big.example", RecordType::ANY, &opts);
        assert_eq!(r.rcode(), ResponseCode::NoError, "{}", r.summary());
        assert!(!r.tc(), "{}", r.summary());
        let hinfo: Vec<_> = r
            .answers()
            .iter()
            .filter_map(|rec| match &rec.data {
                RData::HINFO(h) => Some(h.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            r.answers().len(),
            1,
            "one synthesized record: {}",
            r.summary()
        );
        assert_eq!(hinfo.len(), 1, "an HINFO (RFC 8482 §4.2): {}", r.summary());
        assert_eq!(&*hinfo[0].cpu, b"RFC8482", "{}", r.summary());
        assert!(hinfo[0].os.is_empty(), "{}", r.summary());
        // A small answer to a small query: no amplification.
        assert!(r.raw.len() < 120, "{} bytes: {}", r.raw.len(), r.summary());
    }
    assert_eq!(
        up.count_type("big.example", RecordType::ANY),
        0,
        "ANY is never forwarded: {:#?}",
        up.seen()
    );
    // A blocked name still gets its block answer (null mode: NODATA for types other than A/AAAA).
    let r = ts.query(client(81), "tracking.vendor.example", RecordType::ANY);
    assert_eq!(r.rcode(), ResponseCode::NoError, "{}", r.summary());
    assert!(
        r.answers().is_empty() && r.authority_soa().is_some(),
        "{}",
        r.summary()
    );
    up.assert_not_forwarded("tracking.vendor.example");
    // Local names answer ANY from their records (a handful, authoritative).
    let r = ts.query(client(82), "nas.home.arpa", RecordType::ANY);
    assert!(r.aa(), "{}", r.summary());
    assert_eq!(
        r.a(),
        vec![Ipv4Addr::new(192, 168, 1, 10)],
        "{}",
        r.summary()
    );
    // Other types of the same name are still forwarded.
    let r = ts.query_with(client(83), "big.example", RecordType::A, &QueryOpts::tcp());
    assert_eq!(r.a().len(), 60, "{}", r.summary());
}

/// Found by the `request` fuzz target: a question name that is a compression pointer into the
/// header was echoed as received, so the answer's pointer led into the answer's own header and
/// the answer did not decode. Now: FORMERR without the question, over UDP and TCP.
#[test]
fn question_pointing_into_the_header_gets_a_decodable_formerr() {
    let up = TestUpstream::start();
    let ts = base().upstream(&up).start();
    let query: &[u8] = &[
        0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, // header: ID 0x1234, RD, QDCOUNT 1
        0xc0, 0x02, 0, 1, 0, 1, // name = pointer to offset 2; A IN
    ];
    let udp = send_raw_udp(ts.addr(), client(84), query).expect("an answer over UDP");
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(query);
    let tcp = send_raw_tcp(ts.addr(), client(85), &framed).expect("a TCP connection");
    assert!(tcp.len() > 2, "an answer over TCP: {tcp:02x?}");
    for (what, raw) in [("UDP", &udp[..]), ("TCP", &tcp[2..])] {
        let m = Message::from_vec(raw).unwrap_or_else(|e| panic!("{what}: {e}: {raw:02x?}"));
        assert_eq!(m.metadata.id, 0x1234, "{what}");
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr, "{what}");
        assert!(m.queries.is_empty(), "{what}");
    }
    assert!(up.seen().is_empty(), "nothing forwarded: {:#?}", up.seen());
    // Still serving.
    let r = ts.query(client(84), "nas.home.arpa", RecordType::A);
    assert_eq!(r.rcode(), ResponseCode::NoError, "{}", r.summary());
}

// ---------------------------------------------------------------------------------------------
// Upstream faults
// ---------------------------------------------------------------------------------------------

/// The upstream's answer to A questions in these tests.
const GOOD_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 77);

#[test]
fn upstream_down_then_back_recovers_without_restart() {
    let mut up = TestUpstream::start();
    up.set_default(Reply::a(GOOD_IP));
    let mut ts = base().upstream(&up).timeout_ms(500).start();
    let slow = QueryOpts::udp().timeout(Duration::from_secs(5));
    let r = ts.query_with(client(90), "before.example", RecordType::A, &slow);
    assert_eq!(r.a(), vec![GOOD_IP], "{}", r.summary());

    up.stop();
    for i in 0..3 {
        let name = format!("down{i}.example");
        let r = ts.query_with(client(90), &name, RecordType::A, &slow);
        assert_eq!(r.rcode(), ResponseCode::ServFail, "{}", r.summary());
        assert!(
            r.elapsed <= Duration::from_millis(1500),
            "{name}: {:?}",
            r.elapsed
        );
        // Over TCP too (the upstream's TCP port is closed too).
        let r = ts.query_with(
            client(91),
            &name,
            RecordType::A,
            &QueryOpts::tcp().timeout(Duration::from_secs(5)),
        );
        assert_eq!(r.rcode(), ResponseCode::ServFail, "{}", r.summary());
        assert!(
            r.elapsed <= Duration::from_millis(1500),
            "{name} over TCP: {:?}",
            r.elapsed
        );
    }
    // Cached names are still answered meanwhile.
    let r = ts.query_with(client(90), "before.example", RecordType::A, &slow);
    assert_eq!(r.a(), vec![GOOD_IP], "{}", r.summary());
    // Local and blocked names never needed the upstream.
    ts.assert_blocked(client(90), "tracking.vendor.example");

    up.restart();
    let t0 = Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        let r = ts.query_with(
            client(92),
            &format!("back{n}.example"),
            RecordType::A,
            &slow,
        );
        if r.a() == vec![GOOD_IP] {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no answer 10 s after the upstream came back: {}\n{}",
            r.summary(),
            ts.logs()
        );
        thread::sleep(Duration::from_millis(100));
    }
    // And keeps answering.
    for i in 0..5 {
        let r = ts.query_with(
            client(92),
            &format!("after{i}.example"),
            RecordType::A,
            &slow,
        );
        assert_eq!(r.a(), vec![GOOD_IP], "{}", r.summary());
    }
    assert!(ts.is_running());
    let failed = metric(&ts, "telesink_queries_total", &[("result", "failed")]);
    assert!(failed >= 6.0, "SERVFAILs counted as failed: {failed}");
}

#[test]
fn upstream_answering_garbage_gives_servfail_within_the_timeout() {
    let up = TestUpstream::start();
    up.set_default(Reply::Garbage);
    let mut ts = base().upstream(&up).timeout_ms(500).start();
    let slow = QueryOpts::udp().edns(1232).timeout(Duration::from_secs(5));
    for i in 0..12 {
        let r = ts.query_with(
            client(95),
            &format!("junk{i}.example"),
            RecordType::A,
            &slow,
        );
        assert_eq!(r.rcode(), ResponseCode::ServFail, "{}", r.summary());
        assert!(
            r.elapsed <= Duration::from_millis(1500),
            "junk{i}: SERVFAIL after {:?}",
            r.elapsed
        );
    }
    assert!(up.seen().len() >= 12, "the upstream was asked");
    // Still serving, and the upstream turning good again is picked up.
    up.set_default(Reply::a(GOOD_IP));
    let t0 = Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        let r = ts.query_with(
            client(96),
            &format!("good{n}.example"),
            RecordType::A,
            &slow,
        );
        if r.a() == vec![GOOD_IP] {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{}", r.summary());
    }
    assert!(ts.is_running());
}

// ---------------------------------------------------------------------------------------------
// List faults
// ---------------------------------------------------------------------------------------------

/// Queries from a few threads until stopped: (answered, failures).
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<(u64, Vec<String>)>>,
}

impl Load {
    fn start(addr: SocketAddr, clients: std::ops::Range<u8>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = clients
            .map(|c| {
                let stop = stop.clone();
                thread::spawn(move || {
                    let mut ok = 0u64;
                    let mut bad = Vec::new();
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let (name, blocked) = if i.is_multiple_of(2) {
                            ("tracking.vendor.example", true)
                        } else {
                            ("nas.home.arpa", false)
                        };
                        let opts = if i.is_multiple_of(5) {
                            QueryOpts::tcp()
                        } else {
                            QueryOpts::udp()
                        };
                        match try_query(
                            addr,
                            client(c),
                            name,
                            RecordType::A,
                            &opts.timeout(Duration::from_secs(2)),
                        ) {
                            Ok(r) => {
                                let want = if blocked {
                                    Ipv4Addr::UNSPECIFIED
                                } else {
                                    Ipv4Addr::new(192, 168, 1, 10)
                                };
                                if r.a() == vec![want] {
                                    ok += 1;
                                } else if bad.len() < 5 {
                                    bad.push(format!("{name}: {}", r.summary()));
                                }
                            }
                            Err(e) => {
                                if bad.len() < 5 {
                                    bad.push(format!("{name}: {e}"));
                                }
                            }
                        }
                    }
                    (ok, bad)
                })
            })
            .collect();
        Load { stop, threads }
    }

    fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut ok = 0;
        let mut bad = Vec::new();
        for t in self.threads {
            let (o, b) = t.join().unwrap();
            ok += o;
            bad.extend(b);
        }
        (ok, bad)
    }
}

fn reloads(ts: &TelesinkProcess) -> (f64, f64) {
    let m = ts.scrape();
    (
        m.sum("telesink_reloads_total", &[("outcome", "success")]),
        m.sum("telesink_reloads_total", &[("outcome", "failure")]),
    )
}

#[test]
fn list_deleted_or_unreadable_under_load_keeps_the_old_policy() {
    let up = TestUpstream::start();
    let ts = base().upstream(&up).start();
    let list = ts.dir().join("vendor.txt");
    let load = Load::start(ts.addr(), 100..103);
    thread::sleep(Duration::from_millis(300));

    // Deleted: the watcher sees it; the reload fails and is counted; the old policy stays.
    let (_, f0) = reloads(&ts);
    fs::remove_file(&list).unwrap();
    wait_until(
        "failed reload after delete",
        Duration::from_secs(5),
        &ts,
        || reloads(&ts).1 > f0,
    );
    ts.assert_blocked(client(104), "tracking.vendor.example");
    assert!(
        ts.logs().contains("vendor.txt"),
        "the log names the list\n{}",
        ts.logs()
    );

    // Unreadable (a directory where the file was), and a SIGHUP on top: still failing.
    fs::create_dir(&list).unwrap();
    let (_, f1) = reloads(&ts);
    ts.signal("HUP");
    wait_until(
        "failed reload of a directory",
        Duration::from_secs(5),
        &ts,
        || reloads(&ts).1 > f1,
    );
    ts.assert_blocked(client(104), "metrics.vendor.example");
    thread::sleep(Duration::from_millis(300));

    // Back: the next reload succeeds.
    fs::remove_dir(&list).unwrap();
    let (s2, _) = reloads(&ts);
    ts.write_file("vendor.txt", VENDOR_NAMES);
    wait_until(
        "reload after the list is back",
        Duration::from_secs(5),
        &ts,
        || reloads(&ts).0 > s2,
    );
    assert_eq!(
        metric(&ts, "telesink_config_last_reload_success", &[]),
        1.0,
        "{}",
        ts.logs()
    );

    let (ok, bad) = load.finish();
    assert!(
        bad.is_empty(),
        "{} answered; wrong or missing: {bad:#?}",
        ok
    );
    assert!(ok > 50, "too little load: {ok}");
}

// ---------------------------------------------------------------------------------------------
// Query-log database faults
// ---------------------------------------------------------------------------------------------

/// A tmpfs mounted on a fresh temporary directory, unmounted (then the directory removed) on
/// drop. `None` when mounting is not allowed (not root).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(opts: &str) -> Option<Tmpfs> {
        let dir = tempfile::Builder::new()
            .prefix("telesink-tmpfs-")
            .tempdir()
            .unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// The harness puts the query log at `<dir>/q.db`; a symlink sends it to `target` (SQLite
/// resolves it, so its journal and WAL go there too).
fn redirect_db(builder: &Telesink, target: &Path) {
    std::os::unix::fs::symlink(target, builder.dir().join("q.db")).unwrap();
}

fn rows(db: &Path) -> i64 {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.busy_timeout(Duration::from_secs(2)).unwrap();
    conn.query_row("SELECT count(*) FROM queries", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn read_only_database_directory_dns_keeps_answering() {
    let up = TestUpstream::start();
    let builder = base().upstream(&up);
    // As root a read-only mount is what stops writes (permissions do not); without root, a
    // directory without write permission does.
    let mount = Tmpfs::mount("ro,size=1m");
    let fallback = tempfile::tempdir().unwrap();
    let dbdir = match &mount {
        Some(m) => m.path().to_path_buf(),
        None => {
            let mut p = fs::metadata(fallback.path()).unwrap().permissions();
            std::os::unix::fs::PermissionsExt::set_mode(&mut p, 0o555);
            fs::set_permissions(fallback.path(), p).unwrap();
            fallback.path().to_path_buf()
        }
    };
    let db = dbdir.join("q.db");
    redirect_db(&builder, &db);
    let ts = builder.start();
    for i in 0..20 {
        ts.assert_blocked(client(110), "tracking.vendor.example");
        let r = ts.query(client(110), &format!("n{i}.example"), RecordType::A);
        assert_eq!(r.a(), vec![DEFAULT_V4], "{}", r.summary());
    }
    let logs = ts.logs();
    assert!(
        logs.contains("q.db") && logs.to_ascii_lowercase().contains("read"),
        "the log names the database and the fault:\n{logs}"
    );
    assert!(!db.exists());
    drop(ts);
    drop(mount);
}

#[test]
fn full_database_disk_drops_and_counts_rows_and_recovers() {
    let up = TestUpstream::start();
    let Some(mount) = Tmpfs::mount("size=2m") else {
        eprintln!("SKIPPED: mounting a tmpfs needs root (CI runs as root)");
        return;
    };
    let builder = base().upstream(&up).querylog_toml("log = \"all\"");
    let db = mount.path().join("q.db");
    redirect_db(&builder, &db);
    let ts = builder.start();
    let metrics_dropped = || metric(&ts, "telesink_querylog_dropped_total", &[]);

    for _ in 0..20 {
        ts.assert_blocked(client(112), "tracking.vendor.example");
    }
    wait_until("first rows written", Duration::from_secs(5), &ts, || {
        rows(&db) >= 20
    });

    // Fill the file system.
    let filler = mount.path().join("filler");
    {
        let mut f = fs::File::create(&filler).unwrap();
        let chunk = vec![0x55u8; 16 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    // Rows with long names use up the free pages quickly.
    let long = format!("{}.tracking.vendor.example", "x".repeat(60));
    let t0 = Instant::now();
    let mut slowest = Duration::ZERO;
    while metrics_dropped() == 0.0 {
        for i in 0..50 {
            let name = format!("n{i}.{long}");
            let r = ts.query(client(112), &name, RecordType::A);
            assert_eq!(r.a(), vec![Ipv4Addr::UNSPECIFIED], "{}", r.summary());
            slowest = slowest.max(r.elapsed);
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no row dropped on a full disk\n{}",
            ts.logs()
        );
        thread::sleep(Duration::from_millis(100));
    }
    assert!(
        slowest < Duration::from_millis(500),
        "DNS waited on the disk: {slowest:?}"
    );
    let logs = ts.logs().to_ascii_lowercase();
    assert!(
        logs.contains("q.db") && (logs.contains("full") || logs.contains("space")),
        "the log says the disk is full:\n{logs}"
    );

    // Space back: writing resumes by itself.
    fs::remove_file(&filler).unwrap();
    let before = rows(&db);
    for _ in 0..20 {
        ts.assert_blocked(client(113), "metrics.vendor.example");
    }
    wait_until("rows written again", Duration::from_secs(10), &ts, || {
        rows(&db) >= before + 20
    });
    drop(ts);
    drop(mount);
}

// ---------------------------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------------------------

#[test]
fn sigterm_answers_queries_in_flight_and_exits_0() {
    let up = TestUpstream::start();
    // Every forwarded name takes 700 ms.
    up.set_default(Reply::delayed(
        Duration::from_millis(700),
        Reply::a(Ipv4Addr::new(192, 0, 2, 9)),
    ));
    let builder = base()
        .upstream(&up)
        .timeout_ms(3000)
        .querylog_toml("log = \"all\"");
    let db = builder.dir().join("q.db");
    let mut ts = builder.start();
    let addr = ts.addr();

    // Eight slow queries, UDP and TCP, then SIGTERM while they wait for the upstream.
    let waiting: Vec<_> = (0..8u8)
        .map(|i| {
            thread::spawn(move || {
                let opts = if i.is_multiple_of(2) {
                    QueryOpts::udp()
                } else {
                    QueryOpts::tcp()
                };
                try_query(
                    addr,
                    client(120 + i),
                    &format!("slow{i}.example"),
                    RecordType::A,
                    &opts.timeout(Duration::from_secs(5)),
                )
            })
        })
        .collect();
    wait_until(
        "queries reach the upstream",
        Duration::from_secs(3),
        &ts,
        || up.seen().len() >= 8,
    );
    let t0 = Instant::now();
    let status = ts.terminate(Duration::from_secs(10));
    let took = t0.elapsed();
    let answers: Vec<_> = waiting.into_iter().map(|t| t.join().unwrap()).collect();
    for (i, a) in answers.iter().enumerate() {
        match a {
            Ok(r) => assert_eq!(
                r.a(),
                vec![Ipv4Addr::new(192, 0, 2, 9)],
                "slow{i}: {}",
                r.summary()
            ),
            Err(e) => panic!(
                "slow{i} was in flight at SIGTERM and got no answer: {e}\n{}",
                ts.logs()
            ),
        }
    }
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?}\n{}",
        ts.logs()
    );
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    // Their rows were written before the exit.
    let n: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT count(*) FROM queries WHERE name LIKE 'slow%.example'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 8, "rows of the in-flight queries\n{}", ts.logs());
}
