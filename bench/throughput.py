"""Training throughput under rafter vs a plain torchrun DDP script, report() cost, and worker memory.

    python bench/throughput.py                 # full run: 2 workloads x 3 repeats x 2 sides (~2-3 min)
    python bench/throughput.py --quick         # 1 repeat, fewer steps: a smoke test, not a measurement

For each workload (bench/throughput_workloads.py: an MLP and the Llama of examples/llama_finetune.py) both
sides run the same steps with 2 workers (gloo, 1 torch thread each, loopback):

* rafter: TorchTrainer + prepare_model (DDP) and ``train.report({"step", "loss"})`` after *every* step;
* torchrun: ``torchrun --standalone --nproc_per_node=2 bench/baselines/torchrun_throughput.py``.

Each side times its steady state inside the workers (``time.perf_counter`` around the steps after the
warm-up, slowest rank wins); the sides alternate, 3 times each, and the medians are compared
(target: rafter / torchrun >= 0.98). ``report()`` is timed inside a worker over 20k back-to-back calls with
a 3-number metrics dict (target <= 50 us): wall time, which includes waiting whenever the driver falls
behind, and the worker's CPU time. Memory is each worker's USS, PSS and RSS right after the loop (max over
ranks, median over repeats): a rafter worker vs a torchrun worker, same model, same point. rafter's workers
are forked from a zygote, so torch's pages are shared with it: USS is what a worker adds.
Run it on a quiet machine: another busy process on the same cores moves these numbers more than rafter does.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from throughput_workloads import WORKLOADS  # noqa: E402

BASELINE = os.path.join(HERE, "baselines", "torchrun_throughput.py")
RATIO_TARGET, REPORT_TARGET_US = 0.98, 50.0


# -- what rafter's workers run (defined in __main__ like a user's script; cloudpickle sends it) ------------
def rafter_train(config):
    from rafter import train
    from throughput_workloads import build, summarize, timed_steps

    model, loss_fn, batches = build(config["workload"])
    model = train.torch.prepare_model(model)
    elapsed = timed_steps(model, loss_fn, batches, config["steps"], config["warmup"], report=train.report)
    return summarize(elapsed, config["steps"])


def rafter_report_cost(config):
    import time as _time

    from rafter import train

    for i in range(1000):  # warm-up
        train.report({"step": i, "loss": 0.25, "lr": 1e-3})
    n = config["calls"]
    cpu, start = _time.process_time(), _time.perf_counter()
    for i in range(n):
        train.report({"step": i, "loss": 0.25, "lr": 1e-3})
    wall, cpu = _time.perf_counter() - start, _time.process_time() - cpu
    return {"wall_us": wall / n * 1e6, "cpu_us": cpu / n * 1e6}


# -- the two sides -----------------------------------------------------------------------------------------
def run_rafter(workload: str, steps: int, warmup: int, storage: str, tag: str) -> dict:
    from rafter.train import RunConfig, ScalingConfig
    from rafter.train.torch import TorchTrainer

    result = TorchTrainer(
        rafter_train,
        train_loop_config={"workload": workload, "steps": steps, "warmup": warmup},
        scaling_config=ScalingConfig(num_workers=2),
        run_config=RunConfig(name=f"throughput_{workload}_{tag}", storage_path=storage),
    ).fit()
    return result.return_value


def run_torchrun(workload: str, steps: int, warmup: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # rafter keeps gloo on loopback too
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", BASELINE,
           "--workload", workload, "--steps", str(steps), "--warmup", str(warmup)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise SystemExit(
        f"torchrun baseline failed (exit {proc.returncode}): {' '.join(cmd)}\n"
        f"stdout tail:\n{proc.stdout[-2000:]}\nstderr tail:\n{proc.stderr[-3000:]}"
    )


def measure_report_cost(calls: int, storage: str) -> float:
    from rafter.train import RunConfig, ScalingConfig
    from rafter.train.torch import TorchTrainer

    return TorchTrainer(
        rafter_report_cost, train_loop_config={"calls": calls}, scaling_config=ScalingConfig(num_workers=1),
        run_config=RunConfig(name="report_cost", storage_path=storage),
    ).fit().return_value


# -- output ------------------------------------------------------------------------------------------------
def mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"


def table(results: dict, report: dict, calls: int) -> str:
    lines = [
        "| workload | rafter steps/s | torchrun steps/s | rafter / torchrun | target |",
        "|---|---:|---:|---:|---|",
    ]
    for workload, sides in results.items():
        r = statistics.median(x["steps_per_s"] for x in sides["rafter"])
        t = statistics.median(x["steps_per_s"] for x in sides["torchrun"])
        ok = "ok" if r / t >= RATIO_TARGET else "BELOW"
        lines.append(f"| {workload} | {r:.1f} | {t:.1f} | {r / t:.3f} | >= {RATIO_TARGET} ({ok}) |")
    wall = report["wall_us"]
    lines += [
        "",
        f"| report({{'step', 'loss', 'lr'}}), {calls} back-to-back calls in a worker | per call | target |",
        "|---|---:|---|",
        f"| wall time (includes waiting for the driver to drain the socket) | {wall:.1f} us | <= "
        f"{REPORT_TARGET_US:.0f} us ({'ok' if wall <= REPORT_TARGET_US else 'ABOVE'}) |",
        f"| worker CPU time | {report['cpu_us']:.1f} us | |",
        "",
        "| memory per worker after the loop (max over ranks) | rafter | torchrun | rafter - torchrun |",
        "|---|---:|---:|---:|",
    ]
    for workload, sides in results.items():
        for key in ("uss", "pss", "rss"):
            r = statistics.median(x[key] for x in sides["rafter"])
            t = statistics.median(x[key] for x in sides["torchrun"])
            lines.append(f"| {workload} {key.upper()} | {mib(r)} | {mib(t)} | {(r - t) / 2**20:+.0f} MiB |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated: " + ", ".join(WORKLOADS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per run (default per workload)")
    parser.add_argument("--report-calls", type=int, default=20000)
    parser.add_argument("--quick", action="store_true", help="1 repeat, 1/5 of the steps: checks the script runs")
    parser.add_argument("--json", default=None, help="also write the raw numbers to this file")
    args = parser.parse_args(argv)
    workloads = [w for w in args.workloads.split(",") if w]
    unknown = [w for w in workloads if w not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {unknown}; expected some of {sorted(WORKLOADS)}")
    repeats = 1 if args.quick else args.repeats
    calls = args.report_calls // 10 if args.quick else args.report_calls

    results = {w: {"rafter": [], "torchrun": []} for w in workloads}
    with tempfile.TemporaryDirectory(prefix="rafter-throughput-") as storage:
        for rep in range(repeats):
            for workload in workloads:
                steps = args.steps or WORKLOADS[workload]["steps"]
                if args.quick:
                    steps = max(10, steps // 5)
                warmup = WORKLOADS[workload]["warmup"]
                order = ("rafter", "torchrun") if rep % 2 == 0 else ("torchrun", "rafter")
                for side in order:
                    t0 = time.perf_counter()
                    if side == "rafter":
                        out = run_rafter(workload, steps, warmup, storage, str(rep))
                    else:
                        out = run_torchrun(workload, steps, warmup)
                    results[workload][side].append(out)
                    print(f"[throughput] {workload} {side} run {rep + 1}/{repeats}: {out['steps_per_s']:.1f} steps/s "
                          f"({steps} steps after {warmup} warm-up; {time.perf_counter() - t0:.1f} s wall)",
                          file=sys.stderr, flush=True)
        report = measure_report_cost(calls, storage)
    print(table(results, report, calls))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "report": report, "report_calls": calls}, f, indent=1)


if __name__ == "__main__":
    main()
