"""Shared mailboxes over IMAP: other users' mailboxes under "Other Users/"
(RFC 2342), reachable only as far as the owner's ACL (RFC 4314) allows.

Rights are granted with `clustermailctl acl set OWNER MAILBOX GRANTEE
RIGHTS`, the way an administrator (or, later, SETACL) does. alice is the
session user throughout; bob owns the shared mailboxes.
"""
import imaptest
from imaptest import ALICE, BOB

PREFIX = "Other Users/"
BOBS = PREFIX + BOB + "/"


def ctl_ok(daemon, *args):
    r = daemon.ctl(*args)
    assert r.returncode == 0, r.stderr
    return r


def grant(daemon, mailbox, rights, grantee=ALICE):
    ctl_ok(daemon, "acl", "set", BOB, mailbox, grantee, rights)


def setup_bob(daemon, mailboxes=("Projects", "Projects/X", "Private")):
    """bob's spool with some mailboxes and one message in Projects/X."""
    for name in mailboxes:
        ctl_ok(daemon, "mailbox", "create", BOB, name)
    imaptest.deliver(daemon, BOB, "Subject: shared one\r\n\r\nbody\r\n",
                     mailbox="Projects/X")


def alice(daemon):
    return imaptest.Raw(daemon).login(ALICE)


def listed(raw, pattern="*"):
    """{name: attributes} of LIST "" pattern."""
    untagged, tagged = raw.cmd(f'L LIST "" "{pattern}"')
    assert tagged.startswith("L OK"), tagged
    out = {}
    for line in untagged:
        assert line.startswith("* LIST ("), line
        attrs = line[len("* LIST ("):line.index(")")]
        name = line[line.index(') "/" ') + 6:]
        out[name.strip('"')] = attrs
    return out


def test_namespace(imap_daemon):
    raw = alice(imap_daemon)
    untagged, tagged = raw.cmd("N NAMESPACE")
    assert tagged.startswith("N OK")
    assert untagged == ['* NAMESPACE (("" "/")) (("Other Users/" "/")) NIL']


def test_list_shows_granted_mailboxes_only(imap_daemon):
    setup_bob(imap_daemon)
    raw = alice(imap_daemon)
    # Nothing granted: no "Other Users" at all.
    assert not any(n.startswith("Other Users") for n in listed(raw))
    grant(imap_daemon, "Projects/X", "lr")
    names = listed(raw)
    assert names[BOBS + "Projects/X"] == "\\HasNoChildren"
    # The parents are containers, not mailboxes.
    assert "\\Noselect" in names["Other Users"]
    assert "\\Noselect" in names[PREFIX + BOB]
    assert "\\Noselect" in names[BOBS + "Projects"]
    assert BOBS + "Private" not in names
    assert BOBS + "INBOX" not in names
    # "%" stops at each level.
    assert list(listed(raw, PREFIX + "%")) == [PREFIX + BOB]
    assert set(listed(raw, BOBS + "%")) == {BOBS + "Projects"}
    # A personal pattern does not list shared names; bob sees nothing of
    # alice's (she shared nothing).
    assert set(listed(raw, "%")) >= {"INBOX", "Other Users"}
    bob = imaptest.Raw(imap_daemon).login(BOB)
    assert not any(n.startswith("Other Users") for n in listed(bob))


def test_anyone_grant_is_listed(imap_daemon):
    setup_bob(imap_daemon)
    grant(imap_daemon, "Private", "lr", grantee="anyone")
    raw = alice(imap_daemon)
    assert BOBS + "Private" in listed(raw)


def test_select_readonly_or_readwrite_by_rights(imap_daemon):
    setup_bob(imap_daemon)
    raw = alice(imap_daemon)
    grant(imap_daemon, "Projects/X", "lr")
    untagged, tagged = raw.cmd(f'S SELECT "{BOBS}Projects/X"')
    assert tagged.startswith("S OK [READ-ONLY]"), tagged
    assert "* 1 EXISTS" in untagged
    _, tagged = raw.cmd("F FETCH 1 BODY.PEEK[HEADER.FIELDS (SUBJECT)]")
    assert tagged.startswith("F OK")
    grant(imap_daemon, "Projects/X", "lrs")
    _, tagged = raw.cmd(f'S SELECT "{BOBS}Projects/X"')
    assert tagged.startswith("S OK [READ-WRITE]"), tagged
    # STATUS of a shared mailbox needs "r" too.
    untagged, tagged = raw.cmd(f'T STATUS "{BOBS}Projects/X" (MESSAGES)')
    assert tagged.startswith("T OK")
    assert untagged == [f'* STATUS "{BOBS}Projects/X" (MESSAGES 1)']


