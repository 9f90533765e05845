"""IMAP integration tests: SORT and THREAD (RFC 5256), DISPLAYFROM and
DISPLAYTO (RFC 5957), against a real daemon. Messages are APPENDed with
controlled internal dates and headers (Date, Subject, From, To, Cc,
Message-ID, In-Reply-To, References).
"""
import time

import pytest

import imaptest


def msg(subject=None, frm=None, to=None, cc=None, date=None, mid=None,
        irt=None, refs=None, body="body\n"):
    lines = []
    if frm is not None:
        lines.append("From: " + frm)
    if to is not None:
        lines.append("To: " + to)
    if cc is not None:
        lines.append("Cc: " + cc)
    if subject is not None:
        lines.append("Subject: " + subject)
    if date is not None:
        lines.append("Date: " + date)
    if mid is not None:
        lines.append("Message-ID: " + mid)
    if irt is not None:
        lines.append("In-Reply-To: " + irt)
    if refs is not None:
        lines.append("References: " + refs)
    return ("\r\n".join(lines) + "\r\n\r\n" + body.replace("\n", "\r\n"))


class Box:
    """A raw connection with INBOX filled by APPEND and selected."""

    def __init__(self, daemon, messages):
        self.raw = imaptest.Raw(daemon).login()
        self.n = 0
        for m, idate in messages:
            self.append(m, idate)
        _, tagged = self.raw.cmd("S1 SELECT INBOX")
        assert tagged.startswith("S1 OK"), tagged

    def append(self, text, idate="01-Jan-2026 00:00:00 +0000"):
        data = text.encode()
        self.n += 1
        tag = "A%d" % self.n
        self.raw.send('%s APPEND INBOX "%s" {%d+}\r\n' % (tag, idate,
                                                          len(data)))
        self.raw.send(data + b"\r\n")
        _, tagged = self.raw.response(tag)
        assert tagged.startswith(tag + " OK"), tagged

    def cmd(self, line):
        return self.raw.cmd(line)

    def sort(self, args, uid=False):
        untagged, tagged = self.cmd(("U1 UID SORT " if uid else "T1 SORT ")
                                    + args)
        assert " OK" in tagged, tagged
        lines = [u for u in untagged if u.startswith("* SORT")]
        assert len(lines) == 1, untagged
        return [int(x) for x in lines[0].split()[2:]]

    def thread(self, args):
        untagged, tagged = self.cmd("T2 THREAD " + args)
        assert tagged.startswith("T2 OK"), tagged
        lines = [u for u in untagged if u.startswith("* THREAD")]
        assert len(lines) == 1, untagged
        return lines[0][len("* THREAD"):].strip()


def idate(day, hour=0):
    return "%02d-Jan-2026 %02d:00:00 +0000" % (day, hour)


# Five messages; for each key the expected order is worked out by hand.
SORT_SET = [
    (msg(subject="Re: beta", frm="Zed <zed@example.com>",
         to="carol@example.com", cc="Yan <yan@example.com>",
         date="Mon, 5 Jan 2026 10:00:00 +0000", body="x" * 300), idate(3)),
    (msg(subject="alpha", frm='"Adam" <adam@example.com>',
         to="Bob <bob@example.com>", cc="xavier@example.com",
         date="Mon, 5 Jan 2026 09:00:00 -0200", body="x" * 100), idate(1)),
    (msg(subject="[list] Fwd: Gamma (fwd)", frm="mike@example.com",
         to="Alice <alice@example.com>",
         date="Sun, 4 Jan 2026 23:00:00 +0000", body="x" * 200), idate(5)),
    (msg(subject="BETA", frm="bert@example.com",
         to="dave@example.com", date="not a date",
         body="x" * 50), idate(2)),
    (msg(subject="re: Alpha", frm="Adam <ADAM@example.com>",
         to="bob@example.com", cc="zoe@example.com",
         date="Tue, 6 Jan 2026 01:00:00 +0100", body="x" * 400), idate(4)),
]


@pytest.fixture
def sortbox(imap_daemon):
    b = Box(imap_daemon, SORT_SET)
    yield b
    b.raw.close()


