#!/bin/sh
# test-agent.sh - make check for the OCF agent pacemaker/clustermail:
#   1. shellcheck -x on the agent;
#   2. its meta-data validated with xmllint against resource-agents'
#      RelaxNG schema (metadata.rng) and its DTD (ra-api-1.dtd);
#   3. ocf-tester (from resource-agents) against a real clustermaild on
#      loopback with a temp config, once at monitor depth 0 and once at
#      depth 20 (which includes the protocol probes of depth 10).
# Exits 77 (skip) with the reason when a tool or the build is missing.
# Everything runs in a temp dir that is removed, with any daemon still
# running in it, when the script ends (also on failure or interrupt).

: "${top_srcdir:=$(cd "$(dirname "$0")/.." && pwd)}"
: "${top_builddir:=$top_srcdir}"
: "${PYTHON3:=python3}"
: "${OCF_ROOT:=/usr/lib/ocf}"
export OCF_ROOT

AGENT="$top_srcdir/pacemaker/clustermail"
DAEMON="$top_builddir/src/daemon/clustermaild"
CTL="$top_builddir/src/ctl/clustermailctl"
RA_SHARE=/usr/share/resource-agents
RNG="$RA_SHARE/metadata.rng"
DTD="$RA_SHARE/ra-api-1.dtd"

skip() {
	echo "SKIP: $*"
	exit 77
}

fail() {
	echo "FAIL: $*"
	exit 1
}

for tool in shellcheck xmllint ocf-tester "$PYTHON3" timeout; do
	command -v "$tool" >/dev/null 2>&1 ||
		skip "$tool is not installed (apt-get install shellcheck libxml2-utils resource-agents python3 coreutils)"
done
[ -r "$OCF_ROOT/lib/heartbeat/ocf-shellfuncs" ] ||
	skip "$OCF_ROOT/lib/heartbeat/ocf-shellfuncs is missing (apt-get install resource-agents)"
[ -r "$RNG" ] || skip "$RNG is missing (resource-agents)"
[ -r "$DTD" ] || skip "$DTD is missing (resource-agents)"
if [ ! -x "$DAEMON" ] || [ ! -x "$CTL" ]; then
	skip "clustermaild/clustermailctl are not built in $top_builddir"
fi

# 1. shellcheck
echo "== shellcheck -x $AGENT"
shellcheck -x "$AGENT" || fail "shellcheck found problems in the agent"

# 2. meta-data against the schema and the DTD
echo "== meta-data against $RNG and $DTD"
meta=$(OCF_RESOURCE_INSTANCE=meta "$AGENT" meta-data) ||
	fail "meta-data exited $?"
# From the schema's directory, where the DOCTYPE's "ra-api-1.dtd" resolves.
(cd "$RA_SHARE" && printf '%s\n' "$meta" | xmllint --noout --relaxng "$RNG" -) ||
	fail "meta-data does not validate against $RNG"
(cd "$RA_SHARE" && printf '%s\n' "$meta" | xmllint --noout --dtdvalid "$DTD" -) ||
	fail "meta-data does not validate against $DTD"

# 3. ocf-tester against a real daemon
if [ "$(id -u)" -eq 0 ]; then
	if id clustermail >/dev/null 2>&1; then
		mail_user=clustermail
	elif id nobody >/dev/null 2>&1; then
		mail_user=nobody
	else
		skip "running as root but neither user clustermail nor nobody exists"
	fi
else
	mail_user=$(id -un)
fi

tmp=$(mktemp -d /tmp/clustermail-ocf-XXXXXX) || fail "mktemp failed"
conf="$tmp/clustermail.conf"
node=ocftest

cleanup() {
	status=$?
	trap - EXIT HUP INT PIPE TERM
	if [ -e "$conf" ]; then
		# The agent's own stop first; kill whatever it leaves.
		pid=$(cat "$tmp/$node.pid" 2>/dev/null)
		OCF_RESOURCE_INSTANCE=cleanup OCF_RESKEY_config="$conf" \
			OCF_RESKEY_binary="$DAEMON" OCF_RESKEY_ctl_binary="$CTL" \
			OCF_RESKEY_node="$node" timeout 30 "$AGENT" stop \
			>/dev/null 2>&1
		if [ -n "$pid" ] &&
		   [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = clustermaild ]; then
			kill -KILL "$pid"
		fi
	fi
	rm -rf "$tmp"
	exit $status
}
trap cleanup EXIT
trap 'exit 1' HUP INT PIPE TERM

# Free loopback ports below the ephemeral range (as cmtest.py does).
ports=$("$PYTHON3" -c '
import random, socket
got = []
while len(got) < 5:
    port = random.randint(20000, 32000)
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
    if port not in got:
        got.append(port)
print(" ".join(map(str, got)))') || fail "cannot pick free ports"
# shellcheck disable=SC2086 # five words
set -- $ports

mkdir "$tmp/spool"
if [ "$(id -u)" -eq 0 ]; then
	chown "$mail_user" "$tmp" "$tmp/spool"
fi
chmod 755 "$tmp"
cat >"$conf" <<EOF
# Written by pacemaker/test-agent.sh.
spool_dir = $tmp/spool
lock_backend = fcntl
cluster = none
users_file = $tmp/users
control_socket = $tmp/%n.sock
pid_file = $tmp/%n.pid
mail_user = $mail_user
local_domains = example.com
workers = 1
shutdown_timeout = 5s
metrics_listen = 127.0.0.1:$1
listen_imap = 127.0.0.1:$2
listen_pop3 = 127.0.0.1:$3
listen_smtp = 127.0.0.1:$4
listen_lmtp = 127.0.0.1:$5
EOF

for depth in 0 20; do
	echo "== ocf-tester, monitor depth $depth"
	ocf-tester -n "clustermail-test" \
		-o config="$conf" -o binary="$DAEMON" -o ctl_binary="$CTL" \
		-o node="$node" -o "monitor_protocols=imap pop3 smtp lmtp" \
		-o OCF_CHECK_LEVEL="$depth" "$AGENT" ||
		fail "ocf-tester failed at monitor depth $depth"
done
echo "PASS: shellcheck, meta-data schema and ocf-tester"
