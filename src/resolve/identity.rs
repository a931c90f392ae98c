//! Who asks: the one step that names a query's client, called once per query by either path,
//! before the decision. Its result serves both the policy (which group's rules apply) and the
//! event (the name metrics and the query log show).
//!
//! The seam for device identity (SPEC "Devices"): a MAC from the neighbour table, a DHCP
//! lease's host name, go in [`identify`] and nowhere else; the rest of the path reads
//! [`Identity`].

use std::net::IpAddr;
use std::sync::Arc;

use hickory_server::net::xfer::Protocol;

use super::Live;
use crate::devices::{Devices, NamedBy};
use crate::observe::events::ClientInfo;
use crate::observe::transport::Transport;
use crate::policy::{canonical, ClientMatch};

/// A query's client, as the decision and the event see it.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The configured client and its group, for the policy.
    pub policy: ClientMatch,
    /// What the event says about the client (address, name, how it was named, MAC, group).
    pub info: ClientInfo,
}

impl Identity {
    /// The source address (IPv4-mapped IPv6 as IPv4).
    pub fn addr(&self) -> IpAddr {
        self.info.addr
    }
}

/// Names the client at source address `addr`, in the order of SPEC "Devices": a
/// `[[client]]` whose addresses hold it; a `[[client]]` whose `macs` hold the MAC the
/// neighbour table gives for it; a DHCP lease's host name (by address, or by that MAC); else the
/// address itself. Then the first group naming the client or a network holding the address.
///
/// The device lookups read one snapshot (an atomic load and hash lookups, no lock). An address
/// the snapshot has no MAC for asks the neighbour task for a fresh reading, without waiting:
/// this query is named with what is known now.
#[inline(always)]
pub fn identify(live: &Live, devices: &Devices, addr: IpAddr) -> Identity {
    identify_as(live, devices, addr, None)
}

/// [`identify`], with the DoT/DoH device id first (SPEC "Devices"): `device` names the client
/// whatever its address; a configured `[[client]]` of that name brings its group, an unknown id
/// is still the client's name (its metrics label bounded by `metrics.max_clients`).
#[inline(always)]
pub fn identify_as(
    live: &Live,
    devices: &Devices,
    addr: IpAddr,
    device: Option<&Arc<str>>,
) -> Identity {
    if let Some(id) = device {
        let policy = &live.policy;
        let addr = canonical(addr);
        let client = policy.client_by_name(id);
        let m = ClientMatch {
            client,
            group: policy.group_of(client, addr),
        };
        let name = policy.client_name(m).cloned().unwrap_or_else(|| id.clone());
        return Identity {
            policy: m,
            info: ClientInfo {
                addr,
                name: Some(name),
                named_by: NamedBy::DeviceId,
                mac: None,
                group: policy.group_name(m).cloned(),
            },
        };
    }
    let policy = &live.policy;
    let addr = canonical(addr);
    let mut client = policy.client_by_address(addr);
    let mut named_by = NamedBy::ConfigAddress;
    let mut mac = None;
    let mut lease_name = None;
    // Loopback never appears in a neighbour table or a lease.
    if devices.is_active() && !addr.is_loopback() {
        let view = devices.view();
        mac = view.mac_of(addr);
        if mac.is_none() {
            devices.unknown(addr);
        }
        if client.is_none() {
            client = mac.and_then(|m| policy.client_by_mac(m));
            named_by = NamedBy::ConfigMac;
            if client.is_none() {
                lease_name = view.lease_name(addr, mac).cloned();
            }
        }
    }
    let m = ClientMatch {
        client,
        group: policy.group_of(client, addr),
    };
    let (name, named_by) = match (policy.client_name(m), lease_name) {
        (Some(n), _) => (Some(n.clone()), named_by),
        (None, Some(lease)) => (Some(lease), NamedBy::Lease),
        (None, None) => (None, NamedBy::Address),
    };
    Identity {
        policy: m,
        info: ClientInfo {
            addr,
            name,
            named_by,
            mac,
            group: policy.group_name(m).cloned(),
        },
    }
}

/// How a query arrived: its transport, and the device id its DoT server name or DoH path
/// carried.
#[derive(Debug, Clone)]
pub struct Origin {
    pub transport: Transport,
    pub device: Option<Arc<str>>,
}

impl Origin {
    pub const UDP: Origin = Origin {
        transport: Transport::Udp,
        device: None,
    };
    pub const TCP: Origin = Origin {
        transport: Transport::Tcp,
        device: None,
    };

    /// A plain DNS query over `protocol` (UDP or TCP).
    pub fn plain(protocol: Protocol) -> Origin {
        if protocol == Protocol::Udp {
            Origin::UDP
        } else {
            Origin::TCP
        }
    }

    /// The protocol hickory encodes for: UDP limits and truncates, every stream does not.
    pub fn protocol(&self) -> Protocol {
        if self.transport == Transport::Udp {
            Protocol::Udp
        } else {
            Protocol::Tcp
        }
    }
}
