"""The outbound SMTP client (src/queue/transport.c) against test servers.

tests/unit/transport-driver runs one transport_deliver() with settings
from a real clustermail.conf and prints each recipient's result as a JSON
line. The next hops are aiosmtpd servers (delivery, STARTTLS with a
throw-away CA, AUTH, per-recipient answers) or a small hand-written server
(`Scripted`) for what aiosmtpd cannot do: a 421 greeting, DSN, a dropped
connection in the middle of DATA, slow or odd replies, and recording the
exact command lines and raw DATA bytes.

MX routing needs DNS and port 25: those tests run in a private network
and mount namespace (unshare --net --mount, as root) where
/etc/resolv.conf points at a tiny DNS responder on 127.0.0.1 and the MX
hosts are 127.0.0.x:25. This file is the helper run there too (see
`netns_helper`). Every connection stays on 127.0.0.0/8.
"""
import base64
import json
import os
import select
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pytest  # noqa: E402

import cmtest  # noqa: E402

PYTHON = "/usr/bin/python3"     # the one with python3-aiosmtpd


def driver_path():
    path = os.path.join(cmtest.builddir(), "tests", "unit", "transport-driver")
    if not os.access(path, os.X_OK):
        pytest.skip(f"transport-driver is not built in {cmtest.builddir()}")
    return path


def aiosmtpd():
    try:
        import aiosmtpd.controller  # noqa: F401
        import aiosmtpd.smtp  # noqa: F401
    except ImportError:
        pytest.skip("aiosmtpd is not installed (Debian: python3-aiosmtpd)")
    return aiosmtpd


def write_config(workdir, extra=""):
    """A clustermail.conf for the driver; returns its path."""
    path = os.path.join(str(workdir), "clustermail.conf")
    with open(path, "w") as f:
        f.write("node_name = n1\n"
                f"spool_dir = {workdir}/spool\n"
                "smtp_hostname = client.clustermail.test\n"
                "log_level = debug\n" + extra)
    return path


def run_driver(conf, message, sender, rcpts, *options, timeout=60,
               driver=None):
    """Deliver message (bytes, CRLF) -> ({rcpt: result dict}, accepted,
    stderr)."""
    msgfile = conf + ".eml"
    with open(msgfile, "wb") as f:
        f.write(message)
    proc = subprocess.run([driver or driver_path(), *options, conf, msgfile,
                           sender, *rcpts], capture_output=True,
                          timeout=timeout)
    stderr = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 0, stderr
    lines = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    results = {r["rcpt"]: r for r in lines[:-1]}
    for marker in ("ERROR: AddressSanitizer", "runtime error:",
                   "ERROR: LeakSanitizer"):
        assert marker not in stderr, stderr
    return results, lines[-1]["accepted"], stderr


MESSAGE = (b"From: a@client.clustermail.test\r\nTo: b@example.net\r\n"
           b"Subject: transport test\r\n\r\nhello\r\n")


# ---- servers ----------------------------------------------------------------

class Sink:
    """An aiosmtpd server on 127.0.0.1 that records what it received.
    rcpt(address) may return a reply for RCPT TO; data_reply replaces the
    250 to the end of data."""

    def __init__(self, rcpt=None, data_reply=None, **smtp_kwargs):
        aiosmtpd()
        from aiosmtpd.controller import Controller
        self.messages = []
        self.rcpt_reply = rcpt
        self.data_reply = data_reply
        self.port = cmtest.free_port()
        self.controller = Controller(self, hostname="127.0.0.1",
                                     port=self.port, **smtp_kwargs)
        self.controller.start()

    async def handle_RCPT(self, server, session, envelope, address,
                          rcpt_options):
        reply = self.rcpt_reply(address) if self.rcpt_reply else None
        if reply and not reply.startswith("2"):
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return reply or "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.data_reply:
            return self.data_reply
        self.messages.append({
            "from": envelope.mail_from, "mail_options": envelope.mail_options,
            "rcpts": list(envelope.rcpt_tos), "content": envelope.content,
            "tls": session.ssl is not None,
            "auth": session.authenticated})
        return "250 2.0.0 queued as 1234"

    def stop(self):
        self.controller.stop()


