#!/bin/sh
# NFS scenarios for the Linux kernel client, several per boot (a boot costs ~5-10 s):
#   cp-a        cp -a of a tree (nested dirs, a few MiB, hard links, symlinks) into the
#               mount and back out; diff -r, links still links, symlinks still symlinks
#   git         git init, add, commit, mv, log, fsck inside the mount
#   rename-open rename (and move, and rename the parent of) a file held open; keep writing
#   hardlink    ln a b: one inode, two names, link counts
#   errors      rmdir of a non-empty dir: "Directory not empty"; names with @@: EINVAL
#   timetravel  ls dir@@WHEN, dir/@@WHEN, dir@@ (versions), file@@TID; diff -r between the
#               live and the historical directory is exactly the changes made; writes into
#               the past: "Read-only file system"
# Each scenario prints "GUEST: scenario NAME: pass" or "GUEST: scenario NAME: FAIL (N)".
# The host answers "host-call now" (the server's clock, RFC 3339), "host-call tids PATH
# [UNTIL]" (the transaction ids of asof history PATH, oldest first; with UNTIL only those
# at or before it), "host-call committed PATH" (waits until PATH has a committed version)
# and "host-call after WHEN DURATION" (waits until the clock is DURATION past WHEN).
# usage (in the guest): nfs_scenarios.sh MOUNTPOINT nfs|9p
mnt=$1
fails=0 sfails=0 scen=
# busybox sh runs its own applets ahead of PATH, whatever /usr/bin holds: reach the GNU
# tools the guest carries by their path (diff -r --no-dereference, find -printf, cp -a...)
for t in diff cmp tar cp mv find stat sha256sum xargs; do
  [ -x "/usr/bin/$t" ] && eval "$t() { /usr/bin/$t \"\$@\"; }"
done
ok()   { echo "ok   $*"; }
fail() { echo "FAIL $*"; fails=$((fails + 1)); sfails=$((sfails + 1)); }
check() { desc=$1; shift; if "$@"; then ok "$desc"; else fail "$desc"; fi; }
same() { [ "$1" = "$2" ] || { echo "     got:  $1"; echo "     want: $2"; return 1; }; }
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
# fails_with_either TEXT1 TEXT2 CMD...: CMD must fail and say one of them (which is printed)
fails_with_either() {
  w1=$1 w2=$2; shift 2
  if out=$("$@" 2>&1); then echo "     succeeded: $*"; return 1; fi
  case $out in *"$w1"*|*"$w2"*) echo "     $out"; return 0;; esac
  echo "     $*: $out"; echo "     want: ...$w1... or ...$w2..."; return 1
}
dropcaches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
# listing DIR: one line per entry, what cp -a must keep (type, mode, size and link count of
# non-directories, mtime, symlink target), sorted by path
# Linux's v9fs client (6.1) sends utimensat times in whole seconds (seen on the wire:
# Tsetattr mtime_nsec 0), so over 9P times are compared to the second: that is the
# client, not the server.
mtime='%T@'
[ "${2:-nfs}" = 9p ] && mtime='%Ts'
listing() {
  (cd "$1" && { find . ! -type d -printf "%y %m %s %n $mtime %p -> %l\n"; find . -type d -printf "%y %m $mtime %p\n"; } | sort)
}
inode_links() { stat -c '%i %h' "$1"; }

