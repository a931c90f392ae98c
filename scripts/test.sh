#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need, then runs them.
#   bash scripts/test.sh
# Needs root (or sudo) for apt-get the first time. Everything runs on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
command -v promtool   >/dev/null 2>&1 || need_apt+=(prometheus)
command -v dig        >/dev/null 2>&1 || need_apt+=(dnsutils)
# The DoH client of tests/encrypted_e2e.rs (HTTP/2 and HTTP/1.1).
command -v curl       >/dev/null 2>&1 || need_apt+=(curl)
# Network namespaces and veth pairs for the device-identity tests (tests/devices_*.rs).
command -v ip         >/dev/null 2>&1 || need_apt+=(iproute2)
# DNSSEC: a zone signed by the test (ldnsutils), served by NSD (tests/dnssec_e2e.rs).
command -v nsd           >/dev/null 2>&1 || need_apt+=(nsd)
command -v ldns-signzone >/dev/null 2>&1 || need_apt+=(ldnsutils)
# nftables sets and counters for the telemetry-address tests (tests/addresses_netns.rs); setpriv
# (util-linux) drops CAP_NET_ADMIN there.
command -v nft        >/dev/null 2>&1 || need_apt+=(nftables)
command -v setpriv    >/dev/null 2>&1 || need_apt+=(util-linux)
# PostgreSQL for the shared query log (tests/querylog_postgres.rs starts its own cluster with
# initdb; Debian keeps the binaries in /usr/lib/postgresql/<version>/bin, off PATH).
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need_apt+=(postgresql)
if ((${#need_apt[@]})); then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# The prometheus package starts a system service on :9090; the tests start their own on other
# ports, so it does not matter, but stop it where we can to keep the machine quiet.
(systemctl stop prometheus prometheus-node-exporter 2>/dev/null || true)
# Likewise NSD's system service (the DNSSEC test starts its own NSD on a free port).
(systemctl stop nsd 2>/dev/null || true)
# And the postgresql package's own cluster on :5432 (the tests start theirs on free ports).
(systemctl stop postgresql 2>/dev/null || true)

echo "== format and lints"
cargo fmt --check
cargo clippy --release --all-targets -- -D warnings

echo "== tests (unit, integration, end-to-end with real Prometheus)"
cargo test --release --all-targets 2>&1 | tee target/test-output.txt
