//! What `verify` (and `log`, `mark`) ask of a PostgreSQL log: the same questions as
//! [`crate::querylog::read`] and [`crate::querylog::activity`] ask of SQLite, with the same
//! answers.

use std::collections::BTreeMap;

use super::batch::action_text;
use super::PgStore;
use crate::querylog::activity::{minute_bounds, OrdinaryCounts};
use crate::querylog::error::{CommandError, QueryLogError};
use crate::querylog::read::{CategoryCounts, ClientSelector, MarkInfo};
use crate::querylog::settings::{LatestMark, RUN_STALE_MS};
use crate::querylog::store::{DeviceLookup, LogRead};
use crate::querylog::traffic::TrafficCounts;
use crate::timespec::{self, MarkRef};

const MINUTE_MS: i64 = 60_000;

impl PgStore {
    pub(crate) fn latest_marks(&self) -> Result<Vec<LatestMark>, QueryLogError> {
        let rows = self.run(
            "reading marks",
            self.client.query(
                "SELECT DISTINCT ON (client) client, id, ts_ms, note FROM marks \
                 ORDER BY client, ts_ms DESC, id DESC",
                &[],
            ),
        )?;
        Ok(rows
            .iter()
            .map(|r| LatestMark {
                client: r.get(0),
                id: r.get(1),
                time_ms: r.get(2),
                note: r.get(3),
            })
            .collect())
    }

    pub(super) fn mark_info(r: &tokio_postgres::Row) -> MarkInfo {
        let ts: i64 = r.get(1);
        MarkInfo {
            id: r.get(0),
            time: timespec::rfc3339_ms(ts),
            time_ms: ts,
            client: r.get(2),
            note: r.get(3),
        }
    }
}

impl DeviceLookup for PgStore {
    fn device_exists(&self, name: &str) -> bool {
        self.run(
            "reading devices",
            self.client.query_one(
                "SELECT EXISTS (SELECT 1 FROM devices WHERE device = $1)",
                &[&name],
            ),
        )
        .map(|r| r.get::<_, bool>(0))
        .unwrap_or(false)
    }

    fn device_addresses(&self, name: &str) -> Vec<String> {
        self.run(
            "reading devices",
            self.client.query(
                "SELECT addr FROM device_addresses WHERE device = $1 ORDER BY last_ms DESC",
                &[&name],
            ),
        )
        .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        .unwrap_or_default()
    }

    fn device_of_address(&self, addr: &str) -> Option<String> {
        self.run(
            "reading devices",
            self.client.query_opt(
                "SELECT device FROM device_addresses WHERE addr = $1 AND device != addr \
                 ORDER BY last_ms DESC LIMIT 1",
                &[&addr],
            ),
        )
        .ok()
        .flatten()
        .map(|r| r.get(0))
    }

    fn device_names(&self) -> Vec<String> {
        self.run(
            "reading devices",
            self.client
                .query("SELECT device FROM devices ORDER BY device", &[]),
        )
        .map(|rows| {
            rows.iter()
                .map(|r| r.get::<_, String>(0))
                .filter(|d| {
                    d.parse::<std::net::IpAddr>().is_err() && d.parse::<ipnet::IpNet>().is_err()
                })
                .collect()
        })
        .unwrap_or_default()
    }
}

impl LogRead for PgStore {
    fn source(&self) -> String {
        self.url.to_string()
    }

