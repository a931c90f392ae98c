//! Subscriptions end to end (issue 20): a vendor's maintained list by URL beside the curated
//! file, served by a real HTTPS mirror started here (rustls, a CA made at run time, trusted by
//! telesink through `SSL_CERT_FILE`), an allow file that beats the subscription, `telesink
//! lists` / `lists update` / `check` / `explain`, `telesink_list_age_seconds`, and
//! `telesink suggest` against a query log with known names.
//!
//! The fixtures are this file's own: made-up vendor names under `.example`.

mod support;

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::https::ListMirror;
use support::*;

const NULL: Ipv4Addr = Ipv4Addr::UNSPECIFIED;
/// Generous: polling stops as soon as the state is reached.
const WITHIN: Duration = Duration::from_secs(10);

const LIST_PATH: &str = "wildcard/native.vendora.txt";
const LM_PATH: &str = "wildcard/native.vendorb.txt";
const V1: &str = "# vendor A fixture, version 1\n*.tracker.vendora.example\n*.find.vendora.example\n*.metrics.vendora.example\n";
const V2: &str =
    "# vendor A fixture, version 2\n*.tracker2.vendora.example\n*.find.vendora.example\n";
const DATE1: &str = "Wed, 02 Dec 2026 10:00:00 GMT";

/// A curated file, two subscriptions (one with an ETag, one with Last-Modified only) and an
/// allow file naming a host the subscription lists.
fn config(url_a: &str, url_b: &str) -> String {
    format!(
        r#"
[blocking]
mode = "null"

[[list]]
name = "vendora"
source = "curated.txt"
categories = ["telemetry", "vendora"]

[[list]]
name = "vendora-hagezi"
source = "{url_a}"
categories = ["telemetry", "vendora"]
refresh = "24h"

[[list]]
name = "vendorb-hagezi"
source = "{url_b}"
categories = ["telemetry", "vendorb"]
refresh = "24h"

[allow]
lists = ["functional.txt"]

[default]
block = ["telemetry"]
observe = []
"#
    )
}

fn build(mirror: &ListMirror, up: &TestUpstream) -> Telesink {
    Telesink::new()
        .upstream(up)
        .env("SSL_CERT_FILE", mirror.ca_file())
        .toml(&config(&mirror.url(LIST_PATH), &mirror.url(LM_PATH)))
        .file("curated.txt", "curated.vendora.example\n")
        .file(
            "functional.txt",
            "# Find my device: the subscription lists it, devices need it\nfind.vendora.example\n",
        )
}

fn a(p: &TelesinkProcess, name: &str) -> Vec<Ipv4Addr> {
    p.query(client(1), name, RecordType::A).a()
}

#[track_caller]
fn wait_answer(p: &TelesinkProcess, name: &str, want: Ipv4Addr) {
    let t0 = Instant::now();
    loop {
        let got = a(p, name);
        if got == [want] {
            return;
        }
        assert!(
            t0.elapsed() < WITHIN,
            "{name}: expected {want}, still {got:?}\n{}",
            p.logs()
        );
        thread::sleep(Duration::from_millis(25));
    }
}

#[track_caller]
fn wait_until(what: &str, p: &TelesinkProcess, ok: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(t0.elapsed() < WITHIN, "never: {what}\n{}", p.logs());
        thread::sleep(Duration::from_millis(25));
    }
}

fn cli_env(p: &TelesinkProcess, mirror: &ListMirror, args: &[&str]) -> CliOutput {
    let cfg = p.config_path().to_string_lossy().into_owned();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["-c", &cfg]);
    cli_in_env(p.dir(), &all, &[("SSL_CERT_FILE", mirror.ca_file())])
}

fn lists_json(out: &CliOutput) -> Vec<serde_json::Value> {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.all()))
}

fn subscription<'a>(rows: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    &rows
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no list {name} in {rows:?}"))["subscription"]
}

