#!/usr/bin/env python3
"""Where a light-load produce spends its time, hop by hop, on a running local cluster.

Runs `floe bench produce` (one producer, one 1 KiB record per request, acks=all) at --rate against
--bootstrap and, in the middle of the run, records the system calls and scheduler events of the
bench, the broker and the WAL writer with `perf record` (kernel tracepoints; needs perf and root or
kernel.perf_event_paranoid <= -1). Each request is then followed through its system calls:

  bench_send -> broker_read        the client's send until the broker has read the request
  broker_read -> broker_walw       the broker's own code before it writes the append to the WAL writer
  broker_walw -> wal_read          until the WAL writer has read the append
  wal_read -> wal_pwrite           the WAL writer's own code before its write
  wal_pwrite -> wal_pwrite_done    the write itself
  wal_pwrite_done -> wal_fsync_done  fdatasync
  wal_fsync_done -> wal_ack        the WAL writer's code between the sync and its answer
  wal_ack -> broker_ackread        until the broker has read the answer
  broker_ackread -> broker_resp    the broker's code between the WAL's answer and its own
  broker_resp -> bench_read        until the client has read it

and the median, mean and 90th percentile of each step are printed, in microseconds. Tracing adds a
few microseconds per system call, so the total is above the bench's own figure; the steps are for
comparing builds and finding where the time goes, not for quoting latency.

Usage:
  python3 Tools/produce-timeline.py --floe .build/release/floe --bootstrap 127.0.0.1:44092 \
      [--rate 100] [--broker-pid PID] [--wal-pid PID]

Without --broker-pid / --wal-pid the only running floe-broker and floe-wal-writer are used.
"""
import argparse
import collections
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

READ, WRITE, PWRITE64, WRITEV, FDATASYNC = 0, 1, 18, 20, 75
STEPS = [
    "bench_send", "broker_read", "broker_walw", "wal_read", "wal_pwrite", "wal_pwrite_done",
    "wal_fsync_done", "wal_ack", "broker_ackread", "broker_resp", "bench_read",
]


def fail(message):
    print(f"produce-timeline: {message}", file=sys.stderr)
    sys.exit(2)


