//! How schema 5 stores a query: a row of small integers in `query_rows`, keyed by
//! (client, ts_ms, seq), its strings once each in `texts`, and qtype, result, action and rcode
//! packed into one integer, `kind`. A named device's address and its group are one text, the
//! row's `origin`; the matched categories and the list are one text, its `matched`: fewer
//! columns, fewer header bytes. About 20–30 bytes a row on disk, where schema 3 took well over
//! 100.

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

/// qtype, result, action and rcode in one integer, laid out so that the usual row costs no
/// byte or one: result in bits 0–2, action in 3–4, the query type in 5–6 (A, AAAA, HTTPS, or
/// 3: another, whose number is in bits 19–34), rcode in 7–18. A NOERROR answer to A, cached
/// or forwarded, is 0 or 1 (SQLite stores both in the row's header alone).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Kind(pub i64);

/// The query types that get a code of their own, by how common they are.
const COMMON_QTYPES: [u16; 3] = [1, 28, 65]; // A, AAAA, HTTPS
const OTHER_QTYPE: i64 = 3;

impl Kind {
    pub fn new(qtype: u16, result: QueryResult, action: Option<Action>, rcode: u16) -> Kind {
        let qtype_bits = match COMMON_QTYPES.iter().position(|t| *t == qtype) {
            Some(code) => (code as i64) << 5,
            None => OTHER_QTYPE << 5 | i64::from(qtype) << 19,
        };
        Kind(
            result_code(result)
                | action_code(action) << 3
                | qtype_bits
                | i64::from(rcode & 0xfff) << 7,
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

    pub fn qtype_number(self) -> u16 {
        match (self.0 >> 5) & 3 {
            OTHER_QTYPE => ((self.0 >> 19) & 0xffff) as u16,
            code => COMMON_QTYPES[code as usize],
        }
    }

    pub fn qtype(self) -> Cow<'static, str> {
        qtype_text(RecordType::from(self.qtype_number()))
    }

    pub fn rcode(self) -> Cow<'static, str> {
        rcode_name(<ResponseCode as From<u16>>::from(
            ((self.0 >> 7) & 0xfff) as u16,
        ))
    }

    /// Schema 4's packing (qtype in bits 5–20, rcode from 21) read as this one.
    pub fn from_schema_4(old: i64) -> Kind {
        let result = QueryResult::ALL
            .into_iter()
            .find(|r| result_code(*r) == old & 7)
            .unwrap_or(QueryResult::Failed);
        let action = Kind(old & 0x18).action();
        Kind::new(
            ((old >> 5) & 0xffff) as u16,
            result,
            action,
            ((old >> 21) & 0xfff) as u16,
        )
    }
}

/// The `kind` expression of the `queries` view: the query type's name (SQL).
pub(super) const QTYPE_SQL: &str = "CASE (r.kind >> 5) & 3 WHEN 0 THEN 'A' WHEN 1 THEN 'AAAA' \
    WHEN 2 THEN 'HTTPS' ELSE CASE (r.kind >> 19) & 65535 WHEN 2 THEN 'NS' WHEN 5 THEN 'CNAME' \
    WHEN 6 THEN 'SOA' WHEN 12 THEN 'PTR' WHEN 15 THEN 'MX' WHEN 16 THEN 'TXT' WHEN 33 THEN 'SRV' \
    WHEN 64 THEN 'SVCB' WHEN 255 THEN 'ANY' ELSE 'TYPE' || ((r.kind >> 19) & 65535) END END";

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

const INSERT_ROW: &str = "INSERT OR IGNORE INTO query_rows (client, ts_ms, seq, name, kind, \
    origin, matched, upstream_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

/// Separates the two parts of an `origin` or `matched` text (a control character: no address,
/// group, category or list name holds one).
const SEP: char = '\u{1f}';

/// A named device's address and the client's group as one text (`addr␟group`, either part
/// empty), or none when neither is there.
pub(super) fn origin_text(addr: Option<&str>, group: Option<&str>) -> Option<String> {
    (addr.is_some() || group.is_some())
        .then(|| format!("{}{SEP}{}", addr.unwrap_or(""), group.unwrap_or("")))
}

/// The matched categories (comma-separated) and list as one text, or none when neither.
pub(super) fn matched_text(cats: Option<&str>, list: Option<&str>) -> Option<String> {
    (cats.is_some() || list.is_some())
        .then(|| format!("{}{SEP}{}", cats.unwrap_or(""), list.unwrap_or("")))
}

