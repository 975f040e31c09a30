"""docs/protocol.md, Access control: tokens registered with addToken, the permissions they carry, and
updateUser on live connections. JWTs are in test_jwt.py."""

import time

import pytest

import mgmtapi as api
import zwclient as zw
from zwclient import aiotest, exp_ack, exp_append, exp_error, exp_key_info, exp_set_key_ack


@pytest.fixture
def srv(server_factory):
    return server_factory(**api.SECRETS)


async def refused(server, token, code, **init):
    """Connects with `token`; the server must answer ERROR `code` and close."""
    c = await zw.connect(server, name="refused")
    await c.send_init(token, **init)
    errors = await c.expect_closed()
    assert [m.raw for m in errors] == [exp_error(code)], errors


# ---- resolution ----

@pytest.mark.parametrize("v", [2, 3])
@aiotest()
async def test_token_maps_to_its_document(srv, v):
    assert api.create_document(srv, "real-doc", "abc") == 200
    assert api.add_token(srv, "opaque-token", "real-doc", "alice", "rw") == 200
    t = await zw.connect(srv, "opaque-token", name="token", version=v, mode=1)
    assert bytes(t.doc) == b"abc"
    p = await zw.connect(srv, "real-doc", name="plain", mode=1)
    await t.append(b"def")
    await p.expect_raw(exp_append(3, 3, b"def"))
    await p.append(b"ghi")
    await t.expect_raw(exp_append(v, 6, b"ghi"))
    assert api.dump(srv, "real-doc") == b"abcdefghi"


@aiotest()
async def test_writer_token_creates_its_document(srv):
    assert api.add_token(srv, "w-tok", "created-by-token", "u", "rw") == 200
    c = await zw.connect(srv, "w-tok", name="writer", mode=0, initial=b"init")
    assert c.created
    assert api.dump(srv, "created-by-token") == b"init"
    assert api.dump(srv, "w-tok") is None


@aiotest()
async def test_writer_token_missing_document_mode1_is_error_1(srv):
    assert api.add_token(srv, "w1", "absent", "u", "rw") == 200
    await refused(srv, "w1", 1, mode=1)


@aiotest()
async def test_writer_token_mode2_existing_is_error_2(srv):
    assert api.create_document(srv, "there", "x") == 200
    assert api.add_token(srv, "w2", "there", "u", "rw") == 200
    await refused(srv, "w2", 2, mode=2)


@pytest.mark.parametrize("perms", ["", "w", "wa", "a", "xyz"])
@aiotest()
async def test_token_without_read_is_refused(srv, perms):
    assert api.create_document(srv, "doc-" + perms, "secret") == 200
    assert api.add_token(srv, "t-" + perms, "doc-" + perms, "u", perms) == 200
    await refused(srv, "t-" + perms, 4, mode=1)
    await refused(srv, "t-" + perms, 4, mode=0)


@aiotest()
async def test_token_without_permissions_field_is_refused(srv):
    # addToken's `permissions` is optional; without it the token grants nothing.
    assert api.create_document(srv, "np", "x") == 200
    assert api.add_token(srv, "np-tok", "np", "u") == 200
    await refused(srv, "np-tok", 4)


@aiotest()
async def test_expired_token_does_not_reach_its_document(srv):
    assert api.create_document(srv, "private", "secret") == 200
    past = api.rfc1123(time.time() - 60)
    assert api.add_token(srv, "old-tok", "private", "u", "rw", expiration=past) == 200
    # Without a JWT key an unknown string is a plain id: "old-tok" names an empty,
    # different document, never "private".
    await refused(srv, "old-tok", 1, mode=1)


@aiotest()
async def test_token_expiring_soon_works_then_expires(srv):
    assert api.create_document(srv, "soon", "s") == 200
    assert api.add_token(srv, "soon-tok", "soon", "u", "rw",
                         expiration=api.rfc1123(time.time() + 2)) == 200
    c = await zw.connect(srv, "soon-tok", name="early", mode=1)
    assert bytes(c.doc) == b"s"
    await c.close()
    await zw.asyncio.sleep(3.2)
    await refused(srv, "soon-tok", 1, mode=1)


