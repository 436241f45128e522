// One client served with blocking calls, from its first byte to its close: the lesson of
// 01_blocking, and the loop that every blocking model runs for one connection. 01 runs it on its
// only thread, 02_thread_per_conn on a thread per connection, 02_thread_per_conn_pool on a
// worker, 02_process_per_conn in a child process. What those models add is who runs this loop,
// never a different loop, so it is written once, here, beside the model whose lesson it is.
//
// The socket is in blocking mode. recv(2) sleeps through both phases of a read: until bytes
// arrive (phase 1, waiting) and while the kernel copies them into our buffer (phase 2). send(2)
// sleeps while the socket's send buffer is full. Nothing else in the loop waits.
//
// The two deadlines (docs/listings.md, Timers) are the kernel's to enforce here: before each
// recv, SO_RCVTIMEO is set to the time left until the earlier of the idle and the request
// deadline, so the one blocking call that waits for the client gives up with EAGAIN when the
// first of them passes. SO_RCVTIMEO is a length of time counted from each call, not a point in
// time, so it is set anew before every recv while a deadline is armed (one setsockopt per
// read; none at all when both timeouts are off). SO_SNDTIMEO is the idle limit, set once: a
// client that stops reading is dropped when a send has waited that long.
#pragma once

#include <sys/socket.h>
#include <sys/time.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <string>
#include <string_view>

#include "common/conn.hpp"
#include "common/fd.hpp"
#include "common/net.hpp"
#include "common/options.hpp"
#include "common/qa.hpp"
#include "common/stop.hpp"
#include "common/trace.hpp"

namespace iolab {

// One connection and its two deadlines. Each connection waits on its own thread or process, so
// each has its own deadline lists, with itself as the only entry: the arming rules are those of
// the event-driven models (common/conn.hpp), and the next deadline is the front of a list.
struct Conn {
    Conn(Fd conn_fd, const ServerOptions& o, ServerStats& st)
        : fd(std::move(conn_fd)),
          in(o.max_line),
          opt(o),
          stats(st),
          idle_timers(o.idle_limit()),
          request_timers(o.mode == Mode::qa ? o.request_limit() : Clock::duration::zero()) {}
    Fd fd;
    LineParser in;
    std::string out;       // replies to one read, sent with one write_all
    bool closing = false;  // QUIT, over-long line or a timeout: our last line, then linger
    const ServerOptions& opt;
    ServerStats& stats;
    TimerList<Conn> idle_timers, request_timers;
    TimerList<Conn>::Entry idle_timer{this};
    TimerList<Conn>::Entry request_timer{this};
};

inline void answer(Conn& c, std::string_view data);
inline bool on_writable(Conn& c);
inline bool set_recv_timeout(Conn& c);

// Serves the client until it leaves, a deadline passes, or the server stops. Returns with the
// socket still open: the caller forgets it wherever it was registered, then calls close_conn.
// listing: loop
inline void serve(Conn& c) {
    char buf[65536];  // this connection's read buffer, on its own thread's stack
    if (c.opt.idle_timeout > 0) {
        set_io_timeouts(c.fd.get(), c.opt.idle_timeout);  // SO_SNDTIMEO: a client that never reads
    }
    c.idle_timers.arm(c.idle_timer, Clock::now());
    while (!c.closing && !stop_requested() && set_recv_timeout(c)) {
        // Phase 1 and phase 2 both happen inside this one call: it returns only once bytes
        // have arrived and been copied into buf, or the client is gone, or SO_RCVTIMEO ran out.
        ssize_t n = TRACE_IO("recv", c.fd.get(), ::recv(c.fd.get(), buf, sizeof buf, 0));
        if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) {
            continue;  // a signal, or SO_RCVTIMEO: the loop's condition looks at the deadlines
        }
        if (n <= 0) {
            return;  // 0: the client shut down its side (or a stop did); < 0: a reset
        }
        if (c.idle_timers.enabled()) {
            c.idle_timers.arm(c.idle_timer, Clock::now());  // bytes arrived: idle starts again
        }
        if (c.opt.mode == Mode::echo) {
            c.out.append(buf, static_cast<size_t>(n));
        } else {
            answer(c, {buf, static_cast<size_t>(n)});
        }
        if (!on_writable(c)) {
            return;  // the client is gone, or stopped reading for the whole idle limit
        }
    }
    on_writable(c);  // the last line of a timeout, if one was added
}
// end listing: loop

