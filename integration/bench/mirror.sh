#!/bin/bash
# Mirrors against rsync and tar, everything in one run on this machine (docs/SPEC.md
# section 6; issue 19):
#
#   incremental  a tree of FILES files of SIZE bytes in DIRS directories, CHANGE of them
#                changed: `asof mirror pull` of an up-to-date backup, against
#                `rsync -a --link-dest` (a dated backup) and plain `rsync -a` of the same trees
#   first        the first full mirror of that tree plus one file of BIG bytes, against
#                `tar -C src -cf - . | tar -C dst -xf -`
#   lag          a target server following a source (flush interval 1s) under a steady
#                write load: from a write's return on the source to the file read back on
#                the target, p50 and p99 of SAMPLES writes
#   memory       the source's resident memory with three targets, one of them SIGSTOPped,
#                while it takes writes for LOAD_SECONDS
#
# usage: integration/bench/mirror.sh            (the issue's scale: 100,000 files, 1 GiB)
#        DIRS=10000 integration/bench/mirror.sh        (1,000,000 files, 100 to a directory)
#        DIRS=100 FILES=100 BIG=$((64<<20)) integration/bench/mirror.sh   (smaller)
# Needs libnfs-utils (nfs-cp, nfs-cat) and rsync. Page caches are warm for every contender:
# each reads a tree that was just written; `sync` runs before each timing, so that none pays
# for the write-back of the one before. asof mirror pull fsyncs what it writes; tar and
# rsync do not, so they are also timed with a `sync` after them. Work directory: WORK
# (default a new /tmp dir).
set -euo pipefail
DIRS=${DIRS:-1000} FILES=${FILES:-100} SIZE=${SIZE:-1024} CHANGE=${CHANGE:-100}
BIG=${BIG:-$((1 << 30))} SAMPLES=${SAMPLES:-60} LOAD_SECONDS=${LOAD_SECONDS:-30}
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/../.." && pwd)
WORK=${WORK:-$(mktemp -d /tmp/asof-mirror-bench.XXXXXX)}
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
now() { date +%s.%N; }
secs() { echo "$2 - $1" | bc -l | xargs printf '%.3f'; }
ratio() { echo "$1 / $2" | bc -l | xargs printf '%.1f'; }
for c in nfs-cp nfs-cat rsync bc; do command -v $c >/dev/null || { log "missing $c"; exit 1; }; done

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

log "building asof and mirrorfill into $WORK/bin"
mkdir -p "$WORK/bin"
(cd "$ROOT" && go build -o "$WORK/bin/asof" ./cmd/asof && go build -o "$WORK/bin/mirrorfill" ./integration/bench/mirrorfill)
ASOF=$WORK/bin/asof FILL=$WORK/bin/mirrorfill
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; log "port $1 never opened"; exit 1; }

SRC=$WORK/src PLAIN=$WORK/plain BACKUP=$WORK/backup
rm -rf "$SRC" "$PLAIN" "$BACKUP" "$WORK"/rs* "$WORK"/bk* "$WORK"/tar "$WORK"/t?
mkdir -p "$PLAIN"
log "making the tree: $DIRS dirs x $FILES files of $SIZE bytes, and one of $BIG bytes"
t0=$(now); "$FILL" -data "$SRC" -plain "$PLAIN" -dirs "$DIRS" -files "$FILES" -size "$SIZE"
"$FILL" -data "$SRC" -plain "$PLAIN" -big "$BIG"; log "made in $(secs "$t0" "$(now)") s"

NFS_PORT=$(free_port) MIRROR_PORT=$(free_port)
start_source() {
  env -i PATH="$PATH" ASOF_DATA="$SRC" ASOF_NFS_LISTEN=127.0.0.1:$NFS_PORT ASOF_NINEP_LISTEN= \
    ASOF_MIRROR_LISTEN=127.0.0.1:$MIRROR_PORT ASOF_HISTORY_FLUSH_INTERVAL=1s ASOF_EXPORTS_SQUASH=none \
    "$ASOF" serve >>"$WORK/src.log" 2>&1 &
  SRC_PID=$!; PIDS+=("$SRC_PID"); wait_port "$NFS_PORT"; wait_port "$MIRROR_PORT"
}
stop_source() { kill "$SRC_PID"; wait "$SRC_PID" 2>/dev/null || true; }
TOKEN=$SRC/mirror.token
pull() { "$ASOF" mirror pull 127.0.0.1:$MIRROR_PORT --data "$BACKUP" --token-file "$TOKEN"; }

start_source
log "first full mirror: asof mirror pull"
sync; t0=$(now); OUT=$(pull); T_FIRST_ASOF=$(secs "$t0" "$(now)"); log "$OUT"
log "first full copy: tar | tar"
mkdir -p "$WORK/tar"; sync; t0=$(now); tar -C "$PLAIN" -cf - . | tar -C "$WORK/tar" -xf -; T_FIRST_TAR=$(secs "$t0" "$(now)")
sync; T_FIRST_TAR_SYNC=$(secs "$t0" "$(now)")

