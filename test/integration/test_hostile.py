"""Hostile input at the WebSocket and protocol level (bad input stays local):
frames no client library would send, written by hand (rawws.py). Each case closes
only the connection that sent it, with a log line saying why, while a bystander
session on the same server carries on; the server stays up for all of them.

One server for the module (start-up is the slow part); every case checks the
bystanders and the log afterwards, so a case that broke the server fails there.
"""

import asyncio
import re
import struct
import time

import pytest

import zwclient as zw
from conftest import Server
from procinfo import rss_kb, sanitizer
from rawws import (OP_BINARY, OP_CONT, OP_PING, OP_PONG, OP_TEXT, RawWS, binary, frame,
                   frame_header)
from zwclient import aiotest, exp_append

MAX_MSG = 65536
READ_TIMEOUT_MS = 1000
INIT_TIMEOUT_MS = 1500


@pytest.fixture(scope="module")
def hserver(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("hostile"), "srv", {
        "MaxConnections": 64, "MaxMessageBytes": MAX_MSG, "ReadTimeoutMs": READ_TIMEOUT_MS,
        "InitTimeoutMs": INIT_TIMEOUT_MS})
    s.start()
    yield s
    s.stop()
    if s.problems:
        print(s.log_tail())
    assert not s.problems, s.problems


def log_size(server):
    return server.log_path.stat().st_size


def log_since(server, pos):
    with open(server.log_path, "rb") as f:
        f.seek(pos)
        return f.read().decode("utf-8", "replace")


async def wait_log(server, pos, pattern, timeout=5):
    """A line matching `pattern` appears in the log after byte `pos`."""
    deadline = time.monotonic() + timeout
    while True:
        text = log_since(server, pos)
        if re.search(pattern, text):
            return text
        if time.monotonic() > deadline:
            raise AssertionError("no log line matching %r; log since the case:\n%s"
                                 % (pattern, text[-3000:]))
        await asyncio.sleep(0.05)


def init_v3(doc, mode=0, offset=0, initial=b"", max_message=0):
    return zw.enc_init(doc, version=3, mode=mode, offset=offset, initial=initial,
                       max_message_size=max_message)


_victims = [0]


async def joined(server):
    """A raw connection that has completed INIT on a document of its own (its
    catch-up APPEND is read)."""
    _victims[0] += 1
    ws = await RawWS.connect(server.port)
    await ws.send_binary(init_v3("hostile-victim-%d" % _victims[0]))
    f = await ws.read_frame()
    assert f is not None and f[0] == OP_BINARY and f[1][0] == zw.APPEND_V3, f
    return ws


class Bystanders:
    """Two clients of one document that must be unaffected by every case."""

    async def start(self, server):
        self.server = server
        self.doc = "bystanders-%d" % time.monotonic_ns()
        self.a = await zw.connect(server, self.doc, name="A", version=3, mode=2, initial=b"b;")
        self.b = await zw.connect(server, self.doc, name="B", version=2, mode=1)
        self.expected = b"b;"
        # A document that exists, for the cases that need one.
        c = await zw.connect(server, "hostile-existing", name="E", mode=0, initial=b"e")
        await c.close()
        return self

    async def check(self, note):
        await self.b.expect_nothing(0.05)
        chunk = b"alive after %s;" % note.encode()
        off = self.a.length
        await self.a.append(chunk)
        await self.b.expect_raw(exp_append(2, off, chunk))
        self.expected += chunk
        assert self.server.alive(), "server died on case %s" % note
        assert self.a.full_doc == self.b.full_doc == self.expected


