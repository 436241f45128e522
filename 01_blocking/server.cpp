// 01_blocking: the iterative server, one client at a time.
//
// The model: every socket is in the default blocking mode. The server accept(2)s one client and
// serves it until it leaves; only then does it accept the next. A read blocks in both phases of
// IO: recv(2) sleeps until data arrives (phase 1, waiting), then the kernel copies it into our
// buffer (phase 2, copying), and only then does the call return. The loop that serves one
// client is serve.hpp, written once for every blocking model; this file is the accept loop
// around it.
//
// The lesson is who waits: while this server talks to one client, every other client that
// connects has finished the TCP handshake (the kernel does that on its own) but sits in the
// listen backlog, unanswered, until the first one leaves. `WORK 5000` on one connection freezes
// the whole server for five seconds.
//
// Limits: one client at a time. A client that goes quiet holds the server forever, unless
// --idle-timeout is set, and one that trickles a request a byte at a time holds it unless
// --request-timeout is set: SO_RCVTIMEO then makes recv give up at the earlier deadline, and
// SO_SNDTIMEO drops a client that stops reading (serve.hpp).
//
// Run it:    ./build/bin/01_blocking_server            (listens on 127.0.0.1:9001)
// Talk:      nc 127.0.0.1 9001      then type PING, ECHO hi, TIME, WORK 2000, STATS, QUIT
// Watch:     strace -tt -e trace=network ./build/bin/01_blocking_server
//            (see recv block for as long as you stay silent), or run with --trace.
//            ss -tnl 'sport = :9001' shows Recv-Q, the clients waiting in the backlog.
//
// The names and the policies are those of every model: docs/listings.md.

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>

#include "01_blocking/serve.hpp"
#include "common/cli.hpp"
#include "common/net.hpp"
#include "common/options.hpp"
#include "common/qa.hpp"
#include "common/stop.hpp"
#include "common/trace.hpp"

using namespace iolab;

namespace {

struct Server {
    explicit Server(const ServerOptions& o) : opt(o) {}
    const ServerOptions& opt;
    ServerStats stats{"01_blocking"};
    Fd listen_fd;
};

void on_accept(Server& s, int conn_fd);

// listing: loop
int run(const ServerOptions& opt) {
    Server s(opt);
    s.listen_fd = listen_tcp(opt.host, opt.port);
    announce_listening(s.listen_fd.get(), s.stats.model, opt);
    // On SIGTERM the handler shuts the listening socket down: accept fails with EINVAL at once,
    // even if the signal came just before the call (common/stop.hpp).
    wake_on_stop(s.listen_fd.get());

    while (!stop_requested()) {
        // Blocks until a client has completed the handshake. Others that connect while we
        // serve this one wait in the kernel's backlog (listen(2)'s queue), not here.
        int conn_fd = TRACE_IO("accept4", s.listen_fd.get(),
                               ::accept4(s.listen_fd.get(), nullptr, nullptr, SOCK_CLOEXEC));
        if (conn_fd < 0) {
            // EINTR or EINVAL: a stop signal arrived; the loop condition decides. ECONNABORTED
            // and the like: that client is gone, take the next. EMFILE cannot last here: we
            // hold one connection at a time.
            continue;
        }
        on_accept(s, conn_fd);  // serves this client to the end; nobody else is accepted meanwhile
    }
    return 0;
}
// end listing: loop

// ---- the handlers ----

void on_accept(Server& s, int conn_fd) {
    s.stats.accepted.fetch_add(1, std::memory_order_relaxed);
    s.stats.conns.store(1, std::memory_order_relaxed);
    set_nodelay(conn_fd);
    Conn c(Fd(conn_fd), s.opt, s.stats);
    // A stop signal shuts this socket down, so a recv that is blocked on it, or about to be,
    // returns 0 at once (see common/stop.hpp for the race this closes).
    wake_on_stop(conn_fd);
    if (!stop_requested()) {
        serve(c);  // serve.hpp: recv, answer, send, until the client leaves or a deadline passes
    }
    forget_on_stop(conn_fd);  // before the close: the number is free for reuse after it
    close_conn(c);
    s.stats.conns.store(0, std::memory_order_relaxed);
}

}  // namespace

int main(int argc, char** argv) {
    CommandLine cmd{"01_blocking_server",
                    "01_blocking: iterative blocking server, one client at a time"};
    ServerOptions opt = server_defaults(1);
    cmd.add_server_options(opt);
    if (int rc = cmd.parse(argc, argv); rc >= 0) {
        return rc;
    }
    // A client that vanishes turns our next send into EPIPE; write_all passes MSG_NOSIGNAL, and
    // ignoring SIGPIPE as well keeps any other write from killing the server.
    std::signal(SIGPIPE, SIG_IGN);
    try {
        install_stop_handlers();
        return run(opt);
    } catch (const std::exception& e) {
        return report_setup_failure(cmd.name(), e);
    }
}
