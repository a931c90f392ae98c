//! Unit tests of the query log: real SQLite files in temporary directories, rows written
//! through the real writer thread.

use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use rusqlite::{params, Connection};

use super::read::logged_ms;
use super::schema::{open_existing, open_rw, schema_3, schema_4, SCHEMA_VERSION};
use super::*;
use crate::observe::events::{ClientInfo, QueryEvent, QueryResult, QuerySink};
use crate::policy::category::{Action, CategorySet, CategoryTable};
use crate::timespec::TimeSpec;
pub(crate) struct Fixture {
    pub table: Arc<CategoryTable>,
    pub list: Arc<str>,
    pub telemetry: CategorySet,
    pub both: CategorySet,
}

impl Fixture {
    pub fn new() -> Self {
        let mut table = CategoryTable::new();
        let t = table.intern("telemetry").unwrap();
        let x = table.intern("xiaomi").unwrap();
        let mut both = CategorySet::single(t);
        both.insert(x);
        Fixture {
            table: Arc::new(table),
            list: Arc::from("xiaomi"),
            telemetry: CategorySet::single(t),
            both,
        }
    }

    pub fn event<'a>(
        &'a self,
        client: &'a ClientInfo,
        name: &'a str,
        cats: CategorySet,
        time: SystemTime,
    ) -> QueryEvent<'a> {
        QueryEvent {
            time,
            client,
            name,
            qtype: RecordType::A,
            result: if cats.is_empty() {
                QueryResult::Forwarded
            } else {
                QueryResult::Blocked
            },
            categories: cats,
            category_table: &self.table,
            list: if cats.is_empty() {
                None
            } else {
                Some(&self.list)
            },
            action: if cats.is_empty() {
                None
            } else {
                Some(Action::Blocked)
            },
            rcode: ResponseCode::NoError,
            upstream_time: if cats.is_empty() {
                Some(Duration::from_millis(12))
            } else {
                None
            },
            elapsed: Duration::from_micros(50),
        }
    }
}

pub(crate) fn client(addr: &str, name: Option<&str>) -> ClientInfo {
    ClientInfo {
        addr: addr.parse().unwrap(),
        name: name.map(Arc::from),
        named_by: Default::default(),
        mac: None,
        group: Some(Arc::from("phones")),
    }
}

fn settings(path: &Path, mode: LogMode) -> QueryLogSettings {
    QueryLogSettings {
        path: path.to_path_buf(),
        mode,
        retention_days: 30,
        anonymize: false,
        queue_size: 10_000,
        postgres: None,
    }
}

fn fast() -> QueryLogTuning {
    QueryLogTuning {
        batch_max: 1000,
        batch_wait: Duration::from_millis(20),
        heartbeat: Duration::from_millis(50),
        retention_every: Duration::from_secs(3600),
    }
}

fn counter() -> prometheus::IntCounter {
    prometheus::IntCounter::new("telesink_querylog_dropped_total", "dropped").unwrap()
}

fn count(path: &Path, sql: &str) -> i64 {
    let c = Connection::open(path).unwrap();
    c.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[test]
fn schema_is_created_in_wal_mode_with_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let conn = open_rw(&path).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let names: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for want in [
        "texts",
        "query_rows",
        "query_rows_matched",
        "category_sets",
        "device_minutes",
        "queries",
        "query_categories",
        "activity",
        "marks",
        "marks_client_ts",
        "runs",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }
    // Reopening is a no-op.
    drop(conn);
    open_rw(&path).unwrap();
    // verify's question is one index range scan.
    let conn = open_existing(&path).unwrap();
    let plan: String = conn
        .query_row(
            "EXPLAIN QUERY PLAN SELECT name, count(*) FROM query_rows \
                 WHERE client IN (1, 2) AND ts_ms >= 0 AND ts_ms < 10 AND +matched IN (3, 4) \
                 GROUP BY name",
            [],
            |r| r.get(3),
        )
        .unwrap();
    assert!(plan.contains("PRIMARY KEY"), "{plan}");
}

/// A schema-1 log (with the `(category, ts_ms)` index) opens as schema 2: rows kept, the
/// index gone.
#[test]
fn schema_1_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    {
        let conn = Connection::open(&path).unwrap();
        let schema = schema_3();
        conn.execute_batch(&format!(
                "{schema} CREATE INDEX query_categories_ts ON query_categories (category, ts_ms); \
                 INSERT INTO queries (ts_ms, client, client_addr, name, qtype, result, rcode, categories) \
                 VALUES (1, 'a', '10.0.0.1', 'x.example', 'A', 'blocked', 'NOERROR', 'telemetry'); \
                 INSERT INTO query_categories VALUES ('telemetry', 'a', 1, 1, 'x.example', 'blocked'); \
                 PRAGMA user_version = 1;"
            ))
            .unwrap();
    }
    let conn = open_rw(&path).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let index: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'query_categories_ts'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(index, 0);
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM query_categories", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 1);
}

