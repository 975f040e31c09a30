"""docs/protocol.md, Idle webhook: the idle-session webhook, received by a small HTTP listener that the
test starts. WebhookDelayMs shortens the reference's ~10 s delay for the tests."""

import base64
import http.server
import queue
import threading
import time
import urllib.parse

import pytest

import mgmtapi as api
import zwclient as zw
from zwclient import aiotest


class Listener:
    """An HTTP server on 127.0.0.1 recording every request it gets."""

    def __init__(self, delay=0.0, status=200):
        self.requests = queue.Queue()
        self.delay = delay
        self.status = status
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                outer.requests.put({"path": self.path, "headers": dict(self.headers),
                                    "body": body, "at": time.monotonic()})
                if outer.delay:
                    time.sleep(outer.delay)
                self.send_response(outer.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "http://127.0.0.1:%d/hook" % self.port

    def get(self, timeout):
        try:
            return self.requests.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def listener():
    lst = Listener()
    yield lst
    lst.close()


def form(req):
    return urllib.parse.parse_qs(req["body"].decode(), keep_blank_values=True,
                                 strict_parsing=True)


async def wait_request(lst, timeout):
    """The next request the listener got, waiting without blocking the event loop."""
    loop = zw.asyncio.get_running_loop()
    return await loop.run_in_executor(None, lst.get, timeout)


@aiotest(timeout=30)
async def test_idle_webhook_is_sent(server_factory, listener):
    s = server_factory(Webhook=listener.url, WebhookDelayMs=500, **api.SECRETS)
    a = await zw.connect(s, "lesson-1", name="A", initial=b"x")
    b = await zw.connect(s, "lesson-1", name="B")
    await a.close()
    # B is still there: no event
    assert await wait_request(listener, 1.2) is None
    left = time.monotonic()
    await b.close()
    req = await wait_request(listener, 5)
    assert req is not None, "no webhook after the last client left"
    waited = req["at"] - left
    assert 0.35 <= waited <= 3.5, "webhook after %.2fs, delay is 0.5s" % waited
    assert req["path"] == "/hook"
    assert req["headers"]["Content-Type"].startswith("application/x-www-form-urlencoded")
    assert form(req) == {"event": ["idle-session"], "documentID": ["lesson-1"]}
    want = "Basic " + base64.b64encode(("%s:%s" % (api.USER, api.PASSWORD)).encode()).decode()
    assert req["headers"].get("Authorization") == want
    # exactly one
    assert await wait_request(listener, 1.0) is None


@aiotest(timeout=30)
async def test_rejoin_within_delay_cancels(server_factory, listener):
    s = server_factory(Webhook=listener.url, WebhookDelayMs=1500)
    a = await zw.connect(s, "busy", name="A", initial=b"x")
    await a.close()
    await zw.asyncio.sleep(0.3)
    b = await zw.connect(s, "busy", name="B")  # rejoins before the 1.5 s are up
    assert await wait_request(listener, 2.5) is None, "webhook sent despite the rejoin"
    # When B leaves in turn, the event comes, once.
    await b.close()
    req = await wait_request(listener, 5)
    assert req is not None
    assert form(req)["documentID"] == ["busy"]
    # No credentials configured: no Authorization header.
    assert "Authorization" not in req["headers"]
    assert await wait_request(listener, 2.0) is None


@aiotest(timeout=30)
async def test_document_id_is_url_encoded(server_factory, listener):
    s = server_factory(Webhook=listener.url, WebhookDelayMs=200)
    doc = "a b&c=d/é?%+#"
    c = await zw.connect(s, doc, name="A", initial=b"x")
    await c.close()
    req = await wait_request(listener, 5)
    assert req is not None
    assert form(req) == {"event": ["idle-session"], "documentID": [doc]}


@aiotest(timeout=40)
async def test_several_documents_each_get_one_event(server_factory, listener):
    s = server_factory(Webhook=listener.url, WebhookDelayMs=300)
    docs = ["multi-%d" % i for i in range(5)]
    clients = [await zw.connect(s, d, name=d, initial=b"x") for d in docs]
    for c in clients:
        await c.close()
    got = []
    for _ in docs:
        req = await wait_request(listener, 5)
        assert req is not None, "got only %r" % got
        got += form(req)["documentID"]
    assert sorted(got) == sorted(docs)
    assert await wait_request(listener, 1.0) is None


@aiotest(timeout=40)
async def test_slow_endpoint_does_not_block_sessions(server_factory):
    slow = Listener(delay=3.0)
    try:
        s = server_factory(Webhook=slow.url, WebhookDelayMs=100)
        for i in range(3):
            c = await zw.connect(s, "slow-%d" % i, name="c%d" % i, initial=b"x")
            await c.close()
        await zw.asyncio.sleep(0.5)  # the first request is now hanging in the endpoint
        t0 = time.monotonic()
        for i in range(5):
            c = await zw.connect(s, "other-%d" % i, name="o%d" % i, initial=b"y")
            await c.append(b"z")
            await c.close()
        assert time.monotonic() - t0 < 2.0, "sessions waited for the webhook"
        assert api.status(s, {"method": "checkDocument", "documentID": "x"}) == 401
    finally:
        slow.close()


@aiotest(timeout=30)
async def test_failing_endpoint_is_harmless(server_factory):
    # Nothing listens on this port; then an endpoint answering 500.
    dead = Listener()
    url = dead.url
    dead.close()
    s = server_factory(Webhook=url, WebhookDelayMs=100)
    c = await zw.connect(s, "d1", name="A", initial=b"x")
    await c.close()
    await zw.asyncio.sleep(0.5)
    c = await zw.connect(s, "d1", name="B")
    await c.append(b"still fine")
    await c.close()
    await zw.asyncio.sleep(0.5)
    assert "idle-session for document d1 failed" in s.log_path.read_text(errors="replace")

    broken = Listener(status=500)
    try:
        s2 = server_factory(Webhook=broken.url, WebhookDelayMs=100)
        c = await zw.connect(s2, "d2", name="C", initial=b"x")
        await c.close()
        req = await wait_request(broken, 5)
        assert req is not None
        c = await zw.connect(s2, "d2", name="D")
        await c.append(b"ok")
    finally:
        broken.close()


@aiotest(timeout=30)
async def test_shutdown_with_pending_event(server_factory, listener):
    s = server_factory(Webhook=listener.url, WebhookDelayMs=60000)
    c = await zw.connect(s, "pending", name="A", initial=b"x")
    await c.close()
    await zw.asyncio.sleep(0.2)
    t0 = time.monotonic()
    s.stop()
    assert time.monotonic() - t0 < 8
    assert not s.problems, s.problems
