"""Connecting to Ray, reading the cluster's nodes, spotting an autoscaler, waiting for a placement group.

Settings (environment variables, read when ``fit()`` starts):
    RAFTER_RAY_STARTUP_TIMEOUT_S  how long to wait for a placement group that the cluster could hold but
                                  doesn't yet (busy, or an autoscaler is adding nodes); default 300
    RAFTER_RAY_AUTOSCALER         "1"/"0" to say whether the cluster autoscales, when detection is wrong
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Dict, List, Optional

from rafter._backends.ray.resources import NodeView, cluster_summary, describe_bundle, node_views

logger = logging.getLogger("rafter")

WAIT_NOTICE_S = 3.0  # say that we are waiting after this long, then every NOTICE_EVERY_S
NOTICE_EVERY_S = 15.0


def startup_timeout() -> float:
    return float(os.environ.get("RAFTER_RAY_STARTUP_TIMEOUT_S", "300"))


def connect(address: Optional[str]) -> bool:
    """Make sure Ray is initialised in this process; True when rafter did it (and so shuts it down)."""
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address and address.startswith("ray://"):
        raise ValueError(
            f"RunConfig(cluster_address={address!r}) is a Ray Client address; rafter's workers connect back to "
            f"the driver, so the driver must run on a node of the cluster. Run your script there (e.g. with "
            f"`ray job submit -- python train.py`) and use the cluster's GCS address, or leave cluster_address unset."
        )
    kwargs = dict(log_to_driver=False, logging_level=logging.WARNING)
    if address:
        try:
            ray.init(address=address, **kwargs)
        except ConnectionError as exc:
            raise ConnectionError(
                f"rafter could not connect to the Ray cluster at {address!r}: {exc}. Is it running (`ray status "
                f"--address={address}`)? Start one with `ray start --head`, or fix RunConfig(cluster_address=...) "
                f"or RAY_ADDRESS."
            ) from None
    else:
        # As ray.init() does for Ray Train: join the cluster running on this machine, else start one for this run.
        ray.init(**kwargs)
    return True


def alive_nodes() -> List[NodeView]:
    import ray

    return node_views(ray.nodes())


def has_autoscaler() -> bool:
    """Whether the cluster can grow: autoscaler v2, or a v1 monitor with real node types (not the read-only mirror)."""
    forced = os.environ.get("RAFTER_RAY_AUTOSCALER")
    if forced in ("0", "1"):
        return forced == "1"
    try:
        from ray.autoscaler.v2.utils import is_autoscaler_v2

        if is_autoscaler_v2(fetch_from_server=True):
            return True
    except Exception:  # noqa: BLE001 - older Ray or no GCS access: fall through
        pass
    try:
        from ray.experimental.internal_kv import _internal_kv_get

        raw = _internal_kv_get("__autoscaling_status")
        report = json.loads(raw).get("autoscaler_report") or {} if raw else {}
    except Exception:  # noqa: BLE001
        return False
    mapping: Dict[str, str] = report.get("node_type_mapping") or {}
    # Without an autoscaling config, the monitor mirrors each node as its own type "node_<id>".
    return any(kind != f"node_{node_id}" for node_id, kind in mapping.items()) or bool(report.get("pending_launches"))


def wait_for_placement_group(pg, bundle: Dict[str, float], n: int, autoscaler: bool) -> None:
    """Wait until ``pg`` is placed, telling the user why it takes long; raise ValueError after the timeout."""
    import ray

    timeout = startup_timeout()
    start = time.monotonic()
    next_notice = start + min(WAIT_NOTICE_S, timeout / 2)
    ready = pg.ready()
    while True:
        done, _ = ray.wait([ready], timeout=0.2)
        if done:
            ray.get(ready)
            return
        now = time.monotonic()
        what = f"{n} workers x {describe_bundle(bundle)}"
        if now - start > timeout:
            raise ValueError(
                f"Timed out after {timeout:g} s waiting for the Ray cluster to place {what}; it has "
                f"{cluster_summary(bundle, alive_nodes())}"
                + (" and its autoscaler did not add enough nodes." if autoscaler else
                   ", which other jobs are using.")
                + " Set RAFTER_RAY_STARTUP_TIMEOUT_S to wait longer, or ask for fewer workers."
            )
        if now >= next_notice:
            next_notice = now + NOTICE_EVERY_S
            logger.warning(
                "Waiting for the Ray cluster to place %s (%.0f s so far; it has %s%s). Giving up after %g s "
                "(RAFTER_RAY_STARTUP_TIMEOUT_S).", what, now - start, cluster_summary(bundle, alive_nodes()),
                "; the autoscaler may add nodes" if autoscaler else "; other jobs hold some of it", timeout,
            )
