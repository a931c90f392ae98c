//! Two tiny responders for the benchmark, one file, std only (built with plain `rustc -O`).
//!
//!   responder floor    ADDR   header flip: one recv_from + one send_to per query, sets QR and
//!                             echoes the packet. The floor for a one-syscall-pair server.
//!   responder upstream ADDR   answers every question with A 192.0.2.1, TTL 3600 (the fast
//!                             upstream the forwarding servers talk to), over UDP and, on the
//!                             same address, TCP (dnsdist forwards DoT queries over TCP).
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};

/// The upstream's answer to the query in `q`: A 192.0.2.1 TTL 3600 for a type A question,
/// NODATA for any other type; None for no query.
fn upstream_answer(q: &[u8]) -> Option<Vec<u8>> {
    let n = q.len();
    if n < 12 || u16::from_be_bytes([q[4], q[5]]) != 1 { return None; }
    // Walk the question name to find the end of the question.
    let mut i = 12;
    while i < n && q[i] != 0 { i += 1 + q[i] as usize; }
    let end = i + 5; // zero byte, QTYPE, QCLASS
    if end > n { return None; }
    let qtype = u16::from_be_bytes([q[i + 1], q[i + 2]]);
    let mut out = Vec::with_capacity(end + 16);
    out.extend_from_slice(&q[..end]);
    out[2] = (out[2] | 0x80) & !0x02; // QR, clear TC (keep RD and opcode)
    out[3] = 0x80; // RA, RCODE 0
    out[8..12].copy_from_slice(&[0, 0, 0, 0]); // NSCOUNT, ARCOUNT
    if qtype == 1 {
        out[6..8].copy_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
        out.extend_from_slice(&3600u32.to_be_bytes());
        out.extend_from_slice(&[0, 4, 192, 0, 2, 1]);
    } else {
        out[6..8].copy_from_slice(&[0, 0]); // NODATA for other types
    }
    Some(out)
}

/// One TCP connection: length-prefixed queries in, answers out, until the peer closes.
fn upstream_tcp(mut s: TcpStream) {
    let _ = s.set_nodelay(true);
    let mut len = [0u8; 2];
    let mut q = vec![0u8; 65535];
    while s.read_exact(&mut len).is_ok() {
        let n = u16::from_be_bytes(len) as usize;
        if s.read_exact(&mut q[..n]).is_err() { return; }
        let Some(a) = upstream_answer(&q[..n]) else { continue };
        let mut out = Vec::with_capacity(a.len() + 2);
        out.extend_from_slice(&(a.len() as u16).to_be_bytes());
        out.extend_from_slice(&a);
        if s.write_all(&out).is_err() { return; }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (mode, addr) = (args.get(1).map(String::as_str), args.get(2).expect("usage: responder floor|upstream ADDR"));
    let sock = UdpSocket::bind(addr).expect("bind");
    let mut buf = [0u8; 4096];
    match mode {
        Some("floor") => loop {
            // ---- the floor: ~10 lines ----
            let Ok((n, peer)) = sock.recv_from(&mut buf) else { continue };
            if n < 12 { continue; }
            buf[2] |= 0x80; // QR = response
            let _ = sock.send_to(&buf[..n], peer);
        },
        Some("upstream") => {
            let tcp = TcpListener::bind(addr).expect("bind TCP");
            std::thread::spawn(move || {
                for s in tcp.incoming().flatten() {
                    std::thread::spawn(move || upstream_tcp(s));
                }
            });
            loop {
                let Ok((n, peer)) = sock.recv_from(&mut buf) else { continue };
                if let Some(out) = upstream_answer(&buf[..n]) {
                    let _ = sock.send_to(&out, peer);
                }
            }
        }
        _ => panic!("usage: responder floor|upstream ADDR"),
    }
}
