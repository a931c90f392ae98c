//! The questions `log`, `verify` and `mark` ask of the log: which rows belong to a client,
//! marks, when the log was running, and a client's counts in a category.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};
use serde::Serialize;

use super::error::{CommandError, QueryLogError};
use super::rows::{id_list, sets_of, text_ids, Kind};
use super::settings::{LatestMark, RUN_STALE_MS};
use super::sink::anonymize_addr;
use super::store::DeviceLookup;
use crate::timespec::{self, MarkRef};

/// Every category some row matched (or once matched: retention leaves the sets).
pub(crate) fn all_categories(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut st =
        conn.prepare_cached("SELECT DISTINCT category FROM category_sets ORDER BY category")?;
    let rows = st.query_map([], |r| r.get(0))?;
    rows.collect()
}

pub(crate) fn latest_marks(conn: &Connection) -> rusqlite::Result<Vec<LatestMark>> {
    let mut st = conn.prepare_cached(
        "SELECT m.client, m.id, m.ts_ms, m.note FROM marks m \
         WHERE m.id = (SELECT id FROM marks n WHERE n.client = m.client \
                       ORDER BY n.ts_ms DESC, n.id DESC LIMIT 1) \
         ORDER BY m.client",
    )?;
    let rows = st.query_map([], |r| {
        Ok(LatestMark {
            client: r.get(0)?,
            id: r.get(1)?,
            time_ms: r.get(2)?,
            note: r.get(3)?,
        })
    })?;
    rows.collect()
}

/// The config's clients: `[[client]]` names and their addresses.
pub type ClientList = [(String, Vec<IpNet>)];
/// An owned [`ClientList`].
pub type OwnedClientList = Vec<(String, Vec<IpNet>)>;

/// What `--client C` selects in the log: C is a configured client name or an address (or, for
/// an anonymized log, a network).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientSelector {
    /// As metrics and marks name it: the configured name, else the address.
    pub label: String,
    /// Values of the `client` column that belong to it.
    pub keys: Vec<String>,
}

impl ClientSelector {
    /// From the config's clients only.
    pub fn resolve(c: &str, clients: &ClientList) -> Result<ClientSelector, CommandError> {
        Self::resolve_in(c, clients, None)
    }

    /// From the config's clients and, when given, the devices the log has seen: a device
    /// named by its MAC or a DHCP lease is found by its name, an address by the device that
    /// used it, and a device's rows are found under every address it used.
    pub fn resolve_in(
        c: &str,
        clients: &ClientList,
        log: Option<&dyn DeviceLookup>,
    ) -> Result<ClientSelector, CommandError> {
        let c = c.trim();
        let mut keys = Vec::new();
        let push = |keys: &mut Vec<String>, k: String| {
            if !keys.contains(&k) {
                keys.push(k)
            }
        };
        // Addresses the log saw the device use (a failed read only narrows the selection).
        let logged_addresses = |name: &str| -> Vec<String> {
            log.map(|l| l.device_addresses(name)).unwrap_or_default()
        };
        if let Some((name, nets)) = clients.iter().find(|(n, _)| n == c) {
            push(&mut keys, name.clone());
            for net in nets {
                // Rows from before the name was configured, and anonymized rows.
                if net.prefix_len() == net.max_prefix_len() {
                    push(&mut keys, net.addr().to_string());
                }
                let anon_len = if net.addr().is_ipv4() { 24 } else { 56 };
                if net.prefix_len() >= anon_len {
                    push(&mut keys, anonymize_addr(net.addr()).to_string());
                }
            }
            for a in logged_addresses(name) {
                push(&mut keys, a);
            }
            return Ok(ClientSelector {
                label: name.clone(),
                keys,
            });
        }
        if let Ok(addr) = c.parse::<IpAddr>() {
            let addr = addr.to_canonical();
            let label = clients
                .iter()
                .find(|(_, nets)| nets.iter().any(|n| n.contains(&addr)))
                .map(|(n, _)| n.clone())
                .or_else(|| log.and_then(|l| l.device_of_address(&addr.to_string())))
                .unwrap_or_else(|| addr.to_string());
            push(&mut keys, label.clone());
            push(&mut keys, addr.to_string());
            push(&mut keys, anonymize_addr(addr).to_string());
            if label != addr.to_string() {
                for a in logged_addresses(&label) {
                    push(&mut keys, a);
                }
            }
            return Ok(ClientSelector { label, keys });
        }
        if let Ok(net) = c.parse::<IpNet>() {
            let net = net.trunc().to_string();
            return Ok(ClientSelector {
                label: net.clone(),
                keys: vec![net],
            });
        }
        if let Some(conn) = log {
            if conn.device_exists(c) {
                push(&mut keys, c.to_string());
                for a in logged_addresses(c) {
                    push(&mut keys, a);
                }
                return Ok(ClientSelector {
                    label: c.to_string(),
                    keys,
                });
            }
        }
        let mut known: Vec<String> = clients.iter().map(|(n, _)| n.clone()).collect();
        if let Some(conn) = log {
            for d in conn.device_names() {
                if !known.contains(&d) {
                    known.push(d);
                }
            }
        }
        let known = if known.is_empty() {
            "the config names no [[client]] and the log knows no named device".to_string()
        } else {
            format!("known devices: {}", known.join(", "))
        };
        Err(CommandError::Usage(format!(
            "unknown client {c:?}: give a device name (a [[client]] of the config, or one `telesink devices` lists) or an IP address ({known})"
        )))
    }
}

