// 09_proactor_epoll: the Proactor pattern emulated on epoll, with a pool of worker threads.
//
// Where the kernel does no asynchronous socket IO for us, a program can still give its completion
// handlers the proactor's promise, "your data is already in the buffer": one thread waits for
// readiness and does the copy, and the handlers run in other threads on bytes already read. This
// is how Boost.Asio works on Linux: an epoll reactor inside, a completion interface outside. The
// seed's six steps, and the parts of the pattern that carry them (server.cpp, the true proactor on
// io_uring, has the same parts under the same names):
//   1. the initiator, initiate_next, asks epoll for EPOLLIN on the socket (epoll_ctl);
//   2. the completion dispatcher, the main thread's loop, waits in epoll_wait;
//   3. when the socket is readable, on_readable does the asynchronous operation in the kernel's
//      place: recv until EAGAIN, cut the bytes into request lines, and post them as one Job on
//      the request queue (post_job);
//   4. a worker thread (--workers N, default 4) takes the job and runs the completion handler,
//      on_recv_done, on lines that are already read; it posts the replies on the completion
//      queue and writes an eventfd, asking the main thread to wait for write readiness;
//   5. the main thread, woken by the eventfd (on_replies), adds EPOLLOUT (initiate_next again)
//      and waits;
//   6. when the socket is writable, on_writable sends the replies.
// The main thread never runs a request, so `WORK 2000` occupies one worker and nobody else.
// A connection has at most one job out at a time, so its replies keep request order.
//
// Threads: the main thread alone touches the connections, the epoll set and the timers; a worker
// sees only its Job and the counters (atomics). The two queues and the stop flag are under
// Server::mu. A worker writes the eventfd only when the completion queue was empty, so a burst of
// completions costs the main thread one wakeup.
//
// Compared with a true proactor (server.cpp): the copy still costs this process a recv(2) per
// readiness event, in the main thread, and every request crosses two queues and two threads.
// Asio tries the write at once and waits for EPOLLOUT only after a short write; step 5 here waits
// first, as the seed describes, which costs one more epoll_wait round per reply.
//
// Limits: the workers are a fixed pool; more WORK requests than workers queue up. Backpressure:
// a connection is not read while its unanswered requests and unsent replies pass kHighWater
// (256 KiB). That bound is also its read budget: step 3 reads until EAGAIN, as the seed's main
// thread does, but never more than that before the next connection's turn.
//
// Run it:    ./build/bin/09_proactor_epoll_server --workers 4   (listens on 127.0.0.1:9009)
// Watch:     strace -f -e trace=epoll_wait,epoll_ctl,recvfrom,sendto,read,write ./build/bin/...
//            shows the main thread's recv and epoll_ctl(EPOLLOUT), and the workers' eventfd
//            writes; --trace prints the same with timings; STATS shows threads=5.
//
// The layout, the names and the policies are the same in every model: docs/listings.md.

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <csignal>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
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

constexpr int kMaxEvents = 256;  // ready sockets taken per epoll_wait

// What epoll and the queues call each descriptor: the three registered once, and for a
// connection its conn_fd with a serial number above it. A job can come back after its connection
// closed and a new one took the same descriptor; the serial tells the two apart.
enum : uint64_t { kListenKey, kStopKey, kDoorbellKey };
uint64_t conn_key(int conn_fd, uint64_t serial) {
    return (serial << 32) | static_cast<uint32_t>(conn_fd);
}

