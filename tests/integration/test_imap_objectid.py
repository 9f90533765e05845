"""IMAP integration tests for RFC 8514 SAVEDATE and RFC 8474 OBJECTID:
FETCH SAVEDATE and the SAVED* search keys; MAILBOXID on SELECT, CREATE
and STATUS (kept by RENAME, the same on a second node of one spool,
given once to a mailbox made before ids existed); EMAILID kept by COPY
and MOVE and searchable; THREADID NIL."""
import datetime
import os
import re
import time

import pytest

import cmtest
import imaptest

MSG = "From: a@example.org\r\nSubject: %s\r\n\r\nbody %s\r\n"
OBJECTID = re.compile(r"^[A-Za-z0-9_-]{1,255}$")


def make_spool(workdir):
    """clustermaild never creates spool_dir itself."""
    spool = os.path.join(workdir, "spool")
    os.makedirs(spool, exist_ok=True)
    cmtest.prepare_workdir(spool)
    return spool


@pytest.fixture
def server(workdir):
    make_spool(workdir)
    d = imaptest.start_daemon(workdir)
    yield d
    d.stop()


def raw(server):
    return imaptest.Raw(server).login()


def ok(reply):
    untagged, tagged = reply
    assert tagged.split(" ")[1] == "OK", (untagged, tagged)
    return untagged


def tagged_ok(reply):
    untagged, tagged = reply
    assert tagged.split(" ")[1] == "OK", (untagged, tagged)
    return tagged


def append(r, tag, mailbox, body):
    data = body.encode()
    r.send(f"{tag} APPEND {mailbox} {{{len(data)}}}\r\n")
    line = r.line()
    assert line.startswith("+"), line
    r.send(data + b"\r\n")
    tagged = r.response(tag)[1]
    assert tagged.startswith(f"{tag} OK"), tagged


def selected_id(r, mailbox, command="SELECT"):
    """The [MAILBOXID (id)] code of a SELECT/EXAMINE."""
    untagged = ok(r.cmd(f"s {command} {mailbox}"))
    ids = [m.group(1) for m in
           (re.search(r"\[MAILBOXID \(([^)]*)\)\]", x) for x in untagged) if m]
    assert len(ids) == 1, untagged
    assert OBJECTID.match(ids[0]), ids
    return ids[0]


def status_id(r, mailbox):
    untagged = ok(r.cmd(f"st STATUS {mailbox} (MESSAGES MAILBOXID)"))
    m = re.search(r"MAILBOXID \(([^)]*)\)", untagged[0])
    assert m, untagged
    return m.group(1)


def created_id(r, mailbox):
    tagged = tagged_ok(r.cmd(f"c CREATE {mailbox}"))
    m = re.search(r"\[MAILBOXID \(([^)]*)\)\]", tagged)
    assert m, tagged
    return m.group(1)


def fetch_items(r, seqs, items):
    """{uid: response text} of a UID FETCH."""
    out = {}
    for line in ok(r.cmd(f"f UID FETCH {seqs} (UID {items})")):
        m = re.match(r"\* \d+ FETCH \((.*)\)$", line)
        if m:
            uid = int(re.search(r"UID (\d+)", m.group(1)).group(1))
            out[uid] = m.group(1)
    return out


def email_ids(r, seqs="1:*"):
    return {uid: re.search(r"EMAILID \(([^)]*)\)", text).group(1)
            for uid, text in fetch_items(r, seqs, "EMAILID").items()}


def search(r, program):
    untagged = ok(r.cmd(f"q UID SEARCH {program}"))
    line = [x for x in untagged if x.startswith("* SEARCH")][0]
    return [int(x) for x in line.split()[2:]]


def test_capabilities(server):
    r = raw(server)
    caps = ok(r.cmd("a CAPABILITY"))[0].split()
    assert "SAVEDATE" in caps and "OBJECTID" in caps


