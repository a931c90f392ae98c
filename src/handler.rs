//! The request handler: the path of one query, top to bottom.
//!
//! 1. [`access`](Handler::access): `allow_networks` and the rate limit → REFUSED.
//! 2. [`local`](Handler::local): `[[record]]`s, special-use and private-reverse names.
//! 3. [`policy`](Handler::policy): bypass defences, lists and the client's group → block answer.
//!    Then `ANY` gets its minimal answer ([`minimal_any`], RFC 8482), never forwarded.
//! 4. [`resolve`](Handler::resolve): cache, else upstream; CNAME/HTTPS targets re-checked.
//! 5. [`respond`](Handler::respond): encode (truncating for UDP), send, hand the event to sinks.
//!
//! Each step returns either a final answer or lets the query go on.
//!
//! The listeners first try [`answer_direct`](Handler::answer_direct): the same steps for the
//! commonest outcomes (blocked, a fresh cache hit, REFUSED), read from and written to bytes
//! without hickory's codec ([`crate::wire`]); whatever it does not answer comes here whole.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use hickory_proto::op::{Edns, Header, Metadata, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::rdata::HINFO;
use hickory_proto::rr::{LowerName, Name, RData, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use hickory_server::net::runtime::{Time, TokioTime};
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponseBuilder, Queries};

use crate::access::{Access, AccessDecision};
use crate::answer::{self, ede, Reply};
use crate::cache::{AnswerCache, Lookup};
use crate::category::{Action, CategorySet};
use crate::config::BlockMode;
use crate::events::{ClientInfo, QueryEvent, QueryResult, QuerySink};
use crate::local::LocalAnswer;
use crate::matcher::NameHashes;
use crate::policy::{ClientMatch, Policy, Verdict};
use crate::upstream::Upstreams;
use crate::wire::{self, WireQuery};

/// Largest UDP answer we send, whatever the client offers (the DNS flag day 2020 figure).
const MAX_UDP_PAYLOAD: u16 = 1232;
/// TTL of stale answers (RFC 8767 recommends 30 s).
const STALE_TTL: u32 = 30;
/// TTL of the synthesized answer to `ANY` (RFC 8482 leaves it to the operator).
const ANY_TTL: u32 = 3600;

/// What the query path reads: swapped whole on reload.
pub struct Live {
    pub policy: Policy,
    pub access: Access,
}

/// The handler's shared state. Cheap to clone (all `Arc`).
#[derive(Clone)]
pub struct Handler {
    inner: Arc<Inner>,
}

struct Inner {
    live: Arc<ArcSwap<Live>>,
    cache: AnswerCache,
    upstreams: Upstreams,
    sinks: Vec<Arc<dyn QuerySink>>,
    /// Queries between the start of `handle_request` and its end: what shutdown waits for.
    in_flight: AtomicUsize,
}

/// Counts one query in flight for as long as it lives (dropped when the query is answered, or
/// its future cancelled).
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(n: &'a AtomicUsize) -> InFlight<'a> {
        n.fetch_add(1, Ordering::Relaxed);
        InFlight(n)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Release);
    }
}

/// The query as the pipeline sees it.
struct Question<'a> {
    name: &'a LowerName,
    /// Lower-case name without the trailing dot, for regexes, events and EDE texts.
    text: &'a str,
    qtype: RecordType,
}

/// What happened, for the event.
struct Outcome {
    result: QueryResult,
    verdict: Verdict,
    action: Option<Action>,
    upstream_time: Option<std::time::Duration>,
}

impl Outcome {
    fn new(result: QueryResult) -> Outcome {
        Outcome {
            result,
            verdict: Verdict::default(),
            action: None,
            upstream_time: None,
        }
    }
}

/// Names that devices use to detect or route around a filtering resolver.
enum Bypass {
    NxDomain,
    NoData,
}

