"""Integration tests for "clustermailctl queue": the outbound queue on the
shared spool, read and changed by the real binary with the daemon's
config (from cmtest; no daemon is started, so nothing delivers the
messages while the tests look at them).

Run as root (as `make check` does in CI), they also prove that the CLI
touches the spool only as mail_user: no queue file belongs to root.
"""
import fcntl
import json
import os
import pwd
import re
import subprocess
import time

import pytest

import cmtest

EX_FAILURE, EX_USAGE, EX_DATAERR = 1, 64, 65

ID_RE = re.compile(r"^[0-9]{8}T[0-9]{6}Z-n1-[0-9]+-[0-9]+$")


class Result:
    def __init__(self, proc):
        self.rc = proc.returncode
        self.out = proc.stdout.decode(errors="replace")
        self.err = proc.stderr.decode(errors="replace")

    def json(self):
        assert self.rc == 0, self
        return json.loads(self.out)

    def __repr__(self):
        return f"<rc={self.rc} out={self.out!r} err={self.err!r}>"


class Spool:
    """A config (cmtest's daemon config, daemon not started) and a spool
    that belongs to mail_user."""

    def __init__(self, workdir):
        self.daemon = cmtest.Daemon(workdir)
        self.conf = self.daemon.conf
        self.spool = os.path.join(str(workdir), "spool")
        os.mkdir(self.spool)
        cmtest.prepare_workdir(self.spool)
        self.queue = os.path.join(self.spool, ".queue")
        self.mail_uid = pwd.getpwnam(cmtest.mail_user()).pw_uid

    def run(self, *args, input=b""):
        proc = subprocess.run(
            [cmtest.binary("clustermailctl"), "-c", self.conf, *args],
            input=input, capture_output=True, timeout=120)
        return Result(proc)

    def inject(self, message, *args):
        if isinstance(message, str):
            message = message.encode()
        res = self.run("queue", "inject", *args, input=message)
        assert res.rc == 0, res
        queue_id = res.out.strip()
        assert ID_RE.match(queue_id), res
        return queue_id

    def list(self):
        return self.run("--json", "queue", "list").json()["messages"]

    def show(self, queue_id):
        return self.run("queue", "show", queue_id, "--json").json()

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


MESSAGE = "From: a@example.org\nTo: x@example.net\nSubject: hi\n\nline 1\nline 2\n"


def fnv1a64(data):
    h = 0xcbf29ce484222325
    for byte in data:
        h ^= byte
        h = (h * 0x100000001b3) & 0xffffffffffffffff
    return h


def set_env_field(spool, queue_id, key, value):
    """Change one field of an envelope file behind the CLI's back, as a
    runner would (with a fresh end checksum); the format is line based."""
    path = os.path.join(spool.queue, "env", queue_id)
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")[:-1]
    body = [line for line in lines[:-1]
            if not line.startswith(key.encode() + b"=")]
    body.insert(2, f"{key}={value}".encode())
    text = b"\n".join(body) + b"\n"
    text += b"end=%016x\n" % fnv1a64(text)
    with open(path, "wb") as f:
        f.write(text)


# ---- inject, list, show ----------------------------------------------------

