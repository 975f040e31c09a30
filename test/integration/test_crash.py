"""Crash safety (nothing acknowledged is lost): 8 writers append to 4 documents and
set session keys while the server is killed with SIGKILL at a random moment; it is
restarted and the writers reconnect with the offsets they have. Repeated 20 times.

What must hold:
- every ACKed append is in the stored document at the offset its ACK implies;
- each document is exactly the concatenation of its appends in commit order: every
  chunk is a whole chunk of one writer, each writer's chunks appear in the order it
  sent them, none twice, and a chunk that was never ACKed is only ever the one its
  writer had in flight when the server died (committed, but the ACK was lost);
- every accepted session key version (SET KEY with lifetime != 0) survives: after a
  restart the stored version is the last accepted one, or the one in flight;
- after every kill the LMDB environment opens and reads (mdb_stat) without repair.
"""

import asyncio
import random
import re
import subprocess
import time

from websockets.exceptions import ConnectionClosed

import zwclient as zw
from zwclient import aiotest

ITERATIONS = 20
WRITERS = 8
DOCS = 4
CHUNK = re.compile(rb"<w(\d+):(\d+)>")


class Writer:
    def __init__(self, n):
        self.n = n
        self.doc = "crash-doc-%d" % (n % DOCS)
        self.key = "session-key-%d" % n
        self.seq = 0
        self.client = None
        self.acked = []        # (offset, chunk)
        self.inflight = []     # chunks in flight at a crash (maybe committed)
        self.key_version = 0   # last accepted (or found stored) version
        self.key_inflight = None
        self.known = b""       # the document as this writer knows it
        self.ops = 0

    def chunk(self):
        return b"<w%d:%d>" % (self.n, self.seq)

    async def connect(self, server):
        c = await zw.connect(server, name="w%d" % self.n)
        if not self.known:
            await c.send_init(self.doc, version=3 if self.n % 2 else 2, mode=0)
        else:
            await c.send_init(self.doc, version=3 if self.n % 2 else 2, mode=1,
                              offset=len(self.known), known=self.known)
        await c.expect(zw.APPEND, timeout=10)
        self.client = c
        # Stored keys arrive right after the catch-up; ours must have survived.
        await self.sync_key(c)

    async def sync_key(self, c):
        deadline = asyncio.get_running_loop().time() + 0.5
        want = self.key.encode()
        while want not in c.keys and self.key_version:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise AssertionError("w%d: session key %s (version %d accepted) missing after "
                                     "restart; keys %r" % (self.n, self.key, self.key_version,
                                                           c.keys))
            try:
                await c.next(left)
            except AssertionError as e:
                if "no message within" not in str(e):
                    raise
        if want in c.keys:
            version, value = c.keys[want]
            ok = {self.key_version}
            if self.key_inflight is not None:
                ok.add(self.key_inflight)
            assert version in ok, ("w%d: session key %s stored at version %d, accepted %d, in "
                                   "flight %r" % (self.n, self.key, version, self.key_version,
                                                  self.key_inflight))
            assert value == b"w%d-v%d" % (self.n, version), (self.n, version, value)
            self.key_version = version
        self.key_inflight = None

    async def run(self):
        """Appends (and sets its key every third operation) until the connection
        drops. Returns when the server is gone."""
        c = self.client
        try:
            while True:
                self.ops += 1
                if self.ops % 3 == 0:
                    await self.set_key(c)
                else:
                    await self.append(c)
        except zw.ServerClosed:
            pass
        finally:
            self.known = c.full_doc

    async def append(self, c):
        chunk = self.chunk()
        off = c.length
        try:
            await c.send_append(off, chunk)
            while True:
                m = await c.next(10)
                if m.type == zw.ACK:
                    break
        except (zw.ServerClosed, ConnectionClosed):
            self.inflight.append(chunk)
            self.seq += 1  # never reuse a chunk that may have been committed
            raise zw.ServerClosed("w%d: closed" % self.n) from None
        if m.ack == 1:
            self.acked.append((off, chunk))
            self.seq += 1
        # ack 0: the other writer got there first; its bytes are in our view now

    async def set_key(self, c):
        v = self.key_version
        value = b"w%d-v%d" % (self.n, v + 1)
        try:
            await c.set_key(self.key, value, old_version=v, new_version=v + 1,
                            request_id=(v + 1) & 0xFFFF, lifetime=1)
            while True:
                m = await c.next(10)
                if m.type == zw.SET_KEY_ACK:
                    break
        except (zw.ServerClosed, ConnectionClosed):
            self.key_inflight = v + 1
            raise zw.ServerClosed("w%d: closed" % self.n) from None
        assert m.ack == 1 and m.request_id == (v + 1) & 0xFFFF, \
            "w%d: key write %d -> %d refused: %r" % (self.n, v, v + 1, m)
        self.key_version = v + 1


