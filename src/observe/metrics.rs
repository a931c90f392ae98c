//! Prometheus metrics: the names, labels and label values of the SPEC's "Metrics" table and
//! the process metrics.
//!
//! # Hot path
//!
//! [`Metrics`] is a [`QuerySink`]: the request handler calls [`QuerySink::record`] once per
//! answered query. In steady state that call allocates nothing and takes no lock shared by all
//! queries: the client's label handles (one pre-resolved `IntCounter` per `result`, and per
//! matched category the three `action` counters and the last-seen gauge) are cached in lock-free
//! [`papaya`] maps, keyed by the configured client name (or, for unnamed clients, the address)
//! and by category name. A query is one lock-free lookup plus a few atomic operations (the
//! client's last-query time among them). Only the first admitted query of a new client, or the
//! first match of a category for a client, takes the slow path (a mutex and
//! `with_label_values`); no reload and no query-log work takes that mutex.
//!
//! Measured with the ignored test `metrics::tests::record_cost` (1M events over 64 clients, half
//! of them with one or two categories; release build, `cargo test --release -- --ignored
//! --nocapture`): 120 to 180 ns per event on the 2-core development machine while other builds
//! ran, and 0 allocations (counted by a per-thread counting allocator).
//!
//! Category handles are keyed by name, not by [`crate::policy::category::Category`] index, because the
//! indexes change when a reload builds a new policy.
//!
//! # Cardinality
//!
//! The `client` label takes at most `max_clients` distinct values: configured devices first
//! ([`Metrics::reserve_clients`]), then allowed clients in the order they are first seen, across
//! reloads too; admitted clients past that are counted as `other`, and refused clients that hold
//! no slot as `refused` (see `observe::clients`). Categories, lists and upstreams come from the
//! configuration, so they are bounded by it.
//!
//! # Computed at scrape
//!
//! `telesink_cache_entries`, `telesink_optout_mark_timestamp_seconds`,
//! `telesink_client_last_query_timestamp_seconds` and `telesink_client_dns_silent` are built
//! when scraped, from sources handed over with [`Metrics::watch_cache`],
//! [`Metrics::set_optout_mark`] and [`Metrics::watch_presence`] (see `observe::scrape`).

use crate::observe::transport::Transport;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use super::clients::{Admission, CategoryHandles, ClientSlots};
use super::scrape::{CacheSize, Presence, ScrapeCollector, ScrapeSources};
use crate::observe::events::{CacheObserver, CacheStep, UpstreamObserver, UpstreamOutcome};
use crate::observe::events::{QueryEvent, QueryResult, QuerySink};
use crate::policy::category::Action;

pub use super::clients::{OTHER_CLIENT, REFUSED_CLIENT};
pub use super::http::{router, CONTENT_TYPE};
pub use super::scrape::{DevicePresence, PresenceSource};

/// Buckets of `telesink_response_seconds`: from a cache hit (100 µs) to a slow upstream (5 s).
pub const RESPONSE_BUCKETS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

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

/// The telesink metrics registry and the handles the server updates.
pub struct Metrics {
    registry: Registry,

    category_queries: IntCounterVec,
    category_last_seen: GaugeVec,
    /// `telesink_response_seconds{result}`, by [`result_index`].
    response_seconds: [Histogram; 6],

    clients: Arc<ClientSlots>,

    upstream_responses: IntCounterVec,
    /// By upstream label: names from the configuration, not chosen by a client, so foldhash
    /// (a tenth of SipHash's cost on every forwarded query) needs no defence against floods.
    upstreams: super::clients::FastMap<Arc<str>, [IntCounter; 4]>,

    cache_hits: IntCounter,
    cache_misses: IntCounter,
    cache_stale: IntCounter,

    list_entries: IntGaugeVec,
    current_lists: Mutex<Vec<String>>,

    reloads_success: IntCounter,
    reloads_failure: IntCounter,
    /// `telesink_transport_queries_total{transport}`, by [`Transport::index`].
    transport_queries: [IntCounter; 4],
    last_reload_success: IntGauge,
    last_reload_timestamp: Gauge,

