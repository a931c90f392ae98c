//! The encrypted listeners: DNS over TLS on `server.tls_listen` and DNS over HTTPS on
//! `server.https_listen`, with the certificate of
//! `server.tls_cert` / `tls_key` (checked at start: a bad one stops `run`).

use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::sync::watch;

use crate::config::Config;
use crate::observe::metrics::Metrics;
use crate::resolve::Handler;
use crate::tls::Certificates;

use super::listen::bind_tcp;

/// The encrypted listeners' state that lives as long as `run`.
pub struct Encrypted {
    pub certificates: Arc<Certificates>,
    _watch: Option<super::cert_watch::CertWatch>,
}

/// Binds and starts the DoT and DoH listeners, and watches the certificate files; `None` when
/// no encrypted listener is configured.
pub fn start(
    config: &Config,
    handler: &Handler,
    stop: &watch::Receiver<bool>,
    metrics: &Arc<Metrics>,
) -> Result<Option<Encrypted>> {
    let enc = &config.server.encrypted;
    if !enc.enabled() {
        return Ok(None);
    }
    // The config conversion guarantees these with a listener.
    let (Some(cert), Some(key), Some(name)) = (&enc.tls_cert, &enc.tls_key, &enc.tls_name) else {
        anyhow::bail!("an encrypted listener needs server.tls_cert, tls_key and tls_name");
    };
    let certs = Certificates::new(crate::tls::load(cert, key).context("cannot serve DoT/DoH")?);
    let tls_name: Arc<str> = name.as_str().into();
    let dot = certs.server_config(&[b"dot"]);
    for addr in &enc.tls_listen {
        let listener = bind_tcp(*addr).with_context(|| format!("server.tls_listen {addr}"))?;
        tokio::spawn(super::tcp::serve_tls(
            listener,
            handler.clone(),
            config.server.tcp_idle_timeout,
            config.server.max_tcp_connections,
            stop.clone(),
            super::tcp::DotTls {
                acceptor: tokio_rustls::TlsAcceptor::from(dot.clone()),
                tls_name: tls_name.clone(),
            },
        ));
        tracing::info!(%addr, "listening for DNS over TLS");
    }
    let doh = certs.server_config(&[b"h2", b"http/1.1"]);
    for addr in &enc.https_listen {
        let listener = bind_tcp(*addr).with_context(|| format!("server.https_listen {addr}"))?;
        tokio::spawn(super::doh::serve(
            listener,
            handler.clone(),
            super::doh::DohSettings {
                acceptor: tokio_rustls::TlsAcceptor::from(doh.clone()),
                idle_timeout: config.server.tcp_idle_timeout,
                max_connections: config.server.max_tcp_connections,
            },
            stop.clone(),
        ));
        tracing::info!(%addr, "listening for DNS over HTTPS on /dns-query");
    }
    let watch = super::cert_watch::start(cert.clone(), key.clone(), certs.clone(), metrics.clone());
    Ok(Some(Encrypted {
        certificates: certs,
        _watch: watch,
    }))
}
