"""IMAP integration tests: IMAP4rev2 (RFC 9051) next to IMAP4rev1, BINARY
(RFC 3516) APPEND and FETCH, and the non-synchronizing literals of
LITERAL+ (RFC 7888), spoken raw over a socket to a real clustermaild.

A session speaks rev1 until it sends ENABLE IMAP4rev2; the tests below
check each place where the two differ in our server, with a rev1
session alongside where the old behaviour must stay."""
import os
import re

import pytest

import cmtest
import imaptest

MSG = "From: a@example.org\r\nSubject: %s\r\n\r\nbody %s\r\n"


@pytest.fixture
def server(workdir):
    spool = os.path.join(workdir, "spool")
    os.makedirs(spool, exist_ok=True)
    cmtest.prepare_workdir(spool)
    d = imaptest.start_daemon(workdir)
    yield d
    d.stop()
    log = d.read_log()
    for marker in ("ERROR: AddressSanitizer", "runtime error:",
                   "ERROR: LeakSanitizer"):
        assert marker not in log


def ok(reply):
    untagged, tagged = reply
    assert tagged.split(" ")[1] == "OK", (untagged, tagged)
    return untagged


def bad(reply):
    untagged, tagged = reply
    assert tagged.split(" ")[1] == "BAD", (untagged, tagged)
    return untagged


def session(server, rev2):
    r = imaptest.Raw(server).login()
    if rev2:
        untagged = ok(r.cmd("E ENABLE IMAP4rev2"))
        assert "* ENABLED IMAP4rev2" in untagged, untagged
    return r


# ---- byte-exact reading (literal8 answers may hold NUL) ---------------------

def read_bytes_response(r, tag):
    """(list of byte lines with literals inlined, tagged line), where a
    literal {N} or ~{N} at a line's end is read as raw bytes."""
    lines = []
    tag = tag.encode()
    while True:
        while b"\r\n" not in r.buf:
            chunk = r.sock.recv(65536)
            if not chunk:
                raise EOFError(r.buf)
            r.buf += chunk
        line, r.buf = r.buf.split(b"\r\n", 1)
        m = re.search(rb"~?\{(\d+)\}$", line)
        while m:
            line += b"\r\n" + r.read_exact(int(m.group(1)))
            while b"\r\n" not in r.buf:
                r.buf += r.sock.recv(65536)
            rest, r.buf = r.buf.split(b"\r\n", 1)
            line += rest
            m = re.search(rb"~?\{(\d+)\}$", rest)
        if line.startswith(tag + b" "):
            return lines, line
        lines.append(line)


def append_binary(r, tag, data, box="INBOX", sync=True):
    """APPEND data as literal8; returns the tagged line (str)."""
    if sync:
        r.send(f"{tag} APPEND {box} ~{{{len(data)}}}\r\n".encode())
        cont = r.line()
        if not cont.startswith("+"):
            return cont
        r.send(data + b"\r\n")
    else:
        r.send(f"{tag} APPEND {box} ~{{{len(data)}+}}\r\n".encode() +
               data + b"\r\n")
    _, tagged = r.response(tag)
    return tagged


BINARY_MSG = (b"From: a@example.org\r\nSubject: bin\r\nMIME-Version: 1.0\r\n"
              b"Content-Type: application/octet-stream\r\n"
              b"Content-Transfer-Encoding: binary\r\n\r\n"
              b"\x00\x01\x02 NUL above\xff\xfe\rbare CR\r\nend\x00\r\n")


# ---- CAPABILITY / ENABLE -----------------------------------------------------

def test_capability_announces_rev2_binary_literal(server):
    r = imaptest.Raw(server)
    untagged = ok(r.cmd("a CAPABILITY"))
    caps = untagged[0].split()[2:]
    for cap in ("IMAP4rev1", "IMAP4rev2", "BINARY", "LITERAL+", "ENABLE",
                "ESEARCH", "UIDPLUS", "MOVE", "NAMESPACE", "UNSELECT",
                "IDLE", "SASL-IR", "SPECIAL-USE", "STATUS=SIZE",
                "LIST-EXTENDED", "LIST-STATUS"):
        assert cap in caps, (cap, caps)
    # RFC 7888: LITERAL+ covers LITERAL-; the two are not announced both
    assert "LITERAL-" not in caps


def test_enable_rev2_once(server):
    r = session(server, rev2=True)
    untagged = ok(r.cmd("b ENABLE IMAP4rev2"))
    assert untagged == ["* ENABLED"], untagged


# ---- \Recent, RECENT, STATUS RECENT ---------------------------------------

