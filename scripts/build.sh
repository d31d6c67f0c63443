#!/usr/bin/env bash
# Configures and builds troupe. Usage: build.sh [build-dir] [extra cmake args...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$root/build}
shift || true
# Clones in other folders (CI's fresh clone) share the compiler cache.
export CCACHE_BASEDIR="$root" CCACHE_NOHASHDIR=1
cmake -S "$root" -B "$dir" -G Ninja "$@" >/dev/null
# Two parallel compiles of CAF-heavy translation units fit in memory on a
# small machine; more only thrash.
ninja -C "$dir" -j "${BUILD_JOBS:-$(nproc)}"
