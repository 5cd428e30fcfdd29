#!/usr/bin/env python3
"""confluent-kafka (librdkafka) against Floe, doing what an application does: admin, produce with
every codec, consume by assignment and in a group, offsets, delete records, configs, partitions,
delete topics, error cases.

Longer than 400 lines on purpose: one client's whole tour of the Kafka APIs, each step a few
lines depending on the ones before it (topics, records, offsets).

Runs unchanged under the pip package (confluent-kafka 2.x) and Debian's python3-confluent-kafka
1.7 (librdkafka 2.0.2, `/usr/bin/python3`); APIs the old client lacks (admin delete_records and
list_offsets, incremental config changes) are used only where present, and the run says so.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common
from common import Mismatch, expect, expect_equal, step
import rawkafka

with common.client_library("confluent_kafka"):
    import confluent_kafka
    from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

TIMEOUT = 15.0
# A producer still alive after its topic is deleted would bring the topic back through its metadata
# refreshes (auto-creation is on in floe dev, as in Kafka's default).
NO_AUTO_CREATE = {"allow.auto.create.topics": False}


def wait(futures, what):
    """Resolves every future of an admin call; any error is a mismatch naming the call."""
    results = {}
    for key, future in futures.items():
        try:
            results[key] = future.result(timeout=TIMEOUT)
        except Exception as error:
            raise Mismatch(f"{what} {key}: {error}")
    return results


def produce(bootstrap, topic, codec, records_by_partition):
    producer = Producer({
        **NO_AUTO_CREATE, "bootstrap.servers": bootstrap, "compression.type": codec, "acks": "all", "linger.ms": 20,
        "message.timeout.ms": 20_000, "enable.idempotence": codec in common.IDEMPOTENT_CODECS,
        **({} if codec in common.IDEMPOTENT_CODECS else {"max.in.flight.requests.per.connection": 1}),
    })
    delivered = []

    def on_delivery(error, message):
        delivered.append((error, message.partition(), message.offset(), message.key()))

    for partition, records in records_by_partition.items():
        for record in records:
            producer.produce(
                topic, key=record["key"], value=record["value"], headers=record["headers"],
                timestamp=record["timestamp"], partition=partition, on_delivery=on_delivery,
            )
    left = producer.flush(TIMEOUT)
    expect_equal(left, 0, f"{topic}: records still unacknowledged after flush")
    for error, partition, offset, key in delivered:
        expect(error is None, f"{topic}: delivery of {key!r} failed: {error}")
    # Acknowledged offsets must be dense from 0 in each partition, in produce order.
    for partition, records in records_by_partition.items():
        offsets = [offset for _, p, offset, _ in delivered if p == partition]
        expect_equal(offsets, list(range(len(records))), f"{topic}-{partition}: acknowledged offsets")


def wait_until_writable(consumer, topic, partitions):
    """Waits until every partition's leader answers ListOffsets. A batch sent before then can meet
    NOT_LEADER_OR_FOLLOWER while the new leader takes over, and librdkafka retries it after later
    batches unless the producer is idempotent."""
    for partition in partitions:
        for _ in common.deadline_loop(20, f"{topic}-{partition} to answer ListOffsets"):
            try:
                consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=2, cached=False)
                break
            except confluent_kafka.KafkaException:
                time.sleep(0.1)


def create_and_wait(admin, bootstrap, prefix, new_topics):
    """CreateTopics, then waits until every new partition is writable."""
    wait(admin.create_topics(new_topics, request_timeout=TIMEOUT), "create_topics")
    consumer = new_consumer(bootstrap, prefix)
    try:
        for topic in new_topics:
            wait_until_writable(consumer, topic.topic, range(topic.num_partitions))
    finally:
        consumer.close()


def new_consumer(bootstrap, prefix):
    # group.id is mandatory for this client's consumer; with assign() and no commits the group is never joined.
    return Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"{prefix}-unused", "enable.auto.commit": False,
        "enable.auto.offset.store": False, "auto.offset.reset": "error", "socket.timeout.ms": 10_000,
        "enable.partition.eof": False,
    })


def consume_all(bootstrap, prefix, topic, counts):
    """Reads `counts[p]` records of each partition from its earliest offset with a fresh consumer,
    as an application starting up would."""
    consumer = new_consumer(bootstrap, prefix)
    try:
        return read_assigned(consumer, topic, counts)
    finally:
        consumer.close()


def polled(consumer, what, record):
    """One poll (1 s) for common.read_partitions: the partition and `record(message)` of the message
    delivered, if any; a consumer error fails the run, named after `what`."""
    message = consumer.poll(1.0)
    if message is None:
        return []
    expect(message.error() is None, f"{what}: consumer error {message.error()}")
    return [(message.partition(), record(message))]


def read_assigned(consumer, topic, counts):
    consumer.assign([TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING) for p in counts])

    def record(message):
        kind, ts = message.timestamp()
        expect_equal(kind, confluent_kafka.TIMESTAMP_CREATE_TIME, f"{topic}-{message.partition()} timestamp type")
        return (message.offset(), message.key(), message.value(), message.headers(), ts)

    got = common.read_partitions(counts, lambda: polled(consumer, topic, record), f"consuming {topic}", seconds=30)
    consumer.unassign()
    return got


def check_offsets(admin, consumer, topic, counts):
    for partition, count in counts.items():
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=TIMEOUT)
        expect_equal((low, high), (0, count), f"{topic}-{partition} earliest/latest")
    # One query per partition and call: a request naming a partition twice has no defined answer.
    for k in range(len(common.timestamp_queries(0))):
        queries = [(p, *common.timestamp_queries(p)[k]) for p in counts]
        found = consumer.offsets_for_times([TopicPartition(topic, p, ts) for p, ts, _ in queries], timeout=TIMEOUT)
        for (partition, ts, want), tp in zip(sorted(queries), sorted(found, key=lambda tp: tp.partition)):
            expect(tp.error is None, f"{topic}-{partition} offsets_for_times({ts}): {tp.error}")
            # No record at or after the time: Kafka answers -1, which librdkafka shows as OFFSET_END (-1).
            expect_equal(tp.offset, -1 if want is None else want, f"{topic}-{partition} offset for time {ts}")
    if hasattr(admin, "list_offsets"):
        from confluent_kafka.admin import OffsetSpec

        for partition, count in counts.items():
            specs = {
                "earliest": (OffsetSpec.earliest(), 0),
                "latest": (OffsetSpec.latest(), count),
                "for_timestamp(5)": (OffsetSpec.for_timestamp(common.timestamp(partition, 5)), 5),
            }
            for name, (spec, want) in specs.items():
                result = wait(admin.list_offsets({TopicPartition(topic, partition): spec}, request_timeout=TIMEOUT), "list_offsets")
                expect_equal(next(iter(result.values())).offset, want, f"{topic}-{partition} admin list_offsets {name}")
    else:
        step("this client has no AdminClient.list_offsets; offsets checked through the consumer only")


def describe_topic_config(admin, topic):
    resource = ConfigResource("topic", topic)
    entries = next(iter(wait(admin.describe_configs([resource], request_timeout=TIMEOUT), "describe_configs").values()))
    return {name: entry.value for name, entry in entries.items()}


def alter_retention(admin, topic):
    if hasattr(admin, "incremental_alter_configs"):
        from confluent_kafka.admin import AlterConfigOpType, ConfigEntry

        resource = ConfigResource(
            "topic", topic,
            incremental_configs=[ConfigEntry("retention.ms", common.RETENTION_MS, incremental_operation=AlterConfigOpType.SET)],
        )
        wait(admin.incremental_alter_configs([resource], request_timeout=TIMEOUT), "incremental_alter_configs")
    else:
        resource = ConfigResource("topic", topic, set_config={"retention.ms": common.RETENTION_MS})
        wait(admin.alter_configs([resource], request_timeout=TIMEOUT), "alter_configs")


def topic_exists(admin, topic):
    return topic in admin.list_topics(timeout=TIMEOUT).topics


def error_cases(bootstrap, prefix, admin, consumer):
    # Unknown topic, auto-creation refused by the client: the producer learns it does not exist.
    missing = f"{prefix}-missing"
    producer = Producer({
        "bootstrap.servers": bootstrap, "allow.auto.create.topics": False, "message.timeout.ms": 10_000,
        "topic.metadata.propagation.max.ms": 2_000,
    })
    errors = []
    producer.produce(missing, value=b"nobody reads this", on_delivery=lambda e, m: errors.append(e))
    producer.flush(TIMEOUT)
    expect_equal(len(errors), 1, "delivery reports for a record to an unknown topic")
    codes = (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC)
    expect(errors[0] is not None and errors[0].code() in codes, f"produce to unknown topic {missing}: got {errors[0]}, want UNKNOWN_TOPIC_OR_PART")
    expect(not topic_exists(admin, missing), f"{missing} was created although the client disallowed auto-creation")

    # An invalid topic name.
    errors.clear()
    try:
        producer.produce("bad topic!name", value=b"x", on_delivery=lambda e, m: errors.append(e))
    except confluent_kafka.KafkaException as error:
        # Refused at once when the producer's metadata already says the topic does not exist.
        errors.append(error.args[0])
    producer.flush(TIMEOUT)
    expect(len(errors) == 1 and errors[0] is not None, f"produce to an invalid topic name: {errors}")
    codes = (KafkaError.TOPIC_EXCEPTION, KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC)
    expect(errors[0].code() in codes, f"produce to an invalid topic name: got {errors[0]}, want TOPIC_EXCEPTION or UNKNOWN_TOPIC")

    # A record larger than the topic's max.message.bytes.
    small = f"{prefix}-small"
    wait(admin.create_topics(
        [NewTopic(small, num_partitions=1, replication_factor=1, config={"max.message.bytes": str(common.SMALL_MAX_MESSAGE_BYTES)})],
        request_timeout=TIMEOUT), "create_topics")
    producer = Producer({**NO_AUTO_CREATE, "bootstrap.servers": bootstrap, "message.timeout.ms": 10_000, "compression.type": "none"})
    errors.clear()
    producer.produce(small, value=b"fits", partition=0, on_delivery=lambda e, m: errors.append(e))
    # Flushed on its own: max.message.bytes limits whole batches, and the two would share one.
    producer.flush(TIMEOUT)
    producer.produce(small, value=common.uncompressible(4 * common.SMALL_MAX_MESSAGE_BYTES), partition=0, on_delivery=lambda e, m: errors.append(e))
    producer.flush(TIMEOUT)
    expect_equal(len(errors), 2, "delivery reports on the small topic")
    expect(errors[0] is None, f"a record under max.message.bytes failed: {errors[0]}")
    expect(errors[1] is not None and errors[1].code() == KafkaError.MSG_SIZE_TOO_LARGE,
           f"a record over max.message.bytes: got {errors[1]}, want MSG_SIZE_TOO_LARGE")

    # A batch with a flipped CRC byte, sent by hand on the same small topic.
    def latest():
        return consumer.get_watermark_offsets(TopicPartition(small, 0), timeout=TIMEOUT, cached=False)[1]

    problems = rawkafka.corrupt_then_intact(bootstrap, small, 0, latest)
    expect(not problems, "; ".join(problems))
    wait(admin.delete_topics([small], request_timeout=TIMEOUT), "delete_topics")


def log_append_time(bootstrap, prefix, admin):
    """A topic with message.timestamp.type=LogAppendTime: the broker's clock replaces the producer's
    timestamps, and consumers see the LogAppendTime type."""
    topic = f"{prefix}-appendtime"
    create_and_wait(admin, bootstrap, prefix, [NewTopic(topic, num_partitions=1, replication_factor=1,
                                                        config={"message.timestamp.type": "LogAppendTime"})])
    before = int(time.time() * 1000)
    records = {0: common.expected_records("appendtime", 0, count=6)}
    produce(bootstrap, topic, "lz4", records)
    after = int(time.time() * 1000)
    consumer = new_consumer(bootstrap, prefix)
    try:
        consumer.assign([TopicPartition(topic, 0, confluent_kafka.OFFSET_BEGINNING)])
        got = []
        for _ in common.deadline_loop(30, f"consuming {topic}"):
            if len(got) >= 6:
                break
            message = consumer.poll(1.0)
            if message is None:
                continue
            expect(message.error() is None, f"{topic}: consumer error {message.error()}")
            got.append(message)
        for i, (message, record) in enumerate(zip(got, records[0])):
            kind, ts = message.timestamp()
            expect_equal(kind, confluent_kafka.TIMESTAMP_LOG_APPEND_TIME, f"{topic}-0 record {i} timestamp type")
            expect(before <= ts <= after, f"{topic}-0 record {i}: append time {ts} outside [{before}, {after}]")
            expect_equal((message.offset(), message.key(), message.value()), (i, record["key"], record["value"]), f"{topic}-0 record {i}")
        # By time, the log's own clock counts: the producer's (much older) timestamps match nothing later than the start.
        found = consumer.offsets_for_times([TopicPartition(topic, 0, before)], timeout=TIMEOUT)[0]
        expect_equal(found.offset, 0, f"{topic}-0 offset for the append time {before}")
        found = consumer.offsets_for_times([TopicPartition(topic, 0, after + 60_000)], timeout=TIMEOUT)[0]
        expect_equal(found.offset, -1, f"{topic}-0 offset for a time after every append")
    finally:
        consumer.close()
    wait(admin.delete_topics([topic], request_timeout=TIMEOUT), "delete_topics")


def bulk(bootstrap, prefix, admin):
    """Many records in large compressed batches, read back through fetches far smaller than a batch
    (the broker must still return whole batches and the consumer make progress)."""
    topic = f"{prefix}-bulk"
    per_partition = 4_000
    create_and_wait(admin, bootstrap, prefix, [NewTopic(topic, num_partitions=common.PARTITIONS, replication_factor=1)])
    producer = Producer({**NO_AUTO_CREATE, "bootstrap.servers": bootstrap, "compression.type": "zstd", "linger.ms": 50, "batch.size": 256_000,
                         "message.timeout.ms": 30_000, "acks": "all"})
    failures = []
    for i in range(per_partition):
        for p in range(common.PARTITIONS):
            producer.produce(topic, key=f"{p}-{i}".encode(), value=f"bulk record {i} of partition {p} ".encode() * 3,
                             partition=p, on_delivery=lambda e, m: failures.append(e) if e else None)
        if i % 500 == 0:
            producer.poll(0)
    expect_equal(producer.flush(30), 0, f"{topic}: records still unacknowledged after flush")
    expect(not failures, f"{topic}: {len(failures)} deliveries failed, e.g. {failures[:3]}")
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"{prefix}-bulk", "enable.auto.commit": False, "auto.offset.reset": "error",
        "max.partition.fetch.bytes": 1024, "fetch.max.bytes": 4096, "message.max.bytes": 4096,
        "receive.message.max.bytes": 1_100_000, "enable.partition.eof": False,
    })
    try:
        consumer.assign([TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING) for p in range(common.PARTITIONS)])
        next_index = [0] * common.PARTITIONS
        for _ in common.deadline_loop(60, f"consuming {topic}"):
            if all(n >= per_partition for n in next_index):
                break
            for message in consumer.consume(num_messages=1000, timeout=1.0):
                expect(message.error() is None, f"{topic}: consumer error {message.error()}")
                p, i = message.partition(), next_index[message.partition()]
                expect_equal((message.offset(), message.key()), (i, f"{p}-{i}".encode()), f"{topic}-{p} record {i}")
                next_index[p] += 1
    finally:
        consumer.close()
    wait(admin.delete_topics([topic], request_timeout=TIMEOUT), "delete_topics")


def edge_records(bootstrap, prefix, admin):
    """Null keys, null values (tombstones), empty keys and values, a header with a null value."""
    topic = f"{prefix}-edges"
    create_and_wait(admin, bootstrap, prefix, [NewTopic(topic, num_partitions=1, replication_factor=1)])
    sent = [(None, b"no key", []), (b"tombstone", None, []), (b"", b"", [("empty", b"")]), (b"k", b"v", [("null", None)])]
    producer = Producer({**NO_AUTO_CREATE, "bootstrap.servers": bootstrap, "message.timeout.ms": 15_000, "linger.ms": 20})
    for key, value, headers in sent:
        producer.produce(topic, key=key, value=value, headers=headers, partition=0)
    expect_equal(producer.flush(TIMEOUT), 0, f"{topic}: records still unacknowledged after flush")
    got = consume_all(bootstrap, prefix, topic, {0: len(sent)})[0]
    got = [(key, value, common.normalise_headers(headers)) for _, key, value, headers, _ in got]
    expect_equal(got, [(k, v, h) for k, v, h in sent], f"{topic}: records with null and empty fields")
    wait(admin.delete_topics([topic], request_timeout=TIMEOUT), "delete_topics")


def grow_partitions(bootstrap, admin, topic):
    """CreatePartitions from 3 to 5; the new partitions take records from offset 0."""
    from confluent_kafka.admin import NewPartitions

    wait(admin.create_partitions([NewPartitions(topic, 5)], request_timeout=TIMEOUT), "create_partitions")
    for _ in common.deadline_loop(15, f"{topic} to show 5 partitions"):
        if len(admin.list_topics(topic=topic, timeout=TIMEOUT).topics[topic].partitions) == 5:
            break
        time.sleep(0.2)
    producer = Producer({**NO_AUTO_CREATE, "bootstrap.servers": bootstrap, "message.timeout.ms": 15_000, "topic.metadata.refresh.interval.ms": 500})
    offsets = []
    producer.produce(topic, value=b"in a new partition", partition=4, on_delivery=lambda e, m: offsets.append((e, m.offset())))
    expect_equal(producer.flush(TIMEOUT), 0, f"{topic}-4: record still unacknowledged after flush")
    expect_equal(offsets, [(None, 0)], f"{topic}-4: delivery of the first record of a new partition")


def expect_admin_error(futures, code, what):
    """Every future of an admin call must fail with `code`."""
    for key, future in futures.items():
        try:
            future.result(timeout=TIMEOUT)
        except confluent_kafka.KafkaException as error:
            expect_equal(error.args[0].code(), code, f"{what} ({key}): {error}")
            continue
        raise Mismatch(f"{what} ({key}) succeeded")


def admin_error_cases(bootstrap, prefix, admin, existing):
    """Requests a Kafka broker refuses, refused the same way: each answers its Kafka error code."""
    expect_admin_error(admin.create_topics([NewTopic(existing, num_partitions=1, replication_factor=1)], request_timeout=TIMEOUT),
                       KafkaError.TOPIC_ALREADY_EXISTS, "create_topics of an existing topic")
    expect_admin_error(admin.create_topics([NewTopic(f"{prefix}-badconfig", num_partitions=1, replication_factor=1, config={"retention.ms": "soon"})],
                                           request_timeout=TIMEOUT), KafkaError.INVALID_CONFIG, "create_topics with retention.ms=soon")
    expect_admin_error(admin.create_topics([NewTopic(f"{prefix}-unknownconfig", num_partitions=1, replication_factor=1, config={"no.such.config": "1"})],
                                           request_timeout=TIMEOUT), KafkaError.INVALID_CONFIG, "create_topics with an unknown config")
    expect_admin_error(admin.create_topics([NewTopic(f"{prefix}-nopartitions", num_partitions=0, replication_factor=1)], request_timeout=TIMEOUT),
                       KafkaError.INVALID_PARTITIONS, "create_topics with 0 partitions")
    expect_admin_error(admin.delete_topics([f"{prefix}-never-created"], request_timeout=TIMEOUT),
                       KafkaError.UNKNOWN_TOPIC_OR_PART, "delete_topics of a topic that does not exist")
    for name in ("badconfig", "unknownconfig", "nopartitions"):
        expect(not topic_exists(admin, f"{prefix}-{name}"), f"{prefix}-{name} exists after a refused create_topics")
    if hasattr(admin, "delete_records"):
        expect_admin_error(admin.delete_records([TopicPartition(existing, 1, 10_000)], request_timeout=TIMEOUT),
                           KafkaError.OFFSET_OUT_OF_RANGE, "delete_records beyond the high watermark")
    # A fetch beyond the end: OFFSET_OUT_OF_RANGE, which this consumer reports instead of resetting.
    consumer = new_consumer(bootstrap, prefix)
    try:
        consumer.assign([TopicPartition(existing, 1, 10_000)])
        for _ in common.deadline_loop(20, f"the answer to a fetch beyond the end of {existing}-1"):
            message = consumer.poll(1.0)
            if message is not None:
                expect(message.error() is not None and message.error().code() == KafkaError._AUTO_OFFSET_RESET
                       and "out of range" in message.error().str().lower(),
                       f"fetch beyond the end of {existing}-1: got {message.error() or message.offset()}, want OFFSET_OUT_OF_RANGE")
                break
    finally:
        consumer.close()


def consumer_group(bootstrap, prefix, topic, counts):
    """A consumer group (subscribe, not assign) reads the topic, commits, leaves; records produced
    afterwards are all a second member of the same group reads: it resumes at the committed offsets."""
    group = f"{prefix}-group"

    def member():
        return Consumer({
            "bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "session.timeout.ms": 10_000, "enable.partition.eof": False,
        })

    def read(consumer, want):
        return common.read_partitions(
            want, lambda: polled(consumer, f"group {group}", lambda m: (m.offset(), m.key())), f"group {group} reading {topic}")

    first = member()
    try:
        first.subscribe([topic])
        common.check_first_member(group, topic, read(first, counts), counts)
        first.commit(asynchronous=False)
        committed = first.committed([TopicPartition(topic, p) for p in counts], timeout=TIMEOUT)
        expect_equal({tp.partition: tp.offset for tp in committed}, dict(counts), f"group {group}: committed offsets")
    finally:
        first.close()

    more = {p: [{"key": f"later-{p}-{i}".encode(), "value": b"after the commit", "headers": [], "timestamp": common.timestamp(p, 100 + i)}
                for i in range(3)] for p in counts}
    producer = Producer({**NO_AUTO_CREATE, "bootstrap.servers": bootstrap, "enable.idempotence": True, "message.timeout.ms": 15_000})
    for p, records in more.items():
        for record in records:
            producer.produce(topic, key=record["key"], value=record["value"], timestamp=record["timestamp"], partition=p)
    expect_equal(producer.flush(TIMEOUT), 0, f"{topic}: records still unacknowledged after flush")

    second = member()
    try:
        second.subscribe([topic])
        got = read(second, {p: len(more[p]) for p in counts})
        for p, count in counts.items():
            expect_equal(got[p], [(count + i, r["key"]) for i, r in enumerate(more[p])],
                         f"group {group}: {topic}-{p} read by a new member after the commit")
    finally:
        second.close()
    if hasattr(AdminClient, "list_consumer_group_offsets"):
        from confluent_kafka import ConsumerGroupTopicPartitions

        admin = AdminClient({"bootstrap.servers": bootstrap})
        result = wait(admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)], request_timeout=TIMEOUT), "list_consumer_group_offsets")
        offsets = {tp.partition: tp.offset for tp in next(iter(result.values())).topic_partitions if tp.topic == topic}
        expect_equal(offsets, dict(counts), f"group {group}: committed offsets listed by the admin client")


def commit_group(bootstrap, prefix, topic, counts):
    """Write phase: a group reads the topic and commits its end (read phase checks it survived)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{prefix}-kept-group", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "enable.partition.eof": False})
    try:
        consumer.subscribe([topic])
        common.read_partitions(counts, lambda: polled(consumer, "kept group", lambda message: None), f"the kept group reading {topic}")
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()


