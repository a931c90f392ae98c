//! Thread priorities: background work (the query-log writer, a reload's policy build) runs in
//! Linux's `SCHED_IDLE` class, so that on a busy core the DNS threads get the CPU first. Lowering
//! a thread's own priority needs no privilege (the systemd unit allows `sched_setscheduler`).

/// Moves the calling thread to `SCHED_IDLE`; `what` names it in the debug log if that fails.
pub fn background(what: &str) {
    set(libc::SCHED_IDLE, what);
}

/// Moves the calling thread back to the normal class (for pool threads that did background
/// work and go on to other jobs).
pub fn normal(what: &str) {
    set(libc::SCHED_OTHER, what);
}

/// `SCHED_IDLE` for as long as it lives, then back to normal: for work on a shared pool thread.
pub struct Background(&'static str);

impl Background {
    pub fn enter(what: &'static str) -> Background {
        background(what);
        Background(what)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        normal(self.0);
    }
}

/// Gives the core to any other runnable thread. For long loops in background work: the kernel
/// here did not always preempt a `SCHED_IDLE` thread at once when a DNS thread woke (query-log
/// writer: p99 at 20k qps on one shared core 3.5 ms without yields, 0.15 ms with them).
pub fn yield_now() {
    std::thread::yield_now();
}

fn set(policy: libc::c_int, what: &str) {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is this thread; `param` is valid for SCHED_IDLE and SCHED_OTHER.
    let r = unsafe { libc::sched_setscheduler(0, policy, &param) };
    if r != 0 {
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "cannot change the scheduling class of the {what}"
        );
    }
}
