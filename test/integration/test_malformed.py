"""docs/protocol.md, Framing, Messages and Session: a malformed message closes only the connection
that sent it. A bystander session on the same document and server carries on."""

import struct

import pytest

import zwclient as zw
from zwclient import aiotest, exp_append

MAX_MSG = 65536


def v2_init_header(doc_len_field, doc_bytes):
    return struct.pack(">BBHIBQB", 1, 0, 2, 0, 0, 0, doc_len_field) + doc_bytes


def v3_init_header(doc_len_field, doc_bytes):
    return struct.pack(">BBHIBIQI", 1, 0, 3, 0, 0, 0, 0, doc_len_field) + doc_bytes


def set_key_raw(name_len_field, name, value_len_field=None, value=b""):
    out = struct.pack(">BBHBIII", 3, 0, 1, 0, 0, 1, name_len_field) + name
    if value_len_field is not None:
        out += struct.pack(">I", value_len_field) + value
    return out


# Sent as the first message (instead of a valid INIT)
BEFORE_INIT = {
    "empty": b"",
    "one-byte": b"\x01",
    "init-type-only": b"\x01\x00",
    "init-no-version": b"\x01\x00\x00",
    "init-v2-truncated": zw.enc_init("doc", version=2)[:10],
    "init-v2-no-doc-length": zw.enc_init("doc", version=2)[:17],
    "init-v3-truncated": zw.enc_init("doc", version=3)[:15],
    "init-v3-no-doc-length": zw.enc_init("doc", version=3)[:20],
    "init-v2-docid-past-end": v2_init_header(50, b"doc"),
    "init-v3-docid-past-end": v3_init_header(4, b"doc"),
    "init-v3-docid-huge": v3_init_header(0xFFFFFFFF, b"doc"),
    "init-version-0": zw.enc_init("doc", version=0),
    "init-version-1": zw.enc_init("doc", version=1),
    "init-version-4": zw.enc_init("doc", version=4),
    "init-version-ffff": zw.enc_init("doc", version=0xFFFF),
    "text-frame": "\x01",  # text frames are read as binary: a 1-byte message
    "text-frame-init-like": "\x01\x00\x00\x03",
}

# Sent after a successful INIT on the bystanders' document
AFTER_INIT = {
    "empty": b"",
    "one-byte": b"\x02",
    "append-v2-truncated": b"\x02\x00" + b"\x00" * 7,
    "append-v2-header-only": b"\x02\x00",
    "append-v3-truncated": b"\x05\x00" + b"\x00" * 11,
    "set-key-truncated": b"\x03\x00\x00\x01\x00",
    "set-key-no-name-length": set_key_raw(0, b"")[:13],
    "set-key-name-past-end": set_key_raw(100, b"abc"),
    "set-key-name-huge": set_key_raw(0xFFFFFFFF, b"abc"),
    "set-key-no-value-length": set_key_raw(3, b"abc"),
    "set-key-value-past-end": set_key_raw(3, b"abc", 100, b"xyz"),
    "set-key-value-huge": set_key_raw(3, b"abc", 0xFFFFFFFF, b"xyz"),
    "broadcast-truncated": b"\x04\x00\x00\x00",
    "broadcast-length-past-end": struct.pack(">BBI", 4, 0, 100) + b"only ten b",
    "text-frame": "\x02",
    "init-twice": zw.enc_init("doc", version=3, mode=0),
    "init-twice-other-doc": zw.enc_init("elsewhere", version=2, mode=0),
}


async def bystanders(server):
    a = await zw.connect(server, "doc", name="A", version=3, mode=2, initial=b"base;")
    b = await zw.connect(server, "doc", name="B", version=2, mode=1)
    return a, b


