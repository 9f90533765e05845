"""IMAP integration tests: FETCH and UID FETCH (RFC 9051 6.4.5 / 7.5.2,
RFC 3501 rev1 items, RFC 7162 MODSEQ/CHANGEDSINCE) against a real daemon.

The messages are built here (plain text, multipart/alternative with
quoted-printable and base64, nested message/rfc822, an RFC 2047 subject, a
multipart without its end boundary) and delivered with LF line ends by the
LDA, as an MTA would. Expected values come from RFC 9051 (hand-written for
the simple cases) and from Python's email parser for the parts.

The helpers (Conn, parse_fetch, spool_daemon) are shared with
test_imap_search.py.
"""
import base64
import email
import email.policy
import os
import re
import socket

import pytest

import cmtest
import imaptest


# ---- a bytes-exact IMAP client and a response parser ---------------------

class Conn:
    """A socket IMAP client that returns untagged responses as bytes with
    their literals inline (so that BODY[] data is byte-exact)."""

    def __init__(self, daemon, timeout=60):
        self.sock = socket.create_connection(
            ("127.0.0.1", daemon.ports["imap"]), timeout=timeout)
        self.buf = b""
        self.greeting = self._line()
        self.n = 0

    def close(self):
        self.sock.close()

    def _fill(self):
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise EOFError("connection closed; got %r" % self.buf[:200])
        self.buf += chunk

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        parts, have = [], 0
        while have < n:
            if not self.buf:
                self._fill()
            take = self.buf[:n - have]
            self.buf = self.buf[len(take):]
            parts.append(take)
            have += len(take)
        return b"".join(parts)

    def _response_line(self):
        """One response with literals: bytes without the final CRLF."""
        out = self._line()
        while True:
            m = re.search(rb"\{(\d+)\+?\}$", out)
            if not m:
                return out
            out += b"\r\n" + self._exact(int(m.group(1)))
            out += self._line()

    def cmd(self, text, tag=None):
        """Send "TAG text"; returns (untagged list of bytes, tagged str)."""
        if tag is None:
            self.n += 1
            tag = "t%d" % self.n
        if isinstance(text, str):
            text = text.encode()
        self.sock.sendall(tag.encode() + b" " + text + b"\r\n")
        untagged = []
        while True:
            line = self._response_line()
            if line.startswith(tag.encode() + b" "):
                return untagged, line.decode(errors="replace")
            untagged.append(line)

    def ok(self, text):
        untagged, tagged = self.cmd(text)
        assert " OK " in tagged, (text, tagged, untagged[:3])
        return untagged

    def login(self, user=imaptest.ALICE):
        self.ok('LOGIN "%s" "%s"' % (user, imaptest.PASSWORD))
        return self

    def select(self, mailbox="INBOX"):
        return self.ok("SELECT " + mailbox)

    def fetch(self, text):
        """FETCH; returns {seq: {ITEM: value}} (asserts OK)."""
        return fetches(self.ok(text))


def _atom_end(data, i):
    depth = 0
    while i < len(data):
        c = data[i:i + 1]
        if c == b"[":
            depth += 1
        elif c == b"]":
            depth -= 1
        elif depth == 0 and c in (b" ", b")", b"("):
            break
        elif depth > 0 and c == b'"':
            i = data.index(b'"', i + 1)
        i += 1
    return i


def parse_value(data, i=0):
    """Parse one IMAP value at data[i:]: (value, next index). Lists become
    Python lists, strings and literals bytes, NIL None, atoms str."""
    while data[i:i + 1] == b" ":
        i += 1
    c = data[i:i + 1]
    if c == b"(":
        out, i = [], i + 1
        while True:
            while data[i:i + 1] == b" ":
                i += 1
            if data[i:i + 1] == b")":
                return out, i + 1
            v, i = parse_value(data, i)
            out.append(v)
    if c == b'"':
        out, i = bytearray(), i + 1
        while data[i:i + 1] != b'"':
            if data[i:i + 1] == b"\\":
                i += 1
            out += data[i:i + 1]
            i += 1
        return bytes(out), i + 1
    if c == b"~" and data[i + 1:i + 2] == b"{":
        i += 1
        c = b"{"
    if c == b"{":
        end = data.index(b"}", i)
        n = int(data[i + 1:end].rstrip(b"+"))
        start = end + 3
        return data[start:start + n], start + n
    end = _atom_end(data, i)
    atom = data[i:end].decode()
    return (None if atom.upper() == "NIL" else atom), end


def parse_fetch(line):
    """b"* 3 FETCH (...)" -> (3, {"UID": "5", "BODY[]": b"..."})."""
    m = re.match(rb"\* (\d+) FETCH ", line)
    assert m, line[:200]
    items, end = parse_value(line, m.end())
    assert end == len(line), ("trailing data", line[end:end + 100])
    out = {}
    for k in range(0, len(items), 2):
        out[items[k].upper()] = items[k + 1]
    return int(m.group(1)), out


