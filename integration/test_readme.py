"""Every shell example of README.md and docs/*.md runs as written.

Fenced blocks are read by their info string:
- ```sh: a script; it runs with `bash -e -o pipefail` and must exit 0;
- ```console: `$ COMMAND` lines, each followed by the exact output it must print (each command must exit 0);
- anything else (```text, ...) is a listing, not run; a fence without an info string is an error, so no shell
  example can slip through unmarked.
A sh/console block that cannot run here (it installs packages, builds, edits /etc/fstab, needs a network store) is
preceded by the line `<!-- not run: REASON -->`.

Each block runs in a fresh temporary directory holding `data/sample.h5ad` (a copy of the bundled sample store),
with `annfs` (the binary under test) and the oracle venv's `python3` first on the PATH; anything it leaves mounted
there is unmounted afterwards.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import ANNFS_BIN, REPO, force_unmount, need_fuse

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
RUNNABLE = {"sh", "console"}
NOT_RUN = re.compile(r"^<!-- not run: (.+) -->$")
FENCE = re.compile(r"^```(.*)$")


@dataclass
class Block:
    doc: Path
    line: int  # 1-based line of the opening fence
    lang: str
    body: str
    not_run: str | None

    @property
    def id(self) -> str:
        return f"{self.doc.relative_to(REPO)}:{self.line}"


def blocks(doc: Path) -> list[Block]:
    """The fenced blocks of a Markdown file; raises ValueError on an unlabelled or unclosed fence."""
    lines = doc.read_text().splitlines()
    out, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        lang = m.group(1).strip()
        if not lang:
            raise ValueError(f"{doc.relative_to(REPO)}:{i + 1}: a fence without an info string (sh, console, text)")
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), None)
        if end is None:
            raise ValueError(f"{doc.relative_to(REPO)}:{i + 1}: unclosed fence")
        prev = lines[i - 1] if i > 0 else ""
        note = NOT_RUN.match(prev)
        out.append(Block(doc, i + 1, lang, "\n".join(lines[i + 1:end]) + "\n", note.group(1) if note else None))
        i = end + 1
    return out


def all_blocks() -> list[Block]:
    return [b for d in DOCS for b in blocks(d)]


def console_steps(body: str) -> list[tuple[str, str]]:
    """(command, expected output) pairs of a console block."""
    steps: list[tuple[str, list[str]]] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif steps:
            steps[-1][1].append(line)
        else:
            raise ValueError(f"output before the first command: {line!r}")
    return [(cmd, "".join(l + "\n" for l in out)) for cmd, out in steps]


def test_block_parser_and_labels():
    """Every fence is labelled; runnable languages are recognised; the console parser splits commands."""
    found = all_blocks()
    runnable = [b for b in found if b.lang in RUNNABLE and b.not_run is None]
    assert runnable, "no runnable example found"
    assert all(b.lang not in ("bash", "shell", "zsh") for b in found), \
        [b.id for b in found if b.lang in ("bash", "shell", "zsh")]  # write sh or console
    assert console_steps("$ a\nx\ny\n$ b\n") == [("a", "x\ny\n"), ("b", "")]
    with pytest.raises(ValueError):
        console_steps("x\n$ a\n")


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "data").mkdir()
    shutil.copy2(REPO / "data" / "sample.h5ad", tmp_path / "data" / "sample.h5ad")
    bindir = tmp_path / ".bin"
    bindir.mkdir()
    (bindir / "annfs").symlink_to(ANNFS_BIN.resolve())
    env = {**os.environ,
           "PATH": f"{bindir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "XDG_CACHE_HOME": str(tmp_path / ".cache"), "LC_ALL": "C.UTF-8"}
    yield tmp_path, env
    with open("/proc/self/mounts") as f:
        mounted = [line.split()[1].replace("\\040", " ") for line in f]
    for m in reversed(mounted):
        if m.startswith(str(tmp_path) + "/"):
            force_unmount(Path(m))


RUN_BLOCKS = [b for b in all_blocks() if b.lang in RUNNABLE and b.not_run is None]


@need_fuse
@pytest.mark.parametrize("block", RUN_BLOCKS, ids=[b.id for b in RUN_BLOCKS])
def test_example_runs_as_written(block, workdir):
    cwd, env = workdir
    if block.lang == "sh":
        r = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block.body], cwd=cwd, env=env,
                           capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, f"{block.id} exited {r.returncode}\n{block.body}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
        return
    for cmd, want in console_steps(block.body):
        r = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], cwd=cwd, env=env,
                           capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, f"{block.id}: `{cmd}` exited {r.returncode}\nstderr:\n{r.stderr}"
        assert r.stdout == want, f"{block.id}: `{cmd}` printed\n{r.stdout}\ninstead of\n{want}"


LINKED_DOCS = [*DOCS, REPO / "systemd" / "README.md", REPO / "integration" / "README.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_links_stay_inside_the_repository():
    """Every relative Markdown link names an existing file inside the repository (no ../shared/...)."""
    bad = []
    for doc in LINKED_DOCS:
        for n, line in enumerate(doc.read_text().splitlines(), 1):
            for target in LINK.findall(line):
                if re.match(r"^[a-z]+://", target) or target.startswith("mailto:"):
                    continue
                path = target.split("#", 1)[0]
                resolved = (doc.parent / path).resolve() if path else doc
                if not resolved.is_relative_to(REPO.resolve()) or not resolved.exists():
                    bad.append(f"{doc.relative_to(REPO)}:{n}: {target}")
    assert bad == [], bad
