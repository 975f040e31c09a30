"""Secrets stay out of the logs: after sessions that carry known marker
strings in document contents, appends, broadcasts, key values, management-API
passwords (right and wrong), tokens and JWTs (valid, forged, expired, alg none), the
server's log (stderr and LogFile) holds none of them. Document ids and user ids are
not secret and may appear.
"""

import time

import pytest

import mgmtapi as api
import zwclient as zw
from zwclient import aiotest

MARK_DOC = "DOCCONTENT-7f3a9"
MARK_APPEND = "APPENDDATA-51c2e"
MARK_BCAST = "BROADCAST-c0ffe"
MARK_KEYVAL = "KEYVALUE-9b1d4"
MARK_TOKEN = "TOKEN-a8e61f"
MARK_WRONGPW = "WRONGPASS-3d7c"
MARK_API_CONTENT = "APICONTENT-e4f00"
JWT_KEY = "JWTKEY-6a2b8c"


def check_log(server, secrets):
    texts = [server.log_path.read_bytes()]
    logfile = server.dir / "zw.log"
    if logfile.exists():
        texts.append(logfile.read_bytes())
    assert any(b"joined document" in t for t in texts), "no sessions were logged at all"
    for t in texts:
        for s in secrets:
            s = s.encode() if isinstance(s, str) else s
            assert s not in t, "secret %r found in the log:\n%s" % (
                s, t[max(0, t.find(s) - 300):t.find(s) + 300].decode("utf-8", "replace"))


@aiotest(timeout=40)
async def test_no_secrets_in_logs_tokens_and_api(server_factory):
    server = server_factory(MaxConnections=32, LogFile="zw.log", **api.SECRETS)
    # Management API: right and wrong credentials, contents, a token.
    assert api.create_document(server, "api-doc", MARK_API_CONTENT) == 200
    assert api.status(server, {"method": "checkDocument", "documentID": "api-doc"},
                      auth=api.basic(password=MARK_WRONGPW)) == 401
    assert api.status(server, {"method": "checkDocument", "documentID": "api-doc"},
                      auth=api.basic(user=MARK_WRONGPW, password=MARK_WRONGPW)) == 401
    assert api.add_token(server, MARK_TOKEN, "tok-doc", "user-1", "rw") == 200
    assert api.add_token(server, MARK_TOKEN, "tok-doc", "user-1", "rw") == 409
    assert api.status(server, {"method": "addToken", "documentID": "x", "token": MARK_TOKEN + "b",
                               "userID": "u", "expiration": "not a date " + MARK_TOKEN}) == 400

    # Sessions through the token and a plain id, with marked contents everywhere.
    a = await zw.connect(server, MARK_TOKEN, name="A", mode=0, initial=MARK_DOC)
    b = await zw.connect(server, MARK_TOKEN, name="B", mode=1)
    await a.append(MARK_APPEND)
    await b.expect(zw.APPEND)
    await a.broadcast(MARK_BCAST)
    await b.expect(zw.BROADCAST)
    await a.set_key("k", MARK_KEYVAL, old_version=0, new_version=1, lifetime=1)
    await a.expect(zw.SET_KEY_ACK)
    await a.set_key("c", MARK_KEYVAL, old_version=0, new_version=1, lifetime=0)
    await a.expect(zw.SET_KEY_ACK)
    # A NACKed append and a malformed one with secret-looking bytes.
    await a.send_append(0, MARK_APPEND)
    await a.expect(zw.ACK)
    await b.send_raw(zw.enc_set_key("n", MARK_KEYVAL, old_version=0, new_version=1)[:-3])
    await b.expect_closed(allow=(zw.KEY_INFO,))
    # An unknown token on a never-create INIT, an oversize key value.
    c = await zw.connect(server, name="C")
    await c.send_init(MARK_TOKEN + "-unknown", mode=1)
    await c.expect_closed()
    await a.set_key("big", MARK_KEYVAL * 10000, old_version=0, new_version=1, lifetime=1)
    await a.expect(zw.SET_KEY_ACK)
    await a.close()
    assert api.dump(server, "tok-doc") == (MARK_DOC + MARK_APPEND).encode()
    check_log(server, [MARK_DOC, MARK_APPEND, MARK_BCAST, MARK_KEYVAL, MARK_TOKEN,
                       api.PASSWORD, MARK_WRONGPW, MARK_API_CONTENT,
                       api.basic().split()[1], api.basic(password=MARK_WRONGPW).split()[1]])


@aiotest(timeout=40)
async def test_no_secrets_in_logs_jwt(server_factory):
    server = server_factory(MaxConnections=32, LogFile="zw.log", JWTKey=JWT_KEY)
    good = api.jwt(api.claims("jwt-doc", user="jwt-user"), JWT_KEY)
    forged = api.jwt(api.claims("jwt-doc"), "not-the-key")
    expired = api.jwt(api.claims("jwt-doc", exp_in=-10), JWT_KEY)
    none = api.jwt(api.claims("jwt-doc"), JWT_KEY, header={"alg": "none"}, sign=False)
    a = await zw.connect(server, good, name="A", mode=0, initial=MARK_DOC)
    await a.append(MARK_APPEND)
    for bad in (forged, expired, none, "plain-id-" + MARK_TOKEN, good[:-5] + "AAAAA"):
        c = await zw.connect(server, name="bad")
        await c.send_init(bad, mode=0)
        errors = await c.expect_closed()
        assert [e.code for e in errors] == [4], (bad, errors)
    await a.close()
    secrets = [JWT_KEY, MARK_DOC, MARK_APPEND, MARK_TOKEN]
    for t in (good, forged, expired, none):
        secrets += [t, t.split(".")[1]] + ([t.split(".")[2]] if t.split(".")[2] else [])
    check_log(server, secrets)
