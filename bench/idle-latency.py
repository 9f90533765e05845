#!/usr/bin/env python3
"""idle-latency.py - how long an IDLE client on one node waits for a change
made through another node.

    bench/idle-latency.py BUILDDIR [--rounds N] [--poll-interval 1s]
        [--poll-interval 250ms ...] [--sequential] [--seed S] [--corosync]

Defaults: 50 rounds per series, poll intervals 1s (the default of
imap_idle_poll_interval) and 250ms; about 75 s on 2 CPUs (--sequential:
about 3.5 minutes). Exit status: 0 figures printed, 1 no figures (the
reason is printed), 2 figures printed but a daemon's log has a sanitizer
report (ASan/UBSan builds; printed with !!!).

What it does, in a temporary directory under $BENCH_DIR (default /var/tmp):

  * for each poll interval, starts two clustermailds, nodes A and B, on one
    spool (each its own directory, config, control socket and IMAP port on
    127.0.0.1, node_name a / b; spool_dir and users_file shared; lock_backend
    fcntl, log_level warning, imap_idle_poll_interval = the interval), as
    the two-node integration test does, and three users, one per series;
  * per series, a client on node A logs in, SELECTs INBOX and IDLEs, and a
    reader thread timestamps each line as it arrives on A's socket; then N
    rounds of: sleep a random time in [0, interval) (so that the change
    lands at a random phase of A's poll timer; otherwise every round would
    start right after a poll and measure the full interval), make the
    change through node B, and wait for A's untagged response:

      append   APPEND INBOX on a session on B; from B's tagged OK to A's
               "* N EXISTS"
      deliver  `clustermailctl -c B.conf deliver USER` (the LDA, one
               process per message); from its exit with status 0 to A's
               "* N EXISTS"
      store    STORE 1 +FLAGS / -FLAGS (\\Flagged) alternately on B; from
               B's tagged OK to A's "* 1 FETCH"

    The three series run at the same time (one thread each, separate users
    and so separate IDLE sessions with independent poll timers); each
    round costs one poll interval, so in sequence the run would take three
    times longer (--sequential does that, for a check that they do not
    disturb each other);
  * reports min/p50/p90/p99/max per series and interval, in milliseconds.
    A negative figure means A's response was read before B's OK (A's poll
    fell between the change on disk and B's reply): it is kept, not
    clamped. Without a cluster notification path between the nodes (the
    fcntl lock backend has none) the expectation is uniform in
    [0, interval]: p50 near interval/2, max near the interval.

--corosync (root, corosync installed): the same with both nodes in a CPG
group (cluster = corosync) through a one-node corosync of the run's own on
127.0.0.1, so a change on B is multicast to A at once; the poll interval
(default then 60s) is only the safety net. Rounds wait a random time in
[0, 200 ms) instead of [0, poll). The target of the cluster issue: p99
under 100 ms.

Every daemon (and the corosync) is stopped (SIGTERM, then SIGKILL of the
process group) and the directory removed, also on errors and Ctrl-C.
"""
import argparse
import os
import queue
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (  # noqa: E402
    Runner, file_tail, free_port, pct, start_daemon)

DOMAIN = "bench.test"
PASSWORD = "idle latency bench"
SERIES = ("append", "deliver", "store")
TIMEOUT = 30
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:",
                     "ERROR: LeakSanitizer")
SANITIZER_REPORTS = []  # (node, excerpt) found in a daemon's log at stop
MESSAGE = ("From: bench@{d}\r\nTo: {u}\r\nSubject: idle latency {n}\r\n"
           "Message-ID: <idle-{n}-{r}@{d}>\r\n\r\nround {n}\r\n")


def log(msg):
    """A progress line on stderr."""
    print("idle-latency: " + msg, file=sys.stderr, flush=True)


