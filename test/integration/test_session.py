"""docs/protocol.md, Session: a session step by step, for protocol 2 and protocol 3 clients."""

import asyncio
import time

import pytest

import zwclient as zw
from zwclient import aiotest, exp_ack, exp_append, exp_error

versions = pytest.mark.parametrize("v", [2, 3])
# Every test runs against each backend; with Redis the server is in cluster mode and
# delivers through the Redis channel (conftest.py).
SERVER_BACKENDS = ["lmdb", "sqlite", "redis"]


async def create(server, doc, data, v=3):
    """Creates `doc` holding `data` (mode 2) and disconnects."""
    c = await zw.connect(server, name="creator")
    m = await c.join(doc, version=v, mode=2, initial=data)
    assert m.raw == exp_append(v, len(data), b"")
    await c.close()


# ---- step 3/4: creation modes and the catch-up APPEND ----

@versions
@aiotest()
async def test_mode0_creates_missing_document(server, v):
    c = await zw.connect(server, name="A")
    await c.send_init("doc", version=v, mode=0, offset=0, initial=b"hello")
    # Just created: the starting offset is its length, the APPEND carries no bytes.
    await c.expect_raw(exp_append(v, 5, b""))
    assert c.created
    await c.expect_nothing(0.3)  # no keys -> no KEY INFORMATION
    assert await zw.fetch_doc(server, "doc") == b"hello"


@versions
@pytest.mark.parametrize("mode", [3, 7, 255])
@aiotest()
async def test_unknown_creation_mode_is_mode0(server, v, mode):
    """Modes above 2 are read as 0 (possibly create), as the reference does."""
    c = await zw.connect(server, name="A")
    await c.send_init("doc", version=v, mode=mode, initial=b"hello")
    await c.expect_raw(exp_append(v, 5, b""))  # created with the initial data
    d = await zw.connect(server, name="B")
    await d.send_init("doc", version=v, mode=mode, initial=b"IGNORED")
    await d.expect_raw(exp_append(v, 0, b"hello"))  # opened, not refused
    await d.append(b"!")
    assert await zw.fetch_doc(server, "doc") == b"hello!"
    assert "unknown creation mode %d, read as 0" % mode in server.log_path.read_text()


@versions
@aiotest()
async def test_mode0_opens_existing_document(server, v):
    await create(server, "doc", b"hello world")
    c = await zw.connect(server, name="A")
    # initialData is ignored when the document exists
    await c.send_init("doc", version=v, mode=0, offset=0, initial=b"IGNORED")
    await c.expect_raw(exp_append(v, 0, b"hello world"))
    await c.expect_nothing(0.3)
    assert await zw.fetch_doc(server, "doc") == b"hello world"


@versions
@aiotest()
async def test_mode0_create_with_empty_initial_data(server, v):
    c = await zw.connect(server, name="A")
    await c.send_init("empty", version=v, mode=0)
    await c.expect_raw(exp_append(v, 0, b""))
    ack = await c.append(b"first")
    assert ack.raw == exp_ack(1, 5)
    assert await zw.fetch_doc(server, "empty") == b"first"


@versions
@aiotest()
async def test_mode1_opens_existing_document(server, v):
    await create(server, "doc", b"0123456789")
    c = await zw.connect(server, name="A")
    await c.send_init("doc", version=v, mode=1, offset=0)
    await c.expect_raw(exp_append(v, 0, b"0123456789"))


@versions
@aiotest()
async def test_mode1_missing_document_is_error_1(server, v):
    c = await zw.connect(server, name="A")
    await c.send_init("nope", version=v, mode=1, offset=0, initial=b"data")
    m = await c.expect(zw.ERROR)
    assert m.raw == exp_error(1), m
    await c.expect_closed()
    # ...and the document was not created
    assert await zw.fetch_doc(server, "nope") is None


