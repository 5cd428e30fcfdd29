"""What every client script shares: arguments, the import of its client library, the overall
deadline, the records an application writes, reading them back and the exact checks of what it reads.

The scripts run one client library each against a live Floe cluster and exit non-zero with a
message naming the first mismatch. Records are deterministic so every check compares against
exact expected values, never against what the broker happened to return.
"""
import argparse
import contextlib
import faulthandler
import sys
import time

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
# Topics of these codecs are written by an idempotent producer (InitProducerId, sequence numbers).
# The other producers keep one request in flight: a retried request (e.g. after
# NOT_LEADER_OR_FOLLOWER while a new partition's leader takes over) would otherwise land after
# later ones, which Kafka allows without idempotence and the order checks would rightly reject.
IDEMPOTENT_CODECS = {"gzip", "zstd"}
PARTITIONS = 3
PER_PARTITION = 12
BASE_TIMESTAMP = 1_700_000_000_000
# Records of one partition are this many ms apart, so a query between two of them has one answer.
TIMESTAMP_STEP = 1_000
RETENTION_MS = "3600000"
SMALL_MAX_MESSAGE_BYTES = 4096


class Mismatch(Exception):
    """The cluster answered something a Kafka application would not accept."""


def parse_args(description, extra=None):
    """The arguments every script takes; `extra(parser)` adds a script's own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--bootstrap", required=True, help="HOST:PORT of a broker")
    parser.add_argument("--prefix", required=True, help="unique prefix for every topic this run creates")
    parser.add_argument("--deadline", type=float, default=150.0, help="seconds before the whole run fails")
    parser.add_argument("--phase", choices=["all", "write", "read"], default="all",
                        help="write: create the codec topics and produce; read: check them (e.g. after a cluster restart); all: everything")
    if extra:
        extra(parser)
    args = parser.parse_args()
    install_deadline(args.deadline)
    return args


@contextlib.contextmanager
def client_library(name):
    """Around a script's imports of its client library. A failed import ends the run with status 2
    and a FAIL line naming the interpreter: a client that is not installed there (or too old to have
    what the script imports) is a broken setup, not a compatibility failure (status 1)."""
    try:
        yield
    except ImportError as error:
        print(f"FAIL: {name} is not importable from {sys.executable}: {error}", file=sys.stderr)
        sys.exit(2)


def install_deadline(seconds):
    """A hung client call must fail the run, not block it. faulthandler's watchdog is a C thread:
    it fires even while the main thread is blocked inside a client library, prints every thread's
    stack (which shows where it hung) and exits with status 1."""
    print(f"(the run fails with a stack dump if it takes over {seconds:.0f} s)", flush=True)
    faulthandler.dump_traceback_later(seconds, exit=True)


def step(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(main):
    """Runs `main`, turning a mismatch or an unexpected client error into exit status 1."""
    try:
        main()
    except Mismatch as error:
        print(f"FAIL: {error}", file=sys.stderr, flush=True)
        sys.exit(1)
    except Exception as error:  # any client exception is a failed compatibility check
        import traceback

        traceback.print_exc()
        print(f"FAIL: unexpected {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        sys.exit(1)
    print("OK", flush=True)


def expect(condition, message):
    if not condition:
        raise Mismatch(message)


def expect_equal(got, want, what):
    if got != want:
        raise Mismatch(f"{what}: got {got!r}, want {want!r}")


def topic_name(prefix, codec):
    return f"{prefix}-{codec}"


def timestamp(partition, index):
    return BASE_TIMESTAMP + partition * 100_000 + index * TIMESTAMP_STEP


def expected_records(codec, partition, count=PER_PARTITION):
    """The records of one partition: keyed, with headers (one key repeated, to check header order)
    and explicit timestamps; values repeat so every codec actually compresses them."""
    records = []
    for i in range(count):
        headers = [("idx", str(i).encode()), ("codec", codec.encode())]
        if i % 3 == 0:
            headers += [("dup", b"first"), ("dup", b"second")]
        records.append({
            "key": f"key-{partition}-{i}".encode(),
            "value": (f"{codec}-p{partition}-r{i}-" + "floe " * (5 * i + 1)).encode(),
            "headers": headers,
            "timestamp": timestamp(partition, i),
        })
    return records


def normalise_headers(headers):
    """Clients return headers as lists of tuples (or None when there are none); compare as a list."""
    return [(k if isinstance(k, str) else k.decode(), bytes(v) if v is not None else None) for k, v in (headers or [])]


def check_partition(topic, partition, got, want):
    """`got`: (offset, key, value, headers, timestamp) in the order the client delivered them.
    Every record must be there, once, in order, at offsets 0, 1, 2, ..."""
    expect_equal(len(got), len(want), f"{topic}-{partition}: record count")
    for i, ((offset, key, value, headers, ts), record) in enumerate(zip(got, want)):
        where = f"{topic}-{partition} record {i}"
        expect_equal(offset, i, f"{where}: offset")
        expect_equal(key, record["key"], f"{where}: key")
        expect_equal(value, record["value"], f"{where}: value")
        expect_equal(normalise_headers(headers), record["headers"], f"{where}: headers")
        expect_equal(ts, record["timestamp"], f"{where}: timestamp")


def check_first_member(group, topic, got, counts):
    """What the first member of a consumer group read (`got`: (offset, key) by partition): every
    partition from offset 0 to its end."""
    for p, count in counts.items():
        expect_equal([o for o, _ in got[p]], list(range(count)), f"group {group}: offsets of {topic}-{p} read by the first member")


def round_trip_codec_topics(phase, topics, produce, consume_all, check_offsets):
    """The topic of every codec (`topics`, in CODECS order): the write phase produces each
    partition's expected records, the read phase reads them back from the earliest offsets and
    checks them record for record, then the partitions' offsets. The client's part:
    `produce(topic, codec, records_by_partition)`, `consume_all(topic, counts)` returning
    (offset, key, value, headers, timestamp) by partition, `check_offsets(topic, counts)`."""
    for codec, topic in zip(CODECS, topics):
        records = {p: expected_records(codec, p) for p in range(PARTITIONS)}
        counts = {p: len(r) for p, r in records.items()}
        if phase != "read":
            produce(topic, codec, records)
            step(f"{codec}: produced {sum(counts.values())} records")
        if phase != "write":
            got = consume_all(topic, counts)
            for p in records:
                check_partition(topic, p, got[p], records[p])
            check_offsets(topic, counts)
            step(f"{codec}: consumed and checked {sum(counts.values())} records and their offsets")


def timestamp_queries(partition):
    """(query timestamp, expected offset or None): exact hits, a time between two records, before
    the first record and after the last."""
    last = PER_PARTITION - 1
    return [
        (timestamp(partition, 0), 0),
        (timestamp(partition, 5), 5),
        (timestamp(partition, 5) - TIMESTAMP_STEP // 2, 5),
        (timestamp(partition, last), last),
        (timestamp(partition, 0) - 50_000, 0),
        (timestamp(partition, last) + 1, None),
    ]


def uncompressible(size, seed=7):
    """Bytes no codec shrinks, so a record of this size stays this size on the wire."""
    import random

    return random.Random(seed).randbytes(size)


def deadline_loop(seconds, what):
    """Yields until `seconds` pass, then raises; callers break out when done."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        yield
    raise Mismatch(f"timed out after {seconds} s: {what}")


def read_partitions(want, poll, what, seconds=60):
    """Polls until there are `want[p]` records of every partition p; returns them by partition in
    the order delivered. `poll()` returns the (partition, record) pairs of one poll of the client."""
    got = {p: [] for p in want}
    for _ in deadline_loop(seconds, what):
        if all(len(got[p]) >= want[p] for p in want):
            break
        for partition, record in poll():
            got[partition].append(record)
    return got
