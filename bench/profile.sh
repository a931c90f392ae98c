#!/usr/bin/env bash
# bench/profile.sh: where telesink's CPU goes on the blocked path under dnsperf load (issue 8).
#
#   bash bench/profile.sh            # after bench/run.sh has built, installed and generated
#   SIZE=100k bash bench/profile.sh  # smaller list (quicker start under valgrind)
#   BIN=bench/.tools/telesink-af61dc3 bash bench/profile.sh   # another build (bench/build-rev.sh)
#   TRANSPORT=doh SIZE=100k Q=bench/data/q-cached.txt CALLGRIND_ONLY=1 bash bench/profile.sh
#       # the callgrind view over DNS over HTTPS (GET, one query outstanding per connection, as
#       # bench/harness.py --workloads doh) or TRANSPORT=dot (DNS over TLS, -c 10 -q 100)
#
# Three views, all of target/release/telesink serving bench/data/q-blocked-$SIZE.txt:
#   1. callgrind: telesink under valgrind (instrumentation switched on after the list loaded),
#      dnsperf at a fixed low rate (valgrind is ~50x slower) for a bounded time. User-space
#      instructions per query, inclusive and exclusive, by function. Cannot see the kernel.
#   2. perf record -e cpu-clock (software timer: this VM exposes no hardware counters, so
#      `perf stat -e instructions` is not supported) at full dnsperf load: user AND kernel
#      time, so the share of syscalls and the network stack shows. --call-graph dwarf.
#   3. strace -c -f: syscalls per answered query (bounded run; strace slows the server, the
#      counts stay exact).
# Output: bench/results/profile-<stamp>/ (callgrind.out, annotate.txt, perf-*.txt, strace.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-1m}
PORT=${PORT:-5300}
UP=${UP:-5399}
BIN=${BIN:-target/release/telesink}
LABEL=${LABEL:-$(basename "$BIN")}
OUT=bench/results/profile-$(date +%Y%m%d-%H%M%S)-$LABEL
WORK=bench/.work/profile
mkdir -p "$OUT" "$WORK"
cp "bench/data/list-$SIZE.txt" "$WORK/list.txt"
cat >"$WORK/telesink.toml" <<EOF
[server]
listen = ["127.0.0.1:$PORT"]
allow_networks = ["127.0.0.0/8"]
rate_limit_qps = 0
[upstream]
servers = ["127.0.0.1:$UP"]
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
EOF
# TRANSPORT=dot|doh: telesink also serves DoT and DoH (a self-signed certificate made here) and
# the callgrind load goes over that transport.
TRANSPORT=${TRANSPORT:-udp}
DNSPERF_MODE=(-p "$PORT")
if [ "$TRANSPORT" != udp ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=bench.test \
      -addext "subjectAltName=DNS:bench.test,IP:127.0.0.1" -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
  sed -i "s|^rate_limit_qps = 0|rate_limit_qps = 0\ntls_listen = [\"127.0.0.1:5853\"]\nhttps_listen = [\"127.0.0.1:5443\"]\ntls_cert = \"$PWD/$WORK/cert.pem\"\ntls_key = \"$PWD/$WORK/key.pem\"\ntls_name = \"bench.test\"\ntcp_idle_timeout = \"60s\"|" "$WORK/telesink.toml"
  case "$TRANSPORT" in
    dot) DNSPERF_MODE=(-m dot -p 5853 -c 10) ;;
    doh) DNSPERF_MODE=(-m doh -p 5443 -O doh-uri=https://127.0.0.1:5443/dns-query -O doh-method=GET -c 20) ;;
    *) echo "TRANSPORT: udp, dot or doh" >&2; exit 2 ;;
  esac
fi
# EXTRA_TOML appends to that config, e.g. EXTRA_TOML=$'[addresses]\ncategories = ["telemetry"]'
# profiles the path with telemetry-address learning on.
if [ -n "${EXTRA_TOML:-}" ]; then printf '\n%s\n' "$EXTRA_TOML" >>"$WORK/telesink.toml"; fi
# Q=bench/data/q-cached.txt profiles the cache-hit path instead (the warm-up caches every name).
Q=${Q:-bench/data/q-blocked-$SIZE.txt}
# The warm-up's and strace's queries (default: Q's). For the forwarded path (issue 17) each run
# needs names of its own, or the later runs are cache hits:
#   for t in warm cg st; do awk -v t=$t 'BEGIN{for(i=0;i<100000;i++) print "q" i "." t ".fwd.bench A"}' \
#     >bench/data/q-fwd-$t.txt; done
#   awk 'BEGIN{for(i=0;i<1000000;i++) print "q" i ".perf.fwd.bench A"}' >bench/data/q-fwd-perf.txt
#   SIZE=100k Q=bench/data/q-fwd-cg.txt WARM_Q=bench/data/q-fwd-warm.txt \
#     STRACE_Q=bench/data/q-fwd-st.txt PERF_Q=bench/data/q-fwd-perf.txt bash bench/profile.sh
# (the responder upstream answers every name.)
WARM_Q=${WARM_Q:-$Q}
STRACE_Q=${STRACE_Q:-$Q}
# perf's full-load run (8 s recorded, after 2 s of WARM_Q) sends 8 s x the server's qps: for
# the forwarded path a file of ~1M names of its own (PERF_Q), or most of that run is cache hits.
PERF_Q=${PERF_Q:-$Q}
PROBE="probe.$(awk '!/^#/ {print; exit}' "bench/data/list-$SIZE.txt")"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
# EXTERNAL_UP=1: an upstream already listens on $UP (the forwarded harness's NSD, whose answers
# carry NS and glue records as an authoritative server's do); else the responder answers.
if [ -z "${EXTERNAL_UP:-}" ]; then
  taskset -c 1 bench/.tools/responder upstream 127.0.0.1:$UP & pids+=($!)
