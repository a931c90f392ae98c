//! DNS behaviour of `telesink run` against the SPEC ("How a query is answered" and "Always").
//!
//! Every test starts its own telesink and its own upstream, and plays several clients from
//! distinct 127.0.0.x source addresses. List forms are in `dns_lists.rs`, per-client policy in
//! `dns_policy.rs`.

mod support;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use support::*;

/// `[blocking] ttl` used by these tests: not the default (10), so a hard-coded TTL shows.
const TTL: u32 = 7;

/// The usual configuration: null mode, one vendor list, a few local records.
fn standard_config(up: &TestUpstream, mode: &str, ttl: u32) -> Telesink {
    Telesink::new()
        .upstream(up)
        .fixture("vendor.txt")
        .toml(&format!(
            r#"
[blocking]
mode = "{mode}"
ttl = {ttl}

[[list]]
name = "vendorlist"
source = "vendor.txt"
categories = ["telemetry", "vendorx"]

[[record]]
name = "nas.home.arpa"
type = "A"
value = "192.168.1.10"

[[record]]
name = "nas.home.arpa"
type = "AAAA"
value = "fd00::10"

[[record]]
name = "intranet.corp.example"
type = "A"
value = "10.1.2.3"

[default]
block = ["telemetry"]
observe = []
"#
        ))
}

fn start_standard(up: &TestUpstream) -> TelesinkProcess {
    standard_config(up, "null", TTL).start()
}

/// NOERROR, no answer records, and an SOA in the authority section with minimum = `ttl`
/// (and, being a sinkhole SOA, that TTL too).
#[track_caller]
fn assert_nodata_soa(r: &Response, ttl: u32, what: &str) {
    assert_eq!(r.rcode(), ResponseCode::NoError, "{what}: {}", r.summary());
    assert!(
        r.answers().is_empty(),
        "{what}: expected no answer records: {}",
        r.summary()
    );
    let (soa_ttl, soa) = r
        .authority_soa()
        .unwrap_or_else(|| panic!("{what}: no SOA in authority: {}", r.summary()));
    assert_eq!(
        soa.minimum,
        ttl,
        "{what}: SOA minimum must be blocking.ttl: {}",
        r.summary()
    );
    assert_eq!(
        soa_ttl,
        ttl,
        "{what}: SOA TTL must be blocking.ttl: {}",
        r.summary()
    );
}

/// NXDOMAIN with an SOA whose minimum is `ttl`.
#[track_caller]
fn assert_nxdomain_soa(r: &Response, ttl: u32, what: &str) {
    assert_eq!(r.rcode(), ResponseCode::NXDomain, "{what}: {}", r.summary());
    assert!(r.answers().is_empty(), "{what}: {}", r.summary());
    let (soa_ttl, soa) = r
        .authority_soa()
        .unwrap_or_else(|| panic!("{what}: no SOA in authority: {}", r.summary()));
    assert_eq!(
        soa.minimum,
        ttl,
        "{what}: SOA minimum must be blocking.ttl: {}",
        r.summary()
    );
    assert_eq!(
        soa_ttl,
        ttl,
        "{what}: SOA TTL must be blocking.ttl: {}",
        r.summary()
    );
}

/// The null-mode sinkhole answer to an A query: exactly `0.0.0.0` with TTL `ttl`.
#[track_caller]
fn assert_null_a(r: &Response, ttl: u32, what: &str) {
    assert_eq!(r.rcode(), ResponseCode::NoError, "{what}: {}", r.summary());
    assert_eq!(
        r.a(),
        vec![Ipv4Addr::UNSPECIFIED],
        "{what}: {}",
        r.summary()
    );
    assert!(
        r.answers().iter().all(|rec| rec.ttl == ttl),
        "{what}: TTL must be blocking.ttl={ttl}: {}",
        r.summary()
    );
}

/// The upstream's default answer (192.0.2.1): the query was forwarded.
#[track_caller]
fn assert_forwarded_default(r: &Response, what: &str) {
    assert_eq!(r.rcode(), ResponseCode::NoError, "{what}: {}", r.summary());
    assert_eq!(
        r.a(),
        vec![DEFAULT_V4],
        "{what}: expected the upstream's answer: {}",
        r.summary()
    );
}

// ----------------------------------------------------------------------------------------------
// Block answers
// ----------------------------------------------------------------------------------------------

