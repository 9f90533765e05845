"""IMAP integration tests: commands that change messages (APPEND, STORE,
EXPUNGE, UID EXPUNGE, CLOSE, UNSELECT, COPY, MOVE), IDLE, and two
daemons ("nodes") serving one spool."""
import os
import re
import time

import pytest

import cmtest
import imaptest

MSG = "From: a@example.org\r\nSubject: %s\r\n\r\nbody %s\r\n"


def make_spool(workdir):
    """clustermaild never creates spool_dir itself."""
    spool = os.path.join(workdir, "spool")
    os.makedirs(spool, exist_ok=True)
    cmtest.prepare_workdir(spool)
    return spool


def assert_clean_log(d):
    """No sanitizer report (ASan/UBSan builds) in the daemon's log."""
    log = d.read_log()
    for marker in ("ERROR: AddressSanitizer", "runtime error:",
                   "ERROR: LeakSanitizer"):
        assert marker not in log, log[log.index(marker) - 200:][:3000]


@pytest.fixture
def server(workdir):
    make_spool(workdir)
    d = imaptest.start_daemon(workdir, extra="imap_append_limit = 100k")
    yield d
    d.stop()
    assert_clean_log(d)


def raw(server, login=True, timeout=10):
    r = imaptest.Raw(server, timeout=timeout)
    if login:
        r.login()
    return r


def ok(reply):
    untagged, tagged = reply
    assert tagged.split(" ")[1] == "OK", (untagged, tagged)
    return untagged


def no(reply, code=None):
    untagged, tagged = reply
    assert tagged.split(" ")[1] == "NO", (untagged, tagged)
    if code:
        assert f"[{code}]" in tagged, tagged
    return untagged


def deliver(server, n, mailbox=None, start=0):
    for i in range(start, start + n):
        imaptest.deliver(server, imaptest.ALICE, MSG % (i, i), mailbox)


def view(r, tag="v"):
    """[(seq, uid, flags)] of the selected mailbox."""
    untagged, tagged = r.cmd(f"{tag} FETCH 1:* (UID FLAGS)")
    out = []
    for line in untagged:
        m = re.match(r"\* (\d+) FETCH \((.*)\)$", line)
        if not m:
            continue
        uid = int(re.search(r"UID (\d+)", m.group(2)).group(1))
        flags = set(re.search(r"FLAGS \(([^)]*)\)", m.group(2)).group(1).split())
        flags.discard("\\Recent")
        out.append((int(m.group(1)), uid, frozenset(flags)))
    return sorted(out)


def append(r, tag, mailbox, body, flags="", date=""):
    """APPEND with a synchronizing literal; returns the tagged line."""
    data = body.encode() if isinstance(body, str) else body
    args = " ".join(x for x in (mailbox, flags, date) if x)
    r.send(f"{tag} APPEND {args} {{{len(data)}}}\r\n")
    line = r.line()
    if not line.startswith("+"):
        return line
    r.send(data + b"\r\n")
    return r.response(tag)[1]


# ---- APPEND -----------------------------------------------------------------

def test_append_flags_date_appenduid(server):
    r = raw(server)
    tagged = append(r, "a", "INBOX", MSG % ("x", "x"), "(\\Seen \\Flagged $Work)",
                    '"17-Jul-1996 02:44:25 -0700"')
    m = re.match(r"a OK \[APPENDUID (\d+) (\d+)\]", tagged)
    assert m, tagged
    uidvalidity, uid = int(m.group(1)), int(m.group(2))
    lines = ok(r.cmd("b SELECT INBOX"))
    assert f"* OK [UIDVALIDITY {uidvalidity}] UIDs valid" in lines
    lines = ok(r.cmd("c FETCH 1 (UID FLAGS INTERNALDATE)"))
    assert f"UID {uid}" in lines[0]
    assert "\\Seen" in lines[0] and "\\Flagged" in lines[0] and "$Work" in lines[0]
    assert "17-Jul-1996 02:44:25" in lines[0] or "1996" in lines[0]


