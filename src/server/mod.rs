//! `telesink run`: binds the listeners, starts the handler, metrics and query log, and runs
//! until SIGTERM or SIGINT. SIGHUP reloads.

pub mod cert_watch;
pub mod doh;
pub mod encrypted;
pub mod listen;
pub mod live;
pub mod reload;
pub mod schedules;
pub mod tcp;
pub mod udp;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use arc_swap::ArcSwap;

use crate::config::Config;
use crate::observe::events::QuerySink;
use crate::resolve::cache::AnswerCache;
use crate::resolve::upstream::{UpstreamObserver, Upstreams};
use crate::resolve::{Handler, Live};
use listen::bind_tcp;
use live::{build_live_observed, log_policy, publish_list_ages, publish_lists};

pub struct Running {
    pub config_path: PathBuf,
    pub live: Arc<ArcSwap<Live>>,
    pub handler: Handler,
}

pub async fn run(config_path: &Path) -> Result<()> {
    let config = Config::load(config_path)?;
    let metrics = Arc::new(crate::observe::metrics::Metrics::new(
        config.metrics.max_clients,
    ));
    let live = build_live_observed(&config, None, Some(metrics.clone()))?;
    log_policy(&live.policy);
    let live = Arc::new(ArcSwap::from_pointee(live));
    // `[[group.schedule]]` windows open and close at their edges (see `schedules`).
    tokio::spawn(schedules::run(live.clone()));

    publish_lists(&metrics, &live.load().policy);
    publish_list_ages(&metrics, &config);
    live::publish_forwards(&metrics, &live.load());

    // Configured devices get their `client` label slots before any stranger can ask.
    metrics.reserve_clients(config.clients.iter().map(|c| c.name.as_str()));

    let observer: Arc<dyn UpstreamObserver> = metrics.clone();
    let upstreams = Upstreams::new(
        &config.upstream.servers,
        config.upstream.timeout,
        Some(observer),
    )?;
    // `[upstream] dnssec`: validate every answer, up to the configured anchor or the IANA root.
    let upstreams = if config.upstream.dnssec {
        let anchors = match &config.upstream.dnssec_trust_anchor {
            Some(path) => crate::resolve::dnssec::Anchors::from_file(path)
                .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message))?,
            None => crate::resolve::dnssec::Anchors::iana_root(),
        };
        upstreams.with_dnssec(&anchors)
    } else {
        upstreams
    };
    // Their outcome series exist (at 0) before the first forwarded query.
    metrics.set_upstreams(upstreams.labels());
    let cache = AnswerCache::new(config.upstream.cache_entries, config.upstream.serve_stale)
        .observed_by(metrics.clone());

    let querylog = crate::querylog::start_for_server(
        crate::querylog::QueryLogSettings {
            path: config.querylog.path.clone(),
            mode: match config.querylog.log {
                crate::config::LogMode::All => crate::querylog::LogMode::All,
                crate::config::LogMode::Matched => crate::querylog::LogMode::Matched,
                crate::config::LogMode::None => crate::querylog::LogMode::None,
            },
            retention_days: config.querylog.retention_days,
            anonymize: config.querylog.anonymize,
            queue_size: config.querylog.queue_size,
            postgres: config.querylog.url.clone(),
        },
        metrics.querylog_dropped(),
        {
            let metrics = metrics.clone();
            move |client: &str, at| metrics.set_optout_mark(client, at)
        },
    );
    let mut sinks: Vec<Arc<dyn QuerySink>> = vec![metrics.clone()];
    if let Some(q) = &querylog {
        sinks.push(q.clone());
    }

    // Device identity: the neighbour table and DHCP leases (SPEC "Devices"), read in the
    // background; the DNS path reads their snapshot.
    let (devices, devices_task) = crate::devices::start(crate::devices::DeviceSettings {
        neighbours: config.client_discovery.neighbours,
        leases: config.client_discovery.leases.clone(),
    })
    .await;
    metrics.watch_presence(
        Arc::new(LanPresence {
            devices: devices.clone(),
            live: live.clone(),
        }),
        config.client_discovery.silent_after,
    );

    // Telemetry addresses (SPEC "Telemetry addresses"): learnt off the DNS path, from a
    // hand-off that is a query sink (blocked names) and an answer observer.
    let addresses = match &config.addresses {
        Some(a) => Some(Arc::new(
            crate::addresses::Addresses::start(
                address_settings(Some(a)),
                crate::addresses::learner::Wiring {
                    upstreams: Upstreams::new(
                        &config.upstream.servers,
                        config.upstream.timeout,
                        None,
                    )?,
                    strategy: {
                        let live = live.clone();
                        Arc::new(move || live.load().upstream.strategy)
                    },
                    registry: metrics.registry().clone(),
                    max_clients: config.metrics.max_clients,
                    name_device: {
                        let (live, devices) = (live.clone(), devices.clone());
                        Arc::new(move |addr| {
                            let who =
                                crate::resolve::identity::identify(&live.load(), &devices, addr);
                            who.info.name.unwrap_or_else(|| addr.to_string().into())
                        })
                    },
                    known_clients: client_names(&config),
                    traffic: traffic_log(&config, a),
                },
            )
            .await,
        )),
        None => None,
    };
    if let Some(a) = &addresses {
        sinks.push(a.tap());
    }

    let mut handler = Handler::new(live.clone(), cache, upstreams, sinks).with_devices(devices);
    if let Some(a) = &addresses {
        handler = handler.with_answer_observer(a.tap());
    }
    {
        // Read at each scrape; `unwatch` at shutdown breaks the metrics → handler → metrics
        // cycle.
        let handler = handler.clone();
        metrics.watch_cache(move || handler.cache().len());
    }

    // UDP: listener threads (see `udp`); TCP: hickory's framing behind a capped accept loop.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let udp_stop = Arc::new(AtomicBool::new(false));
    let mut udp_threads = Vec::new();
    let per_address = std::thread::available_parallelism().map_or(1, |n| n.get());
    for addr in &config.server.listen {
        let tcp = bind_tcp(*addr)?;
        udp_threads.extend(crate::server::udp::start(
            *addr,
            per_address,
            handler.clone(),
            tokio::runtime::Handle::current(),
            udp_stop.clone(),
        )?);
        tokio::spawn(crate::server::tcp::serve(
            tcp,
            handler.clone(),
            config.server.tcp_idle_timeout,
            config.server.max_tcp_connections,
            stop_rx.clone(),
        ));
        tracing::info!(%addr, "listening for DNS on UDP and TCP");
    }

    let _encrypted = encrypted::start(&config, &handler, &stop_rx, &metrics)?;

    let ready = Arc::new(AtomicBool::new(true));
    if let Some(listen) = config.metrics.listen {
        let listener = crate::observe::http::bind(listen).await?;
        let metrics = metrics.clone();
        let ready = ready.clone();
        let mut stop = stop_rx.clone();
        let addresses_http = addresses.clone();
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            let extra = match &addresses_http {
                Some(a) => crate::addresses::http::router(a.clone()),
                None => axum::Router::new(),
            };
            if let Err(e) =
                crate::observe::http::serve_with(listener, metrics, ready, extra, shutdown).await
            {
                tracing::error!(error = %e, "metrics server stopped");
            }
        });
        tracing::info!(%listen, "serving metrics on /metrics and health on /healthz");
    }

    // Housekeeping: the rate-limiter table.
    {
        let live = live.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                if let Some(l) = live.load().access.limiter() {
                    l.housekeep();
                }
            }
        });
    }

    // Queries waiting for an upstream at shutdown get at most this long to be answered.
    let drain_max = config.upstream.timeout + Duration::from_millis(500);
    let after_swap: Option<crate::server::reload::AfterSwap> = addresses.clone().map(|a| {
        Box::new(move |c: &Config| {
            let (a, settings, clients) = (
                a.clone(),
                address_settings(c.addresses.as_ref()),
                client_names(c),
            );
            tokio::spawn(async move { a.reload(settings, clients).await });
        }) as crate::server::reload::AfterSwap
    });
    let reloader = crate::server::reload::Reloader::start_with(
        config_path.to_path_buf(),
        config,
        live.clone(),
        metrics.clone(),
        after_swap,
    );

    wait_for_shutdown(&reloader).await;
    tracing::info!("shutting down: finishing queries in flight");
    ready.store(false, Ordering::SeqCst);
    udp_stop.store(true, Ordering::SeqCst);
    let _ = stop_tx.send(true);
    for t in udp_threads {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
    // No new queries now; answer those in flight (their events reach the query log first).
    let left = handler.drain(drain_max).await;
    if left > 0 {
        tracing::warn!(left, "queries still unanswered at shutdown");
    }
    if let Some(q) = querylog {
        // Writes every queued entry, then closes the database.
        if let Ok(report) = tokio::task::spawn_blocking(move || q.shutdown()).await {
            tracing::info!("{report}");
        }
    }
    if let Some(a) = &addresses {
        // Removes the nftables table, if there is one.
        a.stop().await;
    }
    metrics.unwatch();
    devices_task.stop().await;
    tracing::info!("stopped");
    Ok(())
}

