//! DHCP lease files: the host names a DHCP server handed out, by address and by MAC.
//!
//! Three formats, detected per file from its first meaningful line:
//!
//! * **dnsmasq** (`dhcp-leasefile`): `expiry mac ip hostname clientid` per IPv4 lease (`*` = no
//!   name, expiry 0 = never); after a `duid SERVER-DUID` line, IPv6 leases as
//!   `expiry iaid ip6 hostname client-duid`.
//! * **ISC dhcpd** (`dhcpd.leases`): `lease IP { … }` blocks with `hardware ethernet`,
//!   `client-hostname`, `binding state` and `ends`. The file is a journal: the last block of an
//!   address wins; `free`, `expired`, `released`, `abandoned` and `backup` ones are no lease.
//! * **odhcpd** (OpenWrt's state file, `/tmp/hosts/odhcpd`): per lease a comment line
//!   `# iface duid iaid hostname valid-until host-id length addr/len …` (`iaid` is `ipv4`
//!   for DHCPv4 leases, whose `duid` field is then the MAC in hex), and hosts-file lines
//!   (`addr name…`) that repeat the same names.
//!
//! A MAC is also read from a DHCPv6 DUID of type LL or LLT, so a lease names the device's
//! other addresses too. Host names are made safe for metric labels and DNS labels.
//!
//! [`run`] watches the files' directories (editors, `rename`-over writes, a file created later)
//! and re-reads them after a short debounce, and every [`REREAD`] so that expired leases go.
//! A file that fails to re-read keeps its last good copy, with a warning.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::{mpsc, oneshot, watch};

use super::mac::Mac;
use super::table::{DeviceView, FastMap};

/// Quiet time after the last file event before re-reading.
const DEBOUNCE: Duration = Duration::from_millis(250);
/// Longest wait after the first event of a burst that does not stop.
const MAX_DELAY: Duration = Duration::from_secs(1);
/// Re-read this often even without events: leases expire without the file changing.
pub const REREAD: Duration = Duration::from_secs(60);

/// The lease file formats telesink reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LeaseFormat {
    Dnsmasq,
    IscDhcpd,
    Odhcpd,
}

impl LeaseFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseFormat::Dnsmasq => "dnsmasq",
            LeaseFormat::IscDhcpd => "ISC dhcpd",
            LeaseFormat::Odhcpd => "odhcpd",
        }
    }
}

const KNOWN_FORMATS: &str = "dnsmasq (`expiry mac ip hostname clientid` lines), ISC dhcpd \
                             (`lease IP { … }` blocks) or odhcpd (`# iface duid iaid hostname …` lines)";

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("cannot read lease file {}: {source}; check the path in [clients] leases and that telesink may read it", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: not a DHCP lease file in a format telesink knows ({text:?}); [clients] leases takes {KNOWN_FORMATS}", path.display())]
    UnknownFormat {
        path: PathBuf,
        line: usize,
        text: String,
    },
}

/// One named lease: `name` was given to the device at `addr` (canonical), whose MAC is `mac`
/// when the file says it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub addr: IpAddr,
    pub mac: Option<Mac>,
    pub name: Arc<str>,
}

/// A line the parser could not use (the file is still read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub line: usize,
    pub reason: &'static str,
}

/// One lease file, read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseFile {
    pub path: PathBuf,
    /// `None` for an empty file (no lease yet: any format).
    pub format: Option<LeaseFormat>,
    /// Current leases with a host name, in file order.
    pub leases: Vec<Lease>,
    /// Leases in the file that are expired or free, or have no host name.
    pub unnamed_or_expired: usize,
    pub skipped: Vec<Skipped>,
}

/// Every lease file's names, by address and by MAC. The first file (in `[clients] leases`
/// order) that names an address or MAC wins.
#[derive(Debug, Default)]
pub struct LeaseSet {
    pub files: Vec<LeaseFile>,
    by_addr: FastMap<IpAddr, Arc<str>>,
    by_mac: FastMap<Mac, Arc<str>>,
}

