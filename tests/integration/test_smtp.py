"""Inbound SMTP (RFC 5321) on listen_smtp: mail for local users only, every
command and refusal, limits, and bad input."""
import os
import signal
import smtplib
import socket
import time

import pytest

import smtptest
from smtptest import ALICE, BOB


def ehlo_caps(lines):
    return {line[4:].split()[0].upper(): line[4:] for line in lines[1:]}


def test_greeting_and_ehlo(smtp_daemon):
    raw = smtptest.Raw(smtp_daemon)
    assert raw.greeting[0] == 220 and "ESMTP" in raw.greeting[1][0]
    code, lines = raw.cmd("EHLO client.example.net")
    assert code == 250
    caps = ehlo_caps(lines)
    for cap in ("PIPELINING", "SIZE", "8BITMIME", "SMTPUTF8",
                "ENHANCEDSTATUSCODES", "CHUNKING", "STARTTLS", "DSN"):
        assert cap in caps, caps
    assert caps["SIZE"] == f"SIZE {50 * 1024 * 1024}"
    assert "AUTH" not in caps          # AUTH only on submission
    assert raw.cmd("HELO client.example.net")[0] == 250
    assert raw.cmd("LHLO client.example.net")[0] == 500
    assert raw.cmd("NOOP")[0] == 250
    assert raw.cmd("VRFY alice")[0] == 252
    assert raw.cmd("HELP")[0] == 214
    assert raw.cmd("RSET")[0] == 250
    assert raw.cmd("QUIT")[0] == 221
    assert raw.closed()


def test_delivery_with_received_header(smtp_daemon):
    with smtptest.smtp(smtp_daemon) as s:
        s.sendmail("someone@example.org", [ALICE], smtptest.message("hi"))
    msgs = smtptest.inbox(smtp_daemon, ALICE)
    assert len(msgs) == 1
    head = msgs[0].split(b"\n\n")[0]
    assert head.startswith(b"Return-Path: <someone@example.org>\n")
    assert b"Received: from client.example.net ([127.0.0.1])" in head
    assert b"with ESMTP id" in head and b"for <alice@example.com>;" in head


def test_two_local_recipients_one_copy_each(smtp_daemon):
    with smtptest.smtp(smtp_daemon) as s:
        s.sendmail("someone@example.org", [ALICE, BOB, ALICE.upper()],
                   smtptest.message("both"))
    assert len(smtptest.inbox(smtp_daemon, ALICE)) == 1
    assert len(smtptest.inbox(smtp_daemon, BOB)) == 1
    # no "for <...>" with several recipients (it would reveal bcc)
    assert b"\tfor <" not in smtptest.inbox(smtp_daemon, BOB)[0]


def test_no_relay_and_unknown_users(smtp_daemon):
    raw = smtptest.Raw(smtp_daemon)
    raw.cmd("EHLO client.example.net")
    assert raw.cmd("MAIL FROM:<a@example.org>")[0] == 250
    code, lines = raw.cmd("RCPT TO:<victim@elsewhere.example>")
    assert code == 550 and lines[0].startswith("550 5.")
    code, lines = raw.cmd("RCPT TO:<nobody@example.com>")
    assert code == 550 and "5.1.1" in lines[0]
    # source routes are ignored, not followed
    assert raw.cmd("RCPT TO:<@relay.example:victim@elsewhere.example>")[0] == 550
    # percent hack and bang paths are just local parts of a remote domain
    assert raw.cmd("RCPT TO:<victim%elsewhere.example@example.org>")[0] == 550
    assert raw.cmd("DATA")[0] == 554      # no valid recipient
    raw.close()


def test_postmaster_without_domain(workdir):
    d = smtptest.start_daemon(workdir, users=(ALICE, "postmaster@example.com"))
    try:
        raw = smtptest.Raw(d)
        raw.cmd("EHLO client.example.net")
        raw.cmd("MAIL FROM:<>")
        assert raw.cmd("RCPT TO:<Postmaster>")[0] == 250
        assert raw.cmd("DATA")[0] == 354
        raw.send("Subject: pm\r\n\r\nhi\r\n.\r\n")
        assert raw.reply()[0] == 250
        raw.close()
        assert len(smtptest.inbox(d, "postmaster@example.com")) == 1
    finally:
        d.stop()


