//! The query log in PostgreSQL (`[querylog] url`, SPEC "Query log"): the real server writes to a
//! real PostgreSQL (Debian's package, started by the test), and `log`, `verify` and `mark` give
//! the same answers as from SQLite for the same scenario; two replicas share one database; a
//! database that goes away drops and counts rows while DNS keeps answering, and the writer
//! reconnects when it is back.

mod support;

use std::net::Ipv4Addr;
use std::time::Duration;

use serde_json::Value;
use support::postgres::{poll, TestPostgres};
use support::*;

const CONFIG: &str = r#"
[[list]]
name = "vendor"
source = "vendor.txt"
categories = ["telemetry"]

[[client]]
name = "anna-phone"
addresses = ["127.0.0.21"]

[default]
block = ["telemetry"]
observe = []
"#;

const LIST: &str = "tracking.vendor.example\nmetrics.vendor.example\n";

const ANNA: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 21); // stops after the mark
const TV: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 22); // keeps going

/// Rows reach the log within a batch interval; this only bounds a broken run.
const ROWS_ARRIVE: Duration = Duration::from_secs(60);

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn sleep_until_ms(ms: i64) {
    let left = ms - now_ms();
    if left > 0 {
        std::thread::sleep(Duration::from_millis(left as u64));
    }
}

fn server(up: &TestUpstream, url: Option<&str>) -> Telesink {
    let t = Telesink::new()
        .upstream(up)
        .file("vendor.txt", LIST)
        .toml(CONFIG)
        .querylog_toml("log = \"all\"");
    match url {
        Some(u) => t.querylog_url(u),
        None => t,
    }
}

fn json(out: &CliOutput) -> Value {
    assert_eq!(out.code.map(|c| c <= 3), Some(true), "{out}");
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// `telesink log --json`'s rows without their times: what must be equal across back ends.
fn rows(out: &CliOutput) -> Vec<Value> {
    assert_eq!(out.code, Some(0), "{out}");
    json(out)
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.as_object_mut().unwrap().remove("time");
            r.as_object_mut().unwrap().remove("upstream_ms");
            r
        })
        .collect()
}

/// [`rows`], or `None` while the log cannot be read yet (the writer creates the tables when it
/// first connects).
fn try_rows(out: &CliOutput) -> Option<Vec<Value>> {
    (out.code == Some(0)).then(|| rows(out))
}

/// `verify --json` without the times of this run.
fn verdict(out: &CliOutput) -> Value {
    let mut j = json(out);
    let o = j.as_object_mut().unwrap();
    for k in [
        "since",
        "until",
        "baseline_start",
        "source",
        "mark",
        "wait",
        "notes",
    ] {
        o.remove(k);
    }
    for k in [
        "window_seconds",
        "baseline_seconds",
        "logged_window_seconds",
        "logged_baseline_seconds",
        "baseline_rate_per_hour",
        "expected_after",
        "p_zero",
    ] {
        o.remove(k);
    }
    if let Some(d) = o.get_mut("domains").and_then(Value::as_array_mut) {
        for x in d {
            x.as_object_mut().unwrap().remove("last_seen");
        }
    }
    if let Some(ord) = o.get_mut("ordinary").and_then(Value::as_object_mut) {
        for k in [
            "last_query",
            "baseline_rate_per_hour",
            "expected_after",
            "p_at_most",
        ] {
            ord.remove(k);
        }
    }
    j
}

