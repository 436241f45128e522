// 08_reactor: the Reactor pattern, built. One reactor, one thread.
//
// The model: 05_epoll's loop, taken apart into the seed's three parts. The demultiplexer
// (reactor.cpp: epoll_create1, epoll_ctl, epoll_wait) waits for readiness on every socket at
// once; the dispatcher (Reactor::run) calls the event handler registered for each ready
// descriptor; the event handlers (connection.cpp: Acceptor, Connection, StopHandler) do the
// application's work and tell the reactor what they wait for next. This file is what is left
// for the application once demultiplexing is factored out: make a reactor, register handlers,
// run it.
//
// Who blocks whom: the thread sleeps only in epoll_wait (phase 1, waiting, done for all sockets
// together). Each handler's recv/send only copies (phase 2) and returns. But the handlers run one
// after the other in this one thread, so a handler that takes long, `WORK 500`, holds up every
// other connection for those 500 ms: a PING on another connection is answered only after it.
//
// The kernel: level-triggered epoll reports a socket on every wait while it is readable or
// writable, so a handler may read once and leave the rest; kWritable is asked for only while a
// connection has unsent output. SO_RCVBUF/SO_SNDBUF limit what the kernel holds per socket; our
// own output is capped by a high-water mark (256 KiB), past which we stop reading that client.
//
// Limits: one core. One slow handler stalls everyone (see server_multi.cpp: a reactor per core,
// and server_workers.cpp: a worker pool for WORK). Descriptors: ulimit -n.
//
// Run it:    ./build/bin/08_reactor_server                 (listens on 127.0.0.1:9008)
// Talk:      nc 127.0.0.1 9008, or ./build/bin/08_reactor_client; then PING, WORK 2000, STATS
// Watch:     strace -e trace=epoll_wait,epoll_ctl,recvfrom,sendto,accept4
// ./build/bin/08_reactor_server
//            (one epoll_wait, then the handlers' calls, then the next epoll_wait), or --trace;
//            ss -tnp 'sport = :9008' shows each connection's Recv-Q and Send-Q.

#include <sys/socket.h>

#include <csignal>
#include <memory>

#include "08_reactor/connection.hpp"
#include "08_reactor/reactor.hpp"
#include "common/cli.hpp"
#include "common/net.hpp"
#include "common/options.hpp"
#include "common/stop.hpp"

using namespace iolab;
using reactor::Acceptor;
using reactor::Connections;
using reactor::kReadable;
using reactor::Reactor;
using reactor::StopHandler;

namespace {

int run(const ServerOptions& opt) {
    reactor::Server server{opt, ServerStats("08_reactor"), {}};
    Reactor reactor;
    Connections conns(reactor, server);

    // Register the handlers. From here on the application does not call the kernel to wait;
    // the reactor calls the application.
    Fd listen_fd = listen_tcp(opt.host, opt.port, SOCK_NONBLOCK | SOCK_CLOEXEC);
    int listening = listen_fd.get();
    auto on_accept = [&conns](Fd conn_fd) { conns.open(std::move(conn_fd)); };
    reactor.register_handler(std::make_unique<Acceptor>(std::move(listen_fd), conns, on_accept),
                             kReadable);
    reactor.register_handler(std::make_unique<StopHandler>(reactor), kReadable);

    announce_listening(listening, server.stats.model, opt);
    reactor.run();  // until SIGINT/SIGTERM; then every handler is destroyed, every socket closed
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    CommandLine cmd{"08_reactor_server",
                    "08_reactor: the Reactor pattern (demultiplexer, dispatcher, handlers)"};
    ServerOptions opt = server_defaults(8);
    cmd.add_server_options(opt);
    if (int rc = cmd.parse(argc, argv); rc >= 0) {
        return rc;
    }
    // A send to a client that has gone is EPIPE (we pass MSG_NOSIGNAL); ignoring SIGPIPE too
    // keeps any other write from killing the server.
    std::signal(SIGPIPE, SIG_IGN);
    try {
        install_stop_handlers();
        return run(opt);
    } catch (const std::exception& e) {
        return report_setup_failure(cmd.name(), e);
    }
}
