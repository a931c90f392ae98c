#!/usr/bin/env bash
# Soak: telesink under bounded mixed load for MINUTES (default 10), with the query log on, a
# list reload every 10 s and an upstream restart midway. Loopback only; stops by itself.
#
#   bash bench/soak.sh [MINUTES]
#
# Checks: no crash, SIGTERM exits 0, RSS growth after the first minute < 5 %, zero lost query-log
# rows. Writes a `## Soak` section into bench/RESULTS.md (replacing an earlier one only) and the
# raw files into target/soak/run-STAMP/. What it runs: bench/soak/soak.py.
# Needs dnsperf and dig (apt-get install dnsperf dnsutils: done here when missing, as root).
set -euo pipefail
cd "$(dirname "$0")/.."

MINUTES="${1:-10}"

need=()
command -v dnsperf >/dev/null 2>&1 || need+=(dnsperf)
command -v dig >/dev/null 2>&1 || need+=(dnsutils)
if ((${#need[@]})); then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ -z "${SOAK_NO_BUILD:-}" ]; then
  cargo build --release
fi
mkdir -p target/soak
if [ ! -x target/soak/responder ] || [ bench/tools/responder.rs -nt target/soak/responder ]; then
  rustc -O --edition 2021 bench/tools/responder.rs -o target/soak/responder
fi

stamp="$(date -u +%Y%m%d-%H%M%S)"
exec python3 bench/soak/soak.py --minutes "$MINUTES" --bin target/release/telesink \
  --responder target/soak/responder --work "target/soak/run-$stamp" --results bench/RESULTS.md
