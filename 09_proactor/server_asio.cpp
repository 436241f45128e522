// 09_proactor_asio: the same protocol on standalone Asio, the library the seed names as a
// proactor.
//
// Asio's interface is the proactor's: we initiate an asynchronous operation with a buffer
// (socket.async_read_some, asio::async_write), and io_context::run(), the completion dispatcher,
// later calls our completion handler with the bytes already in that buffer. On Linux the engine
// under it is a reactor: one epoll set (edge-triggered), and run() does the recvmsg/sendmsg
// itself when epoll says the socket is ready, then queues the handler. So this is an emulated
// proactor, like server_epoll.cpp, but written by people who have tuned it for twenty years:
// it tries a read or write at once before waiting (speculative IO), so a write to a socket with
// room in its buffer never waits for EPOLLOUT.
//
// Who owns a buffer: from initiation to completion the operation does. Session::buf_ is not
// touched while a read is out, Session::sending_ not while a write is out; replies produced in
// the meantime (a timeout's ERR line) go to Session::out_. The handler holds a shared_ptr to its
// Session, so a session lives exactly as long as some operation of it is outstanding.
//
// Reads and writes take turns, as in Asio's own echo examples: a read is initiated only once
// everything owed has been sent. That is the backpressure (a client that does not read our
// replies is not read either, so what we hold for it stays bounded), and it keeps one operation
// per session out at a time, whose handler memory Asio recycles instead of allocating.
//
// WORK: one thread runs io_context, and WORK is posted to an asio::thread_pool (--workers N,
// default 4), started by the first WORK; its completion is posted back to io_context. So WORK
// stalls neither the loop nor other connections (traits: threads). While a WORK is out the
// session reads no further input, which keeps its replies in order and its input bounded. Until
// the first WORK the server is one thread, and a process of one thread is cheaper in every
// socket call: the kernel need not count a reference to the socket's file for the call's
// duration (the descriptor table is not shared), and glibc skips the cancellation-point
// bookkeeping around recv and send.
//
// Limits: one io_context thread does all the copying.
//
// Run it:    ./build/bin/09_proactor_asio_server               (listens on 127.0.0.1:9009)
// Watch:     strace -f -e trace=epoll_wait,epoll_ctl,recvmsg,sendmsg ./build/bin/09_proactor_...
//            shows the reactor inside; --trace prints each completion with the time since its
//            initiation (the wait and the copy together).

#include <asio.hpp>

#include <array>
#include <csignal>
#include <memory>
#include <optional>
#include <string>
#include <unistd.h>

#include "common/cli.hpp"
#include "common/options.hpp"
#include "common/qa.hpp"
#include "common/stop.hpp"
#include "common/trace.hpp"

using namespace iolab;
using asio::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

constexpr auto kDrain = std::chrono::milliseconds(1000);

ServerOptions opt = server_defaults(9);
ServerStats stats("09_proactor_asio");

// Asio makes the system calls; we trace each completion, timed from its initiation, and count
// it for STATS syscalls= (strace shows the epoll_wait calls in between).
trace::Clock::time_point trace_start() {
    return trace::enabled() ? trace::Clock::now() : trace::Clock::time_point{};
}
void trace_done(const char* op, int fd, const asio::error_code& ec, size_t n,
                trace::Clock::time_point t0) {
    trace::count();
    if (trace::enabled()) {
        // EOF is Asio's own error code; trace it as recv(2) would report it, as 0 bytes.
        long ret = ec == asio::error::eof ? 0 : ec ? -ec.value() : static_cast<long>(n);
        trace::record(op, fd, ret, t0);
    }
}

// The pool that runs WORK, started on first use (from the io_context thread, the only caller).
class Workers {
public:
    explicit Workers(int threads) : threads_(threads) {}
    asio::thread_pool& pool() {
        if (!pool_) {
            pool_.emplace(static_cast<size_t>(threads_));
        }
        return *pool_;
    }
    void join() {
        if (pool_) {
            pool_->join();
        }
    }

private:
    int threads_;
    std::optional<asio::thread_pool> pool_;
};

