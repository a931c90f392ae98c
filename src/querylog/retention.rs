//! Deleting what is older than `retention_days`: rows, device activity, devices and addresses
//! not seen since, and closed runs.

use std::sync::atomic::Ordering;

use rusqlite::{params, Connection};

use super::error::QueryLogError;
use super::now_ms;
use super::read::{all_categories, clients_in_category};
use super::writer::Writer;

impl Writer {
    /// Deletes rows older than the retention, an hour of rows per transaction so that queued
    /// rows are written in between.
    pub(super) fn retention(&mut self) {
        if self.retention_ms <= 0 {
            return;
        }
        let cutoff = now_ms() - self.retention_ms;
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
            // Keep the queue moving between slices. A `Stop` taken here ends the work: the rest
            // is deleted at the next start.
            self.drain();
            self.write();
            if self.stopping {
                break;
            }
        }
        if let Err(e) = delete_activity_before(&self.conn, cutoff) {
            self.errors.report(
                &QueryLogError::from_sqlite(&self.path, &e),
                "deleting old device activity",
            );
        }
        let _ = self.conn.execute(
            "DELETE FROM runs WHERE end_ms IS NOT NULL AND end_ms < ?1",
            params![cutoff],
        );
    }
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

/// Device activity, addresses and devices last seen before `cutoff`. Small tables (a row per
/// device and minute at most): one statement each.
fn delete_activity_before(conn: &Connection, cutoff: i64) -> rusqlite::Result<()> {
    conn.execute(
        "DELETE FROM activity WHERE minute < ?1",
        params![cutoff.div_euclid(60_000)],
    )?;
    conn.execute(
        "DELETE FROM device_addresses WHERE last_ms < ?1",
        params![cutoff],
    )?;
    conn.execute("DELETE FROM devices WHERE last_ms < ?1", params![cutoff])?;
    Ok(())
}
