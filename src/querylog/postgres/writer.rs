//! The writer thread for PostgreSQL: the same queue and batching as the SQLite writer, and a
//! connection that may come and go. While there is none, batches are dropped and counted, a
//! warning says so (once a minute at most), and a reconnect is tried before each batch, at
//! most every [`RECONNECT_EVERY`].

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::batch::RowBatch;
use super::{PgStore, PgUrl};
use crate::querylog::activity::{MinuteOut, Pending};
use crate::querylog::error::QueryLogError;
use crate::querylog::now_ms;
use crate::querylog::settings::{LatestMark, LogMode, MarksCallback, QueryLogTuning};
use crate::querylog::sink::{Msg, Row, Stats};
use crate::querylog::writer::ErrorLimiter;

/// Shortest pause between two connection attempts.
const RECONNECT_EVERY: Duration = Duration::from_secs(2);

/// A live connection and the run it writes.
struct Live {
    store: PgStore,
    run_id: i64,
}

pub(in crate::querylog) struct PgWriter {
    pub(in crate::querylog) url: PgUrl,
    pub(in crate::querylog) rx: Receiver<Msg>,
    pub(in crate::querylog) tuning: QueryLogTuning,
    pub(in crate::querylog) mode: LogMode,
    pub(in crate::querylog) anonymize: bool,
    pub(in crate::querylog) retention_ms: i64,
    pub(in crate::querylog) on_marks: Option<MarksCallback>,
    pub(in crate::querylog) stats: Arc<Stats>,
    pub(in crate::querylog) dropped: prometheus::IntCounter,
    live: Option<Live>,
    next_connect: Instant,
    /// The last connection failed (or broke): say when it is back.
    lost: bool,
    errors: ErrorLimiter,
    last_marks: Option<Vec<LatestMark>>,
    batch: Vec<Row>,
    activity: Pending,
    stopping: bool,
}

impl crate::querylog::writer::Batches for PgWriter {
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
        PgWriter::take(self, msg)
    }
    fn drain(&mut self) -> usize {
        PgWriter::drain(self)
    }
    fn write(&mut self) {
        PgWriter::write(self)
    }
    fn heartbeat(&mut self) {
        PgWriter::heartbeat(self)
    }
    fn retention(&mut self) {
        PgWriter::retention(self)
    }
}

impl PgWriter {
    #[allow(clippy::too_many_arguments)]
    pub(in crate::querylog) fn new(
        url: PgUrl,
        rx: Receiver<Msg>,
        tuning: QueryLogTuning,
        mode: LogMode,
        anonymize: bool,
        retention_ms: i64,
        on_marks: Option<MarksCallback>,
        stats: Arc<Stats>,
        dropped: prometheus::IntCounter,
    ) -> PgWriter {
        PgWriter {
            url,
            rx,
            tuning,
            mode,
            anonymize,
            retention_ms,
            on_marks,
            stats,
            dropped,
            live: None,
            next_connect: Instant::now(),
            lost: false,
            errors: ErrorLimiter::default(),
            last_marks: None,
            batch: Vec::new(),
            activity: Pending::default(),
            stopping: false,
        }
    }

    pub(in crate::querylog) fn run(&mut self) {
        crate::sched::background("query-log writer");
        self.connect();
        crate::querylog::writer::serve(self);
        if let Some(live) = self.live.take() {
            if let Err(e) = live.store.end_run(live.run_id, now_ms()) {
                self.errors.report(&e, "closing");
            }
        }
    }

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

