//! The snapshot the DNS path reads: who each address is, swapped whole.
//!
//! The neighbour task and the lease watcher each own one half ([`NeighbourTable`],
//! [`LeaseSet`]) and publish a new [`DeviceView`] that shares the other half unchanged
//! (`ArcSwap::rcu`), so neither waits for the other and a reader never sees a half-built map.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use super::leases::LeaseSet;
use super::mac::Mac;
use super::neighbours::Neighbour;

/// Maps keyed by address or MAC: a fast, randomly seeded hash (lookups on the DNS path).
pub type FastMap<K, V> = foldhash::HashMap<K, V>;

/// Whether the neighbour table is being read, and if not, why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NeighbourStatus {
    /// `[clients] neighbours = false`.
    Off,
    /// The first dump has not finished yet.
    Starting,
    /// Read and kept current.
    Live,
    /// Cannot be read (the reason); MAC identity and presence are unknown.
    Unavailable(Arc<str>),
}

/// The MACs of one neighbour table reading, both ways.
#[derive(Debug)]
pub struct NeighbourTable {
    status: NeighbourStatus,
    /// Full readings of the kernel's table so far (events update between them).
    dumps: u64,
    by_addr: FastMap<IpAddr, Neighbour>,
    by_mac: FastMap<Mac, MacEntry>,
}

#[derive(Debug, Default)]
struct MacEntry {
    /// Sorted, IPv4 first.
    addresses: Vec<IpAddr>,
    /// Some address of this MAC is on the LAN now.
    present: bool,
}

impl NeighbourTable {
    /// The table for `entries` (address → neighbour), addresses already canonical.
    pub fn new(status: NeighbourStatus, entries: FastMap<IpAddr, Neighbour>) -> NeighbourTable {
        let mut by_mac: FastMap<Mac, MacEntry> = FastMap::default();
        for (addr, n) in &entries {
            let e = by_mac.entry(n.mac).or_default();
            e.addresses.push(*addr);
            e.present |= n.present;
        }
        for e in by_mac.values_mut() {
            e.addresses.sort_unstable();
        }
        NeighbourTable {
            status,
            dumps: 0,
            by_addr: entries,
            by_mac,
        }
    }

    /// The same table, after `dumps` full readings.
    pub(crate) fn with_dumps(mut self, dumps: u64) -> NeighbourTable {
        self.dumps = dumps;
        self
    }

    /// How many full readings of the kernel's table this task made (start, every 30 s,
    /// after an overrun, after pokes).
    pub fn dumps(&self) -> u64 {
        self.dumps
    }

    pub fn status(&self) -> &NeighbourStatus {
        &self.status
    }

    pub fn len(&self) -> usize {
        self.by_addr.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_addr.is_empty()
    }
}

/// Everything known about devices at one moment. Immutable; replaced whole.
#[derive(Debug)]
pub struct DeviceView {
    neighbours: Arc<NeighbourTable>,
    leases: Arc<LeaseSet>,
}

/// One device as `telesink devices` lists it: a MAC with its addresses, or a leased address
/// whose MAC is unknown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownDevice {
    pub mac: Option<Mac>,
    /// Sorted, IPv4 first: from the neighbour table, and the leases of this MAC.
    pub addresses: Vec<IpAddr>,
    /// On the LAN now per the neighbour table; `None` when the table is not read.
    pub present: Option<bool>,
    /// The DHCP lease's host name, if a lease names one of its addresses or its MAC.
    pub lease_name: Option<Arc<str>>,
}

impl DeviceView {
    pub fn new(neighbours: Arc<NeighbourTable>, leases: Arc<LeaseSet>) -> DeviceView {
        DeviceView { neighbours, leases }
    }

    /// Nothing known yet.
    pub fn empty(status: NeighbourStatus) -> DeviceView {
        DeviceView::new(
            Arc::new(NeighbourTable::new(status, FastMap::default())),
            Arc::new(LeaseSet::default()),
        )
    }

