//! The direct path (`Handler::answer_direct`, bytes in, bytes out) against the general path
//! (`Handler::answer_wire`: hickory's decoder and encoder), on the same handler: for every query
//! the direct path answers, the general path's answer must decode to the same message. Queries it
//! does not answer are passed on with what was decided, and the general path's answer from there
//! is the one it gives from scratch (the rate limiter counts each query once).
//!
//! No network here: the listeners' own tests (dns_core, dns_policy, hardening_e2e) send real
//! datagrams through both paths; this one pins down that the two agree, case by case.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{CNAME, HTTPS, SVCB};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::BinEncoder;
use hickory_server::net::xfer::Protocol;
use hickory_server::net::NetError;
use hickory_server::server::{ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;

use telesink::config::Config;
use telesink::observe::events::{QueryEvent, QuerySink};
use telesink::resolve::cache::AnswerCache;
use telesink::resolve::handler::Pending;
use telesink::resolve::upstream::{UpstreamAnswer, Upstreams};
use telesink::resolve::Handler;

fn config(mode: &str, rate_limit: u32) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:5399"]
allow_networks = ["127.0.0.0/8"]
rate_limit_qps = {rate_limit}

[blocking]
mode = "{mode}"
ttl = 10

[[list]]
name = "vendor"
source = "vendor.txt"
categories = ["telemetry"]

[[list]]
name = "ads"
source = "ads.txt"
categories = ["ads"]

[[client]]
name = "anna-phone"
addresses = ["127.0.0.31"]

[[group]]
name = "phones"
clients = ["anna-phone"]
block = ["telemetry", "ads"]
observe = []

[default]
block = ["telemetry"]
observe = ["ads"]

[[record]]
name = "nas.home.arpa"
type = "A"
value = "192.168.1.10"
"#
    )
}

/// Counts the events the handler hands to its sinks.
#[derive(Default)]
struct Events(Mutex<Vec<String>>);

impl QuerySink for Events {
    fn record(&self, e: &QueryEvent<'_>) {
        self.0.lock().unwrap().push(format!(
            "{} {} {} {:?} {}",
            e.name,
            e.result.as_str(),
            e.action.map_or("-", |a| a.as_str()),
            e.rcode,
            e.categories.len()
        ));
    }
}

fn handler(mode: &str, rate_limit: u32) -> (Handler, Arc<Events>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("vendor.txt"), support::VENDOR_NAMES).unwrap();
    std::fs::write(dir.path().join("ads.txt"), "||ads.example^\n").unwrap();
    let path = dir.path().join("config.toml");
    let config = Config::parse(&config(mode, rate_limit), &path).unwrap();
    let live = telesink::server::live::build_live(&config, None).unwrap();
    let cache = AnswerCache::new(100, Duration::from_secs(3600));
    seed(&cache);
    let upstreams = Upstreams::new(&[], Duration::from_millis(50), None).unwrap();
    let events = Arc::new(Events::default());
    let sinks: Vec<Arc<dyn QuerySink>> = vec![events.clone()];
    let handler = Handler::new(
        Arc::new(ArcSwap::from_pointee(live)),
        cache,
        upstreams,
        sinks,
    );
    (handler, events)
}

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

fn a(owner: &str, ttl: u32) -> Record {
    Record::from_rdata(
        name(owner),
        ttl,
        RData::A(Ipv4Addr::new(192, 0, 2, 1).into()),
    )
}

fn seed(cache: &AnswerCache) {
    let put = |n: &str, t: RecordType, rcode: ResponseCode, answers: Vec<Record>| {
        cache.insert(
            &LowerName::from(name(n)),
            t,
            UpstreamAnswer {
                rcode,
                answers,
                authorities: vec![],
                additionals: vec![],
                negative_ttl: Some(60),
                validation: telesink::resolve::dnssec::Validation::Off,
            },
        );
    };
    put(
        "cached.example.",
        RecordType::A,
        ResponseCode::NoError,
        vec![a("cached.example.", 3600)],
    );
    put(
        "gone.example.",
        RecordType::A,
        ResponseCode::NXDomain,
        vec![],
    );
    // A CNAME to a name the default group only observes (ads) and the phones block.
    put(
        "cloaked.example.",
        RecordType::A,
        ResponseCode::NoError,
        vec![
            Record::from_rdata(
                name("cloaked.example."),
                3600,
                RData::CNAME(CNAME(name("x.ADS.example."))),
            ),
            a("x.ads.example.", 3600),
        ],
    );
    put(
        "svc.example.",
        RecordType::HTTPS,
        ResponseCode::NoError,
        vec![Record::from_rdata(
            name("svc.example."),
            3600,
            RData::HTTPS(HTTPS(SVCB::new(1, name("metrics.vendor.example."), vec![]))),
        )],
    );
    // Too large for 512 bytes: the direct path leaves it to the general one, which truncates.
    put(
        "big.example.",
        RecordType::A,
        ResponseCode::NoError,
        (0..60u8)
            .map(|i| {
                Record::from_rdata(
                    name("big.example."),
                    3600,
                    RData::A(Ipv4Addr::new(198, 18, 0, i).into()),
                )
            })
            .collect(),
    );
}

