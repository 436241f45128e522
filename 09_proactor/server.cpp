// 09_proactor: the Proactor pattern on io_uring, a true proactor.
//
// The pattern has five parts, and this file names each of them:
//   initiator              initiate_accept/_recv/_send/_timer: ask the kernel to do an IO, with
//                          a buffer, and return at once (io_uring_prep_* fills an SQE);
//   asynchronous operation the SQE in flight: the kernel waits for the data AND copies it;
//   completion queue       io_uring's CQ ring, where the kernel posts one CQE per finished step;
//   completion dispatcher  the loop: one io_uring_submit_and_wait per pass, then dispatch()
//                          routes every CQE by its tag (user_data) to ...
//   completion handler     on_accept_done/on_recv_done/on_send_done/on_timer_done, which run
//                          with the IO already done: there is no read left, only the bytes.
// A reactor (05, 08) is told "you may read now" and then reads; a proactor is told "it is read".
// The handlers only record what each connection needs next; after the dispatch, initiate_next
// turns that into new operations, so that one pass starts at most one send per connection.
// 07_aio_uring is the same kernel interface written out raw, without the pattern's parts.
//
// Who owns a buffer: from the SQE's submission to its CQE a buffer belongs to the kernel. A send's
// bytes (Conn::sending) must not move or change until the CQE; new replies go into Conn::out.
// Receives use provided buffers (a buffer ring, 5.19): the kernel picks a buffer only when data
// arrives, so an idle connection holds none. The CQE names the buffer; it is ours until we
// recycle() it, right after the handler has parsed it. Closing is asynchronous as well: we
// cancel the connection's operations and free it only when the last of its CQEs has come back.
// A timer is an operation too: one timeout SQE for the earliest deadline, moved earlier in place
// (a timeout update) when a nearer deadline appears.
//
// Kernel features, each with a fallback: multishot accept (5.19) and multishot recv (6.0) post
// a CQE per connection or per arrival for one SQE, flagged IORING_CQE_F_MORE while it stays
// armed; without them each completion re-posts a single-shot SQE. Without buffer rings each
// connection recvs into a 16 KiB buffer of its own. A recv that finds the ring empty completes
// with -ENOBUFS and is re-posted after this pass has recycled its buffers.
//
// Limits: one thread runs every handler, so `WORK 2000` stalls every connection (single_loop).
// Backpressure: above kHighWater (256 KiB) of unsent output a connection's recv is cancelled, and
// re-posted below 64 KiB. One pass dispatches at most 256 CQEs (the read budget: then the
// initiators run, and the next pass takes the rest); the CQ holds 4x the SQ, and a pass that
// fills the SQ anyway submits it early. A CQ overflow is kept by the kernel (IORING_FEAT_NODROP).
//
// Run it:    ./build/bin/09_proactor_server                 (listens on 127.0.0.1:9009)
// Talk:      nc 127.0.0.1 9009     or   printf 'PING\nTIME\n' | ./build/bin/09_proactor_client
// Watch:     strace -f -e trace=io_uring_enter,io_uring_setup ./build/bin/09_proactor_server
//            shows one io_uring_enter per pass and no recv or send at all: the kernel does them.
//            --trace prints each enter (how long we waited) and each CQE (what completed).
//
// The layout, the names and the policies are the same in every model: docs/listings.md.

#include <liburing.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
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

constexpr unsigned kRingEntries = 1024;
constexpr unsigned kMaxCqePerPass = 256;
constexpr unsigned kBufCount = 1024;  // provided buffers, a power of two
constexpr unsigned kBufSize = 8192;
constexpr unsigned kOwnBufSize = 16384;  // per connection, without a buffer ring
constexpr size_t kLowWater = 64 * 1024;  // a recv cancelled at kHighWater is re-posted below this

// The tag carried in user_data from SQE to CQE: which operation, for which connection.
enum Op : uint64_t { kAccept, kListen, kRecv, kSend, kTimer, kCancel, kStop };
uint64_t tag(Op op, int fd = 0) {
    return (static_cast<uint64_t>(fd) << 8) | op;
}

