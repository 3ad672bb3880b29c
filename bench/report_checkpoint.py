"""``train.report(checkpoint=...)`` latency as the number of ranks grows, storage on the checkpoints' filesystem.

    python bench/report_checkpoint.py [--ranks 2,8] [--reports 30] [--mb 4] [--step 0.05] [--dir PATH]

Each rank of a real ``TorchTrainer.fit()`` (local backend, gloo) writes a fresh folder with its own shard
(``--mb`` MB) every ``--step`` seconds of simulated training, waits for the others to have written theirs,
and times its ``train.report(metrics, checkpoint=...)`` (SYNC). Two ways, side by side in one run, storage under the same /tmp as the folders:

- keep:  the user keeps the folder (the default): rafter clones it copy-on-write where the filesystem can
         (XFS, Btrfs), else copies it, hashing the bytes on the way;
- move:  ``delete_local_checkpoint_after_upload=True``: rafter deletes the folder afterwards, so the files are
         renamed into the staging (no copy) and hashed with one read.

Reported: p50 and p99 of the report() calls of every rank, and p99 at the largest count over p99 at the
smallest. Target (issue #16): p99 at 8 ranks <= 3 x p99 at 2 ranks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

from _common import machine, table

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))


def train_fn(config):
    import json
    import os
    import shutil
    import tempfile
    import time

    import torch.distributed as dist

    from rafter import train
    from rafter.train import Checkpoint

    rank = train.get_context().get_world_rank()
    data = os.urandom(config["bytes"])
    times = []
    for i in range(config["reports"]):
        time.sleep(config["step"])  # a training step the GPU would do
        dist.barrier()  # the ranks stay in step, as DDP keeps them: they all report at once
        folder = tempfile.mkdtemp(prefix="ckpt-", dir=config["tmp"])
        with open(os.path.join(folder, f"shard_{rank}.pt"), "wb") as f:
            f.write(data)
        # Every rank has saved: the reports then start together, and none waits for a core behind another
        # rank's save (8 ranks on 2 cores would otherwise time the machine's oversubscription, not report()).
        dist.barrier()
        t0 = time.perf_counter()
        train.report({"step": i}, checkpoint=Checkpoint.from_directory(folder),
                     delete_local_checkpoint_after_upload=config["move"])
        times.append(time.perf_counter() - t0)
        shutil.rmtree(folder, ignore_errors=True)  # gone already when moved
    with open(os.path.join(config["out"], f"rank_{rank}.json"), "w") as f:
        json.dump(times, f)


def run(n: int, move: bool, args, root: str):
    from rafter.train import CheckpointConfig, RunConfig, ScalingConfig
    from rafter.train.torch import TorchTrainer

    out = tempfile.mkdtemp(dir=root)
    config = {"bytes": int(args.mb * 2**20), "reports": args.reports, "step": args.step, "move": move,
              "out": out, "tmp": root}
    TorchTrainer(train_fn, train_loop_config=config, scaling_config=ScalingConfig(num_workers=n),
                 run_config=RunConfig(name=f"r{n}-{'move' if move else 'keep'}", storage_path=root,
                                      checkpoint_config=CheckpointConfig(num_to_keep=2))).fit()
    times = []
    for r in range(n):
        with open(os.path.join(out, f"rank_{r}.json")) as f:
            times += json.load(f)[2:]  # the first reports warm up (imports, first folder)
    times.sort()
    return times[len(times) // 2], times[min(len(times) - 1, int(len(times) * 0.99))]


def _mount_point(path: str) -> str:
    path = os.path.realpath(path)
    while not os.path.ismount(path):
        path = os.path.dirname(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", default="2,8")
    parser.add_argument("--reports", type=int, default=30)
    parser.add_argument("--mb", type=float, default=4.0)
    parser.add_argument("--step", type=float, default=0.05)
    parser.add_argument("--dir", default=None, help="where the folders and the storage go (default: the temp dir)")
    args = parser.parse_args()
    counts = [int(x) for x in args.ranks.split(",")]
    rows, p99 = [], {}
    with tempfile.TemporaryDirectory(prefix="rafter-bench-report-", dir=args.dir) as root:
        for move in (False, True):
            for n in counts:
                p50, p99[n, move] = run(n, move, args, root)
                rows.append(["move" if move else "keep", str(n), f"{p50 * 1e3:.1f}", f"{p99[n, move] * 1e3:.1f}"])
                print(rows[-1], flush=True)
    where = args.dir or tempfile.gettempdir()
    fs = next((line.split()[2] for line in open("/proc/mounts") if line.split()[1] == _mount_point(where)), "?")
    print(f"\n{machine()}; {args.mb:g} MB per rank, {args.reports} reports, step {args.step:g} s; {where} ({fs})\n")
    print(table(rows, ["folder", "ranks", "report() p50 (ms)", "p99 (ms)"]))
    lo, hi = counts[0], counts[-1]
    for move in (False, True):
        ratio = p99[hi, move] / p99[lo, move]
        print(f"{'move' if move else 'keep'}: p99 at {hi} ranks / p99 at {lo} ranks = {ratio:.2f} (target <= 3)")


if __name__ == "__main__":
    main()
