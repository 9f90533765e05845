"""IMAP integration tests: the session engine against a real clustermaild.

Greeting and capabilities, LOGIN / AUTHENTICATE (PLAIN, LOGIN, SASL-IR),
STARTTLS and LOGINDISABLED, IMAPS, ID, ENABLE, LOGOUT, errors (unknown
command, wrong state, too-long line, huge literal), pipelining, the failed
login delay and limit, a slow reader, autologout, SIGTERM drain, and the
spool created on the first login.
"""
import base64
import imaplib
import os
import signal
import socket
import ssl
import threading
import time

import pytest

import cmtest
import imaptest
from imaptest import ALICE, BOB, PASSWORD, Raw

FAILURE_DELAY = 0.3


def make_spool(workdir):
    """The daemon never creates spool_dir (an unmounted cluster file
    system must not be replaced by an empty directory): the admin does."""
    spool = os.path.join(str(workdir), "spool")
    os.makedirs(spool, exist_ok=True)
    cmtest.prepare_workdir(spool)
    return spool


def start(workdir, extra=""):
    make_spool(workdir)
    return imaptest.start_daemon(
        workdir, extra=f"auth_failure_delay = {int(FAILURE_DELAY * 1000)}ms\n"
        + extra)


@pytest.fixture
def d(workdir):
    daemon = start(workdir, "imap_max_line_length = 8192\n")
    yield daemon
    daemon.stop()


def caps_of(line):
    """The capability words of a greeting/OK line or a CAPABILITY reply."""
    if "[CAPABILITY " in line:
        line = line.split("[CAPABILITY ", 1)[1].split("]", 1)[0]
    elif "CAPABILITY " in line:
        line = line.split("CAPABILITY ", 1)[1]
    return set(line.split())


def tls_wrap(raw):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    raw.sock = ctx.wrap_socket(raw.sock, server_hostname="localhost")
    return raw


def b64(data):
    return base64.b64encode(data.encode()).decode()


def test_greeting_and_capability(d):
    r = Raw(d)
    assert r.greeting.startswith("* OK [CAPABILITY IMAP4rev1 ")
    assert r.greeting.endswith("] clustermail ready")
    caps = caps_of(r.greeting)
    for c in ("STARTTLS", "AUTH=PLAIN", "AUTH=LOGIN", "SASL-IR", "LITERAL+",
              "ID", "ENABLE", "IDLE", "NAMESPACE", "UIDPLUS", "MOVE",
              "UNSELECT", "SPECIAL-USE", "UTF8=ACCEPT", "APPENDLIMIT=67108864"):
        assert c in caps, c
    assert "LOGINDISABLED" not in caps      # 127.0.0.1 is trusted by default
    untagged, tagged = r.cmd("a1 CAPABILITY")
    assert tagged == "a1 OK CAPABILITY completed"
    assert len(untagged) == 1 and caps_of(untagged[0]) == caps
    assert r.cmd("a2 NOOP")[1] == "a2 OK NOOP completed"
    assert r.cmd("a3 noop")[1].startswith("a3 OK")     # any case


def test_login_ok_and_capabilities_after(d):
    r = Raw(d)
    _, tagged = r.cmd(f'L1 LOGIN "{ALICE}" "{PASSWORD}"')
    assert tagged.startswith("L1 OK [CAPABILITY IMAP4rev1 ")
    caps = caps_of(tagged)
    assert "STARTTLS" not in caps and not any(c.startswith("AUTH=")
                                              for c in caps)
    assert "IDLE" in caps
    # LOGIN is not valid once authenticated
    assert r.cmd(f'L2 LOGIN "{ALICE}" "{PASSWORD}"')[1].startswith("L2 BAD")
    m = imaptest.login(d, user=BOB)
    assert m.noop()[0] == "OK"
    m.logout()


def test_failed_logins_look_the_same(d):
    r = Raw(d)
    answers = []
    for user, password in ((ALICE, "wrong"), ("nobody@example.com", PASSWORD),
                           ("not-an-address", "x")):
        start_time = time.monotonic()
        _, tagged = r.cmd(f'F1 LOGIN "{user}" "{password}"')
        assert time.monotonic() - start_time >= FAILURE_DELAY - 0.01
        answers.append(tagged)
    assert answers == ["F1 NO [AUTHENTICATIONFAILED] Authentication failed"] * 3
    log = d.read_log()
    assert "login failed: user=alice@example.com ip=127.0.0.1" in log
    assert "wrong" not in log.split("login failed")[1].split("\n")[0].replace(
        "wrong password", "")
    # still usable afterwards
    r.login()


