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
# source package is rebuilt with --enable-libnfs (about a minute on 2 cores).
FIO_NFS=${FIO_NFS:-/usr/local/bin/fio-nfs}
fio_nfs_build() {
  if [ -x "$FIO_NFS" ] && "$FIO_NFS" --enghelp=nfs >/dev/null 2>&1; then return 0; fi
  log "building fio with the libnfs engine into $FIO_NFS"
  if ! grep -rqsE '^(Types:.*deb-src|deb-src )' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    # source entries that mirror the binary ones already configured
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
      [ -f "$f" ] && sed 's/^Types: deb$/Types: deb-src/' "$f" > "${f%.sources}-src.sources"
    done
    [ -f /etc/apt/sources.list ] && sed -n 's/^deb /deb-src /p' /etc/apt/sources.list > /etc/apt/sources.list.d/src.list
    apt-get update -qq; APT_UPDATED=1
  fi
  apt_install libnfs-dev build-essential pkg-config dpkg-dev zlib1g-dev libaio-dev
  local b; b=$(mktemp -d)
  ( cd "$b" && apt-get source -qq fio >/dev/null 2>&1 && cd fio-*/ &&
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

# free_port: a TCP port nobody listens on now (on loopback).
free_port() {
  local p
  while :; do
    p=$(( 20000 + RANDOM % 20000 ))
    (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null || { echo "$p"; return; }
  done
}
wait_port() { # wait_port PORT [SECONDS]
  local i
  for i in $(seq $(( ${2:-30} * 10 ))); do
    (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# Processes we started, stopped by pid at exit (never by name).
PIDS=()
stop_pid() { # stop_pid PID: SIGTERM, wait up to 30 s, then SIGKILL
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 300); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  log "pid $pid still running after SIGTERM; killing it"
  kill -KILL "$pid" 2>/dev/null || true
}
stop_all() {
  local i
  for (( i=${#PIDS[@]}-1; i>=0; i-- )); do stop_pid "${PIDS[$i]}"; done
  PIDS=()
}

# Results: "TEST|UNIT|ASOF|OTHER" lines in $WORK/results; the table divides asof by the other.
RESULTS=
result() { echo "$1|$2|$3|$4" >> "$RESULTS"; }
print_table() { # print_table OTHERNAME
  awk -F'|' -v other="$1" '
    BEGIN { printf "%-34s %-7s %12s %12s %8s\n", "test", "unit", "asof", other, "asof/" other
            printf "%-34s %-7s %12s %12s %8s\n", "----", "----", "----", "----", "----" }
    { r = ($4 > 0) ? sprintf("%.2f", $3 / $4) : "-"
      if ($2 == "s") r = ($3 > 0) ? sprintf("%.2f", $4 / $3) : "-"   # times: higher ratio is better for asof
      printf "%-34s %-7s %12s %12s %8s\n", $1, $2, $3, $4, r }' "$RESULTS"
}
