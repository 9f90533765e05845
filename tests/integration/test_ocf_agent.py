"""The OCF resource agent pacemaker/clustermail against a real clustermaild.

Each test runs the agent the way Pacemaker's executor does: OCF_ROOT,
OCF_RESOURCE_INSTANCE, the parameters as OCF_RESKEY_* variables, the
operation's meta attributes (timeout, interval, clone) as
OCF_RESKEY_CRM_meta_*, and the monitor depth as OCF_CHECK_LEVEL. The daemon
is started and stopped by the agent (it detaches, writes its pid file,
drops to the mail user), with its config from cmtest.Daemon: loopback
ports, every file in the test's temp dir.

What a crash looks like: after kill -9 the process is gone and its pid
file and control socket are left behind; the agent reports that as
OCF_NOT_RUNNING (7), which Pacemaker treats as a failed resource and
recovers (stop, start). A process that is alive but does not answer, or
a failed protocol or spool probe, is OCF_ERR_GENERIC (1).
"""
import os
import shutil
import signal
import smtplib
import socket
import subprocess
import time
import xml.etree.ElementTree as ET

import pytest

import cmtest

OCF_ROOT = "/usr/lib/ocf"
AGENT = os.path.join(
    os.environ.get("top_srcdir")
    or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."),
    "pacemaker", "clustermail")
RA_SHARE = "/usr/share/resource-agents"

OCF_SUCCESS = 0
OCF_ERR_GENERIC = 1
OCF_ERR_INSTALLED = 5
OCF_ERR_CONFIGURED = 6
OCF_NOT_RUNNING = 7

# The listeners the daemon gets: plain ones for the protocol probes and
# one implicit-TLS one for the handshake probe.
SERVICES = ["imap", "imaps", "pop3", "smtp", "lmtp"]


def require_ocf():
    if not os.path.exists(os.path.join(OCF_ROOT, "lib/heartbeat/ocf-shellfuncs")):
        pytest.skip(f"{OCF_ROOT}/lib/heartbeat/ocf-shellfuncs is missing "
                    "(apt-get install resource-agents)")
    if not cmtest.have("bash"):
        pytest.skip("bash is missing")


class Agent:
    """Runs the agent's actions for one daemon config (a cmtest.Daemon
    that is never started by cmtest itself)."""

    def __init__(self, daemon, **params):
        self.daemon = daemon
        self.params = {
            "config": daemon.conf,
            "binary": cmtest.binary("clustermaild"),
            "ctl_binary": cmtest.binary("clustermailctl"),
            "node": daemon.node,
            "monitor_protocols": "imap imaps pop3 smtp lmtp",
        }
        self.params.update(params)

    def environment(self, action, depth=None, meta=None, **params):
        """The environment Pacemaker's executor gives the agent."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "OCF_ROOT": OCF_ROOT,
            "OCF_RA_VERSION_MAJOR": "1",
            "OCF_RA_VERSION_MINOR": "0",
            "OCF_RESOURCE_INSTANCE": "clustermail-test",
            "OCF_RESOURCE_TYPE": "clustermail",
            "OCF_RESOURCE_PROVIDER": "clustermail",
            "OCF_RESKEY_crm_feature_set": "3.16.2",
            "OCF_RESKEY_CRM_meta_timeout": "60000",
        }
        if action == "monitor":
            env["OCF_RESKEY_CRM_meta_interval"] = "20000"
        for key, value in {**self.params, **params}.items():
            if value is not None:
                env[f"OCF_RESKEY_{key}"] = value
        if depth is not None:
            env["OCF_CHECK_LEVEL"] = str(depth)
        for key, value in (meta or {}).items():
            env[f"OCF_RESKEY_CRM_meta_{key}"] = str(value)
        return env

    def run(self, action, depth=None, meta=None, timeout=120, **params):
        """One action; returns (exit status, exit reason or "", stderr)."""
        env = self.environment(action, depth, meta, **params)
        proc = subprocess.run([AGENT, action], env=env, capture_output=True,
                              text=True, timeout=timeout)
        reasons = [line.split(":", 1)[1] for line in proc.stderr.splitlines()
                   if line.startswith("ocf-exit-reason:")]
        return proc.returncode, "\n".join(reasons), proc.stderr

    def pid(self):
        try:
            with open(self.daemon.pidfile) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def status(self):
        """The daemon's status, from its control socket (not through
        clustermailctl, which needs a valid config file)."""
        return self.daemon.control_request("status")

    def cleanup(self):
        """Stop through the agent; kill whatever is left."""
        try:
            self.run("stop", timeout=90)
        finally:
            pid = self.pid()
            if pid and alive(pid):
                os.kill(pid, signal.SIGKILL)
                wait_gone(pid)


def alive(pid):
    """Is pid a live clustermaild (not a reused pid)? A zombie counts as
    dead only once its other threads are gone too: until then they still
    hold its sockets."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        with open(f"/proc/{pid}/comm") as f:
            comm = f.read().strip()
        threads = len(os.listdir(f"/proc/{pid}/task"))
    except (OSError, IndexError):
        return False
    if state in ("Z", "X") and threads <= 1:
        return False
    return comm == "clustermaild"


