//! A hostile upstream: for every query telesink forwards to it, it first sends forged answers
//! to the query's source address and port (read from the datagram it received), each carrying
//! [`POISON_V4`], then (unless told to stay silent) the genuine answer, [`GENUINE_V4`], from
//! its own address and port. Used by the spoofed-answer test (issue 17).

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_proto::op::{Message, OpCode, Query};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// The address every forged answer carries.
pub const POISON_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 66);
/// The address of the genuine answer.
pub const GENUINE_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 77);

/// What one forged answer gets wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wrong {
    /// From the upstream's address and port, the right question, a different message ID.
    Id,
    /// From the upstream's address and port, the right ID, another name in the question (the
    /// poisoned record is still for the name asked).
    QuestionName,
    /// The right ID and name, but the question asks for AAAA instead of A.
    QuestionType,
    /// The right ID and question, from another port of the upstream's address (a second socket).
    SourcePort,
    /// The right ID and question, from the upstream's port on another loopback address
    /// (127.0.0.2).
    SourceAddr,
}

impl Wrong {
    pub const ALL: [Wrong; 5] = [
        Wrong::Id,
        Wrong::QuestionName,
        Wrong::QuestionType,
        Wrong::SourcePort,
        Wrong::SourceAddr,
    ];
}

/// What the hostile upstream does after the forgeries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Genuine {
    /// Sends the genuine answer (A [`GENUINE_V4`], TTL 300) from the right address and port.
    Answer,
    /// Sends nothing more: telesink's query times out with only forgeries received.
    Never,
}

struct State {
    genuine: Mutex<Genuine>,
    /// Names (as received) of the questions that arrived.
    seen: Mutex<Vec<String>>,
    forged: AtomicUsize,
}

pub struct HostileUpstream {
    addr: SocketAddr,
    state: Arc<State>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HostileUpstream {
    /// Binds 127.0.0.1 on a free port (UDP), a second socket on 127.0.0.1 and one on
    /// 127.0.0.2 with the same port number, and serves until dropped.
    pub fn start() -> HostileUpstream {
        let main = UdpSocket::bind("127.0.0.1:0").expect("bind the hostile upstream");
        let addr = main.local_addr().unwrap();
        let other_port = UdpSocket::bind("127.0.0.1:0").expect("bind the second socket");
        let other_addr = UdpSocket::bind(SocketAddr::new(
            Ipv4Addr::new(127, 0, 0, 2).into(),
            addr.port(),
        ))
        .expect("bind 127.0.0.2 on the upstream's port");
        main.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let state = Arc::new(State {
            genuine: Mutex::new(Genuine::Answer),
            seen: Mutex::new(Vec::new()),
            forged: AtomicUsize::new(0),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name(format!("hostile-upstream-{}", addr.port()))
            .spawn(move || serve(main, other_port, other_addr, st, sp))
            .unwrap();
        HostileUpstream {
            addr,
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// The address to put in `[upstream] servers`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn set_genuine(&self, g: Genuine) {
        *self.state.genuine.lock().unwrap() = g;
    }

    /// How many questions for `name` (case-insensitive, trailing dot optional) arrived.
    pub fn seen(&self, name: &str) -> usize {
        let want = super::norm(name);
        self.state
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|n| super::norm(n) == want)
            .count()
    }

    /// Forged datagrams sent so far.
    pub fn forged(&self) -> usize {
        self.state.forged.load(Ordering::SeqCst)
    }
}

impl Drop for HostileUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    main: UdpSocket,
    other_port: UdpSocket,
    other_addr: UdpSocket,
    st: Arc<State>,
    stop: Arc<AtomicBool>,
) {
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) {
        let (n, from) = match main.recv_from(&mut buf) {
            Ok(x) => x,
            Err(_) => continue, // the read timeout: look at `stop` again
        };
        let Ok(req) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        let Some(q) = req.queries.first().cloned() else {
            continue;
        };
        st.seen
            .lock()
            .unwrap()
            .push(q.name().to_ascii().trim_end_matches('.').to_string());
        let id = req.metadata.id;
        for f in Wrong::ALL {
            let (packet, sock) = match f {
                Wrong::Id => (answer(id ^ 0x5a5a, &q, &q, POISON_V4), &main),
                Wrong::QuestionName => {
                    let other = Name::from_ascii(format!("evil.{}", q.name().to_ascii())).unwrap();
                    let mut wrong = q.clone();
                    wrong.set_name(other);
                    (answer(id, &wrong, &q, POISON_V4), &main)
                }
                Wrong::QuestionType => {
                    let mut wrong = q.clone();
                    wrong.set_query_type(RecordType::AAAA);
                    (answer(id, &wrong, &q, POISON_V4), &main)
                }
                Wrong::SourcePort => (answer(id, &q, &q, POISON_V4), &other_port),
                Wrong::SourceAddr => (answer(id, &q, &q, POISON_V4), &other_addr),
            };
            if sock.send_to(&packet, from).is_ok() {
                st.forged.fetch_add(1, Ordering::SeqCst);
            }
        }
        if *st.genuine.lock().unwrap() == Genuine::Answer {
            // Not a timing assumption of the test: the pause only makes sure the forgeries are
            // queued at telesink's socket before the genuine answer (they come from three
            // sockets), so that they are read and judged rather than left unread.
            std::thread::sleep(Duration::from_millis(50));
            let _ = main.send_to(&answer(id, &q, &q, GENUINE_V4), from);
        }
    }
}

/// A response with message ID `id`, question `question`, and one A record (TTL 300) for the
/// name of `asked`.
fn answer(id: u16, question: &Query, asked: &Query, ip: Ipv4Addr) -> Vec<u8> {
    let mut resp = Message::response(id, OpCode::Query);
    resp.metadata.recursion_desired = true;
    resp.metadata.recursion_available = true;
    resp.add_query(question.clone());
    resp.add_answer(Record::from_rdata(
        asked.name().clone(),
        300,
        RData::A(A(ip)),
    ));
    resp.to_vec().expect("encode a forged answer")
}
