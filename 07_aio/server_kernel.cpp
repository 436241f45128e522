// 07_aio_kernel: one thread, many sockets, and Linux's own AIO (io_setup, io_submit,
// io_getevents) to learn which of them are ready: the seed's "poll+aio".
//
// The model: io_setup(2) creates a context, a ring of completion events mapped into our memory;
// io_submit(2) hands the kernel requests (struct iocb); io_getevents(2) sleeps until some have
// completed and returns an io_event for each, carrying the request's aio_data. glibc has no
// wrapper (libaio is the usual one), so the calls are written out with syscall(2). Since Linux
// 4.18 a request can be a poll: IOCB_CMD_POLL completes once, when the socket is ready for what
// aio_buf asks (POLLIN, POLLOUT), with the revents mask in res. It is one-shot: after every
// completion the loop prepares the next, and each pass submits all of them in one io_submit. The
// kernel looks at the socket at submission too, so a ready socket completes its poll inside
// io_submit. Then recv(2) and send(2) on the non-blocking socket do phase 2, as in 04.
//
// There is no accept iocb (the opcodes are PREAD, PWRITE, FSYNC, FDSYNC, POLL, NOOP, PREADV,
// PWRITEV): the listening socket gets a poll like a connection, and on_accept calls accept4(2).
// stop_fd() gets a poll too, so that SIGINT and SIGTERM end the loop's one wait without a race.
//
// What the kernel guarantees: one event per submitted iocb, when it completes or is cancelled.
// An iocb in flight holds a reference to its socket: close(2) alone sends no FIN until the poll
// completes, which for a silent client is never, so close_conn cancels the poll (io_cancel)
// first. The cancelled poll's event still comes, later, with res 0, when the descriptor may
// belong to a new connection: each poll's tag is the descriptor and a serial number, and an
// event whose tag is not the connection's current one is dropped. A poll woken by data or a new
// connection completes at once, but one woken by the client's FIN or RST completes later, from
// a kernel worker thread: out of descriptors, reap_departed asks the sockets itself.
//
// --read iocb: the read is an IOCB_CMD_PREAD on the socket instead of a recv, and nothing
// asynchronous happens: the kernel runs the socket's read inside io_submit, on our thread. On
// this non-blocking socket it copies what is there (or fails with EAGAIN) and posts the event
// before io_submit returns; on a blocking socket io_submit itself sleeps until data arrives
// (measured on 6.18 by tests/model_07_aio_kernel_test.cpp). io_getevents then only collects
// the result. Two system calls for one recv: Linux AIO was made for files opened O_DIRECT.
//
// Limits: fs.aio-max-nr (65536) caps the events of every context on the machine: io_setup fails
// with EAGAIN past it, with ENOSYS where the kernel has no AIO; the server then says so on one
// line and exits 77. Every poll joins its socket's wait queue and leaves it again when it
// completes, where epoll keeps one entry for the connection's life. WORK stalls every client.
//
// Run it:    ./build/bin/07_aio_kernel_server               (listens on 127.0.0.1:9007)
// Talk:      nc 127.0.0.1 9007    in two terminals; WORK 3000 in one freezes the other.
// Watch:     strace -e trace=io_submit,io_getevents,io_cancel,accept4,recvfrom,sendto
//            ./build/bin/07_aio_kernel_server --read iocb     or run with --trace;
//            cat /proc/sys/fs/aio-nr shows the events the contexts reserve.
//
// The layout, the names and the policies (accept, read, write, timers, refusal) are the same in
// every model: docs/listings.md.

#include <linux/aio_abi.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <memory>
#include <optional>
#include <stdexcept>
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

constexpr long kEvents = 256;  // events taken per io_getevents

// An AIO context: the ring of completion events, mapped into our memory by io_setup.
// io_destroy cancels what is still in flight, waits for it to end and unmaps the ring.
struct AioContext {
    aio_context_t id = 0;
    ~AioContext() {
        if (id != 0) {
            ::syscall(SYS_io_destroy, id);
        }
    }
};

