// 09_proactor client: a proactor too. Three asynchronous operations are in flight at once, a
// read of stdin, a send of the requests so far, a recv of the replies, all on one io_uring, and
// one loop dispatches their completions. So, unlike 01's client, it never stops listening to the
// server while it waits for stdin, and it pipelines: every line read is sent at once.
//
//   printf 'PING\nTIME\n' | ./build/bin/09_proactor_client --port 9009
//
// Exits 0 once stdin has ended and every request has its reply (or the server said BYE), 1 if
// the server closed first, 77 if this machine refuses io_uring.

#include <liburing.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <string_view>

#include "common/cli.hpp"
#include "common/net.hpp"
#include "common/options.hpp"
#include "common/qa.hpp"
#include "common/uring.hpp"

using namespace iolab;

namespace {

constexpr size_t kMaxReply = 1 << 20;  // bounds one reply line, not the protocol
constexpr size_t kHighWater = 256 * 1024;
enum Op : uint64_t { kStdin, kSend, kRecv };

struct Client {
    io_uring ring;
    Fd fd;
    char in_buf[65536];
    char reply_buf[65536];
    std::string pending;  // stdin bytes of a line not yet complete
    std::string out;      // request lines not yet sent
    std::string sending;  // the send in flight: the kernel's until its CQE
    size_t sent = 0;
    LineParser replies{kMaxReply};
    uint64_t requests = 0, answered = 0;
    bool stdin_armed = false, stdin_done = false, send_armed = false;
};

void initiate(Client& c, Op op) {
    io_uring_sqe* sqe = io_uring_get_sqe(&c.ring);
    switch (op) {
        case kStdin:  // offset -1: read at the current position, which a pipe or tty needs
            io_uring_prep_read(sqe, STDIN_FILENO, c.in_buf, sizeof c.in_buf, -1);
            c.stdin_armed = true;
            break;
        case kSend:
            if (c.sent == c.sending.size()) {
                c.sending.clear();
                c.sent = 0;
                std::swap(c.sending, c.out);
            }
            io_uring_prep_send(sqe, c.fd.get(), c.sending.data() + c.sent,
                               c.sending.size() - c.sent, MSG_NOSIGNAL);
            c.send_armed = true;
            break;
        case kRecv:
            io_uring_prep_recv(sqe, c.fd.get(), c.reply_buf, sizeof c.reply_buf, 0);
            break;
    }
    io_uring_sqe_set_data64(sqe, op);
}

// Completion of a stdin read: every complete line becomes a request.
void on_stdin(Client& c, int res) {
    c.stdin_armed = false;
    if (res <= 0) {
        c.stdin_done = true;
        if (!c.pending.empty()) {  // a last line without its newline is a request all the same
            c.pending += '\n';
        }
    } else {
        c.pending.append(c.in_buf, static_cast<size_t>(res));
    }
    size_t end = c.pending.rfind('\n');
    if (end != std::string::npos) {
        std::string_view lines(c.pending.data(), end + 1);
        for (char ch : lines) {
            c.requests += ch == '\n';
        }
        c.out.append(lines);
        c.pending.erase(0, end + 1);
    }
}

// Completion of a recv: print every whole reply line. Returns an exit code when done, else -1.
int on_recv(Client& c, int res) {
    if (res <= 0) {
        if (c.stdin_done && c.answered == c.requests) {
            return 0;
        }
        std::fprintf(stderr, "09_proactor_client: the server closed the connection\n");
        return 1;
    }
    c.replies.feed(c.reply_buf, static_cast<size_t>(res));
    while (auto line = c.replies.next()) {
        std::fwrite(line->data(), 1, line->size(), stdout);
        std::fputc('\n', stdout);
        ++c.answered;
        if (*line == "BYE") {
            return 0;
        }
    }
    std::fflush(stdout);
    if (c.replies.too_long()) {
        std::fprintf(stderr, "09_proactor_client: a reply line longer than 1 MiB\n");
        return 1;
    }
    if (c.stdin_done && c.answered == c.requests) {
        return 0;
    }
    initiate(c, kRecv);
    return -1;
}

int run(const ClientOptions& opt) {
    Client c;
    // The ring, with the opcodes the client uses probed (common/uring.cpp).
    init_uring(c.ring, 8, {IORING_OP_READ, IORING_OP_SEND, IORING_OP_RECV});
    c.fd = connect_tcp(opt.host, opt.port);
    set_nodelay(c.fd.get());
    initiate(c, kStdin);
    initiate(c, kRecv);
    for (;;) {
        io_uring_submit_and_wait(&c.ring, 1);
        io_uring_cqe* cqe;
        unsigned head;
        unsigned n = 0;
        int rc = -1;
        io_uring_for_each_cqe(&c.ring, head, cqe) {
            ++n;
            switch (io_uring_cqe_get_data64(cqe)) {
                case kStdin:
                    on_stdin(c, cqe->res);
                    break;
                case kSend:
                    c.send_armed = false;
                    if (cqe->res < 0) {
                        std::fprintf(stderr, "09_proactor_client: send failed\n");
                        rc = 1;
                    } else {
                        c.sent += static_cast<size_t>(cqe->res);  // short: the rest goes next
                    }
                    break;
                case kRecv:
                    rc = on_recv(c, cqe->res);
                    break;
            }
            if (rc >= 0) {
                break;
            }
        }
        io_uring_cq_advance(&c.ring, n);
        if (rc >= 0) {
            std::fflush(stdout);
            return rc;
        }
        if (c.stdin_done && c.answered == c.requests) {
            return 0;  // stdin has ended and every request has its reply (or there were none)
        }
        size_t unsent = c.out.size() + c.sending.size() - c.sent;
        if (!c.send_armed && unsent > 0) {
            initiate(c, kSend);
        }
        if (!c.stdin_armed && !c.stdin_done && unsent < kHighWater) {
            initiate(c, kStdin);
        }
    }
}

}  // namespace

int main(int argc, char** argv) {
    CommandLine cmd{"09_proactor_client",
                    "09_proactor client: request lines on stdin, replies on stdout"};
    ClientOptions opt = client_defaults(9);
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
