// 07_aio: POSIX asynchronous IO. We hand the whole read to someone else and hear when it is done.
//
// The model: for each connection the server calls aio_read(3) with a buffer and returns at once.
// Both phases of IO, waiting for data and copying it into our buffer, happen somewhere else;
// when they are over, a completion notice arrives, and aio_error(3)/aio_return(3) tell how it
// went (0 and the byte count, or an error). Replies go out the same way, with aio_write(3).
//
// Completion by signal (SIGEV_SIGNAL), as the seed describes asynchronous IO: each request
// carries a real-time signal number and the connection's fd as si_value. Real-time signals are
// queued, one per completion, with their payload (SIGIO is not: two arrivals make one signal).
// The signal stays blocked and the loop takes it synchronously with sigtimedwait(2), so every
// handler runs on the main thread like ordinary code, with no async-signal-safety rules and no
// locks. (SIGEV_THREAD would run a callback on yet another thread and need locks everywhere.)
// POSIX AIO cannot accept(2) (the seed says so too), so the listening socket reports arrivals
// with another queued real-time signal (O_ASYNC + F_SETSIG) and the loop accepts until EAGAIN.
//
// What is really underneath: on Linux, glibc implements POSIX AIO in user space. aio_read hands
// the request to a pool of helper threads; a helper calls read(2) on the socket, which blocks
// until the client sends something. So "asynchronous" here means "blocking, on another thread".
// Two consequences the server must deal with:
//   1. A read parked on an idle socket occupies a helper thread for as long as the client stays
//      silent. With glibc's default pool (20 threads), 20 idle clients would leave the 21st's
//      read queued behind them forever. So main() sizes the pool with aio_init(3) to --max-aio
//      (default 256) and the server holds at most that many connections: a connection past the
//      cap gets "ERR server busy" and is closed. STATS threads= shows the helpers.
//   2. glibc runs the requests for one descriptor one after another. A write queued behind a
//      parked read on the same socket would wait for the client's next request, which waits for
//      our reply. So each connection has exactly one request in flight: read, then write the
//      replies (resubmitting the rest of a short write), then read again. That also bounds what
//      we buffer for a client that never reads: we stop reading it until its replies are sent.
//
// Limits: one helper thread per connection (memory, scheduling), --max-aio connections at most,
// and WORK runs on the main loop, so it stalls every client (as in 04 and 05).
//
// Run it:    ./build/bin/07_aio_server                (listens on 127.0.0.1:9007)
// Talk:      nc 127.0.0.1 9007      then PING, ECHO hi, STATS (see threads= grow), QUIT
// Watch:     strace -f -e trace=read,write,pread64,pwrite64,rt_sigtimedwait,rt_sigqueueinfo
//                ./build/bin/07_aio_server         (all one command line)
//            shows each helper thread try pread64 (ESPIPE on a socket), fall back to read, then
//            queue our signal; or run with --trace to see aio_read/aio_error/aio_return.

#include <aio.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "common/cli.hpp"
#include "common/conn.hpp"
#include "common/net.hpp"
#include "common/options.hpp"
#include "common/qa.hpp"
#include "common/stop.hpp"
#include "common/trace.hpp"

using namespace iolab;

namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kReadSize = 16384;
constexpr size_t kHighWater = 256 * 1024;  // stop parsing a batch once this much is unsent
constexpr auto kDrainTime = std::chrono::seconds(1);

enum class Op { none, read, write };
// open: serving. closing: send what is left, then shut down our side and drain.
// draining: read and discard until EOF or the deadline, so that close(2) sends FIN, not RST.
// idle: its read was cut short for --idle-timeout or --request-timeout; send the ERR line
// (cut_reason), then close.
enum class State { open, closing, draining, idle };

struct Conn {
    Fd fd;
    LineParser in;
    aiocb cb{};  // the one request in flight; until it completes, cb, buf and out are glibc's
    Op op = Op::none;
    State state = State::open;
    char buf[kReadSize];
    std::string out;        // replies not yet sent
    size_t sent = 0;        // bytes of out already written
    bool unparsed = false;  // fed since the parser last ran dry: lines may be waiting
    Clock::time_point deadline = Clock::time_point::max();  // for the read parked now
    Clock::time_point idle_due = Clock::time_point::max();  // --idle-timeout after the last input
    // --request-timeout: due time for the unfinished request line in `in`, if there is one.
    Clock::time_point request_due = Clock::time_point::max();
    std::string_view cut_reason = kIdleTimeout;
    explicit Conn(int fd, size_t max_line) : fd(fd), in(max_line) {}
};

struct Server {
    ServerOptions opt;
    int max_aio = 256;
    int aio_signo = 0;     // completion of an aio_read/aio_write
    int accept_signo = 0;  // the listening socket has a connection waiting
    Fd listen_fd;
    std::vector<std::unique_ptr<Conn>> conns;  // indexed by fd
    int inflight = 0;
    bool accept_again = false;  // the last accept pass stopped at EMFILE
    ServerStats stats{"07_aio"};
};

