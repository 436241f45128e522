// 02_process_per_conn: one child process per client, fork(2) after accept(2).
//
// The model: the parent does nothing but accept(2) and fork(2). The child is a copy of the
// parent, with a copy of every descriptor, the new connection's included; it closes its copy of
// the listening socket, serves its one client with 01_blocking's own loop
// (01_blocking/serve.hpp: blocking recv(2), blocking send(2)) and exits. The parent closes its
// copy of the connection at once (the socket lives on while any process holds it open) and goes
// back to accept. This is 02_thread_per_conn with processes for threads, and what changes is what
// they share: nothing, unless asked for.
//
// What the kernel gives: fork copies the address space lazily (copy-on-write: parent and child
// share every page until one of them writes it), so a child costs its page tables, its kernel
// task and the pages it dirties. A child that crashes, leaks or spins takes only its own client
// with it; the parent and every other child carry on. The price is paid in creation (fork is
// dearer than clone(2) for a thread), in memory, and in sharing: the STATS counters live in one
// page mapped MAP_SHARED|MAP_ANONYMOUS before the first fork, the only memory every process of
// the server writes, with lock-free atomics in it.
//
// A child that exits stays a zombie (its exit status kept for the parent) until the parent
// waits for it. The SIGCHLD handler reaps with waitpid(WNOHANG) until no exited child is left,
// so there are no zombies; it also counts the live children (STATS procs=) and those that died
// of a signal or a failure (died=). SIGCHLD is blocked around fork, so the handler never sees a
// child the parent has not recorded yet.
//
// Limits: --max-procs (default 256) children at once; a client over it, or one for whom fork
// fails (EAGAIN: RLIMIT_NPROC or memory), gets "ERR server busy" and is closed. --max-conns holds
// too ("ERR server full").
//
// Stopping: SIGINT or SIGTERM shuts the parent's listening socket down (common/stop.hpp), so its
// accept fails. The parent sends SIGTERM to every live child, whose own handler shuts its
// connection down (a blocked recv returns 0, a WORK sees the stop within 20 ms), waits for them
// with sigtimedwait on SIGCHLD, SIGKILLs any left after 2.5 s, and exits 0.
//
// Run it:    ./build/bin/02_process_per_conn_server          (listens on 127.0.0.1:9002)
// Talk:      nc 127.0.0.1 9002  from two terminals; STATS shows procs=
// Watch:     pstree -p $(pgrep -f 02_process_per_conn_server)   one child per client
//            strace -f -e trace=network,fork,clone,wait4,kill
//            ./build/bin/02_process_per_conn_server kill -KILL <a child>: that client's connection
//            is reset, nobody else notices
//
// The names and the policies are those of every model: docs/listings.md.

#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <memory>
#include <new>
#include <string>
#include <thread>

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

// How long the parent waits for its children after a stop signal, before it SIGKILLs them.
constexpr auto kStopWait = std::chrono::milliseconds(2500);

// The memory every process of the server writes: mapped MAP_SHARED before the first fork, so
// that the parent and all its children see the same page, not copies of it. The counters are
// lock-free atomics, which work across processes because they are plain instructions on that
// page. The model name and the `extra` function inside `stats` point into the parent's heap;
// each child has a copy of that heap from fork and never changes them.
struct Shared {
    ServerStats stats{"02_process_per_conn"};
    std::atomic<int> procs{0};  // live children
    std::atomic<int> died{0};   // children that ended by a signal or with a non-zero status
};
static_assert(std::atomic<uint64_t>::is_always_lock_free && std::atomic<int>::is_always_lock_free,
              "counters shared between processes must be lock-free");

// What the SIGCHLD handler must reach, so file-scope: the shared counters, and the pid of every
// live child (0: a free slot), which the parent needs to signal them when it stops.
Shared* g_shared = nullptr;
std::atomic<pid_t>* g_children = nullptr;
int g_max_procs = 0;

struct Server {
    Server(const ServerOptions& o, int max_procs);
    ~Server();
    const ServerOptions& opt;
    int max_procs;
    Shared* shared;  // the MAP_SHARED page
    std::unique_ptr<std::atomic<pid_t>[]> children;
    Fd listen_fd;
    ServerStats& stats() { return shared->stats; }
};

