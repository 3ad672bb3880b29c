"""Repeated fit() in one process (a notebook, a sweep): is every fit after the first warm?

    python bench/repeated_fits.py [--fits 5] [--leak-fits 20]

Three drivers, each a fresh interpreter running the seed quickstart's train function (4 workers, gloo):
- cold:    fits 1..N in one process, nothing imported beforehand but torch (what a notebook does);
- primed:  the same, in a driver that imported torch._dynamo first (what any driver that built a
           torch optimizer has) -- the floor a warm fit is compared with (its fit 1);
- leaks:   --leak-fits fits in one process; open fds, threads, child processes and RSS after fit 1
           and after the last one.
Target (issue #16): cold fits 2..N each <= 1.3 x primed fit 1; leaks: fds, threads, children as after
fit 1, RSS within 20 MB.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap

from _common import ROOT, machine, table

DRIVER = textwrap.dedent('''
    import json, os, sys, tempfile, threading, time
    import psutil, torch
    if {prime}:
        import torch._dynamo
    import torch.nn as nn, torch.optim as optim
    from rafter import train
    from rafter.train import RunConfig, ScalingConfig
    from rafter.train.torch import TorchTrainer

    def train_func(config):
        model = train.torch.prepare_model(nn.Linear(1, 1))
        optimizer = optim.SGD(model.parameters(), lr=1e-3)
        for i in range(10):
            loss = torch.randn(1, requires_grad=True).sum()
            optimizer.zero_grad(); loss.backward(); optimizer.step()
            train.report({{"loss": loss.item()}})

    def snapshot():
        me = psutil.Process()
        return dict(fds=me.num_fds(), threads=threading.active_count(),
                    children=len(me.children(recursive=True)), rss=me.memory_info().rss)

    storage = tempfile.mkdtemp()
    times, snaps = [], []
    for i in range({fits}):
        t0 = time.perf_counter()
        TorchTrainer(train_func, scaling_config=ScalingConfig(num_workers=4),
                     run_config=RunConfig(name=f"fit{{i}}", storage_path=storage)).fit()
        times.append(time.perf_counter() - t0)
        snaps.append(snapshot())
    print("RESULT " + json.dumps(dict(times=times, first=snaps[0], last=snaps[-1])))
''')


def drive(fits: int, prime: bool) -> dict:
    proc = subprocess.run([sys.executable, "-c", DRIVER.format(fits=fits, prime=prime)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900, env={**__import__("os").environ,
                                                                             "OMP_NUM_THREADS": "1"})
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not line:
        raise RuntimeError(f"driver failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return json.loads(line[0][len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fits", type=int, default=5)
    parser.add_argument("--leak-fits", type=int, default=20)
    args = parser.parse_args()
    cold = drive(args.fits, prime=False)
    primed = drive(args.fits, prime=True)
    floor = primed["times"][0]
    rows = [[str(i + 1), f"{c:.2f}", f"{p:.2f}", f"{c / floor:.2f}"]
            for i, (c, p) in enumerate(zip(cold["times"], primed["times"]))]
    print(f"# Repeated fits in one process ({machine()})\n")
    print(table(rows, ["fit", "cold driver s", "primed driver s", "cold / primed fit 1"]))
    worst = max(cold["times"][1:]) / floor
    print(f"\nworst of cold fits 2..{args.fits} / primed fit 1 = {worst:.2f}  (target <= 1.3)")
    leaks = drive(args.leak_fits, prime=False)
    a, b = leaks["first"], leaks["last"]
    print(f"\nafter fit 1 vs after fit {args.leak_fits}: fds {a['fds']} -> {b['fds']}, threads {a['threads']} -> "
          f"{b['threads']}, children {a['children']} -> {b['children']}, RSS {a['rss'] / 2**20:.0f} -> "
          f"{b['rss'] / 2**20:.0f} MiB ({(b['rss'] - a['rss']) / 2**20:+.1f}; target within 20)")


if __name__ == "__main__":
    main()
