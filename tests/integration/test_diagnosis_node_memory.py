"""The node-side memory watch (run by each Ray rank actor next to its worker), on real processes."""

import os
import signal
import subprocess
import sys
import threading

import pytest

from rafter._diagnose.node_memory import NodeMemoryWatch
from tests.integration.cgroups import own_memory_cgroup, small_cgroup

HOARD = "import time\nhoard = [bytearray(50 * 2**20) for _ in range(40)]\ntime.sleep(60)\n"


def test_a_worker_over_its_limit_is_stopped_and_named_with_its_node():
    proc = subprocess.Popen([sys.executable, "-c", HOARD], start_new_session=True)
    sent = []
    stopped = threading.Event()

    def stop():
        os.killpg(proc.pid, signal.SIGKILL)
        stopped.set()

    watch = NodeMemoryWatch("10.1.2.3 (node-b)", 300 * 2**20, stop, sent.append)
    try:
        watch.start(proc.pid)
        assert stopped.wait(30), "the watch did not stop a worker over its limit"
        code = proc.wait(10)
        watch.exited(proc.pid, code, killed_by_rafter=False)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        watch.close()
    assert len(sent) == 1 and sent[0]["source"] == "rafter" and sent[0]["node"] == "10.1.2.3 (node-b)"
    assert sent[0]["headline"].startswith("ran out of memory on node 10.1.2.3 (node-b): it used ")
    assert "over its limit of 300 MiB" in sent[0]["headline"] and sent[0]["peak_rss"] > 300 * 2**20


def test_a_sigkill_that_is_not_an_oom_kill_sends_nothing():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    sent = []
    watch = NodeMemoryWatch("10.1.2.3", None, proc.kill, sent.append)
    watch.start(proc.pid)
    proc.kill()
    watch.exited(proc.pid, proc.wait(10), killed_by_rafter=False)
    watch.close()
    assert sent == []


@pytest.mark.skipif(own_memory_cgroup() is None, reason="needs a writable cgroup-v1 memory controller")
def test_a_worker_the_kernel_oom_killer_took_is_named_with_its_node():
    with small_cgroup("rafter-node-watch") as cg:
        code = f"open({os.path.join(cg, 'tasks')!r}, 'w').write(str(__import__('os').getpid()))\n" + HOARD
        sent = []
        watch = NodeMemoryWatch("10.1.2.3 (node-b)", None, lambda: None, sent.append)
        proc = subprocess.Popen([sys.executable, "-c", code])
        watch.start(proc.pid)
        returncode = proc.wait(60)
        watch.exited(proc.pid, returncode, killed_by_rafter=False)
        watch.close()
    assert returncode == -signal.SIGKILL
    assert len(sent) == 1 and sent[0]["source"] == "kernel"
    assert sent[0]["headline"].startswith("was killed by the kernel OOM killer on node 10.1.2.3 (node-b) (SIGKILL; ")