#[test]
fn a_subscription_downloads_refreshes_conditionally_keeps_its_copy_and_yields_to_the_allow_file() {
    let up = TestUpstream::start();
    let mirror = ListMirror::start();
    mirror.put(LIST_PATH, "\"a1\"", DATE1, V1);
    mirror.put(LM_PATH, "", DATE1, "*.stats.vendorb.example\n");
    let p = build(&mirror, &up).start();

    // The curated list blocks from the start; the subscription after its first download.
    assert_eq!(a(&p, "curated.vendora.example"), [NULL]);
    wait_answer(&p, "x.tracker.vendora.example", NULL);
    wait_answer(&p, "a.stats.vendorb.example", NULL);
    let first = mirror.requests_for(LIST_PATH);
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].status, 200);
    assert!(first[0].if_none_match.is_none() && first[0].if_modified_since.is_none());

    // The allow file beats the subscription: answered by the upstream, for everyone.
    assert_eq!(a(&p, "find.vendora.example"), [DEFAULT_V4]);
    assert!(up.count("find.vendora.example") > 0, "not forwarded");
    let explain = p.cli(&["explain", "find.vendora.example"]);
    assert_eq!(explain.code, Some(0), "{}", explain.all());
    assert!(
        explain
            .stdout
            .contains("override the allow exception of allow-1")
            && explain.stdout.contains("vendora-hagezi (subscription)"),
        "{}",
        explain.stdout
    );
    let explain = p.cli(&["explain", "x.tracker.vendora.example"]);
    assert!(!explain.stdout.contains("override"), "{}", explain.stdout);

    // `lists`: source, entries, download time, ETag, no error.
    let rows = lists_json(&p.cli(&["lists", "--json"]));
    let s = subscription(&rows, "vendora-hagezi");
    assert_eq!(s["present"], true);
    assert_eq!(s["etag"], "\"a1\"");
    assert_eq!(s["state"], "fresh");
    assert!(
        s["downloaded"].is_string() && s["last_error"].is_null(),
        "{s}"
    );
    assert_eq!(
        rows.iter().find(|r| r["name"] == "vendora-hagezi").unwrap()["entries"],
        3
    );
    let b = subscription(&rows, "vendorb-hagezi");
    assert_eq!(b["last_modified"], DATE1);

    // The age metric is there for both subscriptions, finite, with the refresh beside it.
    let m = p.scrape();
    let age = m
        .value("telesink_list_age_seconds", &[("list", "vendora-hagezi")])
        .expect("age of vendora-hagezi");
    assert!((0.0..3600.0).contains(&age), "age {age}");
    assert_eq!(
        m.value(
            "telesink_list_refresh_seconds",
            &[("list", "vendora-hagezi")]
        ),
        Some(86400.0)
    );
    assert!(m
        .value("telesink_list_age_seconds", &[("list", "vendorb-hagezi")])
        .is_some_and(f64::is_finite));
    assert!(m
        .value("telesink_list_age_seconds", &[("list", "vendora")])
        .is_none());

    // SIGHUP: conditional requests, If-None-Match for the ETag list, If-Modified-Since for the
    // other; both 304, nothing downloaded.
    p.signal("HUP");
    wait_until("two conditional requests", &p, || {
        mirror.requests_for(LIST_PATH).len() >= 2 && mirror.requests_for(LM_PATH).len() >= 2
    });
    let again = &mirror.requests_for(LIST_PATH)[1];
    assert_eq!(again.if_none_match.as_deref(), Some("\"a1\""));
    assert_eq!(again.status, 304);
    let again_b = &mirror.requests_for(LM_PATH)[1];
    assert_eq!(again_b.if_none_match, None);
    assert_eq!(again_b.if_modified_since.as_deref(), Some(DATE1));
    assert_eq!(again_b.status, 304);
    assert_eq!(a(&p, "x.tracker.vendora.example"), [NULL]);

    // The mirror fails: the cached copy stays in force, and the error is recorded.
    mirror.fail_with(Some(503));
    p.signal("HUP");
    wait_until("the failure logged", &p, || {
        p.logs()
            .contains("download failed, keeping the cached copy")
    });
    assert_eq!(a(&p, "x.tracker.vendora.example"), [NULL]);
    let rows = lists_json(&p.cli(&["lists", "--json"]));
    let s = subscription(&rows, "vendora-hagezi");
    assert!(
        s["last_error"].as_str().is_some_and(|e| e.contains("503")),
        "{s}"
    );
    assert_eq!(s["present"], true);
    let text = p.cli(&["lists"]);
    assert!(
        text.stdout.contains("last error") && text.stdout.contains("503"),
        "{}",
        text.stdout
    );

    // `lists update` with the mirror back and new content: progress, summary, exit 0; the
    // running server sees the new copy by itself (no SIGHUP) and blocks the new name.
    mirror.fail_with(None);
    mirror.put(LIST_PATH, "\"a2\"", "Thu, 03 Dec 2026 10:00:00 GMT", V2);
    let upd = cli_env(&p, &mirror, &["lists", "update"]);
    assert_eq!(upd.code, Some(0), "{}", upd.all());
    assert!(
        upd.stdout.contains("[1/2] vendora-hagezi"),
        "{}",
        upd.stdout
    );
    assert!(upd.stdout.contains("new copy: 2 entries"), "{}", upd.stdout);
    assert!(
        upd.stdout.contains("2 lists: 1 new, 1 unchanged, 0 failed"),
        "{}",
        upd.stdout
    );
    wait_answer(&p, "x.tracker2.vendora.example", NULL);
    assert_eq!(a(&p, "x.tracker.vendora.example"), [DEFAULT_V4]);
    let last = mirror.requests_for(LIST_PATH).last().cloned().unwrap();
    assert_eq!(last.if_none_match.as_deref(), Some("\"a1\""), "conditional");
    assert_eq!(last.status, 200);
    // The error is gone once a download succeeded.
    let rows = lists_json(&p.cli(&["lists", "--json"]));
    assert!(subscription(&rows, "vendora-hagezi")["last_error"].is_null());
    assert_eq!(subscription(&rows, "vendora-hagezi")["etag"], "\"a2\"");

    // A failing `lists update` exits 1 and says which list failed.
    mirror.fail_with(Some(500));
    let upd = cli_env(&p, &mirror, &["lists", "update"]);
    assert_eq!(upd.code, Some(1), "{}", upd.all());
    assert!(upd.stdout.contains("FAILED") && upd.stdout.contains("kept the cached copy"));
    assert!(upd.stdout.contains("2 failed"), "{}", upd.stdout);
}

