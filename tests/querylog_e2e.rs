//! The query log against a running server (SPEC "Query log and `verify`", `[querylog]`):
//! graceful shutdown flushes, a full queue drops and counts without slowing DNS, retention,
//! anonymize, `log = "none"`, a database that cannot be used, and per-device activity in both
//! modes that keep a database (with the "went quiet" scenario through the CLI).

mod support;

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rusqlite::Connection;
use support::*;

const ANNA: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 31);

fn telesink(up: &TestUpstream, querylog: &str) -> Telesink {
    Telesink::new()
        .upstream(up)
        .vendor_blocked()
        .named_client("anna-phone", &["127.0.0.31"])
        .querylog_toml(querylog)
}

fn count(db: &Path, sql: &str) -> i64 {
    Connection::open(db)
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn metric(ts: &TelesinkProcess, name: &str) -> f64 {
    ts.scrape()
        .value(name, &[])
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

#[test]
fn sigterm_during_load_keeps_every_answered_query() {
    let up = TestUpstream::start();
    let mut ts = telesink(&up, "").start();
    let db = ts.dir().join("q.db");
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let addr = ts.addr();
    let load: Vec<_> = (0..3u8)
        .map(|i| {
            let (stop, answered, sent) = (stop.clone(), answered.clone(), sent.clone());
            std::thread::spawn(move || {
                let opts = QueryOpts::udp().timeout(Duration::from_millis(500));
                let from = client(40 + i);
                for n in 0..4000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    // Matched (logged) and unmatched (not logged with log = "matched").
                    let name = if n % 4 == 3 {
                        "www.example.org"
                    } else {
                        "tracking.vendor.example"
                    };
                    let matched = name != "www.example.org";
                    if matched {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    match try_query(addr, from, name, RecordType::A, &opts) {
                        Ok(_) if matched => {
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    let status = ts.terminate(Duration::from_secs(15));
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?}\n{}",
        ts.logs()
    );
    let answered = answered.load(Ordering::Relaxed) as i64;
    let sent = sent.load(Ordering::Relaxed) as i64;
    assert!(answered > 100, "too little load: {answered}");
    let rows = count(&db, "SELECT count(*) FROM queries");
    assert!(
        rows >= answered && rows <= sent,
        "{rows} rows, {answered} answered, {sent} sent\n{}",
        ts.logs()
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM queries WHERE name = 'www.example.org'"
        ),
        0
    );
    assert_eq!(count(&db, "SELECT count(*) FROM query_categories"), rows);
    // The writer closed its run: the shutdown went through the flush.
    assert_eq!(
        count(&db, "SELECT count(*) FROM runs WHERE end_ms IS NULL"),
        0
    );
}

#[test]
fn full_queue_drops_and_counts_and_dns_stays_fast() {
    let up = TestUpstream::start();
    let ts = telesink(&up, "queue_size = 1\n").start();
    let db = ts.dir().join("q.db");

    // Latencies of queries sent for `d`.
    let run = |d: Duration| {
        let until = Instant::now() + d;
        let mut v = Vec::new();
        while Instant::now() < until {
            let t = Instant::now();
            ts.assert_blocked(ANNA, "tracking.vendor.example");
            v.push(t.elapsed());
        }
        v.sort();
        v
    };
    // Every matched query is either written or counted as dropped (a queue of 1 drops some
    // even without a stuck disk).
    let accounted = |total: usize| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let rows = count(&db, "SELECT count(*) FROM queries") as f64;
            let dropped = metric(&ts, "telesink_querylog_dropped_total");
            if rows + dropped == total as f64 {
                return dropped;
            }
            assert!(
                Instant::now() < deadline,
                "{rows} rows + {dropped} dropped != {total}\n{}",
                ts.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let before = run(Duration::from_millis(300));
    let dropped_before = accounted(before.len());

    // Another process holds the write lock: the writer cannot write, the queue (1) fills.
    // The writer takes up to 200 ms of rows into its batch before it blocks on the lock; after
    // that every row is dropped and counted.
    let holder = Connection::open(&db).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let during = run(Duration::from_millis(1200));
    holder.execute_batch("COMMIT").unwrap();
    drop(holder);

    let (m0, m1) = (before[before.len() / 2], during[during.len() / 2]);
    assert!(
        m1 < m0 * 4 + Duration::from_millis(5),
        "DNS slowed down while the log was stuck: median {m0:?} before, {m1:?} during"
    );
    let dropped = metric(&ts, "telesink_querylog_dropped_total") - dropped_before;
    assert!(
        dropped >= during.len() as f64 / 3.0,
        "dropped {dropped} of {}",
        during.len()
    );
    accounted(before.len() + during.len());
}

#[test]
fn retention_deletes_old_rows_at_start() {
    use telesink::observe::events::{ClientInfo, QueryEvent, QueryResult, QuerySink};
    use telesink::policy::category::{CategorySet, CategoryTable};
    use telesink::querylog::{LogMode, QueryLog, QueryLogSettings};

    let up = TestUpstream::start();
    let builder = telesink(&up, "retention_days = 2\n");
    let db = builder.dir().join("q.db");
    // A log from a previous run: rows 10, 5 and 1 days old.
    {
        let log = QueryLog::open(
            QueryLogSettings {
                path: db.clone(),
                mode: LogMode::Matched,
                retention_days: 0,
                anonymize: false,
                queue_size: 100,
                postgres: None,
            },
            prometheus::IntCounter::new("d", "d").unwrap(),
            None,
        )
        .unwrap();
        let mut table = CategoryTable::new();
        let cat = CategorySet::single(table.intern("telemetry").unwrap());
        let table = std::sync::Arc::new(table);
        let list: std::sync::Arc<str> = "vendor".into();
        let c = ClientInfo {
            addr: ANNA.into(),
            name: Some("anna-phone".into()),
            named_by: telesink::devices::NamedBy::ConfigAddress,
            mac: None,
            group: None,
        };
        for days in [10u64, 5, 1] {
            log.record(&QueryEvent {
                time: SystemTime::now() - Duration::from_secs(days * 86_400),
                client: &c,
                name: "tracking.vendor.example",
                qtype: RecordType::A,
                result: QueryResult::Blocked,
                categories: cat,
                category_table: &table,
                list: Some(&list),
                action: Some(telesink::policy::category::Action::Blocked),
                rcode: ResponseCode::NoError,
                upstream_time: None,
                elapsed: Duration::ZERO,
            });
        }
        assert_eq!(log.shutdown().rows_written, 3);
    }
    let ts = builder.start();
    ts.assert_blocked(ANNA, "metrics.vendor.example");
    let deadline = Instant::now() + Duration::from_secs(10);
    while count(
        &db,
        "SELECT count(*) FROM queries WHERE name = 'metrics.vendor.example'",
    ) == 0
    {
        assert!(Instant::now() < deadline, "{}", ts.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    // The 10- and 5-day-old rows are gone, from both tables; the rest stays.
    let day = 86_400_000i64;
    let now = jiff::Timestamp::now().as_millisecond();
    assert_eq!(
        count(
            &db,
            &format!(
                "SELECT count(*) FROM queries WHERE ts_ms < {}",
                now - 2 * day
            )
        ),
        0
    );
    assert_eq!(
        count(
            &db,
            &format!(
                "SELECT count(*) FROM query_categories WHERE ts_ms < {}",
                now - 2 * day
            )
        ),
        0
    );
    assert_eq!(count(&db, "SELECT count(*) FROM queries"), 2);
    assert_eq!(count(&db, "SELECT count(*) FROM query_categories"), 2);
    // Device activity of those days goes too.
    assert_eq!(
        count(
            &db,
            &format!(
                "SELECT count(*) FROM activity WHERE minute < {}",
                (now - 2 * day) / 60_000
            )
        ),
        0
    );
    assert_eq!(
        count(
            &db,
            "SELECT sum(total) FROM activity WHERE device = 'anna-phone'"
        ),
        2
    );
}

#[test]
fn anonymize_stores_networks_only() {
    let up = TestUpstream::start();
    let mut ts = telesink(&up, "anonymize = true\nlog = \"all\"\n").start();
    let db = ts.dir().join("q.db");
    for _ in 0..3 {
        ts.assert_blocked(ANNA, "tracking.vendor.example");
        ts.query(ANNA, "www.example.org", RecordType::A);
    }
    // (The harness's readiness probe, "localhost" from 127.0.0.1, is logged too.)
    let deadline = Instant::now() + Duration::from_secs(10);
    while count(
        &db,
        "SELECT count(*) FROM queries WHERE name != 'localhost'",
    ) < 6
    {
        assert!(Instant::now() < deadline, "{}", ts.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM queries WHERE client_addr != '127.0.0.0/24' \
             OR client != '127.0.0.0/24' OR client_name IS NOT NULL"
        ),
        0
    );
    // log by the client's name still finds its (anonymized) rows.
    let out = ts.cli(&["log", "--client", "anna-phone", "--json"]);
    assert_eq!(out.code, Some(0), "{out}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
    let rows: Vec<_> = rows.iter().filter(|r| r["name"] != "localhost").collect();
    assert_eq!(rows.len(), 6, "{out}");
    assert!(rows
        .iter()
        .all(|r| r["client_address"] == "127.0.0.0/24" && r["client_name"].is_null()));
    assert!(ts
        .terminate(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
    // Neither the address nor the name is anywhere in the files.
    for f in ["q.db", "q.db-wal"] {
        if let Ok(raw) = std::fs::read(ts.dir().join(f)) {
            let raw = String::from_utf8_lossy(&raw);
            assert!(
                !raw.contains("127.0.0.31") && !raw.contains("anna-phone"),
                "{f}"
            );
        }
    }
}

#[test]
fn log_none_writes_nothing() {
    let up = TestUpstream::start();
    let mut ts = telesink(&up, "log = \"none\"\n").start();
    for _ in 0..5 {
        ts.assert_blocked(ANNA, "tracking.vendor.example");
    }
    std::thread::sleep(Duration::from_millis(400));
    assert!(ts
        .terminate(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
    assert!(
        !ts.dir().join("q.db").exists(),
        "log = \"none\" created a database"
    );
    let out = ts.cli(&["log"]);
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.all().contains("no query log here yet"), "{out}");
}

#[test]
fn unusable_database_is_a_clear_error_and_dns_keeps_serving() {
    let up = TestUpstream::start();
    // Corrupt: not a SQLite file.
    let ts = telesink(&up, "").file("q.db", vec![0x5au8; 16384]).start();
    ts.assert_blocked(ANNA, "tracking.vendor.example");
    let logs = ts.logs();
    assert!(
        logs.contains("q.db")
            && logs.contains("not a SQLite database")
            && logs.contains("move it aside"),
        "{logs}"
    );
    let out = ts.cli(&["log"]);
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.all().contains("not a SQLite database"), "{out}");
    drop(ts);

    // Cannot be created: the path is a directory.
    let ts = telesink(&up, "").file("q.db/keep", "").start();
    ts.assert_blocked(ANNA, "tracking.vendor.example");
    let logs = ts.logs();
    assert!(
        logs.contains("q.db") && logs.contains("it is a directory"),
        "{logs}"
    );
    // Nothing is logged, nothing is counted as written, DNS answers.
    ts.assert_blocked(ANNA, "metrics.vendor.example");
}

/// Per device and minute, its queries and the ordinary ones, in "matched" (which logs no row
/// for an ordinary query) and "all"; the device, its address and how it was named.
#[test]
fn device_activity_in_matched_and_all() {
    for mode in ["matched", "all"] {
        let up = TestUpstream::start();
        let mut ts = telesink(&up, &format!("log = \"{mode}\"\n")).start();
        let db = ts.dir().join("q.db");
        let other = Ipv4Addr::new(127, 0, 0, 32);
        for _ in 0..5 {
            ts.query(ANNA, "www.example.com", RecordType::A);
        }
        ts.assert_blocked(ANNA, "tracking.vendor.example");
        ts.assert_blocked(ANNA, "metrics.vendor.example");
        ts.query(other, "www.example.org", RecordType::A);
        // SIGTERM flushes the queue, activity included.
        let status = ts.terminate(Duration::from_secs(20));
        assert!(status.is_some_and(|s| s.success()), "{}", ts.logs());
        // (The harness's own probe queries come from other addresses.)
        let rows = count(
            &db,
            "SELECT count(*) FROM queries WHERE client_addr IN ('127.0.0.31', '127.0.0.32')",
        );
        assert_eq!(rows, if mode == "all" { 8 } else { 2 }, "{mode}");
        assert_eq!(
            count(
                &db,
                "SELECT sum(total) * 100 + sum(ordinary) FROM activity WHERE device = 'anna-phone'"
            ),
            705,
            "{mode}"
        );
        assert_eq!(
            count(
                &db,
                "SELECT sum(ordinary) FROM activity WHERE device = '127.0.0.32'"
            ),
            1,
            "{mode}"
        );
        let devices = telesink::querylog::devices(&db).unwrap();
        let anna = devices.iter().find(|d| d.name == "anna-phone").unwrap();
        assert_eq!(
            anna.named_by,
            telesink::devices::NamedBy::ConfigAddress,
            "{mode}"
        );
        assert_eq!(anna.addresses.len(), 1);
        assert_eq!(anna.addresses[0].address, "127.0.0.31");
        assert!(devices.iter().any(|d| d.name == "127.0.0.32"));
    }
}

/// The scenario in `log = "matched"`, faked in time through the library: a phone sends
/// one telemetry and one ordinary query a second for a minute, the opt-out is marked, then
/// the phone sends nothing. 75 s later `telesink verify` says INCONCLUSIVE (exit 3) and names
/// the silence; a phone whose ordinary queries go on is STOPPED.
#[test]
fn verify_after_the_device_went_quiet_in_matched_mode() {
    use telesink::observe::events::{ClientInfo, QueryEvent, QueryResult, QuerySink};
    use telesink::policy::category::{Action, CategorySet, CategoryTable};
    use telesink::querylog::{LogMode, QueryLog, QueryLogSettings};

    let up = TestUpstream::start();
    let builder = telesink(&up, "log = \"matched\"\n");
    let db = builder.dir().join("q.db");
    let now = jiff::Timestamp::now().as_millisecond();
    let t = now - 75_000;
    let mut table = CategoryTable::new();
    let cat = CategorySet::single(table.intern("telemetry").unwrap());
    let table = Arc::new(table);
    let list: Arc<str> = "vendor".into();
    let device = |addr: Ipv4Addr, name: &str| ClientInfo {
        addr: addr.into(),
        name: Some(name.into()),
        named_by: telesink::devices::NamedBy::Lease,
        mac: None,
        group: None,
    };
    let phone = device(Ipv4Addr::new(127, 0, 0, 34), "phone");
    let tablet = device(Ipv4Addr::new(127, 0, 0, 33), "tablet");
    {
        let log = QueryLog::open(
            QueryLogSettings {
                path: db.clone(),
                mode: LogMode::Matched,
                retention_days: 0,
                anonymize: false,
                queue_size: 10_000,
                postgres: None,
            },
            prometheus::IntCounter::new("d", "d").unwrap(),
            None,
        )
        .unwrap();
        let at = |ms: i64| std::time::UNIX_EPOCH + Duration::from_millis(ms as u64);
        let event = |c: &'_ ClientInfo, ms: i64, telemetry: bool| {
            log.record(&QueryEvent {
                time: at(ms),
                client: c,
                name: if telemetry {
                    "tracking.vendor.example"
                } else {
                    "www.example.com"
                },
                qtype: RecordType::A,
                result: if telemetry {
                    QueryResult::Blocked
                } else {
                    QueryResult::Forwarded
                },
                categories: if telemetry { cat } else { CategorySet::EMPTY },
                category_table: &table,
                list: telemetry.then_some(&list),
                action: telemetry.then_some(Action::Blocked),
                rcode: ResponseCode::NoError,
                upstream_time: None,
                elapsed: Duration::ZERO,
            });
        };
        for i in 0..60 {
            let ms = t - 60_000 + i * 1000;
            for c in [&phone, &tablet] {
                event(c, ms, true);
                event(c, ms, false);
            }
        }
        // After T the tablet keeps its ordinary queries (no telemetry); the phone is silent.
        for i in 0..75 {
            event(&tablet, t + 500 + i * 1000, false);
        }
        log.shutdown();
        // The log ran over the whole time and still runs (the run above opened only now).
        Connection::open(&db)
            .unwrap()
            .execute(
                "UPDATE runs SET start_ms = ?1, end_ms = NULL, alive_ms = ?2",
                [t - 3_600_000, jiff::Timestamp::now().as_millisecond()],
            )
            .unwrap();
    }
    let since = jiff::Timestamp::from_millisecond(t).unwrap().to_string();
    let verify = |client: &str| {
        builder.cli(&[
            "verify",
            "--client",
            client,
            "--category",
            "telemetry",
            "--since",
            &since,
        ])
    };
    let out = verify("phone");
    assert_eq!(out.code, Some(3), "{out}");
    assert!(
        out.stdout.contains("INCONCLUSIVE")
            && out.stdout.contains("went quiet on DNS")
            && out.stdout.contains("0 ordinary queries")
            && !out.stdout.contains("STOPPED:"),
        "{out}"
    );
    // By its address too: the log knows which device used it.
    let out = verify("127.0.0.34");
    assert_eq!(out.code, Some(3), "{out}");
    assert!(out.stdout.starts_with("phone, category telemetry"), "{out}");

    let out = verify("tablet");
    assert_eq!(out.code, Some(0), "{out}");
    assert!(
        out.stdout
            .contains("STOPPED: no telemetry attempts from tablet")
            && out.stdout.contains("kept using telesink after T"),
        "{out}"
    );
}
