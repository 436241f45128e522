#include "stop.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>

#include "net.hpp"

namespace iolab {

namespace {

std::atomic<bool> g_stop{false};
int g_pipe[2] = {-1, -1};
static_assert(std::atomic<int>::is_always_lock_free,
              "a signal handler may only touch lock-free atomics");
std::atomic<int> g_wake[kWakeSlots] = {-1, -1, -1, -1, -1, -1, -1, -1};

extern "C" void on_stop_signal(int) {
    int saved = errno;
    g_stop.store(true);
    char byte = 1;
    // Async-signal-safe: a write to a non-blocking pipe. If the pipe is full, a byte is already
    // waiting, which is all the loop needs to see.
    ssize_t ignored = ::write(g_pipe[1], &byte, 1);
    (void)ignored;
    for (auto& slot : g_wake) {
        int fd = slot.load();
        if (fd >= 0) {
            ::shutdown(fd, SHUT_RDWR);
        }
    }
    errno = saved;
}

}  // namespace

void install_stop_handlers() {
    if (g_pipe[0] < 0 && ::pipe2(g_pipe, O_NONBLOCK | O_CLOEXEC) < 0) {
        throw_errno("pipe2");
    }
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;  // no SA_RESTART: blocking calls return EINTR
    if (::sigaction(SIGINT, &sa, nullptr) < 0 || ::sigaction(SIGTERM, &sa, nullptr) < 0) {
        throw_errno("sigaction SIGINT/SIGTERM");
    }
}

bool stop_requested() {
    return g_stop.load();
}

int stop_fd() {
    return g_pipe[0];
}

void wake_on_stop(int fd) {
    for (auto& slot : g_wake) {
        int expected = -1;
        if (slot.compare_exchange_strong(expected, fd)) {
            return;
        }
    }
}

void forget_on_stop(int fd) {
    for (auto& slot : g_wake) {
        int expected = fd;
        if (slot.compare_exchange_strong(expected, -1)) {
            return;
        }
    }
}

}  // namespace iolab
