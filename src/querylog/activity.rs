//! Device activity: per device and minute, how many queries it sent and how many of them were
//! ordinary (matched no category); every device with how it was named, its MAC, and every
//! address it used. Kept in every log mode that opens a database (`all` and `matched`), so that
//! `verify` can tell a device that stopped phoning home from one that stopped asking telesink,
//! and `telesink devices` can list what was seen.
//!
//! The writer aggregates in memory ([`Pending`]) and adds it to the tables in the same
//! transaction as its batch of rows; a device's key is its name, else its address (its network
//! when anonymized, and then no MAC is kept).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use ipnet::IpNet;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::Serialize;

use super::error::{CommandError, QueryLogError};
use super::read::ClientSelector;
use super::rows::{id_list, text_ids, TextIds};
use super::schema::open_existing;
use super::sink::{anonymize_addr, Seen};
use crate::devices::{Mac, NamedBy};
use crate::timespec;

const MINUTE_MS: i64 = 60_000;

/// How a device is keyed in the tables.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum DeviceKey {
    Name(Arc<str>),
    Addr(IpAddr),
    /// Anonymized: the address's /24 or /56.
    Net(IpNet),
}

impl DeviceKey {
    fn text(&self) -> String {
        match self {
            DeviceKey::Name(n) => n.to_string(),
            DeviceKey::Addr(a) => a.to_string(),
            DeviceKey::Net(n) => n.to_string(),
        }
    }
}

/// One device-minute's counts.
#[derive(Clone, Copy, Debug)]
struct Minute {
    total: u64,
    first_ms: i64,
    last_ms: i64,
    ordinary: u64,
    ord_first_ms: i64,
    ord_last_ms: i64,
    /// Bit s: an ordinary query in second s of the minute.
    ord_seconds: u64,
}

/// What the writer learnt about one device since its last transaction.
#[derive(Debug)]
struct DeviceSeen {
    named_by: NamedBy,
    mac: Option<Mac>,
    first_ms: i64,
    last_ms: i64,
    /// Address (or network when anonymized) → (first, last).
    addrs: HashMap<DeviceKey, (i64, i64)>,
}

/// Activity counted by the writer and not yet written.
#[derive(Debug, Default)]
pub(super) struct Pending {
    minutes: HashMap<(DeviceKey, i64), Minute>,
    devices: HashMap<DeviceKey, DeviceSeen>,
    queries: u64,
}

impl Pending {
    /// Counts one query of the device `seen` describes.
    pub(super) fn add(&mut self, seen: &Seen, ordinary: bool, anonymize: bool) {
        let ts = seen.ts_ms;
        let (key, addr_key) = if anonymize {
            let net = anonymize_addr(seen.addr);
            (DeviceKey::Net(net), DeviceKey::Net(net))
        } else {
            let addr = seen.addr.to_canonical();
            let key = match &seen.client_name {
                Some(n) => DeviceKey::Name(n.clone()),
                None => DeviceKey::Addr(addr),
            };
            (key, DeviceKey::Addr(addr))
        };
        self.queries += 1;
        let m = self
            .minutes
            .entry((key.clone(), ts.div_euclid(MINUTE_MS)))
            .or_insert(Minute {
                total: 0,
                first_ms: ts,
                last_ms: ts,
                ordinary: 0,
                ord_first_ms: ts,
                ord_last_ms: ts,
                ord_seconds: 0,
            });
        m.total += 1;
        m.first_ms = m.first_ms.min(ts);
        m.last_ms = m.last_ms.max(ts);
        if ordinary {
            if m.ordinary == 0 {
                (m.ord_first_ms, m.ord_last_ms) = (ts, ts);
            }
            m.ordinary += 1;
            m.ord_first_ms = m.ord_first_ms.min(ts);
            m.ord_last_ms = m.ord_last_ms.max(ts);
            m.ord_seconds |= 1 << (ts.rem_euclid(MINUTE_MS) / 1000);
        }
        let (named_by, mac) = if anonymize {
            (NamedBy::Address, None)
        } else {
            (seen.named_by, seen.mac)
        };
        let d = self.devices.entry(key).or_insert_with(|| DeviceSeen {
            named_by,
            mac,
            first_ms: ts,
            last_ms: ts,
            addrs: HashMap::new(),
        });
        if ts >= d.last_ms {
            // The newest query says how the device is named now.
            d.named_by = named_by;
            d.mac = mac.or(d.mac);
        }
        d.first_ms = d.first_ms.min(ts);
        d.last_ms = d.last_ms.max(ts);
        let a = d.addrs.entry(addr_key).or_insert((ts, ts));
        a.0 = a.0.min(ts);
        a.1 = a.1.max(ts);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.queries == 0
    }

