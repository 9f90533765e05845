"""`clustermailctl user kick` on one node: every session of the user ends
(IMAP, POP3, authenticated submission) with the protocol's own last word,
a POP3 session ends without its UPDATE state, and other users' sessions
carry on. (test_cluster.py checks that the kick reaches other nodes.)"""
import poplib

import pytest

import imaptest
import smtptest

ALICE, BOB, PASSWORD = imaptest.ALICE, imaptest.BOB, imaptest.PASSWORD


def pop(daemon, user):
    p = poplib.POP3("127.0.0.1", daemon.ports["pop3"], timeout=30)
    p.user(user)
    p.pass_(PASSWORD)
    return p


@pytest.fixture
def mail_daemon(workdir):
    d = smtptest.start_daemon(workdir)
    yield d
    d.stop()


def test_kick_ends_imap_pop3_and_submission_sessions(mail_daemon):
    d = mail_daemon
    for n in (1, 2):
        imaptest.deliver(d, ALICE, smtptest.message(subject=f"kick {n}"))
    imap = imaptest.Raw(d).login()
    assert imap.cmd("s SELECT INBOX")[1].startswith("s OK")
    p = pop(d, ALICE)
    assert p.stat()[0] == 2
    p.dele(1)
    sub = smtptest.submission(d)
    bob_imap = imaptest.Raw(d).login(user=BOB)
    bob_pop = pop(d, BOB)

    out = d.ctl("user", "kick", ALICE)
    assert out.returncode == 0, out.stderr

    assert imap.line().startswith("* BYE"), "IMAP session not ended"
    with pytest.raises(poplib.error_proto) as err:
        p.noop()
    assert b"[SYS/TEMP]" in err.value.args[0], err.value.args
    code, text = sub.noop()
    assert code == 421 and b"administrator" in text, (code, text)

    # The POP3 session never reached UPDATE: both messages are there.
    again = pop(d, ALICE)
    assert again.stat()[0] == 2
    again.quit()
    # Bob was not touched.
    assert bob_imap.cmd("n NOOP")[1].startswith("n OK")
    assert bob_pop.noop().startswith(b"+OK")
    bob_pop.quit()
    bob_imap.close()
    imap.close()
    log = d.read_log()
    assert "pop3: ending 1 session of alice@example.com" in log
    assert "smtp: ending 1 authenticated session of alice@example.com" in log
