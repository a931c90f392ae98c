//! Metrics end to end (SPEC "Metrics", issue 4): a real telesink answers traffic from several
//! 127.0.0.x clients, a real Prometheus scrapes it every second, and every query of the shipped
//! Grafana dashboard (`deploy/grafana/dashboards/telesink.json`) must return data through
//! Prometheus's HTTP API. The counters must equal what the test sent, per client, and
//! `promtool check metrics` must accept the exposition.
//!
//! Needs Debian's `prometheus` package (`prometheus` and `promtool` on PATH). Without it the
//! Prometheus test is skipped with a message, except under CI (`CI` set), where it fails.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::*;

const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/grafana/dashboards/telesink.json"
);

const CONFIG: &str = r#"
[[list]]
name = "xiaomi"
source = "xiaomi.txt"
categories = ["telemetry", "xiaomi"]

[[list]]
name = "ads"
source = "ads.txt"
categories = ["ads"]

[[client]]
name = "anna-phone"
addresses = ["127.0.0.2"]

[[client]]
name = "tv"
addresses = ["127.0.0.3"]

[[group]]
name = "phones"
clients = ["anna-phone"]
block = ["telemetry"]
observe = []

[[group]]
name = "watched"
clients = ["tv"]
block = []
observe = ["xiaomi"]

[default]
block = ["telemetry"]
observe = []
"#;

const ANNA: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const TV: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
const UNNAMED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 4);
/// Outside `allow_networks`: every query is refused, and counted under `client="refused"`.
const OUTSIDER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 9);

/// What one client should have in `telesink_queries_total{client,result}` and
/// `telesink_category_queries_total{client,category,action}`.
#[derive(Default, Debug)]
struct Expected {
    results: BTreeMap<&'static str, u64>,
    categories: BTreeMap<(&'static str, &'static str), u64>,
}

fn start_telesink(up: &TestUpstream, extra_metrics: &str) -> TelesinkProcess {
    start_telesink_with(up, extra_metrics, "")
}

/// [`start_telesink`] with more of the config file (`extra`, after [`CONFIG`]).
fn start_telesink_with(up: &TestUpstream, extra_metrics: &str, extra: &str) -> TelesinkProcess {
    // A subscription (URL list) with a cached copy, for `telesink_list_age_seconds`: its
    // mirror is a closed loopback port, so downloads fail and the copy (checked an hour ago)
    // stays in force.
    let url = format!("https://127.0.0.1:{}/native.vendor.txt", free_port_tcp());
    let cache = support::https::cache_rel(&url);
    let checked = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 3600;
    Telesink::new()
        .upstream(up)
        // 127.0.0.0/29 holds 127.0.0.1 to .7; 127.0.0.9 is refused.
        .allow_networks(&["127.0.0.0/29"])
        .metrics_toml(extra_metrics)
        .file("xiaomi.txt", "tracking.miui.com\ndata.mistat.xiaomi.com\n")
        .file("ads.txt", "ads.example\n")
        .file(&cache, "*.subscribed.example\n")
        .file(
            &format!("{cache}.meta"),
            format!("url {url}\netag \"v1\"\nchecked {checked}\n"),
        )
        .toml(CONFIG)
        .toml(&format!(
            "\n[[list]]\nname = \"vendor-subscription\"\nsource = \"{url}\"\ncategories = [\"ads\"]\nrefresh = \"24h\"\n"
        ))
        .toml(extra)
        .start()
}

