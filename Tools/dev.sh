#!/usr/bin/env bash
# Installs what is missing, builds Floe (release) and runs a local cluster in the foreground
# with `floe dev up`; arguments are passed on (see `floe dev up --help`). Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."

Tools/install-deps.sh

# Every service executable floe dev can start, plus floe itself.
products=(floe floe-controller floe-wal-writer floe-broker)
for product in "${products[@]}"; do
    echo "== build $product (release)"
    swift build -c release --product "$product"
done

exec .build/release/floe dev up "$@"