#[test]
fn writes_rows_in_batches_and_flushes_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let fx = Fixture::new();
    let anna = client("192.168.1.50", Some("anna-phone"));
    let log = QueryLog::open_with(settings(&path, LogMode::All), fast(), counter(), None).unwrap();
    let t0 = SystemTime::now();
    for i in 0..2500 {
        let cats = if i % 2 == 0 {
            fx.both
        } else {
            CategorySet::EMPTY
        };
        log.record(&fx.event(&anna, "tracking.miui.com", cats, t0));
    }
    let report = log.shutdown();
    assert_eq!(report.rows_written, 2500);
    assert_eq!(report.dropped, 0);
    assert!(report.batches >= 3 && report.batches < 2500, "{report:?}");
    assert_eq!(count(&path, "SELECT count(*) FROM queries"), 2500);
    assert_eq!(count(&path, "SELECT count(*) FROM query_categories"), 2500);
    let conn = Connection::open(&path).unwrap();
    // Every column, NULL as "-".
    let row: String = conn
        .query_row(
            "SELECT concat_ws('|', client, client_addr, coalesce(client_name, '-'), \
                 coalesce(grp, '-'), qtype, result, rcode, coalesce(categories, '-'), \
                 coalesce(list, '-'), coalesce(action, '-'), coalesce(upstream_ms, '-')) \
                 FROM queries WHERE categories IS NOT NULL LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
            row,
            "anna-phone|192.168.1.50|anna-phone|phones|A|blocked|NOERROR|telemetry,xiaomi|xiaomi|blocked|-"
        );
    let row: String = conn
        .query_row(
            "SELECT concat_ws('|', coalesce(categories, '-'), coalesce(action, '-'), \
                 upstream_ms, result) FROM queries WHERE categories IS NULL LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(row, "-|-|12|forwarded");
    // A second shutdown (Drop) reports the same.
    assert_eq!(log.shutdown().rows_written, 2500);
    // The run is closed.
    assert_eq!(
        count(&path, "SELECT count(*) FROM runs WHERE end_ms IS NOT NULL"),
        1
    );
}

#[test]
fn matched_mode_skips_unmatched_and_none_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::new();
    let c = client("10.0.0.7", None);
    let path = dir.path().join("m.db");
    let log =
        QueryLog::open_with(settings(&path, LogMode::Matched), fast(), counter(), None).unwrap();
    log.record(&fx.event(&c, "a.example", CategorySet::EMPTY, SystemTime::now()));
    log.record(&fx.event(&c, "t.example", fx.telemetry, SystemTime::now()));
    assert_eq!(log.shutdown().rows_written, 1);
    assert_eq!(
        count(
            &path,
            "SELECT count(*) FROM queries WHERE name = 't.example' AND client = '10.0.0.7'"
        ),
        1
    );

    let path = dir.path().join("none.db");
    let log = QueryLog::open_with(settings(&path, LogMode::None), fast(), counter(), None).unwrap();
    assert!(!log.is_enabled());
    log.record(&fx.event(&c, "t.example", fx.telemetry, SystemTime::now()));
    assert_eq!(log.shutdown().rows_written, 0);
    assert!(!path.exists(), "log = none must not create a database");
}

#[test]
fn full_queue_drops_and_counts_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let fx = Fixture::new();
    let c = client("10.0.0.7", None);
    let dropped = counter();
    let mut s = settings(&path, LogMode::All);
    s.queue_size = 4;
    // Hold the write lock so that the writer cannot drain.
    let blocker = Connection::open(&path).unwrap();
    let log = QueryLog::open_with(s, fast(), dropped.clone(), None).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let started = Instant::now();
    for _ in 0..200 {
        log.record(&fx.event(&c, "t.example", fx.telemetry, SystemTime::now()));
    }
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "record() blocked"
    );
    assert!(dropped.get() >= 150, "dropped {}", dropped.get());
    blocker.execute_batch("COMMIT").unwrap();
    let report = log.shutdown();
    assert_eq!(report.rows_written + report.dropped, 200, "{report:?}");
    assert_eq!(report.dropped, dropped.get());
    assert_eq!(
        count(&path, "SELECT count(*) FROM queries") as u64,
        report.rows_written
    );
}

