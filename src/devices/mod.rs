//! Devices: who a query's source address is, however many addresses one device uses.
//!
//! A phone on IPv6 privacy addresses, or one that DHCP gives a new IPv4 address, is still one
//! device. This module holds what names it: the link-layer address ([`Mac`]) the kernel's
//! neighbour table gives for a source address, and DHCP leases' host names.
//!
//! * [`neighbours`]: the kernel's neighbour table (ARP and NDP) read through netlink, kept
//!   current by a background task (dump, events, periodic re-dump).
//! * [`leases`]: DHCP lease files (dnsmasq, ISC dhcpd, odhcpd), watched and reloaded.
//! * [`table`]: the immutable [`DeviceView`] both of them publish into. The DNS path does one
//!   [`Devices::view`] (an `ArcSwap` load: no lock, no allocation) and hash lookups.
//!
//! [`start`] runs what [`DeviceSettings`] enables and returns the [`Devices`] handle and the
//! [`DevicesTask`] that stops it.

mod mac;

pub mod leases;
pub mod neighbours;
pub mod table;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, Guard};
use tokio::sync::{oneshot, watch, Notify};
use tokio::task::JoinHandle;

pub use leases::{load_leases, Lease, LeaseError, LeaseFile, LeaseFormat, LeaseSet};
pub use mac::{Mac, MacError};
pub use neighbours::{read_neighbours, Neighbour, NeighbourError};
pub use table::{DeviceView, KnownDevice, NeighbourStatus, NeighbourTable};

/// How a query's client got its name, in the order the names are tried (SPEC "Devices").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum NamedBy {
    /// A `[[client]]` whose `addresses` hold the source address.
    ConfigAddress,
    /// A `[[client]]` whose `macs` hold the MAC the neighbour table gives for the address.
    ConfigMac,
    /// A DHCP lease's host name (by address, or by the address's MAC).
    Lease,
    /// The DoT server name or DoH path it connected with (`anna-phone.<tls_name>`).
    DeviceId,
    /// Nothing named it: the address is its name.
    #[default]
    Address,
}

impl NamedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            NamedBy::ConfigAddress => "config address",
            NamedBy::ConfigMac => "config mac",
            NamedBy::Lease => "lease",
            NamedBy::DeviceId => "device id",
            NamedBy::Address => "address",
        }
    }
}

/// What device identification runs (`[clients] neighbours` and `[clients] leases`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceSettings {
    /// Read the kernel's neighbour table (MAC identity and presence on the LAN).
    pub neighbours: bool,
    /// DHCP lease files whose host names name devices (absolute, or relative to the working
    /// directory: the caller resolves them against the config's directory).
    pub leases: Vec<PathBuf>,
}

impl Default for DeviceSettings {
    /// The config's defaults: the neighbour table on, no lease files.
    fn default() -> DeviceSettings {
        DeviceSettings {
            neighbours: true,
            leases: Vec::new(),
        }
    }
}

/// The DNS path's "this address is not in the table" request: one atomic flag, so that a burst
/// of queries from unknown addresses wakes the neighbour task once.
#[derive(Default)]
pub(crate) struct Poke {
    pending: AtomicBool,
    wake: Notify,
}

impl Poke {
    fn poke(&self) {
        if !self.pending.swap(true, Ordering::AcqRel) {
            self.wake.notify_one();
        }
    }

    /// Called by the neighbour task just before a re-dump: pokes from now on ask for another.
    pub(crate) fn take(&self) -> bool {
        self.pending.swap(false, Ordering::AcqRel)
    }

    pub(crate) async fn wait(&self) {
        self.wake.notified().await
    }
}

/// The handle the server keeps (cheap to clone): the current [`DeviceView`] and the poke.
#[derive(Clone)]
pub struct Devices {
    view: Arc<ArcSwap<DeviceView>>,
    poke: Arc<Poke>,
    /// False when the neighbour table is off: `unknown` then does nothing.
    neighbours: bool,
    /// False when neither the neighbour table nor lease files are read: nothing to look up.
    active: bool,
}

