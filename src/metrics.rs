//! Prometheus metrics: the names, labels and label values of the SPEC's "Metrics" table, the
//! process metrics, and the HTTP endpoint (`GET /metrics`, `GET /healthz`) that serves them.
//!
//! # Hot path
//!
//! [`Metrics`] is a [`QuerySink`]: the request handler calls [`QuerySink::record`] once per
//! answered query. In steady state that call allocates nothing and takes no lock shared by all
//! queries: the client's label handles (one pre-resolved `IntCounter` per `result`, and per
//! matched category the three `action` counters and the last-seen gauge) are cached in lock-free
//! [`papaya`] maps, keyed by the configured client name (or, for unnamed clients, the address)
//! and by category name. A query is one lock-free lookup plus a few atomic increments. Only the
//! first query of a new client, or the first match of a category for a client, takes the slow
//! path (a mutex and `with_label_values`).
//!
//! Measured with the ignored test `metrics::tests::record_cost` (1M events over 64 clients, half
//! of them with one or two categories; release build, `cargo test --release -- --ignored
//! --nocapture`): 120 to 180 ns per event on the 2-core development machine while other builds
//! ran, and 0 allocations (counted by a per-thread counting allocator).
//!
//! Category handles are keyed by name, not by [`crate::category::Category`] index, because the
//! indexes change when a reload builds a new policy.
//!
//! # Cardinality
//!
//! The `client` label takes at most `max_clients` distinct values (configured names and
//! addresses, in the order they are first seen, across reloads too); every client past that is
//! counted as `other`. Categories, lists and upstreams come from the configuration, so they are
//! bounded by it.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::category::Action;
use crate::events::{ClientInfo, QueryEvent, QueryResult, QuerySink};
use crate::resolve::cache::{CacheObserver, CacheStep};
use crate::upstream::{UpstreamObserver, UpstreamOutcome};

/// The `client` label of every client past `metrics.max_clients` (the config refuses it as a
/// client name, so it is defined there).
pub use crate::config::OTHER_CLIENT;

/// Buckets of `telesink_response_seconds`: from a cache hit (100 µs) to a slow upstream (5 s).
pub const RESPONSE_BUCKETS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Content type of `GET /metrics`: the Prometheus text exposition format 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const ACTIONS: [Action; 3] = [Action::Blocked, Action::Observed, Action::Allowed];

fn action_index(a: Action) -> usize {
    match a {
        Action::Blocked => 0,
        Action::Observed => 1,
        Action::Allowed => 2,
    }
}

fn outcome_index(o: UpstreamOutcome) -> usize {
    match o {
        UpstreamOutcome::Ok => 0,
        UpstreamOutcome::ServFail => 1,
        UpstreamOutcome::Timeout => 2,
        UpstreamOutcome::Error => 3,
    }
}

fn result_index(r: QueryResult) -> usize {
    match r {
        QueryResult::Blocked => 0,
        QueryResult::Cached => 1,
        QueryResult::Forwarded => 2,
        QueryResult::Local => 3,
        QueryResult::Refused => 4,
        QueryResult::Failed => 5,
    }
}

fn unix_seconds(t: SystemTime) -> f64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(_) => 0.0,
    }
}

/// One category's handles for one client.
struct CategoryHandles {
    /// `telesink_category_queries_total{client,category,action}`, by [`action_index`].
    by_action: [IntCounter; 3],
    /// `telesink_category_last_seen_timestamp_seconds{client,category}`.
    last_seen: Gauge,
}

/// One `client` label value's pre-resolved handles.
struct ClientHandles {
    label: Arc<str>,
    /// `telesink_queries_total{client,result}`, by [`result_index`].
    results: [IntCounter; 6],
    /// Keyed by category name: indexes change across reloads, names do not.
    categories: FastMap<Arc<str>, CategoryHandles>,
}

/// The maps read on every query: keys are few (bounded by `max_clients` and the categories),
/// so a fast seeded hasher does, where SipHash cost ~10 % of a blocked query's instructions.
type FastMap<K, V> = papaya::HashMap<K, V, foldhash::fast::RandomState>;

/// Every `client` label value given out so far. Touched only on the slow path.
#[derive(Default)]
struct ClientSlots {
    by_label: HashMap<Arc<str>, Arc<ClientHandles>>,
}

/// The telesink metrics registry and the handles the server updates.
pub struct Metrics {
    registry: Registry,
    max_clients: usize,

    queries: IntCounterVec,
    category_queries: IntCounterVec,
    category_last_seen: GaugeVec,
    /// `telesink_response_seconds{result}`, by [`result_index`].
    response_seconds: [Histogram; 6],

