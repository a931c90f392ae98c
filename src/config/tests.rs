//! The configuration's unit tests: every key, every error's file, line, key and wording.

use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("config.toml"))
}

fn ok(text: &str) -> Config {
    parse(text).unwrap_or_else(|e| panic!("expected a valid config, got: {e}"))
}

/// Asserts an `Invalid` error at `line` for `key` whose message contains every `parts`.
#[track_caller]
fn fails(text: &str, line: usize, key: &str, parts: &[&str]) -> String {
    match parse(text) {
        Ok(_) => panic!("expected an error at {line} {key}, but the config is valid"),
        Err(e @ ConfigError::Read { .. }) => panic!("unexpected read error {e}"),
        Err(ConfigError::Invalid {
            line: l,
            key: k,
            message,
            ..
        }) => {
            let shown = format!("{l}: {k}: {message}");
            assert_eq!((l, k.as_str()), (line, key), "{shown}");
            for part in parts {
                assert!(message.contains(part), "{shown}\n  lacks: {part}");
            }
            message
        }
    }
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(files: &[&str]) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "telesink-config-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        for f in files {
            let p = dir.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "example.com\n").unwrap();
        }
        TempDir(dir)
    }

    fn parse(&self, text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, &self.0.join("config.toml"))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The example block of SPEC.md ("config.toml"), verbatim.
const SPEC_EXAMPLE: &str = r#"[server]
listen = ["0.0.0.0:53", "[::]:53"]        # UDP and TCP on each address
allow_networks = ["127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12",
              "192.168.0.0/16", "fc00::/7", "fe80::/10"]   # others get REFUSED
rate_limit_qps = 300                       # per client address, with a burst; 0 = off

[upstream]
servers = ["9.9.9.9:53", "149.112.112.112:53"]   # "tls://IP:853#name" for DoT, "https://…" for DoH
timeout_ms = 2000
cache_entries = 20000

[blocking]
mode = "null"        # "null": A 0.0.0.0, AAAA ::, other types empty; "nxdomain"; "refused"
ttl = 10             # TTL of sinkhole answers and of their SOA; short, so that every retry is seen

[[list]]
name = "xiaomi"
source = "blocklists/xiaomi.txt"          # path relative to this file, or an https:// URL
categories = ["telemetry", "xiaomi"]
# format = "auto"                         # auto | domains | hosts | adblock | wildcard | dnsmasq | regex | rpz
# refresh = "24h"                         # URL lists only
# subdomains = true                       # false: plain and hosts entries match the exact name only

[allow]                                   # exceptions, never blocked for anyone
domains = []
lists = []

[[client]]                                # names used in metrics, logs and groups
name = "anna-phone"
addresses = ["192.168.1.50", "fd00::50"]

[[group]]                                 # first group (in file order) naming the client wins
name = "phones"
clients = ["anna-phone", "192.168.1.64/28"]
block = ["telemetry", "ads"]
observe = ["xiaomi"]                      # answered normally, but recorded as telemetry attempts

[default]                                 # clients in no group
block = ["telemetry"]
observe = []

[[record]]                                # local, authoritative answers
name = "nas.home.arpa"
type = "A"
value = "192.168.1.10"

[metrics]
listen = "127.0.0.1:9153"                 # GET /metrics, GET /healthz
max_clients = 256                         # distinct client label values; the rest count as "other"

[querylog]
path = "telesink.db"                      # SQLite, relative to this file
log = "matched"                           # "all" | "matched" (queries that matched a category) | "none"
retention_days = 30
anonymize = false                         # store the client's /24 (IPv4) or /56 (IPv6) network instead
"#;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

// --- defaults and the SPEC example ---------------------------------------------------

#[test]
fn empty_file_is_valid_and_uses_the_spec_defaults() {
    let c = ok("");
    assert_eq!(c.server.listen, vec![sock("0.0.0.0:53"), sock("[::]:53")]);
    assert_eq!(
        c.server.allow_networks,
        [
            "127.0.0.0/8",
            "::1/128",
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "fc00::/7",
            "fe80::/10"
        ]
        .map(net)
    );
    assert_eq!(c.server.rate_limit_qps, 300);
    assert_eq!(c.server.rate_limit_burst, 600);
    assert_eq!(c.server.tcp_idle_timeout, Duration::from_secs(10));
    assert_eq!(c.server.max_tcp_connections, 512);
    assert_eq!(
        c.upstream.servers,
        vec![
            Upstream::Plain(sock("9.9.9.9:53")),
            Upstream::Plain(sock("149.112.112.112:53"))
        ]
    );
    assert_eq!(c.upstream.timeout, Duration::from_millis(2000));
    assert_eq!(c.upstream.cache_entries, 20000);
    assert_eq!(c.upstream.serve_stale, Duration::from_secs(86400));
    assert_eq!(
        c.blocking,
        BlockingConfig {
            mode: BlockMode::Null,
            ttl: 10
        }
    );
    assert!(c.lists.is_empty() && c.clients.is_empty() && c.groups.is_empty());
    assert!(c.records.is_empty());
    assert_eq!(c.allow, AllowConfig::default());
    assert_eq!(c.default.block, vec!["telemetry"]);
    assert!(c.default.observe.is_empty());
    assert_eq!(c.metrics.listen, Some(sock("127.0.0.1:9153")));
    assert_eq!(c.metrics.max_clients, 256);
    assert_eq!(c.querylog.path, c.base_dir.join("telesink.db"));
    assert_eq!(c.querylog.log, LogMode::Matched);
    assert_eq!(c.querylog.retention_days, 30);
    assert!(!c.querylog.anonymize);
    assert_eq!(c.querylog.queue_size, 16384);
    assert!(c.warnings.is_empty());
    assert_eq!(c.categories(), vec!["bypass"]);
}

