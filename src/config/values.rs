//! Value grammars: upstreams, addresses, networks, names, categories, record data. Pure
//! functions from text to a typed value or a message saying what is valid; other modules use
//! [`parse_upstream`] and [`normalize_name`] too.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use super::{RecordKind, RecordValue, Upstream};
use crate::lists::{self, SkipReason};

/// A domain name as telesink stores and compares it, by the lists' rules
/// ([`lists::normalize_domain`]): lower case, no trailing dot, Unicode labels in punycode
/// (`Bücher.Example.` → `xn--bcher-kva.example`); letters, digits, `-` and `_`; labels of 1–63
/// bytes; 253 bytes at most; not an address. The error says which rule `name` breaks.
pub fn normalize_name(name: &str) -> Result<String, String> {
    match lists::normalize_domain(name) {
        Ok(n) => Ok(n.into_owned()),
        Err(reason) => Err(explain_name(name, reason)),
    }
}

/// Why the lists' normaliser refused `name`, in words a config author can act on.
fn explain_name(name: &str, reason: SkipReason) -> String {
    let trimmed = name.trim();
    let bare = trimmed.strip_suffix('.').unwrap_or(trimmed);
    if bare.is_empty() {
        return "is empty; expected a domain name like example.com".to_string();
    }
    if reason == SkipReason::IpAddress || bare.parse::<IpAddr>().is_ok() {
        return format!("{name:?} is an address; expected a domain name like example.com");
    }
    if !bare.is_ascii() {
        return format!("{name:?} is not a valid international domain name");
    }
    if let Some(c) = bare
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return format!(
            "{name:?} contains {c:?}; a domain name has letters, digits, '-', '_' and dots"
        );
    }
    if bare.len() > 253 {
        return format!(
            "{name:?} is {} bytes long; a domain name has at most 253",
            bare.len()
        );
    }
    if bare.split('.').any(str::is_empty) {
        return format!("{name:?} has an empty label (two dots in a row?)");
    }
    if let Some(l) = bare.split('.').find(|l| l.len() > 63) {
        return format!(
            "{name:?} has a label of {} bytes; a label has at most 63",
            l.len()
        );
    }
    format!("{name:?} is not a valid domain name ({reason})")
}

/// `"9.9.9.9"`, `"9.9.9.9:53"`, `"[::1]:53"`, `"[::1]"` or `"::1"`; port 0 is refused.
pub(super) fn parse_host_port(s: &str, default_port: u16) -> Option<SocketAddr> {
    let addr = if let Ok(addr) = s.parse::<SocketAddr>() {
        addr
    } else if let Ok(ip) = s.parse::<IpAddr>() {
        SocketAddr::new(ip, default_port)
    } else if let Some(v6) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        SocketAddr::new(IpAddr::V6(v6.parse().ok()?), default_port)
    } else {
        return None;
    };
    (addr.port() != 0).then_some(addr)
}

/// Written as a valid address but with port 0, for a precise message.
fn is_port_zero(s: &str) -> bool {
    s.parse::<SocketAddr>().is_ok_and(|a| a.port() == 0)
}

/// A CIDR, or a bare address as a host network. Host bits are cleared.
pub(super) fn parse_net(s: &str) -> Option<IpNet> {
    if let Ok(net) = s.parse::<IpNet>() {
        return Some(net.trunc());
    }
    s.parse::<IpAddr>().ok().map(IpNet::from)
}

/// Looks like a host name rather than an address: used to say "must be an IP address".
fn looks_like_hostname(s: &str) -> bool {
    let host = s.split(['/', '#']).next().unwrap_or(s);
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    host.contains('.')
        && host.chars().any(|c| c.is_ascii_alphabetic())
        && normalize_name(host).is_ok()
}

