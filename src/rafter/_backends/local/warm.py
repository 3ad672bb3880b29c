"""One zygote kept warm across ``fit()`` calls in a process (notebooks, sweeps, tests that fit twice).

A zygote is a snapshot: a fork of the driver (or a fresh interpreter) with torch and torch._dynamo
imported. Forking workers from it is safe whatever the driver has done since (the zygote is its own
process: later driver threads, a CUDA context or Ray in the driver don't reach it). What can go stale
is what the snapshot holds, so a warm zygote is reused only while all of this still matches the
driver's state at the time the zygote was made:
- the GPU choice (GPU runs need a fresh-interpreter zygote that never touched CUDA);
- the driver's environment variables (workers inherit the zygote's environment);
- the driver's own modules (those outside the interpreter's and site-packages' folders): the same
  module objects, their files not modified since (an edited module that was reloaded, or a module
  re-imported under the same name, makes a new zygote).
Anything else a worker needs from the driver (cwd, sys.path, the train function and its config)
travels with each worker's spec and payload, exactly as between attempts of one fit.

The warm zygote is closed at interpreter exit; it dies with the driver in any case (PDEATHSIG).
``close()`` closes it now (tests call it so that no process outlives a test).
"""

from __future__ import annotations

import atexit
import os
import sys
import sysconfig
from typing import Callable, Optional, Tuple

_Fingerprint = Tuple[bool, int, Tuple[Tuple[str, int, float], ...]]

_warm: Optional[Tuple[_Fingerprint, object]] = None
_registered = False


def _library_dirs() -> Tuple[str, ...]:
    paths = sysconfig.get_paths()
    dirs = {paths.get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    dirs |= {sys.prefix, sys.base_prefix, sys.exec_prefix}
    return tuple(sorted(d.rstrip(os.sep) + os.sep for d in dirs if d))


def _own_modules() -> Tuple[Tuple[str, int, float], ...]:
    """(name, id, file mtime) of every imported module that lives outside the interpreter's folders."""
    libs = _library_dirs()
    out = []
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if not path or name == "__main__" or path.startswith(libs):
            continue
        try:
            mtime = os.stat(path).st_mtime
        except OSError:
            mtime = -1.0
        out.append((name, id(module), mtime))
    return tuple(sorted(out))


def _fingerprint(use_gpu: bool) -> _Fingerprint:
    return (bool(use_gpu), hash(frozenset(os.environ.items())), _own_modules())


def _still_matches(made: _Fingerprint, use_gpu: bool) -> bool:
    gpu, env, modules = made
    if gpu != bool(use_gpu) or env != hash(frozenset(os.environ.items())):
        return False
    for name, ident, mtime in modules:
        module = sys.modules.get(name)
        if module is None or id(module) != ident:
            return False
        try:
            if os.stat(module.__file__).st_mtime != mtime:
                return False
        except OSError:
            if mtime != -1.0:
                return False
    return True


def acquire(use_gpu: bool, make: Callable[[bool], object]):
    """The warm zygote if it still matches this driver, else a new one (the stale one is closed)."""
    global _warm, _registered
    if _warm is not None:
        made, zygote = _warm
        _warm = None
        if _still_matches(made, use_gpu) and zygote.alive():
            return zygote
        zygote.close()
    zygote = make(use_gpu)
    zygote.fingerprint = _fingerprint(use_gpu)
    if not _registered:
        atexit.register(close)
        _registered = True
    return zygote


def release(zygote) -> None:
    """Keep ``zygote`` warm for the next fit (its remaining workers are killed first), or close it."""
    global _warm
    if _warm is not None:  # two backends in one process: keep one zygote only
        _warm[1].close()
        _warm = None
    if zygote.alive() and zygote.kill_workers():
        _warm = (zygote.fingerprint, zygote)
    else:
        zygote.close()


def close() -> None:
    """Close the warm zygote, if any (at exit, and in tests that must leave no process behind)."""
    global _warm
    if _warm is not None:
        _warm[1].close()
        _warm = None


def warm_pid() -> Optional[int]:
    return None if _warm is None else _warm[1].pid

