//! The learner: one task applies what the DNS path handed over, one resolves blocked names
//! through the upstreams (rate-limited, each name at most once per its TTL), and a ticker
//! expires addresses, keeps the nftables sets in step and reads the packet counters.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use hickory_proto::op::Query;
use hickory_proto::rr::{Name, RData, RecordType};
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use super::nftables::{self, SetNames};
use super::store::{Export, Learnt, Store, MAX_LEARNT_CATEGORIES};
use super::tap::{Learn, Tap, Wanted};
use super::traffic::{Readings, TrafficRow, TrafficSink};
use super::{AddressSettings, CurrentStrategy, Family, NameDevice, NftMode};
use crate::resolve::upstream::Upstreams;

/// Addresses kept (learnt entries, and, separately, addresses of other names).
const STORE_CAP: usize = 65_536;
/// Blocked names remembered for their next lookup time.
const RESOLVED_CAP: usize = 16_384;
/// Hand-offs waiting for the learner; past it they are dropped and counted.
const HANDOFF_QUEUE: usize = 4096;
/// Blocked names waiting for a lookup.
const LOOKUP_QUEUE: usize = 1024;
/// Background lookups per second (each is an A and an AAAA query).
const LOOKUPS_PER_SECOND: u32 = 20;
/// A name whose lookup failed or gave no address is tried again after this.
const RETRY_AFTER: Duration = Duration::from_secs(300);
/// How often the packet counters are read.
const COUNT_EVERY: Duration = Duration::from_secs(5);
/// How often the blocked-name filter of the DNS path is cleared.
const FORGET_EVERY: Duration = Duration::from_secs(30);

struct Metrics {
    addresses: IntGaugeVec,
    shared: IntGaugeVec,
    dropped: IntCounterVec,
    packets: IntCounterVec,
    max_clients: usize,
    clients: Mutex<HashSet<Arc<str>>>,
}

impl Metrics {
    fn new(registry: &Registry, max_clients: usize) -> Metrics {
        let reg = |c: Box<dyn prometheus::core::Collector>| {
            registry
                .register(c)
                .expect("address metric names are unique and valid")
        };
        let addresses = IntGaugeVec::new(
            Opts::new(
                "telesink_category_addresses",
                "Addresses learnt for a category (shared ones left out), by family.",
            ),
            &["category", "family"],
        )
        .unwrap();
        let shared = IntGaugeVec::new(
            Opts::new(
                "telesink_category_addresses_shared",
                "Addresses learnt for a category but left out because they also serve a name in no learnt category.",
            ),
            &["category"],
        )
        .unwrap();
        let dropped = IntCounterVec::new(
            Opts::new(
                "telesink_addresses_dropped_total",
                "Addresses or hand-offs not kept: reason queue (the learner was behind) or cap (the memory bound was reached).",
            ),
            &["reason"],
        )
        .unwrap();
        let packets = IntCounterVec::new(
            Opts::new(
                "telesink_category_packets_total",
                "Packets from a device to a category's addresses, counted (and dropped) by the nftables table.",
            ),
            &["client", "category", "action"],
        )
        .unwrap();
        reg(Box::new(addresses.clone()));
        reg(Box::new(shared.clone()));
        reg(Box::new(dropped.clone()));
        reg(Box::new(packets.clone()));
        Metrics {
            addresses,
            shared,
            dropped,
            packets,
            max_clients,
            clients: Mutex::new(HashSet::new()),
        }
    }

    /// The `client` label for `name`: past `max_clients` distinct names, `other`.
    fn client_label(&self, name: Arc<str>) -> Arc<str> {
        let mut seen = self.clients.lock().unwrap();
        if seen.contains(&name) || seen.len() < self.max_clients {
            seen.insert(name.clone());
            name
        } else {
            crate::observe::OTHER_CLIENT.into()
        }
    }
}

struct NftState {
    /// The sets of the table in force; `None` when there is no table (off, or it failed).
    sets: Option<Vec<SetNames>>,
    mode: NftMode,
}

struct Inner {
    store: Mutex<Store>,
    settings: Mutex<AddressSettings>,
    nft: Mutex<NftState>,
    readings: Mutex<Readings>,
    changed: Notify,
    metrics: Metrics,
    name_device: NameDevice,
    /// Configured device names: their packet counters exist (at 0) while counting is on.
    known_clients: Mutex<Vec<Arc<str>>>,
    traffic: Option<Arc<dyn TrafficSink>>,
}