impl Devices {
    /// A handle with nothing known and nothing running (`neighbours = false`, no leases).
    pub fn disabled() -> Devices {
        Devices {
            view: Arc::new(ArcSwap::from_pointee(DeviceView::empty(
                NeighbourStatus::Off,
            ))),
            poke: Arc::new(Poke::default()),
            neighbours: false,
            active: false,
        }
    }

    /// Whether anything names devices beyond the config's addresses (the neighbour table or
    /// lease files): when not, the DNS path skips the lookups.
    #[inline]
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// The current snapshot: one atomic load, no lock, no allocation. Keep the guard only for
    /// the lookups of one query.
    #[inline]
    pub fn view(&self) -> Guard<Arc<DeviceView>> {
        self.view.load()
    }

    /// The DNS path saw a query from `addr` that the snapshot has no MAC for. Cheap and
    /// non-blocking: it asks the neighbour task to re-dump the table soon (coalesced, at most
    /// about once a second); the query itself is named with what is known now.
    #[inline]
    pub fn unknown(&self, addr: IpAddr) {
        let addr = addr.to_canonical();
        // Never in a neighbour table: asking again would only cost dumps.
        if !self.neighbours || addr.is_loopback() || addr.is_unspecified() || addr.is_multicast() {
            return;
        }
        self.poke.poke();
    }
}

/// The background work [`start`] started; [`DevicesTask::stop`] ends it (graceful shutdown).
pub struct DevicesTask {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl DevicesTask {
    /// Stops the neighbour reader and the lease watcher and waits for them to finish.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
    }
}

impl Drop for DevicesTask {
    fn drop(&mut self) {
        // Dropped without `stop` (a panic, a test): do not leave the tasks running.
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// How long [`start`] waits for the first neighbour dump and lease load, so that the first
/// queries are already named by MAC and lease.
const FIRST_LOAD_WAIT: Duration = Duration::from_secs(2);

/// Starts what `settings` enables (the neighbour reader, the lease watcher) on the current
/// tokio runtime and returns once the first snapshot is published (or after a short wait).
/// Nothing here fails: a table or a file that cannot be read is a warning, and DNS goes on
/// with what is known.
pub async fn start(settings: DeviceSettings) -> (Devices, DevicesTask) {
    let status = if settings.neighbours {
        NeighbourStatus::Starting
    } else {
        NeighbourStatus::Off
    };
    let view = Arc::new(ArcSwap::from_pointee(DeviceView::empty(status)));
    let poke = Arc::new(Poke::default());
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut firsts = Vec::new();
    if settings.neighbours {
        let (tx, rx) = oneshot::channel();
        firsts.push(rx);
        tasks.push(tokio::spawn(neighbours::run(
            view.clone(),
            poke.clone(),
            stop_rx.clone(),
            tx,
        )));
    }
    if !settings.leases.is_empty() {
        let (tx, rx) = oneshot::channel();
        firsts.push(rx);
        tasks.push(tokio::spawn(leases::run(
            settings.leases.clone(),
            view.clone(),
            stop_rx,
            tx,
        )));
    }
    let _ = tokio::time::timeout(FIRST_LOAD_WAIT, async {
        for rx in firsts {
            let _ = rx.await;
        }
    })
    .await;
    let devices = Devices {
        view,
        poke,
        neighbours: settings.neighbours,
        active: settings.neighbours || !settings.leases.is_empty(),
    };
    (devices, DevicesTask { stop, tasks })
}

/// One reading of everything, without background work: for `telesink devices` and `check`.
/// A neighbour table that cannot be read gives a view whose status says why.
pub async fn snapshot(settings: &DeviceSettings) -> Result<DeviceView, LeaseError> {
    let leases = Arc::new(load_leases(&settings.leases)?);
    let neighbours = if settings.neighbours {
        match read_neighbours().await {
            Ok(map) => NeighbourTable::new(NeighbourStatus::Live, map),
            Err(e) => NeighbourTable::new(
                NeighbourStatus::Unavailable(e.to_string().into()),
                Default::default(),
            ),
        }
    } else {
        NeighbourTable::new(NeighbourStatus::Off, Default::default())
    };
    Ok(DeviceView::new(Arc::new(neighbours), leases))
}
