"""A worker's half of ``report(metrics, checkpoint=...)``: copy this rank's files into the run's staging
folder for that report. The driver publishes the folder once every rank's report has arrived.
"""

from __future__ import annotations

import os
from typing import Optional

from rafter._storage import Storage


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
            # memory:// lives in the driver's process only: ask the driver to copy, and wait.
            session.send(("upload", index, local_dir, staging))
            reply = session.channel.recv()
            if reply[0] != "uploaded" or reply[2]:
                raise RuntimeError(f"rafter could not store this rank's checkpoint files: {reply[2]}")
            files = reply[1]
        else:
            files = storage.upload_dir(local_dir, staging)
    return {"staging": staging, "files": files, "rank": spec.rank}
