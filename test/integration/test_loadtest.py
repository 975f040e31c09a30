"""The bundled load tester (`zwibbler --test`): it connects everyone, counts
right and its data check passes against our server; and its data check catches a
corrupted stream, fed by a small fake server written here.

The fake speaks just enough of the protocol (docs/protocol.md): INIT (v3) answered by
a catch-up APPEND, APPEND answered by ACK/NACK and relayed to the document's other
clients in commit order, optional message splitting (§1.1). It can lie to the first
N connections (the tester's clients), then tell the truth to the checker, which
connects last.
"""

import asyncio
import http
import json
import os
import re
import signal
import ssl
import struct
import subprocess
import threading
import time

import pytest
import websockets

from conftest import BIN, free_port

TIMEOUT = 60


def run_tester(url, *args, timeout=TIMEOUT):
    """Runs the tester with --json; returns (exit code, summary dict or None, stderr)."""
    cmd = [BIN, "--test", url, "--json"] + [str(a) for a in args]
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    out = p.stdout.decode("utf-8", "replace").strip()
    err = p.stderr.decode("utf-8", "replace")
    summary = None
    if out:
        lines = out.splitlines()
        assert len(lines) == 1, "stdout must be one JSON line, got:\n" + out
        summary = json.loads(lines[0])
    return p.returncode, summary, err


def need_binary():
    if not os.path.exists(BIN):
        pytest.skip("server binary %s not built" % BIN)


# ---------------------------------------------------------------- fake server

class FakeServer:
    """A protocol-3 document server in a background asyncio thread.

    lie: None, or a function (conn_number, catch_up_bytes) -> bytes that replaces
    the catch-up sent to connections number 0..lie_count-1.
    split: when set, every server message longer than this goes out split (§1.1).
    """

    def __init__(self, lie=None, lie_count=0, split=None, docs=None, tls=None, refuse=()):
        self.lie, self.lie_count, self.split = lie, lie_count, split
        self.refuse, self.attempts = set(refuse), 0
        self.docs = {k: bytearray(v) for k, v in (docs or {}).items()}
        self.sessions = {}
        self.conns = 0
        self.tls = tls
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._main, daemon=True)

    @property
    def url(self):
        return "%s://127.0.0.1:%d/socket" % ("wss" if self.tls else "ws", self.port)

    def __enter__(self):
        self.thread.start()
        assert self.ready.wait(10), "fake server did not start"
        return self

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self.stop.set_result, None)
        self.thread.join(10)

    def _main(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())

    async def _serve(self):
        self.stop = self.loop.create_future()
        async with websockets.serve(self._client, "127.0.0.1", self.port, ssl=self.tls,
                                    max_size=None, compression=None,
                                    process_request=self._admit):
            self.ready.set()
            await self.stop

    async def _admit(self, path, headers):
        """Answers upgrade attempts listed in `refuse` (0-based) with 503."""
        n = self.attempts
        self.attempts += 1
        if n in self.refuse:
            return http.HTTPStatus.SERVICE_UNAVAILABLE, [], b"busy\n"
        return None

    def _pieces(self, msg, max_size):
        if max_size is None or len(msg) <= max_size:
            return [msg]
        out = [msg[:1] + b"\x01" + msg[2:max_size]]
        rest = msg[max_size:]
        step = max_size - 2
        while rest:
            chunk, rest = rest[:step], rest[step:]
            out.append(b"\xff" + (b"\x01" if rest else b"\x00") + chunk)
        return out

    async def _client(self, ws, path=None):
        number = self.conns
        self.conns += 1
        queue = asyncio.Queue()

        async def writer():
            try:
                while True:
                    msg = await queue.get()
                    if msg is None:  # the handler is done: all before it is sent
                        return
                    for piece in self._pieces(msg, self.split):
                        await ws.send(piece)
            except websockets.ConnectionClosed:
                pass

        wtask = asyncio.ensure_future(writer())
        doc_id = None
        try:
            init = await ws.recv()
            assert init[0] == 1 and struct.unpack(">H", init[2:4])[0] == 3, init[:4]
            offset, idlen = struct.unpack(">QI", init[13:25])
            doc_id = bytes(init[25:25 + idlen])
            doc = self.docs.setdefault(doc_id, bytearray())
            catch_up = bytes(doc[offset:])
            if self.lie and number < self.lie_count:
                catch_up = self.lie(number, catch_up)
            queue.put_nowait(b"\x05\x00" + struct.pack(">IQ", 0, offset) + catch_up)
            members = self.sessions.setdefault(doc_id, [])
            members.append(queue)
            async for m in ws:
                if m[0] not in (2, 5):
                    continue
                hl = 14 if m[0] == 5 else 10
                off = struct.unpack(">Q", m[hl - 8:hl])[0]
                data = bytes(m[hl:])
                if off != len(doc):
                    queue.put_nowait(b"\x81\x00" + struct.pack(">HQ", 0, len(doc)))
                    continue
                doc += data
                queue.put_nowait(b"\x81\x00" + struct.pack(">HQ", 1, len(doc)))
                relay = b"\x05\x00" + struct.pack(">IQ", 0, off) + data
                for q in members:
                    if q is not queue:
                        q.put_nowait(relay)
        except websockets.ConnectionClosed:
            pass
        finally:
            if doc_id is not None and queue in self.sessions.get(doc_id, []):
                self.sessions[doc_id].remove(queue)
            queue.put_nowait(None)  # let the writer finish what is queued
            await asyncio.wait([wtask], timeout=10)
            wtask.cancel()


