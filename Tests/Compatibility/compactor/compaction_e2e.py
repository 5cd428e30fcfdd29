#!/usr/bin/env python3
"""The compactor end to end on real S3 (SeaweedFS with signature checking), looking into the bucket.

Longer than 400 lines on purpose: two scenarios that share the cluster, bucket and read-back steps.

merge      a topic of 50 partitions takes 100,000 keyed records (confluent-kafka, every value
           different) in 8 rounds, each split before the next, so small stream objects pile up;
           once the compactor has no stream-set object left and a pass finds nothing more to
           do, the bucket must hold stream objects only, one stream each, covering every
           partition's offsets without gaps or overlaps, at most 3 per partition with data; then
           every record is read back at its acknowledged offset, byte for byte, none missing, none extra.
retention  three topics written together, uncompressed so each object's blocks can be told apart
           by topic: one with retention.ms of a few seconds, one that is then deleted, one kept.
           ListOffsets(earliest) of the first must reach its end and its objects leave the bucket;
           the deleted topic's objects must stay for the grace period, then go (counted in
           /status deleted_objects); what stays is the kept topic's data, read back whole.

The brokers run without a log cache, so what is read back comes from the objects in the bucket.

    python3 compaction_e2e.py merge --floe .build/debug/floe
    python3 compaction_e2e.py retention --floe .build/debug/floe

Over 400 lines: two scenarios that share the cluster set-up, the compactor probes and the
read-back check; the bucket's signing and object-format reading live in bucket.py beside it.
"""
import argparse
import collections
import json
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import time
import traceback
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "Support"))
sys.path.insert(0, os.path.join(HERE, "..", "broker"))
sys.path.insert(0, os.path.join(HERE, "..", "clients"))
from floedev import FloeDev, free_base_port  # noqa: E402
from s3_end_to_end import ACCESS_KEY, SECRET_KEY, start_seaweedfs  # noqa: E402
from common import Mismatch, expect, step  # noqa: E402
from bucket import Bucket, survey  # noqa: E402
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

BUCKET = "floe-compactor-e2e"
INTERVAL_MS, GRACE_MS = 1000, 2000
MERGE_TOPIC, MERGE_PARTITIONS, MERGE_RECORDS, MERGE_ROUNDS = "compaction-merge", 50, 100_000, 8
# Compaction keeps at most mergeMinObjects - 1 = 3 small stream objects per partition unmerged.
OBJECTS_PER_STREAM = 3
RETENTION_MS = 6000
RETAINED, DOOMED, KEPT = "compaction-retention", "compaction-doomed", "compaction-kept"
SMALL_PARTITIONS, SMALL_RECORDS = 3, 3000


class Deadline(Exception):
    pass


def wait_until(what, timeout, probe, every=0.5):
    """Calls `probe()` -> (done, note) until done, at most `timeout` seconds and timeout/every + 1 calls."""
    deadline, note = time.monotonic() + timeout, ""
    for _ in range(int(timeout / every) + 1):
        done, note = probe()
        if done:
            return note
        if time.monotonic() >= deadline:
            break
        time.sleep(every)
    raise Mismatch(f"timed out after {timeout:.0f} s waiting for {what}: {note}")


def admin_get(admin, path):
    with urllib.request.urlopen(f"http://{admin}{path}", timeout=5) as answer:
        return answer.read().decode()


