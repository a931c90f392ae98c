//! The domain matcher: which rules name a domain or one of its parents.
//!
//! Built once per policy and never changed (a reload builds a new one). It must hold millions
//! of names in little memory and answer without allocating, so it keeps no names at all:
//! each rule's name is reduced to a 64-bit hash of its labels, read right to left, and the
//! hashes sit in one sorted array, each beside its 32-bit payload (12 bytes per distinct name).
//! A small index on the top bits of the hash narrows every lookup to a handful of neighbours.
//!
//! Hashing right to left lets one pass over a query name produce the hash of every suffix
//! (`c`, `b.c`, `a.b.c`), so "the name or any parent" costs one probe per label.
//! Two names collide with probability ~n/2^64 per probe (5e-14 for a million names): a
//! collision would wrongly match one name, an accepted risk shared with every hashed filter.
//! `telesink explain` re-reads the lists to show lines, so nothing is lost by not keeping text.

use std::collections::HashMap;

/// Most labels a DNS name can have (255 bytes, one-byte labels plus length bytes).
pub const MAX_LABELS: usize = 128;

/// Index of a list in the policy (block lists, allow lists and built-in sources alike).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListId(pub u16);

/// How a rule names a domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The name only.
    Exact,
    /// The name and every name under it.
    Subtree,
}

/// What the rules for one name say, for the name itself (`exact`) and for names under it
/// (`subtree`). Interned: many names share one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RuleSet {
    /// Rules that apply when the query name equals the rule name.
    pub exact: Hits,
    /// Rules that apply to names strictly under the rule name (and to the name itself).
    pub subtree: Hits,
}

/// The lists that matched, as a bitmask of up to 64 "slots" plus the first list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Hits {
    /// Block-rule lists, as slots (see [`MatcherBuilder::insert`]).
    pub block: u64,
    /// Allow-rule lists, as slots.
    pub allow: u64,
}

impl Hits {
    pub fn is_empty(&self) -> bool {
        self.block == 0 && self.allow == 0
    }
    fn merge(&mut self, other: Hits) {
        self.block |= other.block;
        self.allow |= other.allow;
    }
}

/// An immutable set of names, each with its [`RuleSet`].
#[derive(Debug, Default)]
pub struct DomainMatcher {
    /// `index[p]..index[p+1]` is the range of `entries` whose keys' top `bits` bits equal `p`.
    index: Vec<u32>,
    bits: u32,
    /// Sorted by key, one per distinct name.
    entries: Vec<Entry>,
    sets: Vec<RuleSet>,
}

/// A name's hash and its value side by side, 12 bytes (4-byte aligned, so no padding): the
/// builder sorts and merges the rules in this same array, and a lookup that finds the key has
/// its value in the same cache line.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, packed(4))]
struct Entry {
    key: u64,
    /// In the builder, the packed rule (slot, scope, action); in the matcher, the index of
    /// the interned [`RuleSet`].
    val: u32,
}

impl Entry {
    #[inline]
    fn key(&self) -> u64 {
        self.key
    }
}

impl DomainMatcher {
    /// Number of distinct names.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Heap bytes held: the figure the performance issue tracks per entry.
    pub fn heap_bytes(&self) -> usize {
        self.index.capacity() * 4
            + self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.sets.capacity() * std::mem::size_of::<RuleSet>()
    }

    /// Every rule that matches `name` (given as labels, left to right, lower case) or one of
    /// its parents, merged. No allocation.
    pub fn lookup<'a, I>(&self, labels: I) -> Hits
    where
        I: DoubleEndedIterator<Item = &'a [u8]>,
    {
        self.lookup_hashes(&NameHashes::new(labels))
    }

    /// [`lookup`](Self::lookup) with the name's suffix hashes computed once by the caller (the
    /// query path probes the local zones and the lists with the same name).
    pub fn lookup_hashes(&self, name: &NameHashes) -> Hits {
        let mut hits = Hits::default();
        if self.entries.is_empty() {
            return hits;
        }
        let n = name.n;
        for (i, &h) in name.hashes[..n].iter().enumerate() {
            if let Some(set) = self.get(h) {
                // The last hash covers the whole name: exact rules apply only there.
                if i + 1 == n {
                    hits.merge(set.exact);
                }
                hits.merge(set.subtree);
            }
        }
        hits
    }

    /// The same as [`lookup`](Self::lookup) for a dotted name (`"a.b.c"`).
    pub fn lookup_str(&self, name: &str) -> Hits {
        self.lookup(split_labels(name))
    }

    fn get(&self, hash: u64) -> Option<&RuleSet> {
        let p = (hash >> (64 - self.bits)) as usize;
        let (lo, hi) = (self.index[p] as usize, self.index[p + 1] as usize);
        let slice = &self.entries[lo..hi];
        // Buckets hold ~8 keys on average: a linear scan beats a binary search there.
        let e = slice.iter().find(|e| e.key() >= hash)?;
        if e.key() == hash {
            Some(&self.sets[e.val as usize])
        } else {
            None
        }
    }
}

