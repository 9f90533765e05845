#!/bin/bash
# run-torture.sh - the mailbox store's concurrency torture test (make check).
#
# Several `torture --run` processes, each pretending to be a different node
# (own node name, own fcntl lock client), hammer two users' mailboxes on one
# spool through the store API; every 2-6 seconds one of them, chosen at
# random, is SIGKILLed and started again with a fresh journal. At the
# deadline the survivors stop by themselves, `torture --dump` prints the
# final state (running `index check` before and after the final sync), and
# check-spool.py proves the invariants over all journals and that state.
#
# Environment:
#   TORTURE_SECONDS  run time (default 40: about a minute with the check)
#   TORTURE_NODES    processes (default 3)
#   TORTURE_SEED     seed of the kill schedule and of the processes
#                    (default random; printed, so a failure can be rerun)
#   TORTURE_KEEP     set: keep the work directory even on success
#   TORTURE_WRITER_MARK  set: the processes mark the change log while they
#                    write it, as on NFS (see mailbox.c, "Writers that died
#                    on NFS"), so kills exercise that recovery here
#   TORTURE_DIR      parent of the work directory (default $TMPDIR or /tmp)
#   top_builddir, top_srcdir, PYTHON3: set by `make check`
#
# Exit: 0 all invariants hold, 1 violations (printed; the work directory is
# kept and named), 77 skipped (no torture binary, no python3, no io_uring).
set -u

top_builddir=${top_builddir:-.}
top_srcdir=${top_srcdir:-.}
PYTHON3=${PYTHON3:-python3}
torture=$top_builddir/tests/torture/torture
checker=$top_srcdir/tests/torture/check-spool.py
duration=${TORTURE_SECONDS:-40}
nodes=${TORTURE_NODES:-3}
seed=${TORTURE_SEED:-$(( (RANDOM << 15) | RANDOM ))}
users=alice@torture.test,bob@torture.test
compact_bytes=16384	# small: the change log is compacted often

if [ ! -x "$torture" ]; then
	echo "SKIP: $torture is not built"
	exit 77
fi
if ! "$PYTHON3" -c 'import sys' 2>/dev/null; then
	echo "SKIP: no python3 for the checker"
	exit 77
fi

work=$(mktemp -d "${TORTURE_DIR:-${TMPDIR:-/tmp}}/cm-torture.XXXXXX") || exit 1
mkdir -p "$work/journal" "$work/logs" "$work/spool"
declare -A pid seg
result=1

