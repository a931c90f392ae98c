#!/usr/bin/env python3
"""Runs the DNS servers one after another under dnsperf and writes the results.

Called by bench/run.sh (which builds, installs and generates first); see bench/README.md.
Everything is on loopback; every load is bounded (dnsperf -l / -n).

Per server and list size:
  1. start the server pinned to core 0 (taskset -c 0); time to load = start -> first blocked answer
  2. warm-up: two passes over the allowed names (fills the answer cache) and 2 s of blocked names
  3. for each workload (blocked, cached, mix): RUNS runs of `dnsperf -l DURATION -q 100` pinned to
     core 1 (qps, lost, average latency, server CPU µs per completed query from /proc/PID/stat),
     then one run at a fixed offered rate (-Q LAT_QPS, -v) for the latency percentiles
  4. RSS after load (VmRSS)
  5. reload (servers that reload in place): RUNS times, three fixed-rate dnsperf windows (see
     `reload_once`): none, then a reload (p99 and lost against the first window), then a second
     reload, timed (trigger to the first blocked answer for a new name) with its peak RSS
     (VmHWM reset through clear_refs, plus 10 ms VmRSS samples)

The `forwarded` workload (issue 17, `bench_forwarded`): NSD on 127.0.0.1:5398 (load core) answers
`*.fwd.bench.` with a wildcard; telesink, unbound and dnsdist in turn forward to it, and every
run sends fresh names once each, so that every query is a cache miss.
"""
import argparse
import json
import os
import platform
import resource
import re
import shutil
import signal
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
CLK = os.sysconf("SC_CLK_TCK")
PORT = 5300
UPSTREAM = 5399
SERVER_CPU = "0"
LOAD_CPU = "1"
# dnsperf's threads and sockets (`--load-threads`, `--load-clients`): with more than one server
# thread (SO_REUSEPORT), the kernel spreads queries over them by source port, so dnsperf needs
# several sockets to reach more than one.
LOAD_THREADS = 1
LOAD_CLIENTS = 1


def log(*a):
    print("[bench]", *a, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------
# DNS probe
# ------------------------------------------------------------------------------------------

def build_query(name, qid):
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for part in name.rstrip(".").split("."):
        q += bytes([len(part)]) + part.encode()
    return q + b"\x00" + struct.pack(">HH", 1, 1)


def parse_answer(pkt):
    """(rcode, [IPv4 strings of A records]) of a response, or None."""
    if len(pkt) < 12:
        return None
    qid, flags, qd, an, ns, ar = struct.unpack(">HHHHHH", pkt[:12])
    rcode = flags & 0xF
    i = 12

    def skip_name(i):
        while i < len(pkt):
            l = pkt[i]
            if l == 0:
                return i + 1
            if l & 0xC0 == 0xC0:
                return i + 2
            i += 1 + l
        return i

    for _ in range(qd):
        i = skip_name(i) + 4
    addrs = []
    for _ in range(an):
        i = skip_name(i)
        if i + 10 > len(pkt):
            break
        t, c, ttl, rdlen = struct.unpack(">HHIH", pkt[i:i + 10])
        i += 10
        if t == 1 and rdlen == 4:
            addrs.append(socket.inet_ntoa(pkt[i:i + 4]))
        i += rdlen
    return rcode, addrs


def ask(port, name, timeout=0.05):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        qid = int(time.monotonic_ns() & 0xFFFF)
        s.sendto(build_query(name, qid), ("127.0.0.1", port))
        while True:
            pkt, _ = s.recvfrom(4096)
            if struct.unpack(">H", pkt[:2])[0] == qid:
                return parse_answer(pkt)
    except (socket.timeout, ConnectionRefusedError, OSError):
        return None
    finally:
        s.close()


def blocked(ans):
    return ans is not None and (ans[0] == 3 or "0.0.0.0" in ans[1])


def wait_blocked(port, name, proc, limit=300.0, interval=0.01):
    """Seconds until `name` answers blocked, or None (process died / limit)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if proc is not None and proc.poll() is not None:
            return None
        if blocked(ask(port, name)):
            return time.monotonic() - t0
        time.sleep(interval)
    return None


# ------------------------------------------------------------------------------------------
# /proc
# ------------------------------------------------------------------------------------------

def cpu_ticks(pid):
    return sum(cpu_split(pid))


def cpu_split(pid):
    """(utime, stime) in clock ticks: user space, and the kernel's work charged to the process
    (system calls, and on loopback the receiving side of every datagram it sends)."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[11]), int(rest[12])  # utime, stime (fields 14, 15)


def status_kb(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_hwm(pid):
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def core_busy(cores):
    """(busy ticks, total ticks) of the cores in `cores` ("0" or "0,1") from /proc/stat."""
    want = {f"cpu{c} " for c in cores.split(",")}
    busy = total = 0
    with open("/proc/stat") as f:
        for line in f:
            if line[:line.find(" ") + 1] in want:
                v = [int(x) for x in line.split()[1:]]
                idle = v[3] + v[4]
                busy, total = busy + sum(v) - idle, total + sum(v)
    return busy, total


class RssSampler(threading.Thread):
    def __init__(self, pid, period=0.01):
        super().__init__(daemon=True)
        self.pid, self.period, self.peak, self.stop = pid, period, 0, threading.Event()

    def run(self):
        while not self.stop.is_set():
            v = status_kb(self.pid, "VmRSS")
            if v:
                self.peak = max(self.peak, v)
            time.sleep(self.period)


# ------------------------------------------------------------------------------------------
# dnsperf
# ------------------------------------------------------------------------------------------

def dnsperf(args, port, verbose=False, out=None, clients=None, limit=None):
    """`limit`: seconds after which dnsperf is killed (its DoH client can stall; then the figures
    are those of the summary it never printed: None)."""
    clients = clients or LOAD_CLIENTS
    cmd = ["taskset", "-c", LOAD_CPU, "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-c", str(clients),
           "-T", str(min(LOAD_THREADS, clients))] + args
    if verbose:
        cmd.append("-v")
    try:
        if out:
            with open(out, "w") as f:
                p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=limit)
            with open(out) as f:
                text = f.read()
        else:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=limit)
            text = p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        log(f"   !! dnsperf killed after {limit} s: {' '.join(cmd)}")
        text = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
    return cmd, parse_dnsperf(text)


def parse_dnsperf(text):
    r = {}
    for key, pat in [("sent", r"Queries sent:\s+(\d+)"), ("completed", r"Queries completed:\s+(\d+)"),
                     ("lost", r"Queries lost:\s+(\d+)"), ("qps", r"Queries per second:\s+([\d.]+)"),
                     ("avg_lat", r"Average Latency \(s\):\s+([\d.]+)"), ("runtime", r"Run time \(s\):\s+([\d.]+)")]:
        m = re.search(pat, text)
        r[key] = float(m.group(1)) if m else None
    m = re.search(r"Response codes:\s+(.*)", text)
    r["rcodes"] = m.group(1).strip() if m else ""
    # DoH: HTTP 200s received, counted even for an answer dnsperf then loses (see bench/README).
    m = re.search(r"HTTP/2 return codes:.*?\b200: (\d+)", text)
    r["http200"] = int(m.group(1)) if m else None
    lats = []
    for l in text.splitlines():
        # "> NOERROR name A 0.000123"; a timed-out query is "> T name A" (no latency).
        if l.startswith("> ") and not l.startswith("> T "):
            try:
                lats.append(float(l.rsplit(None, 1)[1]))
            except ValueError:
                pass
    if lats:
        lats.sort()
        pct = lambda p: lats[min(len(lats) - 1, int(p * len(lats)))]
        r["p50"], r["p99"], r["p999"], r["max"] = pct(0.50), pct(0.99), pct(0.999), lats[-1]
        r["lat_n"] = len(lats)
    return r


# ------------------------------------------------------------------------------------------
# Servers
# ------------------------------------------------------------------------------------------

SENTINEL = "reload-sentinel-{k}.benchreload.com"


class Server:
    name = "?"
    reloads = False

    def __init__(self, a, size, work):
        self.a, self.size, self.work = a, size, work
        self.data = a.data

    def list_names(self):
        return os.path.join(self.data, f"list-{self.size}.txt")

    def argv(self):
        raise NotImplementedError

    def env(self):
        return None

    def version(self):
        return ""

    def probe_name(self):
        # A blocked name in both list sizes (the first entry, queried through a subdomain).
        with open(self.list_names()) as f:
            for line in f:
                if line.strip() and not line.startswith("#"):
                    return "probe." + line.strip()

    def write_reload(self, k):
        pass

    def trigger_reload(self, proc):
        pass


def atomic_write(path, src, extra):
    tmp = os.path.join(os.path.dirname(os.path.dirname(path)), "." + os.path.basename(path) + ".tmp")
    with open(src, "rb") as fi, open(tmp, "wb") as fo:
        shutil.copyfileobj(fi, fo, 1 << 20)
        fo.write(extra.encode())
    return tmp


class Telesink(Server):
    name = "telesink"
    reloads = True
    port = PORT

    def setup(self):
        shutil.copy(self.list_names(), os.path.join(self.work, "list.txt"))
        with open(os.path.join(self.work, "telesink.toml"), "w") as f:
            f.write(f"""[server]
listen = ["127.0.0.1:{self.port}"]
allow_networks = ["127.0.0.0/8"]
rate_limit_qps = 0

[upstream]
servers = ["127.0.0.1:{UPSTREAM}"]
cache_entries = 50000

[blocking]
mode = "null"
ttl = 10

[[list]]
name = "bench"
source = "list.txt"
categories = ["telemetry"]
format = "domains"

[default]
block = ["telemetry"]

[metrics]
listen = ""

[querylog]
log = "none"
""")

    bin = None  # None: --telesink; set for --extra-telesink builds

    def argv(self):
        return [self.bin or self.a.telesink, "run", "-c", os.path.join(self.work, "telesink.toml")]

    def version(self):
        v = subprocess.run([self.bin or self.a.telesink, "--version"], capture_output=True, text=True).stdout.strip()
        if self.bin:
            return f"{v} ({self.bin})"
        rev = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "src"], capture_output=True, text=True).stdout.strip()
        return f"{v} (git {rev}{', src modified' if dirty else ''})"

    def write_reload(self, k):
        self.pending = atomic_write(os.path.join(self.work, "list.txt"), self.list_names(), SENTINEL.format(k=k) + "\n")

    def trigger_reload(self, proc):
        # The rename into the watched directory is the trigger (telesink's file watcher); a
        # SIGHUP as well would start a second reload.
        os.rename(self.pending, os.path.join(self.work, "list.txt"))

    def reload_took_ms(self, since_line):
        """telesink's own figure: `took_ms` of the reloads logged after line `since_line`."""
        out = []
        with open(os.path.join(self.work, "server.log"), errors="replace") as f:
            for i, line in enumerate(f):
                if i >= since_line and "reloaded" in line:
                    m = re.search(r"took_ms\S*?=\S*?([\d.]+)", re.sub(r"\x1b\[[0-9;]*m", "", line))
                    if m:
                        out.append(float(m.group(1)))
        return out


class Unbound(Server):
    name = "unbound"
    reloads = True

    def setup(self):
        shutil.copy(os.path.join(self.data, f"unbound-{self.size}.conf"), os.path.join(self.work, "blocklist.conf"))
        with open(os.path.join(self.work, "unbound.conf"), "w") as f:
            f.write(f"""server:
    interface: 127.0.0.1
    port: {PORT}
    do-ip6: no
    num-threads: 1
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "{self.work}"
    pidfile: ""
    use-syslog: no
    logfile: ""
    verbosity: 0
    access-control: 127.0.0.0/8 allow
    module-config: "iterator"
    do-not-query-localhost: no
    msg-cache-size: 32m
    rrset-cache-size: 64m
    so-rcvbuf: 4m
    include: "{self.work}/blocklist.conf"
remote-control:
    control-enable: no
forward-zone:
    name: "."
    forward-addr: 127.0.0.1@{UPSTREAM}
""")

    def argv(self):
        return ["unbound", "-d", "-c", os.path.join(self.work, "unbound.conf")]

    def version(self):
        out = subprocess.run(["unbound", "-V"], capture_output=True, text=True).stdout
        return out.splitlines()[0] if out else ""

    def write_reload(self, k):
        self.pending = atomic_write(os.path.join(self.work, "blocklist.conf"),
                                    os.path.join(self.data, f"unbound-{self.size}.conf"),
                                    f'local-zone: "{SENTINEL.format(k=k)}." always_null\n')

    def trigger_reload(self, proc):
        os.rename(self.pending, os.path.join(self.work, "blocklist.conf"))
        proc.send_signal(signal.SIGHUP)


