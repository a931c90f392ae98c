//! The request handler: one query through identity, decision, rate limit, encoder and event,
//! from either path.
//!
//! * The direct path ([`Handler::answer_direct_into`]): a query of the common shape read from
//!   bytes ([`WireQuery`]), decided, and when the answer is one the direct encoder writes
//!   (blocked, a fresh cache hit, REFUSED) and fits, written to bytes.
//! * The general path ([`Handler::answer_wire`]): hickory's decoder and encoder, for everything
//!   else, including the upstream wait. A query the direct path read but could not write comes
//!   here with what was decided ([`Pending`]), so each query is identified, decided and
//!   rate-limited once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::{ArcSwap, Guard};
use hickory_proto::op::{Edns, Header, Metadata, Query, ResponseCode};
use hickory_proto::rr::{LowerName, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};

use super::answer::{ede, Reply};
use super::cache::{AnswerCache, CacheStep, Entry, QName};
use super::cloaking;
use super::decision::{
    decide, rebind_applies, sinkhole, Answer, BlockReason, Decision, Question, Refusal, Report,
};
use super::encode_hickory as hickory;
use super::encode_wire::{self, CachedWire};
use super::forward::Route;
use super::identity::{identify_as, Identity, Origin};
use super::rebind;
use super::upstream::{ForwardError, Tried, UpstreamAnswer, Upstreams};
use super::wire::{dotted, WireQuery};
use super::Live;
use crate::devices::Devices;
use crate::observe::answers::AnswerObserver;
use crate::observe::events::{QueryEvent, QueryResult, QuerySink};
use crate::observe::transport::Transport;
use crate::policy::category::{Action, CategorySet};
use crate::policy::matcher::NameHashes;
use crate::policy::Policy;

mod fast_forward;
pub use fast_forward::{Fast, Flight};

/// Largest UDP answer we send, whatever the client offers (the DNS flag day 2020 figure).
const MAX_UDP_PAYLOAD: u16 = 1232;

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
    /// MAC and lease identity (disabled unless [`Handler::with_devices`]).
    devices: Devices,
    /// Sees fresh upstream answers (the addresses learner), if any.
    answers: Option<Arc<dyn AnswerObserver>>,
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

/// A query the direct path identified and decided but did not answer (its answer needs hickory's
/// encoder, or an upstream): the general path goes on from here instead of starting again.
pub struct Pending {
    /// The generation the decision was made with (the client's group is an index into it).
    live: Arc<Live>,
    client: Identity,
    decision: Decision,
    /// Whether the rate limit has been applied to `decision` already.
    admitted: bool,
    started: Instant,
    /// The upstream the UDP fast path asked already (it timed out or failed): not asked again.
    tried: Option<Tried>,
    /// The answer the UDP fast path settled on but could not encode directly (it does not
    /// fit): the general path only encodes and records it.
    settled: Option<Box<(Reply, Report)>>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("client", &self.client)
            .field("decision", &self.decision)
            .field("admitted", &self.admitted)
            .finish_non_exhaustive()
    }
}

