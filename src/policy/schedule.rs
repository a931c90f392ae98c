//! Schedules (`[[group.schedule]]`): extra categories a group blocks or observes while a weekly
//! window of local time is open.
//!
//! The query path never looks at the clock: each group keeps the set of its open schedules as
//! one atomic bitmask, which a background task (`server::schedules`) recomputes at each window
//! edge (and the policy once when it is built). A query reads it with one relaxed load and
//! unions the open schedules' categories into the group's.
//!
//! Whether a window is open depends only on the local wall-clock time (weekday, hour, minute) of
//! the machine's time zone, so daylight-saving changes need no special case: on the night the
//! clocks go forward a window opening at 02:30 opens at 03:00; on the night they go back a
//! window closing at 01:30 is open again for the repeated hour's first half. The edge
//! computation takes both instants of an ambiguous wall time and the time zone's transitions, so
//! the task wakes at every change.

use std::sync::atomic::{AtomicU64, Ordering};

use jiff::civil::{DateTime, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

use crate::policy::category::CategorySet;

/// The most schedules one group may have (one bit each in its open mask).
pub const MAX_PER_GROUP: usize = 64;

/// A set of weekdays (bit 0 Monday … bit 6 Sunday).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Days(u8);

impl Days {
    pub const ALL: Days = Days(0x7f);
    pub const NONE: Days = Days(0);
    /// The names `days` takes, Monday first.
    pub const NAMES: [&'static str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

    pub fn with(self, day: Weekday) -> Days {
        Days(self.0 | 1 << day.to_monday_zero_offset())
    }

    pub fn contains(self, day: Weekday) -> bool {
        self.0 & (1 << day.to_monday_zero_offset()) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The day called `name` (`mon` … `sun`).
    pub fn parse_day(name: &str) -> Option<Weekday> {
        Self::NAMES
            .iter()
            .position(|n| *n == name)
            .map(|i| Weekday::from_monday_zero_offset(i as i8).expect("0..7"))
    }
}

impl std::fmt::Display for Days {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if *self == Days::ALL {
            return f.write_str("every day");
        }
        let names: Vec<&str> = (0..7)
            .filter(|i| self.0 & (1 << i) != 0)
            .map(|i| Days::NAMES[i])
            .collect();
        f.write_str(&names.join(","))
    }
}

/// A time of day in whole minutes since midnight: `0..=1440` (1440 is "24:00", the end of the
/// day, which only `to` may be).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Minute(u16);

impl Minute {
    pub const END_OF_DAY: Minute = Minute(1440);

    /// `"HH:MM"`; `"24:00"` only when `end_of_day` is allowed.
    pub fn parse(s: &str, end_of_day: bool) -> Option<Minute> {
        let (h, m) = s.split_once(':')?;
        if h.is_empty() || h.len() > 2 || m.len() != 2 {
            return None;
        }
        if !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
        match (h, m) {
            (24, 0) if end_of_day => Some(Minute::END_OF_DAY),
            (0..=23, 0..=59) => Some(Minute(h * 60 + m)),
            _ => None,
        }
    }

    fn of(t: Time) -> Minute {
        Minute(t.hour() as u16 * 60 + t.minute() as u16)
    }
}

impl std::fmt::Display for Minute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

/// A weekly window: on each of `days`, from `from` to `to` local time. `to` earlier than `from`
/// crosses midnight (Friday 21:00 to Saturday 07:00 for `fri`); `from == to` is 24 hours from
/// `from` (`00:00`–`00:00` is the whole day).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub days: Days,
    pub from: Minute,
    pub to: Minute,
}

impl Window {
    /// Whether the window is open at this local wall-clock time.
    pub fn is_open(&self, at: DateTime) -> bool {
        let now = Minute::of(at.time());
        let today = self.days.contains(at.weekday());
        if self.from < self.to {
            today && self.from <= now && now < self.to
        } else {
            let yesterday = self.days.contains(at.weekday().previous());
            (today && now >= self.from) || (yesterday && now < self.to)
        }
    }

    /// Whether the window is open at `at` in `tz`.
    pub fn is_open_at(&self, at: Timestamp, tz: &TimeZone) -> bool {
        self.is_open(tz.to_datetime(at))
    }

    /// The first instant after `after` at which the window may open or close. May be an instant
    /// where nothing changes (the edges of every day are candidates), never later than a real
    /// change; `None` only past the end of time.
    pub fn next_edge(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let today = tz.to_datetime(after).date();
        let mut best: Option<Timestamp> = None;
        let mut consider = |t: Timestamp| {
            if t > after && best.is_none_or(|b| t < b) {
                best = Some(t);
            }
        };
        // Today and the next eight days: a window opens or closes at least once a week.
        for offset in 0..=8 {
            let Ok(day) = today.checked_add(offset.days()) else {
                break;
            };
            for m in [self.from, self.to] {
                let dt = if m == Minute::END_OF_DAY {
                    match day.tomorrow() {
                        Ok(d) => d.to_datetime(Time::midnight()),
                        Err(_) => continue,
                    }
                } else {
                    let Ok(t) = Time::new((m.0 / 60) as i8, (m.0 % 60) as i8, 0, 0) else {
                        continue;
                    };
                    day.to_datetime(t)
                };
                // Both instants of a wall time the clocks pass twice (or the gap's edges).
                let amb = tz.to_ambiguous_timestamp(dt);
                if let Ok(t) = amb.earlier() {
                    consider(t);
                }
                if let Ok(t) = amb.later() {
                    consider(t);
                }
            }
        }
        // A change of offset moves the wall clock: the window may open or close right there.
        if let Some(tr) = tz.following(after).next() {
            consider(tr.timestamp());
        }
        best
    }
}

/// One `[[group.schedule]]` as the policy is given it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleSpec {
    pub window: Window,
    pub block: Vec<String>,
    pub observe: Vec<String>,
}