fn bypass_rule(name: &str) -> Option<Bypass> {
    match name {
        // Firefox turns DoH off only when its canary does not resolve.
        "use-application-dns.net" => Some(Bypass::NxDomain),
        // iCloud Private Relay: Apple devices fall back to the network's DNS on NXDOMAIN.
        "mask.icloud.com" | "mask-h2.icloud.com" => Some(Bypass::NxDomain),
        // RFC 9462 Discovery of Designated Resolvers: no designated encrypted resolver.
        "_dns.resolver.arpa" => Some(Bypass::NoData),
        _ => None,
    }
}

impl Handler {
    pub fn new(
        live: Arc<ArcSwap<Live>>,
        cache: AnswerCache,
        upstreams: Upstreams,
        sinks: Vec<Arc<dyn QuerySink>>,
    ) -> Handler {
        Handler {
            inner: Arc::new(Inner {
                live,
                cache,
                upstreams,
                sinks,
                in_flight: AtomicUsize::new(0),
            }),
        }
    }

    pub fn cache(&self) -> &AnswerCache {
        &self.inner.cache
    }

    /// Queries being answered right now.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::Acquire)
    }

    /// At shutdown, once the listeners stopped taking new queries: waits until every query in
    /// flight (waiting for an upstream, usually) has been answered and handed to the sinks, or
    /// `max` has passed. Returns how many were still in flight.
    pub async fn drain(&self, max: Duration) -> usize {
        let deadline = Instant::now() + max;
        loop {
            let n = self.in_flight();
            if n == 0 || Instant::now() >= deadline {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Answers one query: the whole pipeline, transport-independent.
    async fn answer(
        &self,
        live: &Live,
        client_addr: IpAddr,
        client: ClientMatch,
        q: &Question<'_>,
        original: &hickory_proto::op::Query,
    ) -> (Reply, Outcome) {
        if let Some(r) = self.access(live, client_addr) {
            return r;
        }
        if let Some(r) = self.local(live, q) {
            return r;
        }
        let (verdict, action) = match self.policy(live, client, q) {
            Ok(r) => return r,
            Err(v) => v,
        };
        if q.qtype == RecordType::ANY {
            return minimal_any(q, verdict, action);
        }
        self.resolve(live, client, q, original, verdict, action)
            .await
    }

    /// Step 1: access list and rate limit.
    fn access(&self, live: &Live, addr: IpAddr) -> Option<(Reply, Outcome)> {
        match live.access.check(addr) {
            AccessDecision::Allowed => None,
            AccessDecision::Denied => Some((
                Reply::rcode(ResponseCode::Refused)
                    .with_ede(ede::PROHIBITED, "client not in allow_networks"),
                Outcome::new(QueryResult::Refused),
            )),
            AccessDecision::RateLimited => Some((
                Reply::rcode(ResponseCode::Refused).with_ede(ede::PROHIBITED, "rate limited"),
                Outcome::new(QueryResult::Refused),
            )),
        }
    }

    /// Step 2: local records, special-use names, private reverse zones.
    fn local(&self, live: &Live, q: &Question<'_>) -> Option<(Reply, Outcome)> {
        let ttl = live.policy.blocking.ttl;
        let reply = match live.policy.local.answer(q.name, q.qtype)? {
            LocalAnswer::Records(records) => {
                let mut r = Reply::rcode(ResponseCode::NoError);
                r.answers = records;
                r
            }
            LocalAnswer::NoData { zone } => answer::nodata(&zone, ttl),
            LocalAnswer::NxDomain { zone } => answer::nxdomain(&zone, ttl),
        };
        let mut reply = reply;
        reply.authoritative = true;
        Some((reply, Outcome::new(QueryResult::Local)))
    }

    /// Step 3: the policy. `Ok` is a final (blocked) answer; `Err` lets the query go on with
    /// what the lists said.
    fn policy(
        &self,
        live: &Live,
        client: ClientMatch,
        q: &Question<'_>,
    ) -> Result<(Reply, Outcome), (Verdict, Option<Action>)> {
        let policy = &live.policy;
        let mut verdict = policy.classify(q.name.iter(), Some(q.text.as_bytes()));

        if let Some(rule) = bypass_rule(q.text) {
            if !verdict.exception {
                verdict.categories.insert(policy.bypass);
                let ttl = policy.blocking.ttl;
                let zone = Name::from(q.name.clone());
                let reply = match rule {
                    Bypass::NxDomain => answer::nxdomain(&zone, ttl),
                    Bypass::NoData => answer::nodata(&zone, ttl),
                };
                let reply = reply.with_ede(ede::BLOCKED, "bypass defence (category bypass)");
                return Ok((
                    reply,
                    Outcome {
                        result: QueryResult::Blocked,
                        verdict,
                        action: Some(Action::Blocked),
                        upstream_time: None,
                    },
                ));
            }
        }

        let action = policy.action(client, &verdict);
        if action == Some(Action::Blocked) {
            let reply = block_reply(policy, q.name, q.qtype, &verdict);
            return Ok((
                reply,
                Outcome {
                    result: QueryResult::Blocked,
                    verdict,
                    action,
                    upstream_time: None,
                },
            ));
        }
        Err((verdict, action))
    }

    /// Step 4: cache, else upstream; then CNAME-cloaking inspection for this client.
    async fn resolve(
        &self,
        live: &Live,
        client: ClientMatch,
        q: &Question<'_>,
        original: &hickory_proto::op::Query,
        verdict: Verdict,
        action: Option<Action>,
    ) -> (Reply, Outcome) {
        let now = Instant::now();
        let stale = match self.inner.cache.get(q.name, q.qtype, now) {
            Lookup::Fresh(entry) => {
                let reply = from_cache(&entry, now, None);
                return self.inspect(
                    live,
                    client,
                    q,
                    reply,
                    verdict,
                    action,
                    QueryResult::Cached,
                    None,
                );
            }
            Lookup::Stale(entry) => Some(entry),
            Lookup::Miss => None,
        };

        let started = Instant::now();
        let forwarded = self.inner.upstreams.forward(original).await;
        let upstream_time = Some(started.elapsed());
        match forwarded {
            Ok(answer) => {
                self.inner.cache.insert(q.name, q.qtype, answer.clone());
                let mut reply = Reply::rcode(answer.rcode);
                reply.answers = answer.answers;
                reply.authorities = answer.authorities;
                reply.additionals = answer.additionals;
                self.inspect(
                    live,
                    client,
                    q,
                    reply,
                    verdict,
                    action,
                    QueryResult::Forwarded,
                    upstream_time,
                )
            }
            Err(e) => {
                tracing::debug!(name = q.text, error = %e, "forwarding failed");
                if let Some(entry) = stale {
                    let reply = from_cache(&entry, now, Some(STALE_TTL))
                        .with_ede(ede::STALE_ANSWER, "upstreams unreachable; stale answer");
                    return self.inspect(
                        live,
                        client,
                        q,
                        reply,
                        verdict,
                        action,
                        QueryResult::Cached,
                        upstream_time,
                    );
                }
                let reply = Reply::rcode(ResponseCode::ServFail)
                    .with_ede(ede::NETWORK_ERROR, e.to_string());
                let mut outcome = Outcome::new(QueryResult::Failed);
                outcome.verdict = verdict;
                outcome.action = action;
                outcome.upstream_time = upstream_time;
                (reply, outcome)
            }
        }
    }

    /// CNAME cloaking: an answer whose CNAME chain or HTTPS/SVCB target reaches a name this
    /// client's policy blocks is replaced by the block answer.
    #[allow(clippy::too_many_arguments)]
    fn inspect(
        &self,
        live: &Live,
        client: ClientMatch,
        q: &Question<'_>,
        reply: Reply,
        verdict: Verdict,
        action: Option<Action>,
        result: QueryResult,
        upstream_time: Option<std::time::Duration>,
    ) -> (Reply, Outcome) {
        let policy = &live.policy;
        let mut chain = Verdict::default();
        let mut buf = [0u8; 256];
        for record in &reply.answers {
            let target = match &record.data {
                RData::CNAME(c) => Some(&c.0),
                RData::HTTPS(h) => Some(&h.0.target_name),
                RData::SVCB(s) => Some(&s.target_name),
                _ => None,
            };
            let Some(target) = target.filter(|t| !t.is_root()) else {
                continue;
            };
            let lower = target.to_lowercase();
            let text = dotted(&lower, &mut buf);
            chain.merge(policy.classify(lower.iter(), Some(text.as_bytes())));
        }
        if chain.matched() {
            let mut merged = verdict;
            merged.merge(chain);
            let merged_action = policy.action(client, &merged);
            if merged_action == Some(Action::Blocked) {
                let reply = block_reply(policy, q.name, q.qtype, &merged);
                return (
                    reply,
                    Outcome {
                        result: QueryResult::Blocked,
                        verdict: merged,
                        action: merged_action,
                        upstream_time,
                    },
                );
            }
            return (
                reply,
                Outcome {
                    result,
                    verdict: merged,
                    action: merged_action,
                    upstream_time,
                },
            );
        }
        (
            reply,
            Outcome {
                result,
                verdict,
                action,
                upstream_time,
            },
        )
    }
}

impl Handler {
    /// Step 5's second half: hands what happened to the sinks (metrics, query log).
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        policy: &Policy,
        addr: IpAddr,
        client: ClientMatch,
        name: &str,
        qtype: RecordType,
        outcome: &Outcome,
        rcode: ResponseCode,
        started: Instant,
    ) {
        if self.inner.sinks.is_empty() {
            return;
        }
        let client_info = ClientInfo {
            addr: crate::policy::canonical(addr),
            name: policy.client_name(client).cloned(),
            named_by: if client.client.is_some() {
                crate::devices::NamedBy::ConfigAddress
            } else {
                crate::devices::NamedBy::Address
            },
            mac: None,
            group: policy.group_name(client).cloned(),
        };
        let list = outcome.verdict.list.map(|l| &policy.list(l).name);
        let event = QueryEvent {
            time: SystemTime::now(),
            client: &client_info,
            name,
            qtype,
            result: outcome.result,
            categories: outcome.verdict.categories,
            category_table: &policy.categories,
            list,
            action: if outcome.verdict.categories == CategorySet::EMPTY
                && !outcome.verdict.exception
            {
                None
            } else {
                outcome.action
            },
            rcode,
            upstream_time: outcome.upstream_time,
            elapsed: started.elapsed(),
        };
        for sink in &self.inner.sinks {
            sink.record(&event);
        }
    }
}

/// RFC 8482 §4.2: `ANY` for a name that is neither local nor blocked gets one synthesized
/// `HINFO "RFC8482" ""` record instead of everything the upstream holds, so that telesink cannot
/// amplify a spoofed query, over UDP or TCP. The question is not forwarded.
fn minimal_any(q: &Question<'_>, verdict: Verdict, action: Option<Action>) -> (Reply, Outcome) {
    let mut reply = Reply::rcode(ResponseCode::NoError);
    reply.answers.push(hickory_proto::rr::Record::from_rdata(
        Name::from(q.name.clone()),
        ANY_TTL,
        RData::HINFO(HINFO::new("RFC8482".to_string(), String::new())),
    ));
    let mut outcome = Outcome::new(QueryResult::Local);
    outcome.verdict = verdict;
    outcome.action = action;
    (reply, outcome)
}

fn block_reply(policy: &Policy, name: &LowerName, qtype: RecordType, verdict: &Verdict) -> Reply {
    let settings = policy.blocking;
    let reply = answer::blocked(
        &Name::from(name.clone()),
        qtype,
        settings.mode,
        settings.ttl,
    );
    reply.with_ede(ede::BLOCKED, policy.block_text(verdict))
}

fn from_cache(entry: &crate::cache::Entry, now: Instant, fixed_ttl: Option<u32>) -> Reply {
    let age = entry.age(now);
    let a = &entry.answer;
    let adjust = |records: &[hickory_proto::rr::Record]| {
        records
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r.ttl = fixed_ttl.unwrap_or_else(|| r.ttl.saturating_sub(age));
                r
            })
            .collect()
    };
    let mut reply = Reply::rcode(a.rcode);
    reply.answers = adjust(&a.answers);
    reply.authorities = adjust(&a.authorities);
    reply.additionals = adjust(&a.additionals);
    reply
}

