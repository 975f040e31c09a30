"""docs/protocol.md, Session (reconnect): clients ride out a server restart by reconnecting with the offset
they have; nothing acknowledged is lost (SIGTERM and SIGKILL)."""

import asyncio
import signal

import pytest

import zwclient as zw
from zwclient import aiotest, exp_append

sigs = pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["term", "kill"])


async def reconnect(server, old, doc, mode=1, **kw):
    """A new connection continuing `old`'s view of `doc` from the offset it has."""
    known = old.full_doc
    c = await zw.connect(server, name=old.name + "'")
    await c.send_init(doc, version=old.version, mode=mode, offset=len(known), known=known,
                      max_message_size=old.max_message_size, **kw)
    return c


@sigs
@aiotest(timeout=40)
async def test_restart_quiescent(server, sig):
    a = await zw.connect(server, "doc", name="A", version=3, mode=2, initial=b"<init>")
    b = await zw.connect(server, "doc", name="B", version=2, mode=1)
    c = await zw.connect(server, "doc", name="C", version=3, mode=1)
    other = await zw.connect(server, "other", name="O", version=2, mode=0, initial=b"other")
    acked = [b"<init>"]
    for i in range(10):
        chunk = b"(chunk %d)" % i
        off = a.length
        await a.append(chunk)
        acked.append(chunk)
        await b.expect_raw(exp_append(2, off, chunk))
        if i < 5:
            await c.expect_raw(exp_append(3, off, chunk))
        if i == 4:
            await c.close()  # C leaves half-way
    server.restart(sig)
    for x in (a, b, other):
        await x.expect_closed(timeout=10)

    a2 = await reconnect(server, a, "doc")
    await a2.expect_raw(exp_append(3, a.length, b""))
    b2 = await reconnect(server, b, "doc", mode=0)
    await b2.expect_raw(exp_append(2, b.length, b""))
    c2 = await reconnect(server, c, "doc")
    await c2.expect_raw(exp_append(3, c.length, b"".join(acked)[c.length:]))
    assert await zw.fetch_doc(server, "other") == b"other"

    for i in range(10, 15):
        chunk = b"(chunk %d)" % i
        off = a2.length
        await a2.append(chunk)
        acked.append(chunk)
        await b2.expect_raw(exp_append(2, off, chunk))
        await c2.expect_raw(exp_append(3, off, chunk))
    stored = await zw.fetch_doc(server, "doc")
    assert stored == b"".join(acked)
    assert a2.full_doc == b2.full_doc == c2.full_doc == stored


async def writer_loop(w, acked, state, stop_after=None):
    """Appends until the connection drops. Records ACKed chunks; state['in_flight'] is
    the chunk sent but not acknowledged when the connection dropped."""
    i = 0
    try:
        while True:
            chunk = b"{%s:%d}" % (w.name.encode(), i)
            off = w.length
            state["in_flight"] = chunk
            await w.send_append(off, chunk)
            while True:
                m = await w.next(timeout=10)
                if m.type == zw.ACK:
                    break
                assert m.type in (zw.APPEND_V2, zw.APPEND_V3), m
            state["in_flight"] = None
            if m.ack == 1:
                acked.append(chunk)
                i += 1
            else:
                while w.length < m.length:
                    await w.next(timeout=10)
            if stop_after is not None and len(acked) >= stop_after:
                return
    except (zw.ServerClosed, ConnectionError):
        return
    except Exception as e:  # websockets raises ConnectionClosed on send
        if "ConnectionClosed" in type(e).__name__:
            return
        raise


@sigs
@aiotest(timeout=40)
async def test_restart_during_traffic(server, sig):
    w = await zw.connect(server, "busy", name="W", version=3, mode=2, initial=b"")
    r = await zw.connect(server, "busy", name="R", version=2, mode=1)
    acked, state = [], {"in_flight": None}
    task = asyncio.ensure_future(writer_loop(w, acked, state))
    while len(acked) < 40:
        await asyncio.sleep(0.002)
        assert not task.done(), task.exception()
    server.stop(sig)
    await asyncio.wait_for(task, 10)
    task.result()
    # the reader may still have appends queued from before the stop
    await r.expect_closed(timeout=10, allow=(zw.APPEND_V2, zw.APPEND_V3))
    server.start()

    stored = await zw.fetch_doc(server, "busy")
    committed = b"".join(acked)
    assert stored.startswith(committed), "an ACKed append was lost"
    extra = stored[len(committed):]
    assert extra in (b"", state["in_flight"] or b""), \
        "stored has %r beyond the ACKed appends (in flight: %r)" % (extra, state["in_flight"])
    # the writer reconnects with its offset; it is sent whatever it did not know about
    w2 = await reconnect(server, w, "busy")
    await w2.expect_raw(exp_append(3, len(committed), extra))
    r2 = await reconnect(server, r, "busy")
    await r2.expect(zw.APPEND)
    assert r2.full_doc == stored
    acked2 = []
    await writer_loop(w2, acked2, {"in_flight": None}, stop_after=5)
    final = stored + b"".join(acked2)
    await r2.wait_length(len(final))
    assert r2.full_doc == w2.full_doc == final == await zw.fetch_doc(server, "busy")


@aiotest(timeout=40)
async def test_repeated_restarts_keep_everything(server):
    acked = []
    a = await zw.connect(server, "doc", name="A", version=2, mode=0)
    for round_ in range(4):
        for i in range(5):
            chunk = b"r%di%d;" % (round_, i)
            await a.append(chunk)
            acked.append(chunk)
        server.restart(signal.SIGKILL if round_ % 2 else signal.SIGTERM)
        await a.expect_closed(timeout=10)
        a2 = await reconnect(server, a, "doc", mode=0)
        await a2.expect_raw(exp_append(2, a.length, b""))
        a = a2
    assert await zw.fetch_doc(server, "doc") == b"".join(acked)