struct Conn {
    Conn(int conn_fd, size_t max_line) : fd(conn_fd), in(max_line) {}
    Fd fd;
    LineParser in;
    std::string out;      // replies gathered during this pass: ours
    std::string sending;  // the send in flight: the kernel's until its CQE
    size_t out_sent = 0;  // bytes of `sending` already sent (a short send resubmits the rest)
    bool peer_done = false, closing = false, wr_shut = false;
    bool recv_armed = false, recv_cancelled = false, send_armed = false;
    bool gone = false;   // close_conn ran: its operations are cancelled, it goes with the last CQE
    bool dirty = false;  // a handler ran for it this pass: initiate_next runs at the end of it
    std::unique_ptr<char[]> own_buf;  // only without provided buffers
    TimerList<Conn>::Entry idle_timer{this}, request_timer{this}, linger_timer{this};
    size_t pending() const { return out.size() + sending.size() - out_sent; }
};

struct Server {
    explicit Server(const ServerOptions& o);
    // A kernel worker tears the ring down, maybe after this process has exited, and until then
    // the accept in flight holds the listening socket open in LISTEN: a server restarted at once
    // on this port would get EADDRINUSE. shutdown(2) takes the socket out of LISTEN first.
    ~Server() {
        if (listen_fd) {
            ::shutdown(listen_fd.get(), SHUT_RDWR);
        }
        io_uring_queue_exit(&ring);  // the kernel cancels what is still in flight
    }
    const ServerOptions& opt;
    ServerStats stats{"09_proactor"};
    io_uring ring{};
    UringFeatures uring;
    BufferRing bufs;
    Fd listen_fd;
    SpareFd spare_fd;                          // given up for a moment at EMFILE
    std::vector<std::unique_ptr<Conn>> conns;  // indexed by conn_fd
    std::vector<int> dirty;                    // the conn_fds a handler ran for this pass
    TimerList<Conn> idle_timers, request_timers, linger_timers;
    Clock::time_point now;         // when the current wait returned
    __kernel_timespec timer_ts{};  // the timer in flight: the earliest deadline, absolute
    Clock::time_point timer_due;
    bool timer_armed = false, accept_armed = false, running = true;
    uint64_t enobufs = 0, short_sends = 0;  // for STATS: how often the two fallbacks ran
};

void initiate_accept(Server& s);
void initiate_next(Server& s, Conn& c);
void initiate_timer(Server& s);
void on_accept_done(Server& s, const io_uring_cqe* cqe);
void on_recv_done(Server& s, Conn& c, const io_uring_cqe* cqe);
void on_send_done(Server& s, Conn& c, int res);
void on_timer_done(Server& s);
void close_conn(Server& s, Conn& c);
io_uring_sqe* get_sqe(Server& s, uint64_t user_data);
void trace_cqe(uint64_t data, int res);

// listing: loop
// The completion dispatcher: each CQE goes to the completion handler its tag names.
void dispatch(Server& s, const io_uring_cqe* cqe) {
    uint64_t data = io_uring_cqe_get_data64(cqe);
    int fd = static_cast<int>(data >> 8);
    trace_cqe(data, cqe->res);
    switch (data & 0xff) {
        case kAccept:
            on_accept_done(s, cqe);
            break;
        case kListen:
            initiate_accept(s);  // a client is waiting again (after EMFILE)
            break;
        case kRecv:
            on_recv_done(s, *s.conns[fd], cqe);
            break;
        case kSend:
            on_send_done(s, *s.conns[fd], cqe->res);
            break;
        case kTimer:
            on_timer_done(s);
            break;
        case kCancel:
            break;  // a cancel or a timer update: the operation it changed reports itself
        case kStop:
            s.running = false;
            break;
        default:
            std::fprintf(stderr, "09_proactor_server: unknown completion tag %llu\n",
                         static_cast<unsigned long long>(data));
            std::abort();
    }
}

