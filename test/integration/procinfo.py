"""What /proc says about a running server (fd count, threads, RSS), and whether the
binary under test carries a sanitizer runtime (whose shadow memory and quarantine of
freed blocks make RSS meaningless as a leak or bound check)."""

import functools
import os

from conftest import BIN


def status(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def rss_kb(pid):
    return int(status(pid)["VmRSS"].split()[0])


def counts(pid):
    """(open file descriptors, threads, VmRSS in kB)."""
    st = status(pid)
    return (len(os.listdir("/proc/%d/fd" % pid)), int(st["Threads"]),
            int(st["VmRSS"].split()[0]))


@functools.lru_cache()
def sanitizer():
    """'asan', 'tsan' or None for the server binary."""
    try:
        with open(BIN, "rb") as f:
            data = f.read()
    except OSError:
        return None
    if b"__tsan_init" in data:
        return "tsan"
    if b"__asan_init" in data:
        return "asan"
    return None
