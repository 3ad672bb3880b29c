"""``report(checkpoint_upload_mode=..., delete_local_checkpoint_after_upload=..., checkpoint_upload_fn=...)``.

SYNC copies this rank's files into its staging folder before ``report()`` returns. ASYNC does it on one
background thread per worker and returns at once; the report reaches the driver when its files are staged,
and every later report of this rank is queued behind it, so the driver still sees them in order and
commits a checkpoint only when every rank's upload is done. An upload that fails fails the attempt with
an error naming the rank, the report and the file. NO_UPLOAD and ``checkpoint_upload_fn`` leave the files
where they are: that folder must be inside the run folder, and is committed in place.

In local mode (``num_workers=0``) ASYNC uploads run before ``report()`` returns: the in-process driver and
torchrun's process group are used from the training thread only.
"""

from __future__ import annotations

import os
import queue
import shutil
import threading
from typing import Any, Callable, Optional

from rafter._worker import messages as msg


class Uploader:
    """The background thread of one worker's ASYNC uploads (a pool of one, as in Ray)."""

    def __init__(self, session) -> None:
        self.session = session
        self.error: Optional[BaseException] = None
        self._queue: "queue.Queue[Callable[[], None]]" = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="rafter-checkpoint-upload", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if self.error is None:
                    job()
            except BaseException as exc:  # noqa: BLE001 - reported to the driver, which fails the attempt
                self.error = exc
                _report_error(self.session, exc)
            finally:
                self._queue.task_done()

    def submit(self, job: Callable[[], None]) -> None:
        self._queue.put(job)

    @property
    def busy(self) -> bool:
        return self._queue.unfinished_tasks > 0

    def drain(self) -> None:
        """Wait until every queued upload and report went out; raise if one failed."""
        self._queue.join()
        if self.error is not None:
            raise RuntimeError(str(self.error)) from self.error


def _report_error(session, exc: BaseException) -> None:
    from rafter._worker.records import exception_record

    try:
        session.send(msg.Errored(session.spec.rank, dict(exception_record(exc, "checkpoint upload"), exit_code=None)))
    except OSError:
        pass


def _in_run_folder(path: str, run_path: str) -> bool:
    parent = path.rstrip("/").rpartition("/")[0]
    return parent.rstrip("/") == run_path.rstrip("/")


def _in_place(session, checkpoint, index: int, how: str) -> dict:
    spec = session.spec
    path = checkpoint.path
    if not _in_run_folder(path, spec.run_path):
        raise ValueError(
            f"rafter.train.report(checkpoint=Checkpoint({path!r}), {how}): a checkpoint that is not uploaded must "
            f"already be a folder of the run folder {spec.run_path}. Write it there, e.g. to "
            f"os.path.join(rafter.train.get_context().get_storage().experiment_fs_path, 'checkpoint_{index + 1}'), "
            f"or use checkpoint_upload_mode=CheckpointUploadMode.SYNC to have rafter copy it."
        )
    return {"staging": path, "files": {}, "rank": spec.rank, "dir_name": os.path.basename(path.rstrip("/")),
            "in_place": True}


def report(session, index: int, metrics: dict, checkpoint: Any, dir_name: Optional[str], mode,
           delete_local: Optional[bool], upload_fn) -> None:
    """Everything ``rafter.train.report`` does after checking its arguments."""
    from rafter.train._checkpoint import Checkpoint
    from rafter.train._reported import CheckpointUploadMode
    from rafter._worker.staging import stage_checkpoint

    if checkpoint is not None and isinstance(checkpoint, (str, os.PathLike)):
        checkpoint = Checkpoint.from_directory(os.fspath(checkpoint))
    if delete_local is None:
        delete_local = mode.default_delete_local_checkpoint_after_upload()
    uploader = getattr(session, "uploader", None)

    def send(staged) -> None:
        session.send_report(index, metrics, staged)

    # The folder is deleted after the upload: its files may move into the staging (no copy) instead.
    consume = bool(checkpoint is not None and delete_local and checkpoint._storage.local
                   and not _in_run_folder(checkpoint.path, session.spec.run_path))

    def upload() -> dict:
        try:
            staged = stage_checkpoint(session, checkpoint, index, dir_name, consume=consume)
        except OSError as exc:
            what = f"file {exc.filename}" if getattr(exc, "filename", None) else f"checkpoint {checkpoint.path}"
            raise RuntimeError(
                f"Rank {session.spec.rank}: uploading {what} of report {index + 1} "
                f"(checkpoint_upload_mode={mode.name}) failed: {type(exc).__name__}: {exc}. With ASYNC, keep "
                f"the checkpoint folder until the upload is done: create it with tempfile.mkdtemp() (rafter deletes "
                f"it after the upload) rather than inside `with tempfile.TemporaryDirectory()`."
            ) from exc
        if consume:
            shutil.rmtree(checkpoint.path, ignore_errors=True)
        return staged

    if checkpoint is None:
        if uploader is not None and uploader.busy:
            uploader.submit(lambda: send(None))  # behind the uploads still running: the driver sees reports in order
        else:
            send(None)
        return
    if upload_fn is not None:
        session.drain_uploads()
        uploaded = upload_fn(checkpoint, dir_name or f"checkpoint_report_{index + 1}")
        if not isinstance(uploaded, Checkpoint):
            raise TypeError(
                f"rafter.train.report(checkpoint_upload_fn={getattr(upload_fn, '__name__', upload_fn)}): it returned "
                f"{type(uploaded).__name__}; it must return the uploaded rafter.train.Checkpoint."
            )
        send(_in_place(session, uploaded, index, "checkpoint_upload_fn=..."))
    elif mode is CheckpointUploadMode.NO_UPLOAD:
        session.drain_uploads()
        send(_in_place(session, checkpoint, index, "checkpoint_upload_mode=NO_UPLOAD"))
    elif mode is CheckpointUploadMode.ASYNC and not getattr(session.channel, "in_process", False):
        if uploader is None:
            uploader = session.uploader = Uploader(session)
        uploader.submit(lambda: send(upload()))
    else:
        session.drain_uploads()
        send(upload())
