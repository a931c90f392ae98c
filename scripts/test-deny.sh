#!/usr/bin/env bash
# A test of scripts/deny.sh's advisory check: a throwaway crate that depends on a version of
# smallvec with a known advisory (RUSTSEC-2021-0003, smallvec 1.6.0; fixed in 1.6.1) must fail
# the check, naming the advisory, and the same crate on the fixed version must pass. Whichever
# database deny.sh uses (live, else the snapshot) is the one tested.
#
#   bash scripts/test-deny.sh
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

make_crate() { # $1 = smallvec version
  rm -rf "$scratch/crate"
  mkdir -p "$scratch/crate/src"
  cat >"$scratch/crate/Cargo.toml" <<EOF
[package]
name = "deny-scratch"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
smallvec = "=$1"
EOF
  echo "pub use smallvec;" >"$scratch/crate/src/lib.rs"
  # telesink's own policy (yanked crates denied, the same targets).
  cp "$ROOT/deny.toml" "$scratch/crate/deny.toml"
  (cd "$scratch/crate" && cargo generate-lockfile --quiet)
}

run_deny() {
  DENY_PROJECT_DIR="$scratch/crate" DENY_CHECKS=advisories bash "$ROOT/scripts/deny.sh" \
    >"$scratch/out" 2>&1
}

failures=0

make_crate 1.6.0
if run_deny; then
  cat "$scratch/out"
  echo "FAIL: deny.sh passed a crate that depends on smallvec 1.6.0 (RUSTSEC-2021-0003)"
  failures=$((failures + 1))
elif ! grep -q "RUSTSEC-2021-0003" "$scratch/out"; then
  cat "$scratch/out"
  echo "FAIL: deny.sh failed on smallvec 1.6.0, but not for RUSTSEC-2021-0003"
  failures=$((failures + 1))
else
  grep -E "using the RustSec|live RustSec|RUSTSEC-2021-0003" "$scratch/out" | head -n3
  echo "ok: the vulnerable dependency fails the advisory check"
fi

make_crate 1.6.1
if run_deny; then
  grep -E "advisories ok" "$scratch/out" | tail -n1
  echo "ok: the fixed version passes"
else
  cat "$scratch/out"
  echo "FAIL: deny.sh failed the fixed smallvec 1.6.1"
  failures=$((failures + 1))
fi

if [ "$failures" -ne 0 ]; then
  echo "test-deny: $failures failed"
  exit 1
fi
echo "test-deny: 2 passed, 0 failed"