def wait_gone(pid, timeout=15):
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            raise AssertionError(f"pid {pid} still alive after {timeout}s")
        time.sleep(0.05)


def rewrite_config(daemon, **settings):
    """The daemon's config with settings changed (or added)."""
    text = daemon.config_text()
    keys = {line.split(" = ")[0] for line in text.splitlines()}
    daemon.write_config(
        replace={k: v for k, v in settings.items() if k in keys},
        extra="\n".join([daemon.extra] + [f"{k} = {v}" for k, v in
                                          settings.items() if k not in keys]))


def make_spool(daemon):
    spool = os.path.join(daemon.dir, "spool")
    os.makedirs(spool, exist_ok=True)
    cmtest.prepare_workdir(spool)
    return spool


@pytest.fixture
def agent(workdir):
    """An agent for a configured (not running) daemon with a spool."""
    require_ocf()
    daemon = cmtest.Daemon(workdir, services=SERVICES)
    make_spool(daemon)
    a = Agent(daemon)
    yield a
    a.cleanup()


def connect(port, timeout=5):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.settimeout(timeout)
    return s


def imap_command(sock_file, sock, tag, command):
    sock.sendall(f"{tag} {command}\r\n".encode())
    while True:
        line = sock_file.readline().decode()
        if not line:
            raise AssertionError(f"connection closed waiting for {tag}")
        if line.startswith(tag + " "):
            return line.strip()


# ------------------------------------------------------------------ tests

def test_meta_data_is_valid():
    """meta-data: exit 0, valid against resource-agents' RelaxNG schema and
    DTD, and it names every parameter and action the agent implements."""
    require_ocf()
    proc = subprocess.run([AGENT, "meta-data"], capture_output=True, text=True,
                          env={"PATH": os.environ["PATH"], "OCF_ROOT": OCF_ROOT})
    assert proc.returncode == 0, proc.stderr
    root = ET.fromstring(proc.stdout)
    assert root.get("name") == "clustermail"
    params = {p.get("name"): p.find("content").get("default")
              for p in root.iter("parameter")}
    assert params == {
        "config": "/etc/clustermail/clustermail.conf",
        "binary": "clustermaild", "ctl_binary": "clustermailctl",
        "pid": "", "node": "", "monitor_protocols": "imap smtp",
        "drain_timeout": "0", "probe_timeout": "10"}
    actions = {a.get("name") for a in root.iter("action")}
    assert {"start", "stop", "monitor", "reload", "validate-all",
            "meta-data"} <= actions
    depths = {a.get("depth") for a in root.iter("action")
              if a.get("name") == "monitor"}
    assert depths == {"0", "10", "20"}
    if not cmtest.have("xmllint"):
        pytest.skip("xmllint is missing (apt-get install libxml2-utils)")
    for flag, schema in (("--relaxng", "metadata.rng"),
                         ("--dtdvalid", "ra-api-1.dtd")):
        path = os.path.join(RA_SHARE, schema)
        if not os.path.exists(path):
            pytest.skip(f"{path} is missing (resource-agents)")
        check = subprocess.run(["xmllint", "--noout", flag, path, "-"],
                               input=proc.stdout, capture_output=True,
                               text=True, cwd=RA_SHARE)
        assert check.returncode == 0, check.stderr