# ---------------------------------------------------------------- cp -a in and out
begin cp-a
src=/tmp/tree
rm -rf "$src" /tmp/back
mkdir -p "$src/a/b/c" "$src/empty-dir" "$src/links" "$src/deep/1/2/3/4/5/6/7"
dd if=/dev/urandom of="$src/a/big1" bs=65536 count=32 2>/dev/null     # 2 MiB
dd if=/dev/urandom of="$src/a/b/big2" bs=65536 count=24 2>/dev/null   # 1.5 MiB
dd if=/dev/urandom of="$src/a/b/c/odd" bs=1000 count=777 2>/dev/null  # not block aligned
printf 'small\n' > "$src/small.txt"
: > "$src/empty-file"
printf 'deep\n' > "$src/deep/1/2/3/4/5/6/7/leaf"
i=0; while [ $i -lt 40 ]; do echo "file $i" > "$src/a/many-$i"; i=$((i + 1)); done
chmod 0755 "$src/a/b/c/odd"; chmod 0600 "$src/small.txt"; chmod 0750 "$src/a/b"
ln "$src/a/big1" "$src/links/hard-big1"          # a hard link across directories
printf 'linked\n' > "$src/links/h1"; ln "$src/links/h1" "$src/links/h2"
ln -s ../small.txt "$src/links/rel"
ln -s /etc/hostname "$src/links/abs"
ln -s does-not-exist "$src/links/dangling"
ln -s ../a/b "$src/links/dir"
touch -t 200102030405.06 "$src/small.txt" "$src/a/many-1"
check "cp -a into the mount" cp -a "$src" "$mnt/tree"
check "diff -r against the local copy" diff -r --no-dereference "$src" "$mnt/tree"
dropcaches
check "diff -r again, read back from the server" diff -r --no-dereference "$src" "$mnt/tree"
check "same types, modes, sizes, link counts, mtimes, symlink targets" same "$(listing "$mnt/tree")" "$(listing "$src")"
check "h1 and h2 are one inode with 2 links" same "$(inode_links "$mnt/tree/links/h1")" "$(stat -c %i "$mnt/tree/links/h2") 2"
check "big1 and links/hard-big1 are one inode with 2 links" same "$(inode_links "$mnt/tree/a/big1")" "$(stat -c %i "$mnt/tree/links/hard-big1") 2"
check "different files are different inodes" test "$(stat -c %i "$mnt/tree/small.txt")" != "$(stat -c %i "$mnt/tree/links/h1")"
for l in rel abs dangling dir; do
  check "links/$l is still a symlink" test -L "$mnt/tree/links/$l"
  check "links/$l has the same target" same "$(readlink "$mnt/tree/links/$l")" "$(readlink "$src/links/$l")"
done
check "read through a symlink" same "$(cat "$mnt/tree/links/rel")" "small"
check "list through a directory symlink" same "$(ls "$mnt/tree/links/dir/" | tr '\n' ' ')" "big2 c "
check "cp -a back out" cp -a "$mnt/tree" /tmp/back
check "diff -r of the copy back" diff -r --no-dereference "$src" /tmp/back
check "the copy back keeps everything" same "$(listing /tmp/back)" "$(listing "$src")"
check "the copy back keeps the hard links" same "$(inode_links /tmp/back/links/h1)" "$(stat -c %i /tmp/back/links/h2) 2"
check "the copy back keeps the cross-directory hard link" same "$(inode_links /tmp/back/a/big1)" "$(stat -c %i /tmp/back/links/hard-big1) 2"
check "tar of the tree in the mount equals tar of the local tree" same "$(cd "$mnt/tree" && tar cf - --sort=name --mtime=@0 --owner=0 --group=0 . | sha256sum)" "$(cd "$src" && tar cf - --sort=name --mtime=@0 --owner=0 --group=0 . | sha256sum)"
check "rm -r the tree" rm -r "$mnt/tree"
rm -rf /tmp/back
end

