"""Private Postfix and Dovecot LMTP instances for tests and benchmarks.

Postfix is the MTA that talks to clustermail's LMTP in production, so the
peer tests (test_smtp_peers.py) and the SMTP benchmark (bench/smtp-bench.py)
run a real one. Never the system's: each Postfix here has its own
config_directory (main.cf + master.cf written from scratch), queue_directory,
data_directory and log file under one temporary directory, listens on
127.0.0.1 and a port given by the caller, has mydestination empty (it
delivers nothing itself), routes the domains it is given (relay_domains +
a texthash transport map) to an LMTP or SMTP next hop, relays everything
else to an optional relayhost (or refuses it), does no DNS lookups at all,
and retries every second. It is started with `postfix -c DIR start` and
stopped with `postfix -c DIR stop`, after which every process left in the
master's session (and any other process whose MAIL_CONFIG is DIR) is
killed. Postfix needs root for that (its master runs as root and drops to
mail_owner); unavailable() says why it cannot run here.

DovecotLmtp is a private Dovecot (`dovecot -c CONF -F`, its own base_dir)
that only speaks LMTP on 127.0.0.1 and stores into HOME/<localpart>/Maildir
for any recipient: the reference next hop the Postfix side is proven
against, and the competitor in the benchmark.

Nothing here imports pytest: tests turn Unavailable into a skip; the
benchmark prints the reason.
"""
import grp
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

POSTFIX = "/usr/sbin/postfix"
POSTQUEUE = "/usr/sbin/postqueue"
POSTCONF = "/usr/sbin/postconf"
DOVECOT = "/usr/sbin/dovecot"
DOVECOT_LMTP = "/usr/lib/dovecot/lmtp"


class Unavailable(Exception):
    """Postfix (or Dovecot) cannot run here; str() is the reason."""


def postfix_unavailable():
    """None when a private Postfix can run, else the reason it cannot."""
    if os.geteuid() != 0:
        return "a private Postfix needs root (its master runs as root)"
    for prog in (POSTFIX, POSTQUEUE, POSTCONF,
                 "/usr/lib/postfix/sbin/master"):
        if not os.access(prog, os.X_OK):
            return f"{prog} is not installed (apt-get install postfix)"
    try:
        pwd.getpwnam("postfix")
        grp.getgrnam("postdrop")
    except KeyError:
        return "user postfix or group postdrop is missing"
    return None


def dovecot_unavailable():
    """None when a private Dovecot LMTP can run, else the reason."""
    for prog in (DOVECOT, DOVECOT_LMTP):
        if not os.access(prog, os.X_OK):
            return f"{prog} is not installed (apt-get install dovecot-lmtpd)"
    return None


# ---- processes ------------------------------------------------------------

def _stat_fields(pid):
    """Fields of /proc/PID/stat after the command name, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _alive(pid):
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def _pids():
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def session_members(sid):
    """Live processes whose session id is sid."""
    out = []
    for pid in _pids():
        fields = _stat_fields(pid)
        if fields and fields[0] != "Z" and int(fields[3]) == sid:
            out.append(pid)
    return out


def env_members(name, value):
    """Live processes whose environment has name=value."""
    want = f"{name}={value}".encode()
    out = []
    for pid in _pids():
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if want in env and _alive(pid):
            out.append(pid)
    return out


def kill_pids(pids, grace=5.0):
    """SIGTERM pids, then SIGKILL the ones still there after grace."""
    pids = [p for p in pids if p != os.getpid()]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in pids:
            try:
                os.kill(p, sig)
            except OSError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.05)
        pids = [p for p in pids if _alive(p)]
        if not pids:
            return


def wait_port(port, proc=None, what="server", timeout=20.0):
    """Until something accepts on 127.0.0.1:port; an error if proc dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} does not answer on port {port}")


def maildir_count(path):
    """Messages in a Maildir (new/ + cur/); 0 when it does not exist."""
    n = 0
    for sub in ("new", "cur"):
        try:
            n += sum(1 for e in os.scandir(os.path.join(path, sub))
                     if not e.name.startswith("."))
        except FileNotFoundError:
            pass
    return n


# ---- Postfix --------------------------------------------------------------

