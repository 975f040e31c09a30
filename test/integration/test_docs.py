"""The shell examples of README.md and docs/*.md (docs/testing.md, "The shell examples
in these pages"): every block fenced ```sh is run against a server started here, every
block fenced ```sh example is listed as skipped (it needs a real host), and any other
shell-like or untagged fence fails, so that no command in the docs goes unchecked by
accident.

Runnable blocks run in `bash -e -o pipefail`, in a scratch folder shared by the blocks
of one page (in page order), with the binary under test first on PATH as `zwibbler`,
and `localhost:3000` pointed at the test's server."""

import os
import re
import subprocess
from pathlib import Path

import pytest

from conftest import BIN, REPO, Server

PAGES = [REPO / "README.md"] + sorted((REPO / "docs").glob("*.md"))
SHELLISH = {"bash", "shell", "console", "zsh", "sh-session", "shellsession"}
OTHER_LANGS = {"ini", "nginx", "apache", "c", "yaml", "http", "sql", "text", "json",
               "python", "javascript", "html"}
FENCE = re.compile(r"^```(.*)$")
BLOCK_TIMEOUT = 60
SECRETS = {"SecretUser": "backend", "SecretPassword": "a-long-random-password"}


def blocks(page):
    """(line number, info string, text) of every fenced block of a page."""
    out, info, start, body = [], None, 0, []
    for n, line in enumerate(page.read_text().splitlines(), 1):
        m = FENCE.match(line)
        if info is None and m:
            info, start, body = m.group(1).strip(), n, []
        elif info is not None and line.startswith("```"):
            out.append((start, info, "\n".join(body) + "\n"))
            info = None
        elif info is not None:
            body.append(line)
    assert info is None, "%s: a fence opened at line %d is never closed" % (page.name, start)
    return out


def rel(page):
    return str(page.relative_to(REPO))


def collect():
    run, examples, bad = [], [], []
    for page in PAGES:
        for line, info, text in blocks(page):
            where = "%s:%d" % (rel(page), line)
            if info == "sh":
                run.append(pytest.param(page, line, text, id=where))
            elif info == "sh example":
                examples.append(pytest.param(page, line, text, id=where))
            elif info.split()[0:1] and info.split()[0] in OTHER_LANGS:
                continue
            elif info == "" or info.split()[0] in SHELLISH or info.startswith("sh"):
                bad.append("%s: fence ```%s: tag shell code ```sh (run by this test) or "
                           "```sh example (needs a real host), anything else with its "
                           "language" % (where, info))
            else:
                bad.append("%s: unknown fence language ```%s (add it to OTHER_LANGS in "
                           "test_docs.py if it is not shell)" % (where, info))
    return run, examples, bad


RUN, EXAMPLES, BAD = collect()


def test_every_shell_block_is_run_or_marked():
    assert not BAD, "\n".join(BAD)
    assert len(RUN) >= 5, "too few runnable blocks found: the fence convention changed?"


def anchors(page):
    """The anchors of a page's headings, as GitHub makes them."""
    out = set()
    for h in re.findall(r"^#+ (.*)$", page.read_text(), re.M):
        slug = re.sub(r"[^\w\- ]", "", h.strip().lower().replace("`", ""))
        out.add(slug.replace(" ", "-"))
    return out


def test_links_point_into_the_repository():
    """Relative links of the pages resolve to files of the repository, and #anchors to
    headings of the page linked; no page points outside the repository."""
    problems = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            path = (page.parent / file).resolve() if file else page
            if not str(path).startswith(str(REPO) + os.sep):
                problems.append("%s: %s leaves the repository" % (rel(page), target))
            elif not path.exists():
                if path.name not in OWNED_ELSEWHERE:
                    problems.append("%s: %s does not exist" % (rel(page), target))
            elif anchor and path.suffix == ".md" and anchor not in anchors(path):
                problems.append("%s: %s: no such heading in %s" % (rel(page), target, path.name))
    assert not problems, "\n".join(problems)


# Pages other branches write; links to them are checked once they exist.
OWNED_ELSEWHERE = {"cluster.md"}


@pytest.fixture(scope="module")
def docs_server(tmp_path_factory):
    if not os.path.exists(BIN):
        pytest.skip("server binary %s not built" % BIN)
    s = Server(tmp_path_factory.mktemp("docs"), "srv",
               dict(SECRETS, MetricsPath="/metrics", Expiration="never"))
    s.start()
    yield s
    s.stop()
    if s.problems:
        pytest.fail("; ".join(s.problems) + "\n" + s.log_tail(), pytrace=False)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """One scratch folder per page, and a bin folder with `zwibbler` in it."""
    root = tmp_path_factory.mktemp("docs-scratch")
    bindir = root / "bin"
    bindir.mkdir()
    (bindir / "zwibbler").symlink_to(os.path.abspath(BIN))
    dirs = {}

    def get(page):
        if page not in dirs:
            dirs[page] = root / rel(page).replace("/", "_")
            dirs[page].mkdir()
        return dirs[page]
    return bindir, get


@pytest.mark.parametrize("page,line,text", RUN)
def test_shell_block(page, line, text, docs_server, scratch):
    bindir, folder = scratch
    script = text.replace("localhost:3000", "127.0.0.1:%d" % docs_server.port)
    env = dict(os.environ, PATH="%s:%s" % (bindir, os.environ.get("PATH", "")))
    try:
        p = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=folder(page),
                           env=env, stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=BLOCK_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail("%s:%d: still running after %d s" % (rel(page), line, BLOCK_TIMEOUT))
    assert p.returncode == 0, "%s:%d exited %d\n--- block ---\n%s--- stdout ---\n%s--- stderr ---\n%s" % (
        rel(page), line, p.returncode, script, p.stdout.decode(errors="replace"),
        p.stderr.decode(errors="replace"))
    assert docs_server.alive(), "the server died during %s:%d\n%s" % (
        rel(page), line, docs_server.log_tail())


@pytest.mark.parametrize("page,line,text", EXAMPLES)
def test_example_block(page, line, text):
    pytest.skip("example for a real host (```sh example)")
