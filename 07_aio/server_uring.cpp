// 07_aio_uring: io_uring, the kernel's own asynchronous IO, through liburing.
//
// The model: two rings shared with the kernel. We write requests into the submission queue (an
// SQE: "accept on this socket", "receive on that one", "send these bytes"); the kernel writes a
// completion (a CQE: the result, and the user_data we attached) into the completion queue when
// each is done. There is no helper thread (compare glibc's POSIX AIO, server.cpp): a recv on a
// socket with no data waits on the socket's wait queue inside the kernel, and when bytes arrive
// the kernel copies them itself, inside our io_uring_enter. Both phases are over when we see
// the CQE. The loop makes one system call per pass, io_uring_submit_and_wait_timeout: submit
// every SQE prepared since the last pass, sleep until a CQE is there (or the next deadline),
// then handle every CQE; each completion starts the next operation.
//
// What the kernel guarantees, and what that asks of us:
//   - A buffer is the kernel's from submission until its CQE: `sending` is not touched while
//     its send is in flight, new replies collect in `out`. A connection is freed only after its
//     last CQE, so no CQE can name a descriptor number that was closed and reused.
//   - Multishot accept and recv (5.19, 6.0): one SQE posts CQEs while IORING_CQE_F_MORE is set.
//   - Provided buffers (5.19): the kernel takes a buffer from our ring only when data arrives,
//     so an idle connection holds none. We parse straight out of it and give it back at once;
//     when the ring runs dry, the recv ends with -ENOBUFS and is armed again.
//   - A full CQ (4x the SQ) keeps its overflow in the kernel (IORING_FEAT_NODROP).
//   - Older kernels get single-shot accept and recv into a buffer per connection (--simple
//     forces that path). Where io_uring is refused (seccomp, kernel.io_uring_disabled), the
//     server says so and exits 77.
//
// Limits: WORK runs on the loop's only thread and stalls everyone (single_loop); one core.
//
// Run it:    ./build/bin/07_aio_uring_server          (listens on 127.0.0.1:9007)
// Talk:      nc 127.0.0.1 9007      then PING, ECHO hi, STATS, QUIT
// Watch:     strace -f ./build/bin/07_aio_uring_server shows little but io_uring_enter: accept,
//            recv and send are not system calls here. --trace prints each io_uring_enter and
//            each completion ("cqe_recv fd=7 ret=5").
//
// The layout, the names and the policies are the same in every model: docs/listings.md.

#include <liburing.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "common/cli.hpp"
#include "common/conn.hpp"
#include "common/net.hpp"
#include "common/options.hpp"
#include "common/qa.hpp"
#include "common/stop.hpp"
#include "common/trace.hpp"
#include "common/uring.hpp"

using namespace iolab;