/// Writes `name` as lower-case dotted text without the trailing dot into `buf`.
fn dotted<'b>(name: &Name, buf: &'b mut [u8; 256]) -> &'b str {
    let mut len = 0;
    for label in name.iter() {
        if len > 0 && len < buf.len() {
            buf[len] = b'.';
            len += 1;
        }
        let n = label.len().min(buf.len() - len);
        for (i, b) in label[..n].iter().enumerate() {
            buf[len + i] = b.to_ascii_lowercase();
        }
        len += n;
    }
    // Binary labels are legal DNS but not text; they match no list anyway.
    std::str::from_utf8(&buf[..len]).unwrap_or("")
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let _in_flight = InFlight::enter(&self.inner.in_flight);
        let started = Instant::now();
        let src: SocketAddr = request.src();
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = true;

        // The response's OPT: present only when the query had one; its payload size is the
        // limit hickory enforces when encoding for UDP (TC is set past it).
        let mut edns = request.edns.as_ref().map(|req| {
            let mut e = Edns::new();
            e.set_max_payload(req.max_payload().clamp(512, MAX_UDP_PAYLOAD));
            e
        });

        let live = self.inner.live.load();
        let policy = &live.policy;

        if !question_is_self_contained(request.queries.as_bytes()) {
            // The answer echoes the question's bytes as received: a compression pointer into
            // the header would then point into the answer's header and make it undecodable.
            // No real client compresses the first question name (there is nothing before it).
            return send_formerr(&mut response_handle, &request.metadata).await;
        }

        let info = match request.request_info() {
            Ok(info) => info,
            Err(_) => {
                // Not exactly one question.
                metadata.response_code = ResponseCode::FormErr;
                return send(
                    &mut response_handle,
                    request,
                    metadata,
                    None,
                    &Reply::rcode(ResponseCode::FormErr),
                )
                .await;
            }
        };
        // Queries the pipeline does not take: an opcode other than QUERY (NOTIMP), an EDNS
        // version other than 0 (RFC 6891: BADVERS).
        let unsupported = if request.metadata.op_code != hickory_proto::op::OpCode::Query {
            Some(ResponseCode::NotImp)
        } else if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            Some(ResponseCode::BADVERS)
        } else {
            None
        };
        if let Some(code) = unsupported {
            metadata.response_code = code;
            return send(
                &mut response_handle,
                request,
                metadata,
                edns.as_ref(),
                &Reply::rcode(code),
            )
            .await;
        }

        let query = info.query;
        let mut buf = [0u8; 256];
        let text = dotted(query.name(), &mut buf);
        let question = Question {
            name: query.name(),
            text,
            qtype: query.query_type(),
        };
        let client = policy.client(src.ip());

        let (reply, outcome) = self
            .answer(&live, src.ip(), client, &question, query.original())
            .await;

        metadata.response_code = reply.rcode;
        metadata.authoritative = reply.authoritative;
        if let (Some(e), Some((code, text))) = (edns.as_mut(), &reply.ede) {
            let mut data = Vec::with_capacity(2 + text.len());
            data.extend_from_slice(&code.to_be_bytes());
            data.extend_from_slice(text.as_bytes());
            e.options_mut()
                .insert(EdnsOption::Unknown(u16::from(EdnsCode::Unknown(15)), data));
        }
        let info = send(
            &mut response_handle,
            request,
            metadata,
            edns.as_ref(),
            &reply,
        )
        .await;

        self.record(
            policy,
            src.ip(),
            client,
            question.text,
            question.qtype,
            &outcome,
            reply.rcode,
            started,
        );
        info
    }
}

