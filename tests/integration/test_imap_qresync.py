"""QRESYNC (RFC 7162 section 3.2): ENABLE QRESYNC, SELECT (QRESYNC ...)
with VANISHED (EARLIER) and FETCH of changed flags, known-uids, a
UIDVALIDITY mismatch, VANISHED instead of EXPUNGE (other sessions,
EXPUNGE, UID EXPUNGE, MOVE), UID FETCH (CHANGEDSINCE m VANISHED), the
[CLOSED] code, and a history that survives change-log compaction - what a
resynchronising client (e.g. Thunderbird, K-9) relies on."""
import os
import re
import time

import imaptest
from imaptest import ALICE


def highestmodseq(lines):
    for line in lines:
        m = re.search(r"\[HIGHESTMODSEQ (\d+)\]", line)
        if m:
            return int(m.group(1))
    raise AssertionError(f"no HIGHESTMODSEQ in {lines}")


def uidvalidity(lines):
    for line in lines:
        m = re.search(r"\[UIDVALIDITY (\d+)\]", line)
        if m:
            return int(m.group(1))
    raise AssertionError(f"no UIDVALIDITY in {lines}")


def uid_set(text):
    """"1:3,7" -> {1, 2, 3, 7}"""
    out = set()
    for part in text.split(","):
        a, _, b = part.partition(":")
        lo, hi = sorted((int(a), int(b or a)))
        out.update(range(lo, hi + 1))
    return out


def vanished(lines, earlier):
    """UIDs of the VANISHED (EARLIER) or plain VANISHED responses."""
    out = set()
    prefix = "* VANISHED (EARLIER) " if earlier else "* VANISHED "
    for line in lines:
        if line.startswith(prefix) and (earlier or "(EARLIER)" not in line):
            out |= uid_set(line[len(prefix):])
    return out


def fetch_uids(lines):
    return {int(m.group(1)) for line in lines
            for m in [re.search(r"FETCH \(.*UID (\d+)", line)] if m}


def append(r, count):
    """APPEND count small messages over one connection (LITERAL+)."""
    for n in range(count):
        msg = f"Subject: m{n}\r\n\r\nbody {n}\r\n".encode()
        r.send(f"ap{n} APPEND INBOX {{{len(msg)}+}}\r\n".encode() + msg +
               b"\r\n")
    for n in range(count):
        _, tagged = r.response(f"ap{n}")
        assert tagged.startswith(f"ap{n} OK"), tagged


def session(d, enable=True):
    r = imaptest.Raw(d).login()
    if enable:
        untagged, tagged = r.cmd("e1 ENABLE QRESYNC")
        assert "* ENABLED QRESYNC" in untagged and tagged.startswith("e1 OK")
    return r


def test_capability_and_enable_implies_condstore(imap_daemon):
    r = imaptest.Raw(imap_daemon).login()
    append(r, 2)
    untagged, _ = r.cmd("c1 CAPABILITY")
    assert "QRESYNC" in untagged[0].split()
    untagged, tagged = r.cmd("c2 ENABLE QRESYNC")
    assert untagged == ["* ENABLED QRESYNC"] and tagged.startswith("c2 OK")
    untagged, _ = r.cmd("c3 SELECT INBOX")
    assert highestmodseq(untagged) >= 1
    # CONDSTORE is on without asking: STORE reports MODSEQ.
    untagged, _ = r.cmd("c4 STORE 1 +FLAGS (\\Flagged)")
    assert "MODSEQ (" in untagged[0], untagged


def test_enable_while_selected_announces_highestmodseq(imap_daemon):
    r = imaptest.Raw(imap_daemon).login()
    append(r, 1)
    r.cmd("s1 SELECT INBOX")
    untagged, _ = r.cmd("s2 ENABLE QRESYNC")
    assert any("[HIGHESTMODSEQ " in u for u in untagged), untagged


def test_qresync_param_needs_enable(imap_daemon):
    r = imaptest.Raw(imap_daemon).login()
    append(r, 1)
    _, tagged = r.cmd("b1 SELECT INBOX (QRESYNC (1 1))")
    assert tagged.startswith("b1 BAD"), tagged
    r = session(imap_daemon)
    for bad in ("(QRESYNC)", "(QRESYNC (0 1))", "(QRESYNC (1))",
                "(QRESYNC (1 x))", "(QRESYNC (1 1 1:5 (1:2)))",
                "(QRESYNC (1 1 $))", "(QRESYNC (1 1 1:5 (1 2) x))"):
        _, tagged = r.cmd(f"b2 SELECT INBOX {bad}")
        assert tagged.startswith("b2 BAD"), (bad, tagged)


