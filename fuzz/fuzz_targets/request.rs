//! Arbitrary bytes → the whole request path, as the UDP and TCP listeners run it: first
//! `Handler::answer_direct` (bytes to bytes: identity, decision, direct encoder), and when it
//! passes the query on, `Handler::answer_wire_with` with what it decided (hickory's decoder, the
//! general encoder, forward, CNAME/HTTPS inspection, EDNS/EDE, metrics; FORMERR when only the
//! header is readable). The answer, if any, must decode as a DNS response with the query's ID,
//! and over UDP fit the size the query allows.
//!
//! Differential, both ways: an answer of the direct encoder must equal the general path's from
//! scratch (`Handler::answer_wire`), and so must the general path's answer when it goes on from
//! the direct path's decision (the decision is made once, whichever encoder writes it).
//!
//! No network: the handler has no upstream (`forward` fails at once, so allowed names that are
//! not cached get SERVFAIL or a stale answer). The cache is seeded with answers whose CNAME and
//! HTTPS targets are blocked, and with 1-second entries that go stale while the fuzzer runs.
//!
//! Input: byte 0 picks the transport (bit 0), the source address (bits 1-3) and the block mode
//! (bits 4-5); the rest is the DNS message.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_proto::op::{Header, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{CNAME, HTTPS, SVCB};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
use hickory_server::net::xfer::Protocol;
use hickory_server::net::NetError;
use hickory_server::server::{ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use libfuzzer_sys::fuzz_target;

use telesink::config::Config;
use telesink::observe::events::QuerySink;
use telesink::observe::metrics::Metrics;
use telesink::resolve::cache::AnswerCache;
use telesink::resolve::handler::Pending;
use telesink::resolve::upstream::{UpstreamAnswer, Upstreams};
use telesink::resolve::Handler;

const LIST: &str = "\
tracking.vendor.example
metrics.vendor.example
||ads.example^
/^beacon[0-9]+\\.example$/
@@||ok.ads.example^
";

fn config_text(mode: &str) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:5399"]
allow_networks = ["127.0.0.0/8", "::1/128"]
rate_limit_qps = 0

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
format = "auto"

[allow]
domains = ["allowed.vendor.example"]

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

[[record]]
name = "www.home.arpa"
type = "CNAME"
value = "nas.home.arpa"

[[record]]
name = "nas.home.arpa"
type = "TXT"
value = "hello"
"#
    )
}

struct World {
    rt: tokio::runtime::Runtime,
    handlers: Vec<Handler>,
}

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

fn seed_cache(cache: &AnswerCache) {
    let a = |n: &str, ttl: u32| {
        Record::from_rdata(name(n), ttl, RData::A(Ipv4Addr::new(192, 0, 2, 1).into()))
    };
    let put = |n: &str, t: RecordType, answers: Vec<Record>| {
        cache.insert(
            &LowerName::from(name(n)),
            t,
            UpstreamAnswer {
                rcode: ResponseCode::NoError,
                answers,
                authorities: vec![],
                additionals: vec![],
                negative_ttl: None,
                validation: telesink::resolve::dnssec::Validation::Off,
            },
        );
    };
    put(
        "cached.example.",
        RecordType::A,
        vec![a("cached.example.", 3600)],
    );
    // Goes stale a second in, then is served with EDE 3 (no upstream answers).
    put(
        "stale.example.",
        RecordType::A,
        vec![a("stale.example.", 1)],
    );
    put(
        "cloaked.example.",
        RecordType::A,
        vec![
            Record::from_rdata(
                name("cloaked.example."),
                3600,
                RData::CNAME(CNAME(name("tracking.vendor.example."))),
            ),
            a("tracking.vendor.example.", 3600),
        ],
    );
    put(
        "svc.example.",
        RecordType::HTTPS,
        vec![Record::from_rdata(
            name("svc.example."),
            3600,
            RData::HTTPS(HTTPS(SVCB::new(1, name("ads.example."), vec![]))),
        )],
    );
    put(
        "big.example.",
        RecordType::A,
        (0..80u8)
            .map(|i| {
                Record::from_rdata(
                    name("big.example."),
                    3600,
                    RData::A(Ipv4Addr::new(198, 18, 0, i).into()),
                )
            })
            .collect(),
    );
    cache.insert(
        &LowerName::from(name("gone.example.")),
        RecordType::A,
        UpstreamAnswer {
            rcode: ResponseCode::NXDomain,
            answers: vec![],
            authorities: vec![],
            additionals: vec![],
            negative_ttl: Some(60),
            validation: telesink::resolve::dnssec::Validation::Off,
        },
    );
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let dir: PathBuf =
            std::env::temp_dir().join(format!("telesink-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("vendor.txt"), LIST).unwrap();
        std::fs::write(dir.join("ads.txt"), LIST).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let metrics = Arc::new(Metrics::new(16));
        let handlers = ["null", "nxdomain", "refused", "null"]
            .iter()
            .map(|mode| {
                let path = dir.join("config.toml");
                let config = Config::parse(&config_text(mode), &path).expect("fuzz config");
                let live = telesink::server::live::build_live(&config, None).expect("fuzz policy");
                let cache = AnswerCache::new(1000, Duration::from_secs(86_400));
                seed_cache(&cache);
                let upstreams = Upstreams::new(&[], Duration::from_millis(50), None).unwrap();
                let sinks: Vec<Arc<dyn QuerySink>> = vec![metrics.clone()];
                Handler::new(
                    Arc::new(ArcSwap::from_pointee(live)),
                    cache,
                    upstreams,
                    sinks,
                )
            })
            .collect();
        let _ = std::fs::remove_dir_all(&dir);
        World { rt, handlers }
    })
}