# ---------------------------------------------------------------- git
begin git
g=$mnt/repo
mkdir -p "$g" && cd "$g" || fail "cd $g"
export GIT_AUTHOR_DATE='2024-01-02T03:04:05Z' GIT_COMMITTER_DATE='2024-01-02T03:04:05Z'
check "git init" git init -q .
git config user.email test@example.com; git config user.name "asof test"
echo one > a.txt; mkdir -p src/lib; echo 'int main(void) { return 0; }' > src/main.c
printf 'x\n' > src/lib/util.h; ln -s src/main.c main-link
check "git add" git add -A
check "git commit" git commit -q -m first
echo two >> a.txt
check "git commit -a" git commit -q -am second
check "git mv" git mv src/lib/util.h src/util.h
check "git rm" git rm -q main-link
check "git commit (rename, removal)" git commit -q -m third
check "git log" same "$(git log --format=%s | tr '\n' ' ')" "third second first "
check "git status is clean" same "$(git status --porcelain)" ""
check "git show HEAD~1:a.txt" same "$(git show HEAD~1:a.txt | tr '\n' ' ')" "one two "
check "git diff HEAD~2 --stat names" same "$(git diff --name-status HEAD~2 HEAD | tr '\t\n' '  ')" "M a.txt D main-link R100 src/lib/util.h src/util.h "
check "git fsck" git fsck --no-progress --strict
check "git gc" git gc -q
check "git log after gc" same "$(git log --oneline | wc -l)" 3
dropcaches
check "git status after dropping caches" same "$(git status --porcelain)" ""
check "git archive HEAD lists the tree" same "$(git archive --format=tar HEAD | tar -tf - | sort | tr '\n' ' ')" "a.txt src/ src/main.c src/util.h "
check "git archive HEAD~2 reads old objects" same "$(git archive --format=tar HEAD~2 main-link src/lib/util.h | tar -tf - | sort | tr '\n' ' ')" "main-link src/ src/lib/ src/lib/util.h "
cd /
check "rm -rf the repository" rm -rf "$g"
end

# ---------------------------------------------------------------- rename of an open file
begin rename-open
d=$mnt/ro
mkdir -p "$d/sub"
exec 3> "$d/open.txt"
echo before >&3
check "mv the open file" mv "$d/open.txt" "$d/renamed.txt"
echo after-rename >&3
check "mv it into another directory" mv "$d/renamed.txt" "$d/sub/moved.txt"
echo after-move >&3
check "mv its parent directory" mv "$d/sub" "$d/sub2"
echo after-parent >&3
exec 3>&-
dropcaches
check "every write is in the file under its last name" same "$(cat "$d/sub2/moved.txt" | tr '\n' ' ')" "before after-rename after-move after-parent "
check "no old names left" same "$(ls -A "$d" | tr '\n' ' ')" "sub2 "
check "no old names left in sub2" same "$(ls -A "$d/sub2" | tr '\n' ' ')" "moved.txt "
# reading on through a rename
printf 'line1\nline2\n' > "$d/r.txt"
exec 4< "$d/r.txt"
read -r l1 <&4
mv "$d/r.txt" "$d/r2.txt"
read -r l2 <&4
exec 4<&-
check "read on after a rename" same "$l1 $l2" "line1 line2"
# renaming over a file that is held open: the reader keeps the old content
echo old > "$d/victim"; echo new > "$d/newer"
exec 5< "$d/victim"
check "mv over an open file" mv "$d/newer" "$d/victim"
read -r v <&5
exec 5<&-
check "the open file still reads its old content" same "$v" old
check "the name has the new content" same "$(cat "$d/victim")" new
# removing an open file (the client's silly rename), writing on
exec 6> "$d/doomed"
echo first >&6
check "rm of an open file" rm "$d/doomed"
echo second >&6
exec 6>&-
sleep 1
check "no trace of the removed file" same "$(ls -A "$d" | grep -v -e '^r2.txt$' -e '^sub2$' -e '^victim$' | tr '\n' ' ')" ""
check "rm -r" rm -r "$d"
end

