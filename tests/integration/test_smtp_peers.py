"""Real SMTP/LMTP peers against clustermaild: swaks, curl, Postfix's
smtp-source and a private Postfix relaying to our LMTP.

Each test starts a clustermaild with SMTP (inbound for local_domains =
example.com), submission (STARTTLS, AUTH required), submissions (implicit
TLS), LMTP (trusted networks: loopback), IMAP and POP3, serving a
certificate from a throw-away CA made by the test (cmtest.make_ca), with
the users imaptest.ALICE and imaptest.BOB. Mail sent by a peer is checked
where a user would see it: in the INBOX over IMAP (imaplib) and POP3
(poplib).

The Postfix tests run a private Postfix instance (postfixtest.Postfix: its
own config, queue and data directories, needs root) whose transport map
sends example.com to our LMTP; the same harness against Debian's Dovecot
LMTP (postfixtest.DovecotLmtp) is the control that shows the harness, not
our server, is right when the two disagree. The other way round, a
message submitted to us for a remote domain leaves through our queue with
relayhost = a private Postfix. A test whose peer program is missing (or
that needs root for Postfix) is skipped with the reason.
"""
import os
import poplib
import re
import smtplib
import subprocess
import time

import pytest

import cmtest
import imaptest
import postfixtest
from imaptest import ALICE, BOB, PASSWORD

SERVICES = ["smtp", "submission", "submissions", "lmtp", "imap", "pop3"]
SENDER = "carol@sender.test"


def need(*programs):
    for p in programs:
        if not cmtest.have(p):
            pytest.skip(f"{p} is not installed")


@pytest.fixture
def pki(workdir):
    """(ca_cert, server_cert, server_key): a CA and a leaf for localhost
    and 127.0.0.1 signed by it."""
    ca = cmtest.make_ca(str(workdir))
    cert, key = cmtest.make_cert_signed_by(str(workdir), ca, name="leaf")
    return ca[0], cert, key


@pytest.fixture
def d(workdir, pki):
    daemon = cmtest.Daemon(workdir, services=SERVICES)
    daemon.cert, daemon.key = pki[1], pki[2]
    daemon.write_config()
    spool = os.path.join(str(workdir), "spool")
    os.makedirs(spool, exist_ok=True)
    cmtest.prepare_workdir(spool)
    for u in (ALICE, BOB):
        imaptest.add_user(daemon, u)
    daemon.start()
    yield daemon
    daemon.stop()
    log = daemon.read_log()
    for marker in ("ERROR: AddressSanitizer", "runtime error:",
                   "ERROR: LeakSanitizer"):
        assert marker not in log, log[log.index(marker) - 200:][:3000]


def run(argv, timeout=60, **kw):
    return subprocess.run(argv, capture_output=True, text=True,
                          timeout=timeout, **kw)


def inbox(daemon, user=ALICE):
    """{Subject: full message bytes} of user's INBOX, over IMAP."""
    m = imaptest.login(daemon, user)
    try:
        typ, data = m.select("INBOX", readonly=True)
        assert typ == "OK"
        out = {}
        if int(data[0]) == 0:
            return out
        typ, data = m.fetch("1:*", "(BODY.PEEK[])")
        assert typ == "OK"
        for item in data:
            if isinstance(item, tuple):
                msg = item[1]
                subject = ""
                for line in msg.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
                    if line.lower().startswith(b"subject:"):
                        subject = line[8:].strip().decode()
                out.setdefault(subject, msg)
        return out
    finally:
        m.logout()


def inbox_count(daemon, user=ALICE):
    m = imaptest.login(daemon, user)
    try:
        typ, data = m.select("INBOX", readonly=True)
        assert typ == "OK"
        return int(data[0])
    finally:
        m.logout()