#[test]
fn null_mode_answers_every_type_with_the_sinkhole() {
    let up = TestUpstream::start();
    let ts = start_standard(&up);
    let a = client(21);
    let b = client(22);

    let r = ts.query(a, "tracking.vendor.example", RecordType::A);
    assert_null_a(&r, TTL, "A");
    let r = ts.query(b, "tracking.vendor.example", RecordType::AAAA);
    assert_eq!(r.rcode(), ResponseCode::NoError, "{}", r.summary());
    assert_eq!(
        r.aaaa(),
        vec![Ipv6Addr::UNSPECIFIED],
        "AAAA: {}",
        r.summary()
    );
    assert!(
        r.answers().iter().all(|rec| rec.ttl == TTL),
        "AAAA TTL: {}",
        r.summary()
    );

    for t in [
        RecordType::HTTPS,
        RecordType::SVCB,
        RecordType::MX,
        RecordType::TXT,
        RecordType::ANY,
    ] {
        let r = ts.query(a, "tracking.vendor.example", t);
        assert_nodata_soa(&r, TTL, &format!("{t}"));
    }
    // Over TCP too.
    let r = ts.query_with(
        b,
        "tracking.vendor.example",
        RecordType::A,
        &QueryOpts::tcp(),
    );
    assert_null_a(&r, TTL, "A over TCP");

    // Subdomains of a listed name, any depth.
    let r = ts.query(b, "a.b.tracking.vendor.example", RecordType::A);
    assert_null_a(&r, TTL, "subdomain");
    // The parent of a listed name is not blocked.
    let r = ts.query(a, "vendor.example", RecordType::A);
    assert_forwarded_default(&r, "parent of a listed name");

    up.assert_not_forwarded("tracking.vendor.example");
    assert_eq!(up.count("vendor.example"), 1, "{:#?}", up.seen());
}

#[test]
fn nxdomain_mode_answers_nxdomain_with_soa() {
    let up = TestUpstream::start();
    let ts = standard_config(&up, "nxdomain", 9).start();
    for (i, t) in [
        RecordType::A,
        RecordType::AAAA,
        RecordType::HTTPS,
        RecordType::TXT,
    ]
    .into_iter()
    .enumerate()
    {
        let r = ts.query(client(30 + i as u8), "tracking.vendor.example", t);
        assert_nxdomain_soa(&r, 9, &format!("{t}"));
    }
    let r = ts.query(client(35), "deep.sub.blocked.example", RecordType::A);
    assert_nxdomain_soa(&r, 9, "subdomain");
    // EDE in this mode too.
    let r = ts.query_with(
        client(36),
        "tracking.vendor.example",
        RecordType::A,
        &QueryOpts::udp().edns(1232),
    );
    assert_nxdomain_soa(&r, 9, "A with EDNS");
    assert!(
        r.ede().iter().any(|(code, _)| *code == 15),
        "EDE 15 expected: {}",
        r.summary()
    );
    up.assert_not_forwarded("tracking.vendor.example");
    up.assert_not_forwarded("blocked.example");
}

#[test]
fn refused_mode_answers_refused() {
    let up = TestUpstream::start();
    let ts = standard_config(&up, "refused", TTL).start();
    for (i, t) in [RecordType::A, RecordType::AAAA, RecordType::HTTPS]
        .into_iter()
        .enumerate()
    {
        let r = ts.query(client(40 + i as u8), "tracking.vendor.example", t);
        assert_eq!(r.rcode(), ResponseCode::Refused, "{t}: {}", r.summary());
        assert!(r.answers().is_empty(), "{}", r.summary());
    }
    // Unlisted names still resolve.
    let r = ts.query(client(44), "fine.example", RecordType::A);
    assert_forwarded_default(&r, "unlisted");
    up.assert_not_forwarded("tracking.vendor.example");
}

#[test]
fn blocked_answer_carries_ede_15_naming_list_and_category() {
    let up = TestUpstream::start();
    let ts = start_standard(&up);
    for (i, opts) in [
        QueryOpts::udp().edns(1232),
        QueryOpts::udp().edns(4096).dnssec_ok(),
        QueryOpts::tcp().edns(1232),
    ]
    .into_iter()
    .enumerate()
    {
        for t in [RecordType::A, RecordType::HTTPS] {
            let r = ts.query_with(client(50 + i as u8), "tracking.vendor.example", t, &opts);
            assert!(
                r.has_opt(),
                "a query with EDNS gets an OPT back: {}",
                r.summary()
            );
            let ede = r.ede();
            let (_, text) = ede
                .iter()
                .find(|(code, _)| *code == 15)
                .unwrap_or_else(|| panic!("{t} {opts:?}: no EDE 15 (Blocked): {}", r.summary()));
            assert!(
                text.contains("vendorlist"),
                "EDE text must name the list: {text:?}"
            );
            assert!(
                text.contains("telemetry"),
                "EDE text must name the category: {text:?}"
            );
        }
    }
    up.assert_not_forwarded("tracking.vendor.example");
}

#[test]
fn no_opt_record_when_the_query_had_none() {
    let up = TestUpstream::start();
    let ts = start_standard(&up);
    let c = client(60);
    for (name, t) in [
        ("tracking.vendor.example", RecordType::A),     // blocked
        ("tracking.vendor.example", RecordType::HTTPS), // blocked, NODATA
        ("www.example.com", RecordType::A),             // forwarded
        ("nas.home.arpa", RecordType::A),               // local record
        ("localhost", RecordType::A),                   // special-use
    ] {
        let r = ts.query(c, name, t);
        assert!(
            !r.has_opt(),
            "{name} {t}: no OPT expected without EDNS in the query: {}",
            r.summary()
        );
        assert!(r.ede().is_empty(), "{}", r.summary());
    }
    // And with EDNS, the forwarded answer has an OPT (RFC 6891) but no EDE 15.
    let r = ts.query_with(
        c,
        "www2.example.com",
        RecordType::A,
        &QueryOpts::udp().edns(1232),
    );
    assert!(r.has_opt(), "{}", r.summary());
    assert!(
        !r.ede().iter().any(|(c, _)| *c == 15),
        "a forwarded answer is not Blocked: {}",
        r.summary()
    );
}

