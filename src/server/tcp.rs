//! The TCP listener: hickory's DNS-over-TCP framing (`hickory_net::tcp::TcpStream`), its idle
//! timeout (`TimeoutStream`) and response handle, behind an accept loop of ours that caps open
//! connections (`server.max_tcp_connections`), which hickory-server's own loop cannot.
//!
//! A connection that sends nothing for `tcp_idle_timeout` is closed, so slow clients cannot hold
//! the server. When the cap is reached, a new connection is not refused: the server closes the
//! connection that has been idle longest (RFC 7766 §6.2.3: servers manage their connections,
//! and clients must expect an idle one to be closed) and serves the new one. A connection is
//! never closed while one of its queries is being answered, nor within [`EVICT_GRACE`] of its
//! opening or its last query or answer (time to ask, and to read the answer); when no
//! connection may be closed, the new one waits up to [`HOLD`] for a free slot, and is closed
//! unanswered only after that.
//!
//! DNS over TLS (RFC 7858) is this same listener with a TLS handshake first ([`serve_tls`]):
//! the same framing, cap, idle timeout and pipelining; the server name the client asked for
//! (SNI, `anna-phone.<tls_name>`) names the device.
//!
//! Pipelined queries on one connection are answered concurrently, each as soon as it is ready
//! and in whatever order that gives (RFC 7766 §6.2.1.1): one query waiting on a slow upstream
//! does not hold up a blocked or cached answer behind it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use hickory_proto::op::SerialMessage;
use hickory_server::net::runtime::iocompat::AsyncIoTokioAsStd;
use hickory_server::net::tcp::TcpStream;
use hickory_server::net::xfer::{DnsStreamHandle, Protocol};
use hickory_server::server::{ResponseHandle, TimeoutStream};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::observe::transport::Transport;
use crate::resolve::identity::Origin;
use crate::resolve::Handler;

/// Answers waiting to be written on one connection (pipelined queries).
const RESPONSE_BUFFER: usize = 64;

/// Queries of one connection answered at the same time; past it, reading the connection waits,
/// so one client cannot pile up unbounded work.
const IN_FLIGHT_PER_CONNECTION: usize = 64;

/// How long a new connection over the cap waits for a slot when no open connection may be
/// closed (all busy answering, or just opened).
pub const HOLD: Duration = Duration::from_millis(1500);

/// A connection is not closed for a newcomer until it has been quiet this long: a client that
/// just connected has not had the time to ask, one just answered not the time to read.
pub const EVICT_GRACE: Duration = Duration::from_millis(250);

/// One open connection as the accept loop sees it.
struct Conn {
    /// Milliseconds since [`Connections::epoch`] of the latest query received or answer sent.
    last_active: AtomicU64,
    /// Queries received and not yet answered.
    busy: AtomicUsize,
    /// Told to close by the accept loop, to make room.
    close: Notify,
    /// Set while it is told to close: the accept loop waits for that slot instead of closing
    /// another connection too.
    closing: AtomicBool,
}

impl Conn {
    fn mark_active(&self, now: u64) {
        self.last_active.fetch_max(now, Ordering::Relaxed);
    }
}

/// The open connections, for choosing which one to close when the cap is reached. The mutex
/// is taken when a connection opens or closes, and by the accept loop over the cap; a query
/// only touches its connection's atomics.
struct Connections {
    epoch: Instant,
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Conn>>>,
}

