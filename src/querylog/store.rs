//! Where the log lives ([`LogLocation`]: a SQLite file or a PostgreSQL database) and the
//! questions `verify`, `log` and `mark` ask of it, answered by either back end ([`LogRead`]).
//! The SQLite side calls the functions of [`super::read`] and [`super::activity`] unchanged.

use std::fmt;
use std::path::{Path, PathBuf};

use rusqlite::Connection;

use super::activity::{self, OrdinaryCounts};
use super::commands::{LogArgs, LogReport, MarkArgs, MarkReport};
use super::error::{CommandError, QueryLogError};
use super::postgres::{self, PgUrl};
use super::read::{self, CategoryCounts, ClientList, ClientSelector, MarkInfo};
use super::traffic::{self, TrafficCounts};
use super::DeviceRecord;
use crate::timespec::MarkRef;

/// `[querylog] path` or `[querylog] url`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogLocation {
    Sqlite(PathBuf),
    Postgres(Box<PgUrl>),
}

impl LogLocation {
    /// From the config's `[querylog]`: `url` when set, else `path`.
    pub fn of(config: &crate::config::QueryLogConfig) -> Result<LogLocation, QueryLogError> {
        match &config.url {
            Some(u) => Ok(LogLocation::Postgres(Box::new(PgUrl::parse(u)?))),
            None => Ok(LogLocation::Sqlite(config.path.clone())),
        }
    }
}

impl fmt::Display for LogLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogLocation::Sqlite(p) => write!(f, "{}", p.display()),
            LogLocation::Postgres(u) => write!(f, "{u}"),
        }
    }
}

/// What [`ClientSelector::resolve_in`] asks about the devices a log has seen. A failed read
/// answers "nothing known": it only narrows the selection.
pub trait DeviceLookup {
    fn device_exists(&self, name: &str) -> bool;
    fn device_addresses(&self, name: &str) -> Vec<String>;
    fn device_of_address(&self, addr: &str) -> Option<String>;
    fn device_names(&self) -> Vec<String>;
}

impl DeviceLookup for Connection {
    fn device_exists(&self, name: &str) -> bool {
        activity::device_exists(self, name).unwrap_or(false)
    }
    fn device_addresses(&self, name: &str) -> Vec<String> {
        activity::device_addresses(self, name).unwrap_or_default()
    }
    fn device_of_address(&self, addr: &str) -> Option<String> {
        activity::device_of_address(self, addr).ok().flatten()
    }
    fn device_names(&self) -> Vec<String> {
        activity::device_names(self).unwrap_or_default()
    }
}

/// The questions `verify` asks, of either back end.
pub(crate) trait LogRead: DeviceLookup {
    /// The file or the URL (without password), for reports and errors.
    fn source(&self) -> String;
    fn find_mark(
        &self,
        which: MarkRef,
        client: Option<&ClientSelector>,
    ) -> Result<MarkInfo, CommandError>;
    fn category_counts(
        &self,
        sel: &ClientSelector,
        category: &str,
        from: i64,
        split: i64,
        to: i64,
    ) -> Result<CategoryCounts, QueryLogError>;
    fn logged_ms(&self, from: i64, to: i64, now: i64) -> Result<i64, QueryLogError>;
    fn client_categories(&self, sel: &ClientSelector) -> Result<Vec<String>, QueryLogError>;
    fn ordinary_counts(
        &self,
        sel: &ClientSelector,
        from: i64,
        split: i64,
        to: i64,
    ) -> Result<OrdinaryCounts, QueryLogError>;
    /// Packets to the category's addresses; `None` when the log holds none.
    fn traffic_counts(
        &self,
        sel: &ClientSelector,
        category: &str,
        from: i64,
        split: i64,
        to: i64,
    ) -> Result<Option<TrafficCounts>, QueryLogError>;
}

/// A SQLite query log opened for reading.
pub(crate) struct SqliteLog<'a> {
    pub(crate) conn: &'a Connection,
    pub(crate) path: &'a Path,
}

impl SqliteLog<'_> {
    fn e(&self, err: rusqlite::Error) -> QueryLogError {
        QueryLogError::from_sqlite(self.path, &err)
    }
}

impl DeviceLookup for SqliteLog<'_> {
    fn device_exists(&self, name: &str) -> bool {
        self.conn.device_exists(name)
    }
    fn device_addresses(&self, name: &str) -> Vec<String> {
        self.conn.device_addresses(name)
    }
    fn device_of_address(&self, addr: &str) -> Option<String> {
        self.conn.device_of_address(addr)
    }
    fn device_names(&self) -> Vec<String> {
        DeviceLookup::device_names(self.conn)
    }
}

impl LogRead for SqliteLog<'_> {
    fn source(&self) -> String {
        self.path.display().to_string()
    }
    fn find_mark(
        &self,
        which: MarkRef,
        client: Option<&ClientSelector>,
    ) -> Result<MarkInfo, CommandError> {
        read::find_mark(self.conn, self.path, which, client)
    }
    fn category_counts(
        &self,
        sel: &ClientSelector,
        category: &str,
        from: i64,
        split: i64,
        to: i64,
    ) -> Result<CategoryCounts, QueryLogError> {
        read::category_counts(self.conn, sel, category, from, split, to).map_err(|e| self.e(e))
    }
    fn logged_ms(&self, from: i64, to: i64, now: i64) -> Result<i64, QueryLogError> {
        read::logged_ms(self.conn, from, to, now).map_err(|e| self.e(e))
    }
    fn client_categories(&self, sel: &ClientSelector) -> Result<Vec<String>, QueryLogError> {
        read::client_categories(self.conn, sel).map_err(|e| self.e(e))
    }
    fn ordinary_counts(
        &self,
        sel: &ClientSelector,
        from: i64,
        split: i64,
        to: i64,
    ) -> Result<OrdinaryCounts, QueryLogError> {
        activity::ordinary_counts(self.conn, sel, from, split, to).map_err(|e| self.e(e))
    }
    fn traffic_counts(
        &self,
        sel: &ClientSelector,
        category: &str,
        from: i64,
        split: i64,
        to: i64,
    ) -> Result<Option<TrafficCounts>, QueryLogError> {
        traffic::traffic_counts(self.conn, sel, category, from, split, to).map_err(|e| self.e(e))
    }
}

/// `telesink log` against either back end.
pub fn log_in(
    args: &LogArgs,
    at: &LogLocation,
    clients: &ClientList,
) -> Result<LogReport, CommandError> {
    match at {
        LogLocation::Sqlite(p) => super::log(args, p, clients),
        LogLocation::Postgres(u) => postgres::log_at(args, u, clients, jiff::Timestamp::now()),
    }
}

/// `telesink mark` against either back end.
pub fn mark_in(
    args: &MarkArgs,
    at: &LogLocation,
    clients: &ClientList,
) -> Result<MarkReport, CommandError> {
    match at {
        LogLocation::Sqlite(p) => super::mark(args, p, clients),
        LogLocation::Postgres(u) => postgres::mark_at(args, u, clients, super::now_ms()),
    }
}

/// `telesink devices` against either back end.
pub fn devices_in(at: &LogLocation) -> Result<Vec<DeviceRecord>, CommandError> {
    match at {
        LogLocation::Sqlite(p) => super::devices(p),
        LogLocation::Postgres(u) => postgres::devices(u),
    }
}