@pytest.mark.parametrize("criteria,expected", [
    ("(ARRIVAL)", [2, 4, 1, 5, 3]),
    ("(REVERSE ARRIVAL)", [3, 5, 1, 4, 2]),
    # sent dates in UTC: 1=5 Jan 10:00, 2=5 Jan 11:00, 3=4 Jan 23:00,
    # 4=no date -> internal date 2 Jan, 5=6 Jan 00:00
    ("(DATE)", [4, 3, 1, 2, 5]),
    ("(REVERSE DATE)", [5, 2, 1, 3, 4]),
    ("(SIZE)", [4, 2, 3, 1, 5]),
    # base subjects: BETA, ALPHA, GAMMA, BETA, ALPHA; ties by sequence
    ("(SUBJECT)", [2, 5, 1, 4, 3]),
    ("(REVERSE SUBJECT)", [3, 1, 4, 2, 5]),
    # FROM mailboxes: zed, adam, mike, bert, ADAM (case-insensitive)
    ("(FROM)", [2, 5, 4, 3, 1]),
    ("(REVERSE FROM)", [1, 3, 4, 2, 5]),
    # TO: carol, bob, alice, dave, bob
    ("(TO)", [3, 2, 5, 1, 4]),
    # CC: yan, xavier, (none), (none), zoe: missing sorts first
    ("(CC)", [3, 4, 2, 1, 5]),
    ("(SUBJECT REVERSE DATE)", [5, 2, 1, 4, 3]),
    ("(REVERSE SUBJECT REVERSE ARRIVAL)", [3, 1, 4, 5, 2]),
    ("(FROM SIZE)", [2, 5, 4, 3, 1]),
    ("(FROM REVERSE SIZE)", [5, 2, 4, 3, 1]),
])
def test_sort_keys(sortbox, criteria, expected):
    assert sortbox.sort(criteria + " UTF-8 ALL") == expected


@pytest.mark.parametrize("criteria,expected", [
    # display names: ZED, ADAM, mike@example.com, bert@example.com, ADAM
    ("(DISPLAYFROM)", [2, 5, 4, 3, 1]),
    # display to: carol@.., BOB, ALICE, dave@.., bob@..
    ("(DISPLAYTO)", [3, 2, 5, 1, 4]),
])
def test_sort_display(sortbox, criteria, expected):
    assert sortbox.sort(criteria + " UTF-8 ALL") == expected


def test_sort_with_search_criteria(sortbox):
    assert sortbox.sort("(SUBJECT) UTF-8 OR SUBJECT beta SUBJECT alpha") \
        == [2, 5, 1, 4]
    assert sortbox.sort("(REVERSE SIZE) UTF-8 NOT SUBJECT alpha") == [1, 3, 4]
    assert sortbox.sort("(DATE) US-ASCII OR FROM adam TO dave") == [4, 2, 5]
    assert sortbox.sort("(DATE) UTF-8 SUBJECT nomatch") == []


def test_uid_sort(sortbox):
    _, tagged = sortbox.cmd("E1 STORE 1 +FLAGS (\\Deleted)")
    assert tagged.startswith("E1 OK")
    _, tagged = sortbox.cmd("E2 EXPUNGE")
    assert tagged.startswith("E2 OK")
    # seq 1..4 now hold UIDs 2..5
    assert sortbox.sort("(ARRIVAL) UTF-8 ALL") == [1, 3, 4, 2]
    assert sortbox.sort("(ARRIVAL) UTF-8 ALL", uid=True) == [2, 4, 5, 3]
    assert sortbox.sort("(REVERSE SIZE) UTF-8 UID 2:4", uid=True) == [3, 2, 4]


def test_sort_same_with_cached_tree(sortbox):
    # FETCH BODYSTRUCTURE puts the parsed MIME tree into the mailbox
    # cache; SORT then takes the header fields from it: same answers
    criteria = ["(DATE)", "(SUBJECT)", "(FROM)", "(TO)", "(CC)",
                "(DISPLAYFROM)", "(DISPLAYTO)", "(REVERSE SUBJECT SIZE)"]
    before = [sortbox.sort(c + " UTF-8 ALL") for c in criteria]
    _, tagged = sortbox.cmd("F1 FETCH 1:* BODYSTRUCTURE")
    assert tagged.startswith("F1 OK"), tagged
    after = [sortbox.sort(c + " UTF-8 ALL") for c in criteria]
    assert after == before


