#!/bin/sh
# Benchmark workload for the VM harness (integration/vm), run in the guest by busybox sh as
#   vm-workload.sh MOUNTPOINT nfs|9p
# with /etc/bench.conf (from nfs.sh / ninep.sh) setting:
#   BENCH_TESTS  words: "data" (dd write + read of BENCH_MIB MiB) and/or "meta"
#   BENCH_MIB    size of the dd file in MiB (1024)
#   BENCH_FILES  files in the metadata run (10000)
# Prints one line per measurement, read by the host:
#   BENCH <test> <seconds> <amount> <unit>
# Times come from /proc/uptime (10 ms steps): every measured step takes seconds.
set -u
mnt=$1 proto=$2
BENCH_TESTS="data meta" BENCH_MIB=1024 BENCH_FILES=10000
[ -f /etc/bench.conf ] && . /etc/bench.conf

now() { read -r up _ < /proc/uptime; echo "$up"; }
# report TEST START END AMOUNT UNIT
report() { echo "BENCH $1 $(awk -v a="$2" -v b="$3" 'BEGIN { printf "%.2f", b - a }') $4 $5"; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
die() { echo "bench: $*"; exit 1; }

d=$mnt/bench-$$
mkdir "$d" || die "mkdir $d"
echo "bench: $proto on $mnt, tests: $BENCH_TESTS, ${BENCH_MIB} MiB, ${BENCH_FILES} files"
# the options in force, as negotiated (NFS rsize/wsize, 9P msize)
echo "BENCH-MOUNT $(grep " $mnt " /proc/mounts)"

for t in $BENCH_TESTS; do
  case $t in
  data)
    # sequential write: 1 MiB writes of data nobody can deduplicate; conv=fsync makes the
    # time include getting it all to the server, durably (NFS COMMIT, 9P Tfsync)
    drop
    t0=$(now)
    benchgen "$BENCH_MIB" | dd of="$d/big" bs=1M iflag=fullblock conv=fsync 2>/tmp/dd.err || { cat /tmp/dd.err; die "dd write"; }
    t1=$(now)
    report seq-write "$t0" "$t1" "$BENCH_MIB" MiB
    sz=$(stat -c %s "$d/big")
    [ "$sz" = $((BENCH_MIB * 1048576)) ] || die "size after write: $sz"
    # sequential read from the server (the guest's page cache dropped first)
    drop
    t0=$(now)
    dd if="$d/big" of=/dev/null bs=1M 2>/tmp/dd.err || { cat /tmp/dd.err; die "dd read"; }
    t1=$(now)
    report seq-read "$t0" "$t1" "$BENCH_MIB" MiB
    rm -f "$d/big"
    ;;
  meta)
    mkdir "$d/m" || die "mkdir $d/m"
    i=1; while [ $i -le "$BENCH_FILES" ]; do echo "f$i"; i=$((i + 1)); done > /tmp/names
    cd "$d/m" || die "cd"
    drop
    # create: the shell's own open(O_CREAT|O_TRUNC) + close, no process per file
    t0=$(now)
    i=1; while [ $i -le "$BENCH_FILES" ]; do : > "f$i"; i=$((i + 1)); done
    t1=$(now)
    report create "$t0" "$t1" "$BENCH_FILES" files
    # stat: one GNU stat process for all names; caches dropped so each name is looked up
    drop
    t0=$(now)
    xargs stat -c %i < /tmp/names > /tmp/stat.out || die "stat"
    t1=$(now)
    [ "$(wc -l < /tmp/stat.out)" -eq "$BENCH_FILES" ] || die "stat printed $(wc -l < /tmp/stat.out) lines"
    report stat "$t0" "$t1" "$BENCH_FILES" files
    # remove
    drop
    t0=$(now)
    xargs rm < /tmp/names || die "rm"
    t1=$(now)
    report remove "$t0" "$t1" "$BENCH_FILES" files
    cd / || die "cd /"
    [ -z "$(ls -A "$d/m")" ] || die "files left after rm"
    rmdir "$d/m"
    ;;
  *) die "unknown test $t" ;;
  esac
done
rmdir "$d"
echo "bench: done"
