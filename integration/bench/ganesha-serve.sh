#!/bin/bash
# Runs Debian's nfs-ganesha (FSAL VFS) in the foreground, exporting a plain directory over
# NFSv3/TCP: the NFS comparison server. SIGTERM stops it.
# usage: ganesha-serve.sh EXPORT_DIR BIND_ADDR NFS_PORT MNT_PORT WORKDIR
# Needs a portmapper it can register with (ganesha aborts with "Cannot register NFS V3 on
# TCP" without one): nfs.sh starts `rpcbind -f`, which ganesha reaches through
# /run/rpcbind.sock, also from inside the VM harness's network namespace.
# - MNT_PORT must differ from NFS_PORT (on one port ganesha serves only MOUNT).
# - Nobody may change EXPORT_DIR behind ganesha's back (its cache then answers STALE).
# - No D-Bus: ganesha logs that at CRIT level and carries on.
set -euo pipefail
exp=$(realpath "$1") addr=$2 np=$3 mp=$4 w=$5
mkdir -p "$w"
cat > "$w/ganesha.conf" <<CONF
NFS_CORE_PARAM {
    Bind_Addr = $addr;
    NFS_Port = $np;
    MNT_Port = $mp;
    Protocols = 3;
    Enable_NLM = false;
    Enable_RQUOTA = false;
    Enable_UDP = false;
}
NFS_KRB5 { Active_krb5 = false; }
NFSV4 { Graceless = true; }
EXPORT {
    Export_Id = 1;
    Path = $exp;
    Pseudo = /export;
    Protocols = 3;
    Transports = TCP;
    Access_Type = RW;
    Squash = No_Root_Squash;
    SecType = sys;
    FSAL { Name = VFS; }
}
LOG { Default_Log_Level = EVENT; }
CONF
exec ganesha.nfsd -F -f "$w/ganesha.conf" -L "$w/ganesha.log" -p "$w/ganesha.pid"
