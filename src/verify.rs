//! `telesink verify`: did a device stop trying to reach a category's domains after its owner
//! switched an opt-out at time T?
//!
//! A blocked device still tries, so every attempt is a query in the log. We count the client's
//! queries in the category (blocked, observed and allowed alike) in the window [T, U) and in a
//! baseline of the same length just before T (at most 7 days), and decide:
//!
//! * **CONTINUING**: attempts after T.
//! * **STOPPED**: none after T, and at the baseline rate zero attempts in the window would be a
//!   fluke: Poisson P(0) = exp(-rate × window) < 0.01.
//! * **INCONCLUSIVE**: none after T, but the baseline is too thin to tell; the window at which
//!   the test would pass is ln(100) / rate.
//!
//! Only time during which the log was being written counts (the `runs` table), so a server that
//! was down after T cannot make a device look quiet. `--prometheus URL` reaches the verdict from
//! `telesink_category_queries_total` summed over every replica instead (no per-domain detail).

use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Serialize, Serializer};

use crate::querylog::{self, ClientList, ClientSelector, CommandError, MarkInfo, QueryLogError};
use crate::timespec::{self, format_duration_ms, TimeSpec};

/// Zero attempts must be less likely than this, at the baseline rate, for STOPPED.
pub const P_THRESHOLD: f64 = 0.01;
/// The longest baseline.
pub const MAX_BASELINE_MS: i64 = 7 * 86_400_000;

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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    Stopped,
    Continuing,
    Inconclusive,
}

impl Verdict {
    /// 0 STOPPED, 1 CONTINUING, 3 INCONCLUSIVE (2 is an error).
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Stopped => 0,
            Verdict::Continuing => 1,
            Verdict::Inconclusive => 3,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Stopped => "STOPPED",
            Verdict::Continuing => "CONTINUING",
            Verdict::Inconclusive => "INCONCLUSIVE",
        }
    }
}

/// The Poisson test on counts and the (logged) lengths of the two windows.
#[derive(Clone, Debug, PartialEq)]
pub struct Assessment {
    pub verdict: Verdict,
    /// Attempts per millisecond in the baseline.
    pub rate_per_ms: f64,
    /// Attempts expected after T at that rate.
    pub expected_after: f64,
    /// Probability of zero attempts after T at that rate.
    pub p_zero: f64,
    /// Length of an attempt-free window after T that would give STOPPED at the baseline rate.
    pub needed_after_ms: Option<i64>,
}

pub fn assess(before: f64, baseline_ms: i64, after: f64, after_ms: i64) -> Assessment {
    let rate_per_ms = if baseline_ms > 0 {
        before.max(0.0) / baseline_ms as f64
    } else {
        0.0
    };
    let expected_after = rate_per_ms * after_ms.max(0) as f64;
    let p_zero = (-expected_after).exp();
    let verdict = if after > 0.0 {
        Verdict::Continuing
    } else if rate_per_ms > 0.0 && p_zero < P_THRESHOLD {
        Verdict::Stopped
    } else {
        Verdict::Inconclusive
    };
    let needed_after_ms = (rate_per_ms > 0.0)
        .then(|| ((1.0 / P_THRESHOLD).ln() / rate_per_ms).ceil())
        .filter(|v| v.is_finite() && *v < i64::MAX as f64 / 2.0)
        .map(|v| v as i64 + 1);
    Assessment {
        verdict,
        rate_per_ms,
        expected_after,
        p_zero,
        needed_after_ms,
    }
}

/// Where the counts came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Source {
    QueryLog { path: String },
    Prometheus { url: String },
}

/// One domain's attempts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DomainCount {
    pub name: String,
    pub before: u64,
    pub after: u64,
    /// RFC 3339, UTC: the latest attempt in [baseline start, U).
    pub last_seen: String,
    #[serde(skip)]
    pub last_seen_ms: i64,
}

/// Attempts after T by what telesink did with them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Actions {
    pub blocked: u64,
    pub observed: u64,
    pub allowed: u64,
}

/// How long to wait for a conclusive answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Wait {
    /// Attempt-free time after T that would give STOPPED at the baseline rate.
    pub window_seconds: f64,
    /// RFC 3339, UTC: `--until` (or the time to run again) for that window.
    pub check_after: String,
    #[serde(skip)]
    pub check_after_ms: i64,
    #[serde(skip)]
    pub window_ms: i64,
}

fn count<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.fract() == 0.0 && v.abs() < 9e15 {
        s.serialize_i64(*v as i64)
    } else {
        s.serialize_f64((*v * 1000.0).round() / 1000.0)
    }
}

