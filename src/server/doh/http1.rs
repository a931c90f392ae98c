//! DoH over HTTP/1.1 (and HTTP/2 by prior knowledge, a client that sends the HTTP/2 preface
//! without ALPN): hyper's connection, one request at a time. Clients that negotiate `h2` go to
//! [`super::http2`] instead.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::exchange::{self, Carrier, Refusal};
use crate::resolve::Handler;

pub async fn serve_connection<S>(io: S, handler: Handler, peer: SocketAddr, idle: Duration)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let handler = handler.clone();
        async move { Ok::<_, Infallible>(respond(&handler, peer, req).await) }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(idle);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(idle);
    if let Err(e) = builder.serve_connection(TokioIo::new(io), service).await {
        tracing::debug!(%peer, error = %e, "HTTPS connection ended");
    }
}

async fn respond(
    handler: &Handler,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let (head, body) = match reply(handler, peer, req).await {
        Ok(answer) => exchange::answered(answer),
        Err(refusal) => refusal.response(),
    };
    head.map(|()| Full::new(body))
}

async fn reply(
    handler: &Handler,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Vec<u8>, Refusal> {
    let (parts, body) = req.into_parts();
    let mut query = Vec::new();
    let (device, carrier) =
        match exchange::judge(&parts.method, &parts.uri, &parts.headers, &mut query) {
            Ok(judged) => judged,
            Err(Refusal::UnsupportedMediaType) => {
                // Read what the client sends before refusing it: an HTTP/2 stream answered while
                // its body is still coming is reset, and the client sees an error instead of the
                // 415.
                let _ = Limited::new(body, exchange::MAX_MESSAGE).collect().await;
                return Err(Refusal::UnsupportedMediaType);
            }
            Err(refusal) => return Err(refusal),
        };
    if carrier == Carrier::Body {
        query = match Limited::new(body, exchange::MAX_MESSAGE).collect().await {
            Ok(b) => b.to_bytes().to_vec(),
            Err(_) => return Err(Refusal::TooLarge),
        };
    }
    exchange::check_query(&query)?;
    let origin = exchange::origin(device);
    exchange::answer(handler, peer, &origin, query)
        .await
        .ok_or(Refusal::NotAQuery)
}
