"""Standalone HTTPS/WSS with CertFile and KeyFile (docs/deployment.md).

Certificates are made per test run by the openssl CLI: a root CA, an intermediate and a
server certificate, so "a chain in CertFile" is exercised the way Let's Encrypt's
fullchain.pem is used. Clients verify the server for real (hostname 127.0.0.1)."""

import asyncio
import socket
import ssl
import warnings

import pytest

import zwclient as zw
from deployutil import Certs, Trickle, full_session, make_server, start_fails, trust_ca  # noqa: F401
from conftest import BIN


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return Certs(tmp_path_factory.mktemp("certs"))


def test_wss_full_session_with_chain(make_server, certs, trust_ca):
    trust_ca(certs)
    s = make_server(certs)
    assert s.url.startswith("wss://")
    zw.run(full_session(s.url, "tls-doc"))


def test_wss_both_directions_at_once(make_server, certs, trust_ca):
    """Each connection's event loop reads and writes one TLS session without blocking
    (OpenSSL asking for a write to be given again included). Two clients flood each other with
    broadcasts and appends at the same time; every message must arrive intact."""
    trust_ca(certs)
    s = make_server(certs)
    n = 300

    async def go():
        a = await zw.connect(s.url, "busy", name="A")
        b = await zw.connect(s.url, "busy", name="B")

        async def flood(c, tag):
            for i in range(n):
                await c.broadcast(b"%s-%04d" % (tag, i) + b"x" * (i % 700))

        async def drain(c, tag):
            got = []
            while len(got) < n:
                m = await c.expect(zw.BROADCAST, timeout=20)
                got.append(m.data)
            assert got == [b"%s-%04d" % (tag, i) + b"x" * (i % 700) for i in range(n)]

        await asyncio.gather(flood(a, b"a"), flood(b, b"b"), drain(a, b"b"), drain(b, b"a"))
        # The session still works afterwards.
        await a.append(b"done")
        m = await b.expect(zw.APPEND)
        assert m.data == b"done"

    zw.run(go(), timeout=60)


def test_wss_large_message_over_a_slow_network(make_server, certs, trust_ca):
    """A large message's TLS records arrive in many TCP segments on a real network.
    A partial record is not an idle connection: the server must wait for the rest,
    not count it as an unanswered ping and close the connection (CivetWeb 1.15 did)."""
    trust_ca(certs)
    s = make_server(certs)
    big = bytes(range(256)) * 400  # 100 KiB: several 16 KiB TLS records

    async def go():
        async with Trickle(s.port, piece=300, pause=0.001) as t:
            url = "wss://127.0.0.1:%d/socket" % t.port
            a = await zw.connect(url, "slow", name="A")
            b = await zw.connect(s.url, "slow", name="B")
            for _ in range(3):
                await a.append(big)
                await b.wait_length(a.length)
            assert await zw.fetch_doc(s.url, "slow") == big * 3

    zw.run(go(), timeout=60)


def test_https_socket_text_and_ping(make_server, certs):
    s = make_server(certs)
    assert s.http("GET", "/socket")[::2] == (200, b"Zwibbler collaboration Server is running.")
    assert s.http("GET", "/socket?ping")[::2] == (200, b"OK")


def _handshake(port, ctx):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return tls.version(), tls.cipher()[0], tls.getpeercert(binary_form=True)


def test_chain_is_sent_to_clients(make_server, certs):
    """A client that trusts only the root verifies the server: the intermediate came
    from CertFile."""
    s = make_server(certs)
    version, cipher, _ = _handshake(s.port, ssl.create_default_context(cafile=str(certs.ca)))
    assert version in ("TLSv1.2", "TLSv1.3")


def test_leaf_without_chain_fails_verification(make_server, certs):
    """Control for the test above: without the intermediate a root-only client cannot
    verify, so the chain test really depends on the chain."""
    s = make_server(certs, CertFile=certs.leaf)
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(s.port, ssl.create_default_context(cafile=str(certs.ca)))