def fetches(untagged):
    """All FETCH responses of a command: {seq: items} (merged)."""
    result = {}
    for line in untagged:
        if re.match(rb"\* \d+ FETCH ", line):
            seq, items = parse_fetch(line)
            result.setdefault(seq, {}).update(items)
    return result


def spool_daemon(workdir):
    """A daemon with IMAP and the test users, its spool dir in place."""
    spool = os.path.join(workdir, "spool")
    os.makedirs(spool, exist_ok=True)
    cmtest.prepare_workdir(spool)
    return imaptest.start_daemon(workdir)


def mailbox_dir(daemon, user=imaptest.ALICE):
    local, domain = user.split("@")
    return os.path.join(daemon.dir, "spool", domain, local)


def crlf(data):
    """LF -> CRLF (an LF already preceded by CR stays)."""
    return re.sub(rb"(?<!\r)\n", b"\r\n", data)


def text_lines(data):
    """Lines of a body in the CRLF view (a last line without CRLF counts)."""
    return data.count(b"\r\n") + (1 if data and
                                   not data.endswith(b"\r\n") else 0)


def upper_strings(v):
    """Case-fold every string in a parsed structure (MIME types, subtypes,
    parameter names and encodings are case-insensitive)."""
    if isinstance(v, list):
        return [upper_strings(x) for x in v]
    if isinstance(v, bytes):
        return v.upper()
    if isinstance(v, str):
        return v.upper()
    return v


# ---- the messages --------------------------------------------------------

PLAIN = (
    b"From: Alice Example <alice@example.com>\n"
    b"To: Bob <bob@example.com>, carol@example.org\n"
    b"Cc: dave@example.net\n"
    b"Subject: Plain hello\n"
    b"Date: Mon, 2 Mar 2026 10:00:00 +0100\n"
    b"Message-ID: <plain-1@example.com>\n"
    b"In-Reply-To: <parent@example.com>\n"
    b"X-Folded: first part\n"
    b"  second part\n"
    b"\n"
    b"Hello Bob,\n"
    b"this is plain text.\n"
    b"Regards\n")

ALTERNATIVE = (
    b"From: news@example.org\n"
    b"To: alice@example.com\n"
    b"Subject: Alternative\n"
    b"Date: Tue, 3 Mar 2026 11:00:00 +0000\n"
    b"MIME-Version: 1.0\n"
    b'Content-Type: multipart/alternative; boundary="alt-b1"\n'
    b"\n"
    b"This is the preamble.\n"
    b"--alt-b1\n"
    b"Content-Type: text/plain; charset=utf-8\n"
    b"Content-Transfer-Encoding: quoted-printable\n"
    b"\n"
    b"Caf=C3=A9 menu: soup=3Dgood\n"
    b"second line\n"
    b"--alt-b1\n"
    b"Content-Type: text/html; charset=utf-8\n"
    b"Content-Transfer-Encoding: base64\n"
    b"\n"
    b"PGh0bWw+PGJvZHk+Q2Fmw6kgPGI+bWVudTwvYj48L2JvZHk+PC9odG1sPgo=\n"
    b"--alt-b1--\n"
    b"epilogue\n")

INNER = (
    b"From: Inner Sender <inner@example.net>\n"
    b"To: alice@example.com\n"
    b"Subject: Inner message\n"
    b"Date: Wed, 4 Mar 2026 09:30:00 -0500\n"
    b"Message-ID: <inner@example.net>\n"
    b"MIME-Version: 1.0\n"
    b'Content-Type: multipart/mixed; boundary="in-b2"\n'
    b"\n"
    b"--in-b2\n"
    b"Content-Type: text/plain\n"
    b"\n"
    b"inner text part\n"
    b"--in-b2\n"
    b"Content-Type: image/png\n"
    b"Content-Transfer-Encoding: base64\n"
    b'Content-Disposition: attachment; filename="dot.png"\n'
    b"\n"
    b"iVBORw0KGgo=\n"
    b"--in-b2--\n")

NESTED = (
    b"From: fwd@example.com\n"
    b"To: alice@example.com\n"
    b"Subject: Fwd: Inner message\n"
    b"Date: Thu, 5 Mar 2026 08:00:00 +0000\n"
    b"MIME-Version: 1.0\n"
    b'Content-Type: multipart/mixed; boundary="out-b1"\n'
    b"\n"
    b"--out-b1\n"
    b"Content-Type: text/plain; charset=us-ascii\n"
    b"Content-Description: cover note\n"
    b"\n"
    b"See the attached message.\n"
    b"--out-b1\n"
    b"Content-Type: message/rfc822\n"
    b"\n" + INNER +
    b"--out-b1--\n")

