"""docs/protocol.md, Session (appends) and Delivery: concurrent writers on one document. Appends are atomic
compare-and-append; every client sees the committed appends in commit order with no
gap and no duplicate (the client checks each APPEND's offset against its view)."""

import asyncio
import random
import re

import zwclient as zw
from zwclient import aiotest

CHUNK_RE = re.compile(rb"\[w(\d+):(\d+)\]\.*")


async def run_writer(w, idx, count, rng, progress):
    """Appends `count` chunks; on NACK catches up from the APPENDs it received and
    retries. Returns the list of ACKed chunks in order."""
    acked = []
    nacks = 0
    while len(acked) < count:
        data = b"[w%d:%d]" % (idx, len(acked)) + b"." * rng.randrange(0, 24)
        off = w.length
        await w.send_append(off, data)
        while True:
            m = await w.next(timeout=10)
            if m.type == zw.ACK:
                break
            assert m.type in (zw.APPEND_V2, zw.APPEND_V3), "%s got %r" % (w.name, m)
        if m.ack == 1:
            assert m.length == off + len(data)
            acked.append(data)
            progress[idx] = len(acked)
        else:
            assert m.ack == 0, m
            nacks += 1
            # catch up: the APPENDs up to the NACK's length must arrive
            while w.length < m.length:
                a = await w.next(timeout=10)
                assert a.type in (zw.APPEND_V2, zw.APPEND_V3), "%s got %r" % (w.name, a)
        if rng.random() < 0.3:
            await asyncio.sleep(rng.random() * 0.003)
    return acked, nacks


def parse_chunks(doc):
    chunks = []
    pos = 0
    while pos < len(doc):
        m = CHUNK_RE.match(doc, pos)
        assert m, "unparseable document at %d: %r" % (pos, doc[pos:pos + 40])
        chunks.append((int(m.group(1)), int(m.group(2)), m.group(0)))
        pos = m.end()
    return chunks


async def race(server, doc, n_writers, n_appends, n_early, n_late, seed):
    rng = random.Random(seed)
    creator = await zw.connect(server, doc, name="creator", version=3, mode=2, initial=b"")
    readers = []
    for i in range(n_early):
        readers.append(await zw.connect(server, doc, name="R%d" % i, version=2 + i % 2,
                                        mode=1))
    writers = []
    for i in range(n_writers):
        writers.append(await zw.connect(server, doc, name="W%d" % i, version=3 - i % 2,
                                        mode=0))
    progress = [0] * n_writers

    async def late_joiners():
        # join mid-race, some from offset 0, some from a snapshot another reader has
        while sum(progress) < n_writers * n_appends // 3:
            await asyncio.sleep(0.005)
        late = []
        for i in range(n_late):
            if i % 2 == 0:
                c = await zw.connect(server, doc, name="L%d" % i, version=2 + i % 2, mode=1)
            else:
                c = await zw.connect(server, name="L%d" % i)
                # a snapshot: what creator's view holds right now (consume what's queued)
                while True:
                    try:
                        await creator.next(timeout=0.01)
                    except AssertionError as e:
                        if "no message within" in str(e):
                            break
                        raise
                known = creator.full_doc
                await c.send_init(doc, version=2 + i % 2, mode=1, offset=len(known),
                                  known=known)
                await c.expect(zw.APPEND)
            late.append(c)
        return late

    late_task = asyncio.ensure_future(late_joiners())
    results = await asyncio.gather(*[
        run_writer(w, i, n_appends, random.Random(seed * 100 + i), progress)
        for i, w in enumerate(writers)])
    late = await late_task
    total = sum(len(d) for acked, _ in results for d in acked)

    everyone = [creator] + readers + late + writers
    for c in everyone:
        await c.wait_length(total, timeout=10)
    stored = await zw.fetch_doc(server, doc)
    assert len(stored) == total
    for c in everyone:
        assert c.full_doc == stored, "%s's view differs from the stored document" % c.name
    # every ACKed chunk exactly once, each writer's in its order; nothing else
    chunks = parse_chunks(stored)
    for i, (acked, _) in enumerate(results):
        mine = [c[2] for c in chunks if c[0] == i]
        assert mine == acked, "writer %d: stored chunks differ from its ACKed appends" % i
    assert len(chunks) == n_writers * n_appends
    for c in everyone:
        await c.expect_nothing(0.05)
    return sum(n for _, n in results)


