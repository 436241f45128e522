// 09_proactor_epoll: a proactor emulated on epoll, following the seed's six steps.
//
// Where the kernel offers no asynchronous socket IO (or we do not use it), a program can still
// give its handlers the proactor's promise, "your data is already in the buffer", by doing the
// copy itself in one thread and running the handlers in others. This is how Boost.Asio works on
// Linux: an epoll reactor inside, a completion interface outside. The six steps:
//   1. the main thread registers EPOLLIN for each socket (epoll_ctl);
//   2. it waits in epoll_wait;
//   3. when a socket is readable it reads until EAGAIN, cuts the bytes into request lines and
//      queues them as one job: this is the "asynchronous read", done by us instead of the kernel;
//   4. a worker thread (--workers N, default 4) takes the job and runs the completion handler
//      on it; then it puts the replies on the completion queue and writes an eventfd, asking the
//      main thread to wait for write readiness;
//   5. the main thread, woken by the eventfd, adds EPOLLOUT for that socket and waits again;
//   6. when the socket is writable the main thread writes the replies.
// The main thread never runs a request, so `WORK 2000` occupies one worker and nobody else.
// A connection has at most one job out at a time, so its replies keep request order.
//
// Compared with a true proactor (server.cpp): the copy still costs this process a recv(2) per
// readiness event, in the main thread, and every request crosses two queues and two threads.
// Asio tries the write at once and waits for EPOLLOUT only after a short write; step 5 here waits
// first, as the seed describes, which costs one more epoll_wait round per reply.
//
// Limits: the workers are a fixed pool; more WORK requests than workers queue up. Backpressure:
// a connection is not read while its unanswered requests or unsent replies pass 256 KiB.
//
// Run it:    ./build/bin/09_proactor_epoll_server --workers 4   (listens on 127.0.0.1:9009)
// Watch:     strace -f -e trace=epoll_wait,epoll_ctl,recvfrom,sendto,read,write ./build/bin/...
//            shows the main thread's recv and epoll_ctl(EPOLLOUT), and the workers' eventfd
//            writes; --trace prints the same with timings; STATS shows threads=5.

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <csignal>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/net.hpp"
#include "common/options.hpp"
#include "common/qa.hpp"
#include "common/stop.hpp"
#include "common/trace.hpp"

using namespace iolab;
using Clock = std::chrono::steady_clock;

