"""The embedding API (server/app/zwibbler.h): the example program in test/embed/ runs its
own CivetWeb server, mounts the endpoint at /collab and stores documents in a backend
it implements itself. A whole session goes through it."""
import os
import signal
import subprocess
import time
import urllib.request

import pytest

import zwclient as zw
from conftest import free_port

EXAMPLE = os.environ.get("EMBED_EXAMPLE")


@pytest.fixture
def example():
    if not EXAMPLE:
        pytest.fail("EMBED_EXAMPLE is not set (make integration builds and sets it)")
    port = free_port()
    p = subprocess.Popen([EXAMPLE, str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = "http://127.0.0.1:%d" % port
    deadline = time.time() + 10
    while True:
        try:
            urllib.request.urlopen(base + "/", timeout=1).read()
            break
        except OSError:
            if p.poll() is not None or time.time() > deadline:
                p.kill()
                raise AssertionError("example did not start: %r" % p.stdout.read())
            time.sleep(0.05)
    yield base
    p.send_signal(signal.SIGTERM)
    try:
        rc = p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        raise AssertionError("example did not stop on SIGTERM")
    out = p.stdout.read().decode(errors="replace")
    assert rc == 0, "example exited with %s: %s" % (rc, out)


def get(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.status, r.read()


def test_host_routes_and_mounted_endpoint(example):
    assert get(example + "/") == (200, b"my app, with a whiteboard server\n")
    assert get(example + "/collab") == (200, b"Zwibbler collaboration Server is running.")
    # ?ping asks the example's own backend
    assert get(example + "/collab?ping") == (200, b"OK")
    # the pages follow the mount point
    status, body = get(example + "/collab/test")
    assert status == 200 and b"self-test" in body


@zw.aiotest()
async def _session(url):
    a = await zw.connect(url, "doc", name="A", mode=2, initial=b"hello")
    b = await zw.connect(url, "doc", name="B", mode=1)
    assert b.full_doc == b"hello"
    m = await a.append(b", world")
    assert m.ack == 1 and m.length == 12
    await b.wait_length(12)
    assert b.full_doc == b"hello, world"
    await a.set_key("page", b"2", old_version=0, new_version=1, lifetime=1)
    m = await a.expect(zw.SET_KEY_ACK)
    assert m.ack == 1
    await b.wait_keys({"page": (1, b"2")})
    # a stale offset is refused by the example's compare-and-append
    await a.send_append(5, b"x", track=False)
    m = await a.expect(zw.ACK)
    assert m.ack == 0 and m.length == 12
    assert await zw.fetch_doc(url, "doc") == b"hello, world"


def test_session_through_custom_backend(example):
    _session(example.replace("http://", "ws://") + "/collab")