pub(super) const UPSTREAM_FORMS: &str = "expected \"IP[:port]\" (plain DNS, port 53), \
\"tls://IP[:port]#tls-name\" (DNS over TLS, port 853) or \
\"https://IP[:port][/path]#tls-name\" (DNS over HTTPS, port 443, path /dns-query), \
like \"9.9.9.9\", \"tls://9.9.9.9#dns.quad9.net\" or \"https://9.9.9.9/dns-query#dns.quad9.net\"";

/// Parses one `upstream.servers` entry; the error says what is valid.
pub fn parse_upstream(s: &str) -> Result<Upstream, String> {
    let s = s.trim();
    let lower = s.to_ascii_lowercase();
    let (scheme, rest) = match lower.find("://") {
        Some(i) => (&lower[..i], &s[i + 3..]),
        None => ("", s),
    };
    let default_port = match scheme {
        "" => 53,
        "tls" => 853,
        "https" => 443,
        "http" => {
            return Err(format!(
                "{s:?}: DNS over plain HTTP is not supported; use \"https://IP/dns-query#tls-name\""
            ))
        }
        _ => {
            return Err(format!(
                "{s:?}: unknown scheme \"{scheme}://\"; {UPSTREAM_FORMS}"
            ))
        }
    };
    if scheme.is_empty() {
        if let Some(addr) = parse_host_port(s, default_port) {
            return Ok(Upstream::Plain(addr));
        }
        if is_port_zero(s) {
            return Err(format!("{s:?}: port 0 is not a port to connect to"));
        }
        if looks_like_hostname(s) {
            return Err(format!(
                "{s:?}: an upstream must be an IP address (telesink does not resolve the names \
                 of its own upstreams); {UPSTREAM_FORMS}"
            ));
        }
        return Err(format!("{s:?} is not an upstream; {UPSTREAM_FORMS}"));
    }
    let example_path = if scheme == "https" { "/dns-query" } else { "" };
    let (before, name) = rest.split_once('#').unwrap_or((rest, ""));
    let (host, path) = match before.find('/') {
        Some(i) => (&before[..i], &before[i..]),
        None => (before, ""),
    };
    let Some(addr) = parse_host_port(host, default_port) else {
        if is_port_zero(host) {
            return Err(format!("{s:?}: port 0 is not a port to connect to"));
        }
        let bare_host = host.rsplit_once(':').map_or(host, |(h, _)| h);
        let fix = if name.parse::<IpAddr>().is_ok() && looks_like_hostname(host) {
            // "https://dns.quad9.net/dns-query#9.9.9.9": the right parts, swapped.
            format!("write \"{scheme}://{name}{path}#{bare_host}\"")
        } else if looks_like_hostname(host) {
            format!("like \"{scheme}://IP{example_path}#{bare_host}\" with {bare_host}'s IP")
        } else {
            format!("like \"{scheme}://9.9.9.9{example_path}#dns.quad9.net\"")
        };
        return Err(format!(
            "{s:?}: the host must be an IP address (telesink does not resolve the names of its \
             own upstreams), with the TLS name after '#': {fix}"
        ));
    };
    if name.is_empty() {
        return Err(format!(
            "{s:?} has no TLS name: add the name the server's certificate is issued for after \
             '#', like \"{scheme}://9.9.9.9{example_path}#dns.quad9.net\""
        ));
    }
    let server_name = if name.parse::<IpAddr>().is_ok() {
        name.to_string()
    } else {
        normalize_name(name).map_err(|_| format!("{s:?}: {name:?} is not a valid TLS name"))?
    };
    if scheme == "tls" {
        if !path.is_empty() {
            return Err(format!(
                "{s:?}: DNS over TLS takes no path; {UPSTREAM_FORMS}"
            ));
        }
        return Ok(Upstream::Tls { addr, server_name });
    }
    // Providers publish RFC 8484 URI templates ("/dns-query{?dns}"); the template part is ours.
    let path = path.strip_suffix("{?dns}").unwrap_or(path);
    let path = if path.is_empty() { "/dns-query" } else { path };
    if let Some(c) = path
        .chars()
        .find(|c| matches!(c, '?' | '{' | '}') || c.is_whitespace())
    {
        return Err(format!(
            "{s:?}: the DoH path contains {c:?}; expected a plain path like /dns-query"
        ));
    }
    Ok(Upstream::Https {
        addr,
        server_name,
        path: path.to_string(),
    })
}

