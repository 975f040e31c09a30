"""docs/protocol.md, HTTP endpoints (plain HTTP on /socket) and Transport (upgrade, compression)."""

import zwclient as zw
from zwclient import aiotest

RUNNING = b"Zwibbler collaboration Server is running."
CORS_METHODS = {"POST", "GET", "OPTIONS", "PUT", "DELETE"}
CORS_HEADERS = {"accept", "content-type", "content-length", "accept-encoding",
                "x-csrf-token", "authorization"}


def _list(value):
    return {v.strip() for v in (value or "").split(",") if v.strip()}


def check_cors(headers, origin):
    assert headers.get("Access-Control-Allow-Origin") == origin, dict(headers)
    assert (headers.get("Access-Control-Allow-Credentials") or "").lower() == "true", dict(headers)
    methods = {m.upper() for m in _list(headers.get("Access-Control-Allow-Methods"))}
    assert CORS_METHODS <= methods, "Allow-Methods %r lacks %r" % (methods, CORS_METHODS - methods)
    hdrs = {h.lower() for h in _list(headers.get("Access-Control-Allow-Headers"))}
    assert CORS_HEADERS <= hdrs, "Allow-Headers %r lacks %r" % (hdrs, CORS_HEADERS - hdrs)


def test_get_socket(server):
    status, _, body = server.http("GET", "/socket")
    assert status == 200
    assert body == RUNNING


def test_ping(server):
    status, _, body = server.http("GET", "/socket?ping")
    assert status == 200
    assert body == b"OK"
    # repeatable (watchdogs poll it)
    for _ in range(5):
        assert server.http("GET", "/socket?ping")[::2] == (200, b"OK")


def test_cors_get(server):
    origin = "https://draw.example.com"
    status, headers, body = server.http("GET", "/socket", headers={"Origin": origin})
    assert status == 200
    assert body == RUNNING
    check_cors(headers, origin)


def test_cors_ping(server):
    origin = "http://localhost:8080"
    status, headers, body = server.http("GET", "/socket?ping", headers={"Origin": origin})
    assert (status, body) == (200, b"OK")
    check_cors(headers, origin)


def test_cors_echoes_each_origin(server):
    for origin in ("http://a.example", "https://b.example:8443"):
        _, headers, _ = server.http("GET", "/socket", headers={"Origin": origin})
        assert headers.get("Access-Control-Allow-Origin") == origin


def test_options_preflight(server):
    origin = "https://app.example.org"
    status, headers, body = server.http("OPTIONS", "/socket", headers={
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "Authorization, Content-Type",
    })
    assert status in (200, 204), status
    assert body == b""
    check_cors(headers, origin)


def test_management_api_disabled_without_secret(server):
    # §6: with neither SecretUser nor SecretPassword configured every call gets 401.
    status, _, _ = server.http("POST", "/socket", body="method=checkDocument&documentID=x",
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 401


@aiotest()
async def test_upgrade_with_compression_0(server):
    c = await zw.Client.open(server.url + "?compression=0", name="c0")
    m = await c.join("http-compression-0", version=3, mode=0, initial=b"abc")
    assert m.raw == zw.exp_append(3, 3, b"")
    ack = await c.append(b"def")
    assert ack.raw == zw.exp_ack(1, 6)
    assert await zw.fetch_doc(server, "http-compression-0") == b"abcdef"


@aiotest()
async def test_upgrade_offering_deflate_is_not_negotiated(server):
    # §1: permessage-deflate is not offered; a client that asks for it still connects.
    c = await zw.Client.open(server.url, name="deflate", compression="deflate")
    assert not c.ws.extensions, "server negotiated %r" % (c.ws.extensions,)
    m = await c.join("http-deflate", version=2, mode=0, initial=b"xy")
    assert m.raw == zw.exp_append(2, 2, b"")
    c2 = await zw.Client.open(server.url + "?compression=0", name="deflate2",
                              compression="deflate")
    assert not c2.ws.extensions
    m = await c2.join("http-deflate", version=2, mode=1)
    assert m.raw == zw.exp_append(2, 0, b"xy")