def metrics_of(admin):
    """A service's Prometheus samples: {'name{labels}': value}."""
    values = {}
    for line in admin_get(admin, "/metrics").splitlines():
        match = re.match(r"^([a-z_]+)(\{[^}]*\})?\s+(\S+)$", line)
        if match:
            values[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return values


def object_gets(dev):
    """GETs the brokers sent to the object store for reads of committed data (published once a second)."""
    return sum(metrics_of(s["admin"]).get("floe_broker_object_gets", 0) for s in dev.services() if s["kind"] == "broker")


class CompactorProbe:
    """The compactor's admin port: /status totals and /metrics gauges."""

    def __init__(self, dev):
        compactors = [s for s in dev.services() if s["kind"] == "compactor"]
        expect(len(compactors) == 1, f"cluster.json lists {len(compactors)} compactors, want 1")
        self.admin = compactors[0]["admin"]
        self.passes_at_change, self.totals = 0, None

    def status(self):
        return json.loads(admin_get(self.admin, "/status"))

    def metrics(self):
        return metrics_of(self.admin)

    def settled(self):
        """Done once no stream-set or destroyed object is left and two passes changed no total."""
        status, metrics = self.status(), self.metrics()
        totals = tuple(status[k] for k in ("split_sources", "merged_sources", "outputs", "trims", "deleted_objects"))
        if totals != self.totals:
            self.totals, self.passes_at_change = totals, status["passes"]
        stream_sets = metrics.get('floe_compactor_objects{kind="stream_set"}')
        destroyed = metrics.get("floe_compactor_destroyed_objects")
        idle = status["passes"] - self.passes_at_change
        note = f"stream-set objects {stream_sets}, destroyed {destroyed}, passes {status['passes']} ({idle} without work), totals {totals}"
        return stream_sets == 0 and destroyed == 0 and idle >= 2, note

    def summary(self):
        metrics = self.metrics()
        requests = {k.split('"')[1]: int(v) for k, v in metrics.items() if k.startswith("floe_compactor_store_requests_total{")}
        status = {k: v for k, v in self.status().items() if k not in ("node_id", "kind", "zone", "incarnation")}
        return f"status {status}; store requests {requests}; lag {metrics.get('floe_compactor_lag_seconds')} s"


def counts(objects):
    by_kind = collections.Counter(o["kind"] for o in objects.values())
    return f"{len(objects)} objects ({', '.join(f'{n} {k}' for k, n in sorted(by_kind.items())) or 'none'}), " \
           f"{sum(o['size'] for o in objects.values())} bytes"


def produce(bootstrap, records, compression):
    """Produces (topic, key, value) records; returns {(topic, partition, offset): (key, value)} from the delivery reports."""
    acked, failures = {}, []

    def delivered(error, message):
        if error is not None:
            failures.append(str(error))
            return
        at = (message.topic(), message.partition(), message.offset())
        if at in acked:
            failures.append(f"two records acknowledged at {at}")
        acked[at] = (message.key(), message.value())

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "compression.type": compression,
                         "linger.ms": 20, "message.timeout.ms": 120000})
    for topic, key, value in records:
        for _ in range(1000):  # a full local queue drains as deliveries come back
            try:
                producer.produce(topic, key=key, value=value, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.1)
        else:
            raise Mismatch("the producer's queue did not drain in 100 s")
        producer.poll(0)
    left = producer.flush(120)
    expect(left == 0 and not failures and len(acked) == len(records),
           f"acknowledged {len(acked)} of {len(records)} ({left} still queued); failures {failures[:3]}")
    return acked


def read_back(dev, topic, partitions, acked, timeout=180):
    """Reads every partition from the beginning: each record byte-identical at its acknowledged
    offset, none missing, none extra. The brokers run without a log cache, so the records must come
    from the objects in the bucket; the brokers' object GETs must grow. Returns how many were read."""
    bootstrap, gets_before = dev.bootstrap, object_gets(dev)
    want = {(p, o): kv for (t, p, o), kv in acked.items() if t == topic}
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-check", "enable.auto.commit": False,
                         "enable.partition.eof": True, "auto.offset.reset": "error"})
    try:
        ends = {}
        for p in range(partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
            expect(low == 0, f"{topic}-{p}: log start {low}, want 0 (nothing of it may expire)")
            ends[p] = high
        expect(sum(ends.values()) == len(want), f"{topic}: high watermarks add up to {sum(ends.values())}, {len(want)} acknowledged")
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        seen, at_end = set(), {p for p, end in ends.items() if end == 0}
        deadline = time.monotonic() + timeout
        while len(at_end) < partitions and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=1000, timeout=1):
                error = message.error()
                if error is not None:
                    expect(error.code() == KafkaError._PARTITION_EOF, f"{topic}: fetch error {error}")
                    if message.offset() >= ends[message.partition()]:
                        at_end.add(message.partition())
                    continue
                at = (message.partition(), message.offset())
                expect(at in want, f"{topic}-{at[0]}: a record at offset {at[1]} that was never acknowledged there")
                expect(at not in seen, f"{topic}-{at[0]}: offset {at[1]} delivered twice")
                expect((message.key(), message.value()) == want[at],
                       f"{topic}-{at[0]} offset {at[1]}: got key {message.key()[:40]!r} value {message.value()[:40]!r}, "
                       f"want {want[at][0][:40]!r} {want[at][1][:40]!r}")
                seen.add(at)
        missing = sorted(set(want) - seen)
        expect(not missing, f"{topic}: {len(missing)} acknowledged records not read back, e.g. {missing[:5]}")
        wait_until("the brokers' object GETs to grow", 10, lambda: (object_gets(dev) > gets_before, f"{gets_before} before"))
        step(f"{topic}: {len(seen)} records read, {object_gets(dev) - gets_before:.0f} object GETs by the brokers")
        return len(seen)
    finally:
        consumer.close()