class Scripted:
    """A hand-written SMTP server: one connection at a time, every command
    line recorded in self.commands, DATA bytes as sent (still
    dot-stuffed) in self.raw_data. Hooks: greeting, ehlo (extension
    lines; None: EHLO refused), replies {"MAIL": ..., "DATA": ..., "END":
    ..., other verbs}, rcpt(address), drop_in_data (close after that many
    body bytes), delay (seconds before every reply), close_after (verbs
    after whose reply the connection is closed)."""

    def __init__(self, host="127.0.0.1", port=None, greeting="220 scripted",
                 ehlo=("PIPELINING", "8BITMIME"), replies=None, rcpt=None,
                 drop_in_data=None, delay=0.0, close_after=()):
        self.greeting = greeting
        self.ehlo = list(ehlo) if ehlo is not None else None
        self.replies = {"MAIL": "250 2.1.0 ok", "DATA": "354 go ahead",
                        "END": "250 2.0.0 queued", **(replies or {})}
        self.rcpt = rcpt or (lambda addr: "250 2.1.5 ok")
        self.drop_in_data = drop_in_data
        self.delay = delay
        self.close_after = close_after
        self.commands = []
        self.raw_data = []
        self.connections = 0
        self.pipelined = []     # commands already waiting when MAIL came
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.port = port or cmtest.free_port()
        self.sock.bind((host, self.port))
        self.sock.listen(8)
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stopping:
            try:
                ready, _, _ = select.select([self.sock], [], [], 0.1)
                if not ready:
                    continue
                conn, _ = self.sock.accept()
            except (OSError, ValueError):
                return
            self.connections += 1
            try:
                with conn:
                    conn.settimeout(30)
                    self._session(conn, bytearray())
            except OSError:
                pass

    def _line(self, conn, buf):
        while b"\n" not in buf:
            data = conn.recv(65536)
            if not data:
                return None
            buf += data
        i = buf.index(b"\n") + 1
        line = bytes(buf[:i])
        del buf[:i]
        return line

    def _send(self, conn, reply):
        if self.delay:
            time.sleep(self.delay)
        conn.sendall(reply.encode("utf-8", "surrogateescape") + b"\r\n")

    def _session(self, conn, buf):
        self._send(conn, self.greeting)
        while True:
            line = self._line(conn, buf)
            if line is None:
                return
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            self.commands.append(text)
            verb = text.split(" ")[0].split(":")[0].upper()
            if verb == "EHLO" and self.ehlo is None:
                self._send(conn, "502 5.5.1 what is EHLO")
            elif verb == "EHLO":
                lines = ["scripted"] + self.ehlo
                self._send(conn, "\r\n".join(
                    f"250{'-' if i < len(lines) - 1 else ' '}{ln}"
                    for i, ln in enumerate(lines)))
            elif verb == "MAIL":
                # Pipelined RCPTs may already be here (or arrive at once).
                ready, _, _ = select.select([conn], [], [], 0.5)
                if ready and b"\n" not in buf:
                    buf += conn.recv(65536)
                self.pipelined.append(bytes(buf).count(b"RCPT TO"))
                self._send(conn, self.replies["MAIL"])
            elif verb == "RCPT":
                addr = text[text.index("<") + 1:text.index(">")]
                self._send(conn, self.rcpt(addr))
            elif verb == "DATA":
                self._send(conn, self.replies["DATA"])
                if not self.replies["DATA"].startswith("354"):
                    continue
                if not self._data(conn, buf):
                    return
                self._send(conn, self.replies["END"])
            elif verb == "QUIT":
                self._send(conn, "221 bye")
                return
            else:
                self._send(conn, self.replies.get(verb, "250 ok"))
            if verb in self.close_after:
                return

    def _data(self, conn, buf):
        data = bytearray()
        while not data.endswith(b"\r\n.\r\n") and data != b".\r\n":
            line = self._line(conn, buf)
            if line is None:
                return False
            data += line
            if self.drop_in_data is not None and \
                    len(data) >= self.drop_in_data:
                conn.close()
                return False
        self.raw_data.append(bytes(data))
        return True

    def stop(self):
        self.stopping = True
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def servers():
    """Every Sink/Scripted a test starts is stopped at its end."""
    started = []

    def start(cls, *args, **kwargs):
        server = cls(*args, **kwargs)
        started.append(server)
        return server
    yield start
    for server in started:
        server.stop()


def relay(port, extra=""):
    return f"relayhost = [127.0.0.1]:{port}\n" + extra


# ---- delivery to the relayhost ----------------------------------------------

def test_plain_delivery_to_relayhost(workdir, servers):
    sink = servers(Sink)
    conf = write_config(workdir, relay(sink.port, "queue_tls = none\n"))
    res, accepted, log = run_driver(conf, MESSAGE, "a@client.clustermail.test",
                                    ["b@example.net", "c@example.org"])
    assert accepted == 2
    for rcpt in ("b@example.net", "c@example.org"):
        assert res[rcpt]["result"] == "ok"
        assert res[rcpt]["status"] == "2.0.0"
        assert res[rcpt]["diagnostic"] == "smtp; 250 2.0.0 queued as 1234"
        assert res[rcpt]["remote_mta"] == "127.0.0.1"
        assert res[rcpt]["dsn_relayed"] is True    # aiosmtpd has no DSN
    assert len(sink.messages) == 1
    m = sink.messages[0]
    assert m["from"] == "a@client.clustermail.test"
    assert m["rcpts"] == ["b@example.net", "c@example.org"]
    assert m["content"] == MESSAGE
    assert f"SIZE={len(MESSAGE)}" in m["mail_options"]
    assert not m["tls"]
    assert "to=<b@example.net> relay=127.0.0.1 status=2.0.0 sent" in log


def test_null_sender_and_8bit_body(workdir, servers):
    sink = servers(Sink)
    conf = write_config(workdir, relay(sink.port))
    body = MESSAGE + "gr\u00fc\u00dfe\r\n".encode()
    res, accepted, _ = run_driver(conf, body, "", ["b@example.net"], "--8bit")
    assert accepted == 1
    assert sink.messages[0]["from"] == "<>"     # aiosmtpd shows it so
    assert "BODY=8BITMIME" in sink.messages[0]["mail_options"]
    assert sink.messages[0]["content"] == body


