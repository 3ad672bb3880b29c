"""Framed, pickled messages between a worker and the driver over connected sockets.

Messages are the records of ``rafter._worker.messages``. The worker sends from its training thread;
a lock keeps frames whole if user code reports from several threads.

Two lanes (the local backend): metrics-only reports go on their own socket, which the driver reads at
most every ``rafter._backends.local.group.METRICS_LANE_S``; everything else goes on the main one, which
wakes the driver at once. A report every step then costs the training no wake-up of the driver, which
would take a core from a rank (and so from every rank that waits for it in the next all-reduce). The
metrics lane is a SOCK_SEQPACKET socket written without blocking: a report that does not fit (the lane
is full, or the report is big) goes on the main lane instead, which wakes the driver, and the driver
then reads both. Each message on either lane starts with a sequence number, so the driver handles them
in the order they were sent. A report once sent sits in the kernel's socket buffer: it reaches the
driver even if the worker dies right after. With one socket (the Ray backend), frames carry no number.
"""

from __future__ import annotations

import pickle
import socket
import struct
import threading
from multiprocessing.connection import Connection
from typing import Optional

SEQ = struct.Struct("!Q")
LANE_MAX = 1 << 16  # the largest message the metrics lane carries (the driver reads it in one recv)


class Channel:
    def __init__(self, fd: int, metrics_fd: Optional[int] = None) -> None:
        self._conn = Connection(fd)
        self._metrics = socket.socket(fileno=metrics_fd) if metrics_fd is not None else None
        self._lock = threading.Lock()
        self._seq = 0

    def fileno(self) -> int:
        return self._conn.fileno()

    def send(self, message) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            self._conn.send_bytes(self._numbered(data))

    def send_metrics(self, message) -> None:
        """A message the driver may read a little later (a metrics-only report): it does not wake it."""
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            data = self._numbered(data)
            if self._metrics is not None and len(data) <= LANE_MAX:
                try:
                    self._metrics.send(data, socket.MSG_DONTWAIT)
                    return
                except OSError:
                    pass  # full (or the driver is gone): the main lane, which wakes it
            self._conn.send_bytes(data)

    def _numbered(self, data: bytes) -> bytes:
        if self._metrics is None:
            return data
        self._seq += 1
        return SEQ.pack(self._seq) + data

    def recv(self):
        return pickle.loads(self._conn.recv_bytes())

    def poll(self, timeout: float = 0.0) -> bool:
        return self._conn.poll(timeout)

    def close(self) -> None:
        self._conn.close()
        if self._metrics is not None:
            self._metrics.close()