NONASCII = (
    b"From: =?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?= <juergen@example.de>\n"
    b"To: alice@example.com\n"
    b"Subject: =?UTF-8?B?R3LDvMOfZSBhdXMgS8O2bG4=?=\n"
    b"Date: Fri, 6 Mar 2026 12:00:00 +0100\n"
    b"MIME-Version: 1.0\n"
    b"Content-Type: text/plain; charset=utf-8\n"
    b"Content-Transfer-Encoding: base64\n"
    b"\n"
    b"R3LDtsOfZSBTdHJhw59lIHVuZCBGbHVzcw==\n")

MALFORMED = (
    b"From: broken@example.com\n"
    b"To: alice@example.com\n"
    b"Subject: Missing end boundary\n"
    b"MIME-Version: 1.0\n"
    b'Content-Type: multipart/mixed; boundary="cut"\n'
    b"\n"
    b"--cut\n"
    b"Content-Type: text/plain\n"
    b"\n"
    b"first part\n"
    b"--cut\n"
    b"Content-Type: text/plain\n"
    b"\n"
    b"second part runs to the end\n"
    b"and never closes\n")

BLOB = bytes(range(256)) * 4

BINARYMSG = (
    b"From: files@example.com\n"
    b"To: alice@example.com\n"
    b"Subject: Binary parts\n"
    b"MIME-Version: 1.0\n"
    b'Content-Type: multipart/mixed; boundary="bin"\n'
    b"\n"
    b"--bin\n"
    b"Content-Type: application/octet-stream\n"
    b"Content-Transfer-Encoding: base64\n"
    b"\n" + base64.encodebytes(BLOB) +
    b"--bin\n"
    b"Content-Type: application/octet-stream\n"
    b"Content-Transfer-Encoding: x-uuencode\n"
    b"\n"
    b"begin 644 x\n`\nend\n"
    b"--bin\n"
    b"Content-Type: text/plain; charset=utf-8\n"
    b"Content-Transfer-Encoding: quoted-printable\n"
    b"\n"
    b"trailing space   \n"
    b"soft=\n"
    b"break =E2=82=AC\n"
    b"--bin--\n")

MESSAGES = [PLAIN, ALTERNATIVE, NESTED, NONASCII, MALFORMED, BINARYMSG]


@pytest.fixture
def fdaemon(workdir):
    d = spool_daemon(workdir)
    for msg in MESSAGES:
        imaptest.deliver(d, imaptest.ALICE, msg)
    yield d
    d.stop()


@pytest.fixture
def conn(fdaemon):
    c = Conn(fdaemon).login()
    c.select()
    yield c
    c.close()


def py_parts(raw):
    """Python's view of the message: the walk() of its parts."""
    return list(email.message_from_bytes(
        raw, policy=email.policy.compat32).walk())


# ---- view items ----------------------------------------------------------

def test_view_items_and_macros(conn):
    r = conn.fetch("FETCH 1:5 (UID FLAGS INTERNALDATE RFC822.SIZE)")
    assert sorted(r) == [1, 2, 3, 4, 5]
    for seq, items in r.items():
        assert items["UID"] == str(seq)
        assert isinstance(items["FLAGS"], list)
        assert re.fullmatch(rb"[ \d]\d-[A-Z][a-z]{2}-\d{4} \d\d:\d\d:\d\d "
                            rb"[+-]\d{4}", items["INTERNALDATE"])
        assert int(items["RFC822.SIZE"]) == len(crlf(MESSAGES[seq - 1]))
    fast = conn.fetch("FETCH 1 FAST")[1]
    assert set(fast) == {"FLAGS", "INTERNALDATE", "RFC822.SIZE"}
    alls = conn.fetch("FETCH 1 ALL")[1]
    assert set(alls) == {"FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"}
    full = conn.fetch("FETCH 1 FULL")[1]
    assert set(full) == {"FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE",
                         "BODY"}


def test_uid_fetch_always_has_uid(conn):
    r = conn.fetch("UID FETCH 2:4 FLAGS")
    assert {s: i["UID"] for s, i in r.items()} == {2: "2", 3: "3", 4: "4"}
    # UIDs beyond the highest are ignored, "*" is the highest UID
    r = conn.fetch("UID FETCH 6:* FLAGS")
    assert list(r) == [6]
    r = conn.fetch("UID FETCH 60:* FLAGS")
    assert list(r) == [6]


def test_body_equals_message_and_size(conn):
    for seq, raw in enumerate(MESSAGES, 1):
        items = conn.fetch("FETCH %d (RFC822.SIZE BODY.PEEK[])" % seq)[seq]
        assert items["BODY[]"] == crlf(raw)
        assert int(items["RFC822.SIZE"]) == len(items["BODY[]"])
        rfc822 = conn.fetch("FETCH %d RFC822" % seq)[seq]["RFC822"]
        assert rfc822 == crlf(raw)


# ---- ENVELOPE / BODY / BODYSTRUCTURE ------------------------------------

