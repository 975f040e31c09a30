"""`zwibbler --copy-store`: documents, session keys and tokens copied between every pair
of backends (LMDB, SQLite, a real redis-server started here), from a SQLite file laid
out by the reference server, refusals and --overwrite, and bad store specs.

Each source is filled through a real server (management API and WebSocket clients),
the server stopped, the copy run, and a server started on the target must then serve
every document, key and token exactly."""

import os
import re
import sqlite3
import subprocess
import time

import pytest

import mgmtapi as api
import zwclient as zw
from conftest import BIN
from test_cluster import REDIS, Redis

BIN_BYTES = bytes([ord("a"), 0, 0xFF, 0xFE, 0xC3, 0x28, 0x80, ord("z"), 0, 0xED, 0xA0, 0x80])
DOCS = {
    "plain": b"hello world",
    "binary": BIN_BYTES,
    "empty": b"",
    "caf\u00e9 doc/with*glob?": b"unicode id",
}
# session keys (lifetime != 0): doc -> {name: (version, value)}
KEYS = {"plain": {"page": (7, "3"), "lock": (2, '{"by":"x"}')}}
TOKENS = {"tok-live": ("plain", "alice", "rw"), "tok-ro": ("binary", "alice", "r")}
APPENDED = b" + appended over the wire"

needs_redis = pytest.mark.skipif(REDIS is None, reason="redis-server not installed")


def copy(*args, timeout=60):
    p = subprocess.run([BIN, "--copy-store"] + list(args), capture_output=True,
                       timeout=timeout)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def counts(out):
    m = re.search(r"copied (\d+) documents \((\d+) bytes, (\d+) replaced\), (\d+) keys, "
                  r"(\d+) tokens", out)
    assert m, out
    return tuple(int(x) for x in m.groups())


def backend_config(kind, data_dir, redis):
    if kind == "redis":
        return {"Database": "redis", "DbServer": "127.0.0.1:%d" % redis.port,
                "Cluster": "false"}
    return {"Database": kind, "DataDir": str(data_dir)}


def spec(kind, data_dir, redis):
    if kind == "lmdb":
        return "lmdb:%s" % data_dir
    if kind == "sqlite":
        return "sqlite:%s" % (data_dir / "zwibbler.db")
    return "redis:127.0.0.1:%d" % redis.port


@zw.aiotest(timeout=30)
async def populate(server):
    for doc, data in DOCS.items():
        if data:
            assert api.create_document(server, doc, data) == 200, doc
        else:  # the API refuses empty contents; a client creates it
            c = await zw.connect(server, doc, mode=2)
            await c.close()
    # an append and session keys over the wire, as clients make them
    c = await zw.connect(server, "plain")
    await c.append(APPENDED)
    for name, (version, value) in KEYS["plain"].items():
        await c.set_key(name, value, old_version=0, new_version=version, lifetime=1)
        m = await c.expect(zw.SET_KEY_ACK)
        assert m.ack == 1, m
    await c.close()
    for token, (doc, user, perms) in TOKENS.items():
        assert api.add_token(server, token, doc, user, perms) == 200
    # an expired token is not copied
    assert api.add_token(server, "tok-dead", "plain", "bob", "rw",
                         expiration=api.rfc1123(time.time() - 60)) == 200


def expected_docs():
    d = dict(DOCS)
    d["plain"] = DOCS["plain"] + APPENDED
    return d


@zw.aiotest(timeout=30)
async def verify(server):
    for doc, data in expected_docs().items():
        assert api.dump(server, doc) == data, doc
    c = await zw.connect(server, "plain")
    await c.wait_keys({k: v for k, v in KEYS["plain"].items()})
    await c.close()
    for token, (doc, user, perms) in TOKENS.items():
        c = await zw.connect(server, token)
        assert c.full_doc == expected_docs()[doc], token
        await c.close()


@pytest.fixture
def redis_server(tmp_path):
    if REDIS is None:
        yield None
        return
    r = Redis(tmp_path)
    r.start()
    yield r
    r.stop()


