//! The UDP listener: a dedicated thread per socket that reads a datagram, runs the request
//! handler and writes the answer, with no task spawn or channel hop for answers the handler
//! gives at once (blocked, cached, local, refused). Blocked, cached and refused answers take the
//! handler's direct path (`Handler::answer_direct_into`: bytes in, bytes out); the rest its
//! general path, with what the direct path decided, polled once here. Only queries that wait for
//! an upstream move to the async runtime.
//!
//! Why not hickory-server's UDP loop: it spawns a task per datagram and sends every answer
//! through a channel to a writer task, which costs more CPU than the whole policy decision
//! (see bench/RESULTS.md for the profile). TCP stays on hickory-server's framing. Both
//! transports run the same handler (`crate::resolve`), so there is one decision.
//!
//! Each listen address gets one socket per core with `SO_REUSEPORT`, so the kernel spreads
//! clients over the threads.
//!
//! Forwarded queries whose first upstream is plain DNS take the fast path (issue 17): the
//! thread sends them on upstream sockets of its own ([`ForwardUdp`]), a batch's together, and,
//! while any is in flight, waits on those and the client socket together, so the answer is
//! handled and sent from this thread too. What the fast path hands back (timeouts, truncation, ...) goes on along
//! the general path as above.

use std::cell::RefCell;
use std::future::Future;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use hickory_proto::op::{Header, MessageType, ResponseCode};
use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
use hickory_server::net::xfer::Protocol;
use hickory_server::net::NetError;
use hickory_server::server::{ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;

use crate::resolve::forward_udp::ForwardUdp;
use crate::resolve::handler::{Direct, Fast, Flight, Pending};
use crate::resolve::wire::WireQuery;
use crate::resolve::Handler;

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
        // On a listener thread the answer joins the batch sent by one sendmmsg; elsewhere (a
        // query that waited for an upstream) it goes out at once.
        let queued = OUTBOX.with(|o| match o.borrow_mut().as_mut() {
            Some(outbox) => {
                outbox.push(&buf, self.dst);
                true
            }
            None => false,
        });
        if !queued {
            self.socket.send_to(&buf, self.dst)?;
        }
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
        let socket = super::listen::bind_udp_std(addr, sockets > 1)?;
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

/// The answers of one batch, encoded one after another in one buffer, and where they go: no
/// allocation per answer.
#[derive(Default)]
struct Outbox {
    bytes: Vec<u8>,
    /// (end of the answer in `bytes`, destination); each starts where the previous one ends.
    answers: Vec<(usize, SocketAddr)>,
}

impl Outbox {
    fn push(&mut self, answer: &[u8], dst: SocketAddr) {
        self.bytes.extend_from_slice(answer);
        self.answers.push((self.bytes.len(), dst));
    }

    /// The direct path's answer for `q`, if it has one, appended.
    fn push_direct(
        &mut self,
        handler: &Handler,
        q: &WireQuery<'_>,
        src: SocketAddr,
        received: Instant,
    ) -> Direct {
        let direct = handler.answer_direct_into(q, src, Protocol::Udp, received, &mut self.bytes);
        if let Direct::Answered = direct {
            self.answers.push((self.bytes.len(), src));
        }
        direct
    }

    /// A fast-path answer (the handler appended it to `bytes`), or the upstream's refusal.
    fn push_fast(
        &mut self,
        handler: &Handler,
        flight: Flight,
        answer: Result<&[u8], std::io::Error>,
        received: Instant,
    ) -> Option<Fast> {
        let fast = match answer {
            Ok(answer) => handler.fast_answered(flight, answer, received, &mut self.bytes),
            Err(e) => handler.fast_failed(flight, e),
        };
        match fast {
            Fast::Answered(dst) => {
                self.answers.push((self.bytes.len(), dst));
                None
            }
            general => Some(general),
        }
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.answers.clear();
    }
}

thread_local! {
    /// Answers produced on a listener thread, waiting for the batch's `sendmmsg`.
    /// `None` on every other thread.
    static OUTBOX: RefCell<Option<Outbox>> = const { RefCell::new(None) };
}

fn serve(
    socket: Arc<UdpSocket>,
    handler: Handler,
    runtime: tokio::runtime::Handle,
    stop: Arc<AtomicBool>,
) {
    // Timers and sockets that a query's first poll creates belong to the runtime.
    let _runtime = runtime.enter();
    OUTBOX.with(|o| *o.borrow_mut() = Some(Outbox::default()));
    let fd = socket.as_raw_fd();
    let mut batch = mmsg::RecvBatch::new();
    let mut send = mmsg::SendBatch::default();
    let mut fwd: ForwardUdp<Flight> = ForwardUdp::default();
    // Fast-path queries the general path takes over.
    let mut general: Vec<Fast> = Vec::new();
    let waker = Waker::noop();
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        // At shutdown, the queries in flight on the fast path are still answered (or handed
        // on at their timeout): the server waits for them as for the general path's.
        if stopping && fwd.in_flight() == 0 {
            break;
        }
        // Nothing in flight: block on the client socket alone (one system call per batch, as
        // before the fast path). Else wait on it and the upstream sockets together.
        let polled = fwd.in_flight() > 0;
        let client_ready = if polled {
            let ready = fwd.wait((!stopping).then_some(fd), Duration::from_millis(200));
            // One clock reading for every answer of this round (and the timeouts).
            let now = Instant::now();
            fwd.receive(|flight, answer| {
                let fast = OUTBOX.with(|o| {
                    o.borrow_mut()
                        .as_mut()
                        .and_then(|outbox| outbox.push_fast(&handler, flight, answer, now))
                });
                general.extend(fast);
            });
            fwd.expire(now, |flight| {
                general.push(handler.fast_timed_out(flight));
            });
            ready.client
        } else {
            !stopping
        };
        hand_on(&mut general, &socket, &handler, &runtime, waker);
        let n = if client_ready {
            match batch.recv(fd, polled) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) =>
                {
                    0
                }
                Err(e) => {
                    // ICMP errors from earlier sends surface here on some systems; keep serving.
                    tracing::debug!(error = %e, "udp receive error");
                    0
                }
            }
        } else {
            0
        };
        // One clock reading for the batch: each query's start (its response time counts the
        // batch's earlier queries, as a client waits for them).
        let received = Instant::now();
        for i in 0..n {
            let Some((bytes, src)) = batch.get(i) else {
                continue;
            };
            if !respondable(src) {
                continue;
            }
            // Blocked, cached and refused answers: written straight from the datagram, parsed
            // once here for the direct path and the fast path. Another shape: the general path.
            let pending = match WireQuery::parse(bytes) {
                None => None,
                Some(q) => {
                    let direct = OUTBOX.with(|o| {
                        o.borrow_mut()
                            .as_mut()
                            .map(|outbox| outbox.push_direct(&handler, &q, src, received))
                    });
                    match direct {
                        Some(Direct::Answered) => continue,
                        Some(Direct::Pass(Some(pending))) => {
                            // Forwarded: the fast path, if it takes it.
                            match handler.forward_fast(pending, &q, src, &mut fwd) {
                                Ok(()) => continue,
                                Err(pending) => Some(pending),
                            }
                        }
                        Some(Direct::Pass(None)) | None => None,
                    }
                }
            };
            let responder = UdpResponder {
                socket: socket.clone(),
                dst: src,
            };
            let fut = request_future(bytes, src, handler.clone(), responder, pending);
            poll_or_spawn(fut, &runtime, waker);
        }
        // The batch's forwarded queries leave first (one sendmmsg per upstream socket), so
        // that the upstream works on them while the answers go out.
        fwd.flush(|flight| general.push(handler.fast_unsent(flight)));
        hand_on(&mut general, &socket, &handler, &runtime, waker);
        OUTBOX.with(|o| {
            if let Some(outbox) = o.borrow_mut().as_mut() {
                if !outbox.answers.is_empty() {
                    send.send_all(fd, outbox);
                    // Keeps the buffers for the next batch.
                    outbox.clear();
                }
            }
        });
    }
}

