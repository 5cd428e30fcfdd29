"""Consumer groups on the next-generation protocol (KIP-848, `group.protocol=consumer`) with
confluent-kafka (librdkafka >= 2.10) against a Floe cluster whose brokers run with short
consumer-protocol session and heartbeat settings.

Usage: consumer_protocol.py BOOTSTRAP SCENARIO PREFIX [DATA_DIR]
Scenarios:
  incremental  3 members on a 6-partition topic cover it once; the admin API shows a Stable
               consumer-type group; a member leaves and the two others take its partitions
               without giving up any of their own (no stop-the-world rebalance).
  range        group.remote.assignor=range on two co-partitioned topics: each member gets the same
               partition numbers of both.
  regex        a subscription "^PREFIX-re-.*" follows topics created after it subscribed.
  static       a static member (group.instance.id) closes and comes back under the same instance
               id: it gets its partitions back, the other member keeps its own.
  upgrade      a classic group commits and empties; a consumer-protocol member of the same group
               resumes after the commits, commits more and leaves; a classic member resumes after those.
  online       two classic members (eager range assignor) consume; a consumer-protocol member joins
               the live group, which becomes a consumer group: the three cover every partition once
               and the classic members keep consuming; it leaves and the group is classic again,
               the two classic members covering everything.
  failover DATA_DIR  the coordinator broker of a live group is SIGKILLed (floe dev restarts it): the
               next coordinator rebuilds the group from __consumer_offsets, members keep their
               partitions and commits work again.
Prints one JSON line per check; exits non-zero on the first failed check.
"""
import json
import os
import signal
import sys
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

BOOTSTRAP, SCENARIO, PREFIX = sys.argv[1], sys.argv[2], sys.argv[3]
DEADLINE_S = 60


def report(check, ok, **details):
    print(json.dumps({"check": check, "ok": ok, **details}), flush=True)
    if not ok:
        sys.exit(1)


ADMIN = None


def admin():
    """One admin client for the run (a destroyed client fails its pending futures)."""
    global ADMIN
    if ADMIN is None:
        ADMIN = AdminClient({"bootstrap.servers": BOOTSTRAP})
    return ADMIN


def create_topic(name, partitions):
    futures = admin().create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    for future in futures.values():
        future.result(timeout=30)
    for _ in range(300):
        topic = admin().list_topics(name, timeout=10).topics.get(name)
        if topic and topic.error is None and len(topic.partitions) == partitions and all(p.leader >= 0 for p in topic.partitions.values()):
            return
        time.sleep(0.1)
    report(f"topic-ready-{name}", False)


def produce(topic, partitions, per_partition):
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "linger.ms": 5})
    for partition in range(partitions):
        for i in range(per_partition):
            producer.produce(topic, value=f"{partition}-{i}".encode(), partition=partition)
    report(f"produce-{topic}", producer.flush(60) == 0)


