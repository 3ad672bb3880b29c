"""Length-prefixed pickled frames (``multiprocessing.Connection``'s format: a 4-byte big-endian length,
or -1 and an 8-byte length), read without blocking. What :class:`rafter._worker.channel.Channel`
writes and reads on the worker side."""

from __future__ import annotations

import pickle
import socket
import struct
from typing import List, Optional

from rafter._worker.channel import LANE_MAX
from rafter._worker.channel import SEQ as _SEQ  # the number that starts each frame of a two-lane channel


_LEN, _LONG = struct.Struct("!i"), struct.Struct("!Q")


def _recv_now(sock: socket.socket, size: int) -> Optional[bytes]:
    """What a non-blocking socket holds now: None when nothing yet, b"" when it is closed (or broken)."""
    try:
        return sock.recv(size)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return b""


def frame(message: tuple) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    if len(data) > 0x7FFFFFFF:
        return struct.pack("!i", -1) + struct.pack("!Q", len(data)) + data
    return struct.pack("!i", len(data)) + data


class FrameReader:
    """Non-blocking reader of frames from one socket: ``read()`` returns the messages complete so far.
    ``sequenced``: each frame starts with the sender's 8-byte sequence number (see
    ``rafter._worker.channel``); ``read()`` then returns ``(number, message)`` pairs."""

    def __init__(self, sock: socket.socket, sequenced: bool = False) -> None:
        self.sock = sock
        self.sequenced = sequenced
        self.buf = b""
        self.eof = False

    def read(self) -> List[tuple]:
        """What one ``recv`` brought."""
        messages: List[tuple] = []
        chunk = _recv_now(self.sock, 65536)  # under malloc's mmap threshold: no map/unmap per message
        if chunk is None:
            return messages
        if not chunk:
            self.eof = True
        self.buf += chunk
        self._parse(messages)
        return messages

    def _parse(self, messages: List[tuple]) -> None:
        buf, pos, end = self.buf, 0, len(self.buf)
        view = memoryview(buf)
        while end - pos >= 4:
            size = _LEN.unpack_from(buf, pos)[0]
            start = pos + 4
            if size == -1:
                if end - pos < 12:
                    break
                size = _LONG.unpack_from(buf, start)[0]
                start = pos + 12
            if end < start + size:
                break
            if self.sequenced:
                messages.append((_SEQ.unpack_from(buf, start)[0], pickle.loads(view[start + _SEQ.size : start + size])))
            else:
                messages.append(pickle.loads(view[start : start + size]))
            pos = start + size
        view.release()
        if pos:
            self.buf = buf[pos:]  # one copy of the unread tail per read, however many frames it held


class PacketReader:
    """Non-blocking reader of a two-lane channel's metrics lane (SOCK_SEQPACKET: one message per packet,
    each ``(number, message)``)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.eof = False

    def read(self, most: int = 4096) -> List[tuple]:
        """The messages the lane holds now, ``most`` at the most: a rank that reports faster than the
        driver reads can't keep it here (what is left waits for the next read, in order)."""
        messages: List[tuple] = []
        while not self.eof and len(messages) < most:
            packet = _recv_now(self.sock, LANE_MAX)
            if packet is None:
                break
            if not packet:
                self.eof = True
                break
            messages.append((_SEQ.unpack_from(packet)[0], pickle.loads(memoryview(packet)[_SEQ.size:])))
        return messages


class Lanes:
    """The driver's end of one worker's two lanes (main and metrics, see ``rafter._worker.channel``):
    the messages of both, in the order the worker sent them."""

    def __init__(self, main: socket.socket, metrics: socket.socket) -> None:
        self.main = FrameReader(main, sequenced=True)
        self.metrics = PacketReader(metrics)
        self._next = 1
        self._held: dict = {}

    def read_main(self) -> List[tuple]:
        """A message on the main lane may follow metrics sent before it: those are in the metrics lane
        already (the worker wrote them first), so read them too."""
        got = self.main.read()
        if got or self.main.eof:
            got += self.metrics.read()
        return self._release(got)

    def read_metrics(self) -> List[tuple]:
        return self._release(self.metrics.read())

    def _release(self, got: List[tuple]) -> List[tuple]:
        for number, message in got:
            self._held[number] = message
        out = []
        while self._next in self._held:
            out.append(self._held.pop(self._next))
            self._next += 1
        return out