# cleanup - kill and reap every process we started; drop the work dir
# unless something failed (or TORTURE_KEEP is set)
# shellcheck disable=SC2317  # reached through the EXIT trap
cleanup() {
	for n in "${!pid[@]}"; do
		kill -KILL "${pid[$n]}" 2>/dev/null
		wait "${pid[$n]}" 2>/dev/null
	done
	if [ "$result" = 0 ] && [ -z "${TORTURE_KEEP:-}" ]; then
		rm -rf "$work"
	else
		echo "torture: work directory kept: $work (seed $seed)"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

RANDOM=$seed
now() { date +%s; }

# running PID - alive and not a zombie (kill -0 succeeds on zombies)
running() {
	local stat state
	read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
	state=${stat##*) }
	[ "${state%% *}" != Z ]
}

# start_node N - start node N's current segment in the background
start_node() {
	local n=$1 s=${seg[$1]}
	"$torture" --run --spool "$work/spool" --users "$users" \
		--node "node$n" --journal "$work/journal/node$n.$s.log" \
		--deadline "$deadline" --seed $((seed * 131 + n * 1009 + s)) \
		--compact-bytes "$compact_bytes" ${TORTURE_WRITER_MARK:+--writer-mark} \
		2>"$work/logs/node$n.$s.err" &
	pid[$n]=$!
}

# reap N HOW - wait for node N's process and record how its segment ended
reap() {
	local n=$1 status
	{ wait "${pid[$n]}"; } 2>/dev/null	# no "Killed" job notice
	status=$?
	if [ "$2" = killed ] && [ "$status" = 137 ]; then
		echo "node$n.${seg[$n]} killed" >>"$work/exits"
	else
		echo "node$n.${seg[$n]} exit:$status" >>"$work/exits"
	fi
	unset "pid[$n]"
}

echo "torture: $nodes nodes for ${duration}s, seed $seed, in $work"
if ! "$torture" --init --spool "$work/spool" --users "$users" \
		--journal "$work/journal/init.log" 2>"$work/logs/init.err"; then
	cat "$work/logs/init.err"
	if grep -q io_uring "$work/logs/init.err"; then
		result=0
		echo "SKIP: io_uring is not usable here"
		exit 77
	fi
	echo "FAIL: torture --init failed"
	exit 1
fi

deadline=$(( $(now) + duration ))
for n in $(seq 1 "$nodes"); do
	seg[$n]=1
	start_node "$n"
done

# The schedule: a tick every 0.2 s. A process that died on its own (a
# crash: the checker fails it) is restarted at once, as a cluster manager
# would; every 2-6 s a random victim is SIGKILLed and restarted.
kills=0
next_kill=$(( $(date +%s%N) / 1000000 + 2000 + RANDOM % 4000 ))
while [ $(( $(now) + 1 )) -lt "$deadline" ]; do
	sleep 0.2
	for n in $(seq 1 "$nodes"); do
		if ! running "${pid[$n]}"; then
			reap "$n" exited
			seg[$n]=$(( ${seg[$n]} + 1 ))
			start_node "$n"
		fi
	done
	[ $(( $(date +%s%N) / 1000000 )) -lt "$next_kill" ] && continue
	victim=$(( RANDOM % nodes + 1 ))
	kill -KILL "${pid[$victim]}"
	reap "$victim" killed
	kills=$((kills + 1))
	seg[$victim]=$(( ${seg[$victim]} + 1 ))
	start_node "$victim"
	next_kill=$(( $(date +%s%N) / 1000000 + 2000 + RANDOM % 4000 ))
done

# The survivors stop at the deadline; one still running a minute later
# hangs (a lost lock wake-up, a loop): kill it and let the checker fail it.
for n in $(seq 1 "$nodes"); do
	while running "${pid[$n]}" && [ "$(now)" -lt $((deadline + 60)) ]; do
		sleep 0.2
	done
	if running "${pid[$n]}"; then
		echo "torture: node$n hangs after the deadline; killing it"
		kill -KILL "${pid[$n]}"
		echo "node$n.${seg[$n]} hung" >>"$work/exits"
		wait "${pid[$n]}" 2>/dev/null
		unset "pid[$n]"
	else
		reap "$n" exited
	fi
done
echo "torture: $kills kills; checking"

"$torture" --dump --spool "$work/spool" --users "$users" \
	>"$work/dump.txt" 2>"$work/logs/dump.err"
status=$?
if [ "$status" != 0 ]; then
	echo "FAIL: torture --dump exited with $status:"
	tail -20 "$work/logs/dump.err"
	exit 1
fi
"$PYTHON3" "$checker" --journals "$work/journal" --dump "$work/dump.txt" \
	--exits "$work/exits" --logs "$work/logs"
result=$?
errors=$(cat "$work"/logs/*.err | grep -c -E 'error|panic' || true)
[ "$errors" != 0 ] && echo "torture: the store logged $errors error lines (in $work/logs)" &&
	cat "$work"/logs/*.err | grep -E 'error|panic' | sort | uniq -c | sort -rn | head -5
if [ "$result" = 0 ]; then
	echo "PASS: torture ($nodes nodes, ${duration}s, $kills kills, seed $seed)"
else
	echo "FAIL: torture (seed $seed)"
fi
exit "$result"