/// The running learner; [`Addresses::tap`] is what the DNS path gets.
pub struct Addresses {
    inner: Arc<Inner>,
    tap: Arc<Tap>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// What [`Addresses::start`] needs from the composition root.
pub struct Wiring {
    /// Background lookups go through these (the same servers as the DNS path's).
    pub upstreams: Upstreams,
    pub strategy: CurrentStrategy,
    pub registry: Registry,
    pub max_clients: usize,
    pub name_device: NameDevice,
    pub known_clients: Vec<Arc<str>>,
    pub traffic: Option<Arc<dyn TrafficSink>>,
}

impl Addresses {
    /// Starts learning; with nftables on, creates the table first (an error is logged, naming
    /// what is missing, and DNS goes on without it).
    pub async fn start(settings: AddressSettings, w: Wiring) -> Addresses {
        let mut categories = settings.categories.clone();
        categories.truncate(MAX_LEARNT_CATEGORIES);
        let metrics = Metrics::new(&w.registry, w.max_clients);
        let (tx, rx) = mpsc::channel(HANDOFF_QUEUE);
        let tap = Arc::new(Tap::new(
            tx,
            Wanted {
                categories: categories.clone(),
                resolve_blocked: settings.resolve_blocked,
            },
            metrics.dropped.with_label_values(&["queue"]),
        ));
        let inner = Arc::new(Inner {
            store: Mutex::new(Store::new(categories, STORE_CAP)),
            settings: Mutex::new(settings.clone()),
            nft: Mutex::new(NftState {
                sets: None,
                mode: NftMode::Off,
            }),
            readings: Mutex::new(Readings::default()),
            changed: Notify::new(),
            metrics,
            name_device: w.name_device,
            known_clients: Mutex::new(w.known_clients),
            traffic: w.traffic,
        });
        {
            let inner = inner.clone();
            let _ = tokio::task::spawn_blocking(move || inner.set_table(settings.nftables)).await;
        }
        inner.publish();
        let (lookups_tx, lookups_rx) = mpsc::channel(LOOKUP_QUEUE);
        let tasks = vec![
            tokio::spawn(apply_loop(inner.clone(), rx, lookups_tx)),
            tokio::spawn(lookup_loop(
                inner.clone(),
                w.upstreams,
                w.strategy,
                lookups_rx,
            )),
            tokio::spawn(tick_loop(inner.clone(), tap.clone())),
        ];
        Addresses {
            inner,
            tap,
            tasks: Mutex::new(tasks),
        }
    }

    /// The DNS path's hand-off (a query sink for blocked names, an answer observer).
    pub fn tap(&self) -> Arc<Tap> {
        self.tap.clone()
    }

    /// A reload: new categories (addresses of those still listed are kept), lookups on or
    /// off, the table rebuilt when its sets or mode change.
    pub async fn reload(&self, settings: AddressSettings, known_clients: Vec<Arc<str>>) {
        let mut categories = settings.categories.clone();
        categories.truncate(MAX_LEARNT_CATEGORIES);
        *self.inner.known_clients.lock().unwrap() = known_clients;
        let before = std::mem::replace(&mut *self.inner.settings.lock().unwrap(), settings.clone());
        self.tap.set_wanted(Wanted {
            categories: categories.clone(),
            resolve_blocked: settings.resolve_blocked,
        });
        if before.categories != settings.categories || before.nftables != settings.nftables {
            self.inner.store.lock().unwrap().set_categories(categories);
            let inner = self.inner.clone();
            let mode = settings.nftables;
            let _ = tokio::task::spawn_blocking(move || inner.set_table(mode)).await;
        }
        self.inner.publish();
        self.inner.changed.notify_one();
    }

    /// Category `name`'s addresses now; `None` when it is not learnt.
    pub fn export(&self, category: &str) -> Option<Export> {
        let store = self.inner.store.lock().unwrap();
        let i = store.index(category)?;
        Some(store.export(i, Instant::now()))
    }

    /// The learnt categories.
    pub fn categories(&self) -> Vec<Arc<str>> {
        self.inner.store.lock().unwrap().categories().to_vec()
    }

    /// Stops the tasks and removes the table (at exit).
    pub async fn stop(&self) {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap());
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
        let had_table = self.inner.nft.lock().unwrap().sets.is_some();
        if had_table {
            // Counts since the last reading are not lost.
            let inner = self.inner.clone();
            let _ = tokio::task::spawn_blocking(move || {
                inner.read_counters();
                inner.remove_table();
            })
            .await;
        }
    }
}

impl Drop for Addresses {
    /// A start-up that failed after the table was made (a listener that cannot bind), or a
    /// panic: the table goes all the same.
    fn drop(&mut self) {
        if self.inner.nft.lock().is_ok_and(|n| n.sets.is_some()) {
            self.inner.remove_table();
        }
    }
}