#[test]
fn anonymize_stores_networks_only() {
    assert_eq!(
        anonymize_addr("192.168.1.50".parse().unwrap()).to_string(),
        "192.168.1.0/24"
    );
    assert_eq!(
        anonymize_addr("fd00:1:2:3456::50".parse().unwrap()).to_string(),
        "fd00:1:2:3400::/56"
    );
    assert_eq!(
        anonymize_addr("::ffff:10.1.2.3".parse().unwrap()).to_string(),
        "10.1.2.0/24"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let fx = Fixture::new();
    let anna = client("192.168.1.50", Some("anna-phone"));
    let mut s = settings(&path, LogMode::All);
    s.anonymize = true;
    let log = QueryLog::open_with(s, fast(), counter(), None).unwrap();
    log.record(&fx.event(&anna, "t.example", fx.telemetry, SystemTime::now()));
    log.shutdown();
    let conn = Connection::open(&path).unwrap();
    let (c, a, n): (String, String, Option<String>) = conn
        .query_row(
            "SELECT client, client_addr, client_name FROM queries",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        (c.as_str(), a.as_str(), n),
        ("192.168.1.0/24", "192.168.1.0/24", None)
    );
    let raw = std::fs::read(&path).unwrap();
    let raw = String::from_utf8_lossy(&raw);
    assert!(!raw.contains("192.168.1.50") && !raw.contains("anna-phone"));
    // verify/log by name still find the anonymized rows.
    let clients = vec![(
        "anna-phone".to_string(),
        vec!["192.168.1.50/32".parse().unwrap()],
    )];
    let sel = ClientSelector::resolve("anna-phone", &clients).unwrap();
    assert!(sel.keys.contains(&"192.168.1.0/24".to_string()));
}

#[test]
fn retention_deletes_old_rows_at_start_and_periodically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let fx = Fixture::new();
    let c = client("10.0.0.7", None);
    let day = Duration::from_secs(86_400);
    let mut s = settings(&path, LogMode::All);
    s.retention_days = 2;
    // Write old and new rows with retention off.
    let mut keep = s.clone();
    keep.retention_days = 0;
    let log = QueryLog::open_with(keep, fast(), counter(), None).unwrap();
    let now = SystemTime::now();
    for age in [10u32, 5, 3, 1, 0] {
        for _ in 0..3 {
            log.record(&fx.event(&c, "t.example", fx.both, now - day * age));
        }
    }
    log.shutdown();
    assert_eq!(count(&path, "SELECT count(*) FROM queries"), 15);
    // Start with retention: rows older than 2 days go, in both tables.
    let mut tuning = fast();
    tuning.retention_every = Duration::from_millis(50);
    let log = QueryLog::open_with(s, tuning, counter(), None).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(count(&path, "SELECT count(*) FROM queries"), 6);
    assert_eq!(count(&path, "SELECT count(*) FROM query_categories"), 12);
    // Device activity goes with the rows.
    assert_eq!(count(&path, "SELECT sum(total) FROM activity"), 6);
    // Later rows that age past the retention go too, while running.
    log.record(&fx.event(&c, "t.example", fx.both, now - day * 4));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(count(&path, "SELECT count(*) FROM queries"), 6);
    let stats = log.stats();
    assert_eq!(stats.retention_deleted, 10);
    log.shutdown();
}

/// A `Stop` that arrives while retention deletes old rows slice by slice must end the
/// writer: the drain between slices once swallowed it and `shutdown` waited forever.
#[test]
fn shutdown_during_retention_returns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    {
        // 20000 rows, years old, of 400 clients: retention needs a transaction per 50 clients.
        let mut conn = open_rw(&path).unwrap();
        let tx = conn.transaction().unwrap();
        let old = now_ms() - 5 * 365 * 86_400_000;
        tx.execute_batch(
            "INSERT INTO texts (id, text) VALUES (1, 'x.example'), (2, 'telemetry' || char(31)); \
             INSERT INTO category_sets VALUES ('telemetry', 2);",
        )
        .unwrap();
        for c in 0..400i64 {
            tx.execute(
                "INSERT INTO texts (id, text) VALUES (?1, ?2)",
                params![c + 10, format!("10.0.{}.{}", c / 256, c % 256)],
            )
            .unwrap();
            for i in 0..50i64 {
                // blocked, action blocked, type A, NOERROR
                tx.execute(
                    "INSERT INTO query_rows (client, ts_ms, seq, name, kind, matched) \
                     VALUES (?1, ?2, 0, 1, 2 | (1 << 3), 2)",
                    params![c + 10, old + i * 3_600_000],
                )
                .unwrap();
            }
        }
        tx.commit().unwrap();
    }
    let mut s = settings(&path, LogMode::All);
    s.retention_days = 1;
    let log = Arc::new(QueryLog::open_with(s, fast(), counter(), None).unwrap());
    // Retention starts at once; give it a moment to be in its slices, then stop.
    std::thread::sleep(Duration::from_millis(50));
    let (tx, rx) = mpsc::channel();
    let log2 = log.clone();
    std::thread::spawn(move || {
        let _ = tx.send(log2.shutdown());
    });
    let report = rx.recv_timeout(Duration::from_secs(60));
    assert!(report.is_ok(), "shutdown hung while retention ran");
    assert!(log.stats().retention_deleted > 0);
}

#[test]
fn marks_are_reported_to_the_callback() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let clients = vec![(
        "anna-phone".to_string(),
        vec!["192.168.1.50/32".parse().unwrap()],
    )];
    let seen: Arc<Mutex<Vec<Vec<LatestMark>>>> = Arc::default();
    let seen2 = seen.clone();
    let log = QueryLog::open_with(
        settings(&path, LogMode::Matched),
        fast(),
        counter(),
        Some(Box::new(move |m: &[LatestMark]| {
            seen2.lock().unwrap().push(m.to_vec())
        })),
    )
    .unwrap();
    let args = |c: &str, n: &str| MarkArgs {
        client: c.into(),
        note: n.into(),
    };
    mark_at(&args("anna-phone", "first"), &path, &clients, 1_000).unwrap();
    let m2 = mark_at(
        &args("192.168.1.50", "MIUI analytics off"),
        &path,
        &clients,
        2_000,
    )
    .unwrap();
    assert_eq!(m2.mark.client, "anna-phone");
    mark_at(&args("10.0.0.9", "tv"), &path, &clients, 1_500).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    log.shutdown();
    let seen = seen.lock().unwrap();
    let last = seen.last().unwrap();
    assert_eq!(last.len(), 2);
    assert_eq!(last[0].client, "10.0.0.9");
    assert_eq!(
        (last[1].client.as_str(), last[1].id, last[1].note.as_str()),
        ("anna-phone", m2.mark.id, "MIUI analytics off")
    );
    // Unchanged marks are not reported again and again.
    assert!(seen.len() <= 4, "{}", seen.len());
    assert!(seen.windows(2).all(|w| w[0] != w[1]));
    assert!(m2.render_text().contains("--since mark:2"));
}

