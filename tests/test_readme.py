"""The README runs as written: its code blocks are extracted and run, so it can't drift from the code.

A fenced block preceded by a marker line is handled by the marker:
  <!-- readme-test: python -->        run as a script (python), in a fresh HOME, from the repository root
  <!-- readme-test: bash -->          run with bash -e, `rafter` on PATH (this interpreter's python -m rafter)
  <!-- readme-test: job (...) -->     a ```yaml job: saved as job.yaml beside a copy of examples/quickstart_func.py
                                      and run with `rafter run job.yaml`
  <!-- readme-test: skip (reason) --> not run (commands that install packages or run the tests themselves)
Unmarked ```python blocks must at least compile. Paths the README names must exist in the repository.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, NamedTuple, Optional

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MARKER = re.compile(r"^<!--\s*readme-test:\s*(\w+)(.*?)-->\s*$")
FENCE = re.compile(r"^```(\w*)")


class Block(NamedTuple):
    line: int  # 1-based line of the opening fence
    lang: str
    marker: Optional[str]
    text: str


def readme_blocks(text: str) -> List[Block]:
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        start = i
        prev = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.match(prev)
        i += 1
        body = []
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        assert i < len(lines), f"README.md:{start + 1}: a ``` block is never closed"
        blocks.append(Block(start + 1, fence.group(1), marker.group(1) if marker else None, "\n".join(body) + "\n"))
        i += 1
    return blocks


BLOCKS = readme_blocks(README.read_text())
KINDS = {"python": "python", "bash": "bash", "job": "yaml"}  # marker -> the block's language
RUNNABLE = [b for b in BLOCKS if b.marker in KINDS]


def test_markers_are_known_and_match_the_block_language():
    assert RUNNABLE, "the README has no block marked <!-- readme-test: python --> or bash"
    for b in BLOCKS:
        if b.marker is None:
            continue
        assert b.marker in (*KINDS, "skip"), (
            f"README.md:{b.line}: unknown marker readme-test: {b.marker} (one of {', '.join(KINDS)}, skip)")
        if b.marker != "skip":
            assert b.lang == KINDS[b.marker], f"README.md:{b.line}: marked {b.marker} but the block is ```{b.lang}"


def test_unmarked_python_blocks_compile():
    for b in BLOCKS:
        if b.lang == "python" and b.marker is None:
            try:
                ast.parse(b.text)
            except SyntaxError as e:
                pytest.fail(f"README.md:{b.line + (e.lineno or 0)}: the ```python block does not parse: {e.msg}")


def test_top_snippet_is_runnable():
    first_python = next(b for b in BLOCKS if b.lang == "python")
    assert first_python.marker == "python", f"README.md:{first_python.line}: the first example must be run by this test"


def test_no_paths_outside_the_repository_and_named_files_exist():
    text = README.read_text()
    outside = sorted({m.group(0) for m in re.finditer(r"\.\./[\w./-]+", text)})
    assert outside == [], f"README.md names paths outside a clone of the repository: {outside}"
    links = re.findall(r"\]\(([^)#\s]+)\)", text)
    named = re.findall(r"`((?:examples|bench|tests|src|\.ci)/[\w./-]*\w)", text)
    files = [p for p in links if "://" not in p] + named + re.findall(r"\b([A-Z]+\.md)\b", text)
    missing = sorted({p for p in files if not (ROOT / p).exists()})
    assert missing == [], f"README.md names files that are not in the repository: {missing}"


@pytest.fixture
def bin_dir(tmp_path):
    """A folder with a `rafter` command that runs this interpreter's `python -m rafter`."""
    path = tmp_path / "bin"
    path.mkdir()
    shim = path / "rafter"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m rafter "$@"\n')
    shim.chmod(0o755)
    return path


@pytest.mark.parametrize("block", RUNNABLE, ids=[f"line{b.line}-{b.marker}" for b in RUNNABLE])
def test_readme_block_runs(block, tmp_path, bin_dir):
    home = tmp_path / "home"
    home.mkdir()
    # As a new user's shell would be: no Ray address or rafter settings left over from other tests.
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS" and not k.startswith("RAFTER_")}
    env.update(HOME=str(home), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    src = str(ROOT / "src")
    env["PYTHONPATH"] = os.pathsep.join([src] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    cwd = ROOT
    if block.marker == "python":
        script = tmp_path / f"readme_line{block.line}.py"
        cmd = [sys.executable, str(script)]
    elif block.marker == "bash":
        script = tmp_path / f"readme_line{block.line}.sh"
        cmd = ["bash", "-eo", "pipefail", str(script)]
    else:
        cwd = tmp_path / "job"
        cwd.mkdir()
        shutil.copy(ROOT / "examples" / "quickstart_func.py", cwd)
        script = cwd / "job.yaml"
        cmd = [sys.executable, "-m", "rafter", "run", str(script)]
    script.write_text(block.text)
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, (
        f"README.md:{block.line}: the ```{block.lang} block failed (exit {proc.returncode}) when run as written\n"
        f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}")
