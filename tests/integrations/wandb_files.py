"""Read an offline W&B run back from its ``run-<id>.wandb`` file (W&B's own LevelDB-log record format)."""

import glob
import json
import os
import struct

_BLOCK = 32768
_HEADER = 7  # file header ":W&B" + magic 0xBEE1 + version, and each record's crc32 + length + type


def _records(path: str):
    with open(path, "rb") as f:
        data = f.read()
    ident, magic, _version = struct.unpack("<4sHB", data[:_HEADER])
    assert ident == b":W&B" and magic == 0xBEE1, (ident, magic)
    pos, chunks = _HEADER, []
    while pos + _HEADER <= len(data):
        left_in_block = _BLOCK - pos % _BLOCK
        if left_in_block < _HEADER:  # too small for a record header: the writer padded it
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + _HEADER])
        if length == 0 and kind == 0:  # zero padding at the end of a block
            pos += left_in_block
            continue
        chunks.append(data[pos + _HEADER:pos + _HEADER + length])
        pos += _HEADER + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            yield b"".join(chunks)
            chunks = []


def read_offline_run(wandb_dir: str):
    """(run record, [(step, {key: value})] history, {key: value} summary updates, exit record) of the one
    offline run under ``wandb_dir``."""
    from wandb.proto import wandb_internal_pb2

    (path,) = glob.glob(os.path.join(wandb_dir, "offline-run-*", "run-*.wandb"))
    run, history, summary, exit_ = None, [], {}, None
    for raw in _records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
        elif kind == "history":
            items = {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.history.item}
            history.append((record.history.step.num, items))
        elif kind == "summary":
            for item in record.summary.update:
                summary["/".join(item.nested_key) or item.key] = json.loads(item.value_json)
        elif kind == "exit":
            exit_ = record.exit
    return run, history, summary, exit_