/// `[addresses]` in the learner's types; a reload that drops the table turns learning off.
fn address_settings(
    a: Option<&crate::config::AddressesConfig>,
) -> crate::addresses::AddressSettings {
    match a {
        Some(a) => crate::addresses::AddressSettings {
            categories: a.categories.iter().map(|c| Arc::from(c.as_str())).collect(),
            resolve_blocked: a.resolve_blocked,
            nftables: a.nftables,
        },
        None => crate::addresses::AddressSettings {
            categories: Vec::new(),
            resolve_blocked: false,
            nftables: crate::addresses::NftMode::Off,
        },
    }
}

/// Where packet counts go besides the metrics: the query log's `traffic` table, when telesink
/// counts packets and keeps a query log.
fn traffic_log(
    config: &Config,
    a: &crate::config::AddressesConfig,
) -> Option<Arc<dyn crate::addresses::traffic::TrafficSink>> {
    if a.nftables == crate::addresses::NftMode::Off
        || config.querylog.log == crate::config::LogMode::None
    {
        return None;
    }
    if config.querylog.url.is_some() {
        tracing::warn!(
            "packet counts are not kept in a PostgreSQL query log: verify shows no packet \
             evidence (the metrics still count packets)"
        );
        return None;
    }
    match crate::querylog::traffic::TrafficLog::open(
        &config.querylog.path,
        config.querylog.anonymize,
        config.querylog.retention_days,
    ) {
        Ok(t) => Some(Arc::new(t)),
        Err(e) => {
            tracing::error!("packet counts will not reach the query log: {e}");
            None
        }
    }
}