/// A built schedule: its window and categories.
#[derive(Debug)]
pub struct Schedule {
    pub window: Window,
    pub block: CategorySet,
    pub observe: CategorySet,
}

/// A group's schedules and which of them are open now.
#[derive(Debug, Default)]
pub struct Schedules {
    pub list: Vec<Schedule>,
    /// Bit i: `list[i]` is open. Written by the schedule task, read by every query.
    open: AtomicU64,
}

impl Schedules {
    pub fn new(list: Vec<Schedule>) -> Schedules {
        debug_assert!(list.len() <= MAX_PER_GROUP);
        Schedules {
            list,
            open: AtomicU64::new(0),
        }
    }

    /// Adds the open schedules' categories to a group's `(block, observe)`.
    #[inline]
    pub fn apply(&self, sets: (CategorySet, CategorySet)) -> (CategorySet, CategorySet) {
        if self.list.is_empty() {
            return sets;
        }
        let (mut block, mut observe) = sets;
        let mut open = self.open.load(Ordering::Relaxed);
        while open != 0 {
            let i = open.trailing_zeros() as usize;
            open &= open - 1;
            if let Some(s) = self.list.get(i) {
                block = block.union(s.block);
                observe = observe.union(s.observe);
            }
        }
        (block, observe)
    }

    /// Whether schedule `i` is open (as the task last set it).
    pub fn is_open(&self, i: usize) -> bool {
        self.open.load(Ordering::Relaxed) & (1 << i) != 0
    }

