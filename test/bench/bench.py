#!/usr/bin/env python3
"""bench: the benchmark suite (`make bench`).

Each scenario starts a fresh server (LMDB, durable commits, loopback) with its own
data directory, runs the bundled load tester (`zwibbler --test ... --json`) for a
bounded time, reads the server's CPU seconds (utime+stime from /proc/PID/stat, over
the tester's run) and peak RSS (VmHWM from /proc/PID/status, whole life), and
the group-commit figures from the server's metrics (MetricsPath: LMDB commits,
operations per commit, mean commit time), then prints one table. Every run's tester output and server log are kept under
test/artifacts/bench/ (or --out).

The paired scenarios run the floor (test/bench/floor.c: a minimal single-thread
epoll relay with documents in memory, the least any server can spend) side by side
with ours: each is run --reps times (default 2), alternating ours and the floor on
a fresh server each time, and a second table gives the medians of both, the ratios
ours/floor, and each target of the rewrite with MET or MISSED. The idle scenario
starts each server with no clients: RSS and threads after start, and the time from
exec to the first served GET /socket. Run as root, the bench moves itself into a
network namespace of its own (loopback only, a wider ephemeral port range: see
private_network); --host-net keeps the host's.

  test/bench/bench.py [--bin PATH] [--floor PATH] [--quick] [--only NAME[,NAME...]]
                      [--reps N] [--perf] [--host-net] [--out DIR] [--markdown FILE]

--quick shortens every window (for trying the harness, not for figures); --perf
records the saturation scenario with `perf record -g` and prints the top symbols.
--only picks scenarios by name (a substring: "5t/3000s", "19k", "idle", ...).
"""

import argparse
import base64
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MB = 1 << 20
CLK = os.sysconf("SC_CLK_TCK")
SECRET = ("bench", "bench-secret")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_ok(port, timeout=1.0):
    """One GET /socket on a fresh connection: True when answered 200."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"GET /socket HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            data = b""
            while b"\r\n" not in data and len(data) < 4096:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return False
    parts = data.split(b" ", 2)
    return len(parts) > 1 and parts[0].startswith(b"HTTP/1.") and parts[1] == b"200"


def proc_status(pid, key):
    """A field of /proc/PID/status as a number (kB for the Vm* ones), or NaN."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return float("nan")