impl Inner {
    /// Removes the table (at exit). Blocking.
    fn remove_table(&self) {
        let mut nft = self.nft.lock().unwrap_or_else(|p| p.into_inner());
        if nft.sets.take().is_none() {
            return;
        }
        match nftables::remove() {
            Ok(()) => tracing::info!("nftables table inet telesink removed"),
            Err(e) => tracing::error!("removing the nftables table inet telesink: {e}"),
        }
    }

    /// Creates (or replaces, or removes) the table for `mode` and the current categories, and
    /// fills its sets. Blocking (runs `nft`).
    fn set_table(&self, mode: NftMode) {
        let categories = self.store.lock().unwrap().categories().to_vec();
        let mut nft = self.nft.lock().unwrap();
        self.readings.lock().unwrap().reset();
        if mode == NftMode::Off {
            if nft.sets.take().is_some() {
                if let Err(e) = nftables::remove() {
                    tracing::error!("removing the nftables table inet telesink: {e}");
                }
            }
            nft.mode = mode;
            return;
        }
        let names = nftables::set_names(&categories);
        let script = nftables::table_script(mode, &names);
        match nftables::apply(&script) {
            Ok(()) => {
                tracing::info!(
                    mode = mode.as_str(),
                    categories = categories.len(),
                    "nftables table inet telesink in place"
                );
                nft.sets = Some(names);
                nft.mode = mode;
            }
            Err(e) => {
                tracing::error!(
                    "[addresses] nftables = {:?}: cannot keep the nftables table inet telesink: {e}; \
                     DNS is served, addresses are still learnt and served over HTTP, packets are not counted",
                    mode.as_str()
                );
                nft.sets = None;
                nft.mode = NftMode::Off;
            }
        }
        drop(nft);
        self.sync_sets();
    }

    /// Replaces the sets' elements with the store's addresses, in one transaction. Blocking.
    fn sync_sets(&self) {
        let nft = self.nft.lock().unwrap();
        let Some(sets) = &nft.sets else {
            return;
        };
        let now = Instant::now();
        let mut script = String::new();
        {
            let store = self.store.lock().unwrap();
            for (i, names) in sets.iter().enumerate() {
                nftables::elements_script(&mut script, names, &store.export(i, now));
            }
        }
        if let Err(e) = nftables::apply(&script) {
            tracing::warn!("updating the nftables sets: {e}");
        }
    }

    /// The gauges: addresses per category and family, shared ones, the cap.
    fn publish(&self) {
        let store = self.store.lock().unwrap();
        let now = Instant::now();
        let m = &self.metrics;
        m.addresses.reset();
        m.shared.reset();
        for (i, c) in store.categories().iter().enumerate() {
            let e = store.export(i, now);
            m.addresses
                .with_label_values(&[&**c, Family::Ipv4.as_str()])
                .set(e.v4.len() as i64);
            m.addresses
                .with_label_values(&[&**c, Family::Ipv6.as_str()])
                .set(e.v6.len() as i64);
            m.shared
                .with_label_values(&[&**c])
                .set(e.shared.len() as i64);
        }
        let capped = m.dropped.with_label_values(&["cap"]);
        let new = store.capped.saturating_sub(capped.get());
        capped.inc_by(new);
        // Known devices have their packet counters while counting is on (0 = nothing seen).
        let nft = self.nft.lock().unwrap();
        if let (Some(action), Some(_)) = (nft.mode.action(), &nft.sets) {
            for client in self.known_clients.lock().unwrap().iter() {
                let label = m.client_label(client.clone());
                for c in store.categories() {
                    m.packets
                        .with_label_values(&[&*label, &**c, action.as_str()]);
                }
            }
        }
    }

    /// Reads the counters, turns them into per-device deltas, and hands them to the metrics
    /// and the query log. Blocking.
    fn read_counters(&self) {
        let (sets, action) = {
            let nft = self.nft.lock().unwrap();
            match (&nft.sets, nft.mode.action()) {
                (Some(s), Some(a)) => (s.clone(), a),
                _ => return,
            }
        };
        let counted = match nftables::read_counters() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("reading the nftables counters: {e}");
                return;
            }
        };
        let time = SystemTime::now();
        let (deltas, since) = {
            let mut r = self.readings.lock().unwrap();
            let since = std::mem::replace(&mut r.at, time);
            (r.deltas(counted), since)
        };
        if deltas.is_empty() {
            return;
        }
        let mut rows = Vec::with_capacity(deltas.len());
        let mut names: HashMap<IpAddr, Arc<str>> = HashMap::new();
        for (c, packets) in deltas {
            let Some(set) = sets
                .iter()
                .find(|s| s.seen_v4 == c.set || s.seen_v6 == c.set)
            else {
                continue;
            };
            let client = names
                .entry(c.source)
                .or_insert_with(|| (self.name_device)(c.source))
                .clone();
            let label = self.metrics.client_label(client.clone());
            self.metrics
                .packets
                .with_label_values(&[&*label, &*set.category, action.as_str()])
                .inc_by(packets);
            rows.push(TrafficRow {
                since,
                time,
                client,
                client_address: c.source,
                category: set.category.clone(),
                address: c.destination,
                packets,
                action,
            });
        }
        if let Some(sink) = &self.traffic {
            sink.traffic(&rows);
        }
    }
}