impl LeaseSet {
    pub fn new(files: Vec<LeaseFile>) -> LeaseSet {
        let mut by_addr = FastMap::default();
        let mut by_mac = FastMap::default();
        for lease in files.iter().flat_map(|f| &f.leases) {
            by_addr
                .entry(lease.addr)
                .or_insert_with(|| lease.name.clone());
            if let Some(m) = lease.mac {
                by_mac.entry(m).or_insert_with(|| lease.name.clone());
            }
        }
        LeaseSet {
            files,
            by_addr,
            by_mac,
        }
    }

    #[inline]
    pub fn name_of_addr(&self, addr: IpAddr) -> Option<&Arc<str>> {
        self.by_addr.get(&addr)
    }

    #[inline]
    pub fn name_of_mac(&self, mac: Mac) -> Option<&Arc<str>> {
        self.by_mac.get(&mac)
    }

    /// Every lease of every file.
    pub fn iter(&self) -> impl Iterator<Item = &Lease> {
        self.files.iter().flat_map(|f| &f.leases)
    }
}

/// Reads every lease file (for `telesink check` and the first load): the first file that
/// cannot be read or is in no known format is the error.
pub fn load_leases(paths: &[PathBuf]) -> Result<LeaseSet, LeaseError> {
    let now = jiff::Timestamp::now().as_second();
    let files = paths
        .iter()
        .map(|p| read_file(p, now))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(LeaseSet::new(files))
}

/// Reads and parses one lease file; `now` (Unix seconds) decides what has expired.
pub fn read_file(path: &Path, now: i64) -> Result<LeaseFile, LeaseError> {
    let bytes = std::fs::read(path).map_err(|source| LeaseError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &String::from_utf8_lossy(&bytes), now)
}

/// Parses `text`, the content of lease file `path`.
pub fn parse(path: &Path, text: &str, now: i64) -> Result<LeaseFile, LeaseError> {
    let mut file = LeaseFile {
        path: path.to_path_buf(),
        format: detect(path, text)?,
        leases: Vec::new(),
        unnamed_or_expired: 0,
        skipped: Vec::new(),
    };
    match file.format {
        Some(LeaseFormat::Dnsmasq) => dnsmasq(text, now, &mut file),
        Some(LeaseFormat::IscDhcpd) => isc(text, now, &mut file),
        Some(LeaseFormat::Odhcpd) => odhcpd(text, now, &mut file),
        None => {}
    }
    Ok(file)
}

/// Keywords that open a statement of an ISC dhcpd lease file.
const ISC_KEYWORDS: &[&str] = &[
    "lease",
    "server-duid",
    "authoring-byte-order",
    "failover",
    "ia-na",
    "ia-ta",
    "ia-pd",
    "host",
    "class",
    "subclass",
];

fn detect(path: &Path, text: &str) -> Result<Option<LeaseFormat>, LeaseError> {
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('#') {
            if odhcpd_fields(line).is_some() {
                return Ok(Some(LeaseFormat::Odhcpd));
            }
            // ISC dhcpd files open with comments.
            continue;
        }
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or_default();
        if ISC_KEYWORDS.contains(&first) {
            return Ok(Some(LeaseFormat::IscDhcpd));
        }
        let rest: Vec<&str> = words.collect();
        let dnsmasq_line =
            first.parse::<u64>().is_ok() && rest.len() >= 3 && rest[1].parse::<IpAddr>().is_ok();
        if first == "duid" || dnsmasq_line {
            return Ok(Some(LeaseFormat::Dnsmasq));
        }
        return Err(LeaseError::UnknownFormat {
            path: path.to_path_buf(),
            line: i + 1,
            text: line.chars().take(80).collect(),
        });
    }
    Ok(None)
}

