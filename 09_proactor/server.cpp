// 09_proactor: the Proactor pattern on io_uring, a true proactor.
//
// The pattern has five parts, and this file names each of them:
//   initiator              initiate_accept/initiate_recv/initiate_send: ask the kernel to do an
//                          IO, with a buffer, and return at once (io_uring_prep_* fills an SQE);
//   asynchronous operation the SQE in flight: the kernel waits for the data AND copies it;
//   completion queue       io_uring's CQ ring, where the kernel posts one CQE per finished step;
//   completion dispatcher  the loop: one io_uring_submit_and_wait per pass, then every CQE is
//                          routed by its tag (user_data) to ...
//   completion handler     on_accept_done/on_recv_done/on_send_done, which run with the bytes
//                          already in our buffer: there is no read left to do, only to use them.
// A reactor (05, 08) is told "you may read now" and then reads; a proactor is told "it is read".
// Both phases of IO (waiting for data, copying it) happen in the kernel, while we do other work.
//
// Who owns a buffer: from the SQE's submission to its CQE a buffer belongs to the kernel. A send's
// bytes (Conn::sending) must not move or change until the CQE; new replies go into Conn::out.
// Receives use provided buffers (a buffer ring, 5.19): the kernel picks a buffer only when data
// arrives, so an idle connection holds none. The CQE names the buffer; it is ours until we
// recycle() it, which we do as soon as the handler has parsed it (LineParser::feed views it,
// copying only a line cut in two). Closing is asynchronous as well: we cancel the connection's
// operations and free its buffers only when the last of its CQEs has come back.
//
// Kernel features, each with a fallback: multishot accept (5.19) and multishot recv (6.0) post
// a CQE per connection or per arrival for one SQE, flagged IORING_CQE_F_MORE while it stays
// armed; without them each completion re-posts a single-shot SQE. Without buffer rings each
// connection recvs into a 16 KiB buffer of its own. A recv that finds the ring empty completes
// with -ENOBUFS and is re-posted after this pass has recycled its buffers.
//
// Limits: one thread runs every handler, so `WORK 2000` stalls every connection (single_loop).
// Backpressure: above 256 KiB of unsent output a connection's recv is cancelled, and re-posted
// below 64 KiB. The CQ holds 4x the SQ, and one pass handles at most 256 CQEs, so a pass rarely
// starts more operations than the SQ holds; when it does (a thousand idle connections timing out
// at once), the full SQ is submitted early. A CQ overflow is kept by the kernel
// (IORING_FEAT_NODROP) and reaped on the next pass.
//
// Run it:    ./build/bin/09_proactor_server                 (listens on 127.0.0.1:9009)
// Talk:      nc 127.0.0.1 9009     or   printf 'PING\nTIME\n' | ./build/bin/09_proactor_client
// Watch:     strace -f -e trace=io_uring_enter,io_uring_setup ./build/bin/09_proactor_server
//            shows one io_uring_enter per pass and no recv or send at all: the kernel does them.
//            --trace prints each enter (how long we waited) and each CQE (what completed).

#include <liburing.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <cassert>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "09_proactor/ring.hpp"
#include "common/net.hpp"
#include "common/options.hpp"
#include "common/qa.hpp"
#include "common/stop.hpp"
#include "common/trace.hpp"

using namespace iolab;
using Clock = std::chrono::steady_clock;

