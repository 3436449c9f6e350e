"""Read an offline W&B run file (LevelDB-log framing around wandb_internal_pb2.Record), for tests."""
import json
import struct
import time


def iter_records(path):
    from wandb.proto import wandb_internal_pb2 as pb

    data = open(path, "rb").read()
    assert data[:4] == b":W&B"
    pos, buf = 7, b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _crc, n, t = struct.unpack("<IHB", data[pos:pos + 7])
        if t == 0 and n == 0:
            pos += left
            continue
        chunk = data[pos + 7:pos + 7 + n]
        pos += 7 + n
        if t in (2, 3):  # FIRST / MIDDLE
            buf += chunk
            continue
        buf = chunk if t == 1 else buf + chunk  # FULL / LAST
        r = pb.Record()
        r.ParseFromString(buf)
        buf = b""
        yield r


def history(path):
    return [{(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item}
            for r in iter_records(path) if r.WhichOneof("record_type") == "history"]


def wait_complete(path, timeout=30):
    t = time.time()
    while time.time() - t < timeout:
        try:
            if any(r.WhichOneof("record_type") == "exit" for r in iter_records(path)):
                return path
        except Exception:
            pass
        time.sleep(0.05)
    raise TimeoutError(path)
