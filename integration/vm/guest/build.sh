#!/bin/bash
# Builds the Linux guest of asof's VM harness (integration/vm): Debian's stock kernel
# (the package is downloaded with apt-get download and unpacked, never installed), busybox,
# the NFSv3 and 9P client modules with their dependencies, and a few GNU tools with the
# libraries they load, so workloads can run git, diff, rsync... against a real kernel mount,
# and util-linux's setpriv, to act as another user (busybox's setpriv cannot change ids).
#
# usage: build.sh [OUT]        OUT defaults to ${ASOF_VM_DIR:-$HOME/.cache/asof-linux-vm}
# result: OUT/vmlinuz and OUT/initrd.gz (plus OUT/kernel-deb/, the kernel package).
# A later run reuses them when OUT/stamp matches the guest sources (this directory) and the
# tools copied in; delete OUT to start over. Runs are serialised with flock on OUT/.lock.
#
# The programs this needs come from scripts/test-deps.sh; downloading the kernel needs apt.
# ASOF_VM_TOOLS overrides the tool list below.
set -euo pipefail
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
SRC=$(cd "$(dirname "$0")" && pwd)
OUT=${1:-${ASOF_VM_DIR:-$HOME/.cache/asof-linux-vm}}
TOOLS=${ASOF_VM_TOOLS:-git diff cmp tar cp mv find stat rsync sha256sum xargs setpriv}
BUSYBOX=/bin/busybox
# client modules the guest loads; their dependencies are found in modules.dep
MODULES="virtio_pci virtio_net nfsv3 9p 9pnet_fd"

say() { echo "guest-build: $*"; }
die() { echo "guest-build: $*" >&2; exit 1; }