namespace {

constexpr unsigned kRingEntries = 1024;
constexpr unsigned kMaxCqePerPass = 256;
constexpr unsigned kBufCount = 1024;
constexpr unsigned kBufSize = 8192;
constexpr size_t kHighWater = 256 * 1024;
constexpr size_t kLowWater = 64 * 1024;
constexpr auto kDrain = std::chrono::milliseconds(1000);

// The tag carried in user_data from SQE to CQE: which operation, for which connection slot.
enum Op : uint64_t { kAccept, kRecv, kSend, kStop, kTick, kCancel };
uint64_t tag(Op op, uint32_t slot = 0) {
    return (uint64_t{slot} << 8) | op;
}

struct Conn {
    Conn(Fd conn_fd, uint32_t s, size_t max_line)
        : fd(std::move(conn_fd)), slot(s), in(max_line), last_active(Clock::now()) {}
    Fd fd;
    uint32_t slot;
    LineParser in;
    std::string out;      // replies gathered during this pass: ours
    std::string sending;  // the send in flight: the kernel's until its CQE
    size_t sent = 0;      // bytes of `sending` already sent (a short send resubmits the rest)
    bool recv_armed = false, recv_cancelled = false, send_armed = false;
    bool peer_closed = false;       // recv completed with 0: the client shut down its side
    bool close_after_send = false;  // QUIT or idle timeout: close once the output is gone
    bool shut_after_send = false;   // over-long line: shutdown(SHUT_WR) once the ERR is gone
    bool draining = false;          // ... then discard input until EOF or drain_deadline
    bool idle_warned = false;
    bool closing = false;  // operations cancelled; freed when the last CQE returns
    bool dirty = false;    // touched this pass: initiate_next() runs at the end of it
    Clock::time_point last_active, drain_deadline;
    std::unique_ptr<char[]> own_buf;  // only without provided buffers
};

ServerOptions opt = server_defaults(9);
ServerStats stats("09_proactor");
io_uring ring;
proactor::BufferRing bufs;
bool multishot_accept = true, multishot_recv = true;
uint64_t enobufs = 0, short_sends = 0;  // for STATS: how often the two fallbacks ran
bool running = true, accept_armed = false, accept_paused = false;
bool tick_armed = false, tick_wanted = false;  // a drain or a paused accept wants the timer
Fd listen_fd;
std::vector<std::unique_ptr<Conn>> conns;  // indexed by slot; a slot is reused once freed
std::vector<uint32_t> free_slots;
std::vector<uint32_t> dirty;

// Every initiator takes an SQE here. Should this pass have filled the SQ, hand the kernel what
// is there (an extra io_uring_enter) to make room.
io_uring_sqe* get_sqe(uint64_t user_data) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring);
    if (sqe == nullptr) {
        trace::count();
        io_uring_submit(&ring);
        sqe = io_uring_get_sqe(&ring);
    }
    if (sqe == nullptr) {
        std::fprintf(stderr, "09_proactor_server: submission queue full\n");
        std::abort();
    }
    io_uring_sqe_set_data64(sqe, user_data);
    return sqe;
}

void mark_dirty(Conn& c) {
    if (!c.dirty) {
        c.dirty = true;
        dirty.push_back(c.slot);
    }
}

// ---- initiators: start an asynchronous operation and return at once ----

void initiate_accept() {
    io_uring_sqe* sqe = get_sqe(tag(kAccept));
    if (multishot_accept) {
        io_uring_prep_multishot_accept(sqe, listen_fd.get(), nullptr, nullptr, SOCK_CLOEXEC);
    } else {
        io_uring_prep_accept(sqe, listen_fd.get(), nullptr, nullptr, SOCK_CLOEXEC);
    }
    accept_armed = true;
}

void initiate_recv(Conn& c) {
    io_uring_sqe* sqe = get_sqe(tag(kRecv, c.slot));
    if (bufs.active()) {
        // No buffer named: the kernel takes one from group kGroup when data arrives.
        if (multishot_recv) {
            io_uring_prep_recv_multishot(sqe, c.fd.get(), nullptr, 0, 0);
        } else {
            io_uring_prep_recv(sqe, c.fd.get(), nullptr, 0, 0);
        }
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = proactor::BufferRing::kGroup;
    } else {
        if (!c.own_buf) {
            c.own_buf = std::make_unique<char[]>(16384);
        }
        io_uring_prep_recv(sqe, c.fd.get(), c.own_buf.get(), 16384, 0);
    }
    c.recv_armed = true;
    c.recv_cancelled = false;
}

// One send per connection per pass carries every reply the pass produced.
void initiate_send(Conn& c) {
    if (c.sent == c.sending.size()) {
        c.sending.clear();
        c.sent = 0;
        std::swap(c.sending, c.out);  // `out` gets the old buffer back, capacity and all
    }
    io_uring_sqe* sqe = get_sqe(tag(kSend, c.slot));
    io_uring_prep_send(sqe, c.fd.get(), c.sending.data() + c.sent, c.sending.size() - c.sent,
                       MSG_NOSIGNAL);
    c.send_armed = true;
}

void initiate_cancel(uint64_t user_data) {
    io_uring_prep_cancel64(get_sqe(tag(kCancel)), user_data, 0);
}

void initiate_tick() {
    static __kernel_timespec ts{0, 100'000'000};  // copied by the kernel at submission
    io_uring_prep_timeout(get_sqe(tag(kTick)), &ts, 0, 0);
    tick_armed = true;
}

