//! `telesink mark` and `telesink log`: what they ask and how they print it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::Path;

use rusqlite::{params, params_from_iter};
use serde::Serialize;

use super::error::{CommandError, QueryLogError};
use super::now_ms;
use super::read::{find_mark, ClientList, ClientSelector, MarkInfo};
use super::rows::{
    action_code, all_clients, id_list, result_code, sets_of, split_pair, text_ids, Kind,
};
use super::schema::{open_existing, open_rw};
use crate::observe::events::QueryResult;
use crate::policy::category::Action;
use crate::timespec::MarkRef;
use crate::timespec::{self, TimeSpec};

// ---------------------------------------------------------------------------------------------
// `telesink mark`

/// `telesink mark --client C --note TEXT`.
#[derive(Clone, Debug)]
pub struct MarkArgs {
    pub client: String,
    pub note: String,
}

/// What `telesink mark` prints: [`MarkReport::render_text`], or serde JSON.
#[derive(Clone, Debug, Serialize)]
pub struct MarkReport {
    #[serde(flatten)]
    pub mark: MarkInfo,
}

impl MarkReport {
    pub fn render_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("serializable")
    }

    pub fn render_text(&self) -> String {
        let m = &self.mark;
        format!(
            "mark {}: {} at {} ({})\nlater: telesink verify --client {} --category CATEGORY --since mark:{}\n",
            m.id,
            m.client,
            timespec::format_local(timespec::from_ms(m.time_ms)),
            m.note,
            shell_word(&m.client),
            m.id
        )
    }
}

pub(crate) fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Records an opt-out mark at the current time (creates the database if needed).
pub fn mark(args: &MarkArgs, db: &Path, clients: &ClientList) -> Result<MarkReport, CommandError> {
    mark_at(args, db, clients, now_ms())
}

/// [`mark`] at a given time (tests).
pub fn mark_at(
    args: &MarkArgs,
    db: &Path,
    clients: &ClientList,
    ts_ms: i64,
) -> Result<MarkReport, CommandError> {
    // An address resolves to the device the log saw use it, so that the mark (and the marks
    // metric) carry the device's name.
    let existing = if db.exists() {
        open_existing(db).ok()
    } else {
        None
    };
    let sel = ClientSelector::resolve_in(
        &args.client,
        clients,
        existing
            .as_ref()
            .map(|c| c as &dyn super::store::DeviceLookup),
    )?;
    drop(existing);
    let note = args.note.trim();
    if note.is_empty() {
        return Err(CommandError::Usage(
            "--note is empty: say what was switched, e.g. --note \"MIUI analytics off\"".into(),
        ));
    }
    let conn = open_rw(db)?;
    conn.execute(
        "INSERT INTO marks (ts_ms, client, note) VALUES (?1, ?2, ?3)",
        params![ts_ms, sel.label, note],
    )
    .map_err(|e| QueryLogError::from_sqlite(db, &e))?;
    Ok(MarkReport {
        mark: MarkInfo {
            id: conn.last_insert_rowid(),
            client: sel.label,
            time: timespec::rfc3339_ms(ts_ms),
            time_ms: ts_ms,
            note: note.to_string(),
        },
    })
}

// ---------------------------------------------------------------------------------------------
// `telesink log`

/// `telesink log [--client C] [--category CAT] [--since T] [--result R] [--limit N]`.
#[derive(Clone, Debug, Default)]
pub struct LogArgs {
    pub client: Option<String>,
    pub category: Option<String>,
    /// `blocked`, `cached`, `forwarded`, `local`, `refused`, `failed`; or an action:
    /// `observed`, `allowed`.
    pub result: Option<String>,
    pub since: Option<TimeSpec>,
    /// Default [`LogArgs::DEFAULT_LIMIT`].
    pub limit: Option<usize>,
}

impl LogArgs {
    pub const DEFAULT_LIMIT: usize = 50;
}

