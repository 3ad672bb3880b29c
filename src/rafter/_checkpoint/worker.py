"""A worker's half of ``report(metrics, checkpoint=...)``: copy this rank's files into the run's staging
folder for that report. The driver publishes the folder once every rank's report has arrived.
"""

from __future__ import annotations

import os
from typing import Optional

from rafter._storage import Storage
from rafter._worker import faults


def stage_checkpoint(session, checkpoint, index: int, dir_name: Optional[str] = None) -> dict:
    from rafter.train._checkpoint import Checkpoint

    if isinstance(checkpoint, (str, os.PathLike)):
        checkpoint = Checkpoint.from_directory(os.fspath(checkpoint))
    if not isinstance(checkpoint, Checkpoint):
        raise TypeError(
            f"rafter.train.report(checkpoint=...): expected a rafter.train.Checkpoint, got "
            f"{type(checkpoint).__name__}. Use Checkpoint.from_directory(path)."
        )
    spec = session.spec
    storage = Storage(spec.run_path)
    staging = storage.join(".staging", f"attempt_{spec.attempt}_report_{index}")
    with checkpoint.as_directory() as local_dir:
        if storage.process_local:
            files = driver_copy(session, "upload", local_dir, staging)
            faults.hit("upload", report=index)  # files staged, report not yet sent
        else:
            files = storage.upload_dir(local_dir, staging, on_file=lambda: faults.hit("upload", report=index))
    return {"staging": staging, "files": files, "rank": spec.rank}


def driver_copy(session, op: str, source: str, dest: str) -> int:
    """Have the driver copy files, for storage only the driver's process can see (memory://); waits."""
    kind, count, error = session.request(("storage", op, source, dest))
    if error:
        raise RuntimeError(f"rafter could not {op} checkpoint files ({source} -> {dest}): {error}")
    return count