def test_spool_and_special_use_created_on_first_login(d):
    home = os.path.join(d.dir, "spool", "example.com", "alice")
    assert not os.path.exists(home)
    imaptest.login(d).logout()
    for sub in ("cur", "new", "tmp", ".Drafts", ".Sent", ".Trash", ".Junk",
                ".Archive"):
        assert os.path.isdir(os.path.join(home, sub)), sub
    m = imaptest.login(d)
    typ, data = m.list()
    assert typ == "OK"
    listing = b"\n".join(data).decode()
    for name, attr in (("Drafts", "\\Drafts"), ("Sent", "\\Sent"),
                       ("Trash", "\\Trash"), ("Junk", "\\Junk"),
                       ("Archive", "\\Archive")):
        line = [x for x in listing.splitlines() if x.endswith(f'"{name}"')]
        assert line and attr in line[0], listing
    m.logout()


def test_login_refused_without_tls_from_untrusted(workdir):
    daemon = start(workdir, "trusted_networks = 10.0.0.0/8\n")
    try:
        r = Raw(daemon)
        caps = caps_of(r.greeting)
        assert "LOGINDISABLED" in caps and "STARTTLS" in caps
        assert not any(c.startswith("AUTH=") for c in caps)
        _, tagged = r.cmd(f'L1 LOGIN "{ALICE}" "{PASSWORD}"')
        assert tagged.startswith("L1 NO [PRIVACYREQUIRED]")
        plain = b64(f"\0{ALICE}\0{PASSWORD}")
        assert r.cmd(f"L2 AUTHENTICATE PLAIN {plain}")[1].startswith("L2 NO")
        # STARTTLS: the OK comes in plaintext, then TLS
        assert r.cmd("S1 STARTTLS")[1] == "S1 OK Begin TLS negotiation now"
        tls_wrap(r)
        untagged, _ = r.cmd("C1 CAPABILITY")
        caps = caps_of(untagged[0])
        assert "AUTH=PLAIN" in caps
        assert "STARTTLS" not in caps and "LOGINDISABLED" not in caps
        assert r.cmd("S2 STARTTLS")[1].startswith("S2 BAD")
        r.login()
        r.close()
        # imaplib's starttls() does the same
        m = imaplib.IMAP4("127.0.0.1", daemon.ports["imap"], timeout=30)
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        m.starttls(ssl_context=ctx)
        assert m.login(ALICE, PASSWORD)[0] == "OK"
        m.logout()
    finally:
        daemon.stop()


def test_starttls_discards_injected_commands(d):
    r = Raw(d)
    # A command sent right behind STARTTLS (before the handshake) must not
    # be executed (RFC 9051 / RFC 3207 injection).
    r.send("S1 STARTTLS\r\nX1 NOOP\r\n")
    assert r.line() == "S1 OK Begin TLS negotiation now"
    try:
        tls_wrap(r)
    except (ssl.SSLError, OSError):
        return      # the server refused the garbage: fine too
    untagged, tagged = r.cmd("C1 CAPABILITY")
    assert tagged.startswith("C1 OK")
    assert not any(x.startswith("X1") for x in untagged)


def test_imaps_login(d):
    m = imaptest.login(d, tls=True)
    assert "STARTTLS" not in m.capabilities
    assert m.noop()[0] == "OK"
    m.logout()


