"""IMAP over TLS with a throw-away CA made by the test, and full verification.

The other TLS tests use a self-signed certificate with verification off;
here the client checks what a real client checks: the chain up to a CA it
trusts and the host name. A CA and a server certificate for localhost and
127.0.0.1 (subjectAltName) are made with the openssl command line
(cmtest.make_ca / make_cert_signed_by). Covered: IMAPS and STARTTLS with
verification (and the capabilities before/after STARTTLS for an untrusted
peer), another CA and a wrong host name are refused by the client, TLS 1.0
and 1.1 refused by the server (src/io/tls.c sets TLS 1.2 as the minimum),
the presented chain is the configured one (leaf and intermediate), and a
SIGHUP with a renewed certificate serves new connections with it while an
existing session keeps working.
"""
import imaplib
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import time

import pytest

import cmtest
import imaptest
from imaptest import ALICE, PASSWORD, Raw

UNTRUSTED = "trusted_networks = 10.0.0.0/8\n"   # 127.0.0.1 is untrusted


def start(workdir, cert, key, extra=UNTRUSTED):
    """A daemon with IMAP + IMAPS serving cert/key, users ALICE and BOB."""
    spool = os.path.join(str(workdir), "spool")
    os.makedirs(spool, exist_ok=True)
    cmtest.prepare_workdir(spool)
    d = cmtest.Daemon(workdir, services=["imap", "imaps"], extra=extra)
    d.cert, d.key = cert, key
    d.write_config()
    for u in imaptest.USERS:
        imaptest.add_user(d, u)
    d.start()
    return d


@pytest.fixture
def pki(workdir):
    """(ca_cert, ca_key, server_cert, server_key) in the test's dir."""
    ca = cmtest.make_ca(str(workdir))
    cert, key = cmtest.make_cert_signed_by(str(workdir), ca, name="leaf")
    return ca[0], ca[1], cert, key


def assert_clean_log(daemon):
    """No sanitizer report (ASan/UBSan builds) in the daemon's log."""
    log = daemon.read_log()
    for marker in ("ERROR: AddressSanitizer", "runtime error:",
                   "ERROR: LeakSanitizer"):
        assert marker not in log, log[log.index(marker) - 200:][:3000]


@pytest.fixture
def d(workdir, pki):
    daemon = start(workdir, pki[2], pki[3])
    yield daemon
    daemon.stop()
    assert_clean_log(daemon)


