#!/usr/bin/env python3
"""lab-fenced.py - the lab's fence device, on the host side.

Listens on the bridge address inside the lab's network namespace. A line
"fence NODEID" from a VM's fence agent (lab-fence.sh) makes it SIGKILL the
qemu process of vmNODEID (its pid file is RUNDIR/vmNODEID.pid), wait until
the process is gone, log the fact to RUNDIR/fence.log and answer "ok". A
VM whose qemu is already gone is reported fenced as well (it is powered
off). Only the lab's own qemu processes are ever signalled.

Two more requests, for the Pacemaker fence agent fence_lab, are answered
without a log line: "status NODEID" ("on" or "off") and "ping" ("pong").
"""
import argparse
import os
import signal
import socketserver
import time

RUNDIR = "."


def qemu_alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def fence(nodeid):
    try:
        with open(os.path.join(RUNDIR, "vm%d.pid" % nodeid)) as pidfile:
            pid = int(pidfile.read().strip())
    except (OSError, ValueError):
        return "no such node"
    if qemu_alive(pid):
        os.kill(pid, signal.SIGKILL)
    for _ in range(300):
        if not qemu_alive(pid):
            return "ok"
        time.sleep(0.1)
    return "still running"


def status(nodeid):
    try:
        with open(os.path.join(RUNDIR, "vm%d.pid" % nodeid)) as pidfile:
            pid = int(pidfile.read().strip())
    except (OSError, ValueError):
        return "no such node"
    return "on" if qemu_alive(pid) else "off"


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        words = self.rfile.readline().decode(errors="replace").split()
        if words == ["ping"]:
            self.wfile.write(b"pong\n")
            return
        if len(words) == 2 and words[0] == "status" and words[1].isdigit():
            self.wfile.write(status(int(words[1])).encode() + b"\n")
            return
        if len(words) == 2 and words[0] == "fence" and words[1].isdigit():
            answer = fence(int(words[1]))
        else:
            answer = "bad request"
        with open(os.path.join(RUNDIR, "fence.log"), "a") as log:
            log.write("%s from %s: %s -> %s\n" % (
                time.strftime("%H:%M:%S"), self.client_address[0],
                " ".join(words), answer))
        self.wfile.write(answer.encode() + b"\n")


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def main():
    global RUNDIR
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", required=True)
    parser.add_argument("--port", type=int, default=7001)
    parser.add_argument("--rundir", required=True)
    args = parser.parse_args()
    RUNDIR = args.rundir
    with Server((args.listen, args.port), Handler) as server:
        server.serve_forever()


if __name__ == "__main__":
    main()
