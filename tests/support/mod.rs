//! Shared harness for telesink's integration tests (`mod support;` in each `tests/*.rs`).
//!
//! All plain blocking APIs, so tests stay ordinary `#[test]` functions:
//!
//! * [`upstream`]: [`TestUpstream`], a tiny real DNS server (UDP and TCP on one ephemeral port
//!   of 127.0.0.1) that telesink forwards to. Answers are configured per name with [`Reply`]
//!   (garbage and silence included); every question it receives is recorded, so a test can
//!   assert that a name was *not* forwarded; it can be stopped and restarted on its port.
//! * [`server`]: [`Telesink`] (a builder) and [`TelesinkProcess`]: write a `config.toml` and
//!   list files into a temporary directory, start `telesink run -c <config>` on free ports, wait
//!   until it answers, and kill it on drop (printing its stdout/stderr when the test failed);
//!   [`cli`] runs one `telesink` subcommand to completion and captures its output.
//! * [`configs`]: the config pieces tests repeat (the vendor list, clients, records).
//! * [`process`]: the one way the tests start a child process (telesink, Prometheus).
//! * [`prom`]: the `/metrics` text parser ([`Exposition`]) and a real Prometheus server.
//! * [`dns`]: a DNS client: [`query`] / [`try_query`] with [`QueryOpts`] (UDP or TCP, EDNS
//!   payload size and DO bit, query ID, exact question case, source address 127.0.0.x so that
//!   every test can play several distinct clients), plus [`send_raw_udp`] / [`send_raw_tcp`] for
//!   malformed input.
//! * [`netns`]: two network namespaces joined by a veth pair (needs root).
//!
//! Environment: `TELESINK_TEST_KEEP=1` keeps the temporary directories (config, lists, logs,
//! query log) and prints their paths.

// Each test binary uses a part of the harness.
#![allow(dead_code)]

pub mod configs;
pub mod dns;
pub mod hostile;
pub mod https;
pub mod netns;
pub mod postgres;
pub mod process;
pub mod prom;
pub mod server;
pub mod tls;
pub mod upstream;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

// Re-exported for the tests, each of which uses a part.
#[allow(unused_imports)]
pub use configs::*;
#[allow(unused_imports)]
pub use dns::*;
#[allow(unused_imports)]
pub use hickory_proto::op::{Message, ResponseCode};
#[allow(unused_imports)]
pub use hickory_proto::rr::{Name, RData, Record, RecordType};
#[allow(unused_imports)]
pub use process::{which, CliOutput};
#[allow(unused_imports)]
pub use prom::{Exposition, Prometheus, Sample};
#[allow(unused_imports)]
pub use server::*;
#[allow(unused_imports)]
pub use upstream::*;

/// Path of the telesink binary built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_telesink");

/// Directory of the test fixtures (`tests/fixtures/dns`).
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dns")
}

/// `127.0.0.x`: a distinct client source address on the loopback network.
pub fn client(x: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, x)
}

/// A name in canonical comparison form: lower case, no trailing dot.
pub fn norm(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}
