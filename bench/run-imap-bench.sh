#!/bin/sh
# run-imap-bench.sh - the IMAP benchmark against Dovecot (issue 4, item 6):
# commands and sessions per second of a mixed IMAP workload from C
# concurrent clients, latency per command, and memory per idle connection.
# See the top of imap-bench.py for what is measured and how.
#
#   bench/run-imap-bench.sh [BUILDDIR] [imap-bench.py options]
#
# BUILDDIR (default: the current directory) holds the built
# src/daemon/clustermaild and src/ctl/clustermailctl. Dovecot comes from
# Debian's packages: dovecot-imapd (with dovecot-core) is installed with
# apt-get when it is missing and we are root (nothing else is installed).
# Environment: BENCH_DIR is where the temporary spools go (default
# /var/tmp: use a disk-backed file system, fsync on tmpfs measures
# nothing); PYTHON3 the interpreter.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
builddir=.
case "${1:-}" in
-*|"") ;;
*) builddir=$1; shift ;;
esac

only=
prev=
for arg in "$@"; do
	case $arg in
	--only=*) only=${arg#--only=} ;;
	esac
	[ "$prev" = --only ] && only=$arg
	prev=$arg
done

if [ "$only" != dovecot ]; then
	for prog in src/daemon/clustermaild src/ctl/clustermailctl; do
		if [ ! -x "$builddir/$prog" ]; then
			echo "run-imap-bench: $builddir/$prog is not built" \
				"(make first)" >&2
			exit 1
		fi
	done
fi

if [ "$only" != clustermail ] && [ ! -x /usr/lib/dovecot/imap ]; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		echo "run-imap-bench: installing dovecot-imapd"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
			dovecot-core dovecot-imapd >/dev/null || {
			apt-get update -q >/dev/null &&
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
				dovecot-core dovecot-imapd >/dev/null
		}
		# the package starts a system-wide Dovecot where an init
		# system lets it; the benchmark runs its own private one
	else
		echo "run-imap-bench: no dovecot-imapd and cannot install it:" \
			"clustermail figures only" >&2
	fi
fi

exec "${PYTHON3:-python3}" "$here/imap-bench.py" --builddir "$builddir" "$@"
