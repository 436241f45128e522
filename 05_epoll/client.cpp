// 05_epoll client: epoll on the client side, in two forms.
//
// Piped (no load options): one epoll set holds stdin and the socket, so the client reads request
// lines, sends them and prints replies as each becomes possible, never blocking on one while the
// other has something. At the end of stdin it calls shutdown(SHUT_WR): the server sees EOF after
// the last request, and we keep reading until every reply is in (Stevens' batch-mode fix: a plain
// close would throw away the replies still on their way).
//
//   printf 'PING\nTIME\n' | ./build/bin/05_epoll_client --port 9005
//
// Load (--conns N --requests M): N connections in one epoll set, each doing M ping-pong requests
// `ECHO <payload>` (--payload bytes, default 64) and checking every reply byte for byte; then one
// summary line with requests, seconds, requests/s, p50 and p99 latency and errors:
//
//   ./build/bin/05_epoll_client --port 9005 --conns 100 --requests 10000
//   requests=1000000 seconds=9.81 rps=101937 p50_us=950 p99_us=1210 errors=0
//
// Both exit 0 when every request got its reply (or the server said BYE), 1 otherwise.

#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <string>
#include <vector>

#include "common/cli.hpp"
#include "common/net.hpp"
#include "common/options.hpp"
#include "common/qa.hpp"
#include "common/trace.hpp"

using namespace iolab;
using Clock = std::chrono::steady_clock;

namespace {

constexpr size_t kMaxReply = 2 << 20;      // a reply may echo a request of up to 1 MiB
constexpr size_t kHighWater = 256 * 1024;  // stop reading stdin while this much is unsent
constexpr int kStallMs = 10000;            // load mode: give up after this long without a reply

void set_interest(int epfd, int op, int fd, uint32_t events, uint32_t tag) {
    epoll_event ev{};
    ev.events = events;
    ev.data.u32 = tag;
    if (TRACE_IO("epoll_ctl", fd, ::epoll_ctl(epfd, op, fd, &ev)) < 0) {
        throw_errno("epoll_ctl");
    }
}

// ---- Piped mode -------------------------------------------------------------------------------

enum : uint32_t { kStdin, kSocket };

int run_piped(const ClientOptions& opt) {
    Fd sock = connect_tcp(opt.host, opt.port);
    set_nonblocking(sock.get());
    set_nodelay(sock.get());
    Fd epfd(::epoll_create1(EPOLL_CLOEXEC));
    if (!epfd) {
        throw_errno("epoll_create1");
    }
    set_interest(epfd.get(), EPOLL_CTL_ADD, sock.get(), EPOLLIN, kSocket);
    // A pipe or a terminal can be watched. A regular file (or /dev/null) cannot: epoll_ctl
    // refuses it with EPERM, because such a file is always ready. Then we just read it.
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u32 = kStdin;
    bool stdin_watched = ::epoll_ctl(epfd.get(), EPOLL_CTL_ADD, STDIN_FILENO, &ev) == 0;
    bool stdin_open = true;
    bool ends_in_newline = true;
    bool shut = false;
    uint32_t stdin_events = EPOLLIN;
    uint32_t sock_events = EPOLLIN;

    std::string out;  // requests not yet sent
    LineParser in(kMaxReply);
    uint64_t requests = 0;
    uint64_t replies = 0;
    static char buf[65536];
    epoll_event events[2];
    for (;;) {
        if (!stdin_open && out.empty() && replies >= requests) {
            return 0;
        }
        bool read_file = stdin_open && !stdin_watched && out.size() < kHighWater;
        int nready = TRACE_IO("epoll_wait", epfd.get(),
                              ::epoll_wait(epfd.get(), events, 2, read_file ? 0 : -1));
        bool stdin_ready = read_file;
        bool sock_ready = false;
        for (int i = 0; i < nready; ++i) {
            (events[i].data.u32 == kStdin ? stdin_ready : sock_ready) = true;
        }
        if (stdin_ready) {
            ssize_t n = TRACE_IO("read", STDIN_FILENO, ::read(STDIN_FILENO, buf, sizeof buf));
            if (n > 0) {
                out.append(buf, static_cast<size_t>(n));
                requests += static_cast<uint64_t>(std::count(buf, buf + n, '\n'));
                ends_in_newline = buf[n - 1] == '\n';
            } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
                stdin_open = false;
                if (!ends_in_newline) {
                    out += '\n';  // the last line had no newline: it is still a request
                    ++requests;
                }
                if (stdin_watched) {
                    TRACE_IO("epoll_ctl", STDIN_FILENO,
                             ::epoll_ctl(epfd.get(), EPOLL_CTL_DEL, STDIN_FILENO, nullptr));
                    stdin_watched = false;
                }
            }
        }
        if (sock_ready) {
            ssize_t n = TRACE_IO("recv", sock.get(), ::recv(sock.get(), buf, sizeof buf, 0));
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
                // The server closed. That is the end after QUIT; otherwise replies are missing.
                if (replies >= requests && !stdin_open) {
                    return 0;
                }
                std::fprintf(stderr, "05_epoll_client: the server closed the connection\n");
                return 1;
            }
            if (n > 0) {
                in.feed(buf, static_cast<size_t>(n));
                while (auto line = in.next()) {
                    std::fwrite(line->data(), 1, line->size(), stdout);
                    std::fputc('\n', stdout);
                    ++replies;
                    if (*line == "BYE") {
                        std::fflush(stdout);
                        return 0;
                    }
                }
                std::fflush(stdout);
            }
        }
        if (!out.empty()) {
            ssize_t n = TRACE_IO("send", sock.get(),
                                 ::send(sock.get(), out.data(), out.size(), MSG_NOSIGNAL));
            if (n < 0 && errno != EAGAIN && errno != EINTR) {
                std::fprintf(stderr, "05_epoll_client: the server closed the connection\n");
                return 1;
            }
            out.erase(0, n > 0 ? static_cast<size_t>(n) : 0);
        }
        if (out.empty() && !stdin_open && !shut) {
            // Our FIN after the last request; the replies still come back on this socket.
            TRACE_IO("shutdown", sock.get(), ::shutdown(sock.get(), SHUT_WR));
            shut = true;
        }
        // Write interest only while something is unsent; stop reading stdin while the server
        // is not taking our requests.
        uint32_t want_sock = EPOLLIN;
        if (!out.empty()) {
            want_sock |= EPOLLOUT;
        }
        if (want_sock != sock_events) {
            set_interest(epfd.get(), EPOLL_CTL_MOD, sock.get(), want_sock, kSocket);
            sock_events = want_sock;
        }
        uint32_t want_stdin = 0;
        if (out.size() < kHighWater) {
            want_stdin = EPOLLIN;
        }
        if (stdin_watched && want_stdin != stdin_events) {
            set_interest(epfd.get(), EPOLL_CTL_MOD, STDIN_FILENO, want_stdin, kStdin);
            stdin_events = want_stdin;
        }
    }
}

