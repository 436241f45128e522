// 07_aio_kernel client: one thread waits in io_getevents(2) for stdin and the socket, through
// Linux's own AIO and its one-shot poll requests (IOCB_CMD_POLL).
//
// The client of 04 with the server's mechanism: instead of select, three poll iocbs, each
// submitted when it is wanted and answered by one io_event when its descriptor is ready: POLLIN
// on stdin (while few request bytes wait), POLLIN on the socket (always), POLLOUT on the socket
// (while request bytes wait). A poll is one-shot, so each one is submitted again after it has
// completed, and a socket that is ready already completes its poll inside io_submit. Two polls
// on one socket are independent requests: a request for POLLOUT never has to cancel the one for
// POLLIN.
//
// The batch-mode trap (Stevens, UNP 6.6) is met as in 04: when stdin ends, the client shuts down
// only its write side and exits when the server closes, after the last reply.
// On the way out io_destroy cancels the poll still out on stdin, which nothing else would end.
//
//   printf 'PING\nTIME\n' | ./build/bin/07_aio_kernel_client --port 9007
//
// Exits 0 when the server closes after answering every request (or after BYE), 1 if it closed
// before that, 77 if the kernel refuses AIO.

#include <linux/aio_abi.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <string>

#include "common/cli.hpp"
#include "common/net.hpp"
#include "common/options.hpp"
#include "common/trace.hpp"

using namespace iolab;

namespace {

// Stop reading stdin while this many request bytes wait for the server to take them.
constexpr size_t kHighWater = 64 * 1024;

enum Tag : uint64_t { kStdin, kSockIn, kSockOut };

struct Session {
    std::string to_server;  // request bytes not sent yet, from to_server[sent] on
    size_t sent = 0;
    bool stdin_eof = false;
    bool shut_wr = false;
    long requests = 0;    // '\n's read from stdin
    char last_in = '\n';  // the last byte read from stdin
    long replies = 0;     // '\n's received from the server
    std::string line;     // the start of the reply line being received, to spot BYE
    bool saw_bye = false;
    size_t pending() const { return to_server.size() - sent; }
};

// The context; io_destroy on the way out cancels the polls still in flight.
struct AioContext {
    aio_context_t id = 0;
    ~AioContext() {
        if (id != 0) {
            ::syscall(SYS_io_destroy, id);
        }
    }
};

iocb poll_iocb(Tag tag, int fd, short events) {
    iocb cb{};
    cb.aio_data = tag;
    cb.aio_lio_opcode = IOCB_CMD_POLL;
    cb.aio_fildes = static_cast<uint32_t>(fd);
    cb.aio_buf = static_cast<uint16_t>(events);
    return cb;
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

void on_stdin(Session& s) {
    char buf[16384];
    long n = read_some(STDIN_FILENO, buf, sizeof buf);
    if (n <= 0) {
        s.stdin_eof = true;
        if (s.last_in != '\n') {
            s.to_server += '\n';  // a last line without its newline is still a request
            ++s.requests;
        }
        return;
    }
    s.requests += std::count(buf, buf + n, '\n');
    s.last_in = buf[n - 1];
    s.to_server.append(buf, static_cast<size_t>(n));
}

// Returns false if the server is gone.
bool flush(Session& s, int fd) {
    while (s.pending() > 0) {
        ssize_t n = TRACE_IO("send", fd,
                             ::send(fd, s.to_server.data() + s.sent, s.pending(), MSG_NOSIGNAL));
        if (n < 0) {
            return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
        }
        s.sent += static_cast<size_t>(n);
    }
    s.to_server.clear();
    s.sent = 0;
    if (s.stdin_eof && !s.shut_wr) {
        // Every request is out: send FIN, keep reading replies.
        ::shutdown(fd, SHUT_WR);
        s.shut_wr = true;
    }
    return true;
}

int run(const ClientOptions& opt) {
    AioContext ctx;
    if (::syscall(SYS_io_setup, 3, &ctx.id) < 0) {
        std::cerr << "07_aio_kernel_client: io_setup: " << std::strerror(errno)
                  << ": this machine refuses kernel AIO\n";
        return 77;
    }
    Fd fd = connect_tcp(opt.host, opt.port);
    set_nodelay(fd.get());
    set_nonblocking(fd.get());
    Session s;
    char buf[65536];
    iocb cbs[3]{};
    bool out[3] = {false, false, false};  // cbs[tag] is in flight
    for (;;) {
        iocb* batch[3];
        long n = 0;
        auto want = [&](Tag tag, int wfd, short events) {
            if (!out[tag]) {
                cbs[tag] = poll_iocb(tag, wfd, events);
                batch[n++] = &cbs[tag];
                out[tag] = true;
            }
        };
        if (!s.stdin_eof && s.pending() < kHighWater) {
            want(kStdin, STDIN_FILENO, POLLIN);
        }
        want(kSockIn, fd.get(), POLLIN);
        if (s.pending() > 0) {
            want(kSockOut, fd.get(), POLLOUT);
        }
        if (n > 0 && TRACE_IO("io_submit", -1, ::syscall(SYS_io_submit, ctx.id, n, batch)) != n) {
            throw_errno("io_submit");
        }
        io_event events[3];
        long nready = TRACE_IO("io_getevents", -1,
                               ::syscall(SYS_io_getevents, ctx.id, 1L, 3L, events, nullptr));
        if (nready < 0) {
            if (errno == EINTR) {
                continue;
            }
            throw_errno("io_getevents");
        }
        bool sock_readable = false;
        bool stdin_readable = false;
        for (long i = 0; i < nready; ++i) {
            out[events[i].data] = false;
            sock_readable = sock_readable || events[i].data == kSockIn;
            stdin_readable = stdin_readable || events[i].data == kStdin;
        }
        if (sock_readable) {
            ssize_t got = TRACE_IO("recv", fd.get(), ::recv(fd.get(), buf, sizeof buf, 0));
            if (got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR)) {
                break;  // the server closed (or reset) the connection
            }
            if (got > 0) {
                on_reply_bytes(s, buf, static_cast<size_t>(got));
            }
        }
        if (stdin_readable) {
            on_stdin(s);
        }
        if (!flush(s, fd.get())) {
            break;
        }
    }
    if ((s.shut_wr && s.replies >= s.requests) || s.saw_bye) {
        return 0;
    }
    std::cerr << "07_aio_kernel_client: the server closed the connection\n";
    return 1;
}

}  // namespace

int main(int argc, char** argv) {
    CommandLine cmd{
        "07_aio_kernel_client",
        "07_aio_kernel client: request lines on stdin, replies on stdout (IOCB_CMD_POLL)"};
    ClientOptions opt = client_defaults(7);
    cmd.add_client_options(opt);
    if (int rc = cmd.parse(argc, argv); rc >= 0) {
        return rc;
    }
    try {
        return run(opt);
    } catch (const std::exception& e) {
        return report_setup_failure(cmd.name(), e);
    }
}
