#!/usr/bin/env bash
# bench/run.sh: telesink against unbound, hickory-dns, dnsmasq and a header-flipping floor
# responder, on the same synthetic blocklist (100k and 1M names). Issue 8. See bench/README.md.
#
#   bash bench/run.sh                  # everything: build, install, generate, run, report
#   SERVERS=telesink,floor SIZES=1m RUNS=3 DURATION=10 bash bench/run.sh   # a subset
#   SKIP_INSTALL=1 bash bench/run.sh   # no apt-get / cargo install (tools already there)
#   PROFILE=1 bash bench/run.sh        # also profile telesink's blocked path (bench/profile.sh)
#   MICRO=1 bash bench/run.sh          # also the matcher micro-benchmark (cargo bench)
#   SERVERS=none WORKLOADS=forwarded bash bench/run.sh   # the forwarded path alone (issue 17):
#                                      # telesink, unbound, dnsdist in front of NSD, every query a miss
#   SERVERS=none WORKLOADS=dot,doh bash bench/run.sh     # DNS over TLS and HTTPS (issue 19): blocked
#                                      # and cached names over DoT/DoH, telesink vs unbound and dnsdist,
#                                      # and memory per open DoT connection
#
# Steps:
#   1. cargo build --release (target/release/telesink)
#   2. apt-get install -y dnsperf unbound dnsmasq nsd dnsdist openssl curl nghttp2-client (Debian); cargo install hickory-dns 0.26
#      (features resolver,blocklist) into bench/.tools, skipped when present; if that install
#      fails, the reason is in bench/.tools/install.log and the run goes on without hickory-dns
#   3. rustc -O bench/tools/responder.rs -> bench/.tools/responder (floor + fast upstream)
#   4. python3 bench/gen.py bench/data: the lists (seed 8) in each server's format and the
#      dnsperf query files (blocked, cached, mix)
#   5. python3 bench/harness.py: each server in turn on 127.0.0.1:5300 pinned to core 0,
#      dnsperf pinned to core 1, upstream responder on 127.0.0.1:5399; writes
#      bench/results/<stamp>.{md,json} and bench/results/latest.md
# Everything runs on loopback; each dnsperf load is bounded by -l (seconds) or -n (passes).
# Needs root for apt-get (and for resetting VmHWM via /proc/PID/clear_refs, to measure the
# reload peak; without it the 10 ms VmRSS samples are used). About 30 minutes with defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH=bench
TOOLS=$BENCH/.tools
mkdir -p "$TOOLS"

SERVERS=${SERVERS:-telesink,unbound,hickory,dnsmasq,floor,querylog}
SIZES=${SIZES:-100k,1m}
RUNS=${RUNS:-3}
DURATION=${DURATION:-10}
LAT_QPS=${LAT_QPS:-20000}
WORKLOADS=${WORKLOADS:-blocked,cached,mix}   # also: forwarded, dot, doh
HICKORY_VERSION=${HICKORY_VERSION:-0.26.3}

echo "== load before: $(uptime)"

echo "== 1. build telesink (release)"
cargo build --release --bin telesink

if [ -z "${SKIP_INSTALL:-}" ]; then
    echo "== 2. install dnsperf, unbound, dnsmasq, nsd, dnsdist, hickory-dns"
    missing=""
    for t in dnsperf unbound dnsmasq nsd dnsdist taskset openssl curl h2load; do command -v "$t" >/dev/null || missing="$missing $t"; done
    if [ -n "$missing" ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dnsperf unbound dnsmasq nsd dnsdist util-linux openssl curl nghttp2-client
    fi
    # Debian starts packaged daemons on install where allowed; they must not hold port 53/5300.
    for svc in unbound dnsmasq nsd dnsdist; do
        systemctl stop "$svc" 2>/dev/null || service "$svc" stop 2>/dev/null || true
    done
    if [ ! -x "$TOOLS/bin/hickory-dns" ]; then
        if cargo install hickory-dns --version "$HICKORY_VERSION" --locked --no-default-features \
            --features resolver,blocklist --root "$TOOLS" >"$TOOLS/install.log" 2>&1; then
            echo "hickory-dns installed"
        else
            echo "!! cargo install hickory-dns failed; continuing without it. Last lines of $TOOLS/install.log:"
            tail -20 "$TOOLS/install.log"
        fi
    fi
fi

echo "== 3. responder (floor and upstream)"
if [ ! -x "$TOOLS/responder" ] || [ "$BENCH/tools/responder.rs" -nt "$TOOLS/responder" ]; then
    rustc -O --edition 2021 "$BENCH/tools/responder.rs" -o "$TOOLS/responder"
fi

echo "== 4. blocklists and query files"
python3 "$BENCH/gen.py" "$BENCH/data"

echo "== 5. run"
python3 "$BENCH/harness.py" --servers "$SERVERS" --sizes "$SIZES" --runs "$RUNS" \
    --duration "$DURATION" --lat-qps "$LAT_QPS" --workloads "$WORKLOADS" ${HARNESS_ARGS:-}

if [ -n "${MICRO:-}" ]; then
    echo "== matcher micro-benchmark"
    cargo bench --bench matcher 2>&1 | tee "$BENCH/results/matcher-latest.txt"
fi
if [ -n "${PROFILE:-}" ]; then
    echo "== profile"
    bash "$BENCH/profile.sh"
fi
echo "== load after: $(uptime)"
