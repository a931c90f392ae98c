//! The DNS side of the query log: [`QueryLog`], the sink the request handler calls, and the
//! messages it queues for the writer. It never waits: a full queue drops and counts.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use ipnet::IpNet;
use rusqlite::params;
use serde::Serialize;

use super::activity::Pending;
use super::error::{DbErrorKind, QueryLogError};
use super::schema::open_rw;
use super::settings::{LatestMark, LogMode, MarksCallback, QueryLogSettings, QueryLogTuning};
use super::writer::{ErrorLimiter, Writer};
use super::{now_ms, system_ms};
use crate::devices::{Mac, NamedBy};
use crate::observe::events::{QueryEvent, QueryResult, QuerySink};
use crate::policy::category::{Action, CategorySet, CategoryTable};

/// What the log keeps of one query, made on the DNS path. It owns no heap memory of its own
/// for a usual name (shared names are reference-counted), so the writer thread, which drops
/// it, never frees into the allocator arena of a DNS thread.
#[derive(Debug)]
pub(super) struct Row {
    pub(super) seen: Seen,
    pub(super) group: Option<Arc<str>>,
    pub(super) name: RowName,
    pub(super) qtype: RecordType,
    pub(super) result: QueryResult,
    pub(super) categories: CategorySet,
    /// Names of `categories`, for the policy generation that answered.
    pub(super) category_table: Arc<CategoryTable>,
    pub(super) list: Option<Arc<str>>,
    pub(super) action: Option<Action>,
    pub(super) rcode: ResponseCode,
    pub(super) upstream_ms: Option<u32>,
}

/// Who asked, and when: all that device activity needs of a query. With `log = "matched"` the
/// DNS path queues only this for a query that matched no category (no heap memory: the name
/// is shared).
#[derive(Clone, Debug)]
pub(super) struct Seen {
    pub(super) ts_ms: i64,
    pub(super) addr: IpAddr,
    pub(super) client_name: Option<Arc<str>>,
    pub(super) named_by: NamedBy,
    pub(super) mac: Option<Mac>,
}

impl Seen {
    pub(super) fn from_event(ev: &QueryEvent<'_>) -> Seen {
        Seen {
            ts_ms: system_ms(ev.time),
            addr: ev.client.addr,
            client_name: ev.client.name.clone(),
            named_by: ev.client.named_by,
            mac: ev.client.mac,
        }
    }
}

impl Row {
    pub(super) fn from_event(ev: &QueryEvent<'_>) -> Row {
        Row {
            seen: Seen::from_event(ev),
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
pub(super) enum RowName {
    Inline {
        len: u8,
        bytes: [u8; RowName::INLINE],
    },
    Boxed(Box<str>),
}

impl RowName {
    const INLINE: usize = 62;

    pub(super) fn new(name: &str) -> RowName {
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

    pub(super) fn as_str(&self) -> &str {
        match self {
            // Copied from a `&str` at a char boundary (the whole string).
            RowName::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..*len as usize]).unwrap_or_default()
            }
            RowName::Boxed(b) => b,
        }
    }
}

pub(super) enum Msg {
    /// A query to log (and count).
    Row(Row),
    /// A query only to count (`log = "matched"`, no category matched).
    Seen(Seen),
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
pub(super) fn qtype_text(t: RecordType) -> Cow<'static, str> {
    match t {
        RecordType::Unknown(n) => Cow::Owned(format!("TYPE{n}")),
        t => Cow::Borrowed(t.into()),
    }
}

#[derive(Debug, Default)]
pub(super) struct Stats {
    pub(super) rows_written: AtomicU64,
    pub(super) batches: AtomicU64,
    pub(super) rows_failed: AtomicU64,
    pub(super) retention_deleted: AtomicU64,
    /// Queries counted in device activity (rows and `Seen`).
    pub(super) activity_counted: AtomicU64,
    /// `Seen` messages dropped on a full queue: device activity undercounts, which can only make
    /// `verify` more cautious.
    pub(super) activity_dropped: AtomicU64,
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
    /// Queries counted in device activity.
    pub activity_counted: u64,
    /// Queries not counted in device activity because the queue was full.
    pub activity_dropped: u64,
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
        if let Some(url) = &settings.postgres {
            return Self::open_postgres(&settings, url, tuning, dropped, on_marks);
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
            activity: Pending::default(),
            batch: Vec::new(),
            stopping: false,
            texts: Default::default(),
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

    /// [`QueryLog::open_with`] for `[querylog] url`: the same queue, a PostgreSQL writer. The
    /// database need not be up yet: the writer connects (and reconnects) by itself, dropping
    /// and counting rows meanwhile.
    fn open_postgres(
        settings: &QueryLogSettings,
        url: &str,
        tuning: QueryLogTuning,
        dropped: prometheus::IntCounter,
        on_marks: Option<MarksCallback>,
    ) -> Result<QueryLog, QueryLogError> {
        let url = super::postgres::PgUrl::parse(url)?;
        let shown = PathBuf::from(url.to_string());
        let dropped_at_start = dropped.get();
        let (tx, rx) = mpsc::sync_channel(settings.queue_size.max(1));
        let stats = Arc::new(Stats::default());
        let mut writer = super::postgres::writer::PgWriter::new(
            url,
            rx,
            tuning,
            settings.mode,
            settings.anonymize,
            i64::from(settings.retention_days) * 86_400_000,
            on_marks,
            stats.clone(),
            dropped.clone(),
        );
        let handle = std::thread::Builder::new()
            .name("querylog-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| {
                QueryLogError::new(
                    &shown,
                    DbErrorKind::Other,
                    format!("cannot start the writer thread: {e}"),
                )
            })?;
        Ok(QueryLog {
            path: shown,
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
                activity_counted: a.stats.activity_counted.load(Ordering::Relaxed),
                activity_dropped: a.stats.activity_dropped.load(Ordering::Relaxed),
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
    let path = match &settings.postgres {
        // Shown without its password.
        Some(url) => super::postgres::PgUrl::parse(url)
            .map(|u| PathBuf::from(u.to_string()))
            .unwrap_or_default(),
        None => settings.path.clone(),
    };
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
        a.inflight.fetch_add(1, Ordering::SeqCst);
        if a.closed.load(Ordering::SeqCst) {
            a.inflight.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        // `matched` logs no row for an ordinary query, but its device activity still counts it.
        let msg = if a.matched_only && ev.categories.is_empty() {
            Msg::Seen(Seen::from_event(ev))
        } else {
            Msg::Row(Row::from_event(ev))
        };
        match a.tx.try_send(msg) {
            Ok(()) => {}
            Err(TrySendError::Full(m)) | Err(TrySendError::Disconnected(m)) => match m {
                Msg::Seen(_) => {
                    a.stats.activity_dropped.fetch_add(1, Ordering::Relaxed);
                }
                _ => self.dropped.inc(),
            },
        }
        a.inflight.fetch_sub(1, Ordering::SeqCst);
    }
}
