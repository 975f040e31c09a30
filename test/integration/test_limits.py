"""Limits with clear errors: the largest inbound message, document id, key
name and value, management-API body, and the number of connections (HTTP 503 beyond
it). Defaults as documented in docs/configuration.md; each limit is checked at its edge (the
limit itself is accepted, one byte more is refused) with what the client sees and
what the log says.
"""

import asyncio
import base64
import http.client
import subprocess
import urllib.parse

import pytest
from websockets.exceptions import ConnectionClosed

import zwclient as zw
from conftest import BIN
from rawws import RawWS
from test_cluster import REDIS, Redis
from zwclient import aiotest


def log_text(server):
    return server.log_path.read_bytes().decode("utf-8", "replace")


async def wait_log(server, needle, timeout=5):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while needle not in log_text(server):
        if loop.time() > deadline:
            raise AssertionError("log lacks %r:\n%s" % (needle, log_text(server)[-3000:]))
        await asyncio.sleep(0.05)


# ---- MaxMessageBytes ---------------------------------------------------------------

INIT3_HEADER = 2 + 2 + 4 + 1 + 4 + 8 + 4  # INIT (protocol 3) before docId


@aiotest(timeout=60)
async def test_default_max_message_is_16_mib(server_factory):
    server = server_factory(MaxConnections=16)
    limit = 16 << 20
    doc = b"big"
    initial = b"i" * (limit - INIT3_HEADER - len(doc))
    a = await zw.connect(server, name="A")
    await a.send_init(doc, version=3, mode=2, initial=initial, max_message_size=1 << 20)
    m = await a.expect(zw.APPEND, timeout=30)
    assert m.offset == len(initial)  # created, exactly 16 MiB on the wire
    victim = await zw.connect(server, name="victim")
    try:
        await victim.send_init(b"big2", version=3, mode=2, initial=initial + b"ii")
    except ConnectionClosed:
        pass  # refused from the frame header, possibly before all of it was sent
    await victim.expect_closed(timeout=30)
    await wait_log(server, "over the limit of 16777216 bytes")
    # The one that fitted is intact; the other was never created.
    assert await zw.fetch_doc(server, "big2") is None
    off = a.length
    await a.append(b"still here")
    assert off == len(initial)


@aiotest(timeout=30)
async def test_max_message_counts_reassembled_continuations(server_factory):
    """The limit is on the logical message: pieces that each fit but together pass it
    close the connection (reassembly stops at the limit)."""
    server = server_factory(MaxConnections=16, MaxMessageBytes="4K")
    a = await zw.connect(server, "doc", name="A", mode=0, initial=b"")
    ok = zw.enc_append(0, b"o" * (4096 - 14))
    await a.send_split(ok, 1000)
    m = await a.expect(zw.ACK)
    assert m.ack == 1 and m.length == 4096 - 14
    victim = await zw.connect(server, "doc", name="victim", mode=1, offset=0)
    await victim.send_split(zw.enc_append(m.length, b"x" * (4096 - 13)), 1000)
    await victim.expect_closed()
    await wait_log(server, "message too big")


# ---- MaxDocIdBytes -----------------------------------------------------------------

@pytest.mark.parametrize("limit", [None, 20])
@aiotest(timeout=30)
async def test_max_doc_id(server_factory, limit):
    extra = {"MaxConnections": 16}
    if limit:
        extra["MaxDocIdBytes"] = limit
    server = server_factory(**extra)
    n = limit or 65536
    a = await zw.connect(server, "d" * n, name="A", mode=0, initial=b"fits")
    assert a.created
    victim = await zw.connect(server, name="victim")
    await victim.send_init("d" * (n + 1), mode=0)
    errors = await victim.expect_closed()
    assert [e.raw for e in errors] == [zw.exp_error(0, "document id is too long")], errors
    await wait_log(server, "document id of %d bytes, MaxDocIdBytes is %d" % (n + 1, n))
    empty = await zw.connect(server, name="empty")
    await empty.send_init("", mode=0)
    errors = await empty.expect_closed()
    assert [e.raw for e in errors] == [zw.exp_error(0, "document id is empty")], errors


