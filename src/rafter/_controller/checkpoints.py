"""Committed checkpoints: the commit barrier, the merge of every rank's files, retention, and resume checks.

A checkpoint becomes visible only after (1) every rank's report with that index arrived (so each rank that
sent files has finished writing them), (2) the ranks' files were merged into one folder, renamed to its
final name and the rename fsynced, and (3) a line in ``checkpoints.jsonl`` lists it (fsynced). A crash at
any point leaves nothing torn that looks valid; the next start removes what was never listed.

Ranks stage into their own folders, so none overwrites another's files: a relative path sent by two ranks
with different content is an error naming the path and the ranks (identical content is kept once). Each
commit appends one journal line, whatever the number of checkpoints before it.

Pure bookkeeping over a ``Storage``: no processes, no callbacks (the controller notifies those).
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional

from rafter import _run_folder as rf
from rafter._storage import Appender, Storage
from rafter.train._errors import FailureKind, TrainingFailedError

logger = logging.getLogger("rafter")

RANK0_METRICS_KEPT = 10_000  # rank 0's metrics held for reports other ranks have not made yet (bounded)


class CheckpointConflictError(TrainingFailedError):
    """Two ranks sent the same relative path with different content in one checkpoint."""


def _ranks(ranks) -> str:
    ranks = sorted(ranks)
    return f"rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))}"


class CheckpointManager:
    def __init__(self, storage: Storage, run_path: str, config, journal: Appender, record: rf.RunRecord) -> None:
        self.storage = storage
        self.run_path = run_path
        self.config = config
        self.journal = journal
        self.checkpoints: List[Dict[str, Any]] = record.checkpoints  # {"name", "number", "metrics", "files"}
        self.dropped: Dict[str, str] = record.dropped
        self.next_number = record.next_number
        self.world_size = 0
        self.attempt = 0
        self._last: Dict[int, int] = {}  # rank -> index of its latest report in this attempt
        # How many ranks have each latest index (-1: none yet), and the smallest of those: the last report every
        # rank has made. Kept per report, so a report costs O(1) however many ranks there are.
        self._at: Dict[int, int] = {}
        self._done = -1
        self._pending: Dict[int, Dict[int, dict]] = {}  # index -> {rank: staged} until every rank reported
        self._rank0: Dict[int, Dict[str, Any]] = {}
        self._warned_unscored = False

    def path(self, name: str) -> str:
        return self.storage.join_path(self.run_path, name)

    @property
    def latest(self) -> Optional[Dict[str, Any]]:
        return self.checkpoints[-1] if self.checkpoints else None

    # -- the barrier ------------------------------------------------------------------------------
    def begin_attempt(self, attempt: int, world_size: int) -> None:
        self.attempt, self.world_size = attempt, world_size
        self._last.clear()
        self._at = {-1: world_size} if world_size else {}
        self._done = -1
        self._pending.clear()
        self._rank0.clear()

    def on_report(self, rank: int, index: int, metrics: Optional[dict], staged: Optional[dict]) -> List[dict]:
        """Record one rank's report; returns the checkpoints it completed and that were committed."""
        self._advance(rank, index)
        if staged:
            self._pending.setdefault(index, {})[rank] = staged
        if metrics is not None:
            self._rank0[index] = metrics
            if len(self._rank0) > RANK0_METRICS_KEPT:
                del self._rank0[next(iter(self._rank0))]
        done = self._done if self.world_size else index
        committed = [self.commit(i, self._pending.pop(i), self._rank0.get(i, {}))
                     for i in sorted(i for i in self._pending if i <= done)] if self._pending else []
        while self._rank0 and next(iter(self._rank0)) <= done:  # held in report order
            del self._rank0[next(iter(self._rank0))]
        return committed

    def _advance(self, rank: int, index: int) -> None:
        old = self._last.get(rank, -1)
        self._last[rank] = index
        if not self.world_size or rank >= self.world_size or old == index:
            return
        left = self._at.get(old, 0) - 1
        if left > 0:
            self._at[old] = left
        else:
            self._at.pop(old, None)
        self._at[index] = self._at.get(index, 0) + 1
        if index < self._done:
            self._done = index
        elif self._at and self._done not in self._at:
            top = max(self._done, index)
            while self._done not in self._at and self._done < top:  # steps once per report index, in all
                self._done += 1

    def end_attempt(self, succeeded: bool) -> List[dict]:
        """Checkpoints some ranks reported and others never did: committed with a warning when every rank
        finished (their files are complete), else named in a warning and dropped."""
        committed = []
        for index in sorted(self._pending):
            staged = self._pending.pop(index)
            missing = [r for r in range(self.world_size) if self._last.get(r, -1) < index]
            counts = ", ".join(f"rank {r}: {self._last.get(r, -1) + 1}" for r in range(self.world_size))
            where = f"report {index + 1}'s checkpoint (from {_ranks(staged)})"
            if succeeded:
                entry = self.commit(index, staged, self._rank0.get(index, {}))
                committed.append(entry)
                logger.warning(
                    "%s was never reported by %s (reports made: %s); every rank finished, so it is "
                    "committed as %s with the files that arrived. Have every rank call train.report() the same "
                    "number of times.", where, _ranks(missing), counts, entry["name"])
            else:
                logger.warning("%s was not committed: %s had not reported it when attempt %d ended.",
                               where, _ranks(missing), self.attempt)
        self._rank0.clear()
        return committed

    # -- commit -----------------------------------------------------------------------------------
    def _merge(self, index: int, staged: Dict[int, dict]) -> Dict[str, Dict[str, Any]]:
        files: Dict[str, Dict[str, Any]] = {}
        conflicts = []
        for rank in sorted(staged):
            for rel, info in sorted((staged[rank].get("files") or {}).items()):
                seen = files.get(rel)
                if seen is None:
                    files[rel] = dict(info, rank=rank)
                elif not self._same_file(rel, seen, staged[seen["rank"]], info, staged[rank]):
                    conflicts.append(f"{rel} (rank {seen['rank']}: {seen['size']} bytes, rank {rank}: "
                                     f"{info['size']} bytes)")
        if conflicts:
            self.storage.remove(self.storage.join_path(self.run_path, rf.staging_rel(self.attempt, index)))
            raise CheckpointConflictError(
                f"Ranks wrote different files under the same name into report {index + 1}'s checkpoint: "
                f"{'; '.join(conflicts[:5])}{' ...' if len(conflicts) > 5 else ''}. Committing either would lose "
                f"the other rank's data, so nothing was committed. Give each rank's files their own names, e.g. "
                f"f\"model_rank{{train.get_context().get_world_rank()}}.pt\", or write the file on rank 0 only.",
                kind=FailureKind.CHECKPOINT, attempt_errors=[])
        return files

    def _same_file(self, rel: str, a: dict, staged_a: dict, b: dict, staged_b: dict) -> bool:
        """Two ranks staged a file of the same name: the same bytes? Sizes first; then hashes, which the driver
        computes here for a file a rank moved or cloned into its staging (the worker hashes only what it
        copies), and records in the manifest."""
        if a["size"] != b["size"]:
            return False
        for info, folder in ((a, staged_a), (b, staged_b)):
            if "sha256" not in info:
                info["sha256"] = self.storage.sha256(self.storage.join_path(folder["staging"], rel))
        return a["sha256"] == b["sha256"]

    def commit(self, index: int, staged: Dict[int, dict], metrics: Dict[str, Any]) -> dict:
        files = self._merge(index, staged)
        base_rank = min(staged)
        base = staged[base_rank]["staging"]
        for rel, info in files.items():
            if info["rank"] != base_rank:
                src = self.storage.join_path(staged[info["rank"]]["staging"], rel)
                self.storage.move(src, self.storage.join_path(base, rel))
        name = staged[min(staged)].get("dir_name") or rf.checkpoint_name(self.next_number)  # rank 0's, as Ray
        if not staged[base_rank].get("in_place"):  # NO_UPLOAD / checkpoint_upload_fn: already in the run folder
            self._replace_same_name(name)
            self.storage.publish(base, self.path(name))
        elif any(c["name"] == name for c in self.checkpoints):  # the same folder reported again: listed once
            self.checkpoints[:] = [c for c in self.checkpoints if c["name"] != name]
            self.journal.append(rf.dumps_line({"op": "remove", "name": name}), durable=True)
        entry = {"name": name, "number": self.next_number, "metrics": metrics, "files": files}
        self.journal.append(rf.dumps_line(dict(entry, op="commit")), durable=True)
        self.checkpoints.append(entry)
        self.next_number += 1
        self._warn_if_unscored(entry)
        for old in self._retention():
            self.journal.append(rf.dumps_line({"op": "remove", "name": old["name"]}), durable=True)
            self.storage.remove(self.path(old["name"]))
        self.storage.remove(self.storage.join_path(self.run_path, rf.staging_rel(self.attempt, index)))  # the other ranks' folders
        return entry

    def _replace_same_name(self, name: str) -> None:
        """``report(checkpoint_dir_name=...)`` reusing a committed checkpoint's name: the new one replaces it."""
        same = [c for c in self.checkpoints if c["name"] == name]
        if not same:
            if self.storage.exists(self.path(name)):  # published by a run that crashed before listing it
                self.storage.remove(self.path(name))
            return
        logger.warning("report(checkpoint_dir_name=%r) names a committed checkpoint; the new checkpoint replaces "
                       "it. Give each checkpoint its own name (e.g. f\"checkpoint_epoch_{epoch}\") to keep both.",
                       name)
        self.checkpoints[:] = [c for c in self.checkpoints if c["name"] != name]
        self.journal.append(rf.dumps_line({"op": "remove", "name": name}), durable=True)
        self.storage.remove(self.path(name))

    def _warn_if_unscored(self, entry: dict) -> None:
        attr = self.config.checkpoint_score_attribute
        if attr is None or self._warned_unscored or rf._score(entry, attr) is not None:
            return
        self._warned_unscored = True
        value = entry["metrics"].get(attr, "missing")
        logger.warning(
            "%s was reported with %s=%r, but CheckpointConfig(checkpoint_score_attribute=%r) ranks "
            "checkpoints by it; checkpoints without a finite %r are ranked below every one that has it. Report it "
            "with each checkpoint: train.report({%r: ...}, checkpoint=...).", entry["name"], attr, value, attr,
            attr, attr)

    def ranked(self) -> List[dict]:
        return rf.rank_checkpoints(self.checkpoints, self.config.checkpoint_score_attribute,
                                   self.config.checkpoint_score_order)

    def _retention(self) -> List[dict]:
        keep = self.config.num_to_keep
        if keep is None or len(self.checkpoints) <= keep:
            return []
        latest = self.checkpoints[-1]
        ranked = self.ranked()
        kept = ranked[:keep]
        if latest not in kept:
            kept = ranked[: keep - 1] + [latest]
        kept_names = {c["name"] for c in kept}
        removed = [c for c in self.checkpoints if c["name"] not in kept_names]
        self.checkpoints[:] = [c for c in self.checkpoints if c["name"] in kept_names]
        return removed

    # -- resume -----------------------------------------------------------------------------------
    def _damage(self, c: dict) -> List[str]:
        if not self.storage.exists(self.path(c["name"])):
            return ["the folder is missing"]
        if c.get("files") is None:
            return []  # written before manifests existed
        sizes = self.storage.sizes(self.path(c["name"]))
        problems = []
        for rel, info in sorted(c["files"].items()):
            if rel not in sizes:
                problems.append(f"{rel} is missing")
            elif sizes[rel] != info["size"]:
                problems.append(f"{rel} has {sizes[rel]} bytes, {info['size']} were committed")
        return problems[:5] + ([f"and {len(problems) - 5} more"] if len(problems) > 5 else [])

    def verify_latest(self) -> Optional[dict]:
        """The newest checkpoint whose files are all there with their committed sizes. Damaged ones are
        dropped from the run (left on disk for inspection), each with a warning saying what was missing."""
        while self.checkpoints:
            c = self.checkpoints[-1]
            problems = self._damage(c)
            if not problems:
                return c
            why = "; ".join(problems)
            self.checkpoints.pop()
            self.dropped[c["name"]] = why
            self.journal.append(rf.dumps_line({"op": "drop", "name": c["name"], "why": why}), durable=True)
            fallback = self.checkpoints[-1]["name"] if self.checkpoints else None
            logger.warning("%s is damaged (%s); resuming from %s instead. The damaged folder is left "
                           "in place for you to inspect; delete it when done.", self.path(c["name"]), why,
                           fallback or "the beginning (no intact checkpoint is left)")
        return None

    def remove_invisible(self) -> None:
        """Delete what a crash left half-done: staging folders, and checkpoint folders that were published but
        never listed (or whose removal by retention was journaled). None of it was ever visible."""
        self.storage.remove(self.storage.join_path(self.run_path, rf.STAGING))
        listed = {c["name"] for c in self.checkpoints} | set(self.dropped)
        for name in self.storage.listdir(self.run_path):
            if rf.is_checkpoint_name(name) and name not in listed:
                self.storage.remove(self.path(name))

    def drop_staging(self) -> None:
        self.storage.remove(self.storage.join_path(self.run_path, rf.STAGING))
