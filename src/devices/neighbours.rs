//! The kernel's neighbour table (IPv4 ARP and IPv6 NDP): which MAC each address on the LAN
//! has, and whether it is there now.
//!
//! Read through rtnetlink (`RTM_GETNEIGH` dumps), never by running `ip neigh`. The background
//! task [`run`] dumps the table at start, applies `RTM_NEWNEIGH` / `RTM_DELNEIGH` events from
//! the neighbour multicast group, re-dumps every [`RESYNC`] (events can be lost when the
//! socket's buffer overflows; an overrun re-dumps at once) and, when the DNS path pokes it
//! about an unknown address, re-dumps within about a second (pokes coalesced).
//!
//! Rights: a dump and the neighbour group need no capability (any user can run `ip neigh`);
//! what can stop them is a system that is not Linux, a sandbox that forbids netlink sockets
//! (seccomp, `RestrictAddressFamilies=` without `AF_NETLINK`), or a network namespace other
//! than the LAN's (a container on a bridge network sees its own table, not the LAN's).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{oneshot, watch};

use super::mac::Mac;
use super::table::{DeviceView, FastMap, NeighbourStatus, NeighbourTable};
use super::Poke;

/// Full re-dump interval.
pub const RESYNC: Duration = Duration::from_secs(30);
/// Shortest time between two dumps asked for by pokes.
pub const MIN_POKE_INTERVAL: Duration = Duration::from_secs(1);

/// One neighbour table entry that has a MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Neighbour {
    pub mac: Mac,
    /// On the LAN now: reachable, stale, delay, probe or permanent (not incomplete or failed).
    pub present: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum NeighbourError {
    #[error("cannot open a netlink socket: {0}")]
    Open(std::io::Error),
    #[error("the kernel refused to list its neighbour table: {0}")]
    Dump(String),
    #[error("the netlink connection closed")]
    Closed,
    #[error("the neighbour table is read through Linux netlink, and this system is not Linux")]
    NotLinux,
}

/// An address's change, from a dump entry or an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    /// The entry exists; its MAC if it has one, and whether it means "on the LAN".
    Set {
        addr: IpAddr,
        mac: Option<Mac>,
        present: bool,
    },
    /// The entry is gone (`RTM_DELNEIGH`).
    Remove(IpAddr),
}

fn apply(map: &mut FastMap<IpAddr, Neighbour>, change: Change) -> bool {
    match change {
        Change::Set {
            addr,
            mac: Some(mac),
            present,
        } => map.insert(addr, Neighbour { mac, present }) != Some(Neighbour { mac, present }),
        // Incomplete or failed, no MAC: still that device's address, but not on the LAN now.
        Change::Set {
            addr, mac: None, ..
        } => match map.get_mut(&addr) {
            Some(n) if n.present => {
                n.present = false;
                true
            }
            _ => false,
        },
        Change::Remove(addr) => map.remove(&addr).is_some(),
    }
}

/// A real neighbour's MAC: not all-zero (loopback, tunnels) and not a group address.
fn usable_mac(b: &[u8]) -> Option<Mac> {
    let mac = Mac::try_from(b).ok()?;
    (mac.0 != [0; 6] && mac.0[0] & 1 == 0).then_some(mac)
}

/// One reading of the neighbour table (IPv4 and IPv6), without a background task: for
/// `telesink devices`, and for tests. Addresses are canonical (IPv4-mapped IPv6 as IPv4).
pub async fn read_neighbours() -> Result<FastMap<IpAddr, Neighbour>, NeighbourError> {
    imp::read_once().await
}

/// The background task: keeps the neighbour half of `view` current until `stop` turns true.
/// `first` is signalled once the first reading (or the failure to read) is published.
pub(crate) async fn run(
    view: Arc<ArcSwap<DeviceView>>,
    poke: Arc<Poke>,
    mut stop: watch::Receiver<bool>,
    first: oneshot::Sender<()>,
) {
    let mut first = Some(first);
    let mut failed = false;
    loop {
        let mut live = false;
        let outcome = imp::serve(&view, &poke, &mut stop, &mut first, &mut failed, &mut live).await;
        let Err(e) = outcome else { return };
        if live {
            // A connection that worked broke: reconnect soon, keeping the last table meanwhile;
            // only a reconnection that fails is a warning.
            tracing::debug!(error = %e, "neighbour table connection lost; reconnecting");
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(MIN_POKE_INTERVAL) => continue,
            }
        }
        let reason: Arc<str> = e.to_string().into();
        if !failed {
            tracing::warn!(
                error = %reason,
                "cannot read the kernel's neighbour table: devices are not identified by MAC \
                 ([[client]] macs) and presence on the LAN (DNS-silent) is unknown; DNS answers \
                 go on. Run telesink on the router or host that serves the LAN, in its network \
                 namespace (a container needs host networking) and allow netlink sockets \
                 (AF_NETLINK); or set [clients] neighbours = false. Retrying every {}s",
                RESYNC.as_secs()
            );
            failed = true;
        } else {
            tracing::debug!(error = %reason, "neighbour table still unreadable");
        }
        publish(
            &view,
            NeighbourStatus::Unavailable(reason),
            FastMap::default(),
            0,
        );
        if let Some(tx) = first.take() {
            let _ = tx.send(());
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(RESYNC) => {}
        }
    }
}

