//! Upstream forwarding, with hickory-resolver's name-server pools: plain UDP (TCP on
//! truncation), DNS over TLS and DNS over HTTPS.
//!
//! Each configured upstream gets a pool of its own, asked in the order [`super::strategy`]
//! plans within one overall `timeout_ms`, so that every answer is attributed to the upstream that gave it (the
//! `upstream` label of `telesink_upstream_responses_total`). The pool also merges identical
//! queries in flight.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ProtocolConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::xfer::FirstAnswer;
use hickory_resolver::net::{DnsError, NetError, NoRecords};
use hickory_resolver::proto::op::{DnsRequestOptions, DnsResponse, Message, Query, ResponseCode};
use hickory_resolver::proto::rr::{Record, RecordType};
use hickory_resolver::{NameServerPool, PoolContext, TlsConfig};

pub use super::strategy::Strategy;
use super::strategy::{Attempt, Scheduler};
pub use crate::observe::events::{UpstreamObserver, UpstreamOutcome};

use super::dnssec::{self, Anchors, Pool, Validation};

/// An upstream resolver.
///
/// Written in the file as one of:
/// - `IP` or `IP:port` (`[IPv6]:port`): plain DNS, UDP with TCP fallback, port 53;
/// - `tls://IP[:port]#tls-name`: DNS over TLS, port 853;
/// - `https://IP[:port][/path]#tls-name`: DNS over HTTPS, port 443, path `/dns-query`.
///
/// The host is always an IP literal, so that telesink never has to resolve its own upstreams;
/// the name after `#` is the one the server's certificate is checked against (and the SNI).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Upstream {
    Plain(SocketAddr),
    Tls {
        addr: SocketAddr,
        server_name: String,
    },
    Https {
        addr: SocketAddr,
        server_name: String,
        path: String,
    },
}

impl Upstream {
    /// Stable label for metrics and logs: the canonical form of the configured string, default
    /// port filled in: `9.9.9.9:53`, `tls://9.9.9.9:853#dns.quad9.net`,
    /// `https://9.9.9.9:443/dns-query#dns.quad9.net`. The TLS name is part of it because
    /// providers serve per-profile resolvers on one IP, told apart by that name (or the path).
    pub fn label(&self) -> String {
        match self {
            Upstream::Plain(addr) => addr.to_string(),
            Upstream::Tls { addr, server_name } => format!("tls://{addr}#{server_name}"),
            Upstream::Https {
                addr,
                server_name,
                path,
            } => format!("https://{addr}{path}#{server_name}"),
        }
    }

