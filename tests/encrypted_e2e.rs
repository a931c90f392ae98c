//! Encrypted DNS end to end: DoT (and DoH) to the real `telesink run`, over real TLS on
//! loopback, with a certificate signed by a CA made at run time. The device id in the server
//! name names the client in policy, metrics and the query log; answers are the UDP path's.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};
use support::tls::{h2_response, query_bytes, DohResponse, DotClient, H2Client, TestCa};
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

/// A telesink with DoT and DoH listeners on free ports, the CA's certificate for
/// [`TLS_NAME`], the vendor list blocked by default, and `extra` config.
fn start_encrypted(ca: &TestCa, up: &TestUpstream, extra: &str) -> Encrypted {
    let cert = ca.server_cert(TLS_NAME);
    let dot = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port_tcp()));
    let doh = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port_tcp()));
    let ts = Telesink::new()
        .upstream(up)
        .vendor_blocked()
        .file("tls/fullchain.pem", &cert.cert_pem)
        .file("tls/privkey.pem", &cert.key_pem)
        .file("ca.pem", &ca.cert_pem)
        .server_toml(&format!(
            "tls_listen = [\"{dot}\"]\nhttps_listen = [\"{doh}\"]\ntls_cert = \"tls/fullchain.pem\"\ntls_key = \"tls/privkey.pem\"\ntls_name = \"{TLS_NAME}\"\n"
        ))
        .querylog_toml("log = \"all\"\n")
        .toml(extra)
        .start();
    Encrypted { ts, dot, doh }
}

struct Encrypted {
    ts: TelesinkProcess,
    dot: SocketAddr,
    doh: SocketAddr,
}