@pytest.mark.parametrize("line,reply", [
    ("B1 SORT () UTF-8 ALL", "BAD"),
    ("B2 SORT (BOGUS) UTF-8 ALL", "BAD"),
    ("B3 SORT (REVERSE) UTF-8 ALL", "BAD"),
    ("B4 SORT (REVERSE REVERSE DATE) UTF-8 ALL", "BAD"),
    ("B5 SORT DATE UTF-8 ALL", "BAD"),
    ("B6 SORT (DATE)", "BAD"),
    ("B7 SORT (DATE) UTF-8", "BAD"),
    ("B8 SORT (DATE) UTF-8 NOSUCHKEY", "BAD"),
    ("B9 SORT (DATE) KOI8-R-NOPE ALL", "NO [BADCHARSET"),
    ("C1 THREAD", "BAD"),
    ("C2 THREAD NOSUCHALGO UTF-8 ALL", "BAD"),
    ("C3 THREAD REFERENCES", "BAD"),
    ("C4 THREAD REFERENCES UTF-8", "BAD"),
    ("C5 THREAD ORDEREDSUBJECT UTF-8 (ALL", "BAD"),
    ("C6 THREAD REFERENCES NOPE-CHARSET ALL", "NO [BADCHARSET"),
])
def test_bad_arguments(sortbox, line, reply):
    untagged, tagged = sortbox.cmd(line)
    tag = line.split()[0]
    assert tagged.startswith(tag + " " + reply), tagged
    assert not any(u.startswith(("* SORT", "* THREAD")) for u in untagged)
    # the session goes on
    _, tagged = sortbox.cmd("N1 NOOP")
    assert tagged.startswith("N1 OK")


def test_sort_needs_selected_mailbox(imap_daemon):
    raw = imaptest.Raw(imap_daemon).login()
    _, tagged = raw.cmd("X1 SORT (DATE) UTF-8 ALL")
    assert tagged.startswith("X1 BAD") or tagged.startswith("X1 NO"), tagged
    raw.close()


def test_empty_mailbox(imap_daemon):
    b = Box(imap_daemon, [])
    try:
        untagged, tagged = b.cmd("T1 SORT (DATE) UTF-8 ALL")
        assert tagged.startswith("T1 OK"), tagged
        assert "* SORT" in untagged
        untagged, tagged = b.cmd("T2 THREAD REFERENCES UTF-8 ALL")
        assert tagged.startswith("T2 OK"), tagged
        assert "* THREAD" in untagged
    finally:
        b.raw.close()


def test_sort_encoded_words(imap_daemon):
    b = Box(imap_daemon, [
        # B-encoded "Re: Zebra" -> base "ZEBRA"
        (msg(subject="=?UTF-8?B?UmU6IFplYnJh?=",
             frm="=?ISO-8859-1?Q?Zo=EB?= <a@example.com>"), idate(1)),
        (msg(subject="yak", frm="Yves <z@example.com>"), idate(2)),
        (msg(subject="=?utf-8?q?Xylophone?=",
             frm="=?UTF-8?Q?Andr=C3=A9?= <m@example.com>"), idate(3)),
    ])
    try:
        assert b.sort("(SUBJECT) UTF-8 ALL") == [3, 2, 1]
        # decoded display names: ANDRÉ.. < YVES < ZOE
        assert b.sort("(DISPLAYFROM) UTF-8 ALL") == [3, 2, 1]
        # addr-mailbox: a < m < z
        assert b.sort("(FROM) UTF-8 ALL") == [1, 3, 2]
        # search strings in the charset: the match is found
        assert b.sort("(SUBJECT) UTF-8 SUBJECT zebra") == [1]
    finally:
        b.raw.close()


def test_sort_long_header(imap_daemon):
    # the Subject comes after 40 KB of other header fields
    filler = "".join("X-Filler-%d: %s\r\n" % (i, "f" * 70)
                     for i in range(500))
    long_msg = filler + msg(subject="aaa", frm="zed@example.com")
    b = Box(imap_daemon, [(msg(subject="bbb", frm="amy@example.com"),
                           idate(1)), (long_msg, idate(2))])
    try:
        assert b.sort("(SUBJECT) UTF-8 ALL") == [2, 1]
        assert b.sort("(FROM) UTF-8 ALL") == [1, 2]
    finally:
        b.raw.close()


# ---- base subject (RFC 5256 2.1) ----------------------------------------