def test_dot_stuffing_round_trip(workdir, servers):
    body = (b"Subject: dots\r\n\r\n.\r\n..x\r\n.hidden\r\nmid.dle\r\n"
            b"\r\n.\r\nlast line without CRLF")
    scripted = servers(Scripted)
    conf = write_config(workdir, relay(scripted.port))
    res, accepted, _ = run_driver(conf, body, "a@x.test", ["b@example.net"])
    assert accepted == 1
    raw = scripted.raw_data[0]
    assert raw == (b"Subject: dots\r\n\r\n..\r\n...x\r\n..hidden\r\n"
                   b"mid.dle\r\n\r\n..\r\nlast line without CRLF\r\n.\r\n")
    # and through a real server's un-stuffing: the lines arrive intact
    sink = servers(Sink)
    conf = write_config(workdir, relay(sink.port))
    body2 = body + b"\r\n"
    res, accepted, _ = run_driver(conf, body2, "a@x.test", ["b@example.net"])
    assert accepted == 1
    assert sink.messages[0]["content"] == body2


def test_big_message_streams(workdir, servers):
    sink = servers(Sink)
    conf = write_config(workdir, relay(sink.port))
    line = b"." + b"x" * 70 + b"\r\n"
    body = b"Subject: big\r\n\r\n" + line * 40000      # ~2.9 MB
    res, accepted, _ = run_driver(conf, body, "a@x.test", ["b@example.net"])
    assert accepted == 1
    assert sink.messages[0]["content"] == body


def test_per_recipient_results(workdir, servers):
    def rcpt(addr):
        return {"temp@example.net": "450 4.2.1 mailbox busy, try later",
                "perm@example.net": "550 5.1.1 no such user here",
                "old@example.net": "550 no enhanced code"}.get(addr)
    sink = servers(Sink, rcpt=rcpt)
    conf = write_config(workdir, relay(sink.port))
    rcpts = ["ok@example.net", "temp@example.net", "perm@example.net",
             "old@example.net"]
    res, accepted, log = run_driver(conf, MESSAGE, "a@x.test", rcpts)
    assert accepted == 1
    assert res["ok@example.net"]["result"] == "ok"
    assert res["temp@example.net"]["result"] == "temp"
    assert res["temp@example.net"]["status"] == "4.2.1"
    assert res["temp@example.net"]["diagnostic"] == \
        "smtp; 450 4.2.1 mailbox busy, try later"
    assert res["perm@example.net"]["result"] == "perm"
    assert res["perm@example.net"]["status"] == "5.1.1"
    assert res["perm@example.net"]["diagnostic"] == \
        "smtp; 550 5.1.1 no such user here"
    assert res["perm@example.net"]["remote_mta"] == "127.0.0.1"
    assert res["old@example.net"]["status"] == "5.0.0"
    assert sink.messages[0]["rcpts"] == ["ok@example.net"]
    assert "to=<perm@example.net> relay=127.0.0.1 status=5.1.1 bounced" in log


def test_all_recipients_refused_sends_no_data(workdir, servers):
    scripted = servers(Scripted, rcpt=lambda a: "550 5.1.1 unknown")
    conf = write_config(workdir, relay(scripted.port))
    res, accepted, _ = run_driver(conf, MESSAGE, "a@x.test",
                                  ["b@example.net", "c@example.net"])
    assert accepted == 0
    assert {r["result"] for r in res.values()} == {"perm"}
    assert not any(c.upper() == "DATA" for c in scripted.commands)
    assert scripted.commands[-1] == "QUIT"


def test_connection_refused_is_temporary(workdir):
    port = cmtest.free_port()       # nothing listens there
    conf = write_config(workdir, relay(port))
    res, accepted, log = run_driver(conf, MESSAGE, "a@x.test",
                                    ["b@example.net"])
    r = res["b@example.net"]
    assert accepted == 0
    assert r["result"] == "temp" and r["status"] == "4.4.1"
    assert f"connect to 127.0.0.1[127.0.0.1]:{port}" in r["diagnostic"]
    assert "refused" in r["diagnostic"].lower()
    assert "deferred" in log


def test_greeting_421_is_temporary(workdir, servers):
    scripted = servers(Scripted, greeting="421 4.3.2 too busy, go away")
    conf = write_config(workdir, relay(scripted.port))
    res, _, _ = run_driver(conf, MESSAGE, "a@x.test", ["b@example.net"])
    r = res["b@example.net"]
    assert r["result"] == "temp" and r["status"] == "4.3.2"
    assert r["diagnostic"] == "smtp; 421 4.3.2 too busy, go away"
    assert not any(c.startswith("MAIL") for c in scripted.commands)


def test_greeting_554_is_skipped_not_bounced(workdir, servers):
    scripted = servers(Scripted, greeting="554 5.7.1 you are listed")
    conf = write_config(workdir, relay(scripted.port))
    res, _, _ = run_driver(conf, MESSAGE, "a@x.test", ["b@example.net"])
    r = res["b@example.net"]
    assert r["result"] == "temp" and r["status"] == "4.7.1"
    assert r["diagnostic"] == "smtp; 554 5.7.1 you are listed"


