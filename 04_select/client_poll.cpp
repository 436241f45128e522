// 04_select_poll client: the 04_select client with poll(2) in place of select(2).
//
// poll takes an array of struct pollfd, one per descriptor, each with the events wanted and the
// revents the kernel filled in. There is no fd_set to rebuild and no maxfd to compute, and no
// FD_SETSIZE: a descriptor numbered above 1023 is as good as any. The kernel still walks every
// entry on every call, as select does, which for two descriptors costs nothing.
//
// Everything else is 04's client. With piped input, stdin reaches EOF long before the last
// replies arrive; the client then shuts down only its write side, shutdown(SHUT_WR), and exits
// when the server has answered every request and closed. The socket is non-blocking, requests
// wait in a buffer while the server is slow to take them, and stdin is read only while that
// buffer is small.
//
// A hang-up is reported in revents whether or not it was asked for (POLLHUP, POLLERR): a pipe on
// stdin whose writer has gone reads POLLHUP, possibly without POLLIN, and a read then returns the
// EOF. So both are treated as "readable".
//
//   printf 'PING\nTIME\n' | ./build/bin/04_select_poll_client --port 9004
//
// Exits 0 when the server closes after answering every request (or after BYE), 1 if it closed
// before that.

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
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
    Fd fd = connect_tcp(opt.host, opt.port);
    set_nodelay(fd.get());
    set_nonblocking(fd.get());
    Session s;
    char buf[65536];
    for (;;) {
        pollfd fds[2]{};
        fds[0].fd = fd.get();
        fds[0].events = POLLIN;
        if (s.pending() > 0) {
            fds[0].events |= POLLOUT;
        }
        // A negative fd is skipped by poll: that is how stdin leaves the set.
        fds[1].fd = (!s.stdin_eof && s.pending() < kHighWater) ? STDIN_FILENO : -1;
        fds[1].events = POLLIN;
        int nready = TRACE_IO("poll", -1, ::poll(fds, 2, -1));
        if (nready < 0) {
            if (errno == EINTR) {
                continue;
            }
            throw_errno("poll");
        }
        if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = TRACE_IO("recv", fd.get(), ::recv(fd.get(), buf, sizeof buf, 0));
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
                break;  // the server closed (or reset) the connection
            }
            if (n > 0) {
                on_reply_bytes(s, buf, static_cast<size_t>(n));
            }
        }
        if (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) {
            on_stdin(s);
        }
        if (!flush(s, fd.get())) {
            break;
        }
    }
    if ((s.shut_wr && s.replies >= s.requests) || s.saw_bye) {
        return 0;
    }
    std::cerr << "04_select_poll_client: the server closed the connection\n";
    return 1;
}

}  // namespace

int main(int argc, char** argv) {
    CommandLine cmd{"04_select_poll_client",
                    "04_select_poll client: request lines on stdin, replies on stdout"};
    ClientOptions opt = client_defaults(4);
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