impl Encrypted {
    fn doh(&self, path_and_query: &str, post: Option<(&str, &[u8])>, http2: bool) -> DohResponse {
        support::tls::doh(
            &self.ts.dir().join("ca.pem"),
            TLS_NAME,
            self.doh,
            path_and_query,
            post,
            http2,
        )
    }
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
    let enc = start_encrypted(
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
    let (ts, dot) = (&enc.ts, enc.dot);
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
    let rows = wait_for("anna-phone's rows in the log", ts, || {
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
    let enc = start_encrypted(&ca, &up, "");
    let dot = enc.dot;
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
    drop(enc);
}

#[test]
fn doh_answers_get_and_post_over_http2_and_http1_with_the_path_id() {
    let ca = TestCa::new();
    let up = TestUpstream::start();
    up.set("www.example.org", Reply::a(Ipv4Addr::new(93, 184, 216, 34)));
    let enc = start_encrypted(&ca, &up, "");
    let b64 = |q: &[u8]| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(q)
    };

    // GET over HTTP/2, path id "kids-tablet": blocked.
    let q = query_bytes("tracking.vendor.example.", RecordType::A);
    let r = enc.doh(
        &format!("/dns-query/kids-tablet?dns={}", b64(&q)),
        None,
        true,
    );
    assert_eq!((r.status, r.http_version.as_str()), (200, "2"), "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/dns-message"));
    assert_eq!(a_of(&r.message()), vec![Ipv4Addr::UNSPECIFIED]);
    assert!(
        r.header("cache-control")
            .is_some_and(|c| c.starts_with("max-age=")),
        "{r:?}"
    );

    // POST over HTTP/1.1: forwarded; max-age is the answer's TTL (the test upstream's).
    let q = query_bytes("www.example.org.", RecordType::A);
    let r = enc.doh(
        "/dns-query/kids-tablet",
        Some(("application/dns-message", &q)),
        false,
    );
    assert_eq!((r.status, r.http_version.as_str()), (200, "1.1"), "{r:?}");
    let m = r.message();
    assert_eq!(a_of(&m), vec![Ipv4Addr::new(93, 184, 216, 34)]);
    let ttl = m.answers[0].ttl;
    assert_eq!(
        r.header("cache-control"),
        Some(format!("max-age={ttl}").as_str())
    );

    // Without an id: the source address names the client.
    let r = enc.doh(&format!("/dns-query?dns={}", b64(&q)), None, true);
    assert_eq!(r.status, 200, "{r:?}");

    // Bad requests.
    assert_eq!(enc.doh("/dns-query?dns=!!!!", None, true).status, 400);
    assert_eq!(enc.doh("/dns-query", None, false).status, 400);
    assert_eq!(
        enc.doh(&format!("/dns-query?dns={}", b64(b"short")), None, true)
            .status,
        400
    );
    let r = enc.doh("/dns-query", Some(("text/plain", &q)), true);
    assert_eq!(r.status, 415, "{r:?}");
    assert_eq!(enc.doh("/elsewhere", None, true).status, 404);

    let m = enc.ts.scrape();
    let text = enc.ts.metrics().1;
    let v = |name: &str, labels: &[(&str, &str)]| m.value(name, labels).unwrap_or(0.0);
    assert_eq!(
        v(
            "telesink_queries_total",
            &[("client", "kids-tablet"), ("result", "blocked")]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        v(
            "telesink_queries_total",
            &[("client", "kids-tablet"), ("result", "forwarded")]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        v(
            "telesink_transport_queries_total",
            &[("transport", "https")]
        ),
        3.0,
        "{text}"
    );
    assert_eq!(
        v("telesink_transport_queries_total", &[("transport", "tls")]),
        0.0,
        "{text}"
    );

    let rows = wait_for("kids-tablet's rows in the log", &enc.ts, || {
        let out = enc.ts.cli(&["log", "--client", "kids-tablet", "--json"]);
        let rows: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).ok()?;
        let rows: Vec<_> = rows
            .into_iter()
            .filter(|r| r["client"] == "kids-tablet")
            .collect();
        (rows.len() == 2).then_some(rows)
    });
    assert!(rows
        .iter()
        .any(|r| r["name"] == "tracking.vendor.example" && r["result"] == "blocked"));
}

/// A query for `name` (A) with DNS id `id`.
fn query_with_id(id: u16, name: &str) -> Vec<u8> {
    let mut m = hickory_proto::op::Message::query();
    m.metadata.id = id;
    m.metadata.recursion_desired = true;
    m.add_query(hickory_proto::op::Query::query(
        hickory_proto::rr::Name::from_ascii(name).unwrap(),
        RecordType::A,
    ));
    m.to_vec().unwrap()
}

/// Many streams at once on one HTTP/2 connection: every answer comes back on the stream that
/// asked for it (its DNS id and name are that stream's), blocked names are answered while a
/// forwarded query waits on a slow upstream and while a POST's body has not fully arrived, and
/// malformed requests get their 400 on their own stream without holding up the others.
#[test]
fn doh_answers_many_streams_on_one_http2_connection_each_on_its_own() {
    let ca = TestCa::new();
    let up = TestUpstream::start();
    up.set(
        "slow.example.org",
        Reply::delayed(
            Duration::from_millis(1500),
            Reply::a(Ipv4Addr::new(93, 184, 216, 99)),
        ),
    );
    let enc = start_encrypted(&ca, &up, "");
    let b64 = |q: &[u8]| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(q)
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // A stall would hang the test: the guard turns it into a failure (a generous bound, not a
    // timing assertion).
    let exchange = async {
        let mut c = H2Client::connect(&ca, enc.doh, TLS_NAME).await;
        // A POST whose body stops half-way, and a query the upstream answers slowly.
        let post_query = query_with_id(7000, "metrics.vendor.example.");
        let (post, mut post_body) = c
            .post("/dns-query/kids-tablet", "application/dns-message")
            .await;
        post_body
            .send_data(post_query[..5].to_vec().into(), false)
            .unwrap();
        let slow_query = query_with_id(7001, "slow.example.org.");
        let (_, slow) = c.get(&format!("/dns-query?dns={}", b64(&slow_query))).await;

        // Blocked names, each stream its own DNS id, with malformed requests among them.
        let mut asked = Vec::new();
        let mut malformed = Vec::new();
        for i in 0..60u16 {
            let name = ["tracking.vendor.example.", "a.b.tracking.vendor.example."][i as usize % 2];
            let q = query_with_id(100 + i, name);
            let (stream, response) = c
                .get(&format!("/dns-query/kids-tablet?dns={}", b64(&q)))
                .await;
            asked.push((stream, 100 + i, name, response));
            if i % 10 == 5 {
                malformed.push(c.get("/dns-query?dns=!!!!").await.1);
                malformed.push(c.get(&format!("/dns-query?dns={}", b64(b"short"))).await.1);
            }
        }
        let mut streams = std::collections::HashSet::new();
        for (stream, id, name, response) in asked {
            assert!(streams.insert(stream), "stream {stream} used twice");
            let (status, body) = h2_response(response).await;
            assert_eq!(status, 200, "stream {stream}");
            let m = hickory_proto::op::Message::from_vec(&body).unwrap();
            assert_eq!(
                m.metadata.id, id,
                "stream {stream} got another stream's answer"
            );
            assert_eq!(m.queries[0].name().to_ascii(), name);
            assert_eq!(a_of(&m), vec![Ipv4Addr::UNSPECIFIED]);
        }
        for response in malformed {
            assert_eq!(h2_response(response).await.0, 400);
        }

        // All that while the POST's body was incomplete: it is answered once the body is in.
        post_body
            .send_data(post_query[5..].to_vec().into(), true)
            .unwrap();
        let (status, body) = h2_response(post).await;
        assert_eq!(status, 200);
        let m = hickory_proto::op::Message::from_vec(&body).unwrap();
        assert_eq!(m.metadata.id, 7000);
        assert_eq!(a_of(&m), vec![Ipv4Addr::UNSPECIFIED]);
        let (status, body) = h2_response(slow).await;
        assert_eq!(status, 200);
        let m = hickory_proto::op::Message::from_vec(&body).unwrap();
        assert_eq!(m.metadata.id, 7001);
        assert_eq!(a_of(&m), vec![Ipv4Addr::new(93, 184, 216, 99)]);
    };
    let stalled =
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(30), exchange).await });
    assert!(stalled.is_ok(), "a stream stalled\n{}", enc.ts.logs());
    let m = enc.ts.scrape();
    let text = enc.ts.metrics().1;
    assert_eq!(
        m.value(
            "telesink_queries_total",
            &[("client", "kids-tablet"), ("result", "blocked")]
        ),
        Some(61.0),
        "{text}"
    );
}

