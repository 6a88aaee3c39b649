#!/bin/bash
# Where asof's NFS time goes: one fio job against a fresh asof, with the server's CPU time
# per operation (from /proc/PID/stat, steadier than throughput on a shared machine) and,
# with PROFILE=1, a perf profile of the server.
#
#   integration/bench/nfsprof.sh RW [BS] [MIB] [SECONDS]
#
# RW is fio's: randread, randwrite, read, write (default randread); BS the block size
# (default 4k); MIB the file, laid out first with 1 MiB writes (default 1024); SECONDS the
# time-based run (default 10). Environment: ASOF_BIN (default: build this checkout),
# IODEPTH (8), PROFILE (0; 1 records with perf -g and prints the top symbols, self and
# children), BENCH_WORK (a new /tmp/asof-prof.XXXXXX). Compare two binaries by running the
# script for each, alternately, in the same minutes.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RW=${1:-randread} BS=${2:-4k} MIB=${3:-1024} SECS=${4:-10}
IODEPTH=${IODEPTH:-8} PROFILE=${PROFILE:-0}
WORK=${BENCH_WORK:-$(mktemp -d /tmp/asof-prof.XXXXXX)}
mkdir -p "$WORK"
trap 'stop_all; rm -rf "$WORK/data"' EXIT
trap 'exit 130' INT TERM

fio_nfs_build
[ "$PROFILE" = 1 ] && apt_install linux-perf
build_asof

port=$(free_port)
mkdir -p "$WORK/data"
"${ASOF_ENV_CLEAN[@]}" ASOF_DATA="$WORK/data" ASOF_NFS_LISTEN="127.0.0.1:$port" ASOF_NINEP_LISTEN= \
  ASOF_CONTROL_SOCKET="$WORK/c.sock" "$ASOF_BIN" serve > "$WORK/asof.log" 2>&1 &
pid=$!; PIDS+=("$pid")
wait_port "$port" "$pid" || die "asof does not listen on $port, see $WORK/asof.log"
url="nfs://127.0.0.1/?version=3&nfsport=$port&mountport=$port"
fio_job() { # fio_job NAME ARGS...: a job on bench.dat, terse output on stdout
  local name=$1; shift
  timeout -k 5 $(( SECS + 10 + MIB / 20 )) "$FIO_NFS" --name="$name" --ioengine=nfs --nfs_url="$url" \
    --filename=bench.dat --size="${MIB}M" --output-format=terse --terse-version=3 "$@" 2> "$WORK/fio-$name.err"
}
fio_job layout --rw=write --bs=1M --iodepth=1 |
  awk -F';' '/^3;/ { printf "layout: write %.1f MiB/s\n", $48 / 1024 }'
sync
cpu() { awk '{ print $14 + $15 }' "/proc/$pid/stat"; } # user + system, in clock ticks
c0=$(cpu)
if [ "$PROFILE" = 1 ]; then
  perf record -F 999 -g -p "$pid" -o "$WORK/perf.data" > "$WORK/perf.log" 2>&1 &
  prof=$!
  sleep 0.3
fi
# A status line every second: fio's nfs engine sometimes hangs after the job, before its
# final result (a client bug, see README.md); the last status is the whole run's then.
fio_job run --rw="$RW" --bs="$BS" --iodepth="$IODEPTH" --time_based --runtime="$SECS" \
  --status-interval=1 > "$WORK/fio.out" || true
c1=$(cpu)
[ "$PROFILE" = 1 ] && { kill -INT "$prof"; wait "$prof" || true; }
grep '^3;' "$WORK/fio.out" | tail -n 1 | awk -F';' -v c=$(( c1 - c0 )) -v hz="$(getconf CLK_TCK)" -v secs="$SECS" -v rw="$RW" -v bs="$BS" '/^3;/ {
  ops = ($8 + $49) * secs
  printf "%s %s qd'"$IODEPTH"': %.0f IOPS, %.1f MiB/s; server CPU %.2f s, %.1f us per operation\n",
    rw, bs, $8 + $49, ($7 + $48) / 1024, c / hz, c / hz / ops * 1e6 }'
grep -q '^3;' "$WORK/fio.out" || log "fio gave no result (see $WORK/fio-run.err; a hang at the end of a job is the client's, see README.md)"
if [ "$PROFILE" = 1 ]; then
  echo "--- self"
  perf report -i "$WORK/perf.data" --stdio --no-children -g none --sort symbol --percent-limit 1 2>/dev/null |
    grep -v '^#' | grep . | head -30
  echo "--- with children (asof and the runtime)"
  perf report -i "$WORK/perf.data" --stdio --children -g none --sort symbol --percent-limit 3 2>/dev/null |
    grep -v '^#' | grep . | grep -v '\[k\]' | head -40
fi