/// What one back end answers for the scenario: baseline, a mark, anna stops, the TV goes on.
fn scenario(ts: &TelesinkProcess) -> Vec<Value> {
    let start = now_ms();
    for i in 0..12 {
        let name = if i % 3 == 0 {
            "metrics.vendor.example"
        } else {
            "tracking.vendor.example"
        };
        ts.assert_blocked(ANNA, name);
        ts.assert_blocked(TV, "tracking.vendor.example");
        ts.query(ANNA, "www.example.com", RecordType::A);
    }
    sleep_until_ms(start + 2500);
    let out = ts.cli(&["mark", "--client", "anna-phone", "--note", "analytics off"]);
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stdout.contains("mark 1: anna-phone"), "{out}");
    let mark = json(&ts.cli(&[
        "verify",
        "--client",
        "anna-phone",
        "--category",
        "telemetry",
        "--since",
        "mark:last",
        "--json",
    ]));
    let mark_ms = mark["since"]
        .as_str()
        .unwrap()
        .parse::<jiff::Timestamp>()
        .unwrap()
        .as_millisecond();
    let until = mark_ms + (mark_ms - start);
    std::thread::sleep(Duration::from_millis(100));
    for _ in 0..5 {
        ts.assert_blocked(TV, "metrics.vendor.example");
    }
    for _ in 0..12 {
        ts.query(ANNA, "www.example.com", RecordType::A);
    }
    sleep_until_ms(until + 700);
    // Every row is in: 12 × 3 before, 5 + 12 after (and the harness's readiness queries from
    // 127.0.0.1).
    poll(ROWS_ARRIVE, || {
        let out = ts.cli(&["log", "--limit", "1000", "--json"]);
        let n = try_rows(&out)?
            .iter()
            .filter(|r| r["client"] != "127.0.0.1")
            .count();
        (n == 53).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "rows did not arrive: {}",
            ts.cli(&["log", "--limit", "1000"])
        )
    });
    let until_s = jiff::Timestamp::from_millisecond(until)
        .unwrap()
        .to_string();

    let mut answers = Vec::new();
    for (client, code) in [("anna-phone", 0), ("127.0.0.22", 1)] {
        let out = ts.cli(&[
            "verify",
            "--client",
            client,
            "--category",
            "telemetry",
            "--since",
            "mark:1",
            "--until",
            &until_s,
            "--json",
        ]);
        assert_eq!(out.code, Some(code), "{out}");
        answers.push(verdict(&out));
    }
    let text = ts.cli(&[
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
    assert!(
        text.stdout
            .contains("STOPPED: no telemetry attempts from anna-phone")
            && text.stdout.contains("(mark 1: analytics off)"),
        "{text}"
    );
    for args in [
        &[
            "log",
            "--client",
            "anna-phone",
            "--since",
            "mark:last",
            "--json",
        ][..],
        // Across clients only as far back as the TV's five queries after the mark: before them
        // anna's and the TV's queries alternate within milliseconds, and two runs need not
        // stamp them in the same order.
        &["log", "--category", "telemetry", "--limit", "5", "--json"][..],
        &[
            "log",
            "--client",
            "anna-phone",
            "--category",
            "telemetry",
            "--limit",
            "7",
            "--json",
        ][..],
        &[
            "log",
            "--client",
            "127.0.0.22",
            "--result",
            "blocked",
            "--limit",
            "100",
            "--json",
        ][..],
        &["log", "--result", "forwarded", "--limit", "3", "--json"][..],
    ] {
        answers.push(Value::Array(rows(&ts.cli(args))));
    }
    let devices = json(&ts.cli(&["devices", "--json"]));
    // The devices the log saw (the neighbour table adds this machine's).
    let names: Vec<&str> = devices
        .as_array()
        .unwrap_or_else(|| panic!("{devices}"))
        .iter()
        .filter(|d| d["last_query"].is_string())
        .filter_map(|d| d["name"].as_str())
        .collect();
    assert!(names.contains(&"anna-phone"), "{devices}");
    answers.push(Value::from(
        names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
    ));
    answers
}

#[test]
fn same_answers_from_sqlite_and_postgres() {
    let Some(pg) = TestPostgres::require("same_answers_from_sqlite_and_postgres") else {
        return;
    };
    let url = pg.create_database("same_answers");
    let up = TestUpstream::start();

    let lite = server(&up, None).start();
    let from_sqlite = scenario(&lite);
    drop(lite);

    let ts = server(&up, Some(&url)).start();
    let from_postgres = scenario(&ts);
    assert!(
        ts.logs().contains("connected"),
        "the writer says it connected: {}",
        ts.logs()
    );
    // The rows are in PostgreSQL, not in a SQLite file next to the config.
    assert!(!ts.dir().join("q.db").exists());
    assert_eq!(
        pg.psql(
            "same_answers",
            "SELECT count(*) FROM queries WHERE client <> '127.0.0.1'"
        ),
        "53"
    );
    assert_eq!(pg.psql("same_answers", "SELECT count(*) FROM marks"), "1");

    assert_eq!(from_sqlite.len(), from_postgres.len());
    for (i, (a, b)) in from_sqlite.iter().zip(&from_postgres).enumerate() {
        assert_eq!(a, b, "answer {i} differs between SQLite and PostgreSQL");
    }
    // The comparison is not vacuous.
    assert_eq!(from_postgres[0]["verdict"], "STOPPED");
    assert_eq!(from_postgres[0]["before"], 12);
    assert_eq!(from_postgres[0]["ordinary"]["before"], 12);
    assert_eq!(from_postgres[0]["ordinary"]["after"], 12);
    assert_eq!(from_postgres[0]["ordinary"]["exact"], true);
    assert_eq!(from_postgres[1]["verdict"], "CONTINUING");
    assert_eq!(from_postgres[1]["after"], 5);
    assert_eq!(from_postgres[2].as_array().unwrap().len(), 12);
    assert_eq!(from_postgres[3].as_array().unwrap().len(), 5);
    assert!(from_postgres[3]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["name"] == "metrics.vendor.example" && r["client"] == "127.0.0.22"));
    assert_eq!(from_postgres[4].as_array().unwrap().len(), 7);
    assert!(from_postgres[4]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["client"] == "anna-phone"));
    assert_eq!(from_postgres[5].as_array().unwrap().len(), 17);
    assert_eq!(from_postgres[3][0]["categories"][0], "telemetry");
    assert_eq!(from_postgres[3][0]["type"], "A");
    assert_eq!(from_postgres[3][0]["rcode"], "NOERROR");
}