impl Connections {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn add(&self) -> (u64, Arc<Conn>) {
        let now = self.now();
        let conn = Arc::new(Conn {
            last_active: AtomicU64::new(now),
            busy: AtomicUsize::new(0),
            close: Notify::new(),
            closing: AtomicBool::new(false),
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, conn.clone());
        (id, conn)
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells the longest-idle connection that may be closed to close, and returns whether
    /// there was one (or one is closing already). Idle: no query being answered, and nothing
    /// received or answered for [`EVICT_GRACE`]. An answer only just handed to the connection's
    /// writer may not be on the wire yet, and its client has not had the time to read it and
    /// close: closing that connection lost the answer (a burst test caught it about 1 run in 20).
    fn evict_longest_idle(&self) -> bool {
        let now = self.now();
        let grace = EVICT_GRACE.as_millis() as u64;
        let open = self.lock();
        if open.values().any(|c| c.closing.load(Ordering::Acquire)) {
            return true;
        }
        let victim = open
            .values()
            .filter(|c| c.busy.load(Ordering::Acquire) == 0)
            .filter(|c| now.saturating_sub(c.last_active.load(Ordering::Relaxed)) >= grace)
            .min_by_key(|c| c.last_active.load(Ordering::Relaxed));
        match victim {
            Some(c) => {
                c.closing.store(true, Ordering::Release);
                c.close.notify_one();
                true
            }
            None => false,
        }
    }
}

/// What a DoT listener adds to TCP: the TLS acceptor (its certificate swapped on renewal) and
/// the name device ids are taken from.
pub struct DotTls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub tls_name: Arc<str>,
}

pub async fn serve(
    listener: TcpListener,
    handler: Handler,
    idle_timeout: Duration,
    max_connections: usize,
    stop: watch::Receiver<bool>,
) {
    serve_with(listener, handler, idle_timeout, max_connections, stop, None).await
}

/// DNS over TLS on `listener`: TCP's settings, behind a TLS handshake.
pub async fn serve_tls(
    listener: TcpListener,
    handler: Handler,
    idle_timeout: Duration,
    max_connections: usize,
    stop: watch::Receiver<bool>,
    tls: DotTls,
) {
    let tls = Some(Arc::new(tls));
    serve_with(listener, handler, idle_timeout, max_connections, stop, tls).await
}

async fn serve_with(
    listener: TcpListener,
    handler: Handler,
    idle_timeout: Duration,
    max_connections: usize,
    mut stop: watch::Receiver<bool>,
    tls: Option<Arc<DotTls>>,
) {
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    let conns = Arc::new(Connections {
        epoch: Instant::now(),
        next_id: AtomicU64::new(0),
        open: Mutex::new(HashMap::new()),
    });
    loop {
        let (stream, src) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %e, "cannot accept a TCP connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = async { stop.wait_for(|s| *s).await.map(|_| ()) } => return,
        };
        // Over the cap, this waits (at most HOLD) while later connections queue in the
        // kernel's backlog: they are held too, not refused.
        let Some(permit) = slot_for_new(&slots, &conns, src, max_connections).await else {
            tracing::debug!(
                %src,
                max_connections,
                "too many busy TCP connections; closing the new one"
            );
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let conns = conns.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let (id, conn) = conns.add();
            match tls {
                None => {
                    let c = (&conns, &conn);
                    connection(stream, src, handler, idle_timeout, c, Origin::TCP).await
                }
                Some(tls) => {
                    // The handshake gets the idle timeout too: a client that stalls in it
                    // holds a slot no longer than one that stalls later.
                    let accept = tls.acceptor.accept(stream);
                    match tokio::time::timeout(idle_timeout, accept).await {
                        Ok(Ok(stream)) => {
                            let device = stream
                                .get_ref()
                                .1
                                .server_name()
                                .and_then(|n| crate::tls::device_id(n, &tls.tls_name));
                            let origin = Origin {
                                transport: Transport::Tls,
                                device,
                            };
                            let c = (&conns, &conn);
                            connection(stream, src, handler, idle_timeout, c, origin).await
                        }
                        Ok(Err(e)) => tracing::debug!(%src, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%src, "TLS handshake timed out"),
                    }
                }
            }
            conns.remove(id);
            drop(permit);
        });
    }
}

/// A slot for a new connection: a free one, else one freed by closing the longest-idle
/// connection, else one that frees up within [`HOLD`].
async fn slot_for_new(
    slots: &Arc<Semaphore>,
    conns: &Connections,
    src: SocketAddr,
    max_connections: usize,
) -> Option<OwnedSemaphorePermit> {
    if let Ok(p) = slots.clone().try_acquire_owned() {
        return Some(p);
    }
    let deadline = Instant::now() + HOLD;
    loop {
        if conns.evict_longest_idle() {
            tracing::debug!(%src, max_connections, "TCP connections at the cap: closing the longest-idle one");
        }
        // A closed connection gives its slot back within a moment; else retry the choice soon
        // (a busy one may have become idle).
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(50));
        if wait.is_zero() {
            return None;
        }
        if let Ok(Ok(p)) = tokio::time::timeout(wait, slots.clone().acquire_owned()).await {
            return Some(p);
        }
    }
}

/// One connection's queries, plain TCP or inside TLS.
async fn connection<S>(
    stream: S,
    src: SocketAddr,
    handler: Handler,
    idle: Duration,
    (conns, conn): (&Arc<Connections>, &Arc<Conn>),
    origin: Origin,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + Sync + 'static,
{
    let (messages, sender) =
        TcpStream::from_stream_with_buffer_size(AsyncIoTokioAsStd(stream), src, RESPONSE_BUFFER);
    let mut messages = TimeoutStream::new(messages, idle);
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT_PER_CONNECTION));
    loop {
        let message = tokio::select! {
            // The accept loop chose this connection to make room: it was idle, close it.
            _ = conn.close.notified() => {
                if conn.busy.load(Ordering::Acquire) == 0 {
                    return;
                }
                // A query arrived meanwhile: keep answering; the accept loop chooses again.
                conn.closing.store(false, Ordering::Release);
                continue;
            }
            m = messages.next() => m,
        };
        let Some(Ok(message)) = message else {
            // Idle too long, closed, or broken framing: drop the connection.
            return;
        };
        conn.busy.fetch_add(1, Ordering::AcqRel);
        conn.mark_active(conns.now());
        let Ok(slot) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let (bytes, src) = message.into_parts();
        // Blocked and cached answers are ready at once: no task, no decode.
        let pending = match handler.answer_direct_as(&bytes, src, &origin) {
            Ok(answer) => {
                let mut sender = sender.clone();
                if let Err(e) = sender.send(SerialMessage::new(answer, src)) {
                    tracing::debug!(error = %e, "failed to queue a TCP answer");
                }
                answered(conns, conn);
                drop(slot);
                continue;
            }
            Err(pending) => pending,
        };
        let responder = ResponseHandle::new(src, sender.clone(), Protocol::Tcp);
        let handler = handler.clone();
        let (conns, conn) = (conns.clone(), conn.clone());
        let origin = origin.clone();
        tokio::spawn(async move {
            handler
                .answer_wire_from(bytes, src, &origin, responder, pending)
                .await;
            answered(&conns, &conn);
            drop(slot);
        });
    }
}

fn answered(conns: &Connections, conn: &Conn) {
    conn.mark_active(conns.now());
    conn.busy.fetch_sub(1, Ordering::AcqRel);
}