    /// Queries counted since the last [`Pending::clear`].
    pub(super) fn queries(&self) -> u64 {
        self.queries
    }

    pub(super) fn clear(&mut self) {
        self.minutes.clear();
        self.devices.clear();
        self.queries = 0;
    }

    /// Adds what was counted to the tables.
    pub(super) fn write(&self, tx: &Transaction<'_>, texts: &mut TextIds) -> rusqlite::Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        let mut minute = tx.prepare_cached(
            "INSERT INTO device_minutes (device, minute, total, first_off, last_off, ordinary, \
             ord_first_after, ord_last_before, ord_seconds) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
             ON CONFLICT (device, minute) DO UPDATE SET \
               total = total + excluded.total, \
               first_off = min(first_off, excluded.first_off), \
               last_off = max(last_off, excluded.last_off), \
               ordinary = ordinary + excluded.ordinary, \
               ord_first_after = CASE \
                   WHEN ord_first_after IS NULL THEN excluded.first_off + excluded.ord_first_after \
                   WHEN excluded.ord_first_after IS NULL THEN first_off + ord_first_after \
                   ELSE min(first_off + ord_first_after, \
                            excluded.first_off + excluded.ord_first_after) END \
                 - min(first_off, excluded.first_off), \
               ord_last_before = max(last_off, excluded.last_off) - CASE \
                   WHEN ord_last_before IS NULL THEN excluded.last_off - excluded.ord_last_before \
                   WHEN excluded.ord_last_before IS NULL THEN last_off - ord_last_before \
                   ELSE max(last_off - ord_last_before, \
                            excluded.last_off - excluded.ord_last_before) END, \
               ord_seconds = ((ord_seconds << (first_off / 1000)) \
                   | (excluded.ord_seconds << (excluded.first_off / 1000))) \
                 >> (min(first_off, excluded.first_off) / 1000)",
        )?;
        // Keys are formatted once per device, not per minute.
        let mut text: HashMap<&DeviceKey, String> = HashMap::new();
        let mut ids: HashMap<&DeviceKey, i64> = HashMap::new();
        for ((key, m), c) in &self.minutes {
            let id = match ids.get(key) {
                Some(id) => *id,
                None => {
                    let k: &str = text.entry(key).or_insert_with(|| key.text());
                    let id = texts.id(tx, k)?;
                    ids.insert(key, id);
                    id
                }
            };
            let base = m * MINUTE_MS;
            // The ordinary queries' first and last as distances from the minute's first and
            // last (0, which costs no byte, when they are the same query), their seconds
            // counted from the first query's second (a burst's few bits, not up to 60).
            let (of, ol) = if c.ordinary > 0 {
                (
                    Some(c.ord_first_ms - c.first_ms),
                    Some(c.last_ms - c.ord_last_ms),
                )
            } else {
                (None, None)
            };
            let first_second = (c.first_ms - base) / 1000;
            minute.execute(params![
                id,
                m,
                c.total as i64,
                c.first_ms - base,
                c.last_ms - base,
                c.ordinary as i64,
                of,
                ol,
                (c.ord_seconds >> first_second) as i64
            ])?;
        }
        let mut device = tx.prepare_cached(
            "INSERT INTO devices (device, named_by, mac, first_ms, last_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (device) DO UPDATE SET \
               named_by = CASE WHEN excluded.last_ms >= last_ms THEN excluded.named_by ELSE named_by END, \
               mac = CASE WHEN excluded.last_ms >= last_ms THEN coalesce(excluded.mac, mac) \
                     ELSE coalesce(mac, excluded.mac) END, \
               first_ms = min(first_ms, excluded.first_ms), \
               last_ms = max(last_ms, excluded.last_ms)",
        )?;
        let mut address = tx.prepare_cached(
            "INSERT INTO device_addresses (device, addr, first_ms, last_ms) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (device, addr) DO UPDATE SET \
               first_ms = min(first_ms, excluded.first_ms), \
               last_ms = max(last_ms, excluded.last_ms)",
        )?;
        for (key, d) in &self.devices {
            let k: &str = text.entry(key).or_insert_with(|| key.text());
            device.execute(params![
                k,
                d.named_by.as_str(),
                d.mac.map(|m| m.to_string()),
                d.first_ms,
                d.last_ms
            ])?;
            for (addr, (first, last)) in &d.addrs {
                address.execute(params![k, addr.text(), first, last])?;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Readers

fn parse_named_by(s: &str) -> NamedBy {
    match s {
        "config address" => NamedBy::ConfigAddress,
        "config mac" => NamedBy::ConfigMac,
        "lease" => NamedBy::Lease,
        "device id" => NamedBy::DeviceId,
        _ => NamedBy::Address,
    }
}

/// An address a device used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeviceAddress {
    /// An IPv4 or IPv6 address; a network when the log is anonymized.
    pub address: String,
    /// RFC 3339, UTC.
    pub first_seen: String,
    pub last_seen: String,
    #[serde(skip)]
    pub last_seen_ms: i64,
}

/// A device the log has seen, for `telesink devices`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeviceRecord {
    /// Its name, else its address.
    pub name: String,
    /// How it was named, as of its newest query.
    #[serde(serialize_with = "ser_named_by")]
    pub named_by: NamedBy,
    pub mac: Option<Mac>,
    /// Newest first.
    pub addresses: Vec<DeviceAddress>,
    /// RFC 3339, UTC: its first query in the log.
    pub first_seen: String,
    /// RFC 3339, UTC: its last query.
    pub last_query: String,
    #[serde(skip)]
    pub first_seen_ms: i64,
    #[serde(skip)]
    pub last_query_ms: i64,
}

fn ser_named_by<S: serde::Serializer>(v: &NamedBy, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v.as_str())
}

