#!/bin/bash
# guest.sh - the lab's steps inside a VM (run through lab-agent.py by
# run-lab.sh). Everything a node needs is written here, from the node's
# name and address (lab-init.sh set the hostname): corosync.conf,
# dlm.conf, clustermail.conf.
#
# usage: guest.sh STEP [ARGS]   (see the case at the bottom)
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
node=$(hostname)
out=/lab/out/$node
bin=/lab/bin
mnt=/srv/clustermail
conf=/etc/clustermail/clustermail.conf
net=10.77.0
mkdir -p "$out"

# wait_for SECONDS COMMAND... - retry COMMAND every 0.5 s until it succeeds
wait_for() {
	local end=$(( $(date +%s) + $1 ))
	shift
	until "$@" >/dev/null 2>&1; do
		[ "$(date +%s)" -ge "$end" ] && return 1
		sleep 0.5
	done
}

# corosync_start [LOG] - corosync.conf for the three VMs; start corosync
# and wait until the cluster is quorate. Logs to $out/LOG.log (corosync).
corosync_start() {
	getent passwd clustermail >/dev/null ||
		useradd --system --uid 990 --home-dir /nonexistent --shell /usr/sbin/nologin clustermail
	mkdir -p /etc/corosync /etc/dlm /var/log/cluster /var/lib/corosync
	cat >/etc/corosync/corosync.conf <<CONF
# The lab cluster: three VMs on one bridge. Timeouts are generous:
# the VMs may run under software emulation.
totem {
	version: 2
	cluster_name: labcluster
	transport: knet
	crypto_cipher: none
	crypto_hash: none
	token: 5000
}
nodelist {
$(for n in 1 2 3; do printf '\tnode {\n\t\tring0_addr: %s\n\t\tname: vm%s\n\t\tnodeid: %s\n\t}\n' "$net.$n" "$n" "$n"; done)
}
quorum {
	provider: corosync_votequorum
}
# clustermaild joins its CPG group as mail_user
uidgid {
	uid: clustermail
}
logging {
	to_logfile: yes
	logfile: $out/${1:-corosync}.log
	to_syslog: no
	to_stderr: no
	timestamp: on
}
CONF
	corosync >"$out/${1:-corosync}.out" 2>&1 || { cat "$out/${1:-corosync}.out"; return 1; }
	wait_for 120 sh -c 'corosync-quorumtool -s | grep -q "Quorate: *Yes"' || {
		corosync-quorumtool -s
		return 1
	}
}

# cluster_start - corosync, then dlm_controld on its own (no Pacemaker),
# fencing through lab-fence.sh
cluster_start() {
	corosync_start || return 1
	# Fencing: every node's dlm_controld fences a failed node through
	# lab-fence.sh, which asks the host to SIGKILL that VM's qemu.
	cat >/etc/dlm/dlm.conf <<CONF
log_debug=1
debug_logfile=1
protocol=tcp
fence_all /lab/tests/lab/lab-fence.sh
CONF
	dlm_controld >"$out/dlm_controld.out" 2>&1 || return 1
	wait_for 60 dlm_tool status || { dlm_tool status; return 1; }
	sleep 1
	dlm_tool status >/dev/null || { cat "$out/dlm_controld.out"; return 1; }
	echo "$node: corosync quorate, dlm_controld up"
}

