//! Unit tests of the policy: SPEC "How a query is answered", step 3, and `[[client]]`,
//! `[[group]]`, `[default]`, `[allow]`. Each policy is built the way the server builds it:
//! config text through the real loader ([`Config::parse`]), list files on disk, then
//! [`Policy::build`]. The DNS-level behaviour of the same rules is in tests/dns_policy.rs.

use std::net::IpAddr;

use super::*;
// The tests load config text the way the server does, then convert at the edge.
use crate::config::Config;
use crate::policy::category::Action::{Allowed, Blocked, Observed};

/// Writes `files` (list name, text) next to a `config.toml` holding `config`, loads it and
/// builds the policy. The directory can go once built: the lists are read by then.
#[track_caller]
fn build(config: &str, files: &[(&str, &str)]) -> Policy {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let config = Config::parse(config, &dir.path().join("config.toml"))
        .unwrap_or_else(|e| panic!("config does not load: {e}\n{config}"));
    Policy::build(&config.policy_spec()).unwrap_or_else(|e| panic!("policy does not build: {e}"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The action for a query of `name` from `from`: what the handler asks of the policy.
fn action(p: &Policy, from: &str, name: &str) -> Option<Action> {
    p.action(p.client(ip(from)), &p.classify_str(name))
}

fn group(p: &Policy, from: &str) -> Option<String> {
    p.group_name(p.client(ip(from))).map(|g| g.to_string())
}

fn client(p: &Policy, from: &str) -> Option<String> {
    p.client_name(p.client(ip(from))).map(|c| c.to_string())
}

fn category_names(p: &Policy, v: &Verdict) -> Vec<String> {
    p.categories
        .names(v.categories)
        .map(|c| c.to_string())
        .collect()
}

/// Runs a table of (client address, name, expected action, why) and reports every mismatch.
#[track_caller]
fn check(p: &Policy, table: &[(&str, &str, Option<Action>, &str)]) {
    let failures: Vec<String> = table
        .iter()
        .filter_map(|&(from, name, want, why)| {
            let got = action(p, from, name);
            (got != want).then(|| {
                format!(
                    "{name} from {from} (group {:?}; {why}): expected {want:?}, got {got:?}",
                    group(p, from)
                )
            })
        })
        .collect();
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

const VENDOR: &str = "tracking.vendor.example\nmetrics.vendor.example\n";
const ADS: &str = "ads.example\n";

/// Two lists, an allow domain and an allow list, groups that block and observe the same
/// categories, and a default.
const PRECEDENCE: &str = r#"
[[list]]
name = "vendorlist"
source = "vendor.txt"
categories = ["telemetry", "vendorx"]

[[list]]
name = "adslist"
source = "ads.txt"
categories = ["ads"]

[allow]
domains = ["ok.tracking.vendor.example"]
lists = ["allow.txt"]

[[group]]
name = "observer"
clients = ["10.0.0.1"]
block = ["telemetry", "ads"]
observe = ["vendorx"]

[[group]]
name = "blocker"
clients = ["10.0.0.2"]
block = ["telemetry", "vendorx"]
observe = []

[[group]]
name = "ads-only"
clients = ["10.0.0.3"]
block = ["ads"]
observe = []

[default]
block = []
observe = ["ads"]
"#;

fn precedence_policy() -> Policy {
    build(
        PRECEDENCE,
        &[
            ("vendor.txt", VENDOR),
            ("ads.txt", ADS),
            ("allow.txt", "viaallowlist.metrics.vendor.example\n"),
        ],
    )
}

#[test]
#[rustfmt::skip] // tables: one case a line
fn allow_exception_beats_observe_beats_block() {
    let p = precedence_policy();
    check(
        &p,
        &[
            // observe > block: the observer group blocks telemetry but observes vendorx, and
            // the vendor list carries both.
            ("10.0.0.1", "tracking.vendor.example", Some(Observed), "observe wins over block"),
            ("10.0.0.1", "ads.example", Some(Blocked), "blocks ads, observes nothing of it"),
            ("10.0.0.2", "tracking.vendor.example", Some(Blocked), "blocks both categories"),
            // allow exception > everything, for every group and the default.
            ("10.0.0.1", "ok.tracking.vendor.example", Some(Allowed), "[allow] domains"),
            ("10.0.0.2", "ok.tracking.vendor.example", Some(Allowed), "[allow] domains"),
            ("10.0.0.2", "x.ok.tracking.vendor.example", Some(Allowed), "subdomain of an allow domain"),
            ("10.0.0.2", "viaallowlist.metrics.vendor.example", Some(Allowed), "[allow] lists"),
            ("10.0.0.9", "ok.tracking.vendor.example", Some(Allowed), "default, allow domain"),
            // The parent of an allow domain stays blocked.
            ("10.0.0.2", "metrics.vendor.example", Some(Blocked), "allow rules name a subtree only"),
            // A matched category the group neither blocks nor observes is noted as allowed.
            ("10.0.0.3", "tracking.vendor.example", Some(Allowed), "neither blocked nor observed"),
            ("10.0.0.3", "ads.example", Some(Blocked), "ads-only blocks ads"),
            // [default] for an address no group names.
            ("10.0.0.9", "ads.example", Some(Observed), "[default] observes ads"),
            ("10.0.0.9", "tracking.vendor.example", Some(Allowed), "[default] blocks nothing"),
            // No list names it: no action at all.
            ("10.0.0.1", "example.org", None, "unlisted"),
            ("10.0.0.1", "vendor.example", None, "a parent of a listed name is not listed"),
        ],
    );
}

#[test]
fn an_exception_keeps_the_categories_it_overrides() {
    let p = precedence_policy();
    let v = p.classify_str("ok.tracking.vendor.example");
    assert!(v.exception);
    assert_eq!(category_names(&p, &v), ["telemetry", "vendorx"]);
    assert_eq!(v.list, Some(ListId(0)));
    // Not an exception: the plain verdict of a listed name.
    let v = p.classify_str("tracking.vendor.example");
    assert!(!v.exception && v.matched());
    let v = p.classify_str("example.org");
    assert!(!v.matched());
    assert_eq!(v, Verdict::default());
}

/// Clients named by `[[client]]` (exact addresses and a CIDR) and groups naming clients by
/// name or by CIDR, in an order where file order, not specificity, decides.
const GROUPS: &str = r#"
[[list]]
name = "vendorlist"
source = "vendor.txt"
categories = ["telemetry", "vendorx"]

[[list]]
name = "adslist"
source = "ads.txt"
categories = ["ads"]

[[client]]
name = "anna-phone"
addresses = ["192.168.1.10", "fd00::10"]

[[client]]
name = "tv"
addresses = ["192.168.1.11"]

[[client]]
name = "guest-net"
addresses = ["192.168.9.0/24"]

[[group]]
name = "phones"
clients = ["anna-phone", "192.168.1.32/28"]
block = ["telemetry"]
observe = ["vendorx"]

[[group]]
name = "strict"
clients = ["anna-phone", "tv", "192.168.1.40/32", "192.168.1.48/29"]
block = ["telemetry", "vendorx", "ads"]
observe = []

[[group]]
name = "guests"
clients = ["guest-net"]
block = ["ads"]
observe = []

[default]
block = ["telemetry"]
observe = []
"#;

fn groups_policy() -> Policy {
    build(GROUPS, &[("vendor.txt", VENDOR), ("ads.txt", ADS)])
}

#[test]
#[rustfmt::skip] // tables: one case a line
fn the_first_group_in_file_order_wins() {
    let p = groups_policy();
    // anna-phone is named in phones and in strict: phones comes first.
    assert_eq!(group(&p, "192.168.1.10").as_deref(), Some("phones"));
    // 192.168.1.40 is in phones' /28 and in strict's /32: the earlier group wins, not the
    // more specific network.
    assert_eq!(group(&p, "192.168.1.40").as_deref(), Some("phones"));
    // tv is only in strict.
    assert_eq!(group(&p, "192.168.1.11").as_deref(), Some("strict"));
    // In strict's /29 only.
    assert_eq!(group(&p, "192.168.1.50").as_deref(), Some("strict"));
    // Named by no group: [default].
    assert_eq!(group(&p, "192.168.1.99"), None);
    check(
        &p,
        &[
            ("192.168.1.10", "tracking.vendor.example", Some(Observed), "phones, not strict"),
            ("192.168.1.10", "ads.example", Some(Allowed), "phones does not block ads"),
            ("192.168.1.40", "ads.example", Some(Allowed), "phones' /28 before strict's /32"),
            ("192.168.1.11", "tracking.vendor.example", Some(Blocked), "strict"),
            ("192.168.1.50", "ads.example", Some(Blocked), "strict by CIDR"),
            ("192.168.1.99", "tracking.vendor.example", Some(Blocked), "[default]"),
            ("192.168.1.99", "ads.example", Some(Allowed), "[default] does not block ads"),
        ],
    );
}

#[test]
fn a_client_is_named_by_address_or_cidr_and_grouped_by_name_or_cidr() {
    let p = groups_policy();
    // By one of its exact addresses, IPv4 or IPv6.
    assert_eq!(client(&p, "192.168.1.10").as_deref(), Some("anna-phone"));
    assert_eq!(client(&p, "fd00::10").as_deref(), Some("anna-phone"));
    assert_eq!(group(&p, "fd00::10").as_deref(), Some("phones"));
    // An IPv4-mapped IPv6 source (a dual-stack socket) is its IPv4 address.
    assert_eq!(
        client(&p, "::ffff:192.168.1.10").as_deref(),
        Some("anna-phone")
    );
    assert_eq!(group(&p, "::ffff:192.168.1.11").as_deref(), Some("strict"));
    // A `[[client]]` given as a network names every address in it, and a group naming that
    // client by name takes them all.
    assert_eq!(client(&p, "192.168.9.200").as_deref(), Some("guest-net"));
    assert_eq!(group(&p, "192.168.9.200").as_deref(), Some("guests"));
    // In a group's CIDR but no `[[client]]`: grouped, not named.
    assert_eq!(client(&p, "192.168.1.33"), None);
    assert_eq!(group(&p, "192.168.1.33").as_deref(), Some("phones"));
    // Neither.
    assert_eq!(client(&p, "10.1.1.1"), None);
    assert_eq!(group(&p, "10.1.1.1"), None);
    assert_eq!(
        p.client(ip("10.1.1.1")),
        ClientMatch {
            client: None,
            group: None
        }
    );
}

#[test]
fn observe_block_and_allow_per_group_from_the_same_verdict() {
    let p = groups_policy();
    let v = p.classify_str("metrics.vendor.example");
    let of = |from: &str| p.action(p.client(ip(from)), &v);
    assert_eq!(
        of("192.168.1.10"),
        Some(Observed),
        "phones observes vendorx"
    );
    assert_eq!(of("192.168.1.11"), Some(Blocked), "strict blocks it");
    assert_eq!(
        of("192.168.9.1"),
        Some(Allowed),
        "guests neither blocks nor observes it"
    );
    assert_eq!(
        of("172.16.0.1"),
        Some(Blocked),
        "[default] blocks telemetry"
    );
    // The sets behind those answers, as explain shows them.
    let (block, observe) = p.group_sets(p.client(ip("192.168.1.10")));
    let names = |s| {
        p.categories
            .names(s)
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(block), ["telemetry"]);
    assert_eq!(names(observe), ["vendorx"]);
    let (block, observe) = p.group_sets(p.client(ip("172.16.0.1")));
    assert_eq!(names(block), ["telemetry"]);
    assert!(observe.is_empty());
}

#[test]
#[rustfmt::skip] // tables: one case a line
fn the_bypass_category_is_built_in_and_follows_the_groups() {
    // `bypass` exists without any list naming it (the handler counts its defences under it).
    let p = build("[default]\nblock = []\nobserve = []\n", &[]);
    assert_eq!(&**p.categories.name(p.bypass), BYPASS);
    assert_eq!(p.categories.get(BYPASS), Some(p.bypass));

    // A list of DoH endpoints tagged `bypass` is blocked, observed or allowed like any other
    // category, by the client's group.
    let p = build(
        r#"
[[list]]
name = "doh"
source = "doh.txt"
categories = ["bypass"]

[[group]]
name = "locked"
clients = ["10.0.0.1"]
block = ["bypass"]
observe = []

[[group]]
name = "watched"
clients = ["10.0.0.2"]
block = []
observe = ["bypass"]

[default]
block = []
observe = []
"#,
        &[("doh.txt", "dns.google\ncloudflare-dns.com\n")],
    );
    let v = p.classify_str("dns.google");
    assert_eq!(v.categories, CategorySet::single(p.bypass));
    check(
        &p,
        &[
            ("10.0.0.1", "dns.google", Some(Blocked), "locked blocks bypass"),
            ("10.0.0.2", "cloudflare-dns.com", Some(Observed), "watched observes bypass"),
            ("10.0.0.3", "dns.google", Some(Allowed), "[default] neither"),
            ("10.0.0.1", "example.org", None, "not a bypass endpoint"),
        ],
    );

    let p = build("[default]\nblock = []\nobserve = [\"bypass\"]\n", &[]);
    assert!(p.default_observe.contains(p.bypass));
    assert!(!p.default_block.contains(p.bypass));
}

#[test]
#[rustfmt::skip] // tables: one case a line
fn regex_rules_block_and_adblock_exceptions_allow() {
    let list = "\
||tracking.vendor.example^
/^ad[0-9]+\\.vendor\\.example$/
@@||ok.tracking.vendor.example^
@@/^ad7[0-9]*\\.vendor\\.example$/
";
    let p = build(
        r#"
[[list]]
name = "mixed"
source = "mixed.txt"
categories = ["telemetry"]

[default]
block = ["telemetry"]
observe = []
"#,
        &[("mixed.txt", list)],
    );
    assert!(p.has_regex());
    check(
        &p,
        &[
            ("10.0.0.1", "ad12.vendor.example", Some(Blocked), "regex block"),
            ("10.0.0.1", "adx.vendor.example", None, "regex does not match"),
            ("10.0.0.1", "x.ad12.vendor.example", None, "regex is anchored"),
            ("10.0.0.1", "ad71.vendor.example", Some(Allowed), "regex exception"),
            ("10.0.0.1", "tracking.vendor.example", Some(Blocked), "adblock block"),
            ("10.0.0.1", "a.tracking.vendor.example", Some(Blocked), "and its subdomains"),
            ("10.0.0.1", "ok.tracking.vendor.example", Some(Allowed), "@@ exception"),
            ("10.0.0.1", "a.ok.tracking.vendor.example", Some(Allowed), "@@ covers subdomains"),
        ],
    );
    // Without the dotted text, regexes are not consulted (the handler passes it when it has
    // regex rules).
    let labels = crate::policy::matcher::split_labels("ad12.vendor.example");
    assert!(!p.classify(labels, None).matched());
}

#[test]
fn without_regex_rules_no_regex_set_is_built() {
    let p = precedence_policy();
    assert!(!p.has_regex());
}

#[test]
fn the_first_list_in_config_order_names_the_block() {
    let p = build(
        r#"
[[list]]
name = "first"
source = "a.txt"
categories = ["telemetry"]

[[list]]
name = "second"
source = "b.txt"
categories = ["ads"]

[[list]]
name = "exact"
source = "c.txt"
subdomains = false
categories = ["ads"]

[default]
block = ["telemetry", "ads"]
observe = []
"#,
        &[
            ("a.txt", "shared.example\n"),
            ("b.txt", "shared.example\nonly-b.example\n"),
            ("c.txt", "exact.example\n"),
        ],
    );
    let v = p.classify_str("x.shared.example");
    assert_eq!(v.list, Some(ListId(0)));
    assert_eq!(&*p.list(ListId(0)).name, "first");
    assert_eq!(category_names(&p, &v), ["telemetry", "ads"]);
    assert_eq!(
        &*p.block_text(&v),
        "blocked by list first (category telemetry, ads)"
    );
    let v = p.classify_str("only-b.example");
    assert_eq!(&*p.block_text(&v), "blocked by list second (category ads)");
    // `subdomains = false`: the name itself only.
    assert_eq!(p.classify_str("exact.example").list, Some(ListId(2)));
    assert!(!p.classify_str("www.exact.example").matched());
}

#[test]
fn many_lists_share_slots_and_still_block() {
    // 70 lists of one category: more lists than the matcher has slots. The first 48 have a
    // slot each (a block names its exact list); later ones share one with a list of the same
    // categories (a block names that slot's first list, here l0).
    let mut config = String::from("[default]\nblock = [\"telemetry\"]\nobserve = []\n");
    let mut files = Vec::new();
    for i in 0..70 {
        config.push_str(&format!(
            "[[list]]\nname = \"l{i}\"\nsource = \"l{i}.txt\"\ncategories = [\"telemetry\"]\n"
        ));
        files.push((format!("l{i}.txt"), format!("n{i}.example\n")));
    }
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let p = build(&config, &files);
    assert_eq!(p.lists.len(), 70);
    for i in 0..70 {
        let v = p.classify_str(&format!("n{i}.example"));
        assert_eq!(
            action(&p, "10.0.0.1", &format!("n{i}.example")),
            Some(Blocked),
            "n{i}"
        );
        let named = &*p.list(v.list.expect("a block names a list")).name;
        if i < 48 {
            assert_eq!(named, format!("l{i}"), "the exact list of n{i}");
        } else {
            // The first list with the same categories: l0's slot.
            assert_eq!(named, "l0", "n{i} names the first list of its slot");
        }
    }
}

#[test]
fn allow_domains_match_the_name_and_its_subdomains_only() {
    let p = precedence_policy();
    assert!(p.allow_domains_match("ok.tracking.vendor.example"));
    assert!(p.allow_domains_match("a.b.ok.tracking.vendor.example"));
    assert!(!p.allow_domains_match("tracking.vendor.example"));
    // A suffix that is not a label boundary is another name.
    assert!(!p.allow_domains_match("notok.tracking.vendor.example"));
}