/// A host name as a device name: lower case, its first label, characters other than letters,
/// digits and `-` turned into `-`; `None` for none (`*`, `-`, empty).
pub fn device_name(raw: &str) -> Option<Arc<str>> {
    let raw = raw.trim();
    let label = raw.split('.').next().unwrap_or_default();
    let mut out = String::with_capacity(label.len());
    for c in label.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    out.truncate(63);
    (!out.is_empty()).then(|| out.into())
}

/// The MAC inside a DHCPv6 DUID of type LLT (1) or LL (3) with hardware type Ethernet (1).
fn mac_from_duid(bytes: &[u8]) -> Option<Mac> {
    match bytes {
        [0, 1, 0, 1, _, _, _, _, mac @ ..] | [0, 3, 0, 1, mac @ ..] => Mac::try_from(mac).ok(),
        _ => None,
    }
}

/// Hex bytes, with or without colons (`00:01:…` in dnsmasq, `000100…` in odhcpd).
fn hex_bytes(s: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = s.bytes().filter(|&b| b != b':').collect();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok())
        .collect()
}

/// dnsmasq's hardware address field: a MAC, or for other link types `TT-xx:xx:…` (the ARP
/// hardware type in hex, then the address), which is no MAC.
fn dnsmasq_hw(s: &str) -> Result<Option<Mac>, ()> {
    if let Ok(mac) = s.parse::<Mac>() {
        return Ok(Some(mac));
    }
    match s.split_once('-') {
        Some((t, rest)) if t.len() == 2 && hex_bytes(t).is_some() && hex_bytes(rest).is_some() => {
            Ok(None)
        }
        _ => Err(()),
    }
}

/// dnsmasq's expiry: 0 is "never"; a small number is a lease length (dnsmasq built with
/// `HAVE_BROKEN_RTC`), not a time, so it is not judged.
fn dnsmasq_expired(expiry: u64, now: i64) -> bool {
    const YEAR_2001: u64 = 1_000_000_000;
    expiry >= YEAR_2001 && (expiry as i64) < now
}

fn dnsmasq(text: &str, now: i64, file: &mut LeaseFile) {
    for (i, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() || f[0] == "duid" {
            continue;
        }
        let skip = |file: &mut LeaseFile, reason| {
            file.skipped.push(Skipped {
                line: i + 1,
                reason,
            })
        };
        if f.len() < 4 {
            skip(
                file,
                "expected `expiry mac-or-iaid address hostname [client-id]`",
            );
            continue;
        }
        let Ok(expiry) = f[0].parse::<u64>() else {
            skip(file, "the expiry time is not a number");
            continue;
        };
        let Ok(addr) = f[2].parse::<IpAddr>() else {
            skip(file, "the address is not an IP address");
            continue;
        };
        let addr = addr.to_canonical();
        let mac = match addr {
            IpAddr::V4(_) => match dnsmasq_hw(f[1]) {
                Ok(mac) => mac,
                Err(()) => {
                    skip(file, "the hardware address is not a MAC");
                    continue;
                }
            },
            IpAddr::V6(_) => f
                .get(4)
                .and_then(|d| hex_bytes(d))
                .and_then(|d| mac_from_duid(&d)),
        };
        match device_name(f[3]).filter(|_| !dnsmasq_expired(expiry, now)) {
            Some(name) => file.leases.push(Lease { addr, mac, name }),
            None => file.unnamed_or_expired += 1,
        }
    }
}

/// The fields of an odhcpd lease line (`# iface duid iaid hostname valid host-id length
/// addr/len …`), after the `#`.
fn odhcpd_fields(line: &str) -> Option<Vec<&str>> {
    let f: Vec<&str> = line.strip_prefix('#')?.split_whitespace().collect();
    let plausible = f.len() >= 7
        && hex_bytes(f[1]).is_some()
        && (f[2] == "ipv4" || u32::from_str_radix(f[2], 16).is_ok())
        && f[4].parse::<i64>().is_ok()
        && f[6].parse::<u8>().is_ok();
    plausible.then_some(f)
}

