"""Mailbox lock caching (lock_cache_hold) in the daemon.

A session keeps its mailbox lock between commands when the lock backend
has blocking callbacks (dlm, local); another session that wants the lock
makes the holder give it up. These tests run one daemon with the local
backend (in-process locks with blocking callbacks, the same code path as
the DLM's) and check what a user would notice: reads are served from the
cached lock, writers are never held up by an idle reader (not even one in
IDLE), every session sees every change, and nothing is lost when many
sessions work on one mailbox at once. (The DLM itself runs in the VM lab,
tests/lab.)
"""
import threading
import time
import urllib.request

import pytest

import imaptest

MESSAGE = (b"From: a@example.com\r\nTo: alice@example.com\r\n"
           b"Subject: cache <%d>\r\n\r\nbody %d\r\n")


def start_local(workdir, hold="10ms"):
    return imaptest.start_daemon(workdir, extra=f"lock_cache_hold = {hold}",
                                 replace={"lock_backend": "local"})


@pytest.fixture
def local_daemon(workdir):
    d = start_local(workdir)
    yield d
    d.stop()


def metric(daemon, name):
    url = f"http://127.0.0.1:{daemon.metrics_port}/metrics"
    body = urllib.request.urlopen(url, timeout=10).read().decode()
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"metric {name} missing")


def append(m, n, mailbox="INBOX"):
    typ, data = m.append(mailbox, None, None, MESSAGE % (n, n))
    assert typ == "OK", data


def test_reads_hit_the_cache_and_writers_get_the_lock(local_daemon):
    reader = imaptest.login(local_daemon)
    writer = imaptest.login(local_daemon)
    append(writer, 0)
    assert reader.select("INBOX")[0] == "OK"
    hits0 = metric(local_daemon, "clustermail_lock_cache_hits_total")
    drops0 = metric(local_daemon, "clustermail_lock_cache_drops_total")
    for i in range(20):
        # The reader's lock is cached after each command ...
        assert reader.noop()[0] == "OK"
        assert reader.noop()[0] == "OK"
        # ... and the writer gets it without waiting for a timeout.
        start = time.monotonic()
        flag = "+FLAGS" if i % 2 == 0 else "-FLAGS"
        writer.select("INBOX")
        typ, _ = writer.store("1", flag, "(\\Flagged)")
        assert typ == "OK"
        assert time.monotonic() - start < 2
        # The reader sees the change on its next command.
        typ, data = reader.fetch("1", "(FLAGS)")
        assert typ == "OK"
        assert (b"\\Flagged" in data[-1]) == (i % 2 == 0), data
    hits = metric(local_daemon, "clustermail_lock_cache_hits_total") - hits0
    drops = metric(local_daemon, "clustermail_lock_cache_drops_total") - drops0
    assert hits >= 20, hits
    assert drops >= 10, drops
    reader.logout()
    writer.logout()


def test_idle_reader_does_not_hold_up_writers(local_daemon):
    idler = imaptest.Raw(local_daemon).login()
    assert idler.cmd("a2 SELECT INBOX")[1].startswith("a2 OK")
    idler.send("a3 IDLE\r\n")
    assert idler.line().startswith("+")
    writer = imaptest.login(local_daemon)
    slowest = 0
    for n in range(1, 16):
        start = time.monotonic()
        append(writer, n)
        slowest = max(slowest, time.monotonic() - start)
        deadline = time.monotonic() + 5
        seen = False
        while time.monotonic() < deadline and not seen:
            seen = idler.line() == f"* {n} EXISTS"
        assert seen, f"IDLE did not announce message {n}"
    assert slowest < 2, slowest
    idler.send("DONE\r\n")
    assert idler.response("a3")[1].startswith("a3 OK")
    idler.close()
    writer.logout()


def worker(daemon, index, rounds, errors, counts):
    try:
        m = imaptest.login(daemon)
        assert m.select("INBOX")[0] == "OK"
        kept = 0
        for r in range(rounds):
            append(m, index * 1000 + r)
            # (SUBJECT matches substrings: "<N>" is unique.)
            typ, data = m.search(None, f'SUBJECT "cache <{index * 1000 + r}>"')
            assert typ == "OK" and data[0], data
            uid = data[0].split()[-1]
            assert m.store(uid, "+FLAGS", "(\\Seen)")[0] == "OK"
            if r % 3 == 0:
                assert m.store(uid, "+FLAGS", "(\\Deleted)")[0] == "OK"
                assert m.expunge()[0] == "OK"
            else:
                kept += 1
            assert m.noop()[0] == "OK"
        counts[index] = kept
        m.logout()
    except Exception as e:  # reported by the main thread
        errors.append(f"session {index}: {e!r}")


def test_many_sessions_on_one_mailbox_lose_nothing(local_daemon):
    sessions, rounds = 6, 15
    errors, counts = [], {}
    threads = [threading.Thread(target=worker,
                                args=(local_daemon, i, rounds, errors, counts))
               for i in range(sessions)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a session hung"
    assert not errors, errors
    elapsed = time.monotonic() - start
    m = imaptest.login(local_daemon)
    typ, data = m.status("INBOX", "(MESSAGES)")
    assert typ == "OK"
    assert f"MESSAGES {sum(counts.values())}".encode() in data[0], data
    m.logout()
    # No lock request waited for its timeout (30 s) behind a cached lock.
    assert elapsed < 60, elapsed
    assert metric(local_daemon, "clustermail_lock_timeouts_total") == 0


def test_hold_zero_turns_caching_off(workdir):
    d = start_local(workdir, hold="0")
    try:
        m = imaptest.login(d)
        append(m, 1)
        m.select("INBOX")
        for _ in range(5):
            assert m.noop()[0] == "OK"
        assert metric(d, "clustermail_lock_cache_hits_total") == 0
        m.logout()
    finally:
        d.stop()
