// 04_select_poll: the same server as 04_select, on poll(2) instead of select(2).
//
// The model (IO multiplexing): every socket is non-blocking, and the one place the server sleeps
// is poll(2). Before each call the loop builds an array of struct pollfd {fd, events, revents}
// from scratch: the listening socket and stop_fd() always with POLLIN, each connection with
// POLLIN while we are willing to take more from it, and with POLLOUT only while it has replies
// the kernel would not take yet. poll blocks in phase 1 (waiting for data) for all of them at
// once; when it returns, recv(2) and send(2) do phase 2 (the copy) without ever waiting, because
// the kernel just said they can make progress.
//
// What the kernel guarantees: poll is level-triggered. A socket with unread bytes is reported
// readable on every call until we read them, so one recv per wake-up is enough. A new
// connection waiting in the backlog makes the listening socket readable; an EOF or a reset makes
// a connection readable too (recv then returns 0 or an error).
//
// Limits: a pollfd names its descriptor instead of being a bit at its position, so there is no
// FD_SETSIZE: the server holds as many connections as --max-conns and RLIMIT_NOFILE allow. But
// each call copies the whole array into the kernel and back, and both sides scan every entry:
// O(n) per wake-up even if one socket is active (05_epoll is not). A WORK request runs
// on the only thread, so it stalls every client for its duration.
//
// Run it:    ./build/bin/04_select_poll_server          (listens on 127.0.0.1:9004)
// Talk:      nc 127.0.0.1 9004    in two terminals; WORK 3000 in one freezes the other.
// Watch:     strace -e trace=poll,ppoll,accept4,recvfrom,sendto ./build/bin/04_select_poll_server
//            shows each pollfd array going in and the revents coming back;
//            or run with --trace.
//            ss -tn 'sport = :9004' lists the connections and their queues.
//
// The layout, the names and the policies (accept, read, write, timers, refusal) are the same in
// every model: docs/listings.md.

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <memory>
#include <optional>
#include <string>
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
    ServerStats stats{"04_select_poll"};
    Fd listen_fd;
    SpareFd spare_fd;                          // given up for a moment at EMFILE
    int max_conns = 0;                         // --max-conns: no FD_SETSIZE cap for poll
    std::vector<std::unique_ptr<Conn>> conns;  // indexed by conn_fd
    TimerList<Conn> idle_timers, request_timers, linger_timers;
    Clock::time_point now;  // when the current poll returned
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
int run(const ServerOptions& opt) {
    Server s(opt);
    s.listen_fd = listen_tcp(opt.host, opt.port, SOCK_NONBLOCK);
    s.max_conns = opt.max_conns;  // a pollfd holds any descriptor number
    announce_listening(s.listen_fd.get(), s.stats.model, opt);

    std::optional<Clock::time_point> deadline;  // the next idle, request or linger timeout
    std::vector<pollfd> pfds;                   // [0] listen_fd, [1] stop_fd(), then conn_fds
    while (!stop_requested()) {
        pfds.clear();
        pfds.push_back({s.listen_fd.get(), POLLIN, 0});
        pfds.push_back({stop_fd(), POLLIN, 0});
        for (const auto& c : s.conns) {
            if (c == nullptr) {
                continue;
            }
            short events = 0;
            if (!c->peer_done && (c->closing || c->pending() < kHighWater)) {
                events |= POLLIN;
            }
            if (c->pending() > 0) {
                events |= POLLOUT;
            }
            pfds.push_back({c->fd.get(), events, 0});
        }
        int ms = timeout_ms(deadline, Clock::now());

        // Phase 1 for every socket at once: the thread sleeps here, and only here.
        int nready = TRACE_IO("poll", -1, ::poll(pfds.data(), pfds.size(), ms));
        if (nready < 0 && errno != EINTR) {
            throw_errno("poll");
        }
        s.now = Clock::now();
        if (nready > 0 && (pfds[1].revents & POLLIN)) {
            break;
        }
        if (nready > 0 && (pfds[0].revents & POLLIN)) {
            on_accept(s);  // new conn_fds are not in this pass's array
        }
        // Phase 2, for the ready ones: scan every entry, as the kernel did.
        for (size_t i = 2; nready > 0 && i < pfds.size(); ++i) {
            Conn* c = s.conns[static_cast<size_t>(pfds[i].fd)].get();
            short revents = pfds[i].revents;
            if ((revents & POLLOUT) && !on_writable(s, *c)) {
                continue;
            }
            // POLLHUP and POLLERR come whether asked for or not; recv turns them into an EOF or
            // an error, so that one left unread cannot make poll return at once forever.
            if (revents & (POLLIN | POLLHUP | POLLERR)) {
                on_readable(s, *c);
            }
        }
        deadline = expire_timers(s);
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
            // Out of descriptors, the client stays in the backlog and the listening socket stays
            // readable: the spare descriptor makes room to turn it away (common/conn.hpp).
            if ((errno == EMFILE || errno == ENFILE) &&
                s.spare_fd.refuse_one(s.listen_fd.get(), s.stats)) {
                continue;
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

// One recv per wake-up: poll is level-triggered and reports the rest on the next pass.
// Returns false if the connection is over.
bool on_readable(Server& s, Conn& c) {
    ssize_t n = TRACE_IO("recv", c.fd.get(), ::recv(c.fd.get(), s.buf, sizeof s.buf, 0));
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
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
            return true;  // the send buffer is full: POLLOUT says when it has room
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
    CommandLine cmd{"04_select_poll_server",
                    "04_select_poll: one thread, non-blocking sockets, poll(2)"};
    ServerOptions opt = server_defaults(4);
    cmd.add_server_options(opt);
    if (int rc = cmd.parse(argc, argv); rc >= 0) {
        return rc;
    }
    // A client that vanishes turns our next send into EPIPE; the sends pass MSG_NOSIGNAL, and
    // ignoring SIGPIPE as well keeps any other write from killing the server.
    std::signal(SIGPIPE, SIG_IGN);
    try {
        install_stop_handlers();
        return run(opt);
    } catch (const std::exception& e) {
        return report_setup_failure(cmd.name(), e);
    }
}
