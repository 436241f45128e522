// 05_epoll: one thread, many sockets, and epoll(7) to learn which of them are ready.
//
// The model (IO multiplexing, as in 04_select): every socket is non-blocking, and the one place
// the server sleeps is epoll_wait(2). What changes is where the list of sockets lives: select and
// poll hand the kernel the whole list on every call and both sides scan it; epoll keeps it in the
// kernel. epoll_create1 makes an epoll instance (`epfd`), epoll_ctl(EPOLL_CTL_ADD) puts a socket
// on its interest list once, and the socket's wakeup callback puts it on the ready list when data
// arrives or buffer space frees up. epoll_wait blocks in phase 1 (waiting for data) for every
// socket at once and returns the ready ones only, so a wait costs the same with 10 or 10,000 idle
// sockets; recv(2) and send(2) then do phase 2 (the copy) without ever waiting.
//
// What the kernel guarantees: level-triggered (the default, and this file), epoll_wait reports a
// socket for as long as the condition holds, as select does, so one recv per wake-up is enough.
// The price: a condition we do not want to hear about must leave the interest set, or epoll_wait
// returns at once, forever. So EPOLLOUT is in it only while replies wait for room, and EPOLLIN
// leaves it while kHighWater bytes are owed; EPOLL_CTL_MOD runs on those transitions only, never
// per request. server_et.cpp is the edge-triggered variant.
//
// Limits: Linux only (BSD has kqueue); a regular file cannot be watched (EPERM: it is always
// ready); fs.epoll.max_user_watches caps the registrations. A WORK request stalls every client.
//
// Run it:    ./build/bin/05_epoll_server               (listens on 127.0.0.1:9005)
// Talk:      nc 127.0.0.1 9005    in two terminals; WORK 3000 in one freezes the other.
// Watch:     strace -e trace=epoll_wait,epoll_ctl,recvfrom,sendto ./build/bin/05_epoll_server
//            (one epoll_ctl per connection, only the ready sockets come back), or --trace.
//            ss -tn 'sport = :9005' lists the connections and their queues.
//
// The layout, the names and the policies (accept, read, write, timers, refusal) are the same in
// every model: docs/listings.md.

#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

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

constexpr int kMaxEvents = 1024;  // ready sockets taken per epoll_wait

struct Conn {
    Conn(int conn_fd, size_t max_line) : fd(conn_fd), in(max_line) {}
    Fd fd;
    LineParser in;
    std::string out;  // bytes owed to the client; the first out_sent are already sent
    size_t out_sent = 0;
    uint32_t events = 0;     // the interest set epoll holds for this socket now
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
    ServerStats stats{"05_epoll"};
    Fd listen_fd;
    Fd epfd;                                   // the epoll instance: interest list, ready list
    SpareFd spare_fd;                          // given up for a moment at EMFILE
    std::vector<std::unique_ptr<Conn>> conns;  // indexed by conn_fd
    TimerList<Conn> idle_timers, request_timers, linger_timers;
    Clock::time_point now;  // when the current epoll_wait returned
    char buf[65536];        // one read buffer for the whole loop
};

void on_accept(Server& s);
bool on_readable(Server& s, Conn& c);
void answer(Server& s, Conn& c, std::string_view data);
bool on_writable(Server& s, Conn& c);
bool watch(Server& s, Conn& c);
void start_closing(Server& s, Conn& c, std::string_view last_line);
void close_conn(Server& s, Conn& c);
std::optional<Clock::time_point> expire_timers(Server& s);

