#!/usr/bin/env python3
"""Consumer-group churn with confluent-kafka (librdkafka) against a Floe cluster, with either group
protocol: the classic one (JoinGroup, SyncGroup, Heartbeat) or KIP-848's consumer protocol
(ConsumerGroupHeartbeat; librdkafka's `group.protocol=consumer`).

Longer than 400 lines on purpose: one benchmark and test, whose producer, member processes,
churn schedule and checks share the run's records and read best in one file.

Benchmark: against a running `floe dev` cluster, run
`python3 Tests/Compatibility/groups/group_churn.py --bootstrap 127.0.0.1:39592 --protocol classic`
and then the same with `--protocol consumer`, the second on brokers started with
`--broker-arg=--group-consumer-session-timeout-ms=6000 --broker-arg=--group-consumer-heartbeat-interval-ms=500`
so that both protocols notice a killed member after 6 s and heartbeat every 0.5 s (classic
members set session.timeout.ms=6000 and heartbeat.interval.ms=500 themselves; consumer-protocol
members may not, the broker decides). Keep --seed equal across the two runs: the schedule of
event kinds and victims then is the same. Each run prints a table and, just before "done", a
`{"check": "summary", ...}` line with the pause per kind of event (p50 and max, seconds), the
records, duplicates and commits; that line is what BENCHMARKS.md quotes.

    group_churn.py --bootstrap B --protocol consumer|classic [--topic T] [--partitions 24]
                   [--consumers 6] [--duration 60] [--seed N] [--assignor NAME] [--json]

What a run does: it creates the topic; an idempotent producer (acks=all) writes at a steady
--rate, round-robin over the partitions, each value the record's sequence number, and every
acknowledged (partition, offset, sequence) is remembered. --consumers members of one group run as
child processes of this script (`group_churn.py member ...`), so they can be SIGKILLed. A member
consumes with enable.auto.commit=false and, after each batch, commits synchronously the offsets
after what it processed; it writes every record it processed and every commit that succeeded as a
line to its own file, flushed per line, so a killed member leaves its record behind. Once the
group consumes, a churn phase of --duration seconds (longer, up to 1.5 times, until each kind has
happened twice) runs events drawn from --seed: a new member joins (is started), a member leaves
(SIGTERM: it finishes its batch, commits and closes, which leaves the group), or a member is
SIGKILLed, keeping between consumers/2 and --consumers alive. The next event comes 1-3 s (seeded)
after the group recovered from the last one (below), and at most 15 s after it. Then the producer
stops, the members carry on until every acknowledged record was consumed and the group's
committed offsets reach the end of every partition (bounded), and every member is stopped.

Checks (one JSON line each; the run exits non-zero if any failed):
  * every acknowledged record was consumed at least once (duplicates are allowed and counted),
    each at the partition and offset it was acknowledged with;
  * the group's committed offsets, sampled from outside every 0.5 s (OffsetFetch by a consumer outside the group),
    never go below an earlier sample of the same partition, and each member's own successful
    commits never go backwards per partition;
  * after the run the committed offsets reach the end of every partition;
  * each kind of event happened at least twice, and every member that was asked to leave exited
    cleanly.

Pause of an event. Event times are when the script acted: started the new process (join), sent
SIGTERM (leave) or SIGKILL (kill). Event k's window runs from its time t_k to 1 s before the next
event (for the last one, to 1 s before the producer stopped). Its pause is the longest end-to-end
delay, first delivery to any member minus the time the producer sent it, of any acknowledged record
sent in the window: how long consumption of the slowest partition was interrupted. (Measuring from
t_k until every partition delivered some record sent after t_k would miss interruptions that begin
a moment after the event, as when members keep fetching until a heartbeat tells them of the
rebalance.) Outside events that delay is the pipeline's latency, reported as `latency_p50_s` for
comparison. Event times and members' line stamps are CLOCK_MONOTONIC, which on Linux is one clock
for every process, so they compare across processes.

The group has "recovered" from an event (for the schedule only) once 3 s passed and every record
sent from the event until 1 s ago has been delivered.
"""
import argparse
import bisect
import faulthandler
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

