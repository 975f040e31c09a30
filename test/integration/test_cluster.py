"""Several servers sharing documents through one Redis (cluster.h).

Three servers and one redis-server on loopback ports, all started and stopped here
(nginx too, for the load-balanced case). Every client checks the delivery rule
strictly (zwclient): each APPEND must start where its view ends, so a gap, duplicate
or reordering across servers fails the test at once.
"""

import asyncio
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

import zwclient as zw
from conftest import free_port
from redisutil import REDIS, Redis, wait_members, wait_numsub, wait_subscribed
from zwclient import aiotest

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
KEY_TTL_MS = 2000
CHUNK_RE = re.compile(rb"\[w(\d+):(\d+)\]\.*")

pytestmark = pytest.mark.skipif(REDIS is None, reason="redis-server not installed")


@pytest.fixture
def redis(tmp_path):
    """A private redis-server, durable (AOF, fsync always) so it can be restarted."""
    r = Redis(tmp_path).start()
    yield r
    r.stop()


@pytest.fixture
def cluster(server_factory, redis):
    """make(n, **config) -> n servers sharing the Redis."""
    def make(n=3, **extra):
        cfg = {"Database": "redis", "DbServer": "127.0.0.1:%d" % redis.port,
               "ClusterKeyTtlMs": KEY_TTL_MS}
        cfg.update(extra)
        return [server_factory(**cfg) for _ in range(n)]
    return make


async def append_until_acked(w, data, timeout=20):
    """Appends data at the end of w's view; on NACK waits for the missing bytes and
    retries; on ERROR (storage unavailable) waits and retries. Returns the offset."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        off = w.length
        await w.send_append(off, data, track=False)
        while True:
            m = await w.next(timeout=max(deadline - loop.time(), 0.1))
            if m.type in (zw.ACK, zw.ERROR):
                break
            assert m.type in (zw.APPEND_V2, zw.APPEND_V3, zw.KEY_INFO), "%s got %r" % (w.name, m)
        if m.type == zw.ACK and m.ack == 1:
            assert m.length == off + len(data), (w.name, off, m)
            w.doc += data  # untracked: the view is extended here
            return off
        if m.type == zw.ACK:  # NACK: the bytes that made the length must arrive
            await wait_at_least(w, m.length)
        else:
            await asyncio.sleep(0.2)  # storage unavailable for now
    raise AssertionError("%s: append not acknowledged within %ss" % (w.name, timeout))


async def wait_at_least(c, length, timeout=10):
    """Like Client.wait_length, but a catch-up from the store may carry several appends
    in one APPEND and so go past `length`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while c.length < length:
        m = await c.next(max(deadline - loop.time(), 0.01))
        assert m.type in (zw.APPEND_V2, zw.APPEND_V3, zw.KEY_INFO), "%s got %r" % (c.name, m)


async def wait_keys_any(c, expected, timeout=10):
    """Client.wait_keys, letting appends through as well."""
    expected = {zw.b(k): (v[0], zw.b(v[1])) for k, v in expected.items()}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while any(c.keys.get(k) != v for k, v in expected.items()):
        m = await c.next(max(deadline - loop.time(), 0.01))
        assert m.type in (zw.APPEND_V2, zw.APPEND_V3, zw.KEY_INFO), "%s got %r" % (c.name, m)


async def write_chunks(w, idx, count, rng, acked):
    for i in range(count):
        data = b"[w%d:%d]" % (idx, i) + b"." * rng.randrange(0, 20)
        await append_until_acked(w, data)
        acked.append(data)
        if rng.random() < 0.3:
            await asyncio.sleep(rng.random() * 0.005)


def check_chunks(doc, acked_by_writer):
    """Every acknowledged chunk is in the document exactly once, each writer's in order."""
    seen = {}
    pos = 0
    while pos < len(doc):
        m = CHUNK_RE.match(doc, pos)
        assert m, "unparseable document at %d: %r" % (pos, doc[pos:pos + 40])
        seen.setdefault(int(m.group(1)), []).append(m.group(0))
        pos = m.end()
    for idx, acked in acked_by_writer.items():
        got = seen.get(idx, [])
        assert got[:len(acked)] == acked, "writer %d: acknowledged chunks missing or out of order" % idx


