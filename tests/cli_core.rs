//! `telesink check`, `telesink explain` and `--help` (SPEC "Command line" and "Lists").
//!
//! Output format is the implementation's; these tests look only for the facts the SPEC says are
//! printed (names, counts, categories, `file:line`, group, action), in stdout or stderr.

mod support;

use std::fs;

use support::*;

const BODY: &str = r#"
[blocking]
mode = "null"

[[list]]
name = "xiaomi-list"
source = "cli-xiaomi.txt"
categories = ["telemetry", "vendor-xiaomi"]

[[list]]
name = "huawei-list"
source = "cli-huawei.txt"
categories = ["telemetry", "vendor-huawei"]

[[client]]
name = "anna-phone"
addresses = ["127.0.0.5"]

[[client]]
name = "living-room-tv"
addresses = ["127.0.0.6"]

[[group]]
name = "phones"
clients = ["anna-phone"]
block = ["telemetry"]
observe = []

[[group]]
name = "tvs"
clients = ["living-room-tv"]
block = ["telemetry"]
observe = ["vendor-xiaomi"]

[default]
block = ["ads"]
observe = []
"#;

fn config() -> Telesink {
    Telesink::new()
        .fixture("cli-xiaomi.txt")
        .fixture("cli-huawei.txt")
        .toml(BODY)
}

/// Whether `out` has `n` as a whole number (not part of a longer number or a dotted address).
fn has_number(out: &str, n: u64) -> bool {
    out.split(|c: char| !c.is_ascii_digit() && c != '.')
        .flat_map(|tok| {
            // "6." at a sentence end still counts; "127.0.0.5" does not split into "5".
            let t = tok.trim_end_matches('.');
            if t.contains('.') {
                None
            } else {
                Some(t)
            }
        })
        .any(|t| t == n.to_string())
}

/// Whether `out` points at line `line` of `file`: `file:line`, or the file named together with
/// `line N` / `line: N` / `line=N` / `:N` on one output line.
fn mentions_line(out: &str, file: &str, line: u32) -> bool {
    if out.contains(&format!("{file}:{line}")) && !out.contains(&format!("{file}:{line}0")) {
        return true;
    }
    out.lines().any(|l| {
        let lower = l.to_ascii_lowercase();
        lower.contains(file)
            && [
                format!("line {line}"),
                format!("line: {line}"),
                format!("line={line}"),
                format!(":{line}"),
            ]
            .iter()
            .any(|p| {
                lower
                    .match_indices(p.as_str())
                    .any(|(i, _)| !lower[i + p.len()..].starts_with(|c: char| c.is_ascii_digit()))
            })
    })
}

#[test]
fn check_prints_lists_counts_categories_and_skipped_lines() {
    let out = config().cli(&["check"]);
    assert_eq!(
        out.code,
        Some(0),
        "a valid config (with a bad list line) passes check:\n{out}"
    );
    let all = out.all();
    for s in [
        "xiaomi-list",
        "huawei-list",
        "telemetry",
        "vendor-xiaomi",
        "vendor-huawei",
    ] {
        assert!(all.contains(s), "check output must mention {s:?}:\n{out}");
    }
    assert!(
        has_number(&all, 6),
        "xiaomi-list has 6 entries (5 lines, one with two hosts):\n{out}"
    );
    assert!(has_number(&all, 11), "huawei-list has 11 entries:\n{out}");
    assert!(
        mentions_line(&all, "cli-xiaomi.txt", 7),
        "the skipped line must be shown as cli-xiaomi.txt:7:\n{out}"
    );
}

#[test]
fn check_uses_config_toml_in_the_current_directory_by_default() {
    let cfg = config();
    let path = cfg.write_config();
    assert!(path.ends_with("config.toml"));
    let out = cli_in(cfg.dir(), &["check"]);
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.all().contains("xiaomi-list"), "{out}");
}