    /// The address connected to.
    pub fn addr(&self) -> SocketAddr {
        match self {
            Upstream::Plain(addr) | Upstream::Tls { addr, .. } | Upstream::Https { addr, .. } => {
                *addr
            }
        }
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

/// An upstream's answer, positive or negative (NXDOMAIN, NODATA).
#[derive(Debug, Clone)]
pub struct UpstreamAnswer {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
    /// For negative answers: the SOA minimum (RFC 2308), if the upstream sent one.
    pub negative_ttl: Option<u32>,
    /// DNSSEC: secure answers get the AD bit (see [`super::dnssec`]).
    pub validation: Validation,
}

impl UpstreamAnswer {
    /// A response as hickory's records, its OPT left out (each answer to a client gets the
    /// client's own): what hickory's pools return, and what the cache decodes a response it
    /// stored as bytes into.
    pub fn from_message(msg: Message, negative_ttl: Option<u32>, validation: Validation) -> Self {
        UpstreamAnswer {
            rcode: msg.metadata.response_code,
            answers: msg.answers,
            authorities: msg.authorities,
            additionals: msg
                .additionals
                .into_iter()
                .filter(|r| r.record_type() != RecordType::OPT)
                .collect(),
            negative_ttl,
            validation,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("no upstream answered within {0:?}")]
    Timeout(Duration),
    #[error("every upstream failed: {0}")]
    Failed(String),
    /// DNSSEC validation failed (`dnssec = true`): the reason.
    #[error("DNSSEC bogus: {0}")]
    Bogus(String),
}

struct Server {
    label: Arc<str>,
    pool: Pool,
    /// A plain DNS upstream's address: the UDP fast path ([`super::forward_udp`]) may ask it.
    plain: Option<SocketAddr>,
}

/// A set of upstreams (`[upstream] servers`, or one `[[forward]]`'s servers), asked as the
/// [`Strategy`] says ([`super::strategy`] decides the order; this module only asks).
pub struct Upstreams {
    shared: Arc<Shared>,
}

/// What a background attempt (a race's loser, a probe) needs after the query has its answer.
struct Shared {
    servers: Box<[Server]>,
    scheduler: Scheduler,
    timeout: Duration,
    observer: Option<Arc<dyn UpstreamObserver>>,
}

impl Upstreams {
    pub fn new(
        upstreams: &[Upstream],
        timeout: Duration,
        observer: Option<Arc<dyn UpstreamObserver>>,
    ) -> anyhow::Result<Upstreams> {
        let mut servers = Vec::new();
        for u in upstreams {
            let mut opts = ResolverOpts::default();
            opts.timeout = timeout;
            opts.attempts = 1;
            opts.edns0 = true;
            opts.cache_size = 0;
            let (addr, connections) = connections_for(u);
            let ns = NameServerConfig::new(addr.ip(), true, connections);
            let tls = TlsConfig::new().map_err(|e| anyhow::anyhow!("TLS set-up failed: {e}"))?;
            let cx = Arc::new(PoolContext::new(opts, tls));
            let pool = NameServerPool::from_config([ns], cx, TokioRuntimeProvider::default());
            servers.push(Server {
                label: Arc::from(u.label().as_str()),
                pool: Pool::Plain(pool),
                plain: match u {
                    Upstream::Plain(addr) => Some(*addr),
                    _ => None,
                },
            });
        }
        Ok(Upstreams {
            shared: Arc::new(Shared {
                scheduler: Scheduler::new(servers.len()),
                servers: servers.into(),
                timeout,
                observer,
            }),
        })
    }

    /// Validates every answer with DNSSEC, up to `anchors` (see [`super::dnssec`]).
    /// Called right after [`new`](Self::new), before anything shares the set.
    pub fn with_dnssec(mut self, anchors: &Anchors) -> Upstreams {
        match Arc::get_mut(&mut self.shared) {
            Some(shared) => {
                for s in shared.servers.iter_mut() {
                    s.pool.make_validating(anchors);
                }
            }
            None => tracing::error!("DNSSEC not enabled: the upstreams are already in use"),
        }
        self
    }

    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.shared.servers.iter().map(|s| &*s.label)
    }

    /// Asks the upstreams as `strategy` says until one answers, all within `timeout`: the
    /// healthy ones first (the first one, or the two best at once for `parallel`), then the
    /// others in turn, then those backed off.
    pub async fn forward(
        &self,
        query: &Query,
        strategy: Strategy,
    ) -> Result<UpstreamAnswer, ForwardError> {
        self.forward_after(query, strategy, None).await
    }

    /// [`forward`](Self::forward) for a query the UDP fast path asked one upstream for already
    /// (`tried`): that one is not asked again, and the overall deadline is the query's.
    pub async fn forward_after(
        &self,
        query: &Query,
        strategy: Strategy,
        tried: Option<Tried>,
    ) -> Result<UpstreamAnswer, ForwardError> {
        let shared = &self.shared;
        let started = Instant::now();
        let deadline = tried.map_or(started + shared.timeout, |t| t.deadline);
        let mut plan = shared.scheduler.plan(strategy, started);
        if let Some(t) = tried {
            plan.order.retain(|&i| i != t.upstream);
            plan.race = plan.race.min(plan.order.len()).max(1);
            plan.probe = None;
        }
        if let Some(p) = plan.probe {
            // In the background: the query's own answer does not wait for it.
            let (shared, query) = (self.shared.clone(), query.clone());
            tokio::spawn(async move {
                let _ = shared.ask(p, query, shared.timeout).await;
            });
        }
        let mut last_error = String::from("no upstream configured");
        let n = plan.order.len();
        let mut i = 0;
        while i < n {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            let at_once = if i == 0 { plan.race } else { 1 };
            // Leave the later upstreams a fair share of the time that is left.
            let budget = if i + at_once >= n {
                remaining
            } else {
                remaining * at_once as u32 / (n - i) as u32
            };
            let result = if at_once == 1 {
                shared.ask(plan.order[i], query.clone(), budget).await
            } else {
                self.race(&plan.order[i..i + at_once], query, budget).await
            };
            match result {
                Ok(a) => return Ok(a),
                Err(AskError::Bogus(reason)) => return Err(ForwardError::Bogus(reason)),
                Err(AskError::Failed(e)) => last_error = e,
            }
            i += at_once;
        }
        if Instant::now() >= deadline {
            Err(ForwardError::Timeout(shared.timeout))
        } else {
            Err(ForwardError::Failed(last_error))
        }
    }

    /// Asks `which` at once; the first good answer wins. Each attempt is a task of its own, so
    /// that the slower one still completes in the background, for its metrics and latency.
    async fn race(
        &self,
        which: &[usize],
        query: &Query,
        budget: Duration,
    ) -> Result<UpstreamAnswer, AskError> {
        let (tx, mut rx) = tokio::sync::mpsc::channel(which.len());
        for &i in which {
            let (shared, query, tx) = (self.shared.clone(), query.clone(), tx.clone());
            tokio::spawn(async move {
                let _ = tx.send(shared.ask(i, query, budget).await).await;
            });
        }
        drop(tx);
        let mut last_error = String::from("no upstream configured");
        while let Some(result) = rx.recv().await {
            match result {
                Ok(a) => return Ok(a),
                Err(AskError::Bogus(reason)) => return Err(AskError::Bogus(reason)),
                Err(AskError::Failed(e)) => last_error = e,
            }
        }
        Err(AskError::Failed(last_error))
    }
}

/// An upstream the UDP fast path asked already, and when the query's time runs out: the
/// general path, when it takes over, asks the others within what is left.
#[derive(Debug, Clone, Copy)]
pub struct Tried {
    pub upstream: usize,
    pub deadline: Instant,
}

/// The first attempt of a query's plan, when it goes to a plain DNS upstream over UDP: what the
/// fast path ([`super::forward_udp`]) needs to make it.
#[derive(Debug, Clone, Copy)]
pub struct FirstAttempt {
    pub upstream: usize,
    pub addr: SocketAddr,
    pub started: Instant,
    /// When this attempt counts as timed out (its share of the time, as [`Upstreams::forward`]
    /// gives it).
    pub give_up: Instant,
    /// When the whole query's time runs out.
    pub deadline: Instant,
}

impl Upstreams {
    /// The plan's first attempt, if the fast path can make it: DNSSEC validation off, not
    /// `parallel` with two upstreams or more, and a plain DNS upstream first. A `fastest` probe
    /// the plan asks for is sent in the background (hickory's pool), as `forward` does; `query`
    /// makes its question.
    pub fn first_plain(
        &self,
        strategy: Strategy,
        query: impl FnOnce() -> Query,
        started: Instant,
    ) -> Option<FirstAttempt> {
        let shared = &self.shared;
        if shared.servers.is_empty()
            || (strategy == Strategy::Parallel && shared.servers.len() > 1)
            || shared.servers.iter().any(|s| s.pool.is_validating())
        {
            return None;
        }
        let (upstream, probe) = shared.scheduler.first(strategy, started)?;
        let addr = shared.servers[upstream].plain?;
        if let Some(p) = probe {
            let (shared, query) = (self.shared.clone(), query());
            tokio::spawn(async move {
                let _ = shared.ask(p, query, shared.timeout).await;
            });
        }
        let n = shared.servers.len() as u32;
        Some(FirstAttempt {
            upstream,
            addr,
            started,
            give_up: started + shared.timeout / n,
            deadline: started + shared.timeout,
        })
    }

    /// Upstream `i`'s answer (`bytes`, matched to the query by the fast path) to an attempt
    /// started at `started`: decoded and judged as hickory's pools' answers are, its outcome
    /// counted. `None` when it is no usable answer (an error code, undecodable): the general
    /// path then asks the others.
    pub fn answered(&self, i: usize, bytes: Vec<u8>, started: Instant) -> Option<UpstreamAnswer> {
        let response = DnsResponse::from_buffer(bytes)
            .map_err(NetError::from)
            .and_then(|r| DnsError::from_response(r).map_err(NetError::from));
        self.shared.conclude(i, Some(response), started).ok()
    }

    /// Upstream `i` answered, after `rtt`, the attempt started at `started` with a usable answer
    /// that the fast path judged from its bytes (an address answer): counted as [`answered`]
    /// counts one.
    ///
    /// [`answered`]: Upstreams::answered
    pub fn answered_plain(&self, i: usize, started: Instant, rtt: Duration) {
        self.shared.account(i, UpstreamOutcome::Ok, rtt, started);
    }

    /// Upstream `i` refused the attempt started at `started` (a transport error): counted as
    /// an error (and a failure for the back-off).
    pub fn failed(&self, i: usize, error: std::io::Error, started: Instant) {
        let _ = self
            .shared
            .conclude(i, Some(Err(NetError::from(error))), started);
    }

    /// Upstream `i` did not answer the attempt started at `started` in time: counted as a
    /// timeout (and a failure for the back-off).
    pub fn timed_out(&self, i: usize, started: Instant) {
        let _ = self.shared.conclude(i, None, started);
    }
}

impl Shared {
    /// One attempt to upstream `i`, within `budget`; its outcome goes to the observer and the
    /// scheduler.
    async fn ask(
        &self,
        i: usize,
        query: Query,
        budget: Duration,
    ) -> Result<UpstreamAnswer, AskError> {
        let server = &self.servers[i];
        let started = Instant::now();
        let mut opts = DnsRequestOptions::default();
        opts.recursion_desired = true;
        opts.use_edns = true;
        opts.edns_payload_len = 1232;
        let lookup = server.pool.lookup(query, opts).first_answer();
        let result = tokio::time::timeout(budget, lookup).await;
        self.conclude(i, result.ok(), started)
    }

    /// What one attempt to upstream `i`, started at `started`, came to: its response or error
    /// (`None`: it timed out) turned into an answer, and its outcome handed to the observer
    /// and the scheduler. Shared by hickory's pools and the UDP fast path, so that both count
    /// and judge answers alike.
    fn conclude(
        &self,
        i: usize,
        result: Option<Result<DnsResponse, NetError>>,
        started: Instant,
    ) -> Result<UpstreamAnswer, AskError> {
        let server = &self.servers[i];
        let rtt = started.elapsed();
        let (outcome, answer) = match result {
            None => (UpstreamOutcome::Timeout, Err("timed out".to_string())),
            Some(Ok(response)) => {
                let negative_ttl = response.negative_ttl();
                let msg = response.into_message();
                let validation = if server.pool.is_validating() {
                    match dnssec::judge(&msg.answers, &msg.authorities) {
                        Ok(v) => v,
                        Err(reason) => return Err(self.bogus(i, reason, rtt, started)),
                    }
                } else {
                    Validation::Off
                };
                (
                    UpstreamOutcome::Ok,
                    Ok(UpstreamAnswer::from_message(msg, negative_ttl, validation)),
                )
            }
            Some(Err(e)) => match dnssec::bogus_reason(&e) {
                Some(reason) => return Err(self.bogus(i, reason, rtt, started)),
                None => classify_error(e),
            },
        };
        self.account(i, outcome, rtt, started);
        answer.map_err(|e| {
            tracing::debug!(upstream = %server.label, error = %e, "upstream failed");
            AskError::Failed(format!("{}: {e}", server.label))
        })
    }

    /// One attempt's `outcome` (after `rtt`), to the observer and the scheduler.
    fn account(&self, i: usize, outcome: UpstreamOutcome, rtt: Duration, started: Instant) {
        let server = &self.servers[i];
        if let Some(obs) = &self.observer {
            obs.upstream_outcome(&server.label, outcome, rtt);
        }
        let attempt = match outcome {
            // An error code is an answer: the server is up, the name is broken.
            UpstreamOutcome::Ok | UpstreamOutcome::ServFail => Attempt::Answered(rtt),
            UpstreamOutcome::Timeout | UpstreamOutcome::Error => Attempt::Failed,
        };
        if let Some(backoff) = self.scheduler.report(i, attempt, started) {
            tracing::info!(
                upstream = %server.label,
                backoff_s = backoff.as_secs(),
                "upstream failed; not asked again until the back-off runs out"
            );
        }
    }

    /// A DNSSEC-bogus answer: the server answered (its outcome and latency count as such), the
    /// answer is refused.
    fn bogus(&self, i: usize, reason: String, rtt: Duration, started: Instant) -> AskError {
        let server = &self.servers[i];
        if let Some(obs) = &self.observer {
            obs.upstream_outcome(&server.label, UpstreamOutcome::Ok, rtt);
        }
        self.scheduler.report(i, Attempt::Answered(rtt), started);
        tracing::debug!(upstream = %server.label, %reason, "DNSSEC bogus");
        AskError::Bogus(reason)
    }
}

/// Why one attempt gave no answer.
enum AskError {
    /// No usable answer from this server: try the next.
    Failed(String),
    /// DNSSEC validation failed: the query gets SERVFAIL with EDE 6.
    Bogus(String),
}

fn classify_error(e: NetError) -> (UpstreamOutcome, Result<UpstreamAnswer, String>) {
    match e {
        NetError::Dns(DnsError::NoRecordsFound(NoRecords {
            response_code,
            soa,
            negative_ttl,
            authorities,
            ..
        })) if matches!(
            response_code,
            ResponseCode::NXDomain | ResponseCode::NoError
        ) =>
        {
            let mut auth: Vec<Record> = authorities.map(|a| a.to_vec()).unwrap_or_default();
            if auth.is_empty() {
                if let Some(soa) = soa {
                    auth.push(soa.into_record_of_rdata());
                }
            }
            (
                UpstreamOutcome::Ok,
                Ok(UpstreamAnswer {
                    rcode: response_code,
                    answers: Vec::new(),
                    authorities: auth,
                    additionals: Vec::new(),
                    negative_ttl,
                    validation: Validation::Off,
                }),
            )
        }
        NetError::Dns(DnsError::NoRecordsFound(NoRecords { response_code, .. }))
        | NetError::Dns(DnsError::ResponseCode(response_code)) => (
            UpstreamOutcome::ServFail,
            Err(format!("answered {response_code}")),
        ),
        NetError::Timeout => (UpstreamOutcome::Timeout, Err("timed out".into())),
        other => (UpstreamOutcome::Error, Err(other.to_string())),
    }
}

fn connections_for(u: &Upstream) -> (SocketAddr, Vec<ConnectionConfig>) {
    match u {
        Upstream::Plain(addr) => {
            let mut udp = ConnectionConfig::udp();
            udp.port = addr.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = addr.port();
            (*addr, vec![udp, tcp])
        }
        Upstream::Tls { addr, server_name } => {
            let mut c = ConnectionConfig::new(ProtocolConfig::Tls {
                server_name: Arc::from(server_name.as_str()),
            });
            c.port = addr.port();
            (*addr, vec![c])
        }
        Upstream::Https {
            addr,
            server_name,
            path,
        } => {
            let mut c = ConnectionConfig::new(ProtocolConfig::Https {
                server_name: Arc::from(server_name.as_str()),
                path: Arc::from(path.as_str()),
            });
            c.port = addr.port();
            (*addr, vec![c])
        }
    }
}
