// 08_reactor_libevent: the same server on libevent 2.1, the reactor library the seed names first.
//
// The model: server.cpp's reactor, not built by hand. An event_base is the dispatcher; its
// backend is the demultiplexer (event_base_get_method() says which: epoll on Linux, reported in
// STATS as backend=); the event handlers are `struct event`s: two per connection, one for
// EV_READ and one for EV_WRITE, each EV_PERSIST (it stays registered after it fires, as an fd in
// an epoll set does), plus evtimers for the idle and request timeouts. Compare with reactor.hpp
// and with server_libev.cpp:
//
//   hand-built (reactor.hpp)         libevent 2.1                      libev
//   Reactor                          event_base_new                    ev_loop_new
//   Demultiplexer (epoll_*)          the backend, in event_base_loop   the backend, in ev_run
//   register / set_events / remove   event_add / event_del             ev_io_start/_set/_stop
//   Reactor::every + sweep           evtimer per connection, on a      ev_timer per connection,
//                                    "common timeout" queue            in a heap
//   Reactor::run / stop              event_base_dispatch / _loopbreak  ev_run / ev_break
//
// What libevent adds: a changelist that folds the event_add/event_del calls made during one
// pass into at most one epoll_ctl per descriptor when the loop next waits; common timeouts: when
// many timers share one duration (every connection's idle timeout does), libevent keeps them in
// a queue in deadline order instead of its heap, O(1) to re-arm, the same idea as the deadline
// lists in common/conn.hpp; bufferevents (buffered sockets) and evbuffers, which this file does
// not use, so that each recv and send stays in plain view, as in the other 08 variants.
//
// SIGINT/SIGTERM: libevent's own signal events (evsignal_new) deliver a signal to the loop
// through a socketpair, so it waits for the callback that is running. A callback blocked in
// WORK 10000 would then hold the stop for ten seconds, past the contract's three. So this file
// uses the lab's stop handler, whose flag ends block_for_work early, and watches its self-pipe
// (stop_fd()) with an ordinary read event, as server_libev.cpp does.
//
// Who blocks whom: exactly as server.cpp. One thread runs every callback; WORK 500 inside a
// callback stalls every other connection for 500 ms.
//
// Run it:    ./build/bin/08_reactor_libevent_server            (listens on 127.0.0.1:9008)
// Watch:     strace -e trace=epoll_wait,epoll_ctl,recvfrom,sendto
// ./build/bin/08_reactor_libevent_server
//            shows libevent's own epoll calls; --trace shows our accept4, recv and send (libevent
//            2.1 has no hook around its wait, so the wait itself is not in the trace).

#include <event2/event.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <cerrno>
#include <csignal>
#include <stdexcept>
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

constexpr size_t kLowWater = 64 * 1024;  // a paused connection reads again below this
constexpr long kDrainMs = 1000;          // a closing connection's time to read our last line

enum class State { open, closing };

struct Conn;

struct Server {
    ServerOptions opt;
    ServerStats stats{"08_reactor_libevent"};
    event_base* base = nullptr;
    const timeval* idle_tv = nullptr;     // --idle-timeout, as a common timeout
    const timeval* request_tv = nullptr;  // --request-timeout, as a common timeout
    const timeval* drain_tv = nullptr;    // kDrainMs, as a common timeout
    char buffer[64 * 1024];               // one read buffer for the loop
    SpareFd spare_fd;                     // for EMFILE
    std::vector<Conn*> conns;
};

struct Conn {
    Conn(Server& s, int conn_fd, bool counted_)
        : srv(s), fd(conn_fd), in(s.opt.max_line), counted(counted_) {}
    Server& srv;
    Fd fd;
    event* read_ev = nullptr;        // EV_READ | EV_PERSIST: added while we want input
    event* write_ev = nullptr;       // EV_WRITE | EV_PERSIST: added while output is pending
    event* timer = nullptr;          // the idle timeout, or the end of a polite close
    event* request_timer = nullptr;  // --request-timeout, from an unfinished line's first byte
    LineParser in;
    std::string out;
    size_t index = 0;  // in srv.conns
    State state = State::open;
    bool counted;
    bool paused = false;      // out passed kHighWater
    bool more_lines = false;  // requests wait in `in` while paused
    bool peer_eof = false;
    bool write_shut = false;
    short events = EV_READ;  // what read_ev and write_ev wait for now: EV_READ, EV_WRITE or both
};

