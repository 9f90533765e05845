#!/usr/bin/env python3
"""imap-bench.py - the IMAP service against Dovecot, in the same run.

Run it through run-imap-bench.sh (which installs dovecot-imapd when it is
missing and we are root):

    bench/run-imap-bench.sh [BUILDDIR] [--clients C] [--seconds T]
        [--idle-connections K] [--users N] [--messages M]
        [--mix login,select,...] [--drop-failing]
        [--only clustermail|dovecot] [--scheme sha512-crypt|yescrypt]
        [--dovecot-tuned] [--quickack] [--json FILE] [--keep]

Defaults: 16 clients x 30 s, 200 idle connections, 8 users x 1,000
messages, the whole mix; about 1.5 minutes on 2 CPUs. A short run
(--clients 8 --seconds 20) takes about 70 s. Exit status: 0 fine, 1 no
figures (a server failed; the reason is printed), 2 figures printed but
sessions failed during the run (printed with !!!).

What it does, in a temporary directory under $BENCH_DIR (default /var/tmp;
keep it on a disk-backed file system, fsync on tmpfs measures nothing):

  * starts a clustermaild (IMAP on 127.0.0.1 and a free port, lock_backend
    fcntl, workers = number of CPUs, log_level warning) and a private
    Dovecot (`dovecot -c CONF -F`, its own base_dir and state_dir, imap on
    127.0.0.1 and a free port, mail_location = maildir:~/Maildir, passdb
    passwd-file, userdb static with the uid/gid of the unprivileged user,
    ssl = no, disable_plaintext_auth = no, auth_mechanisms = plain login,
    mail_fsync and everything else about storage left at Dovecot's
    defaults; only process/client limits and mail_max_userip_connections
    are raised so that K idle connections fit);
  * gives both the same N users (u0@bench.test ...) with the same password
    AND THE SAME HASH: one crypt(3) hash made here with libcrypt is given
    to `clustermailctl user add --hash` and written as {CRYPT}hash into
    Dovecot's passwd-file, so both servers verify a login with the same
    libxcrypt call. Default: SHA512-CRYPT with 5,000 rounds (Dovecot's own
    default for that scheme); --scheme yescrypt uses libxcrypt's default
    yescrypt cost (~10 ms a login, which then dominates the mix). Dovecot's
    auth cache is off by default; neither server caches a verified password;
  * fills each user's INBOX with the same M realistic messages (2-20 KB,
    text/plain and multipart/alternative, seeded so identical for both):
    the first through `clustermailctl deliver` (which makes the Maildir) or
    written into Dovecot's Maildir, the rest written into new/ directly,
    then one untimed session per user SELECTs it (UIDs 1..M assigned) and
    runs the mix once: the preflight. Any command that does not answer a
    tagged OK there is reported loudly; the server gets no figure unless
    --drop-failing removes those commands from the mix of BOTH servers;
  * memory per idle connection: with nothing else connected, sums the RSS
    (and PSS, fairer to Dovecot's many processes that share pages) of the
    server's whole process tree, opens K connections (LOGIN + SELECT INBOX,
    spread over the users), waits a second, sums again: (after-before)/K;
  * throughput: C client processes (multiprocessing, raw sockets, no
    pipelining, the client parses only what it needs), client i acting as
    user i mod N, each looping for T seconds over one session of the mix:

      connect+greeting, LOGIN, SELECT INBOX,
      fetch-flags      FETCH n-49:n (FLAGS UID RFC822.SIZE)  (the last 50)
      fetch-body       UID FETCH u BODY.PEEK[]               (one message)
      fetch-envelope   UID FETCH u:u+19 ENVELOPE             (20 messages)
      store            UID STORE a,b,c +FLAGS (\\Seen), -FLAGS next time
      search-unseen    SEARCH UNSEEN
      search-subject   SEARCH SUBJECT "invoice"              (~5% match)
      append           APPEND INBOX {n} (a 2-20 KB message, synchronizing
                       literal) - the UID from APPENDUID, or, without it,
                       UID SEARCH HEADER Message-ID (timed as search-msgid)
      expunge          UID STORE uid +FLAGS (\\Deleted) (timed as
                       store-deleted), then EXPUNGE
      LOGOUT

    Every command must end in a tagged OK: anything else is counted as an
    error, printed, and ends that session (the client reconnects). The
    servers are measured one after the other (the other one sits idle);
    reported: commands/s and sessions/s per server and the ratio
    clustermail/Dovecot, p50/p99 latency per command, and the CPU time the
    server's process tree used during the run (reaped children included)
    per command: a figure less sensitive to the client sharing the CPUs.

Options that change what is compared (off by default, printed in notes):
  --dovecot-tuned  Dovecot's imap-login in "high-performance mode"
                   (service_count = 0, process_min_avail = CPUs) and 16
                   imap processes forked ahead; the default is Dovecot's
                   own default, one imap-login process per connection.
  --quickack       the clients set TCP_QUICKACK after every read, i.e. ACK
                   at once. A server that writes one reply in several
                   send()s without TCP_NODELAY stalls ~40 ms per reply on
                   Nagle + the client's delayed ACK; real clients delay
                   ACKs, so this is a diagnostic, not the headline figure.
  --mix            a subset of the operations, for partial runs while a
                   command is missing; --drop-failing does it automatically
                   (for both servers) from the preflight.

Client and servers share the machine's CPUs: on a small machine the
figures are "what this box can serve with this client running", the same
for both. Nothing here needs root, but without root Dovecot runs as the
invoking user (Dovecot warns about it) and clustermaild does not drop
privileges; as root both run mail work as user clustermail (or nobody).
Every process started is killed when the script ends, also on Ctrl-C.
"""
import argparse
import array
import ctypes
import ctypes.util
import json
import multiprocessing
import os
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (  # noqa: E402
    Runner, file_tail, free_port, pct, run_ctl, start_daemon)

