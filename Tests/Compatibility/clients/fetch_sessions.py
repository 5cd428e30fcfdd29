#!/usr/bin/env python3
"""kafka-python's incremental fetch sessions (KIP-227, its FetchSessionHandler) against one Floe
broker, checked through the broker's /metrics.

--scenario partitions: a consumer of 24 partitions. Once its session is established, its fetch
requests name only the partitions whose position changed and the answers only the partitions with
news, not all 24, while it reads one record at a time from each partition.

--scenario evicting: two consumers of one topic against a broker with a single session slot, so
each new session evicts the other's (FETCH_SESSION_ID_NOT_FOUND, then a new session). Both read
every record, once and in order, and no error reaches the application."""
import os
import re
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common
from common import expect, expect_equal, step

with common.client_library("kafka-python"):
    import kafka
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import KafkaAdminClient

TIMEOUT_MS = 15_000
MANY = 24
# No incremental request or answer of the settled session may name more partitions than this.
FEW = 5


def add_arguments(parser):
    parser.add_argument("--admin", required=True, help="HOST:PORT of the broker's admin listener (its /metrics)")
    parser.add_argument("--scenario", choices=["partitions", "evicting"], required=True)


class Metrics:
    """One scrape of the broker's /metrics."""
    LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$")

    def __init__(self, admin):
        with urllib.request.urlopen(f"http://{admin}/metrics", timeout=5) as answer:
            text = answer.read().decode()
        self.samples = {}
        for line in text.splitlines():
            match = self.LINE.match(line)
            if line.startswith("#") or not match:
                continue
            name, labels, value = match.groups()
            self.samples[(name, frozenset(re.findall(r'(\w+)="([^"]*)"', labels or "")))] = float(value)

    def value(self, name, **labels):
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def at_most(self, name, bound, **labels):
        """How many observations of histogram `name` were at most `bound` (0 before its first)."""
        for (sample, sample_labels), value in self.samples.items():
            found = dict(sample_labels)
            le = found.pop("le", "+Inf")
            if sample == f"{name}_bucket" and le != "+Inf" and float(le) == bound and found == labels:
                return value
        return 0.0


class Delta:
    """What changed between two scrapes."""

    def __init__(self, before, after):
        self.before, self.after = before, after

    def value(self, name, **labels):
        return self.after.value(name, **labels) - self.before.value(name, **labels)

    def histogram(self, name, **labels):
        """(observations, their sum, observations at most FEW)."""
        return (self.value(f"{name}_count", **labels), self.value(f"{name}_sum", **labels),
                self.after.at_most(name, FEW, **labels) - self.before.at_most(name, FEW, **labels))


def create_topic(bootstrap, topic, partitions):
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=TIMEOUT_MS)
    try:
        admin.create_topics({topic: {"num_partitions": partitions, "replication_factor": 1}})
    finally:
        admin.close()


def new_producer(bootstrap):
    return KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, request_timeout_ms=TIMEOUT_MS,
                         max_block_ms=TIMEOUT_MS, enable_idempotence=True)


def produce(producer, topic, records):
    """`records`: (partition, key) pairs, sent in order; returns their offsets."""
    futures = [producer.send(topic, key=key.encode(), value=b"value-" + key.encode(), partition=p) for p, key in records]
    producer.flush(timeout=TIMEOUT_MS / 1000)
    return [future.get(timeout=TIMEOUT_MS / 1000).offset for future in futures]


def new_consumer(bootstrap, topic, partitions):
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
                             request_timeout_ms=TIMEOUT_MS, fetch_max_wait_ms=500, enable_incremental_fetch_sessions=True)
    assigned = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(assigned)
    consumer.seek_to_beginning(*assigned)
    return consumer


def poll_into(consumer, got, timeout_ms):
    for tp, messages in consumer.poll(timeout_ms=timeout_ms).items():
        got.setdefault(tp.partition, []).extend((m.offset, m.key.decode()) for m in messages)


