"""Consumer groups with confluent-kafka (librdkafka) against a Floe cluster.

Usage: confluent_group.py BOOTSTRAP SCENARIO TOPIC
Scenarios:
  coverage     3 consumers on a 6-partition topic each get partitions, together every partition once;
               then one leaves and the other two cover all 6 again.
  commit       a consumer reads half the records, commits, closes; a new consumer in the same group
               resumes exactly after the committed offset.
  cooperative  the same coverage checks with partition.assignment.strategy=cooperative-sticky.
  static       two static members (group.instance.id); one restarts under the same instance id
               within its session timeout and gets its old partitions back without a rebalance.
  failover DATA_DIR  a stable group of two; the coordinator broker is stopped (SIGTERM; floe dev
               restarts it); the group's new coordinator rebuilds it from __consumer_offsets, so the
               members carry on in the same generation without a rebalance, and commits still work.
  simple-commit GROUP    an assign()-mode consumer (no group membership) commits offset 100+p for
               every partition of the existing topic, which must read back at once.
  check-committed GROUP  a fresh consumer reads those offsets back (e.g. after the coordinator moved).
Prints one JSON line per check; exits non-zero on the first failed check.
"""
import json
import sys
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

BOOTSTRAP, SCENARIO, TOPIC = sys.argv[1], sys.argv[2], sys.argv[3]
GROUP = sys.argv[4] if len(sys.argv) > 4 else None
PARTITIONS = 6
DEADLINE_S = 90


def report(check, ok, **details):
    print(json.dumps({"check": check, "ok": ok, **details}), flush=True)
    if not ok:
        sys.exit(1)


def create_topic():
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    futures = admin.create_topics([NewTopic(TOPIC, num_partitions=PARTITIONS, replication_factor=1)])
    for future in futures.values():
        future.result(timeout=30)
    # Wait until every partition has a leader.
    for _ in range(300):
        md = admin.list_topics(TOPIC, timeout=10)
        topic = md.topics.get(TOPIC)
        if topic and topic.error is None and len(topic.partitions) == PARTITIONS and all(
            p.leader >= 0 and p.error is None for p in topic.partitions.values()
        ):
            return
        time.sleep(0.1)
    report("topic-ready", False)


def produce(count_per_partition):
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "message.timeout.ms": 30000, "linger.ms": 5})
    errors = []
    for partition in range(PARTITIONS):
        for i in range(count_per_partition):
            producer.produce(TOPIC, value=f"p{partition}-{i}".encode(), partition=partition,
                             on_delivery=lambda err, msg: errors.append(err) if err else None)
    remaining = producer.flush(60)
    report("produce", remaining == 0 and not errors, remaining=remaining, errors=[str(e) for e in errors[:3]])


def consumer(group, strategy="range", **extra):
    config = {
        "bootstrap.servers": BOOTSTRAP,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 500,
        "partition.assignment.strategy": strategy,
    }
    config.update(extra)
    return Consumer(config)


def poll_until(consumers, condition, what):
    deadline = time.time() + DEADLINE_S
    while time.time() < deadline:
        for c in consumers:
            c.poll(0.05)
        if condition():
            return True
    report(what, False, assignments=[sorted(p.partition for p in c.assignment()) for c in consumers])


def covered_once(consumers):
    owned = [p.partition for c in consumers for p in c.assignment()]
    return sorted(owned) == list(range(PARTITIONS)) and all(len(c.assignment()) > 0 for c in consumers)


