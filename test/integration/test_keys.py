"""docs/protocol.md, Keys: client keys, session keys, admin: keys; for protocol 2 and 3."""

import asyncio

import pytest

import zwclient as zw
from test_cluster import REDIS, cluster, redis  # noqa: F401 (fixtures)
from zwclient import aiotest, exp_key_info, exp_set_key_ack

versions = pytest.mark.parametrize("v", [2, 3])
# Every test runs against each backend; with Redis the server is in cluster mode and
# delivers through the Redis channel (conftest.py).
SERVER_BACKENDS = ["lmdb", "sqlite", "redis"]


async def trio(server, v, doc="doc"):
    a = await zw.connect(server, doc, name="A", version=v, mode=0, initial=b"d")
    b = await zw.connect(server, doc, name="B", version=v, mode=1)
    c = await zw.connect(server, doc, name="C", version=5 - v, mode=1)
    return a, b, c


# ---- client keys (lifetime 0) ----

@versions
@aiotest()
async def test_client_key_create(server, v):
    a, b, c = await trio(server, v)
    await a.set_key("cursor", "x", old_version=0, new_version=1, request_id=7)
    await a.expect_raw(exp_set_key_ack(1, 7))
    await b.expect_raw(exp_key_info([(1, "cursor", "x")]))
    await c.expect_raw(exp_key_info([(1, "cursor", "x")]))
    # only *other* clients get KEY INFORMATION
    await a.expect_nothing(0.3)
    await b.expect_nothing(0.01)
    await c.expect_nothing(0.01)


@versions
@aiotest()
async def test_client_key_wrong_version_rejected(server, v):
    a, b, c = await trio(server, v)
    await a.set_key("k", "one", old_version=0, new_version=1, request_id=1)
    await a.expect_raw(exp_set_key_ack(1, 1))
    await b.expect(zw.KEY_INFO)
    await c.expect(zw.KEY_INFO)
    # exists, oldVersion 0
    await a.set_key("k", "two", old_version=0, new_version=2, request_id=2)
    await a.expect_raw(exp_set_key_ack(0, 2))
    # exists at 1, oldVersion 5
    await b.set_key("k", "three", old_version=5, new_version=6, request_id=3)
    await b.expect_raw(exp_set_key_ack(0, 3))
    # missing, oldVersion != 0
    await c.set_key("missing", "four", old_version=3, new_version=4, request_id=0xFFFF)
    await c.expect_raw(exp_set_key_ack(0, 0xFFFF))
    # equal versions but not the current one: rejected, so there is a reply
    await c.set_key("k", "five", old_version=9, new_version=9, request_id=0)
    await c.expect_raw(exp_set_key_ack(0, 0))
    for x in (a, b, c):
        await x.expect_nothing(0.2)
    d = await zw.connect(server, "doc", name="D", version=v, mode=1)
    await d.expect_raw(exp_key_info([(1, "k", "one")]))
    await d.expect_nothing(0.2)


@versions
@aiotest()
async def test_client_key_update_and_equal_versions(server, v):
    a, b, c = await trio(server, v)
    await a.set_key("page", "1", old_version=0, new_version=1, request_id=10)
    await a.expect_raw(exp_set_key_ack(1, 10))
    await b.expect_raw(exp_key_info([(1, "page", "1")]))
    await c.expect_raw(exp_key_info([(1, "page", "1")]))
    # accepted update with a new version -> ACK to the requester
    await b.set_key("page", "2", old_version=1, new_version=2, request_id=11)
    await b.expect_raw(exp_set_key_ack(1, 11))
    await a.expect_raw(exp_key_info([(2, "page", "2")]))
    await c.expect_raw(exp_key_info([(2, "page", "2")]))
    # accepted with equal versions -> no reply at all; others get the new value
    await c.set_key("page", "3", old_version=2, new_version=2, request_id=12)
    await a.expect_raw(exp_key_info([(2, "page", "3")]))
    await b.expect_raw(exp_key_info([(2, "page", "3")]))
    await c.expect_nothing(0.3)
    d = await zw.connect(server, "doc", name="D", version=v, mode=1)
    await d.expect_raw(exp_key_info([(2, "page", "3")]))


