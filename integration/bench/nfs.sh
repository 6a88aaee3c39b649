#!/bin/bash
# NFSv3 benchmark: asof against nfs-ganesha (Debian's, FSAL VFS), one after the other on this
# machine, same clients, same disk. ganesha runs twice: exporting a plain directory
# ("ganesha"), and exporting an ext4 file system mounted with dirsync on a loop device whose
# file lies on the same disk ("ganesha-dirsync": every directory change is on disk before
# the call returns, the metadata durability asof gives). With ASOF_BIN_BEFORE, a second asof
# binary ("asof-before") runs in the same rounds. Prints a table with asof / each of them.
#
#   integration/bench/nfs.sh            (as root: installs what it needs from Debian)
#
# 1. fio with libnfs's "nfs" ioengine (fio rebuilt from Debian's source with libnfs), over
#    loopback: sequential write of a new BENCH_MIB file at iodepth 1 (this also lays the file
#    out: fio's nfs engine cannot write a new file at iodepth > 1, and reads need the file),
#    sequential overwrite and read at iodepth 8 (1 MiB blocks), then 4 KiB random read and
#    random write at iodepth 8 for BENCH_RUNTIME seconds each on that file. The overwrite
#    runs twice: as written (libnfs writes UNSTABLE and never COMMITs, so no server syncs),
#    and with end_fsync=1 (the job ends with a COMMIT of the file, through
#    fio-nfs-commit.patch: the data is on disk on both sides when the clock stops).
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
#   ASOF_BIN_BEFORE: a second asof binary, run as "asof-before" in every round (the table
#   gets asof / asof-before)
#   BENCH_ASOF_ENV, BENCH_ASOF_BEFORE_ENV: "VAR=value ..." added to that binary's environment
#   (ganesha exports with No_Root_Squash and the clients are root: a binary that knows
#   exports.squash gets ASOF_EXPORTS_SQUASH=none without being told)
#   BENCH_DIRSYNC [1]: 0 skips ganesha-dirsync
#   FIO_NFS [/usr/local/bin/fio-nfs-commit]: the libnfs-enabled, patched fio (built when missing)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BENCH_MIB=${BENCH_MIB:-1024} BENCH_RUNTIME=${BENCH_RUNTIME:-20} BENCH_FILES=${BENCH_FILES:-10000}
BENCH_ROUNDS=${BENCH_ROUNDS:-1} BENCH_VM=${BENCH_VM:-1} BENCH_PROFILE=${BENCH_PROFILE:-0}
BENCH_FIO=${BENCH_FIO:-1} BENCH_DIRSYNC=${BENCH_DIRSYNC:-1}
ASOF_BIN_BEFORE=${ASOF_BIN_BEFORE:-}
WORK=${BENCH_WORK:-$(mktemp -d /tmp/asof-bench.XXXXXX)}
mkdir -p "$WORK"
chmod 755 "$WORK" # the exports below it are reached by path
RESULTS=$WORK/results; : > "$RESULTS"
NS= LOOP= DIRSYNC_MNT=