def lmdb_opens(server):
    """The environment opens (no recovery step exists or is needed) and every record
    of every sub-database reads back."""
    path = str(server.data_dir / "lmdb")
    for cmd in (["mdb_stat", "-e", "-a", path], ["mdb_dump", "-a", path]):
        r = subprocess.run(cmd, stdout=subprocess.DEVNULL if cmd[0] == "mdb_dump" else
                           subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        assert r.returncode == 0, "%s after kill -9 failed: %s" % (cmd[0], r.stderr[-500:])


def check_document(doc, stored, writers):
    found = [(int(w), int(s)) for w, s in CHUNK.findall(stored)]
    assert b"".join(b"<w%d:%d>" % x for x in found) == stored, \
        "%s holds bytes that are not whole chunks: %r" % (doc, stored[:300])
    seen = set()
    last = {}
    for w, s in found:
        assert (w, s) not in seen, "%s: chunk <w%d:%d> stored twice" % (doc, w, s)
        seen.add((w, s))
        assert s > last.get(w, -1), "%s: chunks of w%d out of order" % (doc, w)
        last[w] = s
    for wr in writers:
        for off, chunk in wr.acked:
            assert stored[off:off + len(chunk)] == chunk, \
                "%s: ACKed %r at %d missing (found %r)" % (doc, chunk, off,
                                                           stored[off:off + len(chunk)])
        acked = {c for _, c in wr.acked}
        for w, s in found:
            if w != wr.n:
                continue
            c = b"<w%d:%d>" % (w, s)
            assert c in acked or c in wr.inflight, \
                "%s: %r stored but neither ACKed nor in flight at a crash" % (doc, c)


@aiotest(timeout=150)
async def test_kill9_loses_nothing_acknowledged(server_factory):
    rng = random.Random(int(time.time()))
    server = server_factory(MaxConnections=64)
    writers = [Writer(n) for n in range(WRITERS)]
    kills = 0
    t0 = time.monotonic()
    for it in range(ITERATIONS):
        if it:
            server.start()
        for w in writers:
            await w.connect(server)
        tasks = [asyncio.ensure_future(w.run()) for w in writers]
        await asyncio.sleep(rng.uniform(0.05, 0.5))
        server.kill()
        kills += 1
        done, pending = await asyncio.wait(tasks, timeout=15)
        assert not pending, "writers still running 15 s after the kill"
        for t in done:
            t.result()
        for w in writers:
            await w.client.close()
        lmdb_opens(server)
    server.start()
    for w in writers:
        await w.connect(server)  # checks the keys once more

    total_acked = sum(len(w.acked) for w in writers)
    for d in range(DOCS):
        doc = "crash-doc-%d" % d
        stored = await zw.fetch_doc(server, doc)
        mine = [w for w in writers if w.doc == doc]
        check_document(doc, stored, mine)
        for w in mine:
            assert w.client.full_doc == stored
    assert kills == ITERATIONS
    assert total_acked >= ITERATIONS * 2, "too few appends were made (%d)" % total_acked
    assert sum(w.key_version for w in writers) >= ITERATIONS, "too few key writes"
    print("crash: %d kills, %d ACKed appends, %d key versions, %.1fs"
          % (kills, total_acked, sum(w.key_version for w in writers), time.monotonic() - t0))