def test_recent_gone_in_rev2_kept_in_rev1(server):
    imaptest.deliver(server, imaptest.ALICE, MSG % ("r", "r"))
    r1 = session(server, rev2=False)
    lines = ok(r1.cmd("a EXAMINE INBOX"))    # read-only: claims none
    assert "* 0 RECENT" in lines, lines
    ok(r1.cmd("b STATUS INBOX (RECENT)"))
    r1.close()

    r2 = session(server, rev2=True)
    lines = ok(r2.cmd("a SELECT INBOX"))
    assert not any(line.endswith(" RECENT") for line in lines), lines
    lines = ok(r2.cmd("b FETCH 1 FLAGS"))
    assert "\\Recent" not in lines[0], lines
    bad(r2.cmd("c STATUS INBOX (MESSAGES RECENT)"))
    bad(r2.cmd('d LIST "" "*" RETURN (STATUS (RECENT))'))
    for key in ("RECENT", "NEW", "OLD"):
        bad(r2.cmd(f"e SEARCH {key}"))
    # a new message while selected: EXISTS, no RECENT
    imaptest.deliver(server, imaptest.ALICE, MSG % ("s", "s"))
    lines = ok(r2.cmd("f NOOP"))
    assert "* 2 EXISTS" in lines, lines
    assert not any(line.endswith(" RECENT") for line in lines), lines


def test_rev1_session_sees_recent_flag(server):
    imaptest.deliver(server, imaptest.ALICE, MSG % ("r", "r"))
    r = session(server, rev2=False)
    ok(r.cmd("a SELECT INBOX"))
    lines = ok(r.cmd("b FETCH 1 FLAGS"))
    assert "\\Recent" in lines[0], lines
    lines = ok(r.cmd("c SEARCH RECENT"))
    assert lines == ["* SEARCH 1"], lines


# ---- SEARCH answers ESEARCH ------------------------------------------------

def test_search_is_esearch_in_rev2(server):
    for i in range(3):
        imaptest.deliver(server, imaptest.ALICE, MSG % (i, i))
    r = session(server, rev2=True)
    ok(r.cmd("a SELECT INBOX"))
    lines = ok(r.cmd("b SEARCH ALL"))
    assert lines == ['* ESEARCH (TAG "b") ALL 1:3'], lines
    lines = ok(r.cmd("c UID SEARCH ALL"))
    assert lines == ['* ESEARCH (TAG "c") UID ALL 1:3'], lines
    lines = ok(r.cmd("d SEARCH SUBJECT nomatch"))
    assert lines == ['* ESEARCH (TAG "d")'], lines

    r1 = session(server, rev2=False)
    ok(r1.cmd("a SELECT INBOX"))
    assert ok(r1.cmd("b SEARCH ALL")) == ["* SEARCH 1 2 3"]


# ---- STATUS DELETED / SIZE, [CLOSED], LSUB, RFC822 items -----------------

def test_status_deleted_and_size(server):
    imaptest.deliver(server, imaptest.ALICE, MSG % ("a", "a"))
    imaptest.deliver(server, imaptest.ALICE, MSG % ("b", "b"))
    for rev2 in (False, True):
        r = session(server, rev2=rev2)
        ok(r.cmd("a SELECT INBOX"))
        ok(r.cmd("b STORE 1 +FLAGS (\\Deleted)"))
        ok(r.cmd("c UNSELECT"))
        lines = ok(r.cmd("d STATUS INBOX (MESSAGES DELETED SIZE)"))
        m = re.search(r"\(MESSAGES 2 SIZE (\d+) DELETED 1\)", lines[0])
        assert m and int(m.group(1)) > 0, lines
        r.close()


def test_select_in_rev2_sends_list_not_unseen(server):
    imaptest.deliver(server, imaptest.ALICE, MSG % ("u", "u"))
    r = session(server, rev2=True)
    lines = ok(r.cmd("a SELECT inbox"))
    assert '* LIST () "/" "INBOX"' in lines, "\n".join(lines)
    assert not any("[UNSEEN " in line for line in lines), lines
    ok(r.cmd('b CREATE "Ablage/März"'))
    lines = ok(r.cmd('c EXAMINE "Ablage/März"'))
    assert '* LIST () "/" "Ablage/März"' in lines, lines

    r1 = session(server, rev2=False)
    lines = ok(r1.cmd("a SELECT INBOX"))
    assert "* OK [UNSEEN 1] First unseen." in lines, lines
    assert not any(line.startswith("* LIST") for line in lines), lines


def test_select_replacing_says_closed(server):
    r = session(server, rev2=True)
    ok(r.cmd("a CREATE Other"))
    ok(r.cmd("b SELECT INBOX"))
    lines = ok(r.cmd("c SELECT Other"))
    assert lines[0].startswith("* OK [CLOSED]"), lines


