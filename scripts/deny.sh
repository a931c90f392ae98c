#!/usr/bin/env bash
# Supply-chain checks with cargo-deny (deny.toml): licences, bans (duplicate versions warn,
# wildcards fail), sources (crates.io only), and the RustSec advisories where they can be had.
#
#   bash scripts/deny.sh
#
# cargo-deny is installed with `cargo install --locked` into $TELESINK_TOOLS (default
# ~/.cache/telesink/tools) when it is not on the PATH.
#
# The advisory check clones the RustSec database from GitHub. Where GitHub cannot be reached
# (this project's CI: only the package registries are reachable) that clone fails at once; the
# script then says so and passes on the other three checks. Any other advisory failure (a
# vulnerable or yanked crate) fails the script. DENY_ADVISORIES=require makes an unreachable
# database an error too.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS="${TELESINK_TOOLS:-$HOME/.cache/telesink/tools}"
export PATH="$TOOLS/bin:$PATH"

if ! cargo deny --version >/dev/null 2>&1; then
  echo "== installing cargo-deny into $TOOLS"
  cargo install cargo-deny --locked --root "$TOOLS" >/dev/null
fi

echo "== cargo deny: licenses, bans, sources"
cargo deny --log-level error check licenses bans sources

echo "== cargo deny: advisories"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if cargo deny --log-level error check advisories >"$log" 2>&1; then
  cat "$log"
  echo "advisories ok"
elif grep -q "failed to fetch advisory database" "$log" \
  && [ "${DENY_ADVISORIES:-}" != "require" ]; then
  echo "advisories NOT CHECKED: the RustSec database cannot be fetched from here:"
  grep -m1 -E "fatal:|failed to fetch" "$log" || true
else
  cat "$log"
  exit 1
fi
