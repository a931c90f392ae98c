//! `telesink suggest`: names that devices asked for, that no list categorises, but that look
//! like telemetry, ranked, with the line to paste into a local list.
//!
//! Lists always lag behind devices: a vendor moves its telemetry to a new host and, until a
//! list names it, that traffic goes out and `verify` does not count it. Two signs point at
//! such names: they sit under a domain where a telemetry list already names hosts (a sibling
//! of `tracking.miui.com` under `miui.com`), or their labels say what they do (`log`, `stat`,
//! `metrics`, `analytics`, …). Neither is proof: the output is a list to review, not to paste
//! blindly.
//!
//! It reads the query log, so it needs `[querylog] log = "all"` (with "matched" the log holds
//! only names a list already categorises).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use rusqlite::params_from_iter;

use crate::config::Config;
use crate::config::LogMode;
use crate::lists::{self, ParseOptions, Pattern, RuleAction};
use crate::policy::{ListKind, Policy};
use crate::querylog::{ClientSelector, CommandError};
use crate::timespec::TimeSpec;

/// Labels (or words in labels, split at `-`, `_` and digits) that name telemetry. Short words
/// must be a whole word (`stat`, not `static`); long ones may start a word (`analyticsapi`).
const WHOLE_WORDS: &[&str] = &[
    "log", "logs", "stat", "stats", "data", "event", "events", "rum", "apm", "diag", "dc", "sdk",
    "ping", "beacon", "perf", "usage", "crash", "track", "trace", "traces", "report", "metric",
    "insight", "insights", "mistat", "sensor", "sensors",
];
const PREFIXES: &[&str] = &[
    "tracking",
    "tracker",
    "analytic",
    "telemetr",
    "metrics",
    "statistic",
    "logging",
    "logger",
    "logserv",
    "logupload",
    "collect",
    "reporting",
    "reports",
    "crashlytic",
    "diagnos",
    "monitor",
    "sentry",
    "events",
    "adjust",
    "appsflyer",
    "firebaselog",
];

/// The telemetry-like words among `name`'s labels (the last two labels, the registered domain,
/// are not looked at: `datadoghq.com` says nothing about the host).
pub fn telemetry_words(name: &str) -> Vec<String> {
    let labels: Vec<&str> = name.split('.').collect();
    let keep = labels.len().saturating_sub(2);
    let mut out: Vec<String> = Vec::new();
    for label in &labels[..keep] {
        for word in label
            .split(|c: char| c == '-' || c == '_' || c.is_ascii_digit())
            .filter(|w| !w.is_empty())
        {
            let hit = WHOLE_WORDS.contains(&word) || PREFIXES.iter().any(|p| word.starts_with(p));
            if hit && !out.iter().any(|w| w == word) {
                out.push(word.to_string());
            }
        }
    }
    out
}

/// Where telemetry lists name hosts: each listed name's parent (`tracking.miui.com` →
/// `miui.com`), with the list and how many of its names sit there. A parent of two labels or
/// fewer that is a bare public suffix (`co.uk`) is skipped by requiring a dot in it.
#[derive(Debug, Default)]
pub struct KnownParents {
    map: HashMap<String, (String, usize)>,
}

impl KnownParents {
    pub fn from_policy(policy: &Policy) -> KnownParents {
        let telemetry = policy.categories.all().find(|(_, n)| &***n == "telemetry");
        let mut map: HashMap<String, (String, usize)> = HashMap::new();
        for l in &policy.lists {
            if l.kind != ListKind::Block {
                continue;
            }
            if let Some((id, _)) = telemetry {
                if !l.categories.contains(id) {
                    continue;
                }
            }
            let Some(path) = &l.path else { continue };
            let Ok(text) = std::fs::read_to_string(path) else {
                continue;
            };
            let opts = ParseOptions {
                format: l.format,
                subdomains: l.subdomains,
            };
            lists::parse_list(&text, &opts, |rule| {
                let (Pattern::Domain { name, .. }, RuleAction::Block) =
                    (&rule.pattern, rule.action)
                else {
                    return;
                };
                if let Some((_, parent)) = name.split_once('.') {
                    if parent.contains('.') {
                        map.entry(parent.to_string())
                            .or_insert_with(|| (l.name.to_string(), 0))
                            .1 += 1;
                    }
                }
            });
        }
        KnownParents { map }
    }

