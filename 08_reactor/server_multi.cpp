// 08_reactor_multi: one reactor per core (the "main reactor + sub-reactors" arrangement).
//
// The model: the reactor of server.cpp, several times over. A reactor is single-threaded by
// design, so the way to use more cores is more reactors, each a thread with its own epoll
// instance, its own connections and its own read buffer; they share nothing but the counters.
// This is how nginx runs (one event loop per worker process, one worker per core), and muduo,
// Netty and memcached (one loop per thread).
//
// How connections are spread: a main reactor, in the main thread, owns the listening socket and
// only accepts; it hands each new connection to the sub-reactors in turn (round-robin) by
// post(), which queues the socket and wakes the sub-reactor through its eventfd. The other way,
// SO_REUSEPORT (one listening socket per loop, the kernel picking one by a hash of the
// addresses), costs no hand-off, but the hash may put two clients on the same loop while another
// sits idle, and which loop a client lands on cannot be predicted. Round-robin is even and
// predictable: consecutive connections always land on different loops, which is what makes the
// head-of-line test (tests/model_08_reactor_test.cpp) exact. --max-conns is checked by the main
// reactor against one atomic count that every loop lowers as its connections close.
//
// Who blocks whom: WORK 500 blocks its own sub-reactor, and the connections that share it wait;
// the other loops go on. With N loops a slow handler stalls about 1/N of the clients, not all.
//
// Limits: the main reactor's accept rate (one thread); a busy loop still gets its share of new
// connections. Default --loops: the number of cores, at least 2.
//
// Run it:    ./build/bin/08_reactor_multi_server --loops 4          (127.0.0.1:9008)
// Watch:     strace -f -e trace=epoll_wait,accept4,write,read ./build/bin/08_reactor_multi_server
//            (the main thread's accept4, its 8-byte write to a sub-reactor's eventfd, that
//            thread's epoll_wait returning and its read of the eventfd); top -H shows the loops.

#include <sys/socket.h>

#include <algorithm>
#include <csignal>
#include <memory>
#include <thread>
#include <vector>

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

// A sub-reactor: a reactor, the connections it serves, and the thread that runs it.
struct Loop {
    explicit Loop(reactor::Server& server) : conns(reactor, server) {}
    Reactor reactor;
    Connections conns;
    std::thread thread;
};

int run(const ServerOptions& opt, int nloops) {
    reactor::Server server{opt, ServerStats("08_reactor_multi"), {}};
    std::vector<std::unique_ptr<Loop>> loops;
    for (int i = 0; i < nloops; ++i) {
        loops.push_back(std::make_unique<Loop>(server));
        // Every loop watches the stop pipe; the byte stays in it, so all of them wake.
        Reactor& r = loops.back()->reactor;
        r.register_handler(std::make_unique<StopHandler>(r), kReadable);
    }

    Reactor main_reactor;
    Connections refused(main_reactor, server);  // the main reactor keeps only refused clients
    size_t next = 0;
    auto hand_off = [&loops, &next](Fd conn_fd) {
        Loop& loop = *loops[next];
        next = (next + 1) % loops.size();
        // From here on the socket belongs to that loop's thread; no other thread touches it.
        int fd = conn_fd.release();
        loop.reactor.post([&loop, fd] { loop.conns.open(Fd(fd)); });
    };
    Fd listen_fd = listen_tcp(opt.host, opt.port, SOCK_NONBLOCK | SOCK_CLOEXEC);
    int listening = listen_fd.get();
    main_reactor.register_handler(
        std::make_unique<Acceptor>(std::move(listen_fd), refused, hand_off), kReadable);
    main_reactor.register_handler(std::make_unique<StopHandler>(main_reactor), kReadable);

    announce_listening(listening, server.stats.model, opt);
    for (auto& loop : loops) {
        loop->thread = std::thread([&r = loop->reactor] { r.run(); });
    }
    main_reactor.run();
    for (auto& loop : loops) {
        loop->thread.join();
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    CommandLine cmd{"08_reactor_multi_server",
                    "08_reactor_multi: a main reactor accepts, one sub-reactor per core serves"};
    ServerOptions opt = server_defaults(8);
    cmd.add_server_options(opt);
    int nloops = std::max(2, static_cast<int>(std::thread::hardware_concurrency()));
    cmd.add_option("--loops", nloops, "Sub-reactors (threads) serving connections", 1, 256);
    if (int rc = cmd.parse(argc, argv); rc >= 0) {
        return rc;
    }
    std::signal(SIGPIPE, SIG_IGN);  // sends use MSG_NOSIGNAL; this covers any other write
    try {
        install_stop_handlers();
        return run(opt, nloops);
    } catch (const std::exception& e) {
        return report_setup_failure(cmd.name(), e);
    }
}
