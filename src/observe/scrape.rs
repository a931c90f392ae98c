//! The gauges computed when Prometheus scrapes, not when something happens: the cache size,
//! the opt-out marks, each client's last query, and whether a device on the LAN is DNS-silent.
//!
//! They are read from sources that the rest of the server hands over once ([`ScrapeSources`]),
//! through atomics and [`ArcSwap`] snapshots: a scrape takes no lock a DNS thread can take, and
//! the query-log writer (idle priority) hands its marks over without one either.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{GaugeVec, IntGauge, IntGaugeVec, Opts};

use super::clients::{ClientSlots, ScrapeLabels};

/// What the device table knows of one device, for `telesink_client_dns_silent`.
#[derive(Clone, Debug)]
pub struct DevicePresence {
    /// The device's `client` label: its name, else its address.
    pub label: Arc<str>,
    /// On the LAN now, per the kernel's neighbour table.
    pub on_lan: bool,
    /// Its latest query as the device table saw it (any of its addresses), if any.
    pub last_query: Option<SystemTime>,
}

/// Where `telesink_client_dns_silent` learns which devices are on the LAN: the device table.
/// Called at each scrape, off the DNS path; it should answer from a snapshot, without I/O.
pub trait PresenceSource: Send + Sync + 'static {
    fn devices(&self) -> Vec<DevicePresence>;
}

/// A function giving the number of answers the cache holds now.
pub(super) struct CacheSize(pub Box<dyn Fn() -> usize + Send + Sync>);

/// The device table and the silence threshold (`silent_after`).
pub(super) struct Presence {
    pub source: Arc<dyn PresenceSource>,
    pub silent_after: Duration,
}

/// What the scrape reads, handed over by the rest of the server.
pub(super) struct ScrapeSources {
    /// Latest opt-out mark per client as the query log reported it (a name or an address), in
    /// Unix seconds. Replaced whole by the writer (marks are rare), read at scrape.
    pub marks: ArcSwap<HashMap<Arc<str>, f64>>,
    pub cache: ArcSwapOption<CacheSize>,
    pub presence: ArcSwapOption<Presence>,
    /// A device never seen asking is silent once it has been on the LAN for `silent_after`
    /// since telesink started.
    pub started: SystemTime,
}

impl ScrapeSources {
    pub fn new() -> ScrapeSources {
        ScrapeSources {
            marks: ArcSwap::from_pointee(HashMap::new()),
            cache: ArcSwapOption::empty(),
            presence: ArcSwapOption::empty(),
            started: SystemTime::now(),
        }
    }
}

fn cache_entries_gauge() -> IntGauge {
    IntGauge::new("telesink_cache_entries", "Answers held in the cache.").unwrap()
}

fn marks_vec() -> GaugeVec {
    GaugeVec::new(
        Opts::new(
            "telesink_optout_mark_timestamp_seconds",
            "Unix time of the client's latest opt-out mark (telesink mark).",
        ),
        &["client"],
    )
    .unwrap()
}

fn last_query_vec() -> GaugeVec {
    GaugeVec::new(
        Opts::new(
            "telesink_client_last_query_timestamp_seconds",
            "Unix time of the client's latest DNS query.",
        ),
        &["client"],
    )
    .unwrap()
}

fn dns_silent_vec() -> IntGaugeVec {
    IntGaugeVec::new(
        Opts::new(
            "telesink_client_dns_silent",
            "1 while the device is on the LAN and has sent no DNS query for silent_after, else 0.",
        ),
        &["client"],
    )
    .unwrap()
}

/// The collector registered once in the registry; builds its families at each scrape.
pub(super) struct ScrapeCollector {
    clients: Arc<ClientSlots>,
    sources: Arc<ScrapeSources>,
    descs: Vec<Desc>,
}

impl ScrapeCollector {
    pub fn new(clients: Arc<ClientSlots>, sources: Arc<ScrapeSources>) -> ScrapeCollector {
        let mut descs = Vec::new();
        descs.extend(cache_entries_gauge().desc().into_iter().cloned());
        descs.extend(marks_vec().desc().into_iter().cloned());
        descs.extend(last_query_vec().desc().into_iter().cloned());
        descs.extend(dns_silent_vec().desc().into_iter().cloned());
        ScrapeCollector {
            clients,
            sources,
            descs,
        }
    }

    fn cache_entries(&self) -> Vec<MetricFamily> {
        let g = cache_entries_gauge();
        if let Some(c) = &*self.sources.cache.load() {
            g.set((c.0)().min(i64::MAX as usize) as i64);
        }
        g.collect()
    }

    fn marks(&self, labels: &mut ScrapeLabels<'_>) -> Vec<MetricFamily> {
        let v = marks_vec();
        let mut by_label: BTreeMap<Arc<str>, f64> = BTreeMap::new();
        for (client, t) in self.sources.marks.load().iter() {
            // Several clients past the cap share `other`: keep the latest mark.
            let e = by_label.entry(labels.label(client)).or_insert(*t);
            *e = e.max(*t);
        }
        for (label, t) in by_label {
            v.with_label_values(&[&*label]).set(t);
        }
        v.collect()
    }

    fn last_query(&self) -> Vec<MetricFamily> {
        let v = last_query_vec();
        self.clients.for_each(|h| {
            if let Some(t) = h.last_query() {
                v.with_label_values(&[&*h.label]).set(t);
            }
        });
        v.collect()
    }

    /// 0 for every client label that is not shown silent, so the series exists (and the
    /// dashboard's panel has data) before the device table is wired.
    fn dns_silent(&self, labels: &mut ScrapeLabels<'_>, now: SystemTime) -> Vec<MetricFamily> {
        let mut silent: BTreeMap<Arc<str>, bool> = BTreeMap::new();
        self.clients.for_each(|h| {
            if !Arc::ptr_eq(&h.label, &self.clients.refused.label) {
                silent.entry(h.label.clone()).or_insert(false);
            }
        });
        // `other` only when a device maps there.
        silent.remove(super::clients::OTHER_CLIENT);
        if let Some(p) = &*self.sources.presence.load() {
            for d in p.source.devices() {
                let ours = self
                    .clients
                    .holder(&d.label)
                    .and_then(|h| h.last_query())
                    .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs_f64(s));
                let last = d.last_query.max(ours).unwrap_or(self.sources.started);
                let quiet_for = now.duration_since(last).unwrap_or_default();
                let is_silent = d.on_lan && quiet_for >= p.silent_after;
                *silent.entry(labels.label(&d.label)).or_insert(false) |= is_silent;
            }
        }
        let v = dns_silent_vec();
        for (label, s) in silent {
            v.with_label_values(&[&*label]).set(i64::from(s));
        }
        v.collect()
    }
}

impl Collector for ScrapeCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut labels = ScrapeLabels::new(&self.clients);
        let mut out = self.cache_entries();
        out.extend(self.marks(&mut labels));
        out.extend(self.last_query());
        out.extend(self.dns_silent(&mut labels, SystemTime::now()));
        out
    }
}
