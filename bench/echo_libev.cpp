// yardstick_libev: the smallest echo server libev users write, one loop, one ev_io per socket.
//
// It is the measure for 08_reactor_libev (bench/README.md): the lab's variant must spend no more
// than 5% more server CPU per echoed request than this, side by side in one run. So it has
// nothing the lab's QA protocol needs: no line parser, no timers, no STATS, no refusal.
//
// Each connection has one watcher and one buffer. While the buffer is empty the watcher waits for
// EV_READ; its callback reads once and sends what came at once, since a socket's send buffer
// nearly always has room. Only when the kernel takes part of it does the watcher switch to
// EV_WRITE until the rest has gone: reading no more meanwhile bounds what a client that does not
// read can make us hold. libev's backend is epoll, level-triggered, so a socket that still holds
// bytes after one recv is reported again on the next pass.
//
// Run it:    ./build/bin/yardstick_libev_server --port 0
// Watch:     strace -e trace=epoll_wait,epoll_ctl,recvfrom,sendto
// ./build/bin/yardstick_libev_server

#include <ev.h>
#include <sys/socket.h>

#include <cerrno>
#include <csignal>
#include <cstdio>

#include "common/cli.hpp"
#include "common/net.hpp"
#include "common/options.hpp"

using namespace iolab;

namespace {

struct Conn {
    ev_io io;  // io.data points back to this Conn
    Fd fd;
    char buf[16384];
    size_t len = 0;   // bytes in buf
    size_t sent = 0;  // of them, sent
};

void close_conn(struct ev_loop* loop, Conn* c) {
    ev_io_stop(loop, &c->io);
    delete c;  // ~Fd closes the socket
}

// Switches the watcher between waiting to read and waiting to write.
void wait_for(struct ev_loop* loop, Conn* c, int events) {
    ev_io_stop(loop, &c->io);
    ev_io_set(&c->io, c->fd.get(), events);
    ev_io_start(loop, &c->io);
}

// Sends what is left of buf; false if the connection is gone.
bool send_rest(struct ev_loop* loop, Conn* c) {
    ssize_t n = ::send(c->fd.get(), c->buf + c->sent, c->len - c->sent, MSG_NOSIGNAL);
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
        close_conn(loop, c);
        return false;
    }
    c->sent += n > 0 ? static_cast<size_t>(n) : 0;
    if (c->sent == c->len) {
        c->len = c->sent = 0;
    }
    return true;
}

void on_io(struct ev_loop* loop, ev_io* w, int revents) {
    Conn* c = static_cast<Conn*>(w->data);
    if (revents & EV_WRITE) {
        if (send_rest(loop, c) && c->len == 0) {
            wait_for(loop, c, EV_READ);
        }
        return;
    }
    ssize_t n = ::recv(c->fd.get(), c->buf, sizeof c->buf, 0);
    if (n <= 0) {
        if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
            close_conn(loop, c);  // EOF: everything read was sent; or an error
        }
        return;
    }
    c->len = static_cast<size_t>(n);
    if (send_rest(loop, c) && c->len != 0) {
        wait_for(loop, c, EV_WRITE);
    }
}

void on_accept(struct ev_loop* loop, ev_io* w, int) {
    int conn_fd = ::accept4(w->fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (conn_fd < 0) {
        return;  // EAGAIN, a client that left, or EMFILE: the loop reports the socket again
    }
    set_nodelay(conn_fd);  // each reply now, not held back by Nagle, as in the lab's servers
    Conn* c = new Conn;
    c->fd.reset(conn_fd);
    ev_io_init(&c->io, on_io, conn_fd, EV_READ);
    c->io.data = c;
    ev_io_start(loop, &c->io);
}

void on_signal(struct ev_loop* loop, ev_signal*, int) {
    ev_break(loop, EVBREAK_ALL);
}

}  // namespace

int main(int argc, char** argv) {
    CommandLine cmd{"yardstick_libev_server", "yardstick_libev: a minimal echo server on libev"};
    ServerOptions opt = server_defaults(0);
    opt.port = 9102;
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
        // The default loop is the one that may watch signals: libev installs the handlers.
        struct ev_loop* loop = EV_DEFAULT;
        ev_io accept_watcher;
        ev_io_init(&accept_watcher, on_accept, listen_fd.get(), EV_READ);
        ev_io_start(loop, &accept_watcher);
        ev_signal sigterm, sigint;
        ev_signal_init(&sigterm, on_signal, SIGTERM);
        ev_signal_start(loop, &sigterm);
        ev_signal_init(&sigint, on_signal, SIGINT);
        ev_signal_start(loop, &sigint);
        announce_listening(listen_fd.get(), "yardstick_libev", opt);
        ev_run(loop, 0);
        return 0;  // the connections still open close with the process
    } catch (const std::exception& e) {
        return report_setup_failure(cmd.name(), e);
    }
}
