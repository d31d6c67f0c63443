#!/usr/bin/env bash
# Installs the Debian 12 packages troupe builds and tests with, if missing.
set -euo pipefail

packages=(
  g++ cmake ninja-build ccache pkg-config curl procps iproute2
  libcaf-dev libssl-dev
  libjemalloc-dev libspdlog-dev prometheus-cpp-dev libyaml-cpp-dev libcli11-dev libboost-dev
  librocksdb-dev
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc grpc-proto libjwt-dev
  libnats-dev nats-server librdkafka-dev
  catch2 openssl wrk clang libfuzzer-14-dev
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: run as root or install sudo" >&2; exit 1; }
  sudo="sudo"
fi
echo "install-deps: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
