#!/bin/sh
# Restart workload: the server is restarted twice while this client holds a file open on a
# hard NFS mount, first cleanly (SIGTERM) then as a crash (SIGKILL); every write made
# before and after must be there, read back from the server (caches dropped).
# usage (in the guest): restart.sh MOUNTPOINT nfs
mnt=$1
fails=0
ok()   { echo "ok   $*"; }
fail() { echo "FAIL $*"; fails=$((fails + 1)); }
check() { desc=$1; shift; if "$@"; then ok "$desc"; else fail "$desc"; fi; }
same() { [ "$1" = "$2" ] || { echo "     got:  $1"; echo "     want: $2"; return 1; }; }

d=$mnt/restart
rm -rf "$d"; mkdir -p "$d" || exit 1
dd if=/dev/urandom of=/tmp/blob bs=65536 count=8 2>/dev/null

exec 3> "$d/held.txt"              # held open across both restarts
echo "before" >&3
cp /tmp/blob "$d/synced.bin"; sync   # stable before the crash
echo "restart: SIGTERM"
check "server restarted after SIGTERM" restart-server TERM
echo "after-term" >&3
check "directory readable after SIGTERM restart" same "$(ls "$d" | tr '\n' ' ')" "held.txt synced.bin "
sync
echo "restart: SIGKILL"
check "server restarted after SIGKILL" restart-server KILL
echo "after-kill" >&3
exec 3>&-
sync
echo 3 > /proc/sys/vm/drop_caches    # read back from the server, not the page cache
check "held file has every write" same "$(cat "$d/held.txt" | tr '\n' ' ')" "before after-term after-kill "
check "synced file survived the crash" cmp -s /tmp/blob "$d/synced.bin"
check "rename after the restarts" mv "$d/held.txt" "$d/renamed.txt"
check "rm -r" rm -r "$d"
rm -f /tmp/blob
echo "restart: $fails failed"
[ "$fails" -eq 0 ]