namespace {

constexpr unsigned kSqEntries = 4096;
constexpr unsigned kBufCount = 512;  // provided buffers, a power of two
constexpr unsigned kBufSize = 8192;

// What an SQE asked for, carried to its CQE in user_data with the descriptor: (fd << 8) | kind.
enum Kind : uint64_t { kAccept, kListen, kRecv, kSend, kCancel, kStop };
uint64_t tag(Kind kind, int fd) {
    return (static_cast<uint64_t>(fd) << 8) | kind;
}

struct Conn {
    Conn(int conn_fd, size_t max_line) : fd(conn_fd), in(max_line) {}
    Fd fd;
    LineParser in;
    std::string out;      // replies not yet handed to the kernel
    std::string sending;  // the send in flight: the kernel's until its CQE
    size_t out_sent = 0;  // bytes of `sending` already sent
    bool peer_done = false, closing = false, wr_shut = false;
    bool recv_armed = false;  // a recv SQE is in the kernel (multishot: until a CQE without MORE)
    bool send_armed = false;
    bool paused = false;          // kHighWater owed: no recv until all of it is sent
    bool gone = false;            // close_conn ran: freed once the kernel has no SQE of it left
    std::unique_ptr<char[]> buf;  // without provided buffers: this connection's own
    TimerList<Conn>::Entry idle_timer{this}, request_timer{this}, linger_timer{this};
    size_t pending() const { return out.size() + sending.size() - out_sent; }
};

struct Server {
    Server(const ServerOptions& o, bool simple);
    // A kernel worker tears the ring down, maybe after this process has exited, and until then
    // the accept in flight holds the listening socket open in LISTEN: a server restarted at once
    // on this port would get EADDRINUSE. shutdown(2) takes the socket out of LISTEN first.
    ~Server() {
        if (listen_fd) {
            ::shutdown(listen_fd.get(), SHUT_RDWR);
        }
        io_uring_queue_exit(&ring);  // cancels what is in flight; then sockets close
    }
    const ServerOptions& opt;
    ServerStats stats{"07_aio_uring"};
    io_uring ring{};
    UringFeatures uring;  // what the kernel offers, less what --simple turns off
    BufferRing bufs;
    Fd listen_fd;
    SpareFd spare_fd;                          // given up for a moment at EMFILE
    std::vector<std::unique_ptr<Conn>> conns;  // indexed by conn_fd
    TimerList<Conn> idle_timers, request_timers, linger_timers;
    Clock::time_point now;  // when the current wait returned
    bool accept_armed = false, stopping = false;
};

io_uring_sqe* get_sqe(Server& s, uint64_t user_data);
void trace_cqe(uint64_t data, int res);
void arm_accept(Server& s);
void on_accept(Server& s, const io_uring_cqe* cqe);
void on_readable(Server& s, Conn& c, const io_uring_cqe* cqe);
void answer(Server& s, Conn& c, std::string_view data);
void on_sent(Server& s, Conn& c, int res);
void on_writable(Server& s, Conn& c);
void start_closing(Server& s, Conn& c, std::string_view last_line);
void close_conn(Server& s, Conn& c);
std::optional<Clock::time_point> expire_timers(Server& s);
void on_accept_error(Server& s, int err);

// listing: loop
int run(const ServerOptions& opt, bool simple) {
    Server s(opt, simple);  // io_uring_setup with the best flags this kernel takes (common/uring)
    s.listen_fd = listen_tcp(opt.host, opt.port, SOCK_NONBLOCK | SOCK_CLOEXEC);
    arm_accept(s);
    // SIGTERM's handler writes to stop_fd(); a poll SQE on that pipe turns it into a CQE.
    io_uring_prep_poll_add(get_sqe(s, tag(kStop, stop_fd())), stop_fd(), POLLIN);
    announce_listening(s.listen_fd.get(), s.stats.model, opt);

    std::optional<Clock::time_point> deadline;  // the next idle, request or linger timeout
    while (!s.stopping) {
        // The one system call of a pass: submit every SQE prepared since the last one, then
        // sleep until a CQE is there or the deadline passes (not at all while completions wait
        // in the kernel's overflow list).
        int ms = timeout_ms(deadline, Clock::now());
        __kernel_timespec ts{ms / 1000, (ms % 1000) * 1'000'000LL};
        unsigned wait_nr = io_uring_cq_has_overflow(&s.ring) ? 0 : 1;
        io_uring_cqe* cqe = nullptr;
        auto start = trace::Clock::now();
        int rc = io_uring_submit_and_wait_timeout(&s.ring, &cqe, wait_nr, ms < 0 ? nullptr : &ts,
                                                  nullptr);
        trace::count();
        if (trace::enabled()) {
            trace::record("io_uring_submit_and_wait", s.ring.ring_fd, rc, start);
        }
        // -ETIME: the deadline came first; -EINTR: a signal; -EBUSY: an old kernel's full CQ.
        if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EBUSY && rc != -EAGAIN) {
            throw std::system_error(-rc, std::generic_category(), "io_uring_submit_and_wait");
        }
        s.now = Clock::now();
        unsigned head;
        unsigned count = 0;
        io_uring_for_each_cqe(&s.ring, head, cqe) {
            ++count;
            uint64_t data = io_uring_cqe_get_data64(cqe);
            int fd = static_cast<int>(data >> 8);
            trace_cqe(data, cqe->res);
            switch (data & 0xff) {
                case kAccept:
                    on_accept(s, cqe);
                    break;
                case kListen:
                    arm_accept(s);  // a client waits: accept again (after EMFILE)
                    break;
                case kRecv:
                    on_readable(s, *s.conns[fd], cqe);
                    break;
                case kSend:
                    on_sent(s, *s.conns[fd], cqe->res);
                    break;
                case kCancel:
                    break;  // the cancelled recv reports itself, with -ECANCELED
                case kStop:
                    s.stopping = true;
                    break;
                default:
                    std::fprintf(stderr, "07_aio_uring_server: CQE with unknown tag %llu\n",
                                 static_cast<unsigned long long>(data));
                    std::abort();
            }
        }
        io_uring_cq_advance(&s.ring, count);
        deadline = expire_timers(s);
    }
    return 0;  // ~Server: the ring goes first, and with it every operation in flight
}
// end listing: loop

// ---- the handlers ----

