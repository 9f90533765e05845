#!/usr/bin/env python3
"""labctl.py - run a shell command in a lab VM through its agent.

usage: labctl.py [--timeout S] [--wait S] ADDR COMMAND
Prints the command's output and exits with its status (124 on timeout,
125 when the agent cannot be reached). --wait S: keep trying to reach the
agent for up to S seconds first (a VM that is still booting). Run it
inside the lab's network namespace (ip netns exec).
"""
import argparse
import json
import socket
import sys
import time


def run(addr, cmd, timeout, port=7000):
    with socket.create_connection((addr, port), timeout=10) as sock:
        sock.settimeout(timeout + 30)
        sock.sendall(json.dumps({"cmd": cmd, "timeout": timeout}).encode()
                     + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--wait", type=float, default=0)
    parser.add_argument("addr")
    parser.add_argument("command")
    args = parser.parse_args()
    deadline = time.monotonic() + args.wait
    while True:
        try:
            reply = run(args.addr, args.command, args.timeout)
            break
        except OSError as exc:
            if time.monotonic() >= deadline:
                print("labctl: %s: %s" % (args.addr, exc), file=sys.stderr)
                sys.exit(125)
            time.sleep(1)
    sys.stdout.write(reply["out"])
    sys.exit(124 if reply["rc"] == -1 else reply["rc"] & 0xff)


if __name__ == "__main__":
    main()
