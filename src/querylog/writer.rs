//! The writer thread: takes what the DNS path queued, writes rows and device activity in
//! batches (one transaction each), records that the log runs, and reports the newest marks.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, Transaction};

use super::activity::Pending;
use super::error::QueryLogError;
use super::now_ms;
use super::read::latest_marks;
pub(super) use super::rows::TextIds;
use super::rows::{insert_row, Kind, RowFields};
use super::settings::{LatestMark, MarksCallback, QueryLogTuning};
use super::sink::{anonymize_addr, Msg, Row, Stats};

/// Logs a repeating error at most once a minute, with how many were left out.
#[derive(Default)]
pub(super) struct ErrorLimiter {
    last: Option<Instant>,
    suppressed: u64,
}

impl ErrorLimiter {
    pub(super) fn report(&mut self, err: &QueryLogError, what: &str) {
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

/// The writer thread's state; it alone holds the read-write connection.
pub(super) struct Writer {
    pub(super) conn: Connection,
    pub(super) path: PathBuf,
    pub(super) rx: Receiver<Msg>,
    pub(super) tuning: QueryLogTuning,
    pub(super) anonymize: bool,
    pub(super) retention_ms: i64,
    pub(super) run_id: i64,
    pub(super) on_marks: Option<MarksCallback>,
    pub(super) last_marks: Option<Vec<LatestMark>>,
    pub(super) stats: Arc<Stats>,
    pub(super) dropped: prometheus::IntCounter,
    pub(super) errors: ErrorLimiter,
    /// Rows waiting for the next transaction.
    pub(super) batch: Vec<Row>,
    /// Device activity counted since the last transaction.
    pub(super) activity: Pending,
    /// A `Stop` was taken: finish what is queued and end.
    pub(super) stopping: bool,
    /// Ids of the strings the rows refer to.
    pub(super) texts: TextIds,
}

/// The part of a query-log writer that the batching loop drives (SQLite's [`Writer`], and
/// PostgreSQL's).
pub(super) trait Batches {
    fn queue(&self) -> &Receiver<Msg>;
    fn tuning(&self) -> &QueryLogTuning;
    /// A `Stop` was taken.
    fn stopping(&self) -> bool;
    /// One message; false: end now.
    fn take(&mut self, msg: Msg) -> bool;
    /// Everything queued; how many messages.
    fn drain(&mut self) -> usize;
    fn write(&mut self);
    fn heartbeat(&mut self);
    fn retention(&mut self);
}

/// The writer's loop, for either back end: heartbeat and retention on time, the queue parked on
/// while idle and drained in batches while rows flow; at the end, what is left written.
pub(super) fn serve(w: &mut impl Batches) {
    let mut next_heartbeat = Instant::now();
    let mut next_retention = Instant::now();
    while !w.stopping() {
        let now = Instant::now();
        if now >= next_heartbeat {
            w.heartbeat();
            next_heartbeat = now + w.tuning().heartbeat;
        }
        if now >= next_retention {
            w.retention();
            next_retention = now + w.tuning().retention_every;
            if w.stopping() {
                break;
            }
        }
        let wait = next_heartbeat
            .min(next_retention)
            .saturating_duration_since(Instant::now());
        // Park on the queue only while it is idle: a parked writer costs every sender a
        // wake-up (a system call on the DNS path). Once rows flow, sleep between batches
        // instead and take everything that arrived in the meantime.
        match w.queue().recv_timeout(wait) {
            Ok(msg) => {
                if !w.take(msg) {
                    break;
                }
            }
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => continue,
        }
        loop {
            std::thread::sleep(w.tuning().batch_wait);
            let took = w.drain();
            w.write();
            if w.stopping() || took == 0 || Instant::now() >= next_heartbeat.min(next_retention) {
                break;
            }
        }
    }
    // Stop is behind every accepted message, but take anything left all the same.
    while let Ok(msg) = w.queue().try_recv() {
        w.take(msg);
    }
    w.write();
}

impl Batches for Writer {
    fn queue(&self) -> &Receiver<Msg> {
        &self.rx
    }
    fn tuning(&self) -> &QueryLogTuning {
        &self.tuning
    }
    fn stopping(&self) -> bool {
        self.stopping
    }
    fn take(&mut self, msg: Msg) -> bool {
        Writer::take(self, msg)
    }
    fn drain(&mut self) -> usize {
        Writer::drain(self)
    }
    fn write(&mut self) {
        Writer::write(self)
    }
    fn heartbeat(&mut self) {
        Writer::heartbeat(self)
    }
    fn retention(&mut self) {
        Writer::retention(self)
    }
}

impl Writer {
    pub(super) fn run(&mut self) {
        // Answers come first: on a busy core rows wait in the queue (or, when it is full, are
        // dropped and counted) rather than queries waiting for the writer.
        crate::sched::background("query-log writer");
        serve(self);
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

    /// Takes one message: a row joins the batch (written when full), every query counts in
    /// device activity. False for `Stop`.
    fn take(&mut self, msg: Msg) -> bool {
        match msg {
            Msg::Row(r) => {
                self.activity
                    .add(&r.seen, r.categories.is_empty(), self.anonymize);
                self.batch.push(r);
                if self.batch.len() >= self.tuning.batch_max {
                    self.write();
                }
                true
            }
            Msg::Seen(s) => {
                self.activity.add(&s, true, self.anonymize);
                true
            }
            Msg::Stop => false,
        }
    }

    /// Takes everything queued now, up to a `Stop` (which sets `stopping`: every message that
    /// must be written is ahead of it). Returns how many messages it took.
    pub(super) fn drain(&mut self) -> usize {
        let mut took = 0;
        loop {
            match self.rx.try_recv() {
                Ok(msg) => {
                    took += 1;
                    if !self.take(msg) {
                        self.stopping = true;
                        break;
                    }
                }
                Err(TryRecvError::Disconnected) => {
                    self.stopping = true;
                    break;
                }
                Err(TryRecvError::Empty) => break,
            }
        }
        took
    }

    /// Writes the batch and the activity counted so far, in one transaction.
    pub(super) fn write(&mut self) {
        if self.batch.is_empty() && self.activity.is_empty() {
            return;
        }
        let n = self.batch.len() as u64;
        let counted = self.activity.queries();
        let (conn, batch, activity, anonymize) =
            (&mut self.conn, &self.batch, &self.activity, self.anonymize);
        let result = write_batch(conn, &mut self.texts, batch, activity, anonymize);
        match result {
            Ok(()) => {
                self.stats.rows_written.fetch_add(n, Ordering::Relaxed);
                self.stats.batches.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .activity_counted
                    .fetch_add(counted, Ordering::Relaxed);
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
        self.batch.clear();
        self.activity.clear();
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
}

/// Writes rows and the activity counted with them in one transaction: the server's writer and
/// the benchmark's town ([`super::town`]) both write through here.
pub(super) fn write_batch(
    conn: &mut Connection,
    texts: &mut TextIds,
    rows: &[Row],
    activity: &Pending,
    anonymize: bool,
) -> rusqlite::Result<()> {
    let result = (|| {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        write_rows(&tx, texts, rows, anonymize)?;
        activity.write(&tx, texts)?;
        tx.commit()
    })();
    if result.is_err() {
        // Ids handed out in a transaction that rolled back are gone.
        texts.clear();
    }
    result
}

/// Rows inserted between two `sched_yield`s (about 0.1–0.2 ms of work).
const YIELD_EVERY: usize = 32;

pub(super) fn write_rows(
    tx: &Transaction<'_>,
    texts: &mut TextIds,
    rows: &[Row],
    anonymize: bool,
) -> rusqlite::Result<()> {
    let mut addr_text: HashMap<IpAddr, String> = HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        // Give the core back often: on a busy core a DNS thread that woke up waits for the
        // writer otherwise (p99 at 20k qps on one shared core: 3.5 ms without, 0.15 ms with;
        // even in SCHED_IDLE, the kernel here did not preempt the writer at once).
        if i % YIELD_EVERY == YIELD_EVERY - 1 {
            crate::sched::yield_now();
        }
        // A batch comes from few clients: format each address once.
        let addr: &str = addr_text.entry(r.seen.addr).or_insert_with(|| {
            if anonymize {
                anonymize_addr(r.seen.addr).to_string()
            } else {
                r.seen.addr.to_string()
            }
        });
        let (client, client_name): (&str, Option<&str>) = match r.seen.client_name.as_deref() {
            Some(n) if !anonymize => (n, Some(n)),
            _ => (addr, None),
        };
        let categories = if r.categories.is_empty() {
            None
        } else {
            let mut names = r.category_table.names(r.categories);
            match (names.next(), names.next()) {
                (Some(one), None) => Some(Cow::Borrowed(&**one)),
                _ => Some(Cow::Owned(
                    r.category_table
                        .names(r.categories)
                        .map(|c| &**c)
                        .collect::<Vec<_>>()
                        .join(","),
                )),
            }
        };
        insert_row(
            tx,
            texts,
            &RowFields {
                client,
                ts_ms: r.seen.ts_ms,
                addr,
                client_name,
                group: r.group.as_deref(),
                name: r.name.as_str(),
                kind: Kind::new(r.qtype.into(), r.result, r.action, r.rcode.into()),
                categories,
                list: r.list.as_deref(),
                upstream_ms: r.upstream_ms.map(i64::from),
            },
        )?;
    }
    Ok(())
}