fi

wait_blocked() { # $1 = seconds limit
    python3 - "$PORT" "$PROBE" "$1" <<'EOF'
import sys, time
sys.path.insert(0, "bench")
from harness import ask, blocked
port, name, limit = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
t0 = time.monotonic()
while time.monotonic() - t0 < limit:
    if blocked(ask(port, name, 0.2)):
        print(f"blocked answer after {time.monotonic() - t0:.1f} s"); sys.exit(0)
    time.sleep(0.2)
sys.exit("no blocked answer")
EOF
}
completed() { grep -oP 'Queries completed:\s+\K\d+' "$1"; }

echo "== 1. callgrind ($SIZE list)"
taskset -c 0 valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/callgrind.out" \
    "$BIN" run -c "$WORK/telesink.toml" 2>"$OUT/valgrind.log" & VG=$!; pids+=($VG)
wait_blocked 600
if [ "$TRANSPORT" = udp ]; then
  taskset -c 1 dnsperf -s 127.0.0.1 -p $PORT -d "$WARM_Q" -n 1 -l 12 -Q 1000 >/dev/null 2>&1   # warm-up (caches every name of q-cached)
  callgrind_control -i on "$VG" >/dev/null
  taskset -c 1 dnsperf -s 127.0.0.1 -p $PORT -d "$Q" -l 20 -Q 1500 -q 50 >"$OUT/callgrind-dnsperf.txt" 2>&1
else
  # Over DoH one query outstanding per connection (-q = -c): dnsperf's DoH client loses answers
  # that arrive together (bench/README). Lower rate: the TLS and HTTP/2 work is slower still.
  taskset -c 1 dnsperf -s 127.0.0.1 -p $PORT -d "$WARM_Q" -n 1 -l 12 -Q 1000 >/dev/null 2>&1   # warm-up over UDP
  taskset -c 1 dnsperf -s 127.0.0.1 "${DNSPERF_MODE[@]}" -d "$Q" -l 8 -Q 300 -q 20 >/dev/null 2>&1   # and over the transport
  callgrind_control -i on "$VG" >/dev/null
  taskset -c 1 dnsperf -s 127.0.0.1 "${DNSPERF_MODE[@]}" -d "$Q" -l 20 -Q 300 -q 20 >"$OUT/callgrind-dnsperf.txt" 2>&1
fi
callgrind_control -i off "$VG" >/dev/null
kill -TERM "$VG"; wait "$VG" || true
N=$(completed "$OUT/callgrind-dnsperf.txt")
echo "queries completed under callgrind: $N" | tee "$OUT/callgrind-queries.txt"
callgrind_annotate --inclusive=yes "$OUT/callgrind.out" >"$OUT/annotate-inclusive.txt" 2>/dev/null || true
callgrind_annotate "$OUT/callgrind.out" >"$OUT/annotate-exclusive.txt" 2>/dev/null || true

if [ -n "${CALLGRIND_ONLY:-}" ]; then
  echo "== results in $OUT (callgrind only)"; exit 0
fi
echo "== 2. perf record -e cpu-clock ($SIZE list, full load)"
taskset -c 0 "$BIN" run -c "$WORK/telesink.toml" 2>"$OUT/telesink.log" & TS=$!; pids+=($TS)
wait_blocked 120
taskset -c 1 dnsperf -s 127.0.0.1 -p $PORT -d "$WARM_Q" -l 2 >/dev/null 2>&1   # warm-up
perf record -e cpu-clock -F 2000 --call-graph dwarf,16384 -p "$TS" -o "$OUT/perf.data" -- sleep 8 \
    >"$OUT/perf-record.log" 2>&1 &
PR=$!
taskset -c 1 dnsperf -s 127.0.0.1 -p $PORT -d "$PERF_Q" -l 8 >"$OUT/perf-dnsperf.txt" 2>&1
wait "$PR" || true
perf report -i "$OUT/perf.data" --no-children --sort dso,symbol --stdio -g none --percent-limit 0.5 \
    >"$OUT/perf-self.txt" 2>/dev/null || true
perf report -i "$OUT/perf.data" --children --sort symbol --stdio -g none --percent-limit 2 \
    >"$OUT/perf-children.txt" 2>/dev/null || true
perf report -i "$OUT/perf.data" --no-children --sort dso --stdio -g none \
    >"$OUT/perf-dso.txt" 2>/dev/null || true

echo "== 3. strace -c (syscalls per query)"
taskset -c 1 dnsperf -s 127.0.0.1 -p $PORT -d "$Q" -l 2 >/dev/null 2>&1
timeout 30 strace -c -f -p "$TS" -o "$OUT/strace.txt" & ST=$!
sleep 1
taskset -c 1 dnsperf -s 127.0.0.1 -p $PORT -d "$STRACE_Q" -n 1 -q 100 >"$OUT/strace-dnsperf.txt" 2>&1
sleep 0.5
kill -INT "$ST" 2>/dev/null || true; wait "$ST" 2>/dev/null || true
echo "queries completed under strace: $(completed "$OUT/strace-dnsperf.txt")" | tee -a "$OUT/strace.txt"
kill -TERM "$TS"; wait "$TS" || true

{ echo "binary: $BIN, modified $(stat -c %y "$BIN"), sha256 $(sha256sum "$BIN" | cut -c1-16)"
  echo "repo HEAD when profiled: $(git log -1 --format='%h %s' | cut -c1-80) (the binary may be another build)"; } >"$OUT/binary.txt"
echo "== results in $OUT"
ls -la "$OUT"
