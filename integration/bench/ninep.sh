#!/bin/bash
# 9P2000.L benchmark: asof against diod (Debian's, exporting a plain directory), one after
# the other on this machine, through the same client, on the same disk. Prints a table with
# the ratio.
#
#   integration/bench/ninep.sh          (as root: installs what it needs from Debian)
#
# The client is the Linux kernel's v9fs (trans=tcp, msize=262144, default cache mode) in a
# qemu guest booted by the project's VM harness (integration/vm, through vmrun/), running
# vm-workload.sh: dd of BENCH_MIB MiB in 1 MiB blocks (conv=fsync; data that no store can
# deduplicate), dd back to /dev/null after dropping the guest's caches, then create, stat
# and remove BENCH_FILES files. diod grants at most msize=65536 to any client, so the dd
# runs are repeated with msize=65536 asked of both ("v9fs msize=64K" rows).
#
# Environment (defaults in brackets):
#   BENCH_MIB [1024]  BENCH_FILES [10000]  BENCH_ROUNDS [1]: with more, asof and diod
#   alternate and the table keeps each one's best   BENCH_KVM [0]: 1 boots the guest with KVM
#   BENCH_WORK: work directory (default: a new /tmp/asof-bench.XXXXXX; logs stay there)
#   ASOF_BIN: an asof binary to test instead of building this checkout
#   BENCH_ASOF_ENV: "VAR=value ..." added to asof's environment (a binary that knows
#   exports.squash gets ASOF_EXPORTS_SQUASH=none without being told: diod acts as root for root)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BENCH_MIB=${BENCH_MIB:-1024} BENCH_FILES=${BENCH_FILES:-10000} BENCH_ROUNDS=${BENCH_ROUNDS:-1}
WORK=${BENCH_WORK:-$(mktemp -d /tmp/asof-bench.XXXXXX)}
mkdir -p "$WORK"
chmod 755 "$WORK" # mktemp's 0700 would keep diod's first attach (as "nobody") out of the export
RESULTS=$WORK/results; : > "$RESULTS"

cleanup() {
  stop_all
  rm -rf "$WORK"/vm-asof-data* "$WORK"/vm-diod-export*
}
trap cleanup EXIT
trap 'exit 130' INT TERM

apt_install diod
vm_deps
build_asof
build_vmrun
vm_accel
log "work directory $WORK; asof binary $ASOF_BIN"
# diod serves each attach as its user and the guest runs as root: asof squashes nobody either
ASOF_ENV_ARGS=()
mapfile -t asof_env < <(asof_env_for "$ASOF_BIN" "${BENCH_ASOF_ENV:-}")
for e in "${asof_env[@]}"; do ASOF_ENV_ARGS+=(-env "$e"); done
log "asof environment: ${asof_env[*]:-(none)}"

cat > "$WORK/bench.conf" <<EOF
BENCH_TESTS="data meta"
BENCH_MIB=$BENCH_MIB
BENCH_FILES=$BENCH_FILES
EOF

# The data run again with msize=65536 asked for: diod grants at most 64 KiB whatever the
# client asks, asof the 256 KiB the harness asks; this compares the two at one message size.
sed 's/^BENCH_TESTS=.*/BENCH_TESTS="data"/' "$WORK/bench.conf" > "$WORK/bench-data.conf"

asof_9p() { # asof_9p PREFIX CONF [VMRUN-ARGS...]
  local prefix=$1 conf=$2; shift 2
  mkdir -p "$WORK/vm-asof-data-r$ROUND"
  vm_bench asof "$prefix" "$conf" -9p-port 5640 "$@" \
    -env ASOF_DATA="$WORK/vm-asof-data-r$ROUND" -env ASOF_NFS_LISTEN= \
    -env ASOF_NINEP_LISTEN=@HOST@:5640 -env ASOF_CONTROL_SOCKET="$WORK/v.sock" \
    -env ASOF_EXPORTS_ALLOW=@GUESTNET@ "${ASOF_ENV_ARGS[@]}" -- "${ASOF_ENV_CLEAN[@]}" "$ASOF_BIN" serve
  rm -rf "$WORK/vm-asof-data-r$ROUND"
}
diod_9p() { # diod_9p PREFIX CONF [VMRUN-ARGS...]
  local prefix=$1 conf=$2; shift 2
  mkdir -p "$WORK/vm-diod-export-r$ROUND"
  # no authentication (-n), in the foreground, logging to stderr (the harness keeps it)
  vm_bench diod "$prefix" "$conf" -9p-port 5640 -9p-aname "$WORK/vm-diod-export-r$ROUND" "$@" -- \
    diod -f -n -d 0 -L stderr -e "$WORK/vm-diod-export-r$ROUND" -l @HOST@:5640
  rm -rf "$WORK/vm-diod-export-r$ROUND"
}

for ROUND in $(seq "$BENCH_ROUNDS"); do
  asof_9p v9fs "$WORK/bench.conf"
  diod_9p v9fs "$WORK/bench.conf"
  asof_9p "v9fs msize=64K" "$WORK/bench-data.conf" -9p-opts msize=65536
  diod_9p "v9fs msize=64K" "$WORK/bench-data.conf" -9p-opts msize=65536
done

echo
echo "9P2000.L: asof vs diod $(dpkg-query -W -f='${Version}' diod) ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, rounds: $BENCH_ROUNDS)"
echo "client = Linux $(cat "${ASOF_VM_DIR:-$HOME/.cache/asof-linux-vm}/kernel.version" 2>/dev/null || echo guest) v9fs (trans=tcp, access=client) in the VM harness, asking msize=262144 (diod grants 65536, asof 262144) or, in the msize=64K rows, 65536; ratio = asof / diod (higher is better for asof)"
print_table diod