struct Conn {
    Conn(int conn_fd, uint64_t k, size_t max_line) : fd(conn_fd), key(k), in(max_line) {}
    Fd fd;
    uint64_t key;  // conn_key(conn_fd, serial)
    LineParser in;
    std::string queued;  // complete request lines read (echo: the bytes), not yet with a worker
    std::string out;     // replies back from the workers; the first out_sent are already sent
    size_t out_sent = 0;
    uint32_t events = 0;     // the interest set epoll holds for this socket now
    bool job_out = false;    // a worker has this connection's job: one at a time
    bool peer_done = false;  // recv returned 0: the client has shut down its write side
    bool closing = false;    // QUIT, over-long line, a timeout: send what is owed, then linger
    bool wr_shut = false;    // shutdown(SHUT_WR) done
    std::string spare_in, spare_out;       // the last job's buffers, reused by the next one
    std::optional<std::string> last_line;  // start_closing's line, until the job out is back
    TimerList<Conn>::Entry idle_timer{this};
    TimerList<Conn>::Entry request_timer{this};
    TimerList<Conn>::Entry linger_timer{this};
    size_t pending() const { return out.size() - out_sent; }
};

// The request queue carries Jobs to the workers, the completion queue Dones back. The buffers
// travel with them and come home, so a busy connection keeps reusing the same few allocations.
struct Job {
    uint64_t key;
    std::string lines;  // complete request lines, or raw bytes in echo mode
    std::string reply;  // an empty buffer for the replies
};
struct Done {
    uint64_t key;
    std::string reply;
    std::string spare;  // the job's lines buffer, going home
    bool quit = false;
};

struct Server {
    explicit Server(const ServerOptions& o)
        : opt(o),
          idle_timers(o.idle_limit()),
          request_timers(o.mode == Mode::qa ? o.request_limit() : Clock::duration::zero()),
          linger_timers(kLinger) {}
    ~Server();  // stops and joins the workers first: they use the queues and the doorbell
    const ServerOptions& opt;
    ServerStats stats{"09_proactor_epoll"};  // atomics: the workers count requests too
    Fd listen_fd;
    Fd epfd;           // the epoll instance: interest list, ready list
    Fd doorbell;       // an eventfd: a worker writes it when the completion queue has something
    SpareFd spare_fd;  // given up for a moment at EMFILE
    // The main thread's alone:
    std::vector<std::unique_ptr<Conn>> conns;  // indexed by conn_fd
    uint64_t serial = 0;                       // of the last connection accepted
    TimerList<Conn> idle_timers, request_timers, linger_timers;
    Clock::time_point now;    // when the current epoll_wait returned
    std::vector<Done> batch;  // the completions on_replies is handling
    char buf[65536];          // one read buffer for the whole loop
    // Shared with the workers, under mu:
    std::mutex mu;
    std::condition_variable jobs_ready;
    std::deque<Job> jobs;    // the request queue
    std::vector<Done> done;  // the completion queue
    bool stopping = false;
    std::vector<std::thread> workers;
};

void on_accept(Server& s);
bool on_readable(Server& s, Conn& c);
void post_job(Server& s, Conn& c);
void worker(Server& s);
std::optional<Done> on_recv_done(Server& s, Job& job);
void on_replies(Server& s);
bool on_writable(Server& s, Conn& c);
bool initiate_next(Server& s, Conn& c);
Conn* find_conn(Server& s, uint64_t key);
void start_closing(Server& s, Conn& c, std::string_view last_line);
void close_conn(Server& s, Conn& c);
std::optional<Clock::time_point> expire_timers(Server& s);