/// A name's suffix hashes ([`suffix_hashes`]), what every matcher lookup probes.
pub struct NameHashes {
    hashes: [u64; MAX_LABELS],
    n: usize,
}

impl NameHashes {
    /// From the labels, left to right, lower case.
    pub fn new<'a, I>(labels: I) -> NameHashes
    where
        I: DoubleEndedIterator<Item = &'a [u8]>,
    {
        let mut hashes = [0u64; MAX_LABELS];
        let n = suffix_hashes(labels, &mut hashes);
        NameHashes { hashes, n }
    }
}

impl NameHashes {
    /// The suffix hashes, shortest suffix first (`c`, `b.c`, `a.b.c`): for tables of their own
    /// (the `[[forward]]` zones) that want the most specific match.
    pub fn suffixes(&self) -> &[u64] {
        &self.hashes[..self.n]
    }
}

/// The hash of the whole dotted `name` (lower case), as [`NameHashes::suffixes`] ends with.
pub fn name_hash(name: &str) -> Option<u64> {
    let h = NameHashes::new(split_labels(name));
    h.suffixes().last().copied()
}

/// Splits a dotted name into labels (empty input gives no labels).
pub fn split_labels(name: &str) -> impl DoubleEndedIterator<Item = &[u8]> {
    name.split('.')
        .filter(|l| !l.is_empty())
        .map(|l| l.as_bytes())
}

/// Writes the hash of each suffix of the name into `out`, shortest first (`c`, `b.c`, `a.b.c`),
/// and returns how many. Names with more than [`MAX_LABELS`] labels are cut at the left.
pub fn suffix_hashes<'a, I>(labels: I, out: &mut [u64; MAX_LABELS]) -> usize
where
    I: DoubleEndedIterator<Item = &'a [u8]>,
{
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut n = 0;
    for label in labels.rev() {
        if n == MAX_LABELS {
            break;
        }
        state = mix(state ^ (label.len() as u64) ^ 0x100);
        let mut chunks = label.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            state = mix(state ^ w);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            state = mix(state ^ u64::from_le_bytes(buf));
        }
        out[n] = finish(state);
        n += 1;
    }
    n
}

#[inline]
fn mix(x: u64) -> u64 {
    (x ^ (x >> 29))
        .wrapping_mul(0xbf58_476d_1ce4_e5b9)
        .rotate_left(27)
}

