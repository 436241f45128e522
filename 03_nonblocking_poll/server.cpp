// 03_nonblocking_poll: one thread, non-blocking sockets, and a loop that asks every socket in
// turn whether it has anything. The "not recommended" model, built correctly so its cost shows.
//
// The model: every socket has O_NONBLOCK set. A call that would have to wait does not wait; it
// fails at once with EAGAIN ("nothing yet, try again"). So one thread can look after many
// sockets: each pass of the loop calls accept(2) on the listening socket, then send(2) (if output
// is pending) and recv(2) on every connection, and moves on whenever the kernel says EAGAIN.
//
// The two phases of IO: phase 1 (waiting for data) no longer blocks anyone; instead the process
// asks, and asks, and asks. Phase 2 (the kernel copying bytes into our buffer) still happens
// inside recv(2), synchronously, when the data is there. The kernel never tells us which socket
// is ready; we find out by calling, and almost every call comes back EAGAIN. STATS eagain=N
// counts them.
//
// Limits: the loop never sleeps, so the server takes a whole core even with no client at all;
// the cost of each pass grows with the number of connections, ready or not. --sleep-us N sleeps
// between passes: less CPU, but up to N microseconds more latency for every request. WORK runs on
// the only thread, so it stalls every client. A client that stops reading: once its unsent
// output passes 256 KiB we stop reading its requests until it drains.
//
// Run it:    ./build/bin/03_nonblocking_poll_server           (listens on 127.0.0.1:9003)
// Talk:      nc 127.0.0.1 9003   then PING, STATS (twice: see eagain= climb while you type)
// Watch:     top -p $(pgrep -f 03_nonblocking_poll_server)    about 100% CPU with no clients
//            strace -c -p $(pgrep -f 03_nonblocking_poll_server)   (Ctrl-C: a wall of accept)
//            --trace prints every one of those calls: -EAGAIN, -EAGAIN, -EAGAIN, ...

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "common/net.hpp"
#include "common/options.hpp"
#include "common/qa.hpp"
#include "common/stop.hpp"
#include "common/trace.hpp"

using namespace iolab;
using Clock = std::chrono::steady_clock;

