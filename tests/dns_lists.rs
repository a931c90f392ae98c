//! List forms and quirks (SPEC "Lists"), observed through DNS answers: a listed name gets the
//! null sinkhole answer and never reaches the upstream; an unlisted one gets the upstream's.
//!
//! Fixtures: `tests/fixtures/dns/{mixed,rpz,exact}.txt`; the CRLF + BOM list is written by the
//! test itself so that no tool normalises its bytes.

mod support;

use std::net::Ipv4Addr;

use support::*;

const TTL: u32 = 5;

fn start(up: &TestUpstream) -> TelesinkProcess {
    let crlf = "\u{feff}crlf-first.example\r\n# comment\r\n0.0.0.0 crlf-hosts.example\r\n||crlf-adblock.example^\r\n*.crlf-wild.example\r\n";
    Telesink::new()
        .upstream(up)
        .fixture("mixed.txt")
        .fixture("rpz.txt")
        .fixture("exact.txt")
        .file("crlf.txt", crlf)
        .toml(&format!(
            r#"
[blocking]
mode = "null"
ttl = {TTL}

[[list]]
name = "mixed"
source = "mixed.txt"
categories = ["telemetry", "mixedcat"]

[[list]]
name = "rpzlist"
source = "rpz.txt"
format = "rpz"
categories = ["telemetry"]

[[list]]
name = "exactlist"
source = "exact.txt"
subdomains = false
categories = ["telemetry"]

[[list]]
name = "crlflist"
source = "crlf.txt"
categories = ["telemetry"]

[default]
block = ["telemetry"]
"#
        ))
        .start()
}