void on_accept(Server& s);
void on_completion(Server& s, int fd);
void check_deadlines(Server& s);

// listing: loop
int run(Server& s) {
    s.listen_fd = listen_tcp(s.opt.host, s.opt.port, SOCK_NONBLOCK | SOCK_CLOEXEC);
    int lfd = s.listen_fd.get();
    if (::fcntl(lfd, F_SETOWN, ::getpid()) < 0 || ::fcntl(lfd, F_SETSIG, s.accept_signo) < 0 ||
        ::fcntl(lfd, F_SETFL, O_NONBLOCK | O_ASYNC) < 0) {
        throw_errno("fcntl O_ASYNC/F_SETSIG on the listening socket");
    }
    s.stats.extra = [&s] {
        return "aio_inflight=" + std::to_string(s.inflight) +
               " max_aio=" + std::to_string(s.max_aio);
    };
    // Our two signals plus SIGIO, which the kernel sends instead when its queue of real-time
    // signals is full: then we look at everything.
    sigset_t wait_set;
    sigemptyset(&wait_set);
    sigaddset(&wait_set, s.aio_signo);
    sigaddset(&wait_set, s.accept_signo);
    sigaddset(&wait_set, SIGIO);
    announce_listening(lfd, s.stats.model, s.opt);
    on_accept(s);  // anyone who connected before O_ASYNC was on

    auto last_tick = Clock::now();
    while (!stop_requested()) {
        // SIGTERM is not in the set: its handler interrupts the wait with EINTR. The timeout
        // bounds the moment between the check above and the call, and drives the deadlines.
        timespec tick{0, 100'000'000};
        siginfo_t si;
        int signo = TRACE_IO("sigtimedwait", -1, ::sigtimedwait(&wait_set, &si, &tick));
        if (signo == s.aio_signo && si.si_code == SI_ASYNCIO) {
            on_completion(s, si.si_value.sival_int);
        } else if (signo == s.accept_signo) {
            on_accept(s);
        } else if (signo == SIGIO) {
            on_accept(s);
            for (size_t fd = 0; fd < s.conns.size(); ++fd) {
                on_completion(s, static_cast<int>(fd));
            }
        }
        if (Clock::now() - last_tick >= std::chrono::milliseconds(100)) {
            last_tick = Clock::now();
            check_deadlines(s);
            if (s.accept_again) {
                on_accept(s);
            }
        }
    }

    // Stop: shut every socket down, which ends every parked read (0) and stuck write (EPIPE),
    // and wait for the helpers to report. Until a request has reported, its aiocb and buffer are
    // glibc's: freeing its Conn earlier would let a helper that starts it late read a freed
    // aiocb and queue whatever signal the garbage names.
    for (auto& slot : s.conns) {
        if (slot) {
            ::shutdown(slot->fd.get(), SHUT_RDWR);
        }
    }
    auto give_up = Clock::now() + std::chrono::milliseconds(2500);  // the contract allows 3 s
    while (s.inflight > 0 && Clock::now() < give_up) {
        timespec tick{0, 50'000'000};
        siginfo_t si;
        if (::sigtimedwait(&wait_set, &si, &tick) == s.aio_signo) {
            on_completion(s, si.si_value.sival_int);
        }
    }
    for (auto& slot : s.conns) {
        if (slot && slot->op != Op::none) {
            (void)slot.release();  // still glibc's (it never reported): leave it to exit(3)
        }
    }
    return 0;
}
// end listing: loop

// ---- the handlers ----

Clock::time_point idle_deadline(const Server& s) {
    if (s.opt.idle_timeout <= 0) {
        return Clock::time_point::max();
    }
    return Clock::now() + std::chrono::duration_cast<Clock::duration>(
                              std::chrono::duration<double>(s.opt.idle_timeout));
}

void close_conn(Server& s, Conn& c) {
    int fd = c.fd.get();
    s.conns[fd].reset();  // closes the socket: no request is in flight on it any more
    s.stats.conns.fetch_sub(1, std::memory_order_relaxed);
}

// Queues one read or write. From here until its signal arrives, a helper thread owns the buffer.
bool submit(Server& s, Conn& c, Op op, char* data, size_t len) {
    int fd = c.fd.get();
    c.cb = aiocb{};
    c.cb.aio_fildes = fd;
    c.cb.aio_buf = data;
    c.cb.aio_nbytes = len;
    c.cb.aio_sigevent.sigev_notify = SIGEV_SIGNAL;
    c.cb.aio_sigevent.sigev_signo = s.aio_signo;
    c.cb.aio_sigevent.sigev_value.sival_int = fd;
    int rc = op == Op::read ? TRACE_IO("aio_read", fd, ::aio_read(&c.cb))
                            : TRACE_IO("aio_write", fd, ::aio_write(&c.cb));
    if (rc < 0) {
        return false;  // EAGAIN: glibc could not queue it (no memory, no thread)
    }
    c.op = op;
    ++s.inflight;
    return true;
}

