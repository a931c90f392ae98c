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
use std::ops::Range;
use std::path::Path;

use serde::de::{self, DeserializeOwned, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

use super::errors;
pub(super) use super::leaves::*;
use super::{BlockMode, ConfigError, ListFormat, LogMode, NftMode, RecordKind, Strategy, Upstream};

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
    pub forward: Option<Tables<RawForward>>,
    pub metrics: Option<Section<RawMetrics>>,
    pub querylog: Option<Section<RawQueryLog>>,
    pub addresses: Option<Section<RawAddresses>>,
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
    // Encrypted DNS (see `super::encrypted`).
    pub tls_listen: Option<Spanned<Array<TlsListenAddr>>>,
    pub https_listen: Option<Spanned<Array<TlsListenAddr>>>,
    pub tls_cert: Option<Spanned<TlsFile>>,
    pub tls_key: Option<Spanned<TlsFile>>,
    pub tls_name: Option<Spanned<TlsName>>,
    pub ddr: Option<Flag>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub servers: Option<Spanned<Array<Upstream>>>,
    pub timeout_ms: Option<TimeoutMs>,
    pub cache_entries: Option<CacheEntries>,
    pub serve_stale: Option<Length>,
    pub strategy: Option<Strategy>,
    pub rebind_protection: Option<Flag>,
    pub dnssec: Option<Flag>,
    pub dnssec_trust_anchor: Option<Spanned<AnchorPath>>,
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
    pub schedule: Option<Tables<RawSchedule>>,
}

/// `[[group.schedule]]`, inside a `[[group]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSchedule {
    pub days: Option<Spanned<Array<Day>>>,
    pub from: Option<Spanned<ClockText>>,
    pub to: Option<Spanned<ClockText>>,
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
pub(super) struct RawForward {
    pub domains: Option<Spanned<Array<ForwardDomain>>>,
    pub servers: Option<Spanned<Array<Upstream>>>,
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
    pub path: Option<Spanned<LogPath>>,
    /// Instead of `path`: a PostgreSQL database.
    pub url: Option<Spanned<PgUrl>>,
    pub log: Option<LogMode>,
    pub retention_days: Option<RetentionDays>,
    pub anonymize: Option<Flag>,
    pub queue_size: Option<QueueSize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAddresses {
    pub categories: Option<Array<Category>>,
    pub resolve_blocked: Option<Flag>,
    pub nftables: Option<NftMode>,
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
    RawMetrics => "metrics", RawQueryLog => "querylog", RawAddresses => "addresses",
    RawSchedule => "group.schedule",
);
named!(RawForward => "forward");

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

/// A value of an array with its span and key path (`server.listen[1]`); for an error, the
/// message.
pub(super) type Item<T> = (T, Range<usize>, String);

/// An array of values, each kept as written with its span: an element's type is checked by
/// [`Array::items`], where its own line and key (`server.listen[1]`) can be named (toml gives
/// an error inside an array the array's span).
#[derive(Debug)]
pub(super) struct Array<T>(pub Vec<Spanned<Raw>>, PhantomData<T>);

impl<T: TryFrom<Raw, Error = String>> Array<T> {
    /// The elements as `T`, each with its span and key path `k[i]`; the first that is not a
    /// `T` is the error, with its span and key.
    pub(super) fn items(&self, k: &str) -> Result<Vec<Item<T>>, Item<String>> {
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
        let found = Raw::from_map(map)?;
        if !matches!(found, Raw::Table) {
            return Err(unexpected(&self.expected(), found));
        }
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
        Err(unexpected(&self.expected(), Raw::from_map(map)?))
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

pub(super) fn drain<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

pub(super) fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}
