"""Real IMAP clients against clustermaild: curl, mbsync (isync) and
offlineimap, each syncing with a real daemon on loopback.

These are the programs users point at a server; each test checks what the
user would see afterwards (messages, flags, folders on both sides).
"""
import email
import mailbox
import os
import subprocess
import textwrap

import pytest

import cmtest
import imaptest

from imaptest import ALICE, PASSWORD


def need(program):
    if not cmtest.have(program):
        pytest.skip(f"{program} is not installed (scripts/deps.sh installs it)")


def message(n, subject=None, body=None):
    subject = subject or f"test message {n}"
    body = body or f"body of message {n}\n"
    return (f"From: Sender <sender@example.org>\n"
            f"To: Alice <{ALICE}>\n"
            f"Subject: {subject}\n"
            f"Message-ID: <msg{n}@example.org>\n"
            f"Date: Tue, 24 Nov 2026 10:00:{n % 60:02d} +0000\n"
            f"\n{body}").encode()


def imap_url(daemon, path=""):
    return f"imap://127.0.0.1:{daemon.ports['imap']}/{path}"


def curl(daemon, *args, path="", input=None):
    need("curl")
    r = subprocess.run(["curl", "-sS", "--max-time", "30",
                        "--user", f"{ALICE}:{PASSWORD}", *args,
                        imap_url(daemon, path)],
                       input=input, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    return r.stdout.decode(errors="replace")


def server_messages(daemon, folder="INBOX"):
    """{Message-ID: set of flags} as the server reports them."""
    m = imaptest.login(daemon)
    try:
        typ, _ = m.select(f'"{folder}"', readonly=True)
        assert typ == "OK"
        typ, data = m.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        result = {}
        if data == [None]:
            return result
        for item in data:
            if not isinstance(item, tuple):
                continue
            flags = item[0].decode()
            flags = flags[flags.index("FLAGS (") + 7:]
            flags = set(flags[:flags.index(")")].split())
            msgid = email.message_from_bytes(item[1])["Message-ID"]
            result[msgid] = flags
        return result
    finally:
        m.logout()


def test_curl_list_fetch_append(imap_daemon, workdir):
    for n in range(1, 4):
        imaptest.deliver(imap_daemon, ALICE, message(n))
    listing = curl(imap_daemon)
    assert "INBOX" in listing
    assert "Sent" in listing
    fetched = curl(imap_daemon, path="INBOX;UID=2")
    assert "Subject: test message 2" in fetched
    assert "body of message 2" in fetched
    # APPEND through an upload
    upload = message(9, subject="uploaded with curl").replace(b"\n", b"\r\n")
    upload_file = os.path.join(workdir, "upload.eml")
    with open(upload_file, "wb") as f:
        f.write(upload)
    curl(imap_daemon, "-T", upload_file, path="Sent")
    msgs = server_messages(imap_daemon, "Sent")
    assert "<msg9@example.org>" in msgs
    # A custom command
    out = curl(imap_daemon, "-X", "SEARCH SUBJECT \"message 3\"", path="INBOX")
    assert "SEARCH 3" in out


def test_mbsync_both_ways(imap_daemon, workdir):
    need("mbsync")
    for n in range(1, 6):
        imaptest.deliver(imap_daemon, ALICE, message(n))
    local = os.path.join(workdir, "mbsync-mail")
    os.makedirs(local)
    rc = os.path.join(workdir, "mbsyncrc")
    with open(rc, "w") as f:
        f.write(textwrap.dedent(f"""\
            IMAPAccount test
            Host 127.0.0.1
            Port {imap_daemon.ports['imap']}
            User {ALICE}
            Pass "{PASSWORD}"
            SSLType None
            AuthMechs LOGIN

            IMAPStore remote
            Account test

            MaildirStore local
            Path {local}/
            Inbox {local}/INBOX
            SubFolders Verbatim

            Channel test
            Far :remote:
            Near :local:
            Patterns *
            Create Both
            Expunge Both
            SyncState *
            """))

    def run():
        r = subprocess.run(["mbsync", "-c", rc, "-a"], capture_output=True,
                           timeout=120)
        assert r.returncode == 0, (r.stdout + r.stderr).decode(errors="replace")

    run()
    inbox = mailbox.Maildir(os.path.join(local, "INBOX"), create=False)
    subjects = sorted(m["Subject"] for m in inbox)
    assert subjects == [f"test message {n}" for n in range(1, 6)]
    assert os.path.isdir(os.path.join(local, "Sent"))

    # Local changes go up: a new message, a flag, a deletion.
    key = inbox.add(mailbox.MaildirMessage(message(42, subject="written locally")))
    for k, m in inbox.items():
        if m["Subject"] == "test message 1":
            m.set_flags("S")
            m.set_subdir("cur")
            inbox[k] = m
        if m["Subject"] == "test message 2":
            m.set_flags("ST")
            m.set_subdir("cur")
            inbox[k] = m
    assert key
    run()
    run()  # a second run also expunges the trashed one on the far side
    msgs = server_messages(imap_daemon)
    assert "<msg42@example.org>" in msgs
    assert "\\Seen" in msgs["<msg1@example.org>"]
    assert "<msg2@example.org>" not in msgs

    # Server-side changes come down.
    imaptest.deliver(imap_daemon, ALICE, message(7))
    m = imaptest.login(imap_daemon)
    m.select("INBOX")
    m.store("1", "+FLAGS", "\\Flagged")
    m.logout()
    run()
    inbox = mailbox.Maildir(os.path.join(local, "INBOX"), create=False)
    by_subject = {m["Subject"]: m for m in inbox}
    assert "test message 7" in by_subject
    assert "F" in by_subject["test message 1"].get_flags()


def test_offlineimap_both_ways(imap_daemon, workdir):
    need("offlineimap")
    for n in range(1, 4):
        imaptest.deliver(imap_daemon, ALICE, message(n))
    local = os.path.join(workdir, "oi-mail")
    meta = os.path.join(workdir, "oi-meta")
    conf = os.path.join(workdir, "offlineimaprc")
    with open(conf, "w") as f:
        f.write(textwrap.dedent(f"""\
            [general]
            accounts = test
            metadata = {meta}
            ui = basic

            [Account test]
            localrepository = local
            remoterepository = remote

            [Repository local]
            type = Maildir
            localfolders = {local}

            [Repository remote]
            type = IMAP
            remotehost = 127.0.0.1
            remoteport = {imap_daemon.ports['imap']}
            remoteuser = {ALICE}
            remotepass = {PASSWORD}
            ssl = no
            starttls = no
            """))

    def run():
        r = subprocess.run(["offlineimap", "-c", conf, "-o", "-u", "basic"],
                           capture_output=True, timeout=180)
        out = (r.stdout + r.stderr).decode(errors="replace")
        assert r.returncode == 0, out
        assert "ERROR" not in out, out

    run()
    inbox = mailbox.Maildir(os.path.join(local, "INBOX"), create=False)
    assert sorted(m["Subject"] for m in inbox) == \
        [f"test message {n}" for n in range(1, 4)]
    for k, m in inbox.items():
        if m["Subject"] == "test message 3":
            m.set_flags("FS")
            m.set_subdir("cur")
            inbox[k] = m
    inbox.add(mailbox.MaildirMessage(message(50, subject="from offlineimap")))
    run()
    msgs = server_messages(imap_daemon)
    assert "<msg50@example.org>" in msgs
    assert {"\\Flagged", "\\Seen"} <= msgs["<msg3@example.org>"]


def run_on_pty(argv, env, timeout=60):
    """Run a curses program on a pseudo-terminal until it exits; returns
    (exit status, everything it drew)."""
    import pty
    import select
    import time
    pid, fd = pty.fork()
    if pid == 0:
        os.execvpe(argv[0], argv, env)
    output = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    chunk = b""     # EIO: the terminal's other side closed
                output += chunk
                if not chunk:
                    break
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status), output
        # The terminal closed (or time ran out): wait for the exit.
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status), output
            time.sleep(0.05)
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        raise AssertionError("timed out; screen: %r" % output[-2000:])
    finally:
        os.close(fd)


