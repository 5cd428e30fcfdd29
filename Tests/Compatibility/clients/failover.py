#!/usr/bin/env python3
"""The client side of the broker fail-over test, driven step by step by the Swift test that kills
processes in between (confluent-kafka, librdkafka 2.x).

  create   --bootstrap B --topic T                 one-partition topic
  leader   --bootstrap B --topic T [--not N]       prints the node id leading partition 0 (once it is not N)
  produce  --bootstrap B --topic T --acked FILE --stop-file S [--idempotent]
           numbered records (acks=all, retries; idempotent, or one request in flight) until
           S exists; every acknowledged record is appended to FILE as "number offset"
  follow   --bootstrap B --topic T --followed FILE --stop-file S
           a consumer reading the partition from its start while the fault happens, appending
           "offset number" to FILE, until S exists and it has reached the end
  coordinator --bootstrap B --topic T              prints the node id coordinating group-follow's group
                                                   once the group is stable with a member
  group-follow --bootstrap B --topic T --followed FILE --stop-file S
           the same as a member of a consumer group that commits every 100 records; records
           delivered again after a rebalance are skipped (at-least-once), the rest appended to FILE;
           at the end it commits and checks the group's committed offset is the end
  verify   --bootstrap B --topic T --acked FILE [--followed FILE] [--group-followed FILE] [--exactly-once]
           reads the partition from its start to its end: offsets strictly increasing, every
           acknowledged number present at the offset its acknowledgement named, what the follower
           read equal to the partition record for record, and with --exactly-once no duplicates and
           produce order; prints a JSON summary with the duplicate and out-of-order counts
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common
from common import Mismatch, expect, expect_equal, step

with common.client_library("confluent_kafka"):
    from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition, OFFSET_BEGINNING
    from confluent_kafka.admin import AdminClient, NewTopic

TIMEOUT = 15.0
MAX_IN_FLIGHT_RECORDS = 500


def partition_end(consumer, topic, note_error):
    """The partition's high watermark asked of its leader now. Right after a fault the client's view of
    the cluster may still be settling (a restarted broker, a leader that moved), so a failed query is
    noted and asked again for up to a minute; the errors seen stay in the script's summary."""
    for _ in common.deadline_loop(60, f"the end offset of {topic}-0"):
        try:
            return consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=5, cached=False)[1]
        except Exception as error:
            described = describe_topic(consumer, topic)
            note_error(f"end offset query ({described})", error)
            time.sleep(0.2)


class StopAtEnd:
    """Where a reader of the partition stops: at the end the partition has once the stop file
    exists (the producer has exited), or 60 s after that if it cannot get there. `end` is that
    offset, None until the stop file appears."""

    def __init__(self, consumer, topic, stop_file, note_error):
        self.consumer, self.topic, self.stop_file, self.note_error = consumer, topic, stop_file, note_error
        self.end = None
        self.deadline = None

    def reached(self, position):
        """Whether a reader whose next offset is `position` is done."""
        if self.end is None and os.path.exists(self.stop_file):
            self.end = partition_end(self.consumer, self.topic, self.note_error)
            self.deadline = time.monotonic() + 60
        return self.end is not None and (position >= self.end or time.monotonic() > self.deadline)


def describe_topic(consumer, topic):
    """What the client's metadata says of the topic, for error notes."""
    try:
        metadata = consumer.list_topics(topic=topic, timeout=2).topics.get(topic)
    except Exception as error:
        return f"metadata unavailable: {error}"
    if metadata is None:
        return "topic not in metadata"
    leaders = {p: part.leader for p, part in metadata.partitions.items()}
    return f"topic error {metadata.error}, partition leaders {leaders}"