def watermarks(bootstrap, topic, partitions):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-offsets"})
    try:
        return [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False) for p in range(partitions)]
    finally:
        consumer.close()


def check_layout(objects, partition_ends):
    """After compaction: stream objects only, one stream each, each stream's blocks covering
    0..end without gap or overlap, and few objects per stream. Returns the number of streams."""
    kinds = collections.Counter(o["kind"] for o in objects.values())
    expect(set(kinds) == {"stream"}, f"after compaction the bucket still holds {dict(kinds)}")
    blocks = collections.defaultdict(list)
    for key, o in objects.items():
        streams = {b["stream"] for b in o["blocks"]}
        expect(len(streams) == 1, f"stream object {key} holds blocks of streams {sorted(streams)}")
        blocks[streams.pop()] += [(b["first"], b["end"], key) for b in o["blocks"]]
    ends = []
    for stream, ranges in sorted(blocks.items()):
        ranges.sort()
        expect(ranges[0][0] == 0, f"stream {stream} starts at offset {ranges[0][0]} in {ranges[0][2]}")
        for (_, end, key), (first, _, next_key) in zip(ranges, ranges[1:]):
            expect(first == end, f"stream {stream}: {key} ends at {end}, {next_key} starts at {first} (a gap or an overlap)")
        ends.append(ranges[-1][1])
    unmatched = collections.Counter(partition_ends) - collections.Counter(ends)
    expect(not unmatched, f"no stream in the bucket ends where these partitions end: {dict(unmatched)}")
    bound = OBJECTS_PER_STREAM * len(blocks)
    expect(len(objects) <= bound, f"{len(objects)} objects for {len(blocks)} streams with data, want at most {bound}")
    return len(blocks)


def merge(dev, compactor, bucket):
    bootstrap = dev.bootstrap
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(MERGE_TOPIC, MERGE_PARTITIONS)])[MERGE_TOPIC].result(30)
    rng = random.Random(20260501)
    records = [(MERGE_TOPIC, b"key-%d" % i, b"%d:" % i + rng.randbytes(rng.randrange(20, 200))) for i in range(MERGE_RECORDS)]
    # In rounds, each split before the next is written, so every partition gets several small
    # stream objects and merging has work to do.
    acked, peak, started = {}, 0, time.monotonic()
    per_round = MERGE_RECORDS // MERGE_ROUNDS
    for number in range(MERGE_ROUNDS):
        split_before = compactor.status()["split_sources"]
        acked.update(produce(bootstrap, records[number * per_round:(number + 1) * per_round], "lz4"))

        def split():
            status, metrics = compactor.status(), compactor.metrics()
            stream_sets = metrics.get('floe_compactor_objects{kind="stream_set"}')
            return status["split_sources"] > split_before and stream_sets == 0, \
                f"split_sources {status['split_sources']} (was {split_before}), stream-set objects {stream_sets}"

        wait_until(f"round {number + 1}'s stream-set objects to be split", 60, split, every=0.2)
        listed = bucket.list()
        peak = max(peak, len(listed))
        step(f"round {number + 1}/{MERGE_ROUNDS}: {len(acked)} records acknowledged and split; {len(listed)} objects listed")
    per_partition = collections.Counter(p for _, p, _ in acked)
    step(f"{len(acked)} records acknowledged in {time.monotonic() - started:.1f} s on {len(per_partition)} partitions "
         f"({min(per_partition.values())}..{max(per_partition.values())} each); at most {peak} objects listed meanwhile")
    expect(len(per_partition) == MERGE_PARTITIONS, f"records landed on {len(per_partition)} partitions, want {MERGE_PARTITIONS}")
    before = survey(bucket)
    step(f"bucket after the last round: {counts(before)}")
    started = time.monotonic()
    note = wait_until("the compactor to settle", 300, compactor.settled)
    settle_s = time.monotonic() - started
    step(f"compactor settled after {settle_s:.1f} s: {note}")
    after = survey(bucket)
    step(f"bucket after compaction: {counts(after)}")
    ends = [high for _, high in watermarks(bootstrap, MERGE_TOPIC, MERGE_PARTITIONS)]
    streams = check_layout(after, ends)
    merged = compactor.status()["merged_sources"]
    expect(merged > 0, "the compactor merged no stream objects")
    started = time.monotonic()
    read = read_back(dev, MERGE_TOPIC, MERGE_PARTITIONS, acked)
    step(f"read back {read} records byte for byte at their offsets in {time.monotonic() - started:.1f} s")
    return (f"merge: {len(acked)} records on {MERGE_PARTITIONS} partitions in {MERGE_ROUNDS} rounds; at most {peak} objects "
            f"listed; bucket {counts(before)} -> {counts(after)} "
            f"for {streams} streams with data (bound {OBJECTS_PER_STREAM * streams}); settled in {settle_s:.1f} s; "
            f"all read back identical. Compactor: {compactor.summary()}")


