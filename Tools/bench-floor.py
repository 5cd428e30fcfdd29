#!/usr/bin/env python3
"""What this host charges for the pieces of an acknowledged produce, at a given request rate.

A produce crosses two loopback round trips (client -> broker -> WAL writer and back) and one
pwrite + fdatasync. This measures each piece with nothing of Floe in between, at the same
request rate as `floe bench produce --rate`, because on a virtual machine an idle vCPU and an
idle disk queue answer slower than busy ones:

  echo      a request/response round trip between two processes over loopback TCP
  fsync     one 4 KiB pwrite + fdatasync on a preallocated file in --directory
  chain     client -> relay -> fsync server -> relay -> client, two processes besides the client,
            the relay forwarding and the server syncing before it answers: the shape of a produce

Usage: python3 Tools/bench-floor.py --directory /path/on/the/wal/disk [--rates 100,1000] [--count 1000]

With --floe and --bootstrap it instead alternates, --rounds times at each rate, the chain with a
`floe bench produce` run against a running cluster (one producer, one 1 KiB record per request,
acks=all), so that Floe's latency is read next to what the host charged at the same moment:

  python3 Tools/bench-floor.py --directory /tmp/floor --floe .build/release/floe \
      --bootstrap 127.0.0.1:44092 --rates 100 --rounds 5 --duration 15
"""
import argparse
import os
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import time
from multiprocessing import Process