DOMAIN = "bench.test"
PASSWORD = "bench password 42"
SEARCH_WORD = "invoice"
DOVECOT = "/usr/sbin/dovecot"
DOVECOT_IMAP = "/usr/lib/dovecot/imap"
ALL_OPS = ["login", "select", "fetch-flags", "fetch-body", "fetch-envelope",
           "store", "search-unseen", "search-subject", "append", "expunge",
           "logout"]
NEEDS = {"fetch-flags": ("select",), "fetch-body": ("select",),
         "fetch-envelope": ("select",), "store": ("select",),
         "search-unseen": ("select",), "search-subject": ("select",),
         "append": ("login",), "expunge": ("append", "select"),
         "select": ("login",), "logout": ("login",)}
TIMEOUT = 30
QUICKACK = False        # --quickack: the client ACKs every segment at once


def log(msg):
    """A progress line on stderr."""
    print("imap-bench: " + msg, file=sys.stderr, flush=True)


# ---- users and password hashes ------------------------------------------------

def make_hash(scheme, rounds):
    """A crypt(3) hash of PASSWORD made with libcrypt (libxcrypt)."""
    lib = ctypes.CDLL(ctypes.util.find_library("crypt") or "libcrypt.so.1")
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong,
                                  ctypes.c_char_p, ctypes.c_int]
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    prefix, count = {"sha512-crypt": (b"$6$", rounds),
                     "yescrypt": (b"$y$", 0)}[scheme]
    setting = lib.crypt_gensalt(prefix, count, None, 0)
    if not setting:
        sys.exit(f"imap-bench: crypt_gensalt for {scheme} failed")
    h = lib.crypt(PASSWORD.encode(), setting)
    if not h or h.startswith(b"*"):
        sys.exit(f"imap-bench: crypt for {scheme} failed")
    return h.decode()


# ---- messages -------------------------------------------------------------------

WORDS = ("meeting report budget quarterly project update review draft team "
         "schedule travel request approval contract customer release notes "
         "invoice agenda summary lunch question status plan").split()
TEXT = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do "
        "eiusmod tempor incididunt ut labore et dolore magna aliqua. Ut enim "
        "ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut "
        "aliquip ex ea commodo consequat.").split()


def message(rng, tag):
    """A realistic message of 2-20 KB; tag makes the Message-ID unique."""
    size = rng.randint(2000, 20000)
    words = [w for w in rng.sample(WORDS, 4) if w != SEARCH_WORD]
    if rng.random() < 0.05:
        words.insert(1, SEARCH_WORD)
    subject = " ".join(words).capitalize()
    day = rng.randint(1, 28)
    head = (f"Return-Path: <sender{rng.randint(0, 99)}@example.org>\n"
            f"Received: from mx.example.org (mx.example.org [192.0.2.7])\n"
            f"\tby mail.{DOMAIN} with ESMTPS; Mon, {day} Nov 2026 10:00:00 +0000\n"
            f"From: \"Sender {rng.randint(0, 99)}\" <sender{rng.randint(0, 99)}"
            f"@example.org>\n"
            f"To: \"User\" <user@{DOMAIN}>\n"
            f"Cc: team@{DOMAIN}\n"
            f"Subject: {subject}\n"
            f"Date: Mon, {day} Nov 2026 {rng.randint(0, 23):02d}:"
            f"{rng.randint(0, 59):02d}:00 +0000\n"
            f"Message-ID: <{tag}.{rng.getrandbits(48):x}@example.org>\n"
            "MIME-Version: 1.0\n")
    lines, n = [], 0
    while n < size - len(head) - 300:
        line = " ".join(rng.choices(TEXT, k=11))
        lines.append(line)
        n += len(line) + 1
    body = "\n".join(lines) + "\n"
    if rng.random() < 0.3:
        b = f"b{rng.getrandbits(40):x}"
        html = "<html><body><p>" + body.replace("\n", "</p>\n<p>") + \
            "</p></body></html>\n"
        half = len(body) // 2
        return (head + f"Content-Type: multipart/alternative; boundary=\"{b}\"\n"
                f"\n--{b}\nContent-Type: text/plain; charset=utf-8\n\n"
                f"{body[:half]}\n--{b}\nContent-Type: text/html; "
                f"charset=utf-8\n\n{html[:half]}\n--{b}--\n").encode()
    return (head + "Content-Type: text/plain; charset=utf-8\n"
            "Content-Transfer-Encoding: 7bit\n\n" + body).encode()