// listing: loop
int run(const ServerOptions& opt, int nworkers) {
    Server s(opt);
    s.listen_fd = listen_tcp(opt.host, opt.port, SOCK_NONBLOCK | SOCK_CLOEXEC);
    s.epfd = Fd(::epoll_create1(EPOLL_CLOEXEC));
    s.doorbell = Fd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    if (!s.epfd || !s.doorbell) {
        throw_errno("epoll_create1/eventfd");
    }
    // Registered once: a completed handshake, a stop signal (the loop's condition sees it), and
    // the doorbell: the workers' completions.
    const std::pair<int, uint64_t> registered[] = {
        {s.listen_fd.get(), kListenKey}, {stop_fd(), kStopKey}, {s.doorbell.get(), kDoorbellKey}};
    for (auto [fd, key] : registered) {
        epoll_event ev{EPOLLIN, {.u64 = key}};
        if (::epoll_ctl(s.epfd.get(), EPOLL_CTL_ADD, fd, &ev) < 0) {
            throw_errno("epoll_ctl ADD " + std::to_string(fd));
        }
    }
    for (int i = 0; i < nworkers; ++i) {
        s.workers.emplace_back(worker, std::ref(s));  // step 4 runs there
    }
    announce_listening(s.listen_fd.get(), s.stats.model, opt);

    std::optional<Clock::time_point> deadline;  // the next idle, request or linger timeout
    epoll_event events[kMaxEvents];
    while (!stop_requested()) {
        // Steps 2 and 5: the main thread sleeps here, and only here.
        int nready = TRACE_IO(
            "epoll_wait", s.epfd.get(),
            ::epoll_wait(s.epfd.get(), events, kMaxEvents, timeout_ms(deadline, Clock::now())));
        if (nready < 0 && errno != EINTR) {
            throw_errno("epoll_wait");
        }
        s.now = Clock::now();
        for (int i = 0; i < nready; ++i) {
            uint64_t key = events[i].data.u64;
            uint32_t revents = events[i].events;
            if (key == kListenKey) {
                on_accept(s);
            } else if (key == kDoorbellKey) {
                on_replies(s);  // step 5: replies are back from the workers
            } else if (Conn* c = find_conn(s, key); c != nullptr) {
                if ((revents & EPOLLOUT) && !on_writable(s, *c)) {
                    continue;  // step 6 ended the connection
                }
                // EPOLLHUP and EPOLLERR come even when not asked for; recv returns the 0 or the
                // error. Without EPOLLIN in the set they would be reported again at once, forever.
                if ((revents & (EPOLLIN | EPOLLHUP | EPOLLERR)) && (c->events & EPOLLIN)) {
                    on_readable(s, *c);  // step 3
                } else if (revents & (EPOLLHUP | EPOLLERR)) {
                    close_conn(s, *c);
                }
            }
        }
        deadline = expire_timers(s);
    }
    return 0;  // ~Server stops the workers, then closes every socket
}
// end listing: loop

// ---- the handlers ----

