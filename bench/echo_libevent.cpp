// yardstick_libevent: the smallest fast echo server on libevent 2.1, one event_base, one
// persistent read event per socket.
//
// It is the measure for 08_reactor_libevent (bench/README.md): the lab's variant must spend no
// more than 5% more server CPU per echoed request than this, side by side in one run. So it has
// nothing the lab's QA protocol needs: no line parser, no timers, no STATS, no refusal.
//
// Each connection has a buffer and two events. The read event (EV_READ | EV_PERSIST) stays added
// while the buffer is empty; its callback reads once and sends what came at once, since a
// socket's send buffer nearly always has room. Only when the kernel takes part of it does the
// connection trade its read event for its write event until the rest has gone, which bounds what
// a client that does not read can make us hold. libevent's epoll backend is level-triggered, so
// a socket that still holds bytes after one recv is reported again on the next pass.
//
// Why not a bufferevent, libevent's buffered socket: it does not send when output is added, but
// adds EV_WRITE and sends when the loop next reports the socket writable, and it asks FIONREAD
// before each read. That is two epoll_ctl, an ioctl and an extra pass of the loop per echo, the
// price of its generality; users who count microseconds use plain events, as here.
//
// Run it:    ./build/bin/yardstick_libevent_server --port 0
// Watch:     strace -e trace=epoll_wait,epoll_ctl,recvfrom,sendto
//            ./build/bin/yardstick_libevent_server

#include <event2/event.h>
#include <sys/socket.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <stdexcept>

#include "common/cli.hpp"
#include "common/net.hpp"
#include "common/options.hpp"

using namespace iolab;

namespace {

struct Conn {
    Fd fd;
    event* read_ev = nullptr;
    event* write_ev = nullptr;
    char buf[16384];
    size_t len = 0;   // bytes in buf
    size_t sent = 0;  // of them, sent
};

void close_conn(Conn* c) {
    event_free(c->read_ev);  // a pending event is deleted first: no callback runs after this
    event_free(c->write_ev);
    delete c;  // ~Fd closes the socket
}

// Sends what is left of buf; false if the connection is gone.
bool send_rest(Conn* c) {
    ssize_t n = ::send(c->fd.get(), c->buf + c->sent, c->len - c->sent, MSG_NOSIGNAL);
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
        close_conn(c);
        return false;
    }
    c->sent += n > 0 ? static_cast<size_t>(n) : 0;
    if (c->sent == c->len) {
        c->len = c->sent = 0;
    }
    return true;
}

void on_read(evutil_socket_t, short, void* arg) {
    Conn* c = static_cast<Conn*>(arg);
    ssize_t n = ::recv(c->fd.get(), c->buf, sizeof c->buf, 0);
    if (n <= 0) {
        if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
            close_conn(c);  // EOF: everything read was sent; or an error
        }
        return;
    }
    c->len = static_cast<size_t>(n);
    if (send_rest(c) && c->len != 0) {
        event_del(c->read_ev);
        event_add(c->write_ev, nullptr);
    }
}

void on_write(evutil_socket_t, short, void* arg) {
    Conn* c = static_cast<Conn*>(arg);
    if (send_rest(c) && c->len == 0) {
        event_del(c->write_ev);
        event_add(c->read_ev, nullptr);
    }
}

void on_accept(evutil_socket_t listen_fd, short, void* arg) {
    event_base* base = static_cast<event_base*>(arg);
    int conn_fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (conn_fd < 0) {
        return;  // EAGAIN, a client that left, or EMFILE: the loop reports the socket again
    }
    set_nodelay(conn_fd);  // each reply now, not held back by Nagle, as in the lab's servers
    Conn* c = new Conn;
    c->fd.reset(conn_fd);
    c->read_ev = event_new(base, conn_fd, EV_READ | EV_PERSIST, on_read, c);
    c->write_ev = event_new(base, conn_fd, EV_WRITE | EV_PERSIST, on_write, c);
    if (c->read_ev == nullptr || c->write_ev == nullptr || event_add(c->read_ev, nullptr) < 0) {
        close_conn(c);
    }
}

void on_signal(evutil_socket_t, short, void* arg) {
    event_base_loopbreak(static_cast<event_base*>(arg));
}

}  // namespace

int main(int argc, char** argv) {
    CommandLine cmd{"yardstick_libevent_server",
                    "yardstick_libevent: a minimal echo server on libevent 2.1"};
    ServerOptions opt = server_defaults(0);
    opt.port = 9103;
    opt.mode = Mode::echo;
    cmd.add_server_options(opt);
    if (int rc = cmd.parse(argc, argv); rc >= 0) {
        return rc;
    }
    if (opt.mode != Mode::echo) {
        std::fprintf(stderr, "%s: echo only (--mode echo)\n", cmd.name().c_str());
        return 2;
    }
    try {
        Fd listen_fd = listen_tcp(opt.host, opt.port, SOCK_NONBLOCK | SOCK_CLOEXEC);
        event_base* base = event_base_new();
        if (base == nullptr) {
            throw std::runtime_error("event_base_new: no usable backend");
        }
        event* accept_ev = event_new(base, listen_fd.get(), EV_READ | EV_PERSIST, on_accept, base);
        // libevent's signal events: the handler writes to a socketpair the loop watches.
        event* sigterm = evsignal_new(base, SIGTERM, on_signal, base);
        event* sigint = evsignal_new(base, SIGINT, on_signal, base);
        if (accept_ev == nullptr || sigterm == nullptr || sigint == nullptr ||
            event_add(accept_ev, nullptr) < 0 || event_add(sigterm, nullptr) < 0 ||
            event_add(sigint, nullptr) < 0) {
            throw std::runtime_error("event_new/event_add for the listening socket and signals");
        }
        announce_listening(listen_fd.get(), "yardstick_libevent", opt);
        event_base_dispatch(base);
        return 0;  // the connections still open close with the process
    } catch (const std::exception& e) {
        return report_setup_failure(cmd.name(), e);
    }
}