// ---- Load mode --------------------------------------------------------------------------------

struct LoadOptions {
    int conns = 0;
    uint64_t requests = 1000;
    size_t payload = 64;
};

struct LoadConn {
    explicit LoadConn(Fd f) : fd(std::move(f)), in(kMaxReply) {}
    Fd fd;
    LineParser in;
    std::string unsent;  // the rest of a request after a short send
    uint64_t done = 0;   // replies received
    Clock::time_point sent_at;
};

// The payload of connection `id`: letters shifted by the id, so a reply that went to the wrong
// connection does not match either.
char payload_byte(size_t id, size_t k) {
    return static_cast<char>('a' + (id + k) % 26);
}

struct Load {
    LoadOptions opt;
    Fd epfd;
    std::vector<LoadConn> conns;
    std::vector<uint32_t> latency_us;
    std::string request;
    uint64_t errors = 0;
    int active = 0;
};

void finish(Load& l, size_t id) {
    LoadConn& c = l.conns[id];
    l.errors += l.opt.requests - c.done;  // none if it got every reply
    c.fd.reset();                         // close(2) also removes it from the epoll set
    --l.active;
}

void send_request(Load& l, size_t id) {
    LoadConn& c = l.conns[id];
    l.request.assign("ECHO ");
    for (size_t k = 0; k < l.opt.payload; ++k) {
        l.request += payload_byte(id, k);
    }
    l.request += '\n';
    c.sent_at = Clock::now();
    ssize_t n = TRACE_IO("send", c.fd.get(),
                         ::send(c.fd.get(), l.request.data(), l.request.size(), MSG_NOSIGNAL));
    if (n < 0 && errno != EAGAIN) {
        finish(l, id);
        return;
    }
    size_t sent = n > 0 ? static_cast<size_t>(n) : 0;
    if (sent < l.request.size()) {
        c.unsent.assign(l.request, sent);
        set_interest(l.epfd.get(), EPOLL_CTL_MOD, c.fd.get(), EPOLLIN | EPOLLOUT,
                     static_cast<uint32_t>(id));
    }
}

void on_load_writable(Load& l, size_t id) {
    LoadConn& c = l.conns[id];
    ssize_t n = TRACE_IO("send", c.fd.get(),
                         ::send(c.fd.get(), c.unsent.data(), c.unsent.size(), MSG_NOSIGNAL));
    if (n < 0 && errno != EAGAIN) {
        finish(l, id);
        return;
    }
    c.unsent.erase(0, n > 0 ? static_cast<size_t>(n) : 0);
    if (c.unsent.empty()) {
        set_interest(l.epfd.get(), EPOLL_CTL_MOD, c.fd.get(), EPOLLIN, static_cast<uint32_t>(id));
    }
}

