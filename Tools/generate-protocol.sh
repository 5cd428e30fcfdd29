#!/usr/bin/env bash
# Regenerates the Kafka protocol codec and its generated tests from the JSON schemas.
# Usage: Tools/generate-protocol.sh [--check]
#   --check  regenerate, then fail if the committed generated files differ (for CI).
# Env: FLOE_KAFKA_SCHEMAS overrides the upstream schema folder
#      (default: <repo>/../shared/kafka-protocol/messages).
set -euo pipefail

check=0
for arg in "$@"; do
    case "$arg" in
        --check) check=1 ;;
        -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
        *) echo "generate-protocol.sh: unknown argument $arg" >&2; exit 2 ;;
    esac
done

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
kafka_schemas="${FLOE_KAFKA_SCHEMAS:-$repo/../shared/kafka-protocol/messages}"
project_schemas="$repo/Shared/KafkaProtocol/Schemas"
out="Shared/KafkaProtocol/Generated"
tests_out="Tests/KafkaProtocolTests/Generated"

if [ ! -d "$kafka_schemas" ]; then
    echo "generate-protocol.sh: Kafka schemas not found at $kafka_schemas (set FLOE_KAFKA_SCHEMAS)" >&2
    exit 2
fi
kafka_schemas="$(cd "$kafka_schemas" && pwd)"

cd "$repo"
swift build -c debug --product floe-protocol-gen >/dev/null
generator="$(swift build -c debug --show-bin-path)/floe-protocol-gen"

# Stale files (from a removed schema) must disappear, so start from empty folders.
rm -rf "$out" "$tests_out"
"$generator" --kafka-schemas "$kafka_schemas" --project-schemas "$project_schemas" --out "$out" --tests-out "$tests_out"

if [ "$check" -eq 1 ]; then
    changes="$(git status --porcelain -- "$out" "$tests_out")"
    if [ -n "$changes" ]; then
        echo "generate-protocol.sh: generated protocol code is out of date; run Tools/generate-protocol.sh and commit." >&2
        git diff --stat -- "$out" "$tests_out" >&2
        echo "$changes" >&2
        exit 1
    fi
    echo "generate-protocol.sh: generated protocol code is up to date."
fi