// The machine refuses kernel AIO: main prints one line and exits 77.
struct AioUnavailable : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct Conn {
    Conn(int conn_fd, size_t max_line) : fd(conn_fd), in(max_line) {}
    Fd fd;
    LineParser in;
    std::string out;  // bytes owed to the client; the first out_sent are already sent
    size_t out_sent = 0;
    bool peer_done = false;  // recv returned 0: the client has shut down its write side
    bool closing = false;    // QUIT, over-long line or a timeout: send what is owed, then linger
    bool wr_shut = false;    // shutdown(SHUT_WR) done
    bool polling = false;    // poll_cb is prepared or in flight; its event has not come back
    iocb poll_cb{};          // io_cancel names the request by this address
    TimerList<Conn>::Entry idle_timer{this};
    TimerList<Conn>::Entry request_timer{this};
    TimerList<Conn>::Entry linger_timer{this};
    size_t pending() const { return out.size() - out_sent; }
};

struct Server {
    Server(const ServerOptions& o, bool iocb_reads)
        : opt(o),
          read_iocb(iocb_reads),
          idle_timers(o.idle_limit()),
          request_timers(o.mode == Mode::qa ? o.request_limit() : Clock::duration::zero()),
          linger_timers(kLinger) {
        stats.extra = [this] { return std::string("read=") + (read_iocb ? "iocb" : "recv"); };
    }
    const ServerOptions& opt;
    bool read_iocb;  // --read iocb
    ServerStats stats{"07_aio_kernel"};
    Fd listen_fd;
    SpareFd spare_fd;                          // given up for a moment at EMFILE
    int max_conns = 0;                         // --max-conns
    std::vector<std::unique_ptr<Conn>> conns;  // indexed by conn_fd
    AioContext ctx;                            // destroyed first: it cancels every poll
    AioContext read_ctx;                       // --read iocb: the reads' own context
    iocb listen_cb{};
    iocb stop_cb{};
    std::vector<iocb*> batch;  // polls prepared in this pass, submitted at the top of the next
    uint32_t serial = 0;       // numbers every connection's poll, for its tag
    TimerList<Conn> idle_timers, request_timers, linger_timers;
    Clock::time_point now;  // when the current io_getevents returned
    char buf[65536];        // one read buffer for the whole loop
};

void setup_aio(AioContext& ctx, int nr_events);
iocb poll_iocb(int fd, uint32_t serial, short events);
Conn* owner(Server& s, uint64_t tag);
void on_accept(Server& s);
bool on_readable(Server& s, Conn& c);
void answer(Server& s, Conn& c, std::string_view data);
bool on_writable(Server& s, Conn& c);
void arm_poll(Server& s, Conn& c);
void cancel_poll(Server& s, Conn& c);
void start_closing(Server& s, Conn& c, std::string_view last_line);
void close_conn(Server& s, Conn& c);
int reap_departed(Server& s);
std::optional<Clock::time_point> expire_timers(Server& s);