def test_lifecycle(agent):
    """stopped -> 7 (monitor and probe); stop when stopped -> 0; start;
    monitor 0/10/20 -> 0; start again -> 0 with the same process; stop
    leaves no process, pid file or socket behind."""
    assert agent.run("monitor")[0] == OCF_NOT_RUNNING
    assert agent.run("monitor", meta={"interval": 0})[0] == OCF_NOT_RUNNING
    assert agent.run("stop")[0] == OCF_SUCCESS
    assert agent.run("validate-all")[0] == OCF_SUCCESS

    rc, reason, err = agent.run("start")
    assert rc == OCF_SUCCESS, err
    pid = agent.pid()
    assert pid and alive(pid)
    assert agent.status()["pid"] == pid
    for depth in (0, 10, 20):
        rc, reason, err = agent.run("monitor", depth=depth)
        assert rc == OCF_SUCCESS, f"depth {depth}: {err}"
    assert agent.run("monitor", meta={"interval": 0})[0] == OCF_SUCCESS

    rc, reason, err = agent.run("start")
    assert rc == OCF_SUCCESS, err
    assert agent.pid() == pid

    rc, reason, err = agent.run("stop")
    assert rc == OCF_SUCCESS, err
    assert not alive(pid)
    assert not os.path.exists(agent.daemon.pidfile)
    assert not os.path.exists(agent.daemon.control)
    assert agent.run("monitor")[0] == OCF_NOT_RUNNING
    assert agent.run("stop")[0] == OCF_SUCCESS


def test_probe_without_binaries(agent):
    """A node without the programs: the probe says not running (Pacemaker
    probes every node), a recurring monitor says not installed, stop
    succeeds."""
    missing = {"binary": "/nonexistent/clustermaild",
               "ctl_binary": "/nonexistent/clustermailctl"}
    rc, reason, err = agent.run("monitor", meta={"interval": 0}, **missing)
    assert rc == OCF_NOT_RUNNING, err
    rc, reason, err = agent.run("monitor", **missing)
    assert rc == OCF_ERR_INSTALLED, err
    assert "/nonexistent/clustermaild" in reason
    assert agent.run("stop", **missing)[0] == OCF_SUCCESS
    rc, reason, err = agent.run("validate-all", **missing)
    assert rc == OCF_ERR_INSTALLED and "clustermailctl" in reason, err


def test_crash_is_not_running(agent):
    """kill -9: the pid file and socket stay, the process is gone: monitor
    says OCF_NOT_RUNNING (Pacemaker recovers it); stop cleans up; start
    works again."""
    assert agent.run("start")[0] == OCF_SUCCESS
    pid = agent.pid()
    os.kill(pid, signal.SIGKILL)
    wait_gone(pid)
    assert os.path.exists(agent.daemon.pidfile)
    assert os.path.exists(agent.daemon.control)
    for depth in (0, 10, 20):
        rc, reason, err = agent.run("monitor", depth=depth)
        assert rc == OCF_NOT_RUNNING, f"depth {depth}: {err}"
    assert agent.run("monitor", meta={"interval": 0})[0] == OCF_NOT_RUNNING
    assert agent.run("stop")[0] == OCF_SUCCESS
    assert not os.path.exists(agent.daemon.pidfile)
    assert not os.path.exists(agent.daemon.control)
    rc, reason, err = agent.run("start")
    assert rc == OCF_SUCCESS, err
    assert agent.pid() != pid and alive(agent.pid())


