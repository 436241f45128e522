#!/usr/bin/env bash
# Installs the Debian packages iolab needs, if any are missing, and says which.
# Used by scripts/compare.sh and scripts/test.sh; safe to run again (it installs nothing twice).
set -euo pipefail

# chromium: the headless browser that opens the page of iolab lessons in the test lessons_browser
# (tests/lessons_browser_test.py), with fonts-noto-cjk for the page's Chinese view (without a CJK
# font Chromium draws boxes); python3 runs that test. strace: the second source of iolab
# timeline (glibc's AIO helper threads, the libraries' own calls) and claim 9 of iolab lessons.
packages=(g++ cmake ninja-build make pkg-config libgtest-dev libcli11-dev liburing-dev libev-dev
          libevent-dev libasio-dev nlohmann-json3-dev netcat-openbsd clang-format git chromium
          fonts-noto-cjk python3 strace)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "setup: all packages present (${packages[*]})"
    exit 0
fi

echo "setup: installing missing Debian packages: ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then
    sudo=()
elif command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
else
    echo "setup: not root and no sudo: install as root: apt-get install ${missing[*]}" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
