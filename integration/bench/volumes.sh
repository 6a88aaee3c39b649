#!/bin/bash
# Volumes benchmark (docs/SPEC.md section 7): asof draining BENCH_MIB MiB of packs from one
# directory volume to another, then to an S3 bucket (versitygw on loopback), while fio
# (libnfs's nfs engine) reads and writes through NFS; against the limits: `cp` of the same
# packs (dir to dir) and a PUT loop of the same bytes with minio-go (s3put/, to S3). Then
# reads of a file whose packs are in the bucket, cold and warm cache, against the same file
# on a local volume. One run; prints a table with the ratios.
#
#   integration/bench/volumes.sh       (as root)
#
# Needs what scripts/test-deps.sh installs (libnfs, versitygw) and fio with the libnfs
# engine (/usr/local/bin/fio-nfs; built as nfs.sh builds it when missing). Builds asof and
# s3put from this checkout. Stops what it starts, by pid.
#
# Steps, on one asof server (data directory and volumes under BENCH_WORK, one disk):
#  1. volume a (a directory) added; fio writes fill.dat (BENCH_MIB), load.dat and read.dat
#     (BENCH_FIO_MIB each) sequentially; a restart seals the last pack; `asof volume drain
#     data` puts every pack on a.
#  2. volume b added; `asof volume drain a`, timed, with no client (the "no clients" row).
#  3. volume c added; fio runs a mixed sequential read/write job on load.dat (1 MiB blocks,
#     iodepth 8, writes capped at BENCH_WRITE_MIB MiB/s, a status line every 250 ms) for
#     BENCH_RUNTIME seconds, then
#     `asof volume drain b` runs, timed, while fio goes on; fio stops 2 s after the drain.
#     Client MiB/s before the drain and during it come from fio's samples. The limit:
#     `cp` of the same pack files to another directory of the disk, then `sync` (asof
#     fsyncs each pack it copies).
#  4. read.dat read sequentially (1 MiB, iodepth 8) while it is on volume c: the local read.
#  5. volume s3 (s3://BUCKET/asof on versitygw) added; step 3's load and drain, c to s3.
#  6. the limits: s3put of the same pack files, -mode plain (minio-go's PutObject, its
#     defaults), -mode checked (what asof did per pack until 2026-12-07: MD5 and SHA-256
#     of the file, one signed PUT, a HEAD) and -mode crc32c (what asof does now: CRC-32C of
#     the file, one PUT carrying it with an unsigned payload, a HEAD giving it back).
#  7. asof restarted with its S3 read cache removed; read.dat read twice: cold, then warm.
#  8. `asof verify` (clean, or the run fails).
#
# Environment (defaults in brackets):
#   BENCH_MIB [4096]  BENCH_FIO_MIB [256]  BENCH_RUNTIME [15] (seconds of client load
#   before each drain)  BENCH_WRITE_MIB [32] (the cap on fio's writes during the drains)  BENCH_WORK (default: a new /tmp/asof-bench-vol.XXXXXX; logs stay)
#   ASOF_BIN: an asof binary to test instead of building this checkout
#   FIO_NFS [/usr/local/bin/fio-nfs]  VERSITYGW: the versitygw binary (default: PATH, then
#   the go command's GOBIN and GOPATH/bin)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BENCH_MIB=${BENCH_MIB:-4096} BENCH_FIO_MIB=${BENCH_FIO_MIB:-256} BENCH_RUNTIME=${BENCH_RUNTIME:-15}
BENCH_WRITE_MIB=${BENCH_WRITE_MIB:-32}
WORK=${BENCH_WORK:-$(mktemp -d /tmp/asof-bench-vol.XXXXXX)}
mkdir -p "$WORK"
RESULTS=$WORK/results; : > "$RESULTS"
ROUND=1
[ "$(id -u)" -eq 0 ] || die "run as root (as CI does)"

