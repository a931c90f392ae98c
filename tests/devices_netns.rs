//! Device identity and verify's evidence rule against the kernel's real neighbour table.
//!
//! telesink runs in a "router" network namespace; a "device" namespace across a veth pair plays
//! one phone with a fixed MAC, two IPv4 and two IPv6 (privacy-style) addresses. Needs root:
//! under `CI=true` these tests fail when they cannot run; elsewhere they skip, saying why.

mod support;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime};

use support::netns::{in_namespace, NetnsPair, DEVICE_MAC};
use support::*;

/// Sends one UDP query from `from` (an address of the namespace this thread is in) and waits for
/// the answer's rcode.
fn ask(server: SocketAddr, from: IpAddr, name: &str) -> u8 {
    let sock = UdpSocket::bind((from, 0)).unwrap_or_else(|e| panic!("bind {from}: {e}"));
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let id = (Instant::now().elapsed().subsec_nanos() & 0xffff) as u16 ^ 0x5a5a;
    let packet = encode_query(name, RecordType::A, &QueryOpts::udp(), id);
    sock.send_to(&packet, server).unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = sock
        .recv_from(&mut buf)
        .unwrap_or_else(|e| panic!("no answer to {name} from {from} via {server}: {e}"));
    assert!(n >= 12);
    buf[3] & 0x0f
}

fn rfc3339(t: SystemTime) -> String {
    jiff::Timestamp::try_from(t).unwrap().to_string()
}

/// A running telesink inside the router namespace, answering on the router's veth addresses.
struct Setup {
    pair: NetnsPair,
    proc: TelesinkProcess,
    _upstream: TestUpstream,
    v4: SocketAddr,
    v6: SocketAddr,
}

fn start(test: &str, log_mode: &str, extra: &str, files: &[(&str, &str)]) -> Option<Setup> {
    let pair = NetnsPair::create(test)?;
    let upstream = in_namespace(&pair.router, || {
        let up = TestUpstream::start();
        up.set_default(Reply::a("198.51.100.7".parse().unwrap()));
        up
    });
    let mut t = Telesink::new()
        .upstream(&upstream)
        .allow_networks(&["127.0.0.0/8", "192.0.2.0/24", "2001:db8:5::/64"])
        .listen_also(&[pair.router_v4.into(), pair.router_v6.into()])
        .querylog_toml(&format!("log = \"{log_mode}\""))
        .file(
            "vendor.txt",
            "tracking.vendor.example\nmetrics.vendor.example\n",
        )
        .file("doh.txt", "dns.google\n")
        .toml(
            r#"
[[list]]
name = "vendor"
source = "vendor.txt"
categories = ["telemetry"]

[[list]]
name = "doh"
source = "doh.txt"
categories = ["bypass"]
"#,
        )
        .toml(extra);
    for (name, body) in files {
        t = t.file(name, body);
    }
    let proc = in_namespace(&pair.router, move || t.start());
    let port = proc.addr().port();
    Some(Setup {
        v4: SocketAddr::new(pair.router_v4.into(), port),
        v6: SocketAddr::new(pair.router_v6.into(), port),
        pair,
        proc,
        _upstream: upstream,
    })
}

impl Setup {
    /// One query from each of the device's addresses (IPv4 to the IPv4 listener, IPv6 to the
    /// IPv6 one); returns the rcodes.
    fn ask_from_every_address(&self, name: &str) -> Vec<u8> {
        let addrs = self.pair.device_addrs();
        let (v4, v6) = (self.v4, self.v6);
        let name = name.to_string();
        in_namespace(&self.pair.device, move || {
            addrs
                .iter()
                .map(|&a| ask(if a.is_ipv4() { v4 } else { v6 }, a, &name))
                .collect()
        })
    }

    /// Queries from the device's address `i` (0-1 IPv4, 2-3 IPv6).
    fn ask_from(&self, i: usize, name: &str) -> u8 {
        let a = self.pair.device_addrs()[i];
        let server = if a.is_ipv4() { self.v4 } else { self.v6 };
        let name = name.to_string();
        in_namespace(&self.pair.device, move || ask(server, a, &name))
    }

    /// `telesink ARGS -c CONFIG`, run inside the router namespace (it reads that namespace's
    /// neighbour table).
    fn cli(&self, args: &[&str]) -> CliOutput {
        in_namespace(&self.pair.router, || self.proc.cli(args))
    }

