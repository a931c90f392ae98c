//! Answering a query: one decision, two encoders.
//!
//! Every query, from either transport, goes the same way:
//!
//! 1. [`identity::identify`]: who asks (the configured client and its group, and what the event
//!    names it), once per query.
//! 2. [`decision::decide`]: a pure function of the [`Live`] state, the cache, the client and the
//!    question. It walks the steps of SPEC "How a query is answered" in their one order
//!    (access, local names, policy, `ANY`, cache) and returns a [`decision::Decision`]: what to
//!    answer (refuse, a local answer, a block with its reason, a cached answer, forward) and
//!    what metrics and the log will get.
//! 3. [`Handler::admit`](handler::Handler): the rate limit, the one step that has an effect (it
//!    takes a token), applied once, where the query is committed to its answer.
//! 4. An encoder writes the decision: [`encode_wire`] straight into bytes for the common
//!    answers (blocked, cached, refused), [`encode_hickory`] through hickory's message types for
//!    the rest; a forward waits for [`upstream`] (or a [`forward`] zone's servers, asked in the
//!    order [`strategy`] plans) and has its answer checked by [`cloaking`] and [`rebind`].
//! 5. The event goes to the sinks (metrics, query log), and the cache step to the cache
//!    counters.
//!
//! Where things go: a new answer rule is a step in [`decision`] (and, if its answer has a new
//! shape, a case in both encoders); a new transport calls [`Handler::answer_direct_into`] and
//! [`Handler::answer_wire`] as `udp` and `tcp` do.
//!
//! [`Handler::answer_direct_into`]: handler::Handler::answer_direct_into
//! [`Handler::answer_wire`]: handler::Handler::answer_wire

pub mod access;
pub mod answer;
pub mod cache;
pub mod cloaking;
pub mod ddr;
pub mod decision;
pub mod dnssec;
pub mod encode_hickory;
pub mod encode_wire;
pub mod forward;
pub mod forward_udp;
pub mod handler;
pub mod identity;
pub mod rebind;
pub mod strategy;
pub mod upstream;
pub mod wire;

pub use handler::Handler;

use crate::policy::Policy;
use access::Access;

/// What the query path reads: swapped whole on reload, so that one query sees one generation.
pub struct Live {
    pub policy: Policy,
    pub access: Access,
    /// `[[forward]]` zones and their servers.
    pub forwards: forward::ForwardTable,
    /// `[upstream] strategy` and `rebind_protection`.
    pub upstream: UpstreamRules,
    /// `_dns.resolver.arpa`'s answer, with `server.ddr` and an encrypted listener.
    pub ddr: Option<std::sync::Arc<ddr::Ddr>>,
}

/// The `[upstream]` settings a reload changes in place.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpstreamRules {
    pub strategy: strategy::Strategy,
    pub rebind: RebindProtection,
}

/// `[upstream] rebind_protection` ([`rebind`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RebindProtection {
    #[default]
    On,
    Off,
}