@versions
@aiotest()
async def test_mode2_creates_missing_document(server, v):
    c = await zw.connect(server, name="A")
    await c.send_init("new", version=v, mode=2, offset=0, initial=b"created!")
    await c.expect_raw(exp_append(v, 8, b""))
    await c.expect_nothing(0.2)
    assert await zw.fetch_doc(server, "new") == b"created!"


@versions
@aiotest()
async def test_mode2_existing_document_is_error_2(server, v):
    await create(server, "doc", b"original")
    c = await zw.connect(server, name="A")
    await c.send_init("doc", version=v, mode=2, offset=0, initial=b"other")
    m = await c.expect(zw.ERROR)
    assert m.raw == exp_error(2), m
    await c.expect_closed()
    assert await zw.fetch_doc(server, "doc") == b"original"


@versions
@aiotest()
async def test_offset_past_length_is_error_3(server, v):
    await create(server, "doc", b"12345")
    c = await zw.connect(server, name="A")
    await c.send_init("doc", version=v, mode=0, offset=6)
    m = await c.expect(zw.ERROR)
    assert m.raw == exp_error(3), m
    await c.expect_closed()
    c = await zw.connect(server, name="B")
    await c.send_init("doc", version=v, mode=1, offset=1 << 40)
    assert (await c.expect(zw.ERROR)).raw == exp_error(3)
    await c.expect_closed()


@versions
@aiotest()
async def test_catchup_from_offset(server, v):
    await create(server, "doc", b"abcdefghij")
    for off in (0, 1, 5, 9, 10):
        c = await zw.connect(server, name="off%d" % off)
        await c.send_init("doc", version=v, mode=1, offset=off, known=b"abcdefghij"[:off])
        # always sent, even when it carries no bytes (offset == length)
        await c.expect_raw(exp_append(v, off, b"abcdefghij"[off:]))
        assert c.full_doc == b"abcdefghij"
        await c.close()


@aiotest()
async def test_generation_in_v3_init_is_ignored(server):
    await create(server, "doc", b"xyz")
    c = await zw.connect(server, name="A")
    await c.send_init("doc", version=3, mode=1, offset=1, generation=0xDEADBEEF, known=b"x")
    await c.expect_raw(exp_append(3, 1, b"yz"))


# ---- step 6: appends, ACK / NACK ----

@versions
@aiotest()
async def test_ack_and_nack(server, v):
    a = await zw.connect(server, "doc", name="A", version=v, mode=2, initial=b"abc")
    await a.send_append(3, b"def")
    await a.expect_raw(exp_ack(1, 6))
    # stale offset
    await a.send_append(3, b"XXX")
    await a.expect_raw(exp_ack(0, 6))
    # offset past the end
    await a.send_append(100, b"YYY")
    await a.expect_raw(exp_ack(0, 6))
    await a.send_append(0, b"ZZZ")
    await a.expect_raw(exp_ack(0, 6))
    # empty append at the right offset
    await a.send_append(6, b"")
    m = await a.expect(zw.ACK)
    assert m.length == 6 and m.ack == 1, m
    await a.send_append(6, b"ghi")
    await a.expect_raw(exp_ack(1, 9))
    await a.expect_nothing(0.2)
    assert await zw.fetch_doc(server, "doc") == b"abcdefghi"


@versions
@aiotest()
async def test_both_append_layouts_accepted(server, v):
    # "Either APPEND type is accepted from a client of either version."
    a = await zw.connect(server, "doc", name="A", version=v, mode=2, initial=b"")
    b = await zw.connect(server, "doc", name="B", version=v, mode=1)
    await a.send_append(0, b"v2-", version=2)
    await a.expect_raw(exp_ack(1, 3))
    await b.expect_raw(exp_append(v, 0, b"v2-"))
    await a.send_append(3, b"v3-", version=3, generation=7)
    await a.expect_raw(exp_ack(1, 6))
    await b.expect_raw(exp_append(v, 3, b"v3-"))
    assert await zw.fetch_doc(server, "doc") == b"v2-v3-"