def test_inject_list_show(spool):
    queue_id = spool.inject(MESSAGE, "--from", "a@example.org",
                            "x@example.net", "<y@example.net>")
    # The content: our Received: on top, LF turned into CRLF.
    with open(os.path.join(spool.queue, "msg", queue_id), "rb") as f:
        content = f.read()
    assert content.startswith(b"Received: by ")
    assert content.endswith(b"\r\n\r\nline 1\r\nline 2\r\n")
    assert b"\n" not in content.replace(b"\r\n", b"")
    assert os.listdir(os.path.join(spool.queue, "tmp")) == []

    messages = spool.list()
    assert len(messages) == 1
    m = messages[0]
    assert m["id"] == queue_id
    assert m["size"] == len(content)
    assert abs(m["arrival"] - time.time()) < 120
    assert m["sender"] == "a@example.org"
    assert m["recipients"] == {"pending": 2, "delivered": 0, "failed": 0}
    assert m["attempts"] == 0
    assert m["next_attempt"] == 0
    assert m["held"] is False
    assert m["last_error"] is None
    assert m["active_node"] is None

    text = spool.run("queue", "list")
    assert text.rc == 0, text
    lines = text.out.splitlines()
    assert lines[0].split()[:4] == ["ID", "SIZE", "ARRIVAL", "SENDER"]
    assert lines[1].split()[0] == queue_id
    assert "a@example.org" in lines[1] and "queued" in lines[1]

    env = spool.show(queue_id)
    assert env["id"] == queue_id
    assert env["origin_node"] == "n1"
    assert env["origin_client"] == "local"
    assert [r["address"] for r in env["recipients"]] == [
        "x@example.net", "y@example.net"]
    assert all(r["state"] == "pending" for r in env["recipients"])
    shown = spool.run("queue", "show", queue_id)
    assert shown.rc == 0, shown
    assert "recipient:" in shown.out and "y@example.net" in shown.out
    assert spool.files_not_owned_by_mail_user() == []


def test_inject_options_json_and_crlf(spool):
    crlf = b"Subject: crlf\r\n\r\nbody \xc3\xa9\r\n"
    res = spool.run("--json", "queue", "inject", "--from", "<>",
                    "--notify", "success,delay", "--ret", "hdrs",
                    "--envid", "ABC123", "z@example.net", input=crlf)
    queue_id = res.json()["id"]
    assert ID_RE.match(queue_id)
    with open(os.path.join(spool.queue, "msg", queue_id), "rb") as f:
        assert f.read().endswith(crlf.split(b"\r\n", 1)[0] + b"\r\n\r\nbody \xc3\xa9\r\n")
    env = spool.show(queue_id)
    assert env["sender"] == ""
    assert env["envid"] == "ABC123"
    assert env["ret"] == "hdrs"
    assert env["body_8bit"] is True
    assert env["recipients"][0]["notify"] == "success,delay"
    # The null sender is shown as <> in text.
    assert "<>" in spool.run("queue", "list").out


def test_empty_queue(spool):
    assert spool.list() == []
    res = spool.run("queue", "list")
    assert res.rc == 0 and "empty" in res.out


# ---- changes ---------------------------------------------------------------

def test_hold_release(spool):
    a = spool.inject(MESSAGE, "--from", "a@example.org", "x@example.net")
    b = spool.inject(MESSAGE, "--from", "a@example.org", "x@example.net")
    res = spool.run("queue", "hold", a, b)
    assert res.rc == 0, res
    assert all(m["held"] for m in spool.list())
    assert "held" in spool.run("queue", "list").out
    res = spool.run("--json", "queue", "release", b)
    assert res.json() == {"messages": [{"id": b, "result": "released"}]}
    held = {m["id"]: m["held"] for m in spool.list()}
    assert held == {a: True, b: False}
    assert spool.files_not_owned_by_mail_user() == []


def test_delete(spool):
    a = spool.inject(MESSAGE, "--from", "a@example.org", "x@example.net")
    b = spool.inject(MESSAGE, "--from", "a@example.org", "x@example.net")
    res = spool.run("queue", "delete", a)
    assert res.rc == 0, res
    assert [m["id"] for m in spool.list()] == [b]
    assert not os.path.exists(os.path.join(spool.queue, "msg", a))
    assert not os.path.exists(os.path.join(spool.queue, "env", a))
    # Gone already: failure, but the other ID is still deleted.
    res = spool.run("queue", "delete", a, b)
    assert res.rc == EX_FAILURE, res
    assert a in res.err
    assert spool.list() == []


