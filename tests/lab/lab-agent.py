#!/usr/bin/env python3
"""lab-agent.py - the lab VMs' command server (runs in the guest).

One request per TCP connection on the lab network: a JSON line
{"cmd": "shell command", "timeout": seconds}; the answer is one JSON line
{"rc": exit status (or -1 on timeout), "out": stdout and stderr}. The
command runs under bash as root. It only ever listens on the VM's address
on the lab bridge, which exists inside the test's network namespace.
Processes a command leaves in the background must redirect their output
(the answer is sent once stdout closes).
"""
import argparse
import json
import socketserver
import subprocess


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        try:
            req = json.loads(self.rfile.readline())
            cmd = req["cmd"]
            timeout = float(req.get("timeout", 60))
        except (ValueError, KeyError, TypeError) as exc:
            self.reply(-2, "bad request: %s" % exc)
            return
        try:
            proc = subprocess.run(["bash", "-c", cmd], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, timeout=timeout,
                                  check=False, start_new_session=True)
            self.reply(proc.returncode, proc.stdout.decode(errors="replace"))
        except subprocess.TimeoutExpired as exc:
            out = (exc.stdout or b"").decode(errors="replace")
            self.reply(-1, out + "\n[lab-agent: timed out after %ss]" % timeout)

    def reply(self, rc, out):
        self.wfile.write(json.dumps({"rc": rc, "out": out}).encode() + b"\n")


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", required=True)
    parser.add_argument("--port", type=int, default=7000)
    args = parser.parse_args()
    with Server((args.listen, args.port), Handler) as server:
        server.serve_forever()


if __name__ == "__main__":
    main()
