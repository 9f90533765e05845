#!/usr/bin/env python3
"""smtp-bench.py - mail delivery rates of clustermaild against Dovecot and
Postfix, in the same run on the same machine.

Run it through run-smtp-bench.sh (which installs dovecot-lmtpd when it is
missing and we are root):

    bench/run-smtp-bench.sh [BUILDDIR] [--messages N] [--big-messages M]
        [--sessions S] [--mailboxes 1,20] [--sizes 4096,102400]
        [--only clustermail|dovecot|postfix] [--skip-outbound]
        [--outbound-only] [--log-level LEVEL] [--json FILE] [--keep]

Defaults: 20 sessions, 2,000 messages of 4 KiB and 500 of 100 KiB, into
one mailbox and spread over 20 mailboxes; a few minutes on 2 CPUs.

What it does, in a temporary directory under $BENCH_DIR (default /var/tmp;
keep it on a disk-backed file system, fsync on tmpfs measures nothing):

  * starts a clustermaild (LMTP and SMTP and submission on 127.0.0.1, free
    ports, lock_backend fcntl, workers = number of CPUs, log_level
    warning; every delivery is fsynced before its 250, as always), a
    private Dovecot that only speaks LMTP (postfixtest.DovecotLmtp: its own
    base_dir, static userdb, maildir:~/Maildir, mail_fsync left at its
    default "optimized", which fsyncs every saved message) and a private
    Postfix (postfixtest.Postfix: its own config, queue and data
    directories; queue files are always fsynced) whose transport map sends
    the benchmark domain to that Dovecot over LMTP;
  * for every message size and mailbox count, runs Postfix's smtp-source
    with S sessions in parallel, each keeping its connection for the next
    message (-d, as an MTA's LMTP client does), N messages in all, against:
      clustermail LMTP    smtp-source -L to our listen_lmtp
      dovecot LMTP        smtp-source -L to Dovecot's LMTP
      clustermail SMTP    smtp-source to our listen_smtp (local users are
                          delivered into the store before the 250)
      postfix->dovecot    smtp-source to Postfix, which queues and relays
                          over LMTP to Dovecot: the classic pair
    With K mailboxes, K smtp-source processes run at once, each with S/K
    sessions, N/K messages, and its own recipient. Each target mailbox got
    one message before the clock starts (spools created, processes
    forked). The time runs from the start of smtp-source until every
    message is in the Maildirs (new/ + cur/ counted): for the direct rows
    that is when smtp-source exits (each 250 means stored), for
    postfix->dovecot when the last message reached Dovecot; Postfix's own
    acceptance rate (smtp-source's exit) is shown on its own row. A count
    that does not match, or smtp-source failing, is an error: no figure;
  * outbound queue throughput: N 4 KiB messages for a remote domain,
    submitted by S sessions of one Python client (smtplib; with AUTH PLAIN
    on our submission port, without AUTH to Postfix, which relays for
    127.0.0.0/8), queued and delivered through relayhost = a local
    smtp-sink that dumps every message to a file; the time runs until the
    sink holds all N. Skipped with a note when our daemon does not queue
    mail for remote domains (the queue runner is not in yet).

Ratios are ours/theirs: > 1 means clustermail is faster. clustermail LMTP
is compared with Dovecot LMTP, clustermail SMTP with postfix->dovecot
(both: SMTP in, message in the user's mailbox, everything fsynced), the
outbound rows with Postfix. smtp-source, the servers and the Python
client share the machine's CPUs. Every process started is stopped (the
daemons, Postfix's whole process tree, Dovecot's, the sink) when the
script ends, also on Ctrl-C.
"""
import argparse
import json
import multiprocessing
import os
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from benchlib import (  # noqa: E402
    Runner, file_tail, free_port, run_ctl, start_daemon)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
import postfixtest  # noqa: E402
from postfixtest import Unavailable, maildir_count  # noqa: E402

DOMAIN = "bench.test"
REMOTE = "remote.test"
SENDER = "sender@source.test"
PASSWORD = "bench password 42"
SMTP_SOURCE = "/usr/sbin/smtp-source"
SMTP_SINK = "/usr/sbin/smtp-sink"


def log(msg):
    print("smtp-bench: " + msg, file=sys.stderr, flush=True)