    fn metrics(&self) -> String {
        in_namespace(&self.pair.router, || self.proc.metrics().1)
    }

    /// Waits until the neighbour table has every device address (the first packet from a new
    /// address may arrive before the kernel has its MAC) and telesink has read it.
    fn warm_up(&self) {
        // Not DNS: a datagram to a closed port, which the router's kernel answers (ICMP), so it
        // learns each address's MAC; telesink hears of it through neighbour events.
        self.pair.send_from_device(&self.pair.device_addrs());
        std::thread::sleep(Duration::from_millis(1500));
    }
}

fn json(out: &CliOutput) -> serde_json::Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", out.all()))
}

#[test]
fn a_mac_names_one_device_on_all_its_addresses() {
    let extra = format!("[[client]]\nname = \"anna-phone\"\nmacs = [\"{DEVICE_MAC}\"]\n");
    let Some(s) = start("a_mac_names_one_device", "all", &extra, &[]) else {
        return;
    };
    s.warm_up();
    for _ in 0..3 {
        assert_eq!(
            s.ask_from_every_address("www.example.com"),
            vec![0, 0, 0, 0]
        );
        s.ask_from_every_address("tracking.vendor.example");
    }

    // Metrics: one series for the phone, none per address.
    let text = s.metrics();
    assert!(
        text.contains("telesink_queries_total{client=\"anna-phone\",result=\"forwarded\"}")
            || text.contains("client=\"anna-phone\""),
        "no anna-phone series:\n{text}"
    );
    for a in s.pair.device_addrs() {
        assert!(
            !text.contains(&format!("client=\"{a}\"")),
            "a series for the address {a}:\n{}",
            s.pair.router_neighbours()
        );
    }

    // The log: every row from any of the four addresses carries the name.
    std::thread::sleep(Duration::from_millis(1500)); // the writer's batch
    let log = s.cli(&["log", "--client", "anna-phone", "--limit", "100", "--json"]);
    assert_eq!(log.code, Some(0), "{}", log.all());
    let rows = json(&log);
    let rows = rows.as_array().expect("an array");
    let mut seen: Vec<String> = rows
        .iter()
        .filter(|r| r["name"] == "www.example.com")
        .map(|r| r["client_address"].as_str().unwrap_or("").to_string())
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 4, "rows by address: {seen:?}\n{}", log.stdout);

    // `telesink devices`: the phone with its MAC and every address.
    let dev = s.cli(&["devices", "--json"]);
    assert_eq!(dev.code, Some(0), "{}", dev.all());
    let v = json(&dev);
    let phone = v
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "anna-phone")
        .unwrap_or_else(|| panic!("no anna-phone in {v}"));
    assert_eq!(phone["mac"], DEVICE_MAC);
    assert_eq!(phone["named_by"], "config mac");
    let addrs: Vec<&str> = phone["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for a in s.pair.device_addrs() {
        assert!(
            addrs.contains(&a.to_string().as_str()),
            "{a} not in {addrs:?}"
        );
    }
    assert_eq!(phone["present"], true, "{phone}");
    // `explain --client ADDRESS` names the device as the DNS path does: by its MAC.
    let v6 = s.pair.device_v6[1].to_string();
    let ex = s.cli(&["explain", "tracking.vendor.example", "--client", &v6]);
    assert_eq!(ex.code, Some(0), "{}", ex.all());
    assert!(
        ex.stdout.contains("anna-phone, by MAC 02:5e:1e:51:4c:01"),
        "{}",
        ex.stdout
    );
    // By name, a client with MACs and no address is explained too.
    let ex = s.cli(&[
        "explain",
        "tracking.vendor.example",
        "--client",
        "anna-phone",
    ]);
    assert_eq!(ex.code, Some(0), "{}", ex.all());
    assert!(ex.stdout.contains("client   anna-phone"), "{}", ex.stdout);
    let text = s.cli(&["devices"]);
    assert!(
        text.stdout.contains("anna-phone") && text.stdout.contains(DEVICE_MAC),
        "{}",
        text.stdout
    );
}

