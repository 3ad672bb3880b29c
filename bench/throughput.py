"""Training throughput under rafter vs a plain torchrun DDP script, report() cost, and worker memory.

    python bench/throughput.py --repeats 5 --steps 400   # the acceptance run (~4 min)
    python bench/throughput.py --quick                   # 1 repeat, fewer steps: a smoke test, not a measurement
    python bench/throughput.py --control --workloads llama --repeats 10   # torchrun against torchrun (A/A)

For each workload (bench/throughput_workloads.py: an MLP and the Llama of examples/llama_finetune.py) both
sides run the same steps with 2 workers (gloo, 1 torch thread each, loopback):

* rafter: ``python bench/rafter_throughput_job.py``: TorchTrainer + prepare_model (DDP) and
  ``train.report({"step", "loss"})`` after *every* step;
* torchrun: ``torchrun --standalone --nproc_per_node=2 bench/baselines/torchrun_throughput.py``.

**Pairing.** Each repeat starts both sides at once; after their warm-up they take turns on the cores, one
segment of steps at a time (``--segment``, default 50 steps), handed out by this script (the
``Baton`` of throughput_workloads.py): rafter runs 50 steps while torchrun waits, then torchrun runs 50, and
so on, the side that goes first alternating between repeats. The side that waits is stopped (SIGSTOP of
its whole process tree, ``--no-freeze`` to leave it running): its driver's or agent's timers would
otherwise take the cores from the other side's ranks, and torchrun's agent wakes more often than
rafter's driver. Each segment is timed inside the workers from
a barrier to a barrier; a side's steps/s is its steps over the sum of its segments. A repeat's ratio is
rafter's steps/s over torchrun's in that repeat, and the figure is the median of those pairwise ratios
(target >= 0.99). ``--control`` puts torchrun on both sides: the spread of its ratios around 1 is what
the pairing can resolve. Each run's line also gives, per rank and per timed step, the process's CPU time,
its training thread's and its page faults (``BENCH_RAFTER_JOB=<script>`` runs another script as the rafter
side, for variants). Whole runs one after the other are not paired closely enough on this machine: its
speed drifts by +-10 % over minutes, more than any difference between the two sides.

``report()`` is timed inside a worker over 20k back-to-back calls with a 3-number metrics dict (target
<= 50 us): wall time, which includes waiting whenever the driver falls behind, and the worker's CPU time.
Memory is each worker's USS, PSS and RSS right after the loop (max over ranks, median over repeats): a
rafter worker vs a torchrun worker, same model, same point. rafter's workers are forked from a zygote, so
torch's pages are shared with it: USS is what a worker adds.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from throughput_workloads import WORKLOADS, Baton  # noqa: E402

BASELINE = os.path.join(HERE, "baselines", "torchrun_throughput.py")
RAFTER_JOB = os.environ.get("BENCH_RAFTER_JOB") or os.path.join(HERE, "rafter_throughput_job.py")
RATIO_TARGET, REPORT_TARGET_US = 0.99, 50.0


# -- what rafter's worker runs for the report() cost (defined in __main__ like a user's script) ----------
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


# -- the two sides, taking turns -----------------------------------------------------------------------
def commands(workload: str, steps: int, warmup: int, control: bool = False) -> dict:
    """{side: command}. ``control``: the "rafter" side runs the torchrun baseline too (an A/A run: what the
    pairing gives for two identical sides, i.e. the bench's own bias and noise)."""
    args = ["--workload", workload, "--steps", str(steps), "--warmup", str(warmup)]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", BASELINE] + args
    return {"rafter": torchrun if control else [sys.executable, RAFTER_JOB] + args, "torchrun": torchrun}


class _Side:
    def __init__(self, name: str, cmd: list, env: dict, folder: str, freezes: bool = True) -> None:
        self.name, self.cmd, self.freezes = name, cmd, freezes
        self.log_path = os.path.join(folder, f"{name}.log")
        self.log = open(self.log_path, "w")
        env = dict(env, BENCH_SIDE=name)  # the name a side gives the coordinator
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.line = None
        self.segments: list = []
        self.frozen: list = []  # the processes of this side stopped while the other side has its turn

    def freeze(self) -> None:
        """SIGSTOP every process of this side (its launcher or driver, and the workers): while the other side
        has its turn, nothing of this one runs, not even a timer (rafter's driver ticks, torchrun's agent
        polls its workers every 0.1 s), so neither side's turns pay for the other's background. Nothing
        with ``--no-freeze``."""
        import psutil

        if not self.freezes:
            return

        root = psutil.Process(self.proc.pid)
        self.frozen = [root] + root.children(recursive=True)
        for proc in self.frozen:
            try:
                proc.suspend()
            except psutil.Error:
                pass

    def thaw(self) -> None:
        import psutil

        for proc in reversed(self.frozen):
            try:
                proc.resume()
            except psutil.Error:
                pass
        self.frozen = []

    def failed(self, why: str) -> SystemExit:
        self.proc.kill()
        self.log.close()
        with open(self.log_path) as f:
            tail = f.read()[-4000:]
        return SystemExit(f"{self.name} side: {why} (exit {self.proc.poll()}): {' '.join(self.cmd)}\n{tail}")

    def say(self, line: str) -> None:
        self.line.write(line + "\n")
        self.line.flush()

    def expect(self, word: str) -> list:
        text = self.line.readline()
        if not text:
            raise self.failed(f"ended while the coordinator waited for {word!r}")
        parts = text.split()
        if parts[0] != word:
            raise self.failed(f"said {text!r}, expected {word!r}")
        return parts[1:]

    def result(self) -> dict:
        try:
            code = self.proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            raise self.failed("did not exit")
        self.log.close()
        with open(self.log_path) as f:
            for line in f:
                if line.startswith("RESULT "):  # printed after the steps; what the shutdown does is not timed
                    return dict(json.loads(line[len("RESULT "):]), exit_code=code)
        raise self.failed("no RESULT line")


def run_pair(workload: str, steps: int, warmup: int, segment: int, first: str, report: bool = True,
             control: bool = False, freeze: bool = True) -> dict:
    """Both sides at once, taking turns segment by segment; returns {side: result} with "segments"."""
    with tempfile.TemporaryDirectory(prefix="rafter-baton-") as folder:
        path = os.path.join(folder, "baton.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(2)
        listener.settimeout(300)  # both sides import torch and warm up before they connect
        env = dict(os.environ, OMP_NUM_THREADS="1", **{Baton.ENV: path})
        if not report:
            env["BENCH_NO_REPORT"] = "1"  # the rafter side trains without train.report(): what reporting costs
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # rafter keeps gloo on loopback too
        cmds = commands(workload, steps, warmup, control)
        sides = {name: _Side(name, cmd, env, folder, freeze) for name, cmd in cmds.items()}
        try:
            for _ in sides:
                try:
                    conn, _addr = listener.accept()
                except socket.timeout:
                    raise next(iter(s for s in sides.values() if s.line is None)).failed("never connected")
                conn.settimeout(600)
                line = conn.makefile("rw")
                name = line.readline().split()[-1]
                sides[name].line = line
            order = [first] + [n for n in sides if n != first]
            left = {n: steps for n in sides}
            for side in sides.values():
                side.expect("ready")  # warmed up
                side.freeze()
            while any(left.values()):
                for name in order:
                    side = sides[name]
                    if not left[name]:
                        continue
                    side.thaw()
                    n = min(segment, left[name])
                    side.say(f"go {n}")
                    (seconds,) = side.expect("done")
                    side.segments.append((n, float(seconds)))
                    left[name] -= n
                    side.expect("ready")
                    side.freeze()
            for side in sides.values():
                side.thaw()
                side.say("end")
            out = {}
            for name, side in sides.items():
                out[name] = dict(side.result(), segments=side.segments)
            return out
        finally:
            for side in sides.values():
                side.thaw()
                if side.proc.poll() is None:
                    side.proc.kill()
                    side.proc.wait()
            listener.close()


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


def pair_ratios(sides: dict) -> list:
    return [a["steps_per_s"] / b["steps_per_s"] for a, b in zip(sides["rafter"], sides["torchrun"])]


def table(results: dict, report: dict, calls: int) -> str:
    lines = [
        "| workload | rafter steps/s | torchrun steps/s | rafter / torchrun (median of pairs) | pairs | target |",
        "|---|---:|---:|---:|---|---|",
    ]
    for workload, sides in results.items():
        r = statistics.median(x["steps_per_s"] for x in sides["rafter"])
        t = statistics.median(x["steps_per_s"] for x in sides["torchrun"])
        ratios = pair_ratios(sides)
        ratio = statistics.median(ratios)
        ok = "ok" if ratio >= RATIO_TARGET else "BELOW"
        pairs = " ".join(f"{x:.3f}" for x in ratios)
        lines.append(f"| {workload} | {r:.1f} | {t:.1f} | {ratio:.3f} | {pairs} | >= {RATIO_TARGET} ({ok}) |")
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
    parser.add_argument("--segment", type=int, default=50, help="steps a side runs per turn")
    parser.add_argument("--no-report", action="store_true", help="rafter's workers don't call train.report()")
    parser.add_argument("--control", action="store_true",
                        help="A/A: torchrun against torchrun (the bench's own bias and noise; rafter does not run)")
    parser.add_argument("--no-freeze", action="store_true",
                        help="leave the waiting side running (its driver or agent wakes up) instead of stopping it")
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
                first = "rafter" if rep % 2 == 0 else "torchrun"
                t0 = time.perf_counter()
                pair = run_pair(workload, steps, warmup, max(1, min(args.segment, steps)), first, not args.no_report,
                                args.control, not args.no_freeze)
                for side, out in pair.items():
                    results[workload][side].append(out)
                r, t = pair["rafter"]["steps_per_s"], pair["torchrun"]["steps_per_s"]
                print(f"[throughput] {workload} run {rep + 1}/{repeats} ({first} first): rafter {r:.1f}, torchrun "
                      f"{t:.1f} steps/s, ratio {r / t:.3f} ({steps} steps each after {warmup} warm-up; "
                      f"{time.perf_counter() - t0:.1f} s wall)", file=sys.stderr, flush=True)
                for key in ("cpu_ms_per_step", "thread_cpu_ms_per_step", "faults_per_step"):  # per rank; JSON too
                    print(f"[throughput]   {key}: rafter {pair['rafter'][key]}, torchrun {pair['torchrun'][key]}",
                          file=sys.stderr, flush=True)
        report = measure_report_cost(calls, storage)
    print(table(results, report, calls))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "report": report, "report_calls": calls}, f, indent=1)


if __name__ == "__main__":
    main()
