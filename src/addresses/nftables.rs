//! The `inet telesink` nftables table: one set per learnt category and family (element
//! timeouts carry the records' TTL), and per category a dynamic set keyed by
//! `source . destination` with a counter per element, fed by a rule in the forward hook
//! (`drop` mode also drops). Talks to the kernel through `nft -f -` (one transaction per
//! change) and `nft -j list table` (the counters); never from the DNS path.

use std::collections::HashSet;
use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use super::store::Export;
use super::NftMode;

pub const TABLE: &str = "telesink";

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error(
        "cannot run `nft` ({0}): install the nftables package (Debian: apt-get install nftables), \
         or set [addresses] nftables = \"off\""
    )]
    Missing(std::io::Error),
    #[error(
        "nft was refused ({0}): keeping the nftables table needs CAP_NET_ADMIN (run telesink as \
         root, or give it CAP_NET_ADMIN, e.g. AmbientCapabilities=CAP_NET_ADMIN in its systemd \
         unit), or set [addresses] nftables = \"off\""
    )]
    NotPermitted(String),
    #[error("nft failed: {0} (is the kernel's nf_tables module available? `modprobe nf_tables`)")]
    Failed(String),
    #[error("nft printed what telesink cannot read: {0}")]
    Output(String),
}

/// The nftables names of one category's sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetNames {
    pub category: std::sync::Arc<str>,
    pub v4: String,
    pub v6: String,
    pub seen_v4: String,
    pub seen_v6: String,
}

/// Set names for `categories`: the name made of letters, digits and `_` (nft identifiers),
/// with the index appended where two categories would otherwise share one.
pub fn set_names(categories: &[std::sync::Arc<str>]) -> Vec<SetNames> {
    let mut used = HashSet::new();
    categories
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut base: String = c
                .chars()
                .map(|ch| if ch.is_ascii_alphanumeric() { ch } else { '_' })
                .collect();
            if !base.starts_with(|ch: char| ch.is_ascii_alphabetic()) {
                base.insert_str(0, "c_");
            }
            if !used.insert(base.clone()) {
                base = format!("{base}_{i}");
                used.insert(base.clone());
            }
            SetNames {
                category: c.clone(),
                v4: format!("{base}_v4"),
                v6: format!("{base}_v6"),
                seen_v4: format!("{base}_seen_v4"),
                seen_v6: format!("{base}_seen_v6"),
            }
        })
        .collect()
}

/// The whole table, replacing one of that name (created empty first so that the delete
/// cannot fail), in one transaction. Other tables are never named.
pub fn table_script(mode: NftMode, sets: &[SetNames]) -> String {
    let verdict = if mode == NftMode::Drop { " drop" } else { "" };
    let mut s = format!("table inet {TABLE}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n");
    for n in sets {
        s.push_str(&format!(
            "  set {} {{ type ipv4_addr; flags timeout; }}\n  set {} {{ type ipv6_addr; flags timeout; }}\n",
            n.v4, n.v6
        ));
        // Per device and destination; an element idle for a day goes (its count is read well
        // before that).
        s.push_str(&format!(
            "  set {} {{ type ipv4_addr . ipv4_addr; flags dynamic,timeout; timeout 1d; size 65535; counter; }}\n  \
             set {} {{ type ipv6_addr . ipv6_addr; flags dynamic,timeout; timeout 1d; size 65535; counter; }}\n",
            n.seen_v4, n.seen_v6
        ));
    }
    s.push_str(
        "  chain forward {\n    type filter hook forward priority filter - 5; policy accept;\n",
    );
    for n in sets {
        s.push_str(&format!(
            "    ip daddr @{} update @{} {{ ip saddr . ip daddr }}{verdict}\n    ip6 daddr @{} update @{} {{ ip6 saddr . ip6 daddr }}{verdict}\n",
            n.v4, n.seen_v4, n.v6, n.seen_v6
        ));
    }
    s.push_str("  }\n}\n");
    s
}

/// Replaces the elements of one category's address sets, in one transaction with the rest of
/// the batch (the sets are never seen empty).
pub fn elements_script(out: &mut String, names: &SetNames, export: &Export) {
    let timeout = |d: std::time::Duration| d.as_secs().max(1);
    out.push_str(&format!("flush set inet {TABLE} {}\n", names.v4));
    if !export.v4.is_empty() {
        let elems: Vec<String> = export
            .v4
            .iter()
            .map(|(a, d)| format!("{a} timeout {}s", timeout(*d)))
            .collect();
        out.push_str(&format!(
            "add element inet {TABLE} {} {{ {} }}\n",
            names.v4,
            elems.join(", ")
        ));
    }
    out.push_str(&format!("flush set inet {TABLE} {}\n", names.v6));
    if !export.v6.is_empty() {
        let elems: Vec<String> = export
            .v6
            .iter()
            .map(|(a, d)| format!("{a} timeout {}s", timeout(*d)))
            .collect();
        out.push_str(&format!(
            "add element inet {TABLE} {} {{ {} }}\n",
            names.v6,
            elems.join(", ")
        ));
    }
}

/// Runs `nft -f -` with `script` (one transaction).
pub fn apply(script: &str) -> Result<(), NftError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(NftError::Missing)?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(script.as_bytes());
    }
    let out = child.wait_with_output().map_err(NftError::Missing)?;
    if out.status.success() {
        return Ok(());
    }
    Err(classify(&String::from_utf8_lossy(&out.stderr)))
}

