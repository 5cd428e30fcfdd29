#!/usr/bin/env python3
"""aiokafka against Floe, doing what an application does: admin, produce with every codec, consume
by assignment and in a group, offsets, delete records, configs, delete topics, error cases."""
import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common
from common import Mismatch, expect, expect_equal, step
import rawkafka

with common.client_library("aiokafka"):
    import aiokafka
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic, RecordsToDelete
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
    from aiokafka import errors as kafka_errors

TIMEOUT_MS = 15_000


def codec_setting(codec):
    return None if codec == "none" else codec


async def produce(bootstrap, topic, codec, records_by_partition):
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, compression_type=codec_setting(codec), acks="all",
                                linger_ms=20, request_timeout_ms=TIMEOUT_MS, enable_idempotence=codec in common.IDEMPOTENT_CODECS)
    await producer.start()
    try:
        futures = []
        for partition, records in records_by_partition.items():
            for record in records:
                futures.append((partition, await producer.send(
                    topic, key=record["key"], value=record["value"], headers=record["headers"],
                    partition=partition, timestamp_ms=record["timestamp"])))
        acknowledged = {p: [] for p in records_by_partition}
        for partition, future in futures:
            acknowledged[partition].append((await asyncio.wait_for(future, TIMEOUT_MS / 1000)).offset)
        for partition, records in records_by_partition.items():
            expect_equal(acknowledged[partition], list(range(len(records))), f"{topic}-{partition}: acknowledged offsets")
    finally:
        await producer.stop()


async def new_consumer(bootstrap):
    # No group: assign() only, nothing committed.
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="none", request_timeout_ms=TIMEOUT_MS)
    await consumer.start()
    return consumer


async def consume_all(bootstrap, topic, counts):
    consumer = await new_consumer(bootstrap)
    try:
        partitions = [TopicPartition(topic, p) for p in counts]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        got = {p: [] for p in counts}
        for _ in common.deadline_loop(30, f"consuming {topic}"):
            if all(len(got[p]) >= counts[p] for p in counts):
                break
            batches = await consumer.getmany(timeout_ms=1000)
            for tp, messages in batches.items():
                for m in messages:
                    expect_equal(m.timestamp_type, 0, f"{topic}-{tp.partition} timestamp type (0 = CreateTime)")
                    got[tp.partition].append((m.offset, m.key, m.value, list(m.headers), m.timestamp))
        return got
    finally:
        await consumer.stop()


async def check_offsets(consumer, topic, counts):
    partitions = [TopicPartition(topic, p) for p in counts]
    beginning = await consumer.beginning_offsets(partitions)
    end = await consumer.end_offsets(partitions)
    for tp in partitions:
        expect_equal((beginning[tp], end[tp]), (0, counts[tp.partition]), f"{topic}-{tp.partition} earliest/latest")
    for k in range(len(common.timestamp_queries(0))):
        queries = {TopicPartition(topic, p): common.timestamp_queries(p)[k] for p in counts}
        found = await consumer.offsets_for_times({tp: ts for tp, (ts, _) in queries.items()})
        for tp, (ts, want) in queries.items():
            result = found.get(tp)
            got = None if result is None else result.offset
            expect_equal(got, want, f"{topic}-{tp.partition} offset for time {ts}")


async def describe_topic_config(admin, topic):
    responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    for response in responses:
        for resource in response.resources:
            error_code, _message, _type, name, entries = resource[:5]
            if name == topic:
                expect_equal(error_code, 0, f"describe_configs({topic}) error")
                return {entry[0]: entry[1] for entry in entries}
    raise Mismatch(f"describe_configs({topic}) answered {responses!r}")


async def topic_exists(admin, topic):
    return topic in await admin.list_topics()


