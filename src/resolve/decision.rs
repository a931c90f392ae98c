//! The decision: what a query gets, as a pure function of the live state (policy and access
//! rules), the cache, the client and the question. Both paths call [`decide`]; only the
//! encoders differ.
//!
//! The steps, in their one order (SPEC "How a query is answered"):
//!
//! 1. access: a client outside `allow_networks` is refused. (The rate limit, step 1's other
//!    half, takes a token: it is applied once, after the decision, by `Handler::admit`. Its
//!    REFUSED replaces whatever was decided, which is the same as checking it first, since the
//!    decision has no effect.)
//! 2. local: `[[record]]`s, special-use names, private reverse zones (a `[[forward]]` zone
//!    wins over the last two).
//! 3. policy: bypass defences, then the lists and the client's group; a block ends here.
//!    Then `ANY` gets its minimal answer (RFC 8482), never forwarded.
//! 4. cache: a fresh answer, its CNAME/HTTPS targets re-checked for this client
//!    ([`cloaking`](super::cloaking)) and for rebinding ([`super::rebind`]); else forward, to
//!    the upstreams or the `[[forward]]` zone's servers (with the stale entry, if there is one,
//!    for when every upstream fails).
//!
//! The decision carries its [`Report`]: what metrics and the query log will get. A forward's
//! report is completed when the upstream answers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::rr::{LowerName, RecordType};

use super::answer::Sinkhole;
use super::cache::{wire_name, AnswerCache, CacheStep, Entry, Lookup};
use super::cloaking;
use super::forward::Route;
use super::identity::Identity;
use super::wire::{WireQuery, MAX_NAME};
use super::{Live, RebindProtection};
use crate::observe::events::QueryResult;
use crate::policy::category::Action;
use crate::policy::local::Coverage;
use crate::policy::matcher::NameHashes;
use crate::policy::BlockMode;
use crate::policy::Verdict;

/// The question as the decision reads it, from either path's decoder.
pub struct Question<'a> {
    /// Lower-case name without the trailing dot: for the lists' regexes, bypass names, events.
    pub text: &'a str,
    pub qtype: RecordType,
    /// The name's suffix hashes, computed once for the local zones and the lists (by the caller,
    /// in place: they are a kilobyte, not worth a copy on the hot path).
    hashes: &'a NameHashes,
    name: QuestionName<'a>,
}

/// Where the name came from: the cache key is made from it only when the cache is asked.
enum QuestionName<'a> {
    Wire(&'a WireQuery<'a>),
    Hickory(&'a LowerName),
}

impl<'a> Question<'a> {
    /// A question read by the direct path; `hashes` are `NameHashes::new(q.labels())`.
    pub fn from_wire(q: &'a WireQuery<'a>, hashes: &'a NameHashes) -> Question<'a> {
        Question {
            text: q.text(),
            qtype: q.qtype,
            hashes,
            name: QuestionName::Wire(q),
        }
    }

    /// A question decoded by hickory; `text` is `name` as [`super::wire::dotted`] writes it,
    /// `hashes` are `NameHashes::new(name.iter())`.
    pub fn from_name(
        name: &'a LowerName,
        text: &'a str,
        qtype: RecordType,
        hashes: &'a NameHashes,
    ) -> Question<'a> {
        Question {
            text,
            qtype,
            hashes,
            name: QuestionName::Hickory(name),
        }
    }

    /// The name in lower-case wire format: the cache key.
    fn cache_key<'b>(&self, buf: &'b mut [u8; MAX_NAME]) -> &'b [u8] {
        match self.name {
            QuestionName::Wire(q) => q.lower_name(buf),
            QuestionName::Hickory(n) => wire_name(n, buf),
        }
    }
}

/// Why a query is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The source address is outside `allow_networks`.
    NotAllowed,
    /// Over `rate_limit_qps`.
    RateLimited,
}

impl Refusal {
    /// The Extended DNS Error text (info code 18, Prohibited).
    pub fn text(self) -> &'static str {
        match self {
            Refusal::NotAllowed => "client not in allow_networks",
            Refusal::RateLimited => "rate limited",
        }
    }
}