# ---------------------------------------------------------------- hard links
begin hardlink
d=$mnt/hl
mkdir -p "$d/other"
echo data > "$d/a"
check "ln a b" ln "$d/a" "$d/b"
check "a and b are one inode" same "$(stat -c %i "$d/a")" "$(stat -c %i "$d/b")"
check "link count 2" same "$(stat -c %h "$d/a") $(stat -c %h "$d/b")" "2 2"
echo more >> "$d/b"
check "a write through b shows in a" same "$(cat "$d/a" | tr '\n' ' ')" "data more "
check "ln into another directory" ln "$d/a" "$d/other/c"
dropcaches
check "link count 3 (from the server)" same "$(stat -c %h "$d/a")" 3
check "ls -li shows the same inode thrice" same "$(ls -li "$d/a" "$d/b" "$d/other/c" | awk '{print $1}' | sort -u | wc -l)" 1
check "rm a" rm "$d/a"
check "b still has the data" same "$(cat "$d/b" | tr '\n' ' ')" "data more "
dropcaches
check "link count 2 after rm" same "$(stat -c %h "$d/b")" 2
fails_with_exists() { fails_with "File exists" ln "$d/b" "$d/other/c"; }
check "ln onto an existing name: File exists" fails_with_exists
check "ln -s and a hard link to the symlink" sh -c "ln -s b '$d/s' && ln '$d/s' '$d/s2' && test -L '$d/s2' && [ \"\$(readlink '$d/s2')\" = b ]"
check "rm -r" rm -r "$d"
end

# ---------------------------------------------------------------- errors
begin errors
d=$mnt/err
mkdir -p "$d/full/inner" "$d/emptydir" "$d/onlydir/sub"
echo x > "$d/full/f"
check "rmdir of a non-empty dir: Directory not empty" fails_with "Directory not empty" rmdir "$d/full"
check "rmdir of a dir with only a subdir: Directory not empty" fails_with "Directory not empty" rmdir "$d/onlydir"
check "rename of a dir onto a non-empty dir: Directory not empty" fails_with "Directory not empty" mv -T "$d/emptydir" "$d/full"
check "rmdir of an empty dir" rmdir "$d/full/inner"
check "the non-empty dir is intact" same "$(ls "$d/full")" "f"
check "rmdir of a file: Not a directory" fails_with "Not a directory" rmdir "$d/full/f"
check "create x@@y: Invalid argument" fails_with "Invalid argument" touch "$d/x@@y"
check "create x@@ with O_EXCL: Invalid argument" fails_with "Invalid argument" sh -c "set -C; echo > '$d/new@@'"
check "mkdir d@@2024-01-01: Invalid argument" fails_with "Invalid argument" mkdir "$d/m@@2024-01-01"
check "mkdir d@@: Invalid argument" fails_with "Invalid argument" mkdir "$d/m2@@"
# (busybox mv: GNU mv words rename's EINVAL as "cannot move ... to a subdirectory of itself")
check "mv to a@@b: Invalid argument" fails_with "Invalid argument" busybox mv "$d/full/f" "$d/full/f@@b"
check "ln -s to s@@1: Invalid argument" fails_with "Invalid argument" ln -s target "$d/s@@1"
check "ln to l@@x: Invalid argument" fails_with "Invalid argument" ln "$d/full/f" "$d/l@@x"
check "nothing with @@ was made" same "$(ls -A "$d" | tr '\n' ' ')" "emptydir full onlydir "
check "f is still there" same "$(cat "$d/full/f")" x
check "a bad WHEN: Invalid argument" fails_with "Invalid argument" ls "$d/full@@not-a-time"
check "rm -r" rm -r "$d"
end