# (name, when, bytes to send, pattern of the server's log line about the close)
#   when: "pre" = right after the upgrade, "post" = after a successful INIT.
FRAME_CASES = [
    # payload lengths far beyond anything: refused from the header, nothing allocated
    # (a 64-bit length with its top bit set is a protocol error before any limit)
    ("len-2^63", "pre", frame_header(OP_BINARY, 1 << 63) + b"x" * 100, r"64-bit length with the top bit set"),
    ("len-2^64-1", "post", frame_header(OP_BINARY, (1 << 64) - 1) + b"x" * 100,
     r"64-bit length with the top bit set"),
    ("len-2^32-1", "post", frame_header(OP_BINARY, (1 << 32) - 1) + b"x" * 100,
     r"over the limit"),
    ("len-2^32+1", "pre", frame_header(OP_BINARY, (1 << 32) + 1), r"over the limit"),
    ("len-2^31", "post", frame_header(OP_BINARY, 1 << 31) + b"x" * 1000, r"over the limit"),
    ("len-1GB", "post", frame_header(OP_BINARY, 1 << 30) + b"\x05\x00" + b"y" * (1 << 20),
     r"1073741824 bytes, over the limit"),
    ("len-max+1-16bit", "post", frame_header(OP_BINARY, MAX_MSG + 1) + b"z" * 10,
     r"65537 bytes, over the limit"),
    ("ping-over-limit", "post", frame_header(OP_PING, 1 << 40), r"control frame longer than 125"),
    # frame types the protocol does not use (text frames are read as binary)
    ("text", "pre", frame(OP_TEXT, b"\x01"), r"message shorter"),
    ("text-after-init", "post", frame(OP_TEXT, b"h"), r"message shorter"),
    ("reserved-opcode-3", "post", frame(0x3, b"\x02\x00"), r"unknown opcode"),
    ("reserved-opcode-b", "pre", frame(0xB, b""), r"unknown opcode"),
    ("ws-continuation-without-start", "post", frame(OP_CONT, b"\x05\x00abc"),
     r"continuation without a message"),
    ("ws-new-message-inside-fragmented", "post",
     frame(OP_BINARY, b"\x04\x00", fin=False) + frame(OP_BINARY, b"\x04\x00"),
     r"new message inside a fragmented one"),
    ("ws-fragments-over-limit", "post",
     b"".join([frame(OP_BINARY, b"\x04\x00" + b"f" * 30000, fin=False)]
              + [frame(OP_CONT, b"f" * 30000, fin=False) for _ in range(3)]),
     r"message too big"),
    # zero-byte and one-byte messages
    ("zero-byte-binary-pre", "pre", binary(b""), r"protocol error: message shorter"),
    ("zero-byte-binary-post", "post", binary(b""), r"protocol error: message shorter"),
    ("one-byte-binary", "post", binary(b"\x05"), r"protocol error: message shorter"),
    ("zero-byte-fragments", "post",
     frame(OP_BINARY, b"", fin=False) + frame(OP_CONT, b"", fin=True),
     r"protocol error: message shorter"),
    # protocol-level continuations and INIT sequence
    ("continuation-without-start", "post", binary(b"\xff\x00abc"),
     r"continuation out of sequence"),
    ("continuation-as-first-message", "pre", binary(b"\xff\x01abc"),
     r"continuation out of sequence"),
    ("new-message-inside-continued", "post",
     binary(b"\x04\x01\x00\x00") + binary(b"\x04\x00\x00\x00\x00\x00"),
     r"continuation out of sequence"),
    ("continued-over-limit", "post",
     binary(b"\x04\x01" + b"c" * 40000) + binary(b"\xff\x01" + b"c" * 40000),
     r"message too big"),
    ("init-twice", "post", binary(init_v3("hostile-victim")), r"second INIT"),
    ("append-before-init", "pre", binary(zw.enc_append(0, b"x")), r"not INIT"),
    ("init-docid-len-0", "pre", binary(init_v3("")), r"document id is empty"),
    ("init-v3-docid-len-2^32-1", "pre",
     binary(struct.pack(">BBHIBIQI", 1, 0, 3, 0, 0, 0, 0, 0xFFFFFFFF) + b"doc"),
     r"bad INIT: message shorter"),
    ("init-v2-docid-len-255-past-end", "pre",
     binary(struct.pack(">BBHIBQB", 1, 0, 2, 0, 0, 0, 255) + b"doc"),
     r"bad INIT: message shorter"),
    ("init-offset-2^64-1", "pre",
     binary(zw.enc_init("hostile-existing", version=3, mode=1, offset=(1 << 64) - 1)),
     r"invalid offset"),
    ("set-key-name-len-2^32-1", "post",
     binary(struct.pack(">BBHBIII", 3, 0, 1, 0, 0, 1, 0xFFFFFFFF) + b"abc"),
     r"bad SET KEY: message shorter"),
    ("set-key-value-len-2^32-1", "post",
     binary(struct.pack(">BBHBIII", 3, 0, 1, 0, 0, 1, 1) + b"k"
            + struct.pack(">I", 0xFFFFFFFF) + b"v"),
     r"bad SET KEY: message shorter"),
    ("broadcast-len-2^32-1", "post", binary(struct.pack(">BBI", 4, 0, 0xFFFFFFFF) + b"abc"),
     r"bad BROADCAST: message shorter"),
    ("append-v3-short", "post", binary(b"\x05\x00\x00\x00\x00\x00\x00"),
     r"bad APPEND: message shorter"),
]


