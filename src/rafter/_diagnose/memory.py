"""Memory watch: per-worker RSS and the machine's available memory, 4 times a second with a per-worker limit
or with the machine within 25 % of ``memory_threshold``, else once a second.

- A worker over ``resources_per_worker["memory"]`` is stopped by rafter and reported as out of memory,
  with its peak RSS and the limit.
- When the machine's used fraction reaches ``RunConfig(memory_threshold)`` (default 0.95), rafter stops
  the largest worker and reports it as out of memory, rather than letting the kernel pick a victim blind.
- A SIGKILL that rafter did not send, while the kernel's OOM-kill counter rose (``/proc/vmstat``
  oom_kill) or memory was near its limit, is reported as "killed by the kernel OOM killer".

RSS counts the worker and its child processes (DataLoader workers); pages shared copy-on-write with the
zygote count in every worker, so RSS is a conservative measure. The monitor decides (``Stop`` a rank,
or ``Note`` the kernel's doing); the controller stops the rank and records the evidence.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Dict, Optional, Tuple

import psutil

from rafter._backends import events as ev
from rafter._diagnose.decision import AttemptView, Note, Stop

SAMPLE_INTERVAL_S = 0.25  # with a per-worker limit, or with the machine near memory_threshold
RELAXED_INTERVAL_S = 1.0  # otherwise: the machine would have to fill RELAXED_MARGIN of its memory in a second
RELAXED_MARGIN = 0.25
_GiB = 2**30


def oom_kill_count() -> Optional[int]:
    try:
        with open("/proc/vmstat") as f:
            for line in f:
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class KernelLog:
    """New records of the kernel log (/dev/kmsg), read without blocking; None where it can't be read.

    The OOM killer writes "Killed process <pid> (<name>) ..." there, which names the victim exactly,
    unlike the machine-wide oom_kill counter that other tenants also move."""

    def __init__(self) -> None:
        self.fd: Optional[int] = None
        try:
            self.fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
            os.lseek(self.fd, 0, os.SEEK_END)
        except OSError:
            self.close()
        self.records: list = []

    @property
    def readable(self) -> bool:
        return self.fd is not None

    def oom_record(self, pid: int) -> Optional[str]:
        while self.fd is not None:
            try:
                record = os.read(self.fd, 8192)
            except BlockingIOError:
                break
            except OSError:  # EPIPE: records were overwritten while we read; skip ahead
                continue
            if not record:
                break
            self.records.append(record.decode("utf-8", "replace").split(";", 1)[-1].strip())
        needle = f"Killed process {pid} "
        return next((r for r in self.records if needle in r), None)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
        self.fd = None


def fmt_bytes(n: float) -> str:
    return f"{n / _GiB:.2f} GiB" if n >= _GiB else f"{n / 2**20:.0f} MiB"


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def _children(pid: int):
    kids = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids.extend(int(k) for k in f.read().split())
        except OSError:
            pass
    return kids


def tree_rss(proc: psutil.Process) -> int:
    """RSS of a process and its descendants. On Linux this reads only that tree's /proc entries
    (psutil's children() scans every process on the machine, which costs training time)."""
    if not os.path.exists("/proc/self/task"):
        total = proc.memory_info().rss
        for child in proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return total
    total, todo = 0, [proc.pid]
    while todo:
        pid = todo.pop()
        try:
            total += _rss(pid)
            todo.extend(_children(pid))
        except (OSError, ValueError, IndexError):
            if pid == proc.pid:
                raise psutil.NoSuchProcess(pid)
    return total


class MemoryMonitor:
    def __init__(self, view: AttemptView) -> None:
        self.group = view.group
        self.view = view
        self.limit: Optional[int] = view.scaling.memory_per_worker
        self.threshold: float = view.run_config.memory_threshold
        self.oom_kills_at_start = oom_kill_count()
        self.kernel_log = KernelLog()
        self.next_sample = 0.0
        self.procs: Dict[int, psutil.Process] = {}
        self.last: Dict[int, Tuple[int, float]] = {}
        self.peak: Dict[int, int] = {}
        self.machine_used = 0.0
        self.stopped = False

    def _rss(self, rank: int, pid: int) -> Optional[int]:
        proc = self.procs.get(rank)
        if proc is None or proc.pid != pid:
            try:
                proc = self.procs[rank] = psutil.Process(pid)
            except psutil.Error:
                return None
        try:
            return tree_rss(proc)
        except psutil.Error:
            return None

    def _interval(self) -> float:
        near = self.limit or self.machine_used >= self.threshold - RELAXED_MARGIN
        return SAMPLE_INTERVAL_S if near else RELAXED_INTERVAL_S

    def due(self) -> Optional[float]:
        """The next sample, when sampling faster than the loop's idle tick (POLL_S) does anyway."""
        if self.stopped or self._interval() >= RELAXED_INTERVAL_S:
            return None
        return self.next_sample

    def tick(self, now: float) -> Optional[Stop]:
        if now < self.next_sample - 0.2 * self._interval() or self.stopped:
            return None  # (a tick a little early samples: it saves a wake-up of its own)
        decision = self._sample(now)
        self.next_sample = now + self._interval()  # with this sample's machine_used
        return decision

    def _sample(self, now: float) -> Optional[Stop]:
        sizes: Dict[int, int] = {}
        for rank, pid in self.group.pids().items():
            rss = self._rss(rank, pid)
            if rss is None:
                continue
            sizes[rank] = rss
            self.last[rank] = (rss, now)
            self.peak[rank] = max(rss, self.peak.get(rank, 0))
            if self.limit and rss > self.limit:
                return self._stop(rank, now, (
                    f"ran out of memory: it used {fmt_bytes(self.peak[rank])} (RSS), over its limit of "
                    f"{fmt_bytes(self.limit)}, and rafter stopped it"),
                    "Lower the batch size or model size, or raise the limit: "
                    f"ScalingConfig(resources_per_worker={{'memory': {int(self.limit * 1.5)}}}).")
        vm = psutil.virtual_memory()
        self.machine_used = 1.0 - vm.available / vm.total
        if sizes and self.machine_used >= self.threshold:
            rank = max(sizes, key=sizes.get)
            return self._stop(rank, now, (
                f"ran out of memory: the machine reached {self.machine_used:.0%} of its {fmt_bytes(vm.total)} "
                f"(threshold {self.threshold:.0%}) and this was the largest worker at {fmt_bytes(sizes[rank])} "
                f"(RSS); rafter stopped it before the kernel OOM killer picked a victim"),
                "Use less memory per worker (smaller batches, fewer DataLoader workers), fewer workers per "
                "machine, or a bigger machine. RunConfig(memory_threshold=...) sets when rafter steps in.")
        return None

    def _stop(self, rank: int, now: float, headline: str, fix: str) -> Stop:
        self.stopped = True
        return Stop({rank: {"oom": {
            "time": now, "headline": headline, "fix": fix, "peak_rss": self.peak.get(rank),
            "limit": self.limit, "machine_used": round(self.machine_used, 4), "source": "rafter",
        }}}, ranks=[rank], reason="out of memory")

    def on_event(self, event) -> Optional[Note]:
        """A SIGKILL rafter did not send: the kernel OOM killer's, when its log (or memory) says so."""
        if not isinstance(event, ev.Exited) or event.signal != signal.SIGKILL or event.killed_by_rafter:
            return None
        outcome = self.view.outcomes[event.rank]
        if "oom" in outcome.evidence:
            return None
        pid = outcome.pid or self.group.pid(event.rank)
        record = self.kernel_log.oom_record(pid) if pid else None
        rose = near = False
        if record is None:
            if self.kernel_log.readable:
                return None  # the kernel log names every OOM victim, and not this one
            now_count = oom_kill_count()
            rose = None not in (now_count, self.oom_kills_at_start) and now_count > self.oom_kills_at_start
            near = self.machine_used >= self.threshold - 0.05 or bool(
                self.limit and self.last.get(event.rank, (0, 0))[0] > 0.9 * self.limit)
            if not (rose or near):
                return None
        rss, t = self.last.get(event.rank, (None, None))
        sample = (f"its last memory sample was {fmt_bytes(rss)} RSS, {time.time() - t:.1f} s before it died"
                  if rss is not None else "no memory sample of it was taken")
        if record is not None:
            why = f"kernel log: '{record[:160]}'"
        else:
            why = "the kernel's OOM-kill counter rose" if rose else f"machine memory was at {self.machine_used:.0%}"
        return Note({event.rank: {"oom": {
            "time": event.time,
            "headline": f"was killed by the kernel OOM killer (SIGKILL; {why}; {sample})",
            "fix": "The process (or its container/cgroup) ran out of memory. Use less memory per worker, fewer "
                   "workers per machine, or set ScalingConfig(resources_per_worker={'memory': ...}) so rafter "
                   "stops it with a clear error first. `dmesg` shows the kernel's report.",
            "peak_rss": self.peak.get(event.rank), "last_rss": rss, "source": "kernel",
            "oom_kill_counter_rose": bool(rose), "kernel_log": record,
        }}})

    def close(self) -> None:
        self.procs.clear()
        self.kernel_log.close()
