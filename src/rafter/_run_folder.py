"""The run folder's format: every name in it, how each file is written, and ``read(path) -> RunRecord``.

Run folder ``<storage_path>/<name>/``::

    rafter_run.json        the run's state (atomic rewrite, small): status, attempts, invocations
    checkpoints.jsonl      append-only journal: one line per committed / removed / dropped checkpoint
    metrics.jsonl          every report of rank 0, one JSON object per line (append-only)
    checkpoint_000001/     committed checkpoints (the merged files of every rank that sent some)
    .staging/              checkpoints still being written (one folder per rank); cleaned on the next start
    .rafter_lock           the live driver that owns the run (pid, host, start); gone after it ends
    error.txt              the full verdict of a failed run
    logs/rank_<N>.log      each rank's stdout+stderr (local storage; otherwise a local temp folder)

The journals are read line by line: a line torn by a crash is skipped, and never hides later lines.
Code that needs these names takes them from here: the driver, the workers, the CLI and
``Result.from_path`` all go through it. It imports nothing of rafter above ``_storage``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional

from rafter._storage import Storage

logger = logging.getLogger("rafter")

STATE_FILE = "rafter_run.json"
CHECKPOINTS_FILE = "checkpoints.jsonl"
METRICS_FILE = "metrics.jsonl"
ERROR_FILE = "error.txt"
LOCK_FILE = ".rafter_lock"
STAGING = ".staging"
LOGS = "logs"
FORMAT = 2
READABLE_FORMATS = (1, 2)  # format 1 kept its checkpoints inside rafter_run.json


class RunFolderError(ValueError):
    """A run folder rafter can't use as it is. ``str()`` says what, why and the fix; the fields say the same."""

    def __init__(self, problem: str, *, path: str, fix: str) -> None:
        super().__init__(f"{problem} Fix: {fix}.")
        self.problem = problem
        self.path = path
        self.fix = fix

    def __reduce__(self):
        return (_rebuild, (type(self), self.problem, self.path, self.fix))


def _rebuild(cls, message, path, fix):
    return cls(message, path=path, fix=fix)


class IncompatibleRunError(RunFolderError):
    """The folder holds another run (another train function, not rafter's, or a newer format)."""


# -- names -----------------------------------------------------------------------------------------
def checkpoint_name(number: int) -> str:
    return f"checkpoint_{number:06d}"


def is_checkpoint_name(name: str) -> bool:
    return name.startswith("checkpoint_") and name[len("checkpoint_"):].isdigit()


def staging_rel(attempt: int, index: int, rank: Optional[int] = None) -> str:
    """Where a rank stages report ``index``'s files; each rank has its own folder so none overwrites another's."""
    base = f"{STAGING}/attempt_{attempt}_report_{index}"
    return base if rank is None else f"{base}/rank_{rank}"


def default_log_dir(storage: Storage, run_path: str, name: str) -> str:
    if storage.local:
        return os.path.join(run_path, LOGS)
    import tempfile

    return os.path.join(tempfile.gettempdir(), f"rafter-logs-{os.geteuid()}", name)


def split(path: str, filesystem: Any = None):
    """``(Storage of the parent, run name)`` for a run folder path or URI (on ``filesystem`` if given)."""
    path = os.fspath(path).rstrip("/")
    parent, _, name = path.rpartition("/")
    return Storage(parent or ("/" if path.startswith("/") else "."), filesystem), name


# -- JSON lines that stay valid JSON (NaN and infinities included) ---------------------------------
_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def dumps_line(value: Any) -> str:
    """One JSON line. NaN/inf become the strings "NaN"/"Infinity"/"-Infinity" (valid JSON) and are read back
    as floats by ``loads_metrics``."""
    try:
        return json.dumps(value, allow_nan=False, default=repr)
    except ValueError:
        return json.dumps(_finite(value), allow_nan=False, default=repr)


def loads_metrics(value: Any) -> Any:
    if isinstance(value, str):
        return _NON_FINITE.get(value, value)
    if isinstance(value, dict):
        return {k: loads_metrics(v) for k, v in value.items()}
    if isinstance(value, list):
        return [loads_metrics(v) for v in value]
    return value


def iter_jsonl(storage: Storage, path: str) -> Iterator[Any]:
    """Each parseable line of a journal; torn or garbled lines are skipped (never hide later lines)."""
    for line in storage.iter_lines(path):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except ValueError:
            logger.debug("skipped an unreadable line in %s", path)


