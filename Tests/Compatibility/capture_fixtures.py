#!/usr/bin/env python3
"""Records the Kafka requests real clients send, as golden fixtures for the protocol tests.

Starts `floe-capture` (a small listener that answers just enough of the protocol to keep a
client going and writes every request frame it receives to disk), then drives each client
through three scenarios: produce with every compression codec, consume by assignment, and
join a consumer group. Each client names itself through its client id
(`<client>-<scenario>`), so the listener files frames under that name. After the run the
script writes the records every produce scenario sent to `expected.json`, which the Swift
fixture test compares with what it decodes.

Usage: capture_fixtures.py --capture-bin .build/debug/floe-capture --out DIR [--clients ...]
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
TOPIC = "captures"
GROUP = "capture-group"
BASE_TIMESTAMP = 1_700_000_000_000
DEBIAN_PYTHON = "/usr/bin/python3"


def expected_records(client, codec, with_timestamps=True):
    """Deterministic records for one produce scenario; values grow so batches compress."""
    # kafka-python refuses null header values; it sends an empty one instead.
    empty = "" if client == "kafkapython" else None
    records = []
    for i in range(5):
        records.append({
            "key": f"key-{i}",
            "value": f"{client}-{codec}-value-{i}-" + "floe " * (4 * i + 1),
            "headers": [["trace", f"t{i}"], ["empty", empty]] if i % 2 == 0 else [["trace", f"t{i}"]],
            "timestamp": BASE_TIMESTAMP + i if with_timestamps else None,
        })
    return records


# Each driver runs in a child interpreter so a hung or crashing client cannot stop the run.
CONFLUENT_DRIVER = textwrap.dedent("""
    import json, sys, time
    from confluent_kafka import Consumer, Producer, TopicPartition, OFFSET_BEGINNING
    bootstrap, client_id, scenario, arg = sys.argv[1:5]
    common = {"bootstrap.servers": bootstrap, "client.id": client_id}
    if scenario == "produce":
        producer = Producer({**common, "compression.type": json.loads(arg)["codec"],
                             "linger.ms": 50, "message.timeout.ms": 10000})
        for r in json.loads(arg)["records"]:
            headers = [(k, None if v is None else v.encode()) for k, v in r["headers"]]
            producer.produce("TOPIC", key=r["key"].encode(), value=r["value"].encode(),
                             headers=headers, timestamp=r["timestamp"], partition=0)
        left = producer.flush(10)
        sys.exit(1 if left else 0)
    elif scenario == "consume":
        consumer = Consumer({**common, "group.id": "unused", "enable.auto.commit": False})
        consumer.assign([TopicPartition("TOPIC", 0, OFFSET_BEGINNING)])
        deadline = time.time() + 2
        while time.time() < deadline:
            consumer.poll(0.2)
        consumer.close()
    elif scenario == "group":
        consumer = Consumer({**common, "group.id": "GROUP", "session.timeout.ms": 6000})
        consumer.subscribe(["TOPIC"])
        deadline = time.time() + 3
        while time.time() < deadline:
            consumer.poll(0.2)
