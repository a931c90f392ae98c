//! The tables, their migrations, and opening the database for writing (the server, `mark`) or
//! reading (`log`, `verify`, `devices`).

use std::path::Path;
use std::time::Duration;

use std::borrow::Cow;

use rusqlite::{Connection, OpenFlags};

use super::error::{DbErrorKind, QueryLogError};
use super::rows::{insert_row, qtype_number, rcode_number, Kind, RowFields, TextIds, QTYPE_SQL};
use crate::observe::events::QueryResult;
use crate::policy::category::Action;

/// 2: without the `(category, ts_ms)` index of 1, which cost the writer about a third of its
/// time per row; its questions are served by the primary key, client by client.
/// 3: per-device activity (`activity`, `devices`, `device_addresses`), filled from the rows of
/// older schemas by [`BACKFILL_3`].
/// 4: a query is a row of small integers in `query_rows` (WITHOUT ROWID, keyed by client and
/// time), its strings once each in `texts`; `queries` and `query_categories` are gone, their
/// rows moved over by [`move_rows_3`]. A tenth of the bytes per query.
/// 5: a row's address and group are one `origin`, its categories and list one `matched`, the
/// usual `kind` costs no byte, and a device minute's ordinary first, last and seconds are
/// stored relative to the minute's first and last query: a fifth fewer bytes per query
/// ([`move_rows_4`]).
pub(crate) const SCHEMA_VERSION: i64 = 5;

/// Every table of the query log; another application's SQLite file is not taken over.
const TABLES: &str = "'queries', 'query_categories', 'marks', 'runs', 'activity', 'devices', \
                      'device_addresses', 'texts', 'query_rows', 'category_sets', \
                      'device_minutes'";

/// The tables of schema 3 that schema 4 replaced (to migrate a log of schema 1 or 2 through 3).
const QUERIES_3: &str = "
CREATE TABLE IF NOT EXISTS queries (
    id          INTEGER PRIMARY KEY,
    ts_ms       INTEGER NOT NULL,      -- milliseconds since the Unix epoch
    client      TEXT NOT NULL,         -- configured name, else address; network when anonymized
    client_addr TEXT NOT NULL,         -- address; network when anonymized
    client_name TEXT,                  -- NULL when unnamed or anonymized
    grp         TEXT,                  -- NULL: [default]
    name        TEXT NOT NULL,
    qtype       TEXT NOT NULL,
    result      TEXT NOT NULL,         -- blocked cached forwarded local refused failed
    categories  TEXT,                  -- comma-separated, NULL when none matched
    list        TEXT,
    action      TEXT,                  -- blocked observed allowed, NULL when none matched
    rcode       TEXT NOT NULL,
    upstream_ms INTEGER
);
CREATE INDEX IF NOT EXISTS queries_client_ts ON queries (client, ts_ms);
CREATE INDEX IF NOT EXISTS queries_ts ON queries (ts_ms);

-- One row per (query, matched category): what verify counts, by one range scan of the primary
-- key per client; log --category and retention take it client by client too.
CREATE TABLE IF NOT EXISTS query_categories (
    category TEXT NOT NULL,
    client   TEXT NOT NULL,
    ts_ms    INTEGER NOT NULL,
    query_id INTEGER NOT NULL,
    name     TEXT NOT NULL,
    action   TEXT,
    PRIMARY KEY (category, client, ts_ms, query_id)
) WITHOUT ROWID;

";