for p in "$BUSYBOX" depmod cpio gzip ldd dpkg apt-get apt-cache flock sha256sum; do
  if [[ $p == /* ]]; then [ -x "$p" ] || die "missing $p (run scripts/test-deps.sh)"
  else command -v "$p" >/dev/null || die "missing $p (run scripts/test-deps.sh)"; fi
done

mkdir -p "$OUT"
cd "$OUT"
exec 9>"$OUT/.lock"
flock 9

# What the image is made of: a change to any of it means a rebuild.
stamp=$( {
  for f in "$SRC"/build.sh "$SRC"/init.sh "$SRC"/bin/*; do echo "== $(basename "$f")"; cat "$f"; done
  echo "== tools $TOOLS $MODULES"
  for t in $TOOLS; do p=$(command -v "$t") || die "no $t on this machine"; stat -L -c '%n %s %Y' "$p"; done
  stat -L -c '%n %s %Y' "$BUSYBOX"
} | sha256sum | cut -c1-32)
if [ -f vmlinuz ] && [ -f initrd.gz ] && [ "$(cat stamp 2>/dev/null)" = "$stamp" ]; then
  say "up to date: $OUT"
  exit 0
fi

# 1. The kernel: Debian's current linux-image-*-amd64 package, downloaded once into
#    kernel-deb/ and unpacked into kernel/ for the build only (unpacked it is ~400 MB).
deb=$(ls kernel-deb/linux-image-*.deb 2>/dev/null | head -n 1 || true)
if [ -z "$deb" ]; then
  pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
  if [ -z "$pkg" ]; then
    apt-get update -qq
    pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
  fi
  [ -n "$pkg" ] || die "cannot find Debian's kernel package (apt-cache depends linux-image-amd64)"
  say "downloading $pkg"
  rm -rf kernel-deb.tmp; mkdir kernel-deb.tmp
  # the -unsigned flavour is the same kernel without the secure-boot signature
  (cd kernel-deb.tmp && { apt-get download -qq "$pkg-unsigned" 2>/dev/null || apt-get download -qq "$pkg"; }) \
    || die "apt-get download $pkg failed"
  rm -rf kernel-deb; mv kernel-deb.tmp kernel-deb
  deb=$(ls kernel-deb/linux-image-*.deb | head -n 1)
fi
rm -rf kernel
dpkg -x "$deb" kernel
trap 'rm -rf "$OUT/kernel" "$OUT/root"' EXIT
kver=$(ls kernel/lib/modules | head -n 1)
md=kernel/lib/modules/$kver
[ -f "$md/modules.dep" ] || depmod -b kernel "$kver"

# 2. The root file system, assembled in root/ then packed as a newc cpio.
rm -rf root
mkdir -p root/bin root/usr/bin root/etc root/proc root/sys root/dev root/mnt root/tmp root/root root/lib/modules
cp "$BUSYBOX" root/bin/busybox
for applet in $("$BUSYBOX" --list); do
  [ "$applet" = busybox ] || ln -s busybox "root/bin/$applet"
done
mkdir -p root/usr/share/git-core/templates   # git init looks for it
echo 'root:x:0:0:root:/root:/bin/sh' > root/etc/passwd
echo 'root:x:0:' > root/etc/group

# 3. Client modules, dependencies first, listed in load order in /modules.list.
loaded=" "
order=()
add_module() { # path relative to $md
  local m=$1 dep
  case $loaded in *" $m "*) return 0;; esac
  for dep in $(awk -v m="$m:" '$1 == m { for (i = 2; i <= NF; i++) print $i }' "$md/modules.dep"); do
    add_module "$dep"
  done
  loaded+="$m "
  order+=("$m")
}
for name in $MODULES; do
  path=$(grep -oE "^[^:]*/$name\.ko(\.[a-z]+)?:" "$md/modules.dep" | tr -d : | head -n 1 || true)
  if [ -z "$path" ]; then
    grep -qE "/$name\.ko" "$md/modules.builtin" 2>/dev/null && continue
    die "module $name not found in $md"
  fi
  add_module "$path"
done
: > root/modules.list
for m in "${order[@]}"; do
  f=$(basename "$m")
  case $f in
    *.ko.xz) xz -dc "$md/$m" > "root/lib/modules/${f%.xz}"; f=${f%.xz};;
    *.ko.zst) zstd -qdc "$md/$m" > "root/lib/modules/${f%.zst}"; f=${f%.zst};;
    *.ko.gz) gzip -dc "$md/$m" > "root/lib/modules/${f%.gz}"; f=${f%.gz};;
    *) cp "$md/$m" root/lib/modules/;;
  esac
  echo "$f" >> root/modules.list
done

# 4. GNU tools from this machine, with their libraries. busybox sh runs its own applets
# before looking at PATH, so /usr/lib/gnu-tools.sh defines a function per tool that calls
# the GNU one by its path; init sources it before every workload.
: > root/usr/lib/gnu-tools.sh 2>/dev/null || { mkdir -p root/usr/lib; : > root/usr/lib/gnu-tools.sh; }
for t in $TOOLS; do
  p=$(command -v "$t")
  echo "$t() { /usr/bin/$t \"\$@\"; }" >> root/usr/lib/gnu-tools.sh
  cp -L "$p" root/usr/bin/
  for lib in $(ldd "$p" | grep -oE '/[^ ]+'); do
    [ -e "root$lib" ] && continue
    mkdir -p "root$(dirname "$lib")"
    cp -L "$lib" "root$lib"
  done
done

# 5. The guest's own programs: /init and the helpers a workload calls.
install -m 0755 "$SRC/init.sh" root/init
for f in "$SRC"/bin/*; do install -m 0755 "$f" "root/usr/bin/$(basename "$f")"; done

cp "kernel/boot/vmlinuz-$kver" vmlinuz.tmp
(cd root && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -1) > initrd.tmp
mv vmlinuz.tmp vmlinuz
mv initrd.tmp initrd.gz
echo "$kver" > kernel.version
echo "$stamp" > stamp
say "built $OUT/vmlinuz (Linux $kver) and $OUT/initrd.gz ($(du -h initrd.gz | cut -f1))"
