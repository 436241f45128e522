// 01_blocking: the iterative server, one client at a time.
//
// The model: every socket is in the default blocking mode. The server accept(2)s one client and
// serves it until it leaves; only then does it accept the next. A read blocks in both phases of
// IO: recv(2) sleeps until data arrives (phase 1, waiting), then the kernel copies it into our
// buffer (phase 2, copying), and only then does the call return.
//
// The lesson is who waits: while this server talks to one client, every other client that
// connects has finished the TCP handshake (the kernel does that on its own) but sits in the
// listen backlog, unanswered, until the first one leaves. `WORK 5000` on one connection freezes
// the whole server for five seconds.
//
// Limits: one client at a time. A client that goes quiet holds the server forever, unless
// --idle-timeout is set: then SO_RCVTIMEO makes recv give up after that long, and SO_SNDTIMEO
// does the same for a send to a client that never reads.
//
// Run it:    ./build/bin/01_blocking_server            (listens on 127.0.0.1:9001)
// Talk:      nc 127.0.0.1 9001      then type PING, ECHO hi, TIME, WORK 2000, STATS, QUIT
// Watch:     strace -tt -e trace=network ./build/bin/01_blocking_server
//            (see recv block for as long as you stay silent), or run with --trace.
//            ss -tnl 'sport = :9001' shows Recv-Q, the clients waiting in the backlog.

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <string>

#include "common/net.hpp"
#include "common/options.hpp"
#include "common/qa.hpp"
#include "common/stop.hpp"
#include "common/trace.hpp"

using namespace iolab;

namespace {

// How long an over-long line's sender gets to read our ERR line before we close.
constexpr int kDrainMs = 1000;

struct Conn {
    Fd fd;
    LineParser in;
    std::string out;  // replies to one batch of requests, sent with one write_all
};

// Sends everything in c.out. Returns false if the client is gone or stopped reading (the send
// timed out), which ends the connection.
bool flush(Conn& c) {
    int rc = write_all(c.fd.get(), c.out);
    c.out.clear();
    return rc == 0;
}

// Question-answer mode: read, answer every complete line, repeat.
void serve_qa(Conn& c, ServerStats& stats, const ServerOptions& opt) {
    char buf[16384];
    for (;;) {
        // Phase 1 and phase 2 both happen inside this one call: it returns only once bytes
        // have arrived and been copied into `buf`.
        ssize_t n = TRACE_IO("recv", c.fd.get(), ::recv(c.fd.get(), buf, sizeof buf, 0));
        if (n == 0) {
            return;  // the client closed its side
        }
        if (n < 0) {
            if (errno == EINTR && !stop_requested()) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {  // SO_RCVTIMEO expired
                c.out += kIdleTimeout;
                flush(c);
            }
            return;
        }
        c.in.feed(buf, static_cast<size_t>(n));
        while (auto line = c.in.next()) {
            Request req = parse_request(*line);
            if (req.verb == Verb::work && !block_for_work(req.work_ms)) {
                return;  // stopping
            }
            append_reply(c.out, req, stats);
            stats.requests.fetch_add(1, std::memory_order_relaxed);
            if (req.verb == Verb::quit) {
                flush(c);
                return;
            }
        }
        if (c.in.too_long()) {
            c.out += too_long_reply(opt.max_line);
            flush(c);
            shutdown_and_drain(c.fd, kDrainMs);
            return;
        }
        if (!flush(c)) {
            return;
        }
    }
}

// Echo mode: every byte back. A short send is finished by write_all; EOF means the client has
// shut down its write side, and everything it sent has already gone back.
void serve_echo(Conn& c) {
    char buf[65536];
    for (;;) {
        ssize_t n = TRACE_IO("recv", c.fd.get(), ::recv(c.fd.get(), buf, sizeof buf, 0));
        if (n < 0 && errno == EINTR && !stop_requested()) {
            continue;
        }
        if (n <= 0) {
            return;
        }
        if (write_all(c.fd.get(), buf, static_cast<size_t>(n)) != 0) {
            return;
        }
    }
}

void serve(Fd conn_fd, ServerStats& stats, const ServerOptions& opt) {
    const int fd = conn_fd.get();
    Conn c{std::move(conn_fd), LineParser(opt.max_line), {}};
    if (opt.idle_timeout > 0) {
        set_io_timeouts(fd, opt.idle_timeout);
    }
    // A stop signal shuts this socket down, so a recv that is blocked on it, or about to be,
    // returns 0 at once (see common/stop.hpp for the race this closes).
    wake_on_stop(fd);
    if (!stop_requested()) {
        if (opt.mode == Mode::qa) {
            serve_qa(c, stats, opt);
        } else {
            serve_echo(c);
        }
    }
    forget_on_stop(fd);
}

int run(const ServerOptions& opt) {
    Fd listen_fd = listen_tcp(opt.host, opt.port);
    ServerStats stats("01_blocking");
    announce_listening(listen_fd.get(), stats.model, opt);
    // On SIGTERM the handler shuts the listening socket down: accept fails with EINVAL at once,
    // even if the signal came just before the call.
    wake_on_stop(listen_fd.get());

    while (!stop_requested()) {
        // Blocks until a client has completed the handshake. Others that connect while we
        // serve this one wait in the kernel's backlog (listen(2)'s queue), not here.
        int conn_fd = TRACE_IO("accept", listen_fd.get(),
                               ::accept4(listen_fd.get(), nullptr, nullptr, SOCK_CLOEXEC));
        if (conn_fd < 0) {
            // EINTR or EINVAL: a stop signal arrived; the loop condition decides. ECONNABORTED and
            // the like: that client is gone, take the next. EMFILE cannot last here: we hold
            // one connection at a time.
            continue;
        }
        stats.accepted.fetch_add(1, std::memory_order_relaxed);
        stats.conns.store(1, std::memory_order_relaxed);
        set_nodelay(conn_fd);
        serve(Fd(conn_fd), stats, opt);
        stats.conns.store(0, std::memory_order_relaxed);
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"01_blocking: iterative blocking server, one client at a time",
                 "01_blocking_server"};
    ServerOptions opt = server_defaults(1);
    add_server_options(app, opt);
    if (int rc = parse_command_line(app, argc, argv); rc >= 0) {
        return rc;
    }
    // A client that vanishes turns our next send into EPIPE; write_all passes MSG_NOSIGNAL, and
    // ignoring SIGPIPE as well keeps any other write from killing the server.
    std::signal(SIGPIPE, SIG_IGN);
    try {
        install_stop_handlers();
        return run(opt);
    } catch (const std::exception& e) {
        return report_setup_failure(app.get_name(), e);
    }
}
