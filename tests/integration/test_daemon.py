"""clustermaild end to end: start-up, listeners, /health, /metrics, the
control socket, clustermailctl status, SIGHUP reload, SIGTERM drain."""
import json
import os
import pwd
import re
import signal
import socket
import ssl
import subprocess
import time

import pytest

import cmtest
from cmtest import Daemon, binary, read_greeting

# SMTP, submission and LMTP greet with 220; IMAP with IMAP_GREETING, POP3
# with POP3_GREETING.
GREETINGS = {
    "smtp": b"220 ",
    "submission": b"220 ",
    "lmtp": b"220 ",
}
IMAP_GREETING = b"* OK [CAPABILITY IMAP4rev1 "
POP3_GREETING = b"+OK clustermail ready\r\n"
METRIC_LINE = re.compile(
    r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="[^"\\]*"'
    r'(,[a-zA-Z_][a-zA-Z0-9_]*="[^"\\]*")*\})? -?[0-9.e+]+$')


def metric(text, name, labels=""):
    for line in text.splitlines():
        if line.startswith(name + labels + " "):
            return float(line.split()[-1])
    raise AssertionError(f"metric {name}{labels} not found")


def read_line(sock, timeout=5):
    """One line (with CRLF) from a server that keeps the connection open."""
    sock.settimeout(timeout)
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data


def imap_greeting(port):
    with socket.create_connection(("127.0.0.1", port)) as s:
        return read_line(s)


def tls_client_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def test_version_and_help():
    out = subprocess.run([binary("clustermaild"), "--version"],
                         capture_output=True, text=True, check=True)
    assert re.match(r"clustermaild \d+\.\d+\.\d+", out.stdout)
    bad = subprocess.run([binary("clustermaild"), "--no-such-option"],
                         capture_output=True, text=True)
    assert bad.returncode == 64
    assert "usage:" in bad.stderr


def test_health_and_metrics(daemon):
    status, headers, body = daemon.http_get("/health")
    assert status == 200 and body == "ok\n"
    status, headers, body = daemon.http_get("/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    for line in body.splitlines():
        if not line.startswith("#"):
            assert METRIC_LINE.match(line), f"bad exposition line: {line!r}"
    assert 'clustermail_build_info{version="' in body
    assert 'node="n1"' in body
    assert metric(body, "clustermail_draining") == 0
    assert metric(body, "clustermail_uptime_seconds") >= 0


def test_http_errors(daemon):
    assert daemon.http_get("/nope")[0] == 404
    assert daemon.http_get("/metrics", method="POST")[0] == 405
    status, _, body = daemon.http_get("/health", method="HEAD")
    assert status == 200 and body == ""
    with socket.create_connection(("127.0.0.1", daemon.metrics_port)) as s:
        s.sendall(b"garbage\r\n\r\n")
        assert read_greeting(s).startswith(b"HTTP/1.1 400 ")
    with socket.create_connection(("127.0.0.1", daemon.metrics_port)) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 20000)
        try:
            reply = read_greeting(s)
        except ConnectionResetError:
            reply = b""     # closed with our unread bytes pending: RST
        assert reply.startswith(b"HTTP/1.1 431 ") or reply == b""
    assert daemon.http_get("/health")[0] == 200


def test_imap_listener_greets(daemon):
    data = imap_greeting(daemon.ports["imap"])
    assert data.startswith(IMAP_GREETING), data
    assert data.endswith(b"] clustermail ready\r\n")


def test_pop3_listeners_greet(daemon):
    with socket.create_connection(("127.0.0.1", daemon.ports["pop3"])) as s:
        assert read_line(s) == POP3_GREETING
    ctx = tls_client_context()
    with socket.create_connection(("127.0.0.1", daemon.ports["pop3s"])) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            assert s.version() in ("TLSv1.2", "TLSv1.3")
            assert read_line(s) == POP3_GREETING


@pytest.mark.parametrize("service", ["smtp", "submission", "lmtp"])
def test_smtp_listeners_greet(daemon, service):
    with socket.create_connection(("127.0.0.1", daemon.ports[service])) as s:
        data = read_line(s)
    assert data.startswith(GREETINGS[service]), data
    assert data.endswith(b"\r\n") and data.count(b"\r\n") == 1


