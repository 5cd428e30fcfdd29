#!/usr/bin/env python3
"""Moves partition leadership back and forth between brokers while an idempotent producer writes,
then checks that every acknowledged record is in the topic exactly once, at the offset it was
acknowledged with, in send order, with offsets dense from 0.

    python3 reassign_under_load.py --bootstrap 127.0.0.1:9092 --floe .build/debug/floe --topic moves
"""
import argparse
import os
import signal
import subprocess
import sys
import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

PARTITIONS = 3


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--floe", required=True, help="the floe executable (for `floe admin reassign`)")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--moves", type=int, default=8, help="moves per partition")
    parser.add_argument("--deadline", type=float, default=240)
    args = parser.parse_args()
    signal.signal(signal.SIGALRM, lambda *_: (print("FAIL: deadline exceeded", flush=True), os._exit(3)))
    signal.alarm(int(args.deadline))

    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    for future in admin.create_topics([NewTopic(args.topic, PARTITIONS)]).values():
        future.result(30)
    brokers = sorted(admin.list_topics(timeout=30).brokers)
    if len(brokers) < 2:
        print(f"FAIL: need two brokers, have {brokers}")
        sys.exit(1)

    acked = {}
    failures = []
    lock = threading.Lock()
    stop = threading.Event()

    def delivered(error, message):
        with lock:
            if error is not None:
                failures.append(str(error))
            else:
                acked[message.value().decode()] = (message.partition(), message.offset())

    def produce():
        producer = Producer({"bootstrap.servers": args.bootstrap, "enable.idempotence": True, "linger.ms": 2,
                             "message.timeout.ms": 60000})
        sequence = 0
        while not stop.is_set():
            partition = sequence % PARTITIONS
            try:
                producer.produce(args.topic, value=f"{partition}:{sequence}".encode(), partition=partition, on_delivery=delivered)
                sequence += 1
            except BufferError:
                producer.poll(0.05)
            producer.poll(0)
            time.sleep(0.001)
        producer.flush(60)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    time.sleep(1)
    moves = 0
    for round_ in range(args.moves):
        for partition in range(PARTITIONS):
            target = brokers[(round_ + partition) % len(brokers)]
            result = subprocess.run(
                [args.floe, "admin", "reassign", "--bootstrap", args.bootstrap, "--topic", args.topic,
                 "--partition", str(partition), "--to", str(target)], capture_output=True, text=True, timeout=60)
            if result.returncode != 0:
                print(f"FAIL: reassign {args.topic}-{partition} to {target}: {result.stderr.strip()}")
                sys.exit(1)
            moves += 1
            print(result.stdout.strip(), flush=True)
        time.sleep(0.2)
    stop.set()
    thread.join(90)
    print(f"{moves} moves; acknowledged {len(acked)}; failed deliveries {len(failures)}", flush=True)
    if failures:
        print(f"FAIL: deliveries failed: {failures[:3]}")
        sys.exit(1)

    consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": f"{args.topic}-audit", "enable.auto.commit": False})
    consumer.assign([TopicPartition(args.topic, p, 0) for p in range(PARTITIONS)])
    seen = {p: [] for p in range(PARTITIONS)}
    expected = {p: sum(1 for (q, _) in acked.values() if q == p) for p in range(PARTITIONS)}
    deadline = time.time() + 60
    while time.time() < deadline and any(len(seen[p]) < expected[p] for p in range(PARTITIONS)):
        for message in consumer.consume(num_messages=1000, timeout=1):
            if not message.error():
                seen[message.partition()].append((message.offset(), message.value().decode()))
    consumer.close()
    problems = []
    for partition, items in seen.items():
        offsets = [offset for offset, _ in items]
        if offsets != list(range(len(offsets))):
            problems.append(f"partition {partition}: offsets not dense from 0")
        values = [value for _, value in items]
        if len(set(values)) != len(values):
            problems.append(f"partition {partition}: {len(values) - len(set(values))} duplicates")
        sequences = [int(value.split(":")[1]) for value in values]
        if sequences != sorted(sequences):
            problems.append(f"partition {partition}: records out of send order")
        for offset, value in items:
            at = acked.get(value, (partition, offset))
            # librdkafka reports some deliveries without an offset (None): their presence is checked below.
            if at[0] != partition or (at[1] is not None and at[1] != offset):
                problems.append(f"{value} acknowledged at {acked[value]} but found at {(partition, offset)}")
                break
    found = {value for items in seen.values() for _, value in items}
    missing = [value for value in acked if value not in found]
    if missing:
        problems.append(f"{len(missing)} acknowledged records missing, e.g. {missing[:3]}")
    if problems:
        for problem in problems:
            print(f"FAIL: {problem}")
        sys.exit(1)
    print(f"OK: {len(found)} records, each once, in order, at its acknowledged offset, across {moves} leadership moves")


if __name__ == "__main__":
    main()