def test_dead_control_socket_is_failure(agent):
    """The process lives but its control socket is gone: OCF_ERR_GENERIC
    with a reason; stop still stops it."""
    assert agent.run("start")[0] == OCF_SUCCESS
    pid = agent.pid()
    os.unlink(agent.daemon.control)
    rc, reason, err = agent.run("monitor")
    assert rc == OCF_ERR_GENERIC, err
    assert "control socket" in reason and str(pid) in reason
    rc, reason, err = agent.run("stop")
    assert rc == OCF_SUCCESS, err
    assert not alive(pid)


def test_broken_imap_listener_fails_depth_10(agent):
    """The daemon lives but its IMAP listening socket is destroyed (ss -K):
    depth 0 still passes, depth 10 fails with a reason naming IMAP."""
    if os.geteuid() != 0 or not cmtest.have("ss"):
        pytest.skip("needs root and ss (iproute2) to destroy a listening socket")
    assert agent.run("start")[0] == OCF_SUCCESS
    port = agent.daemon.ports["imap"]
    assert agent.run("monitor", depth=10)[0] == OCF_SUCCESS
    subprocess.run(["ss", "-K", "-ltn", f"sport = :{port}"], check=True,
                   capture_output=True)
    listening = subprocess.run(["ss", "-Hltn", f"sport = :{port}"],
                               capture_output=True, text=True).stdout
    if listening.strip():
        pytest.skip("ss -K cannot destroy sockets here "
                    "(kernel without CONFIG_INET_DIAG_DESTROY)")
    assert agent.run("monitor", depth=0)[0] == OCF_SUCCESS
    rc, reason, err = agent.run("monitor", depth=10)
    assert rc == OCF_ERR_GENERIC, err
    assert reason.startswith("imap probe of 127.0.0.1:%d failed" % port), reason
    # Only the broken listener: the others still pass.
    rc, reason, err = agent.run("monitor", depth=10,
                                monitor_protocols="pop3 smtp lmtp imaps")
    assert rc == OCF_SUCCESS, err
    # Each protocol's probe notices its own listener going away.
    for proto in ("pop3", "smtp", "lmtp", "imaps"):
        if proto == "imaps" and not cmtest.have("openssl"):
            continue
        port = agent.daemon.ports[proto]
        subprocess.run(["ss", "-K", "-ltn", f"sport = :{port}"],
                       check=True, capture_output=True)
        rc, reason, err = agent.run("monitor", depth=10,
                                    monitor_protocols=proto)
        assert rc == OCF_ERR_GENERIC, err
        assert reason.startswith(f"{proto} probe of 127.0.0.1:{port} failed"), \
            reason


def test_depth_20_fails_without_spool(agent):
    """The spool vanishes (an unmounted file system): depth 0 and 10 pass,
    depth 20 (lock round trip + spool write/read) fails with a reason."""
    shutil.rmtree(os.path.join(agent.daemon.dir, "spool"))
    rc, reason, err = agent.run("start")
    assert rc == OCF_SUCCESS, err
    assert agent.run("monitor", depth=10)[0] == OCF_SUCCESS
    rc, reason, err = agent.run("monitor", depth=20)
    assert rc == OCF_ERR_GENERIC, err
    assert "probe failed" in reason, reason


def test_reload_sends_sighup(agent):
    """reload: the daemon takes the changed file (its configuration
    generation grows); a broken file is refused with OCF_ERR_CONFIGURED
    and the daemon keeps running on its old configuration."""
    assert agent.run("start")[0] == OCF_SUCCESS
    pid = agent.pid()
    before = agent.status()["config_generation"]
    rewrite_config(agent.daemon, workers="1", log_level="info")
    rc, reason, err = agent.run("reload")
    assert rc == OCF_SUCCESS, err
    after = agent.status()["config_generation"]
    assert after > before
    assert agent.pid() == pid

    agent.daemon.write_config(extra="no_such_key = 1")
    rc, reason, err = agent.run("reload")
    assert rc == OCF_ERR_CONFIGURED, err
    assert "no_such_key" in reason
    assert agent.status()["config_generation"] == after
    assert agent.run("monitor")[0] == OCF_SUCCESS