#[test]
fn unwritable_path_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, "x").unwrap();
    // A path under a regular file can never be created, even by root.
    let bad = file.join("q.db");
    let err = QueryLog::open(settings(&bad, LogMode::All), counter(), None).unwrap_err();
    assert_eq!(err.kind, DbErrorKind::CannotOpen, "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&bad.display().to_string()), "{msg}");
    assert!(
        msg.contains("[querylog] path") && msg.contains("is a file, not a directory"),
        "{msg}"
    );

    let missing_dir = dir.path().join("nope").join("q.db");
    let err = QueryLog::open(settings(&missing_dir, LogMode::All), counter(), None).unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");

    let err = QueryLog::open(settings(dir.path(), LogMode::All), counter(), None).unwrap_err();
    assert!(err.to_string().contains("directory"), "{err}");
}

#[test]
fn corrupt_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    std::fs::write(&path, vec![0x5au8; 8192]).unwrap();
    let err = QueryLog::open(settings(&path, LogMode::All), counter(), None).unwrap_err();
    assert_eq!(err.kind, DbErrorKind::Corrupt, "{err}");
    assert!(err.to_string().contains("move it aside"), "{err}");
    let err = open_existing(&path).unwrap_err();
    assert_eq!(err.kind, DbErrorKind::Corrupt, "{err}");

    // Another application's SQLite file is not taken over.
    let other = dir.path().join("other.db");
    Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE photos (id INTEGER)")
        .unwrap();
    let err = QueryLog::open(settings(&other, LogMode::All), counter(), None).unwrap_err();
    assert_eq!(err.kind, DbErrorKind::NotAQueryLog, "{err}");

    let err = open_existing(&dir.path().join("absent.db")).unwrap_err();
    assert_eq!(err.kind, DbErrorKind::Missing);
    assert!(err.to_string().contains("telesink run"), "{err}");
}

#[test]
fn locked_database_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    drop(open_rw(&path).unwrap());
    let holder = Connection::open(&path).unwrap();
    holder
        .execute_batch("PRAGMA locking_mode = EXCLUSIVE; BEGIN EXCLUSIVE")
        .unwrap();
    let started = Instant::now();
    let err = QueryLog::open(settings(&path, LogMode::All), counter(), None).unwrap_err();
    assert_eq!(err.kind, DbErrorKind::Locked, "{err}");
    assert!(err.to_string().contains("another"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn write_errors_at_runtime_are_counted_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let fx = Fixture::new();
    let c = client("10.0.0.7", None);
    let dropped = counter();
    let log =
        QueryLog::open_with(settings(&path, LogMode::All), fast(), dropped.clone(), None).unwrap();
    // Break the table under the writer.
    let other = Connection::open(&path).unwrap();
    other.execute_batch("DROP TABLE query_rows").unwrap();
    for _ in 0..10 {
        log.record(&fx.event(&c, "t.example", fx.telemetry, SystemTime::now()));
    }
    let report = log.shutdown();
    assert_eq!(report.rows_written, 0);
    assert_eq!(report.dropped, 10);
    assert_eq!(log.stats().rows_failed, 10);
}

#[test]
fn client_selection() {
    let clients = vec![
        (
            "anna-phone".to_string(),
            vec![
                "192.168.1.50/32".parse().unwrap(),
                "fd00::50/128".parse().unwrap(),
            ],
        ),
        ("kids".to_string(), vec!["192.168.1.64/28".parse().unwrap()]),
    ];
    let s = ClientSelector::resolve("anna-phone", &clients).unwrap();
    assert_eq!(s.label, "anna-phone");
    assert!(s.keys.contains(&"192.168.1.50".into()) && s.keys.contains(&"fd00::/56".into()));
    let s = ClientSelector::resolve("192.168.1.70", &clients).unwrap();
    assert_eq!(s.label, "kids");
    assert!(s.keys.contains(&"192.168.1.70".into()));
    let s = ClientSelector::resolve("10.1.1.1", &clients).unwrap();
    assert_eq!(s.label, "10.1.1.1");
    let s = ClientSelector::resolve("10.1.1.0/24", &clients).unwrap();
    assert_eq!(s.keys, vec!["10.1.1.0/24".to_string()]);
    let e = ClientSelector::resolve("ana-phone", &clients)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("anna-phone, kids") && e.contains("ana-phone"),
        "{e}"
    );
}

