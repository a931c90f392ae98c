//! Names answered here and never forwarded: the `[[record]]`s, special-use names
//! (RFC 6761, 6762, 7686, 8375) and the reverse zones of private and special ranges (RFC 6303).
//! Leaking those upstream would tell the world what is on the network, and get no answer anyway.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use hickory_proto::rr::rdata::{CNAME, MX, PTR, SRV, TXT};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};

use crate::policy::matcher::{DomainMatcher, MatcherBuilder, NameHashes, Scope};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalRecord {
    /// Normalised. For PTR, an address is turned into its reverse name.
    pub name: String,
    pub rtype: RecordKind,
    /// Parsed per type (names normalised); its `Display` is the canonical text form.
    pub value: RecordValue,
    /// Default 300.
    pub ttl: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecordKind {
    A,
    Aaaa,
    Cname,
    Txt,
    Mx,
    Ptr,
    Srv,
}

impl RecordKind {
    pub const ALL: [RecordKind; 7] = [
        RecordKind::A,
        RecordKind::Aaaa,
        RecordKind::Cname,
        RecordKind::Txt,
        RecordKind::Mx,
        RecordKind::Ptr,
        RecordKind::Srv,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::A => "A",
            RecordKind::Aaaa => "AAAA",
            RecordKind::Cname => "CNAME",
            RecordKind::Txt => "TXT",
            RecordKind::Mx => "MX",
            RecordKind::Ptr => "PTR",
            RecordKind::Srv => "SRV",
        }
    }
}

/// The data of a `[[record]]`, parsed for its type. `Display` writes the canonical text:
/// addresses in canonical form, names normalised, MX `"pref name"`, SRV `"priority weight port
/// target"`, TXT as written.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RecordValue {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Cname(String),
    Ptr(String),
    Txt(String),
    /// `exchange` may be `.` (RFC 7505 null MX).
    Mx {
        preference: u16,
        exchange: String,
    },
    /// `target` may be `.` (RFC 2782 "service not available").
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: String,
    },
}

impl RecordValue {
    /// The type this data belongs to.
    pub fn kind(&self) -> RecordKind {
        match self {
            RecordValue::A(_) => RecordKind::A,
            RecordValue::Aaaa(_) => RecordKind::Aaaa,
            RecordValue::Cname(_) => RecordKind::Cname,
            RecordValue::Ptr(_) => RecordKind::Ptr,
            RecordValue::Txt(_) => RecordKind::Txt,
            RecordValue::Mx { .. } => RecordKind::Mx,
            RecordValue::Srv { .. } => RecordKind::Srv,
        }
    }
}

impl fmt::Display for RecordValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordValue::A(ip) => write!(f, "{ip}"),
            RecordValue::Aaaa(ip) => write!(f, "{ip}"),
            RecordValue::Cname(n) | RecordValue::Ptr(n) | RecordValue::Txt(n) => f.write_str(n),
            RecordValue::Mx {
                preference,
                exchange,
            } => write!(f, "{preference} {exchange}"),
            RecordValue::Srv {
                priority,
                weight,
                port,
                target,
            } => write!(f, "{priority} {weight} {port} {target}"),
        }
    }
}

/// Zones that are always local: their names get NXDOMAIN unless a record exists.
const SPECIAL_ZONES: &[&str] = &[
    "localhost",
    "invalid",
    "test",
    "local",
    "onion",
    "home.arpa",
    // RFC 6303: private and special-use IPv4 reverse zones.
    "10.in-addr.arpa",
    "16.172.in-addr.arpa",
    "17.172.in-addr.arpa",
    "18.172.in-addr.arpa",
    "19.172.in-addr.arpa",
    "20.172.in-addr.arpa",
    "21.172.in-addr.arpa",
    "22.172.in-addr.arpa",
    "23.172.in-addr.arpa",
    "24.172.in-addr.arpa",
    "25.172.in-addr.arpa",
    "26.172.in-addr.arpa",
    "27.172.in-addr.arpa",
    "28.172.in-addr.arpa",
    "29.172.in-addr.arpa",
    "30.172.in-addr.arpa",
    "31.172.in-addr.arpa",
    "168.192.in-addr.arpa",
    "0.in-addr.arpa",
    "127.in-addr.arpa",
    "254.169.in-addr.arpa",
    "2.0.192.in-addr.arpa",
    "100.51.198.in-addr.arpa",
    "113.0.203.in-addr.arpa",
    "255.255.255.255.in-addr.arpa",
    // RFC 6303 IPv6: ::/128, ::1/128, fc00::/7 (ULA), fe80::/10 (link local), 2001:db8::/32.
    "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa",
    "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa",
    "c.f.ip6.arpa",
    "d.f.ip6.arpa",
    "8.e.f.ip6.arpa",
    "9.e.f.ip6.arpa",
    "a.e.f.ip6.arpa",
    "b.e.f.ip6.arpa",
    "8.b.d.0.1.0.0.2.ip6.arpa",
];

