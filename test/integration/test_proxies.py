"""The server behind real nginx and real Apache, configured with the snippets
shipped in conf/ (only the server's port is changed), and nginx terminating TLS in
front of a plain server (conf/nginx-zwibbler-tls.conf).

Each proxy runs from a private prefix under the test's tmp_path, on a free loopback
port, in the foreground, and is stopped (with its workers) when the test ends."""

import os
import shutil

import pytest

import zwclient as zw
from deployutil import (CONF, Certs, background, full_session, make_server,  # noqa: F401
                        read_log, template, trust_ca, wait_port)
from conftest import free_port

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
APACHE = shutil.which("apache2") or "/usr/sbin/apache2"
APACHE_MODULES = "/usr/lib/apache2/modules"


def need(path):
    if not os.path.exists(path):
        pytest.fail("%s is missing: scripts/deps.sh installs it" % path)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return Certs(tmp_path_factory.mktemp("certs"))


# ---- nginx ----------------------------------------------------------------------------

def start_nginx(background, d, server_port, tls_port=None, certs=None):
    need(NGINX)
    d.mkdir(parents=True, exist_ok=True)
    port = free_port()
    (d / "zwibbler.conf").write_text(template((CONF / "nginx-zwibbler.conf").read_text(),
                                              server_port))
    tls_include = ""
    if tls_port:
        site = (CONF / "nginx-zwibbler-tls.conf").read_text()
        for old, new in [("listen 443 ssl;", "listen 127.0.0.1:%d ssl;" % tls_port),
                         ("listen [::]:443 ssl;", ""),
                         ("/etc/letsencrypt/live/draw.example.com/fullchain.pem", str(certs.chain)),
                         ("/etc/letsencrypt/live/draw.example.com/privkey.pem", str(certs.key)),
                         ("/etc/nginx/snippets/zwibbler.conf", str(d / "zwibbler.conf"))]:
            assert old in site, "conf/nginx-zwibbler-tls.conf no longer has %r" % old
            site = site.replace(old, new)
        (d / "site-tls.conf").write_text(site)
        tls_include = "include %s/site-tls.conf;" % d
    (d / "nginx.conf").write_text("""
daemon off;
worker_processes 1;
user root root;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 512; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        include {d}/zwibbler.conf;
    }}
    {tls_include}
}}
""".format(d=d, port=port, tls_include=tls_include))
    proc = background([NGINX, "-p", d, "-c", d / "nginx.conf", "-e", d / "error.log"],
                      d / "stdout.log")
    wait_port(port, proc.proc, what="nginx", log=d / "error.log")
    if tls_port:
        wait_port(tls_port, proc.proc, what="nginx (TLS)", log=d / "error.log")
    return proc, port


def test_nginx_snippet_full_session(make_server, background, tmp_path):
    s = make_server()
    _, port = start_nginx(background, tmp_path / "nginx", s.port)
    url = "ws://127.0.0.1:%d/socket" % port
    zw.run(full_session(url, "via-nginx"))
    # Plain HTTP on /socket goes through too (health checks, management API).
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request("GET", "/socket?ping")
    r = c.getresponse()
    assert (r.status, r.read()) == (200, b"OK")
    c.close()


def test_nginx_keeps_idle_websocket_open(make_server, background, tmp_path):
    """nginx's default proxy_read_timeout (60 s) would drop quiet clients; the
    snippet raises it. Here: a connection idle for a few seconds still works, and the
    shipped snippet says 3600s."""
    assert "proxy_read_timeout 3600s;" in (CONF / "nginx-zwibbler.conf").read_text()
    s = make_server()
    _, port = start_nginx(background, tmp_path / "nginx", s.port)
    url = "ws://127.0.0.1:%d/socket" % port

    async def go():
        import asyncio
        a = await zw.connect(url, "idle", name="A")
        b = await zw.connect(url, "idle", name="B")
        await asyncio.sleep(3)
        await a.append(b"after a pause")
        m = await b.expect(zw.APPEND)
        assert m.data == b"after a pause"
    zw.run(go())


def test_nginx_terminates_tls_for_plain_server(make_server, background, tmp_path, certs,
                                               trust_ca):
    trust_ca(certs)
    s = make_server()  # plain ws:// on loopback
    tls_port = free_port()
    start_nginx(background, tmp_path / "nginx", s.port, tls_port=tls_port, certs=certs)
    zw.run(full_session("wss://127.0.0.1:%d/socket" % tls_port, "via-nginx-tls"))


# ---- Apache -----------------------------------------------------------------------------

def start_apache(background, d, server_port):
    need(APACHE)
    d.mkdir(parents=True, exist_ok=True)
    (d / "run").mkdir(exist_ok=True)
    port = free_port()
    (d / "zwibbler.conf").write_text(template((CONF / "apache-zwibbler.conf").read_text(),
                                              server_port))
    mods = ["mpm_event", "authz_core", "proxy", "proxy_http", "proxy_wstunnel"]
    load = "\n".join('LoadModule %s_module "%s/mod_%s.so"' % (m, APACHE_MODULES, m) for m in mods)
    (d / "httpd.conf").write_text("""
ServerRoot "{d}"
DefaultRuntimeDir "{d}/run"
PidFile "{d}/run/apache2.pid"
{load}
User nobody
Group nogroup
ServerName localhost
Listen 127.0.0.1:{port}
ErrorLog "{d}/error.log"
LogLevel warn
<VirtualHost 127.0.0.1:{port}>
    Include "{d}/zwibbler.conf"
</VirtualHost>
""".format(d=d, port=port, load=load))
    proc = background([APACHE, "-f", d / "httpd.conf", "-DFOREGROUND"], d / "stdout.log")
    wait_port(port, proc.proc, what="apache2", log=d / "error.log")
    return proc, port


def test_apache_snippet_full_session(make_server, background, tmp_path):
    s = make_server()
    _, port = start_apache(background, tmp_path / "apache", s.port)
    url = "ws://127.0.0.1:%d/socket" % port
    zw.run(full_session(url, "via-apache"))
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request("GET", "/socket?ping")
    r = c.getresponse()
    assert (r.status, r.read()) == (200, b"OK")
    c.close()


def test_proxy_stop_leaves_nothing_running(make_server, background, tmp_path):
    """The fixtures stop nginx and apache2 with their workers: nothing keeps the
    ports once a proxy test is over."""
    import socket
    s = make_server()
    n, nport = start_nginx(background, tmp_path / "nginx", s.port)
    a, aport = start_apache(background, tmp_path / "apache", s.port)
    n.stop()
    a.stop()
    for port in (nport, aport):
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))  # free again
