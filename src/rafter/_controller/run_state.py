"""Everything a run keeps in storage: its folder, metrics, committed checkpoints and retention.

Run folder ``<storage_path>/<name>/``::

    rafter_run.json        the run's state (atomic rewrite): checkpoints, attempts, status
    metrics.jsonl          every report of rank 0, one JSON object per line
    checkpoint_000001/     committed checkpoints (merged files of every rank that sent some)
    .staging/              checkpoints still being written; never visible, cleaned on the next start
    logs/rank_<N>.log      each rank's stdout+stderr (local storage; otherwise a local temp folder)

A checkpoint is visible only after (1) every rank's report with that index has arrived, so every
rank that sent files has finished writing them, (2) its staging folder was renamed to its final name
and (3) ``rafter_run.json`` lists it. A crash at any point leaves no torn checkpoint that looks valid.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from typing import Any, Dict, List, Optional

from rafter._controller.user_callbacks import rafter_callbacks
from rafter._storage import Storage
from rafter.train._config import RunConfig
from rafter.train._result import Result

logger = logging.getLogger("rafter")

STATE_FILE = "rafter_run.json"
FORMAT = 1


class IncompatibleRunError(ValueError):
    pass


class RunState:
    def __init__(self, run_config: RunConfig, storage: Storage, run_path: str, log_dir: str) -> None:
        self.config = run_config
        self.storage = storage
        self.run_path = run_path
        self.log_dir = log_dir
        self.checkpoints: List[Dict[str, Any]] = []  # committed: {"name", "metrics", "number"}
        self.next_number = 1
        self.attempts: List[Dict[str, Any]] = []
        self.history: List[Dict[str, Any]] = []
        self.last_metrics: Optional[Dict[str, Any]] = None
        self.world_size = 0
        self._pending: Dict[int, Dict[int, Any]] = {}
        self._pending_metrics: Dict[int, Dict[str, Any]] = {}
        self.fingerprint: Dict[str, Any] = {}
        self.callbacks = rafter_callbacks(run_config.callbacks)
        self._metrics_file = None

    # -- opening / resuming --------------------------------------------------------------------
    @classmethod
    def open(cls, run_config: RunConfig, fingerprint: Dict[str, Any]) -> "RunState":
        storage = Storage(run_config.storage_path)
        run_path = storage.join(run_config.name)
        if storage.local:
            log_dir = os.path.join(run_path, "logs")
        else:
            log_dir = os.path.join(tempfile.gettempdir(), "rafter-logs", run_config.name)
        os.makedirs(log_dir, exist_ok=True)
        state = cls(run_config, storage, run_path, log_dir)
        state.fingerprint = fingerprint
        state._load_or_create()
        return state

    def _state_path(self) -> str:
        return self.storage.join(self.config.name, STATE_FILE)

    def _load_or_create(self) -> None:
        path = self._state_path()
        if self.storage.exists(path):
            try:
                saved = self.storage.read_json(path)
            except (ValueError, OSError) as exc:
                raise IncompatibleRunError(
                    f"The run folder {self.run_path} has an unreadable {STATE_FILE} ({exc}). Use another "
                    f"RunConfig(name=...) or move that folder away."
                ) from None
            self._check_compatible(saved)
            self.checkpoints = [c for c in saved.get("checkpoints", []) if self.storage.exists(self._ckpt_path(c["name"]))]
            self.next_number = int(saved.get("next_number", len(self.checkpoints) + 1))
            self.attempts = saved.get("attempts", [])
            self.history = _read_jsonl(self.storage, self.storage.join(self.config.name, "metrics.jsonl"))
            self.last_metrics = self.history[-1] if self.history else None
            where = self.latest_checkpoint_path
            logger.info(
                "Resuming run %r from %s (%d earlier attempt%s found in %s).",
                self.config.name, where or "the beginning (it has no committed checkpoint)",
                len(self.attempts), "" if len(self.attempts) == 1 else "s", self.run_path,
            )
        else:
            existing = [n for n in self.storage.listdir(self.run_path) if n != "logs"]
            if existing:
                raise IncompatibleRunError(
                    f"The run folder {self.run_path} already holds files ({', '.join(existing[:5])}) but no "
                    f"{STATE_FILE}: it was not written by rafter. Choose another RunConfig(name=...) or "
                    f"storage_path so the two runs don't mix."
                )
            self.storage.makedirs(self.run_path)
        self._remove_invisible()
        self._save("running")

    def _remove_invisible(self) -> None:
        """Delete what a crash left half-done: staging folders, and checkpoint folders that were published
        but never listed in the state file (or dropped by retention). None of it was ever visible."""
        staging = self.storage.join(self.config.name, ".staging")
        if self.storage.exists(staging):
            self.storage.remove(staging)
        listed = {c["name"] for c in self.checkpoints}
        for name in self.storage.listdir(self.run_path):
            if name.startswith("checkpoint_") and name not in listed:
                self.storage.remove(self._ckpt_path(name))

    def _check_compatible(self, saved: Dict[str, Any]) -> None:
        if saved.get("format") != FORMAT:
            raise IncompatibleRunError(
                f"The run folder {self.run_path} was written by an incompatible rafter (format "
                f"{saved.get('format')!r}, this rafter writes {FORMAT}). Use another RunConfig(name=...)."
            )
        theirs = saved.get("fingerprint", {}).get("train_fn")
        ours = self.fingerprint.get("train_fn")
        if theirs and ours and theirs != ours:
            raise IncompatibleRunError(
                f"The run folder {self.run_path} belongs to a run of train function {theirs!r}, but this run "
                f"trains {ours!r}. Resuming would mix two different runs. Use another RunConfig(name=...), or "
                f"delete that folder to start over."
            )

    # -- attempts ------------------------------------------------------------------------------
    def begin_attempt(self, world_size: int) -> int:
        """Start the next attempt (numbered across driver restarts too) and return its number."""
        self.world_size = world_size
        self._pending.clear()
        self._pending_metrics.clear()
        number = len(self.attempts) + 1
        self.attempts.append({"attempt": number, "first_report": len(self.history), "error": None,
                              "start": time.time()})
        self._save("running")
        for cb in self.callbacks:
            hook = getattr(cb, "on_attempt_start", None)
            if hook:
                hook(attempt=number, num_workers=world_size, run_path=self.run_path)
        return number

    def end_attempt(self, error_line: Optional[str]) -> None:
        self.attempts[-1]["error"] = error_line
        self.attempts[-1]["end"] = time.time()
        staging = self.storage.join(self.config.name, ".staging")
        if error_line and self.storage.exists(staging):
            self.storage.remove(staging)

    @property
    def attempt_number(self) -> int:
        return self.attempts[-1]["attempt"] if self.attempts else 0

    # -- reports and checkpoints ---------------------------------------------------------------
    def on_report(self, event) -> None:
        if event.rank == 0:
            self.last_metrics = event.metrics
            self.history.append(event.metrics)
            if self.storage.local:
                if self._metrics_file is None:
                    self._metrics_file = open(self.storage.join(self.config.name, "metrics.jsonl"), "a",
                                              buffering=1)  # line-buffered: each report is on disk at once
                self._metrics_file.write(json.dumps(event.metrics, default=repr) + "\n")
            self._pending_metrics[event.index] = event.metrics
            for cb in self.callbacks:
                hook = getattr(cb, "after_report", None)
                if hook:
                    hook(metrics=event.metrics, rank=0, run_path=self.run_path)
        pending = self._pending.setdefault(event.index, {})
        pending[event.rank] = event.checkpoint
        if len(pending) == self.world_size:
            del self._pending[event.index]
            metrics = self._pending_metrics.pop(event.index, {})
            staged = [c for c in pending.values() if c]
            if staged:
                self._commit(staged[0]["staging"], metrics)

    def stage_path(self, attempt: int, index: int) -> str:
        return self.storage.join(self.config.name, ".staging", f"attempt_{attempt}_report_{index}")

    def _ckpt_path(self, name: str) -> str:
        return self.storage.join(self.config.name, name)

    def _commit(self, staging: str, metrics: Dict[str, Any]) -> None:
        name = f"checkpoint_{self.next_number:06d}"
        self.storage.publish(staging, self._ckpt_path(name))
        self.checkpoints.append({"name": name, "metrics": metrics, "number": self.next_number})
        self.next_number += 1
        removed = self._apply_retention()
        self._save("running")
        if not self.storage.local:
            self._write_history()
        for path in removed:
            self.storage.remove(path)
        for cb in self.callbacks:
            hook = getattr(cb, "on_checkpoint", None)
            if hook:
                hook(checkpoint=self._as_checkpoint(name), metrics=metrics, run_path=self.run_path)

    def _apply_retention(self) -> List[str]:
        cfg = self.config.checkpoint_config
        keep = cfg.num_to_keep
        if keep is None or len(self.checkpoints) <= keep:
            return []
        latest = self.checkpoints[-1]
        ranked = self._ranked()
        kept = ranked[:keep]
        if latest not in kept:
            kept = ranked[: keep - 1] + [latest]
        removed = [c for c in self.checkpoints if c not in kept]
        self.checkpoints = [c for c in self.checkpoints if c in kept]
        return [self._ckpt_path(c["name"]) for c in removed]

    def _ranked(self) -> List[Dict[str, Any]]:
        """Best first: by score when one is configured (unscored last), else newest first."""
        cfg = self.config.checkpoint_config
        attr = cfg.checkpoint_score_attribute
        if attr is None:
            return sorted(self.checkpoints, key=lambda c: -c["number"])
        sign = -1 if cfg.checkpoint_score_order == "max" else 1
        scored = [c for c in self.checkpoints if isinstance(c["metrics"].get(attr), (int, float))]
        unscored = [c for c in self.checkpoints if c not in scored]
        return sorted(scored, key=lambda c: (sign * c["metrics"][attr], -c["number"])) + sorted(
            unscored, key=lambda c: -c["number"])

    @property
    def latest_checkpoint_path(self) -> Optional[str]:
        return self._ckpt_path(self.checkpoints[-1]["name"]) if self.checkpoints else None

    def _as_checkpoint(self, name: str):
        from rafter.train._checkpoint import Checkpoint

        return Checkpoint(self._ckpt_path(name))

    # -- persistence ---------------------------------------------------------------------------
    def _save(self, status: str, error: Optional[str] = None) -> None:
        self.storage.write_json_atomic(self._state_path(), {
            "format": FORMAT,
            "name": self.config.name,
            "status": status,
            "error": error,
            "fingerprint": self.fingerprint,
            "checkpoints": self.checkpoints,
            "next_number": self.next_number,
            "attempts": self.attempts,
            "log_dir": self.log_dir,
        })

    def _write_history(self) -> None:
        self.storage.write_text_atomic(
            self.storage.join(self.config.name, "metrics.jsonl"),
            "".join(json.dumps(m, default=repr) + "\n" for m in self.history),
        )

    def notify_failure(self, verdict) -> None:
        for cb in self.callbacks:
            hook = getattr(cb, "on_failure", None)
            if hook:
                hook(error=verdict, run_path=self.run_path)

    def finish(self, verdict) -> None:
        if self._metrics_file is not None:
            self._metrics_file.close()
            self._metrics_file = None
        if not self.storage.local:
            self._write_history()
        self._save("failed" if verdict else "finished", verdict.first_line if verdict else None)
        if verdict is not None:
            self.storage.write_text_atomic(self.storage.join(self.config.name, "error.txt"), str(verdict))
        result = self.result(None, error=verdict)
        for cb in self.callbacks:
            hook = getattr(cb, "on_end", None)
            if hook:
                hook(result=result, run_path=self.run_path)

    def result(self, return_value: Any, error: Optional[BaseException] = None) -> Result:
        ranked = self._ranked() if self.config.checkpoint_config.checkpoint_score_attribute else list(self.checkpoints)
        return Result(
            metrics=self.last_metrics,
            checkpoint=self._as_checkpoint(self.checkpoints[-1]["name"]) if self.checkpoints else None,
            error=error,
            path=self.run_path,
            metrics_history=list(self.history),
            return_value=return_value,
            best_checkpoints=[(self._as_checkpoint(c["name"]), c["metrics"]) for c in ranked],
            attempts=[dict(a) for a in self.attempts],
        )


def _read_jsonl(storage: Storage, path: str) -> List[Dict[str, Any]]:
    if not storage.exists(path):
        return []
    rows = []
    for line in storage.read_text(path).splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            break  # a line torn by a crash ends the readable history
    return rows


def load_result(path: str) -> Result:
    """``Result.from_path``: rebuild a Result from a run folder."""
    from rafter.train._errors import TrainingFailedError

    path = path.rstrip("/")
    parent, _, name = path.rpartition("/")
    storage = Storage(parent or ".")
    state_path = storage.join(name, STATE_FILE)
    if not storage.exists(state_path):
        raise FileNotFoundError(f"{path} is not a rafter run folder: it has no {STATE_FILE}.")
    saved = storage.read_json(state_path)
    cfg = RunConfig(name=name, storage_path=parent or ".")
    state = RunState(cfg, storage, storage.join(name), saved.get("log_dir", ""))
    state.checkpoints = saved.get("checkpoints", [])
    state.attempts = saved.get("attempts", [])
    state.history = _read_jsonl(storage, storage.join(name, "metrics.jsonl"))
    state.last_metrics = state.history[-1] if state.history else None
    error = None
    if saved.get("status") == "failed":
        error_path = storage.join(name, "error.txt")
        text = storage.read_text(error_path) if storage.exists(error_path) else (saved.get("error") or "failed")
        error = TrainingFailedError(text)
    return state.result(None, error=error)
