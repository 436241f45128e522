// 07_aio client: POSIX AIO on stdin and on the socket, waiting with aio_suspend(3).
//
// Three requests can be in flight at once: a read of stdin, a read of the socket and a write to
// it. The client starts them and then sleeps in aio_suspend until any one has finished: the
// third way POSIX AIO can tell you (the server uses a queued signal; SIGEV_THREAD would call a
// function on another thread). Here no notification is needed at all (SIGEV_NONE): the one
// thread that would handle it is the one waiting.
//
// Why POSIX AIO and not io_uring: the client shows the same API as the server, including its
// trap. glibc serves the requests for one descriptor one at a time, in order. A write queued on
// the socket's fd behind our parked read would wait for a reply that waits for the write. So the
// write goes through a dup(2) of the socket: same connection, another descriptor, its own queue.
//
// The second trap is at the end. A request still in flight when we leave is still glibc's: its
// helper thread reads the aiocb when it starts the request, writes the result into it when it
// ends, and raises the signal it names. An aiocb on a stack frame that has returned holds
// garbage by then, so the helper can run read(0, NULL, 0) and send its own process SIGTERM
// (AddressSanitizer's slow exit made that happen here one run in five). So the requests on the
// socket are ended before we close it, and the read of stdin, which nothing can wake, uses an
// aiocb that lives as long as the process.
//
//   printf 'PING\nTIME\n' | ./build/bin/07_aio_client --port 9007
//
// Exits 0 once every request line has its reply (or the server said BYE), 1 if the server
// closed first.

#include <aio.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <iostream>
#include <string>

#include "common/cli.hpp"
#include "common/net.hpp"
#include "common/options.hpp"
#include "common/qa.hpp"

using namespace iolab;

