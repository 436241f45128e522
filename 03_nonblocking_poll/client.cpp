// 03_nonblocking_poll client: one thread, one busy loop over stdin and the socket.
//
// Both descriptors are non-blocking, so neither read can hold up the other: each pass tries
// read(2) on stdin, send(2) of whatever requests are pending, and recv(2) on the socket, and
// every call that has nothing to do comes back EAGAIN at once. Like the server, it never sleeps,
// so it takes a whole core while it runs: fine for a piped batch that ends in milliseconds, and
// a visible cost if you leave it waiting at a terminal (watch it in top).
//
//   printf 'PING\nTIME\n' | ./build/bin/03_nonblocking_poll_client --port 9003
//
// At the end of stdin, once every request is sent, it shuts down the socket's write side (FIN:
// "no more requests") and keeps reading until the server closes after the last reply.
// Exits 0 then (or after BYE), 1 if the server closed first.

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <iostream>
#include <string>

#include "common/cli.hpp"
#include "common/net.hpp"
#include "common/options.hpp"

using namespace iolab;

namespace {

// Stop reading stdin while this much is still unsent: the server may be slow to read.
constexpr size_t kMaxPending = 1 << 20;

// O_NONBLOCK belongs to the open file, not to our descriptor: a terminal's stdin is shared with
// the shell that started us. Put the flags back when we leave.
class NonblockingStdin {
public:
    NonblockingStdin() : flags_(::fcntl(STDIN_FILENO, F_GETFL)) {
        if (flags_ >= 0) {
            ::fcntl(STDIN_FILENO, F_SETFL, flags_ | O_NONBLOCK);
        }
    }
    ~NonblockingStdin() {
        if (flags_ >= 0) {
            ::fcntl(STDIN_FILENO, F_SETFL, flags_);
        }
    }

private:
    int flags_;
};

// stdout may share the terminal's open file with stdin, and so be non-blocking too: retry.
bool write_stdout(const char* p, size_t len) {
    while (len > 0) {
        ssize_t n = ::write(STDOUT_FILENO, p, len);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
                continue;
            }
            return false;
        }
        p += n;
        len -= static_cast<size_t>(n);
    }
    return true;
}

int run(const ClientOptions& opt) {
    Fd sock = connect_tcp(opt.host, opt.port);
    set_nonblocking(sock.get());
    set_nodelay(sock.get());
    NonblockingStdin stdin_guard;

    std::string pending;  // request bytes read from stdin, not yet sent
    size_t sent = 0;
    bool input_done = false;
    bool fin_sent = false;
    bool send_failed = false;
    std::string line, last_line;  // to recognise BYE
    char last_in = '\n';          // the last byte read from stdin
    char buf[65536];
    for (;;) {
        if (!input_done && pending.size() - sent < kMaxPending) {
            ssize_t n = ::read(STDIN_FILENO, buf, sizeof buf);
            if (n > 0) {
                pending.append(buf, static_cast<size_t>(n));
                last_in = buf[n - 1];
            } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
                input_done = true;
                if (last_in != '\n') {
                    pending += '\n';  // a last line without its newline is still a request
                }
            }
        }
        if (sent < pending.size()) {
            ssize_t n =
                ::send(sock.get(), pending.data() + sent, pending.size() - sent, MSG_NOSIGNAL);
            if (n > 0) {
                sent += static_cast<size_t>(n);
            } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                input_done = send_failed = true;  // the server is gone; recv will say how
                pending.clear();
                sent = 0;
            }
            if (sent == pending.size()) {
                pending.clear();
                sent = 0;
            }
        }
        if (input_done && pending.empty() && !fin_sent && !send_failed) {
            ::shutdown(sock.get(), SHUT_WR);
            fin_sent = true;
        }
        ssize_t n = ::recv(sock.get(), buf, sizeof buf, 0);
        if (n == 0) {
            break;
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
                continue;  // nothing yet: go round again, at once
            }
            std::cerr << "03_nonblocking_poll_client: connection lost\n";
            return 1;
        }
        if (!write_stdout(buf, static_cast<size_t>(n))) {
            return 1;
        }
        for (ssize_t i = 0; i < n; ++i) {
            if (buf[i] == '\n') {
                last_line.swap(line);
                line.clear();
            } else if (line.size() < 16) {
                line += buf[i];
            }
        }
    }
    if (fin_sent || last_line == "BYE") {
        return 0;
    }
    std::cerr << "03_nonblocking_poll_client: the server closed the connection\n";
    return 1;
}

}  // namespace

int main(int argc, char** argv) {
    CommandLine cmd{"03_nonblocking_poll_client",
                    "03_nonblocking_poll client: request lines on stdin, replies on stdout"};
    ClientOptions opt = client_defaults(3);
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
