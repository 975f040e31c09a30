"""permessage-deflate (RFC 7692): negotiated when offered, compressed frames both ways,
without context takeover (each message inflates on its own), small messages sent as
they are, and hostile compressed input (bombs, corrupt streams, RSV1 on the wrong
frame) refused with the documented close while other clients carry on.

A hand-made client (rawws.py) sees the wire: RSV1 bits and the compressed bytes,
inflated here with Python's zlib as an independent check.
"""

import asyncio
import base64
import json
import os
import re
import struct
import zlib

import pytest
import websockets

import zwclient as zw
from conftest import Server
from procinfo import rss_kb
from rawws import OP_BINARY, OP_CLOSE, OP_CONT, RawWS, frame
from zwclient import aiotest, enc_append, enc_init, exp_ack, exp_append

MAX_MSG = 1 << 20
TAIL = b"\x00\x00\xff\xff"


@pytest.fixture(scope="module")
def zserver(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("deflate"), "srv", {"MaxMessageBytes": MAX_MSG})
    s.start()
    yield s
    s.stop()
    assert not s.problems, s.problems


def drawing(n_shapes):
    """Zwibbler-like document text: JSON shapes with points and styles."""
    shapes = []
    for i in range(n_shapes):
        shapes.append({"id": i, "type": "PathNode", "fillStyle": "#%06x" % (i * 2654435761 & 0xFFFFFF),
                       "strokeStyle": "#000000", "lineWidth": 2 + i % 3,
                       "points": [[(i * 7 + k) % 800, (i * 13 + k * 3) % 600] for k in range(8)]})
    return json.dumps(shapes).encode()


def deflate(data):
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(TAIL)
    return out[:-4]


def inflate(data):
    d = zlib.decompressobj(-15)
    return d.decompress(data + TAIL)


class DeflateWS(RawWS):
    """RawWS that offers permessage-deflate and reads RSV1."""

    def handshake_bytes(self, path="/socket", port=0):
        key = base64.b64encode(os.urandom(16)).decode()
        return ("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
                % (path, key)).encode()

    async def handshake(self, path="/socket", timeout=5):
        status, head = await super().handshake(path, timeout)
        self.extensions = re.findall(rb"(?i)sec-websocket-extensions: *([^\r]*)", head)
        return status, head

    async def read_wire(self, timeout=5):
        """(rsv1, opcode, payload) of the next frame."""
        h = await asyncio.wait_for(self.reader.readexactly(2), timeout)
        n = h[1] & 0x7F
        if n == 126:
            n, = struct.unpack(">H", await self.reader.readexactly(2))
        elif n == 127:
            n, = struct.unpack(">Q", await self.reader.readexactly(8))
        payload = await asyncio.wait_for(self.reader.readexactly(n), timeout) if n else b""
        return bool(h[0] & 0x40), h[0] & 0x0F, payload

    async def read_message(self, timeout=5):
        """One server message, inflated when RSV1 says so. Returns (compressed, bytes)."""
        rsv1, op, payload = await self.read_wire(timeout)
        assert op == OP_BINARY, (op, payload[:40])
        return rsv1, inflate(payload) if rsv1 else payload


async def open_deflate(server, doc, **init):
    ws = await DeflateWS.connect(server.port)
    assert ws.extensions == [b"permessage-deflate; server_no_context_takeover; "
                             b"client_no_context_takeover"], ws.extensions
    await ws.send(frame(OP_BINARY, enc_init(doc, **init)))
    return ws


@aiotest()
async def test_catch_up_is_compressed_and_inflates_to_the_document(zserver):
    doc = drawing(400)
    assert len(doc) > 50000
    writer = await zw.connect(zserver, "z-catch-up", mode=2, initial=doc)
    ws = await open_deflate(zserver, "z-catch-up", max_message_size=1 << 20)
    rsv1, payload = await ws.read_message()
    assert rsv1
    assert payload == exp_append(3, 0, doc)
    await ws.close()
    await writer.close()


@aiotest()
async def test_split_messages_compress_piece_by_piece(zserver):
    doc = drawing(300)
    writer = await zw.connect(zserver, "z-split", mode=2, initial=doc)
    ws = await open_deflate(zserver, "z-split", max_message_size=4096)
    whole = exp_append(3, 0, doc)
    got = []
    while True:
        rsv1, piece = await ws.read_message()
        assert rsv1 and len(piece) <= 4096
        got.append(piece)
        if piece[1] == 0:
            break
    assert zw.split(whole, 4096) == got
    await ws.close()
    await writer.close()


@aiotest()
async def test_compressed_appends_from_the_client(zserver):
    ws = await open_deflate(zserver, "z-upload")
    rsv1, first = await ws.read_message()
    assert first == exp_append(3, 0, b"")
    data = drawing(50)
    await ws.send(frame(OP_BINARY, deflate(enc_append(0, data)), rsv=4))
    rsv1, ack = await ws.read_message()
    assert not rsv1 and ack == exp_ack(1, len(data))  # small: sent as it is
    # a compressed message in fragments: RSV1 on the first frame only
    more = drawing(60)
    z = deflate(enc_append(len(data), more))
    third = len(z) // 3
    await ws.send(frame(OP_BINARY, z[:third], fin=False, rsv=4)
                  + frame(OP_CONT, z[third:2 * third], fin=False)
                  + frame(OP_CONT, z[2 * third:], fin=True))
    rsv1, ack = await ws.read_message()
    assert ack == exp_ack(1, len(data) + len(more))
    assert await zw.fetch_doc(zserver, "z-upload") == data + more
    await ws.close()