// Closing is asynchronous too: cancel what is in flight, free the connection (its fd and its
// buffers) only when no operation of it is left in the kernel.
void close_conn(Conn& c) {
    if (!c.closing) {
        c.closing = true;
        stats.conns.fetch_sub(1, std::memory_order_relaxed);
        if (c.recv_armed && !c.recv_cancelled) {
            initiate_cancel(tag(kRecv, c.slot));
        }
        if (c.send_armed) {
            initiate_cancel(tag(kSend, c.slot));
        }
    }
    if (!c.recv_armed && !c.send_armed) {
        free_slots.push_back(c.slot);
        conns[c.slot].reset();
    }
}

// After a pass: send what the pass produced, finish a close, and keep one recv posted while
// the connection wants input and its output is below the high-water mark.
void initiate_next(Conn& c) {
    c.dirty = false;
    if (c.closing) {
        return;
    }
    size_t pending = c.out.size() + c.sending.size() - c.sent;
    if (!c.send_armed && pending > 0) {
        initiate_send(c);
    } else if (!c.send_armed) {
        if (c.shut_after_send) {
            // FIN after the ERR line; the client can read it before we close.
            TRACE_IO("shutdown", c.fd.get(), ::shutdown(c.fd.get(), SHUT_WR));
            c.shut_after_send = false;
            c.drain_deadline = Clock::now() + kDrain;
        }
        if (c.close_after_send || c.peer_closed) {
            close_conn(c);
            return;
        }
    }
    bool want_input = !c.peer_closed && !c.close_after_send;
    if (want_input && !c.recv_armed && pending < kLowWater) {
        initiate_recv(c);
    } else if (c.recv_armed && !c.recv_cancelled && (!want_input || pending > kHighWater)) {
        initiate_cancel(tag(kRecv, c.slot));  // its last CQE says -ECANCELED
        c.recv_cancelled = true;
    }
}

// ---- completion handlers: the IO is done, the data is in the buffer ----

void on_accept_done(io_uring_cqe* cqe) {
    if (!(cqe->flags & IORING_CQE_F_MORE)) {
        accept_armed = false;
    }
    int conn_fd = cqe->res;
    if (conn_fd < 0) {
        if (conn_fd == -EINVAL && multishot_accept) {
            multishot_accept = false;  // kernel before 5.19
        } else if (conn_fd == -EMFILE || conn_fd == -ENFILE || conn_fd == -ENOMEM) {
            // Out of descriptors. Accepting again at once would fail again at once: pause
            // until the next tick instead of spinning.
            if (accept_armed) {
                initiate_cancel(tag(kAccept));
            }
            accept_paused = tick_wanted = true;
        }
        if (!accept_armed && !accept_paused && running) {
            initiate_accept();
        }
        return;
    }
    if (!accept_armed && running) {
        initiate_accept();
    }
    Fd fd(conn_fd);
    stats.accepted.fetch_add(1, std::memory_order_relaxed);
    if (stats.conns.load(std::memory_order_relaxed) >= static_cast<uint64_t>(opt.max_conns)) {
        // A new socket's send buffer is empty, so this small send cannot block.
        TRACE_IO(
            "send", fd.get(),
            ::send(fd.get(), kServerFull.data(), kServerFull.size(), MSG_DONTWAIT | MSG_NOSIGNAL));
        stats.refused.fetch_add(1, std::memory_order_relaxed);
        return;
    }
    set_nodelay(fd.get());
    uint32_t slot = static_cast<uint32_t>(conns.size());
    if (!free_slots.empty()) {
        slot = free_slots.back();
        free_slots.pop_back();
    } else {
        conns.emplace_back();
    }
    conns[slot] = std::make_unique<Conn>(std::move(fd), slot, opt.max_line);
    stats.conns.fetch_add(1, std::memory_order_relaxed);
    mark_dirty(*conns[slot]);
}

// The only thread is about to block in a WORK. Hand the kernel the replies this pass has already
// produced first, so that only requests arriving during the WORK wait for it (not also the
// replies that happened to be dispatched before it in the same batch of completions).
void submit_before_blocking(Conn& c) {
    mark_dirty(c);
    for (size_t i = 0; i < dirty.size(); ++i) {
        if (Conn* d = conns[dirty[i]].get(); d != nullptr && d->dirty) {
            initiate_next(*d);
        }
    }
    dirty.clear();
    trace::count();
    io_uring_submit(&ring);
    mark_dirty(c);
}

