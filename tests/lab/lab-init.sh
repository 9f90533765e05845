#!/bin/bash
# lab-init.sh - the second stage of a lab VM's init (PID 1), run from the
# host's virtio-9p share (the image's /sbin/lab-stub-init mounts it on
# /lab and execs this). It sets up the few file systems and the network
# a cluster node needs and starts the guest agent (lab-agent.py) on the
# lab network; everything else (corosync, dlm_controld, mounts,
# clustermaild) is started by the test through the agent.
#
# Kernel command line: lab.node=vmN lab.ip=ADDR/PREFIX lab.probe=1 (print
# "lab-probe-ok" and power off: the host's KVM probe).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export LANG=C.UTF-8

node=vm0 ip='' probe=''
read -r -a words </proc/cmdline
for word in "${words[@]}"; do
	case $word in
	lab.node=*) node=${word#lab.node=} ;;
	lab.ip=*) ip=${word#lab.ip=} ;;
	lab.probe=1) probe=1 ;;
	esac
done
if [ -n "$probe" ]; then
	echo "lab-probe-ok" >/dev/console
	echo o >/proc/sysrq-trigger
	sleep 10
fi

say() { echo "lab-init[$node]: $*" >/dev/console; }

mkdir -p /dev/pts /dev/shm /dev/misc
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -o remount,rw /
[ -e /etc/mtab ] || ln -s /proc/self/mounts /etc/mtab
hostname "$node"
echo "$node" >/etc/hostname

# udev: device nodes and permissions as on a real node (dlm's misc
# devices), and the modules for the virtual hardware.
/lib/systemd/systemd-udevd --daemon >/dev/null 2>&1
udevadm trigger --action=add >/dev/null 2>&1
udevadm settle --timeout=30 >/dev/null 2>&1
for mod in virtio_net configfs dlm gfs2 ocfs2_stack_user nfsd; do
	modprobe "$mod" 2>/dev/null || say "no module $mod"
done
mount -t configfs configfs /sys/kernel/config || say "no configfs"

ip link set lo up
dev=$(ip -o link show | awk -F': ' '$2 != "lo" { print $2; exit }')
ip addr add "$ip" dev "$dev"
ip link set "$dev" up
{
	echo "127.0.0.1 localhost"
	for n in 1 2 3; do echo "${ip%.*/*}.$n vm$n"; done
	echo "${ip%.*/*}.254 labhost"
} >/etc/hosts
mkdir -p "/lab/out/$node"

say "up: $dev ${ip}, kernel $(uname -r)"
python3 /lab/tests/lab/lab-agent.py --listen "${ip%/*}" --port 7000 \
	>"/lab/out/$node/agent.log" 2>&1 &

# PID 1 reaps every orphan: bash's SIGCHLD handler waits for any child.
trap 'say "poweroff"; echo o >/proc/sysrq-trigger' TERM
while :; do
	sleep 3600 &
	wait $!
done