def test_imaps_listener_greets_inside_tls(daemon):
    ctx = tls_client_context()
    with socket.create_connection(("127.0.0.1", daemon.ports["imaps"])) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            assert s.version() in ("TLSv1.2", "TLSv1.3")
            data = read_line(s)
    assert data.startswith(IMAP_GREETING), data
    # no STARTTLS inside TLS
    assert b"STARTTLS" not in data


def test_submissions_greets_inside_tls(daemon):
    ctx = tls_client_context()
    with socket.create_connection(("127.0.0.1", daemon.ports["submissions"])) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            assert s.version() in ("TLSv1.2", "TLSv1.3")
            data = read_line(s)
    assert data.startswith(b"220 ") and b"ESMTP" in data, data


def test_tls_handshake_garbage_does_not_hurt(daemon):
    with socket.create_connection(("127.0.0.1", daemon.ports["imaps"])) as s:
        s.sendall(b"\x16\x03\x01\x00\x05hello-this-is-not-tls" * 10)
        s.settimeout(5)
        try:
            while s.recv(4096):
                pass
        except (ConnectionResetError, socket.timeout):
            pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        body = daemon.http_get("/metrics")[2]
        if metric(body, "clustermail_tls_handshake_failures_total",
                  '{service="imaps"}') >= 1:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("TLS failure not counted")
    assert imap_greeting(daemon.ports["imap"]).startswith(IMAP_GREETING)


def test_connection_metrics_count(daemon):
    before = metric(daemon.http_get("/metrics")[2],
                    "clustermail_connections_total", '{service="pop3"}')
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", daemon.ports["pop3"])) as s:
            assert read_line(s) == POP3_GREETING
    body = daemon.http_get("/metrics")[2]
    assert metric(body, "clustermail_connections_total",
                  '{service="pop3"}') == before + 5


def test_many_concurrent_connections(daemon):
    socks = [socket.create_connection(("127.0.0.1", daemon.ports["smtp"]))
             for _ in range(200)]
    try:
        for s in socks:
            assert read_line(s).startswith(b"220 ")
    finally:
        for s in socks:
            s.close()
    assert daemon.http_get("/health")[0] == 200


def test_ctl_status(daemon):
    out = daemon.ctl("status")
    assert out.returncode == 0, out.stderr
    assert re.search(r"^node:\s+n1$", out.stdout, re.M)
    assert re.search(r"^pid:\s+%d$" % daemon.proc.pid, out.stdout, re.M)
    out = daemon.ctl("--json", "status")
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    assert status["node"] == "n1"
    assert status["pid"] == daemon.proc.pid
    assert status["draining"] is False
    assert status["workers"] == 2
    assert status["uptime_seconds"] >= 0
    assert set(status["connections"]) == set(cmtest.SERVICES)
    assert status["listeners"]["imap"] == f"127.0.0.1:{daemon.ports['imap']}"
    assert status["version"] == subprocess.run(
        [binary("clustermaild"), "--version"], capture_output=True,
        text=True).stdout.split()[1]


def test_ctl_status_without_daemon(workdir):
    d = Daemon(workdir)
    out = d.ctl("status")
    assert out.returncode == 69
    assert "is the daemon running" in out.stderr


def test_control_socket_protocol(daemon):
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(daemon.control)
        s.sendall(b"ping\nbogus\nhelp\n")
        s.settimeout(5)
        data = b""
        while data.count(b"\n") < 3:
            data += s.recv(4096)
    replies = [json.loads(line) for line in data.decode().splitlines()]
    assert replies[0] == {"pong": True}
    assert "unknown command" in replies[1]["error"]
    assert "status" in replies[2]["commands"]
    with socket.socket(socket.AF_UNIX) as s:
        # An over-long line gets an error; the connection stays usable.
        s.connect(daemon.control)
        s.sendall(b"x" * 5000 + b"\nping\n")
        s.settimeout(5)
        data = b""
        while data.count(b"\n") < 2:
            data += s.recv(4096)
        replies = [json.loads(line) for line in data.decode().splitlines()]
        assert replies == [{"error": "line too long"}, {"pong": True}]
    assert json.loads(daemon.ctl("--json", "status").stdout)["node"] == "n1"


