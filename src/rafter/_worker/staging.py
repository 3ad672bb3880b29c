"""A worker's half of ``report(metrics, checkpoint=...)``: put this rank's files into its own staging folder
for that report (moved, cloned or copied: see ``Storage.upload_dir``), hashing them on the way. The driver merges the ranks' folders and publishes the checkpoint
once every rank's report has arrived (``rafter._controller.checkpoints``).
"""

from __future__ import annotations

import os

from rafter import _run_folder
from rafter._storage import Storage
from rafter._worker import faults
from rafter._worker.driver_copy import copy_via_driver


def stage_checkpoint(session, checkpoint, index: int, dir_name=None, consume: bool = False) -> dict:
    """Returns ``{"staging": folder, "files": manifest, "rank": r}`` for the report message. ``consume``: the
    caller deletes the checkpoint's folder afterwards, so its files may be moved rather than copied."""
    from rafter.train._checkpoint import Checkpoint

    if isinstance(checkpoint, (str, os.PathLike)):
        checkpoint = Checkpoint.from_directory(os.fspath(checkpoint))
    if not isinstance(checkpoint, Checkpoint):
        raise TypeError(
            f"rafter.train.report(checkpoint=...): expected a rafter.train.Checkpoint, got "
            f"{type(checkpoint).__name__}. Use Checkpoint.from_directory(path)."
        )
    spec = session.spec
    storage = Storage(spec.run_path, spec.storage_filesystem)
    staging = storage.join(_run_folder.staging_rel(spec.attempt, index, spec.rank))
    with checkpoint.as_directory() as local_dir:
        if not os.path.isdir(local_dir):
            raise FileNotFoundError(
                f"rafter.train.report(checkpoint=...): the checkpoint folder {local_dir} does not exist (any more): it "
                f"was removed before report() could copy it. Keep the folder until report() returns, e.g. "
                f"`with tempfile.TemporaryDirectory() as d: save(d); train.report(metrics, "
                f"checkpoint=Checkpoint.from_directory(d))`.")
        if storage.process_local:
            files = copy_via_driver(session, "upload", local_dir, staging)
            faults.hit("upload", report=index)  # files staged, report not yet sent
        else:
            files = storage.upload_dir(local_dir, staging, on_file=lambda: faults.hit("upload", report=index),
                                       consume=consume)
    return {"staging": staging, "files": files, "rank": spec.rank, "dir_name": dir_name}