/// Write `text` as `config.toml` in a fresh directory and run `telesink check -c` on it.
fn check_text(text: &str) -> CliOutput {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    fs::write(&path, text).unwrap();
    cli_in(dir.path(), &["check", "-c", path.to_str().unwrap()])
}

#[test]
fn check_rejects_an_unknown_key_naming_file_line_and_key() {
    let out =
        check_text("[server]\nlisten = [\"127.0.0.1:53535\"]\nlisen = [\"127.0.0.1:53536\"]\n");
    assert_eq!(out.code, Some(1), "an unknown key is an error:\n{out}");
    let all = out.all();
    assert!(all.contains("lisen"), "the error names the key:\n{out}");
    assert!(
        all.contains("config.toml"),
        "the error names the file:\n{out}"
    );
    assert!(
        mentions_line(&all, "config.toml", 3) || all.contains("line 3"),
        "the error names line 3:\n{out}"
    );
    assert!(
        all.contains("listen"),
        "the error says what would be valid (listen):\n{out}"
    );
}

#[test]
fn check_rejects_an_unknown_key_in_a_list_table() {
    let text = "[[list]]\nname = \"x\"\nsource = \"x.txt\"\ncategoies = [\"telemetry\"]\n";
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("x.txt"), "a.example\n").unwrap();
    let path = dir.path().join("config.toml");
    fs::write(&path, text).unwrap();
    let out = cli_in(dir.path(), &["check", "-c", path.to_str().unwrap()]);
    assert_eq!(out.code, Some(1), "{out}");
    let all = out.all();
    assert!(all.contains("categoies"), "{out}");
    assert!(
        mentions_line(&all, "config.toml", 4) || all.contains("line 4"),
        "the error names line 4:\n{out}"
    );
}

#[test]
fn check_rejects_a_bad_value_and_says_what_is_valid() {
    let out = check_text("[blocking]\nmode = \"blackhole\"\n");
    assert_eq!(out.code, Some(1), "{out}");
    let all = out.all();
    assert!(all.contains("mode") || all.contains("blackhole"), "{out}");
    assert!(
        mentions_line(&all, "config.toml", 2) || all.contains("line 2"),
        "the error names line 2:\n{out}"
    );
    assert!(
        all.contains("nxdomain"),
        "the error lists the valid modes:\n{out}"
    );
}

#[test]
fn check_fails_on_a_missing_list_naming_its_path() {
    let out = check_text("[[list]]\nname = \"gone\"\nsource = \"does-not-exist.txt\"\ncategories = [\"telemetry\"]\n");
    assert_eq!(
        out.code,
        Some(1),
        "a list that cannot be read is an error:\n{out}"
    );
    assert!(
        out.all().contains("does-not-exist.txt"),
        "the error names the path:\n{out}"
    );
}

#[test]
fn explain_names_list_line_category_group_and_action() {
    let out = config().cli(&["explain", "tracking.miui.com", "--client", "127.0.0.5"]);
    assert_eq!(out.code, Some(0), "{out}");
    let all = out.all();
    for s in ["xiaomi-list", "telemetry", "phones", "blocked"] {
        assert!(all.contains(s), "explain must mention {s:?}:\n{out}");
    }
    assert!(
        mentions_line(&all, "cli-xiaomi.txt", 3) || has_line_word(&all, 3),
        "explain names line 3:\n{out}"
    );
    assert!(!all.contains("huawei-list"), "{out}");
}

/// `line 3` / `line: 3` / `line=3` anywhere (for outputs that give the line apart from the file).
fn has_line_word(out: &str, n: u32) -> bool {
    let lower = out.to_ascii_lowercase();
    [
        format!("line {n}"),
        format!("line: {n}"),
        format!("line={n}"),
        format!("line {n}:"),
    ]
    .iter()
    .any(|p| {
        lower
            .match_indices(p.as_str())
            .any(|(i, _)| !lower[i + p.len()..].starts_with(|c: char| c.is_ascii_digit()))
    })
}

