import os

import psutil
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

# Every fit() forks its zygote from this process when that is safe, and the zygote preloads
# torch._dynamo (which any torch optimizer imports): doing that import here once makes each of the
# suite's ~150 fits start like a driver that already built an optimizer, instead of paying ~1 s each.
import torch._dynamo  # noqa: E402,F401


def pytest_collection_modifyitems(config, items):
    """Run the tests that start Ray last: once Ray is imported, a driver can no longer fork its zygote
    (Ray's native state does not survive fork), so every later fit would start a fresh interpreter."""
    def uses_ray(item):
        return "ray" in item.nodeid.split("::")[0].split("/") or "[ray" in item.nodeid
    items.sort(key=uses_ray)  # stable: the order within each half is kept


@pytest.fixture(autouse=True)
def no_leaked_processes():
    """Fail a test that leaves any process of its own behind (workers, zygotes, drivers)."""
    from rafter._backends.local import warm

    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    yield
    warm.close()  # the zygote a fit() keeps warm for the next one in this process
    leftover = [p for p in me.children(recursive=True) if p.pid not in before]
    gone, alive = psutil.wait_procs(leftover, timeout=5)
    for p in alive:
        p.kill()
    assert not alive, f"processes outlived the test: {[(p.pid, p.name()) for p in alive]}"


@pytest.fixture
def run_config(tmp_path):
    from rafter.train import RunConfig

    def make(**kwargs):
        kwargs.setdefault("storage_path", str(tmp_path / "results"))
        kwargs.setdefault("name", "run")
        return RunConfig(**kwargs)

    return make
