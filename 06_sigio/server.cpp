// 06_sigio: signal-driven IO. The kernel sends SIGIO when a socket changes state.
//
// The model: each socket gets an owner, fcntl(F_SETOWN, getpid()), and the O_ASYNC flag. From
// then on the kernel raises SIGIO for that process whenever something happens on the socket: a
// connection arrives on the listening socket, data or a FIN or a reset arrives on a connection,
// send-buffer space frees up after a send came back EAGAIN. The thread does not wait in a call
// that names sockets at all: it sleeps in sigsuspend(2) until a signal comes, then serves.
// recv(2) and send(2) still do phase 2 (the copy), on non-blocking sockets.
//
// What one SIGIO means: "something happened on at least one of your O_ASYNC descriptors". It
// carries no descriptor (si_fd is only filled in for the F_SETSIG variant, server_rt.cpp) and
// ordinary signals do not queue: ten sockets becoming readable while SIGIO is pending still
// leave one SIGIO pending. So after every wake-up this server scans everything: it accepts until
// EAGAIN and reads every connection until EAGAIN (or until its output is over the high-water
// mark). Anything left unread would get no new signal until the peer sent more.
//
// The handler only records (a sig_atomic_t flag, the only thing it may safely touch). SIGIO
// and SIGALRM stay blocked while the loop serves; sigsuspend unblocks them and sleeps in one
// atomic step, so a signal raised while we were busy is pending and ends the next sleep at once
// instead of being lost between a check and the sleep. --idle-timeout and the linger deadline
// are a setitimer(2) alarm, armed for the nearest deadline before each sleep. The stop pipe
// (stop_fd()) gets O_ASYNC too, so SIGTERM at any moment also becomes a SIGIO.
//
// Limits: every wake-up costs a full scan, like select, plus the signal delivery. Draining each
// socket until EAGAIN lets one busy client hold the loop while it keeps sending. WORK stalls
// every client. It is rare for TCP (see README.md); its classic use is a UDP server, where SIGIO
// means "a datagram arrived" and nothing else.
//
// Run it:    ./build/bin/06_sigio_server                (listens on 127.0.0.1:9006)
// Talk:      nc 127.0.0.1 9006
// Watch:     strace -e trace=fcntl,rt_sigsuspend,recvfrom,sendto,accept4
// ./build/bin/06_sigio_server
//            prints "--- SIGIO {si_signo=SIGIO, si_code=SI_KERNEL} ---" per delivery; or --trace.
//            STATS reports wakeups= (sleeps ended by a signal).

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
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

volatile sig_atomic_t g_sigio = 0;
volatile sig_atomic_t g_alarm = 0;

extern "C" void on_sigio(int) {
    g_sigio = 1;
}
extern "C" void on_sigalrm(int) {
    g_alarm = 1;
}

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
    ServerStats stats{"06_sigio"};
    Fd listen_fd;
    Fd spare_fd;  // held in reserve, so that EMFILE can still accept and turn a client away
    std::map<int, Conn> conns;  // keyed by conn_fd
    char buf[65536];            // one read buffer for the whole loop
    bool timer_armed = false;
    uint64_t wakeups = 0;
};

// Asks the kernel to signal this process when `fd` changes state. Order matters: the owner
// first, then O_ASYNC, or the first events would have nobody to go to.
bool enable_sigio(int fd) {
    if (::fcntl(fd, F_SETOWN, ::getpid()) < 0) {
        return false;
    }
    int flags = ::fcntl(fd, F_GETFL);
    return flags >= 0 && ::fcntl(fd, F_SETFL, flags | O_NONBLOCK | O_ASYNC) == 0;
}

void finish(Conn& c, std::string_view last_words) {
    c.out += last_words;
    c.finishing = true;
    c.finish_by = Clock::now() + kLingerTime;
}

