#!/usr/bin/env python3
"""Consumer-group benchmark against a running cluster (confluent-kafka, librdkafka):

  * rebalance time of a group of N members: from the last member's subscribe (or a member's
    close) until every member has its assignment and together they cover every partition once;
  * offset-commit latency: synchronous commits of one partition's offset, p50/p99/p999.

    python3 Tools/bench-groups.py --bootstrap 127.0.0.1:9092 --members 10 --partitions 20 --commits 2000
"""
import argparse
import statistics
import threading
import time
import uuid

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


class Member:
    def __init__(self, bootstrap, group, topic, assignor):
        self.assignment = set()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.cooperative = assignor == "cooperative-sticky"
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
            "session.timeout.ms": 10000, "heartbeat.interval.ms": 500, "partition.assignment.strategy": assignor,
        })
        self.consumer.subscribe([topic], on_assign=self.assigned, on_revoke=self.revoked)
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def assigned(self, consumer, partitions):
        with self.lock:
            self.assignment |= {p.partition for p in partitions}
        if self.cooperative:
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)

    def revoked(self, consumer, partitions):
        with self.lock:
            self.assignment -= {p.partition for p in partitions}
        if self.cooperative:
            consumer.incremental_unassign(partitions)

    def run(self):
        while not self.stop.is_set():
            self.consumer.poll(0.05)

    def close(self):
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(10)
        self.consumer.close()


def covered(members, partitions):
    seen = []
    for member in members:
        with member.lock:
            seen.extend(member.assignment)
    return sorted(seen) == list(range(partitions)) and all(member.assignment for member in members[:partitions])


def wait_covered(members, partitions, timeout=120):
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if covered(members, partitions):
            return time.monotonic() - start
        time.sleep(0.005)
    raise RuntimeError("the group did not cover every partition in time")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--partitions", type=int, default=20)
    parser.add_argument("--commits", type=int, default=2000)
    parser.add_argument("--assignor", default="range", help="range, roundrobin or cooperative-sticky")
    args = parser.parse_args()
    topic = f"bench-groups-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    for future in admin.create_topics([NewTopic(topic, args.partitions)]).values():
        future.result(30)
    print("bench groups")
    print(f"  bootstrap {args.bootstrap}, topic {topic} ({args.partitions} partitions), {args.members} members, assignor {args.assignor}")

    group = f"bench-{uuid.uuid4().hex[:8]}"
    members = [Member(args.bootstrap, group, topic, args.assignor) for _ in range(args.members)]
    formed = wait_covered(members, args.partitions)
    print(f"  group of {args.members} formed (all subscribed at once → full coverage): {formed * 1000:.0f} ms")
    joins, leaves = [], []
    for _ in range(3):
        member = Member(args.bootstrap, group, topic, args.assignor)
        members.append(member)
        start = time.monotonic()
        # Coverage holds throughout with cooperative assignors; wait for the newcomer to get partitions.
        while not member.assignment and time.monotonic() - start < 120:
            time.sleep(0.005)
        wait_covered(members, args.partitions)
        joins.append(time.monotonic() - start)
        leaving = members.pop(0)
        start = time.monotonic()
        leaving.close()
        wait_covered(members, args.partitions)
        leaves.append(time.monotonic() - start)
    print(f"  member joins → new member assigned and full coverage: " + ", ".join(f"{t * 1000:.0f} ms" for t in joins))
    print(f"  member leaves (LeaveGroup) → full coverage again: " + ", ".join(f"{t * 1000:.0f} ms" for t in leaves))

    # The committer's own poll loop stops, so commits run as an application's would: on its thread.
    members[0].stop.set()
    members[0].thread.join(10)
    committer = members[0].consumer
    partition = next(iter(members[0].assignment))
    latencies = []
    for offset in range(args.commits):
        start = time.monotonic()
        committer.commit(offsets=[TopicPartition(topic, partition, offset)], asynchronous=False)
        latencies.append(time.monotonic() - start)
    latencies.sort()

    def q(fraction):
        return latencies[min(len(latencies) - 1, int(len(latencies) * fraction))] * 1000

    print(f"  offset commit (synchronous, one partition): p50 {q(0.5):.2f} ms, p99 {q(0.99):.2f} ms, p999 {q(0.999):.2f} ms, mean {statistics.mean(latencies) * 1000:.2f} ms ({len(latencies)} commits)")
    for member in members:
        member.close()


if __name__ == "__main__":
    main()