@aiotest(timeout=40)
async def test_four_writers_eight_readers(server):
    nacks = await race(server, "race", n_writers=4, n_appends=50, n_early=4, n_late=4, seed=1)
    print("NACKs during the race:", nacks)


@aiotest(timeout=40)
async def test_two_documents_race_independently(server):
    r = await asyncio.gather(
        race(server, "race-a", n_writers=3, n_appends=30, n_early=2, n_late=2, seed=2),
        race(server, "race-b", n_writers=3, n_appends=30, n_early=2, n_late=2, seed=3))
    print("NACKs:", r)


@aiotest(timeout=40)
async def test_joins_racing_appends(server):
    """Clients join (from offset 0 or from a prefix they have) while a writer appends
    as fast as it can: each joiner's catch-up and the live APPENDs after it must fit
    together with no gap and no duplicate (§3.4, §3.7)."""
    doc = "join-race"
    w = await zw.connect(server, doc, name="W", version=3, mode=2, initial=b"")
    rng = random.Random(7)
    n_appends = 200
    done = asyncio.Event()

    async def write():
        for i in range(n_appends):
            await w.append(b"<%d:%s>" % (i, b"#" * rng.randrange(0, 40)), timeout=10)
        done.set()

    wt = asyncio.ensure_future(write())
    joiners = []
    i = 0
    while not done.is_set() and i < 40:
        snap = w.full_doc
        if i % 3 == 0:
            c = await zw.connect(server, doc, name="J%d" % i, version=2 + i % 2, mode=1)
        else:
            off = rng.randrange(0, len(snap) + 1)
            c = await zw.connect(server, name="J%d" % i)
            await c.send_init(doc, version=2 + i % 2, mode=1 + (i % 2) * -1, offset=off,
                              known=snap[:off])
            await c.expect(zw.APPEND)
        joiners.append(c)
        i += 1
        await asyncio.sleep(rng.random() * 0.01)
    await wt
    assert len(joiners) >= 10, "the writer finished before enough joins (%d)" % len(joiners)
    total = w.length
    stored = await zw.fetch_doc(server, doc)
    assert len(stored) == total and w.full_doc == stored
    for c in joiners:
        await c.wait_length(total, timeout=10)
        assert c.full_doc == stored, c.name
        await c.expect_nothing(0.01)


@aiotest(timeout=40)
async def test_stalled_reader_does_not_hold_up_others(server_factory):
    """A client that stops reading must not stall the writer or the other readers. It
    may be disconnected (bounded send queue); if it is not, what it finally receives is
    still gapless (§3.7)."""
    server = server_factory(SendQueueBytes=262144)
    doc = "stall"
    w = await zw.connect(server, doc, name="W", version=3, mode=2, initial=b"")
    good = await zw.connect(server, doc, name="good", version=2, mode=1)
    slow = await zw.connect(server, doc, name="slow", version=3, mode=1)
    slow.ws.transport.pause_reading()
    chunk = b"s" * 20000
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for i in range(400):  # 8 MB
        await w.append(b"%06d" % i + chunk, timeout=10)
    elapsed = loop.time() - t0
    await good.wait_length(w.length, timeout=15)
    assert good.full_doc == w.full_doc
    assert elapsed < 20, "writer took %.1fs" % elapsed
    status, _, _ = server.http("GET", "/socket?ping")
    assert status == 200
    slow.ws.transport.resume_reading()
    try:
        await slow.wait_length(w.length, timeout=15)
        assert slow.full_doc == w.full_doc
    except zw.ServerClosed:
        print("slow reader was disconnected after %d bytes" % slow.length)
