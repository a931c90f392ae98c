//! Configuration: `config.toml` read, checked and turned into typed settings.
//!
//! Parts, in the order a file goes through them:
//! - [`model`]: the file's shape as serde types (`deny_unknown_fields`, every key optional);
//!   [`leaves`]: its value types, each parsing itself once and saying what was expected when
//!   it cannot;
//! - [`convert`]: the checks that need more than one value (unique names, overlapping client
//!   addresses, defined categories, CNAME exclusivity) and the conversion into [`Config`], with
//!   the defaults; a value's span gives every message its line;
//! - [`files`]: what is checked on disk (list files exist; relative paths resolve against the
//!   config file's directory);
//! - [`errors`]: [`ConfigError`] and [`ConfigWarning`], the key path of a serde error (found
//!   from its span), and the did-you-mean hints;
//! - [`values`]: the value grammars other modules use too (upstreams, addresses, names).
//! - [`edge`]: the conversion into the types of the modules configured (`policy`, `lists`,
//!   the local zone), which own them and never import `config`.
//!
//! Every key has a default: an empty file is a valid configuration. An unknown key is an error.
//! Messages name the file, line and key path (`list "xiaomi".source`, `server.listen[1]`) and
//! say what would be valid.

mod convert;
mod edge;
mod errors;
mod files;
mod leaves;
mod model;
mod values;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

pub use crate::devices::Mac;
pub use crate::lists::Format as ListFormat;
// The types the consumers own (config converts into them at the edge; see `lib.rs`).
pub use crate::addresses::NftMode;
pub use crate::lists::ListSource;
pub use crate::policy::local::{LocalRecord as RecordConfig, RecordKind, RecordValue};
pub use crate::policy::schedule::ScheduleSpec as ScheduleConfig;
pub use crate::policy::BlockMode;
pub use crate::policy::ClientRef;
pub use crate::resolve::forward::ForwardSpec as ForwardConfig;
pub use crate::resolve::strategy::Strategy;
pub use crate::resolve::upstream::Upstream;
pub use errors::{ConfigError, ConfigWarning};
pub use values::{normalize_name, parse_upstream};

/// Parses a duration as the config does (`"90m"`, `"24h"`, `"1h30m"`); see [`crate::duration`].
pub fn parse_duration(s: &str) -> Option<Duration> {
    crate::duration::parse(s).ok()
}

/// The built-in category of the bypass defences, and the most distinct categories one
/// configuration may name (`bypass` included): defined with the categories themselves.
pub use crate::policy::category::{BYPASS as BYPASS_CATEGORY, MAX_CATEGORIES};

/// The client labels metrics keep for themselves (past `metrics.max_clients`, and refused
/// strangers); no client may be named so.
pub use crate::observe::{OTHER_CLIENT, REFUSED_CLIENT};

/// Largest TTL a DNS answer may carry (RFC 2181 §8).
pub const MAX_TTL: u32 = 0x7fff_ffff;

const DEFAULT_LISTEN: &[&str] = &["0.0.0.0:53", "[::]:53"];
const DEFAULT_ALLOW_NETWORKS: &[&str] = &[
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
    "fe80::/10",
];
const DEFAULT_UPSTREAMS: &[&str] = &["9.9.9.9:53", "149.112.112.112:53"];
const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9153";

// ---------------------------------------------------------------------------------------------
// The typed configuration
// ---------------------------------------------------------------------------------------------

