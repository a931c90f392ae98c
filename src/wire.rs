//! DNS wire format for the direct path: reading a query of the common shape straight from the
//! datagram, and writing the answers telesink makes without an upstream (blocked, refused,
//! cached) straight into bytes.
//!
//! Why: decoding every query into hickory's `Request` and encoding every answer with its
//! `BinEncoder` (name compression, record by record) cost ~40 % of a blocked query's
//! instructions (bench/RESULTS.md, "Profile of the blocked path"). These answers have a fixed
//! shape: the question echoed, at most one record whose owner is the question name (a pointer
//! to offset 12), and an OPT. Anything else, and any query of another shape, takes the general
//! path through hickory, which stays the reference: the tests compare the two.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, LazyLock};

use hickory_proto::op::{Message, MessageType, Metadata, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, LowerName, Name, RData, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

use crate::answer::{self, ede};
use crate::config::BlockMode;
use crate::upstream::UpstreamAnswer;

/// Longest name in wire format (RFC 1035 §2.3.4).
pub const MAX_NAME: usize = 255;
const HEADER: usize = 12;
const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;
/// Header flag bits.
const QR: u8 = 0x80;
const AA: u8 = 0x04;
const RD: u8 = 0x01;
const RA: u8 = 0x80;
const CD: u8 = 0x10;
/// Offset 12, where the question name starts: what every answer record's owner points to.
const POINTER_TO_QNAME: [u8; 2] = [0xC0, 0x0C];

/// A query of the common shape, read from the wire: one question of class IN whose name is
/// plain text labels without compression, opcode QUERY, no records but an optional EDNS(0) OPT.
pub struct WireQuery<'a> {
    message: &'a [u8],
    /// End of the question section (name, type, class) in `message`.
    question_end: usize,
    /// The name in lower case as dotted text without the trailing dot.
    text: [u8; MAX_NAME],
    text_len: usize,
    pub qtype: RecordType,
    /// The client's EDNS UDP payload size, when the query had an OPT record.
    pub edns_payload: Option<u16>,
}

