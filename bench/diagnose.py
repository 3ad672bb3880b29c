"""Diagnosis: what each tool says first when a worker dies or raises, and how fast.

    python bench/diagnose.py [--runs 3] [--raytrain-runs 1] [--modes sigkill,exception,uneven,straggler]

The same 2-worker gloo job under rafter, torchrun and Ray Train 2.60 (its own venv, or RAYTRAIN_VENV), with
a 5 s collective timeout, and one fault on rank 1:
  sigkill / exception: at step 3 it SIGKILLs itself or raises RuntimeError;
  uneven: DDP, rank 1 has 7 batches and rank 0 has 8; rank 1 leaves the loop and returns;
  straggler: at step 3 it sleeps 25 s before the next gradient all-reduce (past the 5 s timeout).
Prints, side by side, the first line of the error each one shows the user, and the detection time: from
the fault (for uneven: rank 1 leaving the loop; for straggler: the start of its sleep, so the figure
includes the 5 s timeout) to the tool reporting the failure (for rafter, fit() raising; for torchrun and
Ray Train, the process exiting with the error printed).
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
    parser.add_argument("--modes", default="sigkill,exception,uneven,straggler")
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
    for mode in args.modes.split(","):
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
    if not (ray_py and args.raytrain_runs):
        print("\nRay Train 2.60: not run (no venv: bench/baselines/setup_raytrain_venv.sh, or RAYTRAIN_VENV=...)")


if __name__ == "__main__":
    main()