void on_accept(evutil_socket_t listen_fd, short, void* arg);
void on_read(evutil_socket_t, short, void* arg);
void on_write(evutil_socket_t, short, void* arg);
void on_timer(evutil_socket_t, short, void* arg);
void on_request_timeout(evutil_socket_t, short, void* arg);
void on_stop(evutil_socket_t, short, void* arg);
void progress(Conn* c);
void close_conn(Conn* c);

// listing: loop
int run(Server& s) {
    s.base = event_base_new();
    if (s.base == nullptr) {
        throw std::runtime_error("event_base_new: no usable backend");
    }
    auto common = [&s](double seconds) {
        timeval tv{static_cast<time_t>(seconds),
                   static_cast<suseconds_t>((seconds - static_cast<long>(seconds)) * 1e6)};
        return event_base_init_common_timeout(s.base, &tv);
    };
    s.idle_tv = common(s.opt.idle_timeout);
    s.request_tv = common(s.opt.request_timeout);
    s.drain_tv = common(kDrainMs / 1000.0);

    Fd listen_fd = listen_tcp(s.opt.host, s.opt.port, SOCK_NONBLOCK | SOCK_CLOEXEC);
    event* accept_ev = event_new(s.base, listen_fd.get(), EV_READ | EV_PERSIST, on_accept, &s);
    event* stop_ev = event_new(s.base, stop_fd(), EV_READ, on_stop, s.base);
    if (accept_ev == nullptr || stop_ev == nullptr || event_add(accept_ev, nullptr) < 0 ||
        event_add(stop_ev, nullptr) < 0) {
        throw std::runtime_error("event_new/event_add for the listening socket");
    }
    s.stats.extra = [&s] { return std::string("backend=") + event_base_get_method(s.base); };

    announce_listening(listen_fd.get(), s.stats.model, s.opt);
    event_base_dispatch(s.base);  // the dispatcher, until event_base_loopbreak

    while (!s.conns.empty()) {
        close_conn(s.conns.back());
    }
    event_free(accept_ev);
    event_free(stop_ev);
    event_base_free(s.base);
    return 0;
}
// end listing: loop

// ---- the handlers ----

Conn* open_conn(Server& s, int conn_fd, bool counted) {
    Conn* c = new Conn(s, conn_fd, counted);
    c->index = s.conns.size();
    s.conns.push_back(c);
    c->read_ev = event_new(s.base, conn_fd, EV_READ | EV_PERSIST, on_read, c);
    c->write_ev = event_new(s.base, conn_fd, EV_WRITE | EV_PERSIST, on_write, c);
    c->timer = evtimer_new(s.base, on_timer, c);
    c->request_timer = evtimer_new(s.base, on_request_timeout, c);
    if (c->read_ev == nullptr || c->write_ev == nullptr || c->timer == nullptr ||
        c->request_timer == nullptr || event_add(c->read_ev, nullptr) < 0) {
        close_conn(c);  // out of memory, or the backend refused one more descriptor
        return nullptr;
    }
    if (s.opt.idle_timeout > 0) {
        evtimer_add(c->timer, s.idle_tv);
    }
    return c;
}

void on_accept(evutil_socket_t listen_fd, short, void* arg) {
    Server& s = *static_cast<Server*>(arg);
    for (int i = 0; i < kAcceptBudget; ++i) {
        int conn_fd =
            TRACE_IO("accept4", listen_fd,
                     ::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (conn_fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            // Out of descriptors: the spare descriptor makes room to turn one client away
            // (common/conn.hpp), or the listening socket would stay readable forever.
            if ((errno == EMFILE || errno == ENFILE) && s.spare_fd.refuse_one(listen_fd, s.stats)) {
                continue;
            }
            return;  // EAGAIN: the listen queue is empty
        }
        set_nodelay(conn_fd);
        if (s.stats.conns.load(std::memory_order_relaxed) >=
            static_cast<uint64_t>(s.opt.max_conns)) {
            refuse(s.stats, conn_fd);  // ERR server full, then a close that keeps the line
            continue;
        }
        s.stats.accepted.fetch_add(1, std::memory_order_relaxed);
        s.stats.conns.fetch_add(1, std::memory_order_relaxed);
        open_conn(s, conn_fd, true);
    }
}

// One recv per readiness report: the backend is level-triggered and reports the rest again.
void on_read(evutil_socket_t, short, void* arg) {
    Conn* c = static_cast<Conn*>(arg);
    Server& s = c->srv;
    ssize_t n = TRACE_IO("recv", c->fd.get(), ::recv(c->fd.get(), s.buffer, sizeof s.buffer, 0));
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            close_conn(c);
        }
        return;
    }
    if (n == 0) {
        c->peer_eof = true;
    } else if (c->state == State::open) {
        if (s.opt.idle_timeout > 0) {
            evtimer_add(c->timer, s.idle_tv);  // re-adding a pending timer restarts it
        }
        if (s.opt.mode == Mode::echo) {
            c->out.append(s.buffer, static_cast<size_t>(n));
            c->paused = c->out.size() >= kHighWater;
        } else {
            c->in.feed(s.buffer, static_cast<size_t>(n));
            c->more_lines = true;
        }
    }
    progress(c);
}

