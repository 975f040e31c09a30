"""libzwibbler.a exports the public API only: zwibbler_* (zwibbler.h), store_* (store.h,
lmdb_store.h) and CivetWeb's mg_* (an embedder mounts on its own CivetWeb). Every other
name in the archive is local, so a program can neither call the server's internals nor
clash with them by defining a function of the same name (log_msg, config_load, ...)."""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import BIN

LIB = os.environ.get("ZWIBBLER_LIB") or str(Path(BIN).parent / "libzwibbler.a")
LIBS = ("-llmdb -lcjson -lsqlite3 -lhiredis -lcurl -lssl -lcrypto -lz -ldl -lm -pthread").split()

ALLOWED = re.compile(r"^(zwibbler_|store_|mg_)")
# What an embedder is documented to call (zwibbler.h, store.h, lmdb_store.h), and a
# few of CivetWeb's.
PUBLIC = ["zwibbler_create", "zwibbler_mount", "zwibbler_listen", "zwibbler_destroy",
          "store_open", "store_lmdb_open", "store_sqlite_open", "store_redis_open",
          "store_strerror", "store_token_clear", "store_lmdb_stats",
          "mg_start", "mg_stop", "mg_set_request_handler", "mg_write"]
# Internal names, some with a public-looking prefix: the binary's entry point and our
# CivetWeb extensions.
INTERNAL = ["log_msg", "config_load", "client_unref", "hub_create", "codec_encode_append",
            "auth_check_config", "redis_parse_server", "web_assets", "zwibbler_start",
            "mg_connection_socket", "mg_zw_set_ws_limits"]


def defined_globals(archive):
    out = subprocess.run(["nm", "-g", "--defined-only", archive], check=True,
                         capture_output=True, text=True).stdout
    names = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3:
            names.add(parts[2])
    return names


@pytest.fixture(scope="module")
def exported():
    if not os.path.exists(LIB):
        pytest.fail("%s not built (make builds it; ZWIBBLER_LIB names another)" % LIB)
    return defined_globals(LIB)


def test_only_public_names_are_exported(exported):
    stray = sorted(n for n in exported if not ALLOWED.match(n))
    assert not stray, "exported beyond zwibbler_/store_/mg_: %s" % ", ".join(stray)
    assert not exported & set(INTERNAL), sorted(exported & set(INTERNAL))
    missing = [n for n in PUBLIC if n not in exported]
    assert not missing, "public API not exported: %s" % ", ".join(missing)


def sanitizer_flags(archive):
    """The flags a program needs to link an instrumented build of the archive."""
    undefined = subprocess.run(["nm", "-u", archive], check=True, capture_output=True,
                               text=True).stdout
    if "__tsan_" in undefined:
        return ["-fsanitize=thread"]
    if "__asan_" in undefined or "__ubsan_" in undefined:
        return ["-fsanitize=address,undefined"]
    return []


def link(tmp_path, source):
    cc = shutil.which("cc")
    if not cc:
        pytest.skip("no C compiler")
    src, exe = tmp_path / "prog.c", tmp_path / "prog"
    src.write_text(source)
    return subprocess.run([cc] + sanitizer_flags(LIB) + ["-o", str(exe), str(src), LIB] + LIBS,
                          capture_output=True, text=True, timeout=120)


def test_internal_names_cannot_be_linked(tmp_path, exported):
    p = link(tmp_path, """
        #include <stddef.h>
        void zwibbler_destroy(void *z);
        void log_msg(int level, const char *fmt, ...);
        int main(void) { zwibbler_destroy(NULL); log_msg(3, "x"); return 0; }
    """)
    assert p.returncode != 0
    assert "undefined reference to `log_msg'" in p.stderr, p.stderr


def test_program_may_reuse_internal_names(tmp_path, exported):
    """An embedder's own log_msg or config_load does not clash with the server's."""
    p = link(tmp_path, """
        #include <stddef.h>
        void zwibbler_destroy(void *z);
        int log_msg(void) { return 1; }
        int config_load(void) { return 2; }
        int hub_create(void) { return 3; }
        int main(void) { zwibbler_destroy(NULL); return log_msg() + config_load() + hub_create() - 6; }
    """)
    assert p.returncode == 0, p.stderr
    assert subprocess.run([str(tmp_path / "prog")], timeout=30).returncode == 0
