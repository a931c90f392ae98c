//! The UDP fast path's handler side (issue 17): a query the direct path decided to forward is
//! sent to its first upstream by the listener thread itself ([`ForwardUdp`]), and the answer,
//! read on that thread, is judged as the general path judges one (cache, cloaking, rebinding,
//! the addresses learner, metrics and query log: [`Handler::judge`]) and written by the direct
//! encoder, as a cache hit would be. An address answer (A/AAAA records of the question name)
//! is judged from its bytes and cached as they came (`CachedWire::address_answer`); any other
//! is decoded by hickory first, as the general path's are.
//!
//! Whatever this path does not do goes on along the general path, with what is known so far
//! ([`Fast::General`]): a truncated answer (hickory asks again and retries over TCP), an error
//! code or a timeout (the other upstreams, then serve-stale, then SERVFAIL: the upstream asked
//! is not asked again), and an answer the direct encoder cannot write within the client's size
//! (hickory's encoder truncates it).

use super::*;
use crate::resolve::cache::{sections, QName};
use crate::resolve::forward_udp::ForwardUdp;
use crate::resolve::wire::{OwnedQuery, WireQuery, MAX_NAME};
use hickory_proto::rr::Name;

/// A query waiting for its first upstream's answer on the fast path.
pub struct Flight {
    pending: Box<Pending>,
    /// The client's datagram, as parsed.
    query: OwnedQuery,
    src: SocketAddr,
    upstream: usize,
    asked: Instant,
    deadline: Instant,
}

/// What became of a fast-path query.
pub enum Fast {
    /// Answered: the answer was appended to the buffer; it goes to this address.
    Answered(SocketAddr),
    /// The general path goes on with it ([`Handler::answer_wire_with`]).
    General {
        query: Vec<u8>,
        src: SocketAddr,
        pending: Box<Pending>,
    },
}