void on_accept(Server& s, int conn_fd);
[[noreturn]] void serve_in_child(Server& s, int conn_fd, const sigset_t& mask);
void shut_down_children(Server& s);

// listing: loop
int run(const ServerOptions& opt, int max_procs) {
    Server s(opt, max_procs);  // the shared page, and the SIGCHLD handler that reaps children
    s.listen_fd = listen_tcp(opt.host, opt.port);
    announce_listening(s.listen_fd.get(), s.stats().model, opt);
    // On SIGTERM the handler shuts the listening socket down, so accept fails at once even if
    // the signal lands between the loop's check and the call (common/stop.hpp).
    wake_on_stop(s.listen_fd.get());

    while (!stop_requested()) {
        // The parent's only wait. A child that exits meanwhile interrupts it with SIGCHLD; the
        // handler is installed with SA_RESTART, so the kernel restarts accept after reaping.
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
        on_accept(s, conn_fd);  // fork: the child serves it, the parent closes its copy
    }
    shut_down_children(s);
    return 0;
}
// end listing: loop

// ---- the handlers ----

// listing: fork
void on_accept(Server& s, int conn_fd) {
    s.stats().accepted.fetch_add(1, std::memory_order_relaxed);
    if (s.stats().conns.load(std::memory_order_relaxed) >= static_cast<uint64_t>(s.opt.max_conns)) {
        refuse(s.stats(), conn_fd);  // ERR server full, then a close that keeps the line
        return;
    }
    if (s.shared->procs.load() >= s.max_procs) {
        refuse(s.stats(), conn_fd, kServerBusy);
        return;
    }
    set_nodelay(conn_fd);
    // Until the new child is recorded, SIGCHLD must wait (so the reaper cannot miss it), and
    // so must the stop signals (so the child cannot take one before it has let go of the
    // listening socket). The child starts with the same mask and lifts it itself.
    sigset_t mask, old_mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    ::sigprocmask(SIG_BLOCK, &mask, &old_mask);
    // One call, two returns: 0 in the child, the child's pid in the parent.
    pid_t pid = TRACE_IO("fork", conn_fd, ::fork());
    if (pid == 0) {
        serve_in_child(s, conn_fd, old_mask);
    }
    if (pid > 0) {
        for (int i = 0; i < s.max_procs; ++i) {
            pid_t free_slot = 0;
            if (s.children[i].compare_exchange_strong(free_slot, pid)) {
                break;
            }
        }
        s.shared->procs.fetch_add(1);
        s.stats().conns.fetch_add(1, std::memory_order_relaxed);
    }
    ::sigprocmask(SIG_SETMASK, &old_mask, nullptr);
    if (pid < 0) {
        refuse(s.stats(), conn_fd, kServerBusy);  // EAGAIN from fork: out of processes or memory
        return;
    }
    // The child holds its own copy of the socket; closing ours does not end the connection.
    ::close(conn_fd);
}
// end listing: fork

// The child: let go of what belongs to the parent, serve the one client, exit.
void serve_in_child(Server& s, int conn_fd, const sigset_t& mask) {
    std::signal(SIGCHLD, SIG_DFL);  // the reaper and the child table are the parent's
    // The stop handler shuts down every socket registered with it. The copy of the listening
    // socket is the same socket as the parent's, so it must leave the list before the stop
    // signals are let in: a child that takes SIGTERM must not stop the parent from accepting.
    forget_on_stop(s.listen_fd.get());
    s.listen_fd.reset();
    wake_on_stop(conn_fd);  // SIGTERM from the parent: a blocked recv returns 0
    ::sigprocmask(SIG_SETMASK, &mask, nullptr);
    {
        Conn c(Fd(conn_fd), s.opt, s.stats());
        if (!stop_requested()) {
            serve(c);  // 01_blocking/serve.hpp: only this process sleeps in its recv
        }
        forget_on_stop(conn_fd);
        close_conn(c);
    }
    // _exit, not exit or a return to main: the parent's atexit handlers and destructors (the
    // shared page, the listening socket) are the parent's to run, not every child's.
    std::_Exit(0);
}

// ---- the edge cases ----