cleanup() {
  stop_all
  rm -rf "$WORK"/data "$WORK"/vol-* "$WORK"/s3-objects "$WORK"/cp-dst
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- what it needs -----------------------------------------------------------------------
fio_nfs_build
command -v nfs-cat >/dev/null || die "libnfs-utils missing: run scripts/test-deps.sh"
VERSITYGW=${VERSITYGW:-$(command -v versitygw || true)}
if [ -z "$VERSITYGW" ]; then
  for d in "$(go env GOBIN)" $(go env GOPATH | tr ':' ' ' | sed 's|\([^ ]*\)|\1/bin|g'); do
    [ -n "$d" ] && [ -x "$d/versitygw" ] && { VERSITYGW=$d/versitygw; break; }
  done
fi
[ -n "$VERSITYGW" ] || die "versitygw not found: run scripts/test-deps.sh (or set VERSITYGW)"
build_asof
S3PUT=$WORK/s3put
(cd "$ROOT" && go build -o "$S3PUT" ./integration/bench/s3put)
log "work directory $WORK; asof $ASOF_BIN; versitygw $VERSITYGW; BENCH_MIB=$BENCH_MIB"

export AWS_ACCESS_KEY_ID=asofbenchkey AWS_SECRET_ACCESS_KEY=asofbenchsecret0123456789
BUCKET=asof-bench

# --- servers -----------------------------------------------------------------------------
S3PORT=$(free_port)
mkdir -p "$WORK/s3-objects"
ROOT_ACCESS_KEY=$AWS_ACCESS_KEY_ID ROOT_SECRET_KEY=$AWS_SECRET_ACCESS_KEY \
  "$VERSITYGW" --port "127.0.0.1:$S3PORT" posix "$WORK/s3-objects" > "$WORK/versitygw.log" 2>&1 &
PIDS+=($!)
wait_port "$S3PORT" $! || die "versitygw does not listen, see $WORK/versitygw.log"
ENDPOINT=http://127.0.0.1:$S3PORT
"$S3PUT" -endpoint "$ENDPOINT" -bucket "$BUCKET" -mkbucket

NFSPORT=$(free_port)
SOCK=$WORK/c.sock
URL="nfs://127.0.0.1/?version=3&nfsport=$NFSPORT&mountport=$NFSPORT"
ASOF_PID=
start_asof() {
  mkdir -p "$WORK/data"
  "${ASOF_ENV_CLEAN[@]}" ASOF_DATA="$WORK/data" ASOF_NFS_LISTEN="127.0.0.1:$NFSPORT" ASOF_NINEP_LISTEN= \
    ASOF_CONTROL_SOCKET="$SOCK" ASOF_EXPORTS_SQUASH=none "$ASOF_BIN" serve >> "$WORK/asof.log" 2>&1 &
  ASOF_PID=$!; PIDS+=("$ASOF_PID")
  wait_port "$NFSPORT" "$ASOF_PID" || die "asof does not listen, see $WORK/asof.log"
}
stop_asof() { stop_pid "$ASOF_PID"; ASOF_PID=; }
asof() { "${ASOF_ENV_CLEAN[@]}" ASOF_CONTROL_SOCKET="$SOCK" "$ASOF_BIN" "$@"; }

now() { date +%s.%N; }
pack_bytes() { find "$1" -maxdepth 1 -name '*.pack' -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }'; }
mib_s() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.1f", b / 1048576 / s }'; }

# fio_job NAME FIO-ARGS...: one job on the asof export; prints its MiB/s (read + write).
# FIO_SIZE_MIB (default BENCH_FIO_MIB) sets how long it may take: 30 s + 1 s per 20 MiB.
# The nfs engine's quirks (nfs.sh): a job that does not exit is stopped and run again; the
# requests it cancels at its end are not errors, anything else it prints is.
fio_job() {
  local name=$1; shift
  local out=$WORK/fio-$name limit=$(( 30 + ${FIO_SIZE_MIB:-$BENCH_FIO_MIB} / 20 )) attempt rc
  for attempt in 1 2 3; do
    rc=0
    timeout -k 5 "$limit" "$FIO_NFS" --name="$name" --ioengine=nfs --nfs_url="$URL" \
      --output-format=terse --terse-version=3 "$@" > "$out.terse" 2> "$out.err" || rc=$?
    [ $rc -ne 124 ] && [ $rc -ne 137 ] && break
    log "  fio $name: still running after ${limit}s (attempt $attempt); stopped"
  done
  [ $rc -eq 0 ] || { cat "$out.err" >&2; die "fio $name failed (exit $rc)"; }
  grep -v 'Failed NFS operation' "$out.err" | grep -q . && { cat "$out.err" >&2; die "fio $name: client errors"; }
  grep '^3;' "$out.terse" | tail -n 1 | awk -F';' '{ printf "%.1f", ($7 + $48) / 1024 }'
}

# drain_under_load TEST VOLUME: fio's mixed job on load.dat for BENCH_RUNTIME s, then
# `asof volume drain VOLUME`, timed, under the same load. Records the drain's rate (the
# bytes of VOLUME's packs before it) and the client's read and write rates before and
# during it. The writes are capped at BENCH_WRITE_MIB MiB/s: every block fio writes is
# new, and the store keeps them all, so an uncapped writer fills the disk within minutes;
# the reads are not capped.
DRAIN_MIBS=
drain_under_load() {
  local test=$1 vol=$2 dir=$WORK/vol-$2
  local bytes; bytes=$(pack_bytes "$dir")
  local out=$WORK/load-${test// /_}
  log "$test: drain $vol ($(mib_s "$bytes" 1) MiB) under fio; load average $(cut -d' ' -f1-3 /proc/loadavg)"
  local f0; f0=$(now)
  "$FIO_NFS" --name=load --ioengine=nfs --nfs_url="$URL" --filename=load.dat \
    --size="${BENCH_FIO_MIB}M" --rw=rw --bs=1M --iodepth=8 --rate=",${BENCH_WRITE_MIB}m" \
    --time_based --runtime=3600 --status-interval=250ms --output-format=terse --terse-version=3 \
    > "$out.terse" 2> "$out.err" &
  local fio=$!; PIDS+=("$fio")
  sleep "$BENCH_RUNTIME"
  local d0 d1 rc=0
  d0=$(now)
  # in the background, so that a signal to this script is handled at once (its trap
  # stops the servers; the drain command ends with them)
  asof volume drain "$vol" > "$out.drain" 2>&1 &
  wait $! || rc=$?
  d1=$(now)
  [ $rc -eq 0 ] || { cat "$out.drain" >&2; die "asof volume drain $vol failed"; }
  sleep 2
  kill -INT "$fio" 2>/dev/null || true
  local i
  for i in $(seq 50); do kill -0 "$fio" 2>/dev/null || break; sleep 0.2; done
  # the nfs engine may never exit after its job (nfs.sh); its status lines are written
  kill -0 "$fio" 2>/dev/null && { log "  fio did not exit on SIGINT; killed"; kill -KILL "$fio"; }
  wait "$fio" 2>/dev/null || true
  local errs; errs=$(grep -v 'Failed NFS operation' "$out.err" | grep -v 'terminating on signal' | grep -c . || true)
  [ "$errs" = 0 ] || { cat "$out.err" >&2; die "$test: fio met errors"; }
  # A status line every 250 ms, cumulative: field 5 the error, 6 and 9 KiB read and the
  # read runtime in ms, 47 KiB written. Each interval between two lines counts before
  # the drain (from 2 s on) or during it when it lies wholly within.
  local rates
  rates=$(awk -F';' -v f0="$f0" -v d0="$d0" -v d1="$d1" '
    $1 == 3 { if ($5 != 0) err = $5
      t = f0 + $9 / 1000
      if (n++ && $9 > pt) {
        if (pt >= 2000 && t <= d0) { br += $6 - pr; bw += $47 - pw; bs += ($9 - pt) / 1000 }
        else if (pt / 1000 + f0 >= d0 && t <= d1) { dr += $6 - pr; dw += $47 - pw; ds += ($9 - pt) / 1000 } }
      pt = $9; pr = $6; pw = $47 }
    END { printf "%.1f %.1f %.1f %.1f %.1f %.1f %d", (bs ? br / bs / 1024 : 0), (bs ? bw / bs / 1024 : 0),
            (ds ? dr / ds / 1024 : 0), (ds ? dw / ds / 1024 : 0), bs, ds, err }' "$out.terse")
  local br bw dr dw bs ds ferr secs
  read -r br bw dr dw bs ds ferr <<< "$rates"
  [ "$ferr" = 0 ] || die "$test: fio reported error $ferr"
  secs=$(awk -v a="$d0" -v b="$d1" 'BEGIN { printf "%.2f", b - a }')
  DRAIN_MIBS=$(mib_s "$bytes" "$secs")
  log "  drain: $(mib_s "$bytes" 1) MiB in $secs s = $DRAIN_MIBS MiB/s; fio before (${bs} s): read $br, write $bw MiB/s; during (${ds} s): read $dr, write $dw MiB/s; no client errors"
  awk -v d="$ds" 'BEGIN { exit !(d < 3) }' && log "  WARNING: only $ds s of fio status fell within the drain: the client figures are rough"
  [ "$test" != "dir to dir" ] || result "$test: drain with fio" MiB/s asof "$DRAIN_MIBS"
  result "$test: client read during/before" MiB/s asof "$dr"
  result "$test: client read during/before" MiB/s limit "$br"
  result "$test: client write during/before" MiB/s asof "$dw"
  result "$test: client write during/before" MiB/s limit "$bw"
}

# --- 1. fill, seal, everything to volume a -------------------------------------------------
start_asof
mkdir -p "$WORK/vol-a" "$WORK/vol-b" "$WORK/vol-c"
asof volume add a "$WORK/vol-a" > /dev/null
log "writing fill.dat ($BENCH_MIB MiB), load.dat and read.dat ($BENCH_FIO_MIB MiB each)"
v=$(FIO_SIZE_MIB=$BENCH_MIB fio_job fill --filename=fill.dat --size="${BENCH_MIB}M" --rw=write --bs=1M --iodepth=1)
log "  fill.dat: $v MiB/s"
fio_job load-layout --filename=load.dat --size="${BENCH_FIO_MIB}M" --rw=write --bs=1M --iodepth=1 > /dev/null
fio_job read-layout --filename=read.dat --size="${BENCH_FIO_MIB}M" --rw=write --bs=1M --iodepth=1 > /dev/null
stop_asof; start_asof # seals the pack being filled
asof volume drain data > "$WORK/drain-data.out" 2>&1 || { cat "$WORK/drain-data.out"; die "drain data failed"; }

# --- 2. a to b, no client ------------------------------------------------------------------
asof volume add b "$WORK/vol-b" > /dev/null
sync
bytes=$(pack_bytes "$WORK/vol-a")
log "drain a -> b, no client: $(mib_s "$bytes" 1) MiB; load average $(cut -d' ' -f1-3 /proc/loadavg)"
t0=$(now); asof volume drain a > "$WORK/drain-a.out" 2>&1 || { cat "$WORK/drain-a.out"; die "drain a failed"; }; t1=$(now)
secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
log "  $secs s"
result "dir to dir, no clients: drain" MiB/s asof "$(mib_s "$bytes" "$secs")"

# --- 3. b to c under load, and the limit: cp of the same packs, then sync -----------------
asof volume add c "$WORK/vol-c" > /dev/null
PACKS=$(find "$WORK/vol-b" -maxdepth 1 -name '*.pack' -printf '%f\n' | sort)
drain_under_load "dir to dir" b
mkdir -p "$WORK/cp-dst"
srcs=(); for p in $PACKS; do [ -f "$WORK/vol-c/$p" ] && srcs+=("$WORK/vol-c/$p"); done
[ ${#srcs[@]} -gt 0 ] || die "the drained packs are not on volume c"
cbytes=$(du -cb "${srcs[@]}" | tail -n 1 | cut -f1)
sync
log "cp of the same ${#srcs[@]} packs ($(mib_s "$cbytes" 1) MiB), then sync; load average $(cut -d' ' -f1-3 /proc/loadavg)"
t0=$(now); cp "${srcs[@]}" "$WORK/cp-dst/"; sync -f "$WORK/cp-dst"; t1=$(now)
secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
CP=$(mib_s "$cbytes" "$secs"); log "  $secs s = $CP MiB/s"
result "dir to dir, no clients: drain" MiB/s limit "$CP"
result "dir to dir: drain with fio" MiB/s limit "$CP"

# --- 4. read.dat on a local volume ----------------------------------------------------------
LOCAL=$(fio_job read-local --filename=read.dat --size="${BENCH_FIO_MIB}M" --rw=read --bs=1M --iodepth=8)
log "read.dat on volume c: $LOCAL MiB/s"

# --- 5. dir to S3 under load -----------------------------------------------------------------
asof volume add s3 "s3://$BUCKET/asof" --endpoint "$ENDPOINT" > /dev/null
drain_under_load "dir to S3" c

# --- 6. the limits: PUT loops of the same bytes --------------------------------------------
cp_files=("$WORK"/cp-dst/*.pack)
log "s3put of the same packs ($(mib_s "$cbytes" 1) MiB); load average $(cut -d' ' -f1-3 /proc/loadavg)"
for mode in plain checked crc32c; do
  read -r _ n b s < <("$S3PUT" -endpoint "$ENDPOINT" -bucket "$BUCKET" -prefix "$mode/" -mode "$mode" "${cp_files[@]}" | tail -n 1)
  v=$(mib_s "$b" "$s"); log "  -mode $mode: $n objects, $s s = $v MiB/s"
  result "dir to S3: drain with fio vs PUT loop ($mode)" MiB/s limit "$v"
  result "dir to S3: drain with fio vs PUT loop ($mode)" MiB/s asof "$DRAIN_MIBS"
done

# --- 7. reads of read.dat from the bucket: cold, warm --------------------------------------
onc=$(asof volume list | awk '$1 == "c" { print $5 }')
[ "$onc" = 0 ] || die "volume c still holds $onc packs"
stop_asof
rm -rf "$WORK/data/cache"
start_asof
COLD=$(fio_job read-cold --filename=read.dat --size="${BENCH_FIO_MIB}M" --rw=read --bs=1M --iodepth=8)
WARM=$(fio_job read-warm --filename=read.dat --size="${BENCH_FIO_MIB}M" --rw=read --bs=1M --iodepth=8)
log "read.dat in the bucket: cold $COLD MiB/s, warm $WARM MiB/s (local volume: $LOCAL)"
result "S3-resident file, cold cache: read" MiB/s asof "$COLD"
result "S3-resident file, cold cache: read" MiB/s limit "$LOCAL"
result "S3-resident file, warm cache: read" MiB/s asof "$WARM"
result "S3-resident file, warm cache: read" MiB/s limit "$LOCAL"

# --- 8. verify ------------------------------------------------------------------------------
asof verify > "$WORK/verify.out" 2>&1 || { cat "$WORK/verify.out"; die "asof verify found problems"; }
log "asof verify: clean"
asof volume list > "$WORK/volumes.out"
stop_all

echo
echo "Volumes: asof $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null) ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)), BENCH_MIB=$BENCH_MIB"
echo "limit: cp + sync of the same packs (dir to dir); s3put of the same packs with minio-go to versitygw on loopback (to S3);"
echo "       fio rw before the drain (client rows: ratio = during / before, goal >= 0.70; writes capped at $BENCH_WRITE_MIB MiB/s); the same file on a local volume (reads)"
# lib.sh's print_table with a wider first column
awk -F'|' '
  { k = $2 SUBSEP $3
    if (!(k in seen)) { seen[k] = 1; order[++n] = k; tname[k] = $2; unit[k] = $3 }
    if ($4 == "asof") a[k] = $5; else o[k] = $5 }
  END {
    printf "| %-50s | %-5s | %8s | %8s | %6s |\n", "test", "unit", "asof", "limit", "ratio"
    printf "|-%s-|-%s-|-%s-|-%s-|-%s-|\n", "--------------------------------------------------", "-----", "--------", "--------", "------"
    for (i = 1; i <= n; i++) { k = order[i]
      av = (k in a) ? sprintf("%.1f", a[k]) : "-"; ov = (k in o) ? sprintf("%.1f", o[k]) : "-"
      r = ((k in a) && (k in o) && o[k] > 0) ? sprintf("%.2f", a[k] / o[k]) : "-"
      printf "| %-50s | %-5s | %8s | %8s | %6s |\n", tname[k], unit[k], av, ov, r } }' "$RESULTS"