BACKENDS = ["lmdb", "sqlite"] + (["redis"] if REDIS else [])


@pytest.mark.parametrize("backend", BACKENDS)
@aiotest(timeout=60)
async def test_long_doc_ids(server_factory, tmp_path, backend):
    """Ids of any length up to 64 KiB (protocol 3: docIdLength is u32) work on every
    backend: create, appends relayed, keys, reconnect after a restart and catch up; two
    such ids sharing all but their last byte are two documents."""
    redis = None
    extra = {"Database": backend}
    if backend == "redis":
        redis = Redis(tmp_path)
        redis.start()
        extra["DbServer"] = "127.0.0.1:%d" % redis.port
    try:
        server = server_factory(**extra)
        doc = "L" * 65535 + "a"
        twin = "L" * 65535 + "b"
        a = await zw.connect(server, doc, name="A", version=3, mode=0, initial=b"hello")
        assert a.created
        b = await zw.connect(server, doc, name="B", version=3, mode=1)
        await a.append(b" world")
        await b.wait_length(11)
        await a.set_key("page", "2", old_version=0, new_version=1, lifetime=1)
        await a.expect(zw.SET_KEY_ACK)
        await b.wait_keys({"page": (1, "2")})
        t = await zw.connect(server, twin, name="T", version=3, mode=0, initial=b"twin")
        assert t.created
        await t.expect_nothing(0.2)  # no keys of the other document
        for c in (a, b, t):
            await c.close()
        server.restart()
        c = await zw.connect(server, name="C")
        await c.send_init(doc, version=3, mode=1, offset=5, known=b"hello")
        await c.expect_raw(zw.exp_append(3, 5, b" world"))
        await c.wait_keys({"page": (1, "2")})
        await c.append(b"!")
        assert await zw.fetch_doc(server, doc) == b"hello world!"
        assert await zw.fetch_doc(server, twin) == b"twin"
    finally:
        if redis:
            redis.stop()


# ---- MaxKeyNameBytes, MaxKeyValueBytes ----------------------------------------------

@pytest.mark.parametrize("lifetime", [0, 1], ids=["client-key", "session-key"])
@pytest.mark.parametrize("config", [{}, {"MaxKeyNameBytes": 8, "MaxKeyValueBytes": 16}],
                         ids=["defaults", "configured"])
@aiotest(timeout=30)
async def test_key_limits(server_factory, lifetime, config):
    server = server_factory(MaxConnections=16, **config)
    name_max = config.get("MaxKeyNameBytes", 256)
    value_max = config.get("MaxKeyValueBytes", 65536)
    a = await zw.connect(server, "keys", name="A", mode=0)
    b = await zw.connect(server, "keys", name="B", mode=1)
    # At the limits: accepted and relayed.
    await a.set_key("n" * name_max, "v" * value_max, old_version=0, new_version=1,
                    request_id=1, lifetime=lifetime)
    await a.expect_raw(zw.exp_set_key_ack(1, 1))
    await b.wait_keys({"n" * name_max: (1, "v" * value_max)})
    # One byte over either: rejected (ack 0), nothing relayed, connection kept.
    await a.set_key("m" * (name_max + 1), "v", old_version=0, new_version=1, request_id=2,
                    lifetime=lifetime)
    await a.expect_raw(zw.exp_set_key_ack(0, 2))
    await wait_log(server, "SET KEY rejected: name of %d bytes (MaxKeyNameBytes %d), value of 1 "
                           "bytes (MaxKeyValueBytes %d)" % (name_max + 1, name_max, value_max))
    await a.set_key("k", "w" * (value_max + 1), old_version=0, new_version=1, request_id=3,
                    lifetime=lifetime)
    await a.expect_raw(zw.exp_set_key_ack(0, 3))
    await b.expect_nothing(0.2)
    await wait_log(server, "SET KEY rejected: name of 1 bytes (MaxKeyNameBytes %d), value of %d "
                           "bytes (MaxKeyValueBytes %d)" % (name_max, value_max + 1, value_max))
    await a.append(b"connection kept")


# ---- MaxApiBodyBytes -----------------------------------------------------------------