// listing: loop
int run(const ServerOptions& opt, bool read_iocb) {
    Server s(opt, read_iocb);
    s.listen_fd = listen_tcp(opt.host, opt.port, SOCK_NONBLOCK);
    s.max_conns = opt.max_conns;
    // Room for every connection's poll and the late event of one it cancelled, and two more.
    setup_aio(s.ctx, 2 * s.max_conns + 2);
    if (s.read_iocb) {
        setup_aio(s.read_ctx, 1);
    }
    announce_listening(s.listen_fd.get(), s.stats.model, opt);

    // No accept iocb exists: the listening socket's poll says when on_accept can accept4.
    s.listen_cb = poll_iocb(s.listen_fd.get(), 0, POLLIN);
    s.stop_cb = poll_iocb(stop_fd(), 0, POLLIN);  // SIGINT and SIGTERM complete this one
    s.batch = {&s.stop_cb, &s.listen_cb};
    std::optional<Clock::time_point> deadline;  // the next idle, request or linger timeout
    while (!stop_requested()) {
        // Every poll prepared in the last pass, in one call. A socket that is ready already
        // completes its poll in here: its event is in the ring before io_submit returns.
        if (!s.batch.empty()) {
            long n = TRACE_IO("io_submit", -1,
                              ::syscall(SYS_io_submit, s.ctx.id, s.batch.size(), s.batch.data()));
            if (n < 0 && errno != EAGAIN) {
                throw_errno("io_submit");
            }
            s.batch.erase(s.batch.begin(), s.batch.begin() + std::max(n, 0L));  // full: next pass
        }
        int ms = timeout_ms(deadline, Clock::now());
        timespec ts{ms / 1000, (ms % 1000) * 1000000L};

        // Phase 1 for every socket at once: the thread sleeps here, and only here.
        io_event events[kEvents];
        long nready = TRACE_IO(
            "io_getevents", -1,
            ::syscall(SYS_io_getevents, s.ctx.id, 1L, kEvents, events, ms < 0 ? nullptr : &ts));
        if (nready < 0 && errno != EINTR) {
            throw_errno("io_getevents");
        }
        s.now = Clock::now();
        for (long i = 0; i < nready; ++i) {
            uint64_t tag = events[i].data;
            auto revents = static_cast<short>(events[i].res);  // a poll's res: poll(2)'s revents
            if (tag == s.stop_cb.aio_data) {
                return 0;  // ~Server closes every connection and the listening socket
            }
            if (tag == s.listen_cb.aio_data) {
                on_accept(s);
                s.batch.push_back(&s.listen_cb);  // one-shot: poll again next pass
                continue;
            }
            Conn* c = owner(s, tag);
            if (c == nullptr) {
                continue;  // the late event of a poll we cancelled
            }
            c->polling = false;
            if ((revents & POLLOUT) && !on_writable(s, *c)) {
                continue;
            }
            if ((revents & (POLLIN | POLLHUP | POLLERR)) && !on_readable(s, *c)) {
                continue;
            }
            arm_poll(s, *c);  // one-shot: its next poll goes out with the next io_submit
        }
        deadline = expire_timers(s);
    }
    return 0;  // ~Server closes every connection and the listening socket
}
// end listing: loop

// ---- the handlers ----

// A one-shot poll request. The tag in aio_data is the descriptor and a serial number, so that an
// event can be told from the late event of a poll cancelled on an earlier connection.
iocb poll_iocb(int fd, uint32_t serial, short events) {
    iocb cb{};
    cb.aio_data = (static_cast<uint64_t>(serial) << 32) | static_cast<uint32_t>(fd);
    cb.aio_lio_opcode = IOCB_CMD_POLL;
    cb.aio_fildes = static_cast<uint32_t>(fd);
    cb.aio_buf = static_cast<uint16_t>(events);
    return cb;
}

// The connection whose current poll an event completes, or nullptr.
Conn* owner(Server& s, uint64_t tag) {
    auto fd = static_cast<size_t>(tag & 0xffffffffu);
    Conn* c = fd < s.conns.size() ? s.conns[fd].get() : nullptr;
    return c != nullptr && c->polling && c->poll_cb.aio_data == tag ? c : nullptr;
}