// ----------------------------------------------------------------------------------------------
// Local answers
// ----------------------------------------------------------------------------------------------

#[test]
fn local_records_are_authoritative() {
    let up = TestUpstream::start();
    let ts = start_standard(&up);
    let c = client(70);

    let r = ts.query(c, "nas.home.arpa", RecordType::A);
    assert_eq!(r.rcode(), ResponseCode::NoError, "{}", r.summary());
    assert_eq!(
        r.a(),
        vec![Ipv4Addr::new(192, 168, 1, 10)],
        "{}",
        r.summary()
    );
    assert!(
        r.aa(),
        "AA must be set on a [[record]] answer: {}",
        r.summary()
    );

    let r = ts.query_with(
        client(71),
        "NAS.Home.Arpa",
        RecordType::AAAA,
        &QueryOpts::tcp(),
    );
    assert_eq!(
        r.aaaa(),
        vec!["fd00::10".parse::<Ipv6Addr>().unwrap()],
        "{}",
        r.summary()
    );
    assert!(r.aa(), "{}", r.summary());

    // Another type under a record name: NODATA with an SOA.
    for t in [RecordType::MX, RecordType::TXT, RecordType::HTTPS] {
        let r = ts.query(c, "nas.home.arpa", t);
        assert_eq!(r.rcode(), ResponseCode::NoError, "{t}: {}", r.summary());
        assert!(r.answers().is_empty(), "{t}: {}", r.summary());
        assert!(
            r.authority_soa().is_some(),
            "{t}: NODATA needs an SOA: {}",
            r.summary()
        );
    }

    // A record under an ordinary (non special-use) name.
    let r = ts.query(c, "intranet.corp.example", RecordType::A);
    assert_eq!(r.a(), vec![Ipv4Addr::new(10, 1, 2, 3)], "{}", r.summary());
    assert!(r.aa(), "{}", r.summary());
    let r = ts.query(c, "intranet.corp.example", RecordType::AAAA);
    assert_eq!(r.rcode(), ResponseCode::NoError, "{}", r.summary());
    assert!(r.answers().is_empty(), "{}", r.summary());
    assert!(r.authority_soa().is_some(), "{}", r.summary());

    up.assert_not_forwarded("nas.home.arpa");
    up.assert_not_forwarded("intranet.corp.example");
}

#[test]
fn special_use_names_are_answered_locally() {
    let up = TestUpstream::start();
    let ts = start_standard(&up);
    let c = client(80);

    let r = ts.query(c, "localhost", RecordType::A);
    assert_eq!(r.rcode(), ResponseCode::NoError, "{}", r.summary());
    assert_eq!(r.a(), vec![Ipv4Addr::LOCALHOST], "{}", r.summary());
    let r = ts.query(client(81), "localhost.", RecordType::AAAA);
    assert_eq!(r.aaaa(), vec![Ipv6Addr::LOCALHOST], "{}", r.summary());

    for name in [
        "x.test",
        "foo.bar.test",
        "x.invalid",
        "printer.home.arpa",
        "a.b.home.arpa",
    ] {
        for t in [RecordType::A, RecordType::AAAA] {
            let r = ts.query(c, name, t);
            assert_eq!(
                r.rcode(),
                ResponseCode::NXDomain,
                "{name} {t}: {}",
                r.summary()
            );
        }
    }

    for name in ["localhost", "test", "invalid", "home.arpa"] {
        up.assert_not_forwarded(name);
    }
}

#[test]
fn private_reverse_zones_are_answered_locally() {
    let up = TestUpstream::start();
    let ts = start_standard(&up);
    let c = client(90);
    let names = [
        "1.1.168.192.in-addr.arpa",
        "10.1.168.192.in-addr.arpa", // the address of a [[record]]: a local PTR is fine too
        "10.in-addr.arpa",
        "4.3.2.10.in-addr.arpa",
        "9.0.16.172.in-addr.arpa",
        "1.0.31.172.in-addr.arpa",
        "1.0.254.169.in-addr.arpa",
        "1.0.0.127.in-addr.arpa",
        "d.f.ip6.arpa",
        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.e.f.ip6.arpa",
    ];
    for name in names {
        let r = ts.query(c, name, RecordType::PTR);
        assert!(
            matches!(r.rcode(), ResponseCode::NXDomain | ResponseCode::NoError),
            "{name}: a local answer (NXDOMAIN or a local PTR) expected: {}",
            r.summary()
        );
        assert!(
            r.answers()
                .iter()
                .all(|rec| rec.record_type() == RecordType::PTR),
            "{name}: {}",
            r.summary()
        );
    }
    for zone in [
        "168.192.in-addr.arpa",
        "10.in-addr.arpa",
        "16.172.in-addr.arpa",
        "31.172.in-addr.arpa",
        "254.169.in-addr.arpa",
        "127.in-addr.arpa",
        "d.f.ip6.arpa",
        "8.e.f.ip6.arpa",
    ] {
        up.assert_not_forwarded(zone);
    }
    // A public reverse name is forwarded (control).
    let r = ts.query(c, "8.8.8.8.in-addr.arpa", RecordType::PTR);
    assert_ne!(r.rcode(), ResponseCode::Refused, "{}", r.summary());
    assert_eq!(up.count("8.8.8.8.in-addr.arpa"), 1, "{:#?}", up.seen());
}

