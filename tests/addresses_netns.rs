//! Telemetry addresses on a real router: three network namespaces (a phone, the router where
//! telesink runs with forwarding on, and "the internet"), real packets through the router's
//! forward hook, the kernel's nftables. Shows counting per device, dropping, unrelated and
//! shared-CDN traffic untouched, expiry, a reload that changes the categories, the table
//! removed on SIGTERM, and the errors when nftables cannot be used (no CAP_NET_ADMIN, no `nft`).
//! Needs root: under `CI=true` these tests fail when they cannot run; elsewhere they skip.

mod support;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use support::netns::{drain, in_namespace, NetnsTrio};
use support::*;

const TELEMETRY_V4: &str = "203.0.113.5";
const TELEMETRY_V6: &str = "2001:db8:77::5";
const SHORT_LIVED: &str = "203.0.113.77";
const SHARED: &str = "198.51.100.9";
const UNRELATED: &str = "198.51.100.20";
const ADS: &str = "203.0.113.50";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

struct Setup {
    net: NetnsTrio,
    proc: TelesinkProcess,
    _upstream: TestUpstream,
    dns: SocketAddr,
}

fn start(
    test: &str,
    nftables: &str,
    categories: &str,
    customize: impl FnOnce(Telesink) -> Telesink,
) -> Option<Setup> {
    let internet = [
        TELEMETRY_V4,
        TELEMETRY_V6,
        SHORT_LIVED,
        SHARED,
        UNRELATED,
        ADS,
    ]
    .map(ip);
    let net = NetnsTrio::create(test, &internet)?;
    let upstream = in_namespace(&net.router, || {
        let up = TestUpstream::start();
        up.set_default(Reply::a(UNRELATED.parse().unwrap()));
        up.set(
            "tracking.vendor.example",
            Reply::Addrs {
                v4: vec![TELEMETRY_V4.parse().unwrap()],
                v6: vec![TELEMETRY_V6.parse().unwrap()],
                ttl: 300,
            },
        );
        up.set("cdn.vendor.example", Reply::a(SHARED.parse().unwrap()));
        up.set("www.shop.example", Reply::a(SHARED.parse().unwrap()));
        up.set(
            "short.vendor.example",
            Reply::Addrs {
                v4: vec![SHORT_LIVED.parse().unwrap()],
                v6: vec![],
                ttl: 3,
            },
        );
        up.set("ads.example", Reply::a(ADS.parse().unwrap()));
        up
    });
    let t = Telesink::new()
        .upstream(&upstream)
        .allow_networks(&["127.0.0.0/8", "10.77.0.0/24", "fd77::/64"])
        .listen_also(&[net.router_v4.into(), net.router_v6.into()])
        .file(
            "vendor.txt",
            "tracking.vendor.example\ncdn.vendor.example\nshort.vendor.example\n",
        )
        .file("ads.txt", "ads.example\n")
        .toml(&format!(
            r#"
[[list]]
name = "vendor"
source = "vendor.txt"
categories = ["telemetry"]

[[list]]
name = "ads"
source = "ads.txt"
categories = ["ads"]

[default]
block = ["telemetry", "ads"]

[[client]]
name = "phone"
addresses = ["10.77.0.2", "fd77::2"]

[addresses]
categories = [ {categories} ]
nftables = "{nftables}"
"#
        ));
    let t = customize(t);
    let proc = in_namespace(&net.router, move || t.start());
    let dns = SocketAddr::new(net.router_v4.into(), proc.addr().port());
    Some(Setup {
        net,
        proc,
        _upstream: upstream,
        dns,
    })
}

