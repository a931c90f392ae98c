#!/usr/bin/env python3
"""The soak run behind bench/soak.sh (issue 6). Loopback only, bounded in time.

    python3 bench/soak/soak.py --minutes 10 --bin target/release/telesink \
        --responder target/soak/responder --work target/soak/run-STAMP --results bench/RESULTS.md

What it does:
  * telesink on 127.0.0.1:5390 with the query log on (`log = "all"`), the default rate limit
    (300 qps per client), a 20k-name blocklist, a few local records, a small answer cache (5000
    entries, so that eviction and upstream traffic go on all the time), timeout_ms = 1000;
  * the loopback upstream responder (bench/tools/responder.rs, `upstream` mode) on
    127.0.0.1:5391, restarted midway (down for 5 s);
  * mixed load from many source addresses: 8 UDP clients at 200 qps each (127.0.0.10-17), one
    UDP client over its rate limit at 400 qps (127.0.0.20: some REFUSED), 2 TCP clients at
    100 qps each (127.0.0.30-31); each client's queries: ~40 % blocked names, ~30 % allowed
    names of its own (cache misses → upstream; each client's file is longer than the run, so
    they never repeat), ~20 % a hot set (cache hits), local names,
    HTTPS, AAAA and some ANY;
  * the blocklist rewritten (temp file + rename) every 10 s, alternating two versions;
  * every 10 s: telesink's VmRSS, and the p99 latency and qps of the UDP clients over that
    interval (from dnsperf -v and -S 10);
  * at the end: load stopped, metrics read, SIGTERM (must exit 0), then the query log's rows
    counted: rows = queries counted in telesink_queries_total - telesink_querylog_dropped_total
    (every query is logged with log = "all"), so "lost rows" = the difference.
Checks: no crash, exit 0, RSS growth after warm-up (the first minute) < 5 %, zero lost rows.
Writes a `## Soak` section into the results file (replacing an earlier one, leaving the rest).
"""

import argparse
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request

DNS_PORT = 5390
UP_PORT = 5391
METRICS_PORT = 5392
INTERVAL = 10

UDP_CLIENTS = [(f"127.0.0.{10 + i}", 200) for i in range(8)]
FLOOD_CLIENT = ("127.0.0.20", 400)
TCP_CLIENTS = [(f"127.0.0.{30 + i}", 100) for i in range(2)]


def log(msg):
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def make_inputs(work, rng, duration):
    blocked = [f"t{i}.telemetry{i % 97}.soak-vendor.example" for i in range(20000)]
    list_a = "\n".join(blocked) + "\n"
    list_b = list_a + "\n".join(f"extra{i}.soak-vendor.example" for i in range(100)) + "\n"
    hot = [f"hot{i}.soak-allowed.example" for i in range(100)]
    files = {}
    for idx, (addr, qps) in enumerate(UDP_CLIENTS + [FLOOD_CLIENT] + TCP_CLIENTS):
        lines = []
        # Longer than the run, so that dnsperf never wraps around: the "unique" names stay
        # cache misses all along (the upstream outage included).
        for n in range(qps * duration + 1000):
            r = rng.random()
            if r < 0.40:
                lines.append(f"{rng.choice(blocked)} A")
            elif r < 0.70:
                lines.append(f"c{idx}-{n}.soak-allowed.example A")
            elif r < 0.88:
                lines.append(f"{rng.choice(hot)} {rng.choice(['A', 'A', 'AAAA'])}")
            elif r < 0.93:
                lines.append(rng.choice(["nas.home.arpa A", "10.1.168.192.in-addr.arpa PTR",
                                         "printer.home.arpa A", "localhost A"]))
            elif r < 0.98:
                lines.append(f"{rng.choice(hot)} HTTPS")
            else:
                lines.append(f"{rng.choice(hot)} ANY")
        path = os.path.join(work, f"q-{addr}.txt")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        files[addr] = path
    return list_a, list_b, files


CONFIG = """
[server]
listen = ["127.0.0.1:{dns}"]
rate_limit_qps = 300
rate_limit_burst = 600

[upstream]
servers = ["127.0.0.1:{up}"]
timeout_ms = 1000
cache_entries = 5000

[metrics]
listen = "127.0.0.1:{metrics}"

[querylog]
path = "{db}"
log = "all"

[blocking]
mode = "null"

[[list]]
name = "soak-vendor"
source = "soak-list.txt"
categories = ["telemetry"]

[default]
block = ["telemetry"]

[[record]]
name = "nas.home.arpa"
type = "A"
value = "192.168.1.10"
"""


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def metrics_text():
    with urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=5) as r:
        return r.read().decode()


