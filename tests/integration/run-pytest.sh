#!/bin/sh
# run-pytest.sh - run the integration tests (real daemons on loopback, real
# clients) with Debian's pytest. Exit 77 (skip) with the reason printed when
# pytest is missing, so a partial machine never reports a silent pass.
: "${PYTHON3:=/usr/bin/python3}"
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
if ! "$PYTHON3" -c 'import pytest' 2>/dev/null; then
	echo "SKIP: pytest is not available for $PYTHON3 (apt-get install python3-pytest)"
	exit 77
fi
export PYTHONDONTWRITEBYTECODE=1
# The source tree may be read-only (make distcheck): no cache files there.
exec "$PYTHON3" -m pytest -p no:cacheprovider -rs -v \
	--rootdir="$top_srcdir/tests/integration" "$top_srcdir/tests/integration" "$@"