pub(crate) fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// Looks a mark up: `mark:ID`, or the newest mark of `client` (any client when `None`).
pub(crate) fn find_mark(
    conn: &Connection,
    path: &Path,
    which: MarkRef,
    client: Option<&ClientSelector>,
) -> Result<MarkInfo, CommandError> {
    let e = |err: rusqlite::Error| CommandError::Db(QueryLogError::from_sqlite(path, &err));
    let map = |r: &rusqlite::Row<'_>| -> rusqlite::Result<MarkInfo> {
        let ts: i64 = r.get(1)?;
        Ok(MarkInfo {
            id: r.get(0)?,
            time: timespec::rfc3339_ms(ts),
            time_ms: ts,
            client: r.get(2)?,
            note: r.get(3)?,
        })
    };
    let found = match (which, client) {
        (MarkRef::Id(id), _) => conn
            .query_row(
                "SELECT id, ts_ms, client, note FROM marks WHERE id = ?1",
                [id],
                map,
            )
            .optional()
            .map_err(e)?,
        (MarkRef::Last, Some(sel)) => {
            let sql = format!(
                "SELECT id, ts_ms, client, note FROM marks WHERE client IN ({}) \
                 ORDER BY ts_ms DESC, id DESC LIMIT 1",
                placeholders(sel.keys.len())
            );
            conn.query_row(&sql, params_from_iter(&sel.keys), map)
                .optional()
                .map_err(e)?
        }
        (MarkRef::Last, None) => conn
            .query_row(
                "SELECT id, ts_ms, client, note FROM marks ORDER BY ts_ms DESC, id DESC LIMIT 1",
                [],
                map,
            )
            .optional()
            .map_err(e)?,
    };
    found.ok_or_else(|| {
        let who = client
            .map(|s| format!(" for {}", s.label))
            .unwrap_or_default();
        let what = match which {
            MarkRef::Id(id) => format!("there is no mark {id}"),
            MarkRef::Last => format!("there is no mark{who}"),
        };
        CommandError::Usage(format!(
            "{what} in {}; record one with `telesink mark --client C --note TEXT`, or give the time itself (RFC 3339 or 2h)",
            path.display()
        ))
    })
}

