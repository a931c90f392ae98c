//! Observability: what the server tells the outside world about the queries it answers.
//!
//! - [`events`]: the per-query hook ([`events::QueryEvent`], [`events::QuerySink`]) that the
//!   request handler calls once per answered query; metrics and the query log are sinks.
//! - [`metrics`]: the Prometheus registry of the SPEC's "Metrics" table and its hot path.
//! - `clients`: the `client` label slots (`metrics.max_clients`; `other`, `refused`).
//! - `scrape`: the gauges computed when Prometheus scrapes (cache size, marks, last query,
//!   DNS-silent devices through a [`PresenceSource`]).
//! - [`http`]: the `GET /metrics` and `GET /healthz` endpoint.
//! - [`list_age`]: the age of each URL list's cached copy, read from disk at scrape.
//!
//! A new metric: a counter or gauge that a query moves goes in [`metrics`] (pre-resolve its
//! handle, the hot path allocates nothing); a value someone else holds (a size, a table) goes
//! in `scrape`, read from a snapshot when scraped.

pub mod answers;
mod clients;
pub mod events;
pub mod http;
pub mod list_age;
pub mod metrics;
mod scrape;
pub mod transport;

pub use clients::{Admission, OTHER_CLIENT, REFUSED_CLIENT};
pub use scrape::{DevicePresence, PresenceSource};
