#!/bin/bash
# run-lab.sh - the VM lab (make check-lab): three Debian 12 VMs under qemu
# with corosync, dlm_controld and GFS2 on one shared disk, clustermaild on
# each with lock_backend = dlm, and the tests that need a real cluster
# (see tests/lab/README).
#
# Steps: build (or reuse) the image; create a network namespace with a
# bridge and one tap per VM; boot the VMs (KVM if it boots a kernel,
# software emulation otherwise) with the shared raw disk and a virtio-9p
# share that carries the fresh binaries and these scripts; form the
# cluster; make and mount GFS2; then the tests. The last test (pacemaker)
# boots the VMs again and brings the cluster up under Pacemaker. Every
# VM, the namespace and the run directory are removed at the end, also on
# failure (the logs of a failed run are kept, without the disk images).
#
# Environment:
#   LAB_DIR      image cache and run directories (/var/tmp/clustermail-lab)
#   LAB_TESTS    tests to run (default: "protocol torture nfs fence ocfs2
#                pacemaker"; pacemaker always runs last, in a fresh boot)
#   LAB_ACCEL    kvm or tcg (default: probe KVM, fall back to tcg)
#   LAB_TORTURE_SECONDS  torture run time per file system (default 60)
#   LAB_KEEP     set: keep the run directory (logs) even on success
#   LAB_HOLD     set: stop after the bring-up until RUNDIR/release exists
#   LAB_FAILOVER_LIMIT  test (f): seconds from the kill until the VIP
#                answers IMAP on a survivor (default 120, for TCG)
#   LAB_TORTURE  torture binary (default: top_builddir's)
#   LAB_TORTURE_DEBUG  set: the torture processes log at debug level
#   top_builddir, top_srcdir: set by make check-lab
#
# Exit: 0 all passed, 1 a failure, 77 skipped (qemu cannot run here).
set -u -o pipefail

top_builddir=${top_builddir:-.}
top_srcdir=${top_srcdir:-.}
lab_src=$(cd "$top_srcdir/tests/lab" && pwd)
lab_dir=${LAB_DIR:-/var/tmp/clustermail-lab}
tests=${LAB_TESTS:-protocol torture nfs fence ocfs2 pacemaker}
failover_limit=${LAB_FAILOVER_LIMIT:-120}
torture_seconds=${LAB_TORTURE_SECONDS:-60}
torture_bin=${LAB_TORTURE:-$top_builddir/tests/torture/torture}
net=10.77.0
ns=cmlab$$
run=
result=1
failures=0
declare -A qemu_pid

skip() { echo "SKIP: $*"; result=77; exit 77; }

[ "$(id -u)" = 0 ] || skip "the lab needs root (network namespace, taps)"
command -v qemu-system-x86_64 >/dev/null ||
	skip "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)"
command -v ip >/dev/null || skip "no ip(8) (iproute2)"
command -v python3 >/dev/null || skip "no python3"
for b in src/daemon/clustermaild src/ctl/clustermailctl; do
	[ -x "$top_builddir/$b" ] || skip "$top_builddir/$b is not built"
done
[ -x "$torture_bin" ] || skip "$torture_bin is not built"

t0=$(date +%s)
t_step=$t0
# step TEXT - print how long the previous step took and start the next
step() {
	local now
	now=$(date +%s)
	echo "lab: [+$((now - t0))s, previous step $((now - t_step))s] $*"
	t_step=$now
}

