#!/bin/bash
# check-ha.sh - the host failover test (make check-ha).
#
# Three cluster nodes on one host, each a network namespace (plus its own
# PID, mount and UTS namespace: see node.sh) with a veth on a bridge that
# lives in a separate "switch" namespace; the mail clients run in the switch
# namespace too, so nothing touches the host's network.  Every node runs
# corosync (knet), pacemaker and, under pacemaker, clustermaild through the
# OCF agent ocf:clustermail:clustermail; the three daemons share one spool, a
# host directory, with fcntl locks.  The resources come from the ha/ recipe
# generator (ha/cluster-setup, --fs local --stonith none).
#
# The test: mail over SMTP to every VIP, read back over IMAP on every VIP;
# then, with SMTP load running, node 2 is killed (SIGKILL of every process,
# link down).  Its VIP must answer IMAP on a survivor within 15 s, and every
# message the cluster acknowledged, before or during the failure, must be in
# the mailbox exactly once, seen through every VIP.  Then node 2 starts
# again from scratch: it must rejoin and take its VIP back, with all mail
# still visible through every VIP, and clustermailctl index check must
# find the spool's metadata consistent.
#
# No fencing: there is no fence device on the host, so this cluster runs
# with stonith-enabled=false.  That is safe here only because a killed
# namespace node is really dead (its processes are gone, its locks released
# by the kernel); real clusters must fence (see ha/README).
#
# Environment: top_srcdir, top_builddir (set by make); HA_KILL_NODE=1|2|3
# picks the node to kill (default 2; the DC is whichever node won the
# election, printed, so some runs also lose the DC); HA_KEEP=1 keeps the
# work directory (logs) after the run; HA_HOLD=SECONDS keeps a failed
# cluster running that long for a look around; HA_RECIPE=cib|crm|pcs
# chooses the generated variant that configures the live cluster (default
# cib; the other two are applied offline to a copy of the unconfigured CIB
# and checked with crm_verify).
#
# Exit: 0 pass, 1 fail, 77 skip (not root, no namespaces, missing tools).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
top_srcdir=${top_srcdir:-$(cd "$here/../.." && pwd)}
top_builddir=${top_builddir:-$top_srcdir/build}
daemon=$top_builddir/src/daemon/clustermaild
ctl=$top_builddir/src/ctl/clustermailctl
agent=$top_srcdir/pacemaker/clustermail
setup=$top_srcdir/ha/cluster-setup
client=$here/ha_client.py
recipe=${HA_RECIPE:-cib}
python=${PYTHON3:-python3}

failover_limit=15
victim=${HA_KILL_NODE:-2}
nodes="1 2 3"
id=cmha$$
sw=$id-sw
subnet=10.77.0
vips="$subnet.101,$subnet.102,$subnet.103"
start_time=$(date +%s)

skip() {
	echo "SKIP: $*"
	exit 77
}

log() {
	printf '[%4ds] %s\n' "$(($(date +%s) - start_time))" "$*"
}

case $victim in
1 | 2 | 3) ;;
*) echo "HA_KILL_NODE must be 1, 2 or 3"; exit 1 ;;
esac
[ "$(id -u)" -eq 0 ] || skip "check-ha needs root (network namespaces, mounts)"
for cmd in ip unshare nsenter setsid corosync corosync-cfgtool pacemakerd crm_mon \
	cibadmin crm_resource crm_verify "$python"; do
	command -v "$cmd" >/dev/null 2>&1 || skip "$cmd is not installed"
done
[ -x /usr/lib/ocf/resource.d/heartbeat/IPaddr2 ] ||
	skip "resource-agents (ocf:heartbeat:IPaddr2) is not installed"
id hacluster >/dev/null 2>&1 || skip "no hacluster user (pacemaker not installed?)"
id clustermail >/dev/null 2>&1 || skip "no clustermail user (mail_user of the test)"
for f in "$daemon" "$ctl"; do
	[ -x "$f" ] || { echo "FAIL: $f is not built"; exit 1; }
done
grep -qw overlay /proc/filesystems 2>/dev/null || modprobe overlay 2>/dev/null ||
	skip "no overlay file system (needed to add the OCF agent inside the nodes)"
[ -f "$agent" ] || skip "the OCF agent $agent does not exist"
ip netns add "$sw" 2>/dev/null || skip "cannot create network namespaces here"

work=$(mktemp -d /tmp/cmha.XXXXXX)
chmod 0755 "$work"
declare -A node_pid
client_pid=