/// A name used in metrics labels, the query log and on the command line.
pub(super) fn check_ident(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!(
            "empty; a {what} name is letters, digits, '-', '_' and '.'"
        ));
    }
    if name.len() > 64 {
        return Err(format!("{name:?} is longer than 64 characters"));
    }
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "{name:?} contains {c:?}; a {what} name is letters, digits, '-', '_' and '.'"
        ));
    }
    if !first_ok {
        return Err(format!(
            "{name:?}: a {what} name starts with a letter or digit"
        ));
    }
    Ok(())
}

pub(super) fn check_category(name: &str) -> Result<(), String> {
    let valid = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
    if !name.is_empty() && name.chars().all(valid) && name.len() <= 64 {
        return Ok(());
    }
    if !name.is_empty() && name.to_ascii_lowercase().chars().all(valid) {
        return Err(format!(
            "{name:?}: category names are lower case; write {:?}",
            name.to_ascii_lowercase()
        ));
    }
    Err(format!(
        "{name:?} is not a category name; expected lower-case letters, digits, '-' and '_', \
         like \"telemetry\""
    ))
}

/// Parsing record data is the config's job (names normalised its way); the type is
/// [`crate::policy::local`]'s.
impl RecordValue {
    /// Checks `raw` as data of a `kind` record; the error says what the type expects.
    pub fn parse(kind: RecordKind, raw: &str) -> Result<RecordValue, String> {
        let s = raw.trim();
        let target = |t: &str| -> Result<String, String> {
            if t == "." {
                Ok(".".to_string())
            } else {
                normalize_name(t)
            }
        };
        let number = |t: &str, what: &str| -> Result<u16, String> {
            t.parse::<u16>()
                .map_err(|_| format!("{what} {t:?} is not a whole number from 0 to 65535"))
        };
        let name = |t: &str| {
            normalize_name(t)
                .map_err(|m| format!("expected a domain name like nas.home.arpa ({m})"))
        };
        Ok(match kind {
            RecordKind::A => RecordValue::A(
                s.parse()
                    .map_err(|_| "expected an IPv4 address like 192.168.1.10".to_string())?,
            ),
            RecordKind::Aaaa => RecordValue::Aaaa(
                s.parse()
                    .map_err(|_| "expected an IPv6 address like fd00::10".to_string())?,
            ),
            RecordKind::Cname => RecordValue::Cname(name(s)?),
            RecordKind::Ptr => RecordValue::Ptr(name(s)?),
            RecordKind::Txt => RecordValue::Txt(raw.to_string()),
            RecordKind::Mx => match s.split_whitespace().collect::<Vec<_>>()[..] {
                [pref, host] => RecordValue::Mx {
                    preference: number(pref, "preference")?,
                    exchange: target(host)?,
                },
                _ => {
                    return Err(
                        "expected \"preference host\", like \"10 mail.example.com\"".to_string()
                    )
                }
            },
            RecordKind::Srv => {
                match s.split_whitespace().collect::<Vec<_>>()[..] {
                    [prio, weight, port, host] => RecordValue::Srv {
                        priority: number(prio, "priority")?,
                        weight: number(weight, "weight")?,
                        port: number(port, "port")?,
                        target: target(host)?,
                    },
                    _ => return Err(
                        "expected \"priority weight port target\", like \"0 5 5060 sip.home.arpa\""
                            .to_string(),
                    ),
                }
            }
        })
    }
}

/// `203.0.113.7` → `7.113.0.203.in-addr.arpa`; IPv6 by nibbles under `ip6.arpa`.
pub(super) fn reverse_name(ip: IpAddr) -> String {
    let name = hickory_proto::rr::Name::from(ip).to_ascii();
    name.strip_suffix('.').unwrap_or(&name).to_string()
}