class Output:
    """Collects a running process's stdout and stderr lines, so that a test can wait
    for what the process prints instead of sleeping."""

    def __init__(self, p):
        self.p, self.out, self.err = p, [], []
        self.threads = [threading.Thread(target=self._read, args=(f, lines), daemon=True)
                        for f, lines in ((p.stdout, self.out), (p.stderr, self.err))]
        for t in self.threads:
            t.start()

    @staticmethod
    def _read(f, lines):
        for line in iter(f.readline, b""):
            lines.append(line.decode("utf-8", "replace"))

    def wait_for(self, pattern, timeout):
        """Waits until a stdout line matches pattern (a compiled regex); returns the
        match."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            for line in list(self.out):
                m = pattern.search(line)
                if m:
                    return m
            assert self.p.poll() is None, "exited early: " + "".join(self.out + self.err)
            time.sleep(0.05)
        raise AssertionError("no line matching %r in %ss: %s" % (pattern.pattern, timeout,
                                                                 "".join(self.out)))

    def finish(self, timeout):
        """Waits for the process to end; returns (stdout, stderr) as text."""
        self.p.wait(timeout)
        for t in self.threads:
            t.join(timeout)
        return "".join(self.out), "".join(self.err)


def flip_last_byte(number, data):
    return data[:-1] + bytes([data[-1] ^ 0x55]) if data else b"\x00"


# ---------------------------------------------------------------- against our server

def test_loadtest_against_server(server_factory):
    teachers, students, docs = 6, 294, 2
    srv = server_factory(MaxConnections=teachers + students + 50)
    code, s, err = run_tester(srv.url, "--docid", "lt-basic", "--teachers", teachers,
                              "--students", students, "--docs", docs, "--duration", 5,
                              "--delay-ms", 300, "--connect-spread-ms", 1000)
    assert s is not None, err
    assert code == 0, err
    assert s["ok"] and s["errors"] == 0, err
    assert s["expected"] == s["connected"] == teachers + students
    assert s["not_connected"] == s["connect_errors"] == s["dropped"] == 0
    # Every change sent was answered, and the stored bytes are exactly the ACKed ones.
    assert s["appends_sent"] == s["acks"] + s["nacks"]
    assert s["acks"] > 10
    assert s["doc_bytes"] == s["acks"] * s["change_bytes"]
    # Each ACKed change reaches at most every other client of its document.
    per_doc = (teachers + students) // docs
    assert 0 < s["deliveries"] <= s["acks"] * (per_doc - 1)
    assert s["s2s_ms"]["count"] > 0 and s["ack_rtt_ms"]["count"] == s["acks"]
    dc = s["data_check"]
    assert dc["ok"] and dc["checked"] == teachers + students and dc["mismatched"] == 0


def test_loadtest_checks_a_full_server(server_factory):
    """The data check still runs when the clients fill the server's connection cap:
    the tester closes them before its checkers connect, and retries refused ones."""
    clients = 40
    srv = server_factory(MaxConnections=clients)
    code, s, err = run_tester(srv.url, "--docid", "lt-full", "--teachers", 8,
                              "--students", clients - 8, "--docs", 20, "--duration", 2,
                              "--delay-ms", 200, "--connect-spread-ms", 300)
    assert code == 0 and s["ok"], err
    assert s["connected"] == clients
    assert s["data_check"]["checked"] == clients and s["data_check"]["docs_unchecked"] == 0


# ---------------------------------------------------------------- against the fake

def test_loadtest_counts_against_fake():
    need_binary()
    with FakeServer() as fake:
        code, s, err = run_tester(fake.url, "--docid", "fake", "--teachers", 3,
                                  "--students", 20, "--duration", 3, "--delay-ms", 100,
                                  "--connect-spread-ms", 300)
    assert code == 0 and s["ok"], err
    assert s["connected"] == 23 and s["data_check"]["checked"] == 23
    assert s["doc_bytes"] == s["acks"] * 10 == len(fake.docs[b"fake"])
    assert s["appends_sent"] == s["acks"] + s["nacks"]


def test_loadtest_reassembles_split_messages():
    """Catch-ups and relays split into continuations (§1.1) are put back together."""
    need_binary()
    prefill = bytes(range(256)) * 20
    with FakeServer(split=64, docs={b"split": prefill}) as fake:
        code, s, err = run_tester(fake.url, "--docid", "split", "--teachers", 2,
                                  "--students", 5, "--duration", 2, "--delay-ms", 100,
                                  "--change-bytes", 150, "--connect-spread-ms", 100)
    assert code == 0 and s["ok"], err
    assert s["doc_bytes"] == len(prefill) + 150 * s["acks"]
    assert s["data_check"]["ok"]


def test_loadtest_checker_retries_when_refused():
    """A checker turned away (503, server full) tries again; refused clients count."""
    need_binary()
    with FakeServer(refuse={1, 3, 4}) as fake:
        code, s, err = run_tester(fake.url, "--docid", "busy", "--teachers", 0,
                                  "--students", 3, "--duration", 1, "--connect-spread-ms", 0)
    # Attempts 0-2: the students, one refused; 3-5: the checker, refused twice.
    assert fake.attempts == 6
    assert s["connect_errors"] == 1 and s["connected"] == 2 and code == 1
    assert s["data_check"]["checked"] == 2 and s["data_check"]["docs_unchecked"] == 0
    assert "503" in err


def test_loadtest_detects_corrupted_bytes():
    need_binary()
    students = 4
    prefill = b"hello, document"
    with FakeServer(lie=flip_last_byte, lie_count=students, docs={b"bad": prefill}) as fake:
        code, s, err = run_tester(fake.url, "--docid", "bad", "--teachers", 0,
                                  "--students", students, "--duration", 1,
                                  "--connect-spread-ms", 0)
    assert fake.conns == students + 1  # the clients, then one checker
    assert code == 1, err
    assert s["connected"] == students
    assert not s["ok"] and not s["data_check"]["ok"]
    assert s["data_check"]["mismatched"] == students
    assert "data check" in err and "FAILED" in err


def test_loadtest_detects_short_document():
    """A stream one byte short of the document is caught too (length, not only CRC)."""
    need_binary()
    with FakeServer(lie=lambda n, d: d[:-1], lie_count=2, docs={b"short": b"0123456789"}) as fake:
        code, s, err = run_tester(fake.url, "--docid", "short", "--teachers", 0,
                                  "--students", 2, "--duration", 1, "--connect-spread-ms", 0)
    assert code == 1, err
    assert s["data_check"]["mismatched"] == 2


def test_loadtest_wss(tmp_path):
    need_binary()
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    with FakeServer(tls=ctx) as fake:
        code, s, err = run_tester(fake.url, "--docid", "tls", "--teachers", 2,
                                  "--students", 10, "--duration", 2, "--delay-ms", 100,
                                  "--connect-spread-ms", 200)
    assert code == 0 and s["ok"], err
    assert s["connected"] == 12 and s["acks"] > 0


def test_loadtest_connection_refused():
    need_binary()
    port = free_port()  # nothing listens there
    code, s, err = run_tester("ws://127.0.0.1:%d/socket" % port, "--teachers", 1,
                              "--students", 4, "--duration", 1, "--connect-spread-ms", 0)
    assert code == 1
    assert s["connect_errors"] == 5 and s["connected"] == 0 and not s["ok"]


def test_loadtest_sigint_prints_summary():
    """Without --duration it runs until Ctrl-C, then summarises (reference behaviour)."""
    need_binary()
    with FakeServer() as fake:
        p = subprocess.Popen([BIN, "--test", fake.url, "--docid", "int", "--teachers", "1",
                              "--students", "3", "--delay-ms", "50",
                              "--connect-spread-ms", "0"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        output = Output(p)
        try:
            # Interrupted once the live status line shows everyone connected and
            # changes stored.
            output.wait_for(re.compile(r"connections 4/4 .*document [1-9][0-9]* bytes"), TIMEOUT)
            p.send_signal(signal.SIGINT)
            text, err = output.finish(TIMEOUT)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert "connections 4/4" in text  # the live status line
    assert "data check" in text and "PASSED" in text, text + err
    assert p.returncode == 0


def interrupt_tester(url, after_s, *args):
    """Runs the tester without --duration (the reference's way), sends it SIGINT
    after after_s seconds; returns (exit code, stdout text, stderr text)."""
    p = subprocess.Popen([BIN, "--test", url] + [str(a) for a in args],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        time.sleep(after_s)
        assert p.poll() is None, "the tester ended by itself"
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=TIMEOUT)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return p.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def test_loadtest_sigint_against_server(server_factory):
    """Ctrl-C is the normal end of a run without --duration: against our server it
    prints the summary and passes, exit status 0."""
    srv = server_factory(MaxConnections=100)
    code, out, err = interrupt_tester(srv.url, 5, "--docid", "lt-int", "--teachers", 2,
                                      "--students", 30, "--delay-ms", 200)
    summary = out[out.index("--- load test summary"):]
    assert "32 of 32 connected; 0 failed to connect, 0 dropped" in summary, out + err
    assert "data check         PASSED: 32 clients" in summary, out + err
    assert "errors             0 -> OK" in summary, out + err
    assert code == 0, out + err


def test_loadtest_sigint_during_ramp(server_factory):
    """Ctrl-C before every client's connect time came: those never started are not
    failures; the verdict rests on the ones that ran."""
    srv = server_factory(MaxConnections=100)
    code, out, err = interrupt_tester(srv.url, 3, "--docid", "lt-ramp", "--teachers", 2,
                                      "--students", 38, "--delay-ms", 200,
                                      "--connect-spread-ms", 20000, "--json")
    s = json.loads(out.strip().splitlines()[-1])
    assert s["interrupted"] and 0 < s["not_started"] < 40, err
    assert s["connected"] + s["not_started"] == 40, err
    assert s["data_check"]["ok"] and s["data_check"]["checked"] == s["connected"], err
    assert s["errors"] == 0 and s["ok"], err
    assert "not started" in err and "errors             0 -> OK" in err
    assert code == 0, err


def test_loadtest_bad_flags():
    need_binary()
    p = subprocess.run([BIN, "--test", "ws://127.0.0.1:1/socket", "--teachers", "x"],
                       capture_output=True, timeout=TIMEOUT)
    assert p.returncode == 2 and b"--teachers" in p.stderr
    p = subprocess.run([BIN, "--test", "ftp://x/socket"], capture_output=True, timeout=TIMEOUT)
    assert p.returncode == 1 and b"ws://" in p.stderr


def test_loadtest_help_lists_every_flag():
    """--help prints the usage, made from the flag table, on stdout and exits 0."""
    need_binary()
    p = subprocess.run([BIN, "--test", "--help"], capture_output=True, timeout=TIMEOUT)
    assert p.returncode == 0, p.stderr
    usage = p.stdout.decode()
    for flag in ("--test URL", "--docid ID", "--teachers N", "--students M", "--docs K",
                 "--duration S", "--delay-ms D", "--change-bytes B", "--connect-spread-ms T",
                 "--json", "--tls-verify", "--verbose"):
        assert "\n  " + flag + " " in usage, flag + " missing from:\n" + usage
    assert '(default "loadtest")' in usage and "(default 3000)" in usage
    assert "--config" not in usage and "--port" not in usage  # the server's, not ours


def test_loadtest_flag_forms():
    """--flag=value, -flag value and -flag=value work as --flag value does (the
    reference's Go flag package accepts them all); the server's own --config and
    --port may share the command line."""
    need_binary()
    port = free_port()  # nothing listens there: every client fails at once
    p = subprocess.run([BIN, "--config", "/nonexistent.conf", "--test",
                        "ws://127.0.0.1:%d/socket" % port, "-teachers=2", "-students", "3",
                        "--docs=1", "-duration", "0.2", "-connect-spread-ms=0", "-json",
                        "--port", "1"],
                       capture_output=True, timeout=TIMEOUT)
    s = json.loads(p.stdout.decode().strip().splitlines()[-1])
    assert s["expected"] == 5 and s["connect_errors"] == 5, p.stderr
    assert p.returncode == 1


def test_loadtest_compression_counts_wire_bytes(server_factory):
    """--compression offers permessage-deflate: the catch-ups of a document of JSON
    text arrive compressed (inflated by the tester, whose data check still passes) and
    the summary reports the bytes on the wire, a fraction of those without it."""
    import mgmtapi as api
    srv = server_factory(**api.SECRETS)
    shapes = [{"id": i, "type": "PathNode", "strokeStyle": "#000000", "lineWidth": 2 + i % 3,
               "points": [[(i * 7 + k) % 800, (i * 13 + k * 3) % 600] for k in range(8)]}
              for i in range(1000)]
    assert api.create_document(srv, "lt-z", json.dumps(shapes).encode()) == 200
    wire = {}
    for flag in ([], ["--compression"]):
        code, s, err = run_tester(srv.url, "--docid", "lt-z", "--teachers", 1, "--students", 10,
                                  "--duration", 2, "--connect-spread-ms", 200, *flag)
        assert code == 0 and s["ok"] and s["data_check"]["ok"], err
        assert s["compression"] == bool(flag)
        wire[bool(flag)] = s["wire_bytes_in"]
    assert wire[False] > 11 * len(json.dumps(shapes))  # every client's catch-up, in full
    assert wire[True] < wire[False] / 3, wire
