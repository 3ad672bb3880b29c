"""The driver's run log: it owns the run folder (lock), keeps the attempt and invocation log, appends rank
0's metrics, and writes ``rafter_run.json``. Checkpoints are ``CheckpointManager``'s; the format and every
name in the folder are ``rafter._run_folder``'s. Nothing here calls user code: the controller notifies
callbacks with what these methods return.

``rafter_run.json`` is small and rewritten (atomically, fsynced) only when an attempt or invocation starts
or ends; a report appends one line to ``metrics.jsonl`` and a commit one line to ``checkpoints.jsonl``, so
neither gets slower as the run grows, and the driver keeps no history in memory.
"""

from __future__ import annotations

import glob
import logging
import os
import time
from typing import Any, Dict, List, Optional

from rafter import _run_folder as rf
from rafter._controller.checkpoints import CheckpointManager
from rafter._run_folder import IncompatibleRunError, RunFolderError  # noqa: F401 - re-exported for callers
from rafter._run_lock import hold
from rafter._storage import Appender, Storage
from rafter.train._config import RunConfig
from rafter.train._result import Result

logger = logging.getLogger("rafter")

METRICS_SYNC_S = 10.0


class RunState:
    def __init__(self, run_config: RunConfig, storage: Storage, run_path: str, log_dir: str, lock) -> None:
        self.config = run_config
        self.storage = storage
        self.run_path = run_path
        self.log_dir = log_dir
        self.lock = lock
        self.fingerprint: Dict[str, Any] = {}
        self.record = rf.RunRecord(path=run_path, name=run_config.name, log_dir=log_dir,
                                   filesystem=run_config.storage_filesystem)
        self.attempts: List[Dict[str, Any]] = self.record.attempts
        self.invocations: List[Dict[str, Any]] = self.record.invocations
        self.checkpoints: Optional[CheckpointManager] = None
        self._metrics: Optional[Appender] = None
        self._spool: Optional[str] = None  # remote storage: metrics are appended locally, uploaded at commits
        self._synced = -METRICS_SYNC_S

    # -- opening / resuming --------------------------------------------------------------------
    @classmethod
    def open(cls, run_config: RunConfig, fingerprint: Dict[str, Any]) -> "RunState":
        """Own the run folder (or fail before changing anything), then load it or start it."""
        storage = Storage(run_config.storage_path, run_config.storage_filesystem)
        run_path = storage.join(run_config.name)
        log_dir = rf.default_log_dir(storage, run_path, run_config.name)
        if storage.local:
            os.makedirs(storage.root, exist_ok=True)
            rf.ensure_private_dir(run_path, "run folder")
        else:
            storage.makedirs(run_path)
            os.makedirs(os.path.dirname(os.path.dirname(log_dir)), exist_ok=True)
            rf.ensure_private_dir(os.path.dirname(log_dir), "log folder")
        lock = hold(storage, run_path)
        try:
            state = cls(run_config, storage, run_path, log_dir, lock)
            state.fingerprint = fingerprint
            state._load_or_create()
        except BaseException:
            lock.release()
            raise
        return state

    def _load_or_create(self) -> None:
        saved = rf.read_state(self.storage, self.run_path)
        record = self.record
        if saved is not None:
            self._check_compatible(saved)
            rf.replay_checkpoints(self.storage, self.run_path, saved, record)
            record.attempts[:] = saved.get("attempts", [])
            record.invocations[:] = saved.get("invocations", [])
            for row in rf.iter_jsonl(self.storage, self.storage.join_path(self.run_path, rf.METRICS_FILE)):
                record.num_reports, record.last_metrics = record.num_reports + 1, row
            record.last_metrics = rf.loads_metrics(record.last_metrics)
        else:
            existing = [n for n in self.storage.listdir(self.run_path) if n not in (rf.LOGS, rf.LOCK_FILE)]
            if existing:
                raise IncompatibleRunError(
                    f"The run folder {self.run_path} already holds files ({', '.join(existing[:5])}) but no "
                    f"{rf.STATE_FILE}: it was not written by rafter.", path=self.run_path,
                    fix="choose another RunConfig(name=...) or storage_path so the two runs don't mix")
        rf.ensure_private_dir(self.log_dir, "log folder")  # after the checks: a refused folder stays as it was
        cfg = self.config.checkpoint_config
        record.score = {"attribute": cfg.checkpoint_score_attribute, "order": cfg.checkpoint_score_order}
        journal = Appender(self.storage, self.storage.join_path(self.run_path, rf.CHECKPOINTS_FILE))
        self.checkpoints = CheckpointManager(self.storage, self.run_path, cfg, journal, record)
        if saved is not None and saved.get("format") == 1:  # carry format 1's list into the journal
            for c in record.checkpoints:
                journal.append(rf.dumps_line({"op": "commit", "name": c["name"], "number": c["number"],
                                              "metrics": c["metrics"], "files": None}), durable=True)
        self._remove_leftovers()
        self._open_metrics()
        self._begin_invocation()
        if saved is not None:
            where = self.checkpoints.verify_latest()
            logger.info(
                "Resuming run %r from %s (%d earlier attempt%s in %d invocation%s found in %s).",
                self.config.name, self.checkpoints.path(where["name"]) if where else
                "the beginning (it has no committed checkpoint)", len(self.attempts),
                "" if len(self.attempts) == 1 else "s", len(self.invocations) - 1,
                "" if len(self.invocations) == 2 else "s", self.run_path)
        self._save("running")

    def _remove_leftovers(self) -> None:
        """Staging folders, unlisted checkpoints, and a dead writer's ``rafter_run.json.tmp-<pid>``."""
        self.checkpoints.remove_invisible()
        if self.storage.local:
            for tmp in glob.glob(glob.escape(os.path.join(self.run_path, rf.STATE_FILE)) + ".tmp-*"):
                os.unlink(tmp)

    def _open_metrics(self) -> None:
        path = self.storage.join_path(self.run_path, rf.METRICS_FILE)
        if self.storage.local:
            self._metrics = Appender(self.storage, path)
            return
        self._spool = os.path.join(self.log_dir, f"metrics-{os.getpid()}.jsonl")
        with open(self._spool, "wb") as f:
            if self.storage.exists(path):
                f.write(self.storage.read_bytes(path))
        self._metrics = Appender(Storage(self.log_dir), self._spool)

    def _sync_metrics(self, force: bool = True) -> None:
        """Remote storage: upload the spooled ``metrics.jsonl`` (at most every METRICS_SYNC_S at commits, so
        frequent checkpoints don't re-upload a long history each time; always at the end)."""
        if self._spool is None or (not force and time.monotonic() - self._synced < METRICS_SYNC_S):
            return
        self.storage.fs.put_file(self._spool, self.storage.join_path(self.run_path, rf.METRICS_FILE))
        self._synced = time.monotonic()

    def _check_compatible(self, saved: Dict[str, Any]) -> None:
        theirs = saved.get("fingerprint", {}).get("train_fn")
        ours = self.fingerprint.get("train_fn")
        if theirs and ours and theirs != ours:
            raise IncompatibleRunError(
                f"The run folder {self.run_path} belongs to a run of train function {theirs!r}, but this run "
                f"trains {ours!r}. Resuming would mix two different runs.", path=self.run_path,
                fix="use another RunConfig(name=...), or delete that folder to start over")

    # -- invocations and attempts --------------------------------------------------------------
    def _begin_invocation(self) -> None:
        for inv in self.invocations:
            if inv.get("status") == "running":  # that driver died without finishing
                inv["status"] = "driver died"
                for a in self.attempts:
                    if a.get("invocation") == inv["invocation"] and a.get("end") is None:
                        a["error"] = a.get("error") or "the driver stopped (killed or crashed) during this attempt"
        self.invocations.append({"invocation": len(self.invocations) + 1, "start": time.time(), "end": None,
                                 "status": "running", "first_attempt": len(self.attempts) + 1,
                                 "pid": os.getpid()})

    def begin_attempt(self, world_size: int) -> int:
        """Start the next attempt (numbered across invocations too) and return its number."""
        number = len(self.attempts) + 1
        invocation = self.invocations[-1]["invocation"]
        if number == self.invocations[-1]["first_attempt"]:
            cause = "start" if invocation == 1 else "new invocation"
        else:
            cause = "restart"
        self.attempts.append({"attempt": number, "invocation": invocation, "cause": cause,
                              "first_report": self.record.num_reports, "error": None, "start": time.time(),
                              "end": None})
        self.checkpoints.begin_attempt(number, world_size)
        if cause == "restart":
            self.checkpoints.verify_latest()  # a file may have gone since the last attempt started
        self._save("running")
        return number

    def end_attempt(self, error_line: Optional[str]) -> List[dict]:
        """Close the attempt; returns checkpoints committed at its end (see CheckpointManager.end_attempt)."""
        self.attempts[-1]["error"] = error_line
        self.attempts[-1]["end"] = time.time()
        committed = self.checkpoints.end_attempt(succeeded=error_line is None)
        self.checkpoints.drop_staging()  # what is left there was never committed
        if committed:
            self._sync_metrics()
        return committed

    # -- reports -------------------------------------------------------------------------------
    def on_report(self, event) -> List[dict]:
        """One rank's report; returns the checkpoints it completed (committed)."""
        metrics = None
        if event.rank == 0:
            metrics = event.metrics
            self.record.last_metrics = metrics
            self.record.num_reports += 1
            self._metrics.append(rf.dumps_line(metrics))  # on disk now: callbacks may read it
        committed = self.checkpoints.on_report(event.rank, event.index, metrics, event.checkpoint)
        if committed:
            self._sync_metrics(force=False)
        return committed

    @property
    def next_number(self) -> int:
        """The number the next committed checkpoint gets (it changes when one is committed)."""
        return self.checkpoints.next_number

    @property
    def world_size(self) -> int:
        return self.checkpoints.world_size

    def checkpoint(self, entry: dict):
        from rafter.train._checkpoint import Checkpoint

        return Checkpoint(self.checkpoints.path(entry["name"]), filesystem=self.config.storage_filesystem)

    @property
    def latest_checkpoint_path(self) -> Optional[str]:
        latest = self.checkpoints.latest
        return self.checkpoints.path(latest["name"]) if latest else None

    # -- persistence ---------------------------------------------------------------------------
    def _save(self, status: str, error: Optional[str] = None) -> None:
        self.record.status, self.record.error = status, error
        self.storage.write_text_atomic(self.storage.join_path(self.run_path, rf.STATE_FILE), rf.dumps_line({
            "format": rf.FORMAT,
            "name": self.config.name,
            "status": status,
            "error": error,
            "fingerprint": self.fingerprint,
            "next_number": self.checkpoints.next_number,
            "score": self.record.score,
            "attempts": self.attempts,
            "invocations": self.invocations,
            "log_dir": self.log_dir,
        }))

    def finish(self, verdict) -> Result:
        """Record the run's end (finished, or failed with ``verdict``); returns the Result for ``on_end``."""
        status = ("preempted" if getattr(verdict, "kind", None) == "preempted" else "failed") if verdict else "finished"
        self._sync_metrics()
        self.invocations[-1].update(end=time.time(), status=status)
        self._save(status, verdict.first_line if verdict else None)
        if verdict is not None:
            self.storage.write_text_atomic(self.storage.join_path(self.run_path, rf.ERROR_FILE), str(verdict))
        return self.result(None, error=verdict)

    def close(self) -> None:
        """Let go of the run folder (always called, however ``fit`` ends)."""
        for appender in (self._metrics, self.checkpoints.journal if self.checkpoints else None):
            if appender is not None:
                appender.close()
        self._metrics = None
        if self._spool is not None:
            try:
                os.unlink(self._spool)
            except OSError:
                pass
            self._spool = None
        self.lock.release()

    def result(self, return_value: Any, error: Optional[BaseException] = None) -> Result:
        self.record.checkpoints = self.checkpoints.checkpoints
        return Result.from_record(self.record, return_value=return_value, error=error)
