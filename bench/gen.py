#!/usr/bin/env python3
"""Deterministic synthetic blocklist and dnsperf query files for bench/run.sh.

    python3 bench/gen.py OUTDIR [--seed 8] [--names 1000000] [--small 100000]

Writes into OUTDIR (skipping the work when OUTDIR/.done-SEED-NAMES exists):
  list-1m.txt, list-100k.txt   one name per line; the 100k list is the first 100k lines of the
                               1M list. ~85% registrable names (label + public suffix), ~15%
                               subdomain entries (metrics.label.com, eu-telemetry3.label.net).
                               Every entry blocks the name and everything under it.
  unbound-SIZE.conf            local-zone: "NAME." always_null
  dnsmasq-SIZE.conf            address=/NAME/0.0.0.0
  hickory-SIZE.txt             NAME and *.NAME (hickory's blocklist matches a name exactly; the
                               wildcard line gives it the same subtree semantics as the others)
  q-blocked-SIZE.txt           100k A queries: half list entries, half random subdomains of them
  q-cached.txt                 10k distinct allowed names (none is in or under a list entry);
                               a warm-up pass puts all of them in the server's cache
  q-mix-SIZE.txt               100k lines alternating blocked / cached (50/50)
"""
import argparse
import os
import random

SYLL = ("ba be bi bo bu ca co cu da de di do du fa fe fi fo ga go gu ha he hi ho ja jo ka ke "
        "ki ko ku la le li lo lu ma me mi mo mu na ne ni no nu pa pe pi po pu ra re ri ro ru "
        "sa se si so su ta te ti to tu va ve vi vo wa we wi xa xi ya yo za ze zo "
        "an ar en er in on or un al el il ol ex ix ox "
        "str tr cl pl br cr dr fl gr pr sh ch th st sp sk sm sn qu").split()
WORDS = ("ads track metrics stats telemetry log logs api sdk events data collect beacon pixel "
         "analytics report crash update cdn push tag tags insight sync hub edge").split()
REGIONS = ["", "", "", "eu-", "us-", "ap-", "cn-", "in-"]
TLDS = [("com", 45), ("net", 10), ("org", 6), ("io", 4), ("de", 4), ("cn", 4), ("ru", 3),
        ("co.uk", 3), ("info", 3), ("xyz", 3), ("app", 2), ("tv", 2), ("com.br", 2),
        ("co.jp", 2), ("fr", 2), ("top", 2), ("online", 1), ("site", 1), ("me", 1), ("co", 1),
        ("in", 1), ("nl", 1), ("pl", 1), ("com.cn", 1), ("jp", 1)]
TLD_POOL = [t for t, w in TLDS for _ in range(w)]


def label(r):
    n = r.choice((2, 2, 3, 3, 3, 4, 4, 5))
    s = "".join(r.choice(SYLL) for _ in range(n))
    x = r.random()
    if x < 0.10:
        s += str(r.randrange(1, 1000))
    elif x < 0.18:
        s += "-" + "".join(r.choice(SYLL) for _ in range(r.choice((1, 2, 3))))
    return s


def registrable(r):
    return label(r) + "." + r.choice(TLD_POOL)


def subprefix(r):
    w = r.choice(WORDS)
    x = r.random()
    if x < 0.3:
        w = r.choice(REGIONS) + w + str(r.randrange(1, 10))
    elif x < 0.5:
        w = w + "." + r.choice(WORDS)
    return w


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=8)
    ap.add_argument("--names", type=int, default=1_000_000)
    ap.add_argument("--small", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=100_000)
    ap.add_argument("--cached", type=int, default=10_000)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    stamp = os.path.join(a.out, f".done-{a.seed}-{a.names}-{a.small}-{a.queries}-{a.cached}")
    if os.path.exists(stamp):
        print(f"gen: {a.out} is up to date")
        return

    r = random.Random(a.seed)
    names, seen, bases = [], set(), []
    while len(names) < a.names:
        if bases and r.random() < 0.15:
            n = subprefix(r) + "." + r.choice(bases)
        else:
            n = registrable(r)
            if n in seen:
                continue
            bases.append(n)
        if n in seen:
            continue
        seen.add(n)
        names.append(n)

    sizes = {"1m": names, "100k": names[: a.small]}
    for tag, lst in sizes.items():
        with open(os.path.join(a.out, f"list-{tag}.txt"), "w") as f:
            f.write(f"# synthetic blocklist, seed {a.seed}, {len(lst)} names\n")
            f.writelines(n + "\n" for n in lst)
        with open(os.path.join(a.out, f"unbound-{tag}.conf"), "w") as f:
            f.write("server:\n")
            f.writelines(f'local-zone: "{n}." always_null\n' for n in lst)
        with open(os.path.join(a.out, f"dnsmasq-{tag}.conf"), "w") as f:
            f.writelines(f"address=/{n}/0.0.0.0\n" for n in lst)
        with open(os.path.join(a.out, f"hickory-{tag}.txt"), "w") as f:
            f.writelines(f"{n}\n*.{n}\n" for n in lst)

    def blocked_by(name):
        parts = name.split(".")
        return any(".".join(parts[i:]) in seen for i in range(len(parts)))

    # Allowed names: a fresh generator stream, each checked against the 1M list (a superset
    # of the 100k one), so they are allowed at both sizes.
    rq = random.Random(a.seed + 1)
    cached, cseen = [], set()
    while len(cached) < a.cached:
        base = registrable(rq)
        n = base if rq.random() < 0.5 else rq.choice(("www", "api", "cdn", "static", "img", "m")) + "." + base
        if n in cseen or blocked_by(n):
            continue
        cseen.add(n)
        cached.append(n)
    with open(os.path.join(a.out, "q-cached.txt"), "w") as f:
        f.writelines(f"{n} A\n" for n in cached)

    for tag, lst in sizes.items():
        rb = random.Random(a.seed + 2)
        blocked = []
        for i in range(a.queries):
            e = rb.choice(lst)
            blocked.append(e if i % 2 == 0 else subprefix(rb) + "." + e)
        with open(os.path.join(a.out, f"q-blocked-{tag}.txt"), "w") as f:
            f.writelines(f"{n} A\n" for n in blocked)
        with open(os.path.join(a.out, f"q-mix-{tag}.txt"), "w") as f:
            for i in range(a.queries):
                n = blocked[i // 2] if i % 2 == 0 else cached[(i // 2) % len(cached)]
                f.write(f"{n} A\n")

    open(stamp, "w").close()
    print(f"gen: wrote {a.names} names, {a.queries} queries per file into {a.out}")


if __name__ == "__main__":
    main()
