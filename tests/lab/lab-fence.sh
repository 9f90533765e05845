#!/bin/bash
# lab-fence.sh - the lab's fence agent, run by dlm_controld in a VM
# (dlm.conf: fence_all /lab/tests/lab/lab-fence.sh). dlm_controld writes
# key=value lines on standard input, among them node=NODEID. The agent
# asks the host's fence server (lab-fenced.py, on the bridge address) to
# power the node off - SIGKILL its qemu process - and succeeds only when
# the host confirms that the process is gone.
nodeid=
while IFS= read -r line; do
	case $line in
	node=*) nodeid=${line#node=} ;;
	esac
done
[ -n "$nodeid" ] || exit 1
exec 3<>/dev/tcp/10.77.0.254/7001 || exit 1
echo "fence $nodeid" >&3
IFS= read -r -t 60 answer <&3
echo "$(date +%T) $(hostname) fence node $nodeid: ${answer:-no answer}" >>"/lab/out/$(hostname)/fence.log"
[ "$answer" = ok ]