def create(args):
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    for name, future in admin.create_topics([NewTopic(args.topic, num_partitions=1, replication_factor=1)], request_timeout=TIMEOUT).items():
        future.result(timeout=TIMEOUT)
    # Writable once its leader answers ListOffsets: the producer's first batch must not meet the take-over.
    consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": f"{args.topic}-create"})
    try:
        for _ in common.deadline_loop(20, f"{args.topic}-0 to answer ListOffsets"):
            try:
                consumer.get_watermark_offsets(TopicPartition(args.topic, 0), timeout=2, cached=False)
                break
            except Exception:
                time.sleep(0.1)
    finally:
        consumer.close()
    step(f"created {args.topic}")


def leader(args):
    # A frozen broker among the bootstrap servers must not stall the answer: short socket timeouts.
    admin = AdminClient({"bootstrap.servers": args.bootstrap, "socket.timeout.ms": 2_000, "topic.metadata.refresh.interval.ms": 500})
    for _ in common.deadline_loop(args.wait, f"a leader for {args.topic}-0 other than {args.not_leader}"):
        try:
            topic = admin.list_topics(topic=args.topic, timeout=3).topics.get(args.topic)
        except Exception as error:  # the broker asked may be the frozen one; ask again
            step(f"metadata: {error}")
            continue
        if topic is not None and topic.error is None and 0 in topic.partitions:
            current = topic.partitions[0].leader
            if current >= 0 and current != args.not_leader:
                print(current, flush=True)
                return
        time.sleep(0.2)


def produce(args):
    # Idempotent: the broker deduplicates retries and keeps order with several requests in flight.
    # Otherwise one request in flight keeps retries in order (duplicates remain possible).
    ordering = {"enable.idempotence": True} if args.idempotent else {"enable.idempotence": False, "max.in.flight.requests.per.connection": 1}
    producer = Producer({
        "bootstrap.servers": args.bootstrap, "acks": "all", **ordering, "retries": 1_000_000, "retry.backoff.ms": 100,
        "message.timeout.ms": 90_000, "linger.ms": 5, "socket.timeout.ms": 5_000,
        "topic.metadata.refresh.interval.ms": 1_000,
    })
    acked = open(args.acked, "a", buffering=1)
    counts = {"sent": 0, "acked": 0, "failed": 0}
    errors = []

    def on_delivery(error, message):
        if error is None:
            acked.write(f"{int(message.value())} {message.offset()}\n")
            counts["acked"] += 1
        else:
            counts["failed"] += 1
            if len(errors) < 5:
                errors.append(str(error))

    number = 0
    while not os.path.exists(args.stop_file):
        if counts["sent"] - counts["acked"] - counts["failed"] >= MAX_IN_FLIGHT_RECORDS:
            producer.poll(0.05)
            continue
        producer.produce(args.topic, key=str(number).encode(), value=str(number).encode(), partition=0, on_delivery=on_delivery)
        counts["sent"] += 1
        number += 1
        producer.poll(0.002)
    left = producer.flush(100)
    acked.close()
    print(json.dumps({**counts, "unresolved": left, "errors": errors}), flush=True)
    expect_equal(left, 0, "records neither acknowledged nor failed after the final flush")


def follow(args):
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap, "group.id": f"{args.topic}-follow", "enable.auto.commit": False,
        # A reset would hide lost or rewritten records: surface it as an error instead.
        "auto.offset.reset": "error", "enable.partition.eof": False, "socket.timeout.ms": 5_000,
        "fetch.wait.max.ms": 100, "topic.metadata.refresh.interval.ms": 1_000,
    })
    followed = open(args.followed, "a", buffering=1)
    transient = []
    stop = StopAtEnd(consumer, args.topic, args.stop_file, lambda when, error: transient.append(f"{when}: {error}"))
    position = 0
    try:
        consumer.assign([TopicPartition(args.topic, 0, OFFSET_BEGINNING)])
        while not stop.reached(position):
            message = consumer.poll(0.2)
            if message is None:
                continue
            if message.error():
                if message.error().code() == KafkaError._AUTO_OFFSET_RESET or message.error().fatal():
                    raise Mismatch(f"follower: {message.error()}")
                transient.append(str(message.error()))
                continue
            followed.write(f"{message.offset()} {int(message.value())}\n")
            position = message.offset() + 1
    finally:
        followed.close()
        consumer.close()
    print(json.dumps({"followed_to": position, "end": stop.end, "transient_errors": len(transient), "first_errors": transient[:3]}), flush=True)
    expect(position >= stop.end, f"follower stopped at offset {position}, the partition ends at {stop.end}")


