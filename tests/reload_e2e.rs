//! Hot reload (SPEC "Hot reload", issue 3), end to end: a real `telesink run`, real files edited
//! the ways people and tools edit them, real queries.
//!
//! * Every edit kind (write in place, write-temp-then-rename, delete-then-create, `cp` over, a
//!   Kubernetes ConfigMap `..data` swap), on a list and on the config, is in force within 2 s.
//! * Only the files that matter reload: the query log's WAL next to the config does not.
//! * A list added to the config is watched from then on; one removed is no longer watched.
//! * A burst of writes is one reload; SIGHUP reloads.
//! * Failed reloads (bad config, vanished or unreadable list) keep the old policy, say why with
//!   `file:line`, and a later good edit recovers without a restart.
//! * Thousands of queries over UDP and TCP across 20 reloads: no timeout, no SERVFAIL, every
//!   answer right for the old or the new policy.
//! * URL lists from a loopback HTTP server: first fetch, 304, new content, server down, start-up
//!   with the server unreachable (the cached copy serves at once).

mod support;

use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use support::https::{cache_rel, ListMirror};
use support::*;

/// The null sinkhole's A answer.
const NULL: Ipv4Addr = Ipv4Addr::UNSPECIFIED;
/// What the SPEC promises for an edit to be in force.
const IN_FORCE: Duration = Duration::from_secs(2);

/// One list (`edit.txt`) blocking through `telemetry`, blocked by default, and a local record
/// whose value the config edits change.
const EDIT_BODY: &str = r#"
[blocking]
mode = "null"

[[list]]
name = "edit"
source = "edit.txt"
categories = ["telemetry"]

[default]
block = ["telemetry"]

[[record]]
name = "cfg.home.arpa"
type = "A"
value = "10.0.0.1"
"#;

fn start_edit_server(up: &TestUpstream) -> TelesinkProcess {
    Telesink::new()
        .upstream(up)
        .file("edit.txt", "edit0.example\n")
        .toml(EDIT_BODY)
        .start()
}

/// The config text with the record's value set to 10.0.0.`n`.
fn with_record(config: &str, n: u8) -> String {
    assert!(config.contains("\"10.0.0.1\""));
    config.replace("\"10.0.0.1\"", &format!("\"10.0.0.{n}\""))
}

fn a(p: &TelesinkProcess, name: &str) -> Vec<Ipv4Addr> {
    p.query(client(1), name, RecordType::A).a()
}