class Session : public std::enable_shared_from_this<Session> {
public:
    Session(tcp::socket socket, asio::io_context& io, Workers& workers)
        : socket_(std::move(socket)),
          timer_(io),
          request_timer_(io),
          io_(io),
          workers_(workers),
          in_(opt.max_line) {}

    void start() {
        stats.conns.fetch_add(1, std::memory_order_relaxed);
        if (opt.idle_timeout > 0) {
            arm_timer(idle_period());
        }
        initiate_read();
    }

private:
    // ---- initiators ----

    // Only when everything owed has gone: reads and writes take turns.
    void initiate_read() {
        if (reading_ || writing_ || !out_.empty() || closed_ || working_ || peer_closed_ ||
            close_after_send_) {
            return;
        }
        reading_ = true;
        auto t0 = trace_start();
        socket_.async_read_some(asio::buffer(buf_),
                                [self = shared_from_this(), t0](asio::error_code ec, size_t n) {
                                    self->on_read(ec, n, t0);
                                });
    }

    // One write at a time carries every reply produced since the last one.
    void initiate_write() {
        if (writing_ || closed_ || out_.empty()) {
            return;
        }
        writing_ = true;
        sending_.swap(out_);  // out_ gets the old buffer back, capacity and all
        auto t0 = trace_start();
        // async_write is a composed operation: it goes on after short writes until every byte
        // has gone, and completes once.
        asio::async_write(socket_, asio::buffer(sending_),
                          [self = shared_from_this(), t0](asio::error_code ec, size_t n) {
                              self->on_write(ec, n, t0);
                          });
    }

    // ---- completion handlers ----

    void on_read(asio::error_code ec, size_t n, trace::Clock::time_point t0) {
        reading_ = false;
        trace_done("async_read_some", native_fd(), ec, n, t0);
        if (closed_) {
            return;
        }
        if (ec == asio::error::eof) {
            peer_closed_ = true;  // answer what came, send it, then close
            finish();
            return;
        }
        if (ec) {
            close();  // reset, and the like: this connection only
            return;
        }
        if (opt.idle_timeout > 0) {
            last_active_ = Clock::now();
            idle_warned_ = false;
        }
        if (!draining_ && opt.mode == Mode::echo) {
            out_.append(buf_.data(), n);
        } else if (!draining_) {
            in_.feed(buf_.data(), n);
            answer();
        }
        initiate_write();
        initiate_read();
    }

    // Answers every complete line, until a WORK goes to the pool.
    void answer() {
        bool line_ended = false;
        while (!working_ && !close_after_send_) {
            auto line = in_.next();
            if (!line) {
                break;
            }
            line_ended = true;
            Request req = parse_request(*line);
            if (req.verb == Verb::work) {
                // No read is initiated while WORK is out, so buf_ keeps its bytes and the parser's
                // view of the lines after this one stays valid until on_work_done parses them.
                working_ = true;
                asio::post(workers_.pool(), [self = shared_from_this(), ms = req.work_ms] {
                    bool done = block_for_work(ms);
                    asio::post(self->io_, [self, ms, done] { self->on_work_done(ms, done); });
                });
                return;
            }
            append_reply(out_, req, stats);
            stats.requests.fetch_add(1, std::memory_order_relaxed);
            close_after_send_ = req.verb == Verb::quit;
        }
        if (in_.too_long() && !draining_) {
            out_ += too_long_reply(opt.max_line);
            draining_ = shut_after_send_ = true;
        }
        if (!working_ && !draining_ && !close_after_send_) {
            track_request(line_ended);
        }
    }

    // --request-timeout counts from the first byte of an unfinished line; more bytes of the same
    // line do not restart it (a client trickling a byte at a time is shed), and a finished line
    // with nothing after it stops it.
    void track_request(bool line_ended) {
        if (opt.request_timeout <= 0) {
            return;
        }
        if (in_.buffered() == 0) {
            request_pending_ = false;
            request_timer_.cancel();
        } else if (line_ended || !request_pending_) {
            request_pending_ = true;
            request_timer_.expires_after(opt.request_limit());
            request_timer_.async_wait([self = shared_from_this()](asio::error_code ec) {
                if (!ec) {
                    self->on_request_timeout();
                }
            });
        }
    }

