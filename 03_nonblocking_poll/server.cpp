// 03_nonblocking_poll: one thread, non-blocking sockets, and a loop that asks every socket in
// turn whether it has anything. The "not recommended" model, built correctly so its cost shows.
//
// The model: every socket has O_NONBLOCK set. A call that would have to wait does not wait; it
// fails at once with EAGAIN ("nothing yet, try again"). So one thread can look after many
// sockets: each pass of the loop calls accept(2) on the listening socket, then send(2) (if
// output is pending) and recv(2) on every connection, and moves on whenever the kernel says
// EAGAIN. There is no wait call: the loop is the lesson.
//
// The two phases of IO: phase 1 (waiting for data) no longer blocks anyone; instead the process
// asks, and asks, and asks. Phase 2 (the kernel copying bytes into our buffer) still happens
// inside recv(2), synchronously, when the data is there. The kernel never tells us which socket
// is ready; we find out by calling, and almost every call comes back EAGAIN. STATS eagain=N
// counts them.
//
// Limits: the loop never sleeps, so the server takes a whole core even with no client at all;
// the cost of each pass grows with the number of connections, ready or not. --sleep-us N sleeps
// between passes: less CPU, but up to N microseconds more latency for every request. A WORK
// request runs on the only thread, so it stalls every client for its duration.
//
// Run it:    ./build/bin/03_nonblocking_poll_server           (listens on 127.0.0.1:9003)
// Talk:      nc 127.0.0.1 9003   then PING, STATS (twice: see eagain= climb while you type)
// Watch:     top -p $(pgrep -f 03_nonblocking_poll_server)    about 100% CPU with no clients
//            strace -c -p $(pgrep -f 03_nonblocking_poll_server)   (Ctrl-C: a wall of accept4)
//            --trace prints every one of those calls: -EAGAIN, -EAGAIN, -EAGAIN, ...
//
// The layout, the names and the policies (accept, read, write, timers, refusal) are the same in
// every model: docs/listings.md.

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/cli.hpp"
#include "common/conn.hpp"
#include "common/net.hpp"
#include "common/options.hpp"
#include "common/qa.hpp"
#include "common/stop.hpp"
#include "common/trace.hpp"

using namespace iolab;

