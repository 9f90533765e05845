"""Integration tests for `clustermailctl user ...`: the real binary, a
config and users file in the test's temp dir, driven with subprocess.

Binaries are found under $top_builddir (set by `make check`; default: the
source tree, for in-tree builds). A test skips with the reason when
clustermailctl has not been built there.
"""
import concurrent.futures
import json
import os
import pty
import select
import signal
import stat
import subprocess
import time

import pytest

USER_HASH_Y = ("$y$j9T$K5GwIeap1le5MpmdGNTOU/$"
               "PSa0pErAtxBx6LwxtbjePF0YMPzUp0tfjOVspsA3V56")

EX_USAGE, EX_DATAERR, EX_NOUSER, EX_CANTCREAT, EX_CONFIG = 64, 65, 67, 73, 78


def ctl_binary():
    builddir = os.environ.get("top_builddir") or os.path.abspath(
        os.path.join(os.path.dirname(__file__), "..", ".."))
    path = os.path.join(builddir, "src", "ctl", "clustermailctl")
    if not os.access(path, os.X_OK):
        pytest.skip(f"clustermailctl is not built in {builddir} "
                    "(set top_builddir or run make first)")
    return path


class Ctl:
    """clustermailctl with a private config in a temp dir."""

    def __init__(self, tmp_path):
        self.binary = ctl_binary()
        self.dir = tmp_path
        self.users = tmp_path / "users"
        self.config = tmp_path / "clustermail.conf"
        self.config.write_text(
            f"users_file = {self.users}\n"
            f"spool_dir = {tmp_path / 'spool'}\n"
            f"control_socket = {tmp_path / 'ctl.sock'}\n"
            f"pid_file = {tmp_path / 'clustermaild.pid'}\n"
            "local_domains = example.com\n")

    def argv(self, *args):
        return [self.binary, "-c", str(self.config), "--node", "n1", *args]

    def run(self, *args, password=None, stdin=None):
        """Run a command; password goes to stdin with a newline."""
        if password is not None:
            stdin = password + "\n"
        return subprocess.run(self.argv(*args), input=stdin, text=True,
                              capture_output=True, timeout=60)

    def add(self, address, password="secret", *extra):
        return self.run("user", "add", address, "--password-stdin", *extra,
                        password=password)

    def hashes(self):
        """address -> hash, from the users file itself."""
        result = {}
        for line in self.users.read_text().splitlines():
            if line and not line.lstrip().startswith("#"):
                address, hash_, *_ = line.split(":")
                result[address] = hash_
        return result

    def list_json(self):
        res = self.run("--json", "user", "list")
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)["users"]


@pytest.fixture
def ctl(tmp_path):
    return Ctl(tmp_path)


def assert_private(path):
    mode = stat.S_IMODE(os.stat(path).st_mode)
    assert mode & stat.S_IRWXO == 0, f"{path} has mode {oct(mode)}"


def test_add_list_del(ctl):
    res = ctl.add("Alice@Example.COM")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "user alice@example.com added"
    assert ctl.add("bob@example.com").returncode == 0

    res = ctl.run("user", "list")
    assert res.returncode == 0
    lines = [line.split() for line in res.stdout.splitlines()]
    assert lines == [["alice@example.com", "yescrypt"],
                     ["bob@example.com", "yescrypt"]]
    assert ctl.list_json() == [
        {"address": "alice@example.com", "scheme": "yescrypt"},
        {"address": "bob@example.com", "scheme": "yescrypt"}]
    hashes = ctl.hashes()
    assert hashes["alice@example.com"].startswith("$y$")
    # random salts: the same password gives different hashes
    assert hashes["alice@example.com"] != hashes["bob@example.com"]

    res = ctl.run("user", "del", "ALICE@example.com")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "user alice@example.com deleted"
    assert [u["address"] for u in ctl.list_json()] == ["bob@example.com"]
    assert_private(ctl.users)
    # nothing left behind but the file and its lock file
    assert sorted(p.name for p in ctl.dir.iterdir()) == [
        "clustermail.conf", "users", "users.lock"]


def test_json_output(ctl):
    res = ctl.run("--json", "user", "add", "carol@example.com",
                  "--password-stdin", password="pw")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {"address": "carol@example.com",
                                      "result": "added"}
    # --json is also accepted after the command
    res = ctl.run("user", "list", "--json")
    assert json.loads(res.stdout) == {"users": [
        {"address": "carol@example.com", "scheme": "yescrypt"}]}
    res = ctl.run("user", "passwd", "carol@example.com", "--password-stdin",
                  "--json", password="pw2")
    assert json.loads(res.stdout)["result"] == "password-changed"


