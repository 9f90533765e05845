"""The queue runner: delivery of queued mail through the relayhost, retries,
bounces (RFC 3464 DSNs checked with the email package), held messages,
"queue flush", and two nodes sharing one queue (no message twice, and a
killed node's mail delivered by the other).

The next hop is an aiosmtpd server in the test process (Sink) that answers
each RCPT as a policy function says and records every message it accepted.
Mail enters the queue with "clustermailctl queue inject".
"""
import asyncio
import collections
import email
import email.policy
import json
import os
import re
import signal
import threading
import time

import pytest

import cmtest
import imaptest
import smtptest

try:
    from aiosmtpd.controller import Controller
except ImportError:     # pragma: no cover - the test machine has it
    Controller = None

ALICE = imaptest.ALICE          # local users (example.com is local)
BOB = imaptest.BOB

FAST = ("queue_retry_initial = 1s\n"
        "queue_retry_max = 2s\n"
        "queue_scan_interval = 200ms\n"
        "queue_tls = none\n"
        "smtp_hostname = mx1.example.com\n")


class Sink:
    """An SMTP next hop on 127.0.0.1. policy(rcpt, attempt) returns None to
    accept the recipient or an SMTP reply to refuse it; attempt counts the
    RCPTs for that address so far (1 = first)."""

    def __init__(self, policy=None):
        if Controller is None:
            pytest.skip("python3-aiosmtpd is not installed")
        self.port = cmtest.free_port()
        self.policy = policy
        self.lock = threading.Lock()
        self.attempts = collections.Counter()
        self.received = []      # (mail_from, rcpt, content bytes)
        self.data_delay = 0     # seconds each DATA takes
        self.active = 0         # transactions in DATA right now
        self.max_active = 0
        self.controller = Controller(self, hostname="127.0.0.1",
                                     port=self.port, ready_timeout=10)
        self.controller.start()

    async def handle_RCPT(self, server, session, envelope, address, options):
        with self.lock:
            self.attempts[address] += 1
            attempt = self.attempts[address]
        reply = self.policy(address, attempt) if self.policy else None
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        await asyncio.sleep(self.data_delay)
        with self.lock:
            self.active -= 1
            for rcpt in envelope.rcpt_tos:
                self.received.append((envelope.mail_from, rcpt,
                                      envelope.content))
        return "250 2.0.0 queued"

    def got(self, rcpt=None):
        with self.lock:
            return [r for r in self.received if rcpt is None or r[1] == rcpt]

    def wait(self, count, rcpt=None, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.got(rcpt)) >= count:
                return self.got(rcpt)
            time.sleep(0.05)
        return self.got(rcpt)

    def stop(self):
        self.controller.stop()


@pytest.fixture
def sink_factory():
    sinks = []

    def make(policy=None):
        s = Sink(policy)
        sinks.append(s)
        return s
    yield make
    for s in sinks:
        s.stop()


def closed_port():
    """A port nobody listens on (connections are refused)."""
    return cmtest.free_port()


def new_daemon(workdir, node="n1", extra="", users=(ALICE, BOB)):
    d = cmtest.Daemon(workdir, node=node, services=["imap"], extra=extra)
    spool = os.path.join(str(workdir), "spool")
    if not os.path.isdir(spool):
        os.mkdir(spool)
        cmtest.prepare_workdir(spool)
    for u in users:
        imaptest.add_user(d, u)
    return d


@pytest.fixture
def daemons():
    """Daemons a test started; each is stopped at the end, and must then
    have drained cleanly (exit 0, unless the test killed it) without a
    sanitizer report in its log."""
    started = []
    yield started
    for d in started:
        d.stop()
    for d in started:
        log = d.read_log()
        assert "Sanitizer" not in log and "runtime error" not in log, log
        if d.proc.returncode != -signal.SIGKILL:
            assert d.proc.returncode == 0, log[-3000:]


def start(daemons, d):
    daemons.append(d)
    d.start()
    return d


