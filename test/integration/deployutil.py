"""Helpers of the deployment tests: certificates made with the openssl CLI,
a server started with HTTPS, a full protocol session over any URL, and background
processes (nginx, apache2, an installed server) that are always stopped.
"""

import contextlib
import http.client
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

import zwclient as zw
from conftest import BIN, Server, free_port

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"


# ---- certificates ------------------------------------------------------------------

def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=str(cwd), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


class Certs:
    """A root CA, an intermediate CA and a server certificate for 127.0.0.1 and
    localhost signed by the intermediate, as real deployments have them.

    ca       root certificate (what clients trust)
    chain    server certificate followed by the intermediate (a "fullchain" file)
    leaf     the server certificate alone
    key      the server's private key (RSA)
    other_key  an unrelated private key
    """

    def __init__(self, d):
        d = Path(d)
        d.mkdir(parents=True, exist_ok=True)
        self.dir = d
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
                 "-out", "ca.pem", "-days", "2", "-subj", "/CN=zwibbler test root", cwd=d)
        (d / "int.ext").write_text("basicConstraints=critical,CA:TRUE\n"
                                   "keyUsage=critical,keyCertSign,cRLSign\n")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "int.key", "-out",
                 "int.csr", "-subj", "/CN=zwibbler test intermediate", cwd=d)
        _openssl("x509", "-req", "-in", "int.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", "int.pem", "-days", "2", "-extfile", "int.ext",
                 cwd=d)
        (d / "srv.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                   "extendedKeyUsage=serverAuth\n")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
                 "srv.csr", "-subj", "/CN=localhost", cwd=d)
        _openssl("x509", "-req", "-in", "srv.csr", "-CA", "int.pem", "-CAkey", "int.key",
                 "-CAcreateserial", "-out", "leaf.pem", "-days", "2", "-extfile", "srv.ext",
                 cwd=d)
        _openssl("genrsa", "-out", "other.key", "2048", cwd=d)
        (d / "chain.pem").write_bytes((d / "leaf.pem").read_bytes() + (d / "int.pem").read_bytes())
        self.ca = d / "ca.pem"
        self.chain = d / "chain.pem"
        self.leaf = d / "leaf.pem"
        self.key = d / "server.key"
        self.other_key = d / "other.key"

    def client_context(self):
        """Trusts the root and, so that a server given only its leaf certificate can
        still be reached, the intermediate too."""
        ctx = ssl.create_default_context(cafile=str(self.ca))
        ctx.load_verify_locations(cafile=str(self.dir / "int.pem"))
        return ctx


@pytest.fixture
def trust_ca(monkeypatch):
    """trust(certs): makes every default SSL context of this process (the websockets
    client's among them) trust the test CA, through OpenSSL's SSL_CERT_FILE."""
    def trust(certs):
        monkeypatch.setenv("SSL_CERT_FILE", str(certs.ca))
    return trust


# ---- servers ------------------------------------------------------------------------

class TlsServer(Server):
    """A conftest Server whose port speaks HTTPS/WSS (CertFile and KeyFile set)."""

    def __init__(self, root, name, extra, certs):
        self.certs = certs
        super().__init__(root, name, extra)

    @property
    def url(self):
        return "wss://127.0.0.1:%d/socket" % self.port

    def http(self, method, path, headers=None, body=None, timeout=5):
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout,
                                           context=self.certs.client_context())
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return r.status, r.headers, r.read()
        finally:
            conn.close()


@pytest.fixture
def make_server(request, tmp_path):
    """make(certs=None, **config) -> a started Server (TlsServer with certs). Stopped at
    the end like conftest's servers; its log is printed when the test fails."""
    if not os.path.exists(BIN):
        pytest.skip("server binary %s not built" % BIN)
    servers = []

    def make(certs=None, start=True, **extra):
        name = "srv%d" % len(servers)
        if certs is not None:
            extra.setdefault("CertFile", certs.chain)
            extra.setdefault("KeyFile", certs.key)
            s = TlsServer(tmp_path, name, extra, certs)
        else:
            s = Server(tmp_path, name, extra)
        servers.append(s)
        if start:
            s.start()
        return s

    yield make
    problems = []
    for s in servers:
        s.stop()
        problems += ["%s: %s" % (s.dir.name, p) for p in s.problems]
    rep = getattr(request.node, "rep_call", None)
    if problems or (rep is not None and rep.failed):
        for s in servers:
            sys.stderr.write(s.log_tail() + "\n")
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