/// Every device in the query log at `db`, most recently active first.
pub fn devices(db: &Path) -> Result<Vec<DeviceRecord>, CommandError> {
    let conn = open_existing(db)?;
    read_devices(&conn).map_err(|e| CommandError::Db(QueryLogError::from_sqlite(db, &e)))
}

pub(crate) fn read_devices(conn: &Connection) -> rusqlite::Result<Vec<DeviceRecord>> {
    let mut st = conn.prepare(
        "SELECT device, named_by, mac, first_ms, last_ms FROM devices ORDER BY last_ms DESC, device",
    )?;
    let mut out: Vec<DeviceRecord> = st
        .query_map([], |r| {
            let mac: Option<String> = r.get(2)?;
            let first: i64 = r.get(3)?;
            let last: i64 = r.get(4)?;
            Ok(DeviceRecord {
                name: r.get(0)?,
                named_by: parse_named_by(&r.get::<_, String>(1)?),
                mac: mac.and_then(|m| m.parse().ok()),
                addresses: Vec::new(),
                first_seen: timespec::rfc3339_ms(first),
                last_query: timespec::rfc3339_ms(last),
                first_seen_ms: first,
                last_query_ms: last,
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut st = conn.prepare_cached(
        "SELECT addr, first_ms, last_ms FROM device_addresses WHERE device = ?1 \
         ORDER BY last_ms DESC, addr",
    )?;
    for d in &mut out {
        d.addresses = st
            .query_map([&d.name], |r| {
                let first: i64 = r.get(1)?;
                let last: i64 = r.get(2)?;
                Ok(DeviceAddress {
                    address: r.get(0)?,
                    first_seen: timespec::rfc3339_ms(first),
                    last_seen: timespec::rfc3339_ms(last),
                    last_seen_ms: last,
                })
            })?
            .collect::<Result<_, _>>()?;
    }
    Ok(out)
}

/// Whether the log knows a device of that name (named by a MAC or a lease, say, not only by
/// the config's addresses).
pub(crate) fn device_exists(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM devices WHERE device = ?1)",
        [name],
        |r| r.get(0),
    )
}

/// Every address the device used.
pub(crate) fn device_addresses(conn: &Connection, name: &str) -> rusqlite::Result<Vec<String>> {
    let mut st = conn.prepare_cached(
        "SELECT addr FROM device_addresses WHERE device = ?1 ORDER BY last_ms DESC",
    )?;
    let rows = st.query_map([name], |r| r.get(0))?;
    rows.collect()
}

/// The named device that used `addr` most recently, if any.
pub(crate) fn device_of_address(conn: &Connection, addr: &str) -> rusqlite::Result<Option<String>> {
    let mut st = conn.prepare_cached(
        "SELECT device FROM device_addresses WHERE addr = ?1 AND device != addr \
         ORDER BY last_ms DESC LIMIT 1",
    )?;
    let mut rows = st.query_map([addr], |r| r.get::<_, String>(0))?;
    rows.next().transpose()
}

/// Names of the devices the log knows that are not addresses (for hints).
pub(crate) fn device_names(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut st = conn.prepare_cached("SELECT device FROM devices ORDER BY device")?;
    let rows = st.query_map([], |r| r.get::<_, String>(0))?;
    Ok(rows
        .collect::<Result<Vec<String>, _>>()?
        .into_iter()
        .filter(|d| d.parse::<IpAddr>().is_err() && d.parse::<IpNet>().is_err())
        .collect())
}

/// A device's ordinary (uncategorised) queries around T, for `verify`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OrdinaryCounts {
    /// In the baseline [B, T): exact, or at most this many.
    pub before: u64,
    /// In [T, U): exact, or at least this many.
    pub after: u64,
    /// Its last query (of any kind) before U, or a time at or before it.
    pub last_query_ms: Option<i64>,
    /// True when counted from logged rows (`log = "all"` throughout); false when from the
    /// per-minute counts.
    pub exact: bool,
}

/// The device's ordinary queries in [from, split) and [split, to), and its last query before
/// `to`.
///
/// When every run of the log that overlaps [from, to) kept every query (`log = "all"`), the
/// counts come from the rows and are exact. Otherwise they come from the per-minute counts: a
/// minute wholly on one side counts there; a minute that spans `split` (or an end) is split by
/// the first and last ordinary query in it, and its unknown middle counts against the verdict
/// STOPPED needs: the baseline takes the most it could hold, the window after T the least.
pub(crate) fn ordinary_counts(
    conn: &Connection,
    sel: &ClientSelector,
    from: i64,
    split: i64,
    to: i64,
) -> rusqlite::Result<OrdinaryCounts> {
    let partial_runs: i64 = conn.query_row(
        "SELECT count(*) FROM runs WHERE start_ms < ?1 AND (end_ms IS NULL OR end_ms > ?2) \
         AND mode != 'all'",
        params![to, from],
        |r| r.get(0),
    )?;
    let any_run: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM runs WHERE start_ms < ?1 AND (end_ms IS NULL OR end_ms > ?2))",
        params![to, from],
        |r| r.get(0),
    )?;
    let exact = partial_runs == 0 && any_run;

    let devices = text_ids(conn, &sel.keys)?;
    // The last query before `to`: from the device's newest minute before it (a lower bound
    // when the minute spans `to`).
    let mut last_query_ms: Option<i64> = None;
    {
        let mut st = conn.prepare_cached(
            "SELECT CASE WHEN minute * 60000 + last_off < ?1 THEN minute * 60000 + last_off \
                    ELSE minute * 60000 + first_off END FROM device_minutes \
             WHERE device = ?3 AND minute <= ?2 AND minute * 60000 + first_off < ?1 \
             ORDER BY minute DESC LIMIT 1",
        )?;
        for d in &devices {
            let t: Option<i64> = st
                .query_row(params![to, to.div_euclid(MINUTE_MS), d], |r| r.get(0))
                .optional()?;
            last_query_ms = last_query_ms.max(t);
        }
    }

    if exact {
        let clients = id_list(&devices);
        let (before, after): (i64, i64) = conn.query_row(
            &format!(
                "SELECT coalesce(sum(ts_ms < ?1), 0), coalesce(sum(ts_ms >= ?1), 0) \
                 FROM query_rows WHERE client IN ({clients}) AND ts_ms >= ?2 AND ts_ms < ?3 \
                 AND matched IS NULL"
            ),
            params![split, from, to],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let row_last: Option<i64> = conn.query_row(
            &format!(
                "SELECT max(ts_ms) FROM query_rows WHERE client IN ({clients}) AND ts_ms < ?1"
            ),
            params![to],
            |r| r.get(0),
        )?;
        last_query_ms = last_query_ms.max(row_last);
        return Ok(OrdinaryCounts {
            before: before as u64,
            after: after as u64,
            last_query_ms,
            exact: true,
        });
    }

    let sql = format!(
        "SELECT minute, ordinary, minute * 60000 + first_off + ord_first_after, \
         minute * 60000 + last_off - ord_last_before, ord_seconds << (first_off / 1000) \
         FROM device_minutes \
         WHERE device IN ({}) AND minute >= ?1 AND minute <= ?2 AND ordinary > 0",
        id_list(&devices)
    );
    let p = params![from.div_euclid(MINUTE_MS), (to - 1).div_euclid(MINUTE_MS)];
    let mut st = conn.prepare(&sql)?;
    let minutes: Vec<MinuteRow> = st
        .query_map(p, |r| {
            Ok(MinuteRow {
                start_ms: r.get::<_, i64>(0)? * MINUTE_MS,
                count: r.get::<_, i64>(1)? as u64,
                first_ms: r.get(2)?,
                last_ms: r.get(3)?,
                seconds: r.get::<_, i64>(4)? as u64,
            })
        })?
        .collect::<Result<_, _>>()?;
    let (mut before, mut after) = (0u64, 0u64);
    for m in &minutes {
        before += m.bounds(from, split).1;
        after += m.bounds(split, to).0;
    }
    Ok(OrdinaryCounts {
        before,
        after,
        last_query_ms,
        exact: false,
    })
}

