"""Backends run an attempt's workers; the contract is in ``base``. ``create`` picks one for a run."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rafter._backends.base import Backend


def resolve_cluster(cluster: str) -> str:
    """``"local"`` or ``"ray"``: what ``RunConfig(cluster=...)`` means in this process now. ``"auto"`` is Ray
    when RAY_ADDRESS is set or Ray is initialised here, else local."""
    if cluster != "auto":
        return cluster
    ray = sys.modules.get("ray")
    use_ray = bool(os.environ.get("RAY_ADDRESS")) or (ray is not None and ray.is_initialized())
    return "ray" if use_ray else "local"


def create(run_config) -> "Backend":
    """The backend for ``run_config`` (not started: nothing happens until ``check_resources``/``start``)."""
    if resolve_cluster(run_config.cluster) == "ray":
        from rafter._backends.ray import RayBackend

        return RayBackend(run_config.cluster_address)
    from rafter._backends.local.backend import LocalBackend

    return LocalBackend()
