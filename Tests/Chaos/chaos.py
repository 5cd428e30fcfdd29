#!/usr/bin/env python3
"""Chaos run: a whole Floe cluster under idempotent producers and a consumer group while a
randomly chosen service (controller, WAL writer or broker) is SIGKILLed every few seconds (or, for
a share of the events, paused with SIGSTOP for up to 3 s and resumed, so requests time out and are
retried).

It starts `floe dev` (3 controllers, zones a and b, a WAL writer and 2 brokers per zone), creates a
6-partition topic, runs idempotent producers (every acknowledged record remembered with its
offset) and a consumer group that commits what it processed, kills services on a seeded random
schedule, then stops the load and checks:

  * every acknowledged record is in the topic exactly once, at the offset it was acknowledged
    with, and each producer's records are in send order within each partition;
  * the group's committed offsets never moved backwards;
  * the group consumed every acknowledged record;
  * every killed service came back (all services ready at the end).

It prints kills and pauses per service kind, the longest window without an acknowledged produce, and the
verdict, and exits 0 only when every check held.

    python3 Tests/Chaos/chaos.py --floe .build/debug/floe --duration 120
"""
import argparse
import os
import random
import signal
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Support"))
from floedev import FloeDev, free_base_port, ready  # noqa: E402
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

TOPIC = "chaos"
PARTITIONS = 6
GROUP = "chaos-verifier"
PRODUCERS = 2


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class Producers:
    """Idempotent producers; every acknowledged record is remembered with its offset."""

    def __init__(self, bootstrap):
        self.acked = {}  # value -> (partition, offset)
        self.errors = []
        self.sent = 0
        self.lock = threading.Lock()
        self.last_ack = time.time()
        self.longest_gap = 0.0
        self.longest_gap_end = self.last_ack
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(bootstrap, index), daemon=True) for index in range(PRODUCERS)]

    def start(self):
        for thread in self.threads:
            thread.start()

    def delivered(self, error, message):
        now = time.time()
        with self.lock:
            if error is not None:
                self.errors.append(str(error))
                return
            if now - self.last_ack > self.longest_gap:
                self.longest_gap, self.longest_gap_end = now - self.last_ack, now
            self.last_ack = now
            self.acked[message.value().decode()] = (message.partition(), message.offset())

    def run(self, bootstrap, index):
        producer = Producer({
            "bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5,
            "message.timeout.ms": 120000, "retry.backoff.ms": 50, "socket.timeout.ms": 10000,
        })
        sequence = 0
        while not self.stop.is_set():
            partition = sequence % PARTITIONS
            try:
                producer.produce(TOPIC, key=f"p{index}".encode(), value=f"p{index}:{partition}:{sequence}".encode(),
                                 partition=partition, on_delivery=self.delivered)
                sequence += 1
                with self.lock:
                    self.sent += 1
            except BufferError:
                producer.poll(0.05)
            producer.poll(0)
            time.sleep(0.002)
        producer.flush(120)

    def finish(self):
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=150)