#[test]
fn log_command_filters_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let fx = Fixture::new();
    let anna = client("192.168.1.50", Some("anna-phone"));
    let tv = client("192.168.1.60", None);
    let clients = vec![(
        "anna-phone".to_string(),
        vec!["192.168.1.50/32".parse().unwrap()],
    )];
    let log = QueryLog::open_with(settings(&path, LogMode::All), fast(), counter(), None).unwrap();
    let t0 = SystemTime::now() - Duration::from_secs(600);
    for i in 0..10u64 {
        let t = t0 + Duration::from_secs(i * 10);
        log.record(&fx.event(&anna, &format!("n{i}.miui.com"), fx.both, t));
        log.record(&fx.event(&tv, "example.org", CategorySet::EMPTY, t));
    }
    log.shutdown();

    let all = log_at(&LogArgs::default(), &path, &clients, jiff::Timestamp::now()).unwrap();
    assert_eq!(all.rows.len(), 20);
    assert!(all.rows.windows(2).all(|w| w[0].time_ms >= w[1].time_ms));

    let args = LogArgs {
        client: Some("anna-phone".into()),
        category: Some("xiaomi".into()),
        limit: Some(3),
        ..Default::default()
    };
    let r = log_at(&args, &path, &clients, jiff::Timestamp::now()).unwrap();
    assert_eq!(
        r.rows.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["n9.miui.com", "n8.miui.com", "n7.miui.com"]
    );
    assert!(r.more);
    let text = r.render_text();
    assert!(
        text.contains("n9.miui.com")
            && text.contains("telemetry,xiaomi")
            && text.contains("--limit"),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&r.render_json()).unwrap();
    assert_eq!(json[0]["client"], "anna-phone");
    assert_eq!(json[0]["type"], "A");
    assert_eq!(json[0]["categories"][1], "xiaomi");

    // A category without a client: every client's rows of it, newest first, within --since
    // (read one key range per client).
    let args = LogArgs {
        category: Some("telemetry".into()),
        since: Some(TimeSpec::parse("545s").unwrap()),
        ..Default::default()
    };
    let r = log_at(&args, &path, &clients, jiff::Timestamp::now()).unwrap();
    assert!(!r.rows.is_empty() && r.rows.len() < 10, "{}", r.rows.len());
    assert!(r.rows.iter().all(|r| r.client == "anna-phone"));
    assert!(r.rows.windows(2).all(|w| w[0].time_ms >= w[1].time_ms));
    assert_eq!(r.rows[0].name, "n9.miui.com");

    let args = LogArgs {
        result: Some("forwarded".into()),
        since: Some(TimeSpec::parse("545s").unwrap()),
        ..Default::default()
    };
    let r = log_at(&args, &path, &clients, jiff::Timestamp::now()).unwrap();
    assert!(!r.rows.is_empty() && r.rows.len() < 10, "{}", r.rows.len());
    assert!(r
        .rows
        .iter()
        .all(|r| r.client == "192.168.1.60" && r.upstream_ms == Some(12)));

    let args = LogArgs {
        result: Some("nope".into()),
        ..Default::default()
    };
    let e = log_at(&args, &path, &clients, jiff::Timestamp::now()).unwrap_err();
    assert!(e.to_string().contains("forwarded"), "{e}");
    let empty = LogArgs {
        category: Some("ads".into()),
        ..Default::default()
    };
    let r = log_at(&empty, &path, &clients, jiff::Timestamp::now()).unwrap();
    assert_eq!(r.render_text(), "no logged queries match\n");
}

#[test]
fn logged_time_is_the_union_of_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let conn = open_rw(&path).unwrap();
    conn.execute_batch(
        "INSERT INTO runs (start_ms, alive_ms, end_ms, mode, anonymize) VALUES
               (1000, 2000, 2000, 'all', 0),
               (1500, 2500, 2500, 'matched', 0),
               (4000, 4500, NULL, 'all', 0),      -- crashed at 4500
               (9000, 9990, NULL, 'all', 0);      -- still running",
    )
    .unwrap();
    assert_eq!(logged_ms(&conn, 0, 3000, 10_000).unwrap(), 1500);
    assert_eq!(logged_ms(&conn, 0, 5000, 10_000).unwrap(), 2000);
    assert_eq!(logged_ms(&conn, 8000, 10_000, 10_000).unwrap(), 1000);
    assert_eq!(logged_ms(&conn, 1200, 1300, 10_000).unwrap(), 100);
}

fn device(addr: &str, name: Option<&str>, mac: Option<&str>) -> ClientInfo {
    ClientInfo {
        addr: addr.parse().unwrap(),
        name: name.map(Arc::from),
        named_by: match (name, mac) {
            (Some(_), Some(_)) => crate::devices::NamedBy::ConfigMac,
            (Some(_), None) => crate::devices::NamedBy::ConfigAddress,
            _ => crate::devices::NamedBy::Address,
        },
        mac: mac.map(|m| m.parse().unwrap()),
        group: None,
    }
}

/// device, minute, total, first, last, ordinary, first and last ordinary.
type ActivityRow = (String, i64, i64, i64, i64, i64, Option<i64>, Option<i64>);

