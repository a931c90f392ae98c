//! Who asks: the one step that names a query's client, called once per query by either path,
//! before the decision. Its result serves both the policy (which group's rules apply) and the
//! event (the name metrics and the query log show).
//!
//! The seam for device identity (SPEC "Devices"): a MAC from the neighbour table, a DHCP
//! lease's host name, go in [`identify`] and nowhere else; the rest of the path reads
//! [`Identity`].

use std::net::IpAddr;

use super::Live;
use crate::devices::NamedBy;
use crate::events::ClientInfo;
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

/// Names the client at source address `addr`: a `[[client]]` whose addresses hold it, else the
/// address itself; and the first group naming either.
#[inline(always)]
pub fn identify(live: &Live, addr: IpAddr) -> Identity {
    let policy = &live.policy;
    let m = policy.client(addr);
    Identity {
        policy: m,
        info: ClientInfo {
            addr: canonical(addr),
            name: policy.client_name(m).cloned(),
            named_by: if m.client.is_some() {
                NamedBy::ConfigAddress
            } else {
                NamedBy::Address
            },
            mac: None,
            group: policy.group_name(m).cloned(),
        },
    }
}
