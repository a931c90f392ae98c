//! The HTTP endpoint: `GET /metrics` (the Prometheus text exposition) and `GET /healthz`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::metrics::Metrics;

/// Content type of `GET /metrics`: the Prometheus text exposition format 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone)]
struct HttpState {
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
}

/// The axum router of the metrics endpoint: `GET /metrics` and `GET /healthz` (200 `ok` while
/// `ready` is true, 503 otherwise).
pub fn router(metrics: Arc<Metrics>, ready: Arc<AtomicBool>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz_handler))
        .with_state(HttpState { metrics, ready })
}

async fn metrics_handler(State(s): State<HttpState>) -> Response {
    // The scrape-time collectors read snapshots and atomics only, but the encoding itself is
    // CPU work: keep it off the runtime threads that carry DNS over TCP.
    let metrics = s.metrics.clone();
    let body = tokio::task::spawn_blocking(move || metrics.encode())
        .await
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
}

async fn healthz_handler(State(s): State<HttpState>) -> Response {
    if s.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

/// Binds `listen` (`[metrics] listen`), so that a bind error stops start-up before DNS is
/// served; the error says what to change.
pub async fn bind(listen: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| bind_error(listen, e))
}

/// Serves `GET /metrics` and `GET /healthz` on `listener` until `shutdown` completes.
/// `ready` is what `/healthz` reports: set it once DNS is being served, clear it on shutdown.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics, ready))
        .with_graceful_shutdown(shutdown)
        .await
}

/// [`serve`], with `extra` routes merged in (`GET /addresses/…`).
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    extra: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics, ready).merge(extra))
        .with_graceful_shutdown(shutdown)
        .await
}

fn bind_error(listen: SocketAddr, e: std::io::Error) -> std::io::Error {
    let hint = match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            "another process is listening there: stop it, or set [metrics] listen to a free address"
        }
        std::io::ErrorKind::PermissionDenied => {
            "use a port above 1023, or give telesink CAP_NET_BIND_SERVICE"
        }
        std::io::ErrorKind::AddrNotAvailable => {
            "no interface has that address: set [metrics] listen to an address of this host, e.g. 127.0.0.1:9153"
        }
        _ => "check [metrics] listen in the configuration",
    };
    std::io::Error::new(
        e.kind(),
        format!("cannot listen for metrics on {listen} ([metrics] listen): {e}; {hint}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn http_endpoints() {
        let m = Arc::new(Metrics::new(4));
        let ready = Arc::new(AtomicBool::new(false));
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        // Taken: the error names the address and what to do.
        let err = bind(addr).await.unwrap_err();
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
        assert!(err.to_string().contains("[metrics] listen"), "{err}");
        drop(taken);

        let listener = bind(addr).await.unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, m.clone(), ready.clone(), async {
            let _ = rx.await;
        }));
        let get = |path: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            for _ in 0..100 {
                if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
                    s.write_all(
                        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                            .as_bytes(),
                    )
                    .await
                    .unwrap();
                    let mut out = String::new();
                    s.read_to_string(&mut out).await.unwrap();
                    return out;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!("metrics endpoint never came up");
        };
        assert!(get("/healthz").await.starts_with("HTTP/1.1 503"));
        ready.store(true, Ordering::Release);
        let h = get("/healthz").await;
        assert!(h.starts_with("HTTP/1.1 200") && h.ends_with("ok\n"), "{h}");
        let r = get("/metrics").await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert!(
            r.to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4"),
            "{r}"
        );
        assert!(r.contains("telesink_build_info"));
        tx.send(()).unwrap();
        task.await.unwrap().unwrap();
    }
}