void on_accept(Server& s) {
    for (int i = 0; i < kAcceptBudget; ++i) {
        int conn_fd =
            TRACE_IO("accept4", s.listen_fd.get(),
                     ::accept4(s.listen_fd.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (conn_fd < 0) {
            // Out of descriptors, the client stays in the backlog and the listening socket stays
            // readable: the spare descriptor makes room to turn it away (common/conn.hpp).
            if ((errno == EMFILE || errno == ENFILE) &&
                s.spare_fd.refuse_one(s.listen_fd.get(), s.stats)) {
                continue;
            }
            return;  // EAGAIN: the backlog is empty. ECONNABORTED and the like: next pass.
        }
        if (s.stats.conns.load(std::memory_order_relaxed) >=
            static_cast<uint64_t>(s.opt.max_conns)) {
            refuse(s.stats, conn_fd);  // ERR server full
            continue;
        }
        uint64_t key = conn_key(conn_fd, ++s.serial);
        epoll_event ev{EPOLLIN, {.u64 = key}};  // step 1, level-triggered, for the first read
        if (TRACE_IO("epoll_ctl", conn_fd, ::epoll_ctl(s.epfd.get(), EPOLL_CTL_ADD, conn_fd, &ev)) <
            0) {
            refuse(s.stats, conn_fd);  // ENOMEM, or ENOSPC past fs.epoll.max_user_watches
            continue;
        }
        set_nodelay(conn_fd);
        auto c = std::make_unique<Conn>(conn_fd, key, s.opt.max_line);
        c->events = ev.events;
        s.idle_timers.arm(c->idle_timer, s.now);
        if (s.conns.size() <= static_cast<size_t>(conn_fd)) {
            s.conns.resize(static_cast<size_t>(conn_fd) + 1);
        }
        s.conns[static_cast<size_t>(conn_fd)] = std::move(c);
        s.stats.accepted.fetch_add(1, std::memory_order_relaxed);
        s.stats.conns.fetch_add(1, std::memory_order_relaxed);
    }
}

// Step 3, the asynchronous read done in the kernel's place: recv until EAGAIN (or until
// kHighWater waits for this connection), cut the complete request lines out, post them as a job.
// Returns false if the connection is over.
bool on_readable(Server& s, Conn& c) {
    while (c.closing || c.queued.size() + c.pending() < kHighWater) {
        ssize_t n = TRACE_IO("recv", c.fd.get(), ::recv(c.fd.get(), s.buf, sizeof s.buf, 0));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        }
        if (n < 0) {
            close_conn(s, c);  // ECONNRESET and the like: the client is gone
            return false;
        }
        if (n == 0) {
            if (c.wr_shut) {
                close_conn(s, c);  // the client read our last line and closed
                return false;
            }
            c.peer_done = true;  // what is owed (echo: the rest of the stream) goes first
            break;
        }
        if (c.closing) {
            return true;  // lingering: read only so that close(2) finds no unread input
        }
        s.idle_timers.arm(c.idle_timer, s.now);
        if (s.opt.mode == Mode::echo) {
            c.queued.append(s.buf, static_cast<size_t>(n));
            continue;
        }
        bool line_ended = false;
        c.in.feed(s.buf, static_cast<size_t>(n));
        while (auto line = c.in.next()) {
            c.queued.append(*line);
            c.queued += '\n';
            line_ended = true;
        }
        if (c.in.too_long()) {
            // The lines before it are answered first: the ERR line waits for their job.
            start_closing(s, c, too_long_reply(s.opt.max_line));
            break;
        }
        track_request(s.request_timers, c.request_timer, c.in, line_ended, s.now);
    }
    post_job(s, c);
    return initiate_next(s, c);
}

// The read's completion goes on the request queue, for the next free worker; unless a worker
// still has this connection's previous job, in which case the lines wait in `queued` for it.
void post_job(Server& s, Conn& c) {
    if (c.job_out || c.queued.empty()) {
        return;
    }
    c.job_out = true;
    {
        std::lock_guard lock(s.mu);
        s.jobs.push_back(Job{c.key, std::move(c.queued), std::move(c.spare_out)});
    }
    s.jobs_ready.notify_one();
    c.queued = std::move(c.spare_in);
    c.queued.clear();
}

// Step 4, in each worker thread: take the next job, run the completion handler on it, post the
// replies on the completion queue and ring the doorbell.
void worker(Server& s) {
    for (;;) {
        Job job;
        {
            std::unique_lock lock(s.mu);
            s.jobs_ready.wait(lock, [&s] { return s.stopping || !s.jobs.empty(); });
            if (s.stopping) {
                return;
            }
            job = std::move(s.jobs.front());
            s.jobs.pop_front();
        }
        std::optional<Done> d = on_recv_done(s, job);
        if (!d) {
            return;  // stopping, in the middle of a WORK
        }
        bool ring;
        {
            std::lock_guard lock(s.mu);
            ring = s.done.empty();  // otherwise the main thread has a wakeup coming already
            s.done.push_back(std::move(*d));
        }
        if (ring) {
            uint64_t one = 1;
            TRACE_IO("write", s.doorbell.get(), ::write(s.doorbell.get(), &one, sizeof one));
        }
    }
}

// The completion handler: the read is done and its request lines are in job.lines. It runs in a
// worker, so a WORK blocks this worker only. Every line is answered, in order, up to a QUIT.
// nullopt when the server is stopping.
std::optional<Done> on_recv_done(Server& s, Job& job) {
    Done d{job.key, std::move(job.reply), {}};
    d.reply.clear();
    if (s.opt.mode == Mode::echo) {
        d.reply.swap(job.lines);
    }
    std::string_view rest = s.opt.mode == Mode::qa ? job.lines : std::string_view{};
    while (!rest.empty()) {
        size_t nl = rest.find('\n');
        Request req = parse_request(rest.substr(0, nl));
        rest.remove_prefix(nl + 1);
        if (req.verb == Verb::work && !block_for_work(req.work_ms)) {
            return std::nullopt;
        }
        append_reply(d.reply, req, s.stats);
        s.stats.requests.fetch_add(1, std::memory_order_relaxed);
        if (req.verb == Verb::quit) {
            d.quit = true;
            break;
        }
    }
    d.spare = std::move(job.lines);
    return d;
}

// Step 5, in the main thread: the workers' completions. Each connection's replies join what it
// owes; initiate_next adds EPOLLOUT, and the send waits for write readiness.
void on_replies(Server& s) {
    uint64_t count;
    // The doorbell first, then the queue: a completion posted after the swap below rings again.
    TRACE_IO("read", s.doorbell.get(), ::read(s.doorbell.get(), &count, sizeof count));
    {
        std::lock_guard lock(s.mu);
        s.batch.swap(s.done);
    }
    for (Done& d : s.batch) {
        Conn* c = find_conn(s, d.key);
        if (c == nullptr) {
            continue;  // closed while its job was out
        }
        c->job_out = false;
        c->out += d.reply;
        c->spare_out = std::move(d.reply);
        c->spare_in = std::move(d.spare);
        if (d.quit) {
            c->queued.clear();  // requests after QUIT get no reply
            start_closing(s, *c, "");
        }
        post_job(s, *c);
        initiate_next(s, *c);
    }
    s.batch.clear();
}

// Step 6: the socket is writable; send what the kernel takes now. Returns false if the
// connection is over.
bool on_writable(Server& s, Conn& c) {
    while (c.pending() > 0) {
        size_t len = c.pending();
        ssize_t n = TRACE_IO("send", c.fd.get(),
                             ::send(c.fd.get(), c.out.data() + c.out_sent, len, MSG_NOSIGNAL));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            close_conn(s, c);  // EPIPE, ECONNRESET: the client is gone
            return false;
        }
        if (n < 0) {
            break;  // the send buffer is full: EPOLLOUT says when it has room
        }
        c.out_sent += static_cast<size_t>(n);
        if (static_cast<size_t>(n) < len) {
            break;  // a short send means the send buffer is full too
        }
    }
    return initiate_next(s, c);
}

