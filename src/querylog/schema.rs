//! The tables, their migrations, and opening the database for writing (the server, `mark`) or
//! reading (`log`, `verify`, `devices`).

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::error::{DbErrorKind, QueryLogError};

/// 2: without the `(category, ts_ms)` index of 1, which cost the writer about a third of its
/// time per row; its questions are served by the primary key, client by client.
/// 3: per-device activity (`activity`, `devices`, `device_addresses`), filled from the rows of
/// older schemas by [`BACKFILL_3`].
pub(crate) const SCHEMA_VERSION: i64 = 3;

/// Every table of the query log; another application's SQLite file is not taken over.
const TABLES: &str = "'queries', 'query_categories', 'marks', 'runs', 'activity', 'devices', \
                      'device_addresses'";

pub(crate) const SCHEMA: &str = "
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
        let backfill = if (1..3).contains(&version) {
            BACKFILL_3
        } else {
            ""
        };
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {SCHEMA} DROP INDEX IF EXISTS query_categories_ts; {backfill} \
             PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
        ))
        .map_err(|err| {
            let _ = conn.execute_batch("ROLLBACK");
            e(err)
        })?;
    }
    Ok(())
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