MASTER_CF = """\
# private test instance (postfixtest.py); chroot off everywhere
{listen}  inet  n       -       n       -       {smtpd_limit}  smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class Postfix:
    """A private Postfix instance under base (a new temp dir by default).

    routes      {domain: nexthop}, e.g. {"example.com":
                "lmtp:inet:127.0.0.1:2424"}: relay_domains + transport map
    relayhost   "[127.0.0.1]:2525" for everything else, or None: other
                domains are refused (error transport)
    port        the SMTP port on 127.0.0.1 (the caller picks a free one)
    concurrency destination concurrency (initial and limit) per next hop
    extra       {parameter: value} appended to main.cf
    """

    def __init__(self, port, routes=None, relayhost=None, base=None,
                 concurrency=20, extra=None, smtpd_limit=100):
        reason = postfix_unavailable()
        if reason:
            raise Unavailable(reason)
        self.port = port
        self.routes = dict(routes or {})
        self.relayhost = relayhost
        self.own_base = base is None
        self.base = base or tempfile.mkdtemp(prefix="postfixtest-",
                                             dir=os.environ.get("TMPDIR"))
        os.makedirs(self.base, exist_ok=True)
        os.chmod(self.base, 0o755)      # mail_owner walks through it
        self.config = os.path.join(self.base, "etc")
        self.queue = os.path.join(self.base, "queue")
        self.data = os.path.join(self.base, "data")
        self.logfile = os.path.join(self.base, "maillog")
        for d in (self.config, self.queue):
            os.makedirs(d, exist_ok=True)
            os.chmod(d, 0o755)
        self.master_pid = None
        self.started = False
        self._write_config(concurrency, extra or {}, smtpd_limit)

    # -- configuration

    def _write_config(self, concurrency, extra, smtpd_limit):
        transport = os.path.join(self.config, "transport")
        with open(transport, "w") as f:
            for domain, nexthop in self.routes.items():
                f.write(f"{domain} {nexthop}\n")
        params = {
            "compatibility_level": "3.6",
            "queue_directory": self.queue,
            "data_directory": self.data,
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": "postfix-test.invalid",
            "mydomain": "invalid",
            "myorigin": "$myhostname",
            "mydestination": "",
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "relay_domains": " ".join(self.routes) or "",
            "transport_maps": f"texthash:{transport}",
            "relayhost": self.relayhost or "",
            "default_transport": ("smtp" if self.relayhost else
                                  "error:5.7.1 no outbound delivery from "
                                  "this test instance"),
            # no DNS, ever: IP literals and native lookups only
            "smtp_dns_support_level": "disabled",
            "smtp_host_lookup": "native",
            "lmtp_host_lookup": "native",
            "smtpd_peername_lookup": "no",
            "smtp_tls_security_level": "none",
            "lmtp_tls_security_level": "none",
            "smtpd_tls_security_level": "none",
            # retry at once, give up soon
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "maximal_queue_lifetime": "10m",
            "bounce_queue_lifetime": "10m",
            "in_flow_delay": "0",
            "initial_destination_concurrency": str(concurrency),
            "default_destination_concurrency_limit": str(concurrency),
            "smtpd_client_connection_count_limit": "0",
            "notify_classes": "",
            "biff": "no",
            "maillog_file": self.logfile,
            "maillog_file_prefixes": self.base,
        }
        params.update(extra)
        with open(os.path.join(self.config, "main.cf"), "w") as f:
            f.write("# private test instance (postfixtest.py)\n")
            for k, v in params.items():
                f.write(f"{k} = {v}\n")
        with open(os.path.join(self.config, "master.cf"), "w") as f:
            f.write(MASTER_CF.format(listen=f"127.0.0.1:{self.port}",
                                     smtpd_limit=smtpd_limit))

    def _run(self, *argv, timeout=60, check=True):
        env = dict(os.environ, MAIL_CONFIG=self.config)
        p = subprocess.run(list(argv), capture_output=True, text=True,
                           timeout=timeout, env=env)
        if check and p.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: exit {p.returncode}:\n"
                               f"{p.stdout}{p.stderr}\n{self.log_tail()}")
        return p

    # -- life cycle

    def start(self, timeout=30):
        """postfix start; returns when the SMTP port accepts."""
        self._run(POSTFIX, "-c", self.config, "check", check=False)
        self._run(POSTFIX, "-c", self.config, "start", timeout=timeout)
        self.started = True
        pidfile = os.path.join(self.queue, "pid", "master.pid")
        deadline = time.monotonic() + timeout
        while self.master_pid is None:
            try:
                with open(pidfile) as f:
                    self.master_pid = int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                if time.monotonic() > deadline:
                    raise RuntimeError("postfix wrote no master.pid:\n"
                                       + self.log_tail())
                time.sleep(0.05)
        wait_port(self.port, what="postfix smtpd", timeout=timeout)
        return self

    def processes(self):
        """Live processes of this instance (master's session + MAIL_CONFIG)."""
        pids = set(env_members("MAIL_CONFIG", self.config))
        if self.master_pid:
            pids.update(session_members(self.master_pid))
        return sorted(pids)

    def stop(self):
        """postfix stop, then kill whatever of this instance is left."""
        if self.started:
            self._run(POSTFIX, "-c", self.config, "stop", timeout=30,
                      check=False)
            deadline = time.monotonic() + 10
            while (self.master_pid and _alive(self.master_pid)
                   and time.monotonic() < deadline):
                time.sleep(0.05)
            self.started = False
        kill_pids(self.processes())

    def cleanup(self):
        """stop() and remove the temp dir when this object made it."""
        self.stop()
        if self.own_base:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()

    # -- the queue

    def queue_entries(self):
        """The queue as `postqueue -j` sees it: a list of dicts."""
        p = self._run(POSTQUEUE, "-c", self.config, "-j")
        return [json.loads(line) for line in p.stdout.splitlines() if line]

    def queue_listing(self):
        """`postqueue -p` output (for messages on failure)."""
        return self._run(POSTQUEUE, "-c", self.config, "-p",
                         check=False).stdout

    def queue_files(self):
        """Queue files on disk (cheaper than postqueue for tight polls)."""
        n = 0
        for sub in ("maildrop", "incoming", "active", "deferred", "hold"):
            for _root, _dirs, files in os.walk(os.path.join(self.queue, sub)):
                n += len(files)
        return n

    def flush(self):
        self._run(POSTQUEUE, "-c", self.config, "-f", check=False)

    def wait_queue_empty(self, timeout=60):
        """Until the queue is empty; RuntimeError with the queue if not."""
        deadline = time.monotonic() + timeout
        while True:
            if self.queue_files() == 0 and not self.queue_entries():
                return
            if time.monotonic() > deadline:
                raise RuntimeError("postfix queue not empty after "
                                   f"{timeout}s:\n{self.queue_listing()}\n"
                                   + self.log_tail())
            time.sleep(0.1)

    def log_text(self):
        try:
            with open(self.logfile, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def log_tail(self, n=3000):
        return self.log_text()[-n:]


# ---- Dovecot LMTP -----------------------------------------------------------

class DovecotLmtp:
    """A private Dovecot serving LMTP on 127.0.0.1:port, mail stored in
    base/home/<localpart>/Maildir owned by user (uid, gid) for any
    recipient (static userdb). mail_fsync stays at Dovecot's default."""

    def __init__(self, port, user, base=None, extra=""):
        reason = dovecot_unavailable()
        if reason:
            raise Unavailable(reason)
        self.port = port
        self.pw = pwd.getpwnam(user) if isinstance(user, str) else user
        self.own_base = base is None
        self.base = base or tempfile.mkdtemp(prefix="dovecot-lmtp-",
                                             dir=os.environ.get("TMPDIR"))
        os.makedirs(self.base, exist_ok=True)
        os.chmod(self.base, 0o755)
        self.home = os.path.join(self.base, "home")
        for sub in ("run", "state", "home"):
            os.makedirs(os.path.join(self.base, sub), exist_ok=True)
        if os.geteuid() == 0:
            os.chown(self.home, self.pw.pw_uid, self.pw.pw_gid)
        self.conf = os.path.join(self.base, "dovecot.conf")
        self.proc = None
        users_conf = ""
        if os.geteuid() != 0:
            me = pwd.getpwuid(os.geteuid()).pw_name
            users_conf = (f"default_login_user = {me}\n"
                          f"default_internal_user = {me}\n")
        with open(self.conf, "w") as f:
            f.write(f"""# private LMTP instance (postfixtest.py)
base_dir = {self.base}/run
state_dir = {self.base}/state
log_path = {self.base}/dovecot.log
info_log_path = {self.base}/dovecot-info.log
protocols = lmtp
listen = 127.0.0.1
ssl = no
mail_location = maildir:~/Maildir
first_valid_uid = 1
default_process_limit = 200
default_client_limit = 1000
{users_conf}passdb {{
  driver = static
  args = nopassword=y
}}
userdb {{
  driver = static
  args = uid={self.pw.pw_uid} gid={self.pw.pw_gid} home={self.home}/%n
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {port}
  }}
}}
{extra}
""")

    def maildir(self, address):
        return os.path.join(self.home, address.split("@")[0], "Maildir")

    def start(self):
        self.stderr = open(os.path.join(self.base, "stderr"), "wb")
        self.proc = subprocess.Popen([DOVECOT, "-c", self.conf, "-F"],
                                     stdout=subprocess.DEVNULL,
                                     stderr=self.stderr,
                                     start_new_session=True)
        wait_port(self.port, self.proc, "dovecot")
        return self

    def stop(self):
        if self.proc is not None:
            pids = session_members(self.proc.pid)
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
            kill_pids(pids + session_members(self.proc.pid))
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc = None
            self.stderr.close()

    def cleanup(self):
        self.stop()
        if self.own_base:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()

    def log_tail(self, n=3000):
        out = ""
        for name in ("stderr", "dovecot.log"):
            try:
                with open(os.path.join(self.base, name), errors="replace") as f:
                    out += f.read()[-n:]
            except OSError:
                pass
        return out
