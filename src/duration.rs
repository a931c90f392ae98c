//! Durations as people write them, in `config.toml` (`refresh = "24h"`) and on the command line
//! (`--since 90m`): one parser for both, jiff's "friendly" format (`250ms`, `45s`, `90m`,
//! `1h30m`, `2h 5m`, `1d`, `2w`, `5 minutes`, `1.5h`), plus a bare `0`.
//!
//! Days are 24 hours and weeks 7 days: these are lengths, not calendar arithmetic, so months
//! and years (whose length varies) are refused, as are negative durations.

use std::time::Duration;

/// The longest duration accepted, well inside what every consumer can add to a timestamp.
pub const MAX: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Why a text is not a duration; the message says what to write instead.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("it is empty; write a number and a unit, e.g. 90m")]
    Empty,
    #[error("{0} has no unit: write {0}m (minutes), {0}h (hours) or {0}d (days)")]
    NoUnit(String),
    #[error("it is negative; write a length like 90m")]
    Negative,
    #[error("months and years vary in length; use days (d) or weeks (w)")]
    Calendar,
    #[error("the duration is too long: at most 100 years")]
    TooLong,
    #[error("expected a number and a unit (ms, s, m, h, d or w), like 90m, 24h or 1h30m")]
    Invalid,
}

/// A duration as people read it, in the form [`parse`] takes: `30m`, `1h 30m`, `2d`, `45s`.
pub fn display(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let mut parts = Vec::new();
    for (unit, len) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= len {
            parts.push(format!("{}{unit}", secs / len));
            secs %= len;
        }
    }
    parts.join(" ")
}

/// Parses a duration; see the module doc for the forms.
pub fn parse(s: &str) -> Result<Duration, DurationError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return if s.bytes().all(|b| b == b'0') {
            Ok(Duration::ZERO)
        } else {
            Err(DurationError::NoUnit(s.to_string()))
        };
    }
    // jiff also reads ISO 8601 ("PT1H"); the friendly form is the one documented.
    let span: jiff::Span = s.parse().map_err(|_| DurationError::Invalid)?;
    if span.is_negative() {
        return Err(DurationError::Negative);
    }
    if span.get_years() != 0 || span.get_months() != 0 {
        return Err(DurationError::Calendar);
    }
    let signed = span
        .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
        .map_err(|_| DurationError::TooLong)?;
    let d = Duration::try_from(signed).map_err(|_| DurationError::Negative)?;
    if d > MAX {
        return Err(DurationError::TooLong);
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let ok = |s: &str| parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
        assert_eq!(ok("24h"), Duration::from_secs(86400));
        assert_eq!(ok("90m"), Duration::from_secs(5400));
        assert_eq!(ok("90min"), Duration::from_secs(5400));
        assert_eq!(ok("1d"), Duration::from_secs(86400));
        assert_eq!(ok("3600s"), Duration::from_secs(3600));
        assert_eq!(ok("1w"), Duration::from_secs(604800));
        assert_eq!(ok("250ms"), Duration::from_millis(250));
        assert_eq!(ok("1h30m"), Duration::from_secs(5400));
        assert_eq!(ok("1h 30m"), Duration::from_secs(5400));
        assert_eq!(ok("2 hours"), Duration::from_secs(7200));
        assert_eq!(ok(" 2h "), Duration::from_secs(7200));
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("0s"), Duration::ZERO);
    }

    #[test]
    fn errors_say_what_to_write() {
        assert_eq!(parse(""), Err(DurationError::Empty));
        assert_eq!(parse("90"), Err(DurationError::NoUnit("90".into())));
        assert_eq!(parse("-1h"), Err(DurationError::Negative));
        assert_eq!(parse("1h ago"), Err(DurationError::Negative));
        assert_eq!(parse("1mo"), Err(DurationError::Calendar));
        assert_eq!(parse("1y"), Err(DurationError::Calendar));
        assert_eq!(
            parse("101w").ok(),
            Some(Duration::from_secs(101 * 7 * 86400))
        );
        assert_eq!(parse("6000w"), Err(DurationError::TooLong));
        assert_eq!(parse("99999999999999999999d"), Err(DurationError::Invalid));
        for bad in ["h", "24 parsecs", "1h30", "abc"] {
            assert_eq!(parse(bad), Err(DurationError::Invalid), "{bad:?}");
        }
        assert_eq!(
            parse("90").unwrap_err().to_string(),
            "90 has no unit: write 90m (minutes), 90h (hours) or 90d (days)"
        );
    }
}

#[cfg(test)]
mod display_tests {
    use super::{display, parse};
    use std::time::Duration;

    #[test]
    fn display_reads_back() {
        for (d, text) in [
            (1800, "30m"),
            (5400, "1h 30m"),
            (172_800, "2d"),
            (45, "45s"),
        ] {
            assert_eq!(display(Duration::from_secs(d)), text);
            assert_eq!(parse(text).unwrap(), Duration::from_secs(d));
        }
    }
}