# cleanup - kill every node (its PID namespace dies with its process 1),
# the clients, the namespaces and the work directory.
cleanup() {
	local rc=$? n
	trap - EXIT INT TERM
	if [ -n "$client_pid" ]; then
		kill "$client_pid" 2>/dev/null || true
	fi
	for n in $nodes; do
		if [ -n "${node_pid[$n]:-}" ]; then
			kill -KILL "${node_pid[$n]}" 2>/dev/null || true
		fi
	done
	wait 2>/dev/null || true
	for n in $nodes; do
		ip netns del "$id-n$n" 2>/dev/null || true
	done
	ip netns del "$sw" 2>/dev/null || true
	if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ]; then
		for n in $nodes; do
			echo "---- cmha$n: pacemaker.log (errors, last 30)"
			grep -iE 'error|fail|warn' "$work/cmha$n/pacemaker.log" 2>/dev/null | tail -n 30 || true
			echo "---- cmha$n: corosync.log (last 10)"
			tail -n 10 "$work/cmha$n/corosync.log" 2>/dev/null || true
		done
	fi
	if [ "${HA_KEEP:-0}" = 1 ]; then
		echo "work directory kept: $work"
	else
		rm -rf "$work"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() {
	log "FAIL: $*"
	if [ "${HA_HOLD:-0}" -gt 0 ]; then
		log "HA_HOLD: keeping the cluster for ${HA_HOLD} s (nsenter --target PID --all)"
		sleep "$HA_HOLD"
	fi
	exit 1
}

# in_client CMD... - run in the switch namespace (the clients' network)
in_client() {
	ip netns exec "$sw" "$@"
}

# in_node N CMD... - run inside node N (all of its namespaces)
in_node() {
	local n=$1
	shift
	nsenter --target "${node_pid[$n]}" --all -- "$@"
}

# ---- the network: a bridge in the switch namespace, one veth per node
setup_network() {
	local n
	ip -n "$sw" link set lo up
	ip -n "$sw" link add br0 type bridge
	ip -n "$sw" addr add "$subnet.254/24" dev br0
	ip -n "$sw" link set br0 up
	for n in $nodes; do
		ip netns add "$id-n$n"
		ip -n "$id-n$n" link set lo up
		ip -n "$sw" link add "vn$n" type veth peer name eth0 netns "$id-n$n"
		ip -n "$sw" link set "vn$n" master br0 up
		ip -n "$id-n$n" addr add "$subnet.$n/24" dev eth0
		ip -n "$id-n$n" link set eth0 up
	done
}