""").replace("TOPIC", TOPIC).replace("GROUP", GROUP)

KAFKA_PYTHON_DRIVER = textwrap.dedent("""
    import json, sys, time
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    bootstrap, client_id, scenario, arg = sys.argv[1:5]
    if scenario == "produce":
        codec = json.loads(arg)["codec"]
        producer = KafkaProducer(bootstrap_servers=bootstrap, client_id=client_id,
                                 compression_type=None if codec == "none" else codec,
                                 linger_ms=50, request_timeout_ms=10000)
        for r in json.loads(arg)["records"]:
            headers = [(k, None if v is None else v.encode()) for k, v in r["headers"]]
            producer.send("TOPIC", key=r["key"].encode(), value=r["value"].encode(),
                          headers=headers, timestamp_ms=r["timestamp"], partition=0)
        producer.flush(10)
        producer.close(5)
    elif scenario == "consume":
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, client_id=client_id,
                                 enable_auto_commit=False, request_timeout_ms=10000)
        tp = TopicPartition("TOPIC", 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        consumer.poll(timeout_ms=1500)
        consumer.close()
    elif scenario == "group":
        consumer = KafkaConsumer("TOPIC", bootstrap_servers=bootstrap, client_id=client_id,
                                 group_id="GROUP", request_timeout_ms=10000)
        deadline = time.time() + 3
        while time.time() < deadline:
            consumer.poll(timeout_ms=200)
""").replace("TOPIC", TOPIC).replace("GROUP", GROUP)

AIOKAFKA_DRIVER = textwrap.dedent("""
    import asyncio, json, sys
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    bootstrap, client_id, scenario, arg = sys.argv[1:5]
    async def main():
        if scenario == "produce":
            codec = json.loads(arg)["codec"]
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap, client_id=client_id,
                                        compression_type=None if codec == "none" else codec,
                                        linger_ms=50, request_timeout_ms=10000)
            await producer.start()
            try:
                futures = []
                for r in json.loads(arg)["records"]:
                    headers = [(k, None if v is None else v.encode()) for k, v in r["headers"]]
                    futures.append(await producer.send("TOPIC", key=r["key"].encode(),
                        value=r["value"].encode(), headers=headers,
                        timestamp_ms=r["timestamp"], partition=0))
                await asyncio.gather(*futures)
            finally:
                await producer.stop()
        elif scenario == "consume":
            consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, client_id=client_id,
                                        enable_auto_commit=False, request_timeout_ms=10000)
            await consumer.start()
            tp = TopicPartition("TOPIC", 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            await consumer.getmany(timeout_ms=1500)
            await consumer.stop()
        elif scenario == "group":
            consumer = AIOKafkaConsumer("TOPIC", bootstrap_servers=bootstrap, client_id=client_id,
                                        group_id="GROUP", request_timeout_ms=10000)
            await consumer.start()
            try:
                await asyncio.wait_for(consumer.getmany(timeout_ms=3000), 4)
            except asyncio.TimeoutError:
                pass
            await consumer.stop()
    asyncio.run(main())
""").replace("TOPIC", TOPIC).replace("GROUP", GROUP)


def run_python(interpreter, driver, bootstrap, client_id, scenario, arg, timeout):
    command = [interpreter, "-c", driver, bootstrap, client_id, scenario, arg]
    return run(command, timeout)


def run(command, timeout, stdin=None):
    """Runs a client command; a client still running at the deadline is killed (groups never settle)."""
    process = subprocess.Popen(command, stdin=subprocess.PIPE if stdin is not None else None,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = process.communicate(stdin, timeout=timeout)
        return process.returncode, output
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        return None, output


def drive_kcat(bootstrap, scenario, codec, records):
    client_id = f"kcat-{scenario}" + (f"-{codec}" if scenario == "produce" else "")
    base = ["kcat", "-b", bootstrap, "-X", f"client.id={client_id}"]
    if scenario == "produce":
        # kcat takes one header set for all messages and no per-message timestamps.
        lines = "".join(f"{r['key']}|{r['value']}\n" for r in records)
        command = base + ["-P", "-t", TOPIC, "-p", "0", "-K", "|", "-H", "trace=kcat", "-X", "linger.ms=200"]
        if codec != "none":
            command += ["-z", codec]
        return client_id, run(command, 15, stdin=lines)
    if scenario == "consume":
        return client_id, run(base + ["-C", "-t", TOPIC, "-p", "0", "-o", "beginning", "-e"], 10)
    return client_id, run(base + ["-G", GROUP, TOPIC], 4)


CLIENTS = {
    "confluent": (sys.executable, CONFLUENT_DRIVER),
    "rdkafka202": (DEBIAN_PYTHON, CONFLUENT_DRIVER),
    "kafkapython": (sys.executable, KAFKA_PYTHON_DRIVER),
    "aiokafka": (sys.executable, AIOKAFKA_DRIVER),
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, process, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"floe-capture exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("floe-capture did not start listening")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capture-bin", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--clients", default="kcat," + ",".join(CLIENTS))
    args = parser.parse_args()

    out = os.path.abspath(args.out)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    listener = subprocess.Popen([args.capture_bin, "--listen", bootstrap, "--out", out])
    failures = []
    try:
        wait_for_port(port, listener)
        for client in args.clients.split(","):
            for scenario in ["produce", "consume", "group"]:
                for codec in (CODECS if scenario == "produce" else ["none"]):
                    with_ts = client != "kcat"
                    records = expected_records(client, codec, with_ts)
                    if client == "kcat":
                        client_id, (code, output) = drive_kcat(bootstrap, scenario, codec, records)
                        for r in records:
                            r["headers"] = [["trace", "kcat"]]
                    else:
                        interpreter, driver = CLIENTS[client]
                        client_id = f"{client}-{scenario}" + (f"-{codec}" if scenario == "produce" else "")
                        arg = json.dumps({"codec": codec, "records": records})
                        code, output = run_python(interpreter, driver, bootstrap, client_id, scenario, arg, 20)
                    print(f"{client_id}: exit {code}")
                    if scenario == "produce":
                        if code != 0:
                            failures.append(f"{client_id} exited {code}:\n{output[-2000:]}")
                        folder = os.path.join(out, client_id)
                        os.makedirs(folder, exist_ok=True)
                        with open(os.path.join(folder, "expected.json"), "w") as f:
                            json.dump({"codec": codec, "records": records}, f, indent=1, sort_keys=True)
    finally:
        listener.send_signal(signal.SIGTERM)
        try:
            listener.wait(10)
        except subprocess.TimeoutExpired:
            listener.kill()
    if failures:
        print("\n\n".join(failures), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