/// Applies the DNS path's hand-offs; blocked names due for a lookup go to the lookup task.
async fn apply_loop(
    inner: Arc<Inner>,
    mut rx: mpsc::Receiver<Learn>,
    lookups: mpsc::Sender<(Learnt, Box<str>)>,
) {
    // Each blocked name → when it may be looked up again.
    let mut due: HashMap<Box<str>, Instant> = HashMap::new();
    // When the map is full of names not yet due, sweeping it again at once frees nothing:
    // sweep at most once a second, so a flood of new names costs no more than their count.
    let mut next_sweep = Instant::now();
    while let Some(msg) = rx.recv().await {
        match msg {
            Learn::Answer { cats, addrs } => {
                let changed = inner
                    .store
                    .lock()
                    .unwrap()
                    .learn(cats, &addrs, Instant::now());
                if changed {
                    inner.changed.notify_one();
                }
            }
            Learn::Blocked { cats, name } => {
                let now = Instant::now();
                if due.get(&name).is_some_and(|t| *t > now) {
                    continue;
                }
                if due.len() >= RESOLVED_CAP {
                    if now >= next_sweep {
                        due.retain(|_, t| *t > now);
                        next_sweep = now + Duration::from_secs(1);
                    }
                    if due.len() >= RESOLVED_CAP {
                        inner.metrics.dropped.with_label_values(&["cap"]).inc();
                        continue;
                    }
                }
                // Until the lookup says otherwise (its TTL), not again soon.
                due.insert(name.clone(), now + RETRY_AFTER);
                if lookups.try_send((cats, name)).is_err() {
                    inner.metrics.dropped.with_label_values(&["queue"]).inc();
                }
            }
        }
    }
}

/// Resolves blocked names through the upstreams, A and AAAA, at most
/// [`LOOKUPS_PER_SECOND`].
async fn lookup_loop(
    inner: Arc<Inner>,
    upstreams: Upstreams,
    strategy: CurrentStrategy,
    mut rx: mpsc::Receiver<(Learnt, Box<str>)>,
) {
    let quota = governor::Quota::per_second(NonZeroU32::new(LOOKUPS_PER_SECOND).unwrap());
    let limiter = governor::RateLimiter::direct(quota);
    while let Some((cats, name)) = rx.recv().await {
        limiter.until_ready().await;
        let Ok(qname) = Name::from_str(&format!("{name}.")) else {
            continue;
        };
        let mut addrs = Vec::new();
        for rtype in [RecordType::A, RecordType::AAAA] {
            let q = Query::query(qname.clone(), rtype);
            match upstreams.forward(&q, strategy()).await {
                Ok(answer) => addrs.extend(answer.answers.iter().filter_map(|r| match &r.data {
                    RData::A(a) => Some((IpAddr::V4(a.0), r.ttl)),
                    RData::AAAA(a) => Some((IpAddr::V6(a.0), r.ttl)),
                    _ => None,
                })),
                Err(e) => tracing::debug!(name = %name, error = %e, "background lookup failed"),
            }
        }
        tracing::debug!(name = %name, addresses = addrs.len(), "blocked name resolved");
        if !addrs.is_empty()
            && inner
                .store
                .lock()
                .unwrap()
                .learn(cats, &addrs, Instant::now())
        {
            inner.changed.notify_one();
        }
    }
}

/// Expiry, the nftables sets, the gauges and the counters.
async fn tick_loop(inner: Arc<Inner>, tap: Arc<Tap>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut last_count, mut last_forget) = (Instant::now(), Instant::now());
    loop {
        // A change is applied at once (a learnt address reaches the router's set within the
        // time of one `nft` run); otherwise once a second for expiry.
        let changed = tokio::select! {
            _ = tick.tick() => false,
            _ = inner.changed.notified() => true,
        };
        if !changed {
            tap.refill();
        }
        let swept = inner.store.lock().unwrap().sweep(Instant::now());
        let count = last_count.elapsed() >= COUNT_EVERY;
        if count {
            last_count = Instant::now();
        }
        if last_forget.elapsed() >= FORGET_EVERY {
            last_forget = Instant::now();
            tap.forget_recent();
        }
        let inner2 = inner.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if changed || swept {
                inner2.sync_sets();
                inner2.publish();
            }
            if count {
                inner2.read_counters();
            }
        })
        .await;
    }
}