@pytest.mark.parametrize("source", ["lmdb", "sqlite", "redis"])
def test_copy_between_backends(source, server_factory, redis_server, tmp_path):
    """From each backend into both others; a server on the target serves it all."""
    if redis_server is None and source == "redis":
        pytest.skip("redis-server not installed")
    src_dir = tmp_path / ("src-" + source)
    src_dir.mkdir()
    s = server_factory(**backend_config(source, src_dir, redis_server), **api.SECRETS)
    populate(s)
    s.stop()
    targets = [k for k in ("lmdb", "sqlite", "redis") if k != source]
    if redis_server is None:
        targets.remove("redis")
    for target in targets:
        if target == "redis":
            # a second redis-server: the target must start empty
            root = tmp_path / ("redis-to-" + source)
            root.mkdir()
            dst_redis = Redis(root)
            dst_redis.start()
        else:
            dst_redis = None
        try:
            dst_dir = tmp_path / ("dst-%s-%s" % (source, target))
            dst_dir.mkdir()
            rc, out, err = copy("--from", spec(source, src_dir, redis_server),
                                "--to", spec(target, dst_dir, dst_redis))
            assert rc == 0, out + err
            docs, nbytes, replaced, keys, tokens = counts(out)
            assert (docs, replaced, keys, tokens) == (len(DOCS), 0, 2, 2), out
            assert nbytes == sum(len(v) for v in expected_docs().values()), out
            t = server_factory(**backend_config(target, dst_dir, dst_redis), **api.SECRETS)
            verify(t)
            t.stop()
        finally:
            if dst_redis:
                dst_redis.stop()


def reference_sqlite(dir_path):
    """A zwibbler.db as the reference server writes it: its schema, BLOB documents,
    TEXT ids, a NULL and a TEXT document, keys, a live and an expired token."""
    dir_path.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(dir_path / "zwibbler.db"))
    db.executescript("""
PRAGMA journal_mode=WAL;
PRAGMA foreign_keys=ON;
CREATE TABLE IF NOT EXISTS ZwibblerDocs (
\tdocid TEXT PRIMARY KEY, 
\tlastAccess INTEGER,
\tdata BLOB
);
CREATE TABLE IF NOT EXISTS ZwibblerKeys (
\tdocID TEXT,
\tname TEXT,
\tvalue TEXT,
\tversion NUMBER,
\tUNIQUE(docID, name),
\tFOREIGN KEY (docID) REFERENCES ZwibblerDocs(docID) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS ZwibblerTokens (
\ttokenID TEXT UNIQUE,
\tdocID TEXT,
\tuserID TEXT,
\tpermissions TEXT,
\texpiration INTEGER
);
CREATE INDEX IF NOT EXISTS ZwibblerTokenUserIndex ON ZwibblerTokens(userID);
""")
    now = int(time.time())
    for doc, data in [("plain", b"hello world"), ("binary", BIN_BYTES), ("empty", b"")]:
        db.execute("INSERT INTO ZwibblerDocs (docid, lastAccess, data) VALUES (?, ?, ?)",
                   (doc, now, data))
    db.execute("INSERT INTO ZwibblerDocs VALUES ('nulldoc', ?, NULL)", (now,))
    db.execute("INSERT INTO ZwibblerDocs VALUES ('textdoc', ?, 'caf\u00e9')", (now,))
    db.execute("INSERT INTO ZwibblerKeys(docID, name, value, version) VALUES "
               "('plain', 'page', '3', 7), ('plain', 'admin:lock', '{\"by\":\"x\"}', 2)")
    db.execute("INSERT INTO ZwibblerTokens VALUES ('tok-live', 'plain', 'alice', 'rw', ?),"
               "('tok-ro', 'binary', 'alice', 'r', ?), ('tok-dead', 'plain', 'bob', 'rwa', ?)",
               (now + 3600, now + 7200, now - 5))
    db.commit()
    db.close()


def test_reference_sqlite_file_into_lmdb(server_factory, tmp_path):
    ref = tmp_path / "reference"
    reference_sqlite(ref)
    dst = tmp_path / "lmdb"
    rc, out, err = copy("--from", "sqlite:%s" % (ref / "zwibbler.db"), "--to", "lmdb:%s" % dst)
    assert rc == 0, out + err
    docs, nbytes, _, keys, tokens = counts(out)
    assert (docs, keys, tokens) == (5, 2, 2), out
    assert nbytes == 11 + len(BIN_BYTES) + len("caf\u00e9".encode()), out
    s = server_factory(Database="lmdb", DataDir=str(dst), **api.SECRETS)
    assert api.dump(s, "plain") == b"hello world"
    assert api.dump(s, "binary") == BIN_BYTES
    assert api.dump(s, "empty") == b""
    assert api.dump(s, "nulldoc") == b""
    assert api.dump(s, "textdoc") == "caf\u00e9".encode()

    @zw.aiotest()
    async def check():
        c = await zw.connect(s, "plain")
        await c.wait_keys({"page": (7, "3"), "admin:lock": (2, '{"by":"x"}')})
        await c.close()
        c = await zw.connect(s, "tok-ro")  # a read-only token of "binary"
        assert c.full_doc == BIN_BYTES
        await c.close()
        # the expired token was not copied: as a plain id it names a new, empty doc
        c = await zw.connect(s, "tok-dead")
        assert c.full_doc == b""
        await c.close()
    check()