async fn send<R: ResponseHandler>(
    handle: &mut R,
    request: &Request,
    metadata: Metadata,
    edns: Option<&Edns>,
    reply: &Reply,
) -> ResponseInfo {
    let mut builder = MessageResponseBuilder::new(&request.queries, None);
    if let Some(e) = edns {
        builder.edns(e);
    }
    let response = builder.build(
        metadata,
        reply.answers.iter(),
        reply.authorities.iter(),
        std::iter::empty(),
        reply.additionals.iter(),
    );
    match handle.send_response(response).await {
        Ok(info) => info,
        Err(e) => {
            tracing::debug!(error = %e, "failed to send response");
            let mut metadata = metadata;
            metadata.response_code = ResponseCode::ServFail;
            ResponseInfo::from(hickory_proto::op::Header {
                metadata,
                counts: Default::default(),
            })
        }
    }
}

/// Whether the question section, as received, can be echoed: no name in it uses a compression
/// pointer into the 12-byte header (the only place a pointer in the first question can lead).
fn question_is_self_contained(question: &[u8]) -> bool {
    let mut i = 0;
    while i < question.len() {
        let b = question[i];
        if b & 0xC0 == 0xC0 {
            let target =
                (usize::from(b & 0x3F) << 8) | usize::from(*question.get(i + 1).unwrap_or(&0));
            if target < 12 {
                return false;
            }
            i += 2 + 4; // the pointer ends the name; then QTYPE and QCLASS
        } else if b == 0 {
            i += 1 + 4;
        } else {
            i += 1 + usize::from(b);
        }
    }
    true
}