class MetricsHistory(Sequence):
    """``Result.metrics_history``: rank 0's reports, read from ``metrics.jsonl`` on first use (not kept by the
    driver while it runs)."""

    def __init__(self, storage: Storage, path: str, limit: Optional[int] = None) -> None:
        self._storage, self._path, self._limit = storage, path, limit
        self._rows: Optional[List[Dict[str, Any]]] = None

    def _load(self) -> List[Dict[str, Any]]:
        if self._rows is None:
            rows = [loads_metrics(r) for r in iter_jsonl(self._storage, self._path) if isinstance(r, dict)]
            self._rows = rows if self._limit is None else rows[: self._limit]  # as of when the Result was made
        return self._rows

    def __getitem__(self, i):
        return self._load()[i]

    def __len__(self) -> int:
        return len(self._load())

    def __eq__(self, other) -> bool:
        return list(self) == list(other) if isinstance(other, (list, tuple, Sequence)) else NotImplemented

    def __repr__(self) -> str:
        return repr(self._load())


# -- the record ------------------------------------------------------------------------------------
@dataclass
class RunRecord:
    """Everything a run folder says, as plain data (what ``Result.from_path`` and ``rafter results`` show)."""

    path: str
    name: str
    status: str = "new"
    error: Optional[str] = None
    fingerprint: Dict[str, Any] = field(default_factory=dict)
    checkpoints: List[Dict[str, Any]] = field(default_factory=list)  # {"name", "number", "metrics", "files"}
    dropped: Dict[str, str] = field(default_factory=dict)  # damaged checkpoints left for inspection: name -> why
    next_number: int = 1
    attempts: List[Dict[str, Any]] = field(default_factory=list)
    invocations: List[Dict[str, Any]] = field(default_factory=list)
    log_dir: str = ""
    score: Dict[str, Any] = field(default_factory=dict)  # {"attribute", "order"} of CheckpointConfig
    num_reports: int = 0
    last_metrics: Optional[Dict[str, Any]] = None
    error_text: Optional[str] = None
    filesystem: Any = None  # RunConfig(storage_filesystem=...) / Result.from_path(storage_filesystem=...)


def _state_error(path: str, what: str) -> RunFolderError:
    return IncompatibleRunError(
        f"{path} is {what}, so rafter can't tell which run this folder holds.",
        path=path, fix="move that folder away (or pick another RunConfig(name=...)) and run again; "
                       "if it is a run of yours, restore its rafter_run.json from a backup.")


def read_state(storage: Storage, run_path: str) -> Optional[Dict[str, Any]]:
    """The parsed ``rafter_run.json``, None when absent; a clear error when corrupt or not rafter's."""
    path = storage.join_path(run_path, STATE_FILE)
    if not storage.exists(path):
        return None
    try:
        saved = json.loads(storage.read_text(path))
    except (ValueError, UnicodeDecodeError) as exc:
        raise _state_error(path, f"not valid JSON ({exc})") from None
    except OSError as exc:
        raise RunFolderError(f"{path} can't be read ({exc.strerror or exc}).", path=path,
                             fix=f"check that folder's permissions (ls -l {os.path.dirname(path)})") from None
    if not isinstance(saved, dict) or "format" not in saved:
        raise _state_error(path, "not a rafter state file (no \"format\" key)")
    if saved["format"] not in READABLE_FORMATS:
        raise IncompatibleRunError(
            f"{path} was written by an incompatible rafter (format {saved['format']!r}; this rafter reads "
            f"{', '.join(map(str, READABLE_FORMATS))}).", path=path,
            fix="use the rafter version that wrote it, or another RunConfig(name=...)")
    return saved


def replay_checkpoints(storage: Storage, run_path: str, saved: Dict[str, Any], record: RunRecord) -> None:
    """Fill ``record.checkpoints``/``dropped``/``next_number`` from the journal (or format 1's list)."""
    by_name: Dict[str, Dict[str, Any]] = {}
    highest = 0  # numbers of removed and dropped checkpoints are never given out again
    for c in saved.get("checkpoints", []) if saved.get("format") == 1 else []:
        by_name[c["name"]] = dict(c, files=None)
    for row in iter_jsonl(storage, storage.join_path(run_path, CHECKPOINTS_FILE)):
        if not isinstance(row, dict) or "name" not in row:
            continue
        op, name = row.get("op"), row["name"]
        if op == "commit" and isinstance(row.get("number"), int):
            highest = max(highest, row["number"])
            by_name[name] = {"name": name, "number": row["number"], "metrics": loads_metrics(row.get("metrics", {})),
                             "files": row.get("files")}
        elif op in ("remove", "drop"):
            by_name.pop(name, None)
            if op == "drop":
                record.dropped[name] = row.get("why", "")
    record.checkpoints = sorted(by_name.values(), key=lambda c: c["number"])
    numbers = [c["number"] for c in record.checkpoints]
    record.next_number = max([int(saved.get("next_number", 1)), highest + 1, *[n + 1 for n in numbers]])