def test_command_order_errors(smtp_daemon):
    raw = smtptest.Raw(smtp_daemon)
    assert raw.cmd("MAIL FROM:<a@example.org>")[0] == 503     # before EHLO
    raw.cmd("EHLO client.example.net")
    assert raw.cmd(f"RCPT TO:<{ALICE}>")[0] == 503           # before MAIL
    assert raw.cmd("DATA")[0] == 503
    assert raw.cmd("MAIL FROM:<a@example.org>")[0] == 250
    assert raw.cmd("MAIL FROM:<a@example.org>")[0] == 503     # nested
    assert raw.cmd("DATA")[0] == 554                          # no recipients
    assert raw.cmd("RSET")[0] == 250
    assert raw.cmd(f"RCPT TO:<{ALICE}>")[0] == 503           # RSET forgot MAIL
    assert raw.cmd("FROB")[0] == 500
    raw.close()


@pytest.mark.parametrize("arg,code", [
    ("FROM:a@example.org", 501),            # no brackets
    ("FROM:<a@example.org", 501),
    ("FROM:<a..b@example.org>", 501),
    ("FROM:<a@exa_mple.org>", 501),
    ("FROM:<@>", 501),
    ("FROM:<a@example.org> FOO=BAR", 555),
    ("FROM:<a@example.org> SIZE=abc", 501),
    ("FROM:<a@example.org> BODY=BINARYMIME", 501),
    ("FROM:<a@example.org> RET=MAYBE", 501),
    ("FROM:<a@example.org> ENVID=bad+zz", 501),
    ("FROM:<a@example.org> SIZE=99999999999", 552),
    ("FROM:<ü@example.org>", 553),          # UTF-8 without SMTPUTF8
    ("TO:<a@example.org>", 501),
])
def test_mail_syntax_errors(smtp_daemon, arg, code):
    raw = smtptest.Raw(smtp_daemon)
    raw.cmd("EHLO client.example.net")
    got, lines = raw.cmd("MAIL " + arg)
    assert got == code, lines
    assert lines[0][4:5] in "45" and lines[0][5] == "."   # enhanced code
    # the session goes on
    assert raw.cmd("MAIL FROM:<ok@example.org>")[0] == 250
    raw.close()


def test_dsn_and_smtputf8_parameters(smtp_daemon):
    raw = smtptest.Raw(smtp_daemon)
    raw.cmd("EHLO client.example.net")
    assert raw.cmd("MAIL FROM:<ü@exämple.org> SMTPUTF8 BODY=8BITMIME "
                   "RET=HDRS ENVID=abc+2Bdef SIZE=100")[0] == 250
    assert raw.cmd(f"RCPT TO:<{ALICE}> NOTIFY=SUCCESS,FAILURE "
                   "ORCPT=rfc822;alice+40example.com")[0] == 250
    assert raw.cmd(f"RCPT TO:<{BOB}> NOTIFY=NEVER,SUCCESS")[0] == 501
    assert raw.cmd(f"RCPT TO:<{BOB}> NOTIFY=SOMETIMES")[0] == 501
    assert raw.cmd(f"RCPT TO:<{BOB}> ORCPT=nosemicolon")[0] == 501
    assert raw.cmd(f"RCPT TO:<{BOB}> XYZ=1")[0] == 555
    assert raw.cmd("DATA")[0] == 354
    raw.send("Subject: ümlaut\r\n\r\nkörper\r\n.\r\n".encode())
    assert raw.reply()[0] == 250
    raw.close()
    msg = smtptest.inbox(smtp_daemon, ALICE)[0]
    assert "Return-Path: <ü@exämple.org>".encode() in msg
    assert b"with UTF8SMTP id" in msg
    assert "körper".encode() in msg


