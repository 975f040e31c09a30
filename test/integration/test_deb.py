"""The Debian package. scripts/mkdeb.sh (what `make deb` runs) packages the
binary under test; the package is inspected with dpkg-deb, then installed, upgraded,
used and purged with the real dpkg and maintainer scripts in a throwaway root.

The throwaway root is a copy-on-write view of this machine: an overlay mount of "/"
whose writes land in a folder under tmp_path, made inside a private mount namespace
(`unshare --mount`), entered with chroot. dpkg, adduser and the server inside see a
normal Debian system; the machine's own files, package database and users are never
touched, and the mounts vanish with the namespace's last process."""

import os
import pwd
import re
import subprocess
import time
from pathlib import Path

import pytest

import zwclient as zw
from conftest import BIN, REPO, free_port
from deployutil import background, full_session, read_log, wait_port  # noqa: F401

MKDEB = REPO / "scripts" / "mkdeb.sh"


def sh(argv, **kw):
    kw.setdefault("stdin", subprocess.DEVNULL)
    p = subprocess.run([str(a) for a in argv], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=kw.pop("timeout", 120), **kw)
    return p.returncode, p.stdout.decode("utf-8", "replace")


def ok(argv, **kw):
    rc, out = sh(argv, **kw)
    assert rc == 0, "%s -> %d\n%s" % (" ".join(map(str, argv)), rc, out)
    return out


def build_deb(out_dir, version):
    out = ok(["bash", MKDEB], env=dict(os.environ, BIN=BIN, OUT=str(out_dir), VERSION=version))
    deb = Path(out.strip().splitlines()[-1])
    assert deb.is_file(), out
    return deb


class Root:
    """An overlay of "/" under `d` (upper/, work/, mnt/)."""

    def __init__(self, d):
        self.d = Path(d)
        self.upper, self.work, self.mnt = self.d / "upper", self.d / "work", self.d / "mnt"
        for p in (self.upper, self.work, self.mnt):
            p.mkdir(parents=True)

    def argv(self, cmd):
        """argv that runs `cmd` chrooted in the overlay, in a private mount namespace.
        The last exec keeps the pid: signals sent to it reach `cmd` itself."""
        script = (
            "set -e\n"
            "mount -t overlay overlay -o lowerdir=/,upperdir={u},workdir={w} {m}\n"
            "mount -t proc proc {m}/proc\n"
            "mount --rbind /dev {m}/dev\n"
            "mount -t sysfs sysfs {m}/sys\n"
            'exec chroot {m} "$@"\n').format(u=self.upper, w=self.work, m=self.mnt)
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                *[str(c) for c in cmd]]

    def run(self, *cmd, **kw):
        return sh(self.argv(cmd), **kw)

    def ok(self, *cmd, **kw):
        return ok(self.argv(cmd), **kw)

    def path(self, p):
        """Where a file written inside the root lives (the upper layer)."""
        return self.upper / p.lstrip("/")

    def passwd(self, user):
        for line in self.path("/etc/passwd").read_text().splitlines():
            f = line.split(":")
            if f[0] == user:
                return int(f[2]), int(f[3]), f[5], f[6]
        return None


@pytest.fixture(scope="module")
def debs(tmp_path_factory):
    if not os.path.exists(BIN):
        pytest.skip("server binary %s not built" % BIN)
    d = tmp_path_factory.mktemp("debs")
    return build_deb(d / "v1", "0.1.0"), build_deb(d / "v2", "0.1.1")


