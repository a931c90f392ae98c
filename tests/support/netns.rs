//! Two network namespaces joined by a veth pair: a "router" side where telesink runs and a
//! "device" side that plays one phone with a fixed MAC and several addresses (two IPv4, two
//! IPv6 privacy-style). The kernel's neighbour table in the router namespace is real.
//!
//! Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN). [`NetnsPair::create`] returns `None` outside CI
//! when that is missing (the caller skips, with the printed reason); under `CI=true` it panics,
//! so such tests fail there rather than skip. Addresses are documentation ranges that exist only
//! inside the two namespaces; everything is removed on drop.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// The device's MAC on its side of the veth pair.
pub const DEVICE_MAC: &str = "02:5e:1e:51:4c:01";

pub struct NetnsPair {
    /// Namespace where telesink (and its upstream) run.
    pub router: String,
    /// Namespace of the device.
    pub device: String,
    pub router_v4: Ipv4Addr,
    pub router_v6: Ipv6Addr,
    /// The device's IPv4 addresses (a DHCP renumbering, say).
    pub device_v4: [Ipv4Addr; 2],
    /// The device's IPv6 addresses (two privacy addresses on one MAC).
    pub device_v6: [Ipv6Addr; 2],
    /// The veth end in the router namespace.
    pub router_link: String,
    /// The veth end in the device namespace.
    pub device_link: String,
}

fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"))
}

fn must(args: &[&str]) {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Why these tests cannot run here, if they cannot.
fn missing_rights() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces and veth pairs)".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("needs `ip` from iproute2".into());
    }
    None
}