#[test]
fn replicas_share_one_database() {
    let Some(pg) = TestPostgres::require("replicas_share_one_database") else {
        return;
    };
    let url = pg.create_database("replicas");
    let up = TestUpstream::start();
    let a = server(&up, Some(&url)).start();
    let b = server(&up, Some(&url)).start();
    let start = now_ms();
    for _ in 0..4 {
        a.assert_blocked(ANNA, "tracking.vendor.example");
        b.assert_blocked(TV, "metrics.vendor.example");
    }
    // Either replica's config reads what both wrote.
    let both = poll(ROWS_ARRIVE, || {
        let out = a.cli(&["log", "--category", "telemetry", "--json"]);
        let r = try_rows(&out)?;
        (r.len() == 8).then_some(r)
    })
    .unwrap_or_else(|| panic!("{}", a.cli(&["log"])));
    let clients: std::collections::BTreeSet<&str> =
        both.iter().filter_map(|r| r["client"].as_str()).collect();
    assert_eq!(
        clients.into_iter().collect::<Vec<_>>(),
        ["127.0.0.22", "anna-phone"]
    );
    // A mark made through one replica is seen through the other, and verify counts the rows
    // the other replica wrote.
    let out = b.cli(&["mark", "--client", "127.0.0.22", "--note", "tv off"]);
    assert_eq!(out.code, Some(0), "{out}");
    let mark_ms = json(&a.cli(&[
        "verify",
        "--client",
        "127.0.0.22",
        "--category",
        "telemetry",
        "--since",
        "mark:last",
        "--json",
    ]))["since"]
        .as_str()
        .unwrap()
        .parse::<jiff::Timestamp>()
        .unwrap()
        .as_millisecond();
    // A window after the mark as long as the baseline before it, which holds the 4 attempts.
    let until = mark_ms + (mark_ms - start) + 100;
    b.assert_blocked(TV, "metrics.vendor.example");
    sleep_until_ms(until + 100);
    let until_s = jiff::Timestamp::from_millisecond(until)
        .unwrap()
        .to_string();
    let j = poll(ROWS_ARRIVE, || {
        let out = a.cli(&[
            "verify",
            "--client",
            "127.0.0.22",
            "--category",
            "telemetry",
            "--since",
            "mark:last",
            "--until",
            &until_s,
            "--json",
        ]);
        let j = json(&out);
        (j["after"] == 1).then_some(j)
    })
    .expect("the attempt after the mark reaches the log");
    assert_eq!(j["verdict"], "CONTINUING");
    assert_eq!(j["before"], 4);
    assert_eq!(j["mark"]["note"], "tv off");
    // Each replica records its own run.
    assert_eq!(pg.psql("replicas", "SELECT count(*) FROM runs"), "2");
}

