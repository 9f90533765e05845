"""Helpers for clustermail integration tests: binaries, configs, daemons.

Daemons run with --foreground on 127.0.0.1 and ports picked free for each
test, with every file (config, control socket, pid file, TLS keys) in the
test's own temp dir. Every daemon started is stopped, and killed if it does
not stop, when its test ends.
"""
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

SERVICES = ["imap", "imaps", "pop3", "pop3s", "smtp", "submission",
            "submissions", "lmtp"]
TLS_SERVICES = {"imaps", "pop3s", "submissions"}


def builddir():
    return os.environ.get("top_builddir") or os.path.abspath(
        os.path.join(os.path.dirname(__file__), "..", ".."))


def binary(name):
    """Path of a built program; skips the test when it is not built."""
    for sub in ("src/daemon", "src/ctl"):
        path = os.path.join(builddir(), sub, name)
        if os.access(path, os.X_OK):
            return path
    pytest.skip(f"{name} is not built in {builddir()} (run make first)")


def mail_user():
    """The unprivileged user the daemon drops to when started as root."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid()).pw_name
    for name in ("clustermail", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            pass
    pytest.skip("running as root but neither user clustermail nor nobody exists")


def prepare_workdir(path):
    """Make path usable by the daemon after it drops privileges."""
    if os.geteuid() == 0:
        pw = pwd.getpwnam(mail_user())
        os.chown(path, pw.pw_uid, pw.pw_gid)
    os.chmod(path, 0o755)
    return path


_ports_given = set()


def free_port():
    """A port for a test daemon to listen on. Taken below the kernel's
    ephemeral range (32768-60999 by default), where client sockets get
    their ports, so that no client connection can take it between this
    check and the daemon's bind; and never the same port twice in one
    test run (a daemon's listeners must not share one)."""
    import random
    for _ in range(1000):
        port = random.randint(20000, 32000)
        if port in _ports_given:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _ports_given.add(port)
        return port
    raise RuntimeError("no free port found in 20000-32000")


def make_cert(directory, name="server", cn="localhost"):
    """A throw-away self-signed certificate and key; returns the paths."""
    cert = os.path.join(directory, f"{name}.crt")
    key = os.path.join(directory, f"{name}.key")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
         "-subj", f"/CN={cn}", "-keyout", key, "-out", cert],
        check=True, capture_output=True)
    os.chmod(key, 0o644)    # readable after the privilege drop (reload)
    return cert, key


