#!/usr/bin/env bash
# Runs each cargo-fuzz target for a bounded time, one after the other.
#
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]     # default: 60 s each, every target
#
# Targets (fuzz/fuzz_targets): list_line (parse_list, every format), config (Config::parse),
# request (Request::from_bytes + Handler::handle_request, no network).
#
# The corpus grows in fuzz/corpus/<target> (not committed); the committed seeds are
# fuzz/seeds/<target> (regenerate with `python3 fuzz/make_seeds.py`). A crash leaves its input in
# fuzz/artifacts/<target>/ and makes this script exit 1; reproduce it with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none <target> fuzz/artifacts/<target>/<file>
#
# This machine has only the stable toolchain: libFuzzer needs nightly flags, which
# RUSTC_BOOTSTRAP=1 unlocks. The sanitizer is off by default (FUZZ_SANITIZER=address turns ASan
# on): the code under test is safe Rust, so what the fuzzer looks for is panics (debug
# assertions and overflow checks are on), hangs (-timeout) and runaway memory (-rss_limit_mb).
# cargo-fuzz is installed with `cargo install --locked` into $TELESINK_TOOLS (default
# ~/.cache/telesink/tools) when it is not on the PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH="${1:-60}"
shift || true
TARGETS=("$@")
((${#TARGETS[@]})) || TARGETS=(list_line config request)
SANITIZER="${FUZZ_SANITIZER:-none}"
TOOLS="${TELESINK_TOOLS:-$HOME/.cache/telesink/tools}"
export PATH="$TOOLS/bin:$PATH"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz into $TOOLS"
  cargo install cargo-fuzz --locked --root "$TOOLS" >/dev/null
fi

mkdir -p fuzz/logs
status=0
summary=()
for t in "${TARGETS[@]}"; do
  echo "== fuzz $t: building"
  cargo fuzz build --sanitizer "$SANITIZER" "$t"
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  log="fuzz/logs/$t.log"
  echo "== fuzz $t: ${SECONDS_EACH}s (log $log)"
  set +e
  # -timeout: one input taking 10 s is a hang. -rss_limit_mb: 2 GiB. -max_len: a few dozen
  # list lines, a long config, a DNS message of any size a client sends over UDP (small inputs
  # keep the executions per second up; the parsers work line by line or name by name anyway).
  case "$t" in
    list_line) max_len=8192 ;;
    config) max_len=16384 ;;
    *) max_len=4096 ;;
  esac
  cargo fuzz run --sanitizer "$SANITIZER" "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
    -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -max_len="$max_len" \
    -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$t/" >"$log" 2>&1
  rc=$?
  set -e
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*')
  corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
  line="$t: ${SECONDS_EACH}s, ${execs:-?} execs, coverage ${cov:-?}, corpus $corpus"
  if [ "$rc" -ne 0 ]; then
    status=1
    line="$line, FAILED (exit $rc)"
    echo "---- last lines of $log"
    tail -40 "$log"
    ls -l "fuzz/artifacts/$t/" || true
  fi
  summary+=("$line")
done

echo "== fuzz summary"
printf '%s\n' "${summary[@]}"
exit "$status"
