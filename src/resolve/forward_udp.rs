//! The UDP fast path's transport (issue 17): one listener thread's queries to plain DNS
//! upstreams, on sockets the thread owns and waits on together with its client socket, so a
//! forwarded query costs a `send` and a share of a batched receive, with no task, no channel
//! and no socket of its own.
//!
//! Why not hickory-resolver's pool here: it opens, binds and registers a fresh socket for every
//! query and answers on a tokio worker, which cost ~10x the CPU of the rest of a forwarded query
//! (bench/RESULTS.md, issue 17). hickory stays the general path: TCP on truncation, DoT, DoH,
//! DNSSEC, and every attempt after a first one failed.
//!
//! Spoofing (RFC 5452): each upstream gets a few connected sockets on kernel-chosen (random)
//! ports, one picked at random per query and replaced after [`QUERIES_PER_SOCKET`] queries,
//! so the source port keeps moving; query IDs come from a CSPRNG. A connected socket only
//! receives from its upstream's address and port; an answer is taken only when its ID is one in
//! flight on that socket AND its question is the one sent (name case-insensitively, type and
//! class exactly). Anything else is dropped.
//!
//! This module knows DNS framing and sockets, not the handler: what a query needs when its
//! answer comes is the caller's `T`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use super::wire::HEADER;

/// Sockets per upstream per listener thread: a forger must guess the port among these as well
/// as the ID.
pub const SOCKETS_PER_UPSTREAM: usize = 8;
/// Queries sent on one socket before it is replaced by one on a fresh port.
pub const QUERIES_PER_SOCKET: u32 = 512;
/// The EDNS payload size we offer upstreams (as hickory's pools do: the DNS flag day figure).
const EDNS_PAYLOAD: u16 = 1232;
/// Largest upstream datagram read.
const RECV_BUFFER: usize = 4096;
/// Datagrams read from one socket per wake-up, so one busy upstream cannot starve the clients.
const RECV_PER_WAKE: usize = 64;

struct Sock<T> {
    socket: UdpSocket,
    /// Queries sent on it so far.
    sent: u32,
    /// No new queries: it waits only for the answers still in flight, then closes.
    retiring: bool,
    /// Queries in flight on this socket, by ID.
    flights: HashMap<u16, Flight<T>>,
}

struct Flight<T> {
    /// The query as sent (header, question, OPT): the answer's question is checked against it.
    sent: Box<[u8]>,
    give_up: Instant,
    data: T,
}

/// One listener thread's queries to its upstreams.
pub struct ForwardUdp<T> {
    /// Sockets by slot; a slot is reused once its socket has closed.
    socks: Vec<Option<Sock<T>>>,
    /// Each upstream's open (not retiring) sockets, by slot.
    pools: HashMap<SocketAddr, Vec<usize>>,
    /// When each query gives up: (time, slot, ID). Entries whose query was answered are
    /// skipped when they come up.
    timers: BinaryHeap<Reverse<(Instant, usize, u16)>>,
    in_flight: usize,
    pollfds: Vec<libc::pollfd>,
    /// The slot of each `pollfds` entry after the first (the client socket's).
    poll_slots: Vec<usize>,
    buf: Box<[u8]>,
}

impl<T> Default for ForwardUdp<T> {
    fn default() -> Self {
        ForwardUdp {
            socks: Vec::new(),
            pools: HashMap::new(),
            timers: BinaryHeap::new(),
            in_flight: 0,
            pollfds: Vec::new(),
            poll_slots: Vec::new(),
            buf: vec![0u8; RECV_BUFFER].into_boxed_slice(),
        }
    }
}

/// What the wait saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    /// The client socket has datagrams.
    pub client: bool,
}

