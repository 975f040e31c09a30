"""Connection churn: 5,000 connect/INIT/disconnect cycles and 2,000 sockets
opened and dropped without a close frame (some upgraded, some with half-written
handshakes or frames). Afterwards the server holds no more file descriptors or
threads than before, and its memory (VmRSS) is back within a small slack.

Measured after a warm-up round of the same mix, so that what CivetWeb and the
allocator keep on purpose (worker stacks, arenas) is already in the baseline.
"""

import asyncio
import os
import random
import time

import zwclient as zw
from procinfo import counts as proc_counts, sanitizer
from rawws import OP_BINARY, OP_CLOSE, RawWS, binary, frame, frame_header
from zwclient import aiotest

CYCLES = 5000
DROPS = 2000
PARALLEL = 16
DOCS = 50


async def cycle(port, i):
    """Connect, INIT, read the catch-up, leave in one of three ways."""
    ws = await RawWS.connect(port)
    doc = "churn-%d" % (i % DOCS)
    await ws.send_binary(zw.enc_init(doc, version=2 + i % 2, mode=0, initial=b"x"))
    f = await ws.read_frame(timeout=10)
    assert f is not None and f[0] == OP_BINARY and f[1][0] in (zw.APPEND_V2, zw.APPEND_V3), f
    how = i % 3
    if how == 0:  # proper close handshake
        await ws.send(frame(OP_CLOSE, b"\x03\xe8"))
        await ws.wait_closed(timeout=10)
        await ws.close()
    elif how == 1:  # FIN without a close frame
        ws.writer.close()
        try:
            await ws.writer.wait_closed()
        except ConnectionError:
            pass
    else:  # RST
        ws.abort()


async def drop(port, i):
    """A socket dropped without a close frame, at one of several stages."""
    how = i % 6
    if how == 0:  # connect, nothing sent
        ws = await RawWS.connect(port, upgrade=False)
    elif how == 1:  # half a request line
        ws = await RawWS.connect(port, upgrade=False)
        await ws.send(b"GET /sock")
    elif how == 2:  # a handshake without its final blank line
        ws = await RawWS.connect(port, upgrade=False)
        await ws.send(ws.handshake_bytes()[:-2])
    elif how == 3:  # upgraded, nothing more
        ws = await RawWS.connect(port)
    elif how == 4:  # upgraded, half a frame
        ws = await RawWS.connect(port)
        await ws.send(frame_header(OP_BINARY, 5000) + b"\x01\x00abc")
    else:  # upgraded, INIT done, catch-up unread
        ws = await RawWS.connect(port)
        await ws.send(binary(zw.enc_init("churn-drop-%d" % (i % DOCS), mode=0)))
    await asyncio.sleep(0)
    if i % 2:
        ws.abort()
    else:
        ws.writer.close()


async def run_all(port, n, fn):
    it = iter(range(n))

    async def worker():
        for i in it:
            await fn(port, i)
    await asyncio.gather(*[worker() for _ in range(PARALLEL)])


async def settle(pid, fds, threads, timeout=20):
    """Waits until fd and thread counts are back to the baseline (connections are
    released asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        now = proc_counts(pid)
        if now[0] <= fds and now[1] <= threads:
            return now
        if time.monotonic() > deadline:
            return now
        await asyncio.sleep(0.1)


@aiotest(timeout=240)
async def test_churn_leaks_nothing(server_factory):
    server = server_factory(MaxConnections=64, InitTimeoutMs=2000, ReadTimeoutMs=2000,
                            WriteTimeoutMs=2000)
    pid = server.proc.pid
    port = server.port
    t0 = time.monotonic()
    # Warm-up: the same mix, smaller.
    await run_all(port, 500, cycle)
    await run_all(port, 300, drop)
    fds0, threads0, _ = await settle(pid, 10 ** 9, 10 ** 9, timeout=0)
    await asyncio.sleep(3)  # let half-open connections time out
    fds0, threads0, rss0 = proc_counts(pid)
    t1 = time.monotonic()
    await run_all(port, CYCLES, cycle)
    t2 = time.monotonic()
    await run_all(port, DROPS, drop)
    t3 = time.monotonic()
    # Dropped half-handshakes and half-frames are closed by the peer's FIN/RST at
    # once, or at the latest by the request/read/INIT timeouts (2 s here).
    fds1, threads1, rss1 = await settle(pid, fds0, threads0, timeout=20)
    print("churn: %d cycles in %.1fs, %d drops in %.1fs; fds %d -> %d, threads %d -> %d, "
          "RSS %d -> %d kB (warm-up %.1fs)" % (CYCLES, t2 - t1, DROPS, t3 - t2, fds0, fds1,
                                               threads0, threads1, rss0, rss1, t1 - t0))
    assert server.alive()
    assert fds1 <= fds0, "file descriptors leaked: %d before, %d after" % (fds0, fds1)
    assert threads1 <= threads0, "threads leaked: %d before, %d after" % (threads0, threads1)
    if not sanitizer():  # ASan's quarantine keeps freed memory on purpose
        assert rss1 - rss0 < 8 * 1024, "RSS grew from %d kB to %d kB" % (rss0, rss1)
    # And the server still works.
    a = await zw.connect(server, "after-churn", name="A", mode=0)
    b = await zw.connect(server, "after-churn", name="B", mode=1)
    await a.append(b"still fine")
    await b.expect_raw(zw.exp_append(3, 0, b"still fine"))
    assert server.http("GET", "/socket?ping")[0] == 200