def test_append_imaplib_roundtrip(server):
    m = imaptest.login(server)
    body = (MSG % ("lib", "lib")).encode()
    typ, data = m.append("INBOX", None, None, body)
    assert typ == "OK", data
    m.select("INBOX")
    typ, data = m.fetch("1", "(BODY.PEEK[])")
    assert data[0][1].replace(b"\r\n", b"\n") == body.replace(b"\r\n", b"\n")
    m.logout()


def test_append_trycreate(server):
    r = raw(server)
    r.send("a APPEND Nowhere {5}\r\n")
    line = r.line()
    assert line.startswith("a NO [TRYCREATE]"), line
    ok(r.cmd("b NOOP"))


def test_append_toobig_without_continuation(server):
    r = raw(server)
    r.send("a APPEND INBOX {200000}\r\n")
    line = r.line()
    assert line.startswith("a NO [TOOBIG]"), line
    ok(r.cmd("b NOOP"))        # the session is still in sync


def test_append_literal_plus_and_multiappend(server):
    r = raw(server)
    m1, m2 = (MSG % (1, 1)).encode(), (MSG % (2, 2)).encode()
    r.send(b"a APPEND INBOX {%d+}\r\n%s (\\Seen) {%d+}\r\n%s\r\n"
           % (len(m1), m1, len(m2), m2))
    _, tagged = r.response("a")
    m = re.match(r"a OK \[APPENDUID \d+ (\S+)\]", tagged)
    assert m, tagged
    assert m.group(1) in ("1:2", "1,2")
    ok(r.cmd("b SELECT INBOX"))
    assert [(s, u) for s, u, _ in view(r)] == [(1, 1), (2, 2)]
    assert "\\Seen" in view(r)[1][2]


def test_multiappend_is_all_or_nothing(server):
    r = raw(server)
    m1 = (MSG % (1, 1)).encode()
    # the second message is over the limit: the first must not stay
    r.send(b"a APPEND INBOX {%d+}\r\n%s {200000}\r\n" % (len(m1), m1))
    _, tagged = r.response("a")
    assert tagged.startswith("a NO"), tagged
    ok(r.cmd("b NOOP"))
    lines = ok(r.cmd("c STATUS INBOX (MESSAGES)"))
    assert lines == ['* STATUS "INBOX" (MESSAGES 0)']


def test_append_refuses_empty_and_nul(server):
    r = raw(server)
    r.send("a APPEND INBOX {0}\r\n")
    assert r.line().startswith("a NO")
    tagged = append(r, "b", "INBOX", b"Subject: x\r\n\r\nnul\x00byte\r\n")
    assert tagged.startswith("b NO"), tagged
    assert ok(r.cmd("c STATUS INBOX (MESSAGES)")) == \
        ['* STATUS "INBOX" (MESSAGES 0)']


def test_append_over_quota(server):
    deliver(server, 1)
    r = server.ctl("quota", "set", imaptest.ALICE, "--messages", "1")
    assert r.returncode == 0, r.stderr
    r = raw(server)
    tagged = append(r, "a", "INBOX", MSG % (1, 1))
    assert tagged.startswith("a NO [OVERQUOTA]"), tagged
    assert ok(r.cmd("b STATUS INBOX (MESSAGES)")) == \
        ['* STATUS "INBOX" (MESSAGES 1)']


def test_append_literal8_accepted(server):
    """BINARY (RFC 3516): a literal8 message is taken, NUL bytes and all
    (test_imap_rev2.py reads it back byte for byte)."""
    r = raw(server)
    data = b"Subject: bin\r\n\r\n\x00\x01\r\n"
    r.send(b"a APPEND INBOX ~{%d}\r\n" % len(data))
    assert r.line().startswith("+"), "no continuation for literal8"
    r.send(data + b"\r\n")
    _, tagged = r.response("a")
    assert tagged.startswith("a OK [APPENDUID"), tagged
    ok(r.cmd("b NOOP"))


