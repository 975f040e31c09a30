"""docs/protocol.md, Framing and continuations: continuation messages in both directions, byte-exact."""

import os

import pytest

import zwclient as zw
from zwclient import aiotest, exp_ack, exp_append, split

versions = pytest.mark.parametrize("v", [2, 3])

HDR = {2: 10, 3: 14}  # APPEND header size per protocol version


def blob(n, seed=0):
    """Deterministic non-repeating-ish bytes."""
    out = bytearray()
    i = seed
    while len(out) < n:
        out += b"%08x|" % (i * 2654435761 & 0xFFFFFFFF)
        i += 1
    return bytes(out[:n])


# ---- client -> server ----

@versions
@aiotest()
async def test_client_split_append(server, v):
    a = await zw.connect(server, "doc", name="A", version=v, mode=2, initial=b"")
    b = await zw.connect(server, "doc", name="B", version=v, mode=1)
    data = blob(5000)
    frames = split(zw.enc_append(0, data, version=v), 1000)
    assert len(frames) == 6 and frames[1][0] == 0xFF
    for f in frames:
        await a.send_raw(f)
    await a.expect_raw(exp_ack(1, 5000))
    await b.expect_raw(exp_append(v, 0, data))
    # pieces of very different sizes, down to 1 payload byte
    data2 = blob(777, seed=99)
    msg = zw.enc_append(5000, data2, version=v)
    pieces = [bytes([msg[0], 1]) + msg[2:5]]
    pos = 5
    for size in (1, 1, 3, 100, 1):
        pieces.append(b"\xff\x01" + msg[pos:pos + size])
        pos += size
    pieces.append(b"\xff\x00" + msg[pos:])
    for p in pieces:
        await a.send_raw(p)
    await a.expect_raw(exp_ack(1, 5777))
    await b.expect_raw(exp_append(v, 5000, data2))
    assert await zw.fetch_doc(server, "doc") == data + data2


@versions
@aiotest()
async def test_client_split_init(server, v):
    initial = blob(2000, seed=5)
    a = await zw.connect(server, name="A")
    a.version, a.max_message_size = v, 0
    a._init = (0, initial, b"")
    for f in split(zw.enc_init("split-init", version=v, mode=2, initial=initial), 300):
        await a.send_raw(f)
    await a.expect_raw(exp_append(v, 2000, b""))
    assert await zw.fetch_doc(server, "split-init") == initial
    ack = await a.append(b"more")
    assert ack.raw == exp_ack(1, 2004)


@aiotest()
async def test_client_split_set_key_and_broadcast(server):
    a = await zw.connect(server, "doc", name="A", version=3, mode=0)
    b = await zw.connect(server, "doc", name="B", version=2, mode=1)
    value = blob(3000, seed=7)
    for f in split(zw.enc_set_key("big", value, old_version=0, new_version=1, request_id=9), 500):
        await a.send_raw(f)
    await a.expect_raw(zw.exp_set_key_ack(1, 9))
    await b.expect_raw(zw.exp_key_info([(1, "big", value)]))
    payload = blob(2500, seed=8)
    for f in split(zw.enc_broadcast(payload), 256):
        await a.send_raw(f)
    # relayed as one logical message, re-split (or not) for the receiver
    await b.expect_raw(zw.enc_broadcast(payload))
    await a.expect_nothing(0.2)


@aiotest()
async def test_client_split_broadcast_resplit_for_receiver(server):
    a = await zw.connect(server, "doc", name="A", version=3, mode=0)
    b = await zw.connect(server, "doc", name="B", version=3, mode=1, max_message_size=1000)
    payload = blob(3000, seed=3)
    for f in split(zw.enc_broadcast(payload), 1024):
        await a.send_raw(f)
    m = await b.expect_raw(zw.enc_broadcast(payload))
    assert m.frames == split(zw.enc_broadcast(payload), 1000)


# ---- server -> client ----