async def race(urls, doc, n_writers=3, n_appends=40, seed=1):
    rng = random.Random(seed)
    await zw.connect(urls[0], doc, name="creator", mode=2, initial=b"")
    readers = [await zw.connect(urls[i % len(urls)], doc, name="R%d" % i, version=2 + i % 2, mode=1)
               for i in range(2 * len(urls))]
    writers = [await zw.connect(urls[i % len(urls)], doc, name="W%d" % i, version=3 - i % 2)
               for i in range(n_writers)]
    acked = {i: [] for i in range(n_writers)}
    await asyncio.gather(*(write_chunks(w, i, n_appends, random.Random(rng.random()), acked[i])
                           for i, w in enumerate(writers)))
    total = sum(len(c) for a in acked.values() for c in a)
    stored = await zw.fetch_doc(urls[-1], doc)
    assert len(stored) == total
    check_chunks(stored, acked)
    for c in readers + writers:
        await c.wait_length(len(stored), timeout=10)
        assert c.full_doc == stored, "%s differs from the stored document" % c.name
    # late joiners on every server get the same bytes
    for i, u in enumerate(urls):
        assert await zw.fetch_doc(u, doc) == stored
    return stored


@aiotest(timeout=60)
async def test_writers_on_different_servers_race(cluster):
    servers = cluster(3)
    await race([s.url for s in servers], "cl-race", n_writers=3, n_appends=40)


@aiotest(timeout=30)
async def test_broadcast_and_keys_across_servers(cluster, redis):
    s = cluster(3)
    a = await zw.connect(s[0], "cl-keys", name="A")
    b = await zw.connect(s[1], "cl-keys", name="B")
    c = await zw.connect(s[2], "cl-keys", name="C")
    wait_subscribed(redis.port, "cl-keys", 3)  # broadcasts are stored nowhere

    await a.broadcast(b"cursor 1,2")
    for x in (b, c):
        m = await x.expect(zw.BROADCAST)
        assert m.data == b"cursor 1,2"
    await a.expect_nothing(0.3)

    # client key: accepted once, announced to the others
    await a.set_key("presence", "alice", old_version=0, new_version=1, request_id=7)
    m = await a.expect(zw.SET_KEY_ACK)
    assert (m.ack, m.request_id) == (1, 7)
    await c.wait_keys({"presence": (1, "alice")})
    await b.set_key("presence", "bob", old_version=0, new_version=1, request_id=8)
    # B's refusal and the announcement of A's key travel separately: either order
    got = [await b.next(), await b.next()]
    acks = [m for m in got if m.type == zw.SET_KEY_ACK]
    assert len(acks) == 1 and (acks[0].ack, acks[0].request_id) == (0, 8), \
        "a stale version must be refused cluster-wide: %r" % got
    assert b.keys[b"presence"] == (1, b"alice")

    # session key from another server
    await b.set_key("page", "3", old_version=0, new_version=1, request_id=9, lifetime=1)
    m = await b.expect(zw.SET_KEY_ACK)
    assert m.ack == 1
    for x in (a, c):
        await x.wait_keys({"page": (1, "3")})

    # a late joiner elsewhere sees both kinds
    d = await zw.connect(s[2], "cl-keys", name="D")
    await d.wait_keys({"presence": (1, "alice"), "page": (1, "3")})

    # the owner leaves: its client key goes, empty with version + 1
    await a.close()
    for x in (b, c, d):
        await x.wait_keys({"presence": (2, "")})


async def heard(c, duration=0.5):
    """Every message c receives within `duration` (the client's view is updated)."""
    got = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + duration
    while True:
        try:
            got.append(await c.next(max(deadline - loop.time(), 0.001)))
        except AssertionError as e:
            if "no message within" in str(e):
                return got
            raise


@pytest.mark.parametrize("lifetime", [0, 1], ids=["client-key", "session-key"])
@aiotest(timeout=30)
async def test_key_changes_reach_others_once_never_the_setter(cluster, redis, lifetime):
    """PROTOCOL §4: on acceptance every *other* client gets KEY INFORMATION; the setter
    gets only its ACK (none for equal versions), wherever the others are, also while
    its server's subscription to the document is not in place yet."""
    s = cluster(2)
    doc = "cl-echo-%d" % lifetime
    setter = await zw.connect(s[0], doc, name="S")
    # at once after joining: the subscription is usually still on its way
    await setter.set_key("k", "zero", old_version=0, new_version=0, lifetime=lifetime)
    await setter.set_key("k", "one", old_version=0, new_version=1, request_id=2, lifetime=lifetime)
    assert [m.raw for m in await heard(setter)] == [zw.exp_set_key_ack(1, 2)]

    others = [await zw.connect(s[i % 2], doc, name="O%d" % i) for i in range(4)]
    wait_subscribed(redis.port, doc, 2)
    # at join, or when its server's snapshot came: once
    for o, got in zip(others, await asyncio.gather(*(heard(o) for o in others))):
        assert [m.raw for m in got] == [zw.exp_key_info([(1, "k", "one")])], o.name

    await setter.set_key("k", "two", old_version=1, new_version=2, request_id=3, lifetime=lifetime)
    await setter.set_key("k", "two'", old_version=2, new_version=2, lifetime=lifetime)
    got = await asyncio.gather(*(heard(c) for c in [setter] + others))
    assert [m.raw for m in got[0]] == [zw.exp_set_key_ack(1, 3)]
    for o, msgs in zip(others, got[1:]):  # both, or only the newer (updates may be coalesced)
        assert [m.raw for m in msgs] in (
            [zw.exp_key_info([(2, "k", "two")]), zw.exp_key_info([(2, "k", "two'")])],
            [zw.exp_key_info([(2, "k", "two'")])]), o.name

    # another client's change reaches the first setter, once
    await others[1].set_key("k", "three", old_version=2, new_version=3, request_id=4, lifetime=lifetime)
    everyone = [others[1], setter] + others[:1] + others[2:]
    got = await asyncio.gather(*(heard(c) for c in everyone))
    assert [m.raw for m in got[0]] == [zw.exp_set_key_ack(1, 4)]
    for o, msgs in zip(everyone[1:], got[1:]):
        assert [m.raw for m in msgs] == [zw.exp_key_info([(3, "k", "three")])], o.name


