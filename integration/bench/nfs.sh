#!/bin/bash
# NFSv3 benchmark: asof against nfs-ganesha (Debian's, FSAL VFS, exporting a plain directory),
# one after the other on this machine, same clients, same disk. Prints a table with the ratio.
#
#   integration/bench/nfs.sh            (as root: installs what it needs from Debian)
#
# 1. fio with libnfs's "nfs" ioengine (fio rebuilt from Debian's source with libnfs), over
#    loopback: sequential write of a new BENCH_MIB file at iodepth 1 (this also lays the file
#    out: fio's nfs engine cannot write a new file at iodepth > 1, and reads need the file),
#    sequential overwrite and read at iodepth 8 (1 MiB blocks), then 4 KiB random read and
#    random write at iodepth 8 for BENCH_RUNTIME seconds each on that file.
#    Then the metadata run through libnfs (nfsmeta.c, one request at a time): create, stat
#    and remove BENCH_FILES files.
# 2. the Linux kernel's NFSv3 client, in a qemu guest booted by the project's VM harness
#    (integration/vm, through vmrun/): create, stat and remove BENCH_FILES files, and dd of
#    BENCH_MIB MiB (vm-workload.sh).
#
# Environment (defaults in brackets):
#   BENCH_MIB [1024]  BENCH_RUNTIME [20]  BENCH_FILES [10000]  BENCH_ROUNDS [1]: with more,
#   asof and ganesha alternate and the table keeps each one's best
#   BENCH_VM [1]: 0 skips the kernel-client part   BENCH_KVM [0]: 1 boots the guest with KVM
#   BENCH_FIO [1]: 0 skips the fio jobs (libnfs metadata run and kernel part only)
#   BENCH_PROFILE [0]: 1 records asof with perf during its sequential write and read (adds
#   the profiler's overhead to those two asof numbers: use a separate run for the table)
#   BENCH_WORK: work directory (default: a new /tmp/asof-bench.XXXXXX; logs stay there)
#   ASOF_BIN: an asof binary to test instead of building this checkout
#   FIO_NFS [/usr/local/bin/fio-nfs]: where the libnfs-enabled fio is (built when missing)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BENCH_MIB=${BENCH_MIB:-1024} BENCH_RUNTIME=${BENCH_RUNTIME:-20} BENCH_FILES=${BENCH_FILES:-10000}
BENCH_ROUNDS=${BENCH_ROUNDS:-1} BENCH_VM=${BENCH_VM:-1} BENCH_PROFILE=${BENCH_PROFILE:-0}
BENCH_FIO=${BENCH_FIO:-1}
WORK=${BENCH_WORK:-$(mktemp -d /tmp/asof-bench.XXXXXX)}
mkdir -p "$WORK"
chmod 755 "$WORK" # the exports below it are reached by path
RESULTS=$WORK/results; : > "$RESULTS"
NS=