#[test]
fn spec_example_parses_and_its_values_are_the_defaults() {
    let dir = TempDir::new(&["blocklists/xiaomi.txt"]);
    let c = dir.parse(SPEC_EXAMPLE).unwrap_or_else(|e| panic!("{e}"));
    let d = dir.parse("").unwrap();
    assert_eq!(c.server, d.server);
    assert_eq!(c.upstream, d.upstream);
    assert_eq!(c.blocking, d.blocking);
    assert_eq!(c.allow, d.allow);
    assert_eq!(c.default, d.default);
    assert_eq!(c.metrics, d.metrics);
    assert_eq!(c.querylog, d.querylog);

    assert_eq!(c.base_dir, dir.0);
    let list = &c.lists[0];
    assert_eq!(list.name, "xiaomi");
    assert_eq!(
        list.source,
        ListSource::File(dir.0.join("blocklists/xiaomi.txt"))
    );
    assert_eq!(list.categories, vec!["telemetry", "xiaomi"]);
    assert_eq!((list.format.as_str(), list.subdomains), ("auto", true));
    assert_eq!(list.refresh, Duration::from_secs(86400));
    assert_eq!(list.line, 16);
    assert_eq!(
        c.clients[0].addresses,
        vec![net("192.168.1.50/32"), net("fd00::50/128")]
    );
    assert_eq!(
        c.groups[0].clients,
        vec![
            ClientRef::Name("anna-phone".into()),
            ClientRef::Net(net("192.168.1.64/28"))
        ]
    );
    assert_eq!(c.records[0].rtype, RecordKind::A);
    assert_eq!(c.records[0].ttl, 300);
    assert_eq!(c.categories(), vec!["telemetry", "xiaomi", "bypass"]);
    // The example blocks "ads", which no list in it has: allowed, with a warning.
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    let w = &c.warnings[0];
    assert_eq!((w.line, w.key.as_str()), (35, r#"group "phones".block[1]"#));
    assert!(w
        .message
        .contains("defined categories: telemetry, xiaomi, bypass"));
}

#[test]
fn error_and_warning_display_name_file_line_and_key() {
    let e = parse("[server]\nlisen = []\n").unwrap_err();
    assert!(
        e.to_string().starts_with(
            "config.toml:2: server.lisen: unknown key; did you mean \"listen\"? valid keys in \
             [server]: listen, allow_networks, rate_limit_qps, rate_limit_burst, \
             tcp_idle_timeout, max_tcp_connections"
        ),
        "{e}"
    );
    assert_eq!((e.line(), e.key()), (Some(2), Some("server.lisen")));
    let e = Config::load(Path::new("/nonexistent/telesink.toml")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("/nonexistent/telesink.toml: cannot read: "),
        "{e}"
    );
    assert_eq!(e.line(), None);
    let c = ok("[default]\nblock = [\"ads\"]\n");
    assert_eq!(
        c.warnings[0].to_string(),
        "config.toml:2: default.block[0]: no [[list]] has category \"ads\", so this matches \
         nothing; defined categories: bypass"
    );
}

// --- syntax, unknown keys, types -----------------------------------------------------

#[test]
fn syntax_errors_have_a_line() {
    fails(
        "[server]\nlisten = [\"a\"\n\n[upstream]\n",
        4,
        "TOML syntax",
        &[],
    );
    fails("a = \"unterminated\n", 1, "TOML syntax", &["string"]);
    fails(
        "[server]\nrate_limit_qps = 1\nrate_limit_qps = 2\n",
        3,
        "rate_limit_qps",
        &["set twice"],
    );
}

#[test]
fn unknown_keys_are_errors_everywhere() {
    fails(
        "lists = []\n",
        1,
        "lists",
        &[
            "did you mean \"list\"?",
            "valid top-level keys: server, upstream",
        ],
    );
    fails(
        "[upstream]\ntimeout = 5\n",
        2,
        "upstream.timeout",
        &["did you mean \"timeout_ms\"?"],
    );
    fails(
        "[blocking]\nmode = \"null\"\nmodes = 1",
        3,
        "blocking.modes",
        &["valid keys in [blocking]: mode, ttl"],
    );
    fails(
        "[[list]]\nname = \"x\"\ncategory = [\"a\"]\n",
        3,
        r#"list "x".category"#,
        &["did you mean \"categories\"?", "valid keys in [[list]]"],
    );
    fails(
        "[[client]]\nnmae = \"x\"\n",
        2,
        "client[0].nmae",
        &["did you mean \"name\"?"],
    );
    fails(
        "[querylog]\nanonymise = true\n",
        2,
        "querylog.anonymise",
        &["did you mean \"anonymize\"?"],
    );
    fails(
        "[metrics]\nport = 9\n",
        2,
        "metrics.port",
        &["valid keys in [metrics]: listen, max_clients"],
    );
    // A dotted key is a table too; its typo is still caught, at its line.
    fails(
        "server.listen = [\"127.0.0.1\"]\nserver.lsten = 1\n",
        2,
        "server.lsten",
        &[],
    );
    // The first unknown key in file order is reported, not the first alphabetically.
    fails("[server]\nzzz = 1\naaa = 2\n", 2, "server.zzz", &[]);
}

#[test]
fn wrong_types_say_what_was_expected_and_found() {
    fails(
        "[upstream]\n\ntimeout_ms = \"2000\"\n",
        3,
        "upstream.timeout_ms",
        &["expected a whole number of milliseconds, found a string (\"2000\"); write it without quotes"],
    );
    fails(
        "[server]\nrate_limit_qps = 2.5\n",
        2,
        "server.rate_limit_qps",
        &["found a decimal number (2.5)"],
    );
    fails("[[list]]\nname = \"a\"\nsource = \"https://x.org/a\"\ncategories = [\"t\"]\nsubdomains = \"no\"\n", 5, r#"list "a".subdomains"#, &["expected true or false, found a string"]);
    fails(
        "[querylog]\nanonymize = \"true\"\n",
        2,
        "querylog.anonymize",
        &["write it without quotes"],
    );
    fails(
        "[server]\nlisten = \"0.0.0.0:53\"\n",
        2,
        "server.listen",
        &[r#"expected an array of strings like ["0.0.0.0:53", "[::]:53"], found a string"#],
    );
    fails(
        "[server]\nlisten = [\"0.0.0.0:53\", 53]\n",
        2,
        "server.listen[1]",
        &["expected a string", "found a whole number (53)"],
    );
    fails(
        "server = 5\n",
        1,
        "server",
        &["expected a table [server], found a whole number (5)"],
    );
    fails(
        "[[server]]\n",
        1,
        "server",
        &["expected a table [server], found an array"],
    );
    fails("[list]\nname = \"x\"\n", 1, "list", &["write [[list]]"]);
    fails(
        "list = [1]\n",
        1,
        "list[0]",
        &["expected a [[list]] table, found a whole number"],
    );
    fails(
        "[metrics]\nlisten = 9153\n",
        2,
        "metrics.listen",
        &["expected a string like \"127.0.0.1:9153\""],
    );
}

#[test]
fn numbers_out_of_range_give_the_range() {
    fails(
        "[upstream]\ntimeout_ms = 0\n",
        2,
        "upstream.timeout_ms",
        &["0 is out of range; expected a whole number of milliseconds from 1 to 60000"],
    );
    fails(
        "[upstream]\ntimeout_ms = -5\n",
        2,
        "upstream.timeout_ms",
        &["-5 is out of range"],
    );
    fails(
        "[server]\nrate_limit_qps = 99999999999\n",
        2,
        "server.rate_limit_qps",
        &["from 0 to 4294967295"],
    );
    fails(
        "[blocking]\nttl = 2147483648\n",
        2,
        "blocking.ttl",
        &["from 0 to 2147483647"],
    );
    fails(
        "[querylog]\nretention_days = 0\n",
        2,
        "querylog.retention_days",
        &["from 1 to"],
    );
    fails(
        "[querylog]\nqueue_size = 0\n",
        2,
        "querylog.queue_size",
        &["from 1 to"],
    );
    fails(
        "[server]\nmax_tcp_connections = 0\n",
        2,
        "server.max_tcp_connections",
        &["from 1 to"],
    );
    // Hex and underscores are TOML integers too.
    assert_eq!(
        ok("[upstream]\ncache_entries = 1_000\n")
            .upstream
            .cache_entries,
        1000
    );
    assert_eq!(
        ok("[upstream]\ncache_entries = 0x10\n")
            .upstream
            .cache_entries,
        16
    );
}

// --- [server] -----------------------------------------------------------------------

#[test]
fn listen_addresses() {
    let c = ok("[server]\nlisten = [\"127.0.0.1\", \"[::1]:5353\", \"[::2]\", \"::3\"]\n");
    assert_eq!(
        c.server.listen,
        ["127.0.0.1:53", "[::1]:5353", "[::2]:53", "[::3]:53"].map(sock)
    );
    fails("[server]\nlisten = [\"0.0.0.0:53\", \"localhost:53\"]\n", 2, "server.listen[1]", &["\"localhost:53\" is not an address to listen on; expected IP:port like \"0.0.0.0:53\" or \"[::]:53\""]);
    fails(
        "[server]\nlisten = [\"0.0.0.0:0\"]\n",
        2,
        "server.listen[0]",
        &["has port 0"],
    );
    fails(
        "[server]\nlisten = [\"0.0.0.0:99999\"]\n",
        2,
        "server.listen[0]",
        &["not an address"],
    );
    fails("[server]\nlisten = []\n", 2, "server.listen", &["empty"]);
    fails(
        "[server]\nlisten = [\"127.0.0.1\",\n  \"127.0.0.1:53\"]\n",
        3,
        "server.listen[1]",
        &["127.0.0.1:53 is listed twice (also on line 2)"],
    );
}

#[test]
fn allow_networks() {
    let c = ok("[server]\nallow_networks = [\"10.0.0.1\", \"fd00::/8\", \"192.168.1.7/24\"]\n");
    assert_eq!(
        c.server.allow_networks,
        ["10.0.0.1/32", "fd00::/8", "192.168.1.0/24"].map(net)
    );
    fails(
        "[server]\nallow_networks = [\"127.0.0.0/8\", \"::1/128\",\n  \"192.168.0.0/33\"]\n",
        3,
        "server.allow_networks[2]",
        &["\"192.168.0.0/33\" is not a network; expected CIDR like 192.168.0.0/16 or fd00::/8"],
    );
    fails(
        "[server]\nallow_networks = []\n",
        2,
        "server.allow_networks",
        &["every client would be REFUSED", "\"0.0.0.0/0\""],
    );
}

#[test]
fn rate_limit_and_tcp_settings() {
    let c = ok("[server]\nrate_limit_qps = 50\n");
    assert_eq!(
        (c.server.rate_limit_qps, c.server.rate_limit_burst),
        (50, 100)
    );
    let c = ok("[server]\nrate_limit_qps = 50\nrate_limit_burst = 10\n");
    assert_eq!(c.server.rate_limit_burst, 10);
    let c = ok("[server]\nrate_limit_qps = 0\n");
    assert_eq!((c.server.rate_limit_qps, c.server.rate_limit_burst), (0, 0));
    fails(
        "[server]\nrate_limit_burst = 0\n",
        2,
        "server.rate_limit_burst",
        &["from 1 to"],
    );
    let c = ok("[server]\ntcp_idle_timeout = \"2m\"\nmax_tcp_connections = 10\n");
    assert_eq!(c.server.tcp_idle_timeout, Duration::from_secs(120));
    assert_eq!(c.server.max_tcp_connections, 10);
    fails(
        "[server]\ntcp_idle_timeout = \"0s\"\n",
        2,
        "server.tcp_idle_timeout",
        &["longer than 0"],
    );
    fails(
        "[server]\ntcp_idle_timeout = 10\n",
        2,
        "server.tcp_idle_timeout",
        &["no unit; write \"10s\""],
    );
}

// --- [upstream] ---------------------------------------------------------------------

#[test]
fn upstream_forms_and_labels() {
    let cases = [
        ("9.9.9.9", "9.9.9.9:53"),
        ("9.9.9.9:5353", "9.9.9.9:5353"),
        ("[2620:fe::fe]:53", "[2620:fe::fe]:53"),
        ("2620:fe::fe", "[2620:fe::fe]:53"),
        (
            "tls://9.9.9.9#dns.quad9.net",
            "tls://9.9.9.9:853#dns.quad9.net",
        ),
        (
            "TLS://9.9.9.9:8853#DNS.Quad9.net.",
            "tls://9.9.9.9:8853#dns.quad9.net",
        ),
        (
            "tls://[2620:fe::fe]#dns.quad9.net",
            "tls://[2620:fe::fe]:853#dns.quad9.net",
        ),
        ("tls://1.1.1.1#1.1.1.1", "tls://1.1.1.1:853#1.1.1.1"),
        (
            "https://9.9.9.9#dns.quad9.net",
            "https://9.9.9.9:443/dns-query#dns.quad9.net",
        ),
        (
            "https://9.9.9.9:8443/q#dns.quad9.net",
            "https://9.9.9.9:8443/q#dns.quad9.net",
        ),
        (
            "https://45.90.28.0/abc123#dns.nextdns.io",
            "https://45.90.28.0:443/abc123#dns.nextdns.io",
        ),
        (
            "https://[2620:fe::fe]/dns-query{?dns}#dns.quad9.net",
            "https://[2620:fe::fe]:443/dns-query#dns.quad9.net",
        ),
    ];
    for (input, label) in cases {
        let up = parse_upstream(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(up.label(), label, "{input}");
        assert_eq!(up.to_string(), label);
    }
    assert_eq!(
        parse_upstream("https://9.9.9.9/dns-query#dns.quad9.net").unwrap(),
        Upstream::Https {
            addr: sock("9.9.9.9:443"),
            server_name: "dns.quad9.net".into(),
            path: "/dns-query".into()
        }
    );
    assert_eq!(
        parse_upstream("tls://9.9.9.9#dns.quad9.net")
            .unwrap()
            .addr(),
        sock("9.9.9.9:853")
    );
}

#[test]
fn upstream_errors_say_what_is_valid() {
    let bad = |s: &str, part: &str| {
        let e = parse_upstream(s).unwrap_err();
        assert!(e.contains(part), "{s}: {e}\n  lacks: {part}");
    };
    bad("dns.google", "must be an IP address");
    bad("dns.google", "tls://IP[:port]#tls-name");
    bad("tls://9.9.9.9", "has no TLS name");
    bad(
        "https://9.9.9.9/dns-query",
        "like \"https://9.9.9.9/dns-query#dns.quad9.net\"",
    );
    bad(
        "tls://dns.quad9.net",
        "like \"tls://IP#dns.quad9.net\" with dns.quad9.net's IP",
    );
    bad(
        "https://dns.quad9.net/dns-query#9.9.9.9",
        "write \"https://9.9.9.9/dns-query#dns.quad9.net\"",
    );
    bad("http://9.9.9.9/dns-query", "plain HTTP is not supported");
    bad("quic://9.9.9.9", "unknown scheme \"quic://\"");
    bad("tls://9.9.9.9/x#dns.quad9.net", "takes no path");
    bad("https://9.9.9.9/q?x=1#dns.quad9.net", "plain path");
    bad("tls://9.9.9.9#not a name", "not a valid TLS name");
    bad("9.9.9.9:0", "port 0");
    bad("", "is not an upstream");

    fails(
        "[upstream]\nservers = [\n  \"9.9.9.9\",\n  \"tls://9.9.9.9\",\n]\n",
        4,
        "upstream.servers[1]",
        &["has no TLS name"],
    );
    fails(
        "[upstream]\nservers = [\"9.9.9.9\", \"9.9.9.9:53\"]\n",
        2,
        "upstream.servers[1]",
        &["9.9.9.9:53 is listed twice"],
    );
    fails(
        "[upstream]\nservers = []\n",
        2,
        "upstream.servers",
        &["at least one upstream"],
    );
}

#[test]
fn upstream_settings() {
    let c = ok("[upstream]\ntimeout_ms = 500\ncache_entries = 0\nserve_stale = \"0\"\n");
    assert_eq!(c.upstream.timeout, Duration::from_millis(500));
    assert_eq!(c.upstream.cache_entries, 0);
    assert_eq!(c.upstream.serve_stale, Duration::ZERO);
    // "1 day" is a duration too (the command line's parser); a calendar unit is not.
    assert_eq!(
        ok("[upstream]\nserve_stale = \"1 day\"\n")
            .upstream
            .serve_stale,
        Duration::from_secs(86400)
    );
    fails(
        "[upstream]\nserve_stale = \"1 month\"\n",
        2,
        "upstream.serve_stale",
        &["is not a duration: months and years vary in length"],
    );
}

#[test]
fn durations() {
    let d = |s| parse_duration(s);
    assert_eq!(d("24h"), Some(Duration::from_secs(86400)));
    assert_eq!(d("90m"), Some(Duration::from_secs(5400)));
    assert_eq!(d("1d"), Some(Duration::from_secs(86400)));
    assert_eq!(d("3600s"), Some(Duration::from_secs(3600)));
    assert_eq!(d("1w"), Some(Duration::from_secs(604800)));
    assert_eq!(d("250ms"), Some(Duration::from_millis(250)));
    assert_eq!(d("1h30m"), Some(Duration::from_secs(5400)));
    assert_eq!(d("0"), Some(Duration::ZERO));
    assert_eq!(d(" 2h "), Some(Duration::from_secs(7200)));
    // The same parser as the command line's (`--since 90min`): jiff's friendly format.
    assert_eq!(d("90min"), Some(Duration::from_secs(5400)));
    assert_eq!(d("1h 30m"), Some(Duration::from_secs(5400)));
    for bad in ["", "24", "h", "-1h", "1mo", "99999999999999999999d"] {
        assert_eq!(d(bad), None, "{bad:?}");
    }
    fails(
        "[upstream]\nserve_stale = \"24\"\n",
        2,
        "upstream.serve_stale",
        &["\"24\" is not a duration: 24 has no unit: write 24m (minutes), 24h (hours) or 24d (days)"],
    );
}

// --- [blocking] ---------------------------------------------------------------------

#[test]
fn blocking_modes() {
    assert_eq!(
        ok("[blocking]\nmode = \"nxdomain\"\n").blocking.mode,
        BlockMode::Nxdomain
    );
    assert_eq!(
        ok("[blocking]\nmode = \"refused\"\nttl = 0\n").blocking,
        BlockingConfig {
            mode: BlockMode::Refused,
            ttl: 0
        }
    );
    fails(
        "[blocking]\nmode = \"NXDOMAIN\"\n",
        2,
        "blocking.mode",
        &["did you mean \"nxdomain\"? valid: null, nxdomain, refused"],
    );
    fails(
        "[blocking]\nmode = \"drop\"\n",
        2,
        "blocking.mode",
        &["\"drop\" is not a blocking mode; valid: null, nxdomain, refused"],
    );
    fails(
        "[blocking]\nmode = 0\n",
        2,
        "blocking.mode",
        &["one of null, nxdomain, refused"],
    );
}

// --- [[list]] -----------------------------------------------------------------------

#[test]
fn lists_file_and_url() {
    let dir = TempDir::new(&["a.txt", "sub/b.txt"]);
    let c = dir
        .parse(
            r#"
[[list]]
name = "a"
source = "a.txt"
categories = ["telemetry", "telemetry", "xiaomi"]
format = "hosts"
subdomains = false

[[list]]
name = "b"
source = "sub/../sub/b.txt"
categories = ["ads"]

[[list]]
name = "remote.1"
source = "https://example.org/list.txt"
categories = ["ads", "smart-tv"]
refresh = "6h"
"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let [a, b, r] = &c.lists[..] else { panic!() };
    assert_eq!(a.source, ListSource::File(dir.0.join("a.txt")));
    assert_eq!(a.categories, vec!["telemetry", "xiaomi"]);
    assert_eq!(
        (a.format.as_str(), a.subdomains, a.line),
        ("hosts", false, 2)
    );
    assert_eq!(b.line, 9);
    assert_eq!(
        r.source,
        ListSource::Url("https://example.org/list.txt".into())
    );
    assert_eq!(r.refresh, Duration::from_secs(6 * 3600));
    assert_eq!(
        c.categories(),
        vec!["telemetry", "xiaomi", "ads", "smart-tv", "bypass"]
    );
    // Relative paths are relative to the config file, absolute ones stay.
    let abs = dir.0.join("a.txt");
    let text = format!(
        "[[list]]\nname = \"x\"\nsource = {:?}\ncategories = [\"t\"]\n",
        abs.display().to_string()
    );
    assert_eq!(ok(&text).lists[0].source, ListSource::File(abs));
}

#[test]
fn list_errors() {
    let dir = TempDir::new(&["a.txt"]);
    let fails_in = |text: &str, line: usize, key: &str, part: &str| match dir.parse(text) {
        Err(ConfigError::Invalid {
            line: l,
            key: k,
            message,
            ..
        }) => {
            assert_eq!((l, k.as_str()), (line, key), "{message}");
            assert!(message.contains(part), "{message}\n  lacks: {part}");
        }
        other => panic!("{other:?}"),
    };
    let list = |body: &str| format!("# lists\n[[list]]\n{body}");
    fails_in(
        &list("source = \"a.txt\"\ncategories = [\"t\"]\n"),
        2,
        "list[0].name",
        "missing; every [[list]] needs a name",
    );
    fails_in(
        &list("name = \"my list\"\nsource = \"a.txt\"\ncategories = [\"t\"]\n"),
        3,
        r#"list "my list".name"#,
        "contains ' '",
    );
    fails_in(
        &list("name = \"a\"\ncategories = [\"t\"]\n"),
        2,
        r#"list "a".source"#,
        "missing; every [[list]] needs a source",
    );
    fails_in(
        &list("name = \"a\"\nsource = \"a.txt\"\n"),
        2,
        r#"list "a".categories"#,
        "missing; every [[list]] needs categories",
    );
    fails_in(
        &list("name = \"a\"\nsource = \"a.txt\"\ncategories = []\n"),
        5,
        r#"list "a".categories"#,
        "expected at least one",
    );
    fails_in(
        &list("name = \"a\"\nsource = \"a.txt\"\ncategories = [\"Xiaomi\"]\n"),
        5,
        r#"list "a".categories[0]"#,
        "write \"xiaomi\"",
    );
    fails_in(
        &list("name = \"a\"\nsource = \"a.txt\"\ncategories = [\"a b\"]\n"),
        5,
        r#"list "a".categories[0]"#,
        "not a category name",
    );
    fails_in(
        &list("name = \"a\"\nsource = \"missing.txt\"\ncategories = [\"t\"]\n"),
        4,
        r#"list "a".source"#,
        &format!(
            "missing.txt (resolved {}) does not exist",
            dir.0.join("missing.txt").display()
        ),
    );
    fails_in(
        &list("name = \"a\"\nsource = \".\"\ncategories = [\"t\"]\n"),
        4,
        r#"list "a".source"#,
        "is a directory",
    );
    fails_in(
        &list("name = \"a\"\nsource = \"http://x.org/l.txt\"\ncategories = [\"t\"]\n"),
        4,
        r#"list "a".source"#,
        "write \"https://x.org/l.txt\"",
    );
    // Plain HTTP from this machine cannot be altered on the way: a local mirror may use it.
    for url in [
        "http://127.0.0.1:8080/l.txt",
        "http://[::1]/l.txt",
        "http://localhost/l.txt",
    ] {
        let c = dir
            .parse(&list(&format!(
                "name = \"a\"\nsource = \"{url}\"\ncategories = [\"t\"]\n"
            )))
            .unwrap();
        assert_eq!(c.lists[0].source, ListSource::Url(url.to_string()));
    }
    fails_in(
        &list("name = \"a\"\nsource = \"http://10.0.0.1/l.txt\"\ncategories = [\"t\"]\n"),
        4,
        r#"list "a".source"#,
        "plain HTTP",
    );
    fails_in(
        &list("name = \"a\"\nsource = \"ftp://x.org/l.txt\"\ncategories = [\"t\"]\n"),
        4,
        r#"list "a".source"#,
        "ftp:// is not supported",
    );
    fails_in(
        &list("name = \"a\"\nsource = \"https://\"\ncategories = [\"t\"]\n"),
        4,
        r#"list "a".source"#,
        "not a valid URL",
    );
    fails_in(&list("name = \"a\"\nsource = \"a.txt\"\ncategories = [\"t\"]\nformat = \"host\"\n"), 6, r#"list "a".format"#,
        "\"host\" is not a list format; did you mean \"hosts\"? valid: auto, domains, hosts, adblock, wildcard, dnsmasq, regex, rpz");
    fails_in(
        &list("name = \"a\"\nsource = \"a.txt\"\ncategories = [\"t\"]\nrefresh = \"1h\"\n"),
        6,
        r#"list "a".refresh"#,
        "only URL lists are refreshed",
    );
    fails_in(
        &list(
            "name = \"a\"\nsource = \"https://x.org/l\"\ncategories = [\"t\"]\nrefresh = \"30s\"\n",
        ),
        6,
        r#"list "a".refresh"#,
        "at least \"1m\"",
    );
    fails_in(&list("name = \"a\"\nsource = \"https://x.org/l\"\ncategories = [\"t\"]\nrefresh = \"24 parsecs\"\n"), 6, r#"list "a".refresh"#,
        "\"24 parsecs\" is not a duration: expected a number and a unit (ms, s, m, h, d or w)");
    fails_in(
        "[[list]]\nname = \"a\"\nsource = \"a.txt\"\ncategories = [\"t\"]\n\n[[list]]\nname = \"a\"\nsource = \"a.txt\"\ncategories = [\"t\"]\n",
        7,
        r#"list "a".name"#,
        "another [[list]] is named \"a\" (line 2); list names are unique",
    );
}

#[test]
fn at_most_128_categories() {
    // 126 of the file's own, then the built-in "bypass" (and "rebind", which the policy adds).
    let cats: Vec<String> = (0..126).map(|i| format!("\"c{i}\"")).collect();
    let text = format!(
        "[[list]]\nname = \"a\"\nsource = \"https://x.org/a\"\ncategories = [{}]\n",
        cats.join(", ")
    );
    assert_eq!(ok(&text).categories().len(), 127);
    let text = format!("{text}[[list]]\nname = \"b\"\nsource = \"https://x.org/b\"\ncategories = [\"c1\", \"one-more\"]\n");
    fails(
        &text,
        8,
        r#"list "b".categories[1]"#,
        &["category number 129; at most 128"],
    );
}

// --- [allow] ------------------------------------------------------------------------

#[test]
fn allow_domains_are_normalised() {
    let c = ok("[allow]\ndomains = [\"Ok.Example.COM.\", \"*.cdn.example.net\", \"bücher.example\", \"ok.example.com\", \"_dns.resolver.arpa\"]\n");
    assert_eq!(
        c.allow.domains,
        vec![
            "ok.example.com",
            "cdn.example.net",
            "xn--bcher-kva.example",
            "_dns.resolver.arpa"
        ]
    );
    fails(
        "[allow]\ndomains = [\"a.com\", \"bad..name\"]\n",
        2,
        "allow.domains[1]",
        &["empty label"],
    );
    fails(
        "[allow]\ndomains = [\"a b.com\"]\n",
        2,
        "allow.domains[0]",
        &["contains ' '"],
    );
    fails(
        "[allow]\ndomains = [\"\"]\n",
        2,
        "allow.domains[0]",
        &["is empty"],
    );
    fails(
        "[allow]\nlists = [\"nope.txt\"]\n",
        2,
        "allow.lists[0]",
        &["does not exist"],
    );
    let c = ok("[allow]\nlists = [\"https://x.org/allow.txt\"]\n");
    assert_eq!(
        c.allow.lists,
        vec![ListSource::Url("https://x.org/allow.txt".into())]
    );
}

#[test]
fn normalize_name_rules() {
    assert_eq!(
        normalize_name("Tracking.MIUI.com.").unwrap(),
        "tracking.miui.com"
    );
    assert_eq!(
        normalize_name("Bücher.example").unwrap(),
        "xn--bcher-kva.example"
    );
    assert_eq!(
        normalize_name(&format!("{}.com", "a".repeat(63)))
            .unwrap()
            .len(),
        67
    );
    assert!(normalize_name(&format!("{}.com", "a".repeat(64))).is_err());
    assert!(normalize_name(&["abcdefghi"; 26].join(".")).is_err()); // 259 bytes
    assert!(normalize_name(".").is_err());
    assert!(normalize_name("*.x.com").is_err());
}

// --- [[client]] ---------------------------------------------------------------------

#[test]
fn clients() {
    let c = ok("[[client]]\nname = \"tv\"\naddresses = [\"192.168.1.60\", \"fd00::60\", \"10.0.0.9/30\", \"192.168.1.60\"]\n");
    assert_eq!(
        c.clients[0].addresses,
        ["192.168.1.60/32", "fd00::60/128", "10.0.0.8/30"].map(net)
    );
    let client =
        |name: &str, addrs: &str| format!("[[client]]\nname = \"{name}\"\naddresses = [{addrs}]\n");
    fails(
        &client("tv", ""),
        3,
        r#"client "tv".addresses"#,
        &["empty; expected at least one address"],
    );
    fails(
        "[[client]]\nname = \"tv\"\n",
        1,
        r#"client "tv".addresses"#,
        &["missing; every [[client]] needs addresses"],
    );
    fails(
        &client("tv", "\"192.168.1.300\""),
        3,
        r#"client "tv".addresses[0]"#,
        &["\"192.168.1.300\" is not an address; expected an IP like 192.168.1.50"],
    );
    fails(
        &client("10.0.0.1", "\"10.0.0.1\""),
        2,
        r#"client "10.0.0.1".name"#,
        &["looks like an address"],
    );
    fails(
        &client("other", "\"10.0.0.1\""),
        2,
        r#"client "other".name"#,
        &["reserved"],
    );
    fails(
        &format!(
            "{}{}",
            client("tv", "\"10.0.0.1\""),
            client("tv", "\"10.0.0.2\"")
        ),
        5,
        r#"client "tv".name"#,
        &["another [[client]] is named \"tv\" (line 2)"],
    );
    fails(
        &format!("{}\n{}", client("anna-phone", "\"192.168.1.50\""), client("guests", "\"10.0.0.0/8\", \"192.168.1.0/24\"")),
        7,
        r#"client "guests".addresses[1]"#,
        &["192.168.1.0/24 overlaps 192.168.1.50/32 of client \"anna-phone\" (line 3); an address belongs to one client"],
    );
    // The later of the two is the one at fault, whichever is wider.
    fails(
        &format!(
            "{}{}",
            client("lan", "\"192.168.1.0/24\""),
            client("tv", "\"fd00::1\", \"192.168.1.9\"")
        ),
        6,
        r#"client "tv".addresses[1]"#,
        &["192.168.1.9/32 overlaps 192.168.1.0/24 of client \"lan\" (line 3)"],
    );
    fails(
        &format!(
            "{}{}",
            client("a", "\"fd00::1\""),
            client("b", "\"fd00::1\"")
        ),
        6,
        r#"client "b".addresses[0]"#,
        &["overlaps fd00::1/128 of client \"a\""],
    );
    // Disjoint neighbours, and a client's own overlapping entries, are fine.
    ok(&format!(
        "{}{}",
        client("a", "\"10.0.0.0/25\", \"10.0.0.0/24\""),
        client("b", "\"10.0.1.0/24\", \"10.0.0.0/8\"").replace("\"10.0.0.0/8\"", "\"10.0.2.1\"")
    ));
}

// --- [[group]] and [default] --------------------------------------------------------

const CLIENTS: &str = "[[client]]\nname = \"anna-phone\"\naddresses = [\"192.168.1.50\"]\n[[client]]\nname = \"tv\"\naddresses = [\"192.168.1.60\"]\n[[list]]\nname = \"l\"\nsource = \"https://x.org/l\"\ncategories = [\"telemetry\", \"ads\"]\n";

#[test]
fn groups() {
    let c = ok(&format!("{CLIENTS}[[group]]\nname = \"phones\"\nclients = [\"anna-phone\", \"192.168.1.64/28\", \"10.0.0.1\", \"anna-phone\"]\nblock = [\"telemetry\"]\nobserve = [\"ads\", \"bypass\"]\n"));
    let g = &c.groups[0];
    assert_eq!(
        g.clients,
        vec![
            ClientRef::Name("anna-phone".into()),
            ClientRef::Net(net("192.168.1.64/28")),
            ClientRef::Net(net("10.0.0.1/32"))
        ]
    );
    assert_eq!(
        (g.block.clone(), g.observe.clone()),
        (
            vec!["telemetry".to_string()],
            vec!["ads".to_string(), "bypass".to_string()]
        )
    );
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);

    fails(
        &format!("{CLIENTS}[[group]]\nname = \"phones\"\nclients = [\"anna-phon\"]\n"),
        13,
        r#"group "phones".clients[0]"#,
        &["no [[client]] named \"anna-phon\" and not an address or CIDR; did you mean \"anna-phone\"? defined clients: anna-phone, tv"],
    );
    fails(
        "[[group]]\nname = \"g\"\nclients = [\"x\"]\n",
        3,
        r#"group "g".clients[0]"#,
        &["no [[client]] named \"x\" and not an address or CIDR; no [[client]] is defined"],
    );
    fails(
        "[[group]]\nname = \"g\"\n[[group]]\nname = \"g\"\n",
        4,
        r#"group "g".name"#,
        &["another [[group]] is named \"g\" (line 2)"],
    );
    fails(
        "[[group]]\nclients = []\n",
        1,
        "group[0].name",
        &["missing"],
    );
    fails(
        "[[group]]\nname = \"g\"\nblock = [\"Ads\"]\n",
        3,
        r#"group "g".block[0]"#,
        &["write \"ads\""],
    );
}

#[test]
fn undefined_categories_and_shadowed_clients_are_warnings() {
    let c = ok(&format!(
        "{CLIENTS}[[group]]\nname = \"phones\"\nclients = [\"anna-phone\"]\nblock = [\"telemetery\"]\n\
         [[group]]\nname = \"tvs\"\nclients = [\"tv\", \"anna-phone\"]\n[default]\nobserve = [\"nope\"]\n"
    ));
    let w: Vec<(usize, &str, &str)> = c
        .warnings
        .iter()
        .map(|w| (w.line, w.key.as_str(), w.message.as_str()))
        .collect();
    assert_eq!(w.len(), 3, "{w:?}");
    assert_eq!((w[0].0, w[0].1), (14, r#"group "phones".block[0]"#));
    assert!(
        w[0].2
            .contains("did you mean \"telemetry\"? defined categories: telemetry, ads, bypass"),
        "{}",
        w[0].2
    );
    assert_eq!((w[1].0, w[1].1), (17, r#"group "tvs".clients[1]"#));
    assert!(
        w[1].2
            .contains("already in group \"phones\" (line 13), which comes first and wins"),
        "{}",
        w[1].2
    );
    assert_eq!((w[2].0, w[2].1), (19, "default.observe[0]"));
    // The group keeps the category: a list may name it later (hot reload).
    assert_eq!(c.groups[0].block, vec!["telemetery"]);
}

#[test]
fn default_policy() {
    let c = ok("[default]\nobserve = [\"bypass\"]\n");
    assert_eq!(c.default.block, vec!["telemetry"]);
    assert_eq!(c.default.observe, vec!["bypass"]);
    assert!(ok("[default]\nblock = []\n").default.block.is_empty());
    fails(
        "[default]\nblock = \"telemetry\"\n",
        2,
        "default.block",
        &["expected an array of strings"],
    );
    fails(
        "[default]\nclients = []\n",
        2,
        "default.clients",
        &["valid keys in [default]: block, observe"],
    );
}

// --- [[record]] ---------------------------------------------------------------------

fn record(name: &str, kind: &str, value: &str) -> String {
    format!("[[record]]\nname = {name:?}\ntype = {kind:?}\nvalue = {value:?}\n")
}

#[test]
fn records_are_checked_and_normalised_per_type() {
    let cases = [
        (
            "nas.home.arpa",
            "A",
            "192.168.1.10",
            "nas.home.arpa",
            RecordKind::A,
            "192.168.1.10",
        ),
        (
            "NAS.home.arpa.",
            "aaaa",
            "FD00:0::10",
            "nas.home.arpa",
            RecordKind::Aaaa,
            "fd00::10",
        ),
        (
            "files.home.arpa",
            "CNAME",
            "NAS.Home.Arpa.",
            "files.home.arpa",
            RecordKind::Cname,
            "nas.home.arpa",
        ),
        (
            "home.arpa",
            "TXT",
            " v=spf1 -all",
            "home.arpa",
            RecordKind::Txt,
            " v=spf1 -all",
        ),
        (
            "home.arpa",
            "MX",
            "10  Mail.home.arpa",
            "home.arpa",
            RecordKind::Mx,
            "10 mail.home.arpa",
        ),
        ("home.arpa", "MX", "0 .", "home.arpa", RecordKind::Mx, "0 ."),
        (
            "_sip._udp.home.arpa",
            "SRV",
            "0 5 5060 sip.home.arpa",
            "_sip._udp.home.arpa",
            RecordKind::Srv,
            "0 5 5060 sip.home.arpa",
        ),
        (
            "192.168.1.10",
            "PTR",
            "nas.home.arpa",
            "10.1.168.192.in-addr.arpa",
            RecordKind::Ptr,
            "nas.home.arpa",
        ),
        (
            "fd00::1",
            "PTR",
            "nas.home.arpa",
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa",
            RecordKind::Ptr,
            "nas.home.arpa",
        ),
        (
            "10.1.168.192.in-addr.arpa",
            "PTR",
            "nas.home.arpa",
            "10.1.168.192.in-addr.arpa",
            RecordKind::Ptr,
            "nas.home.arpa",
        ),
    ];
    for (name, kind, value, want_name, want_kind, want_value) in cases {
        let c = ok(&record(name, kind, value));
        let r = &c.records[0];
        assert_eq!(
            (
                r.name.as_str(),
                r.rtype,
                r.value.to_string().as_str(),
                r.ttl
            ),
            (want_name, want_kind, want_value, 300),
            "{name} {kind} {value}"
        );
    }
    assert_eq!(
        ok(&format!("{}ttl = 60\n", record("a.lan", "A", "10.0.0.1"))).records[0].ttl,
        60
    );
}

#[test]
fn record_errors() {
    let at = |kind: &str, value: &str, part: &str| {
        fails(
            &format!("\n{}", record("x.lan", kind, value)),
            5,
            r#"record "x.lan".value"#,
            &[part],
        );
    };
    at(
        "A",
        "192.168.1.300",
        "\"192.168.1.300\" is not a valid A value: expected an IPv4 address like 192.168.1.10",
    );
    at("A", "fd00::1", "expected an IPv4 address");
    at("AAAA", "192.168.1.1", "expected an IPv6 address");
    at("CNAME", "not a name", "expected a domain name");
    at("MX", "mail.lan", "expected \"preference host\"");
    at(
        "MX",
        "70000 mail.lan",
        "preference \"70000\" is not a whole number from 0 to 65535",
    );
    at(
        "SRV",
        "0 5 sip.lan",
        "expected \"priority weight port target\"",
    );
    at("SRV", "0 5 x sip.lan", "port \"x\"");
    fails(
        &record("x.lan", "HTTPS", "1 . alpn=h2"),
        3,
        r#"record "x.lan".type"#,
        &["\"HTTPS\" is not a supported record type; valid: A, AAAA, CNAME, TXT, MX, PTR, SRV"],
    );
    fails(
        &record("x.lan", "AAA", "fd00::1"),
        3,
        r#"record "x.lan".type"#,
        &["did you mean"],
    );
    fails(
        &record("bad name", "A", "10.0.0.1"),
        2,
        r#"record "bad name".name"#,
        &["contains ' '"],
    );
    fails(
        "[[record]]\nname = \"x.lan\"\ntype = \"A\"\n",
        1,
        r#"record "x.lan".value"#,
        &["missing; every [[record]] needs a value"],
    );
    fails(
        "[[record]]\nname = \"x.lan\"\nvalue = \"10.0.0.1\"\n",
        1,
        r#"record "x.lan".type"#,
        &["missing", "A, AAAA"],
    );
    fails(
        &format!(
            "{}{}",
            record("x.lan", "A", "10.0.0.1"),
            record("X.lan.", "A", "10.0.0.1")
        ),
        5,
        r#"record "X.lan.""#,
        &["the same A record as on line 1"],
    );
    fails(
        &format!(
            "{}{}",
            record("x.lan", "A", "10.0.0.1"),
            record("x.lan", "CNAME", "y.lan")
        ),
        5,
        r#"record "x.lan".type"#,
        &["a CNAME must be the only record at its name"],
    );
    fails(
        &format!(
            "{}{}",
            record("x.lan", "CNAME", "y.lan"),
            record("x.lan", "TXT", "hi")
        ),
        5,
        r#"record "x.lan".type"#,
        &["already has a record on line 1"],
    );
    // Several A records at one name are a round robin, not a conflict.
    assert_eq!(
        ok(&format!(
            "{}{}",
            record("x.lan", "A", "10.0.0.1"),
            record("x.lan", "A", "10.0.0.2")
        ))
        .records
        .len(),
        2
    );
}

// --- [metrics] and [querylog] -------------------------------------------------------

#[test]
fn metrics_settings() {
    assert_eq!(ok("[metrics]\nlisten = \"\"\n").metrics.listen, None);
    assert_eq!(
        ok("[metrics]\nlisten = \"0.0.0.0\"\n").metrics.listen,
        Some(sock("0.0.0.0:9153"))
    );
    assert_eq!(
        ok("[metrics]\nlisten = \"[::1]:9100\"\nmax_clients = 0\n").metrics,
        MetricsConfig {
            listen: Some(sock("[::1]:9100")),
            max_clients: 0
        }
    );
    fails(
        "[metrics]\nlisten = \"localhost:9153\"\n",
        2,
        "metrics.listen",
        &["\"\" to turn metrics off"],
    );
}

#[test]
fn querylog_settings() {
    let c = ok("[querylog]\npath = \"data/q.db\"\nlog = \"all\"\nretention_days = 7\nanonymize = true\nqueue_size = 10\n");
    assert_eq!(c.querylog.path, c.base_dir.join("data/q.db"));
    assert_eq!(
        (
            c.querylog.log,
            c.querylog.retention_days,
            c.querylog.anonymize,
            c.querylog.queue_size
        ),
        (LogMode::All, 7, true, 10)
    );
    assert_eq!(
        ok("[querylog]\nlog = \"none\"\n").querylog.log,
        LogMode::None
    );
    assert_eq!(
        ok("[querylog]\npath = \"/var/lib/telesink/q.db\"\n")
            .querylog
            .path,
        PathBuf::from("/var/lib/telesink/q.db")
    );
    fails(
        "[querylog]\npath = \"\"\n",
        2,
        "querylog.path",
        &["log = \"none\""],
    );
    fails(
        "[querylog]\nlog = \"matching\"\n",
        2,
        "querylog.log",
        &["did you mean \"matched\"? valid: all, matched, none"],
    );
}

// --- whole-file behaviour -----------------------------------------------------------

#[test]
fn bom_and_crlf_keep_line_numbers() {
    fails(
        "\u{feff}[server]\r\n\r\nlisen = 1\r\n",
        3,
        "server.lisen",
        &[],
    );
}

#[test]
fn base_dir_is_the_config_files_directory() {
    let c = Config::parse("", Path::new("/etc/telesink/config.toml")).unwrap();
    assert_eq!(c.base_dir, Path::new("/etc/telesink"));
    assert_eq!(c.path, Path::new("/etc/telesink/config.toml"));
    assert_eq!(c.querylog.path, Path::new("/etc/telesink/telesink.db"));
    let c = ok("");
    assert!(c.base_dir.is_absolute());
    assert_eq!(c.base_dir, std::env::current_dir().unwrap());
}

#[test]
fn restart_required_names_what_a_reload_cannot_change() {
    let a = ok("");
    let b = ok("[server]\nlisten = [\"127.0.0.1:5353\"]\nrate_limit_qps = 1\n[metrics]\nlisten = \"\"\n[querylog]\npath = \"x.db\"\nretention_days = 2\n");
    assert_eq!(
        a.restart_required(&b),
        vec![
            "server.listen",
            "metrics.listen",
            "querylog.path",
            "querylog.retention_days"
        ]
    );
    assert!(a.restart_required(&ok("[blocking]\nttl = 1\n")).is_empty());
}

// --- fixtures ----------------------------------------------------------------------

fn fixtures() -> PathBuf {
    // file!() is relative to the crate root in the crate, and absolute where a scratch
    // crate includes this file by #[path].
    let file = Path::new(file!());
    let me = if file.is_absolute() {
        file.to_path_buf()
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(file)
    };
    // src/config/tests.rs → the crate root.
    me.ancestors().nth(3).unwrap().join("tests/fixtures/config")
}

#[test]
fn full_fixture_sets_every_key() {
    let path = fixtures().join("full.toml");
    let c = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let dir = fixtures();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(
        c.server.listen,
        ["127.0.0.1:5353", "[::1]:5353", "127.0.0.2:53"].map(sock)
    );
    assert_eq!(c.server.allow_networks.len(), 4);
    assert_eq!(
        (c.server.rate_limit_qps, c.server.rate_limit_burst),
        (50, 80)
    );
    assert_eq!(
        (c.server.tcp_idle_timeout, c.server.max_tcp_connections),
        (Duration::from_secs(15), 128)
    );
    let labels: Vec<String> = c.upstream.servers.iter().map(Upstream::label).collect();
    assert_eq!(
        labels,
        [
            "9.9.9.9:53",
            "[2620:fe::fe]:53",
            "tls://9.9.9.9:853#dns.quad9.net",
            "https://149.112.112.112:443/dns-query#dns.quad9.net"
        ]
    );
    assert_eq!(
        (
            c.upstream.timeout,
            c.upstream.cache_entries,
            c.upstream.serve_stale
        ),
        (
            Duration::from_millis(1500),
            5000,
            Duration::from_secs(12 * 3600)
        )
    );
    assert_eq!(
        c.blocking,
        BlockingConfig {
            mode: BlockMode::Nxdomain,
            ttl: 60
        }
    );
    assert_eq!(c.lists.len(), 2);
    assert_eq!(
        c.lists[0].source,
        ListSource::File(dir.join("lists/telemetry.txt"))
    );
    assert_eq!(
        (c.lists[0].format.as_str(), c.lists[0].subdomains),
        ("domains", false)
    );
    assert_eq!(
        (c.lists[1].format.as_str(), c.lists[1].refresh),
        ("adblock", Duration::from_secs(6 * 3600))
    );
    assert_eq!(c.categories(), vec!["telemetry", "xiaomi", "ads", "bypass"]);
    assert_eq!(
        c.allow.domains,
        vec!["ok.example.com", "cdn.example.net", "xn--bcher-kva.example"]
    );
    assert_eq!(
        c.allow.lists,
        vec![
            ListSource::File(dir.join("lists/allow.txt")),
            ListSource::Url("https://lists.example.org/allow.txt".into())
        ]
    );
    assert_eq!(c.clients.len(), 2);
    assert_eq!(
        c.clients[0].macs,
        vec!["3c:2e:f9:12:34:56".parse::<Mac>().unwrap()]
    );
    assert_eq!(
        c.client_discovery,
        ClientDiscovery {
            neighbours: false,
            leases: vec![
                PathBuf::from("/var/lib/misc/dnsmasq.leases"),
                dir.join("odhcpd.leases")
            ],
            silent_after: Duration::from_secs(3600),
        }
    );
    assert_eq!(c.groups.len(), 2);
    assert_eq!(c.default.observe, vec!["ads"]);
    assert_eq!(c.records.len(), 7);
    assert_eq!(
        c.metrics,
        MetricsConfig {
            listen: Some(sock("127.0.0.1:9154")),
            max_clients: 64
        }
    );
    assert_eq!(
        c.querylog,
        QueryLogConfig {
            path: dir.join("data/telesink.db"),
            log: LogMode::All,
            retention_days: 7,
            anonymize: true,
            queue_size: 1024,
            url: None,
        }
    );
}

/// Every `invalid_*.toml` fixture states the error it must give in its header:
/// `# expect-line: N`, `# expect-key: KEY`, `# expect-message: part of the message`.
#[test]
fn invalid_fixtures_fail_where_their_header_says() {
    let mut seen = 0;
    let mut entries: Vec<_> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !(name.starts_with("invalid_") && name.ends_with(".toml")) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let header = |field: &str| -> String {
            let prefix = format!("# expect-{field}: ");
            text.lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .unwrap_or_else(|| panic!("{name} has no {prefix}"))
                .to_string()
        };
        let (line, key, message) = (header("line"), header("key"), header("message"));
        match Config::load(&path) {
            Err(ConfigError::Invalid {
                line: l,
                key: k,
                message: m,
                path: p,
            }) => {
                assert_eq!(p, path);
                assert_eq!(
                    (l.to_string(), k.as_str()),
                    (line, key.as_str()),
                    "{name}: {m}"
                );
                assert!(m.contains(&message), "{name}: {m}\n  lacks: {message}");
            }
            other => panic!("{name}: expected an Invalid error, got {other:?}"),
        }
        seen += 1;
    }
    assert!(seen >= 10, "only {seen} invalid fixtures found");
}

// --- [[client]] macs and [clients] (devices) ------------------------------------------

#[test]
fn clients_by_mac() {
    let c = ok("[[client]]\nname = \"anna-phone\"\nmacs = [\"3C:2E:F9:12:34:56\", \"3c-2e-f9-12-34-57\", \"3c:2e:f9:12:34:56\"]\n\n[[client]]\nname = \"tv\"\naddresses = [\"192.168.1.60\"]\nmacs = [\"00:11:22:33:44:55\"]\n");
    assert_eq!(c.clients[0].addresses, vec![]);
    assert_eq!(
        c.clients[0]
            .macs
            .iter()
            .map(Mac::to_string)
            .collect::<Vec<_>>(),
        ["3c:2e:f9:12:34:56", "3c:2e:f9:12:34:57"]
    );
    assert_eq!(c.clients[1].addresses, ["192.168.1.60/32"].map(net));
    assert_eq!(
        c.clients[1].macs,
        vec!["00:11:22:33:44:55".parse::<Mac>().unwrap()]
    );
    // A client named only by its MAC can be put in a group by name.
    let c = ok("[[client]]\nname = \"p\"\nmacs = [\"3c:2e:f9:12:34:56\"]\n[[group]]\nname = \"g\"\nclients = [\"p\"]\n");
    assert_eq!(c.groups[0].clients, vec![ClientRef::Name("p".into())]);
}

#[test]
fn mac_errors_name_file_line_key_and_an_example() {
    let e = parse(
        "[[client]]\nname = \"p\"\nmacs = [\n  \"3c:2e:f9:12:34:56\",\n  \"3c:2e:f9:12:34\",\n]\n",
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "config.toml:5: client \"p\".macs[1]: '3c:2e:f9:12:34' is not a MAC address; write six \
         two-digit hex bytes, e.g. \"3c:2e:f9:12:34:56\""
    );
    fails(
        "[[client]]\nname = \"p\"\nmacs = [\"zz:2e:f9:12:34:56\"]\n",
        3,
        r#"client "p".macs[0]"#,
        &["is not a MAC address", "e.g. \"3c:2e:f9:12:34:56\""],
    );
    fails(
        "[[client]]\nname = \"p\"\nmacs = \"3c:2e:f9:12:34:56\"\n",
        3,
        r#"client "p".macs"#,
        &[r#"expected an array of strings like ["3c:2e:f9:12:34:56"], found a string"#],
    );
    fails(
        "[[client]]\nname = \"p\"\nmacs = [0x3c2ef9123456]\n",
        3,
        r#"client "p".macs[0]"#,
        &["expected a string, as in [\"3c:2e:f9:12:34:56\"], found a whole number"],
    );
    fails(
        "[[client]]\nname = \"p\"\nmacs = []\n",
        3,
        r#"client "p".macs"#,
        &["empty; expected at least one MAC address"],
    );
    // An empty list is fine when the other names the device.
    ok("[[client]]\nname = \"p\"\naddresses = []\nmacs = [\"3c:2e:f9:12:34:56\"]\n");
    fails(
        "[[client]]\nname = \"p\"\n",
        1,
        r#"client "p".addresses"#,
        &["missing; every [[client]] needs addresses, macs or both"],
    );
    fails(
        "[[client]]\nname = \"a\"\nmacs = [\"3c:2e:f9:12:34:56\"]\n[[client]]\nname = \"b\"\nmacs = [\"3C-2E-F9-12-34-56\"]\n",
        6,
        r#"client "b".macs[0]"#,
        &["3c:2e:f9:12:34:56 is already client \"a\"'s (line 3)"],
    );
    fails(
        "[[client]]\nname = \"p\"\nmac = [\"3c:2e:f9:12:34:56\"]\n",
        3,
        r#"client "p".mac"#,
        &[
            "did you mean \"macs\"?",
            "valid keys in [[client]]: name, addresses, macs",
        ],
    );
}

#[test]
fn clients_table_defaults_and_values() {
    let c = ok("");
    assert_eq!(c.client_discovery, ClientDiscovery::default());
    assert!(c.client_discovery.neighbours);
    assert!(c.client_discovery.leases.is_empty());
    assert_eq!(c.client_discovery.silent_after, Duration::from_secs(1800));

    let dir = TempDir::new(&[]);
    let c = dir
        .parse("[clients]\nneighbours = false\nleases = [\"dnsmasq.leases\", \"/var/lib/misc/dnsmasq.leases\", \"dnsmasq.leases\"]\nsilent_after = \"45m\"\n")
        .unwrap();
    assert!(!c.client_discovery.neighbours);
    assert_eq!(
        c.client_discovery.leases,
        vec![
            dir.0.join("dnsmasq.leases"),
            PathBuf::from("/var/lib/misc/dnsmasq.leases")
        ]
    );
    assert_eq!(
        c.client_discovery.silent_after,
        Duration::from_secs(45 * 60)
    );
}

#[test]
fn clients_table_errors() {
    fails(
        "[clients]\nneighbors = true\n",
        2,
        "clients.neighbors",
        &[
            "did you mean \"neighbours\"?",
            "valid keys in [clients]: neighbours, leases, silent_after",
        ],
    );
    fails(
        "[clients]\nneighbours = \"yes\"\n",
        2,
        "clients.neighbours",
        &["expected true or false, found a string (\"yes\")"],
    );
    fails(
        "[clients]\nleases = \"/var/lib/misc/dnsmasq.leases\"\n",
        2,
        "clients.leases",
        &["expected an array of strings like [\"/var/lib/misc/dnsmasq.leases\"]"],
    );
    fails(
        "[clients]\nleases = [\"\"]\n",
        2,
        "clients.leases[0]",
        &["empty; expected the path of a DHCP lease file"],
    );
    fails(
        "[clients]\nsilent_after = 30\n",
        2,
        "clients.silent_after",
        &["found a whole number (30) with no unit; write \"30s\" for seconds"],
    );
    fails(
        "[clients]\nsilent_after = \"soon\"\n",
        2,
        "clients.silent_after",
        &["\"soon\" is not a duration"],
    );
    fails(
        "[[clients]]\nneighbours = true\n",
        1,
        "clients",
        &["expected a table [clients], found an array"],
    );
    // "client" and "clients" are both top-level keys; a near miss of either is named.
    fails(
        "[clientss]\n",
        1,
        "clientss",
        &["did you mean \"clients\"?"],
    );
}

#[test]
fn shipped_config_parses_and_its_commented_keys_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped = std::fs::read_to_string(root.join("config.toml")).unwrap();
    Config::parse(&shipped, &root.join("config.toml")).unwrap();
    // The commented [clients] and macs examples, uncommented, are a valid configuration.
    let text: String = shipped
        .lines()
        .map(|l| {
            for key in [
                "# [[client]]",
                "# name = \"anna-phone\"",
                "# addresses = [",
                "# macs",
                "# [clients]",
                "# neighbours",
                "# leases",
                "# silent_after",
            ] {
                if l.starts_with(key) {
                    return l.trim_start_matches("# ").to_string();
                }
            }
            l.to_string()
        })
        .collect::<Vec<_>>()
        .join("\n");
    let c = Config::parse(&text, &root.join("config.toml")).unwrap();
    assert!(
        c.clients.iter().any(|c| !c.macs.is_empty()),
        "no macs example"
    );
    assert!(
        !c.client_discovery.leases.is_empty(),
        "no [clients] example"
    );
}

#[test]
fn date_times_are_named_as_such() {
    fails(
        "[server]\nlisten = 1979-05-27T07:32:00Z\n",
        2,
        "server.listen",
        &["found a date-time (1979-05-27T07:32:00Z)"],
    );
    fails(
        "server = 1979-05-27T07:32:00Z\n",
        1,
        "server",
        &["expected a table, found a date-time"],
    );
    fails(
        "[clients]\nsilent_after = 07:32:00\n",
        2,
        "clients.silent_after",
        &[
            "expected a duration like \"3600s\"",
            "found a date-time (07:32:00)",
        ],
    );
}

// --- [[forward]], upstream.strategy, upstream.rebind_protection ------------------------

#[test]
fn forward_strategy_and_rebind_protection() {
    let c = ok("");
    assert_eq!(c.upstream.strategy, Strategy::Ordered);
    assert!(c.upstream.rebind_protection);
    assert!(c.forwards.is_empty());
    let c = ok("[upstream]\nstrategy = \"fastest\"\nrebind_protection = false\n\n\
                [[forward]]\ndomains = [\"Fritz.Box.\", \"*.lan\"]\nservers = [\"192.168.178.1\"]\n");
    assert_eq!(c.upstream.strategy, Strategy::Fastest);
    assert!(!c.upstream.rebind_protection);
    assert_eq!(c.forwards[0].domains, vec!["fritz.box", "lan"]);
    assert_eq!(
        c.forwards[0].servers,
        vec![Upstream::Plain("192.168.178.1:53".parse().unwrap())]
    );
    fails(
        "[upstream]\nstrategy = \"random\"\n",
        2,
        "upstream.strategy",
        &["\"random\"", "ordered", "fastest", "parallel"],
    );
    fails(
        "[upstream]\nrebind_protection = \"yes\"\n",
        2,
        "upstream.rebind_protection",
        &["true or false"],
    );
    fails(
        "[[forward]]\nservers = [\"192.168.1.1\"]\n",
        1,
        "forward[0].domains",
        &["missing"],
    );
    fails(
        "[[forward]]\ndomains = []\nservers = [\"192.168.1.1\"]\n",
        2,
        "forward[0].domains",
        &["empty"],
    );
    fails(
        "[[forward]]\ndomains = [\"lan\"]\nservers = [\"192.168.1.1\", \"192.168.1.1:53\"]\n",
        3,
        "forward[0].servers[1]",
        &["twice"],
    );
    fails(
        "[[forward]]\ndomains = [\"lan\"]\nservers = [\"192.168.1.1\"]\nserver = []\n",
        4,
        "forward[0].server",
        &["servers"],
    );
}

#[test]
fn group_schedules() {
    use crate::policy::schedule::{Days, Minute, Window};
    let base = "[[group]]\nname = \"kids\"\nclients = [\"10.0.0.5\"]\n";
    let c = ok(&format!(
        "{base}[[group.schedule]]\ndays = [\"fri\", \"SAT\"]\nfrom = \"21:00\"\nto = \"07:00\"\nblock = [\"social\"]\n\
         [[group.schedule]]\nfrom = \"00:00\"\nto = \"24:00\"\nobserve = [\"games\"]\n"
    ));
    let s = &c.groups[0].schedules;
    assert_eq!(s.len(), 2);
    let fri_sat = Days::NONE
        .with(jiff::civil::Weekday::Friday)
        .with(jiff::civil::Weekday::Saturday);
    assert_eq!(
        s[0].window,
        Window {
            days: fri_sat,
            from: Minute::parse("21:00", false).unwrap(),
            to: Minute::parse("07:00", true).unwrap(),
        }
    );
    assert_eq!(s[0].block, vec!["social".to_string()]);
    assert_eq!(s[1].window.days, Days::ALL, "days left out: every day");
    assert_eq!(s[1].window.to, Minute::END_OF_DAY);
    assert_eq!(s[1].observe, vec!["games".to_string()]);

    fails(
        &format!("{base}[[group.schedule]]\ndays = [\"mon\", \"funday\"]\nfrom = \"21:00\"\nto = \"07:00\"\n"),
        5,
        "group \"kids\".schedule[0].days[1]",
        &["\"funday\" is not a day", "mon, tue"],
    );
    fails(
        &format!("{base}[[group.schedule]]\ndays = []\nfrom = \"21:00\"\nto = \"07:00\"\n"),
        5,
        "group \"kids\".schedule[0].days",
        &["empty"],
    );
    fails(
        &format!("{base}[[group.schedule]]\nfrom = \"24:00\"\nto = \"07:00\"\n"),
        5,
        "group \"kids\".schedule[0].from",
        &["\"24:00\" is not a time of day", "23:59"],
    );
    fails(
        &format!("{base}[[group.schedule]]\nfrom = \"21:00\"\n"),
        4,
        "group \"kids\".schedule[0].to",
        &["missing"],
    );
    fails(
        &format!("{base}[[group.schedule]]\nfrom = \"21:00\"\nto = \"07:00\"\nblok = []\n"),
        7,
        "group \"kids\".schedule[0].blok",
        &["unknown key", "did you mean \"block\""],
    );
}

#[test]
fn upstream_dnssec() {
    let c = ok("");
    assert!(!c.upstream.dnssec, "off by default");
    assert_eq!(c.upstream.dnssec_trust_anchor, None);
    assert!(ok("[upstream]\ndnssec = true\n").upstream.dnssec);
    fails(
        "[upstream]\ndnssec = \"yes\"\n",
        2,
        "upstream.dnssec",
        &["true or false"],
    );
    fails(
        "[upstream]\ndnssec = true\ndnssec_trust_anchor = \"/nonexistent/anchor.key\"\n",
        3,
        "upstream.dnssec_trust_anchor",
        &["/nonexistent/anchor.key", "cannot read"],
    );
}

/// `[querylog] url`: a PostgreSQL database instead of `path`; not both, and only postgres://.
#[test]
fn querylog_url() {
    let c = ok("[querylog]\nurl = \"postgres://telesink@db.example:5433/telesink\"\n");
    assert_eq!(
        c.querylog.url.as_deref(),
        Some("postgres://telesink@db.example:5433/telesink")
    );
    fails(
        "[querylog]\npath = \"q.db\"\nurl = \"postgres://telesink@db/telesink\"\n",
        3,
        "querylog.url",
        &["both path and url are set"],
    );
    fails(
        "[querylog]\nlog = \"all\"\nurl = \"mysql://db/telesink\"\n",
        3,
        "querylog.url",
        &["is not a PostgreSQL URL", "postgres://"],
    );
    fails(
        "[querylog]\nurl = \"postgres://db:notaport/telesink\"\n",
        2,
        "querylog.url",
        &["not a valid PostgreSQL URL"],
    );
}