impl Setup {
    /// The phone asks `name` (A, then AAAA) and waits for the answers.
    fn phone_asks(&self, name: &str) {
        let (server, from) = (self.dns, IpAddr::from(self.net.phone_v4));
        let name = name.to_string();
        in_namespace(&self.net.phone, move || {
            for qtype in [RecordType::A, RecordType::AAAA] {
                let sock = UdpSocket::bind((from, 0)).unwrap();
                sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let packet = encode_query(&name, qtype, &QueryOpts::udp(), 0x4242);
                sock.send_to(&packet, server).unwrap();
                let mut buf = [0u8; 2048];
                sock.recv_from(&mut buf)
                    .unwrap_or_else(|e| panic!("no answer to {name} from the phone: {e}"));
            }
        })
    }

    fn metrics(&self) -> String {
        in_namespace(&self.net.router, || self.proc.metrics().1)
    }

    fn cli(&self, args: &[&str]) -> CliOutput {
        in_namespace(&self.net.router, || self.proc.cli(args))
    }

    /// The elements of the router's nftables set `set` (empty when the set has none).
    fn set_elements(&self, set: &str) -> Vec<String> {
        let (ok, out) = self
            .net
            .router_nft(&["-j", "list", "set", "inet", "telesink", set]);
        assert!(ok, "nft list set {set}: {out}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let mut elems = Vec::new();
        for item in v["nftables"].as_array().unwrap() {
            for e in item["set"]["elem"].as_array().into_iter().flatten() {
                let val = if e["elem"].is_object() {
                    &e["elem"]["val"]
                } else {
                    e
                };
                if let Some(s) = val.as_str() {
                    elems.push(s.to_string());
                }
            }
        }
        elems.sort();
        elems
    }

    /// Polls until `cond` holds (no timing assertion: the deadline only ends a hung test).
    #[track_caller]
    fn wait(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cond() {
            if Instant::now() > deadline {
                let (_, table) = self.net.router_nft(&["list", "ruleset"]);
                panic!(
                    "waiting for {what}; ruleset:\n{table}\n{}",
                    self.proc.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn packets(&self, action: &str) -> Option<f64> {
        Exposition::parse(&self.metrics()).unwrap().value(
            "telesink_category_packets_total",
            &[
                ("client", "phone"),
                ("category", "telemetry"),
                ("action", action),
            ],
        )
    }

    /// Learns the telemetry addresses the way a phone teaches them: it asks the blocked names
    /// (looked up in the background) and an unrelated shop that shares a CDN address.
    fn learn(&self) {
        self.phone_asks("tracking.vendor.example");
        self.phone_asks("www.shop.example");
        self.phone_asks("cdn.vendor.example");
        self.wait("the telemetry addresses in the router's sets", || {
            self.set_elements("telemetry_v4") == vec![TELEMETRY_V4]
                && self.set_elements("telemetry_v6") == vec![TELEMETRY_V6]
        });
        self.wait("the shared CDN address left out", || {
            let out = self.cli(&["addresses", "telemetry", "--json"]);
            serde_json::from_str::<serde_json::Value>(&out.stdout)
                .map(|v| v["shared_left_out"] == serde_json::json!([SHARED]))
                .unwrap_or(false)
        });
        assert_eq!(self.set_elements("telemetry_v4"), vec![TELEMETRY_V4]);
    }
}

#[test]
fn count_mode_counts_a_devices_packets_to_telemetry_and_nothing_else() {
    let Some(mut s) = start("count_mode", "count", "\"telemetry\"", |t| t) else {
        return;
    };
    // Counting on: the phone's counter exists at 0 before any packet.
    assert_eq!(s.packets("counted"), Some(0.0), "{}", s.metrics());
    s.learn();

    let tele4 = s.net.listen_on_internet(ip(TELEMETRY_V4));
    let tele6 = s.net.listen_on_internet(ip(TELEMETRY_V6));
    let shared = s.net.listen_on_internet(ip(SHARED));
    let unrelated = s.net.listen_on_internet(ip(UNRELATED));
    s.net.send_from_phone(ip(TELEMETRY_V4), 3);
    s.net.send_from_phone(ip(TELEMETRY_V6), 2);
    s.net.send_from_phone(ip(SHARED), 2);
    s.net.send_from_phone(ip(UNRELATED), 2);
    // Counting lets everything through.
    let mut got = [0usize; 4];
    s.wait("every datagram at the internet side", || {
        for (n, sock) in got.iter_mut().zip([&tele4, &tele6, &shared, &unrelated]) {
            *n += drain(sock);
        }
        got == [3, 2, 2, 2]
    });
    // Five packets to telemetry, counted for the phone by name (both families); the shared and
    // unrelated ones are not.
    s.wait("the phone's packets counted", || {
        s.packets("counted") == Some(5.0)
    });
    assert_eq!(s.packets("dropped"), None);
    std::thread::sleep(Duration::from_secs(6)); // one more reading of the counters
    assert_eq!(s.packets("counted"), Some(5.0), "{}", s.metrics());

    // A record with a 3 s TTL: in the set, then gone.
    s.phone_asks("short.vendor.example");
    s.wait("the short-lived address in the set", || {
        s.set_elements("telemetry_v4")
            .contains(&SHORT_LIVED.to_string())
    });
    s.wait("the short-lived address expired", || {
        !s.set_elements("telemetry_v4")
            .contains(&SHORT_LIVED.to_string())
    });
    assert_eq!(s.set_elements("telemetry_v4"), vec![TELEMETRY_V4]);

    // SIGTERM: the table goes with the server; nothing else of the ruleset is touched.
    s.net.router_nft(&["add", "table", "inet", "somebody_else"]);
    let status = in_namespace(&s.net.router, || s.proc.terminate(Duration::from_secs(10)));
    assert!(
        status.is_some_and(|st| st.success()),
        "{status:?}\n{}",
        s.proc.logs()
    );
    let (_, tables) = s.net.router_nft(&["list", "tables"]);
    assert!(!tables.contains("telesink"), "{tables}");
    assert!(tables.contains("somebody_else"), "{tables}");
}

#[test]
fn drop_mode_stops_the_packets_and_counts_them() {
    let Some(s) = start("drop_mode", "drop", "\"telemetry\"", |t| t) else {
        return;
    };
    s.learn();
    let tele4 = s.net.listen_on_internet(ip(TELEMETRY_V4));
    let tele6 = s.net.listen_on_internet(ip(TELEMETRY_V6));
    let shared = s.net.listen_on_internet(ip(SHARED));
    let unrelated = s.net.listen_on_internet(ip(UNRELATED));
    s.net.send_from_phone(ip(TELEMETRY_V4), 3);
    s.net.send_from_phone(ip(TELEMETRY_V6), 1);
    s.net.send_from_phone(ip(SHARED), 2);
    // Sent last on the same path: once these arrived, the telemetry ones would have.
    s.net.send_from_phone(ip(UNRELATED), 2);
    let mut got = [0usize; 2];
    s.wait("the unrelated and shared datagrams", || {
        got[0] += drain(&shared);
        got[1] += drain(&unrelated);
        got == [2, 2]
    });
    s.wait("the dropped packets counted", || {
        s.packets("dropped") == Some(4.0)
    });
    assert_eq!(drain(&tele4), 0, "a telemetry datagram got through");
    assert_eq!(drain(&tele6), 0, "a telemetry datagram got through");
}

#[test]
fn a_reload_changes_the_categories_and_the_sets() {
    let Some(s) = start("reload_categories", "count", "\"telemetry\"", |t| t) else {
        return;
    };
    s.learn();
    let path = s.proc.config_path().to_path_buf();
    let text = std::fs::read_to_string(&path).unwrap();
    s.proc.write_file(
        path.file_name().unwrap().to_str().unwrap(),
        text.replace("categories = [ \"telemetry\" ]", "categories = [ \"ads\" ]"),
    );
    s.proc.signal("HUP");
    s.wait("the ads sets in place of telemetry's", || {
        let (_, table) = s.net.router_nft(&["list", "table", "inet", "telesink"]);
        table.contains("set ads_v4") && !table.contains("telemetry_v4")
    });
    s.phone_asks("ads.example");
    s.wait("the ads address in its set", || {
        s.set_elements("ads_v4") == vec![ADS]
    });
    let (status, body) = in_namespace(&s.net.router, || {
        http_get(s.proc.metrics_addr(), "/addresses/telemetry.txt")
    })
    .unwrap();
    assert_eq!(status, 404, "{body}");
}

#[test]
fn without_cap_net_admin_dns_is_served_and_the_error_says_so() {
    let Some(s) = start("no_cap_net_admin", "count", "\"telemetry\"", |t| {
        t.wrapped_in(&["setpriv", "--bounding-set", "-net_admin", "--"])
    }) else {
        return;
    };
    s.wait("the error naming CAP_NET_ADMIN", || {
        s.proc.logs().contains("CAP_NET_ADMIN")
    });
    // DNS is served all the same (blocked for the phone), and addresses are still learnt.
    s.phone_asks("tracking.vendor.example");
    s.wait("the addresses learnt without the table", || {
        s.cli(&["addresses", "telemetry"])
            .stdout
            .contains(TELEMETRY_V4)
    });
    let (_, tables) = s.net.router_nft(&["list", "tables"]);
    assert!(!tables.contains("telesink"), "{tables}");
}

#[test]
fn without_the_nft_program_the_error_says_what_to_install() {
    let Some(s) = start("no_nft", "drop", "\"telemetry\"", |t| {
        t.env("PATH", "/nonexistent-telesink-test")
    }) else {
        return;
    };
    s.wait("the error naming the nftables package", || {
        s.proc.logs().contains("install the nftables package")
    });
    s.phone_asks("tracking.vendor.example");
    let (_, tables) = s.net.router_nft(&["list", "tables"]);
    assert!(!tables.contains("telesink"), "{tables}");
}

#[test]
fn verify_sees_packets_after_t_when_dns_is_quiet() {
    let Some(s) = start("verify_packets", "count", "\"telemetry\"", |t| t) else {
        return;
    };
    s.learn();
    // T: the phone's last telemetry query is behind it; from now on its DNS is quiet.
    std::thread::sleep(Duration::from_millis(50));
    let t = jiff::Timestamp::now();
    // A probe after T, so that the next counter reading starts after T (readings are a few
    // seconds apart; packets of a reading that spans T are on neither side).
    let _tele6 = s.net.listen_on_internet(ip(TELEMETRY_V6));
    s.net.send_from_phone(ip(TELEMETRY_V6), 1);
    s.wait("the probe counted", || s.packets("counted") == Some(1.0));
    let _tele4 = s.net.listen_on_internet(ip(TELEMETRY_V4));
    s.net.send_from_phone(ip(TELEMETRY_V4), 4);
    s.wait("the packets counted", || s.packets("counted") == Some(5.0));

    let since = t.to_string();
    let mut out = s.cli(&[
        "verify",
        "--client",
        "phone",
        "--category",
        "telemetry",
        "--since",
        &since,
        "--json",
    ]);
    // The counts reach the query log with the reading; wait for it.
    s.wait("the packets in the query log", || {
        out = s.cli(&[
            "verify",
            "--client",
            "phone",
            "--category",
            "telemetry",
            "--since",
            &since,
            "--json",
        ]);
        serde_json::from_str::<serde_json::Value>(&out.stdout)
            .is_ok_and(|v| v["traffic"]["after"].as_u64().unwrap_or(0) >= 4)
    });
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["verdict"], "CONTINUING", "{}", out.all());
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert_eq!(v["after"], 0, "no DNS attempt after T: {}", out.all());
    assert_eq!(
        v["traffic"]["addresses"][0]["address"],
        TELEMETRY_V4,
        "{}",
        out.all()
    );
    assert_eq!(v["traffic"]["addresses"][0]["after"], 4, "{}", out.all());

    let text = s.cli(&[
        "verify",
        "--client",
        "phone",
        "--category",
        "telemetry",
        "--since",
        &since,
    ]);
    assert!(
        text.stdout
            .contains("CONTINUING: phone still sends packets to telemetry addresses")
            && text.stdout.contains("203.0.113.5 (4)"),
        "{}",
        text.all()
    );
}

#[test]
fn a_start_that_fails_after_the_table_was_made_removes_it() {
    let Some(net) = NetnsTrio::create("failed_start", &[]) else {
        return;
    };
    // A table of that name left by someone else is replaced, not merged into.
    let (ok, out) = net.router_nft(&["add", "table", "inet", "telesink"]);
    assert!(ok, "{out}");
    net.router_nft(&[
        "add",
        "set",
        "inet",
        "telesink",
        "stale",
        "{ type ipv4_addr; }",
    ]);
    // The table is made before the listeners bind; 10.99.0.1 is on no interface, so binding
    // fails and telesink exits with an error.
    let t = Telesink::new()
        .listen_also(&[ip("10.99.0.1")])
        .file("vendor.txt", "tracking.vendor.example\n")
        .toml(
            "[[list]]\nname = \"vendor\"\nsource = \"vendor.txt\"\ncategories = [\"telemetry\"]\n\n\
             [addresses]\nnftables = \"count\"\n",
        );
    let out = in_namespace(&net.router, || t.cli(&["run"]));
    assert_ne!(out.code, Some(0), "{}", out.all());
    assert!(out.all().contains("10.99.0.1"), "{}", out.all());
    assert!(
        out.all().contains("table inet telesink in place")
            && out.all().contains("table inet telesink removed"),
        "{}",
        out.all()
    );
    let (_, tables) = net.router_nft(&["list", "tables"]);
    assert!(!tables.contains("telesink"), "{tables}");
}

#[test]
fn verify_from_prometheus_sees_packets_after_t() {
    let test = "verify_from_prometheus_sees_packets_after_t";
    if support::prom::require(test, &["prometheus"]).is_none() {
        return;
    }
    let Some(s) = start("verify_prometheus", "count", "\"telemetry\"", |t| t) else {
        return;
    };
    s.learn();
    // Prometheus runs next to telesink, in the router namespace; so does this thread's HTTP.
    in_namespace(&s.net.router, || {
        let prom = support::prom::Prometheus::start(&[s.proc.metrics_addr()]);
        let counter = r#"telesink_category_packets_total{client="phone",category="telemetry",action="counted"}"#;
        let t = jiff::Timestamp::now();
        let t_s = t.as_millisecond() as f64 / 1000.0;
        // Samples of the counter at 0 after T, so that increase() over [T, U] sees it rise.
        prom.wait_for("a sample at 0 after T", Duration::from_secs(30), |p| {
            p.value(&format!("timestamp({counter})"))
                .is_some_and(|ts| ts > t_s + 1.0)
                && p.value(counter) == Some(0.0)
        });
        s.net.send_from_phone(ip(TELEMETRY_V4), 4);
        prom.wait_for("the packets in Prometheus", Duration::from_secs(30), |p| {
            p.value(counter) == Some(4.0)
        });
        std::thread::sleep(Duration::from_millis(1500));
        let until = jiff::Timestamp::now().to_string();
        let out = s.proc.cli(&[
            "verify",
            "--client",
            "phone",
            "--category",
            "telemetry",
            "--since",
            &t.to_string(),
            "--until",
            &until,
            "--prometheus",
            &prom.url(),
            "--json",
        ]);
        let v: serde_json::Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", out.all()));
        assert_eq!(v["verdict"], "CONTINUING", "{}", out.all());
        assert!(
            v["traffic"]["after"].as_f64().unwrap_or(0.0) > 0.0,
            "{}",
            out.all()
        );
        assert_eq!(
            v["traffic"]["addresses"],
            serde_json::json!([]),
            "{}",
            out.all()
        );
    });
}
