// The reactor's machinery: the demultiplexer's three epoll calls, the handler table, and the
// dispatch loop. See reactor.hpp for the picture.

#include "08_reactor/reactor.hpp"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cerrno>

#include "common/net.hpp"
#include "common/trace.hpp"

namespace reactor {

namespace {

uint32_t to_epoll(uint32_t interest) {
    return ((interest & kReadable) ? EPOLLIN : 0u) | ((interest & kWritable) ? EPOLLOUT : 0u);
}

}  // namespace

// ---- The demultiplexer ------------------------------------------------------------------------

Demultiplexer::Demultiplexer() : ready_(256) {
    // One epoll instance: a kernel object holding the interest list (a red-black tree keyed by
    // fd) and the ready list, which the kernel fills from the sockets' wakeup callbacks.
    epfd_.reset(TRACE_IO("epoll_create1", -1, ::epoll_create1(EPOLL_CLOEXEC)));
    if (!epfd_) {
        iolab::throw_errno("epoll_create1");
    }
}

void Demultiplexer::add(int fd, uint32_t interest) {
    epoll_event ev{};
    ev.events = to_epoll(interest);
    ev.data.fd = fd;
    if (TRACE_IO("epoll_ctl", fd, ::epoll_ctl(epfd_.get(), EPOLL_CTL_ADD, fd, &ev)) < 0) {
        iolab::throw_errno("epoll_ctl ADD fd " + std::to_string(fd));
    }
}

void Demultiplexer::modify(int fd, uint32_t interest) {
    epoll_event ev{};
    ev.events = to_epoll(interest);
    ev.data.fd = fd;
    // Cannot fail for a descriptor we added and have not closed.
    TRACE_IO("epoll_ctl", fd, ::epoll_ctl(epfd_.get(), EPOLL_CTL_MOD, fd, &ev));
}

void Demultiplexer::remove(int fd) {
    // Needed although close(2) would drop the fd from the interest list: the descriptor is
    // closed only after this dispatch round, and not at all while another process or a dup
    // holds the same open file.
    TRACE_IO("epoll_ctl", fd, ::epoll_ctl(epfd_.get(), EPOLL_CTL_DEL, fd, nullptr));
}

int Demultiplexer::wait(int timeout_ms) {
    // The only place this thread sleeps. The kernel copies at most ready_.size() events out of
    // its ready list; the rest stay there for the next call (level-triggered).
    int nready = TRACE_IO(
        "epoll_wait", -1,
        ::epoll_wait(epfd_.get(), ready_.data(), static_cast<int>(ready_.size()), timeout_ms));
    if (nready < 0) {
        return 0;  // EINTR: a signal; the loop looks at its flags and waits again
    }
    if (static_cast<size_t>(nready) == ready_.size()) {
        ready_.resize(ready_.size() * 2);  // a busy server: take more per call next time
    }
    return nready;
}

// ---- The waker: how another thread gets the loop's attention ---------------------------------

// An eventfd is a kernel counter behind a descriptor: write(2) adds to it and makes it readable,
// read(2) returns the sum and resets it. Any number of post()s before the loop wakes cost one
// wakeup.
class Reactor::Waker : public EventHandler {
public:
    explicit Waker(Reactor& r) : reactor_(r) {}
    int handle() const override { return reactor_.wake_fd_.get(); }
    void handle_read() override {
        uint64_t count;
        TRACE_IO("read", handle(), ::read(handle(), &count, sizeof count));
        reactor_.run_posted();
    }

private:
    Reactor& reactor_;
};

// ---- The reactor ------------------------------------------------------------------------------

Reactor::Reactor() : buffer_(new char[kBufferSize]), now_(Clock::now()) {
    wake_fd_.reset(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    if (!wake_fd_) {
        iolab::throw_errno("eventfd");
    }
    register_handler(std::make_unique<Waker>(*this), kReadable);
}

Reactor::~Reactor() {
    // Handlers close their descriptors as they are destroyed; the waker's fd is a member and
    // closes last.
    slots_.clear();
    retired_.clear();
}

EventHandler& Reactor::register_handler(std::unique_ptr<EventHandler> h, uint32_t interest) {
    int fd = h->handle();
    assert(fd >= 0);
    if (static_cast<size_t>(fd) >= slots_.size()) {
        slots_.resize(static_cast<size_t>(fd) + 1);
    }
    assert(!slots_[fd].handler);
    demux_.add(fd, interest);
    slots_[fd] = {std::move(h), interest};
    return *slots_[fd].handler;
}

void Reactor::set_events(EventHandler& h, uint32_t interest) {
    Slot& s = slots_[h.handle()];
    if (s.interest != interest) {
        s.interest = interest;
        demux_.modify(h.handle(), interest);
    }
}

uint32_t Reactor::events(const EventHandler& h) const {
    return slots_[h.handle()].interest;
}

void Reactor::remove_handler(EventHandler& h) {
    int fd = h.handle();
    demux_.remove(fd);
    retired_.push_back(std::move(slots_[fd].handler));
    slots_[fd].interest = 0;
}

EventHandler* Reactor::handler(int fd) const {
    if (fd < 0 || static_cast<size_t>(fd) >= slots_.size()) {
        return nullptr;
    }
    return slots_[fd].handler.get();
}

void Reactor::every(std::chrono::milliseconds period, std::function<void()> fn) {
    timers_.push_back({period, Clock::now() + period, std::move(fn)});
}

void Reactor::post(std::function<void()> fn) {
    bool was_empty;
    {
        std::lock_guard lock(posted_mutex_);
        was_empty = posted_.empty();
        posted_.push_back(std::move(fn));
    }
    if (was_empty) {
        uint64_t one = 1;
        TRACE_IO("write", wake_fd_.get(), ::write(wake_fd_.get(), &one, sizeof one));
    }
}

void Reactor::run_posted() {
    std::vector<std::function<void()>> batch;
    {
        std::lock_guard lock(posted_mutex_);
        batch.swap(posted_);
    }
    for (auto& fn : batch) {
        fn();
    }
}

int Reactor::next_timeout() const {
    if (timers_.empty()) {
        return -1;
    }
    auto next = std::min_element(timers_.begin(), timers_.end(), [](auto& a, auto& b) {
                    return a.next < b.next;
                })->next;
    auto ms = std::chrono::ceil<std::chrono::milliseconds>(next - Clock::now()).count();
    return static_cast<int>(std::max<decltype(ms)>(ms, 0));
}

void Reactor::run_timers() {
    for (Timer& t : timers_) {
        if (now_ >= t.next) {
            t.next = now_ + t.period;
            t.fn();
        }
    }
}

// listing: loop
// The dispatcher proper: the readiness the demultiplexer found goes to the handler registered
// for that descriptor, if it still is registered and still wants that event.
void Reactor::dispatch(int fd, uint32_t revents) {
    EventHandler* h = handler(fd);
    if (h == nullptr) {
        return;  // removed earlier in this round
    }
    if (slots_[fd].interest & kReadable) {
        if (revents & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
            h->handle_read();
        }
    } else if (revents & (EPOLLERR | EPOLLHUP)) {
        h->handle_error();
    }
    // The read handler may have removed the handler or changed its interest.
    if (handler(fd) == h && (slots_[fd].interest & kWritable) &&
        (revents & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
        h->handle_write();
    }
}

void Reactor::run() {
    stopping_ = false;
    while (!stopping_) {
        int nready = demux_.wait(next_timeout());
        now_ = Clock::now();
        for (int i = 0; i < nready && !stopping_; ++i) {
            dispatch(demux_.ready_fd(i), demux_.ready_events(i));
        }
        run_timers();
        retired_.clear();  // the handlers removed this round: destroy them, close their fds
    }
}
// end listing: loop

}  // namespace reactor
