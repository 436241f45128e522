// 05_epoll_et client: the piped 05_epoll client with edge-triggered epoll.
//
// stdin and the socket go into one epoll set once, with EPOLLET, and their interest never
// changes: the socket with EPOLLIN | EPOLLOUT, stdin with EPOLLIN. Edge-triggered means
// epoll_wait reports a change (bytes arrived, send space freed), not a state: what we leave
// unread raises no new event. So each descriptor reported is drained until the kernel says
// EAGAIN, and remembered as ready until then. Two cases stop early and keep the flag: stdin while
// enough requests wait to be sent (we stop reading it on purpose), and the socket's send side
// while there is nothing to send (the next EPOLLOUT edge comes only after a send hits EAGAIN,
// so until then the socket is known to be writable).
//
// A regular file (or /dev/null) on stdin cannot be watched: epoll_ctl refuses it with EPERM,
// because such a file is always ready. Then stdin is ready until its EOF.
//
// At the end of stdin, once every request is out, the client calls shutdown(SHUT_WR): the
// server sees EOF after the last request, and we keep reading until every reply is in.
//
//   printf 'PING\nTIME\n' | ./build/bin/05_epoll_et_client --port 9005
//
// Exits 0 when every request got its reply (or the server said BYE), 1 otherwise.

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <string>

#include "common/cli.hpp"
#include "common/net.hpp"
#include "common/options.hpp"
#include "common/qa.hpp"
#include "common/trace.hpp"

using namespace iolab;

namespace {

constexpr size_t kMaxReply = 2 << 20;      // a reply may echo a request of up to 1 MiB
constexpr size_t kHighWater = 256 * 1024;  // stop reading stdin while this much is unsent

enum : uint32_t { kStdin, kSocket };

struct Session {
    std::string out;  // requests not yet sent
    LineParser in{kMaxReply};
    uint64_t requests = 0;
    uint64_t replies = 0;
    bool stdin_open = true;
    bool ends_in_newline = true;
    bool shut = false;
    bool stdin_ready = true;  // until a read says EAGAIN; a new edge sets it again
    bool sock_readable = false;
    bool sock_writable = true;  // a new socket has send space; cleared by a send's EAGAIN
    bool server_closed = false;
    bool saw_bye = false;
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

// Reads stdin until EAGAIN, EOF, or enough waits to be sent.
void on_stdin(Session& s, char* buf, size_t size) {
    while (s.stdin_open && s.out.size() < kHighWater) {
        ssize_t n = TRACE_IO("read", STDIN_FILENO, ::read(STDIN_FILENO, buf, size));
        if (n > 0) {
            s.out.append(buf, static_cast<size_t>(n));
            s.requests += static_cast<uint64_t>(std::count(buf, buf + n, '\n'));
            s.ends_in_newline = buf[n - 1] == '\n';
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        s.stdin_ready = false;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        }
        s.stdin_open = false;
        if (!s.ends_in_newline) {
            s.out += '\n';  // the last line had no newline: it is still a request
            ++s.requests;
        }
    }
}

// Sends until everything is out or EAGAIN; then, at stdin's EOF, our FIN.
void on_writable(Session& s, int fd) {
    while (!s.out.empty()) {
        ssize_t n = TRACE_IO("send", fd, ::send(fd, s.out.data(), s.out.size(), MSG_NOSIGNAL));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            s.sock_writable = false;  // the next EPOLLOUT edge says when there is room
            return;
        }
        if (n < 0) {
            s.server_closed = true;
            return;
        }
        s.out.erase(0, static_cast<size_t>(n));
    }
    if (!s.stdin_open && !s.shut) {
        // The replies still come back on this socket after our FIN.
        TRACE_IO("shutdown", fd, ::shutdown(fd, SHUT_WR));
        s.shut = true;
    }
}

// Receives until EAGAIN, printing every whole reply line.
void on_readable(Session& s, int fd, char* buf, size_t size) {
    for (;;) {
        ssize_t n = TRACE_IO("recv", fd, ::recv(fd, buf, size, 0));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            s.sock_readable = false;
            return;
        }
        if (n <= 0) {
            s.server_closed = true;
            return;
        }
        s.in.feed(buf, static_cast<size_t>(n));
        std::string lines;
        while (auto line = s.in.next()) {
            lines.append(line->data(), line->size());
            lines += '\n';
            ++s.replies;
            if (*line == "BYE") {
                s.saw_bye = true;
                break;
            }
        }
        print(lines.data(), lines.size());
        if (s.saw_bye) {
            return;
        }
    }
}