# Each subject is paired with one whose base subject is the same; a sort
# by SUBJECT must put them next to each other around the "m" separators.
BASE_SUBJECT_CASES = [
    ("Re: hello", "hello"),
    ("RE: re: Fwd: hello", "HELLO"),
    ("Fw: hello", "hello"),
    ("re : hello", "hello"),
    ("[list] Re: hello", "hello"),
    ("Re[2]: hello", "hello"),
    ("Re: [list] hello", "hello"),
    ("[list] hello", "hello"),
    ("hello (fwd)", "hello"),
    ("hello (FWD) (fwd)  ", "hello"),
    ("[Fwd: hello]", "hello"),
    ("[fwd: Re: hello (fwd)]", "hello"),
    ("   hello   ", "hello"),
    ("hello\t  world", "hello world"),
    ("=?UTF-8?Q?Re=3A_hello?=", "hello"),
    ("=?ISO-8859-1?Q?hello_w=F6rld?=", "hello w\u00f6rld"),
]


@pytest.mark.parametrize("subject,base", BASE_SUBJECT_CASES)
def test_base_subject(imap_daemon, subject, base):
    # candidates: the base subject itself, and neighbours that sort just
    # before and after it; the message under test must tie with it
    msgs = [
        (msg(subject=base + " 0"), idate(1)),      # sorts after base
        (msg(subject=subject), idate(2)),
        (msg(subject="hellm"), idate(3)),           # sorts before
        (msg(subject=base), idate(4)),
    ]
    b = Box(imap_daemon, msgs)
    try:
        # equal base subjects -> sequence order 2, 4
        assert b.sort("(SUBJECT) UTF-8 ALL") == [3, 2, 4, 1]
    finally:
        b.raw.close()


def test_blob_kept_when_it_is_the_whole_subject(imap_daemon):
    b = Box(imap_daemon, [(msg(subject="[only a blob]"), idate(1)),
                          (msg(subject="only a blob"), idate(2)),
                          (msg(subject="[only"), idate(3))])
    try:
        # a blob that is all there is stays: "[ONLY A BLOB]" is not
        # "ONLY A BLOB"; '[' (0x5b) sorts after the letters, and the
        # prefix "[ONLY" before "[ONLY A BLOB]"
        assert b.sort("(SUBJECT) UTF-8 ALL") == [2, 3, 1]
    finally:
        b.raw.close()


def test_blob_is_seven_bit(imap_daemon):
    # BLOBCHAR is %x01-5a / %x5c / %x5e-7f: "[cafe]" is a blob, the
    # decoded "[caf\u00e9]" is not, so it stays and sorts after letters
    b = Box(imap_daemon, [
        (msg(subject="=?UTF-8?Q?[caf=C3=A9]_hello?="), idate(1)),
        (msg(subject="zzz"), idate(2)),
        (msg(subject="[cafe] hello"), idate(3)),
        (msg(subject="hello"), idate(4)),
    ])
    try:
        assert b.sort("(SUBJECT) UTF-8 ALL") == [3, 4, 2, 1]
    finally:
        b.raw.close()


# ---- THREAD -------------------------------------------------------------

CONV = [
    # 1: thread root
    (msg(subject="Plan", mid="<a@x>", date="Mon, 5 Jan 2026 10:00:00 +0000"),
     idate(1)),
    # 2: reply to 1
    (msg(subject="Re: Plan", mid="<b@x>", irt="<a@x>", refs="<a@x>",
         date="Mon, 5 Jan 2026 11:00:00 +0000"), idate(2)),
    # 3: unrelated
    (msg(subject="Lunch?", mid="<c@x>",
         date="Mon, 5 Jan 2026 10:30:00 +0000"), idate(3)),
    # 4: reply to 2 via References only
    (msg(subject="Re: Plan", mid="<d@x>", refs="<a@x> <b@x>",
         date="Mon, 5 Jan 2026 12:00:00 +0000"), idate(4)),
    # 5: second reply to 1 (In-Reply-To only), earlier than 2
    (msg(subject="Re: Plan", mid="<e@x>", irt="<a@x>",
         date="Mon, 5 Jan 2026 10:45:00 +0000"), idate(5)),
    # 6 and 7: replies to a message we never got (<gone@x>): dummy parent
    (msg(subject="Re: Budget", mid="<f@x>", refs="<gone@x>",
         date="Tue, 6 Jan 2026 09:00:00 +0000"), idate(6)),
    (msg(subject="Re: Budget", mid="<g@x>", refs="<gone@x>",
         date="Tue, 6 Jan 2026 08:00:00 +0000"), idate(7)),
    # 8: same subject as 3 but no references: joined by subject
    (msg(subject="Re: Lunch?", mid="<h@x>",
         date="Mon, 5 Jan 2026 13:00:00 +0000"), idate(8)),
    # 9: reply to 6 through a missing middle message (<mid@x>)
    (msg(subject="Re: Budget", mid="<i@x>", refs="<gone@x> <f@x> <mid@x>",
         date="Tue, 6 Jan 2026 10:00:00 +0000"), idate(9)),
]