def test_select_reports_vanished_and_changes(imap_daemon):
    d = imap_daemon
    a = session(d)
    append(a, 6)
    untagged, _ = a.cmd("a1 SELECT INBOX")
    uv, base = uidvalidity(untagged), highestmodseq(untagged)
    a.cmd("a2 LOGOUT")
    # Another session expunges 2 and 4 and flags 5.
    b = imaptest.Raw(d).login()
    b.cmd("b1 SELECT INBOX")
    b.cmd("b2 UID STORE 2,4 +FLAGS (\\Deleted)")
    _, tagged = b.cmd("b3 EXPUNGE")
    assert tagged.startswith("b3 OK")
    b.cmd("b4 UID STORE 5 +FLAGS (\\Flagged)")
    c = session(d)
    untagged, tagged = c.cmd(f"c1 SELECT INBOX (QRESYNC ({uv} {base}))")
    assert tagged.startswith("c1 OK"), tagged
    assert vanished(untagged, True) == {2, 4}, untagged
    fetches = [u for u in untagged if " FETCH " in u]
    assert fetch_uids(fetches) == {5}, untagged
    assert "\\Flagged" in fetches[0] and "MODSEQ (" in fetches[0]
    # VANISHED comes before the FETCH responses.
    assert untagged.index(next(u for u in untagged if "VANISHED" in u)) < \
        untagged.index(fetches[0])
    # known-uids restricts both.
    untagged, _ = c.cmd(f"c2 SELECT INBOX (QRESYNC ({uv} {base} 3:4))")
    assert vanished(untagged, True) == {4}, untagged
    assert not fetch_uids(untagged), untagged
    untagged, _ = c.cmd(
        f"c3 EXAMINE INBOX (QRESYNC ({uv} {base} 1:6 (1:3 1:3)))")
    assert vanished(untagged, True) == {2, 4}, untagged
    # A UIDVALIDITY mismatch: a plain SELECT.
    untagged, tagged = c.cmd(f"c4 SELECT INBOX (QRESYNC ({uv + 1} {base}))")
    assert tagged.startswith("c4 OK")
    assert not any("VANISHED" in u or " FETCH " in u for u in untagged)
    assert "* 4 EXISTS" in untagged


def test_select_closed_code(imap_daemon):
    r = session(imap_daemon)
    append(r, 1)
    r.cmd("k1 CREATE Other")
    r.cmd("k2 SELECT INBOX")
    untagged, tagged = r.cmd("k3 SELECT Other")
    assert tagged.startswith("k3 OK")
    assert any(u.startswith("* OK [CLOSED]") for u in untagged), untagged
    # [CLOSED] comes before anything about the new mailbox.
    assert untagged[0].startswith("* OK [CLOSED]"), untagged


def test_vanished_replaces_expunge(imap_daemon):
    d = imap_daemon
    a = session(d)
    append(a, 8)
    a.cmd("a1 SELECT INBOX")
    b = imaptest.Raw(d).login()
    b.cmd("b1 SELECT INBOX")
    b.cmd("b2 UID STORE 1 +FLAGS (\\Deleted)")
    b.cmd("b3 EXPUNGE")
    # Another session's expunge, seen at a NOOP.
    untagged, _ = a.cmd("a2 NOOP")
    assert vanished(untagged, False) == {1}, untagged
    assert not any("EXPUNGE" in u for u in untagged), untagged
    # The session's own EXPUNGE.
    a.cmd("a3 UID STORE 2,3 +FLAGS (\\Deleted)")
    untagged, tagged = a.cmd("a4 EXPUNGE")
    # RFC 7162 3.2.7: the tagged OK tells the new HIGHESTMODSEQ.
    assert re.match(r"a4 OK \[HIGHESTMODSEQ \d+\]", tagged), tagged
    assert vanished(untagged, False) == {2, 3}, untagged
    assert not any(u.endswith(" EXPUNGE") for u in untagged), untagged
    # UID EXPUNGE.
    a.cmd("a5 UID STORE 4,5 +FLAGS (\\Deleted)")
    untagged, _ = a.cmd("a6 UID EXPUNGE 5")
    assert vanished(untagged, False) == {5}, untagged
    # MOVE.
    a.cmd("a7 CREATE Dest")
    untagged, tagged = a.cmd("a8 UID MOVE 6:7 Dest")
    assert re.match(r"a8 OK \[HIGHESTMODSEQ \d+\]", tagged), tagged
    assert vanished(untagged, False) == {6, 7}, untagged
    assert not any(u.endswith(" EXPUNGE") for u in untagged), untagged
    # The count the client keeps agrees with the server's.
    untagged, _ = a.cmd("a9 SEARCH ALL")
    assert untagged == ["* SEARCH 1 2"], untagged  # UIDs 4 and 8 left
    # A session without QRESYNC still gets EXPUNGE (5 of them: UIDs
    # 2, 3, 5, 6 and 7).
    untagged, _ = b.cmd("b4 NOOP")
    assert not any("VANISHED" in u for u in untagged), untagged
    assert len([u for u in untagged if u.endswith(" EXPUNGE")]) == 5, \
        untagged


