// 08_reactor_libev: the same server on the reactor the seed recommends, libev.
//
// The model: server.cpp's reactor, but not built by hand. libev is a reactor: an ev_loop is the
// dispatcher, its backend is the demultiplexer (epoll on Linux: ev_backend() says which), and
// the event handlers are "watchers": an ev_io per socket (fd, EV_READ/EV_WRITE, a callback), an
// ev_timer per connection for the idle timeout. Compare with reactor.hpp:
//
//   hand-built (reactor.hpp)                 libev
//   Reactor                                   struct ev_loop*, ev_loop_new
//   Demultiplexer (epoll_*)                   the backend, inside ev_run
//   EventHandler::handle_read/write           an ev_io's callback, revents & EV_READ/EV_WRITE
//   register_handler / set_events / remove    ev_io_start / ev_io_set / ev_io_stop
//   Reactor::every + sweep                    ev_timer per connection, ev_timer_again
//   Reactor::run / stop                       ev_run / ev_break
//   Reactor::post (eventfd)                   ev_async (not needed here)
//
// What libev adds: timers in a heap (one per connection is cheap), signal and child watchers,
// backends for every OS (kqueue, event ports, poll, select), and it batches interest changes:
// ev_io_stop + ev_io_set + ev_io_start costs no syscall until the loop next waits, and none at
// all if the interest ends up unchanged.
//
// Who blocks whom: exactly as server.cpp. One thread runs every callback; WORK 500 inside a
// callback stalls every other connection for 500 ms.
//
// Run it:    ./build/bin/08_reactor_libev_server                  (listens on 127.0.0.1:9008)
// Watch:     strace -e trace=epoll_wait,epoll_ctl,recvfrom,sendto
// ./build/bin/08_reactor_libev_server
//            (libev's own epoll calls); --trace shows our recv/send/accept4 and each wait.

#include <ev.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cerrno>
#include <csignal>
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

constexpr size_t kHighWater = 256 * 1024;  // stop reading a client whose replies pile up
constexpr size_t kLowWater = 64 * 1024;    // and read again below this
constexpr size_t kKeepCapacity = 16 * 1024;
constexpr double kDrainSeconds = 1.0;  // a closing connection's time to read our last line
constexpr int kAcceptBatch = 64;

struct Server {
    ServerOptions opt;
    ServerStats stats;
    struct ev_loop* loop = nullptr;
    char buffer[64 * 1024];  // one read buffer for the loop
    SpareFd spare_fd;        // for EMFILE, as in connection.cpp
    std::vector<struct Conn*> conns;
};

enum class State { open, closing };

struct Conn {
    Conn(Server& s, int conn_fd, bool counted_)
        : srv(s), fd(conn_fd), in(s.opt.max_line), counted(counted_) {}
    ev_io io;                // the socket's watcher; its events are what we wait for
    ev_timer timer;          // idle timeout, or the end of a polite close
    ev_timer request_timer;  // --request-timeout, from the first byte of an unfinished line
    Server& srv;
    Fd fd;
    LineParser in;
    std::string out;
    size_t index = 0;  // in srv.conns
    State state = State::open;
    bool counted;
    bool paused = false;      // out passed kHighWater
    bool more_lines = false;  // requests wait in `in` while paused
    bool peer_eof = false;
    bool write_shut = false;
};

void on_accept(struct ev_loop*, ev_io* w, int);
void on_stop(struct ev_loop* loop, ev_io*, int);
void close_conn(Conn* c);
void before_wait(struct ev_loop*) noexcept;
void after_wait(struct ev_loop*) noexcept;
void invoke_pending(struct ev_loop* loop);

// listing: loop
int run(Server& s) {
    // EVFLAG_AUTO: libev chooses the best backend, epoll on Linux. ev_loop_new (not the default
    // loop) installs no signal handlers of its own.
    s.loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOENV);
    if (s.loop == nullptr) {
        throw std::runtime_error("ev_loop_new: no usable backend");
    }
    ev_set_loop_release_cb(s.loop, before_wait, after_wait);
    ev_set_invoke_pending_cb(s.loop, invoke_pending);

    Fd listen_fd = listen_tcp(s.opt.host, s.opt.port, SOCK_NONBLOCK | SOCK_CLOEXEC);
    ev_io accept_watcher;
    ev_io_init(&accept_watcher, on_accept, listen_fd.get(), EV_READ);
    accept_watcher.data = &s;
    ev_io_start(s.loop, &accept_watcher);
    ev_io stop_watcher;
    ev_io_init(&stop_watcher, on_stop, stop_fd(), EV_READ);
    ev_io_start(s.loop, &stop_watcher);

    announce_listening(listen_fd.get(), s.stats.model, s.opt);
    ev_run(s.loop, 0);  // the dispatcher, until ev_break

    while (!s.conns.empty()) {
        close_conn(s.conns.back());
    }
    ev_loop_destroy(s.loop);
    return 0;
}
// end listing: loop

// ---- the handlers ----