#[test]
fn explain_matches_parents_and_other_forms() {
    let cfg = config();
    // A subdomain matches through its listed parent.
    let out = cfg.cli(&["explain", "a.b.tracking.miui.com", "--client", "127.0.0.5"]);
    assert_eq!(out.code, Some(0), "{out}");
    let all = out.all();
    assert!(
        all.contains("xiaomi-list") && all.contains("tracking.miui.com"),
        "{out}"
    );
    assert!(
        mentions_line(&all, "cli-xiaomi.txt", 3) || has_line_word(&all, 3),
        "{out}"
    );
    // Hosts line with two names: the second one, on line 4.
    let out = cfg.cli(&["explain", "data.mistat.xiaomi.com", "--client", "127.0.0.5"]);
    assert_eq!(out.code, Some(0), "{out}");
    assert!(
        mentions_line(&out.all(), "cli-xiaomi.txt", 4) || has_line_word(&out.all(), 4),
        "{out}"
    );
    // Wildcard on line 6 covers its base name.
    let out = cfg.cli(&["explain", "log.miui.com", "--client", "127.0.0.5"]);
    assert_eq!(out.code, Some(0), "{out}");
    assert!(
        mentions_line(&out.all(), "cli-xiaomi.txt", 6) || has_line_word(&out.all(), 6),
        "{out}"
    );
}

#[test]
fn explain_gives_the_action_of_the_clients_group() {
    let cfg = config();
    // living-room-tv is in "tvs", which blocks telemetry but observes vendor-xiaomi: observed.
    let out = cfg.cli(&["explain", "tracking.miui.com", "--client", "127.0.0.6"]);
    assert_eq!(out.code, Some(0), "{out}");
    assert!(
        out.all().contains("tvs") && out.all().contains("observed"),
        "{out}"
    );
    // An address in no group: [default], which neither blocks nor observes these: allowed.
    let out = cfg.cli(&["explain", "tracking.miui.com", "--client", "127.0.0.77"]);
    assert_eq!(out.code, Some(0), "{out}");
    assert!(
        out.all().contains("default") && out.all().contains("allowed"),
        "{out}"
    );
    // A name on no list.
    let out = cfg.cli(&["explain", "unlisted.example", "--client", "127.0.0.5"]);
    assert_eq!(out.code, Some(0), "{out}");
    assert!(!out.all().contains("xiaomi-list"), "{out}");
}

#[test]
fn help_lists_the_commands() {
    let out = cli(&["--help"]);
    assert_eq!(out.code, Some(0), "{out}");
    for c in ["run", "check", "explain", "verify", "mark", "log"] {
        assert!(out.stdout.contains(c), "--help must list {c}:\n{out}");
    }
    for sub in ["run", "check", "explain"] {
        let out = cli(&[sub, "--help"]);
        assert_eq!(out.code, Some(0), "{sub} --help:\n{out}");
        assert!(
            out.stdout.contains("-c") || out.stdout.contains("--config"),
            "{sub} --help:\n{out}"
        );
    }
}

#[test]
fn run_refuses_an_invalid_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let port = free_port_udp_tcp();
    fs::write(
        &path,
        format!("[server]\nlisten = [\"127.0.0.1:{port}\"]\nrate_limit_qps = 0\nlisen = [\"127.0.0.1:1\"]\n"),
    )
    .unwrap();
    let out = cli_in_within(
        dir.path(),
        &["run", "-c", path.to_str().unwrap()],
        std::time::Duration::from_secs(10),
    );
    let stderr = out.stderr;
    let code = out
        .code
        .unwrap_or_else(|| panic!("run kept serving with an invalid config; stderr:\n{stderr}"));
    assert_ne!(
        code, 0,
        "run must fail on an invalid config; stderr:\n{stderr}"
    );
    assert!(stderr.contains("lisen"), "{stderr}");
    assert!(
        mentions_line(&stderr, "config.toml", 4) || stderr.contains("line 4"),
        "{stderr}"
    );
}