impl<'a> WireQuery<'a> {
    /// `None` for anything but the common shape; the general path takes those (and answers
    /// FORMERR, NOTIMP, BADVERS, or whatever they deserve).
    pub fn parse(message: &'a [u8]) -> Option<WireQuery<'a>> {
        let h = message.get(..HEADER)?;
        // A query (QR clear), opcode QUERY, not truncated.
        if h[2] & (QR | 0x78 | 0x02) != 0 {
            return None;
        }
        let count = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
        let (qd, an, ns, ar) = (count(4), count(6), count(8), count(10));
        if qd != 1 || an != 0 || ns != 0 || ar > 1 {
            return None;
        }
        let mut q = WireQuery {
            message,
            question_end: 0,
            text: [0; MAX_NAME],
            text_len: 0,
            qtype: RecordType::A,
            edns_payload: None,
        };
        let mut i = HEADER;
        let mut wire_len = 1; // the root label
        loop {
            let len = usize::from(*message.get(i)?);
            if len == 0 {
                break;
            }
            // Compression pointers and extended label types: general path.
            wire_len += 1 + len;
            if len > 63 || wire_len > MAX_NAME {
                return None;
            }
            let label = message.get(i + 1..i + 1 + len)?;
            if q.text_len > 0 {
                q.text[q.text_len] = b'.';
                q.text_len += 1;
            }
            for &b in label {
                // Printable ASCII only, and no dot inside a label: the lists' text form of the
                // name must split back into the same labels.
                if !(0x21..=0x7e).contains(&b) || b == b'.' {
                    return None;
                }
                q.text[q.text_len] = b.to_ascii_lowercase();
                q.text_len += 1;
            }
            i += 1 + len;
        }
        // The root name: general path (nothing to match, and rare from clients).
        if q.text_len == 0 {
            return None;
        }
        i += 1;
        let fixed = message.get(i..i + 4)?;
        q.qtype = RecordType::from(u16::from_be_bytes([fixed[0], fixed[1]]));
        if u16::from_be_bytes([fixed[2], fixed[3]]) != CLASS_IN {
            return None;
        }
        i += 4;
        q.question_end = i;
        if ar == 1 {
            // The OPT: root owner, type 41, class = payload size, TTL = extended rcode,
            // version (must be 0) and flags, then well-formed options.
            let opt = message.get(i..i + 11)?;
            if opt[0] != 0 || u16::from_be_bytes([opt[1], opt[2]]) != TYPE_OPT || opt[6] != 0 {
                return None;
            }
            q.edns_payload = Some(u16::from_be_bytes([opt[3], opt[4]]));
            let rdlen = usize::from(u16::from_be_bytes([opt[9], opt[10]]));
            i += 11;
            let end = i.checked_add(rdlen)?;
            let mut o = i;
            while o < end {
                let code = u16::from_be_bytes([*message.get(o)?, *message.get(o + 1)?]);
                // Options with a structure (NSID, DAU/DHU/N3U, client subnet): the general
                // decoder checks them and answers FORMERR when broken; the rest (cookies,
                // padding, ...) are opaque to both paths.
                if matches!(code, 3 | 5..=8) {
                    return None;
                }
                let len = usize::from(u16::from_be_bytes([
                    *message.get(o + 2)?,
                    *message.get(o + 3)?,
                ]));
                o += 4 + len;
            }
            if o != end {
                return None;
            }
            i = end;
        }
        // Trailing bytes: general path.
        if i != message.len() {
            return None;
        }
        Some(q)
    }

    /// The name in lower case, wire format (the cache key), written into `buf`: made only
    /// when the cache is asked, not for blocked names.
    pub fn lower_name<'b>(&self, buf: &'b mut [u8; MAX_NAME]) -> &'b [u8] {
        write_name(self.labels(), buf)
    }

    /// The name in lower case, dotted, without the trailing dot.
    pub fn text(&self) -> &str {
        // Only printable ASCII was copied in.
        std::str::from_utf8(&self.text[..self.text_len]).unwrap_or("")
    }

    /// The labels, left to right, lower case.
    pub fn labels(&self) -> impl DoubleEndedIterator<Item = &[u8]> {
        self.text[..self.text_len].split(|&b| b == b'.')
    }

    /// The question section as received (original case), echoed in every answer.
    fn question(&self) -> &'a [u8] {
        &self.message[HEADER..self.question_end]
    }

    /// Largest answer the client takes: its EDNS size within [512, `max_udp`] over UDP (512
    /// without EDNS), 65535 over TCP.
    pub fn limit(&self, udp: bool, max_udp: u16) -> usize {
        if udp {
            usize::from(self.edns_payload.map_or(512, |p| p.clamp(512, max_udp)))
        } else {
            usize::from(u16::MAX)
        }
    }
}

