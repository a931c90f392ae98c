//! The DoH rules both HTTP stacks share (RFC 8484): which requests are DNS queries, what is
//! refused with which status, and the response to an answer. The HTTP/1.1 path (hyper) and the
//! HTTP/2 path (h2) differ only in how they read bodies and write responses.
//!
//! GET `?dns=<base64url>` and POST `application/dns-message` on `/dns-query` and
//! `/dns-query/<id>`; the DNS message goes through the same handler as UDP and TCP, as a stream
//! query (no truncation). `cache-control: max-age` is the answer's smallest TTL.

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use futures_util::StreamExt;
use hickory_server::net::xfer::BufDnsStreamHandle;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::ResponseHandle;
use hyper::body::Bytes;
use hyper::header::{HeaderMap, HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Response, StatusCode, Uri};

use crate::observe::transport::Transport;
use crate::resolve::handler::Pending;
use crate::resolve::identity::Origin;
use crate::resolve::Handler;

const PATH: &str = "/dns-query";
const DNS_MESSAGE: &str = "application/dns-message";
/// A DNS message is at most 65535 bytes (RFC 8484 §6 keeps DNS's limit).
pub const MAX_MESSAGE: usize = 65_535;

/// Why a request gets no DNS answer; each is one status and one line of text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not `/dns-query` or `/dns-query/<id>`.
    NotFound,
    /// GET without a decodable `dns` parameter.
    NoDnsParameter,
    /// Not a DNS query (too short, QR set, or the handler could not read it).
    NotAQuery,
    /// POST with another content type than `application/dns-message`.
    UnsupportedMediaType,
    /// POST body over [`MAX_MESSAGE`].
    TooLarge,
    /// Neither GET nor POST.
    MethodNotAllowed,
}

impl Refusal {
    fn status(self) -> StatusCode {
        match self {
            Refusal::NotFound => StatusCode::NOT_FOUND,
            Refusal::NoDnsParameter | Refusal::NotAQuery => StatusCode::BAD_REQUEST,
            Refusal::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Refusal::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    fn text(self) -> &'static str {
        match self {
            Refusal::NotFound => "not found: DNS queries go to /dns-query\n",
            Refusal::NoDnsParameter => "bad request: expected ?dns=<DNS message in base64url>\n",
            Refusal::NotAQuery => "bad request: not a DNS query\n",
            Refusal::UnsupportedMediaType => {
                "unsupported media type: expected application/dns-message\n"
            }
            Refusal::TooLarge => "a DNS message is at most 65535 bytes\n",
            Refusal::MethodNotAllowed => "use GET or POST\n",
        }
    }

    /// The response head and body.
    pub fn response(self) -> (Response<()>, Bytes) {
        let mut r = Response::new(());
        *r.status_mut() = self.status();
        let h = r.headers_mut();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if self == Refusal::MethodNotAllowed {
            h.insert(ALLOW, HeaderValue::from_static("GET, POST"));
        }
        (r, Bytes::from_static(self.text().as_bytes()))
    }
}

/// Where a request's DNS message is, once its head is read.
#[derive(Debug, PartialEq, Eq)]
pub enum Carrier {
    /// GET: decoded from the `dns` parameter into the caller's buffer.
    Query,
    /// POST `application/dns-message`: the body.
    Body,
}

/// A request head judged: the device id of its path and where its DNS message is. A GET's
/// message is decoded into `query` (cleared first): a buffer the caller keeps across requests.
pub fn judge(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    query: &mut Vec<u8>,
) -> Result<(Option<Arc<str>>, Carrier), Refusal> {
    let device = device_of(uri.path()).map_err(|()| Refusal::NotFound)?;
    if method == Method::GET {
        query.clear();
        let param = uri.query().and_then(dns_param);
        match param.map(|p| decode_into(p, query)) {
            Some(true) => Ok((device, Carrier::Query)),
            _ => Err(Refusal::NoDnsParameter),
        }
    } else if method == Method::POST {
        let ct = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
        if ct.is_some_and(|c| c.trim().eq_ignore_ascii_case(DNS_MESSAGE)) {
            Ok((device, Carrier::Body))
        } else {
            Err(Refusal::UnsupportedMediaType)
        }
    } else {
        Err(Refusal::MethodNotAllowed)
    }
}

/// A DNS query has a 12-byte header with QR clear; anything else is no query at all.
pub fn check_query(query: &[u8]) -> Result<(), Refusal> {
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return Err(Refusal::NotAQuery);
    }
    Ok(())
}

pub fn origin(device: Option<Arc<str>>) -> Origin {
    Origin {
        transport: Transport::Https,
        device,
    }
}

/// The response head and body for the DNS answer `answer`.
pub fn answered(answer: Vec<u8>) -> (Response<()>, Bytes) {
    let max_age = min_ttl(&answer);
    let mut r = Response::new(());
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(DNS_MESSAGE));
    h.insert(CACHE_CONTROL, max_age_value(max_age));
    (r, Bytes::from(answer))
}