/// The report: print [`VerifyReport::render_text`] or [`VerifyReport::render_json`], exit with
/// [`VerifyReport::exit_code`].
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    pub verdict: Verdict,
    pub exit_code: i32,
    pub client: String,
    pub category: String,
    pub source: Source,
    /// T, RFC 3339 UTC.
    pub since: String,
    /// U.
    pub until: String,
    pub baseline_start: String,
    pub window_seconds: f64,
    pub baseline_seconds: f64,
    /// Of each window, the time telesink was logging (equal to the window with Prometheus).
    pub logged_window_seconds: f64,
    pub logged_baseline_seconds: f64,
    /// Attempts in the baseline [baseline_start, since).
    #[serde(serialize_with = "count")]
    pub before: f64,
    /// Attempts in [since, until).
    #[serde(serialize_with = "count")]
    pub after: f64,
    /// With the query log only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after_by_action: Option<Actions>,
    pub baseline_rate_per_hour: f64,
    pub expected_after: f64,
    pub p_zero: f64,
    /// Most attempts first; empty with Prometheus.
    pub domains: Vec<DomainCount>,
    pub wait: Option<Wait>,
    pub mark: Option<MarkInfo>,
    pub notes: Vec<String>,

    #[serde(skip)]
    since_ms: i64,
    #[serde(skip)]
    until_ms: i64,
    #[serde(skip)]
    baseline_start_ms: i64,
    #[serde(skip)]
    until_is_now: bool,
    #[serde(skip)]
    now_ms: i64,
    /// Categories this client has in the log, for the hint when nothing matched.
    #[serde(skip)]
    seen_categories: Option<Vec<String>>,
}

impl VerifyReport {
    pub fn exit_code(&self) -> i32 {
        self.verdict.exit_code()
    }