# pcmk_start - test (f): corosync, then Pacemaker (pacemakerd starts its
# daemons; dlm_controld is started later by ocf:pacemaker:controld and
# fences through Pacemaker with its default agent, dlm_stonith). Installs
# the lab's fence agent and the clustermail OCF agent where Pacemaker
# looks for them. Logs: $out/pcmk-corosync.log, $out/syslog (what goes to
# syslog: clustermaild once detached, the resource agents), and
# pacemaker.log, copied from the VM by pcmk-logs.
pcmk_start() {
	local d
	# a syslog for the daemons that detach: lines to $out/syslog
	rm -f /dev/log
	python3 -c '
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("/dev/log")
os.chmod("/dev/log", 0o666)   # daemons that dropped root log too
with open(sys.argv[1], "ab", 0) as f:
    while True:
        f.write(s.recv(65536).rstrip(b"\n") + b"\n")' "$out/syslog" \
		>/dev/null 2>&1 </dev/null &
	corosync_start pcmk-corosync || return 1
	# dlm_controld (started by the controld agent) reads this; without a
	# fence device here it uses dlm_stonith, i.e. Pacemaker's fencing.
	cat >/etc/dlm/dlm.conf <<CONF
log_debug=1
debug_logfile=1
protocol=tcp
CONF
	install -m 0755 /lab/fence_lab /usr/sbin/fence_lab
	mkdir -p /usr/lib/ocf/resource.d/clustermail
	install -m 0755 /lab/pacemaker/clustermail /usr/lib/ocf/resource.d/clustermail/clustermail
	mkdir -p /run/crm /run/resource-agents /run/lock /var/log/pacemaker
	for d in cib pengine blackbox cores; do
		mkdir -p "/var/lib/pacemaker/$d"
	done
	chown -R hacluster:haclient /var/lib/pacemaker /var/log/pacemaker /run/crm
	# The first CIB only shortens the wait for the first DC election
	# (dc-deadtime); ha/cluster-setup's configuration replaces it.
	cat >/var/lib/pacemaker/cib/cib.xml <<'XML'
<cib validate-with="pacemaker-3.0" admin_epoch="0" epoch="1" num_updates="0">
  <configuration>
    <crm_config>
      <cluster_property_set id="cib-bootstrap-options">
        <nvpair id="cib-bootstrap-options-dc-deadtime" name="dc-deadtime" value="5s"/>
      </cluster_property_set>
    </crm_config>
    <nodes/>
    <resources/>
    <constraints/>
  </configuration>
  <status/>
</cib>
XML
	chown hacluster:haclient /var/lib/pacemaker/cib/cib.xml
	chmod 0600 /var/lib/pacemaker/cib/cib.xml
	PCMK_logfile=/var/log/pacemaker/pacemaker.log PCMK_stderr=no \
		setsid pacemakerd >"$out/pacemakerd.out" 2>&1 </dev/null &
	wait_for 120 crm_mon --one-shot || {
		cat "$out/pacemakerd.out"
		return 1
	}
	echo "$node: corosync quorate, pacemaker up"
}

# pcmk_logs - copy Pacemaker's and dlm_controld's logs to $out
pcmk_logs() {
	cp /var/log/pacemaker/pacemaker.log "$out/pacemaker.log" 2>/dev/null
	cp /var/log/dlm_controld/dlm_controld.log "$out/pcmk-dlm_controld.log" 2>/dev/null
	return 0
}

# vm_shutdown - stop what a test left running, in order (clustermaild, the
# mounts, dlm_controld, corosync) before the VM is powered off; bounded
# by the caller's timeout
vm_shutdown() {
	local i name names
	cm_stop
	umount /srv/nfsmail /srv/ocfs2 "$mnt" 2>/dev/null
	# A lockspace can be left behind with nobody using it (seen after
	# the torture test, which SIGKILLs processes that joined it as
	# creators); dlm_controld then ignores the stop ("shutdown ignored,
	# active lockspaces"). Leave them.
	for i in 1 2 3 4 5; do
		names=$(dlm_tool ls 2>/dev/null | awk '$1 == "name" { printf "%s ", $2 }')
		[ -n "$names" ] || break
		[ "$i" = 1 ] && echo "$node: leaving lockspaces left behind: $names"
		for name in $names; do
			dlm_tool leave "$name" >/dev/null 2>&1
		done
	done
	pkill -x dlm_controld
	if ! wait_for 20 sh -c '! pgrep -x dlm_controld'; then
		# Stopping corosync now would look like a failure to the other
		# nodes' dlm_controld, which would fence this one: leave it to
		# the power-off.
		echo "$node: dlm_controld does not stop; lockspaces: $(dlm_tool ls | awk '$1 == "name" { print $2 }')"
		return 1
	fi
	corosync-cfgtool -H >/dev/null 2>&1
	wait_for 20 sh -c '! pgrep -x corosync'
	echo "$node: stopped: $(findmnt -n -t gfs2,ocfs2,nfs4 | wc -l) cluster mounts, corosync $(pgrep -x corosync >/dev/null && echo running || echo stopped)"
}

