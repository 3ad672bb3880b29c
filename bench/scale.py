"""The driver at scale: the real Controller pumping a simulated worker group of thousands of ranks.

    python bench/scale.py [--ranks 512,1024,2048,4096] [--seconds 20] [--long 40] [--interval 0.1]

Each run is a fresh driver process: ``Controller.fit()`` with every default monitor, a real run folder and a
fake backend (``SimulatedGroup``, a ``GroupBase`` like the real groups) whose ranks each send a metrics
report every ``--interval`` seconds (staggered), then finish and exit. The messages are made and pickled by
a forked generator process and reach the driver through a pipe, which it unpickles and dispatches as the
local group does its sockets; so the driver's own CPU (``time.process_time``) is what the loop, the run
folder, the callbacks and the monitors cost. Reported per run: cores used by the driver in the steady
state (from 2 s on), reports handled per second, RSS at 2 s and at the end, and the RSS per rank.

Targets (issue #16): 4,096 ranks at 10 reports/s each: driver <= 0.5 core; memory grows linearly with
ranks (the rank sweep) and not with time (4,096 ranks for ``--seconds`` and ``--long``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pickle
import select
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rafter._backends.base import GroupBase, RankState  # noqa: E402

SLICES = 10  # the generator sends a tenth of the ranks' reports every interval / 10
HEADER = struct.Struct("!I")


def train_fn(config):  # never runs: the simulated ranks stand in for its workers
    return None


def _page_size() -> int:
    return os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _page_size()


class _NoOutput:
    """A simulated rank writes no output (the real groups' RankOutput would open one log file per rank)."""

    def lines(self):
        return []

    def close(self):
        pass


def _generate(wfd: int, n: int, seconds: float, interval: float) -> None:
    """The simulated ranks (runs in a forked child): hello, a report every ``interval`` each, finish, exit."""
    import cloudpickle

    from rafter._worker import messages as msg

    def send(items) -> None:
        data = pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL)
        os.write(wfd, HEADER.pack(len(data)))
        view = memoryview(data)
        while view:
            view = view[os.write(wfd, view):]

    send([(r, msg.Hello(r, 100_000 + r, "simulated", time.time())) for r in range(n)])
    start = time.monotonic()
    k = 0
    while True:
        due = start + k * interval / SLICES
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if time.monotonic() - start >= seconds:
            break
        index = k // SLICES
        now = time.time()
        send([(r, msg.Reported(r, index, {"loss": 1.0 / (index + 1), "step": index}, None, now))
              for r in range(k % SLICES, n, SLICES)])
        k += 1
    done = cloudpickle.dumps(None)
    send([(r, msg.Finished(r, done, time.time())) for r in range(n)])
    send([(r, "exit") for r in range(n)])
    os.close(wfd)
    os._exit(0)


