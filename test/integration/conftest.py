"""Fixtures that run the real server binary ($ZWIBBLER_BIN) for the integration tests.

Each server gets its own port, config file and data directory under pytest's tmp_path.
Its stdout+stderr go to <dir>/server.log, printed when a test fails. Servers are
always stopped (SIGTERM, then SIGKILL after 10 s); a server that crashed by itself,
ignored SIGTERM or exited with a failure status fails the test in teardown.

Storage backend: LMDB unless the test module sets SERVER_BACKENDS, e.g.
    SERVER_BACKENDS = ["lmdb", "sqlite", "redis"]
which runs each of its tests once per backend (the `db_backend` parameter; the
environment variable ZW_TEST_BACKENDS, e.g. "lmdb", narrows the list). With
"redis" every test gets a private redis-server, and its servers run in cluster mode
(the default with Redis): each server delivers through the Redis channel, as in a
multi-server deployment.
"""

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_ENV_BIN = os.environ.get("ZWIBBLER_BIN")
BIN = _ENV_BIN or str(REPO / "build" / "release" / "zwibbler")

READY_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, root, name, extra):
        self.dir = Path(root) / name
        self.data_dir = self.dir / "data"
        self.data_dir.mkdir(parents=True)
        self.port = free_port()
        self.config_path = self.dir / "zwibbler.conf"
        self.log_path = self.dir / "server.log"
        self.config = {
            "ServerBindAddress": "127.0.0.1",
            "ServerPort": str(self.port),
            "Database": "lmdb",
            "DataDir": str(self.data_dir),
            # Every connection has a worker thread created at start; a small pool
            # keeps start-up and shutdown fast in tests.
            "MaxConnections": "256",
            # Tests run as root: stay root rather than switch to a `zwibbler` user
            # that may exist here (test_privileges.py covers the switch).
            "User": "",
        }
        self.config.update({k: str(v) for k, v in extra.items()})
        self.write_config()
        self.proc = None
        self.problems = []
        self.starts = 0

    def write_config(self):
        with open(self.config_path, "w") as f:
            for k, v in self.config.items():
                f.write("%s=%s\n" % (k, v))

    @property
    def url(self):
        return "ws://127.0.0.1:%d/socket" % self.port

    def start(self):
        assert self.proc is None or self.proc.poll() is not None, "server already running"
        self.starts += 1
        log = open(self.log_path, "ab")
        log.write(b"\n===== start #%d: %s --config %s\n" % (self.starts, BIN.encode(),
                                                            str(self.config_path).encode()))
        log.flush()
        self.proc = subprocess.Popen([BIN, "--config", str(self.config_path)],
                                     stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, cwd=str(self.dir))
        log.close()
        self.wait_ready()

    def wait_ready(self):
        deadline = time.monotonic() + READY_TIMEOUT
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited during start-up with status %s\n%s"
                                   % (self.proc.returncode, self.log_tail()))
            try:
                status, _, _ = self.http("GET", "/socket", timeout=1)
                if status == 200:
                    return
                last = "status %d" % status
            except OSError as e:
                last = repr(e)
            time.sleep(0.05)
        raise RuntimeError("server not ready within %.0fs (%s)\n%s"
                           % (READY_TIMEOUT, last, self.log_tail()))

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM):
        """Stops the server with `sig`; records problems (crash, hang, bad status)."""
        if self.proc is None:
            return
        p, self.proc = self.proc, None
        if p.poll() is not None:
            self.problems.append("server exited by itself with status %s before it was "
                                 "stopped (crash?)" % p.returncode)
            return
        p.send_signal(sig)
        try:
            p.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            self.problems.append("server did not exit within %.0fs of signal %d"
                                 % (STOP_TIMEOUT, sig))
            return
        if sig == signal.SIGTERM and p.returncode not in (0, -signal.SIGTERM):
            self.problems.append("server exited with status %s after SIGTERM" % p.returncode)

    def stop_deferred(self, label):
        """SIGTERM without waiting: the exit is checked at the end of the session
        (the server takes ~2 s to stop; tests need not wait for it)."""
        if self.proc is None:
            return
        p, self.proc = self.proc, None
        if p.poll() is not None:
            self.problems.append("server exited by itself with status %s before it was "
                                 "stopped (crash?)" % p.returncode)
            return
        p.send_signal(signal.SIGTERM)
        _pending_exits.append((p, time.monotonic(), label, self))

    def kill(self):
        self.stop(signal.SIGKILL)

    def restart(self, sig=signal.SIGTERM):
        self.stop(sig)
        self.start()

    def http(self, method, path, headers=None, body=None, timeout=5):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return r.status, r.headers, r.read()
        finally:
            conn.close()

    def log_tail(self, limit=20000):
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return "(no server log)"
        if len(data) > limit:
            data = b"...\n" + data[-limit:]
        return "----- %s -----\n%s" % (self.log_path, data.decode("utf-8", "replace"))