// The initiator: what this connection waits for next. Level-triggered, the interest set must say
// exactly that: EPOLLIN while we take more requests (step 1 again), EPOLLOUT while replies are
// owed (step 5). Once no job is out and nothing is owed, a close goes on: our last line, then
// the FIN, or the end. Both bits change only at a transition, so not every reply costs an
// epoll_ctl. Returns false if the connection is over.
bool initiate_next(Server& s, Conn& c) {
    bool answered = !c.job_out && c.queued.empty();  // every reply to what was read is in `out`
    if (answered && c.last_line) {
        c.out += *c.last_line;  // after the replies to the requests before it
        c.last_line.reset();
        s.linger_timers.arm(c.linger_timer, s.now);
    }
    if (c.pending() == 0 && !c.out.empty()) {
        c.out.clear();
        c.out_sent = 0;
        if (c.out.capacity() > kKeepOut) {
            std::string().swap(c.out);
        }
    }
    if (answered && c.pending() == 0) {
        if (c.peer_done) {
            close_conn(s, c);  // the client sent FIN and has every byte we owed it
            return false;
        }
        if (c.closing && !c.wr_shut) {
            // FIN after our last line. We keep reading (and discarding) until the client closes
            // too: close(2) with unread input would send RST, which can destroy the line.
            TRACE_IO("shutdown", c.fd.get(), ::shutdown(c.fd.get(), SHUT_WR));
            c.wr_shut = true;
        }
    }
    uint32_t want = 0;
    if (!c.peer_done && (c.closing || c.queued.size() + c.pending() < kHighWater)) {
        want |= EPOLLIN;
    }
    if (c.pending() > 0) {
        want |= EPOLLOUT;
    }
    if (want == c.events) {
        return true;
    }
    epoll_event ev{want, {.u64 = c.key}};
    if (TRACE_IO("epoll_ctl", c.fd.get(),
                 ::epoll_ctl(s.epfd.get(), EPOLL_CTL_MOD, c.fd.get(), &ev)) < 0) {
        // MOD allocates nothing; it fails only if the socket is not in the set. Whatever the
        // cause, epoll would no longer report what this connection needs: it cannot go on.
        close_conn(s, c);
        return false;
    }
    c.events = want;
    return true;
}

