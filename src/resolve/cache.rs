//! The answer cache: upstream answers by question, shared by all clients (policy is applied
//! after the cache, so one client's block never leaks into another's answer).
//!
//! Entries outlive their TTL by the serve-stale window (RFC 8767): when every upstream fails,
//! a stale answer beats SERVFAIL. `quick_cache` does the bounded, sharded storage; lookups
//! borrow the query name, so a hit allocates nothing for the key.
//!
//! The counters (`telesink_cache_hits_total`, `_misses_total`, `_stale_total`) are fed from
//! the decision, once per answered query that reached the cache step ([`CacheStep`]), through
//! a [`CacheObserver`]: not from `get`, which the direct path and the general path may both
//! call for one query.

pub use crate::observe::events::{CacheObserver, CacheStep};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{LowerName, Name, RecordType};
use quick_cache::sync::Cache;
use quick_cache::Equivalent;

use super::dnssec::Validation;
use super::encode_wire::{AddressAnswer, CachedWire, Sections};
use super::upstream::UpstreamAnswer;
use super::wire::MAX_NAME;

/// Longest time any answer is cached, whatever its TTL.
const MAX_TTL: u32 = 86_400;
/// Negative answers without an SOA are cached this long.
const DEFAULT_NEGATIVE_TTL: u32 = 60;
/// Longest time a negative answer is cached (RFC 2308 suggests 1–3 hours at most).
const MAX_NEGATIVE_TTL: u32 = 3_600;

/// The question name in lower-case wire format, and the type: the direct path has exactly
/// those bytes from the datagram, so a hit needs no name conversion.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    name: Box<[u8]>,
    qtype: u16,
}

/// The borrowed form of [`Key`], for lookups.
#[derive(Hash)]
struct KeyRef<'a> {
    name: &'a [u8],
    qtype: u16,
}

impl Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        self.qtype == key.qtype && *self.name == *key.name
    }
}

/// A question's name as the cache and the encoders take it: hickory's, or the lower-case wire
/// form the UDP fast path has from the datagram, with hickory's made only when something asks
/// for it (building it cost ~7 % of a forwarded query, and the cache key is the wire form).
pub enum QName<'a> {
    Name(&'a LowerName),
    Wire {
        /// Lower case, wire format, as [`wire_name`] writes it.
        wire: &'a [u8],
        name: std::cell::OnceCell<LowerName>,
    },
}

impl<'a> QName<'a> {
    /// `wire`: a lower-case name in wire format, without compression.
    pub fn from_wire(wire: &'a [u8]) -> QName<'a> {
        QName::Wire {
            wire,
            name: std::cell::OnceCell::new(),
        }
    }

    /// hickory's form.
    pub fn name(&self) -> &LowerName {
        match self {
            QName::Name(name) => name,
            QName::Wire { wire, name } => name.get_or_init(|| {
                use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
                // Wire form written by `wire_name`/`WireQuery::lower_name`: label lengths and
                // total length checked when the query was read, so it decodes.
                let decoded = Name::read(&mut BinDecoder::new(wire));
                LowerName::new(&decoded.expect("a checked wire name decodes"))
            }),
        }
    }

    /// The lower-case wire form (the cache key), in `buf` when it must be written.
    pub fn wire<'b>(&'b self, buf: &'b mut [u8; MAX_NAME]) -> &'b [u8] {
        match self {
            QName::Name(name) => wire_name(name, buf),
            QName::Wire { wire, .. } => wire,
        }
    }
}

impl std::fmt::Display for QName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.name().fmt(f)
    }
}

/// `name` in lower-case wire format, written into `buf`.
pub fn wire_name<'b>(name: &LowerName, buf: &'b mut [u8; MAX_NAME]) -> &'b [u8] {
    super::wire::write_name(name.iter(), buf)
}

/// One cached answer.
#[derive(Debug)]
pub struct Entry {
    /// The answer as hickory's records ([`answer`](Entry::answer)): set when the entry is made
    /// from them; for an address answer the fast path stored as bytes, decoded from `wire` the
    /// first time something needs them (the general encoder, the addresses learner).
    answer: OnceLock<UpstreamAnswer>,
    /// The same answer ready to send (the direct path), when it encodes.
    pub wire: Option<CachedWire>,
    /// CNAME, HTTPS and SVCB targets in the answer, lower case: re-checked against the asking
    /// client's policy on every hit (CNAME cloaking, [`super::cloaking`]).
    pub targets: Box<[Name]>,
    /// The answer holds a private, loopback or link-local address: found once, on arrival, for
    /// rebinding protection ([`super::rebind`]) to read on every hit.
    pub private: bool,
    stored: Instant,
    ttl: u32,
}

