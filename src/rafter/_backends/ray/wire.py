"""The bytes on the wire between the driver and a rank's actor or worker process (no Ray, no torch).

Every connection to the driver opens with a fixed 25-byte handshake, checked *before* anything is
unpickled: ``MAGIC | token (16 bytes, random per attempt) | rank (4 bytes) | kind (1 byte)``. A peer
that does not present the attempt's token is dropped. After it, both sides send frames in the
``multiprocessing.Connection`` format (4-byte big-endian length, or -1 and an 8-byte length), the
same as :class:`rafter._worker.channel.Channel`, so a worker's channel is simply its socket.
"""

from __future__ import annotations

import socket
import struct
from typing import Optional, Tuple

from rafter._backends.frames import FrameReader, frame  # noqa: F401  - the frames of this wire

MAGIC = b"RFT1"
TOKEN_BYTES = 16
HANDSHAKE_SIZE = len(MAGIC) + TOKEN_BYTES + 4 + 1
CONTROL = b"c"  # the rank's actor: output, spawn and exit notices; kill/signal requests
CHANNEL = b"w"  # the worker process itself: rafter._worker.channel messages


def handshake(token: bytes, rank: int, kind: bytes) -> bytes:
    assert len(token) == TOKEN_BYTES and kind in (CONTROL, CHANNEL)
    return MAGIC + token + struct.pack(">I", rank) + kind


def parse_handshake(data: bytes, token: bytes) -> Optional[Tuple[int, bytes]]:
    """``(rank, kind)`` when ``data`` is a valid handshake for ``token``, else None (constant-time compare)."""
    import hmac

    if len(data) != HANDSHAKE_SIZE or data[: len(MAGIC)] != MAGIC:
        return None
    if not hmac.compare_digest(data[len(MAGIC) : len(MAGIC) + TOKEN_BYTES], token):
        return None
    rank = struct.unpack(">I", data[-5:-1])[0]
    kind = data[-1:]
    return (rank, kind) if kind in (CONTROL, CHANNEL) else None


def connect(host: str, port: int, token: bytes, rank: int, kind: bytes, timeout: float = 30.0) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.sendall(handshake(token, rank, kind))
    return sock