/// An opt-out mark.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MarkInfo {
    pub id: i64,
    pub client: String,
    /// RFC 3339, UTC.
    pub time: String,
    #[serde(skip)]
    pub time_ms: i64,
    pub note: String,
}
/// Time the log was being written within [from, to): the union of runs, a run that stopped
/// without closing counting up to its last heartbeat.
pub(crate) fn logged_ms(conn: &Connection, from: i64, to: i64, now: i64) -> rusqlite::Result<i64> {
    if to <= from {
        return Ok(0);
    }
    // A run without an end is still going if its heartbeat is recent and no later run started
    // after it; otherwise it stopped (crash, kill -9) at its last heartbeat.
    let mut st = conn.prepare_cached(
        "SELECT start_ms, alive_ms, end_ms, \
                EXISTS (SELECT 1 FROM runs l WHERE l.start_ms > r.alive_ms) \
         FROM runs r WHERE start_ms < ?1 AND mode != 'none' ORDER BY start_ms",
    )?;
    let spans: Vec<(i64, i64)> = st
        .query_map([to], |r| {
            let start: i64 = r.get(0)?;
            let alive: i64 = r.get(1)?;
            let end: Option<i64> = r.get(2)?;
            let superseded: bool = r.get(3)?;
            let end = match end {
                Some(e) => e,
                None if !superseded && alive >= now - RUN_STALE_MS => now.max(alive),
                None => alive,
            };
            Ok((start, end))
        })?
        .collect::<Result<_, _>>()?;
    let mut total = 0;
    let mut cursor = from;
    for (s, e) in spans {
        let s = s.max(cursor);
        let e = e.min(to);
        if e > s {
            total += e - s;
            cursor = e;
        }
    }
    Ok(total)
}

/// Counts per `(name)` of a client's queries in one category: before T, from T on, last seen,
/// and the actions after T.
pub(crate) struct CategoryCounts {
    pub domains: BTreeMap<String, (u64, u64, i64)>,
    pub after_actions: BTreeMap<String, u64>,
}

pub(crate) fn category_counts(
    conn: &Connection,
    sel: &ClientSelector,
    category: &str,
    from: i64,
    split: i64,
    to: i64,
) -> rusqlite::Result<CategoryCounts> {
    let clients = text_ids(conn, &sel.keys)?;
    let sets = sets_of(conn, category)?;
    // One range of the primary key per client key; `+` keeps the category index out of it.
    let sql = format!(
        "SELECT n.text, sum(r.ts_ms < ?1), sum(r.ts_ms >= ?1), max(r.ts_ms) \
         FROM query_rows r JOIN texts n ON n.id = r.name \
         WHERE r.client IN ({}) AND r.ts_ms >= ?2 AND r.ts_ms < ?3 AND +r.matched IN ({}) \
         GROUP BY r.name",
        id_list(&clients),
        id_list(&sets)
    );
    let mut st = conn.prepare(&sql)?;
    let domains = st
        .query_map(params![split, from, to], |r| {
            Ok((
                r.get::<_, String>(0)?,
                (
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, i64>(2)? as u64,
                    r.get::<_, i64>(3)?,
                ),
            ))
        })?
        .collect::<Result<BTreeMap<_, _>, _>>()?;
    let sql = format!(
        "SELECT (r.kind >> 3) & 3, count(*) FROM query_rows r \
         WHERE r.client IN ({}) AND r.ts_ms >= ?1 AND r.ts_ms < ?2 AND +r.matched IN ({}) \
         GROUP BY 1",
        id_list(&clients),
        id_list(&sets)
    );
    let mut st = conn.prepare(&sql)?;
    let mut after_actions = BTreeMap::new();
    for row in st.query_map(params![split, to], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)? as u64))
    })? {
        let (code, n) = row?;
        let action = Kind(code << 3)
            .action()
            .map_or("unknown", |a| a.as_str())
            .to_string();
        *after_actions.entry(action).or_insert(0) += n;
    }
    Ok(CategoryCounts {
        domains,
        after_actions,
    })
}

/// Categories the log holds for this client (for hints when a category shows nothing).
pub(crate) fn client_categories(
    conn: &Connection,
    sel: &ClientSelector,
) -> rusqlite::Result<Vec<String>> {
    let clients = text_ids(conn, &sel.keys)?;
    let mut out = Vec::new();
    for c in all_categories(conn)? {
        let sets = sets_of(conn, &c)?;
        let sql = format!(
            "SELECT EXISTS (SELECT 1 FROM query_rows WHERE client IN ({}) AND +matched IN ({}))",
            id_list(&clients),
            id_list(&sets)
        );
        if conn.query_row(&sql, [], |r| r.get::<_, bool>(0))? {
            out.push(c);
        }
    }
    Ok(out)
}