def partitions_scenario(args):
    topic = f"{args.prefix}-sessions"
    create_topic(args.bootstrap, topic, MANY)
    producer = new_producer(args.bootstrap)
    try:
        first = [(p, f"p{p}-r{i}") for p in range(MANY) for i in range(2)]
        expect_equal(produce(producer, topic, first), [i for _ in range(MANY) for i in range(2)], "offsets of the first records")
        start = Metrics(args.admin)
        consumer = new_consumer(args.bootstrap, topic, MANY)
        try:
            got = {}
            for _ in common.deadline_loop(30, f"reading the first records of {topic}"):
                if sum(len(r) for r in got.values()) >= len(first):
                    break
                poll_into(consumer, got, 500)
            for p in range(MANY):
                expect_equal(got.get(p), [(i, f"p{p}-r{i}") for i in range(2)], f"{topic}-{p}: the first records")
            opened = Delta(start, Metrics(args.admin))
            full_requests, full_partitions, _ = opened.histogram("floe_broker_fetch_request_partitions", kind="full")
            expect(full_requests >= 1 and full_partitions >= MANY,
                   f"the first fetch should be a full request naming all {MANY} partitions: {full_requests} full requests naming {full_partitions}")
            expect(opened.value("floe_broker_fetch_sessions_created_total") >= 1, "the consumer's full fetch created no session")

            # Caught up: its next requests say where it moved to, then nothing changes any more. Wait for a
            # stretch in which its requests named no partition at all.
            for _ in common.deadline_loop(20, "the session to settle (incremental requests naming no partition)"):
                before = Metrics(args.admin)
                poll_into(consumer, got, 1200)
                settled = Delta(before, Metrics(args.admin))
                count, named, _ = settled.histogram("floe_broker_fetch_request_partitions", kind="incremental")
                if count >= 1 and named == 0:
                    break
            step(f"{MANY} partitions read; the session is established and idle")

            before = Metrics(args.admin)
            for p in range(MANY):
                key = f"p{p}-later"
                expect_equal(produce(producer, topic, [(p, key)]), [2], f"{topic}-{p}: offset of the later record")
                for _ in common.deadline_loop(20, f"the later record of {topic}-{p}"):
                    if (2, key) in got.get(p, []):
                        break
                    poll_into(consumer, got, 200)
            phase = Delta(before, Metrics(args.admin))
        finally:
            consumer.close()
    finally:
        producer.close(timeout=5)

    for p in range(MANY):
        expect_equal(got[p], [(0, f"p{p}-r0"), (1, f"p{p}-r1"), (2, f"p{p}-later")], f"{topic}-{p}: every record, once, in order")
    requests, named, few_named = phase.histogram("floe_broker_fetch_request_partitions", kind="incremental")
    answers, answered, few_answered = phase.histogram("floe_broker_fetch_response_partitions", kind="incremental")
    step(f"one record at a time into each of {MANY} partitions: {requests:.0f} incremental requests naming {named:.0f} partitions "
         f"in all ({named / max(requests, 1):.2f} each), answers naming {answered:.0f} ({answered / max(answers, 1):.2f} each)")
    expect_equal(phase.value("floe_broker_fetch_requests_total", kind="full"), 0.0, "full fetch requests while the session was established")
    expect(requests >= MANY // 2, f"only {requests} incremental requests for {MANY} records read one by one")
    expect_equal(few_named, requests, f"incremental requests naming at most {FEW} of the {MANY} partitions")
    expect_equal(few_answered, answers, f"incremental answers naming at most {FEW} of the {MANY} partitions")
    expect(answered >= MANY, f"incremental answers named {answered} partitions, fewer than the {MANY} that got a record")


def evicting_scenario(args):
    topic = f"{args.prefix}-evicting"
    partitions, first_rounds, later_rounds = 6, 20, 20
    create_topic(args.bootstrap, topic, partitions)
    producer = new_producer(args.bootstrap)
    start = Metrics(args.admin)
    readers = {}
    try:
        def round_of(r):
            return [(p, f"p{p}-r{r}") for p in range(partitions)]

        for r in range(first_rounds):
            produce(producer, topic, round_of(r))
        readers = {name: (new_consumer(args.bootstrap, topic, partitions), {}) for name in ("first", "second")}
        total = partitions * (first_rounds + later_rounds)
        produced = first_rounds
        for _ in common.deadline_loop(60, f"both consumers reading all {total} records of {topic}"):
            if all(sum(len(r) for r in got.values()) >= total for _, got in readers.values()):
                break
            for consumer, got in readers.values():
                poll_into(consumer, got, 50)
            if produced < first_rounds + later_rounds:
                produce(producer, topic, round_of(produced))
                produced += 1
    finally:
        for consumer, _ in readers.values():
            consumer.close()
        producer.close(timeout=5)
    delta = Delta(start, Metrics(args.admin))

    for name, (_, got) in readers.items():
        for p in range(partitions):
            expect_equal(got.get(p), [(r, f"p{p}-r{r}") for r in range(first_rounds + later_rounds)],
                         f"{name} consumer, {topic}-{p}: every record, once, in order")
    evictions = delta.value("floe_broker_fetch_session_evictions_total")
    not_found = delta.value("floe_broker_fetch_session_errors_total", error="FETCH_SESSION_ID_NOT_FOUND")
    step(f"two consumers, one session slot: {evictions:.0f} evictions, {not_found:.0f} FETCH_SESSION_ID_NOT_FOUND answers, "
         f"{delta.value('floe_broker_fetch_sessions_created_total'):.0f} sessions created; both read all records")
    expect(evictions >= 5, f"only {evictions} sessions evicted: the consumers did not compete for the slot")
    expect(not_found >= 5, f"only {not_found} requests of evicted sessions were refused")
    expect(delta.after.value("floe_broker_fetch_sessions") <= 1, "more sessions cached than the one slot")


def main():
    args = common.parse_args(__doc__, add_arguments)
    step(f"kafka-python {kafka.__version__} ({sys.executable}), scenario {args.scenario}")
    if args.scenario == "partitions":
        partitions_scenario(args)
    else:
        evicting_scenario(args)


if __name__ == "__main__":
    common.run(main)
