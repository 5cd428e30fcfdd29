#!/usr/bin/env python3
"""Writes the cross-check fixtures in Fixtures/ using independent implementations.

Requires: pip install crc32c python-snappy lz4 zstandard
Run from any directory; output is deterministic, so re-running leaves git clean.
"""
import gzip
import json
import os
import random
import struct

import crc32c
import lz4.frame
import snappy
import zstandard

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "Fixtures")


def write(name, data):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)


def payload():
    rng = random.Random(7)
    lines = []
    size = 0
    i = 0
    while size < 40_000:
        line = json.dumps({
            "id": i,
            "user": f"user-{rng.randrange(500)}",
            "event": rng.choice(["click", "view", "purchase", "scroll"]),
            "amount": round(rng.random() * 100, 2),
            "ts": 1_700_000_000_000 + i * 17,
        }, sort_keys=True) + "\n"
        lines.append(line)
        size += len(line)
        i += 1
    return "".join(lines).encode()


def xerial(data, block=32 * 1024):
    out = bytearray(b"\x82SNAPPY\x00" + struct.pack(">ii", 1, 1))
    for start in range(0, len(data), block):
        chunk = snappy.compress(data[start:start + block])
        out += struct.pack(">i", len(chunk)) + chunk
    return bytes(out)


def gzip_bytes(data):
    # mtime=0 keeps the output reproducible.
    return gzip.compress(data, compresslevel=6, mtime=0)


def zigzag(value):
    return (value << 1) ^ (value >> 63)


def varint(value):
    raw = zigzag(value) & 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while raw >= 0x80:
        out.append((raw & 0x7F) | 0x80)
        raw >>= 7
    out.append(raw)
    return bytes(out)


def nullable(data):
    return varint(-1) if data is None else varint(len(data)) + data


def record(ts_delta, offset_delta, key, value, headers):
    body = bytes([0]) + varint(ts_delta) + varint(offset_delta) + nullable(key) + nullable(value)
    body += varint(len(headers))
    for hkey, hvalue in headers:
        body += varint(len(hkey)) + hkey + nullable(hvalue)
    return varint(len(body)) + body


BASE_TS = 1_700_000_000_000
RECORDS = [
    (0, 0, b"k0", b"v0", [(b"h", b"x")]),
    (5, 1, None, b"value-1", [(b"n", None), ("\u00e9t\u00e9".encode(), b"")]),
    (-3, 2, b"k2", None, []),
]


def batch(codec_id, compress):
    records = b"".join(record(*r) for r in RECORDS)
    body = compress(records)
    attributes = codec_id
    max_ts = max(BASE_TS + r[0] for r in RECORDS)
    after_crc = struct.pack(
        ">hiqqqhii", attributes, len(RECORDS) - 1, BASE_TS, max_ts, 42, 3, 7, len(RECORDS)) + body
    crc = crc32c.crc32c(after_crc)
    batch_length = 4 + 1 + 4 + len(after_crc)
    return struct.pack(">qiibI", 0, batch_length, -1, 2, crc) + after_crc


def main():
    os.makedirs(OUT, exist_ok=True)
    data = payload()
    write("payload.bin", data)
    write("payload.gzip", gzip_bytes(data))
    half = len(data) // 2
    write("payload-multimember.gzip", gzip_bytes(data[:half]) + gzip_bytes(data[half:]))
    write("payload-xerial.snappy", xerial(data))
    write("payload-raw.snappy", snappy.compress(data))
    write("payload.lz4", lz4.frame.compress(
        data, block_size=lz4.frame.BLOCKSIZE_MAX64KB, block_linked=False, store_size=False))
    write("payload-linked-checksum.lz4", lz4.frame.compress(
        data, block_size=lz4.frame.BLOCKSIZE_MAX256KB, block_linked=True, content_checksum=True,
        store_size=True))
    write("payload-size.zstd", zstandard.ZstdCompressor(level=3, write_content_size=True).compress(data))
    streaming = zstandard.ZstdCompressor(level=3, write_content_size=False).compressobj()
    write("payload-nosize.zstd", streaming.compress(data) + streaming.flush())

    write("batch-none.bin", batch(0, lambda b: b))
    write("batch-gzip.bin", batch(1, gzip_bytes))
    write("batch-snappy.bin", batch(2, xerial))
    write("batch-lz4.bin", batch(3, lambda b: lz4.frame.compress(b, block_linked=False)))
    write("batch-zstd.bin", batch(4, lambda b: zstandard.ZstdCompressor(write_content_size=False).compress(b)))

    rng = random.Random(11)
    lines = []
    for size in [0, 1, 3, 7, 8, 9, 15, 16, 31, 63, 64, 255, 256, 767, 768, 769, 1000, 4096, 5000]:
        blob = bytes(rng.randrange(256) for _ in range(size))
        lines.append(f"{blob.hex() or '-'} {crc32c.crc32c(blob):08x}")
    write("crc32c-vectors.txt", ("\n".join(lines) + "\n").encode())


if __name__ == "__main__":
    main()