fn odhcpd(text: &str, now: i64, file: &mut LeaseFile) {
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        // Hosts-file lines repeat the names of the lease lines; other comments are not leases.
        if !line.starts_with('#') {
            continue;
        }
        let Some(f) = odhcpd_fields(line) else {
            file.skipped.push(Skipped {
                line: i + 1,
                reason: "expected `# iface duid iaid hostname valid-until id length addr/len…`",
            });
            continue;
        };
        let duid = hex_bytes(f[1]).unwrap_or_default();
        let mac = if f[2] == "ipv4" {
            Mac::try_from(duid.as_slice()).ok()
        } else {
            mac_from_duid(&duid)
        };
        let valid: i64 = f[4].parse().unwrap_or(0);
        // -1: infinite; 0: expired; otherwise a Unix time. A name odhcpd found broken is
        // written as `broken\x20NAME`.
        let current = valid == -1 || valid > now;
        let name = (!f[3].starts_with("broken\\x20"))
            .then(|| device_name(f[3]))
            .flatten();
        let mut any = false;
        for a in &f[7..] {
            let parsed = a.split_once('/').and_then(|(addr, len)| {
                Some((addr.parse::<IpAddr>().ok()?, len.parse::<u8>().ok()?))
            });
            let Some((addr, len)) = parsed else {
                file.skipped.push(Skipped {
                    line: i + 1,
                    reason: "an address is not `address/length`",
                });
                continue;
            };
            // A delegated prefix is a router's network, not one device's address.
            let host = match addr {
                IpAddr::V4(_) => len == 32,
                IpAddr::V6(_) => len == 128,
            };
            match (&name, current && host) {
                (Some(name), true) => {
                    any = true;
                    file.leases.push(Lease {
                        addr: addr.to_canonical(),
                        mac,
                        name: name.clone(),
                    })
                }
                _ => file.unnamed_or_expired += 1,
            }
        }
        if !any && f.len() == 7 {
            file.unnamed_or_expired += 1;
        }
    }
}

/// A token of an ISC dhcpd lease file, with its line.
#[derive(Debug, PartialEq, Eq)]
enum Tok {
    Word(String),
    Str(String),
    Open,
    Close,
    Semi,
}

fn isc_tokens(text: &str) -> Vec<(usize, Tok)> {
    let mut out = Vec::new();
    let mut line = 1;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' => line += 1,
            c if c.is_whitespace() => {}
            '#' => {
                while chars.peek().is_some_and(|&c| c != '\n') {
                    chars.next();
                }
            }
            '{' => out.push((line, Tok::Open)),
            '}' => out.push((line, Tok::Close)),
            ';' => out.push((line, Tok::Semi)),
            '"' => {
                let start = line;
                let mut bytes = Vec::new();
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => match chars.next() {
                            // dhcpd writes bytes outside printable ASCII as `\ooo`.
                            Some(d @ '0'..='7') => {
                                let mut v = d.to_digit(8).unwrap_or(0);
                                for _ in 0..2 {
                                    if let Some(d) = chars.peek().and_then(|c| c.to_digit(8)) {
                                        v = v * 8 + d;
                                        chars.next();
                                    }
                                }
                                bytes.push(v as u8);
                            }
                            Some(o) => {
                                let mut b = [0; 4];
                                bytes.extend_from_slice(o.encode_utf8(&mut b).as_bytes())
                            }
                            None => {}
                        },
                        c => {
                            if c == '\n' {
                                line += 1;
                            }
                            let mut b = [0; 4];
                            bytes.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                        }
                    }
                }
                out.push((
                    start,
                    Tok::Str(String::from_utf8_lossy(&bytes).into_owned()),
                ));
            }
            c => {
                let mut w = String::from(c);
                while let Some(&n) = chars.peek() {
                    if n.is_whitespace() || matches!(n, '{' | '}' | ';' | '"' | '#') {
                        break;
                    }
                    w.push(n);
                    chars.next();
                }
                out.push((line, Tok::Word(w)));
            }
        }
    }
    out
}

