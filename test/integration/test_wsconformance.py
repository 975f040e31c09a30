"""WebSocket conformance of the connection layer (RFC 6455), in the categories of the
Autobahn TestSuite that apply to a server of binary messages: framing, ping/pong,
reserved bits, opcodes, fragmentation, close handling and limits. Written as our own
cases with a hand-made client (rawws.py) that sends what libraries would not, plus
python-websockets for the clean close a real client sees.

One server for the module; each case opens its own connection.
"""

import asyncio
import struct

import pytest
import websockets

import zwclient as zw
from conftest import Server
from rawws import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, RawWS, binary,
                   frame, frame_header)
from zwclient import aiotest, enc_append, enc_init, exp_ack, exp_append

MAX_MSG = 256 * 1024


@pytest.fixture(scope="module")
def wserver(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("wsconf"), "srv", {"MaxMessageBytes": MAX_MSG})
    s.start()
    yield s
    s.stop()
    assert not s.problems, s.problems


_docs = iter(range(1, 1 << 30))


async def joined(server, version=3):
    """A raw connection that has sent INIT for a fresh document and read its catch-up."""
    ws = await RawWS.connect(server.port)
    await ws.send(binary(enc_init("wsconf-%d" % next(_docs), version=version)))
    op, payload = await ws.read_frame()
    assert op == OP_BINARY and payload == exp_append(version, 0, b""), payload
    return ws


async def expect_close(ws, code, timeout=5):
    """The server's next frames end with a close frame carrying `code`, then EOF."""
    frames = await ws.wait_closed(timeout)
    closes = [p for op, p in frames if op == OP_CLOSE]
    assert closes, "no close frame before the end; frames: %r" % frames[:5]
    got = struct.unpack(">H", closes[-1][:2])[0] if len(closes[-1]) >= 2 else 1005
    assert got == code, "close code %d, expected %d (frames %r)" % (got, code, frames[:5])
    return frames


async def still_works(ws, offset=0):
    """The connection still takes an APPEND and answers it."""
    await ws.send(binary(enc_append(offset, b"ok")))
    op, payload = await ws.read_frame()
    assert (op, payload) == (OP_BINARY, exp_ack(1, offset + 2))


# ---- framing: every length encoding, both ways ----

@pytest.mark.parametrize("size", [0, 1, 115, 116, 125, 126, 65525, 65535, 65536, 200000])
@aiotest()
async def test_payload_lengths(wserver, size):
    ws = await joined(wserver)
    data = bytes(i & 0xFF for i in range(size))
    await ws.send(binary(enc_append(0, data)))
    op, payload = await ws.read_frame()
    assert (op, payload) == (OP_BINARY, exp_ack(1, size))
    reader = await RawWS.connect(wserver.port)  # the catch-up comes back in one frame
    doc = "wsconf-%d" % (next(_docs) - 1)
    await reader.send(binary(enc_init(doc, max_message_size=1 << 20)))
    op, payload = await reader.read_frame()
    assert payload == exp_append(3, 0, data)
    await ws.close()
    await reader.close()


@aiotest()
async def test_text_frames_are_read_as_binary(wserver):
    ws = await RawWS.connect(wserver.port)
    await ws.send(frame(OP_TEXT, enc_init("wsconf-text")))
    op, payload = await ws.read_frame()
    assert payload == exp_append(3, 0, b"")
    data = b"\xff\xfe not utf-8"
    await ws.send(frame(OP_TEXT, enc_append(0, data)))
    op, payload = await ws.read_frame()
    assert payload == exp_ack(1, len(data))
    await ws.close()


@aiotest()
async def test_unmasked_frame_fails_with_1002(wserver):
    ws = await RawWS.connect(wserver.port)
    await ws.send(frame(OP_BINARY, enc_init("wsconf-unmasked"), mask=False))
    await expect_close(ws, 1002)


# ---- ping/pong ----

@pytest.mark.parametrize("size", [0, 1, 125])
@aiotest()
async def test_ping_is_answered_with_its_payload(wserver, size):
    ws = await joined(wserver)
    await ws.send(frame(OP_PING, bytes(range(size))))
    op, payload = await ws.read_frame()
    assert (op, payload) == (OP_PONG, bytes(range(size)))
    await still_works(ws)
    await ws.close()


@aiotest()
async def test_ping_over_125_bytes_fails(wserver):
    ws = await joined(wserver)
    await ws.send(frame(OP_PING, b"x" * 126))
    await expect_close(ws, 1002)


@aiotest()
async def test_fragmented_ping_fails(wserver):
    ws = await joined(wserver)
    await ws.send(frame(OP_PING, b"ab", fin=False))
    await expect_close(ws, 1002)


@aiotest()
async def test_unsolicited_pong_is_ignored(wserver):
    ws = await joined(wserver)
    await ws.send(frame(OP_PONG, b"hello"))
    await still_works(ws)
    await ws.close()


# ---- reserved bits and opcodes ----

@pytest.mark.parametrize("rsv", [1, 2, 4])
@pytest.mark.parametrize("opcode", [OP_BINARY, OP_TEXT, OP_PING])
@aiotest()
async def test_reserved_bits_fail(wserver, rsv, opcode):
    ws = await joined(wserver)
    await ws.send(frame(opcode, b"\x04\x00\x00\x00\x00\x00", rsv=rsv))
    await expect_close(ws, 1002)


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 11, 12, 13, 14, 15])
@aiotest()
async def test_reserved_opcodes_fail(wserver, opcode):
    ws = await joined(wserver)
    await ws.send(frame(opcode, b"x"))
    await expect_close(ws, 1002)


