// The event handlers of 08_reactor's servers. Each one is called by the reactor's dispatcher
// when its descriptor is ready, so every recv and send here returns at once: the waiting was done
// by epoll_wait, for all descriptors together (phase 1); what is left is the copy (phase 2).

#include "08_reactor/connection.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>

#include "common/qa.hpp"
#include "common/stop.hpp"
#include "common/trace.hpp"

namespace reactor {

using namespace std::chrono_literals;
using iolab::Request;
using iolab::Verb;

namespace {

// Backpressure. A client that sends requests but does not read the replies fills its socket's
// send buffer, then our out_. Past kHighWater we stop reading from it (the kernel's receive
// buffer fills, TCP's window closes, the client's sends block); below kLowWater we read again.
constexpr size_t kHighWater = 256 * 1024;
constexpr size_t kLowWater = 64 * 1024;
// An idle connection should cost little: an output buffer that grew for a burst is given back.
constexpr size_t kKeepCapacity = 16 * 1024;
// How long a closing connection may take to read our last line and close its side.
constexpr auto kDrainTime = 1s;
// Connections accepted per readiness event of the listening socket, so a flood of new clients
// cannot starve the ones already connected.
constexpr int kAcceptBatch = 64;

}  // namespace

// ---- Connections: one loop's list, and the sweep ----------------------------------------------

Connections::Connections(Reactor& reactor, Server& server) : reactor_(reactor), server_(server) {
    // A sweep over every connection, a few times per idle timeout (and at least every 250 ms,
    // for the polite closes). A pass over 10,000 connections costs well under a millisecond.
    auto tick = std::chrono::milliseconds(250);
    for (double limit : {server.opt.idle_timeout, server.opt.request_timeout}) {
        if (limit > 0) {
            auto quarter = std::chrono::milliseconds(static_cast<long>(limit * 250));
            tick = std::clamp<std::chrono::milliseconds>(quarter, 10ms, tick);
        }
    }
    reactor_.every(tick, [this] { sweep(); });
}

Connection* Connections::open(Fd conn_fd, bool counted) {
    auto owned = std::make_unique<Connection>(*this, std::move(conn_fd), counted, next_serial_++);
    Connection& c = *owned;
    try {
        reactor_.register_handler(std::move(owned), kReadable);
    } catch (const std::system_error&) {
        // epoll_ctl(ADD) failed (ENOMEM, or fs.epoll.max_user_watches reached): this client
        // only. The handler has been destroyed, which closed its socket.
        if (counted) {
            server_.stats.conns.fetch_sub(1, std::memory_order_relaxed);
        }
        return nullptr;
    }
    c.index_ = static_cast<uint32_t>(all_.size());
    all_.push_back(&c);
    return &c;
}

Connection* Connections::find(int fd, uint64_t serial) const {
    auto* c = dynamic_cast<Connection*>(reactor_.handler(fd));
    return (c != nullptr && c->serial() == serial) ? c : nullptr;
}

void Connections::forget(Connection& c) {
    Connection* last = all_.back();
    all_[c.index_] = last;
    last->index_ = c.index_;
    all_.pop_back();
}

void Connections::sweep() {
    // Backwards: a connection that closes swaps the last one into its place, already visited.
    for (size_t i = all_.size(); i-- > 0;) {
        all_[i]->check_timers(reactor_.now());
    }
}

// ---- Connection: one client -------------------------------------------------------------------

Connection::Connection(Connections& table, Fd conn_fd, bool counted, uint64_t serial)
    : table_(table),
      fd_(std::move(conn_fd)),
      in_(table.server().opt.max_line),
      last_active_(table.reactor().now()),
      serial_(serial),
      counted_(counted) {}

void Connection::handle_read() {
    std::span<char> buf = reactor().buffer();
    // Readiness was reported, so this recv does not sleep: it copies what the kernel holds.
    ssize_t n = TRACE_IO("recv", fd_.get(), ::recv(fd_.get(), buf.data(), buf.size(), 0));
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
            return;
        }
        close();  // ECONNRESET and friends
        return;
    }
    if (n == 0) {
        peer_eof_ = true;  // the client shut down its write side; answer what came, then close
        progress();
        return;
    }
    if (state_ == State::closing) {
        return;  // draining after our last words: discard
    }
    last_active_ = reactor().now();
    if (table_.server().opt.mode == iolab::Mode::echo) {
        out_.append(buf.data(), static_cast<size_t>(n));
        paused_ = out_.size() >= kHighWater;
    } else {
        in_.feed(buf.data(), static_cast<size_t>(n));
        more_lines_ = true;
    }
    progress();
}

