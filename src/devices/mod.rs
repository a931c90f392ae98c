//! Devices: who a query's source address is, however many addresses one device uses.
//!
//! A phone on IPv6 privacy addresses, or one that DHCP gives a new IPv4 address, is still one
//! device. This module holds what names it: the link-layer address ([`Mac`]) the kernel's
//! neighbour table gives for a source address, and DHCP leases' host names. The DNS path reads
//! an immutable snapshot; a background task keeps it current.

mod mac;

pub use mac::{Mac, MacError};

/// How a query's client got its name, in the order the names are tried (SPEC "Devices").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum NamedBy {
    /// A `[[client]]` whose `addresses` hold the source address.
    ConfigAddress,
    /// A `[[client]]` whose `macs` hold the MAC the neighbour table gives for the address.
    ConfigMac,
    /// A DHCP lease's host name (by address, or by the address's MAC).
    Lease,
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
            NamedBy::Address => "address",
        }
    }
}
