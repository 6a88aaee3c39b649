#!/bin/sh
# Mirror workload: the guest writes on a source through the kernel NFS client, and reads a
# target that follows it (docs/SPEC.md section 6). The guest's own mounts are the source's
# (/mnt/nfs and /mnt/9p); the target is mounted here, on the ports /etc/asof-mirror.conf
# names (target_nfs, target_9p), from the same server address.
#   write      cp -a of a seed tree (nested dirs, files of several sizes, relative,
#              absolute and dangling symlinks, hard links), then renames, deletes,
#              rewrites, appends, chmod and more links, in three phases a few flush
#              intervals apart; T1 and T2 are the source's newest transaction after the
#              first two
#   caught-up  the host waits until the target's newest transaction is the source's: TL
#   erofs      changes on the target (mounted rw) fail with "Read-only file system" (opening
#              a file for writing: "Permission denied", the client's own answer)
#   nfs-live   mounted ro, the target's live tree and the source's tree at @@TL: diff -r
#              is empty and a listing of type, mode, links, size, owner, symlink target
#              and mtime is the same; the target's live tree differs from the source at
#              T1 (the comparison sees differences when there are some)
#   nfs-past   the same between source@@T and target@@T for T1 and T2
#   9p         the target over 9P against the source over 9P at @@TL, and against the
#              target over NFS
# The host answers "host-call newest" (the source's newest transaction id, 0x + 16 hex
# digits, a flush interval after the call) and "host-call caught-up" (waits until the
# target holds the source's newest transaction and prints it).
# Each scenario prints "GUEST: scenario NAME: pass" or "GUEST: scenario NAME: FAIL (N)".
# usage (in the guest): mirror.sh NFSMOUNT both 9PMOUNT
src=$1 src9=$3
. /etc/asof-mirror.conf || exit 1
server=${ASOF_VM_SERVER:-10.213.7.1}
fails=0 sfails=0 scen=
for t in diff cmp cp mv find stat; do
  [ -x "/usr/bin/$t" ] && eval "$t() { /usr/bin/$t \"\$@\"; }"
done
ok()   { echo "ok   $*"; }
fail() { echo "FAIL $*"; fails=$((fails + 1)); sfails=$((sfails + 1)); }
check() { desc=$1; shift; if "$@"; then ok "$desc"; else fail "$desc"; fi; }
begin() { scen=$1; sfails=0; echo "--- scenario $scen"; cd /; }
end() {
  cd /
  if [ "$sfails" -eq 0 ]; then echo "GUEST: scenario $scen: pass"; else echo "GUEST: scenario $scen: FAIL ($sfails)"; fi
}
# fails_with TEXT CMD...: CMD must fail, and say TEXT
fails_with() {
  want=$1; shift
  if out=$("$@" 2>&1); then echo "     succeeded: $*"; return 1; fi
  case $out in *"$want"*) return 0;; esac
  echo "     $*: $out"; echo "     want: ...$want..."; return 1
}
# listing DIR: one line per entry under DIR (type, mode, links, size, owner, symlink
# target, mtime), sorted. Directory sizes are left out: they are the server's choice.
listing() {
  (cd "$1" && find . -mindepth 1 \( -type d -printf '%p d %m %n - %U:%G - %T@\n' \) -o \
    -printf '%p %y %m %n %s %U:%G %l %T@\n' | LC_ALL=C sort)
}
# same_tree A B: diff -r finds nothing between A and B, and their listings agree
same_tree() {
  if ! diff -r --no-dereference "$1" "$2" > /tmp/tree.diff 2>&1; then
    echo "     diff -r $1 $2:"; head -n 20 /tmp/tree.diff | sed 's/^/       /'; return 1
  fi
  listing "$1" > /tmp/a.list; listing "$2" > /tmp/b.list
  if ! diff /tmp/a.list /tmp/b.list > /tmp/list.diff; then
    echo "     listings of $1 and $2 differ:"; head -n 20 /tmp/list.diff | sed 's/^/       /'; return 1
  fi
  [ -s /tmp/a.list ] || { echo "     $1 is empty"; return 1; }
  echo "     $(wc -l < /tmp/a.list) entries alike"
}
# differs A B: diff -r sees a difference between A and B
differs() { ! diff -r --no-dereference "$1" "$2" > /dev/null 2>&1; }
fill() { # FILE BYTES
  head -c "$2" /dev/urandom > "$1"
}