def _client_ctx(version, ciphers=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0/1.1 on purpose
        ctx.minimum_version = version
        ctx.maximum_version = version
    # Let this client really offer old protocols and weak suites (OpenSSL 3's default
    # security level would refuse to, and the test would prove nothing).
    ctx.set_ciphers((ciphers or "DEFAULT") + ":@SECLEVEL=0")
    return ctx


def test_tls12_and_tls13_accepted(make_server, certs):
    s = make_server(certs)
    assert _handshake(s.port, _client_ctx(ssl.TLSVersion.TLSv1_2))[0] == "TLSv1.2"
    assert _handshake(s.port, _client_ctx(ssl.TLSVersion.TLSv1_3))[0] == "TLSv1.3"


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1],
                         ids=["TLSv1.0", "TLSv1.1"])
def test_old_tls_refused(make_server, certs, version):
    s = make_server(certs)
    with pytest.raises(ssl.SSLError) as e:
        _handshake(s.port, _client_ctx(version))
    # The server's "protocol version" alert, not the client declining to try.
    assert "PROTOCOL_VERSION" in str(e.value) or "UNSUPPORTED_PROTOCOL" in str(e.value), e.value
    assert "NO_PROTOCOLS_AVAILABLE" not in str(e.value)
    # ...and the server goes on serving.
    assert s.http("GET", "/socket")[0] == 200


def test_weak_tls12_ciphers_refused(make_server, certs):
    """No static-RSA key exchange and no CBC/SHA-1 suites: a client offering only
    those gets no handshake."""
    s = make_server(certs)
    with pytest.raises(ssl.SSLError):
        _handshake(s.port, _client_ctx(ssl.TLSVersion.TLSv1_2, "AES128-SHA:AES256-SHA:DES-CBC3-SHA"))
    version, cipher, _ = _handshake(s.port, _client_ctx(ssl.TLSVersion.TLSv1_2))
    assert cipher.startswith("ECDHE-") and ("GCM" in cipher or "CHACHA20" in cipher), cipher


def test_plain_http_on_tls_port_does_not_serve(make_server, certs):
    s = make_server(certs)
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as c:
        c.sendall(b"GET /socket HTTP/1.1\r\nHost: x\r\n\r\n")
        c.settimeout(5)
        try:
            data = c.recv(4096)
        except (ConnectionResetError, socket.timeout):
            data = b""
    assert b"Zwibbler collaboration Server is running." not in data


# ---- start-up failures name the file ------------------------------------------------

def _refuses(make_server, message, **config):
    s = make_server(start=False, **config)
    status, out = start_fails(BIN, s.config_path)
    assert status != 0, out
    assert message in out, out
    return out


def test_missing_key_file_named(make_server, certs, tmp_path):
    missing = tmp_path / "nope.key"
    out = _refuses(make_server, "KeyFile: %s: No such file or directory" % missing,
                   CertFile=certs.chain, KeyFile=missing)
    assert "listening" not in out


def test_missing_cert_file_named(make_server, certs, tmp_path):
    missing = tmp_path / "nope.pem"
    _refuses(make_server, "CertFile: %s: No such file or directory" % missing,
             CertFile=missing, KeyFile=certs.key)


def test_key_set_without_cert_is_an_error(make_server, certs):
    _refuses(make_server, "CertFile: not set", KeyFile=certs.key)


def test_cert_set_without_key_is_an_error(make_server, certs):
    _refuses(make_server, "KeyFile: not set", CertFile=certs.chain)


def test_mismatched_key_named(make_server, certs):
    _refuses(make_server, "KeyFile: %s: the key does not match the certificate in CertFile %s"
             % (certs.other_key, certs.chain), CertFile=certs.chain, KeyFile=certs.other_key)


def test_key_that_is_not_a_key_named(make_server, certs):
    _refuses(make_server, "KeyFile: %s: not a PEM private key" % certs.ca,
             CertFile=certs.chain, KeyFile=certs.ca)


def test_cert_that_is_not_a_cert_named(make_server, certs):
    _refuses(make_server, "CertFile: %s: no PEM certificate" % certs.key,
             CertFile=certs.key, KeyFile=certs.key)


def test_encrypted_key_fails_without_prompting(make_server, certs, tmp_path):
    enc = tmp_path / "enc.key"
    import subprocess
    subprocess.run(["openssl", "rsa", "-in", str(certs.key), "-aes256", "-passout", "pass:x",
                    "-out", str(enc)], check=True, capture_output=True)
    # stdin is /dev/null: a passphrase prompt would read EOF, but must not even start.
    _refuses(make_server, "KeyFile: %s: not a PEM private key, or an encrypted one" % enc,
             CertFile=certs.chain, KeyFile=enc)
