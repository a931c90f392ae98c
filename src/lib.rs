//! telesink: a DNS sinkhole that blocks device telemetry by category and per client.
//!
//! The path of a query, top to bottom: [`server`] receives it, [`handler`] runs the pipeline
//! (access, local records, policy, cache/forward, respond), [`observe`] hands the outcome to
//! metrics and the query log.

pub mod access;
pub mod alloc;
pub mod answer;
pub mod cache;
pub mod category;
pub mod check;
pub mod cli;
pub mod config;
pub mod devices;
pub mod duration;
pub mod explain;
pub mod handler;
pub mod lists;
pub mod local;
pub mod logging;
pub mod matcher;
pub mod observe;
pub mod policy;
pub mod querylog;
pub mod reload;
pub mod sched;
pub mod server;
pub mod sources;
pub mod tcp;
pub mod timespec;
pub mod udp;
pub mod upstream;
pub mod verify;
pub mod wire;

// The paths other modules import (`crate::events::X`, `crate::metrics::X`).
pub use observe::{events, metrics};
