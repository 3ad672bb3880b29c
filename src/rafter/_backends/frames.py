"""Length-prefixed pickled frames (``multiprocessing.Connection``'s format: a 4-byte big-endian length,
or -1 and an 8-byte length), read without blocking. What :class:`rafter._worker.channel.Channel`
writes and reads on the worker side."""

from __future__ import annotations

import pickle
import socket
import struct
from typing import List


def frame(message: tuple) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    if len(data) > 0x7FFFFFFF:
        return struct.pack("!i", -1) + struct.pack("!Q", len(data)) + data
    return struct.pack("!i", len(data)) + data


class FrameReader:
    """Non-blocking reader of frames from one socket: ``read()`` returns the messages complete so far."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.eof = False

    def read(self) -> List[tuple]:
        try:
            chunk = self.sock.recv(65536)  # under malloc's mmap threshold: no map/unmap per message
        except (BlockingIOError, InterruptedError):
            return []
        except OSError:
            chunk = b""
        if not chunk:
            self.eof = True
        self.buf += chunk
        messages = []
        while len(self.buf) >= 4:
            size = struct.unpack("!i", self.buf[:4])[0]
            start = 4
            if size == -1:
                if len(self.buf) < 12:
                    break
                size = struct.unpack("!Q", self.buf[4:12])[0]
                start = 12
            if len(self.buf) < start + size:
                break
            messages.append(pickle.loads(self.buf[start : start + size]))
            self.buf = self.buf[start + size :]
        return messages
