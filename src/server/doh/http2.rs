//! DoH over HTTP/2 with the `h2` crate directly: the connection's own task accepts its
//! streams and answers a blocked or cached query inline, as the DoT listener does, with no task
//! per stream (hyper spawns one for every request, and most of a DoH query's CPU went to that
//! machinery, not to DNS). Queries the direct path cannot answer (forwarded, and the handler's
//! general path) and POST bodies that have not fully arrived get a task of their own, so one
//! slow stream never holds up the others. The answers to all the streams that are ready leave
//! together, in one `write` ([`super::corked`]).
//!
//! Each response goes out on the stream of its request: h2's `SendResponse` is bound to it.

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::FutureExt;
use h2::server::SendResponse;
use h2::RecvStream;
use hyper::body::Bytes;
use hyper::{Request, Response};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};

use super::corked::Cork;
use super::exchange::{self, Carrier, Refusal};
use crate::resolve::Handler;

/// Streams a client may have open at once (requests being answered). Past it, h2 refuses new
/// streams (REFUSED_STREAM, the client retries): a bound on one connection's work in flight.
const MAX_STREAMS: u32 = 128;
/// Flow-control windows: a stream may send a whole DNS message at once; the connection, many.
const STREAM_WINDOW: u32 = exchange::MAX_MESSAGE as u32;
const CONNECTION_WINDOW: u32 = 1024 * 1024;
/// Request headers at most (hyper's default): a GET's `?dns=` of a 12 kB query fits.
const MAX_HEADER_LIST: u32 = 16 * 1024;

/// Serves one connection; `cork` holds the writes of `io`'s socket (see [`super::corked`]).
pub async fn serve_connection<S>(
    io: S,
    cork: Arc<Cork>,
    handler: Handler,
    peer: SocketAddr,
    idle: Duration,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let handshake = h2::server::Builder::new()
        .max_concurrent_streams(MAX_STREAMS)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_header_list_size(MAX_HEADER_LIST)
        .handshake::<_, Bytes>(io);
    let mut h2 = match tokio::time::timeout(idle, handshake).await {
        Ok(Ok(h2)) => h2,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "HTTP/2 handshake failed");
            return;
        }
        Err(_) => return,
    };
    let mut streams = Streams {
        handler,
        peer,
        query: Vec::new(),
    };
    // The idle timer is set lazily: a request only notes its time, and when the timer fires
    // early it is set again for the latest request's deadline (resetting a timer for every
    // request costs more than a clock read).
    let mut last_request = Instant::now();
    let mut timer: Pin<Box<Sleep>> = Box::pin(tokio::time::sleep(idle));
    let mut closing = false;
    poll_fn(|cx: &mut Context<'_>| loop {
        match h2.poll_accept(cx) {
            Poll::Ready(Some(Ok((request, respond)))) => {
                // Hold the answers until every ready stream has been answered.
                cork.hold();
                last_request = Instant::now();
                streams.serve(request, respond);
                continue;
            }
            Poll::Ready(Some(Err(e))) => {
                tracing::debug!(%peer, error = %e, "HTTPS connection ended");
                return Poll::Ready(());
            }
            Poll::Ready(None) => return Poll::Ready(()),
            Poll::Pending => {}
        }
        // Nothing more to accept now: the answers are written, held under TLS. Release them
        // and come back at once: the next poll's flush writes them, in one `write`. (Rather a
        // wake than another turn of this loop: sending an answer has woken this task already,
        // and that poll would find nothing to do.)
        if cork.release() {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if !closing && timer.as_mut().poll(cx).is_ready() {
            let deadline = last_request + idle;
            if deadline > Instant::now() {
                timer.as_mut().reset(deadline);
            } else {
                // Idle: GOAWAY, and the streams still open finish first.
                h2.graceful_shutdown();
                closing = true;
            }
            continue;
        }
        return Poll::Pending;
    })
    .await;
}

/// What the connection's streams share.
struct Streams {
    handler: Handler,
    peer: SocketAddr,
    /// A GET's DNS message, decoded here: one buffer for all the connection's requests.
    query: Vec<u8>,
}