/// Check that each of `names` gets the null sinkhole (A 0.0.0.0) and is not forwarded.
#[track_caller]
fn assert_blocked(ts: &TelesinkProcess, up: &TestUpstream, from: Ipv4Addr, names: &[&str]) {
    let mut failures = Vec::new();
    for name in names {
        let r = ts.query(from, name, RecordType::A);
        if r.rcode() != ResponseCode::NoError || r.a() != vec![Ipv4Addr::UNSPECIFIED] {
            failures.push(format!(
                "{name}: expected blocked (A 0.0.0.0): {}",
                r.summary()
            ));
        }
        if up.count(name) != 0 {
            failures.push(format!("{name}: blocked name reached the upstream"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Check that each of `names` gets the upstream's answer (it is not blocked).
#[track_caller]
fn assert_not_blocked(ts: &TelesinkProcess, up: &TestUpstream, from: Ipv4Addr, names: &[&str]) {
    let mut failures = Vec::new();
    for name in names {
        let r = ts.query(from, name, RecordType::A);
        if r.rcode() != ResponseCode::NoError || r.a() != vec![DEFAULT_V4] {
            failures.push(format!(
                "{name}: expected the upstream's answer: {}",
                r.summary()
            ));
        }
        if up.count(name) == 0 {
            failures.push(format!("{name}: not forwarded"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn domain_form_blocks_the_name_and_its_subdomains() {
    let up = TestUpstream::start();
    let ts = start(&up);
    assert_blocked(
        &ts,
        &up,
        client(10),
        &[
            "tracking.mixed.example",
            "a.tracking.mixed.example",
            "x.y.tracking.mixed.example",
        ],
    );
    assert_not_blocked(
        &ts,
        &up,
        client(11),
        &["mixed.example", "nottracking.mixed.example"],
    );
}

#[test]
fn inline_comments_case_and_trailing_dots() {
    let up = TestUpstream::start();
    let ts = start(&up);
    assert_blocked(
        &ts,
        &up,
        client(12),
        &["metrics.inline.example", "sub.metrics.inline.example"],
    );
    // Listed as `UPPER.Case.Example.`: matched in any case.
    assert_blocked(
        &ts,
        &up,
        client(13),
        &[
            "upper.case.example",
            "UPPER.CASE.EXAMPLE",
            "Www.Upper.Case.Example",
        ],
    );
}

#[test]
fn underscore_and_unicode_names() {
    let up = TestUpstream::start();
    let ts = start(&up);
    assert_blocked(
        &ts,
        &up,
        client(14),
        &["_telemetry._tcp.underscore.example"],
    );
    // Listed as `tëlemetry.unicode.example`: blocked by its punycode form.
    let puny = Name::from_utf8("tëlemetry.unicode.example")
        .unwrap()
        .to_ascii();
    let puny = puny.trim_end_matches('.');
    assert!(puny.starts_with("xn--"), "{puny}");
    let sub = format!("www.{puny}");
    assert_blocked(&ts, &up, client(15), &[puny, sub.as_str()]);
}

#[test]
fn hosts_form_several_names_per_line_and_tabs() {
    let up = TestUpstream::start();
    let ts = start(&up);
    assert_blocked(
        &ts,
        &up,
        client(16),
        &[
            "hosts-one.example",
            "hosts-two.example",
            "hosts-tab.example",
            "hosts-tab2.example",
            "sub.hosts-two.example",
        ],
    );
}

#[test]
fn hosts_localhost_entries_are_ignored() {
    let up = TestUpstream::start();
    let ts = start(&up);
    // `127.0.0.1 localhost` in a list does not sinkhole localhost: it is still answered locally.
    let r = ts.query(client(17), "localhost", RecordType::A);
    assert_eq!(r.rcode(), ResponseCode::NoError, "{}", r.summary());
    assert_eq!(r.a(), vec![Ipv4Addr::LOCALHOST], "{}", r.summary());
    up.assert_not_forwarded("localhost");
    // `255.255.255.255 broadcasthost` is a hosts-file boilerplate line, not a block entry.
    // (A single-label name need not be forwarded, but it must not get the sinkhole.)
    let r = ts.query(client(17), "broadcasthost", RecordType::A);
    assert!(!r.a().contains(&Ipv4Addr::UNSPECIFIED), "{}", r.summary());
}

#[test]
fn wildcard_form_blocks_the_base_name_too() {
    let up = TestUpstream::start();
    let ts = start(&up);
    assert_blocked(
        &ts,
        &up,
        client(18),
        &["wild.example", "a.wild.example", "a.b.wild.example"],
    );
    assert_not_blocked(&ts, &up, client(18), &["notwild.example"]);
}

#[test]
fn adblock_rules_exceptions_and_modifiers() {
    let up = TestUpstream::start();
    let ts = start(&up);
    assert_blocked(
        &ts,
        &up,
        client(19),
        &["adblock.example", "x.adblock.example"],
    );
    // `@@||ok.adblock.example^`: exception, name and subdomains.
    assert_not_blocked(
        &ts,
        &up,
        client(20),
        &["ok.adblock.example", "sub.ok.adblock.example"],
    );
    // `||thirdparty.example^$third-party`: a modifier a DNS server cannot honour: skipped.
    assert_not_blocked(&ts, &up, client(21), &["thirdparty.example"]);
}

#[test]
fn dnsmasq_forms() {
    let up = TestUpstream::start();
    let ts = start(&up);
    assert_blocked(
        &ts,
        &up,
        client(22),
        &[
            "dnsmasq-addr.example",
            "sub.dnsmasq-addr.example",
            "dnsmasq-server.example",
            "sub.dnsmasq-server.example",
            "dnsmasq-local.example",
        ],
    );
}

#[test]
fn regex_form() {
    let up = TestUpstream::start();
    let ts = start(&up);
    assert_blocked(
        &ts,
        &up,
        client(23),
        &["ad1.example.net", "ad42.example.net"],
    );
    assert_not_blocked(
        &ts,
        &up,
        client(24),
        &["ad.example.net", "adx.example.net", "bad1.example.net"],
    );
}

#[test]
fn rpz_zone_with_preamble() {
    let up = TestUpstream::start();
    let ts = start(&up);
    assert_blocked(
        &ts,
        &up,
        client(25),
        &[
            "rpz-blocked.example",
            "a.rpz-wild.example",
            "b.c.rpz-wild.example",
            "rpz-class.example",
        ],
    );
    // The preamble's owner names (`@`, `localhost.`) are not entries.
    assert_not_blocked(&ts, &up, client(26), &["rpz-unlisted.example"]);
    let r = ts.query(client(26), "localhost", RecordType::A);
    assert_eq!(r.a(), vec![Ipv4Addr::LOCALHOST], "{}", r.summary());
}

#[test]
fn subdomains_false_matches_exact_names_only() {
    let up = TestUpstream::start();
    let ts = start(&up);
    assert_blocked(
        &ts,
        &up,
        client(27),
        &["exact.example", "exact-hosts.example"],
    );
    assert_not_blocked(
        &ts,
        &up,
        client(28),
        &["sub.exact.example", "www.exact-hosts.example"],
    );
}

#[test]
fn crlf_and_bom_file() {
    let up = TestUpstream::start();
    let ts = start(&up);
    assert_blocked(
        &ts,
        &up,
        client(29),
        &[
            "crlf-first.example", // first line, right after the BOM
            "crlf-hosts.example",
            "crlf-adblock.example",
            "sub.crlf-adblock.example",
            "crlf-wild.example",
            "x.crlf-wild.example",
        ],
    );
}

#[test]
fn bad_line_does_not_fail_the_list() {
    // The mixed list has an invalid line; its other entries still load (the tests above), and the
    // words of the bad line are not entries.
    let up = TestUpstream::start();
    let ts = start(&up);
    assert_blocked(&ts, &up, client(30), &["tracking.mixed.example"]);
    for word in ["valid", "entry", "this"] {
        let r = ts.query(client(30), word, RecordType::A);
        assert!(
            !r.a().contains(&Ipv4Addr::UNSPECIFIED),
            "{word}: {}",
            r.summary()
        );
    }
}