namespace {

struct Conn {
    Conn(int conn_fd, size_t max_line) : fd(conn_fd), in(max_line) {}
    Fd fd;
    LineParser in;
    std::string out;  // bytes owed to the client; the first out_sent are already sent
    size_t out_sent = 0;
    bool peer_done = false;  // recv returned 0: the client has shut down its write side
    bool closing = false;    // QUIT, over-long line or a timeout: send what is owed, then linger
    bool wr_shut = false;    // shutdown(SHUT_WR) done
    TimerList<Conn>::Entry idle_timer{this};
    TimerList<Conn>::Entry request_timer{this};
    TimerList<Conn>::Entry linger_timer{this};
    size_t pending() const { return out.size() - out_sent; }
};

struct Server {
    explicit Server(const ServerOptions& o)
        : opt(o),
          idle_timers(o.idle_limit()),
          request_timers(o.mode == Mode::qa ? o.request_limit() : Clock::duration::zero()),
          linger_timers(kLinger) {}
    const ServerOptions& opt;
    ServerStats stats{"03_nonblocking_poll"};
    Fd listen_fd;
    SpareFd spare_fd;                          // given up for a moment at EMFILE
    int max_conns = 0;                         // --max-conns
    std::vector<std::unique_ptr<Conn>> conns;  // indexed by conn_fd
    TimerList<Conn> idle_timers, request_timers, linger_timers;
    Clock::time_point now;  // when the current pass began
    uint64_t eagain = 0;    // calls that came back EAGAIN: the price of asking instead of waiting
    char buf[65536];        // one read buffer for the whole loop
};

void on_accept(Server& s);
bool on_readable(Server& s, Conn& c);
void answer(Server& s, Conn& c, std::string_view data);
bool on_writable(Server& s, Conn& c);
void start_closing(Server& s, Conn& c, std::string_view last_line);
void close_conn(Server& s, Conn& c);
std::optional<Clock::time_point> expire_timers(Server& s);

// listing: loop
int run(const ServerOptions& opt, int sleep_us) {
    Server s(opt);
    s.listen_fd = listen_tcp(opt.host, opt.port, SOCK_NONBLOCK);
    s.max_conns = opt.max_conns;
    s.stats.extra = [&s] { return "eagain=" + std::to_string(s.eagain); };
    announce_listening(s.listen_fd.get(), s.stats.model, opt);

    // The busy loop. Nothing here waits for the kernel: every call returns at once, with bytes,
    // a connection, or EAGAIN. A stop signal is noticed within one pass.
    while (!stop_requested()) {
        s.now = Clock::now();
        on_accept(s);  // accept4 until EAGAIN: the empty backlog answers almost every pass
        for (size_t fd = 0; fd < s.conns.size(); ++fd) {
            Conn* c = s.conns[fd].get();
            if (c == nullptr) {
                continue;
            }
            if (c->pending() > 0 && !on_writable(s, *c)) {
                continue;
            }
            // No recv after EOF, nor while kHighWater is owed, unless we are closing (discarding).
            if (!c->peer_done && (c->closing || c->pending() < kHighWater)) {
                on_readable(s, *c);  // most passes: EAGAIN, nothing has arrived
            }
        }
        expire_timers(s);  // every pass: there is no wait whose timeout could bring us back
        if (sleep_us > 0) {
            std::this_thread::sleep_for(std::chrono::microseconds(sleep_us));
        }
    }
    return 0;  // ~Server closes every connection and the listening socket
}
// end listing: loop

// ---- the handlers ----

void on_accept(Server& s) {
    for (int i = 0; i < kAcceptBudget; ++i) {
        int conn_fd =
            TRACE_IO("accept4", s.listen_fd.get(),
                     ::accept4(s.listen_fd.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (conn_fd < 0) {
            // Out of descriptors, the client stays in the backlog and every pass would fail on
            // it again: the spare descriptor makes room to turn it away (common/conn.hpp).
            if ((errno == EMFILE || errno == ENFILE) &&
                s.spare_fd.refuse_one(s.listen_fd.get(), s.stats)) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                ++s.eagain;  // nobody is waiting in the backlog
            }
            return;  // EAGAIN: the backlog is empty. ECONNABORTED and the like: next pass.
        }
        if (s.stats.conns.load(std::memory_order_relaxed) >= static_cast<uint64_t>(s.max_conns)) {
            refuse(s.stats, conn_fd);  // ERR server full
            continue;
        }
        set_nodelay(conn_fd);
        auto c = std::make_unique<Conn>(conn_fd, s.opt.max_line);
        s.idle_timers.arm(c->idle_timer, s.now);
        if (s.conns.size() <= static_cast<size_t>(conn_fd)) {
            s.conns.resize(static_cast<size_t>(conn_fd) + 1);
        }
        s.conns[static_cast<size_t>(conn_fd)] = std::move(c);
        s.stats.accepted.fetch_add(1, std::memory_order_relaxed);
        s.stats.conns.fetch_add(1, std::memory_order_relaxed);
    }
}

// One recv per pass: whatever it leaves in the socket, the next pass asks for again.
// Returns false if the connection is over.
bool on_readable(Server& s, Conn& c) {
    ssize_t n = TRACE_IO("recv", c.fd.get(), ::recv(c.fd.get(), s.buf, sizeof s.buf, 0));
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            ++s.eagain;  // nothing has arrived: the answer to almost every call
            return true;
        }
        if (errno == EINTR) {
            return true;
        }
        close_conn(s, c);  // ECONNRESET and the like: the client is gone
        return false;
    }
    if (n == 0) {
        if (c.wr_shut) {
            close_conn(s, c);  // our last line and FIN are out, and the client has closed too
            return false;
        }
        c.peer_done = true;  // send what is still owed (echo: the rest of the stream), then close
        return on_writable(s, c);
    }
    if (c.closing) {
        return true;  // lingering: read only so that close(2) finds no unread input
    }
    s.idle_timers.arm(c.idle_timer, s.now);
    if (s.opt.mode == Mode::echo) {
        c.out.append(s.buf, static_cast<size_t>(n));
    } else {
        answer(s, c, {s.buf, static_cast<size_t>(n)});
    }
    return on_writable(s, c);  // all replies to this read in one send
}

