// 07_aio_uring client: stdin and the socket through one io_uring, the server's mechanism.
//
// Three operations can be in flight at once, each a submission queue entry (SQE) that the kernel
// completes with one completion queue entry (CQE) carrying its result: a read of stdin
// (io_uring_prep_read, while few request bytes wait), a recv on the socket (always) and a send of
// the requests read so far (while any wait). The client submits what it wants and sleeps in
// io_uring_submit_and_wait until at least one CQE is there; nothing is ever "ready", every CQE
// reports IO that is already done.
//
// Who owns a buffer: from submission until its CQE, the kernel does. The bytes of the send in
// flight live in `sending`, which is not touched until the send's CQE says how much went out;
// new requests collect in `to_server` meanwhile. A short send is finished by the next send.
//
// The batch-mode trap (Stevens, UNP 6.6) is met as in 04: when stdin ends and every request is
// out, the client shuts down only its write side and exits when the server closes, after the
// last reply. On the way out io_uring_queue_exit cancels the read still out on stdin.
//
//   printf 'PING\nTIME\n' | ./build/bin/07_aio_uring_client --port 9007
//
// Exits 0 when the server closes after answering every request (or after BYE), 1 if it closed
// before that, 77 if this machine refuses io_uring (one line on stderr).

#include <liburing.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <iostream>
#include <string>

#include "common/cli.hpp"
#include "common/net.hpp"
#include "common/options.hpp"
#include "common/trace.hpp"
#include "common/uring.hpp"

using namespace iolab;

namespace {

// Stop reading stdin while this many request bytes wait for the server to take them.
constexpr size_t kHighWater = 64 * 1024;

enum Tag : uint64_t { kStdin, kSockIn, kSockOut };

struct Session {
    std::string to_server;  // request bytes read from stdin, not yet handed to a send
    std::string sending;    // the send in flight: the kernel's until its CQE
    size_t sent = 0;        // of `sending`, what earlier CQEs reported sent
    bool stdin_eof = false;
    bool shut_wr = false;
    bool server_closed = false;
    bool in_flight[3] = {false, false, false};  // an SQE with this tag awaits its CQE
    long requests = 0;                          // '\n's read from stdin
    char last_in = '\n';                        // the last byte read from stdin
    long replies = 0;                           // '\n's received from the server
    std::string line;  // the start of the reply line being received, to spot BYE
    bool saw_bye = false;
    char stdin_buf[16384];
    char reply_buf[65536];
    size_t pending() const { return to_server.size() + sending.size() - sent; }
};

// The ring; io_uring_queue_exit on the way out cancels the operations still in flight.
struct Ring {
    io_uring ring{};
    bool live = false;
    ~Ring() {
        if (live) {
            io_uring_queue_exit(&ring);
        }
    }
};

// Queues one SQE; io_uring_submit_and_wait hands every queued one to the kernel at once.
void submit(io_uring& ring, Session& s, Tag tag, int fd) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring);
    switch (tag) {
        case kStdin:
            // Offset -1: read at the file's current position, the only kind a pipe or tty has.
            io_uring_prep_read(sqe, fd, s.stdin_buf, sizeof s.stdin_buf, -1);
            break;
        case kSockIn:
            io_uring_prep_recv(sqe, fd, s.reply_buf, sizeof s.reply_buf, 0);
            break;
        case kSockOut:
            if (s.sent == s.sending.size()) {
                s.sending.swap(s.to_server);
                s.to_server.clear();
                s.sent = 0;
            }
            io_uring_prep_send(sqe, fd, s.sending.data() + s.sent, s.sending.size() - s.sent,
                               MSG_NOSIGNAL);
            break;
    }
    io_uring_sqe_set_data64(sqe, tag);
    s.in_flight[tag] = true;
}

// Prints what the server sent and counts whole reply lines.
void on_reply_bytes(Session& s, const char* p, size_t n) {
    write_all(STDOUT_FILENO, p, n);
    for (size_t i = 0; i < n; ++i) {
        if (p[i] == '\n') {
            ++s.replies;
            s.saw_bye = s.saw_bye || s.line == "BYE";
            s.line.clear();
        } else if (s.line.size() < 4) {
            s.line += p[i];
        }
    }
}

