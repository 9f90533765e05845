"""IMAP integration tests: mailbox commands (SELECT, EXAMINE, CREATE,
DELETE, RENAME, LIST and its extensions, LSUB, SUBSCRIBE, STATUS,
NAMESPACE) against a real clustermaild."""
import os
import re

import pytest

import cmtest
import imaptest

MSG = "From: a@example.org\r\nSubject: %s\r\n\r\nbody %s\r\n"


def assert_clean_log(d):
    """No sanitizer report (ASan/UBSan builds) in the daemon's log."""
    log = d.read_log()
    for marker in ("ERROR: AddressSanitizer", "runtime error:",
                   "ERROR: LeakSanitizer"):
        assert marker not in log, log[log.index(marker) - 200:][:3000]


@pytest.fixture
def server(workdir):
    """A daemon with IMAP and the test users. The spool directory is made
    first: clustermaild never creates spool_dir itself."""
    spool = os.path.join(workdir, "spool")
    os.makedirs(spool, exist_ok=True)
    cmtest.prepare_workdir(spool)
    d = imaptest.start_daemon(workdir)
    yield d
    d.stop()
    assert_clean_log(d)


def raw(server, login=True):
    r = imaptest.Raw(server)
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


def list_names(lines, kind="LIST"):
    """{name: attributes} from "* LIST (attrs) "/" name" lines."""
    out = {}
    for line in lines:
        m = re.match(r'\* %s \(([^)]*)\) "/" (.*)$' % kind, line)
        if m:
            name = m.group(2)
            name = re.sub(r' \(.*\)\)$', "", name)     # extended data
            if name.startswith('"'):
                name = name[1:-1]
            out[name] = set(m.group(1).split())
    return out


def deliver(server, n, mailbox=None):
    for i in range(n):
        imaptest.deliver(server, imaptest.ALICE, MSG % (i, i), mailbox)


# ---- SELECT / EXAMINE ------------------------------------------------------

