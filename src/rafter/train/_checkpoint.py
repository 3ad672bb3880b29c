"""``Checkpoint``: a folder of files, local or in any fsspec storage."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from typing import Any, Dict, Iterator, Optional

from rafter._storage import Storage, is_uri
from rafter.train._validation import check_checkpoint_args

METADATA_FILE = ".metadata.json"


class Checkpoint:
    """A reference to a checkpoint folder (``path`` is a local path or a URI such as ``s3://b/run/ckpt``)."""

    def __init__(self, path: str, filesystem: Any = None) -> None:
        self.path = check_checkpoint_args(path, filesystem)
        if not is_uri(self.path) and filesystem is None:
            self.path = os.path.abspath(self.path)
        self._storage = Storage(self.path, filesystem)

    @classmethod
    def from_directory(cls, path) -> "Checkpoint":
        path = os.fspath(path)
        if not is_uri(path) and not os.path.isdir(path):
            raise FileNotFoundError(f"Checkpoint.from_directory({path!r}): no such directory.")
        return cls(path)

    @property
    def filesystem(self):
        """The filesystem the checkpoint lives on: the one given, else pyarrow's (fsspec's without pyarrow)."""
        from rafter._storage import public_filesystem

        return public_filesystem(self.path, self._storage.filesystem)

    def to_directory(self, path: Optional[str] = None) -> str:
        """Copy the checkpoint's files into ``path`` (a new temp folder if None) and return it."""
        target = os.fspath(path) if path is not None else tempfile.mkdtemp(prefix="rafter-checkpoint-")
        os.makedirs(target, exist_ok=True)
        if self._storage.local:
            shutil.copytree(self.path, target, dirs_exist_ok=True)
            return target
        from rafter._worker.session import get_session

        session = get_session()
        if self._storage.process_local and session is not None:
            from rafter._worker.driver_copy import copy_via_driver

            copy_via_driver(session, "download", self.path, target)
        else:
            self._storage.download_dir(self.path, target)
        return target

    @contextlib.contextmanager
    def as_directory(self) -> Iterator[str]:
        """A local folder with the files: the checkpoint itself when local (no copy), else a temp copy."""
        if self._storage.local:
            yield self.path
            return
        tmp = self.to_directory()
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # -- metadata ------------------------------------------------------------------------------
    def _meta_path(self) -> str:
        return self._storage.join_path(self.path, METADATA_FILE)

    def get_metadata(self) -> Dict[str, Any]:
        path = self._meta_path()
        return json.loads(self._storage.read_text(path)) if self._storage.exists(path) else {}

    def set_metadata(self, metadata: Dict[str, Any]) -> None:
        self._storage.write_text_atomic(self._meta_path(), json.dumps(metadata))

    def update_metadata(self, metadata: Dict[str, Any]) -> None:
        merged = self.get_metadata()
        merged.update(metadata)
        self.set_metadata(merged)

    def __reduce__(self):
        return (type(self), (self.path, self._storage.filesystem))

    def __repr__(self) -> str:
        return f"Checkpoint(path={self.path!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Checkpoint) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)
