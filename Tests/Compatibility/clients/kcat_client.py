#!/usr/bin/env python3
"""kcat (librdkafka 2.0.2 through Debian's kcat 1.7) against Floe: topics auto-created by a
produce, keyed records with headers under every codec, consumed from the beginning of the
partition, offsets by time, unknown topic, MESSAGE_TOO_LARGE and a corrupt batch.

kcat has no admin commands and cannot set a record's timestamp: topics come from auto-creation
(one partition, the broker's default), timestamps are the producer's clock (checked to fall in
the produce window, and the by-time queries are checked against the timestamps read back), and
the topics are deleted through confluent-kafka's admin client, with kcat checking they are gone.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common
from common import Mismatch, expect, expect_equal, step
import rawkafka

COUNT = 20
KCAT_TIMEOUT = 30


def kcat(bootstrap, *arguments, stdin=None, check=True):
    """Runs kcat once, bounded in time; returns (exit status, stdout, stderr)."""
    command = ["kcat", "-b", bootstrap, "-m", "10", *arguments]
    try:
        done = subprocess.run(command, input=stdin, capture_output=True, timeout=KCAT_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise Mismatch(f"kcat {' '.join(arguments)} did not finish within {KCAT_TIMEOUT} s")
    if check and done.returncode != 0:
        raise Mismatch(f"kcat {' '.join(arguments)} exited {done.returncode}: {done.stderr.decode(errors='replace').strip()}")
    return done.returncode, done.stdout, done.stderr.decode(errors="replace")


def records(codec):
    """Keys and values without tabs or newlines (kcat's delimiters)."""
    return [(f"key-{i}".encode(), (f"{codec}-r{i}-" + "floe " * (5 * i + 1)).strip().encode()) for i in range(COUNT)]


HEADERS = [("dup", "first"), ("dup", "second")]


def produce(bootstrap, topic, codec):
    lines = b"".join(key + b"\t" + value + b"\n" for key, value in records(codec))
    headers = [arg for k, v in [("codec", codec), *HEADERS] for arg in ("-H", f"{k}={v}")]
    kcat(bootstrap, "-P", "-t", topic, "-p", "0", "-K", "\t", "-X", f"compression.codec={codec}",
         "-X", "message.timeout.ms=15000", *ordering(codec), *headers, stdin=lines)


def auto_create(bootstrap, topic):
    """Creates the topic the way kcat can (a Metadata request that allows auto-creation) and waits
    until its leader answers ListOffsets. Producing earlier can meet NOT_LEADER_OR_FOLLOWER while
    the new leader takes over, and librdkafka 2.0.2 retries that batch after the next one even with
    one request in flight, so a non-idempotent producer would store records out of order."""
    kcat(bootstrap, "-L", "-t", topic)
    for _ in common.deadline_loop(20, f"{topic}-0 to answer ListOffsets"):
        status, out, _ = kcat(bootstrap, "-Q", "-J", "-t", f"{topic}:0:-1", check=False)
        if status == 0 and "error" not in json.loads(out.decode())[topic]["0"]:
            return
        time.sleep(0.1)


def ordering(codec):
    """Idempotence, or one request in flight (see common.IDEMPOTENT_CODECS)."""
    if codec in common.IDEMPOTENT_CODECS:
        return ["-X", "enable.idempotence=true"]
    return ["-X", "enable.idempotence=false", "-X", "max.in.flight.requests.per.connection=1"]


def consume(bootstrap, topic, start="beginning", count=COUNT):
    _, out, _ = kcat(bootstrap, "-C", "-t", topic, "-p", "0", "-o", str(start), "-c", str(count), "-e", "-J", "-q",
                     "-X", "fetch.wait.max.ms=100")
    return [json.loads(line) for line in out.decode().splitlines() if line.strip()]


def offset_for(bootstrap, topic, timestamp):
    """kcat -Q: the offset ListOffsets answers for `timestamp` (-1 latest, -2 earliest)."""
    _, out, _ = kcat(bootstrap, "-Q", "-J", "-t", f"{topic}:0:{timestamp}")
    answer = json.loads(out.decode())[topic]["0"]
    expect("error" not in answer, f"kcat -Q {topic}:0:{timestamp}: {answer}")
    return answer["offset"]


def partition_count(bootstrap, topic):
    _, out, _ = kcat(bootstrap, "-L", "-J")
    for entry in json.loads(out.decode())["topics"]:
        if entry["topic"] == topic:
            return len(entry["partitions"])
    return None


def check_topic(bootstrap, topic, codec, window):
    got = consume(bootstrap, topic)
    want = records(codec)
    expect_equal(len(got), COUNT, f"{topic}: records read")
    previous = 0
    for i, (message, (key, value)) in enumerate(zip(got, want)):
        where = f"{topic}-0 record {i}"
        expect_equal(message["offset"], i, f"{where}: offset")
        expect_equal(message["key"].encode(), key, f"{where}: key")
        expect_equal(message["payload"].encode(), value, f"{where}: value")
        expect_equal(message["headers"], ["codec", codec, "dup", "first", "dup", "second"], f"{where}: headers")
        expect_equal(message["tstype"], "create", f"{where}: timestamp type")
        expect(window[0] <= message["ts"] <= window[1], f"{where}: timestamp {message['ts']} outside the produce window {window}")
        expect(message["ts"] >= previous, f"{where}: timestamp {message['ts']} before the previous record's {previous}")
        previous = message["ts"]
    expect_equal(offset_for(bootstrap, topic, -2), 0, f"{topic}-0 earliest")
    expect_equal(offset_for(bootstrap, topic, -1), COUNT, f"{topic}-0 latest")
    stamps = [m["ts"] for m in got]
    # Every distinct timestamp answers the first record carrying it; before all of them, offset 0;
    # after the last, no offset (-1).
    queries = {ts: stamps.index(ts) for ts in sorted(set(stamps))[:4]}
    queries[stamps[0] - 60_000] = 0
    queries[stamps[-1] + 1] = -1
    for ts, want_offset in queries.items():
        expect_equal(offset_for(bootstrap, topic, ts), want_offset, f"{topic}-0 offset for time {ts}")


def error_cases(bootstrap, prefix, topic):
    missing = f"{prefix}-missing"
    status, _, err = kcat(bootstrap, "-P", "-t", missing, "-X", "allow.auto.create.topics=false",
                          "-X", "topic.metadata.propagation.max.ms=2000", "-X", "message.timeout.ms=10000",
                          stdin=b"nobody reads this\n", check=False)
    expect(status != 0 and "Unknown topic" in err, f"produce to unknown topic {missing}: exit {status}, stderr {err!r}")
    expect_equal(partition_count(bootstrap, missing), None, f"{missing} partitions (auto-creation was disallowed)")

    latest = offset_for(bootstrap, topic, -1)
    with tempfile.NamedTemporaryFile(suffix=".bin") as big:
        # Over the broker's default message.max.bytes (1 MiB + 12); the client's own limit raised past it.
        big.write(common.uncompressible(1_500_000))
        big.flush()
        status, _, err = kcat(bootstrap, "-P", "-t", topic, "-p", "0", "-X", "message.max.bytes=4000000",
                              "-X", "message.timeout.ms=15000", big.name, check=False)
    expect(status != 0 and "Message size too large" in err, f"a 1.5 MB record: exit {status}, stderr {err!r}")
    expect_equal(offset_for(bootstrap, topic, -1), latest, f"{topic}-0 latest after a rejected record")

    problems = rawkafka.corrupt_then_intact(bootstrap, topic, 0, lambda: offset_for(bootstrap, topic, -1))
    expect(not problems, "; ".join(problems))


def delete_topics(bootstrap, topics):
    try:
        from confluent_kafka.admin import AdminClient
    except ImportError as error:
        raise Mismatch(f"confluent_kafka (used to delete the topics kcat created) is not importable: {error}")
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for name, future in admin.delete_topics(topics, request_timeout=15).items():
        future.result(timeout=15)
    for _ in common.deadline_loop(15, "deleted topics to leave kcat's metadata"):
        if all(partition_count(bootstrap, t) is None for t in topics):
            break
        time.sleep(0.2)


def consumer_group(bootstrap, prefix, topic):
    """kcat -G (a balanced consumer group) reads the topic and commits as it exits; a second run of
    the same group reads only the records produced after that."""
    group = f"{prefix}-group"

    def read(count):
        _, out, _ = kcat(bootstrap, "-G", group, topic, "-c", str(count), "-q", "-f", "%p %o %k\\n",
                         "-X", "auto.offset.reset=earliest", "-X", "session.timeout.ms=10000")
        return [tuple(line.split(" ", 2)) for line in out.decode().splitlines() if line]

    first = read(COUNT)
    expect_equal(first, [("0", str(i), f"key-{i}") for i in range(COUNT)], f"group {group}: {topic}-0 read by the first run")
    lines = b"".join(f"later-{i}\tafter the commit\n".encode() for i in range(3))
    kcat(bootstrap, "-P", "-t", topic, "-p", "0", "-K", "\t", "-X", "enable.idempotence=true", stdin=lines)
    second = read(3)
    expect_equal(second, [("0", str(COUNT + i), f"later-{i}") for i in range(3)], f"group {group}: {topic}-0 read by a second run")


def main():
    args = common.parse_args(__doc__)
    if shutil.which("kcat") is None:
        raise Mismatch("kcat is not installed (apt-get install kcat)")
    _, out, _ = kcat(args.bootstrap, "-V")
    step(next((line for line in out.decode().splitlines() if line.startswith("Version")), "kcat (version unknown)"))
    topics = []
    for codec in common.CODECS:
        topic = common.topic_name(args.prefix, codec)
        topics.append(topic)
        # In a read-only run the produce window is unknown: any time up to now.
        window = (0, None)
        if args.phase != "read":
            auto_create(args.bootstrap, topic)
            window = (int(time.time() * 1000), None)
            produce(args.bootstrap, topic, codec)
            step(f"{codec}: {COUNT} records produced into an auto-created topic")
        window = (window[0], int(time.time() * 1000))
        if args.phase != "write":
            expect_equal(partition_count(args.bootstrap, topic), 1, f"{topic}: partitions of an auto-created topic")
            check_topic(args.bootstrap, topic, codec, window)
            step(f"{codec}: {COUNT} records read back and their offsets checked")
    if args.phase != "all":
        return

    consumer_group(args.bootstrap, args.prefix, topics[3])
    step("consumer group (-G): a second run resumes at the offsets the first committed")
    error_cases(args.bootstrap, args.prefix, topics[0])
    step("error cases: unknown topic, MESSAGE_TOO_LARGE, CORRUPT_MESSAGE")
    delete_topics(args.bootstrap, topics)
    step("topics deleted (confluent-kafka admin); kcat no longer lists them")


if __name__ == "__main__":
    common.run(main)