async def run_case(server, when, data, pattern):
    pos = log_size(server)
    ws = await joined(server) if when == "post" else await RawWS.connect(server.port)
    try:
        await ws.send(data)
    except ConnectionError:
        pass  # the server may close before everything is written
    frames = await ws.wait_closed(timeout=5)
    await ws.close()
    # Nothing but an ERROR (and the close frame) may come back.
    for op, payload in frames:
        assert op in (0x8, OP_BINARY), (op, payload[:40])
        if op == OP_BINARY:
            assert payload[0] == zw.ERROR, payload[:40]
    return await wait_log(server, pos, pattern)


@pytest.mark.parametrize("name,when,data,pattern", FRAME_CASES, ids=[c[0] for c in FRAME_CASES])
@aiotest(timeout=30)
async def test_hostile_frame(hserver, name, when, data, pattern):
    by = await Bystanders().start(hserver)
    await run_case(hserver, when, data, pattern)
    await by.check(name)


@aiotest(timeout=30)
async def test_all_cases_back_to_back(hserver):
    """Every case on one server in a row with live traffic in between, then the
    server still answers HTTP and its health check."""
    by = await Bystanders().start(hserver)
    for name, when, data, pattern in FRAME_CASES:
        await run_case(hserver, when, data, pattern)
        await by.check(name)
    assert hserver.http("GET", "/socket")[0] == 200
    assert hserver.http("GET", "/socket?ping")[0] == 200


@aiotest(timeout=60)
async def test_many_huge_announced_frames_cost_nothing(hserver):
    """40 connections each announcing a 2 GB frame and sending 256 KB of it: refused
    from the header, so memory does not grow by the announced sizes (nor by what was
    sent)."""
    by = await Bystanders().start(hserver)
    before = rss_kb(hserver.proc.pid)
    pos = log_size(hserver)
    conns = [await joined(hserver) for _ in range(40)]
    for ws in conns:
        try:
            await ws.send(frame_header(OP_BINARY, 0x7FFF0000) + b"\x05\x00" + b"q" * (256 << 10))
        except ConnectionError:
            pass
    for ws in conns:
        await ws.wait_closed(timeout=10)
        await ws.close()
    text = log_since(hserver, pos)
    assert text.count("over the limit") >= 40, text[-2000:]
    after = rss_kb(hserver.proc.pid)
    if not sanitizer():
        assert after - before < 64 * 1024, "RSS grew from %d kB to %d kB" % (before, after)
    await by.check("huge frames")


# ---- time limits on incomplete frames -------------------------------------------

@aiotest(timeout=30)
async def test_trickled_frame_after_init_is_cut(hserver):
    """A frame trickled one byte at a time (slower than ReadTimeoutMs allows for its
    size) is cut off: the connection is closed with a log line, not kept forever."""
    by = await Bystanders().start(hserver)
    pos = log_size(hserver)
    ws = await joined(hserver)
    msg = zw.enc_append(0, b"t" * 200)
    data = frame_header(OP_BINARY, len(msg)) + msg
    t0 = time.monotonic()
    closed_at = None
    for i in range(len(data)):
        try:
            await ws.send(data[i:i + 1])
        except ConnectionError:
            closed_at = time.monotonic()
            break
        f = None
        try:
            f = await asyncio.wait_for(ws.reader.read(1), 0.25)
        except asyncio.TimeoutError:
            continue
        if not f:
            closed_at = time.monotonic()
            break
    assert closed_at is not None, "trickling client still connected after %d bytes" % len(data)
    elapsed = closed_at - t0
    assert elapsed < READ_TIMEOUT_MS / 1000 * 2 + 3, elapsed
    await ws.close()
    await wait_log(hserver, pos, r"not complete in time")
    await by.check("trickle")


