// yardstick_asio: the smallest echo server standalone Asio users write, one thread, nothing else.
//
// It is the measure for 09_proactor_asio (bench/README.md): the lab's variant must spend no more
// than 5% more server CPU per echoed request than this, side by side in one run. So it is written
// the way Asio's own users write an echo server and is given nothing the lab's QA protocol needs:
// no line parser, no timers, no STATS, no thread pool, no --max-conns refusal.
//
// One session per connection owns a buffer. A read is initiated into it; its completion
// initiates a write of the bytes that came (async_write goes on after short writes and completes
// once); the write's completion initiates the next read. The buffer belongs to whichever
// operation is out, and at most one is. Under it Asio's reactor does the recvmsg/sendmsg itself
// when epoll_wait reports the socket, and tries each one at once before waiting (speculatively),
// so an echo costs a recvmsg, a sendmsg and the recvmsg that finds the socket empty.
//
// Run it:    ./build/bin/yardstick_asio_server --port 0
// Watch:     strace -f -e trace=epoll_wait,recvmsg,sendmsg ./build/bin/yardstick_asio_server

#include <asio.hpp>

#include <array>
#include <csignal>
#include <memory>

#include "common/cli.hpp"
#include "common/options.hpp"

using asio::ip::tcp;

namespace {

class Session : public std::enable_shared_from_this<Session> {
public:
    explicit Session(tcp::socket socket) : socket_(std::move(socket)) {}

    void read() {
        socket_.async_read_some(asio::buffer(buf_),
                                [self = shared_from_this()](asio::error_code ec, size_t n) {
                                    if (!ec) {
                                        self->write(n);
                                    }
                                });
    }

private:
    void write(size_t n) {
        asio::async_write(socket_, asio::buffer(buf_, n),
                          [self = shared_from_this()](asio::error_code ec, size_t) {
                              if (!ec) {
                                  self->read();
                              }
                          });
    }

    // The last handler to finish drops the last reference, and the socket closes with it: on
    // EOF, a reset or EPIPE no operation is initiated again.
    tcp::socket socket_;
    std::array<char, 16384> buf_;
};

void accept(tcp::acceptor& acceptor) {
    acceptor.async_accept([&acceptor](asio::error_code ec, tcp::socket socket) {
        if (ec == asio::error::operation_aborted) {
            return;
        }
        if (!ec) {
            // Each reply is sent now rather than held back by Nagle, as in the lab's servers.
            socket.set_option(tcp::no_delay(true), ec);
            std::make_shared<Session>(std::move(socket))->read();
        }
        accept(acceptor);
    });
}

}  // namespace

int main(int argc, char** argv) {
    iolab::CommandLine cmd{"yardstick_asio_server",
                           "yardstick_asio: a minimal echo server on standalone Asio"};
    iolab::ServerOptions opt = iolab::server_defaults(0);
    opt.port = 9101;
    opt.mode = iolab::Mode::echo;
    cmd.add_server_options(opt);
    if (int rc = cmd.parse(argc, argv); rc >= 0) {
        return rc;
    }
    if (opt.mode != iolab::Mode::echo) {
        std::fprintf(stderr, "%s: echo only (--mode echo)\n", cmd.name().c_str());
        return 2;
    }
    try {
        asio::io_context io(1);  // one thread runs it
        tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address(opt.host), opt.port));
        // SIGINT and SIGTERM arrive as one more asynchronous wait; io.stop() ends run(), and
        // destroying io destroys every outstanding handler and the sessions they hold.
        asio::signal_set signals(io, SIGINT, SIGTERM);
        signals.async_wait([&io](asio::error_code, int) { io.stop(); });
        accept(acceptor);
        iolab::announce_listening(acceptor.native_handle(), "yardstick_asio", opt);
        io.run();
        return 0;
    } catch (const std::exception& e) {
        return iolab::report_setup_failure(cmd.name(), e);
    }
}
