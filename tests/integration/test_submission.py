"""Submission (RFC 6409) on listen_submission (STARTTLS) and
listen_submissions (implicit TLS, RFC 8314): AUTH required, the sender
must be the user, local mail is delivered, remote mail is queued."""
import base64
import json
import smtplib
import time

import pytest

import smtptest
from smtptest import ALICE, BOB, PASSWORD


def test_ehlo_before_and_after_starttls(smtp_daemon):
    raw = smtptest.Raw(smtp_daemon, "submission")
    code, lines = raw.cmd("EHLO client.example.net")
    text = "\n".join(lines)
    assert "STARTTLS" in text
    # 127.0.0.1 is trusted by default, so AUTH is offered in clear here;
    # test_auth_needs_tls_when_untrusted covers the untrusted case.
    raw.close()
    with smtptest.submission(smtp_daemon, user=None) as s:
        assert s.has_extn("auth")
        assert "PLAIN" in s.esmtp_features["auth"].upper()
        assert not s.has_extn("starttls")


def test_auth_needs_tls_when_untrusted(workdir):
    d = smtptest.start_daemon(workdir, extra="trusted_networks = 10.0.0.0/8")
    try:
        raw = smtptest.Raw(d, "submission")
        code, lines = raw.cmd("EHLO client.example.net")
        assert not any("AUTH" in l for l in lines)
        cred = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode()).decode()
        code, lines = raw.cmd(f"AUTH PLAIN {cred}")
        assert code == 538 and "5.7.11" in lines[0]
        raw.close()
        with smtptest.submission(d) as s:      # STARTTLS, then AUTH
            s.sendmail(ALICE, [BOB], smtptest.message("tls only", sender=ALICE,
                                                      to=BOB))
        assert len(smtptest.inbox(d, BOB)) == 1
    finally:
        d.stop()


def test_mail_requires_auth(smtp_daemon):
    with smtptest.submission(smtp_daemon, user=None) as s:
        code, msg = s.mail(ALICE)
        assert code == 530 and b"5.7.0" in msg


def test_auth_plain_login_and_failures(smtp_daemon):
    raw = smtptest.Raw(smtp_daemon, "submission")
    raw.cmd("EHLO client.example.net")
    bad = base64.b64encode(f"\0{ALICE}\0wrong".encode()).decode()
    start = time.monotonic()
    code, lines = raw.cmd(f"AUTH PLAIN {bad}")
    assert code == 535 and "5.7.8" in lines[0]
    assert time.monotonic() - start >= 1.5       # auth_failure_delay
    assert raw.cmd("AUTH PLAIN ====")[0] == 501  # bad base64
    assert raw.cmd("AUTH CRAM-MD5")[0] == 504
    # PLAIN with the response on its own line, then cancel with "*"
    assert raw.cmd("AUTH PLAIN")[0] == 334
    assert raw.cmd("*")[0] == 501
    # LOGIN
    assert raw.cmd("AUTH LOGIN")[0] == 334
    assert raw.cmd(base64.b64encode(ALICE.encode()).decode())[0] == 334
    code, _ = raw.cmd(base64.b64encode(PASSWORD.encode()).decode())
    assert code == 235
    assert raw.cmd("AUTH LOGIN")[0] == 503       # already authenticated
    raw.close()


def test_sender_must_be_the_user(smtp_daemon):
    with smtptest.submission(smtp_daemon) as s:
        code, msg = s.mail(BOB)
        assert code == 553 and b"5.7.1" in msg
        code, msg = s.mail("")
        assert code == 553
        s.rset()
        code, _ = s.mail(ALICE.upper())            # case does not matter
        assert code == 250


@pytest.mark.parametrize("implicit", [False, True])
def test_local_delivery(smtp_daemon, implicit):
    with smtptest.submission(smtp_daemon, implicit=implicit) as s:
        s.sendmail(ALICE, [BOB], smtptest.message("to bob", sender=ALICE, to=BOB))
    msgs = smtptest.inbox(smtp_daemon, BOB)
    assert len(msgs) == 1
    assert b"with ESMTPSA id" in msgs[0]


def test_unknown_local_user(smtp_daemon):
    with smtptest.submission(smtp_daemon) as s:
        s.mail(ALICE)
        code, msg = s.rcpt("ghost@example.com")
        assert code == 550 and b"5.1.1" in msg


def test_remote_recipient_is_queued(smtp_daemon):
    with smtptest.submission(smtp_daemon) as s:
        s.mail(ALICE)
        code, msg = s.rcpt("friend@elsewhere.example")
        if code == 451:
            pytest.fail("the outbound queue is not available: %r" % msg)
        assert code == 250
        code, msg = s.data(smtptest.message("out", sender=ALICE,
                                            to="friend@elsewhere.example"))
        assert code == 250 and b"queued as" in msg
    r = smtp_daemon.ctl("--json", "queue", "list")
    assert r.returncode == 0, r.stderr
    msgs = json.loads(r.stdout)["messages"]
    assert len(msgs) == 1 and msgs[0]["sender"] == ALICE
    r = smtp_daemon.ctl("--json", "queue", "show", msgs[0]["id"])
    assert r.returncode == 0, r.stderr
    assert "friend@elsewhere.example" in r.stdout


def test_auth_failure_limit(workdir):
    d = smtptest.start_daemon(workdir, extra="auth_max_failures = 2\n"
                              "auth_failure_delay = 0")
    try:
        raw = smtptest.Raw(d, "submission")
        raw.cmd("EHLO client.example.net")
        bad = base64.b64encode(f"\0{ALICE}\0wrong".encode()).decode()
        assert raw.cmd(f"AUTH PLAIN {bad}")[0] == 535
        assert raw.cmd(f"AUTH PLAIN {bad}")[0] == 535
        good = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode()).decode()
        code, lines = raw.cmd(f"AUTH PLAIN {good}")
        assert code == 454 and "4.7.0" in lines[0]
        raw.close()
    finally:
        d.stop()
