//! The model's value types. Each reads itself from any TOML value ([`Raw`], through
//! `#[serde(try_from = "Raw")]`) and parses the text once, into the type its consumer uses
//! (an address, a duration, a MAC, an [`Upstream`]); a value of the wrong type or form is
//! refused with what was expected and found.

use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::errors;
use super::model::{drain, drain_map};
use super::values::{check_category, check_ident, parse_host_port, parse_net, parse_upstream};
use super::{
    BlockMode, ListFormat, LogMode, Mac, NftMode, RecordKind, Strategy, Upstream, MAX_TTL,
};

// ---------------------------------------------------------------------------------------------
// Any value, for messages
// ---------------------------------------------------------------------------------------------

/// Any TOML value, kept as far as an error message needs it. Every value type below is read
/// through it (`#[serde(try_from = "Raw")]`), so a wrong type is described the same way
/// everywhere.
#[derive(Debug, Clone)]
pub(super) enum Raw {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Datetime(String),
    Array,
    Table,
}

/// The key toml uses to pass a date-time through serde.
pub(super) const TOML_DATETIME: &str = "$__toml_private_datetime";

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Raw;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Raw, E> {
                Ok(Raw::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Raw, E> {
                Ok(Raw::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Raw, E> {
                Ok(Raw::Int(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Raw, E> {
                Ok(Raw::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Raw, E> {
                Ok(Raw::Str(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Raw, E> {
                Ok(Raw::Str(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Raw, A::Error> {
                drain(seq)?;
                Ok(Raw::Array)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Raw, A::Error> {
                Raw::from_map(map)
            }
        }
        d.deserialize_any(V)
    }
}

impl Raw {
    /// A table, or a date-time (which toml passes through serde as a one-key table).
    pub(super) fn from_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Raw, A::Error> {
        let first = map.next_key::<String>()?;
        if first.as_deref() == Some(TOML_DATETIME) {
            let d: String = map.next_value()?;
            drain_map(map)?;
            return Ok(Raw::Datetime(d));
        }
        if first.is_some() {
            map.next_value::<IgnoredAny>()?;
        }
        drain_map(map)?;
        Ok(Raw::Table)
    }

    /// How the value is described after "found".
    fn describe(&self) -> String {
        match self {
            Raw::Str(s) => {
                let shown: String = s.chars().take(60).collect();
                if shown.len() < s.len() {
                    format!("a string ({shown:?}…)")
                } else {
                    format!("a string ({shown:?})")
                }
            }
            Raw::Int(i) => format!("a whole number ({i})"),
            Raw::Float(f) => format!("a decimal number ({f})"),
            Raw::Bool(b) => format!("{b}"),
            Raw::Datetime(d) => format!("a date-time ({d})"),
            Raw::Array => "an array".to_string(),
            Raw::Table => "a table".to_string(),
        }
    }

    /// "expected …, found …", with a hint when only the quotes are wrong.
    pub(super) fn mismatch(&self, expected: &str) -> String {
        let mut msg = format!("expected {expected}, found {}", self.describe());
        if let Raw::Str(s) = self {
            let bare = s.trim();
            if bare.parse::<i64>().is_ok() || bare == "true" || bare == "false" {
                msg.push_str("; write it without quotes");
            }
        }
        msg
    }

    /// The string, or "expected `expected`, found …".
    fn text(self, expected: &str) -> Result<String, String> {
        match self {
            Raw::Str(s) => Ok(s),
            other => Err(other.mismatch(expected)),
        }
    }

    /// A whole number in `lo..=hi`; the error gives the range.
    fn uint(self, what: &str, lo: u64, hi: u64) -> Result<u64, String> {
        match self {
            Raw::Int(i) if i >= 0 && (lo..=hi).contains(&(i as u64)) => Ok(i as u64),
            Raw::Int(i) => Err(format!(
                "{i} is out of range; expected {what} from {lo} to {hi}"
            )),
            other => Err(other.mismatch(what)),
        }
    }

    /// One of `valid` (compared as `fold` makes them); the error lists them.
    fn choice<T: Copy>(
        self,
        what: &str,
        valid: &[(&str, T)],
        fold: fn(&str) -> String,
    ) -> Result<T, String> {
        let names: Vec<&str> = valid.iter().map(|(n, _)| *n).collect();
        let s = self.text(&format!("a string, one of {}", names.join(", ")))?;
        let folded = fold(&s);
        match valid.iter().find(|(n, _)| *n == folded) {
            Some((_, v)) => Ok(*v),
            None => Err(format!(
                "{s:?} is not a {what}; {}valid: {}",
                errors::hint(&s, &names),
                names.join(", ")
            )),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------------------------
/// A value that can be an element of an [`Array`]: how such an array looks, for messages.
pub(super) trait Leaf {
    const EXAMPLE: &'static str;
}

/// A whole number in a range, named for its key's message.
macro_rules! uint {
    ($($(#[$m:meta])* $name:ident($t:ty) in $lo:literal ..= $hi:expr, $what:literal;)*) => {$(
        $(#[$m])*
        #[derive(Debug, Clone, Copy, Deserialize)]
        #[serde(try_from = "Raw")]
        pub(super) struct $name(pub $t);

        impl TryFrom<Raw> for $name {
            type Error = String;
            fn try_from(r: Raw) -> Result<Self, String> {
                r.uint($what, $lo, $hi as u64).map(|n| $name(n as $t))
            }
        }
    )*};
}

uint! {
    Qps(u32) in 0..=u32::MAX, "a whole number of queries per second per client (0 = no limit)";
    Burst(u32) in 1..=u32::MAX, "a whole number of queries";
    TcpConnections(usize) in 1..=1_000_000, "a whole number of connections";
    TimeoutMs(u64) in 1..=60_000, "a whole number of milliseconds";
    CacheEntries(usize) in 0..=100_000_000, "a whole number of cached answers (0 = no cache)";
    Ttl(u32) in 0..=MAX_TTL, "a whole number of seconds";
    MaxClients(usize) in 0..=1_000_000, "a whole number of distinct client labels";
    RetentionDays(u32) in 1..=36_500, "a whole number of days";
    QueueSize(usize) in 1..=16_777_216, "a whole number of entries";
}

/// A string value whose checks need nothing else: `$name(String)`, built by `$check`.
macro_rules! text {
    ($($(#[$m:meta])* $name:ident, $expected:literal, $example:literal, $check:expr;)*) => {$(
        $(#[$m])*
        #[derive(Debug, Clone, Deserialize)]
        #[serde(try_from = "Raw")]
        pub(super) struct $name(pub String);

        impl TryFrom<Raw> for $name {
            type Error = String;
            fn try_from(r: Raw) -> Result<Self, String> {
                let s = r.text($expected)?;
                let check: fn(String) -> Result<String, String> = $check;
                check(s).map($name)
            }
        }

        impl Leaf for $name {
            const EXAMPLE: &'static str = $example;
        }
    )*};
}

text! {
    ListName, "a string like name = \"xiaomi\"", "", |s| check_ident("list", &s).map(|()| s);
    GroupName, "a string like name = \"phones\"", "", |s| check_ident("group", &s).map(|()| s);
    /// Checked against addresses and reserved names in [`super::convert`].
    ClientName, "a string like name = \"anna-phone\"", "", |s| check_ident("client", &s).map(|()| s);
    Category, "a string, as in [\"telemetry\", \"xiaomi\"]", r#"["telemetry", "xiaomi"]"#,
        |s| check_category(&s).map(|()| s);
    /// A path or URL; checked on disk by [`super::files`].
    Source,
        "a path relative to this file or an https:// URL, like source = \"blocklists/xiaomi.txt\"",
        "", Ok;
    AllowSource, "a string, as in [\"allowlists/mine.txt\"]", r#"["allowlists/mine.txt"]"#, Ok;
    /// A `[[client]]` name or an address; told apart once the clients are known.
    Member, "a string, as in [\"anna-phone\", \"192.168.1.64/28\"]",
        r#"["anna-phone", "192.168.1.64/28"]"#, Ok;
    /// A domain, or an address for a PTR record: read with the record's type.
    RecordName, "a domain name like name = \"nas.home.arpa\"", "", Ok;
    /// Read with the record's type.
    RecordText, "a string, like value = \"192.168.1.10\"", "", Ok;
    LeasePath, "a string, as in [\"/var/lib/misc/dnsmasq.leases\"]",
        r#"["/var/lib/misc/dnsmasq.leases"]"#, |s| if s.trim().is_empty() {
            Err("empty; expected the path of a DHCP lease file".to_string())
        } else {
            Ok(s)
        };
    AnchorPath, "a file path like \"example.test.key\"", "", |s| if s.trim().is_empty() {
            Err("empty; expected the path of a file of DNSKEY records (leave the key out for the IANA root)".to_string())
        } else {
            Ok(s)
        };
    /// `server.tls_cert` / `server.tls_key`: read by [`crate::tls`].
    TlsFile, "a file path like \"tls/fullchain.pem\"", "", |s| if s.trim().is_empty() {
            Err("empty; expected a PEM file path like \"tls/fullchain.pem\"".to_string())
        } else {
            Ok(s)
        };
    /// `server.tls_name`: the devices' names end with it.
    TlsName, "a domain name like \"dns.home.example\"", "", |s| {
            let n = s.trim().trim_end_matches('.').to_ascii_lowercase();
            let ok = !n.is_empty()
                && n.contains('.')
                && n.split('.').all(|l| !l.is_empty() && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
            if ok { Ok(n) } else {
                Err(format!("{s:?} is not a domain name; expected a name like \"dns.home.example\" that your certificate covers"))
            }
        };
    LogPath, "a file path like \"telesink.db\"", "", |s| if s.trim().is_empty() {
            Err("empty; expected a file path like \"telesink.db\" (to keep no log, set log = \"none\")".to_string())
        } else {
            Ok(s)
        };
    /// `querylog.url`: a PostgreSQL connection URL, checked whole by tokio-postgres.
    PgUrl, "a URL like \"postgres://telesink@db.example/telesink\"", "", |s| {
            let t = s.trim();
            if !(t.starts_with("postgres://") || t.starts_with("postgresql://")) {
                Err(format!("{t:?} is not a PostgreSQL URL; expected \"postgres://USER@HOST/DATABASE\" (for a SQLite file, use path instead)"))
            } else if let Err(e) = t.parse::<tokio_postgres::Config>() {
                Err(format!("not a valid PostgreSQL URL ({e}); expected \"postgres://USER:PASSWORD@HOST:PORT/DATABASE\""))
            } else {
                Ok(t.to_string())
            }
        };
}

/// A weekday of `[[group.schedule]] days`: `mon` … `sun`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "Raw")]
pub(super) struct Day(pub jiff::civil::Weekday);

impl TryFrom<Raw> for Day {
    type Error = String;
    fn try_from(r: Raw) -> Result<Self, String> {
        use crate::policy::schedule::Days;
        let valid: Vec<(&str, jiff::civil::Weekday)> = Days::NAMES
            .iter()
            .map(|n| (*n, Days::parse_day(n).expect("a day name")))
            .collect();
        r.choice("day", &valid, |s| s.trim().to_ascii_lowercase())
            .map(Day)
    }
}

impl Leaf for Day {
    const EXAMPLE: &'static str = r#"["mon", "tue", "wed", "thu", "fri"]"#;
}

/// A time of day, `"HH:MM"`: parsed by [`super::convert`], which knows whether it is a `to`
/// (which may be `"24:00"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "Raw")]
pub(super) struct ClockText(pub String);

impl TryFrom<Raw> for ClockText {
    type Error = String;
    fn try_from(r: Raw) -> Result<Self, String> {
        r.text("a time of day like \"21:00\"").map(ClockText)
    }
}

/// `true` or `false`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "Raw")]
pub(super) struct Flag(pub bool);

impl TryFrom<Raw> for Flag {
    type Error = String;
    fn try_from(r: Raw) -> Result<Self, String> {
        match r {
            Raw::Bool(b) => Ok(Flag(b)),
            other => Err(other.mismatch("true or false")),
        }
    }
}

/// A duration, `"90m"` (see [`crate::duration`]).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "Raw")]
pub(super) struct Length(pub Duration);

impl TryFrom<Raw> for Length {
    type Error = String;
    fn try_from(r: Raw) -> Result<Self, String> {
        const FORMS: &str = "a duration like \"3600s\", \"90m\", \"24h\" or \"1d\"";
        match r {
            Raw::Str(s) => crate::duration::parse(&s)
                .map(Length)
                .map_err(|e| format!("{s:?} is not a duration: {e}")),
            Raw::Int(i) => Err(format!(
                "expected {FORMS}, found a whole number ({i}) with no unit; write \"{i}s\" for seconds"
            )),
            other => Err(other.mismatch(FORMS)),
        }
    }
}

/// A `server.tls_listen` / `server.https_listen` address: IP and port, both written out (DoT
/// is 853 and DoH 443 by convention, so no default port could serve both).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "Raw")]
pub(super) struct TlsListenAddr(pub SocketAddr);

impl Leaf for TlsListenAddr {
    const EXAMPLE: &'static str = r#"["0.0.0.0:853", "[::]:853"]"#;
}

impl TryFrom<Raw> for TlsListenAddr {
    type Error = String;
    fn try_from(r: Raw) -> Result<Self, String> {
        let s = r.text("a string, as in [\"0.0.0.0:853\", \"[::]:853\"]")?;
        match s.trim().parse::<SocketAddr>() {
            Ok(a) if a.port() != 0 => Ok(TlsListenAddr(a)),
            _ => Err(format!(
                "{s:?} is not an address to listen on; expected IP:port like \"0.0.0.0:853\" or \"[::]:443\""
            )),
        }
    }
}

/// A `server.listen` address; port 53 when left out.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "Raw")]
pub(super) struct ListenAddr(pub SocketAddr);

impl Leaf for ListenAddr {
    const EXAMPLE: &'static str = r#"["0.0.0.0:53", "[::]:53"]"#;
}

impl TryFrom<Raw> for ListenAddr {
    type Error = String;
    fn try_from(r: Raw) -> Result<Self, String> {
        let s = r.text("a string, as in [\"0.0.0.0:53\", \"[::]:53\"]")?;
        parse_host_port(s.trim(), 53)
            .map(ListenAddr)
            .ok_or_else(|| {
                let what = if s.trim().parse::<SocketAddr>().is_ok_and(|a| a.port() == 0) {
                    "has port 0"
                } else {
                    "is not an address to listen on"
                };
                format!(
                    "{s:?} {what}; expected IP:port like \"0.0.0.0:53\" or \"[::]:53\" (port 53 \
                 when left out)"
                )
            })
    }
}

/// A `server.allow_networks` entry.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "Raw")]
pub(super) struct AllowNet(pub IpNet);

impl Leaf for AllowNet {
    const EXAMPLE: &'static str = r#"["192.168.0.0/16", "fd00::/8"]"#;
}

impl TryFrom<Raw> for AllowNet {
    type Error = String;
    fn try_from(r: Raw) -> Result<Self, String> {
        let s = r.text("a string, as in [\"192.168.0.0/16\", \"fd00::/8\"]")?;
        parse_net(s.trim()).map(AllowNet).ok_or_else(|| {
            format!(
                "{s:?} is not a network; expected CIDR like 192.168.0.0/16 or fd00::/8, or a \
                 single address"
            )
        })
    }
}

/// A `[[client]].addresses` entry.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "Raw")]
pub(super) struct ClientNet(pub IpNet);

impl Leaf for ClientNet {
    const EXAMPLE: &'static str = r#"["192.168.1.50", "fd00::50"]"#;
}

impl TryFrom<Raw> for ClientNet {
    type Error = String;
    fn try_from(r: Raw) -> Result<Self, String> {
        let s = r.text("a string, as in [\"192.168.1.50\", \"fd00::50\"]")?;
        parse_net(s.trim()).map(ClientNet).ok_or_else(|| {
            format!(
                "{s:?} is not an address; expected an IP like 192.168.1.50 or fd00::50, or a \
                 CIDR like 192.168.1.64/28"
            )
        })
    }
}

/// A `[[client]].macs` entry.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "Raw")]
pub(super) struct MacAddr(pub Mac);

impl Leaf for MacAddr {
    const EXAMPLE: &'static str = r#"["3c:2e:f9:12:34:56"]"#;
}

impl TryFrom<Raw> for MacAddr {
    type Error = String;
    fn try_from(r: Raw) -> Result<Self, String> {
        let s = r.text("a string, as in [\"3c:2e:f9:12:34:56\"]")?;
        s.trim().parse().map(MacAddr).map_err(|e| e.to_string())
    }
}

/// An `[allow].domains` entry, normalised; a leading `*.` means the same and is dropped.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "Raw")]
pub(super) struct AllowDomain(pub String);

impl Leaf for AllowDomain {
    const EXAMPLE: &'static str = r#"["example.com", "cdn.example.net"]"#;
}

impl TryFrom<Raw> for AllowDomain {
    type Error = String;
    fn try_from(r: Raw) -> Result<Self, String> {
        let s = r.text("a string, as in [\"example.com\", \"cdn.example.net\"]")?;
        let bare = s.trim();
        let bare = bare.strip_prefix("*.").unwrap_or(bare);
        super::normalize_name(bare).map(AllowDomain)
    }
}

/// `metrics.listen`: an address, or `""` for no endpoint.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "Raw")]
pub(super) struct MetricsListen(pub Option<SocketAddr>);

impl TryFrom<Raw> for MetricsListen {
    type Error = String;
    fn try_from(r: Raw) -> Result<Self, String> {
        let s = r.text("a string like \"127.0.0.1:9153\", or \"\" to turn metrics off")?;
        if s.trim().is_empty() {
            return Ok(MetricsListen(None));
        }
        parse_host_port(s.trim(), 9153)
            .map(|a| MetricsListen(Some(a)))
            .ok_or_else(|| {
                format!(
                    "{s:?} is not an address; expected IP:port like \"127.0.0.1:9153\" or \
                     \"[::]:9153\", or \"\" to turn metrics off"
                )
            })
    }
}

impl Leaf for Upstream {
    const EXAMPLE: &'static str = r#"["9.9.9.9:53", "tls://9.9.9.9:853#dns.quad9.net"]"#;
}

impl TryFrom<Raw> for Upstream {
    type Error = String;
    fn try_from(r: Raw) -> Result<Self, String> {
        let s = r.text("a string, as in [\"9.9.9.9:53\", \"tls://9.9.9.9:853#dns.quad9.net\"]")?;
        parse_upstream(&s)
    }
}

impl<'de> Deserialize<'de> for BlockMode {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        const MODES: [(&str, BlockMode); 3] = [
            ("null", BlockMode::Null),
            ("nxdomain", BlockMode::Nxdomain),
            ("refused", BlockMode::Refused),
        ];
        Raw::deserialize(d)?
            .choice("blocking mode", &MODES, str::to_string)
            .map_err(de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for LogMode {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        const MODES: [(&str, LogMode); 3] = [
            ("all", LogMode::All),
            ("matched", LogMode::Matched),
            ("none", LogMode::None),
        ];
        Raw::deserialize(d)?
            .choice("query log mode", &MODES, str::to_string)
            .map_err(de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for ListFormat {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let valid = ListFormat::ALL.map(|f| (f.as_str(), f));
        Raw::deserialize(d)?
            .choice("list format", &valid, str::to_string)
            .map_err(de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for RecordKind {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let valid = RecordKind::ALL.map(|k| (k.as_str(), k));
        Raw::deserialize(d)?
            .choice("supported record type", &valid, |s| {
                s.trim().to_ascii_uppercase()
            })
            .map_err(de::Error::custom)
    }
}

/// A `[[forward]]` domain, normalised; a leading `*.` means the same and is dropped.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "Raw")]
pub(super) struct ForwardDomain(pub String);

impl Leaf for ForwardDomain {
    const EXAMPLE: &'static str = r#"["fritz.box", "178.168.192.in-addr.arpa"]"#;
}

impl TryFrom<Raw> for ForwardDomain {
    type Error = String;
    fn try_from(r: Raw) -> Result<Self, String> {
        let s = r.text("a string, as in [\"fritz.box\", \"178.168.192.in-addr.arpa\"]")?;
        let bare = s.trim();
        let bare = bare.strip_prefix("*.").unwrap_or(bare);
        super::normalize_name(bare).map(ForwardDomain)
    }
}

impl<'de> Deserialize<'de> for Strategy {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let valid = Strategy::ALL.map(|s| (s.as_str(), s));
        Raw::deserialize(d)?
            .choice("upstream strategy", &valid, str::to_string)
            .map_err(de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for NftMode {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let valid = NftMode::ALL.map(|m| (m.as_str(), m));
        Raw::deserialize(d)?
            .choice("nftables mode", &valid, str::to_string)
            .map_err(de::Error::custom)
    }
}