namespace {

// Above this much unsent output, stop reading the connection's requests until it drains.
constexpr size_t kHighWater = 256 * 1024;
// How long an over-long line's sender gets to read our ERR line before we close.
constexpr auto kDrain = std::chrono::seconds(1);
// How long a closing connection may take to accept its last replies. A client that never reads
// would otherwise hold its connection (and up to kHighWater of output) for ever.
constexpr auto kCloseGrace = std::chrono::seconds(5);
// After EMFILE, leave new clients in the backlog this long rather than failing every pass.
constexpr auto kAcceptPause = std::chrono::milliseconds(100);

enum class State {
    open,      // reading requests, sending replies
    closing,   // send what is left, then close (QUIT, idle timeout, client's EOF)
    draining,  // over-long line: ERR sent, write side shut; discard input until EOF or deadline
    closed,
};

struct Conn {
    Fd fd;
    LineParser in;
    std::string out;  // replies not yet accepted by send(2)
    size_t sent = 0;  // bytes at the front of `out` already sent
    State state = State::open;
    Clock::time_point last_input;   // for --idle-timeout
    Clock::time_point drain_until;  // while draining or closing: give up at this time
    bool fin_sent = false;          // while draining: write side shut down after the ERR line
};

struct Server {
    Server(const ServerOptions& o, Fd l) : opt(o), listen_fd(std::move(l)) {}
    const ServerOptions& opt;
    Fd listen_fd;
    std::vector<Conn> conns;
    ServerStats stats{"03_nonblocking_poll"};
    uint64_t eagain = 0;  // calls that came back EAGAIN: the price of asking instead of waiting
    Clock::time_point accept_paused_until;
    char buf[65536];  // one receive buffer for every connection: the loop serves one at a time
};

bool would_block(int err) {
    return err == EAGAIN || err == EWOULDBLOCK;
}

void close_conn(Server& s, Conn& c) {
    c.fd.reset();
    c.state = State::closed;
    s.stats.conns.fetch_sub(1, std::memory_order_relaxed);
}

void begin_closing(Conn& c, Clock::time_point now) {
    c.state = State::closing;
    c.drain_until = now + kCloseGrace;
}

// Takes every client waiting in the backlog; the listening socket is non-blocking too, so the
// last accept of each pass says EAGAIN.
void on_accept(Server& s, Clock::time_point now) {
    if (now < s.accept_paused_until) {
        return;
    }
    for (;;) {
        int conn_fd =
            TRACE_IO("accept", s.listen_fd.get(),
                     ::accept4(s.listen_fd.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (conn_fd < 0) {
            if (would_block(errno)) {
                ++s.eagain;
            } else if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                s.accept_paused_until = now + kAcceptPause;
            }
            return;  // EAGAIN, or a client that vanished (ECONNABORTED): try again next pass
        }
        s.stats.accepted.fetch_add(1, std::memory_order_relaxed);
        if (s.conns.size() >= static_cast<size_t>(s.opt.max_conns)) {
            // A fresh socket's send buffer is empty: this short line goes out whole.
            ::send(conn_fd, kServerFull.data(), kServerFull.size(), MSG_NOSIGNAL);
            ::close(conn_fd);
            s.stats.refused.fetch_add(1, std::memory_order_relaxed);
            continue;
        }
        set_nodelay(conn_fd);
        s.conns.push_back(
            {Fd(conn_fd), LineParser(s.opt.max_line), {}, 0, State::open, now, {}, false});
        s.stats.conns.fetch_add(1, std::memory_order_relaxed);
    }
}

// Sends as much of c.out as the socket's send buffer takes; keeps the rest for the next pass.
void on_writable(Server& s, Conn& c) {
    while (c.sent < c.out.size()) {
        ssize_t n = TRACE_IO(
            "send", c.fd.get(),
            ::send(c.fd.get(), c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL));
        if (n < 0) {
            if (would_block(errno)) {
                ++s.eagain;  // send buffer full: a short write, the rest waits in c.out
                return;
            }
            if (errno == EINTR) {
                continue;
            }
            close_conn(s, c);  // EPIPE, ECONNRESET: the client is gone
            return;
        }
        c.sent += static_cast<size_t>(n);
    }
    c.out.clear();
    c.sent = 0;
}

// Answers every complete request in the bytes one recv delivered.
void handle_requests(Server& s, Conn& c) {
    while (auto line = c.in.next()) {
        Request req = parse_request(*line);
        // The only thread waits here, and with it every other client.
        if (req.verb == Verb::work && !block_for_work(req.work_ms)) {
            return;  // stopping
        }
        append_reply(c.out, req, s.stats);
        s.stats.requests.fetch_add(1, std::memory_order_relaxed);
        if (req.verb == Verb::quit) {
            begin_closing(c, Clock::now());
            return;
        }
    }
    if (c.in.too_long()) {
        c.out += too_long_reply(s.opt.max_line);
        c.state = State::draining;
        c.drain_until = Clock::now() + kDrain;
        return;
    }
    c.in.keep_rest();  // s.buf is reused by the next connection
}

void on_readable(Server& s, Conn& c, Clock::time_point now) {
    ssize_t n = TRACE_IO("recv", c.fd.get(), ::recv(c.fd.get(), s.buf, sizeof s.buf, 0));
    if (n < 0) {
        if (would_block(errno)) {
            ++s.eagain;  // nothing has arrived: the answer to almost every call
        } else if (errno != EINTR) {
            close_conn(s, c);
        }
        return;
    }
    if (n == 0) {
        // The client shut down its write side. Send what it is owed, then close.
        if (c.state == State::draining) {
            close_conn(s, c);
        } else {
            begin_closing(c, now);
        }
        return;
    }
    if (c.state == State::draining) {
        return;  // discarded
    }
    c.last_input = now;
    if (s.opt.mode == Mode::echo) {
        c.out.append(s.buf, static_cast<size_t>(n));
    } else {
        c.in.feed(s.buf, static_cast<size_t>(n));
        handle_requests(s, c);
    }
}

// One connection's turn in the pass: flush output, read if it may, apply its deadlines.
void visit(Server& s, Conn& c, Clock::time_point now) {
    if (!c.out.empty()) {
        on_writable(s, c);
    }
    if (c.state == State::open && c.out.size() - c.sent < kHighWater) {
        on_readable(s, c, now);
        if (c.state == State::open && !c.out.empty()) {
            on_writable(s, c);  // the replies to this batch, in one send
        }
    }
    if (c.state == State::closing && (c.out.empty() || now >= c.drain_until)) {
        close_conn(s, c);
    } else if (c.state == State::draining) {
        if (c.out.empty() && !c.fin_sent) {
            // The ERR line has gone out; FIN follows it. Closing now, with the client's unread
            // bytes in our receive buffer, would send RST and could destroy the ERR line.
            ::shutdown(c.fd.get(), SHUT_WR);
            c.fin_sent = true;
        }
        if (c.fin_sent) {
            on_readable(s, c, now);  // discards, until the client's EOF
        }
        if (c.state == State::draining && now >= c.drain_until) {
            close_conn(s, c);
        }
    } else if (c.state == State::open && s.opt.idle_timeout > 0 &&
               now - c.last_input >= std::chrono::duration<double>(s.opt.idle_timeout)) {
        c.out += kIdleTimeout;
        begin_closing(c, now);
    }
}

int run(const ServerOptions& opt, int sleep_us) {
    Server s{opt, listen_tcp(opt.host, opt.port, SOCK_NONBLOCK)};
    s.stats.extra = [&s] { return "eagain=" + std::to_string(s.eagain); };
    announce_listening(s.listen_fd.get(), s.stats.model, opt);

    // The busy loop. Nothing here ever waits for the kernel; a stop signal is noticed within
    // one pass.
    while (!stop_requested()) {
        auto now = Clock::now();
        on_accept(s, now);
        for (Conn& c : s.conns) {
            visit(s, c, now);
        }
        std::erase_if(s.conns, [](const Conn& c) { return c.state == State::closed; });
        if (sleep_us > 0) {
            std::this_thread::sleep_for(std::chrono::microseconds(sleep_us));
        }
    }
    return 0;  // every Fd closes as s goes out of scope
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"03_nonblocking_poll: one thread polling non-blocking sockets in a busy loop",
                 "03_nonblocking_poll_server"};
    ServerOptions opt = server_defaults(3);
    add_server_options(app, opt);
    int sleep_us = 0;
    app.add_option("--sleep-us", sleep_us,
                   "Sleep this many microseconds between passes: less CPU, more latency")
        ->capture_default_str()
        ->check(CLI::Range(0, 1000000));
    if (int rc = parse_command_line(app, argc, argv); rc >= 0) {
        return rc;
    }
    // A client that vanishes turns our next send into EPIPE; every send passes MSG_NOSIGNAL,
    // and ignoring SIGPIPE as well keeps any other write from killing the server.
    std::signal(SIGPIPE, SIG_IGN);
    try {
        install_stop_handlers();
        return run(opt, sleep_us);
    } catch (const std::exception& e) {
        return report_setup_failure(app.get_name(), e);
    }
}
