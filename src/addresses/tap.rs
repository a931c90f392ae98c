//! The DNS path's side of learning: what it hands over, and nothing more than a bounded
//! channel's `try_send` (a full channel drops the hand-off and counts it). Blocked names pass
//! a lock-free filter first, so that a device repeating a blocked name costs a hash and an
//! atomic load per query.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use hickory_proto::rr::{RData, Record};
use prometheus::IntCounter;
use tokio::sync::mpsc;

use super::store::Learnt;
use crate::observe::answers::AnswerObserver;
use crate::observe::events::{QueryEvent, QueryResult, QuerySink};
use crate::policy::category::{Action, CategorySet, CategoryTable};

/// Slots of the recently-sent filter (a power of two).
const RECENT_SLOTS: usize = 4096;

/// What the DNS path hands to the learner.
#[derive(Debug)]
pub enum Learn {
    /// Addresses (with TTLs) of a fresh upstream answer, for a name of the categories `cats`
    /// (empty: a name in none of them).
    Answer {
        cats: Learnt,
        addrs: Vec<(IpAddr, u32)>,
    },
    /// A blocked name of the categories `cats`, to resolve in the background.
    Blocked { cats: Learnt, name: Box<str> },
}

/// The learnt categories as the DNS path sees them (swapped on reload).
#[derive(Debug)]
pub struct Wanted {
    pub categories: Vec<Arc<str>>,
    pub resolve_blocked: bool,
}

/// One policy generation's categories mapped to learnt ones, kept until either changes.
struct Mapping {
    table: Arc<CategoryTable>,
    wanted: Arc<Wanted>,
    /// The policy's categories that are learnt.
    mask: CategorySet,
    /// Policy category index → learnt index.
    to_learnt: Vec<Option<u8>>,
}

pub struct Tap {
    tx: mpsc::Sender<Learn>,
    wanted: ArcSwap<Wanted>,
    mapping: ArcSwap<Option<Mapping>>,
    recent: Box<[AtomicU64]>,
    dropped: IntCounter,
}

impl Tap {
    pub fn new(tx: mpsc::Sender<Learn>, wanted: Wanted, dropped: IntCounter) -> Tap {
        Tap {
            tx,
            wanted: ArcSwap::from_pointee(wanted),
            mapping: ArcSwap::from_pointee(None),
            recent: (0..RECENT_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            dropped,
        }
    }

    pub fn set_wanted(&self, wanted: Wanted) {
        self.wanted.store(Arc::new(wanted));
        self.forget_recent();
    }

    /// Lets every blocked name through the filter again (the learner calls it periodically; it
    /// decides itself whether a name is due for a lookup).
    pub fn forget_recent(&self) {
        for s in self.recent.iter() {
            s.store(0, Ordering::Relaxed);
        }
    }

    /// The learnt categories among `cats` of the policy whose table is `table`, and whether
    /// blocked names are looked up. Two lock-free loads (no reference count is touched) unless
    /// the policy or the settings changed since the last call.
    fn learnt(&self, table: &Arc<CategoryTable>, cats: CategorySet) -> (Learnt, bool) {
        let wanted = self.wanted.load();
        let m = self.mapping.load();
        let fresh = matches!(&**m, Some(m) if Arc::ptr_eq(&m.table, table) && Arc::ptr_eq(&m.wanted, &wanted));
        let m = if fresh {
            m
        } else {
            let wanted = arc_swap::Guard::into_inner(wanted);
            let mut mask = CategorySet::EMPTY;
            let mut to_learnt = vec![None; table.len()];
            for (i, name) in wanted.categories.iter().enumerate() {
                if let Some(c) = table.get(name) {
                    mask.insert(c);
                    to_learnt[c.0 as usize] = Some(i as u8);
                }
            }
            self.mapping.store(Arc::new(Some(Mapping {
                table: table.clone(),
                wanted,
                mask,
                to_learnt,
            })));
            self.mapping.load()
        };
        let Some(m) = &**m else {
            return (Learnt::default(), false);
        };
        let mut out = 0u64;
        for c in cats.intersection(m.mask).iter() {
            if let Some(Some(i)) = m.to_learnt.get(c.0 as usize) {
                out |= 1 << i;
            }
        }
        (Learnt(out), m.wanted.resolve_blocked)
    }

    fn send(&self, msg: Learn) {
        if self.tx.try_send(msg).is_err() {
            self.dropped.inc();
        }
    }
}

impl QuerySink for Tap {
    fn record(&self, event: &QueryEvent<'_>) {
        if event.result != QueryResult::Blocked
            || event.action != Some(Action::Blocked)
            || event.categories.is_empty()
        {
            return;
        }
        let (cats, resolve_blocked) = self.learnt(event.category_table, event.categories);
        if cats.is_empty() || !resolve_blocked {
            return;
        }
        let h = std::hash::BuildHasher::hash_one(
            &foldhash::fast::FixedState::with_seed(0x7e1e),
            event.name,
        )
        .max(1);
        let slot = &self.recent[h as usize & (RECENT_SLOTS - 1)];
        if slot.load(Ordering::Relaxed) == h {
            return;
        }
        slot.store(h, Ordering::Relaxed);
        self.send(Learn::Blocked {
            cats,
            name: event.name.into(),
        });
    }
}

impl AnswerObserver for Tap {
    fn answered(&self, table: &Arc<CategoryTable>, cats: CategorySet, answers: &[Record]) {
        let addrs: Vec<(IpAddr, u32)> = answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some((IpAddr::V4(a.0), r.ttl)),
                RData::AAAA(a) => Some((IpAddr::V6(a.0), r.ttl)),
                _ => None,
            })
            .collect();
        if addrs.is_empty() {
            return;
        }
        // A name of a category that is not learnt counts as "no such category": its
        // addresses are left out of every set (SPEC: an address that also serves a name in no
        // such category).
        let cats = if cats.is_empty() {
            Learnt::default()
        } else {
            self.learnt(table, cats).0
        };
        self.send(Learn::Answer { cats, addrs });
    }
}
