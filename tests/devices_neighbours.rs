//! The neighbour table reader against the real kernel: a device namespace with a fixed MAC and
//! four addresses talks to a router namespace, and the reader runs inside the router namespace.
//! Needs root (see tests/common/netns.rs): skipped with a message elsewhere, failing under CI.

#[path = "support/netns.rs"]
mod netns;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use netns::{in_namespace, NetnsPair, DEVICE_MAC};
use telesink::devices::{self, DeviceSettings, Mac, NeighbourStatus};

fn device_mac() -> Mac {
    DEVICE_MAC.parse().unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Makes the device talk from `addrs` until the router's table has a MAC for each (ARP and
/// NDP take a moment; a first datagram can go before the link is fully up).
fn teach_router(pair: &NetnsPair, addrs: &[IpAddr]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        pair.send_from_device(addrs);
        std::thread::sleep(Duration::from_millis(300));
        let table = pair.router_neighbours();
        let missing: Vec<&IpAddr> = addrs
            .iter()
            .filter(|a| {
                !table
                    .lines()
                    .any(|l| l.starts_with(&format!("{a} ")) && l.contains(DEVICE_MAC))
            })
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the router never learnt {missing:?}; its table:\n{table}"
        );
    }
}

#[test]
fn a_dump_maps_every_address_of_the_device_to_its_mac() {
    let Some(pair) = NetnsPair::create("a_dump_maps_every_address_of_the_device_to_its_mac") else {
        return;
    };
    let addrs = pair.device_addrs();
    teach_router(&pair, &addrs);
    let table = in_namespace(&pair.router, || {
        runtime().block_on(devices::read_neighbours())
    })
    .expect("the neighbour table of the router namespace");
    for a in &addrs {
        let n = table
            .get(a)
            .unwrap_or_else(|| panic!("{a} not read; `ip neigh`:\n{}", pair.router_neighbours()));
        assert_eq!(n.mac, device_mac(), "{a}");
        assert!(n.present, "{a} is on the LAN: {}", pair.router_neighbours());
    }
    // Nothing but the device is on this link: no other MAC was read.
    assert!(table.values().all(|n| n.mac == device_mac()), "{table:?}");
}

/// `addrs` without IPv6 link-local ones: the kernel may learn the device's `fe80::` address
/// too (it is the same MAC, and would count), but the test does not make it.
fn routable(addrs: &[IpAddr]) -> Vec<IpAddr> {
    addrs
        .iter()
        .copied()
        .filter(|a| match a {
            IpAddr::V6(v6) => !v6.is_unicast_link_local(),
            IpAddr::V4(_) => true,
        })
        .collect()
}