KINDS = ("join", "leave", "kill")
REQUIRED_PER_KIND = 2
# The schedule's view of recovery: records sent up to LAG_S ago must have arrived, and at least
# RECOVERY_MIN_S must have passed (a join's rebalance starts only at the members' next heartbeat).
LAG_S = 1.0
RECOVERY_MIN_S = 3.0
MAX_GAP_S = 15.0
# Records sent this close to the next event may be held up by it, so they count for neither.
WINDOW_GUARD_S = 1.0
LEAVE_EXIT_S = 30.0
# How often the script reads the members' files: other processes', so it polls them.
TICK_S = 0.1
SAMPLE_EVERY_S = 0.5

now = time.monotonic


def member_config(bootstrap, protocol, group, assignor):
    """A member's consumer settings. With the consumer protocol the broker decides the session
    timeout, heartbeat interval and (unless group.remote.assignor names one) the assignor;
    librdkafka refuses the classic settings for them."""
    config = {
        "bootstrap.servers": bootstrap, "group.id": group, "group.protocol": protocol,
        "enable.auto.commit": False, "auto.offset.reset": "earliest",
    }
    if protocol == "classic":
        config.update({"session.timeout.ms": 6000, "heartbeat.interval.ms": 500})
        if assignor:
            config["partition.assignment.strategy"] = assignor
    elif assignor:
        config["group.remote.assignor"] = assignor
    return config


