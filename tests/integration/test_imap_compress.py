"""IMAP COMPRESS=DEFLATE (RFC 4978): a client that switches its connection
to raw deflate after "COMPRESS DEFLATE" over plain IMAP, IMAPS and after
STARTTLS, and what it must see: byte-exact large FETCH and APPEND, IDLE
updates, the protocol errors, and a server that drops (only) a client
sending corrupt compressed data.

imaplib knows nothing of COMPRESS, so ZClient below speaks IMAP on a
socket and, once compression is on, deflates what it sends (a sync flush
per write, as a real client does) and inflates what it reads.
"""
import socket
import ssl
import zlib

import pytest

import imaptest

BIG_SIZE = 1024 * 1024


def tls_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class ZClient:
    """IMAP over a socket, optionally compressed (raw deflate both ways)."""

    def __init__(self, daemon, transport="plain", timeout=30):
        port = daemon.ports["imaps" if transport == "imaps" else "imap"]
        self.sock = socket.create_connection(("127.0.0.1", port),
                                             timeout=timeout)
        if transport == "imaps":
            self.sock = tls_context().wrap_socket(self.sock)
        self.buf = b""
        self.zin = self.zout = None
        self.wire_in = 0        # bytes received on the wire, after TLS
        self.greeting = self.line()
        if transport == "starttls":
            _, tagged = self.cmd("S1 STARTTLS")
            assert tagged.startswith(b"S1 OK"), tagged
            assert self.buf == b""
            self.sock = tls_context().wrap_socket(self.sock)

    def close(self):
        self.sock.close()

    def start_compress(self):
        self.zin = zlib.decompressobj(wbits=-15)
        self.zout = zlib.compressobj(wbits=-15)
        # Whatever arrived behind the tagged OK is already compressed.
        pending, self.buf = self.buf, b""
        if pending:
            self.buf = self.zin.decompress(pending)

    def compress_bytes(self, data):
        """What send() would put on the wire for data (compressed)."""
        return self.zout.compress(data) + self.zout.flush(zlib.Z_SYNC_FLUSH)

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        if self.zout is not None:
            data = self.compress_bytes(data)
        self.sock.sendall(data)

    def send_raw(self, data):
        self.sock.sendall(data)

    def fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed; got %r" % self.buf[-200:])
        self.wire_in += len(chunk)
        if self.zin is not None:
            chunk = self.zin.decompress(chunk)
        self.buf += chunk

    def line(self):
        """One line without CRLF, as bytes."""
        while b"\r\n" not in self.buf:
            self.fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read_exact(self, n):
        while len(self.buf) < n:
            self.fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def response(self, tag):
        """(untagged lines, tagged line); a literal {N} ending a line is
        read and appended (bytes, exact)."""
        lines = []
        tag = tag.encode()
        while True:
            line = self.line()
            while line.endswith(b"}") and b"{" in line:
                n = int(line[line.rindex(b"{") + 1:-1].rstrip(b"+"))
                line += b"\r\n" + self.read_exact(n) + self.line()
            if line.startswith(tag + b" "):
                return lines, line
            lines.append(line)

    def cmd(self, text):
        self.send(text + "\r\n")
        return self.response(text.split(" ", 1)[0])

    def login(self):
        _, tagged = self.cmd(
            f'L1 LOGIN "{imaptest.ALICE}" "{imaptest.PASSWORD}"')
        assert tagged.startswith(b"L1 OK"), tagged

    def compress(self):
        _, tagged = self.cmd("Z1 COMPRESS DEFLATE")
        assert tagged.startswith(b"Z1 OK"), tagged
        self.start_compress()

    def append(self, mailbox, message):
        self.send(f"A1 APPEND {mailbox} {{{len(message)}}}\r\n")
        cont = self.line()
        assert cont.startswith(b"+"), cont
        self.send(message + b"\r\n")
        return self.response("A1")


def big_message():
    """About 1 MiB, compressible text, CRLF lines."""
    head = (b"From: bob@example.com\r\nTo: alice@example.com\r\n"
            b"Subject: big compressed\r\n\r\n")
    body = []
    size = len(head)
    i = 0
    while size < BIG_SIZE:
        line = b"line %07d: the quick brown fox jumps over the lazy dog\r\n" % i
        body.append(line)
        size += len(line)
        i += 1
    return head + b"".join(body)


@pytest.fixture
def zclients(imap_daemon):
    made = []

    def make(transport="plain", login=True, compress=True):
        c = ZClient(imap_daemon, transport)
        made.append(c)
        if login:
            c.login()
        if compress:
            c.compress()
        return c
    yield make
    for c in made:
        c.close()