impl<T> ForwardUdp<T> {
    /// Queries waiting for an answer.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Sends `question` (the client's question section: name in its case, type, class) to
    /// `upstream` with a fresh ID from a random socket. `data` comes back with the answer, or
    /// at `give_up`. On a send error `data` is returned: the caller takes the general path.
    pub fn send(
        &mut self,
        upstream: SocketAddr,
        question: &[u8],
        give_up: Instant,
        data: T,
    ) -> Result<(), T> {
        let Some(slot) = self.pick(upstream) else {
            return Err(data);
        };
        let sock = self.socks[slot].as_mut().expect("pool slots hold sockets");
        // A fresh random ID not in flight on this socket (at most a few tries: a socket has
        // at most QUERIES_PER_SOCKET in flight out of 65536).
        let id = loop {
            let id: u16 = rand::random();
            if !sock.flights.contains_key(&id) {
                break id;
            }
        };
        let mut q = Vec::with_capacity(HEADER + question.len() + 11);
        q.extend_from_slice(&id.to_be_bytes());
        // RD; qd = 1, an = ns = 0, ar = 1 (the OPT).
        q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1]);
        q.extend_from_slice(question);
        // OPT: root owner, type 41, payload size, extended rcode/version/flags 0 (no DO: as
        // hickory asks when not validating), no options.
        q.extend_from_slice(&[0, 0, 41]);
        q.extend_from_slice(&EDNS_PAYLOAD.to_be_bytes());
        q.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        if let Err(e) = sock.socket.send(&q) {
            tracing::debug!(%upstream, error = %e, "fast path: upstream send failed");
            return Err(data);
        }
        sock.sent += 1;
        sock.flights.insert(
            id,
            Flight {
                sent: q.into_boxed_slice(),
                give_up,
                data,
            },
        );
        self.in_flight += 1;
        self.timers.push(Reverse((give_up, slot, id)));
        if sock.sent >= QUERIES_PER_SOCKET {
            // Its port has been seen often enough: new queries go to a fresh one.
            sock.retiring = true;
            if let Some(pool) = self.pools.get_mut(&upstream) {
                pool.retain(|&s| s != slot);
            }
        }
        Ok(())
    }

    /// A random open socket to `upstream`, opening sockets up to [`SOCKETS_PER_UPSTREAM`].
    fn pick(&mut self, upstream: SocketAddr) -> Option<usize> {
        let open = self.pools.get(&upstream).map_or(0, Vec::len);
        if open < SOCKETS_PER_UPSTREAM {
            match connect(upstream) {
                Ok(socket) => {
                    let sock = Sock {
                        socket,
                        sent: 0,
                        retiring: false,
                        flights: HashMap::new(),
                    };
                    let slot = match self.socks.iter().position(Option::is_none) {
                        Some(free) => {
                            self.socks[free] = Some(sock);
                            free
                        }
                        None => {
                            self.socks.push(Some(sock));
                            self.socks.len() - 1
                        }
                    };
                    self.pools.entry(upstream).or_default().push(slot);
                    // The new one takes this query: it is as random as any other.
                    return Some(slot);
                }
                Err(e) => {
                    tracing::debug!(%upstream, error = %e, "fast path: cannot open a socket");
                    if open == 0 {
                        return None;
                    }
                }
            }
        }
        let pool = self.pools.get(&upstream)?;
        Some(pool[rand::random_range(0..pool.len())])
    }

    /// Waits until the client socket (`client`, `None` to leave it out) or an upstream socket
    /// has datagrams, a query's time runs out, or `max` has passed.
    pub fn wait(&mut self, client: Option<RawFd>, max: Duration) -> Ready {
        self.pollfds.clear();
        self.poll_slots.clear();
        self.pollfds.push(libc::pollfd {
            fd: client.unwrap_or(-1),
            events: libc::POLLIN,
            revents: 0,
        });
        for (slot, sock) in self.socks.iter().enumerate() {
            if let Some(sock) = sock {
                self.pollfds.push(libc::pollfd {
                    fd: sock.socket.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
                self.poll_slots.push(slot);
            }
        }
        let mut timeout = max;
        if let Some(Reverse((at, _, _))) = self.timers.peek() {
            timeout = timeout.min(at.saturating_duration_since(Instant::now()));
        }
        // Rounded up: a wake-up a little late is harmless, a busy loop before it is not.
        let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
        // SAFETY: `pollfds` is a live array of the length given.
        let n = unsafe {
            libc::poll(
                self.pollfds.as_mut_ptr(),
                self.pollfds.len() as libc::nfds_t,
                ms,
            )
        };
        if n <= 0 {
            for p in &mut self.pollfds {
                p.revents = 0;
            }
        }
        Ready {
            client: client.is_some() && self.pollfds[0].revents != 0,
        }
    }

    /// Reads what the last [`wait`](Self::wait) found on the upstream sockets: each answer
    /// that matches a query in flight goes to `answered` with the query's data and the answer's
    /// bytes; everything else is dropped. When the upstream refused a socket's datagrams (ICMP
    /// port unreachable: nothing listens there), every query in flight on it goes to
    /// `answered` with `Err`, so that they need not wait for their timeout.
    pub fn receive(&mut self, mut answered: impl FnMut(T, Result<&[u8], std::io::Error>)) {
        for k in 0..self.poll_slots.len() {
            if self.pollfds[k + 1].revents == 0 {
                continue;
            }
            let slot = self.poll_slots[k];
            for _ in 0..RECV_PER_WAKE {
                let Some(sock) = self.socks[slot].as_mut() else {
                    break;
                };
                let n = match sock.socket.recv(&mut self.buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        // Which query drew the ICMP error is unknown: all of the socket's
                        // queries fail now, as each would have on a socket of its own.
                        let flights: Vec<Flight<T>> =
                            sock.flights.drain().map(|(_, f)| f).collect();
                        self.in_flight -= flights.len();
                        for f in flights {
                            let e = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
                            answered(f.data, Err(e));
                        }
                        self.close_if_done(slot);
                        continue;
                    }
                    Err(e) => {
                        // ICMP port unreachable and the like: the query times out (and the
                        // general path tries the others).
                        tracing::debug!(error = %e, "fast path: upstream receive error");
                        continue;
                    }
                };
                let answer = &self.buf[..n];
                let Some(id) = answer.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
                    continue;
                };
                let Some(flight) = sock.flights.get(&id) else {
                    continue;
                };
                if !matches_query(&flight.sent, answer) {
                    tracing::debug!("fast path: answer with a wrong question dropped");
                    continue;
                }
                let flight = sock.flights.remove(&id).expect("looked up above");
                self.in_flight -= 1;
                answered(flight.data, Ok(answer));
                self.close_if_done(slot);
            }
        }
    }

    /// Hands every query whose time ran out by `now` to `expired`.
    pub fn expire(&mut self, now: Instant, mut expired: impl FnMut(T)) {
        while let Some(&Reverse((at, slot, id))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(sock) = self.socks[slot].as_mut() else {
                continue;
            };
            // The same ID may be in flight again (a later query): only its own timer counts.
            if sock.flights.get(&id).is_none_or(|f| f.give_up != at) {
                continue;
            }
            let flight = sock.flights.remove(&id).expect("looked up above");
            self.in_flight -= 1;
            expired(flight.data);
            self.close_if_done(slot);
        }
    }

    fn close_if_done(&mut self, slot: usize) {
        if self.socks[slot]
            .as_ref()
            .is_some_and(|s| s.retiring && s.flights.is_empty())
        {
            self.socks[slot] = None;
        }
    }
}

