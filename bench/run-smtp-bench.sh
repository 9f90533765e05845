#!/bin/sh
# run-smtp-bench.sh - the SMTP/LMTP benchmark against Dovecot and Postfix:
# messages per second into local mailboxes over LMTP and SMTP with
# Postfix's smtp-source (clustermaild vs Dovecot's LMTP vs a Postfix ->
# Dovecot LMTP chain), and outbound queue throughput through a relayhost
# (smtp-sink). See the top of smtp-bench.py for what is measured and how.
#
#   bench/run-smtp-bench.sh [BUILDDIR] [smtp-bench.py options]
#
# BUILDDIR (default: the current directory) holds the built
# src/daemon/clustermaild and src/ctl/clustermailctl. smtp-source and
# smtp-sink come with Debian's postfix package (it must be installed; the
# system Postfix is neither configured nor started: the benchmark runs
# private instances). Dovecot's LMTP comes from dovecot-lmtpd, installed
# with apt-get when it is missing and we are root. Environment: BENCH_DIR
# is where the temporary spools and queues go (default /var/tmp: use a
# disk-backed file system, fsync on tmpfs measures nothing); PYTHON3 the
# interpreter.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
bench_name=run-smtp-bench
. "$here/benchlib.sh"

builddir=.
case "${1:-}" in
-*|"") ;;
*) builddir=$1; shift ;;
esac

only=$(bench_only "$@")

if [ "$only" != dovecot ] && [ "$only" != postfix ]; then
	bench_need_built "$builddir" src/daemon/clustermaild \
		src/ctl/clustermailctl
fi

if [ ! -x /usr/sbin/smtp-source ] || [ ! -x /usr/sbin/smtp-sink ]; then
	echo "run-smtp-bench: smtp-source/smtp-sink missing: install the" \
		"postfix package (it need not be configured)" >&2
	exit 1
fi

if [ "$only" != clustermail ]; then
	bench_install_dovecot /usr/lib/dovecot/lmtp dovecot-lmtpd dovecot-lmtpd \
		dovecot-core dovecot-lmtpd
fi

exec "${PYTHON3:-python3}" "$here/smtp-bench.py" --builddir "$builddir" "$@"