/// Polls `name` until it answers exactly `want`; panics after `within`. Returns the time taken.
#[track_caller]
fn wait_answer(p: &TelesinkProcess, name: &str, want: Ipv4Addr, within: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        let got = a(p, name);
        if got == [want] {
            return t0.elapsed();
        }
        if t0.elapsed() > within {
            panic!(
                "{name}: expected {want} within {within:?}, still {got:?}\n{}",
                p.logs()
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Checks that `name` answers `want` throughout `during` (the old policy stays).
#[track_caller]
fn hold_answer(p: &TelesinkProcess, name: &str, want: Ipv4Addr, during: Duration) {
    let t0 = Instant::now();
    while t0.elapsed() < during {
        let got = a(p, name);
        assert_eq!(got, [want], "{name} changed\n{}", p.logs());
        thread::sleep(Duration::from_millis(50));
    }
}

/// `telesink_reloads_total` (success, failure).
fn reloads(p: &TelesinkProcess) -> (u64, u64) {
    let m = p.scrape();
    let get = |o: &str| {
        m.value("telesink_reloads_total", &[("outcome", o)])
            .unwrap_or(0.0) as u64
    };
    (get("success"), get("failure"))
}

fn last_reload_success(p: &TelesinkProcess) -> f64 {
    p.scrape()
        .value("telesink_config_last_reload_success", &[])
        .expect("gauge present")
}

/// Waits for `telesink_config_last_reload_success` to read `want` (metrics follow the swap).
#[track_caller]
fn wait_last_reload_success(p: &TelesinkProcess, want: f64) {
    let t0 = Instant::now();
    while last_reload_success(p) != want {
        assert!(
            t0.elapsed() < IN_FORCE,
            "last reload success never {want}\n{}",
            p.logs()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the reload counters satisfy `ok`; panics after `within`.
#[track_caller]
fn wait_reloads(
    p: &TelesinkProcess,
    within: Duration,
    what: &str,
    ok: impl Fn((u64, u64)) -> bool,
) -> (u64, u64) {
    let t0 = Instant::now();
    loop {
        let r = reloads(p);
        if ok(r) {
            return r;
        }
        if t0.elapsed() > within {
            panic!(
                "{what}: reloads (success, failure) = {r:?} after {within:?}\n{}",
                p.logs()
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the server's log contains `text`.
#[track_caller]
fn wait_log(p: &TelesinkProcess, text: &str, within: Duration) {
    let t0 = Instant::now();
    while !p.logs().contains(text) {
        if t0.elapsed() > within {
            panic!("log never said {text:?}\n{}", p.logs());
        }
        thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// Edit kinds
// ---------------------------------------------------------------------------------------------

type Edit = fn(&Path, &str);

/// `open(O_TRUNC)` + write, as `echo x > file` or an editor saving in place.
fn write_in_place(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
}

/// An editor's safe save: write a temporary file beside it, rename it over.
fn write_rename(path: &Path, text: &str) {
    let name = path.file_name().unwrap().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.swp"));
    fs::write(&tmp, text).unwrap();
    fs::rename(&tmp, path).unwrap();
}

/// `rm file; create file`.
fn delete_create(path: &Path, text: &str) {
    fs::remove_file(path).unwrap();
    thread::sleep(Duration::from_millis(20));
    fs::write(path, text).unwrap();
}

/// `cp new file`, the new content prepared elsewhere.
fn cp_over(path: &Path, text: &str) {
    let staging = path.parent().unwrap().join(".staging");
    fs::create_dir_all(&staging).unwrap();
    let src = staging.join(path.file_name().unwrap());
    fs::write(&src, text).unwrap();
    let st = Command::new("cp").arg(&src).arg(path).status().unwrap();
    assert!(st.success());
}

/// Three rounds of: edit the list (a new name blocked, the previous one no longer), then the
/// config (the record's new value); each in force within 2 s, no failed reload.
fn edit_kind(edit: Edit) {
    let up = TestUpstream::start();
    let p = start_edit_server(&up);
    let config0 = fs::read_to_string(p.config_path()).unwrap();
    assert_eq!(a(&p, "edit0.example"), [NULL]);
    assert_eq!(a(&p, "cfg.home.arpa"), [Ipv4Addr::new(10, 0, 0, 1)]);
    let list = p.dir().join("edit.txt");
    let mut slowest = Duration::ZERO;
    for n in 1..=3u8 {
        edit(&list, &format!("edit{n}.example\n"));
        slowest = slowest.max(wait_answer(&p, &format!("edit{n}.example"), NULL, IN_FORCE));
        assert_eq!(a(&p, &format!("edit{}.example", n - 1)), [DEFAULT_V4]);

        edit(p.config_path(), &with_record(&config0, n + 1));
        let want = Ipv4Addr::new(10, 0, 0, n + 1);
        slowest = slowest.max(wait_answer(&p, "cfg.home.arpa", want, IN_FORCE));
        assert_eq!(a(&p, &format!("edit{n}.example")), [NULL]);
    }
    // Settle, then: no edit was ever seen half-done.
    thread::sleep(Duration::from_millis(400));
    let (ok, failed) = reloads(&p);
    assert_eq!(failed, 0, "a reload failed\n{}", p.logs());
    assert!(ok >= 6, "{ok} reloads for 6 edits");
    eprintln!("slowest edit in force after {slowest:?}");
}

#[test]
fn write_in_place_is_in_force_within_2s() {
    edit_kind(write_in_place);
}

#[test]
fn write_temp_then_rename_is_in_force_within_2s() {
    edit_kind(write_rename);
}

#[test]
fn delete_then_create_is_in_force_within_2s() {
    edit_kind(delete_create);
}

#[test]
fn cp_over_is_in_force_within_2s() {
    edit_kind(cp_over);
}

/// What the kubelet's atomic writer does: a new timestamped directory with every file, a
/// temporary symlink to it renamed over `..data`, the old directory removed.
fn configmap_publish(dir: &Path, generation: u32, files: &[(&str, &str)]) {
    let ts = format!(
        "..2026_11_25_12_00_{generation:02}.{:09}",
        generation * 7919 + 1
    );
    let new = dir.join(&ts);
    fs::create_dir(&new).unwrap();
    for (name, text) in files {
        fs::write(new.join(name), text).unwrap();
    }
    let old = fs::read_link(dir.join("..data")).ok();
    symlink(&ts, dir.join("..data_tmp")).unwrap();
    fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    if let Some(old) = old {
        fs::remove_dir_all(dir.join(old)).unwrap();
    }
}

#[test]
fn kubernetes_configmap_update_is_in_force_within_2s() {
    let up = TestUpstream::start();
    let t = Telesink::new().upstream(&up).toml(EDIT_BODY);
    let dir = t.dir().to_path_buf();
    // The mount as the kubelet makes it; the harness then writes config.toml through its link.
    configmap_publish(
        &dir,
        0,
        &[("config.toml", ""), ("edit.txt", "edit0.example\n")],
    );
    symlink("..data/config.toml", dir.join("config.toml")).unwrap();
    symlink("..data/edit.txt", dir.join("edit.txt")).unwrap();
    let p = t.start();
    assert!(fs::symlink_metadata(p.config_path())
        .unwrap()
        .file_type()
        .is_symlink());
    let config0 = fs::read_to_string(p.config_path()).unwrap();
    assert_eq!(a(&p, "edit0.example"), [NULL]);

    let mut generation = 0;
    let mut slowest = Duration::ZERO;
    let mut config = config0.clone();
    for n in 1..=3u8 {
        generation += 1;
        let list = format!("edit{n}.example\n");
        configmap_publish(
            &dir,
            generation,
            &[("config.toml", &config), ("edit.txt", &list)],
        );
        slowest = slowest.max(wait_answer(&p, &format!("edit{n}.example"), NULL, IN_FORCE));
        assert_eq!(a(&p, &format!("edit{}.example", n - 1)), [DEFAULT_V4]);

        generation += 1;
        config = with_record(&config0, n + 1);
        configmap_publish(
            &dir,
            generation,
            &[("config.toml", &config), ("edit.txt", &list)],
        );
        let want = Ipv4Addr::new(10, 0, 0, n + 1);
        slowest = slowest.max(wait_answer(&p, "cfg.home.arpa", want, IN_FORCE));
    }
    thread::sleep(Duration::from_millis(400));
    let (_, failed) = reloads(&p);
    assert_eq!(failed, 0, "a reload failed\n{}", p.logs());
    eprintln!("slowest ConfigMap update in force after {slowest:?}");
}

// ---------------------------------------------------------------------------------------------
// What is watched
// ---------------------------------------------------------------------------------------------

#[test]
fn other_files_next_to_the_config_do_not_reload() {
    let up = TestUpstream::start();
    let p = Telesink::new()
        .upstream(&up)
        .file("edit.txt", "edit0.example\n")
        .toml(EDIT_BODY)
        .querylog_toml("log = \"all\"")
        .start();
    let dir = p.dir().to_path_buf();
    thread::sleep(Duration::from_millis(500));
    let before = reloads(&p);

    // Two seconds of churn beside the config: the query log writing its WAL (every query is
    // logged), editor droppings, a backup copy, unrelated files made and removed.
    let t0 = Instant::now();
    let mut i = 0u32;
    while t0.elapsed() < Duration::from_secs(2) {
        for k in 0..20 {
            let _ = try_query(
                p.addr(),
                client(2),
                &format!("churn{i}-{k}.example"),
                RecordType::A,
                &QueryOpts::udp(),
            );
        }
        fs::write(dir.join("notes.txt"), format!("{i}\n")).unwrap();
        fs::write(dir.join(".edit.txt.swp"), format!("{i}\n")).unwrap();
        fs::write(dir.join("config.toml.bak"), format!("{i}\n")).unwrap();
        fs::write(dir.join("scratch.toml"), "x").unwrap();
        fs::remove_file(dir.join("scratch.toml")).unwrap();
        i += 1;
        thread::sleep(Duration::from_millis(50));
    }
    thread::sleep(Duration::from_millis(700));
    let wal = dir.join("q.db-wal");
    assert!(
        wal.exists(),
        "the query log's WAL should sit next to the config"
    );
    assert_eq!(
        reloads(&p),
        before,
        "unrelated files reloaded\n{}",
        p.logs()
    );

    // The watched files still are.
    fs::write(dir.join("edit.txt"), "edit1.example\n").unwrap();
    wait_answer(&p, "edit1.example", NULL, IN_FORCE);
}

#[test]
fn lists_added_to_the_config_are_watched_and_removed_ones_are_not() {
    let up = TestUpstream::start();
    let p = start_edit_server(&up);
    let dir = p.dir().to_path_buf();
    let config0 = fs::read_to_string(p.config_path()).unwrap();
    fs::create_dir(dir.join("sub")).unwrap();
    fs::write(dir.join("sub/extra.txt"), "extra1.example\n").unwrap();
    thread::sleep(Duration::from_millis(400));
    // Nothing in sub/ is watched yet: editing it changes nothing.
    let r0 = reloads(&p);
    fs::write(dir.join("sub/extra.txt"), "extra1.example\n").unwrap();
    thread::sleep(Duration::from_millis(700));
    assert_eq!(reloads(&p), r0);
    assert_eq!(a(&p, "extra1.example"), [DEFAULT_V4]);

    let extra =
        "\n[[list]]\nname = \"extra\"\nsource = \"sub/extra.txt\"\ncategories = [\"telemetry\"]\n";
    write_rename(p.config_path(), &format!("{config0}{extra}"));
    wait_answer(&p, "extra1.example", NULL, IN_FORCE);
    // Now it is watched.
    write_in_place(&dir.join("sub/extra.txt"), "extra2.example\n");
    wait_answer(&p, "extra2.example", NULL, IN_FORCE);
    assert_eq!(a(&p, "extra1.example"), [DEFAULT_V4]);

    // Removed from the config: no longer in force, no longer watched.
    write_rename(p.config_path(), &config0);
    wait_answer(&p, "extra2.example", DEFAULT_V4, IN_FORCE);
    thread::sleep(Duration::from_millis(400));
    let r1 = reloads(&p);
    for i in 0..5 {
        write_in_place(
            &dir.join("sub/extra.txt"),
            &format!("extra-late{i}.example\n"),
        );
        thread::sleep(Duration::from_millis(60));
    }
    thread::sleep(Duration::from_millis(700));
    assert_eq!(
        reloads(&p),
        r1,
        "a list no longer in the config still reloads\n{}",
        p.logs()
    );

    // A list added before its file exists: the reload fails; creating the file recovers.
    fs::create_dir(dir.join("later")).unwrap();
    let later =
        "\n[[list]]\nname = \"later\"\nsource = \"later/x.txt\"\ncategories = [\"telemetry\"]\n";
    write_rename(p.config_path(), &format!("{config0}{later}"));
    wait_reloads(&p, IN_FORCE, "missing list file", |(_, f)| f > r1.1);
    fs::write(dir.join("later/x.txt"), "later1.example\n").unwrap();
    wait_answer(&p, "later1.example", NULL, IN_FORCE);
}

#[test]
fn a_list_directory_replaced_whole_is_seen() {
    let up = TestUpstream::start();
    let body = "[blocking]\nmode = \"null\"\n[default]\nblock = [\"telemetry\"]\n\
                [[list]]\nname = \"vendor\"\nsource = \"lists/vendor/v.txt\"\ncategories = [\"telemetry\"]\n";
    let p = Telesink::new()
        .upstream(&up)
        .file("lists/vendor/v.txt", "dir1.example\n")
        .toml(body)
        .start();
    assert_eq!(a(&p, "dir1.example"), [NULL]);
    let dir = p.dir().to_path_buf();
    // A deploy step: the whole tree removed (a failed reload: the list is gone), then the
    // new tree moved into place a moment later.
    fs::create_dir_all(dir.join("lists.new/vendor")).unwrap();
    fs::write(dir.join("lists.new/vendor/v.txt"), "dir2.example\n").unwrap();
    let (_, f0) = reloads(&p);
    fs::remove_dir_all(dir.join("lists")).unwrap();
    wait_reloads(&p, IN_FORCE, "list tree removed", |(_, f)| f > f0);
    assert_eq!(a(&p, "dir1.example"), [NULL], "the old policy stays");
    fs::rename(dir.join("lists.new"), dir.join("lists")).unwrap();
    wait_answer(&p, "dir2.example", NULL, IN_FORCE);
    // And the new directory is watched.
    write_in_place(&dir.join("lists/vendor/v.txt"), "dir3.example\n");
    wait_answer(&p, "dir3.example", NULL, IN_FORCE);
}

#[test]
fn a_burst_of_writes_is_one_reload() {
    let up = TestUpstream::start();
    let p = start_edit_server(&up);
    let list = p.dir().join("edit.txt");
    thread::sleep(Duration::from_millis(400));
    let (ok0, failed0) = reloads(&p);
    // 30 writes over ~300 ms, as a script regenerating a list or a sync tool would.
    for i in 0..30 {
        write_in_place(&list, &format!("burst{i}.example\n"));
        thread::sleep(Duration::from_millis(10));
    }
    wait_answer(&p, "burst29.example", NULL, IN_FORCE);
    thread::sleep(Duration::from_millis(700));
    let (ok, failed) = reloads(&p);
    assert_eq!(failed, failed0);
    assert!(
        (1..=2).contains(&(ok - ok0)),
        "30 writes in a burst gave {} reloads\n{}",
        ok - ok0,
        p.logs()
    );
}

#[test]
fn sighup_reloads() {
    let up = TestUpstream::start();
    let p = start_edit_server(&up);
    thread::sleep(Duration::from_millis(400));
    let (ok0, failed0) = reloads(&p);
    p.signal("HUP");
    wait_reloads(&p, IN_FORCE, "SIGHUP", |(ok, _)| ok > ok0);
    p.signal("HUP");
    wait_reloads(&p, IN_FORCE, "second SIGHUP", |(ok, _)| ok > ok0 + 1);
    assert_eq!(reloads(&p).1, failed0);
    // The reload says why (fields may carry colour codes: match the value).
    wait_log(&p, "\"SIGHUP\"", IN_FORCE);
    assert_eq!(a(&p, "edit0.example"), [NULL]);
}

// ---------------------------------------------------------------------------------------------
// Failures
// ---------------------------------------------------------------------------------------------

#[test]
fn a_broken_config_keeps_the_old_policy_until_fixed_without_restart() {
    let up = TestUpstream::start();
    let mut p = start_edit_server(&up);
    let pid = p.pid();
    let config0 = fs::read_to_string(p.config_path()).unwrap();
    let dir = p.dir().to_path_buf();
    let ten = |n| Ipv4Addr::new(10, 0, 0, n);

    // 1. TOML syntax error: failure, logged with file:line, old policy throughout.
    let broken = format!("{}\n[[list]\nname = \"x\"\n", with_record(&config0, 9));
    let line = broken.lines().position(|l| l == "[[list]").unwrap() + 1;
    let (_, f0) = reloads(&p);
    write_rename(p.config_path(), &broken);
    wait_reloads(&p, IN_FORCE, "broken config", |(_, f)| f > f0);
    let logs = p.logs();
    assert!(logs.contains("keeping the previous policy"), "{logs}");
    assert!(
        logs.contains(&format!("config.toml:{line}:")),
        "no file:line {line}\n{logs}"
    );
    assert_eq!(last_reload_success(&p), 0.0);
    hold_answer(&p, "cfg.home.arpa", ten(1), Duration::from_millis(600));
    assert_eq!(a(&p, "edit0.example"), [NULL]);

    // Fixed: the new policy, same process.
    write_rename(p.config_path(), &with_record(&config0, 2));
    wait_answer(&p, "cfg.home.arpa", ten(2), IN_FORCE);
    wait_last_reload_success(&p, 1.0);

    // 2. An invalid value.
    let (_, f1) = reloads(&p);
    write_in_place(
        p.config_path(),
        &format!(
            "{}\n[[record]]\nname = \"bad.home.arpa\"\ntype = \"A\"\nvalue = \"not-an-address\"\n",
            with_record(&config0, 9)
        ),
    );
    wait_reloads(&p, IN_FORCE, "invalid value", |(_, f)| f > f1);
    hold_answer(&p, "cfg.home.arpa", ten(2), Duration::from_millis(300));
    write_in_place(p.config_path(), &with_record(&config0, 3));
    wait_answer(&p, "cfg.home.arpa", ten(3), IN_FORCE);

    // 3. The list vanishes: failure, old policy; the list coming back recovers.
    let (_, f2) = reloads(&p);
    fs::remove_file(dir.join("edit.txt")).unwrap();
    wait_reloads(&p, IN_FORCE, "list removed", |(_, f)| f > f2);
    assert!(p.logs().contains("does not exist"), "{}", p.logs());
    hold_answer(&p, "edit0.example", NULL, Duration::from_millis(300));
    fs::write(dir.join("edit.txt"), "edit1.example\n").unwrap();
    wait_answer(&p, "edit1.example", NULL, IN_FORCE);
    assert_eq!(a(&p, "edit0.example"), [DEFAULT_V4]);

    // 4. The list cannot be read (a FIFO: reading it would block forever): failure with the
    // list's file:line, old policy; a regular file again recovers.
    let (_, f3) = reloads(&p);
    fs::remove_file(dir.join("edit.txt")).unwrap();
    let st = Command::new("mkfifo")
        .arg(dir.join("edit.txt"))
        .status()
        .unwrap();
    assert!(st.success());
    wait_reloads(&p, IN_FORCE, "unreadable list", |(_, f)| f > f3);
    let list_line = config0.lines().position(|l| l == "[[list]]").unwrap() + 1;
    let logs = p.logs();
    assert!(logs.contains("not a regular file"), "{logs}");
    assert!(
        logs.contains(&format!("config.toml:{list_line}: list \"edit\"")),
        "{logs}"
    );
    hold_answer(&p, "edit1.example", NULL, Duration::from_millis(300));
    fs::remove_file(dir.join("edit.txt")).unwrap();
    fs::write(dir.join("edit.txt"), "edit2.example\n").unwrap();
    wait_answer(&p, "edit2.example", NULL, IN_FORCE);

    // 5. A restart-only setting: reported, the rest applied, the old listener kept.
    let listen = config0
        .lines()
        .find(|l| l.starts_with("listen = "))
        .unwrap();
    let moved = with_record(&config0, 4).replace(listen, "listen = [\"127.0.0.1:1\"]");
    write_rename(p.config_path(), &moved);
    wait_answer(&p, "cfg.home.arpa", ten(4), IN_FORCE);
    wait_log(&p, "takes effect only after a restart", IN_FORCE);
    assert!(p.logs().contains("server.listen"), "{}", p.logs());

    assert!(p.is_running());
    assert_eq!(p.pid(), pid, "no restart");
    wait_last_reload_success(&p, 1.0);
}

// ---------------------------------------------------------------------------------------------
// Queries across reloads
// ---------------------------------------------------------------------------------------------

/// Whether an answer is right: `Some(blocked)`, or `None` when it is wrong.
type Check = fn(&[Ipv4Addr]) -> Option<bool>;

#[derive(Default)]
struct LoopStats {
    queries: AtomicUsize,
    timeouts: AtomicUsize,
    servfail: AtomicUsize,
    wrong: AtomicUsize,
    flip_blocked: AtomicUsize,
    flip_allowed: AtomicUsize,
    examples: Mutex<Vec<String>>,
    slowest_us: AtomicUsize,
}

#[test]
fn queries_across_20_reloads_never_fail_or_see_a_mix() {
    let up = TestUpstream::start();
    let stable: String = (0..2000).map(|i| format!("stable{i}.example\n")).collect();
    let body = r#"
[blocking]
mode = "null"

[[list]]
name = "stable"
source = "stable.txt"
categories = ["telemetry"]

[[list]]
name = "toggle"
source = "toggle.txt"
categories = ["telemetry"]

[default]
block = ["telemetry"]

[[record]]
name = "cfg.home.arpa"
type = "A"
value = "10.0.0.1"
"#;
    let p = Telesink::new()
        .upstream(&up)
        .file("stable.txt", &stable)
        .file("toggle.txt", "flip.example\n")
        .toml(body)
        .start();
    let config0 = fs::read_to_string(p.config_path()).unwrap();
    let toggle = p.dir().join("toggle.txt");
    let addr = p.addr();

    let stats = Arc::new(LoopStats::default());
    let done = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for (i, tcp) in [(11u8, false), (12, false), (13, true), (14, true)] {
        let stats = stats.clone();
        let done = done.clone();
        clients.push(thread::spawn(move || {
            let opts = if tcp {
                QueryOpts::tcp()
            } else {
                QueryOpts::udp()
            }
            .timeout(Duration::from_secs(2));
            let mut k = 0usize;
            // Bounded: stops when the edits are done, or after 5000 queries.
            while !done.load(Ordering::SeqCst) && k < 5000 {
                k += 1;
                let (name, check): (String, Check) = match k % 4 {
                    0 => ("flip.example".into(), |a| match a {
                        [x] if *x == NULL => Some(true),
                        [x] if *x == DEFAULT_V4 => Some(false),
                        _ => None,
                    }),
                    1 => (format!("stable{}.example", k % 2000), |a| {
                        (a == [NULL]).then_some(true)
                    }),
                    2 => (format!("free{}.example", k % 300), |a| {
                        (a == [DEFAULT_V4]).then_some(false)
                    }),
                    _ => ("cfg.home.arpa".into(), |a| match a {
                        [x] if x.octets()[..3] == [10, 0, 0]
                            && (1..=30).contains(&x.octets()[3]) =>
                        {
                            Some(false)
                        }
                        _ => None,
                    }),
                };
                let t0 = Instant::now();
                let res = try_query(addr, client(i), &name, RecordType::A, &opts);
                stats
                    .slowest_us
                    .fetch_max(t0.elapsed().as_micros() as usize, Ordering::Relaxed);
                stats.queries.fetch_add(1, Ordering::Relaxed);
                let note = |s: String| {
                    let mut ex = stats.examples.lock().unwrap();
                    if ex.len() < 10 {
                        ex.push(s);
                    }
                };
                match res {
                    Err(e) => {
                        stats.timeouts.fetch_add(1, Ordering::Relaxed);
                        note(format!("{name} from 127.0.0.{i}: {e}"));
                    }
                    Ok(r) if r.rcode() == ResponseCode::ServFail => {
                        stats.servfail.fetch_add(1, Ordering::Relaxed);
                        note(format!("{name}: SERVFAIL"));
                    }
                    Ok(r) => match (r.rcode() == ResponseCode::NoError)
                        .then(|| check(&r.a()))
                        .flatten()
                    {
                        Some(blocked) => {
                            if name == "flip.example" {
                                let c = if blocked {
                                    &stats.flip_blocked
                                } else {
                                    &stats.flip_allowed
                                };
                                c.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        None => {
                            stats.wrong.fetch_add(1, Ordering::Relaxed);
                            note(format!("{name}: {}", r.summary()));
                        }
                    },
                }
                thread::sleep(Duration::from_millis(1));
            }
        }));
    }

    // 20 reloads: 16 good (list toggles, config changes), 4 failed (syntax, unknown table,
    // missing list file, invalid record), each failure followed by a fix.
    let mut record = 1u8;
    let mut flip_listed = true;
    let breaks = [
        "\n[[list]\n",
        "\n[nonsense]\nkey = 1\n",
        "\n[[list]]\nname = \"ghost\"\nsource = \"ghost.txt\"\ncategories = [\"telemetry\"]\n",
        "\n[[record]]\nname = \"bad.home.arpa\"\ntype = \"A\"\nvalue = \"300.1.1.1\"\n",
    ];
    let mut steps: Vec<&str> = Vec::new();
    for k in 0..4 {
        if k > 0 {
            steps.push("fix");
        }
        steps.extend(["toggle", "toggle", "config", "break"]);
    }
    steps.push("fix");
    assert_eq!(steps.len(), 20);
    let mut broken = 0;
    for (i, step) in steps.iter().enumerate() {
        let before = reloads(&p);
        let expect_failure = *step == "break";
        match *step {
            "toggle" => {
                flip_listed = !flip_listed;
                let text = if flip_listed {
                    "flip.example\n"
                } else {
                    "not-flip.example\n"
                };
                if i % 2 == 0 {
                    write_rename(&toggle, text);
                } else {
                    write_in_place(&toggle, text);
                }
            }
            "config" | "fix" => {
                record += 1;
                write_rename(p.config_path(), &with_record(&config0, record));
            }
            _ => {
                write_rename(
                    p.config_path(),
                    &format!("{}{}", with_record(&config0, record), breaks[broken]),
                );
                broken += 1;
            }
        }
        let after = wait_reloads(
            &p,
            Duration::from_secs(3),
            &format!("step {i} ({step})"),
            |(ok, f)| {
                if expect_failure {
                    f > before.1
                } else {
                    ok > before.0
                }
            },
        );
        if !expect_failure {
            let want = if flip_listed { NULL } else { DEFAULT_V4 };
            wait_answer(&p, "flip.example", want, IN_FORCE);
            wait_answer(
                &p,
                "cfg.home.arpa",
                Ipv4Addr::new(10, 0, 0, record),
                IN_FORCE,
            );
        }
        let _ = after;
        thread::sleep(Duration::from_millis(150));
    }
    done.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }

    let (ok, failed) = reloads(&p);
    let q = stats.queries.load(Ordering::Relaxed);
    let examples = stats.examples.lock().unwrap().join("\n  ");
    eprintln!(
        "{q} queries across {ok} good and {failed} failed reloads; flip blocked {} / allowed {}; slowest {} ms",
        stats.flip_blocked.load(Ordering::Relaxed),
        stats.flip_allowed.load(Ordering::Relaxed),
        stats.slowest_us.load(Ordering::Relaxed) / 1000
    );
    assert_eq!(
        stats.timeouts.load(Ordering::Relaxed),
        0,
        "timeouts:\n  {examples}"
    );
    assert_eq!(
        stats.servfail.load(Ordering::Relaxed),
        0,
        "SERVFAIL:\n  {examples}"
    );
    assert_eq!(
        stats.wrong.load(Ordering::Relaxed),
        0,
        "wrong answers:\n  {examples}"
    );
    assert!(q >= 3000, "only {q} queries ran");
    assert!(
        ok >= 16 && failed >= 4,
        "reloads: {ok} good, {failed} failed"
    );
    assert!(
        stats.flip_blocked.load(Ordering::Relaxed) > 0
            && stats.flip_allowed.load(Ordering::Relaxed) > 0
    );
}

// ---------------------------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------------------------

fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn reloads_do_not_accumulate_old_policies() {
    let up = TestUpstream::start();
    let big: String = (0..100_000)
        .map(|i| format!("n{i}.big-list.example\n"))
        .collect();
    let p = Telesink::new()
        .upstream(&up)
        .file("edit.txt", &big)
        .toml(EDIT_BODY)
        .start();
    let pid = p.pid().unwrap();
    thread::sleep(Duration::from_millis(300));
    let base = rss_kib(pid);
    let mut peak = base;
    for n in 1..=10u32 {
        let (ok0, _) = reloads(&p);
        write_rename(
            &p.dir().join("edit.txt"),
            &format!("{big}round{n}.example\n"),
        );
        // Generous: a debug build on a busy machine takes a while for 100k names.
        wait_reloads(&p, Duration::from_secs(15), "big reload", |(ok, _)| {
            ok > ok0
        });
        wait_answer(
            &p,
            &format!("round{n}.example"),
            NULL,
            Duration::from_secs(5),
        );
        peak = peak.max(rss_kib(pid));
    }
    thread::sleep(Duration::from_millis(300));
    let after = rss_kib(pid);
    eprintln!("RSS: {base} KiB at start, {after} KiB after 10 reloads, peak seen {peak} KiB");
    // One policy for 100k names is a few MB (more while it is built): keeping every old one
    // would add tens of MB; the allocator's noise is well under 1 MB.
    assert!(
        after < base + 6 * 1024,
        "RSS grew from {base} KiB to {after} KiB over 10 reloads\n{}",
        p.logs()
    );
}

// ---------------------------------------------------------------------------------------------
// URL lists
// ---------------------------------------------------------------------------------------------

/// Requests the mirror answered with `status`.
fn answered(srv: &ListMirror, status: u16) -> usize {
    srv.requests().iter().filter(|r| r.status == status).count()
}

/// Requests that carried `If-None-Match`.
fn conditional(srv: &ListMirror) -> usize {
    srv.requests()
        .iter()
        .filter(|r| r.if_none_match.is_some())
        .count()
}

/// Serves `body` as the one list, with validators `etag`.
fn serve_list(srv: &ListMirror, etag: &str, body: &str) {
    srv.put("list.txt", etag, "Tue, 01 Dec 2026 00:00:00 GMT", body);
}

fn url_body(urls: &[(&str, &str)]) -> String {
    let mut t = String::from("[blocking]\nmode = \"null\"\n[default]\nblock = [\"telemetry\"]\n");
    for (name, url) in urls {
        t.push_str(&format!(
            "\n[[list]]\nname = \"{name}\"\nsource = \"{url}\"\ncategories = [\"telemetry\"]\nrefresh = \"1h\"\n"
        ));
    }
    t
}

#[test]
fn url_list_first_fetch_304_new_content_and_server_down() {
    let up = TestUpstream::start();
    let mut srv = ListMirror::start_plain();
    serve_list(&srv, "\"v1\"", "url1.example\n");
    let url = srv.url("list.txt");
    let p = Telesink::new()
        .upstream(&up)
        .toml(&url_body(&[("remote", &url)]))
        .start();
    let cache = p.dir().join(cache_rel(&url));
    let meta = PathBuf::from(format!("{}.meta", cache.display()));

    // First fetch: in the background after start-up, then a reload.
    wait_answer(&p, "url1.example", NULL, Duration::from_secs(5));
    assert_eq!(answered(&srv, 200), 1);
    assert_eq!(conditional(&srv), 0);
    assert_eq!(fs::read_to_string(&cache).unwrap(), "url1.example\n");
    assert!(fs::read_to_string(&meta).unwrap().contains("etag \"v1\""));

    // SIGHUP checks again, conditionally: 304, nothing downloaded, no reload beyond SIGHUP's.
    thread::sleep(Duration::from_millis(400));
    let (ok0, _) = reloads(&p);
    p.signal("HUP");
    let t0 = Instant::now();
    while answered(&srv, 304) < 1 {
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "no conditional request\n{}",
            p.logs()
        );
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(Duration::from_millis(600));
    assert_eq!(answered(&srv, 200), 1);
    assert_eq!(
        reloads(&p).0,
        ok0 + 1,
        "only SIGHUP's own reload\n{}",
        p.logs()
    );
    assert_eq!(a(&p, "url1.example"), [NULL]);

    // New content: downloaded, cached, in force.
    serve_list(&srv, "\"v2\"", "url2.example\n");
    p.signal("HUP");
    wait_answer(&p, "url2.example", NULL, Duration::from_secs(3));
    assert_eq!(a(&p, "url1.example"), [DEFAULT_V4]);
    assert_eq!(answered(&srv, 200), 2);
    assert_eq!(fs::read_to_string(&cache).unwrap(), "url2.example\n");
    assert!(fs::read_to_string(&meta).unwrap().contains("etag \"v2\""));

    // An error page served as 200: not a list; the cached copy stays.
    serve_list(
        &srv,
        "\"v3\"",
        "<html><body><h1>Service unavailable</h1></body></html>\n",
    );
    p.signal("HUP");
    wait_log(&p, "has no rules", Duration::from_secs(3));
    hold_answer(&p, "url2.example", NULL, Duration::from_millis(300));
    assert_eq!(fs::read_to_string(&cache).unwrap(), "url2.example\n");

    // Server down: the download fails, the cached copy stays in force.
    srv.down();
    p.signal("HUP");
    wait_log(
        &p,
        "download failed, keeping the cached copy",
        Duration::from_secs(3),
    );
    hold_answer(&p, "url2.example", NULL, Duration::from_millis(500));
    assert_eq!(fs::read_to_string(&cache).unwrap(), "url2.example\n");

    // Back up with new content: recovers.
    serve_list(&srv, "\"v4\"", "url4.example\n");
    srv.up();
    p.signal("HUP");
    wait_answer(&p, "url4.example", NULL, Duration::from_secs(3));
    assert_eq!(reloads(&p).1, 0, "no reload failed\n{}", p.logs());
}

#[test]
fn url_list_start_up_with_the_server_unreachable_serves_the_cache_at_once() {
    let up = TestUpstream::start();
    // Accepts connections (the kernel does) but never answers: a download would hang.
    let hang = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = hang.local_addr().unwrap().port();
    let cached = format!("http://127.0.0.1:{port}/cached.txt");
    let uncached = format!("http://127.0.0.1:{port}/uncached.txt");
    let t0 = Instant::now();
    let p = Telesink::new()
        .upstream(&up)
        .file(&cache_rel(&cached), "cached1.example\n")
        .file(
            &format!("{}.meta", cache_rel(&cached)),
            format!("url {cached}\netag \"v1\"\nchecked 0\n"),
        )
        .toml(&url_body(&[("cached", &cached), ("uncached", &uncached)]))
        .start();
    // Serving from the cached copy right away.
    assert_eq!(a(&p, "cached1.example"), [NULL]);
    let ready = t0.elapsed();
    // The hanging download gives up only after its 120 s timeout: an answer before that failure
    // shows start-up did not wait for it (no wall-clock bound, which a loaded machine breaks).
    assert!(
        !p.logs().contains("download failed"),
        "served only after the download gave up\n{}",
        p.logs()
    );
    // The list without a cached copy is empty, with a warning.
    assert!(p.logs().contains("no cached copy"), "{}", p.logs());
    // A download was attempted in the background (and is still hanging).
    hang.set_nonblocking(true).unwrap();
    let t1 = Instant::now();
    loop {
        if hang.accept().is_ok() {
            break;
        }
        assert!(
            t1.elapsed() < Duration::from_secs(3),
            "no download attempted\n{}",
            p.logs()
        );
        thread::sleep(Duration::from_millis(20));
    }
    // Still serving while the download hangs.
    for _ in 0..10 {
        assert_eq!(a(&p, "cached1.example"), [NULL]);
        assert_eq!(a(&p, "other.example"), [DEFAULT_V4]);
    }
    eprintln!("answered from the cache {ready:?} after spawning");
    // A hanging download does not hold up a graceful stop either.
    let mut p = p;
    let t2 = Instant::now();
    let status = p.terminate(Duration::from_secs(8));
    assert!(
        status.is_some(),
        "SIGTERM during a download: still running after 8 s"
    );
    eprintln!("stopped {:?} after SIGTERM", t2.elapsed());
}
