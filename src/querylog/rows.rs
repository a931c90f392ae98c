//! How schema 4 stores a query: a row of small integers in `query_rows`, keyed by
//! (client, ts_ms, seq), its strings (client, address, name, group, categories, list) once
//! each in `texts`, and qtype, result, action and rcode packed into one integer, `kind`.
//! About 25–35 bytes a row on disk, where schema 3 took well over 100.

use std::borrow::Cow;
use std::collections::HashMap;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use rusqlite::{params, Connection, OptionalExtension};

use super::sink::{qtype_text, rcode_name};
use crate::observe::events::QueryResult;
use crate::policy::category::Action;

/// A query as it is stored, before its strings become ids.
pub(super) struct RowFields<'a> {
    pub client: &'a str,
    pub ts_ms: i64,
    /// The address (or network) the query came from.
    pub addr: &'a str,
    /// The configured name, when there is one and the log is not anonymized.
    pub client_name: Option<&'a str>,
    pub group: Option<&'a str>,
    pub name: &'a str,
    pub kind: Kind,
    /// The matched categories, comma-separated, as `log` prints them.
    pub categories: Option<Cow<'a, str>>,
    pub list: Option<&'a str>,
    pub upstream_ms: Option<i64>,
}

/// qtype, result, action and rcode in one integer: result in bits 0–2, action in 3–4, qtype
/// in 5–20, rcode from 21: a usual NOERROR answer to A or AAAA takes one or two bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Kind(pub i64);

impl Kind {
    pub fn new(qtype: u16, result: QueryResult, action: Option<Action>, rcode: u16) -> Kind {
        Kind(
            result_code(result)
                | action_code(action) << 3
                | i64::from(qtype) << 5
                | i64::from(rcode) << 21,
        )
    }

    pub fn result(self) -> QueryResult {
        QueryResult::ALL
            .into_iter()
            .find(|r| result_code(*r) == self.0 & 7)
            .unwrap_or(QueryResult::Failed)
    }

    pub fn action(self) -> Option<Action> {
        match (self.0 >> 3) & 3 {
            1 => Some(Action::Blocked),
            2 => Some(Action::Observed),
            3 => Some(Action::Allowed),
            _ => None,
        }
    }

    pub fn qtype(self) -> Cow<'static, str> {
        qtype_text(RecordType::from(((self.0 >> 5) & 0xffff) as u16))
    }

    pub fn rcode(self) -> Cow<'static, str> {
        rcode_name(<ResponseCode as From<u16>>::from(
            ((self.0 >> 21) & 0xfff) as u16,
        ))
    }
}

/// Results by how common they are: cached and forwarded cost no byte for the value.
pub(super) fn result_code(r: QueryResult) -> i64 {
    match r {
        QueryResult::Cached => 0,
        QueryResult::Forwarded => 1,
        QueryResult::Blocked => 2,
        QueryResult::Local => 3,
        QueryResult::Refused => 4,
        QueryResult::Failed => 5,
    }
}

pub(super) fn action_code(a: Option<Action>) -> i64 {
    match a {
        None => 0,
        Some(Action::Blocked) => 1,
        Some(Action::Observed) => 2,
        Some(Action::Allowed) => 3,
    }
}

/// A schema 3 row's qtype text (`A`, `TYPE65280`) as its number.
pub(super) fn qtype_number(text: &str) -> u16 {
    if let Some(n) = text.strip_prefix("TYPE").and_then(|n| n.parse().ok()) {
        return n;
    }
    text.parse::<RecordType>().map(u16::from).unwrap_or(0)
}

/// A schema 3 row's rcode text (`NXDOMAIN`, `RCODE23`) as its number.
pub(super) fn rcode_number(text: &str) -> u16 {
    if let Some(n) = text.strip_prefix("RCODE").and_then(|n| n.parse().ok()) {
        return n;
    }
    (0..=16u16)
        .find(|n| rcode_name(<ResponseCode as From<u16>>::from(*n)) == text)
        .unwrap_or(0)
}

/// The writer's copy of `texts`: string → id, so that a row costs no look-up for a string
/// seen before. Bounded: past [`MAX_TEXT_IDS`] it starts again from empty.
#[derive(Default)]
pub(super) struct TextIds {
    ids: HashMap<Box<str>, i64>,
}

const MAX_TEXT_IDS: usize = 1 << 20;

impl TextIds {
    pub fn clear(&mut self) {
        self.ids.clear();
    }

