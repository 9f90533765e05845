"""benchlib.py - pieces shared by the benchmark scripts in bench/
(smtp-bench.py, imap-bench.py, idle-latency.py, store-bench.py).

Each script puts its own directory at the front of sys.path and imports
from here, so it runs as `python3 bench/X.py` from any directory. Only
what the scripts had word for word in common lives here: the unprivileged
user the servers and tools run as (Runner), running clustermailctl as that
user (run_ctl), starting a clustermaild and reading the end of its log
(start_daemon, file_tail), a free loopback port, and the nearest-rank
quantile used in the latency tables.
"""
import os
import pwd
import socket
import subprocess
import sys


class Runner:
    """The unprivileged user that owns the mail of every server and runs
    the tools: clustermail (or nobody) when we are root, else ourselves.
    prog names the calling script in the error message."""

    def __init__(self, prog):
        if os.geteuid() == 0:
            for name in ("clustermail", "nobody"):
                try:
                    self.pw = pwd.getpwnam(name)
                    break
                except KeyError:
                    continue
            else:
                sys.exit(f"{prog}: root, but no user clustermail/nobody")
        else:
            self.pw = pwd.getpwuid(os.geteuid())

    @property
    def name(self):
        return self.pw.pw_name

    def demote(self):
        """A preexec_fn that drops to the user when we are root."""
        if os.geteuid() != 0:
            return None
        uid, gid = self.pw.pw_uid, self.pw.pw_gid

        def drop():
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
        return drop

    def own(self, path):
        """chown -R path to the user when we are root."""
        if os.geteuid() != 0:
            return
        for root, dirs, files in os.walk(path):
            for n in [root] + [os.path.join(root, x) for x in dirs + files]:
                os.lchown(n, self.pw.pw_uid, self.pw.pw_gid)

    def run(self, argv, data=b"", env=None, check=True):
        """Run argv as the user with data on stdin, output captured; a
        non-zero exit raises RuntimeError unless check is false."""
        proc = subprocess.run(argv, input=data, capture_output=True,
                              env=env, preexec_fn=self.demote())
        if check and proc.returncode != 0:
            err = proc.stderr.decode(errors="replace")[-500:]
            raise RuntimeError(f"{' '.join(argv)}: exit {proc.returncode}: "
                               f"{err}")
        return proc


def run_ctl(ctl, conf, runner, argv, data=b""):
    """clustermailctl -c conf argv... as runner's user with data on stdin;
    RuntimeError with the end of its stderr when it fails."""
    p = subprocess.run([ctl, "-c", conf] + argv, input=data,
                       capture_output=True, preexec_fn=runner.demote())
    if p.returncode != 0:
        raise RuntimeError(f"clustermailctl {' '.join(argv)}: exit "
                           f"{p.returncode}: {p.stderr.decode()[-300:]}")


def start_daemon(daemon, conf, logfile):
    """clustermaild -c conf in the foreground, in a session of its own,
    stdout and stderr appended to logfile; (open log file, Popen)."""
    log = open(logfile, "ab")
    proc = subprocess.Popen(
        [daemon, "-c", conf, "--foreground"], stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True)
    return log, proc


def file_tail(path, size=1500):
    """The last size bytes of path as text (all of it when size is None);
    "" when it cannot be read."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        return (data if size is None else data[-size:]).decode(
            errors="replace")
    except OSError:
        return ""


def free_port():
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values, q):
    """The q-quantile of values (nearest rank), None when empty."""
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]