def member(argv):
    """One group member (a child process): consumes, commits after each batch, logs both."""
    parser = argparse.ArgumentParser(prog="group_churn.py member")
    for flag in ("--bootstrap", "--protocol", "--topic", "--group", "--out"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--assignor")
    parser.add_argument("--lifetime", type=float, required=True, help="seconds before it stops on its own")
    args = parser.parse_args(argv)
    parent = os.getppid()
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    # A parent may have started this script with SIGTERM blocked (the mask is inherited over exec).
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    # Line-buffered: each line reaches the file at once, so a SIGKILL loses at most the line being written.
    with open(args.out, "w", buffering=1) as out:
        def note(kind, *fields):
            out.write(" ".join([kind, f"{now():.6f}", *map(str, fields)]) + "\n")

        def listed(partitions):
            return ",".join(str(tp.partition) for tp in partitions) or "-"

        consumer = Consumer(member_config(args.bootstrap, args.protocol, args.group, args.assignor))
        consumer.subscribe([args.topic], on_assign=lambda _, ps: note("A", listed(ps)),
                           on_revoke=lambda _, ps: note("R", listed(ps)), on_lost=lambda _, ps: note("L", listed(ps)))
        note("S")
        end = now() + args.lifetime
        # The parent going away (its own deadline, a kill) ends the member too.
        while not stopping.is_set() and os.getppid() == parent and now() < end:
            processed = {}
            for message in consumer.consume(num_messages=500, timeout=0.2):
                error = message.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        note("E", error.name())
                    continue
                note("M", message.partition(), message.offset(), message.value().decode())
                processed[message.partition()] = message.offset() + 1
            if not processed:
                continue
            offsets = [TopicPartition(args.topic, p, o) for p, o in sorted(processed.items())]
            try:
                for tp in consumer.commit(offsets=offsets, asynchronous=False):
                    if tp.error is None:
                        note("C", tp.partition, tp.offset)
                    else:
                        note("F", tp.partition, tp.error.name())
            except KafkaException as error:
                note("F", "-", error.args[0].name())
        if os.getppid() != parent:
            os._exit(3)  # nobody reads on; close() could wait long on a cluster that is gone too
        consumer.close()
        note("X")


class Production:
    """The idempotent producer on its own thread at a steady rate; each record's send time and
    acknowledgement are remembered by its sequence number (its value)."""

    def __init__(self, bootstrap, topic, partitions, rate):
        self.bootstrap, self.topic, self.partitions, self.rate = bootstrap, topic, partitions, rate
        self.sent = []  # sequence -> send time; appended by the producer thread only
        self.acked = {}  # sequence -> (partition, offset)
        self.failed = {}  # sequence -> error
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.stopped_at = None
        self.unflushed = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def delivered(self, error, message):
        sequence = int(message.value())
        with self.lock:
            if error is not None:
                self.failed[sequence] = error.name()
            else:
                self.acked[sequence] = (message.partition(), message.offset())

    def run(self):
        producer = Producer({
            "bootstrap.servers": self.bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5,
            "message.timeout.ms": 60000,
        })
        due = now()
        while not self.stop.is_set():
            wait = due - now()
            if wait > 0:
                producer.poll(wait)  # serves delivery reports while it paces
                continue
            sequence = len(self.sent)
            try:
                producer.produce(self.topic, value=str(sequence).encode(), partition=sequence % self.partitions,
                                 on_delivery=self.delivered)
            except BufferError:
                producer.poll(0.05)
                continue
            self.sent.append(now())
            # After a stall, go on at the rate instead of bursting to catch up.
            due = max(due + 1 / self.rate, now() - 0.1)
        self.stopped_at = now()
        self.unflushed = producer.flush(60)

    def finish(self):
        self.stop.set()
        self.thread.join(90)

    def ends(self):
        """Per partition, the offset after the last acknowledged record."""
        with self.lock:
            ends = {}
            for partition, offset in self.acked.values():
                ends[partition] = max(ends.get(partition, 0), offset + 1)
            return ends


class CommittedSampler:
    """The group's committed offsets seen from outside, every SAMPLE_EVERY_S, each checked against
    the highest earlier sample of its partition."""

    def __init__(self, bootstrap, group, topic, partitions, start):
        # A consumer that never subscribes, so not a member: committed() is OffsetFetch to the
        # group's coordinator. (AdminClient.list_consumer_group_offsets of librdkafka 2.16 crashes
        # the process on an OffsetFetch answer with a group-level error, e.g. while a new
        # cluster's coordinator loads.)
        self.reader = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
        self.group, self.topic, self.partitions, self.start = group, topic, partitions, start
        self.samples, self.errors = 0, 0
        self.highest, self.latest, self.backwards = {}, {}, []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def sample(self):
        try:
            result = self.reader.committed([TopicPartition(self.topic, p) for p in range(self.partitions)], timeout=5)
        except KafkaException:  # a coordinator moving or loading: the next sample will do
            self.errors += 1
            return
        latest = {}
        for tp in result:
            if tp.error is not None or tp.offset < 0:
                continue
            highest = self.highest.get(tp.partition, -1)
            if tp.offset < highest:
                self.backwards.append({"partition": tp.partition, "was": highest, "now": tp.offset, "at_s": round(now() - self.start, 2)})
            self.highest[tp.partition] = max(highest, tp.offset)
            latest[tp.partition] = tp.offset
        self.latest = latest
        self.samples += 1

    def run(self):
        while not self.stop.wait(SAMPLE_EVERY_S):
            self.sample()

    def finish(self):
        self.stop.set()
        self.thread.join(30)
        self.sample()
        self.reader.close()


class Member:
    """A member child process and the parent's reading of its file."""

    def __init__(self, name, args, group, directory, lifetime):
        self.name = name
        self.path = os.path.join(directory, f"{name}.log")
        self.stderr_path = os.path.join(directory, f"{name}.err")
        command = [sys.executable, os.path.abspath(__file__), "member", "--bootstrap", args.bootstrap, "--protocol", args.protocol,
                   "--topic", args.topic, "--group", group, "--out", self.path, "--lifetime", str(lifetime)]
        if args.assignor:
            command += ["--assignor", args.assignor]
        with open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
        self.state = "alive"  # then "leaving" (SIGTERM sent), "killed", "exited"
        self.signalled_at = None
        self.exit_status = None
        self.committed = {}  # partition -> highest offset this member committed
        self.assigned = False
        self.reader = None
        self.partial = b""

    def new_lines(self):
        if self.reader is None:
            if not os.path.exists(self.path):
                return []
            self.reader = open(self.path, "rb")
        lines = (self.partial + self.reader.read()).split(b"\n")
        self.partial = lines.pop()
        return [line.decode().split(" ") for line in lines if line]

    def stderr_tail(self, size=600):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read()[-size:].decode(errors="replace")
        except OSError:
            return ""


class Ledger:
    """Everything the members' files say, gathered as they are read."""

    def __init__(self):
        self.first_delivery = {}  # sequence -> time first processed by any member
        self.deliveries = 0
        self.at_offset = {}  # (partition, offset) -> sequence first consumed there
        self.mismatched = []
        self.commits, self.commit_failures = 0, 0
        self.commit_backwards = []
        self.errors = []

    def ingest(self, member, fields):
        kind, at = fields[0], float(fields[1])
        if kind == "M":
            partition, offset, sequence = int(fields[2]), int(fields[3]), int(fields[4])
            self.deliveries += 1
            self.first_delivery.setdefault(sequence, at)
            if self.at_offset.setdefault((partition, offset), sequence) != sequence:
                self.mismatched.append({"partition": partition, "offset": offset, "values": [self.at_offset[(partition, offset)], sequence]})
        elif kind == "C":
            partition, offset = int(fields[2]), int(fields[3])
            self.commits += 1
            highest = member.committed.get(partition, -1)
            if offset < highest:
                self.commit_backwards.append({"member": member.name, "partition": partition, "was": highest, "now": offset})
            member.committed[partition] = max(highest, offset)
        elif kind == "A":
            member.assigned = member.assigned or fields[2] != "-"
        elif kind == "F":
            self.commit_failures += 1
        elif kind == "E":
            self.errors = (self.errors + [f"{member.name}: {fields[2]}"])[-10:]


class Event:
    def __init__(self, kind, member, at, settle, first_sequence):
        self.kind, self.member, self.at, self.settle = kind, member, at, settle
        self.frontier = first_sequence  # the first record sent after the event not known delivered
        self.recovered_at = None
        self.pause = None
        self.slowest_partition = None


class Run:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.group = f"churn-{args.protocol}-{uuid.uuid4().hex[:8]}"
        self.directory = args.work_dir or tempfile.mkdtemp(prefix="group-churn-")
        os.makedirs(self.directory, exist_ok=True)
        self.start = now()
        self.lifetime = args.deadline + 30
        self.members = []
        self.events = []
        self.failures = []
        self.ledger = Ledger()
        self.production = Production(args.bootstrap, args.topic, args.partitions, args.rate)
        self.sampler = CommittedSampler(args.bootstrap, self.group, args.topic, args.partitions, self.start)
        self.min_alive = max(1, args.consumers // 2)

    def report(self, check, ok, **details):
        print(json.dumps({"check": check, "ok": ok, **details}), flush=True)
        if not ok:
            self.failures.append(check)

    def log(self, message):
        if not self.args.json:
            print(f"[{now() - self.start:6.1f} s] {message}", file=sys.stderr, flush=True)

    def alive(self):
        return [m for m in self.members if m.state == "alive"]

    def spawn(self):
        member = Member(f"m{len(self.members) + 1}", self.args, self.group, self.directory, self.lifetime)
        self.members.append(member)
        return member

    def read_members(self):
        for member in self.members:
            for fields in member.new_lines():
                self.ledger.ingest(member, fields)
            if member.state in ("leaving", "killed") and member.process.poll() is not None:
                member.exit_status = member.process.returncode
                member.state = "exited" if member.state == "leaving" else "reaped"
            elif member.state == "leaving" and now() - member.signalled_at > LEAVE_EXIT_S:
                member.process.kill()
                member.process.wait(10)
                member.exit_status = "did not exit"
                member.state = "exited"

    def tracker(self, kind, member, settle):
        at = now()
        return Event(kind, member, at, settle, bisect.bisect_right(self.production.sent, at))

    def recovered(self, event):
        """Whether every record sent from the event until LAG_S ago has been delivered (for the schedule)."""
        if event.recovered_at is not None:
            return True
        moment = now()
        sent = self.production.sent
        with self.production.lock:
            while event.frontier < len(sent) and sent[event.frontier] <= moment - LAG_S and (
                    event.frontier in self.ledger.first_delivery or event.frontier in self.production.failed):
                event.frontier += 1
        if moment - event.at >= RECOVERY_MIN_S and (event.frontier >= len(sent) or sent[event.frontier] > moment - LAG_S):
            event.recovered_at = moment
        return event.recovered_at is not None

    def wait_until(self, condition, seconds):
        deadline = now() + seconds
        while now() < deadline:
            self.read_members()
            if condition():
                return True
            time.sleep(TICK_S)
        return False

    def next_kind(self, planned):
        alive = len(self.alive())
        if planned:
            return planned.pop(0)
        allowed = [k for k in KINDS if (k == "join" and alive < self.args.consumers) or (k != "join" and alive > self.min_alive)]
        return self.rng.choice(allowed)

    def plan(self):
        """The first events: each kind twice, in a seeded order that keeps the count of live members in bounds."""
        kinds = [kind for kind in KINDS for _ in range(REQUIRED_PER_KIND)]
        for _ in range(500):
            self.rng.shuffle(kinds)
            alive, fits = self.args.consumers, True
            for kind in kinds:
                alive += 1 if kind == "join" else -1
                fits = fits and self.min_alive <= alive <= self.args.consumers
            if fits:
                return kinds
        return ["kill", "join", "leave", "join", "kill", "leave"]

    def act(self, kind):
        settle = self.rng.uniform(1.0, 3.0)
        if kind == "join":
            event = self.tracker(kind, None, settle)
            event.member = self.spawn().name
        else:
            victim = self.rng.choice(sorted(self.alive(), key=lambda m: int(m.name[1:])))
            event = self.tracker(kind, victim.name, settle)
            victim.signalled_at = event.at
            if kind == "leave":
                victim.process.send_signal(signal.SIGTERM)
                victim.state = "leaving"
            else:
                victim.process.kill()
                victim.state = "killed"
        self.events.append(event)
        self.log(f"{kind} {event.member} ({len(self.alive())} live)")

    def churn(self, warmup):
        planned = self.plan()
        began = now()
        last = warmup
        next_at = None
        while True:
            self.read_members()
            counts = {k: sum(e.kind == k for e in self.events) for k in KINDS}
            enough = all(n >= REQUIRED_PER_KIND for n in counts.values())
            if (enough and now() - began >= self.args.duration) or now() - began >= 1.5 * self.args.duration:
                return counts
            if next_at is None and self.recovered(last):
                next_at = last.recovered_at + last.settle
            if now() >= min(next_at if next_at is not None else float("inf"), last.at + MAX_GAP_S):
                self.act(self.next_kind(planned))
                last = self.events[-1]
                next_at = None
            time.sleep(TICK_S)

    def drained(self, ends):
        delivered = self.ledger.first_delivery
        with self.production.lock:
            acked = list(self.production.acked)
        latest = self.sampler.latest
        return all(s in delivered for s in acked) and all(latest.get(p, -1) >= end for p, end in ends.items())

    def stop_members(self):
        for member in self.alive():
            member.process.send_signal(signal.SIGTERM)
            member.state, member.signalled_at = "leaving", now()
        deadline = now() + LEAVE_EXIT_S + 5
        while any(m.state in ("leaving", "killed") for m in self.members) and now() < deadline:
            self.read_members()
            time.sleep(TICK_S)
        self.read_members()

    def kill_children(self):
        for member in self.members:
            if member.process.poll() is None:
                member.process.kill()
                member.process.wait(10)

    def measure_pauses(self):
        sent = self.production.sent
        acked = self.production.acked
        delivered = self.ledger.first_delivery
        for k, event in enumerate(self.events):
            window_end = (self.events[k + 1].at if k + 1 < len(self.events) else self.production.stopped_at) - WINDOW_GUARD_S
            lo, hi = bisect.bisect_right(sent, event.at), bisect.bisect_left(sent, window_end)
            worst, slowest, missing = None, None, 0
            for sequence in range(lo, hi):
                if sequence not in acked:
                    continue
                if sequence not in delivered:
                    missing += 1
                    continue
                delay = delivered[sequence] - sent[sequence]
                if worst is None or delay > worst:
                    worst, slowest = delay, acked[sequence][0]
            if missing == 0:
                event.pause, event.slowest_partition = worst, slowest

    def main(self):
        args = self.args
        admin = AdminClient({"bootstrap.servers": args.bootstrap})
        for future in admin.create_topics([NewTopic(args.topic, num_partitions=args.partitions, replication_factor=1)]).values():
            future.result(timeout=30)
        ready = False
        for _ in range(300):
            topic = admin.list_topics(args.topic, timeout=10).topics.get(args.topic)
            ready = topic is not None and topic.error is None and len(topic.partitions) == args.partitions and all(
                p.leader >= 0 and p.error is None for p in topic.partitions.values())
            if ready:
                break
            time.sleep(0.1)
        self.report("topic-created", ready, topic=args.topic, partitions=args.partitions)
        if not ready:
            return
        self.production.thread.start()
        self.sampler.thread.start()
        for _ in range(args.consumers):
            self.spawn()
        warmup = self.tracker("warmup", None, self.rng.uniform(1.0, 3.0))
        # Formed: every member was assigned partitions and the records flow to the group.
        formed = self.wait_until(lambda: all(m.assigned for m in self.members) and self.recovered(warmup), 60)
        warmup.recovered_at = now()
        self.report("group-formed", formed, group=self.group, members=len(self.members), seconds=round(now() - warmup.at, 2),
                    errors=self.ledger.errors, stderr=None if formed else self.members[0].stderr_tail())
        if not formed:
            return
        self.log(f"group {self.group} consumes; churn for {args.duration} s")
        counts = self.churn(warmup)
        self.report("churn-events", all(n >= REQUIRED_PER_KIND for n in counts.values()), counts=counts,
                    needed_per_kind=REQUIRED_PER_KIND)
        # Keep producing until the group recovered from the last event, which completes its window.
        last = self.events[-1] if self.events else warmup
        self.wait_until(lambda: self.recovered(last), MAX_GAP_S * 2)
        self.production.finish()
        with self.production.lock:
            acked, failed = dict(self.production.acked), dict(self.production.failed)
        self.report("produced", bool(acked) and not failed and self.production.unflushed == 0, acknowledged=len(acked),
                    failed=len(failed), errors=sorted(set(failed.values()))[:5], unflushed=self.production.unflushed)
        self.log(f"producer stopped after {len(acked)} acknowledged records; draining")
        ends = self.production.ends()
        deadline = now() + args.drain
        while not self.drained(ends) and now() < deadline:
            self.read_members()
            time.sleep(TICK_S)
        self.stop_members()
        self.sampler.finish()
        self.check(acked, ends)

    def check(self, acked, ends):
        ledger = self.ledger
        delivered = ledger.first_delivery
        missing = sorted(s for s in acked if s not in delivered)
        self.report("all-consumed", not missing, acknowledged=len(acked), missing=len(missing),
                    first_missing=[{"sequence": s, "partition": acked[s][0], "offset": acked[s][1]} for s in missing[:10]],
                    duplicates=ledger.deliveries - len(delivered))
        wrong = [{"sequence": s, "acknowledged": acked[s], "consumed_at": [p, o]}
                 for (p, o), s in ledger.at_offset.items() if s in acked and acked[s] != (p, o)]
        self.report("consumed-where-acknowledged", not wrong and not ledger.mismatched, wrong=wrong[:10], two_values_at_one_offset=ledger.mismatched[:10])
        sampler = self.sampler
        self.report("committed-never-backwards", sampler.samples > 0 and not sampler.backwards, samples=sampler.samples,
                    failed_samples=sampler.errors, backwards=sampler.backwards[:10])
        self.report("member-commits-in-order", not ledger.commit_backwards, commits=ledger.commits, backwards=ledger.commit_backwards[:10])
        short = {p: {"committed": sampler.latest.get(p), "end": end} for p, end in sorted(ends.items()) if sampler.latest.get(p, -1) < end}
        self.report("committed-to-end", not short, short=short)
        unclean = {m.name: m.exit_status for m in self.members if m.state == "exited" and m.exit_status != 0}
        running = [m.name for m in self.members if m.process.poll() is None]
        self.report("members-stopped", not unclean and not running, unclean=unclean, still_running=running)
        self.measure_pauses()
        unmeasured = [e.kind for e in self.events if e.pause is None]
        self.report("pauses-measured", not unmeasured, unmeasured=unmeasured)
        self.summary(acked)

    def summary(self, acked):
        args, ledger = self.args, self.ledger
        delays = sorted(ledger.first_delivery[s] - self.production.sent[s] for s in acked if s in ledger.first_delivery)
        pauses = {}
        for kind in KINDS:
            values = [e.pause for e in self.events if e.kind == kind and e.pause is not None]
            pauses[kind] = {"count": len(values), "p50_s": round(statistics.median(values), 3) if values else None,
                            "max_s": round(max(values), 3) if values else None}
        summary = {
            "protocol": args.protocol, "assignor": args.assignor or "default", "partitions": args.partitions,
            "consumers": args.consumers, "duration_s": args.duration, "seed": args.seed, "rate": args.rate,
            "pauses": pauses, "latency_p50_s": round(statistics.median(delays), 3) if delays else None,
            "records": len(acked), "deliveries": ledger.deliveries, "duplicates": ledger.deliveries - len(ledger.first_delivery),
            "commits": ledger.commits, "commit_failures": ledger.commit_failures, "offset_samples": self.sampler.samples,
            "members_started": len(self.members), "member_errors": ledger.errors,
            "events": [{"kind": e.kind, "member": e.member, "at_s": round(e.at - self.start, 2),
                        "pause_s": None if e.pause is None else round(e.pause, 3), "slowest_partition": e.slowest_partition}
                       for e in self.events],
        }
        self.report("summary", not self.failures, **summary)
        if not args.json:
            print(f"group churn: protocol {args.protocol}, assignor {summary['assignor']}, {args.partitions} partitions, "
                  f"{args.consumers} members, {args.duration} s, seed {args.seed}")
            print(f"  records {len(acked)} acknowledged, {ledger.deliveries} deliveries ({summary['duplicates']} duplicates), "
                  f"{ledger.commits} commits ({ledger.commit_failures} failed), end-to-end latency p50 {summary['latency_p50_s']} s")
            for kind, p in pauses.items():
                print(f"  pause after a {kind:5}: {p['count']} events, p50 {p['p50_s']} s, max {p['max_s']} s")


def main():
    faulthandler.enable()  # a crash inside librdkafka shows where
    if len(sys.argv) > 1 and sys.argv[1] == "member":
        member(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--protocol", choices=["classic", "consumer"], required=True)
    parser.add_argument("--topic", help="a new topic's name (default: a fresh one)")
    parser.add_argument("--partitions", type=int, default=24)
    parser.add_argument("--consumers", type=int, default=6, help="members at the start and the most alive at once")
    parser.add_argument("--duration", type=float, default=60, help="seconds of churn")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--assignor", help="classic: range, roundrobin or cooperative-sticky; consumer: uniform or range (the broker's)")
    parser.add_argument("--rate", type=float, default=480, help="records per second")
    parser.add_argument("--drain", type=float, default=60, help="seconds the members get to consume the rest")
    parser.add_argument("--deadline", type=float, help="seconds before the whole run fails (default 2 x duration + 180)")
    parser.add_argument("--work-dir", help="where the members' files go (default: a temporary directory, removed after a pass)")
    parser.add_argument("--json", action="store_true", help="print only the JSON check lines")
    args = parser.parse_args()
    if args.consumers < 2:
        parser.error("--consumers must be at least 2")
    args.topic = args.topic or f"churn-{uuid.uuid4().hex[:8]}"
    args.deadline = args.deadline or 2 * args.duration + 180
    # A hung client call must fail the run: faulthandler's watchdog fires even inside librdkafka,
    # dumps every thread's stack and exits; the members notice their parent is gone and stop.
    faulthandler.dump_traceback_later(args.deadline, exit=True)
    run = Run(args)
    try:
        run.main()
    finally:
        run.kill_children()
    if run.failures:
        print(f"members' files kept in {run.directory}", file=sys.stderr, flush=True)
        sys.exit(1)
    if not args.work_dir:
        shutil.rmtree(run.directory, ignore_errors=True)
    run.report("done", True)


if __name__ == "__main__":
    main()