async def check_bystanders(server, a, b, expected_stored):
    """The other session is unaffected: appends flow, nothing leaked from the victim."""
    await b.expect_nothing(0.2)
    await a.expect_nothing(0.01)
    off = a.length
    await a.append(b"still-alive;")
    await b.expect_raw(exp_append(2, off, b"still-alive;"))
    await b.broadcast(b"ping")
    await a.expect_raw(zw.enc_broadcast(b"ping"))
    status, _, body = server.http("GET", "/socket")
    assert (status, body) == (200, b"Zwibbler collaboration Server is running.")
    status, _, body = server.http("GET", "/socket?ping")
    assert (status, body) == (200, b"OK")
    stored = await zw.fetch_doc(server, "doc")
    assert stored == expected_stored + b"still-alive;"
    assert a.full_doc == b.full_doc == stored


@pytest.fixture
def mserver(server_factory):
    return server_factory(MaxMessageBytes=MAX_MSG)


@pytest.mark.parametrize("name", list(BEFORE_INIT))
@aiotest()
async def test_malformed_first_message(mserver, name):
    a, b = await bystanders(mserver)
    victim = await zw.connect(mserver, name="victim")
    await victim.send_raw(BEFORE_INIT[name])
    await victim.expect_closed()
    await check_bystanders(mserver, a, b, b"base;")


@pytest.mark.parametrize("name", list(AFTER_INIT))
@aiotest()
async def test_malformed_after_init(mserver, name):
    a, b = await bystanders(mserver)
    victim = await zw.connect(mserver, "doc", name="victim", version=3, mode=1)
    await victim.send_raw(AFTER_INIT[name])
    await victim.expect_closed()
    await check_bystanders(mserver, a, b, b"base;")


@aiotest()
async def test_message_above_max_message_bytes(mserver):
    a, b = await bystanders(mserver)
    # just under the limit is fine
    ok = b"o" * (MAX_MSG - 100)
    off = a.length
    await a.send_append(off, ok)
    await a.expect_raw(zw.exp_ack(1, off + len(ok)))
    await b.expect_raw(exp_append(2, off, ok))
    # one WebSocket message above the limit
    victim = await zw.connect(mserver, "doc", name="victim", version=3, mode=1)
    await victim.send_raw(zw.enc_append(victim.length, b"x" * (MAX_MSG + 1000)))
    await victim.expect_closed()
    await check_bystanders(mserver, a, b, b"base;" + ok)


@aiotest()
async def test_continuations_above_max_message_bytes(mserver):
    a, b = await bystanders(mserver)
    victim = await zw.connect(mserver, "doc", name="victim", version=3, mode=1)
    frames = zw.split(zw.enc_append(victim.length, b"y" * (3 * MAX_MSG)), 20000)
    try:
        for f in frames:
            await victim.send_raw(f)
    except Exception as e:  # the server may close before all pieces are sent
        assert "ConnectionClosed" in type(e).__name__, repr(e)
    await victim.expect_closed()
    await check_bystanders(mserver, a, b, b"base;")


@aiotest()
async def test_oversized_init(mserver):
    a, b = await bystanders(mserver)
    victim = await zw.connect(mserver, name="victim")
    await victim.send_raw(zw.enc_init("huge", version=3, mode=0, initial=b"z" * (MAX_MSG * 2)))
    await victim.expect_closed()
    await check_bystanders(mserver, a, b, b"base;")
    assert await zw.fetch_doc(mserver, "huge") is None


@aiotest(timeout=30)
async def test_server_survives_all_malformed_inputs(mserver):
    """Every malformed input against one server, interleaved with live traffic."""
    a, b = await bystanders(mserver)
    expected = b"base;"
    for table, after in ((BEFORE_INIT, False), (AFTER_INIT, True)):
        for name, raw in table.items():
            if after:
                victim = await zw.connect(mserver, "doc", name="victim-" + name, version=2,
                                          mode=1)
            else:
                victim = await zw.connect(mserver, name="victim-" + name)
            await victim.send_raw(raw)
            await victim.expect_closed()
            await victim.close()
            off = a.length
            chunk = b"%s;" % name.encode()
            await a.append(chunk)
            await b.expect_raw(exp_append(2, off, chunk))
            expected += chunk
    await check_bystanders(mserver, a, b, expected)