#[test]
fn first_start_without_the_mirror_blocks_with_the_curated_list_and_check_says_why() {
    let up = TestUpstream::start();
    let mut mirror = ListMirror::start();
    mirror.put(LIST_PATH, "\"a1\"", DATE1, V1);
    mirror.put(LM_PATH, "", DATE1, "*.stats.vendorb.example\n");
    mirror.down();
    let p = build(&mirror, &up).start();

    // No network: the curated list blocks at once, the subscription is empty.
    assert_eq!(a(&p, "curated.vendora.example"), [NULL]);
    assert_eq!(a(&p, "x.tracker.vendora.example"), [DEFAULT_V4]);
    wait_until("a failed download recorded", &p, || {
        let rows = lists_json(&p.cli(&["lists", "--json"]));
        !subscription(&rows, "vendora-hagezi")["last_error"].is_null()
    });
    let check = p.cli(&["check"]);
    assert_eq!(
        check.code,
        Some(0),
        "an empty subscription is no error: {}",
        check.all()
    );
    assert!(
        check
            .stdout
            .contains("URL lists: 0 of 2 have a current copy"),
        "{}",
        check.stdout
    );
    let line = check
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("vendora-hagezi") && l.contains("empty"))
        .unwrap_or_else(|| panic!("{}", check.stdout));
    assert!(
        line.contains("never downloaded") || line.contains("no copy"),
        "{line}"
    );
    assert!(line.contains("failed"), "the reason: {line}");
    // The age metric says "no copy" as +Inf.
    assert_eq!(
        p.scrape()
            .value("telesink_list_age_seconds", &[("list", "vendora-hagezi")]),
        Some(f64::INFINITY)
    );

    // The mirror comes back. Its CA is not among the built-in roots: without SSL_CERT_FILE
    // the download is refused: the certificate is really checked.
    mirror.up();
    let cfg = p.config_path().to_string_lossy().into_owned();
    let untrusted = cli_in(p.dir(), &["lists", "update", "-c", &cfg]);
    assert_eq!(untrusted.code, Some(1), "{}", untrusted.all());
    assert!(
        untrusted
            .stdout
            .to_ascii_lowercase()
            .contains("certificate"),
        "{}",
        untrusted.stdout
    );
    // With it, `lists update` fills the cache, and the server loads it.
    let upd = cli_env(&p, &mirror, &["lists", "update"]);
    assert_eq!(upd.code, Some(0), "{}", upd.all());
    wait_answer(&p, "x.tracker.vendora.example", NULL);
    wait_answer(&p, "a.stats.vendorb.example", NULL);
    let check = p.cli(&["check"]);
    assert!(
        check
            .stdout
            .contains("URL lists: 2 of 2 have a current copy"),
        "{}",
        check.stdout
    );
}