    /// Fast lookup of named clients, by configured name.
    clients_by_name: FastMap<Arc<str>, Arc<ClientHandles>>,
    /// Fast lookup of unnamed clients, by address. Holds only addresses that own a label, so it
    /// is bounded by `max_clients`.
    clients_by_addr: FastMap<IpAddr, Arc<ClientHandles>>,
    /// Set once `max_clients` labels are given out: a client missing from the fast maps is then
    /// `other` without taking the slot lock.
    clients_full: AtomicBool,
    client_slots: Mutex<ClientSlots>,
    other: Arc<ClientHandles>,

    upstream_responses: IntCounterVec,
    upstreams: papaya::HashMap<Arc<str>, [IntCounter; 4]>,

    cache_entries: IntGauge,
    cache_hits: IntCounter,
    cache_misses: IntCounter,
    cache_stale: IntCounter,

    list_entries: IntGaugeVec,
    current_lists: Mutex<Vec<String>>,

    reloads_success: IntCounter,
    reloads_failure: IntCounter,
    last_reload_success: IntGauge,
    last_reload_timestamp: Gauge,

    querylog_dropped: IntCounter,
    optout_mark: GaugeVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("max_clients", &self.max_clients)
            .finish_non_exhaustive()
    }
}

fn register<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    registry
        .register(Box::new(c.clone()))
        .expect("metric names are unique and valid");
    c
}