# shellcheck disable=SC2317  # reached through the EXIT trap
cleanup() {
	local n
	for n in "${!qemu_pid[@]}"; do
		kill -KILL "${qemu_pid[$n]}" 2>/dev/null
	done
	for n in "${!qemu_pid[@]}"; do
		wait "${qemu_pid[$n]}" 2>/dev/null
	done
	[ -n "${fenced_pid:-}" ] && kill "$fenced_pid" 2>/dev/null && wait "$fenced_pid" 2>/dev/null
	[ -n "${sink_pid:-}" ] && kill "$sink_pid" 2>/dev/null && wait "$sink_pid" 2>/dev/null
	[ -n "${client_pid:-}" ] && kill "$client_pid" 2>/dev/null && wait "$client_pid" 2>/dev/null
	[ -n "${poll_pid:-}" ] && kill "$poll_pid" 2>/dev/null && wait "$poll_pid" 2>/dev/null
	ip netns del "$ns" 2>/dev/null
	if [ -n "$run" ]; then
		rm -f "$run"/*.img
		if [ "$result" = 0 ] && [ -z "${LAB_KEEP:-}" ]; then
			rm -rf "$run"
		else
			echo "lab: logs kept in $run (console logs: vmN.console, daemon logs: share/out/)"
		fi
	fi
	echo "lab: total $(( $(date +%s) - t0 ))s"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "image"
"$lab_src/build-image.sh"
case $? in
0) ;;
77) skip "cannot build the VM image here" ;;
*) echo "FAIL: building the VM image"; exit 1 ;;
esac
image=$lab_dir/image

mkdir -p "$lab_dir"
run=$(mktemp -d "$lab_dir/run.XXXXXX") || exit 1
share=$run/share
mkdir -p "$share/tests/lab" "$share/bin" "$share/out"
[ -n "${LAB_TORTURE_DEBUG:-}" ] && touch "$share/torture-debug"
cp "$lab_src"/*.sh "$lab_src"/*.py "$share/tests/lab/"
# test (f): the fence agent and the OCF agent, installed by pcmk-start
mkdir -p "$share/pacemaker"
cp "$lab_src/fence_lab" "$share/"
cp "$top_srcdir/pacemaker/clustermail" "$share/pacemaker/"
cp "$top_builddir/src/daemon/clustermaild" "$top_builddir/src/ctl/clustermailctl" \
	"$torture_bin" "$share/bin/"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
	-days 30 -subj /CN=lab.test -keyout "$share/tls.key" \
	-out "$share/tls.crt" 2>/dev/null || { echo "FAIL: openssl"; exit 1; }

# in_ns COMMAND... - run a command inside the lab's network namespace
in_ns() { ip netns exec "$ns" "$@"; }

# vm N COMMAND - run a shell command in vmN; its output, its status
vm() {
	local n=$1
	shift
	in_ns python3 "$lab_src/labctl.py" --timeout "${VM_TIMEOUT:-300}" "$net.$n" "$*"
}

# guest N STEP ARGS... - run a guest.sh step in vmN
guest() {
	local n=$1
	shift
	vm "$n" "/lab/tests/lab/guest.sh $*"
}

# all_guests STEP ARGS... - a guest.sh step on every running VM at once
all_guests() {
	local n pids=() status=0
	for n in "${vms[@]}"; do
		guest "$n" "$@" 2>&1 | sed "s/^/vm$n: /" &
		pids+=($!)
	done
	for n in "${!pids[@]}"; do
		wait "${pids[$n]}" || status=1
	done
	return $status
}

fail() {
	echo "FAIL: $*"
	failures=$((failures + 1))
}

step "network namespace $ns"
ip netns add "$ns" || { echo "FAIL: ip netns add"; exit 1; }
in_ns ip link set lo up
in_ns ip link add labbr0 type bridge
in_ns ip addr add "$net.254/24" dev labbr0
in_ns ip link set labbr0 up
for n in 1 2 3; do
	in_ns ip tuntap add dev "labtap$n" mode tap
	in_ns ip link set "labtap$n" master labbr0 up
done
# not through in_ns (a function: $! would be a subshell, and killing it
# would leave the server running): ip netns exec execs python3
ip netns exec "$ns" python3 "$lab_src/lab-fenced.py" --listen "$net.254" --rundir "$run" \
	>"$run/fenced.log" 2>&1 &
fenced_pid=$!

truncate -s 2G "$run/shared.img"
truncate -s 1G "$run/ocfs2.img"	# a second LUN, for test (d)

# qemu_cmd N ACCEL - the qemu command line of vmN
qemu_cmd() {
	local n=$1 accel=$2
	echo qemu-system-x86_64 -name "vm$n" -accel "$accel" -m 768 -smp 1 \
		-nographic -no-reboot -monitor none -serial "file:$run/vm$n.console" \
		-kernel "$image/vmlinuz" -initrd "$image/initrd.img" \
		-append "'root=/dev/vda rw console=ttyS0 init=/sbin/lab-stub-init quiet panic=-1 lab.node=vm$n lab.ip=$net.$n/24'" \
		-drive "file=$image/root.img,format=raw,if=none,id=root,snapshot=on" \
		-device virtio-blk-pci,drive=root \
		-drive "file=$run/shared.img,format=raw,if=none,id=san,cache=none,file.locking=off" \
		-device virtio-blk-pci,drive=san,share-rw=on \
		-drive "file=$run/ocfs2.img,format=raw,if=none,id=san2,cache=none,file.locking=off" \
		-device virtio-blk-pci,drive=san2,share-rw=on \
		-virtfs "local,path=$share,mount_tag=lab,security_model=none,id=lab" \
		-netdev "tap,id=net0,ifname=labtap$n,script=no,downscript=no" \
		-device "virtio-net-pci,netdev=net0,mac=52:54:00:77:00:0$n"
}

# Does KVM boot a kernel here? (/dev/kvm may exist and still hang.)
accel=${LAB_ACCEL:-}
if [ -z "$accel" ]; then
	step "KVM probe"
	accel=tcg
	if [ -w /dev/kvm ] && timeout 20 qemu-system-x86_64 -accel kvm -m 256 \
			-display none -no-reboot -monitor none -serial "file:$run/probe.console" \
			-kernel "$image/vmlinuz" -initrd "$image/initrd.img" \
			-append "root=/dev/vda ro console=ttyS0 init=/sbin/lab-stub-init quiet lab.probe=1" \
			-drive "file=$image/root.img,format=raw,if=virtio,snapshot=on" \
			-virtfs "local,path=$share,mount_tag=lab,security_model=none,id=lab" \
			>/dev/null 2>&1 && grep -q lab-probe-ok "$run/probe.console"; then
		accel=kvm
	fi
fi
# boot_vms - start vm1..vm3 and wait for their agents (exits on failure)
boot_vms() {
	local n vm_out
	vms=(1 2 3)
	for n in "${vms[@]}"; do
		# exec: the pid we record is qemu's own (ip netns exec execs it too)
		eval "exec ip netns exec $ns $(qemu_cmd "$n" "$accel")" >>"$run/vm$n.qemu.log" 2>&1 &
		qemu_pid[$n]=$!
		echo "${qemu_pid[$n]}" >"$run/vm$n.pid"
	done
	for n in "${vms[@]}"; do
		if ! vm_out=$(in_ns python3 "$lab_src/labctl.py" --wait 300 "$net.$n" "uname -r"); then
			echo "FAIL: vm$n did not come up; console:"
			tail -20 "$run/vm$n.console"
			exit 1
		fi
		echo "lab: vm$n up, kernel $vm_out"
	done
}

# stop_vms - stop the running VMs: clustermaild, the mounts, dlm_controld
# and corosync first (bounded: a node stuck in GFS2 recovery is then
# simply powered off), then qemu
stop_vms() {
	local n
	VM_TIMEOUT=60 all_guests shutdown
	for n in "${!qemu_pid[@]}"; do
		kill -TERM "${qemu_pid[$n]}" 2>/dev/null
	done
	for n in "${!qemu_pid[@]}"; do
		wait "${qemu_pid[$n]}" 2>/dev/null
		unset "qemu_pid[$n]"
	done
	vms=()
}

step "boot 3 VMs ($accel)"
boot_vms
# sync_clocks - the host's time in every VM (an emulated clock drifts;
# the torture journals of different VMs are compared)
sync_clocks() {
	local n
	for n in "${vms[@]}"; do
		vm "$n" "date -s @$(date +%s.%N) >/dev/null"
	done
}
sync_clocks

step "shared disk check"
vm 1 "echo lab-shared-$$ | dd of=/dev/vdb bs=4096 count=1 conv=sync oflag=direct 2>/dev/null"
for n in 2 3; do
	got=$(vm "$n" "dd if=/dev/vdb bs=4096 count=1 iflag=direct 2>/dev/null | head -c 20 | tr -d '\\0'")
	[ "$got" = "lab-shared-$$" ] || { echo "FAIL: vm$n does not see vm1's write on the shared disk ($got)"; exit 1; }
done

# The bring-up of every test but (f): corosync, dlm_controld on its own,
# GFS2 on vm1..vm3, clustermaild on each (not needed when only test (f)
# runs: it boots the VMs again and starts its own cluster).
dlm_tests=
for t in $tests; do
	[ "$t" = pacemaker ] || dlm_tests="$dlm_tests $t"
done
if [ -n "$dlm_tests" ]; then
	step "corosync + dlm_controld"
	all_guests cluster-start || { echo "FAIL: cluster start"; exit 1; }
	vm 1 "corosync-quorumtool -s | sed -n '/Quorate/p;/Nodes:/p'; dlm_tool status | head -3"

	step "GFS2 mkfs + mount on 3 nodes"
	guest 1 gfs2-mkfs >"$run/mkfs.log" 2>&1 || { cat "$run/mkfs.log"; echo "FAIL: mkfs.gfs2"; exit 1; }
	guest 1 gfs2-mount || { echo "FAIL: mount gfs2 on vm1"; exit 1; }
	vms=(2 3)
	all_guests gfs2-mount || { echo "FAIL: mount gfs2 on vm2/vm3"; exit 1; }
	vms=(1 2 3)
	vm 2 "echo from-vm2 >/srv/clustermail/hello"
	[ "$(vm 3 "cat /srv/clustermail/hello")" = from-vm2 ] ||
		{ echo "FAIL: vm3 does not see vm2's file on GFS2"; exit 1; }
	echo "lab: GFS2 mounted on vm1..vm3"

	step "clustermaild (lock_backend = dlm) on vm1..vm3"
	all_guests cm-config dlm /srv/clustermail/spool || { echo "FAIL: cm-config"; exit 1; }
	all_guests cm-start || { echo "FAIL: clustermaild did not start"; exit 1; }
	guest 1 useradd user1@lab.test labpass1 >/dev/null || { echo "FAIL: user add"; exit 1; }

	if [ -n "${LAB_HOLD:-}" ]; then
		echo "lab: holding; namespace $ns; touch $run/release to go on"
		while [ ! -e "$run/release" ]; do sleep 1; done
	fi
fi

# test_protocol - (b) LMTP on vm1, IMAP on vm2, IDLE on vm3
test_protocol() {
	step "test (b): cross-node protocol on GFS2 (dlm)"
	in_ns python3 "$lab_src/lab_protocol.py" --user user1@lab.test \
		--password labpass1 "$net.1" "$net.2" "$net.3" ||
		fail "protocol test on GFS2"
	test_lockspace_release
}

# lockspace_released N - wait (30 s at most) until vmN is no longer in the
# lockspace clustermail
lockspace_released() {
	local i
	for i in $(seq 30); do
		[ "$(vm "$1" "dlm_tool ls 2>/dev/null | awk '\$1 == \"name\" && \$2 == \"clustermail\"' | wc -l")" = 0 ] &&
			return 0
		sleep 1
	done
	return 1
}

# test_lockspace_release - the daemon drops root after creating the
# lockspace; its keeper process must still release it when the daemon
# stops cleanly, or dlm_controld cannot leave (a node put in standby would
# be fenced). A killed daemon's reference stays (see lock-dlm.c: releasing
# under a dead process's ring hangs); a restart after SIGKILL must work.
# Checked on vm1, which is then restarted.
test_lockspace_release() {
	step "test (b): vm1 leaves the lockspace when clustermaild stops; a restart after SIGKILL works"
	guest 1 cm-stop
	if lockspace_released 1; then
		echo "ok: lockspace clustermail released after a clean stop"
	else
		fail "vm1 still in lockspace clustermail after clustermaild stopped"
	fi
	guest 1 cm-start >/dev/null || { fail "clustermaild restart on vm1"; return; }
	vm 1 "kill -KILL \$(cat /run/clustermail/vm1.pid)"
	if guest 1 cm-start >/dev/null; then
		echo "ok: clustermaild restarted on vm1 after SIGKILL"
	else
		fail "clustermaild restart on vm1 after SIGKILL"
	fi
}

# test_torture LABEL SPOOL BACKEND N... - (a) the store torture test, one
# process per VM on the shared spool; every 4-8 s a random process is
# SIGKILLed and restarted (as in tests/torture/run-torture.sh); then
# torture --dump on the first VM and check-spool.py on the host.
test_torture() {
	local label=$1 spool=$2 backend=$3 n s victim end next status
	shift 3
	local nodes=("$@") gdir=/lab/out/torture-$label hdir=$share/out/torture-$label
	local seed=$(( (RANDOM << 15) | RANDOM )) kills=0 restarts=0
	local -A seg
	step "test (a): torture on $label ($backend), ${#nodes[@]} VMs, ${torture_seconds}s, seed $seed"
	if [ "$backend" = dlm ] && ! { "$torture_bin" 2>&1 || true; } | grep -q lock-backend; then
		fail "torture on $label: $torture_bin has no --lock-backend option (see README)"
		return
	fi
	sync_clocks
	guest "${nodes[0]}" torture-init "$spool" "$gdir" "$backend" ||
		{ fail "torture --init on $label"; return; }
	end=$(( $(date +%s) + torture_seconds ))
	for n in "${nodes[@]}"; do
		seg[$n]=1
		guest "$n" torture-start "$spool" "$gdir" 1 "$torture_seconds" \
			$((seed * 131 + n * 1009 + 1)) "$backend" ||
			{ fail "torture start on vm$n"; return; }
	done
	next=$(( $(date +%s) + 4 + RANDOM % 5 ))
	while [ $(( $(date +%s) + 3 )) -lt "$end" ]; do
		sleep 1
		for n in "${nodes[@]}"; do
			# died by itself: the checker fails it; restart it anyway
			if [ -e "$hdir/status.vm$n.${seg[$n]}" ]; then
				echo "vm$n.${seg[$n]} exit:$(cat "$hdir/status.vm$n.${seg[$n]}")" >>"$hdir/exits"
				seg[$n]=$(( ${seg[$n]} + 1 ))
				restarts=$((restarts + 1))
				guest "$n" torture-start "$spool" "$gdir" "${seg[$n]}" \
					$(( end - $(date +%s) )) $((seed * 131 + n * 1009 + seg[$n])) "$backend"
			fi
		done
		[ "$(date +%s)" -lt "$next" ] && continue
		victim=${nodes[RANDOM % ${#nodes[@]}]}
		guest "$victim" torture-kill
		echo "vm$victim.${seg[$victim]} killed" >>"$hdir/exits"
		kills=$((kills + 1))
		seg[$victim]=$(( ${seg[$victim]} + 1 ))
		guest "$victim" torture-start "$spool" "$gdir" "${seg[$victim]}" \
			$(( end - $(date +%s) )) $((seed * 131 + victim * 1009 + seg[$victim])) "$backend"
		next=$(( $(date +%s) + 4 + RANDOM % 5 ))
	done
	# the survivors stop at the deadline; one still running 90 s later hangs
	for n in "${nodes[@]}"; do
		s=$hdir/status.vm$n.${seg[$n]}
		while [ ! -e "$s" ] && [ "$(date +%s)" -lt $((end + 90)) ]; do
			sleep 1
		done
		if [ -e "$s" ]; then
			echo "vm$n.${seg[$n]} exit:$(cat "$s")" >>"$hdir/exits"
		else
			echo "lab: torture on vm$n hangs after the deadline; killing it"
			guest "$n" torture-kill
			echo "vm$n.${seg[$n]} hung" >>"$hdir/exits"
		fi
	done
	echo "lab: torture: $kills kills, $restarts unexpected restarts; dump and check"
	guest "${nodes[0]}" torture-dump "$spool" "$gdir" "$backend" ||
		{ fail "torture --dump on $label"; return; }
	python3 "$top_srcdir/tests/torture/check-spool.py" --journals "$hdir/journal" \
		--dump "$hdir/dump.txt" --exits "$hdir/exits" --logs "$hdir/logs" |
		tail -30
	status=$?
	if [ "$status" = 0 ]; then
		echo "PASS: torture on $label ($backend, ${#nodes[@]} VMs, $kills kills, seed $seed)"
	else
		fail "torture on $label (seed $seed; journals in $hdir)"
	fi
}

# test_fence - (c) vm3 is hard-killed (qemu SIGKILL) under LMTP load; a
# survivor's dlm_controld fences it through lab-fence.sh (the host
# confirms the qemu process is gone), DLM and GFS2 recover, and then:
# every acknowledged delivery is on both survivors exactly once, and the
# outbound mail queued on vm3 (held back by a closed relay until vm3 is
# dead) is delivered by a survivor exactly once.
test_fence() {
	local acked=$run/fence-acked sinklog=$run/sink.log flag=$run/sink-open
	local i mid waited n
	step "test (c): vm3 SIGKILLed under load; fencing, recovery, queue takeover"
	: >"$acked"
	: >"$sinklog"
	ip netns exec "$ns" python3 "$lab_src/lab_load.py" sink --listen "$net.254" --port 2525 \
		--log "$sinklog" --open-flag "$flag" >"$run/sink.out" 2>&1 &
	sink_pid=$!
	for i in 1 2 3 4 5; do
		printf 'From: user1@lab.test\nTo: out@remote.test\nMessage-ID: <queued-%s-%s@lab.test>\nSubject: queued %s\n\nqueued on vm3\n' \
			"$$" "$i" "$i" >"$share/queued-$i.eml"
		guest 3 ctl queue inject --from user1@lab.test out@remote.test \
			"</lab/queued-$i.eml" >/dev/null || { fail "queue inject on vm3"; return; }
	done
	in_ns python3 "$lab_src/lab_load.py" load --user user1@lab.test --seconds 45 \
		--acked "$acked" "$net.1" "$net.2" "$net.3" >"$run/load.out" 2>&1 &
	local load_pid=$!
	sleep 12
	echo "lab: SIGKILL vm3 (qemu pid ${qemu_pid[3]}) after $(wc -l <"$acked") deliveries"
	kill -KILL "${qemu_pid[3]}"
	wait "${qemu_pid[3]}" 2>/dev/null
	unset "qemu_pid[3]"
	vms=(1 2)
	waited=0
	until grep -q "fence 3 -> ok" "$run/fence.log" 2>/dev/null; do
		sleep 1
		waited=$((waited + 1))
		[ "$waited" -ge 120 ] && break
	done
	if grep -q "fence 3 -> ok" "$run/fence.log" 2>/dev/null; then
		echo "lab: vm3 fenced after ${waited}s: $(head -1 "$run/fence.log")"
	else
		fail "nobody fenced vm3 within 120s"
	fi
	VM_TIMEOUT=120 vm 1 "touch /srv/clustermail/after-fence && dlm_tool ls | grep -E 'name|members|change'" ||
		fail "GFS2 on vm1 is not usable after fencing"
	local before
	before=$(wc -l <"$acked")
	wait "$load_pid"
	echo "lab: $(( $(wc -l <"$acked") - before )) deliveries acknowledged by the survivors after the fencing"
	cat "$run/load.out"
	in_ns python3 "$lab_src/lab_load.py" verify --user user1@lab.test \
		--password labpass1 --acked "$acked" "$net.1" "$net.2" ||
		fail "acknowledged deliveries missing or duplicated after vm3 died"
	touch "$flag"
	guest 1 ctl queue flush >/dev/null
	waited=0
	while [ "$(sort -u "$sinklog" | grep -c '^<queued-')" -lt 5 ] && [ "$waited" -lt 90 ]; do
		sleep 1
		waited=$((waited + 1))
	done
	sleep 5	# a duplicate would come now
	n=0
	for i in 1 2 3 4 5; do
		mid="<queued-$$-$i@lab.test>"
		case $(grep -cxF "$mid" "$sinklog") in
		1) n=$((n + 1)) ;;
		0) fail "queued message $mid (vm3's) never delivered" ;;
		*) fail "queued message $mid delivered $(grep -cxF "$mid" "$sinklog") times" ;;
		esac
	done
	echo "lab: $n of 5 messages queued on vm3 delivered once by a survivor (${waited}s after the relay opened)"
	guest 1 ctl queue list
	kill "$sink_pid" 2>/dev/null
	wait "$sink_pid" 2>/dev/null
	sink_pid=
}

# cm_move BACKEND SPOOL - clustermaild on the VMs in vms moved to SPOOL
# with lock_backend BACKEND (stopped, configured, started)
cm_move() {
	all_guests cm-stop
	all_guests cm-config "$1" "$2" && all_guests cm-start
}

# cm_back_to_gfs2 - clustermaild (dlm) on the VMs in vms back on GFS2
cm_back_to_gfs2() {
	step "back to GFS2: clustermaild (dlm) on ${vms[*]/#/vm}"
	cm_move dlm /srv/clustermail/spool || fail "restarting clustermaild on GFS2"
}

# protocol_on LABEL - a user on the spool clustermaild uses now, and the
# protocol test over the VMs in vms
protocol_on() {
	local addrs=() n
	guest "${vms[0]}" useradd user1@lab.test labpass1 >/dev/null ||
		{ fail "user on $1"; return; }
	for n in "${vms[@]}"; do
		addrs+=("$net.$n")
	done
	in_ns python3 "$lab_src/lab_protocol.py" --user user1@lab.test \
		--password labpass1 "${addrs[@]}" || fail "protocol test on $1"
}

# test_nfs - (e) vm1 exports a directory with the kernel NFS server, vm2
# and vm3 mount it (NFSv4.2, hard) and run clustermaild with the fcntl
# backend there; then the protocol test and the torture test on it. The
# GFS2 daemons are restarted afterwards.
test_nfs() {
	step "test (e): NFSv4 (vm1 exports, vm2 + vm3 mount, fcntl backend)"
	guest 1 nfs-server || { fail "NFS server on vm1"; return; }
	vms=(2 3)
	all_guests nfs-mount "$net.1" || { fail "NFS mount"; vms=(1 2 3); return; }
	if ! cm_move fcntl /srv/nfsmail/spool; then
		fail "clustermaild on NFS"
		vms=(1 2 3)
		return
	fi
	protocol_on NFS
	test_torture nfs /srv/nfsmail/torture fcntl 2 3
	vms=(1 2 3)
	all_guests dmesg-save nfs	# NFS client and server messages, if any
	vms=(2 3)
	cm_back_to_gfs2
	vms=(1 2 3)
}

# test_ocfs2 - (d) OCFS2 on a second shared disk with the user cluster
# stack (corosync + dlm_controld, as for GFS2), mounted on every running
# VM; the torture test with the dlm backend on it, then clustermaild
# (dlm) on it for the protocol test; then back to GFS2
test_ocfs2() {
	step "test (d): OCFS2 on a second shared disk (${#vms[@]} VMs)"
	guest "${vms[0]}" ocfs2-mkfs >"$run/mkfs-ocfs2.log" 2>&1 ||
		{ cat "$run/mkfs-ocfs2.log"; fail "mkfs.ocfs2"; return; }
	if ! all_guests ocfs2-mount >"$run/mount-ocfs2.log" 2>&1; then
		cat "$run/mount-ocfs2.log"
		fail "OCFS2 mount"
		return
	fi
	test_torture ocfs2 /srv/ocfs2/torture dlm "${vms[@]}"
	step "test (d): clustermaild (dlm) on OCFS2, protocol test"
	if cm_move dlm /srv/ocfs2/spool; then
		protocol_on OCFS2
	else
		fail "clustermaild on OCFS2"
	fi
	cm_back_to_gfs2
}

# shellcheck disable=SC2317  # called through wait_until
# pcmk_mon N - crm_mon's XML, as vmN sees the cluster
pcmk_mon() {
	VM_TIMEOUT=60 vm "$1" "crm_mon --one-shot --output-as=xml" 2>/dev/null
}

# shellcheck disable=SC2317  # called through wait_until
# pcmk_online N COUNT - COUNT nodes online and a DC, as vmN sees it
pcmk_online() {
	pcmk_mon "$1" | python3 "$lab_src/lab_pcmk.py" online "$2" >"$run/pcmk/dc"
}

# shellcheck disable=SC2317  # called through wait_until
# pcmk_placed N - every clone started on every online node, each VIP on
# one node, nothing failed (as vmN sees it); the placement in pcmk/placement
pcmk_placed() {
	pcmk_mon "$1" | python3 "$lab_src/lab_pcmk.py" placed >"$run/pcmk/placement"
}

# shellcheck disable=SC2317  # called through wait_until
# pcmk_home - all placed, each VIP on its own node
pcmk_home() {
	pcmk_placed 1 && grep -qx 'vip1=vm1 vip2=vm2 vip3=vm3' "$run/pcmk/placement"
}

# shellcheck disable=SC2317  # called through wait_until
# pcmk_vip3_moved N - all placed on the survivors, vip3 not on vm3
pcmk_vip3_moved() {
	pcmk_placed "$1" && ! grep -q 'vip3=vm3' "$run/pcmk/placement"
}

# shellcheck disable=SC2317  # called through wait_until
# pcmk_all_on_vm1 - everything placed, every VIP on vm1 (vm2 in standby)
pcmk_all_on_vm1() {
	pcmk_placed 1 && grep -qx 'vip1=vm1 vip2=vm1 vip3=vm1' "$run/pcmk/placement"
}

# wait_until SECONDS COMMAND... - retry COMMAND every 2 s until it succeeds
wait_until() {
	local end=$(( $(date +%s) + $1 ))
	shift
	until "$@"; do
		[ "$(date +%s)" -ge "$end" ] && return 1
		sleep 2
	done
}

# pcmk_collect - the cluster's state and the logs of the running VMs into
# the run directory (kept when the run fails)
pcmk_collect() {
	local n
	for n in "${vms[@]}"; do
		vm "$n" "crm_mon --one-shot --show-detail --inactive --failcounts 2>&1" \
			>"$run/pcmk/crm_mon.vm$n.txt" 2>&1
		guest "$n" pcmk-logs
	done
}

# pcmk_fail TEXT - fail test (f), show the cluster as vm1 sees it
pcmk_fail() {
	fail "pacemaker: $*"
	pcmk_collect
	sed 's/^/  /' "$run/pcmk/crm_mon.vm${vms[0]}.txt" | head -60
}

# test_pacemaker - (f) the failover test of tests/ha/check-ha.sh on the
# real stack: a fresh boot of vm1..vm3; corosync and Pacemaker; the
# configuration written by ha/cluster-setup (dlm-clone, mailfs-clone on
# GFS2, clustermail-clone, one VIP per node, fencing with fence_lab); mail
# over SMTP to every VIP and read back over IMAP; then vm3's qemu is
# SIGKILLed under SMTP load: Pacemaker must fence it, DLM and GFS2
# recover, vip3 moves to a survivor and answers IMAP within
# failover_limit seconds, every acknowledged message is there exactly
# once through every VIP, and SMTP on vip3 accepts new mail.
test_pacemaker() {
	local client=$top_srcdir/tests/ha/ha_client.py d=$run/pcmk n v t
	local t_kill times connected elapsed='' fenced_at load_pid
	local vips="$net.101,$net.102,$net.103"
	mkdir -p "$d"
	# The other tests leave vm3 fenced and GFS2 in use: a fresh boot.
	# (Alone, this test uses the VMs that just booted.)
	if [ -n "$dlm_tests" ]; then
		step "test (f): stopping the VMs of the other tests"
		stop_vms
		for n in 1 2 3; do
			[ -e "$run/vm$n.console" ] && mv "$run/vm$n.console" "$run/vm$n.console.1"
		done
		[ -e "$run/fence.log" ] && mv "$run/fence.log" "$run/fence-dlm.log"
		step "test (f): fresh boot of 3 VMs ($accel)"
		boot_vms
		sync_clocks
	fi
	step "test (f): corosync + pacemaker on vm1..vm3"
	all_guests pcmk-start || { pcmk_fail "corosync + pacemaker did not start"; return; }
	wait_until 180 pcmk_online 1 3 || { pcmk_fail "3 nodes not online after 180s"; return; }
	echo "lab: 3 nodes online, DC $(cat "$d/dc")"

	step "test (f): mkfs.gfs2, clustermail.conf, ha/cluster-setup's configuration"
	guest 1 gfs2-mkfs >"$d/mkfs.log" 2>&1 || { cat "$d/mkfs.log"; pcmk_fail "mkfs.gfs2"; return; }
	guest 1 gfs2-prepare /srv/clustermail/spool || { pcmk_fail "gfs2-prepare"; return; }
	all_guests cm-config dlm /srv/clustermail/spool pacemaker ||
		{ pcmk_fail "cm-config"; return; }
	python3 "$top_srcdir/ha/cluster-setup" --print cib --nodes vm1,vm2,vm3 \
		--vips "$vips" --fs gfs2 --device /dev/vdb \
		--stonith "fence_lab:pcmk_host_map=vm1:1;vm2:2;vm3:3" \
		--config /etc/clustermail/clustermail.conf \
		--agent-param binary=/lab/bin/clustermaild \
		--agent-param ctl_binary=/lab/bin/clustermailctl >"$share/pcmk-recipe.cib" ||
		{ pcmk_fail "ha/cluster-setup"; return; }
	vm 1 "crm_verify --verbose --xml-file /lab/pcmk-recipe.cib" ||
		{ pcmk_fail "crm_verify rejects ha/cluster-setup's configuration"; return; }
	vm 1 "cibadmin --replace --scope configuration --xml-file /lab/pcmk-recipe.cib" ||
		{ pcmk_fail "cibadmin --replace"; return; }
	t=$(date +%s)
	wait_until 300 pcmk_home ||
		{ pcmk_fail "resources not started, each VIP on its node, after 300s"; return; }
	echo "lab: resources started $(( $(date +%s) - t ))s after the configuration: $(cat "$d/placement")"
	vm 1 "findmnt -n -o SOURCE,FSTYPE,TARGET /srv/clustermail; dlm_tool ls | grep -E '^name|^members'"
	guest 1 useradd u@example.com ha-test-password >/dev/null || { pcmk_fail "user add"; return; }
	if [ -n "${LAB_HOLD:-}" ] && [ -z "$dlm_tests" ]; then
		echo "lab: holding; namespace $ns; touch $run/release to go on"
		while [ ! -e "$run/release" ]; do sleep 1; done
	fi

	step "test (f): SMTP to every VIP, IMAP on every VIP"
	for v in 1 2 3; do
		in_ns python3 "$client" send --vip "$net.10$v" --count 10 --tag "before-vip$v" \
			--acked "$d/acked-before" || { pcmk_fail "SMTP to VIP $net.10$v"; return; }
	done
	for v in 1 2 3; do
		in_ns python3 "$client" check --vip "$net.10$v" --acked "$d/acked-before" ||
			{ pcmk_fail "IMAP check on VIP $net.10$v before the failure"; return; }
	done

	step "test (f): SMTP load on the 3 VIPs; SIGKILL vm3"
	# exec'd by ip netns exec: $! is the client, for cleanup
	ip netns exec "$ns" python3 "$client" load --vips "$vips" --tag during \
		--acked "$d/acked-during" --stop "$d/stop-load" --max-seconds 900 \
		>"$d/load.out" 2>&1 &
	load_pid=$!
	client_pid=$load_pid
	sleep 15
	# the time the fence request reaches the host, for the figures
	(
		until grep -q ': fence 3 -> ' "$run/fence.log" 2>/dev/null; do
			sleep 0.2
		done
		date +%s.%N >"$d/fenced-at"
	) &
	poll_pid=$!
	guest 3 pcmk-logs	# vm3's logs up to now: it will not be asked later
	echo "lab: SIGKILL vm3 (qemu pid ${qemu_pid[3]}) after $(wc -l <"$d/acked-during") deliveries"
	t_kill=$(date +%s.%N)
	kill -KILL "${qemu_pid[3]}"
	wait "${qemu_pid[3]}" 2>/dev/null
	unset "qemu_pid[3]"
	vms=(1 2)
	# (not ha_client.py's wait-imap: its 1 s for connect + login, made
	# for the host, fails every login on a loaded survivor under TCG)
	if times=$(in_ns python3 "$lab_src/lab_pcmk.py" wait-imap --vip "$net.103" \
			--since "$t_kill" --timeout $((failover_limit + 180)) \
			--user u@example.com --password ha-test-password); then
		elapsed=${times#*login=}
		connected=${times%% *}
		echo "lab: VIP $net.103 answers IMAP again (LOGIN) ${elapsed}s after the kill (limit ${failover_limit}s under $accel; first TCP connection accepted after ${connected#connect=}s)"
		python3 -c 'import sys; sys.exit(float(sys.argv[1]) > float(sys.argv[2]))' \
			"$elapsed" "$failover_limit" ||
			fail "pacemaker: failover of $net.103 took ${elapsed}s, more than ${failover_limit}s"
	else
		pcmk_fail "VIP $net.103 does not answer IMAP $((failover_limit + 180))s after the kill"
	fi
	if [ -s "$d/fenced-at" ]; then
		fenced_at=$(cat "$d/fenced-at")
		echo "lab: vm3 fenced $(python3 -c 'import sys; print("%.1f" % (float(sys.argv[1]) - float(sys.argv[2])))' \
			"$fenced_at" "$t_kill")s after the kill: $(grep ': fence 3 -> ' "$run/fence.log" | head -1)"
	else
		fail "pacemaker: nobody asked the host to fence vm3"
	fi
	kill "$poll_pid" 2>/dev/null
	wait "$poll_pid" 2>/dev/null
	poll_pid=
	grep -q ': fence 3 -> ok' "$run/fence.log" 2>/dev/null ||
		fail "pacemaker: vm3 not fenced: $(cat "$run/fence.log" 2>/dev/null)"
	wait_until 180 pcmk_vip3_moved 1 ||
		{ pcmk_fail "resources not settled on vm1 + vm2 180s after the kill"; }
	echo "lab: after the failure: $(cat "$d/placement")"
	# Pacemaker's fencer did it (fence_lab, from the lab-fenced.py log,
	# could in principle have been run by someone else)
	vm 1 "stonith_admin --history vm3" >"$d/stonith-history" 2>&1
	head -1 "$d/stonith-history"
	grep -Eq '(reboot|off) of vm3 successful' "$d/stonith-history" ||
		fail "pacemaker: no successful fencing of vm3 in Pacemaker's fencing history"
	vm 1 "dlm_tool ls | grep -E '^name|^members'"
	sleep 5
	touch "$d/stop-load"
	wait "$load_pid" || fail "pacemaker: the load client failed"
	client_pid=
	echo "lab: $(cat "$d/load.out")"

	step "test (f): after the failover: SMTP on $net.103, IMAP on every VIP"
	in_ns python3 "$client" send --vip "$net.103" --count 5 --tag after-vip3 \
		--acked "$d/acked-after" || fail "pacemaker: SMTP on VIP $net.103 after the failover"
	touch "$d/acked-after"
	for v in 3 1 2; do
		in_ns python3 "$client" check --vip "$net.10$v" --acked "$d/acked-before" \
			"$d/acked-during" "$d/acked-after" ||
			fail "pacemaker: IMAP check on VIP $net.10$v after the failure"
	done
	guest 1 ctl index check u@example.com ||
		fail "pacemaker: clustermailctl index check found problems in the spool"

	# A clean standby must stop clustermail, GFS2 and the DLM on vm2
	# without fencing it: clustermaild's keeper leaves its lockspace.
	step "test (f): vm2 in standby: its resources stop and move to vm1, vm2 is not fenced"
	vm 1 "crm_standby -N vm2 -v on" >/dev/null 2>&1 || fail "pacemaker: crm_standby -N vm2 -v on"
	if wait_until 240 pcmk_all_on_vm1; then
		echo "lab: vm2 in standby: $(cat "$run/pcmk/placement")"
	else
		pcmk_fail "vm2's resources not on vm1 within 240 s of its standby"
	fi
	sleep 10	# a fencing would come now
	if grep -q ': fence 2 ' "$run/fence.log" 2>/dev/null; then
		fail "pacemaker: vm2 was fenced when put in standby: $(grep ': fence 2 ' "$run/fence.log")"
	else
		echo "ok: vm2 not fenced; in lockspaces: [$(vm 2 "dlm_tool ls 2>/dev/null | awk '\$1 == \"name\" { print \$2 }'")]"
	fi
	in_ns python3 "$client" check --vip "$net.102" --acked "$d/acked-before" \
		"$d/acked-during" "$d/acked-after" ||
		fail "pacemaker: IMAP check on VIP $net.102 (on vm1) with vm2 in standby"
	pcmk_collect
	if [ "$failures" = "${failures_before_pcmk:-0}" ]; then
		echo "PASS: pacemaker failover: vm3 fenced, $net.103 back in ${elapsed}s (limit ${failover_limit}s, $accel), $(wc -l <"$d/acked-before") + $(wc -l <"$d/acked-during") + $(wc -l <"$d/acked-after") acknowledged messages, none lost or duplicated"
	fi
}

# the tests; pacemaker last (it boots the VMs again)
for t in $tests; do
	case $t in
	protocol) test_protocol ;;
	torture) test_torture gfs2 /srv/clustermail/torture dlm 1 2 3 ;;
	fence) test_fence ;;
	nfs) test_nfs ;;
	ocfs2) test_ocfs2 ;;
	pacemaker) ;;
	*) echo "lab: unknown test $t" ;;
	esac
done
case " $tests " in
*" pacemaker "*)
	failures_before_pcmk=$failures
	test_pacemaker ;;
esac

if [ "$failures" = 0 ]; then
	echo "PASS: the lab ($tests)"
	result=0
else
	echo "FAIL: $failures lab test(s) failed"
fi
exit "$result"
