//! The query log: every answered query (or every one that matched a category) in a SQLite
//! database, for `telesink log` and `telesink verify`.
//!
//! The DNS path only copies what it keeps into a [`Row`] and `try_send`s it on a bounded channel:
//! it never waits on disk. When the channel is full the row is dropped and counted
//! (`telesink_querylog_dropped_total`). One writer thread owns the connection and writes rows in
//! batches, one transaction per batch, in WAL mode so that `telesink log` and `verify` read while
//! the server writes. It also deletes rows past `retention_days`, records when the log was running
//! (so `verify` knows which time it may count), and reports the latest opt-out mark per client.
//!
//! This file also holds the `telesink mark` and `telesink log` commands; `verify` is in
//! [`crate::verify`].

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use ipnet::IpNet;
use rusqlite::{params, params_from_iter, Connection, ErrorCode, OpenFlags, OptionalExtension};
use serde::Serialize;

use crate::category::{Action, CategorySet, CategoryTable};
use crate::events::{QueryEvent, QueryResult, QuerySink};
use crate::timespec::{self, MarkRef, TimeSpec};

// ---------------------------------------------------------------------------------------------
// Settings

/// Which queries the log keeps (`[querylog] log`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogMode {
    /// Every answered query.
    All,
    /// Queries that matched at least one category (blocked, observed or allowed).
    Matched,
    /// Nothing: no database is opened.
    None,
}

/// `[querylog]`, as the server hands it over (path already made absolute / relative to the
/// config file).
#[derive(Clone, Debug)]
pub struct QueryLogSettings {
    pub path: PathBuf,
    pub mode: LogMode,
    /// Rows older than this many days are deleted (at start and hourly). 0 keeps everything.
    pub retention_days: u32,
    /// Store the client's /24 (IPv4) or /56 (IPv6) network and no client name.
    pub anonymize: bool,
    /// Rows that may wait for the writer; past that they are dropped and counted.
    pub queue_size: usize,
}

/// Intervals of the writer thread. [`Default`] is what the server uses; tests shorten them.
#[derive(Clone, Debug)]
pub struct QueryLogTuning {
    /// Most rows in one transaction.
    pub batch_max: usize,
    /// While rows flow, the writer sleeps this long between batches (the longest a row waits
    /// in the queue, short of a full batch being written first).
    pub batch_wait: Duration,
    /// How often the writer records that the log is running and reports the latest marks.
    pub heartbeat: Duration,
    /// How often old rows are deleted (also once at start).
    pub retention_every: Duration,
}

impl Default for QueryLogTuning {
    fn default() -> Self {
        QueryLogTuning {
            batch_max: 2000,
            batch_wait: Duration::from_millis(100),
            heartbeat: Duration::from_secs(10),
            retention_every: Duration::from_secs(3600),
        }
    }
}

/// A run whose last heartbeat is older than this is taken to have stopped then (crash, kill -9).
pub(crate) const RUN_STALE_MS: i64 = 30_000;

/// The newest opt-out mark of one client, for the metrics module to export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LatestMark {
    /// The client as marked: a configured name, else an address.
    pub client: String,
    pub id: i64,
    /// Milliseconds since the Unix epoch.
    pub time_ms: i64,
    pub note: String,
}

/// Called by the writer thread at start and every heartbeat (10 s) with the newest mark of each
/// client. It runs on the writer thread: keep it short (set gauges).
pub type MarksCallback = Box<dyn FnMut(&[LatestMark]) + Send + 'static>;

// ---------------------------------------------------------------------------------------------
// Errors

/// What went wrong with the database file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DbErrorKind {
    /// The file does not exist (commands that only read).
    Missing,
    /// The file or its directory cannot be opened or created.
    CannotOpen,
    /// The file or its directory is read-only.
    ReadOnly,
    /// Not a SQLite database, or a corrupt one.
    Corrupt,
    /// A SQLite database, but not a telesink query log (or a newer one).
    NotAQueryLog,
    /// Another process holds the lock.
    Locked,
    /// No space left.
    DiskFull,
    Other,
}

/// A database problem, named with its path and what to do about it.
#[derive(Debug, thiserror::Error)]
#[error("query log {}: {message}", path.display())]
pub struct QueryLogError {
    pub path: PathBuf,
    pub kind: DbErrorKind,
    pub message: String,
}

impl QueryLogError {
    fn new(path: &Path, kind: DbErrorKind, message: impl Into<String>) -> Self {
        QueryLogError {
            path: path.to_path_buf(),
            kind,
            message: message.into(),
        }
    }

    /// Classifies a SQLite error and says what the user can do.
    pub(crate) fn from_sqlite(path: &Path, e: &rusqlite::Error) -> Self {
        let detail = e.to_string();
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (kind, message) = match e.sqlite_error_code() {
            Some(ErrorCode::CannotOpen) => {
                let why = if path.is_dir() {
                    "it is a directory: point [querylog] path at a file".to_string()
                } else if dir.exists() && !dir.is_dir() {
                    format!(
                        "{} is a file, not a directory: change [querylog] path",
                        dir.display()
                    )
                } else if !dir.is_dir() {
                    format!(
                        "the directory {} does not exist: create it or change [querylog] path",
                        dir.display()
                    )
                } else {
                    format!(
                        "check that telesink's user may read and write it and the directory {}, or change [querylog] path",
                        dir.display()
                    )
                };
                (DbErrorKind::CannotOpen, format!("cannot open it ({detail}); {why}"))
            }
            Some(ErrorCode::ReadOnly) | Some(ErrorCode::PermissionDenied) => (
                DbErrorKind::ReadOnly,
                format!(
                    "it is read-only ({detail}); give telesink's user write access to it and to {} \
                     (SQLite also writes {file}-wal and {file}-shm there), or change [querylog] path",
                    dir.display()
                ),
            ),
            Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt) => (
                DbErrorKind::Corrupt,
                format!(
                    "it is not a SQLite database, or it is corrupt ({detail}); move it aside \
                     (telesink then starts a new log) or change [querylog] path"
                ),
            ),
            Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked) => (
                DbErrorKind::Locked,
                format!(
                    "it is locked by another process ({detail}); is another telesink using the same \
                     file? give each instance its own [querylog] path"
                ),
            ),
            Some(ErrorCode::DiskFull) => (
                DbErrorKind::DiskFull,
                format!("the disk is full ({detail}); free space or lower [querylog] retention_days"),
            ),
            Some(ErrorCode::SystemIoFailure) => (
                DbErrorKind::Other,
                format!("disk I/O error ({detail}); check the disk and free space in {}", dir.display()),
            ),
            _ => (DbErrorKind::Other, detail),
        };
        QueryLogError::new(path, kind, message)
    }
}

/// Why a `mark`, `log` or `verify` command failed (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Db(#[from] QueryLogError),
    #[error(transparent)]
    Time(#[from] timespec::TimeSpecError),
    #[error("{0}")]
    Usage(String),
    #[error("Prometheus {url}: {message}")]
    Prometheus { url: String, message: String },
}

// ---------------------------------------------------------------------------------------------
// Schema