def test_lsub_and_rfc822_items_still_work_in_rev2(server):
    imaptest.deliver(server, imaptest.ALICE, MSG % ("x", "y"))
    r = session(server, rev2=True)
    ok(r.cmd("a CREATE Sub"))
    ok(r.cmd("b SUBSCRIBE Sub"))
    lines = ok(r.cmd('c LSUB "" "*"'))
    assert lines == ['* LSUB () "/" "Sub"'], lines
    ok(r.cmd("d SELECT INBOX"))
    lines = ok(r.cmd("e FETCH 1 (RFC822.HEADER RFC822.SIZE)"))
    assert "Subject: x" in lines[0] and "RFC822.SIZE" in lines[0], lines


def test_list_nonexistent_parent(server):
    """A parent that exists only as a level of a child's name."""
    r1 = session(server, rev2=False)
    ok(r1.cmd("a CREATE Lost/Child"))
    lines = ok(r1.cmd('c LIST "" "Lost"'))
    assert lines == ['* LIST (\\Noselect \\HasChildren) "/" "Lost"'], lines
    r2 = session(server, rev2=True)
    lines = ok(r2.cmd('c LIST "" "Lost"'))
    assert lines == ['* LIST (\\NonExistent \\HasChildren) "/" "Lost"'], \
        lines


def test_utf8_mailbox_names_in_rev2(server):
    r = session(server, rev2=True)
    ok(r.cmd('a CREATE "Entwürfe"'))
    lines = ok(r.cmd('b LIST "" "Entw*"'))
    assert lines == ['* LIST (\\HasNoChildren) "/" "Entwürfe"'] or \
        any('"Entwürfe"' in line or line.endswith(" Entwürfe")
            for line in lines), lines
    # a rev1 session sees the same mailbox in modified UTF-7
    r1 = session(server, rev2=False)
    lines = ok(r1.cmd('a LIST "" "Entw*"'))
    assert any("Entw&APw-rfe" in line for line in lines), lines


# ---- BINARY ----------------------------------------------------------------

@pytest.mark.parametrize("rev2", [False, True])
def test_binary_append_and_fetch_byte_exact(server, rev2):
    r = session(server, rev2=rev2)
    tagged = append_binary(r, "a", BINARY_MSG)
    assert tagged.startswith("a OK [APPENDUID "), tagged
    ok(r.cmd("b SELECT INBOX"))
    r.send(b"c FETCH 1 (BINARY.SIZE[] BINARY.PEEK[] BINARY.SIZE[1])\r\n")
    lines, tagged = read_bytes_response(r, "c")
    assert tagged.startswith(b"c OK"), tagged
    resp = lines[0]
    assert b"BINARY[] ~{%d}\r\n" % len(BINARY_MSG) + BINARY_MSG in resp, resp
    assert b"BINARY.SIZE[] %d" % len(BINARY_MSG) in resp, resp
    body = BINARY_MSG.split(b"\r\n\r\n", 1)[1]
    assert b"BINARY.SIZE[1] %d" % len(body) in resp, resp
    # a part and a partial range of it
    r.send(b"d FETCH 1 (BINARY.PEEK[1]<0.3>)\r\n")
    lines, tagged = read_bytes_response(r, "d")
    # RFC 9051's grammar has no <origin> on a BINARY answer
    assert b"BINARY[1] ~{3}\r\n\x00\x01\x02)" in lines[0], lines


def test_binary_append_nonsync_and_multiappend(server):
    r = session(server, rev2=True)
    assert append_binary(r, "a", BINARY_MSG, sync=False).startswith("a OK")
    data = b"Subject: two\r\n\r\n\x00\r\n"
    r.send(f"b APPEND INBOX ~{{{len(BINARY_MSG)}+}}\r\n".encode() +
           BINARY_MSG + f" (\\Seen) ~{{{len(data)}+}}\r\n".encode() +
           data + b"\r\n")
    _, tagged = r.response("b")
    assert re.match(r"b OK \[APPENDUID \d+ 2:3\]", tagged), tagged
    ok(r.cmd("c SELECT INBOX"))
    r.send(b"d FETCH 3 (FLAGS BINARY.PEEK[])\r\n")
    lines, tagged = read_bytes_response(r, "d")
    assert b"\\Seen" in lines[0] and data in lines[0], lines


def test_nul_in_plain_literal_still_refused(server):
    r = session(server, rev2=True)
    r.send(f"a APPEND INBOX {{{len(BINARY_MSG)}+}}\r\n".encode() +
           BINARY_MSG + b"\r\n")
    _, tagged = r.response("a")
    assert tagged.startswith("a NO"), tagged
    ok(r.cmd("b SELECT INBOX"))
    lines = ok(r.cmd("c STATUS INBOX (MESSAGES)"))
    assert "MESSAGES 0" in lines[0], lines


