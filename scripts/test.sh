#!/usr/bin/env bash
# The whole test suite: install what is missing, build, run every test under CTest (the Soak suite
# included, once); then every test but Soak in the AddressSanitizer+UndefinedBehaviorSanitizer
# build, and the conformance suite over the variants with threads in the ThreadSanitizer build,
# which builds nothing else. The goal for the whole is 12 minutes on 2 cores from a fresh clone
# (README, "Tests"). Set IOLAB_QUICK=1 to skip the sanitizer builds.
#
# The tests mostly wait (timeouts, SIGTERM with a WORK in flight, idle clients): the default
# tests keep the 2 cores about half busy. So the next build compiles while a test run goes on,
# under the idle scheduling class (SCHED_IDLE, chrt --idle): the kernel gives it only the CPU time
# no test wants, and takes the core back the moment a test's thread wakes up, so a test runs as
# if the build were not there. Each phase prints its time; a build that runs beside tests prints
# when it started and how long it took.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-deps.sh
jobs=$(nproc)
# CTest runs twice as many tests as there are cores; the suites that measure timing run alone
# anyway (RUN_SERIAL: model_*, Soak).
test_jobs=$((2 * jobs))
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

# build DIR PRESET: configure and build one preset (the function a background build runs).
build() {
    configure "$1" "$2"
    cmake --build --preset "$2" -j"$jobs"
}
# behind NAME DIR PRESET: starts that build in the background, in the idle class when the kernel
# allows it (nice 19 otherwise), its output in DIR/build.log.
behind_pid=""
behind() {
    behind_name=$1
    behind_dir=$2
    behind_start=$((SECONDS - start))
    mkdir -p "$2"
    local idle=(chrt --idle 0)
    if ! chrt --idle 0 true 2>/dev/null; then
        idle=(nice -n 19)
    fi
    echo "== $1 (beside the tests, ${idle[*]}; output in $2/build.log)"
    setsid "${idle[@]}" bash -c "$(declare -f configure build); jobs=$jobs; build $2 $3" \
        >"$2/build.log" 2>&1 &
    behind_pid=$!
    behind_t=$SECONDS
}
# Waits for the build started by `behind`; prints its log and fails if it failed.
finish_behind() {
    local t=$SECONDS
    if ! wait "$behind_pid"; then
        cat "$behind_dir/build.log"
        echo "-- $behind_name failed"
        exit 1
    fi
    behind_pid=""
    times+=("$behind_name $((SECONDS - behind_t)) s (from ${behind_start} s, beside the tests; $((SECONDS - t)) s waited for after them)")
    echo "-- $behind_name: $((SECONDS - behind_t)) s, $((SECONDS - t)) s of it after the tests"
}
# The suites that measure who waits for whom (label model) run with nothing beside them, not even
# the idle-class build: it is stopped (SIGSTOP to its process group) while they run.
pause_behind() {
    if [ -n "$behind_pid" ]; then
        kill -STOP -- -"$behind_pid" 2>/dev/null || true
    fi
}
resume_behind() {
    if [ -n "$behind_pid" ]; then
        kill -CONT -- -"$behind_pid" 2>/dev/null || true
    fi
}
# The background build (its own process group, setsid) does not outlive the script.
stop_behind() {
    if [ -n "$behind_pid" ]; then
        kill -- -"$behind_pid" 2>/dev/null || true
        resume_behind
    fi
}
trap stop_behind EXIT

echo "== default build"
configure build default
phase "default build" cmake --build --preset default -j"$jobs"
if [ "${IOLAB_QUICK:-0}" != 1 ]; then
    behind "asan build" build-asan sanitize
fi
phase "default tests" ctest --preset default -j"$test_jobs" -LE '^(soak|model)$'
pause_behind
phase "default model tests" ctest --preset default -j"$test_jobs" -L '^model$'
resume_behind

# The Soak suite keeps both cores busy on its own: it runs with no build beside it.
if [ "${IOLAB_QUICK:-0}" != 1 ]; then
    finish_behind
fi
echo "== Soak (default build)"
phase "soak" ctest --preset default -j"$test_jobs" -L soak

if [ "${IOLAB_QUICK:-0}" != 1 ]; then
    behind "tsan build" build-tsan tsan
    echo "== ASan+UBSan tests"
    # The presets sanitize-rest and sanitize-model split the preset sanitize in two (a filter on
    # the command line would not replace the preset's).
    phase "asan tests" ctest --preset sanitize-rest -j"$test_jobs"
    pause_behind
    phase "asan model tests" ctest --preset sanitize-model -j"$test_jobs"
    resume_behind

    finish_behind
    echo "== ThreadSanitizer tests (conformance over the variants with threads)"
    phase "tsan tests" ctest --preset tsan -j"$test_jobs"
fi
printf '   %s\n' "${times[@]}"
echo "== all tests passed in $((SECONDS - start)) s"
