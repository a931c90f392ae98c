#!/usr/bin/env bash
# Supply-chain checks with cargo-deny (deny.toml): licences, bans (duplicate versions warn,
# wildcards fail), sources (crates.io only), and the RustSec advisories, always.
#
#   bash scripts/deny.sh
#
# cargo-deny is installed with `cargo install --locked` into $TELESINK_TOOLS (default
# ~/.cache/telesink/tools) when it is not on the PATH.
#
# Advisories: the live RustSec database when it can be fetched (cargo-deny clones it from
# GitHub). Where it cannot (this project's CI reaches only the package registries), the
# snapshot in ../shared/advisory-db/advisory-db.tar.gz beside the repository is used: unpacked
# to a temporary db-path, made into the git checkout cargo-deny expects, and checked with
# fetching off. The script prints which database it used and of what date. Any advisory that
# affects a dependency fails (fix it with `cargo update -p CRATE`, or add its id to
# `[advisories] ignore` in deny.toml with the reason). With neither database the check is
# skipped with a notice, unless DENY_ADVISORIES=require.
#
# This is the only place in the repository that reads ../shared.
#
# Knobs (for scripts/test-deny.sh and local use):
#   DENY_PROJECT_DIR     check this Cargo project instead of telesink (its own deny.toml)
#   DENY_CHECKS          "all" (default) or "advisories"
#   DENY_LIVE=off        skip the live database, go straight to the snapshot
#   TELESINK_ADVISORY_SNAPSHOT   the snapshot's folder (default: ../shared/advisory-db)
#   SNAPSHOT_MAX_AGE_DAYS        refuse an older snapshot (default 365)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PROJECT="${DENY_PROJECT_DIR:-$ROOT}"
SNAPSHOT_DIR="${TELESINK_ADVISORY_SNAPSHOT:-$ROOT/../shared/advisory-db}"
MAX_AGE_DAYS="${SNAPSHOT_MAX_AGE_DAYS:-365}"
cd "$PROJECT"

TOOLS="${TELESINK_TOOLS:-$HOME/.cache/telesink/tools}"
export PATH="$TOOLS/bin:$PATH"
# The snapshot step relies on how this version lays out its db-path (checked below).
CARGO_DENY_VERSION=0.20.2

if ! cargo deny --version >/dev/null 2>&1; then
  echo "== installing cargo-deny $CARGO_DENY_VERSION into $TOOLS"
  cargo install cargo-deny --version "$CARGO_DENY_VERSION" --locked --root "$TOOLS" >/dev/null
fi

if [ "${DENY_CHECKS:-all}" = "all" ]; then
  echo "== cargo deny: licenses, bans, sources"
  cargo deny --log-level error check licenses bans sources
fi

echo "== cargo deny: advisories"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
log="$work/log"

# 1. The live database.
if [ "${DENY_LIVE:-on}" != "off" ]; then
  if cargo deny --log-level error check advisories >"$log" 2>&1; then
    cat "$log"
    db="$(find "${CARGO_HOME:-$HOME/.cargo}/advisory-dbs" -maxdepth 1 -name 'advisory-db-*' 2>/dev/null | head -n1 || true)"
    when="$( [ -n "$db" ] && git -C "$db" show -s --format='%cs, commit %h' HEAD 2>/dev/null || echo "date unknown")"
    echo "advisories ok: live RustSec database ($when)"
    exit 0
  elif ! grep -q "failed to fetch advisory database" "$log"; then
    cat "$log"
    echo "advisories FAILED against the live RustSec database: update the crate (cargo update -p NAME) or add a reasoned ignore to deny.toml" >&2
    exit 1
  fi
  echo "the live RustSec database cannot be fetched from here:"
  grep -m1 -E "fatal:|failed to fetch" "$log" || true
fi

# 2. The snapshot.
archive="$SNAPSHOT_DIR/advisory-db.tar.gz"
if [ ! -f "$archive" ]; then
  if [ "${DENY_ADVISORIES:-}" = "require" ]; then
    echo "advisories NOT CHECKED and required: no live database and no snapshot at $archive" >&2
    exit 1
  fi
  echo "advisories NOT CHECKED: no live database and no snapshot at $archive"
  exit 0
fi

src="$work/src"
mkdir -p "$src" "$work/db"
tar -xzf "$archive" -C "$src"
[ -d "$src/crates" ] || { echo "$archive holds no crates/ folder: not a RustSec advisory database" >&2; exit 1; }
# The snapshot's date: its newest advisory file (the archive keeps the files' times).
epoch="$(find "$src/crates" -type f -name '*.md' -printf '%T@\n' | sort -n | tail -n1 | cut -d. -f1)"
date_iso="$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)"
age_days=$(( ($(date +%s) - epoch) / 86400 ))
commit="$(grep -o -m1 -E '\b[0-9a-f]{40}\b' "$SNAPSHOT_DIR/README.md" 2>/dev/null || echo unknown)"
if [ "$age_days" -gt "$MAX_AGE_DAYS" ]; then
  echo "the advisory snapshot $archive is $age_days days old (over $MAX_AGE_DAYS): refresh it" >&2
  exit 1
fi

# cargo-deny reads <db-path>/<name>-<hash of the URL>/: a git checkout (it reads the commit
# and FETCH_HEAD's time to judge staleness) with the advisories under crates/. Ask it where.
url="https://github.com/rustsec/advisory-db"
config="$work/deny.toml"
[ -f deny.toml ] || { echo "no deny.toml in $PROJECT" >&2; exit 1; }
awk -v path="$work/db" -v url="$url" -v age="$MAX_AGE_DAYS" '
  { print }
  /^\[advisories\]/ {
    print "db-path = \"" path "\""
    print "db-urls = [\"" url "\"]"
    print "maximum-db-staleness = \"P" age "D\""
  }' deny.toml >"$config"
cargo deny --log-level debug --offline --config "$config" check advisories >"$log" 2>&1 || true
target="$(grep -o -m1 "Opening advisory database at '[^']*'" "$log" | sed "s/.*at '//; s/'$//" || true)"
case "$target" in
  "$work/db/"*) ;;
  *)
    cat "$log" >&2
    echo "cannot tell where cargo-deny $(cargo deny --version) looks for the advisory database (expected a line 'Opening advisory database at ...' in its debug log)" >&2
    exit 1
    ;;
esac
mv "$src" "$target"
(
  cd "$target"
  git init -q -b main
  git add -A
  GIT_AUTHOR_DATE="$date_iso" GIT_COMMITTER_DATE="$date_iso" \
    git -c user.name=telesink-ci -c user.email=ci@telesink.invalid \
    commit -q -m "RustSec advisory-db snapshot $commit"
  # Staleness is judged on FETCH_HEAD's time: the snapshot's own date, not today's.
  touch -d "$date_iso" .git/FETCH_HEAD
)

echo "using the RustSec advisory snapshot of ${date_iso%T*} ($age_days days old; commit $commit) from $archive"
if cargo deny --log-level error --offline --config "$config" check advisories >"$log" 2>&1; then
  cat "$log"
  echo "advisories ok: RustSec snapshot of ${date_iso%T*}"
else
  cat "$log"
  echo "advisories FAILED against the RustSec snapshot of ${date_iso%T*}: update the crate (cargo update -p NAME) or add a reasoned ignore to deny.toml" >&2
  exit 1
fi