fn classify(stderr: &str) -> NftError {
    let text = stderr
        .trim()
        .lines()
        .take(6)
        .collect::<Vec<_>>()
        .join(" / ");
    if stderr.contains("Operation not permitted") || stderr.contains("Permission denied") {
        NftError::NotPermitted(text)
    } else {
        NftError::Failed(text)
    }
}

/// Removes the table (at exit). A table already gone is not an error.
pub fn remove() -> Result<(), NftError> {
    apply(&format!("table inet {TABLE}\ndelete table inet {TABLE}\n"))
}

/// One counter element: packets from `source` to `destination`, in the set named `set`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counted {
    pub set: String,
    pub source: IpAddr,
    pub destination: IpAddr,
    pub packets: u64,
}

/// Every counter of the table, from `nft -j list table inet telesink`.
pub fn read_counters() -> Result<Vec<Counted>, NftError> {
    let out = Command::new("nft")
        .args(["-j", "list", "table", "inet", TABLE])
        .stdin(Stdio::null())
        .output()
        .map_err(NftError::Missing)?;
    if !out.status.success() {
        return Err(classify(&String::from_utf8_lossy(&out.stderr)));
    }
    parse_counters(&out.stdout)
}

pub fn parse_counters(json: &[u8]) -> Result<Vec<Counted>, NftError> {
    let v: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| NftError::Output(e.to_string()))?;
    let mut out = Vec::new();
    let Some(items) = v["nftables"].as_array() else {
        return Err(NftError::Output("no \"nftables\" array".into()));
    };
    for item in items {
        let set = &item["set"];
        let (Some(name), Some(elems)) = (set["name"].as_str(), set["elem"].as_array()) else {
            continue;
        };
        for e in elems {
            let e = &e["elem"];
            let Some([src, dst]) = e["val"]["concat"].as_array().map(|a| a.as_slice()) else {
                continue;
            };
            let (Some(src), Some(dst)) = (
                src.as_str().and_then(|s| s.parse().ok()),
                dst.as_str().and_then(|s| s.parse().ok()),
            ) else {
                continue;
            };
            out.push(Counted {
                set: name.to_string(),
                source: src,
                destination: dst,
                packets: e["counter"]["packets"].as_u64().unwrap_or(0),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn names_are_nft_identifiers_and_unique() {
        let n = set_names(&[
            "telemetry".into(),
            "smart-tv".into(),
            "smart_tv".into(),
            "1x".into(),
        ]);
        assert_eq!(n[0].v4, "telemetry_v4");
        assert_eq!(n[1].seen_v6, "smart_tv_seen_v6");
        assert_eq!(n[2].v4, "smart_tv_2_v4");
        assert_eq!(n[3].v4, "c_1x_v4");
    }

    #[test]
    fn the_table_replaces_itself_and_drops_only_in_drop_mode() {
        let n = set_names(&["telemetry".into()]);
        let count = table_script(NftMode::Count, &n);
        assert!(count.starts_with("table inet telesink\ndelete table inet telesink\n"));
        assert!(count.contains(
            "ip daddr @telemetry_v4 update @telemetry_seen_v4 { ip saddr . ip daddr }\n"
        ));
        assert!(!count.contains("drop"));
        let drop = table_script(NftMode::Drop, &n);
        assert!(drop.contains("{ ip6 saddr . ip6 daddr } drop\n"));
    }

    #[test]
    fn elements_carry_their_timeouts() {
        let n = &set_names(&["telemetry".into()])[0];
        let e = Export {
            v4: vec![("192.0.2.1".parse().unwrap(), Duration::from_millis(2500))],
            v6: vec![],
            shared: vec![],
        };
        let mut s = String::new();
        elements_script(&mut s, n, &e);
        assert_eq!(
            s,
            "flush set inet telesink telemetry_v4\nadd element inet telesink telemetry_v4 { 192.0.2.1 timeout 2s }\nflush set inet telesink telemetry_v6\n"
        );
    }

    #[test]
    fn counters_are_read_from_nft_json() {
        let json = br#"{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"set": {"family": "inet", "name": "telemetry_seen_v4", "table": "telesink", "type": ["ipv4_addr", "ipv4_addr"], "elem": [{"elem": {"val": {"concat": ["1.2.3.4", "203.0.113.5"]}, "expires": 86399, "counter": {"packets": 3, "bytes": 10}}}]}}, {"set": {"name": "telemetry_v4", "elem": [{"elem": {"val": "203.0.113.5", "timeout": 30}}]}}]}"#;
        let c = parse_counters(json).unwrap();
        assert_eq!(
            c,
            vec![Counted {
                set: "telemetry_seen_v4".into(),
                source: "1.2.3.4".parse().unwrap(),
                destination: "203.0.113.5".parse().unwrap(),
                packets: 3
            }]
        );
        assert!(parse_counters(b"nope").is_err());
    }

    #[test]
    fn refusals_name_cap_net_admin() {
        let e = classify("Error: Could not process rule: Operation not permitted\n");
        assert!(e.to_string().contains("CAP_NET_ADMIN"), "{e}");
    }
}
