//! The UDP listener: a dedicated thread per socket that reads a datagram, runs the request
//! handler and writes the answer, with no task spawn or channel hop for answers the handler
//! gives at once (blocked, cached, local, refused). Only queries that wait for an upstream
//! move to the async runtime.
//!
//! Why not hickory-server's UDP loop: it spawns a task per datagram and sends every answer
//! through a channel to a writer task, which costs more CPU than the whole policy decision
//! (see bench/RESULTS.md for the profile). TCP stays on hickory-server. Both transports run
//! the same `Handler::handle_request`, so there is one pipeline.
//!
//! Each listen address gets one socket per core with `SO_REUSEPORT`, so the kernel spreads
//! clients over the threads.

use std::future::Future;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::Duration;

use hickory_proto::op::{Header, MessageType, ResponseCode};
use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::net::NetError;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder, Queries};

use crate::handler::Handler;

/// Largest datagram read; EDNS clients rarely send more than a few hundred bytes.
const RECV_BUFFER: usize = 4096;

/// Sends one encoded answer to the client, from whichever thread finishes the query.
#[derive(Clone)]
struct UdpResponder {
    socket: Arc<UdpSocket>,
    dst: SocketAddr,
}

#[async_trait::async_trait]
impl ResponseHandler for UdpResponder {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        // RFC 6891: the client's advertised size (the handler put it, capped, in the response's
        // OPT); without EDNS, 512 bytes. Past it the encoder drops records and sets TC.
        let max = response.edns().map_or(512, |e| e.max_payload().max(512));
        let id = response.metadata().id;
        let mut buf = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut buf);
        encoder.set_max_size(max);
        let info = match response.destructive_emit(&mut encoder) {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "cannot encode answer; sending SERVFAIL");
                buf.clear();
                let mut metadata = hickory_proto::op::Metadata::new(
                    id,
                    MessageType::Response,
                    hickory_proto::op::OpCode::Query,
                );
                metadata.response_code = ResponseCode::ServFail;
                let header = Header {
                    metadata,
                    counts: Default::default(),
                };
                let mut encoder = BinEncoder::new(&mut buf);
                header.emit(&mut encoder).map_err(NetError::from)?;
                ResponseInfo::from(header)
            }
        };
        self.socket.send_to(&buf, self.dst)?;
        Ok(info)
    }
}

/// Binds `sockets` UDP sockets on `addr` with `SO_REUSEPORT` and starts a thread for each.
pub fn start(
    addr: SocketAddr,
    sockets: usize,
    handler: Handler,
    runtime: tokio::runtime::Handle,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Vec<std::thread::JoinHandle<()>>> {
    let mut threads = Vec::new();
    for i in 0..sockets.max(1) {
        let socket = crate::server::bind_udp_std(addr, sockets > 1)?;
        socket.set_read_timeout(Some(Duration::from_millis(200)))?;
        let socket = Arc::new(socket);
        let handler = handler.clone();
        let runtime = runtime.clone();
        let stop = stop.clone();
        let t = std::thread::Builder::new()
            .name(format!("udp-{addr}-{i}"))
            .spawn(move || serve(socket, handler, runtime, stop))?;
        threads.push(t);
    }
    Ok(threads)
}

fn serve(socket: Arc<UdpSocket>, handler: Handler, runtime: tokio::runtime::Handle, stop: Arc<AtomicBool>) {
    // Timers and sockets that a query's first poll creates belong to the runtime.
    let _runtime = runtime.enter();
    let mut buf = vec![0u8; RECV_BUFFER];
    let waker = Waker::noop();
    while !stop.load(Ordering::Relaxed) {
        let (len, src) = match socket.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                // ICMP errors from earlier sends surface here on some systems; keep serving.
                tracing::debug!(error = %e, "udp receive error");
                continue;
            }
        };
        if !respondable(src) {
            continue;
        }
        let responder = UdpResponder {
            socket: socket.clone(),
            dst: src,
        };
        let Some(mut fut) = request_future(&buf[..len], src, handler.clone(), responder) else {
            continue;
        };
        // Most answers need no upstream: the first poll finishes them on this thread.
        if fut.as_mut().poll(&mut Context::from_waker(waker)).is_pending() {
            runtime.spawn(fut);
        }
    }
}

type BoxedQuery = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Decodes a datagram into a future that answers it, or answers FORMERR / drops it at once.
fn request_future(
    bytes: &[u8],
    src: SocketAddr,
    handler: Handler,
    mut responder: UdpResponder,
) -> Option<BoxedQuery> {
    match Request::from_bytes(bytes.to_vec(), src, Protocol::Udp) {
        Ok(request) => {
            if request.metadata.message_type == MessageType::Response {
                // Never answer answers: that is how reflection loops start.
                return None;
            }
            Some(Box::pin(async move {
                handler
                    .handle_request::<_, TokioTime>(&request, responder)
                    .await;
            }))
        }
        Err(_) => {
            // A readable header but a broken body: FORMERR. No readable header: silence.
            let mut decoder = BinDecoder::new(bytes);
            let header = Header::read(&mut decoder).ok()?;
            if header.metadata.message_type == MessageType::Response {
                return None;
            }
            let queries = Queries::read(&mut BinDecoder::new(&[]), 0).ok()?;
            let response = MessageResponseBuilder::new(&queries, None)
                .error_msg(&header.metadata, ResponseCode::FormErr);
            // The future is ready at once: no I/O but a non-blocking send.
            let mut fut = Box::pin(async move {
                let _ = responder.send_response(response).await;
            });
            let _ = fut.as_mut().poll(&mut Context::from_waker(Waker::noop()));
            None
        }
    }
}

/// Sources we must not answer (hickory-server drops the same): port 0, unspecified, broadcast.
fn respondable(src: SocketAddr) -> bool {
    if src.port() == 0 {
        return false;
    }
    match src.ip() {
        IpAddr::V4(v4) => !v4.is_unspecified() && !v4.is_broadcast(),
        IpAddr::V6(v6) => !v6.is_unspecified(),
    }
}
