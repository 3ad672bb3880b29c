"""What a run asks of a Ray cluster, and whether the cluster can ever give it (pure functions, no Ray).

All workers ask for the same bundle, so feasibility is exact without a bin-packing search: node *i*
holds ``k_i = min over resources of floor(node total / bundle amount)`` workers, and the request fits
iff ``sum k_i >= n`` (PACK, SPREAD), ``max k_i >= n`` (STRICT_PACK) or ``#{k_i >= 1} >= n``
(STRICT_SPREAD). Totals are used, not what is free now: the question is "can it *ever* run here".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional

from rafter.train._config import ScalingConfig

_EPS = 1e-9


def worker_bundle(scaling: ScalingConfig) -> Dict[str, float]:
    """One worker's placement-group bundle, as Ray Train builds it."""
    bundle: Dict[str, float] = {}
    for key, value in (scaling.resources_per_worker or {}).items():
        if key not in ("CPU", "GPU") and value:
            bundle[key] = float(value)
    if scaling.cpus_per_worker:
        bundle["CPU"] = scaling.cpus_per_worker
    if scaling.use_gpu and scaling.gpus_per_worker:
        bundle["GPU"] = scaling.gpus_per_worker
    if scaling.accelerator_type:
        bundle[f"accelerator_type:{scaling.accelerator_type}"] = 0.001
    if not bundle:  # e.g. resources_per_worker={"CPU": 0}: Ray refuses an empty bundle
        bundle["CPU"] = 0.001
    return bundle


@dataclass
class NodeView:
    label: str  # "node 1" (or its IP when the nodes' IPs differ)
    node_id: str
    ip: str
    resources: Dict[str, float]  # totals


def node_views(ray_nodes: List[dict]) -> List[NodeView]:
    """Alive nodes of ``ray.nodes()``, head first, labelled for messages."""
    alive = [n for n in ray_nodes if n.get("Alive")]
    alive.sort(key=lambda n: (not n.get("Resources", {}).get("node:__internal_head__"), n.get("NodeManagerAddress", "")))
    ips = [n.get("NodeManagerAddress", "?") for n in alive]
    distinct = len(set(ips)) == len(ips)
    return [
        NodeView(label=ip if distinct and len(ips) > 1 else f"node {i + 1}", node_id=n["NodeID"], ip=ip,
                 resources=dict(n.get("Resources", {})))
        for i, (n, ip) in enumerate(zip(alive, ips))
    ]


def _num(resource: str, value: float) -> str:
    return f"{value / 2**30:.1f} GiB" if resource == "memory" else f"{value:g}"


def _amount(resource: str, value: float) -> str:
    if resource == "memory":
        return f"{value / 2**30:.1f} GiB of memory"
    if resource in ("CPU", "GPU"):
        return f"{value:g} {resource}s"
    return f"{value:g} of resource {resource!r}"


def describe_bundle(bundle: Dict[str, float]) -> str:
    return "{" + ", ".join(f"{k!r}: {_num(k, v)}" for k, v in bundle.items()) + "}"


def per_node(resource: str, nodes: List[NodeView]) -> str:
    return ", ".join(f"{n.label}: {_num(resource, n.resources.get(resource, 0.0))}" for n in nodes)


def capacity(bundle: Dict[str, float], node: NodeView) -> int:
    """How many workers with this bundle fit on the node (by its totals)."""
    fits = [math.floor(node.resources.get(k, 0.0) / v + _EPS) for k, v in bundle.items() if v > 0]
    return max(0, min(fits)) if fits else 0


def _fix(n: int, fit: int) -> str:
    if fit >= 1:
        return (f"Use ScalingConfig(num_workers={fit}) to fit this cluster, or add nodes to it "
                f"(`ray start --address=<head>:6379` on another machine).")
    return "Ask for less per worker (ScalingConfig(resources_per_worker=...)) or add bigger nodes to the cluster."


def infeasibility(bundle: Dict[str, float], n: int, strategy: str, nodes: List[NodeView]) -> Optional[str]:
    """Why ``n`` workers with ``bundle`` can never be placed on these nodes, or None if they can."""
    if not nodes:
        return "the Ray cluster has no alive node."
    caps = [capacity(bundle, node) for node in nodes]
    fit = sum(caps)
    cluster = "The cluster has no autoscaler, so it will not grow."
    for key, need in bundle.items():
        if key.startswith("accelerator_type:") and not any(key in node.resources for node in nodes):
            have = sorted({k.split(":", 1)[1] for node in nodes for k in node.resources if k.startswith("accelerator_type:")})
            return (f"ScalingConfig(accelerator_type={key.split(':', 1)[1]!r}) asks for an accelerator that no node of "
                    f"the Ray cluster has (it has: {', '.join(have) or 'no accelerator type'}). Use one of those, or "
                    f"leave accelerator_type=None.")
        total = sum(node.resources.get(key, 0.0) for node in nodes)
        if need * n > total + _EPS:
            if total == 0 and key not in ("CPU", "GPU", "memory"):
                return (f"ScalingConfig(resources_per_worker={{{key!r}: {need:g}}}) asks for a resource that no node of "
                        f"the Ray cluster has. Start nodes with it (`ray start --resources='{{\"{key}\": N}}'`) or "
                        f"remove it from resources_per_worker.")
            return (f"ScalingConfig asks for {_amount(key, need * n)} ({n} workers x {_num(key, need)} {key}) but the "
                    f"Ray cluster has {_amount(key, total)} in all ({per_node(key, nodes)}). {cluster} " + _fix(n, fit))
    for key, need in bundle.items():
        most = max(node.resources.get(key, 0.0) for node in nodes)
        if need > most + _EPS:
            return (f"Each worker asks for {_amount(key, need)}, but a worker must fit on one node and the largest node "
                    f"of the Ray cluster has {_amount(key, most)} ({per_node(key, nodes)}). {cluster} "
                    f"Use ScalingConfig(resources_per_worker={{{key!r}: {_num(key, most)}}}) or add bigger nodes.")
    holds = ", ".join(f"{node.label}: {c}" for node, c in zip(nodes, caps))
    what = f"{n} workers x {describe_bundle(bundle)}"
    if strategy == "STRICT_PACK" and max(caps) < n:
        return (f"placement_strategy='STRICT_PACK' puts all {what} on one node, but the largest node holds "
                f"{max(caps)} ({holds}). Use ScalingConfig(placement_strategy='PACK') to allow several nodes.")
    if strategy == "STRICT_SPREAD" and sum(1 for c in caps if c) < n:
        return (f"placement_strategy='STRICT_SPREAD' puts each of {what} on its own node, but only "
                f"{sum(1 for c in caps if c)} nodes can hold one ({holds}). Use "
                f"ScalingConfig(placement_strategy='SPREAD') to allow several per node.")
    if fit < n:
        return (f"{what} do not fit the Ray cluster's nodes together: they hold {fit} such workers at once "
                f"({holds}). {cluster} " + _fix(n, fit))
    return None


def cluster_summary(bundle: Dict[str, float], nodes: List[NodeView]) -> str:
    """'4 CPUs in all (node 1: 2, node 2: 2)' for each resource the bundle asks for."""
    parts = []
    for key in bundle:
        total = sum(node.resources.get(key, 0.0) for node in nodes)
        parts.append(f"{_amount(key, total)} in all ({per_node(key, nodes)})")
    return "; ".join(parts)
