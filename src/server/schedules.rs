//! The schedule task: keeps each group's set of open `[[group.schedule]]`s right as time passes
//! (the query path reads it with one atomic load; see `policy::schedule`).
//!
//! It sleeps until the next window edge of the policy in force and recomputes there. A reload
//! builds its policy with the schedules open as of the build, and the task notices the new
//! policy within a second (it checks the pointer while it waits), so an edge that falls between
//! a reload and the next wake is late by a second at most.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use jiff::tz::TimeZone;
use jiff::Timestamp;

use crate::resolve::Live;

/// How often the task checks for a reloaded policy while it waits for an edge.
const POLL: Duration = Duration::from_secs(1);

pub async fn run(live: Arc<ArcSwap<Live>>) {
    loop {
        let current = live.load_full();
        // The system time zone is looked up again each time (jiff re-reads /etc/localtime
        // when it changed), so a changed zone applies from the next edge.
        let tz = TimeZone::system();
        let next = current.policy.refresh_schedules(Timestamp::now(), &tz);
        loop {
            let wait = match next {
                Some(at) => {
                    let left = at.duration_since(Timestamp::now());
                    if left.is_negative() || left.is_zero() {
                        break;
                    }
                    Duration::try_from(left).unwrap_or(POLL).min(POLL)
                }
                None => POLL,
            };
            tokio::time::sleep(wait).await;
            if !Arc::ptr_eq(&current, &live.load()) {
                break;
            }
        }
    }
}
