#!/usr/bin/env bash
# bench/build-rev.sh REV: builds telesink at git revision REV into bench/.tools/telesink-REV,
# without touching the work tree or target/ (for before/after comparisons and profiles).
#
#   bash bench/build-rev.sh af61dc3
#   python3 bench/harness.py --telesink bench/.tools/telesink-af61dc3 --servers telesink ...
#   BIN=bench/.tools/telesink-af61dc3 bash bench/profile.sh
#
# The source comes from `git archive` into bench/.tools/src-REV; the build uses its own target
# directory, bench/.tools/target, seeded once from target/release so that only telesink itself
# (and any dependency that changed) compiles.
set -euo pipefail
cd "$(dirname "$0")/.."
REV=${1:?usage: bench/build-rev.sh REV}
SHORT=$(git rev-parse --short "$REV")
TOOLS=bench/.tools
SRC=$TOOLS/src-$SHORT
OUT=$TOOLS/telesink-$SHORT
if [ -x "$OUT" ]; then echo "$OUT"; exit 0; fi
rm -rf "$SRC"; mkdir -p "$SRC"
git archive "$SHORT" | tar -x -C "$SRC"
if [ ! -d "$TOOLS/target/release" ] && [ -d target/release ]; then
    mkdir -p "$TOOLS/target"
    cp -a target/release "$TOOLS/target/" 2>/dev/null || true
fi
# The seeded fingerprints of telesink itself would match the archived (older) sources: drop
# them and make the sources newer, so telesink is always compiled from REV.
rm -rf "$TOOLS"/target/release/.fingerprint/telesink-* "$TOOLS"/target/release/deps/telesink-* \
    "$TOOLS"/target/release/deps/libtelesink-* "$TOOLS"/target/release/telesink
find "$SRC" -type f -exec touch {} +
(cd "$SRC" && CARGO_TARGET_DIR="$PWD/../target" cargo build --release --bin telesink >&2)
cp "$TOOLS/target/release/telesink" "$OUT"
echo "$OUT"