    pub fn render_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("serializable")
    }

    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let zone = timespec::local_zone_abbreviation(timespec::from_ms(self.since_ms));
        out.push_str(&format!(
            "{}, category {} (times {zone})\n",
            self.client, self.category
        ));
        let count_w = [fmt_count(self.before), fmt_count(self.after)]
            .iter()
            .map(|s| s.len())
            .max()
            .unwrap_or(1);
        let span_b = fmt_span(self.baseline_start_ms, self.since_ms);
        let span_a = fmt_span(self.since_ms, self.until_ms);
        let span_w = span_b.len().max(span_a.len());
        out.push_str(&format!(
            "before  {span_b:<span_w$}  {:>count_w$} attempts\n",
            fmt_count(self.before)
        ));
        out.push_str(&format!(
            "after   {span_a:<span_w$}  {:>count_w$} attempts",
            fmt_count(self.after)
        ));
        if let Some(m) = &self.mark {
            out.push_str(&format!("  (mark {}: {})", m.id, m.note));
        }
        out.push('\n');
        if let Source::Prometheus { url } = &self.source {
            out.push_str(&format!(
                "from Prometheus {url}, summed over every telesink it scrapes (no per-domain detail)\n"
            ));
        }
        if !self.domains.is_empty() {
            out.push('\n');
            let header = [
                "DOMAIN".to_string(),
                "BEFORE".into(),
                "AFTER".into(),
                "LAST SEEN".into(),
            ];
            let rows: Vec<[String; 4]> = self
                .domains
                .iter()
                .map(|d| {
                    [
                        d.name.clone(),
                        d.before.to_string(),
                        d.after.to_string(),
                        timespec::format_local(timespec::from_ms(d.last_seen_ms)),
                    ]
                })
                .collect();
            out.push_str(&querylog::table(&header, &rows, &[1, 2]));
        }
        out.push('\n');
        for n in &self.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        out.push_str(&self.verdict_text());
        out
    }

    fn verdict_text(&self) -> String {
        let t = timespec::format_local(timespec::from_ms(self.since_ms));
        let (client, cat) = (&self.client, &self.category);
        let rate = fmt_rate(self.baseline_rate_per_hour);
        match self.verdict {
            Verdict::Continuing => {
                let mut s = format!(
                    "CONTINUING: {client} still tries: {} {cat} attempts after {t}",
                    fmt_count(self.after)
                );
                if let Some(a) = &self.after_by_action {
                    let parts: Vec<String> = [
                        (a.blocked, "blocked"),
                        (a.observed, "observed"),
                        (a.allowed, "allowed"),
                    ]
                    .iter()
                    .filter(|(n, _)| *n > 0)
                    .map(|(n, w)| format!("{n} {w}"))
                    .collect();
                    if !parts.is_empty() {
                        s.push_str(&format!(" ({})", parts.join(", ")));
                    }
                }
                let after: Vec<&DomainCount> =
                    self.domains.iter().filter(|d| d.after > 0).collect();
                if !after.is_empty() {
                    let mut by_after = after.clone();
                    by_after.sort_by(|a, b| b.after.cmp(&a.after).then(a.name.cmp(&b.name)));
                    let shown: Vec<String> = by_after
                        .iter()
                        .take(5)
                        .map(|d| format!("{} ({})", d.name, d.after))
                        .collect();
                    s.push_str(&format!(".\nDomains: {}", shown.join(", ")));
                    if by_after.len() > 5 {
                        s.push_str(&format!(" and {} more", by_after.len() - 5));
                    }
                }
                s.push_str(".\n");
                s
            }
            Verdict::Stopped => format!(
                "STOPPED: no {cat} attempts from {client} after {t}.\nAt the baseline rate ({rate}), \
                 {} were expected; zero by chance has a probability of {}.\n",
                fmt_expected(self.expected_after),
                fmt_prob(self.p_zero)
            ),
            Verdict::Inconclusive if self.before > 0.0 && self.logged_window_seconds > 0.0 => {
                let mut s = format!(
                    "INCONCLUSIVE: no {cat} attempts from {client} after {t}, but the baseline is thin: \
                     {} in {}.\nAt that rate ({rate}), {} without attempts happens by chance {} of the time.\n",
                    fmt_count(self.before),
                    format_duration_ms((self.logged_baseline_seconds * 1000.0) as i64),
                    format_duration_ms((self.logged_window_seconds * 1000.0) as i64),
                    fmt_prob(self.p_zero),
                );
                s.push_str(&self.wait_text());
                s
            }
            Verdict::Inconclusive if self.logged_window_seconds <= 0.0 => {
                let mut s = format!(
                    "INCONCLUSIVE: telesink logged nothing after {t} (it was not running, or log = \"none\"), \
                     so it cannot tell whether {client} stopped.\n"
                );
                s.push_str(&self.wait_text());
                s
            }
            Verdict::Inconclusive => {
                let seen = match &self.seen_categories {
                    Some(c) if c.is_empty() => {
                        " (the log holds no categorized queries from this client)".to_string()
                    }
                    Some(c) => format!(" (this client's categories in the log: {})", c.join(", ")),
                    None => String::new(),
                };
                let check = match self.source {
                    Source::QueryLog { .. } => format!(
                        "telesink log --client {}",
                        shell_word(client)
                    ),
                    Source::Prometheus { .. } => format!(
                        "telesink_category_queries_total{{client=\"{client}\"}} in Prometheus"
                    ),
                };
                format!(
                    "INCONCLUSIVE: no {cat} attempts from {client} before or after {t}, so silence proves nothing.\n\
                     Check that the device uses telesink as its DNS ({check}) and the category name{seen}; \
                     an earlier --since also lengthens the baseline, up to 7 days.\n"
                )
            }
        }
    }

    fn wait_text(&self) -> String {
        let Some(w) = &self.wait else {
            return String::new();
        };
        let t = timespec::format_local(timespec::from_ms(self.since_ms));
        let when = timespec::format_local(timespec::from_ms(w.check_after_ms));
        if self.until_is_now {
            format!(
                "{} of logged time after {t} without attempts would show STOPPED: run verify again after {when} (in {}).\n",
                format_duration_ms(w.window_ms),
                format_duration_ms(w.check_after_ms - self.now_ms),
            )
        } else {
            format!(
                "{} of logged time after {t} without attempts would show STOPPED: use --until {when} or later.\n",
                format_duration_ms(w.window_ms),
            )
        }
    }
}

fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn fmt_count(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{}", v as i64)
    } else {
        format!("{v:.1}")
    }
}

