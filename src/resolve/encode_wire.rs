//! The direct encoder: the answers telesink makes without an upstream (blocked, refused, cached)
//! written straight into bytes, for queries read by [`super::wire::WireQuery`].
//!
//! These answers have a fixed shape: the question echoed, at most one record whose owner is the
//! question name (a pointer to offset 12), and an OPT; a cached answer is a stored response
//! with its ID, question case and TTLs patched. Whatever does not fit that shape, or the size the
//! client allows, is left to [`super::encode_hickory`] (which truncates as RFC 6891 says).
//! The same answers as hickory records are in [`super::answer`]; tests compare the two.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use hickory_proto::op::{Message, MessageType, Metadata, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, LowerName, Name, Record, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
use smallvec::SmallVec;

use super::answer::{self, ede, Sinkhole};
use super::wire::{write_name, WireQuery, CLASS_IN, HEADER, MAX_NAME, QR, TYPE_OPT};

/// Header flag bits.
const AA: u8 = 0x04;
const RD: u8 = 0x01;
const RA: u8 = 0x80;
const CD: u8 = 0x10;
/// Offset 12, where the question name starts: what every answer record's owner points to.
const POINTER_TO_QNAME: [u8; 2] = [0xC0, 0x0C];

/// A response's sections, as an upstream gave them (the cache converts its entries to this).
#[derive(Debug, Clone, Copy)]
pub struct Sections<'a> {
    pub rcode: ResponseCode,
    pub answers: &'a [Record],
    pub authorities: &'a [Record],
    pub additionals: &'a [Record],
}

/// Appends a response to `out`: header, the question echoed, `body` (the records, already in
/// wire format, with their counts), and an OPT (with the EDE, if any) when the query had EDNS.
/// `None`, with nothing appended, when it would not fit `limit`: the general path then
/// truncates as RFC 6891 says.
#[allow(clippy::too_many_arguments)]
fn respond(
    q: &WireQuery<'_>,
    rcode: ResponseCode,
    authoritative: bool,
    counts: (u16, u16, u16),
    body: &[u8],
    ede: Option<(u16, &str)>,
    limit: usize,
    max_udp: u16,
    out: &mut Vec<u8>,
) -> Option<()> {
    let question = q.question();
    let ede_len = ede.map_or(0, |(_, t)| 4 + 2 + t.len());
    let opt_len = if q.edns_payload.is_some() {
        11 + ede_len
    } else {
        0
    };
    let len = HEADER + question.len() + body.len() + opt_len;
    if len > limit || ede_len > usize::from(u16::MAX) {
        return None;
    }
    out.reserve(len);
    let req = q.header();
    let code = u16::from(rcode);
    if code > 0x0F {
        // Extended rcodes live in the OPT: the general path writes those.
        return None;
    }
    out.extend_from_slice(&req[..2]);
    out.push(QR | if authoritative { AA } else { 0 } | (req[2] & RD));
    out.push(RA | (req[3] & CD) | code as u8);
    let (an, ns, ar) = counts;
    let ar = ar + u16::from(q.edns_payload.is_some());
    for c in [1, an, ns, ar] {
        out.extend_from_slice(&c.to_be_bytes());
    }
    out.extend_from_slice(question);
    out.extend_from_slice(body);
    if let Some(payload) = q.edns_payload {
        out.push(0);
        out.extend_from_slice(&TYPE_OPT.to_be_bytes());
        out.extend_from_slice(&payload.clamp(512, max_udp).to_be_bytes());
        // Extended rcode 0, version 0, flags: DO echoed (RFC 3225).
        out.extend_from_slice(&[0, 0, if q.dnssec_ok { 0x80 } else { 0 }, 0]);
        out.extend_from_slice(&(ede_len as u16).to_be_bytes());
        if let Some((info, text)) = ede {
            out.extend_from_slice(&15u16.to_be_bytes());
            out.extend_from_slice(&((2 + text.len()) as u16).to_be_bytes());
            out.extend_from_slice(&info.to_be_bytes());
            out.extend_from_slice(text.as_bytes());
        }
    }
    Some(())
}

