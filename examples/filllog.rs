//! Fills a query log with a made-up town's queries, for `bench/townlog.py`:
//! `cargo run --release --example filllog -- --path /big/querylog.db --rows 100000000`, or
//! `--url postgres://user@host/db` for the PostgreSQL log (password in PGPASSWORD).
//! The rows go through the server's own writer code (schema, dictionaries, device activity).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use telesink::querylog::postgres::PgUrl;
use telesink::querylog::town::{fill_postgres, fill_sqlite, Town, TownSpec};

#[derive(Parser)]
struct Args {
    /// The SQLite query log to create or append to.
    #[arg(long, required_unless_present = "url", conflicts_with = "url")]
    path: Option<PathBuf>,
    /// A PostgreSQL query log (`postgres://…`) to create or append to.
    #[arg(long)]
    url: Option<String>,
    /// Queries in all.
    #[arg(long, default_value_t = 100_000_000)]
    rows: u64,
    #[arg(long, default_value_t = 10_000)]
    devices: u32,
    #[arg(long, default_value_t = 30)]
    days: u32,
    /// Distinct ordinary names.
    #[arg(long, default_value_t = 300_000)]
    names: u32,
    /// Rows per transaction.
    #[arg(long, default_value_t = 50_000)]
    batch: usize,
    /// The newest query's time, ms since the epoch (default: now).
    #[arg(long)]
    end_ms: Option<i64>,
    #[arg(long, default_value_t = 22)]
    seed: u64,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let spec = TownSpec {
        rows: a.rows,
        devices: a.devices,
        days: a.days,
        end_ms: a.end_ms.unwrap_or(now),
        names: a.names,
        seed: a.seed,
    };
    let mut town = Town::new(spec);
    let t0 = Instant::now();
    let mut next = 0u64;
    let mut progress = |n: u64| {
        if n >= next {
            let s = t0.elapsed().as_secs_f64();
            eprintln!("{n} rows, {s:.0} s, {:.0} rows/s", n as f64 / s.max(1e-9));
            next = n + 5_000_000;
        }
    };
    let (report, into) = match (&a.path, &a.url) {
        (Some(path), _) => (
            fill_sqlite(&mut town, path, a.batch, &mut progress)
                .with_context(|| format!("filling {}", path.display()))?,
            path.display().to_string(),
        ),
        (None, Some(url)) => {
            let url = PgUrl::parse(url)?;
            (
                fill_postgres(&mut town, &url, a.batch, &mut progress)
                    .with_context(|| format!("filling {url}"))?,
                url.to_string(),
            )
        }
        (None, None) => unreachable!("clap requires --path or --url"),
    };
    println!(
        "{} rows in {:.1} s ({:.0} rows/s) into {}",
        report.rows,
        report.seconds,
        report.rows as f64 / report.seconds.max(1e-9),
        into
    );
    Ok(())
}
