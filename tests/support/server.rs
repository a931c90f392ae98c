//! A telesink under test: [`Telesink`] writes its config and lists into a temporary directory,
//! [`TelesinkProcess`] is the running `telesink run`, [`cli`] a subcommand run to completion.

use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::process::{self, CliOutput, Process};
use super::{
    bind_udp_tcp_same_port, fixtures_dir, try_query, Exposition, QueryOpts, RecordType, Response,
    TestUpstream, BIN,
};

/// Builder of a telesink configuration in a fresh temporary directory.
///
/// The generated `config.toml` always has these tables, filled from the builder:
///
/// ```toml
/// [server]
/// listen = ["127.0.0.1:<free port>"]
/// allow_networks = [...]          # only if set with allow_networks()
/// rate_limit_qps = 0              # off unless set with rate_limit_qps()
/// <server_toml lines>
/// [upstream]
/// servers = ["127.0.0.1:<TestUpstream port>"]
/// timeout_ms = ...                # only if set with timeout_ms()
/// <upstream_toml lines>
/// [metrics]
/// listen = "127.0.0.1:<free port>"
/// <metrics_toml lines>
/// [querylog]
/// path = "<tempdir>/q.db"
/// <querylog_toml lines>
/// <toml(): everything else, e.g. [blocking], [[list]], [[client]], [[group]], [default], [[record]], [allow]>
/// ```
///
/// List files are written with [`Telesink::file`] or copied from `tests/fixtures/dns` with
/// [`Telesink::fixture`]; a list's `source` is relative to the config file, so `source = "x.txt"`
/// names a file written with `.file("x.txt", ...)`.
pub struct Telesink {
    dir: tempfile::TempDir,
    upstreams: Vec<String>,
    listen_also: Vec<std::net::IpAddr>,
    allow_networks: Option<Vec<String>>,
    rate_limit_qps: u32,
    timeout_ms: Option<u64>,
    server_toml: String,
    upstream_toml: String,
    metrics_toml: String,
    querylog_toml: String,
    body: String,
    /// A program (and its arguments) that runs `telesink` (e.g. `setpriv … --`).
    wrap: Vec<String>,
    /// Environment variables for `telesink run` (e.g. `SSL_CERT_FILE`).
    envs: Vec<(String, String)>,
    /// `[querylog] url` instead of the `path` in the test's directory.
    querylog_url: Option<String>,
}

impl Default for Telesink {
    fn default() -> Self {
        Self::new()
    }
}

impl Telesink {
    pub fn new() -> Telesink {
        let dir = tempfile::Builder::new()
            .prefix("telesink-test-")
            .tempdir()
            .unwrap();
        Telesink {
            dir,
            upstreams: Vec::new(),
            listen_also: Vec::new(),
            allow_networks: None,
            rate_limit_qps: 0,
            timeout_ms: None,
            server_toml: String::new(),
            upstream_toml: String::new(),
            metrics_toml: String::new(),
            querylog_toml: String::new(),
            body: String::new(),
            wrap: Vec::new(),
            envs: Vec::new(),
            querylog_url: None,
        }
    }

    /// The query log in PostgreSQL at `url` (`[querylog] url`, no `path`).
    pub fn querylog_url(mut self, url: &str) -> Self {
        self.querylog_url = Some(url.to_string());
        self
    }

