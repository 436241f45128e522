// 05_epoll_et: one thread, one epoll instance, edge-triggered (EPOLLET).
//
// The same loop as server.cpp (read that first); what changes is what epoll_wait promises.
// Level-triggered, it reports a socket for as long as it is readable. Edge-triggered, it reports
// a socket when its state changes: new bytes arrived, buffer space freed up after the socket was
// full. If we read only part of what is there, no new edge comes until the client sends more, and
// a client waiting for the reply never will: the connection hangs. So every handler drains its
// socket: recv until EAGAIN (or EOF), accept until EAGAIN. EAGAIN is the kernel saying "your
// view is up to date; the next change will wake you".
//
// What ET buys: each socket is registered once, with EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
// and never modified. A writable socket is not reported over and over as it would be under LT,
// only when it becomes writable again after a send came back short, so there is no EPOLL_CTL_MOD
// to arm and disarm EPOLLOUT; that costs one syscall pair per transition in server.cpp. What it
// costs: the extra recv that returns EAGAIN, a reader that must never stop early by mistake, and
// fairness: a client that keeps its socket full keeps the loop on it (nginx and libuv cap the
// reads per wakeup and keep a list of sockets still to read; we do not).
//
// Stopping early on purpose (a client owed more than kHighWater bytes): no edge will tell us to
// resume, because the data is already there. We remember it (Conn::unread) and read again
// ourselves once the output has been sent.
//
// EMFILE: the same spare descriptor as server.cpp. Under ET it matters even more: the accept loop
// must reach EAGAIN, or the connections left in the backlog wait for the next client's edge.
//
// Run it:    ./build/bin/05_epoll_et_server            (listens on 127.0.0.1:9005)
// Watch:     strace -f -e trace=network,epoll_wait,epoll_ctl ./build/bin/05_epoll_et_server
//            (every recv that returns data is followed by one that returns EAGAIN; epoll_ctl
//            appears once per connection). ss -tnp 'sport = :9005'. --trace prints every call.

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <list>
#include <memory>
#include <string>
#include <vector>

#include "common/net.hpp"
#include "common/options.hpp"
#include "common/qa.hpp"
#include "common/stop.hpp"
#include "common/trace.hpp"

using namespace iolab;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int kMaxEvents = 1024;           // ready sockets taken per epoll_wait
constexpr size_t kHighWater = 256 * 1024;  // stop reading from a client owed this much
constexpr size_t kKeepOut = 4096;          // a larger output buffer is freed once it is sent
constexpr auto kLinger = std::chrono::seconds(1);

struct Conn {
    Conn(int fd_, size_t max_line) : fd(fd_), in(max_line) {}
    Fd fd;
    LineParser in;
    std::string out;  // bytes owed to the client; the first out_sent are already sent
    size_t out_sent = 0;
    bool peer_done = false;   // recv returned 0: the client has shut down its write side
    bool closing = false;     // QUIT, over-long line or idle: send what is owed, then linger
    bool wr_shut = false;     // shutdown(SHUT_WR) done
    bool unread = false;      // we stopped reading before EAGAIN: no edge will remind us
    Clock::time_point since;  // last request, or when the lingering close began
    std::list<Conn*>::iterator timer;  // our place in Server::idle or Server::lingering
};

struct Server {
    explicit Server(const ServerOptions& o) : opt(o) {}
    const ServerOptions& opt;
    ServerStats stats{"05_epoll_et"};
    Fd listen_fd, epfd, spare_fd;
    std::vector<std::unique_ptr<Conn>> conns;  // indexed by fd
    std::list<Conn*> idle;                     // open connections, least recently active first
    std::list<Conn*> lingering;                // closing connections, oldest first
    Clock::time_point now;                     // when the current epoll_wait returned
    // One read buffer for all connections: LineParser copies only a line cut in two by a read.
    char buf[65536];
};

