#!/bin/sh
# /init of asof's test guest (built by build.sh, booted by integration/vm).
#
# The host adds /etc/asof-vm.conf (shell assignments) and, when the test has one, /workload.sh:
#   vm_ip=IP/PREFIX vm_server=IP
#   nfs_port nfs_export nfs_opts     mount NFSv3 on /mnt/nfs when nfs_port is set
#   p9_port p9_aname p9_opts         mount 9P2000.L on /mnt/9p when p9_port is set
#   together=1                       mount both, run the workload once (proto "both")
# The workload runs under busybox sh as:  workload.sh MOUNTPOINT nfs|9p
#                                   or:   workload.sh /mnt/nfs both /mnt/9p
# Console markers, one per line, read by the host:
#   GUEST-BOOTED KERNEL      GUEST-MOUNTED P        GUEST-MOUNT-FAIL P: ...
#   GUEST-PASS P             GUEST-FAIL P rc=N      GUEST-UMOUNT-FAIL P
#   GUEST-DONE rc=N          (last line; then the guest powers off)
#   GUEST: free text
export PATH=/usr/bin:/bin HOME=/root TERM=dumb PAGER=cat GIT_PAGER=cat LANG=C
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
# the host types replies to host-call/restart-server into the console: do not echo them
stty -echo < /dev/console 2>/dev/null
# (the firmware leaves the console mid-line: start a fresh one)
printf '\nGUEST-BOOTED %s\n' "$(uname -r)"
for m in $(cat /modules.list); do
  insmod "/lib/modules/$m" || echo "GUEST: insmod $m failed"
done

vm_ip=10.213.7.2/24 vm_server=10.213.7.1
nfs_port= nfs_export=/ nfs_opts= p9_port= p9_aname= p9_opts= together=0
[ -f /etc/asof-vm.conf ] && . /etc/asof-vm.conf
export ASOF_VM_SERVER=$vm_server

ip link set lo up
ip link set eth0 up
ip addr add "$vm_ip" dev eth0
echo "GUEST: network up: eth0 $vm_ip, server $vm_server"

rc=0
failed() { echo "GUEST: dmesg:"; dmesg | tail -n 15 | sed 's/^/GUEST:   /'; }

mount_nfs() {
  mkdir -p /mnt/nfs
  o=nfsvers=3,proto=tcp,port=$nfs_port,mountport=$nfs_port,mountproto=tcp,nolock,addr=$vm_server,mountaddr=$vm_server${nfs_opts:+,$nfs_opts}
  if mount -t nfs -o "$o" "$vm_server:$nfs_export" /mnt/nfs; then
    echo "GUEST-MOUNTED nfs $vm_server:$nfs_export -o $o"
  else
    echo "GUEST-MOUNT-FAIL nfs: mount -t nfs -o $o $vm_server:$nfs_export"; failed; rc=1; return 1
  fi
}
mount_9p() {
  mkdir -p /mnt/9p
  o=trans=tcp,port=$p9_port,version=9p2000.L,msize=262144${p9_aname:+,aname=$p9_aname}${p9_opts:+,$p9_opts}
  if mount -t 9p -o "$o" "$vm_server" /mnt/9p; then
    echo "GUEST-MOUNTED 9p $vm_server -o $o"
  else
    echo "GUEST-MOUNT-FAIL 9p: mount -t 9p -o $o $vm_server"; failed; rc=1; return 1
  fi
}
# workload PROTO ARGS...: runs /workload.sh ARGS (or lists the mount) and reports for PROTO
workload() {
  p=$1; shift
  cd /
  if [ -f /workload.sh ]; then
    # GNU tools by name, not busybox's applets (see build.sh).
    sh -c '. /usr/lib/gnu-tools.sh; . /workload.sh' workload "$@"; wrc=$?
  else
    ls -la "$1"; wrc=$?
  fi
  cd /
  if [ $wrc -eq 0 ]; then echo "GUEST-PASS $p"; else echo "GUEST-FAIL $p rc=$wrc"; rc=1; fi
}
unmount() { # proto mountpoint
  umount "$2" || { echo "GUEST-UMOUNT-FAIL $1"; failed; rc=1; }
}

if [ "$together" = 1 ]; then
  if mount_nfs; then
    if mount_9p; then
      workload both /mnt/nfs both /mnt/9p
      unmount 9p /mnt/9p
    fi
    unmount nfs /mnt/nfs
  fi
else
  if [ -n "$nfs_port" ] && mount_nfs; then
    workload nfs /mnt/nfs nfs
    unmount nfs /mnt/nfs
  fi
  if [ -n "$p9_port" ] && mount_9p; then
    workload 9p /mnt/9p 9p
    unmount 9p /mnt/9p
  fi
fi
sync
echo "GUEST-DONE rc=$rc"
poweroff -f