def test_helo_takes_no_parameters(smtp_daemon):
    raw = smtptest.Raw(smtp_daemon)
    raw.cmd("HELO client.example.net")
    assert raw.cmd("MAIL FROM:<a@example.org> SIZE=10")[0] == 555
    assert raw.cmd("MAIL FROM:<a@example.org>")[0] == 250
    raw.close()


def test_dot_stuffing_and_smuggling(smtp_daemon):
    raw = smtptest.Raw(smtp_daemon)
    raw.cmd("EHLO client.example.net")
    raw.cmd("MAIL FROM:<a@example.org>")
    raw.cmd(f"RCPT TO:<{ALICE}>")
    assert raw.cmd("DATA")[0] == 354
    # "\n.\r\n" and "\r\n.\n" are not the end of the data: a second
    # message smuggled behind them must not be accepted separately.
    raw.send(b"Subject: one\r\n\r\nbody\n.\r\nMAIL FROM:<evil@example.org>\r\n"
             b"..two dots\r\n.\nRCPT TO:<bob@example.com>\r\n.\r\n")
    code, lines = raw.reply()
    assert code == 250
    assert raw.cmd("NOOP")[0] == 250     # nothing else was read as commands
    raw.close()
    msgs = smtptest.inbox(smtp_daemon, ALICE)
    assert len(msgs) == 1
    assert b"MAIL FROM:<evil@example.org>\n.two dots\n" in msgs[0]
    assert smtptest.inbox(smtp_daemon, BOB) == []


def test_pipelining(smtp_daemon):
    raw = smtptest.Raw(smtp_daemon)
    raw.send(f"EHLO c.example.net\r\nMAIL FROM:<a@example.org>\r\n"
             f"RCPT TO:<{ALICE}>\r\nRCPT TO:<ghost@example.com>\r\n"
             f"RCPT TO:<{BOB}>\r\nDATA\r\n")
    codes = [raw.reply()[0] for _ in range(6)]
    assert codes == [250, 250, 250, 550, 250, 354]
    raw.send("Subject: piped\r\n\r\nx\r\n.\r\nMAIL FROM:<b@example.org>\r\n"
             f"RCPT TO:<{BOB}>\r\nDATA\r\n")
    assert [raw.reply()[0] for _ in range(4)] == [250, 250, 250, 354]
    raw.send("Subject: piped 2\r\n\r\ny\r\n.\r\nQUIT\r\n")
    assert [raw.reply()[0] for _ in range(2)] == [250, 221]
    raw.close()
    assert len(smtptest.inbox(smtp_daemon, BOB)) == 2


def test_size_limit_enforced_while_reading(workdir):
    d = smtptest.start_daemon(workdir, extra="smtp_max_message_size = 64K")
    try:
        raw = smtptest.Raw(d)
        raw.cmd("EHLO client.example.net")
        raw.cmd("MAIL FROM:<a@example.org>")
        raw.cmd(f"RCPT TO:<{ALICE}>")
        raw.cmd("DATA")
        line = b"x" * 998 + b"\r\n"
        raw.send(b"Subject: big\r\n\r\n" + line * 200 + b".\r\n")
        code, lines = raw.reply()
        assert code == 552 and "5.3.4" in lines[0]
        assert raw.cmd("NOOP")[0] == 250
        raw.close()
        assert smtptest.inbox(d, ALICE) == []
        # nothing half-stored: tmp/ is empty again
        tmp = os.path.join(smtptest.maildir_path(d, ALICE), "tmp")
        assert not os.path.isdir(tmp) or os.listdir(tmp) == []
    finally:
        d.stop()


def test_recipient_limit(workdir):
    d = smtptest.start_daemon(workdir, extra="smtp_max_recipients = 100")
    try:
        raw = smtptest.Raw(d)
        raw.cmd("EHLO client.example.net")
        raw.cmd("MAIL FROM:<a@example.org>")
        for _ in range(100):
            assert raw.cmd(f"RCPT TO:<{ALICE}>")[0] == 250
        code, lines = raw.cmd(f"RCPT TO:<{BOB}>")
        assert code == 452 and "4.5.3" in lines[0]
        raw.close()
    finally:
        d.stop()