def marked(topic):
    return f"<{topic}>".encode()


def holding(objects, topic):
    return sorted(k for k, o in objects.items() if topic in o["topics"])


def retention(dev, compactor, bucket):
    bootstrap = dev.bootstrap
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(RETAINED, SMALL_PARTITIONS, config={"retention.ms": str(RETENTION_MS)}),
                                   NewTopic(DOOMED, SMALL_PARTITIONS), NewTopic(KEPT, SMALL_PARTITIONS)])
    for future in futures.values():
        future.result(30)
    markers = {t: marked(t) for t in (RETAINED, DOOMED, KEPT)}
    records = [(t, b"%s key-%d" % (markers[t], i), b"%s value-%d " % (markers[t], i) + b"x" * (i % 97))
               for i in range(SMALL_RECORDS) for t in (RETAINED, DOOMED, KEPT)]
    acked = produce(bootstrap, records, "none")
    produced_at = time.monotonic()
    step(f"{len(acked)} records acknowledged on {RETAINED} (retention.ms={RETENTION_MS}), {DOOMED} and {KEPT}")
    ends = {t: [0] * SMALL_PARTITIONS for t in markers}
    for t, p, o in acked:
        ends[t][p] = max(ends[t][p], o + 1)

    def every_topic_stored():
        objects = survey(bucket, markers)
        held = {t: len(holding(objects, t)) for t in markers}
        return all(held.values()), (objects, held)

    before, held = wait_until("objects of all three topics in the bucket", 20, every_topic_stored, every=0.2)
    step(f"bucket {time.monotonic() - produced_at:.1f} s after producing: {counts(before)}; objects holding each topic {held}")

    def retention_done():
        offsets = watermarks(bootstrap, RETAINED, SMALL_PARTITIONS)
        left = holding(survey(bucket, markers), RETAINED)
        done = all(low == high == end for (low, high), end in zip(offsets, ends[RETAINED])) and not left
        return done, f"(earliest, latest) {offsets}, want both at {ends[RETAINED]}; {len(left)} objects still hold {RETAINED}"

    wait_until(f"{RETAINED} to expire and leave the bucket", 120, retention_done)
    expired_s = time.monotonic() - produced_at
    step(f"{RETAINED}: log start at the end of every partition and no object of it in the bucket "
         f"{expired_s:.1f} s after producing")
    note = wait_until("the compactor to settle", 120, compactor.settled)
    settled = survey(bucket, markers)
    doomed = holding(settled, DOOMED)
    deleted_before = compactor.status()["deleted_objects"]
    step(f"settled ({note}): {counts(settled)}; {len(doomed)} objects hold {DOOMED}; deleted_objects {deleted_before}")
    expect(doomed, f"no object holds {DOOMED} before it is deleted")
    expect(all(settled[k]["topics"] == {DOOMED} for k in doomed), f"objects hold {DOOMED} with other topics after compaction")
    admin.delete_topics([DOOMED])[DOOMED].result(30)
    deleted_at = time.monotonic()
    listed = bucket.list()
    listed_s = time.monotonic() - deleted_at
    early = [k for k in doomed if k not in listed]
    step(f"{DOOMED} deleted; {len(doomed) - len(early)} of its {len(doomed)} objects still listed {listed_s:.2f} s later")
    if listed_s < GRACE_MS / 2000:  # only a listing well inside the grace period says anything
        expect(not early, f"{len(early)} objects of {DOOMED} gone {listed_s:.2f} s after the deletion, "
                          f"within the {GRACE_MS} ms grace period: {early[:3]}")

    def doomed_gone():
        status = compactor.status()
        left = [k for k in doomed if k in bucket.list()]
        deleted = status["deleted_objects"] - deleted_before
        return not left and deleted >= len(doomed), f"{len(left)} objects of {DOOMED} listed; deleted_objects +{deleted}"

    wait_until(f"{DOOMED}'s objects to be deleted", 60, doomed_gone)
    gone_s = time.monotonic() - deleted_at
    expect(gone_s >= GRACE_MS / 1000 * 0.9, f"{DOOMED}'s objects were deleted {gone_s:.2f} s after the topic, before the grace period")
    after = survey(bucket, markers)
    foreign = {k: sorted(o["topics"]) for k, o in after.items() if o["topics"] - {KEPT}}
    expect(not foreign, f"objects still hold deleted or expired data: {foreign}")
    kept = holding(after, KEPT)
    expect(kept, f"no object holds {KEPT} any more")
    read = read_back(dev, KEPT, SMALL_PARTITIONS, acked)
    step(f"{DOOMED}'s objects deleted {gone_s:.1f} s after the topic; bucket {counts(after)}, {len(kept)} of them {KEPT}'s; "
         f"{read} records of {KEPT} read back identical")
    return (f"retention: bucket {counts(before)} -> {counts(after)}; {RETAINED} (retention.ms={RETENTION_MS}) gone "
            f"{expired_s:.1f} s after producing; {len(doomed)} objects of {DOOMED} deleted {gone_s:.1f} s after the "
            f"topic (grace {GRACE_MS} ms); {KEPT} intact in {len(kept)} objects. Compactor: {compactor.summary()}")