void on_accept(Server& s) {
    for (int i = 0; i < kAcceptBudget; ++i) {
        int conn_fd =
            TRACE_IO("accept4", s.listen_fd.get(),
                     ::accept4(s.listen_fd.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (conn_fd < 0) {
            // Out of descriptors, the client stays in the backlog and the listening socket stays
            // readable. Some of our descriptors may belong to clients that have already left
            // (see reap_departed); if none does, the spare descriptor makes room to turn the
            // client away (common/conn.hpp).
            bool out_of_fds = errno == EMFILE || errno == ENFILE;
            if (out_of_fds &&
                (reap_departed(s) > 0 || s.spare_fd.refuse_one(s.listen_fd.get(), s.stats))) {
                continue;
            }
            return;  // EAGAIN: the backlog is empty. ECONNABORTED and the like: next pass.
        }
        if (s.stats.conns.load(std::memory_order_relaxed) >= static_cast<uint64_t>(s.max_conns)) {
            refuse(s.stats, conn_fd);  // ERR server full
            continue;
        }
        set_nodelay(conn_fd);
        auto c = std::make_unique<Conn>(conn_fd, s.opt.max_line);
        s.idle_timers.arm(c->idle_timer, s.now);
        arm_poll(s, *c);
        if (s.conns.size() <= static_cast<size_t>(conn_fd)) {
            s.conns.resize(static_cast<size_t>(conn_fd) + 1);
        }
        s.conns[static_cast<size_t>(conn_fd)] = std::move(c);
        s.stats.accepted.fetch_add(1, std::memory_order_relaxed);
        s.stats.conns.fetch_add(1, std::memory_order_relaxed);
    }
}

// --read iocb: the same read as an IOCB_CMD_PREAD, on a context of its own so that its event is
// the only one there. The kernel does the whole read inside io_submit (see the header), so
// io_getevents returns at once. Returns what recv would: bytes, or -1 with errno.
ssize_t read_by_iocb(Server& s, Conn& c) {
    iocb cb{};
    cb.aio_lio_opcode = IOCB_CMD_PREAD;
    cb.aio_fildes = static_cast<uint32_t>(c.fd.get());
    cb.aio_buf = reinterpret_cast<uint64_t>(s.buf);
    cb.aio_nbytes = sizeof s.buf;  // aio_offset stays 0: a socket has no file position
    iocb* list[] = {&cb};
    if (TRACE_IO("io_submit", c.fd.get(), ::syscall(SYS_io_submit, s.read_ctx.id, 1L, list)) < 0) {
        return -1;
    }
    io_event ev{};
    if (TRACE_IO("io_getevents", c.fd.get(),
                 ::syscall(SYS_io_getevents, s.read_ctx.id, 1L, 1L, &ev, nullptr)) != 1) {
        throw_errno("io_getevents");  // the event is already there: this cannot sleep or fail
    }
    if (trace::enabled()) {
        trace::record("pread_event", c.fd.get(), static_cast<long>(ev.res), trace::Clock::now());
    }
    if (ev.res < 0) {
        errno = static_cast<int>(-ev.res);
        return -1;
    }
    return static_cast<ssize_t>(ev.res);
}

// One read per completed poll: the next poll completes at once while bytes remain, in the next
// pass, beside every other ready connection. Returns false if the connection is over.
bool on_readable(Server& s, Conn& c) {
    ssize_t n = s.read_iocb
                    ? read_by_iocb(s, c)
                    : TRACE_IO("recv", c.fd.get(), ::recv(c.fd.get(), s.buf, sizeof s.buf, 0));
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
            return true;
        }
        close_conn(s, c);  // ECONNRESET and the like: the client is gone
        return false;
    }
    if (n == 0) {
        if (c.wr_shut) {
            close_conn(s, c);  // the client read our last line and closed
            return false;
        }
        c.peer_done = true;  // send what is still owed (echo: the rest of the stream), then close
        return on_writable(s, c);
    }
    if (c.closing) {
        return true;  // lingering: read only so that close(2) finds no unread input
    }
    s.idle_timers.arm(c.idle_timer, s.now);
    if (s.opt.mode == Mode::echo) {
        c.out.append(s.buf, static_cast<size_t>(n));
    } else {
        answer(s, c, {s.buf, static_cast<size_t>(n)});
    }
    return on_writable(s, c);  // all replies to this read in one send
}