/// REFUSED with an Extended DNS Error (access list, rate limit).
pub fn refused(
    q: &WireQuery<'_>,
    ede: (u16, &str),
    limit: usize,
    max_udp: u16,
    out: &mut Vec<u8>,
) -> Option<()> {
    respond(
        q,
        ResponseCode::Refused,
        false,
        (0, 0, 0),
        &[],
        Some(ede),
        limit,
        max_udp,
        out,
    )
}

/// The sinkhole answer, as [`answer::blocked`] makes it, with EDE 15 and `text`.
pub fn blocked(
    q: &WireQuery<'_>,
    mode: Sinkhole,
    ttl: u32,
    text: &str,
    limit: usize,
    max_udp: u16,
    out: &mut Vec<u8>,
) -> Option<()> {
    let mut body = [0u8; 128];
    let (rcode, counts, len) = match (mode, q.qtype) {
        (Sinkhole::Refused, _) => (ResponseCode::Refused, (0, 0, 0), 0),
        (Sinkhole::Null, RecordType::A) => {
            let n = record(
                &mut body,
                RecordType::A,
                ttl,
                &Ipv4Addr::UNSPECIFIED.octets(),
            );
            (ResponseCode::NoError, (1, 0, 0), n)
        }
        (Sinkhole::Null, RecordType::AAAA) => {
            let n = record(
                &mut body,
                RecordType::AAAA,
                ttl,
                &Ipv6Addr::UNSPECIFIED.octets(),
            );
            (ResponseCode::NoError, (1, 0, 0), n)
        }
        (Sinkhole::Null, _) => (ResponseCode::NoError, (0, 1, 0), soa(&mut body, ttl)),
        (Sinkhole::NxDomain, _) => (ResponseCode::NXDomain, (0, 1, 0), soa(&mut body, ttl)),
    };
    respond(
        q,
        rcode,
        false,
        counts,
        &body[..len],
        Some((ede::BLOCKED, text)),
        limit,
        max_udp,
        out,
    )
}

/// One record owned by the question name; returns its length.
fn record(out: &mut [u8; 128], rtype: RecordType, ttl: u32, rdata: &[u8]) -> usize {
    out[..2].copy_from_slice(&POINTER_TO_QNAME);
    out[2..4].copy_from_slice(&u16::from(rtype).to_be_bytes());
    out[4..6].copy_from_slice(&CLASS_IN.to_be_bytes());
    out[6..10].copy_from_slice(&ttl.to_be_bytes());
    out[10..12].copy_from_slice(&(rdata.len() as u16).to_be_bytes());
    out[12..12 + rdata.len()].copy_from_slice(rdata);
    12 + rdata.len()
}

/// The synthetic SOA of [`answer::soa`] for the question name.
fn soa(out: &mut [u8; 128], ttl: u32) -> usize {
    /// MNAME and RNAME in wire format, written once: the same for every block.
    static NAMES: LazyLock<Vec<u8>> = LazyLock::new(|| {
        let mut v = Vec::with_capacity(64);
        let mut buf = [0u8; MAX_NAME];
        for name in [answer::SOA_MNAME, answer::SOA_RNAME] {
            let labels = name.split('.').filter(|l| !l.is_empty()).map(str::as_bytes);
            v.extend_from_slice(write_name(labels, &mut buf));
        }
        v
    });
    let mut rdata = [0u8; 96];
    let mut n = NAMES.len();
    rdata[..n].copy_from_slice(&NAMES);
    let (refresh, retry, expire) = answer::SOA_TIMERS;
    for v in [
        answer::SOA_SERIAL,
        refresh as u32,
        retry as u32,
        expire as u32,
        ttl,
    ] {
        rdata[n..n + 4].copy_from_slice(&v.to_be_bytes());
        n += 4;
    }
    record(out, RecordType::SOA, ttl, &rdata[..n])
}