int run(const ServerOptions& opt) {
    Server s(opt);  // io_uring_setup with the best flags this kernel takes (common/uring)
    s.listen_fd = listen_tcp(opt.host, opt.port, SOCK_NONBLOCK | SOCK_CLOEXEC);
    initiate_accept(s);
    // The stop signal is just another completion: a poll on the self-pipe.
    io_uring_prep_poll_add(get_sqe(s, tag(kStop)), stop_fd(), POLLIN);
    announce_listening(s.listen_fd.get(), s.stats.model, opt);
    while (s.running) {
        for (int fd : s.dirty) {  // what the last pass's completions call for
            if (Conn* c = s.conns[fd].get(); c != nullptr && c->dirty) {
                initiate_next(s, *c);
            }
        }
        s.dirty.clear();
        initiate_timer(s);
        // The one system call of a pass: hand the kernel every SQE initiated above, and sleep
        // until at least one operation has completed.
        auto t0 = trace::enabled() ? trace::Clock::now() : trace::Clock::time_point{};
        int rc = io_uring_submit_and_wait(&s.ring, 1);
        trace::count();
        if (trace::enabled()) {
            trace::record("io_uring_enter", s.ring.ring_fd, rc, t0);
        }
        // -EBUSY: completions wait on the kernel's overflow list; reaping makes room for them.
        if (rc < 0 && rc != -EINTR && rc != -EBUSY && rc != -ETIME) {
            throw std::system_error(-rc, std::generic_category(), "io_uring_submit_and_wait");
        }
        s.now = Clock::now();
        unsigned head;
        unsigned n = 0;
        io_uring_cqe* cqe;
        io_uring_for_each_cqe(&s.ring, head, cqe) {
            dispatch(s, cqe);
            if (++n == kMaxCqePerPass) {
                break;  // the rest waits for the next pass, after the initiators have run
            }
        }
        io_uring_cq_advance(&s.ring, n);
    }
    return 0;  // ~Server: the ring first, then the sockets
}
// end listing: loop

// ---- the initiators: start an asynchronous operation and return at once ----

// The ring, set up as this kernel allows: common/uring.cpp tries the setup flags from the
// cheapest completion delivery down, and probes for the opcodes named here.
Server::Server(const ServerOptions& o)
    : opt(o),
      uring(init_uring(ring, kRingEntries,
                       {IORING_OP_ACCEPT, IORING_OP_RECV, IORING_OP_SEND, IORING_OP_POLL_ADD,
                        IORING_OP_TIMEOUT, IORING_OP_TIMEOUT_REMOVE, IORING_OP_ASYNC_CANCEL})),
      idle_timers(o.idle_limit()),
      request_timers(o.mode == Mode::qa ? o.request_limit() : Clock::duration::zero()),
      linger_timers(kLinger) {
    // The buffer ring, registered with the kernel and filled (common/uring.cpp).
    if (!bufs.setup(ring, kBufCount, kBufSize)) {
        uring.multishot_recv = false;  // a multishot recv needs provided buffers
    }
    stats.extra = [this] {
        return std::string("defer_taskrun=") + (uring.defer_taskrun() ? "1" : "0") +
               " provided_buffers=" + (bufs.active() ? "1" : "0") +
               " multishot_recv=" + (uring.multishot_recv ? "1" : "0") +
               " enobufs=" + std::to_string(enobufs) +
               " short_sends=" + std::to_string(short_sends);
    };
}

// Every initiator takes an SQE here. Should this pass have filled the SQ, hand the kernel what
// is there (an extra io_uring_enter) to make room.
io_uring_sqe* get_sqe(Server& s, uint64_t user_data) {
    io_uring_sqe* sqe = io_uring_get_sqe(&s.ring);
    if (sqe == nullptr) {
        trace::count();
        io_uring_submit(&s.ring);
        sqe = io_uring_get_sqe(&s.ring);
    }
    if (sqe == nullptr) {
        std::fprintf(stderr, "09_proactor_server: submission queue full\n");
        std::abort();
    }
    io_uring_sqe_set_data64(sqe, user_data);
    return sqe;
}

// --trace: one line per completion, named by its tag ("cqe_recv fd=7 ret=5").
void trace_cqe(uint64_t data, int res) {
    static const char* const names[] = {"cqe_accept", "cqe_listen", "cqe_recv", "cqe_send",
                                        "cqe_timer",  "cqe_cancel", "cqe_stop"};
    if (trace::enabled() && (data & 0xff) <= kStop) {
        trace::record(names[data & 0xff], static_cast<int>(data >> 8), res, trace::Clock::now());
    }
}

