"""Consumer groups with kafka-python and aiokafka against a Floe cluster.

Usage: python_groups.py BOOTSTRAP CLIENT TOPIC      (CLIENT: kafka-python, aiokafka or admin)
Two consumers in one group on a 4-partition topic share it (each owns some, together all, once);
they consume every produced record between them, commit, and a restarted consumer
of the group finds the committed offsets and has nothing left to read.
"admin" drives the group admin APIs with kafka-python's KafkaAdminClient around a live group:
ListGroups (states filter), DescribeGroups, OffsetFetch (v8 multi-group form), DeleteGroups of a
non-empty group (refused), OffsetDelete of a subscribed topic (refused), LeaveGroup v3+ (batched
member removal), then OffsetDelete and DeleteGroups of the emptied group.
Prints one JSON line per check; exits non-zero on the first failed check.
"""
import asyncio
import json
import sys
import threading
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
    owned = [[], []]
    changed = threading.Condition()
    stop = threading.Event()

    def member(k):
        # Each consumer polls from its own thread, as applications run them: kafka-python's poll
        # blocks while its member rejoins, so one thread polling both in turn can leave the other
        # unable to rejoin, and the group rebalances back and forth without settling.
        consumer = consumers[k]
        while not stop.is_set():
            batches = consumer.poll(timeout_ms=100)
            with changed:
                for records in batches.values():
                    seen.extend((r.partition, r.offset) for r in records)
                owned[k] = sorted(tp.partition for tp in consumer.assignment())
                changed.notify_all()

    def settled():
        return sorted(sum(owned, [])) == list(range(PARTITIONS)) and all(owned) and len(set(seen)) >= PARTITIONS * PER_PARTITION

    members = [threading.Thread(target=member, args=(k,), daemon=True) for k in range(len(consumers))]
    for thread in members:
        thread.start()
    with changed:
        changed.wait_for(settled, timeout=DEADLINE_S)
    stop.set()
    for thread in members:
        thread.join(timeout=30)
    report("shared-assignment", sorted(sum(owned, [])) == list(range(PARTITIONS)) and all(owned), assignments=owned)
    # Every record reached the group; a rebalance before the first commit may legitimately deliver some twice.
    report("consumed-all", set(seen) == {(p, o) for p in range(PARTITIONS) for o in range(PER_PARTITION)}, count=len(seen))
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
        if sorted(owned) == list(range(PARTITIONS)) and all(c.assignment() for c in consumers) and len(set(seen)) >= PARTITIONS * PER_PARTITION:
            break
    owned = [sorted(tp.partition for tp in c.assignment()) for c in consumers]
    report("shared-assignment", sorted(sum(owned, [])) == list(range(PARTITIONS)) and all(owned), assignments=owned)
    # Every record reached the group; a rebalance before the first commit may legitimately deliver some twice.
    report("consumed-all", set(seen) == {(p, o) for p in range(PARTITIONS) for o in range(PER_PARTITION)}, count=len(seen))
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


def admin_apis():
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import MemberToRemove, NewTopic

    group = f"adm-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP, request_timeout_ms=30000)
    admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])
    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, request_timeout_ms=30000, enable_idempotence=False)
    for p in range(PARTITIONS):
        producer.send(TOPIC, value=b"x", partition=p).get(timeout=30)
    producer.close()
    consumers = [KafkaConsumer(TOPIC, bootstrap_servers=BOOTSTRAP, group_id=group, auto_offset_reset="earliest",
                               enable_auto_commit=False, session_timeout_ms=10000, heartbeat_interval_ms=500)
                 for _ in range(2)]
    deadline = time.time() + DEADLINE_S
    while time.time() < deadline and not all(c.assignment() for c in consumers):
        for c in consumers:
            c.poll(timeout_ms=50)
    for c in consumers:
        c.commit({tp: __import__("kafka").OffsetAndMetadata(1, "", -1) for tp in c.assignment()})

    listed = [g["group_id"] for g in admin.list_groups(states_filter=["Stable"])]
    report("list-stable", group in listed, listed=listed)
    described = admin.describe_groups([group])[group]
    assigned = sorted(p for m in described["members"] for a in m["member_assignment"]["assigned_partitions"] for p in a["partitions"])
    report("describe", described["group_state"] == "Stable" and described["protocol_type"] == "consumer"
           and len(described["members"]) == 2 and assigned == list(range(PARTITIONS)), described=str(described)[:500])
    offsets = admin.list_group_offsets({group: None})[group]
    report("fetch-offsets", {tp.partition: o.offset for tp, o in offsets.items()} == {p: 1 for p in range(PARTITIONS)}, offsets=str(offsets))
    refused = admin.delete_groups([group])
    report("delete-non-empty-refused", refused.get(group) == "NonEmptyGroupError", result=str(refused))
    subscribed = admin.delete_group_offsets(group, [TopicPartition(TOPIC, 0)])
    report("offset-delete-subscribed-refused", "GroupSubscribedToTopic" in str(subscribed), result=str(subscribed))
    removed = admin.remove_group_members(group, [MemberToRemove(member_id=m["member_id"]) for m in described["members"]])
    report("remove-members", all("NoError" in str(v) for v in removed.values()) and len(removed) == 2, result=str(removed))
    for c in consumers:
        c.close(autocommit=False)
    described = admin.describe_groups([group])[group]
    report("empty-after-removal", described["group_state"] == "Empty" and not described["members"], described=str(described)[:300])
    deleted = admin.delete_group_offsets(group, [TopicPartition(TOPIC, 0)])
    remaining = admin.list_group_offsets({group: None})[group]
    report("offset-delete", "NoError" in str(deleted) and sorted(tp.partition for tp in remaining) == list(range(1, PARTITIONS)),
           result=str(deleted), remaining=str(remaining))
    result = admin.delete_groups([group])
    gone = group not in [g["group_id"] for g in admin.list_groups()]
    report("delete-group", result.get(group) == "OK" and gone and admin.describe_groups([group])[group]["group_state"] == "Dead",
           result=str(result))
    admin.close()


if CLIENT == "kafka-python":
    kafka_python()
elif CLIENT == "aiokafka":
    asyncio.run(aiokafka_run())
elif CLIENT == "admin":
    admin_apis()
else:
    report("client", False, unknown=CLIENT)
report("done", True)