def test_append_to_selected_mailbox_reports_exists(server):
    r = raw(server)
    ok(r.cmd("a SELECT INBOX"))
    data = (MSG % (1, 1)).encode()
    r.send(b"b APPEND INBOX {%d+}\r\n%s\r\n" % (len(data), data))
    untagged, tagged = r.response("b")
    assert tagged.startswith("b OK [APPENDUID"), tagged
    assert "* 1 EXISTS" in untagged         # before the tagged OK
    assert ok(r.cmd("c NOOP")) == []
    assert [u for _, u, _ in view(r)] == [1]


# ---- STORE ------------------------------------------------------------------

def test_store_variants(server):
    deliver(server, 3)
    r = raw(server)
    ok(r.cmd("a SELECT INBOX"))
    lines = ok(r.cmd("b STORE 1:2 +FLAGS (\\Seen $Label)"))
    assert len([x for x in lines if " FETCH " in x]) == 2
    assert any(x.startswith("* 1 FETCH (FLAGS (") and "\\Seen" in x and
               "$Label" in x for x in lines), lines
    assert any(x.startswith("* FLAGS (") and "$Label" in x for x in lines)
    lines = ok(r.cmd("c STORE 2 -FLAGS (\\Seen)"))
    assert [x for x in lines if " FETCH " in x] == \
        ["* 2 FETCH (FLAGS (\\Recent $Label))"] or \
        [x for x in lines if " FETCH " in x] == ["* 2 FETCH (FLAGS ($Label))"]
    lines = ok(r.cmd("d STORE 3 FLAGS.SILENT (\\Draft)"))
    assert not any(" FETCH " in x for x in lines)
    lines = ok(r.cmd("e UID STORE 3 FLAGS (\\Answered)"))
    assert any(x.startswith("* 3 FETCH (") and "UID 3" in x for x in lines)
    assert [(s, f) for s, _, f in view(r)] == [
        (1, frozenset({"\\Seen", "$Label"})), (2, frozenset({"$Label"})),
        (3, frozenset({"\\Answered"}))]


def test_store_errors(server):
    deliver(server, 1)
    r = raw(server)
    ok(r.cmd("a SELECT INBOX"))
    for i, args in enumerate(["5 +FLAGS (\\Seen)", "1 +FLAGS (\\Recent)",
                              "1 BOGUS (\\Seen)", "0 FLAGS ()",
                              "1 +FLAGS (\\Unknown)"]):
        _, tagged = r.cmd(f"b{i} STORE {args}")
        assert tagged.startswith(f"b{i} BAD"), tagged
    ok(r.cmd("c UID STORE 999 +FLAGS (\\Seen)"))     # no such UID: fine
    ok(r.cmd("d EXAMINE INBOX"))
    no(r.cmd("e STORE 1 +FLAGS (\\Seen)"), "READ-ONLY")


def test_store_seen_by_other_session(server):
    deliver(server, 2)
    r1, r2 = raw(server), raw(server)
    ok(r1.cmd("a SELECT INBOX"))
    ok(r2.cmd("a SELECT INBOX"))
    ok(r2.cmd("b STORE 2 +FLAGS (\\Flagged)"))
    lines = ok(r1.cmd("c NOOP"))
    assert any(x.startswith("* 2 FETCH (") and "\\Flagged" in x
               for x in lines), lines
    assert not any(" FETCH " in x for x in ok(r1.cmd("d NOOP")))


def test_quiet_noop_after_select(server):
    deliver(server, 1)
    r = raw(server)
    ok(r.cmd("a SELECT INBOX"))
    ok(r.cmd("b STORE 1 +FLAGS.SILENT ($Kw)"))
    r2 = raw(server)
    lines = ok(r2.cmd("a SELECT INBOX"))
    assert any(x.startswith("* FLAGS (") and "$Kw" in x for x in lines)
    assert ok(r2.cmd("b NOOP")) == []