def test_list_empty(ctl):
    res = ctl.run("user", "list")
    assert (res.returncode, res.stdout) == (0, "")
    assert ctl.list_json() == []


def test_duplicate_and_unknown(ctl):
    assert ctl.add("dave@example.com").returncode == 0
    res = ctl.add("DAVE@example.com")
    assert res.returncode == 1
    assert "already exists" in res.stderr
    assert res.stderr.startswith("clustermailctl: ")

    res = ctl.run("user", "del", "nobody@example.com")
    assert res.returncode == EX_NOUSER
    assert "no such user" in res.stderr
    res = ctl.run("user", "passwd", "nobody@example.com", "--password-stdin",
                  password="x")
    assert res.returncode == EX_NOUSER


@pytest.mark.parametrize("address", [
    "no-at-sign", "a..b@example.com", "a@b@example.com", "\"q\"@example.com",
    "a@-bad.example.com", "x" * 65 + "@example.com", "#a@example.com"])
def test_bad_address(ctl, address):
    res = ctl.add(address)
    assert res.returncode == EX_DATAERR, res.stderr
    assert "invalid address" in res.stderr
    assert not ctl.users.exists()


def test_local_domains(ctl):
    res = ctl.add("erin@example.org")
    assert res.returncode == EX_DATAERR
    assert "local_domains" in res.stderr and "--force" in res.stderr
    assert not ctl.users.exists()
    res = ctl.add("erin@example.org", "pw", "--force")
    assert res.returncode == 0, res.stderr
    assert "erin@example.org" in ctl.hashes()


def test_password_input_errors(ctl):
    assert ctl.add("frank@example.com", "").returncode == EX_DATAERR
    res = ctl.add("frank@example.com", "x" * 2000)
    assert res.returncode == EX_DATAERR
    assert "longer than" in res.stderr
    # stdin is not a terminal and there is no --password-stdin
    res = ctl.run("user", "add", "frank@example.com", stdin="pw\n")
    assert res.returncode == EX_USAGE
    assert "--password-stdin" in res.stderr
    assert not ctl.users.exists()


def test_usage_errors(ctl):
    for args in (["user"], ["user", "frob"], ["user", "add"],
                 ["user", "list", "extra"], ["user", "del", "--force", "a@example.com"],
                 ["user", "add", "a@example.com", "--scheme", "md5"],
                 ["user", "add", "a@example.com", "--hash", USER_HASH_Y,
                  "--password-stdin"]):
        res = ctl.run(*args, stdin="")
        assert res.returncode == EX_USAGE, (args, res.stderr)
        assert res.stderr.startswith("clustermailctl: ") or \
            res.stderr.startswith("usage:"), res.stderr
    res = ctl.run("user")
    assert "user add ADDRESS" in res.stderr


def test_passwd_changes_hash(ctl):
    assert ctl.add("gina@example.com", "old").returncode == 0
    before = ctl.hashes()["gina@example.com"]
    res = ctl.run("user", "passwd", "gina@example.com", "--password-stdin",
                  password="new")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "password of user gina@example.com changed"
    after = ctl.hashes()["gina@example.com"]
    assert after != before and after.startswith("$y$")


def test_sha512_scheme(ctl):
    res = ctl.add("hank@example.com", "pw", "--scheme", "sha512-crypt")
    assert res.returncode == 0, res.stderr
    assert ctl.hashes()["hank@example.com"].startswith("$6$")
    res = ctl.run("user", "passwd", "hank@example.com", "--password-stdin",
                  "--scheme", "SHA512-CRYPT", password="pw2")
    assert res.returncode == 0, res.stderr
    assert ctl.hashes()["hank@example.com"].startswith("$6$")
    assert ctl.list_json()[0]["scheme"] == "sha512-crypt"


def test_precomputed_hash(ctl):
    res = ctl.run("user", "add", "ivy@example.com", "--hash", USER_HASH_Y)
    assert res.returncode == 0, res.stderr
    assert ctl.hashes()["ivy@example.com"] == USER_HASH_Y
    res = ctl.run("user", "passwd", "ivy@example.com", "--hash", "!")
    assert res.returncode == 0, res.stderr
    assert ctl.list_json()[0]["scheme"] == "locked"
    res = ctl.run("user", "add", "jan@example.com", "--hash",
                  "$1$abcdefgh$znAnv9M.XU2pRYfmSs46h/")
    assert res.returncode == EX_DATAERR
    assert "unsupported" in res.stderr


