#!/usr/bin/env python3
"""Writes the fuzz seed corpora into fuzz/seeds/<target>/ from the repo's real data.

    python3 fuzz/make_seeds.py

- list_line: the list fixtures (tests/fixtures/lists, tests/fixtures/dns) and the shipped
  blocklists, in chunks of 40 lines, each once as `auto` and once in the format its name says.
- config: every config fixture and the shipped config.toml.
- request: wire queries built here (A, AAAA, HTTPS, ANY, TXT, PTR; with and without EDNS, DO,
  EDNS options, odd opcodes and counts, compression loops, truncations), for names the fuzz
  handler answers locally, blocks, has cached, or must forward (and so fail without upstream).

Deterministic: the same files come out every time (names are hashes of the content).
"""

import hashlib
import os
import struct
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
OUT = os.path.join(ROOT, "fuzz", "seeds")

FORMATS = ["auto", "domains", "hosts", "adblock", "wildcard", "dnsmasq", "regex", "rpz"]


def write(target, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def guess_format(path):
    p = os.path.basename(path).lower()
    for f in ["rpz", "regex", "dnsmasq", "wildcard", "hosts", "adblock"]:
        if f in p:
            return f
    return "auto"


def list_seeds():
    files = []
    for d in ["tests/fixtures/lists", "tests/fixtures/dns", "blocklists", "tests/fixtures/config/lists"]:
        full = os.path.join(ROOT, d)
        if not os.path.isdir(full):
            continue
        for f in sorted(os.listdir(full)):
            if f.endswith(".md"):
                continue
            files.append(os.path.join(full, f))
    for path in files:
        with open(path, "rb") as fh:
            lines = fh.read().split(b"\n")
        fmt = guess_format(path)
        for i in range(0, min(len(lines), 400), 40):
            chunk = b"\n".join(lines[i : i + 40])
            write("list_line", bytes([FORMATS.index("auto") | 8]) + chunk)
            if fmt != "auto":
                write("list_line", bytes([FORMATS.index(fmt) | 8]) + chunk)
                write("list_line", bytes([FORMATS.index(fmt)]) + chunk)
    # One line of each tricky kind, in every format.
    tricky = [
        b"||example.com^$important",
        b"@@||ok.example.com^|",
        b"|exact.example^",
        b"/^ads[0-9]+\\./",
        b"0.0.0.0 a.example b.example # comment",
        b"address=/ads.example/0.0.0.0",
        b"*.ads*.msads.net",
        b"ads.example CNAME .",
        b"*.ads.example 300 IN CNAME rpz-drop.",
        b"\xef\xbb\xbfb\xc3\xbccher.example",
        b"xn--bcher-kva.example",
        b"a" * 64 + b".example",
    ]
    for t in tricky:
        for i in range(len(FORMATS)):
            write("list_line", bytes([i | 8]) + t)


def config_seeds():
    d = os.path.join(ROOT, "tests/fixtures/config")
    paths = [os.path.join(d, f) for f in sorted(os.listdir(d)) if f.endswith(".toml")]
    paths.append(os.path.join(ROOT, "config.toml"))
    for p in paths:
        with open(p, "rb") as fh:
            write("config", fh.read())


def name_wire(name):
    out = b""
    for label in name.strip(".").split("."):
        if label:
            b = label.encode()
            out += bytes([len(b)]) + b
    return out + b"\x00"


def opt(payload=1232, version=0, do=False, options=b"", rcode_hi=0):
    flags = 0x8000 if do else 0
    return (
        b"\x00"
        + struct.pack(">HHBBH", 41, payload, rcode_hi, version, flags)
        + struct.pack(">H", len(options))
        + options
    )


def query(name, qtype, qid=0x1234, flags=0x0100, edns=None, qdcount=1, tail=b""):
    ar = 1 if edns is not None else 0
    head = struct.pack(">HHHHHH", qid, flags, qdcount, 0, 0, ar)
    q = name_wire(name) + struct.pack(">HH", qtype, 1)
    return head + q + (edns or b"") + tail


TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28,
         "SRV": 33, "SVCB": 64, "HTTPS": 65, "ANY": 255, "AXFR": 252}

NAMES = [
    "nas.home.arpa", "www.home.arpa", "NAS.Home.Arpa", "unknown.home.arpa", "localhost",
    "tracking.vendor.example", "sub.tracking.vendor.example", "allowed.vendor.example",
    "ads.example", "ok.ads.example", "beacon42.example", "cloaked.example", "svc.example",
    "big.example", "stale.example", "cached.example", "gone.example", "www.example.org",
    "use-application-dns.net", "mask.icloud.com", "_dns.resolver.arpa",
    "10.1.168.192.in-addr.arpa", "1.0.0.127.in-addr.arpa", "x.onion", ".",
]