#[test]
fn a_copy_older_than_three_refresh_periods_is_flagged_stale() {
    let dir = tempfile::tempdir().unwrap();
    // Nobody listens here: every download fails.
    let url = format!("https://127.0.0.1:{}/stale.txt", free_port_tcp());
    fs::write(
        dir.path().join("config.toml"),
        format!(
            "[[list]]\nname = \"old\"\nsource = \"{url}\"\ncategories = [\"telemetry\"]\nrefresh = \"1d\"\n"
        ),
    )
    .unwrap();
    let cache = cache_path(dir.path(), &url);
    fs::create_dir_all(cache.parent().unwrap()).unwrap();
    fs::write(&cache, "old.vendor.example\n").unwrap();
    let four_days_ago = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 4 * 86400;
    fs::write(
        format!("{}.meta", cache.display()),
        format!("url {url}\netag \"x\"\nchecked {four_days_ago}\ndownloaded {four_days_ago}\n"),
    )
    .unwrap();

    let check = cli_in(dir.path(), &["check", "-c", "config.toml"]);
    assert_eq!(check.code, Some(0), "{}", check.all());
    assert!(
        check.stdout.contains("stale: the cached copy is 4d old"),
        "{}",
        check.stdout
    );
    let lists = cli_in(dir.path(), &["lists", "-c", "config.toml"]);
    assert!(lists.stdout.contains("STALE"), "{}", lists.stdout);
    assert!(
        lists.stdout.contains("etag        \"x\""),
        "{}",
        lists.stdout
    );
    let rows = lists_json(&cli_in(
        dir.path(),
        &["lists", "--json", "-c", "config.toml"],
    ));
    assert_eq!(subscription(&rows, "old")["state"], "stale");
    assert_eq!(rows[0]["entries"], 1);

    // The metric: four days (and the copy still blocks).
    let up = TestUpstream::start();
    let p = Telesink::new()
        .upstream(&up)
        .file(&rel(&cache, dir.path()), "old.vendor.example\n")
        .file(
            &format!("{}.meta", rel(&cache, dir.path())),
            format!("url {url}\nchecked {four_days_ago}\n"),
        )
        .toml(&format!(
            "[blocking]\nmode = \"null\"\n[[list]]\nname = \"old\"\nsource = \"{url}\"\ncategories = [\"telemetry\"]\nrefresh = \"1d\"\n[default]\nblock = [\"telemetry\"]\n"
        ))
        .start();
    assert_eq!(a(&p, "old.vendor.example"), [NULL]);
    let age = p
        .scrape()
        .value("telesink_list_age_seconds", &[("list", "old")])
        .unwrap();
    assert!((4.0 * 86400.0..5.0 * 86400.0).contains(&age), "age {age}");
}