#[test]
fn a_lease_names_a_device_the_config_does_not() {
    // dnsmasq's lease file: the device's IPv4 lease gives it a name on its IPv6 addresses too.
    let lease = format!("4102444800 {DEVICE_MAC} 192.0.2.50 livingroom-tv 01:{DEVICE_MAC}\n");
    let Some(s) = start(
        "a_lease_names_a_device",
        "all",
        "[clients]\nleases = [\"dnsmasq.leases\"]\n",
        &[("dnsmasq.leases", &lease)],
    ) else {
        return;
    };
    s.warm_up();
    for i in [1, 2, 3] {
        s.ask_from(i, "www.example.com");
    }
    let text = s.metrics();
    assert!(text.contains("client=\"livingroom-tv\""), "{text}");
    let dev = s.cli(&["devices", "--json"]);
    let v = json(&dev);
    let tv = v
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "livingroom-tv")
        .unwrap_or_else(|| panic!("no livingroom-tv in {v}"));
    assert_eq!(tv["named_by"], "lease");
    assert_eq!(tv["mac"], DEVICE_MAC);
}

/// The phases of the evidence test; each `PHASE` long, a query pair every `TICK`.
const PHASE: Duration = Duration::from_secs(6);
const TICK: Duration = Duration::from_millis(200);

fn phase(
    s: &Setup,
    telemetry: bool,
    ordinary: bool,
    extra: Option<&str>,
) -> (SystemTime, SystemTime) {
    let from = SystemTime::now();
    let end = Instant::now() + PHASE;
    let mut i = 0;
    if let Some(name) = extra {
        s.ask_from(2, name);
    }
    while Instant::now() < end {
        if telemetry {
            s.ask_from(i % 4, "tracking.vendor.example");
        }
        if ordinary {
            s.ask_from(i % 4, &format!("site{}.example.com", i % 7));
        }
        i += 1;
        std::thread::sleep(TICK);
    }
    (from, SystemTime::now())
}

fn verify(s: &Setup, window: (SystemTime, SystemTime)) -> (Option<i32>, serde_json::Value, String) {
    let (since, until) = (rfc3339(window.0), rfc3339(window.1));
    let out = s.cli(&[
        "verify",
        "--client",
        "phone",
        "--category",
        "telemetry",
        "--since",
        &since,
        "--until",
        &until,
        "--json",
    ]);
    let text = s.cli(&[
        "verify",
        "--client",
        "phone",
        "--category",
        "telemetry",
        "--since",
        &since,
        "--until",
        &until,
    ]);
    (out.code, json(&out), text.stdout)
}

fn evidence(mode: &str) {
    let extra = format!("[[client]]\nname = \"phone\"\nmacs = [\"{DEVICE_MAC}\"]\n");
    let Some(s) = start(&format!("evidence_{mode}"), mode, &extra, &[]) else {
        return;
    };
    s.warm_up();
    // Telemetry and ordinary queries; then nothing at all (the phone switched to its own DoH).
    phase(&s, true, true, None);
    let silent = phase(&s, false, false, None);
    // Again; then ordinary queries go on, telemetry stops, but the phone asks for dns.google.
    phase(&s, true, true, None);
    let bypass = phase(&s, false, true, Some("dns.google"));
    // Again; then ordinary queries go on and telemetry stops: a real stop.
    phase(&s, true, true, None);
    let stopped = phase(&s, false, true, None);
    std::thread::sleep(Duration::from_millis(1500)); // the writer's batch

    let (code, v, text) = verify(&s, silent);
    assert_eq!(
        code,
        Some(3),
        "silent window must be INCONCLUSIVE:\n{text}\n{v}"
    );
    assert!(
        text.to_lowercase().contains("quiet") || text.to_lowercase().contains("silent"),
        "the report must name the silence:\n{text}"
    );

    let (code, v, text) = verify(&s, bypass);
    assert_eq!(
        code,
        Some(3),
        "bypass window must be INCONCLUSIVE:\n{text}\n{v}"
    );
    assert!(
        text.contains("dns.google"),
        "the report must name the resolver:\n{text}"
    );

    // With `log = "matched"`, ordinary queries are counted per minute, and a minute that spans
    // T counts against STOPPED: these 6-second windows are too short to show it there.
    if mode == "all" {
        let (code, v, text) = verify(&s, stopped);
        assert_eq!(code, Some(0), "STOPPED expected:\n{text}\n{v}");
        assert!(text.contains("STOPPED"), "{text}");
    }
}

#[test]
fn verify_evidence_in_matched_mode() {
    evidence("matched");
}

#[test]
fn verify_evidence_in_all_mode() {
    evidence("all");
}