    fn drain(&mut self) -> usize {
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

    /// Connects (and starts a run) unless connected or a recent attempt failed.
    fn connect(&mut self) {
        if self.live.as_ref().is_some_and(|l| !l.store.is_closed()) {
            return;
        }
        if self.live.take().is_some() {
            self.lost(None);
        }
        if Instant::now() < self.next_connect {
            return;
        }
        self.next_connect = Instant::now() + RECONNECT_EVERY;
        let attempt = PgStore::connect(&self.url).and_then(|store| {
            let run_id = store.begin_run(self.mode, self.anonymize, now_ms())?;
            Ok(Live { store, run_id })
        });
        match attempt {
            Ok(live) => {
                if self.lost {
                    tracing::warn!(
                        "query log {}: connected again; rows are written again",
                        self.url
                    );
                } else {
                    tracing::info!("query log {}: connected", self.url);
                }
                self.lost = false;
                self.live = Some(live);
            }
            Err(e) => self.lost(Some(&e)),
        }
    }

    /// The connection is gone (or could not be made).
    fn lost(&mut self, err: Option<&QueryLogError>) {
        if !self.lost {
            let why = err
                .map(|e| e.message.as_str())
                .unwrap_or("the connection closed");
            tracing::warn!(
                "query log {}: the database cannot be reached ({why}); DNS is answered as \
                 usual, rows are dropped and counted in telesink_querylog_dropped_total, and \
                 telesink reconnects every {} s",
                self.url,
                RECONNECT_EVERY.as_secs()
            );
            self.lost = true;
        } else if let Some(e) = err {
            self.errors.report(e, "reconnecting");
        }
    }

    fn write(&mut self) {
        if self.batch.is_empty() && self.activity.is_empty() {
            return;
        }
        let n = self.batch.len() as u64;
        let counted = self.activity.queries();
        self.connect();
        let result = match &mut self.live {
            None => Err(None),
            Some(live) => {
                let rows = RowBatch::from_rows(&self.batch, self.anonymize);
                live.store.write_batch(&rows, &self.activity).map_err(Some)
            }
        };
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
                match e {
                    Some(e) if self.live.as_ref().is_some_and(|l| l.store.is_closed()) => {
                        self.live = None;
                        self.lost(Some(&e));
                    }
                    Some(e) => {
                        // A statement that failed or timed out on an open connection: start
                        // afresh (a new connection and run) rather than trust its state.
                        self.live = None;
                        self.errors
                            .report(&e, &format!("writing {n} rows, which are dropped"));
                    }
                    None => self.errors.report(
                        &self
                            .url
                            .error(crate::querylog::DbErrorKind::CannotOpen, "not connected"),
                        &format!("writing {n} rows, which are dropped"),
                    ),
                }
            }
        }
        self.batch.clear();
        self.activity.clear();
    }

    fn heartbeat(&mut self) {
        self.connect();
        let Some(live) = &self.live else { return };
        if let Err(e) = live.store.heartbeat(live.run_id, now_ms()) {
            self.errors.report(&e, "recording that it runs");
            return;
        }
        if self.on_marks.is_some() {
            match live.store.latest_marks() {
                Ok(marks) => {
                    if self.last_marks.as_ref() != Some(&marks) {
                        if let Some(cb) = self.on_marks.as_mut() {
                            cb(&marks);
                        }
                        self.last_marks = Some(marks);
                    }
                }
                Err(e) => self.errors.report(&e, "reading marks"),
            }
        }
    }

    fn retention(&mut self) {
        if self.retention_ms <= 0 {
            return;
        }
        self.connect();
        let cutoff = now_ms() - self.retention_ms;
        let started = std::time::Instant::now();
        let deleted_before = self.stats.retention_deleted.load(Ordering::Relaxed);
        // An hour of rows per statement, the queue written in between.
        loop {
            let Some(live) = &self.live else { return };
            let upto = match live.store.oldest_ms() {
                Ok(Some(o)) if o < cutoff => (o + 3_600_000).min(cutoff),
                Ok(_) => cutoff,
                Err(e) => {
                    self.errors.report(&e, "deleting old rows");
                    return;
                }
            };
            match live.store.delete_rows_before(upto) {
                Ok(n) => {
                    self.stats.retention_deleted.fetch_add(n, Ordering::Relaxed);
                }
                Err(e) => {
                    self.errors.report(&e, "deleting old rows");
                    return;
                }
            }
            if upto >= cutoff {
                break;
            }
            self.drain();
            self.write();
            if self.stopping {
                return;
            }
        }
        if let Some(live) = &self.live {
            if let Err(e) = live.store.delete_activity_before(cutoff) {
                self.errors.report(&e, "deleting old device activity");
            }
        }
        let deleted = self.stats.retention_deleted.load(Ordering::Relaxed) - deleted_before;
        if deleted > 0 {
            tracing::info!(
                "query log retention: deleted {deleted} rows older than {} days in {:.3} s",
                self.retention_ms / 86_400_000,
                started.elapsed().as_secs_f64()
            );
        }
    }
}