/// A loaded and checked configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The config file as given (used in messages).
    pub path: PathBuf,
    /// Its directory, made absolute: relative paths in the file resolve against it.
    pub base_dir: PathBuf,
    pub server: ServerConfig,
    pub upstream: UpstreamConfig,
    pub blocking: BlockingConfig,
    pub lists: Vec<ListConfig>,
    pub allow: AllowConfig,
    pub clients: Vec<ClientConfig>,
    /// `[clients]`: how devices without a `[[client]]` address are recognised.
    pub client_discovery: ClientDiscovery,
    pub groups: Vec<GroupConfig>,
    pub default: DefaultPolicy,
    pub records: Vec<RecordConfig>,
    /// `[[forward]]`: names whose queries go to other servers than the upstreams.
    pub forwards: Vec<ForwardConfig>,
    pub metrics: MetricsConfig,
    pub querylog: QueryLogConfig,
    /// `[addresses]`: learning the addresses of telemetry names; `None` without the table.
    pub addresses: Option<AddressesConfig>,
    /// Things that are allowed but probably not meant (a group blocking a category that no list
    /// has). `check` prints them and `run` logs them; they never fail a load.
    pub warnings: Vec<ConfigWarning>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// UDP and TCP on each. Default `0.0.0.0:53`, `[::]:53`.
    pub listen: Vec<SocketAddr>,
    /// Clients outside these get REFUSED. Default: loopback and the private ranges.
    pub allow_networks: Vec<IpNet>,
    /// Per client address; 0 = no limit. Default 300.
    pub rate_limit_qps: u32,
    /// Queries a client may send at once above the rate. Default 2 × `rate_limit_qps`
    /// (page loads come in bursts); 0 when rate limiting is off.
    pub rate_limit_burst: u32,
    /// A TCP connection with no query for this long is closed. Default 10 s (RFC 7766 §6.2.3).
    pub tcp_idle_timeout: Duration,
    /// TCP connections open at once, over all clients. Default 512.
    pub max_tcp_connections: usize,
    /// DoT, DoH and DDR (`tls_*`, `https_listen`, `ddr`). Default off.
    pub encrypted: EncryptedConfig,
}

/// `server.tls_listen`, `https_listen`, `tls_cert`, `tls_key`, `tls_name`, `ddr`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EncryptedConfig {
    /// DNS over TLS (RFC 7858). Empty: off.
    pub tls_listen: Vec<SocketAddr>,
    /// DNS over HTTPS (RFC 8484). Empty: off.
    pub https_listen: Vec<SocketAddr>,
    /// Certificate chain and private key, PEM, absolute. Set whenever a listener is.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The name devices are given (lower case, no trailing dot); a device's is `<id>.<tls_name>`.
    pub tls_name: Option<String>,
    /// Answer `_dns.resolver.arpa` with this server's DoT/DoH. Default on (has effect only with
    /// an encrypted listener).
    pub ddr: bool,
}