/// One minute of a device's ordinary queries.
#[derive(Clone, Copy, Debug)]
struct MinuteRow {
    start_ms: i64,
    count: u64,
    first_ms: i64,
    last_ms: i64,
    /// Bit s: a query in second s.
    seconds: u64,
}

impl MinuteRow {
    /// The fewest and the most of the minute's queries that fell in [a, b): a second with a
    /// query that lies wholly inside holds at least one; one wholly outside, at least one that
    /// is not counted; the first and last query are known to the millisecond.
    fn bounds(&self, a: i64, b: i64) -> (u64, u64) {
        let inside = |t: i64| t >= a && t < b;
        if self.last_ms < a || self.first_ms >= b {
            return (0, 0);
        }
        if inside(self.first_ms) && inside(self.last_ms) {
            return (self.count, self.count);
        }
        let (mut lo, mut out) = (0u64, 0u64);
        for s in 0..60 {
            if self.seconds & (1 << s) == 0 {
                continue;
            }
            let (from, to) = (self.start_ms + s * 1000, self.start_ms + (s + 1) * 1000);
            if from >= a && to <= b {
                lo += 1;
            } else if to <= a || from >= b {
                out += 1;
            }
        }
        let ends_in = u64::from(inside(self.first_ms)) + u64::from(inside(self.last_ms));
        let ends_out = 2 - ends_in;
        let lo = lo.max(ends_in.min(self.count));
        let hi = self.count.saturating_sub(out.max(ends_out)).max(lo);
        (lo, hi)
    }
}