/// One logged query.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LogEntry {
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    #[serde(skip)]
    pub time_ms: i64,
    pub client: String,
    pub client_address: String,
    pub client_name: Option<String>,
    pub group: Option<String>,
    pub name: String,
    #[serde(rename = "type")]
    pub qtype: String,
    pub result: String,
    pub categories: Vec<String>,
    pub list: Option<String>,
    pub action: Option<String>,
    pub rcode: String,
    pub upstream_ms: Option<i64>,
}

/// What `telesink log` prints: [`LogReport::render_text`] or [`LogReport::render_json`].
#[derive(Clone, Debug, Serialize)]
pub struct LogReport {
    /// Newest first.
    pub rows: Vec<LogEntry>,
    /// The limit was reached: older rows match too.
    pub more: bool,
    #[serde(skip)]
    limit: usize,
}

impl LogReport {
    /// For the PostgreSQL back end.
    pub(crate) fn new(rows: Vec<LogEntry>, more: bool, limit: usize) -> LogReport {
        LogReport { rows, more, limit }
    }

    pub fn render_text(&self) -> String {
        if self.rows.is_empty() {
            return "no logged queries match\n".to_string();
        }
        let zone = timespec::local_zone_abbreviation(timespec::from_ms(self.rows[0].time_ms));
        let header = [
            format!("TIME ({zone})"),
            "CLIENT".into(),
            "TYPE".into(),
            "NAME".into(),
            "RESULT".into(),
            "ACTION".into(),
            "CATEGORIES".into(),
        ];
        let cells: Vec<[String; 7]> = self
            .rows
            .iter()
            .map(|r| {
                [
                    timespec::format_local_ms(timespec::from_ms(r.time_ms)),
                    r.client.clone(),
                    r.qtype.clone(),
                    r.name.clone(),
                    r.result.clone(),
                    r.action.clone().unwrap_or_else(|| "-".into()),
                    if r.categories.is_empty() {
                        "-".into()
                    } else {
                        r.categories.join(",")
                    },
                ]
            })
            .collect();
        let mut out = table(&header, &cells, &[]);
        if self.more {
            out.push_str(&format!(
                "(the newest {}; --limit N shows more)\n",
                self.limit
            ));
        }
        out
    }

    /// The rows as a JSON array.
    pub fn render_json(&self) -> String {
        serde_json::to_string_pretty(&self.rows).expect("serializable")
    }
}