/// 2: without the `(category, ts_ms)` index of 1, which cost the writer about a third of its
/// time per row; its questions are served by the primary key, client by client.
const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS queries (
    id          INTEGER PRIMARY KEY,
    ts_ms       INTEGER NOT NULL,      -- milliseconds since the Unix epoch
    client      TEXT NOT NULL,         -- configured name, else address; network when anonymized
    client_addr TEXT NOT NULL,         -- address; network when anonymized
    client_name TEXT,                  -- NULL when unnamed or anonymized
    grp         TEXT,                  -- NULL: [default]
    name        TEXT NOT NULL,
    qtype       TEXT NOT NULL,
    result      TEXT NOT NULL,         -- blocked cached forwarded local refused failed
    categories  TEXT,                  -- comma-separated, NULL when none matched
    list        TEXT,
    action      TEXT,                  -- blocked observed allowed, NULL when none matched
    rcode       TEXT NOT NULL,
    upstream_ms INTEGER
);
CREATE INDEX IF NOT EXISTS queries_client_ts ON queries (client, ts_ms);
CREATE INDEX IF NOT EXISTS queries_ts ON queries (ts_ms);

-- One row per (query, matched category): what verify counts, by one range scan of the primary
-- key per client; log --category and retention take it client by client too.
CREATE TABLE IF NOT EXISTS query_categories (
    category TEXT NOT NULL,
    client   TEXT NOT NULL,
    ts_ms    INTEGER NOT NULL,
    query_id INTEGER NOT NULL,
    name     TEXT NOT NULL,
    action   TEXT,
    PRIMARY KEY (category, client, ts_ms, query_id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS marks (
    id     INTEGER PRIMARY KEY,
    ts_ms  INTEGER NOT NULL,
    client TEXT NOT NULL,
    note   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS marks_client_ts ON marks (client, ts_ms);

-- When the log was written: verify counts only time that was logged.
CREATE TABLE IF NOT EXISTS runs (
    id        INTEGER PRIMARY KEY,
    start_ms  INTEGER NOT NULL,
    alive_ms  INTEGER NOT NULL,
    end_ms    INTEGER,
    mode      TEXT NOT NULL,
    anonymize INTEGER NOT NULL
);
";

fn now_ms() -> i64 {
    system_ms(SystemTime::now())
}

fn system_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

/// Opens (creating if needed) the database for writing: WAL, `synchronous=NORMAL`, schema.
pub(crate) fn open_rw(path: &Path) -> Result<Connection, QueryLogError> {
    let e = |err: rusqlite::Error| QueryLogError::from_sqlite(path, &err);
    if path.is_dir() {
        return Err(QueryLogError::new(
            path,
            DbErrorKind::CannotOpen,
            "it is a directory: point [querylog] path at a file",
        ));
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(e)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(e)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(e)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(QueryLogError::new(
            path,
            DbErrorKind::ReadOnly,
            format!(
                "cannot switch it to WAL mode (it stays in {mode} mode); is it or its directory read-only?"
            ),
        ));
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(e)?;
    migrate(&conn, path)?;
    Ok(conn)
}

fn migrate(conn: &Connection, path: &Path) -> Result<(), QueryLogError> {
    let e = |err: rusqlite::Error| QueryLogError::from_sqlite(path, &err);
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(e)?;
    if version > SCHEMA_VERSION {
        return Err(QueryLogError::new(
            path,
            DbErrorKind::NotAQueryLog,
            format!(
                "it was written by a newer telesink (schema {version}, this one knows {SCHEMA_VERSION}); \
                 upgrade telesink or change [querylog] path"
            ),
        ));
    }
    if version == 0 {
        let has_foreign_tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name NOT IN \
                 ('queries', 'query_categories', 'marks', 'runs')",
                [],
                |r| r.get(0),
            )
            .map_err(e)?;
        if has_foreign_tables > 0 {
            return Err(not_a_query_log(path));
        }
    }
    if version < SCHEMA_VERSION {
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {SCHEMA} DROP INDEX IF EXISTS query_categories_ts; \
             PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
        ))
        .map_err(|err| {
            let _ = conn.execute_batch("ROLLBACK");
            e(err)
        })?;
    }
    Ok(())
}

fn not_a_query_log(path: &Path) -> QueryLogError {
    QueryLogError::new(
        path,
        DbErrorKind::NotAQueryLog,
        "it is a SQLite database but not a telesink query log; change [querylog] path",
    )
}

/// Opens an existing query log for the read commands (`log`, `verify`); works while the server
/// writes (WAL readers).
pub(crate) fn open_existing(path: &Path) -> Result<Connection, QueryLogError> {
    if !path.exists() {
        return Err(QueryLogError::new(
            path,
            DbErrorKind::Missing,
            "there is no query log here yet; `telesink run` creates it when [querylog] log is \
             \"matched\" or \"all\" (check [querylog] path and -c)",
        ));
    }
    if path.is_dir() {
        return Err(QueryLogError::new(
            path,
            DbErrorKind::CannotOpen,
            "it is a directory: point [querylog] path at a file",
        ));
    }
    let e = |err: rusqlite::Error| QueryLogError::from_sqlite(path, &err);
    let conn = match Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) {
        Ok(c) => c,
        Err(_) => Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(e)?,
    };
    conn.busy_timeout(Duration::from_secs(5)).map_err(e)?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(e)?;
    if version == 0 {
        return Err(not_a_query_log(path));
    }
    if version > SCHEMA_VERSION {
        return Err(QueryLogError::new(
            path,
            DbErrorKind::NotAQueryLog,
            format!(
                "it was written by a newer telesink (schema {version}, this one knows {SCHEMA_VERSION}); upgrade telesink"
            ),
        ));
    }
    Ok(conn)
}

// ---------------------------------------------------------------------------------------------
// Rows and the writer

/// What the log keeps of one query, made on the DNS path. It owns no heap memory of its own
/// for a usual name (shared names are reference-counted), so the writer thread, which drops
/// it, never frees into the allocator arena of a DNS thread.
#[derive(Debug)]
struct Row {
    ts_ms: i64,
    addr: IpAddr,
    client_name: Option<Arc<str>>,
    group: Option<Arc<str>>,
    name: RowName,
    qtype: RecordType,
    result: QueryResult,
    categories: CategorySet,
    /// Names of `categories`, for the policy generation that answered.
    category_table: Arc<CategoryTable>,
    list: Option<Arc<str>>,
    action: Option<Action>,
    rcode: ResponseCode,
    upstream_ms: Option<u32>,
}

impl Row {
    fn from_event(ev: &QueryEvent<'_>) -> Row {
        Row {
            ts_ms: system_ms(ev.time),
            addr: ev.client.addr,
            client_name: ev.client.name.clone(),
            group: ev.client.group.clone(),
            name: RowName::new(ev.name),
            qtype: ev.qtype,
            result: ev.result,
            categories: ev.categories,
            category_table: ev.category_table.clone(),
            list: ev.list.cloned(),
            action: ev.action,
            rcode: ev.rcode,
            upstream_ms: ev
                .upstream_time
                .map(|d| d.as_millis().min(u32::MAX as u128) as u32),
        }
    }
}

/// A query name kept inline when it is short, as most are; boxed otherwise.
#[derive(Debug)]
enum RowName {
    Inline {
        len: u8,
        bytes: [u8; RowName::INLINE],
    },
    Boxed(Box<str>),
}

impl RowName {
    const INLINE: usize = 62;

    fn new(name: &str) -> RowName {
        if name.len() <= Self::INLINE {
            let mut bytes = [0u8; Self::INLINE];
            bytes[..name.len()].copy_from_slice(name.as_bytes());
            RowName::Inline {
                len: name.len() as u8,
                bytes,
            }
        } else {
            RowName::Boxed(name.into())
        }
    }

    fn as_str(&self) -> &str {
        match self {
            // Copied from a `&str` at a char boundary (the whole string).
            RowName::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..*len as usize]).unwrap_or_default()
            }
            RowName::Boxed(b) => b,
        }
    }
}

