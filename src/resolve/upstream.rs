//! Upstream forwarding, with hickory-resolver's name-server pools: plain UDP (TCP on
//! truncation), DNS over TLS and DNS over HTTPS.
//!
//! Each configured upstream gets a pool of its own, tried in order within one overall
//! `timeout_ms`, so that every answer is attributed to the upstream that gave it (the
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
use hickory_resolver::proto::op::{DnsRequestOptions, Query, ResponseCode};
use hickory_resolver::proto::rr::Record;
use hickory_resolver::{NameServerPool, PoolContext, TlsConfig};

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
}

pub struct Upstreams {
    servers: Vec<Server>,
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
            });
        }
        Ok(Upstreams {
            servers,
            timeout,
            observer,
        })
    }

    /// Validates every answer with DNSSEC, up to `anchors` (see [`super::dnssec`]).
    pub fn with_dnssec(mut self, anchors: &Anchors) -> Upstreams {
        self.servers = self
            .servers
            .into_iter()
            .map(|s| Server {
                label: s.label,
                pool: s.pool.validating(anchors),
            })
            .collect();
        self
    }

    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.servers.iter().map(|s| &*s.label)
    }

    /// Asks the upstreams in order until one answers, all within `timeout`.
    pub async fn forward(&self, query: &Query) -> Result<UpstreamAnswer, ForwardError> {
        let deadline = Instant::now() + self.timeout;
        let mut last_error = String::from("no upstream configured");
        let n = self.servers.len();
        for (i, server) in self.servers.iter().enumerate() {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            // Leave the later upstreams a fair share of the time that is left.
            let budget = remaining / (n - i) as u32;
            let budget = if i + 1 == n { remaining } else { budget };
            let started = Instant::now();
            let mut opts = DnsRequestOptions::default();
            opts.recursion_desired = true;
            opts.use_edns = true;
            opts.edns_payload_len = 1232;
            let lookup = server.pool.lookup(query.clone(), opts).first_answer();
            let result = tokio::time::timeout(budget, lookup).await;
            let rtt = started.elapsed();
            let (outcome, answer) = match result {
                Err(_) => (UpstreamOutcome::Timeout, Err("timed out".to_string())),
                Ok(Ok(response)) => {
                    let negative_ttl = response.negative_ttl();
                    let msg = response.into_message();
                    let validation = if server.pool.is_validating() {
                        match dnssec::judge(&msg.answers, &msg.authorities) {
                            Ok(v) => v,
                            Err(reason) => {
                                if let Some(obs) = &self.observer {
                                    obs.upstream_outcome(&server.label, UpstreamOutcome::Ok, rtt);
                                }
                                return Err(ForwardError::Bogus(reason));
                            }
                        }
                    } else {
                        Validation::Off
                    };
                    (
                        UpstreamOutcome::Ok,
                        Ok(UpstreamAnswer {
                            rcode: msg.metadata.response_code,
                            answers: msg.answers,
                            authorities: msg.authorities,
                            additionals: msg
                                .additionals
                                .into_iter()
                                .filter(|r| {
                                    r.record_type() != hickory_resolver::proto::rr::RecordType::OPT
                                })
                                .collect(),
                            negative_ttl,
                            validation,
                        }),
                    )
                }
                Ok(Err(e)) => {
                    if let Some(reason) = dnssec::bogus_reason(&e) {
                        if let Some(obs) = &self.observer {
                            obs.upstream_outcome(&server.label, UpstreamOutcome::Ok, rtt);
                        }
                        return Err(ForwardError::Bogus(reason));
                    }
                    classify_error(e)
                }
            };
            if let Some(obs) = &self.observer {
                obs.upstream_outcome(&server.label, outcome, rtt);
            }
            match answer {
                Ok(a) => return Ok(a),
                Err(e) => {
                    tracing::debug!(upstream = %server.label, error = %e, "upstream failed");
                    last_error = format!("{}: {e}", server.label);
                }
            }
        }
        if Instant::now() >= deadline {
            Err(ForwardError::Timeout(self.timeout))
        } else {
            Err(ForwardError::Failed(last_error))
        }
    }
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
