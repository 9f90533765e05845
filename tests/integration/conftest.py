"""pytest fixtures shared by the integration tests (see cmtest.py)."""
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pytest  # noqa: E402

import cmtest  # noqa: E402


@pytest.fixture
def workdir():
    """A temp dir the daemon can use after dropping privileges (pytest's own
    tmp_path sits below a root-only directory when tests run as root)."""
    path = tempfile.mkdtemp(prefix="clustermail-test-")
    yield cmtest.prepare_workdir(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def daemon(workdir):
    """A running clustermaild on loopback with every listener enabled."""
    d = cmtest.Daemon(workdir)
    d.start()
    yield d
    d.stop()


@pytest.fixture
def imap_daemon(workdir):
    """A running clustermaild with IMAP and IMAPS on loopback and the users
    imaptest.ALICE and imaptest.BOB (password imaptest.PASSWORD)."""
    import imaptest
    d = imaptest.start_daemon(workdir)
    yield d
    d.stop()


@pytest.fixture
def smtp_daemon(workdir):
    """A running clustermaild with SMTP, submission(s), LMTP, IMAP and POP3
    on loopback and the users smtptest.ALICE and smtptest.BOB."""
    import smtptest
    d = smtptest.start_daemon(workdir)
    yield d
    d.stop()
