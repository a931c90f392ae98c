//! DNS over HTTPS (RFC 8484) on `server.https_listen`: tokio-rustls, and our own small accept
//! loop so that the peer address (access control, rate limit) and the path's device id
//! (`/dns-query/anna-phone`) reach the handler. ALPN chooses the HTTP stack: `h2` goes to
//! [`http2`] (the `h2` crate, streams answered in the connection's task), anything else to
//! [`http1`] (hyper: HTTP/1.1, or HTTP/2 by prior knowledge). [`exchange`] has the DoH rules
//! both share.

mod corked;
mod exchange;
mod http1;
mod http2;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::resolve::Handler;

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
            let cork = Arc::new(corked::Cork::default());
            let stream = corked::Corked::new(stream, cork.clone());
            let accept = settings.acceptor.accept(stream);
            let tls = match tokio::time::timeout(settings.idle_timeout, accept).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let idle = settings.idle_timeout;
            if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                http2::serve_connection(tls, cork, handler, peer, idle).await;
            } else {
                http1::serve_connection(tls, handler, peer, idle).await;
            }
            drop(permit);
        });
    }
}