// The request handler: runs on bytes the kernel has already copied for us.
void on_data(Conn& c, std::string_view data) {
    if (opt.idle_timeout > 0) {
        c.last_active = Clock::now();
        c.idle_warned = false;
    }
    if (c.draining || c.close_after_send) {
        return;
    }
    if (opt.mode == Mode::echo) {
        c.out.append(data);
        return;
    }
    c.in.feed(data);
    while (auto line = c.in.next()) {
        Request req = parse_request(*line);
        if (req.verb == Verb::work) {
            submit_before_blocking(c);
            if (!block_for_work(req.work_ms)) {
                return;  // stopping; the loop ends after this pass
            }
        }
        append_reply(c.out, req, stats);
        stats.requests.fetch_add(1, std::memory_order_relaxed);
        if (req.verb == Verb::quit) {
            c.close_after_send = true;
            return;
        }
    }
    if (c.in.too_long()) {
        c.out += too_long_reply(opt.max_line);
        c.draining = c.shut_after_send = true;
        tick_wanted = true;
        c.drain_deadline = Clock::now() + kDrain + kDrain;  // reset once the FIN is out
    }
}

void on_recv_done(Conn& c, io_uring_cqe* cqe) {
    if (!(cqe->flags & IORING_CQE_F_MORE)) {
        c.recv_armed = false;
    }
    int res = cqe->res;
    if (res > 0) {
        if (cqe->flags & IORING_CQE_F_BUFFER) {
            unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
            if (!c.closing) {
                on_data(c, std::string_view(bufs.data(bid), static_cast<size_t>(res)));
            }
            bufs.recycle(bid);  // the parser kept what it still needs; the kernel may refill it
        } else if (!c.closing) {
            on_data(c, std::string_view(c.own_buf.get(), static_cast<size_t>(res)));
        }
    }
    if (c.closing) {
        close_conn(c);
        return;
    }
    if (res == 0) {
        c.peer_closed = true;  // send what is left, then close
    } else if (res == -EINVAL && multishot_recv) {
        multishot_recv = false;  // kernel before 6.0: initiate_next posts a single-shot recv
    } else if (res == -ENOBUFS) {
        ++enobufs;
    } else if (res < 0 && res != -ECANCELED) {
        close_conn(c);  // ECONNRESET and the like: this connection only
        return;
    }
    // -ENOBUFS: every provided buffer was in use. This pass recycles them; initiate_next
    // re-posts the recv. -ECANCELED: backpressure stopped it; initiate_next decides when.
    mark_dirty(c);
}

void on_send_done(Conn& c, io_uring_cqe* cqe) {
    c.send_armed = false;
    if (c.closing || cqe->res < 0) {
        close_conn(c);  // EPIPE, ECONNRESET: the client is gone
        return;
    }
    c.sent += static_cast<size_t>(cqe->res);  // short send: initiate_next sends the rest
    short_sends += c.sent < c.sending.size() ? 1 : 0;
    mark_dirty(c);
}

// Every 100 ms, when a timer is needed: idle connections, over-long-line drains, paused accept.
void on_tick() {
    tick_armed = false;
    tick_wanted = false;
    auto now = Clock::now();
    for (auto& p : conns) {
        if (!p || p->closing) {
            continue;
        }
        Conn& c = *p;
        if (c.draining && now > c.drain_deadline) {
            close_conn(c);
        } else if (c.draining) {
            tick_wanted = true;
        } else if (opt.idle_timeout > 0 &&
                   now - c.last_active > std::chrono::duration<double>(opt.idle_timeout)) {
            if (c.idle_warned) {
                close_conn(c);  // it did not even read the ERR line
                continue;
            }
            c.out += kIdleTimeout;
            c.close_after_send = c.idle_warned = true;
            c.last_active = now;
            mark_dirty(c);
        }
    }
    if (accept_paused) {
        accept_paused = false;
        initiate_accept();
    }
}

void trace_cqe(const char* what, int fd, int res) {
    if (trace::enabled()) {
        trace::record(what, fd, res, trace::Clock::now());
    }
}

// ---- the completion dispatcher: route each CQE by its tag to its handler ----

