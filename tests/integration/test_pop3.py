"""POP3 end to end (RFC 1939, 2449, 2595, 5034): poplib, a raw client,
curl and fetchmail against a real clustermaild with POP3, POP3S and IMAP
on one spool (IMAP is used to check what POP3 left behind)."""
import base64
import os
import poplib
import re
import signal
import socket
import ssl
import subprocess
import time

import pytest

import cmtest
import imaptest
from imaptest import ALICE, BOB, PASSWORD


def start_pop3_daemon(workdir, extra=""):
    d = cmtest.Daemon(workdir, services=["pop3", "pop3s", "imap"],
                      extra=extra)
    spool = os.path.join(str(workdir), "spool")
    if not os.path.isdir(spool):
        os.mkdir(spool)
        cmtest.prepare_workdir(spool)
    for u in (ALICE, BOB):
        imaptest.add_user(d, u)
    d.start()
    return d


@pytest.fixture
def pop3_daemon(workdir):
    d = start_pop3_daemon(workdir)
    yield d
    d.stop()


def message(n, body="Hello.\n"):
    return (f"From: bob@example.com\nTo: alice@example.com\n"
            f"Subject: message {n}\nMessage-ID: <m{n}@example.com>\n\n"
            f"{body}")


def tls_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def pop(daemon, user=ALICE):
    p = poplib.POP3("127.0.0.1", daemon.ports["pop3"], timeout=30)
    p.user(user)
    p.pass_(PASSWORD)
    return p


def imap(daemon, user=ALICE):
    m = imaptest.login(daemon, user)
    typ, _ = m.select("INBOX")
    assert typ == "OK"
    return m


def imap_count(daemon, user=ALICE):
    m = imaptest.login(daemon, user)
    typ, data = m.select("INBOX", readonly=True)
    m.logout()
    return int(data[0])


class Raw:
    """A line-level POP3 client."""

    def __init__(self, daemon, port=None, sock=None, timeout=20):
        self.sock = sock or socket.create_connection(
            ("127.0.0.1", port or daemon.ports["pop3"]), timeout=timeout)
        self.buf = b""
        self.greeting = self.line()

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed; got %r" % self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def cmd(self, line):
        self.sock.sendall(line.encode() + b"\r\n")
        return self.line().decode()

    def multiline_raw(self):
        """The raw bytes of a multi-line body up to (without) CRLF.CRLF."""
        while b"\r\n.\r\n" not in self.buf and not self.buf.startswith(b".\r\n"):
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise EOFError("closed inside a multi-line response")
            self.buf += chunk
        if self.buf.startswith(b".\r\n"):
            self.buf = self.buf[3:]
            return b""
        body, self.buf = self.buf.split(b"\r\n.\r\n", 1)
        return body + b"\r\n"

    def login(self, user=ALICE):
        assert self.cmd(f"USER {user}").startswith("+OK")
        reply = self.cmd(f"PASS {PASSWORD}")
        assert reply.startswith("+OK"), reply
        return self

    def close(self):
        self.sock.close()


def test_poplib_session(pop3_daemon):
    for n in range(1, 4):
        imaptest.deliver(pop3_daemon, ALICE, message(n))
    p = pop(pop3_daemon)
    assert p.getwelcome() == b"+OK clustermail ready"
    count, size = p.stat()
    assert count == 3
    _, listing, _ = p.list()
    sizes = {int(a): int(b) for a, b in (x.split() for x in listing)}
    assert sorted(sizes) == [1, 2, 3] and sum(sizes.values()) == size
    _, uidls, _ = p.uidl()
    assert len({x.split()[1] for x in uidls}) == 3
    resp, lines, octets = p.retr(2)
    assert resp.startswith(b"+OK %d octets" % sizes[2])
    # the count is of the message with CRLF line ends, before stuffing
    assert sum(len(x) + 2 for x in lines) == sizes[2] == octets
    assert b"Subject: message 2" in lines
    _, top, _ = p.top(3, 0)
    assert top[-1] == b"" and b"Subject: message 3" in top
    assert b"Hello." not in top
    _, top1, _ = p.top(3, 1)
    assert top1[-1] == b"Hello."
    assert p.dele(1).startswith(b"+OK")
    with pytest.raises(poplib.error_proto, match="deleted"):
        p.retr(1)
    assert p.stat() == (2, size - sizes[1])
    with pytest.raises(poplib.error_proto):
        p.retr(9)
    assert p.rset().startswith(b"+OK")
    assert p.stat() == (3, size)
    assert p.noop().startswith(b"+OK")
    assert p.quit().startswith(b"+OK")
    assert imap_count(pop3_daemon) == 3


