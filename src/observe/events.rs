//! The hook on every answered query. The request handler builds one [`QueryEvent`] per query,
//! after the response is sent, and hands it to each [`QuerySink`] (metrics, query log).
//! The event borrows everything it can: a sink copies only what it keeps.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::devices::{Mac, NamedBy};
use crate::policy::category::{Action, CategorySet, CategoryTable};

/// How a query was answered: the `result` label of `telesink_queries_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QueryResult {
    Blocked,
    Cached,
    Forwarded,
    Local,
    Refused,
    Failed,
}

impl QueryResult {
    pub const ALL: [QueryResult; 6] = [
        QueryResult::Blocked,
        QueryResult::Cached,
        QueryResult::Forwarded,
        QueryResult::Local,
        QueryResult::Refused,
        QueryResult::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            QueryResult::Blocked => "blocked",
            QueryResult::Cached => "cached",
            QueryResult::Forwarded => "forwarded",
            QueryResult::Local => "local",
            QueryResult::Refused => "refused",
            QueryResult::Failed => "failed",
        }
    }
}

/// Who asked: the source address, the device's name if anything names it, and the group.
#[derive(Clone, Debug)]
pub struct ClientInfo {
    pub addr: IpAddr,
    /// The device's name: a `[[client]]` (by address or MAC) or a DHCP lease's host name.
    pub name: Option<Arc<str>>,
    /// How `name` was found ([`NamedBy::Address`] when nothing named the device).
    pub named_by: NamedBy,
    /// The MAC the kernel's neighbour table gives for `addr`, when known.
    pub mac: Option<Mac>,
    /// The group whose policy applied; `None` means `[default]`.
    pub group: Option<Arc<str>>,
}

impl ClientInfo {
    /// The configured name, else the address: the `client` label of the metrics.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => n.to_string(),
            None => self.addr.to_string(),
        }
    }
}

/// One answered query, as metrics and the query log see it.
#[derive(Debug)]
pub struct QueryEvent<'a> {
    pub time: SystemTime,
    pub client: &'a ClientInfo,
    /// Query name, lower case, without the trailing dot.
    pub name: &'a str,
    pub qtype: RecordType,
    pub result: QueryResult,
    /// Every category that matched the name (or, for CNAME cloaking, the chain).
    pub categories: CategorySet,
    /// Names of the categories, for this policy generation.
    pub category_table: &'a Arc<CategoryTable>,
    /// The first list that matched, if any.
    pub list: Option<&'a Arc<str>>,
    /// What the client's group did, when a category matched.
    pub action: Option<Action>,
    pub rcode: ResponseCode,
    /// Time spent waiting for an upstream, when the query was forwarded.
    pub upstream_time: Option<Duration>,
    /// Time from receiving the query to sending the answer.
    pub elapsed: Duration,
}

/// A consumer of query events. Called on the query path: it must not block or wait on I/O.
pub trait QuerySink: Send + Sync + 'static {
    fn record(&self, event: &QueryEvent<'_>);

    /// The transport of the query just recorded (`telesink_transport_queries_total`).
    fn transport(&self, _transport: crate::observe::transport::Transport) {}
}

/// What the cache step saw for one answered query: the cache counters' input.
/// `hits + misses` = the queries that reached the cache step; `Stale` is also a miss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStep {
    /// A fresh answer was there.
    Hit,
    /// None (or only a stale one): the query was forwarded.
    Miss,
    /// Forwarded, every upstream failed, and a stale answer was served instead (RFC 8767).
    Stale,
}

/// Receives the cache step of each answered query (the metrics implement it).
pub trait CacheObserver: Send + Sync {
    fn cache_step(&self, step: CacheStep);
}

/// The `outcome` label of `telesink_upstream_responses_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpstreamOutcome {
    Ok,
    ServFail,
    Timeout,
    Error,
}

impl UpstreamOutcome {
    pub const ALL: [UpstreamOutcome; 4] = [
        UpstreamOutcome::Ok,
        UpstreamOutcome::ServFail,
        UpstreamOutcome::Timeout,
        UpstreamOutcome::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamOutcome::Ok => "ok",
            UpstreamOutcome::ServFail => "servfail",
            UpstreamOutcome::Timeout => "timeout",
            UpstreamOutcome::Error => "error",
        }
    }
}

/// Receives each upstream attempt's outcome (the metrics implement it).
pub trait UpstreamObserver: Send + Sync {
    fn upstream_outcome(&self, upstream: &str, outcome: UpstreamOutcome, rtt: Duration);
}
