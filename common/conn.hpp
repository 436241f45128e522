// What every connection-holding model does the same way, written once: the limits on one
// connection, the deadline lists behind --idle-timeout, --request-timeout and the lingering close,
// the refusal of a connection we cannot keep, and the spare descriptor that lets accept(2) turn
// a client away when the process is out of descriptors. docs/listings.md says why each policy is
// what it is; the models call these at the line where the kernel is involved and say so there.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <string_view>

#include "fd.hpp"
#include "qa.hpp"

namespace iolab {

using Clock = std::chrono::steady_clock;

// Stop reading from a connection while this many reply bytes wait for it: a client that sends
// requests but never reads its replies must not grow our memory without bound.
inline constexpr size_t kHighWater = 256 * 1024;
// An output buffer larger than this is freed once it has been sent, so an idle connection keeps
// no big buffer.
inline constexpr size_t kKeepOut = 4096;
// How long a connection we close on our own (QUIT, over-long line, a timeout) gets to read our
// last line before we close it: we shut down our write side, discard what it still sends, and
// close when it closes or this runs out.
inline constexpr auto kLinger = std::chrono::seconds(1);
// New connections taken per wake-up at most. Accepting until EAGAIN without a bound lets a
// connect storm starve the connections already held.
inline constexpr int kAcceptBudget = 64;

// One kind of deadline (idle, request, linger) for many connections. Every entry waits the same
// limit, so entries armed in time order are also in deadline order: arm() appends, and only the
// front can be due. Arming, re-arming, cancelling and expiring are O(1), and finding the next
// deadline never scans the connections (that would make every idle connection cost something
// on every pass of the loop). A limit of zero turns the list off: arm() does nothing.
template <class T>
class TimerList {
public:
    // One per connection per list, a member of the connection. Destroying it takes it off its
    // list, so closing a connection needs no bookkeeping here.
    class Entry {
    public:
        explicit Entry(T* owner) : owner_(owner) {}
        Entry(const Entry&) = delete;
        Entry& operator=(const Entry&) = delete;
        ~Entry() {
            if (list_ != nullptr) {
                list_->cancel(*this);
            }
        }
        bool armed() const { return list_ != nullptr; }
        Clock::time_point due() const { return due_; }

    private:
        friend class TimerList;
        T* owner_;
        TimerList* list_ = nullptr;
        Entry* prev_ = nullptr;
        Entry* next_ = nullptr;
        Clock::time_point due_{};
    };

    explicit TimerList(Clock::duration limit) : limit_(limit) {}
    TimerList(const TimerList&) = delete;
    TimerList& operator=(const TimerList&) = delete;
    ~TimerList() {
        while (head_ != nullptr) {
            cancel(*head_);
        }
    }

    bool enabled() const { return limit_ > Clock::duration::zero(); }

    // (Re)starts e's countdown: due at now + limit.
    void arm(Entry& e, Clock::time_point now) {
        if (!enabled()) {
            return;
        }
        cancel(e);
        e.due_ = now + limit_;
        e.list_ = this;
        e.prev_ = tail_;
        (tail_ != nullptr ? tail_->next_ : head_) = &e;
        tail_ = &e;
    }

    void cancel(Entry& e) {
        if (e.list_ != this) {
            return;
        }
        (e.prev_ != nullptr ? e.prev_->next_ : head_) = e.next_;
        (e.next_ != nullptr ? e.next_->prev_ : tail_) = e.prev_;
        e.prev_ = e.next_ = nullptr;
        e.list_ = nullptr;
    }

    // The owner of the oldest entry if it is due by `now`, taken off the list; else nullptr.
    T* pop_expired(Clock::time_point now) {
        if (head_ == nullptr || head_->due_ > now) {
            return nullptr;
        }
        Entry& e = *head_;
        cancel(e);
        return e.owner_;
    }

    std::optional<Clock::time_point> next_due() const {
        if (head_ == nullptr) {
            return std::nullopt;
        }
        return head_->due_;
    }

private:
    Clock::duration limit_;
    Entry* head_ = nullptr;
    Entry* tail_ = nullptr;
};

// The earliest of several lists' next deadlines, or nullopt when none is armed.
template <class... Lists>
std::optional<Clock::time_point> earliest_deadline(const Lists&... lists) {
    std::optional<Clock::time_point> next;
    for (auto due : {lists.next_due()...}) {
        if (due && (!next || *due < *next)) {
            next = due;
        }
    }
    return next;
}

// --request-timeout, after each read has been parsed: the request timer runs while the parser
// holds an unfinished line, counted from that line's first byte. So it starts when a read leaves
// an unfinished line behind and none was pending (or the read ended the previous line), is not
// restarted by more bytes of the same line (which is what sheds a client that trickles a byte at
// a time), and stops when no unfinished line is left.
template <class T>
void track_request(TimerList<T>& timers, typename TimerList<T>::Entry& timer, const LineParser& in,
                   bool line_ended, Clock::time_point now) {
    if (in.buffered() == 0) {
        timers.cancel(timer);
    } else if (line_ended || !timer.armed()) {
        timers.arm(timer, now);
    }
}

// Milliseconds from now until `deadline` rounded up (a wait that wakes early only loops), or -1
// for no deadline: the timeout argument of poll(2) and epoll_wait(2).
int timeout_ms(std::optional<Clock::time_point> deadline, Clock::time_point now);

// Turns a just-accepted connection away and closes it: one line (`ERR server full`), then a
// close that does not destroy the line. A fresh socket's send buffer is empty, so one
// non-blocking send takes the whole line. A request the client already sent would make close(2)
// answer with RST, and a RST can destroy the line before the client reads it, so we shut down
// our write side first (FIN after the line) and read away whatever has arrived. Counts
// stats.refused.
void refuse(ServerStats& stats, int conn_fd, std::string_view line = kServerFull);

// A descriptor held in reserve (/dev/null) for the moment the process runs out of them. Then
// accept(2) fails with EMFILE (or ENFILE) and leaves the connection in the backlog, so the
// listening socket stays readable and a level-triggered loop would wake for it forever. Giving
// up the spare makes room to accept that one client, refuse it, and take the spare back.
class SpareFd {
public:
    SpareFd();  // opens /dev/null; throws std::system_error
    // Call when accept(2) failed with EMFILE or ENFILE. Returns true if a client was turned
    // away (more may be waiting), false if accept(2) still failed (the backlog was empty).
    bool refuse_one(int listen_fd, ServerStats& stats);

private:
    Fd fd_;
};

}  // namespace iolab
