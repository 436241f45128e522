// 06_sigio_rt: signal-driven IO with F_SETSIG and a real-time signal, taken synchronously.
//
// The model: like 06_sigio, every socket has an owner (F_SETOWN) and O_ASYNC, so the kernel
// signals the process when the socket changes state. fcntl(F_SETSIG, SIGRTMIN) changes which
// signal, and that changes what a signal is worth. Real-time signals queue: every event is its
// own signal, and its siginfo carries si_fd (which descriptor) and si_band (the poll bits: POLLIN,
// POLLOUT, POLLHUP, ...). So a wake-up names the sockets to serve, not all of them. This is
// Linux's own extension; it is the closest signals come to epoll.
//
// No handler runs at all: the signals stay blocked and sigtimedwait(2) takes them from the
// queue, like a read from an event queue; its timeout is the earliest idle, request or linger
// deadline. Each pass takes what is queued (at most kSignalBudget) and serves each socket named
// once, with one recv. A signal reports an arrival, not a level: what a recv leaves in a socket
// raises no new signal. So a connection that gave us bytes goes on a still-readable list, served
// by the next pass without sleeping, until its recv says EAGAIN. That is the read budget: a
// client that keeps its socket full (and the queue full of its signals) cannot hold the loop.
//
// What the kernel guarantees, and where it stops: the queue is bounded (RLIMIT_SIGPENDING, per
// user). When it is full, the kernel cannot queue the event and raises plain SIGIO instead,
// which queues no more than once and names no descriptor. Events have been lost, so on SIGIO this
// server does what 06_sigio does on every wake-up: a full scan. The real-time signals still
// queued are stale by then and cost one recv returning EAGAIN. A stale signal can also name a
// descriptor that has since been closed (and maybe reused by a new connection): serving the
// wrong socket once is harmless, because every read is non-blocking.
//
// Limits: one signal per event, so a busy socket costs many signals (each a trip through the
// kernel's signal code); the queue can overflow under load; WORK stalls every client.
//
// Run it:    ./build/bin/06_sigio_rt_server             (listens on 127.0.0.1:9006)
// Talk:      nc 127.0.0.1 9006
// Watch:     strace -e trace=fcntl,rt_sigtimedwait,recvfrom,sendto ./build/bin/06_sigio_rt_server
//            shows each siginfo with its si_fd and si_band; or run with --trace.
//            STATS reports rt_signals= and overflows= (plain SIGIOs, each one a full scan);
//            `ulimit -i 1` before starting it makes the queue overflow at once.
//
// The layout, the names and the policies (accept, read, write, timers, refusal) are the same in
// every model: docs/listings.md.

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <utility>
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

// Signals taken per pass at most, so that a flood of events cannot keep the loop taking them
// instead of serving the sockets they name.
constexpr int kSignalBudget = 64;

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
    ServerStats stats{"06_sigio_rt"};
    Fd listen_fd;
    SpareFd spare_fd;                          // given up for a moment at EMFILE
    std::vector<std::unique_ptr<Conn>> conns;  // indexed by conn_fd
    std::vector<int> still_readable;           // to read next pass: no signal will say so
    int rt_sig = 0;                            // the signal F_SETSIG asks for
    uint64_t rt_signals = 0;                   // real-time signals taken
    uint64_t overflows = 0;                    // full scans after a plain SIGIO
    TimerList<Conn> idle_timers, request_timers, linger_timers;
    Clock::time_point now;  // when the current pass began
    char buf[65536];        // one read buffer for the whole loop
};

void on_accept(Server& s);
void serve(Server& s, int fd);
bool on_readable(Server& s, Conn& c);
void answer(Server& s, Conn& c, std::string_view data);
bool on_writable(Server& s, Conn& c);
const char* enable_sigio(int fd, int sig);
void start_closing(Server& s, Conn& c, std::string_view last_line);
void close_conn(Server& s, Conn& c);
std::optional<Clock::time_point> expire_timers(Server& s);