/// Sends the traffic and returns what each client label should count.
fn send_traffic(ts: &TelesinkProcess) -> BTreeMap<&'static str, Expected> {
    let mut want: BTreeMap<&'static str, Expected> = BTreeMap::new();
    let a = RecordType::A;

    // anna-phone: telemetry blocked 5 times; an ads name (a category nobody blocks: allowed)
    // forwarded, then answered from the cache.
    for _ in 0..5 {
        let r = ts.query(ANNA, "tracking.miui.com.", a);
        assert_eq!(r.a(), vec![Ipv4Addr::UNSPECIFIED], "{}", r.summary());
    }
    ts.query(ANNA, "ads.example.", a);
    ts.query(ANNA, "ads.example.", a);
    let e = want.entry("anna-phone").or_default();
    e.results
        .extend([("blocked", 5), ("forwarded", 1), ("cached", 1)]);
    e.categories.extend([
        (("telemetry", "blocked"), 5),
        (("xiaomi", "blocked"), 5),
        (("ads", "allowed"), 2),
    ]);

    // tv: its group observes xiaomi, so the same name is answered (forwarded once, then
    // cached) and counted as observed.
    for _ in 0..4 {
        let r = ts.query(TV, "tracking.miui.com.", a);
        assert_ne!(r.a(), vec![Ipv4Addr::UNSPECIFIED], "{}", r.summary());
    }
    let e = want.entry("tv").or_default();
    e.results.extend([("forwarded", 1), ("cached", 3)]);
    e.categories
        .extend([(("telemetry", "observed"), 4), (("xiaomi", "observed"), 4)]);

    // An unnamed client: [default] blocks telemetry; a bypass attempt (Firefox's DoH canary);
    // ordinary names forwarded and cached; a local name.
    for _ in 0..3 {
        ts.query(UNNAMED, "data.mistat.xiaomi.com.", a);
    }
    let r = ts.query(UNNAMED, "use-application-dns.net.", a);
    assert_eq!(r.rcode(), ResponseCode::NXDomain, "{}", r.summary());
    ts.query(UNNAMED, "example.org.", a);
    ts.query(UNNAMED, "example.org.", a);
    ts.query(UNNAMED, "localhost.", a);
    let e = want.entry("127.0.0.4").or_default();
    e.results.extend([
        ("blocked", 4),
        ("forwarded", 1),
        ("cached", 1),
        ("local", 1),
    ]);
    e.categories.extend([
        (("telemetry", "blocked"), 3),
        (("xiaomi", "blocked"), 3),
        (("bypass", "blocked"), 1),
    ]);

    // Outside allow_networks.
    for _ in 0..3 {
        let r = ts.query(OUTSIDER, "example.org.", a);
        assert_eq!(r.rcode(), ResponseCode::Refused, "{}", r.summary());
    }
    // Refused clients take no `client` slot: they share the label `refused`.
    want.entry("refused")
        .or_default()
        .results
        .insert("refused", 3);
    want
}

// ---- exposition parsing ----------------------------------------------------------------------

