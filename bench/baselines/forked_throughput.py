"""A control for bench/throughput.py: the torchrun baseline's steps, its 2 ranks forked from one parent
process (as rafter's zygote forks its workers) instead of started by torchrun. No rafter code runs.

    BENCH_RAFTER_JOB=bench/baselines/forked_throughput.py python bench/throughput.py --workloads llama

``BENCH_FORK_IMPORT=0``: the parent does not import torch before forking (each rank imports it itself).
``BENCH_FORK_SETSID=1``: each rank starts a session of its own, as torchrun's workers (and rafter's) do.
"""

import datetime
import os
import socket
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
BASELINE = os.path.join(HERE, "torchrun_throughput.py")

if os.environ.get("BENCH_FORK_IMPORT", "1") == "1":
    import torch.distributed  # noqa: F401
    import torch.nn.parallel  # noqa: F401


def main() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sys.argv = [BASELINE] + sys.argv[1:]
    pids = []
    for rank in range(2):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                if os.environ.get("BENCH_FORK_SETSID") == "1":
                    os.setsid()
                os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                                  MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                                  TORCHELASTIC_USE_AGENT_STORE="True")  # the store is the parent's, as torchrun's
                import runpy

                import torch.distributed as dist

                dist.destroy_process_group = lambda *a, **k: None  # the parent's store may be gone first
                runpy.run_path(BASELINE, run_name="__main__")
                code = 0
            except BaseException:  # noqa: BLE001
                import traceback

                traceback.print_exc()
            finally:
                sys.stdout.flush()
                os._exit(code)
        pids.append(pid)
    import torch.distributed as dist

    store = dist.TCPStore("127.0.0.1", port, 2, is_master=True, wait_for_workers=False,
                          timeout=datetime.timedelta(seconds=300))
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    del store
    sys.exit(max(codes))


if __name__ == "__main__":
    main()