/// Writes `labels` as a name in wire format into `buf`. The labels must fit a name (at most
/// 255 bytes in wire form, root included), as a parsed query's or a `LowerName`'s do.
pub fn write_name<'a, 'b>(
    labels: impl Iterator<Item = &'a [u8]>,
    buf: &'b mut [u8; MAX_NAME],
) -> &'b [u8] {
    let mut len = 0;
    for label in labels {
        buf[len] = label.len() as u8;
        buf[len + 1..len + 1 + label.len()].copy_from_slice(label);
        len += 1 + label.len();
    }
    buf[len] = 0;
    &buf[..len + 1]
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
    let req = &q.message[..HEADER];
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
        out.extend_from_slice(&[0, 0, 0, 0]);
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
    mode: BlockMode,
    ttl: u32,
    text: &str,
    limit: usize,
    max_udp: u16,
    out: &mut Vec<u8>,
) -> Option<()> {
    let mut body = [0u8; 128];
    let (rcode, counts, len) = match (mode, q.qtype) {
        (BlockMode::Refused, _) => (ResponseCode::Refused, (0, 0, 0), 0),
        (BlockMode::Null, RecordType::A) => {
            let n = record(
                &mut body,
                RecordType::A,
                ttl,
                &Ipv4Addr::UNSPECIFIED.octets(),
            );
            (ResponseCode::NoError, (1, 0, 0), n)
        }
        (BlockMode::Null, RecordType::AAAA) => {
            let n = record(
                &mut body,
                RecordType::AAAA,
                ttl,
                &Ipv6Addr::UNSPECIFIED.octets(),
            );
            (ResponseCode::NoError, (1, 0, 0), n)
        }
        (BlockMode::Null, _) => (ResponseCode::NoError, (0, 1, 0), soa(&mut body, ttl)),
        (BlockMode::Nxdomain, _) => (ResponseCode::NXDomain, (0, 1, 0), soa(&mut body, ttl)),
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
    ttl_offsets: Box<[u16]>,
    /// CNAME, HTTPS and SVCB targets in the answer (lower case, dotted): re-checked against the
    /// asking client's policy on every hit (CNAME cloaking).
    pub targets: Box<[Arc<str>]>,
}

impl CachedWire {
    /// `None` when the answer cannot be encoded, or is too large to be worth a direct path
    /// (larger than any UDP answer we send: such answers go through the general path).
    pub fn encode(name: &LowerName, qtype: RecordType, a: &UpstreamAnswer) -> Option<CachedWire> {
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
        let (question_end, ttl_offsets) = ttl_offsets(&bytes)?;
        let targets = a
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::CNAME(c) => Some(&c.0),
                RData::HTTPS(h) => Some(&h.0.target_name),
                RData::SVCB(s) => Some(&s.target_name),
                _ => None,
            })
            .filter(|t| !t.is_root())
            .map(|t| {
                let mut text = t.to_lowercase().to_ascii();
                if text.ends_with('.') {
                    text.pop();
                }
                Arc::from(text)
            })
            .collect();
        Some(CachedWire {
            bytes: bytes.into_boxed_slice(),
            question_end: question_end as u16,
            ttl_offsets: ttl_offsets.into_boxed_slice(),
            targets,
        })
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

/// Walks a response and returns where its question ends and where each record's TTL is.
fn ttl_offsets(m: &[u8]) -> Option<(usize, Vec<u16>)> {
    let count = |i: usize| usize::from(u16::from_be_bytes([m[i], m[i + 1]]));
    let records = count(6) + count(8) + count(10);
    let mut i = skip_name(m, HEADER)? + 4;
    let question_end = i;
    let mut offsets = Vec::with_capacity(records);
    for _ in 0..records {
        i = skip_name(m, i)?;
        let ttl_at = i + 4;
        let rdlen = usize::from(u16::from_be_bytes([*m.get(i + 8)?, *m.get(i + 9)?]));
        offsets.push(u16::try_from(ttl_at).ok()?);
        i += 10 + rdlen;
    }
    (i == m.len()).then_some((question_end, offsets))
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
    use hickory_proto::op::Edns;
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
    use hickory_proto::rr::rdata::CNAME;
    use hickory_proto::rr::Record;
    use hickory_proto::serialize::binary::BinDecodable;
    use std::str::FromStr;

    fn query(name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
        let mut m = Message::new(0xBEEF, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        if let Some(p) = edns {
            let mut e = Edns::new();
            e.set_max_payload(p);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    #[test]
    fn parses_the_common_shape() {
        let bytes = query("Tracking.MIUI.com.", RecordType::AAAA, Some(4096));
        let q = WireQuery::parse(&bytes).unwrap();
        assert_eq!(q.text(), "tracking.miui.com");
        assert_eq!(
            q.lower_name(&mut [0; MAX_NAME]),
            b"\x08tracking\x04miui\x03com\x00"
        );
        assert_eq!(q.qtype, RecordType::AAAA);
        assert_eq!(q.edns_payload, Some(4096));
        assert_eq!(q.limit(true, 1232), 1232);
        assert_eq!(q.limit(false, 1232), 65535);
        let labels: Vec<&[u8]> = q.labels().collect();
        assert_eq!(labels, [&b"tracking"[..], b"miui", b"com"]);
        // The question is echoed as received.
        assert_eq!(&q.question()[1..9], b"Tracking");
    }

    #[test]
    fn other_shapes_go_to_the_general_path() {
        let ok = query("a.example.", RecordType::A, None);
        assert!(WireQuery::parse(&ok).is_some());
        // A response, another opcode, TC, two questions.
        for (byte, bits) in [(2, 0x80), (2, 0x10), (2, 0x02), (5, 0x02)] {
            let mut b = ok.clone();
            b[byte] |= bits;
            assert!(WireQuery::parse(&b).is_none(), "byte {byte} bits {bits:#x}");
        }
        // Class CH, trailing bytes, truncated, root name, a compression pointer.
        let mut ch = ok.clone();
        let n = ch.len();
        ch[n - 1] = 3;
        assert!(WireQuery::parse(&ch).is_none());
        let mut trailing = ok.clone();
        trailing.push(0);
        assert!(WireQuery::parse(&trailing).is_none());
        assert!(WireQuery::parse(&ok[..ok.len() - 1]).is_none());
        assert!(WireQuery::parse(&query(".", RecordType::NS, None)).is_none());
        let mut ptr = ok[..12].to_vec();
        ptr.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1]);
        assert!(WireQuery::parse(&ptr).is_none());
        // A dot or a non-ASCII byte inside a label.
        let mut dot = ok.clone();
        dot[13] = b'.';
        assert!(WireQuery::parse(&dot).is_none());
        // EDNS version 1 (BADVERS is the general path's), and a broken option.
        let mut v1 = query("a.example.", RecordType::A, Some(1232));
        let opt = v1.len() - 11;
        v1[opt + 6] = 1;
        assert!(WireQuery::parse(&v1).is_none());
        let mut bad = query("a.example.", RecordType::A, Some(1232));
        let n = bad.len();
        bad[n - 1] = 3; // rdlen 3: not a whole option
        bad.extend_from_slice(&[0, 10, 0]);
        assert!(WireQuery::parse(&bad).is_none());
    }

    #[test]
    fn structured_edns_options_go_to_the_general_path() {
        // Found by the `request` fuzz target (differential): a client-subnet option of an
        // unknown family, which hickory's decoder rejects (FORMERR), beside a cookie and padding.
        let with_options = |options: &[u8]| {
            let mut b = query("cached.example.", RecordType::A, Some(1232));
            let n = b.len();
            b[n - 2..].copy_from_slice(&(options.len() as u16).to_be_bytes());
            b.extend_from_slice(options);
            b
        };
        let cookie = [0, 10, 0, 8, 1, 1, 1, 1, 1, 1, 1, 1];
        let padding = [0, 12, 0, 4, 0, 0, 0, 0];
        let subnet = [0, 8, 0, 7, 0, 0xfa, 0x0c, 0, 0x10, 0, 0];
        let opaque = [cookie.as_slice(), &padding].concat();
        assert!(WireQuery::parse(&with_options(&opaque)).is_some());
        let broken = [cookie.as_slice(), &padding, &subnet].concat();
        assert!(WireQuery::parse(&with_options(&broken)).is_none());
    }

    fn decode(bytes: &[u8]) -> Message {
        Message::from_bytes(bytes).expect("decodes")
    }

    #[test]
    fn blocked_answers_decode_as_answer_blocked_says() {
        for (mode, qtype) in [
            (BlockMode::Null, RecordType::A),
            (BlockMode::Null, RecordType::AAAA),
            (BlockMode::Null, RecordType::HTTPS),
            (BlockMode::Nxdomain, RecordType::A),
            (BlockMode::Refused, RecordType::A),
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
        assert!(blocked(&q, BlockMode::Null, 10, &text, udp, 1232, &mut out).is_none());
        assert!(out.is_empty(), "nothing appended when it does not fit");
        let tcp = q.limit(false, 1232);
        assert!(blocked(&q, BlockMode::Null, 10, &text, tcp, 1232, &mut out).is_some());
    }

    #[test]
    fn cached_answers_keep_the_question_case_and_age() {
        let name = LowerName::from_str("www.example.").unwrap();
        let answer = UpstreamAnswer {
            rcode: ResponseCode::NoError,
            answers: vec![
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
            ],
            authorities: vec![],
            additionals: vec![],
            negative_ttl: None,
        };
        let wire = CachedWire::encode(&name, RecordType::A, &answer).unwrap();
        assert_eq!(&*wire.targets, [Arc::<str>::from("edge.cdn.example")]);
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
        assert_eq!(m.answers[1].data, answer.answers[1].data);
        assert_eq!(m.edns.as_ref().unwrap().max_payload(), 1232);
        // Without EDNS: no OPT; too small a limit: general path.
        let plain = query("www.example.", RecordType::A, None);
        let q = WireQuery::parse(&plain).unwrap();
        assert!(decode(&hit(&q, 0, 512).unwrap()).edns.is_none());
        assert!(hit(&q, 0, 40).is_none());
    }
}