/// Whether `answer` answers `sent`: a response (QR), one question, the same name (ASCII case
/// ignored: upstreams may not echo the case) and the same type and class. The ID was matched
/// already.
fn matches_query(sent: &[u8], answer: &[u8]) -> bool {
    let question = &sent[HEADER..sent.len() - 11];
    let Some(got) = answer.get(HEADER..HEADER + question.len()) else {
        return false;
    };
    let name = question.len() - 4;
    answer[2] & 0x80 != 0
        && answer[4..6] == [0, 1]
        && got[..name].eq_ignore_ascii_case(&question[..name])
        && got[name..] == question[name..]
}

/// A non-blocking UDP socket on a kernel-chosen port, connected to `upstream` (so the kernel
/// drops datagrams from any other source).
fn connect(upstream: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(
        Domain::for_address(upstream),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    socket.set_nonblocking(true)?;
    socket.set_cloexec(true)?;
    socket.connect(&upstream.into())?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &[u8], qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 1];
        q.extend_from_slice(name);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&[0, 1]);
        q.extend_from_slice(&[0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0]);
        q
    }

    #[test]
    fn an_answer_must_repeat_the_question() {
        let sent = query(b"\x03Foo\x07example\x00", 1);
        let mut answer = query(b"\x03fOO\x07EXAMPLE\x00", 1);
        answer[2] |= 0x80;
        assert!(matches_query(&sent, &answer));
        // Not a response.
        assert!(!matches_query(&sent, &query(b"\x03foo\x07example\x00", 1)));
        // Another name, another type, a type that differs only in "case" (0x41 vs 0x61).
        for wrong in [
            query(b"\x03bar\x07example\x00", 1),
            query(b"\x03foo\x07example\x00", 28),
        ] {
            let mut a = wrong;
            a[2] |= 0x80;
            assert!(!matches_query(&sent, &a));
        }
        let sent = query(b"\x03foo\x00", 0x41);
        let mut a = query(b"\x03foo\x00", 0x61);
        a[2] |= 0x80;
        assert!(!matches_query(&sent, &a));
        // Cut short, or no question.
        let mut short = answer.clone();
        short.truncate(14);
        assert!(!matches_query(&query(b"\x03Foo\x07example\x00", 1), &short));
        let mut none = answer;
        none[5] = 0;
        assert!(!matches_query(&query(b"\x03Foo\x07example\x00", 1), &none));
    }
}
