"""Integration tests for the spool commands of clustermailctl: deliver,
mailbox, index, quota and acl, with the real binary on a spool in the
test's temp dir (the same config a daemon would use, from cmtest).

Run as root (as `make check` does in CI), they also prove that the CLI
does all spool work as mail_user: no file on the spool belongs to root.
"""
import concurrent.futures
import json
import mailbox
import os
import pwd
import shutil
import subprocess
import time

import pytest

import cmtest

EX_INCONSISTENT = 2
EX_USAGE, EX_DATAERR, EX_NOUSER = 64, 65, 67
EX_TEMPFAIL, EX_NOPERM, EX_CONFIG = 75, 77, 78

# A valid yescrypt hash: "user add --hash" is fast, no password hashing.
USER_HASH = ("$y$j9T$K5GwIeap1le5MpmdGNTOU/$"
             "PSa0pErAtxBx6LwxtbjePF0YMPzUp0tfjOVspsA3V56")
ALICE = "alice@example.com"
BOB = "bob@example.com"


class Result:
    def __init__(self, proc):
        self.rc = proc.returncode
        self.out = proc.stdout.decode(errors="replace")
        self.err = proc.stderr.decode(errors="replace")

    def json(self):
        assert self.rc == 0, self.err
        return json.loads(self.out)

    def __repr__(self):
        return f"<rc={self.rc} out={self.out!r} err={self.err!r}>"


class Spool:
    """A config (cmtest's daemon config, daemon not started), a spool that
    belongs to mail_user, and users alice and bob."""

    def __init__(self, workdir):
        self.daemon = cmtest.Daemon(workdir)
        self.conf = self.daemon.conf
        self.dir = str(workdir)
        self.spool = os.path.join(self.dir, "spool")
        os.mkdir(self.spool)
        cmtest.prepare_workdir(self.spool)
        self.mail_uid = pwd.getpwnam(cmtest.mail_user()).pw_uid
        for user in (ALICE, BOB):
            res = self.run("user", "add", user, "--hash", USER_HASH)
            assert res.rc == 0, res

    def run(self, *args, input=b"", conf=None, preexec_fn=None):
        proc = subprocess.run(
            [cmtest.binary("clustermailctl"), "-c", conf or self.conf, *args],
            input=input, capture_output=True, timeout=120,
            preexec_fn=preexec_fn)
        return Result(proc)

    def deliver(self, user, message, *args):
        if isinstance(message, str):
            message = message.encode()
        return self.run("deliver", user, *args, input=message)

    def status(self, user, name="INBOX"):
        return self.run("--json", "mailbox", "status", user, name).json()["mailboxes"][0]

    def user_root(self, user):
        local, domain = user.split("@")
        return os.path.join(self.spool, domain, local)

    def files_not_owned_by_mail_user(self):
        bad = []
        for root, dirs, files in os.walk(self.spool):
            for name in dirs + files:
                path = os.path.join(root, name)
                if os.lstat(path).st_uid != self.mail_uid:
                    bad.append(path)
        return bad


@pytest.fixture
def spool(workdir):
    return Spool(workdir)


def message(subject, body="hello\n"):
    return f"From: sender@example.org\nTo: {ALICE}\nSubject: {subject}\n\n{body}"


def crlf_size(data):
    """RFC822.SIZE: the message with CRLF line ends."""
    return len(data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))


def as_user(name):
    pw = pwd.getpwnam(name)

    def drop():
        os.setgroups([])
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)
    return drop


# ---- deliver ---------------------------------------------------------------