def test_select_sends_all_state(server):
    deliver(server, 2)
    r = raw(server)
    lines = ok(r.cmd("s1 SELECT INBOX"))
    tagged = r.cmd("s2 NOOP")[1]
    assert "s2 OK" in tagged
    assert lines[0].startswith("* FLAGS (")
    assert all(f in lines[0] for f in
               ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"))
    assert any(line.startswith("* OK [PERMANENTFLAGS (") and "\\*" in line
               for line in lines)
    assert "* 2 EXISTS" in lines
    assert "* 2 RECENT" in lines
    assert any(line.startswith("* OK [UNSEEN 1]") for line in lines)
    assert any(re.match(r"\* OK \[UIDVALIDITY \d+\]", line) for line in lines)
    assert any(line.startswith("* OK [UIDNEXT 3]") for line in lines)
    assert any(re.match(r"\* OK \[HIGHESTMODSEQ \d+\]", line) for line in lines)


def test_select_read_write_and_examine_read_only(server):
    deliver(server, 1)
    r = raw(server)
    _, tagged = r.cmd("a SELECT INBOX")
    assert tagged.startswith("a OK [READ-WRITE]")
    untagged, tagged = r.cmd("b EXAMINE INBOX")
    assert tagged.startswith("b OK [READ-ONLY]")
    assert "* OK [PERMANENTFLAGS ()] Flags permitted." in untagged
    no(r.cmd("c STORE 1 +FLAGS (\\Seen)"), "READ-ONLY")
    no(r.cmd("d EXPUNGE"), "READ-ONLY")


def test_examine_does_not_take_recent(server):
    deliver(server, 2)
    r = raw(server)
    lines = ok(r.cmd("a EXAMINE INBOX"))
    assert "* 2 EXISTS" in lines
    r2 = raw(server)
    lines = ok(r2.cmd("a SELECT INBOX"))
    assert "* 2 RECENT" in lines       # still recent for the first SELECT
    r3 = raw(server)
    lines = ok(r3.cmd("a SELECT INBOX"))
    assert "* 0 RECENT" in lines       # ... which took them


def test_select_nonexistent_leaves_auth_state(server):
    r = raw(server)
    ok(r.cmd("a SELECT INBOX"))
    untagged = no(r.cmd("b SELECT nosuchbox"), "NONEXISTENT")
    assert untagged[0].startswith("* OK [CLOSED]"), untagged
    _, tagged = r.cmd("c FETCH 1 FLAGS")
    assert not tagged.startswith("c OK"), tagged
    ok(r.cmd("d SELECT INBOX"))


def test_rev2_select_has_no_recent(server):
    r = raw(server)
    assert ok(r.cmd("e ENABLE IMAP4rev2")) == ["* ENABLED IMAP4rev2"]
    lines = ok(r.cmd("a SELECT INBOX"))
    assert not any(line.endswith(" RECENT") for line in lines)


# ---- CREATE / DELETE / RENAME -----------------------------------------------

def test_create_delete_rename(server):
    r = raw(server)
    ok(r.cmd("a CREATE Work/Projects/"))      # trailing separator ignored
    names = list_names(ok(r.cmd('b LIST "" "*"')))
    assert "Work/Projects" in names
    assert names["Work"] >= {"\\HasChildren"}
    no(r.cmd("c CREATE Work/Projects"), "ALREADYEXISTS")
    ok(r.cmd("d RENAME Work/Projects Done"))
    names = list_names(ok(r.cmd('e LIST "" "*"')))
    assert "Done" in names and "Work/Projects" not in names
    ok(r.cmd("f DELETE Done"))
    no(r.cmd("g DELETE Done"), "NONEXISTENT")
    names = list_names(ok(r.cmd('h LIST "" "*"')))
    assert "Done" not in names


def test_delete_inbox_refused(server):
    r = raw(server)
    no(r.cmd("a DELETE INBOX"), "CANNOT")
    no(r.cmd("b DELETE inbox"), "CANNOT")
    ok(r.cmd("c SELECT INBOX"))


def test_rename_inbox_moves_messages(server):
    deliver(server, 3)
    r = raw(server)
    ok(r.cmd("a RENAME INBOX Old"))
    status = ok(r.cmd("b STATUS Old (MESSAGES)"))
    assert status == ['* STATUS "Old" (MESSAGES 3)']
    status = ok(r.cmd("c STATUS INBOX (MESSAGES)"))
    assert status == ['* STATUS "INBOX" (MESSAGES 0)']


def test_rename_to_existing_refused(server):
    r = raw(server)
    ok(r.cmd("a CREATE One"))
    ok(r.cmd("b CREATE Two"))
    no(r.cmd("c RENAME One Two"), "ALREADYEXISTS")
    no(r.cmd("d RENAME Nothing Three"), "NONEXISTENT")


def test_delete_selected_mailbox(server):
    r = raw(server)
    ok(r.cmd("a CREATE Gone"))
    ok(r.cmd("b SELECT Gone"))
    untagged = ok(r.cmd("c DELETE Gone"))
    assert any("[CLOSED]" in line for line in untagged)
    ok(r.cmd("d NOOP"))
    _, tagged = r.cmd("e FETCH 1 FLAGS")
    assert not tagged.startswith("e OK")


def test_rename_selected_mailbox(server):
    deliver(server, 1)
    r = raw(server)
    ok(r.cmd("a CREATE Before"))
    ok(r.cmd("b SELECT INBOX"))
    ok(r.cmd("c COPY 1 Before"))
    ok(r.cmd("d SELECT Before"))
    untagged = ok(r.cmd("e RENAME Before After"))
    assert any("[CLOSED]" in line for line in untagged)
    ok(r.cmd("f NOOP"))
    lines = ok(r.cmd("g SELECT After"))
    assert "* 1 EXISTS" in lines


def test_create_special_use(server):
    r = raw(server)
    ok(r.cmd("a CREATE Outbox (USE (\\Sent))"))
    names = list_names(ok(r.cmd('b LIST "" "Outbox"')))
    assert "\\Sent" in names["Outbox"]
    no(r.cmd("c CREATE Weird (USE (\\Important))"), "USEATTR")


def test_path_tricks_refused(server):
    r = raw(server)
    before = set(os.listdir(server.dir))
    for i, name in enumerate(['"../escape"', '"a//b"', '"x/../../y"',
                              '"."', '".."', '"/abs"']):
        no(r.cmd(f"t{i} CREATE {name}"))
    # a name with a control character, sent as a literal
    r.send("u1 CREATE {3+}\r\na\x01b\r\n")
    no(r.response("u1"))
    assert set(os.listdir(server.dir)) == before
    assert not os.path.exists(os.path.join(server.dir, "escape"))
    assert not os.path.exists(os.path.join(server.dir, "spool", "escape"))
    names = list_names(ok(r.cmd('z LIST "" "*"')))
    assert not any("escape" in n or n.endswith("y") for n in names)


# ---- LIST -------------------------------------------------------------------

def make_tree(r):
    for name in ("Work", "Work/Projects", "Work/Projects/Alpha", "Home"):
        ok(r.cmd(f"c CREATE {name}"))


def test_list_wildcards(server):
    r = raw(server)
    make_tree(r)
    top = list_names(ok(r.cmd('a LIST "" "%"')))
    assert {"INBOX", "Work", "Home", "Sent", "Trash"} <= set(top)
    assert not any("/" in n for n in top)
    assert "\\HasChildren" in top["Work"]
    assert "\\HasNoChildren" in top["Home"]
    everything = list_names(ok(r.cmd('b LIST "" "*"')))
    assert {"Work/Projects", "Work/Projects/Alpha"} <= set(everything)
    level2 = list_names(ok(r.cmd('c LIST "" "Work/%"')))
    assert set(level2) == {"Work/Projects"}
    ref = list_names(ok(r.cmd('d LIST "Work/" "*"')))
    assert set(ref) == {"Work/Projects", "Work/Projects/Alpha"}
    mid = list_names(ok(r.cmd('e LIST "" "W*a"')))
    assert set(mid) == {"Work/Projects/Alpha"}
    inbox = list_names(ok(r.cmd('f LIST "" "inbox"')))
    assert set(inbox) == {"INBOX"}
    two = list_names(ok(r.cmd('g LIST "" "%/%"')))
    assert set(two) == {"Work/Projects"}
    mixed = list_names(ok(r.cmd('h LIST "" "*%o%*s"')))
    assert set(mixed) == {"Work/Projects"}
    pct = list_names(ok(r.cmd('i LIST "" "Wo%"')))
    assert set(pct) == {"Work"}


def test_list_empty_pattern(server):
    r = raw(server)
    assert ok(r.cmd('a LIST "" ""')) == ['* LIST (\\Noselect) "/" ""']


def test_list_nonexistent_parent(server):
    r = raw(server)
    ok(r.cmd("a CREATE p/q"))
    names = list_names(ok(r.cmd('b LIST "" "%"')))
    assert "p" in names
    assert "\\Noselect" in names["p"] or "\\NonExistent" in names["p"]
    assert "\\HasChildren" in names["p"]
    no(r.cmd("c SELECT p"))


def test_list_special_use_defaults(server):
    r = raw(server)
    names = list_names(ok(r.cmd('a LIST "" "*"')))
    for name, attr in (("Drafts", "\\Drafts"), ("Sent", "\\Sent"),
                       ("Trash", "\\Trash"), ("Junk", "\\Junk"),
                       ("Archive", "\\Archive")):
        assert attr in names[name], (name, names.get(name))
    only = list_names(ok(r.cmd('b LIST (SPECIAL-USE) "" "*"')))
    assert set(only) == {"Drafts", "Sent", "Trash", "Junk", "Archive"}


def test_list_extended_subscribed(server):
    r = raw(server)
    make_tree(r)
    ok(r.cmd("a SUBSCRIBE Work/Projects"))
    ok(r.cmd("b SUBSCRIBE Home"))
    subs = list_names(ok(r.cmd('c LIST (SUBSCRIBED) "" "*"')))
    assert set(subs) == {"Work/Projects", "Home"}
    assert all("\\Subscribed" in a for a in subs.values())
    ret = list_names(ok(r.cmd('d LIST "" "%" RETURN (SUBSCRIBED)')))
    assert "\\Subscribed" in ret["Home"]
    assert "\\Subscribed" not in ret["Work"]
    lines = ok(r.cmd('e LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"'))
    assert any(line.startswith('* LIST (') and '"Work" ("CHILDINFO"' in line
               for line in lines), lines
    _, tagged = r.cmd('f LIST (RECURSIVEMATCH) "" "%"')
    assert tagged.startswith("f BAD")
    multi = list_names(ok(r.cmd('g LIST "" ("Home" "Work")')))
    assert set(multi) == {"Home", "Work"}


def test_list_stale_subscription(server):
    r = raw(server)
    ok(r.cmd("a CREATE Temp"))
    ok(r.cmd("b SUBSCRIBE Temp"))
    ok(r.cmd("c DELETE Temp"))
    assert "Temp" not in list_names(ok(r.cmd('d LIST "" "*"')))
    subs = list_names(ok(r.cmd('e LIST (SUBSCRIBED) "" "*"')))
    assert subs["Temp"] >= {"\\NonExistent", "\\Subscribed"}


def test_list_status(server):
    deliver(server, 2)
    r = raw(server)
    lines = ok(r.cmd('a LIST "" "INBOX" RETURN (STATUS (MESSAGES UNSEEN))'))
    assert lines[0].startswith("* LIST (") and lines[0].endswith('"INBOX"')
    assert lines[1] == '* STATUS "INBOX" (MESSAGES 2 UNSEEN 2)'
    _, tagged = r.cmd('b LIST "" "*" RETURN (STATUS (BOGUS))')
    assert tagged.startswith("b BAD")


def test_lsub_and_subscribe(server):
    r = raw(server)
    make_tree(r)
    ok(r.cmd("a SUBSCRIBE Work/Projects"))
    subs = list_names(ok(r.cmd('b LSUB "" "*"')), "LSUB")
    assert set(subs) == {"Work/Projects"}
    parents = list_names(ok(r.cmd('c LSUB "" "%"')), "LSUB")
    assert parents == {"Work": {"\\Noselect"}}
    ok(r.cmd("d UNSUBSCRIBE Work/Projects"))
    assert ok(r.cmd('e LSUB "" "*"')) == []


def test_list_bad_syntax(server):
    r = raw(server)
    for i, args in enumerate(['"" "*" RETURN', '(BOGUS) "" "*"', '""',
                              '"" "*" RETURN (BOGUS)']):
        _, tagged = r.cmd(f"b{i} LIST {args}")
        assert tagged.startswith(f"b{i} BAD"), tagged


def test_list_hostile_pattern_is_fast(server):
    r = raw(server)
    make_tree(r)
    pattern = "*%" * 200 + "q"
    lines = ok(r.cmd(f'a LIST "" "{pattern}"'))
    assert lines == []


# ---- STATUS / NAMESPACE ----------------------------------------------------

def test_status_items(server):
    deliver(server, 3)
    m = imaptest.login(server)
    m.select("INBOX")
    m.store("1", "+FLAGS", "(\\Seen \\Deleted)")
    typ, data = m.fetch("1:*", "(RFC822.SIZE)")
    sizes = sum(int(re.search(rb"RFC822.SIZE (\d+)", d).group(1))
                for d in data)
    m.logout()
    r = raw(server)
    lines = ok(r.cmd("a STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY UNSEEN "
                     "RECENT SIZE HIGHESTMODSEQ DELETED)"))
    m = re.match(r'\* STATUS "INBOX" \((.*)\)$', lines[0])
    items = dict(zip(m.group(1).split()[::2], map(int, m.group(1).split()[1::2])))
    assert items["MESSAGES"] == 3
    assert items["UIDNEXT"] == 4
    assert items["UNSEEN"] == 2
    assert items["DELETED"] == 1
    assert items["SIZE"] == sizes
    assert items["UIDVALIDITY"] > 0 and items["HIGHESTMODSEQ"] > 0
    _, tagged = r.cmd("b STATUS INBOX (BOGUS)")
    assert tagged.startswith("b BAD")
    no(r.cmd("c STATUS Nothing (MESSAGES)"), "NONEXISTENT")


def test_status_of_selected_mailbox(server):
    r = raw(server)
    ok(r.cmd("a SELECT INBOX"))
    deliver(server, 1)
    lines = ok(r.cmd("b STATUS INBOX (MESSAGES)"))
    # The new message is reported (EXISTS) first and STATUS agrees with it.
    assert lines[0] == "* 1 EXISTS", lines
    assert lines[-1] == '* STATUS "INBOX" (MESSAGES 1)', lines
    assert ok(r.cmd("c NOOP")) == []
    lines = ok(r.cmd("d STATUS INBOX (MESSAGES)"))
    assert lines == ['* STATUS "INBOX" (MESSAGES 1)']


def test_namespace(server):
    r = raw(server)
    assert ok(r.cmd("a NAMESPACE")) == ['* NAMESPACE (("" "/")) (("Other Users/" "/")) NIL']


# ---- international names ----------------------------------------------------

def test_mutf7_names(server):
    r = raw(server)
    ok(r.cmd("a CREATE &AMk-t&AOk-"))            # "Été" in modified UTF-7
    names = list_names(ok(r.cmd('b LIST "" "*"')))
    assert "&AMk-t&AOk-" in names
    ok(r.cmd("c SELECT &AMk-t&AOk-"))
    r2 = raw(server)
    untagged = ok(r2.cmd("e ENABLE UTF8=ACCEPT"))
    if not any("UTF8=ACCEPT" in line.upper() for line in untagged):
        pytest.skip("UTF8=ACCEPT not enabled by this server")
    r2.send('f LIST "" "*"\r\n'.encode())
    lines, tagged = r2.response("f")
    assert tagged.startswith("f OK")
    assert "Été" in list_names(lines)
    r2.send('g CREATE "Über"\r\n'.encode())
    ok(r2.response("g"))
    names = list_names(ok(r.cmd('h LIST "" "*"')))
    assert "&ANw-ber" in names