enum Msg {
    Row(Row),
    Stop,
}

/// The client's /24 (IPv4) or /56 (IPv6) network, as stored when anonymizing.
pub fn anonymize_addr(addr: IpAddr) -> IpNet {
    let addr = addr.to_canonical();
    let len = if addr.is_ipv4() { 24 } else { 56 };
    IpNet::new(addr, len).expect("valid prefix").trunc()
}

/// `NOERROR`, `NXDOMAIN`, … as dig prints them.
pub(crate) fn rcode_name(rcode: ResponseCode) -> Cow<'static, str> {
    let n: u16 = rcode.into();
    Cow::Borrowed(match n {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        16 => "BADVERS",
        n => return Cow::Owned(format!("RCODE{n}")),
    })
}

/// `A`, `AAAA`, … as dig prints them; `TYPE65280` for types without a name.
fn qtype_text(t: RecordType) -> Cow<'static, str> {
    match t {
        RecordType::Unknown(n) => Cow::Owned(format!("TYPE{n}")),
        t => Cow::Borrowed(t.into()),
    }
}

#[derive(Debug, Default)]
struct Stats {
    rows_written: AtomicU64,
    batches: AtomicU64,
    rows_failed: AtomicU64,
    retention_deleted: AtomicU64,
}

/// What [`QueryLog::shutdown`] reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ShutdownReport {
    pub path: PathBuf,
    /// Rows written since start.
    pub rows_written: u64,
    /// Transactions.
    pub batches: u64,
    /// Rows dropped since start: queue full, or a failed write.
    pub dropped: u64,
}

impl fmt::Display for ShutdownReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "query log {}: wrote {} rows, dropped {}",
            self.path.display(),
            self.rows_written,
            self.dropped
        )
    }
}

/// Live counters of the writer, for tests and the benchmark.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueryLogStats {
    pub rows_written: u64,
    pub batches: u64,
    /// Rows lost to write errors (also counted in the dropped counter).
    pub rows_failed: u64,
    /// Rows deleted by retention.
    pub retention_deleted: u64,
}

struct Active {
    tx: SyncSender<Msg>,
    matched_only: bool,
    closed: AtomicBool,
    inflight: AtomicUsize,
    stats: Arc<Stats>,
}

/// The query log sink. Register it (in an `Arc`) with the request handler's sinks; at shutdown,
/// after the listeners stopped, call [`QueryLog::shutdown`].
pub struct QueryLog {
    path: PathBuf,
    /// `None` with `log = "none"`.
    active: Option<Active>,
    dropped: prometheus::IntCounter,
    dropped_at_start: u64,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for QueryLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueryLog")
            .field("path", &self.path)
            .field("enabled", &self.active.is_some())
            .finish()
    }
}

impl QueryLog {
    /// Opens (creating if needed) the database and starts the writer thread.
    ///
    /// `dropped` is the `telesink_querylog_dropped_total` counter. `on_marks` receives the newest
    /// opt-out mark of each client, at start and every 10 s. With `log = "none"` nothing is
    /// opened and every query is ignored. An error names the path and what to do; the server
    /// should log it and serve DNS without a query log.
    pub fn open(
        settings: QueryLogSettings,
        dropped: prometheus::IntCounter,
        on_marks: Option<MarksCallback>,
    ) -> Result<QueryLog, QueryLogError> {
        Self::open_with(settings, QueryLogTuning::default(), dropped, on_marks)
    }