/// An upstream answer in wire format, as the cache keeps it: a whole response with ID 0 and the
/// question in lower case, without OPT, and where each record's TTL sits, so that a hit costs a
/// copy and a few stores. The owner names keep their compression pointers into the question,
/// which stay valid when the client's question (same name, perhaps other case) is copied over.
#[derive(Debug)]
pub struct CachedWire {
    bytes: Box<[u8]>,
    /// Where the question section ends.
    question_end: u16,
    /// Where each record's TTL is.
    ttl_offsets: TtlOffsets,
}

/// TTL offsets, inline up to 8 records (most answers): no allocation of their own.
type TtlOffsets = SmallVec<[u16; 8]>;

/// An address answer's facts, read from its bytes ([`CachedWire::address_answer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressAnswer {
    /// The smallest TTL of its records (the cache's lifetime for it, before the cache's cap).
    pub ttl: u32,
    /// It holds a private, loopback or link-local address (rebinding protection).
    pub private: bool,
}

/// Record types the address answer's shape allows.
const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;

impl CachedWire {
    /// `None` when the answer cannot be encoded, or is too large to be worth a direct path
    /// (larger than any UDP answer we send: such answers go through the general path).
    pub fn encode(name: &LowerName, qtype: RecordType, a: Sections<'_>) -> Option<CachedWire> {
        if u16::from(a.rcode) > 0x0F {
            return None;
        }
        let mut metadata = Metadata::new(0, MessageType::Response, OpCode::Query);
        metadata.response_code = a.rcode;
        let mut msg = Message::new(0, MessageType::Response, OpCode::Query);
        msg.metadata = metadata;
        let mut query = Query::query(Name::from(name.clone()), qtype);
        query.set_query_class(DNSClass::IN);
        msg.add_query(query);
        msg.add_answers(a.answers.iter().cloned());
        msg.add_authorities(a.authorities.iter().cloned());
        msg.add_additionals(a.additionals.iter().cloned());
        let mut bytes = Vec::with_capacity(512);
        msg.emit(&mut BinEncoder::new(&mut bytes)).ok()?;
        if bytes.len() > 4096 {
            return None;
        }
        let walked = ttl_offsets(&bytes)?;
        Some(CachedWire {
            bytes: bytes.into_boxed_slice(),
            question_end: walked.question_end as u16,
            ttl_offsets: walked.ttl_offsets,
        })
    }

    /// The upstream's response itself (`m`) in the cache's form, with no re-encoding: the UDP
    /// fast path's answers (issue 17), where hickory's encoder cost a third of a forwarded
    /// query. Only for a positive answer (NOERROR with answer records) to one question; its
    /// authority and additional records are kept as they came (an authoritative server adds
    /// its NS and their addresses), but for the OPT at the end, which is cut off (as the
    /// general path drops it: each answer gets the client's own). `None` otherwise (an OPT
    /// anywhere else, a count that does not match the records, an extended rcode):
    /// [`encode`](Self::encode) then writes it from hickory's records.
    pub fn from_upstream(m: &[u8]) -> Option<CachedWire> {
        let h = m.get(..HEADER)?;
        let count = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
        let rcode = h[3] & 0x0F;
        if count(4) != 1 || count(6) == 0 || rcode != 0 || m.len() > 4096 {
            return None;
        }
        let Walked {
            question_end,
            mut ttl_offsets,
            last_start,
        } = ttl_offsets(m)?;
        let type_at = |ttl_at: u16| {
            let t = usize::from(ttl_at) - 4;
            u16::from_be_bytes([m[t], m[t + 1]])
        };
        let mut end = m.len();
        let mut additionals = count(10);
        let last = *ttl_offsets.last()?;
        if additionals > 0 && type_at(last) == TYPE_OPT {
            // The OPT: root owner (one zero byte), extended rcode 0; cut off.
            let (start, ttl_at) = (usize::from(last_start), usize::from(last));
            if ttl_at != start + 5 || m[start] != 0 || m[ttl_at] != 0 {
                return None;
            }
            ttl_offsets.pop();
            end = start;
            additionals -= 1;
        }
        // No other OPT may stay (it would reach the client as a second one).
        if ttl_offsets
            .iter()
            .any(|&ttl_at| type_at(ttl_at) == TYPE_OPT)
        {
            return None;
        }
        let mut bytes = m[..end].to_vec().into_boxed_slice();
        bytes[..2].copy_from_slice(&[0, 0]);
        bytes[10..12].copy_from_slice(&additionals.to_be_bytes());
        bytes[HEADER..question_end - 4].make_ascii_lowercase();
        Some(CachedWire {
            bytes,
            question_end: u16::try_from(question_end).ok()?,
            ttl_offsets,
        })
    }