class Member:
    """A consumer-protocol (or classic) member that records every assign and revoke callback."""

    def __init__(self, group, topics, protocol="consumer", **extra):
        config = {"bootstrap.servers": BOOTSTRAP, "group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False}
        if protocol == "consumer":
            config["group.protocol"] = "consumer"
        else:
            config.update({"session.timeout.ms": 10000, "heartbeat.interval.ms": 500})
        config.update(extra)
        self.consumer = Consumer(config)
        self.revoked = []
        self.seen = {}
        self.consumer.subscribe(topics, on_revoke=lambda c, ps: self.revoked.extend((p.topic, p.partition) for p in ps))

    def owned(self):
        return sorted((p.topic, p.partition) for p in self.consumer.assignment())

    def poll(self, timeout=0.05):
        msg = self.consumer.poll(timeout)
        if msg is not None and not msg.error():
            self.seen[(msg.topic(), msg.partition())] = msg.offset()
        return msg


def poll_until(members, condition, what):
    deadline = time.time() + DEADLINE_S
    while time.time() < deadline:
        for m in members:
            m.poll()
        if condition():
            return time.time()
    report(what, False, owned=[m.owned() for m in members])


def covers_once(members, expected):
    owned = [tp for m in members for tp in m.owned()]
    return sorted(owned) == sorted(expected) and all(m.owned() for m in members)


def described(group):
    return admin().describe_consumer_groups([group], request_timeout=30)[group].result()


def incremental():
    topic, group = f"{PREFIX}-inc", f"{PREFIX}-inc-g"
    create_topic(topic, 6)
    everything = [(topic, p) for p in range(6)]
    members = [Member(group, [topic]) for _ in range(3)]
    poll_until(members, lambda: covers_once(members, everything), "three-members-cover-once")
    report("three-members", True, owned=[m.owned() for m in members])
    from confluent_kafka import ConsumerGroupState, ConsumerGroupType
    # Members own their partitions a heartbeat before the coordinator has their acknowledgement: until then the
    # group is Reconciling (UNKNOWN to librdkafka), as in Kafka. Heartbeat on until it says Stable, bounded.
    views = []
    poll_until(members, lambda: views.append(described(group)) or views[-1].state == ConsumerGroupState.STABLE, "describe-stable")
    view = views[-1]
    report("describe", view.type == ConsumerGroupType.CONSUMER and view.state == ConsumerGroupState.STABLE and len(view.members) == 3
           and sorted(tp.partition for m in view.members for tp in m.assignment.topic_partitions) == list(range(6)),
           type=str(view.type), state=str(view.state), members=len(view.members))
    listed = admin().list_consumer_groups(request_timeout=30).result()
    report("list", any(g.group_id == group and g.type == ConsumerGroupType.CONSUMER for g in listed.valid))
    before = [m.owned() for m in members[:2]]
    for m in members[:2]:
        m.revoked.clear()
    members.pop().consumer.close()
    poll_until(members, lambda: covers_once(members, everything), "two-members-cover-once")
    kept = all(set(b) <= set(m.owned()) for b, m in zip(before, members)) and not any(m.revoked for m in members)
    report("incremental-leave", kept, before=before, after=[m.owned() for m in members], revoked=[m.revoked for m in members])
    for m in members:
        m.consumer.close()


def range_assignor():
    a, b, group = f"{PREFIX}-ra", f"{PREFIX}-rb", f"{PREFIX}-range-g"
    create_topic(a, 4)
    create_topic(b, 4)
    members = [Member(group, [a, b], **{"group.remote.assignor": "range"}) for _ in range(2)]
    everything = [(t, p) for t in (a, b) for p in range(4)]
    poll_until(members, lambda: covers_once(members, everything), "range-covers-once")
    aligned = all(sorted(p for t, p in m.owned() if t == a) == sorted(p for t, p in m.owned() if t == b) for m in members)
    report("range-co-partitioned", aligned, owned=[m.owned() for m in members])
    report("range-assignor-named", described(group).partition_assignor == "range", assignor=described(group).partition_assignor)
    for m in members:
        m.consumer.close()


def regex():
    group = f"{PREFIX}-re-g"
    first = f"{PREFIX}-re-a"
    create_topic(first, 3)
    member = Member(group, [f"^{PREFIX}-re-.*"])
    poll_until([member], lambda: member.owned() == [(first, p) for p in range(3)], "regex-matches-existing")
    second = f"{PREFIX}-re-b"
    create_topic(second, 2)
    poll_until([member], lambda: member.owned() == sorted([(first, p) for p in range(3)] + [(second, p) for p in range(2)]), "regex-follows-new-topic")
    report("regex", True, owned=member.owned())
    member.consumer.close()


def static():
    topic, group = f"{PREFIX}-st", f"{PREFIX}-st-g"
    create_topic(topic, 4)
    everything = [(topic, p) for p in range(4)]
    a = Member(group, [topic], **{"group.instance.id": "static-a"})
    b = Member(group, [topic], **{"group.instance.id": "static-b"})
    poll_until([a, b], lambda: covers_once([a, b], everything), "static-cover")
    held, other = a.owned(), b.owned()
    b.revoked.clear()
    a.consumer.close()
    a = Member(group, [topic], **{"group.instance.id": "static-a"})
    poll_until([a, b], lambda: a.owned() == held, "static-member-gets-its-partitions-back")
    report("static-rejoin", b.owned() == other and not b.revoked, held=held, other=b.owned(), revoked=b.revoked)
    a.consumer.close()
    b.consumer.close()


def consume_and_commit(member, topic, partitions, until_offset):
    """Polls until every partition was read up to `until_offset` (exclusive), then commits that."""
    deadline = time.time() + DEADLINE_S
    while time.time() < deadline and not all(member.seen.get((topic, p), -1) >= until_offset - 1 for p in range(partitions)):
        member.poll(0.1)
    positions = {p: member.seen.get((topic, p), -1) for p in range(partitions)}
    report(f"read-{member.consumer.memberid()[:6] or 'member'}", all(o >= until_offset - 1 for o in positions.values()), positions=positions)
    member.consumer.commit(offsets=[TopicPartition(topic, p, until_offset) for p in range(partitions)], asynchronous=False)


def first_offsets(member, topic, partitions):
    """The first offset the member reads on each partition."""
    first = {}
    deadline = time.time() + DEADLINE_S
    while time.time() < deadline and len(first) < partitions:
        msg = member.poll(0.1)
        if msg is not None and not msg.error() and msg.partition() not in first:
            first[msg.partition()] = msg.offset()
    return first


def upgrade():
    topic, group = f"{PREFIX}-up", f"{PREFIX}-up-g"
    create_topic(topic, 3)
    produce(topic, 3, 30)
    classic = Member(group, [topic], protocol="classic")
    consume_and_commit(classic, topic, 3, 10)
    classic.consumer.close()
    modern = Member(group, [topic])
    first = first_offsets(modern, topic, 3)
    report("consumer-protocol-resumes-after-classic-commits", first == {0: 10, 1: 10, 2: 10}, first=first)
    from confluent_kafka import ConsumerGroupType
    report("group-is-consumer-type", described(group).type == ConsumerGroupType.CONSUMER)
    consume_and_commit(modern, topic, 3, 20)
    modern.consumer.close()
    back = Member(group, [topic], protocol="classic")
    first = first_offsets(back, topic, 3)
    report("classic-resumes-after-consumer-protocol-commits", first == {0: 20, 1: 20, 2: 20}, first=first)
    report("group-is-classic-again", described(group).type == ConsumerGroupType.CLASSIC)
    back.consumer.close()


def online():
    from confluent_kafka import ConsumerGroupType
    topic, group = f"{PREFIX}-on", f"{PREFIX}-on-g"
    create_topic(topic, 6)
    everything = [(topic, p) for p in range(6)]
    classic = [Member(group, [topic], protocol="classic") for _ in range(2)]
    poll_until(classic, lambda: covers_once(classic, everything), "classic-members-cover-once")
    report("classic-group", described(group).type == ConsumerGroupType.CLASSIC)
    modern = Member(group, [topic])
    everyone = classic + [modern]
    poll_until(everyone, lambda: covers_once(everyone, everything), "mixed-group-covers-once")
    report("upgraded-online", described(group).type == ConsumerGroupType.CONSUMER, owned=[m.owned() for m in everyone])
    modern.consumer.close()
    poll_until(classic, lambda: covers_once(classic, everything) and described(group).type == ConsumerGroupType.CLASSIC, "classic-again-covers-once")
    report("downgraded-online", True, owned=[m.owned() for m in classic])
    for m in classic:
        m.consumer.close()


def failover(data_dir):
    topic, group = f"{PREFIX}-fo", f"{PREFIX}-fo-g"
    create_topic(topic, 4)
    everything = [(topic, p) for p in range(4)]
    members = [Member(group, [topic]) for _ in range(2)]
    poll_until(members, lambda: covers_once(members, everything), "failover-cover")
    before = [m.owned() for m in members]
    for m in members:
        m.revoked.clear()
    view = described(group)
    with open(os.path.join(data_dir, "cluster.json")) as f:
        services = json.load(f)["services"]
    pid = next(s["pid"] for s in services if s["kind"] == "broker" and s["node_id"] == view.coordinator.id)
    os.kill(pid, signal.SIGKILL)
    deadline = time.time() + DEADLINE_S
    committed = False
    while time.time() < deadline and not committed:
        for m in members:
            m.poll()
        try:
            for m in members:
                m.consumer.commit(offsets=[TopicPartition(t, p, 1) for t, p in m.owned()], asynchronous=False)
            committed = True
        except KafkaException:
            pass
    report("commit-after-coordinator-kill", committed)
    report("members-kept-their-partitions", [m.owned() for m in members] == before and not any(m.revoked for m in members),
           before=before, after=[m.owned() for m in members], revoked=[m.revoked for m in members])
    for m in members:
        m.consumer.close()


scenarios = {"incremental": incremental, "range": range_assignor, "regex": regex, "static": static, "upgrade": upgrade, "online": online}
if SCENARIO == "failover":
    failover(sys.argv[4])
else:
    scenarios[SCENARIO]()
report("done", True)