def coverage(strategy):
    group = f"g-{uuid.uuid4().hex[:8]}"
    members = [consumer(group, strategy) for _ in range(3)]
    for c in members:
        c.subscribe([TOPIC])
    poll_until(members, lambda: covered_once(members), "three-members-cover-every-partition-once")
    report("three-members", True, assignments=[sorted(p.partition for p in c.assignment()) for c in members])
    # librdkafka's admin view of the same group (ListGroups with a states filter, DescribeGroups);
    # confluent-kafka 1.x (Debian's) has no consumer-group admin calls.
    try:
        from confluent_kafka import ConsumerGroupState
    except ImportError:
        ConsumerGroupState = None
        report("admin-view-skipped", True, reason="this confluent-kafka has no consumer-group admin API")
    if ConsumerGroupState is not None:
        admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
        listed = admin.list_consumer_groups(states={ConsumerGroupState.STABLE}, request_timeout=30).result()
        report("admin-list-stable", group in [g.group_id for g in listed.valid], listed=[g.group_id for g in listed.valid])
        described = admin.describe_consumer_groups([group], request_timeout=30)[group].result()
        report("admin-describe", described.state == ConsumerGroupState.STABLE and len(described.members) == 3
               and sorted(tp.partition for m in described.members for tp in m.assignment.topic_partitions) == list(range(PARTITIONS)),
               state=str(described.state), members=len(described.members))
    leaving = members.pop()
    leaving.close()
    poll_until(members, lambda: covered_once(members), "after-leave-two-members-cover-every-partition")
    report("after-leave", True, assignments=[sorted(p.partition for p in c.assignment()) for c in members])
    for c in members:
        c.close()


def commit_resume():
    produce(10)
    group = f"g-{uuid.uuid4().hex[:8]}"
    first = consumer(group)
    first.subscribe([TOPIC])
    seen = {}
    deadline = time.time() + DEADLINE_S
    while sum(seen.values()) < 30 and time.time() < deadline:
        msg = first.poll(0.2)
        if msg is None or msg.error():
            continue
        seen[msg.partition()] = seen.get(msg.partition(), 0) + 1
        if sum(seen.values()) >= 30:
            break
    report("first-consumer-read", sum(seen.values()) >= 30, seen=seen)
    committed = first.commit(asynchronous=False)
    positions = {tp.partition: tp.offset for tp in committed if tp.offset >= 0}
    fetched = first.committed([TopicPartition(TOPIC, p) for p in range(PARTITIONS)], timeout=30)
    fetched_positions = {tp.partition: tp.offset for tp in fetched if tp.offset >= 0}
    report("committed-readback", all(fetched_positions.get(p) == o for p, o in positions.items()),
           committed=positions, fetched=fetched_positions)
    first.close()

    second = consumer(group)
    second.subscribe([TOPIC])
    firsts = {}
    total = 0
    expected = PARTITIONS * 10 - sum(positions.values())
    deadline = time.time() + DEADLINE_S
    while total < expected and time.time() < deadline:
        msg = second.poll(0.2)
        if msg is None or msg.error():
            continue
        total += 1
        firsts.setdefault(msg.partition(), msg.offset())
    # Each partition resumes at its committed offset (or 0 where nothing was committed).
    ok = total == expected and all(firsts.get(p, 10) == positions.get(p, 0) for p in range(PARTITIONS) if positions.get(p, 0) < 10)
    report("second-consumer-resumes", ok, expected=expected, got=total, first_offsets=firsts, committed=positions)
    second.close()


def static_rejoin():
    group = f"g-{uuid.uuid4().hex[:8]}"
    assigns = {"a": 0, "b": 0}

    def counting(name):
        def on_assign(consumer, partitions):
            assigns[name] += 1
        return on_assign

    a = consumer(group, **{"group.instance.id": "instance-a"})
    b = consumer(group, **{"group.instance.id": "instance-b"})
    a.subscribe([TOPIC], on_assign=counting("a"))
    b.subscribe([TOPIC], on_assign=counting("b"))
    poll_until([a, b], lambda: covered_once([a, b]), "static-members-cover-every-partition")
    # Let the group settle so no rebalance is still under way.
    settle = time.time() + 2
    while time.time() < settle:
        a.poll(0.05)
        b.poll(0.05)
    before_a = assigns["a"]
    old = sorted(p.partition for p in b.assignment())
    b.close()  # a static member does not leave the group on close
    b2 = consumer(group, **{"group.instance.id": "instance-b"})
    b2.subscribe([TOPIC], on_assign=counting("b"))
    poll_until([a, b2], lambda: len(b2.assignment()) > 0, "restarted-static-member-assigned")
    settle = time.time() + 2
    while time.time() < settle:
        a.poll(0.05)
        b2.poll(0.05)
    report("static-rejoin-keeps-assignment", sorted(p.partition for p in b2.assignment()) == old and assigns["a"] == before_a,
           old=old, new=sorted(p.partition for p in b2.assignment()), other_member_assignments=assigns["a"] - before_a)
    a.close()
    b2.close()