// ----------------------------------------------------------------------------------------------
// CNAME cloaking and bypass defences
// ----------------------------------------------------------------------------------------------

#[test]
fn cname_chain_reaching_a_blocked_name_gets_the_block_answer() {
    let up = TestUpstream::start();
    let cloak_ip = Ipv4Addr::new(203, 0, 113, 9);
    up.set(
        "tracker-alias.example.org",
        Reply::cname_chain(&["x.blocked.example"], cloak_ip),
    );
    up.set(
        "alias2.example.org",
        Reply::cname_chain(&["hop.cdn.example", "t.blocked.example"], cloak_ip),
    );
    up.set(
        "fine-alias.example.org",
        Reply::cname_chain(&["edge.cdn.example"], Ipv4Addr::new(203, 0, 113, 10)),
    );
    let ts = start_standard(&up);

    for (i, name) in ["tracker-alias.example.org", "alias2.example.org"]
        .into_iter()
        .enumerate()
    {
        let r = ts.query(client(100 + i as u8), name, RecordType::A);
        assert_eq!(r.rcode(), ResponseCode::NoError, "{name}: {}", r.summary());
        assert!(
            !r.a().contains(&cloak_ip),
            "{name}: the cloaked tracker's address leaked: {}",
            r.summary()
        );
        assert!(
            r.a().contains(&Ipv4Addr::UNSPECIFIED),
            "{name}: expected the null block answer: {}",
            r.summary()
        );
        assert!(
            r.a().iter().all(|ip| ip.is_unspecified()),
            "{}",
            r.summary()
        );
        assert!(
            !r.answers()
                .iter()
                .any(|rec| rec.record_type() == RecordType::A && rec.ttl > TTL),
            "{name}: sinkhole TTL is blocking.ttl: {}",
            r.summary()
        );
    }
    // With EDNS the replacement is reported as Blocked too.
    let r = ts.query_with(
        client(103),
        "tracker-alias.example.org",
        RecordType::A,
        &QueryOpts::udp().edns(1232),
    );
    assert!(!r.a().contains(&cloak_ip), "{}", r.summary());
    assert!(
        r.ede()
            .iter()
            .any(|(code, text)| *code == 15 && text.contains("vendorlist")),
        "a cloaked tracker is blocked like any listed name (EDE 15 naming the list): {}",
        r.summary()
    );
    // Asked again (the chain may now be cached): still the block answer.
    let r = ts.query(client(105), "alias2.example.org", RecordType::A);
    assert!(
        !r.a().contains(&cloak_ip),
        "from the cache: {}",
        r.summary()
    );
    assert!(
        r.a().iter().all(|ip| ip.is_unspecified()),
        "{}",
        r.summary()
    );

    // Control: a CNAME to an unlisted name passes through intact.
    let r = ts.query(client(104), "fine-alias.example.org", RecordType::A);
    assert_eq!(r.rcode(), ResponseCode::NoError, "{}", r.summary());
    assert_eq!(
        r.cnames(),
        vec!["edge.cdn.example".to_string()],
        "{}",
        r.summary()
    );
    assert_eq!(
        r.a(),
        vec![Ipv4Addr::new(203, 0, 113, 10)],
        "{}",
        r.summary()
    );
}

#[test]
fn https_or_svcb_target_that_is_blocked_gets_the_block_answer() {
    let up = TestUpstream::start();
    up.set("svc.example.org", Reply::https("edge.blocked.example"));
    up.set("svcb.example.org", Reply::svcb("tracking.vendor.example"));
    up.set("okhttps.example.org", Reply::https("edge.cdn.example"));
    let ts = start_standard(&up);

    let r = ts.query(client(110), "svc.example.org", RecordType::HTTPS);
    assert_nodata_soa(&r, TTL, "HTTPS with a blocked target");
    let r = ts.query(client(111), "svcb.example.org", RecordType::SVCB);
    assert_nodata_soa(&r, TTL, "SVCB with a blocked target");

    // Control: an HTTPS record with an unlisted target is passed on.
    let r = ts.query(client(112), "okhttps.example.org", RecordType::HTTPS);
    assert_eq!(r.rcode(), ResponseCode::NoError, "{}", r.summary());
    assert_eq!(r.answers_of(RecordType::HTTPS).len(), 1, "{}", r.summary());
}