@versions
@aiotest()
async def test_server_split_catchup_and_appends_max_1000(server, v):
    doc = blob(5000, seed=1)
    a = await zw.connect(server, "doc", name="A", version=v, mode=2, initial=doc,
                         max_message_size=1000)
    b = await zw.connect(server, name="B")
    await b.send_init("doc", version=v, mode=1, offset=0, max_message_size=1000)
    await b.expect_raw(exp_append(v, 0, doc))
    assert b.frames == split(exp_append(v, 0, doc), 1000)
    assert len(b.frames) == 6

    # boundary sizes around maxMessageSize for the relayed APPEND
    h = HDR[v]
    for n in (1000 - h, 1000 - h + 1, 1998 - h, 1998 - h + 1, 2500, 10, 1):
        data = blob(n, seed=n)
        off = a.length
        m = await a.append(data)
        # ACKs (12 bytes) go out whole, byte 1 = 0
        assert m.raw == exp_ack(1, off + n) and m.frames == [m.raw]
        m = await b.expect_raw(exp_append(v, off, data))
        assert m.frames == split(exp_append(v, off, data), 1000), "data length %d" % n
    assert b.full_doc == a.full_doc == await zw.fetch_doc(server, "doc")


@versions
@aiotest()
async def test_server_split_key_information(server, v):
    a = await zw.connect(server, "doc", name="A", version=v, mode=0)
    b = await zw.connect(server, "doc", name="B", version=v, mode=1, max_message_size=1000)
    value = blob(2345, seed=4)
    await a.set_key("big", value, old_version=0, new_version=1, request_id=1)
    await a.expect_raw(zw.exp_set_key_ack(1, 1))
    m = await b.expect_raw(zw.exp_key_info([(1, "big", value)]))
    expected = split(zw.exp_key_info([(1, "big", value)]), 1000)
    assert m.frames == expected
    # and to a joiner
    c = await zw.connect(server, name="C")
    await c.send_init("doc", version=v, mode=1, offset=0, max_message_size=1000)
    await c.expect_raw(exp_append(v, 0, b""))
    m = await c.expect_raw(zw.exp_key_info([(1, "big", value)]))
    assert m.frames == expected


@versions
@aiotest(timeout=30)
async def test_server_split_default_size_large_document(server, v):
    doc = os.urandom(350_000)
    a = await zw.connect(server, "big", name="A", version=v, mode=2, initial=doc)
    # maxMessageSize 0 -> 102400
    b = await zw.connect(server, name="B")
    await b.send_init("big", version=v, mode=1, offset=0, max_message_size=0)
    await b.expect_raw(exp_append(v, 0, doc), timeout=10)
    expected = split(exp_append(v, 0, doc), 102400)
    assert len(expected) == 4
    assert [len(f) for f in b.frames] == [len(f) for f in expected]
    assert b.frames == expected
    # from an offset in the middle
    c = await zw.connect(server, name="C")
    await c.send_init("big", version=v, mode=1, offset=123_457, known=doc[:123_457])
    await c.expect_raw(exp_append(v, 123_457, doc[123_457:]), timeout=10)
    assert c.frames == split(exp_append(v, 123_457, doc[123_457:]), 102400)
    # a relayed append larger than 100 KiB is split too
    more = os.urandom(150_000)
    await a.send_append(350_000, more)
    await a.expect_raw(exp_ack(1, 500_000), timeout=10)
    m = await b.expect_raw(exp_append(v, 350_000, more), timeout=10)
    assert m.frames == split(exp_append(v, 350_000, more), 102400)
    # a client asking for big messages gets it whole
    d = await zw.connect(server, name="D")
    await d.send_init("big", version=v, mode=1, offset=0, max_message_size=1_000_000)
    await d.expect_raw(exp_append(v, 0, doc + more), timeout=10)
    assert len(d.frames) == 1 and d.frames[0][1] == 0
    assert await zw.fetch_doc(server, "big") == doc + more


@versions
@pytest.mark.parametrize("mode,doc,code", [
    (1, "missing", 1),          # never create, missing -> ERROR 1 does not exist
    (2, "exists", 2),           # always create, exists -> ERROR 2 already exists
    (1, "exists-offset", 3),    # offset past the end -> ERROR 3 invalid offset
])
@aiotest()
async def test_server_split_refusal_error(server, v, mode, doc, code):
    """An ERROR refusing an INIT is split per the client's maxMessageSize too."""
    if doc.startswith("exists"):
        c = await zw.connect(server, doc, name="creator", version=v, mode=2, initial=b"abc")
        await c.close()
    c = await zw.connect(server, name="A")
    await c.send_init(doc, version=v, mode=mode, offset=99 if code == 3 else 0,
                      max_message_size=10)
    m = await c.expect_raw(zw.exp_error(code))
    assert m.frames == split(zw.exp_error(code), 10)
    assert len(m.frames[0]) == 10 and m.frames[0][1] == 1 and len(m.frames) >= 2
    await c.expect_closed()