void Connection::handle_write() {
    progress();
}

// Answers the complete requests in in_, until they run out, the output passes the high-water
// mark, or a WORK goes to a worker. Replies collect in out_ and leave in one send.
void Connection::answer_buffered() {
    Server& s = table_.server();
    more_lines_ = false;
    bool line_ended = false;
    while (auto line = in_.next()) {
        line_ended = true;
        Request req = iolab::parse_request(*line);
        if (req.verb == Verb::work) {
            if (s.offload) {
                busy_ = true;
                more_lines_ = true;
                s.offload(*this, req.work_ms);
                break;
            }
            // The big handler, run by the dispatcher's own thread: every other handler of this
            // reactor waits until it returns. block_for_work ends early on SIGTERM.
            if (!iolab::block_for_work(req.work_ms)) {
                close();
                return;
            }
            last_active_ = Clock::now();  // a client waiting for its answer is not idle
        }
        iolab::append_reply(out_, req, s.stats);
        s.stats.requests.fetch_add(1, std::memory_order_relaxed);
        if (req.verb == Verb::quit) {
            state_ = State::closing;
            last_active_ = reactor().now();
            break;
        }
        if (out_.size() >= kHighWater) {
            paused_ = true;
            more_lines_ = true;
            break;
        }
    }
    if (in_.too_long()) {
        out_ += iolab::too_long_reply(in_.max_line());
        state_ = State::closing;
        last_active_ = reactor().now();
    }
    // --request-timeout counts from the first byte of an unfinished line, and more bytes of the
    // same line do not restart it (a client trickling one byte at a time is shed).
    if (!more_lines_) {
        if (in_.buffered() == 0) {
            request_since_.reset();
        } else if (line_ended || !request_since_) {
            request_since_ = reactor().now();
        }
    }
    // The rule of LineParser: the loop's buffer is about to be reused by another handler.
    in_.keep_rest();
}

// Sends out_ until it is empty or the socket's send buffer is full. False if the connection
// was closed.
bool Connection::flush() {
    while (!out_.empty()) {
        ssize_t n =
            TRACE_IO("send", fd_.get(), ::send(fd_.get(), out_.data(), out_.size(), MSG_NOSIGNAL));
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return true;  // kWritable will tell us when there is room
            }
            close();  // EPIPE, ECONNRESET: the client is gone
            return false;
        }
        out_.erase(0, static_cast<size_t>(n));
        if (!out_.empty()) {
            return true;  // a short send: the send buffer is full, EAGAIN would follow
        }
    }
    if (out_.capacity() > kKeepCapacity) {
        std::string().swap(out_);
    }
    return true;
}

bool Connection::wants_input() const {
    if (peer_eof_ || state_ == State::closed) {
        return false;
    }
    if (state_ == State::closing) {
        return true;  // read and discard, so that our close does not turn into a reset
    }
    return !busy_ && !paused_ && !more_lines_;
}

// After any event: answer what can be answered, send what can be sent, then tell the reactor
// what this connection waits for next. kWritable only while output is pending: a socket with
// room in its send buffer is always writable, and asking would wake the loop for nothing.
void Connection::progress() {
    for (;;) {
        if (state_ == State::open && more_lines_ && !busy_ && !paused_) {
            answer_buffered();
        }
        if (state_ == State::closed || !flush()) {
            return;
        }
        if (paused_ && out_.size() <= kLowWater) {
            paused_ = false;
            if (more_lines_) {
                continue;
            }
        }
        break;
    }
    if (out_.empty()) {
        if (state_ == State::closing && !write_shut_) {
            // Our last words are in the kernel's hands. FIN after them; the client reads them,
            // sees EOF, and closes, and we read its EOF below.
            TRACE_IO("shutdown", fd_.get(), ::shutdown(fd_.get(), SHUT_WR));
            write_shut_ = true;
        }
        bool done = state_ == State::closing ? write_shut_ : (!busy_ && !more_lines_);
        if (peer_eof_ && done) {
            close();
            return;
        }
    }
    reactor().set_events(*this, (wants_input() ? kReadable : 0) | (out_.empty() ? 0 : kWritable));
}

