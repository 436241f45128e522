#!/usr/bin/env bash
# The whole test suite: install what is missing, build, run every test under CTest; then the same
# tests in the AddressSanitizer+UndefinedBehaviorSanitizer build, and the threaded variants'
# conformance in the ThreadSanitizer build. Set IOLAB_QUICK=1 to skip the sanitizer builds.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-deps.sh
jobs=$(nproc)
start=$SECONDS

echo "== default build"
cmake --preset default >/dev/null
cmake --build --preset default -j"$jobs"
ctest --preset default -j"$jobs"

if [ "${IOLAB_QUICK:-0}" != 1 ]; then
    echo "== ASan+UBSan build"
    cmake --preset sanitize >/dev/null
    cmake --build --preset sanitize -j"$jobs"
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        ctest --preset sanitize -j"$jobs"

    echo "== ThreadSanitizer build (variants with threads)"
    cmake --preset tsan >/dev/null
    cmake --build --preset tsan -j"$jobs"
    IOLAB_ONLY_TRAIT=threads TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
        build-tsan/bin/conformance_test --gtest_brief=1
fi
echo "== all tests passed in $((SECONDS - start)) s"