/// Per device and minute: all queries and the ordinary ones, in both modes that keep a
/// database; `matched` still writes no row for an ordinary query.
#[test]
fn device_activity_in_matched_and_all() {
    for mode in [LogMode::Matched, LogMode::All] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        let fx = Fixture::new();
        let v4 = device("192.168.1.77", Some("tv"), Some("3c:2e:f9:12:34:56"));
        let v6 = device("fd00::77", Some("tv"), Some("3c:2e:f9:12:34:56"));
        let other = device("192.168.1.9", None, None);
        let log = QueryLog::open_with(settings(&path, mode), fast(), counter(), None).unwrap();
        // Minute m0: 3 ordinary + 1 telemetry; minute m0+1: 2 ordinary (one from IPv6).
        let m0 = (now_ms() / 60_000 - 10) * 60_000;
        let at = |ms: i64| std::time::UNIX_EPOCH + Duration::from_millis(ms as u64);
        for (c, off, cats) in [
            (&v4, 1_000, CategorySet::EMPTY),
            (&v4, 2_000, fx.telemetry),
            (&v4, 5_000, CategorySet::EMPTY),
            (&v4, 59_000, CategorySet::EMPTY),
            (&v4, 61_000, CategorySet::EMPTY),
            (&v6, 62_000, CategorySet::EMPTY),
            (&other, 3_000, CategorySet::EMPTY),
        ] {
            log.record(&fx.event(c, "x.example", cats, at(m0 + off)));
        }
        let report = log.shutdown();
        assert_eq!(
            report.rows_written,
            if mode == LogMode::All { 7 } else { 1 },
            "{mode:?}"
        );
        assert_eq!(log.stats().activity_counted, 7);
        let conn = Connection::open(&path).unwrap();
        let rows: Vec<ActivityRow> = conn
            .prepare(
                "SELECT device, minute, total, first_ms, last_ms, ordinary, ord_first_ms, \
                     ord_last_ms FROM activity ORDER BY device, minute",
            )
            .unwrap()
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                ))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let m = m0 / 60_000;
        assert_eq!(
            rows,
            vec![
                (
                    "192.168.1.9".to_string(),
                    m,
                    1,
                    m0 + 3_000,
                    m0 + 3_000,
                    1,
                    Some(m0 + 3_000),
                    Some(m0 + 3_000)
                ),
                (
                    "tv".to_string(),
                    m,
                    4,
                    m0 + 1_000,
                    m0 + 59_000,
                    3,
                    Some(m0 + 1_000),
                    Some(m0 + 59_000)
                ),
                (
                    "tv".to_string(),
                    m + 1,
                    2,
                    m0 + 61_000,
                    m0 + 62_000,
                    2,
                    Some(m0 + 61_000),
                    Some(m0 + 62_000)
                ),
            ],
            "{mode:?}"
        );

        // The devices, as `telesink devices` reads them.
        let devs = devices(&path).unwrap();
        assert_eq!(devs.len(), 2, "{devs:?}");
        let tv = &devs[0];
        assert_eq!(tv.name, "tv");
        assert_eq!(tv.named_by, crate::devices::NamedBy::ConfigMac);
        assert_eq!(tv.mac.unwrap().to_string(), "3c:2e:f9:12:34:56");
        assert_eq!(tv.last_query_ms, m0 + 62_000);
        assert_eq!(tv.first_seen_ms, m0 + 1_000);
        let addrs: Vec<&str> = tv.addresses.iter().map(|a| a.address.as_str()).collect();
        assert_eq!(addrs, ["fd00::77", "192.168.1.77"]);
        assert_eq!(devs[1].name, "192.168.1.9");
        assert_eq!(devs[1].named_by, crate::devices::NamedBy::Address);
        assert_eq!(devs[1].mac, None);
        let json = serde_json::to_value(&devs).unwrap();
        assert_eq!(json[0]["named_by"], "config mac");
        assert_eq!(json[0]["mac"], "3c:2e:f9:12:34:56");

        // A second run adds to the same minutes.
        let log = QueryLog::open_with(settings(&path, mode), fast(), counter(), None).unwrap();
        log.record(&fx.event(&v4, "x.example", CategorySet::EMPTY, at(m0 + 30_000)));
        log.shutdown();
        assert_eq!(
            count(
                &path,
                &format!("SELECT ordinary FROM activity WHERE device = 'tv' AND minute = {m}")
            ),
            4
        );
    }
}

/// Anonymized: activity and devices under the network, no name, no MAC.
#[test]
fn anonymized_activity_keeps_networks_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let fx = Fixture::new();
    let tv = device("192.168.1.77", Some("tv"), Some("3c:2e:f9:12:34:56"));
    let mut s = settings(&path, LogMode::Matched);
    s.anonymize = true;
    let log = QueryLog::open_with(s, fast(), counter(), None).unwrap();
    log.record(&fx.event(&tv, "x.example", CategorySet::EMPTY, SystemTime::now()));
    log.shutdown();
    let devs = devices(&path).unwrap();
    assert_eq!(devs.len(), 1);
    assert_eq!(devs[0].name, "192.168.1.0/24");
    assert_eq!(devs[0].mac, None);
    let raw = std::fs::read(&path).unwrap();
    let raw = String::from_utf8_lossy(&raw);
    assert!(!raw.contains("3c:2e:f9") && !raw.contains("192.168.1.77"));
}