fn publish(
    view: &ArcSwap<DeviceView>,
    status: NeighbourStatus,
    map: FastMap<IpAddr, Neighbour>,
    dumps: u64,
) {
    let table = Arc::new(NeighbourTable::new(status, map).with_dumps(dumps));
    view.rcu(|cur| Arc::new(cur.with_neighbours(table.clone())));
}

#[cfg(target_os = "linux")]
mod imp {
    use std::net::IpAddr;

    use arc_swap::ArcSwap;
    use futures_util::{FutureExt, StreamExt, TryStreamExt};
    use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
    use rtnetlink::packet_route::neighbour::{
        NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
    };
    use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
    use rtnetlink::sys::AsyncSocket;
    use rtnetlink::{Handle, MulticastGroup};
    use tokio::sync::{oneshot, watch};
    use tokio::time::Instant;

    use super::super::table::{DeviceView, FastMap, NeighbourStatus};
    use super::super::Poke;
    use super::{
        apply, publish, usable_mac, Change, Neighbour, NeighbourError, MIN_POKE_INTERVAL, RESYNC,
    };

    /// Events that arrive faster than the task reads them wait in the socket: room for a
    /// busy LAN's burst (an overrun is survived by a re-dump, but costs one).
    const RECV_BUFFER: i32 = 1 << 20;

