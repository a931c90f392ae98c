#!/usr/bin/env python3
"""How much of each vendor's HaGeZi native tracker list the shipped config blocks, with every
subscription's cached copy present, and whether every host of the allow file
(blocklists/functional.txt) is still answered by the upstream.

    python3 bench/coverage.py DIR [--telesink PATH] [--missed]

DIR holds HaGeZi's lists in their repository layout (DIR/wildcard/native.<vendor>.txt, the
format the shipped config subscribes to, and DIR/domains/native.<vendor>.txt, every host name
explicitly, which coverage is measured against). Nothing is downloaded:

1. The repository's config.toml and blocklists/ are copied into a temporary directory, and
   each subscription's cache (.telesink-cache/, paths from `telesink lists --json`) is seeded
   with DIR's copy of the file its URL names.
2. `telesink lists coverage` counts, per vendor, the names of DIR/domains/native.<v>.txt that
   the config blocks for a device in no group (the policy the DNS path uses).
3. A real `telesink run` on loopback, forwarding to a tiny DNS server started here (it answers
   A 192.0.2.1 for every name), is asked for every host of blocklists/functional.txt over UDP:
   each must get the upstream's 192.0.2.1, not 0.0.0.0; and for each subscribed list's own
   canary entry (h4g3z1-native.<vendor>.web.app), which must get 0.0.0.0.

Exit status 0 when every vendor is at 90 % or more and every allow-file host is answered by
the upstream, 1 otherwise.
"""

import argparse
import json
import os
import random
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

VENDORS = ["amazon", "apple", "huawei", "lgwebos", "oppo-realme", "roku", "samsung", "tiktok",
           "tiktok.extended", "vivo", "winoffice", "xiaomi"]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UPSTREAM_ANSWER = "192.0.2.1"
THRESHOLD = 90.0


def find_telesink(given):
    if given:
        return given
    for p in ("target/release/telesink", "target/debug/telesink"):
        if os.access(os.path.join(REPO, p), os.X_OK):
            return os.path.join(REPO, p)
    subprocess.run(["cargo", "build", "--bin", "telesink"], cwd=REPO, check=True)
    return os.path.join(REPO, "target/debug/telesink")


def free_port(kind):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# --- a minimal DNS: queries, answers --------------------------------------------------------
def build_query(name, qid):
    q = b"".join(bytes([len(l)]) + l.encode() for l in name.rstrip(".").split(".")) + b"\0"
    return struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + q + struct.pack(">HH", 1, 1)


def skip_name(msg, i):
    while True:
        n = msg[i]
        if n == 0:
            return i + 1
        if n & 0xC0 == 0xC0:
            return i + 2
        i += n + 1


def parse_answer(msg):
    """(rcode, [IPv4 addresses])"""
    _, flags, qd, an, _, _ = struct.unpack(">HHHHHH", msg[:12])
    i = 12
    for _ in range(qd):
        i = skip_name(msg, i) + 4
    addrs = []
    for _ in range(an):
        i = skip_name(msg, i)
        rtype, _, _, rdlen = struct.unpack(">HHIH", msg[i:i + 10])
        i += 10
        if rtype == 1 and rdlen == 4:
            addrs.append(socket.inet_ntoa(msg[i:i + 4]))
        i += rdlen
    return flags & 0xF, addrs


def upstream_server(sock, stop):
    """Answers every A question with 192.0.2.1, TTL 60 (anything else: an empty NOERROR)."""
    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            msg, peer = sock.recvfrom(4096)
        except socket.timeout:
            continue
        qid, _, qd, _, _, _ = struct.unpack(">HHHHHH", msg[:12])
        end = skip_name(msg, 12)
        qtype = struct.unpack(">H", msg[end:end + 2])[0]
        question = msg[12:end + 4]
        answer = b""
        if qtype == 1:
            answer = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + socket.inet_aton(UPSTREAM_ANSWER)
        head = struct.pack(">HHHHHH", qid, 0x8180, 1, 1 if answer else 0, 0, 0)
        sock.sendto(head + question + answer, peer)


def ask(port, name):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    qid = random.randrange(65536)
    try:
        for _ in range(3):
            s.sendto(build_query(name, qid), ("127.0.0.1", port))
            try:
                msg = s.recv(4096)
            except socket.timeout:
                continue
            return parse_answer(msg)
        return None, []
    finally:
        s.close()


# --- the steps ------------------------------------------------------------------------------
def seed(telesink, work, lists_dir):
    out = subprocess.run([telesink, "lists", "--json", "-c", "config.toml"], cwd=work,
                         check=True, capture_output=True, text=True).stdout
    seeded = []
    for row in json.loads(out):
        sub = row.get("subscription")
        if not sub:
            continue
        rel = row["source"].split("/main/", 1)[-1]   # wildcard/native.xiaomi.txt
        src = os.path.join(lists_dir, rel)
        if not os.path.isfile(src):
            sys.exit(f"{row['name']}: {row['source']} has no copy at {src}")
        os.makedirs(os.path.dirname(sub["cache"]), exist_ok=True)
        shutil.copyfile(src, sub["cache"])
        seeded.append((row["name"], rel))
    return seeded