impl Handler {
    /// One request off the wire, from either transport: decodes and answers it. A readable
    /// header with a broken body gets FORMERR; no readable header gets silence, and so does a
    /// response (answering answers is how reflection loops start).
    pub async fn answer_wire<R: ResponseHandler>(
        &self,
        bytes: Vec<u8>,
        src: SocketAddr,
        protocol: Protocol,
        mut responder: R,
    ) {
        // The header is read in full only for FORMERR; the hot path looks at the QR bit alone.
        let Some(head) = bytes.get(..12).and_then(|h| <[u8; 12]>::try_from(h).ok()) else {
            return;
        };
        if head[2] & 0x80 != 0 {
            return;
        }
        match Request::from_bytes(bytes, src, protocol) {
            Ok(request) => {
                self.handle_request::<_, TokioTime>(&request, responder)
                    .await;
            }
            Err(_) => {
                if let Ok(header) = Header::read(&mut BinDecoder::new(&head)) {
                    send_formerr(&mut responder, &header.metadata).await;
                }
            }
        }
    }
}

impl Handler {
    /// The direct path: the pipeline's most common outcomes (blocked, a fresh cache hit, and
    /// REFUSED) for a query of the common shape, read from and written to bytes without
    /// hickory's codec ([`wire`]). The same steps, in the same order of precedence, as
    /// [`answer`](Self::answer). `None` hands the query, untouched, to
    /// [`answer_wire`](Self::answer_wire): local names, bypass names, `ANY`, cache misses and
    /// stale entries, CNAME-cloaking blocks, and answers that must be truncated.
    ///
    /// Nothing here has a side effect until the answer is certain; that is why the access step,
    /// which takes a rate-limit token, runs last: a query that falls through is counted once.
    pub fn answer_direct(
        &self,
        bytes: &[u8],
        src: SocketAddr,
        protocol: Protocol,
    ) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        self.answer_direct_into(bytes, src, protocol, &mut out)?;
        Some(out)
    }

    /// [`answer_direct`](Self::answer_direct), appending the answer to `out` (the UDP listener
    /// writes a whole batch of answers into one buffer). `None`: nothing appended.
    pub fn answer_direct_into(
        &self,
        bytes: &[u8],
        src: SocketAddr,
        protocol: Protocol,
        out: &mut Vec<u8>,
    ) -> Option<()> {
        let started = Instant::now();
        let start = out.len();
        let q = WireQuery::parse(bytes)?;
        let live = self.inner.live.load();
        let policy = &live.policy;
        let limit = q.limit(protocol == Protocol::Udp, MAX_UDP_PAYLOAD);

        let text = q.text();
        let hashes = NameHashes::new(q.labels());

        // Step 2: local names.
        if policy.local.covers(&hashes) {
            return None;
        }
        // Step 3: the policy.
        if bypass_rule(text).is_some() {
            return None;
        }
        let client = policy.client(src.ip());
        let verdict = policy.classify_hashed(&hashes, Some(text.as_bytes()));
        let action = policy.action(client, &verdict);
        let mut outcome = if action == Some(Action::Blocked) {
            let b = policy.blocking;
            let text = policy.block_text(&verdict);
            wire::blocked(&q, b.mode, b.ttl, &text, limit, MAX_UDP_PAYLOAD, out)?;
            let mut outcome = Outcome::new(QueryResult::Blocked);
            outcome.verdict = verdict;
            outcome.action = action;
            outcome
        } else {
            if q.qtype == RecordType::ANY {
                return None;
            }
            // Step 4: a fresh cache hit, its CNAME/HTTPS targets checked for this client.
            let now = Instant::now();
            let mut key = [0u8; wire::MAX_NAME];
            let Lookup::Fresh(entry) =
                self.inner
                    .cache
                    .get_wire(q.lower_name(&mut key), q.qtype, now)
            else {
                return None;
            };
            let cached = entry.wire.as_ref()?;
            let mut outcome = Outcome::new(QueryResult::Cached);
            outcome.verdict = verdict;
            outcome.action = action;
            let mut chain = Verdict::default();
            for target in cached.targets.iter() {
                chain.merge(policy.classify_str(target));
            }
            if chain.matched() {
                outcome.verdict.merge(chain);
                outcome.action = policy.action(client, &outcome.verdict);
                if outcome.action == Some(Action::Blocked) {
                    return None;
                }
            }
            cached.answer(&q, entry.age(now), limit, MAX_UDP_PAYLOAD, out)?;
            outcome
        };
        // Step 1: access list and rate limit; a REFUSED replaces the answer.
        if let Some((reply, refused)) = self.access(&live, src.ip()) {
            out.truncate(start);
            let (code, text) = reply.ede.as_ref()?;
            wire::refused(&q, (*code, text), limit, MAX_UDP_PAYLOAD, out)?;
            outcome = refused;
        }
        let rcode = ResponseCode::from(0, out[start + 3] & 0x0F);
        self.record(
            policy,
            src.ip(),
            client,
            text,
            q.qtype,
            &outcome,
            rcode,
            started,
        );
        Some(())
    }
}