/// The handler's answer on the general path (after the direct one passed), whose response
/// handle writes into a channel of one; `None` when the handler did not answer (not a query).
pub async fn answer_general(
    handler: &Handler,
    peer: SocketAddr,
    origin: &Origin,
    query: Vec<u8>,
    pending: Option<Box<Pending>>,
) -> Option<Vec<u8>> {
    let (sender, mut answers) = BufDnsStreamHandle::new(peer);
    let responder = ResponseHandle::new(peer, sender, Protocol::Tcp);
    // Boxed: the general path's future is large, and moving it into the caller's future would
    // make every request's future that large, direct answers included.
    Box::pin(handler.answer_wire_from(query, peer, origin, responder, pending)).await;
    answers.next().await.map(|m| m.into_parts().0)
}

/// The handler's answer to `query`, the direct path first.
pub async fn answer(
    handler: &Handler,
    peer: SocketAddr,
    origin: &Origin,
    query: Vec<u8>,
) -> Option<Vec<u8>> {
    match handler.answer_direct_as(&query, peer, origin) {
        Ok(answer) => Some(answer),
        Err(pending) => answer_general(handler, peer, origin, query, pending).await,
    }
}

/// The device id of a DoH path: `None` for `/dns-query`, `Some(id)` for `/dns-query/<id>`;
/// `Err` for any other path.
fn device_of(path: &str) -> Result<Option<Arc<str>>, ()> {
    let rest = path.strip_prefix(PATH).ok_or(())?;
    match rest.trim_end_matches('/') {
        "" => Ok(None),
        r => {
            let id = r.strip_prefix('/').ok_or(())?;
            crate::tls::id_label(id).map(Some).ok_or(())
        }
    }
}

/// The base64url `dns` parameter of a GET query string, padding removed.
fn dns_param(query: &str) -> Option<&str> {
    let v = query.split('&').find_map(|kv| kv.strip_prefix("dns="))?;
    Some(v.trim_end_matches("%3D").trim_end_matches('='))
}

/// Decodes base64url `param` into `out` (appending); false when it is not base64url.
fn decode_into(param: &str, out: &mut Vec<u8>) -> bool {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode_vec(param, out)
        .is_ok()
}

/// `max-age=<ttl>` without `format!`'s allocation (the header value copies it once).
fn max_age_value(ttl: u32) -> HeaderValue {
    let mut buf = [0u8; 18]; // "max-age=" + up to 10 digits
    buf[..8].copy_from_slice(b"max-age=");
    let mut digits = [0u8; 10];
    let mut n = ttl;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let len = 8 + digits.len() - i;
    buf[8..len].copy_from_slice(&digits[i..]);
    HeaderValue::from_bytes(&buf[..len]).expect("ASCII digits")
}

/// The smallest TTL of the answer's records (answer and authority sections; RFC 8484 §5.1),
/// 0 when it has none or the message does not parse. Read off the wire: a full parse of every
/// answer cost more than the rest of the DNS work of a cached answer.
fn min_ttl(answer: &[u8]) -> u32 {
    let count = |at: usize| -> Option<usize> {
        Some(u16::from_be_bytes([*answer.get(at)?, *answer.get(at + 1)?]) as usize)
    };
    let walk = || -> Option<Option<u32>> {
        let (questions, records) = (count(4)?, count(6)? + count(8)?);
        let mut at = 12;
        for _ in 0..questions {
            at = skip_name(answer, at)? + 4; // QTYPE, QCLASS
        }
        let mut min: Option<u32> = None;
        for _ in 0..records {
            at = skip_name(answer, at)?;
            // TYPE, CLASS, TTL, RDLENGTH, RDATA
            let fixed = answer.get(at..at + 10)?;
            let ttl = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
            min = Some(min.map_or(ttl, |m| m.min(ttl)));
            at += 10 + u16::from_be_bytes([fixed[8], fixed[9]]) as usize;
            if at > answer.len() {
                return None;
            }
        }
        Some(min)
    };
    walk().flatten().unwrap_or(0)
}

