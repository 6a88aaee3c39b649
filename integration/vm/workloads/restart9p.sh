#!/bin/sh
# 9P restart workload: 9P fids never outlive a server, so after the server restarts
# (cleanly, then killed with -9) the client remounts; every byte acknowledged before
# (written and fsynced: v9fs sends Tfsync for fsync(2), not for sync(1)) is there, and
# so is each past moment.
# usage (in the guest): restart9p.sh MOUNTPOINT 9p
mnt=$1
fails=0
ok()   { echo "ok   $*"; }
fail() { echo "FAIL $*"; fails=$((fails + 1)); }
check() { desc=$1; shift; if "$@"; then ok "$desc"; else fail "$desc"; fi; }
same() { [ "$1" = "$2" ] || { echo "     got:  $1"; echo "     want: $2"; return 1; }; }
remount() {
  umount -l "$mnt" 2>/dev/null
  mount -t 9p -o trans=tcp,port=5640,version=9p2000.L,msize=262144 "$ASOF_VM_SERVER" "$mnt"
}

d=$mnt/r9
rm -rf "$d"; mkdir -p "$d" || exit 1
dd if=/dev/urandom of=/tmp/blob bs=65536 count=16 2>/dev/null
dd if=/tmp/blob of="$d/blob.bin" bs=65536 conv=fsync 2>/dev/null
echo "one" | dd of="$d/a.txt" conv=fsync 2>/dev/null
check "server restarted after SIGTERM" restart-server TERM
check "remount after SIGTERM" remount
check "blob intact after a clean restart" cmp -s /tmp/blob "$d/blob.bin"
check "a.txt intact" same "$(cat "$d/a.txt")" "one"
echo "two" | dd of="$d/a.txt" conv=fsync 2>/dev/null
dd if=/dev/urandom of=/tmp/blob2 bs=4096 count=33 2>/dev/null
dd if=/tmp/blob2 of="$d/blob2.bin" bs=4096 conv=fsync 2>/dev/null
check "server restarted after SIGKILL" restart-server KILL
check "remount after SIGKILL" remount
check "a.txt has the acknowledged write" same "$(cat "$d/a.txt")" "two"
check "blob2 intact after a crash" cmp -s /tmp/blob2 "$d/blob2.bin"
had_one() { for v in $(ls "$d/a.txt@@"); do [ "$(cat "$d/a.txt@@/$v")" = one ] && return 0; done; return 1; }
check "the version before the crash is in a.txt's history" had_one
check "rm -r after the restarts" rm -r "$d"
echo "restart9p: $fails failed"
[ "$fails" -eq 0 ]
