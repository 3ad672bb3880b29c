"""Framed, pickled messages between a worker and the driver over a connected socket.

Messages are the records of ``rafter._worker.messages``. The worker sends from its training thread;
a lock keeps frames whole if user code reports from several threads.
"""

from __future__ import annotations

import pickle
import threading
from multiprocessing.connection import Connection


class Channel:
    def __init__(self, fd: int) -> None:
        self._conn = Connection(fd)
        self._lock = threading.Lock()

    def fileno(self) -> int:
        return self._conn.fileno()

    def send(self, message) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            self._conn.send_bytes(data)

    def send_bytes(self, data: bytes) -> None:
        with self._lock:
            self._conn.send_bytes(data)

    def recv(self):
        return pickle.loads(self._conn.recv_bytes())

    def poll(self, timeout: float = 0.0) -> bool:
        return self._conn.poll(timeout)

    def close(self) -> None:
        self._conn.close()