    /// The id of `text`, added to `texts` when new.
    pub fn id(&mut self, tx: &Connection, text: &str) -> rusqlite::Result<i64> {
        if let Some(id) = self.ids.get(text) {
            return Ok(*id);
        }
        let found: Option<i64> = tx
            .prepare_cached("SELECT id FROM texts WHERE text = ?1")?
            .query_row([text], |r| r.get(0))
            .optional()?;
        let id = match found {
            Some(id) => id,
            None => {
                tx.prepare_cached("INSERT INTO texts (text) VALUES (?1)")?
                    .execute([text])?;
                tx.last_insert_rowid()
            }
        };
        if self.ids.len() >= MAX_TEXT_IDS {
            self.ids.clear();
        }
        self.ids.insert(text.into(), id);
        Ok(id)
    }
}

const INSERT_ROW: &str = "INSERT OR IGNORE INTO query_rows (client, ts_ms, seq, addr, name, \
    kind, grp, cats, list, upstream_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

/// Inserts one row (in the caller's transaction).
pub(super) fn insert_row(
    tx: &Connection,
    texts: &mut TextIds,
    f: &RowFields<'_>,
) -> rusqlite::Result<()> {
    let client = texts.id(tx, f.client)?;
    // The address is kept only when it is not the client's own key (a named device).
    let addr = match f.client_name {
        Some(_) if f.addr != f.client => Some(texts.id(tx, f.addr)?),
        _ => None,
    };
    let name = texts.id(tx, f.name)?;
    let grp = f.group.map(|g| texts.id(tx, g)).transpose()?;
    let cats = match &f.categories {
        Some(c) => Some(category_set(tx, texts, c)?),
        None => None,
    };
    let list = f.list.map(|l| texts.id(tx, l)).transpose()?;
    let mut ins = tx.prepare_cached(INSERT_ROW)?;
    // Two queries of a client in the same millisecond: the second takes the next `seq`.
    for seq in 0i64.. {
        let n = ins.execute(params![
            client,
            f.ts_ms,
            seq,
            addr,
            name,
            f.kind.0,
            grp,
            cats,
            list,
            f.upstream_ms
        ])?;
        if n == 1 {
            break;
        }
    }
    Ok(())
}

/// The id of a set of categories (`a,b`), recording in `category_sets` which categories it
/// holds the first time it is seen.
fn category_set(tx: &Connection, texts: &mut TextIds, set: &str) -> rusqlite::Result<i64> {
    if let Some(id) = texts.ids.get(set) {
        return Ok(*id);
    }
    let id = texts.id(tx, set)?;
    let mut ins =
        tx.prepare_cached("INSERT OR IGNORE INTO category_sets (category, cats) VALUES (?1, ?2)")?;
    for c in set.split(',') {
        ins.execute(params![c, id])?;
    }
    Ok(id)
}

/// The ids of `texts` among `keys` (client keys of a selector).
pub(super) fn text_ids(conn: &Connection, keys: &[String]) -> rusqlite::Result<Vec<i64>> {
    let mut st = conn.prepare_cached("SELECT id FROM texts WHERE text = ?1")?;
    let mut out = Vec::new();
    for k in keys {
        if let Some(id) = st.query_row([k], |r| r.get(0)).optional()? {
            out.push(id);
        }
    }
    Ok(out)
}

/// The `cats` ids that hold `category`.
pub(super) fn sets_of(conn: &Connection, category: &str) -> rusqlite::Result<Vec<i64>> {
    let mut st = conn.prepare_cached("SELECT cats FROM category_sets WHERE category = ?1")?;
    let rows = st.query_map([category], |r| r.get(0))?;
    rows.collect()
}

/// Every client with rows, by a loose scan of the primary key (one seek per client).
pub(super) fn all_clients(conn: &Connection) -> rusqlite::Result<Vec<i64>> {
    let mut st = conn.prepare_cached(
        "WITH RECURSIVE c(x) AS ( \
           SELECT (SELECT min(client) FROM query_rows) \
           UNION ALL \
           SELECT (SELECT min(client) FROM query_rows WHERE client > c.x) FROM c \
           WHERE c.x IS NOT NULL) \
         SELECT x FROM c WHERE x IS NOT NULL",
    )?;
    let rows = st.query_map([], |r| r.get(0))?;
    rows.collect()
}

/// `a, b, c` as SQL integer literals (ids read from the database, never user text).
pub(super) fn id_list(ids: &[i64]) -> String {
    ids.iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
