//! The TCP listener: hickory's DNS-over-TCP framing (`hickory_net::tcp::TcpStream`), its idle
//! timeout (`TimeoutStream`) and response handle, behind an accept loop of ours that caps open
//! connections (`server.max_tcp_connections`), which hickory-server's own loop cannot.
//!
//! A connection that sends nothing for `tcp_idle_timeout` is closed, so slow clients cannot hold
//! the server; past the cap, new connections are closed at once and the oldest keep working.
//!
//! Pipelined queries on one connection are answered concurrently, each as soon as it is ready
//! and in whatever order that gives (RFC 7766 §6.2.1.1): one query waiting on a slow upstream
//! does not hold up a blocked or cached answer behind it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use hickory_proto::op::SerialMessage;
use hickory_server::net::runtime::iocompat::AsyncIoTokioAsStd;
use hickory_server::net::tcp::TcpStream;
use hickory_server::net::xfer::{DnsStreamHandle, Protocol};
use hickory_server::server::{ResponseHandle, TimeoutStream};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::resolve::Handler;

/// Answers waiting to be written on one connection (pipelined queries).
const RESPONSE_BUFFER: usize = 64;

/// Queries of one connection answered at the same time; past it, reading the connection waits,
/// so one client cannot pile up unbounded work.
const IN_FLIGHT_PER_CONNECTION: usize = 64;

pub async fn serve(
    listener: TcpListener,
    handler: Handler,
    idle_timeout: Duration,
    max_connections: usize,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
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
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%src, max_connections, "too many TCP connections; closing the new one");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        tokio::spawn(async move {
            connection(stream, src, handler, idle_timeout).await;
            drop(permit);
        });
    }
}

async fn connection(
    stream: tokio::net::TcpStream,
    src: SocketAddr,
    handler: Handler,
    idle: Duration,
) {
    let (messages, sender) =
        TcpStream::from_stream_with_buffer_size(AsyncIoTokioAsStd(stream), src, RESPONSE_BUFFER);
    let mut messages = TimeoutStream::new(messages, idle);
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT_PER_CONNECTION));
    while let Some(message) = messages.next().await {
        let Ok(message) = message else {
            // Idle too long, closed, or broken framing: drop the connection.
            return;
        };
        let Ok(slot) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let (bytes, src) = message.into_parts();
        // Blocked and cached answers are ready at once: no task, no decode.
        let pending = match handler.answer_direct(&bytes, src, Protocol::Tcp) {
            Ok(answer) => {
                let mut sender = sender.clone();
                if let Err(e) = sender.send(SerialMessage::new(answer, src)) {
                    tracing::debug!(error = %e, "failed to queue a TCP answer");
                }
                drop(slot);
                continue;
            }
            Err(pending) => pending,
        };
        let responder = ResponseHandle::new(src, sender.clone(), Protocol::Tcp);
        let handler = handler.clone();
        tokio::spawn(async move {
            handler
                .answer_wire_with(bytes, src, Protocol::Tcp, responder, pending)
                .await;
            drop(slot);
        });
    }
}