@aiotest()
async def test_fan_out_is_compressed_for_deflate_clients_only(zserver):
    writer = await zw.connect(zserver, "z-fanout", mode=2, initial=b"")
    plain = await zw.connect(zserver, "z-fanout", name="plain", compression=None, mode=1)
    readers = [await open_deflate(zserver, "z-fanout") for _ in range(3)]
    for r in readers:
        assert (await r.read_message())[1] == exp_append(3, 0, b"")
    change = drawing(20)
    await writer.append(change)
    wire = [await r.read_wire() for r in readers]
    assert all(w[0] for w in wire)
    assert len({w[2] for w in wire}) == 1  # the same compressed bytes for everyone
    assert inflate(wire[0][2]) == exp_append(3, 0, change)
    await plain.expect_raw(exp_append(3, 0, change))
    small = b"tiny"
    await writer.append(small)
    rsv1, payload = await readers[0].read_message()
    assert not rsv1 and payload == exp_append(3, len(change), small)
    for r in readers:
        await r.close()
    await writer.close()
    await plain.close()


@aiotest()
async def test_library_client_round_trip(zserver):
    doc = drawing(100)
    async with websockets.connect(zserver.url, compression="deflate") as a:
        assert a.extensions and a.extensions[0].name == "permessage-deflate"
        await a.send(enc_init("z-lib", mode=2, initial=doc))
        assert await a.recv() == exp_append(3, len(doc), b"")
        await a.send(enc_append(len(doc), doc))
        assert await a.recv() == exp_ack(1, 2 * len(doc))
    assert await zw.fetch_doc(zserver, "z-lib") == doc + doc


# ---- hostile compressed input ----

async def expect_close(ws, code):
    frames = []
    while True:
        try:
            rsv1, op, payload = await ws.read_wire()
        except (asyncio.IncompleteReadError, ConnectionError):
            break
        frames.append((op, payload))
        if op == OP_CLOSE:
            break
    closes = [p for op, p in frames if op == OP_CLOSE]
    assert closes and struct.unpack(">H", closes[0][:2])[0] == code, frames[:4]
    return frames


@aiotest(timeout=30)
async def test_decompression_bomb_is_refused_within_the_limit(zserver):
    bystander = await zw.connect(zserver, "z-bystander", mode=0, initial=b"b")
    before = rss_kb(zserver.proc.pid)
    bomb = deflate(enc_append(0, b"\0" * (64 << 20)))  # 64 MiB of zeros in ~64 KiB
    assert len(bomb) < MAX_MSG
    conns = []
    for _ in range(8):
        ws = await open_deflate(zserver, "z-bomb")
        await ws.read_message()
        await ws.send(frame(OP_BINARY, bomb, rsv=4))
        conns.append(ws)
    for ws in conns:
        frames = await expect_close(ws, 1009)
        errors = [zw.Msg(p) for op, p in frames if op == OP_BINARY]
        assert errors and errors[0].type == zw.ERROR and errors[0].code == 0
        await ws.close()
    grown = rss_kb(zserver.proc.pid) - before
    assert grown < 64 * 1024, "RSS grew by %d KiB for bombs of 64 MiB each" % grown
    await bystander.append(b"still here")
    await bystander.close()
    assert await zw.fetch_doc(zserver, "z-bomb") == b""


@aiotest()
async def test_corrupt_stream_closes_with_1007(zserver):
    ws = await open_deflate(zserver, "z-corrupt")
    await ws.read_message()
    await ws.send(frame(OP_BINARY, b"\xff\xfe\xfd not deflate at all", rsv=4))
    await expect_close(ws, 1007)


@aiotest()
async def test_rsv1_on_a_continuation_frame_fails(zserver):
    ws = await open_deflate(zserver, "z-rsv1-cont")
    await ws.read_message()
    z = deflate(enc_append(0, b"abc" * 100))
    await ws.send(frame(OP_BINARY, z[:5], fin=False, rsv=4) + frame(OP_CONT, z[5:], rsv=4))
    await expect_close(ws, 1002)


@aiotest()
async def test_rsv1_without_negotiation_fails(zserver):
    ws = await RawWS.connect(zserver.port)
    await ws.send(frame(OP_BINARY, deflate(enc_init("z-none")), rsv=4))
    frames = await ws.wait_closed()
    assert frames and frames[-1][0] == OP_CLOSE and frames[-1][1][:2] == struct.pack(">H", 1002)


@aiotest()
async def test_idle_compressed_connections_hold_no_zlib_state(zserver):
    """Per-connection memory with deflate equals that without: no zlib state lives with
    a connection (about 256 KiB each if it did)."""
    async def cost(offer):
        cls = DeflateWS if offer else RawWS
        before = rss_kb(zserver.proc.pid)
        conns = []
        for i in range(200):
            ws = await cls.connect(zserver.port)
            await ws.send(frame(OP_BINARY, enc_init("z-idle-%d" % i)))
            await ws.read_frame()
            conns.append(ws)
        grown = rss_kb(zserver.proc.pid) - before
        for ws in conns:
            await ws.close()
        return grown
    plain = await cost(False)
    deflated = await cost(True)
    assert deflated < plain + 200 * 64, (plain, deflated)  # far below 200 x 256 KiB
