#!/usr/bin/env python3
"""lab_pcmk.py - helpers of the lab's Pacemaker test (f).

  lab_pcmk.py online N  < crm_mon --one-shot --output-as=xml
      exit 0 when N nodes are online and there is a DC; prints the DC
  lab_pcmk.py placed  < crm_mon --one-shot --output-as=xml
      exit 0 when dlm, mailfs and clustermail are started on every online
      node, no resource has failed, and each VIP (vip1..vip3) is started
      on exactly one node; prints "vip1=NODE vip2=NODE vip3=NODE" then
  lab_pcmk.py wait-imap --vip IP --since EPOCH --timeout S --user U
                        --password P
      poll until an IMAP LOGIN on IP succeeds; print the seconds from
      EPOCH until the first TCP connection was accepted and until the
      first LOGIN succeeded ("connect=S login=S"); fail after S seconds.
      Unlike tests/ha/ha_client.py's wait-imap (1 s for everything, made
      for the host), only the connect is short (1 s: the address may
      still lead to the dead VM); the login may take 20 s, as it can on a
      survivor under load in an emulated VM. Run in the lab's namespace.
"""
import argparse
import imaplib
import socket
import sys
import time
import xml.etree.ElementTree as ET

VIPS = ("vip1", "vip2", "vip3")
CLONES = ("dlm", "mailfs", "clustermail")


def cluster_state(args):
    root = ET.fromstring(sys.stdin.read())
    online = {n.get("name") for n in root.iter("node")
              if n.get("online") == "true" and n.get("type") != "ping"
              and n.get("name")}
    if args.cmd == "online":
        dc = root.find("summary/current_dc")
        ok = (len(online) == args.count and dc is not None
              and dc.get("present") == "true")
        if ok:
            print(dc.get("name"))
        return 0 if ok else 1
    where = {}
    failed = False
    for r in root.iter("resource"):
        if r.get("failed") == "true":
            failed = True
        if r.get("role") == "Started" and r.get("active") == "true":
            where.setdefault(r.get("id"), set()).update(
                n.get("name") for n in r.iter("node"))
    ok = not failed
    # nodes in standby are online but run nothing
    # (only the node list's entries carry "online": node_history and
    # resources have node elements too)
    active = {n.get("name") for n in root.iter("node")
              if n.get("online") == "true" and n.get("type") != "ping"
              and n.get("standby") != "true" and n.get("name")}
    for rid in CLONES:
        ok = ok and where.get(rid, set()) == active
    for v in VIPS:
        ok = ok and len(where.get(v, ())) == 1
    if ok:
        print(" ".join(f"{v}={min(where[v])}" for v in VIPS))
    return 0 if ok else 1


class SlowIMAP4(imaplib.IMAP4):
    """SlowIMAP4 - a short connect timeout, a long one for the rest"""

    def _create_socket(self, timeout):
        sock = socket.create_connection((self.host, self.port), 1)
        sock.settimeout(timeout)
        SlowIMAP4.connected = True
        return sock


def wait_imap(args):
    deadline = time.monotonic() + args.timeout
    connect_at = None
    while time.monotonic() < deadline:
        SlowIMAP4.connected = False
        try:
            imap = SlowIMAP4(args.vip, 143, timeout=20)
            if connect_at is None:
                connect_at = time.time() - args.since
            imap.login(args.user, args.password)
            login_at = time.time() - args.since
            imap.logout()
            print(f"connect={connect_at:.2f} login={login_at:.2f}")
            return 0
        except (OSError, imaplib.IMAP4.error):
            if SlowIMAP4.connected and connect_at is None:
                connect_at = time.time() - args.since
            time.sleep(0.2)
    print(f"wait-imap {args.vip}: no IMAP login within {args.timeout} s",
          file=sys.stderr)
    return 1


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("online")
    p.add_argument("count", type=int)
    sub.add_parser("placed")
    p = sub.add_parser("wait-imap")
    p.add_argument("--vip", required=True)
    p.add_argument("--since", type=float, required=True)
    p.add_argument("--timeout", type=float, required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    args = parser.parse_args()
    if args.cmd == "wait-imap":
        return wait_imap(args)
    return cluster_state(args)


if __name__ == "__main__":
    sys.exit(main())
