//! `telesink devices`: every device seen, with how it was named, its MAC and addresses, its
//! last query, and whether it is on the LAN and DNS-silent.
//!
//! Two sources: the query log's device table (what asked telesink, under which name, from which
//! addresses) and, read now, the kernel's neighbour table and the DHCP leases (what is on the
//! LAN). A device on the LAN that never asked is listed too: it is the most DNS-silent of all.

use std::collections::{BTreeSet, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;

use crate::config::Config;
use crate::devices::{self, DeviceSettings, DeviceView, Mac, NamedBy, NeighbourStatus};
use crate::querylog::{self, DeviceRecord};

/// One line of the report.
#[derive(Debug, Serialize)]
pub struct DeviceLine {
    pub name: String,
    pub named_by: &'static str,
    pub mac: Option<Mac>,
    /// IPv4 first; what the log saw and what the neighbour table and leases hold now.
    pub addresses: Vec<IpAddr>,
    /// RFC 3339, UTC; `None`: never asked telesink (as far as the log knows).
    pub last_query: Option<String>,
    /// On the LAN now per the neighbour table; `None` when the table cannot be read.
    pub present: Option<bool>,
    /// On the LAN and no query for `silent_after`; `None` when presence is unknown.
    pub dns_silent: Option<bool>,
}

#[derive(Debug, Serialize)]
pub struct DevicesReport {
    pub devices: Vec<DeviceLine>,
    /// Why presence is unknown, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub neighbours_unavailable: Option<String>,
    /// When the query log could not be read (the devices that asked are then missing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_unavailable: Option<String>,
    #[serde(skip)]
    pub silent_after: Duration,
}

/// Reads the log and the neighbour table now.
pub fn devices(config: &Config) -> anyhow::Result<DevicesReport> {
    let settings = DeviceSettings {
        neighbours: config.client_discovery.neighbours,
        leases: config.client_discovery.leases.clone(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let view = rt.block_on(devices::snapshot(&settings))?;
    let (records, log_unavailable) = if config.querylog.url.is_some() {
        match querylog::LogLocation::of(&config.querylog)
            .map_err(querylog::CommandError::from)
            .and_then(|at| querylog::devices_in(&at))
        {
            Ok(r) => (r, None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        }
    } else if config.querylog.path.exists() {
        match querylog::devices(&config.querylog.path) {
            Ok(r) => (r, None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        }
    } else {
        (
            Vec::new(),
            Some(format!(
                "no query log at {} yet (is `[querylog] log` \"none\", or has telesink not run?)",
                config.querylog.path.display()
            )),
        )
    };
    let silent_after = config.client_discovery.silent_after;
    let now_ms = jiff::Timestamp::now().as_millisecond();
    Ok(DevicesReport {
        devices: merge(config, &view, records, now_ms, silent_after),
        neighbours_unavailable: match view.neighbours().status() {
            NeighbourStatus::Unavailable(why) => Some(why.to_string()),
            NeighbourStatus::Off => Some("[clients] neighbours = false".into()),
            _ => None,
        },
        log_unavailable,
        silent_after,
    })
}

/// The log's devices with what the LAN says of them, then the LAN's devices the log never saw.
fn merge(
    config: &Config,
    view: &DeviceView,
    records: Vec<DeviceRecord>,
    now_ms: i64,
    silent_after: Duration,
) -> Vec<DeviceLine> {
    let known = view.presence_known();
    let silent = |present: Option<bool>, last_ms: Option<i64>| -> Option<bool> {
        let present = present?;
        Some(present && last_ms.is_none_or(|t| now_ms - t >= silent_after.as_millis() as i64))
    };
    let mut seen_macs: HashSet<Mac> = HashSet::new();
    let mut seen_addrs: HashSet<IpAddr> = HashSet::new();
    let mut out: Vec<DeviceLine> = Vec::new();
    let mut last_ms: Vec<i64> = Vec::new();
    // A device's first query from an address the kernel had not yet mapped is logged under
    // the bare address: fold such rows into the named device that owns their MAC.
    let (named, unnamed): (Vec<DeviceRecord>, Vec<DeviceRecord>) = records
        .into_iter()
        .partition(|r| r.named_by != NamedBy::Address);
    let mut by_mac: std::collections::HashMap<Mac, usize> = std::collections::HashMap::new();
    for r in named.into_iter().chain(unnamed) {
        let mut addrs: BTreeSet<IpAddr> = r
            .addresses
            .iter()
            .filter_map(|a| a.address.parse().ok())
            .collect();
        // The MAC the log recorded, else the one the table gives for an address it used.
        let mac = r.mac.or_else(|| addrs.iter().find_map(|a| view.mac_of(*a)));
        if let Some(m) = mac {
            addrs.extend(view.addresses_of(m).iter().copied());
            seen_macs.insert(m);
            if r.named_by == NamedBy::Address {
                if let Some(&i) = by_mac.get(&m) {
                    let line = &mut out[i];
                    let mut all: BTreeSet<IpAddr> = line.addresses.iter().copied().collect();
                    all.extend(addrs.iter().copied());
                    seen_addrs.extend(all.iter().copied());
                    line.addresses = ipv4_first(all);
                    if r.last_query_ms > last_ms[i] {
                        last_ms[i] = r.last_query_ms;
                        line.last_query = Some(r.last_query);
                        line.dns_silent = silent(line.present, Some(r.last_query_ms));
                    }
                    continue;
                }
            } else {
                by_mac.entry(m).or_insert(out.len());
            }
        }
        seen_addrs.extend(addrs.iter().copied());
        let present = known.then(|| mac.is_some_and(|m| view.present(m)));
        last_ms.push(r.last_query_ms);
        out.push(DeviceLine {
            name: r.name,
            named_by: r.named_by.as_str(),
            mac,
            addresses: ipv4_first(addrs),
            last_query: Some(r.last_query),
            present,
            dns_silent: silent(present, Some(r.last_query_ms)),
        });
    }
    for d in view.devices() {
        if d.mac.is_some_and(|m| seen_macs.contains(&m))
            || d.addresses.iter().any(|a| seen_addrs.contains(a))
        {
            continue;
        }
        let (name, named_by) = name_unseen(config, d.mac, &d.addresses, d.lease_name.as_deref());
        out.push(DeviceLine {
            name,
            named_by: named_by.as_str(),
            mac: d.mac,
            addresses: d.addresses.clone(),
            last_query: None,
            present: d.present,
            dns_silent: silent(d.present, None),
        });
    }
    out
}

/// The name a device that never asked would get (SPEC "Devices": config address, config MAC,
/// lease, address).
fn name_unseen(
    config: &Config,
    mac: Option<Mac>,
    addrs: &[IpAddr],
    lease: Option<&str>,
) -> (String, NamedBy) {
    if let Some(c) = config.clients.iter().find(|c| {
        addrs
            .iter()
            .any(|a| c.addresses.iter().any(|n| n.contains(a)))
    }) {
        return (c.name.clone(), NamedBy::ConfigAddress);
    }
    if let Some(m) = mac {
        if let Some(c) = config.clients.iter().find(|c| c.macs.contains(&m)) {
            return (c.name.clone(), NamedBy::ConfigMac);
        }
    }
    if let Some(l) = lease {
        return (l.to_string(), NamedBy::Lease);
    }
    let first = addrs.first().map_or_else(|| "?".into(), |a| a.to_string());
    (first, NamedBy::Address)
}

fn ipv4_first(addrs: BTreeSet<IpAddr>) -> Vec<IpAddr> {
    // IpAddr orders V4 before V6 already.
    addrs.into_iter().collect()
}

impl DevicesReport {
    pub fn render_json(&self) -> String {
        serde_json::to_string_pretty(&self.devices).expect("serialisable") + "\n"
    }

    pub fn render_text(&self) -> String {
        let yes_no = |b: Option<bool>| match b {
            Some(true) => "yes",
            Some(false) => "no",
            None => "-",
        };
        let rows: Vec<[String; 7]> = self
            .devices
            .iter()
            .map(|d| {
                [
                    d.name.clone(),
                    d.named_by.to_string(),
                    d.mac.map_or_else(|| "-".into(), |m| m.to_string()),
                    d.addresses
                        .iter()
                        .map(IpAddr::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                    d.last_query
                        .as_deref()
                        .map_or_else(|| "never".into(), short_time),
                    yes_no(d.present).into(),
                    yes_no(d.dns_silent).into(),
                ]
            })
            .collect();
        let head = [
            "NAME",
            "NAMED BY",
            "MAC",
            "ADDRESSES",
            "LAST QUERY (UTC)",
            "ON LAN",
            "DNS-SILENT",
        ];
        let mut widths = head.map(str::len);
        for r in &rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut s = String::new();
        let line = |s: &mut String, cells: &[&str]| {
            let last = cells.len() - 1;
            for (i, c) in cells.iter().enumerate() {
                if i == last {
                    s.push_str(c);
                } else {
                    s.push_str(&format!("{c:<w$}  ", w = widths[i]));
                }
            }
            s.push('\n');
        };
        line(&mut s, &head);
        for r in &rows {
            line(&mut s, &r.iter().map(String::as_str).collect::<Vec<_>>());
        }
        if rows.is_empty() {
            s.push_str("(no devices seen yet)\n");
        }
        if let Some(why) = &self.neighbours_unavailable {
            s.push_str(&format!(
                "\nON LAN and DNS-SILENT are unknown: the neighbour table is not read ({why}).\n"
            ));
        }
        if let Some(why) = &self.log_unavailable {
            s.push_str(&format!(
                "\nDevices that asked telesink are missing: {why}.\n"
            ));
        }
        s.push_str(&format!(
            "\nDNS-silent: on the LAN, but no DNS query for {} ([clients] silent_after): idle, or \
             using its own DNS over HTTPS/TLS (see deploy/router/README.md).\n",
            crate::duration::display(self.silent_after)
        ));
        s
    }
}

/// `2026-12-03T20:11:05.123Z` → `2026-12-03 20:11:05`.
fn short_time(t: &str) -> String {
    t.get(..19).unwrap_or(t).replace('T', " ")
}