def message(subject, sender=ALICE, to="rcpt@remote.test"):
    return (f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
            f"Message-ID: <{time.time_ns()}@example.com>\r\n\r\n"
            f"body of {subject}\r\n")


def inject(d, sender, rcpts, subject="test", extra_args=()):
    r = d.ctl("queue", "inject", "--from", sender, *extra_args, *rcpts,
              input=message(subject, sender or "nobody@nowhere.test",
                            rcpts[0]))
    if r.returncode != 0 and "usage" in (r.stderr + r.stdout) and \
            "inject" not in (r.stderr + r.stdout):
        pytest.skip("clustermailctl queue inject is not available")
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def queue_list(d):
    r = d.ctl("--json", "queue", "list")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    return data["messages"] if isinstance(data, dict) else data


def wait_queue_empty(d, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = queue_list(d)
        if not left:
            return []
        time.sleep(0.1)
    return queue_list(d)


def wait_log(d, pattern, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if re.search(pattern, d.read_log()):
            return True
        time.sleep(0.05)
    return False


inbox = smtptest.inbox


def wait_inbox(d, user, count, timeout=20):
    return smtptest.wait_inbox(d, user, count, timeout)


def parse(raw):
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def dsn_fields(report_part):
    """The per-message and per-recipient field groups of a
    message/delivery-status part (the email package parses each group as a
    message of headers)."""
    groups = report_part.get_payload()
    return groups[0], groups[1:]


# ---- single node -----------------------------------------------------------

def test_delivered_once(workdir, daemons, sink_factory):
    sink = sink_factory()
    d = start(daemons, new_daemon(workdir, extra=FAST +
                                  f"relayhost = [127.0.0.1]:{sink.port}\n"))
    qid = inject(d, ALICE, ["one@remote.test", "two@remote.test"], "once")
    assert qid
    got = sink.wait(2)
    assert sorted(r[1] for r in got) == ["one@remote.test", "two@remote.test"]
    assert all(r[0] == ALICE for r in got)
    assert b"Subject: once" in got[0][2]
    assert wait_queue_empty(d) == []
    time.sleep(1)       # a few scan intervals: nothing is sent again
    assert len(sink.got()) == 2
    assert wait_log(d, rf"{re.escape(qid)}.*to=<one@remote.test>.*status=sent")
    status, _, body = d.http_get("/metrics")
    assert status == 200
    m = re.search(r"^clustermail_queue_delivered_total (\d+)$", body, re.M)
    assert m and int(m.group(1)) >= 2


def test_local_recipient_from_queue(workdir, daemons, sink_factory):
    """A queued local recipient lands in the user's INBOX, a remote one at
    the relayhost, from the same queued message."""
    sink = sink_factory()
    d = start(daemons, new_daemon(workdir, extra=FAST +
                                  f"relayhost = [127.0.0.1]:{sink.port}\n"))
    inject(d, "sender@remote.test", [BOB, "far@remote.test"], "mixed")
    msgs = wait_inbox(d, BOB, 1)
    assert len(msgs) == 1 and b"Subject: mixed" in msgs[0]
    assert len(sink.wait(1)) == 1
    assert wait_queue_empty(d) == []
    assert len(inbox(d, BOB)) == 1


def test_temporary_failure_retried(workdir, daemons, sink_factory):
    sink = sink_factory(lambda rcpt, n: "450 4.2.0 busy, try later"
                        if n == 1 else None)
    d = start(daemons, new_daemon(workdir, extra=FAST +
                                  f"relayhost = [127.0.0.1]:{sink.port}\n"))
    qid = inject(d, ALICE, ["later@remote.test"], "retry")
    got = sink.wait(1, timeout=20)
    assert len(got) == 1
    assert sink.attempts["later@remote.test"] == 2
    assert wait_queue_empty(d) == []
    time.sleep(1)
    assert len(sink.got()) == 1
    log = d.read_log()
    assert re.search(rf"{re.escape(qid)}.*to=<later@remote.test>.*"
                     r"dsn=4\.2\.0, status=deferred", log)
    # No bounce for a temporary failure that was then delivered.
    assert inbox(d, ALICE) == []


def test_permanent_failure_bounces_to_local_sender(workdir, daemons,
                                                    sink_factory):
    sink = sink_factory(lambda rcpt, n: "550 5.1.1 no such user here"
                        if rcpt.startswith("bad") else None)
    d = start(daemons, new_daemon(workdir, extra=FAST +
                                  f"relayhost = [127.0.0.1]:{sink.port}\n"))
    qid = inject(d, ALICE, ["bad@remote.test", "good@remote.test"],
                 "will bounce", ["--envid", "env-42"])
    assert len(sink.wait(1, "good@remote.test")) == 1
    msgs = wait_inbox(d, ALICE, 1, timeout=20)
    assert len(msgs) == 1, d.read_log()
    dsn = parse(msgs[0])
    assert dsn["From"] == f"Mail Delivery System <MAILER-DAEMON@mx1.example.com>"
    assert dsn["Subject"].startswith("Delivery failed")
    assert dsn["Auto-Submitted"] == "auto-replied"
    assert dsn["Message-ID"] and dsn["Date"]
    assert email.utils.parsedate_to_datetime(dsn["Date"]) is not None
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    parts = dsn.get_payload()
    assert [p.get_content_type() for p in parts] == [
        "text/plain", "message/delivery-status", "message/rfc822"]
    assert "bad@remote.test" in parts[0].get_payload()
    per_message, per_rcpt = dsn_fields(parts[1])
    assert per_message["Reporting-MTA"] == "dns; mx1.example.com"
    assert per_message["Original-Envelope-Id"] == "env-42"
    assert per_message["Arrival-Date"]
    assert len(per_rcpt) == 1       # only the failed recipient
    r = per_rcpt[0]
    assert r["Final-Recipient"].replace(" ", "") == "rfc822;bad@remote.test"
    assert r["Action"] == "failed"
    assert r["Status"] == "5.1.1"
    assert "550" in r["Diagnostic-Code"] and \
        r["Diagnostic-Code"].lower().startswith("smtp;")
    assert r["Remote-MTA"].startswith("dns;")
    assert r["Last-Attempt-Date"]
    returned = parts[2].get_payload()[0]
    assert returned["Subject"] == "will bounce"
    assert "body of will bounce" in returned.get_payload()
    # The bounce went through the queue too, and the queue is empty now.
    assert wait_queue_empty(d) == []
    assert re.search(rf"{re.escape(qid)}.*to=<bad@remote.test>.*"
                     r"status=bounced", d.read_log())
    # Exactly one DSN, nothing else for the good recipient.
    time.sleep(0.5)
    assert len(inbox(d, ALICE)) == 1


def test_headers_only_return(workdir, daemons, sink_factory):
    """RET=HDRS: the DSN returns only the original's header block."""
    sink = sink_factory(lambda rcpt, n: "554 5.7.1 rejected")
    d = start(daemons, new_daemon(workdir, extra=FAST +
                                  f"relayhost = [127.0.0.1]:{sink.port}\n"))
    inject(d, ALICE, ["x@remote.test"], "hdrs only", ["--ret", "hdrs"])
    msgs = wait_inbox(d, ALICE, 1, timeout=20)
    assert len(msgs) == 1
    parts = parse(msgs[0]).get_payload()
    assert parts[2].get_content_type() == "text/rfc822-headers"
    text = parts[2].get_payload()
    assert "Subject: hdrs only" in text
    assert "body of hdrs only" not in text


def test_delay_warning_sent_once(workdir, daemons, sink_factory):
    sink = sink_factory(lambda rcpt, n: "451 4.4.5 overloaded")
    d = start(daemons, new_daemon(workdir, extra=FAST +
                                  "queue_delay_warning = 1s\n"
                                  f"relayhost = [127.0.0.1]:{sink.port}\n"))
    qid = inject(d, ALICE, ["slow@remote.test"], "slow one")
    msgs = wait_inbox(d, ALICE, 1, timeout=20)
    assert len(msgs) == 1
    dsn = parse(msgs[0])
    assert dsn["Subject"].startswith("Delivery delayed")
    parts = dsn.get_payload()
    # Delay warnings return the headers only.
    assert [p.get_content_type() for p in parts] == [
        "text/plain", "message/delivery-status", "text/rfc822-headers"]
    _, per_rcpt = dsn_fields(parts[1])
    assert per_rcpt[0]["Action"] == "delayed"
    assert per_rcpt[0]["Status"] == "4.4.5"
    assert per_rcpt[0]["Will-Retry-Until"]
    # Still queued and retried, but warned only once.
    sink_attempts = sink.attempts["slow@remote.test"]
    deadline = time.monotonic() + 10
    while sink.attempts["slow@remote.test"] < sink_attempts + 2 and \
            time.monotonic() < deadline:
        time.sleep(0.1)
    assert sink.attempts["slow@remote.test"] >= sink_attempts + 2
    assert len(inbox(d, ALICE)) == 1
    assert [m["id"] for m in queue_list(d)] == [qid]


def test_destination_concurrency(workdir, daemons, sink_factory):
    """queue_destination_concurrency bounds the transactions towards one
    destination (here the relayhost) on a node, while several run."""
    sink = sink_factory()
    sink.data_delay = 0.3
    d = start(daemons, new_daemon(workdir, extra=FAST +
                                  "queue_workers = 6\n"
                                  "queue_destination_concurrency = 2\n"
                                  f"relayhost = [127.0.0.1]:{sink.port}\n"))
    for i in range(6):
        inject(d, ALICE, [f"c{i}@remote.test"], f"conc {i}")
    assert len(sink.wait(6, timeout=30)) == 6
    assert sink.max_active == 2


def test_over_quota_local_recipient_deferred(workdir, daemons, sink_factory):
    sink = sink_factory()
    d = new_daemon(workdir, extra=FAST +
                   f"relayhost = [127.0.0.1]:{sink.port}\n")
    r = d.ctl("quota", "set", BOB, "--messages", "1")
    assert r.returncode == 0, r.stderr
    start(daemons, d)
    inject(d, ALICE, [BOB], "first")
    assert len(wait_inbox(d, BOB, 1)) == 1
    qid = inject(d, ALICE, [BOB], "second")
    assert wait_log(d, rf"{re.escape(qid)}.*to=<{re.escape(BOB)}>.*"
                    r"dsn=4\.2\.2, status=deferred")
    assert [m["id"] for m in queue_list(d)] == [qid]
    assert len(inbox(d, BOB)) == 1
    assert inbox(d, ALICE) == []        # deferred, not bounced
    # Room again: the retry delivers it.
    r = d.ctl("quota", "set", BOB, "--messages", "10")
    assert r.returncode == 0, r.stderr
    assert len(wait_inbox(d, BOB, 2)) == 2
    assert wait_queue_empty(d) == []


def test_null_sender_never_bounced(workdir, daemons, sink_factory):
    sink = sink_factory(lambda rcpt, n: "550 5.1.1 no such user")
    d = start(daemons, new_daemon(workdir, extra=FAST +
                                  f"relayhost = [127.0.0.1]:{sink.port}\n"))
    qid = inject(d, "", ["gone@remote.test"], "null sender")
    assert wait_log(d, rf"{re.escape(qid)}.*to=<gone@remote.test>.*"
                    r"status=bounced")
    assert wait_queue_empty(d) == []
    assert sink.attempts["gone@remote.test"] == 1
    assert "notification" not in d.read_log()
    assert inbox(d, ALICE) == [] and inbox(d, BOB) == []


def test_unknown_local_user_bounces(workdir, daemons, sink_factory):
    sink = sink_factory()
    d = start(daemons, new_daemon(workdir, extra=FAST +
                                  f"relayhost = [127.0.0.1]:{sink.port}\n"))
    inject(d, ALICE, ["nobody-here@example.com"], "to nobody")
    msgs = wait_inbox(d, ALICE, 1, timeout=20)
    assert len(msgs) == 1
    _, per_rcpt = dsn_fields(parse(msgs[0]).get_payload()[1])
    assert per_rcpt[0]["Status"] == "5.1.1"
    assert per_rcpt[0]["Action"] == "failed"
    assert sink.got() == []


def test_held_message_waits_for_release(workdir, daemons, sink_factory):
    sink = sink_factory()
    d = new_daemon(workdir, extra=FAST +
                   f"relayhost = [127.0.0.1]:{sink.port}\n")
    # Queued and held before any runner exists.
    qid = inject(d, ALICE, ["held@remote.test"], "held")
    r = d.ctl("queue", "hold", qid)
    assert r.returncode == 0, r.stderr
    start(daemons, d)
    time.sleep(1.5)     # several scans: a held message stays put
    assert sink.got() == []
    assert [m["id"] for m in queue_list(d)] == [qid]
    r = d.ctl("queue", "release", qid)
    assert r.returncode == 0, r.stderr
    assert len(sink.wait(1)) == 1
    assert wait_queue_empty(d) == []


def test_flush_retries_now(workdir, daemons, sink_factory):
    sink = sink_factory(lambda rcpt, n: "451 4.3.0 not now" if n == 1
                        else None)
    d = start(daemons, new_daemon(workdir, extra=(
        "queue_retry_initial = 1h\nqueue_retry_max = 2h\n"
        "queue_scan_interval = 200ms\nqueue_tls = none\n"
        f"relayhost = [127.0.0.1]:{sink.port}\n")))
    qid = inject(d, ALICE, ["flush@remote.test"], "flush me")
    assert wait_log(d, rf"{re.escape(qid)}.*status=deferred")
    time.sleep(1)
    assert sink.got() == []     # the next retry is an hour away
    r = d.ctl("queue", "flush")
    assert r.returncode == 0, r.stderr
    assert len(sink.wait(1, timeout=10)) == 1
    assert wait_queue_empty(d) == []


def test_relayhost_down_defers(workdir, daemons):
    d = start(daemons, new_daemon(workdir, extra=FAST +
                                  f"relayhost = [127.0.0.1]:{closed_port()}\n"))
    qid = inject(d, ALICE, ["far@remote.test"], "nowhere")
    assert wait_log(d, rf"{re.escape(qid)}.*to=<far@remote.test>.*"
                    r"status=deferred")
    left = queue_list(d)
    assert [m["id"] for m in left] == [qid]
    assert left[0]["recipients"]["pending"] == 1
    assert left[0]["attempts"] >= 1
    assert inbox(d, ALICE) == []


def test_lifetime_expiry_bounces(workdir, daemons):
    """Past queue_lifetime (1 minute, the least allowed: this test takes
    that long) the waiting recipient fails with 4.4.7 and bounces."""
    d = start(daemons, new_daemon(workdir, extra=FAST +
                                  "queue_lifetime = 1m\n"
                                  "queue_delay_warning = 0\n"
                                  f"relayhost = [127.0.0.1]:{closed_port()}\n"))
    qid = inject(d, ALICE, ["never@remote.test"], "too late")
    assert wait_log(d, rf"{re.escape(qid)}.*status=deferred")
    msgs = wait_inbox(d, ALICE, 1, timeout=90)
    assert len(msgs) == 1, d.read_log()[-3000:]
    dsn = parse(msgs[0])
    assert dsn["Subject"].startswith("Delivery failed")
    _, per_rcpt = dsn_fields(dsn.get_payload()[1])
    assert per_rcpt[0]["Action"] == "failed"
    assert per_rcpt[0]["Status"] == "4.4.7"
    assert "expired" in per_rcpt[0]["Diagnostic-Code"]
    assert wait_queue_empty(d) == []


# ---- two nodes, one queue ----------------------------------------------------

def two_node_config(sink_port_a, sink_port_b):
    return (FAST +
            f"[node n1]\nrelayhost = [127.0.0.1]:{sink_port_a}\n"
            f"[node n2]\nrelayhost = [127.0.0.1]:{sink_port_b}\n")


def make_node(workdir, node, config):
    """A daemon for node (started with --node) with its own config file
    that holds the [node n1] and [node n2] sections of both nodes; no
    global node_name (two nodes may not share one)."""
    d = cmtest.Daemon(workdir, node=node, services=["imap"], extra=config)
    d.conf = os.path.join(d.dir, f"{node}.conf")
    text = d.config_text()
    with open(d.conf, "w") as f:
        f.write("".join(line + "\n" for line in text.splitlines()
                        if not line.startswith("node_name = ")))
    plain_ctl = d.ctl
    d.ctl = lambda *args, **kw: plain_ctl("--node", node, *args, **kw)
    return d


def start_node(daemons, d):
    daemons.append(d)
    d.start(args=("--node", d.node))
    return d


def test_two_nodes_no_duplicates(workdir, daemons, sink_factory):
    sink = sink_factory()
    config = two_node_config(sink.port, sink.port)
    a = make_node(workdir, "n1", config)
    b = make_node(workdir, "n2", config)
    os.makedirs(os.path.join(str(workdir), "spool"), exist_ok=True)
    cmtest.prepare_workdir(os.path.join(str(workdir), "spool"))
    imaptest.add_user(a, ALICE)
    imaptest.add_user(a, BOB)
    start_node(daemons, a)
    start_node(daemons, b)
    rcpts = [f"r{i}@remote.test" for i in range(3)] + [BOB]
    for i in range(15):
        inject(a if i % 2 else b, ALICE, rcpts, f"both {i}")
    got = sink.wait(45, timeout=40)
    assert len(got) == 45
    assert wait_queue_empty(a, timeout=20) == []
    time.sleep(1)
    got = sink.got()
    keys = collections.Counter((r[1], parse(r[2])["Subject"]) for r in got)
    assert len(keys) == 45
    assert max(keys.values()) == 1
    # The local recipient got each message once too.
    local = collections.Counter(parse(m)["Subject"] for m in inbox(a, BOB))
    assert len(local) == 15 and max(local.values()) == 1
    # Both nodes took part.
    assert "status=sent" in a.read_log() or "status=sent" in b.read_log()


def test_killed_node_mail_delivered_by_other(workdir, daemons, sink_factory):
    sink = sink_factory()
    config = two_node_config(closed_port(), sink.port)
    a = make_node(workdir, "n1", config)
    b = make_node(workdir, "n2", config)
    os.makedirs(os.path.join(str(workdir), "spool"), exist_ok=True)
    cmtest.prepare_workdir(os.path.join(str(workdir), "spool"))
    imaptest.add_user(a, ALICE)
    start_node(daemons, a)
    ids = [inject(a, ALICE, ["x@remote.test", "y@remote.test"], f"fail {i}")
           for i in range(5)]
    for qid in ids:
        assert wait_log(a, rf"{re.escape(qid)}.*status=deferred")
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait()
    assert sink.got() == []
    start_node(daemons, b)
    got = sink.wait(10, timeout=30)
    assert len(got) == 10
    assert wait_queue_empty(b) == []
    time.sleep(1)
    keys = collections.Counter((r[1], parse(r[2])["Subject"])
                               for r in sink.got())
    assert len(keys) == 10 and max(keys.values()) == 1


def test_shutdown_does_not_wait_for_a_stuck_next_hop(workdir, daemons):
    """A next hop that accepts the connection and never answers must not
    hold up a shutdown past shutdown_timeout (5s in the tests' config);
    the message stays queued."""
    import socket
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        d = start(daemons, new_daemon(workdir, extra=FAST +
                                      f"relayhost = [127.0.0.1]:"
                                      f"{silent.getsockname()[1]}\n"))
        qid = inject(d, ALICE, ["stuck@remote.test"], "stuck")
        conn, _ = silent.accept()          # the runner is connected now
        time.sleep(0.3)
        start_time = time.monotonic()
        d.signal(signal.SIGTERM)
        d.wait_exit(timeout=15)
        assert time.monotonic() - start_time < 12
        conn.close()
        assert [m["id"] for m in queue_list(d)] == [qid]
    finally:
        silent.close()
