//! Arbitrary text → `Config::parse`: `Ok` or `Err`, never a panic; an error names a line inside
//! the file; a loaded config can be compared and listed without surprises.
//!
//! The config is parsed as if it sat at the repo root when it names `blocklists/`, else in
//! `tests/fixtures/config/`, so that the list files the seeds name (`blocklists/*.txt`,
//! `lists/telemetry.txt`) exist and the parse goes past the source checks. Nothing is read but
//! file metadata.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use telesink::config::Config;

fn paths() -> &'static [PathBuf; 2] {
    static P: OnceLock<[PathBuf; 2]> = OnceLock::new();
    P.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let root = root.canonicalize().unwrap_or(root);
        [
            root.join("tests/fixtures/config/fuzz.toml"),
            root.join("config.toml"),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        // `Config::load` reads with `read_to_string`: invalid UTF-8 never reaches the parser.
        return;
    };
    let path = &paths()[usize::from(text.contains("blocklists/"))];
    match Config::parse(text, path) {
        Ok(config) => {
            assert!(config.restart_required(&config).is_empty());
            let cats = config.categories();
            assert!(cats.iter().any(|c| c == "bypass"));
            // A client is named by its addresses, its MACs, or both: never by nothing.
            for c in &config.clients {
                assert!(!c.addresses.is_empty() || !c.macs.is_empty(), "{c:?}");
            }
            for w in &config.warnings {
                let _ = w.to_string();
            }
            let _ = config.clone() == config;
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.is_empty());
            if let Some(line) = e.line() {
                // Line 1 for an empty file; otherwise a line of the file (or just past its
                // last line, for "missing key" errors at the end).
                let lines = text.split('\n').count().max(1);
                assert!(
                    (1..=lines + 1).contains(&line),
                    "line {line} of a {lines}-line file: {msg}"
                );
            }
        }
    }
});