// Answers complete request lines until the batch is done or its replies pass the high-water mark.
void answer(Server& s, Conn& c) {
    bool line_ended = false;
    while (c.unparsed && c.out.size() < kHighWater) {
        auto line = c.in.next();
        if (!line) {
            c.unparsed = false;
            break;
        }
        line_ended = true;
        Request req = parse_request(*line);
        if (req.verb == Verb::work && !block_for_work(req.work_ms)) {
            return;  // stopping
        }
        append_reply(c.out, req, s.stats);
        s.stats.requests.fetch_add(1, std::memory_order_relaxed);
        if (req.verb == Verb::quit) {
            c.state = State::closing;
            return;
        }
    }
    if (c.in.too_long()) {
        c.out += too_long_reply(s.opt.max_line);
        c.state = State::closing;
        return;
    }
    // --request-timeout counts from the first byte of an unfinished line; more bytes of the same
    // line do not move it, so a client trickling a byte at a time is shed.
    if (!c.unparsed && s.opt.request_timeout > 0) {
        if (c.in.buffered() == 0) {
            c.request_due = Clock::time_point::max();
        } else if (line_ended || c.request_due == Clock::time_point::max()) {
            c.request_due = Clock::now() + s.opt.request_limit();
        }
    }
    if (c.request_due <= Clock::now()) {
        c.out += kRequestTimeout;  // a trickler's bytes keep completing reads: time out here
        c.state = State::closing;
    }
}

// Called whenever the connection has nothing in flight: decide its next request.
void next_step(Server& s, Conn& c) {
    if (c.state == State::open && s.opt.mode == Mode::qa) {
        answer(s, c);
    }
    bool ok;
    if (c.sent < c.out.size()) {
        ok = submit(s, c, Op::write, c.out.data() + c.sent, c.out.size() - c.sent);
    } else {
        c.out.clear();
        c.sent = 0;
        if (c.state == State::closing) {
            // FIN after our last line; then read what the client still sends, so that our close
            // does not meet unread input (which would make the kernel send RST).
            ::shutdown(c.fd.get(), SHUT_WR);
            c.state = State::draining;
            c.deadline = Clock::now() + kDrainTime;
        }
        if (c.state == State::open) {
            c.deadline = std::min(c.idle_due, c.request_due);
        }
        ok = submit(s, c, Op::read, c.buf, sizeof c.buf);
    }
    if (!ok) {
        close_conn(s, c);
    }
}

void on_read_done(Server& s, Conn& c, ssize_t n) {
    if (c.state == State::draining) {
        if (n > 0 && Clock::now() < c.deadline) {
            next_step(s, c);
        } else {
            close_conn(s, c);
        }
        return;
    }
    if (c.state == State::idle) {
        c.out = c.cut_reason;
        c.sent = 0;
        c.state = State::closing;
    } else if (n <= 0) {
        // EOF or error. In echo mode everything received has already gone back: one request at
        // a time means the last write completed before this read was queued.
        close_conn(s, c);
        return;
    } else if (s.opt.mode == Mode::qa) {
        // The helper thread has already copied the bytes in: phase 2 is over too.
        c.in.feed(c.buf, static_cast<size_t>(n));
        c.unparsed = true;
    } else {
        c.out.assign(c.buf, static_cast<size_t>(n));
    }
    if (c.state == State::open) {
        c.idle_due = idle_deadline(s);
    }
    next_step(s, c);
}

void on_write_done(Server& s, Conn& c, ssize_t n) {
    if (n < 0) {
        close_conn(s, c);  // EPIPE, ECONNRESET: the client is gone
        return;
    }
    c.sent += static_cast<size_t>(n);  // a short write leaves the rest for next_step to resubmit
    next_step(s, c);
}

// A queued signal said: the request on this fd finished. Ask how, exactly once.
void on_completion(Server& s, int fd) {
    if (fd < 0 || static_cast<size_t>(fd) >= s.conns.size() || !s.conns[fd] ||
        s.conns[fd]->op == Op::none) {
        return;
    }
    Conn& c = *s.conns[fd];
    int err = TRACE_IO("aio_error", fd, ::aio_error(&c.cb));
    if (err == EINPROGRESS) {
        return;
    }
    ssize_t n = TRACE_IO("aio_return", fd, ::aio_return(&c.cb));  // frees glibc's record of it
    Op op = c.op;
    c.op = Op::none;
    --s.inflight;
    if (stop_requested()) {
        close_conn(s, c);
    } else if (op == Op::read) {
        on_read_done(s, c, n);
    } else {
        on_write_done(s, c, n);
    }
}