    /// The stored response (ID 0, question in lower case, no OPT): what the cache decodes
    /// into hickory's records when the general path needs them.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// What the cache and the checks after it need from an address answer, read from the
    /// bytes (issue 17: hickory's decoding was a fifth of a forwarded query's instructions).
    /// Only for the plainest shape, where reading the bytes is as sure as decoding them: every
    /// answer record an A or AAAA whose owner is the question name itself (a pointer to offset
    /// 12), class IN, with an address of its type's length. What follows (an authoritative
    /// server's NS and glue) plays no part in the judgment (cloaking, rebinding and the TTL
    /// look at the answer records only), and is kept as framed. `None` for anything else
    /// (CNAME chains, HTTPS, negative answers...): those are decoded and judged from
    /// hickory's records.
    pub fn address_answer(&self) -> Option<AddressAnswer> {
        let b = &self.bytes;
        let count = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        if count(6) == 0 {
            return None;
        }
        let mut facts = AddressAnswer {
            ttl: u32::MAX,
            private: false,
        };
        let mut i = usize::from(self.question_end);
        for _ in 0..count(6) {
            let record = b.get(i..i + 12)?;
            let field = |at: usize| u16::from_be_bytes([record[at], record[at + 1]]);
            if record[..2] != POINTER_TO_QNAME || field(4) != CLASS_IN {
                return None;
            }
            let rdata = b.get(i + 12..i + 12 + usize::from(field(10)))?;
            let private = match (field(2), rdata.len()) {
                (TYPE_A, 4) => {
                    super::rebind::private_v4(Ipv4Addr::from(<[u8; 4]>::try_from(rdata).ok()?))
                }
                (TYPE_AAAA, 16) => {
                    super::rebind::private_v6(Ipv6Addr::from(<[u8; 16]>::try_from(rdata).ok()?))
                }
                _ => return None,
            };
            let ttl = u32::from_be_bytes([record[6], record[7], record[8], record[9]]);
            facts.ttl = facts.ttl.min(ttl);
            facts.private |= private;
            i += 12 + rdata.len();
        }
        Some(facts)
    }

    /// Appends the cached answer for `q` to `out`, its TTLs lowered by `age` seconds. `None`,
    /// with nothing appended, when it would not fit `limit` (the general path truncates).
    pub fn answer(
        &self,
        q: &WireQuery<'_>,
        age: u32,
        limit: usize,
        max_udp: u16,
        out: &mut Vec<u8>,
    ) -> Option<()> {
        let question = q.question();
        let end = usize::from(self.question_end);
        if HEADER + question.len() != end {
            return None;
        }
        let body = &self.bytes[end..];
        let count = |i: usize| u16::from_be_bytes([self.bytes[i], self.bytes[i + 1]]);
        let rcode = ResponseCode::from(0, self.bytes[3] & 0x0F);
        let start = out.len();
        respond(
            q,
            rcode,
            false,
            (count(6), count(8), count(10)),
            body,
            None,
            limit,
            max_udp,
            out,
        )?;
        let answer = &mut out[start..];
        for &at in self.ttl_offsets.iter() {
            let at = usize::from(at);
            let ttl =
                u32::from_be_bytes([answer[at], answer[at + 1], answer[at + 2], answer[at + 3]]);
            answer[at..at + 4].copy_from_slice(&ttl.saturating_sub(age).to_be_bytes());
        }
        Some(())
    }
}