gfs2_mkfs() {
	mkfs.gfs2 -O -p lock_dlm -t labcluster:mail -j 3 -J 16 /dev/vdb
}

# gfs2_prepare SPOOL - on a GFS2 that no node has mounted (right after
# mkfs): mount it here alone without cluster locking, create the spool
# directory for clustermail, unmount it. Pacemaker mounts it later.
gfs2_prepare() {
	mkdir -p "$mnt"
	mount -t gfs2 -o lockproto=lock_nolock /dev/vdb "$mnt" || return 1
	mkdir -p "$1"
	chown clustermail "$1"
	umount "$mnt"
}

gfs2_mount() {
	mkdir -p "$mnt"
	mount -t gfs2 -o noatime /dev/vdb "$mnt" || return 1
	findmnt "$mnt"
}

# ocfs2_mkfs - OCFS2 on the second shared disk, user stack (dlm_controld)
ocfs2_mkfs() {
	mkfs.ocfs2 -q -F --cluster-stack=pcmk --cluster-name=labcluster -N 3 \
		-J size=16M -L labocfs2 /dev/vdc
}

ocfs2_mount() {
	mkdir -p /srv/ocfs2
	# the user stack (ocfs2_stack_user: the fs/dlm with dlm_controld);
	# mount.ocfs2 (libo2cb) also checks the node manager's interface
	# revision (/sys/fs/o2cb) and configfs "cluster", even on this stack:
	# without ocfs2_nodemanager it fails with "Unable to access cluster
	# service while trying initialize cluster"
	modprobe ocfs2_stack_user
	modprobe ocfs2_nodemanager
	echo pcmk >/sys/fs/ocfs2/cluster_stack || return 1
	mount -t ocfs2 -o noatime /dev/vdc /srv/ocfs2 || { dmesg | tail -5; return 1; }
	findmnt -n -o SOURCE,FSTYPE /srv/ocfs2
}

# nfs_server - export /srv/nfs with the kernel NFS server, NFSv4 only,
# with short lease and grace times (the VMs are slow enough)
nfs_server() {
	mkdir -p /srv/nfs /var/lib/nfs/v4recovery
	mountpoint -q /proc/fs/nfsd || mount -t nfsd nfsd /proc/fs/nfsd || return 1
	# A short grace period (new locks wait for it after nfsd starts);
	# the lease stays long (60 s): a client whose renewal is late under
	# emulation would otherwise lose its locks to the other one while its
	# processes still write under them.
	echo 60 >/proc/fs/nfsd/nfsv4leasetime
	echo 10 >/proc/fs/nfsd/nfsv4gracetime
	echo "/srv/nfs $net.0/24(rw,sync,no_subtree_check,no_root_squash,fsid=1)" >/etc/exports
	exportfs -ra || return 1
	rpc.mountd -N 3 >"$out/mountd.out" 2>&1
	rpc.nfsd -N 3 4 || return 1
	echo "$node: exporting /srv/nfs (NFSv4)"
}

# nfs_mount SERVER - mount SERVER:/srv/nfs on /srv/nfsmail (4.2, hard)
nfs_mount() {
	mkdir -p /srv/nfsmail
	mount -t nfs4 -o vers=4.2,hard,proto=tcp "$1:/srv/nfs" /srv/nfsmail || return 1
	findmnt -n -o SOURCE,FSTYPE,OPTIONS /srv/nfsmail | cut -c1-90
}

