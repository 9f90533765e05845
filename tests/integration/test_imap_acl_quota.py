"""IMAP integration tests: RFC 4314 ACL (GETACL, SETACL, DELETEACL,
LISTRIGHTS, MYRIGHTS) and RFC 9208 QUOTA (GETQUOTA, GETQUOTAROOT,
SETQUOTA) against a real clustermaild, with limits set the way an
administrator does it (clustermailctl quota set)."""
import json
import os
import re
import subprocess

import pytest

import cmtest
import imaptest

ALICE = imaptest.ALICE
BOB = imaptest.BOB
ALL_RIGHTS = "lrswipkxteacd"      # the eleven rights + virtual c and d
MSG = "From: a@example.org\r\nSubject: %s\r\n\r\nbody %s\r\n"


@pytest.fixture
def server(workdir):
    """A daemon with IMAP and the test users (spool made first:
    clustermaild never creates spool_dir itself)."""
    spool = os.path.join(workdir, "spool")
    os.makedirs(spool, exist_ok=True)
    cmtest.prepare_workdir(spool)
    d = imaptest.start_daemon(workdir)
    r = imaptest.Raw(d).login()
    caps = " ".join(r.cmd("c0 CAPABILITY")[0]).split()
    r.close()
    if "ACL" not in caps or "QUOTA" not in caps:
        d.stop()
        print("ACL/QUOTA not advertised: commands not registered yet")
        pytest.skip("ACL/QUOTA commands are not registered in "
                    "imap-commands.c yet")
    yield d
    d.stop()


def raw(server, login=True):
    r = imaptest.Raw(server)
    if login:
        r.login()
    return r


def status(reply):
    return reply[1].split(" ")[1]


def ok(reply):
    untagged, tagged = reply
    assert status(reply) == "OK", (untagged, tagged)
    return untagged


def no(reply, code=None):
    untagged, tagged = reply
    assert status(reply) == "NO", (untagged, tagged)
    if code:
        assert f"[{code}]" in tagged, tagged
    return untagged


def bad(reply):
    assert status(reply) == "BAD", reply
    return reply[0]


def deliver(server, n, user=ALICE, mailbox=None, start=0):
    for i in range(start, start + n):
        imaptest.deliver(server, user, MSG % (i, i), mailbox)


def quota_set(server, *args):
    r = server.ctl("quota", "set", ALICE, *args)
    assert r.returncode == 0, r.stderr
    return r


def quota_lines(lines):
    return [line for line in lines if line.startswith("* QUOTA ")]


def mailbox_bytes(r, mailbox="INBOX"):
    """Total RFC822.SIZE of a mailbox, as the client sees it."""
    lines = ok(r.cmd(f'sz1 STATUS {mailbox} (SIZE)'))
    m = re.search(r"SIZE (\d+)", " ".join(lines))
    return int(m.group(1))


def acl_entries(line):
    """{identifier: rights} of a "* ACL mailbox id rights ..." line."""
    words = line.split(" ")[3:]
    return dict(zip(words[0::2], words[1::2]))


# ---- capabilities ----------------------------------------------------------

def test_capabilities_advertised(server):
    r = raw(server)
    caps = " ".join(ok(r.cmd("c1 CAPABILITY"))).split()
    for cap in ("ACL", "RIGHTS=texk", "QUOTA", "QUOTA=RES-STORAGE",
                "QUOTA=RES-MESSAGE"):
        assert cap in caps, caps
    # SETQUOTA is refused, so QUOTASET must not be promised (RFC 9208 4.1.3)
    assert "QUOTASET" not in caps


# ---- QUOTA -----------------------------------------------------------------

def test_getquotaroot_without_limits_names_root_only(server):
    r = raw(server)
    lines = ok(r.cmd("q1 GETQUOTAROOT INBOX"))
    assert '* QUOTAROOT "INBOX" ""' in lines, lines
    # nothing limited: no resource to list
    assert quota_lines(lines) == [], lines
    assert quota_lines(ok(r.cmd('q2 GETQUOTA ""'))) == []