/// What a `lease IP { … }` block says.
#[derive(Default)]
struct IscLease {
    mac: Option<Mac>,
    name: Option<String>,
    state: Option<String>,
    /// Unix seconds; `None` for `ends never` or no `ends`.
    ends: Option<i64>,
}

/// dhcpd writes MAC bytes with `%x`: `0:1c:42:a:b:c`.
fn loose_mac(s: &str) -> Option<Mac> {
    let mut b = [0u8; 6];
    let mut parts = s.split(':');
    for x in &mut b {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 2 {
            return None;
        }
        *x = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(Mac(b))
}

/// `ends 3 2026/12/03 19:23:45` (UTC), `ends epoch 1796325825`, `ends never`.
fn isc_time(words: &[&str]) -> Result<Option<i64>, &'static str> {
    const BAD: &str = "`ends` is not `W YYYY/MM/DD HH:MM:SS`, `epoch N` or `never`";
    match words {
        ["never"] => Ok(None),
        ["epoch", n, ..] => n.parse().map(Some).map_err(|_| BAD),
        [_, date, time, ..] => {
            let dt = jiff::civil::DateTime::strptime("%Y/%m/%d %H:%M:%S", format!("{date} {time}"))
                .map_err(|_| BAD)?;
            let ts = dt.to_zoned(jiff::tz::TimeZone::UTC).map_err(|_| BAD)?;
            Ok(Some(ts.timestamp().as_second()))
        }
        _ => Err(BAD),
    }
}

fn isc(text: &str, now: i64, file: &mut LeaseFile) {
    let toks = isc_tokens(text);
    // Address → (its last block, the line of that block).
    let mut order: Vec<IpAddr> = Vec::new();
    let mut last: FastMap<IpAddr, (IscLease, usize)> = FastMap::default();
    let mut i = 0;
    while i < toks.len() {
        // One top-level statement: words up to `;` or a `{ … }` block.
        let start = i;
        while i < toks.len() && !matches!(toks[i].1, Tok::Semi | Tok::Open) {
            i += 1;
        }
        let head: Vec<&Tok> = toks[start..i].iter().map(|(_, t)| t).collect();
        let line = toks.get(start).map_or(0, |(l, _)| *l);
        let is_block = matches!(toks.get(i), Some((_, Tok::Open)));
        i += 1;
        if !is_block {
            continue;
        }
        let body_start = i;
        let mut depth = 1;
        while i < toks.len() && depth > 0 {
            match toks[i].1 {
                Tok::Open => depth += 1,
                Tok::Close => depth -= 1,
                _ => {}
            }
            i += 1;
        }
        let body = &toks[body_start..i.saturating_sub(1)];
        match head.as_slice() {
            [Tok::Word(kw), Tok::Word(addr)] if kw == "lease" => {
                let Ok(addr) = addr.parse::<IpAddr>() else {
                    file.skipped.push(Skipped {
                        line,
                        reason: "`lease` is not followed by an IP address",
                    });
                    continue;
                };
                match isc_block(body) {
                    Ok(l) => {
                        let addr = addr.to_canonical();
                        if last.insert(addr, (l, line)).is_none() {
                            order.push(addr);
                        }
                    }
                    Err(reason) => file.skipped.push(Skipped { line, reason }),
                }
            }
            // Other blocks (failover state, DHCPv6 `ia-na`, hosts, classes) name no device.
            _ => {}
        }
    }
    for addr in order {
        let Some((l, _)) = last.remove(&addr) else {
            continue;
        };
        let active = l.state.as_deref().is_none_or(|s| s == "active");
        let current = l.ends.is_none_or(|e| e > now);
        match l.name.as_deref().and_then(device_name) {
            Some(name) if active && current => file.leases.push(Lease {
                addr,
                mac: l.mac,
                name,
            }),
            _ => file.unnamed_or_expired += 1,
        }
    }
}

