//! The learnt addresses of each category, with their expiry, and the addresses seen for names
//! in no such category (shared fronts, left out of every set). Plain data: the learner task owns
//! it behind a mutex that the DNS path never takes.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A set of learnt categories: bit `i` is `categories[i]` of the [`Store`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Learnt(pub u64);

impl Learnt {
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn iter(self) -> impl Iterator<Item = usize> {
        (0..64).filter(move |i| self.0 & (1 << i) != 0)
    }
}

/// The most categories `[addresses] categories` may name (one bit each in [`Learnt`]).
pub const MAX_LEARNT_CATEGORIES: usize = 64;

/// The shortest time an address is kept: a TTL of 0 would never reach a router.
const MIN_KEEP: Duration = Duration::from_secs(1);

/// One category's addresses as exported: IPv4 then IPv6, each sorted, with the time each has
/// left; and how many were left out as shared.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Export {
    pub v4: Vec<(Ipv4Addr, Duration)>,
    pub v6: Vec<(Ipv6Addr, Duration)>,
    pub shared: Vec<IpAddr>,
}

impl Export {
    /// One address a line, IPv4 then IPv6 (the router import format).
    pub fn text(&self, family: Option<crate::addresses::Family>) -> String {
        use crate::addresses::Family;
        let mut out = String::new();
        if family != Some(Family::Ipv6) {
            for (a, _) in &self.v4 {
                out.push_str(&a.to_string());
                out.push('\n');
            }
        }
        if family != Some(Family::Ipv4) {
            for (a, _) in &self.v6 {
                out.push_str(&a.to_string());
                out.push('\n');
            }
        }
        out
    }
}

#[derive(Debug)]
pub struct Store {
    categories: Vec<Arc<str>>,
    /// (category index, address) → when it expires.
    learnt: HashMap<(u8, IpAddr), Instant>,
    /// Addresses that answered for a name in no learnt category → when that record expires.
    other: HashMap<IpAddr, Instant>,
    /// The most entries of `learnt` and of `other`, each.
    cap: usize,
    /// Addresses not kept because a map was full.
    pub capped: u64,
}

impl Store {
    pub fn new(categories: Vec<Arc<str>>, cap: usize) -> Store {
        Store {
            categories,
            learnt: HashMap::new(),
            other: HashMap::new(),
            cap,
            capped: 0,
        }
    }

    pub fn categories(&self) -> &[Arc<str>] {
        &self.categories
    }

    pub fn index(&self, category: &str) -> Option<usize> {
        self.categories.iter().position(|c| &**c == category)
    }

    /// A new category list (a reload): addresses of categories still listed are kept.
    pub fn set_categories(&mut self, categories: Vec<Arc<str>>) {
        let old = std::mem::replace(&mut self.categories, categories);
        let remap: Vec<Option<u8>> = old.iter().map(|c| self.index(c).map(|i| i as u8)).collect();
        self.learnt = std::mem::take(&mut self.learnt)
            .into_iter()
            .filter_map(|((c, a), t)| Some(((remap.get(c as usize).copied()??, a), t)))
            .collect();
    }

    /// `addrs` (each with its record's TTL) answered for a name of the categories `cats`, or,
    /// when `cats` is empty, for a name in none of them. Whether any exported set changed.
    pub fn learn(&mut self, cats: Learnt, addrs: &[(IpAddr, u32)], now: Instant) -> bool {
        let mut changed = false;
        for &(addr, ttl) in addrs {
            let until = now + Duration::from_secs(ttl.into()).max(MIN_KEEP);
            if cats.is_empty() {
                changed |= self.learnt_anywhere(addr);
                let full = self.other.len() >= self.cap;
                match self.other.get_mut(&addr) {
                    Some(t) => *t = (*t).max(until),
                    None if full => self.capped += 1,
                    None => {
                        self.other.insert(addr, until);
                    }
                }
                continue;
            }
            for c in cats.iter() {
                let full = self.learnt.len() >= self.cap;
                match self.learnt.get_mut(&(c as u8, addr)) {
                    Some(t) => {
                        if until > *t {
                            *t = until;
                            changed = true;
                        }
                    }
                    None if full => self.capped += 1,
                    None => {
                        self.learnt.insert((c as u8, addr), until);
                        changed = true;
                    }
                }
            }
        }
        changed
    }

    fn learnt_anywhere(&self, addr: IpAddr) -> bool {
        (0..self.categories.len()).any(|c| self.learnt.contains_key(&(c as u8, addr)))
    }