def test_no_rights_is_nonexistent(imap_daemon):
    setup_bob(imap_daemon)
    raw = alice(imap_daemon)
    for cmd in (f'S SELECT "{BOBS}Private"',
                f'S EXAMINE "{BOBS}Private"',
                f'S STATUS "{BOBS}Private" (MESSAGES)',
                f'S SELECT "{BOBS}Nope"',
                f'S DELETE "{BOBS}Private"'):
        _, tagged = raw.cmd(cmd)
        assert tagged.startswith("S NO [NONEXISTENT]"), (cmd, tagged)
    # "l" without "r": the mailbox is visible, so the refusal says so.
    grant(imap_daemon, "Private", "l")
    _, tagged = raw.cmd(f'S SELECT "{BOBS}Private"')
    assert tagged.startswith("S NO [NOPERM]"), tagged


def test_path_tricks_and_unknown_users(imap_daemon):
    setup_bob(imap_daemon)
    grant(imap_daemon, "Projects/X", "lr")
    raw = alice(imap_daemon)
    for name in ("Other Users", "Other Users/", PREFIX + BOB,
                 PREFIX + "..", PREFIX + "../" + BOB + "/INBOX",
                 PREFIX + "../x", PREFIX + "/INBOX",
                 PREFIX + "nobody@example.com/INBOX",
                 PREFIX + "nodomain/INBOX",
                 BOBS + "../Private", BOBS + "Projects/../Private"):
        _, tagged = raw.cmd(f'S SELECT "{name}"')
        assert tagged.startswith("S NO"), (name, tagged)
        assert "[NONEXISTENT]" in tagged or "[CANNOT]" in tagged, tagged
    # alice's own INBOX is untouched by all this.
    _, tagged = raw.cmd("S SELECT INBOX")
    assert tagged.startswith("S OK [READ-WRITE]")


def test_fetch_store_expunge_per_right(imap_daemon):
    setup_bob(imap_daemon)
    raw = alice(imap_daemon)
    grant(imap_daemon, "Projects/X", "lrw")
    _, tagged = raw.cmd(f'S SELECT "{BOBS}Projects/X"')
    assert tagged.startswith("S OK [READ-WRITE]"), tagged
    # No "s": FETCH BODY[] does not set \Seen, STORE \Seen is left out.
    untagged, tagged = raw.cmd("F FETCH 1 (BODY[TEXT] FLAGS)")
    assert tagged.startswith("F OK")
    untagged, tagged = raw.cmd("F FETCH 1 FLAGS")
    assert "\\Seen" not in untagged[0]
    untagged, tagged = raw.cmd("T STORE 1 +FLAGS (\\Seen \\Flagged)")
    assert tagged.startswith("T OK"), tagged
    assert "\\Flagged" in untagged[0] and "\\Seen" not in untagged[0]
    # No "t": \Deleted is left out; no "e": EXPUNGE is refused.
    untagged, tagged = raw.cmd("T STORE 1 +FLAGS (\\Deleted)")
    assert tagged.startswith("T OK")
    assert "\\Deleted" not in untagged[0]
    _, tagged = raw.cmd("E EXPUNGE")
    assert tagged.startswith("E NO [NOPERM]"), tagged
    grant(imap_daemon, "Projects/X", "lrwste")
    untagged, tagged = raw.cmd("T STORE 1 +FLAGS (\\Deleted \\Seen)")
    assert "\\Deleted" in untagged[0] and "\\Seen" in untagged[0]
    untagged, tagged = raw.cmd("E EXPUNGE")
    assert tagged.startswith("E OK"), tagged
    assert "* 1 EXPUNGE" in untagged
    # bob sees what alice did: \Seen is one shared flag.
    bob = imaptest.login(imap_daemon, BOB)
    typ, data = bob.select("Projects/X")
    assert typ == "OK" and data == [b"0"]
    bob.logout()


