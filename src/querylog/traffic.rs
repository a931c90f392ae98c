//! Packets to telemetry addresses (SPEC "Telemetry addresses"), per device, category,
//! destination and minute, next to the per-device query activity: what `verify` reads to say
//! whether a device's traffic, not only its DNS, stopped. The table exists only in logs written
//! while telesink counted packets (`[addresses] nftables`); its rows come every few seconds, a
//! handful at a time, so they take their own connection instead of the query writer's queue.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use rusqlite::{params, Connection};

use super::error::QueryLogError;
use super::read::ClientSelector;
use super::schema::open_rw;
use super::sink::anonymize_addr;
use crate::addresses::traffic::{TrafficRow, TrafficSink};

const TRAFFIC_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS traffic (
    device   TEXT NOT NULL,     -- the device's name, else its address (its network when anonymized)
    minute   INTEGER NOT NULL,  -- of the reading: to_ms / 60000
    category TEXT NOT NULL,
    address  TEXT NOT NULL,     -- where the packets went
    action   TEXT NOT NULL,     -- counted, dropped
    packets  INTEGER NOT NULL,
    from_ms  INTEGER NOT NULL,  -- the packets were sent after this (the previous reading) ...
    to_ms    INTEGER NOT NULL,  -- ... and before this (the reading)
    PRIMARY KEY (device, category, minute, address, action)
) WITHOUT ROWID;
";

/// How often rows older than the retention are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

fn ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The writer of the `traffic` table.
pub struct TrafficLog {
    path: PathBuf,
    conn: Mutex<(Connection, Instant)>,
    anonymize: bool,
    retention_days: u32,
}

impl TrafficLog {
    /// Opens the query log at `path` (creating it and the table if needed).
    pub fn open(
        path: &Path,
        anonymize: bool,
        retention_days: u32,
    ) -> Result<TrafficLog, QueryLogError> {
        let conn = open_rw(path)?;
        conn.execute_batch(TRAFFIC_SCHEMA)
            .map_err(|e| QueryLogError::from_sqlite(path, &e))?;
        Ok(TrafficLog {
            path: path.to_path_buf(),
            conn: Mutex::new((conn, Instant::now())),
            anonymize,
            retention_days,
        })
    }

    fn write(&self, rows: &[TrafficRow]) -> rusqlite::Result<()> {
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let (conn, pruned) = &mut *guard;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO traffic (device, minute, category, address, action, packets, from_ms, to_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT DO UPDATE SET packets = packets + excluded.packets,
                     from_ms = min(from_ms, excluded.from_ms), to_ms = max(to_ms, excluded.to_ms)",
            )?;
            for r in rows {
                // Unnamed devices are keyed by address, like the `client` column of `queries`.
                let device = if self.anonymize && *r.client == r.client_address.to_string() {
                    anonymize_addr(r.client_address).to_string()
                } else {
                    r.client.to_string()
                };
                let to = ms(r.time);
                stmt.execute(params![
                    device,
                    to / 60_000,
                    &*r.category,
                    r.address.to_string(),
                    r.action.as_str(),
                    r.packets as i64,
                    ms(r.since),
                    to
                ])?;
            }
        }
        if pruned.elapsed() >= PRUNE_EVERY {
            *pruned = Instant::now();
            let cutoff = ms(SystemTime::now()) - i64::from(self.retention_days) * 86_400_000;
            tx.execute("DELETE FROM traffic WHERE to_ms < ?1", params![cutoff])?;
        }
        tx.commit()
    }
}

impl TrafficSink for TrafficLog {
    fn traffic(&self, rows: &[TrafficRow]) {
        if let Err(e) = self.write(rows) {
            tracing::warn!("{}", QueryLogError::from_sqlite(&self.path, &e));
        }
    }
}

/// A device's packets to one address of a category, before and after T.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressPackets {
    pub address: IpAddr,
    pub before: u64,
    pub after: u64,
}

/// A device's packets to a category's addresses around T; `None` from [`traffic_counts`] when
/// the log holds no packet counts at all (telesink did not count).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrafficCounts {
    /// Sent in [baseline_start, since).
    pub before: u64,
    /// Sent in [since, until).
    pub after: u64,
    /// Counted in a reading that spans T (a few seconds): on neither side.
    pub spanning: u64,
    /// Most packets first.
    pub addresses: Vec<AddressPackets>,
}