def verifying_context(cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    return ctx


def tls_connect(daemon, ctx, hostname="localhost"):
    """An IMAPS TLS socket to 127.0.0.1, verified for hostname."""
    sock = socket.create_connection(("127.0.0.1", daemon.ports["imaps"]),
                                    timeout=10)
    try:
        return ctx.wrap_socket(sock, server_hostname=hostname)
    except BaseException:
        sock.close()
        raise


def raw_tls(daemon, ctx, hostname="localhost"):
    """A Raw IMAP client over verified IMAPS, greeting read."""
    r = Raw(daemon, read_greeting=False)
    r.sock.close()
    r.sock = tls_connect(daemon, ctx, hostname)
    r.greeting = r.line()
    return r


def caps_of(line):
    if "[CAPABILITY " in line:
        line = line.split("[CAPABILITY ", 1)[1].split("]", 1)[0]
    elif "CAPABILITY " in line:
        line = line.split("CAPABILITY ", 1)[1]
    return set(line.split())


def der_of(pem_file):
    """The DER of every certificate in a PEM file, in order."""
    text = open(pem_file).read()
    blocks = re.findall(r"-----BEGIN CERTIFICATE-----.*?"
                        r"-----END CERTIFICATE-----", text, re.S)
    return [ssl.PEM_cert_to_DER_cert(b) for b in blocks]


def wait_reloaded(daemon, generation):
    deadline = time.monotonic() + 10
    while daemon.control_request("status")["config_generation"] == generation:
        assert time.monotonic() < deadline, daemon.read_log()
        time.sleep(0.05)


def test_imaps_verified_login(d, pki):
    ctx = verifying_context(pki[0])
    r = raw_tls(d, ctx)
    assert r.sock.version() in ("TLSv1.2", "TLSv1.3")
    assert r.greeting.startswith("* OK [CAPABILITY IMAP4rev1 ")
    caps = caps_of(r.greeting)
    # implicit TLS: no STARTTLS, login allowed even from an untrusted peer
    assert "STARTTLS" not in caps and "LOGINDISABLED" not in caps
    assert "AUTH=PLAIN" in caps
    r.login()
    _, tagged = r.cmd("s1 SELECT INBOX")
    assert tagged.startswith("s1 OK")
    r.close()
    # imaplib, verifying the IP address SAN this time
    m = imaplib.IMAP4_SSL("127.0.0.1", d.ports["imaps"], ssl_context=ctx,
                          timeout=10)
    assert m.login(ALICE, PASSWORD)[0] == "OK"
    m.logout()


def test_starttls_verified_and_capabilities(d, pki):
    r = Raw(d)
    before = caps_of(r.greeting)
    assert "STARTTLS" in before and "LOGINDISABLED" in before
    assert not any(c.startswith("AUTH=") for c in before)
    assert r.cmd(f'L0 LOGIN "{ALICE}" "{PASSWORD}"')[1].startswith(
        "L0 NO [PRIVACYREQUIRED]")
    assert r.cmd("S1 STARTTLS")[1] == "S1 OK Begin TLS negotiation now"
    r.sock = verifying_context(pki[0]).wrap_socket(
        r.sock, server_hostname="localhost")
    untagged, tagged = r.cmd("C1 CAPABILITY")
    assert tagged.startswith("C1 OK")
    after = caps_of(untagged[0])
    assert "STARTTLS" not in after and "LOGINDISABLED" not in after
    assert {"AUTH=PLAIN", "AUTH=LOGIN"} <= after
    assert "IMAP4rev1" in after and "IDLE" in after
    r.login()
    r.close()


def test_other_ca_is_refused(d, pki, workdir):
    other = cmtest.make_ca(str(workdir), name="other-ca", cn="someone else")
    with pytest.raises(ssl.SSLCertVerificationError) as e:
        tls_connect(d, verifying_context(other[0]))
    assert "unable to get local issuer certificate" in e.value.verify_message
    # a STARTTLS client refuses it the same way
    r = Raw(d)
    assert r.cmd("S1 STARTTLS")[1].startswith("S1 OK")
    with pytest.raises(ssl.SSLCertVerificationError):
        verifying_context(other[0]).wrap_socket(
            r.sock, server_hostname="localhost")
    r.close()
    # the server is unharmed
    with tls_connect(d, verifying_context(pki[0])):
        pass


def test_wrong_hostname_is_refused(d, pki):
    ctx = verifying_context(pki[0])
    with pytest.raises(ssl.SSLCertVerificationError) as e:
        tls_connect(d, ctx, hostname="mail.example.net")
    assert "Hostname mismatch" in e.value.verify_message
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_connect(d, ctx, hostname="127.0.0.2")


def old_version_context(version):
    """A client context limited to one TLS version, at security level 0 so
    that our own OpenSSL does not refuse to offer it."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.minimum_version = version
    ctx.maximum_version = version
    return ctx


def client_can_speak(version, cert, key):
    """Whether this Python/OpenSSL can complete a handshake at version at
    all (against a local server that allows it): otherwise a refusal by
    clustermaild would prove nothing."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    server_ctx.minimum_version = version
    server_ctx.maximum_version = version
    server_ctx.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)

    def serve():
        try:
            conn, _ = listener.accept()
            with server_ctx.wrap_socket(conn, server_side=True):
                pass
        except OSError:
            pass
    t = threading.Thread(target=serve)
    t.start()
    try:
        with socket.create_connection(listener.getsockname(), timeout=5) as s:
            with old_version_context(version).wrap_socket(s) as tls:
                return tls.version() is not None
    except (ssl.SSLError, OSError):
        return False
    finally:
        t.join()
        listener.close()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1,
                                     ssl.TLSVersion.TLSv1_1],
                         ids=["TLSv1.0", "TLSv1.1"])
