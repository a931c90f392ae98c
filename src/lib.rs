//! telesink: a DNS sinkhole that blocks device telemetry by category and per client.
//!
//! The path of a query, top to bottom: [`server`] receives it, [`handler`] runs the pipeline
//! (access, local records, policy, cache/forward, respond), [`events`] hands the outcome to
//! metrics and the query log.

pub mod category;
pub mod events;