class Dnsmasq(Server):
    name = "dnsmasq"
    reloads = False  # SIGHUP re-reads hosts files, not address= lines: a change needs a restart

    def setup(self):
        with open(os.path.join(self.work, "dnsmasq.conf"), "w") as f:
            f.write(f"""port={PORT}
listen-address=127.0.0.1
bind-interfaces
no-resolv
no-hosts
no-poll
server=127.0.0.1#{UPSTREAM}
cache-size=50000
pid-file=
user=root
conf-file={self.data}/dnsmasq-{self.size}.conf
""")

    def argv(self):
        return ["dnsmasq", "-k", "-C", os.path.join(self.work, "dnsmasq.conf")]

    def version(self):
        out = subprocess.run(["dnsmasq", "--version"], capture_output=True, text=True).stdout
        return out.splitlines()[0] if out else ""


class Hickory(Server):
    name = "hickory-dns"
    reloads = False  # hickory-dns 0.26 has no in-place reload; a change needs a restart

    def setup(self):
        shutil.copy(os.path.join(self.data, f"hickory-{self.size}.txt"), os.path.join(self.work, "blocklist.txt"))
        with open(os.path.join(self.work, "hickory.toml"), "w") as f:
            f.write(f"""listen_addrs_ipv4 = ["127.0.0.1"]
listen_addrs_ipv6 = []
# Run as root is fine on loopback; the default "nobody" group does not exist on Debian.
user = "root"
group = "root"

[[zones]]
zone = "."
zone_type = "External"

[[zones.stores]]
type = "blocklist"
wildcard_match = true
min_wildcard_depth = 2
sinkhole_ipv4 = "0.0.0.0"
sinkhole_ipv6 = "::"
ttl = 10
lists = ["blocklist.txt"]
log_clients = false

[[zones.stores]]
type = "forward"
options = {{ cache_size = 50000 }}

[[zones.stores.name_servers]]
ip = "127.0.0.1"
trust_negative_responses = true
connections = [{{ port = {UPSTREAM}, protocol = {{ type = "udp" }} }}]
""")

    def argv(self):
        return [self.a.hickory, "-c", os.path.join(self.work, "hickory.toml"), "-z", self.work,
                "-p", str(PORT)] + self.a.hickory_args.split()

    def env(self):
        e = dict(os.environ)
        e.setdefault("RUST_LOG", "warn")
        return e

    def version(self):
        out = subprocess.run([self.a.hickory, "--version"], capture_output=True, text=True).stdout
        return out.strip()


class Floor(Server):
    name = "floor"

    def setup(self):
        pass

    def argv(self):
        return [self.a.responder, "floor", f"127.0.0.1:{PORT}"]

    def version(self):
        return "bench/tools/responder.rs floor (recv_from + send_to, QR flipped)"