/// Encodes the answer the way the listeners do and keeps the bytes.
#[derive(Clone)]
struct Capture {
    udp: bool,
    out: Arc<Mutex<Vec<Vec<u8>>>>,
}

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
        // As `udp::UdpResponder` (and hickory's TCP response handle): over UDP the OPT's
        // payload size (512 without EDNS) bounds the encoding, past it records are dropped and
        // TC is set; over TCP the bound is 65535. An answer that cannot be encoded becomes a
        // bare SERVFAIL header.
        let max = if self.udp {
            response.edns().map_or(512, |e| e.max_payload().max(512))
        } else {
            u16::MAX
        };
        let id = response.metadata().id;
        let mut buf = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut buf);
        encoder.set_max_size(max);
        let info = match response.destructive_emit(&mut encoder) {
            Ok(info) => info,
            Err(_) => {
                buf.clear();
                let mut metadata = Metadata::new(id, MessageType::Response, OpCode::Query);
                metadata.response_code = ResponseCode::ServFail;
                let header = Header {
                    metadata,
                    counts: Default::default(),
                };
                header
                    .emit(&mut BinEncoder::new(&mut buf))
                    .map_err(NetError::from)?;
                ResponseInfo::from(header)
            }
        };
        assert!(buf.len() <= max as usize, "{} > {max}", buf.len());
        self.out.lock().unwrap().push(buf);
        Ok(info)
    }
}

const SOURCES: [&str; 8] = [
    "127.0.0.1",
    "127.0.0.31",
    "10.9.9.9",
    "::1",
    "::ffff:127.0.0.31",
    "127.0.0.2",
    "2001:db8::1",
    "127.0.0.31",
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, msg)) = data.split_first() else {
        return;
    };
    let w = world();
    let udp = sel & 1 == 0;
    let ip: IpAddr = SOURCES[((sel >> 1) & 7) as usize].parse().unwrap();
    let src = SocketAddr::new(ip, 40000);
    let handler = &w.handlers[((sel >> 4) & 3) as usize];
    let capture = Capture {
        udp,
        out: Arc::new(Mutex::new(Vec::new())),
    };
    let protocol = if udp { Protocol::Udp } else { Protocol::Tcp };

    let query_id = (msg.len() >= 2).then(|| u16::from_be_bytes([msg[0], msg[1]]));
    // `stale.example` turns stale a second in: a query at that instant may be fresh for one
    // run and stale for the other, so its answers are not compared.
    let stale = msg.windows(5).any(|w| w.eq_ignore_ascii_case(b"stale"));
    // The general path from scratch: the reference (rate limits are off here, so running the
    // query twice changes nothing).
    let reference = || {
        let reference = Capture {
            udp,
            out: Arc::new(Mutex::new(Vec::new())),
        };
        general(w, handler, msg, src, protocol, &reference, None);
        let out = reference.out.lock().unwrap().first().cloned();
        out
    };
    // As the listeners: the direct path first (bytes to bytes), then the general one.
    match handler.answer_direct(msg, src, protocol) {
        Ok(out) => {
            if let (Some(general), false) = (reference(), stale) {
                same_message(&out, &general);
            }
            capture.out.lock().unwrap().push(out);
        }
        Err(pending) => {
            let decided = pending.is_some();
            general(w, handler, msg, src, protocol, &capture, pending);
            if decided && !stale {
                let passed = capture.out.lock().unwrap().first().cloned();
                match (passed, reference()) {
                    (Some(passed), Some(general)) => same_message(&passed, &general),
                    (None, None) => {}
                    (p, g) => panic!("passed on: {p:02x?}; from scratch: {g:02x?}"),
                }
            }
        }
    }

    let out = capture.out.lock().unwrap();
    assert!(out.len() <= 1, "one answer per query, got {}", out.len());
    if let Some(bytes) = out.first() {
        let answer = Message::from_vec(bytes).unwrap_or_else(|e| {
            panic!("the answer does not decode ({e}): {bytes:02x?}");
        });
        assert_eq!(Some(answer.metadata.id), query_id, "answer ID = query ID");
        assert_eq!(answer.metadata.message_type, MessageType::Response);
        if udp {
            // What the query allows (hickory's encoder may drop the OPT itself when truncating,
            // so the answer's own OPT cannot say).
            let max = Message::from_vec(msg)
                .ok()
                .and_then(|q| q.edns.map(|e| e.max_payload().clamp(512, 1232)))
                .unwrap_or(512);
            assert!(bytes.len() <= max as usize, "{} > {max}", bytes.len());
        }
    }
});

/// The general path as the listeners run it: hickory's decoder (FORMERR when only the header
/// is readable, silence for responses), the decision (or `pending`'s), hickory's encoder.
fn general(
    w: &World,
    handler: &Handler,
    msg: &[u8],
    src: SocketAddr,
    protocol: Protocol,
    capture: &Capture,
    pending: Option<Box<Pending>>,
) {
    let fut = handler.answer_wire_with(msg.to_vec(), src, protocol, capture.clone(), pending);
    w.rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), fut).await })
        .expect("no upstream: every query must finish at once");
}

/// The direct and the general answer decode to the same message.
fn same_message(direct: &[u8], general: &[u8]) {
    let d = Message::from_vec(direct).expect("the direct answer decodes");
    let g = Message::from_vec(general).expect("the general answer decodes");
    assert_eq!(d.metadata, g.metadata, "header");
    assert_eq!(d.queries, g.queries, "question");
    assert_eq!(d.answers, g.answers, "answers");
    assert_eq!(d.authorities, g.authorities, "authorities");
    assert_eq!(d.additionals, g.additionals, "additionals");
    assert_eq!(d.edns, g.edns, "EDNS");
}
