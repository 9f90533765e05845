"""Helpers for the SMTP, submission and LMTP integration tests: a daemon
with users and every mail listener, smtplib clients, a raw line client,
and a look into a user's INBOX on the spool.

    def test_x(smtp_daemon):                  # fixture: see below
        with smtptest.smtp(smtp_daemon) as s:  # smtplib.SMTP, EHLO sent
            s.sendmail(...)
        msgs = smtptest.inbox(smtp_daemon, smtptest.ALICE)
"""
import os
import smtplib
import socket
import ssl
import time

import cmtest
import imaptest

ALICE = imaptest.ALICE
BOB = imaptest.BOB
PASSWORD = imaptest.PASSWORD

SERVICES = ["smtp", "submission", "submissions", "lmtp", "imap", "pop3"]


def start_daemon(workdir, node="n1", extra="", users=(ALICE, BOB)):
    """A running daemon with every mail listener and the users. Queued mail
    goes to a relayhost on a loopback port where nothing listens, so no
    test ever sends a DNS query or mail off this machine."""
    if "relayhost" not in extra:
        extra = f"relayhost = [127.0.0.1]:{cmtest.free_port()}\n" + extra
    d = cmtest.Daemon(workdir, node=node, services=SERVICES, extra=extra)
    spool = os.path.join(str(workdir), "spool")
    if not os.path.isdir(spool):
        os.mkdir(spool)
        cmtest.prepare_workdir(spool)
    for u in users:
        imaptest.add_user(d, u)
    d.start()
    return d


def tls_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def smtp(daemon, service="smtp"):
    s = smtplib.SMTP("127.0.0.1", daemon.ports[service], timeout=30)
    s.ehlo("client.example.net")
    return s


def submission(daemon, user=ALICE, password=PASSWORD, implicit=False):
    """A logged-in submission client (STARTTLS, or the submissions port)."""
    if implicit:
        s = smtplib.SMTP_SSL("127.0.0.1", daemon.ports["submissions"],
                             context=tls_context(), timeout=30)
        s.ehlo("client.example.net")
    else:
        s = smtplib.SMTP("127.0.0.1", daemon.ports["submission"], timeout=30)
        s.ehlo("client.example.net")
        s.starttls(context=tls_context())
        s.ehlo("client.example.net")
    if user is not None:
        s.login(user, password)
    return s


def lmtp(daemon):
    s = smtplib.LMTP("127.0.0.1", daemon.ports["lmtp"], timeout=30)
    s.ehlo("mta.example.net")
    return s


def message(subject="test", body="hello\r\n", sender=BOB, to=ALICE,
            extra_headers=""):
    return (f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
            f"Message-ID: <{time.time_ns()}@example.net>\r\n{extra_headers}"
            f"\r\n{body}").encode()


def maildir_path(daemon, user, folder=None):
    local, domain = user.split("@")
    path = os.path.join(daemon.dir, "spool", domain, local)
    return path if folder is None else os.path.join(path, "." + folder)


def inbox(daemon, user):
    """The messages in user's INBOX (new/ and cur/), as bytes, oldest first."""
    path = maildir_path(daemon, user)
    items = []
    for sub in ("new", "cur"):
        try:
            names = os.listdir(os.path.join(path, sub))
        except FileNotFoundError:     # not created yet (or being created)
            continue
        for name in names:
            full = os.path.join(path, sub, name)
            try:
                with open(full, "rb") as f:
                    items.append((os.stat(full).st_mtime_ns, name, f.read()))
            except FileNotFoundError:  # moved from new/ to cur/ meanwhile
                continue
    items.sort()
    return [data for _, _, data in items]


def wait_inbox(daemon, user, count, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msgs = inbox(daemon, user)
        if len(msgs) >= count:
            return msgs
        time.sleep(0.05)
    return inbox(daemon, user)


class Raw:
    """A line-level client: send raw bytes, read whole replies."""

    def __init__(self, daemon, service="smtp", tls=False):
        sock = socket.create_connection(("127.0.0.1", daemon.ports[service]),
                                        timeout=10)
        if tls:
            sock = tls_context().wrap_socket(sock, server_hostname="localhost")
        self.sock = sock
        self.buf = b""
        self.greeting = self.reply()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed; got %r" % self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode("utf-8", "replace")

    def reply(self):
        """(code, [lines]) of one possibly multi-line reply."""
        lines = []
        while True:
            line = self.line()
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return int(line[:3]), lines

    def cmd(self, text):
        self.send(text + "\r\n")
        return self.reply()

    def closed(self, timeout=5):
        """True when the server closed the connection (after any data)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (socket.timeout, TimeoutError):
            return False
        except (ConnectionResetError, ssl.SSLError):
            return True

    def close(self):
        self.sock.close()