def test_authenticate_plain(d):
    r = Raw(d)
    # without SASL-IR: an empty challenge first
    r.send("A1 AUTHENTICATE PLAIN\r\n")
    assert r.line() == "+ "
    r.send(b64(f"\0{ALICE}\0wrong") + "\r\n")
    assert r.response("A1")[1] == \
        "A1 NO [AUTHENTICATIONFAILED] Authentication failed"
    # cancel
    r.send("A2 AUTHENTICATE PLAIN\r\n")
    assert r.line().startswith("+")
    r.send("*\r\n")
    assert r.response("A2")[1].startswith("A2 BAD")
    # bad base64
    r.send("A3 AUTHENTICATE PLAIN\r\n")
    assert r.line().startswith("+")
    r.send("!!!notbase64\r\n")
    assert r.response("A3")[1].startswith("A3 BAD")
    assert r.cmd("A4 AUTHENTICATE PLAIN ====")[1].startswith("A4 BAD")
    assert r.cmd("A4 AUTHENTICATE PLAIN =")[1].startswith("A4 BAD")  # empty
    r.send("A4 AUTHENTICATE LOGIN =\r\n")      # empty user name
    assert r.line().startswith("+")
    r.send("\r\n")
    assert r.response("A4")[1].startswith("A4 NO [AUTHENTICATIONFAILED]")
    assert r.cmd("A5 AUTHENTICATE CRAM-MD5")[1].startswith("A5 NO")
    # a different authorization identity is refused
    _, tagged = r.cmd("A6 AUTHENTICATE PLAIN " + b64(f"{BOB}\0{ALICE}\0{PASSWORD}"))
    assert tagged.startswith("A6 NO [AUTHENTICATIONFAILED]")
    # SASL-IR, the right password
    _, tagged = r.cmd("A7 AUTHENTICATE PLAIN " + b64(f"\0{ALICE}\0{PASSWORD}"))
    assert tagged.startswith("A7 OK [CAPABILITY ")
    # imaplib uses continuations
    m = imaptest.connect(d)
    typ, _ = m.authenticate("PLAIN", lambda _: f"\0{BOB}\0{PASSWORD}".encode())
    assert typ == "OK"
    m.logout()


def test_authenticate_login(d):
    r = Raw(d)
    r.send("A1 AUTHENTICATE LOGIN\r\n")
    assert r.line() == "+ " + b64("Username:")
    r.send(b64(ALICE) + "\r\n")
    assert r.line() == "+ " + b64("Password:")
    r.send(b64(PASSWORD) + "\r\n")
    assert r.response("A1")[1].startswith("A1 OK [CAPABILITY ")
    # SASL-IR carries the user name
    r2 = Raw(d)
    r2.send("A2 AUTHENTICATE LOGIN " + b64(BOB) + "\r\n")
    assert r2.line() == "+ " + b64("Password:")
    r2.send(b64(PASSWORD) + "\r\n")
    assert r2.response("A2")[1].startswith("A2 OK")


def test_id_and_enable(d):
    r = Raw(d)
    untagged, tagged = r.cmd('I1 ID ("name" "pytest" "version" "1")')
    assert tagged == "I1 OK ID completed"
    assert untagged[0].startswith('* ID ("name" "clustermail"')
    assert r.cmd("I2 ID NIL")[1].startswith("I2 OK")
    assert r.cmd("I3 ID")[1].startswith("I3 BAD")
    assert r.cmd("E1 ENABLE UTF8=ACCEPT")[1].startswith("E1 BAD")  # not auth
    r.login()
    untagged, tagged = r.cmd("E2 ENABLE UTF8=ACCEPT IMAP4rev2 X-UNKNOWN")
    assert tagged == "E2 OK ENABLE completed"
    assert untagged == ["* ENABLED UTF8=ACCEPT IMAP4rev2"]
    untagged, _ = r.cmd("E3 ENABLE utf8=accept")
    assert untagged == ["* ENABLED"]    # nothing newly enabled
    assert r.cmd("E4 ENABLE")[1].startswith("E4 BAD")


def test_logout(d):
    r = Raw(d)
    untagged, tagged = r.cmd("O1 LOGOUT")
    assert untagged == ["* BYE Logging out"]
    assert tagged == "O1 OK LOGOUT completed"
    r.sock.settimeout(5)
    assert r.sock.recv(100) == b""      # then the server closes


def test_unknown_command_and_wrong_state(d):
    r = Raw(d)
    assert r.cmd("X1 FROBNICATE")[1] == "X1 BAD Unknown command"
    assert r.cmd("X2 UID NOOP")[1] == "X2 BAD Unknown command"
    assert r.cmd("X3 SELECT INBOX")[1] == "X3 BAD Not authenticated"
    r.send("+bad NOOP\r\n")
    assert r.line().startswith("* BAD")
    r.login()
    assert r.cmd("X4 FETCH 1 FLAGS")[1] == "X4 BAD No mailbox selected"
    assert r.cmd("X5 AUTHENTICATE PLAIN")[1].startswith("X5 BAD")
    assert r.cmd('X6 LOGIN "a')[1].startswith("X6 BAD")
    assert r.cmd("X7 NOOP")[1] == "X7 OK NOOP completed"


def test_too_long_line_then_usable(d):
    r = Raw(d)
    r.send("T1 NOOP " + "x" * 20000 + "\r\n")
    assert r.line() == "T1 BAD Line too long"
    assert r.cmd("T2 NOOP")[1] == "T2 OK NOOP completed"
    # a line just under the limit is fine (and a syntax error here)
    assert r.cmd("T3 ID " + "y" * 7000)[1].startswith("T3 BAD Invalid")