/// Index slots: built-in zones, and the names of `[[record]]`s.
const SPECIAL_SLOT: u8 = 0;
const RECORD_SLOT: u8 = 1;

/// Why a name is answered locally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coverage {
    /// Not local.
    None,
    /// A special-use name or private reverse zone, and no `[[record]]` at or above it.
    BuiltIn,
    /// At or under a `[[record]]`'s name.
    Record,
}

/// The answer to a local name.
#[derive(Debug, Clone, PartialEq)]
pub enum LocalAnswer {
    /// Records of the asked type (or a CNAME), authoritative.
    Records(Vec<Record>),
    /// The name exists but has no records of that type: NODATA with an SOA.
    NoData { zone: Name },
    /// The name does not exist: NXDOMAIN with an SOA.
    NxDomain { zone: Name },
}

#[derive(Debug, Default)]
pub struct LocalZone {
    records: HashMap<LowerName, Vec<Record>>,
    /// Apexes of the zones answered here, with the number of labels, longest first.
    zones: Vec<LowerName>,
    /// The same apexes in the policy's hashed matcher: most queries are not local, and one
    /// probe per label tells so without comparing names.
    index: DomainMatcher,
}

impl LocalZone {
    pub fn build(records: &[LocalRecord], _ttl: u32) -> Result<LocalZone, String> {
        let mut zone = LocalZone::default();
        for r in records {
            let name = Name::from_ascii(&r.name)
                .map_err(|e| format!("record {}: {e}", r.name))?
                .to_lowercase();
            let mut name_fqdn = name.clone();
            name_fqdn.set_fqdn(true);
            let rdata =
                record_data(r).map_err(|e| format!("record {} {:?}: {e}", r.name, r.rtype))?;
            let record = Record::from_rdata(name_fqdn.clone(), r.ttl, rdata.clone());
            zone.records
                .entry(LowerName::from(&name_fqdn))
                .or_default()
                .push(record);
            // A and AAAA records answer the matching PTR too, as a home user expects.
            let ip = match &rdata {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            };
            if let Some(ip) = ip {
                let rev = reverse_name(ip);
                let ptr =
                    Record::from_rdata(rev.clone(), r.ttl, RData::PTR(PTR(name_fqdn.clone())));
                zone.records
                    .entry(LowerName::from(&rev))
                    .or_default()
                    .push(ptr);
            }
            zone.zones.push(LowerName::from(&name_fqdn));
        }
        for z in SPECIAL_ZONES {
            let mut n = Name::from_ascii(z).expect("static zone names are valid");
            n.set_fqdn(true);
            zone.zones.push(LowerName::from(&n));
        }
        zone.zones
            .sort_by_key(|z| std::cmp::Reverse(z.num_labels()));
        zone.zones.dedup();
        let mut index = MatcherBuilder::new();
        for z in &zone.zones {
            // The slot tells a record's name from a built-in zone (see `Coverage`).
            let slot = if zone.records.contains_key(z) {
                RECORD_SLOT
            } else {
                SPECIAL_SLOT
            };
            index.insert(
                &z.to_ascii().to_ascii_lowercase(),
                slot,
                Scope::Subtree,
                false,
            );
        }
        zone.index = index.build();
        Ok(zone)
    }

    /// Whether the name is in a zone answered here.
    pub fn covers(&self, name: &NameHashes) -> bool {
        !self.index.lookup_hashes(name).is_empty()
    }

    /// What makes the name local, if anything: a `[[record]]` (at or above it) wins over a
    /// `[[forward]]`, a built-in zone does not.
    #[inline]
    pub fn coverage(&self, name: &NameHashes) -> Coverage {
        let hits = self.index.lookup_hashes(name);
        if hits.block & (1 << RECORD_SLOT) != 0 {
            Coverage::Record
        } else if hits.block != 0 {
            Coverage::BuiltIn
        } else {
            Coverage::None
        }
    }

    /// The local answer for `name`/`qtype`, or `None` when the name is not local.
    pub fn answer(&self, name: &LowerName, qtype: RecordType) -> Option<LocalAnswer> {
        if self.index.lookup(name.iter()).is_empty() {
            return None;
        }
        if let Some(records) = self.records.get(name) {
            let hits: Vec<Record> = records
                .iter()
                .filter(|r| {
                    qtype == RecordType::ANY
                        || r.record_type() == qtype
                        || r.record_type() == RecordType::CNAME
                })
                .cloned()
                .collect();
            let zone = self
                .zone_of(name)
                .unwrap_or_else(|| Name::from(name.clone()));
            return Some(if hits.is_empty() {
                LocalAnswer::NoData { zone }
            } else {
                LocalAnswer::Records(hits)
            });
        }
        let zone = self.zone_of(name)?;
        // localhost and its subdomains are the loopback address (RFC 6761 6.3).
        if is_under(name, "localhost.") {
            let rdata = match qtype {
                RecordType::A => Some(RData::A(Ipv4Addr::LOCALHOST.into())),
                RecordType::AAAA => Some(RData::AAAA(Ipv6Addr::LOCALHOST.into())),
                _ => None,
            };
            return Some(match rdata {
                Some(d) => {
                    LocalAnswer::Records(vec![Record::from_rdata(Name::from(name.clone()), 300, d)])
                }
                None => LocalAnswer::NoData { zone },
            });
        }
        // A name that a record makes a zone apex of (or an empty non-terminal above a record)
        // exists; anything else under a local zone does not.
        let exists = self.records.keys().any(|k| name.zone_of(k));
        Some(if exists {
            LocalAnswer::NoData { zone }
        } else {
            LocalAnswer::NxDomain { zone }
        })
    }