def api_post(server, fields, *, user="admin", password="s3cret", body=None, headers=None):
    h = {"Content-Type": "application/x-www-form-urlencoded"}
    if user is not None:
        h["Authorization"] = "Basic " + base64.b64encode(
            ("%s:%s" % (user, password)).encode()).decode()
    h.update(headers or {})
    if body is None:
        body = urllib.parse.urlencode(fields).encode()
    return server.http("POST", "/socket", headers=h, body=body, timeout=10)


def test_max_api_body(server_factory):
    server = server_factory(MaxConnections=16, SecretUser="admin", SecretPassword="s3cret",
                            MaxApiBodyBytes="2K")
    status, _, _ = api_post(server, {"method": "createDocument", "documentID": "small",
                                     "contents": "c" * 1000})
    assert status == 200
    status, _, body = api_post(server, {"method": "createDocument", "documentID": "large",
                                        "contents": "c" * 3000})
    assert status == 413, (status, body)
    status, _, _ = api_post(server, {"method": "checkDocument", "documentID": "large"})
    assert status == 404
    # A huge announced body is refused without being read.
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.putrequest("POST", "/socket")
        conn.putheader("Content-Type", "application/x-www-form-urlencoded")
        conn.putheader("Authorization", "Basic " + base64.b64encode(b"admin:s3cret").decode())
        conn.putheader("Content-Length", str(10 << 30))
        conn.endheaders()
        conn.send(b"method=createDocument&documentID=x&contents=")
        r = conn.getresponse()
        assert r.status == 413, r.status
    finally:
        conn.close()


# ---- MaxConnections ------------------------------------------------------------------

@aiotest(timeout=40)
async def test_max_connections_gives_503(server_factory):
    server = server_factory(MaxConnections=5)
    clients = [await zw.connect(server, "conn-doc", name="c%d" % i, mode=0) for i in range(5)]
    # The sixth upgrade is answered with 503, at once (not queued).
    ws = await RawWS.connect(server.port, upgrade=False)
    status, head = await ws.handshake()
    assert status == 503, head
    assert b"Retry-After" in head
    await ws.close()
    await wait_log(server, "MaxConnections is 5")
    # Plain HTTP still works (health checks must get through when full).
    assert server.http("GET", "/socket?ping")[0] == 200
    # The five are unaffected.
    off = clients[0].length
    await clients[0].append(b"x")
    for c in clients[1:]:
        await c.expect_raw(zw.exp_append(3, off, b"x"))
    # When one leaves, a new connection is accepted again.
    await clients[4].close()
    for _ in range(100):
        ws = await RawWS.connect(server.port, upgrade=False)
        status, _ = await ws.handshake()
        await ws.close()
        if status == 101:
            break
        await asyncio.sleep(0.05)
    assert status == 101


# ---- bad values are start-up errors naming the key -----------------------------------

@pytest.mark.parametrize("line,key", [
    ("MaxMessageBytes=lots", "MaxMessageBytes"),
    ("MaxMessageBytes=100", "MaxMessageBytes"),
    ("MaxDocIdBytes=17M", "MaxDocIdBytes"),
    ("MaxDocIdBytes=0", "MaxDocIdBytes"),
    ("MaxKeyValueBytes=1G", "MaxKeyValueBytes"),
    ("MaxApiBodyBytes=-1", "MaxApiBodyBytes"),
    ("MaxConnections=0", "MaxConnections"),
    ("SendQueueBytes=1", "SendQueueBytes"),
    ("ReadTimeoutMs=forever", "ReadTimeoutMs"),
    ("InitTimeoutMs=5", "InitTimeoutMs"),
])
def test_bad_limit_is_a_startup_error(tmp_path, line, key):
    conf = tmp_path / "bad.conf"
    conf.write_text("ServerBindAddress=127.0.0.1\nServerPort=1\nDataDir=%s\n%s\n"
                    % (tmp_path, line))
    r = subprocess.run([BIN, "--config", str(conf)], capture_output=True, timeout=20)
    assert r.returncode != 0
    err = r.stderr.decode()
    assert key in err and "bad.conf:4" in err, err
