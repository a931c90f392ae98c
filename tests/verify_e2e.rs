//! `telesink verify`, `mark` and `log` against a running server (SPEC "Query log and `verify`"):
//! clients give the three verdicts, from the query log and from a real Prometheus that scrapes
//! two telesink instances. STOPPED needs a device that kept using telesink (its ordinary queries
//! go on); one that went quiet on DNS, or tried a `bypass` resolver, is INCONCLUSIVE.

mod support;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use support::*;

const CONFIG: &str = r#"
[[list]]
name = "vendor"
source = "vendor.txt"
categories = ["telemetry"]

[[list]]
name = "resolvers"
source = "resolvers.txt"
categories = ["bypass"]

[[client]]
name = "anna-phone"
addresses = ["127.0.0.21"]

[default]
block = ["telemetry", "bypass"]
observe = []
"#;

const LIST: &str = "tracking.vendor.example\nmetrics.vendor.example\n";

const ANNA: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 21); // stops after the mark
const TV: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 22); // keeps going
const QUIET: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 23); // too few attempts to tell
const PHONE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 24); // sends nothing at all after the mark
const LEAVER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 25); // asks a DoH resolver after the mark

const RESOLVERS: &str = "dns.google\n";

/// An ordinary query (no category), answered by the upstream.
fn ordinary(ts: &TelesinkProcess, from: Ipv4Addr) {
    ts.query(from, "www.example.com", RecordType::A);
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).unwrap().to_string()
}

fn sleep_until_ms(ms: i64) {
    let left = ms - now_ms();
    if left > 0 {
        std::thread::sleep(Duration::from_millis(left as u64));
    }
}

