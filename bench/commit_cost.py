"""Commit cost and driver memory as a run grows.

    python bench/commit_cost.py [--checkpoints 5000] [--reports 1000000]

1. Commit time after 10, 100, 1,000 and 5,000 checkpoints of one run (``num_to_keep=None``, the case where
   every checkpoint stays listed): the driver's ``RunState.on_report`` for a report that completes a
   checkpoint (merge, rename + folder fsync, one journal line + fsync), with the file staged beforehand as
   a worker would. Median of the 21 commits from each mark on, after a warm-up run of 50 commits. Target: ratio 5,000 vs 10 <= 1.5.
2. Driver RSS during a real run (1 worker process) that makes 1,000,000 metrics-only ``train.report()``
   calls, read by a callback in the driver after report 10,000 and after the last one.
   Target: within 50 MB.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

from _common import machine, median, table

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))

MARKS = (10, 100, 1000, 5000)
WINDOW = 21  # commits measured from each mark on
WARMUP = 50


def commit_times(n: int, root: str, name: str = "commits"):
    from rafter import _run_folder as rf
    from rafter._backends.events import Reported
    from rafter._controller.run_state import RunState
    from rafter.train import RunConfig

    src = os.path.join(root, f"src-{name}")
    os.makedirs(src)
    with open(os.path.join(src, "model.pt"), "wb") as f:
        f.write(os.urandom(4096))
    state = RunState.open(RunConfig(name=name, storage_path=os.path.join(root, "results")), fingerprint={})
    try:
        state.begin_attempt(world_size=1)
        times = []
        for i in range(n):
            dest = state.storage.join_path(state.run_path, rf.staging_rel(1, i, 0))
            staged = {"staging": dest, "files": state.storage.upload_dir(src, dest), "rank": 0}
            event = Reported(rank=0, index=i, metrics={"step": i, "loss": 1.0 / (i + 1)}, checkpoint=staged,
                             time=time.time())
            t0, c0 = time.perf_counter(), time.process_time()
            committed = state.on_report(event)
            times.append((time.perf_counter() - t0, time.process_time() - c0))
            assert len(committed) == 1
        state.end_attempt(None)
        state.finish(None)
    finally:
        state.close()
    return times


def reports_train(config):
    from rafter import train

    for i in range(config["reports"]):
        train.report({"step": i, "loss": 0.5, "lr": 1e-3})


class RssProbe:
    """A driver-side callback: the driver's RSS after chosen reports."""

    def __init__(self, at):
        import psutil

        self.at = set(at)
        self.seen = 0
        self.rss = {}
        self._proc = psutil.Process()

    def after_report(self, metrics, rank, run_path):
        self.seen += 1
        if self.seen in self.at:
            self.rss[self.seen] = self._proc.memory_info().rss


def driver_rss(reports: int, root: str):
    from rafter.train import RunConfig, ScalingConfig
    from rafter.train.torch import TorchTrainer

    probe = RssProbe([10_000, reports // 10, reports // 2, reports])
    t0 = time.perf_counter()
    TorchTrainer(reports_train, train_loop_config={"reports": reports}, scaling_config=ScalingConfig(num_workers=1),
                 run_config=RunConfig(name="reports", storage_path=os.path.join(root, "results"),
                                      callbacks=[probe])).fit()
    return probe.rss, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoints", type=int, default=5000)
    parser.add_argument("--reports", type=int, default=1_000_000)
    args = parser.parse_args()
    marks = [m for m in MARKS if m <= args.checkpoints]
    print(f"machine: {machine()}\n")
    with tempfile.TemporaryDirectory() as root:
        commit_times(WARMUP, root, name="warm-up")
        times = commit_times(args.checkpoints + WINDOW, root)
    at = {m: median([w for w, _ in times[m: m + WINDOW]]) for m in marks}
    cpu = {m: median([c for _, c in times[m: m + WINDOW]]) for m in marks}
    rows = [[f"{m:,}", f"{at[m] * 1e3:.3f} ms", f"{at[m] / at[marks[0]]:.2f} x", f"{cpu[m] * 1e3:.3f} ms",
             f"{cpu[m] / cpu[marks[0]]:.2f} x"] for m in marks]
    print(table(rows, ["checkpoints so far", f"commit wall (median of {WINDOW})", f"vs {marks[0]}",
                       "commit CPU", f"vs {marks[0]}"]))
    ratio, cpu_ratio = at[marks[-1]] / at[marks[0]], cpu[marks[-1]] / cpu[marks[0]]
    print(f"\ncommit ratio {marks[-1]:,} vs {marks[0]}: wall {ratio:.2f} x, CPU {cpu_ratio:.2f} x (target <= 1.5): "
          f"{'yes' if max(ratio, cpu_ratio) <= 1.5 else 'NO'} (wall time is mostly fsync, which other disk users "
          f"move; CPU time is the driver's own work)\n")
    with tempfile.TemporaryDirectory() as root:
        rss, wall = driver_rss(args.reports, root)
    first, last = min(rss), max(rss)
    rows = [[f"{n:,}", f"{rss[n] / 2**20:.1f} MiB"] for n in sorted(rss)]
    print(table(rows, ["reports so far", "driver RSS"]))
    grew = (rss[last] - rss[first]) / 1e6
    print(f"\ndriver RSS growth {first:,} -> {last:,} reports: {grew:+.1f} MB (target within 50 MB): "
          f"{'yes' if abs(grew) <= 50 else 'NO'}; {args.reports:,} reports in {wall:.1f} s")


if __name__ == "__main__":
    main()