fn cache_path(dir: &Path, url: &str) -> PathBuf {
    dir.join(support::https::cache_rel(url))
}

fn rel(p: &Path, base: &Path) -> String {
    p.strip_prefix(base).unwrap().to_string_lossy().into_owned()
}

// ---------------------------------------------------------------------------------------------
// suggest
// ---------------------------------------------------------------------------------------------

const SUGGEST_BODY: &str = r#"
[[list]]
name = "vendora"
source = "curated.txt"
categories = ["telemetry", "vendora"]

[[client]]
name = "anna-phone"
addresses = ["127.0.0.2"]

[[client]]
name = "tv"
addresses = ["127.0.0.3"]

[allow]
domains = ["data.allowed.example"]

[default]
block = ["telemetry"]
observe = []
"#;

#[test]
fn suggest_ranks_unlisted_telemetry_like_names_from_the_log() {
    let up = TestUpstream::start();
    let mut p = Telesink::new()
        .upstream(&up)
        .querylog_toml("log = \"all\"\n")
        .file("curated.txt", "tracking.vendora.example\n")
        .toml(SUGGEST_BODY)
        .start();
    let anna = client(2);
    let tv = client(3);
    let ask = |from: Ipv4Addr, name: &str, n: usize| {
        for _ in 0..n {
            p.query(from, name, RecordType::A);
        }
    };
    // Under vendora.example (where the curated list names tracking.) and with a telemetry label:
    ask(anna, "log-upload.vendora.example", 3);
    ask(tv, "log-upload.vendora.example", 2);
    // Under vendora.example only:
    ask(anna, "newhost.vendora.example", 1);
    // A telemetry label only:
    ask(tv, "metrics.othervendor.example", 4);
    // Neither: not suggested.
    ask(anna, "www.plain.example", 5);
    // Already listed, or allowed on purpose: not suggested.
    ask(anna, "tracking.vendora.example", 2);
    ask(anna, "data.allowed.example", 2);
    p.terminate(Duration::from_secs(10)).expect("stopped");

    let out = cli_in(p.dir(), &["suggest", "-c", "config.toml"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    let s = &out.stdout;
    assert!(s.contains("3 names that no list categorises"), "{s}");
    let pos = |n: &str| s.find(n).unwrap_or_else(|| panic!("{n} missing:\n{s}"));
    // Both signs and two devices first.
    assert!(
        pos("log-upload.vendora.example") < pos("metrics.othervendor.example"),
        "{s}"
    );
    assert!(
        pos("log-upload.vendora.example") < pos("newhost.vendora.example"),
        "{s}"
    );
    assert!(s.contains("devices: anna-phone 3, tv 2"), "{s}");
    assert!(
        s.contains("under vendora.example, where list vendora names 1 host"),
        "{s}"
    );
    assert!(s.contains("telemetry-like label: metrics"), "{s}");
    for absent in [
        "www.plain.example",
        "tracking.vendora.example",
        "data.allowed.example",
    ] {
        assert!(!s.contains(absent), "{absent} suggested:\n{s}");
    }
    // The line to paste.
    assert!(
        s.lines()
            .any(|l| l
                .starts_with("log-upload.vendora.example  # suggested: 5 queries from 2 devices")),
        "{s}"
    );

    // One device only.
    let out = cli_in(p.dir(), &["suggest", "--client", "tv", "-c", "config.toml"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(out.stdout.contains("2 names"), "{}", out.stdout);
    assert!(
        !out.stdout.contains("newhost.vendora.example"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("devices: tv 2"), "{}", out.stdout);
}

#[test]
fn suggest_needs_the_full_log() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("config.toml"),
        "[querylog]\nlog = \"matched\"\n",
    )
    .unwrap();
    let out = cli_in(dir.path(), &["suggest", "-c", "config.toml"]);
    assert_eq!(out.code, Some(2), "{}", out.all());
    assert!(out.stderr.contains("log = \"all\""), "{}", out.stderr);
}