def parse_duration(text):
    """'1s', '250ms', '2m' -> seconds (float); ValueError otherwise."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", text.strip())
    if not m:
        raise ValueError(f"bad duration {text!r} (use e.g. 1s or 250ms)")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[m.group(2)]


class Node:
    """One clustermaild of the pair, on the shared spool."""

    def __init__(self, builddir, work, name, runner, poll, cluster="none"):
        self.ctl = os.path.join(builddir, "src/ctl/clustermailctl")
        self.daemon = os.path.join(builddir, "src/daemon/clustermaild")
        for prog in (self.ctl, self.daemon):
            if not os.access(prog, os.X_OK):
                raise RuntimeError(f"{prog} is not built (run make)")
        self.name, self.runner = name, runner
        self.dir = os.path.join(work, f"node-{name}")
        os.makedirs(self.dir)
        self.conf = os.path.join(self.dir, "clustermail.conf")
        self.logfile = os.path.join(self.dir, "clustermaild.log")
        self.port = free_port()
        self.proc = self.log = None
        with open(self.conf, "w") as f:
            f.write(f"node_name = {name}\n"
                    f"spool_dir = {work}/spool\n"
                    "lock_backend = fcntl\n"
                    f"cluster = {cluster}\n"
                    f"users_file = {work}/users\n"
                    f"control_socket = {self.dir}/{name}.sock\n"
                    f"pid_file = {self.dir}/{name}.pid\n"
                    f"mail_user = {runner.pw.pw_name}\n"
                    f"local_domains = {DOMAIN}\n"
                    "workers = 2\n"
                    "shutdown_timeout = 2s\n"
                    "log_level = warning\n"
                    f"imap_idle_poll_interval = {int(poll * 1000)}ms\n"
                    f"listen_imap = 127.0.0.1:{self.port}\n")

    def start(self):
        self.log, self.proc = start_daemon(self.daemon, self.conf,
                                           self.logfile)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"clustermaild {self.name} exited with "
                                   f"status {self.proc.returncode}:\n"
                                   + self.log_tail())
            try:
                Imap(self.port).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"clustermaild {self.name} does not answer")

    def run_ctl(self, argv, data=b""):
        """clustermailctl -c CONF argv...; exits 0 or RuntimeError."""
        p = subprocess.run([self.ctl, "-c", self.conf] + argv, input=data,
                           capture_output=True, timeout=TIMEOUT,
                           preexec_fn=self.runner.demote())
        if p.returncode != 0:
            raise RuntimeError(f"clustermailctl {' '.join(argv)}: exit "
                               f"{p.returncode}: {p.stderr.decode()[-300:]}")

    def log_tail(self, size=1500):
        """The end of the daemon's log (all of it when size is None)."""
        return file_tail(self.logfile, size)

    def stop(self):
        """SIGTERM the process group, SIGKILL after 5 s."""
        if self.proc is not None and self.proc.poll() is None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self.proc.pid, sig)
                except OSError:
                    pass
                try:
                    self.proc.wait(timeout=5)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self.log:
            self.log.close()
            self.log = None
            log_text = self.log_tail(None)
            for marker in SANITIZER_MARKERS:
                if marker in log_text:
                    i = log_text.index(marker)
                    SANITIZER_REPORTS.append(
                        (self.name, log_text[max(0, i - 200):i + 1500]))


class Imap:
    """A raw-socket IMAP client; lines as bytes without CRLF."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.n = 0
        if not self.line().startswith(b"* OK"):
            self.close()
            raise RuntimeError("no IMAP greeting")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                out = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return out
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed by the server")
            self.buf += chunk

    def command(self, text, literal=None):
        """Send a command; returns the monotonic time its tagged OK was
        read, or RuntimeError on anything but OK."""
        self.n += 1
        tag = b"c%d" % self.n
        if literal is None:
            self.sock.sendall(tag + b" " + text.encode() + b"\r\n")
        else:       # LITERAL+: no continuation round trip
            self.sock.sendall(tag + b" " + text.encode() + b" {%d+}\r\n"
                              % len(literal) + literal + b"\r\n")
        while True:
            line = self.line()
            if line.startswith(tag + b" "):
                at = time.monotonic()
                if not line.startswith(tag + b" OK"):
                    raise RuntimeError(f"{text.split()[0]}: "
                                       f"{line.decode(errors='replace')}")
                return at

    def login(self, user):
        self.command(f'LOGIN "{user}" "{PASSWORD}"')
        return self


class Idler:
    """A session on node A in IDLE; a thread timestamps every line."""

    def __init__(self, port, user):
        self.imap = Imap(port).login(user)
        self.imap.command("SELECT INBOX")
        self.imap.sock.sendall(b"i IDLE\r\n")
        if not self.imap.line().startswith(b"+"):
            raise RuntimeError("IDLE was not accepted")
        self.lines = queue.Queue()
        self.thread = threading.Thread(target=self.read, daemon=True)
        self.thread.start()

    def read(self):
        try:
            while True:
                line = self.imap.line()
                self.lines.put((time.monotonic(), line))
        except (OSError, EOFError) as e:
            self.lines.put((time.monotonic(), e))

    def wait_for(self, pattern, timeout):
        """The arrival time of the first line matching pattern."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"no {pattern.pattern!r} on node A "
                                   f"within {timeout:.1f} s")
            try:
                at, line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if isinstance(line, Exception):
                raise RuntimeError(f"node A connection: {line}")
            if pattern.fullmatch(line.decode(errors="replace")):
                return at

    def done(self):
        """End IDLE cleanly (the reader thread sees the tagged OK)."""
        self.imap.sock.sendall(b"DONE\r\n")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                _, line = self.lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if isinstance(line, Exception) or line.startswith(b"i "):
                break
        self.imap.close()


