//! Prometheus for the tests: a parser of the text exposition that telesink's `/metrics` serves
//! ([`Exposition`]), and a real Prometheus server scraping telesink ([`Prometheus`], Debian's
//! `prometheus` package).
//!
//! The parser is written here rather than taken from crates.io: `prometheus-parse` (the one
//! candidate) is unmaintained since 2023 and would add chrono and lazy_static to the dev tree
//! for the forty lines below, which handle what the text format allows (escaped label values,
//! timestamps, `NaN` and `±Inf`).

use std::collections::BTreeMap;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use super::process::{which, Process};
use super::{free_port_tcp, http_get};

/// One sample of the text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The samples of one scrape, in the order served.
#[derive(Debug, Clone, Default)]
pub struct Exposition(Vec<Sample>);

impl std::ops::Deref for Exposition {
    type Target = [Sample];
    fn deref(&self) -> &[Sample] {
        &self.0
    }
}

impl Exposition {
    /// Parses the text format (version 0.0.4). Comments and blank lines are skipped; a line
    /// that is not a sample is an error naming it.
    pub fn parse(text: &str) -> Result<Exposition, String> {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| parse_sample(l).ok_or_else(|| format!("not a sample line: {l:?}")))
            .collect::<Result<_, _>>()
            .map(Exposition)
    }

    /// The value of the series `name` with exactly `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.iter()
            .find(|s| s.name == name && s.labels.len() == labels.len() && has_labels(s, labels))
            .map(|s| s.value)
    }

    /// The sum over every series `name` that has (at least) `labels`; 0 when there is none.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.iter()
            .filter(|s| s.name == name && has_labels(s, labels))
            .map(|s| s.value)
            .sum()
    }
}

fn has_labels(s: &Sample, labels: &[(&str, &str)]) -> bool {
    labels
        .iter()
        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
}

