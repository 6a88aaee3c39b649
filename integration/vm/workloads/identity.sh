#!/bin/sh
# Identity workload: several local users of one Linux client share the server, over NFS
# (AUTH_SYS: the kernel sends each caller's uid, gid and groups) and over 9P (access=user:
# v9fs attaches once per local uid; the server takes that user's groups from its own user
# database). Each check runs as the user it names, through util-linux's setpriv:
#   u1    uid U1, gid G1, groups GS        (the server's database agrees)
#   u2    uid U2, gid G2, groups GS        (the server's database agrees)
#   u3    uid U3, gid G3, no groups        (the server's database agrees)
#   u3gs  uid U3, gid G3, groups GS        (a claim the server's database does not back)
#   root  uid 0
# The ids and the server's exports.squash come from /etc/asof-identity.conf (shell
# assignments U1 G1 U2 G2 U3 G3 GS squash=root|none), which the test writes from the
# server machine's user database, so both ends agree on the numbers.
#
# Scenarios: setup (the users are who they should be), then per protocol P (in P's own directory ident-P, made by u1, mode 1777):
#   P/owners   what each user makes belongs to that user (files, dirs, symlinks, fifos)
#   P/modes    mode bits keep other users out; the owner class comes first
#   P/groups   group bits are honoured: supplementary groups, NFS's from the client,
#              9P's from the server
#   P/sticky   in a sticky directory (and at the 1777 export root) only the file's or the
#              directory's owner removes or renames a file
#   P/setgid   files in a setgid directory take its group, subdirectories its setgid bit
#   P/chown    a non-root caller cannot give a file away or to a group it is not in
#   P/root     root is squashed to 65534 (squash=root) or acts as root (squash=none)
# and, with both mounts (usage 2):
#   cross/owners  each user sees the same owners, groups and modes over NFS and 9P
# Each prints "GUEST: scenario NAME: pass" or "GUEST: scenario NAME: FAIL (N)".
# usage (in the guest): identity.sh MOUNTPOINT nfs|9p   or: identity.sh NFSMOUNT both 9PMOUNT
mnt=$1 proto=$2 other=${3:-}
. /etc/asof-identity.conf || exit 1
fails=0 sfails=0 scen=
for t in find stat mv; do
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
dropcaches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
# as WHO CMD...: runs CMD as WHO (see the top); the programs it runs are busybox's
# applets unless /usr/bin has them. Standard input is /dev/null, not the console: rm asks
# before removing a file it cannot write when its input is a terminal.
as() {
  who=$1; shift
  case $who in
    u1) setpriv --reuid="$U1" --regid="$G1" --groups="$GS" -- "$@" < /dev/null;;
    u2) setpriv --reuid="$U2" --regid="$G2" --groups="$GS" -- "$@" < /dev/null;;
    u3) setpriv --reuid="$U3" --regid="$G3" --clear-groups -- "$@" < /dev/null;;
    u3gs) setpriv --reuid="$U3" --regid="$G3" --groups="$GS" -- "$@" < /dev/null;;
    root) "$@" < /dev/null;;
    *) echo "as: who is $who?" >&2; return 2;;
  esac
}
# put WHO TEXT FILE: WHO writes TEXT into FILE (creating it); add WHO TEXT FILE appends
put() { as "$1" sh -c 'echo "$1" > "$2"' - "$2" "$3"; }
add() { as "$1" sh -c 'echo "$1" >> "$2"' - "$2" "$3"; }
owner() { stat -c '%u %g' "$1"; }
mode() { stat -c '%a' "$1"; }

begin setup
check "setpriv switches users" same "$(as u1 id -u) $(as u1 id -G) $(as u3 id -G)" "$U1 $G1 $GS $G3"
end