def wait_count(daemon, n, user=ALICE, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        c = inbox_count(daemon, user)
        if c >= n or time.monotonic() > deadline:
            return c
        time.sleep(0.1)


def pop_messages(daemon, user=ALICE):
    """Every message of user's maildrop over POP3, as bytes."""
    p = poplib.POP3("127.0.0.1", daemon.ports["pop3"], timeout=30)
    try:
        p.user(user)
        p.pass_(PASSWORD)
        count, _ = p.stat()
        return [b"\r\n".join(p.retr(i)[1]) for i in range(1, count + 1)]
    finally:
        p.quit()


# ---- swaks ------------------------------------------------------------------

def swaks(daemon, service, *args):
    need("swaks")
    if service in ("submission", "submissions"):
        support = run(["swaks", "--support"]).stdout
        if "=== TLS supported" not in support:
            pytest.skip("swaks without TLS (needs libnet-ssleay-perl)")
    return run(["swaks", "-s", "127.0.0.1", "-p", str(daemon.ports[service]),
                "--timeout", "20", *args])


def replies(out):
    """The final reply codes in swaks' transcript, in order ("<-  250 ..."
    plain, "<~  " over TLS, "<** "/"<~* " for the ones swaks calls errors)."""
    return [m.group(1) for m in
            re.finditer(r"^<(?:-|~|\*\*|~\*) +(\d{3}) ", out, re.M)]


def test_swaks_smtp_inbound(d):
    r = swaks(d, "smtp", "-f", SENDER, "-t", ALICE,
              "--header", "Subject: swaks inbound",
              "--body", "Hello from swaks.")
    assert r.returncode == 0, r.stdout + r.stderr
    assert replies(r.stdout)[-2:] == ["250", "221"], r.stdout
    msg = inbox(d)["swaks inbound"]
    assert b"Hello from swaks." in msg
    # the trace fields a delivery adds (RFC 5321 4.4)
    head = msg.split(b"\r\n\r\n", 1)[0]
    assert head.startswith(f"Return-Path: <{SENDER}>\r\n".encode()), head
    assert b"\r\nReceived: from " in head, head


def test_swaks_smtp_unknown_user_and_relay_refused(d):
    r = swaks(d, "smtp", "-f", SENDER, "-t", "nobody@example.com")
    assert r.returncode != 0
    assert "550" in replies(r.stdout), r.stdout
    r = swaks(d, "smtp", "-f", SENDER, "-t", "someone@elsewhere.test")
    assert r.returncode != 0
    assert {"550", "554"} & set(replies(r.stdout)), r.stdout  # no relay
    assert inbox_count(d) == 0


def test_swaks_submission_starttls_auth(d, pki):
    # without AUTH: refused
    r = swaks(d, "submission", "-f", ALICE, "-t", BOB, "-tls",
              "--tls-verify", "--tls-ca-path", pki[0])
    assert r.returncode != 0
    assert "530" in r.stdout, r.stdout
    # STARTTLS with a verified certificate, then AUTH PLAIN
    r = swaks(d, "submission", "-f", ALICE, "-t", BOB, "-tls",
              "--tls-verify", "--tls-ca-path", pki[0],
              "-a", "PLAIN", "-au", ALICE, "-ap", PASSWORD,
              "--header", "Subject: swaks submission",
              "--body", "Submitted over STARTTLS.")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "=== TLS started" in r.stdout and "235" in replies(r.stdout)
    assert r.stdout.index("STARTTLS") < r.stdout.index("AUTH PLAIN ")
    assert b"Submitted over STARTTLS." in inbox(d, BOB)["swaks submission"]


def test_swaks_submission_bad_password_and_wrong_sender(d, pki):
    r = swaks(d, "submission", "-f", ALICE, "-t", BOB, "-tls",
              "-a", "PLAIN", "-au", ALICE, "-ap", "wrong password")
    assert r.returncode != 0
    assert "535" in r.stdout, r.stdout
    # authenticated as alice, claiming to be bob
    r = swaks(d, "submission", "-f", BOB, "-t", ALICE, "-tls",
              "-a", "PLAIN", "-au", ALICE, "-ap", PASSWORD)
    assert r.returncode != 0
    assert any(c.startswith("5") for c in replies(r.stdout)), r.stdout
    assert inbox_count(d, ALICE) == 0 and inbox_count(d, BOB) == 0


def test_swaks_submissions_implicit_tls(d, pki):
    r = swaks(d, "submissions", "-f", ALICE, "-t", BOB, "-tlsc",
              "--tls-verify", "--tls-ca-path", pki[0],
              "-a", "LOGIN", "-au", ALICE, "-ap", PASSWORD,
              "--header", "Subject: swaks submissions",
              "--body", "Submitted over implicit TLS.")
    assert r.returncode == 0, r.stdout + r.stderr
    assert b"implicit TLS" in inbox(d, BOB)["swaks submissions"]


def test_swaks_submissions_untrusted_ca_fails(d, workdir):
    other = cmtest.make_ca(str(workdir), name="other", cn="someone else")
    r = swaks(d, "submissions", "-f", ALICE, "-t", BOB, "-tlsc",
              "--tls-verify", "--tls-ca-path", other[0],
              "-a", "PLAIN", "-au", ALICE, "-ap", PASSWORD)
    assert r.returncode != 0
    # the handshake fails on the client's verification: nothing was said
    assert "TLS" in r.stdout + r.stderr, r.stdout + r.stderr
    assert "235" not in replies(r.stdout) and "AUTH" not in r.stdout
    assert inbox_count(d, BOB) == 0


def test_swaks_lmtp_per_recipient_replies(d):
    r = swaks(d, "lmtp", "--protocol", "LMTP", "-f", SENDER,
              "-t", f"{ALICE},nobody@example.com,{BOB}",
              "--header", "Subject: swaks lmtp", "--body", "Via LMTP.")
    out = r.stdout
    assert "LHLO" in out
    # MAIL 250, RCPT 250 550 250, DATA 354, then one reply per accepted
    # recipient (RFC 2033 4.2), QUIT 221
    codes = replies(out)
    assert codes[codes.index("354") - 4:] == [
        "250", "250", "550", "250", "354", "250", "250", "221"], out
    assert b"Via LMTP." in inbox(d, ALICE)["swaks lmtp"]
    assert b"Via LMTP." in inbox(d, BOB)["swaks lmtp"]


# ---- curl -------------------------------------------------------------------

def curl_send(daemon, url, rcpts, subject, *extra, sender=SENDER,
              workdir=None):
    need("curl")
    path = os.path.join(workdir, f"{subject.replace(' ', '_')}.eml")
    with open(path, "w") as f:
        f.write(f"From: <{sender}>\r\nTo: <{rcpts[0]}>\r\n"
                f"Subject: {subject}\r\n\r\nSent by curl.\r\n")
    argv = ["curl", "-sS", "--max-time", "30", url, "--mail-from", sender,
            "-T", path, *extra]
    for r in rcpts:
        argv += ["--mail-rcpt", r]
    return run(argv)


def test_curl_smtp(d, workdir):
    r = curl_send(d, f"smtp://127.0.0.1:{d.ports['smtp']}", [ALICE, BOB],
                  "curl smtp", workdir=workdir)
    assert r.returncode == 0, r.stderr
    assert b"Sent by curl." in inbox(d, ALICE)["curl smtp"]
    assert b"Sent by curl." in inbox(d, BOB)["curl smtp"]


def test_curl_submission_starttls(d, workdir, pki):
    url = f"smtp://127.0.0.1:{d.ports['submission']}"
    r = curl_send(d, url, [BOB], "curl starttls", "--ssl-reqd",
                  "--cacert", pki[0], "--user", f"{ALICE}:{PASSWORD}",
                  sender=ALICE, workdir=workdir)
    assert r.returncode == 0, r.stderr
    assert "curl starttls" in inbox(d, BOB)
    # no credentials: curl reports the refusal (530 at MAIL FROM)
    r = curl_send(d, url, [BOB], "curl noauth", "--ssl-reqd",
                  "--cacert", pki[0], sender=ALICE, workdir=workdir)
    assert r.returncode != 0
    assert "curl noauth" not in inbox(d, BOB)


def test_curl_smtps(d, workdir, pki):
    url = f"smtps://127.0.0.1:{d.ports['submissions']}"
    r = curl_send(d, url, [BOB], "curl smtps", "--cacert", pki[0],
                  "--user", f"{ALICE}:{PASSWORD}", sender=ALICE,
                  workdir=workdir)
    assert r.returncode == 0, r.stderr
    assert "curl smtps" in inbox(d, BOB)


# ---- smtp-source ----------------------------------------------------------

def smtp_source(port, *args):
    need("smtp-source")
    return run(["smtp-source", *args, f"127.0.0.1:{port}"], timeout=120)


def test_smtp_source_smtp_many_sessions(d):
    # 5 sessions in parallel, 60 messages of ~2 KB, a new connection for
    # every message (smtp-source's default)
    r = smtp_source(d.ports["smtp"], "-s", "5", "-m", "60",
                    "-l", "2000", "-f", SENDER, "-t", ALICE,
                    "-S", "smtp-source smtp")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "fatal" not in r.stderr, r.stderr
    assert wait_count(d, 60) == 60


def test_smtp_source_lmtp_many_sessions(d):
    # LMTP (-L): 4 sessions, 40 messages, each session keeping its
    # connection for the next message (-d), as an MTA's LMTP client does
    r = smtp_source(d.ports["lmtp"], "-L", "-d", "-s", "4", "-m", "40",
                    "-l", "3000", "-f", SENDER, "-t", BOB,
                    "-S", "smtp-source lmtp")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "fatal" not in r.stderr, r.stderr
    assert wait_count(d, 40, user=BOB) == 40
    assert inbox_count(d, ALICE) == 0


def test_smtp_source_refused_recipient_is_reported(d):
    r = smtp_source(d.ports["smtp"], "-s", "1", "-m", "1",
                    "-f", SENDER, "-t", "nobody@example.com")
    assert r.returncode == 1
    assert "recipient rejected: 550" in r.stderr, r.stderr
    assert inbox_count(d, ALICE) == 0


# ---- Postfix -> LMTP ------------------------------------------------------

@pytest.fixture
def postfix_to(request, workdir):
    """A factory: postfix_to(lmtp_port) -> a started private Postfix that
    sends example.com to lmtp:inet:127.0.0.1:lmtp_port. Stopped (every
    process) at the end of the test."""
    reason = postfixtest.postfix_unavailable()
    if reason:
        pytest.skip(reason)
    made = []

    def make(lmtp_port, **kw):
        pf = postfixtest.Postfix(
            cmtest.free_port(),
            routes={"example.com": f"lmtp:inet:127.0.0.1:{lmtp_port}"}, **kw)
        made.append(pf)
        return pf.start()
    yield make
    for pf in made:
        pf.cleanup()
        assert not pf.processes(), "postfix processes left behind"


def send_via(pf, rcpts, subject, body="Relayed by Postfix.\r\n"):
    with smtplib.SMTP("127.0.0.1", pf.port, timeout=30) as s:
        refused = s.sendmail(
            SENDER, rcpts,
            (f"From: <{SENDER}>\r\nTo: <{rcpts[0]}>\r\nSubject: {subject}\r\n"
             f"Message-ID: <{subject.replace(' ', '.')}@sender.test>\r\n\r\n"
             + body).encode())
    assert refused == {}


def test_postfix_harness_with_dovecot_lmtp(postfix_to):
    """The control: the same Postfix harness into Debian's Dovecot LMTP."""
    reason = postfixtest.dovecot_unavailable()
    if reason:
        pytest.skip(reason)
    with postfixtest.DovecotLmtp(cmtest.free_port(),
                                 cmtest.mail_user()) as dv:
        pf = postfix_to(dv.port)
        send_via(pf, [ALICE, BOB], "to dovecot")
        pf.wait_queue_empty(30)
        assert postfixtest.maildir_count(dv.maildir(ALICE)) == 1
        assert postfixtest.maildir_count(dv.maildir(BOB)) == 1
        assert "status=sent" in pf.log_text()


def test_postfix_relays_to_our_lmtp(d, postfix_to):
    pf = postfix_to(d.ports["lmtp"])
    body = "Relayed by Postfix.\r\n" + "".join(
        f"line {i} .with a dot\r\n" for i in range(200)) + ".leading dot\r\n"
    send_via(pf, [ALICE, BOB], "via postfix", body)
    pf.wait_queue_empty(30)
    log = pf.log_text()
    assert log.count("status=sent") == 2, log[-3000:]
    assert f"relay=127.0.0.1[127.0.0.1]:{d.ports['lmtp']}" in log
    # IMAP: both users got it, byte for byte the body Postfix was given
    for user in (ALICE, BOB):
        msg = inbox(d, user)["via postfix"]
        assert msg.endswith(body.encode()), msg[-300:]
        # Postfix's own trace header came through
        assert b"by postfix-test.invalid (Postfix)" in msg
    # POP3 sees the same message
    popped = pop_messages(d, ALICE)
    assert len(popped) == 1
    assert b"Subject: via postfix" in popped[0]
    assert b".leading dot" in popped[0]


def test_postfix_lmtp_unknown_recipient_bounced(d, postfix_to):
    pf = postfix_to(d.ports["lmtp"])
    send_via(pf, [ALICE, "nobody@example.com"], "one unknown")
    pf.wait_queue_empty(30)
    log = pf.log_text()
    # the known recipient delivered, the unknown one refused permanently by
    # our LMTP (Postfix bounces it to the sender; the bounce itself is
    # refused by this instance's error transport, which is fine here)
    assert "to=<alice@example.com>" in log and "status=sent" in log
    assert "to=<nobody@example.com>" in log
    assert "status=bounced" in log, log[-3000:]
    assert "one unknown" in inbox(d, ALICE)


def test_postfix_many_messages_to_our_lmtp(d, postfix_to):
    need("smtp-source")
    pf = postfix_to(d.ports["lmtp"])
    r = smtp_source(pf.port, "-s", "10", "-m", "200", "-l", "4096",
                    "-f", SENDER, "-t", ALICE, "-S", "postfix burst")
    assert r.returncode == 0, r.stdout + r.stderr
    pf.wait_queue_empty(120)
    assert wait_count(d, 200) == 200
    assert "status=deferred" not in pf.log_text()


def test_postfix_retries_while_our_lmtp_is_down(d, postfix_to):
    """Postfix defers while nothing listens, delivers once we are back."""
    port = cmtest.free_port()
    pf = postfix_to(port)
    send_via(pf, [ALICE], "after retry")
    deadline = time.monotonic() + 20
    while "status=deferred" not in pf.log_text():
        assert time.monotonic() < deadline, pf.log_tail()
        time.sleep(0.1)
    assert pf.queue_entries(), "the message left the queue"
    # now point the daemon's LMTP at that port and restart it
    d.stop()
    d.ports["lmtp"] = port
    d.write_config()
    d.start()
    pf.flush()
    pf.wait_queue_empty(30)
    assert "after retry" in inbox(d, ALICE)


def test_our_queue_relays_through_postfix(d):
    """Outbound: a message submitted to us for a remote domain leaves
    through our queue to relayhost = a private Postfix, which hands it to
    Dovecot's LMTP (Postfix as the receiving peer of our SMTP client)."""
    reason = (postfixtest.postfix_unavailable()
              or postfixtest.dovecot_unavailable())
    if reason:
        pytest.skip(reason)
    with postfixtest.DovecotLmtp(cmtest.free_port(),
                                 cmtest.mail_user()) as dv:
        pf = postfixtest.Postfix(
            cmtest.free_port(),
            routes={"remote.test": f"lmtp:inet:127.0.0.1:{dv.port}"})
        try:
            pf.start()
            d.stop()
            d.write_config(extra=f"relayhost = [127.0.0.1]:{pf.port}\n"
                           "queue_tls = none\n")
            d.start()
            with smtplib.SMTP("127.0.0.1", d.ports["submission"],
                              timeout=30) as s:
                s.starttls()
                s.login(ALICE, PASSWORD)
                s.sendmail(ALICE, ["dave@remote.test"],
                           b"From: <alice@example.com>\r\n"
                           b"To: <dave@remote.test>\r\n"
                           b"Subject: outbound via postfix\r\n\r\n"
                           b"Leaving through the queue.\r\n")
            maildir = dv.maildir("dave@remote.test")
            deadline = time.monotonic() + 30
            while postfixtest.maildir_count(maildir) < 1:
                assert time.monotonic() < deadline, (
                    d.read_log()[-3000:] + pf.log_tail())
                time.sleep(0.1)
            pf.wait_queue_empty(30)
            log = pf.log_text()
            # Postfix received it from our queue's SMTP client
            assert "from=<alice@example.com>" in log, log[-3000:]
            assert "to=<dave@remote.test>" in log
            assert "status=sent" in log
            name = os.listdir(os.path.join(maildir, "new"))[0]
            with open(os.path.join(maildir, "new", name), "rb") as f:
                msg = f.read()
            assert b"Subject: outbound via postfix" in msg
            assert b"Leaving through the queue." in msg
        finally:
            pf.cleanup()
            assert not pf.processes()