// Turns a client away without keeping it: one best-effort send, then close.
void refuse(Server& s, int conn_fd) {
    TRACE_IO("send", conn_fd,
             ::send(conn_fd, kServerFull.data(), kServerFull.size(), MSG_NOSIGNAL | MSG_DONTWAIT));
    ::close(conn_fd);
    s.stats.refused.fetch_add(1, std::memory_order_relaxed);
}

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
                // Out of descriptors. The clients in the backlog raise no new SIGIO, so take
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
        // Bytes that arrive before O_ASYNC is on raise no signal; the scan that follows every
        // accept reads the new connection anyway.
        if (static_cast<int>(s.conns.size()) >= s.opt.max_conns || !enable_sigio(conn_fd)) {
            refuse(s, conn_fd);
            continue;
        }
        set_nodelay(conn_fd);
        s.conns.try_emplace(conn_fd, Fd(conn_fd), s.opt.max_line);
        s.stats.accepted.fetch_add(1, std::memory_order_relaxed);
        s.stats.conns.fetch_add(1, std::memory_order_relaxed);
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
            // raises SIGIO once space frees up.
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
            finish(c, "");
            return;
        }
    }
    if (c.in.too_long()) {
        finish(c, too_long_reply(s.opt.max_line));
    }
}

// We do not know what happened on this socket, or whether anything did: send what is pending,
// then read until EAGAIN, answering each read's batch with one write.
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
        finish(c, kIdleTimeout);
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

// SIGALRM at the nearest deadline, or never. setitimer with zero disarms it.
void arm_timer(Server& s, std::optional<Clock::time_point> when) {
    if (!when && !s.timer_armed) {
        return;
    }
    s.timer_armed = when.has_value();
    itimerval it{};
    if (when) {
        auto us = std::chrono::ceil<std::chrono::microseconds>(*when - Clock::now()).count();
        us = std::max<long long>(us, 1);  // zero would disarm
        it.it_value.tv_sec = static_cast<time_t>(us / 1000000);
        it.it_value.tv_usec = static_cast<suseconds_t>(us % 1000000);
    }
    ::setitimer(ITIMER_REAL, &it, nullptr);
}

std::map<int, Conn>::iterator close_conn(Server& s, std::map<int, Conn>::iterator it) {
    s.stats.conns.fetch_sub(1, std::memory_order_relaxed);
    return s.conns.erase(it);  // ~Fd closes the socket
}

int run(const ServerOptions& opt) {
    Server s(opt);
    s.stats.extra = [&s] { return "wakeups=" + std::to_string(s.wakeups); };
    // Block SIGIO and SIGALRM before anything can raise them; from now on they are only
    // delivered inside sigsuspend. `wait_mask` is the mask to sleep with: the old one.
    sigset_t blocked;
    sigset_t wait_mask;
    sigemptyset(&blocked);
    sigaddset(&blocked, SIGIO);
    sigaddset(&blocked, SIGALRM);
    ::sigprocmask(SIG_BLOCK, &blocked, &wait_mask);
    sigdelset(&wait_mask, SIGIO);
    sigdelset(&wait_mask, SIGALRM);
    // The handlers only record. sa_mask is empty and sa_flags 0: the signals arrive only inside
    // sigsuspend, which returns EINTR after the handler ran.
    struct sigaction sa {};
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_sigio;
    if (::sigaction(SIGIO, &sa, nullptr) < 0) {
        throw_errno("sigaction SIGIO");
    }
    sa.sa_handler = on_sigalrm;
    if (::sigaction(SIGALRM, &sa, nullptr) < 0) {
        throw_errno("sigaction SIGALRM");
    }

    s.listen_fd = listen_tcp(opt.host, opt.port, SOCK_NONBLOCK);
    s.spare_fd.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (!enable_sigio(s.listen_fd.get()) || !enable_sigio(stop_fd())) {
        throw_errno("fcntl F_SETOWN/O_ASYNC");
    }
    announce_listening(s.listen_fd.get(), s.stats.model, opt);

    while (!stop_requested()) {
        // Serve everything: this wake-up may stand for any number of sockets.
        on_accept(s);
        auto now = Clock::now();
        for (auto it = s.conns.begin(); it != s.conns.end();) {
            bool keep = on_readable(s, it->second) && on_timer(s, it->second, now);
            it = keep ? std::next(it) : close_conn(s, it);
        }
        arm_timer(s, next_deadline(s));

        // Phase 1: sleep until the kernel signals. SIGIO raised while we served is already
        // pending, so this returns at once and nothing is lost.
        while (!g_sigio && !g_alarm && !stop_requested()) {
            TRACE_IO("sigsuspend", -1, ::sigsuspend(&wait_mask));
        }
        g_sigio = 0;
        g_alarm = 0;
        ++s.wakeups;
    }
    return 0;  // ~Server closes every connection and the listening socket
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"06_sigio: signal-driven IO, O_ASYNC and SIGIO", "06_sigio_server"};
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
