#!/bin/sh
# demo.sh - a local clustermail demo: build, then run a two-node cluster
# on loopback (nodes demo1 and demo2: two daemons sharing one spool, with
# fcntl locks), with a demo user; all state under /var/tmp/clustermail-demo.
#
# usage: scripts/demo.sh [start|stop|status]
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
demo=${CLUSTERMAIL_DEMO_DIR:-/var/tmp/clustermail-demo}
build="$top/build"
conf="$demo/clustermail.conf"
daemon="$build/src/daemon/clustermaild"
ctl="$build/src/ctl/clustermailctl"

nodes="demo1 demo2"

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

[node demo1]
listen_imap = 127.0.0.1:10143
listen_imaps = 127.0.0.1:10993
listen_pop3 = 127.0.0.1:10110
listen_pop3s = 127.0.0.1:10995
listen_smtp = 127.0.0.1:10025
listen_submission = 127.0.0.1:10587
listen_submissions = 127.0.0.1:10465
listen_lmtp = 127.0.0.1:10024
metrics_listen = 127.0.0.1:19100
smtp_hostname = demo1.example.com

[node demo2]
listen_imap = 127.0.0.1:11143
listen_imaps = 127.0.0.1:11993
listen_pop3 = 127.0.0.1:11110
listen_pop3s = 127.0.0.1:11995
listen_smtp = 127.0.0.1:11025
listen_submission = 127.0.0.1:11587
listen_submissions = 127.0.0.1:11465
listen_lmtp = 127.0.0.1:11024
metrics_listen = 127.0.0.1:19101
smtp_hostname = demo2.example.com
CONF
	if ! "$ctl" -c "$conf" --node demo1 user list | grep -qx 'demo@example.com'; then
		printf 'demo\n' | "$ctl" -c "$conf" --node demo1 user add demo@example.com --password-stdin
	fi
}

demo_start() {
	"$top/scripts/deps.sh"
	"$top/scripts/build.sh" "$build"
	demo_stop
	demo_config
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
	printf 'From: <welcome@example.org>\r\nSubject: Welcome to clustermail\r\n\r\nThis message came in over SMTP.\r\n' |
		curl -s smtp://127.0.0.1:10025 --mail-from welcome@example.org \
			--mail-rcpt demo@example.com -T - ||
		echo "demo: could not send the welcome message over SMTP" >&2
	cat <<MSG

clustermail demo is running: a two-node cluster on one spool
  node demo1:  the ports below (log: $demo/demo1.log)
  node demo2:  the same ports plus 1000 (IMAP 11143, POP3 11110, SMTP 11025,
               LMTP 11024, submission 11587; log: $demo/demo2.log)
               Mail taken on one node is read on the other, e.g. send over
               SMTP to 10025 and read with IMAP on 11143.
  demo user:   demo@example.com, password: demo
  health:      curl http://127.0.0.1:19100/health
  metrics:     curl http://127.0.0.1:19100/metrics
  status:      $ctl -c $conf --node demo1 status
  IMAP:        curl --user demo@example.com:demo imap://127.0.0.1:10143/
               (STARTTLS on 10143, implicit TLS on 10993; any IMAP client works,
               e.g. mutt -f imap://demo%40example.com@127.0.0.1:10143/)
  deliver:     printf 'Subject: hi\\n\\nhello\\n' | $ctl -c $conf --node demo1 deliver demo@example.com
  POP3:        curl --user demo@example.com:demo pop3://127.0.0.1:10110/   (STLS; POP3S on 10995)
  SMTP in:     printf 'Subject: hi\\r\\n\\r\\nhello\\r\\n' | curl smtp://127.0.0.1:10025 \\
                 --mail-from someone@example.org --mail-rcpt demo@example.com -T -
  LMTP:        port 10024 (e.g. Postfix: virtual_transport = lmtp:inet:127.0.0.1:10024)
  submission:  swaks --server 127.0.0.1:10587 --tls --auth PLAIN --au demo@example.com \\
                 --ap demo --from demo@example.com --to demo@example.com
               (implicit TLS on 10465; mail for other domains is queued:
               $ctl -c $conf --node demo1 queue list)
  stop:        $top/scripts/demo.sh stop
MSG
}

case "${1:-start}" in
start) demo_start ;;
stop) demo_stop ;;
status) for node in $nodes; do "$ctl" -c "$conf" --node "$node" status; done ;;
*) echo "usage: $0 [start|stop|status]" >&2; exit 64 ;;
esac
