//! Which upstream to ask: the `[upstream] strategy` and each upstream's health (recent latency,
//! back-off after failures). No transport here: [`super::upstream`] asks the upstreams in the
//! [`Plan`]'s order and reports each attempt back with [`Scheduler::report`], so that a faster
//! transport can replace the per-upstream pool without touching this.
//!
//! The state is a few atomics per upstream, read and written without a lock: a plan may see a
//! report half-applied, which costs at most one query an unusual order.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// `[upstream] strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Strategy {
    /// In the configured order, the next one when one fails.
    #[default]
    Ordered,
    /// The one with the lowest recent latency; the others are probed now and then.
    Fastest,
    /// The two best at once; the first good answer wins.
    Parallel,
}

impl Strategy {
    pub const ALL: [Strategy; 3] = [Strategy::Ordered, Strategy::Fastest, Strategy::Parallel];

    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Ordered => "ordered",
            Strategy::Fastest => "fastest",
            Strategy::Parallel => "parallel",
        }
    }
}

/// How an attempt went, as far as the upstream's health is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// It answered (an answer, NXDOMAIN, NODATA, or an error code: the server is up).
    Answered(Duration),
    /// No answer: a timeout or a transport error.
    Failed,
}

/// The first back-off after a failure; it doubles with each failure in a row, up to
/// [`MAX_BACKOFF`]. Long enough that a dead upstream costs one query's wait, not one per query.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(5);
pub const MAX_BACKOFF: Duration = Duration::from_secs(120);
/// `fastest`: one query in this many also asks another upstream in the background, to learn
/// whether it became faster.
pub const PROBE_EVERY: u64 = 16;

#[derive(Default)]
struct Health {
    /// Smoothed latency in microseconds; 0 until the first answer.
    latency_us: AtomicU64,
    /// Failures in a row.
    failures: AtomicU32,
    /// Not asked (except as a last resort) before this, in nanoseconds since the scheduler's
    /// epoch; 0 when healthy.
    down_until: AtomicU64,
}

/// The order to ask the upstreams in, for one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Indexes into the configured upstreams: the healthy ones first (in the strategy's
    /// order), then those backed off, soonest back first (a last resort).
    pub order: Vec<usize>,
    /// How many of `order`'s first entries are asked at once (2 for `parallel`, else 1).
    pub race: usize,
    /// `fastest`: another upstream to ask in the background, for its latency.
    pub probe: Option<usize>,
}

/// Per-upstream health for one set of upstreams.
pub struct Scheduler {
    health: Box<[Health]>,
    epoch: Instant,
    queries: AtomicU64,
}

impl Scheduler {
    pub fn new(upstreams: usize) -> Scheduler {
        Scheduler {
            health: (0..upstreams).map(|_| Health::default()).collect(),
            epoch: Instant::now(),
            queries: AtomicU64::new(0),
        }
    }