    /// A copy with another neighbour table (the leases shared).
    pub(crate) fn with_neighbours(&self, neighbours: Arc<NeighbourTable>) -> DeviceView {
        DeviceView::new(neighbours, self.leases.clone())
    }

    /// A copy with other leases (the neighbour table shared).
    pub(crate) fn with_leases(&self, leases: Arc<LeaseSet>) -> DeviceView {
        DeviceView::new(self.neighbours.clone(), leases)
    }

    pub fn neighbours(&self) -> &NeighbourTable {
        &self.neighbours
    }

    pub fn leases(&self) -> &LeaseSet {
        &self.leases
    }

    /// The MAC the neighbour table gives for `addr` (IPv4-mapped IPv6 is read as IPv4).
    #[inline]
    pub fn mac_of(&self, addr: IpAddr) -> Option<Mac> {
        self.neighbours
            .by_addr
            .get(&addr.to_canonical())
            .map(|n| n.mac)
    }

    /// The lease host name for a query from `addr`: a lease of that address, else a lease of
    /// its MAC (a phone with an IPv4 lease is named on its IPv6 privacy addresses too).
    #[inline]
    pub fn lease_name(&self, addr: IpAddr, mac: Option<Mac>) -> Option<&Arc<str>> {
        self.leases
            .name_of_addr(addr.to_canonical())
            .or_else(|| mac.and_then(|m| self.leases.name_of_mac(m)))
    }

    /// Every address the neighbour table maps to `mac` (sorted, IPv4 first).
    pub fn addresses_of(&self, mac: Mac) -> &[IpAddr] {
        self.neighbours
            .by_mac
            .get(&mac)
            .map(|e| e.addresses.as_slice())
            .unwrap_or(&[])
    }

    /// Whether some address of `mac` is on the LAN now (reachable, stale, delay, probe or
    /// permanent in the neighbour table).
    pub fn present(&self, mac: Mac) -> bool {
        self.neighbours.by_mac.get(&mac).is_some_and(|e| e.present)
    }

    /// Whether presence is known at all (the neighbour table is being read).
    pub fn presence_known(&self) -> bool {
        matches!(self.neighbours.status(), NeighbourStatus::Live)
    }

    /// Everything known, one entry per MAC (neighbour table and leases), then leased
    /// addresses whose MAC is unknown; sorted by MAC, then address.
    pub fn devices(&self) -> Vec<KnownDevice> {
        let known = self.presence_known();
        let mut by_mac: BTreeMap<Mac, KnownDevice> = BTreeMap::new();
        for (mac, e) in &self.neighbours.by_mac {
            by_mac.insert(
                *mac,
                KnownDevice {
                    mac: Some(*mac),
                    addresses: e.addresses.clone(),
                    present: known.then_some(e.present),
                    lease_name: None,
                },
            );
        }
        let mut loose: BTreeMap<IpAddr, KnownDevice> = BTreeMap::new();
        for lease in self.leases.iter() {
            let mac = lease.mac.or_else(|| self.mac_of(lease.addr));
            match mac {
                Some(mac) => {
                    let d = by_mac.entry(mac).or_insert_with(|| KnownDevice {
                        mac: Some(mac),
                        addresses: Vec::new(),
                        present: known.then_some(false),
                        lease_name: None,
                    });
                    if !d.addresses.contains(&lease.addr) {
                        d.addresses.push(lease.addr);
                    }
                }
                None => {
                    loose.entry(lease.addr).or_insert_with(|| KnownDevice {
                        mac: None,
                        addresses: vec![lease.addr],
                        present: None,
                        lease_name: None,
                    });
                }
            }
        }
        let mut out: Vec<KnownDevice> = by_mac.into_values().chain(loose.into_values()).collect();
        for d in &mut out {
            d.addresses.sort_unstable();
            d.lease_name = d
                .addresses
                .iter()
                .find_map(|a| self.leases.name_of_addr(*a))
                .or_else(|| d.mac.and_then(|m| self.leases.name_of_mac(m)))
                .cloned();
        }
        out
    }
}
