#!/usr/bin/env python3
"""A client that connects the moment a broker's Kafka port opens gets a Metadata answer listing
that broker. Started before the broker is ready: waits only for the port to accept connections,
then runs `kcat -L` (Debian's librdkafka, which gives up on a bootstrap whose Metadata lists no
broker after two quick retries) with a 15 s limit.

    python3 first_metadata.py --bootstrap 127.0.0.1:9092 --node-id 101
"""
import argparse
import re
import shutil
import socket
import subprocess
import sys
import time


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--node-id", type=int, required=True)
    args = parser.parse_args()
    host, port = args.bootstrap.split(",")[0].rsplit(":", 1)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                print("the broker's port never opened")
                return 1
            time.sleep(0.02)
    started = time.monotonic()
    kcat = shutil.which("kcat") or shutil.which("kafkacat")
    result = subprocess.run([kcat, "-b", args.bootstrap, "-L", "-m", "15"], capture_output=True, text=True, timeout=60)
    took = time.monotonic() - started
    brokers = sorted(int(node) for node in re.findall(r"broker (\d+) at ", result.stdout))
    print(f"kcat -L exited {result.returncode} {took:.3f} s after the port opened: brokers {brokers}")
    if result.returncode != 0 or args.node_id not in brokers:
        print(f"broker {args.node_id} is not listed\n{result.stdout}\n{result.stderr[-2000:]}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