# cm_config BACKEND SPOOL [pacemaker] - write clustermail.conf (the same
# on every node: one [node vmN] section each) and the mail user. With
# "pacemaker" (test f): the listeners on every address (a VIP that
# Pacemaker moves here is served at once), example.com as a local domain
# too (tests/ha/ha_client.py's), and the spool is not created (it is on
# the GFS2 that Pacemaker mounts; gfs2-prepare made it).
cm_config() {
	local backend=$1 spool=$2 mode=${3:-} n
	getent passwd clustermail >/dev/null ||
		useradd --system --uid 990 --home-dir /nonexistent --shell /usr/sbin/nologin clustermail
	mkdir -p /etc/clustermail /run/clustermail
	chown clustermail /run/clustermail
	install -m 0600 -o clustermail /lab/tls.key /etc/clustermail/tls.key
	install -m 0644 /lab/tls.crt /etc/clustermail/tls.crt
	{
		cat <<CONF
# clustermail in the lab: nodes vm1..vm3 on one shared spool
spool_dir = $spool
lock_backend = $backend
users_file = $spool/../users
control_socket = /run/clustermail/%n.sock
pid_file = /run/clustermail/%n.pid
tls_cert = /etc/clustermail/tls.crt
tls_key = /etc/clustermail/tls.key
mail_user = clustermail
local_domains = lab.test${mode:+ example.com}
trusted_networks = 127.0.0.0/8 $net.0/24
log_target = stderr
log_level = info
auth_failure_delay = 0
relayhost = [$net.254]:2525
queue_retry_initial = 1s
queue_scan_interval = 1s
CONF
		if [ "$mode" = pacemaker ]; then
			cat <<CONF
listen_imap = 0.0.0.0:143
listen_pop3 = 0.0.0.0:110
listen_smtp = 0.0.0.0:25
listen_lmtp = 0.0.0.0:24
CONF
			for n in 1 2 3; do
				printf '\n[node vm%s]\nmetrics_listen = %s:9100\nsmtp_hostname = vm%s.lab.test\n' \
					"$n" "$net.$n" "$n"
			done
		else
			for n in 1 2 3; do
				cat <<CONF

[node vm$n]
listen_imap = $net.$n:143
listen_pop3 = $net.$n:110
listen_smtp = $net.$n:25
listen_lmtp = $net.$n:24
metrics_listen = $net.$n:9100
smtp_hostname = vm$n.lab.test
CONF
			done
		fi
	} >"$conf"
	[ "$mode" = pacemaker ] && return 0
	mkdir -p "$spool"
	chown clustermail "$spool"
}

cm_start() {
	"$bin/clustermaild" -c "$conf" --node "$node" --foreground \
		>>"$out/clustermaild.log" 2>&1 </dev/null &
	wait_for 60 "$bin/clustermailctl" -c "$conf" --node "$node" status || {
		tail -20 "$out/clustermaild.log"
		return 1
	}
	echo "$node: clustermaild up"
}

cm_stop() {
	local pid
	pid=$(cat "/run/clustermail/$node.pid" 2>/dev/null) || return 0
	kill "$pid" 2>/dev/null
	wait_for 30 sh -c "! kill -0 $pid" || kill -KILL "$pid"
}

cm_useradd() {
	printf '%s\n' "$2" | "$bin/clustermailctl" -c "$conf" --node "$node" \
		user add "$1" --password-stdin
}

ctl() {
	"$bin/clustermailctl" -c "$conf" --node "$node" "$@"
}