// Answers every complete request line in `data`, appending the replies to c.out in order.
void answer(Server& s, Conn& c, std::string_view data) {
    bool line_ended = false;
    c.in.feed(data);
    while (auto line = c.in.next()) {
        line_ended = true;
        Request req = parse_request(*line);
        // The whole loop waits here, every other connection with it.
        if (req.verb == Verb::work && !block_for_work(req.work_ms)) {
            return;  // stopping
        }
        append_reply(c.out, req, s.stats);
        s.stats.requests.fetch_add(1, std::memory_order_relaxed);
        if (req.verb == Verb::quit) {
            start_closing(s, c, "");
            return;
        }
    }
    if (c.in.too_long()) {
        start_closing(s, c, too_long_reply(s.opt.max_line));
        return;
    }
    track_request(s.request_timers, c.request_timer, c.in, line_ended, s.now);
}

// Sends what the kernel takes now. Returns false if the connection is over.
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
            return true;  // the send buffer is full: the next poll asks for POLLOUT
        }
        c.out_sent += static_cast<size_t>(n);
        if (static_cast<size_t>(n) < len) {
            return true;  // a short send means the send buffer is full too
        }
    }
    c.out.clear();
    c.out_sent = 0;
    if (c.out.capacity() > kKeepOut) {
        std::string().swap(c.out);
    }
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
    return true;
}

// Prepares the connection's next poll, asking for what it waits for now: input while fewer than
// kHighWater bytes are owed (always while closing, to drain), room to send while any are. A
// poll still out (a timer changed what the connection waits for) is cancelled first.
void arm_poll(Server& s, Conn& c) {
    cancel_poll(s, c);
    short events = 0;
    if (!c.peer_done && (c.closing || c.pending() < kHighWater)) {
        events |= POLLIN;
    }
    if (c.pending() > 0) {
        events |= POLLOUT;
    }
    c.poll_cb = poll_iocb(c.fd.get(), ++s.serial, events);
    c.polling = true;
    s.batch.push_back(&c.poll_cb);
}

// ---- the edge cases ----

// The poll still out for a connection that closes or wants other events: taken back from the
// batch if it was not submitted yet, cancelled if it was. The kernel holds the socket open for
// as long as the poll is in flight; its late event (res 0) no longer matches the tag.
void cancel_poll(Server& s, Conn& c) {
    if (!c.polling) {
        return;
    }
    c.polling = false;
    if (std::erase(s.batch, &c.poll_cb) == 0) {
        io_event unused{};
        TRACE_IO("io_cancel", c.fd.get(),
                 ::syscall(SYS_io_cancel, s.ctx.id, &c.poll_cb, &unused));  // -EINPROGRESS
    }
}

// Out of descriptors, some of ours may belong to clients that have already closed, their polls
// woken but not yet completed. TCP wakes a socket's waiters without an event mask when a FIN or
// RST changes its state, and a poll woken that way cannot complete in the waker's context:
// fs/aio.c hands it to a kernel worker (a kworker thread on the system workqueue), which must
// look at the socket again. A keyed wakeup (data arriving, a new connection) completes at once,
// so new clients are accepted and answered while the departures wait for a worker that, on a
// busy CPU, ran up to 80 ms later (workqueue tracepoints, 6.18, two loaded cores): a client
// that connects, asks and leaves in a loop fills a 32-descriptor table with connections that are
// already closed. Before we turn anyone away, poll(2) asks every socket whose poll is out what
// the worker would find, on our thread and at once: the same readiness check io_submit makes for
// an IOCB_CMD_POLL. A socket that is ready is served as if its poll had completed, and its own
// event, when the worker posts it, no longer matches the tag. This costs one pass over the
// connections, only when accept(2) has failed with EMFILE. Returns how many closed.
int reap_departed(Server& s) {
    std::vector<pollfd> pfds;
    for (const auto& c : s.conns) {
        if (c != nullptr && c->polling) {
            pfds.push_back({c->fd.get(), static_cast<short>(c->poll_cb.aio_buf), 0});
        }
    }
    if (TRACE_IO("poll", -1, ::poll(pfds.data(), pfds.size(), 0)) <= 0) {
        return 0;
    }
    uint64_t open_before = s.stats.conns.load(std::memory_order_relaxed);
    for (const pollfd& p : pfds) {
        if (p.revents == 0) {
            continue;
        }
        Conn& c = *s.conns[static_cast<size_t>(p.fd)];
        cancel_poll(s, c);
        if ((p.revents & POLLOUT) && !on_writable(s, c)) {
            continue;
        }
        if ((p.revents & (POLLIN | POLLHUP | POLLERR)) && !on_readable(s, c)) {
            continue;
        }
        arm_poll(s, c);
    }
    return static_cast<int>(open_before - s.stats.conns.load(std::memory_order_relaxed));
}

