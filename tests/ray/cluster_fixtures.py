"""A real Ray cluster for tests: ``ray.cluster_utils.Cluster``, several raylets on this machine.

The cluster is module-scoped (starting one takes seconds; a module's tests don't see what another
module's runs left in Ray) and the tests that use it run last (see ``tests/conftest.py``); a test that
changes its nodes puts them back. Its own processes (GCS, raylets, Ray's
idle worker pool, which grows and shrinks as it likes) are started by this test process, so the
global ``no_leaked_processes`` check would blame them on whichever test they appeared in. The
override below exempts exactly those processes — descendants of the cluster's own roots that are not
rafter's — and stays strict about everything else: a rafter actor (``ray::RafterRank``), a node's
fork server or a worker that outlives its test fails it. The fixture's teardown shuts the cluster
down and checks that none of its processes remain.
"""

from __future__ import annotations

import os
from typing import Set

import psutil
import pytest

CLUSTER_ROOTS: Set[int] = set()
RAFTER_MARKERS = ("RafterRank", "rafter._backends.ray")
FAST_HEALTH_CHECKS = {  # a crashed node is declared dead in about a second, not 15-30 s
    "health_check_initial_delay_ms": 0,
    "health_check_period_ms": 200,
    "health_check_timeout_ms": 200,
    "health_check_failure_threshold": 4,
}


def _is_rafter(p: psutil.Process) -> bool:
    try:
        text = " ".join(p.cmdline())
    except psutil.Error:
        return False
    return any(m in text for m in RAFTER_MARKERS)


def _cluster_owned(p: psutil.Process) -> bool:
    try:
        parents = {q.pid for q in p.parents()}
    except psutil.Error:
        return True  # already gone
    return bool((parents | {p.pid}) & CLUSTER_ROOTS) and not _is_rafter(p)


@pytest.fixture(autouse=True)
def no_leaked_processes():
    """The global check, minus the Ray cluster's own processes (see the module docstring)."""
    from rafter._backends.local import warm

    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    yield
    warm.close()  # the zygote a fit() keeps warm for the next one in this process
    leftover = [p for p in me.children(recursive=True) if p.pid not in before and not _cluster_owned(p)]
    gone, alive = psutil.wait_procs(leftover, timeout=10)
    for p in alive:
        p.kill()
    assert not alive, f"processes outlived the test: {[(p.pid, p.name()) for p in alive]}"


def start_cluster(nodes: int = 2, cpus: int = 2):
    import ray
    from ray.cluster_utils import Cluster

    me = psutil.Process()
    before = {p.pid for p in me.children()}
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": cpus, "include_dashboard": False, "_system_config": FAST_HEALTH_CHECKS})
    for _ in range(nodes - 1):
        cluster.add_node(num_cpus=cpus)
    cluster.wait_for_nodes()
    CLUSTER_ROOTS.update(p.pid for p in me.children() if p.pid not in before)
    ray.init(address=cluster.address, log_to_driver=False, logging_level="WARNING")
    return cluster


def add_node(cluster, cpus: int = 2):
    me = psutil.Process()
    before = {p.pid for p in me.children()}
    node = cluster.add_node(num_cpus=cpus)
    cluster.wait_for_nodes()
    CLUSTER_ROOTS.update(p.pid for p in me.children() if p.pid not in before)
    return node


def stop_cluster(cluster) -> None:
    import ray

    import gc

    me = psutil.Process()
    # Finalise garbage that holds Ray objects (ObjectRefs, actor handles in old tracebacks) while Ray is up:
    # finalised later, in a process forked from this one (the local backend's zygote), they crash it.
    gc.collect()
    ray.shutdown()
    cluster.shutdown()
    owned = [p for p in me.children(recursive=True) if _cluster_owned(p) or _is_rafter(p)]
    gone, alive = psutil.wait_procs(owned, timeout=15)
    for p in alive:
        p.kill()
    CLUSTER_ROOTS.clear()
    assert not alive, f"Ray cluster processes outlived the cluster: {[(p.pid, p.name()) for p in alive]}"


@pytest.fixture(scope="module")
def ray_cluster():
    """Two nodes x 2 CPUs; Ray is initialised in the test process (rafter reuses that connection)."""
    address = os.environ.pop("RAY_ADDRESS", None)
    cluster = start_cluster(nodes=2, cpus=2)
    try:
        yield cluster
    finally:
        stop_cluster(cluster)
        if address is not None:
            os.environ["RAY_ADDRESS"] = address


def alive_nodes():
    import ray

    return [n for n in ray.nodes() if n["Alive"]]


def with_nodes(cluster, count: int) -> None:
    """Add or remove worker nodes (2 CPUs each) until ``count`` nodes are alive."""
    import time

    while len(cluster.worker_nodes) + 1 < count:
        add_node(cluster)
    while len(cluster.worker_nodes) + 1 > count:
        cluster.remove_node(next(iter(cluster.worker_nodes)))
    deadline = time.monotonic() + 30
    while len(alive_nodes()) != count:  # Ray's view catches up after a health check or two
        assert time.monotonic() < deadline, f"the cluster never settled at {count} nodes: {alive_nodes()}"
        time.sleep(0.1)  # polling Ray's node table (no event to wait on), bounded by the deadline


def rafter_leftovers(timeout: float = 10.0):
    """Actors and placement groups of rafter still alive, after waiting up to ``timeout`` for them to go.

    Read from the GCS (the actor table and ``ray.util.placement_group_table``): ``ray.util.state`` would
    need the dashboard, which the test clusters leave out to start faster.
    """
    import time

    import ray
    from ray.util import placement_group_table

    deadline = time.monotonic() + timeout
    while True:
        actors = [a for a in ray._private.state.state.actor_table(None).values()
                  if a.get("State") != "DEAD" and "RafterRank" in str(a.get("ActorClassName", a.get("Name", "")))]
        groups = [g for g in placement_group_table().values() if g.get("state") != "REMOVED"]
        if (not actors and not groups) or time.monotonic() > deadline:
            return actors, groups
        time.sleep(0.1)  # polling Ray's state (no event to wait on), bounded by the deadline