/// `mark --client ADDRESS` takes the name of the device the log saw use the address.
#[test]
fn mark_by_address_names_the_device() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let fx = Fixture::new();
    let log =
        QueryLog::open_with(settings(&path, LogMode::Matched), fast(), counter(), None).unwrap();
    let tv = device("fd00::77", Some("tv"), Some("3c:2e:f9:12:34:56"));
    log.record(&fx.event(&tv, "x.example", CategorySet::EMPTY, SystemTime::now()));
    log.shutdown();
    let clients: OwnedClientList = vec![];
    let args = MarkArgs {
        client: "fd00::77".into(),
        note: "telemetry off".into(),
    };
    let m = mark_at(&args, &path, &clients, now_ms()).unwrap();
    assert_eq!(m.mark.client, "tv");
    // And by the name, which the config does not know.
    let args = MarkArgs {
        client: "tv".into(),
        note: "again".into(),
    };
    assert_eq!(
        mark_at(&args, &path, &clients, now_ms())
            .unwrap()
            .mark
            .client,
        "tv"
    );
    let sel = {
        let conn = open_existing(&path).unwrap();
        ClientSelector::resolve_in("tv", &clients, Some(&conn)).unwrap()
    };
    assert!(sel.keys.contains(&"fd00::77".to_string()), "{sel:?}");
    // An address nobody named stays an address; an unknown name lists the known devices.
    let args = MarkArgs {
        client: "10.0.0.1".into(),
        note: "x".into(),
    };
    assert_eq!(
        mark_at(&args, &path, &clients, now_ms())
            .unwrap()
            .mark
            .client,
        "10.0.0.1"
    );
    let args = MarkArgs {
        client: "radio".into(),
        note: "x".into(),
    };
    let e = mark_at(&args, &path, &clients, now_ms())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unknown client \"radio\"") && e.contains("tv"),
        "{e}"
    );
}

/// A schema-2 log (before device activity) opens as schema 3 with activity and devices
/// filled from its rows.
/// A schema-4 log (addresses, groups, categories and lists as ids of their own, the old
/// `kind` packing, absolute device-minute offsets) reads the same after the move to schema 5.
#[test]
fn schema_4_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(&format!(
            "{} \
             INSERT INTO texts (id, text) VALUES (1, 'tv'), (2, '10.0.0.7'), (3, 'kids'), \
               (4, 'a.example'), (5, 't.lgtvsdp.com'), (6, 'lg,telemetry'), (7, 'lg-list'), \
               (8, '10.0.0.9'); \
             INSERT INTO category_sets VALUES ('lg', 6), ('telemetry', 6); \
             -- forwarded AAAA NXDOMAIN in 12 ms, of the named tv in group kids
             INSERT INTO query_rows (client, ts_ms, seq, addr, name, kind, grp, cats, list, upstream_ms) \
               VALUES (1, 60500, 0, 2, 4, 1 | (28 << 5) | (3 << 21), 3, NULL, NULL, 12); \
             -- blocked TXT, action blocked, categories lg and telemetry from lg-list
             INSERT INTO query_rows (client, ts_ms, seq, addr, name, kind, grp, cats, list, upstream_ms) \
               VALUES (1, 61000, 0, 2, 5, 2 | (1 << 3) | (16 << 5), 3, 6, 7, NULL); \
             -- cached A of an unnamed client
             INSERT INTO query_rows (client, ts_ms, seq, addr, name, kind, grp, cats, list, upstream_ms) \
               VALUES (8, 62000, 0, NULL, 4, 1 << 5, NULL, NULL, NULL, NULL); \
             -- the tv's minute 1: queries at 0.5 s (ordinary) and 1 s; ordinary in second 0
             INSERT INTO device_minutes VALUES (1, 1, 2, 500, 1000, 1, 500, 500, 1); \
             PRAGMA user_version = 4;",
            schema_4()
        ))
        .unwrap();
    }
    let conn = open_existing(&path).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let rows: Vec<String> = conn
        .prepare(
            "SELECT ts_ms || ' ' || client || ' ' || client_addr || ' ' || \
               coalesce(client_name, '-') || ' ' || coalesce(grp, '-') || ' ' || name || ' ' || \
               qtype || ' ' || result || ' ' || coalesce(categories, '-') || ' ' || \
               coalesce(list, '-') || ' ' || coalesce(action, '-') || ' ' || rcode || ' ' || \
               coalesce(upstream_ms, '-') FROM queries ORDER BY ts_ms",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        rows,
        [
            "60500 tv 10.0.0.7 tv kids a.example AAAA forwarded - - - NXDOMAIN 12",
            "61000 tv 10.0.0.7 tv kids t.lgtvsdp.com TXT blocked lg,telemetry lg-list blocked NOERROR -",
            "62000 10.0.0.9 10.0.0.9 - - a.example A cached - - - NOERROR -",
        ]
    );
    let cats: Vec<String> = conn
        .prepare("SELECT category || ' ' || name FROM query_categories ORDER BY category")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(cats, ["lg t.lgtvsdp.com", "telemetry t.lgtvsdp.com"]);
    let minute: (i64, i64, i64, i64, i64) = conn
        .query_row(
            "SELECT first_ms, last_ms, ord_first_ms, ord_last_ms, ord_seconds FROM activity",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .unwrap();
    assert_eq!(minute, (60500, 61000, 60500, 60500, 1));
    for old in ["query_rows_4", "category_sets_4", "device_minutes_4"] {
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = ?1",
                [old],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 0, "{old} left behind");
    }
    drop(conn);
    // And the log command reads it (the rows are from 1970: no --since).
    let clients = vec![("tv".to_string(), vec!["10.0.0.7/32".parse().unwrap()])];
    let args = LogArgs {
        category: Some("telemetry".into()),
        ..Default::default()
    };
    let r = log_at(&args, &path, &clients, jiff::Timestamp::now()).unwrap();
    assert_eq!(r.rows.len(), 1);
    let e = &r.rows[0];
    assert_eq!(
        (
            e.client.as_str(),
            e.client_name.as_deref(),
            e.client_address.as_str(),
            e.group.as_deref(),
            e.qtype.as_str(),
            e.list.as_deref(),
        ),
        (
            "tv",
            Some("tv"),
            "10.0.0.7",
            Some("kids"),
            "TXT",
            Some("lg-list")
        )
    );
    assert_eq!(e.categories, ["lg", "telemetry"]);
}