#[inline]
fn finish(mut x: u64) -> u64 {
    // splitmix64's finaliser: spreads the state over all 64 bits, so the top bits index well.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Collects rules, then builds a [`DomainMatcher`].
///
/// A rule names a list by its "slot", a bit position 0..64: the policy gives each list a slot
/// (lists beyond 64 share slots by category signature, see `policy`).
///
/// A reload builds beside the policy in force, so the builder's peak is what a reload costs
/// over steady state. The rules sit in the matcher's own entry array (12 bytes per rule), and
/// `build` sorts and merges them in place: no second copy of the rules ever exists.
#[derive(Default)]
pub struct MatcherBuilder {
    /// Per rule: the name's hash, and the slot in the low 6 bits of the value, then scope and
    /// action bits.
    entries: Vec<Entry>,
}

const RULE_SUBTREE: u32 = 1 << 6;
const RULE_ALLOW: u32 = 1 << 7;

impl MatcherBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(n: usize) -> Self {
        Self {
            entries: Vec::with_capacity(n),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds a rule for the dotted, normalised `name`.
    pub fn insert(&mut self, name: &str, slot: u8, scope: Scope, allow: bool) {
        debug_assert!(slot < 64);
        let mut hashes = [0u64; MAX_LABELS];
        let n = suffix_hashes(split_labels(name), &mut hashes);
        if n == 0 {
            return;
        }
        let mut packed = u32::from(slot & 63);
        if scope == Scope::Subtree {
            packed |= RULE_SUBTREE;
        }
        if allow {
            packed |= RULE_ALLOW;
        }
        self.entries.push(Entry {
            key: hashes[n - 1],
            val: packed,
        });
    }

    pub fn build(self) -> DomainMatcher {
        let mut entries = self.entries;
        // In place (pattern-defeating quicksort): only the order matters, rules of one name
        // are merged below whatever their order.
        entries.sort_unstable_by_key(Entry::key);

        // Merge each run of equal keys into one entry, written over the run's start: the write
        // position never passes the read position.
        let mut sets: Vec<RuleSet> = Vec::new();
        let mut interned: HashMap<RuleSet, u32> = HashMap::new();
        let (mut r, mut w) = (0, 0);
        while r < entries.len() {
            let hash = entries[r].key();
            let mut set = RuleSet::default();
            while r < entries.len() && entries[r].key() == hash {
                let packed = entries[r].val;
                let bit = 1u64 << (packed & 63);
                let hits = if packed & RULE_SUBTREE != 0 {
                    &mut set.subtree
                } else {
                    &mut set.exact
                };
                if packed & RULE_ALLOW != 0 {
                    hits.allow |= bit;
                } else {
                    hits.block |= bit;
                }
                r += 1;
            }
            let id = *interned.entry(set).or_insert_with(|| {
                sets.push(set);
                (sets.len() - 1) as u32
            });
            entries[w] = Entry { key: hash, val: id };
            w += 1;
        }
        entries.truncate(w);
        // A large array's unused tail (growth, duplicates) is given back in place (mremap).
        entries.shrink_to_fit();
        sets.shrink_to_fit();

        // About 8 keys per bucket; at least one bit so the shift below stays in range.
        let bits = (usize::BITS - (entries.len() / 8).max(1).leading_zeros()).clamp(1, 24);
        let mut index = vec![0u32; (1usize << bits) + 1];
        for e in &entries {
            index[(e.key() >> (64 - bits)) as usize + 1] += 1;
        }
        for p in 1..index.len() {
            index[p] += index[p - 1];
        }

        DomainMatcher {
            index,
            bits,
            entries,
            sets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(rules: &[(&str, u8, Scope, bool)]) -> DomainMatcher {
        let mut b = MatcherBuilder::new();
        for &(n, s, scope, allow) in rules {
            b.insert(n, s, scope, allow);
        }
        b.build()
    }

    #[test]
    fn subtree_matches_name_and_children_only() {
        let m = build(&[("miui.com", 0, Scope::Subtree, false)]);
        assert_eq!(m.lookup_str("miui.com").block, 1);
        assert_eq!(m.lookup_str("tracking.miui.com").block, 1);
        assert_eq!(m.lookup_str("a.b.tracking.miui.com").block, 1);
        assert!(m.lookup_str("xmiui.com").is_empty());
        assert!(m.lookup_str("com").is_empty());
        assert!(m.lookup_str("miui.com.evil").is_empty());
    }

    #[test]
    fn exact_matches_only_the_name() {
        let m = build(&[("ads.example.net", 3, Scope::Exact, false)]);
        assert_eq!(m.lookup_str("ads.example.net").block, 1 << 3);
        assert!(m.lookup_str("x.ads.example.net").is_empty());
    }

    #[test]
    fn merges_every_matching_suffix_and_list() {
        let m = build(&[
            ("example.com", 0, Scope::Subtree, false),
            ("t.example.com", 1, Scope::Subtree, false),
            ("t.example.com", 2, Scope::Exact, false),
            ("ok.t.example.com", 5, Scope::Subtree, true),
        ]);
        let h = m.lookup_str("ok.t.example.com");
        assert_eq!(h.block, 0b011);
        assert_eq!(h.allow, 1 << 5);
        let h = m.lookup_str("t.example.com");
        assert_eq!(h.block, 0b111);
    }

    #[test]
    fn label_boundaries_matter() {
        // "a.bc" and "ab.c" have the same bytes but different labels.
        let m = build(&[("a.bc", 0, Scope::Subtree, false)]);
        assert!(m.lookup_str("ab.c").is_empty());
        assert!(m.lookup_str("abc").is_empty());
    }

    #[test]
    fn long_labels_hash_every_byte() {
        let a = "abcdefghijklmnopqrstuvwxyz0123456789-abcdefghij.example";
        let b = "abcdefghijklmnopqrstuvwxyz0123456789-abcdefghik.example";
        let m = build(&[(a, 0, Scope::Exact, false)]);
        assert!(!m.lookup_str(a).is_empty());
        assert!(m.lookup_str(b).is_empty());
    }

    #[test]
    fn many_names_all_found_and_compact() {
        let mut b = MatcherBuilder::new();
        for i in 0..200_000u32 {
            b.insert(
                &format!("host{i}.example{}.com", i % 97),
                (i % 3) as u8,
                Scope::Subtree,
                false,
            );
        }
        let m = b.build();
        assert_eq!(m.len(), 200_000);
        for i in (0..200_000u32).step_by(7) {
            let h = m.lookup_str(&format!("x.host{i}.example{}.com", i % 97));
            assert_eq!(h.block, 1 << (i % 3), "{i}");
        }
        assert!(m.lookup_str("host200001.example1.com").is_empty());
        let per_entry = m.heap_bytes() as f64 / m.len() as f64;
        assert!(per_entry <= 16.0, "{per_entry} bytes per entry");
    }

    #[test]
    fn repeated_rules_merge_into_one_entry() {
        let mut b = MatcherBuilder::new();
        for i in 0..1000u32 {
            b.insert("dup.example", (i % 4) as u8, Scope::Subtree, i % 8 == 7);
            b.insert(&format!("n{i}.example"), 1, Scope::Exact, false);
        }
        let m = b.build();
        assert_eq!(m.len(), 1001);
        let h = m.lookup_str("x.dup.example");
        assert_eq!(h.block, 0b1111);
        assert_eq!(h.allow, 1 << 3);
        assert_eq!(m.lookup_str("n999.example").block, 1 << 1);
        assert!(m.lookup_str("x.n999.example").is_empty());
    }

    #[test]
    fn empty_matcher_matches_nothing() {
        let m = MatcherBuilder::new().build();
        assert!(m.lookup_str("a.b").is_empty());
        let m = DomainMatcher::default();
        assert!(m.lookup_str("a.b").is_empty());
    }
}