/// Names that devices use to detect or route around a filtering resolver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bypass {
    NxDomain,
    NoData,
}

/// The bypass defence for `name` (lower case, no trailing dot), if it is one of those names.
pub fn bypass_rule(name: &str) -> Option<Bypass> {
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

/// Why a query is blocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockReason {
    /// A list names the question, and the client's group blocks its category.
    List,
    /// A bypass defence (category `bypass`).
    Bypass(Bypass),
    /// The question was allowed, but its answer's CNAME/HTTPS target is blocked.
    Cloaking,
    /// A public name answered with a private address (category `rebind`, [`super::rebind`]).
    Rebind,
}

/// What the query gets.
#[derive(Debug, Clone)]
pub enum Answer {
    /// REFUSED.
    Refuse(Refusal),
    /// Answered from the local zones (authoritative).
    Local,
    /// The sinkhole answer (or the bypass defence's).
    Block(BlockReason),
    /// `ANY`: one synthesized HINFO (RFC 8482).
    MinimalAny,
    /// `_dns.resolver.arpa`: this server's DoT and DoH ([`super::ddr`]).
    Ddr,
    /// A fresh cached answer.
    Cached(Arc<Entry>),
    /// Ask the upstreams (or a `[[forward]]`'s servers: `route`); `stale` is served if they
    /// all fail.
    Forward {
        stale: Option<Arc<Entry>>,
        route: Route,
    },
}

/// What metrics and the query log get about a query.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    pub result: QueryResult,
    /// What the lists said (with the answer's CNAME chain, when it matched).
    pub verdict: Verdict,
    /// What the client's group did about it.
    pub action: Option<Action>,
    /// What the cache step saw; `None` when the query did not reach it.
    pub cache: Option<CacheStep>,
    /// Time spent waiting for the upstreams.
    pub upstream_time: Option<Duration>,
}

impl Report {
    fn new(result: QueryResult, verdict: Verdict, action: Option<Action>) -> Report {
        Report {
            result,
            verdict,
            action,
            cache: None,
            upstream_time: None,
        }
    }
}

/// An answer and its report.
#[derive(Debug, Clone)]
pub struct Decision {
    pub answer: Answer,
    pub report: Report,
}

impl Decision {
    pub fn refused(why: Refusal) -> Decision {
        Decision {
            answer: Answer::Refuse(why),
            report: Report::new(QueryResult::Refused, Verdict::default(), None),
        }
    }

    fn block(reason: BlockReason, verdict: Verdict, cache: Option<CacheStep>) -> Decision {
        let mut report = Report::new(QueryResult::Blocked, verdict, Some(Action::Blocked));
        report.cache = cache;
        Decision {
            answer: Answer::Block(reason),
            report,
        }
    }

    /// The block answer of rebinding protection, counted under category `rebind`.
    pub fn rebind(
        policy: &crate::policy::Policy,
        mut verdict: Verdict,
        cache: Option<CacheStep>,
    ) -> Decision {
        verdict.categories.insert(policy.rebind);
        Decision::block(BlockReason::Rebind, verdict, cache)
    }

    pub fn is_refusal(&self) -> bool {
        matches!(self.answer, Answer::Refuse(_))
    }
}

/// The sinkhole answer of a block mode: the configuration converted for the encoders.
pub fn sinkhole(mode: BlockMode) -> Sinkhole {
    match mode {
        BlockMode::Null => Sinkhole::Null,
        BlockMode::Nxdomain => Sinkhole::NxDomain,
        BlockMode::Refused => Sinkhole::Refused,
    }
}

