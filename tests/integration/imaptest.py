"""Helpers for the IMAP integration tests: a daemon with users, imaplib
connections, and a raw line-level client for protocol tests.

    def test_x(imap_daemon):            # fixture from conftest.py
        m = imaptest.login(imap_daemon)  # imaplib.IMAP4, logged in as ALICE
        raw = imaptest.Raw(imap_daemon)  # greeting already read
        untagged, tagged = raw.cmd("a1 NOOP")
"""
import imaplib
import os
import socket
import ssl
import time

import cmtest

ALICE = "alice@example.com"
BOB = "bob@example.com"
PASSWORD = "correct horse battery"
USERS = (ALICE, BOB)


def add_user(daemon, address, password=PASSWORD):
    r = daemon.ctl("user", "add", address, "--password-stdin",
                   input=password + "\n")
    assert r.returncode == 0, r.stderr


def start_daemon(workdir, node="n1", extra="", users=USERS, replace=None):
    """A running daemon with IMAP (STARTTLS port) and IMAPS, and users;
    replace={"key": "value"} changes a line of cmtest's default config."""
    d = cmtest.Daemon(workdir, node=node, services=["imap", "imaps"],
                      extra=extra)
    if replace:
        d.write_config(replace=replace)
    spool = os.path.join(str(workdir), "spool")
    if not os.path.isdir(spool):
        os.mkdir(spool)
        cmtest.prepare_workdir(spool)
    for u in users:
        add_user(d, u)
    d.start()
    return d


def connect(daemon, tls=False):
    """An imaplib client, not logged in (imaps when tls)."""
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return imaplib.IMAP4_SSL("127.0.0.1", daemon.ports["imaps"],
                                 ssl_context=ctx, timeout=30)
    return imaplib.IMAP4("127.0.0.1", daemon.ports["imap"], timeout=30)


def login(daemon, user=ALICE, password=PASSWORD, tls=False):
    m = connect(daemon, tls)
    typ, _ = m.login(user, password)
    assert typ == "OK"
    return m


def deliver(daemon, user, message, mailbox=None):
    """Deliver with the LDA (clustermailctl deliver), like the MTA would."""
    args = ["deliver", user]
    if mailbox:
        args += ["--mailbox", mailbox]
    if isinstance(message, str):
        message = message.encode()
    import subprocess
    r = subprocess.run([cmtest.binary("clustermailctl"), "-c", daemon.conf,
                        *args], input=message, capture_output=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr


class Raw:
    """A line-level IMAP client on a plain socket, for protocol tests."""

    def __init__(self, daemon, port=None, read_greeting=True, timeout=10):
        self.sock = socket.create_connection(
            ("127.0.0.1", port or daemon.ports["imap"]), timeout=timeout)
        self.buf = b""
        self.greeting = self.line() if read_greeting else None

    def close(self):
        self.sock.close()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def line(self):
        """One line without CRLF (bytes decoded as UTF-8, lossy)."""
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed; got %r" % self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode(errors="replace")

    def read_exact(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def response(self, tag):
        """Lines until the tagged one: (untagged lines, tagged line).
        A literal {N} at the end of a line is read and appended to it."""
        lines = []
        while True:
            line = self.line()
            while line.endswith("}") and "{" in line:
                n = int(line[line.rindex("{") + 1:-1].rstrip("+"))
                line += "\r\n" + self.read_exact(n).decode(errors="replace")
                line += self.line()
            if line.startswith(tag + " "):
                return lines, line
            lines.append(line)

    def cmd(self, line):
        """Send "TAG rest" (CRLF added) and wait for TAG's reply."""
        self.send(line + "\r\n")
        return self.response(line.split(" ", 1)[0])

    def login(self, user=ALICE, password=PASSWORD):
        _, tagged = self.cmd(f'L1 LOGIN "{user}" "{password}"')
        assert tagged.startswith("L1 OK"), tagged
        return self


def wait_for(predicate, timeout=10, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def idle_until(r, predicate, timeout):
    """Lines a Raw client in IDLE receives until predicate(line) is true
    or timeout seconds have passed."""
    r.sock.settimeout(timeout)
    got = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            line = r.line()
            got.append(line)
            if predicate(line):
                break
    except (TimeoutError, OSError, EOFError):
        pass
    r.sock.settimeout(10)
    return got
