//! `telesink check`: load the config and every list without serving, and report.

use std::path::Path;
use std::process::ExitCode;

use crate::config::Config;
use crate::policy::{ListKind, Policy};

/// How many skipped lines to show per list.
const SHOW_SKIPPED: usize = 5;

pub fn run(config_path: &Path) -> ExitCode {
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("telesink: invalid configuration: {e}");
            return ExitCode::from(1);
        }
    };
    let policy = match Policy::build(&config.policy_spec()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("telesink: {}: {e}", config.path.display());
            return ExitCode::from(1);
        }
    };
    let leases = match crate::devices::load_leases(&config.client_discovery.leases) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("telesink: {}: [clients] leases: {e}", config.path.display());
            return ExitCode::from(1);
        }
    };
    let encrypted = match encrypted_report(&config) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("telesink: {}: {e}", config.path.display());
            return ExitCode::from(1);
        }
    };
    print!("{}", report(&config, &policy));
    print!("{}", leases_report(&leases));
    print!("{encrypted}");
    ExitCode::SUCCESS
}

pub fn report(config: &Config, policy: &Policy) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "config {}: valid", config.path.display());
    for w in &config.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "lists:");
    for l in &policy.lists {
        let cats: Vec<&str> = policy
            .categories
            .names(l.categories)
            .map(|c| &**c)
            .collect();
        let kind = match l.kind {
            ListKind::Block => format!("categories: {}", cats.join(", ")),
            ListKind::Allow => "allow exceptions".to_string(),
        };
        let _ = writeln!(
            out,
            "  {name:<20} {rules:>9} entries  {kind}  ({source}, format {format})",
            name = l.name,
            rules = l.stats.rules,
            source = l.source,
            format = l.format,
        );
        if l.stats.allow_rules > 0 && l.kind == ListKind::Block {
            let _ = writeln!(
                out,
                "  {:<20} {:>9} of them exceptions (@@)",
                "", l.stats.allow_rules
            );
        }
        if l.stats.ignored > 0 {
            let _ = writeln!(
                out,
                "  {:<20} {:>9} lines ignored (localhost entries, zone preamble)",
                "", l.stats.ignored
            );
        }
        if l.stats.skipped > 0 {
            let _ = writeln!(out, "  {:<20} {:>9} lines skipped:", "", l.stats.skipped);
            let file = l
                .path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| l.source.clone());
            for s in l.stats.first_skipped.iter().take(SHOW_SKIPPED) {
                let _ = writeln!(
                    out,
                    "      {file}:{}: {} ({})",
                    s.line,
                    s.text.trim(),
                    s.reason
                );
            }
            if l.stats.skipped > SHOW_SKIPPED {
                let _ = writeln!(out, "      … and {} more", l.stats.skipped - SHOW_SKIPPED);
            }
        }
    }
    out.push_str(&subscriptions_report(config));
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{} distinct names in the matcher ({} KiB), built in {} ms",
        policy.names(),
        policy.matcher_heap_bytes() / 1024,
        policy.built_in.as_millis()
    );
    let all: Vec<&str> = policy.categories.all().map(|(_, n)| &**n).collect();
    let _ = writeln!(out, "categories: {}", all.join(", "));
    let _ = writeln!(out);
    let _ = writeln!(out, "groups (first match in file order wins):");
    for g in &policy.groups {
        let _ = writeln!(
            out,
            "  {:<20} blocks: {}; observes: {}",
            g.name,
            names_or_none(policy, g.block),
            names_or_none(policy, g.observe)
        );
        for sch in &g.schedules.list {
            let _ = writeln!(
                out,
                "  {:<20}   + {} {}–{}: blocks: {}; observes: {}",
                "",
                sch.window.days,
                sch.window.from,
                sch.window.to,
                names_or_none(policy, sch.block),
                names_or_none(policy, sch.observe)
            );
        }
    }
    let _ = writeln!(
        out,
        "  {:<20} blocks: {}; observes: {}",
        "[default]",
        names_or_none(policy, policy.default_block),
        names_or_none(policy, policy.default_observe)
    );
    out.push_str(&resolver_report(config));
    out
}

/// The upstreams, their strategy, rebinding protection and the `[[forward]]` zones.
fn resolver_report(config: &Config) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let labels = |servers: &[crate::config::Upstream]| {
        servers
            .iter()
            .map(|u| u.label())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let u = &config.upstream;
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "upstreams ({}; rebinding protection {}): {}",
        u.strategy.as_str(),
        if u.rebind_protection { "on" } else { "off" },
        labels(&u.servers)
    );
    for f in &config.forwards {
        let _ = writeln!(
            out,
            "  forward {} -> {}",
            f.domains.join(", "),
            labels(&f.servers)
        );
    }
    out
}

pub fn names_or_none(policy: &Policy, set: crate::policy::category::CategorySet) -> String {
    if set.is_empty() {
        "nothing".into()
    } else {
        policy
            .categories
            .names(set)
            .map(|c| &**c)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The `[clients] leases` files: format, named leases, skipped lines.
fn leases_report(leases: &crate::devices::LeaseSet) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    if leases.files.is_empty() {
        return out;
    }
    let _ = writeln!(out, "\nlease files:");
    for f in &leases.files {
        let format = f.format.map_or("empty (no lease yet)", |f| f.as_str());
        let _ = writeln!(
            out,
            "  {}: {format}, {} named leases, {} expired or unnamed, {} lines skipped",
            f.path.display(),
            f.leases.len(),
            f.unnamed_or_expired,
            f.skipped.len()
        );
        for s in f.skipped.iter().take(5) {
            let _ = writeln!(out, "    {}:{}: {}", f.path.display(), s.line, s.reason);
        }
    }
    out
}

/// URL lists (subscriptions) that are empty (no copy downloaded yet) or stale (older than
/// three refresh periods), and why.
fn subscriptions_report(config: &Config) -> String {
    use std::fmt::Write;
    let now = std::time::SystemTime::now();
    let subs = crate::cli::lists::subscriptions(config);
    let problems: Vec<(String, String)> = subs
        .iter()
        .filter_map(|s| s.problem(now).map(|p| (s.list.clone(), p)))
        .collect();
    let mut out = String::new();
    if subs.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "\nURL lists: {} of {} have a current copy (cache: {})",
        subs.len() - problems.len(),
        subs.len(),
        config
            .state_dir()
            .join(crate::lists::sources::CACHE_DIR)
            .display()
    );
    for (list, p) in &problems {
        let _ = writeln!(out, "  {list:<20} {p}");
    }
    out
}

/// DoT/DoH: the certificate pair read and checked as `run` would ([`crate::tls::load`]).
fn encrypted_report(config: &Config) -> Result<String, crate::tls::CertError> {
    let enc = &config.server.encrypted;
    let (Some(cert), Some(key), Some(name)) = (&enc.tls_cert, &enc.tls_key, &enc.tls_name) else {
        return Ok(String::new());
    };
    if !enc.enabled() {
        return Ok(String::new());
    }
    crate::tls::load(cert, key)?;
    let list = |a: &[std::net::SocketAddr]| {
        a.iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = format!(
        "encrypted DNS: certificate {} and key {} OK; devices use <id>.{name}\n",
        cert.display(),
        key.display()
    );
    if !enc.tls_listen.is_empty() {
        out += &format!("  DoT on {}\n", list(&enc.tls_listen));
    }
    if !enc.https_listen.is_empty() {
        out += &format!(
            "  DoH on {} (https://{name}/dns-query/<id>)\n",
            list(&enc.https_listen)
        );
    }
    Ok(out)
}