async def error_cases(bootstrap, prefix, admin, consumer):
    # aiokafka has no setting to turn auto-creation off and its Metadata requests (v1) always
    # allow it, so the unknown topic is named in a call that never creates one: DescribeConfigs.
    missing = f"{prefix}-missing"
    responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, missing)])
    codes = [resource[0] for response in responses for resource in response.resources]
    expect_equal(codes, [3], f"describe_configs of unknown topic {missing} (3 = UNKNOWN_TOPIC_OR_PARTITION)")
    expect(not await topic_exists(admin, missing), f"{missing} exists after describe_configs named it")
    invalid = "bad topic!name"
    described = await admin.describe_topics([invalid])
    expect_equal([t["error_code"] for t in described], [17], f"describe_topics of an invalid name (17 = INVALID_TOPIC_EXCEPTION): {described}")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=5_000, enable_idempotence=False)
    await producer.start()
    try:
        try:
            await asyncio.wait_for(producer.send_and_wait(invalid, value=b"x"), 15)
            raise Mismatch("produce to an invalid topic name succeeded")
        except (kafka_errors.KafkaTimeoutError, kafka_errors.TopicAuthorizationFailedError,
                kafka_errors.InvalidTopicError, kafka_errors.UnknownTopicOrPartitionError) as error:
            step(f"produce to an invalid topic name: {type(error).__name__}: {error}")
    finally:
        await producer.stop()

    small = f"{prefix}-small"
    await admin.create_topics([NewTopic(small, 1, 1, topic_configs={"max.message.bytes": str(common.SMALL_MAX_MESSAGE_BYTES)})])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=TIMEOUT_MS, enable_idempotence=False)
    await producer.start()
    try:
        await asyncio.wait_for(producer.send_and_wait(small, value=b"fits", partition=0), 15)
        try:
            await asyncio.wait_for(producer.send_and_wait(
                small, value=common.uncompressible(4 * common.SMALL_MAX_MESSAGE_BYTES), partition=0), 15)
            raise Mismatch("a record over max.message.bytes was acknowledged")
        except kafka_errors.MessageSizeTooLargeError:
            pass
    finally:
        await producer.stop()

    # The raw socket helper is blocking; the high watermark is read through this client between its sends.
    tp = TopicPartition(small, 0)
    loop = asyncio.get_running_loop()

    def latest():
        return asyncio.run_coroutine_threadsafe(consumer.end_offsets([tp]), loop).result(TIMEOUT_MS / 1000)[tp]

    problems = await loop.run_in_executor(None, rawkafka.corrupt_then_intact, bootstrap, small, 0, latest)
    expect(not problems, "; ".join(problems))
    await admin.delete_topics([small])


async def consumer_group(bootstrap, prefix, topic, counts):
    """A consumer group (subscribe) reads the topic, commits, leaves; a second member of the group
    then reads only what was produced after the commit."""
    group = f"{prefix}-group"

    async def member():
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                                    auto_offset_reset="earliest", request_timeout_ms=TIMEOUT_MS, session_timeout_ms=10_000,
                                    heartbeat_interval_ms=1_000)
        await consumer.start()
        return consumer

    async def read(consumer, want):
        got = {p: [] for p in counts}
        for _ in common.deadline_loop(60, f"group {group} reading {topic}"):
            if all(len(got[p]) >= want[p] for p in counts):
                break
            for tp, messages in (await consumer.getmany(timeout_ms=1000)).items():
                got[tp.partition] += [(m.offset, m.key) for m in messages]
        return got

    first = await member()
    try:
        common.check_first_member(group, topic, await read(first, counts), counts)
        await first.commit()
        for p, count in counts.items():
            expect_equal(await first.committed(TopicPartition(topic, p)), count, f"group {group}: committed offset of {topic}-{p}")
    finally:
        await first.stop()

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=TIMEOUT_MS, enable_idempotence=True)
    await producer.start()
    try:
        for p in counts:
            for i in range(3):
                await producer.send_and_wait(topic, key=f"later-{p}-{i}".encode(), value=b"after the commit", partition=p)
    finally:
        await producer.stop()

    second = await member()
    try:
        got = await read(second, {p: 3 for p in counts})
        for p, count in counts.items():
            expect_equal(got[p], [(count + i, f"later-{p}-{i}".encode()) for i in range(3)],
                         f"group {group}: {topic}-{p} read by a new member after the commit")
    finally:
        await second.stop()


