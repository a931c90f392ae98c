//! telesink: a DNS sinkhole that blocks device telemetry by category and per device, and tells
//! whether a device's opt-out really stopped it.
//!
//! The path of a query, top to bottom: [`server`] receives it (UDP, TCP); [`resolve`] names
//! the client ([`devices`] for MAC and DHCP-lease identity), decides its fate once (access,
//! local names, policy, cache or forward) and encodes the answer; [`observe`] hands what
//! happened to the metrics and to the [`querylog`], which [`verify`] and the [`cli`] commands
//! read.
//!
//! One folder per responsibility:
//!
//! | module | what it does |
//! |---|---|
//! | [`config`] | `config.toml` → typed settings, errors with file, line and key |
//! | [`lists`] | the list-line parser (every format) and URL-list sources |
//! | [`policy`] | the matcher, categories, local names, schedules; lists + clients + groups → verdict and action |
//! | [`devices`] | MACs from the kernel's neighbour table, DHCP leases |
//! | [`resolve`] | identity, the one decision, the wire and hickory encoders, cache, upstream (strategy, `[[forward]]` zones), DNSSEC, cloaking, rebinding |
//! | [`server`] | the composition root (`run`), listeners, live-state building, reload, the schedule task |
//! | [`observe`] | the per-query event, metrics, the HTTP endpoint |
//! | [`querylog`] | the SQLite log: sink, schema, writer, retention, reads, `mark` and `log` |
//! | [`verify`] | the opt-out verdict, from the log or from Prometheus |
//! | [`cli`] | `check`, `explain`, `devices`, `lists` (subscriptions), `suggest`, `addresses` |
//! | [`addresses`] | telemetry addresses: learnt from answers, served to routers, nftables sets and packet counters |
//!
//! Small shared modules: [`dont_fragment`], [`duration`], [`timespec`], [`sched`], [`alloc`], [`logging`].
//!
//! Dependency rules (kept by review; a new import that breaks one is a design question):
//! - `lists`, `policy` and the codec (`resolve::wire`, `resolve::encode_wire`,
//!   `resolve::answer`) never import `config`: the configuration is converted into their own
//!   types at the edge (in `config` or the caller).
//! - Nothing imports the composition root (`server`'s `run`): what listeners and reload
//!   share lives in `server::live` and `server::listen`.
//! - No import circles between these modules; `observe` defines the observer traits that
//!   `resolve` calls, so the DNS path depends on observation, never the other way round.

pub mod addresses;
pub mod alloc;
pub mod cli;
pub mod config;
pub mod devices;
pub mod dont_fragment;
pub mod duration;
pub mod lists;
pub mod logging;
pub mod observe;
pub mod policy;
pub mod querylog;
pub mod recv_batch;
pub mod resolve;
pub mod sched;
pub mod server;
pub mod timespec;
pub mod tls;
pub mod verify;