def test_preserves_comments_and_mode(ctl):
    ctl.users.write_text("# managed by clustermailctl\n\n"
                         f"kim@example.com:{USER_HASH_Y}:quota=1G\n")
    os.chmod(ctl.users, 0o600)
    assert ctl.add("lee@example.com").returncode == 0
    assert ctl.run("user", "del", "lee@example.com").returncode == 0
    assert ctl.users.read_text() == (
        "# managed by clustermailctl\n\n"
        f"kim@example.com:{USER_HASH_Y}:quota=1G\n")
    assert stat.S_IMODE(os.stat(ctl.users).st_mode) == 0o600


def test_malformed_file(ctl):
    ctl.users.write_text(f"ok@example.com:{USER_HASH_Y}\nbroken line\n")
    for res in (ctl.run("user", "list"), ctl.add("new@example.com")):
        assert res.returncode == EX_CONFIG
        assert f"{ctl.users}:2: " in res.stderr
    # a refused change leaves the file as it was
    assert "new@example.com" not in ctl.users.read_text()


def test_missing_directory(ctl, tmp_path):
    ctl.users = tmp_path / "missing-dir" / "users"
    ctl.config.write_text(ctl.config.read_text().replace(
        f"users_file = {tmp_path / 'users'}", f"users_file = {ctl.users}"))
    res = ctl.add("mo@example.com")
    assert res.returncode == EX_CANTCREAT
    assert "lock" in res.stderr


def test_concurrent_adds(ctl):
    """20 processes adding at once: the writer lock loses no update."""
    addresses = [f"user{i}@example.com" for i in range(20)]
    procs = [subprocess.Popen(
        ctl.argv("user", "add", address, "--password-stdin"),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True) for address in addresses]
    # release them together so that their load-modify-save cycles overlap
    with concurrent.futures.ThreadPoolExecutor(len(procs)) as pool:
        results = list(pool.map(
            lambda p: (p.communicate("pw\n", timeout=120), p.returncode),
            procs))
    for (out, err), code in results:
        assert code == 0, err
    assert sorted(ctl.hashes()) == sorted(addresses)
    assert_private(ctl.users)
    assert not [p for p in ctl.dir.iterdir() if ".tmp." in p.name]


def read_until(fd, text, timeout=30):
    """Read from a pty until text has appeared; returns all output."""
    data = b""
    deadline = time.monotonic() + timeout
    while text.encode() not in data:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"timed out waiting for {text!r}: {data!r}"
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            try:
                chunk = os.read(fd, 1024)
            except OSError:     # EIO: the child closed the terminal
                break
            if not chunk:
                break
            data += chunk
    return data.decode(errors="replace")


def run_on_terminal(ctl, args, answers):
    """Run clustermailctl on a pseudo-terminal, answering prompts."""
    pid, fd = pty.fork()
    if pid == 0:
        try:
            os.execv(ctl.binary, ctl.argv(*args))
        finally:
            os._exit(127)
    output = ""
    try:
        for prompt, answer in answers:
            output += read_until(fd, prompt)
            os.write(fd, answer.encode() + b"\n")
        output += read_until(fd, "\x00never")  # to EOF
    finally:
        # Never hang the suite on a child still waiting for input.
        done, status = os.waitpid(pid, os.WNOHANG)
        deadline = time.monotonic() + 10
        while done == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
            done, status = os.waitpid(pid, os.WNOHANG)
        if done == 0:
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), output


def test_terminal_prompt(ctl):
    code, output = run_on_terminal(
        ctl, ["user", "add", "nina@example.com"],
        [("Password: ", "tty-secret"), ("Retype password: ", "tty-secret")])
    assert code == 0, output
    assert "tty-secret" not in output      # not echoed
    assert "user nina@example.com added" in output
    assert ctl.hashes()["nina@example.com"].startswith("$y$")

    code, output = run_on_terminal(
        ctl, ["user", "passwd", "nina@example.com"],
        [("Password: ", "one"), ("Retype password: ", "two")])
    assert code == EX_DATAERR
    assert "do not match" in output