class GroupConsumer:
    """A consumer group member that commits after processing and watches committed offsets."""

    def __init__(self, bootstrap, use_group=True):
        self.bootstrap = bootstrap
        self.use_group = use_group
        self.consumed = set()
        self.committed_history = {}  # partition -> last committed offset seen
        self.backwards = []
        self.errors = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def start(self):
        self.thread.start()

    def check_committed(self, consumer):
        try:
            committed = consumer.committed([TopicPartition(TOPIC, p) for p in range(PARTITIONS)], timeout=5)
        except KafkaException:
            return
        for tp in committed:
            if tp.offset < 0:
                continue
            last = self.committed_history.get(tp.partition, -1)
            if tp.offset < last:
                self.backwards.append((tp.partition, last, tp.offset))
            self.committed_history[tp.partition] = max(last, tp.offset)

    def run(self):
        consumer = Consumer({
            "bootstrap.servers": self.bootstrap, "group.id": GROUP, "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "session.timeout.ms": 10000, "socket.timeout.ms": 10000,
        })
        if self.use_group:
            consumer.subscribe([TOPIC])
        else:
            consumer.assign([TopicPartition(TOPIC, p, 0) for p in range(PARTITIONS)])
        last_check = 0.0
        while not self.stop.is_set():
            messages = consumer.consume(num_messages=500, timeout=0.5)
            for message in messages:
                if message.error():
                    if message.error().code() != KafkaError._PARTITION_EOF:
                        self.errors.append(str(message.error()))
                    continue
                self.consumed.add(message.value().decode())
            if messages and self.use_group:
                try:
                    consumer.commit(asynchronous=False)
                except KafkaException as error:
                    self.errors.append(f"commit: {error}")
            if self.use_group and time.time() - last_check > 2:
                self.check_committed(consumer)
                last_check = time.time()
        if self.use_group:
            self.check_committed(consumer)
        consumer.close()

    def finish(self):
        self.stop.set()
        self.thread.join(timeout=60)


