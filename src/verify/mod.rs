//! `telesink verify`: did a device stop trying to reach a category's domains after its owner
//! switched an opt-out at time T?
//!
//! A blocked device still tries, so every attempt is a query in the log. We count the client's
//! queries in the category (blocked, observed and allowed alike) in the window [T, U) and in a
//! baseline of the same length just before T (at most 7 days), and decide:
//!
//! * **CONTINUING**: attempts after T.
//! * **STOPPED**: none after T; at the baseline rate zero attempts in the window would be a
//!   fluke (Poisson P(0) = exp(-rate × window) < 0.01); and the device demonstrably kept using
//!   telesink after T: its ordinary (uncategorised) queries after T are plausible at its
//!   baseline ordinary rate (not zero, and P(X ≤ n) ≥ 0.01), its last query is not older than
//!   `silent_after` at U, and it queried no name of category `bypass` after T.
//! * **INCONCLUSIVE**: none after T, but the baseline is too thin to tell (the window at which
//!   the test would pass is ln(100) / rate), or the device went quiet on DNS, was DNS-silent, or
//!   tried a `bypass` resolver: silence from a device that stopped asking proves nothing.
//!
//! Only time during which the log was being written counts (the `runs` table), so a server that
//! was down after T cannot make a device look quiet. `--prometheus URL` reaches the verdict from
//! the metrics summed over every replica instead (no per-domain detail; see [`prometheus`] for
//! how ordinary queries are counted there).
//!
//! The parts: [`evidence`] (the Poisson tests and the reasons), [`report`] (what is printed),
//! [`prometheus`] (the Prometheus HTTP API).

pub mod evidence;
pub mod prometheus;
pub mod report;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;

pub use evidence::{assess, Assessment, Reason, Verdict, P_THRESHOLD};
pub use report::{
    Actions, AddressTraffic, DomainCount, OrdinaryActivity, Source, Traffic, VerifyReport, Wait,
};

use crate::querylog::postgres::PgStore;
use crate::querylog::store::{LogRead, SqliteLog};
use crate::querylog::{
    self, ClientList, ClientSelector, CommandError, LogLocation, MarkInfo, QueryLogError,
};
use crate::timespec::{self, format_duration_ms, TimeSpec};
use evidence::{judge_use, DnsUse, UseEvidence};
use prometheus::Prometheus;

/// The longest baseline.
pub const MAX_BASELINE_MS: i64 = 7 * 86_400_000;

/// The category of resolvers a device can use instead of telesink (DoH/DoT endpoints).
pub const BYPASS_CATEGORY: &str = "bypass";

/// `silent_after` when the caller gives none (`[clients] silent_after`).
pub const DEFAULT_SILENT_AFTER: Duration = Duration::from_secs(30 * 60);

/// `telesink verify --client C --category CAT --since T [--until U] [--prometheus URL]`.
#[derive(Clone, Debug)]
pub struct VerifyArgs {
    pub client: String,
    pub category: String,
    pub since: TimeSpec,
    /// `None`: now.
    pub until: Option<TimeSpec>,
    /// Base URL of a Prometheus server (`http://prometheus:9090`).
    pub prometheus: Option<String>,
    /// A device whose last query is older than this at the window's end is DNS-silent
    /// (`[clients] silent_after`; [`DEFAULT_SILENT_AFTER`]).
    pub silent_after: Duration,
}

/// Runs `verify` now.
pub fn verify(
    args: &VerifyArgs,
    db: &Path,
    clients: &ClientList,
) -> Result<VerifyReport, CommandError> {
    verify_at(args, db, clients, Timestamp::now())
}

/// [`verify`] with a given "now" (tests).
pub fn verify_at(
    args: &VerifyArgs,
    db: &Path,
    clients: &ClientList,
    now: Timestamp,
) -> Result<VerifyReport, CommandError> {
    let conn = querylog::open_existing(db);
    let log = conn.as_ref().map(|conn| SqliteLog { conn, path: db });
    let log = match &log {
        Ok(l) => Ok(l as &dyn LogRead),
        Err(e) => Err(*e),
    };
    verify_from(args, log, clients, now)
}