log "the backups rsync will update: a dated one (link-dest) and a plain copy"
rsync -a "$PLAIN/" "$WORK/bk1/"; rsync -a "$PLAIN/" "$WORK/rs/"
stop_source
log "changing $CHANGE files"
"$FILL" -data "$SRC" -plain "$PLAIN" -dirs "$DIRS" -files "$FILES" -size "$SIZE" -change "$CHANGE" -seed 2
start_source
log "incremental: asof mirror pull"
sync; t0=$(now); OUT=$(pull); T_INC_ASOF=$(secs "$t0" "$(now)"); log "$OUT"
log "incremental: rsync -a --link-dest"
sync; t0=$(now); rsync -a --link-dest="$WORK/bk1" "$PLAIN/" "$WORK/bk2/"; T_INC_LINK=$(secs "$t0" "$(now)")
sync; T_INC_LINK_SYNC=$(secs "$t0" "$(now)")
log "incremental: rsync -a"
sync; t0=$(now); rsync -a "$PLAIN/" "$WORK/rs/"; T_INC_RSYNC=$(secs "$t0" "$(now)")
sync; T_INC_RSYNC_SYNC=$(secs "$t0" "$(now)")
log "verify the backup"
"$ASOF" mirror verify --data "$BACKUP" --source 127.0.0.1:$MIRROR_PORT --token-file "$TOKEN" | tail -1

# Three targets following the source; the third is stopped.
start_target() { # start_target NAME
  local p; p=$(free_port)
  env -i PATH="$PATH" ASOF_DATA="$WORK/$1" ASOF_NFS_LISTEN=127.0.0.1:$p ASOF_NINEP_LISTEN= \
    ASOF_MIRROR_SOURCE=127.0.0.1:$MIRROR_PORT ASOF_MIRROR_TOKEN_FILE="$TOKEN" ASOF_HISTORY_FLUSH_INTERVAL=1s ASOF_EXPORTS_SQUASH=none \
    "$ASOF" serve >>"$WORK/$1.log" 2>&1 &
  PIDS+=($!); eval "${1}_PID=$! ${1}_NFS=$p"; wait_port "$p"
}
start_target t1
SRC_URL="version=3&nfsport=$NFS_PORT&mountport=$NFS_PORT&auto-traverse-mounts=0"
T1_URL="version=3&nfsport=${t1_NFS}&mountport=${t1_NFS}&auto-traverse-mounts=0"
log "waiting for t1 to catch up"
for _ in $(seq 600); do
  ASOF_CONTROL_SOCKET=$WORK/t1/control.sock "$ASOF" mirror status --json 2>/dev/null | grep -q '"state":"following"' && break; sleep 0.5
done

log "follow lag: $SAMPLES writes, one every ~0.5 s"
head -c 4096 /dev/urandom >"$WORK/small"
: >"$WORK/lags"
for i in $(seq "$SAMPLES"); do
  nfs-cp "$WORK/small" "nfs://127.0.0.1//lag-$i?$SRC_URL" >/dev/null
  t0=$(now)
  until nfs-cat "nfs://127.0.0.1//lag-$i?$T1_URL" >/dev/null 2>&1; do sleep 0.02; done
  echo "$(secs "$t0" "$(now)")" >>"$WORK/lags"
  sleep 0.$((RANDOM % 5))
done
P50=$(sort -n "$WORK/lags" | awk '{a[NR]=$1} END {print a[int(NR*0.5+0.5)]}')
P99=$(sort -n "$WORK/lags" | awk '{a[NR]=$1} END {i=int(NR*0.99+0.5); if (i<1) i=1; print a[i]}')

start_target t2; start_target t3
sleep 2; kill -STOP "$t3_PID"
# RssAnon is the process's own memory (heap, stacks); RssFile counts the pages of the
# packs its mappings touched, page cache the kernel reclaims as it needs.
mem() { awk '/^(RssAnon|RssFile|VmHWM)/ {printf "%s %s KiB  ", $1, $2}' "/proc/$SRC_PID/status"; }
MEM0=$(mem)
log "memory: $LOAD_SECONDS s of 1 MiB writes with t3 stopped (source: ${MEM0})"
head -c $((1 << 20)) /dev/urandom >"$WORK/mib"
end=$(( $(date +%s) + LOAD_SECONDS )); n=0
while [ "$(date +%s)" -lt "$end" ]; do
  n=$((n + 1)); nfs-cp "$WORK/mib" "nfs://127.0.0.1//load-$n?$SRC_URL" >/dev/null
done
sleep 2
MEM1=$(mem)
kill -CONT "$t3_PID"

cat <<EOF

asof mirror benchmark: $DIRS dirs x $FILES files of $SIZE B, $CHANGE changed; big file $BIG B
  first full mirror   asof mirror pull ${T_FIRST_ASOF} s   tar|tar ${T_FIRST_TAR} s (${T_FIRST_TAR_SYNC} s with sync)   ratio tar/asof $(ratio "$T_FIRST_TAR" "$T_FIRST_ASOF")x ($(ratio "$T_FIRST_TAR_SYNC" "$T_FIRST_ASOF")x)
  incremental         asof mirror pull ${T_INC_ASOF} s   rsync --link-dest ${T_INC_LINK} s, ${T_INC_LINK_SYNC} s with sync ($(ratio "$T_INC_LINK" "$T_INC_ASOF")x)   rsync -a ${T_INC_RSYNC} s, ${T_INC_RSYNC_SYNC} s with sync ($(ratio "$T_INC_RSYNC" "$T_INC_ASOF")x)
  follow lag          p50 ${P50} s   p99 ${P99} s   ($SAMPLES writes, flush_interval 1s)
  source memory       before: ${MEM0}
                      after ${n} x 1 MiB writes with 3 targets (1 stopped): ${MEM1}
EOF