/// The statements of one lease block that matter; nested blocks (`on commit { … }`) skipped.
fn isc_block(body: &[(usize, Tok)]) -> Result<IscLease, &'static str> {
    let mut lease = IscLease::default();
    let mut depth = 0;
    let mut stmt: Vec<&str> = Vec::new();
    for (_, t) in body {
        match t {
            Tok::Open => depth += 1,
            Tok::Close => depth -= 1,
            _ if depth > 0 => {}
            Tok::Word(w) | Tok::Str(w) => stmt.push(w),
            Tok::Semi => {
                match stmt.as_slice() {
                    ["hardware", "ethernet", mac] => {
                        lease.mac = Some(loose_mac(mac).ok_or("`hardware ethernet` is not a MAC")?)
                    }
                    ["client-hostname", name] => lease.name = Some(name.to_string()),
                    ["binding", "state", state] => lease.state = Some(state.to_string()),
                    ["ends", rest @ ..] => lease.ends = isc_time(rest)?,
                    _ => {}
                }
                stmt.clear();
            }
        }
        if matches!(t, Tok::Close) && depth == 0 {
            stmt.clear();
        }
    }
    Ok(lease)
}

/// The lease watcher: each file's last good copy, re-read on change.
struct Files {
    paths: Vec<PathBuf>,
    last_good: Vec<Option<LeaseFile>>,
}

impl Files {
    /// Re-reads every file; one that fails keeps its last good copy (or none), with a warning.
    fn reload(&mut self) -> LeaseSet {
        let now = jiff::Timestamp::now().as_second();
        for (path, slot) in self.paths.iter().zip(&mut self.last_good) {
            match read_file(path, now) {
                Ok(f) => {
                    if slot.as_ref().is_none_or(|old| old.leases != f.leases) {
                        tracing::info!(file = %path.display(), format = f.format.map_or("empty", LeaseFormat::as_str), leases = f.leases.len(), "DHCP leases read");
                    }
                    *slot = Some(f);
                }
                Err(e) if slot.is_some() => {
                    tracing::warn!("{e}; keeping its last good copy");
                }
                Err(e) => tracing::warn!("{e}; its host names name no device until it is fixed"),
            }
        }
        LeaseSet::new(self.last_good.iter().flatten().cloned().collect())
    }
}

/// Reading a file (ours included) is not a change; closing it after writing is.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// The lease task: reads the files, publishes, and re-reads them on change (debounced) and
/// every [`REREAD`], until `stop` turns true.
pub(crate) async fn run(
    paths: Vec<PathBuf>,
    view: Arc<ArcSwap<DeviceView>>,
    mut stop: watch::Receiver<bool>,
    first: oneshot::Sender<()>,
) {
    let paths: Vec<PathBuf> = paths
        .into_iter()
        .map(|p| std::path::absolute(&p).unwrap_or(p))
        .collect();
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let _watcher = watch_dirs(&paths, tx);
    let mut files = Files {
        last_good: vec![None; paths.len()],
        paths,
    };
    let publish = |set: LeaseSet| {
        let set = Arc::new(set);
        view.rcu(|cur| Arc::new(cur.with_leases(set.clone())));
    };
    // Reading files blocks: off the runtime's worker threads.
    let reload = |mut files: Files| async move {
        tokio::task::spawn_blocking(move || {
            let set = files.reload();
            (files, set)
        })
        .await
        .expect("lease reload panicked")
    };
    let (f, set) = reload(files).await;
    files = f;
    publish(set);
    let _ = first.send(());
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            ev = rx.recv() => {
                if ev.is_none() {
                    return;
                }
                let hard = tokio::time::Instant::now() + MAX_DELAY;
                loop {
                    let quiet = tokio::time::Instant::now() + DEBOUNCE;
                    tokio::select! {
                        _ = stop.changed() => return,
                        more = rx.recv() => if more.is_none() { return },
                        _ = tokio::time::sleep_until(quiet.min(hard)) => break,
                    }
                }
            }
            _ = tokio::time::sleep(REREAD) => {}
        }
        let (f, set) = reload(files).await;
        files = f;
        publish(set);
    }
}

