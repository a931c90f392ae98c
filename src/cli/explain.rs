//! `telesink explain DOMAIN`: which lists, lines and categories match a name or one of its
//! parents, and what a client's group does with it.
//!
//! The matcher keeps hashes, not text, so this re-reads the lists: a command, not the query
//! path, so the extra second is fine.

use std::fmt::Write;
use std::net::IpAddr;
use std::path::Path;
use std::process::ExitCode;

use crate::cli::check::names_or_none;
use crate::config::{BlockMode, Config};
use crate::lists::{self, ParseOptions, Pattern, RuleAction};
use crate::policy::category::Action;
use crate::policy::{ClientId, ClientMatch, ListKind, Policy};

pub fn run(config_path: &Path, domain: &str, client: Option<&str>) -> ExitCode {
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("telesink: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let policy = match Policy::build(&config.policy_spec()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("telesink: {e}");
            return ExitCode::from(2);
        }
    };
    let name = match lists::normalize_domain(domain) {
        Ok(n) => n.into_owned(),
        Err(e) => {
            eprintln!("telesink: {domain:?} is not a domain name: {e}");
            return ExitCode::from(2);
        }
    };
    let client = match client
        .map(|c| resolve_client(&config, &policy, c))
        .transpose()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("telesink: {e}");
            return ExitCode::from(2);
        }
    };
    print!("{}", explain(&policy, &name, client));
    print!("{}", forward_route(&config, &name));
    ExitCode::SUCCESS
}

/// Where a forwarded `name` goes when a `[[forward]]` zone holds it (the most specific one).
pub fn forward_route(config: &Config, name: &str) -> String {
    let under = |d: &str| name == d || name.strip_suffix(d).is_some_and(|r| r.ends_with('.'));
    let best = config
        .forwards
        .iter()
        .flat_map(|f| f.domains.iter().map(move |d| (d, f)))
        .filter(|(d, _)| under(d))
        .max_by_key(|(d, _)| d.len());
    match best {
        Some((zone, f)) => {
            let servers: Vec<String> = f.servers.iter().map(|u| u.label()).collect();
            format!(
                "  route    [[forward]] {zone} → {} (not the upstreams; exempt from rebinding \
                 protection)\n",
                servers.join(", ")
            )
        }
        None => String::new(),
    }
}

/// A client given as a `[[client]]` name or as an address; an address is named as the DNS
/// path names it (SPEC "Devices"): a `[[client]]` by address, else by the MAC the kernel's
/// neighbour table gives for it, else a DHCP lease's host name.
fn resolve_client(
    config: &Config,
    policy: &Policy,
    s: &str,
) -> Result<(String, ClientMatch), String> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        let ip = crate::policy::canonical(ip);
        let mut m = policy.client(ip);
        let mut label = policy.client_name(m).map(|n| format!("{ip} ({n})"));
        if m.client.is_none() && !ip.is_loopback() {
            let settings = crate::devices::DeviceSettings {
                neighbours: config.client_discovery.neighbours,
                leases: config.client_discovery.leases.clone(),
            };
            let view = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()
                .and_then(|rt| rt.block_on(crate::devices::snapshot(&settings)).ok());
            if let Some(view) = view {
                let mac = view.mac_of(ip);
                if let Some(id) = mac.and_then(|mac| policy.client_by_mac(mac)) {
                    m = ClientMatch {
                        client: Some(id),
                        group: policy.group_of(Some(id), ip),
                    };
                    let name = &policy.clients[id.0 as usize].name;
                    label = Some(format!("{ip} ({name}, by MAC {})", mac.expect("matched")));
                } else if let Some(lease) = view.lease_name(ip, mac) {
                    label = Some(format!("{ip} ({lease}, by DHCP lease)"));
                }
            }
        }
        return Ok((label.unwrap_or_else(|| ip.to_string()), m));
    }
    let i = policy
        .clients
        .iter()
        .position(|c| &*c.name == s)
        .ok_or_else(|| {
            let names: Vec<&str> = config.clients.iter().map(|c| c.name.as_str()).collect();
            format!(
                "--client {s:?} is neither an address nor a [[client]] name (clients: {})",
                if names.is_empty() {
                    "none".into()
                } else {
                    names.join(", ")
                }
            )
        })?;
    let id = ClientId(i as u32);
    // A group may name the client or a network holding one of its addresses.
    let addr = policy.clients[i]
        .addresses
        .first()
        .map_or(IpAddr::from([0, 0, 0, 0]), |n| n.addr());
    Ok((
        s.to_string(),
        ClientMatch {
            client: Some(id),
            group: policy.group_of(Some(id), addr),
        },
    ))
}

