// 08_reactor_workers: one reactor for the IO, a pool of worker threads for the slow handlers.
//
// The model: the reactor of server.cpp, with one change in the application: a request that
// takes long (WORK) is not run by the handler that read it. The handler puts it on a queue and
// returns at once, so the dispatcher goes on serving every other connection; a worker thread
// takes it, blocks for it, and hands the reply back to the reactor with post(), which queues it
// and writes to the reactor's eventfd. The loop wakes in epoll_wait, reads the eventfd, and in
// its own thread appends the reply and sends it. Sockets are only ever touched by the loop's
// thread; workers see no descriptor at all.
//
// Order: replies leave in request order on each connection. While a connection's WORK is with a
// worker, the connection is "busy": its later requests wait, unparsed, in its line buffer, and
// the reactor stops reading from it (which also bounds the job queue: one job per connection at
// most). When the reply comes back the waiting requests are answered and reading resumes.
// Requests that are quick (PING, TIME, STATS) are answered in the loop: handing them to a thread
// would cost more than answering them.
//
// Who blocks whom: nobody blocks the loop. With --workers N, N WORKs run at once; the N+1th
// waits for a free worker, and only its own connection waits with it.
//
// Limits: one loop thread for all the IO (add loops as in server_multi.cpp for more), and a
// worker per concurrent slow request.
//
// Run it:    ./build/bin/08_reactor_workers_server --workers 4        (127.0.0.1:9008)
// Watch:     strace -f -e trace=epoll_wait,read,write ./build/bin/08_reactor_workers_server
//            and send WORK 1000: a worker thread's write to the eventfd wakes the loop;
//            STATS threads= counts the loop and the workers.

#include <sys/socket.h>

#include <condition_variable>
#include <csignal>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "08_reactor/connection.hpp"
#include "08_reactor/reactor.hpp"
#include "common/cli.hpp"
#include "common/net.hpp"
#include "common/options.hpp"
#include "common/qa.hpp"
#include "common/stop.hpp"

using namespace iolab;
using reactor::Acceptor;
using reactor::Connection;
using reactor::Connections;
using reactor::kReadable;
using reactor::Reactor;
using reactor::StopHandler;

namespace {

// A fixed set of threads taking jobs from one queue (defined after run(), below).
class WorkerPool {
public:
    explicit WorkerPool(int nworkers);
    ~WorkerPool();  // stops and joins every worker
    void submit(std::function<void()> job);

private:
    void work();

    std::mutex mutex_;
    std::condition_variable ready_;
    std::deque<std::function<void()>> jobs_;
    bool stopping_ = false;
    std::vector<std::thread> threads_;
};

int run(const ServerOptions& opt, int nworkers) {
    reactor::Server server{opt, ServerStats("08_reactor_workers"), {}};
    Reactor reactor;
    Connections conns(reactor, server);
    // Declared after the reactor, so destroyed (its threads joined) before the reactor goes:
    // a worker may still post to it.
    WorkerPool pool(nworkers);

    // WORK leaves the loop. The connection is named by fd and serial number, not by pointer:
    // by the time the reply comes back the client may have gone and its fd been reused.
    server.offload = [&reactor, &conns, &pool](Connection& c, int ms) {
        int fd = c.handle();
        uint64_t serial = c.serial();
        pool.submit([&reactor, &conns, fd, serial, ms] {
            if (!block_for_work(ms)) {
                return;  // SIGTERM: the loop is closing everything anyway
            }
            reactor.post([&conns, fd, serial, ms] {
                if (Connection* c = conns.find(fd, serial)) {
                    c->finish_work(ms);
                }
            });
        });
    };

    Fd listen_fd = listen_tcp(opt.host, opt.port, SOCK_NONBLOCK | SOCK_CLOEXEC);
    int listening = listen_fd.get();
    auto on_accept = [&conns](Fd conn_fd) { conns.open(std::move(conn_fd)); };
    reactor.register_handler(std::make_unique<Acceptor>(std::move(listen_fd), conns, on_accept),
                             kReadable);
    reactor.register_handler(std::make_unique<StopHandler>(reactor), kReadable);

    announce_listening(listening, server.stats.model, opt);
    reactor.run();
    return 0;
}

// ---- the worker pool ----

WorkerPool::WorkerPool(int nworkers) {
    for (int i = 0; i < nworkers; ++i) {
        threads_.emplace_back([this] { work(); });
    }
}

WorkerPool::~WorkerPool() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    ready_.notify_all();
    for (auto& t : threads_) {
        t.join();
    }
}

void WorkerPool::submit(std::function<void()> job) {
    {
        std::lock_guard lock(mutex_);
        jobs_.push_back(std::move(job));
    }
    ready_.notify_one();
}

void WorkerPool::work() {
    for (;;) {
        std::function<void()> job;
        {
            std::unique_lock lock(mutex_);
            ready_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
            if (stopping_) {
                return;
            }
            job = std::move(jobs_.front());
            jobs_.pop_front();
        }
        job();
    }
}

}  // namespace

int main(int argc, char** argv) {
    CommandLine cmd{"08_reactor_workers_server",
                    "08_reactor_workers: one reactor for IO, a worker pool for WORK"};
    ServerOptions opt = server_defaults(8);
    cmd.add_server_options(opt);
    int nworkers = 4;
    cmd.add_option("--workers", nworkers, "Worker threads running WORK", 1, 1024);
    if (int rc = cmd.parse(argc, argv); rc >= 0) {
        return rc;
    }
    std::signal(SIGPIPE, SIG_IGN);  // sends use MSG_NOSIGNAL; this covers any other write
    try {
        install_stop_handlers();
        return run(opt, nworkers);
    } catch (const std::exception& e) {
        return report_setup_failure(cmd.name(), e);
    }
}