    fn find_mark(
        &self,
        which: MarkRef,
        client: Option<&ClientSelector>,
    ) -> Result<MarkInfo, CommandError> {
        let found = match (which, client) {
            (MarkRef::Id(id), _) => self.run(
                "reading marks",
                self.client.query_opt(
                    "SELECT id, ts_ms, client, note FROM marks WHERE id = $1",
                    &[&id],
                ),
            )?,
            (MarkRef::Last, Some(sel)) => self.run(
                "reading marks",
                self.client.query_opt(
                    "SELECT id, ts_ms, client, note FROM marks WHERE client = ANY($1) \
                     ORDER BY ts_ms DESC, id DESC LIMIT 1",
                    &[&sel.keys],
                ),
            )?,
            (MarkRef::Last, None) => self.run(
                "reading marks",
                self.client.query_opt(
                    "SELECT id, ts_ms, client, note FROM marks ORDER BY ts_ms DESC, id DESC LIMIT 1",
                    &[],
                ),
            )?,
        };
        match found {
            Some(r) => Ok(Self::mark_info(&r)),
            None => {
                let who = client
                    .map(|s| format!(" for {}", s.label))
                    .unwrap_or_default();
                let what = match which {
                    MarkRef::Id(id) => format!("there is no mark {id}"),
                    MarkRef::Last => format!("there is no mark{who}"),
                };
                Err(CommandError::Usage(format!(
                    "{what} in {}; record one with `telesink mark --client C --note TEXT`, or give the time itself (RFC 3339 or 2h)",
                    self.url
                )))
            }
        }
    }

    fn category_counts(
        &self,
        sel: &ClientSelector,
        category: &str,
        from: i64,
        split: i64,
        to: i64,
    ) -> Result<CategoryCounts, QueryLogError> {
        let rows = self.run(
            "counting a category",
            self.client.query(
                "SELECT name, count(*) FILTER (WHERE ts_ms < $2), count(*) FILTER (WHERE ts_ms >= $2), \
                        max(ts_ms) \
                 FROM queries WHERE client = ANY($5) AND ts_ms >= $3 AND ts_ms < $4 \
                   AND $1 = ANY(categories) GROUP BY name",
                &[&category, &split, &from, &to, &sel.keys],
            ),
        )?;
        let domains: BTreeMap<String, (u64, u64, i64)> = rows
            .iter()
            .map(|r| {
                (
                    r.get::<_, String>(0),
                    (
                        r.get::<_, i64>(1) as u64,
                        r.get::<_, i64>(2) as u64,
                        r.get::<_, i64>(3),
                    ),
                )
            })
            .collect();
        let rows = self.run(
            "counting a category",
            self.client.query(
                "SELECT action, count(*) FROM queries WHERE client = ANY($4) AND ts_ms >= $2 \
                   AND ts_ms < $3 AND $1 = ANY(categories) GROUP BY action",
                &[&category, &split, &to, &sel.keys],
            ),
        )?;
        let mut after_actions: BTreeMap<String, u64> = BTreeMap::new();
        for r in &rows {
            let a = r
                .get::<_, Option<i16>>(0)
                .map_or_else(|| "unknown".to_string(), action_text);
            *after_actions.entry(a).or_default() += r.get::<_, i64>(1) as u64;
        }
        Ok(CategoryCounts {
            domains,
            after_actions,
        })
    }

    fn logged_ms(&self, from: i64, to: i64, now: i64) -> Result<i64, QueryLogError> {
        if to <= from {
            return Ok(0);
        }
        let rows = self.run(
            "reading runs",
            self.client.query(
                "SELECT start_ms, alive_ms, end_ms, \
                        EXISTS (SELECT 1 FROM runs l WHERE l.start_ms > r.alive_ms) \
                 FROM runs r WHERE start_ms < $1 AND mode != 'none' ORDER BY start_ms",
                &[&to],
            ),
        )?;
        let mut total = 0;
        let mut cursor = from;
        for r in &rows {
            let start: i64 = r.get(0);
            let alive: i64 = r.get(1);
            let end: Option<i64> = r.get(2);
            let superseded: bool = r.get(3);
            let end = match end {
                Some(e) => e,
                None if !superseded && alive >= now - RUN_STALE_MS => now.max(alive),
                None => alive,
            };
            let s = start.max(cursor);
            let e = end.min(to);
            if e > s {
                total += e - s;
                cursor = e;
            }
        }
        Ok(total)
    }

