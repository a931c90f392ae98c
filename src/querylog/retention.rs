//! Deleting what is older than `retention_days`: rows, device activity, devices and addresses
//! not seen since, and closed runs.

use std::sync::atomic::Ordering;

use rusqlite::{params, Connection};

use super::error::QueryLogError;
use super::now_ms;
use super::writer::Writer;

/// Clients (or devices) whose old rows one transaction deletes: about 50 × a day of a
/// client's rows, tens of milliseconds, after which the queue is written.
const KEYS_PER_TRANSACTION: usize = 50;

impl Writer {
    /// Deletes rows older than the retention, client by client (one range of the primary key
    /// each), a few clients per transaction so that queued rows are written in between.
    pub(super) fn retention(&mut self) {
        if self.retention_ms <= 0 {
            return;
        }
        let cutoff = now_ms() - self.retention_ms;
        let started = std::time::Instant::now();
        let deleted_before = self.stats.retention_deleted.load(Ordering::Relaxed);
        let minute_cutoff = cutoff.div_euclid(60_000);
        let report = |w: &mut Writer, e: rusqlite::Error, what: &str| {
            w.errors
                .report(&QueryLogError::from_sqlite(&w.path, &e), what);
        };
        let steps: [(&str, &str, i64); 2] = [
            (
                "query_rows",
                "DELETE FROM query_rows WHERE client = ?1 AND ts_ms < ?2",
                cutoff,
            ),
            (
                "device_minutes",
                "DELETE FROM device_minutes WHERE device = ?1 AND minute < ?2",
                minute_cutoff,
            ),
        ];
        for (table, delete, before) in steps {
            let keys = match distinct_keys(&self.conn, table) {
                Ok(k) => k,
                Err(e) => {
                    report(self, e, "deleting old rows");
                    return;
                }
            };
            for chunk in keys.chunks(KEYS_PER_TRANSACTION) {
                match delete_keys(&mut self.conn, delete, chunk, before) {
                    Ok(n) if table == "query_rows" => {
                        self.stats.retention_deleted.fetch_add(n, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        report(self, e, "deleting old rows");
                        return;
                    }
                }
                // Keep the queue moving between slices. A `Stop` taken here ends the work:
                // the rest is deleted at the next start.
                self.drain();
                self.write();
                if self.stopping {
                    return;
                }
            }
        }
        if let Err(e) = delete_devices_before(&self.conn, cutoff) {
            report(self, e, "deleting old devices");
        }
        let _ = self.conn.execute(
            "DELETE FROM runs WHERE end_ms IS NOT NULL AND end_ms < ?1",
            params![cutoff],
        );
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

/// The first key column's values of `table` (`client` or `device`), one seek each.
fn distinct_keys(conn: &Connection, table: &str) -> rusqlite::Result<Vec<i64>> {
    let col = if table == "query_rows" {
        "client"
    } else {
        "device"
    };
    let mut st = conn.prepare_cached(&format!(
        "WITH RECURSIVE k(x) AS ( \
           SELECT (SELECT min({col}) FROM {table}) \
           UNION ALL \
           SELECT (SELECT min({col}) FROM {table} WHERE {col} > k.x) FROM k WHERE k.x IS NOT NULL) \
         SELECT x FROM k WHERE x IS NOT NULL"
    ))?;
    let rows = st.query_map([], |r| r.get(0))?;
    rows.collect()
}

fn delete_keys(
    conn: &mut Connection,
    delete: &str,
    keys: &[i64],
    before: i64,
) -> rusqlite::Result<u64> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut n = 0;
    {
        let mut st = tx.prepare_cached(delete)?;
        for k in keys {
            n += st.execute(params![k, before])? as u64;
        }
    }
    tx.commit()?;
    Ok(n)
}

/// Addresses and devices last seen before `cutoff`. Small tables (a row per device and
/// address): one statement each.
fn delete_devices_before(conn: &Connection, cutoff: i64) -> rusqlite::Result<()> {
    conn.execute(
        "DELETE FROM device_addresses WHERE last_ms < ?1",
        params![cutoff],
    )?;
    conn.execute("DELETE FROM devices WHERE last_ms < ?1", params![cutoff])?;
    Ok(())
}
