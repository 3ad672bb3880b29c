"""A worker's side of preemption: a SIGTERM from outside rafter is a notice, not a death.

Schedulers (Kubernetes, SLURM, spot reclaims through an agent) stop a process with SIGTERM and give it a
grace period before SIGKILL. A worker that died at the SIGTERM would lose everything since its last
checkpoint, and the run would charge it to ``max_failures`` as if it had crashed. Instead:

- SIGTERM is blocked in every thread of the worker and taken by one waiting thread (the training thread
  may be inside a collective, where no Python signal handler would run), which tells the driver
  (``PreemptNotice``) and returns to waiting; the training thread is not interrupted.
- The driver tells every rank (``train.get_preemption_info()`` then returns the deadline and the ranks
  affected), gives them until the deadline to report a checkpoint, then stops the group and restarts it
  from the latest checkpoint, charged to ``FailureConfig(max_preemption_failures=...)``.

Children the user's code forks (DataLoader workers) get the usual signal mask back, so a SIGTERM still
ends them.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Callable

NOTICE_SIGNAL = signal.SIGTERM


def arm(send_notice: Callable[[float], None]) -> None:
    """Start the thread that turns SIGTERM into ``send_notice(time)``. Call from the worker's only thread,
    before any other starts (threads inherit the mask)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {NOTICE_SIGNAL})
    os.register_at_fork(after_in_child=lambda: signal.pthread_sigmask(signal.SIG_UNBLOCK, {NOTICE_SIGNAL}))

    def wait() -> None:
        while True:
            signal.sigwait({NOTICE_SIGNAL})
            try:
                send_notice(time.time())
            except OSError:  # the driver is gone: nothing to tell, and nothing to save for
                os._exit(128 + NOTICE_SIGNAL)

    # The thread starts with every signal blocked, so that it takes SIGTERM alone (a signal another
    # rafter thread waits for, or one the user's code handles, is never delivered to it).
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    try:
        threading.Thread(target=wait, name="rafter-preemption", daemon=True).start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