    /// The closest parent of `name` under which a telemetry list names hosts.
    pub fn under<'a>(&'a self, name: &'a str) -> Option<(&'a str, &'a str, usize)> {
        let mut rest = name;
        while let Some((_, parent)) = rest.split_once('.') {
            if let Some((list, n)) = self.map.get(parent) {
                return Some((parent, list, *n));
            }
            rest = parent;
        }
        None
    }
}

/// One suggested name.
#[derive(Debug, Clone, PartialEq)]
pub struct Suggestion {
    pub name: String,
    pub queries: u64,
    /// Queries per device (its log label), most first.
    pub devices: Vec<(String, u64)>,
    pub words: Vec<String>,
    /// `(parent, list, names the list has there)`.
    pub under: Option<(String, String, usize)>,
    pub score: f64,
}

impl Suggestion {
    pub fn why(&self) -> String {
        let mut parts = Vec::new();
        if !self.words.is_empty() {
            parts.push(format!("telemetry-like label: {}", self.words.join(", ")));
        }
        if let Some((parent, list, n)) = &self.under {
            parts.push(format!(
                "under {parent}, where list {list} names {n} host{}",
                if *n == 1 { "" } else { "s" }
            ));
        }
        parts.join("; ")
    }
}

/// Ranks `rows` of `(device, name, queries)`: names matching both signs first, then by how
/// many devices and queries. Names that a list categorises now, or that an allow exception
/// lets through on purpose, are dropped.
pub fn rank(
    policy: &Policy,
    known: &KnownParents,
    rows: impl IntoIterator<Item = (String, String, u64)>,
) -> Vec<Suggestion> {
    let mut by_name: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for (device, name, n) in rows {
        *by_name.entry(name).or_default().entry(device).or_default() += n;
    }
    let mut out = Vec::new();
    for (name, devices) in by_name {
        let verdict = policy.classify_str(&name);
        if verdict.matched() || verdict.exception {
            continue;
        }
        let words = telemetry_words(&name);
        let under = known
            .under(&name)
            .map(|(p, l, n)| (p.to_string(), l.to_string(), n));
        if words.is_empty() && under.is_none() {
            continue;
        }
        let queries: u64 = devices.values().sum();
        let mut devices: Vec<(String, u64)> = devices.into_iter().collect();
        devices.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let signs = (!words.is_empty()) as u32 + under.is_some() as u32;
        let score = signs as f64 * 10.0 + devices.len() as f64 + (queries as f64).ln_1p();
        out.push(Suggestion {
            name,
            queries,
            devices,
            words,
            under,
            score,
        });
    }
    out.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(b.queries.cmp(&a.queries))
            .then(a.name.cmp(&b.name))
    });
    out
}

/// Queries per (device, name) that no category matched, from `since_ms` on.
fn read_rows(
    conn: &rusqlite::Connection,
    sel: Option<&ClientSelector>,
    since_ms: i64,
) -> rusqlite::Result<Vec<(String, String, u64)>> {
    let mut sql = String::from(
        "SELECT client, name, count(*) FROM queries \
         WHERE ts_ms >= ? AND categories IS NULL AND result NOT IN ('local', 'refused')",
    );
    let mut params: Vec<rusqlite::types::Value> = vec![since_ms.into()];
    if let Some(sel) = sel {
        sql.push_str(&format!(
            " AND client IN ({})",
            crate::querylog::read::placeholders(sel.keys.len())
        ));
        params.extend(sel.keys.iter().map(|k| k.clone().into()));
    }
    sql.push_str(" GROUP BY client, name");
    let mut st = conn.prepare(&sql)?;
    let rows = st.query_map(params_from_iter(params), |r| {
        Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
    })?;
    rows.collect()
}

pub fn run(
    config_path: &Path,
    client: Option<&str>,
    since: Option<TimeSpec>,
    limit: usize,
) -> ExitCode {
    match suggest(config_path, client, since, limit) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("telesink: {e}");
            ExitCode::from(2)
        }
    }
}