def test_quota_shows_admin_limits_in_kib(server):
    deliver(server, 2)
    quota_set(server, "--storage", "10M", "--messages", "5")
    r = raw(server)
    used = mailbox_bytes(r)
    kib = (used + 1023) // 1024
    lines = ok(r.cmd("q1 GETQUOTAROOT INBOX"))
    assert lines[0] == '* QUOTAROOT "INBOX" ""', lines
    assert f'* QUOTA "" (STORAGE {kib} 10240 MESSAGE 2 5)' in lines, lines
    lines = ok(r.cmd('q2 GETQUOTA ""'))
    assert lines == [f'* QUOTA "" (STORAGE {kib} 10240 MESSAGE 2 5)']


def test_quota_counts_every_mailbox_and_rounds_up(server):
    r = raw(server)
    ok(r.cmd("q0 CREATE Old"))
    deliver(server, 1)
    deliver(server, 1, mailbox="Old", start=1)
    quota_set(server, "--messages", "10")
    # only MESSAGE is limited: STORAGE must not be listed
    lines = ok(r.cmd("q1 GETQUOTAROOT Old"))
    assert '* QUOTAROOT "Old" ""' in lines
    assert '* QUOTA "" (MESSAGE 2 10)' in lines, lines
    quota_set(server, "--storage", "1M")
    used = mailbox_bytes(r) + mailbox_bytes(r, "Old")
    assert used % 1024 != 0     # so that rounding matters
    lines = ok(r.cmd('q2 GETQUOTA ""'))
    assert lines == ['* QUOTA "" (STORAGE %d 1024 MESSAGE 2 10)'
                     % ((used + 1023) // 1024)], lines


def test_quota_with_imaplib(server):
    quota_set(server, "--storage", "2048k")
    m = imaptest.login(server)
    typ, data = m.getquotaroot("INBOX")
    assert typ == "OK"
    roots, quotas = data
    assert roots == [b'"INBOX" ""'], roots
    assert quotas == [b'"" (STORAGE 0 2048)'], quotas
    typ, data = m.getquota('""')
    assert typ == "OK" and data == [b'"" (STORAGE 0 2048)'], data
    m.logout()


def test_getquotaroot_of_a_mailbox_yet_to_be_created(server):
    # RFC 9208 4.1.2: the mailbox need not exist
    r = raw(server)
    lines = ok(r.cmd("q1 GETQUOTAROOT Later/Sub"))
    assert '* QUOTAROOT "Later/Sub" ""' in lines
    # but a name it could never have is refused
    no(r.cmd('q2 GETQUOTAROOT "a//b"'), "CANNOT")


def test_getquotaroot_in_selected_state(server):
    quota_set(server, "--messages", "3")
    r = raw(server)
    ok(r.cmd("s1 SELECT INBOX"))
    lines = ok(r.cmd("q1 GETQUOTAROOT inbox"))
    assert '* QUOTAROOT "INBOX" ""' in lines
    assert '* QUOTA "" (MESSAGE 0 3)' in lines


def test_getquota_unknown_root(server):
    r = raw(server)
    no(r.cmd('q1 GETQUOTA "#user/alice"'), "NONEXISTENT")
    no(r.cmd("q2 GETQUOTA INBOX"), "NONEXISTENT")


def test_append_over_message_limit(server):
    quota_set(server, "--messages", "5")
    deliver(server, 5)
    # the LDA refuses the sixth (exit status 77, see clustermailctl(8))
    p = subprocess.run([cmtest.binary("clustermailctl"), "-c", server.conf,
                        "deliver", ALICE], input=(MSG % (6, 6)).encode(),
                       capture_output=True, timeout=30)
    assert p.returncode == 77, p
    m = imaptest.login(server)
    typ, data = m.append("INBOX", None, None, (MSG % (7, 7)).encode())
    assert typ == "NO" and b"[OVERQUOTA]" in data[0], (typ, data)
    typ, data = m.getquotaroot("INBOX")
    assert data[1] == [b'"" (MESSAGE 5 5)'], data
    m.logout()


def test_append_over_storage_limit(server):
    quota_set(server, "--storage", "2k")
    r = raw(server)
    body = "From: a@example.org\r\nSubject: big\r\n\r\n" + "x" * 3000 + "\r\n"
    r.send("a1 APPEND INBOX {%d}\r\n" % len(body))
    line = r.line()
    if line.startswith("+"):
        r.send(body + "\r\n")
        _, tagged = r.response("a1")
    else:
        tagged = line
    assert tagged.startswith("a1 NO") and "[OVERQUOTA]" in tagged, tagged
    assert "* 0 EXISTS" in ok(r.cmd("n1 SELECT INBOX"))


def test_setquota_refused(server):
    quota_set(server, "--messages", "5")
    r = raw(server)
    no(r.cmd('q1 SETQUOTA "" (STORAGE 512)'), "NOPERM")
    no(r.cmd('q2 SETQUOTA "" ()'), "NOPERM")
    # unchanged
    assert ok(r.cmd('q3 GETQUOTA ""')) == ['* QUOTA "" (MESSAGE 0 5)']
    g = server.ctl("quota", "get", ALICE, "--json")
    assert g.returncode == 0, g.stderr
    assert "512" not in g.stdout


def test_setquota_refused_with_imaplib(server):
    m = imaptest.login(server)
    typ, data = m.setquota('""', "(STORAGE 512)")
    assert typ == "NO" and b"[NOPERM]" in data[0], (typ, data)
    m.logout()


@pytest.mark.parametrize("args", [
    'SETQUOTA ""',
    'SETQUOTA "" STORAGE 512',
    'SETQUOTA "" (STORAGE)',
    'SETQUOTA "" (STORAGE abc)',
    'SETQUOTA "" (STORAGE -1)',
    'SETQUOTA "" ((STORAGE) 1)',
    'SETQUOTA "" (STORAGE 1) extra',
    'SETQUOTA',
    'GETQUOTA',
    'GETQUOTA "" extra',
    'GETQUOTAROOT',
    'GETQUOTAROOT INBOX extra',
    'GETQUOTAROOT (INBOX)',
])
def test_quota_bad_syntax(server, args):
    r = raw(server)
    bad(r.cmd("b1 " + args))
    ok(r.cmd("b2 NOOP"))            # the session goes on


def test_quota_needs_login(server):
    r = raw(server, login=False)
    assert status(r.cmd('q1 GETQUOTA ""')) == "BAD"
    assert status(r.cmd("q2 GETQUOTAROOT INBOX")) == "BAD"


# ---- ACL -------------------------------------------------------------------

def test_getacl_default_is_owner_only(server):
    r = raw(server)
    lines = ok(r.cmd("a1 GETACL INBOX"))
    assert lines == [f"* ACL \"INBOX\" {ALICE} {ALL_RIGHTS}"], lines


def test_myrights_owner_has_all(server):
    r = raw(server)
    assert ok(r.cmd("a1 MYRIGHTS INBOX")) == [f"* MYRIGHTS \"INBOX\" {ALL_RIGHTS}"]


def test_setacl_roundtrip_and_modifiers(server):
    r = raw(server)
    ok(r.cmd(f"a1 SETACL INBOX {BOB} lr"))
    entries = acl_entries(ok(r.cmd("a2 GETACL INBOX"))[0])
    assert entries == {ALICE: ALL_RIGHTS, BOB: "lr"}, entries
    ok(r.cmd(f"a3 SETACL INBOX {BOB} +wi"))
    assert acl_entries(ok(r.cmd("a4 GETACL INBOX"))[0])[BOB] == "lrwi"
    ok(r.cmd(f"a5 SETACL INBOX {BOB} -r"))
    assert acl_entries(ok(r.cmd("a6 GETACL INBOX"))[0])[BOB] == "lwi"
    # replace (no modifier); the obsolete "d" means "et" and is shown again
    ok(r.cmd(f"a7 SETACL INBOX {BOB} ld"))
    assert acl_entries(ok(r.cmd("a8 GETACL INBOX"))[0])[BOB] == "lted"
    # "c" means "kx"
    ok(r.cmd(f"a9 SETACL INBOX {BOB} +c"))
    assert acl_entries(ok(r.cmd("a10 GETACL INBOX"))[0])[BOB] == "lkxtecd"
    # removing every right removes the entry
    ok(r.cmd(f"a11 SETACL INBOX {BOB} -lkxte"))
    assert acl_entries(ok(r.cmd("a12 GETACL INBOX"))[0]) == {
        ALICE: ALL_RIGHTS}


def test_identifiers_anyone_negative_and_case(server):
    r = raw(server)
    ok(r.cmd("a1 SETACL INBOX anyone l"))
    ok(r.cmd("a2 SETACL INBOX authenticated lr"))
    ok(r.cmd('a3 SETACL INBOX "-Bob@Example.COM" w'))
    entries = acl_entries(ok(r.cmd("a4 GETACL INBOX"))[0])
    assert entries == {ALICE: ALL_RIGHTS, "anyone": "l",
                       "authenticated": "lr", "-" + BOB: "w"}, entries
    ok(r.cmd("a5 DELETEACL INBOX -bob@example.com"))
    ok(r.cmd("a6 DELETEACL INBOX anyone"))
    entries = acl_entries(ok(r.cmd("a7 GETACL INBOX"))[0])
    assert entries == {ALICE: ALL_RIGHTS, "authenticated": "lr"}, entries
    # deleting an entry that is not there is fine
    ok(r.cmd("a8 DELETEACL INBOX anyone"))


def test_setacl_empty_rights_deletes(server):
    r = raw(server)
    ok(r.cmd(f"a1 SETACL INBOX {BOB} lrs"))
    ok(r.cmd(f'a2 SETACL INBOX {BOB} ""'))
    assert BOB not in acl_entries(ok(r.cmd("a3 GETACL INBOX"))[0])


def test_acl_is_what_the_admin_tool_sees(server):
    r = raw(server)
    ok(r.cmd("a0 CREATE Shared"))
    ok(r.cmd(f"a1 SETACL Shared {BOB} lrsi"))
    g = server.ctl("acl", "get", ALICE, "Shared", "--json")
    assert g.returncode == 0, g.stderr
    acl = {e["identifier"]: e["rights"] for e in json.loads(g.stdout)["acl"]}
    assert acl.get(BOB) == "lrsi", g.stdout
    s = server.ctl("acl", "set", ALICE, "Shared", "anyone", "l")
    assert s.returncode == 0, s.stderr
    entries = acl_entries(ok(r.cmd("a2 GETACL Shared"))[0])
    assert entries.get("anyone") == "l", entries
    # the INBOX ACL is separate
    assert BOB not in acl_entries(ok(r.cmd("a3 GETACL INBOX"))[0])


@pytest.mark.parametrize("rights", ["lrZ", "L", "l1", "lr ", "+x-y", "++l"])
def test_setacl_invalid_rights_bad(server, rights):
    r = raw(server)
    bad(r.cmd(f'a1 SETACL INBOX {BOB} "{rights}"'))
    assert BOB not in acl_entries(ok(r.cmd("a2 GETACL INBOX"))[0])


@pytest.mark.parametrize("identifier", ['""', '"-"', '"bob smith"',
                                        "a" * 400])
def test_invalid_identifier_bad(server, identifier):
    r = raw(server)
    bad(r.cmd(f"a1 SETACL INBOX {identifier} lr"))
    bad(r.cmd(f"a2 DELETEACL INBOX {identifier}"))
    bad(r.cmd(f"a3 LISTRIGHTS INBOX {identifier}"))
    assert acl_entries(ok(r.cmd("a4 GETACL INBOX"))[0]) == {
        ALICE: ALL_RIGHTS}


def test_owner_rights_cannot_change(server):
    r = raw(server)
    no(r.cmd(f"a1 SETACL INBOX {ALICE} lr"), "CANNOT")
    no(r.cmd(f"a2 DELETEACL INBOX {ALICE}"), "CANNOT")
    no(r.cmd(f"a3 SETACL INBOX -{ALICE} r"), "CANNOT")
    assert ok(r.cmd("a4 MYRIGHTS INBOX")) == [f"* MYRIGHTS \"INBOX\" {ALL_RIGHTS}"]


def test_listrights(server):
    r = raw(server)
    lines = ok(r.cmd(f"a1 LISTRIGHTS INBOX {ALICE}"))
    assert lines == [f"* LISTRIGHTS \"INBOX\" {ALICE} {ALL_RIGHTS}"], lines
    # the identifier comes back in the client's form (RFC 4314 3.4); each
    # right can be granted alone, so each is its own optional group
    lines = ok(r.cmd("a2 LISTRIGHTS INBOX Bob@Example.COM"))
    assert lines == ['* LISTRIGHTS "INBOX" Bob@Example.COM "" '
                     'l r s w i p k x t e a c d'], lines
    lines = ok(r.cmd("a3 LISTRIGHTS INBOX anyone"))
    assert lines[0].startswith('* LISTRIGHTS "INBOX" anyone "" l r ')


@pytest.mark.parametrize("command", [
    "GETACL Nope", f"SETACL Nope {BOB} lr", f"DELETEACL Nope {BOB}",
    "MYRIGHTS Nope", f"LISTRIGHTS Nope {BOB}"])
def test_acl_nonexistent_mailbox(server, command):
    r = raw(server)
    untagged = no(r.cmd("a1 " + command), "NONEXISTENT")
    assert not any(line.startswith(("* ACL", "* MYRIGHTS", "* LISTRIGHTS"))
                   for line in untagged)


@pytest.mark.parametrize("command", [
    "GETACL", "GETACL INBOX extra", "GETACL (INBOX)",
    "SETACL INBOX", f"SETACL INBOX {BOB}", f"SETACL INBOX {BOB} lr extra",
    f"SETACL INBOX {BOB} (lr)", "DELETEACL INBOX",
    f"DELETEACL INBOX {BOB} extra", "MYRIGHTS", "MYRIGHTS INBOX extra",
    "LISTRIGHTS INBOX", f"LISTRIGHTS INBOX {BOB} extra"])
def test_acl_bad_syntax(server, command):
    r = raw(server)
    bad(r.cmd("b1 " + command))
    ok(r.cmd("b2 NOOP"))


def test_acl_needs_login(server):
    r = raw(server, login=False)
    assert status(r.cmd("a1 GETACL INBOX")) == "BAD"
    assert status(r.cmd("a2 MYRIGHTS INBOX")) == "BAD"


def test_acl_in_selected_state_and_utf7_names(server):
    r = raw(server)
    ok(r.cmd('a0 CREATE "Entw&APw-rfe"'))
    ok(r.cmd("a1 SELECT INBOX"))
    ok(r.cmd(f'a2 SETACL "Entw&APw-rfe" {BOB} lr'))
    lines = ok(r.cmd('a3 GETACL "Entw&APw-rfe"'))
    assert lines == [f"* ACL Entw&APw-rfe {ALICE} {ALL_RIGHTS} {BOB} lr"] or \
        lines == [f'* ACL "Entw&APw-rfe" {ALICE} {ALL_RIGHTS} {BOB} lr'], lines
    lines = ok(r.cmd('a4 MYRIGHTS "Entw&APw-rfe"'))
    assert lines[0].endswith(ALL_RIGHTS)
    ok(r.cmd("a5 NOOP"))
    assert r.cmd("a6 SELECT INBOX")[1].startswith("a6 OK")


def test_acl_with_imaplib(server):
    m = imaptest.login(server)
    typ, _ = m.setacl("INBOX", BOB, "lrs")
    assert typ == "OK"
    typ, data = m.getacl("INBOX")
    assert typ == "OK"
    assert data == [f'"INBOX" {ALICE} {ALL_RIGHTS} {BOB} lrs'.encode()], data
    typ, data = m.myrights("INBOX")
    assert typ == "OK" and data == [f'"INBOX" {ALL_RIGHTS}'.encode()], data
    typ, _ = m.deleteacl("INBOX", BOB)
    assert typ == "OK"
    typ, data = m.getacl("INBOX")
    assert data == [f'"INBOX" {ALICE} {ALL_RIGHTS}'.encode()], data
    m.logout()