def test_capa_and_auth_plain(pop3_daemon):
    imaptest.deliver(pop3_daemon, ALICE, message(1))
    r = Raw(pop3_daemon)
    assert r.cmd("CAPA") == "+OK Capability list follows"
    caps = r.multiline_raw().decode().split("\r\n")
    for c in ("TOP", "USER", "UIDL", "RESP-CODES", "PIPELINING",
              "AUTH-RESP-CODE", "SASL PLAIN", "STLS",
              "IMPLEMENTATION clustermail", "EXPIRE NEVER", "LOGIN-DELAY 0"):
        assert c in caps, caps
    # cancelled exchange
    assert r.cmd("AUTH PLAIN") == "+ "
    assert r.cmd("*").startswith("-ERR")
    # without initial response
    token = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode()).decode()
    assert r.cmd("AUTH PLAIN") == "+ "
    assert r.cmd(token).startswith("+OK")
    assert r.cmd("STAT").startswith("+OK 1 ")
    assert r.cmd("AUTH PLAIN " + token).startswith("-ERR")   # wrong state
    assert r.cmd("QUIT").startswith("+OK")
    # with initial response; wrong password answered with [AUTH]
    r = Raw(pop3_daemon)
    bad = base64.b64encode(f"\0{ALICE}\0wrong".encode()).decode()
    assert r.cmd("AUTH PLAIN " + bad).startswith("-ERR [AUTH] ")
    assert r.cmd("AUTH PLAIN !!!!").startswith("-ERR")
    assert r.cmd("AUTH PLAIN " + token).startswith("+OK")
    assert r.cmd("QUIT").startswith("+OK")


def test_stls_then_login(pop3_daemon):
    p = poplib.POP3("127.0.0.1", pop3_daemon.ports["pop3"], timeout=30)
    p.stls(tls_context())
    assert "STLS" not in p.capa()
    p.user(ALICE)
    p.pass_(PASSWORD)
    assert p.stat() == (0, 0)
    with pytest.raises(poplib.error_proto):
        p._shortcmd("STLS")
    p.quit()


def test_pop3s(pop3_daemon):
    imaptest.deliver(pop3_daemon, BOB, message(1))
    p = poplib.POP3_SSL("127.0.0.1", pop3_daemon.ports["pop3s"],
                        context=tls_context(), timeout=30)
    assert p.getwelcome() == b"+OK clustermail ready"
    p.user(BOB)
    p.pass_(PASSWORD)
    assert p.stat()[0] == 1
    p.quit()


def test_plaintext_login_refused_for_untrusted_peer(workdir):
    d = start_pop3_daemon(workdir, extra="trusted_networks = 10.0.0.0/8")
    try:
        r = Raw(d)
        assert r.cmd("CAPA").startswith("+OK")
        caps = r.multiline_raw().decode().split("\r\n")
        assert "STLS" in caps and "USER" not in caps
        assert r.cmd(f"USER {ALICE}").startswith("-ERR [AUTH] ")
        assert r.cmd(f"PASS {PASSWORD}").startswith("-ERR")
        token = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode()).decode()
        assert r.cmd("AUTH PLAIN " + token).startswith("-ERR [AUTH] ")
        r.close()
        p = poplib.POP3("127.0.0.1", d.ports["pop3"], timeout=30)
        p.stls(tls_context())
        p.user(ALICE)
        assert p.pass_(PASSWORD).startswith(b"+OK")
        p.quit()
    finally:
        d.stop()


def test_uidl_stable_across_sessions_and_imap(pop3_daemon):
    for n in range(1, 3):
        imaptest.deliver(pop3_daemon, ALICE, message(n))
    p = pop(pop3_daemon)
    first = p.uidl()[1]
    p.quit()
    m = imap(pop3_daemon)
    m.store("1:*", "+FLAGS", "(\\Seen \\Flagged)")
    typ, data = m.status("INBOX", "(UIDVALIDITY)")
    uidvalidity = int(re.search(rb"UIDVALIDITY (\d+)", data[0]).group(1))
    typ, data = m.fetch("1", "(UID)")
    uid = int(re.search(rb"UID (\d+)", data[0]).group(1))
    m.logout()
    p = pop(pop3_daemon)
    assert p.uidl()[1] == first
    assert p.uidl(1).split()[2] == b"%08x%08x" % (uidvalidity, uid)
    p.quit()


def test_snapshot_hides_new_mail_and_survives_expunge(pop3_daemon):
    for n in range(1, 3):
        imaptest.deliver(pop3_daemon, ALICE, message(n))
    p = pop(pop3_daemon)
    assert p.stat()[0] == 2
    m = imap(pop3_daemon)
    m.append("INBOX", None, None, message(3).encode())
    imaptest.deliver(pop3_daemon, ALICE, message(4))
    m.store("1", "+FLAGS", "(\\Deleted)")
    m.expunge()
    m.logout()
    assert p.stat()[0] == 2
    with pytest.raises(poplib.error_proto, match="removed"):
        p.retr(1)
    assert b"Subject: message 2" in p.retr(2)[1]
    # deleting the already expunged message and one more is fine
    p.dele(1)
    p.dele(2)
    assert p.quit().startswith(b"+OK")
    p = pop(pop3_daemon)
    assert p.stat()[0] == 2
    assert b"Subject: message 3" in p.retr(1)[1]
    p.quit()


