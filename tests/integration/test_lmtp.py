"""LMTP (RFC 2033): LHLO, one reply per recipient after the data, delivery
into the store that IMAP and POP3 then serve."""
import imaplib
import poplib

import pytest

import imaptest
import smtptest
from smtptest import ALICE, BOB, PASSWORD


def test_lhlo_capabilities(smtp_daemon):
    raw = smtptest.Raw(smtp_daemon, "lmtp")
    assert raw.greeting[0] == 220 and "LMTP" in raw.greeting[1][0]
    code, lines = raw.cmd("LHLO mta.example.net")
    assert code == 250
    caps = {line[4:].split()[0] for line in lines[1:]}
    assert {"PIPELINING", "ENHANCEDSTATUSCODES", "8BITMIME", "SMTPUTF8",
            "CHUNKING", "DSN", "SIZE"} <= caps
    assert "STARTTLS" not in caps and "AUTH" not in caps
    # EHLO and HELO are SMTP: refused on LMTP (RFC 2033 4.1)
    assert raw.cmd("EHLO mta.example.net")[0] == 500
    assert raw.cmd("HELO mta.example.net")[0] == 500
    # DATA without an accepted recipient: 503 (RFC 2033 4.2)
    raw.cmd("LHLO mta.example.net")
    raw.cmd("MAIL FROM:<a@example.org>")
    assert raw.cmd("RCPT TO:<ghost@example.com>")[0] == 550
    assert raw.cmd("DATA")[0] == 503
    raw.close()


def test_one_reply_per_recipient(smtp_daemon):
    raw = smtptest.Raw(smtp_daemon, "lmtp")
    raw.cmd("LHLO mta.example.net")
    assert raw.cmd("MAIL FROM:<sender@example.org>")[0] == 250
    assert raw.cmd(f"RCPT TO:<{ALICE}>")[0] == 250
    assert raw.cmd("RCPT TO:<nobody@example.com>")[0] == 550
    assert raw.cmd(f"RCPT TO:<{BOB.upper()}>")[0] == 250
    assert raw.cmd("DATA")[0] == 354
    raw.send(b"Subject: lmtp\r\n\r\nline one\r\n..dotted\r\n.\r\n")
    # two accepted recipients: two replies, in RCPT order
    first, second = raw.reply(), raw.reply()
    assert first[0] == 250 and ALICE in first[1][0]
    assert second[0] == 250 and BOB.upper() in second[1][0]
    assert raw.cmd("QUIT")[0] == 221
    for user in (ALICE, BOB):
        msgs = smtptest.inbox(smtp_daemon, user)
        assert len(msgs) == 1
        assert msgs[0].startswith(b"Return-Path: <sender@example.org>\n")
        assert b"\nReceived: from mta.example.net ([127.0.0.1])" in msgs[0]
        assert b"with LMTP" in msgs[0]
        assert msgs[0].endswith(b"\n\nline one\n.dotted\n")


def test_smtplib_lmtp_and_seen_over_imap_and_pop3(smtp_daemon):
    with smtptest.lmtp(smtp_daemon) as s:
        refused = s.sendmail("sender@example.org", [ALICE, "ghost@example.com"],
                             smtptest.message("over lmtp"))
        assert list(refused) == ["ghost@example.com"]
    m = imaplib.IMAP4("127.0.0.1", smtp_daemon.ports["imap"], timeout=30)
    m.login(ALICE, PASSWORD)
    typ, data = m.select("INBOX")
    assert typ == "OK" and int(data[0]) == 1
    typ, data = m.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert b"over lmtp" in data[0][1]
    m.logout()
    p = poplib.POP3("127.0.0.1", smtp_daemon.ports["pop3"], timeout=30)
    p.user(ALICE)
    p.pass_(PASSWORD)
    assert p.stat()[0] == 1
    assert b"Subject: over lmtp" in b"\n".join(p.retr(1)[1])
    p.quit()


def test_bdat_chunks(smtp_daemon):
    raw = smtptest.Raw(smtp_daemon, "lmtp")
    raw.cmd("LHLO mta.example.net")
    raw.cmd("MAIL FROM:<>")
    raw.cmd(f"RCPT TO:<{ALICE}>")
    raw.cmd(f"RCPT TO:<{BOB}>")
    part1 = b"Subject: chunks\r\n\r\n.not stuffed\r\n"
    part2 = b"end\r\n"
    raw.send(b"BDAT %d\r\n" % len(part1) + part1)
    code, lines = raw.reply()
    assert code == 250 and f"{len(part1)} octets" in lines[0]
    raw.send(b"BDAT %d LAST\r\n" % len(part2) + part2)
    assert raw.reply()[0] == 250
    assert raw.reply()[0] == 250
    raw.close()
    msgs = smtptest.inbox(smtp_daemon, ALICE)
    assert msgs[0].endswith(b"\n\n.not stuffed\nend\n")
    assert msgs[0].startswith(b"Return-Path: <>\n")