    /// Runs the server as `wrap… telesink run …` (a program that execs its arguments, so the
    /// PID stays the server's).
    pub fn wrapped_in(mut self, wrap: &[&str]) -> Self {
        self.wrap = wrap.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Set an environment variable for `telesink run`.
    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Self {
        self.envs.push((
            key.to_string(),
            value.as_ref().to_string_lossy().into_owned(),
        ));
        self
    }

    /// Forward to this test upstream (may be called several times).
    pub fn upstream(mut self, up: &TestUpstream) -> Self {
        self.upstreams.push(up.addr().to_string());
        self
    }

    /// Forward to this address/URL as written in `[upstream] servers`.
    pub fn upstream_server(mut self, server: &str) -> Self {
        self.upstreams.push(server.to_string());
        self
    }

    /// Listen on these addresses too, on the same port as 127.0.0.1 (a test in a network
    /// namespace, whose devices reach telesink across a veth pair).
    pub fn listen_also(mut self, addrs: &[std::net::IpAddr]) -> Self {
        self.listen_also.extend_from_slice(addrs);
        self
    }

    pub fn allow_networks(mut self, nets: &[&str]) -> Self {
        self.allow_networks = Some(nets.iter().map(|s| s.to_string()).collect());
        self
    }

    /// Default 0 (off), so that tests can send many queries from one address.
    pub fn rate_limit_qps(mut self, qps: u32) -> Self {
        self.rate_limit_qps = qps;
        self
    }

    pub fn timeout_ms(mut self, ms: u64) -> Self {
        self.timeout_ms = Some(ms);
        self
    }

    /// Extra raw lines for the `[server]` table.
    pub fn server_toml(mut self, lines: &str) -> Self {
        self.server_toml.push_str(lines);
        self.server_toml.push('\n');
        self
    }

    /// Extra raw lines for the `[upstream]` table.
    pub fn upstream_toml(mut self, lines: &str) -> Self {
        self.upstream_toml.push_str(lines);
        self.upstream_toml.push('\n');
        self
    }

    /// Extra raw lines for the `[metrics]` table.
    pub fn metrics_toml(mut self, lines: &str) -> Self {
        self.metrics_toml.push_str(lines);
        self.metrics_toml.push('\n');
        self
    }

    /// Extra raw lines for the `[querylog]` table.
    pub fn querylog_toml(mut self, lines: &str) -> Self {
        self.querylog_toml.push_str(lines);
        self.querylog_toml.push('\n');
        self
    }

    /// Further TOML appended after the fixed tables.
    pub fn toml(mut self, text: &str) -> Self {
        self.body.push_str(text);
        self.body.push('\n');
        self
    }

    /// Write a file (a list, usually) at `rel` inside the config directory.
    pub fn file(self, rel: &str, contents: impl AsRef<[u8]>) -> Self {
        let p = self.dir.path().join(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&p, contents).unwrap();
        self
    }

    /// Copy `tests/fixtures/dns/<name>` to `<name>` inside the config directory.
    pub fn fixture(self, name: &str) -> Self {
        let src = fixtures_dir().join(name);
        let data = fs::read(&src).unwrap_or_else(|e| panic!("fixture {}: {e}", src.display()));
        self.file(name, data)
    }

    /// The config directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Path the config is written to.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    fn render(&self, dns: u16, metrics: u16) -> String {
        let q = |s: &str| format!("{:?}", s); // TOML basic string (ASCII paths)
        let list = |v: &[String]| v.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ");
        let mut t = String::new();
        writeln!(t, "[server]").unwrap();
        let mut listen = vec![format!("\"127.0.0.1:{dns}\"")];
        for a in &self.listen_also {
            listen.push(format!("\"{}\"", SocketAddr::new(*a, dns)));
        }
        writeln!(t, "listen = [{}]", listen.join(", ")).unwrap();
        if let Some(n) = &self.allow_networks {
            writeln!(t, "allow_networks = [{}]", list(n)).unwrap();
        }
        writeln!(t, "rate_limit_qps = {}", self.rate_limit_qps).unwrap();
        t.push_str(&self.server_toml);
        writeln!(t, "\n[upstream]").unwrap();
        let ups = if self.upstreams.is_empty() {
            vec!["127.0.0.1:1".to_string()]
        } else {
            self.upstreams.clone()
        };
        writeln!(t, "servers = [{}]", list(&ups)).unwrap();
        if let Some(ms) = self.timeout_ms {
            writeln!(t, "timeout_ms = {ms}").unwrap();
        }
        t.push_str(&self.upstream_toml);
        writeln!(t, "\n[metrics]").unwrap();
        writeln!(t, "listen = \"127.0.0.1:{metrics}\"").unwrap();
        t.push_str(&self.metrics_toml);
        writeln!(t, "\n[querylog]").unwrap();
        match &self.querylog_url {
            Some(url) => writeln!(t, "url = {}", q(url)).unwrap(),
            None => writeln!(
                t,
                "path = {}",
                q(&self.dir.path().join("q.db").to_string_lossy())
            )
            .unwrap(),
        }
        t.push_str(&self.querylog_toml);
        t.push('\n');
        t.push_str(&self.body);
        t
    }

    /// Write `config.toml` (with placeholder ports) without starting anything: for CLI tests.
    pub fn write_config(&self) -> PathBuf {
        let dns = free_port_udp_tcp();
        let metrics = free_port_udp_tcp();
        let p = self.config_path();
        fs::write(&p, self.render(dns, metrics)).unwrap();
        p
    }

    /// Run `telesink <args…> -c <config>` to completion (the config is written first).
    pub fn cli(&self, args: &[&str]) -> CliOutput {
        cli_with_config(self.dir(), &self.write_config(), args)
    }

