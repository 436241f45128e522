// 04_select client: one thread waits in select(2) for stdin and the socket at the same time.
//
// 01's client could not read a reply while it waited on stdin, or notice a closed server while
// it waited for the user. select(2) watches both, so requests go out as fast as stdin delivers
// them and replies are printed as they arrive, however many are in flight.
//
// The batch-mode trap (Stevens, UNP 6.6): with piped input, stdin reaches EOF long before the
// last replies arrive. Closing the socket then would lose them; returning would too. Instead the
// client shuts down only its write side, shutdown(SHUT_WR): the server reads EOF after the last
// request, sends every reply, and closes; the client exits when it reads that EOF.
//
// The socket is non-blocking and requests wait in a buffer while the server is slow to take
// them; stdin is read only while that buffer is small. A blocking send could otherwise wait on a
// server that waits for us to read its replies.
//
//   printf 'PING\nTIME\n' | ./build/bin/04_select_client --port 9004
//
// Exits 0 when the server closes after answering every request (or after BYE), 1 if it closed
// before that.

#include <sys/select.h>
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
        fd_set rset;
        fd_set wset;
        FD_ZERO(&rset);
        FD_ZERO(&wset);
        if (!s.stdin_eof && s.pending() < kHighWater) {
            FD_SET(STDIN_FILENO, &rset);
        }
        FD_SET(fd.get(), &rset);
        if (s.pending() > 0) {
            FD_SET(fd.get(), &wset);
        }
        int maxfd = std::max(STDIN_FILENO, fd.get());
        int nready = TRACE_IO("select", -1, ::select(maxfd + 1, &rset, &wset, nullptr, nullptr));
        if (nready < 0) {
            if (errno == EINTR) {
                continue;
            }
            throw_errno("select");
        }
        if (FD_ISSET(fd.get(), &rset)) {
            ssize_t n = TRACE_IO("recv", fd.get(), ::recv(fd.get(), buf, sizeof buf, 0));
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
                break;  // the server closed (or reset) the connection
            }
            if (n > 0) {
                on_reply_bytes(s, buf, static_cast<size_t>(n));
            }
        }
        if (FD_ISSET(STDIN_FILENO, &rset)) {
            on_stdin(s);
        }
        if (!flush(s, fd.get())) {
            break;
        }
    }
    if ((s.shut_wr && s.replies >= s.requests) || s.saw_bye) {
        return 0;
    }
    std::cerr << "04_select_client: the server closed the connection\n";
    return 1;
}

}  // namespace

int main(int argc, char** argv) {
    CommandLine cmd{"04_select_client",
                    "04_select client: request lines on stdin, replies on stdout"};
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