def test_idle_reports_vanished(imap_daemon):
    d = imap_daemon
    a = session(d)
    append(a, 3)
    a.cmd("a1 SELECT INBOX")
    b = imaptest.Raw(d).login()
    b.cmd("b1 SELECT INBOX")
    a.send("i IDLE\r\n")
    assert a.line().startswith("+")
    b.cmd("b2 UID STORE 2 +FLAGS.SILENT (\\Deleted)")
    _, tagged = b.cmd("b3 EXPUNGE")
    assert tagged.startswith("b3 OK")
    got = []
    a.sock.settimeout(1)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and "* VANISHED 2" not in got:
        try:
            got.append(a.line())
        except TimeoutError:
            pass
    a.sock.settimeout(10)
    assert "* VANISHED 2" in got, got
    assert not any(x.endswith(" EXPUNGE") for x in got), got
    a.send("DONE\r\n")
    _, tagged = a.response("i")
    assert tagged.startswith("i OK")


def test_uid_fetch_vanished(imap_daemon):
    d = imap_daemon
    a = session(d)
    append(a, 5)
    untagged, _ = a.cmd("a1 SELECT INBOX")
    base = highestmodseq(untagged)
    a.cmd("a2 UID STORE 2,3 +FLAGS (\\Deleted)")
    a.cmd("a3 UID EXPUNGE 2:3")
    a.cmd("a4 UID STORE 5 +FLAGS (\\Seen)")
    untagged, tagged = a.cmd(
        f"a5 UID FETCH 1:* (FLAGS) (CHANGEDSINCE {base} VANISHED)")
    assert tagged.startswith("a5 OK"), tagged
    assert vanished(untagged, True) == {2, 3}, untagged
    assert fetch_uids(untagged) == {5}, untagged
    untagged, _ = a.cmd(
        f"a6 UID FETCH 3:5 (FLAGS) (VANISHED CHANGEDSINCE {base})")
    assert vanished(untagged, True) == {3}, untagged
    # VANISHED needs UID FETCH and CHANGEDSINCE.
    _, tagged = a.cmd(f"a7 FETCH 1:* (FLAGS) (CHANGEDSINCE {base} VANISHED)")
    assert tagged.startswith("a7 BAD"), tagged
    _, tagged = a.cmd("a8 UID FETCH 1:* (FLAGS) (VANISHED)")
    assert tagged.startswith("a8 BAD"), tagged
    # ... and ENABLE QRESYNC.
    b = imaptest.Raw(d).login()
    b.cmd("b1 SELECT INBOX")
    _, tagged = b.cmd(f"b2 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)")
    assert tagged.startswith("b2 BAD"), tagged


def log_size(d):
    path = os.path.join(d.dir, "spool", "example.com", "alice",
                        "clustermail.log")
    if not os.path.exists(path):
        return None
    return os.path.getsize(path)


