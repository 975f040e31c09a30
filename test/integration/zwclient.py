"""A small, independent Zwibbler protocol client for the integration tests.

Written from docs/protocol.md only (not from the server's code). Built on the asyncio API
of python3-websockets 10.4.

Every WebSocket message the server sends is checked against docs/protocol.md, Framing (binary
only, continuation layout and sizes for the maxMessageSize this client announced) and
decoded per §2.2. Anything that breaks the contract is raised as ProtocolViolation from
the next receive call, so tests fail on it.

The client also keeps its view of the document (what it has been sent, plus what it
wrote and got ACKed) and checks the delivery rule of §3.7 strictly: every APPEND must
start exactly where the client's view ends (no gap, no duplicate).
"""

import asyncio
import contextlib
import struct

import websockets
from websockets.exceptions import ConnectionClosed

# Message types
INIT = 0x01
APPEND_V2 = 0x02
SET_KEY = 0x03
BROADCAST = 0x04
APPEND_V3 = 0x05
CONTINUATION = 0xFF
ERROR = 0x80
ACK = 0x81
KEY_INFO = 0x82
SET_KEY_ACK = 0x83

TYPE_NAMES = {
    INIT: "INIT", APPEND_V2: "APPEND(v2)", SET_KEY: "SET KEY", BROADCAST: "BROADCAST",
    APPEND_V3: "APPEND(v3)", CONTINUATION: "CONTINUATION", ERROR: "ERROR", ACK: "ACK",
    KEY_INFO: "KEY INFORMATION", SET_KEY_ACK: "SET KEY ACK",
}

# "APPEND" as a wildcard for expect(): whichever layout matches the client's version.
APPEND = "APPEND"

DEFAULT_MAX_MESSAGE = 102400
DEFAULT_TIMEOUT = 5.0

ERROR_TEXT = {
    0: b"unspecified",
    1: b"does not exist",
    2: b"already exists",
    3: b"invalid offset",
    4: b"access denied",
}


def tname(t):
    if t == APPEND:
        return "APPEND"
    return TYPE_NAMES.get(t, "0x%02x" % t)


class ProtocolViolation(AssertionError):
    """The server sent something docs/protocol.md does not allow."""


class ServerClosed(AssertionError):
    """The connection was closed while the test expected a message."""


# ---------------------------------------------------------------------------
# Encoders (client -> server), docs/protocol.md, Messages
# ---------------------------------------------------------------------------

def b(s):
    return s.encode() if isinstance(s, str) else bytes(s)


def enc_init(doc_id, *, version=3, max_message_size=0, mode=0, offset=0, initial=b"",
             generation=0):
    doc_id = b(doc_id)
    if version == 2:
        return (struct.pack(">BBHIBQB", INIT, 0, 2, max_message_size, mode, offset,
                            len(doc_id)) + doc_id + b(initial))
    return (struct.pack(">BBHIBIQI", INIT, 0, version, max_message_size, mode, generation,
                        offset, len(doc_id)) + doc_id + b(initial))


def enc_append(offset, data, *, version=3, generation=0):
    if version == 2:
        return struct.pack(">BBQ", APPEND_V2, 0, offset) + b(data)
    return struct.pack(">BBIQ", APPEND_V3, 0, generation, offset) + b(data)


def enc_set_key(name, value, *, old_version, new_version, request_id=1, lifetime=0):
    name, value = b(name), b(value)
    return (struct.pack(">BBHBIII", SET_KEY, 0, request_id, lifetime, old_version,
                        new_version, len(name)) + name
            + struct.pack(">I", len(value)) + value)


def enc_broadcast(data):
    data = b(data)
    return struct.pack(">BBI", BROADCAST, 0, len(data)) + data


def split(msg, max_size):
    """Splits one logical message into WebSocket messages per docs/protocol.md, Framing."""
    msg = bytes(msg)
    if max_size == 0:
        max_size = DEFAULT_MAX_MESSAGE
    assert max_size >= 3
    if len(msg) <= max_size:
        return [msg[:1] + b"\x00" + msg[2:]]
    frames = [msg[:1] + b"\x01" + msg[2:max_size]]
    pos = max_size
    while pos < len(msg):
        chunk = msg[pos:pos + max_size - 2]
        pos += len(chunk)
        frames.append(bytes([CONTINUATION, 1 if pos < len(msg) else 0]) + chunk)
    return frames