@pytest.fixture
def convbox(imap_daemon):
    b = Box(imap_daemon, CONV)
    yield b
    b.raw.close()


def test_thread_references(convbox):
    # 1 -> {5, 2 -> 4}; 3 -> 8 (subject merge: 8 is a reply, 3 is not);
    # dummy <gone@x> -> {7, 6 -> (dummy <mid@x> pruned) 9}
    assert convbox.thread("REFERENCES UTF-8 ALL") == \
        "(1 (5)(2 4))(3 8)((7)(6 9))"


def test_thread_references_search_subset(convbox):
    # without 1, its replies hang under a dummy <a@x>: 5 and 2 are
    # siblings at the root, kept together under the dummy
    assert convbox.thread("REFERENCES UTF-8 NOT SUBJECT Lunch NOT UID 1") \
        == "((5)(2 4))((7)(6 9))"


def test_thread_orderedsubject(convbox):
    # base subjects: PLAN (1 2 4 5), LUNCH? (3 8), BUDGET (6 7 9);
    # each thread sorted by sent date, threads by their first date
    assert convbox.thread("ORDEREDSUBJECT UTF-8 ALL") == \
        "(1 (5)(2)(4))(3 8)(7 (6)(9))"


def test_uid_thread(convbox):
    _, tagged = convbox.cmd("E1 STORE 3 +FLAGS (\\Deleted)")
    assert tagged.startswith("E1 OK")
    _, tagged = convbox.cmd("E2 EXPUNGE")
    assert tagged.startswith("E2 OK")
    untagged, tagged = convbox.cmd("U2 UID THREAD ORDEREDSUBJECT UTF-8 ALL")
    assert tagged.startswith("U2 OK"), tagged
    line = [u for u in untagged if u.startswith("* THREAD")][0]
    assert line == "* THREAD (1 (5)(2)(4))(8)(7 (6)(9))"
    assert convbox.thread("ORDEREDSUBJECT UTF-8 ALL") == \
        "(1 (4)(2)(3))(7)(6 (5)(8))"


def test_thread_empty_result(convbox):
    assert convbox.thread("REFERENCES UTF-8 SUBJECT nomatch") == ""


def test_thread_reference_loop(imap_daemon):
    # 1 claims 2 as parent and 2 claims 1: no loop, no hang
    b = Box(imap_daemon, [
        (msg(subject="x", mid="<p@x>", refs="<q@x>",
             date="Mon, 5 Jan 2026 10:00:00 +0000"), idate(1)),
        (msg(subject="y", mid="<q@x>", refs="<p@x>",
             date="Mon, 5 Jan 2026 11:00:00 +0000"), idate(2)),
        (msg(subject="z", mid="<q@x>",
             date="Mon, 5 Jan 2026 12:00:00 +0000"), idate(3)),
    ])
    try:
        out = b.thread("REFERENCES UTF-8 ALL")
        nums = sorted(int(x) for x in
                      out.replace("(", " ").replace(")", " ").split())
        assert nums == [1, 2, 3]
    finally:
        b.raw.close()


