#!/usr/bin/env bash
# Regenerates the timelines the model READMEs show: `iolab timeline --all` writes
# docs/figures/timeline-VARIANT.svg for every variant, each drawn from a real traced run of the
# default scene on this machine. BUILD names another build directory (default: build).
# Extra arguments go to `iolab timeline` (e.g. --scene work).
set -euo pipefail
cd "$(dirname "$0")/.."
build="${BUILD:-build}"
if [[ "$build" == build ]]; then
    bash scripts/setup-deps.sh
    cmake --preset default >/dev/null
    cmake --build --preset default -j"$(nproc)"
fi
exec "$build/bin/iolab" timeline --all --out-dir docs/figures "$@"