def run_series(kind, nodes, user, rounds, poll, rng, out, spread):
    """N rounds of one series; latencies (s) are appended to out."""
    a, b = nodes
    if kind == "store":     # message 1 to flip
        b.run_ctl(["deliver", user], MESSAGE.format(
            d=DOMAIN, u=user, n=0, r=0).encode())
    idler = Idler(a.port, user)
    writer = None
    if kind != "deliver":
        writer = Imap(b.port).login(user)
        writer.command("SELECT INBOX")
    exists = 1 if kind == "store" else 0
    try:
        for i in range(1, rounds + 1):
            time.sleep(rng.uniform(0, spread))
            msg = MESSAGE.format(d=DOMAIN, u=user, n=i,
                                 r=rng.randrange(1 << 30)).encode()
            if kind == "append":
                ok_at = writer.command("APPEND INBOX", msg)
                want = re.compile(rf"\* {exists + 1} EXISTS")
            elif kind == "deliver":
                b.run_ctl(["deliver", user], msg)
                ok_at = time.monotonic()
                want = re.compile(rf"\* {exists + 1} EXISTS")
            else:
                sign = "+" if i % 2 else "-"
                ok_at = writer.command(
                    f"STORE 1 {sign}FLAGS.SILENT (\\Flagged)")
                want = re.compile(r"\* 1 FETCH \(.*")
            seen_at = idler.wait_for(want, 10 * poll + 10)
            if kind != "store":
                exists += 1
            out.append(seen_at - ok_at)
    finally:
        idler.done()
        if writer:
            writer.close()