def test_mutt_moves_messages(imap_daemon, workdir):
    """mutt, driven through its keyboard macros on a terminal: open INBOX,
    tag the messages whose subject matches, save them to Archive (which
    deletes them from INBOX) and quit, expunging."""
    need("mutt")
    for n in range(1, 5):
        subject = f"keep {n}" if n % 2 else f"archive me {n}"
        imaptest.deliver(imap_daemon, ALICE, message(n, subject=subject))
    port = imap_daemon.ports["imap"]
    rc = os.path.join(workdir, "muttrc")
    with open(rc, "w") as f:
        f.write(textwrap.dedent(f"""\
            set folder="imap://127.0.0.1:{port}/"
            set spoolfile="+INBOX"
            set imap_user="{ALICE}"
            set imap_pass="{PASSWORD}"
            set ssl_starttls=no
            set ssl_force_tls=no
            set imap_passive=no
            set confirmappend=no
            set confirmcreate=no
            set delete=yes
            set move=no
            set quit=yes
            set mark_old=no
            set header_cache=""
            set message_cachedir=""
            set sort=date
            set wait_key=no
            """))
    macro = ("<tag-pattern>~s archive<enter>"
             "<tag-prefix><save-message>=Archive<enter>"
             "<sync-mailbox><quit>")
    env = {"HOME": workdir, "TERM": "xterm", "PATH": os.environ["PATH"],
           "LANG": "C.UTF-8"}
    status, screen = run_on_pty(["mutt", "-n", "-F", rc, "-e",
                                 f"push '{macro}'"], env)
    assert status == 0, screen[-2000:]
    inbox = server_messages(imap_daemon)
    archive = server_messages(imap_daemon, "Archive")
    assert sorted(inbox) == ["<msg1@example.org>", "<msg3@example.org>"]
    assert sorted(archive) == ["<msg2@example.org>", "<msg4@example.org>"]
