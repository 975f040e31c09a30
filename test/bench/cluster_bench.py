#!/usr/bin/env python3
"""cluster_bench: fan-out across servers sharing one Redis, for `make bench`.

One redis-server and 1, 2 or 3 zwibbler servers (Database=redis) on loopback, with
nginx balancing /socket over them round robin, so the bundled load tester's readers
(and writers) spread evenly over the servers while one tester process still times
every delivery (screen-to-screen: a teacher's send to a student's receipt). A first
row runs one server with Cluster=false behind the same nginx: the cost of crossing
Redis is the difference to the "1 server" row. Everything is stopped at the end; logs
stay under --out.

  test/bench/cluster_bench.py [--bin PATH] [--quick] [--teachers N] [--students M]
                              [--duration S] [--delay-ms D] [--out DIR]
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("%s exited at start" % what)
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("%s not ready in %d s" % (what, timeout))


class Proc:
    def __init__(self, argv, log, cwd=None):
        self.logf = open(log, "wb")
        self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.logf,
                                  stderr=subprocess.STDOUT, cwd=cwd)

    def stop(self, sig=signal.SIGTERM):
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.logf.close()


def start_redis(d):
    port = free_port()
    p = Proc([shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind",
              "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(d)], d / "redis.log")
    wait_port(port, p.p, "redis-server")
    return p, port


def start_server(binary, d, redis_port, cluster, max_conns):
    d.mkdir(parents=True)
    port = free_port()
    conf = d / "zwibbler.conf"
    conf.write_text("ServerBindAddress=127.0.0.1\nServerPort=%d\nDatabase=redis\n"
                    "DbServer=127.0.0.1:%d\nMaxConnections=%d\nCluster=%s\n"
                    % (port, redis_port, max_conns, "true" if cluster else "false"))
    p = Proc([binary, "--config", str(conf)], d / "server.log", cwd=str(d))
    wait_port(port, p.p, "server", timeout=120)
    return p, port


def start_nginx(d, ports):
    d.mkdir(parents=True)
    (d / "tmp").mkdir()
    port = free_port()
    upstream = "".join("        server 127.0.0.1:%d;\n" % p for p in ports)
    conf = d / "nginx.conf"
    conf.write_text("""worker_processes 2;
daemon off;
pid %(d)s/nginx.pid;
error_log %(d)s/error.log;
worker_rlimit_nofile 20000;
events { worker_connections 10000; }
http {
    access_log off;
    client_body_temp_path %(d)s/tmp/body;
    proxy_temp_path %(d)s/tmp/proxy;
    fastcgi_temp_path %(d)s/tmp/fastcgi;
    uwsgi_temp_path %(d)s/tmp/uwsgi;
    scgi_temp_path %(d)s/tmp/scgi;
    upstream zwibbler {
%(upstream)s    }
    server {
        listen 127.0.0.1:%(port)d backlog=4096;
        location /socket {
            proxy_pass http://zwibbler;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 3600s;
            proxy_buffering off;
        }
    }
}
""" % {"d": d, "upstream": upstream, "port": port})
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    p = Proc([nginx, "-p", str(d), "-e", str(d / "error.log"), "-c", str(conf)], d / "stderr.log")
    wait_port(port, p.p, "nginx")
    return p, port


def run_case(args, name, n_servers, cluster, out):
    d = out / name.replace(" ", "_").replace(",", "")
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    procs = []
    try:
        redis, rport = start_redis(d)
        procs.append(redis)
        ports = []
        per_server = (args.teachers + args.students) // n_servers + 64
        for i in range(n_servers):
            p, port = start_server(args.bin, d / ("srv%d" % i), rport, cluster, per_server)
            procs.append(p)
            ports.append(port)
        nginx, nport = start_nginx(d / "nginx", ports)
        procs.append(nginx)
        cmd = [args.bin, "--test", "ws://127.0.0.1:%d/socket" % nport, "--json",
               "--docid", "bench-cluster", "--teachers", str(args.teachers),
               "--students", str(args.students), "--duration", str(args.duration),
               "--delay-ms", str(args.delay_ms)]
        with open(d / "tester.log", "wb") as log:
            r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log,
                               timeout=args.duration + 120)
        res = json.loads(r.stdout.decode().strip().splitlines()[-1])
        (d / "tester.json").write_text(json.dumps(res, indent=1))
        return res
    finally:
        for p in reversed(procs):
            p.stop(signal.SIGQUIT if p is procs[-1] and len(procs) > n_servers + 1 else signal.SIGTERM)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(REPO / "build" / "release" / "zwibbler"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--teachers", type=int, default=2)
    ap.add_argument("--students", type=int, default=600)
    ap.add_argument("--duration", type=int, default=20)
    ap.add_argument("--delay-ms", type=int, default=250,
                    help="teachers' average interval between changes")
    ap.add_argument("--out", default=str(REPO / "test" / "artifacts" / "bench-cluster"))
    args = ap.parse_args()
    args.bin = os.path.abspath(args.bin)
    if args.quick:
        args.students, args.duration = min(args.students, 90), min(args.duration, 5)
    if not shutil.which("redis-server") or not (shutil.which("nginx") or os.path.exists("/usr/sbin/nginx")):
        print("cluster_bench: redis-server and nginx are needed (scripts/deps.sh)")
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cases = [("1 server, Cluster=false", 1, False), ("1 server", 1, True),
             ("2 servers", 2, True), ("3 servers", 3, True)]
    rows = []
    for name, n, cl in cases:
        print("running %-24s (%d teachers, %d students, %d s) ..."
              % (name, args.teachers, args.students, args.duration), file=sys.stderr)
        try:
            res = run_case(args, name, n, cl, out)
        except Exception as e:  # one failed case must not hide the others
            print("  failed: %s" % e, file=sys.stderr)
            res = None
        rows.append((name, res))
    print()
    print("Fan-out through Redis: %d teachers (a change every %d ms on average), %d students "
          "on one document, nginx round robin" % (args.teachers, args.delay_ms, args.students))
    print("%-24s %10s %12s %9s %9s %9s %6s" % ("case", "connected", "deliveries/s", "s2s p50",
                                              "s2s p99", "s2s max", "ok"))
    ok = True
    for name, r in rows:
        if not r:
            print("%-24s %10s" % (name, "FAILED"))
            ok = False
            continue
        s = r["s2s_ms"]
        print("%-24s %10d %12.0f %8.2fms %8.2fms %8.2fms %6s"
              % (name, r["connected"], r["deliveries_per_s"], s["p50"], s["p99"], s["max"],
                 "yes" if r["ok"] else "NO"))
        ok = ok and r["ok"]
    print("(logs and tester JSON under %s)" % out)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
