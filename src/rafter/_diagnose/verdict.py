"""Turn what each rank did into one verdict: the root cause first, its consequences after.

Pure functions over ``RankOutcome`` records, unit-testable without processes.
"""

from __future__ import annotations

import re
import signal as signal_mod
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from rafter._diagnose.stacks import trim_dump
from rafter.train._errors import WorkerGroupError

# Errors a rank raises because *another* rank went away or stalled.
_COLLATERAL = re.compile(
    r"Connection closed by peer|Connection reset by peer|Broken pipe|ECONNRESET|EPIPE|"
    r"Socket Timeout|Timed out waiting|timed out|Application timeout caused pair closure|"
    r"NCCL communicator was aborted|ncclRemoteError|remote process exited|peer closed|"
    r"Connection refused|failed to recv|Read error|recvBytes|sendBytes|"
    r"Gloo connectFullMesh failed|DistNetworkError|DistStoreError",
    re.IGNORECASE,
)
_NATIVE_CRASH = {signal_mod.SIGSEGV, signal_mod.SIGBUS, signal_mod.SIGILL, signal_mod.SIGFPE, signal_mod.SIGABRT}


@dataclass
class RankOutcome:
    rank: int
    pid: Optional[int] = None
    host: Optional[str] = None
    reports: int = 0
    finished: bool = False
    error: Optional[dict] = None  # exception record from the worker
    exit_code: Optional[int] = None
    signal: Optional[int] = None
    exit_time: Optional[float] = None
    killed_by_rafter: bool = False
    kill_reason: Optional[str] = None
    log_tail: List[str] = field(default_factory=list)
    evidence: Dict[str, Any] = field(default_factory=dict)  # e.g. memory samples, stack, oom counters

    @property
    def failed(self) -> bool:
        if self.finished:
            return False
        return self.error is not None or self.exit_time is not None


@dataclass
class Failure:
    rank: int
    kind: str
    time: float
    headline: str  # "raised RuntimeError: boom"
    details: str  # traceback or crash stack
    fix: str
    collateral: bool
    outcome: RankOutcome

    def as_dict(self) -> Dict[str, Any]:
        o = self.outcome
        return dict(
            rank=self.rank, kind=self.kind, time=self.time, headline=self.headline, collateral=self.collateral,
            pid=o.pid, host=o.host, exit_code=o.exit_code, signal=o.signal, reports=o.reports,
            details=self.details, evidence=o.evidence,
        )


def signal_name(sig: int) -> str:
    try:
        return signal_mod.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def _crash_stack(tail: List[str]) -> str:
    """The faulthandler block (``Fatal Python error: ...`` and the stacks after it) from a log tail."""
    for i, line in enumerate(tail):
        if line.startswith("Fatal Python error"):
            return "\n".join(tail[i:])
    return ""


_DATALOADER = re.compile(r"^Caught (?P<type>[\w.]+) in DataLoader worker process (?P<n>\d+)\.")