    /// [`QueryLog::open`] with other writer intervals (tests, benchmark).
    pub fn open_with(
        settings: QueryLogSettings,
        tuning: QueryLogTuning,
        dropped: prometheus::IntCounter,
        on_marks: Option<MarksCallback>,
    ) -> Result<QueryLog, QueryLogError> {
        let dropped_at_start = dropped.get();
        if settings.mode == LogMode::None {
            return Ok(QueryLog {
                path: settings.path,
                active: None,
                dropped,
                dropped_at_start,
                writer: Mutex::new(None),
            });
        }
        let path = settings.path.clone();
        let conn = open_rw(&path)?;
        let start = now_ms();
        let mode = match settings.mode {
            LogMode::All => "all",
            _ => "matched",
        };
        // A real write: fails now, not later, on a read-only or full disk.
        conn.execute(
            "INSERT INTO runs (start_ms, alive_ms, mode, anonymize) VALUES (?1, ?1, ?2, ?3)",
            params![start, mode, settings.anonymize],
        )
        .map_err(|e| QueryLogError::from_sqlite(&path, &e))?;
        let run_id = conn.last_insert_rowid();

        let (tx, rx) = mpsc::sync_channel(settings.queue_size.max(1));
        let stats = Arc::new(Stats::default());
        let mut writer = Writer {
            conn,
            path: path.clone(),
            rx,
            tuning,
            anonymize: settings.anonymize,
            retention_ms: i64::from(settings.retention_days) * 86_400_000,
            run_id,
            on_marks,
            last_marks: None,
            stats: stats.clone(),
            dropped: dropped.clone(),
            errors: ErrorLimiter::default(),
        };
        let handle = std::thread::Builder::new()
            .name("querylog-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| {
                QueryLogError::new(
                    &path,
                    DbErrorKind::Other,
                    format!("cannot start the writer thread: {e}"),
                )
            })?;
        Ok(QueryLog {
            path: settings.path,
            active: Some(Active {
                tx,
                matched_only: settings.mode == LogMode::Matched,
                closed: AtomicBool::new(false),
                inflight: AtomicUsize::new(0),
                stats,
            }),
            dropped,
            dropped_at_start,
            writer: Mutex::new(Some(handle)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// False with `log = "none"`.
    pub fn is_enabled(&self) -> bool {
        self.active.is_some()
    }

    pub fn stats(&self) -> QueryLogStats {
        match &self.active {
            Some(a) => QueryLogStats {
                rows_written: a.stats.rows_written.load(Ordering::Relaxed),
                batches: a.stats.batches.load(Ordering::Relaxed),
                rows_failed: a.stats.rows_failed.load(Ordering::Relaxed),
                retention_deleted: a.stats.retention_deleted.load(Ordering::Relaxed),
            },
            None => QueryLogStats::default(),
        }
    }

    /// Stops accepting rows, writes every row already queued, and joins the writer. Safe to call
    /// more than once and through an `Arc`; later calls report the same totals.
    pub fn shutdown(&self) -> ShutdownReport {
        if let Some(a) = &self.active {
            let handle = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
            a.closed.store(true, Ordering::SeqCst);
            // A `record` that saw `closed == false` is about to enqueue: let it finish, so that
            // every accepted row is ahead of Stop in the queue.
            while a.inflight.load(Ordering::SeqCst) != 0 {
                std::thread::yield_now();
            }
            if let Some(handle) = handle {
                let _ = a.tx.send(Msg::Stop);
                if handle.join().is_err() {
                    tracing::error!(path = %self.path.display(), "query log writer panicked");
                }
            }
        }
        let stats = self.stats();
        ShutdownReport {
            path: self.path.clone(),
            rows_written: stats.rows_written,
            batches: stats.batches,
            dropped: self.dropped.get().saturating_sub(self.dropped_at_start),
        }
    }
}

/// For `telesink run`: opens the query log and logs what it does. A database that cannot be used
/// is logged as an error and `None` is returned: DNS keeps serving without a log. `on_mark` gets
/// each client's newest opt-out mark (for `telesink_optout_mark_timestamp_seconds`).
pub fn start_for_server(
    settings: QueryLogSettings,
    dropped: prometheus::IntCounter,
    on_mark: impl Fn(&str, SystemTime) + Send + 'static,
) -> Option<Arc<QueryLog>> {
    if settings.mode == LogMode::None {
        tracing::info!("query log off (log = \"none\")");
        return None;
    }
    let path = settings.path.clone();
    let what = format!(
        "log = \"{}\", retention {} days{}",
        if settings.mode == LogMode::All {
            "all"
        } else {
            "matched"
        },
        settings.retention_days,
        if settings.anonymize {
            ", anonymized"
        } else {
            ""
        }
    );
    let callback: MarksCallback = Box::new(move |marks: &[LatestMark]| {
        for m in marks {
            on_mark(
                &m.client,
                UNIX_EPOCH + Duration::from_millis(m.time_ms.max(0) as u64),
            );
        }
    });
    match QueryLog::open(settings, dropped, Some(callback)) {
        Ok(q) => {
            tracing::info!("query log {} ({what})", path.display());
            Some(Arc::new(q))
        }
        Err(e) => {
            tracing::error!(
                "{e}. DNS is served without a query log until this is fixed and telesink restarted"
            );
            None
        }
    }
}

impl Drop for QueryLog {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl QuerySink for QueryLog {
    fn record(&self, ev: &QueryEvent<'_>) {
        let Some(a) = &self.active else { return };
        if a.matched_only && ev.categories.is_empty() {
            return;
        }
        a.inflight.fetch_add(1, Ordering::SeqCst);
        if a.closed.load(Ordering::SeqCst) {
            a.inflight.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        match a.tx.try_send(Msg::Row(Row::from_event(ev))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => self.dropped.inc(),
        }
        a.inflight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Logs a repeating error at most once a minute, with how many were left out.
#[derive(Default)]
struct ErrorLimiter {
    last: Option<Instant>,
    suppressed: u64,
}

impl ErrorLimiter {
    fn report(&mut self, err: &QueryLogError, what: &str) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(60))
        {
            self.suppressed += 1;
            return;
        }
        if self.suppressed > 0 {
            tracing::error!(
                "{err} (while {what}; {} more such errors in the last minute)",
                self.suppressed
            );
        } else {
            tracing::error!("{err} (while {what})");
        }
        self.last = Some(now);
        self.suppressed = 0;
    }
}

struct Writer {
    conn: Connection,
    path: PathBuf,
    rx: Receiver<Msg>,
    tuning: QueryLogTuning,
    anonymize: bool,
    retention_ms: i64,
    run_id: i64,
    on_marks: Option<MarksCallback>,
    last_marks: Option<Vec<LatestMark>>,
    stats: Arc<Stats>,
    dropped: prometheus::IntCounter,
    errors: ErrorLimiter,
}

const INSERT_QUERY: &str = "INSERT INTO queries (ts_ms, client, client_addr, client_name, grp, \
    name, qtype, result, categories, list, action, rcode, upstream_ms) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)";
const INSERT_CATEGORY: &str = "INSERT OR IGNORE INTO query_categories \
    (category, client, ts_ms, query_id, name, action) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

impl Writer {
    fn run(&mut self) {
        // Answers come first: on a busy core rows wait in the queue (or, when it is full, are
        // dropped and counted) rather than queries waiting for the writer.
        crate::sched::background("query-log writer");
        let mut batch: Vec<Row> = Vec::with_capacity(self.tuning.batch_max);
        let mut next_heartbeat = Instant::now();
        let mut next_retention = Instant::now();
        let mut stopping = false;
        while !stopping {
            let now = Instant::now();
            if now >= next_heartbeat {
                self.heartbeat();
                next_heartbeat = now + self.tuning.heartbeat;
            }
            if now >= next_retention {
                self.retention();
                next_retention = now + self.tuning.retention_every;
            }
            let wait = next_heartbeat
                .min(next_retention)
                .saturating_duration_since(Instant::now());
            // Park on the queue only while it is idle: a parked writer costs every sender a
            // wake-up (a system call on the DNS path). Once rows flow, sleep between batches
            // instead and take everything that arrived in the meantime.
            match self.rx.recv_timeout(wait) {
                Ok(Msg::Row(row)) => batch.push(row),
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => continue,
            }
            loop {
                std::thread::sleep(self.tuning.batch_wait);
                let mut took = 0usize;
                loop {
                    match self.rx.try_recv() {
                        Ok(Msg::Row(r)) => {
                            batch.push(r);
                            took += 1;
                            if batch.len() >= self.tuning.batch_max {
                                self.write(&mut batch);
                            }
                        }
                        Ok(Msg::Stop) | Err(TryRecvError::Disconnected) => {
                            stopping = true;
                            break;
                        }
                        Err(TryRecvError::Empty) => break,
                    }
                }
                self.write(&mut batch);
                if stopping || took == 0 || Instant::now() >= next_heartbeat.min(next_retention) {
                    break;
                }
            }
        }
        // Stop is behind every accepted row, but take anything left all the same.
        while let Ok(msg) = self.rx.try_recv() {
            if let Msg::Row(r) = msg {
                batch.push(r);
                if batch.len() >= self.tuning.batch_max {
                    self.write(&mut batch);
                }
            }
        }
        self.write(&mut batch);
        let end = now_ms();
        if let Err(e) = self.conn.execute(
            "UPDATE runs SET alive_ms = ?1, end_ms = ?1 WHERE id = ?2",
            params![end, self.run_id],
        ) {
            self.errors
                .report(&QueryLogError::from_sqlite(&self.path, &e), "closing");
        }
        // Fold the WAL back so that the file is complete on its own.
        let _ = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)");
    }

    fn write(&mut self, batch: &mut Vec<Row>) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        match write_rows(&mut self.conn, batch, self.anonymize) {
            Ok(()) => {
                self.stats.rows_written.fetch_add(n, Ordering::Relaxed);
                self.stats.batches.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.stats.rows_failed.fetch_add(n, Ordering::Relaxed);
                self.dropped.inc_by(n);
                self.errors.report(
                    &QueryLogError::from_sqlite(&self.path, &e),
                    &format!("writing {n} rows, which are dropped"),
                );
            }
        }
        batch.clear();
    }

    fn heartbeat(&mut self) {
        if let Err(e) = self.conn.execute(
            "UPDATE runs SET alive_ms = ?1 WHERE id = ?2",
            params![now_ms(), self.run_id],
        ) {
            self.errors.report(
                &QueryLogError::from_sqlite(&self.path, &e),
                "recording that it runs",
            );
        }
        if self.on_marks.is_some() {
            match latest_marks(&self.conn) {
                Ok(marks) => {
                    if self.last_marks.as_ref() != Some(&marks) {
                        if let Some(cb) = self.on_marks.as_mut() {
                            cb(&marks);
                        }
                        self.last_marks = Some(marks);
                    }
                }
                Err(e) => self
                    .errors
                    .report(&QueryLogError::from_sqlite(&self.path, &e), "reading marks"),
            }
        }
    }

    /// Deletes rows older than the retention, an hour of rows per transaction so that queued
    /// rows are written in between.
    fn retention(&mut self) {
        if self.retention_ms <= 0 {
            return;
        }
        let cutoff = now_ms() - self.retention_ms;
        let mut pending: Vec<Row> = Vec::new();
        loop {
            let oldest: Option<i64> =
                match self
                    .conn
                    .query_row("SELECT min(ts_ms) FROM queries", [], |r| r.get(0))
                {
                    Ok(v) => v,
                    Err(e) => {
                        self.errors.report(
                            &QueryLogError::from_sqlite(&self.path, &e),
                            "deleting old rows",
                        );
                        break;
                    }
                };
            let upto = match oldest {
                Some(o) if o < cutoff => (o + 3_600_000).min(cutoff),
                _ => cutoff,
            };
            match delete_before(&mut self.conn, upto) {
                Ok(n) => {
                    self.stats.retention_deleted.fetch_add(n, Ordering::Relaxed);
                }
                Err(e) => {
                    self.errors.report(
                        &QueryLogError::from_sqlite(&self.path, &e),
                        "deleting old rows",
                    );
                    break;
                }
            }
            if upto >= cutoff {
                break;
            }
            // Keep the queue moving between slices.
            while let Ok(Msg::Row(r)) = self.rx.try_recv() {
                pending.push(r);
                if pending.len() >= self.tuning.batch_max {
                    self.write(&mut pending);
                }
            }
            self.write(&mut pending);
        }
        let _ = self.conn.execute(
            "DELETE FROM runs WHERE end_ms IS NOT NULL AND end_ms < ?1",
            params![cutoff],
        );
    }
}

/// Rows inserted between two `sched_yield`s (about 0.1–0.2 ms of work).
const YIELD_EVERY: usize = 32;

fn write_rows(conn: &mut Connection, rows: &[Row], anonymize: bool) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let mut ins = tx.prepare_cached(INSERT_QUERY)?;
        let mut ins_cat = tx.prepare_cached(INSERT_CATEGORY)?;
        let mut addr_text: HashMap<IpAddr, String> = HashMap::new();
        for (i, r) in rows.iter().enumerate() {
            // Give the core back often: on a busy core a DNS thread that woke up waits for the
            // writer otherwise (p99 at 20k qps on one shared core: 3.5 ms without, 0.15 ms with;
            // even in SCHED_IDLE, the kernel here did not preempt the writer at once).
            if i % YIELD_EVERY == YIELD_EVERY - 1 {
                crate::sched::yield_now();
            }
            // A batch comes from few clients: format each address once.
            let addr: &str = addr_text.entry(r.addr).or_insert_with(|| {
                if anonymize {
                    anonymize_addr(r.addr).to_string()
                } else {
                    r.addr.to_string()
                }
            });
            let (client, name): (&str, Option<&str>) = match r.client_name.as_deref() {
                Some(n) if !anonymize => (n, Some(n)),
                _ => (addr, None),
            };
            let categories = if r.categories.is_empty() {
                None
            } else {
                Some(
                    r.category_table
                        .names(r.categories)
                        .map(|c| &**c)
                        .collect::<Vec<_>>()
                        .join(","),
                )
            };
            let action = r.action.map(Action::as_str);
            ins.execute(params![
                r.ts_ms,
                client,
                addr,
                name,
                r.group.as_deref(),
                r.name.as_str(),
                qtype_text(r.qtype),
                r.result.as_str(),
                categories,
                r.list.as_deref(),
                action,
                rcode_name(r.rcode),
                r.upstream_ms,
            ])?;
            let id = tx.last_insert_rowid();
            for c in r.category_table.names(r.categories) {
                ins_cat.execute(params![&**c, client, r.ts_ms, id, r.name.as_str(), action])?;
            }
        }
    }
    tx.commit()
}

/// Every category in the log, by a loose index scan.
pub(crate) fn all_categories(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut st = conn.prepare_cached(
        "WITH RECURSIVE c(x) AS ( \
           SELECT (SELECT min(category) FROM query_categories) \
           UNION ALL \
           SELECT (SELECT min(category) FROM query_categories WHERE category > c.x) FROM c \
           WHERE c.x IS NOT NULL) \
         SELECT x FROM c WHERE x IS NOT NULL",
    )?;
    let rows = st.query_map([], |r| r.get(0))?;
    rows.collect()
}

/// Every client with rows in `category`, by a loose scan of the primary key.
pub(crate) fn clients_in_category(
    conn: &Connection,
    category: &str,
) -> rusqlite::Result<Vec<String>> {
    let mut st = conn.prepare_cached(
        "WITH RECURSIVE c(x) AS ( \
           SELECT (SELECT min(client) FROM query_categories WHERE category = ?1) \
           UNION ALL \
           SELECT (SELECT min(client) FROM query_categories WHERE category = ?1 AND client > c.x) \
           FROM c WHERE c.x IS NOT NULL) \
         SELECT x FROM c WHERE x IS NOT NULL",
    )?;
    let rows = st.query_map([category], |r| r.get(0))?;
    rows.collect()
}

fn delete_before(conn: &mut Connection, cutoff: i64) -> rusqlite::Result<u64> {
    let mut pairs = Vec::new();
    for c in all_categories(conn)? {
        for client in clients_in_category(conn, &c)? {
            pairs.push((c.clone(), client));
        }
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    for (c, client) in &pairs {
        tx.execute(
            "DELETE FROM query_categories WHERE category = ?1 AND client = ?2 AND ts_ms < ?3",
            params![c, client, cutoff],
        )?;
    }
    let n = tx.execute("DELETE FROM queries WHERE ts_ms < ?1", params![cutoff])?;
    tx.commit()?;
    Ok(n as u64)
}

fn latest_marks(conn: &Connection) -> rusqlite::Result<Vec<LatestMark>> {
    let mut st = conn.prepare_cached(
        "SELECT m.client, m.id, m.ts_ms, m.note FROM marks m \
         WHERE m.id = (SELECT id FROM marks n WHERE n.client = m.client \
                       ORDER BY n.ts_ms DESC, n.id DESC LIMIT 1) \
         ORDER BY m.client",
    )?;
    let rows = st.query_map([], |r| {
        Ok(LatestMark {
            client: r.get(0)?,
            id: r.get(1)?,
            time_ms: r.get(2)?,
            note: r.get(3)?,
        })
    })?;
    rows.collect()
}

// ---------------------------------------------------------------------------------------------
// Clients on the command line

/// The config's clients: `[[client]]` names and their addresses.
pub type ClientList = [(String, Vec<IpNet>)];
/// An owned [`ClientList`].
pub type OwnedClientList = Vec<(String, Vec<IpNet>)>;

/// What `--client C` selects in the log: C is a configured client name or an address (or, for
/// an anonymized log, a network).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientSelector {
    /// As metrics and marks name it: the configured name, else the address.
    pub label: String,
    /// Values of the `client` column that belong to it.
    pub keys: Vec<String>,
}

impl ClientSelector {
    pub fn resolve(c: &str, clients: &ClientList) -> Result<ClientSelector, CommandError> {
        let c = c.trim();
        let mut keys = Vec::new();
        let push = |keys: &mut Vec<String>, k: String| {
            if !keys.contains(&k) {
                keys.push(k)
            }
        };
        if let Some((name, nets)) = clients.iter().find(|(n, _)| n == c) {
            push(&mut keys, name.clone());
            for net in nets {
                // Rows from before the name was configured, and anonymized rows.
                if net.prefix_len() == net.max_prefix_len() {
                    push(&mut keys, net.addr().to_string());
                }
                let anon_len = if net.addr().is_ipv4() { 24 } else { 56 };
                if net.prefix_len() >= anon_len {
                    push(&mut keys, anonymize_addr(net.addr()).to_string());
                }
            }
            return Ok(ClientSelector {
                label: name.clone(),
                keys,
            });
        }
        if let Ok(addr) = c.parse::<IpAddr>() {
            let addr = addr.to_canonical();
            let label = clients
                .iter()
                .find(|(_, nets)| nets.iter().any(|n| n.contains(&addr)))
                .map(|(n, _)| n.clone())
                .unwrap_or_else(|| addr.to_string());
            push(&mut keys, label.clone());
            push(&mut keys, addr.to_string());
            push(&mut keys, anonymize_addr(addr).to_string());
            return Ok(ClientSelector { label, keys });
        }
        if let Ok(net) = c.parse::<IpNet>() {
            let net = net.trunc().to_string();
            return Ok(ClientSelector {
                label: net.clone(),
                keys: vec![net],
            });
        }
        let known: Vec<&str> = clients.iter().map(|(n, _)| n.as_str()).collect();
        let known = if known.is_empty() {
            "the config names no [[client]]".to_string()
        } else {
            format!("configured clients: {}", known.join(", "))
        };
        Err(CommandError::Usage(format!(
            "unknown client {c:?}: give a [[client]] name from the config or an IP address ({known})"
        )))
    }
}

fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// Looks a mark up: `mark:ID`, or the newest mark of `client` (any client when `None`).
pub(crate) fn find_mark(
    conn: &Connection,
    path: &Path,
    which: MarkRef,
    client: Option<&ClientSelector>,
) -> Result<MarkInfo, CommandError> {
    let e = |err: rusqlite::Error| CommandError::Db(QueryLogError::from_sqlite(path, &err));
    let map = |r: &rusqlite::Row<'_>| -> rusqlite::Result<MarkInfo> {
        let ts: i64 = r.get(1)?;
        Ok(MarkInfo {
            id: r.get(0)?,
            time: timespec::rfc3339_ms(ts),
            time_ms: ts,
            client: r.get(2)?,
            note: r.get(3)?,
        })
    };
    let found = match (which, client) {
        (MarkRef::Id(id), _) => conn
            .query_row(
                "SELECT id, ts_ms, client, note FROM marks WHERE id = ?1",
                [id],
                map,
            )
            .optional()
            .map_err(e)?,
        (MarkRef::Last, Some(sel)) => {
            let sql = format!(
                "SELECT id, ts_ms, client, note FROM marks WHERE client IN ({}) \
                 ORDER BY ts_ms DESC, id DESC LIMIT 1",
                placeholders(sel.keys.len())
            );
            conn.query_row(&sql, params_from_iter(&sel.keys), map)
                .optional()
                .map_err(e)?
        }
        (MarkRef::Last, None) => conn
            .query_row(
                "SELECT id, ts_ms, client, note FROM marks ORDER BY ts_ms DESC, id DESC LIMIT 1",
                [],
                map,
            )
            .optional()
            .map_err(e)?,
    };
    found.ok_or_else(|| {
        let who = client
            .map(|s| format!(" for {}", s.label))
            .unwrap_or_default();
        let what = match which {
            MarkRef::Id(id) => format!("there is no mark {id}"),
            MarkRef::Last => format!("there is no mark{who}"),
        };
        CommandError::Usage(format!(
            "{what} in {}; record one with `telesink mark --client C --note TEXT`, or give the time itself (RFC 3339 or 2h)",
            path.display()
        ))
    })
}

