//! What the server hands the query log (`[querylog]`), and the writer's intervals.

use std::path::PathBuf;
use std::time::Duration;

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
    /// `[querylog] url`: write to this PostgreSQL database instead of `path`.
    pub postgres: Option<String>,
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