/// A plain aligned table: columns separated by two spaces, right-aligned where asked.
pub(crate) fn table<const N: usize>(
    header: &[String; N],
    rows: &[[String; N]],
    right: &[usize],
) -> String {
    let mut width = [0usize; N];
    for row in std::iter::once(header).chain(rows.iter()) {
        for (i, c) in row.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(header).chain(rows.iter()) {
        let mut line = String::new();
        for (i, c) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let pad = width[i] - c.chars().count();
            if right.contains(&i) {
                line.push_str(&" ".repeat(pad));
                line.push_str(c);
            } else {
                line.push_str(c);
                if i + 1 < N {
                    line.push_str(&" ".repeat(pad));
                }
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Newest first; rows of the same millisecond by client and then in the order written.
/// `log --result`: a result, or an action (observed, allowed; "blocked" is the result).
#[derive(Clone, Copy)]
pub(crate) enum LogFilter {
    Result(QueryResult),
    Action(Action),
}

/// `log --limit`, checked (both back ends).
pub(crate) fn log_limit(args: &LogArgs) -> Result<usize, CommandError> {
    let limit = args.limit.unwrap_or(LogArgs::DEFAULT_LIMIT);
    if limit == 0 {
        return Err(CommandError::Usage("--limit must be at least 1".into()));
    }
    Ok(limit)
}

/// `log --result`, parsed (both back ends).
pub(crate) fn log_filter(args: &LogArgs) -> Result<Option<LogFilter>, CommandError> {
    let Some(r) = args.result.as_deref().map(str::trim) else {
        return Ok(None);
    };
    let r = r.to_ascii_lowercase();
    if let Some(q) = QueryResult::ALL.iter().find(|q| q.as_str() == r) {
        Ok(Some(LogFilter::Result(*q)))
    } else if r == "observed" || r == "allowed" {
        Ok(Some(LogFilter::Action(if r == "observed" {
            Action::Observed
        } else {
            Action::Allowed
        })))
    } else {
        Err(CommandError::Usage(format!(
            "unknown --result {r:?}: use blocked, cached, forwarded, local, refused, failed, \
             or an action: observed, allowed"
        )))
    }
}

/// `log --since` in ms, a mark looked up by `find_mark` (both back ends).
pub(crate) fn log_since(
    args: &LogArgs,
    now: jiff::Timestamp,
    find_mark: impl FnOnce(MarkRef) -> Result<i64, CommandError>,
) -> Result<Option<i64>, CommandError> {
    match &args.since {
        None => Ok(None),
        Some(TimeSpec::Mark(m)) => find_mark(*m).map(Some),
        Some(t) => Ok(Some(
            t.resolve(now)
                .ok_or_else(|| CommandError::Usage(format!("cannot resolve --since {t}")))?
                .as_millisecond(),
        )),
    }
}

/// Newest first; queries of the same millisecond by client (byte order, as PostgreSQL's
/// `COLLATE "C"`), then the client's own order: both back ends list ties alike.
fn sort_newest_first(rows: &mut [(LogEntry, i64, i64)]) {
    rows.sort_by(|a, b| {
        (b.0.time_ms, b.0.client.as_bytes(), b.2).cmp(&(a.0.time_ms, a.0.client.as_bytes(), a.2))
    });
}

/// Searches the log, newest first.
pub fn log(args: &LogArgs, db: &Path, clients: &ClientList) -> Result<LogReport, CommandError> {
    log_at(args, db, clients, jiff::Timestamp::now())
}

/// [`log`] with a given "now" (tests).
pub fn log_at(
    args: &LogArgs,
    db: &Path,
    clients: &ClientList,
    now: jiff::Timestamp,
) -> Result<LogReport, CommandError> {
    let conn = open_existing(db)?;
    let sel = args
        .client
        .as_deref()
        .map(|c| ClientSelector::resolve_in(c, clients, Some(&conn)))
        .transpose()?;
    let limit = log_limit(args)?;
    let filter = log_filter(args)?;
    let since_ms = log_since(args, now, |m| {
        Ok(find_mark(&conn, db, m, sel.as_ref())?.time_ms)
    })?;

    let e = |err: rusqlite::Error| CommandError::Db(QueryLogError::from_sqlite(db, &err));
    let mut conds: Vec<String> = Vec::new();
    let mut params: Vec<rusqlite::types::Value> = Vec::new();
    // Each query below reads one range: one client (or a client's keys), or one set of
    // categories (the `query_rows_matched` index); without either, the newest rows of every
    // client are merged.
    enum Parts {
        One,
        Clients(Vec<i64>),
        Sets(Vec<i64>),
    }
    let mut parts = Parts::One;
    let cat_sets = match &args.category {
        Some(cat) => Some(sets_of(&conn, cat.trim()).map_err(e)?),
        None => None,
    };
    if let Some(sel) = &sel {
        let ids = text_ids(&conn, &sel.keys).map_err(e)?;
        conds.push(format!("r.client IN ({})", id_list(&ids)));
        if let Some(sets) = &cat_sets {
            // `+`: the client's range, not the category index.
            conds.push(format!("+r.matched IN ({})", id_list(sets)));
        }
    } else if let Some(sets) = cat_sets {
        parts = Parts::Sets(sets);
    } else {
        parts = Parts::Clients(all_clients(&conn).map_err(e)?);
    }
    if let Some(s) = since_ms {
        conds.push("r.ts_ms >= ?".into());
        params.push(s.into());
    }
    match filter {
        Some(LogFilter::Result(r)) => {
            conds.push(format!("(r.kind & 7) = {}", result_code(r)));
        }
        Some(LogFilter::Action(a)) => {
            conds.push(format!("((r.kind >> 3) & 3) = {}", action_code(Some(a))));
        }
        None => {}
    }
    let sql = |part: Option<&str>| {
        let mut sql = String::from(
            "SELECT r.ts_ms, c.text, o.text, n.text, r.kind, m.text, r.upstream_ms, r.client, \
             r.seq FROM query_rows r JOIN texts c ON c.id = r.client \
             JOIN texts n ON n.id = r.name LEFT JOIN texts o ON o.id = r.origin \
             LEFT JOIN texts m ON m.id = r.matched ",
        );
        let mut all: Vec<&str> = conds.iter().map(String::as_str).collect();
        all.extend(part);
        if !all.is_empty() {
            sql.push_str("WHERE ");
            sql.push_str(&all.join(" AND "));
        }
        sql.push_str(" ORDER BY r.ts_ms DESC, c.text DESC, r.seq DESC LIMIT ?");
        sql
    };
    let map = |r: &rusqlite::Row<'_>| -> rusqlite::Result<(LogEntry, i64, i64)> {
        let ts: i64 = r.get(0)?;
        let client: String = r.get(1)?;
        let origin: Option<String> = r.get(2)?;
        let (addr, group) = split_pair(origin.as_deref());
        let matched: Option<String> = r.get(5)?;
        let (cats, list) = split_pair(matched.as_deref());
        let kind = Kind(r.get(4)?);
        Ok((
            LogEntry {
                time: timespec::rfc3339_ms(ts),
                time_ms: ts,
                client_name: addr.is_some().then(|| client.clone()),
                client_address: addr.map_or_else(|| client.clone(), str::to_string),
                client,
                group: group.map(str::to_string),
                name: r.get(3)?,
                qtype: kind.qtype().into_owned(),
                result: kind.result().as_str().to_string(),
                categories: cats
                    .map(|c| c.split(',').map(str::to_string).collect())
                    .unwrap_or_default(),
                list: list.map(str::to_string),
                action: kind.action().map(|a| a.as_str().to_string()),
                rcode: kind.rcode().into_owned(),
                upstream_ms: r.get(6)?,
            },
            r.get(7)?,
            r.get(8)?,
        ))
    };
    let want = limit + 1;
    let mut found: Vec<(LogEntry, i64, i64)> = Vec::new();
    match parts {
        Parts::One => {
            let mut st = conn.prepare(&sql(None)).map_err(e)?;
            let mut p = params.clone();
            p.push((want as i64).into());
            for row in st.query_map(params_from_iter(p), map).map_err(e)? {
                found.push(row.map_err(e)?);
            }
        }
        Parts::Clients(ids) | Parts::Sets(ids) => {
            let col = if args.category.is_some() {
                "r.matched = ?"
            } else {
                "r.client = ?"
            };
            let mut st = conn
                .prepare(&sql(Some(&format!("{col} AND r.ts_ms >= ?"))))
                .map_err(e)?;
            // The `want` newest times so far: a part need not go further back than the
            // oldest of them.
            let mut newest: BinaryHeap<Reverse<i64>> = BinaryHeap::new();
            for id in ids {
                let floor = if newest.len() >= want {
                    newest.peek().map_or(i64::MIN, |r| r.0)
                } else {
                    i64::MIN
                };
                let mut p = params.clone();
                p.push(id.into());
                p.push(floor.into());
                p.push((want as i64).into());
                for row in st.query_map(params_from_iter(p), map).map_err(e)? {
                    let row = row.map_err(e)?;
                    newest.push(Reverse(row.0.time_ms));
                    if newest.len() > want {
                        newest.pop();
                    }
                    found.push(row);
                }
                if found.len() > 8 * want {
                    sort_newest_first(&mut found);
                    found.truncate(want);
                }
            }
        }
    }
    sort_newest_first(&mut found);
    let mut rows: Vec<LogEntry> = found.into_iter().map(|(r, _, _)| r).collect();
    let more = rows.len() > limit;
    rows.truncate(limit);
    Ok(LogReport { rows, more, limit })
}
