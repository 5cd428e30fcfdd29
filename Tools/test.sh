#!/usr/bin/env bash
# Installs what is missing, builds Floe, checks the generated protocol code is current and runs every test.
# This is the command README.md gives and .ci/run runs.
set -euo pipefail
cd "$(dirname "$0")/.."

Tools/install-deps.sh

echo "== Kubernetes manifests render and validate"
# kubectl renders Kustomize offline; it is not a package this script can install.
command -v kubectl >/dev/null || { echo "kubectl is required to render Deploy/overlays (kubectl kustomize); install it" >&2; exit 1; }
# The oldest and a recent Kubernetes release the manifests target; --strict rejects unknown fields.
for overlay in Deploy/overlays/*/; do
    rendered=$(kubectl kustomize "$overlay")
    for version in 1.30.0 1.34.0; do
        printf '%s\n' "$rendered" | python3 -m kubernetes_validate --strict --quiet --kubernetes-version "$version" -
    done
    echo "$overlay: $(printf '%s\n' "$rendered" | grep -c '^kind:') objects valid for Kubernetes 1.30 and 1.34"
done

echo "== build"
swift build --build-tests

echo "== generated protocol code is current"
Tools/generate-protocol.sh --check

echo "== swift tests"
# Serially: the CPU-bound suites (fuzz loops, Raft simulation) would otherwise hold both threads
# of a 2-core machine's cooperative pool for seconds at a time and starve the socket tests.
# The full log is long and CI keeps only its end, so the failures are repeated last.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
swift test --skip-build --no-parallel 2>&1 | tee "$log" || status=$?
if [ "$status" -ne 0 ]; then
    echo "== failures (repeated from above)"
    grep -E 'Fatal error|Crashed|exited with signal|unexpected signal' "$log" | tail -n 10 || true
    grep -E '✘' "$log" | grep -v '✘ Test run with' | tail -n 60 || true
    grep -E '✘ Test run with' "$log" || echo "swift test exited with $status"
fi
exit "$status"