    /// Write the config, start `telesink run -c <config>` and wait until it answers over UDP.
    /// Retries with new ports if a port was taken between picking and binding.
    pub fn start(self) -> TelesinkProcess {
        let mut last_err = String::new();
        for attempt in 0..4 {
            let dns = free_port_udp_tcp();
            let metrics = free_port_tcp();
            let config = self.render(dns, metrics);
            let cfg_path = self.config_path();
            fs::write(&cfg_path, &config).unwrap();
            let mut cmd = match self.wrap.split_first() {
                Some((program, args)) => {
                    let mut c = Command::new(program);
                    c.args(args).arg(BIN);
                    c
                }
                None => Command::new(BIN),
            };
            cmd.envs(self.envs.iter().map(|(k, v)| (k, v)));
            cmd.arg("run")
                .arg("-c")
                .arg(&cfg_path)
                .current_dir(self.dir.path())
                .envs(self.envs.iter().map(|(k, v)| (k, v)));
            let proc = Process::spawn(cmd, self.dir.path(), &format!("telesink.{attempt}"))
                .unwrap_or_else(|e| panic!("{e}"));
            let mut proc = TelesinkProcess {
                proc: Some(proc),
                addr: SocketAddr::from((Ipv4Addr::LOCALHOST, dns)),
                metrics_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, metrics)),
                config_path: cfg_path,
                attempt,
                config,
                dir: None,
            };
            match proc.wait_ready(Duration::from_secs(10)) {
                Ok(()) => {
                    proc.dir = Some(self.dir);
                    return proc;
                }
                Err(e) => {
                    let logs = proc.logs();
                    let race = logs.to_ascii_lowercase().contains("in use");
                    proc.kill();
                    last_err = format!("{e}\n{logs}");
                    if !race {
                        break;
                    }
                }
            }
        }
        let keep = self.dir.keep();
        panic!(
            "telesink did not start (files kept in {}):\n{last_err}",
            keep.display()
        );
    }
}

/// Pick a port free for both UDP and TCP on 127.0.0.1 (bind both, drop, reuse).
pub fn free_port_udp_tcp() -> u16 {
    let (udp, tcp) = bind_udp_tcp_same_port();
    let port = udp.local_addr().unwrap().port();
    drop((udp, tcp));
    port
}

/// Pick a port free for TCP on 127.0.0.1.
pub fn free_port_tcp() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `telesink run`. Killed (by its PID) on drop; its stdout/stderr are printed then if
/// the test is panicking.
pub struct TelesinkProcess {
    /// `None` once terminated or killed.
    proc: Option<Process>,
    addr: SocketAddr,
    metrics_addr: SocketAddr,
    config_path: PathBuf,
    /// Which start attempt this is: names its log files.
    attempt: u32,
    config: String,
    dir: Option<tempfile::TempDir>,
}