class Corosync:
    """A one-node corosync on 127.0.0.1 for the CPG group."""

    def __init__(self, work, user):
        self.dir = os.path.join(work, "corosync")
        os.makedirs(self.dir)
        self.conf = os.path.join(self.dir, "corosync.conf")
        with open(self.conf, "w") as f:
            f.write("totem {\n version: 2\n cluster_name: bench\n"
                    " transport: knet\n crypto_cipher: none\n"
                    " crypto_hash: none\n}\n"
                    "nodelist {\n node {\n  ring0_addr: 127.0.0.1\n"
                    "  name: bench\n  nodeid: 1\n }\n}\n"
                    "quorum {\n provider: corosync_votequorum\n}\n"
                    "logging {\n to_stderr: yes\n to_syslog: no\n}\n"
                    f"uidgid {{\n uid: {user}\n}}\n")
        self.log = open(os.path.join(self.dir, "corosync.log"), "wb")
        self.proc = subprocess.Popen(["corosync", "-f", "-c", self.conf],
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("corosync exited at start")
            if subprocess.run(["corosync-cpgtool"], capture_output=True,
                              timeout=10).returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("corosync did not start")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def wait_group(nodes, timeout=20):
    """Until both daemons are members of the CPG group."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        views = []
        for n in nodes:
            r = subprocess.run([n.ctl, "-c", n.conf, "--json", "cluster",
                                "status"], capture_output=True, text=True,
                               timeout=10)
            views.append(r.stdout)
        if all('"joined":true' in v and '"members":2' in v for v in views):
            return
        time.sleep(0.1)
    raise RuntimeError("the daemons did not join the CPG group")


def measure(builddir, base, runner, poll, rounds, sequential, seed,
            corosync=False):
    """Both nodes with one poll interval; {series: [latency s]}."""
    work = tempfile.mkdtemp(prefix=f"poll{int(poll * 1000)}ms-", dir=base)
    os.makedirs(os.path.join(work, "spool"))
    nodes = []
    coro = None
    spread = 0.2 if corosync else poll
    try:
        if corosync:
            coro = Corosync(work, runner.pw.pw_name)
        for name in ("a", "b"):
            nodes.append(Node(builddir, work, name, runner, poll,
                              "corosync" if corosync else "none"))
        users = {k: f"{k}@{DOMAIN}" for k in SERIES}
        runner.own(work)
        for u in users.values():
            nodes[0].run_ctl(["user", "add", u, "--password-stdin"],
                             (PASSWORD + "\n").encode())
        for n in nodes:
            n.start()
        if corosync:
            wait_group(nodes)
        res = {k: [] for k in SERIES}
        errors = []

        def one(kind):
            try:
                run_series(kind, nodes, users[kind], rounds, poll,
                           random.Random(f"{seed}-{kind}-{poll}"), res[kind],
                           spread)
            except Exception as e:     # reported by the main thread
                errors.append(f"{kind}: {e}")
        if sequential:
            for kind in SERIES:
                log(f"poll {fmt_poll(poll)}: {kind} x {rounds}")
                one(kind)
        else:
            log(f"poll {fmt_poll(poll)}: {', '.join(SERIES)} x {rounds} "
                "at the same time")
            threads = [threading.Thread(target=one, args=(k,)) for k in SERIES]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        if errors:
            raise RuntimeError("; ".join(errors))
        return res
    except BaseException:
        for n in nodes:
            tail = n.log_tail().strip()
            if tail:
                log(f"node {n.name} log (tail):\n{tail}")
        raise
    finally:
        for n in nodes:
            n.stop()
        if coro is not None:
            coro.stop()
        shutil.rmtree(work, ignore_errors=True)


def fmt_poll(poll):
    return f"{poll:g}s" if poll >= 1 else f"{poll * 1000:g}ms"


def report(results, args):
    """The table."""
    print()
    print("Cross-node IDLE latency: change on node B -> untagged response "
          "on node A's IDLE socket")
    cmd = " ".join(shlex.quote(x) for x in [sys.executable] + sys.argv)
    print(f"command: {cmd}")
    print(f"{args.rounds} rounds per series; series run "
          f"{'one after the other' if args.sequential else 'at the same time'}"
          "; times in ms")
    print()
    head = f"{'poll':>6} {'series':<8} {'n':>4} {'min':>7} {'p50':>7} " \
           f"{'p90':>7} {'p99':>7} {'max':>7}  {'<0':>3}"
    print(head)
    print("-" * len(head))
    for poll, res in results:
        for kind in SERIES:
            v = [x * 1000 for x in res[kind]]
            cells = " ".join(f"{x:7.1f}" for x in (
                min(v), pct(v, 0.5), pct(v, 0.9), pct(v, 0.99), max(v)))
            neg = sum(1 for x in v if x < 0)
            print(f"{fmt_poll(poll):>6} {kind:<8} {len(v):>4} {cells}  "
                  f"{neg:>3}")
    print()
    print("<0: rounds where A's response was read before B's OK / the LDA's "
          "exit (kept as negative figures).")
    if args.corosync:
        print("Both nodes in a corosync CPG group (cluster = corosync): the "
              "poll is only a safety net; target p99 < 100 ms.")
    else:
        print("Expected without a notification between nodes: uniform in "
              "[0, poll], p50 ~ poll/2.")


def main():
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("builddir")
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--poll-interval", action="append", dest="polls",
                    help="imap_idle_poll_interval to measure (repeatable; "
                    "default: 1s and 250ms)")
    ap.add_argument("--sequential", action="store_true",
                    help="run the three series one after the other")
    ap.add_argument("--seed", default="1")
    ap.add_argument("--corosync", action="store_true",
                    help="both nodes in a CPG group through a corosync of "
                    "the run's own (root)")
    args = ap.parse_args()
    if args.corosync and (os.geteuid() != 0 or shutil.which("corosync") is None):
        sys.exit("idle-latency: --corosync needs root and corosync installed")
    if args.corosync and subprocess.run(["corosync-cpgtool"],
                                        capture_output=True).returncode == 0:
        sys.exit("idle-latency: a corosync already runs on this host")
    default_polls = ["60s"] if args.corosync else ["1s", "250ms"]
    try:
        polls = [parse_duration(p) for p in (args.polls or default_polls)]
    except ValueError as e:
        sys.exit(f"idle-latency: {e}")
    if args.rounds < 1 or any(p <= 0 or p > 3600 for p in polls):
        sys.exit("idle-latency: need --rounds >= 1 and 0 < interval <= 1h")

    def on_signal(signo, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    runner = Runner("idle-latency")
    base = tempfile.mkdtemp(prefix="idle-latency-",
                            dir=os.environ.get("BENCH_DIR", "/var/tmp"))
    os.chmod(base, 0o755)
    results = []
    try:
        for poll in polls:
            res = measure(os.path.abspath(args.builddir), base, runner,
                          poll, args.rounds, args.sequential, args.seed,
                          args.corosync)
            results.append((poll, res))
        report(results, args)
        for node, excerpt in SANITIZER_REPORTS:
            print(f"\n!!! sanitizer report in node {node}'s log:\n{excerpt}")
        return 2 if SANITIZER_REPORTS else 0
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    except (RuntimeError, OSError, EOFError, subprocess.SubprocessError) as e:
        print(f"\n!!! NO FIGURES: {e}", flush=True)
        return 1
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