def test_vanished_survives_log_compaction(imap_daemon):
    d = imap_daemon
    a = session(d)
    append(a, 40)
    untagged, _ = a.cmd("a1 SELECT INBOX")
    uv, base = uidvalidity(untagged), highestmodseq(untagged)
    a.cmd("a2 UID STORE 3,7,20 +FLAGS (\\Deleted)")
    a.cmd("a3 EXPUNGE")
    # Enough flag changes to pass the default 256 KiB compaction
    # threshold: each STORE 1:* logs a record of 37 messages.
    sizes = []
    n = 0
    while n < 2000:
        for k in range(50):
            op = "+" if (n + k) % 2 == 0 else "-"
            a.send(f"s{k} STORE 1:* {op}FLAGS.SILENT (\\Seen)\r\n")
        for k in range(50):
            _, tagged = a.response(f"s{k}")
            assert tagged.startswith(f"s{k} OK"), tagged
        n += 50
        sizes.append(log_size(d))
        if len(sizes) > 1 and sizes[-1] is not None and \
                sizes[-2] is not None and sizes[-1] < sizes[-2]:
            break
    if log_size(d) is None:
        import pytest
        pytest.skip("change log not found at the expected spool path")
    assert any(sizes[i] < sizes[i - 1] for i in range(1, len(sizes))), \
        f"the log never got compacted: {sizes}"
    c = session(d)
    untagged, tagged = c.cmd(f"c1 SELECT INBOX (QRESYNC ({uv} {base}))")
    assert tagged.startswith("c1 OK"), tagged
    gone = vanished(untagged, True)
    assert {3, 7, 20} <= gone, untagged
    # Every UID named is really gone (none of the live ones).
    assert not gone & (set(range(1, 41)) - {3, 7, 20}), untagged
    assert fetch_uids(untagged) == set(range(1, 41)) - {3, 7, 20}


def test_seq_match_data_narrows_after_rebuild(imap_daemon):
    """Without history, seq-match-data (RFC 7162 3.2.5.2) lets the server
    leave out UIDs the client cannot have known."""
    d = imap_daemon
    a = session(d)
    append(a, 6)
    a.cmd("a1 SELECT INBOX")
    a.cmd("a2 UID STORE 1,2 +FLAGS (\\Deleted)")
    a.cmd("a3 EXPUNGE")
    # The client's state: UIDs 3:6 as sequence numbers 1:4.
    untagged, _ = a.cmd("a4 SELECT INBOX")
    uv, base = uidvalidity(untagged), highestmodseq(untagged)
    a.cmd("a5 UID STORE 5 +FLAGS (\\Deleted)")
    a.cmd("a6 EXPUNGE")
    a.cmd("a7 LOGOUT")
    r = d.ctl("index", "rebuild", ALICE, "INBOX")
    if r.returncode != 0:
        import pytest
        pytest.skip(f"clustermailctl index rebuild failed: {r.stderr}")
    c = session(d)
    untagged, _ = c.cmd(f"c1 SELECT INBOX (QRESYNC ({uv} {base}))")
    if uidvalidity(untagged) != uv:
        return  # a new UIDVALIDITY: a plain SELECT (checked elsewhere)
    assert vanished(untagged, True) == {1, 2, 5}, untagged
    untagged, _ = c.cmd(
        f"c2 SELECT INBOX (QRESYNC ({uv} {base} (1:2 3:4)))")
    assert vanished(untagged, True) == {5}, untagged
    # A pair that no longer holds stops the narrowing there.
    untagged, _ = c.cmd(
        f"c3 SELECT INBOX (QRESYNC ({uv} {base} 1:6 (1,2,4 3,4,6)))")
    assert vanished(untagged, True) == {5}, untagged
    untagged, _ = c.cmd(
        f"c4 SELECT INBOX (QRESYNC ({uv} {base} 1:6 (1,3 3,5)))")
    assert vanished(untagged, True) == {5}, untagged


def test_vanished_after_rebuild_covers_everything(imap_daemon):
    """A rebuilt index has no expunge history: VANISHED (EARLIER) then names
    every UID the client might know that is not in the mailbox."""
    d = imap_daemon
    a = session(d)
    append(a, 6)
    untagged, _ = a.cmd("a1 SELECT INBOX")
    uv, base = uidvalidity(untagged), highestmodseq(untagged)
    a.cmd("a2 UID STORE 2,5 +FLAGS (\\Deleted)")
    a.cmd("a3 EXPUNGE")
    a.cmd("a4 LOGOUT")
    r = d.ctl("index", "rebuild", ALICE, "INBOX")
    if r.returncode != 0:
        import pytest
        pytest.skip(f"clustermailctl index rebuild failed: {r.stderr}")
    c = session(d)
    untagged, tagged = c.cmd(f"c1 SELECT INBOX (QRESYNC ({uv} {base}))")
    assert tagged.startswith("c1 OK"), tagged
    if uidvalidity(untagged) != uv:
        return  # a new UIDVALIDITY: a plain SELECT (checked elsewhere)
    gone = vanished(untagged, True)
    assert {2, 5} <= gone and not gone & {1, 3, 4, 6}, untagged
    untagged, _ = c.cmd(f"c2 SELECT INBOX (QRESYNC ({uv} {base} 1:4))")
    gone = vanished(untagged, True)
    assert gone == {2}, untagged
