"""IMAP integration tests: SEARCH and UID SEARCH (RFC 9051 6.4.4, RFC 4731
ESEARCH, RFC 5182 SEARCHRES, RFC 5032 WITHIN, RFC 7162 MODSEQ) against a
real daemon, on messages delivered by the LDA with flags and keywords.
"""
import re
import subprocess
import time

import pytest

import cmtest
import imaptest
from test_imap_fetch import Conn, fetches, spool_daemon

M1 = (b"From: Alice <alice@example.com>\n"
      b"To: Bob <bob@example.com>\n"
      b"Subject: Quarterly report\n"
      b"Date: Thu, 1 Jan 2026 10:00:00 +0000\n"
      b"X-Project: apollo\n"
      b"\n"
      b"The numbers are up this quarter.\n")

M2 = (b"From: =?UTF-8?Q?Carol_K=C3=B6nig?= <carol@example.org>\n"
      b"To: alice@example.com\n"
      b"Cc: Dave <dave@example.net>\n"
      b"Bcc: eve@example.net\n"
      b"Subject: =?UTF-8?B?R3LDvMOfZSBhdXMgS8O2bG4=?=\n"
      b"Date: Sun, 15 Feb 2026 23:30:00 -0800\n"
      b"MIME-Version: 1.0\n"
      b"Content-Type: text/plain; charset=utf-8\n"
      b"Content-Transfer-Encoding: base64\n"
      b"\n"
      b"R3LDtsOfZSBTdHJhw59lIHVuZCBGbHVzcw==\n")

M3 = (b"From: cafe@example.org\n"
      b"To: alice@example.com\n"
      b"Subject: Lunch\n"
      b"Date: Sun, 15 Mar 2026 12:00:00 +0100\n"
      b"MIME-Version: 1.0\n"
      b'Content-Type: multipart/alternative; boundary="b"\n'
      b"\n"
      b"--b\n"
      b"Content-Type: text/plain; charset=utf-8\n"
      b"Content-Transfer-Encoding: quoted-printable\n"
      b"\n"
      b"Caf=C3=A9 menu: soup of the day\n"
      b"--b\n"
      b"Content-Type: application/octet-stream\n"
      b"Content-Transfer-Encoding: base64\n"
      b"\n"
      b"c2VjcmV0IGJpbmFyeSB3b3Jk\n"
      b"--b--\n")

M4 = (b"From: archive@example.com\n"
      b"To: alice@example.com\n"
      b"Subject: Large attachment\n"
      b"Date: Fri, 20 Feb 2026 08:00:00 +0000\n"
      b"\n" + b"x" * 6000 + b"\n")

M5 = (b"From: Bob <bob@example.com>\n"
      b"To: Alice <alice@example.com>\n"
      b"Subject: Re: Quarterly report\n"
      b"\n"
      b"Great news about the numbers.\n")

# message, flags for the LDA
MESSAGES = [
    (M1, "\\Answered \\Seen"),
    (M2, "\\Flagged $Important"),
    (M3, "\\Draft"),
    (M4, "\\Deleted \\Seen"),
    (M5, ""),
]