/// FORMERR with an empty question section: for requests whose question cannot be echoed
/// (undecodable, or compressed into the header).
async fn send_formerr<R: ResponseHandler>(handle: &mut R, request: &Metadata) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(request);
    metadata.response_code = ResponseCode::FormErr;
    let queries = Queries::read(&mut BinDecoder::new(&[]), 0).expect("zero queries read");
    let response =
        MessageResponseBuilder::new(&queries, None).error_msg(request, ResponseCode::FormErr);
    match handle.send_response(response).await {
        Ok(info) => info,
        Err(e) => {
            tracing::debug!(error = %e, "failed to send response");
            ResponseInfo::from(hickory_proto::op::Header {
                metadata,
                counts: Default::default(),
            })
        }
    }
}

/// Used by `explain`: the answer a client would get from the policy alone.
pub fn describe_block_mode(mode: BlockMode) -> &'static str {
    match mode {
        BlockMode::Null => "0.0.0.0 / :: (null)",
        BlockMode::Nxdomain => "NXDOMAIN",
        BlockMode::Refused => "REFUSED",
    }
}

#[cfg(test)]
mod tests {
    use super::question_is_self_contained;

    #[test]
    fn question_with_a_pointer_into_the_header_is_not_echoed() {
        // Found by the `request` fuzz target: `c0 02` as the question name.
        assert!(!question_is_self_contained(&[0xc0, 0x02, 0, 1, 0, 1]));
        // A label, then a pointer into the header.
        assert!(!question_is_self_contained(
            b"\x03abc\xc0\x05\x00\x01\x00\x01"
        ));
        // Plain names, and a second question pointing at the first (offset 12), are fine.
        assert!(question_is_self_contained(
            b"\x03abc\x07example\x00\x00\x01\x00\x01"
        ));
        assert!(question_is_self_contained(
            b"\x03abc\x00\x00\x01\x00\x01\xc0\x0c\x00\x1c\x00\x01"
        ));
        assert!(question_is_self_contained(b""));
        // Truncated input never reads past the end.
        assert!(!question_is_self_contained(&[0xc0]));
        assert!(question_is_self_contained(&[0x05, b'a']));
    }
}