# identity M P: every per-protocol scenario on mount M, in M/ident-P
identity() {
  M=$1 P=$2
  B=$M/ident-$P

  begin "$P/owners"
  check "the export root is mode 1777, owned by the server's user (root)" same "$(mode "$M") $(stat -c %u "$M")" "1777 0"
  check "u1: mkdir ident-$P at the export root" as u1 mkdir "$B"
  check "u1: chmod 1777 ident-$P" as u1 chmod 1777 "$B"
  check "ident-$P is u1's, mode 1777" same "$(owner "$B") $(mode "$B")" "$U1 $G1 1777"
  check "u1 writes f1" put u1 one "$B/f1"
  check "u2 writes f2" put u2 two "$B/f2"
  check "f1 is u1's" same "$(owner "$B/f1")" "$U1 $G1"
  check "f2 is u2's" same "$(owner "$B/f2")" "$U2 $G2"
  check "u1 makes a directory" as u1 mkdir "$B/d1"
  check "it is u1's" same "$(owner "$B/d1")" "$U1 $G1"
  check "u2 makes a symlink" as u2 ln -s f2 "$B/l2"
  check "it is u2's" same "$(owner "$B/l2")" "$U2 $G2"
  check "u2 makes a fifo" as u2 mkfifo "$B/p2"
  check "it is u2's" same "$(owner "$B/p2")" "$U2 $G2"
  check "u1 makes a 0666 file" as u1 sh -c 'echo s > "$1" && chmod 666 "$1"' - "$B/shared"
  check "u2 appends to it" add u2 more "$B/shared"
  check "a write by another user leaves the owner" same "$(owner "$B/shared")" "$U1 $G1"
  check "u2 renames its own file" as u2 mv "$B/f2" "$B/f2-renamed"
  check "a renamed file keeps its owner" same "$(owner "$B/f2-renamed")" "$U2 $G2"
  as u2 mv "$B/f2-renamed" "$B/f2"
  end

  begin "$P/modes"
  check "u1 writes a 0600 file" as u1 sh -c 'echo secret > "$1" && chmod 600 "$1"' - "$B/private"
  check "u1 reads it" same "$(as u1 cat "$B/private")" secret
  check "u2 cannot read it" fails_with "Permission denied" as u2 cat "$B/private"
  check "u3 cannot read it" fails_with "Permission denied" as u3 cat "$B/private"
  check "u2 cannot write it" fails_with "Permission denied" add u2 x "$B/private"
  check "u1 writes a 0644 file" as u1 sh -c 'echo pub > "$1" && chmod 644 "$1"' - "$B/pub"
  check "u2 reads it" same "$(as u2 cat "$B/pub")" pub
  check "u2 cannot append to it" fails_with "Permission denied" add u2 x "$B/pub"
  check "u2 cannot truncate it" fails_with "Permission denied" as u2 truncate -s 0 "$B/pub"
  check "u2 cannot chmod it" fails_with "Operation not permitted" as u2 chmod 666 "$B/pub"
  check "u2 cannot set its times" fails_with "Operation not permitted" as u2 touch -d '2001-02-03 04:05:06' "$B/pub"
  check "u1 sets its times" as u1 touch -d '2001-02-03 04:05:06' "$B/pub"
  check "u1's 0644 file is unchanged" same "$(as u1 cat "$B/pub")" pub
  check "u1 makes a 0700 directory with a file" as u1 sh -c 'mkdir "$1" && echo in > "$1/in" && chmod 700 "$1"' - "$B/closed"
  check "u2 cannot list it" fails_with "Permission denied" as u2 ls "$B/closed"
  check "u2 cannot open a file in it" fails_with "Permission denied" as u2 cat "$B/closed/in"
  check "u2 cannot create in it" fails_with "Permission denied" put u2 x "$B/closed/x"
  check "u1 makes a 0711 directory with a 0644 file" as u1 sh -c 'mkdir "$1" && echo known > "$1/known" && chmod 711 "$1"' - "$B/search"
  check "u2 cannot list the 0711 directory" fails_with "Permission denied" as u2 ls "$B/search"
  check "u2 opens a name it knows in it" same "$(as u2 cat "$B/search/known")" known
  check "u1 makes a 0077 file" as u1 sh -c 'echo others > "$1" && chmod 077 "$1"' - "$B/notmine"
  check "u1, its owner, cannot read it: the owner class comes first" fails_with "Permission denied" as u1 cat "$B/notmine"
  check "u2 (other) reads it" same "$(as u2 cat "$B/notmine")" others
  end

  begin "$P/groups"
  check "u1 writes a file and gives it to group GS" as u1 sh -c 'echo grp > "$1" && chgrp "$2" "$1" && chmod 640 "$1"' - "$B/grp" "$GS"
  check "its group is GS, mode 640" same "$(owner "$B/grp") $(mode "$B/grp")" "$U1 $GS 640"
  check "u2 (in GS) reads the 0640 file" same "$(as u2 cat "$B/grp")" grp
  check "u3 (not in GS) cannot" fails_with "Permission denied" as u3 cat "$B/grp"
  check "u2 cannot write the 0640 file" fails_with "Permission denied" add u2 x "$B/grp"
  as u1 chmod 660 "$B/grp"
  check "u2 (in GS) appends to it at 0660" add u2 by-u2 "$B/grp"
  check "the append is there" same "$(as u1 cat "$B/grp" | tr '\n' ' ')" "grp by-u2 "
  as u1 chmod 604 "$B/grp"
  check "u2 (in GS) cannot read it at 0604: the group class comes before other" fails_with "Permission denied" as u2 cat "$B/grp"
  check "u3 (other) reads it at 0604" same "$(as u3 head -n 1 "$B/grp")" grp
  check "u1 makes a 0770 directory of group GS" as u1 sh -c 'mkdir "$1" && chgrp "$2" "$1" && chmod 770 "$1"' - "$B/gdir" "$GS"
  check "u2 (in GS) creates a file in it" put u2 x "$B/gdir/by-u2"
  check "u3 (not in GS) cannot list it" fails_with "Permission denied" as u3 ls "$B/gdir"
  as u1 chmod 640 "$B/grp"
  if [ "$P" = nfs ]; then
    check "u3 with GS in its AUTH_SYS credential reads the 0640 file (NFS trusts the client's groups)" \
      same "$(as u3gs head -n 1 "$B/grp")" grp
  else
    check "u3 with GS on the client cannot read the 0640 file (9P: groups from the server's user database)" \
      fails_with "Permission denied" as u3gs cat "$B/grp"
  fi
  end

  begin "$P/sticky"
  check "u2 cannot remove u1's file in the sticky directory" fails_with "Operation not permitted" as u2 rm -f "$B/f1"
  check "u2 cannot rename u1's file away" fails_with "Operation not permitted" as u2 mv "$B/f1" "$B/f1-stolen"
  check "u2 cannot rename its own file over u1's" fails_with "Operation not permitted" as u2 mv -f "$B/f2" "$B/f1"
  check "u1's file is still there, as it was" same "$(as u1 cat "$B/f1") $(owner "$B/f1")" "one $U1 $G1"
  check "u2's file is still there" same "$(as u2 cat "$B/f2")" two
  check "u2 writes another file" put u2 x "$B/f2b"
  check "u2 removes its own file" as u2 rm "$B/f2b"
  check "u1, the directory's owner, removes u2's file" as u1 rm -f "$B/f2"
  check "u1 makes a 0777 directory without the sticky bit, and a file in it" as u1 sh -c 'mkdir "$1" && chmod 777 "$1" && echo a > "$1/a"' - "$B/open"
  check "there, u2 removes u1's file" as u2 rm -f "$B/open/a"
  check "u1 writes a file at the export root (1777)" put u1 top "$M/top-u1-$P"
  check "u2 cannot remove it" fails_with "Operation not permitted" as u2 rm -f "$M/top-u1-$P"
  check "u1 removes it" as u1 rm "$M/top-u1-$P"
  end

  begin "$P/setgid"
  check "u1 makes a directory of group GS, mode 2775" as u1 sh -c 'mkdir "$1" && chgrp "$2" "$1" && chmod 2775 "$1"' - "$B/sg" "$GS"
  check "it is u1's, group GS, mode 2775" same "$(owner "$B/sg") $(mode "$B/sg")" "$U1 $GS 2775"
  check "u2 writes a file in it" put u2 x "$B/sg/f"
  check "the file has the directory's group" same "$(owner "$B/sg/f")" "$U2 $GS"
  check "u2 makes a subdirectory" as u2 mkdir "$B/sg/sub"
  check "the subdirectory has the group and the setgid bit" same "$(owner "$B/sg/sub") $(mode "$B/sg/sub")" "$U2 $GS 2755"
  check "u2 makes one below it" as u2 mkdir "$B/sg/sub/deeper"
  check "and so on down" same "$(owner "$B/sg/sub/deeper") $(mode "$B/sg/sub/deeper")" "$U2 $GS 2755"
  check "u2 writes a file there" put u2 x "$B/sg/sub/deeper/f"
  check "it has GS too" same "$(owner "$B/sg/sub/deeper/f")" "$U2 $GS"
  check "outside the setgid directory u2's file has u2's group" same "$(put u2 x "$B/plain-u2" && owner "$B/plain-u2")" "$U2 $G2"
  end

  begin "$P/chown"
  check "u1 cannot give its file to u2" fails_with "Operation not permitted" as u1 chown "$U2" "$B/f1"
  check "u1 cannot give it to a group it is not in" fails_with "Operation not permitted" as u1 chgrp "$G2" "$B/f1"
  check "f1 is still u1's, group G1" same "$(owner "$B/f1")" "$U1 $G1"
  check "u1 gives it to a group it is in" as u1 chgrp "$GS" "$B/f1"
  check "f1's group is GS" same "$(owner "$B/f1")" "$U1 $GS"
  check "u1 chowns it to itself (no change)" as u1 chown "$U1" "$B/f1"
  check "u2 cannot chgrp u1's file, even to a group both are in" fails_with "Operation not permitted" as u2 chgrp "$G1" "$B/pub"
  check "u2 cannot take u1's file" fails_with "Operation not permitted" as u2 chown "$U2" "$B/pub"
  check "pub is still u1's" same "$(owner "$B/pub")" "$U1 $G1"
  end

  begin "$P/root"
  check "u1 writes a file for root to try" as u1 sh -c 'echo r > "$1" && chmod 644 "$1"' - "$B/for-root"
  if [ "$squash" = none ]; then
    check "root writes a file: it is root's (squash none)" same "$(put root x "$B/by-root" && owner "$B/by-root")" "0 0"
    check "root makes a directory at the export root: root's" same "$(mkdir "$M/root-$P" && owner "$M/root-$P")" "0 0"
    check "root reads u1's 0600 file" same "$(cat "$B/private")" secret
    check "root lists u1's 0700 directory" same "$(ls "$B/closed")" in
    check "root appends to u1's 0644 file" add root by-root "$B/for-root"
    check "root gives u1's file to u2" chown "$U2" "$B/for-root"
    check "it is u2's" same "$(owner "$B/for-root")" "$U2 $G1"
    check "root removes u1's file in the sticky directory" as root rm "$B/for-root"
  else
    check "root writes a file: it is 65534's (root squashed)" same "$(put root x "$B/by-root" && owner "$B/by-root")" "65534 65534"
    check "root makes a directory at the export root: 65534's" same "$(mkdir "$M/root-$P" && owner "$M/root-$P")" "65534 65534"
    check "root cannot read u1's 0600 file" fails_with "Permission denied" cat "$B/private"
    check "root cannot list u1's 0700 directory" fails_with "Permission denied" ls "$B/closed"
    check "root cannot append to u1's 0644 file" fails_with "Permission denied" add root x "$B/for-root"
    check "root cannot give u1's file to u2" fails_with "Operation not permitted" chown "$U2" "$B/for-root"
    check "root cannot remove u1's file in the sticky directory" fails_with "Operation not permitted" rm -f "$B/for-root"
    check "u1's file is unchanged" same "$(cat "$B/for-root") $(owner "$B/for-root")" "r $U1 $G1"
  fi
  end
}

