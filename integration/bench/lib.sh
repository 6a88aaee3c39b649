#!/bin/bash
# Shared by nfs.sh and ninep.sh (sourced, not run): installing what the benchmarks need from
# Debian (idempotently: nothing runs when it is present), building asof, waiting for ports,
# stopping what we started, and printing result tables.
# Everything here talks over loopback or inside the VM harness's own network namespace.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/../.." && pwd)
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
export DEBIAN_FRONTEND=noninteractive

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

APT_UPDATED=0
apt_install() { # apt_install PKG... : installs the packages that are not installed yet
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || die "missing Debian packages ${missing[*]}; run as root to install them"
  log "installing ${missing[*]}"
  if [ "$APT_UPDATED" = 0 ]; then apt-get update -qq; APT_UPDATED=1; fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The VM harness (integration/vm) needs qemu, busybox, ip, ... : the project's own script.
vm_deps() { bash "$ROOT/scripts/test-deps.sh" >&2; }

# fio with libnfs's "nfs" ioengine. Debian 12's fio is built without it, so Debian's own fio
# source package is rebuilt with --enable-libnfs (about a minute on 2 cores). The engine as
# shipped fails fsync, fdatasync and end_fsync (it queues only reads and writes): fio-nfs-commit.patch
# makes them wait for the requests in flight and COMMIT the file (libnfs's nfs_fsync), so
# that end_fsync=1 times getting the data onto the server's disk. The binary gets a name of
# its own: an fio-nfs built without the patch is not mistaken for it.
FIO_NFS=${FIO_NFS:-/usr/local/bin/fio-nfs-commit}
fio_nfs_build() {
  if [ -x "$FIO_NFS" ] && "$FIO_NFS" --enghelp=nfs >/dev/null 2>&1; then return 0; fi
  log "building fio with the libnfs engine (and fio-nfs-commit.patch) into $FIO_NFS"
  if ! grep -rqsE '^(Types:.*deb-src|deb-src )' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    # source entries that mirror the binary ones already configured
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
      [ -f "$f" ] && sed 's/^Types: deb$/Types: deb-src/' "$f" > "${f%.sources}-src.sources"
    done
    [ -f /etc/apt/sources.list ] && sed -n 's/^deb /deb-src /p' /etc/apt/sources.list > /etc/apt/sources.list.d/src.list
    apt-get update -qq; APT_UPDATED=1
  fi
  apt_install libnfs-dev build-essential pkg-config dpkg-dev zlib1g-dev libaio-dev patch
  local b; b=$(mktemp -d)
  ( cd "$b" && apt-get source -qq fio >/dev/null 2>&1 && cd fio-*/ &&
    patch -p1 < "$BENCH_DIR/fio-nfs-commit.patch" >/dev/null &&
    ./configure --enable-libnfs --disable-native >/dev/null &&
    make -j"$(nproc)" fio >/dev/null && install -m 0755 fio "$FIO_NFS" ) || { rm -rf "$b"; die "fio build failed"; }
  rm -rf "$b"
  "$FIO_NFS" --enghelp=nfs >/dev/null || die "$FIO_NFS has no nfs engine"
}

# Builds asof from this checkout.
ASOF_BIN=${ASOF_BIN:-}
build_asof() {
  if [ -z "$ASOF_BIN" ]; then
    ASOF_BIN=$WORK/asof
    log "building asof -> $ASOF_BIN"
    (cd "$ROOT" && go build -o "$ASOF_BIN" ./cmd/asof)
  fi
}

# asof_env_for BIN EXTRA: the VAR=value words (one a line) that BIN gets on top of the
# benchmark's settings: ASOF_EXPORTS_SQUASH=none when BIN knows exports.squash (the
# comparison servers act as root for root: ganesha's No_Root_Squash, diod run as root
# without -S), then the words of EXTRA. Binaries from before per-caller identity acted as
# one configured identity and refuse the key as unknown: they get only EXTRA.
asof_env_for() {
  if "$1" serve --help 2>&1 | grep -q -- '--squash'; then echo ASOF_EXPORTS_SQUASH=none; fi
  local w; for w in $2; do echo "$w"; done
}

# asof refuses to start when the environment holds an ASOF_* variable that is not one of its
# settings (ASOF_BIN, or the VM harness's ASOF_VM_DIR and ASOF_VM_JOBS). ASOF_ENV_CLEAN is
# "env -u VAR ..." for every other ASOF_* variable in this environment: prefix asof's
# command line with it. The settings the benchmarks give are kept (the VM harness passes
# them through the environment).
ASOF_ENV_CLEAN=(env)
for v in $(compgen -e); do
  case $v in
    ASOF_DATA|ASOF_NFS_LISTEN|ASOF_NINEP_LISTEN|ASOF_CONTROL_SOCKET|ASOF_EXPORTS_ALLOW) ;;
    ASOF_*) ASOF_ENV_CLEAN+=(-u "$v") ;;
  esac
done