begin write
rm -rf /tmp/seed && mkdir -p /tmp/seed/a/b/c /tmp/seed/d /tmp/seed/e
for i in 1 2 3 4 5; do fill /tmp/seed/a/f$i $((i * 3000)); fill /tmp/seed/d/g$i $((i * 70000)); done
fill /tmp/seed/a/b/c/deep 300000
echo hello > /tmp/seed/e/small
: > /tmp/seed/e/empty
ln -s ../a/f1 /tmp/seed/e/rel
ln -s /etc/hostname /tmp/seed/e/abs
ln -s nowhere /tmp/seed/e/dangling
ln /tmp/seed/a/f2 /tmp/seed/d/f2-link
ln /tmp/seed/a/f2 /tmp/seed/e/f2-link2
chmod 0750 /tmp/seed/a/b; chmod 0600 /tmp/seed/e/small
cd "$src"
check "cp -a seed tree" cp -a /tmp/seed "$src/tree"
check "cp -a seed tree2" cp -a /tmp/seed "$src/tree2"
sync
T1=$(host-call newest) || fail "host-call newest: $T1"
echo "     T1=$T1"
# phase 2: renames, deletes, rewrites, appends, links
check "rename a file across dirs" mv tree/a/f3 tree/d/f3-moved
check "rename a directory" mv tree/a/b tree/b-moved
check "rm a file" rm tree/d/g1
check "rm -r a directory" rm -r tree2/d
check "rewrite a file" fill tree/a/f4 12345
check "append to a file" sh -c 'echo more >> tree/e/small'
check "chmod" chmod 0644 tree/e/small
check "a new hard link" ln tree/a/f5 tree/f5-link
check "a new symlink" ln -s b-moved/c/deep tree/deep-link
sync; sleep 0.3
check "rename over an existing file" mv tree/a/f1 tree/e/empty
check "remove one name of a hard link" rm tree/a/f2
check "rename a directory across parents" mv tree2/a tree/tree2-a
sync
T2=$(host-call newest) || fail "host-call newest: $T2"
echo "     T2=$T2"
# phase 3: more copies, more deletes, over a few flush intervals
for i in 1 2 3; do
  check "cp -a round $i" cp -a /tmp/seed/a "tree/round$i"
  check "rm in round $i" rm "tree/round$i/f$i"
  sleep 0.2
done
check "rm -r tree2" rm -r tree2
check "truncate" sh -c ': > tree/d/g5'
sync
cd /
end

begin caught-up
TL=$(host-call caught-up) || fail "host-call caught-up: $TL"
echo "     TL=$TL"
check "TL is newer than T2" [ "$TL" != "$T2" ]
end

begin erofs
mkdir -p /mnt/tnfs /mnt/t9p
o=nfsvers=3,proto=tcp,port=$target_nfs,mountport=$target_nfs,mountproto=tcp,nolock,addr=$server,mountaddr=$server
if mount -t nfs -o "$o" "$server:/" /mnt/tnfs; then
  ok "mount the target rw"
  check "create on the target: Read-only file system" fails_with "Read-only file system" sh -c ': > /mnt/tnfs/new'
  # Opening an existing file for writing is refused by the client itself: the server's
  # ACCESS reply grants no MODIFY on a read-only store, as knfsd's on a read-only export.
  check "open a file for writing on the target: Permission denied" fails_with "Permission denied" sh -c 'echo x >> /mnt/tnfs/tree/e/small'
  check "mkdir on the target: Read-only file system" fails_with "Read-only file system" mkdir /mnt/tnfs/newdir
  check "rm on the target: Read-only file system" fails_with "Read-only file system" rm -f /mnt/tnfs/tree/a/f5
  check "mv on the target: Read-only file system" fails_with "Read-only file system" mv /mnt/tnfs/tree/a/f5 /mnt/tnfs/tree/a/f5b
  check "chmod on the target: Read-only file system" fails_with "Read-only file system" chmod 0600 /mnt/tnfs/tree/a/f5
  check "the file is unchanged" cmp /mnt/tnfs/tree/e/small "$src/tree/e/small"
  check "umount" umount /mnt/tnfs
else
  fail "mount -t nfs -o $o $server:/ /mnt/tnfs"
fi
end

begin nfs-live
if mount -t nfs -o "ro,$o" "$server:/" /mnt/tnfs; then
  ok "mount the target ro"
  check "target live = source@@TL" same_tree "$src/@@$TL" /mnt/tnfs
  check "target live tree = source tree@@TL" same_tree "$src/tree@@$TL" /mnt/tnfs/tree
  check "target live = source live" same_tree "$src" /mnt/tnfs
  check "target live differs from source@@T1" differs "$src/@@$T1" /mnt/tnfs
else
  fail "mount -t nfs -o ro,$o $server:/ /mnt/tnfs"
fi
end

begin nfs-past
for T in "$T1" "$T2"; do
  check "target@@$T = source@@$T" same_tree "$src/@@$T" "/mnt/tnfs/@@$T"
  check "target tree@@$T = source tree@@$T" same_tree "$src/tree@@$T" "/mnt/tnfs/tree@@$T"
done
check "the past moments differ" differs "/mnt/tnfs/@@$T1" "/mnt/tnfs/@@$T2"
end

begin 9p
if mount -t 9p -o "ro,trans=tcp,port=$target_9p,version=9p2000.L,msize=262144" "$server" /mnt/t9p; then
  ok "mount the target over 9P ro"
  check "9p: target live = source@@TL" same_tree "$src9/@@$TL" /mnt/t9p
  check "9p: target@@T1 = source@@T1" same_tree "$src9/@@$T1" "/mnt/t9p/@@$T1"
  check "target over 9P = target over NFS" same_tree /mnt/t9p /mnt/tnfs
  check "umount 9p" umount /mnt/t9p
else
  fail "mount -t 9p the target"
fi
umount /mnt/tnfs || fail "umount the target"
end

[ "$fails" -eq 0 ]
