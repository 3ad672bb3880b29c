"""Where each rank goes, from a placement group's bundle->node map (pure functions, no Ray).

Ranks are ordered by node so that each node's ranks are contiguous: the driver's node first (if it
hosts workers), then the others in the order of their first bundle. Within a node, ranks follow the
GPU ids Ray assigned (else the bundle order). Following Ray Train, each node's workers see the union
of that node's GPUs in ``CUDA_VISIBLE_DEVICES`` and ``device_index`` is the position of the worker's
own (first) GPU in it, so NCCL's peer-to-peer paths between local GPUs work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence


@dataclass
class Slot:
    """One placement-group bundle and the actor placed in it."""

    bundle: int
    node_id: str
    node_ip: str
    gpu_ids: Sequence[str] = ()


@dataclass
class Place:
    rank: int
    bundle: int
    node_id: str
    node_ip: str
    node_rank: int
    local_rank: int
    local_world_size: int
    device_index: Optional[int]
    visible_devices: Optional[str]  # CUDA_VISIBLE_DEVICES for the worker's node, None without GPUs


def _gpu_key(gpu_id) -> tuple:
    text = str(gpu_id)
    return (0, int(text), "") if text.isdigit() else (1, 0, text)


def assign_ranks(slots: List[Slot], driver_node_id: Optional[str], use_gpu: bool) -> List[Place]:
    by_node: Dict[str, List[Slot]] = {}
    for slot in sorted(slots, key=lambda s: s.bundle):
        by_node.setdefault(slot.node_id, []).append(slot)
    nodes = list(by_node)  # in order of each node's first bundle
    if driver_node_id in by_node:
        nodes.remove(driver_node_id)
        nodes.insert(0, driver_node_id)
    places: List[Place] = []
    for node_rank, node_id in enumerate(nodes):
        local = by_node[node_id]
        visible: Optional[List[str]] = None
        if use_gpu:
            local.sort(key=lambda s: (_gpu_key(s.gpu_ids[0]) if s.gpu_ids else (2, 0, ""), s.bundle))
            visible = sorted({str(g) for s in local for g in s.gpu_ids}, key=_gpu_key)
        for local_rank, slot in enumerate(local):
            device_index = None
            if visible is not None and slot.gpu_ids:
                device_index = visible.index(str(slot.gpu_ids[0]))
            places.append(Place(
                rank=len(places), bundle=slot.bundle, node_id=node_id, node_ip=slot.node_ip, node_rank=node_rank,
                local_rank=local_rank, local_world_size=len(local), device_index=device_index,
                visible_devices=",".join(visible) if visible is not None else None,
            ))
    return places