class Clustermail:
    """A clustermaild with LMTP, SMTP and submission; users added first."""

    name = "clustermail"

    def __init__(self, builddir, work, runner, users, relayhost=None,
                 log_level="warning"):
        self.ctl = os.path.join(builddir, "src/ctl/clustermailctl")
        self.daemon = os.path.join(builddir, "src/daemon/clustermaild")
        self.dir = os.path.join(work, "clustermail")
        self.spool = os.path.join(self.dir, "spool")
        self.conf = os.path.join(self.dir, "clustermail.conf")
        self.runner = runner
        self.ports = {s: free_port() for s in ("lmtp", "smtp", "submission")}
        self.proc = None
        self.log = None
        os.makedirs(self.spool)
        lines = ["node_name = bench", f"spool_dir = {self.spool}",
                 "lock_backend = fcntl", f"users_file = {self.dir}/users",
                 f"control_socket = {self.dir}/bench.sock",
                 f"pid_file = {self.dir}/bench.pid",
                 f"mail_user = {runner.pw.pw_name}",
                 f"local_domains = {DOMAIN}",
                 f"workers = {os.cpu_count()}",
                 "shutdown_timeout = 2s", f"log_level = {log_level}",
                 "trusted_networks = 127.0.0.0/8"]
        lines += [f"listen_{s} = 127.0.0.1:{p}" for s, p in self.ports.items()]
        if relayhost:
            lines += [f"relayhost = {relayhost}", "queue_tls = none",
                      "queue_workers = 20",
                      "queue_destination_concurrency = 20"]
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        runner.own(self.dir)
        for u in users:
            self.run_ctl(["user", "add", u, "--password-stdin"],
                         (PASSWORD + "\n").encode())
        runner.own(self.dir)

    def maildir(self, address):
        local, domain = address.split("@")
        return os.path.join(self.spool, domain, local)

    def run_ctl(self, argv, data=b""):
        run_ctl(self.ctl, self.conf, self.runner, argv, data)

    def start(self):
        self.log, self.proc = start_daemon(
            self.daemon, self.conf, os.path.join(self.dir, "clustermaild.log"))
        for port in self.ports.values():
            postfixtest.wait_port(port, self.proc, "clustermaild")
        return self

    def log_tail(self):
        return file_tail(os.path.join(self.dir, "clustermaild.log"))

    def stop(self):
        if self.proc is not None:
            pids = postfixtest.session_members(self.proc.pid)
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
            postfixtest.kill_pids(pids)
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc = None
        if self.log:
            self.log.close()
            self.log = None


class Sink:
    """smtp-sink on 127.0.0.1, one file per message received in dir."""

    def __init__(self, work, runner):
        self.dir = os.path.join(work, "sink")
        os.makedirs(self.dir)
        runner.own(self.dir)
        self.port = free_port()
        self.runner = runner
        self.proc = None

    def start(self):
        argv = [SMTP_SINK, "-d", os.path.join(self.dir, "m.")]
        if os.geteuid() == 0:
            argv += ["-u", self.runner.pw.pw_name]
        argv += [f"127.0.0.1:{self.port}", "256"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        postfixtest.wait_port(self.port, self.proc, "smtp-sink")
        return self

    def count(self):
        return sum(1 for n in os.listdir(self.dir) if n.startswith("m."))

    def clear(self):
        for n in os.listdir(self.dir):
            os.unlink(os.path.join(self.dir, n))

    def stop(self):
        if self.proc is not None:
            postfixtest.kill_pids([self.proc.pid])
            self.proc.wait()
            self.proc = None


# ---- load -------------------------------------------------------------------

def smtp_source_run(port, lmtp, rcpts, sessions, messages, size):
    """One smtp-source per recipient, all at once; seconds taken. Raises
    RuntimeError when one of them fails."""
    k = len(rcpts)
    procs = []
    t0 = time.monotonic()
    for i, rcpt in enumerate(rcpts):
        m = messages // k + (1 if i < messages % k else 0)
        s = max(1, sessions // k + (1 if i < sessions % k else 0))
        argv = [SMTP_SOURCE, "-d", "-s", str(min(s, m)), "-m", str(m),
                "-l", str(size), "-f", SENDER, "-t", rcpt,
                "-S", "bench message", "-M", "source.test"]
        if lmtp:
            argv.append("-L")
        argv.append(f"127.0.0.1:{port}")
        procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE))
    errors = []
    for p in procs:
        out, err = p.communicate()
        if p.returncode != 0:
            errors.append(err.decode(errors="replace").strip()[-300:])
    elapsed = time.monotonic() - t0
    if errors:
        raise RuntimeError("smtp-source failed: " + "; ".join(errors))
    return elapsed