/// Writes `tls/<name>` as a renewal does: a new file renamed into place.
fn renew(ts: &TelesinkProcess, name: &str, contents: &str) {
    let tmp = ts.dir().join(format!("tls/.{name}.new"));
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, ts.dir().join("tls").join(name)).unwrap();
}

fn reloads(ts: &TelesinkProcess, outcome: &str) -> f64 {
    ts.scrape()
        .value("telesink_reloads_total", &[("outcome", outcome)])
        .unwrap_or(0.0)
}

#[test]
fn a_renewed_certificate_is_served_to_new_connections_and_a_bad_one_keeps_the_old() {
    let ca = TestCa::new();
    let up = TestUpstream::start();
    let enc = start_encrypted(&ca, &up, "");
    let ts = &enc.ts;
    let sni = format!("anna-phone.{TLS_NAME}");
    let first = DotClient::connect(&ca, enc.dot, &sni).unwrap().peer_cert();
    let (ok0, failed0) = (reloads(ts, "success"), reloads(ts, "failure"));

    // Renewal: new files renamed into place, as certbot and lego do.
    let renewed = ca.server_cert(TLS_NAME);
    assert_ne!(renewed.der, first);
    renew(ts, "privkey.pem", &renewed.key_pem);
    renew(ts, "fullchain.pem", &renewed.cert_pem);
    wait_for("the renewed certificate on a new connection", ts, || {
        let c = DotClient::connect(&ca, enc.dot, &sni).ok()?;
        (c.peer_cert() == renewed.der).then_some(())
    });
    assert!(reloads(ts, "success") > ok0);
    // DoH serves it too.
    let q = query_bytes("tracking.vendor.example.", RecordType::A);
    let r = enc.doh("/dns-query", Some(("application/dns-message", &q)), true);
    assert_eq!(r.status, 200);

    // An expired certificate: refused, counted, logged; the renewed one stays.
    let expired = ca.expired_cert(TLS_NAME);
    renew(ts, "privkey.pem", &expired.key_pem);
    renew(ts, "fullchain.pem", &expired.cert_pem);
    wait_for("a failed certificate reload", ts, || {
        (reloads(ts, "failure") > failed0).then_some(())
    });
    let c = DotClient::connect(&ca, enc.dot, &sni).unwrap();
    assert_eq!(c.peer_cert(), renewed.der);
    assert!(ts.logs().contains("expired"), "{}", ts.logs());
}