/// What the direct path did with a query.
pub enum Direct {
    /// Answered: the answer was appended to the buffer.
    Answered,
    /// Left to the general path ([`Handler::answer_wire_with`]): `None` when the query is not of
    /// the common shape (it is read again from scratch), else what was decided (boxed: the
    /// general path allocates anyway, and the direct path's result stays small).
    Pass(Option<Box<Pending>>),
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
                devices: Devices::disabled(),
                answers: None,
                in_flight: AtomicUsize::new(0),
            }),
        }
    }

    /// Names clients by MAC and DHCP lease too (SPEC "Devices"), from `devices`' snapshot.
    /// Call before the handler is cloned into the listeners.
    pub fn with_devices(mut self, devices: Devices) -> Handler {
        Arc::get_mut(&mut self.inner)
            .expect("with_devices is called before the handler is shared")
            .devices = devices;
        self
    }

    /// Hands each fresh upstream answer to `observer` (SPEC "Telemetry addresses"). Call
    /// before the handler is cloned into the listeners.
    pub fn with_answer_observer(mut self, observer: Arc<dyn AnswerObserver>) -> Handler {
        Arc::get_mut(&mut self.inner)
            .expect("with_answer_observer is called before the handler is shared")
            .answers = Some(observer);
        self
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

    /// The rate limit, step 1's second half: takes the client's token, once per query, where the
    /// query is committed to its answer (before anything is sent or forwarded). Over the limit,
    /// REFUSED replaces the decision, and `false` says so. A client refused already takes no
    /// token.
    fn admit(&self, live: &Live, client: &Identity, decision: &mut Decision) -> bool {
        if decision.is_refusal() || live.access.take_token(client.addr()) {
            true
        } else {
            *decision = Decision::refused(Refusal::RateLimited);
            false
        }
    }

    /// Hands what happened to the cache counters and the sinks (metrics, query log).
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        policy: &Policy,
        client: &Identity,
        name: &str,
        qtype: RecordType,
        report: &Report,
        rcode: ResponseCode,
        elapsed: Duration,
        transport: Transport,
    ) {
        if let Some(step) = report.cache {
            self.inner.cache.count(step);
        }
        if self.inner.sinks.is_empty() {
            return;
        }
        let verdict = &report.verdict;
        let event = QueryEvent {
            time: SystemTime::now(),
            client: &client.info,
            name,
            qtype,
            result: report.result,
            categories: verdict.categories,
            category_table: &policy.categories,
            list: verdict.list.map(|l| &policy.list(l).name),
            action: if verdict.categories == CategorySet::EMPTY && !verdict.exception {
                None
            } else {
                report.action
            },
            rcode,
            upstream_time: report.upstream_time,
            elapsed,
        };
        for sink in &self.inner.sinks {
            sink.record(&event);
            sink.transport(transport);
        }
    }
}

// ---- The direct path --------------------------------------------------------------------

impl Handler {
    /// [`answer_direct_into`](Self::answer_direct_into) into a buffer of its own: the answer's
    /// bytes, or what the general path needs to go on.
    pub fn answer_direct(
        &self,
        bytes: &[u8],
        src: SocketAddr,
        protocol: Protocol,
    ) -> Result<Vec<u8>, Option<Box<Pending>>> {
        self.answer_direct_as(bytes, src, &Origin::plain(protocol))
    }

    /// [`answer_direct`](Self::answer_direct) for a query that came as `origin` (DoT, DoH, or
    /// with a device id).
    pub fn answer_direct_as(
        &self,
        bytes: &[u8],
        src: SocketAddr,
        origin: &Origin,
    ) -> Result<Vec<u8>, Option<Box<Pending>>> {
        let mut out = Vec::new();
        match self.answer_direct_from(bytes, src, origin, Instant::now(), &mut out) {
            Direct::Answered => Ok(out),
            Direct::Pass(pending) => Err(pending),
        }
    }

    /// The direct path for a query the caller parsed (`q`), appending the answer to `out` (the
    /// UDP listener writes a whole batch of answers into one buffer, and hands `q` on to the
    /// fast path if the query is forwarded). On [`Direct::Pass`] nothing is appended and
    /// nothing recorded.
    ///
    /// The answer is written before the rate limit is applied, so that a query whose answer
    /// turns out not to fit has taken no token when it moves to the general path; a REFUSED
    /// from the rate limit then replaces the bytes written.
    ///
    /// `received`: when the datagram came (the listener reads the clock once per batch).
    pub fn answer_direct_into(
        &self,
        q: &WireQuery<'_>,
        src: SocketAddr,
        protocol: Protocol,
        received: Instant,
        out: &mut Vec<u8>,
    ) -> Direct {
        self.answer_parsed(q, src, &Origin::plain(protocol), received, out)
    }

    /// [`answer_parsed`](Self::answer_parsed) for a datagram not parsed yet: one of another
    /// shape goes to the general path.
    #[inline(always)]
    fn answer_direct_from(
        &self,
        bytes: &[u8],
        src: SocketAddr,
        origin: &Origin,
        started: Instant,
        out: &mut Vec<u8>,
    ) -> Direct {
        match WireQuery::parse(bytes) {
            Some(q) => self.answer_parsed(&q, src, origin, started, out),
            None => Direct::Pass(None),
        }
    }