def metric_sum(text, name, label_filter=None):
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(rf"^{name}(\{{[^}}]*\}})? (\S+)$", line)
        if not m:
            continue
        if label_filter and label_filter not in (m.group(1) or ""):
            continue
        total += float(m.group(2))
    return total


def wait_ready(proc, timeout=20):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"telesink exited at start with {proc.returncode}")
        try:
            metrics_text()
            out = subprocess.run(["dig", "+short", "+time=1", "+tries=1", "-p", str(DNS_PORT),
                                  "@127.0.0.1", "nas.home.arpa"], capture_output=True, text=True)
            if "192.168.1.10" in out.stdout:
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise SystemExit("telesink did not become ready")


def start_responder(path):
    p = subprocess.Popen([path, "upstream", f"127.0.0.1:{UP_PORT}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    if p.poll() is not None:
        raise SystemExit(f"the upstream responder could not bind 127.0.0.1:{UP_PORT} (in use?)")
    return p


def parse_verbose(path):
    """dnsperf -v -S N output → per-interval (latencies, qps) lists, and the final stats."""
    intervals = []
    cur = []
    final = {}
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("> "):
                parts = line.split()
                try:
                    cur.append(float(parts[-1]))
                except ValueError:
                    pass
            elif re.match(r"^\d+\.\d+: [\d.]+$", line.strip()):
                qps = float(line.strip().split(": ")[1])
                intervals.append((cur, qps))
                cur = []
            else:
                m = re.match(r"\s*(Queries sent|Queries completed|Queries lost):\s+(\d+)", line)
                if m:
                    final[m.group(1)] = int(m.group(2))
    if cur:
        intervals.append((cur, None))
    return intervals, final


def pct(values, p):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--responder", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--results", required=True)
    a = ap.parse_args()
    a.bin, a.responder, a.work, a.results = (os.path.abspath(p) for p in
                                             (a.bin, a.responder, a.work, a.results))

    duration = int(a.minutes * 60)
    os.makedirs(a.work, exist_ok=True)
    rng = random.Random(6)
    list_a, list_b, qfiles = make_inputs(a.work, rng, duration)
    list_path = os.path.join(a.work, "soak-list.txt")
    write_atomic(list_path, list_a)
    db = os.path.join(a.work, "soak.db")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db + suffix):
            os.unlink(db + suffix)
    cfg = os.path.join(a.work, "config.toml")
    with open(cfg, "w") as f:
        f.write(CONFIG.format(dns=DNS_PORT, up=UP_PORT, metrics=METRICS_PORT, db=db))

    server_log = open(os.path.join(a.work, "telesink.log"), "w")
    perfs = []
    responder = proc = None
    try:
        responder = start_responder(a.responder)
        proc = subprocess.Popen([a.bin, "run", "-c", cfg], stdout=server_log,
                                stderr=subprocess.STDOUT, cwd=a.work)
        wait_ready(proc)
        log(f"telesink pid {proc.pid} ready; {duration}s of load")
        started = time.time()

        def dnsperf(addr, qps, mode, verbose):
            out = os.path.join(a.work, f"dnsperf-{mode}-{addr}.txt")
            cmd = ["dnsperf", "-s", "127.0.0.1", "-p", str(DNS_PORT), "-a", addr, "-m", mode,
                   "-d", qfiles[addr], "-l", str(duration), "-Q", str(qps), "-c", "1", "-T", "1",
                   "-q", "200", "-t", "3", "-S", str(INTERVAL)]
            if verbose:
                cmd.append("-v")
            if mode == "udp":
                cmd.append("-e")  # EDNS on the UDP clients
            f = open(out, "w")
            p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
            perfs.append((addr, mode, qps, out, p, f))

        for addr, qps in UDP_CLIENTS:
            dnsperf(addr, qps, "udp", True)
        dnsperf(FLOOD_CLIENT[0], FLOOD_CLIENT[1], "udp", False)
        for addr, qps in TCP_CLIENTS:
            dnsperf(addr, qps, "tcp", True)

        samples = []  # (t, rss_kb)
        next_sample = started
        next_rewrite = started + 10
        rewrites = 0
        restarted = False
        restart_at = None
        down_since = None
        events = []
        while time.time() - started < duration + 2:
            now = time.time()
            if proc.poll() is not None:
                raise SystemExit(f"telesink died during the soak (exit {proc.returncode})")
            if now >= next_sample:
                samples.append((round(now - started), rss_kb(proc.pid)))
                next_sample += INTERVAL
            if now >= next_rewrite and now - started < duration:
                rewrites += 1
                write_atomic(list_path, list_b if rewrites % 2 else list_a)
                next_rewrite += 10
            if not restarted and down_since is None and now - started >= duration / 2:
                responder.send_signal(signal.SIGTERM)
                responder.wait()
                down_since = now
                events.append(f"upstream stopped at {now - started:.0f}s")
                log("upstream stopped")
            if down_since is not None and not restarted and now - down_since >= 5:
                responder = start_responder(a.responder)
                restarted = True
                restart_at = time.time()
                events.append(f"upstream restarted at {time.time() - started:.0f}s")
                log("upstream restarted")
            time.sleep(0.2)
        for _, _, _, _, p, f in perfs:
            p.wait(timeout=60)
            f.close()
        time.sleep(1)
        alive = proc.poll() is None
        text = metrics_text()
        counted = metric_sum(text, "telesink_queries_total")
        by_result = {r: metric_sum(text, "telesink_queries_total", f'result="{r}"')
                     for r in ["blocked", "cached", "forwarded", "local", "refused", "failed"]}
        dropped = metric_sum(text, "telesink_querylog_dropped_total")
        reload_ok = metric_sum(text, "telesink_reloads_total", 'outcome="success"')
        reload_fail = metric_sum(text, "telesink_reloads_total", 'outcome="failure"')
        final_rss = rss_kb(proc.pid)
        t_term = time.time()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        term_s = time.time() - t_term
        con = sqlite3.connect(db)
        rows = con.execute("SELECT count(*) FROM queries").fetchone()[0]
        after_ms = int((restart_at + 2) * 1000) if restart_at else None
        fwd_after, failed_after = con.execute(
            "SELECT sum(result = 'forwarded'), sum(result = 'failed') FROM queries "
            "WHERE ts_ms > ?", (after_ms or 0,)).fetchone() if after_ms else (0, 0)
        recovered = bool(fwd_after) and not failed_after
        con.close()
    finally:
        for _, _, _, _, p, _ in perfs:
            if p.poll() is None:
                p.kill()
        if proc is not None and proc.poll() is None:
            proc.kill()
        if responder is not None and responder.poll() is None:
            responder.kill()
        server_log.close()

    # Latency per interval over the verbose clients (UDP and TCP separately).
    per_interval = {}
    sent = completed = lost = 0
    for addr, mode, qps, out, _, _ in perfs:
        intervals, final = parse_verbose(out)
        sent += final.get("Queries sent", 0)
        completed += final.get("Queries completed", 0)
        lost += final.get("Queries lost", 0)
        if addr == FLOOD_CLIENT[0]:
            continue
        for i, (lats, q) in enumerate(intervals):
            d = per_interval.setdefault(i, {"udp": [], "tcp": [], "qps": 0.0})
            d[mode].extend(lats)
            d["qps"] += q or 0.0

    # Growth = the last minute's mean RSS against the sample at 60 s (the end of the warm-up).
    # The peak after the warm-up is reported beside it: the upstream outage holds a second's
    # worth of forwarded queries in flight, a transient that must not count as growth, but is
    # shown.
    warm_idx = next((i for i, (t, _) in enumerate(samples) if t >= 60), 0)
    base_rss = samples[warm_idx][1] if samples else None
    after = [(t, r) for t, r in samples[warm_idx:] if r]
    peak_t, peak_after = max(after, key=lambda x: x[1]) if after else (None, None)
    last_min = [r for t, r in after if t >= after[-1][0] - 50] if after else []
    last_rss = sum(last_min) / len(last_min) if last_min else None
    growth = (last_rss - base_rss) / base_rss * 100 if base_rss and last_rss else None
    peak_pct = (peak_after - base_rss) / base_rss * 100 if base_rss and peak_after else None
    lost_rows = int(counted - dropped - rows)

    checks = {
        "no crash (alive to the end)": alive,
        "SIGTERM exit 0": code == 0,
        "RSS growth after warm-up < 5 %": growth is not None and growth < 5,
        "forwarding again 2 s after the upstream restart, no SERVFAIL": recovered,
        "zero lost log rows": lost_rows == 0,
    }

    L = []
    L.append("## Soak\n")
    L.append(f"`bash bench/soak.sh {a.minutes:g}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}, "
             f"{os.cpu_count()} cores, load average at start {os.getloadavg()[0]:.1f} "
             "(other work shared the machine). Loopback only.\n")
    L.append(f"Load: {len(UDP_CLIENTS)} UDP clients × {UDP_CLIENTS[0][1]} qps (EDNS), one UDP client at "
             f"{FLOOD_CLIENT[1]} qps over its 300 qps rate limit, {len(TCP_CLIENTS)} TCP clients × "
             f"{TCP_CLIENTS[0][1]} qps; each from its own 127.0.0.x; ~40 % blocked, ~30 % unique allowed "
             "(upstream), ~20 % hot allowed (cache), local names, HTTPS, AAAA, ANY. Query log `log = \"all\"`; "
             "cache 5000 entries; list (20k names) rewritten every 10 s; upstream "
             f"stopped for 5 s midway ({'; '.join(events)}).\n")
    L.append("| t (s) | RSS MB | UDP p99 ms | TCP p99 ms | qps (verbose clients) |")
    L.append("|---:|---:|---:|---:|---:|")
    for i, (t, r) in enumerate(samples):
        d = per_interval.get(i, {})
        up99 = pct(d.get("udp", []), 99)
        tp99 = pct(d.get("tcp", []), 99)
        L.append(f"| {t} | {r / 1024:.1f} | "
                 f"{'' if up99 is None else f'{up99 * 1e3:.2f}'} | "
                 f"{'' if tp99 is None else f'{tp99 * 1e3:.2f}'} | "
                 f"{d.get('qps', 0):.0f} |" if r else f"| {t} | - | | | |")
    L.append("")
    L.append(f"- RSS: {base_rss / 1024:.1f} MB at 60 s (end of warm-up), {last_rss / 1024:.1f} MB "
             f"over the last minute: growth **{growth:+.2f} %**. Peak after the warm-up "
             f"{peak_after / 1024:.1f} MB ({peak_pct:+.1f} %) at {peak_t} s"
             f"{' (the upstream outage: forwarded queries held in flight until timeout_ms; back to baseline at the next sample)' if peak_pct and peak_pct >= 5 else ''}."
             if base_rss and last_rss else "- RSS: not enough samples.")
    L.append(f"- Queries: dnsperf sent {sent}, completed {completed}, lost {lost} (timeouts; the upstream "
             f"outage and the over-limit client included); telesink counted {int(counted)} "
             f"({', '.join(f'{k} {int(v)}' for k, v in by_result.items())}).")
    L.append(f"- Upstream outage: after the restart (+2 s) {fwd_after or 0} forwarded answers, "
             f"{failed_after or 0} SERVFAIL.")
    L.append(f"- Reloads: {int(reload_ok)} succeeded, {int(reload_fail)} failed, for {rewrites} list rewrites.")
    L.append(f"- Query log: {rows} rows; counted {int(counted)} − dropped {int(dropped)} = "
             f"{int(counted - dropped)}: **{lost_rows} lost rows**.")
    L.append(f"- Shutdown: SIGTERM → exit {code} in {term_s:.1f} s. RSS before it {final_rss / 1024 if final_rss else 0:.1f} MB.")
    L.append("- Checks: " + ", ".join(f"{k}: {'PASS' if v else 'FAIL'}" for k, v in checks.items()) + ".\n")
    section = "\n".join(L) + "\n"

    old = ""
    if os.path.exists(a.results):
        with open(a.results) as f:
            old = f.read()
    m = re.search(r"^## Soak\n.*?(?=^## |\Z)", old, flags=re.S | re.M)
    if m:
        new = old[: m.start()] + section + old[m.end():]
    else:
        new = (old.rstrip("\n") + "\n\n" if old else "# Benchmark results\n\n") + section
    with open(a.results, "w") as f:
        f.write(new)
    with open(os.path.join(a.work, "soak.json"), "w") as f:
        json.dump({"samples": samples, "checks": checks, "rows": rows, "counted": counted,
                   "dropped": dropped, "lost_rows": lost_rows, "growth_pct": growth,
                   "exit": code, "peak_pct": peak_pct, "reloads": [reload_ok, reload_fail], "sent": sent,
                   "completed": completed, "lost": lost, "by_result": by_result}, f, indent=1)
    print(section)
    if not all(checks.values()):
        log("FAILED: " + ", ".join(k for k, v in checks.items() if not v))
        sys.exit(1)
    log("all checks passed")


if __name__ == "__main__":
    main()