def test_error_limit_closes(workdir):
    d = smtptest.start_daemon(workdir, extra="smtp_max_errors = 5")
    try:
        raw = smtptest.Raw(d)
        for _ in range(4):
            assert raw.cmd("BOGUS")[0] == 500
        raw.send("BOGUS\r\n")
        assert raw.reply()[0] == 500
        assert raw.reply()[0] == 421
        assert raw.closed()
    finally:
        d.stop()


def test_long_line_and_nul(smtp_daemon):
    raw = smtptest.Raw(smtp_daemon)
    raw.cmd("EHLO client.example.net")
    code, lines = raw.cmd("NOOP " + "x" * 10000)
    assert code == 500 and "5.5.2" in lines[0]
    assert raw.cmd("NOOP\0x")[0] == 500
    assert raw.cmd("NOOP")[0] == 250
    raw.close()


def test_starttls_on_port_25(smtp_daemon):
    with smtptest.smtp(smtp_daemon) as s:
        s.starttls(context=smtptest.tls_context())
        s.ehlo("client.example.net")
        assert not s.has_extn("starttls")
        s.sendmail("a@example.org", [ALICE], smtptest.message("tls"))
    msg = smtptest.inbox(smtp_daemon, ALICE)[0]
    assert b"with ESMTPS id" in msg and b"using TLSv1." in msg


def test_starttls_drops_pipelined_plaintext(smtp_daemon):
    raw = smtptest.Raw(smtp_daemon)
    raw.cmd("EHLO client.example.net")
    # a command injected behind STARTTLS must not run inside TLS
    raw.send("STARTTLS\r\nMAIL FROM:<injected@example.org>\r\n")
    assert raw.reply()[0] == 220
    sock = smtptest.tls_context().wrap_socket(raw.sock, server_hostname="x")
    raw.sock = sock
    code, _ = raw.cmd("EHLO client.example.net")
    assert code == 250
    assert raw.cmd("MAIL FROM:<a@example.org>")[0] == 250   # not nested
    raw.close()


def test_auth_refused_on_port_25(smtp_daemon):
    raw = smtptest.Raw(smtp_daemon)
    raw.cmd("EHLO client.example.net")
    assert raw.cmd("AUTH PLAIN AGFsaWNlAHg=")[0] == 503
    raw.close()


def test_idle_timeout(workdir):
    d = smtptest.start_daemon(workdir, extra="smtp_client_timeout = 1s")
    try:
        raw = smtptest.Raw(d)
        raw.cmd("EHLO client.example.net")
        start = time.monotonic()
        code, lines = raw.reply()
        assert code == 421 and "4.4.2" in lines[0]
        assert raw.closed()
        assert time.monotonic() - start < 5
        # a slowloris trickling a DATA body is cut off too
        raw = smtptest.Raw(d)
        raw.cmd("EHLO client.example.net")
        raw.cmd("MAIL FROM:<a@example.org>")
        raw.cmd(f"RCPT TO:<{ALICE}>")
        raw.cmd("DATA")
        raw.send("Subject: slow\r\n")
        assert raw.closed(timeout=5)
        assert smtptest.inbox(d, ALICE) == []
    finally:
        d.stop()


def test_trickling_client_is_cut_off(workdir):
    """A slowloris that keeps sending a byte now and then (so no single
    wait times out) must still finish a command line, and keep message
    data coming at a minimum rate, or be disconnected."""
    d = smtptest.start_daemon(workdir, extra="smtp_client_timeout = 1s")
    try:
        for prelude in ([], ["EHLO c.example.net", "MAIL FROM:<a@example.org>",
                             f"RCPT TO:<{ALICE}>", "DATA"]):
            raw = smtptest.Raw(d)
            for line in prelude:
                raw.cmd(line)
            start = time.monotonic()
            closed = False
            while time.monotonic() - start < 10:
                try:
                    raw.send(b"x")
                except OSError:
                    closed = True
                    break
                if raw.closed(timeout=0.3):
                    closed = True
                    break
            assert closed, "a trickling client was never cut off"
            assert time.monotonic() - start < 5
            assert b"421 4.4.2" in raw.buf
        assert smtptest.inbox(d, ALICE) == []
    finally:
        d.stop()