cleanup() {
  stop_all
  [ -n "$NS" ] && ip netns del "$NS" 2>/dev/null || true
  if [ -n "$DIRSYNC_MNT" ]; then
    umount "$DIRSYNC_MNT" 2>/dev/null || umount -l "$DIRSYNC_MNT" 2>/dev/null || log "cannot unmount $DIRSYNC_MNT"
    rmdir "$DIRSYNC_MNT" 2>/dev/null || true
  fi
  [ -n "$LOOP" ] && { losetup -d "$LOOP" 2>/dev/null || log "cannot detach $LOOP"; }
  rm -f "$WORK/dirsync.img"
  rm -rf "$WORK"/asof-data* "$WORK"/ganesha-export* "$WORK"/vm-asof-data* "$WORK"/vm-ganesha-export*
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- what it needs -----------------------------------------------------------------------
apt_install nfs-ganesha nfs-ganesha-vfs rpcbind procps
[ "$BENCH_DIRSYNC" = 1 ] && apt_install e2fsprogs mount
fio_nfs_build
[ "$BENCH_PROFILE" = 1 ] && apt_install linux-perf
build_asof
[ -z "$ASOF_BIN_BEFORE" ] || [ -x "$ASOF_BIN_BEFORE" ] || die "ASOF_BIN_BEFORE=$ASOF_BIN_BEFORE is not an executable"
NFSMETA=$WORK/nfsmeta
cc -O2 -Wall -o "$NFSMETA" "$BENCH_DIR/nfsmeta.c" -lnfs
if [ "$BENCH_VM" = 1 ]; then vm_deps; build_vmrun; vm_accel; fi
log "work directory $WORK; asof binary $ASOF_BIN${ASOF_BIN_BEFORE:+; asof-before binary $ASOF_BIN_BEFORE}"

# Each asof binary's own settings (asof_env_for, lib.sh): ganesha squashes nobody
# (No_Root_Squash) and the clients run as root, so asof squashes nobody either.
mapfile -t ASOF_ENV < <(asof_env_for "$ASOF_BIN" "${BENCH_ASOF_ENV:-}")
ASOF_BEFORE_ENV=()
[ -n "$ASOF_BIN_BEFORE" ] && mapfile -t ASOF_BEFORE_ENV < <(asof_env_for "$ASOF_BIN_BEFORE" "${BENCH_ASOF_BEFORE_ENV:-}")
log "asof environment: ${ASOF_ENV[*]:-(none)}${ASOF_BIN_BEFORE:+; asof-before environment: ${ASOF_BEFORE_ENV[*]:-(none)}}"

# ganesha-dirsync's file system: ext4 on a loop device over a sparse file in $WORK (the same
# disk as the other exports), direct I/O so that its blocks are not cached twice, mounted
# with dirsync: every create, remove, rename, link and mkdir is on disk before the call
# returns, as asof's are. cleanup() unmounts and detaches it, also after a failure.
if [ "$BENCH_DIRSYNC" = 1 ]; then
  truncate -s $(( 2 * BENCH_MIB + 2048 ))M "$WORK/dirsync.img"
  LOOP=$(losetup --find --show --direct-io=on "$WORK/dirsync.img" 2>/dev/null) ||
    LOOP=$(losetup --find --show "$WORK/dirsync.img") || die "no loop device for $WORK/dirsync.img"
  mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$LOOP" || die "mkfs.ext4 $LOOP failed"
  DIRSYNC_MNT=$WORK/dirsync
  mkdir -p "$DIRSYNC_MNT"
  mount -o dirsync "$LOOP" "$DIRSYNC_MNT" || { rmdir "$DIRSYNC_MNT"; DIRSYNC_MNT=; die "mount -o dirsync $LOOP failed"; }
  log "ganesha-dirsync exports below $DIRSYNC_MNT: $(findmnt -n -o SOURCE,FSTYPE,OPTIONS "$DIRSYNC_MNT") (loop direct I/O: $(cat /sys/block/"${LOOP#/dev/}"/loop/dio 2>/dev/null || echo ?))"
fi

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
start_asof() { # start_asof NAME DATA NFSPORT: NAME asof or asof-before
  local bin=$ASOF_BIN env=("${ASOF_ENV[@]}")
  [ "$1" = asof-before ] && bin=$ASOF_BIN_BEFORE env=("${ASOF_BEFORE_ENV[@]}")
  mkdir -p "$2"
  "${ASOF_ENV_CLEAN[@]}" ASOF_DATA="$2" ASOF_NFS_LISTEN="127.0.0.1:$3" ASOF_NINEP_LISTEN= \
    ASOF_CONTROL_SOCKET="$WORK/c.sock" "${env[@]}" "$bin" serve > "$WORK/$1-r$ROUND.log" 2>&1 &
  SERVER_PID=$!; PIDS+=("$SERVER_PID")
  wait_port "$3" "$SERVER_PID" || die "$1 does not listen on $3, see $WORK/$1-r$ROUND.log"
}
start_ganesha() { # start_ganesha NAME EXPORT NFSPORT MNTPORT
  local w=$WORK/$1-r$ROUND; shift
  mkdir -p "$1"
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
    fio_one "$s" "$u" "seq write 1M qd8 overwrite end_fsync" MiB/s --rw=write --bs=1M --iodepth=8 \
      --end_fsync=1
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

# One server's fio and libnfs runs (loopback): NAME asof, asof-before, ganesha or
# ganesha-dirsync.
host_bench() {
  local p np mp exp
  case $1 in
  asof|asof-before)
    p=$(free_port)
    start_asof "$1" "$WORK/asof-data-$1-r$ROUND" "$p"
    fio_suite "$1" "nfs://127.0.0.1/?version=3&nfsport=$p&mountport=$p"
    stop_server
    rm -rf "$WORK/asof-data-$1-r$ROUND" ;;
  ganesha|ganesha-dirsync)
    exp=$WORK/ganesha-export-r$ROUND
    [ "$1" = ganesha-dirsync ] && exp=$DIRSYNC_MNT/ganesha-export-r$ROUND
    np=$(free_port); mp=$(free_port)
    start_ganesha "$1" "$exp" "$np" "$mp"
    fio_suite "$1" "nfs://127.0.0.1$exp?version=3&nfsport=$np&mountport=$mp"
    stop_server
    rm -rf "$exp" ;;
  esac
}

# The guest's kernel client; the servers run inside the harness's namespace, where the
# guest reaches them at @HOST@. The guest mounts MOUNT and NFS on one port; ganesha's
# separate MOUNT port goes in as a later mount option, which wins.
vm_server_bench() {
  local bin=$ASOF_BIN env=("${ASOF_ENV[@]}") e envargs=() exp
  case $1 in
  asof|asof-before)
    [ "$1" = asof-before ] && bin=$ASOF_BIN_BEFORE env=("${ASOF_BEFORE_ENV[@]}")
    for e in "${env[@]}"; do envargs+=(-env "$e"); done
    mkdir -p "$WORK/vm-asof-data-$1-r$ROUND"
    vm_bench "$1" kernel "$WORK/bench.conf" -nfs-port 2049 \
      -env ASOF_DATA="$WORK/vm-asof-data-$1-r$ROUND" -env ASOF_NFS_LISTEN=@HOST@:2049 \
      -env ASOF_NINEP_LISTEN= -env ASOF_CONTROL_SOCKET="$WORK/v.sock" \
      -env ASOF_EXPORTS_ALLOW=@GUESTNET@ "${envargs[@]}" -- "${ASOF_ENV_CLEAN[@]}" "$bin" serve
    rm -rf "$WORK/vm-asof-data-$1-r$ROUND" ;;
  ganesha|ganesha-dirsync)
    exp=$WORK/vm-ganesha-export-r$ROUND
    [ "$1" = ganesha-dirsync ] && exp=$DIRSYNC_MNT/vm-ganesha-export-r$ROUND
    mkdir -p "$exp"
    vm_bench "$1" kernel "$WORK/bench.conf" -nfs-port 2049 -nfs-export "$exp" \
      -nfs-opts mountport=20048 -- "$BENCH_DIR/ganesha-serve.sh" \
      "$exp" 0.0.0.0 2049 20048 "$WORK/vm-$1-r$ROUND"
    rm -rf "$exp" ;;
  esac
}