impl TelesinkProcess {
    /// DNS address (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Metrics HTTP address.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The config directory (lists, query log, logs).
    pub fn dir(&self) -> &Path {
        self.config_path.parent().unwrap()
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Process::pid)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(Process::is_running)
    }

    /// Captured stdout and stderr so far, plus the config, for failure messages.
    pub fn logs(&self) -> String {
        let log = |ext: &str| {
            fs::read_to_string(self.dir().join(format!("telesink.{}.{ext}", self.attempt)))
                .unwrap_or_default()
        };
        format!(
            "--- config.toml ---\n{}\n--- telesink stdout ---\n{}\n--- telesink stderr ---\n{}\n--- end ---",
            self.config,
            log("out"),
            log("err")
        )
    }

    /// Send a signal by PID with kill(1), e.g. "HUP" (reload) or "TERM" (graceful shutdown).
    pub fn signal(&self, sig: &str) {
        if let Some(p) = &self.proc {
            p.signal(sig);
        }
    }

    /// SIGTERM, then wait up to `timeout` for the exit status (None: still running, then killed).
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut p = self.proc.take()?;
        p.signal("TERM");
        p.wait_exit(timeout)
    }

    /// SIGKILL by PID and reap.
    pub fn kill(&mut self) {
        self.proc = None;
    }

    /// Write (or replace) a file in the config directory of the running server, e.g. a list
    /// or `config.toml`, for reload tests. Written to a temporary name and renamed into place,
    /// as editors do.
    pub fn write_file(&self, rel: &str, contents: impl AsRef<[u8]>) {
        let p = self.dir().join(rel);
        let tmp = self.dir().join(format!(".{rel}.tmp"));
        fs::write(&tmp, contents).unwrap();
        fs::rename(&tmp, &p).unwrap();
    }

    /// `GET /metrics` from the metrics listener: (status, body).
    pub fn metrics(&self) -> (u16, String) {
        http_get(self.metrics_addr, "/metrics").unwrap_or_else(|e| panic!("GET /metrics: {e}"))
    }

    /// `GET /metrics`, which must succeed, parsed.
    #[track_caller]
    pub fn scrape(&self) -> Exposition {
        let (status, body) = self.metrics();
        assert_eq!(status, 200, "GET /metrics: {body}");
        Exposition::parse(&body).unwrap_or_else(|e| panic!("/metrics: {e}\n{body}"))
    }

    /// Run `telesink <args…> -c <this server's config>` to completion in its directory.
    pub fn cli(&self, args: &[&str]) -> CliOutput {
        cli_with_config(self.dir(), &self.config_path, args)
    }

    /// Panics unless `name` from `from` gets the null-mode sinkhole (A 0.0.0.0).
    #[track_caller]
    pub fn assert_blocked(&self, from: Ipv4Addr, name: &str) {
        let r = self.query(from, name, RecordType::A);
        assert_eq!(
            r.a(),
            vec![Ipv4Addr::UNSPECIFIED],
            "{name} from {from}: {}",
            r.summary()
        );
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let addr = self.addr;
        let opts = QueryOpts::udp().timeout(Duration::from_millis(200));
        // Any well-formed answer counts (even REFUSED): the server is up.
        let answers = || {
            try_query(
                addr,
                Ipv4Addr::LOCALHOST,
                "localhost.",
                RecordType::A,
                &opts,
            )
            .is_ok()
        };
        let p = self.proc.as_mut().expect("started");
        p.wait_ready(timeout, Duration::from_millis(100), answers)
            .map_err(|e| format!("telesink on {addr}: {e}"))
    }

    /// Query this server (see [`query`]).
    #[track_caller]
    pub fn query(&self, from: Ipv4Addr, name: &str, qtype: RecordType) -> Response {
        self.query_with(from, name, qtype, &QueryOpts::udp())
    }

    /// Query this server with options; panics (with the server's logs) on timeout or bad answer.
    #[track_caller]
    pub fn query_with(
        &self,
        from: Ipv4Addr,
        name: &str,
        qtype: RecordType,
        opts: &QueryOpts,
    ) -> Response {
        match try_query(self.addr, from, name, qtype, opts) {
            Ok(r) => r,
            Err(e) => panic!(
                "query {name} {qtype} from {from} ({:?}): {e}",
                opts.transport
            ),
        }
    }
}

impl Drop for TelesinkProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        if std::env::var_os("TELESINK_TEST_KEEP").is_some() {
            if let Some(d) = self.dir.take() {
                eprintln!("kept telesink test dir {}", d.keep().display());
            }
        }
    }
}

/// A minimal HTTP/1.0 GET: (status code, body). 5 s timeout.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP header end")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line: {head:?}"))?;
    Ok((status, body.to_string()))
}

/// `telesink <args…> -c <config>` in `cwd`.
fn cli_with_config(cwd: &Path, config: &Path, args: &[&str]) -> CliOutput {
    let config = config.to_string_lossy();
    let mut all = args.to_vec();
    all.extend(["-c", &config]);
    cli_in(cwd, &all)
}

/// Run `telesink <args>` in `cwd` to completion (killed after 60 s).
pub fn cli_in(cwd: &Path, args: &[&str]) -> CliOutput {
    cli_in_within(cwd, args, Duration::from_secs(60))
}

/// Run `telesink <args>` in `cwd` to completion, killed after `timeout` (exit code `None`).
pub fn cli_in_within(cwd: &Path, args: &[&str], timeout: Duration) -> CliOutput {
    let mut cmd = Command::new(BIN);
    cmd.args(args).current_dir(cwd);
    process::run(cmd, timeout)
}

/// Run `telesink <args>` in `cwd` with extra environment variables.
pub fn cli_in_env(cwd: &Path, args: &[&str], envs: &[(&str, &Path)]) -> CliOutput {
    let mut cmd = Command::new(BIN);
    cmd.args(args).current_dir(cwd);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    process::run(cmd, Duration::from_secs(60))
}

/// Run `telesink <args>` in a scratch directory.
pub fn cli(args: &[&str]) -> CliOutput {
    let d = tempfile::tempdir().unwrap();
    cli_in(d.path(), args)
}
