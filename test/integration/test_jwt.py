"""docs/protocol.md, Access control: JWTs as document ids when JWTKey is configured. Tokens are minted here
with hmac/hashlib the way a customer's back end would (see mgmtapi.jwt)."""

import base64
import json
import time

import pytest

import mgmtapi as api
import zwclient as zw
from zwclient import aiotest, exp_ack, exp_append, exp_error, exp_set_key_ack

KEY = "jwt-test-key-0123456789"
RAW_KEY = bytes(range(0, 256, 7))  # not valid UTF-8, only expressible as base64
B64_KEY = base64.b64encode(RAW_KEY).decode()


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    yield from api.module_server(tmp_path_factory, "jwt", JWTKey=KEY, **api.SECRETS)


@pytest.fixture(scope="module")
def srv64(tmp_path_factory):
    yield from api.module_server(tmp_path_factory, "jwt64", JWTKey=B64_KEY,
                                 JWTKeyIsBase64="true", **api.SECRETS)


async def refused(server, doc_id, code=4, **init):
    c = await zw.connect(server, name="refused")
    await c.send_init(doc_id, **init)
    errors = await c.expect_closed()
    assert [m.raw for m in errors] == [exp_error(code)], errors


def token(doc, perms="rw", user="u1", key=KEY, **kw):
    return api.jwt(api.claims(doc, user=user, perms=perms, **kw), key)


# ---- accepted ----

@pytest.mark.parametrize("v", [2, 3])
@aiotest()
async def test_valid_jwt(srv, v):
    doc = "jwt-valid-%d" % v
    c = await zw.connect(srv, token(doc), name="A", version=v, mode=0, initial=b"start")
    assert c.created
    await c.append(b" more")
    # The document is the `sub` claim, not the token.
    assert api.dump(srv, doc) == b"start more"
    b = await zw.connect(srv, token(doc, user="u2"), name="B", mode=1)
    assert bytes(b.doc) == b"start more"
    await c.append(b"!")
    await b.expect_raw(exp_append(3, 10, b"!"))


@aiotest()
async def test_read_only_jwt(srv):
    assert api.create_document(srv, "jwt-ro", "fixed") == 200
    w = await zw.connect(srv, token("jwt-ro"), name="writer", mode=1)
    r = await zw.connect(srv, token("jwt-ro", perms="r"), name="reader", mode=1)
    await r.send_append(5, b"nope", track=False)
    await r.expect_raw(exp_ack(2, 5))
    await w.expect_nothing(0.3)
    assert api.dump(srv, "jwt-ro") == b"fixed"
    await refused(srv, token("jwt-ro-missing", perms="r"), 4, mode=0)
    await refused(srv, token("jwt-ro", perms="r"), 4, mode=2)


@aiotest()
async def test_jwt_admin_permission(srv):
    assert api.create_document(srv, "jwt-admin", "x") == 200
    a = await zw.connect(srv, token("jwt-admin", perms="rwa"), name="admin", mode=1)
    u = await zw.connect(srv, token("jwt-admin", perms="rw"), name="user", mode=1)
    await u.set_key("admin:page", "2", old_version=0, new_version=1, request_id=1)
    await u.expect_raw(exp_set_key_ack(0, 1))
    await a.set_key("admin:page", "2", old_version=0, new_version=1, request_id=2)
    await a.expect_raw(exp_set_key_ack(1, 2))


@aiotest()
async def test_registered_token_still_works_with_jwt_key(srv):
    assert api.add_token(srv, "registered-opaque", "jwt-reg", "u", "rw",
                         contents="via token") == 200
    c = await zw.connect(srv, "registered-opaque", name="tok", mode=1)
    assert bytes(c.doc) == b"via token"


@aiotest()
async def test_update_user_applies_to_jwt_connections(srv):
    assert api.create_document(srv, "jwt-upd", "x") == 200
    c = await zw.connect(srv, token("jwt-upd", user="jwt-user-9"), name="c", mode=1)
    assert api.update_user(srv, "jwt-user-9", "") == 200
    errors = await c.expect_closed()
    assert [m.raw for m in errors] == [exp_error(4)]


@aiotest()
async def test_base64_key(srv64):
    c = await zw.connect(srv64, token("b64-doc", key=RAW_KEY), name="A", initial=b"ok")
    assert c.created
    # The key's base64 text used as raw bytes is a different key.
    await refused(srv64, token("b64-doc", key=B64_KEY))
    await refused(srv64, token("b64-doc", key=KEY))


# ---- refused ----

@aiotest()
async def test_plain_id_refused_with_jwt_key(srv):
    assert api.create_document(srv, "plain-doc", "x") == 200
    await refused(srv, "plain-doc", mode=1)
    await refused(srv, "plain-doc", mode=0)
    await refused(srv, "brand-new-plain", mode=0, initial=b"x")
    assert api.dump(srv, "brand-new-plain") is None


