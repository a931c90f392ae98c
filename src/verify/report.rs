//! The `verify` report: its fields (`--json` serializes them) and its text.

use serde::{Serialize, Serializer};

use super::evidence::{Reason, Verdict};
use crate::querylog::{self, MarkInfo};
use crate::timespec::{self, format_duration_ms};

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

/// A device's packets to the category's learnt addresses, where telesink counts them
/// (`[addresses] nftables`): evidence beyond DNS.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Traffic {
    /// Packets in the baseline.
    #[serde(serialize_with = "count")]
    pub before: f64,
    /// Packets after T.
    #[serde(serialize_with = "count")]
    pub after: f64,
    /// Packets of a counter reading that spans T (a few seconds), on neither side.
    #[serde(serialize_with = "count")]
    pub spanning: f64,
    /// Per address, most packets after T first; empty with Prometheus.
    pub addresses: Vec<AddressTraffic>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AddressTraffic {
    pub address: String,
    pub before: u64,
    pub after: u64,
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
    /// Why telesink cannot tell, with INCONCLUSIVE.
    pub reason: Option<Reason>,
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
    /// The device's ordinary queries: the evidence that it kept using telesink.
    pub ordinary: OrdinaryActivity,
    /// Most attempts first; empty with Prometheus.
    pub domains: Vec<DomainCount>,
    /// Packets to the category's addresses, where telesink counts them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traffic: Option<Traffic>,
    pub wait: Option<Wait>,
    pub mark: Option<MarkInfo>,
    pub notes: Vec<String>,

    #[serde(skip)]
    pub(crate) since_ms: i64,
    #[serde(skip)]
    pub(crate) until_ms: i64,
    #[serde(skip)]
    pub(crate) baseline_start_ms: i64,
    #[serde(skip)]
    pub(crate) until_is_now: bool,
    #[serde(skip)]
    pub(crate) now_ms: i64,
    /// Categories this client has in the log, for the hint when nothing matched.
    #[serde(skip)]
    pub(crate) seen_categories: Option<Vec<String>>,
}