def test_flood_without_reading_is_bounded(smtp_daemon):
    """A client that pipelines megabytes of commands and never reads the
    replies must not grow the server; others are still served."""
    flood = socket.create_connection(("127.0.0.1", smtp_daemon.ports["smtp"]))
    flood.setblocking(False)
    sent = 0
    chunk = b"NOOP\r\n" * 10000
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and sent < 50 * 1024 * 1024:
        try:
            sent += flood.send(chunk)
        except BlockingIOError:
            time.sleep(0.01)
    # TCP buffers fill and the server stops reading: far less than 50 MB
    assert sent < 50 * 1024 * 1024
    with smtptest.smtp(smtp_daemon) as s:
        s.sendmail("a@example.org", [BOB], smtptest.message("still here"))
    flood.close()
    assert len(smtptest.inbox(smtp_daemon, BOB)) == 1


def test_smtplib_send_message_and_bdat(smtp_daemon):
    raw = smtptest.Raw(smtp_daemon)
    raw.cmd("EHLO client.example.net")
    raw.cmd("MAIL FROM:<a@example.org>")
    raw.cmd(f"RCPT TO:<{BOB}>")
    body = b"Subject: bdat\r\n\r\n" + b"y" * 100000 + b"\r\n"
    raw.send(b"BDAT %d LAST\r\n" % len(body) + body)
    assert raw.reply()[0] == 250
    # BDAT without MAIL: the chunk is read and refused, the session goes on
    raw.send(b"BDAT 5 LAST\r\nhello")
    assert raw.reply()[0] == 503
    assert raw.cmd("NOOP")[0] == 250
    raw.close()
    msg = smtptest.inbox(smtp_daemon, BOB)[0]
    assert msg.endswith(b"\n\n" + b"y" * 100000 + b"\n")


def test_drain_says_421(workdir):
    d = smtptest.start_daemon(workdir)
    raw = smtptest.Raw(d)
    raw.cmd("EHLO client.example.net")
    d.signal(signal.SIGTERM)
    code, lines = raw.reply()
    assert code == 421
    d.wait_exit()
    d.stop()


def test_notify_success_for_local_delivery(smtp_daemon):
    """NOTIFY=SUCCESS on a local recipient: the sender (here a local user)
    gets a "delivered" report (RFC 3461/3464) once the message is stored."""
    import email
    raw = smtptest.Raw(smtp_daemon)
    raw.cmd("EHLO client.example.net")
    assert raw.cmd(f"MAIL FROM:<{BOB}> ENVID=env+2B1")[0] == 250
    assert raw.cmd(f"RCPT TO:<{ALICE}> NOTIFY=SUCCESS "
                   f"ORCPT=rfc822;{ALICE}")[0] == 250
    assert raw.cmd("DATA")[0] == 354
    raw.send("Subject: tell me\r\n\r\nhi\r\n.\r\n")
    code, lines = raw.reply()
    assert code == 250 and "delivered" in lines[0]
    raw.close()
    assert len(smtptest.inbox(smtp_daemon, ALICE)) == 1
    msgs = smtptest.wait_inbox(smtp_daemon, BOB, 1, timeout=20)
    assert len(msgs) == 1, "no delivery report"
    report = email.message_from_bytes(msgs[0])
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    status = [p for p in report.walk()
              if p.get_content_type() == "message/delivery-status"][0]
    text = status.as_string()
    assert "Action: delivered" in text and "Status: 2.0.0" in text
    assert "Original-Envelope-Id: env+1" in text or "env+2B1" in text
    assert f"Final-Recipient: rfc822; {ALICE}" in text or \
        f"Final-Recipient: rfc822;{ALICE}" in text
    # NOTIFY=NEVER (the default for the rest) sends nothing more
    time.sleep(0.5)
    assert len(smtptest.inbox(smtp_daemon, BOB)) == 1