def coverage(telesink, work, lists_dir, missed):
    files = [os.path.join(lists_dir, "domains", f"native.{v}.txt") for v in VENDORS]
    args = [telesink, "lists", "coverage", "-c", "config.toml"] + files
    if missed:
        args.append("--missed")
    out = subprocess.run(args, cwd=work, check=True, capture_output=True, text=True).stdout
    rows, allowed, current = [], {}, None
    for line in out.splitlines():
        m = re.match(r"(\S+): (\d+) names, (\d+) blocked \(([\d.]+) %\), (\d+) let through", line)
        if m:
            vendor = os.path.basename(m.group(1))[len("native."):-len(".txt")]
            current = vendor
            rows.append((vendor, int(m.group(2)), int(m.group(3)), float(m.group(4)), int(m.group(5))))
            allowed[vendor] = []
        elif line.strip().startswith("allowed") and current:
            allowed[current].append(line.split()[-1])
        elif missed and line.strip().startswith("missed"):
            print(f"   missed ({current}): {line.split()[-1]}")
    return rows, allowed


def allow_hosts():
    hosts = []
    for line in open(os.path.join(REPO, "blocklists", "functional.txt")):
        line = line.split("#", 1)[0].strip()
        if line:
            hosts.append(line)
    return hosts


def dns_check(telesink, work, lists_dir, blocked_samples):
    dns_port, metrics_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
    up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    up.bind(("127.0.0.1", 0))
    stop = threading.Event()
    t = threading.Thread(target=upstream_server, args=(up, stop), daemon=True)
    t.start()
    cfg = open(os.path.join(work, "config.toml")).read()
    cfg = re.sub(r'(?m)^listen = \["0\.0\.0\.0:53".*$', f'listen = ["127.0.0.1:{dns_port}"]', cfg)
    cfg = re.sub(r"(?m)^rate_limit_qps = \d+", "rate_limit_qps = 0", cfg)
    cfg = re.sub(r'(?m)^servers = \[.*\]$', f'servers = ["127.0.0.1:{up.getsockname()[1]}"]', cfg)
    cfg = re.sub(r'(?m)^listen = "127\.0\.0\.1:9153"', f'listen = "127.0.0.1:{metrics_port}"', cfg)
    cfg = re.sub(r'(?m)^log = "matched"', 'log = "none"', cfg)
    open(os.path.join(work, "run.toml"), "w").write(cfg)
    log = open(os.path.join(work, "telesink.log"), "w")
    proc = subprocess.Popen([telesink, "run", "-c", "run.toml"], cwd=work, stdout=log, stderr=log)
    failures = []
    try:
        for _ in range(100):
            rcode, addrs = ask(dns_port, "h4g3z1-native.xiaomi.web.app")
            if rcode is not None:
                break
            time.sleep(0.1)
        else:
            sys.exit("telesink did not answer; see " + log.name)
        for host in allow_hosts():
            rcode, addrs = ask(dns_port, host)
            if addrs != [UPSTREAM_ANSWER]:
                failures.append(f"{host}: got rcode {rcode} {addrs}, expected the upstream's {UPSTREAM_ANSWER}")
        for vendor, name in blocked_samples:
            rcode, addrs = ask(dns_port, name)
            if addrs != ["0.0.0.0"]:
                failures.append(f"{name} ({vendor}): got rcode {rcode} {addrs}, expected blocked (0.0.0.0)")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        stop.set()
        t.join()
        up.close()
    return failures


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("lists_dir", help="a directory of HaGeZi lists: <format>/native.<vendor>.txt")
    ap.add_argument("--telesink", help="the telesink binary (default: target/release or target/debug)")
    ap.add_argument("--missed", action="store_true", help="print every name no list blocks")
    a = ap.parse_args()
    lists_dir = os.path.abspath(a.lists_dir)
    telesink = os.path.abspath(find_telesink(a.telesink))
    work = tempfile.mkdtemp(prefix="telesink-coverage-")
    try:
        shutil.copy(os.path.join(REPO, "config.toml"), work)
        shutil.copytree(os.path.join(REPO, "blocklists"), os.path.join(work, "blocklists"))
        seeded = seed(telesink, work, lists_dir)
        print(f"seeded {len(seeded)} subscriptions from {lists_dir}: " +
              ", ".join(rel for _, rel in seeded))
        rows, allowed = coverage(telesink, work, lists_dir, a.missed)
        print()
        print("| vendor list (domains/) | names | blocked | coverage | let through by functional.txt |")
        print("|---|---:|---:|---:|---:|")
        ok = True
        for vendor, names, blocked, pct, exc in rows:
            print(f"| native.{vendor} | {names} | {blocked} | {pct:.1f} % | {exc} |")
            ok &= pct >= THRESHOLD
        print()
        for vendor, hosts in allowed.items():
            if hosts:
                print(f"   {vendor}: allowed on purpose: {', '.join(hosts)}")
        # One name per subscribed list that must be blocked: the list's own canary entry.
        subscribed = [rel.split("native.", 1)[1][:-len(".txt")] for _, rel in seeded]
        samples = [(v, f"h4g3z1-native.{v}.web.app") for v in subscribed]
        failures = dns_check(telesink, work, lists_dir, samples)
        print()
        if failures:
            ok = False
            print("DNS check FAILED:")
            for f in failures:
                print("   " + f)
        else:
            print(f"DNS check: all {len(allow_hosts())} hosts of blocklists/functional.txt answered by the "
                  f"upstream ({UPSTREAM_ANSWER}); the {len(samples)} vendor canaries blocked (0.0.0.0)")
        if ok:
            print(f"\nPASS: every vendor at {THRESHOLD:.0f} % or more, and every allow-file host "
                  "answered by the upstream")
        else:
            print(f"\nFAIL: a vendor below {THRESHOLD:.0f} %, or a DNS check failed")
        return 0 if ok else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