case $proto in
  nfs|9p) identity "$mnt" "$proto";;
  both)
    identity "$mnt" nfs
    identity "$other" 9p
    # one server, two protocols: each user sees the same owners, groups and modes through
    # either mount, and what one protocol makes belongs to its maker through the other
    begin cross/owners
    check "u1 writes a file over NFS" put u1 x "$mnt/ident-nfs/x-u1"
    check "over 9P it is u1's" same "$(owner "$other/ident-nfs/x-u1")" "$U1 $G1"
    check "u2 writes a file over 9P" put u2 x "$other/ident-9p/x-u2"
    check "over NFS it is u2's" same "$(owner "$mnt/ident-9p/x-u2")" "$U2 $G2"
    dropcaches
    # listing MOUNT: what WHO sees of both trees, one line per name: owner, group, mode, type
    listing() { as "$1" sh -c 'cd "$1" && /usr/bin/find ident-nfs ident-9p -printf "%p %U %G %m %y\n" 2>/dev/null' - "$2" | sort; }
    for who in u1 u2 u3 root; do
      a=$(listing $who "$mnt") b=$(listing $who "$other")
      echo "     $who sees $(echo "$a" | wc -l) names"
      check "$who sees something" test "$(echo "$a" | wc -l)" -gt 20
      check "$who sees the same owners, groups and modes over NFS and 9P" same "$a" "$b"
    done
    end
    ;;
  *) echo "usage: identity.sh MOUNTPOINT nfs|9p, or NFSMOUNT both 9PMOUNT"; exit 2;;
esac
echo "identity: $fails failed"
[ "$fails" -eq 0 ]