    fn client_categories(&self, sel: &ClientSelector) -> Result<Vec<String>, QueryLogError> {
        let rows = self.run(
            "reading categories",
            self.client.query(
                "SELECT DISTINCT unnest(categories) AS c FROM queries WHERE client = ANY($1) \
                 AND categories IS NOT NULL ORDER BY c",
                &[&sel.keys],
            ),
        )?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn ordinary_counts(
        &self,
        sel: &ClientSelector,
        from: i64,
        split: i64,
        to: i64,
    ) -> Result<OrdinaryCounts, QueryLogError> {
        let keys = &sel.keys;
        let runs = self.run(
            "reading runs",
            self.client.query_one(
                "SELECT count(*) FILTER (WHERE mode != 'all'), count(*) FROM runs \
                 WHERE start_ms < $1 AND (end_ms IS NULL OR end_ms > $2)",
                &[&to, &from],
            ),
        )?;
        let exact = runs.get::<_, i64>(0) == 0 && runs.get::<_, i64>(1) > 0;
        let mut last_query_ms: Option<i64> = self
            .run(
                "reading device activity",
                self.client.query_one(
                    "SELECT max(CASE WHEN last_ms < $1 THEN last_ms ELSE first_ms END) \
                     FROM activity WHERE device = ANY($3) AND minute <= $2 AND first_ms < $1",
                    &[&to, &to.div_euclid(MINUTE_MS), keys],
                ),
            )?
            .get(0);
        if exact {
            let r = self.run(
                "counting ordinary queries",
                self.client.query_one(
                    "SELECT count(*) FILTER (WHERE ts_ms < $1), count(*) FILTER (WHERE ts_ms >= $1) \
                     FROM queries WHERE client = ANY($4) AND ts_ms >= $2 AND ts_ms < $3 \
                       AND categories IS NULL",
                    &[&split, &from, &to, keys],
                ),
            )?;
            let (before, after): (i64, i64) = (r.get(0), r.get(1));
            let row_last: Option<i64> = self
                .run(
                    "counting ordinary queries",
                    self.client.query_one(
                        "SELECT max(ts_ms) FROM queries WHERE client = ANY($2) AND ts_ms < $1",
                        &[&to, keys],
                    ),
                )?
                .get(0);
            last_query_ms = last_query_ms.max(row_last);
            return Ok(OrdinaryCounts {
                before: before as u64,
                after: after as u64,
                last_query_ms,
                exact: true,
            });
        }
        let rows = self.run(
            "reading device activity",
            self.client.query(
                "SELECT minute, ordinary, ord_first_ms, ord_last_ms, ord_seconds FROM activity \
                 WHERE device = ANY($3) AND minute >= $1 AND minute <= $2 AND ordinary > 0",
                &[
                    &from.div_euclid(MINUTE_MS),
                    &(to - 1).div_euclid(MINUTE_MS),
                    keys,
                ],
            ),
        )?;
        let (mut before, mut after) = (0u64, 0u64);
        for r in &rows {
            let start = r.get::<_, i64>(0) * MINUTE_MS;
            let count = r.get::<_, i64>(1) as u64;
            let first: i64 = r.get::<_, Option<i64>>(2).unwrap_or(start);
            let last: i64 = r.get::<_, Option<i64>>(3).unwrap_or(start);
            let seconds = r.get::<_, i64>(4) as u64;
            before += minute_bounds(start, count, first, last, seconds, from, split).1;
            after += minute_bounds(start, count, first, last, seconds, split, to).0;
        }
        Ok(OrdinaryCounts {
            before,
            after,
            last_query_ms,
            exact: false,
        })
    }

    /// Packet counts (`[addresses] nftables`) are kept only in a SQLite log.
    fn traffic_counts(
        &self,
        _sel: &ClientSelector,
        _category: &str,
        _from: i64,
        _split: i64,
        _to: i64,
    ) -> Result<Option<TrafficCounts>, QueryLogError> {
        Ok(None)
    }
}