class Daemon:
    """One clustermaild process with its own config and ports."""

    def __init__(self, workdir, node="n1", services=SERVICES, extra=""):
        self.dir = str(workdir)
        self.node = node
        self.ports = {s: free_port() for s in services}
        self.metrics_port = free_port()
        self.conf = os.path.join(self.dir, "clustermail.conf")
        self.control = os.path.join(self.dir, f"{node}.sock")
        self.pidfile = os.path.join(self.dir, f"{node}.pid")
        self.logfile = os.path.join(self.dir, f"{node}.log")
        self.cert, self.key = make_cert(self.dir)
        self.proc = None
        self.extra = extra
        self.write_config()

    def config_text(self, extra=None, replace=None):
        """The config; replace={"key": "value"} changes a default line."""
        lines = [
            f"node_name = {self.node}",
            f"spool_dir = {self.dir}/spool",
            "lock_backend = fcntl",
            # No corosync in most tests: poll version stamps (test_cluster
            # runs a corosync of its own).
            "cluster = none",
            f"users_file = {self.dir}/users",
            f"control_socket = {self.control}",
            f"pid_file = {self.pidfile}",
            f"metrics_listen = 127.0.0.1:{self.metrics_port}",
            f"tls_cert = {self.cert}",
            f"tls_key = {self.key}",
            f"mail_user = {mail_user()}",
            "local_domains = example.com",
            "workers = 2",
            "shutdown_timeout = 5s",
            "log_level = debug",
        ]
        lines += [f"listen_{s} = 127.0.0.1:{p}" for s, p in self.ports.items()]
        for key, value in (replace or {}).items():
            lines = [f"{key} = {value}" if line.split(" = ")[0] == key else line
                     for line in lines]
        lines.append(self.extra if extra is None else extra)
        return "\n".join(lines) + "\n"

    def write_config(self, extra=None, replace=None):
        with open(self.conf, "w") as f:
            f.write(self.config_text(extra, replace))

    def start(self, args=(), wait=True):
        self.log = open(self.logfile, "ab")
        self.proc = subprocess.Popen(
            [binary("clustermaild"), "-c", self.conf, "--foreground", *args],
            stdout=self.log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready()
        return self.proc

    def wait_ready(self, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"clustermaild exited with {self.proc.returncode}:\n"
                    + self.read_log())
            try:
                if self.http_get("/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("clustermaild did not become ready:\n" + self.read_log())

    def read_log(self):
        with open(self.logfile, "rb") as f:
            return f.read().decode(errors="replace")

    def http_get(self, path, method="GET"):
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.metrics_port}{path}", method=method)
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, dict(r.headers), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read().decode()

    def ctl(self, *args, input=None, check=False):
        return subprocess.run(
            [binary("clustermailctl"), "-c", self.conf, *args],
            input=input, capture_output=True, text=True, timeout=30,
            check=check)

    def control_request(self, command):
        """One command on the control socket, without clustermailctl."""
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(self.control)
            s.sendall(command.encode() + b"\n")
            s.settimeout(10)
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        return json.loads(data)

    def signal(self, signo):
        self.proc.send_signal(signo)

    def wait_exit(self, timeout=15):
        return self.proc.wait(timeout=timeout)

    def stop(self):
        """SIGTERM, then SIGKILL if it does not exit: never leave one behind."""
        terminate(self.proc)
        if getattr(self, "log", None):
            self.log.close()
            self.log = None


def terminate(proc, timeout=15):
    """Stop a process the test started: SIGTERM, and SIGKILL when it has
    not exited after timeout seconds (None or already gone: nothing)."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def read_greeting(sock, timeout=5):
    """Everything the server sends until it closes the connection."""
    sock.settimeout(timeout)
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk


def process_exists(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def have(program):
    return shutil.which(program) is not None


def make_ca(directory, name="ca", cn="clustermail test CA"):
    """A throw-away CA (key + self-signed cert, CA:TRUE); returns the paths."""
    cert = os.path.join(directory, f"{name}.crt")
    key = os.path.join(directory, f"{name}.key")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
         "-subj", f"/CN={cn}", "-keyout", key, "-out", cert,
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        check=True, capture_output=True)
    return cert, key


def make_cert_signed_by(directory, ca, name="server", cn="localhost",
                        san="DNS:localhost,IP:127.0.0.1", serial=2,
                        is_ca=False):
    """A server certificate and key signed by ca=(cert, key) from make_ca()
    (or an intermediate CA when is_ca); returns the paths."""
    ca_cert, ca_key = ca
    cert = os.path.join(directory, f"{name}.crt")
    key = os.path.join(directory, f"{name}.key")
    csr = os.path.join(directory, f"{name}.csr")
    ext = os.path.join(directory, f"{name}.ext")
    with open(ext, "w") as f:
        if is_ca:
            f.write("basicConstraints = critical,CA:TRUE\n"
                    "keyUsage = critical,keyCertSign,cRLSign\n")
        else:
            f.write("basicConstraints = critical,CA:FALSE\n"
                    "keyUsage = critical,digitalSignature\n"
                    "extendedKeyUsage = serverAuth\n"
                    f"subjectAltName = {san}\n")
    subprocess.run(
        ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:prime256v1", "-nodes", "-subj", f"/CN={cn}",
         "-keyout", key, "-out", csr], check=True, capture_output=True)
    subprocess.run(
        ["openssl", "x509", "-req", "-in", csr, "-CA", ca_cert,
         "-CAkey", ca_key, "-set_serial", str(serial), "-days", "2",
         "-extfile", ext, "-out", cert], check=True, capture_output=True)
    os.unlink(csr)
    os.unlink(ext)
    os.chmod(key, 0o644)    # readable after the privilege drop (reload)
    return cert, key