_pending_exits = []  # (Popen, time SIGTERM was sent, test id, Server)
_pending_redis = []  # (redisutil.Redis, [Popen of the servers that use it])


def _reap_pending(block=True):
    """Checks servers stopped with stop_deferred; with block=False only those that
    have exited (or overrun STOP_TIMEOUT) already."""
    problems = []
    for entry in list(_pending_exits):
        p, t0, label, srv = entry
        if not block and p.poll() is None and time.monotonic() - t0 < STOP_TIMEOUT:
            continue
        _pending_exits.remove(entry)
        left = max(0.1, STOP_TIMEOUT - (time.monotonic() - t0))
        try:
            p.wait(left)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            problems.append("%s: server did not exit within %.0fs of SIGTERM\n%s"
                            % (label, STOP_TIMEOUT, srv.log_tail(4000)))
            continue
        if p.returncode not in (0, -signal.SIGTERM):
            problems.append("%s: server exited with status %s after SIGTERM\n%s"
                            % (label, p.returncode, srv.log_tail(4000)))
    # A test's redis-server goes once its servers have exited (they use it until then).
    for entry in list(_pending_redis):
        r, procs = entry
        if block or all(p.poll() is not None for p in procs):
            _pending_redis.remove(entry)
            r.stop()
    return problems


@pytest.fixture(scope="session", autouse=True)
def _server_reaper():
    yield
    problems = _reap_pending()
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def pytest_generate_tests(metafunc):
    backends = getattr(metafunc.module, "SERVER_BACKENDS", None)
    only = os.environ.get("ZW_TEST_BACKENDS")  # e.g. "lmdb": the TSan run's choice
    if backends and only:
        backends = [b for b in backends if b in only.split(",")]
    if backends and "server_factory" in metafunc.fixturenames:
        metafunc.parametrize("db_backend", backends, indirect=True)


@pytest.fixture
def db_backend(request):
    """The storage backend the test's servers use: "lmdb" unless parametrized."""
    return getattr(request, "param", "lmdb")


@pytest.fixture
def server_factory(request, tmp_path, db_backend):
    """make(**config) -> a started Server with extra config keys."""
    if not os.path.exists(BIN):
        if _ENV_BIN:
            pytest.fail("ZWIBBLER_BIN=%s does not exist" % BIN)
        pytest.skip("server binary %s not built" % BIN)
    servers = []
    backend = {}
    redis = None
    if db_backend == "sqlite":
        backend = {"Database": "sqlite"}
    elif db_backend == "redis":
        import redisutil
        if redisutil.REDIS is None:
            pytest.skip("redis-server not installed")
        redis = redisutil.Redis(tmp_path, durable=False).start()
        backend = {"Database": "redis", "DbServer": "127.0.0.1:%d" % redis.port}
    elif db_backend != "lmdb":
        pytest.fail("unknown backend %r" % db_backend)

    def make(**extra):
        s = Server(tmp_path, "srv%d" % len(servers), dict(backend, **extra))
        servers.append(s)
        s.start()
        return s

    yield make

    problems = []
    procs = [s.proc for s in servers if s.proc is not None]
    for s in servers:
        s.stop_deferred(request.node.nodeid)
        problems += ["%s: %s" % (s.dir.name, p) for p in s.problems]
    if redis is not None:
        _pending_redis.append((redis, procs))
    # servers of earlier tests that have finished stopping (reported here, by name)
    problems += ["earlier test " + p for p in _reap_pending(block=False)]
    rep = getattr(request.node, "rep_call", None)
    if problems or (rep is not None and rep.failed):
        for s in servers:
            sys.stderr.write(s.log_tail() + "\n")
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


@pytest.fixture
def server(server_factory):
    return server_factory()
