// 06_sigio client: the kernel signals when stdin or the socket has something for us.
//
// Both descriptors get an owner (F_SETOWN) and O_ASYNC, so a line typed (or piped) on stdin
// and a reply arriving on the socket both raise SIGIO. One SIGIO does not say which of the two
// it was, or how many times: the client then reads stdin until EAGAIN, sends what it can, and
// reads the socket until EAGAIN, and only then sleeps in sigsuspend(2) again. SIGIO stays
// blocked outside sigsuspend, so a signal raised while we work is kept pending, never lost.
//
// A regular file on stdin raises no SIGIO at all (files have no notion of "ready"), but it is
// always readable, so the first pass reads it to the end without ever sleeping.
//
// Piped input works as in 04's client: at stdin's EOF, once every request is sent, the client
// shuts down its write side and keeps reading until the server has answered and closed.
//
//   printf 'PING\nTIME\n' | ./build/bin/06_sigio_client --port 9006
//
// stdin is made non-blocking for the run and restored at exit. Exits 0 when the server closes
// after answering every request (or after BYE), 1 if it closed before that.

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
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

volatile sig_atomic_t g_sigio = 0;

extern "C" void on_sigio(int) {
    g_sigio = 1;
}

struct Session {
    std::string to_server;  // request bytes not sent yet, from to_server[sent] on
    size_t sent = 0;
    bool stdin_eof = false;
    bool shut_wr = false;
    bool server_closed = false;
    long requests = 0;    // '\n's read from stdin
    char last_in = '\n';  // the last byte read from stdin
    long replies = 0;     // '\n's received from the server
    std::string line;     // the start of the reply line being received, to spot BYE
    bool saw_bye = false;
    size_t pending() const { return to_server.size() - sent; }
};

// stdin's file status flags as we found them; the shell that started us may share them.
struct RestoreFlags {
    int fd;
    int flags;
    ~RestoreFlags() {
        if (flags >= 0) {
            ::fcntl(fd, F_SETFL, flags);
        }
    }
};

void enable_sigio(int fd) {
    int flags = ::fcntl(fd, F_GETFL);
    if (::fcntl(fd, F_SETOWN, ::getpid()) < 0 || flags < 0 ||
        ::fcntl(fd, F_SETFL, flags | O_NONBLOCK | O_ASYNC) < 0) {
        throw_errno("fcntl F_SETOWN/O_ASYNC");
    }
}

// Writes to stdout. A terminal's stdout may share stdin's file description, and with it our
// O_NONBLOCK; then a full terminal buffer is EAGAIN, and we wait a moment and retry.
void print(const char* p, size_t n) {
    while (n > 0) {
        ssize_t k = ::write(STDOUT_FILENO, p, n);
        if (k < 0) {
            if (errno != EAGAIN && errno != EINTR) {
                return;
            }
            ::usleep(1000);
            continue;
        }
        p += k;
        n -= static_cast<size_t>(k);
    }
}

// Reads stdin until EAGAIN, EOF, or enough is waiting to be sent.
void on_stdin(Session& s) {
    char buf[16384];
    while (!s.stdin_eof && s.pending() < kHighWater) {
        ssize_t n = TRACE_IO("read", STDIN_FILENO, ::read(STDIN_FILENO, buf, sizeof buf));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        }
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
}

// Sends until EAGAIN; at stdin's EOF, with everything sent, shuts down the write side.
void on_writable(Session& s, int fd) {
    while (s.pending() > 0) {
        ssize_t n = TRACE_IO("send", fd,
                             ::send(fd, s.to_server.data() + s.sent, s.pending(), MSG_NOSIGNAL));
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                s.server_closed = true;
            }
            return;
        }
        s.sent += static_cast<size_t>(n);
    }
    s.to_server.clear();
    s.sent = 0;
    if (s.stdin_eof && !s.shut_wr) {
        ::shutdown(fd, SHUT_WR);
        s.shut_wr = true;
    }
}

// Reads replies until EAGAIN, prints them and counts whole lines.
void on_readable(Session& s, int fd) {
    char buf[65536];
    for (;;) {
        ssize_t n = TRACE_IO("recv", fd, ::recv(fd, buf, sizeof buf, 0));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        }
        if (n <= 0) {
            s.server_closed = true;
            return;
        }
        print(buf, static_cast<size_t>(n));
        for (ssize_t i = 0; i < n; ++i) {
            if (buf[i] == '\n') {
                ++s.replies;
                s.saw_bye = s.saw_bye || s.line == "BYE";
                s.line.clear();
            } else if (s.line.size() < 4) {
                s.line += buf[i];
            }
        }
    }
}

int run(const ClientOptions& opt) {
    sigset_t blocked;
    sigset_t wait_mask;
    sigemptyset(&blocked);
    sigaddset(&blocked, SIGIO);
    ::sigprocmask(SIG_BLOCK, &blocked, &wait_mask);
    sigdelset(&wait_mask, SIGIO);
    struct sigaction sa {};
    sa.sa_handler = on_sigio;
    sigemptyset(&sa.sa_mask);
    if (::sigaction(SIGIO, &sa, nullptr) < 0) {
        throw_errno("sigaction SIGIO");
    }

    Fd fd = connect_tcp(opt.host, opt.port);
    set_nodelay(fd.get());
    enable_sigio(fd.get());
    RestoreFlags restore{STDIN_FILENO, ::fcntl(STDIN_FILENO, F_GETFL)};
    enable_sigio(STDIN_FILENO);

    Session s;
    while (!s.server_closed) {
        on_stdin(s);
        on_writable(s, fd.get());
        on_readable(s, fd.get());
        if (s.server_closed) {
            break;
        }
        // Everything is at EAGAIN (or stdin is done): sleep until the kernel signals.
        while (!g_sigio) {
            TRACE_IO("sigsuspend", -1, ::sigsuspend(&wait_mask));
        }
        g_sigio = 0;
    }
    if ((s.shut_wr && s.replies >= s.requests) || s.saw_bye) {
        return 0;
    }
    std::cerr << "06_sigio_client: the server closed the connection\n";
    return 1;
}

}  // namespace

int main(int argc, char** argv) {
    CommandLine cmd{"06_sigio_client",
                    "06_sigio client: request lines on stdin, replies on stdout"};
    ClientOptions opt = client_defaults(6);
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