#[test]
fn schema_2_is_migrated_with_activity() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
                "CREATE TABLE queries (id INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL, \
                   client TEXT NOT NULL, client_addr TEXT NOT NULL, client_name TEXT, grp TEXT, \
                   name TEXT NOT NULL, qtype TEXT NOT NULL, result TEXT NOT NULL, categories TEXT, \
                   list TEXT, action TEXT, rcode TEXT NOT NULL, upstream_ms INTEGER);
                 CREATE INDEX queries_client_ts ON queries (client, ts_ms);
                 CREATE INDEX queries_ts ON queries (ts_ms);
                 CREATE TABLE query_categories (category TEXT NOT NULL, client TEXT NOT NULL, \
                   ts_ms INTEGER NOT NULL, query_id INTEGER NOT NULL, name TEXT NOT NULL, action TEXT, \
                   PRIMARY KEY (category, client, ts_ms, query_id)) WITHOUT ROWID;
                 CREATE TABLE marks (id INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL, \
                   client TEXT NOT NULL, note TEXT NOT NULL);
                 CREATE TABLE runs (id INTEGER PRIMARY KEY, start_ms INTEGER NOT NULL, \
                   alive_ms INTEGER NOT NULL, end_ms INTEGER, mode TEXT NOT NULL, anonymize INTEGER NOT NULL);
                 INSERT INTO queries (ts_ms, client, client_addr, client_name, name, qtype, result, rcode, categories) VALUES
                   (60000, 'tv', '10.0.0.7', 'tv', 'a.example', 'A', 'forwarded', 'NOERROR', NULL),
                   (61000, 'tv', '10.0.0.7', 'tv', 't.example', 'A', 'blocked', 'NOERROR', 'telemetry'),
                   (130000, 'tv', 'fd00::7', 'tv', 'a.example', 'A', 'forwarded', 'NOERROR', NULL),
                   (70000, '10.0.0.9', '10.0.0.9', NULL, 'a.example', 'A', 'forwarded', 'NOERROR', NULL);
                 PRAGMA user_version = 2;",
            )
            .unwrap();
    }
    // The read commands bring it up to date too (before the server restarted).
    let conn = open_existing(&path).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    drop(conn);
    drop(open_rw(&path).unwrap());
    assert_eq!(
        count(
            &path,
            "SELECT sum(total) * 100 + sum(ordinary) FROM activity WHERE device = 'tv'"
        ),
        302
    );
    let devs = devices(&path).unwrap();
    assert_eq!(devs[0].name, "tv");
    assert_eq!(devs[0].named_by, crate::devices::NamedBy::ConfigAddress);
    assert_eq!(devs[0].addresses.len(), 2);
    assert_eq!(devs[1].name, "10.0.0.9");
    assert_eq!(devs[1].named_by, crate::devices::NamedBy::Address);
}

#[cfg(test)]
mod cost {
    use super::super::sink::{Msg, Row};
    use super::super::writer::{write_rows, TextIds};
    use super::*;

    /// CPU time of the writer per row (`write_rows`, batches of 2000, every row matched, on
    /// disk in the temp directory), and per `record` on the DNS side. Run in release:
    /// `cargo test --release querylog::tests::cost -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn write_cost() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cost.db");
        let mut conn = open_rw(&path).unwrap();
        for ix in std::env::var("COST_DROP")
            .unwrap_or_default()
            .split(',')
            .filter(|x| !x.is_empty())
        {
            conn.execute_batch(&format!("DROP INDEX {ix}")).unwrap();
        }
        if let Ok(p) = std::env::var("COST_PRAGMA") {
            conn.execute_batch(&p).unwrap();
        }
        let f = Fixture::new();
        let clients: Vec<ClientInfo> = (0..50)
            .map(|i| client(&format!("192.168.1.{i}"), (i % 2 == 0).then_some("phone")))
            .collect();
        let names: Vec<String> = (0..500)
            .map(|i| format!("t{i}.tracking.vendor{}.example", i % 7))
            .collect();
        let now = SystemTime::now();
        let rows: Vec<Row> = (0..200_000usize)
            .map(|i| {
                let ev = f.event(
                    &clients[i % clients.len()],
                    &names[i % names.len()],
                    if i % 3 == 0 { f.both } else { f.telemetry },
                    now + Duration::from_micros(i as u64 * 10),
                );
                Row::from_event(&ev)
            })
            .collect();
        let mut texts = TextIds::default();
        let t0 = Instant::now();
        for chunk in rows.chunks(2000) {
            let tx = conn.transaction().unwrap();
            write_rows(&tx, &mut texts, chunk, false).unwrap();
            tx.commit().unwrap();
        }
        let took = t0.elapsed();
        println!("Row: {} bytes in the queue", std::mem::size_of::<Msg>());
        println!(
            "write_rows: {} rows in {:?}: {:.2} µs/row",
            rows.len(),
            took,
            took.as_secs_f64() * 1e6 / rows.len() as f64
        );
    }
}
