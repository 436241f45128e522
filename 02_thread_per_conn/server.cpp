// 02_thread_per_conn: one blocking thread per client.
//
// The model: the main thread does nothing but accept(2). Each connection it accepts gets a new
// thread of its own, and that thread serves its client with 01_blocking's own loop
// (01_blocking/serve.hpp): blocking recv(2), blocking send(2). A thread that waits for its client
// (phase 1) or copies its data (phase 2) blocks only itself; the scheduler runs the others
// meanwhile. `WORK 5000` on one connection now stalls that connection alone. What this file adds
// to 01 is the thread, and what it takes to stop many of them.
//
// What the kernel gives: every thread has its own stack (8 MiB of address space by default,
// `ulimit -s`, of which only the touched pages are real memory), its own entry in the scheduler,
// and a context switch every time it blocks or wakes. A thousand idle clients are a thousand
// sleeping threads. That is the cost this model pays for its simple code, and the reason the
// readiness models (04, 05) exist.
//
// Limits: --max-threads (default 1000). A client over it, or one whose thread cannot be created
// (std::thread throws when the kernel refuses clone(2): RLIMIT_NPROC, memory, threads-max), gets
// "ERR server busy" and is closed; the server carries on. --max-conns holds too ("ERR server
// full"). A silent client keeps its thread unless --idle-timeout is set, and a client that
// trickles a request line a byte at a time keeps it unless --request-timeout is set.
//
// Stopping: SIGINT and SIGTERM are blocked in every connection thread, so the kernel delivers them
// to the main thread, whose accept(2) returns EINTR. Main then shutdown(2)s every live connection,
// which makes each blocked recv return 0 at once, and waits for the threads to finish.
//
// Run it:    ./build/bin/02_thread_per_conn_server          (listens on 127.0.0.1:9002)
// Talk:      nc 127.0.0.1 9002  from two terminals; WORK 5000 in one, PING in the other
// Watch:     ps -L -p $(pgrep -f 02_thread_per_conn_server)   one line per thread (LWP)
//            strace -f -e trace=network ./build/bin/02_thread_per_conn_server
//            grep ctxt /proc/$(pgrep -f 02_thread_per_conn_server)/status  (context switches)
//
// The names and the policies are those of every model: docs/listings.md.

#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <unordered_set>

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

// How long main waits for the connection threads after a stop signal.
constexpr auto kStopWait = std::chrono::milliseconds(2500);

// Everything main and the connection threads share, under one mutex. A conn_fd is in `live`
// exactly while it is open: a thread erases its number before closing it, so main never shuts
// down a number the kernel has already handed to a newer connection.
struct Server {
    Server(const ServerOptions& o, int max) : opt(o), max_threads(max) {}
    const ServerOptions& opt;
    int max_threads;
    ServerStats stats{"02_thread_per_conn"};
    Fd listen_fd;
    std::mutex mu;
    std::condition_variable all_done;
    std::unordered_set<int> live;  // conn_fds that have a thread
    int threads = 0;
};

void on_accept(Server& s, int conn_fd);
void connection_thread(Server& s, int conn_fd);
void shut_down_connections(Server& s);

// listing: loop
int run(const ServerOptions& opt, int max_threads) {
    Server s(opt, max_threads);
    s.stats.extra = [&s] { return "max_threads=" + std::to_string(s.max_threads); };
    s.listen_fd = listen_tcp(opt.host, opt.port);
    announce_listening(s.listen_fd.get(), s.stats.model, opt);
    // On SIGTERM the handler shuts the listening socket down, so accept fails at once even if
    // the signal lands between the loop's check and the call (common/stop.hpp).
    wake_on_stop(s.listen_fd.get());

    while (!stop_requested()) {
        // Main's only job. It blocks here until a client completes the handshake.
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
        on_accept(s, conn_fd);  // a new thread serves it; main goes straight back to accept
    }
    shut_down_connections(s);
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
    std::unique_lock lock(s.mu);
    if (s.threads >= s.max_threads) {
        lock.unlock();
        refuse(s.stats, conn_fd, kServerBusy);
        return;
    }
    set_nodelay(conn_fd);
    // A new thread starts with its creator's signal mask. Blocking the stop signals around
    // std::thread's clone(2) means no connection thread can ever take SIGTERM: it lands on main.
    sigset_t stop_signals, old_mask;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    if (int rc = pthread_sigmask(SIG_BLOCK, &stop_signals, &old_mask); rc != 0) {
        throw std::system_error(rc, std::generic_category(), "pthread_sigmask");
    }
    s.live.insert(conn_fd);
    ++s.threads;
    s.stats.conns.fetch_add(1, std::memory_order_relaxed);
    try {
        std::thread(connection_thread, std::ref(s), conn_fd).detach();
    } catch (const std::system_error&) {
        // EAGAIN from clone(2): out of threads or memory. The client is still ours to answer.
        s.live.erase(conn_fd);
        --s.threads;
        s.stats.conns.fetch_sub(1, std::memory_order_relaxed);
        lock.unlock();
        refuse(s.stats, conn_fd, kServerBusy);
    }
    pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
}

// The body of every connection thread. It receives a plain descriptor, not an Fd, so that if
// std::thread cannot start, the descriptor is still main's to answer and close.
void connection_thread(Server& s, int conn_fd) {
    Conn c(Fd(conn_fd), s.opt, s.stats);
    serve(c);  // 01_blocking/serve.hpp: only this thread sleeps in its recv
    {
        std::lock_guard lock(s.mu);
        s.live.erase(conn_fd);  // before the close: the number is free for reuse after it
    }
    close_conn(c);
    s.stats.conns.fetch_sub(1, std::memory_order_relaxed);
    std::lock_guard lock(s.mu);
    --s.threads;
    s.all_done.notify_all();
}

// ---- the edge cases ----

// Stop accepting, wake every thread blocked on its socket, wait for them all.
void shut_down_connections(Server& s) {
    std::unique_lock lock(s.mu);
    for (int fd : s.live) {
        // A recv blocked on this socket returns 0, a send blocked on it fails with EPIPE.
        ::shutdown(fd, SHUT_RDWR);
    }
    if (!s.all_done.wait_for(lock, kStopWait, [&] { return s.threads == 0; })) {
        // The detached threads still use `s`; leave without running any destructor.
        std::fprintf(stderr, "02_thread_per_conn_server: %d threads did not finish; exiting\n",
                     s.threads);
        std::_Exit(0);
    }
}

}  // namespace

int main(int argc, char** argv) {
    CommandLine cmd{"02_thread_per_conn_server",
                    "02_thread_per_conn: one blocking thread per client"};
    ServerOptions opt = server_defaults(2);
    cmd.add_server_options(opt);
    int max_threads = 1000;
    cmd.add_option("--max-threads", max_threads,
                   "Connection threads at once; more clients get ERR server busy", 1, 100000);
    if (int rc = cmd.parse(argc, argv); rc >= 0) {
        return rc;
    }
    // A client that vanishes turns our next send into EPIPE; write_all passes MSG_NOSIGNAL, and
    // ignoring SIGPIPE as well keeps any other write from killing the server.
    std::signal(SIGPIPE, SIG_IGN);
    try {
        install_stop_handlers();
        return run(opt, max_threads);
    } catch (const std::exception& e) {
        return report_setup_failure(cmd.name(), e);
    }
}