void on_write(evutil_socket_t, short, void* arg) {
    progress(static_cast<Conn*>(arg));
}

// --request-timeout runs from the first byte of an unfinished request line; more bytes of the
// same line do not restart it (a client trickling a byte at a time is shed).
void track_request(Conn* c, bool line_ended) {
    if (c->srv.opt.request_timeout <= 0) {
        return;
    }
    if (c->in.buffered() == 0) {
        evtimer_del(c->request_timer);
    } else if (line_ended || !evtimer_pending(c->request_timer, nullptr)) {
        evtimer_add(c->request_timer, c->srv.request_tv);
    }
}

// Answers the complete requests in c->in until they run out or output passes kHighWater.
// Returns false if the connection was closed (SIGTERM during a WORK).
bool answer_buffered(Conn* c) {
    Server& s = c->srv;
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
            if (s.opt.idle_timeout > 0) {
                evtimer_add(c->timer, s.idle_tv);  // a client waiting for its answer is not idle
            }
        }
        append_reply(c->out, req, s.stats);
        s.stats.requests.fetch_add(1, std::memory_order_relaxed);
        if (req.verb == Verb::quit) {
            c->state = State::closing;
            evtimer_add(c->timer, s.drain_tv);
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
        evtimer_add(c->timer, s.drain_tv);
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
    if (c->out.capacity() > kKeepOut) {
        std::string().swap(c->out);
    }
    return true;
}

// After any event: answer, send, then tell libevent what this connection waits for, if that
// changed. libevent's changelist turns the changes of one pass into at most one epoll_ctl per
// socket when the loop next waits; the check here saves the event_add and event_del calls
// themselves, which go through libevent's bookkeeping even when nothing changes.
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
    bool want_read = !c->peer_eof && (c->state == State::closing || (!c->paused && !c->more_lines));
    short events = (want_read ? EV_READ : 0) | (c->out.empty() ? 0 : EV_WRITE);
    if (events == c->events) {
        return;
    }
    if (events & EV_READ) {
        event_add(c->read_ev, nullptr);
    } else {
        event_del(c->read_ev);
    }
    if (events & EV_WRITE) {
        event_add(c->write_ev, nullptr);
    } else {
        event_del(c->write_ev);
    }
    c->events = events;
}

// ---- the edge cases ----

void say_goodbye(Conn* c, std::string_view last_words) {
    c->out += last_words;
    c->state = State::closing;
    evtimer_del(c->request_timer);
    evtimer_add(c->timer, c->srv.drain_tv);
    progress(c);
}

void on_timer(evutil_socket_t, short, void* arg) {
    Conn* c = static_cast<Conn*>(arg);
    if (c->state == State::closing) {
        close_conn(c);  // the client had its second to read our last words
    } else {
        say_goodbye(c, kIdleTimeout);
    }
}

void on_request_timeout(evutil_socket_t, short, void* arg) {
    Conn* c = static_cast<Conn*>(arg);
    if (c->state == State::open) {
        say_goodbye(c, kRequestTimeout);
    }
}

void on_stop(evutil_socket_t, short, void* arg) {
    event_base_loopbreak(static_cast<event_base*>(arg));
}

void close_conn(Conn* c) {
    // event_free deletes a pending or active event first, so no callback of this connection
    // runs after this.
    for (event* ev : {c->read_ev, c->write_ev, c->timer, c->request_timer}) {
        if (ev != nullptr) {
            event_free(ev);
        }
    }
    if (c->counted) {
        c->srv.stats.conns.fetch_sub(1, std::memory_order_relaxed);
    }
    auto& all = c->srv.conns;
    all[c->index] = all.back();
    all[c->index]->index = c->index;
    all.pop_back();
    delete c;  // closes the socket
}

}  // namespace

int main(int argc, char** argv) {
    CommandLine cmd{"08_reactor_libevent_server",
                    "08_reactor_libevent: the same reactor server on libevent 2.1"};
    static Server s;  // static: it holds the 64 KiB read buffer
    s.opt = server_defaults(8);
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
