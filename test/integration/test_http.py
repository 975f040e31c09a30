"""docs/protocol.md, HTTP endpoints (plain HTTP on /socket) and Transport (upgrade, compression)."""

import time

import pytest

import zwclient as zw
from test_cluster import REDIS, Redis
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


@pytest.mark.parametrize("query", ["ping=1", "x=1&ping", "ping=&x=1", "a=b&ping=yes&c",
                                   "p%69ng"])
def test_ping_among_other_parameters(server, query):
    """`ping` anywhere in the query, with any value or none, is the health check."""
    assert server.http("GET", "/socket?" + query)[::2] == (200, b"OK")


@pytest.mark.parametrize("query", ["pingx", "xping=1", "x=ping", "pin"])
def test_not_ping(server, query):
    assert server.http("GET", "/socket?" + query)[::2] == (200, RUNNING)


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
async def test_deflate_is_negotiated_unless_the_url_turns_it_off(server):
    # permessage-deflate is taken when offered, without context takeover either way.
    c = await zw.Client.open(server.url, name="deflate", compression="deflate")
    [ext] = c.ws.extensions
    assert ext.name == "permessage-deflate"
    assert ext.local_no_context_takeover and ext.remote_no_context_takeover
    m = await c.join("http-deflate", version=2, mode=0, initial=b"xy")
    assert m.raw == zw.exp_append(2, 2, b"")
    # ?compression=0 on the URL keeps the reference's meaning: no compression.
    c2 = await zw.Client.open(server.url + "?compression=0", name="deflate2",
                              compression="deflate")
    assert not c2.ws.extensions
    m = await c2.join("http-deflate", version=2, mode=1)
    assert m.raw == zw.exp_append(2, 0, b"xy")


@aiotest()
async def test_compression_0_in_the_config_turns_deflate_off(server_factory):
    server = server_factory(Compression="0")
    c = await zw.Client.open(server.url, name="deflate", compression="deflate")
    assert not c.ws.extensions
    m = await c.join("http-deflate-off", version=2, mode=0, initial=b"xy")
    assert m.raw == zw.exp_append(2, 2, b"")


@pytest.mark.skipif(REDIS is None, reason="redis-server not installed")
@pytest.mark.parametrize("query", ["ping", "ping=1", "x=1&ping"])
def test_ping_checks_the_store(server_factory, tmp_path, query):
    """The health check is a real round trip: 500 while Redis is down, 200 again after."""
    redis = Redis(tmp_path)
    redis.start()
    try:
        srv = server_factory(Database="redis", DbServer="127.0.0.1:%d" % redis.port)
        assert srv.http("GET", "/socket?" + query)[::2] == (200, b"OK")
        redis.stop()
        status, _, _ = srv.http("GET", "/socket?" + query, timeout=15)
        assert status == 500
        # the plain page does not touch the store
        assert srv.http("GET", "/socket?x=1")[::2] == (200, RUNNING)
        redis.start()
        deadline = time.monotonic() + 10
        while srv.http("GET", "/socket?" + query, timeout=15)[0] != 200:
            assert time.monotonic() < deadline, "still unhealthy after Redis came back"
            time.sleep(0.2)
    finally:
        redis.stop()
