//! DNS over HTTPS (RFC 8484) on `server.https_listen`: hyper (HTTP/2 and HTTP/1.1, chosen by
//! ALPN) over tokio-rustls, our own small accept loop so that the peer address (access control,
//! rate limit) and the path's device id (`/dns-query/anna-phone`) reach the handler. hyper
//! rather than axum's router: two routes, and the connection is ours (TLS, peer, cap).
//!
//! GET `?dns=<base64url>` and POST `application/dns-message` on `/dns-query` and
//! `/dns-query/<id>`; the DNS message goes through the same handler as UDP and TCP, as a stream
//! query (no truncation). `cache-control: max-age` is the answer's smallest TTL.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use futures_util::StreamExt;
use hickory_server::net::xfer::BufDnsStreamHandle;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::ResponseHandle;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::observe::transport::Transport;
use crate::resolve::identity::Origin;
use crate::resolve::Handler;

const PATH: &str = "/dns-query";
const DNS_MESSAGE: &str = "application/dns-message";
/// A DNS message is at most 65535 bytes (RFC 8484 §6 keeps DNS's limit).
const MAX_MESSAGE: usize = 65_535;

pub struct DohSettings {
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// A connection that sends no request for this long is closed (HTTP/1.1 header timeout,
    /// HTTP/2 keep-alive): TCP's `tcp_idle_timeout`.
    pub idle_timeout: Duration,
    /// HTTPS connections open at once: TCP's `max_tcp_connections` (a separate budget).
    pub max_connections: usize,
}

pub async fn serve(
    listener: TcpListener,
    handler: Handler,
    settings: DohSettings,
    mut stop: watch::Receiver<bool>,
) {
    let settings = Arc::new(settings);
    let slots = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept an HTTPS connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = async { stop.wait_for(|s| *s).await.map(|_| ()) } => return,
        };
        // Over the cap the connection waits in the accept queue's stead (no eviction here:
        // DoH clients keep few long-lived connections).
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let settings = settings.clone();
        tokio::spawn(async move {
            let accept = settings.acceptor.accept(stream);
            let tls = match tokio::time::timeout(settings.idle_timeout, accept).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let service = hyper::service::service_fn(move |req| {
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(respond(&handler, peer, req).await) }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(settings.idle_timeout);
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(settings.idle_timeout);
            if let Err(e) = builder.serve_connection(TokioIo::new(tls), service).await {
                tracing::debug!(%peer, error = %e, "HTTPS connection ended");
            }
            drop(permit);
        });
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, "text/plain; charset=utf-8".parse().unwrap());
    r
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

/// The `dns` parameter of a GET query string.
fn dns_param(query: &str) -> Option<Vec<u8>> {
    let v = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("dns="))?
        .trim_end_matches("%3D")
        .trim_end_matches('=');
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(v)
        .ok()
}

async fn respond(
    handler: &Handler,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let Ok(device) = device_of(req.uri().path()) else {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: DNS queries go to /dns-query\n",
        );
    };
    let query = match *req.method() {
        Method::GET => match req.uri().query().and_then(dns_param) {
            Some(q) => q,
            None => {
                return plain(
                    StatusCode::BAD_REQUEST,
                    "bad request: expected ?dns=<DNS message in base64url>\n",
                )
            }
        },
        Method::POST => {
            let ct = req
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            if !ct.is_some_and(|c| c.trim().eq_ignore_ascii_case(DNS_MESSAGE)) {
                // Read what the client sends before refusing it: an HTTP/2 stream answered
                // while its body is still coming is reset, and the client sees an error
                // instead of the 415.
                let _ = Limited::new(req.into_body(), MAX_MESSAGE).collect().await;
                return plain(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported media type: expected application/dns-message\n",
                );
            }
            match Limited::new(req.into_body(), MAX_MESSAGE).collect().await {
                Ok(b) => b.to_bytes().to_vec(),
                Err(_) => {
                    return plain(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "a DNS message is at most 65535 bytes\n",
                    )
                }
            }
        }
        _ => {
            let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "use GET or POST\n");
            r.headers_mut()
                .insert(hyper::header::ALLOW, "GET, POST".parse().unwrap());
            return r;
        }
    };
    // A DNS query has a 12-byte header with QR clear; anything else is no query at all.
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return plain(StatusCode::BAD_REQUEST, "bad request: not a DNS query\n");
    }
    let origin = Origin {
        transport: Transport::Https,
        device,
    };
    let Some(answer) = answer(handler, peer, &origin, query).await else {
        return plain(StatusCode::BAD_REQUEST, "bad request: not a DNS query\n");
    };
    let max_age = min_ttl(&answer);
    let mut r = Response::new(Full::new(Bytes::from(answer)));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(DNS_MESSAGE));
    h.insert(CACHE_CONTROL, max_age_value(max_age));
    r
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

/// The handler's answer to `query`: the direct path, else the general one, whose response
/// handle writes into a channel of one.
async fn answer(
    handler: &Handler,
    peer: SocketAddr,
    origin: &Origin,
    query: Vec<u8>,
) -> Option<Vec<u8>> {
    let pending = match handler.answer_direct_as(&query, peer, origin) {
        Ok(answer) => return Some(answer),
        Err(pending) => pending,
    };
    let (sender, mut answers) = BufDnsStreamHandle::new(peer);
    let responder = ResponseHandle::new(peer, sender, Protocol::Tcp);
    // Boxed: the general path's future is large, and hyper moves the request's future into a
    // task of its own for every HTTP/2 stream; inline it would be copied on every query,
    // direct answers included.
    Box::pin(handler.answer_wire_from(query, peer, origin, responder, pending)).await;
    answers.next().await.map(|m| m.into_parts().0)
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
        assert_eq!(dns_param("dns=AAABAAAB"), Some(vec![0, 0, 1, 0, 0, 1]));
        assert_eq!(dns_param("ct=x&dns=AAABAAAB"), Some(vec![0, 0, 1, 0, 0, 1]));
        assert_eq!(dns_param("dns=!!"), None);
        assert_eq!(dns_param("x=1"), None);
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