/// Schema 5's queries. A row is about 20–30 bytes: the client, name, origin (a named device's
/// address and the group) and matched (categories and list) are ids into `texts`; qtype, result,
/// action and rcode are packed into `kind` (see `rows.rs`). Keyed by (client, ts_ms):
/// `log --client` and `verify` read one range per client key, retention deletes a range per
/// client.
const QUERIES_5: &str = "
CREATE TABLE IF NOT EXISTS texts (
    id   INTEGER PRIMARY KEY,
    text TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS query_rows (
    client      INTEGER NOT NULL,     -- texts: configured name, else address; network when anonymized
    ts_ms       INTEGER NOT NULL,     -- milliseconds since the Unix epoch
    seq         INTEGER NOT NULL,     -- 0; 1, 2.. for more queries of the client in that ms
    name        INTEGER NOT NULL,     -- texts
    kind        INTEGER NOT NULL,     -- result | action << 3 | qtype code << 5 | rcode << 7 ...
    origin      INTEGER,              -- texts: 'address<US>group' of a named device or a group
    matched     INTEGER,              -- texts: 'categories<US>list'; NULL: nothing matched
    upstream_ms INTEGER,
    PRIMARY KEY (client, ts_ms, seq)
) WITHOUT ROWID;
-- `log --category` without --client; only matched rows are in it.
CREATE INDEX IF NOT EXISTS query_rows_matched ON query_rows (matched, ts_ms)
    WHERE matched IS NOT NULL;
-- Which categories each `matched` text holds.
CREATE TABLE IF NOT EXISTS category_sets (
    category TEXT NOT NULL,
    matched  INTEGER NOT NULL,
    PRIMARY KEY (category, matched)
) WITHOUT ROWID;
";

/// Schema 3 as a whole (tests make old logs with it).
#[cfg(test)]
pub(crate) fn schema_3() -> String {
    format!("{QUERIES_3} {COMMON} {ACTIVITY_3}")
}

/// Schema 4 as a whole, without its views (tests make old logs with it).
#[cfg(test)]
pub(crate) fn schema_4() -> String {
    format!("{QUERIES_4} {COMMON} {ACTIVITY_4}")
}

/// Schema 4's queries (for [`schema_4`]).
#[cfg(test)]
const QUERIES_4: &str = "
CREATE TABLE IF NOT EXISTS texts (
    id   INTEGER PRIMARY KEY,
    text TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS query_rows (
    client      INTEGER NOT NULL,     -- texts: configured name, else address; network when anonymized
    ts_ms       INTEGER NOT NULL,     -- milliseconds since the Unix epoch
    seq         INTEGER NOT NULL,     -- 0; 1, 2.. for more queries of the client in that ms
    addr        INTEGER,              -- texts: the address of a named client; NULL: the client key
    name        INTEGER NOT NULL,     -- texts
    kind        INTEGER NOT NULL,     -- result | action << 3 | qtype << 5 | rcode << 21
    grp         INTEGER,              -- texts; NULL: [default]
    cats        INTEGER,              -- texts: matched categories, comma-separated; NULL: none
    list        INTEGER,              -- texts
    upstream_ms INTEGER,
    PRIMARY KEY (client, ts_ms, seq)
) WITHOUT ROWID;
-- `log --category` without --client; only matched rows are in it.
CREATE INDEX IF NOT EXISTS query_rows_cats ON query_rows (cats, ts_ms) WHERE cats IS NOT NULL;
-- Which categories each `cats` text holds.
CREATE TABLE IF NOT EXISTS category_sets (
    category TEXT NOT NULL,
    cats     INTEGER NOT NULL,
    PRIMARY KEY (category, cats)
) WITHOUT ROWID;
";

/// Schema 4's device activity (for [`schema_4`]).
#[cfg(test)]
const ACTIVITY_4: &str = "
CREATE TABLE IF NOT EXISTS device_minutes (
    device        INTEGER NOT NULL,    -- texts: the device's name, else its address (network)
    minute        INTEGER NOT NULL,    -- ts_ms / 60000
    total         INTEGER NOT NULL,
    first_off     INTEGER NOT NULL,    -- ms into the minute
    last_off      INTEGER NOT NULL,
    ordinary      INTEGER NOT NULL,
    ord_first_off INTEGER,             -- NULL when ordinary = 0
    ord_last_off  INTEGER,
    ord_seconds   INTEGER NOT NULL,    -- bit s set: an ordinary query in second s of the minute
    PRIMARY KEY (device, minute)
) WITHOUT ROWID;
";

/// Schema 3's device activity, keyed by the device's name.
const ACTIVITY_3: &str = "
-- Per device and minute, in every mode that keeps a database: all its queries and the ordinary
-- ones (no category matched), with the first and last of each within the minute and the seconds
-- that had an ordinary query, so that verify can tell on which side of T a minute's queries
-- fell. `device` is the device's name,
-- else its address (its network when anonymized).
CREATE TABLE IF NOT EXISTS activity (
    device       TEXT NOT NULL,
    minute       INTEGER NOT NULL,     -- ts_ms / 60000
    total        INTEGER NOT NULL,
    first_ms     INTEGER NOT NULL,
    last_ms      INTEGER NOT NULL,
    ordinary     INTEGER NOT NULL,
    ord_first_ms INTEGER,              -- NULL when ordinary = 0
    ord_last_ms  INTEGER,
    ord_seconds  INTEGER NOT NULL,     -- bit s set: an ordinary query in second s of the minute
    PRIMARY KEY (device, minute)
) WITHOUT ROWID;

";

/// Schema 5's device activity: the device is an id into `texts`, the times are milliseconds
/// into the minute, the ordinary queries' first and last are distances from the minute's first
/// and last (0, no byte, when the same query), their seconds counted from the first query's
/// second. The view `activity` shows it as schema 3 had it.
const ACTIVITY_5: &str = "
CREATE TABLE IF NOT EXISTS device_minutes (
    device          INTEGER NOT NULL,  -- texts: the device's name, else its address (network)
    minute          INTEGER NOT NULL,  -- ts_ms / 60000
    total           INTEGER NOT NULL,
    first_off       INTEGER NOT NULL,  -- ms into the minute
    last_off        INTEGER NOT NULL,
    ordinary        INTEGER NOT NULL,
    ord_first_after INTEGER,           -- ms after first_off; NULL when ordinary = 0
    ord_last_before INTEGER,           -- ms before last_off
    ord_seconds     INTEGER NOT NULL,  -- bit s: an ordinary query in second first_off/1000 + s
    PRIMARY KEY (device, minute)
) WITHOUT ROWID;
";

/// Schema 5 seen as schema 3 had it, read-only: for `sqlite3` by hand, and tests.
fn views_5() -> String {
    let before = |t: &str| format!("nullif(substr({t}, 1, instr({t}, char(31)) - 1), '')");
    let after = |t: &str| format!("nullif(substr({t}, instr({t}, char(31)) + 1), '')");
    format!(
        "
CREATE VIEW IF NOT EXISTS activity AS
SELECT t.text AS device, m.minute AS minute, m.total AS total,
       m.minute * 60000 + m.first_off AS first_ms, m.minute * 60000 + m.last_off AS last_ms,
       m.ordinary AS ordinary,
       m.minute * 60000 + m.first_off + m.ord_first_after AS ord_first_ms,
       m.minute * 60000 + m.last_off - m.ord_last_before AS ord_last_ms,
       m.ord_seconds << (m.first_off / 1000) AS ord_seconds
FROM device_minutes m JOIN texts t ON t.id = m.device;
CREATE VIEW IF NOT EXISTS queries AS
SELECT r.ts_ms AS ts_ms, c.text AS client, coalesce({addr}, c.text) AS client_addr,
       CASE WHEN {addr} IS NOT NULL THEN c.text END AS client_name, {grp} AS grp,
       n.text AS name, {qtype} AS qtype,
       CASE r.kind & 7 WHEN 0 THEN 'cached' WHEN 1 THEN 'forwarded' WHEN 2 THEN 'blocked'
            WHEN 3 THEN 'local' WHEN 4 THEN 'refused' ELSE 'failed' END AS result,
       {cats} AS categories, {list} AS list,
       CASE (r.kind >> 3) & 3 WHEN 1 THEN 'blocked' WHEN 2 THEN 'observed'
            WHEN 3 THEN 'allowed' END AS action,
       CASE (r.kind >> 7) & 4095 WHEN 0 THEN 'NOERROR' WHEN 1 THEN 'FORMERR'
            WHEN 2 THEN 'SERVFAIL' WHEN 3 THEN 'NXDOMAIN' WHEN 4 THEN 'NOTIMP' WHEN 5 THEN 'REFUSED'
            ELSE 'RCODE' || ((r.kind >> 7) & 4095) END AS rcode,
       r.upstream_ms AS upstream_ms
FROM query_rows r JOIN texts c ON c.id = r.client JOIN texts n ON n.id = r.name
LEFT JOIN texts o ON o.id = r.origin LEFT JOIN texts m ON m.id = r.matched;
CREATE VIEW IF NOT EXISTS query_categories AS
SELECT cs.category AS category, c.text AS client, r.ts_ms AS ts_ms, n.text AS name,
       CASE (r.kind >> 3) & 3 WHEN 1 THEN 'blocked' WHEN 2 THEN 'observed'
            WHEN 3 THEN 'allowed' END AS action
FROM query_rows r JOIN category_sets cs ON cs.matched = r.matched
JOIN texts c ON c.id = r.client JOIN texts n ON n.id = r.name;
",
        addr = before("o.text"),
        grp = after("o.text"),
        cats = before("m.text"),
        list = after("m.text"),
        qtype = QTYPE_SQL,
    )
}

/// Schema 3's activity into schema 5's.
const MOVE_ACTIVITY_3_TO_5: &str = "
INSERT OR IGNORE INTO texts (text) SELECT DISTINCT device FROM activity;
INSERT INTO device_minutes
SELECT t.id, a.minute, a.total, a.first_ms - a.minute * 60000, a.last_ms - a.minute * 60000,
       a.ordinary, a.ord_first_ms - a.first_ms, a.last_ms - a.ord_last_ms,
       a.ord_seconds >> ((a.first_ms - a.minute * 60000) / 1000)
FROM activity a JOIN texts t ON t.text = a.device;
DROP TABLE activity;
";

/// Schema 4's tables that schema 5 replaces, set aside (views first: they name them).
const SET_ASIDE_4: &str = "
DROP VIEW IF EXISTS activity; DROP VIEW IF EXISTS queries; DROP VIEW IF EXISTS query_categories;
DROP INDEX IF EXISTS query_rows_cats;
ALTER TABLE query_rows RENAME TO query_rows_4;
ALTER TABLE category_sets RENAME TO category_sets_4;
ALTER TABLE device_minutes RENAME TO device_minutes_4;
";

/// Schema 4's activity into schema 5's.
const MOVE_ACTIVITY_4_TO_5: &str = "
INSERT INTO device_minutes
SELECT device, minute, total, first_off, last_off, ordinary, ord_first_off - first_off,
       last_off - ord_last_off, ord_seconds >> (first_off / 1000)
FROM device_minutes_4;
DROP TABLE device_minutes_4;
";

/// The tables every schema from 3 on has.
const COMMON: &str = "
CREATE TABLE IF NOT EXISTS marks (
    id     INTEGER PRIMARY KEY,
    ts_ms  INTEGER NOT NULL,
    client TEXT NOT NULL,
    note   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS marks_client_ts ON marks (client, ts_ms);

-- When the log was written: verify counts only time that was logged.
CREATE TABLE IF NOT EXISTS runs (
    id        INTEGER PRIMARY KEY,
    start_ms  INTEGER NOT NULL,
    alive_ms  INTEGER NOT NULL,
    end_ms    INTEGER,
    mode      TEXT NOT NULL,
    anonymize INTEGER NOT NULL
);

-- Every device seen: how it was named, its MAC, its first and last query.
CREATE TABLE IF NOT EXISTS devices (
    device   TEXT PRIMARY KEY,
    named_by TEXT NOT NULL,            -- config address, config mac, lease, address
    mac      TEXT,                     -- NULL when unknown or anonymized
    first_ms INTEGER NOT NULL,
    last_ms  INTEGER NOT NULL
);

-- Every address a device used, with when.
CREATE TABLE IF NOT EXISTS device_addresses (
    device   TEXT NOT NULL,
    addr     TEXT NOT NULL,
    first_ms INTEGER NOT NULL,
    last_ms  INTEGER NOT NULL,
    PRIMARY KEY (device, addr)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS device_addresses_addr ON device_addresses (addr, last_ms);
";

/// Schema 3's activity from the rows an older log holds: exact for time logged with
/// `log = "all"`; `matched` kept no ordinary rows, so those minutes count none (which can only
/// make `verify` more cautious).
const BACKFILL_3: &str = "
INSERT OR IGNORE INTO activity
SELECT client, m, sum(n), min(f), max(l), sum(o), min(of), max(ol),
       sum(CASE WHEN o > 0 THEN 1 << s ELSE 0 END)
FROM (SELECT client, ts_ms / 60000 AS m, (ts_ms % 60000) / 1000 AS s, count(*) AS n,
             min(ts_ms) AS f, max(ts_ms) AS l, sum(categories IS NULL) AS o,
             min(CASE WHEN categories IS NULL THEN ts_ms END) AS of,
             max(CASE WHEN categories IS NULL THEN ts_ms END) AS ol
      FROM queries GROUP BY client, m, s)
GROUP BY client, m;
INSERT OR IGNORE INTO devices (device, named_by, mac, first_ms, last_ms)
SELECT client, CASE WHEN client_name IS NULL THEN 'address' ELSE 'config address' END, NULL,
       min(ts_ms), max(ts_ms)
FROM queries GROUP BY client;
INSERT OR IGNORE INTO device_addresses
SELECT client, client_addr, min(ts_ms), max(ts_ms) FROM queries GROUP BY client, client_addr;
";

/// Opens (creating if needed) the database for writing: WAL, `synchronous=NORMAL`, schema.
pub(crate) fn open_rw(path: &Path) -> Result<Connection, QueryLogError> {
    let e = |err: rusqlite::Error| QueryLogError::from_sqlite(path, &err);
    if path.is_dir() {
        return Err(QueryLogError::new(
            path,
            DbErrorKind::CannotOpen,
            "it is a directory: point [querylog] path at a file",
        ));
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(e)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(e)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(e)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(QueryLogError::new(
            path,
            DbErrorKind::ReadOnly,
            format!(
                "cannot switch it to WAL mode (it stays in {mode} mode); is it or its directory read-only?"
            ),
        ));
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(e)?;
    migrate(&conn, path)?;
    Ok(conn)
}

fn migrate(conn: &Connection, path: &Path) -> Result<(), QueryLogError> {
    let e = |err: rusqlite::Error| QueryLogError::from_sqlite(path, &err);
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(e)?;
    if version > SCHEMA_VERSION {
        return Err(QueryLogError::new(
            path,
            DbErrorKind::NotAQueryLog,
            format!(
                "it was written by a newer telesink (schema {version}, this one knows {SCHEMA_VERSION}); \
                 upgrade telesink or change [querylog] path"
            ),
        ));
    }
    if version == 0 {
        let has_foreign_tables: i64 = conn
            .query_row(
                &format!(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name NOT IN ({TABLES})"
                ),
                [],
                |r| r.get(0),
            )
            .map_err(e)?;
        if has_foreign_tables > 0 {
            return Err(not_a_query_log(path));
        }
    }
    if version < SCHEMA_VERSION {
        conn.execute_batch("BEGIN IMMEDIATE").map_err(e)?;
        let steps = (|| {
            if (1..3).contains(&version) {
                conn.execute_batch(&format!(
                    "{QUERIES_3} {COMMON} {ACTIVITY_3} DROP INDEX IF EXISTS query_categories_ts; \
                     {BACKFILL_3}"
                ))?;
            }
            if version == 4 {
                conn.execute_batch(SET_ASIDE_4)?;
            }
            conn.execute_batch(&format!("{QUERIES_5} {COMMON} {ACTIVITY_5}"))?;
            if (1..4).contains(&version) {
                move_rows_3(conn)?;
                conn.execute_batch(MOVE_ACTIVITY_3_TO_5)?;
            }
            if version == 4 {
                move_rows_4(conn)?;
                conn.execute_batch(MOVE_ACTIVITY_4_TO_5)?;
            }
            conn.execute_batch(&views_5())?;
            conn.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}; COMMIT"))
        })();
        if let Err(err) = steps {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(e(err));
        }
    }
    Ok(())
}

/// Moves schema 3's rows into schema 5's tables and drops the old ones. One pass in id order:
/// a log of a few million rows takes some seconds, once, at the first start (or first read)
/// with this version.
fn move_rows_3(conn: &Connection) -> rusqlite::Result<()> {
    let mut texts = TextIds::default();
    {
        let mut st = conn.prepare(
            "SELECT ts_ms, client, client_addr, client_name, grp, name, qtype, result, \
             categories, list, action, rcode, upstream_ms FROM queries ORDER BY id",
        )?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let get = |i: usize| r.get_ref(i).map(|v| v.as_str_or_null().ok().flatten());
            let result = get(7)?.unwrap_or_default();
            let result = QueryResult::ALL
                .into_iter()
                .find(|q| q.as_str() == result)
                .unwrap_or(QueryResult::Failed);
            let action = match get(10)? {
                Some("blocked") => Some(Action::Blocked),
                Some("observed") => Some(Action::Observed),
                Some("allowed") => Some(Action::Allowed),
                _ => None,
            };
            insert_row(
                conn,
                &mut texts,
                &RowFields {
                    ts_ms: r.get(0)?,
                    client: get(1)?.unwrap_or_default(),
                    addr: get(2)?.unwrap_or_default(),
                    client_name: get(3)?,
                    group: get(4)?,
                    name: get(5)?.unwrap_or_default(),
                    kind: Kind::new(
                        qtype_number(get(6)?.unwrap_or_default()),
                        result,
                        action,
                        rcode_number(get(11)?.unwrap_or_default()),
                    ),
                    categories: get(8)?.map(Cow::Borrowed),
                    list: get(9)?,
                    upstream_ms: r.get(12)?,
                },
            )?;
        }
    }
    conn.execute_batch("DROP TABLE query_categories; DROP TABLE queries;")
}

/// Moves schema 4's rows (set aside as `query_rows_4`) into schema 5's table and drops the old
/// ones. One pass in key order, through the writer's own insert; the texts keep their ids.
fn move_rows_4(conn: &Connection) -> rusqlite::Result<()> {
    let mut texts = TextIds::default();
    {
        let mut st = conn.prepare(
            "SELECT r.ts_ms, c.text, a.text, n.text, r.kind, g.text, s.text, l.text, \
             r.upstream_ms FROM query_rows_4 r JOIN texts c ON c.id = r.client \
             JOIN texts n ON n.id = r.name LEFT JOIN texts a ON a.id = r.addr \
             LEFT JOIN texts g ON g.id = r.grp LEFT JOIN texts s ON s.id = r.cats \
             LEFT JOIN texts l ON l.id = r.list ORDER BY r.client, r.ts_ms, r.seq",
        )?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let get = |i: usize| r.get_ref(i).map(|v| v.as_str_or_null().ok().flatten());
            let client = get(1)?.unwrap_or_default();
            let addr = get(2)?;
            insert_row(
                conn,
                &mut texts,
                &RowFields {
                    ts_ms: r.get(0)?,
                    client,
                    // A row with an address was a named device's.
                    addr: addr.unwrap_or(client),
                    client_name: addr.map(|_| client),
                    group: get(5)?,
                    name: get(3)?.unwrap_or_default(),
                    kind: Kind::from_schema_4(r.get(4)?),
                    categories: get(6)?.map(Cow::Borrowed),
                    list: get(7)?,
                    upstream_ms: r.get(8)?,
                },
            )?;
        }
    }
    conn.execute_batch("DROP TABLE query_rows_4; DROP TABLE category_sets_4;")
}

pub(crate) fn not_a_query_log(path: &Path) -> QueryLogError {
    QueryLogError::new(
        path,
        DbErrorKind::NotAQueryLog,
        "it is a SQLite database but not a telesink query log; change [querylog] path",
    )
}

/// Opens an existing query log for the read commands (`log`, `verify`); works while the server
/// writes (WAL readers).
pub(crate) fn open_existing(path: &Path) -> Result<Connection, QueryLogError> {
    if !path.exists() {
        return Err(QueryLogError::new(
            path,
            DbErrorKind::Missing,
            "there is no query log here yet; `telesink run` creates it when [querylog] log is \
             \"matched\" or \"all\" (check [querylog] path and -c)",
        ));
    }
    if path.is_dir() {
        return Err(QueryLogError::new(
            path,
            DbErrorKind::CannotOpen,
            "it is a directory: point [querylog] path at a file",
        ));
    }
    let e = |err: rusqlite::Error| QueryLogError::from_sqlite(path, &err);
    let conn = match Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) {
        Ok(c) => c,
        Err(_) => Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(e)?,
    };
    conn.busy_timeout(Duration::from_secs(5)).map_err(e)?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(e)?;
    if version == 0 {
        return Err(not_a_query_log(path));
    }
    if version > SCHEMA_VERSION {
        return Err(QueryLogError::new(
            path,
            DbErrorKind::NotAQueryLog,
            format!(
                "it was written by a newer telesink (schema {version}, this one knows {SCHEMA_VERSION}); upgrade telesink"
            ),
        ));
    }
    if version < SCHEMA_VERSION {
        // An older log, read before the server restarted with this version: bring it up to
        // date now (the readers need the newer tables).
        if conn.is_readonly(c"main").unwrap_or(true) {
            return Err(QueryLogError::new(
                path,
                DbErrorKind::ReadOnly,
                format!(
                    "it was written by an older telesink (schema {version}) and is read-only here; \
                     run `telesink run` once with this version, or give this user write access"
                ),
            ));
        }
        migrate(&conn, path)?;
    }
    Ok(conn)
}