@versions
@aiotest()
async def test_owner_disconnect_removes_client_keys(server, v):
    a, b, c = await trio(server, v)
    await a.set_key("k1", "alpha", old_version=0, new_version=1, request_id=1)
    await a.expect_raw(exp_set_key_ack(1, 1))
    await a.set_key("k2", "beta", old_version=0, new_version=7, request_id=2)
    await a.expect_raw(exp_set_key_ack(1, 2))
    for x in (b, c):
        await x.wait_keys({"k1": (1, "alpha"), "k2": (7, "beta")})
    await a.close()
    for x in (b, c):
        # removed: empty value, version + 1 (one message or two)
        await x.wait_keys({"k1": (2, ""), "k2": (8, "")})
        await x.expect_nothing(0.3)
    # removed keys are not sent to a new joiner
    d = await zw.connect(server, "doc", name="D", version=v, mode=1)
    await d.expect_nothing(0.3)


@versions
@aiotest()
async def test_owner_abrupt_disconnect_removes_client_keys(server, v):
    a, b, _ = await trio(server, v)
    await a.set_key("presence", "here", old_version=0, new_version=3, request_id=1)
    await a.expect_raw(exp_set_key_ack(1, 1))
    await b.expect_raw(exp_key_info([(3, "presence", "here")]))
    await a.abort()
    await b.expect_raw(exp_key_info([(4, "presence", "")]), timeout=10)


@versions
@aiotest()
async def test_key_changes_owner(server, v):
    a, b, c = await trio(server, v)
    await a.set_key("lock", "A", old_version=0, new_version=1, request_id=1)
    await a.expect_raw(exp_set_key_ack(1, 1))
    await b.expect(zw.KEY_INFO)
    await c.expect(zw.KEY_INFO)
    await b.set_key("lock", "B", old_version=1, new_version=2, request_id=2)
    await b.expect_raw(exp_set_key_ack(1, 2))
    await a.expect_raw(exp_key_info([(2, "lock", "B")]))
    await c.expect_raw(exp_key_info([(2, "lock", "B")]))
    # the old owner leaving does not remove it
    await a.close()
    await c.expect_nothing(0.5)
    await b.expect_nothing(0.01)
    # the new owner leaving does
    await b.close()
    await c.expect_raw(exp_key_info([(3, "lock", "")]))


@versions
@aiotest()
async def test_joiner_gets_existing_client_keys(server, v):
    a, b, _ = await trio(server, v)
    await a.set_key("presence:A", "Alice", old_version=0, new_version=1, request_id=1)
    await a.set_key("page", "\x00\x01bin", old_version=0, new_version=5, request_id=3)
    await a.expect_raw(exp_set_key_ack(1, 1))
    await a.expect_raw(exp_set_key_ack(1, 3))
    want = {"presence:A": (1, "Alice"), "presence:B": (1, "Bob"), "page": (5, "\x00\x01bin")}
    await b.wait_keys({k: want[k] for k in ("presence:A", "page")})
    await b.set_key("presence:B", "Bob", old_version=0, new_version=1, request_id=2)
    await b.expect_raw(exp_set_key_ack(1, 2))
    await a.wait_keys({"presence:B": want["presence:B"]})
    d = await zw.connect(server, "doc", name="D", version=v, mode=1)  # catch-up first
    await d.wait_keys(want)
    assert d.keys == {k.encode(): (ver, val.encode()) for k, (ver, val) in want.items()}
    await d.expect_nothing(0.3)


@versions
@aiotest()
async def test_empty_and_binary_key_values(server, v):
    a, b, _ = await trio(server, v)
    await a.set_key("empty", b"", old_version=0, new_version=1, request_id=1)
    await a.expect_raw(exp_set_key_ack(1, 1))
    await b.expect_raw(exp_key_info([(1, "empty", b"")]))
    val = bytes(range(256)) * 4
    await a.set_key(b"bin\xff\x00", val, old_version=0, new_version=0xFFFFFFFE, request_id=2)
    await a.expect_raw(exp_set_key_ack(1, 2))
    await b.expect_raw(exp_key_info([(0xFFFFFFFE, b"bin\xff\x00", val)]))