// QUIT, an over-long line or a timeout: our last line, then the lingering close.
void start_closing(Server& s, Conn& c, std::string_view last_line) {
    c.out += last_line;
    c.closing = true;
    s.idle_timers.cancel(c.idle_timer);
    s.request_timers.cancel(c.request_timer);
    s.linger_timers.arm(c.linger_timer, s.now);
}

void close_conn(Server& s, Conn& c) {
    s.stats.conns.fetch_sub(1, std::memory_order_relaxed);
    cancel_poll(s, c);  // else the kernel's reference keeps the connection open
    // ~Conn: ~Fd closes the socket, and its timer entries leave their lists.
    s.conns[static_cast<size_t>(c.fd.get())].reset();
}

// The deadlines that are due; returns the next one. A connection a timer starts closing waits
// for other events than its poll asked for (input to drain, room for the last line), so it gets
// a new poll.
std::optional<Clock::time_point> expire_timers(Server& s) {
    while (Conn* c = s.linger_timers.pop_expired(s.now)) {
        close_conn(s, *c);  // it had its time to read our last line
    }
    while (Conn* c = s.idle_timers.pop_expired(s.now)) {
        start_closing(s, *c, kIdleTimeout);
        if (on_writable(s, *c)) {
            arm_poll(s, *c);
        }
    }
    while (Conn* c = s.request_timers.pop_expired(s.now)) {
        start_closing(s, *c, kRequestTimeout);
        if (on_writable(s, *c)) {
            arm_poll(s, *c);
        }
    }
    return earliest_deadline(s.idle_timers, s.request_timers, s.linger_timers);
}

// io_setup, or AioUnavailable where the machine refuses kernel AIO.
void setup_aio(AioContext& ctx, int nr_events) {
    if (::syscall(SYS_io_setup, nr_events, &ctx.id) == 0) {
        return;
    }
    std::string what = "io_setup(" + std::to_string(nr_events) + ")";
    if (errno == ENOSYS || errno == EPERM) {
        throw AioUnavailable(
            what + ": " + std::strerror(errno) +
            ": no kernel AIO here (built without CONFIG_AIO, or a seccomp filter)");
    }
    if (errno == EAGAIN) {
        throw AioUnavailable(what + ": " + std::strerror(errno) +
                             ": fs.aio-max-nr has no room left (see /proc/sys/fs/aio-nr)");
    }
    throw_errno(what);
}

}  // namespace

int main(int argc, char** argv) {
    CommandLine cmd{"07_aio_kernel_server",
                    "07_aio_kernel: one thread, Linux AIO (IOCB_CMD_POLL, io_getevents)"};
    ServerOptions opt = server_defaults(7);
    cmd.add_server_options(opt);
    std::string read = "recv";
    cmd.add_option("--read", read, "after a poll: recv, or an IOCB_CMD_PREAD (iocb)",
                   {"recv", "iocb"});
    if (int rc = cmd.parse(argc, argv); rc >= 0) {
        return rc;
    }
    // A client that vanishes turns our next send into EPIPE; the sends pass MSG_NOSIGNAL, and
    // ignoring SIGPIPE as well keeps any other write from killing the server.
    std::signal(SIGPIPE, SIG_IGN);
    try {
        install_stop_handlers();
        return run(opt, read == "iocb");
    } catch (const AioUnavailable& e) {
        std::cerr << cmd.name() << ": " << e.what() << '\n';
        return 77;
    } catch (const std::exception& e) {
        return report_setup_failure(cmd.name(), e);
    }
}