/// `name{k="v",…} value [timestamp]`.
fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' ']).unwrap_or(line.len());
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices();
        loop {
            // key="value" pairs, separated by commas; a trailing comma is allowed.
            let (start, c) = chars.next()?;
            if c == '}' {
                rest = &body[start + 1..];
                break;
            }
            if c == ',' || c == ' ' {
                continue;
            }
            let eq = body[start..].find('=')? + start;
            let key = body[start..eq].trim();
            while chars.next()?.0 < eq {}
            if chars.next()?.1 != '"' {
                return None;
            }
            let mut value = String::new();
            loop {
                match chars.next()?.1 {
                    '"' => break,
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    c => value.push(c),
                }
            }
            labels.insert(key.to_string(), value);
        }
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    (!name.is_empty()).then(|| Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Whether `tools` (e.g. `prometheus`, `promtool`) are installed: their paths, or `None` after
/// printing that `test` is skipped. Under CI (`CI` set) a missing tool fails the test instead.
pub fn require(test: &str, tools: &[&str]) -> Option<Vec<PathBuf>> {
    let found: Option<Vec<PathBuf>> = tools.iter().map(|t| which(t)).collect();
    if found.is_none() {
        let what = tools.join("/");
        if std::env::var_os("CI").is_some() {
            panic!(
                "{what} must be on PATH under CI: install Debian's `prometheus` package in .ci/run"
            );
        }
        eprintln!("SKIPPED {test}: {what} not on PATH (apt-get install prometheus); under CI this test fails instead");
    }
    found
}

/// A Prometheus server on a free loopback port, scraping `targets` every second, with a
/// temporary config and TSDB. Killed by its PID on drop (its log printed if the test failed).
pub struct Prometheus {
    proc: Process,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts `prometheus` (from `PATH`) and waits until it is ready; panics if it cannot.
    pub fn start(targets: &[SocketAddr]) -> Prometheus {
        let bin = which("prometheus").expect("prometheus on PATH (see `require`)");
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let mut last = String::new();
        for _ in 0..4 {
            let dir = tempfile::Builder::new()
                .prefix("telesink-prometheus-")
                .tempdir()
                .unwrap();
            let config = dir.path().join("prometheus.yml");
            fs::write(
                &config,
                format!(
                    "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                     scrape_configs:\n  - job_name: telesink\n    static_configs:\n      - targets: [{}]\n",
                    targets.join(", ")
                ),
            )
            .unwrap();
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port_tcp()));
            let mut cmd = Command::new(&bin);
            cmd.arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .arg("--log.level=warn")
                .current_dir(dir.path());
            let proc =
                Process::spawn(cmd, dir.path(), "prometheus").unwrap_or_else(|e| panic!("{e}"));
            let mut p = Prometheus { proc, addr, dir };
            let ready = || matches!(http_get(addr, "/-/ready"), Ok((200, _)));
            match p
                .proc
                .wait_ready(Duration::from_secs(30), Duration::from_millis(100), ready)
            {
                Ok(()) => return p,
                Err(e) => last = format!("prometheus {e}:\n{}", p.logs()),
            }
            // A port taken between picking and binding: try another.
            if !last.contains("address already in use") {
                break;
            }
        }
        panic!("{last}");
    }

    /// Its base URL, e.g. for `telesink verify --prometheus`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its log so far.
    pub fn logs(&self) -> String {
        self.proc.stderr()
    }

    /// GET an API path: the parsed JSON, or an error with the body.
    pub fn api(&self, path_and_query: &str) -> Result<serde_json::Value, String> {
        let (status, body) = http_get(self.addr, path_and_query)?;
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("HTTP {status}: {e}: {body}"))?;
        if status != 200 || v["status"] != "success" {
            return Err(format!("HTTP {status}: {body}"));
        }
        Ok(v)
    }

    /// An instant query: the result vector (or scalar, as a one-element list).
    pub fn query(&self, promql: &str) -> Result<Vec<serde_json::Value>, String> {
        let v = self.api(&format!("/api/v1/query?query={}", encode(promql)))?;
        match v["data"]["resultType"].as_str() {
            Some("vector") | Some("matrix") => {
                Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
            }
            Some("scalar") | Some("string") => Ok(vec![v["data"]["result"].clone()]),
            other => Err(format!("unexpected result type {other:?}: {v}")),
        }
    }

    /// The single value of an instant query, if it returned exactly one series.
    pub fn value(&self, promql: &str) -> Option<f64> {
        let r = self.query(promql).ok()?;
        if r.len() != 1 {
            return None;
        }
        r[0]["value"][1].as_str()?.parse().ok()
    }

    /// Polls `ok` every 250 ms until it holds; panics with the log after `timeout`.
    #[track_caller]
    pub fn wait_for(&self, what: &str, timeout: Duration, mut ok: impl FnMut(&Prometheus) -> bool) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if ok(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("Prometheus: {what} not within {timeout:?}\n{}", self.logs());
    }

    /// Waits until `n` targets have been scraped successfully (`sum(up) == n`).
    #[track_caller]
    pub fn wait_targets_up(&self, n: usize) {
        self.wait_for(&format!("{n} targets up"), Duration::from_secs(30), |p| {
            p.value("sum(up)") == Some(n as f64)
        });
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- prometheus log ({}) ---\n{}\n--- end ---",
                self.dir.path().display(),
                self.logs()
            );
        }
    }
}

/// Percent-encoding of a URL query value.
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_escapes_timestamps_and_specials() {
        let e = Exposition::parse(
            "# HELP x_total help\n# TYPE x_total counter\n\
             x_total{client=\"a\\\"b,c\",result=\"ok\"} 3\n\
             x_total{client=\"d\",result=\"ok\",} 4 1700000000000\n\
             up 1\ny +Inf\n",
        )
        .unwrap();
        assert_eq!(e.len(), 4);
        assert_eq!(
            e.value("x_total", &[("client", "a\"b,c"), ("result", "ok")]),
            Some(3.0)
        );
        assert_eq!(
            e.value("x_total", &[("client", "d"), ("result", "ok")]),
            Some(4.0)
        );
        assert_eq!(
            e.value("x_total", &[("client", "d")]),
            None,
            "exact label set"
        );
        assert_eq!(e.sum("x_total", &[("result", "ok")]), 7.0);
        assert_eq!(e.value("up", &[]), Some(1.0));
        assert_eq!(e.value("y", &[]), Some(f64::INFINITY));
        assert!(Exposition::parse("x_total{client=\"a\" 3\n").is_err());
        assert!(Exposition::parse("x_total\n").is_err());
    }
}