# torture_start SPOOL DIR SEGMENT SECONDS SEED BACKEND - one torture
# process in the background until SECONDS from now; its exit status goes
# to DIR/NODE.SEGMENT.status
torture_start() {
	local spool=$1 dir=$2 s=$3 secs=$4 seed=$5 backend=$6 opt=()
	mkdir -p "$dir/journal" "$dir/logs"
	# fcntl is torture's own default (and older builds know no option)
	[ "$backend" = fcntl ] || opt=(--lock-backend "$backend")
	# the host's LAB_TORTURE_DEBUG: the store's debug lines in the logs
	[ -e /lab/torture-debug ] && opt+=(--debug)
	(
		"$bin/torture" --run --spool "$spool" \
			--users alice@torture.test,bob@torture.test --node "$node" \
			--journal "$dir/journal/$node.$s.log" \
			--deadline $(( $(date +%s) + secs )) --seed "$seed" \
			--compact-bytes 16384 "${opt[@]}" \
			2>"$dir/logs/$node.$s.err" &
		echo $! >/run/torture.pid
		wait $!
		echo $? >"$dir/status.$node.$s"
	) >/dev/null 2>&1 </dev/null &
	wait_for 5 test -s /run/torture.pid
}

# bounded SECONDS COMMAND... - run COMMAND; if it is still running after
# SECONDS, print where each of its threads waits (kernel stacks), kill it
# and fail
bounded() {
	local secs=$1 pid t end
	shift
	"$@" &
	pid=$!
	end=$(( $(date +%s) + secs ))
	while kill -0 "$pid" 2>/dev/null && [ "$(date +%s)" -lt "$end" ]; do
		sleep 0.5
	done
	if kill -0 "$pid" 2>/dev/null; then
		echo "$node: $1 still running after ${secs}s; its threads:"
		for t in /proc/"$pid"/task/*; do
			echo "-- thread ${t##*/} $(cat "$t/comm") wchan=$(cat "$t/wchan")"
			cat "$t/stack" 2>/dev/null
		done
		kill -KILL "$pid"	# no wait: it may be stuck in the kernel
		return 124
	fi
	wait "$pid"
}

# torture_tool MODE SPOOL DIR BACKEND - torture --init or --dump
torture_tool() {
	local mode=$1 spool=$2 dir=$3 backend=$4 opt=()
	mkdir -p "$dir/journal" "$dir/logs" "$spool"
	[ "$backend" = fcntl ] || opt=(--lock-backend "$backend")
	if [ "$mode" = init ]; then
		bounded 120 "$bin/torture" --init --spool "$spool" \
			--users alice@torture.test,bob@torture.test \
			--journal "$dir/journal/init.log" "${opt[@]}" \
			2>"$dir/logs/init.err" || { cat "$dir/logs/init.err"; return 1; }
	else
		bounded 300 "$bin/torture" --dump --spool "$spool" \
			--users alice@torture.test,bob@torture.test "${opt[@]}" \
			>"$dir/dump.txt" 2>"$dir/logs/dump.err" ||
			{ tail -20 "$dir/logs/dump.err"; return 1; }
	fi
}

torture_kill() {
	kill -KILL "$(cat /run/torture.pid)" 2>/dev/null
	rm -f /run/torture.pid
}

step=${1:-}
shift
case $step in
cluster-start) cluster_start ;;
pcmk-start) pcmk_start ;;
pcmk-logs) pcmk_logs ;;
shutdown) vm_shutdown ;;
gfs2-prepare) gfs2_prepare "$@" ;;
gfs2-mkfs) gfs2_mkfs ;;
gfs2-mount) gfs2_mount ;;
cm-config) cm_config "$@" ;;
cm-start) cm_start ;;
nfs-server) nfs_server ;;
ocfs2-mkfs) ocfs2_mkfs ;;
ocfs2-mount) ocfs2_mount ;;
nfs-mount) nfs_mount "$@" ;;
dmesg-save) dmesg >"$out/dmesg-$1.txt" 2>&1 ;;
cm-stop) cm_stop ;;
useradd) cm_useradd "$@" ;;
ctl) ctl "$@" ;;
torture-start) torture_start "$@" ;;
torture-kill) torture_kill ;;
torture-init) torture_tool init "$@" ;;
torture-dump) torture_tool dump "$@" ;;
*) echo "guest.sh: unknown step '$step'"; exit 2 ;;
esac