void close_conn(Conn* c) {
    ev_io_stop(c->srv.loop, &c->io);  // after this the watcher may be freed, pending or not
    ev_timer_stop(c->srv.loop, &c->timer);
    ev_timer_stop(c->srv.loop, &c->request_timer);
    if (c->counted) {
        c->srv.stats.conns.fetch_sub(1, std::memory_order_relaxed);
    }
    auto& all = c->srv.conns;
    all[c->index] = all.back();
    all[c->index]->index = c->index;
    all.pop_back();
    delete c;  // closes the socket
}

// Restarts the connection's timer: the idle timeout while open, the drain limit when closing.
void arm_timer(Conn* c) {
    double after = c->state == State::closing ? kDrainSeconds : c->srv.opt.idle_timeout;
    if (after > 0) {
        c->timer.repeat = after;
        ev_timer_again(c->srv.loop, &c->timer);
    }
}

// --request-timeout runs from the first byte of an unfinished request line; more bytes of the
// same line do not restart it (a client trickling a byte at a time is shed), a finished line
// with nothing after it stops it.
void track_request(Conn* c, bool line_ended) {
    if (c->srv.opt.request_timeout <= 0) {
        return;
    }
    if (c->in.buffered() == 0) {
        ev_timer_stop(c->srv.loop, &c->request_timer);
    } else if (line_ended || !ev_is_active(&c->request_timer)) {
        c->request_timer.repeat = c->srv.opt.request_timeout;
        ev_timer_again(c->srv.loop, &c->request_timer);
    }
}

bool wants_input(const Conn* c) {
    if (c->peer_eof) {
        return false;
    }
    return c->state == State::closing || (!c->paused && !c->more_lines);
}

// Answers the complete requests in c->in until they run out or output passes kHighWater.
// Returns false if the connection was closed (SIGTERM during a WORK).
bool answer_buffered(Conn* c) {
    c->more_lines = false;
    bool line_ended = false;
    while (auto line = c->in.next()) {
        line_ended = true;
        Request req = parse_request(*line);
        // The big handler: this callback, and so the whole loop, sleeps for the WORK.
        if (req.verb == Verb::work) {
            if (!block_for_work(req.work_ms)) {
                close_conn(c);
                return false;
            }
            // A client waiting for its answer is not idle. ev_now_update: the loop's clock
            // stood still while this callback slept.
            ev_now_update(c->srv.loop);
            arm_timer(c);
        }
        append_reply(c->out, req, c->srv.stats);
        c->srv.stats.requests.fetch_add(1, std::memory_order_relaxed);
        if (req.verb == Verb::quit) {
            c->state = State::closing;
            arm_timer(c);
            break;
        }
        if (c->out.size() >= kHighWater) {
            c->paused = c->more_lines = true;
            break;
        }
    }
    if (c->in.too_long()) {
        c->out += too_long_reply(c->in.max_line());
        c->state = State::closing;
        arm_timer(c);
    }
    if (c->state == State::open && !c->more_lines) {
        track_request(c, line_ended);
    }
    c->in.keep_rest();  // the loop's buffer is reused by the next callback
    return true;
}

// Sends c->out until empty or the send buffer is full. False if the connection was closed.
bool flush(Conn* c) {
    while (!c->out.empty()) {
        ssize_t n = TRACE_IO("send", c->fd.get(),
                             ::send(c->fd.get(), c->out.data(), c->out.size(), MSG_NOSIGNAL));
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return true;
            }
            close_conn(c);
            return false;
        }
        c->out.erase(0, static_cast<size_t>(n));
        if (!c->out.empty()) {
            return true;  // short send: the socket's send buffer is full
        }
    }
    if (c->out.capacity() > kKeepCapacity) {
        std::string().swap(c->out);
    }
    return true;
}

// After any event: answer, send, then tell libev what this connection waits for.
void progress(Conn* c) {
    for (;;) {
        if (c->state == State::open && c->more_lines && !c->paused && !answer_buffered(c)) {
            return;
        }
        if (!flush(c)) {
            return;
        }
        if (c->paused && c->out.size() <= kLowWater) {
            c->paused = false;
            if (c->more_lines) {
                continue;
            }
        }
        break;
    }
    if (c->out.empty()) {
        if (c->state == State::closing && !c->write_shut) {
            TRACE_IO("shutdown", c->fd.get(), ::shutdown(c->fd.get(), SHUT_WR));
            c->write_shut = true;
        }
        bool done = c->state == State::closing ? c->write_shut : !c->more_lines;
        if (c->peer_eof && done) {
            close_conn(c);
            return;
        }
    }
    int events = (wants_input(c) ? EV_READ : 0) | (c->out.empty() ? 0 : EV_WRITE);
    if (events != (c->io.events & (EV_READ | EV_WRITE))) {
        // An active watcher's events cannot be changed in place: stop, set, start. libev
        // turns this into one epoll_ctl(MOD) when it next waits.
        ev_io_stop(c->srv.loop, &c->io);
        ev_io_set(&c->io, c->fd.get(), events);
        if (events != 0) {
            ev_io_start(c->srv.loop, &c->io);
        }
    }
}

void say_goodbye(Conn* c, std::string_view last_words) {
    c->out += last_words;
    c->state = State::closing;
    ev_timer_stop(c->srv.loop, &c->request_timer);
    arm_timer(c);
    progress(c);
}

