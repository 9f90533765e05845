#!/usr/bin/env python3
"""lab_protocol.py - cross-node protocol test in the VM lab (test b).

With the nodes A, B, C (addresses on the lab network, clustermaild on
each on one shared spool): a session on C sits in IDLE and a session on
B has INBOX selected; a message is delivered over LMTP on A; C's IDLE
must announce it (EXISTS) within --idle-limit seconds of the LMTP 250,
and B must find it by its Message-ID. Then B sets \\Flagged and every
node sees the flag; C marks it \\Deleted and expunges, and every node
agrees that it is gone and that the mailbox is the same everywhere
(UIDVALIDITY, UIDNEXT, the UID list). With two addresses, the second
plays both B and C.

usage: lab_protocol.py --user U --password P ADDR_A ADDR_B [ADDR_C]
Exit 0 pass, 1 fail (the failed check printed).
"""
import argparse
import imaplib
import re
import select
import smtplib
import socket
import sys
import time


class Fail(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Fail(what)
    print("ok: " + what)


def imap_login(addr, user, password):
    m = imaplib.IMAP4(addr, 143, timeout=60)
    m.login(user, password)
    return m


def uid_search(m, criteria):
    typ, data = m.uid("SEARCH", None, *criteria)
    if typ != "OK":
        raise Fail("UID SEARCH %s: %s" % (criteria, data))
    return [int(x) for x in data[0].split()]


def status(m):
    typ, data = m.status("INBOX", "(UIDNEXT UIDVALIDITY MESSAGES)")
    if typ != "OK":
        raise Fail("STATUS: %s" % data)
    return dict(re.findall(r"(UIDNEXT|UIDVALIDITY|MESSAGES) (\d+)",
                           data[0].decode()))


class Idler:
    """A raw IMAP connection in IDLE on INBOX."""

    def __init__(self, addr, user, password):
        self.sock = socket.create_connection((addr, 143), timeout=60)
        self.buf = b""
        self.readline()  # greeting
        self.command('a1 LOGIN "%s" "%s"' % (user, password), b"a1 ")
        self.command("a2 SELECT INBOX", b"a2 ")
        self.sock.sendall(b"a3 IDLE\r\n")
        line = self.readline()
        while not line.startswith(b"+"):
            line = self.readline()

    def readline(self, timeout=60):
        end = time.monotonic() + timeout
        while b"\r\n" not in self.buf:
            left = end - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                return None
            chunk = self.sock.recv(4096)
            if not chunk:
                raise Fail("IDLE connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def command(self, cmd, tag):
        self.sock.sendall(cmd.encode() + b"\r\n")
        while True:
            line = self.readline()
            if line is None:
                raise Fail("no answer to " + cmd)
            if line.startswith(tag):
                if not line.startswith(tag + b"OK"):
                    raise Fail("%s: %s" % (cmd, line))
                return

    def wait_exists(self, limit):
        """Seconds until an untagged EXISTS arrives, or None."""
        start = time.monotonic()
        while time.monotonic() - start < limit + 5:
            line = self.readline(limit + 5 - (time.monotonic() - start))
            if line is None:
                return None
            if re.match(rb"\* \d+ EXISTS", line):
                return time.monotonic() - start
        return None

    def done(self):
        self.sock.sendall(b"DONE\r\n")
        self.sock.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--idle-limit", type=float, default=1.0)
    parser.add_argument("addrs", nargs="+")
    args = parser.parse_args()
    nodes = args.addrs
    a, b = nodes[0], nodes[1]
    c = nodes[2] if len(nodes) > 2 else nodes[1]
    mid = "<lab-%d-%d@lab.test>" % (time.time(), id(args) & 0xffff)
    try:
        sessions = {n: imap_login(n, args.user, args.password) for n in nodes}
        for m in sessions.values():
            m.select("INBOX")
        idler = Idler(c, args.user, args.password)
        msg = ("From: lab@lab.test\r\nTo: %s\r\nMessage-ID: %s\r\n"
               "Subject: lab protocol test\r\n\r\nhello from %s\r\n"
               % (args.user, mid, a))
        lmtp = smtplib.LMTP(a, 24, timeout=60)
        lmtp.sendmail("lab@lab.test", [args.user], msg)
        lmtp.quit()
        print("ok: LMTP delivery on %s acknowledged" % a)
        delay = idler.wait_exists(args.idle_limit)
        idler.done()
        check(delay is not None, "IDLE on %s heard the delivery (%s)" % (
            c, "%.2fs after the LMTP 250" % delay if delay is not None
            else "nothing within %.0fs" % (args.idle_limit + 5)))
        check(delay <= args.idle_limit, "IDLE on %s within %.1fs (%.2fs)"
              % (c, args.idle_limit, delay))
        mb = sessions[b]
        mb.noop()
        uids = uid_search(mb, ["HEADER", "Message-ID", mid])
        check(len(uids) == 1, "IMAP on %s finds the message once (UIDs %s)"
              % (b, uids))
        uid = str(uids[0])
        typ, data = mb.uid("STORE", uid, "+FLAGS", r"(\Flagged)")
        check(typ == "OK", "STORE \\Flagged on %s" % b)
        for n, m in sessions.items():
            m.noop()
            found = uid_search(m, ["FLAGGED", "UID", uid])
            check(found == [int(uid)], "%s sees \\Flagged on UID %s" % (n, uid))
        mc = sessions[c]
        typ, _ = mc.uid("STORE", uid, "+FLAGS", r"(\Deleted)")
        typ2, _ = mc.expunge()
        check(typ == "OK" and typ2 == "OK", "expunge on %s" % c)
        views = {}
        for n, m in sessions.items():
            m.noop()
            check(uid_search(m, ["UID", uid]) == [],
                  "%s no longer has UID %s" % (n, uid))
            views[n] = (uid_search(m, ["ALL"]), status(m))
        first = next(iter(views.values()))
        for n, view in views.items():
            check(view == first, "%s agrees on the mailbox: %d messages, %s"
                  % (n, len(view[0]), view[1]))
        # Folders: create on one node, rename on another, list and
        # delete on a third (each must work on every file system).
        name = "Lab-%d" % (time.time() * 1000 % 1000000)
        renamed = name + "-renamed"
        typ, data = sessions[a].create(name)
        check(typ == "OK", "CREATE %s on %s (%s)" % (name, a, data))
        typ, data = sessions[b].rename(name, renamed)
        check(typ == "OK", "RENAME %s %s on %s (%s)" % (name, renamed, b, data))
        typ, data = mc.list('""', "Lab-*")
        listed = [line.decode() for line in data if line]
        check(typ == "OK" and any(renamed in line for line in listed) and
              not any(line.endswith('"%s"' % name) or line.endswith(" " + name)
                      for line in listed),
              "LIST on %s shows only %s (%s)" % (c, renamed, listed))
        typ, data = mc.delete(renamed)
        check(typ == "OK", "DELETE %s on %s (%s)" % (renamed, c, data))
        for m in sessions.values():
            m.logout()
    except (Fail, OSError, imaplib.IMAP4.error, smtplib.SMTPException) as exc:
        print("FAIL: %s" % exc)
        return 1
    print("PASS: protocol test over %s" % ", ".join(nodes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
