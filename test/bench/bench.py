#!/usr/bin/env python3
"""bench: the benchmark suite (`make bench`).

Each scenario starts a fresh server (LMDB, durable commits, loopback) with its own
data directory, runs the bundled load tester (`zwibbler --test ... --json`) for a
bounded time, reads the server's CPU seconds (utime+stime from /proc/PID/stat, over
the tester's run) and peak RSS (VmHWM from /proc/PID/status, whole life), and
the group-commit figures from the server's metrics (MetricsPath: LMDB commits,
operations per commit, mean commit time), then prints one table. Every run's tester output and server log are kept under
test/artifacts/bench/ (or --out).

  test/bench/bench.py [--bin PATH] [--quick] [--only NAME[,NAME...]] [--perf] [--out DIR]
                      [--markdown FILE]

--quick shortens every window (for trying the harness, not for figures); --perf
records the saturation scenario with `perf record -g` and prints the top symbols.
"""

import argparse
import base64
import json
import os
import resource
import shutil
import signal
import socket
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


class Server:
    """One server process with a private config and data directory."""

    def __init__(self, binary, root, name, max_conns):
        self.dir = Path(root) / name
        shutil.rmtree(self.dir, ignore_errors=True)
        (self.dir / "data").mkdir(parents=True)
        self.port = free_port()
        self.conf = self.dir / "zwibbler.conf"
        self.conf.write_text(
            "ServerBindAddress=127.0.0.1\nServerPort=%d\nDatabase=lmdb\nDataDir=%s\n"
            "MaxConnections=%d\nSecretUser=%s\nSecretPassword=%s\nMetricsPath=/metrics\n"
            % (self.port, self.dir / "data", max_conns, SECRET[0], SECRET[1]))
        self.log = open(self.dir / "server.log", "wb")
        self.proc = subprocess.Popen([binary, "--config", str(self.conf)], cwd=str(self.dir),
                                     stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.url = "ws://127.0.0.1:%d/socket" % self.port
        deadline = time.monotonic() + 120  # thousands of worker threads start first
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited at start; see %s" % (self.dir / "server.log"))
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/socket" % self.port, timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("server not ready in 120 s")

    def cpu_seconds(self):
        with open("/proc/%d/stat" % self.proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK  # utime, stime (fields 14, 15)

    def peak_rss_mb(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
        return float("nan")

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


def scenarios(quick):
    d = (lambda s: max(4, s // 6)) if quick else (lambda s: s)
    out = [
        dict(name="1t/100s", teachers=1, students=100, duration=d(39),
             ref="avg 1, max 3 ms; 0.16 CPU-s; 17 MB"),
        dict(name="2t/1000s", teachers=2, students=1000, duration=d(39),
             ref="avg 6, max 14-18 ms; 1.4 CPU-s; 49 MB"),
        dict(name="5t/3000s", teachers=5, students=3000, duration=d(39),
             ref="avg 14-16, max 37-56 ms; 5.7-6.6 CPU-s; 138-162 MB",
             target=lambda r: [("s2s avg <= 5 ms", r["s2s_ms"]["avg"] <= 5),
                               ("s2s max <= 20 ms", r["s2s_ms"]["max"] <= 20),
                               ("<= 2 CPU-s", r["cpu_s"] <= 2), ("<= 75 MB", r["rss_mb"] <= 75)]),
        dict(name="20t/0s", teachers=20, students=0, duration=d(39),
             ref="avg 0, max 5 ms; 0.5 CPU-s; 18 MB"),
        dict(name="10t/10000s", teachers=10, students=10000, duration=d(60), spread=5000,
             ref="(target only)",
             target=lambda r: [("s2s avg <= 20 ms", r["s2s_ms"]["avg"] <= 20),
                               ("s2s p99 <= 60 ms", r["s2s_ms"]["p99"] <= 60),
                               ("RSS <= 300 MB", r["rss_mb"] <= 300),
                               ("no errors", r["errors"] == 0)]),
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
    ]
    return out


def run_scenario(binary, sc, out_dir, use_perf):
    clients = sc["teachers"] + sc["students"]
    srv = Server(binary, out_dir, sc["name"].replace("/", "-").replace(" ", "_").replace("@", "-"),
                 max_conns=max(256, clients + 100))
    perf = None
    try:
        docid = "bench-%d" % int(time.time())
        if sc.get("prefill"):
            srv.create_document(docid, os.urandom(sc["prefill"]))
        cmd = [binary, "--test", srv.url, "--json", "--docid", docid,
               "--teachers", str(sc["teachers"]), "--students", str(sc["students"]),
               "--duration", str(sc["duration"]),
               "--connect-spread-ms", str(sc.get("spread", 3000))]
        for k, flag in (("docs", "--docs"), ("delay_ms", "--delay-ms"),
                        ("change_bytes", "--change-bytes")):
            if k in sc:
                cmd += [flag, str(sc[k])]
        load = os.getloadavg()[0]  # other work on the machine skews every figure
        cpu0 = srv.cpu_seconds()
        tester_log = open(srv.dir / "tester.log", "wb")
        t = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=tester_log)
        if use_perf and sc.get("perf") and shutil.which("perf"):
            time.sleep(min(5, sc["duration"] / 4))  # past the connection ramp
            perf = subprocess.Popen(["perf", "record", "-g", "-o", str(srv.dir / "perf.data"),
                                     "-p", str(srv.proc.pid), "--", "sleep",
                                     str(max(2, sc["duration"] // 2))],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        out, _ = t.communicate(timeout=sc["duration"] + 300)
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # only the tester was reaped
        tester_cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
        tester_log.close()
        cpu = srv.cpu_seconds() - cpu0
        rss = srv.peak_rss_mb()
        m = srv.metrics()  # group commit: operations per LMDB transaction, commit time
        if perf:
            perf.wait()
        try:
            r = json.loads(out.decode().strip().splitlines()[-1])
        except (IndexError, ValueError):
            r = None
        if r is None:
            raise RuntimeError("tester gave no JSON (exit %d); see %s"
                               % (t.returncode, srv.dir / "tester.log"))
        r.update(cpu_s=cpu, rss_mb=rss, exit=t.returncode, dir=str(srv.dir), load=load,
                 tester_cpu_s=tester_cpu)
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


def fmt(v, nd=1):
    return ("%." + str(nd) + "f") % v


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.environ.get("ZWIBBLER_BIN", str(REPO / "build/release/zwibbler")))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="")
    ap.add_argument("--perf", action="store_true")
    ap.add_argument("--out", default=str(REPO / "test/artifacts/bench"))
    ap.add_argument("--markdown", help="also write the results table as Markdown to this file")
    args = ap.parse_args()
    if not os.path.exists(args.bin):
        sys.exit("bench: %s not built (make)" % args.bin)
    # Thousands of sockets in the server and in the tester: take the hard limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    only = [s for s in args.only.split(",") if s]
    chosen = [s for s in scenarios(args.quick) if not only or any(o in s["name"] for o in only)]
    print("machine: %d cores, %s" % (os.cpu_count(), " ".join(os.uname())))
    print("binary: %s; open files: %d; windows: %s" % (args.bin, hard,
                                                      "quick" if args.quick else "full"))
    results = []
    for sc in chosen:
        print("running %-12s (%d teachers, %d students, %d docs, %d s) ..."
              % (sc["name"], sc["teachers"], sc["students"], sc.get("docs", 1), sc["duration"]),
              flush=True)
        try:
            r = run_scenario(args.bin, sc, args.out, args.perf)
        except Exception as e:  # one broken scenario must not hide the others
            print("   FAILED: %s" % e, flush=True)
            results.append((sc, None))
            continue
        results.append((sc, r))

    print()
    hdr = ("scenario", "conns", "s2s avg", "p50", "p99", "max", "ACK p50", "ACK p99",
           "deliv/s", "NACK%", "CPU-s", "RSS MB", "commits", "ops/commit", "commit ms",
           "errors", "check", "tester CPU-s", "load")
    rows = []
    for sc, r in results:
        if r is None:
            rows.append((sc["name"],) + ("-",) * (len(hdr) - 4) + ("FAILED", "-", "-"))
            continue
        s, a = r["s2s_ms"], r["ack_rtt_ms"]
        sv = [fmt(s[k], 2) if s["count"] else "-" for k in ("avg", "p50", "p99", "max")]
        av = [fmt(a[k], 2) if a["count"] else "-" for k in ("p50", "p99")]
        rows.append((sc["name"], "%d/%d" % (r["connected"], r["expected"]),
                     sv[0], sv[1], sv[2], sv[3], av[0], av[1], fmt(r["deliveries_per_s"], 0),
                     fmt(100 * r["nack_rate"], 1), fmt(r["cpu_s"], 2), fmt(r["rss_mb"], 0),
                     str(r.get("commits", "-")),
                     fmt(r["ops_per_commit"], 1) if "ops_per_commit" in r else "-",
                     fmt(r["commit_ms"], 2) if "commit_ms" in r else "-",
                     str(r["errors"]), "ok" if r["data_check"]["ok"] else "FAILED",
                     fmt(r["tester_cpu_s"], 2), fmt(r["load"], 1)))
    widths = [max(len(str(x[i])) for x in rows + [hdr]) for i in range(len(hdr))]
    line = lambda x: "  ".join(str(v).rjust(w) if i else str(v).ljust(w)
                               for i, (v, w) in enumerate(zip(x, widths)))
    print("times in ms (s2s = screen-to-screen, teacher's send to another client's receipt); "
          "CPU-s and RSS are the server's; load = 1-minute load average when the run started")
    print(line(hdr))
    print(line(["-" * w for w in widths]))
    for row in rows:
        print(line(row))

    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("| " + " | ".join(hdr) + " |\n")
            f.write("|" + "|".join("---" if i == 0 else "---:" for i in range(len(hdr))) + "|\n")
            for row in rows:
                f.write("| " + " | ".join(str(v) for v in row) + " |\n")

    print("\nreference (Go server, SQLite, its own tester) and targets:")
    for sc, r in results:
        verdicts = ""
        if r is not None and "target" in sc:
            verdicts = "; ".join("%s %s" % (n, "MET" if ok else "MISSED") for n, ok in sc["target"](r))
        print("  %-12s ref: %-45s %s" % (sc["name"], sc["ref"], verdicts))
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
    bad = [sc["name"] for sc, r in results if r is None or r["exit"] != 0]
    if bad:
        print("\nruns with errors or a failed data check: %s (logs under %s)"
              % (", ".join(bad), args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
