"""Private redis-server processes for the tests (plain, replica or Sentinel), on free
loopback ports, and a minimal RESP client to look inside them. No redis-py needed."""

import shutil
import socket
import subprocess
import time
from pathlib import Path

from conftest import free_port

REDIS = shutil.which("redis-server")


def _encode(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class RespError(Exception):
    pass


class Conn:
    """One RESP connection: call(*args) -> bytes / int / list / None; raises RespError
    for an error reply and OSError when the server is unreachable."""

    def __init__(self, port, timeout=5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout)
        self.sock.settimeout(timeout)
        self.buf = b""

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise OSError("connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise OSError("connection closed")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def read(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RespError(rest.decode("utf-8", "replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise OSError("bad RESP reply %r" % line)

    def call(self, *args):
        self.sock.sendall(_encode(args))
        return self.read()


def call(port, *args, timeout=5.0):
    with Conn(port, timeout) as c:
        return c.call(*args)


class Redis:
    """A private redis-server. Durable by default (AOF, fsync always) so that it can
    be restarted; `extra` adds command-line options (e.g. ["--replicaof", ...]);
    sentinel=True starts `redis-server <conf> --sentinel` with `sentinel_conf` lines."""

    def __init__(self, root, name="redis", extra=(), sentinel_conf=None, durable=True):
        self.dir = Path(root) / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.extra = list(extra)
        self.durable = durable
        self.sentinel_conf = sentinel_conf
        self.proc = None

    def argv(self):
        if self.sentinel_conf is not None:
            conf = self.dir / "sentinel.conf"
            if not conf.exists():  # Sentinel rewrites it: written once
                conf.write_text("port %d\nbind 127.0.0.1\ndir %s\n%s\n"
                                % (self.port, self.dir, "\n".join(self.sentinel_conf)))
            return [REDIS, str(conf), "--sentinel"]
        return [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "yes" if self.durable else "no", "--appendfsync", "always",
                "--dir", str(self.dir)] + self.extra

    def start(self, timeout=10):
        log = open(self.dir / "redis.log", "ab")
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("redis-server exited: %s" % self.log_tail())
            try:
                if call(self.port, "PING", timeout=0.5) == b"PONG":
                    return self
            except (OSError, RespError):
                pass
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def call(self, *args, timeout=5.0):
        return call(self.port, *args, timeout=timeout)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is None:
            return
        p, self.proc = self.proc, None
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def kill(self):
        if self.proc is None:
            return
        p, self.proc = self.proc, None
        if p.poll() is None:
            p.kill()
        p.wait()

    def log_tail(self, limit=4000):
        try:
            data = (self.dir / "redis.log").read_bytes()[-limit:]
        except OSError:
            return "(no log)"
        return data.decode("utf-8", "replace")


def wait_until(fn, what, timeout=10, step=0.01):
    """Polls fn() until it returns a true value (returned); fails naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.0fs waiting for %s" % (timeout, what))
        time.sleep(step)


def _b(s):
    return s if isinstance(s, bytes) else s.encode()


def wait_numsub(port, channel, count, timeout=10):
    """Waits until `channel` has at least `count` subscribers (PUBSUB NUMSUB)."""
    wait_until(lambda: int(call(port, "PUBSUB", "NUMSUB", channel)[1]) >= count,
               "%d subscribers of %r" % (count, channel), timeout)


def wait_subscribed(port, doc_id, count, timeout=10):
    """Waits until `count` servers are subscribed to the document's cluster channel:
    from then on each of them hears what the others announce for it."""
    wait_numsub(port, b"zwibbler-ch:" + _b(doc_id), count, timeout)


def wait_members(port, doc_id, count, timeout=10):
    """Waits until exactly `count` servers have the document among their live ones
    (its cluster membership set, which drives the idle webhook)."""
    key = b"zwibbler-members:" + _b(doc_id)
    wait_until(lambda: call(port, "SCARD", key) == count,
               "%d servers in %r" % (count, key), timeout)
