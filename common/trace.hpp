// --trace: one line on stderr per IO call a model makes, so that a student can see a blocking
// wait and a copy apart. The format is stable (iolab parses it):
//
//   <usec since start> <call> fd=<fd> ret=<bytes, count, or -ERRNO> dur_us=<usec inside the call>
//       mono_ns=<start on CLOCK_MONOTONIC, ns> tid=<gettid()>
//   e.g.   1534021 recv fd=7 ret=-EAGAIN dur_us=1 mono_ns=81234567890123 tid=4242
//
// The first five fields keep their meaning and order; later fields are only ever appended, so a
// script that reads the fields it knows by position keeps working. mono_ns and tid place every
// call of every thread and process on the one clock the machine shares (iolab timeline).
//
// Models wrap the call that defines them, leaving the call itself in plain view:
//   ssize_t n = TRACE_IO("recv", c.fd.get(), ::recv(c.fd.get(), buf, len, 0));
// A wrapped call that returns -1 is traced as -errno (errno is left as the call set it). Calls
// whose API returns -errno itself (liburing) are traced with trace::record().
// Every wrapped call is also counted, traced or not, for STATS syscalls= and iolab's figures.
#pragma once

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>

namespace iolab::trace {

using Clock = std::chrono::steady_clock;

extern bool g_enabled;
extern std::atomic<uint64_t> g_calls;

// Turns tracing on; the time origin is the moment of this call.
void enable();
inline bool enabled() {
    return g_enabled;
}
inline uint64_t calls() {
    return g_calls.load(std::memory_order_relaxed);
}
inline void count(uint64_t n = 1) {
    g_calls.fetch_add(n, std::memory_order_relaxed);
}

// Writes one trace line (a single write(2), so lines from threads do not interleave).
// `result` is the call's value, or a negative errno.
void record(const char* call, int fd, long result, Clock::time_point start);

}  // namespace iolab::trace

#define TRACE_IO(name, fd, expr)                                                                  \
    ([&]() {                                                                                      \
        ::iolab::trace::count();                                                                  \
        if (!::iolab::trace::enabled()) {                                                         \
            return (expr);                                                                        \
        }                                                                                         \
        auto trace_start_ = ::iolab::trace::Clock::now();                                         \
        auto trace_ret_ = (expr);                                                                 \
        int trace_errno_ = errno;                                                                 \
        ::iolab::trace::record((name), (fd), trace_ret_ == -1 ? -trace_errno_ : (long)trace_ret_, \
                               trace_start_);                                                     \
        errno = trace_errno_;                                                                     \
        return trace_ret_;                                                                        \
    }())
