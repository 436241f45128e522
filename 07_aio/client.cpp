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
//   printf 'PING\nTIME\n' | ./build/bin/07_aio_client --port 9007
//
// Exits 0 once every request line has its reply (or the server said BYE), 1 if the server
// closed first.

#include <aio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <iostream>
#include <string>

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

bool start(Request& r, int fd, char* buf, size_t len, bool write) {
    r.cb = aiocb{};
    r.cb.aio_fildes = fd;
    r.cb.aio_buf = buf;
    r.cb.aio_nbytes = len;
    r.cb.aio_sigevent.sigev_notify = SIGEV_NONE;  // we ask with aio_error after aio_suspend
    int rc = write ? ::aio_write(&r.cb) : ::aio_read(&r.cb);
    r.busy = rc == 0;
    return r.busy;
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

int run(const ClientOptions& opt) {
    Fd sock = connect_tcp(opt.host, opt.port);
    set_nodelay(sock.get());
    Fd write_sock(::dup(sock.get()));  // its own glibc queue, so a parked read cannot block it
    if (!write_sock) {
        throw_errno("dup");
    }

    static char in_buf[16384];
    static char net_buf[65536];
    Request in, net, out;
    std::string pending;  // request bytes read from stdin, not yet being sent
    std::string sending;  // the bytes the current aio_write owns
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
    CLI::App app{"07_aio client: request lines on stdin, replies on stdout (POSIX AIO)",
                 "07_aio_client"};
    ClientOptions opt = client_defaults(7);
    add_client_options(app, opt);
    if (int rc = parse_command_line(app, argc, argv); rc >= 0) {
        return rc;
    }
    try {
        return run(opt);
    } catch (const std::exception& e) {
        return report_setup_failure(app.get_name(), e);
    }
}
