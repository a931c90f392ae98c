//! Times on the command line: RFC 3339 (`2026-11-25T15:00:00Z`), a local date and time without an
//! offset (`2026-11-25 15:00`), relative ages (`90m`, `2h`, `3d`, `1h30m`: that long ago), `now`,
//! and opt-out marks (`mark:last`, `mark:ID`), which the caller resolves from the query log.

use std::fmt;
use std::str::FromStr;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

/// A time as the user wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TimeSpec {
    /// An absolute instant.
    At(Timestamp),
    /// That long before now.
    Ago(SignedDuration),
    /// The moment the command runs.
    Now,
    /// An opt-out mark from the query log.
    Mark(MarkRef),
}

/// Which opt-out mark `mark:…` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MarkRef {
    /// The newest mark of the client the command is about.
    Last,
    /// The mark with this id (as `telesink mark` printed it).
    Id(i64),
}

/// A time that could not be parsed; the message says what would be valid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a time: {reason}")]
pub struct TimeSpecError {
    pub input: String,
    pub reason: String,
}

/// What a time may look like, for error messages.
pub const VALID_TIMES: &str = "write RFC 3339 (2026-11-25T15:00:00Z), a local time \
    (2026-11-25 15:00), an age (90m, 2h, 3d) or mark:last / mark:ID";

fn err(input: &str, reason: impl Into<String>) -> TimeSpecError {
    TimeSpecError {
        input: input.to_string(),
        reason: format!("{}; {VALID_TIMES}", reason.into()),
    }
}

/// An age that does not parse: the reason already says how to write it.
fn age_err(input: &str, reason: String) -> TimeSpecError {
    TimeSpecError {
        input: input.to_string(),
        reason,
    }
}

impl TimeSpec {
    /// Parses what a user typed after `--since` or `--until`.
    pub fn parse(input: &str) -> Result<TimeSpec, TimeSpecError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(err(input, "it is empty"));
        }
        if s.eq_ignore_ascii_case("now") {
            return Ok(TimeSpec::Now);
        }
        if let Some(rest) = s.strip_prefix("mark:") {
            return match rest {
                "last" => Ok(TimeSpec::Mark(MarkRef::Last)),
                id => id
                    .parse::<i64>()
                    .ok()
                    .filter(|&n| n > 0)
                    .map(|n| TimeSpec::Mark(MarkRef::Id(n)))
                    .ok_or_else(|| err(input, "a mark is mark:last or mark:N with N a mark id")),
            };
        }
        if s.as_bytes()[0].is_ascii_digit() && !s.contains(['-', ':']) {
            return parse_age(s)
                .map(TimeSpec::Ago)
                .map_err(|reason| age_err(input, reason));
        }
        if let Ok(ts) = s.parse::<Timestamp>() {
            return Ok(TimeSpec::At(ts));
        }
        // No offset: a wall-clock time in the local time zone.
        if let Ok(dt) = s.parse::<jiff::civil::DateTime>() {
            return dt
                .to_zoned(TimeZone::system())
                .map(|z| TimeSpec::At(z.timestamp()))
                .map_err(|e| err(input, e.to_string()));
        }
        Err(err(input, "it is not a date and time, an age or a mark"))
    }

    /// The instant this names, relative to `now`; `None` for a mark (look it up first).
    pub fn resolve(&self, now: Timestamp) -> Option<Timestamp> {
        match self {
            TimeSpec::At(t) => Some(*t),
            TimeSpec::Ago(d) => now.checked_sub(*d).ok(),
            TimeSpec::Now => Some(now),
            TimeSpec::Mark(_) => None,
        }
    }
}

impl FromStr for TimeSpec {
    type Err = TimeSpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TimeSpec::parse(s)
    }
}

impl fmt::Display for TimeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimeSpec::At(t) => write!(f, "{t}"),
            TimeSpec::Ago(d) => write!(f, "{} ago", format_duration_ms(d.as_millis() as i64)),
            TimeSpec::Now => f.write_str("now"),
            TimeSpec::Mark(MarkRef::Last) => f.write_str("mark:last"),
            TimeSpec::Mark(MarkRef::Id(n)) => write!(f, "mark:{n}"),
        }
    }
}

/// `90m`, `2h`, `3d`, `1w`, `45s`, `1h30m` → a duration (the config's parser, [`crate::duration`]).
fn parse_age(s: &str) -> Result<SignedDuration, String> {
    let d = crate::duration::parse(s).map_err(|e| e.to_string())?;
    SignedDuration::try_from(d).map_err(|_| crate::duration::DurationError::TooLong.to_string())
}

/// A duration for people: `850ms`, `2.5s`, `45s`, `12m 30s`, `2h 5m`, `3d 4h`.
pub fn format_duration_ms(ms: i64) -> String {
    let neg = ms < 0;
    let ms = ms.unsigned_abs();
    let s = if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 10_000 && !ms.is_multiple_of(1000) {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        let secs = ms / 1000;
        let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
        let parts = [(d, "d"), (h, "h"), (m, "m"), (s, "s")];
        let first = parts.iter().position(|(v, _)| *v > 0).unwrap_or(3);
        let mut out = format!("{}{}", parts[first].0, parts[first].1);
        if let Some((v, u)) = parts.get(first + 1) {
            if *v > 0 {
                out.push_str(&format!(" {v}{u}"));
            }
        }
        out
    };
    if neg {
        format!("-{s}")
    } else {
        s
    }
}

