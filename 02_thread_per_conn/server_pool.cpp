// 02_thread_per_conn_pool: a fixed pool of blocking worker threads fed by a bounded queue.
//
// The model: --threads N workers (default 4) are started once, up front. The main thread
// accept(2)s clients and puts each connection in a queue of at most --queue entries (default 64).
// A worker takes one connection from the queue and serves it with blocking recv(2)/send(2), like
// 01 and like the thread-per-connection server (01_blocking/serve.hpp, the same loop), until that
// client leaves; then it takes the next.
// No thread is created or destroyed per client, so the cost of clone(2) and of a fresh stack is
// paid once, and the number of threads (and their stacks and context switches) stays fixed.
//
// The price: a worker is held for the whole life of its connection. With 4 workers, a 5th client
// that connects at the same time waits in the queue: it is connected, its requests sit in its
// socket's receive buffer, and nobody answers until a worker is free. Idle clients hog workers,
// and so do clients that trickle a request a byte at a time: --idle-timeout and
// --request-timeout (SO_RCVTIMEO on every recv) are the pool's defence against them.
//
// When demand exceeds the pool it shows. With the queue full, main first stops accepting, so new
// clients wait in the kernel's listen backlog; as long as the workers keep taking connections
// from the queue that is only a delay. If the queue has not moved for a whole second (every
// worker stuck with a slow or idle client), each new client is accepted, told "ERR server busy"
// and closed at once. --max-conns counts queued and served connections ("ERR server full").
//
// Run it:    ./build/bin/02_thread_per_conn_pool_server --threads 2 --queue 2
// Talk:      nc 127.0.0.1 9002 in five terminals: two are served, two wait, the fifth is refused
//            (after a second) with ERR server busy. STATS shows workers= and queued=.
// Watch:     ps -L -p $(pgrep -f 02_thread_per_conn_pool)   always 1 + N threads
//            strace -f -e trace=network ./build/bin/02_thread_per_conn_pool_server

#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <deque>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <unordered_set>
#include <vector>

#include "01_blocking/serve.hpp"
#include "common/cli.hpp"
#include "common/conn.hpp"
#include "common/net.hpp"
#include "common/options.hpp"
#include "common/qa.hpp"
#include "common/stop.hpp"
#include "common/trace.hpp"

using namespace iolab;

namespace {

// How long a full queue may stand still before new clients are turned away.
constexpr auto kPatience = std::chrono::seconds(1);

// Everything the main thread and the workers share, under one mutex.
struct Pool {
    std::mutex mu;
    std::condition_variable has_work;  // main -> workers: a connection was queued, or stop
    std::condition_variable taken;     // workers -> main: the queue has room again
    std::deque<Fd> queue;              // accepted, waiting for a worker
    std::unordered_set<int> serving;   // conn_fds a worker is serving now (open while listed)
    Clock::time_point last_take;       // when a worker last took a connection from the queue
    Clock::time_point full_since;      // when the queue last became full
    bool stopping = false;
};

struct Server {
    Server(const ServerOptions& o, int n, size_t cap) : opt(o), threads(n), queue_cap(cap) {}
    const ServerOptions& opt;
    int threads;
    size_t queue_cap;
    ServerStats stats{"02_thread_per_conn_pool"};
    Fd listen_fd;
    Pool pool;
    std::vector<std::thread> workers;
};

void start_workers(Server& s);
void wait_for_room(Server& s);
void on_accept(Server& s, int conn_fd);
void worker(Server& s);
void shut_down_pool(Server& s);

// listing: loop
int run(const ServerOptions& opt, int threads, size_t queue_cap) {
    Server s(opt, threads, queue_cap);
    s.stats.extra = [&s] {
        std::lock_guard lock(s.pool.mu);
        return "workers=" + std::to_string(s.threads) +
               " queued=" + std::to_string(s.pool.queue.size());
    };
    s.listen_fd = listen_tcp(opt.host, opt.port);
    start_workers(s);  // --threads of them, each waiting for a connection in the queue
    announce_listening(s.listen_fd.get(), s.stats.model, opt);
    // On SIGTERM the handler shuts the listening socket down, so accept fails at once even if
    // the signal lands between the loop's check and the call (common/stop.hpp).
    wake_on_stop(s.listen_fd.get());

    while (!stop_requested()) {
        wait_for_room(s);  // with the queue full, clients wait in the kernel's backlog instead
        int conn_fd = TRACE_IO("accept4", s.listen_fd.get(),
                               ::accept4(s.listen_fd.get(), nullptr, nullptr, SOCK_CLOEXEC));
        if (conn_fd < 0) {
            // EMFILE/ENFILE: the client stays in the backlog and the next accept fails the
            // same way at once, so pause instead of spinning. EINTR, EINVAL (shut down by a
            // stop signal): the loop condition decides.
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                std::this_thread::sleep_for(std::chrono::milliseconds(100));
            }
            continue;
        }
        on_accept(s, conn_fd);  // into the queue; a worker takes it from there
    }
    shut_down_pool(s);
    return 0;
}
// end listing: loop

