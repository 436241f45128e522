// 08_reactor: a small Reactor, built by hand. The seed's three parts, by name:
//
//   Demultiplexer  waits for readiness on every registered descriptor at once. The kernel
//                  provides it; here it is epoll (epoll_create1, epoll_ctl, epoll_wait).
//   Dispatcher     Reactor::run(): wait on the demultiplexer, then call the handler that was
//                  registered for each ready descriptor, one after the other, in this thread.
//   EventHandler   what the application registers: an object that owns a descriptor and knows
//                  what to do when it is readable or writable (the Acceptor, the Connection).
//
// The order of calls is always the same:
//
//   application            Reactor (dispatcher)           Demultiplexer (epoll)      kernel
//   register_handler(h) ──> slots_[fd] = h ─────────────> epoll_ctl(ADD, fd) ──────> watches fd
//                           run(): wait ────────────────> epoll_wait ─ ─ sleeps ─ ─  data arrives
//                           <── ready: fd 7 readable ──── returns nready=1
//   h.handle_read() <────── dispatch to slots_[7]
//   recv, parse, answer, set_events(h, kReadable | kWritable) ──> epoll_ctl(MOD)
//   return ───────────────> next wait
//
// The inversion of control is the point: the application never calls recv "to see whether"; the
// reactor calls the application when a recv will not block. It is the size of the core of redis's
// ae.c: a handler table indexed by fd, an interest mask per fd, periodic timers, and a way for
// other threads to hand the loop work (post, woken by an eventfd), which the multi-loop and the
// worker-pool variants need.
//
// The reactor is still synchronous: a handler that blocks (WORK 500) blocks the dispatcher, and
// every other handler of this reactor waits for it. server_multi.cpp and server_workers.cpp are
// the two usual answers.
#pragma once

#include <sys/epoll.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "common/fd.hpp"

namespace reactor {

using iolab::Fd;
using Clock = std::chrono::steady_clock;

// Interest and readiness, in the reactor's words rather than epoll's.
inline constexpr uint32_t kReadable = 1;
inline constexpr uint32_t kWritable = 2;

class EventHandler {
public:
    virtual ~EventHandler() = default;
    // The descriptor this handler watches (the pattern's "handle").
    virtual int handle() const = 0;
    // Called when the descriptor is readable: data, EOF, or a pending error (recv reports it).
    virtual void handle_read() = 0;
    // Called when the descriptor is writable (only while kWritable is in its interest).
    virtual void handle_write() {}
    // Called when the kernel reports an error or hangup while the handler is not interested in
    // reading (the kernel reports EPOLLERR and EPOLLHUP whatever the interest): the peer is gone.
    virtual void handle_error() {}
};

// The demultiplexer: epoll, and nothing else. Level-triggered: a descriptor is reported on every
// wait for as long as it is ready, so a handler may take one bite and leave the rest for the next
// pass (fairness between connections comes for free).
class Demultiplexer {
public:
    Demultiplexer();
    void add(int fd, uint32_t interest);
    void modify(int fd, uint32_t interest);
    void remove(int fd);
    // Sleeps until something is ready or `timeout_ms` passes (-1: no limit). Returns nready.
    int wait(int timeout_ms);
    int ready_fd(int i) const { return ready_[i].data.fd; }
    uint32_t ready_events(int i) const { return ready_[i].events; }

private:
    Fd epfd_;
    std::vector<epoll_event> ready_;
};

class Reactor {
public:
    Reactor();
    Reactor(const Reactor&) = delete;
    Reactor& operator=(const Reactor&) = delete;
    ~Reactor();

    // Registers `h` for `interest`; the reactor owns it from now on.
    EventHandler& register_handler(std::unique_ptr<EventHandler> h, uint32_t interest);
    // Changes what `h` waits for; no syscall if nothing changes.
    void set_events(EventHandler& h, uint32_t interest);
    uint32_t events(const EventHandler& h) const;
    // Unregisters `h`. It is destroyed (and its descriptor closed) after the current dispatch
    // round, so a handler may remove itself and return, and a later event in the same round for
    // the same fd finds an empty slot instead of a freed object or a reused descriptor.
    void remove_handler(EventHandler& h);
    // The handler registered for `fd`, or nullptr.
    EventHandler* handler(int fd) const;

    // Calls `fn` every `period`, from the loop, between dispatch rounds.
    void every(std::chrono::milliseconds period, std::function<void()> fn);
    // Thread-safe: runs `fn` in the loop's thread soon (an eventfd wakes the demultiplexer).
    void post(std::function<void()> fn);

    // The dispatcher: wait, dispatch, run timers and posted functions, until stop().
    void run();
    void stop() { stopping_ = true; }

    // The time at the start of this dispatch round (one clock read per round, as libev's ev_now).
    Clock::time_point now() const { return now_; }
    // One read buffer for every handler of this loop: a handler copies what it must keep.
    std::span<char> buffer() { return {buffer_.get(), kBufferSize}; }

private:
    class Waker;
    struct Slot {
        std::unique_ptr<EventHandler> handler;
        uint32_t interest = 0;
    };
    struct Timer {
        std::chrono::milliseconds period;
        Clock::time_point next;
        std::function<void()> fn;
    };
    static constexpr size_t kBufferSize = 64 * 1024;

    void dispatch(int fd, uint32_t revents);
    int next_timeout() const;
    void run_timers();
    void run_posted();

    Demultiplexer demux_;
    std::vector<Slot> slots_;  // indexed by fd, as ae's events[]
    std::vector<std::unique_ptr<EventHandler>> retired_;
    std::vector<Timer> timers_;
    std::unique_ptr<char[]> buffer_;
    Clock::time_point now_;
    bool stopping_ = false;

    Fd wake_fd_;  // an eventfd: post() writes to it, the Waker handler reads it
    std::mutex posted_mutex_;
    std::vector<std::function<void()>> posted_;
};

}  // namespace reactor
