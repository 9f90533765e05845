#!/usr/bin/env python3
"""lab_load.py - load, verification and an SMTP sink for the lab's
node-failure test (test c). Run inside the lab's network namespace.

  lab_load.py load --user U --seconds S --acked FILE ADDR...
      LMTP deliveries to U, round robin over the nodes, one connection
      per message, until S seconds are over; the Message-ID of every
      delivery that got its 250 is appended to FILE at once. A node that
      does not answer (dead) is skipped. Prints the counts.
  lab_load.py verify --user U --password P --acked FILE ADDR...
      On every node: each acknowledged Message-ID is in INBOX exactly once.
  lab_load.py sink --listen ADDR --port N --log FILE --open-flag FILE
      A minimal SMTP server: answers 451 to MAIL until FILE (open-flag)
      exists, then accepts and appends each message's Message-ID to LOG.
"""
import argparse
import imaplib
import os
import re
import smtplib
import socketserver
import sys
import time


def cmd_load(args):
    acked = ok = failed = 0
    end = time.monotonic() + args.seconds
    i = 0
    down_until = {}    # a node that failed is left alone for a while
    with open(args.acked, "a") as log:
        while time.monotonic() < end:
            addr = args.addrs[i % len(args.addrs)]
            i += 1
            if down_until.get(addr, 0) > time.monotonic():
                if all(down_until.get(a, 0) > time.monotonic()
                       for a in args.addrs):
                    time.sleep(0.5)
                continue
            mid = "<load-%d-%d@lab.test>" % (os.getpid(), i)
            msg = ("From: load@lab.test\r\nTo: %s\r\nMessage-ID: %s\r\n"
                   "Subject: load %d\r\n\r\nbody %d via %s\r\n"
                   % (args.user, mid, i, i, addr))
            try:
                lmtp = smtplib.LMTP(addr, 24, timeout=10)
                lmtp.sendmail("load@lab.test", [args.user], msg)
                log.write(mid + "\n")
                log.flush()
                acked += 1
                try:
                    lmtp.quit()
                except (OSError, smtplib.SMTPException):
                    pass
                ok += 1
            except (OSError, smtplib.SMTPException):
                failed += 1
                down_until[addr] = time.monotonic() + 15
    print("load: %d acknowledged, %d attempts failed" % (acked, failed))
    return 0


def mailbox_mids(addr, user, password):
    m = imaplib.IMAP4(addr, 143, timeout=60)
    m.login(user, password)
    m.select("INBOX", readonly=True)
    typ, data = m.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
    mids = []
    if typ == "OK":
        for item in data:
            if isinstance(item, tuple):
                found = re.search(rb"<[^>]+>", item[1])
                if found:
                    mids.append(found.group().decode())
    m.logout()
    return mids


def cmd_verify(args):
    with open(args.acked) as f:
        acked = [line.strip() for line in f if line.strip()]
    bad = 0
    for addr in args.addrs:
        mids = mailbox_mids(addr, args.user, args.password)
        counts = {}
        for mid in mids:
            counts[mid] = counts.get(mid, 0) + 1
        missing = [mid for mid in acked if counts.get(mid, 0) == 0]
        twice = [mid for mid, n in counts.items() if n > 1]
        print("verify %s: %d acknowledged, %d in INBOX, %d missing, %d "
              "duplicated" % (addr, len(acked), len(mids), len(missing),
                              len(twice)))
        for mid in (missing + twice)[:10]:
            print("  " + mid)
        bad += len(missing) + len(twice)
    return 1 if bad else 0


class SinkHandler(socketserver.StreamRequestHandler):
    def send(self, line):
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self):
        self.send("220 labhost sink")
        while True:
            line = self.rfile.readline()
            if not line:
                return
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                self.send("250 labhost")
            elif verb == b"MAIL":
                if os.path.exists(self.server.args.open_flag):
                    self.send("250 ok")
                else:
                    self.send("451 4.3.0 sink closed, try later")
            elif verb == b"RCPT":
                self.send("250 ok")
            elif verb == b"DATA":
                self.send("354 go on")
                mid = None
                while True:
                    data = self.rfile.readline()
                    if not data or data in (b".\r\n", b".\n"):
                        break
                    if mid is None and data.lower().startswith(b"message-id:"):
                        found = re.search(rb"<[^>]+>", data)
                        mid = found.group().decode() if found else "?"
                with open(self.server.args.log, "a") as log:
                    log.write("%s\n" % mid)
                self.send("250 queued")
            elif verb == b"QUIT":
                self.send("221 bye")
                return
            else:
                self.send("250 ok")


class Sink(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def cmd_sink(args):
    with Sink((args.listen, args.port), SinkHandler) as server:
        server.args = args
        server.serve_forever()


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("load")
    p.add_argument("--user", required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--acked", required=True)
    p.add_argument("addrs", nargs="+")
    p = sub.add_parser("verify")
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--acked", required=True)
    p.add_argument("addrs", nargs="+")
    p = sub.add_parser("sink")
    p.add_argument("--listen", required=True)
    p.add_argument("--port", type=int, default=2525)
    p.add_argument("--log", required=True)
    p.add_argument("--open-flag", required=True)
    args = parser.parse_args()
    return {"load": cmd_load, "verify": cmd_verify, "sink": cmd_sink}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