def fill_maildir(maildir, msgs, skip_first):
    """msgs written into maildir/new/ (Maildir names with S=, W=)."""
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(maildir, sub), exist_ok=True)
    base = int(time.time()) - 86400
    for i, data in enumerate(msgs):
        if i == 0 and skip_first:
            continue
        vsize = len(data) + data.count(b"\n")
        name = f"{base + i}.M{i:06d}P4242.fill,S={len(data)},W={vsize}"
        with open(os.path.join(maildir, "new", name), "wb") as f:
            f.write(data)


# ---- process trees --------------------------------------------------------------

def children_map():
    """pid -> list of child pids, from /proc."""
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    return kids


def tree(pid):
    """pid and all its descendants."""
    kids, out, todo = children_map(), [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def memory(pid):
    """(RSS KiB, PSS KiB, process count) of pid and its descendants."""
    rss = pss = n = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
            n += 1
        except OSError:
            continue
    return rss, pss, n


def cpu_seconds(pid):
    """CPU time of pid's tree, reaped descendants included (cutime)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15])
        except (OSError, IndexError, ValueError):
            continue
    return total / ticks


def kill_tree(proc, grace=5):
    """SIGTERM the process group and every descendant, then SIGKILL."""
    if proc is None:
        return
    pids = tree(proc.pid) if proc.poll() is None else []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except OSError:
            pass
        for p in pids:
            try:
                os.kill(p, sig)
            except OSError:
                pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(alive(p) for p in pids):
            time.sleep(0.05)
        if not any(alive(p) for p in pids):
            return


def alive(pid):
    """pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_greeting(port, proc, what, timeout=20):
    """Until the server greets on port; an error if proc dies first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        try:
            c = Conn(port)
            c.close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} does not answer on port {port}")


# ---- the servers -------------------------------------------------------------------

class Clustermail:
    """A clustermaild with users and filled INBOXes (start() runs it)."""

    name = "clustermail"

    def __init__(self, builddir, work, runner, users, pwhash, msgs):
        self.ctl = os.path.join(builddir, "src/ctl/clustermailctl")
        daemon = os.path.join(builddir, "src/daemon/clustermaild")
        self.dir = os.path.join(work, "clustermail")
        spool = os.path.join(self.dir, "spool")
        self.conf = os.path.join(self.dir, "clustermail.conf")
        self.runner = runner
        self.port = free_port()
        self.proc = None
        os.makedirs(spool)
        with open(self.conf, "w") as f:
            f.write(f"node_name = bench\nspool_dir = {spool}\n"
                    "lock_backend = fcntl\n"
                    f"users_file = {self.dir}/users\n"
                    f"control_socket = {self.dir}/bench.sock\n"
                    f"pid_file = {self.dir}/bench.pid\n"
                    f"mail_user = {runner.pw.pw_name}\n"
                    f"local_domains = {DOMAIN}\n"
                    f"workers = {os.cpu_count()}\n"
                    "shutdown_timeout = 2s\nlog_level = warning\n"
                    f"listen_imap = 127.0.0.1:{self.port}\n")
        runner.own(self.dir)
        for u in users:
            self.run_ctl(["user", "add", u, "--hash", pwhash])
            self.run_ctl(["deliver", u], msgs[0])
            local = u.split("@")[0]
            fill_maildir(os.path.join(spool, DOMAIN, local), msgs, True)
        runner.own(self.dir)
        self.daemon = daemon
        self.log = None

    def start(self):
        self.log, self.proc = start_daemon(
            self.daemon, self.conf, os.path.join(self.dir, "clustermaild.log"))
        wait_greeting(self.port, self.proc, "clustermaild")

    def run_ctl(self, argv, data=b""):
        run_ctl(self.ctl, self.conf, self.runner, argv, data)

    def log_tail(self):
        return file_tail(os.path.join(self.dir, "clustermaild.log"))

    def stop(self):
        kill_tree(self.proc)
        if self.log:
            self.log.close()


class Dovecot:
    """A private Dovecot instance with the same users and mail."""

    name = "dovecot"

    def __init__(self, work, runner, users, pwhash, msgs, max_conns,
                 tuned=False):
        self.dir = os.path.join(work, "dovecot")
        self.conf = os.path.join(self.dir, "dovecot.conf")
        self.port = free_port()
        self.proc = None
        home = os.path.join(self.dir, "home")
        for sub in ("run", "state", "home"):
            os.makedirs(os.path.join(self.dir, sub))
        passwd = os.path.join(self.dir, "passwd")
        with open(passwd, "w") as f:
            for u in users:
                f.write(f"{u}:{{CRYPT}}{pwhash}\n")
        os.chmod(passwd, 0o644)
        root = os.geteuid() == 0
        me = runner.pw.pw_name
        limits = max_conns + 100
        tuned_login = tuned_imap = ""
        if tuned:
            tuned_login = ("  service_count = 0\n"
                           f"  process_min_avail = {os.cpu_count()}\n")
            tuned_imap = "  process_min_avail = 16\n"
        users_conf = "" if root else (f"default_login_user = {me}\n"
                                      f"default_internal_user = {me}")
        with open(self.conf, "w") as f:
            f.write(f"""# private instance for imap-bench.py
base_dir = {self.dir}/run
state_dir = {self.dir}/state
log_path = {self.dir}/dovecot.log
info_log_path = /dev/null
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:~/Maildir
first_valid_uid = 1
default_process_limit = {limits}
default_client_limit = {limits * 4}
{users_conf}
passdb {{
  driver = passwd-file
  args = {passwd}
}}
userdb {{
  driver = static
  args = uid={runner.pw.pw_uid} gid={runner.pw.pw_gid} home={home}/%n
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
{tuned_login}}}
service imap {{
  process_limit = {limits}
{tuned_imap}}}
protocol imap {{
  mail_max_userip_connections = {limits}
}}
""")
        for u in users:
            fill_maildir(os.path.join(home, u.split("@")[0], "Maildir"),
                         msgs, False)
        runner.own(home)

    def start(self):
        self.proc = subprocess.Popen(
            [DOVECOT, "-c", self.conf, "-F"], stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.dir, "stderr"), "wb"),
            start_new_session=True)
        wait_greeting(self.port, self.proc, "dovecot")

    def log_tail(self):
        out = ""
        for name in ("stderr", "dovecot.log"):
            try:
                with open(os.path.join(self.dir, name), "rb") as f:
                    out += f.read()[-1500:].decode(errors="replace")
            except OSError:
                pass
        return out

    def stop(self):
        kill_tree(self.proc)


# ---- the IMAP client ---------------------------------------------------------------

class TimeUp(Exception):
    """The run's deadline passed (not socket.timeout: that is an error)."""


class ImapError(Exception):
    """A command ended without a tagged OK (or a reply was wrong)."""

    def __init__(self, cmd, line):
        super().__init__(f"{cmd}: {line}")
        self.cmd, self.line = cmd, line


LITERAL = re.compile(rb"\{(\d+)\+?\}$")


class Conn:
    """A raw-socket IMAP client: one command at a time, minimal parsing."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if QUICKACK:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        self.buf = bytearray()
        self.n = 0
        self.exists = 0
        self.uidnext = 0
        greeting = self.line()
        if not greeting.startswith(b"* OK"):
            self.close()
            raise ImapError("greeting", greeting.decode(errors="replace"))

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def fill(self):
        chunk = self.sock.recv(262144)
        if not chunk:
            raise EOFError("connection closed by the server")
        if QUICKACK:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        self.buf += chunk

    def line(self):
        start = 0
        while True:
            i = self.buf.find(b"\r\n", start)
            if i >= 0:
                out = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return out
            start = max(0, len(self.buf) - 1)
            self.fill()

    def literal(self, n):
        """Skip a literal of n bytes (we never need its content)."""
        while len(self.buf) < n:
            self.fill()
        del self.buf[:n]

    def response_line(self):
        """One response line; literals are consumed and noted as {N}."""
        line = self.line()
        while True:
            m = LITERAL.search(line)
            if not m:
                return line
            self.literal(int(m.group(1)))
            line += b"\x00" + self.line()

    def command(self, name, text, literal=None):
        """Send 'TAG text'; untagged lines of the reply, or ImapError."""
        self.n += 1
        tag = b"b%d" % self.n
        if literal is None:
            self.sock.sendall(tag + b" " + text + b"\r\n")
        else:
            self.sock.sendall(tag + b" " + text + b" {%d}\r\n" % len(literal))
            while True:
                line = self.response_line()
                if line.startswith(b"+"):
                    break
                if line.startswith(tag + b" "):
                    raise ImapError(name, line.decode(errors="replace"))
                self.untagged(line)
            self.sock.sendall(literal + b"\r\n")
        lines = []
        prefix = tag + b" "
        while True:
            line = self.response_line()
            if line.startswith(prefix):
                if line[len(prefix):len(prefix) + 2] != b"OK":
                    raise ImapError(name, line.decode(errors="replace"))
                self.tagged = line
                return lines
            self.untagged(line)
            lines.append(line)

    def untagged(self, line):
        """Track EXISTS, EXPUNGE and UIDNEXT: all the state we need."""
        if line.endswith(b" EXISTS"):
            self.exists = int(line.split()[1])
        elif line.endswith(b" EXPUNGE"):
            self.exists -= 1
        elif b"[UIDNEXT " in line:
            self.uidnext = int(line.split(b"[UIDNEXT ")[1].split(b"]")[0])


# ---- one session of the mix -----------------------------------------------------------

class Session:
    """State a client keeps between sessions (flip of the \\Seen STORE)."""

    def __init__(self, port, user, stable, rng):
        self.port, self.user, self.stable, self.rng = port, user, stable, rng
        self.seen_on = True


def run_session(s, mix, timed, keep_going=False, errors=None):
    """One connection through the mix. timed(name, t0) records a command;
    it returns False when time is up. keep_going: carry on after a failing
    command (the preflight), recording it in errors."""
    rng = s.rng

    def do(name, text, literal=None):
        t0 = time.perf_counter()
        try:
            lines = c.command(name, text, literal)
        except ImapError as e:
            if not keep_going or name in ("login", "select"):
                raise
            errors.append((e.cmd, e.line))
            return None
        if not timed(name, t0):
            raise TimeUp
        return lines

    def bad(name, text):
        if not keep_going:
            raise ImapError(name, text)
        errors.append((name, text))

    t0 = time.perf_counter()
    c = Conn(s.port)
    try:
        if not timed("connect", t0):
            raise TimeUp
        do("login", b'LOGIN "%s" "%s"' % (s.user.encode(), PASSWORD.encode()))
        if "select" in mix:
            do("select", b"SELECT INBOX")
        n = c.exists
        if "fetch-flags" in mix:
            lines = do("fetch-flags", b"FETCH %d:%d (FLAGS UID RFC822.SIZE)"
                       % (max(1, n - 49), max(1, n)))
            if lines is not None and not any(b" FETCH " in x for x in lines):
                bad("fetch-flags", "no FETCH response")
        if "fetch-body" in mix:
            lines = do("fetch-body", b"UID FETCH %d BODY.PEEK[]"
                       % rng.randint(1, s.stable))
            if lines is not None and not any(b"\x00" in x for x in lines):
                bad("fetch-body", "no body literal in the reply")
        if "fetch-envelope" in mix:
            u = rng.randint(1, s.stable - 19)
            lines = do("fetch-envelope", b"UID FETCH %d:%d ENVELOPE"
                       % (u, u + 19))
            if lines is not None and \
                    sum(b"ENVELOPE" in x for x in lines) != 20:
                bad("fetch-envelope", "not 20 ENVELOPEs")
        if "store" in mix:
            uids = b",".join(b"%d" % rng.randint(1, s.stable)
                             for _ in range(3))
            op = b"+FLAGS" if s.seen_on else b"-FLAGS"
            s.seen_on = not s.seen_on
            do("store", b"UID STORE %s %s (\\Seen)" % (uids, op))
        if "search-unseen" in mix:
            do("search-unseen", b"SEARCH UNSEEN")
        if "search-subject" in mix:
            lines = do("search-subject", b'SEARCH SUBJECT "%s"'
                       % SEARCH_WORD.encode())
            if lines is not None and not any(
                    x.startswith(b"* SEARCH") for x in lines):
                bad("search-subject", "no * SEARCH response")
        if "append" in mix:
            msgid = f"{s.user}.{rng.getrandbits(64):x}"
            data = message(rng, msgid).replace(b"\n", b"\r\n")
            if do("append", b"APPEND INBOX (\\Seen)", data) is not None and \
                    "expunge" in mix:
                uid = appended_uid(c, do, data)
                if uid is not None:
                    do("store-deleted", b"UID STORE %d +FLAGS (\\Deleted)"
                       % uid)
                    do("expunge", b"EXPUNGE")
        do("logout", b"LOGOUT")
    finally:
        c.close()


def appended_uid(c, do, data):
    """The UID of the message just appended: APPENDUID, else a search."""
    m = re.search(rb"\[APPENDUID \d+ (\d+)\]", c.tagged)
    if m:
        return int(m.group(1))
    msgid = re.search(rb"Message-ID: (<[^>]+>)", data).group(1)
    lines = do("search-msgid", b'UID SEARCH HEADER Message-ID "%s"' % msgid)
    for x in lines or []:
        if x.startswith(b"* SEARCH "):
            return int(x.split()[-1])
    raise ImapError("search-msgid", "the appended message is not found")


# ---- the load clients -------------------------------------------------------------------

def client_main(idx, port, user, stable, mix, start_at, seconds, queue):
    """One load client process: sessions until the deadline."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    rng = random.Random(idx * 7919 + 1)
    s = Session(port, user, stable, rng)
    lat = {}
    errors, sessions, aborted = [], 0, 0
    deadline = start_at + seconds

    def timed(name, t0):
        t = time.perf_counter()
        if time.monotonic() > deadline:
            return False
        lat.setdefault(name, array.array("f")).append((t - t0) * 1000)
        return True

    while time.monotonic() < start_at:
        time.sleep(min(0.05, start_at - time.monotonic()))
    while time.monotonic() < deadline:
        try:
            run_session(s, mix, timed)
            sessions += 1
        except TimeUp:
            break
        except Exception as e:      # noqa: BLE001 - counted and printed
            aborted += 1
            if len(errors) < 20:
                errors.append(f"{user}: {type(e).__name__}: {e}")
            time.sleep(0.01)
    queue.put((idx, {k: v.tobytes() for k, v in lat.items()}, sessions,
               aborted, errors))


def load(port, users, stable, mix, clients, seconds):
    """Run the clients; merged latencies (ms lists), sessions, errors."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    start_at = time.monotonic() + 1.0 + 0.05 * clients
    procs = [ctx.Process(target=client_main, daemon=True,
                         args=(i, port, users[i % len(users)], stable, mix,
                               start_at, seconds, queue))
             for i in range(clients)]
    try:
        for p in procs:
            p.start()
        lat, sessions, aborted, errors = {}, 0, 0, []
        for _ in procs:
            _, l, s, a, e = queue.get(timeout=seconds + 120)
            for k, v in l.items():
                arr = array.array("f")
                arr.frombytes(v)
                lat.setdefault(k, []).extend(arr)
            sessions += s
            aborted += a
            errors += e
        for p in procs:
            p.join(10)
        return lat, sessions, aborted, errors
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()


# ---- preflight, idle memory ----------------------------------------------------------

def preflight(server, users, stable, mix):
    """One untimed session per user; every failing command (cmd, reply)."""
    failures = []
    for i, u in enumerate(users):
        c = Conn(server.port)
        try:
            c.command("login", b'LOGIN "%s" "%s"'
                      % (u.encode(), PASSWORD.encode()))
            c.command("select", b"SELECT INBOX")
            if c.exists != stable or (c.uidnext and c.uidnext != stable + 1):
                raise ImapError("select", f"{u}: EXISTS {c.exists} UIDNEXT "
                                f"{c.uidnext}, expected {stable} and "
                                f"{stable + 1}")
            c.command("logout", b"LOGOUT")
        except ImapError as e:
            failures.append((e.cmd, e.line))
            return failures
        finally:
            c.close()
        errs = []
        s = Session(server.port, u, stable, random.Random(i))
        try:
            run_session(s, mix, lambda name, t0: True, True, errs)
        except ImapError as e:
            errs.append((e.cmd, e.line))
        except (OSError, EOFError) as e:
            errs.append(("connection", str(e)))
        for e in errs:
            if e[0] not in [f[0] for f in failures]:
                failures.append(e)
    return failures


def idle_memory(server, users, k):
    """KiB of RSS and PSS per idle, logged-in, SELECTed connection."""
    time.sleep(1)
    before = memory(server.proc.pid)
    conns = []
    try:
        for i in range(k):
            c = Conn(server.port)
            conns.append(c)
            c.command("login", b'LOGIN "%s" "%s"'
                      % (users[i % len(users)].encode(), PASSWORD.encode()))
            c.command("select", b"SELECT INBOX")
        time.sleep(1.5)
        after = memory(server.proc.pid)
    finally:
        for c in conns:
            c.close()
    return {"rss_before_kib": before[0], "rss_after_kib": after[0],
            "pss_before_kib": before[1], "pss_after_kib": after[1],
            "procs_before": before[2], "procs_after": after[2],
            "rss_per_conn_kib": (after[0] - before[0]) / k,
            "pss_per_conn_kib": (after[1] - before[1]) / k}


# ---- report ------------------------------------------------------------------------


def summarize(lat, sessions, aborted, errors, seconds):
    """The figures of one load run."""
    cmds = sum(len(v) for k, v in lat.items() if k != "connect")
    per = {k: {"count": len(v), "p50_ms": pct(v, 0.50),
               "p99_ms": pct(v, 0.99)} for k, v in lat.items()}
    return {"commands_per_s": cmds / seconds,
            "sessions_per_s": sessions / seconds, "sessions": sessions,
            "aborted_sessions": aborted, "errors": errors, "commands": per}


def f1(v, digits=1):
    """A table cell."""
    return "n/a" if v is None else f"{v:,.{digits}f}"


def report(res, names, args, mix, notes):
    """Print the table, the notes and, loudly, any errors."""
    cm, dc = (res.get(n) for n in ("clustermail", "dovecot"))

    def row(label, get, digits=1, ratio="ours/theirs"):
        a = get(cm) if cm else None
        b = get(dc) if dc else None
        r = "-"
        if a and b and ratio:
            r = f"{(a / b if ratio == 'ours/theirs' else b / a):.2f}"
        print(f"{label:<44} {f1(a, digits):>12} {f1(b, digits):>10} {r:>7}")

    print()
    print(f"IMAP benchmark: {args.clients} clients x {args.seconds} s, "
          f"{len(names)} users x {args.messages} messages, "
          f"{os.cpu_count()} CPUs; mix: {','.join(mix)}")
    print(f"{'figure':<44} {'clustermail':>12} {'dovecot':>10} {'ratio':>7}")

    def load_of(r):
        return r.get("load") if r else None
    row("commands/s (all commands of the mix)",
        lambda r: load_of(r) and load_of(r)["commands_per_s"])
    row("sessions/s (connect..LOGOUT)",
        lambda r: load_of(r) and load_of(r)["sessions_per_s"])
    row("server CPU ms per command",
        lambda r: load_of(r) and load_of(r)["server_cpu_ms_per_command"],
        3, "theirs/ours")
    row("server CPU s during the run",
        lambda r: load_of(r) and load_of(r)["server_cpu_s"], 1, None)
    row("client CPU s during the run (all clients)",
        lambda r: load_of(r) and load_of(r)["client_cpu_s"], 1, None)
    row("idle connection: RSS KiB each",
        lambda r: r.get("idle") and r["idle"]["rss_per_conn_kib"], 1,
        "theirs/ours")
    row("idle connection: PSS KiB each",
        lambda r: r.get("idle") and r["idle"]["pss_per_conn_kib"], 1,
        "theirs/ours")
    keys = ["connect"] + [k for k in ALL_OPS[:9] if k in mix] + \
        ["search-msgid", "store-deleted", "expunge", "logout"]
    seen = set()
    for k in keys:
        if k in seen:
            continue
        seen.add(k)
        for q in ("p50_ms", "p99_ms"):
            def get(r, k=k, q=q):
                lo = load_of(r)
                c = lo and lo["commands"].get(k)
                return c and c[q]
            if (cm and get(cm)) or (dc and get(dc)):
                row(f"{k} latency {q[:3]} (ms)", get, 2, "theirs/ours")
    print("\nratio > 1: clustermail is better (rates: ours/Dovecot's; "
          "latencies and memory: Dovecot's/ours)")
    for n in notes:
        print("note:", n)
    for name in ("clustermail", "dovecot"):
        r = res.get(name)
        if r and r.get("load") and (r["load"]["errors"] or
                                    r["load"]["aborted_sessions"]):
            print(f"\n!!! {name}: {r['load']['aborted_sessions']} sessions "
                  "ended by an error during the run; first ones:")
            for e in r["load"]["errors"][:10]:
                print("!!!   " + e)


# ---- main -----------------------------------------------------------------------------

def check_mix(mix):
    """Exit with a message when the mix is not runnable."""
    for op in mix:
        if op not in ALL_OPS:
            sys.exit(f"imap-bench: unknown operation '{op}' in --mix "
                     f"(known: {','.join(ALL_OPS)})")
        for need in NEEDS.get(op, ()):
            if need not in mix:
                sys.exit(f"imap-bench: --mix: {op} needs {need}")
    if "login" not in mix or "logout" not in mix:
        sys.exit("imap-bench: --mix must contain login and logout")


def drop_ops(mix, failing):
    """The mix without the failing operations and what depends on them."""
    names = {"store-deleted": "expunge", "search-msgid": "expunge",
             "connection": "login", "greeting": "login"}
    out = [op for op in mix if op not in
           {names.get(f, f) for f in failing}]
    changed = True
    while changed:
        changed = False
        for op in list(out):
            if any(n not in out for n in NEEDS.get(op, ())):
                out.remove(op)
                changed = True
    return out


def main():
    """Set up both servers, measure, report, clean up."""
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--builddir", default=".")
    ap.add_argument("--workdir", default=os.environ.get("BENCH_DIR",
                                                        "/var/tmp"))
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--idle-connections", type=int, default=200)
    ap.add_argument("--users", type=int, default=8)
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--mix", default=",".join(ALL_OPS),
                    help="operations, comma-separated (default: all: "
                    + ",".join(ALL_OPS) + ")")
    ap.add_argument("--drop-failing", action="store_true",
                    help="leave out of the mix (for both servers) the "
                    "commands that fail in a server's preflight")
    ap.add_argument("--only", choices=["clustermail", "dovecot"])
    ap.add_argument("--scheme", choices=["sha512-crypt", "yescrypt"],
                    default="sha512-crypt")
    ap.add_argument("--rounds", type=int, default=5000,
                    help="SHA512-CRYPT rounds (default 5000)")
    ap.add_argument("--dovecot-tuned", action="store_true",
                    help="Dovecot's imap-login in high-performance mode "
                    "(service_count = 0, process_min_avail = CPUs) and 16 "
                    "imap processes forked ahead (process_min_avail)")
    ap.add_argument("--quickack", action="store_true",
                    help="diagnostic: the client turns delayed ACKs off "
                    "(TCP_QUICKACK after every read), which hides a "
                    "server's Nagle stalls; real clients do not do this")
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--keep", action="store_true",
                    help="keep the work directory")
    args = ap.parse_args()
    mix = [m.strip() for m in args.mix.split(",") if m.strip()]
    global QUICKACK
    QUICKACK = args.quickack
    check_mix(mix)
    if args.messages < 50 or args.users < 1 or args.clients < 1:
        sys.exit("imap-bench: need --messages >= 50, --users and "
                 "--clients >= 1")

    # SIGTERM/SIGHUP: unwind through the finally blocks like Ctrl-C
    def on_signal(signo, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, args.idle_connections + 256))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    which = [args.only] if args.only else ["clustermail", "dovecot"]
    if "dovecot" in which and not (os.access(DOVECOT, os.X_OK) and
                                   os.access(DOVECOT_IMAP, os.X_OK)):
        if args.only:
            sys.exit("imap-bench: dovecot-imapd is not installed")
        log(f"{DOVECOT_IMAP} missing (dovecot-imapd): no Dovecot figures")
        which.remove("dovecot")
    runner = Runner("imap-bench")
    pwhash = make_hash(args.scheme, args.rounds)
    users = [f"u{i}@{DOMAIN}" for i in range(args.users)]
    rng = random.Random(42)
    msgs = [message(rng, f"fill{i}") for i in range(args.messages)]
    work = tempfile.mkdtemp(prefix="cm-imap-bench.", dir=args.workdir)
    os.chmod(work, 0o755)
    servers, res, notes = {}, {}, []
    failed = False
    try:
        for name in which:
            t = time.monotonic()
            log(f"{name}: starting, {args.users} users x {args.messages} "
                "messages ...")
            if name == "clustermail":
                servers[name] = Clustermail(args.builddir, work, runner,
                                            users, pwhash, msgs)
            else:
                servers[name] = Dovecot(work, runner, users, pwhash, msgs,
                                        args.idle_connections +
                                        args.clients, args.dovecot_tuned)
            servers[name].start()
            log(f"{name}: up in {time.monotonic() - t:.1f} s; preflight")
            t = time.monotonic()
            fails = preflight(servers[name], users, args.messages, mix)
            res[name] = {"preflight_s": time.monotonic() - t,
                         "preflight_failures": fails}
            for cmd, line in fails:
                log(f"!!! {name}: {cmd} FAILS: {line}")
        failing = {f[0] for r in res.values() for f in r["preflight_failures"]}
        if failing:
            if not args.drop_failing:
                print("\n!!! NO FIGURES: commands of the mix fail (above). "
                      "Leave them out with --mix, or --drop-failing.",
                      flush=True)
                failed = True
                return 1
            mix = drop_ops(mix, failing)
            if "login" not in mix or "logout" not in mix:
                print("\n!!! NO FIGURES: LOGIN or LOGOUT fails (above)",
                      flush=True)
                failed = True
                return 1
            notes.append("left out of the mix (failing in a preflight): " +
                         ", ".join(sorted(failing)))
            log("mix reduced to: " + ",".join(mix))
            check_mix(mix)
        for name, server in servers.items():
            if args.idle_connections > 0:
                log(f"{name}: {args.idle_connections} idle connections ...")
                res[name]["idle"] = idle_memory(server, users,
                                                args.idle_connections)
            log(f"{name}: {args.clients} clients x {args.seconds:g} s ...")
            res[name]["loadavg_before"] = os.getloadavg()[0]
            cpu0 = cpu_seconds(server.proc.pid)
            ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            lat, sessions, aborted, errors = load(
                server.port, users, args.messages, mix, args.clients,
                args.seconds)
            ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = cpu_seconds(server.proc.pid) - cpu0
            res[name]["load"] = lo = summarize(lat, sessions, aborted,
                                               errors, args.seconds)
            lo["server_cpu_s"] = cpu
            lo["client_cpu_s"] = (ru1.ru_utime + ru1.ru_stime -
                                  ru0.ru_utime - ru0.ru_stime)
            ncmd = lo["commands_per_s"] * args.seconds
            lo["server_cpu_ms_per_command"] = cpu * 1000 / ncmd \
                if ncmd else None
            for e in errors[:5]:
                log(f"!!! {name}: {e}")
        if "dovecot" in servers:
            v = subprocess.run([DOVECOT, "--version"], capture_output=True,
                               text=True).stdout.strip()
            notes.append(f"Dovecot {v}: one imap process per connection; "
                         "idle RSS sums all its processes, PSS shares "
                         "their common pages out")
            notes.append("Dovecot login processes: " + (
                "high-performance mode (--dovecot-tuned)" if
                args.dovecot_tuned else "default high-security mode, one "
                "imap-login process per connection (--dovecot-tuned for "
                "the high-performance mode)"))
        if args.quickack:
            notes.append("--quickack: the clients ACK at once (no delayed "
                         "ACK), hiding Nagle stalls of a server that sends "
                         "one reply in several writes without TCP_NODELAY")
        notes.append(f"password hashes: {args.scheme}"
                     + (f" ({args.rounds} rounds)"
                        if args.scheme == "sha512-crypt" else "") +
                     ", the same hash for both servers")
        notes.append("1-minute load average before each run (other work on "
                     "the machine skews the figures): " + ", ".join(
                         f"{n} {r['loadavg_before']:.2f}"
                         for n, r in res.items() if "loadavg_before" in r))
        fs = subprocess.run(["df", "-T", work], capture_output=True,
                            text=True).stdout.splitlines()[-1].split()[1]
        notes.append(f"work dir {work} ({fs}); clients and servers share "
                     "the CPUs")
        report(res, users, args, mix, notes)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"args": vars(args), "mix": mix, "results": res,
                           "notes": notes}, f, indent=1)
        bad = any(r.get("load", {}).get("aborted_sessions")
                  for r in res.values())
        return 2 if bad else 0
    except KeyboardInterrupt:
        log("interrupted")
        failed = True
        return 130
    except (RuntimeError, ImapError, OSError, EOFError) as e:
        failed = True
        print(f"\n!!! NO FIGURES: {e}", flush=True)
        return 1
    except Exception:
        failed = True
        raise
    finally:
        for name, server in servers.items():
            if failed:
                tail = server.log_tail().strip()
                if tail:
                    log(f"{name} log (tail):\n{tail}")
            server.stop()
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