@aiotest(timeout=60)
async def test_server_killed(cluster, redis):
    s = cluster(3)
    doc = "cl-kill"
    w0 = await zw.connect(s[0], doc, name="W0", mode=2)
    r0 = await zw.connect(s[0], doc, name="R0", mode=1)
    w1 = await zw.connect(s[1], doc, name="W1")
    r2 = await zw.connect(s[2], doc, name="R2", mode=1)
    wait_subscribed(redis.port, doc, 3)
    await w0.set_key("lock", "w0", old_version=0, new_version=5)
    await w0.expect(zw.SET_KEY_ACK)
    for x in (w1, r2):
        await x.wait_keys({"lock": (5, "w0")})
    for i in range(10):
        await append_until_acked(w0, b"<a%d>" % i)
        await append_until_acked(w1, b"<b%d>" % i)
    acked_w0 = bytes(w0.doc)

    s[0].kill()
    killed_at = time.monotonic()
    # its clients reconnect elsewhere with what they have and lose nothing
    w0b = await zw.connect(s[1], doc, name="W0b", offset=len(acked_w0), known=acked_w0)
    r0b = await zw.connect(s[2], doc, name="R0b", offset=r0.length, known=bytes(r0.doc))
    await append_until_acked(w0b, b"<after>")
    stored = await zw.fetch_doc(s[2], doc)
    assert stored.startswith(acked_w0)
    for x in (w0b, r0b, w1, r2):
        await x.wait_length(len(stored), allow=(zw.APPEND_V2, zw.APPEND_V3, zw.KEY_INFO))
        assert x.full_doc == stored
    # its client keys vanish for the others within the bound
    for x in (w1, r2):
        await x.wait_keys({"lock": (6, "")}, timeout=KEY_TTL_MS / 1000 + 5)
    elapsed = time.monotonic() - killed_at
    assert elapsed < KEY_TTL_MS / 1000 + 1.0, "client keys of a dead server took %.1fs to go" % elapsed


@aiotest(timeout=90)
async def test_redis_restart(cluster, redis):
    s = cluster(2)
    doc = "cl-redis"
    w0 = await zw.connect(s[0], doc, name="W0", mode=2)
    w1 = await zw.connect(s[1], doc, name="W1")
    readers = [await zw.connect(s[i % 2], doc, name="R%d" % i, mode=1) for i in range(4)]
    acked = {0: [], 1: []}
    rng = random.Random(5)
    await asyncio.gather(write_chunks(w0, 0, 10, rng, acked[0]), write_chunks(w1, 1, 10, rng, acked[1]))

    await w1.set_key("presence", "w1", old_version=0, new_version=1)
    while (await w1.next()).type != zw.SET_KEY_ACK:
        pass
    await wait_keys_any(w0, {"presence": (1, "w1")})

    redis.stop()
    await asyncio.sleep(1.5)  # an outage longer than the liveness key lives (ClusterKeyTtlMs / 2)
    redis.start()
    # sessions recover: the same connections go on writing
    await asyncio.gather(write_chunks(w0, 0, 10, rng, acked[0]), write_chunks(w1, 1, 10, rng, acked[1]))
    stored = await zw.fetch_doc(s[1], doc)
    check_chunks(stored, acked)
    assert len(stored) == sum(len(c) for a in acked.values() for c in a)
    for x in readers + [w0, w1]:
        await x.wait_length(len(stored), timeout=15, allow=(zw.APPEND_V2, zw.APPEND_V3, zw.KEY_INFO))
        assert x.full_doc == stored
    # a live server is not taken for dead because Redis was away: its keys stay
    await asyncio.sleep(KEY_TTL_MS / 1000)
    for x in readers + [w0]:
        while True:
            try:
                m = await x.next(timeout=0.05)
            except AssertionError:
                break
            assert m.type == zw.KEY_INFO, (x.name, m)
        assert x.keys.get(b"presence") == (1, b"w1"), (x.name, x.keys)