fn suggest(
    config_path: &Path,
    client: Option<&str>,
    since: Option<TimeSpec>,
    limit: usize,
) -> Result<String, String> {
    let config = Config::load(config_path).map_err(|e| format!("invalid configuration: {e}"))?;
    if config.querylog.log != LogMode::All {
        return Err(format!(
            "suggest reads the names that no list categorises from the query log, which keeps \
             them only with `log = \"all\"`; set [querylog] log = \"all\" in {} (now \"{}\"), \
             let the devices run a while, and ask again",
            config.path.display(),
            config.querylog.log.as_str()
        ));
    }
    if config.querylog.url.is_some() {
        return Err(
            "suggest reads a SQLite query log only; with [querylog] url (PostgreSQL) use \
             `telesink log --client C` to see what a device asks"
                .to_string(),
        );
    }
    let policy = Policy::build(&config.policy_spec())
        .map_err(|e| format!("{}: {e}", config.path.display()))?;
    let db = &config.querylog.path;
    let conn = crate::querylog::open_existing(db).map_err(|e| e.to_string())?;
    let clients: crate::querylog::OwnedClientList = config
        .clients
        .iter()
        .map(|c| (c.name.clone(), c.addresses.clone()))
        .collect();
    let sel = client
        .map(|c| ClientSelector::resolve_in(c, &clients, Some(&conn)))
        .transpose()
        .map_err(|e: CommandError| e.to_string())?;
    let now = jiff::Timestamp::now();
    let since = since.unwrap_or_else(|| TimeSpec::parse("7d").expect("a valid age"));
    let since_ms = match &since {
        TimeSpec::Mark(m) => {
            crate::querylog::find_mark(&conn, db, *m, sel.as_ref())
                .map_err(|e| e.to_string())?
                .time_ms
        }
        t => t
            .resolve(now)
            .ok_or_else(|| format!("cannot resolve --since {t}"))?
            .as_millisecond(),
    };
    let rows =
        read_rows(&conn, sel.as_ref(), since_ms).map_err(|e| format!("{}: {e}", db.display()))?;
    let known = KnownParents::from_policy(&policy);
    let ranked = rank(&policy, &known, rows);
    Ok(render(
        &ranked,
        limit,
        sel.as_ref().map(|s| s.label.as_str()),
        &since,
    ))
}

pub fn render(
    ranked: &[Suggestion],
    limit: usize,
    client: Option<&str>,
    since: &TimeSpec,
) -> String {
    let mut out = String::new();
    let whom = client.map_or("any device".to_string(), |c| format!("device {c}"));
    if ranked.is_empty() {
        let _ = writeln!(
            out,
            "no suggestion: since {since}, {whom} asked for no name that looks like telemetry and that no list categorises"
        );
        return out;
    }
    let _ = writeln!(
        out,
        "{} name{} that no list categorises but that look like telemetry ({whom}, since {since}):\n",
        ranked.len(),
        if ranked.len() == 1 { "" } else { "s" }
    );
    let shown = &ranked[..ranked.len().min(limit)];
    let width = shown.iter().map(|s| s.name.len()).max().unwrap_or(4).max(4);
    let _ = writeln!(out, "  {:>7}  {:<width$}  why", "queries", "name");
    for s in shown {
        let _ = writeln!(out, "  {:>7}  {:<width$}  {}", s.queries, s.name, s.why());
        let per: Vec<String> = s.devices.iter().map(|(d, n)| format!("{d} {n}")).collect();
        let _ = writeln!(
            out,
            "  {:>7}  {:<width$}  devices: {}",
            "",
            "",
            per.join(", ")
        );
    }
    if ranked.len() > shown.len() {
        let _ = writeln!(out, "  … and {} more (--limit)", ranked.len() - shown.len());
    }
    let _ = writeln!(
        out,
        "\nCheck each name first (what does it carry? does anything break without it?), then \
         paste the lines you agree with into a local list that config.toml tags with \
         \"telemetry\" (an entry also covers its subdomains):\n"
    );
    for s in shown {
        let devices = s.devices.len();
        let _ = writeln!(
            out,
            "{}  # suggested: {} quer{} from {devices} device{}; {}",
            s.name,
            s.queries,
            if s.queries == 1 { "y" } else { "ies" },
            if devices == 1 { "" } else { "s" },
            s.why()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telemetry_words_are_whole_words_or_long_prefixes() {
        assert_eq!(telemetry_words("log.tbs.miui.com"), ["log"]);
        assert_eq!(
            telemetry_words("data-collector-eu2.vendor.com"),
            ["data", "collector"]
        );
        assert_eq!(telemetry_words("static.vendor.com"), Vec::<String>::new());
        assert_eq!(telemetry_words("analyticsapi.vendor.com"), ["analyticsapi"]);
        assert_eq!(telemetry_words("www.stats.com"), Vec::<String>::new());
        assert_eq!(telemetry_words("blog.vendor.com"), Vec::<String>::new());
    }
}
