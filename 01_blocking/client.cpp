// 01_blocking client: one request line from stdin, one blocking wait for its reply, repeat.
//
// The client blocks the same way the server does: while it waits in recv(2) for a reply it
// cannot read stdin, and while it waits for stdin it cannot notice that the server went away.
// That is fine for one question at a time; 02's client uses two threads to do both at once.
//
//   printf 'PING\nTIME\n' | ./build/bin/01_blocking_client --port 9001
//
// Exits 0 once every request has its reply (or the server said BYE and closed), 1 if the server
// closed or failed first.

#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <string>

#include "common/cli.hpp"
#include "common/net.hpp"
#include "common/options.hpp"
#include "common/qa.hpp"

using namespace iolab;

namespace {

// Replies are lines too; this bounds one reply line, not the protocol.
constexpr size_t kMaxReply = 1 << 20;

// Blocks until one whole reply line is buffered in `in`, reading the socket as needed.
// Returns false on EOF or error.
bool read_reply(int fd, LineParser& in, std::string& reply) {
    static char buf[65536];
    for (;;) {
        if (auto line = in.next()) {
            reply.assign(*line);
            return true;
        }
        if (in.too_long()) {
            return false;
        }
        long n = read_some(fd, buf, sizeof buf);
        if (n <= 0) {
            return false;
        }
        in.feed(buf, static_cast<size_t>(n));
    }
}

int run(const ClientOptions& opt) {
    Fd fd = connect_tcp(opt.host, opt.port);
    set_nodelay(fd.get());
    LineParser in(kMaxReply);
    std::string request;
    std::string reply;
    while (std::getline(std::cin, request)) {
        request += '\n';
        if (write_all(fd.get(), request) != 0) {
            std::cerr << "01_blocking_client: the server closed the connection\n";
            return 1;
        }
        if (!read_reply(fd.get(), in, reply)) {
            std::cerr << "01_blocking_client: the server closed the connection\n";
            return 1;
        }
        std::cout << reply << '\n' << std::flush;
        if (reply == "BYE") {
            return 0;
        }
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    CommandLine cmd{"01_blocking_client",
                    "01_blocking client: request lines on stdin, replies on stdout"};
    ClientOptions opt = client_defaults(1);
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
