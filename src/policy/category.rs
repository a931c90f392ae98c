//! Categories: the names that lists are tagged with ("telemetry", "xiaomi", ...) and that
//! groups block or observe. A policy interns them into small indexes so that a query's matched
//! categories fit in one machine word pair and cost nothing to carry around.

use std::fmt;
use std::sync::Arc;

/// The most distinct categories one configuration may define.
pub const MAX_CATEGORIES: usize = 128;

/// Built-in category of the bypass defences (DoH canary, iCloud Private Relay, DDR).
pub const BYPASS: &str = "bypass";

/// Built-in category of rebinding protection: public names answered with private addresses.
pub const REBIND: &str = "rebind";

/// Index of a category in a [`CategoryTable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Category(pub u8);

/// A set of categories (a bitset over a [`CategoryTable`]'s indexes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CategorySet(u128);

impl CategorySet {
    pub const EMPTY: CategorySet = CategorySet(0);

    pub fn single(c: Category) -> Self {
        CategorySet(1u128 << c.0)
    }
    pub fn insert(&mut self, c: Category) {
        self.0 |= 1u128 << c.0;
    }
    pub fn contains(self, c: Category) -> bool {
        self.0 & (1u128 << c.0) != 0
    }
    pub fn union(self, other: CategorySet) -> CategorySet {
        CategorySet(self.0 | other.0)
    }
    pub fn intersection(self, other: CategorySet) -> CategorySet {
        CategorySet(self.0 & other.0)
    }
    pub fn intersects(self, other: CategorySet) -> bool {
        self.0 & other.0 != 0
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }
    pub fn iter(self) -> impl Iterator<Item = Category> {
        let mut bits = self.0;
        std::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let i = bits.trailing_zeros();
            bits &= bits - 1;
            Some(Category(i as u8))
        })
    }
}

/// The category names of one policy generation, by index.
#[derive(Clone, Debug, Default)]
pub struct CategoryTable {
    names: Vec<Arc<str>>,
}

impl CategoryTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Index of `name`, adding it if new. `None` when the table is full.
    pub fn intern(&mut self, name: &str) -> Option<Category> {
        if let Some(c) = self.get(name) {
            return Some(c);
        }
        if self.names.len() >= MAX_CATEGORIES {
            return None;
        }
        self.names.push(Arc::from(name));
        Some(Category((self.names.len() - 1) as u8))
    }

    pub fn get(&self, name: &str) -> Option<Category> {
        self.names
            .iter()
            .position(|n| &**n == name)
            .map(|i| Category(i as u8))
    }

    pub fn name(&self, c: Category) -> &Arc<str> {
        &self.names[c.0 as usize]
    }

    pub fn names(&self, set: CategorySet) -> impl Iterator<Item = &Arc<str>> {
        set.iter().map(|c| self.name(c))
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn all(&self) -> impl Iterator<Item = (Category, &Arc<str>)> {
        self.names
            .iter()
            .enumerate()
            .map(|(i, n)| (Category(i as u8), n))
    }
}

/// What a client's group does with a query that matched a category.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Answered with the sinkhole answer.
    Blocked,
    /// Answered normally, but recorded as a telemetry attempt.
    Observed,
    /// Answered normally: an allow exception matched, or the group neither blocks nor observes
    /// the category. Still noted.
    Allowed,
}

impl Action {
    /// The label value used in metrics and the query log.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Blocked => "blocked",
            Action::Observed => "observed",
            Action::Allowed => "allowed",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_operations() {
        let mut t = CategoryTable::new();
        let a = t.intern("telemetry").unwrap();
        let b = t.intern("xiaomi").unwrap();
        assert_eq!(t.intern("telemetry"), Some(a));
        let mut s = CategorySet::EMPTY;
        s.insert(b);
        assert!(s.contains(b) && !s.contains(a));
        assert_eq!(s.union(CategorySet::single(a)).len(), 2);
        let names: Vec<_> = t
            .names(s.union(CategorySet::single(a)))
            .map(|n| n.to_string())
            .collect();
        assert_eq!(names, ["telemetry", "xiaomi"]);
    }

    #[test]
    fn table_is_bounded() {
        let mut t = CategoryTable::new();
        for i in 0..MAX_CATEGORIES {
            assert!(t.intern(&format!("c{i}")).is_some());
        }
        assert!(t.intern("one-too-many").is_none());
    }
}
