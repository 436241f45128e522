#!/usr/bin/env bash
# The main job: install what is missing, build, and run `iolab compare` over every model.
# Results: the table on the terminal, and results/ (results.json, results.csv, *.svg).
# Extra arguments go to `iolab compare` (e.g. --duration 2 --conns 1,100).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-deps.sh
cmake --preset default >/dev/null
cmake --build --preset default -j"$(nproc)"
exec build/bin/iolab compare --out results "$@"