def wait_counts(dirs, want, timeout, t0=None):
    """Until every Maildir in dirs holds want[dir]; seconds since t0."""
    deadline = time.monotonic() + timeout
    while True:
        have = {d: maildir_count(d) for d in dirs}
        if all(have[d] >= want[d] for d in dirs):
            return (time.monotonic() - t0) if t0 is not None else 0.0
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {sum(have.values())} of "
                               f"{sum(want.values())} messages arrived in "
                               f"{timeout}s")
        time.sleep(0.02)


def _submit_worker(port, user, rcpt, count, size, queue):
    body = ("X" * 76 + "\r\n") * (size // 78 + 1)
    body = body[:size]
    sent = 0
    try:
        s = smtplib.SMTP("127.0.0.1", port, timeout=120)
        s.ehlo("source.test")
        if user:
            s.login(user, PASSWORD)
        sender = user or SENDER
        for i in range(count):
            msg = (f"From: <{sender}>\r\nTo: <{rcpt}>\r\n"
                   f"Subject: outbound {i}\r\n\r\n{body}").encode()
            s.sendmail(sender, [rcpt], msg)
            sent += 1
        s.quit()
        queue.put((sent, None))
    except Exception as e:  # reported by the parent
        queue.put((sent, f"{type(e).__name__}: {e}"))


def submit(port, user, rcpt, sessions, messages, size):
    """messages sent by sessions smtplib clients; seconds taken."""
    q = multiprocessing.Queue()
    procs = []
    t0 = time.monotonic()
    for i in range(sessions):
        m = messages // sessions + (1 if i < messages % sessions else 0)
        p = multiprocessing.Process(target=_submit_worker,
                                    args=(port, user, rcpt, m, size, q))
        p.start()
        procs.append(p)
    results = [q.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    errors = [e for _, e in results if e]
    if errors:
        raise RuntimeError("submission failed: " + "; ".join(errors[:3]))
    return time.monotonic() - t0


# ---- the runs -------------------------------------------------------------

def deliver_row(name, port, lmtp, maildir_of, rcpts, args, size, count,
                settle=None):
    """Warm up, then one measured run. Returns (msgs/s end to end,
    msgs/s accepted) or raises."""
    # one message per mailbox first: spools made, processes forked
    smtp_source_run(port, lmtp, rcpts, len(rcpts), len(rcpts), 1000)
    dirs = [maildir_of(r) for r in rcpts]
    wait_counts(dirs, {d: 1 for d in dirs}, 60)
    if settle:
        settle()
    before = {d: maildir_count(d) for d in dirs}
    k = len(rcpts)
    want = {d: before[d] + count // k + (1 if i < count % k else 0)
            for i, d in enumerate(dirs)}
    t0 = time.monotonic()
    accepted = smtp_source_run(port, lmtp, rcpts, args.sessions, count, size)
    total = wait_counts(dirs, want, max(120, count / 5), t0)
    after = sum(maildir_count(d) for d in dirs)
    if after != sum(want.values()):
        raise RuntimeError(f"{name}: {after - sum(before.values())} messages "
                           f"stored, {count} sent")
    return count / total, count / accepted


def fmt(v):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    return f"{v:,.0f}" if v >= 100 else f"{v:,.1f}"


def ratio(a, b):
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) \
            or not b:
        return "-"
    return f"{a / b:.2f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--builddir", default=".")
    ap.add_argument("--messages", type=int, default=2000,
                    help="messages per run at the small size")
    ap.add_argument("--big-messages", type=int, default=500,
                    help="messages per run at sizes >= 64 KiB")
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--sizes", default="4096,102400")
    ap.add_argument("--mailboxes", default="1,20")
    ap.add_argument("--only", choices=["clustermail", "dovecot", "postfix"])
    ap.add_argument("--skip-outbound", action="store_true")
    ap.add_argument("--outbound-only", action="store_true")
    ap.add_argument("--log-level", default="warning",
                    help="clustermaild's log_level (see --keep)")
    ap.add_argument("--json")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    boxes = [int(x) for x in args.mailboxes.split(",")]

    for prog in (SMTP_SOURCE, SMTP_SINK):
        if not os.access(prog, os.X_OK):
            sys.exit(f"smtp-bench: {prog} missing (apt-get install postfix)")
    runner = Runner("smtp-bench")
    notes = []
    which = {"clustermail", "dovecot", "postfix"}
    if args.only:
        which = {args.only} | ({"dovecot"} if args.only == "postfix" else set())
    reason = postfixtest.dovecot_unavailable()
    if reason and which & {"dovecot", "postfix"}:
        notes.append(f"no Dovecot figures: {reason}")
        which -= {"dovecot", "postfix"}
    reason = postfixtest.postfix_unavailable()
    if reason and "postfix" in which:
        notes.append(f"no Postfix figures: {reason}")
        which.discard("postfix")

    base = os.environ.get("BENCH_DIR", "/var/tmp")
    work = tempfile.mkdtemp(prefix="smtp-bench-", dir=base)
    os.chmod(work, 0o755)
    log(f"working in {work}")
    started = []

    def on_signal(signo, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)

    # rows: list of (label, cm_value, their_value, their_name)
    results = {}
    rows = []
    try:
        # the recipients of every run, distinct per run
        plan = []
        for size in sizes:
            count = args.messages if size < 65536 else args.big_messages
            for k in boxes:
                plan.append((size, count, k))
        if args.outbound_only:
            plan = []

        def rcpts_for(tag, k):
            return [f"{tag}u{i}@{DOMAIN}" for i in range(k)]

        sink = Sink(work, runner)
        sink.start()
        started.append(sink)

        cm = dv = pf = pf_out = None
        if "clustermail" in which:
            users = [f"out@{DOMAIN}"]
            for j, (size, count, k) in enumerate(plan):
                users += rcpts_for(f"l{j}", k) + rcpts_for(f"s{j}", k)
            cm = Clustermail(args.builddir, work, runner, users,
                             relayhost=f"[127.0.0.1]:{sink.port}",
                             log_level=args.log_level)
            cm.start()
            started.append(cm)
        if "dovecot" in which or "postfix" in which:
            dv = postfixtest.DovecotLmtp(
                free_port(), runner.pw, base=os.path.join(work, "dovecot"))
            dv.start()
            started.append(dv)
        if "postfix" in which:
            pf = postfixtest.Postfix(
                free_port(),
                routes={DOMAIN: f"lmtp:inet:127.0.0.1:{dv.port}"},
                base=os.path.join(work, "postfix"),
                concurrency=args.sessions)
            pf.start()
            started.append(pf)

        def run_one(key, fn):
            try:
                results[key] = fn()
                log(f"{key}: {results[key]}")
            except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                results[key] = f"error: {e}"
                log(f"!!! {key}: {e}")

        for j, (size, count, k) in enumerate(plan):
            label = f"{size // 1024} KiB, {k} mailbox{'es' if k > 1 else ''}"
            if cm:
                run_one(("cm-lmtp", j), lambda: deliver_row(
                    "clustermail LMTP", cm.ports["lmtp"], True, cm.maildir,
                    rcpts_for(f"l{j}", k), args, size, count)[0])
                run_one(("cm-smtp", j), lambda: deliver_row(
                    "clustermail SMTP", cm.ports["smtp"], False, cm.maildir,
                    rcpts_for(f"s{j}", k), args, size, count)[0])
            if dv and "dovecot" in which:
                run_one(("dv-lmtp", j), lambda: deliver_row(
                    "dovecot LMTP", dv.port, True, dv.maildir,
                    rcpts_for(f"l{j}", k), args, size, count)[0])
            if pf:
                run_one(("pf-chain", j), lambda: deliver_row(
                    "postfix->dovecot", pf.port, False, dv.maildir,
                    rcpts_for(f"s{j}", k), args, size, count,
                    settle=lambda: pf.wait_queue_empty(60)))
                if isinstance(results[("pf-chain", j)], tuple):
                    e2e, acc = results[("pf-chain", j)]
                    results[("pf-chain", j)] = e2e
                    results[("pf-accept", j)] = acc
            rows.append((f"LMTP {label} (msg/s)",
                         results.get(("cm-lmtp", j)),
                         results.get(("dv-lmtp", j)), "dovecot LMTP"))
            rows.append((f"SMTP {label} (msg/s)",
                         results.get(("cm-smtp", j)),
                         results.get(("pf-chain", j)), "postfix->dovecot"))
            if ("pf-accept", j) in results:
                rows.append((f"  postfix accepting only, {label}", None,
                             results[("pf-accept", j)], "postfix"))

        # outbound through relayhost = smtp-sink
        if not args.skip_outbound:
            n = args.messages
            if cm:
                def cm_out():
                    sink.clear()
                    user = f"out@{DOMAIN}"
                    try:
                        submit(cm.ports["submission"], user,
                               f"probe@{REMOTE}", 1, 1, 100)
                    except RuntimeError as e:
                        raise Unavailable(f"our submission does not queue "
                                          f"remote mail: {e}")
                    try:
                        wait_counts_sink(sink, 1, 30)
                    except RuntimeError:
                        raise Unavailable("a queued message did not reach "
                                          "the relayhost within 30 s (queue "
                                          "runner not running?)")
                    sink.clear()
                    t0 = time.monotonic()
                    submit(cm.ports["submission"], user, f"x@{REMOTE}",
                           args.sessions, n, 4096)
                    wait_counts_sink(sink, n, max(120, n / 5))
                    return n / (time.monotonic() - t0)
                try:
                    run_one("cm-out", cm_out)
                except Unavailable as e:
                    notes.append(f"outbound, clustermail: skipped: {e}")
                    results["cm-out"] = None
            if "postfix" in which:
                pf_out = postfixtest.Postfix(
                    free_port(), relayhost=f"[127.0.0.1]:{sink.port}",
                    base=os.path.join(work, "postfix-out"),
                    concurrency=args.sessions)
                pf_out.start()
                started.append(pf_out)

                def pf_run():
                    sink.clear()
                    submit(pf_out.port, None, f"probe@{REMOTE}", 1, 1, 100)
                    wait_counts_sink(sink, 1, 30)
                    sink.clear()
                    t0 = time.monotonic()
                    submit(pf_out.port, None, f"x@{REMOTE}", args.sessions,
                           n, 4096)
                    wait_counts_sink(sink, n, max(120, n / 5))
                    return n / (time.monotonic() - t0)
                run_one("pf-out", pf_run)
            rows.append(("outbound 4 KiB via relayhost (msg/s)",
                         results.get("cm-out"), results.get("pf-out"),
                         "postfix"))
        else:
            notes.append("outbound: skipped (--skip-outbound)")
    except KeyboardInterrupt:
        log("interrupted")
    finally:
        for s in reversed(started):
            try:
                s.stop()
            except Exception as e:  # keep stopping the others
                log(f"stopping {type(s).__name__}: {e}")
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    report(rows, notes, args)
    failed = any(isinstance(v, str) for v in results.values())
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": [{"figure": r[0], "clustermail": r[1],
                                 "theirs": r[2], "theirs_name": r[3]}
                                for r in rows],
                       "notes": notes,
                       "sessions": args.sessions,
                       "machine": {"cpus": os.cpu_count()}}, f, indent=1)
    sys.exit(1 if failed else 0)


def wait_counts_sink(sink, n, timeout):
    deadline = time.monotonic() + timeout
    while sink.count() < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the sink got {sink.count()} of {n} "
                               f"messages in {timeout:.0f}s")
        time.sleep(0.02)


def report(rows, notes, args):
    print()
    print(f"smtp-bench: {args.sessions} sessions (smtp-source -d), "
          f"{os.cpu_count()} CPUs; ratio = clustermail/theirs, > 1: "
          "clustermail faster")
    print(f"{'figure':<44} {'clustermail':>12} {'theirs':>10} "
          f"{'ratio':>6}  theirs is")
    for label, ours, theirs, who in rows:
        errs = [v for v in (ours, theirs) if isinstance(v, str)]
        print(f"{label:<44} {fmt(ours if not isinstance(ours, str) else '!!!'):>12} "
              f"{fmt(theirs if not isinstance(theirs, str) else '!!!'):>10} "
              f"{ratio(ours, theirs):>6}  {who}")
        for e in errs:
            print(f"    !!! {e}")
    for n in notes:
        print(f"note: {n}")


if __name__ == "__main__":
    main()
