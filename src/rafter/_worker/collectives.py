"""Each rank's progress through collectives, kept by torch's flight recorder and written out on demand.

torch records every collective of a process group in a ring buffer (``TORCH_FR_BUFFER_SIZE``, gloo and
NCCL alike), including DDP's gradient all-reduce inside ``loss.backward()``: its sequence number, kind,
shapes, dtypes, start time and the Python frames that called it. Recording costs a few microseconds per
call. rafter turns it on in every worker (unless the user set the variable) and writes a short summary to
``<log_dir>/collectives_rank_<N>_attempt_<A>.json`` and sends it to the driver:

- when the train function raises or returns (from the training thread, before the driver hears of it);
- when the driver asks (``COLLECTIVES_SIGNAL``), from a thread that waits for that signal: the training
  thread may be blocked inside a collective, where no Python signal handler would run;
- when this rank has gone quiet (no report for a while, see ``Quiet``), from the same thread, unasked: a
  collective mismatch that hangs silently then ends the attempt within a second. The timer lives here, in
  every rank, so that the driver need not wake every few hundred milliseconds to notice a silence.

The driver compares the summaries of all ranks (``rafter._diagnose.collectives``).
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import threading
import time
from collections import Counter
from typing import Any, Dict, List, Optional

COLLECTIVES_SIGNAL = signal.SIGUSR2
BUFFER_SIZE = "256"  # dumped in a few ms; "after N batches" counts within it
RECENT = 8
QUIET_S = 0.4  # the shortest quiet spell after which a rank sends its summary unasked
MAX_QUIET_S = 120.0

_DTYPES = {"Float": "float32", "Double": "float64", "Half": "float16", "BFloat16": "bfloat16", "Long": "int64",
           "Int": "int32", "Short": "int16", "Char": "int8", "Byte": "uint8", "Bool": "bool"}
_state: Dict[str, Any] = {}


def summary_path(log_dir: str, rank: int, attempt: int = 1) -> str:
    return os.path.join(log_dir, f"collectives_rank_{rank}_attempt_{attempt}.json")


class Quiet:
    """When this rank counts as quiet: no report for ``QUIET_S``, or 3 x the longest gap between its reports so
    far (a run that reports once an epoch is not quiet between epochs), doubled after each unasked summary
    while the quiet lasts (a long evaluation costs a handful of summaries, each a few ms of this rank's time).

    ``progressed`` runs in the training thread at every report (a few float operations); ``due`` and
    ``went_quiet`` in the answering thread."""

    def __init__(self, now: float) -> None:
        self.progress = now  # the last report (or the start)
        self.since = now  # the last report or unasked summary: the current spell's start
        self.reports = 0
        self.longest = 0.0
        self.quiet_s = QUIET_S
        self.done = False  # the train function returned or raised: nothing more to tell unasked

    def progressed(self, now: float) -> None:
        if self.reports:  # the time before the first report (model loading, data) is not a step
            self.longest = max(self.longest, now - self.since)
        self.reports += 1
        self.progress = self.since = now
        self.quiet_s = max(QUIET_S, 3 * self.longest)

    def due(self) -> float:
        return self.since + self.quiet_s

    def went_quiet(self, now: float) -> None:
        self.since = now
        self.quiet_s = min(MAX_QUIET_S, self.quiet_s * 2)


def progressed(now: float) -> None:
    """This rank reported at ``now`` (``WorkerSession.send_report``)."""
    quiet = _state.get("quiet")
    if quiet is not None:
        quiet.progressed(now)


def arm(log_dir: str, rank: int, attempt: int = 1) -> None:
    """Turn the flight recorder on (before ``init_process_group``) and start the thread that answers the
    driver. Call from the worker's only thread, before any other starts: the signal is blocked in every
    thread (threads inherit the mask) and taken by the waiting thread alone."""
    os.environ.setdefault("TORCH_FR_BUFFER_SIZE", BUFFER_SIZE)
    os.environ.setdefault("TORCH_FR_DUMP_TEMP_FILE", os.path.join(log_dir, f"collectives_rank_{rank}_flight_recorder_"))
    _state.update(path=summary_path(log_dir, rank, attempt), lock=threading.Lock(), quiet=Quiet(time.time()))
    try:
        os.remove(_state["path"])  # left by an earlier fit() of this run
    except OSError:
        pass
    signal.pthread_sigmask(signal.SIG_BLOCK, {COLLECTIVES_SIGNAL})
    # Children forked by the user's code (DataLoader workers) get the usual mask back.
    os.register_at_fork(after_in_child=lambda: signal.pthread_sigmask(signal.SIG_UNBLOCK, {COLLECTIVES_SIGNAL}))
    threading.Thread(target=_answer, name="rafter-collectives", daemon=True).start()


def _answer() -> None:
    quiet: Quiet = _state["quiet"]
    while True:
        wait = None if quiet.done else quiet.due() - time.time()
        if wait is None:
            signal.sigwait({COLLECTIVES_SIGNAL})
            write("asked")
        elif wait > 0:
            if signal.sigtimedwait({COLLECTIVES_SIGNAL}, wait) is not None:
                write("asked")
        else:  # no report since due() was computed: a quiet spell
            since = quiet.progress
            quiet.went_quiet(time.time())
            if _initialized():  # before init_process_group there is nothing to compare
                write("quiet", since=since)


def _initialized() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _entry(e: dict) -> dict:
    return {
        "seq": e["collective_seq_id"],
        "kind": e["profiling_name"].split(":", 1)[-1],
        "shapes": [list(s) for s in e.get("input_sizes") or []],
        "dtypes": [_DTYPES.get(d, d) for d in e.get("input_dtypes") or []],
        "time": e["time_created_ns"] / 1e9,
    }


def signature(entry: dict) -> str:
    return f"{entry['kind']} {entry['shapes']} {entry['dtypes']}"


def summarize(raw: Optional[bytes]) -> Dict[str, Any]:
    """The default process group's collectives: the last few in full, and how often each signature
    (kind, shapes, dtypes) occurs in the recorder's window."""
    entries: List[dict] = []
    if raw:
        dump = pickle.loads(raw)
        for e in dump.get("entries", []):
            group = e.get("process_group") or ("0",)
            if e.get("is_p2p") or str(group[0]) != "0":
                continue
            entries.append(_entry(e))
    entries.sort(key=lambda e: e["seq"])
    return {
        "count": entries[-1]["seq"] if entries else 0,
        "recent": entries[-RECENT:],
        "signatures": dict(Counter(signature(e) for e in entries)),
    }


def write(why: str, since: Optional[float] = None) -> None:
    """Write this rank's summary (atomically). ``why``: "asked", "quiet" (unasked; ``since``: this rank's last
    report), "returned" or "raised" (the last two also end the quiet timer). Never raises: diagnosis must not
    fail the run."""
    path = _state.get("path")
    if path is None:
        return
    if why in ("returned", "raised") and "quiet" in _state:
        _state["quiet"].done = True
    try:
        raw = None
        if _initialized():
            from torch._C._distributed_c10d import _dump_fr_trace

            raw = _dump_fr_trace(True, False)  # without stack traces: symbolizing them takes seconds
        record = dict(summarize(raw), why=why, time=time.time())
        if since is not None:
            record["since"] = since
        with _state["lock"]:
            tmp = f"{path}.tmp"
            with open(tmp, "w") as f:
                json.dump(record, f)
            os.replace(tmp, path)
        _send(record)  # the driver may be on another machine (Ray): the file is for the user
    except Exception:  # noqa: BLE001
        pass


def _send(record: dict) -> None:
    from rafter._worker import messages
    from rafter._worker.session import get_session

    session = get_session()
    if session is not None:
        session.send(messages.CollectivesSummary(session.spec.rank, record))
