"""A minimal hand-written WebSocket client (RFC 6455) for hostile-input tests: it can
send frames no real client library would (wrong lengths, reserved opcodes, a 64-bit
length of 2^63, a header cut in half, a frame trickled one byte at a time).

asyncio streams; every function takes a timeout so a test can never hang on it.
"""

import asyncio
import base64
import os
import re
import struct

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def frame_header(opcode, length, *, fin=True, mask=True, rsv=0):
    """The header of one frame announcing `length` payload bytes (any 64-bit value),
    with a masking key of zero bytes when `mask` (so the payload needs no masking)."""
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    m = 0x80 if mask else 0
    if length < 126:
        h = struct.pack(">BB", b0, m | length)
    elif length < 65536:
        h = struct.pack(">BBH", b0, m | 126, length)
    else:
        h = struct.pack(">BBQ", b0, m | 127, length)
    return h + (b"\0\0\0\0" if mask else b"")


def frame(opcode, payload=b"", *, fin=True, mask=True, key=None, rsv=0):
    """One complete frame; masked with a random key unless `mask` is false."""
    payload = bytes(payload)
    if not mask:
        return frame_header(opcode, len(payload), fin=fin, mask=False, rsv=rsv) + payload
    key = key or os.urandom(4)
    h = frame_header(opcode, len(payload), fin=fin, mask=False, rsv=rsv)
    h = bytes([h[0], h[1] | 0x80]) + h[2:] + key
    masked = bytes(c ^ key[i & 3] for i, c in enumerate(payload))
    return h + masked


def binary(payload, **kw):
    return frame(OP_BINARY, payload, **kw)


class RawWS:
    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port, *, path="/socket", timeout=5, upgrade=True, rcvbuf=None):
        if rcvbuf is not None:
            import socket
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            s.setblocking(False)
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(s, ("127.0.0.1", port)),
                                   timeout)
            r, w = await asyncio.open_connection(sock=s)
        else:
            r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
        ws = cls(r, w)
        if upgrade:
            status, _ = await ws.handshake(path, timeout=timeout)
            if status != 101:
                ws.abort()
                raise AssertionError("upgrade answered %d" % status)
        return ws

    def handshake_bytes(self, path="/socket", port=0):
        key = base64.b64encode(os.urandom(16)).decode()
        return ("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n" % (path, port, key)).encode()

    async def handshake(self, path="/socket", timeout=5):
        """Sends the upgrade request; returns (status, raw response head)."""
        self.writer.write(self.handshake_bytes(path))
        await self.writer.drain()
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        m = re.match(rb"HTTP/1\.[01] (\d{3})", head)
        return (int(m.group(1)) if m else 0), head

    async def send(self, data):
        self.writer.write(data)
        await self.writer.drain()

    async def send_binary(self, payload):
        await self.send(binary(payload))

    async def read_frame(self, timeout=5):
        """(opcode, payload) of the next frame from the server; None at EOF/reset."""
        try:
            h = await asyncio.wait_for(self.reader.readexactly(2), timeout)
            n = h[1] & 0x7F
            if n == 126:
                n, = struct.unpack(">H", await asyncio.wait_for(self.reader.readexactly(2), timeout))
            elif n == 127:
                n, = struct.unpack(">Q", await asyncio.wait_for(self.reader.readexactly(8), timeout))
            payload = await asyncio.wait_for(self.reader.readexactly(n), timeout) if n else b""
            return h[0] & 0x0F, payload
        except (asyncio.IncompleteReadError, ConnectionError):
            return None

    async def wait_closed(self, timeout=5):
        """Reads until the server ends the connection (close frame and/or EOF). Returns
        the frames seen before. Fails if the connection is still open after `timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        frames = []
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError("server did not close the connection within %.1fs "
                                     "(frames so far: %r)" % (timeout, frames[:5]))
            try:
                f = await self.read_frame(left)
            except asyncio.TimeoutError:
                continue
            if f is None:
                return frames
            frames.append(f)
            if f[0] == OP_CLOSE:
                # After a close frame the server ends the TCP connection too.
                try:
                    rest = await asyncio.wait_for(self.reader.read(65536), max(left, 0.1))
                    while rest:
                        rest = await asyncio.wait_for(self.reader.read(65536), max(left, 0.1))
                except (ConnectionError, asyncio.TimeoutError):
                    pass
                return frames

    def abort(self):
        try:
            self.writer.transport.abort()
        except Exception:
            pass

    async def close(self):
        self.abort()