def test_first_login_creates_spool(pop3_daemon):
    carol = "carol@example.com"
    imaptest.add_user(pop3_daemon, carol)
    p = pop(pop3_daemon, carol)
    assert p.stat() == (0, 0)
    assert p.uidl()[1] == []
    p.quit()
    assert imap_count(pop3_daemon, carol) == 0


def test_dele_quit_removes_rset_and_drop_keep(pop3_daemon):
    for n in range(1, 5):
        imaptest.deliver(pop3_daemon, ALICE, message(n))
    # DELE + RSET + QUIT keeps
    p = pop(pop3_daemon)
    p.dele(1)
    p.rset()
    p.quit()
    assert imap_count(pop3_daemon) == 4
    # DELE then a dropped connection deletes nothing
    r = Raw(pop3_daemon).login()
    assert r.cmd("DELE 1").startswith("+OK")
    r.close()
    time.sleep(0.3)
    assert imap_count(pop3_daemon) == 4
    # DELE + QUIT removes exactly those
    p = pop(pop3_daemon)
    p.dele(1)
    p.dele(3)
    assert p.quit().startswith(b"+OK")
    m = imaptest.login(pop3_daemon)
    m.select("INBOX", readonly=True)
    _, data = m.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    subjects = [x[1].strip() for x in data if isinstance(x, tuple)]
    m.logout()
    assert subjects == [b"Subject: message 2", b"Subject: message 4"]


def test_dot_stuffing_and_counts(pop3_daemon):
    body = ".starts with a dot\n..two dots\n.\nplain\nno newline at end"
    imaptest.deliver(pop3_daemon, ALICE, message(1, body))
    r = Raw(pop3_daemon).login()
    size = int(r.cmd("LIST 1").split()[2])
    assert r.cmd("RETR 1") == f"+OK {size} octets"
    wire = r.multiline_raw()
    assert b"\r\n..starts with a dot\r\n...two dots\r\n..\r\nplain\r\n" in wire
    unstuffed = b"\r\n".join(x[1:] if x.startswith(b".") else x
                             for x in wire.split(b"\r\n"))
    # the LF-only file was sent with CRLF; the last line got a CRLF added
    assert len(unstuffed) - 2 == size
    assert b"\n" not in wire.replace(b"\r\n", b"")
    assert r.cmd("TOP 1 2").startswith("+OK")
    assert r.multiline_raw().endswith(
        b"\r\n\r\n..starts with a dot\r\n...two dots\r\n")
    r.cmd("QUIT")