def test_thread_subject_merge_cases(imap_daemon):
    d = "Mon, 5 Jan 2026 %02d:00:00 +0000"
    b = Box(imap_daemon, [
        # 1, 2: same subject, neither a reply, no references: both go
        # under a new dummy
        (msg(subject="Meeting", mid="<m1@x>", date=d % 10), idate(1)),
        (msg(subject="Meeting", mid="<m2@x>", date=d % 9), idate(2)),
        # 3, 4 and 5, 6: replies to two missing messages with the same
        # subject: two dummies at the root, merged into one
        (msg(subject="Re: Travel", mid="<t3@x>", refs="<lost1@x>",
             date=d % 11), idate(3)),
        (msg(subject="Re: Travel", mid="<t4@x>", refs="<lost1@x>",
             date=d % 12), idate(4)),
        (msg(subject="Re: Travel", mid="<t5@x>", refs="<lost2@x>",
             date=d % 13), idate(5)),
        (msg(subject="Re: Travel", mid="<t6@x>", refs="<lost2@x>",
             date=d % 8), idate(6)),
        # 7: a reply joining the dummy of 1 and 2 as a sibling
        (msg(subject="Re: Meeting", mid="<m7@x>", date=d % 14), idate(7)),
        # 8: missing parent with a single child: promoted to the root
        (msg(subject="Lonely", mid="<l8@x>", refs="<lost3@x>",
             date=d % 15), idate(8)),
    ])
    try:
        assert b.thread("REFERENCES UTF-8 ALL") == \
            "((6)(3)(4)(5))((2)(1)(7))(8)"
    finally:
        b.raw.close()


def test_thread_in_reply_to_and_relink(imap_daemon):
    d = "Mon, 5 Jan 2026 %02d:00:00 +0000"
    b = Box(imap_daemon, [
        (msg(subject="a", mid="<r1@x>", date=d % 1), idate(1)),
        # In-Reply-To with two ids, no References: the first is the parent
        (msg(subject="b", mid="<r2@x>", irt="<r1@x> <other@x>",
             date=d % 2), idate(2)),
        # 3 says r4 is a child of r1 ...
        (msg(subject="c", mid="<r3@x>", refs="<r1@x> <r4@x>",
             date=d % 3), idate(3)),
        # ... but r4 itself says its parent is r2: that link wins
        (msg(subject="d", mid="<r4@x>", refs="<r2@x>", date=d % 4),
         idate(4)),
    ])
    try:
        assert b.thread("REFERENCES UTF-8 ALL") == "(1 2 4 3)"
    finally:
        b.raw.close()


def parse_thread_list(text):
    """Parse RFC 5256 thread-list syntax; returns the numbers in order.
    Raises ValueError on bad syntax (nesting, empty lists, a dummy that
    is not followed by at least two nested threads)."""
    pos = 0
    nums = []

    def thread():
        nonlocal pos
        if text[pos] != "(":
            raise ValueError("expected ( at %d" % pos)
        pos += 1
        members = 0
        while text[pos].isdigit():
            start = pos
            while text[pos].isdigit():
                pos += 1
            nums.append(int(text[start:pos]))
            members += 1
            if text[pos] == " ":
                pos += 1
        nested = 0
        while text[pos] == "(":
            thread()
            nested += 1
        if members == 0 and nested < 2:
            raise ValueError("dummy without two children at %d" % pos)
        if nested == 1:
            raise ValueError("a single nested thread at %d" % pos)
        if text[pos] != ")":
            raise ValueError("expected ) at %d" % pos)
        pos += 1

    while pos < len(text):
        thread()
    return nums


def test_thread_random_references(imap_daemon):
    # references in every direction, missing ids, duplicates, loops:
    # each matching message appears exactly once, in valid syntax
    import random
    rnd = random.Random(5256)
    n = 300
    raw = imaptest.Raw(imap_daemon).login()
    for i in range(n):
        refs = " ".join("<r%d@x>" % rnd.randrange(n + 50)
                        for _ in range(rnd.randrange(5)))
        m = msg(subject=rnd.choice(["a", "Re: a", "b", "Fwd: b", "", "c"]),
                mid="<r%d@x>" % rnd.randrange(n),
                refs=refs or None,
                irt="<r%d@x>" % rnd.randrange(n) if rnd.random() < .3
                else None,
                date="Mon, 5 Jan 2026 10:%02d:00 +0000" % rnd.randrange(60)
                ).encode()
        raw.send('P%d APPEND INBOX {%d+}\r\n' % (i, len(m)))
        raw.send(m + b"\r\n")
    for i in range(n):
        _, tagged = raw.response("P%d" % i)
        assert tagged.startswith("P%d OK" % i), tagged
    _, tagged = raw.cmd("S SELECT INBOX")
    assert tagged.startswith("S OK")
    for algo, crit, expect in [
            ("REFERENCES", "ALL", set(range(1, n + 1))),
            ("ORDEREDSUBJECT", "ALL", set(range(1, n + 1))),
            ("REFERENCES", "1:100", set(range(1, 101))),
            ("REFERENCES", "NOT SUBJECT b", None)]:
        untagged, tagged = raw.cmd("T THREAD %s UTF-8 %s" % (algo, crit))
        assert tagged.startswith("T OK"), tagged
        line = [u for u in untagged if u.startswith("* THREAD")][0]
        nums = parse_thread_list(line[len("* THREAD "):])
        assert len(nums) == len(set(nums))
        if expect is not None:
            assert set(nums) == expect
    raw.close()


