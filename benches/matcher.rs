//! Micro-benchmark of the policy matcher (issue 8): lookups per second at 100k and 1M names,
//! bytes per entry, and proof that a lookup never allocates.
//!
//!     cargo bench --bench matcher
//!
//! Before divan runs, `main` builds each matcher, prints `heap_bytes() / len()` and counts heap
//! allocations (a counting global allocator wraps the system one) across 1M lookups of blocked
//! names, subdomains of them and allowed names: the bench panics if that count is not zero.
//! It also prints the builder's peak heap (inserting every name, then `build`) per name: what
//! a reload adds to the resident size while the old policy keeps serving.
//! The names are synthetic and deterministic (fixed seed), like bench/gen.py's: registrable
//! names plus ~15% subdomain entries.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

use divan::counter::ItemsCount;
use divan::Bencher;
use telesink::policy::matcher::{DomainMatcher, MatcherBuilder, Scope};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
/// Heap bytes in use, and the most since the last reset.
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grow(n: usize) {
    let live = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        grow(l.size());
        System.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        grow(l.size());
        System.alloc_zeroed(l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        if n >= l.size() {
            grow(n - l.size());
        } else {
            LIVE.fetch_sub(l.size() - n, Ordering::Relaxed);
        }
        System.realloc(p, l, n)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        System.dealloc(p, l)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const SIZES: [usize; 2] = [100_000, 1_000_000];
/// Queries per benchmark iteration (cycled through a larger, random-order set).
const BATCH: usize = 4096;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[self.below(v.len())]
    }
}

const SYLL: &[&str] = &[
    "ba", "be", "bi", "bo", "ca", "co", "da", "de", "di", "fa", "fe", "ga", "go", "ha", "ho", "ka",
    "ke", "ki", "la", "le", "li", "lo", "ma", "me", "mi", "mo", "na", "ne", "ni", "pa", "pe", "pi",
    "ra", "re", "ri", "sa", "se", "si", "ta", "te", "ti", "va", "vi", "za", "an", "ar", "en", "er",
    "in", "on", "str", "tr", "cl", "pl", "br", "sh", "ch", "th", "st", "qu",
];
const TLDS: &[&str] = &[
    "com", "com", "com", "com", "net", "org", "io", "de", "cn", "ru", "co.uk", "info", "xyz", "app",
];
const WORDS: &[&str] = &[
    "ads",
    "track",
    "metrics",
    "stats",
    "telemetry",
    "log",
    "api",
    "sdk",
    "events",
    "data",
    "collect",
    "beacon",
    "analytics",
    "report",
    "crash",
];

fn registrable(r: &mut Rng) -> String {
    let mut s = String::new();
    for _ in 0..2 + r.below(4) {
        s.push_str(r.pick(SYLL));
    }
    if r.below(10) == 0 {
        s.push_str(&r.below(1000).to_string());
    }
    s.push('.');
    s.push_str(r.pick(TLDS));
    s
}

struct Fixture {
    matcher: DomainMatcher,
    /// Peak heap of the builder (inserts and `build`) over the heap before it.
    build_peak: usize,
    build_ms: f64,
    /// Half list entries, half random subdomains of entries.
    blocked: Vec<String>,
    /// Names in no list and under no entry.
    allowed: Vec<String>,
}

fn fixture(n: usize) -> &'static Fixture {
    static SMALL: OnceLock<Fixture> = OnceLock::new();
    static LARGE: OnceLock<Fixture> = OnceLock::new();
    let cell = if n == SIZES[0] { &SMALL } else { &LARGE };
    cell.get_or_init(|| build(n))
}

