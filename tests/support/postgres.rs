//! A real PostgreSQL server for the query-log tests: Debian's `postgresql` package, a cluster
//! made by `initdb` in a temporary directory, `postgres` on a free loopback port with its unix
//! socket in that directory, stopped by its PID. PostgreSQL refuses to run as root, so as root
//! the cluster belongs to `nobody` and the server runs as that user.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::process::{run, Process};
use super::server::free_port_tcp;

/// `nobody` / `nogroup` on Debian.
const NOBODY: u32 = 65534;

pub struct TestPostgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    proc: Option<Process>,
}

/// The newest `/usr/lib/postgresql/<version>/bin` that has `initdb` and `postgres` (Debian puts
/// them there, off `PATH`), or the one on `PATH`.
fn bin_dir() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").exists() && bin.join("postgres").exists()).then_some((v, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, b)| b)
        .or_else(|| super::which("initdb").and_then(|p| p.parent().map(Path::to_path_buf)))
}

fn as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

impl TestPostgres {
    /// Starts a fresh cluster, or says why not: under `CI` that is a failure (PostgreSQL is
    /// in the apt list of `scripts/test.sh`); elsewhere the test prints why and is skipped.
    pub fn require(test: &str) -> Option<TestPostgres> {
        match Self::start() {
            Ok(pg) => Some(pg),
            Err(e) if std::env::var_os("CI").is_some() => {
                panic!("{test}: PostgreSQL must start under CI (Debian's postgresql package): {e}")
            }
            Err(e) => {
                eprintln!("SKIPPED {test}: cannot start PostgreSQL ({e}); apt-get install postgresql. Under CI this test fails instead");
                None
            }
        }
    }

    pub fn start() -> Result<TestPostgres, String> {
        let bin = bin_dir().ok_or("no initdb/postgres in /usr/lib/postgresql/*/bin or on PATH")?;
        let dir = tempfile::Builder::new()
            .prefix("telesink-pg-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        if as_root() {
            std::os::unix::fs::chown(dir.path(), Some(NOBODY), Some(NOBODY))
                .map_err(|e| format!("chown {}: {e}", dir.path().display()))?;
        }
        let mut initdb = Self::command(&bin, "initdb");
        initdb.args(["-D"]).arg(dir.path().join("data")).args([
            "-U",
            "telesink",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        ]);
        let out = run(initdb, Duration::from_secs(120));
        if out.code != Some(0) {
            return Err(format!("initdb failed: {out}"));
        }
        let mut pg = TestPostgres {
            bin,
            dir,
            port: free_port_tcp(),
            proc: None,
        };
        pg.start_server()?;
        Ok(pg)
    }

    fn command(bin: &Path, prog: &str) -> Command {
        let mut c = Command::new(bin.join(prog));
        if as_root() {
            c.uid(NOBODY).gid(NOBODY);
        }
        c.env("LC_ALL", "C")
            .env_remove("PGDATA")
            .stdin(Stdio::null());
        c
    }

    /// (Re)starts the server on the same port and data.
    pub fn start_server(&mut self) -> Result<(), String> {
        let mut c = Self::command(&self.bin, "postgres");
        c.arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(self.dir.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=40",
            ]);
        let mut p = Process::spawn(c, self.dir.path(), "postgres")?;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let isready = self.bin.join("pg_isready");
        let port = self.port.to_string();
        let ready = || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                && Command::new(&isready)
                    .args([
                        "-h",
                        "127.0.0.1",
                        "-p",
                        &port,
                        "-U",
                        "telesink",
                        "-d",
                        "postgres",
                    ])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
        };
        p.wait_ready(Duration::from_secs(60), Duration::from_millis(100), ready)
            .map_err(|e| format!("postgres on port {}: {e}", self.port))?;
        self.proc = Some(p);
        Ok(())
    }

    /// Stops the server (fast shutdown: clients are disconnected) and waits for it to exit.
    pub fn stop_server(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.signal("INT");
            if p.wait_exit(Duration::from_secs(60)).is_none() {
                p.kill();
            }
        }
    }

    /// A URL of a fresh database for one telesink setup.
    pub fn create_database(&self, name: &str) -> String {
        let mut c = Command::new(self.bin.join("createdb"));
        c.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "telesink",
            name,
        ]);
        let out = run(c, Duration::from_secs(60));
        assert_eq!(out.code, Some(0), "createdb {name}: {out}");
        self.url(name)
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://telesink@127.0.0.1:{}/{db}", self.port)
    }

    /// `psql -Atc SQL` against `db`: the output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let mut c = Command::new(self.bin.join("psql"));
        c.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "telesink",
            "-At",
            "-d",
            db,
            "-c",
            sql,
        ]);
        let out = run(c, Duration::from_secs(60));
        assert_eq!(out.code, Some(0), "psql {sql}: {out}");
        out.stdout.trim().to_string()
    }

    pub fn logs(&self) -> String {
        self.proc.as_ref().map(|p| p.stderr()).unwrap_or_default()
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- postgres log ---\n{}", self.logs());
        }
        self.stop_server();
    }
}

/// Polls `f` every 200 ms until it returns `Some`, for at most `bound` (generous: rows reach
/// the database within a batch interval, this only bounds a broken run).
pub fn poll<T>(bound: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + bound;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