def test_control_replies_keep_command_order_around_probe(daemon):
    """probe answers later than the commands around it; the replies still
    come in the order of the commands, also when the probe is refused at
    once (no spool here) and when two probes are pipelined."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(daemon.control)
        s.sendall(b"ping\nprobe\nping\nprobe\nbogus\n")
        s.settimeout(15)
        data = b""
        while data.count(b"\n") < 5:
            chunk = s.recv(4096)
            assert chunk, data
            data += chunk
    replies = [json.loads(line) for line in data.decode().splitlines()]
    assert replies[0] == {"pong": True}
    assert "mail store is unavailable" in replies[1]["error"]
    assert replies[2] == {"pong": True}
    assert "mail store is unavailable" in replies[3]["error"]
    assert "unknown command" in replies[4]["error"]


def test_sighup_reload(daemon):
    gen = json.loads(daemon.ctl("--json", "status").stdout)["config_generation"]
    daemon.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while json.loads(daemon.ctl("--json", "status").stdout)[
            "config_generation"] != gen + 1:
        assert time.monotonic() < deadline, daemon.read_log()
        time.sleep(0.05)
    # A broken file is refused and the running configuration stays.
    daemon.write_config(extra="no_such_key = 1")
    daemon.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "reload failed" not in daemon.read_log():
        assert time.monotonic() < deadline, daemon.read_log()
        time.sleep(0.05)
    assert "no_such_key" in daemon.read_log()
    # clustermailctl would refuse the broken file too; ask the socket.
    assert daemon.control_request("status")["config_generation"] == gen + 1
    reply = daemon.control_request("reload")
    assert "no_such_key" in reply["error"]
    assert imap_greeting(daemon.ports["imap"]).startswith(IMAP_GREETING)


def test_ctl_reload(daemon):
    gen = daemon.control_request("status")["config_generation"]
    out = daemon.ctl("reload")
    assert out.returncode == 0, out.stderr
    assert f"configuration reloaded (generation {gen + 1})" in out.stdout
    out = daemon.ctl("--json", "reload")
    assert json.loads(out.stdout)["config_generation"] == gen + 2
    # a broken file: refused (by clustermailctl, which reads it too), and
    # the daemon keeps its configuration
    daemon.write_config(extra="no_such_key = 1")
    out = daemon.ctl("reload")
    assert out.returncode == 78 and "no_such_key" in out.stderr
    assert daemon.control_request("status")["config_generation"] == gen + 2
    daemon.proc.terminate()
    daemon.proc.wait()
    daemon.write_config()
    out = daemon.ctl("reload")
    assert out.returncode == 69, out


def test_reload_changes_tls_certificate(daemon):
    def peer_cert():
        ctx = tls_client_context()
        with socket.create_connection(("127.0.0.1", daemon.ports["imaps"])) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                return s.getpeercert(binary_form=True)
    first = peer_cert()
    new_cert, new_key = cmtest.make_cert(daemon.dir, name="second", cn="second")
    os.replace(new_cert, daemon.cert)
    os.replace(new_key, daemon.key)
    out = daemon.ctl("--json", "status")
    gen = json.loads(out.stdout)["config_generation"]
    daemon.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while json.loads(daemon.ctl("--json", "status").stdout)[
            "config_generation"] == gen:
        assert time.monotonic() < deadline, daemon.read_log()
        time.sleep(0.05)
    assert peer_cert() != first


def test_restart_only_change_is_reported(daemon):
    daemon.write_config(replace={"workers": "3"})
    daemon.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "takes effect only at restart" not in daemon.read_log():
        assert time.monotonic() < deadline, daemon.read_log()
        time.sleep(0.05)
    assert "workers" in daemon.read_log()


def test_sigterm_clean_exit(daemon):
    pid = daemon.proc.pid
    assert open(daemon.pidfile).read().strip() == str(pid)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    assert not cmtest.process_exists(pid)
    assert not os.path.exists(daemon.control)
    assert not os.path.exists(daemon.pidfile)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", daemon.ports["imap"]), timeout=2)
    log = daemon.read_log()
    assert "draining" in log and "clustermaild stopped" in log


def test_sigterm_with_open_client_connections(daemon):
    # Clients that never read their greeting must not hold up the stop
    # beyond shutdown_timeout.
    socks = [socket.create_connection(("127.0.0.1", daemon.ports["imap"]))
             for _ in range(20)]
    try:
        start = time.monotonic()
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit(timeout=20) == 0
        assert time.monotonic() - start < 10
    finally:
        for s in socks:
            s.close()


def test_second_instance_refused(daemon):
    out = subprocess.run([binary("clustermaild"), "-c", daemon.conf, "--foreground"],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode != 0
    assert "another clustermaild is running" in out.stderr
    assert daemon.http_get("/health")[0] == 200


def test_restart_right_after_sigkill(daemon):
    """A crashed daemon restarted at once (what a cluster manager does)
    must get its ports back, although io_uring releases a killed
    process's listeners a moment after the process is gone."""
    for _ in range(5):
        daemon.proc.kill()
        daemon.proc.wait()
        daemon.log.close()
        daemon.start()      # raises when it exits (EADDRINUSE: 71)
        with socket.create_connection(("127.0.0.1", daemon.ports["imap"]),
                                      timeout=5) as s:
            assert s.recv(100).startswith(b"* OK")