/// The device's ordinary (uncategorised) queries before and after T, and what they show.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OrdinaryActivity {
    /// In the baseline (at most this many, when counted per minute).
    #[serde(serialize_with = "count")]
    pub before: f64,
    /// After T (at least this many, when counted per minute).
    #[serde(serialize_with = "count")]
    pub after: f64,
    pub baseline_rate_per_hour: f64,
    /// Ordinary queries expected after T at the baseline rate.
    pub expected_after: f64,
    /// P(X ≤ after) for X ~ Poisson(expected_after).
    pub p_at_most: f64,
    /// Counted from logged rows (`log = "all"`), not per minute or from Prometheus.
    pub exact: bool,
    /// RFC 3339, UTC: its last query before the window's end, when known.
    pub last_query: Option<String>,
    #[serde(skip)]
    pub last_query_ms: Option<i64>,
    pub silent_after_seconds: f64,
    /// Queries of category `bypass` after T, and their names (query log only).
    #[serde(serialize_with = "count")]
    pub bypass_after: f64,
    pub bypass_names: Vec<String>,
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
        let ord_w = [
            fmt_count(self.ordinary.before),
            fmt_count(self.ordinary.after),
        ]
        .iter()
        .map(|s| s.len())
        .max()
        .unwrap_or(1);
        let span_b = fmt_span(self.baseline_start_ms, self.since_ms);
        let span_a = fmt_span(self.since_ms, self.until_ms);
        let span_w = span_b.len().max(span_a.len());
        out.push_str(&format!(
            "before  {span_b:<span_w$}  {:>count_w$} attempts  {:>ord_w$} ordinary queries\n",
            fmt_count(self.before),
            fmt_count(self.ordinary.before)
        ));
        out.push_str(&format!(
            "after   {span_a:<span_w$}  {:>count_w$} attempts  {:>ord_w$} ordinary queries",
            fmt_count(self.after),
            fmt_count(self.ordinary.after)
        ));
        if let Some(m) = &self.mark {
            out.push_str(&format!("  (mark {}: {})", m.id, m.note));
        }
        out.push('\n');
        if let Some(t) = &self.traffic {
            out.push_str(&format!(
                "packets to {} addresses: {} before, {} after\n",
                self.category,
                fmt_count(t.before),
                fmt_count(t.after)
            ));
        }
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
        if self.verdict != Verdict::Continuing && self.reason != Some(Reason::NotLogged) {
            out.push_str(&self.ordinary_text());
        }
        out
    }

    /// The Poisson reasoning on the device's ordinary queries, in a sentence.
    fn ordinary_text(&self) -> String {
        let o = &self.ordinary;
        let client = &self.client;
        let shows = if o.after <= 0.0 || o.p_at_most < super::P_THRESHOLD {
            format!("{client} went quiet on DNS after T")
        } else {
            format!("{client} kept using telesink after T")
        };
        if o.before <= 0.0 {
            return format!(
                "Ordinary queries (no category): none in the baseline, {} after T, so {shows}.\n",
                fmt_count(o.after)
            );
        }
        if o.after >= o.expected_after {
            return format!(
                "Ordinary queries (no category): at the baseline rate ({}) about {} were expected after T and {} came, \
                 as many or more, so {shows}.\n",
                fmt_rate(o.baseline_rate_per_hour),
                fmt_expected(o.expected_after),
                fmt_count(o.after),
            );
        }
        format!(
            "Ordinary queries (no category): at the baseline rate ({}) about {} were expected after T and {} came; \
             a Poisson count that low has probability {} (P(X ≤ {})), so {shows}.\n",
            fmt_rate(o.baseline_rate_per_hour),
            fmt_expected(o.expected_after),
            fmt_count(o.after),
            fmt_prob(o.p_at_most),
            fmt_count(o.after.floor()),
        )
    }

    /// What to check when the device may have left telesink's sight.
    fn bypass_advice(&self) -> &'static str {
        "Check the device's DNS settings (Android: Settings > Network > Private DNS must be Off or \
         point to telesink; browsers: secure DNS off), that the router sends its DNS to telesink and \
         blocks DNS over TLS and HTTPS to other resolvers (deploy/router/README.md), and that the \
         device is on and in use; then run verify again.\n"
    }

    fn verdict_text(&self) -> String {
        let t = timespec::format_local(timespec::from_ms(self.since_ms));
        let (client, cat) = (&self.client, &self.category);
        let rate = fmt_rate(self.baseline_rate_per_hour);
        match self.verdict {
            Verdict::Continuing if self.after <= 0.0 => {
                // DNS is quiet, the packets are not.
                let t_ = self.traffic.as_ref();
                let mut s = format!(
                    "CONTINUING: {client} still sends packets to {cat} addresses after {t}: {} packets, \
                     though it asked no {cat} name",
                    fmt_count(t_.map_or(0.0, |t| t.after))
                );
                let shown: Vec<String> = t_
                    .map(|t| {
                        t.addresses
                            .iter()
                            .filter(|a| a.after > 0)
                            .take(5)
                            .map(|a| format!("{} ({})", a.address, a.after))
                            .collect()
                    })
                    .unwrap_or_default();
                if !shown.is_empty() {
                    s.push_str(&format!(".\nAddresses: {}", shown.join(", ")));
                }
                s.push_str(
                    ".\nIt uses addresses it did not ask telesink for (cached, built in, or from another resolver).\n",
                );
                s
            }
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
            Verdict::Inconclusive => match self.reason.unwrap_or(Reason::ThinBaseline) {
                Reason::ThinBaseline => {
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
                Reason::NotLogged => {
                    let mut s = format!(
                        "INCONCLUSIVE: telesink logged nothing after {t} (it was not running, or log = \"none\"), \
                         so it cannot tell whether {client} stopped.\n"
                    );
                    s.push_str(&self.wait_text());
                    s
                }
                Reason::NoAttempts => {
                    let seen = match &self.seen_categories {
                        Some(c) if c.is_empty() => {
                            " (the log holds no categorized queries from this client)".to_string()
                        }
                        Some(c) => {
                            format!(" (this client's categories in the log: {})", c.join(", "))
                        }
                        None => String::new(),
                    };
                    let check = match self.source {
                        Source::QueryLog { .. } => format!(
                            "telesink log --client {}",
                            querylog::commands::shell_word(client)
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
                Reason::WentQuiet => format!(
                    "INCONCLUSIVE: no {cat} attempts from {client} after {t}, but {client} went quiet on DNS: \
                     {} ordinary queries after {t}, where its baseline made about {} expected. \
                     A device that stops asking telesink may use its own DNS (DNS over HTTPS or TLS, a \
                     hard-coded resolver), have left the network, or be off: its silence proves nothing.\n{}",
                    fmt_count(self.ordinary.after),
                    fmt_expected(self.ordinary.expected_after),
                    self.bypass_advice()
                ),
                Reason::DnsSilent => {
                    let last = self
                        .ordinary
                        .last_query_ms
                        .map(|ms| timespec::format_local(timespec::from_ms(ms)))
                        .unwrap_or_else(|| "never".into());
                    format!(
                        "INCONCLUSIVE: no {cat} attempts from {client} after {t}, but {client} is DNS-silent: \
                         its last query was at {last}, more than {} before the end of the window. \
                         It may use its own DNS (DNS over HTTPS or TLS, a hard-coded resolver), or be idle: \
                         its silence proves nothing.\n{}",
                        format_duration_ms((self.ordinary.silent_after_seconds * 1000.0) as i64),
                        self.bypass_advice()
                    )
                }
                Reason::Bypass => {
                    let names = if self.ordinary.bypass_names.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", self.ordinary.bypass_names.join(", "))
                    };
                    format!(
                        "INCONCLUSIVE: no {cat} attempts from {client} after {t}, but {client} queried a resolver \
                         of category bypass after {t}{names}, {} times: it may now resolve names through it, \
                         out of telesink's sight.\n{}",
                        fmt_count(self.ordinary.bypass_after),
                        self.bypass_advice()
                    )
                }
            },
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

pub(crate) fn fmt_count(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{}", v as i64)
    } else {
        format!("{v:.1}")
    }
}

pub(crate) fn fmt_expected(v: f64) -> String {
    if v >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// `14%`, `0.67%`, `0.0017%`: two significant digits.
pub(crate) fn fmt_prob(p: f64) -> String {
    if p < 1e-9 {
        return "less than one in a billion".to_string();
    }
    let pct = p * 100.0;
    let decimals = (1 - pct.log10().floor() as i32).max(0) as usize;
    format!("{pct:.decimals$}%")
}

/// `12 per hour`, `3.5 per day`, `300 per minute`.
pub(crate) fn fmt_rate(per_hour: f64) -> String {
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
pub(crate) fn fmt_span(from_ms: i64, to_ms: i64) -> String {
    let a = timespec::format_local(timespec::from_ms(from_ms));
    let b = timespec::format_local(timespec::from_ms(to_ms));
    let b = if a.get(..10) == b.get(..10) {
        b[11..].to_string()
    } else {
        b
    };
    format!("{a} to {b} ({})", format_duration_ms(to_ms - from_ms))
}