cleanup() {
  stop_all
  [ -n "$NS" ] && ip netns del "$NS" 2>/dev/null || true
  rm -rf "$WORK"/asof-data* "$WORK"/ganesha-export* "$WORK"/vm-asof-data* "$WORK"/vm-ganesha-export*
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- what it needs -----------------------------------------------------------------------
apt_install nfs-ganesha nfs-ganesha-vfs rpcbind procps
fio_nfs_build
[ "$BENCH_PROFILE" = 1 ] && apt_install linux-perf
build_asof
NFSMETA=$WORK/nfsmeta
cc -O2 -Wall -o "$NFSMETA" "$BENCH_DIR/nfsmeta.c" -lnfs
if [ "$BENCH_VM" = 1 ]; then vm_deps; build_vmrun; vm_accel; fi
log "work directory $WORK; asof binary $ASOF_BIN"

# ganesha registers with a portmapper at start. One that answers is used; otherwise rpcbind
# runs inside a network namespace of its own with only loopback, so that its port 111
# reaches nobody; ganesha registers through its unix socket /run/rpcbind.sock, from the
# host and from the VM harness's namespace alike.
if ! rpcinfo -p 127.0.0.1 >/dev/null 2>&1; then
  NS=asofbench-$$
  ip netns add "$NS"; ip -n "$NS" link set lo up
  mkdir -p /run/rpcbind; rm -f /run/rpcbind.sock /run/rpcbind.lock
  ip netns exec "$NS" rpcbind -f > "$WORK/rpcbind.log" 2>&1 &
  PIDS+=($!)
  for i in $(seq 50); do ip netns exec "$NS" rpcinfo -p 127.0.0.1 >/dev/null 2>&1 && break; sleep 0.1; done
  ip netns exec "$NS" rpcinfo -p 127.0.0.1 >/dev/null 2>&1 || die "rpcbind did not start, see $WORK/rpcbind.log"
fi

# --- servers -----------------------------------------------------------------------------
SERVER_PID=
start_asof() { # start_asof DATA NFSPORT
  mkdir -p "$1"
  "${ASOF_ENV_CLEAN[@]}" ASOF_DATA="$1" ASOF_NFS_LISTEN="127.0.0.1:$2" ASOF_NINEP_LISTEN= \
    ASOF_CONTROL_SOCKET="$WORK/c.sock" "$ASOF_BIN" serve > "$WORK/asof-r$ROUND.log" 2>&1 &
  SERVER_PID=$!; PIDS+=("$SERVER_PID")
  wait_port "$2" "$SERVER_PID" || die "asof does not listen on $2, see $WORK/asof-r$ROUND.log"
}
start_ganesha() { # start_ganesha EXPORT NFSPORT MNTPORT
  mkdir -p "$1"
  local w=$WORK/ganesha-r$ROUND
  mkdir -p "$w"; : > "$w/ganesha.log"
  "$BENCH_DIR/ganesha-serve.sh" "$1" 127.0.0.1 "$2" "$3" "$w" > "$w/stdout.log" 2>&1 &
  SERVER_PID=$!; PIDS+=("$SERVER_PID")
  for i in $(seq 300); do grep -q "NFS SERVER INITIALIZED" "$w/ganesha.log" && break; sleep 0.1; done
  grep -q "NFS SERVER INITIALIZED" "$w/ganesha.log" || die "ganesha did not start, see $w/ganesha.log"
}
stop_server() { stop_pid "$SERVER_PID"; SERVER_PID=; }

# --- fio ---------------------------------------------------------------------------------
# fio_one SERVER URL TEST UNIT FIO-ARGS...: one fio job; UNIT MiB/s or IOPS. fio's nfs engine
# cancels the last requests still in flight when a job ends ("Failed NFS operation
# (code:-14)", up to iodepth-1 of them): they are not counted, and are logged here.
fio_one() {
  local server=$1 url=$2 test=$3 unit=$4; shift 4
  local out=$WORK/fio-$server-${test// /_}-r$ROUND
  sync
  local prof=
  if [ "$BENCH_PROFILE" = 1 ] && [ "$server" = asof ] && [[ $test == seq* ]]; then
    perf record -F 499 -g -p "$SERVER_PID" -o "$out.perf" > "$out.perf.log" 2>&1 &
    prof=$!
    sleep 0.5
  fi
  # fio's nfs engine sometimes never exits after the job, before it prints its result: it
  # closes the file with requests still in flight, and when their replies come after the
  # reply to the MOUNT NULL call that starts libnfs's unmount, libnfs never sends the unmount
  # (asof had answered every call it got: checked by logging every xid). Servers that
  # answer a connection's calls at once, in the order they finish (ganesha, asof since it
  # answers READ itself), trip it often, mostly after the sequential read. Such a run is
  # stopped and the job repeated, up to five times.
  local limit=$(( 30 + BENCH_MIB / 20 )) a attempt rc
  for a in "$@"; do [ "$a" = --time_based ] && limit=$(( BENCH_RUNTIME + 60 )); done
  for attempt in 1 2 3 4 5; do
    rc=0
    timeout -k 5 "$limit" "$FIO_NFS" --name="${test// /_}" --ioengine=nfs --nfs_url="$url" \
      --filename=bench.dat --size="${BENCH_MIB}M" --output-format=terse --terse-version=3 "$@" \
      > "$out.terse" 2> "$out.err" || rc=$?
    # 124: stopped by timeout's TERM; 137: fio ignored it and timeout's -k KILL ended it
    [ $rc -ne 124 ] && [ $rc -ne 137 ] && break
    log "  fio $test against $server: still running after ${limit}s (attempt $attempt); stopped"
  done
  [ $rc -eq 0 ] || { cat "$out.err" >&2; die "fio $test against $server failed (exit $rc)"; }
  if [ -n "$prof" ]; then
    kill -INT "$prof"; wait "$prof" || true
    perf report -i "$out.perf" --stdio --no-children -g none --sort symbol --percent-limit 0.7 \
      > "$out.perf.txt" 2>/dev/null || true
    log "  profile of asof during '$test': $out.perf.txt"
  fi
  local line; line=$(grep '^3;' "$out.terse" | tail -n 1) || die "no fio result in $out.terse"
  local v
  case $unit in
    MiB/s) v=$(awk -F';' '{ printf "%.1f", ($7 + $48) / 1024 }' <<< "$line") ;;
    IOPS)  v=$(awk -F';' '{ printf "%.0f", $8 + $49 }' <<< "$line") ;;
  esac
  local cancelled; cancelled=$(grep -c 'Failed NFS operation' "$out.err" || true)
  local other; other=$(grep -v 'Failed NFS operation' "$out.err" | grep -c . || true)
  log "  fio $test: $v $unit (requests cancelled at the end: $cancelled; other messages: $other)"
  [ "$other" = 0 ] || { cat "$out.err" >&2; die "fio $test against $server: unexpected messages"; }
  result "fio $test" "$unit" "$server" "$v"
}