@versions
@aiotest()
async def test_rapid_updates_may_coalesce(server, v):
    a, b, c = await trio(server, v)
    await a.set_key("cursor", "0", old_version=0, new_version=1, request_id=100)
    for i in range(1, 30):
        await a.set_key("cursor", str(i), old_version=i, new_version=i + 1, request_id=100 + i)
    for i in range(30):
        await a.expect_raw(exp_set_key_ack(1, 100 + i))
    for x in (b, c):
        await x.wait_keys({"cursor": (30, "29")})
        await x.expect_nothing(0.2)
    await a.expect_nothing(0.01)


@versions
@aiotest()
async def test_keys_are_per_document(server, v):
    a = await zw.connect(server, "doc1", name="A", version=v, mode=0)
    b = await zw.connect(server, "doc2", name="B", version=v, mode=0)
    await a.set_key("k", "v", old_version=0, new_version=1, request_id=1)
    await a.expect_raw(exp_set_key_ack(1, 1))
    await a.set_key("s", "v", old_version=0, new_version=1, request_id=2, lifetime=1)
    await a.expect_raw(exp_set_key_ack(1, 2))
    await b.expect_nothing(0.3)
    # same names are independent on another document
    await b.set_key("k", "w", old_version=0, new_version=1, request_id=3)
    await b.expect_raw(exp_set_key_ack(1, 3))
    await b.set_key("s", "w", old_version=0, new_version=1, request_id=4, lifetime=1)
    await b.expect_raw(exp_set_key_ack(1, 4))
    c = await zw.connect(server, "doc3", name="C", version=v, mode=0)
    await c.expect_nothing(0.3)


# ---- session keys (lifetime != 0) ----

@versions
@aiotest()
async def test_session_key_stored_and_sent_to_joiners(server, v):
    a, b, _ = await trio(server, v)
    await a.set_key("title", "My drawing", old_version=0, new_version=1, request_id=5,
                    lifetime=1)
    await a.expect_raw(exp_set_key_ack(1, 5))
    await b.expect_raw(exp_key_info([(1, "title", "My drawing")]))
    await a.expect_nothing(0.2)
    # not a client key: its setter leaving changes nothing
    await a.close()
    await b.expect_nothing(0.4)
    d = await zw.connect(server, "doc", name="D", version=v, mode=1)
    await d.expect_raw(exp_key_info([(1, "title", "My drawing")]))
    # compare-version rule
    await d.set_key("title", "X", old_version=0, new_version=1, request_id=6, lifetime=1)
    await d.expect_raw(exp_set_key_ack(0, 6))
    await d.set_key("title", "Y", old_version=1, new_version=2, request_id=7, lifetime=255)
    await d.expect_raw(exp_set_key_ack(1, 7))
    await b.expect_raw(exp_key_info([(2, "title", "Y")]))
    # everybody leaves; the key stays with the document
    await zw.close_all()
    await asyncio.sleep(0.2)
    e = await zw.connect(server, "doc", name="E", version=v, mode=1)
    await e.expect_raw(exp_key_info([(2, "title", "Y")]))
    await e.expect_nothing(0.2)


@versions
@aiotest()
async def test_session_key_equal_versions_no_reply(server, v):
    a, b, _ = await trio(server, v)
    await a.set_key("s", "1", old_version=0, new_version=4, request_id=1, lifetime=1)
    await a.expect_raw(exp_set_key_ack(1, 1))
    await b.expect_raw(exp_key_info([(4, "s", "1")]))
    await a.set_key("s", "2", old_version=4, new_version=4, request_id=2, lifetime=1)
    await b.expect_raw(exp_key_info([(4, "s", "2")]))
    await a.expect_nothing(0.3)