// Answers every complete request line in `data`, appending the replies to c.out in order.
void answer(Server& s, Conn& c, std::string_view data) {
    bool line_ended = false;
    c.in.feed(data);
    while (auto line = c.in.next()) {
        line_ended = true;
        Request req = parse_request(*line);
        // The whole loop waits here, every other connection with it.
        if (req.verb == Verb::work && !block_for_work(req.work_ms)) {
            return;  // stopping
        }
        append_reply(c.out, req, s.stats);
        s.stats.requests.fetch_add(1, std::memory_order_relaxed);
        if (req.verb == Verb::quit) {
            start_closing(s, c, "");
            return;
        }
    }
    if (c.in.too_long()) {
        start_closing(s, c, too_long_reply(s.opt.max_line));
        return;
    }
    track_request(s.request_timers, c.request_timer, c.in, line_ended, s.now);
}

// Sends what the kernel takes now. Returns false if the connection is over.
bool on_writable(Server& s, Conn& c) {
    while (c.pending() > 0) {
        size_t len = c.pending();
        ssize_t n = TRACE_IO("send", c.fd.get(),
                             ::send(c.fd.get(), c.out.data() + c.out_sent, len, MSG_NOSIGNAL));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            close_conn(s, c);  // EPIPE, ECONNRESET: the client is gone
            return false;
        }
        if (n < 0) {
            ++s.eagain;  // the send buffer is full: the next pass tries again
            return true;
        }
        c.out_sent += static_cast<size_t>(n);
        if (static_cast<size_t>(n) < len) {
            return true;  // a short send means the send buffer is full too
        }
    }
    c.out.clear();
    c.out_sent = 0;
    if (c.out.capacity() > kKeepOut) {
        std::string().swap(c.out);
    }
    if (c.peer_done) {
        close_conn(s, c);  // the client sent FIN and has every byte we owed it
        return false;
    }
    if (c.closing && !c.wr_shut) {
        // FIN after our last line. We keep reading (and discarding) until the client closes
        // too: close(2) with unread input would send RST, which can destroy the line.
        TRACE_IO("shutdown", c.fd.get(), ::shutdown(c.fd.get(), SHUT_WR));
        c.wr_shut = true;
    }
    return true;
}

// ---- the edge cases ----

// QUIT, an over-long line or a timeout: our last line, then the lingering close.
void start_closing(Server& s, Conn& c, std::string_view last_line) {
    c.out += last_line;
    c.closing = true;
    s.idle_timers.cancel(c.idle_timer);
    s.request_timers.cancel(c.request_timer);
    s.linger_timers.arm(c.linger_timer, s.now);
}

void close_conn(Server& s, Conn& c) {
    s.stats.conns.fetch_sub(1, std::memory_order_relaxed);
    // ~Conn: ~Fd closes the socket, and its timer entries leave their lists.
    s.conns[static_cast<size_t>(c.fd.get())].reset();
}

// The deadlines that are due; returns the next one.
std::optional<Clock::time_point> expire_timers(Server& s) {
    while (Conn* c = s.linger_timers.pop_expired(s.now)) {
        close_conn(s, *c);  // it had its time to read our last line
    }
    while (Conn* c = s.idle_timers.pop_expired(s.now)) {
        start_closing(s, *c, kIdleTimeout);
        on_writable(s, *c);
    }
    while (Conn* c = s.request_timers.pop_expired(s.now)) {
        start_closing(s, *c, kRequestTimeout);
        on_writable(s, *c);
    }
    return earliest_deadline(s.idle_timers, s.request_timers, s.linger_timers);
}

}  // namespace

int main(int argc, char** argv) {
    CommandLine cmd{"03_nonblocking_poll_server",
                    "03_nonblocking_poll: one thread polling non-blocking sockets in a busy loop"};
    ServerOptions opt = server_defaults(3);
    cmd.add_server_options(opt);
    int sleep_us = 0;
    cmd.add_option("--sleep-us", sleep_us,
                   "Sleep this many microseconds between passes: less CPU, more latency", 0,
                   1000000);
    if (int rc = cmd.parse(argc, argv); rc >= 0) {
        return rc;
    }
    // A client that vanishes turns our next send into EPIPE; the sends pass MSG_NOSIGNAL, and
    // ignoring SIGPIPE as well keeps any other write from killing the server.
    std::signal(SIGPIPE, SIG_IGN);
    try {
        install_stop_handlers();
        return run(opt, sleep_us);
    } catch (const std::exception& e) {
        return report_setup_failure(cmd.name(), e);
    }
}