def coordinator(args):
    admin = AdminClient({"bootstrap.servers": args.bootstrap, "socket.timeout.ms": 2_000})
    group = f"{args.topic}-group"
    for _ in common.deadline_loop(args.wait, f"group {group} to be stable"):
        try:
            description = admin.describe_consumer_groups([group], request_timeout=3)[group].result(timeout=5)
        except Exception as error:
            step(f"describe_consumer_groups: {error}")
            continue
        if str(description.state).endswith("STABLE") and description.members:
            print(description.coordinator.id, flush=True)
            return
        time.sleep(0.2)


def group_follow(args):
    group = f"{args.topic}-group"
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap, "group.id": group, "enable.auto.commit": False,
        "auto.offset.reset": "earliest", "enable.partition.eof": False, "session.timeout.ms": 10_000,
        "socket.timeout.ms": 5_000, "fetch.wait.max.ms": 100, "topic.metadata.refresh.interval.ms": 1_000,
    })
    followed = open(args.followed, "a", buffering=1)
    position = 0
    redelivered = 0
    commits = {"ok": 0, "failed": 0}
    errors = {}

    def note_error(when, error):
        # One example per kind of error, with when it first and last happened.
        kind = str(error)
        first = errors.get(kind, {}).get("first", f"{time.strftime('%H:%M:%S')} {when}")
        errors[kind] = {"first": first, "last": f"{time.strftime('%H:%M:%S')} {when}"}

    stop = StopAtEnd(consumer, args.topic, args.stop_file, note_error)
    try:
        consumer.subscribe([args.topic])
        while not stop.reached(position):
            message = consumer.poll(0.2)
            if message is None:
                continue
            if message.error():
                note_error("poll", message.error())
                continue
            if message.offset() < position:
                redelivered += 1
                continue
            expect_equal(message.offset(), position, f"group member: offset after {position - 1}")
            followed.write(f"{message.offset()} {int(message.value())}\n")
            position = message.offset() + 1
            if position % 100 == 0:
                try:
                    consumer.commit(offsets=[TopicPartition(args.topic, 0, position)], asynchronous=False)
                    commits["ok"] += 1
                except Exception as error:  # the coordinator may be moving; the next commit covers it
                    commits["failed"] += 1
                    note_error(f"commit at {position}", error)
        final_deadline = time.monotonic() + 60
        while True:
            try:
                # Explicit offsets: commit() of the consumed position raises _NO_OFFSET when the last
                # periodic commit already stored it (a partition ending on a multiple of 100).
                consumer.commit(offsets=[TopicPartition(args.topic, 0, position)], asynchronous=False)
                break
            except Exception as error:
                note_error("final commit", error)
                if time.monotonic() > final_deadline:
                    raise Mismatch(f"the final commit failed for 60 s; errors (first and last kinds): {errors}")
                time.sleep(0.5)
        committed = consumer.committed([TopicPartition(args.topic, 0)], timeout=TIMEOUT)[0].offset
    finally:
        followed.close()
        consumer.close()
    print(json.dumps({"group_followed_to": position, "end": stop.end, "committed": committed, "redelivered": redelivered,
                      "commits": commits, "errors": errors}), flush=True)
    expect(position >= stop.end, f"group member stopped at offset {position}, the partition ends at {stop.end}")
    expect_equal(committed, position, "the group's committed offset after the final commit")


