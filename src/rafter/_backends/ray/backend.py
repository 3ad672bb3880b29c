"""The Ray backend: the local backend's contract, on a Ray cluster, with Ray Core only (no Ray Train).

Per attempt: one placement group with a bundle per worker (``placement_strategy`` honoured), one
:class:`~rafter._backends.ray.actor.RafterRank` actor per bundle, and in each actor one worker process
running ``rafter._worker.bootstrap.run_worker`` unchanged. Workers reach the driver over TCP on the
driver's node IP (with a per-attempt random token); after the attempt the actors are killed and the
placement group removed. See ``group`` for how deaths are told apart.

Settings (environment variables):
    RAFTER_RAY_WORKING_DIR  "auto" (default): ship the driver's working directory as a runtime_env
                            working_dir to workers on *other machines* (same machine: they use it in
                            place); "always"; "never"; or a folder to ship instead of the cwd.
    and those of ``cluster`` (RAFTER_RAY_STARTUP_TIMEOUT_S, RAFTER_RAY_AUTOSCALER).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import socket
from typing import Dict, List, Optional

from rafter._backends.ray import cluster
from rafter._backends.ray.group import RayRank, RayWorkerGroup, release
from rafter._backends.ray.layout import Place, Slot, assign_ranks
from rafter._backends.ray.resources import infeasibility, worker_bundle
from rafter._util.text import ranks_label
from rafter._worker.spec import WorkerSpec
from rafter.train._config import ScalingConfig

logger = logging.getLogger("rafter")

# Driver environment variables that tune torch/NCCL/gloo reach the workers (others: Ray's runtime_env).
_PASSED_ENV_PREFIXES = ("NCCL_", "GLOO_", "TORCH_", "TORCHINDUCTOR_", "CUDA_LAUNCH_BLOCKING", "PYTORCH_CUDA_ALLOC_CONF")
_REMOTE_ACTOR = None


def _remote_actor_class():
    global _REMOTE_ACTOR
    if _REMOTE_ACTOR is None:
        import ray

        from rafter._backends.ray.actor import RafterRank

        _REMOTE_ACTOR = ray.remote(RafterRank)
    return _REMOTE_ACTOR


@dataclasses.dataclass
class _Prepared:
    pg: object
    actors: Dict[int, object]  # bundle index -> actor handle
    places: List[Place]
    token: bytes
    shipped: Dict[int, bool]  # bundle index -> runs in a shipped working_dir


class RayBackend:
    """Workers on a Ray cluster: per attempt a placement group and one ``RafterRank`` actor per worker."""

    name = "ray"

    def __init__(self, address: Optional[str] = None) -> None:
        self.address = address
        self._connected = False
        self._owns_ray = False
        self._autoscaler = False
        self._driver_ip = "127.0.0.1"
        self._driver_node_id: Optional[str] = None
        self._listener: Optional[socket.socket] = None
        self._groups: List[RayWorkerGroup] = []
        self._lost: List[dict] = []  # nodes lost in earlier attempts, for the restart's error message
        self._shared_ok: set = set()
        self._uploaded: Dict[str, str] = {}  # shipped folder -> its package URI in the cluster

    # -- preflight -----------------------------------------------------------------------------
    def _connect(self) -> None:
        if self._connected:
            return
        import ray

        self._owns_ray = cluster.connect(self.address)
        self._connected = True
        self._driver_ip = ray.util.get_node_ip_address()
        self._driver_node_id = ray.get_runtime_context().get_node_id()
        self._autoscaler = cluster.has_autoscaler()

    def check_resources(self, scaling: ScalingConfig) -> int:
        """Raise ``ValueError`` for a request this cluster can never meet (an elastic one: its minimum); return
        torch threads per worker."""
        if scaling.elastic:
            scaling = scaling.with_workers(scaling.min_workers)
        self._connect()
        try:
            self._check_request(scaling)
        except BaseException:
            self._disconnect()
            raise
        return max(1, int(scaling.cpus_per_worker or 1.0))

    def capacity(self, scaling: ScalingConfig) -> int:
        """Workers of this shape the alive nodes hold (by their totals, so a group already running counts)."""
        self._connect()
        bundle, nodes, n = worker_bundle(scaling), cluster.alive_nodes(), 0
        while infeasibility(bundle, n + 1, scaling.placement_strategy, nodes) is None and n < 4096:
            n += 1
        return n

    def _check_request(self, scaling: ScalingConfig) -> Dict[str, float]:
        bundle = worker_bundle(scaling)
        if self._autoscaler:
            return bundle  # the cluster may grow: placement waits, visibly, up to the startup timeout
        problem = infeasibility(bundle, scaling.num_workers, scaling.placement_strategy, cluster.alive_nodes())
        if problem:
            if self._lost:
                lost = "; ".join(f"node {n['node_ip']} (Ray node {n['node_id'][:8]}) with {ranks_label(n['ranks'])}"
                                 for n in self._lost)
                problem = f"The run cannot restart: the Ray cluster lost {lost}, and what remains is too small. " + problem
            raise ValueError(problem)
        return bundle

    def _place(self, scaling: ScalingConfig) -> _Prepared:
        """Reserve the attempt's bundles, start an actor in each and decide each rank's place."""
        import ray
        from ray.util.placement_group import placement_group, placement_group_table

        bundle = self._check_request(scaling)
        n = scaling.num_workers
        pg = placement_group([dict(bundle) for _ in range(n)], strategy=scaling.placement_strategy)
        actors: Dict[int, object] = {}
        try:
            cluster.wait_for_placement_group(pg, bundle, n, self._autoscaler)
            where = placement_group_table(pg)["bundles_to_node_id"]
            ips = {node.node_id: node.ip for node in cluster.alive_nodes()}
            token = secrets.token_bytes(16)
            shipped: Dict[int, bool] = {}
            leaders: Dict[str, int] = {}  # node id -> its first bundle, whose actor runs the node's fork server
            for i in range(n):
                leaders.setdefault(where[i], i)
            for i in range(n):
                runtime_env, shipped[i] = self._working_dir(ips.get(where[i], "?"))
                server = b"\0rafter-" + token[:8].hex().encode() + b"-" + where[i][:16].encode()
                node_workers = sum(1 for j in range(n) if where[j] == where[i]) if leaders[where[i]] == i else 0
                options = _actor_options(bundle, pg, i, runtime_env)
                actors[i] = _remote_actor_class().options(**options).remote(server, node_workers)
            gpu_ids: Dict[int, list] = {}
            if scaling.use_gpu:
                infos = ray.get([actors[i].info.remote() for i in range(n)])
                gpu_ids = {i: info["gpu_ids"] for i, info in enumerate(infos)}
            slots = [Slot(i, where[i], ips.get(where[i], "?"), gpu_ids.get(i, ())) for i in range(n)]
            places = assign_ranks(slots, self._driver_node_id, scaling.use_gpu)
        except BaseException:
            release(pg, actors.values())
            raise
        return _Prepared(pg, actors, places, token, shipped)

    def _working_dir(self, node_ip: str):
        """``(runtime_env or None, shipped)`` for an actor on ``node_ip``."""
        import ray

        job_env = ray.get_runtime_context().runtime_env or {}
        if job_env.get("working_dir"):
            return None, True  # the job ships a working_dir already; every actor inherits it
        mode = os.environ.get("RAFTER_RAY_WORKING_DIR", "auto")
        if mode == "never" or (mode == "auto" and node_ip == self._driver_ip):
            return None, False
        folder = os.getcwd() if mode in ("auto", "always") else os.path.abspath(mode)
        if folder not in self._uploaded:
            self._uploaded[folder] = _upload_working_dir(folder)
        return {"working_dir": self._uploaded[folder]}, True

    @staticmethod
    def worker_env() -> dict:
        return {k: v for k, v in os.environ.items() if k.startswith(_PASSED_ENV_PREFIXES)}

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self, use_gpu: bool) -> None:
        self._connect()
        if self._listener is None:
            self._listener = socket.create_server((self._driver_ip, 0), backlog=1024)
            self._listener.setblocking(False)

    def start_group(self, scaling: ScalingConfig, template: WorkerSpec, payload: bytes,
                    echo: bool = True) -> RayWorkerGroup:
        """Place the attempt (``ValueError`` when the cluster can't hold it), then start a worker per bundle.
        Ranks go node by node (see ``layout``); rank 0's store listens on its node's address."""
        import ray

        prepared = self._place(scaling)
        try:
            self._check_storage(template.run_path, prepared)
            env = dict(template.env, **self.worker_env())
            rdzv_host = prepared.places[0].node_ip
            ranks: Dict[int, RayRank] = {}
            for place in prepared.places:
                spec = dataclasses.replace(
                    template, rank=place.rank, node_rank=place.node_rank, local_rank=place.local_rank,
                    local_world_size=place.local_world_size, rdzv_host=rdzv_host, device_index=place.device_index,
                    env=env if place.visible_devices is None else dict(env, CUDA_VISIBLE_DEVICES=place.visible_devices))
                os.makedirs(spec.log_dir, exist_ok=True)
                log_path = os.path.join(spec.log_dir, f"rank_{spec.rank}.log")
                ranks[spec.rank] = RayRank(spec, prepared.actors[place.bundle], place, log_path, echo)
        except BaseException:
            release(prepared.pg, prepared.actors.values())
            raise
        group = RayWorkerGroup(self._listener, prepared.token, ranks, prepared.pg, self._driver_ip,
                               on_close=self._group_closed)
        self._groups.append(group)
        payload_ref = ray.put(payload)
        address = self._listener.getsockname()[:2]
        for rank, state in ranks.items():
            shipped = prepared.shipped[state.place.bundle]
            group.attach(rank, state.actor.run.remote(state.spec, payload_ref, address, prepared.token, shipped))
        return group

    def _check_storage(self, run_path: str, prepared: _Prepared) -> None:
        """Multi-node runs need storage every node sees; prove it for a local path with a marker file."""
        import ray

        from rafter._storage import Storage

        storage = Storage(run_path)
        remote = sorted({p.node_ip for p in prepared.places if p.node_ip != self._driver_ip})
        if storage.process_local and remote:
            raise ValueError(
                f"RunConfig(storage_path={run_path!r}) lives in the driver's memory, but workers run on other "
                f"machines ({', '.join(remote)}) that can't reach it. Use storage every node sees, e.g. "
                f"RunConfig(storage_path='s3://bucket/runs') or a shared filesystem path."
            )
        nodes = {p.node_id: p for p in prepared.places}
        key = (run_path, tuple(sorted(nodes)))
        if not storage.local or len(nodes) < 2 or key in self._shared_ok:
            return
        os.makedirs(run_path, exist_ok=True)
        marker = os.path.join(run_path, f".rafter_shared_check_{prepared.token.hex()[:12]}")
        with open(marker, "w"):
            pass
        try:
            refs = {node_id: prepared.actors[p.bundle].sees.remote(marker) for node_id, p in nodes.items()}
            seen = dict(zip(refs, ray.get(list(refs.values()), timeout=120)))
        finally:
            os.remove(marker)
        blind = [nodes[node_id] for node_id, ok in seen.items() if not ok]
        if blind:
            raise ValueError(
                f"RunConfig(storage_path={os.path.dirname(run_path)!r}) is a local folder, but the run's workers are "
                f"on {len(nodes)} nodes and {len(blind)} of them can't see it (node "
                f"{', '.join(sorted({p.node_ip for p in blind}))}). Checkpoints and logs must be on storage every "
                f"node sees: a shared filesystem mounted at the same path on every node, or a URI such as "
                f"RunConfig(storage_path='s3://bucket/runs')."
            )
        self._shared_ok.add(key)

    def _group_closed(self, group: RayWorkerGroup) -> None:
        self._lost.extend(group.lost_nodes)
        if group in self._groups:
            self._groups.remove(group)

    def shutdown(self) -> None:
        for group in list(self._groups):
            group.close()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self._disconnect()

    def _disconnect(self) -> None:
        if self._owns_ray and self._connected:
            import ray

            ray.shutdown()
        self._connected = False
        self._owns_ray = False


def _actor_options(bundle: Dict[str, float], pg, index: int, runtime_env: Optional[dict]) -> dict:
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    options = dict(
        num_cpus=bundle.get("CPU", 0),
        num_gpus=bundle.get("GPU", 0),
        max_restarts=0,
        max_task_retries=0,
        scheduling_strategy=PlacementGroupSchedulingStrategy(
            placement_group=pg, placement_group_bundle_index=index, placement_group_capture_child_tasks=False),
    )
    if bundle.get("memory"):
        options["memory"] = bundle["memory"]
    custom = {k: v for k, v in bundle.items() if k not in ("CPU", "GPU", "memory")}
    if custom:
        options["resources"] = custom
    if runtime_env:
        options["runtime_env"] = runtime_env
    return options


def _upload_working_dir(folder: str) -> str:
    """Package ``folder`` into the cluster (as ``ray.init(runtime_env={"working_dir": ...})`` does) -> its URI.

    Ray accepts a local folder only in the job's runtime_env; an actor's needs an uploaded package.
    """
    import tempfile

    from ray._private.runtime_env.working_dir import upload_working_dir_if_needed

    ignore_gitignore = os.environ.get("RAY_RUNTIME_ENV_IGNORE_GITIGNORE", "0") == "1"
    try:
        env = upload_working_dir_if_needed({"working_dir": folder}, include_gitignore=not ignore_gitignore,
                                           scratch_dir=tempfile.gettempdir(), logger=logger)
    except Exception as exc:  # noqa: BLE001 - too big, unreadable, ...
        raise ValueError(
            f"rafter could not ship the working directory {folder!r} to the Ray cluster's other machines: {exc}. "
            f"Run from a smaller project folder, list what to leave out in a .rayignore file, or set "
            f"RAFTER_RAY_WORKING_DIR=never if every node has the code already."
        ) from None
    return env["working_dir"]