@versions
@aiotest(timeout=30)
async def test_session_keys_survive_restart(server, v):
    a = await zw.connect(server, "doc", name="A", version=v, mode=2, initial=b"content")
    await a.set_key("session", "kept", old_version=0, new_version=3, request_id=1, lifetime=1)
    await a.expect_raw(exp_set_key_ack(1, 1))
    await a.set_key("client", "lost", old_version=0, new_version=1, request_id=2, lifetime=0)
    await a.expect_raw(exp_set_key_ack(1, 2))
    server.restart()
    await a.expect_closed(timeout=10)
    b = await zw.connect(server, "doc", name="B", version=v, mode=1)
    assert b.full_doc == b"content"
    # only the session key: client keys lived in memory
    await b.expect_raw(exp_key_info([(3, "session", "kept")]))
    await b.expect_nothing(0.3)
    await b.set_key("session", "next", old_version=3, new_version=4, request_id=3, lifetime=1)
    await b.expect_raw(exp_set_key_ack(1, 3))
    server.restart()
    c = await zw.connect(server, "doc", name="C", version=v, mode=1)
    await c.expect_raw(exp_key_info([(4, "session", "next")]))


@versions
@aiotest()
async def test_joiner_gets_client_and_session_keys(server, v):
    a, _, _ = await trio(server, v)
    await a.set_key("c", "client", old_version=0, new_version=1, request_id=1, lifetime=0)
    await a.set_key("s", "session", old_version=0, new_version=2, request_id=2, lifetime=1)
    await a.expect_raw(exp_set_key_ack(1, 1))
    await a.expect_raw(exp_set_key_ack(1, 2))
    d = await zw.connect(server, "doc", name="D", version=v, mode=1)
    await d.wait_keys({"c": (1, "client"), "s": (2, "session")})
    await d.expect_nothing(0.2)


# ---- one namespace: a name is held by one key, client or session ----

@versions
@aiotest()
async def test_joiner_gets_one_entry_per_name(server, v):
    """A session key holds its name: a client-key write that does not name its version
    is refused, so a joiner never gets a client and a session entry for one name."""
    a, b, _ = await trio(server, v)
    await a.set_key("k", "session", old_version=0, new_version=2, request_id=1, lifetime=1)
    await a.expect_raw(exp_set_key_ack(1, 1))
    await b.expect_raw(exp_key_info([(2, "k", "session")]))
    await b.set_key("k", "client", old_version=0, new_version=5, request_id=2, lifetime=0)
    await b.expect_raw(exp_set_key_ack(0, 2))
    d = await zw.connect(server, "doc", name="D", version=v, mode=1)
    await d.expect_raw(exp_key_info([(2, "k", "session")]))
    await d.expect_nothing(0.2)


@versions
@aiotest(timeout=30)
async def test_client_write_to_session_key(server, v):
    """Compared against the session key; accepted, it stays a session key (stored,
    outliving its writer)."""
    a, b, c = await trio(server, v)
    await a.set_key("page", "1", old_version=0, new_version=1, request_id=1, lifetime=1)
    await a.expect_raw(exp_set_key_ack(1, 1))
    for x in (b, c):
        await x.expect_raw(exp_key_info([(1, "page", "1")]))
    await b.set_key("page", "2", old_version=1, new_version=2, request_id=2, lifetime=0)
    await b.expect_raw(exp_set_key_ack(1, 2))
    for x in (a, c):
        await x.expect_raw(exp_key_info([(2, "page", "2")]))
    # its writer leaving removes nothing
    await b.close()
    for x in (a, c):
        await x.expect_nothing(0.4)
    d = await zw.connect(server, "doc", name="D", version=v, mode=1)
    await d.expect_raw(exp_key_info([(2, "page", "2")]))
    await d.expect_nothing(0.2)
    # stored: it survives a restart
    server.restart()
    e = await zw.connect(server, "doc", name="E", version=v, mode=1)
    await e.expect_raw(exp_key_info([(2, "page", "2")]))
    await e.set_key("page", "3", old_version=2, new_version=3, request_id=3, lifetime=1)
    await e.expect_raw(exp_set_key_ack(1, 3))


