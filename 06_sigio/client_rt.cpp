// 06_sigio_rt client: the 06_sigio client with F_SETSIG and a real-time signal, taken
// synchronously.
//
// Both descriptors get an owner (F_SETOWN), O_ASYNC and fcntl(F_SETSIG, SIGRTMIN). Real-time
// signals queue, one per event, and each one's siginfo names the descriptor (si_fd) and what
// happened to it (si_band: POLLIN, POLLOUT, POLLHUP, ...). So, unlike 06_sigio's client, a
// wake-up says which of stdin and the socket to serve. No handler runs: the signals stay blocked
// and sigwaitinfo(2) takes them from the queue one at a time.
//
// A signal reports an arrival, not a level: bytes left unread raise no new signal. So a
// descriptor that was named stays "ready" until its read says EAGAIN (or EOF), and stdin stays
// ready while we stop reading it because enough requests wait to be sent.
//
// The queue is bounded (RLIMIT_SIGPENDING). When it is full, the kernel raises plain SIGIO
// instead, which names nothing: events have been lost, so on SIGIO both descriptors are served.
// A regular file on stdin raises no signal at all, but it is always readable, so stdin starts
// out ready and is read to the end without sleeping.
//
// Piped input works as in 04's client: at stdin's EOF, once every request is sent, the client
// shuts down its write side and keeps reading until the server has answered and closed.
//
//   printf 'PING\nTIME\n' | ./build/bin/06_sigio_rt_client --port 9006
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
    bool stdin_ready = true;  // named by a signal (or a file): read it until EAGAIN or EOF
    bool sock_ready = false;  // named by a signal: recv until EAGAIN
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

// F_SETSIG before O_ASYNC: from the first event on, the kernel queues SIGRTMIN with si_fd set.
void enable_rt_signal(int fd) {
    int flags = ::fcntl(fd, F_GETFL);
    if (::fcntl(fd, F_SETOWN, ::getpid()) < 0 || ::fcntl(fd, F_SETSIG, SIGRTMIN) < 0 || flags < 0 ||
        ::fcntl(fd, F_SETFL, flags | O_NONBLOCK | O_ASYNC) < 0) {
        throw_errno("fcntl F_SETOWN/F_SETSIG/O_ASYNC");
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
            s.stdin_ready = false;
            return;
        }
        if (n <= 0) {
            s.stdin_ready = false;
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
            s.sock_ready = false;
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

// Marks what one signal names. A plain SIGIO means the queue overflowed: serve both.
void on_signal(Session& s, const siginfo_t& info, int sock_fd) {
    if (info.si_signo == SIGIO) {
        s.stdin_ready = true;
        s.sock_ready = true;
    } else if (info.si_fd == STDIN_FILENO) {
        s.stdin_ready = true;
    } else if (info.si_fd == sock_fd) {
        s.sock_ready = true;  // POLLIN or POLLOUT in si_band: on_writable runs every pass anyway
    }
}

int run(const ClientOptions& opt) {
    sigset_t wanted;
    sigemptyset(&wanted);
    sigaddset(&wanted, SIGRTMIN);
    sigaddset(&wanted, SIGIO);
    ::sigprocmask(SIG_BLOCK, &wanted, nullptr);

    Fd fd = connect_tcp(opt.host, opt.port);
    set_nodelay(fd.get());
    enable_rt_signal(fd.get());
    RestoreFlags restore{STDIN_FILENO, ::fcntl(STDIN_FILENO, F_GETFL)};
    enable_rt_signal(STDIN_FILENO);

    Session s;
    while (!s.server_closed) {
        if (s.stdin_ready) {
            on_stdin(s);
        }
        on_writable(s, fd.get());
        if (s.sock_ready) {
            on_readable(s, fd.get());
        }
        if (s.server_closed) {
            break;
        }
        bool can_read_stdin = s.stdin_ready && !s.stdin_eof && s.pending() < kHighWater;
        if (can_read_stdin || s.sock_ready) {
            continue;
        }
        // Nothing named is left to serve: take the next signal off the queue.
        siginfo_t info;
        if (TRACE_IO("sigwaitinfo", -1, ::sigwaitinfo(&wanted, &info)) < 0) {
            if (errno == EINTR) {
                continue;
            }
            throw_errno("sigwaitinfo");
        }
        on_signal(s, info, fd.get());
    }
    if ((s.shut_wr && s.replies >= s.requests) || s.saw_bye) {
        return 0;
    }
    std::cerr << "06_sigio_rt_client: the server closed the connection\n";
    return 1;
}

}  // namespace

int main(int argc, char** argv) {
    CommandLine cmd{"06_sigio_rt_client",
                    "06_sigio_rt client: request lines on stdin, replies on stdout"};
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