class SimulatedGroup(GroupBase):
    """Built on the real groups' shared half (``GroupBase``: exits, kills, queries)."""

    def __init__(self, template, n: int, seconds: float, interval: float) -> None:
        self._template = template
        super().__init__({r: RankState(dataclasses.replace(template, rank=r), _NoOutput()) for r in range(n)})
        rfd, wfd = os.pipe()
        self._child = os.fork()
        if self._child == 0:
            os.close(rfd)
            _generate(wfd, n, seconds, interval)
        os.close(wfd)
        self._rfd = rfd
        self._buf = bytearray()
        self._eof = False
        self.reports = 0
        self.t0 = time.monotonic()
        self.samples = []  # (seconds since start, driver CPU seconds, RSS bytes, reports so far)
        self._next_sample = self.t0

    def poll(self, timeout: float):
        out = []
        now = time.monotonic()
        if now >= self._next_sample:
            self.samples.append((now - self.t0, time.process_time(), rss_bytes(), self.reports))
            self._next_sample = now + 1.0
        if not self._eof and select.select([self._rfd], [], [], timeout)[0]:
            while True:
                chunk = os.read(self._rfd, 1 << 20)
                if not chunk:
                    self._eof = True
                    break
                self._buf += chunk
                if len(chunk) < 1 << 20:
                    break
            self._parse(out)
        self._flush_exits(out)
        return out

    def _parse(self, out) -> None:
        buf, pos = self._buf, 0
        while len(buf) - pos >= HEADER.size:
            (size,) = HEADER.unpack_from(buf, pos)
            if len(buf) - pos - HEADER.size < size:
                break
            items = pickle.loads(bytes(buf[pos + HEADER.size:pos + HEADER.size + size]))
            pos += HEADER.size + size
            for rank, message in items:
                if message == "exit":
                    self._exited(self._ranks[rank], 0)
                else:
                    if type(message).__name__ == "Reported":
                        self.reports += 1
                    self._dispatch(rank, message, out)
        del buf[:pos]

    # -- GroupBase's hooks ------------------------------------------------------------------------
    def _deliver(self, state, sig, group):
        return False  # no processes: a stop ends the generator's ranks only when the run ends

    def _output_done(self, state):
        return True

    def _send_to(self, rank, message):
        pass

    def _pid_is_here(self, state):
        return False  # the simulated pids are no processes (the memory monitor samples nothing)

    def close(self) -> None:
        os.close(self._rfd)
        os.waitpid(self._child, 0)


class SimulatedBackend:
    name = "simulated"

    def __init__(self, seconds: float, interval: float) -> None:
        self.seconds, self.interval = seconds, interval
        self.group = None

    def check_resources(self, scaling):
        return 1

    def start(self, use_gpu):
        pass

    def start_group(self, scaling, template, payload, echo=True):
        self.group = SimulatedGroup(template, scaling.num_workers, self.seconds, self.interval)
        return self.group

    def shutdown(self):
        pass


def one(n: int, seconds: float, interval: float) -> dict:
    from rafter._controller.controller import Controller
    from rafter.train import RunConfig, ScalingConfig

    backend = SimulatedBackend(seconds, interval)
    with tempfile.TemporaryDirectory() as root:
        controller = Controller(train_fn, None, ScalingConfig(num_workers=n),
                                RunConfig(name="scale", storage_path=root), backend_name="gloo", timeout_s=60,
                                echo=False, backend=backend)
        rss_before = rss_bytes()
        controller.fit()
    samples = backend.group.samples
    steady = [s for s in samples if s[0] >= 2.0]
    first, last = steady[0], steady[-1]
    wall = last[0] - first[0]
    return {"ranks": n, "seconds": seconds, "cores": (last[1] - first[1]) / wall,
            "reports_per_s": (last[3] - first[3]) / wall, "expected_per_s": n / interval,
            "rss_start_mb": rss_before / 2**20, "rss_2s_mb": first[2] / 2**20, "rss_end_mb": last[2] / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", default="512,1024,2048,4096")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--long", type=float, default=40.0, help="a second, longer run of the largest count")
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--one", nargs=2, type=float, metavar=("RANKS", "SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(int(args.one[0]), args.one[1], args.interval)))
        return
    from _common import machine, table

    counts = [int(x) for x in args.ranks.split(",")]
    runs = [(n, args.seconds) for n in counts] + ([(counts[-1], args.long)] if args.long else [])
    rows = []
    for n, seconds in runs:
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--one", str(n), str(seconds),
                              "--interval", str(args.interval)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append([str(n), f"{seconds:g}", f"{r['cores']:.2f}", f"{r['reports_per_s']:.0f} / {r['expected_per_s']:.0f}",
                     f"{r['rss_2s_mb']:.1f}", f"{r['rss_end_mb']:.1f}"])
        print(json.dumps(r), flush=True)
    print(f"\n{machine()}\n")
    print(table(rows, ["ranks", "seconds", "driver cores", "reports/s handled / sent",
                                            "RSS at 2 s (MB)", "RSS at end (MB)"]))


if __name__ == "__main__":
    main()