def daemon_rss_kb(daemon):
    with open(f"/proc/{daemon.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def is_asan_build():
    if os.environ.get("CLUSTERMAIL_ASAN"):
        return True
    out = subprocess.run(["ldd", cmtest.binary("clustermaild")],
                         capture_output=True, text=True).stdout
    return "libasan" in out


def test_large_retr_bounded_memory(pop3_daemon):
    line = b"0123456789abcdefghijklmnopqrstuvwxyz" * 2 + b"\n"
    body = line * (20 * 1024 * 1024 // len(line))
    msg = message(1).encode()[:-len(b"Hello.\n")] + body
    imaptest.deliver(pop3_daemon, ALICE, msg)
    r = Raw(pop3_daemon).login()
    size = int(r.cmd("LIST 1").split()[2])
    assert size == len(msg.replace(b"\n", b"\r\n"))
    before = daemon_rss_kb(pop3_daemon)
    r.sock.sendall(b"RETR 1\r\n")
    assert r.line() == b"+OK %d octets" % size
    peak = before
    got = bytearray(r.buf)      # what came with the +OK line
    r.buf = b""
    r.sock.settimeout(60)
    while not got.endswith(b"\r\n.\r\n"):
        chunk = r.sock.recv(1 << 20)
        assert chunk, "closed during RETR"
        got += chunk
        peak = max(peak, daemon_rss_kb(pop3_daemon))
        time.sleep(0.001)   # a slowish reader
    assert bytes(got[:-3]) == msg.replace(b"\n", b"\r\n")
    if is_asan_build():
        print("ASan build: RSS bound not checked")
    else:
        print("daemon RSS before/peak kB:", before, peak)
        assert peak - before < 8 * 1024, (before, peak)
    assert r.cmd("QUIT").startswith("+OK")


def test_bad_commands_and_long_lines(pop3_daemon):
    r = Raw(pop3_daemon)
    assert r.cmd("X" * 300).startswith("-ERR line too long")
    assert r.cmd("NOOP").startswith("-ERR")          # not in AUTHORIZATION
    assert r.cmd("STAT").startswith("-ERR")
    assert r.cmd("CAPA").startswith("+OK")
    r.multiline_raw()
    r.login()
    assert r.cmd("RETR x").startswith("-ERR")
    assert r.cmd("LIST 0").startswith("-ERR")
    assert r.cmd("TOP 1").startswith("-ERR")
    assert r.cmd("USER x").startswith("-ERR")
    replies = []
    for _ in range(20):
        try:
            replies.append(r.cmd("BOGUS"))
        except (EOFError, OSError):
            break
    assert all(x.startswith("-ERR") for x in replies), replies
    assert "-ERR too many invalid commands" in replies, replies
    assert len(replies) <= 10


@pytest.mark.skipif(not cmtest.have("curl"), reason="curl not installed")
def test_curl_retrieves(pop3_daemon):
    imaptest.deliver(pop3_daemon, ALICE, message(1, "curl body line\n"))
    out = subprocess.run(
        ["curl", "-s", "--max-time", "30",
         f"pop3://127.0.0.1:{pop3_daemon.ports['pop3']}/1",
         "--user", f"{ALICE}:{PASSWORD}"], capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert b"Subject: message 1" in out.stdout
    assert b"curl body line" in out.stdout


@pytest.mark.skipif(not cmtest.have("fetchmail"),
                    reason="fetchmail not installed")
@pytest.mark.parametrize("keep", [True, False])
def test_fetchmail_pulls_all(pop3_daemon, workdir, keep):
    for n in range(1, 4):
        imaptest.deliver(pop3_daemon, ALICE, message(n, ".dotted\nend\n"))
    mbox = os.path.join(str(workdir), "fetched.mbox")
    rc = os.path.join(str(workdir), "fetchmailrc")
    with open(rc, "w") as f:
        f.write(f'poll 127.0.0.1 protocol pop3 port {pop3_daemon.ports["pop3"]}'
                f' user "{ALICE}" password "{PASSWORD}"'
                f' {"keep" if keep else "nokeep"} sslproto "" \n')
    os.chmod(rc, 0o600)
    env = dict(os.environ, HOME=str(workdir))
    out = subprocess.run(
        ["fetchmail", "-f", rc, "--nosyslog", "-i",
         os.path.join(str(workdir), "fetchids"), "--mda",
         f"sh -c 'echo From fetchmail >> {mbox}; cat >> {mbox}'"],
        capture_output=True, timeout=120, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    with open(mbox, "rb") as f:
        data = f.read()
    for n in range(1, 4):
        assert b"Subject: message %d" % n in data
    assert data.count(b"\n.dotted\nend\n") == 3
    assert imap_count(pop3_daemon) == (3 if keep else 0)


def test_sigterm_with_session_open(pop3_daemon):
    imaptest.deliver(pop3_daemon, ALICE, message(1))
    r = Raw(pop3_daemon).login()
    assert r.cmd("DELE 1").startswith("+OK")
    pop3_daemon.signal(signal.SIGTERM)
    assert r.line() == b"-ERR [SYS/TEMP] server shutting down"
    assert pop3_daemon.wait_exit(timeout=20) == 0
    r.close()
    # the DELE without QUIT was not applied
    pop3_daemon.start()
    assert imap_count(pop3_daemon) == 1


def test_pipelined_commands_answer_in_order(pop3_daemon):
    for n in range(1, 3):
        imaptest.deliver(pop3_daemon, ALICE, message(n))
    r = Raw(pop3_daemon)
    r.sock.sendall(f"USER {ALICE}\r\nPASS {PASSWORD}\r\nSTAT\r\nUIDL 2\r\n"
                   "RETR 1\r\nDELE 2\r\nLIST 2\r\nQUIT\r\n".encode())
    assert r.line().startswith(b"+OK")                 # USER
    assert r.line().startswith(b"+OK Logged in")
    assert r.line().startswith(b"+OK 2 ")
    assert re.match(rb"\+OK 2 [0-9a-f]{16}$", r.line())
    assert r.line().startswith(b"+OK ")                # RETR
    assert b"Subject: message 1" in r.multiline_raw()
    assert r.line().startswith(b"+OK")                 # DELE
    assert r.line().startswith(b"-ERR")                # LIST of a DELE'd one
    assert r.line().startswith(b"+OK")                 # QUIT
    assert imap_count(pop3_daemon) == 1


def test_auth_response_too_long(pop3_daemon):
    r = Raw(pop3_daemon)
    assert r.cmd("AUTH PLAIN") == "+ "
    assert r.cmd("A" * 5000).startswith("-ERR")
    assert r.cmd("CAPA").startswith("+OK")
    r.multiline_raw()
    assert r.cmd("QUIT").startswith("+OK")