namespace {

constexpr size_t kMaxReply = 1 << 20;  // bounds one reply line, not the protocol
constexpr size_t kMaxPending = 1 << 16;

struct Request {
    aiocb cb{};
    bool busy = false;
};

// From here until aio_return, the aiocb and the buffer are glibc's. glibc refuses a request
// (EAGAIN) only when it has no memory or thread left, which three requests never meet.
void start(Request& r, int fd, char* buf, size_t len, bool write) {
    r.cb = aiocb{};
    r.cb.aio_fildes = fd;
    r.cb.aio_buf = buf;
    r.cb.aio_nbytes = len;
    r.cb.aio_sigevent.sigev_notify = SIGEV_NONE;  // we ask with aio_error after aio_suspend
    if ((write ? ::aio_write(&r.cb) : ::aio_read(&r.cb)) < 0) {
        throw_errno(write ? "aio_write" : "aio_read");
    }
    r.busy = true;
}

// Returns the finished request's result (bytes, or -errno), or nothing if it is still running.
bool finished(Request& r, ssize_t& result) {
    if (!r.busy) {
        return false;
    }
    int err = ::aio_error(&r.cb);
    if (err == EINPROGRESS) {
        return false;
    }
    ssize_t n = ::aio_return(&r.cb);
    result = n < 0 ? -err : n;
    r.busy = false;
    return true;
}

// However run() leaves, the requests still in flight on the socket end before its descriptors
// close and the bytes being written are freed. Otherwise a helper thread would start a queued
// request, or restart one a signal interrupted, on a closed descriptor (or on whatever file has
// reused its number), and write the result into memory that is no longer ours. shutdown(2) wakes
// a read parked on the socket with 0 and a blocked write with EPIPE, and a request that has not
// started yet ends the same way the moment it starts.
struct EndSocketRequests {
    int sock_fd;
    Request& net;
    Request& out;
    ~EndSocketRequests() {
        ::shutdown(sock_fd, SHUT_RDWR);
        ssize_t ignored;
        while (net.busy || out.busy) {
            const aiocb* list[2];
            int n = 0;
            for (Request* r : {&net, &out}) {
                if (r->busy) {
                    list[n++] = &r->cb;
                }
            }
            ::aio_suspend(list, n, nullptr);
            finished(net, ignored);
            finished(out, ignored);
        }
    }
};

int run(const ClientOptions& opt) {
    Fd sock = connect_tcp(opt.host, opt.port);
    set_nodelay(sock.get());
    Fd write_sock(::dup(sock.get()));  // its own glibc queue, so a parked read cannot block it
    if (!write_sock) {
        throw_errno("dup");
    }

    // A read of stdin cannot be woken (a pipe or a terminal has no shutdown), so it may still be
    // parked when we exit. The aiocbs and buffers are static: if a helper thread finishes that
    // read after run() has returned, it writes into memory that is still ours and raises no
    // signal, and the process's exit ends the thread.
    static char in_buf[16384];
    static char net_buf[65536];
    static Request in, net, out;
    std::string pending;  // request bytes read from stdin, not yet being sent
    std::string sending;  // the bytes the current aio_write owns
    EndSocketRequests end_on_return{sock.get(), net, out};
    size_t sent = 0;
    LineParser replies(kMaxReply);
    long asked = 0;
    long answered = 0;
    bool stdin_done = false;
    bool mid_line = false;  // the last byte read from stdin was not a newline

    start(in, STDIN_FILENO, in_buf, sizeof in_buf, false);
    start(net, sock.get(), net_buf, sizeof net_buf, false);
    for (;;) {
        if (!out.busy && !pending.empty()) {
            sending.swap(pending);
            pending.clear();
            sent = 0;
            start(out, write_sock.get(), sending.data(), sending.size(), true);
        }
        if (!in.busy && !stdin_done && pending.size() < kMaxPending) {
            start(in, STDIN_FILENO, in_buf, sizeof in_buf, false);
        }
        if (stdin_done && !out.busy && pending.empty() && answered >= asked) {
            return 0;
        }
        const aiocb* list[3];
        int n = 0;
        for (Request* r : {&in, &net, &out}) {
            if (r->busy) {
                list[n++] = &r->cb;
            }
        }
        if (::aio_suspend(list, n, nullptr) < 0 && errno != EINTR) {
            throw_errno("aio_suspend");
        }

        ssize_t got;
        if (finished(in, got)) {
            if (got <= 0) {
                stdin_done = true;
                if (mid_line) {
                    pending += '\n';  // a last line without its newline is still a request
                    ++asked;
                }
            } else {
                pending.append(in_buf, static_cast<size_t>(got));
                asked += std::count(in_buf, in_buf + got, '\n');
                mid_line = in_buf[got - 1] != '\n';
            }
        }
        if (finished(out, got)) {
            if (got < 0) {
                std::cerr << "07_aio_client: the server closed the connection\n";
                return 1;
            }
            sent += static_cast<size_t>(got);
            if (sent < sending.size()) {  // a short write: send the rest
                start(out, write_sock.get(), sending.data() + sent, sending.size() - sent, true);
            }
        }
        if (finished(net, got)) {
            if (got <= 0) {
                std::cerr << "07_aio_client: the server closed the connection\n";
                return 1;
            }
            replies.feed(net_buf, static_cast<size_t>(got));
            while (auto line = replies.next()) {
                std::cout << *line << '\n';
                ++answered;
                if (*line == "BYE") {
                    std::cout << std::flush;
                    return 0;
                }
            }
            std::cout << std::flush;
            start(net, sock.get(), net_buf, sizeof net_buf, false);
        }
    }
}

}  // namespace

int main(int argc, char** argv) {
    CommandLine cmd{"07_aio_client",
                    "07_aio client: request lines on stdin, replies on stdout (POSIX AIO)"};
    ClientOptions opt = client_defaults(7);
    cmd.add_client_options(opt);
    if (int rc = cmd.parse(argc, argv); rc >= 0) {
        return rc;
    }
    // A write after the server has gone fails with EPIPE, which the loop reports as a value;
    // without this the helper thread's write(2) would kill us with SIGPIPE first.
    std::signal(SIGPIPE, SIG_IGN);
    try {
        return run(opt);
    } catch (const std::exception& e) {
        return report_setup_failure(cmd.name(), e);
    }
}