/// Every client's counters in the exposition equal `want` (absent series count as 0, and no
/// series of a listed client has a value that was not sent).
fn assert_counts(samples: &Exposition, want: &BTreeMap<&'static str, Expected>, started: f64) {
    for (client, e) in want {
        for (result, n) in &e.results {
            assert_eq!(
                samples.value(
                    "telesink_queries_total",
                    &[("client", client), ("result", result)]
                ),
                Some(*n as f64),
                "telesink_queries_total{{client={client:?},result={result:?}}}"
            );
        }
        for s in samples.iter().filter(|s| {
            s.labels.get("client").map(String::as_str) == Some(client)
                && (s.name == "telesink_queries_total"
                    || s.name == "telesink_category_queries_total")
        }) {
            let expected = if s.name == "telesink_queries_total" {
                e.results.get(s.labels["result"].as_str())
            } else {
                e.categories
                    .get(&(s.labels["category"].as_str(), s.labels["action"].as_str()))
            };
            assert_eq!(
                s.value,
                expected.copied().unwrap_or(0) as f64,
                "{} {:?}: the test sent something else",
                s.name,
                s.labels
            );
        }
        for ((category, action), n) in &e.categories {
            assert_eq!(
                samples.value("telesink_category_queries_total",
                    &[("client", client), ("category", category), ("action", action)]
                ),
                Some(*n as f64),
                "telesink_category_queries_total{{client={client:?},category={category:?},action={action:?}}}"
            );
            let seen = samples
                .value(
                    "telesink_category_last_seen_timestamp_seconds",
                    &[("client", client), ("category", category)],
                )
                .unwrap_or_else(|| panic!("no last-seen for {client}/{category}"));
            assert!(
                seen >= started - 1.0 && seen <= now_secs() + 1.0,
                "last seen {seen} of {client}/{category} outside the test's run ({started})"
            );
        }
    }
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Grafana's variables as the dashboard's "All" selection and a short test run give them.
fn substitute(expr: &str) -> String {
    let mut s = expr.to_string();
    for (var, value) in [
        ("client", ".*"),
        ("category", ".*"),
        ("__rate_interval", "1m"),
        ("__range", "5m"),
        ("__interval", "15s"),
    ] {
        s = s.replace(&format!("${{{var}}}"), value);
        s = s.replace(&format!("${var}"), value);
    }
    s
}

/// Every Prometheus query of the dashboard: (where, expr), from panels (rows' nested panels
/// too) and annotations.
fn dashboard_queries(dash: &serde_json::Value) -> Vec<(String, String)> {
    fn panels(list: &serde_json::Value, out: &mut Vec<(String, String)>) {
        for p in list.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("?");
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = t["expr"].as_str() {
                    out.push((
                        format!("panel {title:?} {}", t["refId"].as_str().unwrap_or("")),
                        expr.to_string(),
                    ));
                }
            }
            panels(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dash["panels"], &mut out);
    for a in dash["annotations"]["list"].as_array().into_iter().flatten() {
        if let Some(expr) = a["expr"].as_str() {
            out.push((
                format!("annotation {:?}", a["name"].as_str().unwrap_or("?")),
                expr.to_string(),
            ));
        }
    }
    out
}

#[test]
fn dashboard_queries_return_data_in_prometheus() {
    let test = "dashboard_queries_return_data_in_prometheus";
    let Some(tools) = support::prom::require(test, &["prometheus", "promtool"]) else {
        return;
    };
    // The "telemetry traffic" panel reads packet counters, which telesink keeps in an nftables
    // table: this test (telesink, its upstream, Prometheus) runs in a network namespace of its
    // own, whose firewall it may change. Configured devices' counters exist at 0 while
    // counting is on.
    if support::netns::enter_private_namespace(test).is_none() {
        return;
    }
    let started = now_secs();
    let up = TestUpstream::start();
    let ts = start_telesink_with(&up, "", "[addresses]\nnftables = \"count\"\n");
    let prom = Prometheus::start(&[ts.metrics_addr()]);

    // The opt-out mark that the dashboard draws as an annotation.
    let mark = ts.cli(&["mark", "--client", "anna-phone", "--note", "e2e opt-out"]);
    assert_eq!(mark.code, Some(0), "telesink mark: {mark}");

    // Traffic only once Prometheus has a sample from before it, so rates see it.
    prom.wait_for("first scrape of telesink", Duration::from_secs(30), |p| {
        p.value(r#"up{job="telesink"}"#) == Some(1.0)
            && p.value("count(telesink_build_info)") == Some(1.0)
    });
    std::thread::sleep(Duration::from_millis(1500));
    let want = send_traffic(&ts);

    // The exposition, straight from telesink: counts per client, and promtool's lint.
    let (status, body) = ts.metrics();
    assert_eq!(status, 200);
    let samples = Exposition::parse(&body).unwrap();
    assert_counts(&samples, &want, started);
    let forwarded: f64 = samples
        .iter()
        .filter(|s| s.name == "telesink_queries_total" && s.labels["result"] == "forwarded")
        .map(|s| s.value)
        .sum();
    assert_eq!(
        samples.value(
            "telesink_upstream_responses_total",
            &[("upstream", &up.addr().to_string()), ("outcome", "ok")]
        ),
        Some(forwarded),
        "one ok upstream outcome per forwarded query"
    );
    let mut lint = Command::new(&tools[1]);
    lint.args(["check", "metrics"]);
    let lint = support::process::run_with_input(lint, body.as_bytes(), Duration::from_secs(60));
    assert_eq!(lint.code, Some(0), "promtool check metrics failed:\n{lint}");

    // Prometheus holds the same values, per client.
    prom.wait_for("the traffic's counters", Duration::from_secs(30), |p| {
        want.iter().all(|(client, e)| {
            e.results.iter().all(|(result, n)| {
                p.value(&format!(
                    r#"telesink_queries_total{{client="{client}",result="{result}"}}"#
                )) == Some(*n as f64)
            })
        })
    });
    for (client, e) in &want {
        for ((category, action), n) in &e.categories {
            let q = format!(
                r#"telesink_category_queries_total{{client="{client}",category="{category}",action="{action}"}}"#
            );
            assert_eq!(prom.value(&q), Some(*n as f64), "{q}");
        }
    }
    let clients: BTreeSet<String> = prom
        .query(r#"count by (client) (telesink_queries_total{client!="other"})"#)
        .unwrap()
        .iter()
        .filter_map(|s| s["metric"]["client"].as_str().map(String::from))
        .collect();
    // 127.0.0.1 is the harness's readiness probe (`localhost.`, local).
    let expected: BTreeSet<String> = want
        .keys()
        .map(|c| c.to_string())
        .chain(["127.0.0.1".to_string()])
        .collect();
    assert_eq!(clients, expected, "client label values");

    // The mark reaches Prometheus (the query log reports marks every few seconds).
    prom.wait_for("the opt-out mark", Duration::from_secs(30), |p| {
        p.value(r#"telesink_optout_mark_timestamp_seconds{client="anna-phone"}"#)
            .is_some_and(|t| t >= started - 1.0)
    });

    // A few more scrapes, so every rate window holds samples after the traffic.
    std::thread::sleep(Duration::from_secs(3));

    let dash: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(DASHBOARD).expect("dashboard JSON"))
            .expect("dashboard is valid JSON");

    // The templating variables: label_values(selector, label) through the label-values API.
    for v in dash["templating"]["list"].as_array().unwrap() {
        if v["type"] != "query" {
            continue;
        }
        let def = v["definition"].as_str().expect("variable definition");
        let inner = def
            .strip_prefix("label_values(")
            .and_then(|s| s.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable {}: {def}", v["name"]));
        let (selector, label) = inner.rsplit_once(',').unwrap();
        let selector = substitute(selector.trim());
        let r = prom
            .api(&format!(
                "/api/v1/label/{}/values?match[]={}",
                label.trim(),
                support::prom::encode(&selector)
            ))
            .unwrap_or_else(|e| panic!("variable {}: {e}", v["name"]));
        let values = r["data"].as_array().unwrap();
        assert!(!values.is_empty(), "variable {} has no values", v["name"]);
    }

    // Every panel and annotation query: no error, not empty.
    let queries = dashboard_queries(&dash);
    assert!(queries.len() >= 15, "only {} queries found", queries.len());
    let mut failures = Vec::new();
    for (place, expr) in &queries {
        let promql = substitute(expr);
        assert!(
            !promql.contains('$'),
            "{place}: unsubstituted variable in {promql}"
        );
        match prom.query(&promql) {
            Ok(r) if r.is_empty() => failures.push(format!("{place}: empty result for {promql}")),
            Ok(_) => {}
            Err(e) => failures.push(format!("{place}: {e} for {promql}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} dashboard queries failed:\n{}",
        failures.len(),
        queries.len(),
        failures.join("\n")
    );
    eprintln!(
        "all {} dashboard queries returned data from Prometheus",
        queries.len()
    );

    drop(prom);
}

#[test]
fn counts_per_client_and_health() {
    let started = now_secs();
    let up = TestUpstream::start();
    let ts = start_telesink(&up, "");
    let (status, body) = http_get(ts.metrics_addr(), "/healthz").unwrap();
    assert_eq!((status, body.trim()), (200, "ok"));
    // The configured upstream's series exist before the first forwarded query.
    let before = ts.scrape();
    let upstream = up.addr().to_string();
    for outcome in ["ok", "servfail", "timeout", "error"] {
        assert_eq!(
            before.value(
                "telesink_upstream_responses_total",
                &[("upstream", &upstream), ("outcome", outcome)]
            ),
            Some(0.0),
            "{outcome}"
        );
    }
    let want = send_traffic(&ts);
    let samples = ts.scrape();
    // Read when scraped: the three forwarded answers are in the cache at once (a timer used to
    // refresh it every 5 s, so a scrape right after traffic read 0).
    assert_eq!(samples.value("telesink_cache_entries", &[]), Some(3.0));
    assert_counts(&samples, &want, started);
    for name in [
        "telesink_response_seconds_bucket",
        "telesink_list_entries",
        "telesink_reloads_total",
        "telesink_config_last_reload_success",
        "telesink_config_last_reload_timestamp_seconds",
        "telesink_querylog_dropped_total",
        "telesink_cache_entries",
        "telesink_cache_hits_total",
        "telesink_cache_misses_total",
        "telesink_build_info",
        "process_resident_memory_bytes",
    ] {
        assert!(samples.iter().any(|s| s.name == name), "{name} missing");
    }
    assert_eq!(
        samples.value("telesink_list_entries", &[("list", "xiaomi")]),
        Some(2.0)
    );
    assert_eq!(
        samples.value("telesink_list_entries", &[("list", "vendor-subscription")]),
        Some(1.0)
    );
    let age = samples
        .value(
            "telesink_list_age_seconds",
            &[("list", "vendor-subscription")],
        )
        .expect("telesink_list_age_seconds of the subscription");
    assert!((3600.0..7200.0).contains(&age), "age {age}");
    assert_eq!(
        samples.value("telesink_config_last_reload_success", &[]),
        Some(1.0)
    );
    // Cache: the repeated names were hits (anna 1, tv 3, unnamed 1); forwarded ones misses.
    assert_eq!(samples.value("telesink_cache_hits_total", &[]), Some(5.0));
    assert_eq!(samples.value("telesink_cache_misses_total", &[]), Some(3.0));
}

#[test]
fn client_label_values_are_capped() {
    let up = TestUpstream::start();
    // The configured anna-phone and tv are given two of the 3 slots at start; 127.0.0.1 (the
    // readiness probe) takes the third.
    let ts = start_telesink(&up, "max_clients = 3");
    for x in 2..=7u8 {
        ts.query(client(x), "example.org.", RecordType::A);
        ts.query(client(x), "tracking.miui.com.", RecordType::A);
    }
    let samples = ts.scrape();
    let labels: BTreeSet<&str> = samples
        .iter()
        .filter(|s| s.name == "telesink_queries_total")
        .map(|s| s.labels["client"].as_str())
        .collect();
    assert_eq!(
        labels.len(),
        5,
        "3 client labels + other + refused: {labels:?}"
    );
    assert!(labels.contains("other") && labels.contains("refused"));
    let total: f64 = samples
        .iter()
        .filter(|s| s.name == "telesink_queries_total" && s.labels["client"] != "127.0.0.1")
        .map(|s| s.value)
        .sum();
    assert_eq!(
        total, 12.0,
        "every query is counted, under its label or other"
    );
    let other_blocked = samples.value(
        "telesink_category_queries_total",
        &[
            ("client", "other"),
            ("category", "telemetry"),
            ("action", "blocked"),
        ],
    );
    // anna-phone (.2) and tv (.3) hold their slots; .4 to .7 are `other`.
    assert_eq!(other_blocked, Some(4.0));
}

/// Issue 16 item 2: 1,000 made-up sources outside `allow_networks` (loopback aliases) are
/// refused and counted under one label, `refused`; they take none of the `max_clients` slots,
/// so a named device and an allowed unnamed one that ask afterwards still get their own series.
#[test]
fn strangers_cannot_take_the_client_label_slots() {
    let up = TestUpstream::start();
    // 127.0.0.1 (the readiness probe), anna-phone and tv hold 3 of the 8 slots.
    let ts = start_telesink(&up, "max_clients = 8");
    let opts = QueryOpts::udp().timeout(Duration::from_secs(2));
    for i in 0..1000u32 {
        let stranger = Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250) as u8 + 1);
        let r = try_query(ts.addr(), stranger, "example.org.", RecordType::A, &opts)
            .unwrap_or_else(|e| panic!("stranger {stranger}: {e}"));
        assert_eq!(r.rcode(), ResponseCode::Refused, "{}", r.summary());
    }
    for _ in 0..2 {
        ts.query(ANNA, "tracking.miui.com.", RecordType::A);
        ts.query(UNNAMED, "example.org.", RecordType::A);
    }
    // An event is recorded just after its answer is sent: wait for the last ones.
    let t0 = Instant::now();
    let samples = loop {
        let samples = ts.scrape();
        let unnamed: f64 = samples
            .iter()
            .filter(|s| s.name == "telesink_queries_total" && s.labels["client"] == "127.0.0.4")
            .map(|s| s.value)
            .sum();
        if unnamed >= 2.0 || t0.elapsed() > Duration::from_secs(5) {
            break samples;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let labels: BTreeSet<&str> = samples
        .iter()
        .filter(|s| s.name == "telesink_queries_total")
        .map(|s| s.labels["client"].as_str())
        .collect();
    assert!(
        labels.iter().all(|l| !l.starts_with("127.1.")),
        "a refused stranger got a label: {labels:?}"
    );
    assert_eq!(
        samples.value(
            "telesink_queries_total",
            &[("client", "refused"), ("result", "refused")]
        ),
        Some(1000.0)
    );
    assert_eq!(
        samples.value(
            "telesink_queries_total",
            &[("client", "anna-phone"), ("result", "blocked")]
        ),
        Some(2.0),
        "the named device has its own series"
    );
    assert_eq!(
        samples.value(
            "telesink_queries_total",
            &[("client", "127.0.0.4"), ("result", "forwarded")]
        ),
        Some(1.0),
        "an allowed unnamed device has its own series"
    );
    assert_eq!(
        samples.value(
            "telesink_queries_total",
            &[("client", "other"), ("result", "forwarded")]
        ),
        Some(0.0),
        "nothing had to be counted as other"
    );
    // The device's last query, and (no device table wired here) not DNS-silent.
    let last = samples
        .value(
            "telesink_client_last_query_timestamp_seconds",
            &[("client", "anna-phone")],
        )
        .expect("anna-phone's last query");
    assert!((now_secs() - last).abs() < 60.0, "last query {last}");
    assert_eq!(
        samples.value("telesink_client_dns_silent", &[("client", "anna-phone")]),
        Some(0.0)
    );
}

/// A device that a reload names gets its `client` label slot at the reload, before any other
/// client can take the last one.
#[test]
fn a_reload_reserves_the_slots_of_newly_named_devices() {
    let up = TestUpstream::start();
    // anna-phone and tv (configured) and 127.0.0.1 hold 3 of the 4 slots.
    let ts = start_telesink(&up, "max_clients = 4");
    ts.query(client(1), "localhost.", RecordType::A);
    let path = ts.config_path().to_path_buf();
    let mut config = fs::read_to_string(&path).unwrap();
    config.push_str("\n[[client]]\nname = \"laptop\"\naddresses = [\"127.0.0.5\"]\n");
    fs::write(&path, config).unwrap();
    ts.signal("HUP");
    let t0 = Instant::now();
    loop {
        let samples = ts.scrape();
        if samples.value("telesink_reloads_total", &[("outcome", "success")]) >= Some(1.0) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no reload\n{}",
            ts.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // An unnamed client asks first; the laptop after it.
    ts.query(client(6), "example.org.", RecordType::A);
    ts.query(client(5), "example.org.", RecordType::A);
    // An event is recorded just after its answer is sent: wait for both.
    let t0 = Instant::now();
    let samples = loop {
        let samples = ts.scrape();
        let counted: f64 = samples
            .iter()
            .filter(|s| s.name == "telesink_queries_total" && s.labels["result"] != "local")
            .map(|s| s.value)
            .sum();
        if counted >= 2.0 || t0.elapsed() > Duration::from_secs(5) {
            break samples;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        samples.value(
            "telesink_queries_total",
            &[("client", "laptop"), ("result", "cached")]
        ),
        Some(1.0),
        "the laptop has its own series"
    );
    assert_eq!(
        samples.value(
            "telesink_queries_total",
            &[("client", "other"), ("result", "forwarded")]
        ),
        Some(1.0),
        "127.0.0.6 came after the slots were given out: {:?}",
        samples
            .iter()
            .filter(|s| s.name == "telesink_queries_total" && s.value > 0.0)
            .collect::<Vec<_>>()
    );
}