    querylog_dropped: IntCounter,
    scrape: Arc<ScrapeSources>,
    list_ages: super::list_age::ListAges,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("max_clients", &self.clients.max())
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
        let transport_queries = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "telesink_transport_queries_total",
                    "Queries answered, by the transport they came over (udp, tcp, tls, https).",
                ),
                &["transport"],
            )
            .unwrap(),
        );
        let transport_queries =
            Transport::ALL.map(|t| transport_queries.with_label_values(&[t.as_str()]));
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

        let clients = Arc::new(ClientSlots::new(max_clients, queries));
        let scrape = Arc::new(ScrapeSources::new());
        registry
            .register(Box::new(ScrapeCollector::new(
                clients.clone(),
                scrape.clone(),
            )))
            .expect("scrape-time metric names are unique and valid");
        let list_ages = register(&registry, super::list_age::ListAges::new());
        Metrics {
            list_ages,
            category_last_seen,
            response_seconds,
            clients,
            upstreams: super::clients::FastMap::default(),
            cache_hits,
            cache_misses,
            cache_stale,
            list_entries,
            current_lists: Mutex::new(Vec::new()),
            reloads_success: reloads.with_label_values(&["success"]),
            reloads_failure: reloads.with_label_values(&["failure"]),
            transport_queries,
            last_reload_success,
            last_reload_timestamp,
            querylog_dropped,
            scrape,
            upstream_responses,
            category_queries,
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

    /// Gives each configured device (its name) a `client` slot now, before strangers can take
    /// them. Call at start and after a reload that adds clients; names past the cap stay
    /// `other`.
    pub fn reserve_clients<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        for n in names {
            self.clients.reserve(n);
        }
    }

    /// How many distinct `client` label values are in use, `other` and `refused` not included.
    pub fn client_labels_in_use(&self) -> usize {
        self.clients.in_use()
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
    /// the first forwarded query. Call at start (upstreams do not change on reload).
    pub fn set_upstreams<'a>(&self, upstreams: impl IntoIterator<Item = &'a str>) {
        let map = self.upstreams.pin();
        for u in upstreams {
            map.get_or_insert_with(u.into(), || {
                UpstreamOutcome::ALL
                    .map(|o| self.upstream_responses.with_label_values(&[u, o.as_str()]))
            });
        }
    }

    /// `telesink_cache_entries` is `entries()` at each scrape (0 until this is called). Hits,
    /// misses and stale answers come from the cache step, through [`CacheObserver`].
    pub fn watch_cache(&self, entries: impl Fn() -> usize + Send + Sync + 'static) {
        self.scrape
            .cache
            .store(Some(Arc::new(CacheSize(Box::new(entries)))));
    }

    /// Drops what [`Metrics::watch_cache`] and [`Metrics::watch_presence`] handed over (they
    /// may hold the handler, which holds these metrics): call at shutdown.
    pub fn unwatch(&self) {
        self.scrape.cache.store(None);
        self.scrape.presence.store(None);
    }

    /// `telesink_client_dns_silent{client}` from `source` at each scrape: 1 for a device on
    /// the LAN whose latest query (the device table's or this registry's, whichever is later;
    /// telesink's start if it never asked) is `silent_after` old or older. Until this is called,
    /// and for labels the source does not list, the gauge is 0 for every client label.
    pub fn watch_presence(&self, source: Arc<dyn PresenceSource>, silent_after: Duration) {
        self.scrape.presence.store(Some(Arc::new(Presence {
            source,
            silent_after,
        })));
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

    /// The URL lists of the policy now in force, for `telesink_list_age_seconds{list}` (read
    /// from their cached copies at each scrape). Call at start and after each reload.
    pub fn set_url_lists(
        &self,
        state_dir: std::path::PathBuf,
        lists: Vec<super::list_age::WatchedList>,
    ) {
        self.list_ages.set(state_dir, lists);
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
    /// [`ClientInfo::label`](crate::observe::events::ClientInfo::label) gives). Set by the
    /// query-log writer (idle priority) when it sees a mark: it swaps in a new snapshot of the
    /// marks and takes no lock; the scrape maps the client to its label (its slot's, else its
    /// own while slots are left, else `other`) without taking a slot. Grafana draws it as an
    /// annotation.
    pub fn set_optout_mark(&self, client: &str, at: SystemTime) {
        let t = unix_seconds(at);
        let client: Arc<str> = client.into();
        self.scrape.marks.rcu(|marks| {
            let mut next = HashMap::clone(marks);
            let e = next.entry(client.clone()).or_insert(t);
            *e = e.max(t);
            next
        });
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
    fn transport(&self, transport: Transport) {
        self.transport_queries[transport.index()].inc();
    }

    fn record(&self, event: &QueryEvent<'_>) {
        self.response_seconds[result_index(event.result)].observe(event.elapsed.as_secs_f64());
        let now = unix_seconds(event.time);
        let admission = Admission::of(event.result);
        self.clients.with(event.client, admission, |client| {
            client.results[result_index(event.result)].inc();
            client.touch(now);
            if event.categories.is_empty() {
                return;
            }
            let action = action_index(event.action.unwrap_or(Action::Allowed));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::events::ClientInfo;
    use crate::policy::category::{CategorySet, CategoryTable};
    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::RecordType;
    use std::net::IpAddr;
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
        let b = t2.intern(crate::policy::category::BYPASS).unwrap();
        let t2 = Arc::new(t2);
        m.record(&event(
            &c,
            &t2,
            QueryResult::Blocked,
            CategorySet::single(b),
            Some(Action::Blocked),
        ));
        m.upstream_response("9.9.9.9:53", UpstreamOutcome::Timeout);
        m.watch_cache(|| 42);
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
        assert_eq!(labels.len(), 258, "256 clients + other + refused");
        assert!(labels.contains(OTHER_CLIENT));
        assert!(labels.contains(REFUSED_CLIENT));
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
        m.clients.with(&c, Admission::Admitted, |h| {
            assert_eq!(h.categories.len(), 3)
        });
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

    /// Issue 16 item 2: refused clients never take a label slot; configured devices keep
    /// theirs; a refused query from a client that holds a slot stays under its label.
    #[test]
    fn refused_clients_take_no_slot() {
        let m = Metrics::new(4);
        m.reserve_clients(["anna-phone"]);
        let t = Arc::new(CategoryTable::new());
        let allowed = client([192, 168, 1, 9], None);
        m.record(&event(
            &allowed,
            &t,
            QueryResult::Forwarded,
            CategorySet::EMPTY,
            None,
        ));
        for i in 0..1000u32 {
            let stranger = client([203, 0, (i / 250) as u8, (i % 250) as u8 + 1], None);
            m.record(&event(
                &stranger,
                &t,
                QueryResult::Refused,
                CategorySet::EMPTY,
                None,
            ));
        }
        // The allowed client, rate limited later, is still counted under its own label.
        m.record(&event(
            &allowed,
            &t,
            QueryResult::Refused,
            CategorySet::EMPTY,
            None,
        ));
        assert_eq!(m.client_labels_in_use(), 2, "anna-phone and 192.168.1.9");
        let anna = client([192, 168, 1, 50], Some("anna-phone"));
        let tv = client([192, 168, 1, 60], Some("tv"));
        for c in [&anna, &tv] {
            m.record(&event(c, &t, QueryResult::Local, CategorySet::EMPTY, None));
        }
        let s = m.encode();
        assert_eq!(
            sample(
                &s,
                r#"telesink_queries_total{client="refused",result="refused"}"#
            ),
            Some(1000.0)
        );
        assert_eq!(
            sample(
                &s,
                r#"telesink_queries_total{client="192.168.1.9",result="refused"}"#
            ),
            Some(1.0)
        );
        for who in ["anna-phone", "tv"] {
            assert_eq!(
                sample(
                    &s,
                    &format!(r#"telesink_queries_total{{client="{who}",result="local"}}"#)
                ),
                Some(1.0),
                "{who}"
            );
        }
        assert!(!s.contains("203.0."), "no stranger has a series");
    }

    #[test]
    fn gauges_computed_at_scrape() {
        let m = Metrics::new(2);
        let t = Arc::new(CategoryTable::new());
        let entries = Arc::new(std::sync::atomic::AtomicUsize::new(3));
        let e = entries.clone();
        m.watch_cache(move || e.load(std::sync::atomic::Ordering::Relaxed));
        assert_eq!(sample(&m.encode(), "telesink_cache_entries"), Some(3.0));
        entries.store(7, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(sample(&m.encode(), "telesink_cache_entries"), Some(7.0));

        // Last query: per client label, the latest event's time.
        let phone = client([10, 0, 0, 7], Some("phone"));
        for secs in [1_700_000_000, 1_700_000_050, 1_700_000_020] {
            let mut e = event(&phone, &t, QueryResult::Forwarded, CategorySet::EMPTY, None);
            e.time = UNIX_EPOCH + Duration::from_secs(secs);
            m.record(&e);
        }
        let s = m.encode();
        assert_eq!(
            sample(
                &s,
                r#"telesink_client_last_query_timestamp_seconds{client="phone"}"#
            ),
            Some(1_700_000_050.0)
        );

        // Marks: under the slot's label; an unknown client under its own while a slot is
        // left (without taking it); `other` once the slots are gone.
        m.set_optout_mark("phone", UNIX_EPOCH + Duration::from_secs(1_700_000_100));
        m.set_optout_mark("phone", UNIX_EPOCH + Duration::from_secs(1_700_000_090));
        m.set_optout_mark("laptop", UNIX_EPOCH + Duration::from_secs(1_700_000_200));
        let s = m.encode();
        assert_eq!(
            sample(
                &s,
                r#"telesink_optout_mark_timestamp_seconds{client="phone"}"#
            ),
            Some(1_700_000_100.0)
        );
        assert_eq!(
            sample(
                &s,
                r#"telesink_optout_mark_timestamp_seconds{client="laptop"}"#
            ),
            Some(1_700_000_200.0)
        );
        assert_eq!(m.client_labels_in_use(), 1, "a mark takes no slot");
        m.reserve_clients(["tv"]);
        let s = m.encode();
        assert_eq!(
            sample(
                &s,
                r#"telesink_optout_mark_timestamp_seconds{client="other"}"#
            ),
            Some(1_700_000_200.0)
        );
    }

    /// A device table for the DNS-silent gauge: what a test says is on the LAN.
    struct Lan(Mutex<Vec<DevicePresence>>);

    impl PresenceSource for Lan {
        fn devices(&self) -> Vec<DevicePresence> {
            self.0.lock().unwrap().clone()
        }
    }

    fn device(label: &str, on_lan: bool, last_query: Option<Duration>) -> DevicePresence {
        DevicePresence {
            label: label.into(),
            on_lan,
            last_query: last_query.map(|ago| SystemTime::now() - ago),
        }
    }

    #[test]
    fn dns_silent_from_a_presence_source() {
        let m = Metrics::new(8);
        m.reserve_clients(["phone", "tv", "nas"]);
        let t = Arc::new(CategoryTable::new());
        // Without a source: 0 for every client label, so the series (and the panel) exist.
        let s = m.encode();
        for who in ["phone", "tv", "nas"] {
            assert_eq!(
                sample(
                    &s,
                    &format!(r#"telesink_client_dns_silent{{client="{who}"}}"#)
                ),
                Some(0.0),
                "{who}"
            );
        }
        assert!(!s.contains(r#"telesink_client_dns_silent{client="refused"}"#));

        let min = Duration::from_secs(60);
        let lan = Arc::new(Lan(Mutex::new(vec![
            // On the LAN, quiet for 2 h: silent.
            device("phone", true, Some(120 * min)),
            // On the LAN, asked a minute ago: not silent.
            device("tv", true, Some(min)),
            // Quiet for 2 h but gone from the LAN: not silent.
            device("nas", false, Some(120 * min)),
            // Not a configured client, holds no slot, on the LAN and quiet: silent, own label.
            device("10.0.0.99", true, Some(60 * min)),
        ])));
        m.watch_presence(lan.clone(), 30 * min);
        let s = m.encode();
        for (who, want) in [
            ("phone", 1.0),
            ("tv", 0.0),
            ("nas", 0.0),
            ("10.0.0.99", 1.0),
        ] {
            assert_eq!(
                sample(
                    &s,
                    &format!(r#"telesink_client_dns_silent{{client="{who}"}}"#)
                ),
                Some(want),
                "{who}\n{s}"
            );
        }

        // The phone asks telesink now: this registry's last query beats the table's older one.
        let phone = client([10, 0, 0, 7], Some("phone"));
        let mut e = event(&phone, &t, QueryResult::Forwarded, CategorySet::EMPTY, None);
        e.time = SystemTime::now();
        m.record(&e);
        assert_eq!(
            sample(&m.encode(), r#"telesink_client_dns_silent{client="phone"}"#),
            Some(0.0)
        );

        // The tv leaves the LAN and comes back quiet for an hour: silent.
        lan.0.lock().unwrap()[1] = device("tv", true, Some(60 * min));
        assert_eq!(
            sample(&m.encode(), r#"telesink_client_dns_silent{client="tv"}"#),
            Some(1.0)
        );
        m.unwatch();
        assert_eq!(
            sample(&m.encode(), r#"telesink_client_dns_silent{client="tv"}"#),
            Some(0.0)
        );
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