    /// Forgets what expired; whether an exported set changed.
    pub fn sweep(&mut self, now: Instant) -> bool {
        let before = self.learnt.len();
        self.learnt.retain(|_, t| *t > now);
        let mut changed = self.learnt.len() != before;
        let learnt = &self.learnt;
        let n = self.categories.len();
        self.other.retain(|a, t| {
            let keep = *t > now;
            if !keep && (0..n).any(|c| learnt.contains_key(&(c as u8, *a))) {
                // A shared address no longer shared: it joins its sets again.
                changed = true;
            }
            keep
        });
        changed
    }

    /// Category `index`'s addresses now, shared ones left out.
    pub fn export(&self, index: usize, now: Instant) -> Export {
        let mut e = Export::default();
        for (&(c, addr), &until) in &self.learnt {
            if c as usize != index || until <= now {
                continue;
            }
            if self.other.get(&addr).is_some_and(|t| *t > now) {
                e.shared.push(addr);
                continue;
            }
            let left = until - now;
            match addr {
                IpAddr::V4(a) => e.v4.push((a, left)),
                IpAddr::V6(a) => e.v6.push((a, left)),
            }
        }
        e.v4.sort();
        e.v6.sort();
        e.shared.sort();
        e
    }

    /// Entries held (learnt, other): for the cap.
    pub fn len(&self) -> (usize, usize) {
        (self.learnt.len(), self.other.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn learns_exports_and_expires() {
        let mut s = Store::new(vec!["telemetry".into(), "ads".into()], 100);
        let t0 = Instant::now();
        assert!(s.learn(
            Learnt(1),
            &[(ip("203.0.113.5"), 60), (ip("2001:db8::5"), 10)],
            t0
        ));
        assert!(s.learn(Learnt(0b11), &[(ip("203.0.113.1"), 30)], t0));
        let e = s.export(0, t0);
        assert_eq!(
            e.text(None),
            "203.0.113.1\n203.0.113.5\n2001:db8::5\n",
            "IPv4 first, sorted"
        );
        assert_eq!(
            e.text(Some(crate::addresses::Family::Ipv6)),
            "2001:db8::5\n"
        );
        assert_eq!(s.export(1, t0).text(None), "203.0.113.1\n");
        // After 10 s the IPv6 address has expired; after 60 s everything.
        let t1 = t0 + Duration::from_secs(11);
        assert!(s.sweep(t1));
        assert_eq!(s.export(0, t1).text(None), "203.0.113.1\n203.0.113.5\n");
        assert!(s.sweep(t0 + Duration::from_secs(61)));
        assert_eq!(s.len(), (0, 0));
    }

    #[test]
    fn a_shared_address_is_left_out_in_either_order() {
        let mut s = Store::new(vec!["telemetry".into()], 100);
        let t0 = Instant::now();
        s.learn(
            Learnt(1),
            &[(ip("198.51.100.1"), 60), (ip("198.51.100.2"), 60)],
            t0,
        );
        // An unrelated name answered with .1 (a CDN front): out, and the set changed.
        assert!(s.learn(Learnt(0), &[(ip("198.51.100.1"), 30)], t0));
        // Seen for an unrelated name first, then for telemetry: out too.
        s.learn(Learnt(0), &[(ip("198.51.100.3"), 30)], t0);
        s.learn(Learnt(1), &[(ip("198.51.100.3"), 60)], t0);
        let e = s.export(0, t0);
        assert_eq!(e.text(None), "198.51.100.2\n");
        assert_eq!(e.shared, vec![ip("198.51.100.1"), ip("198.51.100.3")]);
        // Once the unrelated record expires, the address is telemetry's alone again.
        let t1 = t0 + Duration::from_secs(31);
        assert!(s.sweep(t1));
        assert_eq!(s.export(0, t1).shared, Vec::<IpAddr>::new());
        assert_eq!(s.export(0, t1).v4.len(), 3);
    }

    #[test]
    fn the_cap_holds_and_is_counted() {
        let mut s = Store::new(vec!["telemetry".into()], 2);
        let t0 = Instant::now();
        let addrs: Vec<(IpAddr, u32)> = (1..=5)
            .map(|i| (IpAddr::from([192, 0, 2, i]), 60))
            .collect();
        s.learn(Learnt(1), &addrs, t0);
        s.learn(Learnt(0), &addrs, t0);
        assert_eq!(s.len(), (2, 2));
        assert_eq!(s.capped, 6);
    }

    #[test]
    fn a_reload_keeps_the_categories_still_listed() {
        let mut s = Store::new(vec!["a".into(), "b".into()], 10);
        let t0 = Instant::now();
        s.learn(Learnt(0b01), &[(ip("192.0.2.1"), 60)], t0);
        s.learn(Learnt(0b10), &[(ip("192.0.2.2"), 60)], t0);
        s.set_categories(vec!["b".into(), "c".into()]);
        assert_eq!(s.export(0, t0).text(None), "192.0.2.2\n");
        assert_eq!(s.export(1, t0).text(None), "");
        assert_eq!(s.len().0, 1);
    }
}