    void on_request_timeout() {
        if (closed_ || draining_ || close_after_send_ || working_ || !request_pending_) {
            return;
        }
        // The same polite close as after an over-long line: the ERR line, FIN, then a drain.
        request_pending_ = false;
        out_ += kRequestTimeout;
        draining_ = shut_after_send_ = true;
        initiate_write();
        finish();
    }

    void on_work_done(int ms, bool done) {
        working_ = false;
        if (closed_ || !done) {
            return;  // closed meanwhile, or the server is stopping
        }
        append_reply(out_, Request{Verb::work, {}, ms}, stats);
        stats.requests.fetch_add(1, std::memory_order_relaxed);
        answer();
        initiate_write();
        initiate_read();
        finish();
    }

    void on_write(asio::error_code ec, size_t n, trace::Clock::time_point t0) {
        writing_ = false;
        trace_done("async_write", native_fd(), ec, n, t0);
        if (closed_) {
            return;
        }
        if (ec) {
            close();  // EPIPE, ECONNRESET: the client is gone
            return;
        }
        sending_.clear();
        initiate_write();
        initiate_read();
        finish();
    }

    // Once every reply has gone: FIN after an ERR line, or close.
    void finish() {
        if (closed_ || writing_ || working_ || !out_.empty()) {
            return;
        }
        if (shut_after_send_) {
            // FIN after the ERR line, then read and discard for a moment: a close with unread
            // input would send RST, and the RST could destroy the ERR line in flight.
            shut_after_send_ = false;
            asio::error_code ignored;
            socket_.shutdown(tcp::socket::shutdown_send, ignored);
            drain_deadline_ = Clock::now() + kDrain;
            arm_timer(kDrain);
        }
        if (close_after_send_ || peer_closed_) {
            close();
        }
    }

    // One timer per session: the idle timeout, or the end of a drain.
    void arm_timer(Clock::duration after) {
        timer_.expires_after(after);
        timer_.async_wait([self = shared_from_this()](asio::error_code ec) {
            if (!ec) {
                self->on_timer();
            }
        });
    }

    Clock::duration idle_period() const {
        return std::chrono::duration_cast<Clock::duration>(
            std::chrono::duration<double>(opt.idle_timeout));
    }

    void on_timer() {
        if (closed_) {
            return;
        }
        auto now = Clock::now();
        if (draining_ && !shut_after_send_ && now >= drain_deadline_) {
            close();
            return;
        }
        if (draining_ || opt.idle_timeout <= 0) {
            return;
        }
        if (now - last_active_ < idle_period()) {
            arm_timer(last_active_ + idle_period() - now);  // heard from it since: wait the rest
            return;
        }
        if (idle_warned_) {
            close();  // it did not even read the ERR line
            return;
        }
        idle_warned_ = close_after_send_ = true;
        out_ += kIdleTimeout;
        initiate_write();
        arm_timer(idle_period());
    }

    void close() {
        if (closed_) {
            return;
        }
        closed_ = true;
        stats.conns.fetch_sub(1, std::memory_order_relaxed);
        // Outstanding operations complete with operation_aborted; their handlers hold the last
        // references to this session.
        asio::error_code ignored;
        timer_.cancel();
        request_timer_.cancel();
        socket_.close(ignored);
    }

    int native_fd() { return closed_ ? -1 : socket_.native_handle(); }

    tcp::socket socket_;
    asio::steady_timer timer_;
    asio::steady_timer request_timer_;  // --request-timeout
    asio::io_context& io_;
    Workers& workers_;
    std::array<char, 16384> buf_;  // the read buffer, reused for every read of this session
    LineParser in_;
    std::string out_;      // replies not yet handed to a write
    std::string sending_;  // the write in flight: Asio's until it completes
    bool reading_ = false, writing_ = false, working_ = false, closed_ = false;
    bool peer_closed_ = false, close_after_send_ = false;
    bool draining_ = false, shut_after_send_ = false, idle_warned_ = false;
    bool request_pending_ = false;  // request_timer_ runs for an unfinished line
    Clock::time_point last_active_ = Clock::now(), drain_deadline_;
};