#[test]
fn check_and_run_name_the_bad_certificate_file() {
    let ca = TestCa::new();
    let good = ca.server_cert(TLS_NAME);
    let other = ca.server_cert(TLS_NAME);
    let expired = ca.expired_cert(TLS_NAME);
    let server = format!(
        "tls_listen = [\"127.0.0.1:{}\"]\ntls_cert = \"tls/fullchain.pem\"\ntls_key = \"tls/privkey.pem\"\ntls_name = \"{TLS_NAME}\"\n",
        free_port_tcp()
    );
    // (what, chain file, key file, what the error must say)
    type Case<'a> = (&'a str, Option<&'a str>, Option<&'a str>, &'a [&'a str]);
    let cases: [Case; 4] = [
        (
            "missing key",
            Some(&good.cert_pem),
            None,
            &["server.tls_key", "privkey.pem", "cannot read"],
        ),
        (
            "mismatched key",
            Some(&good.cert_pem),
            Some(&other.key_pem),
            &["does not belong", "privkey.pem", "fullchain.pem"],
        ),
        (
            "expired",
            Some(&expired.cert_pem),
            Some(&expired.key_pem),
            &["server.tls_cert", "fullchain.pem", "expired"],
        ),
        (
            "not PEM",
            Some("hello"),
            Some(&good.key_pem),
            &["server.tls_cert", "no PEM certificate"],
        ),
    ];
    for (what, cert, key, expect) in cases {
        let mut b = Telesink::new().server_toml(&server);
        if let Some(c) = cert {
            b = b.file("tls/fullchain.pem", c);
        }
        if let Some(k) = key {
            b = b.file("tls/privkey.pem", k);
        }
        let out = b.cli(&["check"]);
        assert_eq!(out.code, Some(1), "{what}: {out}");
        for e in expect {
            assert!(out.stderr.contains(e), "{what}: {e:?} not in {out}");
        }
        let out = b.cli(&["run"]);
        assert_ne!(out.code, Some(0), "{what}: run must not start: {out}");
        assert!(out.stderr.contains(expect[0]), "{what}: {out}");
    }
    // And a good pair passes.
    let out = Telesink::new()
        .server_toml(&server)
        .file("tls/fullchain.pem", &good.cert_pem)
        .file("tls/privkey.pem", &good.key_pem)
        .cli(&["check"]);
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stdout.contains("encrypted DNS"), "{out}");

    // A listener without a certificate is a config error naming the key and line.
    let out = Telesink::new()
        .server_toml("tls_listen = [\"127.0.0.1:8853\"]\n")
        .cli(&["check"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stderr.contains("server.tls_listen") && out.stderr.contains("tls_cert"),
        "{out}"
    );
}