/// The two parts of an `origin` or `matched` text, each `None` when empty.
pub(super) fn split_pair(text: Option<&str>) -> (Option<&str>, Option<&str>) {
    let Some(text) = text else {
        return (None, None);
    };
    let (a, b) = text.split_once(SEP).unwrap_or((text, ""));
    fn part(p: &str) -> Option<&str> {
        (!p.is_empty()).then_some(p)
    }
    (part(a), part(b))
}

/// Inserts one row (in the caller's transaction).
pub(super) fn insert_row(
    tx: &Connection,
    texts: &mut TextIds,
    f: &RowFields<'_>,
) -> rusqlite::Result<()> {
    let client = texts.id(tx, f.client)?;
    // The address is kept only when it is not the client's own key (a named device).
    let addr = match f.client_name {
        Some(_) if f.addr != f.client => Some(f.addr),
        _ => None,
    };
    let origin = match origin_text(addr, f.group) {
        Some(t) => Some(texts.id(tx, &t)?),
        None => None,
    };
    let name = texts.id(tx, f.name)?;
    let matched = match matched_text(f.categories.as_deref(), f.list) {
        Some(t) => Some(matched_id(tx, texts, &t)?),
        None => None,
    };
    let mut ins = tx.prepare_cached(INSERT_ROW)?;
    // Two queries of a client in the same millisecond: the second takes the next `seq`.
    for seq in 0i64.. {
        let n = ins.execute(params![
            client,
            f.ts_ms,
            seq,
            name,
            f.kind.0,
            origin,
            matched,
            f.upstream_ms
        ])?;
        if n == 1 {
            break;
        }
    }
    Ok(())
}

/// The id of a `matched` text (`a,b␟list`), recording in `category_sets` which categories it
/// holds the first time it is seen.
fn matched_id(tx: &Connection, texts: &mut TextIds, text: &str) -> rusqlite::Result<i64> {
    if let Some(id) = texts.ids.get(text) {
        return Ok(*id);
    }
    let id = texts.id(tx, text)?;
    let mut ins = tx.prepare_cached(
        "INSERT OR IGNORE INTO category_sets (category, matched) VALUES (?1, ?2)",
    )?;
    if let (Some(cats), _) = split_pair(Some(text)) {
        for c in cats.split(',') {
            ins.execute(params![c, id])?;
        }
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

/// The `matched` ids that hold `category`.
pub(super) fn sets_of(conn: &Connection, category: &str) -> rusqlite::Result<Vec<i64>> {
    let mut st = conn.prepare_cached("SELECT matched FROM category_sets WHERE category = ?1")?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_reads_back_what_it_packs() {
        let actions = [
            None,
            Some(Action::Blocked),
            Some(Action::Observed),
            Some(Action::Allowed),
        ];
        for qtype in [1u16, 28, 65, 12, 16, 255, 65280] {
            for result in QueryResult::ALL {
                for action in actions {
                    for rcode in [0u16, 2, 3, 5, 23] {
                        let k = Kind::new(qtype, result, action, rcode);
                        assert_eq!(k.qtype_number(), qtype);
                        assert_eq!(k.result(), result);
                        assert_eq!(k.action(), action);
                        assert_eq!(
                            k.rcode(),
                            rcode_name(<ResponseCode as From<u16>>::from(rcode))
                        );
                        // The old packing of the same query reads as the same.
                        let old = result_code(result)
                            | action_code(action) << 3
                            | i64::from(qtype) << 5
                            | i64::from(rcode) << 21;
                        assert_eq!(Kind::from_schema_4(old), k);
                    }
                }
            }
        }
        // The usual answers take no byte of their own in SQLite (0 and 1) or one (< 128).
        let a = Kind::new(1, QueryResult::Cached, None, 0).0;
        let fwd = Kind::new(1, QueryResult::Forwarded, None, 0).0;
        let aaaa = Kind::new(28, QueryResult::Forwarded, None, 0).0;
        let https = Kind::new(65, QueryResult::Blocked, Some(Action::Blocked), 0).0;
        assert_eq!((a, fwd), (0, 1));
        assert!(aaaa < 128 && https < 128, "{aaaa} {https}");
    }

    #[test]
    fn origin_and_matched_texts_split_back() {
        for (a, b) in [
            (Some("10.0.0.7"), Some("kids")),
            (Some("10.0.0.7"), None),
            (None, Some("kids")),
        ] {
            let t = origin_text(a, b).unwrap();
            assert_eq!(split_pair(Some(&t)), (a, b));
            let t = matched_text(a, b).unwrap();
            assert_eq!(split_pair(Some(&t)), (a, b));
        }
        assert_eq!(origin_text(None, None), None);
        assert_eq!(matched_text(None, None), None);
        assert_eq!(split_pair(None), (None, None));
    }
}