/// An opt-out mark.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MarkInfo {
    pub id: i64,
    pub client: String,
    /// RFC 3339, UTC.
    pub time: String,
    #[serde(skip)]
    pub time_ms: i64,
    pub note: String,
}

// ---------------------------------------------------------------------------------------------
// `telesink mark`

/// `telesink mark --client C --note TEXT`.
#[derive(Clone, Debug)]
pub struct MarkArgs {
    pub client: String,
    pub note: String,
}

/// What `telesink mark` prints: [`MarkReport::render_text`], or serde JSON.
#[derive(Clone, Debug, Serialize)]
pub struct MarkReport {
    #[serde(flatten)]
    pub mark: MarkInfo,
}

impl MarkReport {
    pub fn render_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("serializable")
    }

    pub fn render_text(&self) -> String {
        let m = &self.mark;
        format!(
            "mark {}: {} at {} ({})\nlater: telesink verify --client {} --category CATEGORY --since mark:{}\n",
            m.id,
            m.client,
            timespec::format_local(timespec::from_ms(m.time_ms)),
            m.note,
            shell_word(&m.client),
            m.id
        )
    }
}

fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Records an opt-out mark at the current time (creates the database if needed).
pub fn mark(args: &MarkArgs, db: &Path, clients: &ClientList) -> Result<MarkReport, CommandError> {
    mark_at(args, db, clients, now_ms())
}

