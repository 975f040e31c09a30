"""Binding port 443-style privileged ports and giving up root.

Started as root, the server binds its port and reads its TLS key as root, and does
everything else as User (here the system's `nobody`): its store and log files belong to
that user, and once running it has no root ids and no capabilities left. Started as
a plain user, CAP_NET_BIND_SERVICE alone lets it bind a low port."""

import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path

import pytest

import zwclient as zw
from conftest import BIN
from deployutil import Certs, background, full_session, read_log, trust_ca, wait_port  # noqa: F401

NOBODY = 65534


def low_port():
    """A free port below 1024 (only root or CAP_NET_BIND_SERVICE may bind it)."""
    for port in range(980, 800, -1):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    pytest.skip("no free port below 1024")


@pytest.fixture
def shared_dir():
    """A folder `nobody` can reach (pytest's own tmp folders are root-only)."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    d = Path(tempfile.mkdtemp(prefix="zw-privs-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def write_conf(d, port, **extra):
    cfg = {"ServerBindAddress": "127.0.0.1", "ServerPort": port, "Database": "lmdb",
           "DataDir": d / "data", "MaxConnections": 64, "LogFile": d / "data" / "zw.log"}
    cfg.update(extra)
    path = d / "zwibbler.conf"
    path.write_text("".join("%s=%s\n" % kv for kv in cfg.items()))
    path.chmod(0o644)
    return path


def wait_log(path, text, proc, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if text in path.read_text():
                return
        except OSError:
            pass
        assert proc.alive(), read_log(proc.log)
        time.sleep(0.05)
    raise AssertionError("no %r in %s\n%s" % (text, path, read_log(proc.log)))


def status_of(pid):
    return Path("/proc/%d/status" % pid).read_text()


def test_root_binds_low_port_reads_root_only_key_then_runs_as_user(
        shared_dir, background, tmp_path, trust_ca):
    certs = Certs(tmp_path / "certs")  # root-only folder, key mode 0600
    certs.key.chmod(0o600)
    trust_ca(certs)
    data = shared_dir / "data"
    data.mkdir()
    os.chown(data, NOBODY, NOBODY)
    port = low_port()
    conf = write_conf(shared_dir, port, User="nobody", CertFile=certs.chain, KeyFile=certs.key)
    proc = background([BIN, "--config", conf], tmp_path / "out.log")
    wait_port(port, proc.proc, what="zwibbler", log=tmp_path / "out.log")
    wait_log(data / "zw.log", "running as user nobody", proc)

    st = status_of(proc.pid)
    assert re.search(r"^Uid:\t%d\t%d\t%d\t%d$" % ((NOBODY,) * 4), st, re.M), st
    assert re.search(r"^Gid:\t%d\t%d\t%d\t%d$" % ((NOBODY,) * 4), st, re.M), st
    assert re.search(r"^CapEff:\t0+$", st, re.M) and re.search(r"^CapPrm:\t0+$", st, re.M), st
    groups = re.search(r"^Groups:\t(.*)$", st, re.M).group(1).split()
    assert "0" not in groups, st  # root's groups are gone too

    zw.run(full_session("wss://127.0.0.1:%d/socket" % port, "privs"))
    assert proc.stop() == 0, read_log(proc.log)
    for f in [data / "lmdb", *(data / "lmdb").iterdir(), data / "zw.log"]:
        assert f.stat().st_uid == NOBODY, f


def test_data_dir_the_user_cannot_write_fails_clearly(shared_dir, background, tmp_path):
    (shared_dir / "data").mkdir()  # root's, 0755: nobody cannot write
    conf = write_conf(shared_dir, low_port(), User="nobody", LogFile="")
    proc = background([BIN, "--config", conf], tmp_path / "out.log")
    proc.proc.wait(15)
    out = read_log(proc.log)
    assert proc.proc.returncode != 0, out
    assert "must be writable by user nobody" in out, out


def test_missing_user_keeps_running_as_root_with_a_warning(shared_dir, background, tmp_path):
    (shared_dir / "data").mkdir()
    conf = write_conf(shared_dir, low_port(), User="no-such-user-zw")
    proc = background([BIN, "--config", conf], tmp_path / "out.log")
    wait_log(shared_dir / "data" / "zw.log", "listening on", proc)
    assert "no user 'no-such-user-zw'" in (shared_dir / "data" / "zw.log").read_text()
    assert re.search(r"^Uid:\t0\t", status_of(proc.pid), re.M)
    assert proc.stop() == 0


def _as_nobody(caps):
    argv = [shutil.which("setpriv") or "/usr/bin/setpriv", "--reuid=%d" % NOBODY,
            "--regid=%d" % NOBODY, "--clear-groups"]
    if caps:
        argv += ["--inh-caps=+net_bind_service", "--ambient-caps=+net_bind_service"]
    return argv


def test_cap_net_bind_service_alone_binds_low_port(shared_dir, background, tmp_path):
    """What the unit's AmbientCapabilities gives a server run as a plain user."""
    data = shared_dir / "data"
    data.mkdir()
    os.chown(data, NOBODY, NOBODY)
    port = low_port()
    conf = write_conf(shared_dir, port, User="zwibbler")  # ignored: not started as root
    proc = background(_as_nobody(True) + [BIN, "--config", conf], tmp_path / "out.log")
    wait_log(data / "zw.log", "listening on", proc)
    assert re.search(r"^Uid:\t%d\t" % NOBODY, status_of(proc.pid), re.M)
    zw.run(full_session("ws://127.0.0.1:%d/socket" % port, "cap"))
    assert proc.stop() == 0


def test_low_port_without_privilege_fails_clearly(shared_dir, background, tmp_path):
    data = shared_dir / "data"
    data.mkdir()
    os.chown(data, NOBODY, NOBODY)
    port = low_port()
    conf = write_conf(shared_dir, port)
    proc = background(_as_nobody(False) + [BIN, "--config", conf], tmp_path / "out.log")
    proc.proc.wait(15)
    out = read_log(proc.log)
    assert proc.proc.returncode != 0, out
    assert "cannot listen on 127.0.0.1:%d" % port in out and "Permission denied" in out, out


def test_max_files_raises_the_open_file_limit(server_factory):
    """MaxFiles sets the open-file limit at start and says so in the log."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 4096)
    s = server_factory(MaxFiles=want)
    limits = Path("/proc/%d/limits" % s.proc.pid).read_text()
    m = re.search(r"^Max open files\s+(\d+)\s+(\d+)", limits, re.M)
    assert m and int(m.group(1)) == want, limits
    assert "MaxFiles: open-file limit set to %d" % want in s.log_path.read_text()