def test_too_long_line_without_end_closes(d):
    r = Raw(d)
    r.sock.settimeout(20)
    data = b""
    try:
        for _ in range(200):
            r.sock.sendall(b"z" * 8192)
    except OSError:
        pass    # closed while we were still sending
    try:
        while True:
            chunk = r.sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    assert b"* BYE" in data or data == b""
    # the server is fine
    assert Raw(d).cmd("N1 NOOP")[1].startswith("N1 OK")


def test_huge_literal_refused_without_continuation(d):
    r = Raw(d)
    r.send("L1 LOGIN {1000000}\r\n")
    line = r.line()
    assert line.startswith("L1 BAD [TOOBIG]"), line     # no "+" first
    assert r.cmd("L2 NOOP")[1] == "L2 OK NOOP completed"
    # a non-synchronizing one is read and dropped
    r.send("L3 LOGIN {70000+}\r\n" + "a" * 70000 + " x\r\n")
    assert r.line().startswith("L3 BAD [TOOBIG]")
    assert r.cmd("L4 NOOP")[1] == "L4 OK NOOP completed"
    # a small synchronizing literal works
    r.send(f"L5 LOGIN {{{len(ALICE)}}}\r\n")
    assert r.line().startswith("+")
    r.send(f'{ALICE} "{PASSWORD}"\r\n')
    assert r.response("L5")[1].startswith("L5 OK")


def test_pipelined_commands_answered_in_order(d):
    r = Raw(d)
    n = 300
    r.send("".join(f"p{i} NOOP\r\n" for i in range(n)))
    for i in range(n):
        assert r.line() == f"p{i} OK NOOP completed"
    r.login()
    r.send("".join(f"q{i} CAPABILITY\r\n" for i in range(50)) + "q50 LOGOUT\r\n")
    for i in range(50):
        assert r.response(f"q{i}")[1].startswith(f"q{i} OK")
    assert r.response("q50")[1].startswith("q50 OK")


def test_bad_commands_in_a_row_end_the_session(d):
    r = Raw(d)
    r.send("".join(f"b{i} BOGUS\r\n" for i in range(25)))
    lines = []
    try:
        while True:
            lines.append(r.line())
    except EOFError:
        pass
    assert lines[-1].startswith("* BYE"), lines[-3:]
    assert sum(1 for x in lines if " BAD " in x) == 20


def test_failure_limit_per_ip(workdir):
    daemon = start(workdir, "auth_max_failures = 3\n")
    try:
        r = Raw(daemon)
        for i in range(3):
            assert r.cmd(f'F{i} LOGIN "{ALICE}" "nope"')[1].startswith(
                f"F{i} NO [AUTHENTICATIONFAILED]")
        start_time = time.monotonic()
        _, tagged = r.cmd(f'F9 LOGIN "{ALICE}" "{PASSWORD}"')
        assert tagged.startswith("F9 NO [UNAVAILABLE]")
        assert time.monotonic() - start_time >= FAILURE_DELAY - 0.01
        # for every session of that address
        _, tagged = Raw(daemon).cmd(f'G1 LOGIN "{BOB}" "{PASSWORD}"')
        assert tagged.startswith("G1 NO [UNAVAILABLE]")
    finally:
        daemon.stop()


def test_slow_reader_does_not_hurt_others(d):
    slow = Raw(d)
    slow.login()
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stop = threading.Event()

    def flood():
        # Commands whose replies the client never reads.
        chunk = "".join(f"s{i} CAPABILITY\r\n" for i in range(1000)).encode()
        slow.sock.settimeout(0.5)
        while not stop.is_set():
            try:
                slow.sock.send(chunk)
            except socket.timeout:
                pass
            except OSError:
                return
    t = threading.Thread(target=flood, daemon=True)
    t.start()
    time.sleep(1.5)
    start_time = time.monotonic()
    fast = Raw(d)
    fast.login()
    for i in range(20):
        assert fast.cmd(f"f{i} NOOP")[1].startswith(f"f{i} OK")
    assert time.monotonic() - start_time < 5
    stop.set()
    t.join(5)
    slow.close()
    assert Raw(d).cmd("z1 NOOP")[1].startswith("z1 OK")