#[test]
fn bypass_defences_are_on_by_default() {
    let up = TestUpstream::start();
    let ts = start_standard(&up); // the default group blocks only "telemetry"
    for (i, name) in [
        "use-application-dns.net",
        "mask.icloud.com",
        "mask-h2.icloud.com",
    ]
    .into_iter()
    .enumerate()
    {
        for t in [RecordType::A, RecordType::AAAA] {
            let r = ts.query(client(120 + i as u8), name, t);
            assert_eq!(
                r.rcode(),
                ResponseCode::NXDomain,
                "{name} {t}: {}",
                r.summary()
            );
            assert!(r.answers().is_empty(), "{}", r.summary());
        }
        up.assert_not_forwarded(name);
    }
    let r = ts.query(client(125), "_dns.resolver.arpa", RecordType::SVCB);
    assert_eq!(
        r.rcode(),
        ResponseCode::NoError,
        "DDR gets NODATA: {}",
        r.summary()
    );
    assert!(r.answers().is_empty(), "DDR gets NODATA: {}", r.summary());
    up.assert_not_forwarded("resolver.arpa");
    // Other icloud names are not touched.
    let r = ts.query(client(126), "www.icloud.com", RecordType::A);
    assert_forwarded_default(&r, "www.icloud.com");
}

// ----------------------------------------------------------------------------------------------
// Access list
// ----------------------------------------------------------------------------------------------

#[test]
fn clients_outside_allow_networks_are_refused() {
    let up = TestUpstream::start();
    let ts = standard_config(&up, "null", TTL)
        .allow_networks(&["127.0.0.1/32", "127.0.0.2/32"])
        .start();
    let outsider = client(9);

    for name in [
        "outsider.example",
        "tracking.vendor.example",
        "nas.home.arpa",
    ] {
        let r = ts.query(outsider, name, RecordType::A);
        assert_eq!(
            r.rcode(),
            ResponseCode::Refused,
            "{name} over UDP: {}",
            r.summary()
        );
        assert!(r.answers().is_empty(), "{}", r.summary());
        let r = ts.query_with(outsider, name, RecordType::A, &QueryOpts::tcp());
        assert_eq!(
            r.rcode(),
            ResponseCode::Refused,
            "{name} over TCP: {}",
            r.summary()
        );
    }
    up.assert_not_forwarded("outsider.example");

    let r = ts.query(client(2), "insider.example", RecordType::A);
    assert_forwarded_default(&r, "allowed network");
    let r = ts.query(client(1), "tracking.vendor.example", RecordType::A);
    assert_null_a(&r, TTL, "allowed network, blocked name");
}

// ----------------------------------------------------------------------------------------------
// Forwarding, cache, echo
// ----------------------------------------------------------------------------------------------

#[test]
fn forwarded_answers_are_cached() {
    let up = TestUpstream::start();
    let ip = Ipv4Addr::new(198, 51, 100, 7);
    up.set("www.example.com", Reply::a(ip));
    let ts = start_standard(&up);

    let r = ts.query(client(130), "www.example.com", RecordType::A);
    assert_eq!(r.rcode(), ResponseCode::NoError, "{}", r.summary());
    assert_eq!(r.a(), vec![ip], "{}", r.summary());
    assert!(
        !r.aa(),
        "a forwarded answer is not authoritative: {}",
        r.summary()
    );

    let r = ts.query(client(131), "www.example.com", RecordType::A);
    assert_eq!(r.a(), vec![ip], "second query: {}", r.summary());
    assert!(
        r.answers().iter().all(|rec| rec.ttl <= 300),
        "{}",
        r.summary()
    );
    assert_eq!(
        up.count_type("www.example.com", RecordType::A),
        1,
        "second query must be served from the cache: {:#?}",
        up.seen()
    );

    // TCP query for an uncached name is forwarded too.
    let r = ts.query_with(
        client(132),
        "tcp.example.com",
        RecordType::AAAA,
        &QueryOpts::tcp(),
    );
    assert_eq!(r.aaaa(), vec![DEFAULT_V6], "{}", r.summary());

    // NXDOMAIN from the upstream is passed on.
    up.set("gone.example.com", Reply::NxDomain);
    let r = ts.query(client(133), "gone.example.com", RecordType::A);
    assert_eq!(r.rcode(), ResponseCode::NXDomain, "{}", r.summary());
}

