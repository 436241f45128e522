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
    char line[160];
    int n = std::snprintf(line, sizeof line, "%10lld %s fd=%d ret=%s dur_us=%lld\n", at, call, fd,
                          ret, dur);
    if (n > 0) {
        size_t len =
            static_cast<size_t>(n) < sizeof line ? static_cast<size_t>(n) : sizeof line - 1;
        ssize_t ignored = ::write(STDERR_FILENO, line, len);
        (void)ignored;
    }
}

}  // namespace iolab::trace
