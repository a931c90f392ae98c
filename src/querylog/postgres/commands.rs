//! `telesink log`, `mark` and `devices` against a PostgreSQL log: the same arguments, checks
//! and reports as [`crate::querylog::commands`].

use tokio_postgres::types::ToSql;

use super::batch::{action_code, action_text, qtype_name, rcode_text, result_code, result_text};
use super::{PgStore, PgUrl};
use crate::querylog::activity::{named_by_of, DeviceAddress, DeviceRecord};
use crate::querylog::commands::{
    log_filter, log_limit, log_since, LogArgs, LogEntry, LogFilter, LogReport, MarkArgs, MarkReport,
};
use crate::querylog::error::CommandError;
use crate::querylog::read::{ClientList, ClientSelector};
use crate::querylog::store::{DeviceLookup, LogRead};
use crate::timespec;

/// `telesink mark` at `ts_ms` (creates the tables if needed).
pub fn mark_at(
    args: &MarkArgs,
    url: &PgUrl,
    clients: &ClientList,
    ts_ms: i64,
) -> Result<MarkReport, CommandError> {
    let store = PgStore::connect(url)?;
    let sel = ClientSelector::resolve_in(&args.client, clients, Some(&store as &dyn DeviceLookup))?;
    let note = args.note.trim();
    if note.is_empty() {
        return Err(CommandError::Usage(
            "--note is empty: say what was switched, e.g. --note \"MIUI analytics off\"".into(),
        ));
    }
    let row = store.run(
        "recording a mark",
        store.client.query_one(
            "INSERT INTO marks (ts_ms, client, note) VALUES ($1, $2, $3) \
             RETURNING id, ts_ms, client, note",
            &[&ts_ms, &sel.label, &note],
        ),
    )?;
    Ok(MarkReport {
        mark: PgStore::mark_info(&row),
    })
}

/// `telesink log` with a given "now".
pub fn log_at(
    args: &LogArgs,
    url: &PgUrl,
    clients: &ClientList,
    now: jiff::Timestamp,
) -> Result<LogReport, CommandError> {
    let store = PgStore::open_existing(url)?;
    let sel = args
        .client
        .as_deref()
        .map(|c| ClientSelector::resolve_in(c, clients, Some(&store as &dyn DeviceLookup)))
        .transpose()?;
    let limit = log_limit(args)?;
    let filter = log_filter(args)?;
    let since_ms = log_since(args, now, |m| Ok(store.find_mark(m, sel.as_ref())?.time_ms))?;

    let category = args.category.as_deref().map(|c| c.trim().to_string());
    let mut params: Vec<Box<dyn ToSql + Sync>> = Vec::new();
    let mut conds: Vec<String> = Vec::new();
    let mut bind = |v: Box<dyn ToSql + Sync>| {
        params.push(v);
        format!("${}", params.len())
    };
    if let Some(cat) = category {
        conds.push(format!("{} = ANY(categories)", bind(Box::new(cat))));
    }
    if let Some(sel) = &sel {
        conds.push(format!(
            "client = ANY({})",
            bind(Box::new(sel.keys.clone()))
        ));
    }
    if let Some(s) = since_ms {
        conds.push(format!("ts_ms >= {}", bind(Box::new(s))));
    }
    match filter {
        Some(LogFilter::Result(r)) => {
            conds.push(format!("result = {}", bind(Box::new(result_code(r)))))
        }
        Some(LogFilter::Action(a)) => {
            conds.push(format!("action = {}", bind(Box::new(action_code(a)))))
        }
        None => {}
    }
    let mut sql = String::from(
        "SELECT ts_ms, client, client_addr, client_name, grp, name, qtype, result, \
         categories, list, action, rcode, upstream_ms FROM queries ",
    );
    if !conds.is_empty() {
        sql.push_str("WHERE ");
        sql.push_str(&conds.join(" AND "));
    }
    let lim = bind(Box::new(limit as i64 + 1));
    // Ties in one millisecond ordered as the SQLite log orders them (by client, byte order).
    sql.push_str(&format!(
        " ORDER BY ts_ms DESC, client COLLATE \"C\" DESC, id DESC LIMIT {lim}"
    ));
    let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|b| &**b).collect();
    let rows = store.run("searching the log", store.client.query(&sql, &refs))?;
    let mut rows: Vec<LogEntry> = rows
        .iter()
        .map(|r| {
            let ts: i64 = r.get(0);
            LogEntry {
                time: timespec::rfc3339_ms(ts),
                time_ms: ts,
                client: r.get(1),
                client_address: r.get(2),
                client_name: r.get(3),
                group: r.get(4),
                name: r.get(5),
                qtype: qtype_name(r.get(6)),
                result: result_text(r.get(7)).into_owned(),
                categories: r.get::<_, Option<Vec<String>>>(8).unwrap_or_default(),
                list: r.get(9),
                action: r.get::<_, Option<i16>>(10).map(action_text),
                rcode: rcode_text(r.get(11)),
                upstream_ms: r.get::<_, Option<i32>>(12).map(i64::from),
            }
        })
        .collect();
    let more = rows.len() > limit;
    rows.truncate(limit);
    Ok(LogReport::new(rows, more, limit))
}

/// Every device in the log, most recently active first (`telesink devices`).
pub fn devices(url: &PgUrl) -> Result<Vec<DeviceRecord>, CommandError> {
    let store = PgStore::open_existing(url)?;
    let rows = store.run(
        "reading devices",
        store.client.query(
            "SELECT device, named_by, mac, first_ms, last_ms FROM devices \
             ORDER BY last_ms DESC, device",
            &[],
        ),
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let name: String = r.get(0);
        let first: i64 = r.get(3);
        let last: i64 = r.get(4);
        let addrs = store.run(
            "reading devices",
            store.client.query(
                "SELECT addr, first_ms, last_ms FROM device_addresses WHERE device = $1 \
                 ORDER BY last_ms DESC, addr",
                &[&name],
            ),
        )?;
        out.push(DeviceRecord {
            named_by: named_by_of(&r.get::<_, String>(1)),
            mac: r.get::<_, Option<String>>(2).and_then(|m| m.parse().ok()),
            addresses: addrs
                .iter()
                .map(|a| {
                    let (f, l): (i64, i64) = (a.get(1), a.get(2));
                    DeviceAddress {
                        address: a.get(0),
                        first_seen: timespec::rfc3339_ms(f),
                        last_seen: timespec::rfc3339_ms(l),
                        last_seen_ms: l,
                    }
                })
                .collect(),
            first_seen: timespec::rfc3339_ms(first),
            last_query: timespec::rfc3339_ms(last),
            first_seen_ms: first,
            last_query_ms: last,
            name,
        });
    }
    Ok(out)
}