# ---- fragmentation ----

@pytest.mark.parametrize("piece", [1, 2, 7, 1000])
@aiotest()
async def test_fragmented_message(wserver, piece):
    ws = await joined(wserver)
    msg = enc_append(0, b"fragmented message " * 20)
    chunks = [msg[i:i + piece] for i in range(0, len(msg), piece)]
    out = b""
    for i, c in enumerate(chunks):
        out += frame(OP_BINARY if i == 0 else OP_CONT, c, fin=i == len(chunks) - 1)
    await ws.send(out)
    op, payload = await ws.read_frame()
    assert payload == exp_ack(1, 20 * 19)
    await ws.close()


@aiotest()
async def test_pings_between_fragments(wserver):
    ws = await joined(wserver)
    msg = enc_append(0, b"0123456789")
    await ws.send(frame(OP_BINARY, msg[:5], fin=False) + frame(OP_PING, b"p1")
                  + frame(OP_CONT, msg[5:12], fin=False) + frame(OP_PING, b"p2")
                  + frame(OP_CONT, msg[12:], fin=True))
    seen = [await ws.read_frame() for _ in range(3)]
    assert seen == [(OP_PONG, b"p1"), (OP_PONG, b"p2"), (OP_BINARY, exp_ack(1, 10))]
    await ws.close()


@aiotest()
async def test_continuation_without_start_fails(wserver):
    ws = await joined(wserver)
    await ws.send(frame(OP_CONT, b"xx", fin=True))
    await expect_close(ws, 1002)


@aiotest()
async def test_new_message_inside_fragmented_one_fails(wserver):
    ws = await joined(wserver)
    await ws.send(frame(OP_BINARY, b"\x05\x00", fin=False) + frame(OP_BINARY, b"x"))
    await expect_close(ws, 1002)


# ---- close handling ----

@aiotest()
async def test_close_without_status_is_echoed_empty(wserver):
    ws = await joined(wserver)
    await ws.send(frame(OP_CLOSE, b""))
    frames = await ws.wait_closed()
    assert frames == [(OP_CLOSE, b"")]


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011,
                                  3000, 3999, 4000, 4999])
@aiotest()
async def test_valid_close_codes_are_echoed(wserver, code):
    ws = await joined(wserver)
    await ws.send(frame(OP_CLOSE, struct.pack(">H", code) + b"bye"))
    await expect_close(ws, code)


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535])
@aiotest()
async def test_invalid_close_codes_fail(wserver, code):
    ws = await joined(wserver)
    await ws.send(frame(OP_CLOSE, struct.pack(">H", code)))
    await expect_close(ws, 1002)


@aiotest()
async def test_close_payload_of_one_byte_fails(wserver):
    ws = await joined(wserver)
    await ws.send(frame(OP_CLOSE, b"\x03"))
    await expect_close(ws, 1002)


@aiotest()
async def test_data_after_close_is_ignored(wserver):
    ws = await joined(wserver)
    await ws.send(frame(OP_CLOSE, struct.pack(">H", 1000)) + binary(enc_append(0, b"late")))
    frames = await expect_close(ws, 1000)
    assert all(op == OP_CLOSE for op, _ in frames), frames


@aiotest()
async def test_library_client_sees_a_clean_close(wserver):
    async with websockets.connect(wserver.url, compression=None) as ws:
        await ws.send(enc_init("wsconf-clean"))
        await ws.recv()
    assert ws.close_code == 1000  # echoed, not 1006 (abnormal)
    assert ws.close_rcvd is not None and ws.close_rcvd.code == 1000


@aiotest()
async def test_refusal_ends_with_error_then_close_frame(wserver):
    ws = await RawWS.connect(wserver.port)
    await ws.send(binary(enc_init("wsconf-missing", mode=1)))
    frames = await ws.wait_closed()
    assert frames[0] == (OP_BINARY, zw.exp_error(1))
    assert frames[-1][0] == OP_CLOSE and frames[-1][1][:2] == struct.pack(">H", 1000)


# ---- limits ----

@aiotest()
async def test_frame_over_limit_gets_error_and_1009(wserver):
    ws = await joined(wserver)
    # Only the header: the size is refused before any payload is read.
    await ws.send(frame_header(OP_BINARY, MAX_MSG + 1))
    frames = await expect_close(ws, 1009)
    errors = [zw.Msg(p) for op, p in frames if op == OP_BINARY]
    assert errors and errors[0].type == zw.ERROR and errors[0].code == 0
    assert str(MAX_MSG).encode() in errors[0].raw, errors[0].raw


@aiotest()
async def test_fragments_over_limit_get_error_and_1009(wserver):
    ws = await joined(wserver)
    half = MAX_MSG // 2 + 1
    await ws.send(frame(OP_BINARY, b"\x05\x00" + b"x" * (half - 2), fin=False)
                  + frame(OP_CONT, b"y" * half, fin=True))
    await expect_close(ws, 1009)


@aiotest()
async def test_logical_message_over_limit_gets_error_and_1009(wserver):
    ws = await joined(wserver)
    first = b"\x05\x01" + b"x" * (MAX_MSG // 2)
    more = b"\xff\x00" + b"y" * (MAX_MSG // 2)
    await ws.send(binary(first) + binary(more))
    await expect_close(ws, 1009)


@aiotest()
async def test_message_at_limit_is_accepted(wserver):
    ws = await joined(wserver)
    data = b"z" * (MAX_MSG - 14)  # APPEND v3 header is 14 bytes
    await ws.send(binary(enc_append(0, data)))
    op, payload = await ws.read_frame()
    assert payload == exp_ack(1, len(data))
    await ws.close()
