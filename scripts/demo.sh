#!/bin/sh
# demo.sh - a local clustermail demo: build, then run a three-node cluster
# on one machine: daemons demo1, demo2 and demo3 on their own loopback
# addresses (127.0.0.11-13) sharing one spool (fcntl locks), members of a
# corosync CPG group through a corosync of the demo's own on 127.0.0.1, and
# a demo user; all state under /var/tmp/clustermail-demo.
#
# usage: scripts/demo.sh [start|stop|status]
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
demo=${CLUSTERMAIL_DEMO_DIR:-/var/tmp/clustermail-demo}
build="$top/build"
conf="$demo/clustermail.conf"
daemon="$build/src/daemon/clustermaild"
ctl="$build/src/ctl/clustermailctl"

nodes="demo1 demo2 demo3"

corosync_stop() {
	if [ -f "$demo/corosync.pid" ] && kill "$(cat "$demo/corosync.pid")" 2>/dev/null; then
		echo "demo: stopping corosync (pid $(cat "$demo/corosync.pid"))"
		for _ in $(seq 1 100); do
			kill -0 "$(cat "$demo/corosync.pid")" 2>/dev/null || break
			sleep 0.1
		done
	fi
	rm -f "$demo/corosync.pid"
}

# corosync_start - a one-node corosync on 127.0.0.1 for the CPG group
# (skipped, with a note, when not root or when a corosync already runs
# here: then the daemons use that one, or poll)
corosync_start() {
	if corosync-cpgtool >/dev/null 2>&1; then
		echo "demo: a corosync is already running here; the demo nodes join it"
		return 0
	fi
	if [ "$(id -u)" -ne 0 ] || ! command -v corosync >/dev/null; then
		echo "demo: not starting corosync (needs root and the corosync package);"
		echo "      the nodes poll for changes instead"
		return 0
	fi
	cat > "$demo/corosync.conf" <<CONF
# corosync for the clustermail demo: one corosync node on loopback; the
# three clustermail daemons are three members of its CPG group.
totem {
	version: 2
	cluster_name: clustermail-demo
	transport: knet
	crypto_cipher: none
	crypto_hash: none
}
nodelist {
	node {
		ring0_addr: 127.0.0.1
		name: demo
		nodeid: 1
	}
}
quorum {
	provider: corosync_votequorum
}
logging {
	to_stderr: yes
	to_syslog: no
}
uidgid {
	uid: $user
}
CONF
	nohup corosync -f -c "$demo/corosync.conf" >>"$demo/corosync.log" 2>&1 </dev/null &
	echo $! > "$demo/corosync.pid"
	for _ in $(seq 1 100); do
		corosync-cpgtool >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	echo "demo: corosync did not start; log:" >&2
	tail -n 20 "$demo/corosync.log" >&2
	exit 1
}

demo_stop() {
	for node in $nodes; do
		if [ -f "$demo/$node.pid" ] && kill "$(cat "$demo/$node.pid")" 2>/dev/null; then
			echo "demo: stopping clustermaild node $node (pid $(cat "$demo/$node.pid"))"
			for _ in $(seq 1 100); do
				[ -f "$demo/$node.pid" ] || break
				sleep 0.1
			done
		fi
	done
	corosync_stop
}

demo_config() {
	mkdir -p "$demo"
	if [ ! -f "$demo/tls.crt" ]; then
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
			-nodes -days 365 -subj /CN=localhost \
			-keyout "$demo/tls.key" -out "$demo/tls.crt" 2>/dev/null
	fi
	user=clustermail
	[ "$(id -u)" -eq 0 ] || user=$(id -un)
	# The spool: on a cluster this is the shared file system, which the
	# daemon never creates itself; here a plain directory.
	mkdir -p "$demo/spool"
	# Readable by mail_user, so that a reload (SIGHUP) can re-read them.
	chown "$user" "$demo" "$demo/spool" "$demo/tls.key" 2>/dev/null || true
	cat > "$conf" <<CONF
# clustermail demo configuration (see clustermail.conf(5))
spool_dir = $demo/spool
users_file = $demo/users
control_socket = $demo/%n.sock
pid_file = $demo/%n.pid
tls_cert = $demo/tls.crt
tls_key = $demo/tls.key
mail_user = $user
local_domains = example.com
log_target = stderr
log_level = info

# Three daemons on one host: a local spool shared by all, membership
# and wake-ups through the demo's corosync.
cluster = local-test
cluster_group = clustermail-demo
CONF
	# One section per node: the same ports on its own loopback address.
	i=11
	for node in $nodes; do
		cat >> "$conf" <<CONF

[node $node]
listen_imap = 127.0.0.$i:10143
listen_imaps = 127.0.0.$i:10993
listen_pop3 = 127.0.0.$i:10110
listen_pop3s = 127.0.0.$i:10995
listen_smtp = 127.0.0.$i:10025
listen_submission = 127.0.0.$i:10587
listen_submissions = 127.0.0.$i:10465
listen_lmtp = 127.0.0.$i:10024
metrics_listen = 127.0.0.$i:19100
smtp_hostname = $node.example.com
CONF
		i=$((i + 1))
	done
	if ! "$ctl" -c "$conf" --node demo1 user list | grep -q '^demo@example\.com[[:space:]]'; then
		printf 'demo\n' | "$ctl" -c "$conf" --node demo1 user add demo@example.com --password-stdin
	fi
}

