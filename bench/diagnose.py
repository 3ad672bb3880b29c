"""Diagnosis: what each tool says first when a worker dies or raises, and how fast.

    python bench/diagnose.py [--runs 3] [--raytrain-runs 1]

The same 2-worker gloo job (rank 1 at step 3: SIGKILL itself, or raise RuntimeError) under rafter,
torchrun and Ray Train 2.60 (its own venv). Prints, side by side, the first line of the error each one
shows the user, and the detection time: from the fault to the tool reporting the failure (for rafter,
fit() raising; for torchrun and Ray Train, the process exiting with the error printed).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "baselines"))

from _common import BIN, ROOT, machine, median, raytrain_python, table  # noqa: E402

import subprocess  # noqa: E402


def _run(cmd, death):
    env = dict(os.environ, BENCH_DEATH_FILE=death, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    ended = time.time()
    return proc.stdout + proc.stderr, ended


def _first_line(tool: str, text: str) -> str:
    if tool == "rafter":
        m = re.search(r"^FIRST_LINE=(.*)$", text, re.M)
        return m.group(1) if m else "?"
    try:
        import firstline
    except ImportError:
        return "?"
    return firstline.first_error_line(text, "torchrun" if tool == "torchrun" else "ray") or "?"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--raytrain-runs", type=int, default=1)
    args = parser.parse_args()
    py = sys.executable
    ray_py = raytrain_python()
    tools = {
        "rafter": (lambda mode: [py, "bench/rafter_diagnose_job.py", mode], args.runs),
        "torchrun": (lambda mode: [os.path.join(BIN, "torchrun"), "--standalone", "--nproc_per_node=2",
                                   "bench/baselines/torchrun_diagnose.py", mode], args.runs),
    }
    if ray_py and args.raytrain_runs:
        tools["Ray Train 2.60"] = (lambda mode: [ray_py, "bench/baselines/raytrain_diagnose.py", mode],
                                   args.raytrain_runs)
    rows = []
    for mode in ("sigkill", "exception"):
        for tool, (cmd_for, runs) in tools.items():
            lines, detect = [], []
            for _ in range(runs):
                with tempfile.TemporaryDirectory() as d:
                    death = os.path.join(d, "death")
                    text, ended = _run(cmd_for(mode), death)
                    fault = float(open(death).read())
                    m = re.search(r"^DETECT_S=([\d.]+)$", text, re.M)
                    detect.append(float(m.group(1)) if m else ended - fault)
                    lines.append(_first_line(tool, text))
            first = lines[0].replace("|", "\\|")
            rows.append([mode, tool, f"{median(detect):.2f}", f"`{first[:200]}`"])
    print(f"# Diagnosis benchmark ({machine()})\n")
    print(table(rows, ["fault on rank 1", "tool", "detection s (median)", "first line shown"]))


if __name__ == "__main__":
    main()
