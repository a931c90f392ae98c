//! The `client` label slots: at most `metrics.max_clients` distinct values, each with its
//! pre-resolved handles.
//!
//! Who gets a slot: configured devices (reserved at start, [`ClientSlots::reserve`]) and
//! allowed clients, in the order they are first seen. A refused query (outside
//! `allow_networks`, or rate limited) never takes one: it is counted under the label that its
//! client already holds, else under [`REFUSED_CLIENT`]. So anyone who can reach port 53 with
//! made-up source addresses cannot fill the slots and blind the dashboard. Past the cap,
//! admitted clients share [`OTHER_CLIENT`].
//!
//! Lookups are lock-free ([`papaya`] maps keyed by configured name or by address); only the
//! first admitted query of a new client takes the slot mutex. Nothing else that runs at idle
//! priority (the query-log writer) or on a reload takes it: marks and presence map their
//! labels through the lock-free [`ClientSlots::holder`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use prometheus::{Gauge, IntCounter, IntCounterVec};

use crate::observe::events::{ClientInfo, QueryResult};

/// The `client` label of every admitted client past `metrics.max_clients` (the config refuses
/// it as a client name, so it is defined there).
/// The `client` label of every client past `metrics.max_clients`.
pub const OTHER_CLIENT: &str = "other";

/// The `client` label of refused queries from clients that hold no slot.
pub const REFUSED_CLIENT: &str = "refused";

/// The maps read on every query: keys are few (bounded by `max_clients` and the categories),
/// so a fast seeded hasher does, where SipHash cost ~10 % of a blocked query's instructions.
pub(super) type FastMap<K, V> = papaya::HashMap<K, V, foldhash::fast::RandomState>;

/// Whether the query got past the access step: a refused one never takes a label slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    Refused,
}

impl Admission {
    pub fn of(result: QueryResult) -> Admission {
        match result {
            QueryResult::Refused => Admission::Refused,
            _ => Admission::Admitted,
        }
    }
}

/// One category's handles for one client.
pub(super) struct CategoryHandles {
    /// `telesink_category_queries_total{client,category,action}`, by action index.
    pub by_action: [IntCounter; 3],
    /// `telesink_category_last_seen_timestamp_seconds{client,category}`.
    pub last_seen: Gauge,
}

/// One `client` label value's pre-resolved handles.
pub(super) struct ClientHandles {
    pub label: Arc<str>,
    /// `telesink_queries_total{client,result}`, by result index.
    pub results: [IntCounter; 6],
    /// Keyed by category name: indexes change across reloads, names do not.
    pub categories: FastMap<Arc<str>, CategoryHandles>,
    /// Unix seconds (f64 bits) of the latest query; 0 = none yet. Read at scrape for
    /// `telesink_client_last_query_timestamp_seconds`.
    last_query: AtomicU64,
}

impl ClientHandles {
    fn new(label: Arc<str>, queries: &IntCounterVec) -> ClientHandles {
        ClientHandles {
            results: QueryResult::ALL.map(|r| queries.with_label_values(&[&*label, r.as_str()])),
            label,
            categories: FastMap::default(),
            last_query: AtomicU64::new(0),
        }
    }

    /// Records a query at `unix_seconds`: one atomic operation. Non-negative floats order like
    /// their bit patterns, so `fetch_max` keeps the latest even when threads race.
    pub fn touch(&self, unix_seconds: f64) {
        if unix_seconds > 0.0 {
            self.last_query
                .fetch_max(unix_seconds.to_bits(), Ordering::Relaxed);
        }
    }

    /// Unix seconds of the latest query, if any.
    pub fn last_query(&self) -> Option<f64> {
        match self.last_query.load(Ordering::Relaxed) {
            0 => None,
            bits => Some(f64::from_bits(bits)),
        }
    }
}

/// Every `client` label value given out, and the two shared ones.
pub(super) struct ClientSlots {
    max: usize,
    queries: IntCounterVec,
    /// Fast lookup of named clients, by configured name.
    by_name: FastMap<Arc<str>, Arc<ClientHandles>>,
    /// Fast lookup of unnamed clients, by address. Holds only addresses that own a label, so
    /// it is bounded by `max`.
    by_addr: FastMap<IpAddr, Arc<ClientHandles>>,
    /// Set once `max` labels are given out: a client missing from the fast maps is then
    /// `other` without taking the slot lock.
    full: AtomicBool,
    in_use: AtomicUsize,
    /// Touched only on the slow path (a new admitted client, a reservation).
    slots: Mutex<HashMap<Arc<str>, Arc<ClientHandles>>>,
    pub other: Arc<ClientHandles>,
    pub refused: Arc<ClientHandles>,
}