def only_process(name, flag):
    """The pid of the single running process whose executable is called `name` (else `flag` must name it)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.path.basename(os.readlink(f"/proc/{entry}/exe")) == name:
                pids.append(int(entry))
        except OSError:
            continue
    if len(pids) != 1:
        fail(f"found {len(pids)} running {name} processes; name one with {flag}")
    return pids[0]


def threads(pid):
    return [int(t) for t in os.listdir(f"/proc/{pid}/task")]


def parse(script, owner):
    """System calls as (enter time, exit time, process, number, first argument, return value), by enter time."""
    line_format = re.compile(r"^\s*.+?\s+(\d+)\s+\[\d+\]\s+([\d.]+):\s+(\S+):\s+(.*)$")
    open_calls = {}
    calls = []
    for line in script.splitlines():
        match = line_format.match(line)
        if not match:
            continue
        tid, when, event, rest = int(match.group(1)), float(match.group(2)), match.group(3), match.group(4)
        if tid not in owner:
            continue
        if event == "raw_syscalls:sys_enter":
            number = int(rest.split()[1])
            first = int(rest.split("(")[1].split(",")[0], 16)
            open_calls[tid] = (when, number, first)
        elif event == "raw_syscalls:sys_exit" and tid in open_calls:
            start, number, first = open_calls.pop(tid)
            calls.append((start, when, owner[tid], number, first, int(rest.split("=")[1])))
    calls.sort()
    return calls


def timelines(calls):
    """One list of step times per request, following each bench send through the other processes."""
    big = lambda call: call[5] > 1000
    small = lambda call: 0 < call[5] < 200
    matchers = [
        ("broker_read", lambda c: c[2] == "broker" and c[3] == READ and big(c), 1),
        ("broker_walw", lambda c: c[2] == "broker" and c[3] == WRITEV and big(c), 0),
        ("wal_read", lambda c: c[2] == "wal" and c[3] == READ and big(c), 1),
        ("wal_pwrite", lambda c: c[2] == "wal" and c[3] == PWRITE64, 0),
        ("wal_pwrite_done", None, 1),
        ("wal_fsync_done", lambda c: c[2] == "wal" and c[3] == FDATASYNC, 1),
        ("wal_ack", lambda c: c[2] == "wal" and c[3] == WRITEV, 0),
        ("broker_ackread", lambda c: c[2] == "broker" and c[3] == READ and 8 < c[5] < 200, 1),
        ("broker_resp", lambda c: c[2] == "broker" and c[3] in (WRITE, WRITEV) and small(c), 0),
        # The bench's event loop also reads its eventfd (8 bytes); the answer is longer.
        ("bench_read", lambda c: c[2] == "bench" and c[3] == READ and 8 < c[5] < 200, 1),
    ]
    found = []
    index = 0
    while index < len(calls):
        call = calls[index]
        if not (call[2] == "bench" and call[3] in (WRITE, WRITEV) and big(call)):
            index += 1
            continue
        times = [call[0]]
        position = index
        for _, match, which in matchers:
            if match is not None:
                position = next((j for j in range(position + 1, min(len(calls), position + 400)) if match(calls[j])), None)
                if position is None:
                    break
            times.append(calls[position][which])
        if position is None:
            index += 1
            continue
        found.append(times)
        index = position + 1
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--floe", required=True, help="the floe command (for `floe bench produce`)")
    parser.add_argument("--bootstrap", required=True, help="HOST:PORT of the cluster's broker")
    parser.add_argument("--rate", type=float, default=100, help="requests per second (default 100)")
    parser.add_argument("--record-seconds", type=float, default=5, help="length of the recording (default 5)")
    parser.add_argument("--broker-pid", type=int)
    parser.add_argument("--wal-pid", type=int)
    args = parser.parse_args()
    if shutil.which("perf") is None:
        fail("perf is not installed (Debian: apt-get install linux-perf)")
    floe = shutil.which(args.floe) or (args.floe if os.access(args.floe, os.X_OK) else None)
    if floe is None:
        fail(f"--floe {args.floe} is not an executable")
    if args.rate <= 0 or args.rate > 20000 or args.record_seconds <= 0 or args.record_seconds > 60:
        fail("--rate must be in (0, 20000] and --record-seconds in (0, 60]")
    broker = args.broker_pid or only_process("floe-broker", "--broker-pid")
    wal = args.wal_pid or only_process("floe-wal-writer", "--wal-pid")
    duration = args.record_seconds + 6
    bench = subprocess.Popen(
        [floe, "bench", "produce", "--bootstrap", args.bootstrap, "--rate", str(args.rate), "--duration", str(duration)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(3)  # past topic creation and the first requests; the run lasts `duration`
        if bench.poll() is not None:
            fail("floe bench produce ended early:\n" + bench.stdout.read())
        owner = {}
        for pid, role in ((bench.pid, "bench"), (broker, "broker"), (wal, "wal")):
            for tid in threads(pid):
                owner[tid] = role
        with tempfile.TemporaryDirectory() as scratch:
            data = os.path.join(scratch, "perf.data")
            events = "raw_syscalls:sys_enter,raw_syscalls:sys_exit,sched:sched_switch,sched:sched_wakeup"
            pids = ",".join(str(p) for p in (bench.pid, broker, wal))
            record = subprocess.run(
                ["perf", "record", "-o", data, "-e", events, "-p", pids, "--", "sleep", str(args.record_seconds)],
                capture_output=True, text=True)
            if record.returncode != 0:
                fail(f"perf record failed ({record.returncode}):\n{record.stdout}{record.stderr}")
            script = subprocess.run(
                ["perf", "script", "-i", data, "-F", "comm,tid,cpu,time,event,trace"], capture_output=True, text=True).stdout
    finally:
        output, _ = bench.communicate(timeout=duration + 60)
    found = timelines(parse(script, owner))
    if len(found) < 10:
        fail(f"only {len(found)} requests could be followed; is {args.bootstrap} served by broker {broker} and WAL writer {wal}?")
    summary = [line.strip() for line in output.splitlines() if "produce latency" in line]
    print(f"rate {args.rate:g}/s, {len(found)} requests followed; bench: {summary[0] if summary else output.strip()}")
    print(f"{'step (µs)':34s} {'p50':>7s} {'mean':>7s} {'p90':>7s}")
    steps = collections.OrderedDict()
    for times in found:
        for (a, ta), (b, tb) in zip(zip(STEPS, times), zip(STEPS[1:], times[1:])):
            steps.setdefault(f"{a} -> {b}", []).append((tb - ta) * 1e6)
        steps.setdefault("total", []).append((times[-1] - times[0]) * 1e6)
    for name, values in steps.items():
        values.sort()
        print(f"{name:34s} {statistics.median(values):7.0f} {statistics.mean(values):7.0f} {values[int(len(values) * 0.9)]:7.0f}")


if __name__ == "__main__":
    main()