# Expected server -> client messages, byte-exact (docs/protocol.md, Messages)

def exp_append(version, offset, data):
    if version == 2:
        return struct.pack(">BBQ", APPEND_V2, 0, offset) + b(data)
    return struct.pack(">BBIQ", APPEND_V3, 0, 0, offset) + b(data)


def exp_ack(ack, length):
    return struct.pack(">BBHQ", ACK, 0, ack, length)


def exp_set_key_ack(ack, request_id):
    return struct.pack(">BBHH", SET_KEY_ACK, 0, ack, request_id)


def exp_key_info(entries):
    out = bytes([KEY_INFO, 0])
    for version, name, value in entries:
        name, value = b(name), b(value)
        out += struct.pack(">II", version, len(name)) + name + struct.pack(">I", len(value)) + value
    return out


def exp_error(code, text=None):
    if text is None:
        text = ERROR_TEXT[code]
    return struct.pack(">BBH", ERROR, 0, code) + b(text)


# ---------------------------------------------------------------------------
# Decoded server message
# ---------------------------------------------------------------------------

class Msg:
    def __init__(self, raw):
        self.raw = bytes(raw)
        self.type = raw[0]
        self.offset = self.data = self.generation = None
        self.code = self.text = None
        self.ack = self.length = None
        self.entries = None  # KEY INFO: list of (version, name, value)
        self.request_id = None
        self._decode()

    def _decode(self):
        r, t = self.raw, self.type
        if t == APPEND_V2:
            if len(r) < 10:
                raise ProtocolViolation("APPEND(v2) shorter than 10 bytes: %r" % r)
            self.offset, = struct.unpack_from(">Q", r, 2)
            self.data = r[10:]
        elif t == APPEND_V3:
            if len(r) < 14:
                raise ProtocolViolation("APPEND(v3) shorter than 14 bytes: %r" % r)
            self.generation, self.offset = struct.unpack_from(">IQ", r, 2)
            if self.generation != 0:
                raise ProtocolViolation("APPEND(v3) generation %d != 0" % self.generation)
            self.data = r[14:]
        elif t == BROADCAST:
            if len(r) < 6:
                raise ProtocolViolation("BROADCAST shorter than 6 bytes: %r" % r)
            n, = struct.unpack_from(">I", r, 2)
            self.data = r[6:]
            if n != len(self.data):
                raise ProtocolViolation("BROADCAST dataLength %d but %d bytes follow"
                                        % (n, len(self.data)))
        elif t == ERROR:
            if len(r) < 4:
                raise ProtocolViolation("ERROR shorter than 4 bytes: %r" % r)
            self.code, = struct.unpack_from(">H", r, 2)
            self.text = r[4:]
        elif t == ACK:
            if len(r) != 12:
                raise ProtocolViolation("ACK must be exactly 12 bytes, got %d: %r" % (len(r), r))
            self.ack, self.length = struct.unpack_from(">HQ", r, 2)
            if self.ack not in (0, 1, 2):
                raise ProtocolViolation("ACK with ack=%d" % self.ack)
        elif t == SET_KEY_ACK:
            if len(r) != 6:
                raise ProtocolViolation("SET KEY ACK must be exactly 6 bytes, got %r" % r)
            self.ack, self.request_id = struct.unpack_from(">HH", r, 2)
            if self.ack not in (0, 1):
                raise ProtocolViolation("SET KEY ACK with ack=%d" % self.ack)
        elif t == KEY_INFO:
            self.entries = []
            pos = 2
            while pos < len(r):
                if pos + 8 > len(r):
                    raise ProtocolViolation("KEY INFORMATION truncated entry header: %r" % r)
                version, nlen = struct.unpack_from(">II", r, pos)
                pos += 8
                if pos + nlen + 4 > len(r):
                    raise ProtocolViolation("KEY INFORMATION nameLength past end: %r" % r)
                name = r[pos:pos + nlen]
                pos += nlen
                vlen, = struct.unpack_from(">I", r, pos)
                pos += 4
                if pos + vlen > len(r):
                    raise ProtocolViolation("KEY INFORMATION valueLength past end: %r" % r)
                value = r[pos:pos + vlen]
                pos += vlen
                self.entries.append((version, name, value))
            if not self.entries:
                raise ProtocolViolation("KEY INFORMATION without entries")
        else:
            raise ProtocolViolation("server sent unknown message type 0x%02x: %r"
                                    % (t, r[:64]))

    def __repr__(self):
        t = tname(self.type)
        if self.type in (APPEND_V2, APPEND_V3):
            return "<%s offset=%d data=%r>" % (t, self.offset, _short(self.data))
        if self.type == ACK:
            return "<ACK ack=%d length=%d>" % (self.ack, self.length)
        if self.type == ERROR:
            return "<ERROR %d %r>" % (self.code, self.text)
        if self.type == SET_KEY_ACK:
            return "<SET KEY ACK ack=%d req=%d>" % (self.ack, self.request_id)
        if self.type == KEY_INFO:
            return "<KEY INFO %r>" % (self.entries,)
        if self.type == BROADCAST:
            return "<BROADCAST %r>" % (_short(self.data),)
        return "<%s %r>" % (t, _short(self.raw))