def test_refuse_then_overwrite(server_factory, tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    reference_sqlite(src)
    args = ["--from", "sqlite:%s" % src, "--to", "lmdb:%s" % dst]
    assert copy(*args)[0] == 0
    # a repeated run: everything is already there, identical; nothing refused
    rc, out, err = copy(*args)
    assert rc == 0, out + err
    assert counts(out)[0] == 0
    assert "already in the target (identical): 5 documents, 2 tokens" in out, out
    # the target's "binary" changes: refused without --overwrite, named in the report
    s = server_factory(Database="lmdb", DataDir=str(dst), **api.SECRETS)

    @zw.aiotest()
    async def change():
        c = await zw.connect(s, "binary")
        await c.append(b" changed in the target")
        await c.close()
    change()
    s.stop()
    rc, out, err = copy(*args)
    assert rc == 3, out + err
    assert 'refused: document "binary" exists in the target (--overwrite replaces it)' in out
    assert "refused 1 documents, 0 tokens" in out, out
    rc, out, err = copy(*(args + ["--overwrite"]))
    assert rc == 0, out + err
    assert counts(out)[:3] == (1, len(BIN_BYTES), 1), out
    s.start()
    assert api.dump(s, "binary") == BIN_BYTES


@needs_redis
def test_config_spec_and_redis_password(server_factory, tmp_path):
    """config:PATH reads the store from a configuration file (the password stays off the
    command line); redis: takes password= too."""
    r = Redis(tmp_path)
    r.start()
    try:
        subprocess.run(["redis-cli", "-p", str(r.port), "CONFIG", "SET", "requirepass",
                        "pw,1"], check=True, capture_output=True, timeout=10)
        src = tmp_path / "src"
        reference_sqlite(src)
        conf = tmp_path / "target.conf"
        conf.write_text("Database=redis\nDbServer=127.0.0.1:%d\nDbPassword=pw,1\n" % r.port)
        rc, out, err = copy("--from", "sqlite:%s" % src, "--to", "config:%s" % conf)
        assert rc == 0, out + err
        assert counts(out)[0] == 5
        assert "pw,1" not in out + err
        # back out through redis: with a password (no comma in this one)
        subprocess.run(["redis-cli", "-p", str(r.port), "-a", "pw,1", "--no-auth-warning",
                        "CONFIG", "SET", "requirepass", "pw2"], check=True,
                       capture_output=True, timeout=10)
        rc, out, err = copy("--from", "redis:127.0.0.1:%d,password=pw2" % r.port,
                            "--to", "lmdb:%s" % (tmp_path / "back"))
        assert rc == 0, out + err
        assert counts(out)[0] == 5
        s = server_factory(Database="lmdb", DataDir=str(tmp_path / "back"), **api.SECRETS)
        assert api.dump(s, "binary") == BIN_BYTES
    finally:
        r.stop()


@pytest.mark.parametrize("args,message", [
    ([], "--from and --to are both needed"),
    (["--from", "lmdb:/x"], "--from and --to are both needed"),
    (["--from", "lmdb:/a", "--to", "lmdb:/a"], "name the same store"),
    (["--from", "mysql:/x", "--to", "lmdb:/y"], "unknown store kind 'mysql'"),
    (["--from", "nocolon", "--to", "lmdb:/y"], "is not a store"),
    (["--from", "lmdb:/nonexistent/dir", "--to", "lmdb:/y"], "no LMDB store"),
    (["--from", "sqlite:/tmp/other.db", "--to", "lmdb:/y"], "must be named zwibbler.db"),
    (["--from", "redis:h:1,colour=red", "--to", "lmdb:/y"], "unknown option 'colour=red'"),
    (["--from", "redis:h:1", "--to", "redis:h:2,expiration=soon"], "expiration 'soon'"),
    (["--from", "lmdb:/x", "--to", "lmdb:/y", "--bogus"], "unknown or incomplete option"),
])
def test_bad_arguments(args, message):
    rc, out, err = copy(*args)
    assert rc == 2, (rc, out, err)
    assert message in err, err


def test_unreachable_redis_target(tmp_path):
    src = tmp_path / "src"
    reference_sqlite(src)
    from conftest import free_port
    rc, out, err = copy("--from", "sqlite:%s" % src, "--to", "redis:127.0.0.1:%d" % free_port())
    assert rc == 1, (out, err)
    assert "--to redis:127.0.0.1" in err, err
