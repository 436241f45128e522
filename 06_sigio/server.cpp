// 06_sigio: signal-driven IO. The kernel sends SIGIO when a socket changes state.
//
// The model: each socket gets an owner, fcntl(F_SETOWN, getpid()), and the O_ASYNC flag. From
// then on the kernel raises SIGIO for that process whenever something happens on the socket: a
// connection arrives on the listening socket, data or a FIN or a reset arrives on a connection,
// send-buffer space frees up after a send came back short. The thread does not wait in a call
// that names sockets at all: it sleeps in sigsuspend(2) until a signal comes, then serves.
// recv(2) and send(2) still do phase 2 (the copy), on non-blocking sockets.
//
// What one SIGIO means: "something happened on at least one of your O_ASYNC descriptors". It
// carries no descriptor (si_fd is only filled in for the F_SETSIG variant, server_rt.cpp) and
// ordinary signals do not queue: ten sockets becoming readable while SIGIO is pending still
// leave one SIGIO pending. So every signal costs a full scan, one recv for each connection. And
// a signal reports an arrival, not a level: what a recv leaves in a socket raises no new SIGIO.
// So a connection that gave us bytes goes on a still-readable list, served by the next pass
// without sleeping, until its recv says EAGAIN. That is the read budget, one recv per connection
// per pass: a client that keeps its socket full cannot hold the loop.
//
// SIGIO and SIGALRM stay blocked while the loop serves; sigsuspend unblocks them and sleeps in
// one atomic step, so a signal raised while we were busy is pending and ends the next sleep at
// once instead of being lost between a check and the sleep. The idle, request and linger
// deadlines are a setitimer(2) alarm for the earliest one. The stop pipe (stop_fd()) gets
// O_ASYNC too, so SIGTERM at any moment also becomes a SIGIO.
//
// Limits: every wake-up costs a full scan, like select, plus the signal delivery. WORK stalls
// every client. It is rare for TCP (see README.md); its classic use is a UDP server, where SIGIO
// means "a datagram arrived" and nothing else.
//
// Run it:    ./build/bin/06_sigio_server                (listens on 127.0.0.1:9006)
// Talk:      nc 127.0.0.1 9006
// Watch:     strace -e trace=%signal,fcntl,recvfrom ./build/bin/06_sigio_server
//            prints "--- SIGIO {si_signo=SIGIO, si_code=SI_KERNEL} ---" per delivery; or --trace.
//            STATS reports wakeups= (sleeps ended by a signal).
//
// The layout, the names and the policies (accept, read, write, timers, refusal) are the same in
// every model: docs/listings.md.

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
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

// The handler of SIGIO and SIGALRM does nothing: they are delivered only inside sigsuspend, and
// its return is all the news. Without a handler SIGIO would end the process, its default action.
extern "C" void on_signal(int) {}

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
    ServerStats stats{"06_sigio"};
    Fd listen_fd;
    SpareFd spare_fd;                          // given up for a moment at EMFILE
    std::vector<std::unique_ptr<Conn>> conns;  // indexed by conn_fd
    std::vector<int> still_readable;           // to read next pass: no signal will say so
    bool alarm_armed = false;                  // setitimer holds a deadline
    uint64_t wakeups = 0;                      // sleeps ended by a signal
    TimerList<Conn> idle_timers, request_timers, linger_timers;
    Clock::time_point now;  // when the current pass began
    char buf[65536];        // one read buffer for the whole loop
};

void on_accept(Server& s);
void serve(Server& s, int fd);
bool on_readable(Server& s, Conn& c);
void answer(Server& s, Conn& c, std::string_view data);
bool on_writable(Server& s, Conn& c);
const char* enable_sigio(int fd);
void arm_alarm(Server& s, std::optional<Clock::time_point> deadline);
void start_closing(Server& s, Conn& c, std::string_view last_line);
void close_conn(Server& s, Conn& c);
std::optional<Clock::time_point> expire_timers(Server& s);