/// The offset just past the (possibly compressed) name at `at`.
fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *msg.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xC0 == 0xC0 => return msg.get(at + 1).map(|_| at + 2),
            l if l & 0xC0 == 0 => at += 1 + l as usize,
            _ => return None, // extended label types (RFC 6891 §5) are not in use
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(
        path_and_query: &str,
        buf: &mut Vec<u8>,
    ) -> Result<(Option<Arc<str>>, Carrier), Refusal> {
        let uri: Uri = path_and_query.parse().unwrap();
        judge(&Method::GET, &uri, &HeaderMap::new(), buf)
    }

    #[test]
    fn paths_and_parameters() {
        assert_eq!(device_of("/dns-query"), Ok(None));
        assert_eq!(
            device_of("/dns-query/anna-phone"),
            Ok(Some("anna-phone".into()))
        );
        assert_eq!(device_of("/dns-query/a/b"), Err(()));
        assert_eq!(device_of("/dns-queryx"), Err(()));
        assert_eq!(device_of("/"), Err(()));
        assert_eq!(dns_param("dns=AAABAAAB"), Some("AAABAAAB"));
        assert_eq!(dns_param("ct=x&dns=AAABAAAB%3D"), Some("AAABAAAB"));
        assert_eq!(dns_param("x=1"), None);

        // The buffer is reused: a second GET's message replaces the first's.
        let mut buf = Vec::new();
        assert_eq!(
            get("/dns-query/kids?dns=AAABAAABAAAA", &mut buf),
            Ok((Some("kids".into()), Carrier::Query))
        );
        assert_eq!(buf, [0, 0, 1, 0, 0, 1, 0, 0, 0]);
        assert_eq!(
            get("/dns-query?dns=AAAB", &mut buf),
            Ok((None, Carrier::Query))
        );
        assert_eq!(buf, [0, 0, 1]);
        assert_eq!(
            get("/dns-query?dns=!!", &mut buf),
            Err(Refusal::NoDnsParameter)
        );
        assert_eq!(
            get("/dns-query?x=1", &mut buf),
            Err(Refusal::NoDnsParameter)
        );
        assert_eq!(get("/dns-query", &mut buf), Err(Refusal::NoDnsParameter));
        assert_eq!(get("/other?dns=AAAB", &mut buf), Err(Refusal::NotFound));
    }

    #[test]
    fn post_needs_the_dns_message_type() {
        let uri: Uri = "/dns-query".parse().unwrap();
        let mut headers = HeaderMap::new();
        let mut buf = Vec::new();
        assert_eq!(
            judge(&Method::POST, &uri, &headers, &mut buf),
            Err(Refusal::UnsupportedMediaType)
        );
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("Application/DNS-Message"),
        );
        assert_eq!(
            judge(&Method::POST, &uri, &headers, &mut buf),
            Ok((None, Carrier::Body))
        );
        assert_eq!(
            judge(&Method::PUT, &uri, &headers, &mut buf),
            Err(Refusal::MethodNotAllowed)
        );
        let (head, _) = Refusal::MethodNotAllowed.response();
        assert_eq!(head.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(head.headers()[ALLOW], "GET, POST");
    }

    #[test]
    fn max_age_header() {
        for ttl in [0, 7, 10, 3600, 86_400, u32::MAX] {
            assert_eq!(max_age_value(ttl), format!("max-age={ttl}").as_str());
        }
    }

    /// The wire walk gives what a full parse gives, for answers with and without records,
    /// compression, several sections, and for truncated or garbled messages (0).
    #[test]
    fn min_ttl_matches_a_full_parse() {
        use hickory_proto::op::{Message, MessageType, Query};
        use hickory_proto::rr::rdata::A;
        use hickory_proto::rr::{Name, RData, Record, RecordType};

        let full = |wire: &[u8]| -> u32 {
            let Ok(m) = Message::from_vec(wire) else {
                return 0;
            };
            m.answers
                .iter()
                .chain(m.authorities.iter())
                .map(|r| r.ttl)
                .min()
                .unwrap_or(0)
        };
        let name = Name::from_ascii("a.example.com.").unwrap();
        let a = |ttl| Record::from_rdata(name.clone(), ttl, RData::A(A::new(192, 0, 2, 1)));
        let zone = Name::from_ascii("example.com.").unwrap();
        let soa = |ttl| crate::resolve::answer::soa(&zone, ttl);
        let message = |answers: Vec<Record>, authorities: Vec<Record>| {
            let mut m = Message::new(7, MessageType::Response, hickory_proto::op::OpCode::Query);
            m.add_query(Query::query(name.clone(), RecordType::A));
            m.add_answers(answers);
            m.add_authorities(authorities);
            m.to_vec().unwrap()
        };
        let cases = [
            message(vec![a(300)], vec![]),
            message(vec![a(300), a(20), a(4000)], vec![]),
            message(vec![], vec![soa(60)]),
            message(vec![a(90)], vec![soa(30)]),
            message(vec![], vec![]),
        ];
        let expected = [300, 20, 60, 30, 0];
        for (wire, want) in cases.iter().zip(expected) {
            assert_eq!(min_ttl(wire), want);
            assert_eq!(min_ttl(wire), full(wire));
            for cut in 0..wire.len() {
                // A truncated message has no TTL to give (a full parse fails too).
                if full(&wire[..cut]) == 0 {
                    assert_eq!(min_ttl(&wire[..cut]), 0, "cut at {cut}");
                }
            }
        }
        assert_eq!(min_ttl(&[0xff; 40]), 0);
    }
}