fn build(n: usize) -> Fixture {
    let mut r = Rng(0x8_u64.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut seen = std::collections::HashSet::with_capacity(n);
    let mut names: Vec<String> = Vec::with_capacity(n);
    let mut bases = 0usize;
    while names.len() < n {
        let name = if bases > 0 && r.below(100) < 15 {
            let base = names[r.below(names.len())].clone();
            format!("{}.{}", r.pick(WORDS), base)
        } else {
            registrable(&mut r)
        };
        if seen.insert(name.clone()) {
            bases += 1;
            names.push(name);
        }
    }
    let base = LIVE.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    let started = std::time::Instant::now();
    let mut b = MatcherBuilder::with_capacity(n);
    for name in &names {
        b.insert(name, 0, Scope::Subtree, false);
    }
    let matcher = b.build();
    let build_ms = started.elapsed().as_secs_f64() * 1e3;
    let build_peak = PEAK.load(Ordering::SeqCst) - base;

    let mut blocked = Vec::with_capacity(100_000);
    for i in 0..100_000 {
        let e = &names[r.below(names.len())];
        blocked.push(if i % 2 == 0 {
            e.clone()
        } else {
            format!("{}.{}", r.pick(WORDS), e)
        });
    }
    // Allowed: a different alphabet for the first label guarantees no list entry matches.
    let mut allowed = Vec::with_capacity(100_000);
    for _ in 0..100_000 {
        allowed.push(format!(
            "www.allowed{}-{}",
            r.below(1_000_000),
            registrable(&mut r)
        ));
    }
    Fixture {
        matcher,
        build_peak,
        build_ms,
        blocked,
        allowed,
    }
}

fn main() {
    for n in SIZES {
        let f = fixture(n);
        let m = &f.matcher;
        let bytes = m.heap_bytes();
        println!(
            "matcher {n:>9} names: len {}, heap {} bytes, {:.2} bytes per entry",
            m.len(),
            bytes,
            bytes as f64 / m.len() as f64
        );
        println!(
            "matcher {n:>9} names: build {:.0} ms, builder peak heap {} bytes, {:.2} bytes per name",
            f.build_ms,
            f.build_peak,
            f.build_peak as f64 / n as f64
        );

        // Correctness of the fixture: every blocked query matches, no allowed one does.
        assert!(f.blocked.iter().all(|q| m.lookup_str(q).block != 0));
        assert!(f.allowed.iter().all(|q| m.lookup_str(q).is_empty()));

        // No allocation per lookup: 1M lookups, zero allocations.
        let queries: Vec<&str> = f
            .blocked
            .iter()
            .zip(&f.allowed)
            .flat_map(|(a, b)| [a.as_str(), b.as_str()])
            .collect();
        let before = ALLOCS.load(Ordering::SeqCst);
        let mut hits = 0u64;
        for i in 0..1_000_000 {
            hits += (black_box(m)
                .lookup_str(black_box(queries[i % queries.len()]))
                .block
                != 0) as u64;
        }
        let allocs = ALLOCS.load(Ordering::SeqCst) - before;
        println!("matcher {n:>9} names: {allocs} allocations across 1000000 lookups ({hits} hits)");
        assert_eq!(allocs, 0, "DomainMatcher::lookup allocated");
    }
    divan::main();
}

fn run(bencher: Bencher, n: usize, pick: fn(&Fixture) -> &[String]) {
    let f = fixture(n);
    let qs = pick(f);
    let mut start = 0usize;
    bencher.counter(ItemsCount::new(BATCH)).bench_local(|| {
        let m = black_box(&f.matcher);
        let mut acc = 0u64;
        for i in 0..BATCH {
            acc ^= m.lookup_str(&qs[(start + i) % qs.len()]).block;
        }
        start = (start + BATCH) % qs.len();
        acc
    });
}

/// Blocked queries: half exact entries, half subdomains of entries.
#[divan::bench(args = SIZES)]
fn lookup_blocked(bencher: Bencher, n: usize) {
    run(bencher, n, |f| &f.blocked);
}

/// Allowed queries (three labels, no suffix in the list): every probe misses.
#[divan::bench(args = SIZES)]
fn lookup_allowed(bencher: Bencher, n: usize) {
    run(bencher, n, |f| &f.allowed);
}
