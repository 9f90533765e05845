"""A full disk: the spool on a small tmpfs that fills up.

What a user and an admin must see: every delivery that was acknowledged is
there, every refused one left nothing behind (no half-stored message, no
stray tmp/ file), the LDA says "temporary failure" (75) so the MTA retries,
IMAP APPEND answers NO and the session - and the server - keep working,
the index check is clean, and once there is space again mail flows again.
"""
import os
import subprocess

import pytest

import cmtest
import imaptest
from imaptest import ALICE

EX_TEMPFAIL = 75


@pytest.fixture
def small_spool(workdir):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    spool = os.path.join(workdir, "spool")
    os.mkdir(spool)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m,mode=0755",
                        "tmpfs", spool], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    cmtest.prepare_workdir(spool)
    try:
        yield spool
    finally:
        subprocess.run(["umount", "-l", spool], capture_output=True)


def lda(daemon, data):
    return subprocess.run([cmtest.binary("clustermailctl"), "-c", daemon.conf,
                           "deliver", ALICE], input=data,
                          capture_output=True, timeout=60)


def message(n, size):
    body = (f"line {n} " * 16 + "\n") * (size // 130)
    return f"Subject: fill {n}\n\n{body}".encode()


def test_full_disk(workdir, small_spool):
    d = imaptest.start_daemon(workdir)
    try:
        m = imaptest.login(d)       # creates the spool and its folders
        acknowledged = 0
        for n in range(200):
            r = lda(d, message(n, 100 * 1024))
            if r.returncode != 0:
                assert r.returncode == EX_TEMPFAIL, r.stderr
                break
            acknowledged += 1
        else:
            pytest.fail("a 3 MiB spool took 20 MB of mail")
        assert acknowledged >= 10, acknowledged

        # Everything acknowledged is there, nothing else.
        typ, data = m.select("INBOX")
        assert typ == "OK" and int(data[0]) == acknowledged
        inbox = os.path.join(small_spool, "example.com", "alice")
        assert os.listdir(os.path.join(inbox, "tmp")) == []

        # APPEND is refused with NO; the session and the server go on.
        typ, data = m.append("INBOX", None, None,
                             message(999, 400 * 1024).replace(b"\n", b"\r\n"))
        assert typ == "NO", data
        assert m.noop()[0] == "OK"
        other = imaptest.login(d)
        assert other.select("INBOX")[0] == "OK"
        other.logout()
        assert os.listdir(os.path.join(inbox, "tmp")) == []

        r = d.ctl("index", "check", ALICE, "INBOX")
        assert r.returncode == 0, r.stdout + r.stderr

        # Space again: mail flows again, and the session sees it.
        r = subprocess.run(["mount", "-o", "remount,size=32m", small_spool],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert lda(d, message(1000, 1024)).returncode == 0
        typ, _ = m.noop()
        typ, data = m.select("INBOX")
        assert int(data[0]) == acknowledged + 1
        m.logout()
    finally:
        d.stop()
