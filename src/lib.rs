//! telesink: a DNS sinkhole that blocks device telemetry by category and per client.
//!
//! The path of a query, top to bottom: [`server`] receives it, [`resolve`] decides and encodes
//! the answer (identity, access, local records, policy, cache/forward), [`observe`] hands the
//! outcome to metrics and the query log.

pub mod alloc;
pub mod category;
pub mod check;
pub mod cli;
pub mod config;
pub mod devices;
pub mod duration;
pub mod explain;
pub mod lists;
pub mod logging;
pub mod matcher;
pub mod observe;
pub mod policy;
pub mod querylog;
pub mod reload;
pub mod resolve;
pub mod sched;
pub mod server;
pub mod sources;
pub mod tcp;
pub mod timespec;
pub mod udp;
pub mod verify;
// The paths other modules import (`crate::events::X`, `crate::metrics::X`).
pub use observe::{events, metrics};

// The paths these modules had before they moved into `resolve/`, kept while branches that use
// them are merged; new code uses `crate::resolve::…`.
pub use resolve::{access, answer, cache, local, upstream};
/// Former home of the handler (now [`resolve::handler`]) and of [`resolve::Live`].
pub mod handler {
    pub use crate::resolve::{Handler, Live};
}
