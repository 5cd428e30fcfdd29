#!/usr/bin/env python3
"""kafka-python against Floe, doing what an application does: admin, produce with every codec,
consume by assignment and in a group, offsets, delete records, configs, delete topics, error cases."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common
from common import Mismatch, expect, expect_equal, step
import rawkafka

with common.client_library("kafka-python"):
    import kafka
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient
    from kafka import errors as kafka_errors

TIMEOUT_MS = 15_000
# Idempotence (kafka-python 3's default) is switched on per codec (common.IDEMPOTENT_CODECS).
PRODUCER = {"acks": "all", "linger_ms": 20, "request_timeout_ms": TIMEOUT_MS, "max_block_ms": TIMEOUT_MS,
            "delivery_timeout_ms": 20_000, "enable_idempotence": False}


def codec_setting(codec):
    return None if codec == "none" else codec


def produce(bootstrap, topic, codec, records_by_partition):
    producer = KafkaProducer(bootstrap_servers=bootstrap, compression_type=codec_setting(codec),
                             **{**PRODUCER, "enable_idempotence": codec in common.IDEMPOTENT_CODECS,
                                **({} if codec in common.IDEMPOTENT_CODECS else {"max_in_flight_requests_per_connection": 1})})
    try:
        futures = []
        for partition, records in records_by_partition.items():
            for record in records:
                futures.append((partition, producer.send(
                    topic, key=record["key"], value=record["value"], headers=record["headers"],
                    partition=partition, timestamp_ms=record["timestamp"])))
        producer.flush(timeout=TIMEOUT_MS / 1000)
        acknowledged = {p: [] for p in records_by_partition}
        for partition, future in futures:
            acknowledged[partition].append(future.get(timeout=TIMEOUT_MS / 1000).offset)
        for partition, records in records_by_partition.items():
            expect_equal(acknowledged[partition], list(range(len(records))), f"{topic}-{partition}: acknowledged offsets")
    finally:
        producer.close(timeout=5)


def new_consumer(bootstrap):
    # No group: assign() only, nothing committed.
    return KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                         auto_offset_reset="none", request_timeout_ms=TIMEOUT_MS, allow_auto_create_topics=False)


def polled(consumer, record):
    """One poll (1 s) for common.read_partitions: the partition and `record(message)` of every message."""
    return [(tp.partition, record(m)) for tp, messages in consumer.poll(timeout_ms=1000).items() for m in messages]


def consume_all(bootstrap, topic, counts):
    consumer = new_consumer(bootstrap)
    try:
        partitions = [TopicPartition(topic, p) for p in counts]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)

        def record(m):
            expect_equal(m.timestamp_type, 0, f"{topic}-{m.partition} timestamp type (0 = CreateTime)")
            return (m.offset, m.key, m.value, m.headers, m.timestamp)

        return common.read_partitions(counts, lambda: polled(consumer, record), f"consuming {topic}", seconds=30)
    finally:
        consumer.close()


def check_offsets(consumer, topic, counts):
    partitions = [TopicPartition(topic, p) for p in counts]
    beginning = consumer.beginning_offsets(partitions, timeout_ms=TIMEOUT_MS)
    end = consumer.end_offsets(partitions, timeout_ms=TIMEOUT_MS)
    for tp in partitions:
        expect_equal((beginning[tp], end[tp]), (0, counts[tp.partition]), f"{topic}-{tp.partition} earliest/latest")
    for k in range(len(common.timestamp_queries(0))):
        queries = {TopicPartition(topic, p): common.timestamp_queries(p)[k] for p in counts}
        found = consumer.offsets_for_times({tp: ts for tp, (ts, _) in queries.items()}, timeout_ms=TIMEOUT_MS)
        for tp, (ts, want) in queries.items():
            result = found.get(tp)
            got = None if result is None else result.offset
            expect_equal(got, want, f"{topic}-{tp.partition} offset for time {ts}")


def describe_topic_config(admin, topic):
    result = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all")
    # {resource type: {resource name: {config name: {value: ..., ...}}}} in kafka-python 3.
    configs = _find_configs(result, topic)
    expect(configs is not None, f"describe_configs({topic}) answered {result!r}")
    return configs


def _find_configs(result, topic):
    if isinstance(result, dict):
        for key, value in result.items():
            if key == topic and isinstance(value, dict):
                return {name: (entry.get("value") if isinstance(entry, dict) else entry) for name, entry in value.items()}
            found = _find_configs(value, topic)
            if found is not None:
                return found
    return None


def topic_exists(admin, topic):
    return topic in admin.list_topics()


def error_cases(bootstrap, prefix, admin, consumer):
    # Unknown topic, auto-creation not requested. kafka-python's producer and consumer ask for
    # auto-creation whatever their allow_auto_create_topics says; its admin client does not.
    missing = f"{prefix}-missing"
    described = admin.describe_topics([missing])
    expect_equal([(t["name"], t["error_code"]) for t in described], [(missing, 3)],
                 f"describe_topics of unknown topic {missing} (3 = UNKNOWN_TOPIC_OR_PARTITION)")
    expect(not topic_exists(admin, missing), f"{missing} was created by a Metadata request that disallowed auto-creation")

    # kafka-python refuses to produce to an invalid name itself; its admin calls reach the broker.
    invalid = "bad topic!name"
    described = admin.describe_topics([invalid])
    expect_equal([(t["name"], t["error_code"]) for t in described], [(invalid, 17)],
                 "describe_topics of an invalid name (17 = INVALID_TOPIC_EXCEPTION)")
    created = admin.create_topics({invalid: {"num_partitions": 1, "replication_factor": 1}}, raise_errors=False)
    expect_equal([t["error_code"] for t in created["topics"]], [17], f"create_topics of an invalid name: {created}")

    small = f"{prefix}-small"
    admin.create_topics({small: {"num_partitions": 1, "replication_factor": 1,
                                 "configs": {"max.message.bytes": str(common.SMALL_MAX_MESSAGE_BYTES)}}})
    producer = KafkaProducer(bootstrap_servers=bootstrap, **{**PRODUCER, "retries": 0})
    try:
        producer.send(small, value=b"fits", partition=0).get(timeout=15)
        try:
            producer.send(small, value=common.uncompressible(4 * common.SMALL_MAX_MESSAGE_BYTES), partition=0).get(timeout=15)
            raise Mismatch("a record over max.message.bytes was acknowledged")
        except kafka_errors.MessageSizeTooLargeError:
            pass
    finally:
        producer.close(timeout=5)

    tp = TopicPartition(small, 0)
    problems = rawkafka.corrupt_then_intact(bootstrap, small, 0, lambda: consumer.end_offsets([tp], timeout_ms=TIMEOUT_MS)[tp])
    expect(not problems, "; ".join(problems))
    admin.delete_topics([small])


def consumer_group(bootstrap, prefix, topic, counts):
    """A consumer group (subscribe) reads the topic, commits, leaves; a second member of the group
    then reads only what was produced after the commit."""
    group = f"{prefix}-group"

    def member():
        return KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False, auto_offset_reset="earliest",
                             request_timeout_ms=TIMEOUT_MS, session_timeout_ms=10_000, heartbeat_interval_ms=1_000)

    def read(consumer, want):
        return common.read_partitions(want, lambda: polled(consumer, lambda m: (m.offset, m.key)), f"group {group} reading {topic}")

    first = member()
    try:
        first.subscribe([topic])
        common.check_first_member(group, topic, read(first, counts), counts)
        first.commit()
        for p, count in counts.items():
            expect_equal(first.committed(TopicPartition(topic, p)), count, f"group {group}: committed offset of {topic}-{p}")
    finally:
        first.close()

    producer = KafkaProducer(bootstrap_servers=bootstrap, **{**PRODUCER, "enable_idempotence": True})
    try:
        for p in counts:
            for i in range(3):
                producer.send(topic, key=f"later-{p}-{i}".encode(), value=b"after the commit", partition=p)
        producer.flush(timeout=TIMEOUT_MS / 1000)
    finally:
        producer.close(timeout=5)

    second = member()
    try:
        second.subscribe([topic])
        got = read(second, {p: 3 for p in counts})
        for p, count in counts.items():
            expect_equal(got[p], [(count + i, f"later-{p}-{i}".encode()) for i in range(3)],
                         f"group {group}: {topic}-{p} read by a new member after the commit")
    finally:
        second.close()


def main():
    args = common.parse_args(__doc__)
    step(f"kafka-python {kafka.__version__} ({sys.executable})")
    admin = KafkaAdminClient(bootstrap_servers=args.bootstrap, request_timeout_ms=TIMEOUT_MS)
    topics = [common.topic_name(args.prefix, codec) for codec in common.CODECS]
    if args.phase != "read":
        admin.create_topics({t: {"num_partitions": common.PARTITIONS, "replication_factor": 1} for t in topics})
    described = {t["topic"] if "topic" in t else t.get("name"): t for t in admin.describe_topics(topics)}
    for t in topics:
        expect(t in described, f"{t} missing from describe_topics")
        expect_equal(len(described[t]["partitions"]), common.PARTITIONS, f"{t} partition count")
    step(f"{len(topics)} topics of {common.PARTITIONS} partitions")

    consumer = new_consumer(args.bootstrap)
    try:
        common.round_trip_codec_topics(
            args.phase, topics,
            produce=lambda topic, codec, records: produce(args.bootstrap, topic, codec, records),
            consume_all=lambda topic, counts: consume_all(args.bootstrap, topic, counts),
            check_offsets=lambda topic, counts: check_offsets(consumer, topic, counts))
        if args.phase != "all":
            return

        topic = topics[0]
        tp = TopicPartition(topic, 0)
        result = admin.delete_records({tp: 4}, timeout_ms=TIMEOUT_MS)
        expect_equal(result.get(tp, {}).get("low_watermark"), 4, f"{topic}-0 low watermark from delete_records ({result!r})")
        expect_equal(consumer.beginning_offsets([tp], timeout_ms=TIMEOUT_MS)[tp], 4, f"{topic}-0 earliest after delete_records")
        got = consume_all(args.bootstrap, topic, {0: common.PER_PARTITION - 4})
        expect_equal([r[0] for r in got[0]], list(range(4, common.PER_PARTITION)), f"{topic}-0 offsets read after delete_records")

        before = describe_topic_config(admin, topic)
        expect("retention.ms" in before, f"{topic}: describe_configs lacks retention.ms: {sorted(before)}")
        expect(before["retention.ms"] != common.RETENTION_MS, f"{topic}: retention.ms already {common.RETENTION_MS}")
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs={"retention.ms": common.RETENTION_MS})])
        after = describe_topic_config(admin, topic)
        expect_equal(after.get("retention.ms"), common.RETENTION_MS, f"{topic} retention.ms after alter_configs")
        step(f"retention.ms {before['retention.ms']} -> {after['retention.ms']}")

        consumer_group(args.bootstrap, args.prefix, topics[3], {p: common.PER_PARTITION for p in range(common.PARTITIONS)})
        step("consumer group: subscribe, commit, leave; a new member resumes at the committed offsets")
        error_cases(args.bootstrap, args.prefix, admin, consumer)
        step("error cases: unknown and invalid topics, MESSAGE_TOO_LARGE, CORRUPT_MESSAGE")

        admin.delete_topics(topics)
        for _ in common.deadline_loop(15, "deleted topics to leave the metadata"):
            if not any(topic_exists(admin, t) for t in topics):
                break
            time.sleep(0.2)
        step("deleted every topic")
    finally:
        consumer.close()
        admin.close()


if __name__ == "__main__":
    common.run(main)
