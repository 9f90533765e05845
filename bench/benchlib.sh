# benchlib.sh - shell pieces shared by run-imap-bench.sh, run-smtp-bench.sh
# and run-store-bench.sh (sourced, never run). The caller sets $bench_name
# (the prefix of every message) before using these functions.
# shellcheck shell=sh disable=SC2154

# bench_only ARGS...: the value of --only X / --only=X among ARGS, or
# nothing; printed on stdout.
bench_only() {
	_only=
	_prev=
	for _arg in "$@"; do
		case $_arg in
		--only=*) _only=${_arg#--only=} ;;
		esac
		[ "$_prev" = --only ] && _only=$_arg
		_prev=$_arg
	done
	printf '%s\n' "$_only"
}

# bench_need_built BUILDDIR PROG...: exit 1 with a message unless every
# PROG (a path below BUILDDIR) is built.
bench_need_built() {
	_dir=$1
	shift
	for _prog in "$@"; do
		if [ ! -x "$_dir/$_prog" ]; then
			echo "$bench_name: $_dir/$_prog is not built (make first)" >&2
			exit 1
		fi
	done
}

# bench_install_dovecot BINARY MISSING WHAT PACKAGE...: when BINARY is
# missing, install PACKAGE... with apt-get (updating the lists once if the
# first try fails) when we are root, else say that only our figures will
# come. MISSING names the absent package, WHAT what is being installed.
# The package may start a system-wide Dovecot where an init system lets
# it; the benchmarks run their own private one.
bench_install_dovecot() {
	_bin=$1
	_missing=$2
	_what=$3
	shift 3
	[ -x "$_bin" ] && return 0
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		echo "$bench_name: installing $_what"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" \
			>/dev/null || {
			apt-get update -q >/dev/null &&
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
				"$@" >/dev/null
		}
	else
		echo "$bench_name: no $_missing and cannot install it:" \
			"clustermail figures only" >&2
	fi
}
