//! The Don't Fragment bit on UDP sockets (RFC 9715, "IP Fragmentation Avoidance in DNS over
//! UDP": responders and requestors set DF on IPv4). Answers are capped at 1232 bytes (and at
//! the client's EDNS size), so they fit every path; a fragment is what an off-path attacker
//! forges to poison an answer, and what firewalls drop. `IP_PMTUDISC_PROBE` sets DF without
//! taking the path MTU from ICMP messages, which an attacker could forge too. It also spares
//! the kernel the IP ID it computes for every datagram that may be fragmented.

use std::os::fd::AsRawFd;

/// Sets DF on an IPv4 UDP socket; IPv6 sockets are left as they are (IPv6 routers never
/// fragment). Best effort: a kernel that refuses keeps its default.
pub fn set(socket: &impl AsRawFd, ipv4: bool) {
    if !ipv4 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        let value: libc::c_int = libc::IP_PMTUDISC_PROBE;
        // SAFETY: a valid socket descriptor and an int option of the size given.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "IP_MTU_DISCOVER not set");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_os = "linux")]
    fn an_ipv4_socket_gets_df_without_path_mtu() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        super::set(&s, true);
        let mut value: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: as in `set`, reading the option back.
        let rc = unsafe {
            libc::getsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&s),
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0);
        assert_eq!(value, libc::IP_PMTUDISC_PROBE);
    }
}
