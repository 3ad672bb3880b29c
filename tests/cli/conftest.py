import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
FUNCS = Path(__file__).resolve().parent / "train_funcs.py"


def rafter(*args, cwd=None, env=None, timeout=150):
    """Run ``python -m rafter ARGS`` as a real subprocess; returns the CompletedProcess (text)."""
    full_env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "rafter", *map(str, args)],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def write(tmp_path):
    """write(name, text) -> Path, under the test's tmp_path."""

    def _write(name, text):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    return _write


@pytest.fixture
def home(tmp_path):
    """An empty HOME for the subprocess, so the default storage (~/rafter_results) lands in the test's folder."""
    path = tmp_path / "home"
    path.mkdir()
    return {"HOME": str(path)}