def start_nginx(root, ports):
    d = Path(root) / "nginx"
    (d / "tmp").mkdir(parents=True)
    port = free_port()
    upstream = "".join("        server 127.0.0.1:%d;\n" % p for p in ports)
    conf = d / "nginx.conf"
    conf.write_text("""
worker_processes 1;
daemon off;
pid %(d)s/nginx.pid;
error_log %(d)s/error.log;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path %(d)s/tmp/body;
    proxy_temp_path %(d)s/tmp/proxy;
    fastcgi_temp_path %(d)s/tmp/fastcgi;
    uwsgi_temp_path %(d)s/tmp/uwsgi;
    scgi_temp_path %(d)s/tmp/scgi;
    upstream zwibbler {
%(upstream)s    }
    server {
        listen 127.0.0.1:%(port)d;
        location /socket {
            proxy_pass http://zwibbler;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 3600s;
            proxy_buffering off;
        }
    }
}
""" % {"d": d, "upstream": upstream, "port": port})
    proc = subprocess.Popen([NGINX, "-p", str(d), "-e", str(d / "error.log"), "-c", str(conf)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=open(d / "stderr.log", "wb"))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("nginx exited: %s" % (d / "stderr.log").read_text())
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("nginx did not start")


@pytest.mark.skipif(NGINX is None, reason="nginx not installed")
def test_through_nginx(cluster, tmp_path):
    servers = cluster(3)
    proc, port = start_nginx(tmp_path, [s.port for s in servers])
    try:
        url = "ws://127.0.0.1:%d/socket" % port
        zw.run(race([url] * 3, "cl-nginx", n_writers=3, n_appends=25, seed=3), timeout=60)
    finally:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@aiotest(timeout=40)
async def test_idle_webhook_once_cluster_wide(cluster, redis):
    from test_webhook import Listener, form, wait_request
    lst = Listener()
    try:
        s = cluster(3, Webhook=lst.url, WebhookDelayMs=800)
        a = await zw.connect(s[0], "cl-idle", name="A")
        b = await zw.connect(s[1], "cl-idle", name="B")
        wait_members(redis.port, "cl-idle", 2)
        await a.close()
        assert await wait_request(lst, 1.5) is None, "a client is still on another server"
        await b.close()
        req = await wait_request(lst, 4)
        assert req is not None, "no idle webhook after the last client anywhere left"
        assert form(req) == {"event": ["idle-session"], "documentID": ["cl-idle"]}
        assert await wait_request(lst, 1.5) is None, "the idle webhook must fire once"

        # a joiner on another server cancels the event scheduled by the first
        c = await zw.connect(s[2], "cl-idle", name="C")
        wait_members(redis.port, "cl-idle", 1)
        await c.close()
        wait_members(redis.port, "cl-idle", 0)  # C's server has scheduled the event
        d = await zw.connect(s[0], "cl-idle", name="D")
        assert await wait_request(lst, 1.5) is None, "a rejoin elsewhere must cancel the webhook"
        await d.close()
        req = await wait_request(lst, 4)
        assert req is not None and form(req)["documentID"] == ["cl-idle"]
        assert await wait_request(lst, 1.2) is None
    finally:
        lst.close()


@aiotest(timeout=30)
async def test_management_api_reaches_every_server(cluster, redis):
    import mgmtapi as api
    s = cluster(2, **api.SECRETS)
    a = await zw.connect(s[0], "cl-del", name="A", initial=b"x")
    b = await zw.connect(s[1], "cl-del", name="B")
    wait_subscribed(redis.port, "cl-del", 2)
    assert api.status(s[0], {"method": "deleteDocument", "documentID": "cl-del"}) == 200
    for c in (a, b):
        errors = await c.expect_closed()
        assert [m.raw for m in errors] == [zw.exp_error(1)], (c.name, errors)

    # updateUser: a connection on another server that loses 'r' is closed
    assert api.add_token(s[0], "cl-tok", "cl-user-doc", "carol", "rw", contents="hi") == 200
    c = await zw.connect(s[1], "cl-tok", name="C")  # joined once connect returns
    wait_numsub(redis.port, "zwibbler-cluster", 2)  # both hear cluster-wide events
    assert api.update_user(s[0], "carol", "w") == 200
    errors = await c.expect_closed()
    assert [m.raw for m in errors] == [zw.exp_error(4)], errors