impl NetnsPair {
    /// Creates both namespaces and the link; `None` (with a message) when this machine cannot
    /// and we are not in CI.
    pub fn create(test: &str) -> Option<NetnsPair> {
        if let Some(why) = missing_rights() {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{test}: {why}; under CI=true this test must run");
            }
            eprintln!("skipping {test}: {why}");
            return None;
        }
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}{}", std::process::id() % 100_000, n);
        let (vr, vd) = (format!("vr{id}"), format!("vd{id}"));
        let pair = NetnsPair {
            router: format!("tsr{id}"),
            device: format!("tsd{id}"),
            router_v4: Ipv4Addr::new(192, 0, 2, 1),
            router_v6: "2001:db8:5::1".parse().unwrap(),
            device_v4: [Ipv4Addr::new(192, 0, 2, 50), Ipv4Addr::new(192, 0, 2, 51)],
            device_v6: [
                "2001:db8:5::a1b2:c3d4:e5f6:1".parse().unwrap(),
                "2001:db8:5::9f8e:7d6c:5b4a:2".parse().unwrap(),
            ],
            router_link: vr.clone(),
            device_link: vd.clone(),
        };
        // Root without CAP_SYS_ADMIN (an unprivileged container) cannot make namespaces.
        let out = run(&["ip", "netns", "add", &pair.router]);
        if !out.status.success() {
            let why = format!(
                "cannot create a network namespace: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{test}: {why}; under CI=true this test must run");
            }
            eprintln!("skipping {test}: {why}");
            // Nothing of the pair exists yet: do not run its Drop.
            std::mem::forget(pair);
            return None;
        }
        must(&["ip", "netns", "add", &pair.device]);
        must(&[
            "ip",
            "link",
            "add",
            &vr,
            "netns",
            &pair.router,
            "type",
            "veth",
            "peer",
            "name",
            &vd,
            "netns",
            &pair.device,
        ]);
        pair.router_cmd(&["ip", "link", "set", "lo", "up"]);
        pair.device_cmd(&["ip", "link", "set", "lo", "up"]);
        pair.device_cmd(&["ip", "link", "set", &vd, "address", DEVICE_MAC]);
        pair.router_cmd(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", pair.router_v4),
            "dev",
            &vr,
        ]);
        pair.router_cmd(&[
            "ip",
            "addr",
            "add",
            &format!("{}/64", pair.router_v6),
            "dev",
            &vr,
            "nodad",
        ]);
        for a in pair.device_v4 {
            pair.device_cmd(&["ip", "addr", "add", &format!("{a}/24"), "dev", &vd]);
        }
        for a in pair.device_v6 {
            pair.device_cmd(&["ip", "addr", "add", &format!("{a}/64"), "dev", &vd, "nodad"]);
        }
        pair.router_cmd(&["ip", "link", "set", &vr, "up"]);
        pair.device_cmd(&["ip", "link", "set", &vd, "up"]);
        Some(pair)
    }

    /// A command run inside the router namespace (not started).
    pub fn in_router(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.router, program]);
        c
    }

    /// A command run inside the device namespace (not started).
    pub fn in_device(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.device, program]);
        c
    }

    pub fn router_cmd(&self, args: &[&str]) {
        let mut full = vec!["ip", "netns", "exec", &self.router];
        full.extend_from_slice(args);
        must(&full);
    }

    pub fn device_cmd(&self, args: &[&str]) {
        let mut full = vec!["ip", "netns", "exec", &self.device];
        full.extend_from_slice(args);
        must(&full);
    }

    /// Every address of the device, IPv4 first.
    pub fn device_addrs(&self) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = self.device_v4.iter().map(|&a| a.into()).collect();
        v.extend(self.device_v6.iter().map(|&a| IpAddr::from(a)));
        v
    }

    /// Sends one UDP datagram from each of `sources` (addresses of the device) to the
    /// router, from a thread inside the device namespace. The router answers with an ICMP
    /// "port unreachable", for which its kernel resolves the source's MAC (ARP / NDP), so
    /// its neighbour table then maps each source to [`DEVICE_MAC`].
    pub fn send_from_device(&self, sources: &[IpAddr]) {
        let (v4, v6) = (self.router_v4, self.router_v6);
        in_namespace(&self.device, || {
            for &src in sources {
                let dst: IpAddr = if src.is_ipv4() { v4.into() } else { v6.into() };
                let sock = UdpSocket::bind((src, 0))
                    .unwrap_or_else(|e| panic!("cannot bind a UDP socket to {src}: {e}"));
                sock.send_to(b"hello", (dst, 9))
                    .unwrap_or_else(|e| panic!("cannot send from {src} to {dst}: {e}"));
            }
        })
    }

    /// The router side's neighbour table as `ip neigh` prints it (for failure messages only).
    pub fn router_neighbours(&self) -> String {
        let out = run(&["ip", "netns", "exec", &self.router, "ip", "neigh", "show"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        // Deleting a namespace removes its end of the veth pair, and so the pair.
        let _ = run(&["ip", "netns", "del", &self.router]);
        let _ = run(&["ip", "netns", "del", &self.device]);
    }
}

/// Runs `f` on a new thread that entered network namespace `ns` (made by `ip netns add`):
/// sockets it opens, netlink ones included, live in that namespace. Only that thread moves.
pub fn in_namespace<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let file =
                std::fs::File::open(&path).unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
            // SAFETY: setns on a valid namespace descriptor changes this thread only.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

/// Three namespaces in a line: a phone, the router (where telesink runs, forwarding on) and "the
/// internet", joined by two veth pairs. The internet namespace holds the addresses the phone
/// sends to (on its loopback), routed through the router; the phone's default route is the
/// router. Made for telesink's nftables counters: packets really cross the router's forward
/// hook. Needs root, like [`NetnsPair`]; removed on drop.
pub struct NetnsTrio {
    pub phone: String,
    pub router: String,
    pub internet: String,
    pub phone_v4: Ipv4Addr,
    pub phone_v6: Ipv6Addr,
    /// The router's addresses on the phone's side (telesink listens there).
    pub router_v4: Ipv4Addr,
    pub router_v6: Ipv6Addr,
}

impl NetnsTrio {
    /// Creates the three namespaces; `internet_addrs` are put on the internet namespace's
    /// loopback. `None` (with a message) when this machine cannot and we are not in CI.
    pub fn create(test: &str, internet_addrs: &[IpAddr]) -> Option<NetnsTrio> {
        let skip = |why: String| {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{test}: {why}; under CI=true this test must run");
            }
            eprintln!("skipping {test}: {why}");
        };
        if let Some(why) = missing_rights() {
            skip(why);
            return None;
        }
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}{}", std::process::id() % 100_000, n);
        let trio = NetnsTrio {
            phone: format!("tsp{id}"),
            router: format!("tsr{id}"),
            internet: format!("tsi{id}"),
            phone_v4: Ipv4Addr::new(10, 77, 0, 2),
            phone_v6: "fd77::2".parse().unwrap(),
            router_v4: Ipv4Addr::new(10, 77, 0, 1),
            router_v6: "fd77::1".parse().unwrap(),
        };
        let out = run(&["ip", "netns", "add", &trio.phone]);
        if !out.status.success() {
            skip(format!(
                "cannot create a network namespace: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            std::mem::forget(trio);
            return None;
        }
        must(&["ip", "netns", "add", &trio.router]);
        must(&["ip", "netns", "add", &trio.internet]);
        let (pr, rp) = (format!("vp{id}"), format!("vrp{id}"));
        let (ri, ir) = (format!("vri{id}"), format!("vir{id}"));
        must(&[
            "ip",
            "link",
            "add",
            &pr,
            "netns",
            &trio.phone,
            "type",
            "veth",
            "peer",
            "name",
            &rp,
            "netns",
            &trio.router,
        ]);
        must(&[
            "ip",
            "link",
            "add",
            &ri,
            "netns",
            &trio.router,
            "type",
            "veth",
            "peer",
            "name",
            &ir,
            "netns",
            &trio.internet,
        ]);
        let ns = |ns: &str, args: &[&str]| {
            let mut full = vec!["ip", "netns", "exec", ns];
            full.extend_from_slice(args);
            must(&full);
        };
        for n in [&trio.phone, &trio.router, &trio.internet] {
            ns(n, &["ip", "link", "set", "lo", "up"]);
        }
        // Phone ↔ router.
        ns(
            &trio.phone,
            &["ip", "addr", "add", "10.77.0.2/24", "dev", &pr],
        );
        ns(
            &trio.phone,
            &["ip", "addr", "add", "fd77::2/64", "dev", &pr, "nodad"],
        );
        ns(
            &trio.router,
            &["ip", "addr", "add", "10.77.0.1/24", "dev", &rp],
        );
        ns(
            &trio.router,
            &["ip", "addr", "add", "fd77::1/64", "dev", &rp, "nodad"],
        );
        // Router ↔ internet.
        ns(
            &trio.router,
            &["ip", "addr", "add", "10.78.0.1/24", "dev", &ri],
        );
        ns(
            &trio.router,
            &["ip", "addr", "add", "fd78::1/64", "dev", &ri, "nodad"],
        );
        ns(
            &trio.internet,
            &["ip", "addr", "add", "10.78.0.2/24", "dev", &ir],
        );
        ns(
            &trio.internet,
            &["ip", "addr", "add", "fd78::2/64", "dev", &ir, "nodad"],
        );
        for (n, l) in [
            (&trio.phone, &pr),
            (&trio.router, &rp),
            (&trio.router, &ri),
            (&trio.internet, &ir),
        ] {
            ns(n, &["ip", "link", "set", l, "up"]);
        }
        ns(
            &trio.phone,
            &["ip", "route", "add", "default", "via", "10.77.0.1"],
        );
        ns(
            &trio.phone,
            &["ip", "-6", "route", "add", "default", "via", "fd77::1"],
        );
        ns(
            &trio.router,
            &["ip", "route", "add", "default", "via", "10.78.0.2"],
        );
        ns(
            &trio.router,
            &["ip", "-6", "route", "add", "default", "via", "fd78::2"],
        );
        ns(
            &trio.internet,
            &["ip", "route", "add", "10.77.0.0/24", "via", "10.78.0.1"],
        );
        ns(
            &trio.internet,
            &["ip", "-6", "route", "add", "fd77::/64", "via", "fd78::1"],
        );
        ns(&trio.router, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        ns(
            &trio.router,
            &["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"],
        );
        for a in internet_addrs {
            let prefix = if a.is_ipv4() { 32 } else { 128 };
            ns(
                &trio.internet,
                &["ip", "addr", "add", &format!("{a}/{prefix}"), "dev", "lo"],
            );
        }
        Some(trio)
    }

    /// `nft ARGS` in the router namespace: (success, stdout + stderr).
    pub fn router_nft(&self, args: &[&str]) -> (bool, String) {
        let mut full = vec!["ip", "netns", "exec", &self.router, "nft"];
        full.extend_from_slice(args);
        let out = run(&full);
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// A UDP socket of the internet namespace bound to `addr` (port 7000): what arrives there
    /// crossed the router.
    pub fn listen_on_internet(&self, addr: IpAddr) -> UdpSocket {
        in_namespace(&self.internet, || {
            let s = UdpSocket::bind((addr, 7000))
                .unwrap_or_else(|e| panic!("bind {addr}:7000 in the internet namespace: {e}"));
            s.set_nonblocking(true).unwrap();
            s
        })
    }

    /// Sends `n` datagrams from the phone to `dst`:7000.
    pub fn send_from_phone(&self, dst: IpAddr, n: usize) {
        let src: IpAddr = if dst.is_ipv4() {
            self.phone_v4.into()
        } else {
            self.phone_v6.into()
        };
        in_namespace(&self.phone, || {
            let sock = UdpSocket::bind((src, 0)).unwrap();
            for _ in 0..n {
                sock.send_to(b"telemetry?", (dst, 7000))
                    .unwrap_or_else(|e| panic!("send {src} → {dst}: {e}"));
            }
        })
    }
}

/// Datagrams waiting on `sock` (non-blocking), read off.
pub fn drain(sock: &UdpSocket) -> usize {
    let mut buf = [0u8; 64];
    let mut n = 0;
    while sock.recv_from(&mut buf).is_ok() {
        n += 1;
    }
    n
}

impl Drop for NetnsTrio {
    fn drop(&mut self) {
        for n in [&self.phone, &self.router, &self.internet] {
            let _ = run(&["ip", "netns", "del", n]);
        }
    }
}

/// Moves the calling thread (and whatever it starts from now on: processes, threads) into a
/// new network namespace of its own, with loopback up: a test that needs nftables gets a
/// firewall of its own, never the host's. Nothing to remove: the namespace goes with the last
/// task in it. `None` (with a message) when this machine cannot and we are not in CI.
pub fn enter_private_namespace(test: &str) -> Option<()> {
    let fail = |why: String| {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{test}: {why}; under CI=true this test must run");
        }
        eprintln!("skipping {test}: {why}");
    };
    if let Some(why) = missing_rights() {
        fail(why);
        return None;
    }
    // SAFETY: unshare of the network namespace changes the calling thread only.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        fail(format!(
            "cannot create a network namespace: {}",
            std::io::Error::last_os_error()
        ));
        return None;
    }
    must(&["ip", "link", "set", "lo", "up"]);
    Some(())
}