# free_port: a TCP port nobody listens on now (on loopback).
free_port() {
  local p
  while :; do
    p=$(( 20000 + RANDOM % 20000 ))
    (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null || { echo "$p"; return; }
  done
}
wait_port() { # wait_port PORT PID: until PORT accepts connections (30 s), while PID lives
  local i
  for i in $(seq 300); do
    (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# Processes we started, stopped by pid at exit (never by name).
PIDS=()
stop_pid() { # stop_pid PID: SIGTERM, wait up to 30 s for it to exit, then SIGKILL (our children)
  local pid=$1 dog
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  ( trap 'kill "$s" 2>/dev/null; exit 0' TERM
    sleep 30 & s=$!; wait "$s"
    kill -KILL "$pid" 2>/dev/null && echo "pid $pid killed after 30 s" >&2 ) &
  dog=$!
  wait "$pid" 2>/dev/null || true
  kill "$dog" 2>/dev/null || true
  wait "$dog" 2>/dev/null || true
}
stop_all() {
  local i
  for (( i=${#PIDS[@]}-1; i>=0; i-- )); do stop_pid "${PIDS[$i]}"; done
  PIDS=()
}

# Results: lines "ROUND|TEST|UNIT|SERVER|VALUE" in $RESULTS, every value a rate (higher is
# better), so that every ratio reads the same way in every row.
RESULTS=
result() { echo "$ROUND|$1|$2|$3|$4" >> "$RESULTS"; }
# print_table OTHER...: one row per test in first-seen order, with asof's value, each other
# server's and the ratio asof / each of them; with several rounds, each server's best.
print_table() {
  awk -F'|' -v others="$*" '
    BEGIN { m = split(others, srv, " ") }
    { k = $2 SUBSEP $3
      if (!(k in seen)) { seen[k] = 1; order[++n] = k; tname[k] = $2; unit[k] = $3 }
      b = k SUBSEP $4
      if (!(b in best) || $5 + 0 > best[b] + 0) best[b] = $5 }
    END {
      printf "| %-42s | %-7s | %9s", "test", "unit", "asof"
      for (j = 1; j <= m; j++) printf " | %9s", srv[j]
      for (j = 1; j <= m; j++) printf " | %s", "asof/" srv[j]
      printf " |\n|-%s-|-%s-|-%s", "------------------------------------------", "-------", "---------"
      for (j = 1; j <= m; j++) printf "-|-%s", "---------"
      for (j = 1; j <= m; j++) printf "-|-%s", substr("------------------------", 1, length(srv[j]) + 5)
      printf "-|\n"
      for (i = 1; i <= n; i++) { k = order[i]
        a = k SUBSEP "asof"
        printf "| %-42s | %-7s | %9s", tname[k], unit[k], (a in best) ? sprintf("%.1f", best[a]) : "-"
        for (j = 1; j <= m; j++) { b = k SUBSEP srv[j]; printf " | %9s", (b in best) ? sprintf("%.1f", best[b]) : "-" }
        for (j = 1; j <= m; j++) { b = k SUBSEP srv[j]
          r = ((a in best) && (b in best) && best[b] > 0) ? sprintf("%.2f", best[a] / best[b]) : "-"
          printf " | %*s", length(srv[j]) + 5, r }
        printf " |\n" } }' "$RESULTS"
}
# print_rounds: every measurement, one line per test and server, the rounds in order.
print_rounds() {
  awk -F'|' '
    { k = $2 " (" $3 ") " $4
      if (!(k in v)) { order[++n] = k; v[k] = $5 } else v[k] = v[k] "  " $5 }
    END { for (i = 1; i <= n; i++) printf "  %-62s %s\n", order[i], v[order[i]] }' "$RESULTS"
}

# vm_bench SERVERNAME TESTPREFIX CONF VMRUN-ARGS... -- SERVER-ARGV...: one boot of the VM
# harness running vm-workload.sh with CONF as its /etc/bench.conf; turns its "BENCH test
# seconds amount unit" lines into results.
vm_bench() {
  local name=$1 prefix=$2 conf=$3; shift 3
  local base=$WORK/vm-$name-${prefix// /_}-r$ROUND rc=0
  log "VM ($prefix): $name; load average $(cut -d' ' -f1-3 /proc/loadavg)"
  "$VMRUN" run -workload "$BENCH_DIR/vm-workload.sh" -file /etc/bench.conf="$conf" \
    -file /usr/bin/benchgen="$VMRUN" -log "$base.console" "$@" > "$base.out" 2> "$base.err" || rc=$?
  if [ $rc -ne 0 ]; then
    tail -n 60 "$base.err" >&2
    die "VM run against $name failed (console: $base.console)"
  fi
  log "  mount: $(grep -m1 '^BENCH-MOUNT ' "$base.console" | cut -d' ' -f2-)"
  local t secs amount unit
  while read -r _ t secs amount unit; do
    case $unit in MiB) u=MiB/s ;; files) u=files/s ;; *) u=$unit/s ;; esac
    result "$prefix $t" "$u" "$name" "$(awk -v a="$amount" -v s="$secs" 'BEGIN { printf "%.1f", (s > 0) ? a / s : 0 }')"
    log "  $t: $amount $unit in $secs s"
  done < <(grep '^BENCH ' "$base.out")
}

# The static helper the VM runs need: vmrun (boots the harness; also the guest's benchgen).
VMRUN=
build_vmrun() {
  VMRUN=$WORK/vmrun
  (cd "$ROOT" && CGO_ENABLED=0 go build -o "$VMRUN" ./integration/bench/vmrun)
}

# KVM: the harness boots its guest with "-accel tcg". BENCH_KVM=1 puts kvm/qemu-system-x86_64
# first in PATH, which boots the same guest with KVM (needs a working /dev/kvm).
vm_accel() {
  if [ "${BENCH_KVM:-0}" = 1 ]; then
    [ -w /dev/kvm ] || die "BENCH_KVM=1 but /dev/kvm is not usable"
    export PATH="$BENCH_DIR/kvm:$PATH"
    log "VM guest under KVM"
  else
    log "VM guest under software emulation (qemu TCG), as the harness boots it"
  fi
}
