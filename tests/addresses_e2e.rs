//! Telemetry addresses on loopback: learnt from observed answers and from background lookups
//! of blocked names, shared CDN addresses left out, expiry, the HTTP export, the CLI, the
//! metric, and the configuration errors. The nftables side runs in network namespaces
//! (`addresses_netns.rs`).

mod support;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use support::*;

/// The default client (blocks telemetry) and an observing one.
const BLOCKED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const WATCHER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

fn upstream() -> TestUpstream {
    let up = TestUpstream::start();
    up.set_default(Reply::a("192.0.2.99".parse().unwrap()));
    up.set(
        "tracking.vendor.example",
        Reply::Addrs {
            v4: vec!["203.0.113.5".parse().unwrap()],
            v6: vec!["2001:db8:77::5".parse().unwrap()],
            ttl: 300,
        },
    );
    up.set(
        "metrics.vendor.example",
        Reply::a("203.0.113.6".parse().unwrap()),
    );
    // A telemetry name and a shop share a CDN front.
    up.set(
        "cdn.vendor.example",
        Reply::a("198.51.100.9".parse().unwrap()),
    );
    up.set(
        "www.shop.example",
        Reply::a("198.51.100.9".parse().unwrap()),
    );
    up.set(
        "short.vendor.example",
        Reply::Addrs {
            v4: vec!["203.0.113.77".parse().unwrap()],
            v6: vec![],
            ttl: 2,
        },
    );
    up
}

fn start(up: &TestUpstream, addresses: &str) -> TelesinkProcess {
    Telesink::new()
        .upstream(up)
        .file(
            "vendor.txt",
            "tracking.vendor.example\nmetrics.vendor.example\ncdn.vendor.example\nshort.vendor.example\n",
        )
        .toml(&format!(
            r#"
[[list]]
name = "vendor"
source = "vendor.txt"
categories = ["telemetry"]

[[client]]
name = "watcher"
addresses = ["{WATCHER}"]

[[group]]
name = "watching"
clients = ["watcher"]
observe = ["telemetry"]

{addresses}
"#
        ))
        .start()
}

fn addresses_txt(p: &TelesinkProcess, query: &str) -> String {
    let (status, body) = http_get(
        p.metrics_addr(),
        &format!("/addresses/telemetry.txt{query}"),
    )
    .unwrap_or_else(|e| panic!("GET /addresses/telemetry.txt: {e}"));
    assert_eq!(status, 200, "{body}");
    body
}