void on_readable(Conn* c) {
    ssize_t n =
        TRACE_IO("recv", c->fd.get(), ::recv(c->fd.get(), c->srv.buffer, sizeof c->srv.buffer, 0));
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            close_conn(c);
        }
        return;
    }
    if (n == 0) {
        c->peer_eof = true;
    } else if (c->state == State::open) {
        arm_timer(c);  // activity: the idle timeout starts again
        if (c->srv.opt.mode == Mode::echo) {
            c->out.append(c->srv.buffer, static_cast<size_t>(n));
            c->paused = c->out.size() >= kHighWater;
        } else {
            c->in.feed(c->srv.buffer, static_cast<size_t>(n));
            c->more_lines = true;
        }
    }
    progress(c);
}

void on_io(struct ev_loop*, ev_io* w, int revents) {
    Conn* c = static_cast<Conn*>(w->data);
    if (revents & EV_READ) {
        on_readable(c);
        return;  // c may be gone; if it still waits to write, libev reports that again
    }
    if (revents & EV_WRITE) {
        progress(c);
    }
}

void on_timer(struct ev_loop*, ev_timer* w, int) {
    Conn* c = static_cast<Conn*>(w->data);
    if (c->state == State::closing) {
        close_conn(c);  // the client had its second to read our last words
    } else {
        say_goodbye(c, kIdleTimeout);
    }
}

void on_request_timeout(struct ev_loop*, ev_timer* w, int) {
    Conn* c = static_cast<Conn*>(w->data);
    if (c->state == State::open) {
        say_goodbye(c, kRequestTimeout);
    }
}

Conn* open_conn(Server& s, int conn_fd, bool counted) {
    Conn* c = new Conn(s, conn_fd, counted);
    c->index = s.conns.size();
    s.conns.push_back(c);
    ev_io_init(&c->io, on_io, conn_fd, EV_READ);
    c->io.data = c;
    ev_io_start(s.loop, &c->io);
    ev_init(&c->timer, on_timer);
    c->timer.data = c;
    arm_timer(c);
    ev_init(&c->request_timer, on_request_timeout);
    c->request_timer.data = c;
    return c;
}

void on_accept(struct ev_loop*, ev_io* w, int) {
    Server& s = *static_cast<Server*>(w->data);
    for (int i = 0; i < kAcceptBatch; ++i) {
        int conn_fd = TRACE_IO("accept4", w->fd,
                               ::accept4(w->fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (conn_fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            // Out of descriptors: the spare descriptor makes room to turn one client away
            // (common/conn.hpp), or the listening socket would stay readable forever.
            if ((errno == EMFILE || errno == ENFILE) && s.spare_fd.refuse_one(w->fd, s.stats)) {
                continue;
            }
            return;  // EAGAIN: the listen queue is empty
        }
        int one = 1;
        ::setsockopt(conn_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        s.stats.accepted.fetch_add(1, std::memory_order_relaxed);
        if (s.stats.conns.load(std::memory_order_relaxed) >=
            static_cast<uint64_t>(s.opt.max_conns)) {
            s.stats.refused.fetch_add(1, std::memory_order_relaxed);
            say_goodbye(open_conn(s, conn_fd, false), kServerFull);
            continue;
        }
        s.stats.conns.fetch_add(1, std::memory_order_relaxed);
        open_conn(s, conn_fd, true);
    }
}

void on_stop(struct ev_loop* loop, ev_io*, int) {
    ev_break(loop, EVBREAK_ALL);
}

// ---- the edge cases: tracing the wait ----

// --trace for the wait that libev does inside ev_run. libev calls "release" just before its
// backend blocks, "acquire" just after (hooks meant for a lock around the wait), then
// "invoke_pending" to run the callbacks of the watchers that became ready: their number is the
// wait's result.
trace::Clock::time_point g_wait_start;
bool g_waited = false;
void before_wait(struct ev_loop*) noexcept {
    trace::count();
    if (trace::enabled()) {
        g_wait_start = trace::Clock::now();
        g_waited = true;
    }
}
void after_wait(struct ev_loop*) noexcept {}
void invoke_pending(struct ev_loop* loop) {
    if (trace::enabled() && g_waited) {
        trace::record("epoll_wait", -1, static_cast<long>(ev_pending_count(loop)), g_wait_start);
    }
    g_waited = false;
    ev_invoke_pending(loop);
}

}  // namespace

int main(int argc, char** argv) {
    CommandLine cmd{"08_reactor_libev_server",
                    "08_reactor_libev: the same reactor server on libev"};
    static Server s{server_defaults(8), ServerStats("08_reactor_libev"), nullptr, {}, {}, {}};
    cmd.add_server_options(s.opt);
    if (int rc = cmd.parse(argc, argv); rc >= 0) {
        return rc;
    }
    std::signal(SIGPIPE, SIG_IGN);  // sends use MSG_NOSIGNAL; this covers any other write
    try {
        install_stop_handlers();
        return run(s);
    } catch (const std::exception& e) {
        return report_setup_failure(cmd.name(), e);
    }
}
