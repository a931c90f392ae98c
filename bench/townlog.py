#!/usr/bin/env python3
"""The query log at a town's size (issue 22): bytes per row, `verify` and `log` times, and the
retention delete of a day under 2,000 logged queries per second. See bench/README.md.

    python3 bench/townlog.py --telesink target/release/telesink \
        --filllog target/release/examples/filllog --db /big/town.db --rows 100000000

The log is filled once (examples/filllog.rs, through the server's writer code) and reused when
it exists (--reuse, the default): the fill of 100 M rows takes a long while. Each retention run
deletes one more day (retention_days = days - run), so a log serves `--runs` retention runs;
the bytes per row are taken before them. Prints a Markdown table and writes --json.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def timed(argv, ok=(0,)):
    t0 = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True)
    took = time.perf_counter() - t0
    if r.returncode not in ok:
        sys.exit(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
    return took, r.stdout


def write_config(work, db, dns_port, metrics_port, retention_days):
    with open(os.path.join(work, "list.txt"), "w") as f:
        f.write("tracking.example\n")
    path = os.path.join(work, "telesink.toml")
    with open(path, "w") as f:
        f.write(f"""[server]
listen = ["127.0.0.1:{dns_port}"]
allow_networks = ["127.0.0.0/8"]
rate_limit_qps = 0

[upstream]
servers = ["127.0.0.1:9"]

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
listen = "127.0.0.1:{metrics_port}"

[querylog]
path = "{db}"
log = "all"
retention_days = {retention_days}
""")
    return path


def metric(port, name):
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return None
    total = 0.0
    found = False
    for line in body.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    return total if found else None


def retention_run(a, work, retention_days):
    dns, mport = free_port(), free_port()
    cfg = write_config(work, os.path.abspath(a.db), dns, mport, retention_days)
    qfile = os.path.join(work, "queries.txt")
    with open(qfile, "w") as f:
        for i in range(10000):
            f.write(f"t{i}.tracking.example A\n")
    rows_before = count_rows(a.db)
    log_path = os.path.join(work, "server.log")
    srv = subprocess.Popen([a.telesink, "run", "-c", cfg], stdout=subprocess.DEVNULL,
                           stderr=open(log_path, "w"))
    t0 = time.perf_counter()
    try:
        for _ in range(600):
            if metric(mport, "telesink_querylog_dropped_total") is not None:
                break
            time.sleep(0.1)
        load = subprocess.Popen(["dnsperf", "-s", "127.0.0.1", "-p", str(dns), "-d", qfile,
                                 "-Q", str(a.qps), "-l", str(a.load_seconds)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        load_started_s = time.perf_counter() - t0
        out, _ = load.communicate()
        dropped = metric(mport, "telesink_querylog_dropped_total")
        completed = next((l.split()[2] for l in out.splitlines() if "Queries completed:" in l), "?")
    finally:
        srv.send_signal(signal.SIGTERM)
        srv.wait(timeout=600)
    # The writer's own account: "deleted N rows older than D days in S s".
    with open(log_path) as f:
        m = re.search(r"query log retention: deleted (\d+) rows .* in ([0-9.]+) s", f.read())
    return {
        "retention_days": retention_days,
        "retention_s": float(m.group(2)) if m else None,  # None: not finished while the load ran
        "retention_deleted": int(m.group(1)) if m else None,
        "load_started_after_s": load_started_s,
        "dropped": dropped,
        "queries_completed": completed,
        "rows_before": rows_before,
        "rows_after": count_rows(a.db),
    }


def count_rows(db):
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return c.execute("SELECT count(*) FROM query_rows").fetchone()[0]
    finally:
        c.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--telesink", default="target/release/telesink")
    p.add_argument("--filllog", default="target/release/examples/filllog")
    p.add_argument("--db", required=True)
    p.add_argument("--rows", type=int, default=100_000_000)
    p.add_argument("--devices", type=int, default=10_000)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--fresh", action="store_true", help="delete and refill the log")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--qps", type=int, default=2000)
    p.add_argument("--load-seconds", type=int, default=120)
    p.add_argument("--skip-retention", action="store_true")
    p.add_argument("--json", default="bench/townlog.json")
    a = p.parse_args()

    res = {"rows_requested": a.rows, "devices": a.devices, "days": a.days}
    if a.fresh and os.path.exists(a.db):
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(a.db + suffix):
                os.remove(a.db + suffix)
    if not os.path.exists(a.db):
        t = time.perf_counter()
        subprocess.run(["nice", a.filllog, "--path", a.db, "--rows", str(a.rows),
                        "--devices", str(a.devices), "--days", str(a.days)], check=True)
        res["fill_s"] = time.perf_counter() - t
    rows = count_rows(a.db)
    size = os.path.getsize(a.db) + (os.path.getsize(a.db + "-wal") if os.path.exists(a.db + "-wal") else 0)
    res.update(rows=rows, bytes=size, bytes_per_row=size / rows)

    work = tempfile.mkdtemp(prefix="townlog-")
    cfg = write_config(work, os.path.abspath(a.db), free_port(), free_port(), 3650)
    c = sqlite3.connect(f"file:{a.db}?mode=ro", uri=True)
    # A device with a lease name, its telemetry and ordinary queries: the usual verify.
    device = c.execute("SELECT device FROM devices WHERE named_by = 'lease' ORDER BY device "
                       "LIMIT 1 OFFSET 100").fetchone()[0]
    c.close()
    res["device"] = device
    verify = [timed([a.telesink, "verify", "-c", cfg, "--client", device, "--category",
                     "telemetry", "--since", "7d"], ok=(0, 1, 2, 3))[0] for _ in range(a.runs)]
    log = [timed([a.telesink, "log", "-c", cfg, "--client", device, "--since", "1d",
                  "--limit", "100"])[0] for _ in range(a.runs)]
    log_all = [timed([a.telesink, "log", "-c", cfg, "--since", "1d", "--limit", "100"])[0]
               for _ in range(a.runs)]
    res.update(verify_s=statistics.median(verify), log_client_s=statistics.median(log),
               log_all_s=statistics.median(log_all), verify_runs=verify, log_runs=log,
               log_all_runs=log_all)
    if not a.skip_retention:
        res["retention"] = [retention_run(a, work, a.days - i - 1) for i in range(a.runs)]
        done = [r["retention_s"] for r in res["retention"] if r["retention_s"] is not None]
        res["retention_s"] = statistics.median(done) if done else None
        res["dropped"] = sum(r["dropped"] or 0 for r in res["retention"])
    shutil.rmtree(work, ignore_errors=True)
    with open(a.json, "w") as f:
        json.dump(res, f, indent=2)
    print(f"| rows | B/row | verify 7d s | log --client 1d s | log 1d (all clients) s | retention of a day s | dropped |")
    print(f"|---|---|---|---|---|---|---|")
    ret = res.get("retention_s")
    print(f"| {rows:,} | {res['bytes_per_row']:.1f} | {res['verify_s']:.3f} | {res['log_client_s']:.3f} | "
          f"{res['log_all_s']:.3f} | {'n/a' if ret is None else f'{ret:.1f}'} | {res.get('dropped', 'n/a')} |")


if __name__ == "__main__":
    main()