def test_mail_from_refused_permanently(workdir, servers):
    scripted = servers(Scripted,
                       replies={"MAIL": "553 5.7.1 sender not allowed"})
    conf = write_config(workdir, relay(scripted.port))
    res, _, _ = run_driver(conf, MESSAGE, "a@x.test",
                           ["b@example.net", "c@example.net"])
    assert [r["status"] for r in res.values()] == ["5.7.1", "5.7.1"]
    assert {r["result"] for r in res.values()} == {"perm"}


def test_data_5xx_fails_everyone(workdir, servers):
    sink = servers(Sink, data_reply="554 5.6.0 content rejected")
    conf = write_config(workdir, relay(sink.port))
    res, accepted, _ = run_driver(conf, MESSAGE, "a@x.test",
                                  ["b@example.net", "c@example.net"])
    assert accepted == 0
    for r in res.values():
        assert r["result"] == "perm" and r["status"] == "5.6.0"
        assert r["diagnostic"] == "smtp; 554 5.6.0 content rejected"


def test_data_4xx_and_refused_data_command(workdir, servers):
    scripted = servers(Scripted, replies={"END": "451 4.3.0 try again"})
    conf = write_config(workdir, relay(scripted.port))
    res, _, _ = run_driver(conf, MESSAGE, "a@x.test", ["b@example.net"])
    assert res["b@example.net"]["result"] == "temp"
    assert res["b@example.net"]["status"] == "4.3.0"
    scripted2 = servers(Scripted, replies={"DATA": "554 5.5.1 no valid rcpts"})
    conf = write_config(workdir, relay(scripted2.port))
    res, _, _ = run_driver(conf, MESSAGE, "a@x.test", ["b@example.net"])
    assert res["b@example.net"]["result"] == "perm"
    assert res["b@example.net"]["status"] == "5.5.1"


def test_connection_dropped_mid_data(workdir, servers):
    scripted = servers(Scripted, drop_in_data=100)
    conf = write_config(workdir, relay(scripted.port))
    body = MESSAGE + b"y" * 70 * 1000 + b"\r\n"
    res, accepted, _ = run_driver(conf, body, "a@x.test", ["b@example.net"])
    r = res["b@example.net"]
    assert accepted == 0
    assert r["result"] == "temp" and r["status"] == "4.4.2"
    assert "lost connection with 127.0.0.1[127.0.0.1]" in r["diagnostic"]
    assert scripted.raw_data == []


def test_slow_server_is_waited_for(workdir, servers):
    scripted = servers(Scripted, delay=0.4)
    conf = write_config(workdir, relay(scripted.port))
    start = time.monotonic()
    res, accepted, _ = run_driver(conf, MESSAGE, "a@x.test", ["b@example.net"])
    assert accepted == 1
    assert time.monotonic() - start >= 0.4 * 6
    assert len(scripted.raw_data) == 1


def test_multiline_and_odd_replies_are_sanitized(workdir, servers):
    def rcpt(addr):
        return ("550-5.1.1 first line\r\n550-5.1.1 second \x01 line "
                "\udcff\r\n550 5.1.1 " + "z" * 600)
    scripted = servers(Scripted, rcpt=rcpt)
    conf = write_config(workdir, relay(scripted.port))
    res, _, _ = run_driver(conf, MESSAGE, "a@x.test", ["b@example.net"])
    diag = res["b@example.net"]["diagnostic"]
    assert diag.startswith("smtp; 550 5.1.1 first line 5.1.1 second ? line ?")
    assert all(32 <= ord(ch) < 127 for ch in diag)
    assert len(diag) <= 420


def test_overlong_reply_line_is_temporary(workdir, servers):
    scripted = servers(Scripted, greeting="220 " + "x" * 100000)
    conf = write_config(workdir, relay(scripted.port))
    res, _, _ = run_driver(conf, MESSAGE, "a@x.test", ["b@example.net"])
    r = res["b@example.net"]
    assert r["result"] == "temp" and r["status"] == "4.4.2"
    assert "longer than" in r["diagnostic"]


def test_helo_when_ehlo_refused(workdir, servers):
    scripted = servers(Scripted, ehlo=None)
    conf = write_config(workdir, relay(scripted.port))
    res, accepted, _ = run_driver(conf, MESSAGE, "a@x.test", ["b@example.net"],
                                  "--envid", "x", "--notify", "success")
    assert accepted == 1
    assert scripted.commands[:3] == ["EHLO client.clustermail.test",
                                     "HELO client.clustermail.test",
                                     "MAIL FROM:<a@x.test>"]
    assert "RCPT TO:<b@example.net>" in scripted.commands


def test_size_limit_of_server_is_permanent(workdir, servers):
    scripted = servers(Scripted, ehlo=("SIZE 20",))
    conf = write_config(workdir, relay(scripted.port))
    res, _, _ = run_driver(conf, MESSAGE, "a@x.test", ["b@example.net"])
    assert res["b@example.net"]["result"] == "perm"
    assert res["b@example.net"]["status"] == "5.3.4"
    assert not any(c.startswith("MAIL") for c in scripted.commands)


# ---- extensions -------------------------------------------------------------

