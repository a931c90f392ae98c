//! The direct path's view of a query: reading a query of the common shape straight from the
//! datagram, without hickory's decoder. Its answers are written by [`super::encode_wire`].
//!
//! Why: decoding every query into hickory's `Request` and encoding every answer with its
//! `BinEncoder` (name compression, record by record) cost ~40 % of a blocked query's
//! instructions (bench/RESULTS.md, "Profile of the blocked path"). Any query of another shape
//! takes the general path through hickory, which stays the reference: the tests compare the two.
//! This is the codec layer: it knows DNS, not the configuration or the upstreams.

use hickory_proto::rr::{Name, RecordType};

/// Longest name in wire format (RFC 1035 §2.3.4).
pub const MAX_NAME: usize = 255;
pub(super) const HEADER: usize = 12;
pub(super) const TYPE_OPT: u16 = 41;
pub(super) const CLASS_IN: u16 = 1;
/// The QR header flag bit (byte 2): set in responses.
pub(super) const QR: u8 = 0x80;

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
    /// The OPT's DO bit (RFC 3225): echoed in the answer's OPT.
    pub dnssec_ok: bool,
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
            dnssec_ok: false,
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
            q.dnssec_ok = opt[7] & 0x80 != 0;
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
        // The dotted text one byte on, each dot replaced by the length of the label after it
        // and the first byte by the first label's: one copy and one pass, no label splitting.
        // `parse` keeps the wire form (text + 2 bytes) within MAX_NAME.
        let n = self.text_len;
        let text = &self.text[..n];
        buf[1..=n].copy_from_slice(text);
        let mut len = 0u8;
        for i in (0..n).rev() {
            if text[i] == b'.' {
                buf[i + 1] = len;
                len = 0;
            } else {
                len += 1;
            }
        }
        buf[0] = len;
        buf[n + 1] = 0;
        &buf[..n + 2]
    }

    /// The name in lower case, dotted, without the trailing dot.
    pub fn text(&self) -> &str {
        let text = &self.text[..self.text_len];
        debug_assert!(text.is_ascii());
        // SAFETY: `parse` copies in printable ASCII only (0x21..=0x7e, and dots), which is
        // UTF-8. Not checked again: it is read several times per query (~350 instructions).
        unsafe { std::str::from_utf8_unchecked(text) }
    }

    /// The labels, left to right, lower case.
    pub fn labels(&self) -> impl DoubleEndedIterator<Item = &[u8]> {
        self.text[..self.text_len].split(|&b| b == b'.')
    }

    /// The question section as received (original case), echoed in every answer.
    pub fn question(&self) -> &'a [u8] {
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

    /// The header as received (ID and flags are echoed).
    pub fn header(&self) -> &'a [u8] {
        &self.message[..HEADER]
    }

    /// The whole datagram.
    pub fn message(&self) -> &'a [u8] {
        self.message
    }
}

/// A parsed query that owns its datagram: kept while the query waits for its upstream (the
/// UDP fast path), and read back ([`get`](Self::get)) without parsing it again.
pub struct OwnedQuery {
    message: Vec<u8>,
    question_end: usize,
    text: [u8; MAX_NAME],
    text_len: usize,
    qtype: RecordType,
    edns_payload: Option<u16>,
    dnssec_ok: bool,
}

impl OwnedQuery {
    pub fn new(q: &WireQuery<'_>) -> OwnedQuery {
        OwnedQuery {
            message: q.message.to_vec(),
            question_end: q.question_end,
            text: q.text,
            text_len: q.text_len,
            qtype: q.qtype,
            edns_payload: q.edns_payload,
            dnssec_ok: q.dnssec_ok,
        }
    }

    /// The query as [`WireQuery::parse`] read it.
    pub fn get(&self) -> WireQuery<'_> {
        WireQuery {
            message: &self.message,
            question_end: self.question_end,
            text: self.text,
            text_len: self.text_len,
            qtype: self.qtype,
            edns_payload: self.edns_payload,
            dnssec_ok: self.dnssec_ok,
        }
    }

    /// The datagram, for the general path (which parses it its own way).
    pub fn into_bytes(self) -> Vec<u8> {
        self.message
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

/// Writes `name` as lower-case dotted text without the trailing dot into `buf`: the form the
/// lists, regexes, events and EDE texts use.
pub fn dotted<'b>(name: &Name, buf: &'b mut [u8; 256]) -> &'b str {
    let mut len = 0;
    for label in name.iter() {
        if len > 0 && len < buf.len() {
            buf[len] = b'.';
            len += 1;
        }
        let n = label.len().min(buf.len() - len);
        for (i, b) in label[..n].iter().enumerate() {
            buf[len + i] = b.to_ascii_lowercase();
        }
        len += n;
    }
    // Binary labels are legal DNS but not text; they match no list anyway.
    std::str::from_utf8(&buf[..len]).unwrap_or("")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};

    /// A query as a client sends it (ID 0xBEEF, RD set), with EDNS when `edns` is a payload
    /// size; the encoder's tests use it too.
    pub(crate) fn query(name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
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
    fn lower_name_is_the_labels_in_wire_form() {
        let longest = format!(
            "{}.",
            [
                "a".repeat(63),
                "b".repeat(63),
                "c".repeat(63),
                "d".repeat(61)
            ]
            .join(".")
        );
        for name in [
            "A.",
            "Tracking.MIUI.com.",
            "x.y.z.w.v.u.",
            "_dns.Resolver.ARPA.",
            &longest,
        ] {
            let bytes = query(name, RecordType::A, None);
            let q = WireQuery::parse(&bytes).unwrap();
            let mut a = [0; MAX_NAME];
            let mut b = [0; MAX_NAME];
            assert_eq!(
                q.lower_name(&mut a),
                write_name(q.labels(), &mut b),
                "{name}"
            );
        }
    }

    #[test]
    fn an_owned_query_reads_back_as_parsed() {
        for (name, qtype, edns) in [
            ("Tracking.MIUI.com.", RecordType::AAAA, Some(4096)),
            ("a.example.", RecordType::A, None),
        ] {
            let bytes = query(name, qtype, edns);
            let q = WireQuery::parse(&bytes).unwrap();
            let owned = OwnedQuery::new(&q);
            let back = owned.get();
            assert_eq!(back.message(), &bytes[..]);
            assert_eq!(back.text(), q.text());
            assert_eq!(back.question(), q.question());
            assert_eq!(back.header(), q.header());
            assert_eq!((back.qtype, back.edns_payload), (q.qtype, q.edns_payload));
            assert_eq!(back.dnssec_ok, q.dnssec_ok);
            assert_eq!(back.limit(true, 1232), q.limit(true, 1232));
            assert!(back.labels().eq(q.labels()));
            assert_eq!(owned.into_bytes(), bytes);
        }
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
}
