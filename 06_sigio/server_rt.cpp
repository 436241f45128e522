// 06_sigio_rt: signal-driven IO with F_SETSIG and a real-time signal, taken synchronously.
//
// The model: like 06_sigio, every socket has an owner (F_SETOWN) and O_ASYNC, so the kernel
// signals the process when the socket changes state. fcntl(F_SETSIG, SIGRTMIN) changes which
// signal, and that changes what a signal is worth. Real-time signals queue: every event is its
// own signal, and its siginfo carries si_fd (which descriptor) and si_band (the poll bits: POLLIN,
// POLLOUT, POLLHUP, ...). So a wake-up names one socket, and the server serves that one socket,
// not all of them. This is Linux's own extension; it is the closest signals come to epoll.
//
// No handler runs at all: the signals stay blocked and sigtimedwait(2) takes the next one from
// the queue, like a read from an event queue. Its timeout is the nearest idle or linger deadline.
//
// What the kernel guarantees, and where it stops: the queue is bounded (RLIMIT_SIGPENDING, per
// user). When it is full, the kernel cannot queue the event and raises plain SIGIO instead,
// which queues no more than once and names no descriptor. Events have been lost, so on SIGIO this
// server does what 06_sigio does on every wake-up: a full scan, accepting and reading every
// socket until EAGAIN. Signals are taken lowest number first, so that SIGIO comes before the
// real-time signals still queued; those are stale by then and cost one recv returning EAGAIN.
// A stale signal can also name a descriptor that has since been closed (and maybe reused by a
// new connection): serving the wrong socket once is harmless, because every read is non-blocking.
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

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <map>
#include <optional>
#include <string>

#include "common/net.hpp"
#include "common/options.hpp"
#include "common/qa.hpp"
#include "common/stop.hpp"
#include "common/trace.hpp"

using namespace iolab;