// The ring, set up as this kernel allows: common/uring.cpp tries the setup flags from the
// cheapest completion delivery down, and probes for the opcodes named here.
Server::Server(const ServerOptions& o, bool simple)
    : opt(o),
      uring(init_uring(ring, kSqEntries,
                       {IORING_OP_ACCEPT, IORING_OP_RECV, IORING_OP_SEND, IORING_OP_POLL_ADD,
                        IORING_OP_ASYNC_CANCEL})),
      idle_timers(o.idle_limit()),
      request_timers(o.mode == Mode::qa ? o.request_limit() : Clock::duration::zero()),
      linger_timers(kLinger) {
    // The buffer ring: registered with the kernel and filled (common/uring.cpp).
    if (simple || !bufs.setup(ring, kBufCount, kBufSize)) {
        uring.multishot_recv = false;  // a multishot recv needs provided buffers
    }
    uring.multishot_accept = uring.multishot_accept && !simple;
    stats.extra = [this] {
        return std::string("multishot=") + (uring.multishot_recv ? "yes" : "no") +
               " provided_buffers=" + (bufs.active() ? "yes" : "no");
    };
}

// An SQE to fill. If this pass has filled the SQ (a thousand timeouts at once), hand the kernel
// what is there to make room: the one place where a pass enters the kernel twice.
io_uring_sqe* get_sqe(Server& s, uint64_t user_data) {
    io_uring_sqe* sqe = io_uring_get_sqe(&s.ring);
    if (sqe == nullptr) {
        trace::count();
        io_uring_submit(&s.ring);
        sqe = io_uring_get_sqe(&s.ring);
    }
    if (sqe == nullptr) {
        std::fprintf(stderr, "07_aio_uring_server: the submission queue stays full\n");
        std::abort();
    }
    io_uring_sqe_set_data64(sqe, user_data);
    return sqe;
}

// --trace: one line per completion, named by its tag ("cqe_recv fd=7 ret=5").
void trace_cqe(uint64_t data, int res) {
    static const char* const names[] = {"cqe_accept", "cqe_listen", "cqe_recv",
                                        "cqe_send",   "cqe_cancel", "cqe_stop"};
    if (trace::enabled() && (data & 0xff) <= kStop) {
        trace::record(names[data & 0xff], static_cast<int>(data >> 8), res, trace::Clock::now());
    }
}

void arm_accept(Server& s) {
    io_uring_sqe* sqe = get_sqe(s, tag(kAccept, s.listen_fd.get()));
    if (s.uring.multishot_accept) {
        io_uring_prep_multishot_accept(sqe, s.listen_fd.get(), nullptr, nullptr, SOCK_CLOEXEC);
    } else {
        io_uring_prep_accept(sqe, s.listen_fd.get(), nullptr, nullptr, SOCK_CLOEXEC);
    }
    s.accept_armed = true;
}

void arm_recv(Server& s, Conn& c) {
    io_uring_sqe* sqe = get_sqe(s, tag(kRecv, c.fd.get()));
    if (s.bufs.active()) {
        // No buffer named: the kernel takes one from the buffer ring when data arrives.
        if (s.uring.multishot_recv) {
            io_uring_prep_recv_multishot(sqe, c.fd.get(), nullptr, 0, 0);
        } else {
            io_uring_prep_recv(sqe, c.fd.get(), nullptr, kBufSize, 0);
        }
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = BufferRing::kGroup;
    } else {
        if (!c.buf) {
            c.buf = std::make_unique<char[]>(kBufSize);
        }
        io_uring_prep_recv(sqe, c.fd.get(), c.buf.get(), kBufSize, 0);
    }
    c.recv_armed = true;
}

// The kernel accepted: cqe->res is the new connection's descriptor (or -errno). A multishot
// accept posts one CQE per connection, in line with every other completion, so a connect storm
// cannot keep the loop from the connections it holds.
void on_accept(Server& s, const io_uring_cqe* cqe) {
    s.accept_armed = (cqe->flags & IORING_CQE_F_MORE) != 0;
    int conn_fd = cqe->res;
    if (conn_fd < 0) {
        on_accept_error(s, conn_fd);
        return;
    }
    if (!s.accept_armed) {
        arm_accept(s);  // single-shot: one SQE per connection
    }
    if (s.stats.conns.load(std::memory_order_relaxed) >= static_cast<uint64_t>(s.opt.max_conns)) {
        refuse(s.stats, conn_fd);  // ERR server full, then a close that keeps it (common/conn.hpp)
        return;
    }
    set_nodelay(conn_fd);
    auto c = std::make_unique<Conn>(conn_fd, s.opt.max_line);
    s.idle_timers.arm(c->idle_timer, s.now);
    arm_recv(s, *c);
    if (s.conns.size() <= static_cast<size_t>(conn_fd)) {
        s.conns.resize(static_cast<size_t>(conn_fd) + 1);
    }
    s.conns[static_cast<size_t>(conn_fd)] = std::move(c);
    s.stats.accepted.fetch_add(1, std::memory_order_relaxed);
    s.stats.conns.fetch_add(1, std::memory_order_relaxed);
}

