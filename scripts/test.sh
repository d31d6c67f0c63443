#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test.
# Usage: test.sh [--sanitize]   (--sanitize: ASan + UBSan build in build-asan/)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"

dir="$root/build"
args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DTROUPE_BUILD_BENCH=ON)
if [ "${1:-}" = "--sanitize" ]; then
  dir="$root/build-asan"
  args=(-DCMAKE_BUILD_TYPE=Debug -DTROUPE_SANITIZE=ON -DTROUPE_BUILD_BENCH=OFF)
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:suppressions=$root/tests/ubsan.supp"
fi
"$root/scripts/build.sh" "$dir" "${args[@]}"
cd "$dir"
ctest --output-on-failure --timeout 300
