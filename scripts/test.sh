#!/usr/bin/env bash
# The whole test suite: install what is missing, build, run every test under CTest (the Soak suite
# included, once); then every test but Soak in the AddressSanitizer+UndefinedBehaviorSanitizer
# build, and the conformance suite over the variants with threads in the ThreadSanitizer build,
# which builds nothing else. Each phase prints its time; the goal for the whole is 12 minutes on
# 2 cores from a fresh clone (README, "Tests"). Set IOLAB_QUICK=1 to skip the sanitizer builds.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-deps.sh
jobs=$(nproc)
# The tests mostly wait (timeouts, SIGTERM with a WORK in flight, idle clients): in the default
# build the tests but Soak use 170 s of CPU in 131 s at -j8 on 2 cores (183 s at -j4). CTest runs
# four tests per core; the tests that measure latency (label timed) and Soak run alone
# (RUN_SERIAL, tests/CMakeLists.txt), after the others.
test_jobs=$((4 * jobs))
start=$SECONDS
times=()

# A build directory left by another generator (before the presets named Ninja) is configured
# afresh: CMake refuses to switch generators in place.
configure() {
    local cache=$1/CMakeCache.txt
    if [ -f "$cache" ] && ! grep -q '^CMAKE_GENERATOR:INTERNAL=Ninja$' "$cache"; then
        cmake --preset "$2" --fresh >/dev/null
    else
        cmake --preset "$2" >/dev/null
    fi
}
phase() {
    local name=$1
    shift
    local t=$SECONDS
    "$@"
    times+=("$name $((SECONDS - t)) s")
    echo "-- $name: $((SECONDS - t)) s"
}

# The next build compiles beside a test run's first part, in the idle scheduling class (chrt
# --idle: it gets only the CPU the tests leave, which is a third of it), and is stopped (SIGSTOP
# to its process group) while the tests that measure latency or loop passes (label timed) and
# the Soak run alone after them.
bg_pid=""
background_build() {  # DIR PRESET
    configure "$1" "$2"
    setsid chrt --idle 0 cmake --build --preset "$2" -j"$jobs" >"$1/iolab-build.log" 2>&1 &
    bg_pid=$!
}
pause_build() { kill -STOP -- "-$bg_pid" 2>/dev/null || true; }
resume_build() { kill -CONT -- "-$bg_pid" 2>/dev/null || true; }
finish_build() {  # DIR: wait for the background build; its log if it failed
    if ! wait "$bg_pid"; then
        tail -n 60 "$1/iolab-build.log"
        echo "== the build in $1 failed (its whole log: $1/iolab-build.log)"
        exit 1
    fi
    bg_pid=""
}
trap '[ -z "$bg_pid" ] || kill -KILL -- "-$bg_pid" 2>/dev/null || true' EXIT
sanitizers() { [ "${IOLAB_QUICK:-0}" != 1 ]; }
alone='^(timed|soak)$'

echo "== default build"
configure build default
phase "default build" cmake --build --preset default -j"$jobs"
if sanitizers; then
    background_build build-asan sanitize
fi
phase "default tests" ctest --preset default -j"$test_jobs" -LE "$alone"
pause_build
phase "default tests, alone" ctest --preset default -L "$alone"
resume_build

if sanitizers; then
    echo "== ASan+UBSan build"
    phase "asan build, the rest" finish_build build-asan
    background_build build-tsan tsan
    phase "asan tests" ctest --preset sanitize -j"$test_jobs" -LE "$alone"
    pause_build
    phase "asan tests, alone" ctest --preset sanitize -L '^timed$'
    resume_build

    echo "== ThreadSanitizer build (conformance over the variants with threads)"
    phase "tsan build, the rest" finish_build build-tsan
    phase "tsan tests" ctest --preset tsan -j"$test_jobs"
fi
printf '   %s\n' "${times[@]}"
echo "== all tests passed in $((SECONDS - start)) s"