demo_start() {
	"$top/scripts/deps.sh"
	"$top/scripts/build.sh" "$build"
	demo_stop
	demo_config
	corosync_start
	# --foreground in the background keeps the log in a file even on
	# machines without a syslog daemon.
	for node in $nodes; do
		nohup "$daemon" -c "$conf" --node "$node" --foreground \
			>>"$demo/$node.log" 2>&1 </dev/null &
	done
	for node in $nodes; do
		for _ in $(seq 1 100); do
			"$ctl" -c "$conf" --node "$node" status >/dev/null 2>&1 && break
			sleep 0.1
		done
		"$ctl" -c "$conf" --node "$node" status || {
			echo "demo: clustermaild node $node did not start; log:" >&2
			tail -n 20 "$demo/$node.log" >&2
			exit 1
		}
	done
	# A first message, over SMTP like any other, so the mailbox is not empty.
	printf 'From: <welcome@example.org>\r\nSubject: Welcome to clustermail\r\n\r\nThis message came in over SMTP on node demo1.\r\n' |
		curl -s smtp://127.0.0.11:10025 --mail-from welcome@example.org \
			--mail-rcpt demo@example.com -T - ||
		echo "demo: could not send the welcome message over SMTP" >&2
	sleep 1
	"$ctl" -c "$conf" --node demo1 cluster status || true
	cat <<MSG

clustermail demo is running: a three-node cluster on one spool
  nodes:       demo1 on 127.0.0.11, demo2 on 127.0.0.12, demo3 on 127.0.0.13,
               each with the same ports: IMAP 10143 (STARTTLS), IMAPS 10993,
               POP3 10110, POP3S 10995, SMTP 10025, submission 10587,
               submissions 10465, LMTP 10024, metrics/health 19100
               (logs: $demo/demo1.log ...)
  demo user:   demo@example.com, password: demo
  try it:      point a mail client (IMAP, user demo@example.com) at
               127.0.0.12 port 10143 and leave the INBOX open, then send
               mail to another node:
                 printf 'Subject: hi\\r\\n\\r\\nhello\\r\\n' | curl smtp://127.0.0.13:10025 \\
                   --mail-from someone@example.org --mail-rcpt demo@example.com -T -
               it appears at once: the node that took it tells the others
               through the corosync group (IDLE).
  cluster:     $ctl -c $conf --node demo1 cluster status
  IMAP:        curl --user demo@example.com:demo imap://127.0.0.11:10143/INBOX -X 'FETCH 1:* (FLAGS)'
               mutt -f imap://demo%40example.com@127.0.0.12:10143/
  POP3:        curl --user demo@example.com:demo pop3://127.0.0.13:10110/
  submission:  swaks --server 127.0.0.11:10587 --tls --auth PLAIN --au demo@example.com \\
                 --ap demo --from demo@example.com --to demo@example.com
  LMTP:        127.0.0.12:10024 (e.g. Postfix: virtual_transport = lmtp:inet:127.0.0.12:10024)
  deliver:     printf 'Subject: hi\\n\\nhello\\n' | $ctl -c $conf --node demo3 deliver demo@example.com
  health:      curl http://127.0.0.11:19100/health   (metrics: /metrics)
  status:      $ctl -c $conf --node demo2 status
  stop:        $top/scripts/demo.sh stop
MSG
}

case "${1:-start}" in
start) demo_start ;;
stop) demo_stop ;;
status) for node in $nodes; do "$ctl" -c "$conf" --node "$node" status; done ;;
*) echo "usage: $0 [start|stop|status]" >&2; exit 64 ;;
esac