@aiotest(timeout=30)
async def test_half_header_after_init_is_cut(hserver):
    """Half a frame header, then silence: closed after about ReadTimeoutMs."""
    by = await Bystanders().start(hserver)
    pos = log_size(hserver)
    ws = await joined(hserver)
    t0 = time.monotonic()
    await ws.send(frame_header(OP_BINARY, 70000)[:5])
    await ws.wait_closed(timeout=READ_TIMEOUT_MS / 1000 + 5)
    assert time.monotonic() - t0 >= READ_TIMEOUT_MS / 1000 * 0.9
    await ws.close()
    await wait_log(hserver, pos, r"header not complete in time")
    await by.check("half header")


@aiotest(timeout=30)
async def test_stalled_payload_after_init_is_cut(hserver):
    """A frame header announcing 1000 bytes, 10 of them, then silence."""
    by = await Bystanders().start(hserver)
    pos = log_size(hserver)
    ws = await joined(hserver)
    await ws.send(frame_header(OP_BINARY, 1000) + b"\x05\x00" + b"s" * 8)
    await ws.wait_closed(timeout=READ_TIMEOUT_MS / 1000 + 5)
    await ws.close()
    await wait_log(hserver, pos, r"frame of 1000 bytes not complete in time \(10 received\)")
    await by.check("stalled payload")


@pytest.mark.parametrize("what", ["nothing", "half-header", "partial-payload"])
@aiotest(timeout=30)
async def test_no_init_is_cut(server_factory, what):
    """Before INIT, whatever the connection is doing (silent, or stuck in a frame),
    InitTimeoutMs closes it (here with a ReadTimeoutMs far longer)."""
    server = server_factory(MaxConnections=16, InitTimeoutMs=1000, ReadTimeoutMs=600000)
    pos = log_size(server)
    ws = await RawWS.connect(server.port)
    if what == "half-header":
        await ws.send(frame_header(OP_BINARY, 70000)[:3])
    elif what == "partial-payload":
        await ws.send(frame_header(OP_BINARY, 5000) + b"\x01\x00" + b"p" * 100)
    t0 = time.monotonic()
    await ws.wait_closed(timeout=8)
    assert time.monotonic() - t0 < 6
    await ws.close()
    await wait_log(server, pos, r"no INIT within the time allowed")


@aiotest(timeout=30)
async def test_ping_and_pong_frames_are_harmless(hserver):
    """Control frames (ping with a payload, unsolicited pong) keep the connection."""
    ws = await joined(hserver)
    await ws.send(frame(OP_PING, b"p" * 125))
    f = await ws.read_frame()
    assert f == (OP_PONG, b"p" * 125), f
    await ws.send(frame(OP_PONG, b"unsolicited"))
    await ws.send(binary(zw.enc_append(0, b"after-pings")))
    f = await ws.read_frame()
    assert f[0] == OP_BINARY and f[1][0] == zw.ACK, f
    await ws.close()


@pytest.mark.parametrize("what", ["huge-header", "huge-request-line", "bad-ws-version",
                                  "no-key"])
@aiotest(timeout=30)
async def test_hostile_upgrade_requests(hserver, what):
    """Hostile HTTP before any WebSocket: answered with an error or closed, never
    upgraded, and the server carries on."""
    by = await Bystanders().start(hserver)
    ws = await RawWS.connect(hserver.port, upgrade=False)
    if what == "huge-header":
        req = (b"GET /socket HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100000 + b"\r\n\r\n")
    elif what == "huge-request-line":
        req = b"GET /socket?" + b"q" * 100000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    elif what == "bad-ws-version":
        req = ws.handshake_bytes().replace(b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 99")
    else:
        req = re.sub(rb"Sec-WebSocket-Key: [^\r]*\r\n", b"", ws.handshake_bytes())
    try:
        await ws.send(req)
        head = await asyncio.wait_for(ws.reader.read(4096), 10)
    except ConnectionError:
        head = b""
    assert not head.startswith(b"HTTP/1.1 101"), head[:200]
    await ws.close()
    await by.check(what)