def test_store_keyword_limit(server):
    deliver(server, 1)
    r = raw(server)
    ok(r.cmd("a SELECT INBOX"))
    kws = " ".join(f"k{i}" for i in range(64))
    ok(r.cmd(f"b STORE 1 +FLAGS.SILENT ({kws})"))
    no(r.cmd("c STORE 1 +FLAGS (oneTooMany)"), "LIMIT")
    lines = ok(r.cmd("d SELECT INBOX"))
    perm = [x for x in lines if "PERMANENTFLAGS" in x][0]
    assert "k63" in perm and "\\*" not in perm


def test_store_unchangedsince(server):
    deliver(server, 2)
    r = raw(server)
    ok(r.cmd("a SELECT INBOX"))
    lines = ok(r.cmd("b FETCH 1:2 (MODSEQ)"))
    modseq = int(re.search(r"MODSEQ \((\d+)\)", lines[0]).group(1))
    ok(r.cmd("c STORE 2 +FLAGS (\\Seen)"))
    untagged, tagged = r.cmd(f"d STORE 1:2 (UNCHANGEDSINCE {modseq}) "
                             "+FLAGS (\\Flagged)")
    assert tagged.startswith("d OK [MODIFIED 2]"), tagged
    assert not any(x.startswith("* 2 FETCH") for x in untagged), untagged
    flags = {s: f for s, _, f in view(r)}
    assert "\\Flagged" in flags[1] and "\\Flagged" not in flags[2]


def test_select_condstore_reports_modseq(server):
    deliver(server, 1)
    r = raw(server)
    lines = ok(r.cmd("a SELECT INBOX (CONDSTORE)"))
    m = [x for x in lines if x.startswith("* OK [HIGHESTMODSEQ ")]
    assert m, lines
    before = int(m[0].split()[3].rstrip("]"))
    lines = ok(r.cmd("b STORE 1 +FLAGS (\\Seen)"))
    modseq = int(re.search(r"MODSEQ \((\d+)\)", lines[0]).group(1))
    assert modseq > before
    lines = ok(r.cmd("c STATUS INBOX (HIGHESTMODSEQ)"))
    assert lines == [f'* STATUS "INBOX" (HIGHESTMODSEQ {modseq})']
    lines = ok(r.cmd("d UID STORE 1 +FLAGS.SILENT (\\Flagged)"))
    assert len(lines) == 1 and re.match(
        r"\* 1 FETCH \(UID 1 MODSEQ \((\d+)\)\)$", lines[0]), lines
    assert int(lines[0].split("(")[2].rstrip(")")) > modseq


def test_bad_arguments_get_bad(server):
    r = raw(server)
    for i, line in enumerate(["SELECT", "CREATE", "DELETE", "RENAME a",
                              "SUBSCRIBE", "STATUS INBOX", "STATUS",
                              "LIST", "LIST \"\"", "EXAMINE INBOX (BOGUS)",
                              "CREATE x (USE)", "NAMESPACE x"]):
        _, tagged = r.cmd(f"b{i} {line}")
        assert tagged.startswith(f"b{i} BAD"), (line, tagged)
    ok(r.cmd("c SELECT INBOX"))
    for i, line in enumerate(["STORE", "STORE 1", "STORE 1 FLAGS",
                              "COPY 1", "COPY", "UID EXPUNGE", "MOVE x Bin",
                              "STORE 1:x +FLAGS (\\Seen)",
                              "UNSELECT x", "IDLE x"]):
        _, tagged = r.cmd(f"d{i} {line}")
        assert tagged.startswith(f"d{i} BAD"), (line, tagged)
    ok(r.cmd("e NOOP"))


# ---- EXPUNGE / CLOSE / UNSELECT ----------------------------------------------