def verify(args):
    acknowledged = []
    with open(args.acked) as lines:
        for line in lines:
            number, offset = line.split()
            acknowledged.append((int(number), int(offset)))
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap, "group.id": f"{args.topic}-verify", "enable.auto.commit": False,
        "auto.offset.reset": "error", "enable.partition.eof": False,
    })
    try:
        tp = TopicPartition(args.topic, 0)
        low, high = consumer.get_watermark_offsets(tp, timeout=TIMEOUT)
        expect_equal(low, 0, f"{args.topic}-0 earliest offset")
        consumer.assign([TopicPartition(args.topic, 0, OFFSET_BEGINNING)])
        records = []
        for _ in common.deadline_loop(60, f"reading {args.topic}-0 up to offset {high}"):
            if records and records[-1][0] >= high - 1:
                break
            message = consumer.poll(1.0)
            if message is None:
                continue
            if message.error():
                raise Mismatch(f"consumer error {message.error()}")
            records.append((message.offset(), int(message.value())))
    finally:
        consumer.close()

    offsets = [offset for offset, _ in records]
    expect(all(b > a for a, b in zip(offsets, offsets[1:])), "offsets read back are not strictly increasing")
    at_offset = dict(records)
    missing = [(n, o) for n, o in acknowledged if at_offset.get(o) != n]
    expect(not missing, f"{len(missing)} acknowledged records are not at the offset their acknowledgement named, e.g. {missing[:5]}")
    numbers = [n for n, _ in acknowledged]
    first_seen = {}
    for offset, number in records:
        first_seen.setdefault(number, offset)
    # Produce order is a promise of idempotent producers only: without idempotence librdkafka can
    # retry a failed batch after a later one even with one request in flight. Counted either way.
    stored_in_order = sorted(numbers, key=lambda n: first_seen[n])
    out_of_order = sum(1 for a, b in zip(stored_in_order, stored_in_order[1:]) if b < a)
    if args.exactly_once:
        expect(all(b > a for a, b in zip(numbers, numbers[1:])), "acknowledgements arrived out of produce order")
        expect_equal(out_of_order, 0, "acknowledged records stored out of produce order by an idempotent producer")
    for name, path in (("follower", args.followed), ("group member", args.group_followed)):
        if not path:
            continue
        with open(path) as lines:
            followed = [tuple(int(x) for x in line.split()) for line in lines]
        expect_equal(len(followed), len(records), f"records the {name} read during the fault vs. records stored")
        differing = [(a, b) for a, b in zip(followed, records) if a != b]
        expect(not differing, f"the {name} read other records than the partition holds, e.g. (read, stored) {differing[:3]}")
    duplicates = len(records) - len(first_seen)
    if args.exactly_once:
        expect_equal(duplicates, 0, "records stored twice although the producer was idempotent")
    print(json.dumps({"acknowledged": len(acknowledged), "stored": len(records), "high_watermark": high,
                      "duplicates": duplicates, "out_of_order": out_of_order,
                      "unacknowledged_stored": len(set(first_seen) - set(numbers))}), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["create", "leader", "coordinator", "produce", "follow", "group-follow", "verify"])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--acked")
    parser.add_argument("--followed")
    parser.add_argument("--group-followed")
    parser.add_argument("--idempotent", action="store_true", help="produce: enable.idempotence=true")
    parser.add_argument("--exactly-once", action="store_true", help="verify: no record may be stored twice")
    parser.add_argument("--stop-file")
    parser.add_argument("--not", dest="not_leader", type=int, default=-1, help="leader: wait for a leader other than this node")
    parser.add_argument("--wait", type=float, default=30.0, help="leader: seconds to wait")
    parser.add_argument("--deadline", type=float, default=240.0)
    args = parser.parse_args()
    common.install_deadline(args.deadline)
    {"create": create, "leader": leader, "coordinator": coordinator, "produce": produce, "follow": follow, "group-follow": group_follow,
     "verify": verify}[args.command](args)


if __name__ == "__main__":
    common.run(main)
