"""The cluster group: daemons on one spool that are members of a real
corosync CPG group (a corosync of the test's own on loopback).

What a user of the cluster checks:
- every daemon joins and `clustermailctl cluster status` lists them all by
  name, with their figures;
- IDLE on one node hears a change made on another at once, even with the
  IDLE poll set to a minute (so polling cannot explain it): APPEND, LMTP
  delivery, clustermailctl deliver, flag changes, expunges;
- a member that dies is seen to leave; corosync dying or restarting never
  takes a daemon down, and the daemons rejoin when it is back;
- `user kick` and `queue flush` reach every node;
- cluster = auto without corosync is a quiet single node; cluster =
  corosync without it keeps serving and says why in the log.
"""
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time

import pytest

import cmtest
import imaptest
from imaptest import ALICE

pytestmark = pytest.mark.skipif(
    shutil.which("corosync") is None,
    reason="corosync is not installed (apt-get install corosync)")

MSG = ("From: a@example.org\r\nTo: alice@example.com\r\n"
       "Subject: cluster %d\r\nMessage-ID: <c%d@example.org>\r\n\r\nbody\r\n")


class Corosync:
    """A single-node corosync on 127.0.0.1 for the test: the CPG service
    every daemon of the test talks to (over corosync's IPC socket)."""

    def __init__(self, workdir):
        self.dir = os.path.join(str(workdir), "corosync")
        os.makedirs(self.dir, exist_ok=True)
        self.conf = os.path.join(self.dir, "corosync.conf")
        self.logfile = os.path.join(self.dir, "corosync.log")
        self.proc = None
        user = cmtest.mail_user()
        with open(self.conf, "w") as f:
            f.write(f"""totem {{
	version: 2
	cluster_name: cmtest
	transport: knet
	crypto_cipher: none
	crypto_hash: none
	token: 1000
}}
nodelist {{
	node {{
		ring0_addr: 127.0.0.1
		name: testnode
		nodeid: 1
	}}
}}
quorum {{
	provider: corosync_votequorum
}}
logging {{
	to_stderr: yes
	to_logfile: no
	to_syslog: no
}}
uidgid {{
	uid: {user}
}}
""")

    def running_elsewhere(self):
        """Another corosync already serves this host's IPC socket."""
        r = subprocess.run(["corosync-cpgtool"], capture_output=True,
                           timeout=10)
        return r.returncode == 0

    def start(self, tries=3):
        self.log = open(self.logfile, "ab")
        self.proc = subprocess.Popen(
            ["corosync", "-f", "-c", self.conf], stdout=self.log,
            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                # (a corosync stopped a moment ago may still hold its
                # port or IPC names)
                self.log.close()
                if tries > 1:
                    time.sleep(1)
                    return self.start(tries - 1)
                raise AssertionError("corosync exited:\n" + self.read_log())
            r = subprocess.run(["corosync-cpgtool"], capture_output=True,
                               timeout=10)
            if r.returncode == 0:
                return
            time.sleep(0.1)
        raise AssertionError("corosync did not start:\n" + self.read_log())

    def read_log(self):
        with open(self.logfile, "rb") as f:
            return f.read().decode(errors="replace")

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if getattr(self, "log", None):
            self.log.close()
            self.log = None

    def stop(self):
        cmtest.terminate(self.proc)
        if getattr(self, "log", None):
            self.log.close()
            self.log = None


@pytest.fixture
def corosync(workdir):
    if os.geteuid() != 0:
        pytest.skip("corosync needs root to run")
    c = Corosync(workdir)
    if c.running_elsewhere():
        pytest.skip("a corosync is already running on this host: the test "
                    "needs its own (corosync's IPC socket is one per host)")
    c.start()
    yield c
    c.stop()


def make_nodes(workdir, count, cluster="corosync", services=("imap", "lmtp"),
               extra=""):
    """count daemons on one spool and one users file, not started."""
    shared = cmtest.prepare_workdir(str(workdir))
    spool = os.path.join(shared, "spool")
    if not os.path.isdir(spool):
        os.mkdir(spool)
        cmtest.prepare_workdir(spool)
    daemons = []
    for i in range(count):
        d_dir = os.path.join(shared, f"node{i + 1}")
        os.makedirs(d_dir, exist_ok=True)
        cmtest.prepare_workdir(d_dir)
        d = cmtest.Daemon(d_dir, node=f"n{i + 1}", services=list(services))
        d.write_config(
            replace={"spool_dir": spool,
                     "users_file": os.path.join(shared, "users"),
                     "cluster": cluster},
            # A minute: only a notification can wake IDLE in time.
            extra="imap_idle_poll_interval = 60s\n" + extra)
        if i == 0:
            for u in imaptest.USERS:
                imaptest.add_user(d, u)
        daemons.append(d)
    return daemons


def cluster_view(d):
    return d.control_request("cluster")


def wait_members(daemons, count, timeout=20):
    """Until every daemon sees count members, each with its name."""
    deadline = time.monotonic() + timeout
    views = []
    while time.monotonic() < deadline:
        views = [cluster_view(d) for d in daemons]
        if all(v["joined"] and len(v["members"]) == count and
               all(m["name"] for m in v["members"]) for v in views):
            return views
        time.sleep(0.1)
    raise AssertionError(f"members never settled at {count}: {views}")


def stop_all(daemons):
    for d in daemons:
        d.stop()


@contextlib.contextmanager
def group(workdir, count, **kwargs):
    """count daemons on one spool, started and all members of the CPG
    group; stopped when the block ends."""
    daemons = make_nodes(workdir, count, **kwargs)
    try:
        for d in daemons:
            d.start()
        wait_members(daemons, count)
        yield daemons
    finally:
        stop_all(daemons)


idle_until = imaptest.idle_until


def idle_client(daemon, user=ALICE):
    """A Raw client of user on daemon, INBOX selected, in IDLE."""
    r = imaptest.Raw(daemon)
    r.login(user=user)
    assert r.cmd("s SELECT INBOX")[1].startswith("s OK")
    r.send("i IDLE\r\n")
    assert r.line().startswith("+")
    return r


def append(r, tag, text):
    data = text.encode()
    r.send(f"{tag} APPEND INBOX {{{len(data)}+}}\r\n".encode() + data + b"\r\n")
    return r.response(tag)[1]


def test_members_join_and_status(workdir, corosync):
    with group(workdir, 3) as daemons:
        views = [cluster_view(d) for d in daemons]
        for d, v in zip(daemons, views):
            assert v["mode"] == "corosync"
            assert v["group"] == "clustermail"
            assert v["last_error"] == ""
            names = sorted(m["name"] for m in v["members"])
            assert names == ["n1", "n2", "n3"]
            me = [m for m in v["members"] if m["self"]]
            assert [m["name"] for m in me] == [d.node]
            assert me[0]["pid"] == d.proc.pid
        # the figures come over the group: n1 sees n2's open session
        r = imaptest.Raw(daemons[1])
        try:
            deadline = time.monotonic() + 15
            seen = None
            while time.monotonic() < deadline:
                v = cluster_view(daemons[0])
                seen = {m["name"]: m for m in v["members"]}
                if seen["n2"]["connections"] >= 1:
                    break
                time.sleep(0.2)
            assert seen["n2"]["connections"] >= 1, seen
        finally:
            r.close()
        # the admin view: every node by name, in text and JSON
        out = daemons[0].ctl("cluster", "status")
        assert out.returncode == 0, out.stderr
        assert "corosync CPG: joined" in out.stdout
        for name in ("n1*", "n2", "n3"):
            assert any(line.split()[0] == name
                       for line in out.stdout.splitlines() if line.strip()), \
                out.stdout
        out = daemons[2].ctl("--json", "cluster", "status")
        assert out.returncode == 0, out.stderr
        doc = json.loads(out.stdout)
        assert doc["cpg"]["joined"] is True
        assert doc["cpg"]["members"] == 3
        assert sorted(n["name"] for n in doc["nodes"]) == ["n1", "n2", "n3"]
        assert [n["name"] for n in doc["nodes"] if n["self"]] == ["n3"]


def test_idle_hears_other_node_at_once(workdir, corosync):
    with group(workdir, 2) as daemons:
        a, b = daemons
        ra, rb = imaptest.Raw(a), imaptest.Raw(b)
        for r in (ra, rb):
            r.login()
            assert r.cmd("s SELECT INBOX")[1].startswith("s OK")
        rb.send("i IDLE\r\n")
        assert rb.line().startswith("+")
        latencies = []
        # APPEND on A
        for n in range(1, 6):
            start = time.monotonic()
            assert append(ra, f"p{n}", MSG % (n, n)).startswith(f"p{n} OK")
            got = idle_until(rb, lambda x, n=n: x == f"* {n} EXISTS", 5)
            assert f"* {n} EXISTS" in got, got
            latencies.append(time.monotonic() - start)
        # clustermailctl deliver on A's node (the LDA)
        start = time.monotonic()
        imaptest.deliver(a, ALICE, MSG % (6, 6))
        got = idle_until(rb, lambda x: x == "* 6 EXISTS", 5)
        assert "* 6 EXISTS" in got, got
        latencies.append(time.monotonic() - start)
        # a flag change on A
        start = time.monotonic()
        assert ra.cmd("f STORE 2 +FLAGS (\\Flagged)")[1].startswith("f OK")
        got = idle_until(rb, lambda x: "FETCH" in x and "\\Flagged" in x, 5)
        assert any("\\Flagged" in x for x in got), got
        latencies.append(time.monotonic() - start)
        # an expunge on A
        start = time.monotonic()
        assert ra.cmd("d STORE 1 +FLAGS (\\Deleted)")[1].startswith("d OK")
        assert ra.cmd("e EXPUNGE")[1].startswith("e OK")
        got = idle_until(rb, lambda x: x == "* 1 EXPUNGE", 5)
        assert "* 1 EXPUNGE" in got, got
        latencies.append(time.monotonic() - start)
        print("cross-node IDLE latencies (s):",
              " ".join(f"{x:.3f}" for x in latencies))
        # the IDLE poll is a minute: only the notification explains this
        assert max(latencies) < 2.0, latencies
        rb.send("DONE\r\n")
        assert rb.response("i")[1].startswith("i OK")
        # both views agree
        for r in (ra, rb):
            r.cmd("n NOOP")
        # (\\Recent belongs to one session: left out)
        fa = [x.replace(" \\Recent", "").replace("\\Recent", "")
              for x in ra.cmd("x UID FETCH 1:* (FLAGS)")[0]]
        fb = [x.replace(" \\Recent", "").replace("\\Recent", "")
              for x in rb.cmd("x UID FETCH 1:* (FLAGS)")[0]]
        assert fa == fb and len(fa) == 5, (fa, fb)
        ra.close()
        rb.close()


def test_lmtp_delivery_wakes_idle_on_other_node(workdir, corosync):
    import smtplib
    with group(workdir, 2) as daemons:
        a, b = daemons
        rb = idle_client(b)
        start = time.monotonic()
        with smtplib.LMTP("127.0.0.1", a.ports["lmtp"]) as lmtp:
            lmtp.sendmail("x@example.org", [ALICE], MSG % (1, 1))
        got = idle_until(rb, lambda x: x == "* 1 EXISTS", 5)
        assert "* 1 EXISTS" in got, got
        assert time.monotonic() - start < 2.0
        rb.send("DONE\r\n")
        assert rb.response("i")[1].startswith("i OK")
        rb.close()


def test_member_death_is_seen(workdir, corosync):
    with group(workdir, 3) as daemons:
        daemons[2].proc.kill()
        daemons[2].proc.wait()
        views = wait_members(daemons[:2], 2, timeout=15)
        for v in views:
            assert sorted(m["name"] for m in v["members"]) == ["n1", "n2"]
        log = daemons[0].read_log()
        assert "left the group (process died)" in log or \
            "left the group (left)" in log, log[-3000:]
        # a restarted n3 comes back
        daemons[2].start()
        wait_members(daemons, 3)


def test_corosync_dies_and_comes_back(workdir, corosync):
    with group(workdir, 2) as daemons:
        a, b = daemons
        corosync.kill()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            views = [cluster_view(d) for d in daemons]
            if not any(v["joined"] for v in views):
                break
            time.sleep(0.1)
        assert not any(v["joined"] for v in views), views
        assert all(v["last_error"] for v in views), views
        # still serving, without the group
        for d in daemons:
            assert d.proc.poll() is None
            m = imaptest.login(d)
            m.select("INBOX")
            m.logout()
        # IDLE still works across nodes by polling (cluster = none speed)
        corosync.start()
        views = wait_members(daemons, 2, timeout=30)
        assert all(v["last_error"] == "" for v in views)
        assert "cluster: joined CPG group" in a.read_log()
        # and notifications work again
        rb = idle_client(b)
        start = time.monotonic()
        imaptest.deliver(a, ALICE, MSG % (1, 1))
        got = idle_until(rb, lambda x: x == "* 1 EXISTS", 5)
        assert "* 1 EXISTS" in got, got
        assert time.monotonic() - start < 2.0
        rb.close()


def test_kick_user_reaches_every_node(workdir, corosync):
    with group(workdir, 2) as daemons:
        a, b = daemons
        rb = idle_client(b)
        other = imaptest.Raw(b)     # bob stays
        other.login(user="bob@example.com")
        out = a.ctl("user", "kick", "Alice@Example.com")
        assert out.returncode == 0, out.stderr
        assert "every node" in out.stdout
        got = idle_until(rb, lambda x: x.startswith("* BYE"), 5)
        assert any(x.startswith("* BYE") for x in got), got
        assert other.cmd("n NOOP")[1].startswith("n OK")
        other.close()
        rb.close()


def test_queue_flush_reaches_every_node(workdir, corosync):
    with group(workdir, 2, services=("imap", "smtp")) as daemons:
        a, b = daemons
        out = a.ctl("queue", "flush")
        assert out.returncode == 0, out.stderr
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if "cluster: queue flush asked by node n1" in b.read_log():
                break
            time.sleep(0.1)
        assert "cluster: queue flush asked by node n1" in b.read_log()


def test_auto_without_corosync_is_quiet(workdir):
    if subprocess.run(["corosync-cpgtool"], capture_output=True,
                      timeout=10).returncode == 0:
        pytest.skip("a corosync runs on this host")
    (d,) = make_nodes(workdir, 1, cluster="auto")
    try:
        d.start()
        time.sleep(0.5)
        v = cluster_view(d)
        assert v["mode"] == "auto" and v["joined"] is False
        assert "corosync is not running" in v["last_error"]
        assert "WARN" not in d.read_log().upper().replace("WARNINGS", "")
        m = imaptest.login(d)
        m.logout()
    finally:
        d.stop()


def test_corosync_mode_without_corosync_serves_and_warns(workdir):
    if subprocess.run(["corosync-cpgtool"], capture_output=True,
                      timeout=10).returncode == 0:
        pytest.skip("a corosync runs on this host")
    (d,) = make_nodes(workdir, 1, cluster="corosync")
    try:
        d.start()
        deadline = time.monotonic() + 5
        while "cluster: cannot connect to corosync" not in d.read_log() and \
                time.monotonic() < deadline:
            time.sleep(0.1)
        assert "cluster: cannot connect to corosync: corosync is not running" \
            in d.read_log()
        m = imaptest.login(d)
        m.logout()
        out = d.ctl("cluster", "status")
        assert out.returncode == 0
        assert "not joined" in out.stdout
    finally:
        d.stop()


def test_cluster_none_never_joins(workdir, corosync):
    (d,) = make_nodes(workdir, 1, cluster="none")
    try:
        d.start()
        time.sleep(1)
        v = cluster_view(d)
        assert v["mode"] == "none" and v["joined"] is False
        assert v["members"] == []
        r = subprocess.run(["corosync-cpgtool"], capture_output=True,
                           text=True, timeout=10)
        assert "clustermail" not in r.stdout
    finally:
        d.stop()


def test_bad_cluster_group_is_a_config_error(workdir):
    d = cmtest.Daemon(workdir, services=["imap"],
                      extra="cluster_group = has space\n")
    r = subprocess.run([cmtest.binary("clustermaild"), "-c", d.conf,
                        "--check-config"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 78
    assert "cluster_group" in r.stderr
    d.write_config(extra="cluster = sometimes\n")
    r = subprocess.run([cmtest.binary("clustermaild"), "-c", d.conf,
                        "--check-config"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 78
    assert "cluster" in r.stderr