def test_binary_unknown_cte(server):
    msg = (b"Subject: cte\r\nMIME-Version: 1.0\r\n"
           b"Content-Transfer-Encoding: x-nonsense\r\n\r\nabc\r\n")
    r = session(server, rev2=False)
    assert append_binary(r, "a", msg).startswith("a OK")
    ok(r.cmd("b SELECT INBOX"))
    _, tagged = r.cmd("c FETCH 1 BINARY.PEEK[1]")
    assert tagged.startswith("c NO [UNKNOWN-CTE]"), tagged
    # the raw section is still there for BODY[]
    lines = ok(r.cmd("d FETCH 1 BODY.PEEK[1]"))
    assert "abc" in lines[0], lines


def test_binary_fetch_decodes_base64(server):
    msg = (b"Subject: b64\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: application/octet-stream\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\nAAEC/w==\r\n")
    r = session(server, rev2=True)
    assert append_binary(r, "a", msg).startswith("a OK")
    ok(r.cmd("b SELECT INBOX"))
    r.send(b"c FETCH 1 (BINARY.SIZE[1] BINARY.PEEK[1])\r\n")
    lines, tagged = read_bytes_response(r, "c")
    assert tagged.startswith(b"c OK"), tagged
    assert b"BINARY.SIZE[1] 4" in lines[0], lines
    assert b"~{4}\r\n\x00\x01\x02\xff" in lines[0], lines


# ---- literals --------------------------------------------------------------

def test_nonsync_literal_over_4096_accepted(server):
    """We announce LITERAL+ (not only LITERAL-): a non-synchronizing
    literal of any size is taken, also after ENABLE IMAP4rev2."""
    r = session(server, rev2=True)
    body = ("x" * 70 + "\r\n") * 80            # 5760 bytes
    msg = (MSG % ("big", "big") + body).encode()
    assert len(msg) > 4096
    r.send(f"a APPEND INBOX {{{len(msg)}+}}\r\n".encode() + msg + b"\r\n")
    _, tagged = r.response("a")
    assert tagged.startswith("a OK"), tagged
    name = "n" * 5000
    r.send(f"b CREATE {{{len(name)}+}}\r\n{name}\r\n".encode())
    _, tagged = r.response("b")
    # a name that long is refused by the store, but as a command (NO),
    # not as a literal the parser could not take
    assert tagged.split(" ")[1] in ("OK", "NO"), tagged
    ok(r.cmd("c NOOP"))


# ---- APPEND "UTF8 (literal8)" (RFC 6855) -------------------------------------

UTF8_MSG = ("From: \u00e5sa@example.org\r\nSubject: Gr\u00fc\u00dfe aus K\u00f6ln\r\n"
            "\r\nHallo\r\n").encode()


def test_append_utf8_data_item(server):
    r = session(server, rev2=False)
    ok(r.cmd("e ENABLE UTF8=ACCEPT"))
    # synchronizing, with flags, then MULTIAPPEND mixing both forms
    r.send(f"a APPEND INBOX (\\Seen) UTF8 (~{{{len(UTF8_MSG)}}}\r\n".encode())
    assert r.line().startswith("+")
    r.send(UTF8_MSG + b")\r\n")
    _, tagged = r.response("a")
    assert re.match(r"a OK \[APPENDUID \d+ 1\]", tagged), tagged
    r.send(f"b APPEND INBOX UTF8 (~{{{len(UTF8_MSG)}+}}\r\n".encode() +
           UTF8_MSG + f") {{{len(UTF8_MSG)}+}}\r\n".encode() + UTF8_MSG +
           b"\r\n")
    _, tagged = r.response("b")
    assert re.match(r"b OK \[APPENDUID \d+ 2:3\]", tagged), tagged
    ok(r.cmd("c SELECT INBOX"))
    r.send(b"d FETCH 1:3 (FLAGS BODY.PEEK[])\r\n")
    lines, tagged = read_bytes_response(r, "d")
    assert tagged.startswith(b"d OK"), tagged
    assert len(lines) == 3 and all(UTF8_MSG in x for x in lines), lines
    assert b"\\Seen" in lines[0] and b"\\Seen" not in lines[1]


def test_append_utf8_data_item_malformed(server):
    r = session(server, rev2=True)
    # a plain literal inside UTF8 ( ): literal8 is required
    r.send(f"a APPEND INBOX UTF8 ({{{len(UTF8_MSG)}+}}\r\n".encode() +
           UTF8_MSG + b")\r\n")
    assert bad(r.response("a")) == []
    # something after the message inside the parentheses
    r.send(f"b APPEND INBOX UTF8 (~{{{len(UTF8_MSG)}+}}\r\n".encode() +
           UTF8_MSG + b" extra)\r\n")
    assert bad(r.response("b")) == []
    # UTF8 without a list
    bad(r.cmd("c APPEND INBOX UTF8"))
    # nothing was kept, and the session still works
    lines = ok(r.cmd("d STATUS INBOX (MESSAGES)"))
    assert "MESSAGES 0" in lines[0], lines