void on_load_readable(Load& l, size_t id, char* buf, size_t size) {
    LoadConn& c = l.conns[id];
    ssize_t n = TRACE_IO("recv", c.fd.get(), ::recv(c.fd.get(), buf, size, 0));
    if (n < 0 && errno == EAGAIN) {
        return;
    }
    if (n <= 0) {
        finish(l, id);  // closed or reset before the last reply
        return;
    }
    c.in.feed(buf, static_cast<size_t>(n));
    while (auto line = c.in.next()) {
        bool same = line->size() == l.opt.payload;
        for (size_t k = 0; same && k < line->size(); ++k) {
            same = (*line)[k] == payload_byte(id, k);
        }
        if (!same) {
            ++l.errors;
        }
        auto us = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - c.sent_at);
        l.latency_us.push_back(static_cast<uint32_t>(us.count()));
        if (++c.done == l.opt.requests) {
            finish(l, id);
            return;
        }
        send_request(l, id);
        if (!c.fd) {
            return;
        }
    }
    if (c.in.too_long()) {
        finish(l, id);
    }
}

uint32_t percentile(std::vector<uint32_t>& v, double p) {
    if (v.empty()) {
        return 0;
    }
    auto nth = v.begin() + static_cast<long>(p * static_cast<double>(v.size() - 1));
    std::nth_element(v.begin(), nth, v.end());
    return *nth;
}

int run_load(const ClientOptions& copt, const LoadOptions& opt) {
    Load l;
    l.opt = opt;
    l.epfd = Fd(::epoll_create1(EPOLL_CLOEXEC));
    if (!l.epfd) {
        throw_errno("epoll_create1");
    }
    l.conns.reserve(static_cast<size_t>(opt.conns));
    for (int i = 0; i < opt.conns; ++i) {
        Fd fd = connect_tcp(copt.host, copt.port);
        set_nonblocking(fd.get());
        set_nodelay(fd.get());
        set_interest(l.epfd.get(), EPOLL_CTL_ADD, fd.get(), EPOLLIN, static_cast<uint32_t>(i));
        l.conns.emplace_back(std::move(fd));
    }
    l.latency_us.reserve(std::min<uint64_t>(opt.requests * l.conns.size(), 50'000'000));
    l.active = opt.conns;

    auto start = Clock::now();
    for (size_t id = 0; id < l.conns.size(); ++id) {
        send_request(l, id);
    }
    static char buf[65536];
    std::vector<epoll_event> events(1024);
    while (l.active > 0) {
        int nready = TRACE_IO(
            "epoll_wait", l.epfd.get(),
            ::epoll_wait(l.epfd.get(), events.data(), static_cast<int>(events.size()), kStallMs));
        if (nready == 0) {
            std::fprintf(stderr, "05_epoll_client: no reply for %d ms, giving up\n", kStallMs);
            for (size_t id = 0; id < l.conns.size(); ++id) {
                if (l.conns[id].fd) {
                    finish(l, id);
                }
            }
            break;
        }
        for (int i = 0; i < nready; ++i) {
            size_t id = events[static_cast<size_t>(i)].data.u32;
            uint32_t revents = events[static_cast<size_t>(i)].events;
            if ((revents & EPOLLOUT) && l.conns[id].fd) {
                on_load_writable(l, id);
            }
            if ((revents & (EPOLLIN | EPOLLHUP | EPOLLERR)) && l.conns[id].fd) {
                on_load_readable(l, id, buf, sizeof buf);
            }
        }
    }
    double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    uint64_t ok = l.latency_us.size();
    std::printf("requests=%llu seconds=%.3f rps=%.0f p50_us=%u p99_us=%u errors=%llu\n",
                static_cast<unsigned long long>(ok), seconds,
                seconds > 0 ? static_cast<double>(ok) / seconds : 0.0,
                percentile(l.latency_us, 0.50), percentile(l.latency_us, 0.99),
                static_cast<unsigned long long>(l.errors));
    return l.errors == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    CommandLine cmd{"05_epoll_client",
                    "05_epoll client: request lines on stdin, replies on stdout; or a load test"};
    ClientOptions opt = client_defaults(5);
    cmd.add_client_options(opt);
    LoadOptions load;
    cmd.add_option("--conns", load.conns, "Load test: connections to open", 1, 1000000);
    cmd.add_option("--requests", load.requests, "Load test: ping-pong requests per connection",
                   uint64_t{1}, uint64_t{1} << 40);
    cmd.add_option("--payload", load.payload, "Load test: bytes of each ECHO's text", size_t{0},
                   size_t{1} << 20);
    if (int rc = cmd.parse(argc, argv); rc >= 0) {
        return rc;
    }
    // MSG_NOSIGNAL on every send, and SIGPIPE ignored for anything else.
    std::signal(SIGPIPE, SIG_IGN);
    try {
        return load.conns > 0 ? run_load(opt, load) : run_piped(opt);
    } catch (const std::exception& e) {
        return report_setup_failure(cmd.name(), e);
    }
}