namespace {

constexpr size_t kHighWater = 256 * 1024;
constexpr auto kDrain = std::chrono::milliseconds(1000);
constexpr int kTickMs = 100;
enum : uint64_t { kListenId, kStopId, kEventId, kFirstConnId };

struct Conn {
    Conn(uint64_t i, Fd f, size_t max_line) : id(i), fd(std::move(f)), in(max_line) {}
    uint64_t id;
    Fd fd;
    LineParser in;
    std::string queued;               // complete request lines read, waiting for the worker
    std::string out;                  // replies back from a worker, not yet written
    std::string spare_in, spare_out;  // buffers back from the last job, reused for the next
    uint32_t events = 0;              // the interest set epoll has for this socket now
    bool job_out = false;             // a worker has this connection's job
    bool peer_closed = false, close_after_send = false;
    bool too_long = false, shut_after_send = false, draining = false, idle_warned = false;
    Clock::time_point last_active = Clock::now(), drain_deadline;
    // --request-timeout: when the unfinished request line in `in` began; unset while none is.
    std::optional<Clock::time_point> request_since;
};

// The request queue (main -> workers) and the completion queue (workers -> main).
// Buffers travel with the jobs and come back with the completions, so that a busy connection
// keeps reusing the same few allocations.
struct Job {
    uint64_t id;
    std::string bytes;  // request lines, or raw bytes in echo mode
    std::string reply;  // an empty buffer for the replies
};
struct Done {
    uint64_t id;
    std::string reply;
    std::string spare;  // the job's bytes buffer, going home
    bool quit = false;
};

ServerOptions opt = server_defaults(9);
ServerStats stats("09_proactor_epoll");
Fd epfd, listen_fd, event_fd;
std::unordered_map<uint64_t, Conn> conns;
uint64_t next_id = kFirstConnId;
Clock::time_point accept_paused_until;
std::mutex mu;
std::condition_variable jobs_cv;
std::deque<Job> jobs;
std::vector<Done> done;
bool stopping = false;
int draining_conns = 0;  // connections past an over-long line: the tick must run for them

// Step 4, in a worker: the completion handler runs on bytes the main thread already read.
void worker() {
    for (;;) {
        Job job;
        {
            std::unique_lock lock(mu);
            jobs_cv.wait(lock, [] { return stopping || !jobs.empty(); });
            if (stopping) {
                return;
            }
            job = std::move(jobs.front());
            jobs.pop_front();
        }
        Done d{job.id, std::move(job.reply), {}};
        d.reply.clear();
        if (opt.mode == Mode::echo) {
            d.reply.swap(job.bytes);
        }
        std::string_view rest = opt.mode == Mode::qa ? job.bytes : std::string_view{};
        while (!rest.empty()) {
            size_t nl = rest.find('\n');
            Request req = parse_request(rest.substr(0, nl));
            rest.remove_prefix(nl + 1);
            if (req.verb == Verb::work && !block_for_work(req.work_ms)) {
                return;  // stopping
            }
            append_reply(d.reply, req, stats);
            stats.requests.fetch_add(1, std::memory_order_relaxed);
            if (req.verb == Verb::quit) {
                d.quit = true;
                break;
            }
        }
        d.spare = std::move(job.bytes);
        bool wake;
        {
            std::lock_guard lock(mu);
            wake = done.empty();  // otherwise the main thread has a wakeup coming already
            done.push_back(std::move(d));
        }
        if (wake) {
            uint64_t one = 1;
            TRACE_IO("write", event_fd.get(), ::write(event_fd.get(), &one, sizeof one));
        }
    }
}

void set_interest(Conn& c, uint32_t events) {
    if (events != c.events) {
        epoll_event ev{events, {.u64 = c.id}};
        TRACE_IO("epoll_ctl", c.fd.get(), ::epoll_ctl(epfd.get(), EPOLL_CTL_MOD, c.fd.get(), &ev));
        c.events = events;
    }
}

void close_conn(Conn& c) {
    stats.conns.fetch_sub(1, std::memory_order_relaxed);
    draining_conns -= c.draining ? 1 : 0;
    conns.erase(c.id);  // close(2) also takes the socket out of the epoll set
}

// Hands the connection's queued lines to a worker, unless one has its previous job.
void start_job(Conn& c) {
    if (c.job_out || c.queued.empty()) {
        return;
    }
    c.job_out = true;
    {
        std::lock_guard lock(mu);
        jobs.push_back(Job{c.id, std::move(c.queued), std::move(c.spare_out)});
    }
    c.queued = std::move(c.spare_in);
    c.queued.clear();
    jobs_cv.notify_one();
}

// Decides what the connection waits for next, and closes it when nothing is left to do.
// Returns false if it closed.
bool update(Conn& c) {
    bool idle = !c.job_out && c.queued.empty();
    if (idle && c.too_long && !c.draining) {
        c.out += too_long_reply(opt.max_line);  // after the replies to the lines before it
        c.draining = c.shut_after_send = true;
        ++draining_conns;
    }
    if (idle && c.out.empty()) {
        if (c.shut_after_send) {
            // FIN after the ERR line, then read and discard for a moment: a close with unread
            // input would send RST, and the RST could destroy the ERR line in flight.
            TRACE_IO("shutdown", c.fd.get(), ::shutdown(c.fd.get(), SHUT_WR));
            c.shut_after_send = false;
            c.drain_deadline = Clock::now() + kDrain;
        }
        if (c.close_after_send || c.peer_closed) {
            close_conn(c);
            return false;
        }
    }
    bool want_read = !c.peer_closed && !c.close_after_send &&
                     (c.draining || (!c.too_long && c.queued.size() + c.out.size() < kHighWater));
    set_interest(c, (want_read ? EPOLLIN : 0u) | (c.out.empty() ? 0u : EPOLLOUT));
    return true;
}

void on_accept() {
    for (;;) {
        int conn_fd =
            TRACE_IO("accept4", listen_fd.get(),
                     ::accept4(listen_fd.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (conn_fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOMEM) {
                // Out of descriptors. The pending connection keeps the listen socket readable,
                // so a level-triggered wait would wake at once, forever: stop watching it.
                epoll_event ev{0, {.u64 = kListenId}};
                ::epoll_ctl(epfd.get(), EPOLL_CTL_MOD, listen_fd.get(), &ev);
                accept_paused_until = Clock::now() + std::chrono::milliseconds(kTickMs);
            }
            return;  // EAGAIN: the backlog is empty; ECONNABORTED: that client left
        }
        Fd fd(conn_fd);
        stats.accepted.fetch_add(1, std::memory_order_relaxed);
        if (stats.conns.load(std::memory_order_relaxed) >= static_cast<uint64_t>(opt.max_conns)) {
            TRACE_IO("send", fd.get(),
                     ::send(fd.get(), kServerFull.data(), kServerFull.size(), MSG_NOSIGNAL));
            stats.refused.fetch_add(1, std::memory_order_relaxed);
            continue;
        }
        set_nodelay(fd.get());
        uint64_t id = next_id++;
        epoll_event ev{EPOLLIN, {.u64 = id}};  // step 1
        if (::epoll_ctl(epfd.get(), EPOLL_CTL_ADD, fd.get(), &ev) < 0) {
            continue;
        }
        Conn& c = conns.try_emplace(id, id, std::move(fd), opt.max_line).first->second;
        c.events = EPOLLIN;
        stats.conns.fetch_add(1, std::memory_order_relaxed);
    }
}

// Step 3: read until EAGAIN (or until enough is waiting), cut lines, queue them as a job.
void on_readable(Conn& c) {
    static char buf[65536];
    while (c.queued.size() + c.out.size() < kHighWater) {
        ssize_t n = TRACE_IO("recv", c.fd.get(), ::recv(c.fd.get(), buf, sizeof buf, 0));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        }
        if (n <= 0) {
            if (n < 0) {
                close_conn(c);  // ECONNRESET and the like
                return;
            }
            c.peer_closed = true;
            break;
        }
        if (opt.idle_timeout > 0) {
            c.last_active = Clock::now();
            c.idle_warned = false;
        }
        if (c.draining || c.too_long) {
            continue;  // discarding what follows an over-long line
        }
        if (opt.mode == Mode::echo) {
            c.queued.append(buf, static_cast<size_t>(n));
            continue;
        }
        c.in.feed(buf, static_cast<size_t>(n));
        bool line_ended = false;
        while (auto line = c.in.next()) {
            c.queued.append(*line);
            c.queued += '\n';
            line_ended = true;
        }
        c.too_long = c.in.too_long();
        // --request-timeout counts from the first byte of an unfinished line; more bytes of the
        // same line do not restart it, so a client trickling a byte at a time is shed.
        if (c.in.buffered() == 0) {
            c.request_since.reset();
        } else if (line_ended || !c.request_since) {
            c.request_since = Clock::now();
        }
    }
    start_job(c);
    update(c);
}

// Step 6: the socket is writable; write what the workers produced.
void on_writable(Conn& c) {
    while (!c.out.empty()) {
        ssize_t n = TRACE_IO("send", c.fd.get(),
                             ::send(c.fd.get(), c.out.data(), c.out.size(), MSG_NOSIGNAL));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;  // short write: the rest waits for the next EPOLLOUT
        }
        if (n < 0) {
            close_conn(c);  // EPIPE, ECONNRESET
            return;
        }
        c.out.erase(0, static_cast<size_t>(n));
    }
    update(c);
}

