"""docs/protocol.md, Management API: the management API on POST /socket — credentials, form encodings,
every method and every status code of the table."""

import base64
import time

import pytest

import mgmtapi as api
import zwclient as zw
from zwclient import aiotest, exp_error

ORIGIN = "https://school.example"


@pytest.fixture
def srv(server_factory):
    return server_factory(**api.SECRETS)


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One server for the stateless tests below (each uses its own ids)."""
    yield from api.module_server(tmp_path_factory, "mgmt", **api.SECRETS)


# ---- credentials ----

def test_disabled_when_no_secret_configured(server):
    # No SecretUser/SecretPassword: every call is 401, whatever the credentials.
    for auth in (False, api.basic("", ""), api.basic("admin", "")):
        st, hdrs, _ = api.call(server, {"method": "checkDocument", "documentID": "x"},
                               auth=auth)
        assert st == 401
        assert hdrs.get("WWW-Authenticate", "").startswith("Basic")


@pytest.mark.parametrize("auth", [
    False,
    api.basic("admin", "wrong"),
    api.basic("wrong", api.PASSWORD),
    api.basic("", ""),
    api.basic("admin", api.PASSWORD + "x"),
    api.basic("admin", api.PASSWORD[:-1]),
    api.basic("admi", "n:" + api.PASSWORD),  # same bytes "admin:...", split elsewhere
    "Bearer " + base64.b64encode(b"admin:" + api.PASSWORD.encode()).decode(),
    "Basic !!!notbase64",
    "Basic " + base64.b64encode(b"no colon at all").decode(),
    "Basic",
    "",
])
def test_bad_credentials_are_401(shared, auth):
    st, hdrs, _ = api.call(shared, {"method": "checkDocument", "documentID": "x"}, auth=auth)
    assert st == 401
    assert hdrs.get("WWW-Authenticate", "").startswith("Basic")


def test_good_credentials(srv):
    assert api.status(srv, {"method": "checkDocument", "documentID": "x"}) == 404
    # The scheme name is case-insensitive (RFC 7617).
    auth = api.basic().replace("Basic", "basic")
    assert api.status(srv, {"method": "checkDocument", "documentID": "x"}, auth=auth) == 404


def test_only_user_configured(server_factory):
    s = server_factory(SecretUser="admin")
    assert api.status(s, {"method": "checkDocument", "documentID": "x"},
                      auth=api.basic("admin", "")) == 404
    assert api.status(s, {"method": "checkDocument", "documentID": "x"},
                      auth=api.basic("admin", "x")) == 401


def test_credentials_checked_before_method(srv):
    # An unauthenticated caller learns nothing, not even which methods exist.
    assert api.status(srv, {"method": "noSuchMethod"}, auth=False) == 401


# ---- method dispatch and fields ----

def test_unknown_or_missing_method_is_400(srv):
    assert api.status(srv, {"method": "noSuchMethod"}) == 400
    assert api.status(srv, {"method": "createdocument", "documentID": "d",
                            "contents": "x"}) == 400
    assert api.status(srv, {}) == 400
    assert api.status(srv, {"method": ""}) == 400
    assert api.status(srv, {"documentID": "d"}) == 400


@pytest.mark.parametrize("method,fields,missing", [
    ("createDocument", {"contents": "x"}, "documentID"),
    ("createDocument", {"documentID": "d"}, "contents"),
    ("createDocument", {"documentID": "d", "contents": ""}, "contents"),
    ("createDocument", {"documentID": "", "contents": "x"}, "documentID"),
    ("deleteDocument", {}, "documentID"),
    ("dumpDocument", {}, "documentID"),
    ("checkDocument", {}, "documentID"),
    ("checkDocument", {"documentid": "d"}, "documentID"),  # names are case-sensitive
    ("addToken", {"token": "t", "userID": "u", "expiration": api.in_an_hour()}, "documentID"),
    ("addToken", {"documentID": "d", "userID": "u", "expiration": api.in_an_hour()}, "token"),
    ("addToken", {"documentID": "d", "token": "t", "expiration": api.in_an_hour()}, "userID"),
    ("addToken", {"documentID": "d", "token": "t", "userID": "u"}, "expiration"),
    ("updateUser", {"permissions": "r"}, "userID"),
])
def test_missing_field_is_400(shared, method, fields, missing):
    fields = dict(fields, method=method)
    st, _, body = api.call(shared, fields)
    assert st == 400
    assert body.decode().strip() == "Missing " + missing
    # the same through multipart/form-data
    st, _, body = api.call(shared, fields, form="multipart")
    assert st == 400
    assert body.decode().strip() == "Missing " + missing


def test_malformed_bodies(srv):
    # A multipart body that does not match its boundary.
    st, _, _ = api.call(srv, body=b"garbage without boundary",
                        headers={"Content-Type": "multipart/form-data; boundary=abcdefgh"})
    assert st == 400
    st, _, _ = api.call(srv, body=b'{"method":"checkDocument"}',
                        headers={"Content-Type": "application/json"})
    assert st == 400
    # The server still works afterwards.
    assert api.create_document(srv, "after", "ok") == 200


def test_fields_from_query_string(srv):
    # As with the reference (Go's FormValue), fields may come in the URL.
    assert api.create_document(srv, "q", "data") == 200
    st, _, _ = api.call(srv, body=b"", query="method=checkDocument&documentID=q",
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert st == 200
    st, _, _ = api.call(srv, {"documentID": "q"}, query="method=dumpDocument")
    assert st == 200
    # The body wins over the query string.
    st, _, body = api.call(srv, {"method": "dumpDocument", "documentID": "q"},
                           query="documentID=other")
    assert (st, body) == (200, b"data")


def test_first_value_of_a_repeated_field_wins(srv):
    body = b"method=createDocument&documentID=first&documentID=second&contents=x"
    st, _, _ = api.call(srv, body=body,
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert st == 200
    assert api.dump(srv, "first") == b"x"
    assert api.dump(srv, "second") is None


# ---- createDocument / dumpDocument / checkDocument ----

def test_create_dump_check(srv):
    assert api.status(srv, {"method": "checkDocument", "documentID": "doc"}) == 404
    assert api.status(srv, {"method": "dumpDocument", "documentID": "doc"}) == 404
    assert api.create_document(srv, "doc", "hello world") == 200
    assert api.status(srv, {"method": "checkDocument", "documentID": "doc"}) == 200
    st, _, body = api.call(srv, {"method": "dumpDocument", "documentID": "doc"})
    assert (st, body) == (200, b"hello world")
    # 409, and the contents are unchanged
    assert api.create_document(srv, "doc", "other") == 409
    assert api.dump(srv, "doc") == b"hello world"


@aiotest()
async def test_created_document_is_served_to_clients(srv):
    assert api.create_document(srv, "shared", "initial bytes") == 200
    c = await zw.connect(srv, "shared", name="A", mode=1)
    assert bytes(c.doc) == b"initial bytes"
    await c.append(b" + more")
    assert api.dump(srv, "shared") == b"initial bytes + more"


def test_binary_contents_urlencoded(srv):
    data = bytes(range(256)) * 3
    assert api.create_document(srv, "bin", data) == 200
    assert api.dump(srv, "bin") == data


def test_contents_as_uploaded_file(srv):
    data = b"line one\r\n--not-a-boundary\r\n\x00\xff binary" * 50
    st, _, _ = api.call(srv, {"method": "createDocument", "documentID": "file"},
                        files={"contents": ("drawing.zwibbler", data)})
    assert st == 200
    assert api.dump(srv, "file") == data


def test_contents_as_multipart_text_field(srv):
    st, _, _ = api.call(srv, {"method": "createDocument", "documentID": "mp",
                              "contents": "text field"}, form="multipart")
    assert st == 200
    assert api.dump(srv, "mp") == b"text field"


def test_empty_uploaded_file_creates_empty_document(srv):
    st, _, _ = api.call(srv, {"method": "createDocument", "documentID": "empty"},
                        files={"contents": ("empty.txt", b"")})
    assert st == 200
    assert api.status(srv, {"method": "checkDocument", "documentID": "empty"}) == 200
    assert api.dump(srv, "empty") == b""


def test_large_contents_both_encodings(srv):
    big = bytes((i * 7 + i // 256) % 256 for i in range(1_500_000))
    assert api.create_document(srv, "big-url", big) == 200
    assert api.dump(srv, "big-url") == big
    st, _, _ = api.call(srv, {"method": "createDocument", "documentID": "big-file"},
                        files={"contents": ("big.bin", big)})
    assert st == 200
    assert api.dump(srv, "big-file") == big


def test_chunked_request_body(srv):
    data = b"chunked " * 2000
    st, _, _ = api.call(srv, {"method": "createDocument", "documentID": "chunked",
                              "contents": data}, chunked=True)
    assert st == 200
    assert api.dump(srv, "chunked") == data


def test_body_too_large_is_413(server_factory):
    s = server_factory(MaxApiBodyBytes=4096, **api.SECRETS)
    st, _, _ = api.call(s, {"method": "createDocument", "documentID": "d",
                            "contents": "x" * 10000})
    assert st == 413
    st, _, _ = api.call(s, {"method": "createDocument", "documentID": "d"},
                        files={"contents": ("f", b"y" * 10000)})
    assert st == 413
    # Without a Content-Length the limit still holds.
    st, _, _ = api.call(s, {"method": "createDocument", "documentID": "d",
                            "contents": "z" * 10000}, chunked=True)
    assert st == 413
    assert api.status(s, {"method": "checkDocument", "documentID": "d"}) == 404
    # Small bodies still work.
    assert api.create_document(s, "d", "small") == 200


# ---- deleteDocument ----

def test_delete_document(srv):
    assert api.create_document(srv, "gone", "bytes") == 200
    assert api.status(srv, {"method": "deleteDocument", "documentID": "gone"}) == 200
    assert api.status(srv, {"method": "checkDocument", "documentID": "gone"}) == 404
    # Deleting a missing document is not an error.
    assert api.status(srv, {"method": "deleteDocument", "documentID": "gone"}) == 200
    # It can be created again, fresh.
    assert api.create_document(srv, "gone", "new") == 200
    assert api.dump(srv, "gone") == b"new"


@aiotest()
async def test_delete_document_with_two_clients_connected(srv):
    a = await zw.connect(srv, "live", name="A", initial=b"abc")
    b = await zw.connect(srv, "live", name="B")
    other = await zw.connect(srv, "other-doc", name="other")
    # a session key, which must go with the document
    await a.set_key("k", "v", old_version=0, new_version=1, lifetime=1)
    await a.expect(zw.SET_KEY_ACK)
    await b.wait_keys({"k": (1, "v")})

    assert api.status(srv, {"method": "deleteDocument", "documentID": "live"}) == 200
    for c in (a, b):
        errors = await c.expect_closed()
        assert [m.raw for m in errors] == [exp_error(1)], errors
    # Clients of other documents are untouched.
    await other.expect_nothing(0.3)
    await other.append(b"still here")

    assert api.status(srv, {"method": "checkDocument", "documentID": "live"}) == 404
    # Recreated, it has no bytes and no keys of the old one.
    c = await zw.connect(srv, "live", name="C", initial=b"fresh")
    assert c.created
    await c.expect_nothing(0.3)


# ---- addToken ----

@aiotest()
async def test_add_token(srv):
    assert api.create_document(srv, "board", "teacher's board") == 200
    assert api.add_token(srv, "tok-1", "board", "alice", "rw") == 200
    c = await zw.connect(srv, "tok-1", name="alice", mode=1)
    assert bytes(c.doc) == b"teacher's board"
    await c.append(b"!")
    assert api.dump(srv, "board") == b"teacher's board!"
    # The token string is not a document of its own.
    assert api.status(srv, {"method": "checkDocument", "documentID": "tok-1"}) == 404


def test_add_token_twice_is_409(srv):
    assert api.add_token(srv, "dup", "d1", "u1", "r") == 200
    assert api.add_token(srv, "dup", "d2", "u2", "rw") == 409
    assert api.add_token(srv, "dup2", "d1", "u1", "r") == 200


@pytest.mark.parametrize("date", [
    "tomorrow",
    "2030-01-02T15:04:05Z",
    "1893456000",
    "Mon, 2 Jan 2030 15:04:05 GMT",
    "Mon, 02 Jan 2030 15:04 GMT",
    "Mon, 02 Jan 2030 15:04:05",
    "Mon, 02 Jan 2030 15:04:05 pst",
    "Mon, 02 Jan 2030 15:04:05 +5:00",
    "Mon, 02 Jan 2030 25:04:05 GMT",
    "Mon, 31 Feb 2030 15:04:05 GMT",
    "Mon, 02 Jan 2030 15:04:05 GMT extra",
])
def test_add_token_bad_date_is_400(shared, date):
    token = "bad-date-" + date
    assert api.add_token(shared, token, "d", "u", "rw", expiration=date) == 400
    # nothing was registered
    assert api.add_token(shared, token, "d", "u", "rw") == 200


def test_add_token_go_example_date(srv):
    assert api.add_token(srv, "t", "d", "u", "rw",
                         expiration="Mon, 02 Jan 2040 15:04:05 GMT") == 200


def go_date(t, zone="GMT", hour_fmt="%02d", fraction=""):
    """Unix seconds t written as an RFC 1123 wall-clock time followed by `zone`."""
    s = api.rfc1123(t)[:-4]  # without " GMT"
    hh = int(s[17:19])
    return s[:17] + (hour_fmt % hh) + s[19:] + fraction + " " + zone


def at_5am(t):
    """A time at 05:mm:ss UTC on the same side of now as t (for a one-digit hour)."""
    now = time.time()
    u = t - t % 86400 + 5 * 3600 + 17
    if t > now and u <= now:
        u += 86400
    if t < now and u >= now:
        u -= 86400
    return u


async def token_usable(srv, token):
    """True when `token` opens its document (created with contents "x"), False when
    the server no longer knows it (it is then a plain id of a missing document)."""
    c = await zw.connect(srv, name="probe")
    await c.send_init(token, mode=1)
    m = await c.next()
    await c.close()
    if m.type == zw.ERROR:
        return False
    assert m.type in (zw.APPEND_V2, zw.APPEND_V3) and m.data == b"x", m
    return True


# Accepted like Go's time.Parse(time.RFC1123, ...) in the reference, all read as UTC.
REFERENCE_FORMS = [
    ("utc", lambda t: go_date(t, "UTC")),
    ("pst", lambda t: go_date(t, "PST")),
    ("cest", lambda t: go_date(t, "CEST")),
    ("est", lambda t: go_date(t, "EST")),
    ("plus-0000", lambda t: go_date(t, "+0000")),
    ("minus-0000", lambda t: go_date(t, "-0000")),
    ("gmt-plus-5", lambda t: go_date(t, "GMT+5")),
    ("one-digit-hour", lambda t: go_date(at_5am(t), hour_fmt="%d")),
    ("fraction", lambda t: go_date(t, fraction=".123456")),
    ("spaces", lambda t: go_date(t).replace(" ", "  ")),
    ("lower-case-names", lambda t: go_date(t)[:4].lower() + go_date(t)[4:8]
     + go_date(t)[8:11].upper() + go_date(t)[11:]),
]


@pytest.mark.parametrize("name,fmt", REFERENCE_FORMS, ids=[f[0] for f in REFERENCE_FORMS])
@aiotest()
async def test_add_token_reference_date_forms(shared, name, fmt):
    now = int(time.time())
    # a wall-clock time an hour ahead, read as UTC: valid
    ok = fmt(now + 3600)
    assert api.add_token(shared, "live-" + name, "doc-" + name, "u", "rw", expiration=ok,
                         contents="x") == 200, ok
    assert await token_usable(shared, "live-" + name)
    # an hour ago, read as UTC: expired, whatever the zone says (PST would be 7 h ahead)
    old = fmt(now - 3600)
    assert api.add_token(shared, "old-" + name, "doc-" + name, "u", "rw",
                         expiration=old) == 200, old
    assert not await token_usable(shared, "old-" + name), old


@aiotest()
async def test_add_token_numeric_offset_applied(shared):
    """+hhmm / -hhmm beyond what the reference reads as UTC is applied as an offset."""
    now = int(time.time())
    # an hour ahead, written in UTC-7: its wall clock is 6 hours *behind* now
    ahead = go_date(now + 3600 - 7 * 3600, "-0700")
    assert api.add_token(shared, "off-ahead", "doc-off", "u", "rw", expiration=ahead,
                         contents="x") == 200
    assert await token_usable(shared, "off-ahead")
    # an hour ago, written in UTC+1: its wall clock is *ahead* of now, yet expired
    ago = go_date(now - 3600 + 3600, "+0100")
    assert api.add_token(shared, "off-ago", "doc-off", "u", "rw", expiration=ago) == 200
    assert not await token_usable(shared, "off-ago")


@aiotest()
async def test_add_token_with_contents_creates_document(srv):
    assert api.add_token(srv, "tc", "made-by-token", "bob", "rw",
                         contents="initial contents") == 200
    assert api.dump(srv, "made-by-token") == b"initial contents"
    c = await zw.connect(srv, "tc", name="bob", mode=1)
    assert bytes(c.doc) == b"initial contents"


def test_add_token_with_contents_for_existing_document_is_409(srv):
    assert api.create_document(srv, "exists", "original") == 200
    assert api.add_token(srv, "t1", "exists", "u", "rw", contents="new") == 409
    assert api.dump(srv, "exists") == b"original"
    # without contents, a token for an existing document is fine
    assert api.add_token(srv, "t2", "exists", "u", "rw") == 200


def test_add_token_multipart(srv):
    st, _, _ = api.call(srv, {"method": "addToken", "documentID": "mpd", "token": "mpt",
                              "userID": "u", "permissions": "r",
                              "expiration": api.in_an_hour()},
                        files={"contents": ("c.txt", b"from a file")})
    assert st == 200
    # The reference reads addToken's `contents` only as a text field; here an uploaded
    # file works too, as it does for createDocument.
    assert api.dump(srv, "mpd") == b"from a file"


# ---- updateUser ----

def test_update_user(srv):
    assert api.update_user(srv, "nobody", "r") == 200
    assert api.add_token(srv, "ut", "d", "carol", "rw") == 200
    assert api.update_user(srv, "carol", "r") == 200
    assert api.status(srv, {"method": "updateUser", "userID": "carol"}) == 200


# ---- CORS ----

def test_cors_on_api_responses(srv):
    for auth, want in ((True, 404), (False, 401)):
        st, hdrs, _ = api.call(srv, {"method": "checkDocument", "documentID": "x"},
                               auth=auth, headers={"Origin": ORIGIN})
        assert st == want
        assert hdrs.get("Access-Control-Allow-Origin") == ORIGIN
        assert hdrs.get("Access-Control-Allow-Credentials") == "true"
        assert "Authorization" in hdrs.get("Access-Control-Allow-Headers", "")
    st, hdrs, _ = api.call(srv, {"method": "checkDocument", "documentID": "x"})
    assert "Access-Control-Allow-Origin" not in hdrs


def test_many_calls_on_one_keep_alive_connection(srv):
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    try:
        for i in range(20):
            body = api.urlencoded({"method": "createDocument", "documentID": "ka%d" % i,
                                   "contents": "x" * i + "y"})
            conn.request("POST", "/socket", body=body, headers={
                "Authorization": api.basic(),
                "Content-Type": "application/x-www-form-urlencoded"})
            r = conn.getresponse()
            r.read()
            assert r.status == 200
            # an unauthorized call with a body does not desynchronise the connection
            conn.request("POST", "/socket", body=body, headers={
                "Content-Type": "application/x-www-form-urlencoded"})
            r = conn.getresponse()
            r.read()
            assert r.status == 401
    finally:
        conn.close()
    assert api.dump(srv, "ka19") == b"x" * 19 + b"y"
