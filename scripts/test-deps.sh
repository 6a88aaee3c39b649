#!/bin/bash
# Installs what asof's tests need beyond Go modules: Debian packages for the
# end-to-end tests (integration/), and versitygw, the S3 server the volume tests
# run (internal/s3test).
# Idempotent: when every program below is already present apt-get is not run at all;
# otherwise `apt-get update` runs once and only the missing packages are installed.
# versitygw is built with `go install` (from the Go module proxy, about 75 s and
# 83 MB the first time) into $(go env GOBIN) or $(go env GOPATH)/bin, and skipped
# when it is already there or on PATH.
# Needs root (CI runs as root) only when a Debian package is missing.
#
# package            programs the tests use
#   libnfs-utils     nfs-ls nfs-cat nfs-cp        userspace NFSv3 client (libnfs)
#   diod             diodls diodcat               userspace 9P2000.L clients (and the diod server)
#   busybox-static   /bin/busybox                 the guest's userland (integration/vm)
#   kmod             depmod                       the guest's module dependency list
#   cpio             cpio                         the guest's initramfs
#   qemu-system-x86  qemu-system-x86_64           boots the guest kernel
#   iproute2         ip                           network namespace + tap for the guest
#   git rsync diffutils                           copied into the guest with their libraries
set -euo pipefail
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

# "package:program program ..." — a package is missing when any of its programs is.
wanted=(
  "libnfs-utils:nfs-ls nfs-cat nfs-cp"
  "diod:diodls diodcat diod"
  "busybox-static:/bin/busybox"
  "kmod:depmod"
  "cpio:cpio"
  "qemu-system-x86:qemu-system-x86_64"
  "iproute2:ip"
  "git:git"
  "rsync:rsync"
  "diffutils:diff cmp"
)

missing=()
for entry in "${wanted[@]}"; do
  pkg=${entry%%:*}
  for prog in ${entry#*:}; do
    if [[ $prog == /* ]]; then
      [ -x "$prog" ] && continue
    else
      command -v "$prog" >/dev/null 2>&1 && continue
    fi
    missing+=("$pkg")
    break
  done
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "test-deps: Debian packages all present"
elif [ "$(id -u)" -ne 0 ]; then
  echo "test-deps: missing ${missing[*]}; run this script as root to install them" >&2
  exit 1
else
  echo "test-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  echo "test-deps: installed ${missing[*]}"
fi

# versitygw: an S3 server (Apache-2.0) for the volume tests. Keep the version in
# step with internal/s3test.
versitygw=github.com/versity/versitygw/cmd/versitygw@v1.8.0
gobin=$(go env GOBIN)
[ -n "$gobin" ] || gobin="$(go env GOPATH | cut -d: -f1)/bin"
if [ -x "$gobin/versitygw" ] || command -v versitygw >/dev/null 2>&1; then
  echo "test-deps: versitygw present"
else
  echo "test-deps: building $versitygw into $gobin"
  # Outside any module, so that this repository's go.mod plays no part.
  (cd / && GOFLAGS=-mod=mod go install "$versitygw")
  echo "test-deps: installed $gobin/versitygw"
fi