fn client_names(config: &Config) -> Vec<Arc<str>> {
    config
        .clients
        .iter()
        .map(|c| Arc::from(c.name.as_str()))
        .collect()
}

async fn wait_for_shutdown(reloader: &crate::server::reload::Reloader) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("signal handler");
    let mut int = signal(SignalKind::interrupt()).expect("signal handler");
    let mut hup = signal(SignalKind::hangup()).expect("signal handler");
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading");
                reloader.trigger();
            }
        }
    }
}

/// `telesink_client_dns_silent`'s view of the LAN: each device the neighbour table knows, under
/// the label its queries get (the same identity step as the DNS path's).
struct LanPresence {
    devices: crate::devices::Devices,
    live: Arc<ArcSwap<Live>>,
}

impl crate::observe::metrics::PresenceSource for LanPresence {
    fn devices(&self) -> Vec<crate::observe::metrics::DevicePresence> {
        let view = self.devices.view();
        if !view.presence_known() {
            return Vec::new();
        }
        let live = self.live.load();
        view.devices()
            .into_iter()
            .filter_map(|d| {
                let on_lan = d.present?;
                let addr = *d.addresses.first()?;
                let who = crate::resolve::identity::identify(&live, &self.devices, addr);
                Some(crate::observe::metrics::DevicePresence {
                    label: who.info.name.unwrap_or_else(|| addr.to_string().into()),
                    on_lan,
                    last_query: None,
                })
            })
            .collect()
    }
}
