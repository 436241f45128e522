// A deliberately faulty server, built for the tests only and never registered: it proves that
// the conformance suite can fail. A thread per connection, like 02, with one planted bug:
//   --fault drop-byte    loses one byte now and then (echo: one per MiB; QA: one per 500 replies)
//   --fault short-write  sends once per reply and ignores how much the kernel took
//   --fault sigpipe      keeps the default SIGPIPE action and ignores write errors, so a reply
//                        to a client that reset kills the whole server
// Each fault is caught by the scenario meant to catch it (tests/faulty_test.cpp).

#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <string>
#include <thread>

#include "common/cli.hpp"
#include "common/net.hpp"
#include "common/options.hpp"
#include "common/qa.hpp"
#include "common/stop.hpp"

using namespace iolab;

namespace {

std::string g_fault;

// The planted bugs live here: every byte the server sends goes through this function.
void send_reply(int fd, std::string_view bytes, uint64_t& sent_count) {
    ++sent_count;
    if (g_fault == "drop-byte" && bytes.size() > 1 && sent_count % 500 == 0) {
        bytes.remove_suffix(1);
        if (bytes.back() != '\n') {
            bytes.remove_prefix(1);
        }
    }
    if (g_fault == "short-write") {
        ssize_t ignored = ::send(fd, bytes.data(), bytes.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
        (void)ignored;
        return;
    }
    if (g_fault == "sigpipe") {
        ssize_t ignored = ::write(fd, bytes.data(), bytes.size());
        (void)ignored;
        return;
    }
    write_all(fd, bytes);
}

void serve(Fd fd, ServerStats& stats, const ServerOptions& opt) {
    if (g_fault == "short-write") {
        int small = 4096;  // a small send buffer makes the kernel take less than asked, often
        ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    }
    char buf[65536];
    LineParser in(opt.max_line);
    uint64_t sent_count = 0;
    size_t echoed = 0;
    for (;;) {
        ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
        if (n <= 0) {
            return;
        }
        if (opt.mode == Mode::echo) {
            std::string_view bytes(buf, static_cast<size_t>(n));
            size_t before = echoed;
            echoed += bytes.size();
            if (g_fault == "drop-byte" && before / (1 << 20) != echoed / (1 << 20)) {
                bytes.remove_suffix(1);
            }
            send_reply(fd.get(), bytes, sent_count);
            continue;
        }
        in.feed(buf, static_cast<size_t>(n));
        while (auto line = in.next()) {
            Request req = parse_request(*line);
            if (req.verb == Verb::work) {
                block_for_work(req.work_ms);
            }
            std::string out;
            append_reply(out, req, stats);
            send_reply(fd.get(), out, sent_count);
            if (req.verb == Verb::quit) {
                return;
            }
        }
        if (in.too_long()) {
            uint64_t dummy = 0;
            send_reply(fd.get(), too_long_reply(opt.max_line), dummy);
            shutdown_and_drain(fd, 1000);
            return;
        }
    }
}

}  // namespace

int main(int argc, char** argv) {
    CommandLine cmd{"iolab_faulty_server", "A deliberately faulty server for the tests"};
    ServerOptions opt = server_defaults(0);
    cmd.add_server_options(opt);
    cmd.add_option("--fault", g_fault, "The planted bug", {"drop-byte", "short-write", "sigpipe"},
                   true);
    if (int rc = cmd.parse(argc, argv); rc >= 0) {
        return rc;
    }
    if (g_fault != "sigpipe") {
        std::signal(SIGPIPE, SIG_IGN);
    }
    try {
        install_stop_handlers();
        Fd listen_fd = listen_tcp(opt.host, opt.port);
        ServerStats stats("faulty_" + g_fault);
        announce_listening(listen_fd.get(), stats.model, opt);
        while (!stop_requested()) {
            int conn_fd = ::accept4(listen_fd.get(), nullptr, nullptr, SOCK_CLOEXEC);
            if (conn_fd < 0) {
                continue;
            }
            std::thread(serve, Fd(conn_fd), std::ref(stats), std::cref(opt)).detach();
        }
        return 0;
    } catch (const std::exception& e) {
        return report_setup_failure(cmd.name(), e);
    }
}