void watch(Server& s, int fd, uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.fd = fd;
    if (TRACE_IO("epoll_ctl", fd, ::epoll_ctl(s.epfd.get(), EPOLL_CTL_ADD, fd, &ev)) < 0) {
        throw_errno("epoll_ctl ADD");
    }
}

void close_conn(Server& s, Conn& c) {
    (c.closing ? s.lingering : s.idle).erase(c.timer);
    s.stats.conns.fetch_sub(1, std::memory_order_relaxed);
    // close(2) also takes the socket out of the epoll set: no EPOLL_CTL_DEL needed.
    s.conns[c.fd.get()].reset();
}

// Sends what the socket buffer takes now. Returns false if the connection is gone.
bool flush(Server& s, Conn& c) {
    while (c.out_sent < c.out.size()) {
        size_t len = c.out.size() - c.out_sent;
        ssize_t n = TRACE_IO("send", c.fd.get(),
                             ::send(c.fd.get(), c.out.data() + c.out_sent, len, MSG_NOSIGNAL));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && errno != EAGAIN) {
            close_conn(s, c);  // EPIPE, ECONNRESET: the client is gone
            return false;
        }
        if (n < 0) {
            break;
        }
        c.out_sent += static_cast<size_t>(n);
        if (static_cast<size_t>(n) < len) {
            break;  // a short send means the socket buffer is full: an EPOLLOUT edge will come
        }
    }
    if (c.out_sent == c.out.size()) {
        c.out.clear();
        c.out_sent = 0;
        if (c.out.capacity() > kKeepOut) {
            std::string().swap(c.out);  // an idle connection keeps no big buffer
        }
        if (c.peer_done) {
            close_conn(s, c);  // the client sent FIN and has every byte we owed it
            return false;
        }
        if (c.closing && !c.wr_shut) {
            // FIN after our last byte. We keep reading (and discarding) until the client closes
            // too: close(2) with unread input would send RST, which can destroy the reply.
            TRACE_IO("shutdown", c.fd.get(), ::shutdown(c.fd.get(), SHUT_WR));
            c.wr_shut = true;
        }
    }
    return true;
}

void start_closing(Server& s, Conn& c) {
    c.closing = true;
    c.since = s.now;
    s.lingering.splice(s.lingering.end(), s.idle, c.timer);
}

// Answers every complete request line in `data`, appending the replies to c.out.
void answer(Server& s, Conn& c, std::string_view data) {
    c.in.feed(data);
    while (auto line = c.in.next()) {
        Request req = parse_request(*line);
        // The whole loop waits here, every other connection with it.
        if (req.verb == Verb::work && !block_for_work(req.work_ms)) {
            return;  // stopping
        }
        append_reply(c.out, req, s.stats);
        s.stats.requests.fetch_add(1, std::memory_order_relaxed);
        if (req.verb == Verb::quit) {
            start_closing(s, c);
            return;
        }
    }
    if (c.in.too_long()) {
        c.out += too_long_reply(s.opt.max_line);
        start_closing(s, c);
    }
}

// Edge-triggered: read until EAGAIN, answering as we go, then send the replies in one go.
// Returns false if the connection is gone.
bool read_all(Server& s, Conn& c) {
    for (;;) {
        if (!c.closing && c.out.size() - c.out_sent >= kHighWater) {
            c.unread = true;  // the client is not reading its replies: stop until they are sent
            return true;
        }
        ssize_t n = TRACE_IO("recv", c.fd.get(), ::recv(c.fd.get(), s.buf, sizeof s.buf, 0));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && errno == EAGAIN) {
            c.unread = false;  // drained: the next arrival is a new edge
            return true;
        }
        if (n < 0) {
            close_conn(s, c);
            return false;
        }
        if (n == 0) {
            c.peer_done = true;  // FIN (EPOLLRDHUP said so too): send what is owed, then close
            c.unread = false;
            return true;
        }
        if (c.closing) {
            continue;  // lingering: read only so that close(2) finds no unread input
        }
        c.since = s.now;
        s.idle.splice(s.idle.end(), s.idle, c.timer);
        if (s.opt.mode == Mode::echo) {
            c.out.append(s.buf, static_cast<size_t>(n));
        } else {
            answer(s, c, {s.buf, static_cast<size_t>(n)});
        }
    }
}

