//! The query log in PostgreSQL (`[querylog] url`): one database that several replicas write and
//! that `verify`, `log`, `mark` and `devices` read, with the same answers as from SQLite.
//!
//! The DNS path is the same as with SQLite ([`super::sink`]): a bounded queue, drops counted. The
//! writer thread ([`writer`]) takes the queue in batches and writes each as one transaction
//! (rows by one `INSERT … SELECT FROM unnest(…)`, device activity by upserts). While the
//! database cannot be reached it keeps taking the queue, drops and counts what it cannot
//! write, warns, and reconnects; each connection is a run in `runs`, so time without a
//! connection is not counted as logged.
//!
//! The parts: [`schema`] (tables and their creation), [`batch`] (the rows of a batch and the
//! fast write path, public for bulk fillers: [`PgStore::write_rows`]), [`writer`], [`read`]
//! (what `verify` asks), [`commands`] (`log`, `mark`, `devices`).

pub mod batch;
pub mod commands;
mod read;
pub(crate) mod schema;
pub(super) mod writer;

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio_postgres::{Client, NoTls};

pub use batch::{LogRow, RowBatch};
pub use commands::{devices, log_at, mark_at};

use super::error::{DbErrorKind, QueryLogError};
use super::settings::LogMode;

/// How long one connection attempt or one statement may take before the connection is given up
/// (and, in the server, the writer reconnects).
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A `postgres://` URL, parsed; shown without its password.
#[derive(Clone)]
pub struct PgUrl {
    config: tokio_postgres::Config,
    shown: String,
}

impl PartialEq for PgUrl {
    fn eq(&self, other: &Self) -> bool {
        self.shown == other.shown && self.config.get_password() == other.config.get_password()
    }
}
impl Eq for PgUrl {}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgUrl({})", self.shown)
    }
}

impl fmt::Display for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl PgUrl {
    /// Parses a `postgres://` or `postgresql://` URL (the config checked it already).
    pub fn parse(url: &str) -> Result<PgUrl, QueryLogError> {
        let url = url.trim();
        let bad = |msg: String| {
            QueryLogError::new(Path::new("[querylog] url"), DbErrorKind::CannotOpen, msg)
        };
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(bad(format!(
                "{url:?} is not a PostgreSQL URL; expected postgres://USER@HOST/DATABASE"
            )));
        }
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| bad(format!("not a valid PostgreSQL URL ({e})")))?;
        // As libpq does: a password kept out of the config file (a Kubernetes Secret, a
        // compose variable) comes from PGPASSWORD.
        if config.get_password().is_none() {
            if let Some(p) = std::env::var_os("PGPASSWORD").filter(|p| !p.is_empty()) {
                config.password(p.as_encoded_bytes());
            }
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.application_name("telesink");
        let shown = shown(&config);
        Ok(PgUrl { config, shown })
    }

    /// As an error's "path": the URL without password.
    fn as_path(&self) -> &Path {
        Path::new(&self.shown)
    }

    pub(crate) fn error(&self, kind: DbErrorKind, msg: impl Into<String>) -> QueryLogError {
        QueryLogError::new(self.as_path(), kind, msg)
    }

    /// Classifies a driver error and says what to do.
    pub(crate) fn pg_error(&self, e: &tokio_postgres::Error) -> QueryLogError {
        let detail = match e.as_db_error() {
            Some(db) => format!("{}: {}", db.severity(), db.message()),
            None => {
                let mut s = e.to_string();
                let mut src = std::error::Error::source(e);
                while let Some(inner) = src {
                    s.push_str(": ");
                    s.push_str(&inner.to_string());
                    src = inner.source();
                }
                s
            }
        };
        if e.as_db_error().is_some() {
            self.error(DbErrorKind::Other, detail)
        } else {
            self.error(
                DbErrorKind::CannotOpen,
                format!(
                    "cannot reach the database ({detail}); check [querylog] url and that PostgreSQL \
                     runs and accepts telesink's user from here"
                ),
            )
        }
    }

    fn timeout(&self, what: &str) -> QueryLogError {
        self.error(
            DbErrorKind::Other,
            format!(
                "no answer within {} s while {what}; is the database overloaded or the network down?",
                STATEMENT_TIMEOUT.as_secs()
            ),
        )
    }
}

fn shown(c: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let mut s = String::from("postgres://");
    if let Some(u) = c.get_user() {
        s.push_str(u);
        s.push('@');
    }
    let hosts: Vec<String> = c
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let h = match h {
                Host::Tcp(h) => h.clone(),
                Host::Unix(p) => p.display().to_string(),
            };
            match c.get_ports().get(i).or(c.get_ports().first()) {
                Some(p) => format!("{h}:{p}"),
                None => h,
            }
        })
        .collect();
    s.push_str(&hosts.join(","));
    s.push('/');
    s.push_str(c.get_dbname().unwrap_or(""));
    s
}