def _short(bs, n=60):
    if bs is None or len(bs) <= n:
        return bs
    return bs[:n] + b"...(%d bytes)" % len(bs)


_CLOSED = object()

# Every client opened inside run() is closed when the test's coroutine ends.
_open_clients = []


class Client:
    """One WebSocket connection speaking the Zwibbler protocol."""

    def __init__(self, ws, name):
        self.ws = ws
        self.name = name
        self.version = None          # protocol version sent in INIT
        self.max_message_size = None  # as announced in INIT (None before INIT)
        self.frames = []             # every raw WebSocket message received
        self.messages = []           # every logical message decoded
        self.split_messages = 0      # logical messages that arrived in >1 WebSocket message
        self.doc = None              # bytes of the document seen (from doc_base on)
        self.doc_base = 0
        self.created = None
        self.keys = {}               # name -> (version, value), from KEY INFORMATION
        self.pending = []            # [(offset, data)] APPENDs sent, waiting for ACK
        self.last_ack = None
        self.closed = False
        self._init = None
        self._partial = None
        self._q = asyncio.Queue()
        self._reader = asyncio.ensure_future(self._read())

    # ---- connection ----

    @classmethod
    async def open(cls, url, *, name="client", compression=None, timeout=DEFAULT_TIMEOUT,
                   extra_headers=None):
        ws = await asyncio.wait_for(
            websockets.connect(url, compression=compression, max_size=None, max_queue=None,
                               ping_interval=None, close_timeout=1, open_timeout=timeout,
                               extra_headers=extra_headers),
            timeout)
        c = cls(ws, name)
        _open_clients.append(c)
        return c

    async def close(self):
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 3)
        self._reader.cancel()
        with contextlib.suppress(BaseException):
            await self._reader
        if self in _open_clients:
            _open_clients.remove(self)

    async def abort(self):
        """Drops the TCP connection without a closing handshake."""
        with contextlib.suppress(Exception):
            self.ws.transport.abort()
        await self.close()

    @property
    def effective_max(self):
        if not self.max_message_size:
            return DEFAULT_MAX_MESSAGE
        return self.max_message_size

    # ---- receiving ----

    async def _read(self):
        try:
            async for frame in self.ws:
                if isinstance(frame, str):
                    self._q.put_nowait(ProtocolViolation(
                        "%s: server sent a text WebSocket message: %r" % (self.name, frame[:80])))
                    continue
                self.frames.append(frame)
                try:
                    self._feed(frame)
                except ProtocolViolation as e:
                    self._q.put_nowait(ProtocolViolation("%s: %s" % (self.name, e)))
        except ConnectionClosed:
            pass
        except Exception as e:  # pragma: no cover - unexpected
            self._q.put_nowait(e)
        finally:
            self._q.put_nowait(_CLOSED)

    def _feed(self, frame):
        mx = self.effective_max
        if len(frame) < 2:
            raise ProtocolViolation("WebSocket message shorter than 2 bytes: %r" % frame)
        t, more = frame[0], frame[1]
        if more not in (0, 1):
            raise ProtocolViolation("byte 1 (more) is %d: %r" % (more, frame[:16]))
        if len(frame) > mx:
            raise ProtocolViolation("WebSocket message of %d bytes exceeds maxMessageSize %d"
                                    % (len(frame), mx))
        if self._partial is None:
            if t == CONTINUATION:
                raise ProtocolViolation("continuation without a start")
            if more == 1:
                if len(frame) != mx:
                    raise ProtocolViolation(
                        "first piece of a split message is %d bytes, must be exactly "
                        "maxMessageSize %d" % (len(frame), mx))
                self._partial = bytearray(frame)
                self._partial[1] = 0
                self._partial_frames = [frame]
                return
            self._deliver(frame, [frame])
            return
        if t != CONTINUATION:
            raise ProtocolViolation("expected a continuation (0xFF), got type 0x%02x" % t)
        if more == 1 and len(frame) != mx:
            raise ProtocolViolation("non-final continuation is %d bytes, must be exactly "
                                    "maxMessageSize %d" % (len(frame), mx))
        self._partial += frame[2:]
        self._partial_frames.append(frame)
        if more == 0:
            msg = bytes(self._partial)
            self._partial = None
            if len(msg) <= mx:
                raise ProtocolViolation("message of %d bytes was split although it fits in "
                                        "maxMessageSize %d" % (len(msg), mx))
            self.split_messages += 1
            self._deliver(msg, self._partial_frames)

    def _deliver(self, raw, frames):
        m = Msg(raw)
        m.frames = frames  # the WebSocket messages it arrived in
        self.messages.append(m)
        self._q.put_nowait(m)

    def _length(self):
        return self.doc_base + len(self.doc)

    @property
    def length(self):
        """Length of the document as this client knows it."""
        assert self.doc is not None, "%s has no catch-up yet" % self.name
        return self._length()

    @property
    def full_doc(self):
        assert self.doc is not None and self.doc_base == 0, \
            "%s does not know the document from offset 0" % self.name
        return bytes(self.doc)

    def _apply(self, m):
        if m.type in (APPEND_V2, APPEND_V3):
            want = APPEND_V2 if self.version == 2 else APPEND_V3
            if m.type != want:
                raise ProtocolViolation("%s (protocol %s) got %s" % (self.name, self.version,
                                                                    tname(m.type)))
            if self.doc is None:
                self._apply_catchup(m)
                return
            if m.offset != self._length():
                kind = "gap" if m.offset > self._length() else "duplicate/overlap"
                raise ProtocolViolation(
                    "%s: APPEND at offset %d but the client has %d bytes (%s, docs/protocol.md, Delivery)"
                    % (self.name, m.offset, self._length(), kind))
            self.doc += m.data
        elif m.type == ACK:
            self.last_ack = m
            if self.pending:
                off, data = self.pending.pop(0)
                if m.ack == 1:
                    if m.length != off + len(data):
                        raise ProtocolViolation("%s: ACK length %d for an append of %d bytes at %d"
                                                % (self.name, m.length, len(data), off))
                    if self.doc is not None:
                        if self._length() != off:
                            raise ProtocolViolation(
                                "%s: ACK for append at %d while the client has %d bytes"
                                % (self.name, off, self._length()))
                        self.doc += data
                elif m.ack == 0:
                    if m.length == off:
                        raise ProtocolViolation("%s: NACK at offset %d although length is %d"
                                                % (self.name, off, m.length))
        elif m.type == KEY_INFO:
            for version, name, value in m.entries:
                self.keys[name] = (version, value)

    def _apply_catchup(self, m):
        init_offset, initial, known = self._init
        if m.offset == init_offset:
            self.created = False
            if known is not None:
                self.doc_base = 0
                self.doc = bytearray(known[:init_offset]) + m.data
            else:
                self.doc_base = init_offset
                self.doc = bytearray(m.data)
        elif not m.data and m.offset == len(initial):
            self.created = True
            self.doc_base = 0
            self.doc = bytearray(initial)
        else:
            raise ProtocolViolation(
                "%s: catch-up APPEND at offset %d with %d bytes; INIT offset was %d and "
                "initialData %d bytes" % (self.name, m.offset, len(m.data), init_offset,
                                          len(initial)))

    async def next(self, timeout=DEFAULT_TIMEOUT):
        """The next logical message (applied to the client's view)."""
        if self.closed:
            raise ServerClosed("%s: connection already closed" % self.name)
        try:
            item = await asyncio.wait_for(self._q.get(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError("%s: no message within %.1fs" % (self.name, timeout)) from None
        if item is _CLOSED:
            self.closed = True
            raise ServerClosed("%s: connection closed by the server (close code %s)"
                               % (self.name, self.ws.close_code))
        if isinstance(item, BaseException):
            raise item
        self._apply(item)
        return item

    def _type_ok(self, m, t):
        if t == APPEND:
            return m.type in (APPEND_V2, APPEND_V3)
        return m.type == t

    async def expect(self, t, timeout=DEFAULT_TIMEOUT):
        """The next message, which must be of type t."""
        m = await self.next(timeout)
        if not self._type_ok(m, t):
            raise AssertionError("%s: expected %s, got %r" % (self.name, tname(t), m))
        return m

    async def expect_raw(self, raw, timeout=DEFAULT_TIMEOUT):
        """The next message, which must be exactly `raw` (a logical message)."""
        m = await self.next(timeout)
        assert m.raw == raw, "%s: expected %r, got %r" % (self.name, _short(raw, 80),
                                                          _short(m.raw, 80))
        return m

    async def expect_nothing(self, duration=0.3):
        """Nothing at all (no message, no close) for `duration` seconds."""
        try:
            item = await asyncio.wait_for(self._q.get(), duration)
        except asyncio.TimeoutError:
            return
        if item is _CLOSED:
            self.closed = True
            raise AssertionError("%s: expected silence, but the connection was closed (code %s)"
                                 % (self.name, self.ws.close_code))
        if isinstance(item, BaseException):
            raise item
        raise AssertionError("%s: expected no message, got %r" % (self.name, item))

    async def expect_closed(self, timeout=DEFAULT_TIMEOUT, allow_errors=True, allow=()):
        """The connection must be closed by the server within `timeout`. ERROR messages
        before the close are allowed (and returned) when allow_errors, and messages
        whose type is in `allow` are consumed (applied to the view); anything else
        fails."""
        errors = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            try:
                m = await self.next(max(left, 0.01))
            except ServerClosed:
                return errors
            except AssertionError as e:
                if "no message within" in str(e):
                    raise AssertionError("%s: server did not close the connection within %.1fs"
                                         % (self.name, timeout)) from None
                raise
            if m.type == ERROR and allow_errors:
                errors.append(m)
                continue
            if m.type in allow:
                continue
            raise AssertionError("%s: expected the connection to be closed, got %r"
                                 % (self.name, m))

    async def wait_keys(self, expected, timeout=DEFAULT_TIMEOUT):
        """Consumes KEY INFORMATION messages until every name in `expected`
        (name -> (version, value)) has that version and value. Updates may be coalesced
        (docs/protocol.md, Keys), so intermediate versions may be skipped. Any other message type
        fails."""
        expected = {b(k): (v[0], b(v[1])) for k, v in expected.items()}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while any(self.keys.get(k) != v for k, v in expected.items()):
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError("%s: keys %r, expected %r" % (self.name, self.keys, expected))
            m = await self.next(left)
            if m.type != KEY_INFO:
                raise AssertionError("%s: waiting for KEY INFORMATION %r, got %r"
                                     % (self.name, expected, m))
        return self.keys

    async def wait_length(self, length, timeout=DEFAULT_TIMEOUT, allow=(APPEND_V2, APPEND_V3)):
        """Consumes messages until the client's view of the document reaches `length`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.doc is None or self._length() < length:
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError("%s: document view is %s bytes, waiting for %d"
                                     % (self.name, None if self.doc is None else self._length(),
                                        length))
            m = await self.next(left)
            if m.type not in allow:
                raise AssertionError("%s: waiting for appends, got %r" % (self.name, m))
        assert self._length() == length, "%s: view overshot: %d > %d" % (
            self.name, self._length(), length)

    # ---- sending ----

    async def send_raw(self, data):
        await self.ws.send(data)

    async def send_split(self, msg, piece_size):
        for frame in split(msg, piece_size):
            await self.ws.send(frame)

    async def send_init(self, doc_id, *, version=3, mode=0, offset=0, initial=b"",
                        max_message_size=0, generation=0, known=None):
        """Sends INIT. `known` = the document bytes the client already has (its first
        `offset` bytes), so that the client's view covers the whole document."""
        self.version = version
        self.max_message_size = max_message_size
        self._init = (offset, b(initial), None if known is None else b(known))
        if offset == 0 and known is None:
            self._init = (0, b(initial), b"")
        await self.ws.send(enc_init(doc_id, version=version, max_message_size=max_message_size,
                                    mode=mode, offset=offset, initial=initial,
                                    generation=generation))

    async def join(self, doc_id, *, timeout=DEFAULT_TIMEOUT, **kw):
        """INIT, then the catch-up APPEND, which is returned."""
        await self.send_init(doc_id, **kw)
        return await self.expect(APPEND, timeout)

    async def send_append(self, offset, data, *, version=None, track=True, generation=0):
        """Sends APPEND (layout of `version`, default the client's own). With `track`,
        the next ACK is matched to it and the client's view extended on ack 1."""
        v = self.version if version is None else version
        if track:
            self.pending.append((offset, b(data)))
        await self.ws.send(enc_append(offset, data, version=v, generation=generation))

    async def append(self, data, timeout=DEFAULT_TIMEOUT):
        """Appends at the end of the client's view; the next message must be the ACK."""
        off = self.length
        await self.send_append(off, data)
        m = await self.expect(ACK, timeout)
        assert m.ack == 1, "%s: append at %d refused: %r" % (self.name, off, m)
        return m

    async def set_key(self, name, value, *, old_version, new_version, request_id=1,
                      lifetime=0):
        await self.ws.send(enc_set_key(name, value, old_version=old_version,
                                       new_version=new_version, request_id=request_id,
                                       lifetime=lifetime))

    async def broadcast(self, data):
        await self.ws.send(enc_broadcast(data))


async def connect(server_or_url, doc_id=None, *, name="client", compression=None, **init_kw):
    """Opens a client; with doc_id also does INIT and waits for the catch-up APPEND."""
    url = server_or_url if isinstance(server_or_url, str) else server_or_url.url
    c = await Client.open(url, name=name, compression=compression)
    if doc_id is not None:
        await c.join(doc_id, **init_kw)
    return c


async def fetch_doc(server_or_url, doc_id, version=3):
    """The stored document, read by a fresh client with INIT(mode 1, offset 0)."""
    c = await connect(server_or_url, name="fetch")
    await c.send_init(doc_id, version=version, mode=1, offset=0)
    m = await c.next()
    await c.close()
    if m.type == ERROR:
        return None
    assert m.type in (APPEND_V2, APPEND_V3), "fetch: expected the catch-up APPEND, got %r" % m
    assert m.offset == 0, "fetch: catch-up APPEND at offset %d, asked for 0" % m.offset
    return m.data


async def close_all():
    for c in list(_open_clients):
        await c.close()


def run(coro, timeout=20):
    """Runs a test coroutine with an overall time limit, closing every client after."""
    async def main():
        try:
            return await asyncio.wait_for(coro, timeout)
        except asyncio.TimeoutError:
            raise AssertionError("test did not finish within %ss" % timeout) from None
        finally:
            await close_all()
    return asyncio.run(main())


def aiotest(timeout=20):
    """Decorator: an `async def` test run by run() (pytest-asyncio is not available)."""
    import functools

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            return run(fn(*args, **kwargs), timeout)
        return wrapper
    return deco