// Step 5: completions from the workers. Each reply waits for write readiness.
void on_completions() {
    uint64_t count;
    // Read the eventfd before taking the queue, so a completion pushed after our swap always
    // comes with a fresh wakeup.
    TRACE_IO("read", event_fd.get(), ::read(event_fd.get(), &count, sizeof count));
    std::vector<Done> batch;
    {
        std::lock_guard lock(mu);
        batch.swap(done);
    }
    for (Done& d : batch) {
        auto it = conns.find(d.id);
        if (it == conns.end()) {
            continue;  // closed while its job was out
        }
        Conn& c = it->second;
        c.job_out = false;
        c.out += d.reply;
        c.spare_out = std::move(d.reply);
        c.spare_in = std::move(d.spare);
        if (d.quit) {
            c.close_after_send = true;
            c.queued.clear();
        }
        start_job(c);
        update(c);
    }
}

// Every 100 ms when needed: idle connections, drains past their deadline, a paused accept.
void on_tick(Clock::time_point now) {
    std::vector<uint64_t> expired, idle, slow;
    for (auto& [id, c] : conns) {
        auto quiet = std::chrono::duration<double>(now - c.last_active).count();
        if (c.draining && !c.shut_after_send && now > c.drain_deadline) {
            expired.push_back(id);
        } else if (opt.request_timeout > 0 && c.request_since && !c.draining && !c.too_long &&
                   !c.close_after_send && !c.job_out && c.queued.empty() &&
                   now - *c.request_since >= opt.request_limit()) {
            slow.push_back(id);
        } else if (opt.idle_timeout > 0 && quiet > opt.idle_timeout) {
            // The first time, say why; if it has not even read that by the next timeout, go.
            (c.idle_warned ? expired : idle).push_back(id);
        }
    }
    for (uint64_t id : expired) {
        close_conn(conns.at(id));
    }
    for (uint64_t id : slow) {
        // The same polite close as after an over-long line: the ERR line, FIN, then a drain.
        Conn& c = conns.at(id);
        c.out += kRequestTimeout;
        c.request_since.reset();
        c.draining = c.shut_after_send = true;
        ++draining_conns;
        update(c);
    }
    for (uint64_t id : idle) {
        Conn& c = conns.at(id);
        c.out += kIdleTimeout;
        c.close_after_send = c.idle_warned = true;
        c.last_active = now;
        update(c);
    }
    if (accept_paused_until != Clock::time_point{} && now >= accept_paused_until) {
        accept_paused_until = {};
        epoll_event ev{EPOLLIN, {.u64 = kListenId}};
        ::epoll_ctl(epfd.get(), EPOLL_CTL_MOD, listen_fd.get(), &ev);
    }
}