void initiate_accept(Server& s) {
    io_uring_sqe* sqe = get_sqe(s, tag(kAccept));
    if (s.uring.multishot_accept) {
        io_uring_prep_multishot_accept(sqe, s.listen_fd.get(), nullptr, nullptr, SOCK_CLOEXEC);
    } else {
        io_uring_prep_accept(sqe, s.listen_fd.get(), nullptr, nullptr, SOCK_CLOEXEC);
    }
    s.accept_armed = true;
}

void initiate_recv(Server& s, Conn& c) {
    io_uring_sqe* sqe = get_sqe(s, tag(kRecv, c.fd.get()));
    if (s.bufs.active()) {
        // No buffer named: the kernel takes one from the group when data arrives.
        if (s.uring.multishot_recv) {
            io_uring_prep_recv_multishot(sqe, c.fd.get(), nullptr, 0, 0);
        } else {
            io_uring_prep_recv(sqe, c.fd.get(), nullptr, 0, 0);
        }
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = BufferRing::kGroup;
    } else {
        if (!c.own_buf) {
            c.own_buf = std::make_unique<char[]>(kOwnBufSize);
        }
        io_uring_prep_recv(sqe, c.fd.get(), c.own_buf.get(), kOwnBufSize, 0);
    }
    c.recv_armed = true;
    c.recv_cancelled = false;
}

// One send per connection per pass carries every reply the pass produced.
void initiate_send(Server& s, Conn& c) {
    if (c.out_sent == c.sending.size()) {
        c.sending.clear();
        c.out_sent = 0;
        std::swap(c.sending, c.out);  // `out` gets the old buffer back, capacity and all
    }
    io_uring_prep_send(get_sqe(s, tag(kSend, c.fd.get())), c.fd.get(),
                       c.sending.data() + c.out_sent, c.sending.size() - c.out_sent, MSG_NOSIGNAL);
    c.send_armed = true;
}

void initiate_cancel(Server& s, uint64_t user_data) {
    io_uring_prep_cancel64(get_sqe(s, tag(kCancel)), user_data, 0);
}

// One timeout in flight, for the earliest deadline of the three lists, as an absolute time on
// CLOCK_MONOTONIC (the clock steady_clock reads). A nearer deadline moves it in place.
void initiate_timer(Server& s) {
    auto next = earliest_deadline(s.idle_timers, s.request_timers, s.linger_timers);
    if (!next || (s.timer_armed && *next >= s.timer_due)) {
        return;
    }
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(next->time_since_epoch());
    s.timer_ts.tv_sec = ns.count() / 1'000'000'000;
    s.timer_ts.tv_nsec = ns.count() % 1'000'000'000;  // the kernel copies it at submission
    if (s.timer_armed) {
        io_uring_prep_timeout_update(get_sqe(s, tag(kCancel)), &s.timer_ts, tag(kTimer),
                                     IORING_TIMEOUT_ABS);
    } else {
        io_uring_prep_timeout(get_sqe(s, tag(kTimer)), &s.timer_ts, 0, IORING_TIMEOUT_ABS);
    }
    s.timer_armed = true;
    s.timer_due = *next;
}

void mark_dirty(Server& s, Conn& c) {
    if (!c.dirty) {
        c.dirty = true;
        s.dirty.push_back(c.fd.get());
    }
}

// After a pass: send what the pass produced, finish a close, and keep one recv posted while
// the connection wants input and its output is below the high-water mark.
void initiate_next(Server& s, Conn& c) {
    c.dirty = false;
    if (c.gone) {
        return;
    }
    size_t pending = c.pending();
    if (!c.send_armed && pending > 0) {
        initiate_send(s, c);
    } else if (!c.send_armed) {
        if (c.peer_done) {
            close_conn(s, c);  // the client sent FIN and has every byte we owed it
            return;
        }
        if (c.recv_armed && !c.recv_cancelled &&
            c.out.capacity() + c.sending.capacity() > kKeepOut) {
            std::string().swap(c.out);  // nothing owed and no backpressure: no big buffer kept
            std::string().swap(c.sending);
            c.out_sent = 0;
        }
        if (c.closing && !c.wr_shut) {
            // FIN after our last line; input is discarded until the client closes too.
            TRACE_IO("shutdown", c.fd.get(), ::shutdown(c.fd.get(), SHUT_WR));
            c.wr_shut = true;
        }
    }
    if (!c.peer_done && !c.recv_armed && pending < kLowWater) {
        initiate_recv(s, c);
    } else if (c.recv_armed && !c.recv_cancelled && pending > kHighWater) {
        initiate_cancel(s, tag(kRecv, c.fd.get()));  // its last CQE says -ECANCELED
        c.recv_cancelled = true;
    }
}