# ---- the configuration files: corosync, clustermail, OCF overlay
write_configs() {
	local n m
	dd if=/dev/urandom of="$work/authkey" bs=256 count=1 status=none
	for n in $nodes; do
		mkdir -p "$work/cmha$n"
		cp "$work/authkey" "$work/cmha$n/authkey"
		{
			cat <<EOF
totem {
	version: 2
	cluster_name: cmha
	transport: knet
	crypto_cipher: aes256
	crypto_hash: sha256
	# A short token: a dead node is noticed in about 2 s.
	token: 1000
}
quorum {
	provider: corosync_votequorum
}
# clustermaild joins its CPG group as mail_user (see clustermail-cluster(7)).
uidgid {
	uid: clustermail
}
logging {
	to_stderr: no
	to_syslog: no
	to_logfile: yes
	logfile: $work/cmha$n/corosync.log
	timestamp: on
}
nodelist {
EOF
			for m in $nodes; do
				printf '\tnode {\n\t\tname: cmha%s\n\t\tnodeid: %s\n\t\tring0_addr: %s.%s\n\t}\n' \
					"$m" "$m" "$subnet" "$m"
			done
			echo "}"
		} >"$work/cmha$n/corosync.conf"
	done

	cat >"$work/seed-cib.xml" <<'EOF'
<cib validate-with="pacemaker-3.0" admin_epoch="0" epoch="1" num_updates="0">
  <configuration>
    <crm_config>
      <cluster_property_set id="cib-bootstrap-options">
        <nvpair id="cib-bootstrap-options-dc-deadtime" name="dc-deadtime" value="3s"/>
      </cluster_property_set>
    </crm_config>
    <nodes/>
    <resources/>
    <constraints/>
  </configuration>
  <status/>
</cib>
EOF

	mkdir -p "$work/spool" "$work/run" "$work/ocf/clustermail"
	chown clustermail "$work/spool" "$work/run"
	install -m 0755 "$agent" "$work/ocf/clustermail/clustermail"
	{
		cat <<EOF
# clustermail.conf of the host failover test: three nodes, one spool
spool_dir = $work/spool
lock_backend = fcntl
# Not a cluster file system: a host directory shared by the namespaces.
cluster = local-test
users_file = $work/users
control_socket = $work/run/%n.sock
pid_file = $work/run/%n.pid
mail_user = clustermail
local_domains = example.com
trusted_networks = $subnet.0/24 127.0.0.0/8
log_target = stderr
# Each node is its own network namespace: the same ports everywhere, on
# every address, so a VIP that moves here is served at once.
listen_imap = 0.0.0.0:143
listen_smtp = 0.0.0.0:25
metrics_listen = 127.0.0.1:9100
EOF
		for n in $nodes; do
			printf '\n[node cmha%s]\nsmtp_hostname = cmha%s.example.com\n' "$n" "$n"
		done
	} >"$work/clustermail.conf"
	"$ctl" -c "$work/clustermail.conf" --node cmha1 user add u@example.com \
		--password-stdin <<<"ha-test-password" >/dev/null
	chown clustermail "$work/users" 2>/dev/null || true
}

# ---- the nodes
start_node() {
	local n=$1 p i
	# setsid: a Ctrl-C on the terminal reaches the test, not the nodes'
	# daemons directly (cleanup takes the nodes down).
	ip netns exec "$id-n$n" setsid unshare --pid --fork --mount-proc --mount --uts \
		--propagation private "$here/node.sh" "$work" "cmha$n" \
		>"$work/cmha$n/node.log" 2>&1 </dev/null &
	# The node's process 1, as the host sees it: the process in the node's
	# network namespace whose PID in its own PID namespace is 1.
	node_pid[$n]=
	for i in $(seq 1 50); do
		for p in $(ip netns pids "$id-n$n"); do
			if grep -Eq '^NSpid:[[:space:]]+[0-9]+[[:space:]]+1$' "/proc/$p/status" 2>/dev/null; then
				node_pid[$n]=$p
			fi
		done
		[ -n "${node_pid[$n]}" ] && break
		sleep 0.1
	done
	[ -n "${node_pid[$n]}" ] || fail "node cmha$n did not start (see $work/cmha$n/node.log)"
	: "$i"
}

# kill_node N - power cord: SIGKILL to process 1 of the node's PID
# namespace kills all of its processes; then its link goes down.
kill_node() {
	local n=$1
	kill -KILL "${node_pid[$n]}"
	ip -n "$sw" link set "vn$n" down
	ip -n "$id-n$n" link set eth0 down
	node_pid[$n]=
}

# boot_network N - the node's interface as after a reboot: only its own
# address. (The network namespace outlives the killed processes, and with
# it the VIP that IPaddr2 had added; a rebooted machine has no such
# leftover, and a leftover VIP would be a duplicate address.)
boot_network() {
	local n=$1
	ip -n "$id-n$n" addr flush dev eth0
	ip -n "$id-n$n" addr add "$subnet.$n/24" dev eth0
	ip -n "$id-n$n" link set eth0 up
	ip -n "$sw" link set "vn$n" up
}

# crm_mon_xml N - the cluster status as node N sees it
crm_mon_xml() {
	in_node "$1" crm_mon --one-shot --output-as=xml 2>/dev/null
}

# wait_for SECONDS WHAT CMD... - poll CMD until it succeeds
wait_for() {
	local limit=$1 what=$2 deadline
	shift 2
	deadline=$(($(date +%s) + limit))
	until "$@"; do
		[ "$(date +%s)" -lt "$deadline" ] || fail "timeout after ${limit}s: $what"
		sleep 0.5
	done
}

# cluster_ready N COUNT - COUNT nodes online and a DC, as node N sees it
cluster_ready() {
	crm_mon_xml "$1" | "$python" -c '
import sys, xml.etree.ElementTree as ET
root = ET.fromstring(sys.stdin.read())
online = [n for n in root.iter("node") if n.get("online") == "true"]
dc = root.find("summary/current_dc")
sys.exit(0 if len(online) == int(sys.argv[1]) and dc is not None
	 and dc.get("present") == "true" else 1)' "$2"
}

# resources_placed N - clustermail active on every online node and every
# VIP started on one node, as node N sees it; prints vipK=NODE on success
resources_placed() {
	crm_mon_xml "$1" | "$python" -c '
import sys, xml.etree.ElementTree as ET
root = ET.fromstring(sys.stdin.read())
online = {n.get("name") for n in root.iter("node") if n.get("online") == "true"}
where = {}
for r in root.iter("resource"):
    if r.get("role") == "Started" and r.get("active") == "true" \
            and r.get("failed") == "false":
        where.setdefault(r.get("id"), set()).update(
            n.get("name") for n in r.iter("node"))
ok = where.get("clustermail", set()) == online
for v in ("vip1", "vip2", "vip3"):
    ok = ok and len(where.get(v, ())) == 1
if ok:
    print(" ".join(f"{v}={min(where[v])}" for v in ("vip1", "vip2", "vip3")))
sys.exit(0 if ok else 1)' >"$work/placement"
}

# vip_home N - every resource placed, with vipN on cmhaN
vip_home() {
	resources_placed "$1" && grep -q "vip$1=cmha$1\b" "$work/placement"
}

# ---- the recipe: generate all three variants, apply one live
generate_recipes() {
	local fmt extra
	for fmt in pcs crm cib; do
		extra=()
		[ "$fmt" != pcs ] || extra=(--cib-file "$work/pcs-cib.xml")
		"$python" "$setup" --print "$fmt" --nodes cmha1,cmha2,cmha3 --vips "$vips" \
			--cidr-netmask 24 --nic eth0 --fs local --stonith none \
			--config "$work/clustermail.conf" \
			--agent-param "binary=$daemon" --agent-param "ctl_binary=$ctl" \
			"${extra[@]}" >"$work/recipe.$fmt"
	done
}

apply_recipe() {
	case $1 in
	cib)
		in_node 1 cibadmin --replace --scope configuration \
			--xml-file "$work/recipe.cib" ;;
	crm)
		in_node 1 crm configure load update "$work/recipe.crm" ;;
	pcs)
		cp "$work/empty-cib.xml" "$work/pcs-cib.xml"
		in_node 1 sh "$work/recipe.pcs"
		in_node 1 cibadmin --replace --scope configuration \
			--xml-file "$work/pcs-cib.xml" ;;
	esac
}

