//! The reasoning behind a verdict: a Poisson test on the category's attempts, and the evidence
//! that the device kept using telesink after T (its ordinary queries, DNS silence, `bypass`).

use serde::Serialize;

/// Zero attempts must be less likely than this, at the baseline rate, for STOPPED; and the
/// device's ordinary queries after T must not be less likely than this for it to count as
/// still using telesink.
pub const P_THRESHOLD: f64 = 0.01;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    Stopped,
    Continuing,
    Inconclusive,
}

impl Verdict {
    /// 0 STOPPED, 1 CONTINUING, 3 INCONCLUSIVE (2 is an error).
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Stopped => 0,
            Verdict::Continuing => 1,
            Verdict::Inconclusive => 3,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Stopped => "STOPPED",
            Verdict::Continuing => "CONTINUING",
            Verdict::Inconclusive => "INCONCLUSIVE",
        }
    }
}

/// The Poisson test on counts and the (logged) lengths of the two windows.
#[derive(Clone, Debug, PartialEq)]
pub struct Assessment {
    pub verdict: Verdict,
    /// Attempts per millisecond in the baseline.
    pub rate_per_ms: f64,
    /// Attempts expected after T at that rate.
    pub expected_after: f64,
    /// Probability of zero attempts after T at that rate.
    pub p_zero: f64,
    /// Length of an attempt-free window after T that would give STOPPED at the baseline rate.
    pub needed_after_ms: Option<i64>,
}

pub fn assess(before: f64, baseline_ms: i64, after: f64, after_ms: i64) -> Assessment {
    let rate_per_ms = if baseline_ms > 0 {
        before.max(0.0) / baseline_ms as f64
    } else {
        0.0
    };
    let expected_after = rate_per_ms * after_ms.max(0) as f64;
    let p_zero = (-expected_after).exp();
    let verdict = if after > 0.0 {
        Verdict::Continuing
    } else if rate_per_ms > 0.0 && p_zero < P_THRESHOLD {
        Verdict::Stopped
    } else {
        Verdict::Inconclusive
    };
    let needed_after_ms = (rate_per_ms > 0.0)
        .then(|| ((1.0 / P_THRESHOLD).ln() / rate_per_ms).ceil())
        .filter(|v| v.is_finite() && *v < i64::MAX as f64 / 2.0)
        .map(|v| v as i64 + 1);
    Assessment {
        verdict,
        rate_per_ms,
        expected_after,
        p_zero,
        needed_after_ms,
    }
}

/// P(X ≤ n) for X ~ Poisson(λ), summed in log space (λ in the thousands underflows e^-λ).
pub fn poisson_at_most(lambda: f64, n: u64) -> f64 {
    if lambda <= 0.0 {
        return 1.0;
    }
    if n as f64 > lambda * 4.0 + 50.0 {
        // Far above the mean: the rest of the tail is negligible.
        return 1.0;
    }
    let ln_l = lambda.ln();
    let mut term = -lambda;
    let mut acc = term;
    for k in 1..=n {
        term += ln_l - (k as f64).ln();
        // log(e^acc + e^term)
        let (hi, lo) = if acc > term { (acc, term) } else { (term, acc) };
        acc = hi + (lo - hi).exp().ln_1p();
    }
    acc.exp().min(1.0)
}

/// Why telesink cannot tell: the reason an INCONCLUSIVE verdict names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// telesink logged nothing after T.
    NotLogged,
    /// No attempts before or after T: nothing to compare.
    NoAttempts,
    /// The device queried a resolver of category `bypass` after T.
    Bypass,
    /// The device's last query was longer than `silent_after` before the window's end.
    DnsSilent,
    /// Its ordinary queries after T stopped, or fell far below its baseline.
    WentQuiet,
    /// Too few attempts before T for silence after T to mean anything yet.
    ThinBaseline,
}

/// Whether the device demonstrably kept using telesink after T.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsUse {
    KeptUsing,
    /// It queried a `bypass` name after T.
    Bypass,
    /// Its last query is older than `silent_after` at the window's end.
    Silent,
    /// Zero ordinary queries after T, or improbably few for its baseline.
    WentQuiet,
}

/// The device's ordinary queries after T against its baseline: the same Poisson reasoning as
/// for the category, the other way round. At the baseline rate λ = rate × logged time after T;
/// n ordinary queries after T show that it kept using telesink unless n = 0 or
/// P(X ≤ n) < [`P_THRESHOLD`].
#[derive(Clone, Debug, PartialEq)]
pub struct UseTest {
    pub verdict: DnsUse,
    pub rate_per_ms: f64,
    pub expected_after: f64,
    /// P(X ≤ after) at the baseline rate.
    pub p_at_most: f64,
}

/// What is known of the device's DNS use around T.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UseEvidence {
    pub before: f64,
    pub baseline_ms: i64,
    pub after: f64,
    pub after_ms: i64,
    /// Its last query before the window's end, when known.
    pub last_query_ms: Option<i64>,
    pub until_ms: i64,
    pub silent_after_ms: i64,
    /// Queries of category `bypass` after T.
    pub bypass_after: f64,
}

pub fn judge_use(e: &UseEvidence) -> UseTest {
    let rate_per_ms = if e.baseline_ms > 0 {
        e.before.max(0.0) / e.baseline_ms as f64
    } else {
        0.0
    };
    let expected_after = rate_per_ms * e.after_ms.max(0) as f64;
    let n = e.after.max(0.0).floor() as u64;
    let p_at_most = poisson_at_most(expected_after, n);
    let verdict = if e.bypass_after > 0.0 {
        DnsUse::Bypass
    } else if e
        .last_query_ms
        .is_some_and(|last| e.until_ms - last > e.silent_after_ms)
    {
        DnsUse::Silent
    } else if n == 0 || p_at_most < P_THRESHOLD {
        DnsUse::WentQuiet
    } else {
        DnsUse::KeptUsing
    };
    UseTest {
        verdict,
        rate_per_ms,
        expected_after,
        p_at_most,
    }
}