impl ClientSlots {
    pub fn new(max: usize, queries: IntCounterVec) -> ClientSlots {
        ClientSlots {
            max,
            other: Arc::new(ClientHandles::new(OTHER_CLIENT.into(), &queries)),
            refused: Arc::new(ClientHandles::new(REFUSED_CLIENT.into(), &queries)),
            queries,
            by_name: FastMap::default(),
            by_addr: FastMap::default(),
            full: AtomicBool::new(max == 0),
            in_use: AtomicUsize::new(0),
            slots: Mutex::new(HashMap::new()),
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Runs `f` with the handles `client`'s query is counted under: lock-free and
    /// allocation-free once the client has been seen.
    pub fn with<R>(
        &self,
        client: &ClientInfo,
        admission: Admission,
        f: impl FnOnce(&ClientHandles) -> R,
    ) -> R {
        match &client.name {
            Some(name) => {
                if let Some(h) = self.by_name.pin().get(&**name) {
                    return f(h);
                }
            }
            None => {
                if let Some(h) = self.by_addr.pin().get(&client.addr) {
                    return f(h);
                }
            }
        }
        if admission == Admission::Refused {
            return f(&self.refused);
        }
        if self.full.load(Ordering::Acquire) {
            return f(&self.other);
        }
        let h = self.client_slow(client);
        f(&h)
    }

    /// First admitted query of a client not in the fast maps: give it a slot if one is left.
    #[cold]
    fn client_slow(&self, client: &ClientInfo) -> Arc<ClientHandles> {
        let label: Arc<str> = match &client.name {
            Some(n) => n.clone(),
            None => client.addr.to_string().into(),
        };
        let h = self.claim(&label);
        if !Arc::ptr_eq(&h, &self.other) {
            match &client.name {
                Some(n) => {
                    self.by_name.pin().insert(n.clone(), h.clone());
                }
                None => {
                    self.by_addr.pin().insert(client.addr, h.clone());
                }
            }
        }
        h
    }

    /// The handles of `label`, creating them if a slot is left, else those of `other`.
    fn claim(&self, label: &Arc<str>) -> Arc<ClientHandles> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = slots.get(label) {
            return h.clone();
        }
        match &**label {
            OTHER_CLIENT => return self.other.clone(),
            REFUSED_CLIENT => return self.refused.clone(),
            _ => {}
        }
        if slots.len() >= self.max {
            self.full.store(true, Ordering::Release);
            return self.other.clone();
        }
        let h = Arc::new(ClientHandles::new(label.clone(), &self.queries));
        slots.insert(label.clone(), h.clone());
        self.in_use.store(slots.len(), Ordering::Release);
        if slots.len() >= self.max {
            self.full.store(true, Ordering::Release);
        }
        h
    }

    /// Gives `label` (a configured name, or an address) a slot now if one is left, so that a
    /// configured device keeps its own series whoever comes first. Returns the label it is
    /// counted under.
    pub fn reserve(&self, label: &str) -> Arc<str> {
        let label: Arc<str> = label.into();
        let h = self.claim(&label);
        if !Arc::ptr_eq(&h, &self.other) && !Arc::ptr_eq(&h, &self.refused) {
            // Keep the fast maps in step, so the client's queries find this slot even after
            // the slots run out.
            match label.parse::<IpAddr>() {
                Ok(addr) => {
                    self.by_addr.pin().insert(addr, h.clone());
                }
                Err(_) => {
                    self.by_name.pin().insert(label.clone(), h.clone());
                }
            }
        }
        h.label.clone()
    }

    /// The handles of the slot `label` (a configured name or an address) holds, if any.
    /// Lock-free: for the scrape and the query-log writer.
    pub fn holder(&self, label: &str) -> Option<Arc<ClientHandles>> {
        if let Some(h) = self.by_name.pin().get(label) {
            return Some(h.clone());
        }
        let addr = label.parse::<IpAddr>().ok()?;
        self.by_addr.pin().get(&addr).cloned()
    }

    /// How many labels are given out, `other` and `refused` not included.
    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Acquire)
    }

    /// Every label's handles, slots first, then `other` and `refused` (a handle may come twice
    /// when it is reachable by name and by address). Lock-free.
    pub fn for_each(&self, mut f: impl FnMut(&ClientHandles)) {
        for h in self.by_name.pin().values() {
            f(h);
        }
        for h in self.by_addr.pin().values() {
            f(h);
        }
        f(&self.other);
        f(&self.refused);
    }
}

/// Maps labels that may hold no slot (a mark, a device of the device table) to the label they
/// are shown under at one scrape: the slot's label if they hold one; their own while the slots
/// in use plus those shown so far stay within `max_clients`; else `other`. Takes no slot, so
/// it takes no lock.
pub(super) struct ScrapeLabels<'a> {
    slots: &'a ClientSlots,
    budget: usize,
    extra: std::collections::HashSet<Arc<str>>,
}

impl<'a> ScrapeLabels<'a> {
    pub fn new(slots: &'a ClientSlots) -> ScrapeLabels<'a> {
        ScrapeLabels {
            budget: slots.max().saturating_sub(slots.in_use()),
            slots,
            extra: Default::default(),
        }
    }

    pub fn label(&mut self, label: &Arc<str>) -> Arc<str> {
        if let Some(h) = self.slots.holder(label) {
            return h.label.clone();
        }
        if self.extra.contains(label) {
            return label.clone();
        }
        if self.extra.len() < self.budget && &**label != REFUSED_CLIENT {
            self.extra.insert(label.clone());
            return label.clone();
        }
        OTHER_CLIENT.into()
    }
}