async def amain():
    args = common.parse_args(__doc__)
    step(f"aiokafka {aiokafka.__version__} ({sys.executable})")
    admin = AIOKafkaAdminClient(bootstrap_servers=args.bootstrap, request_timeout_ms=TIMEOUT_MS)
    await admin.start()
    consumer = await new_consumer(args.bootstrap)
    try:
        topics = [common.topic_name(args.prefix, codec) for codec in common.CODECS]
        if args.phase != "read":
            response = await admin.create_topics([NewTopic(t, common.PARTITIONS, 1) for t in topics])
            for error in response.topic_errors if hasattr(response, "topic_errors") else []:
                expect_equal(error[1], 0, f"create_topics {error[0]}")
            described = {t["topic"] if "topic" in t else t["name"]: t for t in await admin.describe_topics(topics)}
            for t in topics:
                expect(t in described, f"{t} missing from describe_topics after create_topics")
                expect_equal(len(described[t]["partitions"]), common.PARTITIONS, f"{t} partition count")
            step(f"created {len(topics)} topics of {common.PARTITIONS} partitions")

        for codec, topic in zip(common.CODECS, topics):
            records = {p: common.expected_records(codec, p) for p in range(common.PARTITIONS)}
            if args.phase != "read":
                await produce(args.bootstrap, topic, codec, records)
                step(f"{codec}: produced {sum(len(r) for r in records.values())} records")
            if args.phase != "write":
                got = await consume_all(args.bootstrap, topic, {p: len(r) for p, r in records.items()})
                for p in records:
                    common.check_partition(topic, p, got[p], records[p])
                await check_offsets(consumer, topic, {p: len(r) for p, r in records.items()})
                step(f"{codec}: consumed and checked {sum(len(r) for r in records.values())} records and their offsets")
        if args.phase != "all":
            return

        topic = topics[0]
        tp = TopicPartition(topic, 0)
        result = await admin.delete_records({tp: RecordsToDelete(before_offset=4)}, timeout_ms=TIMEOUT_MS)
        expect_equal(result.get(tp), 4, f"{topic}-0 low watermark from delete_records ({result!r})")
        expect_equal((await consumer.beginning_offsets([tp]))[tp], 4, f"{topic}-0 earliest after delete_records")
        got = await consume_all(args.bootstrap, topic, {0: common.PER_PARTITION - 4})
        expect_equal([r[0] for r in got[0]], list(range(4, common.PER_PARTITION)), f"{topic}-0 offsets read after delete_records")
        step("delete_records moved the earliest offset to 4")

        before = await describe_topic_config(admin, topic)
        expect("retention.ms" in before, f"{topic}: describe_configs lacks retention.ms: {sorted(before)}")
        expect(before["retention.ms"] != common.RETENTION_MS, f"{topic}: retention.ms already {common.RETENTION_MS}")
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs={"retention.ms": common.RETENTION_MS})])
        # aiokafka asks any broker; one other than the one that made the change shows it once its
        # metadata image has caught up (as in Kafka), so read until it does, for a bounded time.
        for _ in common.deadline_loop(10, f"{topic} retention.ms {common.RETENTION_MS} after alter_configs"):
            after = await describe_topic_config(admin, topic)
            if after.get("retention.ms") == common.RETENTION_MS:
                break
            await asyncio.sleep(0.1)
        expect_equal(after.get("retention.ms"), common.RETENTION_MS, f"{topic} retention.ms after alter_configs")
        step(f"retention.ms {before['retention.ms']} -> {after['retention.ms']}")

        await consumer_group(args.bootstrap, args.prefix, topics[3], {p: common.PER_PARTITION for p in range(common.PARTITIONS)})
        step("consumer group: subscribe, commit, leave; a new member resumes at the committed offsets")
        await error_cases(args.bootstrap, args.prefix, admin, consumer)
        step("error cases: unknown and invalid topics, MESSAGE_TOO_LARGE, CORRUPT_MESSAGE")

        await admin.delete_topics(topics)
        for _ in common.deadline_loop(15, "deleted topics to leave the metadata"):
            existing = set(await admin.list_topics())
            if not existing.intersection(topics):
                break
            await asyncio.sleep(0.2)
        step("deleted every topic")
    finally:
        await consumer.stop()
        await admin.close()


if __name__ == "__main__":
    common.run(lambda: asyncio.run(amain()))
