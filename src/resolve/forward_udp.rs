//! The UDP fast path's transport (issue 17): one listener thread's queries to plain DNS
//! upstreams, on sockets the thread owns and waits on together with its client socket, so a
//! forwarded query costs a share of a batched send and of a batched receive, with no task, no
//! channel and no socket of its own.
//!
//! Why not hickory-resolver's pool here: it opens, binds and registers a fresh socket for every
//! query and answers on a tokio worker, which cost ~10x the CPU of the rest of a forwarded query
//! (bench/RESULTS.md, issue 17). hickory stays the general path: TCP on truncation, DoT, DoH,
//! DNSSEC, and every attempt after a first one failed.
//!
//! Batching: the queries of one client batch are [`queue`](ForwardUdp::queue)d and leave on
//! [`flush`](ForwardUdp::flush), those for one upstream on one socket in one `sendmmsg`; a
//! readable socket is drained with `recvmmsg` ([`mmsg`]).
//!
//! Spoofing (RFC 5452): each upstream gets a few connected sockets on kernel-chosen (random)
//! ports, one picked at random per client batch and replaced after [`QUERIES_PER_SOCKET`]
//! queries, so the source port keeps moving; every query's ID comes from a CSPRNG. A forger off
//! the path must hit a port of the pool and an ID in flight on it: his odds per forged datagram
//! are (queries in flight) / (ports x 65536) whether the queries in flight share a socket or
//! are spread over all of them, so sending a batch from one socket costs no entropy; and a
//! socket still carries at most [`QUERIES_PER_SOCKET`] queries in its life. A connected socket
//! only receives from its upstream's address and port; an answer is taken only when its ID is
//! one in flight on that socket AND its question is the one sent (name case-insensitively, type
//! and class exactly). Anything else is dropped.
//!
//! This module knows DNS framing and sockets, not the handler: what a query needs when its
//! answer comes is the caller's `T`.

mod mmsg;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use super::wire::HEADER;
use mmsg::{RecvMany, SendMany, BATCH};

/// Sockets per upstream per listener thread: a forger must guess the port among these as well
/// as the ID.
pub const SOCKETS_PER_UPSTREAM: usize = 8;
/// Queries sent on one socket before it is replaced by one on a fresh port.
pub const QUERIES_PER_SOCKET: u32 = 512;
/// The EDNS payload size we offer upstreams (as hickory's pools do: the DNS flag day figure).
const EDNS_PAYLOAD: u16 = 1232;
/// `recvmmsg` calls on one socket per wake-up, so one busy upstream cannot starve the clients.
const RECVS_PER_WAKE: usize = 2;

/// Hashes a query ID for a socket's flights. The IDs are ours, from a CSPRNG: nobody outside
/// chooses the keys inserted (a forged answer's ID only looks one up), so SipHash's defence
/// against chosen keys buys nothing, and a multiply spreads random IDs well.
#[derive(Default)]
struct IdHasher(u64);