# ---------------------------------------------------------------- time travel
# What a moment shows is decided by when the server commits (once per flush interval), not
# by when the guest wrote: the moments compared against come from the server, and no
# check assumes that two changes share a transaction or that a sleep outlasts a flush.
# committed returns once everything done so far is committed: a flush commits every
# buffered change as one transaction, so when a file made after everything else shows in
# asof history (which lists committed versions only), all that came before it is in.
nmark=0
committed() {
  nmark=$((nmark + 1)); m=.committed-$nmark
  sync; : > "$mnt/$m" || return 1
  host-call committed "/$m" > /dev/null; rc=$?
  rm -f "$mnt/$m"; return $rc
}
last() { [ $# -gt 0 ] && eval "echo \${$#}"; }
# contents PATH TID...: what PATH@@TID reads for each TID, each followed by a slash
contents() { local path=$1 v; shift; for v in "$@"; do printf '%s/' "$(cat "$path@@$v")"; done; }
# matches TEXT ERE: TEXT is all ERE
matches() { echo "$1" | grep -Eqx "$2" || { echo "     got:  $1"; echo "     want: $2"; return 1; }; }
begin timetravel
cd "$mnt" || fail "cd $mnt"
mkdir -p tt/sub tt/olddir
echo keep > tt/same.txt
echo old > tt/changed.txt
echo bye > tt/removed.txt
echo deep-old > tt/sub/deep.txt
echo x > tt/olddir/x
check "the old state is committed (a flush boundary)" committed
# every change above is committed at or before T, every change below after it
T=$(host-call now) || fail "host-call now"
echo "     the moment before the changes: $T"
echo new > tt/changed.txt
rm tt/removed.txt
echo hello > tt/added.txt
echo deep-new >> tt/sub/deep.txt
rm -r tt/olddir
mkdir tt/newdir
check "the changes are committed (a flush boundary)" committed
check "ls tt@@T is the old listing" same "$(ls tt@@$T | tr '\n' ' ')" "changed.txt olddir removed.txt same.txt sub "
check "ls tt/@@T is the same" same "$(ls tt/@@$T | tr '\n' ' ')" "changed.txt olddir removed.txt same.txt sub "
check "ls tt is the new listing" same "$(ls tt | tr '\n' ' ')" "added.txt changed.txt newdir same.txt sub "
check "cat tt@@T/changed.txt" same "$(cat tt@@$T/changed.txt)" old
check "cat tt/changed.txt@@T" same "$(cat tt/changed.txt@@$T)" old
check "cat tt@@T/sub/deep.txt" same "$(cat tt@@$T/sub/deep.txt | tr '\n' ' ')" "deep-old "
check "cat tt@@T/olddir/x" same "$(cat tt@@$T/olddir/x)" x
check "the past inode differs from the live one" test "$(stat -c %i tt/same.txt)" != "$(stat -c %i tt@@$T/same.txt)"
printf 'Only in tt: added.txt\ndiff -r tt/changed.txt tt@@%s/changed.txt\n1c1\n< new\n---\n> old\nOnly in tt: newdir\nOnly in tt@@%s: olddir\nOnly in tt@@%s: removed.txt\ndiff -r tt/sub/deep.txt tt@@%s/sub/deep.txt\n2d1\n< deep-new\n' "$T" "$T" "$T" "$T" > /tmp/want.diff
diff -r tt "tt@@$T" > /tmp/got.diff; rc=$?
check "diff -r tt tt@@T exits 1" same "$rc" 1
check "diff -r tt tt@@T shows exactly the changes" diff -u /tmp/want.diff /tmp/got.diff
check "diff -r tt@@T tt@@T: no differences" diff -r "tt@@$T" "tt@@$T"
# by transaction id (asof history on the host, oldest first; "tids PATH T": those at or
# before T). A file's creation and its first write can be two transactions, and so can
# the truncation and the write of "echo new >": a version may read empty, none reads
# anything but old or new, old comes before new, the version live at T reads old.
tids=$(host-call tids /tt/changed.txt) || fail "host-call tids"
tidsT=$(host-call tids /tt/changed.txt "$T") || fail "host-call tids ... T"
echo "     tids of tt/changed.txt: $tids (at or before T: $tidsT)"
first=${tids%% *} atT=$(last $tidsT) newest=$(last $tids)
check "tt/changed.txt has a version at or before T" test -n "$atT"
check "cat tt/changed.txt@@<its tid at T>" same "$(cat tt/changed.txt@@$atT)" old
check "cat tt/changed.txt@@<newest tid>" same "$(cat tt/changed.txt@@$newest)" new
seq=$(contents tt/changed.txt $tids)
check "the versions read [empty] old... [empty] new..." matches "$seq" '/?(old/)+/?(new/)+'
check "ls tt@@<first tid of changed.txt> has changed.txt" test -e "tt@@$first/changed.txt"
dtidsT=$(host-call tids /tt "$T") || fail "host-call tids /tt T"
check "ls tt@@<tid of tt at T> is the old listing" same "$(ls tt@@$(last $dtidsT) | tr '\n' ' ')" "changed.txt olddir removed.txt same.txt sub "
# the versions listing: one entry per version, in time order, each that version
n=$(ls tt/changed.txt@@ | wc -l)
check "tt/changed.txt@@ lists every version" same "$n" "$(echo $tids | wc -w)"
vseq=; for v in $(ls tt/changed.txt@@); do vseq="$vseq$(cat tt/changed.txt@@/$v)/"; done
check "the versions listing reads as the tids do" same "$vseq" "$seq"
check "tt@@ lists versions of the directory" test "$(ls tt@@ | wc -l)" -ge 2
found=0
for v in $(ls tt@@); do [ "$(ls tt@@/$v | tr '\n' ' ')" = "changed.txt olddir removed.txt same.txt sub " ] && found=1; done
check "one version of tt@@ is the old listing" same "$found" 1
# relative WHEN: tt existed a second ago (the host waits until T is a second old), not a
# week ago
check "a second after T" host-call after "$T" 1s
check "ls tt@@-1s" test -e tt@@-1s/same.txt
check "ls tt@@-1w: No such file or directory" fails_with "No such file or directory" ls tt@@-1w
# the past is read-only
check "touch tt@@-1s/x: Read-only file system" fails_with "Read-only file system" touch tt@@-1s/x
check "touch tt@@T/x: Read-only file system" fails_with "Read-only file system" touch "tt@@$T/x"
# opening an existing file of the past for writing: the client asks ACCESS first, which
# (as for any read-only export) denies MODIFY, so open says EACCES before any write is sent
check "write tt@@T/same.txt: refused" fails_with_either "Read-only file system" "Permission denied" sh -c "echo changed > tt@@$T/same.txt"
check "append tt/same.txt@@T: refused" fails_with_either "Read-only file system" "Permission denied" sh -c "echo more >> tt/same.txt@@$T"
check "truncate tt@@T/same.txt: refused" fails_with_either "Read-only file system" "Permission denied" truncate -s 0 "tt@@$T/same.txt"
check "tt@@T/same.txt unchanged" same "$(cat tt@@$T/same.txt)" keep
check "rm tt@@T/same.txt: Read-only file system" fails_with "Read-only file system" rm -f "tt@@$T/same.txt"
check "mkdir tt@@T/d: Read-only file system" fails_with "Read-only file system" mkdir "tt@@$T/d"
check "chmod tt@@T/same.txt: Read-only file system" fails_with "Read-only file system" chmod 600 "tt@@$T/same.txt"
check "mv tt@@T/same.txt tt/: Read-only file system" fails_with "Read-only file system" mv "tt@@$T/same.txt" tt/stolen.txt
check "ln -s in tt@@T: Read-only file system" fails_with "Read-only file system" ln -s x "tt@@$T/l"
check "touch in the versions listing: Read-only file system" fails_with "Read-only file system" touch tt/changed.txt@@/x
check "the past is unchanged" same "$(ls tt@@$T | tr '\n' ' ')" "changed.txt olddir removed.txt same.txt sub "
check "the present is unchanged" same "$(ls tt | tr '\n' ' ')" "added.txt changed.txt newdir same.txt sub "
check "ls shows no @@ names" same "$(ls -A . tt | grep -c @@)" 0
cd /
check "rm -r tt" rm -r "$mnt/tt"
end

echo "nfs scenarios: $fails failed"
[ "$fails" -eq 0 ]
