#!/usr/bin/env python3
"""store-bench.py - the mailbox store against Dovecot, in the same run.

Figures (issue item 10), each for clustermail and, where Dovecot from
Debian's packages can do the same work, for Dovecot, with the ratio:

  * LDA deliveries per second, fsync on, one process per message (as an
    MTA runs an LDA): `clustermailctl deliver` against `dovecot-lda`,
    into one mailbox and round robin into many (one INBOX per user), with
    1 and with 4 delivering processes at a time;
  * deliveries per second through the store API in one long-lived process
    (`torture --bench-deliver`), 1 and 4 processes: no Dovecot counterpart
    (its equivalent is the LMTP server), reported for scale;
  * a 100,000-message mailbox: the first sync (files dropped into new/ by
    this script, UIDs assigned by the first open), then the SELECT
    equivalent - open+sync in a fresh process - cold and warm, and a
    re-sync in the same process. Dovecot: `doveadm -o mailbox_list_index=no
    mailbox status messages unseen uidnext highestmodseq`, which opens and
    syncs the mailbox and reads its index (not quite a SELECT: the first
    one assigns UIDs but leaves the files in new/).

Both run as the same unprivileged user on the same file system, with
Dovecot's default mail_fsync=optimized (it fsyncs every saved message;
clustermail always fsyncs the file and the directory). "Cold" evicts the
page cache: with /proc/sys/vm/drop_caches when writable, otherwise every
file of the mailbox is fadvise(DONTNEED)ed after a sync(2) - that drops the
file data but not the kernel's cached directory entries and inodes, which
the table then says.

Usage: store-bench.py --builddir DIR [--workdir DIR] [--count N]
                      [--big N] [--skip-big] [--json FILE]
"""
import argparse
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import Runner  # noqa: E402

# A valid yescrypt hash: `user add --hash` needs no password hashing.
USER_HASH = ("$y$j9T$K5GwIeap1le5MpmdGNTOU/$"
             "PSa0pErAtxBx6LwxtbjePF0YMPzUp0tfjOVspsA3V56")
DOMAIN = "bench.test"
MANY_USERS = 100
DOVECOT_LDA = "/usr/lib/dovecot/dovecot-lda"