#[test]
fn three_clients_three_verdicts_mark_and_log() {
    let up = TestUpstream::start();
    // Every query is logged, so ordinary queries are counted to the millisecond (with
    // `matched`, per minute: see `querylog_e2e`).
    let ts = Telesink::new()
        .upstream(&up)
        .file("vendor.txt", LIST)
        .file("resolvers.txt", RESOLVERS)
        .toml(CONFIG)
        .querylog_toml("log = \"all\"")
        .start();
    // The log runs from before this instant, so the whole baseline [start, mark) is logged.
    let start = now_ms();

    // Baseline: anna-phone, the TV, the phone and the leaver try 12 times each, the quiet
    // device twice; all but the TV also send ordinary queries.
    for i in 0..12 {
        let name = if i % 3 == 0 {
            "metrics.vendor.example"
        } else {
            "tracking.vendor.example"
        };
        ts.assert_blocked(ANNA, name);
        ts.assert_blocked(TV, "tracking.vendor.example");
        ts.assert_blocked(PHONE, "tracking.vendor.example");
        ts.assert_blocked(LEAVER, "tracking.vendor.example");
        for c in [ANNA, QUIET, PHONE, LEAVER] {
            ordinary(&ts, c);
        }
    }
    ts.assert_blocked(QUIET, "tracking.vendor.example");
    ts.assert_blocked(QUIET, "metrics.vendor.example");
    assert!(now_ms() - start < 2500, "baseline traffic took too long");

    // The owner switches the opt-out on and records it.
    sleep_until_ms(start + 3000);
    let out = ts.cli(&["mark", "--client", "anna-phone", "--note", "analytics off"]);
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stdout.contains("mark 1: anna-phone"), "{out}");
    let db = ts.dir().join("q.db");
    let mark_ms: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT ts_ms FROM marks WHERE id = 1", [], |r| r.get(0))
        .unwrap();
    // Window [mark, until) as long as the baseline [start, mark).
    let until = mark_ms + (mark_ms - start);

    // After the mark only the TV keeps trying. Anna, the quiet device and the leaver go on
    // with their ordinary queries; the phone sends nothing; the leaver asks dns.google.
    std::thread::sleep(Duration::from_millis(100));
    for _ in 0..5 {
        ts.assert_blocked(TV, "metrics.vendor.example");
    }
    for _ in 0..12 {
        for c in [ANNA, QUIET, LEAVER] {
            ordinary(&ts, c);
        }
    }
    ts.assert_blocked(LEAVER, "dns.google");
    assert!(now_ms() < until, "traffic after the mark took too long");
    // Let the window close and the writer flush its batch.
    sleep_until_ms(until + 700);
    let (since_s, until_s) = (rfc3339(mark_ms), rfc3339(until));

    // STOPPED, with the mark.
    let out = ts.cli(&[
        "verify",
        "--client",
        "anna-phone",
        "--category",
        "telemetry",
        "--since",
        "mark:last",
        "--until",
        &until_s,
    ]);
    assert_eq!(out.code, Some(0), "{out}");
    assert!(
        out.stdout
            .contains("STOPPED: no telemetry attempts from anna-phone"),
        "{out}"
    );
    assert!(
        out.stdout.contains("tracking.vendor.example")
            && out.stdout.contains("(mark 1: analytics off)"),
        "{out}"
    );
    let out = ts.cli(&[
        "verify",
        "--client",
        "127.0.0.21",
        "--category",
        "telemetry",
        "--since",
        "mark:1",
        "--until",
        &until_s,
        "--json",
    ]);
    assert_eq!(out.code, Some(0), "{out}");
    let j: serde_json::Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(j["verdict"], "STOPPED");
    assert_eq!(j["client"], "anna-phone");
    assert_eq!(j["before"], 12);
    assert_eq!(j["after"], 0);
    assert_eq!(j["mark"]["note"], "analytics off");
    let domains = j["domains"].as_array().unwrap();
    assert_eq!(domains.len(), 2);
    assert_eq!(
        (domains[0]["name"].as_str(), domains[0]["before"].as_u64()),
        (Some("tracking.vendor.example"), Some(8))
    );

    assert_eq!(j["ordinary"]["before"], 12);
    assert_eq!(j["ordinary"]["after"], 12);
    assert_eq!(j["ordinary"]["exact"], true);

    // The issue's scenario: the phone tried as much as anna, then sent nothing at all. Its
    // silence proves nothing: INCONCLUSIVE, naming it, never STOPPED.
    let out = ts.cli(&[
        "verify",
        "--client",
        "127.0.0.24",
        "--category",
        "telemetry",
        "--since",
        &since_s,
        "--until",
        &until_s,
    ]);
    assert_eq!(out.code, Some(3), "{out}");
    assert!(
        out.stdout.contains("INCONCLUSIVE")
            && out.stdout.contains("went quiet on DNS")
            && out.stdout.contains("Private DNS")
            && !out.stdout.contains("STOPPED:"),
        "{out}"
    );

    // The leaver kept its ordinary queries but asked a DoH resolver: INCONCLUSIVE, that reason.
    let out = ts.cli(&[
        "verify",
        "--client",
        "127.0.0.25",
        "--category",
        "telemetry",
        "--since",
        &since_s,
        "--until",
        &until_s,
        "--json",
    ]);
    assert_eq!(out.code, Some(3), "{out}");
    let j: serde_json::Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(j["reason"], "bypass", "{out}");
    assert_eq!(j["ordinary"]["bypass_names"][0], "dns.google", "{out}");

    // CONTINUING, naming the domain.
    let out = ts.cli(&[
        "verify",
        "--client",
        "127.0.0.22",
        "--category",
        "telemetry",
        "--since",
        &since_s,
        "--until",
        &until_s,
    ]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stdout
            .contains("CONTINUING: 127.0.0.22 still tries: 5 telemetry attempts"),
        "{out}"
    );
    assert!(
        out.stdout.contains("Domains: metrics.vendor.example (5)"),
        "{out}"
    );

    // INCONCLUSIVE: two attempts are too few to call silence a stop; it says how long to wait.
    let out = ts.cli(&[
        "verify",
        "--client",
        "127.0.0.23",
        "--category",
        "telemetry",
        "--since",
        &since_s,
        "--until",
        &until_s,
        "--json",
    ]);
    assert_eq!(out.code, Some(3), "{out}");
    let j: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(j["verdict"], "INCONCLUSIVE");
    assert_eq!(j["before"], 2);
    let wait = j["wait"]["window_seconds"].as_f64().unwrap();
    let window = (until - mark_ms) as f64 / 1000.0;
    // ln(100)/2 of the window: 2.3 times as long.
    assert!(
        (wait / window - 100f64.ln() / 2.0).abs() < 0.05,
        "{wait} {window}"
    );
    let out = ts.cli(&[
        "verify",
        "--client",
        "127.0.0.23",
        "--category",
        "telemetry",
        "--since",
        &since_s,
        "--until",
        &until_s,
    ]);
    assert!(
        out.stdout.contains("INCONCLUSIVE") && out.stdout.contains("use --until"),
        "{out}"
    );

    // Errors exit 2 and say what is valid.
    let out = ts.cli(&[
        "verify",
        "--client",
        "nobody",
        "--category",
        "telemetry",
        "--since",
        "1h",
    ]);
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.all().contains("anna-phone"), "{out}");
    let out = ts.cli(&[
        "verify",
        "--client",
        "anna-phone",
        "--category",
        "telemetry",
        "--since",
        "yesterday",
    ]);
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.all().contains("RFC 3339"), "{out}");

    // `log`: newest first, filters, JSON; it reads while the server writes.
    let out = ts.cli(&["log", "--client", "anna-phone", "--limit", "5"]);
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(
        out.stdout
            .lines()
            .filter(|l| l.contains("anna-phone"))
            .count(),
        5,
        "{out}"
    );
    let out = ts.cli(&[
        "log",
        "--client",
        "127.0.0.22",
        "--since",
        &since_s,
        "--json",
    ]);
    assert_eq!(out.code, Some(0), "{out}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(rows.len(), 5, "{out}");
    assert!(rows.iter().all(|r| r["name"] == "metrics.vendor.example"
        && r["result"] == "blocked"
        && r["action"] == "blocked"
        && r["categories"][0] == "telemetry"));
    let times: Vec<&str> = rows.iter().map(|r| r["time"].as_str().unwrap()).collect();
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(times, sorted, "newest first");
    let out = ts.cli(&["log", "--category", "telemetry", "--result", "forwarded"]);
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stdout.contains("no logged queries match"), "{out}");

    // The mark is exported for Grafana annotations (the writer reports marks every 10 s).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, body) = http_get(ts.metrics_addr(), "/metrics").unwrap();
        let line = body.lines().find(|l| {
            l.starts_with("telesink_optout_mark_timestamp_seconds{") && l.contains("anna-phone")
        });
        if let Some(line) = line {
            let v: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
            assert!((v * 1000.0 - mark_ms as f64).abs() < 1000.0, "{line}");
            break;
        }
        assert!(Instant::now() < deadline, "no mark metric:\n{body}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

// ---------------------------------------------------------------------------------------------
// verify --prometheus

fn verify_prometheus(
    ts: &TelesinkProcess,
    client: &str,
    since: &str,
    until: &str,
    url: &str,
) -> CliOutput {
    ts.cli(&[
        "verify",
        "--client",
        client,
        "--category",
        "telemetry",
        "--since",
        since,
        "--until",
        until,
        "--prometheus",
        url,
    ])
}

#[test]
fn prometheus_over_two_replicas_gives_the_same_verdicts() {
    let test = "prometheus_over_two_replicas_gives_the_same_verdicts";
    if support::prom::require(test, &["prometheus"]).is_none() {
        return;
    }
    let up = TestUpstream::start();
    let replica = || {
        Telesink::new()
            .upstream(&up)
            .file("vendor.txt", LIST)
            .file("resolvers.txt", RESOLVERS)
            .toml(CONFIG)
            .querylog_toml("log = \"all\"")
            .start()
    };
    let (a, b) = (replica(), replica());
    let prom = Prometheus::start(&[a.metrics_addr(), b.metrics_addr()]);
    prom.wait_targets_up(2);

    // Baseline, spread over several scrapes and split between the replicas: the series exist
    // before most of the counting, as they do for a real device.
    let start = now_ms();
    // Anna and the phone also send ordinary queries; after T the phone sends nothing.
    let burst = |n: usize| {
        for i in 0..n {
            let ts = if i % 2 == 0 { &a } else { &b };
            ts.assert_blocked(ANNA, "tracking.vendor.example");
            ts.assert_blocked(TV, "tracking.vendor.example");
            ts.assert_blocked(PHONE, "tracking.vendor.example");
            ordinary(ts, ANNA);
            ordinary(ts, PHONE);
        }
    };
    burst(4);
    std::thread::sleep(Duration::from_millis(2500));
    burst(10);
    std::thread::sleep(Duration::from_millis(1500));
    burst(10);
    // 2.5 s after the last baseline query: every replica has been scraped since.
    let t = start.max(now_ms()) + 2500;
    let window = 8_000;
    let until = t + window;
    // After T, only the TV (on both replicas).
    sleep_until_ms(t + 1500);
    for i in 0..6 {
        let ts = if i % 2 == 0 { &a } else { &b };
        ts.assert_blocked(TV, "metrics.vendor.example");
    }
    // Anna keeps using telesink: somewhat more ordinary queries than in the baseline (24),
    // spread over the window, so that increase()'s estimates cannot make it look quiet.
    for i in 0..36 {
        ordinary(if i % 2 == 0 { &a } else { &b }, ANNA);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(now_ms() < until, "traffic after T took too long");
    // Wait for scrapes past the window's end.
    sleep_until_ms(until + 3000);
    let (t_s, until_s) = (rfc3339(t), rfc3339(until));

    let out = verify_prometheus(&a, "anna-phone", &t_s, &until_s, &prom.url());
    assert_eq!(out.code, Some(0), "{out}\n{}", prom.logs());
    assert!(
        out.stdout.contains("STOPPED") && out.stdout.contains("from Prometheus"),
        "{out}"
    );
    let out = verify_prometheus(&a, "127.0.0.22", &t_s, &until_s, &prom.url());
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stdout.contains("CONTINUING"), "{out}");
    // The phone went quiet on DNS after T: INCONCLUSIVE from Prometheus too.
    let out = verify_prometheus(&a, "127.0.0.24", &t_s, &until_s, &prom.url());
    assert_eq!(out.code, Some(3), "{out}");
    assert!(out.stdout.contains("went quiet on DNS"), "{out}");
    let out = a.cli(&[
        "verify",
        "--client",
        "127.0.0.22",
        "--category",
        "telemetry",
        "--since",
        &t_s,
        "--until",
        &until_s,
        "--prometheus",
        &prom.url(),
        "--json",
    ]);
    let j: serde_json::Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(j["source"]["kind"], "prometheus");
    // Six attempts after T, across both replicas (increase() extrapolates a little).
    let after = j["after"].as_f64().unwrap();
    assert!((4.0..=9.0).contains(&after), "{after}");
    assert!(j["domains"].as_array().unwrap().is_empty());

    // Each replica's own log agrees with the summed verdict.
    for ts in [&a, &b] {
        let out = ts.cli(&[
            "verify",
            "--client",
            "anna-phone",
            "--category",
            "telemetry",
            "--since",
            &t_s,
            "--until",
            &until_s,
        ]);
        assert_eq!(out.code, Some(0), "{out}");
        let out = ts.cli(&[
            "verify",
            "--client",
            "127.0.0.22",
            "--category",
            "telemetry",
            "--since",
            &t_s,
            "--until",
            &until_s,
        ]);
        assert_eq!(out.code, Some(1), "{out}");
    }

    // A Prometheus that is not there is an error, exit 2.
    let out = verify_prometheus(&a, "anna-phone", &t_s, &until_s, "http://127.0.0.1:1");
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.all().contains("Prometheus http://127.0.0.1:1"), "{out}");
}