/// What [`ttl_offsets`] found in a response.
struct Walked {
    /// Where the question section ends.
    question_end: usize,
    /// Where each record's TTL is.
    ttl_offsets: TtlOffsets,
    /// Where the last record starts (an OPT to cut off, if it is one).
    last_start: u16,
}

/// Walks a response: where its question ends, where each record's TTL is, where the last
/// record starts. `None` unless the records fill the message exactly.
fn ttl_offsets(m: &[u8]) -> Option<Walked> {
    let count = |i: usize| usize::from(u16::from_be_bytes([m[i], m[i + 1]]));
    let records = count(6) + count(8) + count(10);
    let mut i = skip_name(m, HEADER)? + 4;
    let question_end = i;
    let mut ttl_offsets = TtlOffsets::with_capacity(records);
    let mut last_start = 0;
    for _ in 0..records {
        last_start = u16::try_from(i).ok()?;
        i = skip_name(m, i)?;
        let ttl_at = i + 4;
        let rdlen = usize::from(u16::from_be_bytes([*m.get(i + 8)?, *m.get(i + 9)?]));
        ttl_offsets.push(u16::try_from(ttl_at).ok()?);
        i += 10 + rdlen;
    }
    (i == m.len()).then_some(Walked {
        question_end,
        ttl_offsets,
        last_start,
    })
}