@aiotest()
async def test_expired(srv):
    assert api.create_document(srv, "jwt-exp", "x") == 200
    await refused(srv, token("jwt-exp", exp_in=-10), mode=1)
    await refused(srv, token("jwt-exp", exp_in=0), mode=1)


@aiotest()
async def test_missing_or_bad_exp(srv):
    assert api.create_document(srv, "jwt-noexp", "x") == 200
    await refused(srv, api.jwt({"sub": "jwt-noexp", "u": "u", "p": "rw"}, KEY), mode=1)
    c = api.claims("jwt-noexp")
    c["exp"] = str(c["exp"])
    await refused(srv, api.jwt(c, KEY), mode=1)


@aiotest()
async def test_not_yet_valid(srv):
    assert api.create_document(srv, "jwt-nbf", "x") == 200
    await refused(srv, token("jwt-nbf", nbf=int(time.time()) + 600), mode=1)


@aiotest()
async def test_wrong_key(srv):
    assert api.create_document(srv, "jwt-wk", "x") == 200
    await refused(srv, token("jwt-wk", key="another key"), mode=1)
    await refused(srv, token("jwt-wk", key=KEY[:-1]), mode=1)
    await refused(srv, token("jwt-wk", key=""), mode=1)


@aiotest()
async def test_alg_none(srv):
    assert api.create_document(srv, "jwt-none", "x") == 200
    claims = api.claims("jwt-none", perms="rwa")
    unsigned = api.jwt(claims, KEY, header={"alg": "none", "typ": "JWT"}, sign=False)
    await refused(srv, unsigned, mode=1)
    # alg none with a (valid HMAC) signature attached is refused too
    await refused(srv, api.jwt(claims, KEY, header={"alg": "none"}), mode=1)
    for alg in ("None", "NONE", "nOnE"):
        await refused(srv, api.jwt(claims, KEY, header={"alg": alg}, sign=False), mode=1)


@aiotest()
async def test_other_algorithms(srv):
    assert api.create_document(srv, "jwt-alg", "x") == 200
    claims = api.claims("jwt-alg")
    for header in ({"alg": "RS256", "typ": "JWT"}, {"alg": "HS512"}, {"alg": "HS384"},
                   {"alg": "ES256"}, {"alg": "hs256"}, {"typ": "JWT"}, {}):
        # an HMAC-SHA256 signature under the right key: only the header is wrong
        await refused(srv, api.jwt(claims, KEY, header=header), mode=1)


@aiotest()
async def test_truncated(srv):
    assert api.create_document(srv, "jwt-trunc", "x") == 200
    t = token("jwt-trunc")
    for cut in (1, 5, 43, 44, len(t) // 2, len(t) - 1):
        await refused(srv, t[:len(t) - cut], mode=1)
    h, p, s = t.split(".")
    await refused(srv, h + "." + p, mode=1)
    await refused(srv, h + "." + p + ".", mode=1)
    await refused(srv, t + ".", mode=1)
    await refused(srv, t + "=", mode=1)


@aiotest()
async def test_tampered(srv):
    assert api.create_document(srv, "jwt-tamper", "x") == 200
    t = token("jwt-tamper", perms="r")
    h, p, s = t.split(".")
    # Payload upgraded to rw, signature kept.
    claims = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    claims["p"] = "rwa"
    p2 = api.b64url(json.dumps(claims, separators=(",", ":")).encode())
    await refused(srv, h + "." + p2 + "." + s, mode=1)
    # Another document's signature.
    s2 = token("other").split(".")[2]
    await refused(srv, h + "." + p + "." + s2, mode=1)


@pytest.mark.parametrize("garbage", ids=lambda g: repr(g[:24]) + ("..." if len(g) > 24 else ""),
                         argvalues=[
    "garbage",
    "a.b.c",
    "...",
    "eyJhbGciOiJIUzI1NiJ9.garbage.garbage",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.!!!!",
    "not base64url+/=.eyJzdWIiOiJ4In0.AAAA",
    "\x00\x01\x02\xff",
    "x" * 400,
    "y" * 5000,  # longer than any token the store can hold
])
@aiotest()
async def test_garbage(srv, garbage):
    await refused(srv, garbage.encode("latin-1"), mode=0, initial=b"x")


@aiotest()
async def test_jwt_without_read_permission(srv):
    assert api.create_document(srv, "jwt-nor", "x") == 200
    await refused(srv, token("jwt-nor", perms="w"), mode=1)
    await refused(srv, token("jwt-nor", perms=""), mode=1)
    await refused(srv, api.jwt({"sub": "jwt-nor", "exp": int(time.time()) + 60}, KEY), mode=1)


@aiotest()
async def test_refusals_do_not_disturb_others(srv):
    assert api.create_document(srv, "jwt-calm", "x") == 200
    good = await zw.connect(srv, token("jwt-calm"), name="good", mode=1)
    for bad in ("garbage", token("jwt-calm", key="bad"), token("jwt-calm", exp_in=-1)):
        await refused(srv, bad, mode=1)
    await good.expect_nothing(0.2)
    await good.append(b"y")
