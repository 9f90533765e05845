#!/bin/sh
# run-store-bench.sh - the mailbox store benchmark against Dovecot (issue
# item 10): LDA deliveries per second (1 and 4 processes, one mailbox and
# many), in-process API deliveries, and open+sync of a 100,000-message
# mailbox cold and warm. See bench/README and store-bench.py.
#
#   bench/run-store-bench.sh [BUILDDIR] [store-bench.py options]
#
# BUILDDIR (default: the current directory) holds the built
# src/ctl/clustermailctl and tests/torture/torture. Dovecot comes from
# Debian's packages: dovecot-core is installed with apt-get when it is
# missing and we are root (nothing else is installed). Environment:
# BENCH_DIR is where the temporary spools go (default /var/tmp: use a
# disk-backed file system, fsync on tmpfs measures nothing).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
bench_name=run-store-bench
. "$here/benchlib.sh"

builddir=.
case "${1:-}" in
-*|"") ;;
*) builddir=$1; shift ;;
esac

bench_need_built "$builddir" src/ctl/clustermailctl tests/torture/torture

bench_install_dovecot /usr/lib/dovecot/dovecot-lda dovecot-lda \
	"dovecot-core (for dovecot-lda)" dovecot-core

exec "${PYTHON3:-python3}" "$here/store-bench.py" --builddir "$builddir" "$@"