def deliver(daemon, message, flags):
    args = [cmtest.binary("clustermailctl"), "-c", daemon.conf, "deliver",
            imaptest.ALICE]
    if flags:
        args += ["--flags", flags]
    r = subprocess.run(args, input=message, capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr


@pytest.fixture
def sdaemon(workdir):
    d = spool_daemon(workdir)
    for msg, flags in MESSAGES:
        deliver(d, msg, flags)
    yield d
    d.stop()


@pytest.fixture
def conn(sdaemon):
    c = Conn(sdaemon).login()
    c.select()
    yield c
    c.close()


def search(conn, criteria):
    """SEARCH -> sorted list of numbers (asserts OK and one response)."""
    untagged = conn.ok("SEARCH " + criteria)
    lines = [u for u in untagged if u.startswith(b"* SEARCH")]
    assert len(lines) == 1, untagged
    return [int(x) for x in re.sub(rb" \(MODSEQ \d+\)$", b"",
                                   lines[0]).split()[2:]]


def search_lines(untagged):
    """Only the SEARCH responses (a sync may add FLAGS, EXISTS...)."""
    return [u for u in untagged if u.startswith(b"* SEARCH")]


def today():
    return time.strftime("%d-%b-%Y", time.localtime())


# ---- criteria ------------------------------------------------------------

@pytest.mark.parametrize("criteria,expected", [
    ("ALL", [1, 2, 3, 4, 5]),
    ("ANSWERED", [1]), ("UNANSWERED", [2, 3, 4, 5]),
    ("DELETED", [4]), ("UNDELETED", [1, 2, 3, 5]),
    ("DRAFT", [3]), ("UNDRAFT", [1, 2, 4, 5]),
    ("FLAGGED", [2]), ("UNFLAGGED", [1, 3, 4, 5]),
    ("SEEN", [1, 4]), ("UNSEEN", [2, 3, 5]),
    ("KEYWORD $Important", [2]), ("UNKEYWORD $Important", [1, 3, 4, 5]),
    ("KEYWORD $NoSuchKeyword", []),
    ("LARGER 5000", [4]), ("SMALLER 300", [1, 5]),
    ("FROM bob", [5]), ("FROM example.org", [2, 3]),
    ("TO bob@example.com", [1]), ("CC dave", [2]), ("BCC eve", [2]),
    ("SUBJECT quarterly", [1, 5]), ("SUBJECT \"re: quarterly\"", [5]),
    ("HEADER X-Project apollo", [1]), ("HEADER X-Project \"\"", [1]),
    ("HEADER X-Missing \"\"", []),
    ("BODY numbers", [1, 5]), ("BODY soup", [3]), ("BODY quarterly", []),
    ("TEXT quarterly", [1, 5]), ("TEXT numbers", [1, 5]),
    ("BODY secret", []),        # base64 of a non-text part is not text
    ("SENTBEFORE 1-Feb-2026", [1]), ("SENTON 15-Feb-2026", [2]),
    # M5 has no Date: its internal date (today) counts
    ("SENTSINCE 15-Feb-2026", [2, 3, 4, 5]),
    ("SENTSINCE 1-Mar-2026 SENTBEFORE 1-Apr-2026", [3]),
    ("YOUNGER 3600", [1, 2, 3, 4, 5]), ("OLDER 3600", []),
    ("2:4", [2, 3, 4]), ("4:*", [4, 5]), ("1,3,5", [1, 3, 5]),
    ("UID 2,4", [2, 4]), ("UID 4:*", [4, 5]),
])
def test_criterion(conn, criteria, expected):
    assert search(conn, criteria) == expected


def test_internal_date_criteria(conn):
    assert search(conn, "ON " + today()) == [1, 2, 3, 4, 5]
    assert search(conn, "SINCE " + today()) == [1, 2, 3, 4, 5]
    assert search(conn, "BEFORE " + today()) == []
    assert search(conn, "BEFORE 1-Jan-2100 SINCE 1-Jan-2000") == [
        1, 2, 3, 4, 5]


def test_new_old_recent(conn):
    # which messages are \Recent is the store's business (SELECT claims
    # them); SEARCH must agree with what FETCH FLAGS shows
    flags = {s: i["FLAGS"] for s, i in fetches(conn.ok("FETCH 1:5 FLAGS")).items()}
    recent = [s for s in sorted(flags) if "\\Recent" in flags[s]]
    assert recent, flags
    assert search(conn, "RECENT") == recent
    assert search(conn, "NEW") == [s for s in recent
                                   if "\\Seen" not in flags[s]]
    assert search(conn, "OLD") == [s for s in sorted(flags) if s not in recent]


@pytest.mark.parametrize("criteria,expected", [
    ("OR SEEN FLAGGED", [1, 2, 4]),
    ("NOT SEEN", [2, 3, 5]),
    ("SEEN NOT DELETED", [1]),
    ("OR (SEEN DELETED) DRAFT", [3, 4]),
    ("NOT (OR FROM bob SUBJECT lunch)", [1, 2, 4]),
    ("(OR SUBJECT report BODY soup) UNSEEN", [3, 5]),
    ("OR OR ANSWERED DRAFT FLAGGED", [1, 2, 3]),
    ("NOT NOT NOT ANSWERED", [2, 3, 4, 5]),
    ("2:5 NOT 3 OR BODY numbers LARGER 5000", [4, 5]),
])
def test_logic(conn, criteria, expected):
    assert search(conn, criteria) == expected


def test_uid_search_returns_uids(conn):
    assert search_lines(conn.ok("UID SEARCH FLAGGED")) == [b"* SEARCH 2"]
    # make UIDs differ from sequence numbers: expunge message 4 (\Deleted)
    _, tagged = conn.cmd("EXPUNGE")
    if "not implemented" in tagged:
        pytest.skip("needs EXPUNGE: " + tagged)
    assert search(conn, "FROM bob") == [4]
    assert search_lines(conn.ok("UID SEARCH FROM bob")) == [b"* SEARCH 5"]
    assert search_lines(conn.ok("UID SEARCH 3:4")) == [b"* SEARCH 3 5"]
    assert search_lines(conn.ok("UID SEARCH UID 3:4")) == [b"* SEARCH 3"]


# ---- charsets ------------------------------------------------------------

def literal_search(conn, prefix, data, suffix=b""):
    """SEARCH with one synchronizing literal."""
    tag = b"L%d" % (conn.n + 1)
    conn.n += 1
    conn.sock.sendall(tag + b" " + prefix + b" {%d}\r\n" % len(data))
    line = conn._line()
    assert line.startswith(b"+"), line
    conn.sock.sendall(data + suffix + b"\r\n")
    untagged = []
    while True:
        line = conn._response_line()
        if line.startswith(tag + b" "):
            return untagged, line.decode()
        untagged.append(line)


def test_charset_utf8_literal_matches_encoded_subject(conn):
    untagged, tagged = literal_search(conn, b"SEARCH CHARSET UTF-8 SUBJECT",
                                      "grüße".encode())
    assert " OK " in tagged, tagged
    assert search_lines(untagged) == [b"* SEARCH 2"]


def test_charset_utf8_matches_base64_body(conn):
    untagged, tagged = literal_search(conn, b"SEARCH CHARSET UTF-8 BODY",
                                      "straße".encode())
    assert " OK " in tagged, tagged
    assert search_lines(untagged) == [b"* SEARCH 2"]
    # case-insensitive beyond ASCII: "GRÖSSE" is not "größe", "GRÖßE" is
    untagged, tagged = literal_search(conn, b"SEARCH BODY",
                                      "GRÖßE".encode())
    assert search_lines(untagged) == [b"* SEARCH 2"], tagged


def test_charset_utf8_encoded_from(conn):
    untagged, tagged = literal_search(conn, b"SEARCH FROM", "könig".encode())
    assert search_lines(untagged) == [b"* SEARCH 2"], tagged


def test_charset_latin1(conn):
    untagged, tagged = literal_search(
        conn, b"SEARCH CHARSET ISO-8859-1 BODY", "Größe".encode("latin-1"))
    assert " OK " in tagged, tagged
    assert search_lines(untagged) == [b"* SEARCH 2"]


def test_badcharset(conn):
    untagged, tagged = conn.cmd("SEARCH CHARSET X-NO-SUCH-CHARSET SUBJECT a")
    assert re.search(r" NO \[BADCHARSET \(.*UTF-8.*\)\]", tagged), tagged
    conn.ok("NOOP")


# ---- ESEARCH ---------------------------------------------------------------

def esearch(conn, command):
    untagged = conn.ok(command)
    lines = [u.decode() for u in untagged if u.startswith(b"* ESEARCH")]
    assert len(lines) <= 1, untagged
    assert not any(u.startswith(b"* SEARCH") for u in untagged)
    return lines[0] if lines else None


def test_esearch_return_options(conn):
    line = esearch(conn, "SEARCH RETURN (MIN MAX COUNT ALL) UNSEEN")
    tag = "t%d" % conn.n
    assert line == '* ESEARCH (TAG "%s") MIN 2 MAX 5 ALL 2:3,5 COUNT 3' % tag
    line = esearch(conn, "UID SEARCH RETURN (COUNT) SEEN")
    assert line.endswith(") UID COUNT 2"), line
    line = esearch(conn, "SEARCH RETURN () ALL")
    assert line.endswith(") ALL 1:5"), line
    line = esearch(conn, "SEARCH RETURN (MIN MAX COUNT) KEYWORD $NoSuch")
    assert line.endswith(") COUNT 0"), line
    line = esearch(conn, "UID SEARCH RETURN (MAX) ALL")
    assert line.endswith(") UID MAX 5"), line


def test_searchres_save_and_dollar(conn):
    # SAVE alone: no ESEARCH response
    assert esearch(conn, "UID SEARCH RETURN (SAVE) OR FLAGGED DRAFT") is None
    r = fetches(conn.ok("UID FETCH $ (UID FLAGS)"))
    assert sorted(int(i["UID"]) for i in r.values()) == [2, 3]
    # "$" as a search criterion, combined
    assert search(conn, "$ FLAGGED") == [2]
    assert search(conn, "UID $") == [2, 3]
    # SAVE with MIN only keeps the minimum
    esearch(conn, "SEARCH RETURN (SAVE MIN) UNSEEN")
    r = fetches(conn.ok("UID FETCH $ UID"))
    assert [int(i["UID"]) for i in r.values()] == [2]
    # a failed SEARCH with SAVE leaves "$" empty
    _, tagged = conn.cmd("SEARCH RETURN (SAVE) BOGUS")
    assert " BAD " in tagged
    assert search(conn, "$") == []


# ---- CONDSTORE -------------------------------------------------------------

def test_search_modseq(conn):
    r = fetches(conn.ok("FETCH 1:5 MODSEQ"))
    modseqs = {s: int(i["MODSEQ"][0]) for s, i in r.items()}
    top = max(modseqs.values())
    assert search(conn, "MODSEQ 1") == [1, 2, 3, 4, 5]
    untagged = search_lines(conn.ok("SEARCH MODSEQ %d" % top))
    expected = sorted(s for s, m in modseqs.items() if m >= top)
    assert untagged == [b"* SEARCH %s (MODSEQ %d)" % (
        " ".join(map(str, expected)).encode(), top)]
    untagged = search_lines(
        conn.ok('SEARCH MODSEQ "/flags/\\\\draft" all 1'))
    assert untagged[0].endswith(b"(MODSEQ %d)" % top)


# ---- errors ----------------------------------------------------------------

@pytest.mark.parametrize("criteria", [
    "", "FOO", "SUBJECT", "(SUBJECT a", "()", "OR SEEN", "NOT",
    "BEFORE 32-Foo-2020", "SINCE yesterday", "LARGER x", "LARGER",
    "UID", "UID x", "0", "1:x", "99", "KEYWORD", "HEADER Subject",
    "RETURN (BOGUS) ALL", "RETURN ALL", "CHARSET", "OLDER 0",
    "NOT " * 200 + "ALL",
])
def test_bad_search(conn, criteria):
    untagged, tagged = conn.cmd(("SEARCH " + criteria).rstrip())
    assert " BAD " in tagged, (criteria, tagged)
    assert not any(u.startswith(b"* SEARCH") for u in untagged)
    conn.ok("NOOP")


def test_search_needs_selected_mailbox(sdaemon):
    c = Conn(sdaemon).login()
    _, tagged = c.cmd("SEARCH ALL")
    assert " BAD " in tagged or " NO " in tagged
    c.ok("NOOP")
    c.close()


def test_header_search_served_from_cache(imap_daemon):
    """A header search stores the decoded header in the mailbox cache: the
    next SEARCH on a header criterion - from another session - answers
    without reading the message file (made unreadable here)."""
    import os
    import imaptest
    d = imap_daemon
    imaptest.deliver(d, imaptest.ALICE,
                     "From: a@example.org\nSubject: =?utf-8?q?K=C3=A4se?= plan\n"
                     "\nbody\n")
    imaptest.deliver(d, imaptest.ALICE, "Subject: other\n\nbody\n")
    r = imaptest.Raw(d).login()
    r.cmd("s1 SELECT INBOX")
    untagged, tagged = r.cmd('s2 SEARCH CHARSET UTF-8 SUBJECT "käse"')
    assert tagged.startswith("s2 OK") and "* SEARCH 1" in untagged
    r.cmd("s3 NOOP")        # a sync point: the cache is written by then
    cur = os.path.join(d.dir, "spool", "example.com", "alice", "cur")
    target = [f for f in os.listdir(cur)
              if b"plan" in open(os.path.join(cur, f), "rb").read()]
    assert len(target) == 1
    path = os.path.join(cur, target[0])
    os.chmod(path, 0)
    try:
        r2 = imaptest.Raw(d).login()
        r2.cmd("t1 SELECT INBOX")
        untagged, tagged = r2.cmd('t2 SEARCH SUBJECT "PLAN" FROM "a@example"')
        assert tagged.startswith("t2 OK") and "* SEARCH 1" in untagged
        # the file really is unreadable for the daemon: a body search
        # cannot match it
        untagged, _ = r2.cmd('t3 SEARCH BODY "body"')
        assert untagged == ["* SEARCH 2"], untagged
    finally:
        os.chmod(path, 0o600)