/// Watches the directories of `paths` (so that rename-over writes and files created later are
/// seen); events about other files in them are ignored. `None` when watching is impossible
/// (then the periodic re-read still applies).
fn watch_dirs(
    paths: &[PathBuf],
    tx: mpsc::UnboundedSender<()>,
) -> Option<notify::RecommendedWatcher> {
    let wanted: HashSet<PathBuf> = paths.iter().cloned().collect();
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let relevant = match &res {
            // No path: the kernel's queue overflowed; anything may have changed.
            Ok(ev) => {
                is_change(&ev.kind)
                    && (ev.paths.is_empty() || ev.paths.iter().any(|p| wanted.contains(p)))
            }
            Err(_) => true,
        };
        if relevant {
            let _ = tx.send(());
        }
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the DHCP lease files; they are re-read every {}s", REREAD.as_secs());
            return None;
        }
    };
    let dirs: HashSet<&Path> = paths.iter().filter_map(|p| p.parent()).collect();
    for d in dirs {
        if let Err(e) = watcher.watch(d, RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %d.display(), error = %e, "cannot watch a DHCP lease directory; its files are re-read every {}s", REREAD.as_secs());
        }
    }
    Some(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2027-01-15T08:00:00Z: the fixtures' leases end in 2027-01-20 or 2030, or ended before.
    const NOW: i64 = 1_800_000_000;

    fn fixture(name: &str, text: &str) -> LeaseFile {
        parse(Path::new(name), text, NOW).unwrap()
    }

    fn l(addr: &str, mac: Option<&str>, name: &str) -> Lease {
        Lease {
            addr: addr.parse().unwrap(),
            mac: mac.map(|m| m.parse().unwrap()),
            name: name.into(),
        }
    }

    fn skipped_lines(f: &LeaseFile) -> Vec<usize> {
        f.skipped.iter().map(|s| s.line).collect()
    }

    #[test]
    fn dnsmasq_ipv4_and_ipv6_leases() {
        let f = fixture(
            "dnsmasq.leases",
            include_str!("../../tests/fixtures/leases/dnsmasq.leases"),
        );
        assert_eq!(f.format, Some(LeaseFormat::Dnsmasq));
        assert_eq!(
            f.leases,
            vec![
                l("192.168.1.50", Some("3c:2e:f9:12:34:56"), "anna-phone"),
                l("192.168.1.52", Some("aa:bb:cc:dd:ee:02"), "nas"),
                // Not Ethernet (InfiniBand): named, without a MAC.
                l("192.168.1.55", None, "ib-node"),
                // The MAC from the client's DUID-LL.
                l("2001:db8::1:50", Some("3c:2e:f9:12:34:56"), "anna-phone"),
                // A DUID-EN holds no MAC.
                l("2001:db8::1:99", None, "printer"),
            ]
        );
        // Expired IPv4 and IPv6 leases, and one without a name (`*`).
        assert_eq!(f.unnamed_or_expired, 3);
        // A bad address, a line of one word, a bad MAC.
        assert_eq!(skipped_lines(&f), vec![5, 6, 7]);
    }

    #[test]
    fn isc_last_block_wins_and_free_or_expired_is_no_lease() {
        let f = fixture(
            "dhcpd.leases",
            include_str!("../../tests/fixtures/leases/dhcpd.leases"),
        );
        assert_eq!(f.format, Some(LeaseFormat::IscDhcpd));
        assert_eq!(
            f.leases,
            vec![
                // Its first block ended before NOW; the renewal further down is current.
                l("192.168.1.60", Some("00:1c:42:0a:0b:0c"), "pixel-8"),
                l("192.168.1.63", Some("00:1c:42:00:00:63"), "living-room-tv"),
                l("192.168.1.64", None, "epoch-host"),
            ]
        );
        // .61 free, .62 ended, .66 released by its last block.
        assert_eq!(f.unnamed_or_expired, 3);
        let reasons: Vec<&str> = f.skipped.iter().map(|s| s.reason).collect();
        assert_eq!(skipped_lines(&f).len(), 2, "{reasons:?}");
        assert!(reasons[0].contains("hardware ethernet"), "{reasons:?}");
        assert!(reasons[1].contains("IP address"), "{reasons:?}");
    }

    #[test]
    fn odhcpd_state_file() {
        let f = fixture("odhcpd", include_str!("../../tests/fixtures/leases/odhcpd"));
        assert_eq!(f.format, Some(LeaseFormat::Odhcpd));
        assert_eq!(
            f.leases,
            vec![
                // The MAC inside the DUID-LLT.
                l("2001:db8:1::4a", Some("3c:2e:f9:12:34:56"), "anna-phone"),
                l("fd00::4a", Some("3c:2e:f9:12:34:56"), "anna-phone"),
                // DHCPv4: the `duid` field is the MAC in hex.
                l("192.168.1.110", Some("3c:2e:f9:aa:bb:cc"), "kitchen-tablet"),
                // Valid until -1: never ends.
                l("2001:db8:1::b", Some("02:00:00:00:00:0a"), "forever"),
            ]
        );
        // No name (`-`), ended (0), a name odhcpd marked broken, a delegated prefix.
        assert_eq!(f.unnamed_or_expired, 4);
        assert_eq!(skipped_lines(&f), vec![11, 12]);
    }

    #[test]
    fn unknown_formats_name_the_file_and_the_known_ones() {
        for (name, text, line) in [
            (
                "hosts",
                include_str!("../../tests/fixtures/leases/hosts"),
                1,
            ),
            (
                "kea-leases4.csv",
                include_str!("../../tests/fixtures/leases/kea-leases4.csv"),
                1,
            ),
            ("two", "# a comment\n\nhello world\n", 3),
        ] {
            let e = parse(Path::new(name), text, NOW).unwrap_err();
            let msg = e.to_string();
            assert!(
                matches!(e, LeaseError::UnknownFormat { line: l, .. } if l == line),
                "{msg}"
            );
            assert!(msg.starts_with(&format!("{name}:{line}:")), "{msg}");
            for known in ["dnsmasq", "ISC dhcpd", "odhcpd"] {
                assert!(msg.contains(known), "{msg}");
            }
        }
    }

    #[test]
    fn an_empty_file_is_no_lease_yet() {
        let f = fixture(
            "empty.leases",
            include_str!("../../tests/fixtures/leases/empty.leases"),
        );
        assert_eq!(f.format, None);
        assert!(f.leases.is_empty());
    }

    #[test]
    fn host_names_become_safe_labels() {
        assert_eq!(
            device_name("Anna's iPhone").as_deref(),
            Some("anna-s-iphone")
        );
        assert_eq!(device_name("NAS.home.arpa").as_deref(), Some("nas"));
        assert_eq!(
            device_name("  --TV_Living--  ").as_deref(),
            Some("tv-living")
        );
        assert_eq!(device_name("*"), None);
        assert_eq!(device_name("-"), None);
        assert_eq!(device_name(""), None);
        assert_eq!(device_name("Ünïcode").as_deref(), Some("n-code"));
        assert_eq!(device_name(&"x".repeat(100)).map(|n| n.len()), Some(63));
    }

    #[test]
    fn the_first_file_naming_an_address_or_mac_wins() {
        let a = fixture(
            "dnsmasq.leases",
            include_str!("../../tests/fixtures/leases/dnsmasq.leases"),
        );
        let mut b = a.clone();
        for lease in &mut b.leases {
            lease.name = "other".into();
        }
        let set = LeaseSet::new(vec![a, b]);
        let phone: Mac = "3c:2e:f9:12:34:56".parse().unwrap();
        assert_eq!(set.name_of_mac(phone).map(|n| &**n), Some("anna-phone"));
        let nas: IpAddr = "192.168.1.52".parse().unwrap();
        assert_eq!(set.name_of_addr(nas).map(|n| &**n), Some("nas"));
        assert_eq!(set.iter().count(), 10);
    }
}
