import os

import psutil
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def no_leaked_processes():
    """Fail a test that leaves any process of its own behind (workers, zygotes, drivers)."""
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    yield
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