    /// Sets which schedules are open at `now`; returns the next instant any may change.
    pub fn refresh(&self, now: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let local = tz.to_datetime(now);
        let mut mask = 0u64;
        let mut next: Option<Timestamp> = None;
        for (i, s) in self.list.iter().enumerate() {
            if s.window.is_open(local) {
                mask |= 1 << i;
            }
            if let Some(e) = s.window.next_edge(now, tz) {
                next = Some(next.map_or(e, |n| n.min(e)));
            }
        }
        self.open.store(mask, Ordering::Relaxed);
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn days(names: &[&str]) -> Days {
        names
            .iter()
            .fold(Days::NONE, |d, n| d.with(Days::parse_day(n).unwrap()))
    }

    fn m(s: &str) -> Minute {
        Minute::parse(s, true).unwrap()
    }

    fn window(d: &[&str], from: &str, to: &str) -> Window {
        Window {
            days: days(d),
            from: m(from),
            to: m(to),
        }
    }

    fn at(s: &str) -> DateTime {
        s.parse().unwrap()
    }

    #[test]
    fn parses_times_of_day() {
        assert_eq!(Minute::parse("07:05", false), Some(Minute(425)));
        assert_eq!(Minute::parse("7:05", false), Some(Minute(425)));
        assert_eq!(Minute::parse("24:00", true), Some(Minute::END_OF_DAY));
        for bad in [
            "24:00", "25:00", "12:60", "12", "12:5", "ab:cd", "-1:00", "", "12:00:00",
        ] {
            assert_eq!(Minute::parse(bad, false), None, "{bad}");
        }
    }

    #[test]
    fn a_window_within_a_day() {
        // 2026-12-04 is a Friday.
        let w = window(&["fri"], "09:00", "17:00");
        assert!(!w.is_open(at("2026-12-04T08:59")));
        assert!(w.is_open(at("2026-12-04T09:00")));
        assert!(w.is_open(at("2026-12-04T16:59")));
        assert!(!w.is_open(at("2026-12-04T17:00")));
        assert!(!w.is_open(at("2026-12-05T10:00")), "Saturday is not listed");
    }

    #[test]
    fn a_window_crossing_midnight_belongs_to_the_day_it_starts() {
        let w = window(&["fri"], "21:00", "07:00");
        assert!(
            !w.is_open(at("2026-12-04T06:00")),
            "Friday early is Thursday's night"
        );
        assert!(!w.is_open(at("2026-12-04T20:59")));
        assert!(w.is_open(at("2026-12-04T21:00")));
        assert!(w.is_open(at("2026-12-05T00:00")));
        assert!(w.is_open(at("2026-12-05T06:59")));
        assert!(!w.is_open(at("2026-12-05T07:00")));
        assert!(!w.is_open(at("2026-12-05T21:00")), "Saturday is not listed");
        // Sunday night into Monday: the week wraps.
        let w = window(&["sun"], "22:00", "06:00");
        assert!(w.is_open(at("2026-12-07T05:00")), "Monday morning");
    }

    #[test]
    fn from_equal_to_is_twenty_four_hours() {
        let w = window(&["sat"], "00:00", "00:00");
        assert!(!w.is_open(at("2026-12-04T23:59")));
        assert!(w.is_open(at("2026-12-05T00:00")));
        assert!(w.is_open(at("2026-12-05T23:59")));
        assert!(!w.is_open(at("2026-12-06T00:00")));
        let w = window(&["sat"], "00:00", "24:00");
        assert!(w.is_open(at("2026-12-05T23:59")));
        assert!(!w.is_open(at("2026-12-06T00:00")));
    }

    fn ts(tz: &TimeZone, s: &str) -> Timestamp {
        tz.to_ambiguous_timestamp(at(s)).compatible().unwrap()
    }

    #[test]
    fn the_next_edge_is_the_next_opening_or_closing() {
        let tz = TimeZone::UTC;
        let w = window(&["fri"], "21:00", "07:00");
        let e = w.next_edge(ts(&tz, "2026-12-04T12:00"), &tz).unwrap();
        assert_eq!(e, ts(&tz, "2026-12-04T21:00"));
        let e = w.next_edge(ts(&tz, "2026-12-04T21:00"), &tz).unwrap();
        assert_eq!(e, ts(&tz, "2026-12-05T07:00"), "strictly after");
        // Every candidate up to a real change is safe; the real change is never skipped.
        let mut t = ts(&tz, "2026-12-05T07:00");
        let open_again = ts(&tz, "2026-12-11T21:00");
        while t < open_again {
            assert!(!w.is_open_at(t, &tz));
            t = w.next_edge(t, &tz).unwrap();
        }
        assert_eq!(t, open_again);
        assert!(w.is_open_at(t, &tz));
    }

    #[test]
    fn daylight_saving_changes() {
        // Central European time as a POSIX rule: no tz database needed on the test machine.
        let tz = TimeZone::posix("CET-1CEST,M3.5.0,M10.5.0/3").unwrap();
        // 2026-03-29: 02:00 → 03:00. A window opening at 02:30 opens at 03:00 (the gap).
        let w = window(&["sun"], "02:30", "05:00");
        let before = ts(&tz, "2026-03-29T01:59");
        assert!(!w.is_open_at(before, &tz));
        let e = w.next_edge(before, &tz).unwrap();
        assert_eq!(e, ts(&tz, "2026-03-29T03:00"));
        assert!(w.is_open_at(e, &tz));

        // 2026-10-25: 03:00 → 02:00. A window closing at 02:30 closes, opens again when the
        // clocks go back, and closes at the second 02:30.
        let w = window(&["sat"], "22:00", "02:30");
        let first = tz
            .to_ambiguous_timestamp(at("2026-10-25T02:30"))
            .earlier()
            .unwrap();
        let second = tz
            .to_ambiguous_timestamp(at("2026-10-25T02:30"))
            .later()
            .unwrap();
        assert!(!w.is_open_at(first, &tz));
        let back = w.next_edge(first, &tz).unwrap();
        assert_eq!(
            back,
            ts(&tz, "2026-10-25T01:00").checked_add(2.hours()).unwrap()
        );
        assert!(w.is_open_at(back, &tz), "02:00 again, before 02:30");
        assert_eq!(w.next_edge(back, &tz).unwrap(), second);
        assert!(!w.is_open_at(second, &tz));
    }

    #[test]
    fn open_schedules_add_their_categories() {
        use crate::policy::category::CategoryTable;
        let mut t = CategoryTable::new();
        let social = t.intern("social").unwrap();
        let games = t.intern("games").unwrap();
        let mut block = CategorySet::EMPTY;
        block.insert(social);
        let mut observe = CategorySet::EMPTY;
        observe.insert(games);
        let s = Schedules::new(vec![
            Schedule {
                window: window(&["fri"], "21:00", "07:00"),
                block,
                observe: CategorySet::EMPTY,
            },
            Schedule {
                window: window(&["sat"], "00:00", "00:00"),
                block: CategorySet::EMPTY,
                observe,
            },
        ]);
        let tz = TimeZone::UTC;
        let none = (CategorySet::EMPTY, CategorySet::EMPTY);
        s.refresh(ts(&tz, "2026-12-04T12:00"), &tz);
        assert_eq!(s.apply(none), none);
        s.refresh(ts(&tz, "2026-12-04T22:00"), &tz);
        assert_eq!(s.apply(none), (block, CategorySet::EMPTY));
        s.refresh(ts(&tz, "2026-12-05T01:00"), &tz);
        assert_eq!(s.apply(none), (block, observe));
        assert!(s.is_open(0) && s.is_open(1));
    }
}
