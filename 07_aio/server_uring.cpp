// 07_aio_uring: io_uring, the kernel's own asynchronous IO, through liburing.
//
// The model: two rings shared between us and the kernel. We write requests into the submission
// queue (an SQE: "accept on this socket", "receive on that one", "send these bytes") and the
// kernel writes one completion (a CQE: the result, and the user_data we attached) into the
// completion queue when each is done. Unlike glibc's POSIX AIO there is no helper thread: a recv
// on a socket with no data parks on the socket's wait queue inside the kernel, and when the bytes
// arrive the kernel copies them itself, as work queued for our thread that it runs inside our
// io_uring_enter. Our code never calls recv: both phases are over when we see the CQE.
//
// The loop is one call per pass, io_uring_submit_and_wait(2): submit every SQE prepared since
// the last pass and sleep until at least one CQE is there; then handle every CQE, and each
// completion starts the next operation (an accept arms a recv, a recv's replies start a send, a
// short send resubmits the rest).
//
// What the kernel guarantees, and what that asks of us:
//   - A buffer belongs to the kernel from submission until its CQE: `sending` is never touched
//     while its send is in flight; new replies collect in `out` meanwhile.
//   - Multishot accept and recv (5.19/6.0): one SQE keeps producing CQEs while IORING_CQE_F_MORE
//     is set; a CQE without it means the operation ended and must be re-armed if still wanted.
//   - Provided buffers (a buffer ring, 5.19): the kernel picks a buffer for each recv when data
//     arrives, so an idle connection holds no buffer at all. We parse straight out of it (no copy
//     unless a line straddles two receives) and hand it back at the end of the pass. If the ring
//     runs dry, the recv ends with -ENOBUFS and is re-armed once buffers have come back.
//   - The completion queue can fill up. With IORING_FEAT_NODROP the kernel keeps the overflow and
//     hands it over on the next io_uring_enter; we also size the CQ at 4x the SQ.
//   - Older kernels: the probe and the first CQEs tell us what is missing (-EINVAL for multishot)
//     and we fall back to single-shot accept/recv and one buffer per connection (--simple forces
//     that path, to compare). Where io_uring_setup is refused altogether (seccomp in containers,
//     kernel.io_uring_disabled), the server says so and exits 77.
//
// Limits: WORK runs on the loop's only thread and stalls everyone (single_loop); one core.
//
// Run it:    ./build/bin/07_aio_uring_server          (listens on 127.0.0.1:9007)
// Talk:      nc 127.0.0.1 9007      then PING, ECHO hi, STATS, QUIT
// Watch:     strace -f ./build/bin/07_aio_uring_server shows almost nothing but io_uring_enter:
//            accept, recv and send never appear as syscalls. --trace prints each io_uring_enter
//            and each completion ("cqe_recv fd=7 ret=5").

#include <liburing.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include <cassert>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include "common/net.hpp"
#include "common/options.hpp"
#include "common/qa.hpp"
#include "common/stop.hpp"
#include "common/trace.hpp"

using namespace iolab;

