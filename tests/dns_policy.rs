//! Per-client policy (SPEC `[[client]]`, `[[group]]`, `[default]`, `[allow]`, and step 3 of
//! "How a query is answered"): groups by client name and by CIDR, the first group in file order
//! wins, `[default]` for the rest, and allow exception > observe > block.

mod support;

use std::net::Ipv4Addr;

use support::*;

const CONFIG: &str = r#"
[blocking]
mode = "null"
ttl = 7

[[list]]
name = "vendorlist"
source = "vendor.txt"
categories = ["telemetry", "vendorx"]

[[list]]
name = "adslist"
source = "ads.txt"
categories = ["ads"]

[[list]]
name = "sociallist"
source = "social.txt"
categories = ["social"]

[allow]
domains = ["ok.tracking.vendor.example"]
lists = ["allow.txt"]

[[client]]
name = "anna-phone"
addresses = ["127.0.0.10"]

[[client]]
name = "tv"
addresses = ["127.0.0.11"]

[[client]]
name = "laptop"
addresses = ["127.0.0.12"]

[[group]]
name = "phones"
clients = ["anna-phone", "127.0.0.32/28"]
block = ["telemetry", "ads"]
observe = ["vendorx"]

[[group]]
name = "strict"
clients = ["anna-phone", "tv", "127.0.0.48/29", "127.0.0.44/32"]
block = ["telemetry", "ads", "social"]
observe = []

[[group]]
name = "laptops"
clients = ["laptop"]
block = ["ads"]
observe = []

[default]
block = ["telemetry"]
observe = []
"#;

const ANNA: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 10); // phones (also named in strict, later)
const TV: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11); // strict
const LAPTOP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 12); // laptops
const PHONES_CIDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 33); // phones by 127.0.0.32/28
const BOTH_CIDRS: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 44); // phones (/28) before strict (/32)
const STRICT_CIDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 50); // strict by 127.0.0.48/29
const NOBODY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 99); // [default]

fn start(up: &TestUpstream) -> TelesinkProcess {
    Telesink::new()
        .upstream(up)
        .fixture("vendor.txt")
        .fixture("ads.txt")
        .fixture("social.txt")
        .file(
            "allow.txt",
            "# allow list (exceptions for everyone)\nviaallowlist.tracking.vendor.example\n",
        )
        .toml(CONFIG)
        .start()
}

#[derive(Debug, PartialEq)]
enum Seen {
    Blocked,
    Answered,
}

fn outcome(ts: &TelesinkProcess, from: Ipv4Addr, name: &str) -> (Seen, String) {
    let r = ts.query(from, name, RecordType::A);
    let seen = if r.rcode() == ResponseCode::NoError && r.a() == vec![Ipv4Addr::UNSPECIFIED] {
        Seen::Blocked
    } else if r.rcode() == ResponseCode::NoError && r.a() == vec![DEFAULT_V4] {
        Seen::Answered
    } else {
        panic!(
            "{name} from {from}: neither the sinkhole nor the upstream's answer: {}",
            r.summary()
        )
    };
    (seen, r.summary())
}