/// Decides what `client` gets for `q` (see the module doc for the steps). No effect: the cache
/// is read, never written; no rate-limit token is taken. Inlined into both paths: on the direct
/// path the decision is then built in place and its answer matched without a copy (callgrind:
/// ~4 % of a blocked query otherwise).
#[inline(always)]
pub fn decide(
    live: &Live,
    cache: &AnswerCache,
    client: &Identity,
    q: &Question<'_>,
    now: Instant,
) -> Decision {
    // 1. Access.
    if !live.access.admits(client.addr()) {
        return Decision::refused(Refusal::NotAllowed);
    }
    let policy = &live.policy;
    // 2. Local names; a `[[forward]]` wins over the built-in zones, a `[[record]]` over both.
    let zone = live.forwards.zone(q.hashes);
    let local = match policy.local.coverage(q.hashes) {
        Coverage::None => false,
        Coverage::BuiltIn => zone.is_none(),
        Coverage::Record => true,
    };
    if local {
        return Decision {
            answer: Answer::Local,
            report: Report::new(QueryResult::Local, Verdict::default(), None),
        };
    }
    // 3. The policy.
    let mut verdict = policy.classify_hashed(q.hashes, Some(q.text.as_bytes()));
    if live.ddr.is_some() && q.text == super::ddr::NAME {
        return Decision {
            answer: Answer::Ddr,
            report: Report::new(QueryResult::Local, verdict, None),
        };
    }
    if let Some(rule) = bypass_rule(q.text) {
        if !verdict.exception {
            verdict.categories.insert(policy.bypass);
            return Decision::block(BlockReason::Bypass(rule), verdict, None);
        }
    }
    let action = policy.action(client.policy, &verdict);
    if action == Some(Action::Blocked) {
        return Decision::block(BlockReason::List, verdict, None);
    }
    if q.qtype == RecordType::ANY {
        return Decision {
            answer: Answer::MinimalAny,
            report: Report::new(QueryResult::Local, verdict, action),
        };
    }
    // 4. The cache.
    let mut key = [0u8; MAX_NAME];
    let stale = match cache.get_wire(q.cache_key(&mut key), q.qtype, now) {
        Lookup::Fresh(entry) => {
            let (verdict, action) =
                cloaking::inspect(policy, client.policy, verdict, action, &entry.targets);
            if action == Some(Action::Blocked) {
                return Decision::block(BlockReason::Cloaking, verdict, Some(CacheStep::Hit));
            }
            if entry.private && rebind_applies(live, zone.is_some(), &verdict) {
                return Decision::rebind(policy, verdict, Some(CacheStep::Hit));
            }
            let mut report = Report::new(QueryResult::Cached, verdict, action);
            report.cache = Some(CacheStep::Hit);
            return Decision {
                answer: Answer::Cached(entry),
                report,
            };
        }
        Lookup::Stale(entry) => Some(entry),
        Lookup::Miss => None,
    };
    let mut report = Report::new(QueryResult::Forwarded, verdict, action);
    report.cache = Some(CacheStep::Miss);
    Decision {
        answer: Answer::Forward {
            stale,
            route: zone.map_or(Route::Upstreams, Route::Zone),
        },
        report,
    }
}