// listing: loop
int run(const ServerOptions& opt) {
    Server s(opt);
    s.listen_fd = listen_tcp(opt.host, opt.port, SOCK_NONBLOCK);
    s.epfd = Fd(::epoll_create1(EPOLL_CLOEXEC));
    if (!s.epfd) {
        throw_errno("epoll_create1");
    }
    // Registered once: a completed handshake makes listen_fd readable, a stop signal stop_fd().
    for (int fd : {s.listen_fd.get(), stop_fd()}) {
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.fd = fd;
        if (::epoll_ctl(s.epfd.get(), EPOLL_CTL_ADD, fd, &ev) < 0) {
            throw_errno("epoll_ctl ADD " + std::to_string(fd));
        }
    }
    announce_listening(s.listen_fd.get(), s.stats.model, opt);

    std::optional<Clock::time_point> deadline;  // the next idle, request or linger timeout
    epoll_event events[kMaxEvents];
    while (!stop_requested()) {
        // Phase 1 for every socket at once: the thread sleeps here, and only here.
        int nready = TRACE_IO(
            "epoll_wait", s.epfd.get(),
            ::epoll_wait(s.epfd.get(), events, kMaxEvents, timeout_ms(deadline, Clock::now())));
        if (nready < 0 && errno != EINTR) {
            throw_errno("epoll_wait");
        }
        s.now = Clock::now();
        // Phase 2, for the ready ones only: the kernel hands back exactly those, no scan.
        for (int i = 0; i < nready; ++i) {
            int fd = events[i].data.fd;
            uint32_t revents = events[i].events;
            if (fd == stop_fd()) {
                continue;  // the loop condition sees stop_requested()
            }
            if (fd == s.listen_fd.get()) {
                on_accept(s);
                continue;
            }
            // A descriptor closed earlier in this batch is not in it twice, and a new connection
            // on the same number was not registered when epoll_wait filled `events`.
            Conn* c = s.conns[static_cast<size_t>(fd)].get();
            if (c == nullptr) {
                continue;
            }
            if ((revents & EPOLLOUT) && !on_writable(s, *c)) {
                continue;
            }
            // EPOLLHUP and EPOLLERR come even when not asked for; recv returns the 0 or the error.
            if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                on_readable(s, *c);
            }
        }
        deadline = expire_timers(s);
    }
    return 0;  // ~Server closes every connection, the listening socket and epfd
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
        epoll_event ev{};
        ev.events = EPOLLIN;  // level-triggered; EPOLLOUT joins only while replies wait
        ev.data.fd = conn_fd;
        if (TRACE_IO("epoll_ctl", conn_fd, ::epoll_ctl(s.epfd.get(), EPOLL_CTL_ADD, conn_fd, &ev)) <
            0) {
            refuse(s.stats, conn_fd);  // ENOMEM, or ENOSPC past fs.epoll.max_user_watches
            continue;
        }
        set_nodelay(conn_fd);
        auto c = std::make_unique<Conn>(conn_fd, s.opt.max_line);
        c->events = ev.events;
        s.idle_timers.arm(c->idle_timer, s.now);
        if (s.conns.size() <= static_cast<size_t>(conn_fd)) {
            s.conns.resize(static_cast<size_t>(conn_fd) + 1);
        }
        s.conns[static_cast<size_t>(conn_fd)] = std::move(c);
        s.stats.accepted.fetch_add(1, std::memory_order_relaxed);
        s.stats.conns.fetch_add(1, std::memory_order_relaxed);
    }
}

// One recv per wake-up: epoll is level-triggered here and reports the rest on the next pass.
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
            close_conn(s, c);  // the client read our last line and closed
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
            return watch(s, c);  // the send buffer is full: EPOLLOUT says when it has room
        }
        c.out_sent += static_cast<size_t>(n);
        if (static_cast<size_t>(n) < len) {
            return watch(s, c);  // a short send means the send buffer is full too
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
    return watch(s, c);
}

// Level-triggered, the interest set must say exactly what we want to hear about now: EPOLLIN
// while we take more from this client, EPOLLOUT while the kernel has not taken all we owe it.
// Both change only at a transition, so a request answered in one send costs no epoll_ctl.
// Returns false if the connection is over.
bool watch(Server& s, Conn& c) {
    uint32_t want = 0;
    if (!c.peer_done && (c.closing || c.pending() < kHighWater)) {
        want |= EPOLLIN;
    }
    if (c.pending() > 0) {
        want |= EPOLLOUT;
    }
    if (want == c.events) {
        return true;
    }
    epoll_event ev{};
    ev.events = want;
    ev.data.fd = c.fd.get();
    if (TRACE_IO("epoll_ctl", c.fd.get(),
                 ::epoll_ctl(s.epfd.get(), EPOLL_CTL_MOD, c.fd.get(), &ev)) < 0) {
        // MOD allocates nothing; it fails only if the socket is not in the set. Whatever the
        // cause, epoll would no longer report what this connection needs: it cannot go on.
        close_conn(s, c);
        return false;
    }
    c.events = want;
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
    // ~Conn: ~Fd closes the socket (which leaves the epoll set), and its timer entries their lists.
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
    CommandLine cmd{"05_epoll_server", "05_epoll: one thread, non-blocking sockets, epoll(7)"};
    ServerOptions opt = server_defaults(5);
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