def test_expunge_renumbers_from_the_top(server):
    deliver(server, 5)
    r = raw(server)
    ok(r.cmd("a SELECT INBOX"))
    ok(r.cmd("b STORE 2,4 +FLAGS.SILENT (\\Deleted)"))
    lines = ok(r.cmd("c EXPUNGE"))
    assert lines == ["* 4 EXPUNGE", "* 2 EXPUNGE"]
    assert [(s, u) for s, u, _ in view(r)] == [(1, 1), (2, 3), (3, 5)]


def test_uid_expunge_only_the_set(server):
    deliver(server, 3)
    r = raw(server)
    ok(r.cmd("a SELECT INBOX"))
    ok(r.cmd("b STORE 1:3 +FLAGS.SILENT (\\Deleted)"))
    lines = ok(r.cmd("c UID EXPUNGE 2"))
    assert lines == ["* 2 EXPUNGE"]
    assert [u for _, u, _ in view(r)] == [1, 3]
    lines = ok(r.cmd("d UID EXPUNGE 1:*"))
    assert lines == ["* 2 EXPUNGE", "* 1 EXPUNGE"]


def test_expunge_keeps_undeleted(server):
    deliver(server, 2)
    r = raw(server)
    ok(r.cmd("a SELECT INBOX"))
    assert ok(r.cmd("b EXPUNGE")) == []
    assert len(view(r)) == 2


def test_close_expunges_silently_unselect_does_not(server):
    deliver(server, 3)
    r = raw(server)
    ok(r.cmd("a SELECT INBOX"))
    ok(r.cmd("b STORE 1 +FLAGS.SILENT (\\Deleted)"))
    assert ok(r.cmd("c UNSELECT")) == []
    assert ok(r.cmd("d STATUS INBOX (MESSAGES)")) == \
        ['* STATUS "INBOX" (MESSAGES 3)']
    ok(r.cmd("e SELECT INBOX"))
    assert ok(r.cmd("f CLOSE")) == []        # no untagged EXPUNGE
    assert ok(r.cmd("g STATUS INBOX (MESSAGES)")) == \
        ['* STATUS "INBOX" (MESSAGES 2)']
    _, tagged = r.cmd("h FETCH 1 FLAGS")
    assert not tagged.startswith("h OK")     # back in AUTH state


def test_close_on_examine_keeps_deleted(server):
    deliver(server, 1)
    r = raw(server)
    ok(r.cmd("a SELECT INBOX"))
    ok(r.cmd("b STORE 1 +FLAGS.SILENT (\\Deleted)"))
    ok(r.cmd("c EXAMINE INBOX"))
    ok(r.cmd("d CLOSE"))
    assert ok(r.cmd("e STATUS INBOX (MESSAGES)")) == \
        ['* STATUS "INBOX" (MESSAGES 1)']


def test_no_expunge_during_fetch_store(server):
    deliver(server, 3)
    r1, r2 = raw(server), raw(server)
    ok(r1.cmd("a SELECT INBOX"))
    ok(r2.cmd("a SELECT INBOX"))
    ok(r2.cmd("b STORE 1 +FLAGS.SILENT (\\Deleted)"))
    ok(r2.cmd("c EXPUNGE"))
    # a sequence-number STORE may not see EXPUNGE (RFC 9051 7.5.1)
    lines = ok(r1.cmd("d STORE 3 +FLAGS (\\Seen)"))
    assert not any(x.endswith(" EXPUNGE") for x in lines)
    assert any(x.startswith("* 3 FETCH") for x in lines)
    assert ok(r1.cmd("e NOOP"))[0] == "* 1 EXPUNGE"


def test_deleted_selected_mailbox_ends_session(server):
    r, other = raw(server), raw(server)
    ok(r.cmd("a CREATE Doomed"))
    ok(r.cmd("b SELECT Doomed"))
    ok(other.cmd("c DELETE Doomed"))
    r.send("d NOOP\r\n")
    assert r.line().startswith("* BYE"), "expected BYE"


# ---- COPY / MOVE -------------------------------------------------------------

