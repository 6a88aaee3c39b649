#!/bin/sh
# Full-disk workload: the server's data directory is a small tmpfs (the test makes it).
# A file that fits is kept; a large write finds no room and fails with "No space left on
# device" where the client asks for it to be stable (fsync, as dd conv=fsync does); the
# file that fitted, and the directory, stay as they were, read back from the server.
# usage (in the guest): full.sh MOUNTPOINT nfs|9p
mnt=$1
fails=0
ok()   { echo "ok   $*"; }
fail() { echo "FAIL $*"; fails=$((fails + 1)); }
check() { desc=$1; shift; if "$@"; then ok "$desc"; else fail "$desc"; fi; }

d=$mnt/full
rm -rf "$d"; mkdir -p "$d" || exit 1
dd if=/dev/urandom of=/tmp/fits bs=65536 count=32 2>/dev/null
cp /tmp/fits "$d/fits"; sync
check "a 2 MiB file fits" cmp -s /tmp/fits "$d/fits"

dd if=/dev/urandom of="$d/big" bs=1048576 count=96 conv=fsync 2>/tmp/dd.err
rc=$?
cat /tmp/dd.err | sed 's/^/     dd: /'
check "96 MiB onto the full disk fails (dd exit $rc)" test "$rc" -ne 0
check "dd says there is no space" grep -q "No space left on device" /tmp/dd.err

echo 3 > /proc/sys/vm/drop_caches    # read back from the server, not the page cache
check "the file that fitted is intact" cmp -s /tmp/fits "$d/fits"
check "the directory lists it" test -e "$d/fits"
[ "$fails" -eq 0 ] || { echo "$fails checks failed"; exit 1; }
echo "all checks passed"