def message(i, size=3000):
    """A plain message of about size bytes, different per i."""
    head = (f"From: sender{i}@example.org\nTo: user@{DOMAIN}\n"
            f"Subject: benchmark message {i}\nMessage-ID: <{i}.{time.time()}@bench>\n"
            "Date: Thu, 01 Jan 2026 00:00:00 +0000\n\n")
    line = "The quick brown fox jumps over the lazy dog, %08d.\n"
    body = "".join(line % (i * 1000 + n) for n in range(size // len(line % 0)))
    return (head + body).encode()


def parallel_deliveries(deliver_one, count, procs):
    """Deliver count messages with procs processes at a time; msg/s."""
    def worker(w):
        for i in range(w, count, procs):
            deliver_one(i)
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(procs) as pool:
        for f in [pool.submit(worker, w) for w in range(procs)]:
            f.result()
    return count / (time.monotonic() - start)


# ---- clustermail ------------------------------------------------------------

class Clustermail:
    def __init__(self, builddir, work, runner):
        self.ctl = os.path.join(builddir, "src/ctl/clustermailctl")
        self.torture = os.path.join(builddir, "tests/torture/torture")
        self.dir = os.path.join(work, "clustermail")
        self.spool = os.path.join(self.dir, "spool")
        self.conf = os.path.join(self.dir, "clustermail.conf")
        self.runner = runner
        os.makedirs(self.spool)
        with open(self.conf, "w") as f:
            f.write(f"node_name = bench\nspool_dir = {self.spool}\n"
                    "lock_backend = fcntl\n"
                    f"users_file = {self.dir}/users\n"
                    f"mail_user = {runner.name}\n"
                    f"local_domains = {DOMAIN}\nlog_level = warning\n")
        runner.own(self.dir)
        self.users = ["one@" + DOMAIN] + \
            [f"u{i}@{DOMAIN}" for i in range(MANY_USERS)]
        for user in self.users:
            self.runner.run([self.ctl, "-c", self.conf, "user", "add", user,
                             "--hash", USER_HASH])

    def lda(self, user, data):
        self.runner.run([self.ctl, "-c", self.conf, "deliver", user], data)

    def api_rate(self, users, count, procs):
        """In-process deliveries through the store API, procs processes."""
        spool = os.path.join(self.dir, f"api-{len(users)}-{procs}")
        os.makedirs(spool)
        self.runner.own(spool)
        argv = [self.torture, "--bench-deliver", str(count // procs),
                "--spool", spool, "--users", ",".join(users)]
        start = time.monotonic()
        ps = [subprocess.Popen(argv + ["--node", f"bench{p}"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               preexec_fn=self.runner.demote())
              for p in range(procs)]
        for p in ps:
            out, err = p.communicate()
            if p.returncode != 0:
                raise RuntimeError(f"torture --bench-deliver: {err.decode()[-300:]}")
        return (count // procs) * procs / (time.monotonic() - start)

    def big_prepare(self, count):
        self.big_spool = os.path.join(self.dir, "big")
        os.makedirs(self.big_spool)
        self.runner.own(self.big_spool)
        self.runner.run([self.torture, "--bench-deliver", "1", "--spool",
                         self.big_spool, "--users", "big@" + DOMAIN])
        root = os.path.join(self.big_spool, DOMAIN, "big")
        # the one real delivery is still in new/: it becomes UID 1
        return root

    def open_once(self):
        t = time.monotonic()
        proc = self.runner.run([self.torture, "--bench-open", "--spool",
                                self.big_spool, "--users", "big@" + DOMAIN])
        wall = (time.monotonic() - t) * 1000
        fields = dict(kv.split("=") for kv in proc.stdout.decode().split())
        return wall, fields


# ---- Dovecot ------------------------------------------------------------------

class Dovecot:
    def __init__(self, work, runner):
        self.dir = os.path.join(work, "dovecot")
        self.conf = os.path.join(self.dir, "dovecot.conf")
        self.runner = runner
        os.makedirs(os.path.join(self.dir, "run"))
        os.makedirs(os.path.join(self.dir, "home"))
        with open(self.conf, "w") as f:
            f.write(f"base_dir = {self.dir}/run\n"
                    f"log_path = {self.dir}/dovecot.log\n"
                    "info_log_path = /dev/null\n"
                    "mail_location = maildir:~/Maildir\n"
                    "mail_fsync = optimized\n"
                    "ssl = no\nprotocols =\n")
        runner.own(self.dir)

    def env(self, user):
        home = os.path.join(self.dir, "home", user)
        return {"HOME": home, "USER": user, "PATH": os.environ["PATH"]}

    def lda(self, user, data):
        self.runner.run([DOVECOT_LDA, "-c", self.conf, "-e"], data,
                        env=self.env(user.split("@")[0]))

    def big_prepare(self, count):
        home = os.path.join(self.dir, "home", "big")
        os.makedirs(home)
        self.runner.own(home)
        self.lda("big@" + DOMAIN, message(0))
        return os.path.join(home, "Maildir")

    def open_once(self):
        t = time.monotonic()
        # Without the mailbox list index (on by default) STATUS would be
        # answered from that cache; off, doveadm must open and sync the
        # mailbox and read its index (unseen, highestmodseq): the nearest
        # thing to SELECT that dovecot-core has (the imap binary is in
        # dovecot-imapd).
        proc = self.runner.run(["doveadm", "-c", self.conf, "-o",
                                "mailbox_list_index=no", "mailbox", "status",
                                "messages unseen uidnext highestmodseq",
                                "INBOX"], env=self.env("big"))
        wall = (time.monotonic() - t) * 1000
        fields = dict(kv.split("=") for kv in proc.stdout.decode().split()[1:])
        return wall, fields


# ---- the 100k mailbox -----------------------------------------------------------

def fill_new(maildir, count, runner):
    """count message files straight into maildir/new/, Maildir-named."""
    new = os.path.join(maildir, "new")
    base = int(time.time()) - 86400
    for i in range(count):
        data = message(i, 1000 + (i * 37) % 3000)
        vsize = len(data) + data.count(b"\n")
        name = f"{base + i // 1000}.M{i:06d}P4242.fill,S={len(data)},W={vsize}"
        with open(os.path.join(new, name), "wb") as f:
            f.write(data)
    runner.own(maildir)
    os.sync()


def evict(path):
    """Make the next open cold. Returns how it was done."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return "drop_caches"
    except OSError:
        pass
    for root, dirs, files in os.walk(path):
        for name in files:
            try:
                fd = os.open(os.path.join(root, name), os.O_RDONLY)
            except OSError:
                continue
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
    return "fadvise"


SETTLE_SECS = 3


def big_mailbox(system, count, runner, label):
    maildir = system.big_prepare(count)
    fill_new(maildir, count, runner)
    first, fields = system.open_once()
    left_in_new = len(os.listdir(os.path.join(maildir, "new")))
    if int(fields["messages"]) != count + 1:
        raise RuntimeError(f"{label}: {fields['messages']} messages after the"
                           f" first sync, expected {count + 1}")
    how = evict(maildir)
    cold, cold_fields = system.open_once()
    warm = min(system.open_once()[0] for _ in range(3))
    warm_fields = system.open_once()[1]
    # The same once new/ has not changed for a while (SETTLE_SECS): the
    # usual state of a big mailbox between deliveries. clustermail lists
    # new/ only when its mtime moved or is younger than 2 s (mailbox.c,
    # "Skipping new/"); one open lists it and leaves the hint.
    time.sleep(SETTLE_SECS)
    system.open_once()
    evict(maildir)
    cold_settled = system.open_once()[0]
    warm_settled = min(system.open_once()[0] for _ in range(3))
    settled_fields = system.open_once()[1]
    return {"first": first, "left_in_new": left_in_new,
            "first_fields": fields, "cold": cold,
            "cold_fields": cold_fields, "warm": warm,
            "warm_fields": warm_fields, "evict": how,
            "cold_settled": cold_settled, "warm_settled": warm_settled,
            "settled_fields": settled_fields}


# ---- report ---------------------------------------------------------------------

def fmt(value, unit):
    if value is None:
        return "n/a"
    return f"{value:,.1f}" if unit == "msg/s" or value >= 100 else f"{value:.2f}"


def report(rows, notes):
    print()
    print(f"{'figure':<58} {'clustermail':>12} {'dovecot':>10} {'ratio':>7}")
    for name, unit, ours, theirs in rows:
        ratio = "-"
        if ours and theirs:
            r = ours / theirs if unit == "msg/s" else theirs / ours
            ratio = f"{r:.2f}"
        print(f"{name + ' (' + unit + ')':<58} {fmt(ours, unit):>12} "
              f"{fmt(theirs, unit):>10} {ratio:>7}")
    print("\nratio > 1: clustermail is faster (rates: ours/theirs; times: "
          "theirs/ours)")
    for n in notes:
        print("note:", n)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--builddir", required=True)
    ap.add_argument("--workdir", default=os.environ.get("BENCH_DIR", "/var/tmp"))
    ap.add_argument("--count", type=int, default=400,
                    help="LDA deliveries per figure (default 400)")
    ap.add_argument("--api-count", type=int, default=4000)
    ap.add_argument("--big", type=int, default=100000)
    ap.add_argument("--skip-big", action="store_true")
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()

    runner = Runner("store-bench")
    work = tempfile.mkdtemp(prefix="cm-bench.", dir=args.workdir)
    os.chmod(work, 0o755)
    rows, notes, results = [], [], {}
    try:
        cm = Clustermail(args.builddir, work, runner)
        dc = Dovecot(work, runner) if os.access(DOVECOT_LDA, os.X_OK) else None
        if dc is None:
            notes.append(f"{DOVECOT_LDA} missing: no Dovecot figures")
        many = [f"u{i}@{DOMAIN}" for i in range(MANY_USERS)]
        for procs in (1, 4):
            for where, pick in (("one mailbox", lambda i: "one@" + DOMAIN),
                                ("many mailboxes",
                                 lambda i: many[i % MANY_USERS])):
                name = f"LDA, {procs} process{'es' if procs > 1 else ''} " \
                       f"at a time, {where}"
                print(f"store-bench: {name} ...", flush=True)
                ours = parallel_deliveries(
                    lambda i: cm.lda(pick(i), message(i)), args.count, procs)
                theirs = parallel_deliveries(
                    lambda i: dc.lda(pick(i), message(i)),
                    args.count, procs) if dc else None
                rows.append((name, "msg/s", ours, theirs))
        for procs in (1, 4):
            for where, users in (("one mailbox", ["one@" + DOMAIN]),
                                 ("many mailboxes", many)):
                name = f"store API in one process, x{procs}, {where}"
                print(f"store-bench: {name} ...", flush=True)
                rows.append((name, "msg/s",
                             cm.api_rate(users, args.api_count, procs), None))
        if not args.skip_big:
            n = args.big
            print(f"store-bench: {n:,}-message mailbox (filling new/) ...",
                  flush=True)
            ours = big_mailbox(cm, n, runner, "clustermail")
            theirs = big_mailbox(dc, n, runner, "dovecot") if dc else None
            results["big"] = {"clustermail": ours, "dovecot": theirs}
            t = (lambda k: theirs[k]) if theirs else (lambda k: None)
            rows.append((f"{n // 1000}k mailbox: first sync, new/ -> UIDs", "ms",
                         ours["first"], t("first")))
            rows.append((f"{n // 1000}k mailbox: open+sync, fresh process, cold",
                         "ms", ours["cold"], t("cold")))
            rows.append((f"{n // 1000}k mailbox: open+sync, fresh process, warm",
                         "ms", ours["warm"], t("warm")))
            rows.append((f"{n // 1000}k mailbox: open+sync in-process, cold",
                         "ms", float(ours["cold_fields"]["open_ms"]), None))
            rows.append((f"{n // 1000}k mailbox: open+sync in-process, warm",
                         "ms", float(ours["warm_fields"]["open_ms"]), None))
            rows.append((f"{n // 1000}k mailbox: re-sync, same process", "ms",
                         float(ours["warm_fields"]["resync_ms"]), None))
            rows.append((f"{n // 1000}k, new/ settled: open+sync, fresh, cold",
                         "ms", ours["cold_settled"], t("cold_settled")))
            rows.append((f"{n // 1000}k, new/ settled: open+sync, fresh, warm",
                         "ms", ours["warm_settled"], t("warm_settled")))
            rows.append((f"{n // 1000}k, new/ settled: re-sync, same process",
                         "ms", float(ours["settled_fields"]["resync_ms"]),
                         None))
            notes.append(f"first sync: files left in new/ afterwards: "
                         f"clustermail {ours['left_in_new']:,}" +
                         (f", dovecot {theirs['left_in_new']:,} (doveadm "
                          "status assigns UIDs but leaves new/ files where "
                          "they are; clustermail moves each to cur/)"
                          if theirs else ""))
            if ours["evict"] != "drop_caches":
                notes.append("cold: /proc/sys/vm/drop_caches is not writable "
                             "here; file pages were evicted with fadvise("
                             "DONTNEED), cached dentries/inodes were not")
            notes.append("100k times of fresh processes are wall-clock "
                         "times of the whole program (torture --bench-open /"
                         " doveadm mailbox status), start-up included")
        notes.append("LDA: one process per message, started by this script, "
                     "as " + runner.name + "; Dovecot with mail_fsync="
                     "optimized (default), clustermail fsyncs file and "
                     "directory")
        notes.append(f"machine: {os.cpu_count()} CPUs; work dir {work} "
                     f"({subprocess.run(['df', '-T', work], capture_output=True, text=True).stdout.splitlines()[-1].split()[1]})")
        report(rows, notes)
        results["rows"] = rows
        results["notes"] = notes
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
    finally:
        if args.keep:
            print(f"store-bench: kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