/// [`mark`] at a given time (tests).
pub fn mark_at(
    args: &MarkArgs,
    db: &Path,
    clients: &ClientList,
    ts_ms: i64,
) -> Result<MarkReport, CommandError> {
    let sel = ClientSelector::resolve(&args.client, clients)?;
    let note = args.note.trim();
    if note.is_empty() {
        return Err(CommandError::Usage(
            "--note is empty: say what was switched, e.g. --note \"MIUI analytics off\"".into(),
        ));
    }
    let conn = open_rw(db)?;
    conn.execute(
        "INSERT INTO marks (ts_ms, client, note) VALUES (?1, ?2, ?3)",
        params![ts_ms, sel.label, note],
    )
    .map_err(|e| QueryLogError::from_sqlite(db, &e))?;
    Ok(MarkReport {
        mark: MarkInfo {
            id: conn.last_insert_rowid(),
            client: sel.label,
            time: timespec::rfc3339_ms(ts_ms),
            time_ms: ts_ms,
            note: note.to_string(),
        },
    })
}

// ---------------------------------------------------------------------------------------------
// `telesink log`

/// `telesink log [--client C] [--category CAT] [--since T] [--result R] [--limit N]`.
#[derive(Clone, Debug, Default)]
pub struct LogArgs {
    pub client: Option<String>,
    pub category: Option<String>,
    /// `blocked`, `cached`, `forwarded`, `local`, `refused`, `failed`; or an action:
    /// `observed`, `allowed`.
    pub result: Option<String>,
    pub since: Option<TimeSpec>,
    /// Default [`LogArgs::DEFAULT_LIMIT`].
    pub limit: Option<usize>,
}

impl LogArgs {
    pub const DEFAULT_LIMIT: usize = 50;
}

/// One logged query.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LogEntry {
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    #[serde(skip)]
    pub time_ms: i64,
    pub client: String,
    pub client_address: String,
    pub client_name: Option<String>,
    pub group: Option<String>,
    pub name: String,
    #[serde(rename = "type")]
    pub qtype: String,
    pub result: String,
    pub categories: Vec<String>,
    pub list: Option<String>,
    pub action: Option<String>,
    pub rcode: String,
    pub upstream_ms: Option<i64>,
}

/// What `telesink log` prints: [`LogReport::render_text`] or [`LogReport::render_json`].
#[derive(Clone, Debug, Serialize)]
pub struct LogReport {
    /// Newest first.
    pub rows: Vec<LogEntry>,
    /// The limit was reached: older rows match too.
    pub more: bool,
    #[serde(skip)]
    limit: usize,
}

