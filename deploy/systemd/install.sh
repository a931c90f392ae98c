#!/usr/bin/env bash
# Installs telesink as a hardened system service (deploy/systemd/telesink.service).
#
#   cargo build --release                  # in a clone of the repository
#   sudo deploy/systemd/install.sh         # then: sudo systemctl enable --now telesink
#
# What it puts where:
#   /usr/local/bin/telesink                the binary (TELESINK_BIN, default target/release/telesink)
#   /etc/systemd/system/telesink.service   the unit
#   /etc/telesink/config.toml              the repository's config.toml with the query log moved to
#                                          /var/lib/telesink/telesink.db; an existing one is kept
#   /etc/telesink/blocklists/              the shipped lists, replaced by each install (keep your
#                                          own lists in other files)
#   /etc/telesink/.telesink-cache          a symlink to /var/lib/telesink/lists, where downloaded
#                                          URL lists are cached (the service cannot write to /etc)
#
# Run it again after `git pull && cargo build --release` to update, then
# `sudo systemctl restart telesink`. DESTDIR=/some/dir stages everything below that directory
# and touches nothing else (scripts/check-deploy.sh does this).
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
dest=${DESTDIR:-}
bin=${TELESINK_BIN:-$repo/target/release/telesink}
db=/var/lib/telesink/telesink.db

if [ ! -x "$bin" ]; then
  echo "install.sh: no telesink binary at $bin: run 'cargo build --release' first (or set TELESINK_BIN)" >&2
  exit 1
fi
if [ -z "$dest" ] && [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: run as root (sudo $0), or set DESTDIR to stage the files" >&2
  exit 1
fi

install -D -m 0755 "$bin" "$dest/usr/local/bin/telesink"
install -D -m 0644 "$repo/deploy/systemd/telesink.service" "$dest/etc/systemd/system/telesink.service"
install -d -m 0755 "$dest/etc/telesink/blocklists"
install -m 0644 "$repo"/blocklists/*.txt "$dest/etc/telesink/blocklists/"

conf="$dest/etc/telesink/config.toml"
if [ -e "$conf" ]; then
  echo "kept the existing /etc/telesink/config.toml"
else
  # The repository's config, with the one change a read-only /etc needs: the query log path.
  sed "s|^path = \"telesink.db\".*|path = \"$db\"  # SQLite, in the service's StateDirectory (restart)|" \
    "$repo/config.toml" > "$conf.new"
  if ! grep -q "^path = \"$db\"" "$conf.new"; then
    rm -f "$conf.new"
    echo "install.sh: could not set [querylog] path in config.toml (its 'path = \"telesink.db\"' line changed?)" >&2
    exit 1
  fi
  chmod 0644 "$conf.new"
  mv "$conf.new" "$conf"
  echo "installed /etc/telesink/config.toml (query log: $db)"
fi
if [ ! -e "$dest/etc/telesink/.telesink-cache" ] && [ ! -L "$dest/etc/telesink/.telesink-cache" ]; then
  ln -s /var/lib/telesink/lists "$dest/etc/telesink/.telesink-cache"
fi

if [ -n "$dest" ]; then
  echo "staged under $dest"
  exit 0
fi

"$dest/usr/local/bin/telesink" check --config /etc/telesink/config.toml >/dev/null
echo "config valid: telesink check --config /etc/telesink/config.toml"
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  if systemctl is-active --quiet systemd-resolved 2>/dev/null; then
    echo "note: systemd-resolved holds port 53 on 127.0.0.53; before starting telesink, either"
    echo "      sudo systemctl disable --now systemd-resolved, or set DNSStubListener=no in"
    echo "      /etc/systemd/resolved.conf and restart it"
  fi
  echo "next: sudo systemctl enable --now telesink && journalctl -u telesink -f"
fi