def test_savedate_fetch_and_search(server):
    r = raw(server)
    before = time.time()
    append(r, "a1", "INBOX", MSG % (1, 1))
    after = time.time()
    ok(r.cmd("s SELECT INBOX"))
    text = fetch_items(r, "1:*", "SAVEDATE INTERNALDATE")
    assert len(text) == 1
    m = re.search(r'SAVEDATE "([^"]+)"', list(text.values())[0])
    assert m, text
    saved = datetime.datetime.strptime(m.group(1).strip(),
                                       "%d-%b-%Y %H:%M:%S %z").timestamp()
    assert before - 2 <= saved <= after + 2, (m.group(1), before)
    today = time.strftime("%d-%b-%Y", time.localtime())
    tomorrow = time.strftime("%d-%b-%Y", time.localtime(time.time() + 86400))
    assert search(r, f"SAVEDON {today}") == [1]
    assert search(r, f"SAVEDSINCE {today}") == [1]
    assert search(r, f"SAVEDBEFORE {today}") == []
    assert search(r, f"SAVEDBEFORE {tomorrow}") == [1]
    assert search(r, "SAVEDATESUPPORTED") == [1]
    # a bad date is a BAD, not a crash
    _, tagged = r.cmd("b UID SEARCH SAVEDON notadate")
    assert tagged.startswith("b BAD"), tagged


def test_savedate_is_the_copy_date(server):
    """A COPY made later has a later save date; the internal date stays."""
    r = raw(server)
    append(r, "a1", "INBOX", MSG % (1, 1))
    ok(r.cmd("c CREATE Later"))
    ok(r.cmd("s SELECT INBOX"))
    time.sleep(1.1)   # save dates have one-second resolution
    ok(r.cmd("k COPY 1 Later"))
    src = list(fetch_items(r, "1:*", "SAVEDATE INTERNALDATE").values())[0]
    ok(r.cmd("s2 SELECT Later"))
    dst = list(fetch_items(r, "1:*", "SAVEDATE INTERNALDATE").values())[0]
    date = lambda t, k: re.search(k + r' "([^"]+)"', t).group(1)
    assert date(src, "INTERNALDATE") == date(dst, "INTERNALDATE")
    assert date(src, "SAVEDATE") != date(dst, "SAVEDATE")


def test_mailboxid_select_create_status_rename(server):
    r = raw(server)
    inbox = selected_id(r, "INBOX")
    assert selected_id(r, "INBOX", "EXAMINE") == inbox
    assert status_id(r, "INBOX") == inbox        # the selected mailbox
    work = created_id(r, "Work")
    other = created_id(r, "Other")
    assert len({inbox, work, other}) == 3
    ok(r.cmd("u UNSELECT"))
    assert status_id(r, "Work") == work
    assert selected_id(r, "Work") == work
    ok(r.cmd("u UNSELECT"))
    # RENAME keeps it, with children too
    ok(r.cmd("c2 CREATE Work/Sub"))
    sub = status_id(r, "Work/Sub")
    ok(r.cmd("r RENAME Work Job"))
    assert status_id(r, "Job") == work
    assert status_id(r, "Job/Sub") == sub
    # a mailbox created again under an old name is a new mailbox
    assert created_id(r, "Work") not in (work, sub, other, inbox)
    # LIST-STATUS reports it too
    untagged = ok(r.cmd('l LIST "" "Job" RETURN (STATUS (MAILBOXID))'))
    assert any(f"MAILBOXID ({work})" in x for x in untagged), untagged
    # deleting and recreating gives a fresh id
    ok(r.cmd("d DELETE Other"))
    assert created_id(r, "Other") != other
    _, tagged = r.cmd("x STATUS Missing (MAILBOXID)")
    assert tagged.startswith("x NO"), tagged