def test_flush(spool):
    a = spool.inject(MESSAGE, "--from", "a@example.org", "x@example.net")
    b = spool.inject(MESSAGE, "--from", "a@example.org", "x@example.net")
    later = int(time.time()) + 3600
    set_env_field(spool, a, "next-attempt", later)
    set_env_field(spool, b, "next-attempt", later)
    assert {m["next_attempt"] for m in spool.list()} == {later}
    flush_file = os.path.join(spool.queue, "flush")
    assert not os.path.exists(flush_file)

    # One ID: only that one.
    res = spool.run("queue", "flush", a)
    assert res.rc == 0, res
    due = {m["id"]: m["next_attempt"] for m in spool.list()}
    assert due == {a: 0, b: later}
    stamp = os.stat(flush_file).st_mtime_ns

    # No ID: all of them, and the flush stamp moves.
    res = spool.run("--json", "queue", "flush")
    assert res.json()["messages"] == [{"id": b, "result": "flushed"}]
    assert {m["next_attempt"] for m in spool.list()} == {0}
    assert os.stat(flush_file).st_mtime_ns >= stamp
    assert spool.files_not_owned_by_mail_user() == []


def test_flush_skips_busy_message(spool):
    queue_id = spool.inject(MESSAGE, "--from", "a@example.org",
                            "x@example.net")
    later = int(time.time()) + 3600
    set_env_field(spool, queue_id, "next-attempt", later)
    # Find the message's lock file (made by a claim), then hold a lock on
    # all of it from here, as a delivering node would hold its claim.
    locks = os.path.join(spool.spool, ".locks")
    before = set(os.listdir(locks)) if os.path.isdir(locks) else set()
    assert spool.run("queue", "release", queue_id).rc == 0
    new = [n for n in set(os.listdir(locks)) - before if "q" in n]
    if len(new) != 1:
        pytest.skip(f"cannot tell the queue lock file apart: {new}")
    active = os.path.join(spool.queue, "active", queue_id)
    with open(os.path.join(locks, new[0]), "r+b") as f:
        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # What a delivering node writes next to its claim.
        with open(active, "w") as a:
            a.write("n2")
        os.chown(active, spool.mail_uid, -1)
        res = spool.run("queue", "flush")
        assert res.rc == 0, res
        assert "skipped" in res.out
        assert spool.list()[0]["active_node"] == "n2"
        assert "active:n2" in spool.run("queue", "list").out
    # Released: the leftover active file no longer counts.
    assert spool.list()[0]["active_node"] is None
    # Not rewritten while busy.
    assert spool.list()[0]["next_attempt"] == later


# ---- errors ----------------------------------------------------------------

def test_bad_ids_and_usage(spool):
    assert spool.run("queue", "show", "../etc").rc == EX_DATAERR
    res = spool.run("queue", "show", "20260101T000000Z-n1-1-000001")
    assert res.rc == EX_FAILURE and "no such message" in res.err
    assert spool.run("queue", "delete").rc == EX_USAGE
    assert spool.run("queue", "show").rc == EX_USAGE
    assert spool.run("queue", "frobnicate").rc == EX_USAGE
    assert spool.run("queue", "list", "--bogus").rc == EX_USAGE
    assert spool.run("queue", "inject", "x@example.net",
                     input=b"x\n").rc == EX_USAGE
    assert spool.run("queue", "inject", "--from", "a@example.org",
                     input=b"x\n").rc == EX_USAGE
    assert spool.run("queue", "inject", "--from", "a@example.org",
                     "no-at-sign", input=b"x\n").rc == EX_USAGE
    assert spool.run("queue", "inject", "--from", "a@example.org",
                     "--notify", "never,success", "x@example.net",
                     input=b"x\n").rc == EX_USAGE
    # Nothing was queued by any of that.
    assert spool.list() == []


def test_damaged_envelope_reported(spool):
    good = spool.inject(MESSAGE, "--from", "a@example.org", "x@example.net")
    bad = spool.inject(MESSAGE, "--from", "a@example.org", "x@example.net")
    path = os.path.join(spool.queue, "env", bad)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2])
    res = spool.run("--json", "queue", "list")
    assert [m["id"] for m in res.json()["messages"]] == [good]
    assert bad in res.err
    res = spool.run("queue", "show", bad)
    assert res.rc == 2 and "damaged" in res.err