    fn nanos(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// Whether upstream `i` is backed off at `now`.
    pub fn backed_off(&self, i: usize, now: Instant) -> bool {
        self.health[i].down_until.load(Ordering::Relaxed) > self.nanos(now)
    }

    /// The smoothed latency of upstream `i`, `None` before its first answer.
    pub fn latency(&self, i: usize) -> Option<Duration> {
        match self.health[i].latency_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// The plan for one query.
    pub fn plan(&self, strategy: Strategy, now: Instant) -> Plan {
        let at = self.nanos(now);
        let n = self.health.len();
        let (mut up, mut down): (Vec<usize>, Vec<usize>) =
            (0..n).partition(|&i| self.health[i].down_until.load(Ordering::Relaxed) <= at);
        down.sort_by_key(|&i| self.health[i].down_until.load(Ordering::Relaxed));
        let mut probe = None;
        if strategy != Strategy::Ordered {
            // Unknown latency (0) first: a new upstream is measured on its first query. The
            // sort is stable, so ties keep the configured order.
            up.sort_by_key(|&i| self.health[i].latency_us.load(Ordering::Relaxed));
        }
        if strategy == Strategy::Fastest && up.len() > 1 {
            let q = self.queries.fetch_add(1, Ordering::Relaxed);
            if q % PROBE_EVERY == PROBE_EVERY - 1 {
                // The others in turn.
                let others = up.len() - 1;
                probe = Some(up[1 + ((q / PROBE_EVERY) as usize % others)]);
            }
        }
        let race = if strategy == Strategy::Parallel && up.len() >= 2 {
            2
        } else {
            1
        };
        up.extend(down);
        Plan {
            order: up,
            race,
            probe,
        }
    }

    /// The plan's first upstream and its probe, as [`plan`](Self::plan) gives them, without
    /// building the order: the UDP fast path asks this for every forwarded query, and needs
    /// the first upstream only. `fastest` with two healthy upstreams or more takes the plan
    /// (its probe comes from the sorted order).
    pub fn first(&self, strategy: Strategy, now: Instant) -> Option<(usize, Option<usize>)> {
        let at = self.nanos(now);
        let down_until = |i: usize| self.health[i].down_until.load(Ordering::Relaxed);
        let latency = |i: usize| self.health[i].latency_us.load(Ordering::Relaxed);
        let up = || (0..self.health.len()).filter(|&i| down_until(i) <= at);
        let first_up = match strategy {
            Strategy::Ordered => up().next(),
            Strategy::Fastest if up().nth(1).is_some() => {
                let plan = self.plan(strategy, now);
                return plan.order.first().map(|&f| (f, plan.probe));
            }
            // Stable: ties keep the configured order, as the plan's sort does.
            Strategy::Fastest | Strategy::Parallel => up().min_by_key(|&i| latency(i)),
        };
        first_up
            .or_else(|| (0..self.health.len()).min_by_key(|&i| down_until(i)))
            .map(|f| (f, None))
    }

    /// What an attempt to upstream `i`, started at `started`, came to. Returns the back-off
    /// when this report started or lengthened one.
    pub fn report(&self, i: usize, attempt: Attempt, started: Instant) -> Option<Duration> {
        let h = &self.health[i];
        match attempt {
            Attempt::Answered(rtt) => {
                let sample = (rtt.as_micros() as u64).max(1);
                let old = h.latency_us.load(Ordering::Relaxed);
                let new = if old == 0 {
                    sample
                } else {
                    (old * 7 + sample) / 8
                };
                h.latency_us.store(new.max(1), Ordering::Relaxed);
                h.failures.store(0, Ordering::Relaxed);
                h.down_until.store(0, Ordering::Relaxed);
                None
            }
            Attempt::Failed => {
                // Queries that were already under way when the upstream went down all fail
                // together: one back-off step for them, not one each.
                if h.down_until.load(Ordering::Relaxed) > self.nanos(started) {
                    return None;
                }
                let n = h.failures.fetch_add(1, Ordering::Relaxed).min(16);
                let backoff = FIRST_BACKOFF
                    .saturating_mul(1u32 << n.min(16))
                    .min(MAX_BACKOFF);
                let until = self.nanos(Instant::now() + backoff);
                h.down_until.store(until, Ordering::Relaxed);
                Some(backoff)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_is_the_plans_first() {
        let now = Instant::now();
        let s = Scheduler::new(4);
        let check = |s: &Scheduler, at: Instant| {
            for strategy in Strategy::ALL {
                let plan = s.plan(strategy, at);
                // `fastest` probes advance a counter: compare the first only.
                let (first, _) = s.first(strategy, at).unwrap();
                assert_eq!(first, plan.order[0], "{strategy:?}");
            }
        };
        check(&s, now);
        s.report(2, Attempt::Answered(Duration::from_millis(1)), now);
        s.report(0, Attempt::Answered(Duration::from_millis(50)), now);
        s.report(3, Attempt::Answered(Duration::from_millis(1)), now);
        check(&s, now);
        s.report(2, Attempt::Failed, now);
        s.report(1, Attempt::Failed, now);
        check(&s, Instant::now());
        for i in 0..4 {
            s.report(i, Attempt::Failed, now);
        }
        // All backed off: the soonest back first.
        check(&s, Instant::now());
        let one = Scheduler::new(1);
        one.report(0, Attempt::Failed, now);
        assert_eq!(
            one.first(Strategy::Fastest, Instant::now()),
            Some((0, None))
        );
        assert_eq!(Scheduler::new(0).first(Strategy::Ordered, now), None);
    }

    #[test]
    fn ordered_keeps_the_configured_order_until_one_fails() {
        let s = Scheduler::new(3);
        let now = Instant::now();
        assert_eq!(s.plan(Strategy::Ordered, now).order, vec![0, 1, 2]);
        s.report(2, Attempt::Answered(Duration::from_millis(1)), now);
        s.report(0, Attempt::Answered(Duration::from_millis(50)), now);
        assert_eq!(s.plan(Strategy::Ordered, now).order, vec![0, 1, 2]);
        s.report(0, Attempt::Failed, now);
        let later = Instant::now();
        assert!(s.backed_off(0, later));
        // Backed off: last, asked only when the others fail.
        assert_eq!(s.plan(Strategy::Ordered, later).order, vec![1, 2, 0]);
        // Back after the back-off.
        let after = later + MAX_BACKOFF + Duration::from_secs(1);
        assert_eq!(s.plan(Strategy::Ordered, after).order, vec![0, 1, 2]);
    }

    #[test]
    fn failures_in_a_row_double_the_backoff_and_one_answer_clears_it() {
        let s = Scheduler::new(1);
        let t0 = Instant::now();
        s.report(0, Attempt::Failed, t0);
        // A second failure of a query started before the back-off: no second step.
        s.report(0, Attempt::Failed, t0);
        let first = s.health[0].down_until.load(Ordering::Relaxed);
        assert_eq!(s.health[0].failures.load(Ordering::Relaxed), 1);
        let t1 = t0 + FIRST_BACKOFF + Duration::from_secs(1);
        s.report(0, Attempt::Failed, t1);
        assert_eq!(s.health[0].failures.load(Ordering::Relaxed), 2);
        assert!(s.health[0].down_until.load(Ordering::Relaxed) > first);
        s.report(0, Attempt::Answered(Duration::from_millis(3)), t1);
        assert!(!s.backed_off(0, Instant::now()));
        assert_eq!(s.health[0].failures.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn fastest_prefers_the_lowest_latency_and_measures_the_unknown_first() {
        let s = Scheduler::new(3);
        let now = Instant::now();
        s.report(0, Attempt::Answered(Duration::from_millis(80)), now);
        s.report(1, Attempt::Answered(Duration::from_millis(5)), now);
        // 2 is unknown: asked first, once.
        assert_eq!(s.plan(Strategy::Fastest, now).order[0], 2);
        s.report(2, Attempt::Answered(Duration::from_millis(40)), now);
        let mut probes = Vec::new();
        for _ in 0..(PROBE_EVERY * 4) {
            let p = s.plan(Strategy::Fastest, now);
            assert_eq!(p.order, vec![1, 2, 0]);
            assert_eq!(p.race, 1);
            probes.extend(p.probe);
        }
        // Now and then, each of the others in turn.
        assert_eq!(probes.len(), 4);
        assert!(probes.contains(&0) && probes.contains(&2) && !probes.contains(&1));
    }

    #[test]
    fn parallel_races_the_two_best_healthy_ones() {
        let s = Scheduler::new(3);
        let now = Instant::now();
        for (i, ms) in [(0, 30), (1, 20), (2, 10)] {
            s.report(i, Attempt::Answered(Duration::from_millis(ms)), now);
        }
        let p = s.plan(Strategy::Parallel, now);
        assert_eq!((p.order.clone(), p.race), (vec![2, 1, 0], 2));
        s.report(2, Attempt::Failed, now);
        let p = s.plan(Strategy::Parallel, Instant::now());
        assert_eq!((p.order, p.race), (vec![1, 0, 2], 2));
        // One upstream: nothing to race.
        assert_eq!(Scheduler::new(1).plan(Strategy::Parallel, now).race, 1);
    }
}