// listing: loop
int run(const ServerOptions& opt) {
    Server s(opt);
    s.stats.extra = [&s] { return "wakeups=" + std::to_string(s.wakeups); };
    // SIGIO and SIGALRM are blocked before anything can raise them: from now on they are only
    // delivered inside sigsuspend, which sleeps with the old mask, `wait_mask`.
    const timespec no_wait{};
    sigset_t blocked;
    sigset_t wait_mask;
    sigemptyset(&blocked);
    sigaddset(&blocked, SIGIO);
    sigaddset(&blocked, SIGALRM);
    if (::sigprocmask(SIG_BLOCK, &blocked, &wait_mask) < 0) {
        throw_errno("sigprocmask SIG_BLOCK SIGIO SIGALRM");
    }
    sigdelset(&wait_mask, SIGIO);
    sigdelset(&wait_mask, SIGALRM);
    struct sigaction sa {};
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_signal;
    if (::sigaction(SIGIO, &sa, nullptr) < 0) {
        throw_errno("sigaction SIGIO");
    }
    if (::sigaction(SIGALRM, &sa, nullptr) < 0) {
        throw_errno("sigaction SIGALRM");
    }
    s.listen_fd = listen_tcp(opt.host, opt.port, SOCK_NONBLOCK);
    if (const char* failed = enable_sigio(s.listen_fd.get())) {
        throw_errno(std::string(failed) + " (the listening socket)");
    }
    if (const char* failed = enable_sigio(stop_fd())) {
        throw_errno(std::string(failed) + " (the stop pipe)");
    }
    announce_listening(s.listen_fd.get(), s.stats.model, opt);

    std::optional<Clock::time_point> deadline;  // the next idle, request or linger timeout
    while (!stop_requested()) {
        // Phase 1: sleep until the kernel signals. While a connection is still readable, only
        // take a signal that is already pending: sigtimedwait with a zero timeout never sleeps.
        bool scan = true;
        if (s.still_readable.empty()) {
            arm_alarm(s, deadline);
            TRACE_IO("sigsuspend", -1, ::sigsuspend(&wait_mask));  // returns once a handler ran
            ++s.wakeups;
        } else {
            scan = TRACE_IO("sigtimedwait", -1, ::sigtimedwait(&blocked, nullptr, &no_wait)) > 0;
        }
        s.now = Clock::now();
        std::vector<int> ready = std::exchange(s.still_readable, {});
        if (scan) {
            // Phase 2 for every connection: the signal does not say which of them it is for.
            for (int fd = 0; fd < static_cast<int>(s.conns.size()); ++fd) {
                serve(s, fd);
            }
            on_accept(s);  // new conn_fds go on the still-readable list, for the next pass
        } else {
            for (int fd : ready) {  // no new signal: only those that may hold more
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
        if (const char* failed = enable_sigio(conn_fd)) {
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
    // The budget ran out. The connections still in the backlog have raised their SIGIO already.
    s.still_readable.push_back(s.listen_fd.get());
}

// The signal does not say what happened on this socket, or whether anything did: send what is
// owed, then one recv if we take input from it now (the test 04 uses for its read set).
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

// One recv per pass: the read budget. What is left in the socket raises no new SIGIO, and a
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
            return true;  // the send buffer is full: the kernel raises SIGIO when it has room
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

// Asks the kernel to signal this process when `fd` changes state. Order matters: the owner
// first, then O_ASYNC, or the first events would have nobody to go to. Returns nullptr, or the
// fcntl that failed (errno says why). F_SETFL replaces the file status flags; every descriptor
// here has O_NONBLOCK and no other.
const char* enable_sigio(int fd) {
    if (TRACE_IO("fcntl", fd, ::fcntl(fd, F_SETOWN, ::getpid())) < 0) {
        return "fcntl F_SETOWN";
    }
    if (TRACE_IO("fcntl", fd, ::fcntl(fd, F_SETFL, O_NONBLOCK | O_ASYNC)) < 0) {
        return "fcntl F_SETFL O_ASYNC";
    }
    return nullptr;
}

// SIGALRM at the next deadline, or never: an it_value of zero disarms the timer, so a deadline
// that is already due asks for one millisecond.
void arm_alarm(Server& s, std::optional<Clock::time_point> deadline) {
    if (!deadline && !s.alarm_armed) {
        return;
    }
    int ms = std::max(timeout_ms(deadline, Clock::now()), deadline ? 1 : 0);
    itimerval it{};
    it.it_value.tv_sec = ms / 1000;
    it.it_value.tv_usec = (ms % 1000) * 1000;
    if (::setitimer(ITIMER_REAL, &it, nullptr) < 0) {
        throw_errno("setitimer ITIMER_REAL");
    }
    s.alarm_armed = deadline.has_value();
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
    CommandLine cmd{"06_sigio_server", "06_sigio: signal-driven IO, O_ASYNC and SIGIO"};
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