def test_dsn_parameters_and_pipelining(workdir, servers):
    scripted = servers(Scripted, ehlo=("PIPELINING", "DSN", "SIZE 1000000",
                                       "8BITMIME", "ENHANCEDSTATUSCODES"))
    conf = write_config(workdir, relay(scripted.port))
    res, accepted, _ = run_driver(
        conf, MESSAGE, "a@x.test", ["b@example.net", "c+x=y@example.net"],
        "--envid", "id+1=2 x", "--ret", "hdrs",
        "--notify", "success,failure", "--orcpt", "--8bit")
    assert accepted == 2
    mail = [c for c in scripted.commands if c.startswith("MAIL")][0]
    assert mail == (f"MAIL FROM:<a@x.test> SIZE={len(MESSAGE)} BODY=8BITMIME "
                    "RET=HDRS ENVID=id+2B1+3D2+20x")
    rcpts = [c for c in scripted.commands if c.startswith("RCPT")]
    assert rcpts == [
        "RCPT TO:<b@example.net> NOTIFY=SUCCESS,FAILURE "
        "ORCPT=rfc822;b@example.net",
        "RCPT TO:<c+x=y@example.net> NOTIFY=SUCCESS,FAILURE "
        "ORCPT=rfc822;c+2Bx+3Dy@example.net"]
    assert scripted.pipelined == [2]      # both RCPTs came with MAIL
    assert all(r["dsn_relayed"] is False for r in res.values())


def test_many_recipients_pipelined_in_batches(workdir, servers):
    rcpts = [f"user{i}@example.net" for i in range(250)]
    scripted = servers(Scripted, rcpt=lambda a: "452 4.5.3 too many"
                       if a == "user120@example.net" else "250 2.1.5 ok")
    conf = write_config(workdir, relay(scripted.port))
    res, accepted, _ = run_driver(conf, MESSAGE, "a@x.test", rcpts)
    assert accepted == 249
    assert res["user120@example.net"]["result"] == "temp"
    assert res["user120@example.net"]["status"] == "4.5.3"
    assert [c for c in scripted.commands if c.startswith("RCPT")] == \
        [f"RCPT TO:<{r}>" for r in rcpts]
    assert scripted.pipelined[0] >= 1
    assert len(scripted.raw_data) == 1


def test_no_dsn_parameters_without_dsn(workdir, servers):
    scripted = servers(Scripted, ehlo=("8BITMIME",))      # no PIPELINING
    conf = write_config(workdir, relay(scripted.port))
    res, accepted, _ = run_driver(conf, MESSAGE, "a@x.test", ["b@example.net"],
                                  "--envid", "abc", "--ret", "full",
                                  "--notify", "never", "--orcpt")
    assert accepted == 1
    assert "MAIL FROM:<a@x.test>" in scripted.commands
    assert "RCPT TO:<b@example.net>" in scripted.commands
    assert scripted.pipelined == [0]
    assert res["b@example.net"]["dsn_relayed"] is True


def test_smtputf8_needed_but_not_offered(workdir, servers):
    sink = servers(Sink, enable_SMTPUTF8=False)
    conf = write_config(workdir, relay(sink.port))
    res, accepted, _ = run_driver(conf, MESSAGE, "a@x.test",
                                  ["j\u00f6rg@example.net", "b@example.net"],
                                  "--smtputf8")
    r = res["j\u00f6rg@example.net"]
    assert r["result"] == "perm" and r["status"] == "5.6.7"
    assert "SMTPUTF8" in r["diagnostic"]
    assert res["b@example.net"]["result"] == "ok"     # ASCII one still goes
    assert sink.messages[0]["rcpts"] == ["b@example.net"]
    # a UTF-8 sender: nothing can go
    res, accepted, _ = run_driver(conf, MESSAGE, "j\u00f6rg@x.test",
                                  ["b@example.net"], "--smtputf8")
    assert accepted == 0
    assert res["b@example.net"]["status"] == "5.6.7"
    assert len(sink.messages) == 1


def test_smtputf8_offered(workdir, servers):
    sink = servers(Sink, enable_SMTPUTF8=True)
    conf = write_config(workdir, relay(sink.port))
    res, accepted, _ = run_driver(conf, MESSAGE, "j\u00f6rg@x.test",
                                  ["m\u00fcller@example.net"], "--smtputf8")
    assert accepted == 1
    assert sink.messages[0]["from"] == "j\u00f6rg@x.test"
    assert "SMTPUTF8" in sink.messages[0]["mail_options"]


def test_address_with_line_break_is_refused(workdir, servers):
    scripted = servers(Scripted)
    conf = write_config(workdir, relay(scripted.port))
    res, accepted, _ = run_driver(conf, MESSAGE, "a@x.test",
                                  ["b@example.net>\r\nRSET", "c@example.net"])
    assert res["b@example.net>\r\nRSET"]["status"] == "5.1.3"
    assert res["c@example.net"]["result"] == "ok"
    assert "RSET" not in scripted.commands


# ---- TLS --------------------------------------------------------------------

@pytest.fixture
def pki(workdir):
    ca = cmtest.make_ca(str(workdir))
    cert, key = cmtest.make_cert_signed_by(str(workdir), ca, name="leaf")
    return ca[0], cert, key


def server_tls(pki):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pki[1], pki[2])
    return ctx