    fn zone_of(&self, name: &LowerName) -> Option<Name> {
        self.zones
            .iter()
            .find(|z| z.zone_of(name))
            .map(|z| Name::from(z.clone()))
    }
}

fn is_under(name: &LowerName, zone: &str) -> bool {
    LowerName::from_str(zone).is_ok_and(|z| z.zone_of(name))
}

fn record_data(r: &LocalRecord) -> Result<RData, String> {
    // The config parsed and normalised the value for its type.
    let name = |s: &str| -> Result<Name, String> {
        let mut n = Name::from_ascii(s).map_err(|e| e.to_string())?;
        n.set_fqdn(true);
        Ok(n)
    };
    Ok(match &r.value {
        RecordValue::A(ip) => RData::A((*ip).into()),
        RecordValue::Aaaa(ip) => RData::AAAA((*ip).into()),
        RecordValue::Cname(n) => RData::CNAME(CNAME(name(n)?)),
        RecordValue::Ptr(n) => RData::PTR(PTR(name(n)?)),
        RecordValue::Txt(t) => RData::TXT(TXT::new(vec![t.trim().to_string()])),
        RecordValue::Mx {
            preference,
            exchange,
        } => RData::MX(MX::new(*preference, name(exchange)?)),
        RecordValue::Srv {
            priority,
            weight,
            port,
            target,
        } => RData::SRV(SRV::new(*priority, *weight, *port, name(target)?)),
    })
}

/// `192.168.1.10` → `10.1.168.192.in-addr.arpa.`
pub fn reverse_name(ip: IpAddr) -> Name {
    let text = match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(73);
            for b in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            s.push_str("ip6.arpa.");
            s
        }
    };
    Name::from_ascii(text).expect("reverse names are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(name: &str, rtype: RecordKind, value: &str) -> LocalRecord {
        LocalRecord {
            name: name.into(),
            rtype,
            value: RecordValue::parse(rtype, value).unwrap(),
            ttl: 300,
        }
    }

    fn lower(s: &str) -> LowerName {
        LowerName::from_str(s).unwrap()
    }

    #[test]
    fn records_nodata_and_nxdomain() {
        let z =
            LocalZone::build(&[rec("nas.home.arpa", RecordKind::A, "192.168.1.10")], 10).unwrap();
        match z.answer(&lower("nas.home.arpa."), RecordType::A) {
            Some(LocalAnswer::Records(r)) => assert_eq!(r.len(), 1),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            z.answer(&lower("nas.home.arpa."), RecordType::MX),
            Some(LocalAnswer::NoData { .. })
        ));
        assert!(matches!(
            z.answer(&lower("x.nas.home.arpa."), RecordType::A),
            Some(LocalAnswer::NxDomain { .. })
        ));
        assert!(matches!(
            z.answer(&lower("printer.home.arpa."), RecordType::A),
            Some(LocalAnswer::NxDomain { .. })
        ));
        match z.answer(&lower("10.1.168.192.in-addr.arpa."), RecordType::PTR) {
            Some(LocalAnswer::Records(r)) => assert_eq!(r[0].record_type(), RecordType::PTR),
            other => panic!("{other:?}"),
        }
        assert!(z.answer(&lower("example.com."), RecordType::A).is_none());
    }

    #[test]
    fn special_use_and_private_reverse() {
        let z = LocalZone::build(&[], 10).unwrap();
        assert!(matches!(
            z.answer(&lower("localhost."), RecordType::A),
            Some(LocalAnswer::Records(_))
        ));
        for n in [
            "foo.test.",
            "foo.invalid.",
            "4.3.2.10.in-addr.arpa.",
            "1.1.168.192.in-addr.arpa.",
            "5.0.17.172.in-addr.arpa.",
        ] {
            assert!(z.answer(&lower(n), RecordType::PTR).is_some(), "{n}");
        }
        // Public reverse zones are forwarded.
        assert!(z
            .answer(&lower("8.8.8.8.in-addr.arpa."), RecordType::PTR)
            .is_none());
        assert!(z
            .answer(&lower("5.0.32.172.in-addr.arpa."), RecordType::PTR)
            .is_none());
    }

    #[test]
    fn reverse_names() {
        assert_eq!(
            reverse_name("192.168.1.10".parse().unwrap()).to_ascii(),
            "10.1.168.192.in-addr.arpa."
        );
        assert!(reverse_name("fd00::50".parse().unwrap())
            .to_ascii()
            .ends_with("d.f.ip6.arpa."));
    }
}