    #[inline(always)]
    fn answer_parsed(
        &self,
        q: &WireQuery<'_>,
        src: SocketAddr,
        origin: &Origin,
        started: Instant,
        out: &mut Vec<u8>,
    ) -> Direct {
        let protocol = origin.protocol();
        let start = out.len();
        let live = self.inner.live.load();
        let client = identify_as(&live, &self.inner.devices, src.ip(), origin.device.as_ref());
        let hashes = NameHashes::new(q.labels());
        let question = Question::from_wire(q, &hashes);
        let mut decision = decide(&live, &self.inner.cache, &client, &question, started);
        let limit = q.limit(protocol == Protocol::Udp, MAX_UDP_PAYLOAD);
        let pass = |live: Guard<Arc<Live>>, client, decision, admitted| {
            Direct::Pass(Some(Box::new(Pending {
                live: Guard::into_inner(live),
                client,
                decision,
                admitted,
                started,
                tried: None,
                settled: None,
            })))
        };
        if write_direct(&live.policy, q, &decision, started, limit, out).is_none() {
            return pass(live, client, decision, false);
        }
        if !self.admit(&live, &client, &mut decision) {
            out.truncate(start);
            if write_direct(&live.policy, q, &decision, started, limit, out).is_none() {
                return pass(live, client, decision, true);
            }
        }
        let rcode = ResponseCode::from(0, out[start + 3] & 0x0F);
        self.record(
            &live.policy,
            &client,
            question.text,
            q.qtype,
            &decision.report,
            rcode,
            started.elapsed(),
            origin.transport,
        );
        Direct::Answered
    }
}

/// Writes `decision` for `q` with the direct encoder. `None`, with nothing appended, when its
/// answer is not one the direct encoder writes, or does not fit `limit`.
#[inline(always)]
fn write_direct(
    policy: &Policy,
    q: &WireQuery<'_>,
    decision: &Decision,
    now: Instant,
    limit: usize,
    out: &mut Vec<u8>,
) -> Option<()> {
    match &decision.answer {
        Answer::Refuse(why) => encode_wire::refused(
            q,
            (ede::PROHIBITED, why.text()),
            limit,
            MAX_UDP_PAYLOAD,
            out,
        ),
        Answer::Block(BlockReason::List | BlockReason::Cloaking) => {
            let b = policy.blocking;
            let text = policy.block_text(&decision.report.verdict);
            encode_wire::blocked(
                q,
                sinkhole(b.mode),
                b.ttl,
                &text,
                limit,
                MAX_UDP_PAYLOAD,
                out,
            )
        }
        Answer::Cached(entry) => {
            entry
                .wire
                .as_ref()?
                .answer(q, entry.age(now), limit, MAX_UDP_PAYLOAD, out)
        }
        Answer::Block(BlockReason::Rebind) => {
            let b = policy.blocking;
            encode_wire::blocked(
                q,
                sinkhole(b.mode),
                b.ttl,
                rebind::TEXT,
                limit,
                MAX_UDP_PAYLOAD,
                out,
            )
        }
        Answer::Block(BlockReason::Bypass(_))
        | Answer::Local
        | Answer::MinimalAny
        | Answer::Ddr
        | Answer::Forward { .. } => None,
    }
}

// ---- The general path -------------------------------------------------------------------

impl Handler {
    /// One request off the wire, from either transport, through hickory's decoder: decodes and
    /// answers it. A readable header with a broken body gets FORMERR; no readable header gets
    /// silence, and so does a response (answering answers is how reflection loops start).
    pub async fn answer_wire<R: ResponseHandler>(
        &self,
        bytes: Vec<u8>,
        src: SocketAddr,
        protocol: Protocol,
        responder: R,
    ) {
        self.answer_wire_with(bytes, src, protocol, responder, None)
            .await
    }

    /// [`answer_wire`](Self::answer_wire) for a query the direct path passed on, with what it
    /// decided (`pending`), so that the query is not identified, decided or limited again.
    pub async fn answer_wire_with<R: ResponseHandler>(
        &self,
        bytes: Vec<u8>,
        src: SocketAddr,
        protocol: Protocol,
        responder: R,
        pending: Option<Box<Pending>>,
    ) {
        self.answer_wire_from(bytes, src, &Origin::plain(protocol), responder, pending)
            .await
    }