def test_untrusted_peer_refused(workdir):
    d = smtptest.start_daemon(workdir, extra="trusted_networks = 10.0.0.0/8")
    try:
        raw = smtptest.Raw(d, "lmtp")
        assert raw.greeting[0] == 554
        assert raw.closed()
    finally:
        d.stop()


def test_over_quota_recipient(smtp_daemon):
    r = smtp_daemon.ctl("quota", "set", ALICE, "--storage", "1K")
    assert r.returncode == 0, r.stderr
    raw = smtptest.Raw(smtp_daemon, "lmtp")
    raw.cmd("LHLO mta.example.net")
    raw.cmd("MAIL FROM:<sender@example.org>")
    assert raw.cmd(f"RCPT TO:<{ALICE}>")[0] == 250
    assert raw.cmd(f"RCPT TO:<{BOB}>")[0] == 250
    raw.cmd("DATA")
    raw.send(b"Subject: big\r\n\r\n" + b"x" * 4000 + b"\r\n.\r\n")
    a, b = raw.reply(), raw.reply()
    assert a[0] == 552 and "5.2.2" in a[1][0]
    assert b[0] == 250
    assert smtptest.inbox(smtp_daemon, ALICE) == []
    assert len(smtptest.inbox(smtp_daemon, BOB)) == 1
    # a mailbox at its message limit is refused at RCPT, temporarily
    r = smtp_daemon.ctl("quota", "set", BOB, "--messages", "1")
    assert r.returncode == 0, r.stderr
    assert raw.cmd("MAIL FROM:<sender@example.org>")[0] == 250
    code, lines = raw.cmd(f"RCPT TO:<{BOB}>")
    assert code == 452 and "4.2.2" in lines[0]
    # and a declared SIZE that would not fit is refused the same way
    raw.cmd("RSET")
    assert raw.cmd("MAIL FROM:<sender@example.org> SIZE=2000")[0] == 250
    code, lines = raw.cmd(f"RCPT TO:<{ALICE}>")
    assert code == 452 and "4.2.2" in lines[0]
    raw.close()


def test_lmtp_on_one_node_seen_on_the_other(workdir):
    """Two daemons (nodes n1, n2) on one spool: mail taken over LMTP on n1
    is served by IMAP and POP3 on n2 with the same UIDs, and deliveries
    into one mailbox from both nodes at once all arrive."""
    import os
    import threading
    import cmtest
    spool = os.path.join(str(workdir), "spool")
    os.mkdir(spool)
    cmtest.prepare_workdir(spool)
    nodes = []
    try:
        for i in (1, 2):
            d_dir = os.path.join(str(workdir), f"node{i}")
            os.makedirs(d_dir)
            cmtest.prepare_workdir(d_dir)
            d = cmtest.Daemon(d_dir, node=f"n{i}", services=smtptest.SERVICES,
                              extra=f"relayhost = [127.0.0.1]:{cmtest.free_port()}")
            d.write_config(replace={"spool_dir": spool,
                                    "users_file": os.path.join(str(workdir),
                                                               "users")})
            if i == 1:
                for u in (ALICE, BOB):
                    imaptest.add_user(d, u)
            d.start()
            nodes.append(d)
        a, b = nodes
        with smtptest.lmtp(a) as s:
            assert s.sendmail("x@example.org", [ALICE],
                              smtptest.message("from node 1")) == {}

        def send(node, n, tag):
            with smtptest.lmtp(node) as s:
                for k in range(n):
                    s.sendmail("x@example.org", [BOB],
                               smtptest.message(f"{tag} {k}"))
        threads = [threading.Thread(target=send, args=(node, 20, node.node))
                   for node in nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        m = imaplib.IMAP4("127.0.0.1", b.ports["imap"], timeout=30)
        m.login(ALICE, PASSWORD)
        typ, data = m.select("INBOX")
        assert int(data[0]) == 1
        typ, data = m.uid("FETCH", "1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert b"from node 1" in data[0][1]
        m.logout()
        p = poplib.POP3("127.0.0.1", b.ports["pop3"], timeout=30)
        p.user(ALICE)
        p.pass_(PASSWORD)
        assert p.stat()[0] == 1
        uidl_b = p.uidl(1).split()[-1]
        p.quit()
        p = poplib.POP3("127.0.0.1", a.ports["pop3"], timeout=30)
        p.user(ALICE)
        p.pass_(PASSWORD)
        assert p.uidl(1).split()[-1] == uidl_b      # same UIDL on both nodes
        p.quit()
        m = imaplib.IMAP4("127.0.0.1", a.ports["imap"], timeout=30)
        m.login(BOB, PASSWORD)
        typ, data = m.select("INBOX")
        assert int(data[0]) == 40
        typ, data = m.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        subjects = {part[1].decode().strip() for part in data
                    if isinstance(part, tuple)}
        assert subjects == {f"Subject: n{i} {k}" for i in (1, 2)
                            for k in range(20)}
        m.logout()
    finally:
        for d in nodes:
            d.stop()