impl PgStore {
    /// Writes the writer's batch: rows and the device activity counted with them, in one
    /// transaction.
    pub(in crate::querylog) fn write_batch(
        &mut self,
        rows: &RowBatch,
        activity: &Pending,
    ) -> Result<(), QueryLogError> {
        let (minutes, devices, addresses) = activity.export();
        let client = &mut self.client;
        let fut = async move {
            let tx = client.transaction().await?;
            super::batch::insert_rows(&tx, rows).await?;
            if !minutes.is_empty() {
                let col = |f: fn(&MinuteOut) -> i64| minutes.iter().map(f).collect::<Vec<i64>>();
                let device: Vec<&str> = minutes.iter().map(|m| m.0.as_str()).collect();
                let ord_first: Vec<Option<i64>> = minutes.iter().map(|m| m.6).collect();
                let ord_last: Vec<Option<i64>> = minutes.iter().map(|m| m.7).collect();
                let (minute, total, first, last, ordinary, seconds) = (
                    col(|m| m.1),
                    col(|m| m.2),
                    col(|m| m.3),
                    col(|m| m.4),
                    col(|m| m.5),
                    col(|m| m.8),
                );
                tx.execute(
                    "INSERT INTO activity AS a (device, minute, total, first_ms, last_ms, ordinary, \
                       ord_first_ms, ord_last_ms, ord_seconds) \
                     SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], \
                       $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[]) \
                     ON CONFLICT (device, minute) DO UPDATE SET \
                       total = a.total + excluded.total, \
                       first_ms = least(a.first_ms, excluded.first_ms), \
                       last_ms = greatest(a.last_ms, excluded.last_ms), \
                       ordinary = a.ordinary + excluded.ordinary, \
                       ord_first_ms = least(a.ord_first_ms, excluded.ord_first_ms), \
                       ord_last_ms = greatest(a.ord_last_ms, excluded.ord_last_ms), \
                       ord_seconds = a.ord_seconds | excluded.ord_seconds",
                    &[&device, &minute, &total, &first, &last, &ordinary, &ord_first, &ord_last, &seconds],
                )
                .await?;
            }
            if !devices.is_empty() {
                let device: Vec<&str> = devices.iter().map(|d| d.0.as_str()).collect();
                let named_by: Vec<&str> = devices.iter().map(|d| d.1).collect();
                let mac: Vec<Option<&str>> = devices.iter().map(|d| d.2.as_deref()).collect();
                let first: Vec<i64> = devices.iter().map(|d| d.3).collect();
                let last: Vec<i64> = devices.iter().map(|d| d.4).collect();
                tx.execute(
                    "INSERT INTO devices AS d (device, named_by, mac, first_ms, last_ms) \
                     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[]) \
                     ON CONFLICT (device) DO UPDATE SET \
                       named_by = CASE WHEN excluded.last_ms >= d.last_ms THEN excluded.named_by \
                                  ELSE d.named_by END, \
                       mac = CASE WHEN excluded.last_ms >= d.last_ms THEN coalesce(excluded.mac, d.mac) \
                             ELSE coalesce(d.mac, excluded.mac) END, \
                       first_ms = least(d.first_ms, excluded.first_ms), \
                       last_ms = greatest(d.last_ms, excluded.last_ms)",
                    &[&device, &named_by, &mac, &first, &last],
                )
                .await?;
                let device: Vec<&str> = addresses.iter().map(|a| a.0.as_str()).collect();
                let addr: Vec<&str> = addresses.iter().map(|a| a.1.as_str()).collect();
                let first: Vec<i64> = addresses.iter().map(|a| a.2).collect();
                let last: Vec<i64> = addresses.iter().map(|a| a.3).collect();
                tx.execute(
                    "INSERT INTO device_addresses AS d (device, addr, first_ms, last_ms) \
                     SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[]) \
                     ON CONFLICT (device, addr) DO UPDATE SET \
                       first_ms = least(d.first_ms, excluded.first_ms), \
                       last_ms = greatest(d.last_ms, excluded.last_ms)",
                    &[&device, &addr, &first, &last],
                )
                .await?;
            }
            tx.commit().await
        };
        let url = &self.url;
        self.rt
            .block_on(async { tokio::time::timeout(super::STATEMENT_TIMEOUT, fut).await })
            .map_err(|_| url.timeout("writing rows"))?
            .map_err(|e| url.pg_error(&e))
    }

    fn oldest_ms(&self) -> Result<Option<i64>, QueryLogError> {
        let row = self.run(
            "deleting old rows",
            self.client.query_one("SELECT min(ts_ms) FROM queries", &[]),
        )?;
        Ok(row.get(0))
    }

    fn delete_rows_before(&self, cutoff: i64) -> Result<u64, QueryLogError> {
        self.run(
            "deleting old rows",
            self.client
                .execute("DELETE FROM queries WHERE ts_ms < $1", &[&cutoff]),
        )
    }

    fn delete_activity_before(&self, cutoff: i64) -> Result<(), QueryLogError> {
        let minute = cutoff.div_euclid(60_000);
        self.run(
            "deleting old device activity",
            self.client.batch_execute(&format!(
                "DELETE FROM activity WHERE minute < {minute}; \
                 DELETE FROM device_addresses WHERE last_ms < {cutoff}; \
                 DELETE FROM devices WHERE last_ms < {cutoff}; \
                 DELETE FROM runs WHERE end_ms IS NOT NULL AND end_ms < {cutoff};"
            )),
        )
    }
}
