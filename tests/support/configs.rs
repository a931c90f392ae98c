//! Configuration the tests share, so that a test's config shows only what the test is about:
//! the vendor list that most tests block, and `[[client]]` and `[[record]]` entries.

use super::Telesink;

/// The names of the vendor list (`vendor.txt` of [`Telesink::vendor_blocked`]).
pub const VENDOR_NAMES: &str = "tracking.vendor.example\nmetrics.vendor.example\n";

/// List "vendor" (`vendor.txt`, category `telemetry`), which `[default]` blocks.
pub const VENDOR_BLOCKED: &str = r#"
[[list]]
name = "vendor"
source = "vendor.txt"
categories = ["telemetry"]

[default]
block = ["telemetry"]
observe = []
"#;

impl Telesink {
    /// `[blocking] mode = "<mode>"`.
    pub fn blocking_mode(self, mode: &str) -> Self {
        self.toml(&format!("[blocking]\nmode = {mode:?}\n"))
    }

    /// Writes `vendor.txt` ([`VENDOR_NAMES`]) and adds [`VENDOR_BLOCKED`]: list "vendor" of
    /// category `telemetry`, blocked for every client without a group (`[default]` is taken).
    pub fn vendor_blocked(self) -> Self {
        self.file("vendor.txt", VENDOR_NAMES).toml(VENDOR_BLOCKED)
    }

    /// A `[[client]]` called `name` at `addresses`.
    pub fn named_client(self, name: &str, addresses: &[&str]) -> Self {
        self.toml(&format!(
            "[[client]]\nname = {name:?}\naddresses = {addresses:?}\n"
        ))
    }

    /// A `[[record]]`: `name`, `rtype` (e.g. "A") and `value` as the config writes them.
    pub fn record(self, name: &str, rtype: &str, value: &str) -> Self {
        self.toml(&format!(
            "[[record]]\nname = {name:?}\ntype = {rtype:?}\nvalue = {value:?}\n"
        ))
    }
}
