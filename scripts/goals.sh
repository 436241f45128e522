#!/usr/bin/env bash
# The performance goals against the yardsticks (README.md, "Against the yardsticks"): echo mode,
# 100 connections, 64-byte messages, open loop at 90,000 and 40,000 req/s, every row in one run,
# five runs with the order of the rows rotated each time; then the median CPU per request of
# every row and the median of each run's ratio to the row's yardstick. Needs a default build
# (cmake --build --preset default) and a quiet machine: about four minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-results/goals}
rows=(09_proactor yardstick_asio 05_epoll 08_reactor 09_proactor_asio 08_reactor_libev
      yardstick_libev 08_reactor_libevent yardstick_libevent)
for i in 1 2 3 4 5; do
    k=$(((i - 1) % ${#rows[@]}))
    order=("${rows[@]:k}" "${rows[@]:0:k}")
    models=$(IFS=,; echo "${order[*]}")
    for rate in 90000 40000; do
        build/bin/iolab compare --mode echo --conns 100 --payload 64 --duration 2 --rate "$rate" \
            --models "$models" --out "$out/$rate-$i" >/dev/null
    done
    echo "run $i of 5 done"
done
python3 - "$out" <<'PY'
import glob, json, statistics, sys
out = sys.argv[1]
pairs = {"09_proactor": "yardstick_asio", "08_reactor": "yardstick_asio",
         "05_epoll": "yardstick_asio", "09_proactor_asio": "yardstick_asio",
         "08_reactor_libev": "yardstick_libev", "08_reactor_libevent": "yardstick_libevent"}
for rate in ("40000", "90000"):
    runs = [{r["variant"]: r for r in json.load(open(f))["results"]}
            for f in sorted(glob.glob(f"{out}/{rate}-*/results.json"))]
    print(f"at {rate} req/s: variant, median CPU us/req, median req/s, median ratio to its yardstick")
    for v in runs[0]:
        cpu = statistics.median(r[v]["server_cpu_us_per_req"] for r in runs)
        rps = statistics.median(r[v]["req_per_s"] for r in runs)
        y = pairs.get(v)
        ratio = (f"{statistics.median(r[v]['server_cpu_us_per_req'] / r[y]['server_cpu_us_per_req'] for r in runs):.2f} of {y}"
                 if y else "")
        print(f"  {v:22s} {cpu:6.2f} {rps:8.0f}  {ratio}")
PY