// The connection a key names, if it is still open.
Conn* find_conn(Server& s, uint64_t key) {
    auto fd = static_cast<size_t>(key & 0xffffffff);
    if (fd >= s.conns.size() || s.conns[fd] == nullptr || s.conns[fd]->key != key) {
        return nullptr;
    }
    return s.conns[fd].get();
}

// ---- the edge cases ----

// QUIT, an over-long line or a timeout: our last line, then the lingering close. A worker may
// still hold requests that came before it; the line waits for their replies, and initiate_next
// appends it and starts the linger timer once no job is out.
void start_closing(Server& s, Conn& c, std::string_view last_line) {
    if (c.closing && !c.last_line) {
        return;  // its last line is already out
    }
    c.closing = true;
    c.last_line = std::string(last_line);
    s.idle_timers.cancel(c.idle_timer);
    s.request_timers.cancel(c.request_timer);
}

void close_conn(Server& s, Conn& c) {
    s.stats.conns.fetch_sub(1, std::memory_order_relaxed);
    // ~Conn: ~Fd closes the socket (which leaves the epoll set), and its timer entries their
    // lists. A job still out comes back to find no connection under its key and is dropped.
    s.conns[static_cast<size_t>(c.fd.get())].reset();
}

// The deadlines that are due; returns the next one.
std::optional<Clock::time_point> expire_timers(Server& s) {
    while (Conn* c = s.linger_timers.pop_expired(s.now)) {
        close_conn(s, *c);  // it had its time to read our last line
    }
    while (Conn* c = s.idle_timers.pop_expired(s.now)) {
        start_closing(s, *c, kIdleTimeout);
        initiate_next(s, *c);
    }
    while (Conn* c = s.request_timers.pop_expired(s.now)) {
        start_closing(s, *c, kRequestTimeout);
        initiate_next(s, *c);
    }
    return earliest_deadline(s.idle_timers, s.request_timers, s.linger_timers);
}

// Stopping: the workers first, since they use the queues and the doorbell. A worker in a WORK
// returns early, because block_for_work watches the stop signal.
Server::~Server() {
    {
        std::lock_guard lock(mu);
        stopping = true;
    }
    jobs_ready.notify_all();
    for (auto& t : workers) {
        t.join();
    }
}

}  // namespace

int main(int argc, char** argv) {
    CommandLine cmd{"09_proactor_epoll_server",
                    "09_proactor_epoll: a proactor emulated on epoll with worker threads"};
    ServerOptions opt = server_defaults(9);
    cmd.add_server_options(opt);
    int workers = 4;
    cmd.add_option("--workers", workers, "threads that run the completion handlers", 1, 256);
    if (int rc = cmd.parse(argc, argv); rc >= 0) {
        return rc;
    }
    // Sends pass MSG_NOSIGNAL; ignoring SIGPIPE as well keeps any other write from killing us.
    std::signal(SIGPIPE, SIG_IGN);
    try {
        install_stop_handlers();
        return run(opt, workers);
    } catch (const std::exception& e) {
        return report_setup_failure(cmd.name(), e);
    }
}