bool tick_needed() {
    return opt.idle_timeout > 0 || opt.request_timeout > 0 || draining_conns > 0 ||
           accept_paused_until != Clock::time_point{};
}

void add_watch(int fd, uint64_t id) {
    epoll_event ev{EPOLLIN, {.u64 = id}};
    if (::epoll_ctl(epfd.get(), EPOLL_CTL_ADD, fd, &ev) < 0) {
        throw_errno("epoll_ctl ADD");
    }
}

int run(int workers) {
    listen_fd = listen_tcp(opt.host, opt.port, SOCK_NONBLOCK | SOCK_CLOEXEC);
    epfd = Fd(::epoll_create1(EPOLL_CLOEXEC));
    event_fd = Fd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    if (!epfd || !event_fd) {
        throw_errno("epoll_create1/eventfd");
    }
    add_watch(listen_fd.get(), kListenId);
    add_watch(stop_fd(), kStopId);
    add_watch(event_fd.get(), kEventId);
    std::vector<std::thread> pool;
    for (int i = 0; i < workers; ++i) {
        pool.emplace_back(worker);
    }
    announce_listening(listen_fd.get(), stats.model, opt);

    epoll_event events[256];
    auto last_tick = Clock::now();
    while (!stop_requested()) {
        int timeout = tick_needed() ? kTickMs : -1;
        int nready = TRACE_IO("epoll_wait", epfd.get(),
                              ::epoll_wait(epfd.get(), events, 256, timeout));  // step 2
        for (int i = 0; i < nready; ++i) {
            uint64_t id = events[i].data.u64;
            uint32_t revents = events[i].events;
            if (id == kListenId) {
                on_accept();
            } else if (id == kEventId) {
                on_completions();
            } else if (auto it = conns.find(id); it != conns.end()) {
                Conn& c = it->second;
                // EPOLLERR/EPOLLHUP come whatever we asked for; recv or send reports them.
                if ((revents & EPOLLOUT) && !c.out.empty()) {
                    on_writable(c);
                } else if (revents & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                    if (c.events & EPOLLIN) {
                        on_readable(c);
                    } else if (revents & (EPOLLERR | EPOLLHUP)) {
                        close_conn(c);
                    }
                }
            }
        }
        if (auto now = Clock::now(); now - last_tick >= std::chrono::milliseconds(kTickMs)) {
            last_tick = now;
            on_tick(now);
        }
    }
    {
        std::lock_guard lock(mu);
        stopping = true;
    }
    jobs_cv.notify_all();
    for (auto& t : pool) {
        t.join();  // a worker in WORK returns early: block_for_work watches the stop flag
    }
    conns.clear();
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"09_proactor_epoll: a proactor emulated on epoll with worker threads",
                 "09_proactor_epoll_server"};
    add_server_options(app, opt);
    int workers = 4;
    app.add_option("--workers", workers, "threads that run the completion handlers")
        ->check(CLI::Range(1, 256));
    if (int rc = parse_command_line(app, argc, argv); rc >= 0) {
        return rc;
    }
    // Sends pass MSG_NOSIGNAL; ignoring SIGPIPE as well keeps any other write from killing us.
    std::signal(SIGPIPE, SIG_IGN);
    try {
        install_stop_handlers();
        return run(workers);
    } catch (const std::exception& e) {
        return report_setup_failure(app.get_name(), e);
    }
}
