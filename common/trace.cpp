#include "trace.hpp"

#include <unistd.h>

#include <cstdio>
#include <cstring>

namespace iolab::trace {

bool g_enabled = false;
std::atomic<uint64_t> g_calls{0};

namespace {
Clock::time_point g_origin;
}

void enable() {
    g_origin = Clock::now();
    g_enabled = true;
}

void record(const char* call, int fd, long result, Clock::time_point start) {
    auto end = Clock::now();
    using std::chrono::duration_cast;
    using std::chrono::microseconds;
    long long at = duration_cast<microseconds>(start - g_origin).count();
    long long dur = duration_cast<microseconds>(end - start).count();
    char ret[48];
    if (result < 0) {
        const char* name = ::strerrorname_np(static_cast<int>(-result));
        if (name != nullptr) {
            std::snprintf(ret, sizeof ret, "-%s", name);
        } else {
            std::snprintf(ret, sizeof ret, "%ld", result);
        }
    } else {
        std::snprintf(ret, sizeof ret, "%ld", result);
    }
    // mono_ns is the start on CLOCK_MONOTONIC (steady_clock's clock on Linux), the one clock
    // every process on the machine shares, so a client's send and this call can be set side by
    // side. gettid(2) is asked every time rather than cached: a forked child (02_process_per_conn)
    // would inherit a cached value from the thread that forked it.
    long long mono =
        std::chrono::duration_cast<std::chrono::nanoseconds>(start.time_since_epoch()).count();
    char line[224];
    int n =
        std::snprintf(line, sizeof line, "%10lld %s fd=%d ret=%s dur_us=%lld mono_ns=%lld tid=%d\n",
                      at, call, fd, ret, dur, mono, static_cast<int>(::gettid()));
    if (n > 0) {
        size_t len =
            static_cast<size_t>(n) < sizeof line ? static_cast<size_t>(n) : sizeof line - 1;
        ssize_t ignored = ::write(STDERR_FILENO, line, len);
        (void)ignored;
    }
}

}  // namespace iolab::trace
