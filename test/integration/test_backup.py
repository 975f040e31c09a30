"""Online backup of the LMDB store (docs/operations.md, Backup and restore): `mdb_copy -c`
taken while clients append, restored into a fresh server.

Writers append numbered chunks as fast as ACKs come and record when each ACK arrived.
The backup starts mid-load; then the writers stop and the server is stopped. A new
server started on the backup must serve, for every document, every append ACKed before
the backup started, and each document must be a prefix of what was ACKed in total."""

import asyncio
import shutil
import subprocess
import time

import pytest

import zwclient as zw

MDB_COPY = shutil.which("mdb_copy")
DOCS = ["backup-%d" % i for i in range(6)]

pytestmark = pytest.mark.skipif(MDB_COPY is None, reason="mdb_copy (lmdb-utils) not installed")


async def writer(server, doc, acks, stop):
    """Appends [doc:seq] chunks until stop; acks gets (ack time, offset, data)."""
    c = await zw.connect(server, doc, mode=0)
    seq = 0
    while not stop.is_set():
        data = b"[%s:%06d]" % (doc.encode(), seq)
        off = c.length
        await c.append(data)
        acks.append((time.monotonic(), off, data))
        seq += 1
    await c.close()


def test_online_backup_and_restore(server_factory, tmp_path):
    src = server_factory()
    backup_dir = tmp_path / "backup"
    backup_dir.mkdir()
    acks = {doc: [] for doc in DOCS}
    timing = {}

    @zw.aiotest(timeout=60)
    async def load():
        stop = asyncio.Event()
        tasks = [asyncio.create_task(writer(src, doc, acks[doc], stop)) for doc in DOCS]
        await asyncio.sleep(1.0)
        timing["start"] = time.monotonic()
        # the command operations.md gives, run while the writers go on
        p = await asyncio.to_thread(
            subprocess.run, [MDB_COPY, "-c", str(src.data_dir / "lmdb"), str(backup_dir)],
            capture_output=True, timeout=60)
        timing["end"] = time.monotonic()
        assert p.returncode == 0, p.stderr.decode()
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*tasks)
        for doc in DOCS:  # the live server has exactly what was ACKed
            assert await zw.fetch_doc(src, doc) == b"".join(d for _, _, d in acks[doc])
    load()
    src.stop()

    before = {doc: [a for a in acks[doc] if a[0] < timing["start"]] for doc in DOCS}
    during = sum(1 for doc in DOCS for a in acks[doc] if timing["start"] <= a[0] < timing["end"])
    after = sum(1 for doc in DOCS for a in acks[doc] if a[0] >= timing["end"])
    assert all(len(before[d]) > 5 for d in DOCS), {d: len(before[d]) for d in DOCS}
    assert after > 0, "no append after the backup: the backup was not taken under load"

    # restore: the backup's data.mdb becomes a fresh server's DataDir/lmdb/data.mdb
    restored = server_factory()
    restored.stop()
    lmdb_dir = restored.data_dir / "lmdb"
    shutil.rmtree(lmdb_dir)
    lmdb_dir.mkdir()
    shutil.copy(backup_dir / "data.mdb", lmdb_dir / "data.mdb")
    restored.start()

    @zw.aiotest(timeout=30)
    async def check():
        for doc in DOCS:
            got = await zw.fetch_doc(restored, doc)
            total = b"".join(d for _, _, d in acks[doc])
            assert got is not None, doc
            assert total.startswith(got), "%s: the restored document is not a prefix of " \
                                          "what was ACKed" % doc
            for _, off, data in before[doc]:
                assert got[off:off + len(data)] == data, \
                    "%s: append at %d ACKed before the backup is missing" % (doc, off)
        # and it takes new appends where the backup ends
        c = await zw.connect(restored, DOCS[0])
        await c.append(b"after restore")
        await c.close()
    check()
    print("backup took %.0f ms; appends ACKed before/during/after it: %d/%d/%d"
          % ((timing["end"] - timing["start"]) * 1000,
             sum(len(v) for v in before.values()), during, after))