#[test]
fn id_and_question_are_echoed_exactly() {
    let up = TestUpstream::start();
    let ts = start_standard(&up);
    let forwarded = Some(vec![DEFAULT_V4]);
    let blocked = Some(vec![Ipv4Addr::UNSPECIFIED]);
    let nas = Some(vec![Ipv4Addr::new(192, 168, 1, 10)]);
    let lo = Some(vec![Ipv4Addr::LOCALHOST]);
    // (name as sent, type, ID, expected rcode, expected A answer if any)
    let cases = [
        (
            "WwW.ExAmPlE.CoM",
            RecordType::A,
            0xBEEF,
            ResponseCode::NoError,
            forwarded.clone(),
        ),
        (
            "WwW.ExAmPlE.CoM",
            RecordType::A,
            0x0001,
            ResponseCode::NoError,
            forwarded,
        ), // cached
        (
            "TrAcKiNg.VeNdOr.ExAmPlE",
            RecordType::A,
            0x7A7A,
            ResponseCode::NoError,
            blocked,
        ),
        (
            "TrAcKiNg.VeNdOr.ExAmPlE",
            RecordType::TXT,
            0xFFFF,
            ResponseCode::NoError,
            Some(vec![]),
        ),
        (
            "NaS.hOmE.aRpA",
            RecordType::A,
            0x1234,
            ResponseCode::NoError,
            nas,
        ),
        (
            "LocalHost",
            RecordType::A,
            0x0000,
            ResponseCode::NoError,
            lo,
        ),
        (
            "Use-Application-DNS.net",
            RecordType::A,
            0x4321,
            ResponseCode::NXDomain,
            None,
        ),
        (
            "X.InValid",
            RecordType::A,
            0x8000,
            ResponseCode::NXDomain,
            None,
        ),
    ];
    for (i, (name, t, id, rcode, a)) in cases.into_iter().enumerate() {
        for opts in [
            QueryOpts::udp().id(id),
            QueryOpts::tcp().id(id),
            QueryOpts::udp().edns(1232).id(id),
        ] {
            let r = ts.query_with(client(140 + i as u8), name, t, &opts);
            assert_eq!(r.id(), id, "{name}: ID must be echoed");
            assert_eq!(
                r.raw_qname(),
                Some(encode_name(name)),
                "{name} {opts:?}: question name must be echoed byte for byte (case included): {}",
                r.summary()
            );
            let q = &r.msg.queries;
            assert_eq!(q.len(), 1, "{}", r.summary());
            assert_eq!(q[0].query_type(), t, "{}", r.summary());
            // Names match case-insensitively: the answer is the one for the lower-case name.
            assert_eq!(r.rcode(), rcode, "{name} {opts:?}: {}", r.summary());
            if let Some(a) = &a {
                assert_eq!(&r.a(), a, "{name} {opts:?}: {}", r.summary());
            }
        }
    }
    up.assert_not_forwarded("tracking.vendor.example");
}

#[test]
fn servfail_within_timeout_when_the_upstream_does_not_answer() {
    let up = TestUpstream::start();
    up.set("dead.example", Reply::Never);
    up.set("broken.example", Reply::ServFail);
    let ts = standard_config(&up, "null", TTL).timeout_ms(500).start();
    let slow = QueryOpts::udp().timeout(Duration::from_secs(6));

    let r = ts.query_with(client(150), "dead.example", RecordType::A, &slow);
    assert_eq!(r.rcode(), ResponseCode::ServFail, "{}", r.summary());
    assert!(
        r.elapsed <= Duration::from_millis(1500),
        "SERVFAIL must come within timeout_ms=500 (+1 s margin), took {:?}",
        r.elapsed
    );

    let r = ts.query_with(
        client(151),
        "dead.example",
        RecordType::AAAA,
        &QueryOpts::tcp().timeout(Duration::from_secs(6)),
    );
    assert_eq!(r.rcode(), ResponseCode::ServFail, "{}", r.summary());
    assert!(
        r.elapsed <= Duration::from_millis(1500),
        "over TCP took {:?}",
        r.elapsed
    );

    let r = ts.query_with(client(152), "broken.example", RecordType::A, &slow);
    assert_eq!(
        r.rcode(),
        ResponseCode::ServFail,
        "upstream SERVFAIL: {}",
        r.summary()
    );

    // The server keeps answering.
    let r = ts.query(client(153), "alive.example", RecordType::A);
    assert_forwarded_default(&r, "after timeouts");
}

#[test]
fn servfail_when_the_upstream_is_down() {
    let mut up = TestUpstream::start();
    let ts = standard_config(&up, "null", TTL).timeout_ms(500).start();
    up.stop();
    let r = ts.query_with(
        client(155),
        "nobody-home.example",
        RecordType::A,
        &QueryOpts::udp().timeout(Duration::from_secs(6)),
    );
    assert_eq!(r.rcode(), ResponseCode::ServFail, "{}", r.summary());
    assert!(
        r.elapsed <= Duration::from_millis(1500),
        "took {:?}",
        r.elapsed
    );
}

#[test]
fn stale_answer_is_served_when_the_upstream_fails() {
    let up = TestUpstream::start();
    let ip = Ipv4Addr::new(198, 51, 100, 33);
    up.set(
        "stale.example",
        Reply::Addrs {
            v4: vec![ip],
            v6: vec![],
            ttl: 1,
        },
    );
    let ts = standard_config(&up, "null", TTL).timeout_ms(500).start();

    let r = ts.query(client(156), "stale.example", RecordType::A);
    assert_eq!(r.a(), vec![ip], "{}", r.summary());
    std::thread::sleep(Duration::from_millis(2200)); // the 1 s TTL has run out
    up.set("stale.example", Reply::Never);

    let opts = QueryOpts::udp().edns(1232).timeout(Duration::from_secs(6));
    let r = ts.query_with(client(157), "stale.example", RecordType::A, &opts);
    // At least once more: a resolver may retransmit to a silent upstream within timeout_ms.
    assert!(
        up.count("stale.example") >= 2,
        "the expired entry is asked for again: {:#?}",
        up.seen()
    );
    assert_eq!(
        r.rcode(),
        ResponseCode::NoError,
        "a stale answer beats SERVFAIL: {}",
        r.summary()
    );
    assert_eq!(r.a(), vec![ip], "{}", r.summary());
    assert!(
        r.ede().iter().any(|(code, _)| *code == 3),
        "EDE 3 (Stale Answer) expected: {}",
        r.summary()
    );
    assert!(
        r.elapsed <= Duration::from_millis(1500),
        "within timeout_ms=500 (+1 s), took {:?}",
        r.elapsed
    );
}