/// Fast-path queries the general path takes over, started on it.
fn hand_on(
    general: &mut Vec<Fast>,
    socket: &Arc<UdpSocket>,
    handler: &Handler,
    runtime: &tokio::runtime::Handle,
    waker: &Waker,
) {
    for fast in general.drain(..) {
        if let Fast::General {
            query,
            src,
            pending,
        } = fast
        {
            let responder = UdpResponder {
                socket: socket.clone(),
                dst: src,
            };
            let fut = request_future(&query, src, handler.clone(), responder, Some(pending));
            poll_or_spawn(fut, runtime, waker);
        }
    }
}

/// Most answers need no upstream: the first poll finishes them on this thread; the rest wait
/// on the runtime.
fn poll_or_spawn(mut fut: BoxedQuery, runtime: &tokio::runtime::Handle, waker: &Waker) {
    if fut
        .as_mut()
        .poll(&mut Context::from_waker(waker))
        .is_pending()
    {
        runtime.spawn(fut);
    }
}

/// `recvmmsg`/`sendmmsg`: one system call for a batch of datagrams, which under load costs
/// less than the rest of a query's work put together.
mod mmsg {
    use std::net::SocketAddr;
    use std::os::fd::RawFd;

    use socket2::SockAddr;

    pub use crate::recv_batch::BATCH;
    const SIZE: usize = super::RECV_BUFFER;