SERVERS=(asof)
[ -n "$ASOF_BIN_BEFORE" ] && SERVERS+=(asof-before)
SERVERS+=(ganesha)
[ "$BENCH_DIRSYNC" = 1 ] && SERVERS+=(ganesha-dirsync)
for ROUND in $(seq "$BENCH_ROUNDS"); do
  # odd rounds in the order above, even rounds backwards: with two rounds or more, each
  # server runs early and late as often as the others
  order=("${SERVERS[@]}")
  if [ $(( ROUND % 2 )) = 0 ]; then
    order=(); for (( i=${#SERVERS[@]}-1; i>=0; i-- )); do order+=("${SERVERS[$i]}"); done
  fi
  log "round $ROUND: ${order[*]}"
  for s in "${order[@]}"; do host_bench "$s"; done
  if [ "$BENCH_VM" = 1 ]; then
    for s in "${order[@]}"; do vm_server_bench "$s"; done
  fi
done

echo
echo "NFSv3: asof vs nfs-ganesha $(dpkg-query -W -f='${Version}' nfs-ganesha) ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, rounds: $BENCH_ROUNDS, load average at the end $(cut -d' ' -f1-3 /proc/loadavg))"
echo "fio = fio $("$FIO_NFS" --version) nfs engine (libnfs) over loopback; libnfs = nfsmeta.c over loopback; kernel = Linux $(cat "${ASOF_VM_DIR:-$HOME/.cache/asof-linux-vm}/kernel.version" 2>/dev/null || echo guest) NFSv3 client in the VM harness; ganesha-dirsync = ganesha exporting ext4 mounted dirsync; fio end_fsync = the job ends with a COMMIT; asof/X = asof / X (higher is better for asof); best of the rounds"
others=("${SERVERS[@]:1}")
print_table "${others[@]}"
echo
echo "every round:"
print_rounds
