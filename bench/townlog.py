#!/usr/bin/env python3
"""The query log at a town's size (issue 22): bytes per row, `verify` and `log` times, and the
retention delete of a day under 2,000 logged queries per second. See bench/README.md.

    python3 bench/townlog.py --telesink target/release/telesink \
        --filllog target/release/examples/filllog --db /big/town.db --rows 100000000
    python3 bench/townlog.py --pg-url postgres://postgres@127.0.0.1:5433/town --rows 100000000

With --pg-url the log is a PostgreSQL database (it must exist; psql on PATH reads its size
and rows; a password goes in PGPASSWORD).

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


def querylog_location(a):
    """The [querylog] line that points at the log."""
    if a.pg_url:
        return f'url = "{a.pg_url}"'
    return f'path = "{os.path.abspath(a.db)}"'


def psql(a, sql):
    r = subprocess.run(["psql", "-X", "-A", "-t", "-d", a.pg_url, "-c", sql],
                       capture_output=True, text=True, check=True)
    return r.stdout.strip()


def write_config(work, location, dns_port, metrics_port, retention_days):
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
{location}
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
    cfg = write_config(work, querylog_location(a), dns, mport, retention_days)
    qfile = os.path.join(work, "queries.txt")
    with open(qfile, "w") as f:
        for i in range(10000):
            f.write(f"t{i}.tracking.example A\n")
    rows_before = count_rows(a)
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
        "rows_after": count_rows(a),
    }


def count_rows(a):
    if a.pg_url:
        return int(psql(a, "SELECT count(*) FROM queries"))
    c = sqlite3.connect(f"file:{a.db}?mode=ro", uri=True, timeout=30)
    try:
        return c.execute("SELECT count(*) FROM query_rows").fetchone()[0]
    finally:
        c.close()


def size_bytes(a):
    """The log's bytes on disk: the SQLite file and its WAL, or every telesink table of the
    PostgreSQL database with its indexes and TOAST."""
    if a.pg_url:
        return int(psql(a, "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c "
                           "JOIN pg_namespace n ON n.oid = c.relnamespace "
                           "WHERE c.relkind = 'r' AND n.nspname = current_schema()"))
    wal = a.db + "-wal"
    return os.path.getsize(a.db) + (os.path.getsize(wal) if os.path.exists(wal) else 0)


def pick_device(a):
    """A device with a lease name (telemetry and ordinary queries): the usual verify."""
    sql = ("SELECT device FROM devices WHERE named_by = 'lease' ORDER BY device "
           "LIMIT 1 OFFSET 100")
    if a.pg_url:
        return psql(a, sql)
    c = sqlite3.connect(f"file:{a.db}?mode=ro", uri=True)
    try:
        return c.execute(sql).fetchone()[0]
    finally:
        c.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--telesink", default="target/release/telesink")
    p.add_argument("--filllog", default="target/release/examples/filllog")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--db", help="the SQLite log")
    where.add_argument("--pg-url", help="the PostgreSQL log (postgres://…)")
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

    res = {"rows_requested": a.rows, "devices": a.devices, "days": a.days,
           "backend": "postgresql" if a.pg_url else "sqlite"}
    if a.pg_url:
        filled = psql(a, "SELECT to_regclass('queries') IS NOT NULL") == "t"
        if a.fresh and filled:
            sys.exit("--fresh with --pg-url: drop and create the database yourself")
        target = ["--url", a.pg_url]
    else:
        if a.fresh and os.path.exists(a.db):
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(a.db + suffix):
                    os.remove(a.db + suffix)
        filled = os.path.exists(a.db)
        target = ["--path", a.db]
    if not filled:
        t = time.perf_counter()
        subprocess.run(["nice", a.filllog, *target, "--rows", str(a.rows),
                        "--devices", str(a.devices), "--days", str(a.days)], check=True)
        res["fill_s"] = time.perf_counter() - t
    rows = count_rows(a)
    size = size_bytes(a)
    res.update(rows=rows, bytes=size, bytes_per_row=size / rows)

    work = tempfile.mkdtemp(prefix="townlog-")
    cfg = write_config(work, querylog_location(a), free_port(), free_port(), 3650)
    device = pick_device(a)
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
    print(f"| log | rows | B/row | verify 7d s | log --client 1d s | log 1d (all clients) s | retention of a day s | dropped |")
    print(f"|---|---|---|---|---|---|---|---|")
    ret = res.get("retention_s")
    print(f"| {res['backend']} | {rows:,} | {res['bytes_per_row']:.1f} | {res['verify_s']:.3f} | {res['log_client_s']:.3f} | "
          f"{res['log_all_s']:.3f} | {'n/a' if ret is None else f'{ret:.1f}'} | {res.get('dropped', 'n/a')} |")


if __name__ == "__main__":
    main()