def test_autologout(workdir):
    daemon = start(workdir, "imap_client_timeout = 1s\n")
    try:
        r = Raw(daemon)
        r.sock.settimeout(10)
        start_time = time.monotonic()
        line = r.line()
        assert line.startswith("* BYE Autologout"), line
        assert 0.8 <= time.monotonic() - start_time < 8
    finally:
        daemon.stop()


def test_sigterm_sends_bye_and_exits(d):
    idle = Raw(d)
    logged_in = Raw(d).login()
    idling = Raw(d).login()
    assert idling.cmd("S1 SELECT INBOX")[1].startswith("S1 OK")
    idling.send("I1 IDLE\r\n")
    assert idling.line().startswith("+")
    for r in (idle, logged_in, idling):
        r.sock.settimeout(10)
    start_time = time.monotonic()
    d.signal(signal.SIGTERM)
    for r in (idle, logged_in, idling):
        assert r.line() == "* BYE Server shutting down"
    assert d.wait_exit(timeout=15) == 0
    assert time.monotonic() - start_time < 4    # not the 5 s drain timeout
    assert "clustermaild stopped" in d.read_log()


def test_autologout_in_idle(workdir):
    daemon = start(workdir, "imap_client_timeout = 2s\n")
    try:
        r = Raw(daemon).login()
        assert r.cmd("S1 SELECT INBOX")[1].startswith("S1 OK")
        r.send("I1 IDLE\r\n")
        assert r.line().startswith("+")
        r.sock.settimeout(15)
        start_time = time.monotonic()
        line = r.line()
        while not line.startswith("* BYE"):     # updates are fine
            line = r.line()
        assert line.startswith("* BYE Autologout")
        assert time.monotonic() - start_time >= 1
    finally:
        daemon.stop()


def test_syntax_limits(d):
    r = Raw(d)
    assert r.cmd("N1 ID " + "(" * 40 + ")" * 40)[1].startswith("N1 BAD")
    # ID takes at most 30 field/value pairs of strings (RFC 2971)
    assert r.cmd("N2 ID (" + ' "a" "b"' * 31 + ")")[1].startswith("N2 BAD")
    assert r.cmd('N2 ID ("a")')[1].startswith("N2 BAD")
    assert r.cmd("N3")[1] == "N3 BAD Invalid command name"
    assert r.cmd("N4 NOOP")[1] == "N4 OK NOOP completed"


def test_missing_spool_then_mounted(workdir):
    # The daemon never creates spool_dir: logins are refused as a
    # temporary failure until the spool appears (a file system mounted
    # late), then work without a restart.
    daemon = cmtest.Daemon(workdir, services=["imap", "imaps"])
    for user in (ALICE, BOB):
        imaptest.add_user(daemon, user)
    daemon.start()
    try:
        assert "spool_dir" in daemon.read_log()
        _, tagged = Raw(daemon).cmd(f'L1 LOGIN "{ALICE}" "{PASSWORD}"')
        assert tagged.startswith("L1 NO [UNAVAILABLE]")
        assert not os.path.exists(os.path.join(daemon.dir, "spool"))
        make_spool(workdir)
        time.sleep(1.1)     # retried at most once a second

        def login_works():
            _, tagged = Raw(daemon).cmd(f'L2 LOGIN "{ALICE}" "{PASSWORD}"')
            return tagged.startswith("L2 OK")
        assert imaptest.wait_for(login_works, timeout=10)
    finally:
        daemon.stop()


def test_store_metrics_after_imap_work(d):
    """/metrics shows the store's cluster locks and spool I/O: after an
    IMAP session did real work the counters moved, and the lock wait
    histogram is well formed (cumulative buckets, +Inf == count)."""
    m = imaptest.login(d)
    m.select("INBOX")
    m.append("INBOX", None, None, b"Subject: metrics\r\n\r\nhello\r\n")
    m.logout()
    status, _, body = d.http_get("/metrics")
    assert status == 200
    values = {}
    buckets = []
    for line in body.splitlines():
        if line.startswith("#") or not line:
            continue
        name, value = line.rsplit(" ", 1)
        if name.startswith("clustermail_lock_wait_seconds_bucket"):
            buckets.append(float(value))
        values[name] = float(value)
    assert values["clustermail_lock_grants_total"] > 0
    assert values["clustermail_spool_uring_ops_total"] > 0
    assert len(buckets) == 8 and buckets == sorted(buckets)
    assert buckets[-1] == values["clustermail_lock_wait_seconds_count"]
    assert 'clustermail_lock_wait_seconds_bucket{le="+Inf"}' in values