def test_append_and_copy_need_insert(imap_daemon):
    setup_bob(imap_daemon)
    imaptest.deliver(imap_daemon, ALICE, "Subject: mine\r\n\r\nx\r\n")
    raw = alice(imap_daemon)
    msg = "Subject: appended\r\n\r\nhello\r\n"
    grant(imap_daemon, "Projects/X", "lr")
    raw.send(f'A APPEND "{BOBS}Projects/X" (\\Seen) {{{len(msg)}}}\r\n')
    _, tagged = raw.response("A")
    assert tagged.startswith("A NO [NOPERM]"), tagged
    raw.cmd("S SELECT INBOX")
    _, tagged = raw.cmd(f'C COPY 1 "{BOBS}Projects/X"')
    assert tagged.startswith("C NO [NOPERM]"), tagged
    _, tagged = raw.cmd(f'C COPY 1 "{BOBS}Private"')
    assert tagged.startswith("C NO") and "NOPERM" not in tagged, tagged
    # "i" without "s": the message goes in, its \Seen does not.
    grant(imap_daemon, "Projects/X", "li")
    raw.send(f'A APPEND "{BOBS}Projects/X" (\\Seen) {{{len(msg)}}}\r\n')
    assert raw.line().startswith("+")
    raw.send(msg + "\r\n")
    _, tagged = raw.response("A")
    assert tagged.startswith("A OK [APPENDUID"), tagged
    _, tagged = raw.cmd(f'C COPY 1 "{BOBS}Projects/X"')
    assert tagged.startswith("C OK [COPYUID"), tagged
    bob = imaptest.login(imap_daemon, BOB)
    typ, data = bob.select("Projects/X")
    assert data == [b"3"]
    typ, data = bob.fetch("1:3", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    text = b" ".join(d[0] + d[1] if isinstance(d, tuple) else d
                     for d in data).decode()
    assert "appended" in text and "mine" in text
    assert "\\Seen" not in text
    bob.logout()
    # Copy out of a shared mailbox into one's own needs only "r" there.
    grant(imap_daemon, "Projects/X", "lr")
    _, tagged = raw.cmd(f'S EXAMINE "{BOBS}Projects/X"')
    assert tagged.startswith("S OK [READ-ONLY]")
    _, tagged = raw.cmd("C COPY 1:3 INBOX")
    assert tagged.startswith("C OK [COPYUID"), tagged
    _, tagged = raw.cmd("M MOVE 1 INBOX")
    assert tagged.startswith("M NO"), tagged


def test_revoke_takes_effect_for_next_command(imap_daemon):
    setup_bob(imap_daemon)
    raw = alice(imap_daemon)
    grant(imap_daemon, "Projects/X", "lr")
    _, tagged = raw.cmd(f'S SELECT "{BOBS}Projects/X"')
    assert tagged.startswith("S OK")
    _, tagged = raw.cmd("F FETCH 1 BODY.PEEK[]")
    assert tagged.startswith("F OK")
    ctl_ok(imap_daemon, "acl", "delete", BOB, "Projects/X", ALICE)
    _, tagged = raw.cmd("F FETCH 1 BODY.PEEK[]")
    assert tagged.startswith("F NO"), tagged
    assert not any(n.startswith("Other Users") for n in listed(raw))
    _, tagged = raw.cmd(f'S SELECT "{BOBS}Projects/X"')
    assert tagged.startswith("S NO [NONEXISTENT]"), tagged


def test_create_delete_rename_rights(imap_daemon):
    setup_bob(imap_daemon)
    raw = alice(imap_daemon)
    _, tagged = raw.cmd(f'C CREATE "{BOBS}Projects/New"')
    assert tagged.startswith("C NO [NONEXISTENT]"), tagged
    grant(imap_daemon, "Projects", "lk")
    _, tagged = raw.cmd(f'C CREATE "{BOBS}Projects/New"')
    assert tagged.startswith("C OK"), tagged
    r = ctl_ok(imap_daemon, "mailbox", "list", BOB)
    assert "Projects/New" in r.stdout
    # Moving a mailbox between two users' spools is not a rename.
    _, tagged = raw.cmd(f'R RENAME "{BOBS}Projects/New" Mine')
    assert tagged.startswith("R NO"), tagged
    _, tagged = raw.cmd(f'D DELETE "{BOBS}Projects"')
    assert tagged.startswith("D NO [NOPERM]"), tagged
    grant(imap_daemon, "Projects/New", "lx")
    _, tagged = raw.cmd(f'D DELETE "{BOBS}Projects/New"')
    assert tagged.startswith("D OK"), tagged


def test_subscribe_shared_name(imap_daemon):
    setup_bob(imap_daemon)
    grant(imap_daemon, "Projects/X", "lr")
    raw = alice(imap_daemon)
    _, tagged = raw.cmd(f'S SUBSCRIBE "{BOBS}Projects/X"')
    assert tagged.startswith("S OK"), tagged
    untagged, tagged = raw.cmd('L LSUB "" "*"')
    assert tagged.startswith("L OK")
    assert any(f'"{BOBS}Projects/X"' in u for u in untagged), untagged
    untagged, _ = raw.cmd('L LIST (SUBSCRIBED) "" "*"')
    line = [u for u in untagged if f'"{BOBS}Projects/X"' in u]
    assert line and "\\Subscribed" in line[0] and \
        "\\NonExistent" not in line[0], untagged


def test_list_status_respects_read_right(imap_daemon):
    setup_bob(imap_daemon)
    grant(imap_daemon, "Projects/X", "lr")
    grant(imap_daemon, "Private", "l")
    raw = alice(imap_daemon)
    untagged, tagged = raw.cmd(
        'L LIST "" "Other Users/*" RETURN (STATUS (MESSAGES))')
    assert tagged.startswith("L OK"), tagged
    status = [u for u in untagged if u.startswith("* STATUS")]
    assert status == [f'* STATUS "{BOBS}Projects/X" (MESSAGES 1)'], untagged
    assert any(f'"{BOBS}Private"' in u for u in untagged)
    # The owner's container comes before the owner's mailboxes; "*"
    # does not match the prefix "Other Users" itself here.
    names = [u[u.index(') "/" ') + 6:].strip('"') for u in untagged
             if u.startswith("* LIST")]
    assert names[0] == PREFIX + BOB, names
    assert "Other Users" not in names
