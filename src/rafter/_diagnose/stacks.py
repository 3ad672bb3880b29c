"""Read faulthandler stack dumps and say where each rank is ("in all_reduce", "at train.py:14").

Pure functions over text, unit-testable without processes.
"""

from __future__ import annotations

import linecache
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+) in (?P<func>\S+)')
_THREAD = re.compile(r"^(Current thread|Thread) 0x[0-9a-f]+")
_COLLECTIVE_FILES = ("torch/distributed/distributed_c10d.py", "torch/distributed/c10d_logger.py")
_LIBRARY_MARKERS = ("/site-packages/", "/dist-packages/", "/lib/python3",
                    os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep)


@dataclass
class Frame:
    file: str
    line: int
    func: str

    def where(self) -> str:
        return f"{self.file.rsplit('/', 1)[-1]}:{self.line} in {self.func}"

    def source(self) -> str:
        return linecache.getline(self.file, self.line).strip()


@dataclass
class Location:
    collective: Optional[str]  # "all_reduce" when blocked inside torch.distributed
    user_frame: Optional[Frame]  # innermost frame of the user's own code

    def describe(self) -> str:
        at = ""
        if self.user_frame is not None:
            src = self.user_frame.source()
            at = f"at {self.user_frame.where()}" + (f" (`{src}`)" if src else "")
        if self.collective:
            return f"waiting in {self.collective}" + (f", called {at}" if at else "")
        return at or "in an unknown place"


def parse_threads(text: str) -> List[List[Frame]]:
    """Each thread's frames, most recent call first."""
    threads: List[List[Frame]] = []
    for line in text.splitlines():
        if _THREAD.match(line):
            threads.append([])
            continue
        m = _FRAME.match(line)
        if m and threads:
            threads[-1].append(Frame(m["file"], int(m["line"]), m["func"]))
    return threads


def training_thread(threads: List[List[Frame]]) -> Optional[List[Frame]]:
    for frames in threads:
        if any(f.file.endswith("rafter/_worker/bootstrap.py") and f.func == "run_worker" for f in frames):
            return frames
    return threads[0] if threads else None


def _is_user(frame: Frame) -> bool:
    return not any(marker in frame.file for marker in _LIBRARY_MARKERS) and not frame.file.startswith("<")


def locate(text: str) -> Location:
    frames = training_thread(parse_threads(text)) or []
    collective = None
    for frame in frames:
        if frame.file.endswith(_COLLECTIVE_FILES[0]):
            collective = frame.func  # the outermost c10d function wins (e.g. all_reduce over _wait)
    user = next((f for f in frames if _is_user(f)), None)
    return Location(collective, user)


def single_out(locations: Dict[int, Location]) -> Tuple[List[int], str]:
    """Which ranks hold the others up, and a one-line summary of where everyone is."""
    waiting = {r for r, loc in locations.items() if loc.collective}
    others = sorted(set(locations) - waiting)
    groups: Dict[str, List[int]] = {}
    for r in sorted(locations):
        key = locations[r].collective or f"#{r}"
        groups.setdefault(key, []).append(r)
    if others and waiting:
        culprits = others
    elif len(groups) > 1:  # all in collectives, but not the same one: the minority is out of step
        smallest = min(groups.values(), key=len)
        culprits = smallest
    else:
        culprits = []
    parts = []
    for key, ranks in groups.items():
        label = ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(map(str, ranks))
        parts.append(f"{label} {locations[ranks[0]].describe() if key.startswith('#') else 'waiting in ' + key}")
    return culprits, "; ".join(parts)


def _thread_blocks(text: str) -> List[List[str]]:
    blocks: List[List[str]] = []
    for line in text.splitlines():
        if _THREAD.match(line) or not blocks:
            blocks.append([])
        blocks[-1].append(line)
    return blocks


def without_rafter_threads(text: str) -> str:
    """A faulthandler dump without rafter's own helper threads (the collectives answerer)."""
    keep = [b for b in _thread_blocks(text) if not any("rafter/_worker/collectives.py" in line for line in b)]
    return "\n".join(line for b in keep for line in b)


def training_stack(text: str) -> str:
    """The training thread's frames of a dump, down to rafter's worker entry point (what the user wrote)."""
    blocks = [b for b in _thread_blocks(text) if any("in run_worker" in line for line in b)]
    block = blocks[0] if blocks else [line for b in _thread_blocks(without_rafter_threads(text)) for line in b]
    out = []
    for line in block:
        if "rafter/_worker/bootstrap.py" in line and line.startswith(" "):
            break
        out.append(line)
    return "\n".join(out)


def trim_dump(dump: str) -> str:
    """A faulthandler dump without rafter's helper threads and without the frames below the worker's entry
    point (inherited from the process it was forked from)."""
    out, skipping = [], False
    for line in without_rafter_threads(dump).splitlines():
        if not line.startswith(" "):
            skipping = False
        if skipping or line.startswith("Extension modules:"):
            continue
        out.append(line)
        if "in run_worker" in line and "rafter/_worker/bootstrap.py" in line:
            skipping = True
    return "\n".join(out)