// ---- the handlers ----

void on_accept(Server& s, int conn_fd) {
    s.stats.accepted.fetch_add(1, std::memory_order_relaxed);
    if (s.stats.conns.load(std::memory_order_relaxed) >= static_cast<uint64_t>(s.opt.max_conns)) {
        refuse(s.stats, conn_fd);  // ERR server full, then a close that keeps the line
        return;
    }
    std::unique_lock lock(s.pool.mu);
    if (s.pool.queue.size() >= s.queue_cap) {
        lock.unlock();
        refuse(s.stats, conn_fd, kServerBusy);
        return;
    }
    set_nodelay(conn_fd);
    s.pool.queue.emplace_back(conn_fd);
    if (s.pool.queue.size() == s.queue_cap) {
        s.pool.full_since = Clock::now();
    }
    s.stats.conns.fetch_add(1, std::memory_order_relaxed);
    lock.unlock();
    s.pool.has_work.notify_one();
}

// A worker: take a connection, serve it to the end with 01's loop, take the next.
void worker(Server& s) {
    for (;;) {
        Fd conn_fd;
        {
            std::unique_lock lock(s.pool.mu);
            s.pool.has_work.wait(lock, [&] { return !s.pool.queue.empty() || s.pool.stopping; });
            if (s.pool.stopping) {
                return;
            }
            conn_fd = std::move(s.pool.queue.front());
            s.pool.queue.pop_front();
            s.pool.serving.insert(conn_fd.get());
            s.pool.last_take = Clock::now();
        }
        s.pool.taken.notify_one();
        const int fd = conn_fd.get();
        Conn c(std::move(conn_fd), s.opt, s.stats);
        serve(c);  // 01_blocking/serve.hpp: only this worker sleeps in its recv
        {
            std::lock_guard lock(s.pool.mu);
            s.pool.serving.erase(fd);  // before the close: the number is free for reuse after it
        }
        close_conn(c);
        s.stats.conns.fetch_sub(1, std::memory_order_relaxed);
    }
}

// ---- the edge cases ----

// Workers start with the stop signals blocked (a thread inherits its creator's mask), so
// SIGTERM is always delivered to main, whose accept(2) it interrupts.
void start_workers(Server& s) {
    sigset_t stop_signals, old_mask;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    if (int rc = pthread_sigmask(SIG_BLOCK, &stop_signals, &old_mask); rc != 0) {
        throw std::system_error(rc, std::generic_category(), "pthread_sigmask");
    }
    for (int i = 0; i < s.threads; ++i) {
        s.workers.emplace_back(worker, std::ref(s));
    }
    pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
}

// With the queue full, leave new clients in the kernel's listen backlog, but only while the
// workers keep taking connections: a queue that stood still for kPatience is reported as busy.
void wait_for_room(Server& s) {
    std::unique_lock lock(s.pool.mu);
    auto give_up = std::max(s.pool.last_take, s.pool.full_since) + kPatience;
    while (s.pool.queue.size() >= s.queue_cap && !stop_requested() && Clock::now() < give_up) {
        s.pool.taken.wait_for(lock, std::chrono::milliseconds(50));
    }
}

// Stop accepting, close what waits in the queue, wake every worker blocked on its socket.
void shut_down_pool(Server& s) {
    {
        std::lock_guard lock(s.pool.mu);
        s.pool.stopping = true;
        for (int fd : s.pool.serving) {
            // A recv blocked on this socket returns 0, a send blocked on it fails with EPIPE.
            ::shutdown(fd, SHUT_RDWR);
        }
        s.stats.conns.fetch_sub(s.pool.queue.size(), std::memory_order_relaxed);
        s.pool.queue.clear();
    }
    s.pool.has_work.notify_all();
    for (auto& t : s.workers) {
        t.join();
    }
}

}  // namespace

int main(int argc, char** argv) {
    CommandLine cmd{
        "02_thread_per_conn_pool_server",
        "02_thread_per_conn_pool: a fixed pool of blocking workers fed by a bounded queue"};
    ServerOptions opt = server_defaults(2);
    cmd.add_server_options(opt);
    int threads = 4;
    size_t queue_cap = 64;
    cmd.add_option("--threads", threads, "Worker threads; each serves one connection at a time", 1,
                   10000);
    cmd.add_option("--queue", queue_cap,
                   "Accepted connections waiting for a worker; when full, ERR server busy",
                   size_t{1}, size_t{1000000});
    if (int rc = cmd.parse(argc, argv); rc >= 0) {
        return rc;
    }
    // A client that vanishes turns our next send into EPIPE; write_all passes MSG_NOSIGNAL, and
    // ignoring SIGPIPE as well keeps any other write from killing the server.
    std::signal(SIGPIPE, SIG_IGN);
    try {
        install_stop_handlers();
        return run(opt, threads, queue_cap);
    } catch (const std::exception& e) {
        return report_setup_failure(cmd.name(), e);
    }
}