def test_starttls_used_when_offered(workdir, servers, pki):
    sink = servers(Sink, tls_context=server_tls(pki))
    conf = write_config(workdir, relay(sink.port, "queue_tls = may\n"))
    res, accepted, log = run_driver(conf, MESSAGE, "a@x.test",
                                    ["b@example.net"])
    assert accepted == 1
    assert sink.messages[0]["tls"] is True
    assert "TLS with" in log


def test_tls_none_stays_in_clear(workdir, servers, pki):
    sink = servers(Sink, tls_context=server_tls(pki))
    conf = write_config(workdir, relay(sink.port, "queue_tls = none\n"))
    _, accepted, _ = run_driver(conf, MESSAGE, "a@x.test", ["b@example.net"])
    assert accepted == 1
    assert sink.messages[0]["tls"] is False


def test_encrypt_without_starttls_is_not_sent(workdir, servers):
    sink = servers(Sink)
    conf = write_config(workdir, relay(sink.port, "queue_tls = encrypt\n"))
    res, accepted, _ = run_driver(conf, MESSAGE, "a@x.test", ["b@example.net"])
    r = res["b@example.net"]
    assert accepted == 0
    assert r["result"] == "temp" and r["status"] == "4.7.4"
    assert "STARTTLS" in r["diagnostic"]
    assert sink.messages == []


def test_encrypt_with_starttls_refused_is_not_bounced(workdir, servers):
    scripted = servers(Scripted, ehlo=("STARTTLS",),
                       replies={"STARTTLS": "554 5.7.3 no TLS today"})
    conf = write_config(workdir, relay(scripted.port, "queue_tls = encrypt\n"))
    res, accepted, _ = run_driver(conf, MESSAGE, "a@x.test", ["b@example.net"])
    r = res["b@example.net"]
    assert r["result"] == "temp" and r["status"] == "4.7.4"
    assert r["diagnostic"].startswith("smtp; 554 5.7.3 no TLS today")
    assert not any(c.startswith("MAIL") for c in scripted.commands)


def test_verify_with_ca_file(workdir, servers, pki):
    sink = servers(Sink, tls_context=server_tls(pki))
    conf = write_config(workdir, relay(sink.port, "queue_tls = verify\n"
                                       f"queue_tls_ca_file = {pki[0]}\n"))
    _, accepted, _ = run_driver(conf, MESSAGE, "a@x.test", ["b@example.net"])
    assert accepted == 1 and sink.messages[0]["tls"] is True


def test_verify_refuses_unknown_ca(workdir, servers, pki):
    sink = servers(Sink, tls_context=server_tls(pki))
    other = os.path.join(str(workdir), "other")
    os.mkdir(other)
    other_ca = cmtest.make_ca(other)
    conf = write_config(workdir, relay(sink.port, "queue_tls = verify\n"
                                       f"queue_tls_ca_file = {other_ca[0]}\n"))
    res, accepted, _ = run_driver(conf, MESSAGE, "a@x.test", ["b@example.net"])
    r = res["b@example.net"]
    assert accepted == 0
    assert r["result"] == "temp" and r["status"] == "4.7.5"
    assert "certificate" in r["diagnostic"]
    assert sink.messages == []


def test_verify_checks_the_host_name(workdir, servers, pki):
    ca_cert = pki[0]
    sink = servers(Sink, tls_context=server_tls(pki))   # SAN localhost
    conf = write_config(workdir, f"relayhost = [localhost]:{sink.port}\n"
                        f"queue_tls = verify\nqueue_tls_ca_file = {ca_cert}\n")
    res, accepted, _ = run_driver(conf, MESSAGE, "a@x.test", ["b@example.net"])
    assert accepted == 1, res
    assert res["b@example.net"]["remote_mta"] == "localhost"
    # same CA, a certificate for another name
    ca_key = os.path.join(str(workdir), "ca.key")
    cert, key = cmtest.make_cert_signed_by(str(workdir), (ca_cert, ca_key),
                                           name="other", cn="other.test",
                                           san="DNS:other.test", serial=3)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    sink2 = servers(Sink, tls_context=ctx)
    conf = write_config(workdir, f"relayhost = [localhost]:{sink2.port}\n"
                        f"queue_tls = verify\nqueue_tls_ca_file = {ca_cert}\n")
    res, accepted, _ = run_driver(conf, MESSAGE, "a@x.test", ["b@example.net"])
    r = res["b@example.net"]
    assert accepted == 0
    assert r["result"] == "temp" and r["status"] == "4.7.5"
    assert "hostname mismatch" in r["diagnostic"]
    assert sink2.messages == []


def test_may_falls_back_to_clear_after_failed_handshake(workdir, servers):
    # Offers STARTTLS, says 220, then talks no TLS at all.
    scripted = servers(Scripted, ehlo=("STARTTLS",),
                       replies={"STARTTLS": "220 go ahead"},
                       close_after=("STARTTLS",))
    conf = write_config(workdir, relay(scripted.port, "queue_tls = may\n"))
    res, accepted, log = run_driver(conf, MESSAGE, "a@x.test",
                                    ["b@example.net"])
    assert accepted == 1
    assert scripted.connections == 2
    assert "retrying" in log and "without TLS" in log


# ---- AUTH -------------------------------------------------------------------