impl Metrics {
    /// A registry with every metric of the SPEC, the process metrics and
    /// `telesink_build_info{version}` = 1. `max_clients` is `metrics.max_clients`: the most
    /// distinct `client` label values (fixed for the life of the process).
    pub fn new(max_clients: usize) -> Metrics {
        let registry = Registry::new();
        let queries = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "telesink_queries_total",
                    "DNS queries answered, by client and by how they were answered.",
                ),
                &["client", "result"],
            )
            .unwrap(),
        );
        let category_queries = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "telesink_category_queries_total",
                    "Queries that matched a category, by client, category and what the client's group did.",
                ),
                &["client", "category", "action"],
            )
            .unwrap(),
        );
        let category_last_seen = register(
            &registry,
            GaugeVec::new(
                Opts::new(
                    "telesink_category_last_seen_timestamp_seconds",
                    "Unix time of the client's latest query that matched the category.",
                ),
                &["client", "category"],
            )
            .unwrap(),
        );
        let response_vec = register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "telesink_response_seconds",
                    "Time from receiving a query to sending its answer, by result.",
                )
                .buckets(RESPONSE_BUCKETS.to_vec()),
                &["result"],
            )
            .unwrap(),
        );
        let response_seconds =
            QueryResult::ALL.map(|r| response_vec.with_label_values(&[r.as_str()]));
        let upstream_responses = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "telesink_upstream_responses_total",
                    "Queries forwarded to an upstream, by upstream and outcome.",
                ),
                &["upstream", "outcome"],
            )
            .unwrap(),
        );
        let cache_entries = register(
            &registry,
            IntGauge::new("telesink_cache_entries", "Answers held in the cache.").unwrap(),
        );
        let cache_hits = register(
            &registry,
            IntCounter::new(
                "telesink_cache_hits_total",
                "Queries that reached the cache step and found a fresh answer.",
            )
            .unwrap(),
        );
        let cache_misses = register(
            &registry,
            IntCounter::new(
                "telesink_cache_misses_total",
                "Queries that reached the cache step and were forwarded (no fresh answer).",
            )
            .unwrap(),
        );
        let cache_stale = register(
            &registry,
            IntCounter::new(
                "telesink_cache_stale_total",
                "Misses answered from a stale entry because every upstream failed.",
            )
            .unwrap(),
        );
        let list_entries = register(
            &registry,
            IntGaugeVec::new(
                Opts::new("telesink_list_entries", "Entries loaded from each list."),
                &["list"],
            )
            .unwrap(),
        );
        let reloads = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "telesink_reloads_total",
                    "Configuration and list reloads, by outcome.",
                ),
                &["outcome"],
            )
            .unwrap(),
        );
        let last_reload_success = register(
            &registry,
            IntGauge::new(
                "telesink_config_last_reload_success",
                "1 if the latest configuration load or reload succeeded, else 0.",
            )
            .unwrap(),
        );
        let last_reload_timestamp = register(
            &registry,
            Gauge::new(
                "telesink_config_last_reload_timestamp_seconds",
                "Unix time of the latest configuration load or reload attempt.",
            )
            .unwrap(),
        );
        let querylog_dropped = register(
            &registry,
            IntCounter::new(
                "telesink_querylog_dropped_total",
                "Query-log entries dropped because the log's queue was full.",
            )
            .unwrap(),
        );
        let optout_mark = register(
            &registry,
            GaugeVec::new(
                Opts::new(
                    "telesink_optout_mark_timestamp_seconds",
                    "Unix time of the client's latest opt-out mark (telesink mark).",
                ),
                &["client"],
            )
            .unwrap(),
        );
        let build_info = register(
            &registry,
            IntGaugeVec::new(
                Opts::new("telesink_build_info", "Always 1; the version of telesink."),
                &["version"],
            )
            .unwrap(),
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("process collector registers once");

        let other = Arc::new(ClientHandles::new(OTHER_CLIENT.into(), &queries));
        Metrics {
            max_clients,
            category_last_seen,
            response_seconds,
            clients_by_name: FastMap::default(),
            clients_by_addr: FastMap::default(),
            clients_full: AtomicBool::new(max_clients == 0),
            client_slots: Mutex::new(ClientSlots::default()),
            other,
            upstreams: papaya::HashMap::new(),
            cache_entries,
            cache_hits,
            cache_misses,
            cache_stale,
            list_entries,
            current_lists: Mutex::new(Vec::new()),
            reloads_success: reloads.with_label_values(&["success"]),
            reloads_failure: reloads.with_label_values(&["failure"]),
            last_reload_success,
            last_reload_timestamp,
            querylog_dropped,
            optout_mark,
            upstream_responses,
            category_queries,
            queries,
            registry,
        }
    }

    /// The registry, to gather or to register more collectors.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The text exposition (format 0.0.4) of every metric: the body of `GET /metrics`.
    pub fn encode(&self) -> String {
        let families = self.registry.gather();
        let mut buf = Vec::with_capacity(16 * 1024);
        if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
            tracing::warn!("encoding metrics: {e}");
        }
        String::from_utf8(buf).unwrap_or_default()
    }

    // ---- clients -------------------------------------------------------------------------

    /// Runs `f` with the handles of `client`'s label: lock-free and allocation-free once the
    /// client has been seen.
    fn with_client<R>(&self, client: &ClientInfo, f: impl FnOnce(&ClientHandles) -> R) -> R {
        match &client.name {
            Some(name) => {
                let map = self.clients_by_name.pin();
                if let Some(h) = map.get(&**name) {
                    return f(h);
                }
            }
            None => {
                let map = self.clients_by_addr.pin();
                if let Some(h) = map.get(&client.addr) {
                    return f(h);
                }
            }
        }
        if self.clients_full.load(Ordering::Acquire) {
            return f(&self.other);
        }
        let h = self.client_slow(client);
        f(&h)
    }

    /// First query of a client not in the fast maps: give it a label slot if one is left.
    #[cold]
    fn client_slow(&self, client: &ClientInfo) -> Arc<ClientHandles> {
        let label: Arc<str> = match &client.name {
            Some(n) => n.clone(),
            None => client.addr.to_string().into(),
        };
        let h = self.claim_label(&label);
        if !Arc::ptr_eq(&h, &self.other) {
            match &client.name {
                Some(n) => {
                    self.clients_by_name.pin().insert(n.clone(), h.clone());
                }
                None => {
                    self.clients_by_addr.pin().insert(client.addr, h.clone());
                }
            }
        }
        h
    }

    /// The handles of `label`, creating them if a slot is left, else those of `other`.
    fn claim_label(&self, label: &Arc<str>) -> Arc<ClientHandles> {
        let mut slots = self.client_slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = slots.by_label.get(label) {
            return h.clone();
        }
        if &**label == OTHER_CLIENT {
            return self.other.clone();
        }
        if slots.by_label.len() >= self.max_clients {
            self.clients_full.store(true, Ordering::Release);
            return self.other.clone();
        }
        let h = Arc::new(ClientHandles::new(label.clone(), &self.queries));
        slots.by_label.insert(label.clone(), h.clone());
        if slots.by_label.len() >= self.max_clients {
            self.clients_full.store(true, Ordering::Release);
        }
        h
    }

    /// The `client` label value that `label` (a configured name or an address) is counted
    /// under: itself if it has, or can still get, one of the `max_clients` slots, else `other`.
    pub fn client_label(&self, label: &str) -> Arc<str> {
        let label: Arc<str> = label.into();
        let h = self.claim_label(&label);
        if !Arc::ptr_eq(&h, &self.other) {
            // Keep the fast maps in step, so the client's queries find this slot even after
            // the slots run out.
            match label.parse::<IpAddr>() {
                Ok(addr) => {
                    self.clients_by_addr.pin().insert(addr, h.clone());
                }
                Err(_) => {
                    self.clients_by_name.pin().insert(label.clone(), h.clone());
                }
            }
        }
        h.label.clone()
    }

    /// How many distinct `client` label values are in use, `other` not included.
    pub fn client_labels_in_use(&self) -> usize {
        self.client_slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_label
            .len()
    }

    // ---- methods the rest of the server calls -------------------------------------------

    /// One forwarded query's outcome at `upstream` (its name as configured, e.g. `9.9.9.9:53`
    /// or `tls://9.9.9.9:853#dns.quad9.net`). Lock-free and allocation-free once the upstream
    /// has been seen; its four `outcome` series start at 0.
    pub fn upstream_response(&self, upstream: &str, outcome: UpstreamOutcome) {
        let map = self.upstreams.pin();
        if let Some(h) = map.get(upstream) {
            h[outcome_index(outcome)].inc();
            return;
        }
        let h = map.get_or_insert_with(upstream.into(), || {
            UpstreamOutcome::ALL.map(|o| {
                self.upstream_responses
                    .with_label_values(&[upstream, o.as_str()])
            })
        });
        h[outcome_index(outcome)].inc();
    }

    /// Declares the configured upstreams, so that their `outcome` series exist (at 0) before
    /// the first forwarded query. Call at start and after each successful reload.
    pub fn set_upstreams<'a>(&self, upstreams: impl IntoIterator<Item = &'a str>) {
        let map = self.upstreams.pin();
        for u in upstreams {
            map.get_or_insert_with(u.into(), || {
                UpstreamOutcome::ALL
                    .map(|o| self.upstream_responses.with_label_values(&[u, o.as_str()]))
            });
        }
    }

    /// `telesink_cache_entries`: the answers the cache holds now. (Hits, misses and stale
    /// answers come from the cache, through [`CacheObserver`].)
    pub fn set_cache_entries(&self, entries: usize) {
        self.cache_entries
            .set(entries.min(i64::MAX as usize) as i64);
    }

    /// `telesink_list_entries{list}` for the lists of the policy now in force: `(name, entries)`.
    /// Lists of an earlier policy that are not in `lists` are removed. Call at start and after
    /// each successful reload.
    pub fn set_list_entries<'a>(&self, lists: impl IntoIterator<Item = (&'a str, u64)>) {
        let mut current = self.current_lists.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = Vec::new();
        for (name, entries) in lists {
            self.list_entries
                .with_label_values(&[name])
                .set(entries.min(i64::MAX as u64) as i64);
            next.push(name.to_string());
        }
        for gone in current.iter().filter(|n| !next.contains(n)) {
            let _ = self.list_entries.remove_label_values(&[gone.as_str()]);
        }
        *current = next;
    }

    /// The configuration loaded at start-up: `telesink_config_last_reload_success` = 1 and the
    /// timestamp = `at`, without counting a reload.
    pub fn config_loaded(&self, at: SystemTime) {
        self.last_reload_success.set(1);
        self.last_reload_timestamp.set(unix_seconds(at));
    }

    /// A reload (file change or SIGHUP) that swapped in the new policy.
    pub fn reload_succeeded(&self, at: SystemTime) {
        self.reloads_success.inc();
        self.last_reload_success.set(1);
        self.last_reload_timestamp.set(unix_seconds(at));
    }

    /// A reload that failed and kept the previous policy.
    pub fn reload_failed(&self, at: SystemTime) {
        self.reloads_failure.inc();
        self.last_reload_success.set(0);
        self.last_reload_timestamp.set(unix_seconds(at));
    }

    /// `telesink_querylog_dropped_total`, for the query log to hold and increment when its
    /// queue is full (a clone shares the same counter).
    pub fn querylog_dropped(&self) -> IntCounter {
        self.querylog_dropped.clone()
    }

    /// `telesink_optout_mark_timestamp_seconds{client}` = `at`, the client's latest opt-out
    /// mark. `client` is the client's label (configured name, else the address, as
    /// [`ClientInfo::label`] gives); it takes a `client` slot like a query would. Set by the
    /// query-log task when it sees a mark; Grafana draws it as an annotation.
    pub fn set_optout_mark(&self, client: &str, at: SystemTime) {
        let label = self.client_label(client);
        let g = self.optout_mark.with_label_values(&[&*label]);
        // Several clients past the cap share `other`: keep the latest mark.
        let t = unix_seconds(at);
        if t > g.get() {
            g.set(t);
        }
    }
}

