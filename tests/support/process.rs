//! Child processes of the tests (telesink, Prometheus): started with stdin closed and stdout and
//! stderr in files (a pipe nobody reads would block a chatty child), waited for with a
//! deadline, and killed by their PID on drop, so no test leaves a process behind.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running child process; killed (SIGKILL, by its PID) and reaped on drop.
pub struct Process {
    child: Child,
    status: Option<ExitStatus>,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Process {
    /// Starts `cmd` with stdout and stderr in `<dir>/<tag>.out` and `<dir>/<tag>.err`.
    pub fn spawn(cmd: Command, dir: &Path, tag: &str) -> Result<Process, String> {
        Process::spawn_with_stdin(cmd, dir, tag, Stdio::null())
    }

    /// [`spawn`](Self::spawn) with `stdin` as its standard input.
    pub fn spawn_with_stdin(
        mut cmd: Command,
        dir: &Path,
        tag: &str,
        stdin: Stdio,
    ) -> Result<Process, String> {
        let stdout = dir.join(format!("{tag}.out"));
        let stderr = dir.join(format!("{tag}.err"));
        let file = |p: &Path| fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()));
        let child = cmd
            .stdin(stdin)
            .stdout(file(&stdout)?)
            .stderr(file(&stderr)?)
            .spawn()
            .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))?;
        Ok(Process {
            child,
            status: None,
            stdout,
            stderr,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status once the process has exited (without waiting).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    pub fn is_running(&mut self) -> bool {
        self.exited().is_none()
    }

    /// Its stdout so far.
    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Its stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Sends a signal by PID with kill(1), e.g. "HUP" or "TERM". Not once reaped (the PID
    /// may be another process's by then).
    pub fn signal(&self, sig: &str) {
        if self.status.is_none() {
            let _ = Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(self.pid().to_string())
                .status();
        }
    }

    /// Waits up to `timeout` for the process to exit: its status, or `None` if still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.exited() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls `ready` every `every` until it holds. An error if the process exits first or
    /// `timeout` passes.
    pub fn wait_ready(
        &mut self,
        timeout: Duration,
        every: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(st) = self.exited() {
                return Err(format!("exited early with {st}"));
            }
            if ready() {
                return Ok(());
            }
            std::thread::sleep(every);
        }
        Err(format!("not ready within {timeout:?}"))
    }

    /// SIGKILL by PID and reap.
    pub fn kill(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Output of a command run to completion.
#[derive(Debug)]
pub struct CliOutput {
    /// Exit code (None: killed by a signal or the time limit).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// stdout and stderr together, for content checks that should not care which stream.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Display for CliOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` to completion, killing it after `timeout`.
pub fn run(cmd: Command, timeout: Duration) -> CliOutput {
    run_with_input(cmd, b"", timeout)
}

/// Runs `cmd` with `input` as its standard input to completion, killing it after `timeout`.
pub fn run_with_input(cmd: Command, input: &[u8], timeout: Duration) -> CliOutput {
    let dir = tempfile::tempdir().unwrap();
    // From a file rather than a pipe: nothing to feed while waiting.
    let stdin = dir.path().join("stdin");
    fs::write(&stdin, input).unwrap();
    let stdin = Stdio::from(fs::File::open(&stdin).unwrap());
    let mut p =
        Process::spawn_with_stdin(cmd, dir.path(), "run", stdin).unwrap_or_else(|e| panic!("{e}"));
    let code = match p.wait_exit(timeout) {
        Some(st) => st.code(),
        None => {
            p.kill();
            None
        }
    };
    CliOutput {
        code,
        stdout: p.stdout(),
        stderr: p.stderr(),
    }
}

/// The program `name` on `PATH`, if any.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}