impl EncryptedConfig {
    /// Whether any encrypted listener is configured.
    pub fn enabled(&self) -> bool {
        !self.tls_listen.is_empty() || !self.https_listen.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamConfig {
    pub servers: Vec<Upstream>,
    /// From `timeout_ms`. Default 2000 ms.
    pub timeout: Duration,
    /// 0 turns the cache off. Default 20000.
    pub cache_entries: usize,
    /// How long past expiry a cached answer may still be served when every upstream fails
    /// (RFC 8767). Default 1 day; 0 turns it off.
    pub serve_stale: Duration,
    /// Which upstream is asked first. Default `ordered`.
    pub strategy: Strategy,
    /// A public name answered with a private address gets the block answer. Default on.
    pub rebind_protection: bool,
    /// Validate answers with DNSSEC. Default off.
    pub dnssec: bool,
    /// `dnssec_trust_anchor`: a file of DNSKEY records to trust (checked at load), besides
    /// the IANA root keys.
    pub dnssec_trust_anchor: Option<PathBuf>,
}

/// The `upstream.servers` forms; the error says what is valid (see [`parse_upstream`]).
impl std::str::FromStr for Upstream {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_upstream(s)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockingConfig {
    /// Default `null`.
    pub mode: BlockMode,
    /// TTL of sinkhole answers and of their SOA. Default 10.
    pub ttl: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListConfig {
    pub name: String,
    pub source: ListSource,
    /// At least one; lower case; duplicates removed.
    pub categories: Vec<String>,
    /// Default `auto`.
    pub format: ListFormat,
    /// URL lists only (an error on a file list). Default 24 h, at least 1 minute.
    pub refresh: Duration,
    /// false: plain and hosts entries match the exact name only. Default true.
    pub subdomains: bool,
    /// Line of this `[[list]]` in the file, for messages.
    pub line: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowConfig {
    /// Never blocked for anyone, with their subdomains. Normalised (see [`normalize_name`]);
    /// a leading `*.` is dropped, since it means the same thing.
    pub domains: Vec<String>,
    pub lists: Vec<ListSource>,
}

/// A `[[client]]`: a device named by its addresses, its MACs, or both (at least one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    pub name: String,
    /// A bare address becomes a /32 or /128; host bits of a CIDR are cleared. No address
    /// belongs to two clients (overlapping networks are an error), so lookup is unambiguous.
    pub addresses: Vec<IpNet>,
    /// Every address the kernel's neighbour table maps to one of these is this client. No MAC
    /// belongs to two clients.
    pub macs: Vec<Mac>,
}

/// `[clients]`: learning who a device is when no `[[client]]` address names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientDiscovery {
    /// Read MAC ↔ address pairs from the kernel's neighbour table, for `macs` and for
    /// presence. Default true.
    pub neighbours: bool,
    /// DHCP lease files (dnsmasq, ISC dhcpd, odhcpd) whose host names name the devices the
    /// config does not; resolved against the config file's directory. Default none.
    pub leases: Vec<PathBuf>,
    /// A device on the LAN with no DNS query for this long is DNS-silent. Default 30 min.
    pub silent_after: Duration,
}

impl Default for ClientDiscovery {
    fn default() -> Self {
        ClientDiscovery {
            neighbours: true,
            leases: Vec::new(),
            silent_after: Duration::from_secs(30 * 60),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupConfig {
    pub name: String,
    pub clients: Vec<ClientRef>,
    pub block: Vec<String>,
    pub observe: Vec<String>,
    /// `[[group.schedule]]`, in file order.
    pub schedules: Vec<ScheduleConfig>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DefaultPolicy {
    /// Default `["telemetry"]`.
    pub block: Vec<String>,
    /// Default empty.
    pub observe: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsConfig {
    /// `""` in the file disables the endpoint. Default `127.0.0.1:9153`.
    pub listen: Option<SocketAddr>,
    /// Distinct `client` label values; the rest count as `other`. Default 256.
    pub max_clients: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryLogConfig {
    /// Resolved against the config file's directory. Default `telesink.db`.
    pub path: PathBuf,
    /// Default `matched`.
    pub log: LogMode,
    /// At least 1. Default 30.
    pub retention_days: u32,
    /// Store the client's /24 (IPv4) or /56 (IPv6) instead of its address. Default false.
    pub anonymize: bool,
    /// Entries waiting to be written; past it they are dropped and counted. Default 16384
    /// (~3 MB): 0.16 s of rows at 100k qps, and the writer takes them every 0.1 s.
    pub queue_size: usize,
    /// `url`: the log lives in this PostgreSQL database instead of `path` (several replicas
    /// share it). `None`: SQLite at `path`.
    pub url: Option<String>,
}

/// `[addresses]` (SPEC "Telemetry addresses"). Present only when the file has the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressesConfig {
    /// Categories whose addresses are learnt; each one a [[list]] defines. Default `telemetry`.
    pub categories: Vec<String>,
    /// Resolve blocked names of those categories in the background. Default true.
    pub resolve_blocked: bool,
    /// Keep the `inet telesink` nftables table. Default off.
    pub nftables: NftMode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LogMode {
    All,
    Matched,
    None,
}

impl LogMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LogMode::All => "all",
            LogMode::Matched => "matched",
            LogMode::None => "none",
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: DEFAULT_LISTEN.iter().map(|s| s.parse().unwrap()).collect(),
            allow_networks: DEFAULT_ALLOW_NETWORKS
                .iter()
                .map(|s| s.parse().unwrap())
                .collect(),
            rate_limit_qps: 300,
            rate_limit_burst: 600,
            tcp_idle_timeout: Duration::from_secs(10),
            max_tcp_connections: 512,
            encrypted: EncryptedConfig {
                ddr: true,
                ..EncryptedConfig::default()
            },
        }
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            servers: DEFAULT_UPSTREAMS
                .iter()
                .map(|s| Upstream::Plain(s.parse().unwrap()))
                .collect(),
            timeout: Duration::from_millis(2000),
            cache_entries: 20000,
            serve_stale: Duration::from_secs(86400),
            strategy: Strategy::Ordered,
            rebind_protection: true,
            dnssec: false,
            dnssec_trust_anchor: None,
        }
    }
}

impl Default for BlockingConfig {
    fn default() -> Self {
        BlockingConfig {
            mode: BlockMode::Null,
            ttl: 10,
        }
    }
}

impl Default for DefaultPolicy {
    fn default() -> Self {
        DefaultPolicy {
            block: vec!["telemetry".to_string()],
            observe: Vec::new(),
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: Some(DEFAULT_METRICS_LISTEN.parse().unwrap()),
            max_clients: 256,
        }
    }
}

impl QueryLogConfig {
    /// The defaults, with the database next to the config file in `base_dir`.
    pub fn default_in(base_dir: &Path) -> Self {
        QueryLogConfig {
            path: base_dir.join("telesink.db"),
            log: LogMode::Matched,
            retention_days: 30,
            anonymize: false,
            queue_size: 16384,
            url: None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

impl Config {
    /// Reads, parses and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and checks `text` as if read from `path`: `path` names the file in messages and
    /// its directory is where relative paths resolve (list files must exist there).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        // An editor's byte-order mark is not a syntax error; lines still count from the top.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let raw = model::read(text, path)?;
        convert::Convert::new(text, path, base_dir_of(path)).config(raw)
    }

    /// Where telesink keeps what it writes besides the query log (downloaded URL lists): the
    /// query log's directory, which every deployment makes writable (next to the config by
    /// default, `/var/lib/telesink` under systemd, a volume in containers).
    pub fn state_dir(&self) -> PathBuf {
        match self.querylog.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => self.base_dir.clone(),
        }
    }

    /// Every category named by a list, then the built-in `bypass`, in first-seen order (the
    /// policy adds the built-in `rebind` itself).
    pub fn categories(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for list in &self.lists {
            for c in &list.categories {
                if !out.contains(c) {
                    out.push(c.clone());
                }
            }
        }
        if !out.iter().any(|c| c == BYPASS_CATEGORY) {
            out.push(BYPASS_CATEGORY.to_string());
        }
        out
    }

    /// Keys whose change a hot reload cannot apply (sockets bound, files and queues opened at
    /// start), for the reload to report "needs a restart".
    pub fn restart_required(&self, newer: &Config) -> Vec<&'static str> {
        // Everything built once at start: the listeners, the upstream pools and answer cache,
        // the metrics registry's label cap, and the query log's writer.
        let changed = [
            (self.server.listen != newer.server.listen, "server.listen"),
            (
                self.server.tcp_idle_timeout != newer.server.tcp_idle_timeout,
                "server.tcp_idle_timeout",
            ),
            (
                self.server.max_tcp_connections != newer.server.max_tcp_connections,
                "server.max_tcp_connections",
            ),
            (
                self.upstream.servers != newer.upstream.servers,
                "upstream.servers",
            ),
            (
                self.upstream.timeout != newer.upstream.timeout,
                "upstream.timeout_ms",
            ),
            (
                self.upstream.cache_entries != newer.upstream.cache_entries,
                "upstream.cache_entries",
            ),
            (
                self.upstream.serve_stale != newer.upstream.serve_stale,
                "upstream.serve_stale",
            ),
            (
                self.upstream.dnssec != newer.upstream.dnssec,
                "upstream.dnssec",
            ),
            (
                self.upstream.dnssec_trust_anchor != newer.upstream.dnssec_trust_anchor,
                "upstream.dnssec_trust_anchor",
            ),
            (
                self.metrics.listen != newer.metrics.listen,
                "metrics.listen",
            ),
            (
                self.metrics.max_clients != newer.metrics.max_clients,
                "metrics.max_clients",
            ),
            (self.querylog.path != newer.querylog.path, "querylog.path"),
            (
                self.querylog.queue_size != newer.querylog.queue_size,
                "querylog.queue_size",
            ),
            (self.querylog.log != newer.querylog.log, "querylog.log"),
            (self.querylog.url != newer.querylog.url, "querylog.url"),
            (
                self.querylog.retention_days != newer.querylog.retention_days,
                "querylog.retention_days",
            ),
            (
                self.querylog.anonymize != newer.querylog.anonymize,
                "querylog.anonymize",
            ),
            // The neighbour reader and the lease watcher start once; the lease files' contents
            // are watched and re-read without a restart.
            (
                self.client_discovery.neighbours != newer.client_discovery.neighbours,
                "clients.neighbours",
            ),
            (
                self.client_discovery.leases != newer.client_discovery.leases,
                "clients.leases",
            ),
            (
                self.client_discovery.silent_after != newer.client_discovery.silent_after,
                "clients.silent_after",
            ),
            // The learner starts with the server; a reload changes what it learns, or removes
            // the table.
            (
                self.addresses.is_none() && newer.addresses.is_some(),
                "addresses",
            ),
        ];
        changed
            .into_iter()
            .filter(|(c, _)| *c)
            .map(|(_, k)| k)
            .collect()
    }
}

/// The config file's directory, absolute, so that paths stay right if the process changes
/// directory. Not canonicalised: a Kubernetes ConfigMap mounts files through symlinks that are
/// swapped on update, and the watcher must watch the link, not today's target.
fn base_dir_of(path: &Path) -> PathBuf {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}

#[cfg(test)]
mod tests;