impl LogReport {
    pub fn render_text(&self) -> String {
        if self.rows.is_empty() {
            return "no logged queries match\n".to_string();
        }
        let zone = timespec::local_zone_abbreviation(timespec::from_ms(self.rows[0].time_ms));
        let header = [
            format!("TIME ({zone})"),
            "CLIENT".into(),
            "TYPE".into(),
            "NAME".into(),
            "RESULT".into(),
            "ACTION".into(),
            "CATEGORIES".into(),
        ];
        let cells: Vec<[String; 7]> = self
            .rows
            .iter()
            .map(|r| {
                [
                    timespec::format_local_ms(timespec::from_ms(r.time_ms)),
                    r.client.clone(),
                    r.qtype.clone(),
                    r.name.clone(),
                    r.result.clone(),
                    r.action.clone().unwrap_or_else(|| "-".into()),
                    if r.categories.is_empty() {
                        "-".into()
                    } else {
                        r.categories.join(",")
                    },
                ]
            })
            .collect();
        let mut out = table(&header, &cells, &[]);
        if self.more {
            out.push_str(&format!(
                "(the newest {}; --limit N shows more)\n",
                self.limit
            ));
        }
        out
    }

    /// The rows as a JSON array.
    pub fn render_json(&self) -> String {
        serde_json::to_string_pretty(&self.rows).expect("serializable")
    }
}

