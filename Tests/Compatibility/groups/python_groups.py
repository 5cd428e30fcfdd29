"""Consumer groups with kafka-python and aiokafka against a Floe cluster.

Usage: python_groups.py BOOTSTRAP CLIENT TOPIC      (CLIENT: kafka-python or aiokafka)
Two consumers in one group on a 4-partition topic share it (each owns some, together all, once);
they consume every produced record exactly once between them, commit, and a restarted consumer
of the group finds the committed offsets and has nothing left to read.
Prints one JSON line per check; exits non-zero on the first failed check.
"""
import asyncio
import json
import sys
import time
import uuid

BOOTSTRAP, CLIENT, TOPIC = sys.argv[1], sys.argv[2], sys.argv[3]
PARTITIONS = 4
PER_PARTITION = 5
DEADLINE_S = 90


def report(check, ok, **details):
    print(json.dumps({"check": check, "ok": ok, **details}), flush=True)
    if not ok:
        sys.exit(1)


def kafka_python():
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP, request_timeout_ms=30000)
    admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])
    admin.close()
    # Idempotence needs InitProducerId, which is not what this test is about.
    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, request_timeout_ms=30000, enable_idempotence=False)
    for p in range(PARTITIONS):
        for i in range(PER_PARTITION):
            producer.send(TOPIC, value=f"{p}-{i}".encode(), partition=p).get(timeout=30)
    producer.close()
    report("produce", True)

    group = f"kp-{uuid.uuid4().hex[:8]}"

    def make():
        return KafkaConsumer(TOPIC, bootstrap_servers=BOOTSTRAP, group_id=group, auto_offset_reset="earliest",
                             enable_auto_commit=False, session_timeout_ms=10000, heartbeat_interval_ms=500,
                             consumer_timeout_ms=200)

    consumers = [make(), make()]
    seen = []
    deadline = time.time() + DEADLINE_S
    while time.time() < deadline:
        for c in consumers:
            for records in c.poll(timeout_ms=100).values():
                seen.extend((r.partition, r.offset) for r in records)
        owned = [tp.partition for c in consumers for tp in c.assignment()]
        if sorted(owned) == list(range(PARTITIONS)) and all(c.assignment() for c in consumers) and len(seen) >= PARTITIONS * PER_PARTITION:
            break
    owned = [sorted(tp.partition for tp in c.assignment()) for c in consumers]
    report("shared-assignment", sorted(sum(owned, [])) == list(range(PARTITIONS)) and all(owned), assignments=owned)
    report("consumed-once", sorted(seen) == sorted(set(seen)) and len(seen) == PARTITIONS * PER_PARTITION, count=len(seen))
    for c in consumers:
        c.commit()
    for c in consumers:
        c.close()
    restarted = make()
    for _ in range(50):
        restarted.poll(timeout_ms=100)
        if restarted.assignment():
            break
    committed = {p: restarted.committed(TopicPartition(TOPIC, p)) for p in range(PARTITIONS)}
    report("committed-after-restart", all(v == PER_PARTITION for v in committed.values()), committed=committed)
    leftover = sum(len(v) for v in restarted.poll(timeout_ms=1000).values())
    report("nothing-left", leftover == 0, leftover=leftover)
    restarted.close()


async def aiokafka_run():
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    await admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, request_timeout_ms=30000)
    await producer.start()
    for _ in range(100):
        # The new topic's leaders may take a moment to appear in metadata.
        if producer.client.cluster.partitions_for_topic(TOPIC):
            break
        await producer.client.force_metadata_update()
        await asyncio.sleep(0.1)
    for p in range(PARTITIONS):
        for i in range(PER_PARTITION):
            await producer.send_and_wait(TOPIC, value=f"{p}-{i}".encode(), partition=p)
    await producer.stop()
    report("produce", True)

    group = f"ak-{uuid.uuid4().hex[:8]}"

    def make():
        return AIOKafkaConsumer(TOPIC, bootstrap_servers=BOOTSTRAP, group_id=group, auto_offset_reset="earliest",
                                enable_auto_commit=False, session_timeout_ms=10000, heartbeat_interval_ms=500)

    consumers = [make(), make()]
    for c in consumers:
        await c.start()
    seen = []
    deadline = time.time() + DEADLINE_S
    while time.time() < deadline:
        for c in consumers:
            batches = await c.getmany(timeout_ms=100)
            for records in batches.values():
                seen.extend((r.partition, r.offset) for r in records)
        owned = [tp.partition for c in consumers for tp in c.assignment()]
        if sorted(owned) == list(range(PARTITIONS)) and all(c.assignment() for c in consumers) and len(seen) >= PARTITIONS * PER_PARTITION:
            break
    owned = [sorted(tp.partition for tp in c.assignment()) for c in consumers]
    report("shared-assignment", sorted(sum(owned, [])) == list(range(PARTITIONS)) and all(owned), assignments=owned)
    report("consumed-once", sorted(seen) == sorted(set(seen)) and len(seen) == PARTITIONS * PER_PARTITION, count=len(seen))
    for c in consumers:
        await c.commit()
    for c in consumers:
        await c.stop()
    restarted = make()
    await restarted.start()
    committed = {p: await restarted.committed(TopicPartition(TOPIC, p)) for p in range(PARTITIONS)}
    report("committed-after-restart", all(v == PER_PARTITION for v in committed.values()), committed=committed)
    leftover = sum(len(v) for v in (await restarted.getmany(timeout_ms=1000)).values())
    report("nothing-left", leftover == 0, leftover=leftover)
    await restarted.stop()


if CLIENT == "kafka-python":
    kafka_python()
elif CLIENT == "aiokafka":
    asyncio.run(aiokafka_run())
else:
    report("client", False, unknown=CLIENT)
report("done", True)
