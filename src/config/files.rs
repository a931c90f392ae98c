//! What the configuration checks on disk: list files exist (a list that cannot be read is an
//! error, and saying so at load puts the file and line on it), and relative paths resolve
//! against the config file's directory.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::ListSource;

const FORMS: &str = "expected a path relative to this file, like \"blocklists/xiaomi.txt\", \
                     or an https:// URL";

/// A list file or URL. `https://` always; `http://` only from a loopback host (a mirror on
/// this machine, where nobody on the way can alter the list); files must exist now.
pub(super) fn list_source(base_dir: &Path, s: &str) -> Result<ListSource, String> {
    let s = s.trim();
    let lower = s.to_ascii_lowercase();
    if s.is_empty() {
        return Err(format!("empty; {FORMS}"));
    }
    for (scheme, loopback_only) in [("https://", false), ("http://", true)] {
        if !lower.starts_with(scheme) {
            continue;
        }
        let host = s[scheme.len()..]
            .split(['/', '?', '#'])
            .next()
            .unwrap_or("");
        if host.is_empty() || s.chars().any(char::is_whitespace) {
            return Err(format!("{s:?} is not a valid URL; {FORMS}"));
        }
        if loopback_only && !is_loopback(host) {
            return Err(format!(
                "{s:?} is plain HTTP, which anyone on the way can alter; lists are fetched over \
                 https:// only: write \"https://{}\" (plain http:// only from this machine: \
                 127.0.0.1, [::1], localhost)",
                &s[scheme.len()..]
            ));
        }
        return Ok(ListSource::Url(s.to_string()));
    }
    if let Some(i) = lower.find("://") {
        return Err(format!(
            "{s:?}: {}:// is not supported; {FORMS}",
            &lower[..i]
        ));
    }
    let resolved = resolve(base_dir, s);
    match std::fs::metadata(&resolved) {
        Ok(meta) if meta.is_dir() => Err(format!(
            "{s} (resolved {}) is a directory; expected a list file",
            resolved.display()
        )),
        Ok(_) => Ok(ListSource::File(resolved)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
            "{s} (resolved {}) does not exist",
            resolved.display()
        )),
        Err(e) => Err(format!("{s} (resolved {}): {e}", resolved.display())),
    }
}

/// `127.0.0.1`, `127.0.0.1:8080`, `[::1]:8080`, `localhost`.
fn is_loopback(host: &str) -> bool {
    let bare = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A path from the file, against the config file's directory (an absolute path stays).
pub(super) fn resolve(base_dir: &Path, s: &str) -> PathBuf {
    base_dir.join(s.trim())
}
