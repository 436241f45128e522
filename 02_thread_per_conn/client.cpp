// 02_thread_per_conn client: two blocking threads, one per direction.
//
// 01's client could not read stdin while it waited for a reply, nor notice the server while it
// waited for stdin. The thread-per-connection answer to that is the same as the server's: give
// each blocking wait a thread of its own. The sender thread copies stdin to the socket and, at the
// end of stdin, shuts down the socket's write side (a FIN: "no more requests"). The main thread
// copies the socket to stdout until the server closes. Requests are pipelined: the sender does not
// wait for replies, and the server's FIN after the last reply is what ends the client.
//
//   printf 'PING\nTIME\n' | ./build/bin/02_thread_per_conn_client --port 9002
//
// Exits 0 when the server closes after our end of input (or after BYE), 1 if it closed first.

#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <iostream>
#include <string>
#include <thread>

#include "common/net.hpp"
#include "common/options.hpp"

using namespace iolab;

namespace {

std::atomic<bool> g_input_done{false};

// stdin -> socket. Blocks in read(2) on stdin without holding up the replies.
void send_requests(int sock) {
    char buf[65536];
    char last = '\n';
    for (;;) {
        long n = read_some(STDIN_FILENO, buf, sizeof buf);
        if (n <= 0) {
            break;
        }
        last = buf[n - 1];
        if (write_all(sock, buf, static_cast<size_t>(n)) != 0) {
            return;  // the server is gone; the main thread will see it too
        }
    }
    if (last != '\n') {
        write_all(sock, "\n", 1);  // a last line without its newline is still a request
    }
    g_input_done = true;
    // FIN after the last request: the server answers what it has, then closes.
    ::shutdown(sock, SHUT_WR);
}

int run(const ClientOptions& opt) {
    Fd fd = connect_tcp(opt.host, opt.port);
    set_nodelay(fd.get());
    // Detached: if the server closes first, the sender may sit in read(2) on a terminal forever;
    // returning from main ends it with the process.
    std::thread(send_requests, fd.get()).detach();

    // socket -> stdout, on this thread, until the server closes.
    char buf[65536];
    std::string last_line;  // the last complete reply line, to recognise BYE
    std::string line;
    for (;;) {
        long n = read_some(fd.get(), buf, sizeof buf);
        if (n < 0) {
            std::cerr << "02_thread_per_conn_client: connection lost\n";
            return 1;
        }
        if (n == 0) {
            break;
        }
        if (write_all(STDOUT_FILENO, buf, static_cast<size_t>(n)) != 0) {
            return 1;
        }
        for (long i = 0; i < n; ++i) {
            if (buf[i] == '\n') {
                last_line.swap(line);
                line.clear();
            } else if (line.size() < 16) {
                line += buf[i];
            }
        }
    }
    if (g_input_done || last_line == "BYE") {
        return 0;
    }
    std::cerr << "02_thread_per_conn_client: the server closed the connection\n";
    return 1;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"02_thread_per_conn client: request lines on stdin, replies on stdout",
                 "02_thread_per_conn_client"};
    ClientOptions opt = client_defaults(2);
    add_client_options(app, opt);
    if (int rc = parse_command_line(app, argc, argv); rc >= 0) {
        return rc;
    }
    try {
        return run(opt);
    } catch (const std::exception& e) {
        return report_setup_failure(app.get_name(), e);
    }
}