def start_fails(binary, config_path, timeout=10, args=()):
    """Runs the server expecting it to refuse to start. Returns (status, output)."""
    try:
        p = subprocess.run([binary, "--config", str(config_path), *args],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError("the server started (still running after %ss) although it "
                             "should have refused" % timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace")


# ---- a full session ---------------------------------------------------------------------

async def full_session(url, doc, *, extra_headers=None):
    """INIT (create), a second client joining, APPENDs both ways with fan-out, a
    broadcast, and a fresh reader seeing the whole document. Works over any URL: ours,
    or a proxy in front of ours."""
    a = await zw.Client.open(url, name="A", extra_headers=extra_headers)
    m = await a.join(doc, mode=2, initial=b"hello")
    assert m.raw == zw.exp_append(3, 5, b""), m
    b = await zw.Client.open(url, name="B", extra_headers=extra_headers)
    m = await b.join(doc, mode=1, version=2)
    assert m.raw == zw.exp_append(2, 0, b"hello"), m
    ack = await a.append(b" world")
    assert ack.raw == zw.exp_ack(1, 11)
    m = await b.expect(zw.APPEND)
    assert m.raw == zw.exp_append(2, 5, b" world"), m
    ack = await b.append(b"!")
    assert ack.raw == zw.exp_ack(1, 12)
    m = await a.expect(zw.APPEND)
    assert m.raw == zw.exp_append(3, 11, b"!"), m
    await a.broadcast(b"cursor 1,2")
    m = await b.expect(zw.BROADCAST)
    assert m.data == b"cursor 1,2"
    # A big append split by maxMessageSize on the way out, through whatever is between.
    big = bytes(range(256)) * 800
    c = await zw.Client.open(url, name="C", extra_headers=extra_headers)
    await c.join(doc, mode=1, max_message_size=4096)
    ack = await a.append(big)
    assert ack.ack == 1
    await c.wait_length(12 + len(big))
    await b.wait_length(12 + len(big))
    for x in (a, b, c):
        await x.close()
    assert await zw.fetch_doc(url, doc) == b"hello world!" + big


# ---- background processes -------------------------------------------------------------

def wait_port(port, proc=None, timeout=10, what="process", log=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("%s exited with status %s during start-up\n%s"
                               % (what, proc.returncode, read_log(log)))
        with contextlib.suppress(OSError):
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        time.sleep(0.05)
    raise RuntimeError("%s not listening on %d within %ss\n%s" % (what, port, timeout,
                                                                 read_log(log)))


def read_log(path, limit=20000):
    if not path:
        return ""
    try:
        data = Path(path).read_bytes()[-limit:]
    except OSError:
        return "(no log %s)" % path
    return "----- %s -----\n%s" % (path, data.decode("utf-8", "replace"))


class Background:
    """A process started by a test, stopped (SIGTERM, then SIGKILL) when the test
    ends. Its own process group, so helpers it forks (nginx and apache2 workers) go
    with it."""

    def __init__(self, argv, log, cwd=None, env=None):
        self.log = Path(log)
        with open(self.log, "ab") as f:
            self.proc = subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL,
                                         stdout=f, stderr=subprocess.STDOUT,
                                         cwd=str(cwd) if cwd else None, env=env,
                                         start_new_session=True)

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=10):
        """Returns the exit status; kills the whole group if it does not stop."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # Whatever is left of the group (a worker that outlived its master).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        return self.proc.returncode


@pytest.fixture
def background(request):
    """start(argv, log, ...) -> Background, stopped at the end of the test; logs are
    printed when the test fails."""
    started = []

    def start(argv, log, **kw):
        b = Background(argv, log, **kw)
        started.append(b)
        return b

    yield start
    for b in reversed(started):
        b.stop()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for b in started:
            sys.stderr.write(read_log(b.log) + "\n")


def template(text, port):
    """A shipped snippet with the server's address 127.0.0.1:3000 moved to `port`."""
    assert "127.0.0.1:3000" in text, "snippet no longer names 127.0.0.1:3000"
    return text.replace("127.0.0.1:3000", "127.0.0.1:%d" % port)


__all__ = ["Certs", "TlsServer", "make_server", "trust_ca", "background", "full_session",
           "start_fails", "wait_port", "read_log", "template", "free_port", "CONF", "REPO",
           "BIN"]


# ---- a slow network ------------------------------------------------------------------------

class Trickle:
    """A TCP relay on loopback that forwards client -> server bytes in small pieces
    with pauses, as a real network delivers a large TLS record: in many segments.
    Runs inside the test's event loop: `async with Trickle(port) as t: t.port`."""

    def __init__(self, target_port, piece=500, pause=0.002):
        self.target_port, self.piece, self.pause = target_port, piece, pause
        self.server = None
        self.tasks = set()

    async def __aenter__(self):
        import asyncio
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        for t in self.tasks:
            t.cancel()

    async def _conn(self, cr, cw):
        import asyncio
        sr, sw = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pump(r, w, slow):
            try:
                while True:
                    data = await r.read(65536)
                    if not data:
                        break
                    if not slow:
                        w.write(data)
                        await w.drain()
                        continue
                    for i in range(0, len(data), self.piece):
                        w.write(data[i:i + self.piece])
                        await w.drain()
                        await asyncio.sleep(self.pause)
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    w.close()

        for t in (asyncio.ensure_future(pump(cr, sw, True)),
                  asyncio.ensure_future(pump(sr, cw, False))):
            self.tasks.add(t)
