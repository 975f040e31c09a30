"""Helpers for calling the management API and minting JWTs (docs/protocol.md) in
the integration tests. Written from docs/protocol.md, standard library only."""

import base64
import hashlib
import hmac
import http.client
import json
import time
import urllib.parse
import uuid

USER = "admin"
PASSWORD = "s3cret:with:colons"
SECRETS = {"SecretUser": USER, "SecretPassword": PASSWORD}

GO_DATE = "%a, %d %b %Y %H:%M:%S GMT"


def basic(user=USER, password=PASSWORD):
    raw = ("%s:%s" % (user, password)).encode()
    return "Basic " + base64.b64encode(raw).decode()


def rfc1123(t):
    """Unix seconds -> "Mon, 02 Jan 2006 15:04:05 GMT" (English names, any locale)."""
    days = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
              "Dec"]
    tm = time.gmtime(t)
    return "%s, %02d %s %04d %02d:%02d:%02d GMT" % (
        days[tm.tm_wday], tm.tm_mday, months[tm.tm_mon - 1], tm.tm_year, tm.tm_hour,
        tm.tm_min, tm.tm_sec)


def in_an_hour():
    return rfc1123(time.time() + 3600)


def _b(v):
    return v if isinstance(v, bytes) else str(v).encode()


def urlencoded(fields):
    return urllib.parse.urlencode([(k, _b(v)) for k, v in fields.items()]).encode()


def multipart(fields, files=None):
    """(body, content_type). files: name -> (filename, bytes)."""
    boundary = "----zwtest" + uuid.uuid4().hex
    out = []
    for k, v in fields.items():
        out.append(b"--" + boundary.encode() + b"\r\n")
        out.append(b'Content-Disposition: form-data; name="%s"\r\n\r\n' % k.encode())
        out.append(_b(v) + b"\r\n")
    for k, (fname, data) in (files or {}).items():
        out.append(b"--" + boundary.encode() + b"\r\n")
        out.append(b'Content-Disposition: form-data; name="%s"; filename="%s"\r\n'
                   % (k.encode(), fname.encode()))
        out.append(b"Content-Type: application/octet-stream\r\n\r\n")
        out.append(_b(data) + b"\r\n")
    out.append(b"--" + boundary.encode() + b"--\r\n")
    return b"".join(out), "multipart/form-data; boundary=" + boundary


def call(server, fields=None, *, auth=True, files=None, form="urlencoded", headers=None,
         query=None, body=None, chunked=False, timeout=10):
    """POST /socket. Returns (status, headers, body). `auth` is True (the right
    credentials), False (none), or an Authorization header value."""
    fields = dict(fields or {})
    hdrs = {}
    if auth is True:
        hdrs["Authorization"] = basic()
    elif auth:
        hdrs["Authorization"] = auth
    if body is None:
        if form == "multipart" or files:
            body, ctype = multipart(fields, files)
        else:
            body, ctype = urlencoded(fields), "application/x-www-form-urlencoded"
        hdrs["Content-Type"] = ctype
    hdrs.update(headers or {})
    path = "/socket" + ("?" + query if query else "")
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    try:
        if chunked:
            def gen(data=body, step=1000):
                for i in range(0, len(data), step):
                    yield data[i:i + step]
            conn.request("POST", path, body=gen(), headers=hdrs, encode_chunked=True)
        else:
            conn.request("POST", path, body=body, headers=hdrs)
        r = conn.getresponse()
        return r.status, r.headers, r.read()
    finally:
        conn.close()


def status(server, fields=None, **kw):
    return call(server, fields, **kw)[0]


def create_document(server, doc, contents, **kw):
    return status(server, {"method": "createDocument", "documentID": doc,
                           "contents": contents}, **kw)


def dump(server, doc):
    """The document's bytes, or None when it does not exist."""
    st, _, body = call(server, {"method": "dumpDocument", "documentID": doc})
    assert st in (200, 404), st
    return body if st == 200 else None


def add_token(server, token, doc, user, permissions=None, expiration=None, contents=None):
    fields = {"method": "addToken", "documentID": doc, "token": token, "userID": user,
              "expiration": expiration or in_an_hour()}
    if permissions is not None:
        fields["permissions"] = permissions
    if contents is not None:
        fields["contents"] = contents
    return status(server, fields)


def update_user(server, user, permissions):
    return status(server, {"method": "updateUser", "userID": user,
                           "permissions": permissions})


# ---- JWT (HS256), minted the way a customer's back end would ----

def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(claims, key, header=None, sign=True):
    header = header if header is not None else {"alg": "HS256", "typ": "JWT"}
    h = b64url(json.dumps(header, separators=(",", ":")).encode())
    p = b64url(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = (h + "." + p).encode()
    if not sign:
        return h + "." + p + "."
    key = key if isinstance(key, bytes) else key.encode()
    sig = hmac.new(key, signing_input, hashlib.sha256).digest()
    return h + "." + p + "." + b64url(sig)


def claims(doc, user="u1", perms="rw", exp_in=3600, **extra):
    c = {"sub": doc, "u": user, "p": perms, "exp": int(time.time()) + exp_in}
    c.update(extra)
    return c


def module_server(tmp_path_factory, name, **extra):
    """Generator for a module-scoped server fixture, built on conftest's Server: for
    the many small tests that only need unique ids, not a fresh server each."""
    import os
    import pytest
    from conftest import BIN, Server
    if not os.path.exists(BIN):
        pytest.skip("server binary %s not built" % BIN)
    s = Server(tmp_path_factory.mktemp(name), "srv", extra)
    s.start()
    try:
        yield s
    finally:
        s.stop()
        if s.problems:
            import sys
            sys.stderr.write(s.log_tail() + "\n")
            pytest.fail("; ".join(s.problems), pytrace=False)