@versions
@aiotest()
async def test_append_relayed_to_others_not_to_writer(server, v):
    a = await zw.connect(server, "doc", name="A", version=v, mode=2, initial=b"start:")
    b = await zw.connect(server, "doc", name="B", version=v, mode=1)
    c = await zw.connect(server, "doc", name="C", version=v, mode=0, initial=b"ignored")
    assert b.full_doc == c.full_doc == b"start:"
    await b.expect_nothing(0.1)
    for i, chunk in enumerate([b"one", b"two", b"\x00\xff\x80binary", b"x" * 1000]):
        writer = [a, b, c][i % 3]
        off = writer.length
        await writer.send_append(off, chunk)
        await writer.expect_raw(exp_ack(1, off + len(chunk)))
        for other in (a, b, c):
            if other is not writer:
                await other.expect_raw(exp_append(v, off, chunk))
    for x in (a, b, c):
        await x.expect_nothing(0.3)  # the writer never gets its own append back
    stored = await zw.fetch_doc(server, "doc")
    assert stored == b"start:onetwo\x00\xff\x80binary" + b"x" * 1000
    assert a.full_doc == b.full_doc == c.full_doc == stored


@versions
@aiotest()
async def test_nacked_append_not_relayed(server, v):
    a = await zw.connect(server, "doc", name="A", version=v, mode=2, initial=b"base")
    b = await zw.connect(server, "doc", name="B", version=v, mode=1)
    await a.send_append(2, b"nope", track=False)
    await a.expect_raw(exp_ack(0, 4))
    await b.expect_nothing(0.3)
    assert await zw.fetch_doc(server, "doc") == b"base"


@aiotest()
async def test_v2_and_v3_clients_get_their_own_layout(server):
    a2 = await zw.connect(server, "mixed", name="A2", version=2, mode=2, initial=b"")
    b3 = await zw.connect(server, "mixed", name="B3", version=3, mode=1)
    c2 = await zw.connect(server, "mixed", name="C2", version=2, mode=1)
    d3 = await zw.connect(server, "mixed", name="D3", version=3, mode=1)
    await a2.send_append(0, b"from-v2")
    await a2.expect_raw(exp_ack(1, 7))
    await b3.expect_raw(exp_append(3, 0, b"from-v2"))
    await c2.expect_raw(exp_append(2, 0, b"from-v2"))
    await d3.expect_raw(exp_append(3, 0, b"from-v2"))
    await b3.send_append(7, b"from-v3")
    await b3.expect_raw(exp_ack(1, 14))
    await a2.expect_raw(exp_append(2, 7, b"from-v3"))
    await c2.expect_raw(exp_append(2, 7, b"from-v3"))
    await d3.expect_raw(exp_append(3, 7, b"from-v3"))
    e2 = await zw.connect(server, name="E2")
    await e2.send_init("mixed", version=2, mode=1, offset=4, known=b"from")
    await e2.expect_raw(exp_append(2, 4, b"-v2from-v3"))
    f3 = await zw.connect(server, name="F3")
    await f3.send_init("mixed", version=3, mode=1, offset=4, known=b"from")
    await f3.expect_raw(exp_append(3, 4, b"-v2from-v3"))


@versions
@aiotest()
async def test_documents_are_independent(server, v):
    a = await zw.connect(server, "doc-a", name="A", version=v, mode=2, initial=b"A")
    b = await zw.connect(server, "doc-b", name="B", version=v, mode=2, initial=b"B")
    await a.append(b"aa")
    await b.expect_nothing(0.3)
    assert await zw.fetch_doc(server, "doc-a") == b"Aaa"
    assert await zw.fetch_doc(server, "doc-b") == b"B"


