//! Arbitrary bytes → `parse_list` in every format: never panics, and what it emits holds the
//! parser's documented promises (names normalised, counts consistent, skipped texts cut).
//!
//! Input: byte 0 picks the format (low 3 bits) and `subdomains` (bit 3); the rest is the list
//! text (invalid UTF-8 replaced, as a list file read lossily would be).
#![no_main]

use libfuzzer_sys::fuzz_target;
use telesink::lists::{parse_list, Format, ParseOptions, Pattern, RuleAction, MAX_FIRST_SKIPPED};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let format = Format::ALL[(sel & 7) as usize];
    let opts = ParseOptions {
        format,
        subdomains: sel & 8 != 0,
    };
    let text = String::from_utf8_lossy(rest);

    let mut rules = 0usize;
    let mut allows = 0usize;
    let mut last_line = 0u32;
    let stats = parse_list(&text, &opts, |rule| {
        rules += 1;
        if rule.action == RuleAction::Allow {
            allows += 1;
        }
        assert!(rule.line >= 1, "line numbers are 1-based");
        assert!(rule.line >= last_line, "rules come in line order");
        last_line = rule.line;
        match &rule.pattern {
            Pattern::Domain { name, .. } => check_name(name),
            Pattern::Regex(re) => assert!(!re.is_empty(), "an empty regex matches everything"),
        }
    });
    assert_eq!(
        stats.rules, rules,
        "rules counted = rules emitted ({format})"
    );
    assert_eq!(stats.allow_rules, allows);
    assert!(stats.first_skipped.len() <= MAX_FIRST_SKIPPED);
    assert!(stats.first_skipped.len() <= stats.skipped);
    for s in &stats.first_skipped {
        // Cut to 200 bytes on a character boundary, then "…" appended.
        assert!(
            s.text.len() <= 200 + '…'.len_utf8(),
            "skipped text is cut to 200 bytes: {} bytes",
            s.text.len()
        );
    }
});

/// Lower-case ASCII, no trailing dot, labels 1..=63 bytes of `[a-z0-9_-]`, at most 253 bytes.
fn check_name(name: &str) {
    assert!(!name.is_empty() && name.len() <= 253, "{name:?}");
    for label in name.split('.') {
        assert!((1..=63).contains(&label.len()), "label length in {name:?}");
        assert!(
            label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'),
            "label bytes in {name:?}"
        );
    }
}