/// `verify` against either back end of the query log.
pub fn verify_in(
    args: &VerifyArgs,
    at: &LogLocation,
    clients: &ClientList,
) -> Result<VerifyReport, CommandError> {
    match at {
        LogLocation::Sqlite(p) => verify(args, p, clients),
        LogLocation::Postgres(u) => {
            let store = PgStore::open_existing(u);
            verify_from(
                args,
                store.as_ref().map(|s| s as &dyn LogRead),
                clients,
                Timestamp::now(),
            )
        }
    }
}

/// The verdict from an opened log, or why it could not be opened (which matters only when
/// the log is needed: without `--prometheus`, or for a mark).
fn verify_from(
    args: &VerifyArgs,
    log: Result<&dyn LogRead, &QueryLogError>,
    clients: &ClientList,
    now: Timestamp,
) -> Result<VerifyReport, CommandError> {
    let need = || -> Result<&dyn LogRead, CommandError> {
        log.map_err(|e| CommandError::Db(QueryLogError::new(&e.path, e.kind, e.message.clone())))
    };
    // Marks and the devices the log has seen live in the query log, even with --prometheus.
    let sel = ClientSelector::resolve_in(
        &args.client,
        clients,
        log.ok().map(|l| l as &dyn querylog::DeviceLookup),
    )?;
    let category = args.category.trim().to_string();
    if category.is_empty() {
        return Err(CommandError::Usage(
            "--category is empty: name a category of your lists, e.g. telemetry".into(),
        ));
    }
    let now_ms = now.as_millisecond();
    let mut notes = Vec::new();

    let mut mark = None;
    let resolve =
        |spec: &TimeSpec, what: &str, mark: &mut Option<MarkInfo>| -> Result<i64, CommandError> {
            match spec {
                TimeSpec::Mark(m) => {
                    let info = need()?.find_mark(*m, Some(&sel))?;
                    let ms = info.time_ms;
                    if what == "--since" {
                        *mark = Some(info);
                    }
                    Ok(ms)
                }
                t => Ok(t
                    .resolve(now)
                    .ok_or_else(|| CommandError::Usage(format!("cannot resolve {what} {t}")))?
                    .as_millisecond()),
            }
        };
    let since_ms = resolve(&args.since, "--since", &mut mark)?;
    let until_ms = match &args.until {
        None => now_ms,
        Some(u) => resolve(u, "--until", &mut None)?,
    };
    let until_is_now = matches!(args.until, None | Some(TimeSpec::Now));
    if let Some(m) = &mark {
        if m.client != sel.label {
            notes.push(format!(
                "mark {} was recorded for {}, not {}",
                m.id, m.client, sel.label
            ));
        }
    }
    let fmt = |ms| timespec::format_local(timespec::from_ms(ms));
    if since_ms > now_ms {
        return Err(CommandError::Usage(format!(
            "--since {} is in the future; give the moment the opt-out was switched",
            fmt(since_ms)
        )));
    }
    if until_ms > now_ms + 1000 {
        return Err(CommandError::Usage(format!(
            "--until {} is in the future; leave it out to mean now",
            fmt(until_ms)
        )));
    }
    if until_ms <= since_ms {
        return Err(CommandError::Usage(format!(
            "--until {} must be after --since {}",
            fmt(until_ms),
            fmt(since_ms)
        )));
    }
    let window_ms = until_ms - since_ms;
    let baseline_ms = window_ms.min(MAX_BASELINE_MS);
    let baseline_start_ms = since_ms - baseline_ms;

    let mut domains = Vec::new();
    let mut after_by_action = None;
    let mut seen_categories = None;
    let mut bypass_names = Vec::new();
    let mut traffic: Option<Traffic> = None;
    let (source, before, after, logged_base, logged_after, ordinary) = match &args.prometheus {
        None => {
            let conn = need()?;
            let counts =
                conn.category_counts(&sel, &category, baseline_start_ms, since_ms, until_ms)?;
            let logged_base = conn.logged_ms(baseline_start_ms, since_ms, now_ms)?;
            let logged_after = conn.logged_ms(since_ms, until_ms, now_ms)?;
            let (mut before, mut after) = (0u64, 0u64);
            for (name, (b, a, last)) in counts.domains {
                before += b;
                after += a;
                domains.push(DomainCount {
                    name,
                    before: b,
                    after: a,
                    last_seen: timespec::rfc3339_ms(last),
                    last_seen_ms: last,
                });
            }
            domains.sort_by(|x, y| {
                (y.after + y.before)
                    .cmp(&(x.after + x.before))
                    .then(x.name.cmp(&y.name))
            });
            let get = |k: &str| counts.after_actions.get(k).copied().unwrap_or(0);
            after_by_action = Some(Actions {
                blocked: get("blocked"),
                observed: get("observed"),
                allowed: get("allowed"),
            });
            if before == 0 && after == 0 {
                seen_categories = Some(conn.client_categories(&sel)?);
            }
            if logged_after < window_ms && logged_after > 0 {
                notes.push(format!(
                    "telesink logged only {} of the {} after --since (it was not running, or log = \"none\", the rest); counts cover that time",
                    format_duration_ms(logged_after),
                    format_duration_ms(window_ms)
                ));
            }
            if logged_base < baseline_ms {
                notes.push(if logged_base == 0 {
                    "telesink logged nothing in the baseline before --since (it was not running, or log = \"none\")".to_string()
                } else {
                    format!(
                        "telesink logged only {} of the {} baseline; the rate uses that time",
                        format_duration_ms(logged_base),
                        format_duration_ms(baseline_ms)
                    )
                });
            }
            let ord = conn.ordinary_counts(&sel, baseline_start_ms, since_ms, until_ms)?;
            let mut bypass_after = 0u64;
            if category != BYPASS_CATEGORY {
                let b =
                    conn.category_counts(&sel, BYPASS_CATEGORY, since_ms, since_ms, until_ms)?;
                for (name, (_, a, _)) in b.domains {
                    if a > 0 {
                        bypass_after += a;
                        bypass_names.push(name);
                    }
                }
            }
            // Packets to the category's addresses: only in a log written while telesink counted.
            if let Some(t) =
                conn.traffic_counts(&sel, &category, baseline_start_ms, since_ms, until_ms)?
            {
                if t.spanning > 0 {
                    notes.push(format!(
                        "{} packets were counted in a reading that spans T and are on neither side",
                        t.spanning
                    ));
                }
                traffic = Some(Traffic {
                    before: t.before as f64,
                    after: t.after as f64,
                    spanning: t.spanning as f64,
                    addresses: t
                        .addresses
                        .into_iter()
                        .map(|a| AddressTraffic {
                            address: a.address.to_string(),
                            before: a.before,
                            after: a.after,
                        })
                        .collect(),
                });
            }
            if !ord.exact {
                notes.push(
                    "ordinary queries are counted per minute (log = \"matched\"); a minute that spans T counts \
                     against STOPPED"
                        .into(),
                );
            }
            (
                Source::QueryLog {
                    path: conn.source(),
                },
                before as f64,
                after as f64,
                logged_base,
                logged_after,
                Ordinary {
                    before: ord.before as f64,
                    after: ord.after as f64,
                    last_query_ms: ord.last_query_ms,
                    bypass_after: bypass_after as f64,
                    exact: ord.exact,
                },
            )
        }
        Some(url) => {
            let prom = Prometheus::new(url);
            let before = prom.increase(&sel.label, &category, baseline_ms, since_ms)?;
            let after = prom.increase(&sel.label, &category, window_ms, until_ms)?;
            let ord_before = prom.ordinary(&sel.label, baseline_ms, since_ms)?;
            let ord_after = prom.ordinary(&sel.label, window_ms, until_ms)?;
            let bypass_after = if category == BYPASS_CATEGORY {
                0.0
            } else {
                prom.increase(&sel.label, BYPASS_CATEGORY, window_ms, until_ms)?
            };
            let last_query_ms =
                prom.last_query_ms(&sel.label, window_ms + baseline_ms, until_ms)?;
            if let Some((before, after)) = prom.packets(
                &sel.label,
                &category,
                baseline_ms,
                window_ms,
                since_ms,
                until_ms,
            )? {
                traffic = Some(Traffic {
                    before,
                    after,
                    spanning: 0.0,
                    addresses: Vec::new(),
                });
            }
            notes.push(
                "Prometheus counts are estimates: increase() extrapolates between scrapes".into(),
            );
            if last_query_ms.is_none() {
                notes.push(
                    "Prometheus has no telesink_client_last_query_timestamp_seconds for this client: \
                     DNS silence is judged from its ordinary queries only"
                        .into(),
                );
            }
            (
                Source::Prometheus { url: prom.base },
                before,
                after,
                baseline_ms,
                window_ms,
                Ordinary {
                    before: ord_before,
                    after: ord_after,
                    last_query_ms,
                    bypass_after,
                    exact: false,
                },
            )
        }
    };

    let mut a = assess(before, logged_base, after, logged_after);
    // Packets after T: the device still reaches the category, whatever its DNS says.
    if traffic.as_ref().is_some_and(|t| t.after > 0.0) {
        a.verdict = Verdict::Continuing;
    }
    let silent_after_ms = args.silent_after.as_millis().min(i64::MAX as u128) as i64;
    let u = judge_use(&UseEvidence {
        before: ordinary.before,
        baseline_ms: logged_base,
        after: ordinary.after,
        after_ms: logged_after,
        last_query_ms: ordinary.last_query_ms,
        until_ms,
        silent_after_ms,
        bypass_after: ordinary.bypass_after,
    });
    let reason = if a.verdict == Verdict::Continuing {
        None
    } else if logged_after <= 0 {
        Some(Reason::NotLogged)
    } else if before <= 0.0 && after <= 0.0 {
        Some(Reason::NoAttempts)
    } else {
        match u.verdict {
            DnsUse::Bypass => Some(Reason::Bypass),
            DnsUse::Silent => Some(Reason::DnsSilent),
            DnsUse::WentQuiet => Some(Reason::WentQuiet),
            DnsUse::KeptUsing if a.verdict == Verdict::Inconclusive => Some(Reason::ThinBaseline),
            DnsUse::KeptUsing => None,
        }
    };
    let verdict = match reason {
        Some(_) => Verdict::Inconclusive,
        None => a.verdict,
    };
    let wait = match (reason, a.needed_after_ms) {
        (Some(Reason::ThinBaseline | Reason::NotLogged), Some(needed)) => {
            let more = (needed - logged_after).max(0);
            let check = until_ms + more;
            Some(Wait {
                window_seconds: needed as f64 / 1000.0,
                check_after: timespec::rfc3339_ms(check),
                check_after_ms: check,
                window_ms: needed,
            })
        }
        _ => None,
    };
    Ok(VerifyReport {
        verdict,
        exit_code: verdict.exit_code(),
        reason,
        client: sel.label.clone(),
        category,
        source,
        since: timespec::rfc3339_ms(since_ms),
        until: timespec::rfc3339_ms(until_ms),
        baseline_start: timespec::rfc3339_ms(baseline_start_ms),
        window_seconds: window_ms as f64 / 1000.0,
        baseline_seconds: baseline_ms as f64 / 1000.0,
        logged_window_seconds: logged_after as f64 / 1000.0,
        logged_baseline_seconds: logged_base as f64 / 1000.0,
        before,
        after,
        after_by_action,
        baseline_rate_per_hour: a.rate_per_ms * 3_600_000.0,
        expected_after: a.expected_after,
        p_zero: a.p_zero,
        ordinary: OrdinaryActivity {
            before: ordinary.before,
            after: ordinary.after,
            baseline_rate_per_hour: u.rate_per_ms * 3_600_000.0,
            expected_after: u.expected_after,
            p_at_most: u.p_at_most,
            exact: ordinary.exact,
            last_query: ordinary.last_query_ms.map(timespec::rfc3339_ms),
            last_query_ms: ordinary.last_query_ms,
            silent_after_seconds: silent_after_ms as f64 / 1000.0,
            bypass_after: ordinary.bypass_after,
            bypass_names,
        },
        domains,
        traffic,
        wait,
        mark,
        notes,
        since_ms,
        until_ms,
        baseline_start_ms,
        until_is_now,
        now_ms,
        seen_categories,
    })
}

/// The device's DNS use around T, from the log or from Prometheus.
struct Ordinary {
    before: f64,
    after: f64,
    last_query_ms: Option<i64>,
    bypass_after: f64,
    exact: bool,
}
