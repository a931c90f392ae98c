//! DHCP lease files through the public API: `load_leases` for `telesink check`, and the
//! running watcher (real files, real inotify): changes are picked up, a broken file keeps its
//! last good copy, a lease names its MAC's other addresses.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use telesink::devices::{self, DeviceSettings, LeaseError, LeaseFormat, Mac};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/leases")
        .join(name)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn load_leases_reads_each_format_and_names_what_is_wrong() {
    let set = devices::load_leases(&[
        fixture("dnsmasq.leases"),
        fixture("dhcpd.leases"),
        fixture("odhcpd"),
        fixture("empty.leases"),
    ])
    .unwrap();
    let formats: Vec<Option<LeaseFormat>> = set.files.iter().map(|f| f.format).collect();
    assert_eq!(
        formats,
        [
            Some(LeaseFormat::Dnsmasq),
            Some(LeaseFormat::IscDhcpd),
            Some(LeaseFormat::Odhcpd),
            None
        ]
    );
    // Leases ending in 2030 or never are current (the fixtures' 2027 dates may have passed).
    assert_eq!(
        set.name_of_addr(ip("192.168.1.52")).map(|n| &**n),
        Some("nas")
    );
    assert_eq!(
        set.name_of_addr(ip("192.168.1.63")).map(|n| &**n),
        Some("living-room-tv")
    );
    assert_eq!(
        set.name_of_addr(ip("2001:db8:1::b")).map(|n| &**n),
        Some("forever")
    );

    let e = devices::load_leases(&[fixture("dnsmasq.leases"), fixture("hosts")]).unwrap_err();
    assert!(matches!(e, LeaseError::UnknownFormat { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("hosts:1:"), "{msg}");
    assert!(msg.contains("dnsmasq") && msg.contains("ISC dhcpd") && msg.contains("odhcpd"));

    let missing = fixture("no-such.leases");
    let e = devices::load_leases(std::slice::from_ref(&missing)).unwrap_err();
    assert!(matches!(e, LeaseError::Read { .. }), "{e}");
    assert!(
        e.to_string().contains(&missing.display().to_string()),
        "{e}"
    );
    assert!(e.to_string().contains("[clients] leases"), "{e}");
}

/// Replaces `path` the way dnsmasq and odhcpd do: write a temporary file, rename it over.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn name_within(
    devices: &devices::Devices,
    addr: IpAddr,
    mac: Option<Mac>,
    want: Option<&str>,
) -> bool {
    let end = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let got = devices.view().lease_name(addr, mac).map(|n| n.to_string());
        if got.as_deref() == want {
            return true;
        }
        if tokio::time::Instant::now() > end {
            eprintln!("name of {addr}: {got:?}, want {want:?}");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_follows_the_files_and_keeps_the_last_good_copy() {
    let dir = tempfile::tempdir().unwrap();
    let dnsmasq = dir.path().join("dnsmasq.leases");
    let isc = dir.path().join("dhcpd.leases");
    std::fs::write(
        &dnsmasq,
        "0 3c:2e:f9:12:34:56 192.168.1.50 Anna-Phone 01:3c:2e:f9:12:34:56\n",
    )
    .unwrap();
    // Listed before it exists: a warning, then read once the DHCP server writes it.
    let settings = DeviceSettings {
        neighbours: false,
        leases: vec![dnsmasq.clone(), isc.clone()],
    };
    let (devices, task) = devices::start(settings).await;
    let phone: Mac = "3c:2e:f9:12:34:56".parse().unwrap();

    let view = devices.view();
    assert!(!view.presence_known());
    assert_eq!(
        view.lease_name(ip("192.168.1.50"), None).map(|n| &**n),
        Some("anna-phone")
    );
    // An IPv6 privacy address of the same MAC is named by the IPv4 lease.
    assert_eq!(
        view.lease_name(ip("2001:db8::a1b2:c3d4:e5f6:1"), Some(phone))
            .map(|n| &**n),
        Some("anna-phone")
    );
    // IPv4-mapped IPv6 is the IPv4 address.
    assert_eq!(
        view.lease_name(ip("::ffff:192.168.1.50"), None)
            .map(|n| &**n),
        Some("anna-phone")
    );
    assert_eq!(view.lease_name(ip("192.168.1.99"), None), None);
    let listed = view.devices();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].mac, Some(phone));
    assert_eq!(listed[0].lease_name.as_deref(), Some("anna-phone"));
    assert_eq!(listed[0].present, None);
    drop(view);

    // The DHCP server renames the device and hands out another address.
    replace(
        &dnsmasq,
        "0 3c:2e:f9:12:34:56 192.168.1.57 annas-phone 01:3c:2e:f9:12:34:56\n",
    );
    assert!(name_within(&devices, ip("192.168.1.57"), None, Some("annas-phone")).await);
    assert!(name_within(&devices, ip("192.168.1.50"), None, None).await);

    // A broken write: the last good copy stays.
    replace(&dnsmasq, "this is not a lease file\n");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        devices
            .view()
            .lease_name(ip("192.168.1.57"), None)
            .map(|n| n.to_string()),
        Some("annas-phone".to_string())
    );

    // The second file appears, written in place.
    std::fs::write(
        &isc,
        "lease 192.168.1.80 {\n  binding state active;\n  ends never;\n  \
         hardware ethernet 00:1c:42:00:00:80;\n  client-hostname \"Office-PC\";\n}\n",
    )
    .unwrap();
    assert!(name_within(&devices, ip("192.168.1.80"), None, Some("office-pc")).await);
    // Still the last good dnsmasq copy.
    assert!(name_within(&devices, ip("192.168.1.57"), None, Some("annas-phone")).await);

    tokio::time::timeout(Duration::from_secs(2), task.stop())
        .await
        .expect("the lease watcher did not stop");
}