def log_tail(path, lines=40):
    try:
        with open(path, errors="replace") as handle:
            return "".join(handle.readlines()[-lines:])
    except OSError as error:
        return f"({error})"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=["merge", "retention"])
    parser.add_argument("--floe", required=True)
    parser.add_argument("--deadline", type=float, default=420, help="seconds before the run fails")
    parser.add_argument("--keep", action="store_true", help="keep the data directory (logs, bucket) after a failure")
    args = parser.parse_args()

    def expired(*_):
        raise Deadline(f"deadline of {args.deadline:.0f} s exceeded")

    signal.signal(signal.SIGALRM, expired)
    signal.alarm(int(args.deadline))
    root = tempfile.mkdtemp(prefix=f"floe-compactor-{args.scenario}-")
    weed_dir, data_dir = os.path.join(root, "weed"), os.path.join(root, "dev")
    os.makedirs(weed_dir)
    weed, dev, failed = None, None, True
    try:
        weed, endpoint = start_seaweedfs(weed_dir)
        store = f"s3://{BUCKET}?endpoint={endpoint}&region=us-east-1"
        environment = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
        dev = FloeDev(args.floe, data_dir, free_base_port(),
                      ["--object-store", store, f"--compactor-arg=--interval-ms={INTERVAL_MS}",
                       f"--compactor-arg=--delete-grace-ms={GRACE_MS}",
                       "--compactor-arg=--retention-check-interval-ms=0", "--broker-arg=--log-cache-bytes=0"],
                      environment=environment)
        dev.wait_all_ready(90)
        step(f"cluster up on {dev.bootstrap} with {store}")
        compactor = CompactorProbe(dev)
        bucket = Bucket(endpoint, BUCKET, ACCESS_KEY, SECRET_KEY)
        summary = (merge if args.scenario == "merge" else retention)(dev, compactor, bucket)
        failed = False
        print(f"OK: {summary}", flush=True)
    except Exception as error:  # a client or cluster error fails the run like a mismatch
        if not isinstance(error, (Mismatch, Deadline)):
            traceback.print_exc()
        print(f"--- compactor log ---\n{log_tail(os.path.join(data_dir, 'logs', 'compactor-401.log'))}", flush=True)
        print(f"FAIL: {args.scenario}: {error}", flush=True)
        sys.exit(1)
    finally:
        signal.alarm(0)
        if dev is not None:
            dev.stop()
        if weed is not None:
            weed.kill()
            weed.wait()
        if failed and args.keep:
            print(f"(data kept in {root})", flush=True)
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