// ---- the completion handlers: the IO is done, the data is in the buffer ----

void on_accept_error(Server& s, int err);

void on_accept_done(Server& s, const io_uring_cqe* cqe) {
    s.accept_armed = (cqe->flags & IORING_CQE_F_MORE) != 0;
    int conn_fd = cqe->res;
    if (conn_fd < 0) {
        on_accept_error(s, conn_fd);
        return;
    }
    if (!s.accept_armed && s.running) {
        initiate_accept(s);
    }
    if (s.stats.conns.load(std::memory_order_relaxed) >= static_cast<uint64_t>(s.opt.max_conns)) {
        refuse(s.stats, conn_fd);  // ERR server full, then a close that keeps it (common/conn.hpp)
        return;
    }
    set_nodelay(conn_fd);
    auto c = std::make_unique<Conn>(conn_fd, s.opt.max_line);
    s.idle_timers.arm(c->idle_timer, s.now);
    if (s.conns.size() <= static_cast<size_t>(conn_fd)) {
        s.conns.resize(static_cast<size_t>(conn_fd) + 1);
    }
    mark_dirty(s, *c);  // initiate_next posts its first recv
    s.conns[static_cast<size_t>(conn_fd)] = std::move(c);
    s.stats.accepted.fetch_add(1, std::memory_order_relaxed);
    s.stats.conns.fetch_add(1, std::memory_order_relaxed);
}

// The only thread is about to block in a WORK. Hand the kernel the replies this pass has already
// produced first, so that only requests arriving during the WORK wait for it (not also the
// replies that happened to be dispatched before it in the same batch of completions).
void submit_before_blocking(Server& s, Conn& c) {
    mark_dirty(s, c);
    for (int fd : s.dirty) {
        if (Conn* d = s.conns[fd].get(); d != nullptr && d->dirty) {
            initiate_next(s, *d);
        }
    }
    s.dirty.clear();
    trace::count();
    io_uring_submit(&s.ring);
    mark_dirty(s, c);
}

void start_closing(Server& s, Conn& c, std::string_view last_line);