def accept_one(port, ready):
    """Listens on `port`, signals `ready` once listening, returns the first connection."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen()
    os.write(ready, b"x")
    conn, _ = srv.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def serve_echo(port, ready):
    conn = accept_one(port, ready)
    while True:
        data = conn.recv(64)
        if not data:
            return
        conn.sendall(data)


def serve_fsync(port, ready, path):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    os.pwrite(fd, b"\0" * (64 << 20), 0)
    os.fsync(fd)
    conn = accept_one(port, ready)
    block = b"w" * 4096
    offset = 0
    while True:
        data = conn.recv(64)
        if not data:
            break
        os.pwrite(fd, block, offset)
        os.fdatasync(fd)
        offset = (offset + 4096) % (64 << 20)
        conn.sendall(data)
    os.close(fd)
    os.unlink(path)


def serve_relay(port, ready, upstream_port):
    upstream = socket.create_connection(("127.0.0.1", upstream_port))
    upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = accept_one(port, ready)
    while True:
        data = conn.recv(64)
        if not data:
            return
        upstream.sendall(data)
        conn.sendall(upstream.recv(64))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(target, *args):
    read_end, write_end = os.pipe()
    process = Process(target=target, args=args[:1] + (write_end,) + args[1:], daemon=True)
    process.start()
    os.read(read_end, 1)  # the server is listening
    os.close(read_end)
    return process


def paced(rate, count, action):
    """Runs `action(index)` `count` times at `rate` per second; returns its p50 and p99 in seconds."""
    interval = 1.0 / rate
    samples = []
    next_start = time.perf_counter()
    for index in range(count):
        next_start += interval
        start_time = time.perf_counter()
        action(index)
        samples.append(time.perf_counter() - start_time)
        pause = next_start - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
    samples.sort()
    return samples[len(samples) // 2], samples[int(len(samples) * 0.99)]


def timed_round_trips(port, rate, count):
    conn = socket.create_connection(("127.0.0.1", port))
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def round_trip(_):
        conn.sendall(b"ping")
        conn.recv(64)

    result = paced(rate, count, round_trip)
    conn.close()
    return result


def timed_fsyncs(directory, rate, count):
    path = os.path.join(directory, "bench-floor-fsync.tmp")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    os.pwrite(fd, b"\0" * (64 << 20), 0)
    os.fsync(fd)
    block = b"w" * 4096

    def write_and_sync(index):
        os.pwrite(fd, block, (index * 4096) % (64 << 20))
        os.fdatasync(fd)

    result = paced(rate, count, write_and_sync)
    os.close(fd)
    os.unlink(path)
    return result


def timed_chain(directory, rate, count):
    server_port, relay_port = free_port(), free_port()
    chain_file = os.path.join(directory, "bench-floor-chain.tmp")
    server = start(serve_fsync, server_port, chain_file)
    relay = start(serve_relay, relay_port, server_port)
    result = timed_round_trips(relay_port, rate, count)
    relay.terminate()
    server.terminate()
    server.join()
    if os.path.exists(chain_file):
        os.unlink(chain_file)
    return result


def floe_produce(floe, bootstrap, rate, duration):
    """Runs `floe bench produce` at `rate`; returns its produce p50 and p99 in seconds."""
    command = [floe, "bench", "produce", "--bootstrap", bootstrap, "--rate", f"{rate:g}", "--duration", f"{duration:g}"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=duration + 120)
    match = re.search(r"produce latency[^:]*:\s*p50 ([0-9.]+) ms, p99 ([0-9.]+) ms", run.stdout)
    if run.returncode != 0 or not match:
        sys.exit(f"{' '.join(command)} failed (exit {run.returncode}):\n{run.stdout}{run.stderr}")
    return float(match.group(1)) / 1e3, float(match.group(2)) / 1e3


def alternate(args, rates):
    print("bench-floor: Floe's produce latency next to the host's chain, alternating")
    print(f"  {args.floe} bench produce --bootstrap {args.bootstrap} --duration {args.duration:g}; chain: {args.count} samples")
    print()
    print("| rate (req/s) | round | chain p50 / p99 | Floe p50 / p99 | Floe p50 − chain p50 |")
    print("|---:|---:|---|---|---:|")
    for rate in rates:
        chains, floes = [], []
        for round_number in range(1, args.rounds + 1):
            chain = timed_chain(args.directory, rate, args.count)
            floe = floe_produce(args.floe, args.bootstrap, rate, args.duration)
            chains.append(chain)
            floes.append(floe)
            print(f"| {rate:g} | {round_number} | {chain[0] * 1e3:.2f} / {chain[1] * 1e3:.2f} ms "
                  f"| {floe[0] * 1e3:.2f} / {floe[1] * 1e3:.2f} ms | {(floe[0] - chain[0]) * 1e3:+.2f} ms |", flush=True)
        median = lambda values: statistics.median(values) * 1e3
        print(f"| {rate:g} | median | {median([c[0] for c in chains]):.2f} / {median([c[1] for c in chains]):.2f} ms "
              f"| {median([f[0] for f in floes]):.2f} / {median([f[1] for f in floes]):.2f} ms "
              f"| {median([f[0] - c[0] for f, c in zip(floes, chains)]):+.2f} ms |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--directory", required=True, help="a directory on the disk the WAL uses")
    parser.add_argument("--rates", default="100,1000", help="requests per second, comma-separated")
    parser.add_argument("--count", type=int, default=1000, help="samples per measurement (at most 100000)")
    parser.add_argument("--floe", help="path of the floe command: alternate the chain with `floe bench produce`")
    parser.add_argument("--bootstrap", help="HOST:PORT of the running cluster's broker (with --floe)")
    parser.add_argument("--rounds", type=int, default=5, help="alternations per rate (with --floe)")
    parser.add_argument("--duration", type=float, default=15, help="seconds per floe bench run (with --floe)")
    args = parser.parse_args()
    if not os.path.isdir(args.directory):
        sys.exit(f"--directory {args.directory} is not a directory")
    if not 10 <= args.count <= 100_000:
        sys.exit("--count must be in [10, 100000]")
    rates = [float(r) for r in args.rates.split(",")]
    if any(not 1 <= r <= 100_000 for r in rates):
        sys.exit("--rates must each be in [1, 100000]")

    if args.floe or args.bootstrap:
        if not (args.floe and args.bootstrap):
            sys.exit("--floe and --bootstrap go together")
        found = shutil.which(args.floe)
        if not found:
            sys.exit(f"--floe {args.floe} is not an executable file (nor a command on PATH)")
        args.floe = found
        if not 1 <= args.rounds <= 100 or not 1 <= args.duration <= 3600:
            sys.exit("--rounds must be in [1, 100] and --duration in [1, 3600]")
        alternate(args, rates)
        return

    print("bench-floor: what this host charges for the pieces of a produce")
    print(f"  directory {args.directory}, {args.count} samples each, cores: {os.cpu_count()}")
    print()
    print("| rate (req/s) | echo p50 / p99 | fsync p50 / p99 | chain (relay + fsync server) p50 / p99 |")
    print("|---:|---|---|---|")
    for rate in rates:
        echo_port = free_port()
        echo = start(serve_echo, echo_port)
        echo_result = timed_round_trips(echo_port, rate, args.count)
        echo.terminate()
        fsync_result = timed_fsyncs(args.directory, rate, args.count)
        chain_result = timed_chain(args.directory, rate, args.count)
        cells = [f"{p50 * 1e3:.2f} / {p99 * 1e3:.2f} ms" for p50, p99 in (echo_result, fsync_result, chain_result)]
        print(f"| {rate:g} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
