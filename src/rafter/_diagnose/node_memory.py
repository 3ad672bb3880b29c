"""Memory watch on a rank's own node (the Ray backend): the driver can't see processes on other machines.

Runs in the rank's Ray actor, next to its worker. A thread samples the worker's memory (RSS of its process
tree) a few times a second; over ``resources_per_worker["memory"]`` it stops the worker and says so. When
the worker dies of a SIGKILL the actor did not send, the node's kernel log says whether the OOM killer
sent it. Either way the evidence (``{"oom": ...}``, naming the node) goes to the driver before the exit.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Callable, Optional

import psutil

from rafter._diagnose.memory import SAMPLE_INTERVAL_S, KernelLog, fmt_bytes, oom_kill_count, tree_rss

_FIX_LIMIT = "Lower the batch size or model size, or raise the limit: ScalingConfig(resources_per_worker={{'memory': {}}})."
_FIX_KERNEL = ("The process (or its container/cgroup) ran out of memory on that node. Use less memory per worker, "
               "fewer workers per node, or set ScalingConfig(resources_per_worker={'memory': ...}) so rafter stops "
               "it with a clear error first. `dmesg` on that node shows the kernel's report.")


class NodeMemoryWatch:
    """``node``: how the verdict names the node ("10.0.0.5 (host-a)"). ``stop()`` kills the worker's
    process group; ``send(evidence)`` hands the evidence to the driver."""

    def __init__(self, node: str, limit: Optional[int], stop: Callable[[], None],
                 send: Callable[[dict], None]) -> None:
        self.node = node
        self.limit = limit
        self._stop = stop
        self._send = send
        self.kernel_log = KernelLog()  # opened before the worker starts: later records are this run's
        self.oom_kills_at_start = oom_kill_count()
        self.peak = 0
        self.last: Optional[tuple] = None  # (rss, time)
        self.evidence: Optional[dict] = None
        self._done = threading.Event()

    def start(self, pid: int) -> None:
        threading.Thread(target=self._sample, args=(pid,), name="rafter-node-memory", daemon=True).start()

    def _sample(self, pid: int) -> None:
        try:
            proc = psutil.Process(pid)
        except psutil.Error:
            return
        while not self._done.wait(SAMPLE_INTERVAL_S):
            try:
                rss = tree_rss(proc)
            except psutil.Error:
                return
            if rss:  # 0: a zombie about to be reaped, not a sample
                self.last, self.peak = (rss, time.time()), max(self.peak, rss)
            if self.limit and rss > self.limit:
                self.evidence = {
                    "time": time.time(), "source": "rafter", "node": self.node, "peak_rss": self.peak,
                    "limit": self.limit,
                    "headline": (f"ran out of memory on node {self.node}: it used {fmt_bytes(self.peak)} (RSS), over "
                                 f"its limit of {fmt_bytes(self.limit)}, and rafter stopped it"),
                    "fix": _FIX_LIMIT.format(int(self.limit * 1.5)),
                }
                self._send(self.evidence)
                self._stop()
                return

    def exited(self, pid: int, code: int, killed_by_rafter: bool) -> None:
        """The worker is gone (``code``: its return code, negative for a signal)."""
        self._done.set()
        if self.evidence is not None or code != -signal.SIGKILL or killed_by_rafter:
            return
        record = self.kernel_log.oom_record(pid)
        if record is None:
            count = oom_kill_count()
            rose = None not in (count, self.oom_kills_at_start) and count > self.oom_kills_at_start
            if self.kernel_log.readable or not rose:
                return
        why = f"kernel log: '{record[:160]}'" if record else "the kernel's OOM-kill counter rose"
        sample = (f"its last memory sample was {fmt_bytes(self.last[0])} RSS, {time.time() - self.last[1]:.1f} s "
                  f"before it died" if self.last else "no memory sample of it was taken")
        self.evidence = {
            "time": time.time(), "source": "kernel", "node": self.node, "peak_rss": self.peak or None,
            "kernel_log": record,
            "headline": f"was killed by the kernel OOM killer on node {self.node} (SIGKILL; {why}; {sample})",
            "fix": _FIX_KERNEL,
        }
        self._send(self.evidence)

    def close(self) -> None:
        self._done.set()
        self.kernel_log.close()
