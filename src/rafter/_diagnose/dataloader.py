"""A DataLoader worker killed by the kernel's OOM killer is named as out of memory, like a rank would be.

torch reports such a death in the rank as ``RuntimeError: DataLoader worker (pid 123) is killed by
signal: Killed.`` (or "... exited unexpectedly"); the kernel log names the OOM killer's victims by pid.
"""

from __future__ import annotations

import re

from typing import Optional

from rafter._backends import events as ev
from rafter._diagnose.decision import Note
from rafter._diagnose.memory import KernelLog, oom_kill_count

_KILLED = re.compile(r"DataLoader worker \(pid(?:\(s\))? (?P<pids>\d+(?:, \d+)*)\) "
                     r"(?:is killed by signal: (?P<signal>[\w ]+)|exited unexpectedly)")


class DataLoaderWatch:
    def __init__(self, view) -> None:
        self.attempt = view
        self.kernel_log = KernelLog()
        self.oom_kills_at_start = oom_kill_count()

    def tick(self, now: float) -> None:
        pass

    def on_event(self, event) -> Optional[Note]:
        if not isinstance(event, ev.Errored):
            return None
        m = _KILLED.search(event.record.get("message", ""))
        outcome = self.attempt.outcomes[event.rank]
        if not m or "oom" in outcome.evidence:
            return None
        pids = [int(p) for p in m["pids"].split(", ")]
        found = [(pid, record) for pid in pids for record in [self.kernel_log.oom_record(pid)] if record]
        if found:
            pid, record = found[0]
            why = f"kernel log: '{record[:160]}'"
        else:
            count = oom_kill_count()
            if self.kernel_log.readable or None in (count, self.oom_kills_at_start) or count <= self.oom_kills_at_start:
                return None  # not an OOM kill (or nothing says it was)
            pid, record, why = pids[0], None, "the kernel's OOM-kill counter rose as it died"
        return Note({event.rank: {"oom": {
            "time": event.record.get("time"),
            "headline": f"ran out of memory: its DataLoader worker (pid {pid}) was killed by the kernel OOM killer "
                        f"({why})",
            "details": event.record.get("traceback", ""),
            "fix": "Each DataLoader worker holds its own copy of what the dataset loads. Use fewer "
                   "DataLoader(num_workers=...), load samples lazily in __getitem__ instead of in __init__, or "
                   "give the workers more memory. `dmesg` shows the kernel's report.",
            "source": "kernel", "kernel_log": record, "dataloader_pid": pid,
        }}})

    def close(self) -> None:
        self.kernel_log.close()