// listing: loop
int run(const ServerOptions& opt) {
    Server s(opt);
    s.stats.extra = [&s] {
        return "rt_signals=" + std::to_string(s.rt_signals) +
               " overflows=" + std::to_string(s.overflows);
    };
    // Both signals stay blocked for good: they are only ever taken by sigtimedwait. Blocked,
    // SIGIO cannot run its default action (terminate the process).
    const timespec no_wait{};
    s.rt_sig = SIGRTMIN;
    sigset_t waitset;
    sigemptyset(&waitset);
    sigaddset(&waitset, s.rt_sig);
    sigaddset(&waitset, SIGIO);
    if (::sigprocmask(SIG_BLOCK, &waitset, nullptr) < 0) {
        throw_errno("sigprocmask SIG_BLOCK SIGIO SIGRTMIN");
    }
    s.listen_fd = listen_tcp(opt.host, opt.port, SOCK_NONBLOCK);
    if (const char* failed = enable_sigio(s.listen_fd.get(), s.rt_sig)) {
        throw_errno(std::string(failed) + " (the listening socket)");
    }
    if (const char* failed = enable_sigio(stop_fd(), s.rt_sig)) {
        throw_errno(std::string(failed) + " (the stop pipe)");
    }
    announce_listening(s.listen_fd.get(), s.stats.model, opt);

    std::optional<Clock::time_point> deadline;  // the next idle, request or linger timeout
    while (!stop_requested()) {
        // Phase 1: take the next queued signal, or sleep until one comes or the deadline; not
        // at all while a connection is still readable. SIGTERM's handler ends it with EINTR.
        int ms = s.still_readable.empty() ? timeout_ms(deadline, Clock::now()) : 0;
        timespec ts{ms / 1000, (ms % 1000) * 1000000L};
        siginfo_t info{};
        int signo =
            TRACE_IO("sigtimedwait", -1, ::sigtimedwait(&waitset, &info, ms < 0 ? nullptr : &ts));
        s.now = Clock::now();
        std::vector<int> ready = std::exchange(s.still_readable, {});
        bool scan = false;
        for (int taken = 1; signo > 0; ++taken) {  // and what else is queued, up to the budget
            if (signo == SIGIO) {
                scan = true;  // the queue was full: events were lost, and SIGIO names none
            } else {
                ++s.rt_signals;
                ready.push_back(info.si_fd);
            }
            if (taken == kSignalBudget) {
                break;  // the rest stay queued for the next pass
            }
            signo = TRACE_IO("sigtimedwait", -1, ::sigtimedwait(&waitset, &info, &no_wait));
        }
        if (scan) {
            ++s.overflows;
            // Phase 2 for every connection: the lost events do not say which of them they were for.
            for (int fd = 0; fd < static_cast<int>(s.conns.size()); ++fd) {
                serve(s, fd);
            }
            on_accept(s);  // new conn_fds go on the still-readable list, for the next pass
        } else {
            // Each descriptor once, however many signals named it; the still-readable ones too.
            std::sort(ready.begin(), ready.end());
            ready.erase(std::unique(ready.begin(), ready.end()), ready.end());
            for (int fd : ready) {
                fd == s.listen_fd.get() ? on_accept(s) : serve(s, fd);
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
        if (s.stats.conns.load(std::memory_order_relaxed) >=
            static_cast<uint64_t>(s.opt.max_conns)) {
            refuse(s.stats, conn_fd);  // ERR server full
            continue;
        }
        if (const char* failed = enable_sigio(conn_fd, s.rt_sig)) {
            // No signal would ever come for it: turn this one away and serve the others.
            std::fprintf(stderr, "%s: %s (conn_fd %d): %s\n", s.stats.model.c_str(), failed,
                         conn_fd, std::strerror(errno));
            refuse(s.stats, conn_fd);
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
        s.still_readable.push_back(conn_fd);  // bytes that came before O_ASYNC raised no signal
    }
    // The budget ran out. The connections still in the backlog have raised their signals already.
    s.still_readable.push_back(s.listen_fd.get());
}

// si_band says what happened, but the cure is the same either way: send what is owed, then one
// recv if we take input from it now (the test 04 uses for its read set).
void serve(Server& s, int fd) {
    Conn* c =
        fd < static_cast<int>(s.conns.size()) ? s.conns[static_cast<size_t>(fd)].get() : nullptr;
    if (c == nullptr) {
        return;  // not a connection, or closed since it was listed
    }
    if (c->pending() > 0 && !on_writable(s, *c)) {
        return;
    }
    if (!c->peer_done && (c->closing || c->pending() < kHighWater)) {
        on_readable(s, *c);
    }
}

// One recv per pass: the read budget. What is left in the socket raises no new signal, and a
// short count does not prove it empty: a FIN or a reset queued behind the bytes is reported by
// the next recv, and its signal came with theirs. So the connection goes on the still-readable
// list and is read again next pass, until recv says EAGAIN. Returns false if the connection is
// over.
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
            close_conn(s, c);  // the client read our last line and closed
            return false;
        }
        c.peer_done = true;  // send what is still owed (echo: the rest of the stream), then close
        return on_writable(s, c);
    }
    s.still_readable.push_back(c.fd.get());
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
            return true;  // the send buffer is full: a signal with POLLOUT says when it has room
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

// Asks the kernel to queue `sig`, carrying `fd`, when `fd` changes state. Order matters: the
// owner and the signal first, then O_ASYNC, or the first events would go nowhere (or as SIGIO).
// Returns nullptr, or the fcntl that failed (errno says why). F_SETFL replaces the file status
// flags; every descriptor here has O_NONBLOCK and no other.
const char* enable_sigio(int fd, int sig) {
    if (TRACE_IO("fcntl", fd, ::fcntl(fd, F_SETOWN, ::getpid())) < 0) {
        return "fcntl F_SETOWN";
    }
    if (TRACE_IO("fcntl", fd, ::fcntl(fd, F_SETSIG, sig)) < 0) {
        return "fcntl F_SETSIG";
    }
    if (TRACE_IO("fcntl", fd, ::fcntl(fd, F_SETFL, O_NONBLOCK | O_ASYNC)) < 0) {
        return "fcntl F_SETFL O_ASYNC";
    }
    return nullptr;
}

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
    CommandLine cmd{"06_sigio_rt_server",
                    "06_sigio_rt: signal-driven IO, F_SETSIG and a real-time signal"};
    ServerOptions opt = server_defaults(6);
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