def test_broken_config_does_not_stop_a_running_daemon(agent):
    """A typo in the file while the daemon runs: monitor still says running
    (it finds the daemon by its command line and warns), start refuses the
    file, stop still drains and stops the daemon."""
    assert agent.run("start")[0] == OCF_SUCCESS
    pid = agent.pid()
    agent.daemon.write_config(extra="no_such_key = 1")
    for depth in (0, 20):
        rc, reason, err = agent.run("monitor", depth=depth)
        assert rc == OCF_SUCCESS, err
        assert "no_such_key" in err and "only its process was checked" in err
    rc, reason, err = agent.run("stop")
    assert rc == OCF_SUCCESS, err
    assert not alive(pid)
    assert agent.run("monitor")[0] == OCF_NOT_RUNNING
    rc, reason, err = agent.run("start")
    assert rc == OCF_ERR_CONFIGURED and "no_such_key" in reason, err


def test_reload_when_stopped(agent):
    rc, reason, err = agent.run("reload")
    assert rc == OCF_NOT_RUNNING, err


def test_validate_bad_config(agent):
    """An invalid file: validate-all and start say OCF_ERR_CONFIGURED with
    the daemon's own reason, and nothing starts; a missing file is
    OCF_ERR_INSTALLED (a node-local problem)."""
    agent.daemon.write_config(extra="listen_imap_typo = 127.0.0.1:1")
    rc, reason, err = agent.run("validate-all")
    assert rc == OCF_ERR_CONFIGURED, err
    assert "listen_imap_typo" in reason
    rc, reason, err = agent.run("start")
    assert rc == OCF_ERR_CONFIGURED, err
    assert agent.pid() is None
    rc, reason, err = agent.run("validate-all", config="/nonexistent.conf")
    assert rc == OCF_ERR_INSTALLED, err
    assert "/nonexistent.conf" in reason
    rc, reason, err = agent.run("validate-all", drain_timeout="soon")
    assert rc == OCF_ERR_CONFIGURED and "drain_timeout" in reason, err
    rc, reason, err = agent.run("validate-all", monitor_protocols="imap gopher")
    assert rc == OCF_ERR_CONFIGURED and "gopher" in reason, err


CLONE = {"clone": "0", "clone_max": "2", "clone_node_max": "1"}


def test_clone_refuses_local_spool(agent):
    """As a clone, a spool on a local file system is refused (the test
    spool is in /tmp), unless cluster = local-test."""
    fstype = subprocess.run(["stat", "-f", "-c", "%T", agent.daemon.dir],
                            capture_output=True, text=True).stdout.strip()
    if fstype in ("gfs2", "gfs", "ocfs2", "nfs", "nfs4"):
        pytest.skip(f"the temp dir is on {fstype}, a cluster file system")
    rc, reason, err = agent.run("validate-all", meta=CLONE)
    assert rc == OCF_ERR_CONFIGURED, err
    assert fstype in reason and "GFS2" in reason, reason
    rc, reason, err = agent.run("start", meta=CLONE)
    assert rc == OCF_ERR_CONFIGURED, err
    assert agent.pid() is None
    # A single instance (not a clone, or clone-max 1) may use it.
    assert agent.run("validate-all")[0] == OCF_SUCCESS
    assert agent.run("validate-all", meta={**CLONE, "clone_max": "1"})[0] == \
        OCF_SUCCESS

    rewrite_config(agent.daemon, cluster="local-test")
    rc, reason, err = agent.run("validate-all", meta=CLONE)
    assert rc == OCF_SUCCESS, err
    rc, reason, err = agent.run("start", meta=CLONE)
    assert rc == OCF_SUCCESS, err
    assert agent.run("monitor", depth=20, meta=CLONE)[0] == OCF_SUCCESS

    # One process per lock space is not a cluster.
    rewrite_config(agent.daemon, cluster="local-test", lock_backend="local")
    rc, reason, err = agent.run("validate-all", meta=CLONE)
    assert rc == OCF_ERR_CONFIGURED and "lock_backend" in reason, err