def test_deliver_and_status(spool):
    plain = message("one").encode()
    crlf = b"Subject: two\r\nFrom: sender@example.org\r\n\r\nline 1\r\nline 2\r\n"
    mbox = (b"From sender@example.org Mon Jan  1 00:00:00 2024\n"
            + message("three").encode())
    for data, args in ((plain, ()), (crlf, ()), (mbox, ("--flags", r"\Seen"))):
        res = spool.deliver(ALICE, data, *args)
        assert (res.rc, res.out, res.err) == (0, "", "")

    st = spool.status(ALICE)
    assert st["name"] == "INBOX"
    assert st["messages"] == 3
    assert st["unseen"] == 2
    assert st["deleted"] == 0
    assert st["uidnext"] == 4
    assert st["uidvalidity"] > 0
    assert st["highestmodseq"] >= 1
    # the mbox "From " line is not part of the message
    mbox_message = mbox.split(b"\n", 1)[1]
    assert st["size"] == sum(crlf_size(d) for d in (plain, crlf, mbox_message))

    res = spool.run("mailbox", "status", ALICE)
    assert res.rc == 0, res
    header, row = res.out.splitlines()
    assert header.split() == ["MAILBOX", "MESSAGES", "UNSEEN", "DELETED",
                              "UIDVALIDITY", "UIDNEXT", "HIGHESTMODSEQ", "SIZE"]
    assert row.split()[:4] == ["INBOX", "3", "2", "0"]
    # numbers are right-aligned under their headers
    assert header.index("SIZE") + len("SIZE") == len(row)

    assert spool.files_not_owned_by_mail_user() == []


def test_maildir_stays_maildir(spool):
    """Other tools read the spool as a Maildir++ (Python's mailbox module),
    and our commands pick up what they write."""
    crlf = b"Subject: crlf\r\n\r\nline 1\r\nline 2\r\n"
    assert spool.deliver(ALICE, crlf).rc == 0
    assert spool.deliver(ALICE, message("seen"), "--flags", r"\Seen \Flagged").rc == 0
    assert spool.run("mailbox", "create", ALICE, "Sent").rc == 0
    assert spool.deliver(ALICE, message("sent copy"), "--mailbox", "Sent").rc == 0
    spool.status(ALICE)     # assigns UIDs: new/ -> cur/

    md = mailbox.Maildir(spool.user_root(ALICE), factory=None, create=False)
    by_subject = {m["subject"]: m for m in md}
    assert set(by_subject) == {"crlf", "seen"}
    # stored with LF line ends
    assert by_subject["crlf"].as_bytes() == b"Subject: crlf\n\nline 1\nline 2\n"
    assert by_subject["seen"].get_flags() == "FS"
    assert by_subject["crlf"].get_flags() == ""
    assert md.list_folders() == ["Sent"]
    assert [m["subject"] for m in md.get_folder("Sent")] == ["sent copy"]

    # A message another tool (running as mail_user) drops into new/ shows
    # up in our status.
    key = md.add(mailbox.MaildirMessage(message("foreign").encode()))
    os.chown(os.path.join(spool.user_root(ALICE), "new", key), spool.mail_uid, -1)
    st = spool.status(ALICE)
    assert st["messages"] == 3
    assert st["uidnext"] == 4
    res = spool.run("index", "check", ALICE)
    assert res.rc == 0, res