#[test]
fn rate_limit_refuses_a_flooding_client() {
    let up = TestUpstream::start();
    let ts = standard_config(&up, "null", TTL).rate_limit_qps(5).start();
    let flood = client(158);
    let opts = QueryOpts::udp().timeout(Duration::from_millis(500));
    let first = ts.query_with(flood, "nas.home.arpa", RecordType::A, &opts);
    assert_eq!(
        first.rcode(),
        ResponseCode::NoError,
        "the first query is within any burst: {}",
        first.summary()
    );
    let (mut refused, mut answered, mut silent) = (0, 0, 0);
    for _ in 0..300 {
        match try_query(ts.addr(), flood, "nas.home.arpa", RecordType::A, &opts) {
            Ok(r) if r.rcode() == ResponseCode::Refused => refused += 1,
            Ok(_) => answered += 1,
            Err(_) => silent += 1,
        }
        if refused >= 5 {
            break;
        }
    }
    assert!(
        refused >= 1,
        "300 back-to-back queries at rate_limit_qps = 5 must meet REFUSED (answered {answered}, silent {silent})"
    );
    // The limit is per client address: another client is unaffected.
    let r = ts.query(client(159), "nas.home.arpa", RecordType::A);
    assert_eq!(r.rcode(), ResponseCode::NoError, "{}", r.summary());
    assert_eq!(
        r.a(),
        vec![Ipv4Addr::new(192, 168, 1, 10)],
        "{}",
        r.summary()
    );
}

// ----------------------------------------------------------------------------------------------
// Truncation and EDNS payload size
// ----------------------------------------------------------------------------------------------

#[test]
fn large_udp_answers_are_truncated_and_complete_over_tcp() {
    let up = TestUpstream::start();
    up.set("big.example", Reply::many_a(60)); // ~1 KB answer
    up.set("bigtxt.example", Reply::long_txt(1600));
    let ts = start_standard(&up);

    // Fill the cache over TCP first: the full answer.
    let r = ts.query_with(client(160), "big.example", RecordType::A, &QueryOpts::tcp());
    assert!(!r.tc(), "{}", r.summary());
    assert_eq!(
        r.a().len(),
        60,
        "TCP carries the full answer: {}",
        r.summary()
    );

    // UDP without EDNS: 512 bytes at most, so TC.
    let r = ts.query(client(161), "big.example", RecordType::A);
    assert!(
        r.tc(),
        "a 1 KB answer over UDP without EDNS must set TC: {}",
        r.summary()
    );
    assert!(
        r.raw.len() <= 512,
        "UDP answer without EDNS is {} bytes",
        r.raw.len()
    );

    // UDP with EDNS 4096: fits.
    let r = ts.query_with(
        client(162),
        "big.example",
        RecordType::A,
        &QueryOpts::udp().edns(4096),
    );
    assert!(!r.tc(), "{}", r.summary());
    assert_eq!(r.a().len(), 60, "{}", r.summary());

    // UDP with EDNS 1232 and a ~1.6 KB TXT answer: TC; then TCP: the whole TXT.
    let r = ts.query_with(
        client(163),
        "bigtxt.example",
        RecordType::TXT,
        &QueryOpts::udp().edns(1232),
    );
    assert!(
        r.tc(),
        "1.6 KB does not fit an EDNS payload of 1232: {}",
        r.summary()
    );
    assert!(r.raw.len() <= 1232, "answer is {} bytes", r.raw.len());
    let r = ts.query_with(
        client(163),
        "bigtxt.example",
        RecordType::TXT,
        &QueryOpts::tcp().edns(1232),
    );
    assert!(!r.tc(), "{}", r.summary());
    assert_eq!(r.answers_of(RecordType::TXT).len(), 1, "{}", r.summary());
    assert!(r.raw.len() > 1600, "{}", r.summary());

    // And a fresh (uncached) large name over UDP without EDNS.
    up.set("big2.example", Reply::many_a(60));
    let r = ts.query(client(164), "big2.example", RecordType::A);
    assert!(r.tc(), "{}", r.summary());
}

// ----------------------------------------------------------------------------------------------
// Malformed input
// ----------------------------------------------------------------------------------------------