#[test]
fn ddr_names_this_servers_dot_and_doh_and_ddr_false_keeps_the_defence() {
    use hickory_proto::rr::rdata::svcb::{SvcParamKey, SvcParamValue};
    let ca = TestCa::new();
    let up = TestUpstream::start();
    let enc = start_encrypted(&ca, &up, "");
    let r = enc
        .ts
        .query(Ipv4Addr::LOCALHOST, "_dns.resolver.arpa.", RecordType::SVCB);
    assert_eq!(r.rcode(), ResponseCode::NoError);
    let svcb: Vec<_> = r
        .answers()
        .iter()
        .filter_map(|rec| match &rec.data {
            RData::SVCB(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(svcb.len(), 2, "{}", r.summary());
    let param = |s: &hickory_proto::rr::rdata::SVCB, k: SvcParamKey| {
        s.svc_params
            .iter()
            .find(|(key, _)| *key == k)
            .map(|(_, v)| v.clone())
    };
    for (s, alpn, port) in [
        (&svcb[0], "dot", enc.dot.port()),
        (&svcb[1], "h2", enc.doh.port()),
    ] {
        assert_eq!(s.target_name.to_ascii(), format!("{TLS_NAME}."));
        match param(s, SvcParamKey::Alpn) {
            Some(SvcParamValue::Alpn(a)) => assert_eq!(a.0, vec![alpn.to_string()]),
            other => panic!("alpn: {other:?}"),
        }
        assert!(matches!(param(s, SvcParamKey::Port), Some(SvcParamValue::Port(p)) if p == port));
        match param(s, SvcParamKey::Ipv4Hint) {
            Some(SvcParamValue::Ipv4Hint(h)) => assert_eq!(h.0[0].0, Ipv4Addr::LOCALHOST),
            other => panic!("ipv4hint: {other:?}"),
        }
    }
    match param(&svcb[1], SvcParamKey::Unknown(7)) {
        Some(SvcParamValue::Unknown(u)) => assert_eq!(u.0, b"/dns-query{?dns}"),
        other => panic!("dohpath: {other:?}"),
    }
    assert!(param(&svcb[0], SvcParamKey::Unknown(7)).is_none());
    // Other types of the name: NODATA.
    let r = enc
        .ts
        .query(Ipv4Addr::LOCALHOST, "_dns.resolver.arpa.", RecordType::A);
    assert_eq!(r.rcode(), ResponseCode::NoError);
    assert!(r.answers().is_empty());

    // ddr = false: the bypass defence's NODATA, as without encrypted listeners.
    let cert = ca.server_cert(TLS_NAME);
    let ts = Telesink::new()
        .upstream(&up)
        .file("tls/fullchain.pem", &cert.cert_pem)
        .file("tls/privkey.pem", &cert.key_pem)
        .server_toml(&format!(
            "tls_listen = [\"127.0.0.1:{}\"]\ntls_cert = \"tls/fullchain.pem\"\ntls_key = \"tls/privkey.pem\"\ntls_name = \"{TLS_NAME}\"\nddr = false\n",
            free_port_tcp()
        ))
        .start();
    let r = ts.query(Ipv4Addr::LOCALHOST, "_dns.resolver.arpa.", RecordType::SVCB);
    assert_eq!(r.rcode(), ResponseCode::NoError);
    assert!(r.answers().is_empty(), "{}", r.summary());
    up.assert_not_forwarded("_dns.resolver.arpa");
}

#[test]
fn profile_prints_an_apple_dns_profile_with_the_devices_doh_url() {
    let cert = TestCa::new().server_cert(TLS_NAME);
    let b = Telesink::new()
        .file("tls/fullchain.pem", &cert.cert_pem)
        .file("tls/privkey.pem", &cert.key_pem)
        .server_toml(&format!(
            "https_listen = [\"127.0.0.1:8443\"]\ntls_cert = \"tls/fullchain.pem\"\ntls_key = \"tls/privkey.pem\"\ntls_name = \"{TLS_NAME}\"\n"
        ));
    let out = b.cli(&["profile", "--client", "anna-phone"]);
    assert_eq!(out.code, Some(0), "{out}");
    let p = &out.stdout;
    assert!(
        p.starts_with("<?xml") && p.contains("<plist version=\"1.0\">"),
        "{p}"
    );
    assert!(
        p.contains("<string>com.apple.dnsSettings.managed</string>"),
        "{p}"
    );
    assert!(
        p.contains("<key>DNSProtocol</key>\n\t\t\t\t<string>HTTPS</string>"),
        "{p}"
    );
    assert!(
        p.contains(&format!(
            "<string>https://{TLS_NAME}:8443/dns-query/anna-phone</string>"
        )),
        "{p}"
    );
    // Balanced: every opened dict/array/plist is closed.
    for tag in ["dict", "array", "plist"] {
        assert_eq!(
            p.matches(&format!("<{tag}")).count(),
            p.matches(&format!("</{tag}>")).count(),
            "{tag}: {p}"
        );
    }
    let out = b.cli(&["profile", "--client", "a/b"]);
    assert_eq!(out.code, Some(1), "{out}");
    // Without DoH there is no URL to give.
    let out = Telesink::new().cli(&["profile", "--client", "anna-phone"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("server.https_listen"), "{out}");
}

#[test]
fn access_control_applies_to_the_peer_address_whatever_the_id() {
    let ca = TestCa::new();
    let up = TestUpstream::start();
    up.set("www.example.org", Reply::a(Ipv4Addr::new(93, 184, 216, 34)));
    // A [[client]] anna-phone at an allowed address does not let a peer outside in.
    let cert = ca.server_cert(TLS_NAME);
    let dot = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port_tcp()));
    let doh = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port_tcp()));
    let ts = Telesink::new()
        .upstream(&up)
        .allow_networks(&["10.0.0.0/8"])
        .file("tls/fullchain.pem", &cert.cert_pem)
        .file("tls/privkey.pem", &cert.key_pem)
        .file("ca.pem", &ca.cert_pem)
        .server_toml(&format!(
            "tls_listen = [\"{dot}\"]\nhttps_listen = [\"{doh}\"]\ntls_cert = \"tls/fullchain.pem\"\ntls_key = \"tls/privkey.pem\"\ntls_name = \"{TLS_NAME}\"\n"
        ))
        .toml("[[client]]\nname = \"anna-phone\"\naddresses = [\"10.0.0.5\"]\n")
        .start();
    let mut c = DotClient::connect(&ca, dot, &format!("anna-phone.{TLS_NAME}")).unwrap();
    let r = c.query("www.example.org.", RecordType::A);
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    let enc = Encrypted { ts, dot, doh };
    let q = query_bytes("www.example.org.", RecordType::A);
    let r = enc.doh(
        "/dns-query/anna-phone",
        Some(("application/dns-message", &q)),
        true,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.message().metadata.response_code, ResponseCode::Refused);
    up.assert_not_forwarded("www.example.org");
}
