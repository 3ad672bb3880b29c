"""The Ray backend (``RunConfig(cluster="ray")``): workers are Ray actors' child processes on a Ray cluster.

This package imports Ray only when the backend is used: ``RayBackend`` is loaded on first access, and
the worker process (forked by ``forkserver``) never imports Ray at all.
"""

from __future__ import annotations


def __getattr__(name: str):
    if name == "RayBackend":
        from rafter._backends.ray.backend import RayBackend

        return RayBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["RayBackend"]