def read_all(bootstrap, ends):
    """Every record of the topic by assignment, per partition in offset order."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "chaos-audit", "enable.auto.commit": False})
    consumer.assign([TopicPartition(TOPIC, p, 0) for p in range(PARTITIONS)])
    records = {p: [] for p in range(PARTITIONS)}
    deadline = time.time() + 120
    while time.time() < deadline and any((records[p][-1][0] + 1 if records[p] else 0) < ends[p] for p in range(PARTITIONS)):
        for message in consumer.consume(num_messages=1000, timeout=1):
            if message.error():
                continue
            records[message.partition()].append((message.offset(), message.value().decode()))
    consumer.close()
    return records


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--floe", required=True, help="path of the floe executable (its services beside it)")
    parser.add_argument("--duration", type=float, default=120, help="seconds of killing")
    parser.add_argument("--interval", type=float, default=4, help="mean seconds between kills")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--base-port", type=int, default=None, help="default: a free port range")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--no-group", action="store_true", help="consume by assignment instead of in a consumer group")
    parser.add_argument("--pause-fraction", type=float, default=0.2, help="share of events that pause a service instead of killing it")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="floe-chaos-")
    log(f"chaos: duration {args.duration} s, kill interval ~{args.interval} s, seed {seed}, data {data_dir}")
    base_port = args.base_port or free_base_port()
    cluster = FloeDev(args.floe, data_dir, base_port,
                      ["--controllers", "3", "--zones", "a,b", "--brokers-per-zone", "2", "--log-level", "warning"])
    verdict = False
    try:
        cluster.wait_all_ready(120)
        bootstrap = cluster.bootstrap
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for future in admin.create_topics([NewTopic(TOPIC, PARTITIONS)]).values():
            future.result(30)
        producers = Producers(bootstrap)
        consumer = GroupConsumer(bootstrap, use_group=not args.no_group)
        producers.start()
        consumer.start()
        kills = {}
        pauses = {}
        end = time.time() + args.duration
        while time.time() < end:
            time.sleep(rng.uniform(0.5 * args.interval, 1.5 * args.interval))
            candidates = [s for s in cluster.services() if s.get("pid") and ready(s)]
            if not candidates:
                continue
            victim = rng.choice(candidates)
            pause = rng.random() < args.pause_fraction
            try:
                if pause:
                    # A stalled process (GC pause, overloaded host): requests to it time out and are
                    # retried elsewhere, then it wakes up with stale state.
                    seconds = rng.uniform(0.5, 3.0)
                    os.kill(victim["pid"], signal.SIGSTOP)
                    log(f"SIGSTOP {victim['kind']}-{victim['node_id']} for {seconds:.1f} s; acked so far {len(producers.acked)}")
                    time.sleep(seconds)
                    os.kill(victim["pid"], signal.SIGCONT)
                    pauses[victim["kind"]] = pauses.get(victim["kind"], 0) + 1
                    continue
                os.kill(victim["pid"], signal.SIGKILL)
            except ProcessLookupError:
                continue
            kills[victim["kind"]] = kills.get(victim["kind"], 0) + 1
            log(f"SIGKILL {victim['kind']}-{victim['node_id']} (pid {victim['pid']}); acked so far {len(producers.acked)}")
        log("killing stopped; waiting for every service to come back")
        services = cluster.wait_all_ready(120)
        producers.finish()
        log(f"producers done: sent {producers.sent}, acked {len(producers.acked)}, failed deliveries {len(producers.errors)}")
        ends = {}
        probe = Consumer({"bootstrap.servers": bootstrap, "group.id": "chaos-ends"})
        for p in range(PARTITIONS):
            ends[p] = probe.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=30)[1]
        probe.close()
        # The group consumes until it has everything acknowledged (bounded).
        deadline = time.time() + 120
        while time.time() < deadline and not set(producers.acked).issubset(consumer.consumed):
            time.sleep(0.5)
        consumer.finish()

        records = read_all(bootstrap, ends)
        problems = []
        where = {}
        for partition, items in records.items():
            for offset, value in items:
                if value in where:
                    problems.append(f"{value} appears twice: {where[value]} and ({partition}, {offset})")
                where[value] = (partition, offset)
        missing = [v for v in producers.acked if v not in where]
        # librdkafka reports some deliveries without an offset (offset None): presence is checked, not the offset.
        moved = [v for v, at in producers.acked.items() if v in where and at[1] is not None and where[v] != at]
        if missing:
            problems.append(f"{len(missing)} acknowledged records missing, e.g. {missing[:3]}")
        if moved:
            examples = [f"{v} acknowledged at {producers.acked[v]}, found at {where[v]}" for v in moved[:3]]
            problems.append(f"{len(moved)} acknowledged records at another offset, e.g. {examples}")
        for partition, items in records.items():
            last = {}
            for offset, value in items:
                producer, _, sequence = value.split(":")
                if int(sequence) <= last.get(producer, -1):
                    problems.append(f"partition {partition}: {value} at {offset} after sequence {last[producer]}")
                    break
                last[producer] = int(sequence)
        if consumer.backwards:
            problems.append(f"committed offsets moved backwards: {consumer.backwards[:3]}")
        unconsumed = set(producers.acked) - consumer.consumed
        if unconsumed:
            problems.append(f"the group never consumed {len(unconsumed)} acknowledged records")
        restarts = {f"{s['kind']}-{s['node_id']}": s.get("restarts", 0) for s in services}
        print("")
        print("chaos summary")
        print(f"  command: {' '.join(sys.argv)}  (seed {seed})")
        print(f"  kills: " + ", ".join(f"{kind} {count}" for kind, count in sorted(kills.items())) + f" (total {sum(kills.values())})")
        print(f"  pauses (SIGSTOP/SIGCONT): " + (", ".join(f"{kind} {count}" for kind, count in sorted(pauses.items())) or "none"))
        print(f"  restarts seen: {sum(restarts.values())}; all {len(services)} services ready at the end")
        print(f"  records: sent {producers.sent}, acknowledged {len(producers.acked)}, in the topic {len(where)}, consumed by the group {len(consumer.consumed)}")
        ended = time.strftime("%H:%M:%S", time.localtime(producers.longest_gap_end))
        print(f"  longest window without an acknowledged produce: {producers.longest_gap:.2f} s (ended {ended})")
        print(f"  consumer errors seen (retried): {len(consumer.errors)}")
        verdict = not problems
        print(f"  verdict: {'PASS' if verdict else 'FAIL'}")
        for problem in problems[:20]:
            print(f"    {problem}")
    finally:
        cluster.stop()
    sys.exit(0 if verdict else 1)


if __name__ == "__main__":
    main()