impl Entry {
    /// The answer as hickory's records.
    pub fn answer(&self) -> &UpstreamAnswer {
        self.answer.get_or_init(|| {
            let bytes = self.wire.as_ref().map_or(&[][..], CachedWire::bytes);
            decode(bytes).unwrap_or_else(|| {
                // Not expected: only a checked address answer is stored undecoded.
                tracing::warn!("a cached answer did not decode; serving SERVFAIL for it");
                UpstreamAnswer {
                    rcode: ResponseCode::ServFail,
                    answers: Vec::new(),
                    authorities: Vec::new(),
                    additionals: Vec::new(),
                    negative_ttl: None,
                    validation: Validation::Off,
                }
            })
        })
    }

    /// Seconds since the answer was stored: subtract from its records' TTLs.
    pub fn age(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.stored).as_secs() as u32
    }

    pub fn is_fresh(&self, now: Instant) -> bool {
        self.age(now) < self.ttl
    }
}

pub enum Lookup {
    Fresh(Arc<Entry>),
    /// Expired, but within the serve-stale window.
    Stale(Arc<Entry>),
    Miss,
}

pub struct AnswerCache {
    cache: Option<Cache<Key, Arc<Entry>>>,
    serve_stale: Duration,
    observer: Option<Arc<dyn CacheObserver>>,
}

impl AnswerCache {
    /// `entries` = 0 disables caching.
    pub fn new(entries: usize, serve_stale: Duration) -> Self {
        AnswerCache {
            cache: (entries > 0).then(|| Cache::new(entries)),
            serve_stale,
            observer: None,
        }
    }