namespace {

using Clock = std::chrono::steady_clock;

// Stop reading from a connection while this many reply bytes wait for it: a client that sends
// requests but never reads replies must not grow our memory without bound.
constexpr size_t kHighWater = 256 * 1024;
// How long a connection we are closing on our own gets to read our last line.
constexpr auto kLingerTime = std::chrono::seconds(1);

struct Conn {
    Conn(Fd conn_fd, size_t max_line)
        : fd(std::move(conn_fd)), in(max_line), last_active(Clock::now()) {}
    Fd fd;
    LineParser in;
    std::string out;  // replies the kernel has not taken yet, from out[sent] on
    size_t sent = 0;
    Clock::time_point last_active;
    bool peer_done = false;  // recv returned 0: send what is left, then close
    bool finishing = false;  // QUIT, over-long line or idle: flush, shut down, discard input
    bool shut_wr = false;
    Clock::time_point finish_by;
    size_t pending() const { return out.size() - sent; }
};

struct Server {
    explicit Server(const ServerOptions& o) : opt(o) {}
    const ServerOptions& opt;
    ServerStats stats{"06_sigio_rt"};
    Fd listen_fd;
    Fd spare_fd;  // held in reserve, so that EMFILE can still accept and turn a client away
    std::map<int, Conn> conns;                   // keyed by conn_fd
    char buf[65536];                             // one read buffer for the whole loop
    int rt_sig = 0;                              // the signal F_SETSIG asks for
    std::optional<Clock::time_point> timer_due;  // no deadline of any connection is earlier
    uint64_t rt_signals = 0;
    uint64_t overflows = 0;
};

// Asks the kernel to queue `sig`, carrying `fd`, when `fd` changes state. Order matters: the
// owner and the signal first, then O_ASYNC, or the first events would go nowhere (or as SIGIO).
bool enable_sigio(int fd, int sig) {
    if (::fcntl(fd, F_SETOWN, ::getpid()) < 0 || ::fcntl(fd, F_SETSIG, sig) < 0) {
        return false;
    }
    int flags = ::fcntl(fd, F_GETFL);
    return flags >= 0 && ::fcntl(fd, F_SETFL, flags | O_NONBLOCK | O_ASYNC) == 0;
}

void note_deadline(Server& s, Clock::time_point t) {
    if (!s.timer_due || t < *s.timer_due) {
        s.timer_due = t;
    }
}

void finish(Server& s, Conn& c, std::string_view last_words) {
    c.out += last_words;
    c.finishing = true;
    c.finish_by = Clock::now() + kLingerTime;
    note_deadline(s, c.finish_by);
}

// Turns a client away without keeping it: one best-effort send, then close.
void refuse(Server& s, int conn_fd) {
    TRACE_IO("send", conn_fd,
             ::send(conn_fd, kServerFull.data(), kServerFull.size(), MSG_NOSIGNAL | MSG_DONTWAIT));
    ::close(conn_fd);
    s.stats.refused.fetch_add(1, std::memory_order_relaxed);
}

std::map<int, Conn>::iterator close_conn(Server& s, std::map<int, Conn>::iterator it) {
    s.stats.conns.fetch_sub(1, std::memory_order_relaxed);
    return s.conns.erase(it);  // ~Fd closes the socket
}

bool on_readable(Server& s, Conn& c);

// Accepts until EAGAIN: one SIGIO may stand for many waiting connections.
void on_accept(Server& s) {
    for (;;) {
        int conn_fd =
            TRACE_IO("accept", s.listen_fd.get(),
                     ::accept4(s.listen_fd.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (conn_fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            if (errno == EMFILE && s.spare_fd) {
                // Out of descriptors. The clients in the backlog raise no new signal, so take
                // them now: free the spare, accept, refuse, take the spare back.
                s.spare_fd.reset();
                conn_fd = TRACE_IO("accept", s.listen_fd.get(),
                                   ::accept4(s.listen_fd.get(), nullptr, nullptr, SOCK_CLOEXEC));
                if (conn_fd >= 0) {
                    refuse(s, conn_fd);
                }
                s.spare_fd.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
                if (conn_fd < 0) {
                    return;  // EAGAIN: accept reports EMFILE before it looks at the backlog
                }
                continue;
            }
            return;  // EAGAIN: the backlog is empty
        }
        if (static_cast<int>(s.conns.size()) >= s.opt.max_conns ||
            !enable_sigio(conn_fd, s.rt_sig)) {
            refuse(s, conn_fd);
            continue;
        }
        set_nodelay(conn_fd);
        auto [it, added] = s.conns.try_emplace(conn_fd, Fd(conn_fd), s.opt.max_line);
        s.stats.accepted.fetch_add(1, std::memory_order_relaxed);
        s.stats.conns.fetch_add(1, std::memory_order_relaxed);
        if (s.opt.idle_timeout > 0) {
            note_deadline(
                s, it->second.last_active + std::chrono::duration_cast<Clock::duration>(
                                                std::chrono::duration<double>(s.opt.idle_timeout)));
        }
        // Bytes that arrived before O_ASYNC was on raised no signal: read them now.
        if (!on_readable(s, it->second)) {
            close_conn(s, it);
        }
    }
}

// Sends what the kernel will take now. Returns false if the connection is over.
bool on_writable(Conn& c) {
    while (c.pending() > 0) {
        ssize_t n = TRACE_IO("send", c.fd.get(),
                             ::send(c.fd.get(), c.out.data() + c.sent, c.pending(), MSG_NOSIGNAL));
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            // EAGAIN: the send buffer is full. The kernel remembers that we were refused and
            // queues a signal with POLLOUT in si_band once space frees up.
            return errno == EAGAIN || errno == EWOULDBLOCK;
        }
        c.sent += static_cast<size_t>(n);
        c.last_active = Clock::now();
    }
    c.out.clear();
    c.sent = 0;
    if (c.peer_done) {
        return false;  // everything answered and sent
    }
    if (c.finishing && !c.shut_wr) {
        // FIN after our last line. A plain close with unread input would send RST instead,
        // and a RST can destroy the line before the client reads it.
        ::shutdown(c.fd.get(), SHUT_WR);
        c.shut_wr = true;
    }
    return true;
}

// Every complete request line in this read: answer them all into c.out, in order.
void handle_requests(Server& s, Conn& c, size_t n) {
    c.in.feed(s.buf, n);
    while (auto line = c.in.next()) {
        Request req = parse_request(*line);
        if (req.verb == Verb::work && !block_for_work(req.work_ms)) {
            return;  // stopping
        }
        append_reply(c.out, req, s.stats);
        s.stats.requests.fetch_add(1, std::memory_order_relaxed);
        if (req.verb == Verb::quit) {
            finish(s, c, "");
            return;
        }
    }
    if (c.in.too_long()) {
        finish(s, c, too_long_reply(s.opt.max_line));
    }
}

// si_band says what happened, but either way the cure is the same: send what is pending, then
// read until EAGAIN (output that drained may let us read again), one write per read's batch.
bool on_readable(Server& s, Conn& c) {
    if (!on_writable(c)) {
        return false;
    }
    while (!c.peer_done && (c.finishing || c.pending() < kHighWater)) {
        ssize_t n = TRACE_IO("recv", c.fd.get(), ::recv(c.fd.get(), s.buf, sizeof s.buf, 0));
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return errno == EAGAIN || errno == EWOULDBLOCK;
        }
        if (n == 0) {
            if (c.finishing) {
                return false;  // the client read our last line and closed
            }
            c.peer_done = true;
            return on_writable(c);
        }
        c.last_active = Clock::now();
        if (c.finishing) {
            continue;  // discard: we only wait for the client to close
        }
        if (s.opt.mode == Mode::echo) {
            c.out.append(s.buf, static_cast<size_t>(n));
        } else {
            handle_requests(s, c, static_cast<size_t>(n));
        }
        if (!on_writable(c)) {
            return false;
        }
    }
    return true;
}

// Idle and linger deadlines. Returns false if the connection is over.
bool on_timer(Server& s, Conn& c, Clock::time_point now) {
    if (c.finishing) {
        return now < c.finish_by;
    }
    if (s.opt.idle_timeout > 0 &&
        now - c.last_active >= std::chrono::duration<double>(s.opt.idle_timeout)) {
        finish(s, c, kIdleTimeout);
        return on_writable(c);
    }
    return true;
}

std::optional<Clock::time_point> next_deadline(const Server& s) {
    std::optional<Clock::time_point> next;
    auto idle = std::chrono::duration_cast<Clock::duration>(
        std::chrono::duration<double>(s.opt.idle_timeout));
    for (const auto& [fd, c] : s.conns) {
        std::optional<Clock::time_point> t;
        if (c.finishing) {
            t = c.finish_by;
        } else if (s.opt.idle_timeout > 0) {
            t = c.last_active + idle;
        }
        if (t && (!next || *t < *next)) {
            next = t;
        }
    }
    return next;
}

// One real-time signal: one event on one descriptor.
void on_event(Server& s, int fd) {
    if (fd == s.listen_fd.get()) {
        on_accept(s);
        return;
    }
    auto it = s.conns.find(fd);
    if (it == s.conns.end()) {
        return;  // queued before that connection closed (or the stop pipe: the loop sees it)
    }
    if (!on_readable(s, it->second)) {
        close_conn(s, it);
    }
}

// Plain SIGIO: the queue overflowed and events were dropped. Serve every socket.
void on_overflow(Server& s) {
    on_accept(s);
    for (auto it = s.conns.begin(); it != s.conns.end();) {
        it = on_readable(s, it->second) ? std::next(it) : close_conn(s, it);
    }
}

// Looks at every connection only when the earliest deadline has come.
void on_timers(Server& s) {
    auto now = Clock::now();
    if (!s.timer_due || now < *s.timer_due) {
        return;
    }
    for (auto it = s.conns.begin(); it != s.conns.end();) {
        it = on_timer(s, it->second, now) ? std::next(it) : close_conn(s, it);
    }
    s.timer_due = next_deadline(s);
}

int run(const ServerOptions& opt) {
    Server s(opt);
    s.stats.extra = [&s] {
        return "rt_signals=" + std::to_string(s.rt_signals) +
               " overflows=" + std::to_string(s.overflows);
    };
    // Both signals stay blocked for good: they are only ever taken by sigtimedwait. Blocked,
    // SIGIO cannot run its default action (terminate the process).
    s.rt_sig = SIGRTMIN;
    sigset_t waitset;
    sigemptyset(&waitset);
    sigaddset(&waitset, s.rt_sig);
    sigaddset(&waitset, SIGIO);
    ::sigprocmask(SIG_BLOCK, &waitset, nullptr);

    s.listen_fd = listen_tcp(opt.host, opt.port, SOCK_NONBLOCK);
    s.spare_fd.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (!enable_sigio(s.listen_fd.get(), s.rt_sig) || !enable_sigio(stop_fd(), s.rt_sig)) {
        throw_errno("fcntl F_SETOWN/F_SETSIG/O_ASYNC");
    }
    announce_listening(s.listen_fd.get(), s.stats.model, opt);

    while (!stop_requested()) {
        timespec ts{};
        timespec* timeout = nullptr;  // no deadline: wait for the next signal
        if (s.timer_due) {
            auto ns = std::chrono::ceil<std::chrono::nanoseconds>(*s.timer_due - Clock::now());
            ns = std::max(ns, std::chrono::nanoseconds(0));
            ts.tv_sec = static_cast<time_t>(ns.count() / 1000000000);
            ts.tv_nsec = static_cast<long>(ns.count() % 1000000000);
            timeout = &ts;
        }

        // Phase 1: take the next queued signal, or sleep until one comes. SIGTERM's handler
        // ends the wait with EINTR; a deadline ends it with EAGAIN.
        siginfo_t info{};
        int signo = TRACE_IO("sigtimedwait", -1, ::sigtimedwait(&waitset, &info, timeout));
        if (signo == s.rt_sig) {
            ++s.rt_signals;
            on_event(s, info.si_fd);
        } else if (signo == SIGIO) {
            ++s.overflows;
            on_overflow(s);
        }
        on_timers(s);
    }
    return 0;  // ~Server closes every connection and the listening socket
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"06_sigio_rt: signal-driven IO, F_SETSIG and a real-time signal",
                 "06_sigio_rt_server"};
    ServerOptions opt = server_defaults(6);
    add_server_options(app, opt);
    if (int rc = parse_command_line(app, argc, argv); rc >= 0) {
        return rc;
    }
    // A client that vanishes turns our next send into EPIPE; the sends pass MSG_NOSIGNAL, and
    // ignoring SIGPIPE as well keeps any other write from killing the server.
    std::signal(SIGPIPE, SIG_IGN);
    try {
        install_stop_handlers();
        return run(opt);
    } catch (const std::exception& e) {
        return report_setup_failure(app.get_name(), e);
    }
}