/// A local wall-clock time for people: `2026-11-25 15:02:11`.
pub fn format_local(ts: Timestamp) -> String {
    ts.to_zoned(TimeZone::system())
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// A local wall-clock time with milliseconds: `2026-11-25 15:02:11.234`.
pub fn format_local_ms(ts: Timestamp) -> String {
    ts.to_zoned(TimeZone::system())
        .strftime("%Y-%m-%d %H:%M:%S%.3f")
        .to_string()
}

/// The local time zone's name as people know it (`UTC`, `CET`), for table headers.
pub fn local_zone_abbreviation(ts: Timestamp) -> String {
    ts.to_zoned(TimeZone::system()).strftime("%Z").to_string()
}

/// Milliseconds since the Unix epoch → an instant (clamped to jiff's range).
pub fn from_ms(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(if ms < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

/// RFC 3339 in UTC with milliseconds, for JSON: `2026-11-25T15:02:11.234Z`.
pub fn rfc3339_ms(ms: i64) -> String {
    from_ms(ms).strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-11-25T15:00:00Z".parse().unwrap()
    }

    #[test]
    fn rfc3339() {
        let t = TimeSpec::parse("2026-11-25T15:00:00Z").unwrap();
        assert_eq!(t, TimeSpec::At(now()));
        let t = TimeSpec::parse("2026-11-25T16:00:00+01:00").unwrap();
        assert_eq!(t.resolve(now()), Some(now()));
        let t = TimeSpec::parse("2026-11-25T15:00:00.250Z").unwrap();
        assert_eq!(
            t.resolve(now()).unwrap().as_millisecond(),
            now().as_millisecond() + 250
        );
    }

    #[test]
    fn local_time_without_offset() {
        let t = TimeSpec::parse("2026-11-25 15:00").unwrap();
        let expect = "2026-11-25T15:00"
            .parse::<jiff::civil::DateTime>()
            .unwrap()
            .to_zoned(TimeZone::system())
            .unwrap()
            .timestamp();
        assert_eq!(t, TimeSpec::At(expect));
    }

    #[test]
    fn relative() {
        let cases = [
            ("90m", 90 * 60),
            ("2h", 7200),
            ("3d", 3 * 86_400),
            ("1w", 7 * 86_400),
            ("45s", 45),
            ("1h30m", 5400),
        ];
        for (s, secs) in cases {
            let t = TimeSpec::parse(s).unwrap();
            assert_eq!(t, TimeSpec::Ago(SignedDuration::from_secs(secs)), "{s}");
            assert_eq!(
                t.resolve(now()).unwrap().as_second(),
                now().as_second() - secs,
                "{s}"
            );
        }
    }

    #[test]
    fn marks_and_now() {
        assert_eq!(
            TimeSpec::parse("mark:last").unwrap(),
            TimeSpec::Mark(MarkRef::Last)
        );
        assert_eq!(
            TimeSpec::parse("mark:12").unwrap(),
            TimeSpec::Mark(MarkRef::Id(12))
        );
        assert_eq!(TimeSpec::parse("now").unwrap().resolve(now()), Some(now()));
        assert_eq!(TimeSpec::parse("mark:last").unwrap().resolve(now()), None);
    }

    #[test]
    fn errors_say_what_is_valid() {
        for bad in [
            "",
            "mark:",
            "mark:abc",
            "mark:0",
            "yesterday",
            "2026-13-45",
            "h2",
        ] {
            let e = TimeSpec::parse(bad).unwrap_err().to_string();
            assert!(e.contains("RFC 3339") && e.contains("90m"), "{bad}: {e}");
        }
        // An age without a (known) unit: the hint is about units, and not repeated.
        for bad in ["90", "2x"] {
            let e = TimeSpec::parse(bad).unwrap_err().to_string();
            assert!(e.contains("90m") && !e.contains("RFC 3339"), "{bad}: {e}");
        }
        let e = TimeSpec::parse("90").unwrap_err().to_string();
        assert_eq!(
            e,
            "\"90\" is not a time: 90 has no unit: write 90m (minutes), 90h (hours) or 90d (days)"
        );
        assert!(TimeSpec::parse("99999999999999d").is_err());
    }

    #[test]
    fn durations_for_people() {
        assert_eq!(format_duration_ms(850), "850ms");
        assert_eq!(format_duration_ms(2500), "2.5s");
        assert_eq!(format_duration_ms(2000), "2s");
        assert_eq!(format_duration_ms(45_000), "45s");
        assert_eq!(format_duration_ms(750_000), "12m 30s");
        assert_eq!(format_duration_ms(7_500_000), "2h 5m");
        assert_eq!(format_duration_ms(3_600_000), "1h");
        assert_eq!(format_duration_ms(3 * 86_400_000 + 4 * 3_600_000), "3d 4h");
    }

    #[test]
    fn json_times() {
        assert_eq!(
            rfc3339_ms(now().as_millisecond() + 5),
            "2026-11-25T15:00:00.005Z"
        );
    }
}
