//! Spoofed upstream answers (issue 17): for every query telesink forwards, a hostile upstream
//! first sends forged answers to the query's source address and port, each with a poisoned
//! address: a wrong message ID, a wrong question name, a wrong question type, from another port
//! of the upstream's address, and from the upstream's port on another address. Then the genuine
//! answer, or nothing. The client must get the genuine answer or a failure, never the poisoned
//! one, and the cache must hold only the genuine answer.
//!
//! Not tested: a forgery whose question differs from the query only in letter case. telesink's
//! upstream clients (the UDP fast path, `src/resolve/forward_udp.rs`, which these queries take,
//! and hickory-resolver with `case_randomization` off for the rest) compare questions
//! case-insensitively and do not randomise the case they send, so such a forgery with the right
//! ID and source is accepted: 0x20 gives no protection here, and this test does not claim any.

mod support;

use std::time::Duration;

use support::hostile::{Genuine, HostileUpstream, GENUINE_V4, POISON_V4};
use support::*;

/// Ask `name` A, expecting an answer; returns its A addresses.
fn ask_a(ts: &TelesinkProcess, x: u8, name: &str) -> Response {
    ts.query_with(client(x), name, RecordType::A, &QueryOpts::udp().edns(1232))
}

#[test]
fn forged_answers_are_ignored_and_the_genuine_one_is_served_and_cached() {
    let up = HostileUpstream::start();
    let ts = Telesink::new()
        .upstream_server(&up.addr().to_string())
        .timeout_ms(3000)
        .start();

    let names = [
        "victim.example.com",
        "bank.example.net",
        "Mixed.Case.Example.org",
    ];
    for (i, name) in names.iter().enumerate() {
        let r = ask_a(&ts, 10 + i as u8, name);
        assert_eq!(r.rcode(), ResponseCode::NoError, "{name}: {}", r.summary());
        assert_eq!(r.a(), vec![GENUINE_V4], "{name}: {}", r.summary());
        assert!(
            !r.a().contains(&POISON_V4),
            "{name} poisoned: {}",
            r.summary()
        );
        assert_eq!(up.seen(name), 1, "{name} forwarded once");
    }
    // Five forgeries per forwarded query were sent (none failed to go out).
    assert_eq!(up.forged(), 5 * names.len());

    // The cache holds the genuine answer: asked again (another client), the upstream is not
    // asked and the answer is still genuine.
    for (i, name) in names.iter().enumerate() {
        let r = ask_a(&ts, 20 + i as u8, name);
        assert_eq!(
            r.a(),
            vec![GENUINE_V4],
            "{name} from the cache: {}",
            r.summary()
        );
        assert_eq!(up.seen(name), 1, "{name} answered from the cache");
    }
}

#[test]
fn forged_answers_alone_never_make_an_answer() {
    let up = HostileUpstream::start();
    up.set_genuine(Genuine::Never);
    let ts = Telesink::new()
        .upstream_server(&up.addr().to_string())
        .timeout_ms(500)
        .start();

    let name = "timeout-victim.example.com";
    // Only forgeries arrive: the query fails (SERVFAIL, or no answer at all), never poisoned.
    let opts = QueryOpts::udp().edns(1232).timeout(Duration::from_secs(10));
    match try_query(ts.addr(), client(30), name, RecordType::A, &opts) {
        Ok(r) => {
            assert!(!r.a().contains(&POISON_V4), "poisoned: {}", r.summary());
            assert_eq!(r.rcode(), ResponseCode::ServFail, "{}", r.summary());
        }
        Err(e) => eprintln!("no answer (acceptable): {e}"),
    }
    assert!(up.seen(name) >= 1, "the query reached the upstream");
    assert!(up.forged() >= 5, "forgeries were sent");

    // Nothing forged was cached: once the upstream answers, the next query is forwarded again
    // and gets the genuine address.
    up.set_genuine(Genuine::Answer);
    let before = up.seen(name);
    let r = ask_a(&ts, 31, name);
    assert_eq!(r.a(), vec![GENUINE_V4], "{}", r.summary());
    assert!(
        up.seen(name) > before,
        "forwarded again, not served from a cache"
    );
}
