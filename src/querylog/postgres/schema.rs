//! The PostgreSQL tables: the ideas of the SQLite schema in native types. Times are bigint
//! milliseconds since the Unix epoch (as in SQLite, so that both back ends compute alike);
//! query type, result, action and rcode are small integer codes ([`super::batch`]); a row's
//! categories are a `text[]`. Indexes serve `log --client --since` and `verify`'s per-client
//! range scans (`queries (client, ts_ms)`), `log` without a client and retention by time
//! (`queries (ts_ms)`).

use tokio_postgres::Client;

use super::PgUrl;
use crate::querylog::error::{DbErrorKind, QueryLogError};

pub(crate) const SCHEMA_VERSION: i32 = 1;

/// Serialises schema creation between replicas starting together.
const LOCK_KEY: i64 = 0x7465_6c65_7369_6e6b; // "telesink"

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS telesink_schema (version integer NOT NULL);

CREATE TABLE IF NOT EXISTS queries (
    id          bigint GENERATED ALWAYS AS IDENTITY,  -- order of rows within a millisecond
    ts_ms       bigint NOT NULL,
    client      text NOT NULL,      -- configured name, else address; network when anonymized
    client_addr text NOT NULL,
    client_name text,
    grp         text,
    name        text NOT NULL,
    qtype       integer NOT NULL,   -- the record type's number
    result      smallint NOT NULL,  -- 0 blocked 1 cached 2 forwarded 3 local 4 refused 5 failed
    categories  text[],             -- NULL when none matched
    list        text,
    action      smallint,           -- 0 blocked 1 observed 2 allowed, NULL when none matched
    rcode       smallint NOT NULL,
    upstream_ms integer
);
CREATE INDEX IF NOT EXISTS queries_client_ts ON queries (client, ts_ms);
CREATE INDEX IF NOT EXISTS queries_ts ON queries (ts_ms);

CREATE TABLE IF NOT EXISTS marks (
    id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ts_ms  bigint NOT NULL,
    client text NOT NULL,
    note   text NOT NULL
);
CREATE INDEX IF NOT EXISTS marks_client_ts ON marks (client, ts_ms);

-- One run per writer connection: several replicas run at once, and a replica that lost the
-- database stops its run at its last heartbeat and starts another when it reconnects.
CREATE TABLE IF NOT EXISTS runs (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    start_ms  bigint NOT NULL,
    alive_ms  bigint NOT NULL,
    end_ms    bigint,
    mode      text NOT NULL,
    anonymize boolean NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_start ON runs (start_ms);

CREATE TABLE IF NOT EXISTS activity (
    device       text NOT NULL,
    minute       bigint NOT NULL,
    total        bigint NOT NULL,
    first_ms     bigint NOT NULL,
    last_ms      bigint NOT NULL,
    ordinary     bigint NOT NULL,
    ord_first_ms bigint,
    ord_last_ms  bigint,
    ord_seconds  bigint NOT NULL,
    PRIMARY KEY (device, minute)
);
CREATE INDEX IF NOT EXISTS activity_minute ON activity (minute);

CREATE TABLE IF NOT EXISTS devices (
    device   text PRIMARY KEY,
    named_by text NOT NULL,
    mac      text,
    first_ms bigint NOT NULL,
    last_ms  bigint NOT NULL
);

CREATE TABLE IF NOT EXISTS device_addresses (
    device   text NOT NULL,
    addr     text NOT NULL,
    first_ms bigint NOT NULL,
    last_ms  bigint NOT NULL,
    PRIMARY KEY (device, addr)
);
CREATE INDEX IF NOT EXISTS device_addresses_addr ON device_addresses (addr, last_ms);
";

async fn version(client: &Client) -> Result<Option<i32>, tokio_postgres::Error> {
    let has: bool = client
        .query_one("SELECT to_regclass('telesink_schema') IS NOT NULL", &[])
        .await?
        .get(0);
    if !has {
        return Ok(None);
    }
    let v = client
        .query_opt("SELECT max(version) FROM telesink_schema", &[])
        .await?
        .and_then(|r| r.get::<_, Option<i32>>(0));
    Ok(Some(v.unwrap_or(0)))
}

/// Creates the tables if needed. A database that has a `queries` table of something else, or
/// a newer schema, is refused.
pub(crate) async fn migrate(client: &Client, url: &PgUrl) -> Result<(), QueryLogError> {
    let e = |err: tokio_postgres::Error| url.pg_error(&err);
    client.batch_execute("BEGIN").await.map_err(e)?;
    let result = async {
        client
            .execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
            .await
            .map_err(e)?;
        match version(client).await.map_err(e)? {
            Some(v) if v > SCHEMA_VERSION => {
                return Err(url.error(
                    DbErrorKind::NotAQueryLog,
                    format!(
                        "it was written by a newer telesink (schema {v}, this one knows \
                         {SCHEMA_VERSION}); upgrade telesink"
                    ),
                ))
            }
            Some(v) if v == SCHEMA_VERSION => return Ok(()),
            Some(_) => {}
            None => {
                let foreign: bool = client
                    .query_one("SELECT to_regclass('queries') IS NOT NULL", &[])
                    .await
                    .map_err(e)?
                    .get(0);
                if foreign {
                    return Err(not_a_query_log(url));
                }
            }
        }
        client.batch_execute(SCHEMA).await.map_err(e)?;
        client
            .execute("DELETE FROM telesink_schema", &[])
            .await
            .map_err(e)?;
        client
            .execute(
                "INSERT INTO telesink_schema (version) VALUES ($1)",
                &[&SCHEMA_VERSION],
            )
            .await
            .map_err(e)?;
        Ok(())
    }
    .await;
    match result {
        Ok(()) => client.batch_execute("COMMIT").await.map_err(e),
        Err(err) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(err)
        }
    }
}

/// For the read commands: the database must hold a query log of a schema this version reads.
pub(crate) async fn check_existing(client: &Client, url: &PgUrl) -> Result<(), QueryLogError> {
    match version(client).await.map_err(|e| url.pg_error(&e))? {
        None => Err(url.error(
            DbErrorKind::Missing,
            "there is no query log in this database yet; `telesink run` creates it when \
             [querylog] log is \"matched\" or \"all\" (check [querylog] url and -c)",
        )),
        Some(v) if v > SCHEMA_VERSION => Err(url.error(
            DbErrorKind::NotAQueryLog,
            format!(
                "it was written by a newer telesink (schema {v}, this one knows \
                 {SCHEMA_VERSION}); upgrade telesink"
            ),
        )),
        Some(_) => Ok(()),
    }
}

fn not_a_query_log(url: &PgUrl) -> QueryLogError {
    url.error(
        DbErrorKind::NotAQueryLog,
        "the database has a table `queries` that is not a telesink query log; give telesink a \
         database (or a schema, ?options=-csearch_path=telesink) of its own",
    )
}