namespace {

using Clock = std::chrono::steady_clock;

constexpr unsigned kSqEntries = 4096;
constexpr unsigned kBufCount = 512;  // provided buffers, a power of two
constexpr unsigned kBufSize = 8192;
constexpr int kBufGroup = 0;
constexpr size_t kHighWater = 256 * 1024;  // unsent bytes past which we stop receiving
constexpr auto kDrainTime = std::chrono::seconds(1);
constexpr long long kTickNs = 100'000'000;

// What an SQE was for, kept in its user_data with the fd: (fd << 8) | kind.
enum Kind : uint64_t { kAccept = 1, kRecv, kSend, kRefuse, kStop, kTick, kCancel };
uint64_t tag(Kind kind, int fd) {
    return (static_cast<uint64_t>(fd) << 8) | kind;
}

// The machine refuses io_uring: exit 77, not 1.
struct Refused : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// open: serving. closing: send what is left, then shut down our side and drain.
// draining: discard input until EOF or the deadline, so that close(2) sends FIN, not RST.
// dead: shut down; waits for its last CQEs before the socket is closed and the slot freed.
enum class State { open, closing, draining, dead };

struct Conn {
    Fd fd;
    LineParser in;
    State state = State::open;
    std::string out;      // replies waiting for the next send
    std::string sending;  // the bytes the kernel owns while a send is in flight
    size_t sent = 0;
    bool recv_armed = false;
    bool send_armed = false;
    bool paused = false;          // too much unsent: no recv until it drains
    bool peer_done = false;       // the client shut down its side: send what is left, then close
    bool dirty = false;           // has new replies; sent at the end of this pass
    std::unique_ptr<char[]> buf;  // without provided buffers: this connection's own
    Clock::time_point deadline = Clock::time_point::max();
    Conn(int fd, size_t max_line) : fd(fd), in(max_line) {}
};

struct Server {
    ServerOptions opt;
    bool simple = false;
    io_uring ring{};
    Fd listen_fd;
    std::vector<std::unique_ptr<Conn>> conns;  // indexed by fd
    std::vector<int> dirty;
    // Provided buffers: the ring the kernel takes them from, and the memory they point into.
    io_uring_buf_ring* br = nullptr;
    char* bufs = nullptr;
    int returned = 0;  // buffers handed back during this pass
    bool multishot_accept = true;
    bool multishot_recv = true;
    bool accept_armed = false;
    bool tick_armed = false;
    bool stopping = false;
    ServerStats stats{"07_aio_uring"};
};

// An SQE to fill. The SQ is large, but if it is full, submit what is there to make room: the
// only place a pass submits twice.
io_uring_sqe* get_sqe(Server& s) {
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
    return sqe;
}

void arm_accept(Server& s) {
    io_uring_sqe* sqe = get_sqe(s);
    if (s.multishot_accept) {
        io_uring_prep_multishot_accept(sqe, s.listen_fd.get(), nullptr, nullptr, SOCK_CLOEXEC);
    } else {
        io_uring_prep_accept(sqe, s.listen_fd.get(), nullptr, nullptr, SOCK_CLOEXEC);
    }
    io_uring_sqe_set_data64(sqe, tag(kAccept, s.listen_fd.get()));
    s.accept_armed = true;
}

void arm_recv(Server& s, Conn& c) {
    io_uring_sqe* sqe = get_sqe(s);
    int fd = c.fd.get();
    if (s.br != nullptr) {
        // No buffer named: the kernel takes one from group kBufGroup when data arrives.
        if (s.multishot_recv) {
            io_uring_prep_recv_multishot(sqe, fd, nullptr, 0, 0);
        } else {
            io_uring_prep_recv(sqe, fd, nullptr, kBufSize, 0);
        }
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = kBufGroup;
    } else {
        if (!c.buf) {
            c.buf = std::make_unique<char[]>(kBufSize);
        }
        io_uring_prep_recv(sqe, fd, c.buf.get(), kBufSize, 0);
    }
    io_uring_sqe_set_data64(sqe, tag(kRecv, fd));
    c.recv_armed = true;
}

void arm_send(Server& s, Conn& c) {
    io_uring_sqe* sqe = get_sqe(s);
    io_uring_prep_send(sqe, c.fd.get(), c.sending.data() + c.sent, c.sending.size() - c.sent,
                       MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, tag(kSend, c.fd.get()));
    c.send_armed = true;
}

void arm_tick(Server& s) {
    static __kernel_timespec ts{0, kTickNs};  // read by the kernel at submission
    io_uring_sqe* sqe = get_sqe(s);
    io_uring_prep_timeout(sqe, &ts, 0, 0);
    io_uring_sqe_set_data64(sqe, tag(kTick, 0));
    s.tick_armed = true;
}

// Ends a connection. Operations still in flight complete once the socket is shut down (recv
// with 0, send with -EPIPE); the slot and the descriptor go only after the last of them, so that
// no CQE can arrive for a descriptor number that was reused.
void close_conn(Server& s, Conn& c) {
    if (c.state != State::dead) {
        c.state = State::dead;
        ::shutdown(c.fd.get(), SHUT_RDWR);
    }
    if (!c.recv_armed && !c.send_armed) {
        s.conns[c.fd.get()].reset();
        s.stats.conns.fetch_sub(1, std::memory_order_relaxed);
    }
}

void mark_dirty(Server& s, Conn& c) {
    if (!c.dirty) {
        c.dirty = true;
        s.dirty.push_back(c.fd.get());
    }
}

// Answers every complete line of one receive (at most kBufSize bytes, so the replies are
// bounded too: the high-water check in on_data then stops further receives).
void answer(Server& s, Conn& c) {
    while (auto line = c.in.next()) {
        Request req = parse_request(*line);
        if (req.verb == Verb::work && !block_for_work(req.work_ms)) {
            return;
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
    }
}

// Starts a send if none is in flight, and decides what happens once everything is sent.
void flush(Server& s, Conn& c) {
    if (c.send_armed || c.state == State::dead) {
        return;
    }
    if (!c.out.empty()) {
        c.sending.swap(c.out);
        c.out.clear();
        c.sent = 0;
        arm_send(s, c);
        return;
    }
    if (c.state == State::closing) {
        // FIN after our last line, then read and discard what the client still sends.
        ::shutdown(c.fd.get(), SHUT_WR);
        c.state = State::draining;
        c.deadline = Clock::now() + kDrainTime;
        if (!s.tick_armed) {
            arm_tick(s);
        }
    }
    if (c.peer_done) {
        close_conn(s, c);
        return;
    }
    c.paused = false;
    if (!c.recv_armed) {
        arm_recv(s, c);
    }
}

Clock::time_point idle_deadline(const Server& s) {
    if (s.opt.idle_timeout <= 0) {
        return Clock::time_point::max();
    }
    return Clock::now() + std::chrono::duration_cast<Clock::duration>(
                              std::chrono::duration<double>(s.opt.idle_timeout));
}

void on_accept(Server& s, const io_uring_cqe* cqe) {
    if (!(cqe->flags & IORING_CQE_F_MORE)) {
        s.accept_armed = false;  // single-shot, or the multishot accept ended
    }
    int conn_fd = cqe->res;
    if (conn_fd < 0) {
        if (conn_fd == -EINVAL && s.multishot_accept) {
            s.multishot_accept = false;  // a kernel before 5.19: one accept per SQE
        }
        // -EMFILE/-ENFILE: re-arm on the next tick rather than spin on a call that keeps failing.
        if (conn_fd == -EMFILE || conn_fd == -ENFILE) {
            if (!s.tick_armed) {
                arm_tick(s);
            }
        } else if (!s.accept_armed) {
            arm_accept(s);
        }
        return;
    }
    if (!s.accept_armed) {
        arm_accept(s);
    }
    if (s.stats.conns.load(std::memory_order_relaxed) >= static_cast<uint64_t>(s.opt.max_conns)) {
        // One line into the fresh socket's empty send buffer, then close on its CQE.
        io_uring_sqe* sqe = get_sqe(s);
        io_uring_prep_send(sqe, conn_fd, kServerFull.data(), kServerFull.size(), MSG_NOSIGNAL);
        io_uring_sqe_set_data64(sqe, tag(kRefuse, conn_fd));
        s.stats.refused.fetch_add(1, std::memory_order_relaxed);
        return;
    }
    s.stats.accepted.fetch_add(1, std::memory_order_relaxed);
    s.stats.conns.fetch_add(1, std::memory_order_relaxed);
    set_nodelay(conn_fd);
    if (static_cast<size_t>(conn_fd) >= s.conns.size()) {
        s.conns.resize(static_cast<size_t>(conn_fd) + 1);
    }
    s.conns[conn_fd] = std::make_unique<Conn>(conn_fd, s.opt.max_line);
    s.conns[conn_fd]->deadline = idle_deadline(s);
    arm_recv(s, *s.conns[conn_fd]);
}

// Data is in `data` already: the kernel copied it there, into a buffer of its choosing.
void on_data(Server& s, Conn& c, const char* data, size_t n) {
    if (c.state != State::open) {
        return;  // closing or draining: what the client still sends is discarded
    }
    c.deadline = idle_deadline(s);
    if (s.opt.mode == Mode::echo) {
        c.out.append(data, n);
    } else {
        c.in.feed(data, n);
        answer(s, c);
        c.in.keep_rest();  // the buffer goes back to the kernel; keep any unfinished line
    }
    mark_dirty(s, c);
    if (c.out.size() + c.sending.size() - c.sent > kHighWater) {
        // The client sends faster than it reads. Stop receiving until the replies drain.
        c.paused = true;
        if (c.recv_armed && s.multishot_recv && s.br != nullptr) {
            io_uring_sqe* sqe = get_sqe(s);
            io_uring_prep_cancel64(sqe, tag(kRecv, c.fd.get()), 0);
            io_uring_sqe_set_data64(sqe, tag(kCancel, c.fd.get()));
        }
    }
}

void on_recv(Server& s, Conn& c, const io_uring_cqe* cqe) {
    if (!(cqe->flags & IORING_CQE_F_MORE)) {
        c.recv_armed = false;
    }
    int res = cqe->res;
    if (cqe->flags & IORING_CQE_F_BUFFER) {
        unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
        char* data = s.bufs + static_cast<size_t>(bid) * kBufSize;
        if (res > 0) {
            on_data(s, c, data, static_cast<size_t>(res));
        }
        io_uring_buf_ring_add(s.br, data, kBufSize, static_cast<unsigned short>(bid),
                              io_uring_buf_ring_mask(kBufCount), s.returned++);
    } else if (res > 0) {
        on_data(s, c, c.buf.get(), static_cast<size_t>(res));
    } else if (res == -ENOBUFS || res == -ECANCELED) {
        // The buffer ring ran dry (re-armed below, after this pass returns buffers), or we
        // cancelled it ourselves to pause.
    } else if (res == -EINVAL && s.multishot_recv) {
        s.multishot_recv = false;  // a kernel before 6.0: one recv per SQE
    } else if (c.state == State::draining || c.state == State::dead) {
        close_conn(s, c);
        return;
    } else {
        // 0: the client shut down its side (send what is left, then close); <0: reset, error.
        c.peer_done = true;
        if (res < 0) {
            close_conn(s, c);
            return;
        }
        mark_dirty(s, c);
        return;
    }
    if (c.state == State::dead) {
        close_conn(s, c);
    } else if (!c.recv_armed && !c.paused && !c.peer_done) {
        arm_recv(s, c);
    }
}

void on_send(Server& s, Conn& c, const io_uring_cqe* cqe) {
    c.send_armed = false;
    if (cqe->res < 0 || c.state == State::dead) {
        close_conn(s, c);  // -EPIPE, -ECONNRESET: the client is gone
        return;
    }
    c.sent += static_cast<size_t>(cqe->res);
    if (c.sent < c.sending.size()) {
        arm_send(s, c);  // a short send: the rest, from where the kernel stopped
        return;
    }
    c.sending.clear();
    c.sent = 0;
    flush(s, c);
}

// Every 100 ms while something has a deadline: idle connections, drains, a paused accept.
void on_tick(Server& s) {
    s.tick_armed = false;
    auto now = Clock::now();
    bool closing = false;
    for (auto& slot : s.conns) {
        if (!slot) {
            continue;
        }
        Conn& c = *slot;
        if (now >= c.deadline) {
            c.deadline = Clock::time_point::max();
            if (c.state == State::draining) {
                close_conn(s, c);  // may free the slot: look at it no more
                continue;
            }
            if (c.state == State::open) {
                c.out += kIdleTimeout;
                c.state = State::closing;
                mark_dirty(s, c);
            }
        }
        closing = closing || c.state == State::closing || c.state == State::draining;
    }
    if (!s.accept_armed) {
        arm_accept(s);
    }
    if (closing || s.opt.idle_timeout > 0) {
        arm_tick(s);
    }
}

void dispatch(Server& s, const io_uring_cqe* cqe) {
    uint64_t data = io_uring_cqe_get_data64(cqe);
    auto kind = static_cast<Kind>(data & 0xff);
    int fd = static_cast<int>(data >> 8);
    if (trace::enabled() && kind <= kCancel) {
        static const char* names[] = {"cqe",        "cqe_accept", "cqe_recv", "cqe_send",
                                      "cqe_refuse", "cqe_stop",   "cqe_tick", "cqe_cancel"};
        trace::record(names[kind], fd, cqe->res, trace::Clock::now());
    }
    Conn* c = static_cast<size_t>(fd) < s.conns.size() ? s.conns[fd].get() : nullptr;
    switch (kind) {
        case kAccept:
            on_accept(s, cqe);
            break;
        case kRecv:
            assert(c != nullptr);
            on_recv(s, *c, cqe);
            break;
        case kSend:
            assert(c != nullptr);
            on_send(s, *c, cqe);
            break;
        case kRefuse:
            ::close(fd);
            break;
        case kStop:
            s.stopping = true;
            break;
        case kTick:
            on_tick(s);
            break;
        case kCancel:
            break;
        default:
            std::fprintf(stderr, "07_aio_uring_server: CQE with unknown tag %llu\n",
                         static_cast<unsigned long long>(data));
            std::abort();
    }
}

void setup_ring(Server& s) {
    io_uring_params p{};
    // SINGLE_ISSUER + DEFER_TASKRUN (6.1): completions are processed only when this thread
    // enters the kernel to wait, instead of interrupting it. Older kernels say -EINVAL.
    p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN |
              IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
    p.cq_entries = 4 * kSqEntries;
    int rc = io_uring_queue_init_params(kSqEntries, &s.ring, &p);
    if (rc == -EINVAL) {
        p = io_uring_params{};
        p.flags = IORING_SETUP_CQSIZE;
        p.cq_entries = 4 * kSqEntries;
        rc = io_uring_queue_init_params(kSqEntries, &s.ring, &p);
    }
    if (rc == -EPERM || rc == -ENOSYS) {
        throw Refused(std::string("io_uring_setup refused (") + std::strerror(-rc) +
                      "): seccomp or kernel.io_uring_disabled forbids io_uring here");
    }
    if (rc < 0) {
        throw std::system_error(-rc, std::generic_category(), "io_uring_queue_init");
    }
    if (!(p.features & IORING_FEAT_NODROP)) {
        throw Refused("this kernel's io_uring may drop completions (no IORING_FEAT_NODROP, < 5.5)");
    }
    io_uring_probe* probe = io_uring_get_probe_ring(&s.ring);
    bool ops = probe != nullptr && io_uring_opcode_supported(probe, IORING_OP_ACCEPT) &&
               io_uring_opcode_supported(probe, IORING_OP_RECV) &&
               io_uring_opcode_supported(probe, IORING_OP_SEND);
    io_uring_free_probe(probe);
    if (!ops) {
        throw Refused("this kernel's io_uring has no accept/recv/send (needs 5.6 or later)");
    }
    io_uring_register_ring_fd(&s.ring);  // 5.18: skips an fd lookup per enter; optional
    if (s.simple) {
        s.multishot_accept = s.multishot_recv = false;
        return;
    }
    // The buffer ring: page-aligned memory shared with the kernel, then the buffers themselves.
    size_t ring_bytes = kBufCount * sizeof(io_uring_buf);
    void* mem = ::mmap(nullptr, ring_bytes + kBufCount * kBufSize, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        throw_errno("mmap buffer ring");
    }
    s.br = static_cast<io_uring_buf_ring*>(mem);
    s.bufs = static_cast<char*>(mem) + ring_bytes;
    io_uring_buf_ring_init(s.br);
    io_uring_buf_reg reg{};
    reg.ring_addr = reinterpret_cast<uintptr_t>(s.br);
    reg.ring_entries = kBufCount;
    reg.bgid = kBufGroup;
    if (io_uring_register_buf_ring(&s.ring, &reg, 0) < 0) {
        s.br = nullptr;  // before 5.19: no provided-buffer rings, so no multishot recv either
        s.multishot_recv = false;
        return;
    }
    for (unsigned i = 0; i < kBufCount; ++i) {
        io_uring_buf_ring_add(s.br, s.bufs + static_cast<size_t>(i) * kBufSize, kBufSize,
                              static_cast<unsigned short>(i), io_uring_buf_ring_mask(kBufCount),
                              static_cast<int>(i));
    }
    io_uring_buf_ring_advance(s.br, kBufCount);
}

int run(Server& s) {
    setup_ring(s);
    s.listen_fd = listen_tcp(s.opt.host, s.opt.port, SOCK_CLOEXEC);
    s.stats.extra = [&s] {
        return std::string("multishot=") + (s.multishot_recv ? "yes" : "no") +
               " provided_buffers=" + (s.br != nullptr ? "yes" : "no");
    };
    arm_accept(s);
    // SIGTERM's handler writes to stop_fd(); a poll SQE on it turns the signal into a CQE.
    io_uring_sqe* sqe = get_sqe(s);
    io_uring_prep_poll_add(sqe, stop_fd(), POLLIN);
    io_uring_sqe_set_data64(sqe, tag(kStop, stop_fd()));
    if (s.opt.idle_timeout > 0) {
        arm_tick(s);
    }
    announce_listening(s.listen_fd.get(), s.stats.model, s.opt);

    while (!s.stopping) {
        // The one syscall of a pass: submit everything prepared, wait for one completion. With
        // completions held in the kernel's overflow list, do not wait: collect them first.
        unsigned wait_nr = io_uring_cq_has_overflow(&s.ring) ? 0 : 1;
        auto start = trace::Clock::now();
        int rc = io_uring_submit_and_wait(&s.ring, wait_nr);
        trace::count();
        if (trace::enabled()) {
            trace::record("io_uring_submit_and_wait", s.ring.ring_fd, rc, start);
        }
        // -EINTR: a signal; -EBUSY (older kernels): the CQ overflowed, reap before submitting.
        if (rc < 0 && rc != -EINTR && rc != -EBUSY && rc != -EAGAIN) {
            throw std::system_error(-rc, std::generic_category(), "io_uring_submit_and_wait");
        }
        unsigned head;
        unsigned count = 0;
        io_uring_cqe* cqe;
        io_uring_for_each_cqe(&s.ring, head, cqe) {
            dispatch(s, cqe);
            ++count;
        }
        io_uring_cq_advance(&s.ring, count);
        if (s.returned > 0) {
            io_uring_buf_ring_advance(s.br, s.returned);  // the buffers this pass gave back
            s.returned = 0;
        }
        // Replies of the whole pass go out as one send per connection.
        for (int fd : s.dirty) {
            if (static_cast<size_t>(fd) < s.conns.size() && s.conns[fd]) {
                s.conns[fd]->dirty = false;
                flush(s, *s.conns[fd]);
            }
        }
        s.dirty.clear();
        s.stopping = s.stopping || stop_requested();
    }
    // Tearing the ring down cancels every operation in flight; then the sockets close.
    io_uring_queue_exit(&s.ring);
    s.conns.clear();
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"07_aio_uring: io_uring (liburing), one submit-and-wait per pass",
                 "07_aio_uring_server"};
    Server s;
    s.opt = server_defaults(7);
    add_server_options(app, s.opt);
    app.add_flag("--simple", s.simple,
                 "Single-shot accept/recv and a buffer per connection (what old kernels get)");
    if (int rc = parse_command_line(app, argc, argv); rc >= 0) {
        return rc;
    }
    // Sends carry MSG_NOSIGNAL; ignoring SIGPIPE as well means no other write can kill us.
    std::signal(SIGPIPE, SIG_IGN);
    try {
        install_stop_handlers();
        return run(s);
    } catch (const Refused& e) {
        std::fprintf(stderr, "%s: %s\n", app.get_name().c_str(), e.what());
        return 77;
    } catch (const std::exception& e) {
        return report_setup_failure(app.get_name(), e);
    }
}