/// Run a table of (client, name, expected) and report every mismatch at once.
#[track_caller]
fn check(ts: &TelesinkProcess, table: &[(Ipv4Addr, &str, Seen, &str)]) {
    let mut failures = Vec::new();
    for (from, name, want, why) in table {
        let (got, summary) = outcome(ts, *from, name);
        if &got != want {
            failures.push(format!(
                "{name} from {from} ({why}): expected {want:?}, got {got:?}: {summary}"
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn groups_by_client_name_and_cidr_first_group_wins() {
    let up = TestUpstream::start();
    let ts = start(&up);
    use Seen::*;
    check(
        &ts,
        &[
            (ANNA, "ads.example", Blocked, "phones blocks ads"),
            (
                ANNA,
                "social.example",
                Answered,
                "phones is anna's first group; strict (later) would block social",
            ),
            (TV, "social.example", Blocked, "strict by client name"),
            (TV, "ads.example", Blocked, "strict"),
            (PHONES_CIDR, "ads.example", Blocked, "phones by CIDR"),
            (PHONES_CIDR, "social.example", Answered, "phones by CIDR"),
            (
                BOTH_CIDRS,
                "social.example",
                Answered,
                "in both groups' CIDRs: phones comes first",
            ),
            (STRICT_CIDR, "social.example", Blocked, "strict by CIDR"),
            (LAPTOP, "ads.example", Blocked, "laptops blocks ads"),
            (
                LAPTOP,
                "tracking.vendor.example",
                Answered,
                "laptops does not block telemetry; [default] does not apply",
            ),
            (
                NOBODY,
                "tracking.vendor.example",
                Blocked,
                "[default] blocks telemetry",
            ),
            (
                NOBODY,
                "ads.example",
                Answered,
                "[default] does not block ads",
            ),
            (
                NOBODY,
                "social.example",
                Answered,
                "[default] does not block social",
            ),
        ],
    );
}

#[test]
fn observe_beats_block_and_is_answered_for_real() {
    let up = TestUpstream::start();
    let ip = Ipv4Addr::new(198, 51, 100, 77);
    up.set("tracking.vendor.example", Reply::a(ip));
    let ts = start(&up);

    // anna's group blocks "telemetry" but observes "vendorx"; the list has both: observe wins,
    // and the answer is the real upstream one.
    let r = ts.query(ANNA, "tracking.vendor.example", RecordType::A);
    assert_eq!(r.a(), vec![ip], "observed for anna-phone: {}", r.summary());
    assert_eq!(up.count("tracking.vendor.example"), 1, "{:#?}", up.seen());
    let r = ts.query(PHONES_CIDR, "tracking.vendor.example", RecordType::A);
    assert_eq!(
        r.a(),
        vec![ip],
        "observed for the phones CIDR: {}",
        r.summary()
    );

    // The same name, now cached, is still blocked for clients whose group blocks it.
    for from in [TV, STRICT_CIDR, NOBODY] {
        let r = ts.query(from, "tracking.vendor.example", RecordType::A);
        assert_eq!(
            r.a(),
            vec![Ipv4Addr::UNSPECIFIED],
            "blocked for {from}: {}",
            r.summary()
        );
        assert!(
            r.answers().iter().all(|rec| rec.ttl == 7),
            "{}",
            r.summary()
        );
    }
    // And observed again afterwards.
    let r = ts.query(ANNA, "www.tracking.vendor.example", RecordType::A);
    assert_eq!(r.a(), vec![DEFAULT_V4], "{}", r.summary());
}

#[test]
fn allow_exception_is_answered_for_everyone() {
    let up = TestUpstream::start();
    let ts = start(&up);
    use Seen::*;
    check(
        &ts,
        &[
            (
                TV,
                "ok.tracking.vendor.example",
                Answered,
                "allow exception beats strict's block",
            ),
            (
                NOBODY,
                "ok.tracking.vendor.example",
                Answered,
                "allow exception beats [default]'s block",
            ),
            (
                ANNA,
                "ok.tracking.vendor.example",
                Answered,
                "allow exception",
            ),
            (
                TV,
                "sub.ok.tracking.vendor.example",
                Answered,
                "parents are looked up in the allow exceptions too",
            ),
            (
                TV,
                "viaallowlist.tracking.vendor.example",
                Answered,
                "[allow] lists: exceptions from a file",
            ),
            (
                NOBODY,
                "viaallowlist.tracking.vendor.example",
                Answered,
                "[allow] lists",
            ),
            (
                TV,
                "other.tracking.vendor.example",
                Blocked,
                "a sibling of the exception stays blocked",
            ),
            (
                TV,
                "tracking.vendor.example",
                Blocked,
                "the listed name itself stays blocked",
            ),
        ],
    );
    assert!(
        up.count("ok.tracking.vendor.example") >= 1,
        "{:#?}",
        up.seen()
    );
    up.assert_not_forwarded("other.tracking.vendor.example");
}

#[test]
fn cname_cloaking_follows_the_clients_policy() {
    let up = TestUpstream::start();
    let real = Ipv4Addr::new(203, 0, 113, 50);
    up.set(
        "cdn-alias.example.org",
        Reply::cname_chain(&["edge.tracking.vendor.example"], real),
    );
    let ts = start(&up);

    // anna observes "vendorx": the chain is answered for real (and may be cached now).
    let r = ts.query(ANNA, "cdn-alias.example.org", RecordType::A);
    assert_eq!(
        r.a(),
        vec![real],
        "observed for anna-phone: {}",
        r.summary()
    );
    // tv blocks "telemetry": the same upstream answer is replaced by the block answer.
    let r = ts.query(TV, "cdn-alias.example.org", RecordType::A);
    assert!(
        !r.a().contains(&real),
        "cloaked tracker leaked to tv: {}",
        r.summary()
    );
    assert_eq!(r.a(), vec![Ipv4Addr::UNSPECIFIED], "{}", r.summary());
    // [default] blocks "telemetry" too.
    let r = ts.query(NOBODY, "cdn-alias.example.org", RecordType::A);
    assert_eq!(r.a(), vec![Ipv4Addr::UNSPECIFIED], "{}", r.summary());
    // laptops does not block telemetry: real answer.
    let r = ts.query(LAPTOP, "cdn-alias.example.org", RecordType::A);
    assert_eq!(r.a(), vec![real], "{}", r.summary());
}
