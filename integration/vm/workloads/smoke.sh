#!/bin/sh
# Smoke workload for the VM harness: basic file operations through a kernel mount.
# usage (in the guest): smoke.sh MOUNTPOINT nfs|9p        or: smoke.sh NFSMOUNT both 9PMOUNT
# Prints each check as "ok ..." or "FAIL ..." and exits 1 if any failed.
mnt=$1 proto=$2 other=${3:-}
fails=0
ok()   { echo "ok   $*"; }
fail() { echo "FAIL $*"; fails=$((fails + 1)); }
# check DESCRIPTION COMMAND...: runs COMMAND, reports it
check() { desc=$1; shift; if "$@"; then ok "$desc"; else fail "$desc"; fi; }
same() { [ "$1" = "$2" ] || { echo "     got:  $1"; echo "     want: $2"; return 1; }; }

d=$mnt/smoke-$proto
echo "smoke: $proto on $mnt ($(uname -r))"
rm -rf "$d" 2>/dev/null
check "mkdir $d" mkdir "$d"
check "it is a directory" test -d "$d"

printf 'hello asof\n' > "$d/a.txt"
check "write a small file and read it back" same "$(cat "$d/a.txt")" "hello asof"
echo "second line" >> "$d/a.txt"
check "append" same "$(cat "$d/a.txt" | wc -l)" 2
check "size after append" same "$(stat -c %s "$d/a.txt")" 23

dd if=/dev/urandom of=/tmp/big bs=65536 count=16 2>/dev/null
want=$(md5sum < /tmp/big)
cp /tmp/big "$d/big"
check "1 MiB copy has the same md5sum" same "$(md5sum < "$d/big")" "$want"
check "1 MiB copy compares equal (cmp)" cmp -s /tmp/big "$d/big"
check "its size is 1048576" same "$(stat -c %s "$d/big")" 1048576
dd if=/dev/zero of="$d/big" bs=4096 seek=10 count=1 conv=notrunc 2>/dev/null
dd if=/dev/zero of=/tmp/big bs=4096 seek=10 count=1 conv=notrunc 2>/dev/null
check "overwrite 4 KiB in the middle" cmp -s /tmp/big "$d/big"

check "ls shows both files" same "$(ls "$d" | tr '\n' ' ')" "a.txt big "
check "rename a.txt b.txt" mv "$d/a.txt" "$d/b.txt"
check "a.txt is gone" test ! -e "$d/a.txt"
check "b.txt has a.txt's content" same "$(head -n 1 "$d/b.txt")" "hello asof"
check "mkdir sub" mkdir "$d/sub"
check "move b.txt into sub" mv "$d/b.txt" "$d/sub/b.txt"
check "ls sub" same "$(ls "$d/sub")" "b.txt"
check "symlink" ln -s ../big "$d/sub/link"
check "read through the symlink" cmp -s /tmp/big "$d/sub/link"
check "truncate to 10 bytes" truncate -s 10 "$d/big"
check "size after truncate" same "$(stat -c %s "$d/big")" 10
check "rm a file" rm "$d/sub/b.txt"
check "it is gone" test ! -e "$d/sub/b.txt"

if [ "$proto" = both ] && [ -n "$other" ]; then
  # one server, two protocols: what one writes the other reads
  echo "written over nfs" > "$d/from-nfs"
  check "9p reads what nfs wrote" same "$(cat "$other/smoke-both/from-nfs")" "written over nfs"
  echo "written over 9p" > "$other/smoke-both/from-9p"
  check "nfs reads what 9p wrote" same "$(cat "$d/from-9p")" "written over 9p"
fi

check "rm -r the tree" rm -r "$d"
check "the tree is gone" test ! -e "$d"
rm -f /tmp/big
echo "smoke: $proto: $fails failed"
[ "$fails" -eq 0 ]
