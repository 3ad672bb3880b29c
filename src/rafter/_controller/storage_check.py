"""The storage check ``fit()`` runs once before it writes anything: can the run folder live there?

A local ``storage_path`` must be a folder (or be creatable under the nearest existing folder) that this
process can write in; a URI needs a scheme fsspec knows and that scheme's package installed. Each problem is
one ``ConfigValueError`` on ``RunConfig.storage_path`` that says what to do; nothing is created on failure
(the write test is a temporary file, removed at once).
"""

from __future__ import annotations

import os
import re
import tempfile

from rafter.train._validation import ConfigValueError

# scheme -> (package, the rafter extra that installs it); other schemes name the package fsspec asks for.
PACKAGES = {"s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3"), "gs": ("gcsfs", "gcs"), "gcs": ("gcsfs", "gcs")}
DISTRIBUTION = "rafter-train"
_SCHEME_TYPO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):/*(?!/)")  # s3:/bucket, gs:bucket (not C:\ nor ./x)


def _error(value: str, expected: str) -> ConfigValueError:
    return ConfigValueError("RunConfig", "storage_path", value, expected)


def install_hint(scheme: str, package: str) -> str:
    extra = PACKAGES.get(scheme, (None, None))[1]
    return f"pip install '{DISTRIBUTION}[{extra}]'" if extra else f"pip install {package}"


def _check_uri(value: str, scheme: str) -> None:
    from fsspec.registry import known_implementations, registry

    if scheme in registry:
        return
    known = known_implementations.get(scheme)
    if known is None:
        import difflib

        guess = difflib.get_close_matches(scheme, list(known_implementations), n=1, cutoff=0.5)
        hint = f" Did you mean {guess[0]}://?" if guess else ""
        raise _error(value, f"fsspec knows no filesystem for the scheme {scheme!r}.{hint} Use a local folder or a "
                            f"URI such as s3://bucket/path, gs://bucket/path or memory://path")
    try:
        import fsspec

        fsspec.get_filesystem_class(scheme)
    except ImportError as exc:
        package = PACKAGES.get(scheme, (known["class"].split(".")[0], None))[0]
        raise _error(value, f"{scheme}:// storage needs the {package} package, which is not installed ({exc}); "
                            f"install it with: {install_hint(scheme, package)}") from None


def _check_local(value: str, path: str) -> None:
    expanded = os.path.expanduser(path)
    if expanded.startswith("~"):  # "~someone/x" with no user someone: it would be a folder named "~someone" here
        raise _error(value, f"{path.split('/')[0]!r} names no user on this machine, so the path would be a folder "
                            f"of that name in the current folder; write ~/{path.split('/', 1)[1] if '/' in path else ''} "
                            f"or a full path")
    path = os.path.abspath(expanded)
    nearest = path
    while not os.path.lexists(nearest):
        nearest = os.path.dirname(nearest)
    if not os.path.isdir(nearest):
        if nearest == path:
            raise _error(value, f"{path} is a file, not a folder; name a folder for the run folders (it is created "
                                f"if missing)")
        raise _error(value, f"{nearest} is a file, so the folder {path} can't be created; name a folder elsewhere")
    try:
        fd, probe = tempfile.mkstemp(prefix=".rafter-write-test-", dir=nearest)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        what = "write in" if nearest == path else f"create {path} in"
        raise _error(value, f"this process can't {what} {nearest} ({exc.strerror or exc}); choose a folder you can "
                            f"write, e.g. RunConfig(storage_path='~/rafter_results')") from None


def check_storage(storage_path: str, filesystem=None) -> None:
    """Raise ``ConfigValueError`` if the run folder can't be written under ``storage_path``."""
    if filesystem is not None:  # a path on the user's filesystem: the first write says what is wrong
        return
    value = storage_path
    path = storage_path[len("file://"):] if storage_path.startswith("file://") else storage_path
    if "://" in path:
        _check_uri(value, path.split("://", 1)[0].lower())
        return
    typo = _SCHEME_TYPO.match(path)
    if typo and len(typo.group(1)) > 1:
        from fsspec.registry import known_implementations

        scheme = typo.group(1).lower()
        if scheme in known_implementations:
            rest = path[typo.end():]
            raise _error(value, f"this looks like a {scheme} URI missing a slash, and would be a local folder named "
                                f"{path.split('/')[0]!r}; write {scheme}://{rest}")
    _check_local(value, path)
