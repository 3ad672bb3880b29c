"""The Ray backend's pure decisions, without a cluster: bundles, feasibility messages, rank layout."""

import pytest

from rafter._backends.ray import wire
from rafter._backends.ray.layout import Slot, assign_ranks
from rafter._backends.ray.resources import NodeView, infeasibility, node_views, worker_bundle
from rafter.train import ScalingConfig


def nodes(*cpus, gpus=None, extra=None):
    return [NodeView(f"node {i + 1}", f"id{i}", f"10.0.0.{i + 1}",
                     dict({"CPU": c, "GPU": (gpus or [0] * len(cpus))[i]}, **(extra or {})))
            for i, c in enumerate(cpus)]


def test_bundles_follow_ray_train():
    assert worker_bundle(ScalingConfig(num_workers=2)) == {"CPU": 1.0}
    assert worker_bundle(ScalingConfig(num_workers=2, use_gpu=True)) == {"GPU": 1.0}
    assert worker_bundle(ScalingConfig(num_workers=1, use_gpu=True, accelerator_type="A100",
                                       resources_per_worker={"CPU": 4, "GPU": 1, "memory": 2**30, "TPU": 1})) == {
        "memory": 2**30, "TPU": 1.0, "CPU": 4.0, "GPU": 1.0, "accelerator_type:A100": 0.001}


def test_the_total_shortfall_is_named_with_each_nodes_share():
    message = infeasibility({"CPU": 2.0}, 3, "PACK", nodes(2, 2))
    assert message.startswith("ScalingConfig asks for 6 CPUs (3 workers x 2 CPU) but the Ray cluster has 4 CPUs "
                              "in all (node 1: 2, node 2: 2).")
    assert "no autoscaler" in message and "ScalingConfig(num_workers=2)" in message


def test_packing_matters_even_when_the_total_suffices():
    message = infeasibility({"CPU": 2.0}, 2, "PACK", nodes(3, 1))
    assert "Each worker" not in message and "they hold 1 such workers at once (node 1: 1, node 2: 0)" in message


@pytest.mark.parametrize("strategy, n, expect", [
    ("STRICT_PACK", 3, "the largest node holds 2"),
    ("STRICT_SPREAD", 3, "only 2 nodes can hold one"),
    ("SPREAD", 4, None),
    ("PACK", 4, None),
])
def test_strict_strategies(strategy, n, expect):
    message = infeasibility({"CPU": 1.0}, n, strategy, nodes(2, 2))
    assert (message is None) if expect is None else (expect in message)


def test_a_worker_larger_than_any_node_and_missing_resources():
    assert "the largest node of the Ray cluster has 2 GPUs" in infeasibility({"GPU": 4.0}, 1, "PACK",
                                                                           nodes(8, 8, gpus=[2, 2]))
    assert "asks for a resource that no node" in infeasibility({"TPU": 1.0}, 1, "PACK", nodes(2))
    assert "ScalingConfig(accelerator_type='A100')" in infeasibility(
        {"accelerator_type:A100": 0.001}, 1, "PACK", nodes(2, extra={"accelerator_type:T4": 1}))


def test_node_views_keep_alive_nodes_head_first():
    raw = [
        {"NodeID": "b", "Alive": True, "NodeManagerAddress": "10.0.0.2", "Resources": {"CPU": 2}},
        {"NodeID": "x", "Alive": False, "NodeManagerAddress": "10.0.0.9", "Resources": {"CPU": 2}},
        {"NodeID": "a", "Alive": True, "NodeManagerAddress": "10.0.0.1",
         "Resources": {"CPU": 2, "node:__internal_head__": 1}},
    ]
    got = [(v.node_id, v.label) for v in node_views(raw)]
    assert got == [("a", "10.0.0.1"), ("b", "10.0.0.2")]


def test_ranks_are_contiguous_per_node_driver_node_first_and_gpus_follow_ray_train():
    slots = [Slot(0, "n2", "10.0.0.2", ["3"]), Slot(1, "n1", "10.0.0.1", ["1"]), Slot(2, "n2", "10.0.0.2", ["0"]),
             Slot(3, "n1", "10.0.0.1", ["0"])]
    places = assign_ranks(slots, driver_node_id="n1", use_gpu=True)
    got = [(p.rank, p.bundle, p.node_rank, p.local_rank, p.local_world_size) for p in places]
    assert got == [
        (0, 3, 0, 0, 2), (1, 1, 0, 1, 2), (2, 2, 1, 0, 2), (3, 0, 1, 1, 2)]
    got = [(p.visible_devices, p.device_index) for p in places]
    assert got == [("0,1", 0), ("0,1", 1), ("0,3", 0), ("0,3", 1)]
    cpu = assign_ranks(slots, driver_node_id="elsewhere", use_gpu=False)
    got = [(p.bundle, p.node_rank, p.device_index, p.visible_devices) for p in cpu]
    assert got == [
        (0, 0, None, None), (2, 0, None, None), (1, 1, None, None), (3, 1, None, None)]


def test_a_connection_without_the_attempts_token_is_refused_before_anything_is_unpickled():
    token = b"t" * wire.TOKEN_BYTES
    good = wire.handshake(token, 3, wire.CHANNEL)
    assert wire.parse_handshake(good, token) == (3, wire.CHANNEL)
    assert wire.parse_handshake(wire.handshake(b"u" * wire.TOKEN_BYTES, 3, wire.CHANNEL), token) is None
    assert wire.parse_handshake(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", token) is None


def test_the_local_backend_never_imports_ray(tmp_path):
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import sys
        from rafter.train import RunConfig, ScalingConfig
        from rafter.train.torch import TorchTrainer

        result = TorchTrainer(lambda: 7, scaling_config=ScalingConfig(num_workers=2),
                              run_config=RunConfig(name="r", storage_path=sys.argv[1])).fit()
        assert result.return_value == 7
        print("RAY IMPORTED" if "ray" in sys.modules else "NO RAY")
        """)
    env = {k: v for k, v in __import__("os").environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("NO RAY")