class Server {
public:
    Server(asio::io_context& io, Workers& workers, tcp::endpoint where)
        : io_(io), workers_(workers), acceptor_(io), pause_(io) {
        std::string name = opt.host + ":" + std::to_string(opt.port);
        asio::error_code ec;
        acceptor_.open(where.protocol(), ec);
        if (!ec) {
            acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
        }
        if (!ec) {
            acceptor_.bind(where, ec);
        }
        if (!ec) {
            acceptor_.listen(asio::socket_base::max_listen_connections, ec);
        }
        if (ec) {
            throw std::system_error(ec, "bind " + name);
        }
    }
    tcp::acceptor& acceptor() { return acceptor_; }

    void initiate_accept() {
        acceptor_.async_accept(
            [this](asio::error_code ec, tcp::socket socket) { on_accept(ec, std::move(socket)); });
    }

private:
    void on_accept(asio::error_code ec, tcp::socket socket) {
        if (ec == asio::error::operation_aborted) {
            return;
        }
        if (ec == asio::error::no_descriptors || ec.value() == ENFILE) {
            // Out of descriptors: accepting again at once would fail at once. Wait a moment.
            pause_.expires_after(std::chrono::milliseconds(100));
            pause_.async_wait([this](asio::error_code) { initiate_accept(); });
            return;
        }
        initiate_accept();
        if (ec) {
            return;  // that client left before we took it
        }
        stats.accepted.fetch_add(1, std::memory_order_relaxed);
        asio::error_code ignored;
        if (stats.conns.load(std::memory_order_relaxed) >= static_cast<uint64_t>(opt.max_conns)) {
            // A new socket's send buffer is empty: this small write cannot block.
            asio::write(socket, asio::buffer(kServerFull), ignored);
            stats.refused.fetch_add(1, std::memory_order_relaxed);
            return;
        }
        socket.set_option(tcp::no_delay(true), ignored);
        std::make_shared<Session>(std::move(socket), io_, workers_)->start();
    }

    asio::io_context& io_;
    Workers& workers_;
    tcp::acceptor acceptor_;
    asio::steady_timer pause_;
};

int run(int worker_threads) {
    // Concurrency hint 1: one thread runs this io_context (the pool only posts to it).
    asio::io_context io(1);
    Workers workers(worker_threads);
    Server server(io, workers, tcp::endpoint(asio::ip::make_address(opt.host), opt.port));
    // The stop signal arrives as a readable self-pipe: one more asynchronous wait.
    asio::posix::stream_descriptor stop_watch(io, ::dup(stop_fd()));
    stop_watch.async_wait(asio::posix::stream_descriptor::wait_read,
                          [&io](asio::error_code) { io.stop(); });
    server.initiate_accept();
    announce_listening(server.acceptor().native_handle(), stats.model, opt);
    io.run();
    workers.join();  // a worker in WORK returns early: block_for_work watches the stop flag
    return 0;        // destroying `io` destroys the pending handlers and with them every session
}

}  // namespace

int main(int argc, char** argv) {
    CommandLine cmd{"09_proactor_asio_server", "09_proactor_asio: the protocol on standalone Asio"};
    cmd.add_server_options(opt);
    int workers = 4;
    cmd.add_option("--workers", workers, "threads of the pool that runs WORK", 1, 256);
    if (int rc = cmd.parse(argc, argv); rc >= 0) {
        return rc;
    }
    // Asio sends with MSG_NOSIGNAL; ignoring SIGPIPE as well keeps any other write from
    // killing the server.
    std::signal(SIGPIPE, SIG_IGN);
    try {
        install_stop_handlers();
        return run(workers);
    } catch (const std::exception& e) {
        return report_setup_failure(cmd.name(), e);
    }
}