/// Bad packets, each a few bytes to a few hundred.
fn malformed_packets() -> Vec<(&'static str, Vec<u8>)> {
    // Deterministic "random" bytes (xorshift), with QR cleared so it looks like a query.
    let mut x: u32 = 0x9E3779B9;
    let mut random = Vec::new();
    for _ in 0..96 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        random.push(x as u8);
    }
    random[2] &= 0x7f;

    let header = |qd: u16, an: u16| {
        let mut h = vec![0x12, 0x34, 0x01, 0x00];
        h.extend_from_slice(&qd.to_be_bytes());
        h.extend_from_slice(&an.to_be_bytes());
        h.extend_from_slice(&[0, 0, 0, 0]);
        h
    };
    let mut five_questions_none = header(5, 0);
    five_questions_none.truncate(12);

    let mut huge_label = header(1, 0);
    huge_label.push(63);
    huge_label.extend_from_slice(b"abc"); // claims 63 bytes, has 3

    let mut bad_label_type = header(1, 0);
    bad_label_type.push(0x7f); // 0b01xxxxxx: reserved label type
    bad_label_type.extend_from_slice(b"abcdefgh\x00\x00\x01\x00\x01");

    let mut pointer_loop = header(1, 0);
    pointer_loop.extend_from_slice(&[0xC0, 0x0C, 0x00, 0x01, 0x00, 0x01]); // name points at itself

    let mut pointer_pair = header(1, 0);
    // label "a" then a pointer back to offset 12 (the label): a two-step loop
    pointer_pair.extend_from_slice(&[0x01, b'a', 0xC0, 0x0C, 0x00, 0x01, 0x00, 0x01]);

    let mut too_long_name = header(1, 0);
    for _ in 0..6 {
        too_long_name.push(63);
        too_long_name.extend_from_slice(&[b'x'; 63]);
    }
    too_long_name.extend_from_slice(&[0, 0, 1, 0, 1]);

    let mut answer_count_lies = header(1, 3);
    answer_count_lies.extend_from_slice(&encode_name("example.com"));
    answer_count_lies.extend_from_slice(&[0, 1, 0, 1]);

    let mut two_opts = encode_query(
        "example.com",
        RecordType::A,
        &QueryOpts::udp().edns(1232),
        0x1234,
    );
    two_opts[11] = 2; // ARCOUNT = 2
    two_opts.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]); // a second OPT

    vec![
        ("empty", vec![]),
        ("two OPT records", two_opts),
        ("random bytes", random),
        ("truncated header", vec![0x12, 0x34, 0x01, 0x00, 0x00]),
        ("5 questions, none present", five_questions_none),
        ("label length beyond the packet", huge_label),
        ("reserved label type", bad_label_type),
        ("compression pointer to itself", pointer_loop),
        ("compression pointer loop", pointer_pair),
        ("name longer than 255 bytes", too_long_name),
        ("ANCOUNT with no answers", answer_count_lies),
    ]
}

#[test]
fn malformed_udp_packets_get_formerr_or_silence() {
    let up = TestUpstream::start();
    let mut ts = start_standard(&up);
    let c = client(170);
    for (what, bytes) in malformed_packets() {
        if let Some(resp) = send_raw_udp(ts.addr(), c, &bytes) {
            assert!(
                resp.len() >= 12,
                "{what}: answer shorter than a header: {resp:02x?}"
            );
            assert_eq!(
                raw_rcode(&resp),
                Some(1),
                "{what}: expected FORMERR or silence, got {resp:02x?}"
            );
            assert!(resp[2] & 0x80 != 0, "{what}: answer must have QR set");
        }
        assert!(ts.is_running(), "telesink died on {what}");
        // The server answers a normal query right after.
        let r = ts.query(c, "after-garbage.example", RecordType::A);
        assert_forwarded_default(&r, what);
    }
}

#[test]
fn malformed_tcp_input_never_stops_the_server() {
    let up = TestUpstream::start();
    let mut ts = start_standard(&up);
    let c = client(180);
    let frame = |b: &[u8]| {
        let mut f = (b.len() as u16).to_be_bytes().to_vec();
        f.extend_from_slice(b);
        f
    };
    let mut inputs: Vec<(String, Vec<u8>)> = malformed_packets()
        .into_iter()
        .map(|(what, b)| (format!("framed {what}"), frame(&b)))
        .collect();
    inputs.push((
        "unframed text".into(),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
    ));
    inputs.push((
        "length 65535 then 3 bytes".into(),
        vec![0xff, 0xff, 1, 2, 3],
    ));
    inputs.push(("one byte".into(), vec![0x00]));
    inputs.push(("zero-length frame".into(), vec![0x00, 0x00]));

    for (what, bytes) in inputs {
        let resp = send_raw_tcp(ts.addr(), c, &bytes)
            .unwrap_or_else(|| panic!("{what}: TCP connect failed"));
        if resp.len() >= 2 {
            let msg = &resp[2..];
            assert_eq!(
                raw_rcode(msg),
                Some(1),
                "{what}: expected FORMERR or a closed connection, got {resp:02x?}"
            );
        }
        assert!(ts.is_running(), "telesink died on {what}");
        let r = ts.query_with(
            c,
            "after-tcp-garbage.example",
            RecordType::A,
            &QueryOpts::tcp(),
        );
        assert_forwarded_default(&r, &what);
        let r = ts.query(c, "after-tcp-garbage.example", RecordType::A);
        assert_forwarded_default(&r, &what);
    }
}
