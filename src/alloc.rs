//! glibc allocator tuning: what keeps telesink's resident size near that of one policy and
//! its queries, whatever it went through (reloads of big lists, bursts of queries in flight).
//! Elsewhere (musl, other systems) these do nothing.

/// Called once at start, before any thread: caps the arenas and gives big buffers pages of their
/// own.
///
/// - Arenas, one per core: glibc's default (8 per core) gives every UDP listener and runtime
///   worker an arena of its own; after a burst of queries in flight (an upstream outage) each
///   keeps a few hundred KB of pages that `malloc_trim` cannot return, since a few live blocks
///   sit among them. Soak (bench/soak.sh, 2 cores): 7 arenas kept +0.9 MB after a 5 s outage;
///   2 arenas kept none in a 3 min run (the spike's free blocks are reused).
/// - mmap threshold fixed at 1 MB: big buffers (the matcher's arrays) go back to the system
///   when freed. Without it glibc raises the threshold after the first big free and later
///   reloads build inside an arena that keeps the pages (1M names: 22 MB resident after start,
///   52 MB after any reload; with it, back to the start figure).
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        // SAFETY: mallopt only changes allocator tuning; any positive count or threshold is
        // valid.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, cores.min(i32::MAX as usize) as i32);
            libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        }
    }
}

/// Gives free heap memory back to the system: after a reload, so that the resident size is that
/// of one policy, not of the largest ever built.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap memory; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