def test_copy_copyuid(server):
    deliver(server, 3)
    r = raw(server)
    ok(r.cmd("a CREATE Dest"))
    deliver(server, 1, "Dest")
    ok(r.cmd("b SELECT INBOX"))
    ok(r.cmd("c STORE 2 +FLAGS.SILENT (\\Flagged)"))
    _, tagged = r.cmd("d COPY 2:3 Dest")
    m = re.match(r"d OK \[COPYUID (\d+) (\S+) (\S+)\]", tagged)
    assert m, tagged
    assert m.group(2) == "2:3" and m.group(3) == "2:3"
    lines = ok(r.cmd("e STATUS Dest (MESSAGES UIDVALIDITY)"))
    assert f"UIDVALIDITY {m.group(1)}" in lines[0] and "MESSAGES 3" in lines[0]
    assert len(view(r)) == 3                # sources stay
    ok(r.cmd("f SELECT Dest"))
    assert "\\Flagged" in view(r)[1][2]


def test_copy_errors(server):
    deliver(server, 1)
    r = raw(server)
    ok(r.cmd("a SELECT INBOX"))
    no(r.cmd("b COPY 1 Nowhere"), "TRYCREATE")
    ok(r.cmd("b2 CREATE Bin"))
    _, tagged = r.cmd("c COPY 5 Bin")
    assert tagged.startswith("c BAD"), tagged
    assert ok(r.cmd("d UID COPY 99 Bin")) == []    # empty match: OK
    no(r.cmd("e MOVE 1 INBOX"))


def test_move_sends_copyuid_then_expunge(server):
    deliver(server, 3)
    r = raw(server)
    ok(r.cmd("a0 CREATE Bin"))
    ok(r.cmd("a SELECT INBOX"))
    lines = ok(r.cmd("b MOVE 1,3 Bin"))
    assert re.match(r"\* OK \[COPYUID \d+ 1,3 1:2\]", lines[0]), lines
    assert lines[1:] == ["* 3 EXPUNGE", "* 1 EXPUNGE"]
    assert [u for _, u, _ in view(r)] == [2]
    lines = ok(r.cmd("c UID MOVE 2 Bin"))
    assert lines[1:] == ["* 1 EXPUNGE"]
    assert ok(r.cmd("d STATUS Bin (MESSAGES)")) == \
        ['* STATUS "Bin" (MESSAGES 3)']


def test_move_read_only_refused(server):
    deliver(server, 1)
    r = raw(server)
    ok(r.cmd("a0 CREATE Bin"))
    ok(r.cmd("a EXAMINE INBOX"))
    no(r.cmd("b MOVE 1 Bin"), "READ-ONLY")
    ok(r.cmd("c COPY 1 Bin"))


# ---- IDLE --------------------------------------------------------------------

idle_until = imaptest.idle_until


def test_idle_sees_delivery(server):
    r = raw(server)
    ok(r.cmd("a SELECT INBOX"))
    r.send("i IDLE\r\n")
    assert r.line().startswith("+")
    start = time.monotonic()
    deliver(server, 1)
    got = idle_until(r, lambda x: x == "* 1 EXISTS", 5)
    assert "* 1 EXISTS" in got, got
    assert time.monotonic() - start < 3
    r.send("DONE\r\n")
    _, tagged = r.response("i")
    assert tagged.startswith("i OK")


def test_idle_sees_expunge_and_flags(server):
    deliver(server, 2)
    r, other = raw(server), raw(server)
    ok(r.cmd("a SELECT INBOX"))
    ok(other.cmd("a SELECT INBOX"))
    r.send("i IDLE\r\n")
    assert r.line().startswith("+")
    ok(other.cmd("b STORE 2 +FLAGS.SILENT (\\Flagged)"))
    got = idle_until(r, lambda x: "FETCH" in x, 5)
    assert any(x.startswith("* 2 FETCH") and "\\Flagged" in x for x in got), got
    ok(other.cmd("c STORE 1 +FLAGS.SILENT (\\Deleted)"))
    ok(other.cmd("d EXPUNGE"))
    got = idle_until(r, lambda x: x.endswith("EXPUNGE"), 5)
    assert "* 1 EXPUNGE" in got, got
    r.send("done\r\n")
    _, tagged = r.response("i")
    assert tagged.startswith("i OK")