// ---- the handlers ----

// QUIT, an over-long line or a timeout: our last line; close_conn then lingers.
inline void start_closing(Conn& c, std::string_view last_line) {
    c.out += last_line;
    c.closing = true;
    c.idle_timers.cancel(c.idle_timer);
    c.request_timers.cancel(c.request_timer);
}

// Answers every complete request line in `data`, appending the replies to c.out in order.
inline void answer(Conn& c, std::string_view data) {
    bool line_ended = false;
    c.in.feed(data);
    while (auto line = c.in.next()) {
        line_ended = true;
        Request req = parse_request(*line);
        // Only the thread or process that owns this connection waits here.
        if (req.verb == Verb::work && !block_for_work(req.work_ms)) {
            return;  // stopping
        }
        append_reply(c.out, req, c.stats);
        c.stats.requests.fetch_add(1, std::memory_order_relaxed);
        if (req.verb == Verb::quit) {
            start_closing(c, "");
            return;
        }
    }
    if (c.in.too_long()) {
        start_closing(c, too_long_reply(c.opt.max_line));
        return;
    }
    if (c.request_timers.enabled()) {
        track_request(c.request_timers, c.request_timer, c.in, line_ended, Clock::now());
    }
}

// Sends everything owed, in one blocking write_all (it finishes short sends and retries EINTR).
// Returns false if the client is gone, or SO_SNDTIMEO ran out because it does not read.
inline bool on_writable(Conn& c) {
    int rc = write_all(c.fd.get(), c.out);
    c.out.clear();
    if (c.out.capacity() > kKeepOut) {
        std::string().swap(c.out);
    }
    return rc == 0;
}

// ---- the edge cases ----

// The deadlines before the next recv. If one has passed, its last line goes into c.out and this
// returns false. Otherwise SO_RCVTIMEO is set to the time left until the earlier of the two.
inline bool set_recv_timeout(Conn& c) {
    if (!c.idle_timers.enabled() && !c.request_timers.enabled()) {
        return true;  // SO_RCVTIMEO stays zero, which means recv waits for as long as it takes
    }
    auto now = Clock::now();
    if (c.request_timers.pop_expired(now) != nullptr) {
        start_closing(c, kRequestTimeout);
        return false;
    }
    if (c.idle_timers.pop_expired(now) != nullptr) {
        start_closing(c, kIdleTimeout);
        return false;
    }
    timeval tv{};  // zero: no deadline is armed (no unfinished line, no idle limit)
    if (auto next = earliest_deadline(c.idle_timers, c.request_timers)) {
        // A zero timeval would turn the timeout off: wait at least a microsecond. The kernel
        // counts the wait in clock ticks; a recv that gives up a little early only loops.
        auto us = std::max<long long>(
            std::chrono::ceil<std::chrono::microseconds>(*next - now).count(), 1);
        tv.tv_sec = static_cast<time_t>(us / 1000000);
        tv.tv_usec = static_cast<suseconds_t>(us % 1000000);
    }
    TRACE_IO("setsockopt", c.fd.get(),
             ::setsockopt(c.fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv));
    return true;
}

// The connection is over. After a last line (QUIT, over-long line, a timeout) the close is
// polite: shutdown(SHUT_WR) sends FIN after the line, and what the client still sends is read
// and discarded until it closes or kLinger passes. A plain close(2) with unread input would send
// RST, and a RST can destroy the line before the client reads it.
inline void close_conn(Conn& c) {
    if (c.closing) {
        shutdown_and_drain(c.fd, static_cast<int>(std::chrono::milliseconds(kLinger).count()));
    }
    c.fd.reset();
}

}  // namespace iolab