def read(path: str, filesystem: Any = None) -> RunRecord:
    """Read a run folder (local path or URI). Raises RunFolderError when it is not a readable rafter run."""
    storage, name = split(path, filesystem)
    run_path = storage.join(name)
    saved = read_state(storage, run_path)
    if saved is None:
        raise RunFolderError(f"{path} is not a rafter run folder: it has no {STATE_FILE}.", path=path,
                             fix="give a run folder, <storage_path>/<run name>, e.g. ~/rafter_results/my_run")
    record = RunRecord(path=run_path, name=name, status=str(saved.get("status", "unknown")),
                       error=saved.get("error"), fingerprint=saved.get("fingerprint", {}),
                       attempts=saved.get("attempts", []), invocations=saved.get("invocations", []),
                       log_dir=saved.get("log_dir", ""), score=saved.get("score", {}), filesystem=filesystem)
    replay_checkpoints(storage, run_path, saved, record)
    count, last = 0, None
    for row in iter_jsonl(storage, storage.join_path(run_path, METRICS_FILE)):
        count, last = count + 1, row
    record.num_reports, record.last_metrics = count, loads_metrics(last) if last is not None else None
    missing = [c["name"] for c in record.checkpoints if not storage.exists(storage.join_path(run_path, c["name"]))]
    if missing:
        logger.warning("%s lists checkpoint%s %s, which %s missing from the folder; they are left out. "
                       "Restore them from a backup if you need them.", storage.join_path(run_path, CHECKPOINTS_FILE),
                       "s" if len(missing) > 1 else "", ", ".join(missing), "are" if len(missing) > 1 else "is")
        record.checkpoints = [c for c in record.checkpoints if c["name"] not in missing]
    error_path = storage.join_path(run_path, ERROR_FILE)
    if record.status == "failed" and storage.exists(error_path):
        record.error_text = storage.read_text(error_path)
    return record


def _score(c: Dict[str, Any], attr: str) -> Optional[float]:
    value = c.get("metrics", {}).get(attr)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def rank_checkpoints(checkpoints: List[Dict[str, Any]], attr: Optional[str], order: str = "max"):
    """Best first: by score when one is configured (checkpoints without a finite score last, newest first
    among them), else newest first."""
    if attr is None:
        return sorted(checkpoints, key=lambda c: -c["number"])
    sign = -1 if order == "max" else 1
    scored = [c for c in checkpoints if _score(c, attr) is not None]
    unscored = [c for c in checkpoints if _score(c, attr) is None]
    return sorted(scored, key=lambda c: (sign * _score(c, attr), -c["number"])) + sorted(
        unscored, key=lambda c: -c["number"])


# -- a folder others cannot tamper with ----------------------------------------------------------------
def ensure_private_dir(path: str, what: str) -> None:
    """Create ``path`` (mode 0755) or check that the existing one is a real folder of this user that no group or
    other user can write to; otherwise raise RunFolderError saying why."""
    import stat

    try:
        os.mkdir(path, 0o755)
        os.chmod(path, 0o755)  # whatever the umask: nobody else may write here
        return
    except FileExistsError:
        pass
    except OSError as exc:
        raise RunFolderError(f"rafter could not create the {what} {path} ({exc.strerror or exc}).", path=path,
                             fix="check the permissions of its parent folder, or choose another "
                                 "RunConfig(storage_path=...)") from None
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        kind = f"a symbolic link (to {os.readlink(path)})" if stat.S_ISLNK(st.st_mode) else "not a folder"
        raise RunFolderError(f"The {what} {path} is {kind}; rafter writes only into real folders it owns.",
                             path=path, fix=f"remove it (rm {path}) or choose another RunConfig(name=...)")
    why = None
    if st.st_uid != os.geteuid():
        why = f"is owned by uid {st.st_uid}, not by you (uid {os.geteuid()})"
    elif st.st_mode & 0o022:
        who = " and ".join(w for w, bit in (("group", 0o020), ("others", 0o002)) if st.st_mode & bit)
        why = f"is writable by {who} (mode {stat.filemode(st.st_mode)})"
    if why:
        raise RunFolderError(
            f"The {what} {path} {why}. Someone else could then replace files the workers load or plant links "
            f"that rafter would write through, so rafter refuses to use it.", path=path,
            fix=f"chmod go-w {path} if it is yours, or choose a RunConfig(storage_path=...) only you can write "
                f"to (e.g. ~/rafter_results)")
    if not os.access(path, os.W_OK | os.X_OK):
        raise RunFolderError(f"The {what} {path} can't be written to.", path=path,
                             fix=f"chmod u+rwx {path}, or choose another RunConfig(storage_path=...)")


def metrics_history(storage: Storage, run_path: str, limit: Optional[int] = None) -> MetricsHistory:
    return MetricsHistory(storage, storage.join_path(run_path, METRICS_FILE), limit)