    /// Reports each query's cache step to `observer` (the metrics).
    pub fn observed_by(mut self, observer: Arc<dyn CacheObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Counts one answered query's cache step (called once per query, when it is recorded).
    pub fn count(&self, step: CacheStep) {
        if let Some(o) = &self.observer {
            o.cache_step(step);
        }
    }

    pub fn len(&self) -> usize {
        self.cache.as_ref().map_or(0, |c| c.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, name: &LowerName, qtype: RecordType, now: Instant) -> Lookup {
        let mut buf = [0u8; MAX_NAME];
        self.get_wire(wire_name(name, &mut buf), qtype, now)
    }

    /// [`get`](Self::get) by the lower-case wire-format name.
    pub fn get_wire(&self, name: &[u8], qtype: RecordType, now: Instant) -> Lookup {
        let Some(cache) = &self.cache else {
            return Lookup::Miss;
        };
        let key = KeyRef {
            name,
            qtype: u16::from(qtype),
        };
        match cache.get(&key) {
            None => Lookup::Miss,
            Some(e) if e.is_fresh(now) => Lookup::Fresh(e),
            Some(e) => {
                let expired_for =
                    now.saturating_duration_since(e.stored) - Duration::from_secs(e.ttl as u64);
                if expired_for <= self.serve_stale {
                    Lookup::Stale(e)
                } else {
                    Lookup::Miss
                }
            }
        }
    }

    /// Stores an upstream answer for as long as its records allow; returns the entry stored
    /// (`None` when caching is off or the answer must not be cached).
    pub fn insert(
        &self,
        name: &LowerName,
        qtype: RecordType,
        answer: UpstreamAnswer,
    ) -> Option<Arc<Entry>> {
        self.insert_with_wire(&QName::Name(name), qtype, answer, None)
            .ok()
    }

    /// [`insert`](Self::insert) with the answer's wire form made already (`wire`, from the
    /// upstream's bytes), if it was. The answer moves into the entry (no copy for the caller to
    /// keep); when it is not stored, it comes back as `Err`.
    pub fn insert_with_wire(
        &self,
        name: &QName<'_>,
        qtype: RecordType,
        answer: UpstreamAnswer,
        wire: Option<CachedWire>,
    ) -> Result<Arc<Entry>, UpstreamAnswer> {
        let Some(cache) = self.cache.as_ref() else {
            return Err(answer);
        };
        let Some(ttl) = cache_ttl(&answer).filter(|&t| t > 0) else {
            return Err(answer);
        };
        let entry = Entry {
            // A secure answer's AD bit depends on the query's DO/AD: the general path
            // sets it (the direct path's header has no AD).
            wire: if answer.validation.is_secure() {
                None
            } else {
                wire.or_else(|| CachedWire::encode(name.name(), qtype, sections(&answer)))
            },
            targets: super::cloaking::targets(&answer.answers),
            private: super::rebind::holds_private(&answer.answers),
            answer: OnceLock::from(answer),
            stored: Instant::now(),
            ttl,
        };
        Ok(put(cache, name, qtype, entry))
    }

    /// Stores an address answer the UDP fast path took as bytes (`wire`, whose `facts` it read
    /// with [`CachedWire::address_answer`]) at `now`, without hickory's records: they are
    /// decoded if ever needed. The wire comes back as `Err` when it is not stored (caching
    /// off, TTL 0).
    pub fn insert_address(
        &self,
        name: &QName<'_>,
        qtype: RecordType,
        wire: CachedWire,
        facts: AddressAnswer,
        now: Instant,
    ) -> Result<Arc<Entry>, CachedWire> {
        let Some(cache) = self.cache.as_ref() else {
            return Err(wire);
        };
        let ttl = facts.ttl.min(MAX_TTL);
        if ttl == 0 {
            return Err(wire);
        }
        let entry = Entry {
            answer: OnceLock::new(),
            wire: Some(wire),
            // A and AAAA records have no targets.
            targets: Box::default(),
            private: facts.private,
            stored: now,
            ttl,
        };
        Ok(put(cache, name, qtype, entry))
    }

    pub fn clear(&self) {
        if let Some(c) = &self.cache {
            c.clear();
        }
    }
}

/// Stores `entry` under `name`/`qtype` and returns it, shared.
fn put(
    cache: &Cache<Key, Arc<Entry>>,
    name: &QName<'_>,
    qtype: RecordType,
    entry: Entry,
) -> Arc<Entry> {
    let mut buf = [0u8; MAX_NAME];
    let key = Key {
        name: name.wire(&mut buf).into(),
        qtype: u16::from(qtype),
    };
    let entry = Arc::new(entry);
    cache.insert(key, entry.clone());
    entry
}

/// The codec's view of an upstream answer.
pub fn sections(a: &UpstreamAnswer) -> Sections<'_> {
    Sections {
        rcode: a.rcode,
        answers: &a.answers,
        authorities: &a.authorities,
        additionals: &a.additionals,
    }
}

/// A stored response ([`CachedWire::bytes`]) as hickory's records, as the upstream module
/// makes them from a response.
fn decode(bytes: &[u8]) -> Option<UpstreamAnswer> {
    use hickory_proto::serialize::binary::BinDecodable;
    let msg = hickory_proto::op::Message::from_bytes(bytes).ok()?;
    Some(UpstreamAnswer::from_message(msg, None, Validation::Off))
}

/// How long an answer may be cached; `None` when it must not be (errors, truncation).
fn cache_ttl(a: &UpstreamAnswer) -> Option<u32> {
    match a.rcode {
        ResponseCode::NoError if !a.answers.is_empty() => a
            .answers
            .iter()
            .map(|r| r.ttl)
            .min()
            .map(|t| t.min(MAX_TTL)),
        ResponseCode::NoError | ResponseCode::NXDomain => {
            let soa_ttl = a.authorities.iter().find_map(|r| match &r.data {
                hickory_proto::rr::RData::SOA(soa) => Some(soa.minimum.min(r.ttl)),
                _ => None,
            });
            Some(
                a.negative_ttl
                    .or(soa_ttl)
                    .unwrap_or(DEFAULT_NEGATIVE_TTL)
                    .min(MAX_NEGATIVE_TTL),
            )
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::{RData, Record};
    use std::str::FromStr;

    fn answer(ttl: u32) -> UpstreamAnswer {
        UpstreamAnswer {
            rcode: ResponseCode::NoError,
            answers: vec![Record::from_rdata(
                hickory_proto::rr::Name::from_ascii("a.example.").unwrap(),
                ttl,
                RData::A("192.0.2.1".parse::<std::net::Ipv4Addr>().unwrap().into()),
            )],
            authorities: vec![],
            additionals: vec![],
            negative_ttl: None,
            validation: crate::resolve::dnssec::Validation::Off,
        }
    }

    /// An upstream's response to `name` A/AAAA with `answers` (and `authorities`), an OPT at
    /// the end, as hickory writes it (owners compressed to the question).
    fn response(name: &str, answers: Vec<Record>, authorities: Vec<Record>) -> Vec<u8> {
        use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
        use hickory_proto::serialize::binary::BinEncodable;
        let mut m = Message::new(4242, MessageType::Response, OpCode::Query);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        m.add_answers(answers);
        m.add_authorities(authorities);
        m.set_edns(Edns::new());
        m.to_bytes().unwrap()
    }

    fn a(name: &str, ttl: u32, ip: &str) -> Record {
        Record::from_rdata(
            Name::from_ascii(name).unwrap(),
            ttl,
            RData::A(ip.parse::<std::net::Ipv4Addr>().unwrap().into()),
        )
    }

    fn aaaa(name: &str, ttl: u32, ip: &str) -> Record {
        Record::from_rdata(
            Name::from_ascii(name).unwrap(),
            ttl,
            RData::AAAA(ip.parse::<std::net::Ipv6Addr>().unwrap().into()),
        )
    }

    #[test]
    fn address_answer_read_from_bytes_as_hickory_reads_it() {
        let records = vec![
            a("Host.Example.", 300, "192.0.2.1"),
            a("Host.Example.", 60, "10.1.2.3"),
            aaaa("Host.Example.", 120, "2001:db8::1"),
        ];
        let bytes = response("Host.Example.", records.clone(), vec![]);
        let wire = CachedWire::from_upstream(&bytes).expect("plain shape");
        assert_eq!(wire.address_answer(), Some(facts(60, true)));
        let public = response("h.example.", vec![a("h.example.", 5, "192.0.2.9")], vec![]);
        assert_eq!(facts_of(&public), facts(5, false));

        // Stored as bytes, decoded on first use into what the upstream module makes.
        let c = AnswerCache::new(10, Duration::ZERO);
        let n = LowerName::from_str("host.example.").unwrap();
        let entry = c
            .insert_address(
                &QName::Name(&n),
                RecordType::A,
                wire,
                facts_of(&bytes),
                Instant::now(),
            )
            .unwrap();
        assert!(entry.private);
        assert!(entry.targets.is_empty());
        assert!(entry.is_fresh(Instant::now()));
        let answer = entry.answer();
        assert_eq!(answer.rcode, ResponseCode::NoError);
        assert_eq!(answer.answers, records);
        assert!(answer.authorities.is_empty() && answer.additionals.is_empty());
        assert!(matches!(
            c.get(&n, RecordType::A, Instant::now()),
            Lookup::Fresh(_)
        ));
        // Caching off: not stored, the wire comes back.
        let off = AnswerCache::new(0, Duration::ZERO);
        let wire = CachedWire::from_upstream(&bytes).unwrap();
        assert!(off
            .insert_address(
                &QName::Name(&n),
                RecordType::A,
                wire,
                facts_of(&bytes),
                Instant::now()
            )
            .is_err());
    }

    #[test]
    fn an_authoritative_servers_ns_and_glue_are_kept_as_they_came() {
        use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
        use hickory_proto::rr::rdata::NS;
        use hickory_proto::serialize::binary::BinEncodable;
        let q = "q1.Zone.example.";
        let ns = Record::from_rdata(
            Name::from_ascii("zone.example.").unwrap(),
            3600,
            RData::NS(NS(Name::from_ascii("ns.zone.example.").unwrap())),
        );
        let glue = a("ns.zone.example.", 3600, "127.0.0.1");
        let answer = a(q, 300, "192.0.2.1");
        let mut m = Message::new(7, MessageType::Response, OpCode::Query);
        m.add_query(Query::query(Name::from_ascii(q).unwrap(), RecordType::A));
        m.add_answer(answer.clone());
        m.add_authority(ns.clone());
        m.add_additional(glue.clone());
        m.set_edns(Edns::new());
        let bytes = m.to_bytes().unwrap();
        let wire = CachedWire::from_upstream(&bytes).expect("NS and glue kept, OPT cut");
        // The glue's loopback address is not the answer's: no rebinding block for it.
        assert_eq!(wire.address_answer(), Some(facts(300, false)));
        let c = AnswerCache::new(10, Duration::ZERO);
        let n = LowerName::from_str("q1.zone.example.").unwrap();
        let entry = c
            .insert_address(
                &QName::Name(&n),
                RecordType::A,
                wire,
                facts(300, false),
                Instant::now(),
            )
            .unwrap();
        let decoded = entry.answer();
        assert_eq!(decoded.answers, vec![answer]);
        assert_eq!(decoded.authorities, vec![ns]);
        assert_eq!(
            decoded.additionals,
            vec![glue],
            "the OPT cut off, the glue kept"
        );
    }

    fn facts(ttl: u32, private: bool) -> AddressAnswer {
        AddressAnswer { ttl, private }
    }

    fn facts_of(bytes: &[u8]) -> AddressAnswer {
        CachedWire::from_upstream(bytes)
            .unwrap()
            .address_answer()
            .unwrap()
    }

    #[test]
    fn other_shapes_are_left_to_hickory() {
        use hickory_proto::rr::rdata::CNAME;
        let q = "h.example.";
        let cname = Record::from_rdata(
            Name::from_ascii(q).unwrap(),
            60,
            RData::CNAME(CNAME(Name::from_ascii("t.tracker.example.").unwrap())),
        );
        let cases = [
            // A CNAME chain: its target is checked against the policy (cloaking).
            response(
                q,
                vec![cname, a("t.tracker.example.", 60, "192.0.2.1")],
                vec![],
            ),
            // An owner other than the question name.
            response(q, vec![a("other.example.", 60, "192.0.2.1")], vec![]),
        ];
        for bytes in cases {
            let wire = CachedWire::from_upstream(&bytes).expect("a shape the cache stores");
            assert_eq!(wire.address_answer(), None);
        }
        // An A record whose address is 5 bytes long, and one cut short.
        let mut bytes = response(q, vec![a(q, 60, "192.0.2.1")], vec![]);
        let good = CachedWire::from_upstream(&bytes).unwrap();
        assert!(good.address_answer().is_some());
        let rdlen = good.bytes().len() - 6;
        bytes[rdlen + 1] = 5;
        bytes.insert(rdlen + 6, 0);
        let wire = CachedWire::from_upstream(&bytes).expect("well framed");
        assert_eq!(wire.address_answer(), None);
        let mut short = good.bytes().to_vec();
        short.pop();
        assert!(CachedWire::from_upstream(&short).is_none_or(|w| w.address_answer().is_none()));
    }

    #[test]
    fn fresh_then_stale_then_gone() {
        let c = AnswerCache::new(100, Duration::from_secs(30));
        let n = LowerName::from_str("A.Example.").unwrap();
        c.insert(&n, RecordType::A, answer(10));
        let now = Instant::now();
        assert!(matches!(c.get(&n, RecordType::A, now), Lookup::Fresh(_)));
        assert!(matches!(c.get(&n, RecordType::AAAA, now), Lookup::Miss));
        let later = now + Duration::from_secs(20);
        assert!(matches!(c.get(&n, RecordType::A, later), Lookup::Stale(_)));
        let much_later = now + Duration::from_secs(60);
        assert!(matches!(c.get(&n, RecordType::A, much_later), Lookup::Miss));
    }

    #[test]
    fn case_insensitive_key_and_no_cache_for_errors() {
        let c = AnswerCache::new(100, Duration::ZERO);
        c.insert(
            &LowerName::from_str("a.example.").unwrap(),
            RecordType::A,
            answer(10),
        );
        let upper = LowerName::from_str("A.EXAMPLE.").unwrap();
        assert!(matches!(
            c.get(&upper, RecordType::A, Instant::now()),
            Lookup::Fresh(_)
        ));
        let mut fail = answer(10);
        fail.rcode = ResponseCode::ServFail;
        let n = LowerName::from_str("b.example.").unwrap();
        c.insert(&n, RecordType::A, fail);
        assert!(matches!(
            c.get(&n, RecordType::A, Instant::now()),
            Lookup::Miss
        ));
    }
}