def auth_sink(servers, exclude=()):
    aiosmtpd()
    from aiosmtpd.smtp import AuthResult, LoginPassword
    seen = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and \
            auth_data.login == b"relayuser" and \
            auth_data.password == b"s3cret pass"
        seen.append(mechanism)
        return AuthResult(success=ok)
    sink = servers(Sink, authenticator=authenticator, auth_require_tls=False,
                   auth_exclude_mechanism=list(exclude))
    return sink, seen


def auth_config(workdir, port, password="s3cret pass"):
    pw = os.path.join(str(workdir), "relay.pw")
    with open(pw, "w") as f:
        f.write(password + "\n")
    return write_config(workdir, relay(port, "relayhost_user = relayuser\n"
                                       f"relayhost_password_file = {pw}\n"))


def test_auth_plain_to_relayhost(workdir, servers):
    sink, seen = auth_sink(servers)
    conf = auth_config(workdir, sink.port)
    res, accepted, log = run_driver(conf, MESSAGE, "a@x.test",
                                    ["b@example.net"])
    assert accepted == 1
    assert seen == ["PLAIN"]
    assert sink.messages[0]["auth"] is True
    assert "s3cret" not in log


def test_auth_login_when_plain_missing(workdir, servers):
    sink, seen = auth_sink(servers, exclude=("PLAIN",))
    conf = auth_config(workdir, sink.port)
    _, accepted, _ = run_driver(conf, MESSAGE, "a@x.test", ["b@example.net"])
    assert accepted == 1
    assert seen == ["LOGIN"]


def test_auth_failure_is_temporary(workdir, servers):
    scripted = servers(Scripted, ehlo=("AUTH LOGIN PLAIN",),
                       replies={"AUTH": "535 5.7.8 authentication failed"})
    conf = auth_config(workdir, scripted.port, password="wrong")
    res, accepted, log = run_driver(conf, MESSAGE, "a@x.test",
                                    ["b@example.net"])
    r = res["b@example.net"]
    assert accepted == 0
    assert r["result"] == "temp" and r["status"] == "4.7.0"
    assert r["diagnostic"].startswith("smtp; 535 5.7.8 authentication failed")
    plain = base64.b64encode(b"\0relayuser\0wrong").decode()
    assert f"AUTH PLAIN {plain}" in scripted.commands
    assert not any(c.startswith("MAIL") for c in scripted.commands)
    assert plain not in log and "wrong" not in log


# ---- MX routing in a private network namespace ------------------------------

DNS_ZONES = {
    # name: {"MX": [(preference, host)], "A": [ip]}
    "order.test": {"MX": [(20, "mx-c.order.test"), (10, "mx-b.order.test")]},
    "mx-b.order.test": {"A": ["127.0.0.3"]},
    "mx-c.order.test": {"A": ["127.0.0.4"]},
    "fallback.test": {"MX": [(10, "mx-dead.fallback.test"),
                             (20, "mx-c.fallback.test")]},
    "mx-dead.fallback.test": {"A": ["127.0.0.2"]},
    "mx-c.fallback.test": {"A": ["127.0.0.4"]},
    "busy.test": {"MX": [(10, "mx-busy.busy.test"), (20, "mx-b.busy.test")]},
    "mx-busy.busy.test": {"A": ["127.0.0.5"]},
    "mx-b.busy.test": {"A": ["127.0.0.3"]},
    "nomx.test": {"A": ["127.0.0.3"]},
    "nullmx.test": {"MX": [(0, "")]},
    "noaddr.test": {"MX": [(10, "gone.noaddr.test")]},
    "relay.test": {"MX": [(10, "mx-c.order.test")], "A": ["127.0.0.3"]},
}
SERVFAIL = {"broken.test"}


def dns_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def dns_answer(query):
    """The response to one query packet (enough of RFC 1035 for tests)."""
    qid, _flags, qdcount = struct.unpack("!HHH", query[:6])
    i, labels = 12, []
    while query[i]:
        labels.append(query[i + 1:i + 1 + query[i]].decode())
        i += 1 + query[i]
    qtype, _qclass = struct.unpack("!HH", query[i + 1:i + 5])
    question = query[12:i + 5]
    name = ".".join(labels).lower()
    zone = DNS_ZONES.get(name)
    rcode, answers = 0, []
    if name in SERVFAIL:
        rcode = 2
    elif zone is None:
        rcode = 3
    elif qtype == 15:
        for pref, host in zone.get("MX", []):
            answers.append((15, struct.pack("!H", pref) + dns_name(host)))
    elif qtype == 1:
        for ip in zone.get("A", []):
            answers.append((1, socket.inet_aton(ip)))
    out = struct.pack("!HHHHHH", qid, 0x8180 | rcode, 1, len(answers), 0, 0)
    out += question
    for rtype, rdata in answers:
        out += struct.pack("!HHHIH", 0xc00c, rtype, 1, 60, len(rdata)) + rdata
    return out