# verify_offline FMT - apply a variant to a copy of the live CIB and let
# crm_verify judge the result (nothing reaches the running cluster)
verify_offline() {
	local fmt=$1 copy=$work/offline-$1.xml
	case $fmt in
	cib)
		cp "$work/recipe.cib" "$copy" ;;
	crm)
		# CIB_file: crmsh (like every pacemaker tool) edits that file
		# instead of the live CIB.
		cp "$work/empty-cib.xml" "$copy"
		in_node 1 env CIB_file="$copy" crm configure load update "$work/recipe.crm" ;;
	pcs)
		cp "$work/empty-cib.xml" "$work/pcs-cib.xml"
		in_node 1 sh "$work/recipe.pcs"
		cp "$work/pcs-cib.xml" "$copy" ;;
	esac
	crm_verify --xml-file "$copy" || fail "crm_verify rejects the $fmt variant"
	log "recipe variant $fmt: applied offline, crm_verify ok"
}

# ============================================================ the test
log "work directory $work; namespaces $id-*"
setup_network
write_configs
generate_recipes
for n in $nodes; do
	start_node "$n"
done
log "nodes started (host pids of their process 1: ${node_pid[1]} ${node_pid[2]} ${node_pid[3]}); waiting for the cluster"
wait_for 60 "3 nodes online with a DC" cluster_ready 1 3
log "cluster formed: 3 nodes online, DC $(crm_mon_xml 1 | sed -n 's/.*<current_dc .*name="\([^"]*\)".*/\1/p')"
# The CIB before any recipe: the offline variants start from a copy.
in_node 1 cibadmin --query >"$work/empty-cib.xml"

apply_recipe "$recipe"
log "recipe variant $recipe applied to the live cluster"
wait_for 60 "clustermail on all nodes and every VIP started" resources_placed 1
log "resources started: $(cat "$work/placement")"
for fmt in cib crm pcs; do
	[ "$fmt" = "$recipe" ] || verify_offline "$fmt"
done
# For the log only: whether the daemons joined their CPG group (builds
# without CPG support do not).
in_node 1 corosync-cpgtool -e >"$work/cpg.txt" 2>&1 || true
log "CPG group clustermail: $(awk '/^[^[:space:]]/ { g = $1 }
	/^[[:space:]]/ && g == "clustermail" { n++ } END { print n + 0 }' "$work/cpg.txt") members"

# ---- the admin's view: clustermailctl cluster status on node 1 merges
# Pacemaker's (crm_mon, cibadmin) and the CPG group's
in_node 1 "$ctl" -c "$work/clustermail.conf" --node cmha1 --json cluster status \
	>"$work/status.json" || fail "clustermailctl cluster status failed"
"$python" - "$work/status.json" "$subnet" <<'PY' || fail "cluster status: $(cat "$work/status.json")"
import json, sys
doc = json.load(open(sys.argv[1]))
subnet = sys.argv[2]
assert doc["pacemaker"]["answered"], doc["pacemaker"]
nodes = {n["name"]: n for n in doc["nodes"]}
assert sorted(nodes) == ["cmha1", "cmha2", "cmha3"], sorted(nodes)
for i in (1, 2, 3):
    n = nodes[f"cmha{i}"]
    assert n["online"] and n["clustermail"] == "started", n
    assert n["vips"] == [f"{subnet}.10{i}"], n
    if doc["cpg"]["answered"] and doc["cpg"]["joined"]:
        assert n["cpg_member"], n
assert nodes["cmha1"]["self"]
PY
log "clustermailctl cluster status: 3 nodes online, clustermail started, one VIP each"

# ---- mail before the failure
per_vip=20
for v in 1 2 3; do
	in_client "$python" "$client" send --vip "$subnet.10$v" --count "$per_vip" \
		--tag "before-vip$v" --acked "$work/acked-before" ||
		fail "SMTP delivery to VIP $subnet.10$v"
done
for v in 1 2 3; do
	in_client "$python" "$client" check --vip "$subnet.10$v" --acked "$work/acked-before" ||
		fail "IMAP check on VIP $subnet.10$v before the failure"
done

# ---- the failure, under load
k=$victim
survivor=1
[ "$k" -ne 1 ] || survivor=3
# Not through in_client: $! must be the client itself (ip netns exec
# execs it), so that cleanup can stop it.
ip netns exec "$sw" "$python" "$client" load --vips "$vips" --tag during \
	--acked "$work/acked-during" --stop "$work/stop-load" --max-seconds 120 \
	>"$work/load.out" 2>&1 &
client_pid=$!
sleep 2
log "killing node cmha$k (SIGKILL to all its processes, link down)"
t0=$(date +%s.%N)
kill_node "$k"
elapsed=$(in_client "$python" "$client" wait-imap --vip "$subnet.10$k" --since "$t0" \
	--timeout 60) || fail "VIP $subnet.10$k did not answer IMAP again within 60 s"
log "VIP $subnet.10$k answers IMAP again after $elapsed s (limit ${failover_limit} s)"
"$python" -c 'import sys; sys.exit(0 if float(sys.argv[1]) <= float(sys.argv[2]) else 1)' \
	"$elapsed" "$failover_limit" || fail "failover took $elapsed s, more than ${failover_limit} s"
wait_for 60 "resources settled on the survivors" resources_placed "$survivor"
log "after the failure: $(cat "$work/placement")"
if grep -q "=cmha$k\b" "$work/placement"; then
	fail "a VIP is still on the dead node cmha$k"
fi
sleep 3
touch "$work/stop-load"
wait "$client_pid" || fail "the load client failed"
client_pid=
log "$(cat "$work/load.out")"

# ---- mail after the failure
in_client "$python" "$client" send --vip "$subnet.10$k" --count 5 --tag "after-vip$k" \
	--acked "$work/acked-after" || fail "SMTP on VIP $subnet.10$k after the failover"
for v in "$k" $nodes; do
	[ "$v" != "$k" ] || [ -z "${checked_k:-}" ] || continue
	checked_k=1
	in_client "$python" "$client" check --vip "$subnet.10$v" --acked "$work/acked-before" \
		"$work/acked-during" "$work/acked-after" ||
		fail "IMAP check on VIP $subnet.10$v after the failure"
done

# ---- the node comes back: fresh state, it rejoins, its VIP moves home
log "restarting node cmha$k"
t0=$(date +%s)
boot_network "$k"
start_node "$k"
wait_for 90 "cmha$k back with its VIP" vip_home "$k"
log "cmha$k rejoined and serves its VIP again after $(($(date +%s) - t0)) s: $(cat "$work/placement")"
in_client "$python" "$client" send --vip "$subnet.10$k" --count 5 --tag "home-vip$k" \
	--acked "$work/acked-after" || fail "SMTP on VIP $subnet.10$k after the node came back"
for v in $nodes; do
	in_client "$python" "$client" check --vip "$subnet.10$v" --acked "$work/acked-before" \
		"$work/acked-during" "$work/acked-after" ||
		fail "IMAP check on VIP $subnet.10$v after the node came back"
done

# ---- the metadata on the spool agrees with the Maildir
"$ctl" -c "$work/clustermail.conf" --node cmha1 index check u@example.com ||
	fail "clustermailctl index check found problems in the spool"

log "PASS: failover of VIP $subnet.10$k in $elapsed s (limit ${failover_limit} s); no acknowledged message lost"