/// A connection to the log's database, usable from plain threads (it has its own small
/// runtime). The commands and the writer use it; so can a bulk filler:
///
/// ```no_run
/// use telesink::querylog::postgres::{LogRow, PgStore, PgUrl, RowBatch};
/// use telesink::querylog::LogMode;
/// let url = PgUrl::parse("postgres://telesink@db/telesink").unwrap();
/// let mut store = PgStore::connect(&url).unwrap();
/// let run = store.begin_run(LogMode::All, false, 0).unwrap();
/// let mut batch = RowBatch::default();
/// // batch.push(&LogRow { ... }) for up to some 10 000 rows, then:
/// store.write_rows(&batch).unwrap();
/// store.end_run(run, 1).unwrap();
/// ```
pub struct PgStore {
    rt: Runtime,
    client: Client,
    url: PgUrl,
}

impl PgStore {
    /// Connects and creates (or checks) the tables, as `telesink run` and `telesink mark` do.
    pub fn connect(url: &PgUrl) -> Result<PgStore, QueryLogError> {
        let store = Self::connect_only(url)?;
        store.block("creating the tables", schema::migrate(&store.client, url))??;
        Ok(store)
    }

    /// Connects to a database that must already hold a query log (`log`, `verify`).
    pub(crate) fn open_existing(url: &PgUrl) -> Result<PgStore, QueryLogError> {
        let store = Self::connect_only(url)?;
        store.block(
            "reading the schema",
            schema::check_existing(&store.client, url),
        )??;
        Ok(store)
    }

    fn connect_only(url: &PgUrl) -> Result<PgStore, QueryLogError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| url.error(DbErrorKind::Other, format!("cannot start a runtime: {e}")))?;
        let client = rt.block_on(async {
            let (client, connection) = url
                .config
                .connect(NoTls)
                .await
                .map_err(|e| url.pg_error(&e))?;
            // Drives the socket; it ends when the connection does (the client then reports
            // `is_closed`).
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!("query log connection ended: {e}");
                }
            });
            Ok::<_, QueryLogError>(client)
        })?;
        Ok(PgStore {
            rt,
            client,
            url: url.clone(),
        })
    }

    pub fn url(&self) -> &PgUrl {
        &self.url
    }

    /// False once the server closed the connection (or it broke): reconnect.
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Runs `f` on this store's runtime, giving up after [`STATEMENT_TIMEOUT`].
    fn block<T>(&self, what: &str, f: impl Future<Output = T>) -> Result<T, QueryLogError> {
        self.rt
            .block_on(async { tokio::time::timeout(STATEMENT_TIMEOUT, f).await })
            .map_err(|_| self.url.timeout(what))
    }

    /// Runs a query future that returns a driver result.
    fn run<T>(
        &self,
        what: &str,
        f: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, QueryLogError> {
        self.block(what, f)?.map_err(|e| self.url.pg_error(&e))
    }

    /// Writes a batch of rows in one transaction (one `INSERT … SELECT FROM unnest(…)`); the
    /// fast path for a bulk filler. Returns how many rows it wrote. Device activity is not
    /// derived from them: `verify` counts ordinary queries from the rows of runs with
    /// `log = "all"` (see [`PgStore::begin_run`]).
    pub fn write_rows(&mut self, rows: &RowBatch) -> Result<u64, QueryLogError> {
        let (client, url) = (&mut self.client, &self.url);
        let fut = async move {
            let tx = client.transaction().await?;
            let n = batch::insert_rows(&tx, rows).await?;
            tx.commit().await?;
            Ok(n)
        };
        self.rt
            .block_on(async { tokio::time::timeout(STATEMENT_TIMEOUT, fut).await })
            .map_err(|_| url.timeout("writing rows"))?
            .map_err(|e: tokio_postgres::Error| url.pg_error(&e))
    }

    /// Records that the log is written from `start_ms` on (what `verify` counts as logged
    /// time); returns the run's id for [`PgStore::end_run`] and heartbeats.
    pub fn begin_run(
        &self,
        mode: LogMode,
        anonymize: bool,
        start_ms: i64,
    ) -> Result<i64, QueryLogError> {
        let mode = match mode {
            LogMode::All => "all",
            LogMode::Matched => "matched",
            LogMode::None => "none",
        };
        let row = self.run(
            "recording a run",
            self.client.query_one(
                "INSERT INTO runs (start_ms, alive_ms, mode, anonymize) VALUES ($1, $1, $2, $3) \
                 RETURNING id",
                &[&start_ms, &mode, &anonymize],
            ),
        )?;
        Ok(row.get(0))
    }

    /// Records that the run is alive at `alive_ms`.
    pub fn heartbeat(&self, run: i64, alive_ms: i64) -> Result<(), QueryLogError> {
        self.run(
            "recording that it runs",
            self.client.execute(
                "UPDATE runs SET alive_ms = $1 WHERE id = $2",
                &[&alive_ms, &run],
            ),
        )?;
        Ok(())
    }

    /// Records that the run ended at `end_ms`.
    pub fn end_run(&self, run: i64, end_ms: i64) -> Result<(), QueryLogError> {
        self.run(
            "closing the run",
            self.client.execute(
                "UPDATE runs SET alive_ms = $1, end_ms = $1 WHERE id = $2",
                &[&end_ms, &run],
            ),
        )?;
        Ok(())
    }
}
