//! `telesink lists`: every list with its source, entries and, for URL lists (subscriptions),
//! the state of the cached copy: last download, age, ETag, last error. `telesink lists update`
//! downloads every URL list now (conditionally, as SIGHUP makes the server do), with progress
//! and a summary; a running server sees the new copies (it watches them) and reloads.
//! `telesink lists coverage FILE…` says how much of a published list the config blocks.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::config::Config;
use crate::lists::sources::{self, CacheState, Fetched, UrlList, STALE_AFTER_REFRESHES};
use crate::lists::{self, ParseOptions, Pattern, RuleAction};
use crate::policy::category::Action;
use crate::policy::{ClientMatch, ListKind, Policy};

/// What `check` and `lists` say of a URL list's cached copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Freshness {
    /// Younger than [`STALE_AFTER_REFRESHES`] refresh periods.
    Fresh,
    /// Older: the refresher has not confirmed it for that long (the list still blocks).
    Stale,
    /// No cached copy: the list blocks nothing until a download succeeds.
    Empty,
}

/// One URL list of the config and its cached copy.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// The `[[list]]` name (`allow-N` for an `[allow] lists` URL).
    pub list: String,
    pub url: String,
    pub refresh: Duration,
    pub cache: CacheState,
}

impl Subscription {
    pub fn freshness(&self, now: SystemTime) -> Freshness {
        if !self.cache.present() {
            Freshness::Empty
        } else if self.cache.is_stale(self.refresh, now) {
            Freshness::Stale
        } else {
            Freshness::Fresh
        }
    }

    /// Why the list is empty or stale, in a sentence; `None` when it is fresh.
    pub fn problem(&self, now: SystemTime) -> Option<String> {
        let error = self
            .cache
            .last_error()
            .map(|(at, e)| format!("last attempt {} ago failed: {e}", ago(at, now)));
        match self.freshness(now) {
            Freshness::Fresh => None,
            Freshness::Empty => Some(match error {
                Some(e) => format!("empty: never downloaded; {e}"),
                None => "empty: never downloaded (needs the network once: `telesink run` \
                         downloads it, or `telesink lists update`)"
                    .to_string(),
            }),
            Freshness::Stale => {
                let age = self.cache.age(now).unwrap_or_default();
                let mut s = format!(
                    "stale: the cached copy is {} old, more than {STALE_AFTER_REFRESHES} × refresh ({}); it still blocks",
                    crate::duration::display(Duration::from_secs(age.as_secs())),
                    crate::duration::display(self.refresh)
                );
                if let Some(e) = error {
                    s.push_str("; ");
                    s.push_str(&e);
                }
                Some(s)
            }
        }
    }
}

/// Every URL list of `config`, with its cached copy's state.
pub fn subscriptions(config: &Config) -> Vec<Subscription> {
    let dir = config.state_dir();
    url_lists_of(config)
        .into_iter()
        .map(|u| Subscription {
            cache: CacheState::read(&dir, &u.url),
            list: u.list,
            url: u.url,
            refresh: u.refresh,
        })
        .collect()
}

fn url_lists_of(config: &Config) -> Vec<UrlList> {
    sources::url_lists(&config.list_specs(), &config.allow.lists)
}

fn ago(unix: u64, now: SystemTime) -> String {
    let then = UNIX_EPOCH + Duration::from_secs(unix);
    let secs = now.duration_since(then).unwrap_or_default().as_secs();
    crate::duration::display(Duration::from_secs(secs.max(1)))
}

fn utc(unix: u64) -> String {
    jiff::Timestamp::from_second(unix as i64)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| unix.to_string())
}

fn load(config_path: &Path) -> Result<(Config, Policy), ExitCode> {
    let config = Config::load(config_path).map_err(|e| {
        eprintln!("telesink: invalid configuration: {e}");
        ExitCode::from(2)
    })?;
    let policy = Policy::build(&config.policy_spec()).map_err(|e| {
        eprintln!("telesink: {}: {e}", config.path.display());
        ExitCode::from(2)
    })?;
    Ok((config, policy))
}

// ---------------------------------------------------------------------------------------------
// telesink lists
// ---------------------------------------------------------------------------------------------

