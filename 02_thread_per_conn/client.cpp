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
//
// --trickle N is the slowloris demo (README): N connections that each send one byte of a
// request line every 200 ms and never its newline, for --seconds, while a probe connects once a
// second and asks PING. Once a line a second it prints how many tricklers the server still
// holds, how many it shed with ERR request timeout or turned away, and what the probe got.
// Against a server that gives each connection a thread (or a process), N tricklers hold N of
// them, and --request-timeout is what gives them back.

#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/cli.hpp"
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

int run(const ClientOptions& opt, const std::string& name) {
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
            std::cerr << name << ": connection lost\n";
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
    std::cerr << name << ": the server closed the connection\n";
    return 1;
}

// ---- the slowloris demo ----

// What one trickler has heard from the server.
enum class Fate { held, shed, refused, closed };

Fate fate_of(const std::string& line) {
    if (line.rfind("ERR request timeout", 0) == 0) {
        return Fate::shed;
    }
    if (line.rfind("ERR server", 0) == 0) {
        return Fate::refused;  // ERR server busy, ERR server full
    }
    return Fate::closed;
}

// Once a second: a fresh connection, PING, and the first line back (or why there was none).
void probe(const ClientOptions& opt, std::atomic<bool>& done, std::mutex& mu, std::string& seen) {
    while (!done) {
        std::string got;
        try {
            Fd fd = connect_tcp(opt.host, opt.port);
            set_io_timeouts(fd.get(), 0.9);
            write_all(fd.get(), "PING\n");
            char buf[256];
            long n = read_some(fd.get(), buf, sizeof buf);
            got = n > 0 ? std::string(buf, static_cast<size_t>(n)) : n == 0 ? "closed" : "no reply";
            if (auto nl = got.find('\n'); nl != std::string::npos) {
                got.resize(nl);
            }
        } catch (const std::exception& e) {
            got = "connect failed";
        }
        {
            std::lock_guard lock(mu);
            seen = got;
        }
        for (int i = 0; i < 10 && !done; ++i) {
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
    }
}

int trickle(const ClientOptions& opt, int n, double seconds) {
    // One descriptor per trickler: raise the soft limit to the hard one.
    rlimit rl{};
    if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        ::setrlimit(RLIMIT_NOFILE, &rl);
    }
    using Clock = std::chrono::steady_clock;
    const auto start = Clock::now();
    std::vector<Fd> fds;
    std::vector<Fate> fate;
    for (int i = 0; i < n; ++i) {
        fds.push_back(connect_tcp(opt.host, opt.port));
        fate.push_back(Fate::held);
    }
    std::atomic<bool> done{false};
    std::mutex mu;
    std::string probe_saw = "-";
    std::thread prober(probe, std::cref(opt), std::ref(done), std::ref(mu), std::ref(probe_saw));

    const std::string text = "ECHO this request line never ends ";
    std::printf("%6s %6s %6s %8s  %s\n", "time", "held", "shed", "refused", "probe (PING)");
    auto next_print = start + std::chrono::seconds(1);
    auto end = start + std::chrono::duration<double>(seconds);
    for (size_t tick = 0; Clock::now() < end; ++tick) {
        auto tick_end = Clock::now() + std::chrono::milliseconds(200);
        std::vector<pollfd> pfds;
        std::vector<size_t> who;
        for (size_t i = 0; i < fds.size(); ++i) {
            if (fate[i] != Fate::held) {
                continue;
            }
            char byte = text[tick % text.size()];
            ::send(fds[i].get(), &byte, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
            pfds.push_back({fds[i].get(), POLLIN, 0});
            who.push_back(i);
        }
        // Until the next byte is due: whatever the server says to a trickler decides its fate.
        for (auto now = Clock::now(); now < tick_end; now = Clock::now()) {
            auto ms = std::chrono::ceil<std::chrono::milliseconds>(tick_end - now).count();
            if (::poll(pfds.data(), pfds.size(), static_cast<int>(ms)) <= 0) {
                break;
            }
            for (size_t k = 0; k < pfds.size(); ++k) {
                if (pfds[k].revents == 0 || fate[who[k]] != Fate::held) {
                    continue;
                }
                char buf[256];
                ssize_t got = ::recv(pfds[k].fd, buf, sizeof buf, MSG_DONTWAIT);
                fate[who[k]] =
                    got > 0 ? fate_of(std::string(buf, static_cast<size_t>(got))) : Fate::closed;
                fds[who[k]].reset();
                pfds[k].fd = -1;  // poll skips a negative descriptor
            }
        }
        if (Clock::now() >= next_print) {
            next_print += std::chrono::seconds(1);
            int count[4] = {0, 0, 0, 0};
            for (Fate f : fate) {
                ++count[static_cast<int>(f)];
            }
            double t = std::chrono::duration<double>(Clock::now() - start).count();
            std::lock_guard lock(mu);
            std::printf("%5.1fs %6d %6d %8d  %s\n", t, count[0], count[1], count[2] + count[3],
                        probe_saw.c_str());
            std::fflush(stdout);
        }
    }
    done = true;
    prober.join();
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    // Built twice, as 02_thread_per_conn_client and 02_process_per_conn_client.
    const std::string name = std::filesystem::path(argv[0]).filename().string();
    CommandLine cmd{name, "02 client: request lines on stdin, replies on stdout"};
    ClientOptions opt = client_defaults(2);
    cmd.add_client_options(opt);
    int tricklers = 0;
    double seconds = 10;
    cmd.add_option("--trickle", tricklers,
                   "Slowloris demo: N connections that send a byte every 200 ms, never a newline",
                   1, 100000);
    cmd.add_option("--seconds", seconds, "How long --trickle runs", 1.0, 600.0);
    if (int rc = cmd.parse(argc, argv); rc >= 0) {
        return rc;
    }
    try {
        if (tricklers > 0) {
            return trickle(opt, tricklers, seconds);
        }
        return run(opt, name);
    } catch (const std::exception& e) {
        return report_setup_failure(cmd.name(), e);
    }
}
