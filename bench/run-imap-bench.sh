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
bench_name=run-imap-bench
. "$here/benchlib.sh"

builddir=.
case "${1:-}" in
-*|"") ;;
*) builddir=$1; shift ;;
esac

only=$(bench_only "$@")

if [ "$only" != dovecot ]; then
	bench_need_built "$builddir" src/daemon/clustermaild \
		src/ctl/clustermailctl
fi

if [ "$only" != clustermail ]; then
	bench_install_dovecot /usr/lib/dovecot/imap dovecot-imapd dovecot-imapd \
		dovecot-core dovecot-imapd
fi

exec "${PYTHON3:-python3}" "$here/imap-bench.py" --builddir "$builddir" "$@"