    /// [`answer_wire_with`](Self::answer_wire_with) for a query that came as `origin`.
    pub async fn answer_wire_from<R: ResponseHandler>(
        &self,
        bytes: Vec<u8>,
        src: SocketAddr,
        origin: &Origin,
        mut responder: R,
        pending: Option<Box<Pending>>,
    ) {
        let protocol = origin.protocol();
        // The header is read in full only for FORMERR; the hot path looks at the QR bit alone.
        let Some(head) = bytes.get(..12).and_then(|h| <[u8; 12]>::try_from(h).ok()) else {
            return;
        };
        if head[2] & 0x80 != 0 {
            return;
        }
        match Request::from_bytes(bytes, src, protocol) {
            Ok(request) => {
                self.answer_request(&request, responder, pending, origin)
                    .await;
            }
            Err(_) => {
                if let Ok(header) = Header::read(&mut BinDecoder::new(&head)) {
                    hickory::send_formerr(&mut responder, &header.metadata).await;
                }
            }
        }
    }

    async fn answer_request<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response_handle: R,
        pending: Option<Box<Pending>>,
        origin: &Origin,
    ) -> ResponseInfo {
        let _in_flight = InFlight::enter(&self.inner.in_flight);
        let started = pending.as_ref().map_or_else(Instant::now, |p| p.started);
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

        if !hickory::question_is_self_contained(request.queries.as_bytes()) {
            // The answer echoes the question's bytes as received: a compression pointer into
            // the header would then point into the answer's header and make it undecodable.
            // No real client compresses the first question name (there is nothing before it).
            return hickory::send_formerr(&mut response_handle, &request.metadata).await;
        }

        let Ok(info) = request.request_info() else {
            // Not exactly one question.
            metadata.response_code = ResponseCode::FormErr;
            let reply = Reply::rcode(ResponseCode::FormErr);
            return hickory::send(&mut response_handle, request, metadata, None, &reply).await;
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
            let reply = Reply::rcode(code);
            return hickory::send(
                &mut response_handle,
                request,
                metadata,
                edns.as_ref(),
                &reply,
            )
            .await;
        }

        let query = info.query;
        let (name, qtype) = (query.name(), query.query_type());
        let mut buf = [0u8; 256];
        let text = dotted(name, &mut buf);
        let (live, client, decision, tried, settled) = match pending.map(|p| *p) {
            Some(p) if p.admitted => (p.live, p.client, p.decision, p.tried, p.settled),
            Some(mut p) => {
                self.admit(&p.live, &p.client, &mut p.decision);
                (p.live, p.client, p.decision, p.tried, p.settled)
            }
            None => {
                let live = self.inner.live.load_full();
                let client =
                    identify_as(&live, &self.inner.devices, src.ip(), origin.device.as_ref());
                let hashes = NameHashes::new(name.iter());
                let question = Question::from_name(name, text, qtype, &hashes);
                let mut decision = decide(&live, &self.inner.cache, &client, &question, started);
                self.admit(&live, &client, &mut decision);
                (live, client, decision, None, None)
            }
        };

        let (mut reply, report) = match settled {
            Some(settled) => *settled,
            None => {
                self.finish(
                    &live,
                    &client,
                    name,
                    qtype,
                    query.original(),
                    decision,
                    tried,
                    started,
                )
                .await
            }
        };

        metadata.response_code = reply.rcode;
        metadata.authoritative = reply.authoritative;
        // DNSSEC (RFC 3225, RFC 4035 §3.2.1, RFC 6840 §5.7-5.8): DO is echoed; signatures and
        // denial records go only to clients that set DO (a validating forwarder asks with DO
        // for every query); AD only to clients that show they understand it (DO or AD).
        let dnssec_ok = request.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
        if let (Some(e), true) = (edns.as_mut(), dnssec_ok) {
            // Only the flag: hickory's enable_dnssec() also adds DAU, an option for queries
            // (RFC 6975 §3), which the wire encoder rightly never writes.
            e.set_dnssec_ok(true);
        }
        if !dnssec_ok {
            crate::resolve::dnssec::strip_unasked(&mut reply, qtype);
        }
        metadata.authentic_data = reply.authentic && (request.metadata.authentic_data || dnssec_ok);
        hickory::attach_ede(edns.as_mut(), &reply);
        let info = hickory::send(
            &mut response_handle,
            request,
            metadata,
            edns.as_ref(),
            &reply,
        )
        .await;
        self.record(
            &live.policy,
            &client,
            text,
            qtype,
            &report,
            reply.rcode,
            started.elapsed(),
            origin.transport,
        );
        info
    }

    /// The general encoder's reply for a decision; a forward asks the upstreams first.
    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        live: &Live,
        client: &Identity,
        name: &LowerName,
        qtype: RecordType,
        original: &Query,
        decision: Decision,
        tried: Option<Tried>,
        now: Instant,
    ) -> (Reply, Report) {
        let policy = &live.policy;
        let Decision { answer, report } = decision;
        let reply = match answer {
            Answer::Refuse(why) => hickory::refused(why),
            Answer::Local => hickory::local(policy, name, qtype),
            Answer::Block(BlockReason::Bypass(rule)) => hickory::bypass(policy, name, rule),
            Answer::Block(BlockReason::List | BlockReason::Cloaking) => {
                hickory::blocked(policy, name, qtype, &report.verdict)
            }
            Answer::Block(BlockReason::Rebind) => hickory::rebind(policy, name, qtype),
            Answer::MinimalAny => hickory::minimal_any(name),
            Answer::Ddr => match &live.ddr {
                Some(ddr) => ddr.reply(name, qtype, policy.blocking.ttl),
                // A reload turned DDR off between decision and answer: the defence.
                None => hickory::bypass(policy, name, super::decision::Bypass::NoData),
            },
            Answer::Cached(entry) => hickory::cached(&entry, now, false),
            Answer::Forward { stale, route } => {
                return self
                    .forward(
                        live, client, name, qtype, original, stale, route, tried, report, now,
                    )
                    .await;
            }
        };
        (reply, report)
    }

    /// Step 4's second half: the upstreams (or the `[[forward]]` zone's servers), else the
    /// stale entry, else SERVFAIL; the answer's targets checked for this client (CNAME
    /// cloaking), and its addresses for rebinding.
    #[allow(clippy::too_many_arguments)]
    async fn forward(
        &self,
        live: &Live,
        client: &Identity,
        name: &LowerName,
        qtype: RecordType,
        original: &Query,
        stale: Option<Arc<Entry>>,
        route: Route,
        tried: Option<Tried>,
        mut report: Report,
        now: Instant,
    ) -> (Reply, Report) {
        let asked = tried.map_or_else(Instant::now, |_| now);
        let upstreams = match route {
            Route::Upstreams => &self.inner.upstreams,
            Route::Zone(id) => live.forwards.servers(id),
        };
        let forwarded = upstreams
            .forward_after(original, live.upstream.strategy, tried)
            .await;
        report.upstream_time = Some(asked.elapsed());
        let (judged, report) = self.judge(
            live,
            client,
            &QName::Name(name),
            stale,
            route,
            forwarded.map(|answer| self.store(&QName::Name(name), qtype, answer, None)),
            report,
        );
        let reply = reply_for(&live.policy, name, qtype, judged, &report, now);
        (reply, report)
    }

    /// What the upstreams' answer (or failure) comes to for this client, both paths alike: a
    /// fresh answer cached (with its targets and rebinding flag) and handed to the addresses
    /// learner, else the stale entry, else the failure; then CNAME cloaking and rebinding
    /// protection.
    /// An upstream's answer to `name`/`qtype`, stored in the cache when it may be: then the
    /// entry's (which has its targets and rebinding flag found already), else kept as it is.
    /// `wire`: its direct encoder's form, when the fast path made it from the upstream's bytes.
    fn store(
        &self,
        name: &QName<'_>,
        qtype: RecordType,
        answer: UpstreamAnswer,
        wire: Option<CachedWire>,
    ) -> Fresh {
        match self.inner.cache.insert_with_wire(name, qtype, answer, wire) {
            Ok(entry) => Fresh::Cached(entry),
            Err(answer) => Fresh::Uncached(answer),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn judge(
        &self,
        live: &Live,
        client: &Identity,
        name: &QName<'_>,
        stale: Option<Arc<Entry>>,
        route: Route,
        forwarded: Result<Fresh, ForwardError>,
        mut report: Report,
    ) -> (Judged, Report) {
        let policy = &live.policy;
        let mut fresh = None;
        let (judged, targets, private) = match forwarded {
            Ok(answer) => {
                let (targets, private) = match &answer {
                    Fresh::Cached(entry) => (entry.targets.clone(), entry.private),
                    Fresh::Uncached(answer) => (
                        cloaking::targets(&answer.answers),
                        rebind::holds_private(&answer.answers),
                    ),
                };
                // Private addresses never join a telemetry set: in nftables drop mode they
                // would cut devices off from the LAN.
                if self.inner.answers.is_some() && !private {
                    fresh = Some(answer.answer().answers.clone());
                }
                report.result = QueryResult::Forwarded;
                (Judged::Fresh(answer), targets, private)
            }
            Err(e) => {
                tracing::debug!(name = %name, error = %e, "forwarding failed");
                let Some(entry) = stale else {
                    report.result = QueryResult::Failed;
                    return (Judged::Failed(e), report);
                };
                report.result = QueryResult::Cached;
                report.cache = Some(CacheStep::Stale);
                let (targets, private) = (entry.targets.clone(), entry.private);
                (Judged::Stale(entry), targets, private)
            }
        };
        let (verdict, action) = cloaking::inspect(
            policy,
            client.policy,
            report.verdict,
            report.action,
            &targets,
        );
        report.verdict = verdict;
        report.action = action;
        if let (Some(observer), Some(records)) = (&self.inner.answers, fresh) {
            observer.answered(&policy.categories, verdict.categories, &records);
        }
        if action == Some(Action::Blocked) {
            report.result = QueryResult::Blocked;
            return (Judged::Blocked, report);
        }
        if private && rebind_applies(live, route != Route::Upstreams, &verdict) {
            let d = Decision::rebind(policy, verdict, report.cache);
            report.verdict = d.report.verdict;
            report.action = d.report.action;
            report.result = QueryResult::Blocked;
            return (Judged::Rebind, report);
        }
        (judged, report)
    }
}

/// What a forwarded query's answer is, before either encoder writes it.
enum Judged {
    /// The upstream's answer.
    Fresh(Fresh),
    /// Every upstream failed; the stale entry is served.
    Stale(Arc<Entry>),
    /// Every upstream failed, and nothing stale: SERVFAIL.
    Failed(ForwardError),
    /// CNAME cloaking: a target is blocked for this client (the report's verdict says why).
    Blocked,
    /// Rebinding protection: a private address for a public name.
    Rebind,
}

/// An upstream's fresh answer, in its cache entry when it was cached.
enum Fresh {
    Cached(Arc<Entry>),
    /// Not cached (caching off, TTL 0, ...).
    Uncached(UpstreamAnswer),
}

impl Fresh {
    fn answer(&self) -> &UpstreamAnswer {
        match self {
            Fresh::Cached(entry) => entry.answer(),
            Fresh::Uncached(answer) => answer,
        }
    }

    /// The cache entry's wire form (the direct encoder's), when there is one.
    fn wire(&self) -> Option<&CachedWire> {
        match self {
            Fresh::Cached(entry) => entry.wire.as_ref(),
            Fresh::Uncached(_) => None,
        }
    }
}

/// The general encoder's reply for what [`Handler::judge`] decided.
fn reply_for(
    policy: &Policy,
    name: &LowerName,
    qtype: RecordType,
    judged: Judged,
    report: &Report,
    now: Instant,
) -> Reply {
    match judged {
        Judged::Fresh(Fresh::Cached(entry)) => hickory::forwarded(entry.answer().clone()),
        Judged::Fresh(Fresh::Uncached(answer)) => hickory::forwarded(answer),
        Judged::Stale(entry) => hickory::cached(&entry, now, true),
        Judged::Failed(e) => hickory::servfail(&e),
        Judged::Blocked => hickory::blocked(policy, name, qtype, &report.verdict),
        Judged::Rebind => hickory::rebind(policy, name, qtype),
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        let origin = Origin::plain(request.protocol());
        self.answer_request(request, response_handle, None, &origin)
            .await
    }
}