def test_thread_deep_chain(imap_daemon):
    # a conversation thousands of replies deep must not overflow the
    # session's stack
    n = 3000
    raw = imaptest.Raw(imap_daemon).login()
    for i in range(n):
        m = msg(subject="Re: deep", mid="<d%d@x>" % i,
                irt="<d%d@x>" % (i - 1) if i else None,
                date="Mon, 5 Jan 2026 10:00:00 +0000").encode()
        raw.send('P%d APPEND INBOX {%d+}\r\n' % (i, len(m)))
        raw.send(m + b"\r\n")
    for i in range(n):
        _, tagged = raw.response("P%d" % i)
        assert tagged.startswith("P%d OK" % i), tagged
    _, tagged = raw.cmd("S SELECT INBOX")
    assert tagged.startswith("S OK")
    untagged, tagged = raw.cmd("T THREAD REFERENCES UTF-8 ALL")
    assert tagged.startswith("T OK"), tagged
    line = [u for u in untagged if u.startswith("* THREAD")][0]
    assert line == "* THREAD (" + " ".join(str(i) for i in
                                          range(1, n + 1)) + ")"
    _, tagged = raw.cmd("N NOOP")
    assert tagged.startswith("N OK")
    raw.close()


# ---- scale ----------------------------------------------------------------

def test_sort_and_thread_many_messages(imap_daemon):
    n = 2000
    raw = imaptest.Raw(imap_daemon).login()
    subjects = ["topic %d" % (i % 50) for i in range(n)]
    for i in range(n):
        m = msg(subject=("Re: " if i >= 50 else "") + subjects[i],
                frm="u%d@example.com" % (n - i), mid="<m%d@x>" % i,
                refs="<m%d@x>" % (i - 50) if i >= 50 else None,
                date="Mon, 5 Jan 2026 10:00:%02d +0000" % (i % 60)).encode()
        raw.send('P%d APPEND INBOX {%d+}\r\n' % (i, len(m)))
        raw.send(m + b"\r\n")
    for i in range(n):
        _, tagged = raw.response("P%d" % i)
        assert tagged.startswith("P%d OK" % i), tagged
    _, tagged = raw.cmd("S SELECT INBOX")
    assert tagged.startswith("S OK")
    start = time.monotonic()
    untagged, tagged = raw.cmd("T1 SORT (FROM) UTF-8 ALL")
    elapsed = time.monotonic() - start
    assert tagged.startswith("T1 OK"), tagged
    nums = [int(x) for x in untagged[-1].split()[2:]]
    # u1 < u10 < u100 < u1000 < u1001 ... (string order of the mailbox)
    expect = sorted(range(1, n + 1), key=lambda s: "U%d" % (n - s + 1))
    assert nums == expect
    assert elapsed < 5, elapsed
    start = time.monotonic()
    untagged, tagged = raw.cmd("T2 THREAD REFERENCES UTF-8 ALL")
    elapsed = time.monotonic() - start
    assert tagged.startswith("T2 OK"), tagged
    line = [u for u in untagged if u.startswith("* THREAD")][0]
    # 50 chains of 40 messages each: "(1 51 101 ...)"
    assert line.count("(") == 50
    assert line.startswith("* THREAD (1 51 101 ")
    assert elapsed < 5, elapsed
    raw.close()


def test_capability_lists_sort_and_thread(imap_daemon):
    raw = imaptest.Raw(imap_daemon).login()
    untagged, tagged = raw.cmd("C CAPABILITY")
    caps = " ".join(untagged).split()
    raw.close()
    for cap in ("SORT", "THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES"):
        assert cap in caps, "%s not advertised (added by the lead)" % cap