impl ClientHandles {
    fn new(label: Arc<str>, queries: &IntCounterVec) -> ClientHandles {
        ClientHandles {
            results: QueryResult::ALL.map(|r| queries.with_label_values(&[&*label, r.as_str()])),
            label,
            categories: FastMap::default(),
        }
    }
}

impl UpstreamObserver for Metrics {
    fn upstream_outcome(&self, upstream: &str, outcome: UpstreamOutcome, _rtt: Duration) {
        self.upstream_response(upstream, outcome);
    }
}

impl CacheObserver for Metrics {
    fn cache_step(&self, step: CacheStep) {
        match step {
            CacheStep::Hit => self.cache_hits.inc(),
            CacheStep::Miss => self.cache_misses.inc(),
            // A stale answer is a miss that the cache rescued.
            CacheStep::Stale => {
                self.cache_misses.inc();
                self.cache_stale.inc();
            }
        }
    }
}

impl QuerySink for Metrics {
    fn record(&self, event: &QueryEvent<'_>) {
        self.response_seconds[result_index(event.result)].observe(event.elapsed.as_secs_f64());
        self.with_client(event.client, |client| {
            client.results[result_index(event.result)].inc();
            if event.categories.is_empty() {
                return;
            }
            let action = action_index(event.action.unwrap_or(Action::Allowed));
            let now = unix_seconds(event.time);
            let map = client.categories.pin();
            for category in event.categories.iter() {
                let name = event.category_table.name(category);
                let h = match map.get(&**name) {
                    Some(h) => h,
                    None => map.get_or_insert_with(name.clone(), || CategoryHandles {
                        by_action: ACTIONS.map(|a| {
                            self.category_queries.with_label_values(&[
                                &*client.label,
                                &**name,
                                a.as_str(),
                            ])
                        }),
                        last_seen: self
                            .category_last_seen
                            .with_label_values(&[&*client.label, &**name]),
                    }),
                };
                h.by_action[action].inc();
                h.last_seen.set(now);
            }
        });
    }
}