/// The offset just past the name at `i` (labels, then a zero or a compression pointer).
fn skip_name(m: &[u8], mut i: usize) -> Option<usize> {
    loop {
        let b = *m.get(i)?;
        match b {
            0 => return Some(i + 1),
            b if b & 0xC0 == 0xC0 => return Some(i + 2),
            b if b & 0xC0 == 0 => i += 1 + usize::from(b),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
    use hickory_proto::rr::rdata::CNAME;
    use hickory_proto::rr::RData;
    use hickory_proto::serialize::binary::BinDecodable;
    use std::str::FromStr;

    use crate::resolve::wire::tests::query;

    fn decode(bytes: &[u8]) -> Message {
        Message::from_bytes(bytes).expect("decodes")
    }

    #[test]
    fn blocked_answers_decode_as_answer_blocked_says() {
        for (mode, qtype) in [
            (Sinkhole::Null, RecordType::A),
            (Sinkhole::Null, RecordType::AAAA),
            (Sinkhole::Null, RecordType::HTTPS),
            (Sinkhole::NxDomain, RecordType::A),
            (Sinkhole::Refused, RecordType::A),
        ] {
            for edns in [None, Some(1232)] {
                let bytes = query("Tracking.Vendor.example.", qtype, edns);
                let q = WireQuery::parse(&bytes).unwrap();
                let mut out = Vec::new();
                blocked(&q, mode, 10, "blocked by list v", 512, 1232, &mut out).unwrap();
                let m = decode(&out);
                let name = Name::from_ascii("Tracking.Vendor.example.").unwrap();
                let want = answer::blocked(&name, qtype, mode, 10);
                assert_eq!(m.metadata.id, 0xBEEF);
                assert_eq!(m.metadata.message_type, MessageType::Response);
                assert!(m.metadata.recursion_desired && m.metadata.recursion_available);
                assert!(!m.metadata.authoritative);
                assert_eq!(m.metadata.response_code, want.rcode);
                assert_eq!(m.answers, want.answers, "{mode:?} {qtype}");
                assert_eq!(m.authorities, want.authorities, "{mode:?} {qtype}");
                // The question's case is kept.
                assert_eq!(m.queries[0].name().to_ascii(), "Tracking.Vendor.example.");
                match edns {
                    None => assert!(m.edns.is_none()),
                    Some(_) => {
                        let e = m.edns.as_ref().unwrap();
                        assert_eq!(e.max_payload(), 1232);
                        let opt = e.option(EdnsCode::Unknown(15)).expect("EDE");
                        let EdnsOption::Unknown(15, data) = opt else {
                            panic!("{opt:?}")
                        };
                        assert_eq!(&data[..2], &[0, 15]);
                        assert_eq!(&data[2..], b"blocked by list v");
                    }
                }
            }
        }
    }

    #[test]
    fn answers_past_the_limit_are_left_to_the_general_path() {
        let bytes = query("a.example.", RecordType::HTTPS, Some(512));
        let q = WireQuery::parse(&bytes).unwrap();
        let text = "x".repeat(600);
        let mut out = Vec::new();
        let udp = q.limit(true, 1232);
        assert!(blocked(&q, Sinkhole::Null, 10, &text, udp, 1232, &mut out).is_none());
        assert!(out.is_empty(), "nothing appended when it does not fit");
        let tcp = q.limit(false, 1232);
        assert!(blocked(&q, Sinkhole::Null, 10, &text, tcp, 1232, &mut out).is_some());
    }

    #[test]
    fn cached_answers_keep_the_question_case_and_age() {
        let name = LowerName::from_str("www.example.").unwrap();
        let answers = vec![
            Record::from_rdata(
                Name::from_ascii("www.example.").unwrap(),
                300,
                RData::CNAME(CNAME(Name::from_ascii("Edge.CDN.example.").unwrap())),
            ),
            Record::from_rdata(
                Name::from_ascii("edge.cdn.example.").unwrap(),
                60,
                RData::A(Ipv4Addr::new(192, 0, 2, 1).into()),
            ),
        ];
        let sections = Sections {
            rcode: ResponseCode::NoError,
            answers: &answers,
            authorities: &[],
            additionals: &[],
        };
        let wire = CachedWire::encode(&name, RecordType::A, sections).unwrap();
        let bytes = query("WWW.Example.", RecordType::A, Some(1232));
        let q = WireQuery::parse(&bytes).unwrap();
        // Appended after bytes already in the buffer (another answer of the batch).
        let hit = |q: &WireQuery<'_>, age, limit| {
            let mut out = vec![0xAA; 3];
            wire.answer(q, age, limit, 1232, &mut out)?;
            Some(out.split_off(3))
        };
        let m = decode(&hit(&q, 7, 1232).unwrap());
        assert_eq!(m.metadata.id, 0xBEEF);
        assert_eq!(m.queries[0].name().to_ascii(), "WWW.Example.");
        assert_eq!(m.answers.len(), 2);
        assert_eq!(m.answers[0].ttl, 293);
        assert_eq!(m.answers[1].ttl, 53);
        assert_eq!(m.answers[1].data, answers[1].data);
        assert_eq!(m.edns.as_ref().unwrap().max_payload(), 1232);
        // Without EDNS: no OPT; too small a limit: general path.
        let plain = query("www.example.", RecordType::A, None);
        let q = WireQuery::parse(&plain).unwrap();
        assert!(decode(&hit(&q, 0, 512).unwrap()).edns.is_none());
        assert!(hit(&q, 0, 40).is_none());
    }

    #[test]
    fn an_upstream_response_kept_as_it_came_answers_as_the_encoded_one() {
        let answers = vec![
            Record::from_rdata(
                Name::from_ascii("wWw.Example.").unwrap(),
                300,
                RData::CNAME(CNAME(Name::from_ascii("edge.cdn.example.").unwrap())),
            ),
            Record::from_rdata(
                Name::from_ascii("edge.cdn.example.").unwrap(),
                60,
                RData::A(Ipv4Addr::new(192, 0, 2, 1).into()),
            ),
        ];
        // The upstream's response: its own ID and case, and an OPT.
        let mut up = Message::new(0x4242, MessageType::Response, OpCode::Query);
        up.add_query(Query::query(
            Name::from_ascii("wWw.Example.").unwrap(),
            RecordType::A,
        ));
        up.add_answers(answers.iter().cloned());
        up.set_edns(hickory_proto::op::Edns::new());
        let raw = up.to_vec().unwrap();
        let kept = CachedWire::from_upstream(&raw).unwrap();
        let name = LowerName::from_str("www.example.").unwrap();
        let sections = Sections {
            rcode: ResponseCode::NoError,
            answers: &answers,
            authorities: &[],
            additionals: &[],
        };
        let encoded = CachedWire::encode(&name, RecordType::A, sections).unwrap();
        let bytes = query("WWW.example.", RecordType::A, Some(1232));
        let q = WireQuery::parse(&bytes).unwrap();
        let answer = |w: &CachedWire| {
            let mut out = Vec::new();
            w.answer(&q, 5, 1232, 1232, &mut out).unwrap();
            decode(&out)
        };
        let (a, b) = (answer(&kept), answer(&encoded));
        assert_eq!(a.metadata, b.metadata);
        assert_eq!(a.queries[0].name().to_ascii(), "WWW.example.");
        assert_eq!(a.queries, b.queries);
        assert_eq!(a.answers, b.answers);
        assert_eq!(a.answers[0].ttl, 295);
        assert!(a.additionals.is_empty());
        assert_eq!(a.edns, b.edns);
        // Negative answers and other shapes: encoded from the records instead.
        let mut nx = Message::new(1, MessageType::Response, OpCode::Query);
        nx.metadata.response_code = ResponseCode::NXDomain;
        nx.add_query(Query::query(
            Name::from_ascii("x.example.").unwrap(),
            RecordType::A,
        ));
        assert!(CachedWire::from_upstream(&nx.to_vec().unwrap()).is_none());
        assert!(CachedWire::from_upstream(&raw[..raw.len() - 3]).is_none());
    }

    #[test]
    fn an_opt_before_other_additional_records_is_left_to_hickory() {
        let name = Name::from_ascii("q.zone.example.").unwrap();
        let mut up = Message::new(9, MessageType::Response, OpCode::Query);
        up.add_query(Query::query(name.clone(), RecordType::A));
        up.add_answer(Record::from_rdata(
            name,
            60,
            RData::A(Ipv4Addr::new(192, 0, 2, 1).into()),
        ));
        up.add_additional(Record::from_rdata(
            Name::from_ascii("ns.zone.example.").unwrap(),
            60,
            RData::A(Ipv4Addr::new(127, 0, 0, 1).into()),
        ));
        up.set_edns(hickory_proto::op::Edns::new());
        let raw = up.to_vec().unwrap();
        assert!(CachedWire::from_upstream(&raw).is_some());
        // The same records with the OPT moved before the glue.
        // The OPT is the last record; the glue is the second.
        let walked = ttl_offsets(&raw).unwrap();
        let opt = usize::from(walked.last_start);
        // The glue's owner: "ns" then a pointer (5 bytes), then type and class (4) before its TTL.
        let glue = usize::from(walked.ttl_offsets[1]) - 4 - 5;
        assert_eq!(&raw[glue..glue + 3], b"\x02ns");
        let mut swapped = raw[..glue].to_vec();
        swapped.extend_from_slice(&raw[opt..]);
        swapped.extend_from_slice(&raw[glue..opt]);
        let m = decode(&swapped);
        assert_eq!(m.additionals.len(), 1, "still the glue and an OPT");
        assert!(m.edns.is_some());
        assert!(CachedWire::from_upstream(&swapped).is_none());
    }
}