impl Handler {
    /// Queues a query the direct path passed on (`pending`, decided for `q` from `src`) for
    /// its first upstream on `fwd` (it leaves at the batch's flush), when the fast path can
    /// take it: a forward to `[upstream] servers` whose plan starts with a plain DNS upstream.
    /// Otherwise `pending` comes back for the general path (rate-limited already, if it was).
    pub fn forward_fast(
        &self,
        mut pending: Box<Pending>,
        q: &WireQuery<'_>,
        src: SocketAddr,
        fwd: &mut ForwardUdp<Flight>,
    ) -> Result<(), Box<Pending>> {
        if !matches!(
            pending.decision.answer,
            Answer::Forward {
                route: Route::Upstreams,
                ..
            }
        ) {
            return Err(pending);
        }
        if !pending.admitted {
            // The query is committed to being forwarded: its token is taken now, once.
            let p = &mut *pending;
            p.admitted = true;
            if !self.admit(&p.live, &p.client, &mut p.decision) {
                return Err(pending);
            }
        }
        let strategy = pending.live.upstream.strategy;
        // Only for a `fastest` probe, which hickory's pool sends.
        let probe_query = || {
            let name = Name::from_labels(q.labels()).unwrap_or_default();
            Query::query(name, q.qtype)
        };
        // The attempt's clock starts when the query came (the listener's batch time): its
        // round trip then counts the batch's work before the send too, a few microseconds.
        let started = pending.started;
        let Some(first) = self
            .inner
            .upstreams
            .first_plain(strategy, probe_query, started)
        else {
            return Err(pending);
        };
        let flight = Flight {
            pending,
            query: OwnedQuery::new(q),
            src,
            upstream: first.upstream,
            asked: first.started,
            deadline: first.deadline,
        };
        match fwd.queue(first.addr, q.question(), first.give_up, flight) {
            Ok(()) => {
                // Counted as the general path counts its queries: shutdown waits for it.
                self.inner.in_flight.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(flight) => Err(flight.pending),
        }
    }

    /// The upstream's answer (`bytes`, matched to the query already, read at `now`) for
    /// `flight`: judged, recorded and appended to `out`, or handed to the general path.
    pub fn fast_answered(
        &self,
        flight: Flight,
        bytes: &[u8],
        now: Instant,
        out: &mut Vec<u8>,
    ) -> Fast {
        self.inner.in_flight.fetch_sub(1, Ordering::Release);
        let Flight {
            mut pending,
            query,
            src,
            upstream,
            asked,
            deadline,
        } = flight;
        // Truncated (TC): hickory's pool asks again and retries over TCP.
        if bytes.get(2).is_some_and(|b| b & 0x02 != 0) {
            return Fast::General {
                query: query.into_bytes(),
                src,
                pending,
            };
        }
        // The datagram as parsed when it came.
        let q = query.get();
        // The cache key as the datagram has it; hickory's name only if an encoder needs it.
        let mut buf = [0u8; MAX_NAME];
        let name = QName::from_wire(q.lower_name(&mut buf));
        let upstreams = &self.inner.upstreams;
        // Cached and sent as the upstream wrote it: no re-encoding. An address answer (the
        // common shape) is judged from its bytes, so hickory's decoding is skipped; any other
        // is judged from hickory's decoding, as the general path judges it.
        let mut wire = CachedWire::from_upstream(bytes);
        let facts = wire.as_ref().and_then(CachedWire::address_answer);
        // One clock reading (the receive batch's) for the round trip, the upstream time, the
        // entry's age and the response time.
        let upstream_time = now.saturating_duration_since(asked);
        let mut fresh = None;
        if let (Some(facts), Some(w)) = (facts, wire.take()) {
            match self
                .inner
                .cache
                .insert_address(&name, q.qtype, w, facts, now)
            {
                Ok(entry) => {
                    upstreams.answered_plain(upstream, asked, upstream_time);
                    fresh = Some(Fresh::Cached(entry));
                }
                // Caching off, or TTL 0: decoded below, for the encoders.
                Err(w) => wire = Some(w),
            }
        }
        let fresh = match fresh {
            Some(fresh) => fresh,
            None => match upstreams.answered(upstream, bytes.to_vec(), asked) {
                Some(answer) => self.store(&name, q.qtype, answer, wire),
                None => {
                    // An error code or an undecodable answer (counted as such): the others.
                    pending.tried = Some(Tried { upstream, deadline });
                    return Fast::General {
                        query: query.into_bytes(),
                        src,
                        pending,
                    };
                }
            },
        };
        let Pending {
            live,
            client,
            decision,
            started,
            ..
        } = *pending;
        let Answer::Forward { stale, route } = decision.answer else {
            unreachable!("only forwards take the fast path")
        };
        let mut report = decision.report;
        report.upstream_time = Some(upstream_time);
        let (judged, report) = self.judge(&live, &client, &name, stale, route, Ok(fresh), report);
        let policy = &live.policy;
        let limit = q.limit(true, MAX_UDP_PAYLOAD);
        let start = out.len();
        let b = policy.blocking;
        let written = match &judged {
            Judged::Fresh(fresh) => match fresh.wire() {
                Some(wire) => wire.answer(&q, 0, limit, MAX_UDP_PAYLOAD, out),
                // Not cached (caching off, TTL 0): encoded for this answer only.
                None => CachedWire::encode(name.name(), q.qtype, sections(fresh.answer()))
                    .and_then(|w| w.answer(&q, 0, limit, MAX_UDP_PAYLOAD, out)),
            },
            Judged::Blocked => {
                let text = policy.block_text(&report.verdict);
                let mode = sinkhole(b.mode);
                encode_wire::blocked(&q, mode, b.ttl, &text, limit, MAX_UDP_PAYLOAD, out)
            }
            Judged::Rebind => encode_wire::blocked(
                &q,
                sinkhole(b.mode),
                b.ttl,
                rebind::TEXT,
                limit,
                MAX_UDP_PAYLOAD,
                out,
            ),
            Judged::Stale(_) | Judged::Failed(_) => None,
        };
        if written.is_some() {
            let rcode = ResponseCode::from(0, out[start + 3] & 0x0F);
            let transport = Origin::plain(Protocol::Udp).transport;
            self.record(
                policy,
                &client,
                q.text(),
                q.qtype,
                &report,
                rcode,
                now.saturating_duration_since(started),
                transport,
            );
            return Fast::Answered(src);
        }
        // Too large for the direct encoder within the client's size: hickory's encoder writes
        // (and truncates) what was settled.
        out.truncate(start);
        let reply = reply_for(
            policy,
            name.name(),
            q.qtype,
            judged,
            &report,
            Instant::now(),
        );
        let decision = Decision {
            answer: Answer::Forward { stale: None, route },
            report,
        };
        let pending = Box::new(Pending {
            live,
            client,
            decision,
            admitted: true,
            started,
            tried: None,
            settled: Some(Box::new((reply, report))),
        });
        Fast::General {
            query: query.into_bytes(),
            src,
            pending,
        }
    }

    /// `flight` could not be sent (the kernel refused it): the general path takes it from the
    /// start, as if the fast path had never had it.
    pub fn fast_unsent(&self, flight: Flight) -> Fast {
        self.inner.in_flight.fetch_sub(1, Ordering::Release);
        Fast::General {
            query: flight.query.into_bytes(),
            src: flight.src,
            pending: flight.pending,
        }
    }

    /// `flight`'s upstream refused the query (`error`: ICMP port unreachable): counted as an
    /// error, and the general path asks the others (or serves stale, or SERVFAIL).
    pub fn fast_failed(&self, flight: Flight, error: std::io::Error) -> Fast {
        self.inner.in_flight.fetch_sub(1, Ordering::Release);
        let Flight {
            mut pending,
            query,
            src,
            upstream,
            asked,
            deadline,
        } = flight;
        self.inner.upstreams.failed(upstream, error, asked);
        pending.tried = Some(Tried { upstream, deadline });
        Fast::General {
            query: query.into_bytes(),
            src,
            pending,
        }
    }

    /// `flight`'s upstream did not answer in its share of the time: counted as a timeout, and
    /// the general path asks the others (or serves stale, or SERVFAIL).
    pub fn fast_timed_out(&self, flight: Flight) -> Fast {
        self.inner.in_flight.fetch_sub(1, Ordering::Release);
        let Flight {
            mut pending,
            query,
            src,
            upstream,
            asked,
            deadline,
        } = flight;
        self.inner.upstreams.timed_out(upstream, asked);
        pending.tried = Some(Tried { upstream, deadline });
        Fast::General {
            query: query.into_bytes(),
            src,
            pending,
        }
    }
}
