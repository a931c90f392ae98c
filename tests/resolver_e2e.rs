//! The resolver a home relies on (issue 18): `[[forward]]` zones, rebinding protection and the
//! upstream `strategy` with back-off, against the real binary and real upstreams on loopback.
//!
//! Every assertion is on what the upstreams received and what the client got, never on time.

mod support;

use std::fs;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use support::*;

/// How long something eventual (a reload, a back-off running out, a log row) may take.
const EVENTUALLY: Duration = Duration::from_secs(30);

fn ip4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// Queries `name` A with EDNS (so that an EDE can come back).
fn ask(ts: &TelesinkProcess, from: Ipv4Addr, name: &str) -> Response {
    ts.query_with(from, name, RecordType::A, &QueryOpts::udp().edns(1232))
}

#[track_caller]
fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(t0.elapsed() < EVENTUALLY, "never happened: {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

fn upstream_outcomes(ts: &TelesinkProcess, up: &TestUpstream, outcome: &str) -> f64 {
    ts.scrape().sum(
        "telesink_upstream_responses_total",
        &[("upstream", &up.addr().to_string()), ("outcome", outcome)],
    )
}

// ----------------------------------------------------------------------------------------------
// [[forward]]
// ----------------------------------------------------------------------------------------------

#[test]
fn a_forwarded_name_reaches_only_its_server_and_is_cached() {
    let up = TestUpstream::start();
    let router = TestUpstream::start();
    router.set("fritz.box", Reply::a(ip4("192.168.178.1")));
    router.set("nas.fritz.box", Reply::a(ip4("192.168.178.20")));
    let ts = Telesink::new()
        .upstream(&up)
        .toml(&format!(
            "[[forward]]\ndomains = [\"fritz.box\"]\nservers = [\"{}\"]\n",
            router.addr()
        ))
        .start();

    for _ in 0..3 {
        let r = ask(&ts, client(10), "nas.fritz.box");
        // A private address from the forward's server: rebinding protection does not apply.
        assert_eq!(r.a(), vec![ip4("192.168.178.20")], "{}", r.summary());
        let r = ask(&ts, client(10), "FRITZ.box");
        assert_eq!(r.a(), vec![ip4("192.168.178.1")], "{}", r.summary());
    }
    // Asked once each: the answer cache serves the rest.
    assert_eq!(router.count("nas.fritz.box"), 1, "{:#?}", router.seen());
    assert_eq!(router.count("fritz.box"), 1, "{:#?}", router.seen());
    up.assert_not_forwarded("fritz.box");

    // Other names go to the upstreams, never to the router.
    let r = ask(&ts, client(10), "www.example.com");
    assert_eq!(r.a(), vec![DEFAULT_V4], "{}", r.summary());
    assert_eq!(up.count("www.example.com"), 1);
    assert!(!router.saw_under("example.com"), "{:#?}", router.seen());
    // A name that only ends like the zone is not in it.
    ask(&ts, client(10), "notfritz.box");
    assert_eq!(up.count("notfritz.box"), 1);
    assert_eq!(router.count("notfritz.box"), 0);

    // The forward's server has its upstream series.
    let ok = upstream_outcomes(&ts, &router, "ok");
    assert_eq!(ok, 2.0, "router's ok outcomes");

    // `explain` names the route.
    let out = ts.cli(&["explain", "nas.fritz.box"]);
    assert_eq!(out.code, Some(0), "{out}");
    assert!(
        out.stdout
            .contains(&format!("[[forward]] fritz.box → {}", router.addr())),
        "{out}"
    );
    let out = ts.cli(&["explain", "notfritz.box"]);
    assert!(!out.stdout.contains("[[forward]]"), "{out}");
}

#[test]
fn the_most_specific_forward_wins() {
    let up = TestUpstream::start();
    let router = TestUpstream::start();
    let iot = TestUpstream::start();
    router.set_default(Reply::a(ip4("192.168.1.10")));
    iot.set_default(Reply::a(ip4("192.168.2.10")));
    let ts = Telesink::new()
        .upstream(&up)
        .toml(&format!(
            "[[forward]]\ndomains = [\"iot.lan\"]\nservers = [\"{}\"]\n\n\
             [[forward]]\ndomains = [\"lan\"]\nservers = [\"{}\"]\n",
            iot.addr(),
            router.addr()
        ))
        .start();
    let r = ask(&ts, client(11), "cam.iot.lan");
    assert_eq!(r.a(), vec![ip4("192.168.2.10")], "{}", r.summary());
    let r = ask(&ts, client(11), "nas.lan");
    assert_eq!(r.a(), vec![ip4("192.168.1.10")], "{}", r.summary());
    let r = ask(&ts, client(11), "iot.lan");
    assert_eq!(r.a(), vec![ip4("192.168.2.10")], "{}", r.summary());
    assert_eq!(iot.count("cam.iot.lan"), 1);
    assert_eq!(iot.count("iot.lan"), 1);
    assert_eq!(router.count("nas.lan"), 1);
    assert!(!router.saw_under("iot.lan"), "{:#?}", router.seen());
    assert!(!iot.saw_under("nas.lan"), "{:#?}", iot.seen());
    up.assert_not_forwarded("lan");
}

#[test]
fn a_forward_for_a_private_reverse_zone_beats_the_local_answer_but_not_a_record() {
    let up = TestUpstream::start();
    let router = TestUpstream::start();
    router.set_default(Reply::a(ip4("192.168.178.30")));
    let ptr = "20.178.168.192.in-addr.arpa";
    let cfg = |forward: bool| {
        let mut t = String::from(
            "[[record]]\nname = \"printer.home.arpa\"\ntype = \"A\"\nvalue = \"192.168.178.40\"\n",
        );
        if forward {
            t.push_str(&format!(
                "\n[[forward]]\ndomains = [\"168.192.in-addr.arpa\", \"home.arpa\"]\nservers = [\"{}\"]\n",
                router.addr()
            ));
        }
        Telesink::new().upstream(&up).toml(&t)
    };

    // Without the forward: the built-in local answer (authoritative NXDOMAIN), nothing sent.
    let ts = cfg(false).start();
    let r = ts.query(client(12), ptr, RecordType::PTR);
    assert_eq!(r.rcode(), ResponseCode::NXDomain, "{}", r.summary());
    assert!(r.aa(), "{}", r.summary());
    let r = ts.query(client(12), "tv.home.arpa", RecordType::A);
    assert_eq!(r.rcode(), ResponseCode::NXDomain, "{}", r.summary());
    assert!(router.seen().is_empty());
    drop(ts);

    // With it: the router is asked.
    let ts = cfg(true).start();
    let r = ts.query(client(12), ptr, RecordType::PTR);
    assert_eq!(r.rcode(), ResponseCode::NoError, "{}", r.summary());
    assert!(!r.aa(), "{}", r.summary());
    assert_eq!(
        router.count_type(ptr, RecordType::PTR),
        1,
        "{:#?}",
        router.seen()
    );
    let r = ts.query(client(12), "tv.home.arpa", RecordType::A);
    assert_eq!(r.a(), vec![ip4("192.168.178.30")], "{}", r.summary());
    assert_eq!(router.count("tv.home.arpa"), 1);
    // A [[record]] still wins over the forward.
    let r = ts.query(client(12), "printer.home.arpa", RecordType::A);
    assert_eq!(r.a(), vec![ip4("192.168.178.40")], "{}", r.summary());
    assert!(r.aa(), "{}", r.summary());
    assert_eq!(router.count("printer.home.arpa"), 0);
    // Neither reached the upstreams.
    up.assert_not_forwarded("in-addr.arpa");
    up.assert_not_forwarded("home.arpa");
}

// ----------------------------------------------------------------------------------------------
// Rebinding protection
// ----------------------------------------------------------------------------------------------

fn rows(db: &Path, name: &str) -> Vec<(String, Option<String>, Option<String>)> {
    let Ok(conn) = rusqlite::Connection::open(db) else {
        return Vec::new();
    };
    let Ok(mut st) = conn.prepare("SELECT result, categories, action FROM queries WHERE name = ?1")
    else {
        return Vec::new();
    };
    st.query_map([name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .map(|it| it.filter_map(Result::ok).collect())
        .unwrap_or_default()
}

#[test]
fn a_public_name_answered_with_a_private_address_gets_the_block_answer() {
    let up = TestUpstream::start();
    let router = TestUpstream::start();
    up.set("evil.example", Reply::a(ip4("192.168.1.1")));
    up.set("loop.example", Reply::a(ip4("127.0.0.1")));
    up.set(
        "evil6.example",
        Reply::Addrs {
            v4: vec![],
            v6: vec!["fd00::1".parse::<Ipv6Addr>().unwrap()],
            ttl: 300,
        },
    );
    up.set("intranet.example", Reply::a(ip4("10.0.0.5")));
    up.set("printer.example", Reply::a(ip4("10.9.9.9")));
    router.set("nas.fritz.box", Reply::a(ip4("192.168.178.20")));
    let ts = Telesink::new()
        .upstream(&up)
        .toml(&format!(
            "[allow]\ndomains = [\"intranet.example\"]\n\n\
             [[record]]\nname = \"printer.example\"\ntype = \"A\"\nvalue = \"192.168.1.50\"\n\n\
             [[forward]]\ndomains = [\"fritz.box\"]\nservers = [\"{}\"]\n",
            router.addr()
        ))
        .start();

    // Blocked: the sinkhole answer (null mode) with EDE 15 saying why; the second time from the
    // cache (the direct path), the same.
    for round in 0..2 {
        let r = ask(&ts, client(20), "evil.example");
        assert_eq!(
            r.a(),
            vec![Ipv4Addr::UNSPECIFIED],
            "round {round}: {}",
            r.summary()
        );
        let ede = r.ede();
        assert!(
            ede.iter()
                .any(|(code, text)| *code == 15 && text.contains("rebind")),
            "round {round}: EDE 15 naming rebinding: {ede:?}"
        );
    }
    assert_eq!(
        up.count("evil.example"),
        1,
        "the second answer came from the cache"
    );
    let r = ask(&ts, client(20), "loop.example");
    assert_eq!(r.a(), vec![Ipv4Addr::UNSPECIFIED], "{}", r.summary());
    let r = ts.query_with(
        client(20),
        "evil6.example",
        RecordType::AAAA,
        &QueryOpts::udp().edns(1232),
    );
    assert_eq!(r.aaaa(), vec![Ipv6Addr::UNSPECIFIED], "{}", r.summary());

    // Not blocked: an [allow] name, a [[forward]] name, a [[record]], a public address.
    let r = ask(&ts, client(20), "intranet.example");
    assert_eq!(r.a(), vec![ip4("10.0.0.5")], "{}", r.summary());
    assert!(r.ede().is_empty(), "{:?}", r.ede());
    let r = ask(&ts, client(20), "nas.fritz.box");
    assert_eq!(r.a(), vec![ip4("192.168.178.20")], "{}", r.summary());
    let r = ask(&ts, client(20), "printer.example");
    assert_eq!(r.a(), vec![ip4("192.168.1.50")], "{}", r.summary());
    assert_eq!(up.count("printer.example"), 0);
    let r = ask(&ts, client(20), "www.example.com");
    assert_eq!(r.a(), vec![DEFAULT_V4], "{}", r.summary());
    // The exempt answers are cached too, and stay exempt on a hit.
    let r = ask(&ts, client(20), "intranet.example");
    assert_eq!(r.a(), vec![ip4("10.0.0.5")], "{}", r.summary());
    let r = ask(&ts, client(20), "nas.fritz.box");
    assert_eq!(r.a(), vec![ip4("192.168.178.20")], "{}", r.summary());
    assert_eq!(router.count("nas.fritz.box"), 1);

    // Counted under the built-in category "rebind": evil ×2, loop, evil6.
    let m = ts.scrape();
    assert_eq!(
        m.sum(
            "telesink_category_queries_total",
            &[("category", "rebind"), ("action", "blocked")]
        ),
        4.0,
        "rebind blocks"
    );
    // And in the query log, as blocked rows of category rebind.
    let db = ts.dir().join("q.db");
    eventually("evil.example's rows in the query log", || {
        rows(&db, "evil.example").len() == 2
    });
    for (result, categories, action) in rows(&db, "evil.example") {
        assert_eq!(result, "blocked");
        assert_eq!(categories.as_deref(), Some("rebind"));
        assert_eq!(action.as_deref(), Some("blocked"));
    }
    for (result, categories, _) in rows(&db, "intranet.example") {
        assert_ne!(result, "blocked");
        assert_eq!(categories, None);
    }
}

#[test]
fn rebinding_protection_turns_off_on_reload() {
    let up = TestUpstream::start();
    up.set("evil.example", Reply::a(ip4("192.168.1.1")));
    let ts = Telesink::new().upstream(&up).start();
    let r = ask(&ts, client(21), "evil.example");
    assert_eq!(r.a(), vec![Ipv4Addr::UNSPECIFIED], "{}", r.summary());

    let config = fs::read_to_string(ts.config_path()).unwrap();
    let off = config.replacen("[upstream]\n", "[upstream]\nrebind_protection = false\n", 1);
    assert_ne!(off, config);
    ts.write_file("config.toml", off);
    // The cached answer is served as it is, once the reload is in force.
    eventually("rebind_protection = false in force", || {
        ask(&ts, client(21), "evil.example").a() == vec![ip4("192.168.1.1")]
    });
    assert_eq!(up.count("evil.example"), 1, "from the cache");
}

// ----------------------------------------------------------------------------------------------
// strategy
// ----------------------------------------------------------------------------------------------

fn with_strategy(ups: &[&TestUpstream], strategy: &str) -> Telesink {
    let mut t = Telesink::new()
        .timeout_ms(2000)
        .upstream_toml(&format!("strategy = \"{strategy}\"\n"));
    for u in ups {
        t = t.upstream(u);
    }
    t
}

#[test]
fn fastest_prefers_the_quicker_upstream() {
    let slow = TestUpstream::start();
    let quick = TestUpstream::start();
    slow.set_default(Reply::delayed(
        Duration::from_millis(150),
        Reply::a(DEFAULT_V4),
    ));
    // Configured first: `ordered` would ask it for everything.
    let ts = with_strategy(&[&slow, &quick], "fastest").start();
    for i in 0..4 {
        ask(&ts, client(30), &format!("warm{i}.example"));
    }
    let names: Vec<String> = (0..32).map(|i| format!("q{i}.example")).collect();
    for n in &names {
        let r = ask(&ts, client(30), n);
        assert_eq!(r.a(), vec![DEFAULT_V4], "{}", r.summary());
    }
    for n in &names {
        assert_eq!(quick.count(n), 1, "{n} goes to the quicker upstream");
    }
    // The slower one only gets the occasional probe (one query in 16).
    let probes = names.iter().filter(|n| slow.count(n) > 0).count();
    assert!(
        (1..=3).contains(&probes),
        "{probes} of {} names reached the slower upstream",
        names.len()
    );
}

#[test]
fn ordered_asks_the_first_upstream_however_slow() {
    let slow = TestUpstream::start();
    let quick = TestUpstream::start();
    slow.set_default(Reply::delayed(
        Duration::from_millis(100),
        Reply::a(DEFAULT_V4),
    ));
    let ts = with_strategy(&[&slow, &quick], "ordered").start();
    for i in 0..6 {
        ask(&ts, client(31), &format!("o{i}.example"));
        assert_eq!(slow.count(&format!("o{i}.example")), 1);
    }
    assert!(quick.seen().is_empty(), "{:#?}", quick.seen());
}

#[test]
fn parallel_asks_two_at_once_and_takes_the_first_good_answer() {
    let slow = TestUpstream::start();
    let quick = TestUpstream::start();
    let third = TestUpstream::start();
    slow.set_default(Reply::delayed(
        Duration::from_millis(300),
        Reply::a(ip4("198.51.100.1")),
    ));
    quick.set_default(Reply::a(ip4("198.51.100.2")));
    third.set_default(Reply::delayed(
        Duration::from_millis(450),
        Reply::a(ip4("198.51.100.3")),
    ));
    let ts = with_strategy(&[&slow, &quick, &third], "parallel").start();
    let ups = [&slow, &quick, &third];
    // Each upstream is measured once (an unknown one is raced first).
    for i in 0..2 {
        ask(&ts, client(32), &format!("warm{i}.example"));
    }
    eventually("every upstream answered once", || {
        ups.iter().all(|u| upstream_outcomes(&ts, u, "ok") >= 1.0)
    });
    let names: Vec<String> = (0..8).map(|i| format!("p{i}.example")).collect();
    for n in &names {
        let r = ask(&ts, client(32), n);
        assert_eq!(r.a(), vec![ip4("198.51.100.2")], "{n}: {}", r.summary());
    }
    for n in &names {
        // The race's loser still gets (and answers) the question.
        eventually(&format!("{n} reaches the two best upstreams"), || {
            slow.count(n) == 1
        });
        assert_eq!(quick.count(n), 1, "{n}");
        // The slowest is left out.
        assert_eq!(third.count(n), 0, "{n}: {:#?}", third.seen());
    }
}

/// A dead upstream (it takes questions, never answers) is asked once, then left alone while
/// its back-off runs; once it answers again it is asked again.
fn dead_upstream_is_backed_off_then_retried(strategy: &str) {
    let dead = TestUpstream::start();
    let good = TestUpstream::start();
    dead.set_default(Reply::Never);
    let ts = with_strategy(&[&dead, &good], strategy).start();

    let r = ask(&ts, client(40), "first.example");
    assert_eq!(r.a(), vec![DEFAULT_V4], "{}", r.summary());
    // The failure is known (with `parallel` it ends after the answer went out).
    eventually("the dead upstream's timeout is counted", || {
        upstream_outcomes(&ts, &dead, "timeout") >= 1.0
    });
    // (hickory may send the question again within its attempt.)
    assert!(dead.count("first.example") >= 1, "{:#?}", dead.seen());
    for i in 0..6 {
        let n = format!("next{i}.example");
        let r = ask(&ts, client(40), &n);
        assert_eq!(r.a(), vec![DEFAULT_V4], "{}", r.summary());
        assert_eq!(good.count(&n), 1);
        assert_eq!(dead.count(&n), 0, "{strategy}: backed off, yet asked {n}");
    }

    // It recovers: once the back-off has run out, it is asked again.
    dead.set_default(Reply::a(DEFAULT_V4));
    let mut i = 0;
    eventually("the recovered upstream is asked again", || {
        i += 1;
        let n = format!("again{i}.example");
        ask(&ts, client(40), &n);
        thread::sleep(Duration::from_millis(200));
        dead.count(&n) == 1
    });
}

#[test]
fn ordered_backs_off_a_dead_upstream() {
    dead_upstream_is_backed_off_then_retried("ordered");
}

#[test]
fn fastest_backs_off_a_dead_upstream() {
    dead_upstream_is_backed_off_then_retried("fastest");
}

#[test]
fn parallel_backs_off_a_dead_upstream() {
    dead_upstream_is_backed_off_then_retried("parallel");
}

// ----------------------------------------------------------------------------------------------
// Bad input
// ----------------------------------------------------------------------------------------------

fn check_text(text: &str) -> CliOutput {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    fs::write(&path, text).unwrap();
    cli_in(dir.path(), &["check", "-c", path.to_str().unwrap()])
}

#[test]
fn check_names_file_line_and_key_of_bad_forward_and_strategy() {
    for (text, line_key, said) in [
        (
            "[upstream]\nstrategy = \"quickest\"\n",
            "config.toml:2: upstream.strategy",
            "ordered",
        ),
        (
            "[[forward]]\ndomains = [\"lan\"]\n",
            "config.toml:1: forward[0].servers",
            "missing",
        ),
        (
            "[[forward]]\ndomains = [\"lan\"]\nservers = []\n",
            "config.toml:3: forward[0].servers",
            "empty",
        ),
        (
            "[[forward]]\ndomains = [\"lan\"]\nservers = [\"192.168.1.1:53\"]\n\n\
             [[forward]]\ndomains = [\"fritz box\"]\nservers = [\"192.168.1.1\"]\n",
            "config.toml:6: forward[1].domains[0]",
            "fritz box",
        ),
        (
            "[[forward]]\ndomains = [\"lan\"]\nservers = [\"router.lan\"]\n",
            "config.toml:3: forward[0].servers[0]",
            "router.lan",
        ),
        (
            "[[forward]]\ndomains = [\"lan\"]\nservers = [\"192.168.1.1\"]\n\
             [[forward]]\ndomains = [\"LAN.\"]\nservers = [\"192.168.1.2\"]\n",
            "config.toml:5: forward[1].domains[0]",
            "line 2",
        ),
    ] {
        let out = check_text(text);
        assert_eq!(out.code, Some(1), "{text}\n{out}");
        let all = out.all();
        assert!(all.contains(line_key), "{text}: wants {line_key:?}:\n{all}");
        assert!(all.contains(said), "{text}: wants {said:?}:\n{all}");
    }
    let out = check_text(
        "[upstream]\nstrategy = \"parallel\"\nrebind_protection = false\n\
         [[forward]]\ndomains = [\"fritz.box\", \"178.168.192.in-addr.arpa\"]\n\
         servers = [\"192.168.178.1\", \"tls://192.168.178.2#router.lan\"]\n",
    );
    assert_eq!(out.code, Some(0), "{out}");
    let all = out.all();
    assert!(
        all.contains("upstreams (parallel; rebinding protection off)"),
        "{all}"
    );
    assert!(
        all.contains("forward fritz.box, 178.168.192.in-addr.arpa -> 192.168.178.1:53, tls://192.168.178.2:853#router.lan"),
        "{all}"
    );
}

#[test]
fn a_bad_forward_on_reload_keeps_the_old_one_and_a_good_one_takes_effect() {
    let up = TestUpstream::start();
    let r1 = TestUpstream::start();
    let r2 = TestUpstream::start();
    r1.set_default(Reply::a(ip4("192.168.1.1")));
    r2.set_default(Reply::a(ip4("192.168.1.2")));
    let ts = Telesink::new()
        .upstream(&up)
        .toml(&format!(
            "[[forward]]\ndomains = [\"lan\"]\nservers = [\"{}\"]\n",
            r1.addr()
        ))
        .start();
    assert_eq!(ask(&ts, client(50), "a.lan").a(), vec![ip4("192.168.1.1")]);
    let config = fs::read_to_string(ts.config_path()).unwrap();
    let failures = |ts: &TelesinkProcess| {
        ts.scrape()
            .value("telesink_reloads_total", &[("outcome", "failure")])
            .unwrap_or(0.0)
    };

    // No servers: refused, the old forward stays.
    let bad = config.replace(&format!("servers = [\"{}\"]", r1.addr()), "servers = []");
    assert_ne!(bad, config);
    ts.write_file("config.toml", &bad);
    eventually("the bad reload fails", || failures(&ts) >= 1.0);
    assert!(ts.logs().contains("forward[0].servers"), "{}", ts.logs());
    assert_eq!(ask(&ts, client(50), "b.lan").a(), vec![ip4("192.168.1.1")]);

    // Another server and a strategy: in force without a restart.
    let good = config
        .replace(&r1.addr().to_string(), &r2.addr().to_string())
        .replacen("[upstream]\n", "[upstream]\nstrategy = \"fastest\"\n", 1);
    ts.write_file("config.toml", &good);
    let mut i = 0;
    eventually("the new forward server is asked", || {
        i += 1;
        ask(&ts, client(50), &format!("c{i}.lan")).a() == vec![ip4("192.168.1.2")]
    });
    assert!(
        !ts.logs().contains("takes effect only after a restart"),
        "{}",
        ts.logs()
    );
    up.assert_not_forwarded("lan");
}
