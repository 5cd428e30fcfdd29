"""Hand-built Kafka bytes for what no client library will send: a Produce v7 whose record batch
has a flipped CRC byte.

The same batch bytes are sent twice: first corrupted (the broker must answer CORRUPT_MESSAGE and
write nothing), then intact (the broker must accept them). The second send shows the bytes were
otherwise a valid batch, so the first answer is about the CRC and nothing else.
"""
import socket
import struct

CORRUPT_MESSAGE = 2
NONE = 0


def _crc32c_table():
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _varint(n):
    """Zig-zag signed varint, as records use."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _bytes_field(data):
    if data is None:
        return _varint(-1)
    return _varint(len(data)) + data


def record_batch(records, base_timestamp):
    """A magic-2 batch, uncompressed, no producer id. `records`: (key, value, [(hkey, hvalue)])."""
    body = bytearray()
    for delta, (key, value, headers) in enumerate(records):
        record = bytearray(b"\x00")  # attributes
        record += _varint(delta)  # timestamp delta: 1 ms apart
        record += _varint(delta)  # offset delta
        record += _bytes_field(key) + _bytes_field(value)
        record += _varint(len(headers))
        for hkey, hvalue in headers:
            record += _bytes_field(hkey.encode()) + _bytes_field(hvalue)
        body += _varint(len(record)) + record
    after_crc = struct.pack(
        ">hiqqqhii", 0, len(records) - 1, base_timestamp, base_timestamp + len(records) - 1, -1, -1, -1, len(records)
    ) + bytes(body)
    crc = crc32c(after_crc)
    # partitionLeaderEpoch, magic, crc, then the CRC-covered part; batchLength counts from the epoch on.
    tail = struct.pack(">ibI", -1, 2, crc) + after_crc
    return struct.pack(">qi", 0, len(tail)) + tail


def flip_crc_byte(batch):
    """The same batch with one byte of its CRC field inverted (offset 17: after baseOffset,
    batchLength, partitionLeaderEpoch and magic)."""
    data = bytearray(batch)
    data[17] ^= 0xFF
    return bytes(data)


def _string(s):
    raw = s.encode()
    return struct.pack(">h", len(raw)) + raw


def produce_v7(topic, partition, batch, correlation_id, acks=-1, timeout_ms=10_000):
    header = struct.pack(">hhi", 0, 7, correlation_id) + _string("floe-raw-produce")
    body = struct.pack(">hhi", -1, acks, timeout_ms)  # null transactional id
    body += struct.pack(">i", 1) + _string(topic)
    body += struct.pack(">i", 1) + struct.pack(">i", partition) + struct.pack(">i", len(batch)) + batch
    frame = header + body
    return struct.pack(">i", len(frame)) + frame


class _Reader:
    def __init__(self, data):
        self.data = data
        self.at = 0

    def take(self, fmt):
        size = struct.calcsize(fmt)
        if self.at + size > len(self.data):
            raise ValueError("Produce response ends early")
        values = struct.unpack_from(fmt, self.data, self.at)
        self.at += size
        return values if len(values) > 1 else values[0]

    def string(self):
        n = self.take(">h")
        if n < 0:
            return None
        raw = self.data[self.at:self.at + n]
        self.at += n
        return raw.decode()


def _receive_exactly(sock, n):
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(data)} of {n} bytes")
        data += chunk
    return bytes(data)


def _exchange(address, frame, timeout):
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(frame)
        size = struct.unpack(">i", _receive_exactly(sock, 4))[0]
        if not 0 < size < 1 << 20:
            raise ValueError(f"implausible response size {size}")
        return _Reader(_receive_exactly(sock, size))


def leader_address(bootstrap, topic, partition, timeout=15.0):
    """HOST:PORT of the partition's leader, from a Metadata v1 request to the first bootstrap broker."""
    header = struct.pack(">hhi", 3, 1, 40) + _string("floe-raw-produce")
    body = struct.pack(">i", 1) + _string(topic)
    frame = header + body
    reader = _exchange(bootstrap.split(",")[0], struct.pack(">i", len(frame)) + frame, timeout)
    reader.take(">i")  # correlation id
    brokers = {}
    for _ in range(reader.take(">i")):
        node = reader.take(">i")
        host = reader.string()
        port = reader.take(">i")
        reader.string()  # rack
        brokers[node] = f"{host}:{port}"
    reader.take(">i")  # controller id
    for _ in range(reader.take(">i")):
        reader.take(">h")
        name = reader.string()
        reader.take(">b")
        for _ in range(reader.take(">i")):
            _error, index, leader = reader.take(">hii")
            for _ in range(reader.take(">i")):
                reader.take(">i")
            for _ in range(reader.take(">i")):
                reader.take(">i")
            if name == topic and index == partition and leader in brokers:
                return brokers[leader]
    raise ValueError(f"no leader for {topic}-{partition} in Metadata")


def send_produce(bootstrap, topic, partition, batch, correlation_id, timeout=15.0):
    """Sends one Produce v7 to the partition's leader and returns (error_code, base_offset)."""
    reader = _exchange(leader_address(bootstrap, topic, partition, timeout), produce_v7(topic, partition, batch, correlation_id), timeout)
    got_correlation = reader.take(">i")
    if got_correlation != correlation_id:
        raise ValueError(f"correlation id {got_correlation}, sent {correlation_id}")
    for _ in range(reader.take(">i")):
        name = reader.string()
        for _ in range(reader.take(">i")):
            index, error_code, base_offset, _append_time, _start = reader.take(">ihqqq")
            if name == topic and index == partition:
                return error_code, base_offset
    raise ValueError(f"no answer for {topic}-{partition} in the Produce response")


def corrupt_then_intact(bootstrap, topic, partition, latest_offset):
    """Sends a corrupt batch, then the intact one. `latest_offset()` returns the partition's
    high watermark through the calling client. Returns a list of problems (empty when all is well)."""
    problems = []
    before = latest_offset()
    batch = record_batch([(b"raw-key", b"raw-value", [("raw", b"1")]), (b"raw-key-2", b"raw-value-2", [])], 1_700_000_500_000)
    code, _ = send_produce(bootstrap, topic, partition, flip_crc_byte(batch), correlation_id=41)
    if code != CORRUPT_MESSAGE:
        problems.append(f"Produce v7 with a flipped CRC byte: error code {code}, want {CORRUPT_MESSAGE} (CORRUPT_MESSAGE)")
    after = latest_offset()
    if after != before:
        problems.append(f"latest offset moved from {before} to {after} after a corrupt batch")
    code, base = send_produce(bootstrap, topic, partition, batch, correlation_id=42)
    if code != NONE or base != before:
        problems.append(f"the same batch with its CRC intact: error code {code}, base offset {base}; want 0 at {before}")
    final = latest_offset()
    if final != before + 2:
        problems.append(f"latest offset {final} after the intact batch, want {before + 2}")
    return problems