// A recv completed: cqe->res bytes are already in a buffer (one the kernel took from the ring,
// or the connection's own), or 0 (the client shut down its side), or -errno.
void on_readable(Server& s, Conn& c, const io_uring_cqe* cqe) {
    c.recv_armed = (cqe->flags & IORING_CQE_F_MORE) != 0;
    int res = cqe->res;
    bool provided = (cqe->flags & IORING_CQE_F_BUFFER) != 0;
    if (res > 0 && !c.closing && !c.gone) {
        std::string_view data(provided ? s.bufs.data(BufferRing::bid(cqe)) : c.buf.get(),
                              static_cast<size_t>(res));
        s.idle_timers.arm(c.idle_timer, s.now);
        if (s.opt.mode == Mode::echo) {
            c.out.append(data);
        } else {
            answer(s, c, data);
        }
        if (c.pending() >= kHighWater && !c.paused) {
            c.paused = true;  // the client sends faster than it reads: stop until all is sent
            if (c.recv_armed) {
                io_uring_prep_cancel64(get_sqe(s, tag(kCancel, c.fd.get())), tag(kRecv, c.fd.get()),
                                       0);
            }
        }
    }
    if (provided) {
        // Back into the kernel's buffer ring (common/uring): the parser copied what it needs.
        s.bufs.recycle(BufferRing::bid(cqe));
    }
    if (c.gone) {
        close_conn(s, c);  // frees it if this was its last operation
        return;
    }
    if (res == -EINVAL && s.uring.multishot_recv) {
        s.uring.multishot_recv = false;  // a kernel without multishot recv: one SQE per recv
    } else if (res == 0 && !c.wr_shut) {
        c.peer_done = true;  // send what is owed (echo: the rest of the stream), then close
    } else if (res <= 0 && res != -ENOBUFS && res != -ECANCELED) {
        close_conn(s, c);  // after our FIN: the client read our last line and closed; or a reset
        return;
    }
    // -ENOBUFS: the buffer ring ran dry, and buffers are back now. -ECANCELED: we paused it.
    if (!c.recv_armed && !c.paused && !c.peer_done) {
        arm_recv(s, c);
    }
    on_writable(s, c);  // every reply to this recv in one send
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
    c.in.keep_rest();  // the buffer goes back to the kernel: copy the unfinished line
    track_request(s.request_timers, c.request_timer, c.in, line_ended, s.now);
}

// A send completed: the kernel took cqe->res bytes of `sending` (a short send: on_writable
// sends the rest), or failed with -errno.
void on_sent(Server& s, Conn& c, int res) {
    c.send_armed = false;
    if (res < 0 || c.gone) {
        close_conn(s, c);  // EPIPE, ECONNRESET: the client is gone
        return;
    }
    c.out_sent += static_cast<size_t>(res);
    on_writable(s, c);
}

// Hands the kernel what is owed, unless a send is in flight; once all of it is sent, the close
// or the FIN the connection waits for, and the end of a pause.
void on_writable(Server& s, Conn& c) {
    if (c.send_armed || c.gone) {
        return;
    }
    if (c.out_sent == c.sending.size()) {  // the last send is done: the replies since are next
        c.sending.clear();
        c.out_sent = 0;
        std::swap(c.sending, c.out);  // `out` gets the old buffer back, capacity and all
    }
    if (!c.sending.empty()) {
        io_uring_prep_send(get_sqe(s, tag(kSend, c.fd.get())), c.fd.get(),
                           c.sending.data() + c.out_sent, c.sending.size() - c.out_sent,
                           MSG_NOSIGNAL);
        c.send_armed = true;
        return;
    }
    if (c.peer_done) {
        close_conn(s, c);  // the client sent FIN and has every byte we owed it
        return;
    }
    if (!c.paused && c.out.capacity() + c.sending.capacity() > kKeepOut) {
        // Nothing is owed: keep no big buffer. Not at the end of a pause, though: the client
        // that outran its reads sends more at once, and buffers freed and grown again for
        // every 256 KiB it sends cost more than serving its requests.
        std::string().swap(c.out);
        std::string().swap(c.sending);
    }
    if (c.closing && !c.wr_shut) {
        // FIN after our last line; we go on reading (and discarding) until the client closes.
        TRACE_IO("shutdown", c.fd.get(), ::shutdown(c.fd.get(), SHUT_WR));
        c.wr_shut = true;
    }
    if (c.paused && !c.recv_armed) {
        arm_recv(s, c);
    }
    c.paused = false;
}