@pytest.fixture
def root(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("installing into an overlay root needs root")
    r = Root(tmp_path / "root")
    rc, out = r.run("true")
    if rc != 0:
        pytest.fail("cannot make an overlay root here (unshare/mount): %s" % out)
    yield r
    # Whiteouts and files owned by the package's user: rm as root copes with both.
    subprocess.run(["rm", "-rf", str(r.d)], check=False)


# ---- the package as built -------------------------------------------------------------

def test_deb_contents(debs):
    deb, _ = debs
    listing = ok(["dpkg-deb", "-c", deb])
    files = {}
    for line in listing.splitlines():
        f = line.split()
        files[f[-1].lstrip(".")] = (f[0], f[1])
    expect = {
        "/usr/bin/zwibbler": "-rwxr-xr-x",
        "/etc/zwibbler.conf": "-rw-r--r--",
        "/etc/logrotate.d/zwibbler": "-rw-r--r--",
        "/lib/systemd/system/zwibbler.service": "-rw-r--r--",
        "/var/lib/zwibbler/": "drwxr-x---",
        "/var/log/zwibbler/": "drwxr-x---",
        "/usr/share/doc/zwibbler/examples/nginx-zwibbler.conf": "-rw-r--r--",
        "/usr/share/doc/zwibbler/examples/apache-zwibbler.conf": "-rw-r--r--",
        "/usr/share/doc/zwibbler/README.md": "-rw-r--r--",
        "/usr/share/man/man8/zwibbler.8.gz": "-rw-r--r--",
    }
    # every page of docs/ is shipped
    for f in (REPO / "docs").iterdir():
        if f.is_file():
            expect["/usr/share/doc/zwibbler/docs/" + f.name] = "-rw-r--r--"
    assert len([k for k in expect if "/docs/" in k]) >= 8, "docs/ has too few pages"
    for path, mode in expect.items():
        assert path in files, "%s missing from the package:\n%s" % (path, listing)
        assert files[path] == (mode, "root/root"), (path, files[path])


def _man_warnings(page):
    """What `man --warnings` says about a page (empty: renders cleanly)."""
    p = subprocess.run(["man", "--warnings", "-l", str(page)], capture_output=True,
                       env=dict(os.environ, MANWIDTH="80", MAN_KEEP_FORMATTING="0"),
                       timeout=60)
    assert p.returncode == 0, p.stderr.decode()
    # without a terminal, bold and underline are overstrikes: keep the letters
    return p.stderr.decode(), re.sub(r".\x08", "", p.stdout.decode())


def test_man_page_renders_and_is_packaged(debs, tmp_path):
    """man/zwibbler.8 renders without a warning, the package holds it gzipped, the
    packaged page is the same, and it names every command-line flag."""
    if subprocess.run(["sh", "-c", "command -v man"], capture_output=True).returncode:
        pytest.skip("man-db is not installed")
    warnings, text = _man_warnings(REPO / "man" / "zwibbler.8")
    assert warnings == "", warnings
    for section in ("SYNOPSIS", "OPTIONS", "CONFIGURATION", "FILES", "SIGNALS",
                    "EXIT STATUS", "EXAMPLES"):
        assert re.search(r"^%s$" % section, text, re.M), section
    flags = ["--config", "--port", "--install", "--uninstall", "--version", "--help",
             "--test", "--docid", "--teachers", "--students", "--docs", "--duration",
             "--delay-ms", "--change-bytes", "--connect-spread-ms", "--json",
             "--tls-verify", "--verbose", "--copy-store", "--from", "--to", "--overwrite"]
    for flag in flags:
        assert flag in text, "%s is not in the man page" % flag
    deb, _ = debs
    out = tmp_path / "zwibbler.8.gz"
    subprocess.run(["sh", "-c", 'dpkg-deb --fsys-tarfile "$1" | tar -xO ./usr/share/man/man8/zwibbler.8.gz > "$2"',
                    "sh", str(deb), str(out)], check=True, timeout=60)
    warnings, packaged = _man_warnings(out)
    assert warnings == "" and packaged == text
    # and `zwibbler --help` points at it
    helptext = subprocess.run([BIN, "--help"], capture_output=True, timeout=10).stdout.decode()
    assert "man 8 zwibbler" in helptext, helptext


def test_deb_control(debs):
    deb, _ = debs
    info = ok(["dpkg-deb", "-I", deb])
    fields = dict(re.findall(r"^ (\S+): (.*)$", info, re.M))
    assert fields["Package"] == "zwibbler"
    assert fields["Version"] == "0.1.0"
    assert fields["Architecture"] == ok(["dpkg", "--print-architecture"]).strip()
    depends = fields["Depends"]
    for lib in ("libc6", "liblmdb0", "libssl3", "adduser"):
        assert lib in depends, depends
    for script in ("postinst", "prerm", "postrm", "conffiles"):
        assert re.search(r"\b%s\b" % script, info), info
    conffiles = ok(["dpkg-deb", "-I", deb, "conffiles"]).split()
    assert conffiles == ["/etc/zwibbler.conf", "/etc/logrotate.d/zwibbler"]
    conf = subprocess.run(["sh", "-c", 'dpkg-deb --fsys-tarfile "$1" | tar -xO ./etc/zwibbler.conf',
                           "sh", str(deb)], capture_output=True, check=True).stdout.decode()
    assert conf == (REPO / "conf" / "zwibbler.conf").read_text()
    for line in ("ServerPort=3000", "Database=lmdb", "DataDir=/var/lib/zwibbler",
                 "LogFile=/var/log/zwibbler/zwibbler.log", "User=zwibbler"):
        assert re.search(r"^%s$" % re.escape(line), conf, re.M), line


def test_shipped_config_has_every_key_documented():
    """Every key config.c knows appears in conf/zwibbler.conf (set or commented)."""
    src = (REPO / "server" / "app" / "config.c").read_text()
    keys = set(re.findall(r'^\s+\{"([A-Za-z0-9]+)", K_', src, re.M))
    keys |= set(re.findall(r'strcasecmp\(key, "([A-Za-z0-9]+)"\)', src))
    conf = (REPO / "conf" / "zwibbler.conf").read_text()
    present = set(re.findall(r"^#?([A-Za-z0-9]+)=", conf, re.M))
    # older names, documented in words beside the keys they stand for
    aliases = {"RedisServer", "RedisPassword", "WriteTimeoutMs", "SenderThreads"}
    missing = keys - present - aliases
    assert not missing, "undocumented in conf/zwibbler.conf: %s" % sorted(missing)


# ---- installed, used, upgraded, purged ---------------------------------------------------

def start_installed(root, background, log, port):
    """The installed binary with the installed config, as the unit's ExecStart has it,
    plus --port."""
    proc = background(root.argv(["/usr/bin/zwibbler", "--config", "/etc/zwibbler.conf",
                                 "--port", str(port)]), log)
    wait_port(port, proc.proc, what="installed zwibbler", log=log)
    # The port accepts while worker threads are still being made; the server is
    # ready once it has switched to its user (the last step of start-up).
    deadline = time.monotonic() + 30
    while "running as user" not in _read(root.path("/var/log/zwibbler/zwibbler.log")):
        assert proc.alive(), read_log(log)
        assert time.monotonic() < deadline, read_log(log)
        time.sleep(0.05)
    return proc


def _read(path):
    try:
        return path.read_text()
    except OSError:
        return ""


def test_install_use_upgrade_purge(debs, root, background, tmp_path):
    deb1, deb2 = debs
    host_had_user = _host_user("zwibbler")
    out = root.ok("dpkg", "-i", deb1)
    assert "error" not in out.lower(), out

    # postinst: the user, the folders it owns, the unit enabled (systemd is not running
    # here, so nothing was started).
    user = root.passwd("zwibbler")
    assert user, "postinst did not create the zwibbler user"
    uid, gid, home, shell = user
    assert uid < 1000 and home == "/var/lib/zwibbler" and shell.endswith("nologin"), user
    for d in ("/var/lib/zwibbler", "/var/log/zwibbler"):
        st = root.path(d).stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (uid, gid, 0o750), d
    wants = root.path("/etc/systemd/system/multi-user.target.wants/zwibbler.service")
    assert os.readlink(wants) == "/lib/systemd/system/zwibbler.service"
    assert root.path("/usr/bin/zwibbler").is_file()
    # The unit is valid for systemd (syntax, paths, capabilities).
    rc, out = root.run("systemd-analyze", "verify", "/lib/systemd/system/zwibbler.service")
    assert rc == 0, out

    # Tests bind loopback only: the admin's edit of the conffile, kept by the upgrade.
    conf = root.path("/etc/zwibbler.conf")
    text = conf.read_text()
    assert "ServerBindAddress=0.0.0.0\n" in text
    text = text.replace("ServerBindAddress=0.0.0.0\n",
                        "# edited by the admin\nServerBindAddress=127.0.0.1\n")
    if "/asan/" in BIN or "/tsan/" in BIN:
        # A sanitized binary with the default 10000 worker threads is slow to start.
        text += "MaxConnections=256\n"
    conf.write_text(text)

    port = free_port()
    log = tmp_path / "installed.log"
    proc = start_installed(root, background, log, port)
    # Started as root, it runs as the package's user, with no capabilities left.
    status = Path("/proc/%d/status" % proc.pid).read_text()
    assert re.search(r"^Uid:\t%d\t%d\t%d\t%d$" % (uid, uid, uid, uid), status, re.M), status
    assert re.search(r"^CapEff:\t0+$", status, re.M), status
    url = "ws://127.0.0.1:%d/socket" % port
    zw.run(full_session(url, "via-deb"))
    assert proc.stop() == 0, read_log(log)

    # Its files belong to the user; the log has the session and no document bytes.
    lmdb = root.path("/var/lib/zwibbler/lmdb")
    assert lmdb.is_dir()
    for f in [lmdb, *lmdb.iterdir()]:
        assert f.stat().st_uid == uid, f
    logfile = root.path("/var/log/zwibbler/zwibbler.log")
    assert logfile.stat().st_uid == uid
    text = logfile.read_text()
    assert "via-deb" in text and "running as user zwibbler" in text, text
    assert "hello" not in text and "cursor" not in text, text

    # Upgrade: config edit and documents survive; the service is enabled still.
    out = root.ok("dpkg", "-i", deb2)
    assert "0.1.1" in root.ok("dpkg-query", "-W", "-f=${Version}", "zwibbler")
    assert "# edited by the admin\nServerBindAddress=127.0.0.1\n" in conf.read_text()
    assert os.path.islink(wants)
    proc = start_installed(root, background, log, port)
    doc = zw.run(zw.fetch_doc(url, "via-deb"))
    assert doc is not None and doc.startswith(b"hello world!"), doc
    assert proc.stop() == 0, read_log(log)

    # Purge: program, config, unit and logs go; documents and the user stay.
    root.ok("dpkg", "--purge", "zwibbler")
    rc, out = root.run("sh", "-c", "test ! -e /usr/bin/zwibbler && test ! -e /etc/zwibbler.conf"
                       " && test ! -e /lib/systemd/system/zwibbler.service"
                       " && test ! -e /etc/systemd/system/multi-user.target.wants/zwibbler.service"
                       " && test ! -e /var/log/zwibbler && test -d /var/lib/zwibbler/lmdb"
                       " && getent passwd zwibbler")
    assert rc == 0, out
    rc, out = root.run("dpkg-query", "-W", "zwibbler")
    assert rc != 0, out
    # The machine itself gained nothing.
    assert _host_user("zwibbler") == host_had_user
    assert not Path("/usr/bin/zwibbler").exists() or host_had_user


def _host_user(name):
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


def test_install_command_without_and_with_systemd(debs, root):
    """`zwibbler --install` / `--uninstall` as the reference has them. Without systemd
    they change nothing and say why; with systemd (simulated: /run/systemd/system in
    the chroot, and systemctl told it is offline) they write, enable and remove the
    unit."""
    deb, _ = debs
    root.ok("dpkg", "-i", deb)
    rc, out = root.run("/usr/bin/zwibbler", "--install")
    assert rc != 0 and "systemd is not running" in out, out
    assert not root.path("/etc/systemd/system/zwibbler.service").exists()

    # systemctl then edits files only (enable/disable) and skips what needs a running
    # manager (daemon-reload, restart), as in an image build.
    offline = dict(os.environ, SYSTEMD_OFFLINE="1")
    root.path("/run/systemd/system").mkdir(parents=True)
    out = root.ok("/usr/bin/zwibbler", "--install", "--config", "/etc/zwibbler.conf", env=offline)
    unit = root.path("/etc/systemd/system/zwibbler.service").read_text()
    assert "ExecStart=/usr/bin/zwibbler --config /etc/zwibbler.conf\n" in unit
    # The same unit as the package's, apart from where it was installed from.
    assert unit == (REPO / "conf" / "zwibbler.service").read_text()
    assert os.path.islink(root.path("/etc/systemd/system/multi-user.target.wants/zwibbler.service"))
    out = root.ok("/usr/bin/zwibbler", "--uninstall", env=offline)
    assert "removed /etc/systemd/system/zwibbler.service" in out, out
    rc, out = root.run("test", "-e", "/etc/systemd/system/zwibbler.service")
    assert rc != 0
    rc, out = root.run("/usr/bin/zwibbler", "--uninstall", env=offline)
    assert rc != 0 and "nothing to remove" in out, out


def test_logrotate_config_parses(debs, root):
    deb, _ = debs
    root.ok("dpkg", "-i", deb)
    rc, out = root.run("sh", "-c", "command -v logrotate")
    if rc != 0:
        pytest.skip("logrotate is not installed here")
    out = root.ok("logrotate", "-d", "/etc/logrotate.d/zwibbler")
    assert "error" not in out.lower(), out
