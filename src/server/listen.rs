//! Listening sockets for DNS: UDP for the listener threads, TCP for the accept loop, with
//! error messages that say what to do (port 53 needs a capability; an address in use is
//! another DNS server).

use std::net::SocketAddr;

use anyhow::Result;
use socket2::{Domain, Protocol, Socket, Type};

fn socket_for(addr: SocketAddr, ty: Type, proto: Protocol) -> Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    if addr.is_ipv6() {
        // Lets "[::]:53" and "0.0.0.0:53" both be listed, as the default config does.
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

fn explain_bind(addr: SocketAddr, kind: &str, e: std::io::Error) -> anyhow::Error {
    let hint = match e.kind() {
        std::io::ErrorKind::PermissionDenied => {
            "ports below 1024 need root or CAP_NET_BIND_SERVICE: run `sudo setcap cap_net_bind_service=+ep $(command -v telesink)`, use deploy/systemd/telesink.service, or test on a high port such as 127.0.0.1:5353"
        }
        std::io::ErrorKind::AddrInUse => {
            "another program already listens there (often systemd-resolved or dnsmasq on port 53): stop it, or list a specific address in server.listen"
        }
        std::io::ErrorKind::AddrNotAvailable => {
            "this machine has no such address: check server.listen"
        }
        _ => "check server.listen in the config",
    };
    anyhow::anyhow!("cannot listen for DNS on {addr} ({kind}): {e}; {hint}")
}

/// A blocking UDP socket for the listener threads; `reuse_port` lets several share `addr`.
pub fn bind_udp_std(addr: SocketAddr, reuse_port: bool) -> Result<std::net::UdpSocket> {
    let s = socket_for(addr, Type::DGRAM, Protocol::UDP)?;
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    s.set_nonblocking(false)?;
    // A larger receive buffer rides out bursts without drops.
    let _ = s.set_recv_buffer_size(4 << 20);
    crate::dont_fragment::set(&s, addr.is_ipv4());
    s.bind(&addr.into())
        .map_err(|e| explain_bind(addr, "UDP", e))?;
    Ok(s.into())
}

pub fn bind_tcp(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    let s = socket_for(addr, Type::STREAM, Protocol::TCP)?;
    s.bind(&addr.into())
        .map_err(|e| explain_bind(addr, "TCP", e))?;
    s.listen(1024)?;
    Ok(tokio::net::TcpListener::from_std(s.into())?)
}
