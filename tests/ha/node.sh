#!/bin/bash
# node.sh - one node of the host failover test (see check-ha.sh): runs as
# process 1 of a fresh PID, mount and UTS namespace inside the node's network
# namespace, gives the node private state, then starts corosync and pacemaker.
#
# usage: node.sh WORKDIR NODENAME
#   WORKDIR/NODENAME/corosync.conf and authkey: this node's corosync config
#   WORKDIR/ocf: OCF provider directories to add (e.g. clustermail/)
#   WORKDIR/NODENAME/: logs (corosync.log, pacemaker.log, node.log)
#
# Everything this script mounts lives in its own mount namespace, so it all
# disappears with the namespace: killing this process (SIGKILL from the host)
# kills every process of the node, like pulling its power cord.
set -eu
work=$1
node=$2
dir=$work/$node

hostname "$node"

# Private state: the nodes must not share any pacemaker or corosync file,
# nor the libqb shared-memory ring buffers in /dev/shm.
for d in /run /dev/shm /var/lib/pacemaker /var/lib/corosync \
	/var/log/pacemaker /var/log/cluster /var/log/corosync; do
	mkdir -p "$d"
	mount -t tmpfs -o mode=0755 "ha-$node" "$d"
done
chmod 1777 /dev/shm
mkdir -p /run/lock /run/resource-agents /run/crm
chmod 1777 /run/lock
for d in cib pengine blackbox cores; do
	mkdir -p "/var/lib/pacemaker/$d"
done
chown -R hacluster:haclient /var/lib/pacemaker /var/log/pacemaker /run/crm
chmod 0750 /var/lib/pacemaker/cib /var/lib/pacemaker/pengine \
	/var/lib/pacemaker/blackbox /var/lib/pacemaker/cores

# A first CIB that only shortens the wait for the first DC election
# (dc-deadtime, 20 s by default); the recipe replaces it.
if [ -f "$work/seed-cib.xml" ]; then
	install -o hacluster -g haclient -m 0600 "$work/seed-cib.xml" \
		/var/lib/pacemaker/cib/cib.xml
fi

mkdir -p /run/ha-etc-corosync
cp "$dir/corosync.conf" "$dir/authkey" /run/ha-etc-corosync/
chmod 0400 /run/ha-etc-corosync/authkey
mount --bind /run/ha-etc-corosync /etc/corosync

# Extra OCF providers (the clustermail agent) without touching the host's
# /usr/lib/ocf: an overlay with the test's providers on top.
if [ -d "$work/ocf" ]; then
	mount -t overlay "ha-ocf-$node" \
		-o "lowerdir=$work/ocf:/usr/lib/ocf/resource.d" /usr/lib/ocf/resource.d
fi

export PCMK_logfile="$dir/pacemaker.log"
export PCMK_debug=no
export PCMK_stderr=no

corosync -f >>"$dir/corosync.out" 2>&1 &
for _ in $(seq 1 100); do
	corosync-cfgtool -s >/dev/null 2>&1 && break
	sleep 0.1
done
pacemakerd >>"$dir/pacemakerd.out" 2>&1 &

# Process 1 of the namespace: reap orphans until killed.
while :; do
	wait || true
	sleep 1
done