def test_old_tls_versions_refused(d, pki, version):
    if not client_can_speak(version, pki[2], pki[3]):
        pytest.skip(f"this OpenSSL cannot speak {version.name} at all")
    with pytest.raises(ssl.SSLError) as e:
        tls_connect(d, old_version_context(version))
    # the refusal comes from the server: a protocol_version alert received
    assert "TLSV1_ALERT_PROTOCOL_VERSION" in str(e.value), e.value
    # TLS 1.2 and 1.3 both work
    for good in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        ctx = verifying_context(pki[0])
        ctx.maximum_version = good
        with tls_connect(d, ctx) as s:
            assert s.version() == good.name.replace("_", ".")


def test_presented_chain_is_configured(workdir):
    """Leaf + intermediate in tls_cert: the client trusts only the root,
    so the handshake verifies only if the intermediate is sent too."""
    w = str(workdir)
    root = cmtest.make_ca(w, name="root", cn="test root")
    inter = cmtest.make_cert_signed_by(w, root, name="inter",
                                       cn="test intermediate", is_ca=True)
    leaf, key = cmtest.make_cert_signed_by(w, inter, name="leaf", serial=7)
    chain = os.path.join(w, "chain.pem")
    with open(chain, "w") as f:
        f.write(open(leaf).read() + open(inter[0]).read())
    daemon = start(workdir, chain, key)
    try:
        with tls_connect(daemon, verifying_context(root[0])) as s:
            assert s.getpeercert(True) == der_of(leaf)[0]
            assert s.getpeercert()["serialNumber"] == "07"
        # the whole chain, as openssl s_client sees it
        out = subprocess.run(
            ["openssl", "s_client", "-connect",
             f"127.0.0.1:{daemon.ports['imaps']}", "-servername", "localhost",
             "-CAfile", root[0], "-verify_return_error", "-showcerts"],
            input="", capture_output=True, text=True, timeout=10)
        assert out.returncode == 0, out.stderr
        sent = re.findall(r"-----BEGIN CERTIFICATE-----.*?"
                          r"-----END CERTIFICATE-----", out.stdout, re.S)
        assert [ssl.PEM_cert_to_DER_cert(b) for b in sent] == der_of(chain)
    finally:
        daemon.stop()
    assert_clean_log(daemon)


def test_sighup_new_certificate_keeps_sessions(d, pki, workdir):
    ctx = verifying_context(pki[0])
    old = raw_tls(d, ctx)
    old.login()
    assert old.cmd("s1 SELECT INBOX")[1].startswith("s1 OK")
    old_der = old.sock.getpeercert(True)
    assert old_der == der_of(pki[2])[0]
    # renew: same CA, new key, serial 3, replaced atomically like certbot
    new_cert, new_key = cmtest.make_cert_signed_by(
        str(workdir), (pki[0], pki[1]), name="renewed", serial=3)
    os.replace(new_key, d.key)
    os.replace(new_cert, d.cert)
    generation = d.control_request("status")["config_generation"]
    d.signal(signal.SIGHUP)
    wait_reloaded(d, generation)
    with tls_connect(d, ctx) as s:
        assert s.getpeercert(True) == der_of(d.cert)[0] != old_der
        assert s.getpeercert()["serialNumber"] == "03"
    # STARTTLS uses the new one too
    r = Raw(d)
    assert r.cmd("S1 STARTTLS")[1].startswith("S1 OK")
    r.sock = ctx.wrap_socket(r.sock, server_hostname="localhost")
    assert r.sock.getpeercert(True) == der_of(d.cert)[0]
    r.login()
    r.close()
    # the session opened before the reload goes on with its old certificate
    assert old.sock.getpeercert(True) == old_der
    assert old.cmd("n1 NOOP")[1].startswith("n1 OK")
    imaptest.deliver(d, ALICE, "Subject: after reload\r\n\r\nhi\r\n")
    untagged, tagged = old.cmd("n2 NOOP")
    assert tagged.startswith("n2 OK") and "* 1 EXISTS" in untagged, untagged
    assert old.cmd("f1 FETCH 1 BODY.PEEK[HEADER.FIELDS (SUBJECT)]")[1] \
        .startswith("f1 OK")
    assert old.cmd("z LOGOUT")[1].startswith("z OK")
    old.close()
    assert json.loads(d.ctl("--json", "status").stdout)["node"] == "n1"