/// Polls `check` for up to `limit`.
async fn within(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < end {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

#[test]
fn the_running_task_follows_neighbour_events() {
    let Some(pair) = NetnsPair::create("the_running_task_follows_neighbour_events") else {
        return;
    };
    let addrs = pair.device_addrs();
    teach_router(&pair, &addrs);
    let mac = device_mac();
    in_namespace(&pair.router, || {
        runtime().block_on(async {
            let settings = DeviceSettings {
                neighbours: true,
                leases: Vec::new(),
            };
            let (devices, task) = devices::start(settings).await;

            // The first dump: all four addresses, one MAC, on the LAN.
            let view = devices.view();
            assert_eq!(view.neighbours().status(), &NeighbourStatus::Live);
            for a in &addrs {
                assert_eq!(view.mac_of(*a), Some(mac), "{a}");
            }
            let mut want = addrs.clone();
            want.sort();
            assert_eq!(routable(view.addresses_of(mac)), want);
            assert!(view.present(mac));
            // An IPv4-mapped IPv6 source is its IPv4 address.
            let mapped = match addrs[0] {
                IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
                IpAddr::V6(_) => unreachable!(),
            };
            assert_eq!(view.mac_of(mapped), Some(mac));
            let listed = view.devices();
            assert_eq!(listed.len(), 1, "{listed:?}");
            assert_eq!(listed[0].mac, Some(mac));
            assert_eq!(routable(&listed[0].addresses), want);
            assert_eq!(listed[0].present, Some(true));
            drop(view);

            // A new privacy address and a new IPv4 address appear: the events bring them (the
            // periodic re-dump is 30 s away, and nothing pokes the task).
            let new_v6: IpAddr = "2001:db8:5::4c2a:91ee:17d3:3".parse().unwrap();
            let new_v4: IpAddr = "192.0.2.52".parse().unwrap();
            let link = pair.device_link.clone();
            pair.device_cmd(&[
                "ip",
                "addr",
                "add",
                &format!("{new_v6}/64"),
                "dev",
                &link,
                "nodad",
            ]);
            pair.device_cmd(&["ip", "addr", "add", &format!("{new_v4}/24"), "dev", &link]);
            let started = Instant::now();
            let mut learnt = false;
            for _ in 0..10 {
                pair.send_from_device(&[new_v6, new_v4]);
                if within(Duration::from_millis(200), || {
                    let v = devices.view();
                    v.mac_of(new_v6) == Some(mac) && v.mac_of(new_v4) == Some(mac)
                })
                .await
                {
                    learnt = true;
                    break;
                }
            }
            assert!(
                learnt,
                "the task did not pick up {new_v6} and {new_v4} within {:?}; `ip neigh`:\n{}",
                started.elapsed(),
                pair.router_neighbours()
            );
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "took {:?}",
                started.elapsed()
            );
            assert_eq!(routable(devices.view().addresses_of(mac)).len(), 6);

            // The router forgets an address (RTM_DELNEIGH): so does the view.
            pair.router_cmd(&[
                "ip",
                "neigh",
                "del",
                &new_v4.to_string(),
                "dev",
                &pair.router_link,
            ]);
            assert!(
                within(Duration::from_secs(2), || devices
                    .view()
                    .mac_of(new_v4)
                    .is_none())
                .await,
                "{new_v4} still in the view after its deletion"
            );
            assert_eq!(devices.view().mac_of(new_v6), Some(mac));

            // The server's graceful shutdown: the task ends promptly.
            tokio::time::timeout(Duration::from_secs(2), task.stop())
                .await
                .expect("the neighbour task did not stop");
        })
    });
}

#[test]
fn pokes_about_unknown_addresses_are_coalesced_into_one_re_dump() {
    let Some(pair) =
        NetnsPair::create("pokes_about_unknown_addresses_are_coalesced_into_one_re_dump")
    else {
        return;
    };
    let addrs = pair.device_addrs();
    teach_router(&pair, &addrs[..1]);
    in_namespace(&pair.router, || {
        runtime().block_on(async {
            let settings = DeviceSettings {
                neighbours: true,
                leases: Vec::new(),
            };
            let (devices, task) = devices::start(settings).await;
            assert_eq!(devices.view().neighbours().dumps(), 1);
            // Without pokes, no dump before the periodic one (30 s).
            tokio::time::sleep(Duration::from_millis(1300)).await;
            assert_eq!(devices.view().neighbours().dumps(), 1);
            // A burst of queries from an address the table lacks: one re-dump, about a
            // second after the previous one at most.
            let poked = Instant::now();
            for _ in 0..10_000 {
                devices.unknown(addrs[1]);
            }
            assert!(
                within(Duration::from_secs(2), || devices
                    .view()
                    .neighbours()
                    .dumps()
                    == 2)
                .await,
                "no re-dump after the pokes"
            );
            assert!(
                poked.elapsed() < Duration::from_millis(1500),
                "{:?}",
                poked.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(1300)).await;
            assert_eq!(
                devices.view().neighbours().dumps(),
                2,
                "the burst was one re-dump"
            );
            // Loopback never is in a neighbour table: no dump for it.
            devices.unknown("127.0.0.1".parse().unwrap());
            tokio::time::sleep(Duration::from_millis(1300)).await;
            assert_eq!(devices.view().neighbours().dumps(), 2);
            tokio::time::timeout(Duration::from_secs(2), task.stop())
                .await
                .expect("the neighbour task did not stop");
        })
    });
}

/// Makes `socket(AF_NETLINK, …)` fail with EACCES on this thread (and threads it starts), as
/// systemd's `RestrictAddressFamilies=` without `AF_NETLINK` does: a seccomp filter. Needs no
/// privilege (`PR_SET_NO_NEW_PRIVS` first).
#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
fn forbid_netlink_sockets() {
    use libc::{sock_filter, sock_fprog};
    let stmt = |code: u32, k: u32| sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jeq = |k: u32, jf: u8| sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt: 0,
        jf,
        k,
    };
    let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let ret = libc::BPF_RET | libc::BPF_K;
    let prog = [
        stmt(load, 0), // seccomp_data.nr
        jeq(libc::SYS_socket as u32, 3),
        stmt(load, 16), // seccomp_data.args[0], low half (little-endian)
        jeq(libc::AF_NETLINK as u32, 1),
        stmt(ret, libc::SECCOMP_RET_ERRNO | libc::EACCES as u32),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
    ];
    let fprog = sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut sock_filter,
    };
    // SAFETY: plain syscalls on valid arguments; the filter binds only the calling thread.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        let rc = libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &fprog as *const sock_fprog,
        );
        assert_eq!(rc, 0, "seccomp: {}", std::io::Error::last_os_error());
    }
}

#[derive(Clone, Default)]
struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
#[test]
fn an_unreadable_neighbour_table_is_one_clear_warning_and_blocks_nothing() {
    let logs = Capture::default();
    let writer = logs.clone();
    let (status, took, one_shot) = std::thread::spawn(move || {
        forbid_netlink_sockets();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            runtime().block_on(async {
                let started = Instant::now();
                let settings = DeviceSettings {
                    neighbours: true,
                    leases: Vec::new(),
                };
                let (devices, task) = devices::start(settings).await;
                let took = started.elapsed();
                let addr: IpAddr = "192.0.2.50".parse().unwrap();
                devices.unknown(addr);
                let view = devices.view();
                assert_eq!(view.mac_of(addr), None);
                assert!(!view.presence_known());
                let status = view.neighbours().status().clone();
                let one_shot = devices::read_neighbours().await.map(|m| m.len());
                tokio::time::timeout(Duration::from_secs(2), task.stop())
                    .await
                    .expect("the neighbour task did not stop");
                (status, took, one_shot)
            })
        })
    })
    .join()
    .unwrap();
    assert!(took < Duration::from_secs(1), "start waited {took:?}");
    let NeighbourStatus::Unavailable(reason) = status else {
        panic!("status {status:?}");
    };
    assert!(
        reason.contains("netlink") && reason.contains("denied"),
        "{reason}"
    );
    assert!(one_shot.is_err(), "{one_shot:?}");
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let warnings: Vec<&str> = text.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "{text}");
    for what in [
        "not identified by MAC",
        "presence on the LAN",
        "DNS answers go on",
        "AF_NETLINK",
        "neighbours = false",
        "denied",
    ] {
        assert!(warnings[0].contains(what), "no {what:?} in {}", warnings[0]);
    }
}