@versions
@aiotest()
async def test_session_write_to_client_key(server, v):
    """Compared against the client key; accepted, it stays a client key, now owned by the
    writer: removed (and announced) when the writer leaves, nothing left in storage."""
    a, b, c = await trio(server, v)
    await a.set_key("cursor", "A", old_version=0, new_version=1, request_id=1, lifetime=0)
    await a.expect_raw(exp_set_key_ack(1, 1))
    for x in (b, c):
        await x.expect_raw(exp_key_info([(1, "cursor", "A")]))
    # not the holder's version: refused, whichever lifetime
    await b.set_key("cursor", "B", old_version=0, new_version=1, request_id=2, lifetime=1)
    await b.expect_raw(exp_set_key_ack(0, 2))
    await b.set_key("cursor", "B", old_version=1, new_version=2, request_id=3, lifetime=1)
    await b.expect_raw(exp_set_key_ack(1, 3))
    for x in (a, c):
        await x.expect_raw(exp_key_info([(2, "cursor", "B")]))
    d = await zw.connect(server, "doc", name="D", version=v, mode=1)
    await d.expect_raw(exp_key_info([(2, "cursor", "B")]))
    await d.expect_nothing(0.2)
    await a.close()  # the old owner: nothing happens
    await c.expect_nothing(0.4)
    await b.close()  # the new owner: removed
    for x in (c, d):
        await x.expect_raw(exp_key_info([(3, "cursor", "")]))
    e = await zw.connect(server, "doc", name="E", version=v, mode=1)
    await e.expect_nothing(0.3)
    # the name is free again: any kind may take it, from version 0
    await e.set_key("cursor", "E", old_version=0, new_version=1, request_id=4, lifetime=1)
    await e.expect_raw(exp_set_key_ack(1, 4))


async def ack_skipping_keys(c, ack, request_id):
    """The SET KEY ACK, past any KEY INFORMATION (cluster announcements may repeat one)."""
    while True:
        m = await c.next()
        if m.type != zw.KEY_INFO:
            assert m.raw == exp_set_key_ack(ack, request_id), m
            return


@pytest.mark.skipif(REDIS is None, reason="redis-server not installed")
@aiotest(timeout=40)
async def test_one_namespace_across_cluster_servers(cluster):
    """Redis cluster mode: client keys live in Redis, session keys in the Redis store;
    a write on one server is compared against the holder set through another."""
    s1, s2 = cluster(2)
    a = await zw.connect(s1, "doc", name="A", mode=0)
    b = await zw.connect(s2, "doc", name="B", mode=1)
    await a.set_key("cursor", "A", old_version=0, new_version=1, request_id=1, lifetime=0)
    await ack_skipping_keys(a, 1, 1)
    await b.wait_keys({"cursor": (1, "A")})
    await b.set_key("cursor", "B", old_version=0, new_version=1, request_id=2, lifetime=1)
    await ack_skipping_keys(b, 0, 2)
    await b.set_key("cursor", "B", old_version=1, new_version=2, request_id=3, lifetime=1)
    await ack_skipping_keys(b, 1, 3)
    await a.wait_keys({"cursor": (2, "B")})
    await b.set_key("page", "1", old_version=0, new_version=4, request_id=4, lifetime=1)
    await ack_skipping_keys(b, 1, 4)
    await a.wait_keys({"page": (4, "1")})
    await a.set_key("page", "2", old_version=0, new_version=1, request_id=5, lifetime=0)
    await ack_skipping_keys(a, 0, 5)
    await a.set_key("page", "2", old_version=4, new_version=5, request_id=6, lifetime=0)
    await ack_skipping_keys(a, 1, 6)
    await b.wait_keys({"page": (5, "2")})
    for s in (s1, s2):
        d = await zw.connect(s, "doc", name="D", mode=1)
        await d.expect_raw(exp_key_info([(2, "cursor", "B"), (5, "page", "2")]))
        await d.expect_nothing(0.3)
        await d.close()


# ---- admin: keys ----