pub fn run(config_path: &Path, json: bool) -> ExitCode {
    let (config, policy) = match load(config_path) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let subs = subscriptions(&config);
    let now = SystemTime::now();
    if json {
        println!("{}", render_json(&policy, &subs, now));
    } else {
        print!("{}", render_text(&policy, &subs, now));
    }
    ExitCode::SUCCESS
}

fn categories_of(policy: &Policy, l: &crate::policy::ListInfo) -> Vec<String> {
    match l.kind {
        ListKind::Block => policy
            .categories
            .names(l.categories)
            .map(|c| c.to_string())
            .collect(),
        ListKind::Allow => Vec::new(),
    }
}

pub fn render_text(policy: &Policy, subs: &[Subscription], now: SystemTime) -> String {
    let mut out = String::new();
    for l in &policy.lists {
        let kind = match l.kind {
            ListKind::Block => format!("blocks {}", categories_of(policy, l).join(", ")),
            ListKind::Allow => "allow exceptions".to_string(),
        };
        let _ = writeln!(out, "{}  ({kind})", l.name);
        let _ = writeln!(out, "  source      {}", l.source);
        let _ = writeln!(out, "  entries     {}", l.stats.rules);
        let Some(sub) = subs.iter().find(|s| s.url == l.source) else {
            out.push('\n');
            continue;
        };
        let c = &sub.cache;
        let _ = writeln!(out, "  cache       {}", c.path.display());
        let _ = writeln!(
            out,
            "  refresh     every {}",
            crate::duration::display(sub.refresh)
        );
        let m = c.meta.as_ref();
        let downloaded = m.and_then(|m| m.downloaded);
        let _ = writeln!(
            out,
            "  downloaded  {}",
            match (downloaded, c.present()) {
                (Some(t), true) => format!("{} ({} ago)", utc(t), ago(t, now)),
                (None, true) => "unknown (a copy placed by hand)".to_string(),
                (_, false) => "never".to_string(),
            }
        );
        if let Some(t) = m.and_then(|m| m.checked).filter(|_| c.present()) {
            let _ = writeln!(out, "  checked     {} ({} ago)", utc(t), ago(t, now));
        }
        let age = match c.age(now) {
            Some(a) => crate::duration::display(Duration::from_secs(a.as_secs())),
            None => "no copy".to_string(),
        };
        let flag = match sub.freshness(now) {
            Freshness::Fresh => String::new(),
            Freshness::Stale => format!("  STALE (> {STALE_AFTER_REFRESHES} × refresh)"),
            Freshness::Empty => "  EMPTY".to_string(),
        };
        let _ = writeln!(out, "  age         {age}{flag}");
        if let Some(e) = m.and_then(|m| m.etag.as_deref()) {
            let _ = writeln!(out, "  etag        {e}");
        }
        if let Some(lm) = m.and_then(|m| m.last_modified.as_deref()) {
            let _ = writeln!(out, "  modified    {lm}");
        }
        match c.last_error() {
            Some((at, e)) => {
                let _ = writeln!(out, "  last error  {} ({} ago): {e}", utc(at), ago(at, now));
            }
            None => {
                let _ = writeln!(out, "  last error  none");
            }
        }
        out.push('\n');
    }
    out
}