/// Encodes the general path's answer as the UDP listener does.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Option<Vec<u8>>>>);

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let max = response.edns().map_or(512, |e| e.max_payload().max(512));
        let mut buf = Vec::new();
        let mut encoder = BinEncoder::new(&mut buf);
        encoder.set_max_size(max);
        let info = response.destructive_emit(&mut encoder)?;
        *self.0.lock().unwrap() = Some(buf);
        Ok(info)
    }
}

/// The general path from scratch.
fn general(h: &Handler, bytes: &[u8], src: SocketAddr) -> Vec<u8> {
    general_with(h, bytes, src, None)
}

/// The general path, going on from what the direct path decided (as the listeners do).
fn general_with(
    h: &Handler,
    bytes: &[u8],
    src: SocketAddr,
    pending: Option<Box<Pending>>,
) -> Vec<u8> {
    let capture = Capture::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(h.answer_wire_with(bytes.to_vec(), src, Protocol::Udp, capture.clone(), pending));
    let out = capture.0.lock().unwrap().take();
    out.expect("the general path answers")
}

/// As the UDP listener: the direct path, else the general path with what it decided.
fn listener(h: &Handler, bytes: &[u8], src: SocketAddr) -> Vec<u8> {
    match h.answer_direct(bytes, src, Protocol::Udp) {
        Ok(answer) => answer,
        Err(pending) => general_with(h, bytes, src, pending),
    }
}