def request_seeds():
    def emit(sel, msg):
        write("request", bytes([sel]) + msg)

    sel_default = 0  # UDP, 127.0.0.1, null mode
    for i, n in enumerate(NAMES):
        for t in ["A", "AAAA", "HTTPS", "ANY", "TXT", "PTR"]:
            emit(sel_default, query(n, TYPES[t], qid=i))
        emit(sel_default, query(n, TYPES["A"], edns=opt(1232)))
        emit(1, query(n, TYPES["A"], edns=opt(4096, do=True)))  # TCP
        emit(2, query(n, TYPES["A"], edns=opt(512)))  # anna-phone
        emit(0x10, query(n, TYPES["AAAA"]))  # nxdomain mode
        emit(0x20, query(n, TYPES["A"], edns=opt(1232)))  # refused mode
    # Every source address, both transports.
    for src in range(8):
        for tcp in (0, 1):
            emit((src << 1) | tcp, query("tracking.vendor.example", 1, edns=opt(1232)))
    # Big answers: truncation at 512 / the EDNS size.
    for payload in (0, 1, 511, 512, 1232, 4096, 65535):
        emit(0, query("big.example", 1, edns=opt(payload)))
    emit(0, query("big.example", 1))
    emit(1, query("big.example", 1))
    # EDNS oddities: version 1 (BADVERS), options (cookie, padding, ECS, EDE), extended rcode,
    # two OPTs.
    emit(0, query("cached.example", 1, edns=opt(version=1)))
    cookie = struct.pack(">HH", 10, 8) + b"\x01" * 8
    padding = struct.pack(">HH", 12, 16) + b"\x00" * 16
    ecs = struct.pack(">HHHBB", 8, 7, 1, 24, 0) + b"\xc0\x00\x02"
    emit(0, query("cached.example", 1, edns=opt(options=cookie + padding + ecs)))
    emit(0, query("cached.example", 1, edns=opt(rcode_hi=1)))
    two = struct.pack(">HHHHHH", 7, 0x0100, 1, 0, 0, 2) + name_wire("cached.example") + struct.pack(">HH", 1, 1) + opt() + opt()
    emit(0, two)
    # Header oddities: opcodes, counts, QR set, RD off, Z bits.
    for opcode in (1, 2, 4, 5, 15):
        emit(0, query("cached.example", 1, flags=(opcode << 11) | 0x0100))
    emit(0, query("cached.example", 1, flags=0x8100))  # a response: dropped
    emit(0, query("cached.example", 1, flags=0x0000))
    emit(0, query("cached.example", 1, flags=0x0170))
    emit(0, query("cached.example", 1, qdcount=0))
    emit(0, query("cached.example", 1, qdcount=2))
    emit(0, query("cached.example", 1, qdcount=2, tail=name_wire("ads.example") + b"\x00\x01\x00\x01"))
    emit(0, query("cached.example", 1, tail=b"\xde\xad"))
    # Classes: CH, ANY.
    m = struct.pack(">HHHHHH", 9, 0x0100, 1, 0, 0, 0) + name_wire("version.bind") + struct.pack(">HH", 16, 3)
    emit(0, m)
    # Compression: a pointer to itself, a pointer forward, a pointer into the header.
    head = struct.pack(">HHHHHH", 10, 0x0100, 1, 0, 0, 0)
    emit(0, head + b"\xc0\x0c" + b"\x00\x01\x00\x01")
    emit(0, head + b"\x03abc\xc0\x0c" + b"\x00\x01\x00\x01")
    emit(0, head + b"\xc0\x02" + b"\x00\x01\x00\x01")
    emit(0, head + b"\xc0\x40" + b"\x00\x01\x00\x01")
    # Labels: 63 bytes, 64 (invalid), binary bytes, a 255+ byte name.
    emit(0, head + b"\x3f" + b"a" * 63 + b"\x00\x00\x01\x00\x01")
    emit(0, head + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01")
    emit(0, head + b"\x04\x00\xff.\x80\x07example\x00\x00\x01\x00\x01")
    emit(0, head + (b"\x3f" + b"b" * 63) * 4 + b"\x00\x00\x01\x00\x01")
    # Truncations of a good EDNS query at every length.
    full = query("tracking.vendor.example", 28, edns=opt(1232, do=True, options=cookie))
    for cut in range(0, len(full), 3):
        emit(0, full[:cut])
    emit(0, b"")
    emit(0, b"\x00" * 12)
    emit(0, b"\xff" * 12)


def main():
    if os.path.isdir(OUT):
        for d in os.listdir(OUT):
            for f in os.listdir(os.path.join(OUT, d)):
                os.remove(os.path.join(OUT, d, f))
    list_seeds()
    config_seeds()
    request_seeds()
    for t in sorted(os.listdir(OUT)):
        n = len(os.listdir(os.path.join(OUT, t)))
        print(f"fuzz/seeds/{t}: {n} files", file=sys.stderr)


if __name__ == "__main__":
    main()