    /// The listener's receive buffers: sources kept (answers go back to them).
    pub struct RecvBatch(crate::recv_batch::RecvBatch);

    impl RecvBatch {
        pub fn new() -> RecvBatch {
            RecvBatch(crate::recv_batch::RecvBatch::new(SIZE, true))
        }

        /// Waits (up to the socket's read timeout; not at all with `dont_wait`) for at least
        /// one datagram, then takes whatever else is already queued, up to [`BATCH`].
        pub fn recv(&mut self, fd: RawFd, dont_wait: bool) -> std::io::Result<usize> {
            let flags = libc::MSG_WAITFORONE | if dont_wait { libc::MSG_DONTWAIT } else { 0 };
            self.0.recv(fd, flags)
        }

        /// Datagram `i` of the last `recv` and its source.
        pub fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
            self.0.get(i)
        }
    }

    /// What `sendmmsg` reads, kept from batch to batch.
    #[derive(Default)]
    pub struct SendBatch {
        addrs: Vec<SockAddr>,
        iovs: Vec<libc::iovec>,
        hdrs: Vec<libc::mmsghdr>,
    }

    impl SendBatch {
        /// Sends every answer of `outbox`, in as few `sendmmsg` calls as the kernel allows.
        pub fn send_all(&mut self, fd: RawFd, outbox: &super::Outbox) {
            let mut start = 0;
            for chunk in outbox.answers.chunks(BATCH) {
                self.addrs.clear();
                self.iovs.clear();
                self.hdrs.clear();
                for &(end, dst) in chunk {
                    self.addrs.push(SockAddr::from(dst));
                    let answer = &outbox.bytes[start..end];
                    self.iovs.push(libc::iovec {
                        iov_base: answer.as_ptr() as *mut libc::c_void,
                        iov_len: answer.len(),
                    });
                    start = end;
                }
                for (addr, iov) in self.addrs.iter().zip(self.iovs.iter_mut()) {
                    // SAFETY: all-zero is a valid mmsghdr; the fields set point at live data.
                    let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                    h.msg_hdr.msg_name = addr.as_ptr() as *mut libc::c_void;
                    h.msg_hdr.msg_namelen = addr.len();
                    h.msg_hdr.msg_iov = iov;
                    h.msg_hdr.msg_iovlen = 1;
                    self.hdrs.push(h);
                }
                let hdrs = &mut self.hdrs;
                let mut sent = 0;
                while sent < hdrs.len() {
                    // SAFETY: the headers point into `addrs`, `iovs` and the outbox's bytes,
                    // none of which changes during this call.
                    let n = unsafe {
                        libc::sendmmsg(
                            fd,
                            hdrs[sent..].as_mut_ptr(),
                            (hdrs.len() - sent) as libc::c_uint,
                            0,
                        )
                    };
                    if n <= 0 {
                        let e = std::io::Error::last_os_error();
                        if e.kind() == std::io::ErrorKind::Interrupted {
                            continue;
                        }
                        // A full socket buffer or an unreachable client: drop that answer, as a
                        // lost datagram would be, and go on with the rest.
                        tracing::debug!(error = %e, "udp send error");
                        sent += 1;
                    } else {
                        sent += n as usize;
                    }
                }
            }
        }
    }
}

type BoxedQuery = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The future that answers one datagram (with what the direct path decided, if it read it);
/// usually ready at its first poll.
fn request_future(
    bytes: &[u8],
    src: SocketAddr,
    handler: Handler,
    responder: UdpResponder,
    pending: Option<Box<Pending>>,
) -> BoxedQuery {
    let bytes = bytes.to_vec();
    Box::pin(async move {
        handler
            .answer_wire_with(bytes, src, Protocol::Udp, responder, pending)
            .await
    })
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