/// Waits (polling, no timing assertion) until `cond` holds for the text export.
#[track_caller]
fn wait_for(p: &TelesinkProcess, what: &str, cond: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let body = addresses_txt(p, "");
        if cond(&body) {
            return body;
        }
        if Instant::now() > deadline {
            panic!("{what}: /addresses/telemetry.txt is\n{body}\n{}", p.logs());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn blocked_and_observed_names_are_learnt_and_served() {
    let up = upstream();
    let p = start(&up, "[addresses]\n");

    // Blocked for the default client: the answer is the sinkhole's, and the learner looks the
    // name up in the background, once however often it is asked.
    for _ in 0..5 {
        p.assert_blocked(BLOCKED, "tracking.vendor.example");
    }
    let body = wait_for(&p, "the blocked name's addresses", |b| {
        b.contains("2001:db8:77::5")
    });
    assert_eq!(body, "203.0.113.5\n2001:db8:77::5\n", "IPv4 then IPv6");
    assert_eq!(up.count_type("tracking.vendor.example", RecordType::A), 1);

    // Observed for the watcher: forwarded, and its answer learnt.
    let r = p.query(WATCHER, "metrics.vendor.example", RecordType::A);
    assert_eq!(r.a(), vec!["203.0.113.6".parse::<Ipv4Addr>().unwrap()]);
    let body = wait_for(&p, "the observed answer", |b| b.contains("203.0.113.6"));
    assert_eq!(body, "203.0.113.5\n203.0.113.6\n2001:db8:77::5\n");
    assert_eq!(
        addresses_txt(&p, "?family=ipv4"),
        "203.0.113.5\n203.0.113.6\n"
    );
    assert_eq!(addresses_txt(&p, "?family=ipv6"), "2001:db8:77::5\n");

    // A CDN address that also serves an unrelated name is left out, whichever came first.
    p.query(WATCHER, "www.shop.example", RecordType::A);
    p.query(WATCHER, "cdn.vendor.example", RecordType::A);
    p.assert_blocked(BLOCKED, "cdn.vendor.example");
    let json = p.cli(&["addresses", "telemetry", "--json"]);
    assert_eq!(json.code, Some(0), "{}", json.all());
    let deadline = Instant::now() + Duration::from_secs(20);
    let v = loop {
        let json = p.cli(&["addresses", "telemetry", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&json.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", json.all()));
        if v["shared_left_out"] == serde_json::json!(["198.51.100.9"]) || Instant::now() > deadline
        {
            break v;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        v["shared_left_out"],
        serde_json::json!(["198.51.100.9"]),
        "{v}"
    );
    let v4: Vec<&str> = v["ipv4"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["address"].as_str().unwrap())
        .collect();
    assert_eq!(v4, vec!["203.0.113.5", "203.0.113.6"], "{v}");
    assert!(v["ipv4"][0]["expires_in_seconds"].as_u64().unwrap() <= 300);

    // The CLI prints what the server serves.
    let text = p.cli(&["addresses", "telemetry"]);
    assert_eq!(text.code, Some(0), "{}", text.all());
    assert_eq!(text.stdout, addresses_txt(&p, ""));

    // The metric, by family; the shared one counted.
    let m = p.metrics().1;
    assert!(
        m.contains("telesink_category_addresses{category=\"telemetry\",family=\"ipv4\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("telesink_category_addresses{category=\"telemetry\",family=\"ipv6\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("telesink_category_addresses_shared{category=\"telemetry\"} 1"),
        "{m}"
    );

    // Unknown categories: 404 over HTTP, an error naming the learnt ones from the CLI.
    let (status, body) = http_get(p.metrics_addr(), "/addresses/ads.txt").unwrap();
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("telemetry"), "{body}");
    let out = p.cli(&["addresses", "ads"]);
    assert_eq!(out.code, Some(2), "{}", out.all());
    assert!(
        out.stderr.contains("[addresses] categories"),
        "{}",
        out.all()
    );
}

#[test]
fn addresses_expire_with_their_records() {
    let up = upstream();
    let p = start(&up, "[addresses]\nresolve_blocked = false\n");
    // Not looked up in the background: blocked names teach nothing.
    p.assert_blocked(BLOCKED, "tracking.vendor.example");
    p.query(WATCHER, "short.vendor.example", RecordType::A);
    wait_for(&p, "the short-lived address", |b| b == "203.0.113.77\n");
    // Its TTL was 2 s: it goes.
    wait_for(&p, "expiry", |b| b.is_empty());
    assert_eq!(
        up.count("tracking.vendor.example"),
        0,
        "looked up in the background"
    );
}

#[test]
fn without_the_table_nothing_is_learnt_and_the_cli_says_why() {
    let up = upstream();
    let p = start(&up, "");
    p.assert_blocked(BLOCKED, "tracking.vendor.example");
    let (status, _) = http_get(p.metrics_addr(), "/addresses/telemetry.txt").unwrap();
    assert_eq!(status, 404);
    let out = p.cli(&["addresses", "telemetry"]);
    assert_eq!(out.code, Some(2), "{}", out.all());
    assert!(out.stderr.contains("no [addresses] table"), "{}", out.all());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(up.count("tracking.vendor.example"), 0);
}

#[test]
fn a_category_no_list_defines_is_an_error_with_file_line_and_key() {
    let t = Telesink::new()
        .file("vendor.txt", "tracking.vendor.example\n")
        .toml(
            r#"
[[list]]
name = "vendor"
source = "vendor.txt"
categories = ["telemetry"]

[addresses]
categories = ["telemetry", "telemtry"]
"#,
        );
    let out = t.cli(&["check"]);
    assert_ne!(out.code, Some(0), "{}", out.all());
    let all = out.all();
    assert!(all.contains("addresses.categories[1]"), "{all}");
    assert!(all.contains("config.toml"), "{all}");
    assert!(all.contains("\"telemtry\""), "{all}");
    assert!(
        all.contains("did you mean") || all.contains("telemetry"),
        "{all}"
    );

    let t = Telesink::new().toml("[addresses]\nnftables = \"block\"\n");
    let out = t.cli(&["check"]);
    assert_ne!(out.code, Some(0), "{}", out.all());
    assert!(out.all().contains("addresses.nftables"), "{}", out.all());
}