@versions
@aiotest()
async def test_admin_keys_refused_for_plain_ids(server, v):
    a, b, _ = await trio(server, v)
    await a.set_key("admin:lock", "1", old_version=0, new_version=1, request_id=1)
    await a.expect_raw(exp_set_key_ack(0, 1))
    await a.set_key("admin:lock", "1", old_version=0, new_version=1, request_id=2, lifetime=1)
    await a.expect_raw(exp_set_key_ack(0, 2))
    # even with equal versions (a rejection always gets a reply)
    await a.set_key("admin:x", "1", old_version=0, new_version=0, request_id=3)
    await a.expect_raw(exp_set_key_ack(0, 3))
    await b.expect_nothing(0.3)
    # only the "admin:" prefix is reserved
    await a.set_key("administrator", "ok", old_version=0, new_version=1, request_id=4)
    await a.expect_raw(exp_set_key_ack(1, 4))
    await b.expect_raw(exp_key_info([(1, "administrator", "ok")]))
    d = await zw.connect(server, "doc", name="D", version=v, mode=1)
    await d.expect_raw(exp_key_info([(1, "administrator", "ok")]))
    await d.expect_nothing(0.2)
    server2_doc = await zw.fetch_doc(server, "doc")
    assert server2_doc == b"d"


async def cas_incrementer(c, name, times, lifetime):
    """Increments key `name` `times` times by compare-and-set, learning the current
    version from KEY INFORMATION after a rejection. Returns the values it wrote."""
    key = name.encode()
    written = []
    req = 0
    while len(written) < times:
        ver = c.keys.get(key, (0, b""))[0]
        value = b"%s=%d" % (c.name.encode(), ver + 1)
        req = (req + 1) & 0xFFFF
        await c.set_key(name, value, old_version=ver, new_version=ver + 1, request_id=req,
                        lifetime=lifetime)
        while True:
            m = await c.next(timeout=10)
            if m.type == zw.SET_KEY_ACK:
                break
            assert m.type == zw.KEY_INFO, "%s got %r" % (c.name, m)
        assert m.request_id == req, m
        if m.ack == 1:
            if c.keys.get(key, (0, b""))[0] < ver + 1:
                c.keys[key] = (ver + 1, value)
            written.append(value)
        else:
            # somebody else got there first; its KEY INFORMATION is on the way
            while c.keys.get(key, (0, b""))[0] <= ver:
                m = await c.next(timeout=10)
                assert m.type == zw.KEY_INFO, "%s got %r" % (c.name, m)
    return written


@pytest.mark.parametrize("lifetime", [0, 1], ids=["client-key", "session-key"])
@aiotest(timeout=40)
async def test_concurrent_compare_and_set(server, lifetime):
    """Four clients race to increment one key; every accepted write is a +1 step, so the
    final version is the number of accepted writes, and every client (and a passive
    observer, whose updates may be coalesced) ends with that version and value."""
    observer = await zw.connect(server, "doc", name="obs", version=2, mode=0)
    racers = [await zw.connect(server, "doc", name="R%d" % i, version=2 + i % 2, mode=1)
              for i in range(4)]
    results = await asyncio.gather(*[cas_incrementer(c, "counter", 15, lifetime)
                                     for c in racers])
    total = sum(len(r) for r in results)
    assert total == 60
    # version k was written exactly once: values carry the version they were set to
    versions = sorted(int(v.split(b"=")[1]) for r in results for v in r)
    assert versions == list(range(1, 61)), versions
    last = [v for r in results for v in r if v.endswith(b"=60")][0]
    await observer.wait_keys({"counter": (60, last)}, timeout=10)
    for c in racers:
        await c.wait_keys({"counter": (60, last)}, timeout=10)
    for c in racers + [observer]:
        await c.expect_nothing(0.1)
    late = await zw.connect(server, "doc", name="late", version=3, mode=1)
    await late.expect_raw(exp_key_info([(60, "counter", last)]))
    if lifetime:
        await zw.close_all()
        late = await zw.connect(server, "doc", name="late2", version=3, mode=1)
        await late.expect_raw(exp_key_info([(60, "counter", last)]))
