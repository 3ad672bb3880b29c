"""The storage seam: a local folder or any fsspec URI, behind one small interface.

Paths stay strings (``s3://bucket/run/checkpoint_000001``) so that URIs survive. Local paths use the
``os`` module directly (fast, atomic ``rename``, ``fsync`` of files and folders); anything with a scheme
goes through fsspec. Local files are opened without following symbolic links (``O_NOFOLLOW``): a link
planted in a run folder is refused, never written through.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
from typing import Any, Dict, Iterator, List, Optional

CHUNK = 1 << 20
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
FICLONE = 0x40049409  # linux/fs.h: share a file's extents copy-on-write (XFS, Btrfs, bcachefs, OCFS2)
# When the staging can't take the file's blocks as they are (another filesystem, no reflinks, no
# permission), it copies: these errors say "not here", any other is a real failure.
_NOT_HERE = {errno.EXDEV, errno.EPERM, errno.EACCES, errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL, errno.ENOSYS,
             errno.EBUSY, errno.ETXTBSY}
_no_reflink: set = set()  # devices where FICLONE failed once (not tried again)


def is_uri(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def _strip_file(path: str) -> str:
    return path[len("file://"):] if path.startswith("file://") else path


class SymlinkRefused(OSError):
    """A file rafter writes or reads in a run folder is a symbolic link."""


def open_fd(path: str, flags: int, mode: int = 0o600) -> int:
    """``os.open`` that refuses a symbolic link at ``path`` with an error naming it and where it points."""
    try:
        return os.open(path, flags | _NOFOLLOW | _CLOEXEC, mode)
    except OSError as exc:
        if os.path.islink(path):
            raise SymlinkRefused(
                exc.errno, f"{path} is a symbolic link (to {os.readlink(path)}); rafter does not follow links in a "
                f"run folder, because whoever planted it could aim it at your files. Remove it (rm {path}) and "
                f"check who else can write to that folder") from None
        raise


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | _CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def as_fsspec(filesystem: Any):
    """``RunConfig(storage_filesystem=...)`` as an fsspec filesystem: fsspec's as is, pyarrow's wrapped."""
    import fsspec

    if isinstance(filesystem, fsspec.AbstractFileSystem):
        return filesystem
    module = type(filesystem).__module__
    if module.startswith("pyarrow"):
        from fsspec.implementations.arrow import ArrowFSWrapper

        return ArrowFSWrapper(filesystem)
    raise TypeError(
        f"storage_filesystem={filesystem!r}: expected a pyarrow.fs.FileSystem (e.g. pyarrow.fs.S3FileSystem()) or "
        f"an fsspec filesystem (e.g. fsspec.filesystem('s3')), got {module}.{type(filesystem).__qualname__}."
    )


def public_filesystem(path: str, filesystem: Any = None):
    """The filesystem Ray's API hands out for ``path`` (``Result.filesystem``, ``StorageContext``): the one the
    user gave, else pyarrow's for that path when pyarrow is installed, else fsspec's."""
    return filesystem_and_path(path, filesystem)[0]


def filesystem_and_path(path: str, filesystem: Any = None):
    """``(filesystem, path on it)`` as Ray resolves them (see ``public_filesystem``)."""
    path = _strip_file(os.fspath(path))
    if filesystem is not None:
        return filesystem, path
    if not is_uri(path):
        path = os.path.abspath(os.path.expanduser(path))
    try:
        import pyarrow.fs

        return pyarrow.fs.FileSystem.from_uri(path)
    except Exception:  # noqa: BLE001 - pyarrow missing, or a scheme only fsspec knows (memory://)
        import fsspec

        return fsspec.core.url_to_fs(path)


class Storage:
    def __init__(self, root: str, filesystem: Any = None) -> None:
        self.root = _strip_file(os.fspath(root))
        self.filesystem = filesystem  # what the user passed (RunConfig(storage_filesystem=...)), if anything
        self.local = filesystem is None and not is_uri(self.root)
        if filesystem is not None:
            self.root = self.root.rstrip("/") or "/"
            self.fs = as_fsspec(filesystem)
        elif self.local:
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

    def join_path(self, base: str, rel: str) -> str:
        return os.path.join(base, rel) if self.local else base.rstrip("/") + "/" + rel.replace(os.sep, "/")

    # -- files -------------------------------------------------------------------------------
    def exists(self, path: str) -> bool:
        return os.path.lexists(path) if self.local else self.fs.exists(path)

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

    def read_bytes(self, path: str) -> bytes:
        if self.local:
            with os.fdopen(open_fd(path, os.O_RDONLY), "rb") as f:
                return f.read()
        return self.fs.cat_file(path)

    def read_text(self, path: str) -> str:
        return self.read_bytes(path).decode()

    def iter_lines(self, path: str) -> Iterator[str]:
        """The lines of a text file, streamed (nothing when it does not exist)."""
        if not self.exists(path):
            return
        if self.local:
            f = os.fdopen(open_fd(path, os.O_RDONLY), "r", errors="replace")
        else:
            f = self.fs.open(path, "r", errors="replace")
        with f:
            yield from f

    def write_text_atomic(self, path: str, text: str) -> None:
        """Readers see the old content or the new one, never a torn file; the rename itself is made durable."""
        if self.local:
            tmp = f"{path}.tmp-{os.getpid()}"
            if os.path.lexists(tmp):
                os.unlink(tmp)  # a leftover of an earlier process with this pid
            with os.fdopen(open_fd(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            fsync_dir(os.path.dirname(path))
        else:
            with self.fs.open(path, "w") as f:
                f.write(text)

    def read_json(self, path: str) -> Any:
        return json.loads(self.read_text(path))

    def write_json_atomic(self, path: str, value: Any) -> None:
        self.write_text_atomic(path, json.dumps(value, default=repr))

    # -- folders -----------------------------------------------------------------------------
    def upload_dir(self, local_dir: str, dest: str, on_file=None, consume: bool = False) -> Dict[str, Dict[str, Any]]:
        """Put a local folder's files into ``dest``, hashing them on the way (one read pass).

        Local storage takes the files' blocks without copying them where it can: ``consume=True`` (the caller
        deletes ``local_dir`` afterwards) renames the folder itself to ``dest`` when both are on one filesystem
        and it holds only folders and regular files (one rename however many files), else each file;
        otherwise each file is cloned copy-on-write (FICLONE) where the filesystem can. Everything else is
        copied. Hard links are never used: a later ``torch.save`` to the same path opens the file with
        O_TRUNC and rewrites that inode in place, which would change a committed checkpoint through the link
        (a clone or a rename leaves nothing shared that the user can still write).

        Returns the manifest ``{relative path: {"size": bytes, "sha256": hex}}``; a file rafter moved or cloned
        (its bytes never passed through rafter) has no ``sha256``: reading it back to hash it would make a
        report O(bytes) again. The driver hashes such a file only if another rank staged one of the same name
        and size (see ``rafter._controller.checkpoints``)."""
        manifest: Dict[str, Dict[str, Any]] = {}
        walk = list(os.walk(local_dir))
        if consume and any(os.path.islink(os.path.join(base, name)) for base, _dirs, files in walk for name in files):
            consume = False  # a link may point at a file moved before it: copy all, as the user's folder says
        if consume and self.local and _move_tree(local_dir, dest, walk):
            for base, _dirs, files in walk:
                rel = os.path.relpath(base, local_dir)
                for name in sorted(files):
                    key = _manifest_key(rel, name)
                    manifest[key] = {"size": os.lstat(os.path.join(dest, key)).st_size}
                    if on_file is not None:
                        on_file()
            return manifest
        for base, _dirs, files in walk:
            rel = os.path.relpath(base, local_dir)
            target = dest if rel == "." else self.join_path(dest, rel)
            self.makedirs(target)
            for name in sorted(files):
                src = os.path.join(base, name)
                out = self.join_path(target, name)
                if self.local:
                    digest, size = _stage_local(src, out, consume)
                else:
                    with open(src, "rb") as fin, self.fs.open(out, "wb") as fout:
                        digest, size = _copy(fin, fout)
                key = _manifest_key(rel, name)
                manifest[key] = {"size": size} if digest is None else {"size": size, "sha256": digest.hexdigest()}
                if on_file is not None:
                    on_file()
        return manifest

    def sha256(self, path: str) -> str:
        if self.local:
            return _hash(path)[0].hexdigest()
        digest = hashlib.sha256()
        with self.fs.open(path, "rb") as f:
            for chunk in iter(lambda: f.read(CHUNK), b""):
                digest.update(chunk)
        return digest.hexdigest()

    def download_dir(self, src: str, local_dir: str) -> None:
        if self.local:
            shutil.copytree(src, local_dir, dirs_exist_ok=True)
        else:
            os.makedirs(local_dir, exist_ok=True)
            base = src.rstrip("/")
            for path in self.fs.find(base):  # file by file: fsspec's recursive get() nests differently per filesystem
                rel = path.rstrip("/")[len(self.fs._strip_protocol(base)):].lstrip("/")
                target = os.path.join(local_dir, *rel.split("/"))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                self.fs.get_file(path, target)

    def sizes(self, path: str) -> Dict[str, int]:
        """``{relative path: size}`` of every file under a folder (one listing, no reads)."""
        out: Dict[str, int] = {}
        if self.local:
            for base, _dirs, files in os.walk(path):
                for name in files:
                    full = os.path.join(base, name)
                    out[os.path.relpath(full, path).replace(os.sep, "/")] = os.lstat(full).st_size
            return out
        if not self.fs.exists(path):
            return out
        root = self.fs._strip_protocol(path).rstrip("/")
        for full, info in self.fs.find(path, detail=True).items():
            out[full[len(root) + 1:]] = int(info.get("size") or 0)
        return out

    def move(self, src: str, dest: str) -> None:
        """Move one file (creating ``dest``'s folder)."""
        if self.local:
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            os.rename(src, dest)
        else:
            self.fs.mv(src, dest)

    def publish(self, staging: str, final: str) -> None:
        """Make a fully written folder visible under its final name, durably (the folder rename is fsynced)."""
        if self.local:
            os.rename(staging, final)
            fsync_dir(os.path.dirname(final))
        else:
            self.fs.mv(staging, final, recursive=True)

    def remove(self, path: str) -> None:
        if self.local:
            if os.path.islink(path) or os.path.isfile(path):
                os.unlink(path)
            else:
                shutil.rmtree(path, ignore_errors=True)
        elif self.fs.exists(path):
            self.fs.rm(path, recursive=True)


def _copy(fin, fout):
    digest, size = hashlib.sha256(), 0
    while True:
        chunk = fin.read(CHUNK)
        if not chunk:
            return digest, size
        digest.update(chunk)
        fout.write(chunk)
        size += len(chunk)


def _hash(path: str):
    digest, size = hashlib.sha256(), 0
    with os.fdopen(open_fd(path, os.O_RDONLY), "rb") as f:
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                return digest, size
            digest.update(chunk)
            size += len(chunk)


def _manifest_key(rel: str, name: str) -> str:
    """A staged file's name in the manifest: its path under the checkpoint folder, with "/"."""
    return name if rel == "." else f"{rel}/{name}".replace(os.sep, "/")


def _move_tree(local_dir: str, dest: str, walk) -> bool:
    """Rename a folder of plain files to ``dest`` (not there yet), its folders then getting the mode the
    storage's own folders get; False where that can't be done (another filesystem, links, special files)."""
    for base, dirs, files in walk:  # a link (to a folder, too) or a special file: staged file by file
        if not all(stat.S_ISDIR(os.lstat(os.path.join(base, name)).st_mode) for name in dirs):
            return False
        if not all(stat.S_ISREG(os.lstat(os.path.join(base, name)).st_mode) for name in files):
            return False
    parent = os.path.dirname(dest.rstrip(os.sep))
    os.makedirs(parent, exist_ok=True)
    if os.path.lexists(dest):
        return False
    try:
        os.rename(local_dir, dest)
    except OSError as exc:
        if exc.errno in _NOT_HERE or exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            return False
        raise
    mode = stat.S_IMODE(os.stat(parent).st_mode)  # what makedirs gave the staging: the umask's, not mkdtemp's 0700
    os.chmod(dest, mode)
    for base, dirs, _files in walk:
        for name in dirs:
            os.chmod(os.path.join(dest, os.path.relpath(base, local_dir), name), mode)
    return True


def _stage_local(src: str, out: str, consume: bool):
    """One file into a local staging folder (see ``Storage.upload_dir``): (sha256 or None, size) of what
    ``out`` holds; the hash only when the bytes were copied (a rename or a clone is O(1) and stays so).

    Crash safety is the copy's: ``out`` lies in a staging folder that nothing lists until the driver commits
    it, and a crash part-way leaves only files the next start removes. A renamed file has left the user's
    folder, which the caller was about to delete anyway; a clone shares no block the user can still write."""
    st = os.lstat(src)
    regular = stat.S_ISREG(st.st_mode)  # a link or a special file is copied (its content, as open() reads it)
    if consume and regular:
        if os.path.lexists(out):
            raise FileExistsError(errno.EEXIST, "a file staged twice", out)
        try:
            os.rename(src, out)
            return None, st.st_size
        except OSError as exc:
            if exc.errno not in _NOT_HERE:
                raise
    with open(src, "rb") as fin:
        fd = open_fd(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as fout:
            devices = (st.st_dev, os.fstat(fd).st_dev)
            if regular and st.st_size and devices not in _no_reflink:
                import fcntl

                try:
                    fcntl.ioctl(fd, FICLONE, fin.fileno())
                    return None, os.fstat(fd).st_size
                except OSError as exc:
                    if exc.errno not in _NOT_HERE:
                        raise
                    _no_reflink.add(devices)
            return _copy(fin, fout)


class Appender:
    """An append-only text journal. Each ``append`` is one whole line (a torn tail left by a crash is ended
    first, so it can't swallow the new line); ``durable=True`` fsyncs it before returning.

    Local files stay open (O_APPEND, no link following). Remote storage appends where fsspec can, else
    rewrites the file (O(size): object stores have no append)."""

    def __init__(self, storage: Storage, path: str) -> None:
        self.storage, self.path = storage, path
        self._fd: Optional[int] = None
        if storage.local:
            self._fd = open_fd(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            size = os.fstat(self._fd).st_size
            if size:
                with os.fdopen(open_fd(path, os.O_RDONLY), "rb") as f:
                    f.seek(size - 1)
                    if f.read(1) != b"\n":
                        os.write(self._fd, b"\n")
        else:
            old = storage.read_bytes(path) if storage.exists(path) else b""
            self._remote_can_append = True
            if old and not old.endswith(b"\n"):
                self._write_remote(b"\n")

    def append(self, line: str, durable: bool = False) -> None:
        data = (line + "\n").encode()
        if self._fd is not None:
            os.write(self._fd, data)
            if durable:
                os.fsync(self._fd)
        else:
            self._write_remote(data)

    def _write_remote(self, data: bytes) -> None:
        fs = self.storage.fs
        if self._remote_can_append:
            try:
                with fs.open(self.path, "ab") as f:
                    f.write(data)
                return
            except (NotImplementedError, ValueError, OSError):
                self._remote_can_append = False
        old = fs.cat_file(self.path) if fs.exists(self.path) else b""
        with fs.open(self.path, "wb") as f:
            f.write(old + data)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