// ---------------------------------------------------------------------------------------------
// For the PostgreSQL back end ([`super::postgres`]): the same counts as plain rows, and the same
// per-minute bounds.

/// One device-minute of [`Pending`], as written: device, minute, total, first, last, ordinary,
/// first and last ordinary (when any), ordinary seconds.
pub(super) type MinuteOut = (
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
    Option<i64>,
    Option<i64>,
    i64,
);
/// One device of [`Pending`]: device, named by, MAC, first, last.
pub(super) type DeviceOut = (String, &'static str, Option<String>, i64, i64);
/// One device address of [`Pending`]: device, address, first, last.
pub(super) type AddressOut = (String, String, i64, i64);

impl Pending {
    /// What [`Pending::write`] adds, as rows, sorted by key (so that replicas writing the same
    /// device-minutes lock them in the same order).
    pub(super) fn export(&self) -> (Vec<MinuteOut>, Vec<DeviceOut>, Vec<AddressOut>) {
        let mut minutes: Vec<MinuteOut> = self
            .minutes
            .iter()
            .map(|((key, m), c)| {
                let (of, ol) = if c.ordinary > 0 {
                    (Some(c.ord_first_ms), Some(c.ord_last_ms))
                } else {
                    (None, None)
                };
                (
                    key.text(),
                    *m,
                    c.total as i64,
                    c.first_ms,
                    c.last_ms,
                    c.ordinary as i64,
                    of,
                    ol,
                    c.ord_seconds as i64,
                )
            })
            .collect();
        minutes.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        let mut devices: Vec<DeviceOut> = Vec::new();
        let mut addresses: Vec<AddressOut> = Vec::new();
        for (key, d) in &self.devices {
            let k = key.text();
            devices.push((
                k.clone(),
                d.named_by.as_str(),
                d.mac.map(|m| m.to_string()),
                d.first_ms,
                d.last_ms,
            ));
            for (addr, (first, last)) in &d.addrs {
                addresses.push((k.clone(), addr.text(), *first, *last));
            }
        }
        devices.sort_by(|a, b| a.0.cmp(&b.0));
        addresses.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        (minutes, devices, addresses)
    }
}

/// [`MinuteRow::bounds`] of one minute read from PostgreSQL: the fewest and the most of its
/// ordinary queries that fell in [a, b).
#[allow(clippy::too_many_arguments)]
pub(super) fn minute_bounds(
    start_ms: i64,
    count: u64,
    first_ms: i64,
    last_ms: i64,
    seconds: u64,
    a: i64,
    b: i64,
) -> (u64, u64) {
    MinuteRow {
        start_ms,
        count,
        first_ms,
        last_ms,
        seconds,
    }
    .bounds(a, b)
}

/// Parses `devices.named_by` (for [`super::postgres`]).
pub(super) fn named_by_of(s: &str) -> NamedBy {
    parse_named_by(s)
}

#[cfg(test)]
mod tests {
    use super::MinuteRow;

    fn minute(count: u64, first: i64, last: i64, seconds: &[i64]) -> MinuteRow {
        MinuteRow {
            start_ms: 0,
            count,
            first_ms: first,
            last_ms: last,
            seconds: seconds.iter().fold(0, |b, s| b | 1 << s),
        }
    }

    #[test]
    fn minute_bounds() {
        // Wholly inside, wholly outside.
        let m = minute(10, 100, 900, &[0]);
        assert_eq!(m.bounds(0, 60_000), (10, 10));
        assert_eq!(m.bounds(1000, 60_000), (0, 0));
        assert_eq!(m.bounds(0, 100), (0, 0));
        // One query a second over the whole minute, split at 30.5 s: seconds 31..59 are after
        // (29), 0..29 before (30); second 30 and its query could be either.
        let every: Vec<i64> = (0..60).collect();
        let m = minute(60, 0, 59_000, &every);
        assert_eq!(m.bounds(30_500, 120_000), (29, 30));
        assert_eq!(m.bounds(-60_000, 30_500), (30, 31));
        // Few seconds known: the ends still count.
        let m = minute(10, 100, 50_000, &[0, 50]);
        assert_eq!(m.bounds(20_000, 120_000), (1, 9));
        assert_eq!(m.bounds(0, 20_000), (1, 9));
        assert_eq!(minute(1, 100, 100, &[0]).bounds(0, 150), (1, 1));
        // Spanning the whole window: none known inside.
        assert_eq!(m.bounds(20_000, 30_000), (0, 8));
    }
}