@versions
@aiotest()
async def test_doc_id_bytes_are_exact(server, v):
    # Strings are raw bytes: ids differing in case or trailing bytes are different docs.
    await create(server, "Doc", b"upper", v)
    await create(server, "doc", b"lower", v)
    await create(server, "doc\x00", b"nul", v)
    await create(server, "d\xc3\xa9j\xc3\xa0", b"utf8", v)
    assert await zw.fetch_doc(server, "Doc", v) == b"upper"
    assert await zw.fetch_doc(server, "doc", v) == b"lower"
    assert await zw.fetch_doc(server, "doc\x00", v) == b"nul"
    assert await zw.fetch_doc(server, "d\xc3\xa9j\xc3\xa0", v) == b"utf8"


# ---- step 8: broadcast ----

@versions
@aiotest()
async def test_broadcast_relayed_to_others_only(server, v):
    a = await zw.connect(server, "doc", name="A", version=v, mode=2, initial=b"doc")
    b = await zw.connect(server, "doc", name="B", version=v, mode=1)
    c = await zw.connect(server, "doc", name="C", version=5 - v, mode=1)
    other = await zw.connect(server, "other", name="O", version=v, mode=0)
    payload = b"\x01cursor 12,34\xff"
    await a.broadcast(payload)
    await b.expect_raw(zw.enc_broadcast(payload))
    await c.expect_raw(zw.enc_broadcast(payload))
    await a.expect_nothing(0.3)
    await other.expect_nothing(0.01)
    await b.broadcast(b"")
    await a.expect_raw(zw.enc_broadcast(b""))
    await c.expect_raw(zw.enc_broadcast(b""))
    await b.expect_nothing(0.2)
    # stored nowhere
    assert await zw.fetch_doc(server, "doc") == b"doc"
    late = await zw.connect(server, "doc", name="late", version=v, mode=1)
    await late.expect_nothing(0.3)


@versions
@aiotest()
async def test_broadcast_from_lone_client(server, v):
    a = await zw.connect(server, "doc", name="A", version=v, mode=0)
    await a.broadcast(b"nobody listens")
    await a.expect_nothing(0.3)
    ack = await a.append(b"still works")
    assert ack.raw == exp_ack(1, 11)


# ---- step 1 and 10: first message, unknown types, INIT timeout ----

@versions
@aiotest()
async def test_unknown_message_types_ignored(server, v):
    a = await zw.connect(server, "doc", name="A", version=v, mode=2, initial=b"")
    b = await zw.connect(server, "doc", name="B", version=v, mode=1)
    for raw in (b"\x06\x00", b"\x42\x00payload", b"\x7f\x00\x00\x00\x00\x00",
                b"\xfe\x00abc", b"\x10\x00" + b"z" * 5000):
        await a.send_raw(raw)
    await a.expect_nothing(0.3)
    await b.expect_nothing(0.01)
    await a.send_append(0, b"ok")
    await a.expect_raw(exp_ack(1, 2))
    await b.expect_raw(exp_append(v, 0, b"ok"))


@pytest.mark.parametrize("first", [
    zw.enc_append(0, b"data", version=2),
    zw.enc_append(0, b"data", version=3),
    zw.enc_set_key("k", "v", old_version=0, new_version=1),
    zw.enc_broadcast(b"hi"),
    b"\x42\x00unknown",
], ids=["append-v2", "append-v3", "set-key", "broadcast", "unknown"])
@aiotest()
async def test_first_message_not_init_closes(server, first):
    await create(server, "doc", b"content")
    bystander = await zw.connect(server, "doc", name="bystander", version=3, mode=1)
    c = await zw.connect(server, name="bad")
    await c.send_raw(first)
    await c.expect_closed()
    # nothing reached the document or the other client
    await bystander.expect_nothing(0.2)
    assert await zw.fetch_doc(server, "doc") == b"content"


