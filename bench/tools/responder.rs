//! Two tiny UDP responders for the benchmark, one file, std only (built with plain `rustc -O`).
//!
//!   responder floor    ADDR   header flip: one recv_from + one send_to per query, sets QR and
//!                             echoes the packet. The floor for a one-syscall-pair server.
//!   responder upstream ADDR   answers every question with A 192.0.2.1, TTL 3600 (the fast
//!                             upstream the forwarding servers talk to).
use std::net::UdpSocket;

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
        Some("upstream") => loop {
            let Ok((n, peer)) = sock.recv_from(&mut buf) else { continue };
            if n < 12 || u16::from_be_bytes([buf[4], buf[5]]) != 1 { continue; }
            // Walk the question name to find the end of the question.
            let mut i = 12;
            while i < n && buf[i] != 0 { i += 1 + buf[i] as usize; }
            let end = i + 5; // zero byte, QTYPE, QCLASS
            if end > n { continue; }
            let qtype = u16::from_be_bytes([buf[i + 1], buf[i + 2]]);
            let mut out = Vec::with_capacity(end + 16);
            out.extend_from_slice(&buf[..end]);
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
            let _ = sock.send_to(&out, peer);
        },
        _ => panic!("usage: responder floor|upstream ADDR"),
    }
}