void on_readable(Server& s, Conn& c) {
    // If the replies all went out at once, the reading we paused can go on at once.
    do {
        if (!read_all(s, c) || !flush(s, c)) {
            return;
        }
    } while (c.unread && c.out.empty());
}

void on_writable(Server& s, Conn& c) {
    if (flush(s, c) && c.unread && c.out.empty()) {
        on_readable(s, c);  // we stopped reading at kHighWater; no edge will say so
    }
}

// Over --max-conns, or out of descriptors: one line, then close.
void refuse(Server& s, int conn_fd) {
    TRACE_IO("send", conn_fd,
             ::send(conn_fd, kServerFull.data(), kServerFull.size(), MSG_NOSIGNAL));
    // A request the client already sent would turn our close into a RST: read it away first.
    TRACE_IO("recv", conn_fd, ::recv(conn_fd, s.buf, sizeof s.buf, 0));
    ::close(conn_fd);
    s.stats.refused.fetch_add(1, std::memory_order_relaxed);
}

// Edge-triggered: one report may stand for many completed handshakes. Accept until EAGAIN.
void on_accept(Server& s) {
    for (;;) {
        int conn_fd =
            TRACE_IO("accept4", s.listen_fd.get(),
                     ::accept4(s.listen_fd.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (conn_fd < 0 && (errno == EMFILE || errno == ENFILE)) {
            // Give up the spare descriptor for the one moment it takes to turn this client away,
            // and go on: the backlog must be emptied to EAGAIN.
            s.spare_fd.reset();
            conn_fd = TRACE_IO(
                "accept4", s.listen_fd.get(),
                ::accept4(s.listen_fd.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
            int accept_errno = errno;
            if (conn_fd >= 0) {
                refuse(s, conn_fd);
            }
            s.spare_fd.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
            if (conn_fd < 0 && accept_errno == EAGAIN) {
                return;
            }
            continue;
        }
        if (conn_fd < 0) {
            if (errno == EAGAIN || errno == ENOMEM || errno == ENOBUFS) {
                return;  // drained (or the kernel is short of memory: the next edge retries)
            }
            continue;  // ECONNABORTED, EINTR: that one is gone, take the next
        }
        if (s.stats.conns.load(std::memory_order_relaxed) >=
            static_cast<uint64_t>(s.opt.max_conns)) {
            refuse(s, conn_fd);
            continue;
        }
        set_nodelay(conn_fd);
        auto c = std::make_unique<Conn>(conn_fd, s.opt.max_line);
        // Registered once, never modified: EPOLLOUT only reports a change, so it costs nothing
        // while our sends fit; EPOLLRDHUP reports the client's FIN.
        epoll_event ev{};
        ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
        ev.data.fd = conn_fd;
        if (TRACE_IO("epoll_ctl", conn_fd, ::epoll_ctl(s.epfd.get(), EPOLL_CTL_ADD, conn_fd, &ev)) <
            0) {
            continue;  // ENOMEM, or ENOSPC past fs.epoll.max_user_watches: c closes the socket
        }
        c->since = s.now;
        c->timer = s.idle.insert(s.idle.end(), c.get());
        if (s.conns.size() <= static_cast<size_t>(conn_fd)) {
            s.conns.resize(static_cast<size_t>(conn_fd) + 1);
        }
        s.conns[static_cast<size_t>(conn_fd)] = std::move(c);
        s.stats.accepted.fetch_add(1, std::memory_order_relaxed);
        s.stats.conns.fetch_add(1, std::memory_order_relaxed);
    }
}

// Both lists are ordered by `since`, so only their fronts can be due: O(1) per expiry.
// Returns epoll_wait's timeout in milliseconds until the next one (-1: none).
int expire_timers(Server& s) {
    using namespace std::chrono;
    auto idle_limit = duration_cast<Clock::duration>(duration<double>(s.opt.idle_timeout));
    while (!s.lingering.empty() && s.lingering.front()->since + kLinger <= s.now) {
        close_conn(s, *s.lingering.front());
    }
    while (s.opt.idle_timeout > 0 && !s.idle.empty() &&
           s.idle.front()->since + idle_limit <= s.now) {
        Conn& c = *s.idle.front();
        c.out += kIdleTimeout;
        start_closing(s, c);
        flush(s, c);
    }
    auto next = Clock::time_point::max();
    if (!s.lingering.empty()) {
        next = s.lingering.front()->since + kLinger;
    }
    if (s.opt.idle_timeout > 0 && !s.idle.empty()) {
        next = std::min(next, s.idle.front()->since + idle_limit);
    }
    if (next == Clock::time_point::max()) {
        return -1;
    }
    return static_cast<int>(ceil<milliseconds>(next - s.now).count());
}

int run(const ServerOptions& opt) {
    Server s(opt);
    s.listen_fd = listen_tcp(opt.host, opt.port, SOCK_NONBLOCK);
    s.epfd = Fd(::epoll_create1(EPOLL_CLOEXEC));
    if (!s.epfd) {
        throw_errno("epoll_create1");
    }
    s.spare_fd = Fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (!s.spare_fd) {
        throw_errno("open /dev/null");
    }
    watch(s, s.listen_fd.get(), EPOLLIN | EPOLLET);  // an edge per batch of handshakes
    watch(s, stop_fd(), EPOLLIN);                    // SIGINT/SIGTERM write a byte to this pipe
    announce_listening(s.listen_fd.get(), s.stats.model, opt);

    epoll_event events[kMaxEvents];
    int timeout = -1;
    while (!stop_requested()) {
        int nready = TRACE_IO("epoll_wait", s.epfd.get(),
                              ::epoll_wait(s.epfd.get(), events, kMaxEvents, timeout));
        if (nready < 0 && errno != EINTR) {
            throw_errno("epoll_wait");
        }
        s.now = Clock::now();
        for (int i = 0; i < nready; ++i) {
            int fd = events[i].data.fd;
            uint32_t revents = events[i].events;
            if (fd == s.listen_fd.get()) {
                on_accept(s);
                continue;
            }
            if (fd == stop_fd()) {
                continue;  // the loop condition sees stop_requested()
            }
            // A closed descriptor cannot be reported again in this batch, and a new connection
            // on the same number was not ready when epoll_wait filled `events`.
            Conn* c = s.conns[static_cast<size_t>(fd)].get();
            if (c == nullptr) {
                continue;
            }
            if (revents & EPOLLERR) {
                close_conn(s, *c);  // RST or another error: the connection is lost
                continue;
            }
            if (revents & EPOLLOUT) {
                on_writable(s, *c);
                if (s.conns[static_cast<size_t>(fd)] == nullptr) {
                    continue;
                }
            }
            if (revents & (EPOLLIN | EPOLLRDHUP | EPOLLHUP)) {
                on_readable(s, *c);
            }
        }
        s.now = Clock::now();
        timeout = expire_timers(s);
    }
    return 0;  // ~Server closes every connection, the listening socket and epfd
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"05_epoll_et: one thread, epoll edge-triggered", "05_epoll_et_server"};
    ServerOptions opt = server_defaults(5);
    add_server_options(app, opt);
    if (int rc = parse_command_line(app, argc, argv); rc >= 0) {
        return rc;
    }
    // A client that vanishes turns our next send into EPIPE; sends pass MSG_NOSIGNAL, and
    // ignoring SIGPIPE as well keeps any other write from killing the server.
    std::signal(SIGPIPE, SIG_IGN);
    try {
        install_stop_handlers();
        return run(opt);
    } catch (const std::exception& e) {
        return report_setup_failure(app.get_name(), e);
    }
}