impl Streams {
    /// Answers `request` now when it can be (a blocked or cached GET, a POST whose body is
    /// here, a refusal), else in a task of its own.
    fn serve(&mut self, request: Request<RecvStream>, respond: SendResponse<Bytes>) {
        let (head, mut body) = request.into_parts();
        let (device, carrier) =
            match exchange::judge(&head.method, &head.uri, &head.headers, &mut self.query) {
                Ok(judged) => judged,
                Err(Refusal::UnsupportedMediaType) if !body.is_end_stream() => {
                    // Read what the client sends before refusing it: a stream answered while
                    // its body is still coming is reset, and the client sees an error instead
                    // of the 415.
                    tokio::spawn(async move {
                        let mut sink = Vec::new();
                        let _ = read_body(&mut body, &mut sink).await;
                        send(respond, Refusal::UnsupportedMediaType.response());
                    });
                    return;
                }
                Err(refusal) => return send(respond, refusal.response()),
            };
        if carrier == Carrier::Body {
            let mut query = Vec::new();
            // The body usually came with the headers: read what is here without waiting.
            match read_body(&mut body, &mut query).now_or_never() {
                Some(Ok(())) => self.query = query,
                Some(Err(refusal)) => return send(respond, refusal.response()),
                None => {
                    let (handler, peer) = (self.handler.clone(), self.peer);
                    tokio::spawn(async move {
                        let reply = match read_body(&mut body, &mut query).await {
                            Ok(()) => answer_later(&handler, peer, device, query).await,
                            Err(refusal) => Err(refusal),
                        };
                        send(respond, reply_response(reply));
                    });
                    return;
                }
            }
        }
        if let Err(refusal) = exchange::check_query(&self.query) {
            return send(respond, refusal.response());
        }
        let origin = exchange::origin(device);
        match self
            .handler
            .answer_direct_as(&self.query, self.peer, &origin)
        {
            Ok(answer) => send(respond, exchange::answered(answer)),
            Err(pending) => {
                let (handler, peer) = (self.handler.clone(), self.peer);
                let query = self.query.clone();
                tokio::spawn(async move {
                    let answer =
                        exchange::answer_general(&handler, peer, &origin, query, pending).await;
                    send(respond, reply_response(answer.ok_or(Refusal::NotAQuery)));
                });
            }
        }
    }
}

async fn answer_later(
    handler: &Handler,
    peer: SocketAddr,
    device: Option<Arc<str>>,
    query: Vec<u8>,
) -> Result<Vec<u8>, Refusal> {
    exchange::check_query(&query)?;
    let origin = exchange::origin(device);
    exchange::answer(handler, peer, &origin, query)
        .await
        .ok_or(Refusal::NotAQuery)
}

fn reply_response(reply: Result<Vec<u8>, Refusal>) -> (Response<()>, Bytes) {
    match reply {
        Ok(answer) => exchange::answered(answer),
        Err(refusal) => refusal.response(),
    }
}

/// Appends the request body to `out`, giving the flow-control window back as it goes;
/// [`Refusal::TooLarge`] past [`exchange::MAX_MESSAGE`]. Nothing is lost when this future is
/// dropped between chunks: what arrived is in `out`, the rest still in `body`.
async fn read_body(body: &mut RecvStream, out: &mut Vec<u8>) -> Result<(), Refusal> {
    while let Some(chunk) = body.data().await {
        let Ok(chunk) = chunk else {
            // The client reset the stream: nobody waits for the answer.
            return Err(Refusal::NotAQuery);
        };
        let _ = body.flow_control().release_capacity(chunk.len());
        if out.len() + chunk.len() > exchange::MAX_MESSAGE {
            return Err(Refusal::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(())
}

/// Queues the response on its stream; the connection's task writes it. A client that reset
/// the stream meanwhile gets nothing.
fn send(mut respond: SendResponse<Bytes>, (head, body): (Response<()>, Bytes)) {
    match respond.send_response(head, false) {
        Ok(mut stream) => {
            let _ = stream.send_data(body, true);
        }
        Err(e) => tracing::debug!(error = %e, "DoH stream closed before its answer"),
    }
}