def test_stop_drains_sessions(agent):
    """stop = SIGTERM: the listeners close at once, an SMTP transaction in
    progress finishes (its message is accepted with 250), and stop returns
    once the daemon has exited."""
    import imaptest
    imaptest.add_user(agent.daemon, imaptest.ALICE)
    # Room for a slow machine: the drain must not end on its own first.
    rewrite_config(agent.daemon, shutdown_timeout="30s")
    assert agent.run("start")[0] == OCF_SUCCESS
    pid = agent.pid()
    smtp = smtplib.SMTP("127.0.0.1", agent.daemon.ports["smtp"], timeout=30)
    stop = None
    try:
        smtp.ehlo("client.example.net")
        assert smtp.mail("sender@example.net")[0] == 250
        assert smtp.rcpt(imaptest.ALICE)[0] == 250
        smtp.putcmd("data")
        assert smtp.getreply()[0] == 354
        smtp.send(b"Subject: drain\r\n\r\nfirst half\r\n")
        stop = subprocess.Popen(
            [AGENT, "stop"], env=agent.environment("stop"),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        while True:        # the listeners close once the drain begins
            try:
                connect(agent.daemon.ports["imap"], timeout=1).close()
            except OSError:
                break
            assert time.monotonic() < deadline, "still accepting while draining"
            time.sleep(0.05)
        assert alive(pid)
        assert stop.poll() is None, "stop returned during a transaction"
        smtp.send(b"second half\r\n.\r\n")
        code, text = smtp.getreply()
        assert code == 250, text
        try:
            smtp.quit()
        except smtplib.SMTPException:
            pass
        assert stop.wait(timeout=15) == OCF_SUCCESS, stop.stderr.read()
    finally:
        smtp.close()
        if stop is not None:
            if stop.poll() is None:
                stop.kill()
                stop.wait()
            stop.stderr.close()
    assert not alive(pid)


def test_stop_ends_the_drain_after_drain_timeout(agent):
    """An idle session that never logs out, shutdown_timeout 30s:
    drain_timeout=1 makes stop end the drain after about a second."""
    rewrite_config(agent.daemon, shutdown_timeout="30s")
    assert agent.run("start")[0] == OCF_SUCCESS
    pid = agent.pid()
    sock = connect(agent.daemon.ports["imap"])
    try:
        start = time.monotonic()
        rc, reason, err = agent.run("stop", drain_timeout="1")
        elapsed = time.monotonic() - start
    finally:
        sock.close()
    assert rc == OCF_SUCCESS, err
    assert not alive(pid)
    assert elapsed < 10, f"stop took {elapsed:.1f}s"


def test_stop_kills_a_hung_daemon(agent):
    """A daemon that does not react to signals (SIGSTOP) is killed with
    SIGKILL before the stop operation's timeout."""
    assert agent.run("start")[0] == OCF_SUCCESS
    pid = agent.pid()
    os.kill(pid, signal.SIGSTOP)
    start = time.monotonic()
    rc, reason, err = agent.run("stop", meta={"timeout": "15000"})
    elapsed = time.monotonic() - start
    assert rc == OCF_SUCCESS, err
    assert not alive(pid)
    assert elapsed < 15, f"stop took {elapsed:.1f}s"
    assert "SIGKILL" in err


def test_node_defaults_to_pacemakers_node_name(agent):
    """Without the node parameter the daemon acts as the node Pacemaker
    runs the operation on (OCF_RESKEY_CRM_meta_on_node)."""
    on_node = {"on_node": agent.daemon.node}
    rc, reason, err = agent.run("start", meta=on_node, node=None)
    assert rc == OCF_SUCCESS, err
    with open(f"/proc/{agent.pid()}/cmdline", "rb") as f:
        args = f.read().split(b"\0")
    assert args[args.index(b"--node") + 1] == agent.daemon.node.encode()
    rc, reason, err = agent.run("monitor", depth=10, meta=on_node, node=None)
    assert rc == OCF_SUCCESS, err
    rc, reason, err = agent.run("stop", meta=on_node, node=None)
    assert rc == OCF_SUCCESS, err
