#!/usr/bin/env python3
"""ha_client.py - the mail clients of the host failover test (check-ha.sh).

Runs in the client network namespace and talks to the service addresses
(VIPs) with smtplib and imaplib, like any mail client would.

  send --vip IP --count N --tag TAG --acked FILE
        N messages over SMTP; the Message-ID of every message the server
        acknowledged (250 after DATA) is appended to FILE at once.
  load --vips IP,IP --tag TAG --acked FILE --stop FILE
        keep sending, one connection per message, round robin over the
        addresses, until FILE --stop exists; failures (the node died) are
        counted, not fatal.
  wait-imap --vip IP --since EPOCH --timeout S
        poll until an IMAP LOGIN on IP succeeds; print the seconds since
        EPOCH; fail after S seconds.
  check --vip IP --acked FILE...
        IMAP LOGIN, SELECT INBOX: every acknowledged Message-ID must be
        there exactly once, and no message may appear twice.
"""

import argparse
import imaplib
import os
import re
import smtplib
import socket
import sys
import time

USER = "u@example.com"
PASSWORD = "ha-test-password"
SENDER = "sender@example.org"


def send_one(vip, message_id, timeout, verbose=False):
    """send_one - one message over one SMTP connection; True if acknowledged"""
    body = (f"From: <{SENDER}>\r\nTo: <{USER}>\r\nMessage-ID: <{message_id}>\r\n"
            f"Subject: ha test {message_id}\r\n\r\nsent to {vip}\r\n")
    start = time.monotonic()
    try:
        with smtplib.SMTP(vip, 25, timeout=timeout) as smtp:
            smtp.sendmail(SENDER, [USER], body)
        return True
    except (OSError, smtplib.SMTPException) as err:
        if verbose:
            print(f"send {vip}: {message_id} not acknowledged after "
                  f"{time.monotonic() - start:.1f} s: {err!r}", file=sys.stderr)
        return False


def cmd_send(args):
    """cmd_send - N messages, all must be acknowledged"""
    failed = 0
    with open(args.acked, "a", encoding="ascii") as acked:
        for i in range(args.count):
            message_id = f"{args.tag}-{i}@ha.test"
            if send_one(args.vip, message_id, 10, verbose=True):
                acked.write(message_id + "\n")
                acked.flush()
            else:
                failed += 1
    print(f"send {args.vip}: {args.count - failed}/{args.count} acknowledged")
    return 1 if failed else 0


def cmd_load(args):
    """cmd_load - background load until the stop file appears"""
    vips = args.vips.split(",")
    sent = failed = 0
    start = time.monotonic()
    with open(args.acked, "a", encoding="ascii") as acked:
        i = 0
        while True:
            if os.path.exists(args.stop) or time.monotonic() - start > args.max_seconds:
                break
            vip = vips[i % len(vips)]
            message_id = f"{args.tag}-{i}@ha.test"
            if send_one(vip, message_id, 2):
                acked.write(message_id + "\n")
                acked.flush()
                sent += 1
            else:
                failed += 1
                time.sleep(0.2)
            i += 1
    elapsed = time.monotonic() - start
    print(f"load: {sent} acknowledged, {failed} failed attempts in {elapsed:.1f} s")
    return 0


def imap_login(vip, timeout):
    """imap_login - a logged-in IMAP4 connection"""
    imap = imaplib.IMAP4(vip, 143, timeout=timeout)
    imap.login(USER, PASSWORD)
    return imap


def cmd_wait_imap(args):
    """cmd_wait_imap - time until IMAP answers on the address again"""
    deadline = time.monotonic() + args.timeout
    attempts = 0
    while time.monotonic() < deadline:
        attempts += 1
        try:
            imap = imap_login(args.vip, 1)
            imap.logout()
            print(f"{time.time() - args.since:.2f}")
            return 0
        except (OSError, imaplib.IMAP4.error):
            time.sleep(0.1)
    print(f"wait-imap {args.vip}: no IMAP login within {args.timeout} s "
          f"({attempts} attempts)", file=sys.stderr)
    return 1


MESSAGE_ID_RE = re.compile(rb"Message-ID:\s*<([^>]*)>", re.IGNORECASE)


def cmd_check(args):
    """cmd_check - every acknowledged message is there exactly once"""
    expected = []
    for path in args.acked:
        with open(path, encoding="ascii") as acked:
            expected += [line.strip() for line in acked if line.strip()]
    imap = imap_login(args.vip, 10)
    status, data = imap.select("INBOX", readonly=True)
    if status != "OK":
        print(f"check {args.vip}: SELECT INBOX failed: {data}", file=sys.stderr)
        return 1
    count = int(data[0])
    seen = {}
    if count:
        status, data = imap.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        if status != "OK":
            print(f"check {args.vip}: FETCH failed: {data}", file=sys.stderr)
            return 1
        for item in data:
            if not isinstance(item, tuple):
                continue
            match = MESSAGE_ID_RE.search(item[1])
            if match:
                mid = match.group(1).decode("ascii", "replace")
                seen[mid] = seen.get(mid, 0) + 1
    imap.logout()
    missing = [m for m in expected if m not in seen]
    twice = [m for m, n in seen.items() if n > 1]
    print(f"check {args.vip}: {count} messages in INBOX, {len(expected)} acknowledged, "
          f"{len(missing)} missing, {len(twice)} duplicated")
    for mid in missing[:10]:
        print(f"  missing: {mid}", file=sys.stderr)
    for mid in twice[:10]:
        print(f"  duplicated: {mid} ({seen[mid]} times)", file=sys.stderr)
    return 1 if missing or twice else 0


def main():
    """main - dispatch the subcommand"""
    socket.setdefaulttimeout(10)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("send")
    p.add_argument("--vip", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--tag", required=True)
    p.add_argument("--acked", required=True)
    p = sub.add_parser("load")
    p.add_argument("--vips", required=True)
    p.add_argument("--tag", required=True)
    p.add_argument("--acked", required=True)
    p.add_argument("--stop", required=True)
    p.add_argument("--max-seconds", type=float, default=300)
    p = sub.add_parser("wait-imap")
    p.add_argument("--vip", required=True)
    p.add_argument("--since", type=float, required=True)
    p.add_argument("--timeout", type=float, default=30)
    p = sub.add_parser("check")
    p.add_argument("--vip", required=True)
    p.add_argument("--acked", nargs="+", required=True)
    args = parser.parse_args()
    return {"send": cmd_send, "load": cmd_load, "wait-imap": cmd_wait_imap,
            "check": cmd_check}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