int run(const ClientOptions& opt) {
    Fd sock = connect_tcp(opt.host, opt.port);
    set_nonblocking(sock.get());
    set_nodelay(sock.get());
    Fd epfd(::epoll_create1(EPOLL_CLOEXEC));
    if (!epfd) {
        throw_errno("epoll_create1");
    }
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.u32 = kSocket;
    if (TRACE_IO("epoll_ctl", sock.get(), ::epoll_ctl(epfd.get(), EPOLL_CTL_ADD, sock.get(), &ev)) <
        0) {
        throw_errno("epoll_ctl");
    }
    // stdin is made non-blocking for the drain loop; edge-triggered, a blocking read would
    // otherwise wait for the user instead of returning EAGAIN.
    RestoreFlags restore{STDIN_FILENO, ::fcntl(STDIN_FILENO, F_GETFL)};
    if (restore.flags >= 0) {
        ::fcntl(STDIN_FILENO, F_SETFL, restore.flags | O_NONBLOCK);
    }
    ev.events = EPOLLIN | EPOLLET;
    ev.data.u32 = kStdin;
    // Unwatched (a file), stdin never reads EAGAIN, so stdin_ready stays set until its EOF.
    ::epoll_ctl(epfd.get(), EPOLL_CTL_ADD, STDIN_FILENO, &ev);

    Session s;
    static char buf[65536];
    epoll_event events[2];
    for (;;) {
        if (s.stdin_ready) {
            on_stdin(s, buf, sizeof buf);
        }
        if (s.sock_writable) {
            on_writable(s, sock.get());
        }
        if (s.sock_readable && !s.server_closed) {
            on_readable(s, sock.get(), buf, sizeof buf);
        }
        if (s.saw_bye || (!s.stdin_open && s.out.empty() && s.replies >= s.requests)) {
            return 0;
        }
        if (s.server_closed) {
            std::fprintf(stderr, "05_epoll_et_client: the server closed the connection\n");
            return 1;
        }
        // Work left on a descriptor that is known ready: no wait, no new edge will come for it.
        bool more = (s.stdin_ready && s.stdin_open && s.out.size() < kHighWater) ||
                    s.sock_readable || (s.sock_writable && !s.out.empty());
        int nready =
            TRACE_IO("epoll_wait", epfd.get(), ::epoll_wait(epfd.get(), events, 2, more ? 0 : -1));
        for (int i = 0; i < nready; ++i) {
            uint32_t revents = events[i].events;
            if (events[i].data.u32 == kStdin) {
                s.stdin_ready = true;
                continue;
            }
            if (revents & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
                s.sock_readable = true;
            }
            if (revents & (EPOLLOUT | EPOLLHUP | EPOLLERR)) {
                s.sock_writable = true;
            }
        }
    }
}

}  // namespace

int main(int argc, char** argv) {
    CommandLine cmd{"05_epoll_et_client",
                    "05_epoll_et client: request lines on stdin, replies on stdout"};
    ClientOptions opt = client_defaults(5);
    cmd.add_client_options(opt);
    if (int rc = cmd.parse(argc, argv); rc >= 0) {
        return rc;
    }
    // MSG_NOSIGNAL on every send, and SIGPIPE ignored for anything else.
    std::signal(SIGPIPE, SIG_IGN);
    try {
        return run(opt);
    } catch (const std::exception& e) {
        return report_setup_failure(cmd.name(), e);
    }
}