@versions
@aiotest(timeout=20)
async def test_init_timeout_closes(server_factory, v):
    server = server_factory(InitTimeoutMs=1500)
    loop = asyncio.get_running_loop()
    idle = await zw.connect(server, name="idle")
    t0 = loop.time()
    # a client that sends INIT in time is not affected
    good = await zw.connect(server, name="good")
    await asyncio.sleep(0.5)
    await good.join("doc", version=v, mode=0)
    await idle.expect_closed(timeout=6)
    elapsed = loop.time() - t0
    assert elapsed >= 1.2, "closed after %.2fs, InitTimeoutMs=1500" % elapsed
    await asyncio.sleep(1.5)
    await good.expect_nothing(0.1)
    ack = await good.append(b"alive")
    assert ack.raw == exp_ack(1, 5)


@aiotest()
async def test_init_timeout_default_is_long(server):
    # Default 30 s: an idle connection is still open a few seconds later.
    idle = await zw.connect(server, name="idle")
    await idle.expect_nothing(2.5)
    m = await idle.join("doc", version=3, mode=0, initial=b"late")
    assert m.raw == exp_append(3, 4, b"")


# ---- step 9: leave and reconnect ----

@versions
@aiotest()
async def test_reconnect_with_offset_gets_only_missing_bytes(server, v):
    a = await zw.connect(server, "doc", name="A", version=v, mode=2, initial=b"v0;")
    b = await zw.connect(server, "doc", name="B", version=v, mode=1)
    await a.append(b"v1;")
    await b.expect_raw(exp_append(v, 3, b"v1;"))
    seen = b.full_doc
    await b.close()
    await a.append(b"v2;")
    await a.append(b"v3;")
    b2 = await zw.connect(server, name="B2")
    await b2.send_init("doc", version=v, mode=1, offset=len(seen), known=seen)
    await b2.expect_raw(exp_append(v, 6, b"v2;v3;"))
    await b2.expect_nothing(0.2)
    assert b2.full_doc == b"v0;v1;v2;v3;"
    # and it is live again
    await a.append(b"v4;")
    await b2.expect_raw(exp_append(v, 12, b"v4;"))
    # reconnect with nothing missed -> empty APPEND at its offset
    b3 = await zw.connect(server, name="B3")
    await b3.send_init("doc", version=v, mode=0, offset=15, known=b2.full_doc)
    await b3.expect_raw(exp_append(v, 15, b""))


@versions
@aiotest()
async def test_last_client_leaves_document_persists(server, v):
    a = await zw.connect(server, "doc", name="A", version=v, mode=2, initial=b"keep")
    await a.append(b" me")
    await a.close()
    await asyncio.sleep(0.2)
    c = await zw.connect(server, name="C")
    await c.send_init("doc", version=v, mode=0, offset=0, initial=b"NEW")
    await c.expect_raw(exp_append(v, 0, b"keep me"))


@versions
@aiotest()
async def test_abrupt_disconnect_does_not_disturb_others(server, v):
    a = await zw.connect(server, "doc", name="A", version=v, mode=2, initial=b"")
    b = await zw.connect(server, "doc", name="B", version=v, mode=1)
    c = await zw.connect(server, "doc", name="C", version=v, mode=1)
    await c.abort()
    for i in range(5):
        chunk = b"%d;" % i
        off = a.length
        await a.append(chunk)
        await b.expect_raw(exp_append(v, off, chunk))
    assert await zw.fetch_doc(server, "doc") == b"0;1;2;3;4;"


@aiotest()
async def test_many_small_appends_in_order(server):
    a = await zw.connect(server, "doc", name="A", version=3, mode=2, initial=b"")
    b = await zw.connect(server, "doc", name="B", version=2, mode=1)
    t0 = time.monotonic()
    expected = b""
    # pipelined: send 100 appends back to back, each at the right offset
    for i in range(100):
        chunk = b"<%d>" % i
        await a.send_append(len(expected), chunk)
        expected += chunk
    for i in range(100):
        m = await a.expect(zw.ACK)
        assert m.ack == 1, m
    await b.wait_length(len(expected))
    assert a.full_doc == b.full_doc == expected
    assert await zw.fetch_doc(server, "doc") == expected
    assert time.monotonic() - t0 < 10