pub fn explain(policy: &Policy, name: &str, client: Option<(String, ClientMatch)>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{name}");
    let verdict = policy.classify_str(name);

    // Lines that match, list by list.
    let mut any = false;
    // Block lists that match (name, is a subscription) and allow exceptions that match: an
    // exception beating a block list is said in so many words.
    let mut blockers: Vec<(String, bool)> = Vec::new();
    let mut allowers: Vec<String> = Vec::new();
    for l in &policy.lists {
        // `[allow] domains` has no file: it is reported below from the policy itself.
        let Some(path) = &l.path else { continue };
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        let opts = ParseOptions {
            format: l.format,
            subdomains: l.subdomains,
        };
        let mut hits = Vec::new();
        lists::parse_list(&text, &opts, |rule| {
            let matched = match &rule.pattern {
                Pattern::Domain {
                    name: rule_name,
                    subdomains,
                } => {
                    name == rule_name.as_ref()
                        || (*subdomains
                            && name.len() > rule_name.len()
                            && name.ends_with(rule_name.as_ref())
                            && name.as_bytes()[name.len() - rule_name.len() - 1] == b'.')
                }
                Pattern::Regex(re) => regex::Regex::new(re).is_ok_and(|r| r.is_match(name)),
            };
            if matched {
                let allow = l.kind == ListKind::Allow || rule.action == RuleAction::Allow;
                hits.push((rule.line, allow));
            }
        });
        for (line, allow) in hits {
            any = true;
            let full = text.lines().nth(line as usize - 1).unwrap_or("");
            // The rule itself, without an inline comment.
            let text_line = full
                .find(" #")
                .or_else(|| full.find("\t#"))
                .map_or(full, |i| &full[..i])
                .trim();
            let path = path
                .strip_prefix(std::env::current_dir().unwrap_or_default())
                .unwrap_or(path);
            let subscription = l.source.contains("://");
            if allow {
                allowers.push(format!("{} ({}:{line})", l.name, path.display()));
            } else if !blockers.iter().any(|(n, _)| n == &*l.name) {
                blockers.push((l.name.to_string(), subscription));
            }
            let what = if allow {
                "allow exception".to_string()
            } else {
                format!("categories: {}", names_or_none(policy, l.categories))
            };
            let _ = writeln!(
                out,
                "  matched  list {:<16} {}:{}  {}  → {}",
                l.name,
                path.display(),
                line,
                text_line,
                what
            );
        }
    }
    if verdict.exception && policy.allow_domains_match(name) {
        any = true;
        let _ = writeln!(
            out,
            "  matched  [allow] domains in the config → allow exception"
        );
    }
    if verdict.exception && policy.allow_domains_match(name) {
        allowers.push("[allow] domains".to_string());
    }
    if !any {
        let _ = writeln!(out, "  no list names it or a parent");
    }
    if verdict.exception && !blockers.is_empty() && !allowers.is_empty() {
        let lists: Vec<String> = blockers
            .iter()
            .map(|(n, sub)| {
                if *sub {
                    format!("{n} (subscription)")
                } else {
                    n.clone()
                }
            })
            .collect();
        let _ = writeln!(
            out,
            "  override the allow exception of {} beats block list{} {}: never blocked, for any device",
            allowers.join(", "),
            if lists.len() == 1 { "" } else { "s" },
            lists.join(", ")
        );
    }
    if !verdict.categories.is_empty() {
        let _ = writeln!(
            out,
            "  categories: {}",
            names_or_none(policy, verdict.categories)
        );
    }

    let describe = |m: ClientMatch| -> String {
        let (block, observe) = policy.group_sets(m);
        let group = policy
            .group_name(m)
            .map(|g| format!("group {g}"))
            .unwrap_or_else(|| "[default]".into());
        let action = match policy.action(m, &verdict) {
            None => "forwarded (no category matched)".to_string(),
            Some(Action::Blocked) => format!(
                "blocked: answered {} with TTL {}",
                describe_block_mode(policy.blocking.mode),
                policy.blocking.ttl
            ),
            Some(Action::Observed) => "observed: forwarded, and recorded as a telemetry attempt".into(),
            Some(Action::Allowed) if verdict.exception => {
                "allowed: an allow exception matches; forwarded".into()
            }
            Some(Action::Allowed) => "allowed: the group neither blocks nor observes these categories; forwarded and noted".into(),
        };
        format!(
            "{group} (blocks {}; observes {})\n  action   {action}{}",
            names_or_none(policy, block),
            names_or_none(policy, observe),
            schedule_lines(policy, m)
        )
    };

    match client {
        Some((who, m)) => {
            let _ = writeln!(out, "  client   {who}: {}", describe(m));
        }
        None => {
            for (i, g) in policy.groups.iter().enumerate() {
                let m = ClientMatch {
                    client: None,
                    group: Some(crate::policy::GroupId(i as u32)),
                };
                let _ = writeln!(out, "  clients in group {}: {}", g.name, describe(m));
            }
            let m = ClientMatch {
                client: None,
                group: None,
            };
            let _ = writeln!(out, "  other clients: {}", describe(m));
        }
    }
    out
}

/// A group's `[[group.schedule]]`s, one line each, and whether each is open now (the group's
/// "blocks" and "observes" above include the open ones).
fn schedule_lines(policy: &Policy, m: ClientMatch) -> String {
    let Some(g) = m.group else {
        return String::new();
    };
    let schedules = &policy.groups[g.0 as usize].schedules;
    let mut out = String::new();
    for (i, s) in schedules.list.iter().enumerate() {
        let _ = write!(
            out,
            "\n  schedule {} {}–{} local time: blocks {}; observes {}; {}",
            s.window.days,
            s.window.from,
            s.window.to,
            names_or_none(policy, s.block),
            names_or_none(policy, s.observe),
            if schedules.is_open(i) {
                "open now"
            } else {
                "closed now"
            }
        );
    }
    out
}

/// The answer a blocked client gets in `mode`, in words.
fn describe_block_mode(mode: BlockMode) -> &'static str {
    match mode {
        BlockMode::Null => "0.0.0.0 / :: (null)",
        BlockMode::Nxdomain => "NXDOMAIN",
        BlockMode::Refused => "REFUSED",
    }
}