def netns_helper(driver, workdir):
    """Run inside unshare --net --mount: DNS on 127.0.0.1:53, MX hosts on
    127.0.0.x:25; prints {"domain": {"results":..., "hosts":...}}."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    resolv = os.path.join(workdir, "resolv.conf")
    with open(resolv, "w") as f:
        f.write("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
    subprocess.run(["mount", "--bind", resolv, "/etc/resolv.conf"],
                   check=True)
    dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dns.bind(("127.0.0.1", 53))

    def serve_dns():
        while True:
            try:
                data, peer = dns.recvfrom(4096)
                dns.sendto(dns_answer(data), peer)
            except OSError:
                return
            except Exception:       # a malformed query: ignore it
                continue
    threading.Thread(target=serve_dns, daemon=True).start()
    hosts = {ip: Scripted(host=ip, port=25)
             for ip in ("127.0.0.3", "127.0.0.4")}
    hosts["127.0.0.5"] = Scripted(host="127.0.0.5", port=25,
                                  greeting="421 4.3.2 busy")
    conf = write_config(workdir)
    out = {}
    for domain in ("order.test", "fallback.test", "busy.test", "nomx.test",
                   "nullmx.test", "nx.test", "broken.test", "noaddr.test"):
        before = {ip: len(s.raw_data) for ip, s in hosts.items()}
        res, _, log = run_driver(conf, MESSAGE, "a@x.test",
                                 [f"user@{domain}"], driver=driver)
        out[domain] = {
            "result": res[f"user@{domain}"],
            "received": [ip for ip, s in hosts.items()
                         if len(s.raw_data) > before[ip]],
            "log": log}
    # relayhost "relay.test" gets an MX lookup, "[relay.test]" does not
    for key, relayhost in (("relay-mx", "relay.test"),
                           ("relay-bracket", "[relay.test]")):
        conf = write_config(workdir, f"relayhost = {relayhost}\n")
        before = {ip: len(s.raw_data) for ip, s in hosts.items()}
        res, _, log = run_driver(conf, MESSAGE, "a@x.test",
                                 ["user@elsewhere.example"], driver=driver)
        out[key] = {
            "result": res["user@elsewhere.example"],
            "received": [ip for ip, s in hosts.items()
                         if len(s.raw_data) > before[ip]],
            "log": log}
    print(json.dumps(out))


@pytest.fixture(scope="module")
def mx_results(tmp_path_factory):
    if os.geteuid() != 0 or not shutil.which("unshare") or \
            not shutil.which("ip"):
        pytest.skip("MX tests need root, unshare and ip (a private network "
                    "namespace with its own DNS)")
    driver = driver_path()
    aiosmtpd()
    workdir = str(tmp_path_factory.mktemp("mx"))
    proc = subprocess.run(
        ["unshare", "--net", "--mount", PYTHON, os.path.abspath(__file__),
         "--netns-helper", driver, workdir],
        capture_output=True, timeout=180)
    if proc.returncode != 0 and b"unshare" in proc.stderr:
        pytest.skip("cannot make a network namespace here: " +
                    proc.stderr.decode(errors="replace")[-300:])
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return json.loads(proc.stdout.decode().splitlines()[-1])


def test_mx_lowest_preference_first(mx_results):
    r = mx_results["order.test"]
    assert r["result"]["result"] == "ok", r
    assert r["result"]["remote_mta"] == "mx-b.order.test"
    assert r["received"] == ["127.0.0.3"]


def test_mx_next_host_when_first_refuses_connection(mx_results):
    r = mx_results["fallback.test"]
    assert r["result"]["result"] == "ok", r
    assert r["result"]["remote_mta"] == "mx-c.fallback.test"
    assert r["received"] == ["127.0.0.4"]
    assert "mx-dead.fallback.test[127.0.0.2]:25" in r["log"]


def test_mx_next_host_after_421_greeting(mx_results):
    r = mx_results["busy.test"]
    assert r["result"]["result"] == "ok", r
    assert r["received"] == ["127.0.0.3"]


def test_no_mx_falls_back_to_address(mx_results):
    r = mx_results["nomx.test"]
    assert r["result"]["result"] == "ok", r
    assert r["result"]["remote_mta"] == "nomx.test"
    assert r["received"] == ["127.0.0.3"]


def test_null_mx_fails_permanently(mx_results):
    r = mx_results["nullmx.test"]["result"]
    assert r["result"] == "perm" and r["status"] == "5.1.10", r
    assert mx_results["nullmx.test"]["received"] == []


def test_nonexistent_domain_fails_permanently(mx_results):
    r = mx_results["nx.test"]["result"]
    assert r["result"] == "perm" and r["status"] == "5.1.2", r


def test_dns_failure_is_temporary(mx_results):
    r = mx_results["broken.test"]["result"]
    assert r["result"] == "temp" and r["status"] == "4.4.3", r


def test_mx_host_without_address_is_temporary(mx_results):
    r = mx_results["noaddr.test"]["result"]
    assert r["result"] == "temp" and r["status"] == "4.4.3", r


def test_relayhost_name_gets_mx_lookup(mx_results):
    r = mx_results["relay-mx"]
    assert r["result"]["result"] == "ok", r
    assert r["result"]["remote_mta"] == "mx-c.order.test"
    assert r["received"] == ["127.0.0.4"]


def test_bracketed_relayhost_skips_mx_lookup(mx_results):
    r = mx_results["relay-bracket"]
    assert r["result"]["result"] == "ok", r
    assert r["result"]["remote_mta"] == "relay.test"
    assert r["received"] == ["127.0.0.3"]


if __name__ == "__main__" and len(sys.argv) == 4 and \
        sys.argv[1] == "--netns-helper":
    netns_helper(sys.argv[2], sys.argv[3])
