// 04_select: one thread, many sockets, and select(2) to learn which of them are ready.
//
// The model (IO multiplexing): every socket is non-blocking, and the one place the server sleeps
// is select(2). Before each call the loop builds the fd sets from scratch (FD_ZERO, FD_SET, and
// maxfd, the highest descriptor plus one): the listening socket and stop_fd() always go into the
// read set, each connection goes into the read set while we are willing to take more from it,
// and into the write set only while it has replies the kernel would not take yet. select blocks
// in phase 1 (waiting for data) for all of them at once; when it returns, recv(2) and send(2) do
// phase 2 (the copy) without ever waiting, because the kernel just said they can make progress.
//
// What the kernel guarantees: select is level-triggered. A socket with unread bytes is reported
// readable on every call until we read them, so reading once per wake-up is enough. A new
// connection waiting in the backlog makes the listening socket readable; an EOF or a reset makes
// a connection readable too (recv then returns 0 or an error).
//
// Limits: an fd_set is a bitmap of FD_SETSIZE (1024) bits. A descriptor at or above it cannot
// be watched at all, and FD_SET on it writes past the end of the set (with _FORTIFY_SOURCE,
// glibc aborts instead). Such a connection gets "ERR server full" and is closed without ever
// touching an fd_set. Each call copies all three sets into the kernel and back, and both sides
// scan every bit up to maxfd: O(n) per wake-up even if one socket is active. A WORK request runs
// on the only thread, so it stalls every client for its duration.
//
// Run it:    ./build/bin/04_select_server               (listens on 127.0.0.1:9004)
// Talk:      nc 127.0.0.1 9004    in two terminals; WORK 3000 in one freezes the other.
// Watch:     strace -e trace=select,pselect6,accept4,recvfrom,sendto ./build/bin/04_select_server
//            (glibc calls pselect6) shows the sets going in and the ready ones coming back;
//            or run with --trace.
//            ss -tn 'sport = :9004' lists the connections and their queues.

#include <sys/select.h>
#include <sys/socket.h>
#include <fcntl.h>
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
    ServerStats stats{"04_select"};
    Fd listen_fd;
    Fd spare_fd;  // held in reserve, so that EMFILE can still accept and turn a client away
    int max_conns = 0;
    std::map<int, Conn> conns;  // keyed by conn_fd; every key is below FD_SETSIZE
    char buf[65536];            // one read buffer for the whole loop
};

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

void on_accept(Server& s) {
    for (;;) {
        int conn_fd =
            TRACE_IO("accept", s.listen_fd.get(),
                     ::accept4(s.listen_fd.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (conn_fd < 0) {
            if (errno == EMFILE && s.spare_fd) {
                // Out of descriptors, and the listening socket stays readable (level-triggered):
                // without this, select would return at once forever. Free the spare, take the
                // client, refuse it, take the spare back.
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
            return;  // EAGAIN: the backlog is empty. ECONNABORTED and the like: try next pass.
        }
        if (conn_fd >= FD_SETSIZE || static_cast<int>(s.conns.size()) >= s.max_conns) {
            refuse(s, conn_fd);  // never FD_SET a descriptor >= FD_SETSIZE
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
            // EAGAIN: the socket's send buffer is full; select will say when it has room.
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

// One recv per wake-up: select is level-triggered and will report the rest next time.
bool on_readable(Server& s, Conn& c) {
    ssize_t n = TRACE_IO("recv", c.fd.get(), ::recv(c.fd.get(), s.buf, sizeof s.buf, 0));
    if (n < 0) {
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
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
        return true;  // discard: we only wait for the client to close
    }
    if (s.opt.mode == Mode::echo) {
        c.out.append(s.buf, static_cast<size_t>(n));
    } else {
        handle_requests(s, c, static_cast<size_t>(n));
    }
    return on_writable(c);  // one batch of replies, one write
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

std::map<int, Conn>::iterator close_conn(Server& s, std::map<int, Conn>::iterator it) {
    s.stats.conns.fetch_sub(1, std::memory_order_relaxed);
    return s.conns.erase(it);  // ~Fd closes the socket
}

int run(const ServerOptions& opt) {
    Server s(opt);
    s.listen_fd = listen_tcp(opt.host, opt.port, SOCK_NONBLOCK);
    s.spare_fd.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    // --max-conns is capped: no more than FD_SETSIZE descriptors fit in a set.
    s.max_conns = std::min(opt.max_conns, FD_SETSIZE);
    announce_listening(s.listen_fd.get(), s.stats.model, opt);

    while (!stop_requested()) {
        fd_set rset;
        fd_set wset;
        FD_ZERO(&rset);
        FD_ZERO(&wset);
        FD_SET(s.listen_fd.get(), &rset);
        FD_SET(stop_fd(), &rset);
        int maxfd = std::max(s.listen_fd.get(), stop_fd());
        for (const auto& [fd, c] : s.conns) {
            if (!c.peer_done && (c.finishing || c.pending() < kHighWater)) {
                FD_SET(fd, &rset);
            }
            if (c.pending() > 0) {
                FD_SET(fd, &wset);
            }
            maxfd = std::max(maxfd, fd);
        }
        timeval tv{};
        timeval* timeout = nullptr;  // no deadline: sleep until some descriptor is ready
        if (auto next = next_deadline(s)) {
            auto us = std::chrono::ceil<std::chrono::microseconds>(*next - Clock::now()).count();
            us = std::max<long long>(us, 0);
            tv.tv_sec = static_cast<time_t>(us / 1000000);
            tv.tv_usec = static_cast<suseconds_t>(us % 1000000);
            timeout = &tv;
        }

        // Phase 1 for every socket at once: the thread sleeps here, and only here.
        int nready = TRACE_IO("select", -1, ::select(maxfd + 1, &rset, &wset, nullptr, timeout));
        if (nready < 0) {
            if (errno == EINTR) {
                continue;
            }
            throw_errno("select");
        }
        if (FD_ISSET(stop_fd(), &rset)) {
            break;
        }
        if (FD_ISSET(s.listen_fd.get(), &rset)) {
            on_accept(s);  // new conn_fds were not in this pass's sets: FD_ISSET is 0 for them
        }
        auto now = Clock::now();
        for (auto it = s.conns.begin(); it != s.conns.end();) {
            int fd = it->first;
            Conn& c = it->second;
            bool keep = true;
            if (FD_ISSET(fd, &rset)) {
                keep = on_readable(s, c);
            }
            if (keep && FD_ISSET(fd, &wset)) {
                keep = on_writable(c);
            }
            if (keep) {
                keep = on_timer(s, c, now);
            }
            it = keep ? std::next(it) : close_conn(s, it);
        }
    }
    return 0;  // ~Server closes every connection and the listening socket
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"04_select: one thread, non-blocking sockets, select(2)", "04_select_server"};
    ServerOptions opt = server_defaults(4);
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
