//! The cache counters add up (issue 16, item 3), on a real server scraped over HTTP:
//! `telesink_cache_hits_total + telesink_cache_misses_total` = the queries that reached the
//! cache step; a stale answer served because the upstream failed counts in
//! `telesink_cache_stale_total` (and as a miss, never a hit); a block found by CNAME inspection
//! counts as the hit or miss the cache step saw; refused, local and list-blocked queries count
//! in none of them.

mod support;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use support::*;

#[test]
fn hits_and_misses_add_up_to_the_queries_that_reached_the_cache() {
    let ip = Ipv4Addr::new(192, 0, 2, 7);
    let up = TestUpstream::start();
    let addrs = |ttl| Reply::Addrs {
        v4: vec![ip],
        v6: vec![],
        ttl,
    };
    up.set("plain.example", addrs(300));
    up.set("short.example", addrs(1));
    up.set(
        "cloak.example",
        Reply::cname_chain(&["edge.tracker.example"], ip),
    );
    up.set("down.example", Reply::Never);
    let ts = Telesink::new()
        .upstream(&up)
        .allow_networks(&["127.0.0.0/29"])
        .timeout_ms(500)
        .file("track.txt", "tracker.example\n")
        .toml(
            r#"
[[list]]
name = "track"
source = "track.txt"
categories = ["telemetry"]

[default]
block = ["telemetry"]
"#,
        )
        .start();
    let me = client(2);
    let rcode = |name: &str, qtype| ts.query(me, name, qtype).rcode();

    // Reach the cache step: a miss, then a hit.
    assert_eq!(rcode("plain.example", RecordType::A), ResponseCode::NoError);
    assert_eq!(rcode("plain.example", RecordType::A), ResponseCode::NoError);
    // CNAME cloaking: blocked after a miss (forwarded), then after a hit (cached).
    for _ in 0..2 {
        let r = ts.query(me, "cloak.example", RecordType::A);
        assert_eq!(r.a(), vec![Ipv4Addr::UNSPECIFIED], "{}", r.summary());
    }
    // A miss whose entry expires, then a stale answer when the upstream stops answering.
    assert_eq!(rcode("short.example", RecordType::A), ResponseCode::NoError);
    std::thread::sleep(Duration::from_millis(2200));
    up.set("short.example", Reply::Never);
    let opts = QueryOpts::udp().edns(1232).timeout(Duration::from_secs(6));
    let r = ts.query_with(me, "short.example", RecordType::A, &opts);
    assert!(r.ede().iter().any(|(c, _)| *c == 3), "{}", r.summary());
    // A miss that fails (SERVFAIL).
    let r = ts.query_with(me, "down.example", RecordType::A, &opts);
    assert_eq!(r.rcode(), ResponseCode::ServFail, "{}", r.summary());

    // Never reach it: blocked by a list, local, ANY, refused (outside allow_networks).
    let r = ts.query(me, "tracker.example", RecordType::A);
    assert_eq!(r.a(), vec![Ipv4Addr::UNSPECIFIED], "{}", r.summary());
    assert_eq!(rcode("localhost", RecordType::A), ResponseCode::NoError);
    assert_eq!(
        rcode("plain.example", RecordType::ANY),
        ResponseCode::NoError
    );
    let r = ts.query(client(9), "plain.example", RecordType::A);
    assert_eq!(r.rcode(), ResponseCode::Refused);

    // The event is recorded just after the answer is sent: wait for the last one.
    let deadline = Instant::now() + Duration::from_secs(5);
    let body = loop {
        let body = ts.scrape();
        let refused = body.sum("telesink_queries_total", &[("result", "refused")]);
        if refused >= 1.0 || Instant::now() > deadline {
            break body;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let hits = body.value("telesink_cache_hits_total", &[]).expect("hits");
    let misses = body
        .value("telesink_cache_misses_total", &[])
        .expect("misses");
    let stale = body
        .value("telesink_cache_stale_total", &[])
        .expect("stale");
    // Hits: plain (2nd), cloak (2nd). Misses: plain, cloak, short, short (stale), down.
    assert_eq!((hits, misses, stale), (2.0, 5.0, 1.0), "{body:?}");
    // The queries that reached the cache step, from the per-result counts: cached (the hit and
    // the stale answer), forwarded, failed, and the two cloaking blocks.
    let result = |r: &str| body.sum("telesink_queries_total", &[("result", r)]);
    let cloaking_blocks = 2.0;
    assert_eq!(
        hits + misses,
        result("cached") + result("forwarded") + result("failed") + cloaking_blocks,
        "{body:?}"
    );
    assert_eq!(result("blocked"), 3.0, "{body:?}");
}
