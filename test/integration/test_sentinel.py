"""Redis Sentinel failover (docs/cluster.md): no acknowledged append is lost.

A primary, one replica and three Sentinels (redis-server --sentinel, a primary is down
after 1 s), and two of our servers finding the primary through the Sentinels with
RedisMinReplicas=1. Writers and readers on several documents through both servers;
the primary is SIGKILLed mid-load, the Sentinels promote the replica, the old primary
comes back as a replica of the new one. Every process is on 127.0.0.1, on free ports,
started and always stopped here.

The writers follow the protocol's retry rule: an append that got ERROR (storage
failure: it may or may not have been stored) is sent again at the same offset; a NACK
then means something was stored there, and once the bytes up to the NACK's length have
arrived the writer sees whether they are its own. So a document may not hold a chunk
twice, nor skip one.
"""

import asyncio
import random
import re
import signal
import statistics
import subprocess
import time

import pytest

import zwclient as zw
from conftest import BIN, free_port
from redisutil import REDIS, Redis, RespError, call, wait_until
from zwclient import aiotest

MASTER = "zwibbler"
CHUNK_RE = re.compile(rb"\[w(\d+):(\d+)\]\.*")

pytestmark = pytest.mark.skipif(REDIS is None, reason="redis-server not installed")


class RedisSet:
    """Primary, replica and three Sentinels watching them."""

    def __init__(self, root):
        self.root = root
        # A replica asking for a full copy gets it at once (not 5 s later, the
        # default); the AOF is synced once a second, so that a busy disk cannot stall
        # Redis long enough for the Sentinels (1 s) to take it for dead.
        quick = ["--repl-diskless-sync-delay", "0", "--appendfsync", "everysec"]
        self.primary = Redis(root, "primary", extra=quick)
        self.replica = Redis(root, "replica", extra=quick + ["--replicaof", "127.0.0.1", str(self.primary.port)])
        conf = ["sentinel monitor %s 127.0.0.1 %d 2" % (MASTER, self.primary.port),
                "sentinel down-after-milliseconds %s 1000" % MASTER,
                "sentinel failover-timeout %s 5000" % MASTER,
                "sentinel parallel-syncs %s 1" % MASTER]
        self.sentinels = [Redis(root, "sentinel%d" % i, sentinel_conf=conf) for i in range(3)]
        self.all = [self.primary, self.replica] + self.sentinels

    @property
    def sentinel_list(self):
        return ",".join("127.0.0.1:%d" % s.port for s in self.sentinels)

    def start(self):
        self.primary.start()
        self.replica.start()
        wait_until(lambda: b"master_link_status:up" in self.replica.call("INFO", "replication"),
                   "the replica to sync", 20)
        for s in self.sentinels:
            s.start()
        # each Sentinel knows the replica and the two others (hello messages, every 2 s)
        for s in self.sentinels:
            wait_until(lambda: len(s.call("SENTINEL", "REPLICAS", MASTER)) == 1 and
                       len(s.call("SENTINEL", "SENTINELS", MASTER)) == 2,
                       "Sentinel on %d to know the replica and the other Sentinels" % s.port, 30, 0.1)

    def primary_port(self):
        """The primary's port as the Sentinels say (a majority of those reachable)."""
        ports = []
        for s in self.sentinels:
            try:
                ports.append(int(s.call("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER, timeout=1)[1]))
            except (OSError, RespError, TypeError):
                pass
        return max(set(ports), key=ports.count) if ports else None

    def stop(self):
        for r in self.all:
            r.stop()


@pytest.fixture
def redis_set(tmp_path):
    rs = RedisSet(tmp_path)
    try:
        rs.start()
        yield rs
    finally:
        rs.stop()


def sentinel_config(rs, min_replicas):
    return {"Database": "redis",
            "DbServer": "127.0.0.1:%d" % free_port(),  # not used: the Sentinels say where
            "RedisSentinels": rs.sentinel_list, "RedisMasterName": MASTER,
            "RedisMinReplicas": min_replicas, "ClusterKeyTtlMs": 5000}


# ---- clients that ride out the failover ----

class Stats:
    def __init__(self):
        self.acks = []        # (time sent, writer, offset, data, time acknowledged)
        self.found = []       # (writer, offset, data): stored, but the ACK never came
        self.errors = 0


async def reply(w, timeout):
    """The next ACK or ERROR for w (appends and keys that come first are applied)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        m = await w.next(max(deadline - loop.time(), 0.01))
        if m.type in (zw.ACK, zw.ERROR):
            return m
        assert m.type in (zw.APPEND_V2, zw.APPEND_V3, zw.KEY_INFO), "%s got %r" % (w.name, m)


async def caught_up(w, length, timeout):
    """True once w's view reaches `length`; False when that takes longer."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while w.length < length:
        if loop.time() > deadline:
            return False
        try:
            m = await w.next(max(deadline - loop.time(), 0.01))
        except AssertionError as e:
            if "no message within" in str(e):
                return False
            raise
        assert m.type in (zw.APPEND_V2, zw.APPEND_V3, zw.KEY_INFO), "%s got %r" % (w.name, m)
    return True


class Writer:
    def __init__(self, idx, url, doc, stats):
        self.idx, self.url, self.doc, self.stats = idx, url, doc, stats
        self.c = None
        self.seq = 0

    async def connect(self):
        known = bytes(self.c.doc) if self.c is not None else b""
        if self.c is not None:
            await self.c.close()
        self.c = await zw.connect(self.url, self.doc, name="W%d" % self.idx, offset=len(known), known=known)

    async def store_one(self, data, stop_at):
        """Stores data once, at the end of the document: ACK, or found stored."""
        off = self.c.length
        while time.monotonic() < stop_at:
            try:
                sent = time.monotonic()
                await self.c.send_append(off, data, track=False)
                m = await reply(self.c, 10)
            except zw.ServerClosed:
                await asyncio.sleep(0.2)
                await self.connect()
                continue
            if m.type == zw.ACK and m.ack == 1:
                assert m.length == off + len(data), (self.c.name, off, m)
                self.c.doc += data
                self.stats.acks.append((sent, self.idx, off, data, time.monotonic()))
                return
            if m.type == zw.ERROR:  # may or may not be stored: the same offset again
                self.stats.errors += 1
                await asyncio.sleep(0.05)
                continue
            # NACK: something is stored at `off`; ours, if an earlier try was
            if not await caught_up(self.c, m.length, 3):
                continue  # the bytes did not come yet: ask again
            if bytes(self.c.doc[off:off + len(data)]) == data:
                self.stats.found.append((self.idx, off, data))
                return
            off = self.c.length
        raise AssertionError("W%d: chunk %d not stored in time" % (self.idx, self.seq))

    async def run(self, stop, stop_at, rng):
        while not stop.is_set():
            data = b"[w%d:%d]" % (self.idx, self.seq) + b"." * rng.randrange(0, 24)
            await self.store_one(data, stop_at)
            self.seq += 1
            await asyncio.sleep(rng.random() * 0.01)


class Reader:
    def __init__(self, name, url, doc):
        self.name, self.url, self.doc = name, url, doc
        self.c = None

    async def connect(self):
        known = bytes(self.c.doc) if self.c is not None else b""
        self.c = await zw.connect(self.url, self.doc, name=self.name, mode=1, offset=len(known), known=known)

    async def run(self, stop):
        while not stop.is_set():
            try:
                await self.c.next(0.2)
            except zw.ServerClosed:
                await asyncio.sleep(0.2)
                await self.connect()
            except AssertionError as e:
                if "no message within" not in str(e):
                    raise

    async def finish(self, length, timeout):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.c.length < length:
            try:
                await self.c.next(max(deadline - loop.time(), 0.01))
            except zw.ServerClosed:
                await self.connect()


def check_document(doc, stored, stats):
    """No chunk twice, none skipped, each writer's in order; every ACK where it said."""
    seen = {}
    pos = 0
    while pos < len(stored):
        m = CHUNK_RE.match(stored, pos)
        assert m, "%s: unparseable at %d: %r" % (doc, pos, stored[pos:pos + 40])
        seen.setdefault(int(m.group(1)), []).append(int(m.group(2)))
        pos = m.end()
    for w, seqs in seen.items():
        assert seqs == list(range(len(seqs))), "%s: writer %d's chunks are %s" % (doc, w, seqs)


async def latency(url, doc, n=500, warm_up=50):
    """Sequential appends by one client: (median, p99) round trip in ms, after a few
    not counted (connections and scripts in place)."""
    c = await zw.connect(url, doc, name="lat", initial=b"")
    for i in range(warm_up):
        await c.append(b"<w%d>" % i)
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        await c.append(b"<%d>" % i)
        times.append((time.perf_counter() - t0) * 1000)
    await c.close()
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1]


@aiotest(timeout=150)
async def test_failover_loses_no_acknowledged_append(redis_set, server_factory, tmp_path):
    rs = redis_set
    s = [server_factory(**sentinel_config(rs, 1)) for _ in range(2)]

    # the price of waiting for a replica, before anything else runs
    plain = server_factory(**sentinel_config(rs, 0))
    lat0 = await latency(plain.url, "lat-0")
    plain.stop()
    lat1 = await latency(s[0].url, "lat-1")
    print("\nappend round trip, 500 sequential: RedisMinReplicas=0 median %.2f ms p99 %.2f ms; "
          "RedisMinReplicas=1 median %.2f ms p99 %.2f ms" % (lat0 + lat1))

    # An append the replica does not confirm in time is not acknowledged; it was
    # stored all the same: the retry at the same offset gets a NACK, and the bytes
    # reach the writer (and everyone else) once.
    w = await zw.connect(s[0], "sen-wait", name="waiter", initial=b"")
    other = await zw.connect(s[1], "sen-wait", name="other", mode=1)
    rs.replica.proc.send_signal(signal.SIGSTOP)
    try:
        await w.send_append(0, b"<once>", track=False)
        m = await reply(w, 10)
        assert m.type == zw.ERROR, "acknowledged without the replica: %r" % m
        # nobody may hold bytes a failover now would take back
        await other.expect_nothing(0.5)
        await w.expect_nothing(0.01)
    finally:
        rs.replica.proc.send_signal(signal.SIGCONT)
    await w.send_append(0, b"<once>", track=False)
    m = await reply(w, 10)
    assert (m.type, m.ack, m.length) == (zw.ACK, 0, 6), m
    assert await caught_up(w, 6, 10) and w.full_doc == b"<once>"
    assert await caught_up(other, 6, 10) and other.full_doc == b"<once>"
    await w.expect_nothing(0.3)
    await other.expect_nothing(0.01)
    assert rs.replica.call("GET", "zwibbler:sen-wait") == b"<once>"

    docs = ["sen-%d" % i for i in range(4)]
    for d in docs:
        c = await zw.connect(s[0], d, name="creator", mode=2, initial=b"")
        await c.close()
    stats = Stats()
    writers = [Writer(i, s[i // 4].url, docs[i % 4], stats) for i in range(8)]
    readers = [Reader("R%d-%d" % (k, j), s[j].url, d) for k, d in enumerate(docs) for j in range(2)]
    for x in writers + readers:
        await x.connect()
    stop = asyncio.Event()
    stop_at = time.monotonic() + 90
    rng = random.Random(7)
    tasks = [asyncio.ensure_future(w.run(stop, stop_at, random.Random(rng.random()))) for w in writers]
    tasks += [asyncio.ensure_future(r.run(stop)) for r in readers]

    async def until(cond, what, timeout):
        deadline = time.monotonic() + timeout
        while not cond():
            for t in tasks:
                if t.done():
                    t.result()  # a client's failure, raised here
            assert time.monotonic() < deadline, "timed out waiting for %s" % what
            await asyncio.sleep(0.05)

    await until(lambda: len(stats.acks) >= 200, "200 appends before the failover", 30)
    old_port = rs.primary.port
    rs.primary.kill()
    killed = time.monotonic()

    await until(lambda: rs.primary_port() == rs.replica.port, "the Sentinels to promote the replica", 30)
    promoted = time.monotonic() - killed
    # the old primary comes back, as a replica of the new one (its own AOF may hold
    # appends the replica never got: they must not come back)
    rs.primary.extra += ["--replicaof", "127.0.0.1", str(rs.replica.port)]
    rs.primary.start()

    def resumed(w=None):
        """When the first append sent after the kill (by w) was acknowledged."""
        after = [t for sent, i, _, _, t in stats.acks if sent > killed and w in (None, i)]
        return min(after) if after else None
    await until(resumed, "a first acknowledged append after the kill", 30)
    first = resumed() - killed
    await until(lambda: all(resumed(x.idx) for x in writers), "every writer to be acknowledged again", 30)
    every = max(resumed(x.idx) for x in writers) - killed
    print("failover: replica promoted %.1f s after the kill; first acknowledged append after %.1f s, "
          "every writer after %.1f s; %d ERRORs, %d appends stored without their ACK"
          % (promoted, first, every, stats.errors, len(stats.found)))
    assert every < 20, "writers took %.1f s to resume" % every
    await asyncio.sleep(1.0)  # some more load on the new primary
    stop.set()
    await asyncio.gather(*tasks)

    # every acknowledged append is in the new primary, where its ACK said
    # (On a loaded machine the Sentinels may fail over once more, back to the old
    # primary after it synced: nothing may be lost that way either.)
    primary = rs.primary_port()
    if primary != rs.replica.port:
        print("note: the Sentinels failed over a second time, to the old primary")
    stored = {d: call(primary, "GET", "zwibbler:" + d) or b"" for d in docs}
    for _, w, off, data, _ in stats.acks:
        d = docs[w % 4]
        assert stored[d][off:off + len(data)] == data, "W%d's acknowledged append at %d is lost" % (w, off)
    for w, off, data in stats.found:
        assert stored[docs[w % 4]][off:off + len(data)] == data
    for d in docs:
        check_document(d, stored[d], stats)
    # every reader (strict: no gap, no duplicate on the way) ends with the stored bytes
    for r in readers:
        await r.finish(len(stored[r.doc]), 15)
        assert r.c.full_doc == stored[r.doc], "%s differs from the stored document" % r.name
    for w in writers:
        await caught_up(w.c, len(stored[w.doc]), 15)
        assert w.c.full_doc == stored[w.doc], "W%d differs from the stored document" % w.idx
    for d in docs:
        for srv in s:
            assert await zw.fetch_doc(srv, d) == stored[d]

    # The other one (normally the old primary, restarted) is a replica, with the
    # primary's bytes: what the old primary alone had when it was killed is gone.
    other = rs.primary if primary == rs.replica.port else rs.replica
    assert rs.primary.port == old_port
    wait_until(lambda: other.call("ROLE")[0] == b"slave" and
               b"master_link_status:up" in other.call("INFO", "replication"),
               "the other instance to replicate the primary", 20)
    wait_until(lambda: all((other.call("GET", "zwibbler:" + d) or b"") == stored[d] for d in docs),
               "the replica to hold the primary's documents", 20)
    assert rs.primary_port() == primary

    # Sentinels that do not know the name: a start-up error naming the setting
    out = start_failing(tmp_path, RedisSentinels=rs.sentinel_list, RedisMasterName="nosuch")
    assert "RedisMasterName" in out and "nosuch" in out, out


def start_failing(tmp_path, **config):
    """Runs the server with config, which must make it exit at start-up; returns its
    output."""
    conf = tmp_path / ("fail%d.conf" % free_port())
    conf.write_text("".join("%s=%s\n" % kv for kv in dict(
        {"ServerBindAddress": "127.0.0.1", "ServerPort": free_port(), "DataDir": tmp_path,
         "User": "", "Database": "redis"}, **config).items()))
    t0 = time.monotonic()
    p = subprocess.run([BIN, "--config", str(conf)], stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=30)
    out = (p.stdout + p.stderr).decode("utf-8", "replace")
    assert p.returncode != 0, "started with %r:\n%s" % (config, out)
    assert time.monotonic() - t0 < 10, "took %.1f s to give up" % (time.monotonic() - t0)
    return out


def test_unreachable_sentinels_are_a_start_up_error(tmp_path):
    dead = ",".join("127.0.0.1:%d" % free_port() for _ in range(2))
    out = start_failing(tmp_path, RedisSentinels=dead, RedisMasterName=MASTER)
    assert "RedisSentinels" in out and "no Sentinel reachable" in out, out


def test_bad_sentinel_settings_are_start_up_errors(tmp_path):
    for key, value in (("RedisSentinels", "127.0.0.1"), ("RedisSentinels", "host:port"),
                       ("RedisSentinels", "a:1,,b:2"), ("RedisMinReplicas", "-1"),
                       ("RedisMasterName", "two words")):
        out = start_failing(tmp_path, **{key: value})
        assert key in out, (key, value, out)