/// 2^64 / the golden ratio, odd: multiplying by it fills the high bits (which hashbrown's
/// control bytes use) from every bit of the ID.
const FIBONACCI: u64 = 0x9E37_79B9_7F4A_7C15;

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u16` keys are hashed (`write_u16`); this is the general fallback.
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(FIBONACCI);
        }
    }

    fn write_u16(&mut self, id: u16) {
        self.0 = u64::from(id).wrapping_mul(FIBONACCI);
    }
}

type Flights<T> = HashMap<u16, Flight<T>, BuildHasherDefault<IdHasher>>;

struct Sock<T> {
    socket: UdpSocket,
    /// Queries sent on it so far (queued ones included).
    sent: u32,
    /// No new queries: it waits only for the answers still in flight, then closes.
    retiring: bool,
    /// Queries in flight on this socket, by ID.
    flights: Flights<T>,
    /// IDs of the flights queued but not sent yet, in order.
    queued: Vec<u16>,
}

struct Flight<T> {
    /// The query as sent (header, question, OPT): the answer's question is checked against it.
    sent: Box<[u8]>,
    give_up: Instant,
    data: T,
}

/// When each query gives up: (time, slot, ID). Entries whose query was answered are skipped
/// when they come up.
#[derive(Default)]
struct Timers {
    /// In order of time: a query's time is its start plus a share of the timeout, so it nearly
    /// always comes after the last one's, and pushing and popping here cost O(1).
    in_order: VecDeque<(Instant, usize, u16)>,
    /// The few that come earlier than the last one queued (the timeout or the number of
    /// upstreams changed with a reload).
    early: BinaryHeap<Reverse<(Instant, usize, u16)>>,
}

impl Timers {
    fn push(&mut self, at: Instant, slot: usize, id: u16) {
        if self.in_order.back().is_none_or(|last| last.0 <= at) {
            self.in_order.push_back((at, slot, id));
        } else {
            self.early.push(Reverse((at, slot, id)));
        }
    }

    fn next(&self) -> Option<Instant> {
        let a = self.in_order.front().map(|t| t.0);
        let b = self.early.peek().map(|Reverse(t)| t.0);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next timer due by `now`, taken out.
    fn pop_due(&mut self, now: Instant) -> Option<(Instant, usize, u16)> {
        if self.in_order.front().is_some_and(|t| t.0 <= now) {
            return self.in_order.pop_front();
        }
        if self.early.peek().is_some_and(|Reverse(t)| t.0 <= now) {
            return self.early.pop().map(|Reverse(t)| t);
        }
        None
    }
}

/// One listener thread's queries to its upstreams.
pub struct ForwardUdp<T> {
    /// Sockets by slot; a slot is reused once its socket has closed.
    socks: Vec<Option<Sock<T>>>,
    /// Each upstream's open (not retiring) sockets, by slot.
    /// Keyed by the configuration's upstreams (no client chooses them): foldhash, not SipHash,
    /// which cost ~200 instructions a lookup, twice per query at a home network's rates.
    pools: foldhash::HashMap<SocketAddr, Vec<usize>>,
    /// The socket each upstream's queries take in the current batch.
    batch: Vec<(SocketAddr, usize)>,
    /// Slots with queued queries, for [`flush`](Self::flush).
    queued: Vec<usize>,
    timers: Timers,
    in_flight: usize,
    pollfds: Vec<libc::pollfd>,
    /// The slot of each `pollfds` entry after the first (the client socket's).
    poll_slots: Vec<usize>,
    recv: RecvMany,
    send: SendMany,
    /// Indexes (in the socket's queue) of the queries the kernel refused in a flush.
    refused: Vec<usize>,
}

impl<T> Default for ForwardUdp<T> {
    fn default() -> Self {
        ForwardUdp {
            socks: Vec::new(),
            pools: foldhash::HashMap::default(),
            batch: Vec::new(),
            queued: Vec::new(),
            timers: Timers::default(),
            in_flight: 0,
            pollfds: Vec::new(),
            poll_slots: Vec::new(),
            recv: RecvMany::default(),
            send: SendMany::default(),
            refused: Vec::new(),
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
    /// Queries waiting for an answer (queued ones included).
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Queues `question` (the client's question section: name in its case, type, class) for
    /// `upstream` with a fresh ID, on the socket this batch uses for `upstream`; it leaves at the
    /// next [`flush`](Self::flush). `data` comes back with the answer, or at `give_up`. When no
    /// socket can be opened `data` is returned: the caller takes the general path.
    pub fn queue(
        &mut self,
        upstream: SocketAddr,
        question: &[u8],
        give_up: Instant,
        data: T,
    ) -> Result<(), T> {
        let Some(slot) = self.batch_socket(upstream) else {
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
        sock.sent += 1;
        sock.flights.insert(
            id,
            Flight {
                sent: q.into_boxed_slice(),
                give_up,
                data,
            },
        );
        if sock.queued.is_empty() {
            self.queued.push(slot);
        }
        sock.queued.push(id);
        self.in_flight += 1;
        self.timers.push(give_up, slot, id);
        if sock.sent >= QUERIES_PER_SOCKET {
            // Its port has been seen often enough: new queries go to a fresh one.
            sock.retiring = true;
            if let Some(pool) = self.pools.get_mut(&upstream) {
                pool.retain(|&s| s != slot);
            }
        }
        Ok(())
    }

    /// Sends every query queued since the last flush: one `sendmmsg` per socket. A query the
    /// kernel refused goes to `unsent` (the caller takes the general path with it).
    pub fn flush(&mut self, mut unsent: impl FnMut(T)) {
        self.batch.clear();
        let mut slots = std::mem::take(&mut self.queued);
        for &slot in &slots {
            let Some(sock) = self.socks[slot].as_mut() else {
                continue;
            };
            let ids = std::mem::take(&mut sock.queued);
            {
                let flights = &sock.flights;
                let datagrams = ids.iter().map(|id| &*flights[id].sent);
                let refused = &mut self.refused;
                self.send
                    .send_all(sock.socket.as_raw_fd(), datagrams, |i, e| {
                        tracing::debug!(error = %e, "fast path: upstream send failed");
                        refused.push(i);
                    });
            }
            for i in self.refused.drain(..) {
                if let Some(f) = sock.flights.remove(&ids[i]) {
                    self.in_flight -= 1;
                    unsent(f.data);
                }
            }
            // Keeps the allocation for the next batch.
            sock.queued = ids;
            sock.queued.clear();
            self.close_if_done(slot);
        }
        slots.clear();
        self.queued = slots;
    }

    /// The socket `upstream`'s queries take in this batch: the one already chosen, unless it
    /// has been retired since; else a random one of the pool.
    fn batch_socket(&mut self, upstream: SocketAddr) -> Option<usize> {
        let socks = &self.socks;
        let chosen = self
            .batch
            .iter()
            .find(|&&(a, slot)| a == upstream && socks[slot].as_ref().is_some_and(|s| !s.retiring));
        if let Some(&(_, slot)) = chosen {
            return Some(slot);
        }
        let slot = self.pick(upstream)?;
        self.batch.retain(|&(a, _)| a != upstream);
        self.batch.push((upstream, slot));
        Some(slot)
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
                        flights: Flights::default(),
                        queued: Vec::new(),
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
        if let Some(at) = self.timers.next() {
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
            for _ in 0..RECVS_PER_WAKE {
                let Some(sock) = self.socks[slot].as_mut() else {
                    break;
                };
                let n = match self.recv.recv(sock.socket.as_raw_fd()) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        // Which query drew the ICMP error is unknown: all of the socket's
                        // queries fail now, as each would have on a socket of its own.
                        let flights: Vec<Flight<T>> =
                            sock.flights.drain().map(|(_, f)| f).collect();
                        sock.queued.clear();
                        self.in_flight -= flights.len();
                        for f in flights {
                            let e = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
                            answered(f.data, Err(e));
                        }
                        continue;
                    }
                    Err(e) => {
                        // The query times out (and the general path tries the others).
                        tracing::debug!(error = %e, "fast path: upstream receive error");
                        continue;
                    }
                };
                for i in 0..n {
                    let answer = self.recv.get(i);
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
                }
                if n < BATCH {
                    // Drained (what came since is seen by the next wait): no call that
                    // would only say EAGAIN.
                    break;
                }
            }
            self.close_if_done(slot);
        }
    }

    /// Hands every query whose time ran out by `now` to `expired`.
    pub fn expire(&mut self, now: Instant, mut expired: impl FnMut(T)) {
        while let Some((at, slot, id)) = self.timers.pop_due(now) {
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
    crate::dont_fragment::set(&socket, upstream.is_ipv4());
    socket.connect(&upstream.into())?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

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
    /// The question section of `name` A IN.
    fn question(name: &str) -> Vec<u8> {
        let mut q = Vec::new();
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        q
    }

    /// An answer to `query` (as the upstream received it): its ID and question, QR set, one A
    /// record with `last` as the address's last byte.
    fn answer_to(query: &[u8], id: u16, last: u8) -> Vec<u8> {
        let qend = query.len() - 11; // the OPT
        let mut a = query[..qend].to_vec();
        a[..2].copy_from_slice(&id.to_be_bytes());
        a[2] |= 0x80;
        a[6..12].copy_from_slice(&[0, 1, 0, 0, 0, 0]);
        a.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 1, 0x2c, 0, 4, 192, 0, 2, last]);
        a
    }

    fn upstream() -> (UdpSocket, SocketAddr) {
        let up = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = up.local_addr().unwrap();
        up.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        (up, addr)
    }

    /// Waits and receives until nothing is in flight (at most `rounds` wake-ups); the answers
    /// by the queries' data.
    fn drain(fwd: &mut ForwardUdp<usize>, rounds: usize) -> HashMap<usize, Vec<u8>> {
        let mut answered = HashMap::new();
        for _ in 0..rounds {
            if fwd.in_flight() == 0 {
                break;
            }
            fwd.wait(None, Duration::from_secs(10));
            fwd.receive(|i, a| {
                let old = answered.insert(i, a.expect("no socket error").to_vec());
                assert!(old.is_none(), "query {i} answered twice");
            });
        }
        answered
    }

    #[test]
    fn a_batch_leaves_on_one_socket_with_random_ids_and_only_genuine_answers_are_taken() {
        const QUERIES: usize = 12;
        let (up, addr) = upstream();
        let mut fwd: ForwardUdp<usize> = ForwardUdp::default();
        let give_up = Instant::now() + Duration::from_secs(600);
        for i in 0..QUERIES {
            let q = question(&format!("q{i}.Batch.example"));
            assert!(fwd.queue(addr, &q, give_up, i).is_ok());
        }
        assert_eq!(fwd.in_flight(), QUERIES);
        // Queued, not sent, until the flush.
        up.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 512];
        assert!(up.recv_from(&mut buf).is_err(), "sent before the flush");
        up.set_nonblocking(false).unwrap();
        fwd.flush(|i| panic!("query {i} refused"));

        let mut got = Vec::new();
        for _ in 0..QUERIES {
            let (n, src) = up.recv_from(&mut buf).unwrap();
            got.push((buf[..n].to_vec(), src));
        }
        let ports: HashSet<u16> = got.iter().map(|(_, src)| src.port()).collect();
        assert_eq!(ports.len(), 1, "one socket per upstream per batch");
        let ids: HashSet<u16> = got
            .iter()
            .map(|(q, _)| u16::from_be_bytes([q[0], q[1]]))
            .collect();
        assert_eq!(ids.len(), QUERIES, "an ID of its own for each query");

        // Every answer arrives behind two forgeries with the right source (a wrong ID, a
        // wrong question) and one from another port of the upstream's address; all are queued
        // at the socket together, so the forgeries sit in the middle of a recvmmsg batch.
        let other = UdpSocket::bind("127.0.0.1:0").unwrap();
        for (q, src) in &got {
            let id = u16::from_be_bytes([q[0], q[1]]);
            // The query's number, from its first label "qN".
            let digits = q[HEADER + 2..].iter().take_while(|b| b.is_ascii_digit());
            let i = digits.fold(0usize, |n, d| n * 10 + usize::from(d - b'0'));
            up.send_to(&answer_to(q, id ^ 0x0101, 66), src).unwrap();
            let mut wrong = q.clone();
            wrong[HEADER + 1] = b'x';
            up.send_to(&answer_to(&wrong, id, 66), src).unwrap();
            other.send_to(&answer_to(q, id, 66), src).unwrap();
            up.send_to(&answer_to(q, id, i as u8), src).unwrap();
        }
        let answered = drain(&mut fwd, 50);
        assert_eq!(answered.len(), QUERIES, "every query answered");
        for (i, a) in &answered {
            assert_eq!(a[a.len() - 1], *i as u8, "query {i} got a forged answer");
        }
        assert_eq!(fwd.in_flight(), 0);
    }

    #[test]
    fn each_upstream_of_a_batch_gets_its_own_send_and_batches_move_between_ports() {
        let (up1, addr1) = upstream();
        let (up2, addr2) = upstream();
        let mut fwd: ForwardUdp<usize> = ForwardUdp::default();
        let give_up = Instant::now() + Duration::from_secs(600);
        let mut ports = HashSet::new();
        let mut buf = [0u8; 512];
        for batch in 0..2 * SOCKETS_PER_UPSTREAM {
            for k in 0..4 {
                let q = question(&format!("b{batch}k{k}.example"));
                let addr = if k % 2 == 0 { addr1 } else { addr2 };
                assert!(fwd.queue(addr, &q, give_up, batch * 4 + k).is_ok());
            }
            fwd.flush(|i| panic!("query {i} refused"));
            for up in [&up1, &up2] {
                let (_, a) = up.recv_from(&mut buf).unwrap();
                let (_, b) = up.recv_from(&mut buf).unwrap();
                assert_eq!(a.port(), b.port(), "batch {batch}: one socket per upstream");
                ports.insert(a.port());
            }
        }
        // A fresh socket for each of the first batches, then random ones of the pool.
        assert_eq!(ports.len(), 2 * SOCKETS_PER_UPSTREAM);
        assert_eq!(fwd.in_flight(), 2 * SOCKETS_PER_UPSTREAM * 4);
        let mut expired = Vec::new();
        fwd.expire(give_up, |i| expired.push(i));
        assert_eq!(expired.len(), 2 * SOCKETS_PER_UPSTREAM * 4);
        assert_eq!(fwd.in_flight(), 0);
    }

    #[test]
    fn timers_come_due_in_or_out_of_order() {
        let t = Instant::now();
        let s = Duration::from_secs;
        let mut timers = Timers::default();
        timers.push(t + s(10), 0, 1);
        timers.push(t + s(20), 0, 2);
        // Earlier than the last one (a reload shortened the timeout).
        timers.push(t + s(5), 0, 3);
        assert_eq!(timers.next(), Some(t + s(5)));
        assert_eq!(timers.pop_due(t + s(4)), None);
        assert_eq!(timers.pop_due(t + s(6)), Some((t + s(5), 0, 3)));
        assert_eq!(timers.next(), Some(t + s(10)));
        let mut due = Vec::new();
        while let Some((_, _, id)) = timers.pop_due(t + s(30)) {
            due.push(id);
        }
        assert_eq!(due, vec![1, 2]);
        assert_eq!(timers.next(), None);
    }
}