#[test]
fn database_down_drops_and_counts_then_reconnects() {
    let Some(mut pg) = TestPostgres::require("database_down_drops_and_counts_then_reconnects")
    else {
        return;
    };
    let url = pg.create_database("outage");
    let up = TestUpstream::start();
    let ts = server(&up, Some(&url)).start();
    ts.assert_blocked(ANNA, "tracking.vendor.example");
    poll(ROWS_ARRIVE, || {
        (try_rows(&ts.cli(&["log", "--client", "anna-phone", "--json"]))?.len() == 1).then_some(())
    })
    .expect("the first row arrives");
    let dropped = |ts: &TelesinkProcess| ts.scrape().sum("telesink_querylog_dropped_total", &[]);
    assert_eq!(dropped(&ts), 0.0);

    pg.stop_server();
    // DNS keeps answering while the database is gone.
    for _ in 0..20 {
        ts.assert_blocked(ANNA, "metrics.vendor.example");
        let r = ts.query(TV, "www.example.com", RecordType::A);
        assert_eq!(r.rcode(), ResponseCode::NoError, "{}", r.summary());
    }
    let n = poll(ROWS_ARRIVE, || {
        let n = dropped(&ts);
        (n > 0.0).then_some(n)
    })
    .unwrap_or_else(|| panic!("no drops counted: {}", ts.logs()));
    assert!(n <= 40.0, "{n}");
    assert!(
        ts.logs().contains("cannot be reached"),
        "a warning says the database is gone: {}",
        ts.logs()
    );
    let out = ts.cli(&["log"]);
    assert_eq!(
        out.code,
        Some(2),
        "log says it cannot reach the database: {out}"
    );
    assert!(out.stderr.contains("cannot reach the database"), "{out}");

    pg.start_server().expect("postgres restarts");
    // The writer reconnects by itself: a query after the restart reaches the log.
    let r = poll(ROWS_ARRIVE, || {
        ts.assert_blocked(TV, "tracking.vendor.example");
        let out = ts.cli(&[
            "log",
            "--client",
            "127.0.0.22",
            "--category",
            "telemetry",
            "--json",
        ]);
        let r = rows(&out);
        (!r.is_empty()).then_some(r)
    })
    .unwrap_or_else(|| panic!("no row after the restart: {}", ts.logs()));
    assert_eq!(r[0]["name"], "tracking.vendor.example");
    assert!(ts.logs().contains("connected again"), "{}", ts.logs());
    // The rows that were dropped are not in the log; the first one still is.
    let all = rows(&ts.cli(&["log", "--client", "anna-phone", "--limit", "100", "--json"]));
    assert!(
        all.iter().all(|r| r["name"] != "metrics.vendor.example"),
        "{all:?}"
    );
}

#[test]
fn retention_deletes_old_rows_from_postgres() {
    let Some(pg) = TestPostgres::require("retention_deletes_old_rows_from_postgres") else {
        return;
    };
    let url = pg.create_database("retention");
    let up = TestUpstream::start();
    let first = server(&up, Some(&url)).start();
    first.assert_blocked(ANNA, "tracking.vendor.example");
    poll(ROWS_ARRIVE, || {
        (try_rows(&first.cli(&["log", "--client", "anna-phone", "--json"]))?.len() == 1)
            .then_some(())
    })
    .expect("the tables exist and the row arrived");
    drop(first);
    // A row and a device-minute from two days ago, as an older replica would have left them.
    let old = now_ms() - 2 * 86_400_000;
    pg.psql(
        "retention",
        &format!(
            "INSERT INTO queries (ts_ms, client, client_addr, name, qtype, result, rcode) \
             VALUES ({old}, 'old-device', '127.0.0.9', 'old.example', 1, 2, 0); \
             INSERT INTO activity VALUES ('old-device', {}, 1, {old}, {old}, 1, {old}, {old}, 1)",
            old / 60_000
        ),
    );
    assert_eq!(
        pg.psql(
            "retention",
            "SELECT count(*) FROM queries WHERE client = 'old-device'"
        ),
        "1"
    );
    // A replica with retention_days = 1 deletes them at start; today's row stays.
    let ts = server(&up, Some(&url))
        .querylog_toml("retention_days = 1")
        .start();
    poll(ROWS_ARRIVE, || {
        (pg.psql(
            "retention",
            "SELECT (SELECT count(*) FROM queries WHERE client = 'old-device') + \
                    (SELECT count(*) FROM activity WHERE device = 'old-device')",
        ) == "0")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("old rows were not deleted: {}", ts.logs()));
    assert_eq!(
        rows(&ts.cli(&["log", "--client", "anna-phone", "--json"])).len(),
        1
    );
}
