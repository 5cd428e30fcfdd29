#!/usr/bin/env bash
# Installs what is missing, builds Floe, checks the generated protocol code is current and runs every test.
# This is the command README.md gives and .ci/run runs.
set -euo pipefail
cd "$(dirname "$0")/.."

Tools/install-deps.sh

echo "== build"
swift build --build-tests

echo "== generated protocol code is current"
Tools/generate-protocol.sh --check

echo "== swift tests"
# Serially: the CPU-bound suites (fuzz loops, Raft simulation) would otherwise hold both threads
# of a 2-core machine's cooperative pool for seconds at a time and starve the socket tests.
swift test --skip-build --no-parallel