void Connection::say_goodbye(std::string_view last_words) {
    if (state_ != State::open) {
        return;
    }
    out_ += last_words;
    state_ = State::closing;
    last_active_ = reactor().now();
    progress();
}

void Connection::check_timers(Clock::time_point now) {
    if (state_ == State::closing) {
        if (now - last_active_ >= kDrainTime) {
            close();
        }
        return;
    }
    const ServerOptions& opt = table_.server().opt;
    if (state_ != State::open || busy_) {
        return;
    }
    if (opt.idle_timeout > 0 && now - last_active_ >= opt.idle_limit()) {
        say_goodbye(iolab::kIdleTimeout);
    } else if (opt.request_timeout > 0 && request_since_ &&
               now - *request_since_ >= opt.request_limit()) {
        say_goodbye(iolab::kRequestTimeout);
    }
}

void Connection::finish_work(int ms) {
    Server& s = table_.server();
    busy_ = false;
    last_active_ = reactor().now();
    iolab::append_reply(out_, Request{Verb::work, {}, ms}, s.stats);
    s.stats.requests.fetch_add(1, std::memory_order_relaxed);
    progress();
}

void Connection::close() {
    if (state_ == State::closed) {
        return;
    }
    state_ = State::closed;
    if (counted_) {
        table_.server().stats.conns.fetch_sub(1, std::memory_order_relaxed);
    }
    table_.forget(*this);
    reactor().remove_handler(*this);  // destroyed, and its socket closed, after this round
}

// ---- Acceptor ---------------------------------------------------------------------------------

Acceptor::Acceptor(Fd listen_fd, Connections& local, std::function<void(Fd)> on_accept)
    : listen_fd_(std::move(listen_fd)), local_(local), on_accept_(std::move(on_accept)) {}

void Acceptor::handle_read() {
    Server& s = local_.server();
    for (int i = 0; i < kAcceptBatch; ++i) {
        // The handshake is done (the kernel did it); accept4 only takes the connection out of
        // the listen queue. SOCK_NONBLOCK: no call on it may ever sleep in a handler.
        int conn_fd =
            TRACE_IO("accept4", listen_fd_.get(),
                     ::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (conn_fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            // Out of descriptors. The connection stays in the listen queue, so the listening
            // socket stays readable and a level-triggered loop would spin. The spare descriptor
            // (libev's and muduo's trick, common/conn.hpp) makes room to turn one client away.
            if ((errno == EMFILE || errno == ENFILE) &&
                spare_fd_.refuse_one(listen_fd_.get(), s.stats)) {
                continue;
            }
            return;  // EAGAIN: the listen queue is empty
        }
        Fd fd(conn_fd);
        int one = 1;
        ::setsockopt(conn_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        s.stats.accepted.fetch_add(1, std::memory_order_relaxed);
        // Only this thread adds to conns, so the check cannot race with another accept; other
        // loops only ever lower the count.
        if (s.stats.conns.load(std::memory_order_relaxed) >=
            static_cast<uint64_t>(s.opt.max_conns)) {
            s.stats.refused.fetch_add(1, std::memory_order_relaxed);
            if (Connection* c = local_.open(std::move(fd), false)) {
                c->say_goodbye(iolab::kServerFull);
            }
            continue;
        }
        s.stats.conns.fetch_add(1, std::memory_order_relaxed);
        on_accept_(std::move(fd));
    }
}

int StopHandler::handle() const {
    return iolab::stop_fd();
}

}  // namespace reactor