def _dataloader_message(rec: dict) -> Optional[str]:
    """"ValueError in DataLoader worker process 0: bad sample 3" for torch's re-raised DataLoader error, whose
    first line is only "Caught ValueError in DataLoader worker process 0." and whose real message is last."""
    text = rec.get("message", "")
    m = _DATALOADER.match(text.lstrip())
    if not m:
        return None
    name = m["type"].rsplit(".", 1)[-1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    last = next((line for line in reversed(lines) if line.split(":", 1)[0].rsplit(".", 1)[-1] == name), None)
    real = last.split(":", 1)[1].strip() if last and ":" in last else ""
    return f"{m['type']} in DataLoader worker process {m['n']}" + (f": {real}" if real else "")


def classify(o: RankOutcome) -> Failure:
    """What happened to one failed rank."""
    t = o.exit_time or 0.0
    if o.evidence.get("oom"):
        oom = o.evidence["oom"]
        return Failure(o.rank, "oom", oom.get("time", t), oom["headline"], oom.get("details", ""), oom["fix"], False, o)
    if o.evidence.get("hang"):
        hang = o.evidence["hang"]
        return Failure(o.rank, "hang", hang.get("time", t), hang["headline"], hang.get("details", ""), hang["fix"], False, o)
    if o.evidence.get("lost_node"):  # the Ray backend: the rank's node left the cluster
        lost = o.evidence["lost_node"]
        return Failure(o.rank, "lost_node", lost.get("time", t), lost["headline"], lost.get("details", ""),
                       lost["fix"], False, o)
    if o.error is not None:
        rec = o.error
        t = rec.get("time", t)
        message = _first_line(rec.get("message", ""))
        if rec.get("type") == "SystemExit":
            code = rec.get("exit_code")
            return Failure(o.rank, "exit", t, f"called sys.exit({code})", rec.get("traceback", ""),
                           "Find the sys.exit() call in the traceback; raise an exception instead to get a clear error.",
                           False, o)
        message = _dataloader_message(rec) or message
        kind = "serialization" if rec.get("type") == "SerializationError" else "exception"
        if rec.get("phase") in ("setup", "loading the train function"):
            kind = "startup"
        headline = (f"raised {message}" if message.startswith(f"{rec['type']} in DataLoader worker") else
                    f"raised {rec['type']}" + (f": {message}" if message else ""))
        collateral = bool(_COLLATERAL.search(rec.get("message", ""))) or o.killed_by_rafter
        fix = ("Fix the error shown in the traceback above; it happened in your train function."
               if rec.get("phase") == "train function" else
               f"The error happened while rafter was {rec.get('phase')}; see the traceback.")
        return Failure(o.rank, kind, t, headline, rec.get("traceback", ""), fix, collateral, o)
    if o.killed_by_rafter:
        return Failure(o.rank, "stopped", t, o.kill_reason or "stopped by rafter", "", "", True, o)
    if o.signal is not None:
        name = signal_name(o.signal)
        if o.signal in _NATIVE_CRASH:
            stack = trim_dump(_crash_stack(o.log_tail))
            return Failure(o.rank, "crash", t, f"crashed with {name} in native code", stack or "\n".join(o.log_tail[-15:]),
                           "A native crash comes from a C/C++/CUDA extension or from memory corruption (ctypes, a "
                           "mismatched CUDA/driver build). The Python stack above shows the call that crashed.",
                           False, o)
        if o.signal == signal_mod.SIGKILL:
            return Failure(o.rank, "signal", t, "was killed by SIGKILL", "\n".join(o.log_tail[-10:]),
                           "SIGKILL comes from outside the process: `kill -9`, a job scheduler, or the kernel OOM "
                           "killer (check `dmesg` for 'Out of memory'). rafter did not send it.",
                           False, o)
        return Failure(o.rank, "signal", t, f"was killed by {name}", "\n".join(o.log_tail[-10:]),
                       f"{name} was sent by another process (a scheduler, a user, or the system).", False, o)
    code = o.exit_code
    how = "exited with code 0 before its train function returned" if code == 0 else f"exited with code {code}"
    return Failure(o.rank, "exit", t, f"{how} (os._exit or a native library called exit)",
                   "\n".join(o.log_tail[-10:]),
                   "Look at the rank's last log lines; a library may have called exit() or os._exit().", False, o)


_SOURCE_REF = re.compile(r"\[[^\]]*\.(?:cc|cpp|h|hpp):\d+\] ?")
_NOISE = re.compile(r"\d+\.\d+\.\d+\.\d+(:\d+)?|\[[^\]]*\]:\d+|0x[0-9a-f]+")


_PEER_LOST = re.compile(r"Connection (closed|reset) by peer|Broken pipe|ECONNRESET|EPIPE", re.IGNORECASE)


def _short(headline: str) -> str:
    """A consequence in one short line: no C++ source references, addresses or ports; first sentence.
    The many ways a collective reports a vanished peer read as one."""
    if _PEER_LOST.search(headline):
        return "lost the connection to a failed peer inside a collective (connection closed/reset by peer)"
    text = _NOISE.sub("…", _SOURCE_REF.sub("", headline))
    cut = text.find(". ")
    return (text[: cut + 1] if 0 < cut < 150 else text[:150]).strip()


def _group_consequences(failures: List[Failure]) -> List[Tuple[List[int], str]]:
    groups: Dict[str, List[int]] = {}
    for f in failures:
        groups.setdefault(_short(f.headline), []).append(f.rank)
    return [(sorted(ranks), headline) for headline, ranks in groups.items()]


def _own_lines(tail: List[str], details: str) -> List[str]:
    """The rank's last log lines that are not the traceback already shown."""
    shown = {line.strip() for line in details.splitlines() if line.strip()}
    return [line for line in tail if line.strip() and line.strip() not in shown]


def _ranks(ranks: List[int]) -> str:
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(map(str, ranks))


# Roots that a collective story explains better: errors that are consequences, hangs, native crashes
# (a dtype mismatch aborts inside gloo), ranks stopped by rafter.
_EXPLAINABLE = ("hang", "crash", "stopped")


def _out_of_step(root: Failure, failed: List[Failure], outcomes: List[RankOutcome]) -> Optional[Failure]:
    """The failure that a comparison of the ranks' collectives points to, when it beats ``root``."""
    from rafter._diagnose.collectives import counts_line, explain
    from rafter._diagnose.stacks import training_stack

    if not (root.collateral or root.kind in _EXPLAINABLE):
        return None
    by_rank = {o.rank: o for o in outcomes}
    hang = next((x.evidence["hang"] for x in outcomes if x.evidence.get("hang")), None)
    found = explain(by_rank, hang)
    if found is None:
        return None
    if root.kind == "crash" and found.kind != "collective_mismatch":
        return None  # behind because it crashed (or beside it): the crash says more; a mismatch aborts inside gloo
    o = by_rank[found.rank]
    own = next((f for f in failed if f.rank == found.rank), None)
    details = []
    counts = counts_line(by_rank)
    if counts:
        details.append(counts)
    if hang is not None:
        details += ["", hang.get("details", "")]
    elif o.evidence.get("stack"):
        details += ["", f"Stack of rank {found.rank} when the first rank failed:",
                    training_stack(o.evidence["stack"]).rstrip()]
    elif own is not None and own.details:
        details += ["", own.details]
    when = found.time or (own.time if own else 0.0)
    return Failure(found.rank, found.kind, when, found.headline, "\n".join(details), found.fix, False, o)


def build_verdict(
    outcomes: List[RankOutcome],
    *,
    run_start: float,
    log_dir: str,
    attempt: int = 1,
    attempt_errors: Optional[List[str]] = None,
) -> WorkerGroupError:
    failed = [classify(o) for o in outcomes if o.failed]
    if not failed:
        raise ValueError("build_verdict called without any failed rank")
    roots = [f for f in failed if not f.collateral] or failed
    root = min(roots, key=lambda f: (f.time, f.rank))
    root = _out_of_step(root, failed, outcomes) or root
    rest = [f for f in failed if f is not root and f.rank != root.rank]
    o = root.outcome
    where = f"pid {o.pid}, host {o.host}" if o.pid else f"host {o.host}"
    elapsed = max(0.0, root.time - run_start) if root.time else 0.0
    lines = [
        f"Rank {root.rank} ({where}) {root.headline} — at report {o.reports}, {elapsed:.1f} s into the run"
        + (f" (attempt {attempt})." if attempt > 1 else ".")
    ]
    if root.details:
        lines += ["", "Evidence:", *("  " + line for line in root.details.rstrip().splitlines())]
    own = _own_lines(o.log_tail, root.details) if root.kind != "crash" else []
    if own and root.kind in ("exception", "exit", "serialization", "oom", "signal", "startup"):
        lines += ["", f"Last log lines of rank {root.rank}:", *("  | " + line for line in own[-8:])]
    if root.fix:
        lines += ["", f"Likely fix: {root.fix}"]
    lines += ["", f"Full logs: {log_dir}/rank_<N>.log"]
    returned = [x for x in outcomes if x.finished and x.rank != root.rank]
    if rest or returned:
        lines += ["", "Consequences (other ranks failed or were stopped after that):"]
        for ranks, headline in _group_consequences(rest):
            lines.append(f"  {_ranks(ranks)}: {headline}")
        for x in returned:
            lines.append(f"  rank {x.rank}: had returned from its train function (at report {x.reports})")
    if attempt_errors:
        lines += ["", f"Earlier attempts ({len(attempt_errors)}) also failed:"]
        lines += [f"  attempt {i + 1}: {first}" for i, first in enumerate(attempt_errors)]
    return WorkerGroupError(
        "\n".join(lines),
        kind=root.kind,
        rank=root.rank,
        pid=o.pid,
        host=o.host,
        evidence=dict(o.evidence, headline=root.headline, details=root.details, fix=root.fix, reports=o.reports,
                      seconds_into_run=elapsed, exit_code=o.exit_code, signal=o.signal),
        failures=[root.as_dict()] + [f.as_dict() for f in rest],
        attempt_errors=list(attempt_errors or []),
        log_dir=log_dir,
    )


def keep_verdict(verdict: WorkerGroupError, write, *args):
    """Run ``write(*args)`` (recording the failure in the run folder). If that fails (a full disk), the
    verdict still reaches the user, with a note on what could not be recorded; returns None then."""
    try:
        return write(*args)
    except OSError as exc:
        verdict.args = (f"{verdict}\n\nrafter could not record this failure in the run folder ({exc}); its "
                        f"state files may be out of date (they may still say the run is running).",)
        return None