/// A plain aligned table: columns separated by two spaces, right-aligned where asked.
pub(crate) fn table<const N: usize>(
    header: &[String; N],
    rows: &[[String; N]],
    right: &[usize],
) -> String {
    let mut width = [0usize; N];
    for row in std::iter::once(header).chain(rows.iter()) {
        for (i, c) in row.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(header).chain(rows.iter()) {
        let mut line = String::new();
        for (i, c) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let pad = width[i] - c.chars().count();
            if right.contains(&i) {
                line.push_str(&" ".repeat(pad));
                line.push_str(c);
            } else {
                line.push_str(c);
                if i + 1 < N {
                    line.push_str(&" ".repeat(pad));
                }
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Most clients `log --category` reads as one key range each.
const MAX_CLIENT_RANGES: usize = 2000;

/// Searches the log, newest first.
pub fn log(args: &LogArgs, db: &Path, clients: &ClientList) -> Result<LogReport, CommandError> {
    log_at(args, db, clients, jiff::Timestamp::now())
}

/// [`log`] with a given "now" (tests).
pub fn log_at(
    args: &LogArgs,
    db: &Path,
    clients: &ClientList,
    now: jiff::Timestamp,
) -> Result<LogReport, CommandError> {
    let sel = args
        .client
        .as_deref()
        .map(|c| ClientSelector::resolve(c, clients))
        .transpose()?;
    let limit = args.limit.unwrap_or(LogArgs::DEFAULT_LIMIT);
    if limit == 0 {
        return Err(CommandError::Usage("--limit must be at least 1".into()));
    }
    enum Filter {
        Result(&'static str),
        Action(&'static str),
    }
    let filter = match args.result.as_deref().map(str::trim) {
        None => None,
        Some(r) => {
            let r = r.to_ascii_lowercase();
            if let Some(q) = QueryResult::ALL.iter().find(|q| q.as_str() == r) {
                Some(Filter::Result(q.as_str()))
            } else if r == "observed" || r == "allowed" {
                Some(Filter::Action(if r == "observed" {
                    "observed"
                } else {
                    "allowed"
                }))
            } else {
                return Err(CommandError::Usage(format!(
                    "unknown --result {r:?}: use blocked, cached, forwarded, local, refused, failed, \
                     or an action: observed, allowed"
                )));
            }
        }
    };
    let conn = open_existing(db)?;
    let since_ms = match &args.since {
        None => None,
        Some(TimeSpec::Mark(m)) => Some(find_mark(&conn, db, *m, sel.as_ref())?.time_ms),
        Some(t) => Some(
            t.resolve(now)
                .ok_or_else(|| CommandError::Usage(format!("cannot resolve --since {t}")))?
                .as_millisecond(),
        ),
    };

    let mut sql = String::from(
        "SELECT q.ts_ms, q.client, q.client_addr, q.client_name, q.grp, q.name, q.qtype, \
         q.result, q.categories, q.list, q.action, q.rcode, q.upstream_ms ",
    );
    let mut params: Vec<rusqlite::types::Value> = Vec::new();
    let mut conds: Vec<String> = Vec::new();
    let tcol;
    if let Some(cat) = &args.category {
        sql.push_str("FROM query_categories c JOIN queries q ON q.id = c.query_id ");
        conds.push("c.category = ?".into());
        params.push(cat.trim().to_string().into());
        tcol = "c";
    } else {
        sql.push_str("FROM queries q ");
        tcol = "q";
    }
    if let Some(sel) = &sel {
        conds.push(format!(
            "{tcol}.client IN ({})",
            placeholders(sel.keys.len())
        ));
        params.extend(sel.keys.iter().map(|k| k.clone().into()));
    } else if let Some(cat) = &args.category {
        // Every client of the category, so that the primary key (category, client, ts_ms) is
        // read as one range per client rather than the whole category.
        // Past a few thousand clients, one scan of the category is cheaper than the list (and
        // stays under SQLite's limit on bound parameters).
        let keys = clients_in_category(&conn, cat.trim())
            .map_err(|e| QueryLogError::from_sqlite(db, &e))?;
        if keys.len() <= MAX_CLIENT_RANGES {
            conds.push(format!("c.client IN ({})", placeholders(keys.len())));
            params.extend(keys.into_iter().map(Into::into));
        }
    }
    if let Some(s) = since_ms {
        conds.push(format!("{tcol}.ts_ms >= ?"));
        params.push(s.into());
    }
    match filter {
        Some(Filter::Result(r)) => {
            conds.push("q.result = ?".into());
            params.push(r.to_string().into());
        }
        Some(Filter::Action(a)) => {
            conds.push("q.action = ?".into());
            params.push(a.to_string().into());
        }
        None => {}
    }
    if !conds.is_empty() {
        sql.push_str("WHERE ");
        sql.push_str(&conds.join(" AND "));
    }
    sql.push_str(&format!(" ORDER BY {tcol}.ts_ms DESC, q.id DESC LIMIT ?"));
    params.push((limit as i64 + 1).into());

    let e = |err: rusqlite::Error| CommandError::Db(QueryLogError::from_sqlite(db, &err));
    let mut st = conn.prepare(&sql).map_err(e)?;
    let mut rows: Vec<LogEntry> = st
        .query_map(params_from_iter(params), |r| {
            let ts: i64 = r.get(0)?;
            let cats: Option<String> = r.get(8)?;
            Ok(LogEntry {
                time: timespec::rfc3339_ms(ts),
                time_ms: ts,
                client: r.get(1)?,
                client_address: r.get(2)?,
                client_name: r.get(3)?,
                group: r.get(4)?,
                name: r.get(5)?,
                qtype: r.get(6)?,
                result: r.get(7)?,
                categories: cats
                    .map(|c| c.split(',').map(str::to_string).collect())
                    .unwrap_or_default(),
                list: r.get(9)?,
                action: r.get(10)?,
                rcode: r.get(11)?,
                upstream_ms: r.get(12)?,
            })
        })
        .map_err(e)?
        .collect::<Result<_, _>>()
        .map_err(e)?;
    let more = rows.len() > limit;
    rows.truncate(limit);
    Ok(LogReport { rows, more, limit })
}

/// Time the log was being written within [from, to): the union of runs, a run that stopped
/// without closing counting up to its last heartbeat.
pub(crate) fn logged_ms(conn: &Connection, from: i64, to: i64, now: i64) -> rusqlite::Result<i64> {
    if to <= from {
        return Ok(0);
    }
    // A run without an end is still going if its heartbeat is recent and no later run started
    // after it; otherwise it stopped (crash, kill -9) at its last heartbeat.
    let mut st = conn.prepare_cached(
        "SELECT start_ms, alive_ms, end_ms, \
                EXISTS (SELECT 1 FROM runs l WHERE l.start_ms > r.alive_ms) \
         FROM runs r WHERE start_ms < ?1 AND mode != 'none' ORDER BY start_ms",
    )?;
    let spans: Vec<(i64, i64)> = st
        .query_map([to], |r| {
            let start: i64 = r.get(0)?;
            let alive: i64 = r.get(1)?;
            let end: Option<i64> = r.get(2)?;
            let superseded: bool = r.get(3)?;
            let end = match end {
                Some(e) => e,
                None if !superseded && alive >= now - RUN_STALE_MS => now.max(alive),
                None => alive,
            };
            Ok((start, end))
        })?
        .collect::<Result<_, _>>()?;
    let mut total = 0;
    let mut cursor = from;
    for (s, e) in spans {
        let s = s.max(cursor);
        let e = e.min(to);
        if e > s {
            total += e - s;
            cursor = e;
        }
    }
    Ok(total)
}

/// Counts per `(name)` of a client's queries in one category: before T, from T on, last seen,
/// and the actions after T.
pub(crate) struct CategoryCounts {
    pub domains: BTreeMap<String, (u64, u64, i64)>,
    pub after_actions: BTreeMap<String, u64>,
}

pub(crate) fn category_counts(
    conn: &Connection,
    sel: &ClientSelector,
    category: &str,
    from: i64,
    split: i64,
    to: i64,
) -> rusqlite::Result<CategoryCounts> {
    let sql = format!(
        "SELECT name, sum(ts_ms < ?2), sum(ts_ms >= ?2), max(ts_ms) FROM query_categories \
         WHERE category = ?1 AND client IN ({}) AND ts_ms >= ?3 AND ts_ms < ?4 GROUP BY name",
        (0..sel.keys.len())
            .map(|i| format!("?{}", i + 5))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut params: Vec<rusqlite::types::Value> = vec![
        category.to_string().into(),
        split.into(),
        from.into(),
        to.into(),
    ];
    params.extend(sel.keys.iter().map(|k| k.clone().into()));
    let mut st = conn.prepare(&sql)?;
    let domains = st
        .query_map(params_from_iter(params.iter()), |r| {
            Ok((
                r.get::<_, String>(0)?,
                (
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, i64>(2)? as u64,
                    r.get::<_, i64>(3)?,
                ),
            ))
        })?
        .collect::<Result<BTreeMap<_, _>, _>>()?;
    let sql = format!(
        "SELECT coalesce(action, 'unknown'), count(*) FROM query_categories \
         WHERE category = ?1 AND client IN ({}) AND ts_ms >= ?2 AND ts_ms < ?3 GROUP BY action",
        (0..sel.keys.len())
            .map(|i| format!("?{}", i + 4))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut params: Vec<rusqlite::types::Value> =
        vec![category.to_string().into(), split.into(), to.into()];
    params.extend(sel.keys.iter().map(|k| k.clone().into()));
    let mut st = conn.prepare(&sql)?;
    let after_actions = st
        .query_map(params_from_iter(params.iter()), |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
        })?
        .collect::<Result<BTreeMap<_, _>, _>>()?;
    Ok(CategoryCounts {
        domains,
        after_actions,
    })
}

/// Categories the log holds for this client (for hints when a category shows nothing).
pub(crate) fn client_categories(
    conn: &Connection,
    sel: &ClientSelector,
) -> rusqlite::Result<Vec<String>> {
    let sql = format!(
        "SELECT EXISTS (SELECT 1 FROM query_categories WHERE category = ?1 AND client IN ({}))",
        (0..sel.keys.len())
            .map(|i| format!("?{}", i + 2))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut st = conn.prepare(&sql)?;
    let mut out = Vec::new();
    for c in all_categories(conn)? {
        let mut p: Vec<rusqlite::types::Value> = vec![c.clone().into()];
        p.extend(sel.keys.iter().map(|k| k.clone().into()));
        if st.query_row(params_from_iter(p), |r| r.get::<_, bool>(0))? {
            out.push(c);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::category::{CategorySet, CategoryTable};
    use crate::events::ClientInfo;

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
            "queries",
            "queries_client_ts",
            "queries_ts",
            "query_categories",
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
                "EXPLAIN QUERY PLAN SELECT name, count(*) FROM query_categories \
                 WHERE category = 'telemetry' AND client IN ('a', 'b') AND ts_ms >= 0 AND ts_ms < 10 \
                 GROUP BY name",
                [],
                |r| r.get(3),
            )
            .unwrap();
        assert!(
            plan.contains("PRIMARY KEY") || plan.contains("INDEX"),
            "{plan}"
        );
    }

    /// A schema-1 log (with the `(category, ts_ms)` index) opens as schema 2: rows kept, the
    /// index gone.
    #[test]
    fn schema_1_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(&format!(
                "{SCHEMA} CREATE INDEX query_categories_ts ON query_categories (category, ts_ms); \
                 INSERT INTO queries (ts_ms, client, client_addr, name, qtype, result, rcode) \
                 VALUES (1, 'a', '10.0.0.1', 'x.example', 'A', 'blocked', 'NOERROR'); \
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
        let log =
            QueryLog::open_with(settings(&path, LogMode::All), fast(), counter(), None).unwrap();
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
        let log = QueryLog::open_with(settings(&path, LogMode::Matched), fast(), counter(), None)
            .unwrap();
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
        let log =
            QueryLog::open_with(settings(&path, LogMode::None), fast(), counter(), None).unwrap();
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
            // 20000 hourly rows, years old: retention needs one slice per hour of rows.
            let mut conn = open_rw(&path).unwrap();
            let tx = conn.transaction().unwrap();
            let old = now_ms() - 5 * 365 * 86_400_000;
            for i in 0..20_000i64 {
                let ts = old + i * 3_600_000;
                tx.execute(
                    "INSERT INTO queries (ts_ms, client, client_addr, name, qtype, result, rcode, \
                     categories) VALUES (?1, 'c', '10.0.0.1', 'x.example', 'A', 'blocked', \
                     'NOERROR', 'telemetry')",
                    [ts],
                )
                .unwrap();
                let id = tx.last_insert_rowid();
                tx.execute(
                    "INSERT INTO query_categories VALUES ('telemetry', 'c', ?1, ?2, 'x.example', 'blocked')",
                    params![ts, id],
                )
                .unwrap();
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
        let err =
            QueryLog::open(settings(&missing_dir, LogMode::All), counter(), None).unwrap_err();
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
        let log = QueryLog::open_with(settings(&path, LogMode::All), fast(), dropped.clone(), None)
            .unwrap();
        // Break the table under the writer.
        let other = Connection::open(&path).unwrap();
        other.execute_batch("DROP TABLE query_categories").unwrap();
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
        let log =
            QueryLog::open_with(settings(&path, LogMode::All), fast(), counter(), None).unwrap();
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
}

#[cfg(test)]
mod cost {
    use super::tests::{client, Fixture};
    use super::*;
    use crate::events::ClientInfo;

    /// CPU time of the writer per row (`write_rows`, batches of 2000, every row matched, on
    /// disk in the temp directory), and per `record` on the DNS side. Run in release:
    /// `cargo test --release querylog::cost -- --ignored --nocapture`.
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
        let t0 = Instant::now();
        for chunk in rows.chunks(2000) {
            write_rows(&mut conn, chunk, false).unwrap();
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