class Server:
    """One server process with a private config and data directory.

    config None: the bench configuration (LMDB, durable commits, metrics, the
    management API); else a dict of keys added to bind address, port and DataDir
    alone (the rest stays at the defaults)."""

    kind = "ours"
    READY_S = 120  # thousands of worker threads start first

    def __init__(self, binary, root, name, max_conns=None, config=None):
        self.dir = Path(root) / name
        shutil.rmtree(self.dir, ignore_errors=True)
        (self.dir / "data").mkdir(parents=True)
        self.port = free_port()
        self.url = "ws://127.0.0.1:%d/socket" % self.port
        self.conf = self.dir / "zwibbler.conf"
        text = "ServerBindAddress=127.0.0.1\nServerPort=%d\nDataDir=%s\n" % (self.port, self.dir / "data")
        if config is None:
            text += ("Database=lmdb\nSyncCommits=true\nMaxConnections=%d\nSecretUser=%s\n"
                     "SecretPassword=%s\nMetricsPath=/metrics\n" % (max_conns, SECRET[0], SECRET[1]))
        else:
            text += "".join("%s=%s\n" % kv for kv in config.items())
        self.conf.write_text(text)
        self.start([binary, "--config", str(self.conf)])

    def start(self, argv):
        self.log = open(self.dir / "server.log", "wb")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(argv, cwd=str(self.dir), stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        # A fast loop: the time from exec to the first served GET /socket is a figure.
        deadline = t0 + self.READY_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.close()
                raise RuntimeError("%s server exited at start; see %s"
                                   % (self.kind, self.dir / "server.log"))
            if http_ok(self.port):
                self.ready_ms = 1000 * (time.monotonic() - t0)
                return
            time.sleep(0.001)
        self.stop()
        raise RuntimeError("%s server not ready in %d s" % (self.kind, self.READY_S))

    def cpu_seconds(self):
        with open("/proc/%d/stat" % self.proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK  # utime, stime (fields 14, 15)

    def peak_rss_mb(self):
        return proc_status(self.proc.pid, "VmHWM") / 1024.0

    def rss_mb(self):
        return proc_status(self.proc.pid, "VmRSS") / 1024.0

    def threads(self):
        return proc_status(self.proc.pid, "Threads")

    def metrics(self):
        """The server's Prometheus metrics as {name: value}; {} when unavailable."""
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.port, timeout=10) as r:
                text = r.read().decode("utf-8", "replace")
        except OSError:
            return {}
        out = {}
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2 and not line.startswith("#"):
                try:
                    out[parts[0]] = float(parts[1])
                except ValueError:
                    pass
        return out

    def create_document(self, doc_id, contents):
        """Management API createDocument (multipart, the contents as a file)."""
        boundary = "zwbench%d" % time.monotonic_ns()
        body = b"".join([
            b"--%s\r\nContent-Disposition: form-data; name=\"method\"\r\n\r\ncreateDocument\r\n" % boundary.encode(),
            b"--%s\r\nContent-Disposition: form-data; name=\"documentID\"\r\n\r\n%s\r\n" % (boundary.encode(), doc_id.encode()),
            b"--%s\r\nContent-Disposition: form-data; name=\"contents\"; filename=\"doc\"\r\n"
            b"Content-Type: application/octet-stream\r\n\r\n" % boundary.encode(),
            contents, b"\r\n--%s--\r\n" % boundary.encode()])
        auth = base64.b64encode(("%s:%s" % SECRET).encode()).decode()
        req = urllib.request.Request(
            "http://127.0.0.1:%d/socket" % self.port, data=body, method="POST",
            headers={"Content-Type": "multipart/form-data; boundary=" + boundary,
                     "Authorization": "Basic " + auth})
        with urllib.request.urlopen(req, timeout=120) as r:
            if r.status != 200:
                raise RuntimeError("createDocument: HTTP %d" % r.status)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class FloorServer(Server):
    """The floor (test/bench/floor.c): same interface, no config, no metrics."""

    kind = "floor"
    READY_S = 30

    def __init__(self, binary, root, name):
        self.dir = Path(root) / name
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.port = free_port()
        self.url = "ws://127.0.0.1:%d/socket" % self.port
        self.start([binary, "--port", str(self.port), "--bind", "127.0.0.1"])

    def metrics(self):
        return {}


CORES = os.cpu_count() or 1
DEFAULT_MAX_CONNS = 10000  # our MaxConnections default (server/config.c)


def ratio(a, b):
    return a / b if b else float("inf")


def pair_ratio(label, o, f, key, limit):
    """Target row: ours/floor of key at most limit."""
    if o is None or f is None:
        return (label, "-" if o is None else fmt(o[key], 2), "-" if f is None else fmt(f[key], 2),
                "<= %.1fx floor" % limit, False, "ratio n/a")
    r = ratio(o[key], f[key])
    return (label, fmt(o[key], 2), fmt(f[key], 2), "<= %.1fx floor" % limit, r <= limit,
            "%.2fx" % r)


def pair_max(label, o, f, get, limit, unit, nd=1):
    """Target row: ours' get(r) at most limit (the floor's figure beside it)."""
    ov = get(o) if o is not None else None
    fv = get(f) if f is not None else None
    show = lambda v: "-" if v is None else fmt(v, nd) + (" " + unit if unit else "")
    return (label, show(ov), show(fv), "<= %s%s" % (fmt(limit, 0 if limit == int(limit) else 1),
                                                   " " + unit if unit else ""),
            ov is not None and ov <= limit, "")


def pair_flag(label, o, f, get):
    ov = get(o) if o is not None else None
    fv = get(f) if f is not None else None
    show = lambda v: "-" if v is None else ("yes" if v else "NO")
    return (label, show(ov), show(fv), "yes", bool(ov), "")


def all_connected(r):
    return r["connected"] == r["expected"] and r["not_connected"] == 0 and r["dropped"] == 0


def all_received(r):
    """Every client holds exactly the document's bytes (the data check compares each
    one), the document grew, and every tester's clients had live deliveries."""
    ts = r.get("testers") or [r]
    return (r["doc_bytes"] > 0 and r["data_check"]["ok"] and
            r["data_check"]["checked"] == r["connected"] and all(t["deliveries"] > 0 for t in ts))


def scenarios(quick):
    d = (lambda s: max(4, s // 6)) if quick else (lambda s: s)
    out = [
        dict(name="1t/100s", teachers=1, students=100, duration=d(39),
             ref="avg 1, max 3 ms; 0.16 CPU-s; 17 MB"),
        # Paired with the floor (floor=True): run --reps times each, alternating.
        dict(name="2t/1000s", teachers=2, students=1000, duration=d(39), floor=True,
             ref="avg 6, max 14-18 ms; 1.4 CPU-s; 49 MB",
             pair_targets=lambda o, f: [
                 pair_ratio("CPU-s", o, f, "cpu_s", 1.5),
                 pair_max("peak RSS", o, f, lambda r: r["rss_mb"], 15, "MB")]),
        dict(name="5t/3000s", teachers=5, students=3000, duration=d(39), floor=True,
             ref="avg 14-16, max 37-56 ms; 5.7-6.6 CPU-s; 138-162 MB",
             target=lambda r: [("s2s avg <= 5 ms", r["s2s_ms"]["avg"] <= 5),
                               ("s2s max <= 20 ms", r["s2s_ms"]["max"] <= 20),
                               ("<= 2 CPU-s", r["cpu_s"] <= 2), ("<= 75 MB", r["rss_mb"] <= 75)],
             pair_targets=lambda o, f: [
                 pair_ratio("CPU-s (durable LMDB)", o, f, "cpu_s", 1.2),
                 pair_max("peak RSS", o, f, lambda r: r["rss_mb"], 30, "MB")]),
        dict(name="20t/0s", teachers=20, students=0, duration=d(39),
             ref="avg 0, max 5 ms; 0.5 CPU-s; 18 MB"),
        dict(name="10t/10000s", teachers=10, students=10000, duration=d(60), spread=5000,
             ref="(target only)",
             target=lambda r: [("s2s avg <= 20 ms", r["s2s_ms"]["avg"] <= 20),
                               ("s2s p99 <= 60 ms", r["s2s_ms"]["p99"] <= 60),
                               ("RSS <= 300 MB", r["rss_mb"] <= 300),
                               ("no errors", r["errors"] == 0)]),
        # Ours with the default configuration (bind address, port and DataDir aside).
        dict(name="10t/10010s-default", teachers=10, students=10010, duration=d(60),
             spread=5000, floor=True, config="default", ref="(target only)",
             pair_targets=lambda o, f: [
                 pair_flag("all connect", o, f, all_connected),
                 pair_max("peak RSS", o, f, lambda r: r["rss_mb"], 80, "MB"),
                 pair_max("s2s p99", o, f, lambda r: r["s2s_ms"]["p99"], 111, "ms")]),
        # 19,000 clients of one document from two tester processes (each may open at
        # most 20,000 files). The second runs 5 s longer, so that the first's teacher
        # has stopped and its last change has settled before the second's data check.
        dict(name="19k/1doc", teachers=1, students=18999, duration=25 if not quick else 15,
             spread=8000, floor=True, config="default", ref="(target only)",
             testers=[dict(teachers=1, students=9500), dict(teachers=0, students=9499, extra_s=5)],
             pair_targets=lambda o, f: [
                 pair_flag("all connect", o, f, all_connected),
                 pair_flag("all receive", o, f, all_received),
                 pair_flag("data check", o, f, lambda r: r["data_check"]["ok"] and r["exit"] == 0)]),
    ]
    for size, ref in ((0, "0.5 ms"), (1, "6.8 ms"), (10, "90 ms"), (20, "189 ms")):
        out.append(dict(name="rtt@%dMB" % size, teachers=1, students=0, duration=d(15),
                        change_bytes=200, delay_ms=20, prefill=size * MB, spread=0,
                        ref="ACK RTT " + ref, group="rtt"))
    out += [
        dict(name="1000docs x4", teachers=4000, students=0, docs=1000, duration=d(39),
             delay_ms=1000, spread=5000, ref="(target only)",
             target=lambda r: [("ACK p99 <= 20 ms", r["ack_rtt_ms"]["p99"] <= 20)]),
        dict(name="saturation", teachers=20, students=1000, duration=d(30), delay_ms=0,
             spread=2000, ref="(report only)", perf=True),
        # permessage-deflate: each pair runs the same load without and with compression
        # offered by every client (the "-z" one).
        dict(name="catchup/2MB", teachers=0, students=100, duration=d(12), spread=1000,
             prefill_text=2 * MB, ref="(compression pair)", group="z"),
        dict(name="catchup/2MB-z", teachers=0, students=100, duration=d(12), spread=1000,
             prefill_text=2 * MB, compression=True, ref="(compression pair)", group="z"),
        dict(name="5t/3000s-nz", teachers=5, students=3000, duration=d(39),
             ref="(compression pair)", group="z"),
        dict(name="5t/3000s-z", teachers=5, students=3000, duration=d(39), compression=True,
             ref="(compression pair)", group="z"),
        dict(name="3000idle", teachers=0, students=3000, duration=d(20),
             ref="(compression pair)", group="z"),
        dict(name="3000idle-z", teachers=0, students=3000, duration=d(20), compression=True,
             ref="(compression pair)", group="z"),
        # No clients: RSS and threads 1 s after start, exec to the first served GET.
        dict(name="idle", idle=True, floor=True, config="default", teachers=0, students=0, duration=0,
             settle_s=1.0,
             pair_targets=lambda o, f: [
                 pair_max("RSS after start", o, f, lambda r: r["rss_mb"], 12, "MB"),
                 pair_max("threads", o, f, lambda r: r["threads"], 16 + 2 * CORES, "", 0),
                 pair_max("exec to first GET /socket", o, f, lambda r: r["ready_ms"], 100, "ms")]),
    ]
    return out


def drawing_text(size):
    """Zwibbler-like document text of about `size` bytes: JSON shapes with points,
    styles and text, as the whiteboard stores them."""
    out, i = [], 0
    total = 2
    while total < size:
        shape = json.dumps({"id": "s%d" % i, "type": ("PathNode", "TextNode", "ImageNode")[i % 3],
                            "fillStyle": "#%06x" % (i * 2654435761 & 0xFFFFFF),
                            "strokeStyle": "#000000", "lineWidth": 1 + i % 4,
                            "matrix": [1, 0, 0, 1, (i * 37) % 1200, (i * 53) % 900],
                            "points": [[(i * 7 + k * 11) % 1200, (i * 13 + k * 5) % 900]
                                       for k in range(6 + i % 10)],
                            "text": "note %d" % i if i % 3 == 1 else ""})
        out.append(shape)
        total += len(shape) + 1
        i += 1
    return ("[" + ",".join(out) + "]").encode()


def safe_name(name):
    return name.replace("/", "-").replace(" ", "_").replace("@", "-")


def start_ours(binary, sc, out_dir, name, notes):
    """Our server for a scenario: the bench configuration, or the default one."""
    clients = sc["teachers"] + sc["students"]
    if sc.get("config") != "default":
        return Server(binary, out_dir, name, max_conns=max(256, clients + 100))
    conf = {}
    if clients + 50 > DEFAULT_MAX_CONNS:
        # Today's server refuses connections past MaxConnections (a thread each);
        # until the rewrite lifts the cap, raise it so the scenario can run at all.
        conf["MaxConnections"] = clients + 100
        note = ("ours ran with MaxConnections=%d: the default %d would refuse %d of the "
                "%d clients" % (clients + 100, DEFAULT_MAX_CONNS,
                                max(0, clients - DEFAULT_MAX_CONNS),
                                clients))
        if note not in notes:
            notes.append(note)
    return Server(binary, out_dir, name, config=conf)


def merge_testers(rs):
    """One result from several tester processes on the same document(s)."""
    m = dict(rs[0])
    for k in ("expected", "connected", "not_connected", "connect_errors", "dropped",
              "server_errors", "appends_sent", "acks", "nacks", "refused", "deliveries",
              "deliveries_per_s", "delivered_bytes", "gaps", "duplicate_bytes",
              "ack_mismatches", "untimed", "errors", "teachers", "students"):
        m[k] = sum(r.get(k, 0) for r in rs)
    timed = max(rs, key=lambda r: r["s2s_ms"]["count"])  # the one with the teachers
    m["s2s_ms"], m["ack_rtt_ms"], m["nack_rate"] = timed["s2s_ms"], timed["ack_rtt_ms"], timed["nack_rate"]
    m["doc_bytes"] = max(r["doc_bytes"] for r in rs)
    dcs = [r["data_check"] for r in rs]
    m["data_check"] = dict(ok=all(d["ok"] for d in dcs), skipped=any(d["skipped"] for d in dcs),
                           checked=sum(d["checked"] for d in dcs),
                           mismatched=sum(d["mismatched"] for d in dcs),
                           docs_unchecked=sum(d["docs_unchecked"] for d in dcs),
                           drain_timed_out=any(d["drain_timed_out"] for d in dcs))
    m["ok"] = all(r["ok"] for r in rs)
    m["testers"] = rs
    return m


def measure(binary, srv, sc, use_perf):
    """Runs the scenario's tester(s) against a started server; the result dict."""
    perf = None
    try:
        docid = "bench-%d" % int(time.time())
        if sc.get("prefill"):
            srv.create_document(docid, os.urandom(sc["prefill"]))
        if sc.get("prefill_text"):
            srv.create_document(docid, drawing_text(sc["prefill_text"]))
        testers = sc.get("testers") or [dict(teachers=sc["teachers"], students=sc["students"])]
        load = os.getloadavg()[0]  # other work on the machine skews every figure
        cpu0 = srv.cpu_seconds()
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        procs = []
        for i, tc in enumerate(testers):
            duration = sc["duration"] + tc.get("extra_s", 0)
            cmd = [binary, "--test", srv.url, "--json", "--docid", docid,
                   "--teachers", str(tc["teachers"]), "--students", str(tc["students"]),
                   "--duration", str(duration),
                   "--connect-spread-ms", str(sc.get("spread", 3000))]
            for k, flag in (("docs", "--docs"), ("delay_ms", "--delay-ms"),
                            ("change_bytes", "--change-bytes")):
                if k in sc:
                    cmd += [flag, str(sc[k])]
            if sc.get("compression"):
                cmd.append("--compression")
            log_path = srv.dir / ("tester.log" if len(testers) == 1 else "tester%d.log" % (i + 1))
            log = open(log_path, "wb")
            procs.append((subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log), log,
                          log_path, duration))
        if use_perf and sc.get("perf") and shutil.which("perf"):
            time.sleep(min(5, sc["duration"] / 4))  # past the connection ramp
            perf = subprocess.Popen(["perf", "record", "-g", "-o", str(srv.dir / "perf.data"),
                                     "-p", str(srv.proc.pid), "--", "sleep",
                                     str(max(2, sc["duration"] // 2))],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        outs = []
        try:
            for p, log, log_path, duration in procs:
                out, _ = p.communicate(timeout=duration + 300)
                outs.append((p.returncode, out, log_path))
        finally:
            for p, log, _, _ in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
                log.close()
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # only the testers were reaped
        tester_cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
        cpu = srv.cpu_seconds() - cpu0
        rss = srv.peak_rss_mb()
        m = srv.metrics()  # group commit: operations per LMDB transaction, commit time
        if perf:
            perf.wait()
        rs = []
        for code, out, log_path in outs:
            try:
                r = json.loads(out.decode().strip().splitlines()[-1])
            except (IndexError, ValueError):
                raise RuntimeError("tester gave no JSON (exit %d); see %s" % (code, log_path))
            r["exit"] = code
            rs.append(r)
        r = rs[0] if len(rs) == 1 else merge_testers(rs)
        r.update(cpu_s=cpu, rss_mb=rss, exit=max(x["exit"] for x in rs), dir=str(srv.dir),
                 load=load, tester_cpu_s=tester_cpu)
        commits = m.get("zwibbler_storage_commit_batch_size_count")
        if commits:
            r["commits"] = int(commits)
            r["ops_per_commit"] = m.get("zwibbler_storage_commit_batch_size_sum", 0) / commits
            if m.get("zwibbler_storage_commit_seconds_count"):
                r["commit_ms"] = 1000 * m["zwibbler_storage_commit_seconds_sum"] / \
                    m["zwibbler_storage_commit_seconds_count"]
        return r
    finally:
        srv.stop()
        if perf and (srv.dir / "perf.data").exists():
            rep = subprocess.run(["perf", "report", "--stdio", "--no-children", "-i",
                                  str(srv.dir / "perf.data"), "--percent-limit", "1.5",
                                  "-g", "none", "--sort", "dso,symbol"],
                                 capture_output=True, text=True)
            (srv.dir / "perf.txt").write_text(rep.stdout)
            print("\nperf (saturation, server, top symbols):")
            for line in rep.stdout.splitlines():
                if line.strip() and not line.startswith("#"):
                    print("   ", line.rstrip())


def run_scenario(binary, sc, out_dir, use_perf):
    """A scenario of ours alone."""
    srv = start_ours(binary, sc, out_dir, safe_name(sc["name"]), [])
    return measure(binary, srv, sc, use_perf)


def run_idle_once(srv, sc):
    try:
        time.sleep(sc["settle_s"])
        return dict(ready_ms=srv.ready_ms, rss_mb=srv.rss_mb(), peak_rss_mb=srv.peak_rss_mb(),
                    threads=srv.threads(), cpu_s=srv.cpu_seconds())
    finally:
        srv.stop()


def describe(kind, r):
    if "threads" in r:
        return "%s: first GET after %.1f ms, RSS %.1f MB, %d threads" % (
            kind, r["ready_ms"], r["rss_mb"], r["threads"])
    s = r["s2s_ms"]
    return ("%s: %d/%d connected, CPU %.2f s, peak RSS %.1f MB, s2s avg %.2f p99 %.2f ms, "
            "%d errors, check %s, exit %d" % (kind, r["connected"], r["expected"], r["cpu_s"],
                                              r["rss_mb"], s["avg"], s["p99"], r["errors"],
                                              "ok" if r["data_check"]["ok"] else "FAILED",
                                              r["exit"]))


def run_paired(binary, floor, sc, out_dir, reps, use_perf):
    """Ours and the floor, reps times each, alternating; {"ours": [...], "floor": [...]},
    a failed run as None, and notes on what was changed for ours."""
    runs = {"ours": [], "floor": []}
    notes = []
    for rep in range(1, reps + 1):
        for kind in ("ours", "floor"):
            if kind == "floor" and not floor:
                continue
            name = "%s/%s-%d" % (safe_name(sc["name"]), kind, rep)
            r = None
            try:
                srv = (start_ours(binary, sc, out_dir, name, notes) if kind == "ours"
                       else FloorServer(floor, out_dir, name))
                r = run_idle_once(srv, sc) if sc.get("idle") else measure(binary, srv, sc, use_perf)
                print("   %-5s #%d %s" % (kind, rep, describe(kind, r)), flush=True)
            except Exception as e:  # a failure of ours must not stop the others
                print("   %-5s #%d FAILED: %s" % (kind, rep, e), flush=True)
            runs[kind].append(r)
    for n in notes:
        print("   note: " + n, flush=True)
    return runs, notes


def median_result(runs):
    """The median of each figure over the runs that finished (a bool: all true;
    exit and errors: the worst); None when none did."""
    runs = [r for r in runs if r]
    if not runs:
        return None

    def med(vals):
        if all(isinstance(v, bool) for v in vals):
            return all(vals)
        if all(isinstance(v, (int, float)) for v in vals):
            return statistics.median(vals)
        if all(isinstance(v, dict) for v in vals):
            return {k: med([v[k] for v in vals if k in v]) for k in vals[0]}
        return vals[0]

    m = med(runs)
    for k in ("exit", "errors", "not_connected", "dropped"):
        if k in runs[0]:
            m[k] = max(r[k] for r in runs)
    if "testers" in runs[0]:
        # "all receive" needs every tester of every run.
        m["testers"] = [dict(deliveries=min(t["deliveries"] for r in runs for t in r["testers"]))]
    m["runs"] = len(runs)
    return m


def fmt(v, nd=1):
    return ("%." + str(nd) + "f") % v


NETNS_ENV = "ZW_BENCH_NETNS"
PORT_RANGE = "10000 65000"


def private_network():
    """Runs the bench in a network namespace of its own when it can (root and
    `unshare`): its loopback carries nothing but the bench's traffic, and its
    ephemeral port range is wider than the host's. Connecting to one address and
    port, Linux hands out ports of one parity first; past about 14,000 connections
    on the default range (32768-60999) each connect() scans the taken ones and the
    testers stall for seconds, which the 19k scenario would otherwise measure.
    Returns a line for the header."""
    if os.environ.get(NETNS_ENV) == "1":
        try:
            subprocess.run(["ip", "link", "set", "lo", "up"], check=True, capture_output=True)
            with open("/proc/sys/net/ipv4/ip_local_port_range", "w") as f:
                f.write(PORT_RANGE)
        except (OSError, subprocess.CalledProcessError) as e:
            return "private namespace, but its setup failed: %s" % e
        return "private namespace (loopback only), local ports %s" % PORT_RANGE.replace(" ", "-")
    if os.environ.get(NETNS_ENV) != "0" and os.geteuid() == 0 and shutil.which("unshare") and \
            shutil.which("ip") and subprocess.run(["unshare", "--net", "true"],
                                                  capture_output=True).returncode == 0:
        sys.stdout.flush()
        os.execvpe("unshare", ["unshare", "--net", "--", sys.executable] + sys.argv,
                   dict(os.environ, **{NETNS_ENV: "1"}))
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        rng = "-".join(f.read().split())
    return ("the host's (no private namespace: needs root and unshare), local ports %s; "
            "past ~14,000 connections connect() may stall" % rng)


def print_table(hdr, rows, md=None, title=None):
    widths = [max(len(str(x[i])) for x in rows + [hdr]) for i in range(len(hdr))]
    line = lambda x: "  ".join(str(v).rjust(w) if i else str(v).ljust(w)
                               for i, (v, w) in enumerate(zip(x, widths)))
    print(line(hdr))
    print(line(["-" * w for w in widths]))
    for row in rows:
        print(line(row))
    if md:
        if title:
            md.write("\n%s\n\n" % title)
        md.write("| " + " | ".join(hdr) + " |\n")
        md.write("|" + "|".join("---" if i == 0 else "---:" for i in range(len(hdr))) + "|\n")
        for row in rows:
            md.write("| " + " | ".join(str(v) for v in row) + " |\n")


def run_row(label, r):
    s, a = r["s2s_ms"], r["ack_rtt_ms"]
    sv = [fmt(s[k], 2) if s["count"] else "-" for k in ("avg", "p50", "p99", "max")]
    av = [fmt(a[k], 2) if a["count"] else "-" for k in ("p50", "p99")]
    return (label, "%d/%d" % (r["connected"], r["expected"]),
            sv[0], sv[1], sv[2], sv[3], av[0], av[1], fmt(r["deliveries_per_s"], 0),
            fmt(100 * r["nack_rate"], 1), fmt(r["cpu_s"], 2), fmt(r["rss_mb"], 0),
            str(r.get("commits", "-")),
            fmt(r["ops_per_commit"], 1) if "ops_per_commit" in r else "-",
            fmt(r["commit_ms"], 2) if "commit_ms" in r else "-",
            str(r["errors"]), "ok" if r["data_check"]["ok"] else "FAILED",
            fmt(r["tester_cpu_s"], 2), fmt(r["load"], 1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.environ.get("ZWIBBLER_BIN", str(REPO / "build/release/zwibbler")))
    ap.add_argument("--floor", default=str(REPO / "build/release/test/bench/floor"),
                    help="the floor server (make build/release/test/bench/floor)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="")
    ap.add_argument("--reps", type=int, default=2, help="runs of each paired scenario, per server")
    ap.add_argument("--perf", action="store_true")
    ap.add_argument("--host-net", action="store_true",
                    help="stay in the host's network namespace (default: a private one)")
    ap.add_argument("--out", default=str(REPO / "test/artifacts/bench"))
    ap.add_argument("--markdown", help="also write the results tables as Markdown to this file")
    args = ap.parse_args()
    if not os.path.exists(args.bin):
        sys.exit("bench: %s not built (make)" % args.bin)
    floor = args.floor if os.path.exists(args.floor) else None
    if args.host_net:
        os.environ[NETNS_ENV] = "0"
    network = private_network()
    # Thousands of sockets in the server and in the tester: take the hard limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    only = [s for s in args.only.split(",") if s]
    chosen = [s for s in scenarios(args.quick) if not only or any(o in s["name"] for o in only)]
    print("machine: %d cores, %s" % (CORES, " ".join(os.uname())))
    print("binary: %s; floor: %s; open files: %d; windows: %s; paired runs: %d each"
          % (args.bin, floor or "NOT BUILT (make build/release/test/bench/floor)", hard,
             "quick" if args.quick else "full", args.reps))
    print("network: " + network, flush=True)
    t_start = time.monotonic()
    results = []  # (scenario, ours' result or the median of ours' runs)
    rows = []     # one per tester run: (label, result)
    pairs = []    # (scenario, runs, notes)
    for sc in chosen:
        if sc.get("idle"):
            print("running %-12s (no clients) ..." % sc["name"], flush=True)
        else:
            print("running %-12s (%d teachers, %d students, %d docs, %d s%s) ..."
                  % (sc["name"], sc["teachers"], sc["students"], sc.get("docs", 1), sc["duration"],
                     ", ours and the floor x%d" % args.reps if sc.get("floor") else ""),
                  flush=True)
        if sc.get("floor"):
            runs, notes = run_paired(args.bin, floor, sc, args.out, args.reps, args.perf)
            pairs.append((sc, runs, notes))
            if not sc.get("idle"):
                for rep in range(args.reps):
                    for kind in ("ours", "floor"):
                        if rep < len(runs[kind]) and runs[kind][rep]:
                            rows.append(("%s %s#%d" % (sc["name"], kind, rep + 1), runs[kind][rep]))
                results.append((sc, median_result(runs["ours"])))
            continue
        try:
            r = run_scenario(args.bin, sc, args.out, args.perf)
        except Exception as e:  # one broken scenario must not hide the others
            print("   FAILED: %s" % e, flush=True)
            results.append((sc, None))
            rows.append((sc["name"], None))
            continue
        results.append((sc, r))
        rows.append((sc["name"], r))

    md = open(args.markdown, "w") if args.markdown else None
    hdr = ("scenario", "conns", "s2s avg", "p50", "p99", "max", "ACK p50", "ACK p99",
           "deliv/s", "NACK%", "CPU-s", "RSS MB", "commits", "ops/commit", "commit ms",
           "errors", "check", "tester CPU-s", "load")
    table = [run_row(label, r) if r else (label,) + ("-",) * (len(hdr) - 4) + ("FAILED", "-", "-")
             for label, r in rows]
    if table:
        print()
        print("times in ms (s2s = screen-to-screen, teacher's send to another client's receipt); "
              "CPU-s and RSS are the server's; load = 1-minute load average when the run started")
        print_table(hdr, table, md, "Every run")

    if pairs:
        print("\nours vs the floor: medians over the runs of each (alternating, a fresh server "
              "each); CPU-s over the testers' run, RSS = peak (VmHWM); ratio = ours/floor")
        phdr = ("scenario", "runs", "conns ours", "conns floor", "CPU-s ours", "CPU-s floor",
                "CPU ratio", "RSS ours", "RSS floor", "RSS ratio", "s2s avg/p99 ours",
                "s2s avg/p99 floor", "check ours", "check floor")
        prow = []
        for sc, runs, _ in pairs:
            if sc.get("idle"):
                continue
            o, f = median_result(runs["ours"]), median_result(runs["floor"])
            g = lambda r, fn: fn(r) if r else "FAILED"
            s2s = lambda r: ("%s/%s" % (fmt(r["s2s_ms"]["avg"], 2), fmt(r["s2s_ms"]["p99"], 2))
                             if r["s2s_ms"]["count"] else "-")
            prow.append((sc["name"], "%d/%d" % (len([r for r in runs["ours"] if r]),
                                                len([r for r in runs["floor"] if r])),
                         g(o, lambda r: "%d/%d" % (r["connected"], r["expected"])),
                         g(f, lambda r: "%d/%d" % (r["connected"], r["expected"])),
                         g(o, lambda r: fmt(r["cpu_s"], 2)), g(f, lambda r: fmt(r["cpu_s"], 2)),
                         fmt(ratio(o["cpu_s"], f["cpu_s"]), 2) + "x" if o and f else "-",
                         g(o, lambda r: fmt(r["rss_mb"], 1)), g(f, lambda r: fmt(r["rss_mb"], 1)),
                         fmt(ratio(o["rss_mb"], f["rss_mb"]), 1) + "x" if o and f else "-",
                         g(o, s2s), g(f, s2s),
                         g(o, lambda r: "ok" if r["data_check"]["ok"] and r["exit"] == 0 else "FAILED"),
                         g(f, lambda r: "ok" if r["data_check"]["ok"] and r["exit"] == 0 else "FAILED")))
        if prow:
            print_table(phdr, prow, md, "Ours vs the floor (medians)")
        for sc, runs, _ in pairs:
            if sc.get("idle"):
                o, f = median_result(runs["ours"]), median_result(runs["floor"])
                print("\nidle (no clients, medians): ")
                ihdr = ("server", "runs", "RSS MB", "peak RSS MB", "threads", "exec to first GET ms")
                irow = [(k, str(len([r for r in runs[k] if r])),
                         *((fmt(m["rss_mb"], 1), fmt(m["peak_rss_mb"], 1), "%d" % m["threads"],
                            fmt(m["ready_ms"], 1)) if m else ("FAILED",) * 4))
                        for k, m in (("ours", o), ("floor", f))]
                print_table(ihdr, irow, md, "Idle (medians)")

        print("\ntargets of the rewrite (ours; the floor's figure beside it):")
        thdr = ("scenario", "target", "ours", "floor", "ratio", "wanted", "verdict")
        trow = []
        for sc, runs, _ in pairs:
            o, f = median_result(runs["ours"]), median_result(runs["floor"])
            for label, ov, fv, want, met, extra in sc["pair_targets"](o, f):
                trow.append((sc["name"], label, ov, fv, extra or "-", want,
                             "met" if met else "MISSED"))
        print_table(thdr, trow, md, "Targets")
        for sc, _, notes in pairs:
            for n in notes:
                print("note (%s): %s" % (sc["name"], n))

    if md:
        md.close()

    print("\nreference (Go server, SQLite, its own tester) and targets:")
    for sc, r in results:
        verdicts = ""
        if r is not None and "target" in sc:
            verdicts = "; ".join("%s %s" % (n, "MET" if ok else "MISSED") for n, ok in sc["target"](r))
        print("  %-18s ref: %-45s %s" % (sc["name"], sc["ref"], verdicts))
    rtt = {sc["name"]: r for sc, r in results if sc.get("group") == "rtt" and r}
    if "rtt@0MB" in rtt and "rtt@20MB" in rtt:
        m0, m20 = rtt["rtt@0MB"]["ack_rtt_ms"]["p50"], rtt["rtt@20MB"]["ack_rtt_ms"]["p50"]
        print("  ACK RTT flat in size: median %.2f ms at 0 MB, %.2f ms at 20 MB (%.2fx): "
              "within 1.5x %s, <= 1 ms %s"
              % (m0, m20, m20 / m0 if m0 else float("inf"), "MET" if m20 <= 1.5 * m0 else "MISSED",
                 "MET" if m20 <= 1 else "MISSED"))
    for sc, r in results:
        if r and sc["name"] == "saturation":
            print("  saturation: %.0f deliveries/s, %.0f deliveries per server CPU-second, "
                  "%d ACKed appends/s"
                  % (r["deliveries_per_s"], r["deliveries"] / r["cpu_s"] if r["cpu_s"] else 0,
                     r["acks"] / r["duration_s"] if r["duration_s"] else 0))
    z = {sc["name"]: r for sc, r in results if sc.get("group") == "z" and r}
    zrows = []
    for plain, comp, cpu_limit, wire_limit in (("catchup/2MB", "catchup/2MB-z", 1.5, 1 / 3),
                                                ("5t/3000s-nz", "5t/3000s-z", 1.1, None),
                                                ("3000idle", "3000idle-z", None, None)):
        if plain in z and comp in z:
            p, c = z[plain], z[comp]
            cpu_r, wire_r = ratio(c["cpu_s"], p["cpu_s"]), ratio(c["wire_bytes_in"], p["wire_bytes_in"])
            zrows.append((plain, fmt(p["cpu_s"], 2), fmt(c["cpu_s"], 2), fmt(cpu_r, 2) + "x",
                          "<= %gx %s" % (cpu_limit, "met" if cpu_r <= cpu_limit else "MISSED")
                          if cpu_limit else "-",
                          "%d" % p["wire_bytes_in"], "%d" % c["wire_bytes_in"], fmt(wire_r, 3),
                          "<= %.2f %s" % (wire_limit, "met" if wire_r <= wire_limit else "MISSED")
                          if wire_limit else "-",
                          fmt(p["rss_mb"], 1), fmt(c["rss_mb"], 1)))
    if zrows:
        print("\npermessage-deflate: the same load without and with compression offered by every "
              "client (CPU-s = server's; wire = bytes the testers read)")
        print_table(("load", "CPU-s plain", "CPU-s deflate", "CPU ratio", "CPU target",
                     "wire plain", "wire deflate", "wire ratio", "wire target", "RSS MB plain",
                     "RSS MB deflate"), zrows, None, "Compression")
    bad = [label for label, r in rows if r is None or r["exit"] != 0]
    bad += ["%s %s" % (sc["name"], k) for sc, runs, _ in pairs for k in ("ours", "floor")
            if sc.get("idle") and any(r is None for r in runs[k])]
    if bad:
        print("\nruns with errors or a failed data check: %s (logs under %s)"
              % (", ".join(bad), args.out))
    print("\nbench: %.0f s in all" % (time.monotonic() - t_start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