void dispatch(io_uring_cqe* cqe) {
    uint64_t data = io_uring_cqe_get_data64(cqe);
    uint32_t slot = static_cast<uint32_t>(data >> 8);
    switch (static_cast<Op>(data & 0xff)) {
        case kAccept:
            trace_cqe("cqe_accept", listen_fd.get(), cqe->res);
            on_accept_done(cqe);
            break;
        case kRecv:
            assert(conns[slot] != nullptr);
            trace_cqe("cqe_recv", conns[slot]->fd.get(), cqe->res);
            on_recv_done(*conns[slot], cqe);
            break;
        case kSend:
            assert(conns[slot] != nullptr);
            trace_cqe("cqe_send", conns[slot]->fd.get(), cqe->res);
            on_send_done(*conns[slot], cqe);
            break;
        case kStop:
            running = false;
            break;
        case kTick:
            on_tick();
            break;
        case kCancel:
            break;  // the cancelled operation reports itself with -ECANCELED
        default:
            std::fprintf(stderr, "09_proactor_server: unknown completion tag %llu\n",
                         static_cast<unsigned long long>(data));
            std::abort();
    }
}

void run_loop() {
    uint32_t lost = 0;
    while (running) {
        for (size_t i = 0; i < dirty.size(); ++i) {
            if (Conn* c = conns[dirty[i]].get(); c != nullptr && c->dirty) {
                initiate_next(*c);
            }
        }
        dirty.clear();
        if (!tick_armed && (tick_wanted || opt.idle_timeout > 0)) {
            initiate_tick();
        }
        // The one system call of a pass: hand the kernel every SQE started above, and sleep
        // until at least one operation has completed.
        auto t0 = trace::enabled() ? trace::Clock::now() : trace::Clock::time_point{};
        int rc = io_uring_submit_and_wait(&ring, 1);
        trace::count();
        if (trace::enabled()) {
            trace::record("io_uring_enter", ring.ring_fd, rc, t0);
        }
        if (rc < 0 && rc != -EINTR && rc != -EBUSY && rc != -ETIME) {
            throw std::system_error(-rc, std::generic_category(), "io_uring_submit_and_wait");
        }
        // -EBUSY: completions wait on the kernel's overflow list; reaping makes room for them.
        // Kernels without IORING_FEAT_NODROP drop them instead, and we cannot know which.
        if (*ring.cq.koverflow != lost) {
            lost = *ring.cq.koverflow;
            if (!(ring.features & IORING_FEAT_NODROP)) {
                std::fprintf(stderr, "09_proactor_server: completion queue overflowed\n");
                std::abort();
            }
        }
        unsigned head;
        unsigned n = 0;
        io_uring_cqe* cqe;
        io_uring_for_each_cqe(&ring, head, cqe) {
            dispatch(cqe);
            if (++n == kMaxCqePerPass) {
                break;
            }
        }
        io_uring_cq_advance(&ring, n);
    }
}

int run() {
    unsigned flags = proactor::init_ring(ring, kRingEntries);
    bool have_bufs = bufs.setup(ring, kBufCount, kBufSize);
    stats.extra = [flags, have_bufs] {
        return std::string("defer_taskrun=") + ((flags & IORING_SETUP_DEFER_TASKRUN) ? "1" : "0") +
               " provided_buffers=" + (have_bufs ? "1" : "0") +
               " multishot_recv=" + (multishot_recv ? "1" : "0") +
               " enobufs=" + std::to_string(enobufs) +
               " short_sends=" + std::to_string(short_sends);
    };
    listen_fd = listen_tcp(opt.host, opt.port, SOCK_CLOEXEC);
    // The stop signal is just another completion: a poll on the self-pipe.
    io_uring_prep_poll_add(get_sqe(tag(kStop)), stop_fd(), POLLIN);
    initiate_accept();
    announce_listening(listen_fd.get(), stats.model, opt);
    run_loop();
    // Stop: the kernel cancels what is still in flight when the ring goes; then the sockets close.
    io_uring_queue_exit(&ring);
    conns.clear();
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"09_proactor: a true proactor on io_uring", "09_proactor_server"};
    add_server_options(app, opt);
    if (int rc = parse_command_line(app, argc, argv); rc >= 0) {
        return rc;
    }
    // The kernel sends with MSG_NOSIGNAL for us; the synchronous sends use it too. Ignoring
    // SIGPIPE as well keeps any other write from killing the server.
    std::signal(SIGPIPE, SIG_IGN);
    try {
        install_stop_handlers();
        return run();
    } catch (const proactor::UringRefused& e) {
        std::fprintf(stderr, "09_proactor_server: %s\n", e.what());
        return 77;
    } catch (const std::exception& e) {
        return report_setup_failure(app.get_name(), e);
    }
}
