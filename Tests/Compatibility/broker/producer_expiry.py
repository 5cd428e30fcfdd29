#!/usr/bin/env python3
"""An idempotent producer silent for longer than the broker's --producer-id-expiration-ms is
forgotten: before the expiry a batch that skips sequences is refused (the producer is known), after
it the same batch is accepted as from a new producer. Speaks Produce v3 on a raw socket so the
producer id and sequences are exactly the ones chosen here.

    python3 producer_expiry.py --bootstrap 127.0.0.1:9092 --topic expiry --expiry-ms 1000
"""
import argparse
import socket
import struct
import sys
import time

from confluent_kafka.admin import AdminClient, NewTopic
from kafka.record.default_records import DefaultRecordBatchBuilder

NONE, NOT_LEADER_OR_FOLLOWER, UNKNOWN_TOPIC_OR_PARTITION = 0, 6, 3
PRODUCER_ID, EPOCH = 4_242_424, 0


def kafka_string(text):
    data = text.encode()
    return struct.pack(">h", len(data)) + data


class RawProducer:
    def __init__(self, host, port, topic):
        self.socket = socket.create_connection((host, port), timeout=10)
        self.topic = topic
        self.correlation = 0

    def produce(self, sequence, value):
        """Sends one single-record batch of PRODUCER_ID at `sequence`; returns (error, base offset)."""
        builder = DefaultRecordBatchBuilder(
            magic=2, compression_type=0, is_transactional=False, producer_id=PRODUCER_ID,
            producer_epoch=EPOCH, base_sequence=sequence, batch_size=1 << 20)
        builder.append(0, int(time.time() * 1000), None, value, [])
        batch = bytes(builder.build())
        self.correlation += 1
        body = struct.pack(">hhi", 0, 3, self.correlation) + kafka_string("producer-expiry") + struct.pack(">h", -1)
        body += struct.pack(">hi", -1, 10_000) + struct.pack(">i", 1) + kafka_string(self.topic)
        body += struct.pack(">ii", 1, 0) + struct.pack(">i", len(batch)) + batch
        self.socket.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", self.read(4))[0]
        response = self.read(size)
        correlation, topics = struct.unpack(">ii", response[:8])
        assert correlation == self.correlation and topics == 1, response
        at = 8 + 2 + struct.unpack(">h", response[8:10])[0]
        partitions, partition, error, base = struct.unpack(">iihq", response[at:at + 18])
        assert partitions == 1 and partition == 0, response
        return error, base

    def read(self, count):
        data = b""
        while len(data) < count:
            chunk = self.socket.recv(count - len(data))
            if not chunk:
                raise ConnectionError("broker closed the connection")
            data += chunk
        return data


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--expiry-ms", type=int, required=True)
    args = parser.parse_args()
    host, port = args.bootstrap.split(",")[0].rsplit(":", 1)

    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    admin.create_topics([NewTopic(args.topic, num_partitions=1, replication_factor=1)])[args.topic].result(30)
    producer = RawProducer(host, int(port), args.topic)

    # The new partition's leader may need a moment: retriable errors are retried, bounded.
    deadline = time.monotonic() + 30
    while True:
        error, base = producer.produce(0, b"first")
        if error == NONE or time.monotonic() > deadline:
            break
        assert error in (NOT_LEADER_OR_FOLLOWER, UNKNOWN_TOPIC_OR_PARTITION), f"first batch: error {error}"
        time.sleep(0.05)
    assert error == NONE and base == 0, f"first batch: error {error}, offset {base}"
    remembered_since = time.monotonic()

    # Sequence 5 skips 1..4: refused while the producer is remembered.
    error, _ = producer.produce(5, b"gap")
    refused_after = time.monotonic() - remembered_since
    if refused_after * 1000 < args.expiry_ms:
        assert error == NOT_LEADER_OR_FOLLOWER, f"a sequence gap from a remembered producer got error {error}"

    # Retried until the producer is forgotten (bounded): then the same batch is a new producer's.
    deadline = time.monotonic() + args.expiry_ms / 1000 + 30
    attempts = 0
    while error != NONE and time.monotonic() < deadline:
        assert error == NOT_LEADER_OR_FOLLOWER, f"gap batch: error {error}"
        time.sleep(0.1)
        attempts += 1
        error, base = producer.produce(5, b"gap")
    accepted_after = time.monotonic() - remembered_since
    assert error == NONE, f"the producer was never forgotten ({attempts} attempts over {accepted_after:.1f} s)"
    assert base == 1, f"accepted at offset {base}, expected 1"
    assert accepted_after * 1000 >= args.expiry_ms, f"forgotten after {accepted_after:.2f} s, before the {args.expiry_ms} ms expiry"
    # A retry of what was just accepted is still recognised: the producer is known again.
    error, again = producer.produce(5, b"gap")
    assert error == NONE and again == 1, f"retry of the accepted batch: error {error}, offset {again}"
    print(f"refused while remembered; accepted {accepted_after:.2f} s after its last batch "
          f"(expiry {args.expiry_ms} ms, {attempts} retries)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