// The request handler: answers every complete line of bytes the kernel has already copied for us.
void answer(Server& s, Conn& c, std::string_view data) {
    bool line_ended = false;
    c.in.feed(data);
    while (auto line = c.in.next()) {
        line_ended = true;
        Request req = parse_request(*line);
        if (req.verb == Verb::work) {
            submit_before_blocking(s, c);
            if (!block_for_work(req.work_ms)) {
                return;  // stopping; the loop ends after this pass
            }
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

void on_recv_done(Server& s, Conn& c, const io_uring_cqe* cqe) {
    c.recv_armed = (cqe->flags & IORING_CQE_F_MORE) != 0;
    int res = cqe->res;
    bool provided = (cqe->flags & IORING_CQE_F_BUFFER) != 0;
    if (res > 0 && !c.gone && !c.closing) {
        std::string_view data(provided ? s.bufs.data(BufferRing::bid(cqe)) : c.own_buf.get(),
                              static_cast<size_t>(res));
        s.idle_timers.arm(c.idle_timer, s.now);
        if (s.opt.mode == Mode::echo) {
            c.out.append(data);
        } else {
            answer(s, c, data);
        }
    }
    if (provided) {
        // Back into the kernel's buffer ring (common/uring): the parser kept what it needs, and
        // the kernel may refill the buffer with any connection's data from now on.
        s.bufs.recycle(BufferRing::bid(cqe));
    }
    if (c.gone) {
        close_conn(s, c);
        return;
    }
    if (res == 0 && c.wr_shut) {
        close_conn(s, c);  // after our FIN: the client read our last line and closed
        return;
    }
    if (res == 0) {
        c.peer_done = true;  // send what is left, then close
    } else if (res == -EINVAL && s.uring.multishot_recv) {
        s.uring.multishot_recv =
            false;  // kernel before 6.0: initiate_next posts a single-shot recv
    } else if (res == -ENOBUFS) {
        ++s.enobufs;  // every provided buffer was in use; this pass recycles them
    } else if (res < 0 && res != -ECANCELED) {
        close_conn(s, c);  // ECONNRESET and the like: this connection only
        return;
    }
    // -ECANCELED: backpressure stopped it; initiate_next decides when to post the next one.
    mark_dirty(s, c);
}

void on_send_done(Server& s, Conn& c, int res) {
    c.send_armed = false;
    if (c.gone || res < 0) {
        close_conn(s, c);  // EPIPE, ECONNRESET: the client is gone
        return;
    }
    c.out_sent += static_cast<size_t>(res);  // short send: initiate_next sends the rest
    s.short_sends += c.out_sent < c.sending.size() ? 1 : 0;
    mark_dirty(s, c);
}

std::optional<Clock::time_point> expire_timers(Server& s);

// The timeout completed (-ETIME): the earliest deadline has come.
void on_timer_done(Server& s) {
    s.timer_armed = false;
    expire_timers(s);
}

// ---- the edge cases ----

// QUIT, an over-long line or a timeout: our last line, then the lingering close.
void start_closing(Server& s, Conn& c, std::string_view last_line) {
    c.out += last_line;
    c.closing = true;
    s.idle_timers.cancel(c.idle_timer);
    s.request_timers.cancel(c.request_timer);
    s.linger_timers.arm(c.linger_timer, s.now);
    mark_dirty(s, c);
}

// Closing is asynchronous too: cancel what is in flight, and free the connection (its fd and its
// buffers) only when no operation of it is left in the kernel.
void close_conn(Server& s, Conn& c) {
    if (!c.gone) {
        c.gone = true;
        s.stats.conns.fetch_sub(1, std::memory_order_relaxed);
        s.idle_timers.cancel(c.idle_timer);
        s.request_timers.cancel(c.request_timer);
        s.linger_timers.cancel(c.linger_timer);
        if (c.recv_armed && !c.recv_cancelled) {
            initiate_cancel(s, tag(kRecv, c.fd.get()));
        }
        if (c.send_armed) {
            initiate_cancel(s, tag(kSend, c.fd.get()));
        }
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
    }
    while (Conn* c = s.request_timers.pop_expired(s.now)) {
        start_closing(s, *c, kRequestTimeout);
    }
    return earliest_deadline(s.idle_timers, s.request_timers, s.linger_timers);
}

// An accept failed. Out of descriptors (EMFILE, ENFILE), the kernel fails it before it looks at
// the backlog, and a new accept would fail at once again: re-initiating now would spin. So the
// spare descriptor turns away the clients that wait (common/conn.hpp), and a poll on the
// listening socket completes when the next one arrives; only then is the accept initiated again.
void on_accept_error(Server& s, int err) {
    if (err == -EINVAL && s.uring.multishot_accept) {
        s.uring.multishot_accept = false;  // kernel before 5.19: one accept per SQE
        initiate_accept(s);
        return;
    }
    for (int i = 0; (err == -EMFILE || err == -ENFILE) && i < kAcceptBudget; ++i) {
        // Close the spare, accept, ERR server full, reopen the spare (common/conn.hpp).
        if (!s.spare_fd.refuse_one(s.listen_fd.get(), s.stats)) {
            break;  // the backlog is empty
        }
    }
    if (!s.accept_armed && s.running) {
        io_uring_prep_poll_add(get_sqe(s, tag(kListen)), s.listen_fd.get(), POLLIN);
    }
}

}  // namespace

int main(int argc, char** argv) {
    CommandLine cmd{"09_proactor_server", "09_proactor: a true proactor on io_uring"};
    ServerOptions opt = server_defaults(9);
    cmd.add_server_options(opt);
    if (int rc = cmd.parse(argc, argv); rc >= 0) {
        return rc;
    }
    // The kernel sends with MSG_NOSIGNAL for us; the refusal's send uses it too. Ignoring
    // SIGPIPE as well keeps any other write from killing the server.
    std::signal(SIGPIPE, SIG_IGN);
    try {
        install_stop_handlers();
        return run(opt);
    } catch (const UringUnavailable& e) {
        return report_unavailable(cmd.name(), e);  // one line on stderr, exit 77
    } catch (const std::exception& e) {
        return report_setup_failure(cmd.name(), e);
    }
}
