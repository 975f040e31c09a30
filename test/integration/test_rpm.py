"""The RPM (`make rpm`, scripts/mkrpm.sh): built with rpmbuild, inspected with rpm -qlp,
--scripts and -qcp, then installed, upgraded and erased with the real rpm and its
scriptlets in a throwaway root (the copy-on-write overlay of "/" that test_deb.py uses:
the machine's own files, users and package databases are never touched)."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import BIN, REPO
from test_deb import Root, ok

MKRPM = REPO / "scripts" / "mkrpm.sh"
RPMBUILD = shutil.which("rpmbuild")
DB = "/var/lib/zwibbler-test-rpmdb"  # the rpm database inside the throwaway root

pytestmark = pytest.mark.skipif(RPMBUILD is None, reason="rpmbuild (Debian's rpm) not installed")


def build_rpm(out_dir, version):
    out = ok(["bash", MKRPM], env=dict(os.environ, BIN=BIN, OUT=str(out_dir), VERSION=version))
    rpm = Path(out.strip().splitlines()[-1])
    assert rpm.is_file(), out
    arch = subprocess.run(["uname", "-m"], capture_output=True, text=True).stdout.strip()
    assert rpm.name == "zwibbler-%s-1.%s.rpm" % (version, arch), rpm
    return rpm


@pytest.fixture(scope="module")
def rpms(tmp_path_factory):
    if not os.path.exists(BIN):
        pytest.skip("server binary %s not built" % BIN)
    d = tmp_path_factory.mktemp("rpms")
    return build_rpm(d / "v1", "0.1.0"), build_rpm(d / "v2", "0.1.1")


@pytest.fixture
def root(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("installing into an overlay root needs root")
    r = Root(tmp_path / "root")
    rc, out = r.run("true")
    if rc != 0:
        pytest.fail("cannot make an overlay root here (unshare/mount): %s" % out)
    yield r
    subprocess.run(["rm", "-rf", str(r.d)], check=False)


def deb_files():
    """The regular files the .deb ships (from the same staging script), as paths."""
    d = Path(ok(["mktemp", "-d"]).strip())
    try:
        ok(["bash", REPO / "scripts" / "stage.sh", d, BIN])
        return {"/" + str(p.relative_to(d)) for p in d.rglob("*") if p.is_file()}
    finally:
        shutil.rmtree(d)


def test_rpm_files_match_deb(rpms):
    rpm, _ = rpms
    listing = ok(["rpm", "-qlvp", rpm])
    files = {}
    for line in listing.splitlines():
        f = line.split()
        files[f[-1]] = (f[0], f[2], f[3])
    unit = "/usr/lib/systemd/system/zwibbler.service"
    expect = {
        "/usr/bin/zwibbler": ("-rwxr-xr-x", "root", "root"),
        "/etc/zwibbler.conf": ("-rw-r--r--", "root", "root"),
        "/etc/logrotate.d/zwibbler": ("-rw-r--r--", "root", "root"),
        unit: ("-rw-r--r--", "root", "root"),
        "/var/lib/zwibbler": ("drwxr-x---", "zwibbler", "zwibbler"),
        "/var/log/zwibbler": ("drwxr-x---", "zwibbler", "zwibbler"),
        "/usr/share/man/man8/zwibbler.8.gz": ("-rw-r--r--", "root", "root"),
        "/usr/share/doc/zwibbler/README.md": ("-rw-r--r--", "root", "root"),
        "/usr/share/doc/zwibbler/examples/nginx-zwibbler.conf": ("-rw-r--r--", "root", "root"),
    }
    for path, attrs in expect.items():
        assert path in files, "%s missing from the rpm:\n%s" % (path, listing)
        assert files[path] == attrs, (path, files[path])
    # the same files as the .deb, the unit in the RPM distributions' folder
    deb = {p.replace("/lib/systemd/system/", "/usr/lib/systemd/system/") for p in deb_files()}
    rpm_files = {p for p, a in files.items() if a[0].startswith("-")}
    assert rpm_files == deb, rpm_files ^ deb
    # conffiles, kept on upgrade when edited
    assert ok(["rpm", "-qcp", rpm]).split() == ["/etc/logrotate.d/zwibbler", "/etc/zwibbler.conf"]
    info = ok(["rpm", "-qip", rpm])
    assert re.search(r"^Version\s*: 0\.1\.0$", info, re.M), info
    requires = ok(["rpm", "-qp", "--requires", rpm])
    for lib in ("liblmdb.so.0", "libssl.so.3", "libsqlite3.so.0", "libhiredis.so"):
        assert lib in requires, requires


def test_rpm_scriptlets(rpms):
    rpm, _ = rpms
    out = ok(["rpm", "-qp", "--scripts", rpm])
    for part in ("preinstall scriptlet", "postinstall scriptlet", "preuninstall scriptlet",
                 "postuninstall scriptlet"):
        assert part in out, out
    assert "useradd -r -g zwibbler -d /var/lib/zwibbler" in out
    assert "systemctl enable zwibbler.service" in out
    assert "systemctl try-restart zwibbler.service" in out
    assert "systemctl stop zwibbler.service" in out


def rpm_cmd(root, *args):
    return root.run("rpm", "--dbpath", DB, *args)


def test_rpm_install_upgrade_erase(rpms, root):
    rpm1, rpm2 = rpms
    root.ok("mkdir", "-p", DB)
    root.ok("rpm", "--dbpath", DB, "--initdb")
    # --nodeps: this Debian root's libraries are not in its (empty) rpm database
    rc, out = rpm_cmd(root, "-i", "--nodeps", rpm1)
    assert rc == 0, out
    user = root.passwd("zwibbler")
    assert user, "%pre did not create the zwibbler user"
    uid, gid, home, shell = user
    assert uid < 1000 and home == "/var/lib/zwibbler" and shell.endswith("nologin"), user
    for d in ("/var/lib/zwibbler", "/var/log/zwibbler"):
        st = root.path(d).stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (uid, gid, 0o750), d
    for f in ("/usr/bin/zwibbler", "/etc/zwibbler.conf", "/usr/lib/systemd/system/zwibbler.service",
              "/usr/share/doc/zwibbler/README.md"):
        rc, out = root.run("test", "-f", f)
        assert rc == 0, f
    rc, out = root.run("/usr/bin/zwibbler", "--version")
    assert rc == 0 and out.startswith("zwibbler "), out
    # %post enabled the unit (systemd is not running here: nothing was started)
    wants = "/etc/systemd/system/multi-user.target.wants/zwibbler.service"
    rc, out = root.run("test", "-L", wants)
    assert rc == 0, "%post did not enable the unit"

    # upgrade: an edited conffile is kept; the unit stays enabled
    conf = root.path("/etc/zwibbler.conf")
    conf.write_text(conf.read_text() + "# edited by the admin\n")
    rc, out = rpm_cmd(root, "-U", "--nodeps", rpm2)
    assert rc == 0, out
    assert "0.1.1" in rpm_cmd(root, "-q", "zwibbler")[1]
    assert conf.read_text().endswith("# edited by the admin\n")
    assert root.run("test", "-L", wants)[0] == 0

    # erase: program and unit go, the unit is disabled, the edited config is saved
    root.ok("sh", "-c", "mkdir -p /var/lib/zwibbler/lmdb && touch /var/lib/zwibbler/lmdb/data.mdb")
    rc, out = rpm_cmd(root, "-e", "zwibbler")
    assert rc == 0, out
    assert "documents kept in /var/lib/zwibbler" in out, out
    rc, out = root.run("sh", "-c", "test ! -e /usr/bin/zwibbler"
                       " && test ! -e /usr/lib/systemd/system/zwibbler.service"
                       " && test ! -e " + wants +
                       " && test -f /etc/zwibbler.conf.rpmsave"
                       " && test -f /var/lib/zwibbler/lmdb/data.mdb && getent passwd zwibbler")
    assert rc == 0, out