def test_envelope_plain_exact(conn):
    env = conn.fetch("FETCH 1 ENVELOPE")[1]["ENVELOPE"]
    alice = [b"Alice Example", None, b"alice", b"example.com"]
    assert env == [
        b"Mon, 2 Mar 2026 10:00:00 +0100", b"Plain hello",
        [alice], [alice], [alice],
        [[b"Bob", None, b"bob", b"example.com"],
         [None, None, b"carol", b"example.org"]],
        [[None, None, b"dave", b"example.net"]],
        None, b"<parent@example.com>", b"<plain-1@example.com>"]


def test_envelope_keeps_encoded_words(conn):
    env = conn.fetch("FETCH 4 ENVELOPE")[4]["ENVELOPE"]
    # RFC 9051: header values are sent as in the message, not decoded
    assert env[1] == b"=?UTF-8?B?R3LDvMOfZSBhdXMgS8O2bG4=?="
    assert env[2] == [[b"=?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?=", None,
                       b"juergen", b"example.de"]]


def test_bodystructure_plain_exact(conn):
    r = conn.fetch("FETCH 1 (BODY BODYSTRUCTURE BODY.PEEK[TEXT])")[1]
    text = r["BODY[TEXT]"]
    lines = text.count(b"\r\n")
    assert upper_strings(r["BODYSTRUCTURE"]) == upper_strings(
        [b"TEXT", b"PLAIN", [b"CHARSET", b"US-ASCII"], None, None, b"7BIT",
         str(len(text)), str(lines), None, None, None, None])
    # BODY is BODYSTRUCTURE without the extension data
    assert r["BODY"] == r["BODYSTRUCTURE"][:8]


def test_bodystructure_alternative_exact(conn):
    r = conn.fetch("FETCH 2 (BODYSTRUCTURE BODY.PEEK[1] BODY.PEEK[2])")[2]
    p1, p2 = r["BODY[1]"], r["BODY[2]"]
    assert p1 == b"Caf=C3=A9 menu: soup=3Dgood\r\nsecond line"
    assert p2 == (b"PGh0bWw+PGJvZHk+Q2Fmw6kgPGI+bWVudTwvYj48L2JvZHk+"
                  b"PC9odG1sPgo=")
    bs = upper_strings(r["BODYSTRUCTURE"])
    assert bs == upper_strings([
        [b"text", b"plain", [b"charset", b"utf-8"], None, None,
         b"quoted-printable", str(len(p1)), str(text_lines(p1)), None, None,
         None, None],
        [b"text", b"html", [b"charset", b"utf-8"], None, None,
         b"base64", str(len(p2)), str(text_lines(p2)), None, None, None,
         None],
        b"alternative", [b"boundary", b"alt-b1"], None, None, None])


def test_nested_message_structure(conn):
    r = conn.fetch("FETCH 3 BODYSTRUCTURE")[3]["BODYSTRUCTURE"]
    py = email.message_from_bytes(NESTED, policy=email.policy.compat32)
    cover, attached = py.get_payload()
    inner = attached.get_payload()[0]
    # outer multipart/mixed with two parts
    assert r[2].upper() == b"MIXED"
    assert r[3] == [b"boundary", b"out-b1"] or \
        upper_strings(r[3]) == [b"BOUNDARY", b"OUT-B1"]
    text, msg = r[0], r[1]
    assert upper_strings(text[:2]) == [b"TEXT", b"PLAIN"]
    assert text[4] == cover["Content-Description"].encode()
    # message/rfc822: type, subtype, params, id, desc, enc, size,
    # envelope, body, lines
    assert upper_strings(msg[:2]) == [b"MESSAGE", b"RFC822"]
    # the CRLF before the outer boundary belongs to the boundary
    inner_raw = crlf(INNER)[:-2]
    assert int(msg[6]) == len(inner_raw)
    assert msg[7][1] == inner["Subject"].encode()
    assert msg[7][9] == inner["Message-ID"].encode()
    inner_bs = msg[8]
    assert inner_bs[2].upper() == inner.get_content_subtype().upper().encode()
    png = inner_bs[1]
    assert upper_strings(png[:2]) == [b"IMAGE", b"PNG"]
    assert png[5].upper() == b"BASE64"
    assert upper_strings(png[8]) == upper_strings(
        [b"attachment", [b"filename", b"dot.png"]])
    assert int(msg[9]) == text_lines(inner_raw)


