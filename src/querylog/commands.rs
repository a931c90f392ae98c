//! `telesink mark` and `telesink log`: what they ask and how they print it.

use std::path::Path;

use rusqlite::{params, params_from_iter};
use serde::Serialize;

use super::error::{CommandError, QueryLogError};
use super::now_ms;
use super::read::{
    clients_in_category, find_mark, placeholders, ClientList, ClientSelector, MarkInfo,
};
use super::schema::{open_existing, open_rw};
use crate::observe::events::QueryResult;
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

/// Most clients `log --category` reads as one key range each.
const MAX_CLIENT_RANGES: usize = 2000;

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
    let limit = args.limit.unwrap_or(LogArgs::DEFAULT_LIMIT);
    if limit == 0 {
        return Err(CommandError::Usage("--limit must be at least 1".into()));
    }
    enum Filter {
        Result(&'static str),
        Action(&'static str),
    }
    let filter = match args.result.as_deref().map(str::trim) {
        None => None,
        Some(r) => {
            let r = r.to_ascii_lowercase();
            if let Some(q) = QueryResult::ALL.iter().find(|q| q.as_str() == r) {
                Some(Filter::Result(q.as_str()))
            } else if r == "observed" || r == "allowed" {
                Some(Filter::Action(if r == "observed" {
                    "observed"
                } else {
                    "allowed"
                }))
            } else {
                return Err(CommandError::Usage(format!(
                    "unknown --result {r:?}: use blocked, cached, forwarded, local, refused, failed, \
                     or an action: observed, allowed"
                )));
            }
        }
    };
    let since_ms = match &args.since {
        None => None,
        Some(TimeSpec::Mark(m)) => Some(find_mark(&conn, db, *m, sel.as_ref())?.time_ms),
        Some(t) => Some(
            t.resolve(now)
                .ok_or_else(|| CommandError::Usage(format!("cannot resolve --since {t}")))?
                .as_millisecond(),
        ),
    };

    let mut sql = String::from(
        "SELECT q.ts_ms, q.client, q.client_addr, q.client_name, q.grp, q.name, q.qtype, \
         q.result, q.categories, q.list, q.action, q.rcode, q.upstream_ms ",
    );
    let mut params: Vec<rusqlite::types::Value> = Vec::new();
    let mut conds: Vec<String> = Vec::new();
    let tcol;
    if let Some(cat) = &args.category {
        sql.push_str("FROM query_categories c JOIN queries q ON q.id = c.query_id ");
        conds.push("c.category = ?".into());
        params.push(cat.trim().to_string().into());
        tcol = "c";
    } else {
        sql.push_str("FROM queries q ");
        tcol = "q";
    }
    if let Some(sel) = &sel {
        conds.push(format!(
            "{tcol}.client IN ({})",
            placeholders(sel.keys.len())
        ));
        params.extend(sel.keys.iter().map(|k| k.clone().into()));
    } else if let Some(cat) = &args.category {
        // Every client of the category, so that the primary key (category, client, ts_ms) is
        // read as one range per client rather than the whole category.
        // Past a few thousand clients, one scan of the category is cheaper than the list (and
        // stays under SQLite's limit on bound parameters).
        let keys = clients_in_category(&conn, cat.trim())
            .map_err(|e| QueryLogError::from_sqlite(db, &e))?;
        if keys.len() <= MAX_CLIENT_RANGES {
            conds.push(format!("c.client IN ({})", placeholders(keys.len())));
            params.extend(keys.into_iter().map(Into::into));
        }
    }
    if let Some(s) = since_ms {
        conds.push(format!("{tcol}.ts_ms >= ?"));
        params.push(s.into());
    }
    match filter {
        Some(Filter::Result(r)) => {
            conds.push("q.result = ?".into());
            params.push(r.to_string().into());
        }
        Some(Filter::Action(a)) => {
            conds.push("q.action = ?".into());
            params.push(a.to_string().into());
        }
        None => {}
    }
    if !conds.is_empty() {
        sql.push_str("WHERE ");
        sql.push_str(&conds.join(" AND "));
    }
    sql.push_str(&format!(" ORDER BY {tcol}.ts_ms DESC, q.id DESC LIMIT ?"));
    params.push((limit as i64 + 1).into());

    let e = |err: rusqlite::Error| CommandError::Db(QueryLogError::from_sqlite(db, &err));
    let mut st = conn.prepare(&sql).map_err(e)?;
    let mut rows: Vec<LogEntry> = st
        .query_map(params_from_iter(params), |r| {
            let ts: i64 = r.get(0)?;
            let cats: Option<String> = r.get(8)?;
            Ok(LogEntry {
                time: timespec::rfc3339_ms(ts),
                time_ms: ts,
                client: r.get(1)?,
                client_address: r.get(2)?,
                client_name: r.get(3)?,
                group: r.get(4)?,
                name: r.get(5)?,
                qtype: r.get(6)?,
                result: r.get(7)?,
                categories: cats
                    .map(|c| c.split(',').map(str::to_string).collect())
                    .unwrap_or_default(),
                list: r.get(9)?,
                action: r.get(10)?,
                rcode: r.get(11)?,
                upstream_ms: r.get(12)?,
            })
        })
        .map_err(e)?
        .collect::<Result<_, _>>()
        .map_err(e)?;
    let more = rows.len() > limit;
    rows.truncate(limit);
    Ok(LogReport { rows, more, limit })
}