// The CQE of a stdin read: res bytes are in stdin_buf, 0 is EOF, below 0 is -errno.
void on_stdin(Session& s, int res) {
    if (res == -EINTR || res == -EAGAIN) {
        return;  // nothing read; the loop submits the read again
    }
    if (res <= 0) {
        s.stdin_eof = true;
        if (s.last_in != '\n') {
            s.to_server += '\n';  // a last line without its newline is still a request
            ++s.requests;
        }
        return;
    }
    s.requests += std::count(s.stdin_buf, s.stdin_buf + res, '\n');
    s.last_in = s.stdin_buf[res - 1];
    s.to_server.append(s.stdin_buf, static_cast<size_t>(res));
}

// The CQE of a recv: 0 is the server's FIN, below 0 a reset (or -EINTR: try again).
void on_recv(Session& s, int res) {
    if (res == -EINTR || res == -EAGAIN) {
        return;
    }
    if (res <= 0) {
        s.server_closed = true;
        return;
    }
    on_reply_bytes(s, s.reply_buf, static_cast<size_t>(res));
}

// The CQE of a send: how much of `sending` the kernel took; the rest goes in the next send.
void on_send(Session& s, int res) {
    if (res == -EINTR || res == -EAGAIN) {
        return;
    }
    if (res < 0) {
        s.server_closed = true;  // -EPIPE or -ECONNRESET: the server is gone
        return;
    }
    s.sent += static_cast<size_t>(res);
}

int run(const ClientOptions& opt) {
    // The session outlives the ring: the buffers of whatever is in flight at the end stay valid
    // until io_uring_queue_exit has cancelled it.
    Session s;
    Ring r;
    init_uring(r.ring, 8, {IORING_OP_READ, IORING_OP_RECV, IORING_OP_SEND});
    r.live = true;
    Fd fd = connect_tcp(opt.host, opt.port);
    set_nodelay(fd.get());
    while (!s.server_closed && !s.saw_bye) {
        if (!s.in_flight[kStdin] && !s.stdin_eof && s.pending() < kHighWater) {
            submit(r.ring, s, kStdin, STDIN_FILENO);
        }
        if (!s.in_flight[kSockIn]) {
            submit(r.ring, s, kSockIn, fd.get());
        }
        if (!s.in_flight[kSockOut] && s.pending() > 0) {
            submit(r.ring, s, kSockOut, fd.get());
        }
        if (!s.in_flight[kSockOut] && s.pending() == 0 && s.stdin_eof && !s.shut_wr) {
            // Every request is out: send FIN, keep reading replies.
            TRACE_IO("shutdown", fd.get(), ::shutdown(fd.get(), SHUT_WR));
            s.shut_wr = true;
        }
        int rc = TRACE_IO("io_uring_submit_and_wait", -1, io_uring_submit_and_wait(&r.ring, 1));
        if (rc < 0 && rc != -EINTR) {
            errno = -rc;
            throw_errno("io_uring_submit_and_wait");
        }
        io_uring_cqe* cqe;
        unsigned head;
        unsigned seen = 0;
        io_uring_for_each_cqe(&r.ring, head, cqe) {
            ++seen;
            auto tag = static_cast<Tag>(io_uring_cqe_get_data64(cqe));
            s.in_flight[tag] = false;
            switch (tag) {
                case kStdin:
                    on_stdin(s, cqe->res);
                    break;
                case kSockIn:
                    on_recv(s, cqe->res);
                    break;
                case kSockOut:
                    on_send(s, cqe->res);
                    break;
            }
        }
        io_uring_cq_advance(&r.ring, seen);
    }
    if ((s.shut_wr && s.replies >= s.requests) || s.saw_bye) {
        return 0;
    }
    std::cerr << "07_aio_uring_client: the server closed the connection\n";
    return 1;
}

}  // namespace

int main(int argc, char** argv) {
    CommandLine cmd{"07_aio_uring_client",
                    "07_aio_uring client: request lines on stdin, replies on stdout"};
    ClientOptions opt = client_defaults(7);
    cmd.add_client_options(opt);
    if (int rc = cmd.parse(argc, argv); rc >= 0) {
        return rc;
    }
    try {
        return run(opt);
    } catch (const UringUnavailable& e) {
        return report_unavailable(cmd.name(), e);  // one line on stderr, exit 77
    } catch (const std::exception& e) {
        return report_setup_failure(cmd.name(), e);
    }
}