// ---- HTTP ------------------------------------------------------------------------------

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
    let body = s.metrics.encode();
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
}

async fn healthz_handler(State(s): State<HttpState>) -> Response {
    if s.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

/// Serves `GET /metrics` and `GET /healthz` on `listen` until `shutdown` completes.
/// `ready` is what `/healthz` reports: set it once DNS is being served, clear it on shutdown.
pub async fn serve(
    listen: SocketAddr,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| bind_error(listen, e))?;
    serve_listener(listener, metrics, ready, shutdown).await
}

/// [`serve`] on a listener already bound (so that a bind error can stop start-up before DNS is
/// served).
pub async fn serve_listener(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics, ready))
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
    use crate::category::{CategorySet, CategoryTable};
    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::RecordType;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    fn client(addr: [u8; 4], name: Option<&str>) -> ClientInfo {
        ClientInfo {
            addr: IpAddr::V4(Ipv4Addr::from(addr)),
            name: name.map(Arc::from),
            named_by: Default::default(),
            mac: None,
            group: None,
        }
    }

    fn event<'a>(
        client: &'a ClientInfo,
        table: &'a Arc<CategoryTable>,
        result: QueryResult,
        categories: CategorySet,
        action: Option<Action>,
    ) -> QueryEvent<'a> {
        QueryEvent {
            time: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            client,
            name: "tracking.miui.com",
            qtype: RecordType::A,
            result,
            categories,
            category_table: table,
            list: None,
            action,
            rcode: ResponseCode::NoError,
            upstream_time: None,
            elapsed: Duration::from_micros(300),
        }
    }

    /// The value of the sample `name{labels}` in the exposition (labels in exposition order).
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
    }

    #[test]
    fn labels_and_values() {
        let m = Metrics::new(256);
        let mut t = CategoryTable::new();
        let tel = t.intern("telemetry").unwrap();
        let xi = t.intern("xiaomi").unwrap();
        let t = Arc::new(t);
        let anna = client([192, 168, 1, 50], Some("anna-phone"));
        let tv = client([192, 168, 1, 60], None);
        let both = CategorySet::single(tel).union(CategorySet::single(xi));
        for _ in 0..3 {
            m.record(&event(
                &anna,
                &t,
                QueryResult::Blocked,
                both,
                Some(Action::Blocked),
            ));
        }
        m.record(&event(
            &tv,
            &t,
            QueryResult::Forwarded,
            CategorySet::single(xi),
            Some(Action::Observed),
        ));
        m.record(&event(
            &tv,
            &t,
            QueryResult::Refused,
            CategorySet::EMPTY,
            None,
        ));
        let s = m.encode();
        assert_eq!(
            sample(
                &s,
                r#"telesink_queries_total{client="anna-phone",result="blocked"}"#
            ),
            Some(3.0)
        );
        assert_eq!(
            sample(
                &s,
                r#"telesink_queries_total{client="anna-phone",result="cached"}"#
            ),
            Some(0.0)
        );
        assert_eq!(
            sample(
                &s,
                r#"telesink_queries_total{client="192.168.1.60",result="forwarded"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &s,
                r#"telesink_queries_total{client="192.168.1.60",result="refused"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &s,
                r#"telesink_category_queries_total{action="blocked",category="telemetry",client="anna-phone"}"#
            ),
            Some(3.0)
        );
        assert_eq!(
            sample(
                &s,
                r#"telesink_category_queries_total{action="blocked",category="xiaomi",client="anna-phone"}"#
            ),
            Some(3.0)
        );
        assert_eq!(
            sample(
                &s,
                r#"telesink_category_queries_total{action="observed",category="xiaomi",client="192.168.1.60"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &s,
                r#"telesink_category_last_seen_timestamp_seconds{category="xiaomi",client="192.168.1.60"}"#
            ),
            Some(1_700_000_000.0)
        );
        assert_eq!(
            sample(&s, r#"telesink_response_seconds_count{result="blocked"}"#),
            Some(3.0)
        );
        assert_eq!(
            sample(
                &s,
                r#"telesink_response_seconds_bucket{result="blocked",le="0.0005"}"#
            ),
            Some(3.0)
        );
        assert_eq!(
            sample(
                &s,
                r#"telesink_response_seconds_bucket{result="blocked",le="0.00025"}"#
            ),
            Some(0.0)
        );
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(
            sample(
                &s,
                &format!(r#"telesink_build_info{{version="{version}"}}"#)
            ),
            Some(1.0)
        );
    }

    #[test]
    fn every_metric_is_exposed() {
        let m = Metrics::new(8);
        let t = Arc::new(CategoryTable::new());
        let c = client([10, 0, 0, 1], None);
        m.record(&event(&c, &t, QueryResult::Local, CategorySet::EMPTY, None));
        let mut t2 = CategoryTable::new();
        let b = t2.intern(crate::category::BYPASS).unwrap();
        let t2 = Arc::new(t2);
        m.record(&event(
            &c,
            &t2,
            QueryResult::Blocked,
            CategorySet::single(b),
            Some(Action::Blocked),
        ));
        m.upstream_response("9.9.9.9:53", UpstreamOutcome::Timeout);
        m.set_cache_entries(42);
        m.record(&event(
            &c,
            &t,
            QueryResult::Cached,
            CategorySet::EMPTY,
            None,
        ));
        m.record(&event(
            &c,
            &t,
            QueryResult::Forwarded,
            CategorySet::EMPTY,
            None,
        ));
        m.record(&event(
            &c,
            &t,
            QueryResult::Failed,
            CategorySet::EMPTY,
            None,
        ));
        for step in [CacheStep::Hit, CacheStep::Miss, CacheStep::Stale] {
            m.cache_step(step);
        }
        m.set_list_entries([("xiaomi", 10), ("huawei", 5)]);
        m.config_loaded(SystemTime::now());
        m.reload_failed(SystemTime::now());
        m.querylog_dropped().inc_by(2);
        m.set_optout_mark("10.0.0.1", UNIX_EPOCH + Duration::from_secs(1_700_000_100));
        let s = m.encode();
        for name in [
            "telesink_queries_total",
            "telesink_category_queries_total",
            "telesink_category_last_seen_timestamp_seconds",
            "telesink_response_seconds",
            "telesink_upstream_responses_total",
            "telesink_cache_entries",
            "telesink_cache_hits_total",
            "telesink_cache_misses_total",
            "telesink_cache_stale_total",
            "telesink_list_entries",
            "telesink_reloads_total",
            "telesink_config_last_reload_success",
            "telesink_config_last_reload_timestamp_seconds",
            "telesink_querylog_dropped_total",
            "telesink_build_info",
            "telesink_optout_mark_timestamp_seconds",
        ] {
            assert!(
                s.contains(&format!("# TYPE {name} ")),
                "{name} missing:\n{s}"
            );
        }
        #[cfg(target_os = "linux")]
        for name in [
            "process_resident_memory_bytes",
            "process_cpu_seconds_total",
            "process_open_fds",
        ] {
            assert!(s.contains(&format!("# TYPE {name} ")), "{name} missing");
        }
        assert_eq!(
            sample(
                &s,
                r#"telesink_upstream_responses_total{outcome="timeout",upstream="9.9.9.9:53"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &s,
                r#"telesink_upstream_responses_total{outcome="ok",upstream="9.9.9.9:53"}"#
            ),
            Some(0.0)
        );
        assert_eq!(sample(&s, "telesink_cache_entries"), Some(42.0));
        assert_eq!(sample(&s, "telesink_cache_hits_total"), Some(1.0));
        assert_eq!(sample(&s, "telesink_cache_misses_total"), Some(2.0));
        assert_eq!(sample(&s, "telesink_cache_stale_total"), Some(1.0));
        for (i, o) in UpstreamOutcome::ALL.into_iter().enumerate() {
            assert_eq!(outcome_index(o), i);
        }
        assert_eq!(
            sample(&s, r#"telesink_list_entries{list="huawei"}"#),
            Some(5.0)
        );
        assert_eq!(
            sample(&s, r#"telesink_reloads_total{outcome="failure"}"#),
            Some(1.0)
        );
        assert_eq!(
            sample(&s, r#"telesink_reloads_total{outcome="success"}"#),
            Some(0.0)
        );
        assert_eq!(sample(&s, "telesink_config_last_reload_success"), Some(0.0));
        assert_eq!(sample(&s, "telesink_querylog_dropped_total"), Some(2.0));
        assert_eq!(
            sample(
                &s,
                r#"telesink_category_queries_total{action="blocked",category="bypass",client="10.0.0.1"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &s,
                r#"telesink_optout_mark_timestamp_seconds{client="10.0.0.1"}"#
            ),
            Some(1_700_000_100.0)
        );

        // A reload drops a list: its series goes.
        m.set_list_entries([("xiaomi", 11)]);
        let s = m.encode();
        assert_eq!(
            sample(&s, r#"telesink_list_entries{list="xiaomi"}"#),
            Some(11.0)
        );
        assert!(!s.contains(r#"list="huawei""#));
    }

    #[test]
    fn client_cardinality_is_capped() {
        let m = Metrics::new(256);
        let t = Arc::new(CategoryTable::new());
        let clients: Vec<ClientInfo> = (0..300u32)
            .map(|i| client([10, 1, (i / 256) as u8, (i % 256) as u8], None))
            .collect();
        for round in 0..2 {
            for c in &clients {
                m.record(&event(
                    c,
                    &t,
                    QueryResult::Forwarded,
                    CategorySet::EMPTY,
                    None,
                ));
            }
            // Named clients past the cap, and a reload that renames: still `other`.
            let named = client(
                [10, 2, 0, round],
                Some(if round == 0 {
                    "laptop"
                } else {
                    "laptop-renamed"
                }),
            );
            m.record(&event(
                &named,
                &t,
                QueryResult::Local,
                CategorySet::EMPTY,
                None,
            ));
        }
        assert_eq!(m.client_labels_in_use(), 256);
        let s = m.encode();
        let labels: std::collections::BTreeSet<&str> = s
            .lines()
            .filter(|l| l.starts_with("telesink_queries_total{"))
            .filter_map(|l| l.split("client=\"").nth(1)?.split('"').next())
            .collect();
        assert_eq!(labels.len(), 257, "256 clients + other");
        assert!(labels.contains(OTHER_CLIENT));
        assert_eq!(
            sample(
                &s,
                r#"telesink_queries_total{client="10.1.0.0",result="forwarded"}"#
            ),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &s,
                r#"telesink_queries_total{client="10.1.0.255",result="forwarded"}"#
            ),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &s,
                r#"telesink_queries_total{client="10.1.1.0",result="forwarded"}"#
            ),
            None
        );
        assert_eq!(
            sample(
                &s,
                r#"telesink_queries_total{client="other",result="forwarded"}"#
            ),
            Some(2.0 * 44.0)
        );
        assert_eq!(
            sample(
                &s,
                r#"telesink_queries_total{client="other",result="local"}"#
            ),
            Some(2.0)
        );
        // A mark for an unknown client past the cap is `other` too.
        m.set_optout_mark("somebody-new", SystemTime::now());
        assert!(m
            .encode()
            .contains(r#"telesink_optout_mark_timestamp_seconds{client="other"}"#));
        assert_eq!(m.client_labels_in_use(), 256);
    }

    #[test]
    fn handles_are_cached_across_events_and_reloads() {
        let m = Metrics::new(16);
        let mut t1 = CategoryTable::new();
        let a1 = t1.intern("ads").unwrap();
        let tel1 = t1.intern("telemetry").unwrap();
        // A reload: new table, same names at other indexes, and a new category.
        let mut t2 = CategoryTable::new();
        let new2 = t2.intern("samsung").unwrap();
        let tel2 = t2.intern("telemetry").unwrap();
        let (t1, t2) = (Arc::new(t1), Arc::new(t2));
        let c = client([192, 168, 1, 9], Some("tv"));
        for _ in 0..5_000 {
            m.record(&event(
                &c,
                &t1,
                QueryResult::Blocked,
                CategorySet::single(tel1),
                Some(Action::Blocked),
            ));
            m.record(&event(
                &c,
                &t1,
                QueryResult::Forwarded,
                CategorySet::single(a1),
                Some(Action::Allowed),
            ));
        }
        for _ in 0..5_000 {
            m.record(&event(
                &c,
                &t2,
                QueryResult::Forwarded,
                CategorySet::single(tel2).union(CategorySet::single(new2)),
                Some(Action::Observed),
            ));
        }
        assert_eq!(m.client_labels_in_use(), 1);
        m.with_client(&c, |h| assert_eq!(h.categories.len(), 3));
        let s = m.encode();
        assert_eq!(
            sample(
                &s,
                r#"telesink_queries_total{client="tv",result="blocked"}"#
            ),
            Some(5000.0)
        );
        assert_eq!(
            sample(
                &s,
                r#"telesink_queries_total{client="tv",result="forwarded"}"#
            ),
            Some(10000.0)
        );
        for (cat, action, n) in [
            ("telemetry", "blocked", 5000.0),
            ("telemetry", "observed", 5000.0),
            ("ads", "allowed", 5000.0),
            ("samsung", "observed", 5000.0),
            ("samsung", "blocked", 0.0),
        ] {
            let series = format!(
                r#"telesink_category_queries_total{{action="{action}",category="{cat}",client="tv"}}"#
            );
            assert_eq!(sample(&s, &series), Some(n), "{series}");
        }
    }

    #[tokio::test]
    async fn http_endpoints() {
        let m = Arc::new(Metrics::new(4));
        let ready = Arc::new(AtomicBool::new(false));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // Taken: the error names the address and what to do.
        let err = serve(addr, m.clone(), ready.clone(), std::future::pending())
            .await
            .unwrap_err();
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
        assert!(err.to_string().contains("[metrics] listen"), "{err}");
        drop(listener);

        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(addr, m.clone(), ready.clone(), async {
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

    /// Counts this thread's allocations, for the per-event benchmark below (per thread, so
    /// tests running alongside do not disturb the count).
    mod counting {
        use std::alloc::{GlobalAlloc, Layout, System};
        use std::cell::Cell;
        thread_local! {
            static ALLOCS: Cell<u64> = const { Cell::new(0) };
        }
        pub fn allocs() -> u64 {
            ALLOCS.with(|a| a.get())
        }
        fn count() {
            let _ = ALLOCS.try_with(|a| a.set(a.get() + 1));
        }
        pub struct Counting;
        unsafe impl GlobalAlloc for Counting {
            unsafe fn alloc(&self, l: Layout) -> *mut u8 {
                count();
                System.alloc(l)
            }
            unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
                System.dealloc(p, l)
            }
            unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
                count();
                System.realloc(p, l, n)
            }
        }
        #[global_allocator]
        static GLOBAL: Counting = Counting;
    }

    /// Per-query cost of `Metrics::record` over 1M events, in steady state, and proof that it
    /// allocates nothing. Run in release:
    /// `cargo test --release metrics::tests::record_cost -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn record_cost() {
        use std::time::Instant;
        let m = Metrics::new(256);
        let mut t = CategoryTable::new();
        let tel = t.intern("telemetry").unwrap();
        let xi = t.intern("xiaomi").unwrap();
        for i in 0..20 {
            t.intern(&format!("cat{i}")).unwrap();
        }
        let t = Arc::new(t);
        let clients: Vec<ClientInfo> = (0..64u8)
            .map(|i| {
                client(
                    [192, 168, 1, i],
                    if i % 2 == 0 { Some("named") } else { None },
                )
            })
            .map(|mut c| {
                if let Some(n) = &c.name {
                    c.name = Some(Arc::from(format!("{n}-{}", c.addr)));
                }
                c
            })
            .collect();
        let cases = [
            (QueryResult::Forwarded, CategorySet::EMPTY, None),
            (QueryResult::Cached, CategorySet::EMPTY, None),
            (
                QueryResult::Blocked,
                CategorySet::single(tel).union(CategorySet::single(xi)),
                Some(Action::Blocked),
            ),
            (
                QueryResult::Forwarded,
                CategorySet::single(xi),
                Some(Action::Observed),
            ),
        ];
        let events: Vec<QueryEvent<'_>> = clients
            .iter()
            .flat_map(|c| cases.iter().map(move |&(r, s, a)| (c, r, s, a)))
            .map(|(c, r, s, a)| event(c, &t, r, s, a))
            .collect();
        // Warm up: every client and category handle is created.
        for e in &events {
            m.record(e);
        }
        const N: usize = 1_000_000;
        let before = counting::allocs();
        let start = Instant::now();
        for i in 0..N {
            m.record(std::hint::black_box(&events[i % events.len()]));
        }
        let elapsed = start.elapsed();
        let allocs = counting::allocs() - before;
        let ns = elapsed.as_nanos() as f64 / N as f64;
        println!(
            "Metrics::record: {ns:.1} ns/event over {N} events ({} clients, mix: 50% no category, \
             25% two categories, 25% one); {allocs} allocations",
            clients.len()
        );

        // Two threads at once: no shared lock, so the cost should not blow up.
        let m = Arc::new(m);
        let start = Instant::now();
        std::thread::scope(|s| {
            for k in 0..2 {
                let m = &m;
                let events = &events;
                s.spawn(move || {
                    for i in 0..N {
                        m.record(std::hint::black_box(&events[(i + k * 7) % events.len()]));
                    }
                });
            }
        });
        let ns2 = start.elapsed().as_nanos() as f64 / N as f64;
        println!("Metrics::record, 2 threads: {ns2:.1} ns per event per thread");
        assert_eq!(allocs, 0, "steady-state record() must not allocate");
    }
}
