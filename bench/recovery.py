"""Recovery: time from a worker's death to the first training step of the restarted group.

    python bench/recovery.py [--runs 5] [--raytrain-runs 1]

The same 2-worker job (gloo DDP, a small MLP; rank 1 SIGKILLs itself at step 5 of the first attempt)
under rafter (FailureConfig(max_failures=1)), `torchrun --max-restarts=1`, and Ray Train 2.60
(FailureConfig(max_failures=1), its own venv). Each job writes the death time and the restarted
group's first-step time; medians over the runs are compared. Target: rafter <= 1.5 s and faster than both.

The preemption case (rafter only: torchrun has no notice to give, and Ray Train's get_preemption_info
follows Ray node drains, which a single machine can't make): rank 1 gets a SIGTERM at step 5, every rank
reports a just-in-time checkpoint on the notice, and the group restarts from it
(bench/rafter_preemption_job.py): SIGTERM -> checkpoint written, and SIGTERM -> first step of the new group.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile

from _common import BIN, machine, median, raytrain_python, table, timed


def _one(cmd_for):
    """Seconds from death to the restarted group's first step, or None if the job did not recover."""
    with tempfile.TemporaryDirectory() as d:
        death, first = os.path.join(d, "death"), os.path.join(d, "first")
        cmd, env = cmd_for(death, first)
        try:
            timed(cmd, dict(env, BENCH_DEATH_FILE=death, BENCH_FIRST_STEP_FILE=first, OMP_NUM_THREADS="1"),
                  timeout=900)
        except RuntimeError as exc:
            print(f"  (a run failed to recover: {str(exc).splitlines()[0]})", file=sys.stderr)
            return None
        return float(open(first).read()) - float(open(death).read())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--raytrain-runs", type=int, default=1)
    args = parser.parse_args()
    py = sys.executable
    sides = {
        "rafter (max_failures=1)": lambda d, f: ([py, "bench/rafter_recovery_job.py", d, f], {}),
        # TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1: without it torch 2.13's torchrun often fails its restart
        # (the new ranks read the dead attempt's addresses; see bench/baselines/NOTES.md).
        "torchrun --max-restarts=1": lambda d, f: ([os.path.join(BIN, "torchrun"), "--standalone",
                                                    "--nproc_per_node=2", "--max-restarts=1",
                                                    "bench/baselines/torchrun_recovery.py"],
                                                   {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}),
    }
    times = {k: [] for k in sides}
    for _ in range(args.runs):
        for name, cmd_for in sides.items():
            times[name].append(_one(cmd_for))
    ray_py = raytrain_python()
    if ray_py and args.raytrain_runs:
        times["Ray Train 2.60 (max_failures=1)"] = [
            _one(lambda d, f: ([ray_py, "bench/baselines/raytrain_recovery.py"], {}))
            for _ in range(args.raytrain_runs)]
    saved, restarted = [], []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as d:
            paths = [os.path.join(d, n) for n in ("sigterm", "saved", "first")]
            _, out = timed([py, "bench/rafter_preemption_job.py", *paths], {"OMP_NUM_THREADS": "1"}, timeout=900)
            got = json.loads(out.split("PREEMPTION ", 1)[1].splitlines()[0])
            saved.append(got["saved_s"])
            restarted.append(got["first_step_s"])
    med = {k: median([x for x in v if x is not None] or [float("nan")]) for k, v in times.items()}
    ours = med["rafter (max_failures=1)"]
    rows = [[k, f"{med[k]:.2f}", " ".join("failed" if x is None else f"{x:.2f}" for x in v), f"{med[k] / ours:.1f}"]
            for k, v in times.items()]
    print(f"# Recovery benchmark ({machine()})\n")
    print(table(rows, ["job", "median s death -> first step", "runs s", "x rafter"]))
    print(f"\nrafter recovery = {ours:.2f} s (target <= 1.5 s and faster than both)")
    print(f"\nrafter preemption (rank 1 SIGTERMed at step 5; median of {args.runs}):")
    print(f"  SIGTERM -> just-in-time checkpoint written   {median(saved):.2f} s  (runs: "
          f"{' '.join(f'{x:.2f}' for x in saved)})")
    print(f"  SIGTERM -> first step of the restarted group {median(restarted):.2f} s  (runs: "
          f"{' '.join(f'{x:.2f}' for x in restarted)})")


if __name__ == "__main__":
    main()
