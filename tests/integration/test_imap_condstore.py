"""CONDSTORE (RFC 7162) as a whole: the capability, ENABLE CONDSTORE before
and after SELECT, MODSEQ in FETCH responses, STORE UNCHANGEDSINCE and
FETCH CHANGEDSINCE, HIGHESTMODSEQ growing with every change, and SEARCH
MODSEQ - what a syncing client (e.g. Thunderbird) relies on."""
import re

import imaptest
from imaptest import ALICE


def modseq_of(line):
    m = re.search(r"MODSEQ \((\d+)\)", line)
    assert m, line
    return int(m.group(1))


def highestmodseq(lines):
    for line in lines:
        m = re.search(r"\[HIGHESTMODSEQ (\d+)\]", line)
        if m:
            return int(m.group(1))
    raise AssertionError(f"no HIGHESTMODSEQ in {lines}")


def prepare(d, count=3):
    for n in range(count):
        imaptest.deliver(d, ALICE, f"Subject: m{n}\n\nbody {n}\n")
    return imaptest.Raw(d).login()


def test_capability_and_enable(imap_daemon):
    r = prepare(imap_daemon)
    untagged, tagged = r.cmd("c1 CAPABILITY")
    assert "CONDSTORE" in untagged[0].split()
    untagged, tagged = r.cmd("c2 ENABLE CONDSTORE")
    assert untagged == ["* ENABLED CONDSTORE"] and tagged.startswith("c2 OK")
    # Enabling again lists nothing new.
    untagged, _ = r.cmd("c3 ENABLE CONDSTORE")
    assert untagged == ["* ENABLED"]
    untagged, tagged = r.cmd("c4 SELECT INBOX")
    first = highestmodseq(untagged)
    assert first >= 1
    # RFC 7162 3.1: a FETCH that sets \Seen implicitly reports UID and
    # MODSEQ along with the new flags.
    untagged, _ = r.cmd("c5 FETCH 1 (BODY[TEXT])")
    line = " ".join(untagged)
    assert "\\Seen" in line and "MODSEQ (" in line and "UID 1" in line
    untagged, tagged = r.cmd("c6 STORE 2 +FLAGS (\\Flagged)")
    assert tagged.startswith("c6 OK")
    changed = modseq_of(untagged[0])
    assert changed > first
    untagged, _ = r.cmd("c7 STATUS INBOX (HIGHESTMODSEQ)")
    assert f"HIGHESTMODSEQ {changed}" in untagged[0]


def test_enable_while_selected_reports_highestmodseq(imap_daemon):
    r = prepare(imap_daemon)
    r.cmd("s1 SELECT INBOX")
    untagged, tagged = r.cmd("s2 ENABLE CONDSTORE")
    assert "* ENABLED CONDSTORE" in untagged
    assert any("[HIGHESTMODSEQ " in u for u in untagged), untagged
    untagged, _ = r.cmd("s3 STORE 1 +FLAGS (\\Flagged)")
    assert "MODSEQ (" in untagged[0] and "UID 1" in untagged[0]


def test_unchangedsince_and_changedsince(imap_daemon):
    d = imap_daemon
    a = prepare(d)
    b = imaptest.Raw(d).login()
    untagged, _ = a.cmd("a1 SELECT INBOX (CONDSTORE)")
    base = highestmodseq(untagged)
    b.cmd("b1 SELECT INBOX")
    # Another session changes message 1 behind a's back.
    _, tagged = b.cmd("b2 STORE 1 +FLAGS (\\Seen)")
    assert tagged.startswith("b2 OK")
    # a's conditional STORE with the old modseq must fail for message 1
    # and succeed for message 3.
    untagged, tagged = a.cmd(
        f"a2 STORE 1,3 (UNCHANGEDSINCE {base}) +FLAGS (\\Answered)")
    assert re.search(r"\[MODIFIED 1\]", tagged), (untagged, tagged)
    untagged, _ = a.cmd("a3 FETCH 1:3 (FLAGS)")
    flags = {int(u.split()[1]): u for u in untagged if " FETCH " in u}
    assert "\\Answered" not in flags[1] and "\\Seen" in flags[1]
    assert "\\Answered" in flags[3]
    # CHANGEDSINCE returns exactly the messages changed after base.
    untagged, _ = a.cmd(f"a4 FETCH 1:* (UID) (CHANGEDSINCE {base})")
    seqs = sorted(int(u.split()[1]) for u in untagged if " FETCH " in u)
    assert seqs == [1, 3]
    # SEARCH MODSEQ agrees.
    untagged, _ = a.cmd(f"a5 SEARCH MODSEQ {base + 1}")
    line = [u for u in untagged if u.startswith("* SEARCH")][0]
    assert line.split()[2:4] == ["1", "3"], line


def test_unchangedsince_zero_fails_everywhere(imap_daemon):
    """RFC 7162 3.1.3: UNCHANGEDSINCE 0 always fails (every message has a
    modseq of at least 1), and nothing is changed."""
    r = prepare(imap_daemon)
    r.cmd("z1 SELECT INBOX")
    untagged, tagged = r.cmd("z2 STORE 1:3 (UNCHANGEDSINCE 0) +FLAGS (\\Flagged)")
    assert tagged.startswith("z2 OK [MODIFIED 1:3]"), tagged
    untagged, tagged = r.cmd("z3 UID STORE 2 (UNCHANGEDSINCE 0) +FLAGS (\\Flagged)")
    assert tagged.startswith("z3 OK [MODIFIED 2]"), tagged
    untagged, _ = r.cmd("z4 FETCH 1:3 (FLAGS)")
    assert not any("\\Flagged" in u for u in untagged), untagged
