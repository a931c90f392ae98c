//! telesink: a DNS sinkhole that blocks device telemetry by category and per client.
//!
//! The path of a query, top to bottom: [`server`] receives it, [`resolve`] decides and encodes
//! the answer (identity, access, local records, policy, cache/forward), [`observe`] hands the
//! outcome to metrics and the query log.

pub mod alloc;
pub mod cli;
pub mod config;
pub mod devices;
pub mod duration;
pub mod lists;
pub mod logging;
pub mod observe;
pub mod policy;
pub mod querylog;
pub mod resolve;
pub mod sched;
pub mod server;
pub mod timespec;
pub mod verify;