def test_capability_lists_compress_deflate(zclients):
    # Fails until COMPRESS=DEFLATE is added to CAPABILITY (imap-commands.c).
    c = zclients(compress=False)
    untagged, tagged = c.cmd("C1 CAPABILITY")
    assert tagged.startswith(b"C1 OK")
    caps = b" ".join(untagged).upper().split()
    assert b"COMPRESS=DEFLATE" in caps, untagged


@pytest.mark.parametrize("transport", ["plain", "imaps", "starttls"])
def test_large_append_and_fetch_through_compression(zclients, transport):
    c = zclients(transport)
    msg = big_message()
    _, tagged = c.append("INBOX", msg)
    assert tagged.startswith(b"A1 OK"), tagged
    untagged, tagged = c.cmd("S2 SELECT INBOX")
    assert tagged.startswith(b"S2 OK"), tagged
    assert b"* 1 EXISTS" in untagged
    before = c.wire_in
    untagged, tagged = c.cmd("F1 FETCH 1 BODY.PEEK[]")
    assert tagged.startswith(b"F1 OK"), tagged
    assert len(untagged) == 1
    first = untagged[0]
    start = first.index(b"}\r\n") + 3
    assert first.startswith(b"* 1 FETCH (BODY[] {%d}" % len(msg)), first[:60]
    assert first[start:start + len(msg)] == msg
    assert first[start + len(msg):] == b")"
    # The response really travelled compressed (repetitive text).
    assert c.wire_in - before < len(msg) // 3, c.wire_in - before


def test_command_pipelined_behind_compress(zclients):
    c = zclients(compress=False)
    zout = zlib.compressobj(wbits=-15)
    noop = zout.compress(b"N1 NOOP\r\n") + zout.flush(zlib.Z_SYNC_FLUSH)
    c.send_raw(b"Z1 COMPRESS DEFLATE\r\n" + noop)
    _, tagged = c.response("Z1")
    assert tagged.startswith(b"Z1 OK"), tagged
    c.start_compress()
    c.zout = zout
    _, tagged = c.response("N1")
    assert tagged.startswith(b"N1 OK"), tagged


def test_idle_update_arrives_compressed(zclients, imap_daemon):
    c = zclients()
    untagged, tagged = c.cmd("S1 SELECT INBOX")
    assert tagged.startswith(b"S1 OK"), tagged
    exists = [int(u.split()[1]) for u in untagged if u.endswith(b" EXISTS")]
    assert len(exists) == 1, untagged
    c.send("I1 IDLE\r\n")
    assert c.line().startswith(b"+")
    imaptest.deliver(imap_daemon, imaptest.ALICE,
                     b"From: bob@example.com\r\nSubject: hi\r\n\r\nhello\r\n")
    line = c.line()
    while not line.endswith(b"EXISTS"):
        line = c.line()
    assert line == b"* %d EXISTS" % (exists[0] + 1)
    c.send("DONE\r\n")
    _, tagged = c.response("I1")
    assert tagged.startswith(b"I1 OK"), tagged


def test_second_compress_is_refused(zclients):
    c = zclients()
    _, tagged = c.cmd("Z2 COMPRESS DEFLATE")
    assert tagged.startswith(b"Z2 NO [COMPRESSIONACTIVE]"), tagged
    _, tagged = c.cmd("N1 NOOP")
    assert tagged.startswith(b"N1 OK"), tagged


@pytest.mark.parametrize("args", ["FOO", "", "DEFLATE EXTRA"])
def test_compress_bad_arguments(zclients, args):
    c = zclients(compress=False)
    _, tagged = c.cmd(("Z1 COMPRESS " + args).rstrip())
    assert tagged.startswith(b"Z1 BAD"), tagged
    # Still uncompressed and usable.
    _, tagged = c.cmd("N1 NOOP")
    assert tagged.startswith(b"N1 OK"), tagged


def test_compress_before_login_is_bad(zclients):
    c = zclients(login=False, compress=False)
    _, tagged = c.cmd("Z1 COMPRESS DEFLATE")
    assert tagged.startswith(b"Z1 BAD"), tagged
    c.login()
    c.compress()
    _, tagged = c.cmd("N1 NOOP")
    assert tagged.startswith(b"N1 OK"), tagged


def test_starttls_after_compress_is_refused(zclients):
    c = zclients()
    _, tagged = c.cmd("S1 STARTTLS")
    assert tagged.startswith((b"S1 BAD", b"S1 NO")), tagged


def test_corrupt_compressed_input_closes_only_that_session(
        zclients, imap_daemon):
    other = zclients()
    victim = zclients()
    # A deflate block header with the reserved block type 3.
    victim.send_raw(b"\xff" * 64)
    with pytest.raises((EOFError, ConnectionResetError)):
        while True:
            victim.fill()
    _, tagged = other.cmd("N1 NOOP")
    assert tagged.startswith(b"N1 OK"), tagged
    assert imaptest.wait_for(
        lambda: "corrupt compressed input" in imap_daemon.read_log())
