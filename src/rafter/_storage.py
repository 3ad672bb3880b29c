"""The storage seam: a local folder or any fsspec URI, behind one small interface.

Paths stay strings (``s3://bucket/run/checkpoint_000001``) so that URIs survive. Local paths use the
``os`` module directly (fast, atomic ``rename``); anything with a scheme goes through fsspec.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any, List, Optional


def is_uri(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def _strip_file(path: str) -> str:
    return path[len("file://"):] if path.startswith("file://") else path


class Storage:
    def __init__(self, root: str) -> None:
        self.root = _strip_file(os.fspath(root))
        self.local = not is_uri(self.root)
        if self.local:
            self.root = os.path.abspath(os.path.expanduser(self.root))
            self.fs = None
        else:
            import fsspec

            self.fs, _ = fsspec.core.url_to_fs(self.root)

    @property
    def process_local(self) -> bool:
        """True when other processes can't see this filesystem (fsspec ``memory://``)."""
        return not self.local and "memory" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))

    def join(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts]) if not self.local else os.path.join(self.root, *parts)

    # -- files -------------------------------------------------------------------------------
    def exists(self, path: str) -> bool:
        return os.path.exists(path) if self.local else self.fs.exists(path)

    def makedirs(self, path: str) -> None:
        if self.local:
            os.makedirs(path, exist_ok=True)
        else:
            self.fs.makedirs(path, exist_ok=True)

    def listdir(self, path: str) -> List[str]:
        if self.local:
            return sorted(os.listdir(path)) if os.path.isdir(path) else []
        if not self.fs.exists(path):
            return []
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(path, detail=False))

    def read_text(self, path: str) -> str:
        if self.local:
            with open(path) as f:
                return f.read()
        with self.fs.open(path, "r") as f:
            return f.read()

    def write_text_atomic(self, path: str, text: str) -> None:
        """Readers see the old content or the new one, never a torn file."""
        if self.local:
            tmp = f"{path}.tmp-{os.getpid()}"
            with open(tmp, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        else:
            with self.fs.open(path, "w") as f:
                f.write(text)

    def read_json(self, path: str) -> Any:
        return json.loads(self.read_text(path))

    def write_json_atomic(self, path: str, value: Any) -> None:
        self.write_text_atomic(path, json.dumps(value, indent=1, default=repr))

    def append_text(self, path: str, text: str) -> None:
        if self.local:
            with open(path, "a") as f:
                f.write(text)
        else:
            old = self.read_text(path) if self.fs.exists(path) else ""
            with self.fs.open(path, "w") as f:
                f.write(old + text)

    # -- folders -----------------------------------------------------------------------------
    def upload_dir(self, local_dir: str, dest: str, on_file=None) -> int:
        """Copy a local folder's files into ``dest`` (merging with what is there). Returns the file count."""
        count = 0
        for base, _dirs, files in os.walk(local_dir):
            rel = os.path.relpath(base, local_dir)
            target = dest if rel == "." else self.join_path(dest, rel)
            self.makedirs(target)
            for name in files:
                src = os.path.join(base, name)
                if self.local:
                    shutil.copy2(src, os.path.join(target, name))
                else:
                    self.fs.put_file(src, f"{target}/{name}")
                count += 1
                if on_file is not None:
                    on_file()
        return count

    def download_dir(self, src: str, local_dir: str) -> None:
        if self.local:
            shutil.copytree(src, local_dir, dirs_exist_ok=True)
        else:
            os.makedirs(local_dir, exist_ok=True)
            self.fs.get(src.rstrip("/") + "/", local_dir, recursive=True)

    def join_path(self, base: str, rel: str) -> str:
        return os.path.join(base, rel) if self.local else base.rstrip("/") + "/" + rel.replace(os.sep, "/")

    def publish(self, staging: str, final: str) -> None:
        """Make a fully written folder visible under its final name."""
        if self.local:
            os.rename(staging, final)
        else:
            self.fs.mv(staging, final, recursive=True)

    def remove(self, path: str) -> None:
        if self.local:
            shutil.rmtree(path, ignore_errors=True)
        elif self.fs.exists(path):
            self.fs.rm(path, recursive=True)


def local_temp_dir(prefix: str = "rafter-") -> str:
    return tempfile.mkdtemp(prefix=prefix)


def storage_for(path: str, cache: Optional[dict] = None) -> Storage:
    """A Storage rooted at the folder containing ``path`` (for a checkpoint's own path)."""
    return Storage(path)
