//! The query log: every answered query (or every one that matched a category) in a SQLite
//! database, and per device a per-minute count of its queries, for `telesink log`, `telesink
//! devices` and `telesink verify`.
//!
//! The DNS path only copies what it keeps into a small message and `try_send`s it on a bounded
//! channel: it never waits on disk. When the channel is full the message is dropped and counted.
//! One writer thread owns the connection and writes in batches, one transaction per batch, in
//! WAL mode so that the commands read while the server writes.
//!
//! The parts, one job each:
//!
//! * [`settings`]: what the server hands over (`[querylog]`) and the writer's intervals;
//! * [`error`]: database and command errors, each saying what to do;
//! * [`schema`]: the tables, their migrations, opening for writing or reading;
//! * [`sink`]: the DNS side ([`QueryLog`], the rows and messages it queues);
//! * [`writer`]: the writer thread, its batches and heartbeats;
//! * [`activity`]: per-device activity (per-minute counts, addresses, last query), written by the
//!   writer in every mode that keeps a database, and its readers;
//! * [`traffic`]: packets to telemetry addresses per device and minute (`[addresses]`);
//! * [`retention`]: deleting what is older than `retention_days`;
//! * [`read`]: the queries `log` and `verify` ask (clients, marks, counts, logged time);
//! * [`town`]: a made-up town's queries, for the benchmark of a big log;
//! * [`commands`]: `telesink mark` and `telesink log` and their rendering.
//! * [`store`]: where the log lives ([`LogLocation`]: SQLite or PostgreSQL) and the questions
//!   `verify` asks of either;
//! * [`postgres`]: the log in PostgreSQL (`[querylog] url`), shared by several replicas.
//!
//! `verify` is in [`crate::verify`].

pub mod activity;
pub mod commands;
pub mod error;
pub mod postgres;
pub mod read;
mod retention;
mod rows;
pub(crate) mod schema;
pub mod settings;
pub mod sink;
pub mod store;
pub mod town;
pub mod traffic;
mod writer;

#[cfg(test)]
mod tests;

pub use activity::{devices, DeviceAddress, DeviceRecord, OrdinaryCounts};
pub use commands::{
    log, log_at, mark, mark_at, LogArgs, LogEntry, LogReport, MarkArgs, MarkReport,
};
pub use error::{CommandError, DbErrorKind, QueryLogError};
pub use read::{ClientList, ClientSelector, MarkInfo, OwnedClientList};
pub use settings::{LatestMark, LogMode, MarksCallback, QueryLogSettings, QueryLogTuning};
pub use sink::{anonymize_addr, start_for_server, QueryLog, QueryLogStats, ShutdownReport};
pub use store::{devices_in, log_in, mark_in, DeviceLookup, LogLocation};

pub(crate) use commands::table;
pub(crate) use read::find_mark;
pub(crate) use schema::open_existing;
#[cfg(test)]
pub(crate) use schema::open_rw;

use std::time::{SystemTime, UNIX_EPOCH};

pub(crate) fn now_ms() -> i64 {
    system_ms(SystemTime::now())
}

pub(crate) fn system_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}