def deliver_in_pieces(spool, user, pieces):
    """deliver, with stdin arriving in separate reads."""
    proc = subprocess.Popen(
        [cmtest.binary("clustermailctl"), "-c", spool.conf, "deliver", user],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for piece in pieces:
        proc.stdin.write(piece)
        proc.stdin.flush()
        time.sleep(0.05)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, err.decode()


def test_deliver_from_line_across_reads(spool):
    """The mbox "From " line is recognised however the input is split."""
    cases = [
        [b"Fr", b"om sender@example.org Mon", b" Jan  1 00:00:00 2024\n",
         b"Subject: split from\n\nbody\n"],
        [b"Subj", b"ect: no from line\n\n", b"From here on\n"],
        [b"Hi\n"],
    ]
    for pieces in cases:
        rc, err = deliver_in_pieces(spool, ALICE, pieces)
        assert (rc, err) == (0, "")
    spool.status(ALICE)
    md = mailbox.Maildir(spool.user_root(ALICE), factory=None, create=False)
    contents = sorted(md.get_bytes(key) for key in md.keys())
    assert contents == sorted([b"Subject: split from\n\nbody\n",
                               b"Subject: no from line\n\nFrom here on\n",
                               b"Hi\n"])


def test_deliver_json_and_mailbox_fallback(spool):
    res = spool.run("--json", "deliver", ALICE, "--mailbox", "Nope",
                    input=message("lost?").encode())
    assert res.rc == 0, res
    assert res.json() == {"user": ALICE, "mailbox": "INBOX",
                          "size": crlf_size(message("lost?").encode())}
    assert "delivering to INBOX" in res.err
    assert spool.status(ALICE)["messages"] == 1

    # invalid names fall back too
    res = spool.deliver(ALICE, message("bad name"), "--mailbox", "a//b")
    assert res.rc == 0, res
    assert spool.status(ALICE)["messages"] == 2

    res = spool.run("--json", "deliver", ALICE, "--mailbox", "Lists/dev",
                    "--create", "--flags", "$Label1,\\Answered",
                    input=message("list mail").encode())
    assert res.json()["mailbox"] == "Lists/dev"
    st = spool.status(ALICE, "Lists/dev")
    assert (st["messages"], st["unseen"]) == (1, 1)
    entries = spool.run("--json", "mailbox", "list", ALICE).json()["mailboxes"]
    assert {"name": "Lists/dev", "attributes": ["subscribed"],
            "special_use": None} in entries
    assert spool.status(ALICE)["messages"] == 2


def test_deliver_exit_codes(spool):
    good = message("x")
    res = spool.deliver("carol@example.com", good)
    assert res.rc == EX_NOUSER and "no such user" in res.err
    assert spool.deliver("not an address", good).rc == EX_NOUSER
    res = spool.deliver(ALICE, b"")
    assert res.rc == EX_DATAERR and "empty" in res.err
    assert spool.deliver(ALICE, b"From someone Mon Jan  1 00:00:00 2024\n").rc == EX_DATAERR
    assert spool.deliver(ALICE, good, "--flags", r"\Recent").rc == EX_USAGE
    assert spool.deliver(ALICE, good, "--flags", "bad(keyword").rc == EX_USAGE
    assert spool.run("deliver", input=b"x").rc == EX_USAGE
    assert spool.run("deliver", ALICE, BOB, input=b"x").rc == EX_USAGE
    res = spool.run("deliver", "--help")
    assert res.rc == 0 and "usage:" in res.out
    # -f (envelope sender) is accepted and ignored, as other LDAs do
    assert spool.deliver(ALICE, good, "-f", "sender@example.org").rc == 0
    assert spool.status(ALICE)["messages"] == 1
    # nothing was left behind in tmp/ by the refused ones
    assert os.listdir(os.path.join(spool.user_root(ALICE), "tmp")) == []


def test_deliver_too_large(spool):
    big = b"Subject: big\n\n" + b"x" * 1023 + b"\n"
    big += (b"y" * 1023 + b"\n") * (64 * 1024)     # 64 MiB + a bit
    res = spool.deliver(ALICE, big)
    assert res.rc == EX_DATAERR, res
    assert "larger than 64 MiB" in res.err
    assert os.listdir(os.path.join(spool.user_root(ALICE), "tmp")) == []


def test_deliver_tempfail(spool, workdir):
    """Everything that is not clearly permanent is 75: the MTA retries."""
    good = message("x")
    assert spool.deliver(ALICE, good).rc == 0
    tmp = os.path.join(spool.user_root(ALICE), "tmp")
    os.chmod(tmp, 0o500)    # only matters after the drop to mail_user
    try:
        res = spool.deliver(ALICE, good)
        assert res.rc == EX_TEMPFAIL, res
        assert res.err.strip().splitlines()[-1].startswith("clustermailctl: ")
    finally:
        os.chmod(tmp, 0o700)

    # configuration that does not load, a spool that is not there
    bad = os.path.join(workdir, "bad.conf")
    with open(bad, "w") as f:
        f.write("no_such_key = 1\n")
    assert spool.run("deliver", ALICE, input=b"x", conf=bad).rc == EX_TEMPFAIL
    assert spool.run("mailbox", "list", ALICE, conf=bad).rc == EX_CONFIG
    gone = os.path.join(workdir, "gone.conf")
    with open(gone, "w") as f:
        f.write(spool.daemon.config_text(
            replace={"spool_dir": os.path.join(workdir, "unmounted")}))
    res = spool.run("deliver", ALICE, input=good.encode(), conf=gone)
    assert res.rc == EX_TEMPFAIL and "mounted" in res.err
    assert not os.path.exists(os.path.join(workdir, "unmounted"))
    # a users file that cannot be read is an outage, not "unknown user"
    os.rename(os.path.join(workdir, "users"), os.path.join(workdir, "users.away"))
    assert spool.deliver(ALICE, good).rc == EX_TEMPFAIL
    os.rename(os.path.join(workdir, "users.away"), os.path.join(workdir, "users"))
    assert spool.deliver(ALICE, good).rc == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch users")
def test_deliver_as_mail_user(spool):
    """A pipe(8) transport with user=mail_user starts us as mail_user."""
    res = spool.run("deliver", ALICE, input=message("pipe").encode(),
                    preexec_fn=as_user(cmtest.mail_user()))
    assert res.rc == 0, res
    assert spool.status(ALICE)["messages"] == 1
    assert spool.files_not_owned_by_mail_user() == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch users")
def test_other_users_refused(spool, workdir):
    """Neither root nor mail_user: files would get the wrong owner."""
    other = "nobody" if cmtest.mail_user() != "nobody" else "daemon"
    os.chmod(os.path.join(workdir, "users"), 0o644)
    os.chmod(spool.conf, 0o644)
    res = spool.run("mailbox", "list", ALICE, preexec_fn=as_user(other))
    assert res.rc == EX_NOPERM, res
    assert "must run as root or as mail_user" in res.err
    res = spool.run("deliver", ALICE, input=b"Subject: x\n\nx\n",
                    preexec_fn=as_user(other))
    assert res.rc == EX_TEMPFAIL, res
    assert spool.files_not_owned_by_mail_user() == []


def deliver_concurrently(spool, count):
    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        return list(pool.map(
            lambda i: spool.deliver(ALICE, message(f"parallel {i}")),
            range(count)))


def test_concurrent_deliveries(spool):
    assert spool.deliver(ALICE, message("first")).rc == 0
    results = deliver_concurrently(spool, 12)
    assert [r.rc for r in results] == [0] * 12, results
    st = spool.status(ALICE)
    assert (st["messages"], st["uidnext"]) == (13, 14)
    assert spool.run("index", "check", ALICE).rc == 0


def test_concurrent_first_deliveries(spool):
    """Deliveries racing to create a new user's spool all succeed."""
    for attempt in range(5):
        results = deliver_concurrently(spool, 10)
        assert [r.rc for r in results] == [0] * 10, results
        assert spool.status(ALICE)["messages"] == 10
        shutil.rmtree(spool.user_root(ALICE))


def test_deliver_completes_interrupted_spool_creation(spool):
    root = spool.user_root(ALICE)
    os.makedirs(root)
    for path in (os.path.dirname(root), root):
        os.chown(path, spool.mail_uid, -1)
    res = spool.deliver(ALICE, message("x"))
    assert res.rc == 0, res
    assert spool.status(ALICE)["messages"] == 1


# ---- quota -------------------------------------------------------------------

def test_quota(spool):
    res = spool.run("quota", "set", ALICE, "--messages", "2", "--storage", "10M")
    assert res.rc == 0, res
    assert spool.run("--json", "quota", "get", ALICE).json() == {
        "user": ALICE,
        "storage": {"used": 0, "limit": 10 * 1024 * 1024},
        "messages": {"used": 0, "limit": 2}}
    assert spool.deliver(ALICE, message("1")).rc == 0
    assert spool.deliver(ALICE, message("2")).rc == 0
    res = spool.deliver(ALICE, message("3"))
    assert res.rc == EX_NOPERM, res
    assert "quota" in res.err.lower()
    assert spool.status(ALICE)["messages"] == 2

    # storage: a limit below what is used refuses the next message
    used = spool.run("--json", "quota", "get", ALICE).json()["storage"]["used"]
    assert used == 2 * crlf_size(message("1").encode())
    res = spool.run("quota", "set", ALICE, "--messages", "none", "--storage", str(used))
    assert res.rc == 0, res
    assert spool.deliver(ALICE, message("4")).rc == EX_NOPERM
    # setting one limit keeps the other
    res = spool.run("--json", "quota", "set", ALICE, "--messages", "100")
    assert res.json()["storage"]["limit"] == used
    assert spool.run("quota", "set", ALICE, "--storage", "0").rc == 0
    assert spool.deliver(ALICE, message("5")).rc == 0

    res = spool.run("quota", "get", ALICE)
    assert res.rc == 0
    lines = [line.split() for line in res.out.splitlines()]
    assert lines[0] == ["RESOURCE", "USED", "LIMIT"]
    assert lines[1][0] == "storage" and lines[1][2] == "none"
    assert lines[2] == ["messages", "3", "100"]


def test_quota_usage_errors(spool):
    assert spool.run("quota", "set", ALICE).rc == EX_USAGE
    assert spool.run("quota", "set", ALICE, "--storage", "lots").rc == EX_USAGE
    assert spool.run("quota", "set", ALICE, "--messages", "-1").rc == EX_USAGE
    assert spool.run("quota", "get", ALICE, "--storage", "1").rc == EX_USAGE
    assert spool.run("quota", "get").rc == EX_USAGE
    assert spool.run("quota", "frob", ALICE).rc == EX_USAGE
    assert spool.run("quota", "get", "carol@example.com").rc == EX_NOUSER


# ---- mailbox -------------------------------------------------------------------

def test_mailbox_management(spool):
    a = ALICE
    # bob exists but nothing was ever delivered to him
    res = spool.run("mailbox", "list", BOB)
    assert res.rc == 1 and "no mail spool" in res.err
    assert spool.run("mailbox", "list", "carol@example.com").rc == EX_NOUSER
    assert spool.run("mailbox", "list", "carol").rc == EX_DATAERR

    res = spool.run("mailbox", "create", a, "Archive/2024", "--subscribe")
    assert (res.rc, res.out) == (0, f"mailbox Archive/2024 of {a} created\n")
    res = spool.run("--json", "mailbox", "create", a, "Sent", "--special-use", r"\Sent")
    assert res.json() == {"user": a, "mailbox": "Sent", "result": "created"}
    assert spool.run("mailbox", "create", a, "Trash", "--special-use", "trash").rc == 0
    assert spool.run("mailbox", "create", a, "Sent").rc == 1              # exists
    assert spool.run("mailbox", "create", a, "a//b").rc == EX_DATAERR     # bad name
    assert spool.run("mailbox", "create", a, "X", "--special-use", "Spam").rc == EX_USAGE
    assert spool.run("mailbox", "create", a, "X", "--unsubscribe").rc == EX_USAGE

    res = spool.run("--json", "mailbox", "list", a)
    assert res.json()["mailboxes"] == [
        {"name": "INBOX", "attributes": [], "special_use": None},
        {"name": "Archive", "attributes": ["nonexistent", "children"],
         "special_use": None},
        {"name": "Archive/2024", "attributes": ["subscribed"], "special_use": None},
        {"name": "Sent", "attributes": [], "special_use": "\\Sent"},
        {"name": "Trash", "attributes": [], "special_use": "\\Trash"},
    ]
    res = spool.run("mailbox", "list", a)
    assert res.out.splitlines() == [
        "INBOX",
        "Archive       nonexistent children",
        "Archive/2024  subscribed",
        "Sent          \\Sent",
        "Trash         \\Trash",
    ]
    assert spool.status(a, "Sent")["special_use"] == "\\Sent"

    assert spool.run("mailbox", "create", a, "Projects").rc == 0
    assert spool.run("mailbox", "create", a, "Projects/a").rc == 0
    assert spool.deliver(a, message("old"), "--mailbox", "Projects/a").rc == 0
    res = spool.run("--json", "mailbox", "rename", a, "Projects", "Old")
    assert res.json() == {"user": a, "mailbox": "Old", "old_mailbox": "Projects",
                          "result": "renamed"}
    assert spool.status(a, "Old/a")["messages"] == 1      # children move
    assert spool.run("mailbox", "status", a, "Projects/a").rc == 1
    assert spool.run("mailbox", "rename", a, "Old/a", "Sent").rc == 1
    assert spool.run("mailbox", "rename", a, "Nope", "Other").rc == 1

    res = spool.run("mailbox", "delete", a, "Archive/2024", "--unsubscribe")
    assert (res.rc, res.out) == (0, f"mailbox Archive/2024 of {a} deleted\n")
    assert spool.run("mailbox", "delete", a, "Archive/2024").rc == 1
    assert spool.run("mailbox", "delete", a, "INBOX").rc == 1
    names = [m["name"] for m in
             spool.run("--json", "mailbox", "list", a).json()["mailboxes"]]
    assert names == ["INBOX", "Old", "Old/a", "Sent", "Trash"]

    rows = spool.run("--json", "mailbox", "status", a).json()["mailboxes"]
    assert [r["name"] for r in rows] == names
    assert spool.run("mailbox", "status", a, "Nope").rc == 1
    assert spool.files_not_owned_by_mail_user() == []


def test_mailbox_usage(spool):
    res = spool.run("mailbox")
    assert res.rc == EX_USAGE and "usage:" in res.err
    res = spool.run("mailbox", "--help")
    assert res.rc == 0 and "mailbox rename USER OLD NEW" in res.out
    assert spool.run("mailbox", "frob", ALICE).rc == EX_USAGE
    assert spool.run("mailbox", "rename", ALICE, "A").rc == EX_USAGE
    assert spool.run("mailbox", "status", ALICE, "A", "B").rc == EX_USAGE
    assert spool.run("index").rc == EX_USAGE
    assert spool.run("acl", "get", ALICE).rc == EX_USAGE
    assert spool.run("--help").out.count("deliver") >= 1


# ---- index -----------------------------------------------------------------------

def test_index_check_and_rebuild(spool):
    for i in range(3):
        assert spool.deliver(ALICE, message(f"m{i}")).rc == 0
    assert spool.run("mailbox", "create", ALICE, "Sent").rc == 0
    assert spool.status(ALICE)["messages"] == 3     # moves them to cur/
    res = spool.run("index", "check", ALICE)
    assert (res.rc, res.out) == (0, f"{ALICE}: 2 mailboxes checked, no problems\n")
    assert spool.run("--json", "index", "check", ALICE).json() == {
        "user": ALICE, "mailboxes": ["INBOX", "Sent"], "problems": [],
        "consistent": True}

    # a message file vanishes behind the metadata's back
    cur = os.path.join(spool.user_root(ALICE), "cur")
    victim = sorted(os.listdir(cur))[0]
    os.unlink(os.path.join(cur, victim))
    res = spool.run("index", "check", ALICE)
    assert res.rc == EX_INCONSISTENT, res
    lines = res.out.splitlines()
    assert lines[0].startswith("INBOX: ")
    assert victim.split(":")[0].split(",")[0] in lines[0]
    assert lines[-1] == f"{ALICE}: 2 mailboxes checked, 1 problem"
    res = spool.run("--json", "index", "check", ALICE, "INBOX")
    assert res.rc == EX_INCONSISTENT
    doc = json.loads(res.out)
    assert doc["consistent"] is False and len(doc["problems"]) == 1
    assert doc["problems"][0]["mailbox"] == "INBOX"
    assert spool.run("index", "check", ALICE, "Sent").rc == 0

    res = spool.run("index", "rebuild", ALICE, "INBOX")
    assert (res.rc, res.out) == (0, f"mailbox INBOX of {ALICE} rebuilt\n")
    assert spool.run("index", "check", ALICE).rc == 0
    assert spool.status(ALICE)["messages"] == 2

    # damaged metadata: check reports it (status would repair it)
    with open(os.path.join(spool.user_root(ALICE), "clustermail.index"), "r+b") as f:
        f.write(b"garbage!")
    res = spool.run("index", "check", ALICE, "INBOX")
    assert res.rc == EX_INCONSISTENT, res
    res = spool.run("--json", "index", "rebuild", ALICE)
    assert res.json() == {"user": ALICE, "rebuilt": ["INBOX", "Sent"]}
    assert spool.run("index", "check", ALICE).rc == 0
    assert spool.status(ALICE)["messages"] == 2
    assert spool.run("index", "check", ALICE, "Nope").rc == 1
    assert spool.files_not_owned_by_mail_user() == []


# ---- acl ---------------------------------------------------------------------------

def test_acl(spool):
    a = ALICE
    assert spool.deliver(a, message("x")).rc == 0
    res = spool.run("acl", "set", a, "INBOX", BOB, "lrs")
    assert (res.rc, res.out) == (0, f'{BOB} has rights "lrs" on mailbox INBOX of {a}\n')
    # rights starting with '-' are arguments, not options
    res = spool.run("--json", "acl", "set", a, "INBOX", BOB, "-s")
    assert res.json() == {"user": a, "mailbox": "INBOX", "identifier": BOB,
                          "rights": "lr", "result": "set"}
    assert spool.run("acl", "set", a, "inbox", BOB, "+w").rc == 0
    assert spool.run("acl", "set", a, "INBOX", "anyone", "l").rc == 0
    assert spool.run("acl", "set", a, "INBOX", "-" + BOB, "w").rc == 0

    acl = spool.run("--json", "acl", "get", a, "INBOX").json()
    assert acl["user"] == a and acl["mailbox"] == "INBOX"
    entries = {e["identifier"]: e["rights"] for e in acl["acl"]}
    assert entries[BOB] == "lrw"
    assert entries["anyone"] == "l"
    assert entries["-" + BOB] == "w"
    res = spool.run("acl", "get", a, "INBOX")
    rows = dict(line.split() for line in res.out.splitlines())
    assert {k: rows[k] for k in entries} == entries
    # one column width for all identifiers
    assert len({line.rindex(" ") for line in res.out.splitlines()}) == 1

    res = spool.run("--json", "acl", "delete", a, "INBOX", BOB)
    assert res.json() == {"user": a, "mailbox": "INBOX", "identifier": BOB,
                          "result": "deleted"}
    entries = {e["identifier"] for e in
               spool.run("--json", "acl", "get", a, "INBOX").json()["acl"]}
    assert BOB not in entries and "anyone" in entries

    assert spool.run("acl", "set", a, "INBOX", BOB, "lrz").rc == EX_DATAERR
    assert spool.run("acl", "get", a, "Nope").rc == 1
    assert spool.run("acl", "set", a, "INBOX", BOB).rc == EX_USAGE
    assert spool.run("acl", "get", "carol@example.com", "INBOX").rc == EX_NOUSER
    assert spool.files_not_owned_by_mail_user() == []


def test_no_root_files_anywhere(spool):
    """Every command, run as root, leaves only mail_user's files."""
    a = ALICE
    for args in (("mailbox", "create", a, "A"), ("quota", "set", a, "--messages", "9"),
                 ("acl", "set", a, "A", BOB, "lr"), ("index", "rebuild", a),
                 ("mailbox", "rename", a, "A", "B"), ("mailbox", "delete", a, "B")):
        res = spool.run(*args)
        assert res.rc == 0, (args, res)
    assert spool.deliver(a, message("x")).rc == 0
    assert os.path.isdir(os.path.join(spool.spool, ".locks"))
    assert spool.files_not_owned_by_mail_user() == []
