//! Encrypted DNS end to end: DoT (and DoH) to the real `telesink run`, over real TLS on
//! loopback, with a certificate signed by a CA made at run time. The device id in the server
//! name names the client in policy, metrics and the query log; answers are the UDP path's.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};
use support::tls::{DotClient, TestCa};
use support::upstream::{Reply, TestUpstream};
use support::{free_port_tcp, Telesink, TelesinkProcess};

const TLS_NAME: &str = "dns.test.example";

fn a_of(m: &hickory_proto::op::Message) -> Vec<Ipv4Addr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

/// A telesink with a DoT listener on a free port, the CA's certificate for [`TLS_NAME`], the
/// vendor list blocked by default, and `extra` config.
fn start_dot(ca: &TestCa, up: &TestUpstream, extra: &str) -> (TelesinkProcess, SocketAddr) {
    let cert = ca.server_cert(TLS_NAME);
    let dot = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port_tcp()));
    let ts = Telesink::new()
        .upstream(up)
        .vendor_blocked()
        .file("tls/fullchain.pem", &cert.cert_pem)
        .file("tls/privkey.pem", &cert.key_pem)
        .server_toml(&format!(
            "tls_listen = [\"{dot}\"]\ntls_cert = \"tls/fullchain.pem\"\ntls_key = \"tls/privkey.pem\"\ntls_name = \"{TLS_NAME}\"\n"
        ))
        .querylog_toml("log = \"all\"\n")
        .toml(extra)
        .start();
    (ts, dot)
}

fn wait_for<T>(what: &str, ts: &TelesinkProcess, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}\n{}", ts.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn dot_answers_blocked_and_forwarded_names_and_names_the_device_by_sni() {
    let ca = TestCa::new();
    let up = TestUpstream::start();
    up.set("www.example.org", Reply::a(Ipv4Addr::new(93, 184, 216, 34)));
    // anna-phone's group lets the vendor through; the same query over UDP from 127.0.0.1 (no
    // group) is blocked: the id, not the address, chose the policy.
    let (ts, dot) = start_dot(
        &ca,
        &up,
        r#"
[[client]]
name = "anna-phone"
addresses = ["192.168.1.50"]

[[group]]
name = "relaxed"
clients = ["anna-phone"]
block = []
"#,
    );
    let mut anna = DotClient::connect(&ca, dot, &format!("anna-phone.{TLS_NAME}")).unwrap();
    let r = anna.query("www.example.org.", RecordType::A);
    assert_eq!(a_of(&r), vec![Ipv4Addr::new(93, 184, 216, 34)]);
    let r = anna.query("tracking.vendor.example.", RecordType::A);
    assert_ne!(
        a_of(&r),
        vec![Ipv4Addr::UNSPECIFIED],
        "anna-phone's group allows it"
    );

    // The bare name: no id, so the source address (127.0.0.1, no group) names the client.
    let mut plain = DotClient::connect(&ca, dot, TLS_NAME).unwrap();
    let r = plain.query("tracking.vendor.example.", RecordType::A);
    assert_eq!(
        a_of(&r),
        vec![Ipv4Addr::UNSPECIFIED],
        "blocked for the default"
    );
    // An id no [[client]] has is still the label.
    let mut tv = DotClient::connect(&ca, dot, &format!("living-tv.{TLS_NAME}")).unwrap();
    let r = tv.query("metrics.vendor.example.", RecordType::A);
    assert_eq!(a_of(&r), vec![Ipv4Addr::UNSPECIFIED]);
    ts.assert_blocked(Ipv4Addr::LOCALHOST, "tracking.vendor.example");

    let m = ts.scrape();
    let text = ts.metrics().1;
    let q = |client: &str, result: &str| {
        m.value(
            "telesink_queries_total",
            &[("client", client), ("result", result)],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(q("anna-phone", "forwarded"), 2.0, "{}", text);
    assert_eq!(q("living-tv", "blocked"), 1.0, "{}", text);
    let t = |transport: &str| {
        m.value(
            "telesink_transport_queries_total",
            &[("transport", transport)],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(t("tls"), 4.0, "{}", text);
    assert!(
        t("udp") >= 2.0,
        "the readiness probe and one query: {}",
        text
    );
    assert_eq!(t("tcp"), 0.0);
    assert_eq!(t("https"), 0.0);

    // The query log names the device by its id.
    let rows = wait_for("anna-phone's rows in the log", &ts, || {
        let out = ts.cli(&["log", "--client", "anna-phone", "--json"]);
        assert_eq!(out.code, Some(0), "{out}");
        let rows: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
        // (The log also lists rows of the addresses the device used: all tests share 127.0.0.1.)
        let rows: Vec<_> = rows
            .into_iter()
            .filter(|r| r["client"] == "anna-phone")
            .collect();
        (rows.len() == 2).then_some(rows)
    });
    assert!(
        rows.iter()
            .all(|r| r["client_name"] == "anna-phone" && r["group"] == "relaxed"),
        "{rows:?}"
    );
    assert!(
        rows.iter().any(|r| r["name"] == "www.example.org"),
        "{rows:?}"
    );
}

#[test]
fn dot_answers_pipelined_queries_out_of_order() {
    let ca = TestCa::new();
    let up = TestUpstream::start();
    up.set(
        "slow.example.org",
        Reply::delayed(
            Duration::from_millis(1500),
            Reply::a(Ipv4Addr::new(93, 184, 216, 99)),
        ),
    );
    let (ts, dot) = start_dot(&ca, &up, "");
    let mut c = DotClient::connect(&ca, dot, &format!("anna-phone.{TLS_NAME}")).unwrap();
    c.send(1, "slow.example.org.", RecordType::A);
    c.send(2, "tracking.vendor.example.", RecordType::A);
    let first = c.recv();
    let second = c.recv();
    assert_eq!(
        first.metadata.id, 2,
        "the blocked answer does not wait behind the slow one"
    );
    assert_eq!(a_of(&first), vec![Ipv4Addr::UNSPECIFIED]);
    assert_eq!(second.metadata.id, 1);
    assert_eq!(second.metadata.response_code, ResponseCode::NoError);
    assert_eq!(a_of(&second), vec![Ipv4Addr::new(93, 184, 216, 99)]);
    drop(ts);
}