def test_nested_sections(conn):
    py = email.message_from_bytes(NESTED, policy=email.policy.compat32)
    cover, attached = py.get_payload()
    inner = attached.get_payload()[0]
    inner_text, inner_png = inner.get_payload()
    r = conn.fetch("FETCH 3 (BODY.PEEK[1] BODY.PEEK[2] BODY.PEEK[2.HEADER] "
                   "BODY.PEEK[2.TEXT] BODY.PEEK[2.1] BODY.PEEK[2.2] "
                   "BODY.PEEK[2.2.MIME] BODY.PEEK[1.MIME] BODY.PEEK[9])")[3]
    assert r["BODY[1]"] == crlf(cover.get_payload().encode())
    # RFC 2046: the CRLF before a boundary line belongs to the boundary
    assert r["BODY[2]"] == crlf(INNER)[:-2]
    header, _, body = INNER.partition(b"\n\n")
    assert r["BODY[2.HEADER]"] == crlf(header + b"\n\n")
    assert r["BODY[2.TEXT]"] == crlf(body)[:-2]
    assert r["BODY[2.1]"] == crlf(inner_text.get_payload().encode())
    assert r["BODY[2.2]"] == crlf(inner_png.get_payload().encode())
    assert r["BODY[2.2.MIME]"] == (
        b"Content-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="dot.png"\r\n\r\n')
    assert r["BODY[1.MIME]"] == (
        b"Content-Type: text/plain; charset=us-ascii\r\n"
        b"Content-Description: cover note\r\n\r\n")
    assert r["BODY[9]"] in (b"", None)


def test_malformed_missing_end_boundary(conn):
    r = conn.fetch("FETCH 5 (BODYSTRUCTURE BODY.PEEK[1] BODY.PEEK[2])")[5]
    bs = r["BODYSTRUCTURE"]
    assert bs[2].upper() == b"MIXED"
    # two text/plain parts, then the subtype
    assert [upper_strings(p[:2]) for p in bs[:2]] == [[b"TEXT", b"PLAIN"]] * 2
    assert r["BODY[1]"] == b"first part"
    # the unterminated part runs to the end of the message
    assert r["BODY[2]"].startswith(b"second part runs to the end\r\n"
                                   b"and never closes")
    # the session is fine afterwards
    conn.ok("NOOP")


# ---- header sections and partials ---------------------------------------

def test_header_and_text_sections(conn):
    r = conn.fetch("FETCH 1 (BODY.PEEK[HEADER] BODY.PEEK[TEXT] "
                   "RFC822.HEADER)")[1]
    header, _, body = PLAIN.partition(b"\n\n")
    assert r["BODY[HEADER]"] == crlf(header + b"\n\n")
    assert r["RFC822.HEADER"] == r["BODY[HEADER]"]
    assert r["BODY[TEXT]"] == crlf(body)


def test_header_fields(conn):
    r = conn.fetch('FETCH 1 (BODY.PEEK[HEADER.FIELDS (From Subject '
                   'x-folded "To")])')[1]
    value = [v for k, v in r.items() if k.startswith("BODY[HEADER.FIELDS")]
    assert len(value) == 1
    assert value[0] == (b"From: Alice Example <alice@example.com>\r\n"
                        b"To: Bob <bob@example.com>, carol@example.org\r\n"
                        b"Subject: Plain hello\r\n"
                        b"X-Folded: first part\r\n  second part\r\n\r\n")


def test_header_fields_not(conn):
    r = conn.fetch("FETCH 1 BODY.PEEK[HEADER.FIELDS.NOT (To Cc X-Folded "
                   "Message-ID In-Reply-To Date)]")[1]
    (value,) = r.values()
    assert value == (b"From: Alice Example <alice@example.com>\r\n"
                     b"Subject: Plain hello\r\n\r\n")


def test_header_fields_of_nested_message(conn):
    r = conn.fetch("FETCH 3 BODY.PEEK[2.HEADER.FIELDS (SUBJECT)]")[3]
    (value,) = r.values()
    assert value == b"Subject: Inner message\r\n\r\n"


def test_partial_fetch(conn):
    full = crlf(PLAIN)
    r = conn.fetch("FETCH 1 (BODY.PEEK[]<0.10> BODY.PEEK[]<10.25> "
                   "BODY.PEEK[TEXT]<5.4>)")[1]
    assert r["BODY[]<0>"] == full[:10]
    assert r["BODY[]<10>"] == full[10:35]
    assert r["BODY[TEXT]<5>"] == crlf(PLAIN.partition(b"\n\n")[2])[5:9]
    # a window spanning an inserted CR is cut in the CRLF view
    nl = full.index(b"\r\n")
    r = conn.fetch("FETCH 1 BODY.PEEK[]<%d.2>" % (nl + 1))[1]
    assert r["BODY[]<%d>" % (nl + 1)] == full[nl + 1:nl + 3]
    # beyond the end: empty
    r = conn.fetch("FETCH 1 BODY.PEEK[]<100000.10>")[1]
    assert r["BODY[]<100000>"] == b""


def test_rfc822_text(conn):
    r = conn.fetch("FETCH 2 RFC822.TEXT")[2]
    assert r["RFC822.TEXT"] == crlf(ALTERNATIVE.partition(b"\n\n")[2])
    assert "\\Seen" in r["FLAGS"]


# ---- \Seen ---------------------------------------------------------------

def test_seen_set_by_body_not_by_peek(conn):
    r = conn.fetch("FETCH 1 (FLAGS BODY.PEEK[])")[1]
    assert "\\Seen" not in r["FLAGS"]
    r = conn.fetch("FETCH 1 FLAGS")[1]
    assert "\\Seen" not in r["FLAGS"]
    r = conn.fetch("FETCH 1 BODY[TEXT]")[1]
    assert "\\Seen" in r["FLAGS"], r
    r = conn.fetch("FETCH 1 FLAGS")[1]
    assert "\\Seen" in r["FLAGS"]
    # EXAMINE (read-only) never sets \Seen
    conn.ok("EXAMINE INBOX")
    r = conn.fetch("FETCH 2 BODY[]")[2]
    assert "FLAGS" not in r
    conn.select()
    assert "\\Seen" not in conn.fetch("FETCH 2 FLAGS")[2]["FLAGS"]


# ---- errors ----------------------------------------------------------------

@pytest.mark.parametrize("args", [
    "1 (FOO)", "1 BODY[HEADER.FIELDS]", "1 BODY[0]", "1 BODY[1.X]",
    "1 BODY[]<5>", "1 BODY[]<1.0>", "0 FLAGS", "1:x FLAGS", "99 FLAGS",
    "1", "1 ()", "1 (FLAGS", "1 BODY.PEEK", "1 (FLAGS) (CHANGEDSINCE x)",
])
def test_bad_fetch(conn, args):
    untagged, tagged = conn.cmd("FETCH " + args)
    assert " BAD " in tagged, (args, tagged)
    assert not any(re.match(rb"\* \d+ FETCH", u) for u in untagged), untagged
    conn.ok("NOOP")


# ---- CONDSTORE -------------------------------------------------------------

def test_modseq_and_changedsince(conn):
    r = conn.fetch("FETCH 1:5 MODSEQ")
    modseqs = {s: int(i["MODSEQ"][0]) for s, i in r.items()}
    assert all(m > 0 for m in modseqs.values())
    # sets \Seen: a new modseq, reported with the flags (RFC 7162 3.2)
    r = conn.fetch("FETCH 3 BODY[TEXT]")[3]
    top = max(modseqs.values())
    assert "\\Seen" in r["FLAGS"] and int(r["MODSEQ"][0]) > top
    r = conn.fetch("FETCH 1:5 (FLAGS) (CHANGEDSINCE %d)" % top)
    assert list(r) == [3]
    assert int(r[3]["MODSEQ"][0]) > top


# ---- the cache -------------------------------------------------------------

def test_bodystructure_served_from_cache(fdaemon, conn):
    first = conn.fetch("FETCH 2 (BODYSTRUCTURE ENVELOPE)")[2]
    conn.ok("NOOP")     # a sync point: the cache is written by then
    cur = os.path.join(mailbox_dir(fdaemon), "cur")
    files = [f for f in os.listdir(cur)]
    target = [f for f in files
              if b"Subject: Alternative" in open(os.path.join(cur, f),
                                                 "rb").read()]
    assert len(target) == 1
    path = os.path.join(cur, target[0])
    os.chmod(path, 0)
    try:
        # a new session: nothing in memory, only the cache file
        c2 = Conn(fdaemon).login()
        c2.select()
        second = c2.fetch("FETCH 2 (BODYSTRUCTURE ENVELOPE)")[2]
        # the file really is unreadable for the daemon now
        untagged, tagged = c2.cmd("FETCH 2 BODY.PEEK[]")
        assert " NO " in tagged, tagged
        assert "BODY[]" not in fetches(untagged).get(2, {})
        c2.close()
    finally:
        os.chmod(path, 0o600)
    assert second == first


# ---- expunged by another session ------------------------------------------

def test_fetch_message_expunged_by_other_session(fdaemon, conn):
    other = Conn(fdaemon).login()
    other.select()
    for command in ("STORE 1 +FLAGS (\\Deleted)", "EXPUNGE"):
        _, tagged = other.cmd(command)
        if "not implemented" in tagged:
            pytest.skip("needs STORE and EXPUNGE: " + tagged)
        assert " OK " in tagged, tagged
    other.close()
    untagged, tagged = conn.cmd("FETCH 1 (UID FLAGS BODY.PEEK[])")
    r = fetches(untagged)
    if tagged.split()[1] == "OK":
        # RFC 9051 lets the server return what it still has
        assert r[1]["BODY[]"] == crlf(PLAIN)
    else:
        assert "NO [EXPUNGEISSUED]" in tagged, tagged
        assert "BODY[]" not in r.get(1, {})
    # after that FETCH's sync the view knows; EXPUNGE still may not be sent
    # during FETCH, so the message keeps its number: what the view has
    # (UID, FLAGS) is returned, no body, and the reply says why
    untagged, tagged = conn.cmd("FETCH 1:2 (UID FLAGS BODY.PEEK[HEADER])")
    assert not any(u.startswith(b"* 1 EXPUNGE") for u in untagged)
    r = fetches(untagged)
    assert "NO [EXPUNGEISSUED]" in tagged, tagged
    assert r[1]["UID"] == "1" and "BODY[HEADER]" not in r[1]
    assert r[2]["BODY[HEADER]"].startswith(b"From: news@example.org")
    # the session goes on; the expunge is reported at the next sync
    untagged = conn.ok("NOOP")
    assert b"* 1 EXPUNGE" in untagged
    assert conn.fetch("FETCH 1 UID")[1]["UID"] == "2"


# ---- a big message, streamed -----------------------------------------------

def _rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _is_asan(pid):
    with open("/proc/%d/maps" % pid) as f:
        return "libasan" in f.read()


def test_big_message_streamed(workdir):
    d = spool_daemon(workdir)
    try:
        line = b"0123456789abcdefghijklmnopqrstuvwxyz" * 2 + b"\n"
        body = line * (20 * 1024 * 1024 // len(line))
        raw = (b"From: big@example.com\nTo: alice@example.com\n"
               b"Subject: big\n\n" + body)
        imaptest.deliver(d, imaptest.ALICE, raw)
        c = Conn(d).login()
        c.select()
        before = _rss_kb(d.proc.pid)
        r = c.fetch("FETCH 1 (RFC822.SIZE BODY.PEEK[])")[1]
        after = _rss_kb(d.proc.pid)
        assert int(r["RFC822.SIZE"]) == len(r["BODY[]"])
        assert r["BODY[]"] == crlf(raw)
        # the 20 MB (21 MB in CRLF) never sat in the daemon's memory
        # (an AddressSanitizer build keeps freed chunks in quarantine,
        # which says nothing about the code: measured on normal builds)
        if not _is_asan(d.proc.pid):
            assert after - before < 8 * 1024, (before, after)
        c.close()
    finally:
        d.stop()


# ---- BINARY (RFC 3516) -----------------------------------------------------

def test_binary_decodes_qp_and_base64(conn):
    r = conn.fetch("FETCH 2 (BINARY.PEEK[1] BINARY.PEEK[2] BINARY.SIZE[1] "
                   "BINARY.SIZE[2])")[2]
    text = "Café menu: soup=good\r\nsecond line".encode()
    html = base64.b64decode(b"PGh0bWw+PGJvZHk+Q2Fmw6kgPGI+bWVudTwvYj48L2Jv"
                            b"ZHk+PC9odG1sPgo=")
    assert r["BINARY[1]"] == text
    assert r["BINARY[2]"] == html
    assert int(r["BINARY.SIZE[1]"]) == len(text)
    assert int(r["BINARY.SIZE[2]"]) == len(html)
    assert "\\Seen" not in conn.fetch("FETCH 2 FLAGS")[2]["FLAGS"]


def test_binary_literal8_partial_and_seen(conn):
    untagged = conn.ok("FETCH 6 (BINARY[1] BINARY.SIZE[1] BINARY.PEEK[3])")
    raw = b"".join(untagged)
    # NUL bytes: the data comes as literal8 ~{n}
    assert b"BINARY[1] ~{%d}\r\n" % len(BLOB) in raw
    r = fetches(untagged)[6]
    assert r["BINARY[1]"] == BLOB
    assert int(r["BINARY.SIZE[1]"]) == len(BLOB)
    # a partial answer is labelled without offset (RFC 9051 ABNF)
    r2 = conn.fetch("FETCH 6 BINARY.PEEK[1]<1000.30>")[6]
    assert r2 == {"BINARY[1]": BLOB[1000:1030]}
    assert r["BINARY[3]"] == "trailing space\r\nsoftbreak €".encode()
    assert "\\Seen" in r["FLAGS"]
    # the whole message: nothing to decode at the top level
    r = conn.fetch("FETCH 1 BINARY.PEEK[]")[1]
    assert r["BINARY[]"] == crlf(PLAIN)


def test_binary_unknown_cte(conn):
    untagged, tagged = conn.cmd("FETCH 6 BINARY.PEEK[2]")
    assert "NO [UNKNOWN-CTE]" in tagged, tagged
    conn.ok("NOOP")


@pytest.mark.parametrize("item", ["BINARY[1.MIME]", "BINARY[TEXT]",
                                  "BINARY.SIZE[1]<0.5>", "BINARY[1"])
def test_binary_bad(conn, item):
    _, tagged = conn.cmd("FETCH 6 " + item)
    assert " BAD " in tagged, (item, tagged)


# ---- many messages -----------------------------------------------------------

def _drop_into_new(daemon, count, filler=b""):
    """Put count messages straight into the Maildir's new/ (as another
    Maildir tool would); the next sync gives them UIDs."""
    import pwd
    new = os.path.join(mailbox_dir(daemon), "new")
    pw = pwd.getpwnam(cmtest.mail_user())
    for i in range(count):
        path = os.path.join(new, "%d.M%dP1.testtool" % (1700000000 + i, i))
        with open(path, "wb") as f:
            f.write(b"From: bulk%d@example.com\nSubject: bulk %d\n\n"
                    b"message number %d\n%s" % (i, i, i, filler))
        os.chown(path, pw.pw_uid, pw.pw_gid)


def test_fetch_and_search_many_messages(workdir):
    d = spool_daemon(workdir)
    try:
        imaptest.deliver(d, imaptest.ALICE, PLAIN)   # creates the Maildir
        _drop_into_new(d, 3000)
        c = Conn(d, timeout=120).login()
        c.select()
        r = c.fetch("FETCH 1:* (UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS "
                    "(SUBJECT)])")
        assert sorted(r) == list(range(1, 3002))
        subjects = {s: v["BODY[HEADER.FIELDS (SUBJECT)]"]
                    for s, v in r.items()}
        (plain,) = [s for s, v in subjects.items() if b"Plain" in v]
        assert sorted(v for s, v in subjects.items() if s != plain) == \
            sorted(b"Subject: bulk %d\r\n\r\n" % i for i in range(3000))
        assert all(int(v["RFC822.SIZE"]) > 0 for v in r.values())
        untagged = c.ok("SEARCH RETURN (COUNT MIN MAX) BODY \"number 1234\"")
        (line,) = [u for u in untagged if u.startswith(b"* ESEARCH")]
        assert line.endswith(b"COUNT 1"), line
        untagged = c.ok("SEARCH SUBJECT bulk")
        (line,) = [u for u in untagged if u.startswith(b"* SEARCH")]
        assert line.split()[2:] == [b"%d" % i for i in range(1, 3002)
                                    if i != plain]
        c.close()
    finally:
        d.stop()


def test_header_paths_agree(workdir):
    """BODY[HEADER] read alone (header only) and after the MIME tree was
    loaded (BODYSTRUCTURE first) are the same bytes, also for files that
    other Maildir tools wrote with CRLF line ends or without a body."""
    import pwd
    d = spool_daemon(workdir)
    try:
        imaptest.deliver(d, imaptest.ALICE, PLAIN)
        odd = [b"From: crlf@example.com\r\nSubject: crlf\r\n\r\nbody\r\n",
               b"From: nobody@example.com\nSubject: header only\n",
               b"From: blank@example.com\nSubject: blank\n\n",
               b"\nbody without header\n"]
        new = os.path.join(mailbox_dir(d), "new")
        pw = pwd.getpwnam(cmtest.mail_user())
        for i, raw in enumerate(odd):
            path = os.path.join(new, "1800000000.M%dP1.tool" % i)
            with open(path, "wb") as f:
                f.write(raw)
            os.chown(path, pw.pw_uid, pw.pw_gid)
        c = Conn(d).login()
        c.select()
        for seq in range(1, 6):
            alone = c.fetch("FETCH %d (BODY.PEEK[HEADER] "
                            "BODY.PEEK[HEADER.FIELDS (Subject)])" % seq)[seq]
            after = c.fetch("FETCH %d (BODYSTRUCTURE BODY.PEEK[HEADER] "
                            "BODY.PEEK[HEADER.FIELDS (Subject)])" % seq)[seq]
            full = c.fetch("FETCH %d (BODY.PEEK[] BODY.PEEK[TEXT])" % seq)[seq]
            assert alone["BODY[HEADER]"] == after["BODY[HEADER]"], seq
            assert alone["BODY[HEADER.FIELDS (SUBJECT)]"] == \
                after["BODY[HEADER.FIELDS (SUBJECT)]"], seq
            assert alone["BODY[HEADER]"] + full["BODY[TEXT]"] == \
                full["BODY[]"], seq
        c.close()
    finally:
        d.stop()


def test_huge_fetch_is_streamed(workdir):
    """FETCH 1:* over 20,000 messages answers message by message: 20 MB of
    responses never sit in the daemon's memory at once."""
    d = spool_daemon(workdir)
    try:
        imaptest.deliver(d, imaptest.ALICE, PLAIN)
        _drop_into_new(d, 20000, filler=b"z" * 1000 + b"\n")
        c = Conn(d, timeout=300).login()
        c.select()
        before = _rss_kb(d.proc.pid)
        c.sock.sendall(b"big FETCH 1:* (UID BODY.PEEK[])\r\n")
        count = total = 0
        while True:
            line = c._response_line()
            if line.startswith(b"big "):
                assert line.startswith(b"big OK"), line
                break
            count += 1
            total += len(line)
        after = _rss_kb(d.proc.pid)
        assert count == 20001
        assert total > 20 * 1000 * 1000
        if not _is_asan(d.proc.pid):
            assert after - before < 10 * 1024, (before, after)
        c.close()
    finally:
        d.stop()