# ---- protocol errors ----

@pytest.mark.parametrize("bad", [b"\xff\x00abc", b"\xff\x01abc", b"\xff\x00"],
                         ids=["cont-final", "cont-more", "cont-empty"])
@aiotest()
async def test_continuation_without_start_closes_only_that_connection(server, bad):
    a = await zw.connect(server, "doc", name="A", version=3, mode=2, initial=b"")
    b = await zw.connect(server, "doc", name="B", version=2, mode=1)
    victim = await zw.connect(server, "doc", name="victim", version=3, mode=1)
    await victim.send_raw(bad)
    await victim.expect_closed()
    # as the very first message too
    v2 = await zw.connect(server, name="victim2")
    await v2.send_raw(bad)
    await v2.expect_closed()
    # after a complete split message, another continuation is unexpected
    v3 = await zw.connect(server, "doc", name="victim3", version=3, mode=1)
    for f in split(zw.enc_broadcast(b"x" * 100), 40):
        await v3.send_raw(f)
    await a.expect_raw(zw.enc_broadcast(b"x" * 100))
    await b.expect_raw(zw.enc_broadcast(b"x" * 100))
    await v3.send_raw(bad)
    await v3.expect_closed()
    # the others carry on
    await a.append(b"still here")
    await b.expect_raw(exp_append(2, 0, b"still here"))
    assert server.http("GET", "/socket")[0] == 200


@aiotest(timeout=40)
async def test_document_larger_than_send_queue(server):
    """A 6 MiB document (above the default SendQueueBytes of 4 MiB, below the 16 MiB
    inbound limit) can still be opened: the catch-up goes out split in 100 KiB pieces,
    or whole to a client that asks for it."""
    doc = os.urandom(6 << 20)
    a = await zw.connect(server, "huge", name="A", version=3, mode=2, initial=doc)
    b = await zw.connect(server, name="B")
    await b.send_init("huge", version=2, mode=1, offset=0, max_message_size=0)
    m = await b.expect_raw(exp_append(2, 0, doc), timeout=20)
    assert m.frames == split(m.raw, 102400)
    c = await zw.connect(server, name="C")
    await c.send_init("huge", version=3, mode=1, offset=0, max_message_size=0xFFFFFFFF)
    m = await c.expect_raw(exp_append(3, 0, doc), timeout=20)
    assert len(m.frames) == 1
    # and a 5 MiB append is relayed to both
    more = os.urandom(5 << 20)
    await a.send_append(len(doc), more)
    await a.expect_raw(exp_ack(1, len(doc) + len(more)), timeout=20)
    await b.expect_raw(exp_append(2, len(doc), more), timeout=20)
    await c.expect_raw(exp_append(3, len(doc), more), timeout=20)


@pytest.mark.parametrize("mx", [3, 4, 16, 17])
@aiotest()
async def test_server_split_tiny_max_message_size(server, mx):
    doc = blob(50, seed=mx)
    await (await zw.connect(server, "tiny", name="creator", version=3, mode=0,
                            initial=doc)).close()
    b = await zw.connect(server, name="B")
    await b.send_init("tiny", version=3, mode=1, offset=0, max_message_size=mx)
    m = await b.expect_raw(exp_append(3, 0, doc))
    assert m.frames == split(m.raw, mx)
    a = await zw.connect(server, "tiny", name="A", version=2, mode=1)
    await a.append(b"xyz")
    m = await b.expect_raw(exp_append(3, 50, b"xyz"))
    assert m.frames == split(m.raw, mx)


@aiotest()
async def test_abandoned_continuation_changes_nothing(server):
    a = await zw.connect(server, "doc", name="A", version=3, mode=2, initial=b"base")
    b = await zw.connect(server, "doc", name="B", version=2, mode=1)
    victim = await zw.connect(server, "doc", name="victim", version=3, mode=1)
    frames = split(zw.enc_append(4, b"never" * 100), 100)
    for f in frames[:-1]:
        await victim.send_raw(f)
    await victim.abort()
    await b.expect_nothing(0.3)
    await a.append(b"+ok")
    await b.expect_raw(exp_append(2, 4, b"+ok"))
    assert await zw.fetch_doc(server, "doc") == b"base+ok"