fio_suite() { # fio_suite SERVER URL
  local s=$1 u=$2
  log "against $s ($u); load average $(cut -d' ' -f1-3 /proc/loadavg)"
  if [ "$BENCH_FIO" = 1 ]; then
    fio_one "$s" "$u" "seq write 1M qd1 new file" MiB/s --rw=write --bs=1M --iodepth=1
    fio_one "$s" "$u" "seq write 1M qd8 overwrite" MiB/s --rw=write --bs=1M --iodepth=8
    fio_one "$s" "$u" "seq read 1M qd8" MiB/s --rw=read --bs=1M --iodepth=8
    fio_one "$s" "$u" "rand read 4k qd8 ${BENCH_RUNTIME}s" IOPS --rw=randread --bs=4k --iodepth=8 \
      --time_based --runtime="$BENCH_RUNTIME"
    fio_one "$s" "$u" "rand write 4k qd8 ${BENCH_RUNTIME}s" IOPS --rw=randwrite --bs=4k --iodepth=8 \
      --time_based --runtime="$BENCH_RUNTIME"
  fi
  sync
  local out=$WORK/nfsmeta-$s-r$ROUND.out t secs amount unit
  local rc=0
  SERVER_PID=$SERVER_PID timeout -k 5 $(( 120 + BENCH_FILES / 20 )) "$NFSMETA" "$u" "$BENCH_FILES" > "$out" || rc=$?
  if { [ $rc -eq 124 ] || [ $rc -eq 137 ]; } && [ "$(grep -c '^BENCH ' "$out")" = 3 ]; then
    log "  nfsmeta against $s: did not exit after its runs (unmount); stopped"
  elif [ $rc -ne 0 ]; then
    die "nfsmeta against $s failed (exit $rc)"
  fi
  while read -r _ t secs amount unit; do
    result "libnfs $t" files/s "$s" "$(awk -v a="$amount" -v s="$secs" 'BEGIN { printf "%.1f", a / s }')"
    log "  libnfs $t: $amount $unit in $secs s ($(awk -v t="$t" '$1 == "SERVER-CPU" && $2 == t { print "server CPU " $3 " µs per file" }' "$out"))"
  done < <(grep '^BENCH ' "$out")
}

cat > "$WORK/bench.conf" <<EOF
BENCH_TESTS="meta data"
BENCH_MIB=$BENCH_MIB
BENCH_FILES=$BENCH_FILES
EOF

for ROUND in $(seq "$BENCH_ROUNDS"); do
  # asof
  p=$(free_port)
  start_asof "$WORK/asof-data-r$ROUND" "$p"
  fio_suite asof "nfs://127.0.0.1/?version=3&nfsport=$p&mountport=$p"
  stop_server
  # ganesha
  np=$(free_port); mp=$(free_port)
  start_ganesha "$WORK/ganesha-export-r$ROUND" "$np" "$mp"
  fio_suite ganesha "nfs://127.0.0.1$WORK/ganesha-export-r$ROUND?version=3&nfsport=$np&mountport=$mp"
  stop_server
  rm -rf "$WORK/asof-data-r$ROUND" "$WORK/ganesha-export-r$ROUND"

  if [ "$BENCH_VM" = 1 ]; then
    # The guest's kernel client; the servers run inside the harness's namespace, where the
    # guest reaches them at @HOST@. The guest mounts MOUNT and NFS on one port; ganesha's
    # separate MOUNT port goes in as a later mount option, which wins.
    mkdir -p "$WORK/vm-asof-data-r$ROUND" "$WORK/vm-ganesha-export-r$ROUND"
    vm_bench asof kernel "$WORK/bench.conf" -nfs-port 2049 \
      -env ASOF_DATA="$WORK/vm-asof-data-r$ROUND" -env ASOF_NFS_LISTEN=@HOST@:2049 \
      -env ASOF_NINEP_LISTEN= -env ASOF_CONTROL_SOCKET="$WORK/v.sock" \
      -env ASOF_EXPORTS_ALLOW=@GUESTNET@ -- "${ASOF_ENV_CLEAN[@]}" "$ASOF_BIN" serve
    vm_bench ganesha kernel "$WORK/bench.conf" -nfs-port 2049 -nfs-export "$WORK/vm-ganesha-export-r$ROUND" \
      -nfs-opts mountport=20048 -- "$BENCH_DIR/ganesha-serve.sh" \
      "$WORK/vm-ganesha-export-r$ROUND" 0.0.0.0 2049 20048 "$WORK/vm-ganesha-r$ROUND"
    rm -rf "$WORK/vm-asof-data-r$ROUND" "$WORK/vm-ganesha-export-r$ROUND"
  fi
done

echo
echo "NFSv3: asof vs nfs-ganesha $(dpkg-query -W -f='${Version}' nfs-ganesha) ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, rounds: $BENCH_ROUNDS)"
echo "fio = fio $("$FIO_NFS" --version) nfs engine (libnfs) over loopback; libnfs = nfsmeta.c over loopback; kernel = Linux $(cat "${ASOF_VM_DIR:-$HOME/.cache/asof-linux-vm}/kernel.version" 2>/dev/null || echo guest) NFSv3 client in the VM harness; ratio = asof / ganesha (higher is better for asof)"
print_table ganesha