def check_committed(bootstrap, prefix, topic, counts):
    """Read phase: the offsets the write phase committed are still the group's."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{prefix}-kept-group", "enable.auto.commit": False})
    try:
        committed = consumer.committed([TopicPartition(topic, p) for p in counts], timeout=TIMEOUT)
        expect_equal({tp.partition: tp.offset for tp in committed}, dict(counts), f"offsets the kept group committed on {topic}")
    finally:
        consumer.close()


def main():
    args = common.parse_args(__doc__)
    step(f"confluent-kafka {confluent_kafka.version()} on librdkafka {confluent_kafka.libversion()} ({sys.executable})")
    admin = AdminClient({"bootstrap.servers": args.bootstrap, "socket.timeout.ms": 10_000})
    topics = [common.topic_name(args.prefix, codec) for codec in common.CODECS]
    if args.phase != "read":
        wait(admin.create_topics([NewTopic(t, num_partitions=common.PARTITIONS, replication_factor=1) for t in topics],
                                 request_timeout=TIMEOUT), "create_topics")
    metadata = admin.list_topics(timeout=TIMEOUT)
    for t in topics:
        expect(t in metadata.topics, f"{t} missing from metadata")
        expect_equal(len(metadata.topics[t].partitions), common.PARTITIONS, f"{t} partition count")
    step(f"{len(topics)} topics of {common.PARTITIONS} partitions")

    consumer = new_consumer(args.bootstrap, args.prefix)
    try:
        for topic in topics:
            wait_until_writable(consumer, topic, range(common.PARTITIONS))
        common.round_trip_codec_topics(
            args.phase, topics,
            produce=lambda topic, codec, records: produce(args.bootstrap, topic, codec, records),
            consume_all=lambda topic, counts: consume_all(args.bootstrap, args.prefix, topic, counts),
            check_offsets=lambda topic, counts: check_offsets(admin, consumer, topic, counts))
        counts = {p: common.PER_PARTITION for p in range(common.PARTITIONS)}
        if args.phase == "write":
            commit_group(args.bootstrap, args.prefix, topics[4], counts)
            step("a consumer group committed the end of the zstd topic")
        if args.phase == "read":
            check_committed(args.bootstrap, args.prefix, topics[4], counts)
            step("the consumer group's committed offsets are still there")
        if args.phase != "all":
            return

        topic = topics[0]
        if hasattr(admin, "delete_records"):
            result = wait(admin.delete_records([TopicPartition(topic, 0, 4)], request_timeout=TIMEOUT), "delete_records")
            expect_equal(next(iter(result.values())).low_watermark, 4, f"{topic}-0 low watermark from delete_records")
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=TIMEOUT, cached=False)
            expect_equal((low, high), (4, common.PER_PARTITION), f"{topic}-0 earliest/latest after delete_records")
            got = consume_all(args.bootstrap, args.prefix, topic, {0: common.PER_PARTITION - 4})
            expect_equal([r[0] for r in got[0]], list(range(4, common.PER_PARTITION)), f"{topic}-0 offsets read after delete_records")
            step("delete_records moved the earliest offset to 4")
        else:
            step("this client has no AdminClient.delete_records; skipped")

        before = describe_topic_config(admin, topic)
        expect("retention.ms" in before, f"{topic}: describe_configs lacks retention.ms: {sorted(before)}")
        expect(before["retention.ms"] != common.RETENTION_MS, f"{topic}: retention.ms already {common.RETENTION_MS} before altering")
        alter_retention(admin, topic)
        after = describe_topic_config(admin, topic)
        expect_equal(after.get("retention.ms"), common.RETENTION_MS, f"{topic} retention.ms after altering")
        step(f"retention.ms {before['retention.ms']} -> {after['retention.ms']}")

        consumer_group(args.bootstrap, args.prefix, topics[3], {p: common.PER_PARTITION for p in range(common.PARTITIONS)})
        step("consumer group: subscribe, commit, leave; a new member resumes at the committed offsets")
        grow_partitions(args.bootstrap, admin, topics[1])
        step("create_partitions: 3 -> 5, the new partition takes records from offset 0")
        edge_records(args.bootstrap, args.prefix, admin)
        step("null and empty keys, values and header values round-trip")
        log_append_time(args.bootstrap, args.prefix, admin)
        step("LogAppendTime topic: broker timestamps, by-time lookups on them")
        bulk(args.bootstrap, args.prefix, admin)
        step("bulk: 12,000 records in large zstd batches, read through 1 KiB fetches")

        admin_error_cases(args.bootstrap, args.prefix, admin, topics[2])
        step("admin errors: TOPIC_ALREADY_EXISTS, INVALID_CONFIG, INVALID_PARTITIONS, UNKNOWN_TOPIC_OR_PART, OFFSET_OUT_OF_RANGE")
        error_cases(args.bootstrap, args.prefix, admin, consumer)
        step("error cases: unknown and invalid topics, MESSAGE_TOO_LARGE, CORRUPT_MESSAGE")

        wait(admin.delete_topics(topics, request_timeout=TIMEOUT), "delete_topics")
        for _ in common.deadline_loop(15, f"deleted topics to leave the metadata"):
            left = [t for t in topics if topic_exists(admin, t)]
            if not left:
                break
            time.sleep(0.2)
        step("deleted every topic")
    finally:
        consumer.close()


if __name__ == "__main__":
    common.run(main)