void on_accept(Server& s) {
    s.accept_again = false;
    for (;;) {
        // The accepted socket is blocking (no SOCK_NONBLOCK): a helper thread will sleep in it.
        int conn_fd = TRACE_IO("accept", s.listen_fd.get(),
                               ::accept4(s.listen_fd.get(), nullptr, nullptr, SOCK_CLOEXEC));
        if (conn_fd < 0) {
            // EAGAIN: the backlog is empty. EMFILE/ENFILE: leave the rest in the backlog and
            // retry on the next tick, instead of spinning on a call that keeps failing.
            s.accept_again = errno == EMFILE || errno == ENFILE;
            return;
        }
        int conns = static_cast<int>(s.stats.conns.load(std::memory_order_relaxed));
        if (conns >= s.opt.max_conns) {
            refuse(s.stats, conn_fd, kServerFull);  // one line, then a close that keeps it
            continue;
        }
        if (conns >= s.max_aio) {
            refuse(s.stats, conn_fd, kServerBusy);  // no helper thread left for its read
            continue;
        }
        s.stats.accepted.fetch_add(1, std::memory_order_relaxed);
        s.stats.conns.fetch_add(1, std::memory_order_relaxed);
        set_nodelay(conn_fd);
        if (static_cast<size_t>(conn_fd) >= s.conns.size()) {
            s.conns.resize(static_cast<size_t>(conn_fd) + 1);
        }
        s.conns[conn_fd] = std::make_unique<Conn>(conn_fd, s.opt.max_line);
        s.conns[conn_fd]->idle_due = idle_deadline(s);
        next_step(s, *s.conns[conn_fd]);
    }
}

// ---- the edge cases ----

// Deadlines: a read parked past --idle-timeout, --request-timeout or the drain time is cut with
// shutdown(2) SHUT_RD, which wakes the helper thread's read(2) with 0. A request a helper thread is
// already running cannot be taken back (aio_cancel says AIO_NOTCANCELED), and the socket must not
// be closed under it, so this is how it ends.
void check_deadlines(Server& s) {
    auto now = Clock::now();
    for (auto& slot : s.conns) {
        if (slot && slot->op == Op::read && now >= slot->deadline) {
            Conn& c = *slot;
            if (c.state == State::open) {
                c.state = State::idle;
                c.cut_reason = now >= c.request_due ? kRequestTimeout : kIdleTimeout;
            }
            c.deadline = Clock::time_point::max();
            ::shutdown(c.fd.get(), SHUT_RD);
        }
    }
}

}  // namespace

int main(int argc, char** argv) {
    CommandLine cmd{"07_aio_server",
                    "07_aio: POSIX AIO (glibc's helper threads), completion by queued signal"};
    Server s;
    s.opt = server_defaults(7);
    cmd.add_server_options(s.opt);
    cmd.add_option("--max-aio", s.max_aio,
                   "AIO helper threads, and connections at once; more get ERR server busy", 1,
                   4096);
    if (int rc = cmd.parse(argc, argv); rc >= 0) {
        return rc;
    }
#if defined(__SANITIZE_THREAD__)
    // glibc starts its AIO helpers with its internal pthread_create, which ThreadSanitizer does
    // not intercept; a helper that starts another helper then crashes inside TSan's allocator.
    // Our own code runs on the main thread only, so TSan would have nothing to check anyway.
    std::fprintf(stderr,
                 "07_aio_server: cannot run under ThreadSanitizer, which does not see "
                 "glibc's AIO helper threads; use a regular build\n");
    return 77;
#endif
    // Vanished clients make writes fail with EPIPE; with SIGPIPE ignored that is just a value.
    std::signal(SIGPIPE, SIG_IGN);
    // One helper thread per request in flight, and at most one request per connection, so a
    // parked read never waits for a thread. aio_init must come before the first aio_read.
    aioinit init{};
    init.aio_threads = s.max_aio;
    init.aio_num = s.max_aio;
    init.aio_idle_time = 1;  // seconds an idle helper lingers before it exits
    ::aio_init(&init);
    // Block our signals before glibc starts any helper (threads inherit the mask), so that only
    // sigtimedwait in the loop ever takes them.
    s.aio_signo = SIGRTMIN;
    s.accept_signo = SIGRTMIN + 1;
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, s.aio_signo);
    sigaddset(&mask, s.accept_signo);
    sigaddset(&mask, SIGIO);
    ::pthread_sigmask(SIG_BLOCK, &mask, nullptr);
    try {
        install_stop_handlers();
        return run(s);
    } catch (const std::exception& e) {
        return report_setup_failure(cmd.name(), e);
    }
}
