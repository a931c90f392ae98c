//! The file's shape, as serde reads it.
//!
//! Every table is a struct with `deny_unknown_fields`, so an unknown key is an error (its
//! message is given the did-you-mean hint in [`super::errors`]). Every key is optional here; the
//! defaults and the checks that need more than one value are [`super::convert`]'s. Each value is
//! a type that reads itself from any TOML value ([`Raw`]) and, when it cannot, says what was
//! expected and what was found ("expected a whole number of milliseconds, found a string
//! ("2000"); write it without quotes"): serde's generic "invalid type" wording never reaches a
//! user. Values kept with [`Spanned`] are the ones a later check points at.

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use serde::de::{self, DeserializeOwned, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

use super::errors;
use super::values::{check_category, check_ident, parse_host_port, parse_net, parse_upstream};
use super::{BlockMode, ConfigError, ListFormat, LogMode, Mac, RecordKind, Upstream, MAX_TTL};

/// Parses `text` into the model; errors name the file, line and key.
pub(super) fn read(text: &str, path: &Path) -> Result<RawConfig, ConfigError> {
    let doc = toml::de::DeTable::parse(text).map_err(|e| errors::syntax(path, text, &e))?;
    let de = toml::de::Deserializer::parse(text).map_err(|e| errors::syntax(path, text, &e))?;
    RawConfig::deserialize(de).map_err(|e| errors::from_serde(path, text, doc.get_ref(), &e))
}

// ---------------------------------------------------------------------------------------------
// Tables
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub server: Option<Section<RawServer>>,
    pub upstream: Option<Section<RawUpstream>>,
    pub blocking: Option<Section<RawBlocking>>,
    pub list: Option<Tables<RawList>>,
    pub allow: Option<Section<RawAllow>>,
    pub client: Option<Tables<RawClient>>,
    pub clients: Option<Section<RawClients>>,
    pub group: Option<Tables<RawGroup>>,
    pub default: Option<Section<RawDefault>>,
    pub record: Option<Tables<RawRecord>>,
    pub metrics: Option<Section<RawMetrics>>,
    pub querylog: Option<Section<RawQueryLog>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub listen: Option<Spanned<Array<ListenAddr>>>,
    pub allow_networks: Option<Spanned<Array<AllowNet>>>,
    pub rate_limit_qps: Option<Qps>,
    pub rate_limit_burst: Option<Burst>,
    pub tcp_idle_timeout: Option<Spanned<Length>>,
    pub max_tcp_connections: Option<TcpConnections>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub servers: Option<Spanned<Array<Upstream>>>,
    pub timeout_ms: Option<TimeoutMs>,
    pub cache_entries: Option<CacheEntries>,
    pub serve_stale: Option<Length>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBlocking {
    pub mode: Option<BlockMode>,
    pub ttl: Option<Ttl>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawList {
    pub name: Option<Spanned<ListName>>,
    pub source: Option<Spanned<Source>>,
    pub categories: Option<Spanned<Array<Category>>>,
    pub format: Option<ListFormat>,
    pub refresh: Option<Spanned<Length>>,
    pub subdomains: Option<Flag>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAllow {
    pub domains: Option<Array<AllowDomain>>,
    pub lists: Option<Array<AllowSource>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClient {
    pub name: Option<Spanned<ClientName>>,
    pub addresses: Option<Spanned<Array<ClientNet>>>,
    pub macs: Option<Spanned<Array<MacAddr>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClients {
    pub neighbours: Option<Flag>,
    pub leases: Option<Array<LeasePath>>,
    pub silent_after: Option<Spanned<Length>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGroup {
    pub name: Option<Spanned<GroupName>>,
    pub clients: Option<Array<Member>>,
    pub block: Option<Array<Category>>,
    pub observe: Option<Array<Category>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDefault {
    pub block: Option<Array<Category>>,
    pub observe: Option<Array<Category>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRecord {
    pub name: Option<Spanned<RecordName>>,
    #[serde(rename = "type")]
    pub rtype: Option<RecordKind>,
    pub value: Option<Spanned<RecordText>>,
    pub ttl: Option<Ttl>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub listen: Option<MetricsListen>,
    pub max_clients: Option<MaxClients>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawQueryLog {
    pub path: Option<LogPath>,
    pub log: Option<LogMode>,
    pub retention_days: Option<RetentionDays>,
    pub anonymize: Option<Flag>,
    pub queue_size: Option<QueueSize>,
}

/// What a table is called in the file, for "expected a table [server]" and "write [[list]]".
pub(super) trait Named {
    const NAME: &'static str;
}

macro_rules! named {
    ($($t:ty => $n:literal),* $(,)?) => {
        $(impl Named for $t { const NAME: &'static str = $n; })*
    };
}

named!(
    RawServer => "server", RawUpstream => "upstream", RawBlocking => "blocking",
    RawList => "list", RawAllow => "allow", RawClient => "client", RawClients => "clients",
    RawGroup => "group", RawDefault => "default", RawRecord => "record",
    RawMetrics => "metrics", RawQueryLog => "querylog",
);

// ---------------------------------------------------------------------------------------------
// Containers that say what they expected
// ---------------------------------------------------------------------------------------------

/// A `[name]` table.
#[derive(Debug, Default)]
pub(super) struct Section<T>(pub T);

/// The `[[name]]` tables, in file order, each with its span (its header's line).
#[derive(Debug)]
pub(super) struct Tables<T>(pub Vec<Spanned<Entry<T>>>);

/// One `[[name]]` table.
#[derive(Debug)]
pub(super) struct Entry<T>(pub T);

/// An array of values, each kept as written with its span: an element's type is checked by
/// [`Array::items`], where its own line and key (`server.listen[1]`) can be named (toml gives
/// an error inside an array the array's span).
#[derive(Debug)]
pub(super) struct Array<T>(pub Vec<Spanned<Raw>>, PhantomData<T>);

impl<T: TryFrom<Raw, Error = String>> Array<T> {
    /// The elements as `T`, each with its span and key path `k[i]`; the first that is not a
    /// `T` is the error, with its span and key.
    pub(super) fn items(&self, k: &str) -> Result<Vec<(T, Range<usize>, String)>, (String, Range<usize>, String)> {
        self.0
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let key = format!("{k}[{i}]");
                match T::try_from(v.get_ref().clone()) {
                    Ok(t) => Ok((t, v.span(), key)),
                    Err(m) => Err((m, v.span(), key)),
                }
            })
            .collect()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// "found …" for a value a visitor did not expect.
fn unexpected<E: de::Error>(expected: &str, found: Raw) -> E {
    E::custom(found.mismatch(expected))
}

/// Implements the scalar visits of a container visitor as "expected …, found …" errors.
macro_rules! reject_scalars {
    () => {
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Err(unexpected(&self.expected(), Raw::Bool(v)))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Err(unexpected(&self.expected(), Raw::Int(v)))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Err(unexpected(&self.expected(), Raw::Int(v as i64)))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Err(unexpected(&self.expected(), Raw::Float(v)))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Err(unexpected(&self.expected(), Raw::Str(v.to_string())))
        }
    };
}

struct SectionVisitor<T>(PhantomData<T>);

impl<T: Named> SectionVisitor<T> {
    fn expected(&self) -> String {
        format!("a table [{}]", T::NAME)
    }
}

impl<'de, T: Named + DeserializeOwned> Visitor<'de> for SectionVisitor<T> {
    type Value = Section<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(&self.expected())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Section)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        drain(seq)?;
        Err(unexpected(&self.expected(), Raw::Array))
    }

    reject_scalars!();
}

impl<'de, T: Named + DeserializeOwned> Deserialize<'de> for Section<T> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SectionVisitor(PhantomData))
    }
}

struct EntryVisitor<T>(PhantomData<T>);

impl<T: Named> EntryVisitor<T> {
    fn expected(&self) -> String {
        format!("a [[{}]] table", T::NAME)
    }
}

impl<'de, T: Named + DeserializeOwned> Visitor<'de> for EntryVisitor<T> {
    type Value = Entry<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(&self.expected())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Entry)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        drain(seq)?;
        Err(unexpected(&self.expected(), Raw::Array))
    }

    reject_scalars!();
}

impl<'de, T: Named + DeserializeOwned> Deserialize<'de> for Entry<T> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(EntryVisitor(PhantomData))
    }
}

struct TablesVisitor<T>(PhantomData<T>);

impl<T: Named> TablesVisitor<T> {
    fn expected(&self) -> String {
        format!("[[{}]] tables", T::NAME)
    }
}

impl<'de, T: Named + DeserializeOwned> Visitor<'de> for TablesVisitor<T> {
    type Value = Tables<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(&self.expected())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(item) = seq.next_element()? {
            out.push(item);
        }
        Ok(Tables(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        drain_map(map)?;
        let n = T::NAME;
        Err(de::Error::custom(format!(
            "expected [[{n}]] tables (one per {n}), found a single [{n}] table; write [[{n}]]"
        )))
    }

    reject_scalars!();
}

impl<'de, T: Named + DeserializeOwned> Deserialize<'de> for Tables<T> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TablesVisitor(PhantomData))
    }
}