    /// What a dump entry or event says, or `None` for what is not a LAN neighbour (bridge
    /// forwarding entries, proxies, NOARP entries, multicast addresses).
    fn decode(msg: &NeighbourMessage, removed: bool) -> Option<Change> {
        if !matches!(
            msg.header.family,
            AddressFamily::Inet | AddressFamily::Inet6
        ) || msg.header.flags.contains(NeighbourFlags::Proxy)
        {
            return None;
        }
        let mut addr = None;
        let mut mac = None;
        for a in &msg.attributes {
            match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                    addr = Some(IpAddr::from(*v4))
                }
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                    addr = Some(IpAddr::from(*v6).to_canonical())
                }
                NeighbourAttribute::LinkLayerAddress(b) => mac = usable_mac(b),
                _ => {}
            }
        }
        let addr = addr?;
        if addr.is_multicast() || addr.is_loopback() || addr.is_unspecified() {
            return None;
        }
        if removed {
            return Some(Change::Remove(addr));
        }
        let present = match msg.header.state {
            NeighbourState::Reachable
            | NeighbourState::Stale
            | NeighbourState::Delay
            | NeighbourState::Probe
            | NeighbourState::Permanent => true,
            NeighbourState::Incomplete | NeighbourState::Failed => false,
            // NOARP (point-to-point, multicast), NONE, unknown states: not a LAN neighbour.
            _ => return None,
        };
        Some(Change::Set { addr, mac, present })
    }

    async fn dump(handle: &Handle) -> Result<FastMap<IpAddr, Neighbour>, NeighbourError> {
        let mut map = FastMap::default();
        // One dump per family: an AF_UNSPEC dump also lists the bridge forwarding database.
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut entries = handle
                .neighbours()
                .get()
                .set_address_family(family)
                .execute();
            while let Some(msg) = entries
                .try_next()
                .await
                .map_err(|e| NeighbourError::Dump(e.to_string()))?
            {
                if let Some(change) = decode(&msg, false) {
                    apply(&mut map, change);
                }
            }
        }
        Ok(map)
    }

    pub(super) async fn read_once() -> Result<FastMap<IpAddr, Neighbour>, NeighbourError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(NeighbourError::Open)?;
        let conn = tokio::spawn(conn);
        let res = dump(&handle).await;
        conn.abort();
        res
    }

    /// What an unsolicited message means for the table.
    enum Event {
        Change(Change),
        /// The socket's buffer overflowed: events were lost.
        Overrun,
        Other,
    }

    fn event(msg: NetlinkMessage<RouteNetlinkMessage>) -> Event {
        match msg.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(m)) => {
                decode(&m, false).map_or(Event::Other, Event::Change)
            }
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelNeighbour(m)) => {
                decode(&m, true).map_or(Event::Other, Event::Change)
            }
            NetlinkPayload::Overrun(_) => Event::Overrun,
            _ => Event::Other,
        }
    }

    /// Runs one netlink connection until `stop` (`Ok`) or a failure (`Err`: the caller warns
    /// and retries).
    pub(super) async fn serve(
        view: &ArcSwap<DeviceView>,
        poke: &Poke,
        stop: &mut watch::Receiver<bool>,
        first: &mut Option<oneshot::Sender<()>>,
        failed: &mut bool,
        live: &mut bool,
    ) -> Result<(), NeighbourError> {
        let (mut conn, handle, mut events) =
            rtnetlink::new_multicast_connection(&[MulticastGroup::Neigh])
                .map_err(NeighbourError::Open)?;
        if let Err(e) = conn.socket_mut().socket_mut().set_rx_buf_sz(RECV_BUFFER) {
            tracing::debug!(error = %e, "cannot enlarge the netlink receive buffer");
        }
        let conn = tokio::spawn(conn);
        let _conn = AbortOnDrop(conn);

        let mut map = dump(&handle).await?;
        let mut dumps = 1;
        let mut last_dump = Instant::now();
        publish(view, NeighbourStatus::Live, map.clone(), dumps);
        if std::mem::take(failed) {
            tracing::info!(
                entries = map.len(),
                "the kernel's neighbour table is readable again"
            );
        } else {
            tracing::info!(entries = map.len(), "reading the kernel's neighbour table");
        }
        if let Some(tx) = first.take() {
            let _ = tx.send(());
        }
        *live = true;
        let mut poked: Option<Instant> = None;
        loop {
            let next_dump = match poked {
                Some(at) => at.min(last_dump + RESYNC),
                None => last_dump + RESYNC,
            };
            let mut redump = false;
            tokio::select! {
                _ = stop.changed() => return Ok(()),
                msg = events.next() => {
                    let Some((msg, _)) = msg else { return Err(NeighbourError::Closed) };
                    let mut changed = false;
                    let mut next = Some(msg);
                    // Everything already queued is one update.
                    while let Some(msg) = next {
                        match event(msg) {
                            Event::Change(c) => changed |= apply(&mut map, c),
                            Event::Overrun => redump = true,
                            Event::Other => {}
                        }
                        next = events.next().now_or_never().flatten().map(|(m, _)| m);
                    }
                    if changed && !redump {
                        publish(view, NeighbourStatus::Live, map.clone(), dumps);
                    }
                }
                _ = poke.wait(), if poked.is_none() => {
                    poked = Some((last_dump + MIN_POKE_INTERVAL).max(Instant::now()));
                }
                _ = tokio::time::sleep_until(next_dump) => redump = true,
            }
            if redump {
                // Pokes from now on ask for the dump after this one.
                poke.take();
                poked = None;
                map = dump(&handle).await?;
                dumps += 1;
                last_dump = Instant::now();
                publish(view, NeighbourStatus::Live, map.clone(), dumps);
            }
        }
    }

    struct AbortOnDrop(tokio::task::JoinHandle<()>);

    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::net::IpAddr;

    use arc_swap::ArcSwap;
    use tokio::sync::{oneshot, watch};

    use super::super::table::{DeviceView, FastMap};
    use super::super::Poke;
    use super::{Neighbour, NeighbourError};

    pub(super) async fn read_once() -> Result<FastMap<IpAddr, Neighbour>, NeighbourError> {
        Err(NeighbourError::NotLinux)
    }

    pub(super) async fn serve(
        _view: &ArcSwap<DeviceView>,
        _poke: &Poke,
        _stop: &mut watch::Receiver<bool>,
        _first: &mut Option<oneshot::Sender<()>>,
        _failed: &mut bool,
        _live: &mut bool,
    ) -> Result<(), NeighbourError> {
        Err(NeighbourError::NotLinux)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(last: u8) -> Mac {
        Mac([2, 0, 0, 0, 0, last])
    }

    #[test]
    fn failed_entry_keeps_the_mac_but_not_presence() {
        let mut map = FastMap::default();
        let a: IpAddr = "192.0.2.9".parse().unwrap();
        assert!(apply(
            &mut map,
            Change::Set {
                addr: a,
                mac: Some(mac(1)),
                present: true
            }
        ));
        assert!(apply(
            &mut map,
            Change::Set {
                addr: a,
                mac: None,
                present: false
            }
        ));
        assert_eq!(
            map.get(&a),
            Some(&Neighbour {
                mac: mac(1),
                present: false
            })
        );
        // The same again changes nothing, so nothing is published.
        assert!(!apply(
            &mut map,
            Change::Set {
                addr: a,
                mac: None,
                present: false
            }
        ));
        assert!(apply(&mut map, Change::Remove(a)));
        assert!(map.is_empty());
    }

    #[test]
    fn group_and_zero_macs_are_not_devices() {
        assert_eq!(usable_mac(&[0; 6]), None);
        assert_eq!(usable_mac(&[0x33, 0x33, 0, 0, 0, 1]), None);
        assert_eq!(usable_mac(&[1, 2, 3]), None);
        assert_eq!(usable_mac(&[2, 0, 0, 0, 0, 7]), Some(mac(7)));
    }
}