/// Packets of the device `sel` to `category`'s addresses, before and after `since_ms`.
pub fn traffic_counts(
    conn: &Connection,
    sel: &ClientSelector,
    category: &str,
    baseline_start_ms: i64,
    since_ms: i64,
    until_ms: i64,
) -> rusqlite::Result<Option<TrafficCounts>> {
    let exists: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'traffic'",
        [],
        |r| r.get(0),
    )?;
    if exists == 0 {
        return Ok(None);
    }
    let mut keys: Vec<&str> = sel.keys.iter().map(String::as_str).collect();
    keys.push(&sel.label);
    let mut out = TrafficCounts::default();
    let mut stmt = conn.prepare_cached(
        "SELECT address, packets, from_ms, to_ms FROM traffic
         WHERE device = ?1 AND category = ?2 AND to_ms > ?3 AND from_ms < ?4",
    )?;
    for key in keys.iter().collect::<std::collections::BTreeSet<_>>() {
        let rows = stmt.query_map(params![key, category, baseline_start_ms, until_ms], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        for row in rows {
            let (address, packets, from, to) = row?;
            let Ok(address) = address.parse::<IpAddr>() else {
                continue;
            };
            let packets = packets.max(0) as u64;
            let slot = match out.addresses.iter_mut().position(|a| a.address == address) {
                Some(i) => &mut out.addresses[i],
                None => {
                    out.addresses.push(AddressPackets {
                        address,
                        before: 0,
                        after: 0,
                    });
                    out.addresses.last_mut().unwrap()
                }
            };
            if from >= since_ms {
                out.after += packets;
                slot.after += packets;
            } else if to <= since_ms {
                out.before += packets;
                slot.before += packets;
            } else {
                out.spanning += packets;
            }
        }
    }
    out.addresses.retain(|a| a.before + a.after > 0);
    out.addresses.sort_by(|a, b| {
        (b.after, b.before)
            .cmp(&(a.after, a.before))
            .then(a.address.cmp(&b.address))
    });
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addresses::PacketAction;
    use std::sync::Arc;

    fn row(client: &str, addr: &str, packets: u64, since_ms: u64, at_ms: u64) -> TrafficRow {
        let t = |ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
        TrafficRow {
            since: t(since_ms),
            time: t(at_ms),
            client: Arc::from(client),
            client_address: "192.0.2.50".parse().unwrap(),
            category: Arc::from("telemetry"),
            address: addr.parse().unwrap(),
            packets,
            action: PacketAction::Counted,
        }
    }

    #[test]
    fn packets_before_after_and_spanning_t() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        let log = TrafficLog::open(&path, false, 30).unwrap();
        let t = 1_800_000_000_000u64;
        log.traffic(&[
            row("phone", "203.0.113.5", 4, t - 65_000, t - 60_000),
            row("phone", "203.0.113.5", 1, t - 60_000, t - 55_000),
            row("phone", "203.0.113.5", 2, t - 3_000, t + 2_000),
            row("phone", "203.0.113.6", 3, t + 2_000, t + 7_000),
            row("tv", "203.0.113.5", 9, t + 2_000, t + 7_000),
        ]);
        let conn = Connection::open(&path).unwrap();
        let sel = ClientSelector {
            label: "phone".into(),
            keys: vec!["phone".into()],
        };
        let t = t as i64;
        let c = traffic_counts(&conn, &sel, "telemetry", t - 3_600_000, t, t + 60_000)
            .unwrap()
            .unwrap();
        assert_eq!((c.before, c.after, c.spanning), (5, 3, 2));
        assert_eq!(
            c.addresses,
            vec![
                AddressPackets {
                    address: "203.0.113.6".parse().unwrap(),
                    before: 0,
                    after: 3
                },
                AddressPackets {
                    address: "203.0.113.5".parse().unwrap(),
                    before: 5,
                    after: 0
                },
            ]
        );
        // A log written without counting has no table: no packet evidence at all.
        let other = dir.path().join("other.db");
        drop(crate::querylog::schema::open_rw(&other).unwrap());
        let conn = Connection::open(&other).unwrap();
        assert_eq!(
            traffic_counts(&conn, &sel, "telemetry", 0, 1, 2).unwrap(),
            None
        );
    }
}
