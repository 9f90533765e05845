#!/bin/sh
# build.sh - configure and build clustermail out of tree.
#
# usage: scripts/build.sh BUILDDIR [configure options...]
# Warnings are errors, and the cluster libraries (libdlm, corosync libcpg)
# are required: this is the build the tests and the demo use.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
builddir=$1
shift
cd "$top"
if [ ! -x configure ] || [ configure.ac -nt configure ] || [ Makefile.am -nt Makefile.in ]; then
	autoreconf -fi
fi
mkdir -p "$builddir"
cd "$builddir"
if [ ! -f Makefile ] || [ "$top/configure" -nt config.status ]; then
	"$top/configure" --enable-werror --with-dlm=yes --with-cpg=yes \
		--sysconfdir=/etc --localstatedir=/var --runstatedir=/run "$@"
fi
make -j"$(nproc)"
