// 08_reactor client: the same reactor, on the other side. Two event handlers share one loop:
// StdinHandler reads request lines from standard input and queues them for the server;
// ServerHandler sends the queue when the socket is writable and prints each reply line when it
// is readable. Neither ever blocks waiting for the other, so requests are pipelined: the client
// sends as fast as stdin delivers and prints replies as they come (in order: the server answers
// in order).
//
//   printf 'PING\nTIME\n' | ./build/bin/08_reactor_client --port 9008
//   ./build/bin/08_reactor_client < requests.txt
//
// epoll refuses regular files and /dev/null (EPERM): they are always "ready", so there is nothing
// to wait for. Then stdin is read without the demultiplexer, one buffer per loop pass, through
// post(). Exits 0 once stdin has ended and every request has its reply (or the server said BYE),
// 1 if the server closed first.

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <memory>
#include <string>
#include <system_error>

#include "08_reactor/reactor.hpp"
#include "common/cli.hpp"
#include "common/net.hpp"
#include "common/options.hpp"
#include "common/qa.hpp"
#include "common/trace.hpp"

using namespace iolab;
using reactor::EventHandler;
using reactor::kReadable;
using reactor::kWritable;
using reactor::Reactor;

namespace {

constexpr size_t kMaxReply = 1 << 20;  // bounds one reply line, not the protocol
constexpr size_t kHighWater = 256 * 1024;

class StdinHandler;

// What both handlers share.
struct Session {
    explicit Session(Reactor& r) : reactor(r) {}
    Reactor& reactor;
    EventHandler* server = nullptr;
    StdinHandler* input = nullptr;
    std::string to_server;  // request bytes not yet sent
    uint64_t requests = 0;  // complete lines queued
    uint64_t replies = 0;
    bool stdin_done = false;
    int exit_code = 0;

    void finish(int code) {
        exit_code = code;
        reactor.stop();
    }
    void check_done() {
        if (stdin_done && to_server.empty() && replies >= requests) {
            finish(0);
        }
    }
    void send_queued();
};

class StdinHandler : public EventHandler {
public:
    StdinHandler(Session& s, bool pollable) : s_(s), pollable_(pollable) {}
    int handle() const override { return STDIN_FILENO; }
    void handle_read() override;
    // EPOLLHUP while paused: the writer closed the pipe. What is left in it is bounded by the
    // pipe's capacity, so read on rather than be told about the hangup again on every wait.
    void handle_error() override {
        paused_ = false;
        s_.reactor.set_events(*this, kReadable);
        handle_read();
    }
    // Flow control: no more reading while the server is behind.
    void pause() {
        paused_ = true;
        if (pollable_) {
            s_.reactor.set_events(*this, 0);
        }
    }
    void resume() {
        if (!paused_ || s_.stdin_done) {
            return;
        }
        paused_ = false;
        if (pollable_) {
            s_.reactor.set_events(*this, kReadable);
        } else {
            s_.reactor.post([this] { handle_read(); });
        }
    }

private:
    Session& s_;
    bool pollable_;
    bool paused_ = false;
    char last_ = '\n';
};

class ServerHandler : public EventHandler {
public:
    ServerHandler(Session& s, Fd fd) : s_(s), fd_(std::move(fd)) {}
    int handle() const override { return fd_.get(); }
    void handle_read() override;
    void handle_write() override { s_.send_queued(); }

private:
    Session& s_;
    Fd fd_;
    LineParser in_{kMaxReply};
};

void StdinHandler::handle_read() {
    if (paused_ || s_.stdin_done) {
        return;
    }
    std::span<char> buf = s_.reactor.buffer();
    // One read per event: a pipe or terminal is reported readable, so this does not sleep.
    // stdin stays blocking (O_NONBLOCK would be shared with the shell that owns the terminal).
    ssize_t n = ::read(STDIN_FILENO, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) {
        return;
    }
    if (n <= 0) {
        if (last_ != '\n') {
            s_.to_server += '\n';  // the last line had no newline; send it as a line
            ++s_.requests;
        }
        s_.stdin_done = true;
        s_.input = nullptr;
        if (pollable_) {
            s_.reactor.remove_handler(*this);  // destroyed after this round
        }
        s_.send_queued();
        return;
    }
    s_.to_server.append(buf.data(), static_cast<size_t>(n));
    s_.requests += static_cast<uint64_t>(std::count(buf.data(), buf.data() + n, '\n'));
    last_ = buf[n - 1];
    s_.send_queued();
    if (s_.to_server.size() >= kHighWater) {
        pause();
    } else if (!pollable_) {
        s_.reactor.post([this] { handle_read(); });  // a file is always ready: read on next pass
    }
}

void Session::send_queued() {
    int fd = server->handle();
    while (!to_server.empty()) {
        ssize_t n =
            TRACE_IO("send", fd, ::send(fd, to_server.data(), to_server.size(), MSG_NOSIGNAL));
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                break;
            }
            std::fprintf(stderr, "08_reactor_client: the server closed the connection\n");
            finish(1);
            return;
        }
        to_server.erase(0, static_cast<size_t>(n));
    }
    reactor.set_events(*server, kReadable | (to_server.empty() ? 0 : kWritable));
    if (input != nullptr && to_server.size() < kHighWater / 4) {
        input->resume();
    }
    check_done();
}

void ServerHandler::handle_read() {
    std::span<char> buf = s_.reactor.buffer();
    ssize_t n = TRACE_IO("recv", fd_.get(), ::recv(fd_.get(), buf.data(), buf.size(), 0));
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        return;
    }
    if (n <= 0) {
        if (s_.stdin_done && s_.replies >= s_.requests) {
            s_.finish(0);
        } else {
            std::fprintf(stderr, "08_reactor_client: the server closed the connection\n");
            s_.finish(1);
        }
        return;
    }
    in_.feed(buf.data(), static_cast<size_t>(n));
    while (auto line = in_.next()) {
        std::fwrite(line->data(), 1, line->size(), stdout);
        std::fputc('\n', stdout);
        ++s_.replies;
        if (*line == "BYE") {
            std::fflush(stdout);
            s_.finish(0);
            return;
        }
    }
    in_.keep_rest();
    std::fflush(stdout);
    if (in_.too_long()) {
        std::fprintf(stderr, "08_reactor_client: a reply line longer than %zu bytes\n", kMaxReply);
        s_.finish(1);
        return;
    }
    s_.check_done();
}

int run(const ClientOptions& opt) {
    Reactor reactor;
    Session s(reactor);
    Fd fd = connect_tcp(opt.host, opt.port);
    set_nodelay(fd.get());
    set_nonblocking(fd.get());
    s.server =
        &reactor.register_handler(std::make_unique<ServerHandler>(s, std::move(fd)), kReadable);

    // Pipes, terminals and sockets can be watched; regular files and /dev/null cannot.
    std::unique_ptr<StdinHandler> unwatched;
    try {
        auto h = std::make_unique<StdinHandler>(s, true);
        s.input = h.get();
        reactor.register_handler(std::move(h), kReadable);
    } catch (const std::system_error& e) {
        if (e.code().value() != EPERM) {
            throw;
        }
        unwatched = std::make_unique<StdinHandler>(s, false);
        s.input = unwatched.get();
        reactor.post([&unwatched] { unwatched->handle_read(); });
    }
    reactor.run();
    return s.exit_code;
}

}  // namespace

int main(int argc, char** argv) {
    CommandLine cmd{"08_reactor_client",
                    "08_reactor client: request lines on stdin, replies on stdout"};
    ClientOptions opt = client_defaults(8);
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