pub fn render_json(policy: &Policy, subs: &[Subscription], now: SystemTime) -> String {
    let rows: Vec<serde_json::Value> = policy
        .lists
        .iter()
        .map(|l| {
            let mut v = json!({
                "name": &*l.name,
                "kind": match l.kind { ListKind::Block => "block", ListKind::Allow => "allow" },
                "categories": categories_of(policy, l),
                "source": l.source,
                "entries": l.stats.rules,
            });
            if let Some(sub) = subs.iter().find(|s| s.url == l.source) {
                let c = &sub.cache;
                let m = c.meta.as_ref();
                let error = c.last_error();
                v["subscription"] = json!({
                    "cache": c.path,
                    "refresh_seconds": sub.refresh.as_secs(),
                    "present": c.present(),
                    "bytes": c.bytes,
                    "downloaded": m.and_then(|m| m.downloaded).map(utc),
                    "checked": m.and_then(|m| m.checked).map(utc),
                    "age_seconds": c.age(now).map(|a| a.as_secs()),
                    "etag": m.and_then(|m| m.etag.clone()),
                    "last_modified": m.and_then(|m| m.last_modified.clone()),
                    "last_error": error.map(|(_, e)| e),
                    "last_error_at": error.map(|(t, _)| utc(t)),
                    "state": match sub.freshness(now) {
                        Freshness::Fresh => "fresh",
                        Freshness::Stale => "stale",
                        Freshness::Empty => "empty",
                    },
                });
            }
            v
        })
        .collect();
    serde_json::to_string_pretty(&rows).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// telesink lists update
// ---------------------------------------------------------------------------------------------

/// Downloads every URL list now. Exit 0 when every download succeeded (new, unchanged or
/// 304), 1 when one failed (its cached copy, if any, is kept), 2 on a config error.
pub fn update(config_path: &Path) -> ExitCode {
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("telesink: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let urls = url_lists_of(&config);
    if urls.is_empty() {
        println!("no URL lists in {}", config.path.display());
        return ExitCode::SUCCESS;
    }
    let dir = config.state_dir();
    let agent = sources::agent();
    let (mut new, mut same, mut failed) = (0, 0, Vec::new());
    let n = urls.len();
    for (i, u) in urls.iter().enumerate() {
        print!("[{}/{n}] {} ({}) … ", i + 1, u.list, u.url);
        let _ = std::io::stdout().flush();
        match sources::fetch_recorded(&agent, u, &dir) {
            Ok(Fetched::New { bytes, rules }) => {
                new += 1;
                println!("new copy: {rules} entries, {bytes} bytes");
            }
            Ok(Fetched::NotModified) => {
                same += 1;
                println!("not modified (304)");
            }
            Ok(Fetched::Same) => {
                same += 1;
                println!("unchanged");
            }
            Err(e) => {
                let kept = if sources::cache_path(&dir, &u.url).is_file() {
                    "kept the cached copy"
                } else {
                    "no cached copy: the list stays empty"
                };
                println!("FAILED: {e:#} ({kept})");
                failed.push(u.list.clone());
            }
        }
    }
    println!(
        "\n{n} lists: {new} new, {same} unchanged, {} failed{}",
        failed.len(),
        if failed.is_empty() {
            String::new()
        } else {
            format!(" ({})", failed.join(", "))
        }
    );
    if new > 0 {
        println!(
            "a running telesink loads the new copies by itself (it watches {})",
            dir.join(sources::CACHE_DIR).display()
        );
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

// ---------------------------------------------------------------------------------------------
// telesink lists coverage
// ---------------------------------------------------------------------------------------------

/// How a published list's names fare under the config's policy, for devices in no group.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Coverage {
    pub names: usize,
    pub blocked: usize,
    /// Names a list blocks but an allow exception lets through.
    pub excepted: Vec<String>,
    /// Names no block list of the config covers.
    pub missed: Vec<String>,
}

impl Coverage {
    pub fn percent(&self) -> f64 {
        if self.names == 0 {
            100.0
        } else {
            self.blocked as f64 * 100.0 / self.names as f64
        }
    }
}

/// Every domain name of the list at `path` (any format), checked against `policy`.
pub fn coverage(policy: &Policy, path: &Path) -> std::io::Result<Coverage> {
    let text = std::fs::read_to_string(path)?;
    let mut names = Vec::new();
    lists::parse_list(&text, &ParseOptions::default(), |rule| {
        if let (Pattern::Domain { name, .. }, RuleAction::Block) = (&rule.pattern, rule.action) {
            names.push(name.to_string());
        }
    });
    names.sort();
    names.dedup();
    let default = ClientMatch {
        client: None,
        group: None,
    };
    let mut cov = Coverage {
        names: names.len(),
        ..Coverage::default()
    };
    for n in names {
        let verdict = policy.classify_str(&n);
        match policy.action(default, &verdict) {
            Some(Action::Blocked) => cov.blocked += 1,
            _ if verdict.exception => cov.excepted.push(n),
            _ => cov.missed.push(n),
        }
    }
    Ok(cov)
}

pub fn run_coverage(config_path: &Path, files: &[PathBuf], show_missed: bool) -> ExitCode {
    let (config, policy) = match load(config_path) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let now = SystemTime::now();
    for sub in subscriptions(&config) {
        if let Some(p) = sub.problem(now) {
            eprintln!("warning: list {}: {p}", sub.list);
        }
    }
    let mut code = ExitCode::SUCCESS;
    for f in files {
        match coverage(&policy, f) {
            Ok(c) => {
                println!(
                    "{}: {} names, {} blocked ({:.1} %), {} let through by an allow exception, {} in no list",
                    f.display(),
                    c.names,
                    c.blocked,
                    c.percent(),
                    c.excepted.len(),
                    c.missed.len()
                );
                for n in &c.excepted {
                    println!("  allowed  {n}");
                }
                if show_missed {
                    for n in &c.missed {
                        println!("  missed   {n}");
                    }
                }
            }
            Err(e) => {
                eprintln!("telesink: {}: {e}", f.display());
                code = ExitCode::from(2);
            }
        }
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(dir: &Path, meta: Option<&str>, copy: bool) -> Subscription {
        let url = "https://lists.example/a.txt";
        let cache = sources::cache_path(dir, url);
        std::fs::create_dir_all(cache.parent().unwrap()).unwrap();
        if copy {
            std::fs::write(&cache, "a.example\n").unwrap();
        }
        if let Some(m) = meta {
            std::fs::write(sources::meta_path(&cache), format!("url {url}\n{m}")).unwrap();
        }
        Subscription {
            list: "a".into(),
            url: url.into(),
            refresh: Duration::from_secs(3600),
            cache: CacheState::read(dir, url),
        }
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn freshness_follows_the_last_successful_check() {
        let d = tempfile::tempdir().unwrap();
        let s = sub(d.path(), Some("checked 1000000\n"), true);
        assert_eq!(s.freshness(at(1_000_000 + 3 * 3600)), Freshness::Fresh);
        assert_eq!(s.problem(at(1_000_000 + 3 * 3600)), None);
        assert_eq!(s.freshness(at(1_000_000 + 3 * 3600 + 1)), Freshness::Stale);
        let p = s.problem(at(1_000_000 + 4 * 3600)).unwrap();
        assert!(p.starts_with("stale: the cached copy is 4h old"), "{p}");
    }

    #[test]
    fn an_empty_subscription_says_why() {
        let d = tempfile::tempdir().unwrap();
        let s = sub(d.path(), None, false);
        assert_eq!(s.freshness(at(0)), Freshness::Empty);
        assert!(s.problem(at(0)).unwrap().contains("never downloaded"));
        let d = tempfile::tempdir().unwrap();
        let s = sub(
            d.path(),
            Some("failed 1000000\nerror HTTP status 503\n"),
            false,
        );
        let p = s.problem(at(1_000_060)).unwrap();
        assert!(
            p.contains("last attempt 1m ago failed: HTTP status 503"),
            "{p}"
        );
    }

    #[test]
    fn an_error_older_than_the_last_success_is_not_reported() {
        let d = tempfile::tempdir().unwrap();
        let s = sub(
            d.path(),
            Some("checked 2000\nfailed 1000\nerror old\n"),
            true,
        );
        assert_eq!(s.cache.last_error(), None);
        let s = sub(
            d.path(),
            Some("checked 1000\nfailed 2000\nerror new\n"),
            true,
        );
        assert_eq!(s.cache.last_error(), Some((2000, "new")));
    }

    #[test]
    fn coverage_counts_blocked_excepted_and_missed_names() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("config.toml"),
            "[[list]]\nname = \"v\"\nsource = \"v.txt\"\ncategories = [\"telemetry\"]\n\
             [allow]\ndomains = [\"find.v.example\"]\n[default]\nblock = [\"telemetry\"]\n",
        )
        .unwrap();
        std::fs::write(d.path().join("v.txt"), "*.v.example\n").unwrap();
        let published = d.path().join("published.txt");
        std::fs::write(
            &published,
            "# a hosts file\n0.0.0.0 a.v.example\n0.0.0.0 find.v.example\n0.0.0.0 other.example\n0.0.0.0 a.v.example\n",
        )
        .unwrap();
        let config = Config::load(&d.path().join("config.toml")).unwrap();
        let policy = Policy::build(&config.policy_spec()).unwrap();
        let c = coverage(&policy, &published).unwrap();
        assert_eq!(c.names, 3);
        assert_eq!(c.blocked, 1);
        assert_eq!(c.excepted, ["find.v.example"]);
        assert_eq!(c.missed, ["other.example"]);
        assert!((c.percent() - 100.0 / 3.0).abs() < 1e-9);
    }
}