def test_detaches_and_reports_ready(workdir):
    d = Daemon(workdir)
    out = subprocess.run([binary("clustermaild"), "-c", d.conf],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    pid = int(open(d.pidfile).read())
    try:
        assert cmtest.process_exists(pid)
        # Ready means the ports are open when the parent exits.
        assert imap_greeting(d.ports["imap"]).startswith(IMAP_GREETING)
        assert json.loads(d.ctl("--json", "status").stdout)["pid"] == pid
    finally:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while cmtest.process_exists(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert not cmtest.process_exists(pid)


def test_detached_start_failure_is_reported(workdir):
    d = Daemon(workdir)
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("127.0.0.1", d.ports["lmtp"]))
    blocker.listen()
    try:
        out = subprocess.run([binary("clustermaild"), "-c", d.conf],
                             capture_output=True, text=True, timeout=20)
    finally:
        blocker.close()
    assert out.returncode != 0
    assert "listen_lmtp" in out.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="privilege drop needs root")
def test_privileges_dropped(daemon):
    uid = pwd.getpwnam(cmtest.mail_user()).pw_uid
    with open(f"/proc/{daemon.proc.pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    assert fields["Uid"].split() == [str(uid)] * 4
    assert "dropped privileges" in daemon.read_log()


def test_check_config(workdir):
    d = Daemon(workdir)
    out = subprocess.run([binary("clustermaild"), "-c", d.conf, "--check-config"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "is valid" in out.stdout
    d.write_config(replace={"listen_imap": "127.0.0.1:99999"})
    out = subprocess.run([binary("clustermaild"), "-c", d.conf, "--check-config"],
                         capture_output=True, text=True)
    assert out.returncode == 78
    lines = open(d.conf).read().splitlines()
    lineno = max(i for i, l in enumerate(lines, 1) if "99999" in l)
    assert f"{d.conf}:{lineno}:" in out.stderr


def test_bad_tls_key_refused_at_start(workdir):
    d = Daemon(workdir)
    with open(d.key, "w") as f:
        f.write("not a key\n")
    d.start(wait=False)
    assert d.wait_exit() == 78
    assert "tls_key" in d.read_log()
    d.stop()


def test_missing_config_file(tmp_path):
    out = subprocess.run([binary("clustermaild"), "-c", str(tmp_path / "nope.conf"),
                          "--check-config"], capture_output=True, text=True)
    assert out.returncode == 78
    assert "nope.conf" in out.stderr


def test_node_override_sections(workdir):
    d = Daemon(workdir, services=["imap"])
    other = cmtest.free_port()
    d.write_config(extra=f"[node n2]\nlisten_imap = 127.0.0.1:{other}\n")
    d.start(args=["--node", "n2"])
    try:
        assert json.loads(d.ctl("--node", "n2", "--json", "status").stdout)[
            "listeners"]["imap"] == f"127.0.0.1:{other}"
    finally:
        d.stop()