struct ArrayVisitor<T>(PhantomData<T>);

impl<T: Leaf> ArrayVisitor<T> {
    fn expected(&self) -> String {
        format!("an array of strings like {}", T::EXAMPLE)
    }
}

impl<'de, T: Leaf> Visitor<'de> for ArrayVisitor<T> {
    type Value = Array<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(&self.expected())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(item) = seq.next_element()? {
            out.push(item);
        }
        Ok(Array(out, PhantomData))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        drain_map(map)?;
        Err(unexpected(&self.expected(), Raw::Table))
    }

    reject_scalars!();
}

impl<'de, T: Leaf> Deserialize<'de> for Array<T> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ArrayVisitor(PhantomData))
    }
}

impl<T> Default for Array<T> {
    fn default() -> Self {
        Array(Vec::new(), PhantomData)
    }
}

fn drain<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

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
const TOML_DATETIME: &str = "$__toml_private_datetime";

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
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
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
        }
        d.deserialize_any(V)
    }
}

impl Raw {
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
    LogPath, "a file path like \"telesink.db\"", "", |s| if s.trim().is_empty() {
            Err("empty; expected a file path like \"telesink.db\" (to keep no log, set log = \"none\")".to_string())
        } else {
            Ok(s)
        };
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
        parse_host_port(s.trim(), 53).map(ListenAddr).ok_or_else(|| {
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