def test_idle_other_line_is_bad_and_auth_state_idle(server):
    r = raw(server)
    r.send("i IDLE\r\n")                 # no mailbox selected: just waits
    assert r.line().startswith("+")
    r.send("NOOP\r\n")
    _, tagged = r.response("i")
    assert tagged.startswith("i BAD")
    ok(r.cmd("j NOOP"))


# ---- two nodes, one spool ------------------------------------------------------

def test_two_nodes_share_one_mailbox(workdir):
    shared = workdir
    make_spool(shared)
    dirs = [os.path.join(shared, n) for n in ("node1", "node2")]
    daemons = []
    try:
        for i, d_dir in enumerate(dirs):
            os.makedirs(d_dir)
            cmtest.prepare_workdir(d_dir)
            d = cmtest.Daemon(d_dir, node=f"n{i + 1}",
                              services=["imap", "imaps"])
            d.write_config(replace={"spool_dir": os.path.join(shared, "spool"),
                                    "users_file": os.path.join(shared, "users")})
            if i == 0:
                for u in imaptest.USERS:
                    imaptest.add_user(d, u)
            d.start()
            daemons.append(d)
        a, b = raw(daemons[0]), raw(daemons[1])
        ok(a.cmd("c CREATE Bin"))
        ok(a.cmd("s SELECT INBOX"))
        ok(b.cmd("s SELECT INBOX"))
        for i in range(4):
            node = (a, b)[i % 2]
            tagged = append(node, f"p{i}", "INBOX", MSG % (i, i))
            assert tagged.startswith(f"p{i} OK"), tagged
        deliver(daemons[0], 2, start=10)
        ok(a.cmd("n1 NOOP"))
        ok(b.cmd("n1 NOOP"))
        ok(a.cmd("t1 STORE 1 +FLAGS (\\Seen)"))
        ok(b.cmd("t2 STORE 2 +FLAGS (\\Flagged $Shared)"))
        ok(a.cmd("t3 STORE 3 +FLAGS (\\Deleted)"))
        ok(b.cmd("t4 UID STORE 4 +FLAGS (\\Answered)"))
        ok(b.cmd("x1 NOOP"))
        ok(b.cmd("x2 EXPUNGE"))
        ok(a.cmd("m1 UID MOVE 5 Bin"))
        ok(b.cmd("t5 STORE 1 -FLAGS (\\Seen)"))
        for _ in range(2):
            ok(a.cmd("n2 NOOP"))
            ok(b.cmd("n2 NOOP"))
        va, vb = view(a), view(b)
        assert va == vb
        assert [u for _, u, _ in va] == [1, 2, 4, 6]
        flags = {u: f for _, u, f in va}
        assert flags[1] == frozenset()
        assert flags[2] == frozenset({"\\Flagged", "$Shared"})
        assert flags[4] == frozenset({"\\Answered"})
        assert ok(b.cmd("z STATUS Bin (MESSAGES)")) == \
            ['* STATUS "Bin" (MESSAGES 1)']
        # IDLE on one node hears about an APPEND on the other
        b.send("i IDLE\r\n")
        assert b.line().startswith("+")
        start = time.monotonic()
        assert append(a, "p9", "INBOX", MSG % (9, 9)).startswith("p9 OK")
        got = idle_until(b, lambda x: x == "* 5 EXISTS", 5)
        assert "* 5 EXISTS" in got, got
        assert time.monotonic() - start < 3
        b.send("DONE\r\n")
        assert b.response("i")[1].startswith("i OK")
    finally:
        for d in daemons:
            d.stop()
    for d in daemons:
        assert_clean_log(d)