@aiotest()
async def test_overlong_id_is_not_a_storage_failure(srv):
    # Too long to be a registered token (LMDB keys stop at 511 bytes): resolved as a
    # plain id, which opens (ids of up to MaxDocIdBytes, 64 KiB, are fine) ...
    c = await zw.connect(srv, "z" * 5000, name="long", mode=0, initial=b"x")
    assert c.created
    await c.append(b"y")
    # ... or, past MaxDocIdBytes, is refused for its length; the server goes on.
    c = await zw.connect(srv, name="longer")
    await c.send_init("z" * 70000, mode=0, initial=b"x")
    errors = await c.expect_closed()
    assert [e.raw for e in errors] == [zw.exp_error(0, "document id is too long")], errors
    ok = await zw.connect(srv, "short", name="ok", initial=b"x")
    await ok.append(b"y")


# ---- read-only tokens ----

@pytest.mark.parametrize("v", [2, 3])
@aiotest()
async def test_read_only_token_cannot_change_document(srv, v):
    assert api.create_document(srv, "board", "teacher") == 200
    assert api.add_token(srv, "student", "board", "s1", "r") == 200
    teacher = await zw.connect(srv, "board", name="teacher", mode=1)
    other = await zw.connect(srv, "board", name="other", mode=1)
    s = await zw.connect(srv, "student", name="student", version=v, mode=1)
    assert bytes(s.doc) == b"teacher"

    # At the right offset: ack 2 with the unchanged length, nothing stored or relayed.
    await s.send_append(7, b"SCRIBBLE", track=False)
    await s.expect_raw(exp_ack(2, 7))
    # At a wrong offset: a plain NACK with the current length.
    await s.send_append(3, b"x", track=False)
    m = await s.expect(zw.ACK)
    assert (m.ack, m.length) == (0, 7)
    await teacher.expect_nothing(0.3)
    await other.expect_nothing(0.1)
    assert api.dump(srv, "board") == b"teacher"

    # The student still receives the teacher's changes.
    await teacher.append(b"!")
    await s.expect_raw(exp_append(v, 7, b"!"))
    await other.expect_raw(exp_append(3, 7, b"!"))
    # ...and its read-only append after that is again acknowledged with ack 2.
    await s.send_append(8, b"again", track=False)
    await s.expect_raw(exp_ack(2, 8))
    assert api.dump(srv, "board") == b"teacher!"


@aiotest()
async def test_read_only_token_never_creates(srv):
    assert api.add_token(srv, "ro", "not-yet", "s1", "r") == 200
    # mode 0 behaves as mode 1, and a missing document is "access denied"
    await refused(srv, "ro", 4, mode=0, initial=b"would create")
    await refused(srv, "ro", 4, mode=1)
    # mode 2 (always create) without w is refused outright
    await refused(srv, "ro", 4, mode=2, initial=b"x")
    assert api.dump(srv, "not-yet") is None
    # once the document exists, mode 0 opens it
    assert api.create_document(srv, "not-yet", "now") == 200
    c = await zw.connect(srv, "ro", name="ro", mode=0, initial=b"ignored")
    assert bytes(c.doc) == b"now"
    await refused(srv, "ro", 4, mode=2)


# ---- admin: keys ----

@aiotest()
async def test_admin_keys_need_a(srv):
    assert api.add_token(srv, "teacher", "kdoc", "t", "rwa", contents="x") == 200
    assert api.add_token(srv, "pupil", "kdoc", "p", "rw") == 200
    t = await zw.connect(srv, "teacher", name="teacher", mode=1)
    p = await zw.connect(srv, "pupil", name="pupil", mode=1)
    await p.set_key("admin:lock", "1", old_version=0, new_version=1, request_id=7)
    await p.expect_raw(exp_set_key_ack(0, 7))
    await p.set_key("admin:lock", "1", old_version=0, new_version=1, request_id=8, lifetime=1)
    await p.expect_raw(exp_set_key_ack(0, 8))
    await t.expect_nothing(0.2)
    await t.set_key("admin:lock", "on", old_version=0, new_version=1, request_id=9)
    await t.expect_raw(exp_set_key_ack(1, 9))
    await p.expect_raw(exp_key_info([(1, "admin:lock", "on")]))
    # ordinary keys need no a
    await p.set_key("cursor", "here", old_version=0, new_version=1, request_id=10)
    await p.expect_raw(exp_set_key_ack(1, 10))


