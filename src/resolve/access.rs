//! Who may ask: `allow_networks` (not an open resolver by default) and the per-client rate
//! limit (a token bucket per source address, from `governor`).
//!
//! The two halves are used apart: [`Access::admits`] (no effect) is the decision's first step;
//! [`Access::take_token`] (takes a token) runs once per query, where the query is committed to
//! its answer (see `Handler::admit`).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;

use crate::policy::canonical;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessDecision {
    Allowed,
    /// Outside `allow_networks`.
    Denied,
    /// Over `rate_limit_qps`.
    RateLimited,
}

pub struct Access {
    networks: Vec<IpNet>,
    limiter: Option<Arc<Limiter>>,
}

pub struct Limiter {
    qps: u32,
    burst: u32,
    inner: DefaultKeyedRateLimiter<IpAddr>,
}

impl Limiter {
    /// Forgets clients whose buckets are full again, so the table cannot grow without bound.
    pub fn housekeep(&self) {
        self.inner.retain_recent();
        self.inner.shrink_to_fit();
    }
}

impl Access {
    /// `previous` lets a reload keep the buckets when the limits did not change.
    pub fn new(networks: Vec<IpNet>, qps: u32, burst: u32, previous: Option<&Access>) -> Access {
        let limiter = NonZeroU32::new(qps).map(|q| {
            let burst = burst.max(qps);
            if let Some(old) = previous.and_then(|p| p.limiter.as_ref()) {
                if old.qps == qps && old.burst == burst {
                    return old.clone();
                }
            }
            let quota = Quota::per_second(q).allow_burst(NonZeroU32::new(burst).unwrap_or(q));
            Arc::new(Limiter {
                qps,
                burst,
                inner: RateLimiter::keyed(quota),
            })
        });
        Access { networks, limiter }
    }

    /// Both halves at once: the networks, then a token.
    pub fn check(&self, addr: IpAddr) -> AccessDecision {
        if !self.admits(addr) {
            AccessDecision::Denied
        } else if !self.take_token(addr) {
            AccessDecision::RateLimited
        } else {
            AccessDecision::Allowed
        }
    }

    /// Whether `allow_networks` holds `addr`. No effect.
    pub fn admits(&self, addr: IpAddr) -> bool {
        let addr = canonical(addr);
        self.networks.iter().any(|n| n.contains(&addr))
    }

    /// Takes one token from `addr`'s bucket; `false` when it is empty (over the rate limit).
    /// Always `true` without a rate limit.
    pub fn take_token(&self, addr: IpAddr) -> bool {
        match &self.limiter {
            Some(l) => l.inner.check_key(&canonical(addr)).is_ok(),
            None => true,
        }
    }

    pub fn limiter(&self) -> Option<&Arc<Limiter>> {
        self.limiter.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_and_rate() {
        let a = Access::new(vec!["127.0.0.0/8".parse().unwrap()], 5, 5, None);
        assert_eq!(a.check("10.0.0.1".parse().unwrap()), AccessDecision::Denied);
        let me: IpAddr = "127.0.0.7".parse().unwrap();
        let allowed = (0..20)
            .filter(|_| a.check(me) == AccessDecision::Allowed)
            .count();
        assert!((5..=6).contains(&allowed), "{allowed}");
        // Another client has its own bucket.
        assert_eq!(
            a.check("127.0.0.8".parse().unwrap()),
            AccessDecision::Allowed
        );
        // Mapped IPv4 counts as IPv4.
        assert_eq!(
            a.check("::ffff:127.0.0.9".parse().unwrap()),
            AccessDecision::Allowed
        );
    }

    #[test]
    fn zero_qps_is_off() {
        let a = Access::new(vec!["0.0.0.0/0".parse().unwrap()], 0, 0, None);
        let me: IpAddr = "192.0.2.1".parse().unwrap();
        assert!((0..1000).all(|_| a.check(me) == AccessDecision::Allowed));
    }
}
