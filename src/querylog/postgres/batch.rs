//! The rows of one batch, column by column, and the fast write: one
//! `INSERT … SELECT FROM unnest($1, $2, …)` per batch, so a batch of thousands of rows is one
//! statement and one round trip.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use tokio_postgres::GenericClient;

use crate::observe::events::QueryResult;
use crate::policy::category::Action;
use crate::querylog::sink::{anonymize_addr, qtype_text, rcode_name, Row};

/// A query's result as stored.
pub(crate) fn result_code(r: QueryResult) -> i16 {
    QueryResult::ALL
        .iter()
        .position(|q| *q == r)
        .expect("every result is in ALL") as i16
}

pub(crate) fn result_text(code: i16) -> Cow<'static, str> {
    match QueryResult::ALL.get(code as usize) {
        Some(r) => Cow::Borrowed(r.as_str()),
        None => Cow::Owned(format!("result{code}")),
    }
}

const ACTIONS: [Action; 3] = [Action::Blocked, Action::Observed, Action::Allowed];

pub(crate) fn action_code(a: Action) -> i16 {
    ACTIONS.iter().position(|x| *x == a).unwrap_or(0) as i16
}

pub(crate) fn action_text(code: i16) -> String {
    match ACTIONS.get(code as usize) {
        Some(a) => a.as_str().to_string(),
        None => "unknown".to_string(),
    }
}

pub(crate) fn qtype_name(code: i32) -> String {
    qtype_text(RecordType::from(code as u16)).into_owned()
}

pub(crate) fn rcode_text(code: i16) -> String {
    rcode_name(<ResponseCode as From<u16>>::from(code as u16)).into_owned()
}

/// One row as a bulk filler gives it.
#[derive(Clone, Debug)]
pub struct LogRow<'a> {
    /// Milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// The configured name, else the address (its network when anonymized).
    pub client: &'a str,
    pub client_addr: &'a str,
    pub client_name: Option<&'a str>,
    pub group: Option<&'a str>,
    pub name: &'a str,
    pub qtype: RecordType,
    pub result: QueryResult,
    /// Matched categories; empty when none matched.
    pub categories: &'a [&'a str],
    pub list: Option<&'a str>,
    pub action: Option<Action>,
    pub rcode: ResponseCode,
    pub upstream_ms: Option<u32>,
}

/// A batch of rows, column by column (what `unnest` takes).
#[derive(Debug, Default)]
pub struct RowBatch {
    ts_ms: Vec<i64>,
    client: Vec<String>,
    client_addr: Vec<String>,
    client_name: Vec<Option<String>>,
    grp: Vec<Option<String>>,
    name: Vec<String>,
    qtype: Vec<i32>,
    result: Vec<i16>,
    /// Comma-separated (category names have no comma); split in SQL.
    categories: Vec<Option<String>>,
    list: Vec<Option<String>>,
    action: Vec<Option<i16>>,
    rcode: Vec<i16>,
    upstream_ms: Vec<Option<i32>>,
}

impl RowBatch {
    pub fn len(&self) -> usize {
        self.ts_ms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ts_ms.is_empty()
    }

    pub fn clear(&mut self) {
        *self = RowBatch::default();
    }

    /// Adds one row.
    pub fn push(&mut self, r: &LogRow<'_>) {
        self.ts_ms.push(r.ts_ms);
        self.client.push(r.client.to_string());
        self.client_addr.push(r.client_addr.to_string());
        self.client_name.push(r.client_name.map(str::to_string));
        self.grp.push(r.group.map(str::to_string));
        self.name.push(r.name.to_string());
        self.qtype.push(i32::from(u16::from(r.qtype)));
        self.result.push(result_code(r.result));
        self.categories.push(if r.categories.is_empty() {
            None
        } else {
            Some(r.categories.join(","))
        });
        self.list.push(r.list.map(str::to_string));
        self.action.push(r.action.map(action_code));
        self.rcode.push(u16::from(r.rcode) as i16);
        self.upstream_ms
            .push(r.upstream_ms.map(|u| u.min(i32::MAX as u32) as i32));
    }

    /// The writer's rows, as the SQLite writer stores them (client name, or address, or
    /// network when anonymizing).
    pub(in crate::querylog) fn from_rows(rows: &[Row], anonymize: bool) -> RowBatch {
        let mut b = RowBatch::default();
        let mut addr_text: HashMap<IpAddr, String> = HashMap::new();
        for r in rows {
            let addr: &str = addr_text.entry(r.seen.addr).or_insert_with(|| {
                if anonymize {
                    anonymize_addr(r.seen.addr).to_string()
                } else {
                    r.seen.addr.to_string()
                }
            });
            let (client, name): (&str, Option<&str>) = match r.seen.client_name.as_deref() {
                Some(n) if !anonymize => (n, Some(n)),
                _ => (addr, None),
            };
            let cats: Vec<&str> = r.category_table.names(r.categories).map(|c| &**c).collect();
            b.push(&LogRow {
                ts_ms: r.seen.ts_ms,
                client,
                client_addr: addr,
                client_name: name,
                group: r.group.as_deref(),
                name: r.name.as_str(),
                qtype: r.qtype,
                result: r.result,
                categories: &cats,
                list: r.list.as_deref(),
                action: r.action,
                rcode: r.rcode,
                upstream_ms: r.upstream_ms,
            });
        }
        b
    }
}

const INSERT_ROWS: &str = "INSERT INTO queries (ts_ms, client, client_addr, client_name, grp, \
    name, qtype, result, categories, list, action, rcode, upstream_ms) \
    SELECT t, c, a, cn, g, n, qt, r, string_to_array(cat, ','), l, act, rc, u \
    FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
                $7::integer[], $8::smallint[], $9::text[], $10::text[], $11::smallint[], \
                $12::smallint[], $13::integer[]) \
         AS x(t, c, a, cn, g, n, qt, r, cat, l, act, rc, u)";

/// Inserts the batch with one statement (the caller's transaction, if any, commits it).
pub(crate) async fn insert_rows(
    client: &impl GenericClient,
    b: &RowBatch,
) -> Result<u64, tokio_postgres::Error> {
    if b.is_empty() {
        return Ok(0);
    }
    client
        .execute(
            INSERT_ROWS,
            &[
                &b.ts_ms,
                &b.client,
                &b.client_addr,
                &b.client_name,
                &b.grp,
                &b.name,
                &b.qtype,
                &b.result,
                &b.categories,
                &b.list,
                &b.action,
                &b.rcode,
                &b.upstream_ms,
            ],
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_read_back_as_the_sqlite_log_writes_them() {
        for r in QueryResult::ALL {
            assert_eq!(result_text(result_code(r)), r.as_str());
        }
        for a in ACTIONS {
            assert_eq!(action_text(action_code(a)), a.as_str());
        }
        assert_eq!(action_code(Action::Observed), 1);
        assert_eq!(qtype_name(i32::from(u16::from(RecordType::AAAA))), "AAAA");
        assert_eq!(qtype_name(65280), "TYPE65280");
        assert_eq!(
            rcode_text(u16::from(ResponseCode::NXDomain) as i16),
            "NXDOMAIN"
        );
        assert_eq!(rcode_text(23), "RCODE23");
    }
}