fn query(qname: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.metadata.checking_disabled = true;
    m.add_query(Query::query(name(qname), qtype));
    if let Some(p) = edns {
        let mut e = Edns::new();
        e.set_max_payload(p);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

fn src(ip: &str) -> SocketAddr {
    SocketAddr::new(ip.parse::<IpAddr>().unwrap(), 40000)
}

/// The two answers, decoded, are the same message.
fn assert_same(direct: &[u8], general: &[u8], what: &str) {
    let d = Message::from_vec(direct).unwrap_or_else(|e| panic!("{what}: direct: {e}"));
    let g = Message::from_vec(general).unwrap_or_else(|e| panic!("{what}: general: {e}"));
    assert_eq!(d.metadata, g.metadata, "{what}: header");
    assert_eq!(d.queries, g.queries, "{what}: question");
    for (x, y) in d.queries.iter().zip(&g.queries) {
        assert_eq!(x.name().to_ascii(), y.name().to_ascii(), "{what}: case");
    }
    assert_eq!(d.answers, g.answers, "{what}: answers");
    assert_eq!(d.authorities, g.authorities, "{what}: authorities");
    assert_eq!(d.additionals, g.additionals, "{what}: additionals");
    assert_eq!(d.edns, g.edns, "{what}: EDNS");
}

#[test]
fn direct_answers_equal_the_general_path() {
    let cases: &[(&str, RecordType, &str)] = &[
        ("Tracking.Vendor.example.", RecordType::A, "127.0.0.1"),
        ("tracking.vendor.example.", RecordType::AAAA, "127.0.0.1"),
        (
            "deep.metrics.vendor.example.",
            RecordType::HTTPS,
            "127.0.0.1",
        ),
        ("tracking.vendor.example.", RecordType::MX, "127.0.0.31"),
        ("x.ads.example.", RecordType::A, "127.0.0.31"),
        ("CACHED.example.", RecordType::A, "127.0.0.1"),
        ("gone.example.", RecordType::A, "127.0.0.1"),
        // Observed by the default group: the cached answer with the chain's category noted.
        ("cloaked.example.", RecordType::A, "127.0.0.1"),
        // CNAME cloaking: blocked for the phones (ads), and an HTTPS target blocked for all.
        ("cloaked.example.", RecordType::A, "127.0.0.31"),
        ("svc.example.", RecordType::HTTPS, "127.0.0.1"),
        // Outside allow_networks: REFUSED.
        ("tracking.vendor.example.", RecordType::A, "10.1.2.3"),
        ("cached.example.", RecordType::A, "10.1.2.3"),
    ];
    for mode in ["null", "nxdomain", "refused"] {
        let (h, events) = handler(mode, 0);
        for &(qname, qtype, from) in cases {
            for edns in [None, Some(512), Some(4096)] {
                let bytes = query(qname, qtype, edns);
                let what = format!("{mode} {qname} {qtype} from {from} edns {edns:?}");
                let direct = h
                    .answer_direct(&bytes, src(from), Protocol::Udp)
                    .unwrap_or_else(|_| panic!("{what}: the direct path should answer"));
                let general = general(&h, &bytes, src(from));
                assert_same(&direct, &general, &what);
                // Both paths report the same event.
                let ev = events.0.lock().unwrap().split_off(0);
                assert_eq!(ev.len(), 2, "{what}: {ev:?}");
                assert_eq!(ev[0], ev[1], "{what}");
            }
        }
    }
}

#[test]
fn other_queries_are_passed_on_with_their_decision() {
    let (h, events) = handler("null", 0);
    let cases: &[(&str, RecordType, &str)] = &[
        // Local names, bypass names, ANY, a cache miss, a truncated answer.
        ("nas.home.arpa.", RecordType::A, "127.0.0.1"),
        ("use-application-dns.net.", RecordType::A, "127.0.0.1"),
        ("_dns.resolver.arpa.", RecordType::SVCB, "127.0.0.1"),
        ("cached.example.", RecordType::ANY, "127.0.0.1"),
        ("never.example.", RecordType::A, "127.0.0.1"),
        ("big.example.", RecordType::A, "127.0.0.1"),
    ];
    for &(qname, qtype, from) in cases {
        for edns in [None, Some(512)] {
            let what = format!("{qname} {qtype} edns {edns:?}");
            let bytes = query(qname, qtype, edns);
            let pending = match h.answer_direct(&bytes, src(from), Protocol::Udp) {
                Ok(_) => panic!("{what}: the direct path should pass it on"),
                Err(pending) => pending.expect("a query of the common shape was decided"),
            };
            assert!(
                events.0.lock().unwrap().is_empty(),
                "{what}: nothing recorded for queries the direct path passes on"
            );
            // Going on from the decision gives what the general path gives from scratch.
            let passed = general_with(&h, &bytes, src(from), Some(pending));
            let fresh = general(&h, &bytes, src(from));
            assert_same(&passed, &fresh, &what);
            let ev = events.0.lock().unwrap().split_off(0);
            assert_eq!(ev.len(), 2, "{what}: {ev:?}");
            assert_eq!(ev[0], ev[1], "{what}");
        }
    }
    // A query not of the common shape (a second question) is passed on undecided.
    let mut two = query("cached.example.", RecordType::A, None);
    two[5] = 2;
    let question = two[12..].to_vec();
    two.extend_from_slice(&question);
    assert!(matches!(
        h.answer_direct(&two, src("127.0.0.1"), Protocol::Udp),
        Err(None)
    ));
    // The big answer fits over TCP.
    let big = query("big.example.", RecordType::A, None);
    assert!(h
        .answer_direct(&big, src("127.0.0.1"), Protocol::Tcp)
        .is_ok());
}

#[test]
fn rate_limit_counts_a_query_once_whichever_path_answers() {
    // 1 qps with a burst of 2 (the default burst is twice the rate): two queries pass, the
    // third is refused, whether the first two took the direct path or were passed on.
    let (h, events) = handler("null", 1);
    let miss = query("never.example.", RecordType::A, None);
    let big = query("big.example.", RecordType::A, None);
    let blocked = query("tracking.vendor.example.", RecordType::A, None);
    let from = src("127.0.0.9");
    // A cache miss, passed on to the general path with its decision.
    let first = Message::from_vec(&listener(&h, &miss, from)).unwrap();
    assert_ne!(first.metadata.response_code, ResponseCode::Refused);
    // A cached answer too big for the direct encoder over UDP: also passed on.
    let second = Message::from_vec(&listener(&h, &big, from)).unwrap();
    assert_ne!(second.metadata.response_code, ResponseCode::Refused);
    assert!(second.metadata.truncation, "truncated by the general path");
    let third = h.answer_direct(&blocked, from, Protocol::Udp).unwrap();
    let third = Message::from_vec(&third).unwrap();
    assert_eq!(third.metadata.response_code, ResponseCode::Refused);
    assert_eq!(third.answers.len(), 0, "refused, not blocked");
    // Another client has its own bucket; each query was recorded once.
    let other = h
        .answer_direct(&blocked, src("127.0.0.10"), Protocol::Udp)
        .unwrap();
    assert_eq!(Message::from_vec(&other).unwrap().answers.len(), 1);
    let ev = events.0.lock().unwrap().split_off(0);
    assert_eq!(ev.len(), 4, "{ev:?}");
    assert!(ev[2].contains(" refused "), "{ev:?}");
}