class TelesinkLog(Telesink):
    """telesink with the query log writing every query (`log = "all"`), on its own ports, for
    the query-log cost (bench_querylog)."""
    name = "telesink-log"
    reloads = False
    port = PORT + 2
    metrics = PORT + 1
    log = True


    def setup(self):
        super().setup()
        path = os.path.join(self.work, "telesink.toml")
        with open(path) as f:
            text = f.read()
        text = text.replace('[metrics]\nlisten = ""', f'[metrics]\nlisten = "127.0.0.1:{self.metrics}"')
        if self.log:
            text = text.replace('log = "none"', 'path = "querylog.db"\nlog = "all"')
        with open(path, "w") as f:
            f.write(text)

    def counters(self, proc):
        """CPU ticks of the log writer thread, and rows dropped so far (from /metrics)."""
        ticks = 0
        for tid in os.listdir(f"/proc/{proc.pid}/task"):
            try:
                with open(f"/proc/{proc.pid}/task/{tid}/comm") as f:
                    if f.read().strip() != "querylog-writer":
                        continue
                ticks += cpu_ticks(f"{proc.pid}/task/{tid}")
            except OSError:
                pass
        dropped = None
        try:
            with socket.create_connection(("127.0.0.1", self.metrics), timeout=2) as c:
                c.sendall(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
                body = b""
                while chunk := c.recv(65536):
                    body += chunk
            m = re.search(rb"^telesink_querylog_dropped_total (\S+)", body, re.M)
            dropped = float(m.group(1)) if m else None
        except OSError:
            pass
        return {"writer_ticks": ticks, "dropped": dropped}


class TelesinkNoLog(TelesinkLog):
    """The same with `log = "none"`: metrics on in both, so that only the log differs."""
    name = "telesink-nolog"
    port = PORT + 4
    metrics = PORT + 3
    log = False


class TelesinkAddresses(Telesink):
    """telesink with [addresses] on (issue 21): blocked names handed to the learner and looked
    up in the background, forwarded answers handed over; nftables off (the bench has no
    router). Compare with "telesink" on the blocked and cached workloads."""
    name = "telesink+addresses"

    def setup(self):
        super().setup()
        with open(os.path.join(self.work, "telesink.toml"), "a") as f:
            f.write("""
[addresses]
categories = ["telemetry"]
resolve_blocked = true
nftables = "off"
""")


SERVERS = {"telesink": Telesink, "telesink+addresses": TelesinkAddresses, "unbound": Unbound, "dnsmasq": Dnsmasq, "hickory": Hickory, "floor": Floor}


# ------------------------------------------------------------------------------------------
# Measurement
# ------------------------------------------------------------------------------------------

def port_free(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def start(server, logpath):
    for _ in range(100):
        if port_free(getattr(server, "port", PORT)):
            break
        time.sleep(0.1)
    argv = ["taskset", "-c", SERVER_CPU] + server.argv()
    logf = open(logpath, "w")
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, env=server.env(), cwd=server.work)
    return proc, t0, argv


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def measure_run(proc, qfile, a, port=PORT, server=None):
    k0 = server.counters(proc) if hasattr(server, "counters") else None
    c0, b0 = cpu_ticks(proc.pid), core_busy(SERVER_CPU)
    t0 = time.monotonic()
    cmd, r = dnsperf(["-d", qfile, "-l", str(a.duration), "-q", str(a.outstanding)], port)
    wall = time.monotonic() - t0
    c1, b1 = cpu_ticks(proc.pid), core_busy(SERVER_CPU)
    ticks = c1 - c0
    r["server_cpu_s"] = ticks / CLK
    r["cpu_us_per_q"] = (ticks / CLK * 1e6 / r["completed"]) if r.get("completed") else None
    # How busy core 0 was with other processes (other builds): a noise indicator.
    busy, total = b1[0] - b0[0], b1[1] - b0[1]
    r["core0_other_pct"] = round(100.0 * max(0, busy - ticks) / total, 1) if total else None
    r["wall"] = wall
    r["cmd"] = " ".join(cmd)
    if k0 is not None:
        k1 = server.counters(proc)
        r["writer_us_per_q"] = ((k1["writer_ticks"] - k0["writer_ticks"]) / CLK * 1e6 / r["completed"]
                                if r.get("completed") else None)
        if k0["dropped"] is not None and k1["dropped"] is not None and r.get("completed"):
            r["log_dropped"] = k1["dropped"] - k0["dropped"]
            r["log_dropped_pct"] = 100.0 * r["log_dropped"] / r["completed"]
    return r


def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def bench_server(kind, size, a, results):
    work = os.path.join(a.work, f"{kind.replace('@', '-')}-{size}")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    if kind.startswith("telesink@"):
        server = Telesink(a, size, work)
        server.name, server.bin = kind, a.extra[kind]
    else:
        server = SERVERS[kind](a, size, work)
    server.setup()
    entry = {"server": server.name, "size": size, "version": server.version()}
    log(f"== {server.name} {size}: {entry['version']}")
    proc, t0, argv = start(server, os.path.join(work, "server.log"))
    entry["argv"] = " ".join(argv)
    try:
        if kind == "floor":
            time.sleep(0.3)
            entry["load_s"] = None
        else:
            probe = server.probe_name()
            dt = wait_blocked(PORT, probe, proc, limit=a.load_limit)
            if dt is None:
                entry["error"] = "server did not answer blocked for " + probe + " (see " + work + "/server.log)"
                log(entry["error"])
                with open(os.path.join(work, "server.log")) as f:
                    log(f.read()[-2000:])
                results.append(entry)
                return
            entry["load_s"] = round(time.monotonic() - t0, 3)
        entry["rss_loaded_kb"] = status_kb(proc.pid, "VmRSS")
        entry["hwm_load_kb"] = status_kb(proc.pid, "VmHWM")
        log(f"   loaded in {entry['load_s']} s, RSS {entry['rss_loaded_kb']} kB, peak {entry['hwm_load_kb']} kB")

        # Warm-up: the cache, then the blocked path.
        dnsperf(["-d", os.path.join(a.data, "q-cached.txt"), "-n", "2", "-q", "20"], PORT)
        dnsperf(["-d", os.path.join(a.data, f"q-blocked-{size}.txt"), "-l", "2", "-q", str(a.outstanding)], PORT)

        # Sanity: a blocked subdomain answers blocked, a warmed allowed name the upstream's address.
        if kind != "floor":
            with open(os.path.join(a.data, f"q-blocked-{size}.txt")) as f:
                f.readline()
                bname = f.readline().split()[0]
            with open(os.path.join(a.data, "q-cached.txt")) as f:
                cname = f.readline().split()[0]
            b_ans, c_ans = ask(PORT, bname, 0.5), ask(PORT, cname, 0.5)
            entry["check"] = {"blocked": [bname, b_ans], "cached": [cname, c_ans]}
            if not blocked(b_ans) or not c_ans or "192.0.2.1" not in c_ans[1]:
                log(f"   !! unexpected answers: {entry['check']}")
                entry["check_failed"] = True
        entry["workloads"] = {}
        for wl in a.workloads:
            qfile = os.path.join(a.data, "q-cached.txt" if wl == "cached" else f"q-{wl}-{size}.txt")
            runs = []
            for i in range(a.runs):
                r = measure_run(proc, qfile, a)
                runs.append(r)
                log(f"   {wl} run {i + 1}: {r['qps']:.0f} qps, {r['cpu_us_per_q'] or 0:.2f} µs/q, "
                    f"lost {r['lost']:.0f}, avg {1e3 * (r['avg_lat'] or 0):.3f} ms, rcodes {r['rcodes']}, "
                    f"other load on core 0 {r['core0_other_pct']}%")
            _, lat = dnsperf(["-d", qfile, "-l", str(a.lat_duration), "-Q", str(a.lat_qps), "-q", str(a.outstanding)],
                             PORT, verbose=True, out=os.path.join(a.work, f"{kind}-latency-{wl}.txt"))
            os.unlink(os.path.join(a.work, f"{kind}-latency-{wl}.txt"))
            log(f"   {wl} at {a.lat_qps} qps: p50 {1e3 * (lat.get('p50') or 0):.3f} ms, "
                f"p99 {1e3 * (lat.get('p99') or 0):.3f} ms, lost {lat['lost']}")
            entry["workloads"][wl] = {
                "runs": runs,
                "qps": med([r["qps"] for r in runs]),
                "cpu_us_per_q": med([r["cpu_us_per_q"] for r in runs]),
                "avg_lat_ms": med([1e3 * r["avg_lat"] for r in runs if r["avg_lat"] is not None]),
                "lost": med([r["lost"] for r in runs]),
                "core0_other_pct": med([r["core0_other_pct"] for r in runs]),
                "fixed_rate": {k: lat.get(k) for k in ("qps", "lost", "avg_lat", "p50", "p99", "p999", "max", "lat_n")},
            }
        entry["rss_after_kb"] = status_kb(proc.pid, "VmRSS")

        if server.reloads and a.reload_runs > 0:
            reloads = []
            for k in range(1, a.reload_runs + 1):
                reloads.append(reload_once(server, proc, k, a, work, entry.get("load_s")))
            entry["reloads"] = reloads
            entry["reload_s"] = med([r["reload_s"] for r in reloads])
            entry["reload_peak_kb"] = med([r["peak_kb"] for r in reloads])
            entry["reload_steady_kb"] = med([r["steady_kb"] for r in reloads])
            entry["reload_p99_ms"] = med([r["p99_ms"] for r in reloads])
            entry["reload_baseline_p99_ms"] = med([r["baseline_p99_ms"] for r in reloads])
            entry["reload_lost"] = med([r["lost"] for r in reloads])
            entry["reload_served_pct"] = med([r["served_pct"] for r in reloads])
        entry["rss_end_kb"] = status_kb(proc.pid, "VmRSS")
    finally:
        stop(proc)
        results.append(entry)


def bench_querylog(size, a, results):
    """The query log's cost: telesink with `log = "none"` and with `log = "all"`, both running,
    both pinned to the server core, measured in alternation (none, all, all, none, ...) so that
    drift in the machine's speed falls on both alike."""
    servers, procs = [], []
    entry = {"server": "querylog-cost", "size": size, "pairs": []}
    try:
        for cls in (TelesinkNoLog, TelesinkLog):
            work = os.path.join(a.work, f"{cls.name}-qlog-{size}")
            shutil.rmtree(work, ignore_errors=True)
            os.makedirs(work)
            srv = cls(a, size, work)
            srv.setup()
            proc, _, argv = start(srv, os.path.join(work, "server.log"))
            servers.append(srv)
            procs.append(proc)
            if wait_blocked(srv.port, srv.probe_name(), proc, limit=a.load_limit) is None:
                entry["error"] = f"{cls.name} did not answer (see {work}/server.log)"
                log(entry["error"])
                return
            entry.setdefault("argv", []).append(" ".join(argv))
        entry["version"] = servers[0].version()
        log(f"== query-log cost {size}: {entry['version']}")
        qfile = os.path.join(a.data, f"q-blocked-{size}.txt")
        for srv in servers:
            dnsperf(["-d", qfile, "-l", "2", "-q", str(a.outstanding)], srv.port)
        for i in range(a.runs):
            order = [0, 1] if i % 2 == 0 else [1, 0]
            pair = [None, None]
            for j in order:
                pair[j] = measure_run(procs[j], qfile, a, port=servers[j].port,
                                      server=servers[j] if servers[j].log else None)
                time.sleep(0.5)  # let the writer take what is queued before the next run
            n, w = pair
            log(f"   pair {i + 1}: none {n['qps']:.0f} qps {n['cpu_us_per_q'] or 0:.2f} µs/q | "
                f"all {w['qps']:.0f} qps {w['cpu_us_per_q'] or 0:.2f} µs/q, writer {w.get('writer_us_per_q') or 0:.2f} "
                f"µs/q, dropped {w.get('log_dropped_pct', 0):.1f} % | ratio {w['qps'] / n['qps']:.3f}")
            entry["pairs"].append({"none": n, "all": w, "qps_ratio": w["qps"] / n["qps"] if n["qps"] else None})
        entry["fixed"] = []
        for rate in a.qlog_rates:
            row = {"rate": rate}
            for j, key in ((0, "none"), (1, "all")):
                k0 = servers[j].counters(procs[j]) if servers[j].log else None
                _, lat = dnsperf(["-d", qfile, "-l", str(a.lat_duration), "-Q", str(rate), "-q", str(a.outstanding)],
                                 servers[j].port, verbose=True, out=os.path.join(a.work, "qlog-latency.txt"))
                row[key] = {k: lat.get(k) for k in ("qps", "completed", "lost", "p50", "p99", "max")}
                if k0 is not None:
                    time.sleep(1.0)
                    k1 = servers[j].counters(procs[j])
                    if k0["dropped"] is not None and k1["dropped"] is not None:
                        row[key]["log_dropped"] = k1["dropped"] - k0["dropped"]
            log(f"   at {rate} qps: p99 none {1e3 * (row['none'].get('p99') or 0):.3f} ms, all "
                f"{1e3 * (row['all'].get('p99') or 0):.3f} ms; rows dropped {row['all'].get('log_dropped')} of "
                f"{row['all'].get('completed')}")
            entry["fixed"].append(row)
        entry["qps_ratio"] = med([p["qps_ratio"] for p in entry["pairs"]])
        entry["none_qps"] = med([p["none"]["qps"] for p in entry["pairs"]])
        entry["all_qps"] = med([p["all"]["qps"] for p in entry["pairs"]])
        entry["none_cpu"] = med([p["none"]["cpu_us_per_q"] for p in entry["pairs"]])
        entry["all_cpu"] = med([p["all"]["cpu_us_per_q"] for p in entry["pairs"]])
        entry["writer_cpu"] = med([p["all"].get("writer_us_per_q") for p in entry["pairs"]])
        entry["dropped_pct"] = med([p["all"].get("log_dropped_pct") for p in entry["pairs"]])
    finally:
        for proc in procs:
            stop(proc)
        results.append(entry)


def reload_once(server, proc, k, a, work, load_s):
    """Three windows of dnsperf at the same fixed rate on blocked names, one after the other:
    1. no reload: the baseline tail this VM gives right now;
    2. a reload triggered after 1 s, and nothing else from the harness: the tail during a reload;
    3. another reload, timed (the harness asks for the new name every 10 ms) and with RSS
       samples every 10 ms: reload time and peak RSS under the same load.
    The polling and the sampler run on the load core and delay dnsperf's own receive loop, which
    shows in its latencies (p99 0.1 -> 0.5-1 ms here), so windows 1 and 2 leave them out."""
    # Long enough to span the whole reload: about as long as the first load took, plus margin.
    window = int(max(a.reload_window, 1.5 * (load_s or 0) + 4))
    log_lines = sum(1 for _ in open(os.path.join(work, "server.log"), errors="replace"))
    # dnsperf -v writes a line per answer: not into the server's directory, whose file watcher
    # would wake for each write and take the server core from the listener.
    out = os.path.join(a.work, f"{server.name}-reload-{k}.txt")
    fixed = ["-d", os.path.join(a.data, f"q-blocked-{server.size}.txt"), "-l", str(window),
             "-Q", str(a.lat_qps), "-q", str(a.outstanding)]

    # 1. Baseline.
    _, base = dnsperf(fixed, PORT, verbose=True, out=out)

    # 2. The tail across a reload.
    server.write_reload(f"{k}a")
    during = {}

    def load(into, verbose):
        _, r = dnsperf(fixed, PORT, verbose=verbose, out=out if verbose else None)
        into.update(r)

    t = threading.Thread(target=load, args=(during, True))
    t.start()
    time.sleep(1.0)
    server.trigger_reload(proc)
    t.join()
    in_window = blocked(ask(PORT, SENTINEL.format(k=f"{k}a")))
    if not in_window:
        log("   !! the reload did not finish inside the latency window; widen --reload-window")
        wait_blocked(PORT, SENTINEL.format(k=f"{k}a"), proc, limit=a.load_limit)
    if during.get("p99") is None or base.get("p99") is None:
        log(f"   !! no latency figures from a dnsperf window; its output is in {out}")
    else:
        os.unlink(out)

    # 3. Timed, with the peak RSS.
    server.write_reload(f"{k}b")
    steady = status_kb(proc.pid, "VmRSS")
    hwm_reset = reset_hwm(proc.pid)
    timed = {}
    sampler = RssSampler(proc.pid)
    sampler.start()
    t = threading.Thread(target=load, args=(timed, False))
    t.start()
    time.sleep(1.0)
    server.trigger_reload(proc)
    dt = wait_blocked(PORT, SENTINEL.format(k=f"{k}b"), proc, limit=a.load_limit)
    t.join()
    sampler.stop.set()
    sampler.join()
    hwm = status_kb(proc.pid, "VmHWM") if hwm_reset else None
    peak = max(x for x in (hwm, sampler.peak) if x)
    r = {"reload_s": round(dt, 3) if dt is not None else None, "steady_kb": steady, "peak_kb": peak,
         "hwm_kb": hwm, "sampled_peak_kb": sampler.peak,
         "p99_ms": 1e3 * during["p99"] if during.get("p99") and in_window else None,
         "baseline_p99_ms": 1e3 * base["p99"] if base.get("p99") else None,
         "lost": during.get("lost"), "window_s": window, "rate": a.lat_qps,
         # dnsperf stops sending while 100 queries are outstanding, so a stalled server shows as
         # fewer queries served, more than as lost ones: served / offered is the stall figure.
         "served_pct": round(100.0 * (during.get("completed") or 0) / (a.lat_qps * window), 1)}
    if hasattr(server, "reload_took_ms"):
        time.sleep(0.2)
        r["server_took_ms"] = server.reload_took_ms(log_lines)
    log(f"   reload {k}: {r['reload_s']} s, RSS steady {steady} kB, peak {peak} kB, "
        f"p99 {fmt(r['p99_ms'], '{:.3f}')} ms (same window without a reload: {fmt(r['baseline_p99_ms'], '{:.3f}')} ms), "
        f"lost {r['lost']}, served {r['served_pct']}% of offered (dnsperf at {a.lat_qps} qps for {window} s)"
        + (f"; server says took_ms {r['server_took_ms']}" if r.get("server_took_ms") else ""))
    return r


# ------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------

# ------------------------------------------------------------------------------------------
# Forwarded path (issue 17): every query a cache miss, answered by a local NSD
# ------------------------------------------------------------------------------------------

FWD_ZONE = "fwd.bench"
FWD_ANSWER = "192.0.2.1"
NSD_PORT = 5398


def fwd_query_file(a, tag, n):
    """`n` names under FWD_ZONE, unique to `tag` (server and run): q0.TAG.fwd.bench ... Deterministic;
    a run never repeats a name and no two runs share one, so every query is a cache miss."""
    os.makedirs(a.fwd_data, exist_ok=True)
    path = os.path.join(a.fwd_data, f"q-fwd-{tag}.txt")
    with open(path, "w") as f:
        f.writelines(f"q{i}.{tag}.{FWD_ZONE} A\n" for i in range(n))
    return path


class Nsd(Server):
    """The authoritative upstream: NSD with a wildcard `*.fwd.bench. A 192.0.2.1`, RRL off, in the
    foreground as the harness's child, pinned to the load core (with dnsperf)."""
    name = "nsd"
    port = NSD_PORT

    def setup(self):
        with open(os.path.join(self.work, f"{FWD_ZONE}.zone"), "w") as f:
            f.write(f"""$ORIGIN {FWD_ZONE}.
$TTL 3600
@   IN SOA ns.{FWD_ZONE}. hostmaster.{FWD_ZONE}. 1 3600 600 86400 3600
@   IN NS  ns.{FWD_ZONE}.
ns  IN A   127.0.0.1
*   IN A   {FWD_ANSWER}
""")
        rrl = "    rrl-ratelimit: 0\n    rrl-whitelist-ratelimit: 0\n" if self.has_rrl() else ""
        with open(os.path.join(self.work, "nsd.conf"), "w") as f:
            f.write(f"""server:
    ip-address: 127.0.0.1@{NSD_PORT}
    port: {NSD_PORT}
    do-ip6: no
    server-count: 1
    username: ""
    chroot: ""
    zonesdir: "{self.work}"
    database: ""
    zonelistfile: "{self.work}/zone.list"
    xfrdfile: "{self.work}/xfrd.state"
    xfrdir: "{self.work}"
    pidfile: "{self.work}/nsd.pid"
    logfile: "{self.work}/nsd.log"
    verbosity: 0
{rrl}remote-control:
    control-enable: no
zone:
    name: "{FWD_ZONE}"
    zonefile: "{FWD_ZONE}.zone"
""")

    @staticmethod
    def has_rrl():
        # Built without --enable-ratelimit, NSD rejects the rrl-* keys; with it, RRL is on by default.
        out = subprocess.run(["nsd", "-v"], capture_output=True, text=True)
        return "ratelimit" in (out.stdout + out.stderr)

    def argv(self):
        return ["nsd", "-d", "-c", os.path.join(self.work, "nsd.conf")]

    def version(self):
        out = subprocess.run(["nsd", "-v"], capture_output=True, text=True)
        return ((out.stdout + out.stderr).splitlines() or [""])[0]


class TelesinkFwd(Telesink):
    def setup(self):
        with open(os.path.join(self.work, "list.txt"), "w") as f:
            f.write("blocked.example\n")
        with open(os.path.join(self.work, "telesink.toml"), "w") as f:
            f.write(f"""[server]
listen = ["127.0.0.1:{PORT}"]
allow_networks = ["127.0.0.0/8"]
rate_limit_qps = 0

[upstream]
servers = ["127.0.0.1:{NSD_PORT}"]

[blocking]
mode = "null"

[[list]]
name = "bench"
source = "list.txt"
categories = ["telemetry"]
format = "domains"

[default]
block = ["telemetry"]

[metrics]
listen = ""

[querylog]
log = "none"
""")


class UnboundFwd(Unbound):
    def setup(self):
        # Cache sizes as shipped; iterator only (no validation); one thread.
        with open(os.path.join(self.work, "unbound.conf"), "w") as f:
            f.write(f"""server:
    interface: 127.0.0.1
    port: {PORT}
    do-ip6: no
    num-threads: 1
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "{self.work}"
    pidfile: ""
    use-syslog: no
    logfile: ""
    verbosity: 0
    access-control: 127.0.0.0/8 allow
    module-config: "iterator"
    do-not-query-localhost: no
remote-control:
    control-enable: no
forward-zone:
    name: "."
    forward-addr: 127.0.0.1@{NSD_PORT}
""")


class Dnsdist(Server):
    name = "dnsdist"

    def setup(self):
        # One backend (NSD); the health check asks a name NSD answers (the default,
        # a.root-servers.net, would be REFUSED and mark it down). No console, no packet cache.
        with open(os.path.join(self.work, "dnsdist.conf"), "w") as f:
            f.write(f"""setSecurityPollSuffix("")
setLocal("127.0.0.1:{PORT}")
setACL({{"127.0.0.0/8"}})
newServer({{address="127.0.0.1:{NSD_PORT}", checkName="ns.{FWD_ZONE}."}})
""")

    def argv(self):
        return ["dnsdist", "--supervised", "--disable-syslog", "-C", os.path.join(self.work, "dnsdist.conf")]

    def version(self):
        out = subprocess.run(["dnsdist", "--version"], capture_output=True, text=True).stdout
        return out.splitlines()[0] if out else ""


FWD_SERVERS = {"telesink": TelesinkFwd, "unbound": UnboundFwd, "dnsdist": Dnsdist}


def wait_answer(port, name, proc, limit=30.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if proc is not None and proc.poll() is not None:
            return False
        ans = ask(port, name, timeout=0.2)
        if ans is not None and ans[0] == 0 and FWD_ANSWER in ans[1]:
            return True
        time.sleep(0.05)
    return False


def fwd_run(proc, a, tag, port=PORT):
    """One saturating run over fresh names: each sent once (-n 1), at most DURATION s."""
    qfile = fwd_query_file(a, tag, a.duration * a.fwd_max_qps)
    s0, b0 = cpu_split(proc.pid), core_busy(SERVER_CPU)
    cmd, r = dnsperf(["-d", qfile, "-n", "1", "-l", str(a.duration), "-q", str(a.outstanding)], port)
    s1, b1 = cpu_split(proc.pid), core_busy(SERVER_CPU)
    os.unlink(qfile)
    user, system = s1[0] - s0[0], s1[1] - s0[1]
    ticks = user + system
    r["server_cpu_s"] = ticks / CLK
    per_q = lambda t: (t / CLK * 1e6 / r["completed"]) if r.get("completed") else None
    r["cpu_us_per_q"] = per_q(ticks)
    r["user_us_per_q"], r["sys_us_per_q"] = per_q(user), per_q(system)
    busy, total = b1[0] - b0[0], b1[1] - b0[1]
    r["core0_other_pct"] = round(100.0 * max(0, busy - ticks) / total, 1) if total else None
    r["cmd"] = " ".join(cmd)
    if r.get("sent") and r["sent"] >= a.duration * a.fwd_max_qps:
        log(f"   !! the query file ran out (--fwd-max-qps {a.fwd_max_qps} too low): run shorter than {a.duration} s")
    return r


def fwd_latency(a, tag, port):
    """A fixed-rate run (-Q FWD_LAT_QPS) over fresh names, -v: p50/p99 from the per-query lines."""
    n = int(a.fwd_lat_qps * a.lat_duration * 1.2) + 1000
    qfile = fwd_query_file(a, tag, n)
    out = os.path.join(a.work, f"fwd-latency-{tag}.txt")
    _, r = dnsperf(["-d", qfile, "-n", "1", "-l", str(a.lat_duration), "-Q", str(a.fwd_lat_qps), "-q",
                    str(a.outstanding)], port, verbose=True, out=out)
    os.unlink(out)
    os.unlink(qfile)
    return r


def bench_forwarded(a, res):
    """NSD alone (the latency baseline), then each forwarder in turn in front of it."""
    out = {"servers": [], "nsd": {}}
    res["forwarded"] = out
    nsd_work = os.path.join(a.work, "fwd-nsd")
    shutil.rmtree(nsd_work, ignore_errors=True)
    os.makedirs(nsd_work)
    nsd = Nsd(a, "fwd", nsd_work)
    nsd.setup()
    if not port_free(NSD_PORT):
        out["error"] = f"127.0.0.1:{NSD_PORT} is taken (another NSD?): forwarded workload not run"
        log("!!", out["error"])
        return
    logf = open(os.path.join(nsd_work, "stdout.log"), "w")
    nproc = subprocess.Popen(["taskset", "-c", LOAD_CPU] + nsd.argv(), stdout=logf, stderr=subprocess.STDOUT,
                             cwd=nsd_work)
    try:
        if not wait_answer(NSD_PORT, f"check.{FWD_ZONE}", nproc):
            out["error"] = "NSD did not answer (see " + os.path.join(nsd_work, "nsd.log") + ")"
            log("!!", out["error"])
            return
        out["nsd"] = {"version": nsd.version(), "rrl_off": Nsd.has_rrl()}
        log(f"forwarded: NSD on 127.0.0.1:{NSD_PORT} ({out['nsd']['version']})")
        for i in range(a.runs):
            lat = fwd_latency(a, f"nsd-lat{i}", NSD_PORT)
            out["nsd"].setdefault("lat_runs", []).append(lat)
            log(f"   nsd alone at {a.fwd_lat_qps} qps: p50 {1e3 * (lat.get('p50') or 0):.3f} ms, "
                f"p99 {1e3 * (lat.get('p99') or 0):.3f} ms, lost {lat.get('lost')}")
        out["nsd"]["p50"] = med([r.get("p50") for r in out["nsd"]["lat_runs"]])
        out["nsd"]["p99"] = med([r.get("p99") for r in out["nsd"]["lat_runs"]])
        for kind in a.fwd_servers:
            work = os.path.join(a.work, f"fwd-{kind}")
            shutil.rmtree(work, ignore_errors=True)
            os.makedirs(work)
            server = FWD_SERVERS[kind](a, "fwd", work)
            server.setup()
            entry = {"server": kind, "version": server.version(), "runs": [], "lat_runs": []}
            out["servers"].append(entry)
            proc, _, argv = start(server, os.path.join(work, "server.log"))
            entry["argv"] = " ".join(argv)
            try:
                if not wait_answer(PORT, f"ready.{kind}.{FWD_ZONE}", proc):
                    entry["error"] = f"did not forward (see {work}/server.log)"
                    log("!!", kind, entry["error"])
                    continue
                log(f"forwarded: {kind}")
                # Warm-up on names of its own: upstream sockets open, threads started.
                dnsperf(["-d", fwd_query_file(a, f"{kind}-warm", 2000), "-n", "1", "-q", "20"], PORT)
                os.unlink(os.path.join(a.fwd_data, f"q-fwd-{kind}-warm.txt"))
                for i in range(a.runs):
                    r = fwd_run(proc, a, f"{kind}-r{i}")
                    entry["runs"].append(r)
                    log(f"   run {i + 1}: {r['qps'] or 0:.0f} qps, {r['cpu_us_per_q'] or 0:.2f} µs/q "
                        f"(user {r['user_us_per_q'] or 0:.2f}, system {r['sys_us_per_q'] or 0:.2f}), "
                        f"lost {r['lost']}, core0 other {r['core0_other_pct']}%, rcodes {r['rcodes']}")
                    if [c for c in re.findall(r"([A-Z]+) \d+", r["rcodes"]) if c != "NOERROR"]:
                        log(f"   !! {kind} answered something other than NOERROR: {r['rcodes']}")
                for i in range(a.runs):
                    lat = fwd_latency(a, f"{kind}-lat{i}", PORT)
                    entry["lat_runs"].append(lat)
                    log(f"   at {a.fwd_lat_qps} qps: p50 {1e3 * (lat.get('p50') or 0):.3f} ms, "
                        f"p99 {1e3 * (lat.get('p99') or 0):.3f} ms, lost {lat.get('lost')}")
                entry["qps"] = med([r["qps"] for r in entry["runs"]])
                entry["cpu_us_per_q"] = med([r["cpu_us_per_q"] for r in entry["runs"]])
                entry["user_us_per_q"] = med([r["user_us_per_q"] for r in entry["runs"]])
                entry["sys_us_per_q"] = med([r["sys_us_per_q"] for r in entry["runs"]])
                entry["lost"] = med([r["lost"] for r in entry["runs"]])
                entry["rcodes"] = [r["rcodes"] for r in entry["runs"]]
                entry["core0_other_pct"] = med([r["core0_other_pct"] for r in entry["runs"]])
                entry["p50"] = med([r.get("p50") for r in entry["lat_runs"]])
                entry["p99"] = med([r.get("p99") for r in entry["lat_runs"]])
                entry["lat_lost"] = med([r.get("lost") for r in entry["lat_runs"]])
                if entry["p99"] is not None and out["nsd"]["p99"] is not None:
                    entry["p99_added"] = entry["p99"] - out["nsd"]["p99"]
            finally:
                stop(proc)
    finally:
        stop(nproc)
        logf.close()


def report_forwarded(res, a):
    fw = res.get("forwarded")
    if fw is None:
        return []
    L = ["\n## Forwarded path (every query a cache miss)\n"]
    if fw.get("error"):
        return L + [fw["error"] + "\n"]
    nsd = fw["nsd"]
    L.append(f"Upstream: {nsd.get('version', '')} on 127.0.0.1:{NSD_PORT} (core {LOAD_CPU}, with dnsperf), authoritative "
             f"for `{FWD_ZONE}.` with `*.{FWD_ZONE}. A {FWD_ANSWER}`, response rate limiting "
             f"{'off (rrl-ratelimit: 0)' if nsd.get('rrl_off') else 'not built in'}. Each run sends fresh names "
             f"(`qN.SERVER-rRUN.{FWD_ZONE}`), each once (`dnsperf -n 1 -l {a.duration}`, {a.outstanding} outstanding): "
             "no query is a cache hit. *µs/q* = the server's utime+stime / completed queries (*user*, *system*: "
             "each alone; on loopback the system part includes the receiving side of every datagram the "
             "server sends, so it is the floor no user-space work removes); median of "
             f"{a.runs} runs. *p50/p99* from runs at a fixed {a.fwd_lat_qps} qps ({a.lat_duration} s, fresh names, median "
             f"of {a.runs}); *p99 added* = that p99 minus NSD's own p99 at the same rate (dnsperf straight at NSD: "
             f"p50 {fmt(nsd.get('p50') and 1e3 * nsd['p50'], '{:.3f}')} ms, p99 {fmt(nsd.get('p99') and 1e3 * nsd['p99'], '{:.3f}')} ms). "
             "Ratios are telesink / that row (qps: >1 means telesink serves more; µs/q: <1 means telesink spends less; "
             "*user telesink/x*: user time alone, the part a server's own code decides).\n")
    L.append("| server | qps | µs/q | user µs/q | system µs/q | lost | p50 ms | p99 ms | p99 added ms | lost at fixed rate | core0 other | qps telesink/x | µs/q telesink/x | user telesink/x |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    t = next((e for e in fw["servers"] if e["server"] == "telesink" and not e.get("error")), None)
    for e in fw["servers"]:
        if e.get("error"):
            L.append(f"| {e['server']} | {e['error']} |||||||||||||")
            continue
        ms = lambda v: fmt(v and 1e3 * v, "{:.3f}")
        L.append("| " + " | ".join([
            e["server"], fmt(e["qps"]), fmt(e["cpu_us_per_q"], "{:.2f}"), fmt(e.get("user_us_per_q"), "{:.2f}"),
            fmt(e.get("sys_us_per_q"), "{:.2f}"), fmt(e["lost"]), ms(e.get("p50")),
            ms(e.get("p99")), ms(e.get("p99_added")), fmt(e.get("lat_lost")), fmt(e["core0_other_pct"], "{:.0f}%"),
            "" if e["server"] == "telesink" else ratio(t and t["qps"], e["qps"]),
            "" if e["server"] == "telesink" else ratio(t and t["cpu_us_per_q"], e["cpu_us_per_q"]),
            "" if e["server"] == "telesink" else ratio(t and t.get("user_us_per_q"), e.get("user_us_per_q")),
        ]) + " |")
    L.append("\nResponse codes of the saturating runs: " + "; ".join(
        f"{e['server']}: {' / '.join(e.get('rcodes', []))}" for e in fw["servers"]) + ".\n")
    L.append("Versions: " + "; ".join(f"{e['server']}: {e.get('version', '')}" for e in fw["servers"]) + "\n")
    return L


# ------------------------------------------------------------------------------------------
# Encrypted transports (issue 19): the blocked and cached workloads over DoT and DoH
# ------------------------------------------------------------------------------------------

DOT_PORT = 5853
DOH_PORT = 5443
TLS_NAME = "bench.test"
TLS_TRANSPORTS = ("dot", "doh")
TLS_WORKLOADS = ("blocked", "cached")


def make_cert(a):
    """A self-signed P-256 certificate for TLS_NAME (and *.TLS_NAME, 127.0.0.1), made at run time;
    dnsperf does not verify it, nor does the harness's own client. One pair for every server."""
    d = os.path.join(a.work, "tls-cert")
    os.makedirs(d, exist_ok=True)
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", f"/CN={TLS_NAME}",
                    "-addext", f"subjectAltName=DNS:{TLS_NAME},DNS:*.{TLS_NAME},IP:127.0.0.1",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


def replace_once(text, old, new):
    if old not in text:
        raise RuntimeError(f"config template changed: {old!r} not found")
    return text.replace(old, new, 1)


class TelesinkTls(Telesink):
    """The blocklist telesink of the UDP workloads plus `tls_listen` and `https_listen`.
    Idle timeout and connection cap raised so that the memory probe's connections stay open."""

    def setup(self):
        super().setup()
        path = os.path.join(self.work, "telesink.toml")
        with open(path) as f:
            text = f.read()
        text = replace_once(text, "rate_limit_qps = 0\n", f"""rate_limit_qps = 0
tls_listen = ["127.0.0.1:{DOT_PORT}"]
https_listen = ["127.0.0.1:{DOH_PORT}"]
tls_cert = "{self.a.tls_cert}"
tls_key = "{self.a.tls_key}"
tls_name = "{TLS_NAME}"
tcp_idle_timeout = "60s"
max_tcp_connections = {self.a.tls_conns + 100}
""")
        with open(path, "w") as f:
            f.write(text)


class UnboundTls(Unbound):
    """The blocklist unbound of the UDP workloads (local-zone always_null, forwarding to the fast
    upstream) plus DoT (`tls-port`) and DoH (`https-port`, unbound's nghttp2 support).
    incoming-num-tcp is per listening port and preallocated; above half of it in use unbound cuts
    the idle timeout (to 0 above 80 %), hence twice the memory probe's connections."""
    reloads = False

    def setup(self):
        super().setup()
        path = os.path.join(self.work, "unbound.conf")
        with open(path) as f:
            text = f.read()
        text = replace_once(text, f"    interface: 127.0.0.1\n    port: {PORT}\n", f"""    interface: 127.0.0.1@{PORT}
    interface: 127.0.0.1@{DOT_PORT}
    interface: 127.0.0.1@{DOH_PORT}
    port: {PORT}
    tls-port: {DOT_PORT}
    https-port: {DOH_PORT}
    http-endpoint: "/dns-query"
    tls-service-key: "{self.a.tls_key}"
    tls-service-pem: "{self.a.tls_cert}"
    incoming-num-tcp: {2 * self.a.tls_conns + 100}
    tcp-idle-timeout: 60000
""")
        with open(path, "w") as f:
            f.write(text)


class DnsdistTls(Server):
    """dnsdist in front of the fast upstream (127.0.0.1:UPSTREAM), as the other servers: a packet
    cache for the cached names, and the blocklist as a SuffixMatchNode (every name and its
    subdomains, as telesink's and unbound's lists) with SpoofAction 0.0.0.0, read from the plain
    list at start. Rules run before the cache, so a blocked name never reaches it."""
    name = "dnsdist"
    reloads = False

    def setup(self):
        lst = self.list_names()
        with open(os.path.join(self.work, "dnsdist.conf"), "w") as f:
            f.write(f"""setSecurityPollSuffix("")
setLocal("127.0.0.1:{PORT}")
setACL({{"127.0.0.0/8"}})
addTLSLocal("127.0.0.1:{DOT_PORT}", "{self.a.tls_cert}", "{self.a.tls_key}", {{provider="openssl"}})
addDOHLocal("127.0.0.1:{DOH_PORT}", "{self.a.tls_cert}", "{self.a.tls_key}", "/dns-query", {{idleTimeout=60}})
setTCPRecvTimeout(60)
newServer({{address="127.0.0.1:{UPSTREAM}"}})
pc = newPacketCache(50000)
getPool(""):setCache(pc)
smn = newSuffixMatchNode()
for line in io.lines("{lst}") do
  if line ~= "" and line:sub(1, 1) ~= "#" then smn:add(line) end
end
addAction(SuffixMatchNodeRule(smn, true), SpoofAction("0.0.0.0"))
""")

    def argv(self):
        return ["dnsdist", "--supervised", "--disable-syslog", "-C", os.path.join(self.work, "dnsdist.conf")]

    def version(self):
        out = subprocess.run(["dnsdist", "--version"], capture_output=True, text=True).stdout
        return out.splitlines()[0] if out else ""


TLS_SERVERS = {"telesink": TelesinkTls, "unbound": UnboundTls, "dnsdist": DnsdistTls}

TLS_BLOCKED_HOW = {
    "telesink": "the list as `format = \"domains\"` (each name and its subdomains), `mode = \"null\"`: A 0.0.0.0",
    "unbound": "`local-zone: \"NAME.\" always_null` per name: A 0.0.0.0",
    "dnsdist": "the list in a SuffixMatchNode (Lua `smn:add` per line at start), "
               "`addAction(SuffixMatchNodeRule(smn), SpoofAction(\"0.0.0.0\"))`: A 0.0.0.0",
}


def tls_context():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def recv_exact(s, n):
    b = b""
    while len(b) < n:
        chunk = s.recv(n - len(b))
        if not chunk:
            raise ConnectionError("closed by the server")
        b += chunk
    return b


def dot_query(s, name, qid=0x1234):
    """One query on an open DoT connection: (rcode, addresses) or an exception."""
    q = build_query(name, qid)
    s.sendall(struct.pack(">H", len(q)) + q)
    n = struct.unpack(">H", recv_exact(s, 2))[0]
    return parse_answer(recv_exact(s, n))


def dot_open(ctx, port=DOT_PORT, timeout=5.0):
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    # SNI = tls_name itself: no device id (as a DDR client); the same for every server.
    return ctx.wrap_socket(raw, server_hostname=TLS_NAME)


def doh_ask(name):
    """One POST over HTTP/2 with curl (the harness has no HTTP/2 of its own): (rcode, addresses)."""
    p = subprocess.run(["curl", "-sk", "--http2", "--max-time", "5", "-H", "content-type: application/dns-message",
                        "-H", "accept: application/dns-message", "--data-binary", "@-",
                        f"https://127.0.0.1:{DOH_PORT}/dns-query"], input=build_query(name, 0), capture_output=True)
    return parse_answer(p.stdout) if p.returncode == 0 else None


def wait_tcp(port, proc, limit=30.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def dnsperf_tls_args(transport, a):
    if transport == "dot":
        return ["-m", "dot"], DOT_PORT
    if transport == "doh":
        return ["-m", "doh", "-O", f"doh-uri=https://127.0.0.1:{DOH_PORT}/dns-query",
                "-O", f"doh-method={a.doh_method}"], DOH_PORT
    return ["-m", "udp"], PORT


def tls_shape(transport, a):
    """(connections, outstanding) of dnsperf on a transport. DoH: more connections than queries
    outstanding, so that a connection seldom has two, as dnsperf 2.10-2.14's DoH client handles one answer per TLS read: a second
    answer in the same read loses its DNS message (its HTTP 200 still counted) and what is left
    in its buffer waits for the socket to become readable again, stalling the connection until
    its queries time out (bench/README, "DoH and dnsperf")."""
    if transport == "doh":
        return a.doh_clients, a.doh_outstanding
    return a.tls_clients, a.outstanding


def doh_get_uri(line):
    """A dnsperf query line (`name TYPE`) as an RFC 8484 GET URI: the DNS message (ID 0, RD,
    one question, class IN) in base64url without padding."""
    import base64
    name, qtype = (line.split() + ["A"])[:2]
    types = {"A": 1, "AAAA": 28, "HTTPS": 65, "TXT": 16, "PTR": 12, "MX": 15}
    wire = bytearray(b"\x00\x00\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00")
    for label in name.rstrip(".").split("."):
        wire += bytes([len(label)]) + label.encode()
    wire += b"\x00" + types.get(qtype.upper(), 1).to_bytes(2, "big") + b"\x00\x01"
    dns = base64.urlsafe_b64encode(bytes(wire)).rstrip(b"=").decode()
    return f"https://127.0.0.1:{DOH_PORT}/dns-query?dns={dns}"


def h2load(qfile, a, clients, once=False):
    """The DoH load from h2load (nghttp2) instead of dnsperf: GET URIs made from the query file,
    `clients` HTTP/2 connections with one stream in flight each, for --duration seconds. h2load
    does not lose answers that arrive together (dnsperf's DoH client does, bench/README)."""
    uris = qfile + ".doh-uris"
    if not os.path.exists(uris):
        with open(qfile) as f, open(uris, "w") as out:
            for line in f:
                if line.strip():
                    out.write(doh_get_uri(line) + "\n")
    with open(uris) as f:
        count = sum(1 for _ in f)
    # once: every URI once (a warm-up); else for --duration seconds, round and round.
    span = ["-n", str(count)] if once else ["-D", str(a.duration)]
    cmd = ["taskset", "-c", LOAD_CPU, "h2load", "-i", uris, "-c", str(clients), "-m", "1",
           "-t", "1"] + span
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.duration + 60)
    text = p.stdout + p.stderr
    # h2load sees HTTP statuses, not DNS rcodes: the answers themselves are checked before the
    # runs (doh_ask), and only 2xx count.
    r = {"rcodes": ""}
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored, (\d+) timeout", text)
    if m:
        done, ok, failed, errored, timeout = (int(m.group(i)) for i in (3, 4, 5, 6, 7))
        r.update(completed=float(ok), sent=float(done + timeout), lost=float(failed + errored + timeout))
    m = re.search(r"status codes: (\d+) 2xx", text)
    r["http200"] = float(m.group(1)) if m else None
    m = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", text)
    r["runtime"], r["qps"] = (float(m.group(1)), float(m.group(2))) if m else (None, None)
    m = re.search(r"time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", text)
    if m:
        r["avg_lat"] = float(m.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[m.group(2)]
    return cmd, r


def tls_run(proc, qfile, a, transport):
    mode, port = dnsperf_tls_args(transport, a)
    clients, outstanding = tls_shape(transport, a)
    c0, b0 = cpu_ticks(proc.pid), core_busy(SERVER_CPU)
    if transport == "doh" and a.doh_load == "h2load":
        cmd, r = h2load(qfile, a, clients)
    else:
        cmd, r = dnsperf(mode + ["-d", qfile, "-l", str(a.duration), "-q", str(outstanding)], port,
                         clients=clients, limit=a.duration + 30)
    c1, b1 = cpu_ticks(proc.pid), core_busy(SERVER_CPU)
    ticks = c1 - c0
    r["server_cpu_s"] = ticks / CLK
    # Per answer the server sent: over DoH that is the HTTP 200s dnsperf received (it loses some
    # of those answers itself, see tls_shape), else the completed queries.
    answered = r.get("http200") if transport == "doh" and r.get("http200") else r.get("completed")
    r["answered"] = answered
    r["cpu_us_per_q"] = (ticks / CLK * 1e6 / answered) if answered else None
    busy, total = b1[0] - b0[0], b1[1] - b0[1]
    r["core0_other_pct"] = round(100.0 * max(0, busy - ticks) / total, 1) if total else None
    r["cmd"] = " ".join(cmd)
    return r


def conn_memory(pid, n, a):
    """Memory per open DoT connection: VmRSS with `n` connections open minus VmRSS with none,
    divided by n; first just after the handshake (idle), then after one query on each. Ten
    connections are opened, used and closed first, so that lazily made TLS state is in the
    baseline. Connections the server closed show as unanswered queries."""
    ctx = tls_context()
    for s in [dot_open(ctx) for _ in range(10)]:
        dot_query(s, "prime.example")
        s.close()
    time.sleep(1.0)
    base = status_kb(pid, "VmRSS")
    conns, t0 = [], time.monotonic()
    try:
        for _ in range(n):
            conns.append(dot_open(ctx))
        opened_s = time.monotonic() - t0
        time.sleep(1.0)
        idle = status_kb(pid, "VmRSS")
        answered = 0
        with open(os.path.join(a.data, "q-cached.txt")) as f:
            names = [l.split()[0] for _, l in zip(range(n), f)]
        for i, s in enumerate(conns):
            try:
                if dot_query(s, names[i % len(names)], qid=i & 0xFFFF):
                    answered += 1
            except (OSError, ConnectionError):
                pass
        time.sleep(0.5)
        used = status_kb(pid, "VmRSS")
    finally:
        for s in conns:
            s.close()
    time.sleep(1.0)
    closed = status_kb(pid, "VmRSS")
    per = lambda kb: round(1024.0 * (kb - base) / n) if kb is not None and base is not None else None
    r = {"n": n, "rss_base_kb": base, "rss_idle_kb": idle, "rss_used_kb": used, "rss_closed_kb": closed,
         "bytes_per_idle_conn": per(idle), "bytes_per_used_conn": per(used), "answered": answered,
         "open_s": round(opened_s, 2)}
    log(f"   DoT memory: {n} connections opened in {opened_s:.1f} s; RSS {base} kB -> {idle} kB idle "
        f"({r['bytes_per_idle_conn']} B/conn) -> {used} kB after a query each ({r['bytes_per_used_conn']} B/conn, "
        f"{answered} answered) -> {closed} kB after closing")
    return r


def bench_encrypted(a, res):
    """Each of --tls-servers in turn with its blocklist and the fast upstream, queried over the
    transports asked for (dot, doh; udp with --tls-udp for reference) with the blocked and cached
    query files; dnsperf with --tls-clients connections. Then memory per open DoT connection."""
    out = {"servers": []}
    res["encrypted"] = out
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4 * a.tls_conns + 1024
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want if hard == resource.RLIM_INFINITY else min(want, hard), hard))
    a.tls_cert, a.tls_key = make_cert(a)
    transports = (["udp"] if a.tls_udp else []) + a.tls_transports
    out["transports"] = transports
    for si, size in enumerate(a.sizes):
        for kind in a.tls_servers:
            work = os.path.join(a.work, f"tls-{kind}-{size}")
            shutil.rmtree(work, ignore_errors=True)
            os.makedirs(work)
            server = TLS_SERVERS[kind](a, size, work)
            server.setup()
            entry = {"server": kind, "size": size, "version": server.version(), "results": {}}
            out["servers"].append(entry)
            log(f"== {kind} {size} over {','.join(transports)}: {entry['version']}")
            proc, t0, argv = start(server, os.path.join(work, "server.log"))
            entry["argv"] = " ".join(argv)
            try:
                probe = server.probe_name()
                if wait_blocked(PORT, probe, proc, limit=a.load_limit) is None or not all(
                        wait_tcp(p, proc) for p in (DOT_PORT, DOH_PORT)):
                    entry["error"] = f"did not start (see {work}/server.log)"
                    log("!!", kind, entry["error"])
                    with open(os.path.join(work, "server.log"), errors="replace") as f:
                        log(f.read()[-2000:])
                    continue
                entry["load_s"] = round(time.monotonic() - t0, 3)
                cached_q = os.path.join(a.data, "q-cached.txt")
                blocked_q = os.path.join(a.data, f"q-blocked-{size}.txt")
                dnsperf(["-d", cached_q, "-n", "2", "-q", "20"], PORT)  # fills the cache over UDP
                # Sanity over each transport: a blocked subdomain, a cached allowed name.
                with open(blocked_q) as f:
                    f.readline()
                    bname = f.readline().split()[0]
                with open(cached_q) as f:
                    cname = f.readline().split()[0]
                try:
                    s = dot_open(tls_context())
                    entry["tls"] = {"version": s.version(), "cipher": s.cipher()[0]}
                    check = {"dot": [dot_query(s, bname), dot_query(s, cname)]}
                    s.close()
                except (OSError, ConnectionError) as e:
                    log(f"   !! DoT query failed: {e}")
                    entry["tls"], check = {}, {"dot": [None, None]}
                check["doh"] = [doh_ask(bname), doh_ask(cname)]
                entry["check"] = check
                for t, (b_ans, c_ans) in check.items():
                    if not blocked(b_ans) or not c_ans or "192.0.2.1" not in c_ans[1]:
                        log(f"   !! unexpected answers over {t}: {bname} -> {b_ans}, {cname} -> {c_ans}")
                        entry["check_failed"] = True
                log(f"   loaded in {entry['load_s']} s; {entry['tls'].get('version')} {entry['tls'].get('cipher')}; "
                    f"over DoT {bname} -> {check['dot'][0]}, {cname} -> {check['dot'][1]}")
                if si == 0 and a.tls_conns > 0:
                    try:
                        entry["dot_memory"] = conn_memory(proc.pid, a.tls_conns, a)
                    except (OSError, ConnectionError) as e:
                        entry["dot_memory"] = {"error": str(e)}
                        log(f"   !! DoT memory probe failed: {e}")
                for t in transports:
                    mode, port = dnsperf_tls_args(t, a)
                    clients, outstanding = tls_shape(t, a)
                    # Warm-up per transport: dnsdist's packet cache keys UDP and TCP answers apart.
                    if t == "doh" and a.doh_load == "h2load":
                        h2load(cached_q, a, min(20, clients), once=True)
                    else:
                        dnsperf(mode + ["-d", cached_q, "-n", "1", "-q", str(min(20, outstanding))], port,
                                clients=min(20, clients), limit=60)
                        dnsperf(mode + ["-d", blocked_q, "-l", "2", "-q", str(outstanding)], port,
                                clients=clients, limit=40)
                    for wl in a.tls_workloads:
                        qfile = cached_q if wl == "cached" else blocked_q
                        runs = []
                        for i in range(a.runs):
                            r = tls_run(proc, qfile, a, t)
                            runs.append(r)
                            log(f"   {t} {wl} run {i + 1}: {r['qps'] or 0:.0f} qps, {r['cpu_us_per_q'] or 0:.2f} µs/q, "
                                f"lost {r['lost']}, avg {1e3 * (r['avg_lat'] or 0):.3f} ms, rcodes {r['rcodes']}, "
                                f"core0 other {r['core0_other_pct']}%")
                            if [c for c in re.findall(r"([A-Z]+) \d+", r["rcodes"]) if c != "NOERROR"] or not r.get("completed"):
                                log(f"   !! {kind} over {t}: {r['rcodes'] or 'no answers'}")
                        entry["results"][f"{t}/{wl}"] = {
                            "runs": runs,
                            "qps": med([r["qps"] for r in runs]),
                            "cpu_us_per_q": med([r["cpu_us_per_q"] for r in runs]),
                            "lost": med([r["lost"] for r in runs]),
                            "avg_lat_ms": med([1e3 * r["avg_lat"] for r in runs if r["avg_lat"] is not None]),
                            "core0_other_pct": med([r["core0_other_pct"] for r in runs]),
                            "answered": med([r["answered"] for r in runs if r.get("answered") is not None]),
                            "rcodes": [r["rcodes"] for r in runs],
                        }
                entry["rss_after_kb"] = status_kb(proc.pid, "VmRSS")
            finally:
                stop(proc)


def report_encrypted(res, a):
    enc = res.get("encrypted")
    if enc is None:
        return []
    L = ["\n## DNS over TLS and HTTPS (issue 19)\n"]
    L.append(f"Each server on core {SERVER_CPU} with its blocklist (UDP/TCP 127.0.0.1:{PORT}, DoT :{DOT_PORT}, DoH "
             f":{DOH_PORT}/dns-query) in front of the fast upstream; one self-signed P-256 certificate (openssl, made "
             f"at run time). dnsperf on core {LOAD_CPU}, one thread: `-m dot -c {a.tls_clients} -q {a.outstanding}`; "
             + (f"DoH from h2load (nghttp2), not dnsperf: GET URIs made from the query files, `-c {a.doh_clients} -m 1` "
                "(one stream in flight per connection), only HTTP 2xx counted (the DNS answers are checked before the "
                "runs); "
                if a.doh_load == "h2load" else
                f"`-m doh -O doh-method={a.doh_method} -c {a.doh_clients} -q {a.doh_outstanding}` (at most one query "
                "outstanding per connection most of the time: dnsperf's DoH client loses answers that arrive "
                "together, see bench/README); ") +
             f"{a.duration} s per run, "
             f"median of {a.runs}; a warm-up pass over the cached names on each transport first. *µs/q* = the server's "
             "utime+stime (all threads) / answers: completed queries, over DoH the HTTP 200s dnsperf received (it "
             "counts one even for an answer it then loses, which *lost* counts). *÷ best peer* = that row's µs/q over the lowest µs/q of "
             "unbound and dnsdist on the same list, transport and workload (target for telesink: ≤ 0.80).\n")
    L.append("Blocked names: " + "; ".join(f"{k}: {v}" for k, v in TLS_BLOCKED_HOW.items() if k in a.tls_servers)
             + ". Cached names: telesink's and unbound's answer caches, dnsdist's packet cache.\n")
    L.append("| list | transport | workload | server | qps | µs/q | lost | avg ms | core0 other | ÷ best peer |")
    L.append("|---|---|---|---|---:|---:|---:|---:|---:|---:|")
    by = {(e["server"], e["size"]): e for e in enc["servers"]}
    verdicts = []
    for size in a.sizes:
        for t in enc.get("transports", []):
            for wl in a.tls_workloads:
                key = f"{t}/{wl}"
                cells = [(s, by.get((s, size))) for s in a.tls_servers]
                peers = [e["results"][key]["cpu_us_per_q"] for s, e in cells
                         if s != "telesink" and e and key in e.get("results", {}) and e["results"][key]["cpu_us_per_q"]]
                best = min(peers) if peers else None
                best_name = next((s for s, e in cells if s != "telesink" and e and key in e.get("results", {})
                                  and e["results"][key]["cpu_us_per_q"] == best), None)
                for s, e in cells:
                    if not e:
                        continue
                    w = e.get("results", {}).get(key)
                    if not w:
                        L.append(f"| {size} | {t} | {wl} | {s} | {e.get('error', 'no data')} ||||||")
                        continue
                    rt = w["cpu_us_per_q"] / best if best and w["cpu_us_per_q"] is not None else None
                    L.append("| " + " | ".join([size, t, wl, s, fmt(w["qps"]), fmt(w["cpu_us_per_q"], "{:.2f}"),
                                                fmt(w["lost"]), fmt(w["avg_lat_ms"], "{:.3f}"),
                                                fmt(w["core0_other_pct"], "{:.0f}%"),
                                                f"**{rt:.2f}×**" if s == "telesink" and rt else fmt(rt, "{:.2f}×")]) + " |")
                    if s == "telesink" and rt and t != "udp":
                        verdicts.append(f"{size} {t} {wl}: {rt:.2f}× {best_name} ({'met' if rt <= 0.8 else 'NOT met'})")
    if verdicts:
        L.append("\nTarget (telesink ≤ 0.80× the best peer's µs/q): " + "; ".join(verdicts) + ".\n")
    mem = [e for e in enc["servers"] if e.get("dot_memory")]
    if mem:
        n = next((e["dot_memory"].get("n") for e in mem if e["dot_memory"].get("n")), a.tls_conns)
        L.append(f"\n### Memory per open DoT connection\n")
        L.append(f"{n} DoT connections opened by the harness (Python `ssl`, TLS handshake done, SNI `{TLS_NAME}`, no "
                 "device id) and kept open; VmRSS of the server with them open minus VmRSS with none (after ten "
                 "connections were opened, used and closed), divided by the count: *idle* = right after the "
                 "handshakes, *after a query* = once each connection has carried one query (buffers touched). "
                 "*answered* = connections still open for that query. unbound preallocates its TCP slots "
                 "(`incoming-num-tcp`) at start: its figure is only what the connections touch.\n")
        L.append("| list | server | RSS none MB | RSS idle MB | B/conn idle | RSS after a query MB | B/conn after a query | answered | RSS after closing MB | TLS |")
        L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
        for e in mem:
            m = e["dot_memory"]
            if m.get("error"):
                L.append(f"| {e['size']} | {e['server']} | {m['error']} ||||||||")
                continue
            L.append("| " + " | ".join([e["size"], e["server"], fmt(mb(m["rss_base_kb"]), "{:.1f}"),
                                        fmt(mb(m["rss_idle_kb"]), "{:.1f}"), fmt(m["bytes_per_idle_conn"]),
                                        fmt(mb(m["rss_used_kb"]), "{:.1f}"), fmt(m["bytes_per_used_conn"]),
                                        f"{m['answered']}/{m['n']}", fmt(mb(m["rss_closed_kb"]), "{:.1f}"),
                                        f"{e.get('tls', {}).get('version', '')} {e.get('tls', {}).get('cipher', '')}"]) + " |")
    bad = [e for e in enc["servers"] if e.get("check_failed")]
    if bad:
        L.append("\n**Unexpected answers** in the sanity check of: " + ", ".join(f"{e['server']} {e['size']}" for e in bad)
                 + " (see the JSON, `check`).\n")
    L.append("\nVersions: " + "; ".join(dict.fromkeys(f"{e['server']}: {e.get('version', '')}" for e in enc["servers"]))
             + "\n")
    return L


def machine_info():
    info = {}
    info["lscpu"] = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    info["kernel"] = platform.release()
    info["uname"] = " ".join(platform.uname())
    h = subprocess.run(["dnsperf", "-h"], capture_output=True, text=True)
    info["dnsperf"] = [l.strip() for l in (h.stdout + h.stderr).splitlines() if l.startswith("Version")][:1]
    info["rustc"] = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    return info


def fmt(v, spec="{:.0f}"):
    return "–" if v is None else spec.format(v)


def ratio(a, b):
    if a is None or b in (None, 0):
        return "–"
    return f"{a / b:.2f}×"


def mb(kb):
    return None if kb is None else kb / 1024


def report(res, a, path_md):
    by = {(e["server"], e["size"]): e for e in res["servers"]}
    floor = next((e for e in res["servers"] if e["server"] == "floor"), None)
    L = []
    L.append(f"# Benchmark run {res['started']}\n")
    L.append(f"Load average before: {res['load_before']}, after: {res['load_after']}. "
             f"{res['noise_note']}\n")
    L.append("Command: `" + res["command"] + "`\n")
    L.append("## Versions\n")
    seen = set()
    for e in res["servers"]:
        if e["server"] not in seen:
            seen.add(e["server"])
            L.append(f"- {e['server']}: {e.get('version', '')}")
    L.append(f"- dnsperf {' '.join(res['machine']['dnsperf'])}; {res['machine']['rustc']}")
    L.append(f"- kernel {res['machine']['kernel']}\n")
    if not res["servers"]:  # the forwarded workload alone
        L.extend(report_forwarded(res, a))
        L.extend(report_encrypted(res, a))
        L.append("\n## Machine\n")
        L.append("```\n" + res["machine"]["lscpu"].strip() + "\n```\n")
        L.append(f"`uname -a`: {res['machine']['uname']}\n")
        with open(path_md, "w") as f:
            f.write("\n".join(L) + "\n")
        return
    L.append("## Throughput and CPU per query\n")
    L.append(f"dnsperf: one thread, one socket, 100 queries outstanding, {a.duration} s per run, median of {a.runs} runs; "
             f"server on core {SERVER_CPU}, dnsperf on core {LOAD_CPU}. *µs/q* = server utime+stime / completed queries. "
             f"*avg* = dnsperf average latency at saturation; *p50/p99* from a separate run at a fixed {a.lat_qps} qps (-v). "
             "*core0 other* = share of core 0 used by other processes during the runs (noise). "
             "Ratios are telesink / that row (qps: >1 means telesink serves more; µs/q: <1 means telesink spends less).\n")
    L.append("| list | workload | server | qps | µs/q | avg ms | p50 ms | p99 ms | lost | core0 other | qps telesink/x | µs/q telesink/x |")
    L.append("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    sizes = [s for s in a.sizes]
    for size in sizes:
        for wl in a.workloads:
            t = by.get(("telesink", size), {}).get("workloads", {}).get(wl)
            rows = [by.get((s, size)) for s in ["telesink"] + list(a.extra) + ["unbound", "hickory-dns", "dnsmasq"]]
            rows = [r for r in rows if r]
            if floor:
                rows.append(floor)
            for e in rows:
                w = e.get("workloads", {}).get(wl)
                if not w:
                    L.append(f"| {size} | {wl} | {e['server']} | {e.get('error', 'no data')} |||||||||")
                    continue
                fr = w["fixed_rate"]
                L.append("| " + " | ".join([
                    size, wl, e["server"], fmt(w["qps"]), fmt(w["cpu_us_per_q"], "{:.2f}"),
                    fmt(w["avg_lat_ms"], "{:.3f}"),
                    fmt(fr.get("p50") and 1e3 * fr["p50"], "{:.3f}"), fmt(fr.get("p99") and 1e3 * fr["p99"], "{:.3f}"),
                    fmt(w["lost"]), fmt(w["core0_other_pct"], "{:.0f}%"),
                    "" if e["server"] == "telesink" else ratio(t and t["qps"], w["qps"]),
                    "" if e["server"] == "telesink" else ratio(t and t["cpu_us_per_q"], w["cpu_us_per_q"]),
                ]) + " |")
    for e in res["servers"]:
        if e["server"] != "querylog-cost" or not e.get("pairs"):
            continue
        L.append(f"\n## Query-log cost ({e['size']} list, blocked names)\n")
        L.append("Two telesink processes, both pinned to the server core, metrics on in both: `[querylog] log = "
                 "\"none\"` and `log = \"all\"` (every query becomes a row, in a SQLite file on disk). dnsperf alternates between "
                 "them (none, all, all, none, ...). *writer µs/q* = CPU of the `querylog-writer` thread per answered "
                 "query; *dropped* = rows the full queue turned away (`telesink_querylog_dropped_total`) as a share "
                 "of answered queries. The writer runs in the idle scheduling class: at saturation it gets what the "
                 "DNS thread leaves, so rows are dropped rather than answers slowed.\n")
        L.append("| pair | qps none | qps all | all/none | µs/q none | µs/q all | writer µs/q | rows dropped |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for i, p in enumerate(e["pairs"]):
            L.append(f"| {i + 1} | {fmt(p['none']['qps'])} | {fmt(p['all']['qps'])} | {fmt(p['qps_ratio'], '{:.3f}')} | "
                     f"{fmt(p['none']['cpu_us_per_q'], '{:.2f}')} | {fmt(p['all']['cpu_us_per_q'], '{:.2f}')} | "
                     f"{fmt(p['all'].get('writer_us_per_q'), '{:.2f}')} | {fmt(p['all'].get('log_dropped_pct'), '{:.1f} %')} |")
        L.append(f"| **median** | {fmt(e['none_qps'])} | {fmt(e['all_qps'])} | **{fmt(e['qps_ratio'], '{:.3f}')}** | "
                 f"{fmt(e['none_cpu'], '{:.2f}')} | {fmt(e['all_cpu'], '{:.2f}')} | {fmt(e['writer_cpu'], '{:.2f}')} | "
                 f"{fmt(e['dropped_pct'], '{:.1f} %')} |")
        L.append(f"\nAt fixed rates ({a.lat_duration} s each, dnsperf -Q): latency with the log off and on, and rows "
                 "dropped with it on (counted 1 s after the run).\n")
        L.append("| offered qps | p99 none ms | p99 all ms | max all ms | rows dropped / answered |")
        L.append("|---:|---:|---:|---:|---:|")
        for row in e.get("fixed", []):
            n, w = row["none"], row["all"]
            L.append(f"| {row['rate']} | {fmt(n.get('p99') and 1e3 * n['p99'], '{:.3f}')} | "
                     f"{fmt(w.get('p99') and 1e3 * w['p99'], '{:.3f}')} | {fmt(w.get('max') and 1e3 * w['max'], '{:.3f}')} | "
                     f"{fmt(w.get('log_dropped'))} / {fmt(w.get('completed'))} |")
    L.extend(report_forwarded(res, a))
    L.extend(report_encrypted(res, a))
    L.append("\n## Memory, load and reload\n")
    L.append("*RSS loaded* = VmRSS at the first blocked answer; *peak load* = VmHWM then; *RSS after* = VmRSS after all "
             "workloads (cache filled). Reload: the list file gains one name, then the trigger (telesink: the new file "
             "renamed into its watched directory; unbound: SIGHUP). Each reload run is three dnsperf windows at "
             f"{a.lat_qps} qps on blocked names (window ≈ 1.5 × load time + 4 s): no reload (*p99 baseline*), a reload "
             "triggered after 1 s with nothing else from the harness running (*p99 / lost during*), and a second reload "
             "under the same load, timed and sampled: *reload s* = trigger to the first blocked answer for the new name "
             "(asked every 10 ms); *reload peak* = max(VmHWM reset via clear_refs, 10 ms VmRSS samples). The polling "
             "and the sampler share the load core with dnsperf and would show in its latencies, hence the separate "
             "windows; *during/baseline* = the ratio of the two p99s; *served during* = answered / offered in that window (dnsperf keeps at most 100 "
             "queries outstanding, so a server that stalls shows fewer answers more than lost ones). "
             f"Median of {a.reload_runs} reloads.\n")
    L.append("| list | server | load s | RSS loaded MB | peak load MB | RSS after MB | reload s | steady MB | reload peak MB | peak/steady | p99 during ms | p99 baseline ms | during/baseline | lost during | served during | RSS telesink/x | load s telesink/x |")
    L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size in sizes:
        t = by.get(("telesink", size), {})
        for s in ["telesink"] + list(a.extra) + ["unbound", "hickory-dns", "dnsmasq"]:
            e = by.get((s, size))
            if not e:
                continue
            pr = (e["reload_peak_kb"] / e["reload_steady_kb"]) if e.get("reload_peak_kb") and e.get("reload_steady_kb") else None
            L.append("| " + " | ".join([
                size, s, fmt(e.get("load_s"), "{:.2f}"), fmt(mb(e.get("rss_loaded_kb")), "{:.1f}"),
                fmt(mb(e.get("hwm_load_kb")), "{:.1f}"), fmt(mb(e.get("rss_after_kb")), "{:.1f}"),
                fmt(e.get("reload_s"), "{:.2f}") if e.get("reloads") else "n/a (restart)",
                fmt(mb(e.get("reload_steady_kb")), "{:.1f}"), fmt(mb(e.get("reload_peak_kb")), "{:.1f}"),
                fmt(pr, "{:.2f}"), fmt(e.get("reload_p99_ms"), "{:.3f}"), fmt(e.get("reload_baseline_p99_ms"), "{:.3f}"),
                ratio(e.get("reload_p99_ms"), e.get("reload_baseline_p99_ms")), fmt(e.get("reload_lost")),
                fmt(e.get("reload_served_pct"), "{:.0f}%"),
                "" if s == "telesink" else ratio(t.get("rss_after_kb"), e.get("rss_after_kb")),
                "" if s == "telesink" else ratio(t.get("load_s"), e.get("load_s")),
            ]) + " |")
    for e in res["servers"]:
        if e.get("reloads"):
            parts = [f"{mb(r['steady_kb']):.1f}→{mb(r['peak_kb']):.1f} MB in {fmt(r['reload_s'], '{:.2f}')} s"
                     + (f" (server: took_ms {', '.join(str(x) for x in r['server_took_ms'])})" if r.get("server_took_ms") else "")
                     for r in e["reloads"]]
            L.append(f"\n{e['server']} {e['size']}, each reload (RSS before → peak): " + "; ".join(parts)
                     + f"; RSS at the end {fmt(mb(e.get('rss_end_kb')), '{:.1f}')} MB.")
    if floor:
        L.append(f"\nfloor responder RSS: {fmt(mb(floor.get('rss_after_kb')), '{:.1f}')} MB\n")
    L.append("\n## Machine\n")
    L.append("```\n" + res["machine"]["lscpu"].strip() + "\n```\n")
    L.append(f"`uname -a`: {res['machine']['uname']}\n")
    with open(path_md, "w") as f:
        f.write("\n".join(L) + "\n")


def main():
    # The harness itself (RSS sampler, sanity queries, upstream) stays off the server's core: it
    # goes with dnsperf. Servers are started with `taskset -c SERVER_CPU`, which overrides this.
    global SERVER_CPU, LOAD_CPU, LOAD_THREADS, LOAD_CLIENTS
    ap = argparse.ArgumentParser()
    ap.add_argument("--server-cpus", default=SERVER_CPU,
                    help="cores for the server (taskset list); telesink runs one DNS thread per core it may use")
    ap.add_argument("--load-cpus", default=LOAD_CPU, help="cores for dnsperf, the upstream and the harness")
    ap.add_argument("--load-threads", type=int, default=LOAD_THREADS, help="dnsperf -T")
    ap.add_argument("--load-clients", type=int, default=LOAD_CLIENTS, help="dnsperf -c (sockets)")
    ap.add_argument("--data", default=os.path.join(HERE, "data"))
    ap.add_argument("--work", default=os.path.join(HERE, ".work"))
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--servers", default="telesink,unbound,hickory,dnsmasq,floor,querylog",
                    help="querylog = the query log's cost (telesink with log none / all, alternating); "
                         "telesink+addresses = telesink with [addresses] on (learning telemetry addresses)")
    ap.add_argument("--qlog-rates", default="20000,50000",
                    help="fixed rates for the query-log latency and dropped-rows check")
    ap.add_argument("--sizes", default="100k,1m")
    ap.add_argument("--workloads", default="blocked,cached,mix",
                    help='any of blocked,cached,mix,forwarded,dot,doh; "" skips the qps workloads (load and reload '
                         'figures only). forwarded = the forwarded path (issue 17): NSD as the upstream, every query a '
                         'cache miss, the --fwd-servers in turn; it ignores --servers and --sizes. dot, doh = the '
                         '--tls-workloads over DNS over TLS / HTTPS (issue 19), the --tls-servers in turn, per --sizes')
    ap.add_argument("--tls-servers", default="telesink,unbound,dnsdist")
    ap.add_argument("--tls-workloads", default="blocked,cached")
    ap.add_argument("--tls-clients", type=int, default=10,
                    help="dnsperf -c over DoT/DoH: connections (fixed, so that results compare)")
    ap.add_argument("--doh-load", default="dnsperf", choices=["dnsperf", "h2load"],
                    help="DoH load generator: dnsperf (-m doh) or h2load from nghttp2-client (GET "
                         "URIs made from the query file, --doh-clients connections, one stream "
                         "in flight each; it does not lose answers that arrive together)")
    ap.add_argument("--doh-method", default="GET", choices=["POST", "GET"],
                    help="dnsperf's DoH method. GET: dnsperf 2.10-2.14 writes a POST as two TLS writes (HEADERS, "
                         "DATA) without TCP_NODELAY, so each POST waits on Nagle and the server's delayed ACK (~40 ms)")
    ap.add_argument("--doh-clients", type=int, default=100,
                    help="dnsperf -c over DoH: more connections than queries outstanding (--doh-outstanding), as "
                         "dnsperf 2.10-2.14 loses answers that arrive together on one connection (see bench/README)")
    ap.add_argument("--doh-outstanding", type=int, default=50, help="dnsperf -q over DoH")
    ap.add_argument("--tls-conns", type=int, default=1000,
                    help="open DoT connections for the memory-per-connection figure (first size only); 0 = skip")
    ap.add_argument("--tls-udp", action="store_true",
                    help="also run the --tls-servers over UDP (same dnsperf -c): a reference row per server")
    ap.add_argument("--fwd-servers", default="telesink,unbound,dnsdist")
    ap.add_argument("--fwd-lat-qps", type=int, default=5000,
                    help="offered rate of the forwarded latency runs (below every forwarder's saturation)")
    ap.add_argument("--fwd-max-qps", type=int, default=150000,
                    help="names per forwarded run = duration x this (a run must not run out of fresh names)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--outstanding", type=int, default=100)
    ap.add_argument("--lat-qps", type=int, default=20000)
    ap.add_argument("--lat-duration", type=int, default=5)
    ap.add_argument("--reload-runs", type=int, default=3)
    ap.add_argument("--reload-window", type=int, default=6)
    ap.add_argument("--load-limit", type=float, default=300)
    ap.add_argument("--telesink", default=os.path.join(REPO, "target/release/telesink"))
    ap.add_argument("--hickory", default=os.path.join(HERE, ".tools/bin/hickory-dns"))
    ap.add_argument("--hickory-args", default="--workers 1 -q")
    ap.add_argument("--extra-telesink", action="append", default=[], metavar="LABEL=PATH",
                    help="another telesink build to run after the main one (bench/build-rev.sh), as telesink@LABEL")
    ap.add_argument("--responder", default=os.path.join(HERE, ".tools/responder"))
    a = ap.parse_args()
    SERVER_CPU, LOAD_CPU = a.server_cpus, a.load_cpus
    LOAD_THREADS, LOAD_CLIENTS = a.load_threads, a.load_clients
    os.sched_setaffinity(0, {int(c) for c in LOAD_CPU.split(",")})
    a.sizes = a.sizes.split(",")
    a.workloads = [w for w in a.workloads.split(",") if w]
    a.forwarded = "forwarded" in a.workloads
    a.tls_transports = [w for w in a.workloads if w in TLS_TRANSPORTS]
    a.workloads = [w for w in a.workloads if w != "forwarded" and w not in TLS_TRANSPORTS]
    for w in a.workloads:
        if w not in ("blocked", "cached", "mix"):
            sys.exit(f"unknown workload {w}; known: blocked, cached, mix, forwarded, dot, doh")
    a.tls_servers = [s for s in a.tls_servers.split(",") if s]
    for s in a.tls_servers:
        if s not in TLS_SERVERS:
            sys.exit(f"unknown --tls-servers entry {s}; known: {', '.join(TLS_SERVERS)}")
    a.tls_workloads = [w for w in a.tls_workloads.split(",") if w]
    for w in a.tls_workloads:
        if w not in TLS_WORKLOADS:
            sys.exit(f"unknown --tls-workloads entry {w}; known: {', '.join(TLS_WORKLOADS)}")
    a.fwd_servers = [s for s in a.fwd_servers.split(",") if s]
    for s in a.fwd_servers:
        if s not in FWD_SERVERS:
            sys.exit(f"unknown forwarded server {s}; known: {', '.join(FWD_SERVERS)}")
    a.fwd_data = os.path.join(a.data, "fwd")
    a.qlog_rates = [int(x) for x in a.qlog_rates.split(",") if x]
    os.makedirs(a.work, exist_ok=True)
    os.makedirs(a.out, exist_ok=True)

    kinds = [s for s in a.servers.split(",") if s and s != "none"]
    a.extra = {}
    for x in a.extra_telesink:
        label, path = x.split("=", 1)
        a.extra["telesink@" + label] = os.path.abspath(path)
    if a.extra:
        i = kinds.index("telesink") + 1 if "telesink" in kinds else 0
        kinds[i:i] = list(a.extra)
    for k in kinds:
        if k not in SERVERS and k not in a.extra and k != "querylog":
            sys.exit(f"unknown server {k}; known: {', '.join(SERVERS)}")
    if "hickory" in kinds and not os.access(a.hickory, os.X_OK):
        log(f"hickory-dns not found at {a.hickory}: skipped (see bench/.tools/install.log)")
        kinds.remove("hickory")

    # Run a private copy of the telesink binary: others may rebuild target/release mid-run.
    if any(k in ("telesink", "telesink+addresses", "querylog") for k in kinds) or (
            a.forwarded and "telesink" in a.fwd_servers) or (a.tls_transports and "telesink" in a.tls_servers):
        src = a.telesink
        a.telesink = os.path.join(a.work, "telesink.bin")
        shutil.copy2(src, a.telesink)
        log(f"telesink binary: {src} (built {time.ctime(os.path.getmtime(src))}), copied to {a.telesink}")

    stamp = time.strftime("%Y%m%d-%H%M%S")
    res = {"started": stamp, "command": " ".join([os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:]) or "harness.py",
           "load_before": os.getloadavg(), "machine": machine_info(), "servers": [], "args": vars(a)}

    # The fast upstream of the blocklist workloads (the forwarded workload starts its own NSD).
    up = subprocess.Popen(["taskset", "-c", LOAD_CPU, a.responder, "upstream", f"127.0.0.1:{UPSTREAM}"]) \
        if kinds or a.tls_transports else None
    try:
        time.sleep(0.2)
        if up and ask(UPSTREAM, "upstream-check.example") is None:
            sys.exit("the upstream responder does not answer")
        for size in a.sizes:
            for k in kinds:
                if k == "floor":
                    continue
                if k == "querylog":
                    bench_querylog(size, a, res["servers"])
                    continue
                res["load_" + k + "_" + size] = os.getloadavg()
                bench_server(k, size, a, res["servers"])
        if "floor" in kinds:
            bench_server("floor", a.sizes[-1], a, res["servers"])
        if a.forwarded:
            bench_forwarded(a, res)
        if a.tls_transports:
            bench_encrypted(a, res)
    finally:
        if up:
            up.terminate()
            up.wait()
    res["load_after"] = os.getloadavg()
    busy = max(res["load_before"][0], res["load_after"][0])
    res["noise_note"] = ("**Measured while other builds ran** (1-min load average above 1.5 on a 2-core machine): "
                         "absolute qps and latency are noisy; CPU µs per query is the fairer figure."
                         if busy > 1.5 else "Machine was quiet (1-min load average ≤ 1.5).")
    jpath = os.path.join(a.out, f"{stamp}.json")
    with open(jpath, "w") as f:
        json.dump(res, f, indent=1)
    mpath = os.path.join(a.out, f"{stamp}.md")
    report(res, a, mpath)
    shutil.copy(mpath, os.path.join(a.out, "latest.md"))
    shutil.copy(jpath, os.path.join(a.out, "latest.json"))
    log(f"wrote {mpath} and {jpath} (also latest.md / latest.json)")
    print(open(mpath).read())


if __name__ == "__main__":
    main()