// Collects every child that has exited (no zombie is left) and frees its slot. Called by the
// SIGCHLD handler, and by the parent while SIGCHLD is blocked; async-signal-safe: waitpid and
// lock-free atomics only.
void reap_children() {
    pid_t pid;
    int status = 0;
    while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0) {
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            g_shared->died.fetch_add(1);  // killed, crashed, or a sanitizer's report
        }
        for (int i = 0; i < g_max_procs; ++i) {
            pid_t expected = pid;
            if (g_children[i].compare_exchange_strong(expected, 0)) {
                break;
            }
        }
        g_shared->procs.fetch_sub(1);
        g_shared->stats.conns.fetch_sub(1, std::memory_order_relaxed);
    }
}

extern "C" void on_sigchld(int) {
    int saved = errno;
    reap_children();
    errno = saved;
}

Server::Server(const ServerOptions& o, int max)
    : opt(o), max_procs(max), children(new std::atomic<pid_t>[static_cast<size_t>(max)]()) {
    void* page =
        ::mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED) {
        throw_errno("mmap MAP_SHARED|MAP_ANONYMOUS (the shared counters)");
    }
    shared = new (page) Shared;
    shared->stats.extra = [this] {
        return "procs=" + std::to_string(shared->procs.load()) +
               " max_procs=" + std::to_string(max_procs) +
               " died=" + std::to_string(shared->died.load());
    };
    g_shared = shared;
    g_children = children.get();
    g_max_procs = max_procs;
    struct sigaction sa {};
    sa.sa_handler = on_sigchld;
    sigemptyset(&sa.sa_mask);
    // SA_RESTART: the parent's accept goes on after a child's exit. SA_NOCLDSTOP: a child that
    // is only stopped (SIGSTOP) is not news.
    sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    if (::sigaction(SIGCHLD, &sa, nullptr) < 0) {
        throw_errno("sigaction SIGCHLD");
    }
}

Server::~Server() {
    std::signal(SIGCHLD, SIG_DFL);
    shared->~Shared();
    ::munmap(shared, sizeof(Shared));
}

// Stop: SIGTERM to every child, wait for them (at most kStopWait), SIGKILL the rest.
void shut_down_children(Server& s) {
    // With SIGCHLD blocked the handler cannot reap behind our back, so a pid in the table is a
    // live child or a zombie, never a number the kernel has reused for another process.
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    ::sigprocmask(SIG_BLOCK, &chld, nullptr);
    reap_children();
    for (int i = 0; i < s.max_procs; ++i) {
        if (pid_t pid = s.children[i].load(); pid > 0) {
            ::kill(pid, SIGTERM);
        }
    }
    auto until = Clock::now() + kStopWait;
    for (reap_children(); s.shared->procs.load() > 0 && Clock::now() < until; reap_children()) {
        auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(until - Clock::now());
        timespec ts{static_cast<time_t>(left.count() / 1000000000),
                    static_cast<long>(left.count() % 1000000000)};
        ::sigtimedwait(&chld, nullptr, &ts);  // returns when a child exits (or on timeout)
    }
    for (int i = 0; i < s.max_procs; ++i) {
        if (pid_t pid = s.children[i].load(); pid > 0) {
            ::kill(pid, SIGKILL);  // a child that did not stop in time
            ::waitpid(pid, nullptr, 0);
            s.children[i].store(0);
            s.shared->procs.fetch_sub(1);
            s.stats().conns.fetch_sub(1, std::memory_order_relaxed);
        }
    }
}

}  // namespace

int main(int argc, char** argv) {
    CommandLine cmd{"02_process_per_conn_server",
                    "02_process_per_conn: one child process per client (fork)"};
    ServerOptions opt = server_defaults(2);
    cmd.add_server_options(opt);
    int max_procs = 256;
    cmd.add_option("--max-procs", max_procs,
                   "Child processes at once; more clients get ERR server busy", 1, 100000);
    if (int rc = cmd.parse(argc, argv); rc >= 0) {
        return rc;
    }
    // A client that vanishes turns our next send into EPIPE; write_all passes MSG_NOSIGNAL, and
    // ignoring SIGPIPE as well keeps any other write from killing a child.
    std::signal(SIGPIPE, SIG_IGN);
    try {
        install_stop_handlers();
        return run(opt, max_procs);
    } catch (const std::exception& e) {
        return report_setup_failure(cmd.name(), e);
    }
}