def test_mailboxid_for_older_mailbox(server, workdir):
    """A mailbox without an id on disk (made before MAILBOXID) gets one
    on first use, keeps its special-use attribute, and keeps the id."""
    r = raw(server)
    ok(r.cmd("c CREATE Old (USE (\\Archive))"))
    path = os.path.join(workdir, "spool", "example.com", "alice", ".Old",
                        "clustermail.mailbox")
    with open(path) as f:
        lines = f.read().splitlines()
    assert any(x.startswith("mailbox-id ") for x in lines), lines
    with open(path, "w") as f:
        f.write("".join(x + "\n" for x in lines
                        if not x.startswith("mailbox-id ")))
    first = status_id(r, "Old")
    assert OBJECTID.match(first)
    assert status_id(r, "Old") == first
    assert selected_id(r, "Old") == first
    untagged = ok(r.cmd('l LIST "" Old'))
    assert "\\Archive" in untagged[0], untagged


def test_emailid_copy_move_search(server):
    r = raw(server)
    for i in range(3):
        append(r, f"a{i}", "INBOX", MSG % (i, i))
    ok(r.cmd("c CREATE Dest"))
    ok(r.cmd("c2 CREATE Moved"))
    ok(r.cmd("s SELECT INBOX"))
    ids = email_ids(r)
    assert sorted(ids) == [1, 2, 3]
    assert len(set(ids.values())) == 3
    assert all(OBJECTID.match(x) for x in ids.values())
    text = fetch_items(r, "1", "THREADID")
    assert "THREADID NIL" in text[1], text
    assert search(r, f"EMAILID {ids[2]}") == [2]
    assert search(r, "EMAILID Mnothere") == []
    assert search(r, f"THREADID {ids[2]}") == []
    _, tagged = r.cmd("b UID SEARCH EMAILID bad.id")
    assert tagged.startswith("b BAD"), tagged
    ok(r.cmd("k UID COPY 1:2 Dest"))
    ok(r.cmd("m UID MOVE 3 Moved"))
    # a copy of a copy keeps it too
    ok(r.cmd("s2 SELECT Dest"))
    dest = email_ids(r)
    assert sorted(dest.values()) == sorted([ids[1], ids[2]])
    ok(r.cmd("k2 UID COPY 1:* Moved"))
    assert search(r, f"EMAILID {ids[1]}") != []
    ok(r.cmd("s3 SELECT Moved"))
    moved = email_ids(r)
    assert sorted(moved.values()) == sorted([ids[1], ids[2], ids[3]])
    # a message appended again with the same text is another message
    append(r, "a9", "INBOX", MSG % (1, 1))
    ok(r.cmd("s4 SELECT INBOX"))
    again = email_ids(r)
    assert len(again) == 3 and len(set(again.values())) == 3


def test_objectid_same_on_two_nodes(workdir):
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
        box = created_id(a, "Shared")
        assert status_id(b, "Shared") == box
        assert selected_id(b, "INBOX") == selected_id(a, "INBOX")
        append(a, "a1", "INBOX", MSG % (1, 1))
        ok(a.cmd("k UID COPY 1 Shared"))
        ok(b.cmd("n NOOP"))
        assert email_ids(a) == email_ids(b)
        ok(b.cmd("s2 SELECT Shared"))
        assert list(email_ids(b).values()) == list(email_ids(a).values())
        ok(b.cmd("r RENAME Shared Renamed"))
        assert status_id(a, "Renamed") == box
    finally:
        for d in daemons:
            d.stop()


def test_mailboxid_of_shared_mailbox(server):
    """Another user sees the owner's id, and only once granted a right."""
    r = raw(server)
    box = created_id(r, "Team")
    bob = imaptest.Raw(server).login(imaptest.BOB)
    shared = f'"Other Users/{imaptest.ALICE}/Team"'
    _, tagged = bob.cmd(f"x STATUS {shared} (MAILBOXID)")
    assert tagged.startswith("x NO"), tagged
    assert box not in tagged
    r2 = server.ctl("acl", "set", imaptest.ALICE, "Team", imaptest.BOB, "lr")
    assert r2.returncode == 0, r2.stderr
    assert status_id(bob, shared) == box
    assert selected_id(bob, shared, "EXAMINE") == box
