"""Launch speed: the seed quickstart under rafter vs `import torch` vs torchrun (vs Ray Train, optional).

    python bench/launch.py [--runs 5] [--raytrain-runs 1]

Each command runs --runs times, interleaved round-robin so drift hits all alike; medians are compared.
- rafter:   python examples/quickstart.py  (the brief's script, 4 workers, gloo; byte-identical to
            the script of the user brief)
- torch:    python -c "import torch"
- torchrun: torchrun --standalone --nproc_per_node=4 bench/baselines/torchrun_quickstart.py
            (the same 4-worker DDP loop as a plain script)
- Ray Train 2.60 (its own venv, when present): bench/baselines/raytrain_quickstart.py
Targets (2-core machine): rafter <= 1.8 x import torch; torchrun / rafter >= 4.
"""

from __future__ import annotations

import argparse
import os
import sys

from _common import BIN, machine, median, raytrain_python, table, timed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--raytrain-runs", type=int, default=1)
    args = parser.parse_args()
    py = sys.executable
    env = {"OMP_NUM_THREADS": "1"}
    cmds = {
        "rafter quickstart": [py, "examples/quickstart.py"],
        "python -c 'import torch'": [py, "-c", "import torch"],
        "torchrun quickstart": [os.path.join(BIN, "torchrun"), "--standalone", "--nproc_per_node=4",
                                "bench/baselines/torchrun_quickstart.py"],
    }
    times = {name: [] for name in cmds}
    for _ in range(args.runs):
        for name, cmd in cmds.items():
            wall, out = timed(cmd, env)
            if name.startswith("rafter"):
                assert "Training finished. Last loss:" in out, out
            times[name].append(wall)
    ray_py = raytrain_python()
    if ray_py and args.raytrain_runs:
        times["Ray Train 2.60 quickstart"] = [
            timed([ray_py, "bench/baselines/raytrain_quickstart.py"], env, timeout=900)[0]
            for _ in range(args.raytrain_runs)]
    med = {k: median(v) for k, v in times.items()}
    rafter, torch_t, torchrun = med["rafter quickstart"], med["python -c 'import torch'"], med["torchrun quickstart"]
    rows = [[k, f"{med[k]:.2f}", " ".join(f"{x:.2f}" for x in v), f"{med[k] / rafter:.2f}"] for k, v in times.items()]
    print(f"# Launch benchmark ({machine()}; median of {args.runs})\n")
    print(table(rows, ["command", "median s", "runs s", "x rafter"]))
    print()
    print(f"rafter / import torch      = {rafter / torch_t:.2f}  (target <= 1.8)")
    print(f"torchrun / rafter          = {torchrun / rafter:.2f}  (target >= 4)")
    if "Ray Train 2.60 quickstart" in med:
        print(f"Ray Train 2.60 / rafter    = {med['Ray Train 2.60 quickstart'] / rafter:.1f}")


if __name__ == "__main__":
    main()