fn fmt_expected(v: f64) -> String {
    if v >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// `14%`, `0.67%`, `0.0017%`: two significant digits.
fn fmt_prob(p: f64) -> String {
    if p < 1e-9 {
        return "less than one in a billion".to_string();
    }
    let pct = p * 100.0;
    let decimals = (1 - pct.log10().floor() as i32).max(0) as usize;
    format!("{pct:.decimals$}%")
}

/// `12 per hour`, `3.5 per day`, `300 per minute`.
fn fmt_rate(per_hour: f64) -> String {
    let (v, unit) = if per_hour >= 600.0 {
        (per_hour / 60.0, "minute")
    } else if per_hour >= 1.0 {
        (per_hour, "hour")
    } else {
        (per_hour * 24.0, "day")
    };
    if v >= 10.0 || (v - v.round()).abs() < 0.05 {
        format!("{v:.0} per {unit}")
    } else {
        format!("{v:.1} per {unit}")
    }
}

/// `2026-11-25 14:00:00 to 15:00:00 (1h)`, the date only once when both are on one day.
fn fmt_span(from_ms: i64, to_ms: i64) -> String {
    let a = timespec::format_local(timespec::from_ms(from_ms));
    let b = timespec::format_local(timespec::from_ms(to_ms));
    let b = if a.get(..10) == b.get(..10) {
        b[11..].to_string()
    } else {
        b
    };
    format!("{a} to {b} ({})", format_duration_ms(to_ms - from_ms))
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
    let sel = ClientSelector::resolve(&args.client, clients)?;
    let category = args.category.trim().to_string();
    if category.is_empty() {
        return Err(CommandError::Usage(
            "--category is empty: name a category of your lists, e.g. telemetry".into(),
        ));
    }
    let now_ms = now.as_millisecond();
    let mut notes = Vec::new();

    // Marks live in the query log, even with --prometheus.
    let mut conn = None;
    let open =
        || -> Result<rusqlite::Connection, CommandError> { Ok(querylog::open_existing(db)?) };
    let mut mark = None;
    let resolve = |spec: &TimeSpec,
                   what: &str,
                   conn: &mut Option<rusqlite::Connection>,
                   mark: &mut Option<MarkInfo>|
     -> Result<i64, CommandError> {
        match spec {
            TimeSpec::Mark(m) => {
                if conn.is_none() {
                    *conn = Some(open()?);
                }
                let info = querylog::find_mark(conn.as_ref().unwrap(), db, *m, Some(&sel))?;
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
    let since_ms = resolve(&args.since, "--since", &mut conn, &mut mark)?;
    let until_ms = match &args.until {
        None => now_ms,
        Some(u) => resolve(u, "--until", &mut conn, &mut None)?,
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
    let (source, before, after, logged_base, logged_after) = match &args.prometheus {
        None => {
            let conn = match conn {
                Some(c) => c,
                None => open()?,
            };
            let e = |err: rusqlite::Error| CommandError::Db(QueryLogError::from_sqlite(db, &err));
            let counts = querylog::category_counts(
                &conn,
                &sel,
                &category,
                baseline_start_ms,
                since_ms,
                until_ms,
            )
            .map_err(e)?;
            let logged_base =
                querylog::logged_ms(&conn, baseline_start_ms, since_ms, now_ms).map_err(e)?;
            let logged_after = querylog::logged_ms(&conn, since_ms, until_ms, now_ms).map_err(e)?;
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
                seen_categories = Some(querylog::client_categories(&conn, &sel).map_err(e)?);
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
            (
                Source::QueryLog {
                    path: db.display().to_string(),
                },
                before as f64,
                after as f64,
                logged_base,
                logged_after,
            )
        }
        Some(url) => {
            let prom = Prometheus::new(url);
            let before = prom.increase(&sel.label, &category, baseline_ms, since_ms)?;
            let after = prom.increase(&sel.label, &category, window_ms, until_ms)?;
            notes.push(
                "Prometheus counts are estimates: increase() extrapolates between scrapes".into(),
            );
            (
                Source::Prometheus { url: prom.base },
                before,
                after,
                baseline_ms,
                window_ms,
            )
        }
    };

    let a = assess(before, logged_base, after, logged_after);
    let wait = match (a.verdict, a.needed_after_ms) {
        (Verdict::Inconclusive, Some(needed)) => {
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
        verdict: a.verdict,
        exit_code: a.verdict.exit_code(),
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
        domains,
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

/// The Prometheus HTTP API, instant queries only.
struct Prometheus {
    base: String,
    agent: ureq::Agent,
}

impl Prometheus {
    fn new(url: &str) -> Prometheus {
        let mut base = url.trim().trim_end_matches('/').to_string();
        for suffix in ["/api/v1/query", "/graph"] {
            if let Some(b) = base.strip_suffix(suffix) {
                base = b.to_string();
            }
        }
        if !base.contains("://") {
            base = format!("http://{base}");
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(15)))
            .http_status_as_error(false)
            .build()
            .into();
        Prometheus { base, agent }
    }

    fn err(&self, message: impl Into<String>) -> CommandError {
        CommandError::Prometheus {
            url: self.base.clone(),
            message: message.into(),
        }
    }

    /// `sum(increase(telesink_category_queries_total{client, category}[range]))` at `at_ms`.
    fn increase(
        &self,
        client: &str,
        category: &str,
        range_ms: i64,
        at_ms: i64,
    ) -> Result<f64, CommandError> {
        let query = promql_increase(client, category, range_ms);
        let time = format!("{}.{:03}", at_ms.div_euclid(1000), at_ms.rem_euclid(1000));
        let mut resp = self
            .agent
            .get(format!("{}/api/v1/query", self.base))
            .query("query", &query)
            .query("time", &time)
            .call()
            .map_err(|e| {
                self.err(format!(
                    "cannot query it ({e}); check the URL (e.g. http://prometheus:9090) and that it runs"
                ))
            })?;
        let status = resp.status();
        let body = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| self.err(format!("cannot read the answer: {e}")))?;
        parse_prometheus_answer(&body)
            .map_err(|m| self.err(format!("{m} (HTTP {status}, query {query})")))
    }
}

fn promql_label(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

pub(crate) fn promql_increase(client: &str, category: &str, range_ms: i64) -> String {
    format!(
        "sum(increase(telesink_category_queries_total{{client=\"{}\",category=\"{}\"}}[{}ms]))",
        promql_label(client),
        promql_label(category),
        range_ms.max(1)
    )
}

/// The value of an instant-vector answer; an empty vector is 0.
pub(crate) fn parse_prometheus_answer(body: &str) -> Result<f64, String> {
    let v: serde_json::Value = serde_json::from_str(body).map_err(|_| {
        let start: String = body.chars().take(80).collect();
        format!("the answer is not Prometheus API JSON: {start:?}")
    })?;
    if v["status"] != "success" {
        return Err(format!(
            "query failed: {} {}",
            v["errorType"].as_str().unwrap_or(""),
            v["error"].as_str().unwrap_or("(no error message)")
        ));
    }
    let result = v["data"]["result"]
        .as_array()
        .ok_or("the answer has no data.result")?;
    let mut total = 0.0;
    for series in result {
        let value = series["value"][1]
            .as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .ok_or("a series has no numeric value")?;
        if value.is_finite() {
            total += value;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::category::{Action, CategorySet, CategoryTable};
    use crate::events::{ClientInfo, QueryEvent, QueryResult, QuerySink};
    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::RecordType;
    use rusqlite::params;
    use std::sync::Arc;

    #[test]
    fn poisson_thresholds() {
        let h = 3_600_000;
        // 5 per hour before, an hour of silence: e^-5 = 0.0067 < 0.01.
        let a = assess(5.0, h, 0.0, h);
        assert_eq!(a.verdict, Verdict::Stopped);
        assert!((a.p_zero - (-5.0f64).exp()).abs() < 1e-12);
        // 4 per hour: e^-4 = 0.018, not enough; ln(100)/4 h = 69.08 min needed.
        let a = assess(4.0, h, 0.0, h);
        assert_eq!(a.verdict, Verdict::Inconclusive);
        let needed = a.needed_after_ms.unwrap();
        assert!(
            (needed - (100f64.ln() / 4.0 * h as f64) as i64).abs() <= 2,
            "{needed}"
        );
        // And that window is indeed enough.
        assert_eq!(assess(4.0, h, 0.0, needed).verdict, Verdict::Stopped);
        assert_eq!(
            assess(4.0, h, 0.0, needed - 1000).verdict,
            Verdict::Inconclusive
        );
        // Any attempt after T continues.
        assert_eq!(assess(100.0, h, 1.0, h).verdict, Verdict::Continuing);
        assert_eq!(assess(0.0, h, 0.3, h).verdict, Verdict::Continuing);
        // No baseline: nothing to compare with, and no wait to suggest.
        let a = assess(0.0, h, 0.0, h);
        assert_eq!(a.verdict, Verdict::Inconclusive);
        assert_eq!(a.needed_after_ms, None);
        assert_eq!(assess(10.0, 0, 0.0, h).verdict, Verdict::Inconclusive);
        // Nothing logged after T proves nothing.
        assert_eq!(assess(1000.0, h, 0.0, 0).verdict, Verdict::Inconclusive);
        // A short baseline, a long window: the rate scales.
        assert_eq!(assess(2.0, h, 0.0, 3 * h).verdict, Verdict::Stopped);
        assert_eq!(Verdict::Stopped.exit_code(), 0);
        assert_eq!(Verdict::Continuing.exit_code(), 1);
        assert_eq!(Verdict::Inconclusive.exit_code(), 3);
    }

    #[test]
    fn formatting() {
        assert_eq!(fmt_prob(0.135), "14%");
        assert_eq!(fmt_prob(0.0067), "0.67%");
        assert_eq!(fmt_prob(1.67e-5), "0.0017%");
        assert_eq!(fmt_prob(1e-40), "less than one in a billion");
        assert_eq!(fmt_rate(12.0), "12 per hour");
        assert_eq!(fmt_rate(2.5), "2.5 per hour");
        assert_eq!(fmt_rate(2.0), "2 per hour");
        assert_eq!(fmt_rate(0.5), "12 per day");
        assert_eq!(fmt_rate(18_000.0), "300 per minute");
        assert_eq!(
            promql_increase("anna \"phone\"", "telemetry", 3_600_000),
            r#"sum(increase(telesink_category_queries_total{client="anna \"phone\"",category="telemetry"}[3600000ms]))"#
        );
    }

    #[test]
    fn prometheus_answers() {
        let ok = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1764082800,"12.5"]}]}}"#;
        assert_eq!(parse_prometheus_answer(ok).unwrap(), 12.5);
        let empty = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(parse_prometheus_answer(empty).unwrap(), 0.0);
        let bad = r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        assert!(parse_prometheus_answer(bad)
            .unwrap_err()
            .contains("parse error"));
        assert!(parse_prometheus_answer("<html>")
            .unwrap_err()
            .contains("not Prometheus"));
    }

    const H: i64 = 3_600_000;

    /// A log with a run covering [start, now) and rows at the given times.
    struct Db {
        _dir: tempfile::TempDir,
        path: std::path::PathBuf,
        now: Timestamp,
    }

    impl Db {
        fn new(run_from_ms: i64) -> Db {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("q.db");
            let now: Timestamp = "2026-11-25T16:00:00Z".parse().unwrap();
            let conn = querylog::open_rw(&path).unwrap();
            conn.execute(
                "INSERT INTO runs (start_ms, alive_ms, end_ms, mode, anonymize) VALUES (?1, ?2, NULL, 'matched', 0)",
                params![run_from_ms, now.as_millisecond()],
            )
            .unwrap();
            Db {
                _dir: dir,
                path,
                now,
            }
        }

        fn ms(&self, ago_ms: i64) -> i64 {
            self.now.as_millisecond() - ago_ms
        }

        /// Writes rows through the real writer.
        fn add(&self, client: &ClientInfo, name: &str, action: Action, times: &[i64]) {
            let mut table = CategoryTable::new();
            let t = table.intern("telemetry").unwrap();
            let table = Arc::new(table);
            let list: Arc<str> = Arc::from("xiaomi");
            let log = querylog::QueryLog::open(
                querylog::QueryLogSettings {
                    path: self.path.clone(),
                    mode: querylog::LogMode::Matched,
                    retention_days: 0,
                    anonymize: false,
                    queue_size: 10_000,
                },
                prometheus::IntCounter::new("d", "d").unwrap(),
                None,
            )
            .unwrap();
            for &ms in times {
                log.record(&QueryEvent {
                    time: std::time::UNIX_EPOCH + Duration::from_millis(ms as u64),
                    client,
                    name,
                    qtype: RecordType::A,
                    result: QueryResult::Blocked,
                    categories: CategorySet::single(t),
                    category_table: &table,
                    list: Some(&list),
                    action: Some(action),
                    rcode: ResponseCode::NoError,
                    upstream_time: None,
                    elapsed: Duration::ZERO,
                });
            }
            log.shutdown();
            // Keep only the run the test set up.
            let conn = rusqlite::Connection::open(&self.path).unwrap();
            conn.execute("DELETE FROM runs WHERE id > 1", []).unwrap();
        }

        fn verify(&self, client: &str, since: &str, until: Option<&str>) -> VerifyReport {
            self.try_verify(client, since, until).unwrap()
        }

        fn try_verify(
            &self,
            client: &str,
            since: &str,
            until: Option<&str>,
        ) -> Result<VerifyReport, CommandError> {
            let clients = vec![(
                "anna-phone".to_string(),
                vec!["192.168.1.50/32".parse().unwrap()],
            )];
            verify_at(
                &VerifyArgs {
                    client: client.into(),
                    category: "telemetry".into(),
                    since: TimeSpec::parse(since).unwrap(),
                    until: until.map(|u| TimeSpec::parse(u).unwrap()),
                    prometheus: None,
                },
                &self.path,
                &clients,
                self.now,
            )
        }
    }

    fn anna() -> ClientInfo {
        ClientInfo {
            addr: "192.168.1.50".parse().unwrap(),
            name: Some(Arc::from("anna-phone")),
            named_by: crate::devices::NamedBy::ConfigAddress,
            mac: None,
            group: None,
        }
    }

    #[test]
    fn stopped_continuing_inconclusive_from_the_log() {
        let db = Db::new(0);
        let a = anna();
        // Baseline hour [14:00, 15:00): 12 attempts on two domains.
        let base: Vec<i64> = (0..9).map(|i| db.ms(2 * H - i * 60_000 - 1000)).collect();
        db.add(&a, "tracking.miui.com", Action::Blocked, &base);
        let base2: Vec<i64> = (0..3).map(|i| db.ms(H + 10 * 60_000 + i * 1000)).collect();
        db.add(&a, "data.mistat.xiaomi.com", Action::Blocked, &base2);

        let r = db.verify("anna-phone", "1h", None);
        assert_eq!(r.verdict, Verdict::Stopped, "{}", r.render_text());
        assert_eq!((r.before, r.after), (12.0, 0.0));
        assert_eq!(r.domains[0].name, "tracking.miui.com");
        assert_eq!((r.domains[0].before, r.domains[0].after), (9, 0));
        let text = r.render_text();
        assert!(
            text.contains("STOPPED: no telemetry attempts from anna-phone"),
            "{text}"
        );
        assert!(text.contains("12 were expected"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&r.render_json()).unwrap();
        assert_eq!(json["verdict"], "STOPPED");
        assert_eq!(json["exit_code"], 0);
        assert_eq!(json["before"], 12);
        assert_eq!(json["domains"][0]["name"], "tracking.miui.com");
        assert_eq!(json["source"]["kind"], "query_log");

        // The address finds the same rows.
        assert_eq!(db.verify("192.168.1.50", "1h", None).before, 12.0);

        // Attempts after T, observed ones included: CONTINUING with the domains.
        db.add(
            &a,
            "tracking.miui.com",
            Action::Observed,
            &[db.ms(30 * 60_000)],
        );
        db.add(
            &a,
            "metrics.data.hicloud.com",
            Action::Allowed,
            &[db.ms(20 * 60_000), db.ms(60_000)],
        );
        let r = db.verify("anna-phone", "1h", None);
        assert_eq!(r.verdict, Verdict::Continuing);
        assert_eq!(r.after, 3.0);
        assert_eq!(
            r.after_by_action,
            Some(Actions {
                blocked: 0,
                observed: 1,
                allowed: 2
            })
        );
        let text = r.render_text();
        assert!(
            text.contains("CONTINUING: anna-phone still tries: 3 telemetry attempts after")
                && text.contains("(1 observed, 2 allowed).\nDomains: metrics.data.hicloud.com (2), tracking.miui.com (1)."),
            "{text}"
        );
        assert_eq!(r.exit_code(), 1);

        // A thin baseline: 2 attempts in the hour before T.
        let db = Db::new(0);
        db.add(
            &a,
            "tracking.miui.com",
            Action::Blocked,
            &[db.ms(H + 60_000), db.ms(H + 120_000)],
        );
        let r = db.verify("anna-phone", "1h", None);
        assert_eq!(r.verdict, Verdict::Inconclusive);
        let w = r.wait.as_ref().unwrap();
        // ln(100)/2 hours = 2h 18m 9s of silence after T: 1h 18m more.
        assert!(
            (w.window_ms - (100f64.ln() / 2.0 * H as f64) as i64).abs() < 2000,
            "{w:?}"
        );
        let text = r.render_text();
        assert!(text.contains("the baseline is thin: 2 in 1h"), "{text}");
        assert!(
            text.contains("run verify again after") && text.contains("(in 1h 18m)"),
            "{text}"
        );
        assert_eq!(r.exit_code(), 3);

        // With an explicit --until, the advice is a later --until.
        let until = timespec::rfc3339_ms(db.ms(0));
        let r = db.verify("anna-phone", "1h", Some(&until));
        assert!(
            r.render_text().contains("use --until"),
            "{}",
            r.render_text()
        );

        // No baseline at all.
        let r = db.verify("10.9.9.9", "1h", None);
        assert_eq!(r.verdict, Verdict::Inconclusive);
        assert!(r.wait.is_none());
        let text = r.render_text();
        assert!(
            text.contains("before or after") && text.contains("telesink log --client 10.9.9.9"),
            "{text}"
        );
        let r = db.verify("anna-phone", "1h", None);
        assert!(r.seen_categories.is_none());
    }

    #[test]
    fn only_logged_time_counts() {
        // The log started 10 min before T: the baseline rate uses 10 minutes, not an hour.
        let db = Db::new(0);
        let a = anna();
        let t = db.ms(H);
        db.add(
            &a,
            "tracking.miui.com",
            Action::Blocked,
            &[t - 60_000, t - 120_000],
        );
        let conn = rusqlite::Connection::open(&db.path).unwrap();
        conn.execute("UPDATE runs SET start_ms = ?1", [t - 10 * 60_000])
            .unwrap();
        let r = db.verify("anna-phone", "1h", None);
        // 2 in 10 min = 12/h, an hour of silence: STOPPED.
        assert_eq!(r.verdict, Verdict::Stopped, "{}", r.render_text());
        assert!(r
            .notes
            .iter()
            .any(|n| n.contains("logged only 10m of the 1h baseline")));

        // The server stopped right after T: silence after T proves nothing.
        conn.execute(
            "UPDATE runs SET start_ms = 0, end_ms = ?1, alive_ms = ?1",
            [t],
        )
        .unwrap();
        let r = db.verify("anna-phone", "1h", None);
        assert_eq!(r.verdict, Verdict::Inconclusive, "{}", r.render_text());
        assert!(
            r.render_text().contains("telesink logged nothing after"),
            "{}",
            r.render_text()
        );

        // It stopped half-way: the rate covers only what was logged.
        conn.execute(
            "UPDATE runs SET end_ms = ?1, alive_ms = ?1",
            [t + 30 * 60_000],
        )
        .unwrap();
        let r = db.verify("anna-phone", "1h", None);
        assert!(
            r.notes
                .iter()
                .any(|n| n.contains("logged only 30m of the 1h after")),
            "{:?}",
            r.notes
        );
        assert!((r.expected_after - 1.0).abs() < 1e-9);
    }

    #[test]
    fn marks_and_errors() {
        let db = Db::new(0);
        let a = anna();
        let clients = vec![(
            "anna-phone".to_string(),
            vec!["192.168.1.50/32".parse().unwrap()],
        )];
        let base: Vec<i64> = (0..10).map(|i| db.ms(H + 60_000 + i * 1000)).collect();
        db.add(&a, "tracking.miui.com", Action::Blocked, &base);
        let margs = querylog::MarkArgs {
            client: "anna-phone".into(),
            note: "MIUI analytics off".into(),
        };
        querylog::mark_at(&margs, &db.path, &clients, db.ms(3 * H)).unwrap();
        let m = querylog::mark_at(&margs, &db.path, &clients, db.ms(H)).unwrap();
        let r = db.verify("anna-phone", "mark:last", None);
        assert_eq!(r.mark.as_ref().unwrap().id, m.mark.id);
        assert_eq!(r.since, timespec::rfc3339_ms(db.ms(H)));
        assert_eq!(r.verdict, Verdict::Stopped);
        assert!(
            r.render_text().contains("(mark 2: MIUI analytics off)"),
            "{}",
            r.render_text()
        );
        let r = db.verify("192.168.1.50", "mark:1", None);
        assert_eq!(r.since, timespec::rfc3339_ms(db.ms(3 * H)));
        // Another client's mark:last does not exist.
        let e = db
            .try_verify("10.0.0.1", "mark:last", None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no mark for 10.0.0.1") && e.contains("telesink mark"),
            "{e}"
        );
        let e = db
            .try_verify("anna-phone", "mark:99", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no mark 99"), "{e}");
        // Times out of order.
        let e = db
            .try_verify("anna-phone", "1h", Some("2h"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("must be after --since"), "{e}");
        let e = db
            .try_verify("anna-phone", "2030-01-01T00:00:00Z", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("in the future"), "{e}");
        let e = db.try_verify("nobody", "1h", None).unwrap_err().to_string();
        assert!(e.contains("unknown client \"nobody\""), "{e}");
        // No database.
        let clients: Vec<(String, Vec<ipnet::IpNet>)> = vec![];
        let e = verify_at(
            &VerifyArgs {
                client: "10.0.0.1".into(),
                category: "telemetry".into(),
                since: TimeSpec::parse("1h").unwrap(),
                until: None,
                prometheus: None,
            },
            &db.path.with_file_name("absent.db"),
            &clients,
            db.now,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("absent.db") && e.contains("no query log"), "{e}");
    }

    #[test]
    fn baseline_is_at_most_seven_days() {
        let db = Db::new(0);
        let a = anna();
        let day = 24 * H;
        // One attempt 9 days before T (outside), 6 within the 7 days before T.
        let t = db.ms(10 * day);
        let mut times = vec![t - 9 * day];
        times.extend((1..=6).map(|i| t - i * day));
        db.add(&a, "tracking.miui.com", Action::Blocked, &times);
        let r = db.verify("anna-phone", "10d", None);
        assert_eq!(r.baseline_seconds, 7.0 * 86_400.0);
        assert_eq!(r.before, 6.0);
        // 6 in 7 days, 10 days of silence: expected 8.6, STOPPED.
        assert_eq!(r.verdict, Verdict::Stopped);
    }

    #[test]
    fn unreachable_prometheus_is_an_error() {
        let db = Db::new(0);
        let clients: Vec<(String, Vec<ipnet::IpNet>)> = vec![];
        let e = verify_at(
            &VerifyArgs {
                client: "10.0.0.1".into(),
                category: "telemetry".into(),
                since: TimeSpec::parse("1h").unwrap(),
                until: None,
                prometheus: Some("127.0.0.1:1".into()),
            },
            &db.path,
            &clients,
            db.now,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("Prometheus http://127.0.0.1:1: cannot query it"),
            "{e}"
        );
    }
}
