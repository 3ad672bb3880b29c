"""Shared helpers for bench/ scripts: timing whole commands, medians, the Ray Train venv."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


def raytrain_python() -> Optional[str]:
    """The Ray Train 2.60 venv's python (bench/baselines/setup_raytrain_venv.sh makes it), or None."""
    for venv in (os.environ.get("RAYTRAIN_VENV"), "/work/venvs/raytrain",
                 os.path.expanduser("~/.cache/rafter-bench/raytrain-venv")):
        if venv and os.path.exists(os.path.join(venv, "bin", "python")):
            return os.path.join(venv, "bin", "python")
    return None


def timed(cmd: Sequence[str], env: Optional[Dict[str, str]] = None, timeout: float = 600, cwd: str = ROOT):
    """Run a command; return (wall seconds, combined output). Raises if it fails."""
    t0 = time.perf_counter()
    proc = subprocess.run(list(cmd), cwd=cwd, env=dict(os.environ, **(env or {})), capture_output=True,
                          text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-3000:]}")
    return wall, out


def median(xs: List[float]) -> float:
    return statistics.median(xs)


def table(rows: List[List[str]], header: List[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def machine() -> str:
    import platform

    import torch

    return (f"{os.cpu_count()} CPUs, {platform.python_version()}, torch {torch.__version__}, "
            f"{time.strftime('%Y-%m-%d %H:%M')}")
