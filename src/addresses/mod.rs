//! Telemetry addresses (SPEC "Telemetry addresses"): the addresses the names of some categories
//! resolve to, learnt from upstream answers and from background lookups of blocked names,
//! served as text for routers, and, on a Linux router, kept in nftables sets whose per-device
//! counters say whether a device's traffic to telemetry stopped.
//!
//! - [`tap`]: the DNS path's side: a non-blocking hand-off of answers and blocked names.
//! - [`store`]: the addresses per category with their expiry; shared addresses left out.
//! - [`learner`]: the background task: applies hand-offs, resolves blocked names (rate
//!   limited, once per TTL), expires, keeps the nftables sets and reads the counters.
//! - [`nftables`]: the `inet telesink` table through `nft`.
//! - [`http`]: `GET /addresses/CATEGORY.txt` (and `.json`) on the metrics listener.
//! - [`traffic`]: packet-count deltas per device, category and destination.

pub mod http;
pub mod learner;
pub mod nftables;
pub mod store;
pub mod tap;
pub mod traffic;

use std::sync::Arc;

pub use learner::Addresses;

/// `[addresses] nftables`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum NftMode {
    #[default]
    Off,
    /// Count each device's packets to the sets.
    Count,
    /// Count and drop them.
    Drop,
}

impl NftMode {
    pub const ALL: [NftMode; 3] = [NftMode::Off, NftMode::Count, NftMode::Drop];

    pub fn as_str(self) -> &'static str {
        match self {
            NftMode::Off => "off",
            NftMode::Count => "count",
            NftMode::Drop => "drop",
        }
    }

    /// The `action` label of `telesink_category_packets_total` for this mode.
    pub fn action(self) -> Option<PacketAction> {
        match self {
            NftMode::Off => None,
            NftMode::Count => Some(PacketAction::Counted),
            NftMode::Drop => Some(PacketAction::Dropped),
        }
    }
}

/// What happened to a counted packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PacketAction {
    Counted,
    Dropped,
}

impl PacketAction {
    pub fn as_str(self) -> &'static str {
        match self {
            PacketAction::Counted => "counted",
            PacketAction::Dropped => "dropped",
        }
    }
}

/// An address family (the `family` label, `?family=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }
}

/// What `[addresses]` configures, in this module's own types.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressSettings {
    pub categories: Vec<Arc<str>>,
    pub resolve_blocked: bool,
    pub nftables: NftMode,
}

/// Names a packet's source address the way the DNS path names a query's client (the `client`
/// label): given by the composition root.
pub type NameDevice = Arc<dyn Fn(std::net::IpAddr) -> Arc<str> + Send + Sync>;

/// The `[upstream] strategy` in force now (a reload may change it): read by the background
/// lookups, so they ask the upstreams the way the DNS path does.
pub type CurrentStrategy = Arc<dyn Fn() -> crate::resolve::strategy::Strategy + Send + Sync>;