@aiotest()
async def test_read_only_token_can_set_ordinary_keys(srv):
    # The reference gates only admin: keys on permissions (presence, pages, ...).
    assert api.add_token(srv, "viewer", "vdoc", "v", "r", contents="x") == 200
    v = await zw.connect(srv, "viewer", name="viewer", mode=1)
    await v.set_key("presence", "viewer", old_version=0, new_version=1, request_id=1)
    await v.expect_raw(exp_set_key_ack(1, 1))


# ---- updateUser on live connections ----

@aiotest()
async def test_update_user_demotes_live_connection(srv):
    assert api.create_document(srv, "class", "0") == 200
    assert api.add_token(srv, "bob-1", "class", "bob", "rw") == 200
    assert api.add_token(srv, "eve-1", "class", "eve", "rw") == 200
    bob = await zw.connect(srv, "bob-1", name="bob", mode=1)
    eve = await zw.connect(srv, "eve-1", name="eve", mode=1)
    await bob.append(b"1")
    await eve.expect_raw(exp_append(3, 1, b"1"))

    assert api.update_user(srv, "bob", "r") == 200
    # bob stays connected, but his appends no longer count
    await bob.send_append(2, b"2", track=False)
    await bob.expect_raw(exp_ack(2, 2))
    await eve.expect_nothing(0.3)
    # eve (another user) is untouched
    await eve.append(b"e")
    await bob.expect_raw(exp_append(3, 2, b"e"))
    assert api.dump(srv, "class") == b"01e"

    # the stored token changed too: a new connection with it is read-only
    bob2 = await zw.connect(srv, "bob-1", name="bob2", mode=1)
    await bob2.send_append(3, b"x", track=False)
    await bob2.expect_raw(exp_ack(2, 3))

    # and promotion works the same way
    assert api.update_user(srv, "bob", "rw") == 200
    await bob.append(b"3")
    await eve.expect_raw(exp_append(3, 3, b"3"))
    assert api.dump(srv, "class") == b"01e3"


@aiotest()
async def test_update_user_revokes_live_connection(srv):
    assert api.create_document(srv, "room", "r") == 200
    assert api.add_token(srv, "mal-1", "room", "mallory", "rw") == 200
    assert api.add_token(srv, "mal-2", "room", "mallory", "rw") == 200
    assert api.add_token(srv, "ann-1", "room", "ann", "rw") == 200
    m1 = await zw.connect(srv, "mal-1", name="mallory-1", mode=1)
    m2 = await zw.connect(srv, "mal-2", name="mallory-2", mode=1)
    ann = await zw.connect(srv, "ann-1", name="ann", mode=1)

    assert api.update_user(srv, "mallory", "") == 200
    for c in (m1, m2):
        errors = await c.expect_closed()
        assert [m.raw for m in errors] == [exp_error(4)], errors
    await ann.expect_nothing(0.3)
    await ann.append(b"+")
    # both stored tokens lost their permissions
    await refused(srv, "mal-1", 4, mode=1)
    await refused(srv, "mal-2", 4, mode=1)


@aiotest()
async def test_update_user_does_not_touch_plain_ids(srv):
    assert api.create_document(srv, "p", "x") == 200
    plain = await zw.connect(srv, "p", name="plain", mode=1)
    assert api.update_user(srv, "", "") == 400  # Missing userID
    assert api.update_user(srv, "someone", "") == 200
    await plain.expect_nothing(0.2)
    await plain.append(b"y")