def failover(data_dir):
    import os
    import signal
    from confluent_kafka import ConsumerGroupState
    group = f"g-{uuid.uuid4().hex[:8]}"
    assigns = {"n": 0}

    def on_assign(consumer, partitions):
        assigns["n"] += 1

    members = [consumer(group), consumer(group)]
    for c in members:
        c.subscribe([TOPIC], on_assign=on_assign)
    poll_until(members, lambda: covered_once(members), "failover-group-formed")
    settle = time.time() + 2
    while time.time() < settle:
        for c in members:
            c.poll(0.05)
    before = assigns["n"]
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    described = admin.describe_consumer_groups([group], request_timeout=30)[group].result()
    coordinator = described.coordinator.id
    with open(os.path.join(data_dir, "cluster.json")) as f:
        pid = next(s["pid"] for s in json.load(f)["services"] if s["node_id"] == coordinator)
    os.kill(pid, signal.SIGTERM)
    # Keep the members polling (heartbeating) while the coordinator moves, for longer than a session.
    moved = None
    last = None
    deadline = time.time() + 15
    while time.time() < deadline:
        for c in members:
            c.poll(0.05)
        if moved is None:
            try:
                # A fresh client each time: librdkafka's admin client caches the old coordinator.
                fresh = AdminClient({"bootstrap.servers": BOOTSTRAP})
                now = fresh.describe_consumer_groups([group], request_timeout=5)[group].result()
                if now.coordinator.id != coordinator and now.state == ConsumerGroupState.STABLE and len(now.members) == 2:
                    moved = now.coordinator.id
                last = (now.coordinator.id, str(now.state), len(now.members))
            except Exception as error:
                last = str(error)
    report("coordinator-moved", moved is not None, old=coordinator, new=moved, last=str(last))
    report("no-rebalance-after-failover", assigns["n"] == before and covered_once(members), assignments_after=assigns["n"] - before)
    results = []
    for c in members:
        tps = [TopicPartition(TOPIC, tp.partition, 7) for tp in c.assignment()]
        results += c.commit(offsets=tps, asynchronous=False)
    report("commit-after-failover", all(tp.error is None for tp in results), errors=[str(tp.error) for tp in results if tp.error])
    for c in members:
        c.close()


def simple_commit():
    c = consumer(GROUP)
    offsets = [TopicPartition(TOPIC, p, 100 + p) for p in range(PARTITIONS)]
    c.assign(offsets)
    result = c.commit(offsets=offsets, asynchronous=False)
    report("simple-commit", all(tp.error is None for tp in result), errors=[str(tp.error) for tp in result if tp.error])
    c.close()
    check_committed()


def check_committed():
    c = consumer(GROUP)
    deadline = time.time() + DEADLINE_S
    fetched = {}
    while time.time() < deadline:
        try:
            result = c.committed([TopicPartition(TOPIC, p) for p in range(PARTITIONS)], timeout=10)
            fetched = {tp.partition: tp.offset for tp in result}
            if fetched == {p: 100 + p for p in range(PARTITIONS)}:
                break
        except Exception as error:  # the coordinator may still be moving or loading
            fetched = {"error": str(error)}
        time.sleep(0.2)
    report("committed", fetched == {p: 100 + p for p in range(PARTITIONS)}, fetched=fetched)
    c.close()


if SCENARIO in ("coverage", "cooperative", "commit", "static"):
    create_topic()
if SCENARIO == "coverage":
    coverage("range")
elif SCENARIO == "cooperative":
    coverage("cooperative-sticky")
elif SCENARIO == "commit":
    commit_resume()
elif SCENARIO == "static":
    static_rejoin()
elif SCENARIO == "failover":
    failover(GROUP)
elif SCENARIO == "simple-commit":
    simple_commit()
elif SCENARIO == "check-committed":
    check_committed()
else:
    report("scenario", False, unknown=SCENARIO)
report("done", True)