/// Whether rebinding protection applies to an answer holding a private address: it is on, and
/// the name is neither under a `[[forward]]` (`forwarded`) nor an `[allow]` exception.
#[inline]
pub fn rebind_applies(live: &Live, forwarded: bool, verdict: &Verdict) -> bool {
    live.upstream.rebind == RebindProtection::On && !forwarded && !verdict.exception
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::str::FromStr;

    use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
    use hickory_proto::rr::rdata::CNAME;
    use hickory_proto::rr::{Name, RData, Record};

    use super::*;
    use crate::lists::{Format, ListSource, ListSpec};
    use crate::policy::local::{LocalRecord, RecordKind, RecordValue};
    use crate::policy::{BlockSettings, Policy, PolicySpec};
    use crate::resolve::access::Access;
    use crate::resolve::identity::identify;
    use crate::resolve::upstream::UpstreamAnswer;

    /// Built from the policy's own inputs, as the config's edge would convert them: one block
    /// list, one allowed name, one local record, a rate limit of 1 query a second.
    fn live() -> Live {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("vendor.txt");
        std::fs::write(&list, "tracking.vendor.example\nvendor.home.arpa\n").unwrap();
        let spec = PolicySpec {
            categories: vec!["telemetry".into(), crate::policy::category::BYPASS.into()],
            lists: vec![ListSpec {
                name: "vendor".into(),
                source: ListSource::File(list),
                categories: vec!["telemetry".into()],
                format: Format::Auto,
                subdomains: true,
                refresh: std::time::Duration::from_secs(86400),
            }],
            allow_lists: Vec::new(),
            allow_domains: vec!["mask.icloud.com".into()],
            clients: Vec::new(),
            groups: Vec::new(),
            default_block: vec!["telemetry".into()],
            default_observe: Vec::new(),
            blocking: BlockSettings {
                mode: BlockMode::Null,
                ttl: 10,
            },
            records: vec![LocalRecord {
                name: "tracking.vendor.home.arpa".into(),
                rtype: RecordKind::A,
                value: RecordValue::A(Ipv4Addr::new(192, 168, 1, 10)),
                ttl: 300,
            }],
            state_dir: dir.path().to_path_buf(),
        };
        Live {
            policy: Policy::build(&spec).unwrap(),
            access: Access::new(vec!["127.0.0.0/8".parse().unwrap()], 1, 1, None),
            forwards: Default::default(),
            upstream: Default::default(),
            ddr: None,
        }
    }

    fn a(owner: &str, ttl: u32) -> Record {
        Record::from_rdata(
            Name::from_ascii(owner).unwrap(),
            ttl,
            RData::A(Ipv4Addr::new(192, 0, 2, 1).into()),
        )
    }

    fn put(cache: &AnswerCache, name: &str, answers: Vec<Record>) {
        let answer = UpstreamAnswer {
            rcode: ResponseCode::NoError,
            answers,
            authorities: vec![],
            additionals: vec![],
            negative_ttl: None,
            validation: crate::resolve::dnssec::Validation::Off,
        };
        cache.insert(&LowerName::from_str(name).unwrap(), RecordType::A, answer);
    }

    /// Decides `name`/`qtype` for `from`, reading the question as the general path does, and
    /// checks that the direct path's reading gives the same decision.
    fn ask(
        live: &Live,
        cache: &AnswerCache,
        from: &str,
        name: &str,
        qtype: RecordType,
        now: Instant,
    ) -> Decision {
        let client = identify(
            live,
            &crate::devices::Devices::disabled(),
            from.parse::<IpAddr>().unwrap(),
        );
        let lower = LowerName::from_str(name).unwrap();
        let mut buf = [0u8; 256];
        let text = super::super::wire::dotted(&Name::from(lower.clone()), &mut buf);
        let hashes = NameHashes::new(lower.iter());
        let general = decide(
            live,
            cache,
            &client,
            &Question::from_name(&lower, text, qtype, &hashes),
            now,
        );
        let mut m = Message::new(1, MessageType::Query, OpCode::Query);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        let bytes = m.to_vec().unwrap();
        let q = WireQuery::parse(&bytes).expect("common shape");
        let hashes = NameHashes::new(q.labels());
        let direct = decide(live, cache, &client, &Question::from_wire(&q, &hashes), now);
        assert_eq!(
            format!("{direct:?}"),
            format!("{general:?}"),
            "{name} {qtype}"
        );
        general
    }

    #[test]
    fn steps_come_in_their_order() {
        let live = live();
        let cache = AnswerCache::new(10, Duration::from_secs(60));
        let now = Instant::now();
        // 1. Access first: outside allow_networks, even a local or a blocked name is refused.
        for name in ["tracking.vendor.home.arpa.", "tracking.vendor.example."] {
            let d = ask(&live, &cache, "10.0.0.1", name, RecordType::A, now);
            assert!(
                matches!(d.answer, Answer::Refuse(Refusal::NotAllowed)),
                "{d:?}"
            );
            assert_eq!(d.report.result, QueryResult::Refused);
        }
        // 2. Local before the policy: a record under a listed name is answered locally.
        let d = ask(
            &live,
            &cache,
            "127.0.0.1",
            "tracking.vendor.home.arpa.",
            RecordType::A,
            now,
        );
        assert!(matches!(d.answer, Answer::Local), "{d:?}");
        // 3. The policy: a block ends the query before the cache.
        let d = ask(
            &live,
            &cache,
            "127.0.0.1",
            "x.tracking.vendor.example.",
            RecordType::ANY,
            now,
        );
        assert!(
            matches!(d.answer, Answer::Block(BlockReason::List)),
            "{d:?}"
        );
        assert_eq!(d.report.action, Some(Action::Blocked));
        assert!(d.report.verdict.list.is_some() && d.report.cache.is_none());
        // Bypass defences, unless an allow exception names them.
        let d = ask(
            &live,
            &cache,
            "127.0.0.1",
            "use-application-dns.net.",
            RecordType::A,
            now,
        );
        assert!(matches!(
            d.answer,
            Answer::Block(BlockReason::Bypass(Bypass::NxDomain))
        ));
        assert!(d.report.verdict.categories.contains(live.policy.bypass));
        let d = ask(
            &live,
            &cache,
            "127.0.0.1",
            "mask.icloud.com.",
            RecordType::A,
            now,
        );
        assert!(
            matches!(d.answer, Answer::Forward { stale: None, .. }),
            "{d:?}"
        );
        assert_eq!(d.report.action, Some(Action::Allowed));
        // ANY for an allowed name: the minimal answer, not the cache.
        let d = ask(
            &live,
            &cache,
            "127.0.0.1",
            "other.example.",
            RecordType::ANY,
            now,
        );
        assert!(matches!(d.answer, Answer::MinimalAny));
        assert_eq!(
            (d.report.result, d.report.cache),
            (QueryResult::Local, None)
        );
    }

    #[test]
    fn the_cache_step_sees_fresh_stale_and_missing_answers() {
        let live = live();
        let cache = AnswerCache::new(10, Duration::from_secs(60));
        put(&cache, "www.example.", vec![a("www.example.", 10)]);
        let now = Instant::now();
        let d = ask(
            &live,
            &cache,
            "127.0.0.1",
            "WWW.example.",
            RecordType::A,
            now,
        );
        assert!(matches!(d.answer, Answer::Cached(_)), "{d:?}");
        assert_eq!(
            (d.report.result, d.report.cache),
            (QueryResult::Cached, Some(CacheStep::Hit))
        );
        let later = now + Duration::from_secs(30);
        let d = ask(
            &live,
            &cache,
            "127.0.0.1",
            "www.example.",
            RecordType::A,
            later,
        );
        assert!(
            matches!(d.answer, Answer::Forward { stale: Some(_), .. }),
            "{d:?}"
        );
        assert_eq!(d.report.cache, Some(CacheStep::Miss));
        let d = ask(
            &live,
            &cache,
            "127.0.0.1",
            "new.example.",
            RecordType::A,
            now,
        );
        assert!(
            matches!(d.answer, Answer::Forward { stale: None, .. }),
            "{d:?}"
        );
        assert_eq!(
            (d.report.result, d.report.cache),
            (QueryResult::Forwarded, Some(CacheStep::Miss))
        );
    }

    #[test]
    fn a_cached_cname_to_a_blocked_name_is_a_cloaking_block_and_a_hit() {
        let live = live();
        let cache = AnswerCache::new(10, Duration::from_secs(60));
        let target = Name::from_ascii("Tracking.Vendor.example.").unwrap();
        put(
            &cache,
            "innocent.example.",
            vec![
                Record::from_rdata(
                    Name::from_ascii("innocent.example.").unwrap(),
                    300,
                    RData::CNAME(CNAME(target)),
                ),
                a("tracking.vendor.example.", 300),
            ],
        );
        let d = ask(
            &live,
            &cache,
            "127.0.0.1",
            "innocent.example.",
            RecordType::A,
            Instant::now(),
        );
        assert!(
            matches!(d.answer, Answer::Block(BlockReason::Cloaking)),
            "{d:?}"
        );
        assert_eq!(d.report.result, QueryResult::Blocked);
        assert_eq!(d.report.cache, Some(CacheStep::Hit));
        assert!(!d.report.verdict.categories.is_empty());
    }

    #[tokio::test]
    async fn a_forward_zone_routes_and_beats_built_in_zones_and_rebinding() {
        use crate::resolve::forward::{ForwardSpec, ForwardTable, Route};
        let mut live = live();
        live.forwards = ForwardTable::build(
            &[ForwardSpec {
                domains: vec!["home.arpa".into(), "fritz.box".into()],
                servers: vec![crate::resolve::upstream::Upstream::Plain(
                    "192.168.178.1:53".parse().unwrap(),
                )],
            }],
            Duration::from_secs(1),
            None,
        )
        .unwrap();
        let cache = AnswerCache::new(10, Duration::from_secs(60));
        let now = Instant::now();
        // The built-in zone gives way; the [[record]] does not.
        let d = ask(
            &live,
            &cache,
            "127.0.0.1",
            "tv.home.arpa.",
            RecordType::A,
            now,
        );
        assert!(
            matches!(
                d.answer,
                Answer::Forward {
                    route: Route::Zone(_),
                    ..
                }
            ),
            "{d:?}"
        );
        let d = ask(
            &live,
            &cache,
            "127.0.0.1",
            "tracking.vendor.home.arpa.",
            RecordType::A,
            now,
        );
        assert!(matches!(d.answer, Answer::Local), "{d:?}");
        // Public names go to the upstreams.
        let d = ask(
            &live,
            &cache,
            "127.0.0.1",
            "www.example.",
            RecordType::A,
            now,
        );
        assert!(
            matches!(
                d.answer,
                Answer::Forward {
                    route: Route::Upstreams,
                    ..
                }
            ),
            "{d:?}"
        );
        // A cached private address: blocked for a public name, not for a forwarded one, nor
        // for an [allow] exception, nor with the protection off.
        let private = |owner: &str| {
            Record::from_rdata(
                Name::from_ascii(owner).unwrap(),
                300,
                RData::A(Ipv4Addr::new(192, 168, 1, 1).into()),
            )
        };
        for name in ["evil.example.", "nas.fritz.box.", "mask.icloud.com."] {
            put(&cache, name, vec![private(name)]);
        }
        let d = ask(
            &live,
            &cache,
            "127.0.0.1",
            "evil.example.",
            RecordType::A,
            now,
        );
        assert!(
            matches!(d.answer, Answer::Block(BlockReason::Rebind)),
            "{d:?}"
        );
        assert!(d.report.verdict.categories.contains(live.policy.rebind));
        assert_eq!(d.report.cache, Some(CacheStep::Hit));
        for name in ["nas.fritz.box.", "mask.icloud.com."] {
            let d = ask(&live, &cache, "127.0.0.1", name, RecordType::A, now);
            assert!(matches!(d.answer, Answer::Cached(_)), "{name}: {d:?}");
        }
        live.upstream.rebind = RebindProtection::Off;
        let d = ask(
            &live,
            &cache,
            "127.0.0.1",
            "evil.example.",
            RecordType::A,
            now,
        );
        assert!(matches!(d.answer, Answer::Cached(_)), "{d:?}");
    }

    #[test]
    fn deciding_takes_no_token() {
        let live = live();
        let cache = AnswerCache::new(10, Duration::from_secs(60));
        let now = Instant::now();
        for _ in 0..20 {
            ask(
                &live,
                &cache,
                "127.0.0.5",
                "tracking.vendor.example.",
                RecordType::A,
                now,
            );
        }
        // 1 qps, burst 1: the first token is still there, the second is not.
        let me: IpAddr = "127.0.0.5".parse().unwrap();
        assert!(live.access.take_token(me));
        assert!(!live.access.take_token(me));
    }
}