// ---- the edge cases ----

// QUIT, an over-long line or a timeout: our last line, then the lingering close.
void start_closing(Server& s, Conn& c, std::string_view last_line) {
    c.out += last_line;
    c.closing = true;
    s.idle_timers.cancel(c.idle_timer);
    s.request_timers.cancel(c.request_timer);
    s.linger_timers.arm(c.linger_timer, s.now);
}

// The connection is over. Its operations still in the kernel end once the socket is shut down
// (a recv completes with 0, a send with -EPIPE); the Conn, and with it the descriptor, goes only
// after the last of those CQEs, so that no CQE can name a descriptor number that was reused.
void close_conn(Server& s, Conn& c) {
    if (!c.gone) {
        c.gone = true;
        s.stats.conns.fetch_sub(1, std::memory_order_relaxed);
        s.idle_timers.cancel(c.idle_timer);
        s.request_timers.cancel(c.request_timer);
        s.linger_timers.cancel(c.linger_timer);
        ::shutdown(c.fd.get(), SHUT_RDWR);
    }
    if (!c.recv_armed && !c.send_armed) {
        s.conns[static_cast<size_t>(c.fd.get())].reset();  // ~Fd closes the socket
    }
}

// The deadlines that are due; returns the next one.
std::optional<Clock::time_point> expire_timers(Server& s) {
    while (Conn* c = s.linger_timers.pop_expired(s.now)) {
        close_conn(s, *c);  // it had its time to read our last line
    }
    while (Conn* c = s.idle_timers.pop_expired(s.now)) {
        start_closing(s, *c, kIdleTimeout);
        on_writable(s, *c);
    }
    while (Conn* c = s.request_timers.pop_expired(s.now)) {
        start_closing(s, *c, kRequestTimeout);
        on_writable(s, *c);
    }
    return earliest_deadline(s.idle_timers, s.request_timers, s.linger_timers);
}

// An accept failed. Out of descriptors (EMFILE, ENFILE), the kernel fails it before it looks at
// the backlog, and a new accept would fail at once again: re-arming now would spin. So the spare
// descriptor turns away the clients that wait (common/conn.hpp), and a poll on the listening
// socket says when the next one arrives; only then is the accept armed again.
void on_accept_error(Server& s, int err) {
    if (err == -EINVAL && s.uring.multishot_accept) {
        s.uring.multishot_accept = false;  // a kernel without multishot accept: one SQE each
        arm_accept(s);
        return;
    }
    for (int i = 0; (err == -EMFILE || err == -ENFILE) && i < kAcceptBudget; ++i) {
        // Close the spare, accept, ERR server full, reopen the spare (common/conn.hpp).
        if (!s.spare_fd.refuse_one(s.listen_fd.get(), s.stats)) {
            break;  // the backlog is empty
        }
    }
    if (!s.accept_armed) {
        io_uring_prep_poll_add(get_sqe(s, tag(kListen, s.listen_fd.get())), s.listen_fd.get(),
                               POLLIN);
    }
}

}  // namespace

int main(int argc, char** argv) {
    CommandLine cmd{"07_aio_uring_server",
                    "07_aio_uring: io_uring (liburing), one submit-and-wait per pass"};
    ServerOptions opt = server_defaults(7);
    cmd.add_server_options(opt);
    bool simple = false;
    cmd.add_flag("--simple", simple,
                 "Single-shot accept/recv and a buffer per connection (what old kernels get)");
    if (int rc = cmd.parse(argc, argv); rc >= 0) {
        return rc;
    }
    // The kernel's sends carry MSG_NOSIGNAL; ignoring SIGPIPE as well means no other write (the
    // refusal's, say) can kill the server.
    std::signal(SIGPIPE, SIG_IGN);
    try {
        install_stop_handlers();
        return run(opt, simple);
    } catch (const UringUnavailable& e) {
        return report_unavailable(cmd.name(), e);  // one line on stderr, exit 77
    } catch (const std::exception& e) {
        return report_setup_failure(cmd.name(), e);
    }
}
