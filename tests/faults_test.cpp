// The fault rows (issue 11): what a server meets outside the classroom, run against every variant
// in the registry, each server a child process reached over loopback. Every row is bounded in
// time and in count, with thresholds far from what a healthy server does, so that a failure is a
// fault and not a slow machine. A model with a documented cap (Target::served_at_once: serial 01,
// the pool's 4 workers, 07_aio's --max-aio, select's FD_SETSIZE) gets the row scaled under its
// cap, and the row says so where it does.
//
// The Soak suite, a million requests over 10,000 connections, is the long one: CTest labels it
// so that CI runs it once, in the default build only.

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/fd.hpp"
#include "harness/clients.hpp"
#include "harness/loadgen.hpp"
#include "harness/procinfo.hpp"
#include "harness/process.hpp"
#include "harness/registry.hpp"
#include "harness/scenarios.hpp"

using namespace iolab;
using Clock = std::chrono::steady_clock;

namespace {

int fd_count(pid_t pid) {
    auto stats = read_proc_stats(pid);
    return stats ? stats->fds : -1;
}

// Waits up to `deadline` for the server's descriptors to come down to `baseline`; returns the
// last count seen. Closing takes a moment: a lingering close waits for the client, a thread
// closes its socket as it ends.
int fds_settle(pid_t pid, int baseline, std::chrono::milliseconds deadline) {
    auto until = Clock::now() + deadline;
    int now = fd_count(pid);
    while (now > baseline && Clock::now() < until) {
        std::this_thread::sleep_for(20ms);
        now = fd_count(pid);
    }
    return now;
}

// One short client: connect, PING, and leave in one of three ways (FIN, RST, or FIN in the
// middle of its next request). Returns an empty string, or what went wrong.
std::string one_visit(uint16_t port, int how) {
    try {
        Client c = Client::connect(port);
        std::string reply = c.ask("PING", 10s);
        if (reply != "PONG") {
            return "PING got '" + reply + "'";
        }
        if (how == 1) {
            c.reset();
        } else if (how == 2) {
            c.send("ECHO cut sho");
        }
        return {};
    } catch (const std::exception& e) {
        return e.what();
    }
}

// The arguments that let a variant sleep when it has nothing to do, for the rows that measure its
// CPU at rest. 03_nonblocking_poll never waits, so it takes a whole core even with no client; its
// own --sleep-us makes each pass sleep, and what is left to measure is whether a fault makes it
// work harder.
std::vector<std::string> quiet_when_idle(const Variant& v) {
    if (v.name == "03_nonblocking_poll") {
        return {"--sleep-us", "200"};
    }
    return {};
}

// The server's descriptors at rest after a few clients have come and gone, so that whatever it
// opens on its first connection (a worker's queue, a lazily made ring) is counted as its own.
int baseline_fds(ServerProcess& server) {
    for (int i = 0; i < 20; ++i) {
        if (!one_visit(server.port(), 0).empty()) {
            return -1;
        }
    }
    std::this_thread::sleep_for(300ms);  // the last of them is closed by now
    return fd_count(server.pid());
}

// How many clients a row opens at once: `want`, or fewer under the variant's documented cap.
int under_cap(const Target& t, int want) {
    return t.served_at_once > 0 ? std::min(want, t.served_at_once) : want;
}

// A port for a row that must listen on a fixed one: random, below the ephemeral range (so that
// no connect(2) and no bind to port 0 of a concurrent test is handed it), and free right now.
uint16_t pick_fixed_port() {
    std::mt19937 rng(static_cast<uint32_t>(::getpid()) ^
                     static_cast<uint32_t>(Clock::now().time_since_epoch().count()));
    for (int attempt = 0; attempt < 100; ++attempt) {
        auto port = static_cast<uint16_t>(20000 + rng() % 12000);
        Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        sockaddr_in sa{};
        sa.sin_family = AF_INET;
        sa.sin_port = htons(port);
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0) {
            return port;
        }
    }
    return 0;
}

// True if a listening socket with SO_REUSEADDR could bind 127.0.0.1:port now: what a server
// restarted on that port must manage while the old connections sit in TIME_WAIT or FIN_WAIT2.
bool reusable(uint16_t port) {
    Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return ::bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0 &&
           ::listen(fd.get(), 1) == 0;
}

class Faults : public ::testing::TestWithParam<Variant> {
protected:
    Target target() const { return target_for(GetParam()); }

    // A fresh client's PING, answered PONG once the row has room for it ("" then, or what went
    // wrong). A row with a cap frees a client's slot only when it has seen that client leave, a
    // moment after the client closed (02_process_per_conn when it reaps the child, on SIGCHLD),
    // so right after a crowd at the cap has left a refusal (is_refusal, harness/loadgen.hpp) is
    // the documented answer: it is tried again for up to 5 s. Anything else is the verdict.
    std::string visit_when_there_is_room(uint16_t port) const {
        auto until = Clock::now() + 5s;
        for (;;) {
            std::string reply;
            try {
                reply = Client::connect(port).ask("PING", 10s);
            } catch (const std::exception& e) {
                return e.what();
            }
            if (reply == "PONG") {
                return {};
            }
            if (!is_refusal(reply + "\n") || target().served_at_once == 0 ||
                Clock::now() >= until) {
                return "PING got '" + reply + "'";
            }
            std::this_thread::sleep_for(20ms);
        }
    }

    // Starts the variant. When the server is not running afterwards the test has been skipped
    // (the model cannot run here) or has failed, and must return.
    void start(ServerProcess& server, const std::vector<std::string>& extra = {},
               long fd_limit = 0) {
        server = ServerProcess::start(GetParam(), extra, 10s, fd_limit);
        if (server.state() == ServerProcess::State::cannot_run) {
            GTEST_SKIP() << GetParam().name << " cannot run here: " << server.reason();
        }
        ASSERT_TRUE(server.running()) << GetParam().name << " did not start: " << server.reason();
    }

    // The end of every row: the server is alive, still answers, and exits 0 on SIGTERM.
    void expect_healthy_exit(ServerProcess& server) {
        ASSERT_TRUE(server.alive()) << "the server died: " << server.stderr_text().substr(0, 400);
        std::string why = visit_when_there_is_room(server.port());
        EXPECT_EQ(why, "") << "a fresh client afterwards";
        EXPECT_EQ(server.stop(3s), 0) << "after SIGTERM";
    }
};

// Thousands of short connections, one after another and from four churners at once, leaving
// with FIN, RST and FIN mid-request: each gets its PONG, and afterwards the server holds as many
// descriptors as before. The churners' connections are short, so a capped model queues them for
// a moment and needs no scaling.
TEST_P(Faults, ChurnLeavesNoDescriptorBehind) {
    ServerProcess server;
    start(server);
    if (!server.running()) {
        return;
    }
    int baseline = baseline_fds(server);
    ASSERT_GT(baseline, 0) << "cannot read /proc/" << server.pid() << "/fd";

    constexpr int kSequential = 1000;
    constexpr int kChurners = 4;
    constexpr int kPerChurner = 250;
    std::atomic<int> failures{0};
    std::string first_failure;
    std::mutex first_mutex;
    auto note = [&](const std::string& why, int i) {
        if (!why.empty() && failures++ == 0) {
            std::lock_guard lock(first_mutex);
            first_failure = "visit " + std::to_string(i) + ": " + why;
        }
    };
    std::vector<std::thread> churners;
    for (int c = 0; c < kChurners; ++c) {
        churners.emplace_back([&, c] {
            for (int i = 0; i < kPerChurner && failures == 0; ++i) {
                note(one_visit(server.port(), (i + c) % 3), i);
            }
        });
    }
    for (int i = 0; i < kSequential && failures == 0; ++i) {
        note(one_visit(server.port(), 0), i);
    }
    for (auto& t : churners) {
        t.join();
    }
    EXPECT_EQ(failures.load(), 0) << first_failure;
    int after = fds_settle(server.pid(), baseline, 5s);
    EXPECT_LE(after, baseline) << "after " << kSequential + kChurners * kPerChurner
                               << " connections the server holds " << after << " descriptors, "
                               << baseline << " before";
    expect_healthy_exit(server);
}

// Urgent data (MSG_OOB) in the middle of a request. Without SO_OOBINLINE the kernel keeps the
// urgent byte out of the stream, stops a read at the urgent mark, and reports the mark as an
// exceptional condition (POLLPRI, EPOLLPRI, select's exceptfds, SIGURG) until the reader is
// past it. The request must still be answered, with the byte taken out (or kept, inline), and a
// server that asks for exceptional conditions and never clears one must not spin on it: its CPU
// stays low while the connection sits idle with the mark pending.
TEST_P(Faults, UrgentDataMidStream) {
    ServerProcess server;
    start(server, quiet_when_idle(GetParam()));
    if (!server.running()) {
        return;
    }
    Client c = Client::connect(server.port());
    ASSERT_EQ(c.ask("PING"), "PONG");

    ASSERT_TRUE(c.send("ECHO ab"));
    ASSERT_EQ(::send(c.fd(), "!", 1, MSG_OOB), 1);
    std::this_thread::sleep_for(100ms);
    double cpu_before = process_cpu_s(server.pid());
    std::this_thread::sleep_for(600ms);
    double idle_cpu = process_cpu_s(server.pid()) - cpu_before;
    EXPECT_LT(idle_cpu, 0.1) << "with an urgent byte pending the server used " << idle_cpu
                             << " s of CPU in 0.6 idle seconds: it spins on the urgent mark";

    ASSERT_TRUE(c.send("cd\n"));
    auto reply = c.read_line(5s);
    ASSERT_TRUE(reply) << "no reply to a request with an urgent byte in the middle";
    EXPECT_TRUE(*reply == "abcd" || *reply == "ab!cd") << "got '" << *reply << "'";
    // The mark passed within one read this time: urgent byte and the rest in one go.
    ASSERT_TRUE(c.send("ECHO x"));
    ASSERT_EQ(::send(c.fd(), "#", 1, MSG_OOB), 1);
    ASSERT_TRUE(c.send("y\n"));
    reply = c.read_line(5s);
    ASSERT_TRUE(reply);
    EXPECT_TRUE(*reply == "xy" || *reply == "x#y") << "got '" << *reply << "'";
    EXPECT_EQ(c.ask("PING"), "PONG") << "the connection stopped working after urgent data";
    c.close();
    expect_healthy_exit(server);
}

// SIGSTOP and SIGCONT, a pair every 5 ms, while clients run a closed loop. Each stop and
// continue interrupts whatever the server waits in: epoll_wait, poll, select, sigtimedwait and
// io_uring_enter then fail with EINTR even though no handler ran (signal(7)), and a model that
// treats that as an error drops connections. Every request must be answered; 20 clients, or as
// many as the model serves at once.
TEST_P(Faults, StopAndContinueStorm) {
    ServerProcess server;
    start(server);
    if (!server.running()) {
        return;
    }
    Target t = target();
    int conns = under_cap(t, 20);
    LoadGen gen(LoadSpec{});
    size_t target_index = gen.add_target(server.host(), server.port(), conns, 0);
    ASSERT_EQ(gen.connect(5s), conns);
    ASSERT_EQ(gen.ping_all(5s), static_cast<uint64_t>(conns));
    gen.start();
    std::atomic<bool> storming{true};
    int pairs = 0;
    std::thread storm([&] {
        while (storming) {
            server.signal(SIGSTOP);
            std::this_thread::sleep_for(2ms);
            server.signal(SIGCONT);
            std::this_thread::sleep_for(3ms);
            ++pairs;
        }
    });
    gen.run_until(now_ns() + 600'000'000);
    storming = false;
    storm.join();
    gen.finish(3s);
    const TargetStats& s = gen.stats(target_index);
    EXPECT_EQ(s.errors, 0u) << s.first_error << " (after " << pairs << " SIGSTOP/SIGCONT pairs)";
    EXPECT_GT(s.completed, 100u) << "requests answered during " << pairs << " stop/continue pairs";
    EXPECT_GT(pairs, 20) << "the storm did not run";
    gen.close_all();
    expect_healthy_exit(server);
}

// SIGTERM with hundreds of connections open, then at once a new server on the same fixed port.
// The old server closed first, so its side of every connection is in FIN_WAIT2 or TIME_WAIT on
// that port, and bind(2) fails with EADDRINUSE unless the listening socket set SO_REUSEADDR.
// 300 connections, or as many as the model serves at once (one for 01, four for the pool).
TEST_P(Faults, RestartOnTheSamePort) {
    Target t = target();
    const int conns = under_cap(t, 300);
    for (int attempt = 0; attempt < 5; ++attempt) {
        uint16_t port = pick_fixed_port();
        ASSERT_NE(port, 0) << "no free port found";
        const std::vector<std::string> args{"--port", std::to_string(port)};
        ServerProcess server = ServerProcess::start(GetParam(), args);
        if (server.state() == ServerProcess::State::cannot_run) {
            GTEST_SKIP() << GetParam().name << " cannot run here: " << server.reason();
        }
        if (!server.running() && server.reason().find("in use") != std::string::npos) {
            continue;  // taken between our check and the server's bind: pick another
        }
        ASSERT_TRUE(server.running()) << GetParam().name << " did not start: " << server.reason();
        std::vector<Client> open;
        for (int i = 0; i < conns; ++i) {
            open.push_back(Client::connect(port));
            ASSERT_EQ(open.back().ask("PING"), "PONG") << "connection " << i + 1 << " of " << conns;
        }
        ASSERT_EQ(server.stop(3s), 0) << "SIGTERM with " << conns << " connections open";
        ServerProcess again = ServerProcess::start(GetParam(), args);
        if (!again.running()) {
            bool in_use = again.reason().find("in use") != std::string::npos;
            if (in_use && !reusable(port)) {
                continue;  // another test's socket took the port meanwhile: pick another
            }
            FAIL() << "restarted on port " << port << " right after SIGTERM with " << conns
                   << " connections open: " << again.reason()
                   << (in_use ? " (a socket with SO_REUSEADDR could bind it)" : "");
        }
        for (auto& c : open) {
            EXPECT_TRUE(c.read_until_close(3s)) << "an old connection was never closed";
        }
        open.clear();
        expect_healthy_exit(again);
        return;
    }
    FAIL() << "the chosen port was taken by another socket five times in a row";
}

// RLIMIT_NOFILE 32, as `ulimit -n 32` would set it: 1,300 clients one after another are all
// served. Then more clients at once than the limit allows: accept(2) fails with EMFILE, and
// each client gets PONG, an ERR line (the spare descriptor's refusal), or waits in the backlog;
// the server must not spin meanwhile, and serves everyone again once they have left.
TEST_P(Faults, ThirtyTwoDescriptors) {
    ServerProcess server;
    start(server, quiet_when_idle(GetParam()), 32);
    if (!server.running()) {
        return;
    }
    for (int i = 0; i < 1000; ++i) {
        std::string why = one_visit(server.port(), i % 3);
        ASSERT_EQ(why, "") << "client " << i << " with RLIMIT_NOFILE 32";
    }
    std::vector<Client> burst;
    for (int i = 0; i < 48; ++i) {
        burst.push_back(Client::connect(server.port()));
        burst.back().send("PING\n");
    }
    double cpu_before = process_cpu_s(server.pid());
    std::this_thread::sleep_for(500ms);
    double cpu = process_cpu_s(server.pid()) - cpu_before;
    int answered = 0;
    for (auto& c : burst) {
        if (auto line = c.read_line(20ms)) {
            EXPECT_TRUE(*line == "PONG" || line->rfind("ERR ", 0) == 0) << "got '" << *line << "'";
            ++answered;
        }
    }
    EXPECT_GE(answered, 1) << "none of 48 clients at once got a line with RLIMIT_NOFILE 32";
    EXPECT_LT(cpu, 0.15) << "out of descriptors with clients waiting, the server used " << cpu
                         << " s of CPU in half a second: it spins on EMFILE";
    burst.clear();
    std::this_thread::sleep_for(100ms);
    for (int i = 0; i < 300; ++i) {
        std::string why = one_visit(server.port(), 0);
        ASSERT_EQ(why, "") << "client " << i << " after the burst, with RLIMIT_NOFILE 32";
    }
    expect_healthy_exit(server);
}

// ---- the soak: a million requests over 10,000 connections ----

class Soak : public Faults {};

// Requests in flight on each connection. A reply then often shares its segment and its
// recv/send calls with the next ones, on both sides, which keeps the CPU a million requests cost
// within what two shared cores give in about ten seconds.
constexpr int kSoakPipeline = 8;

// Every connection runs a closed loop of 64-byte ECHO requests, each reply checked byte for
// byte, until a million have been answered. Variants that cannot hold 10,000 connections at once
// run as many as they serve (1,000 for select and thread-per-connection, 256 for 07_aio, 4 for
// the pool, 1 for 01) and a proportionally smaller count, at least 50,000, so that every variant
// is soaked and the whole suite stays near two minutes.
TEST_P(Soak, MillionRequestsOverTenThousandConnections) {
    long limit = raise_fd_limit();
    Target t = target();
    int conns = under_cap(t, 10000);
    if (limit > 0 && conns > limit - 100) {
        conns = static_cast<int>(limit - 100);
        std::cout << "RLIMIT_NOFILE is " << limit << ": " << conns << " connections\n";
    }
    const uint64_t requests =
        std::max<uint64_t>(50'000, 1'000'000ull * static_cast<uint64_t>(conns) / 10000);
    ServerProcess server;
    start(server, {"--max-conns", std::to_string(conns + 10)});
    if (!server.running()) {
        return;
    }
    int baseline = baseline_fds(server);
    ASSERT_GT(baseline, 0) << "cannot read /proc/" << server.pid() << "/fd";
    LoadSpec spec;
    spec.pipeline = kSoakPipeline;
    LoadGen gen(spec);
    size_t ti = gen.add_target(server.host(), server.port(), conns, 0);
    auto connecting = Clock::now();
    ASSERT_EQ(gen.connect(30s), conns);
    ASSERT_EQ(gen.ping_all(30s), static_cast<uint64_t>(conns));
    auto started = Clock::now();
    double setup = std::chrono::duration<double>(started - connecting).count();
    gen.start();
    gen.run_until(now_ns() + 60'000'000'000, [&] { return gen.stats(ti).completed < requests; });
    gen.finish(10s);
    double took = std::chrono::duration<double>(Clock::now() - started).count();
    const TargetStats& s = gen.stats(ti);
    EXPECT_EQ(s.errors, 0u) << s.first_error;
    EXPECT_GE(s.completed, requests)
        << "answered in " << took << " s over " << conns << " connections";
    EXPECT_EQ(gen.open_conns(ti), conns);
    std::cout << GetParam().name << ": " << s.completed << " requests over " << conns
              << " connections in " << took << " s, after " << setup
              << " s to connect and ping each\n";
    gen.close_all();
    int after = fds_settle(server.pid(), baseline, 10s);
    EXPECT_LE(after, baseline) << "descriptors after the soak";
    expect_healthy_exit(server);
}

std::string variant_name(const ::testing::TestParamInfo<Variant>& info) {
    return info.param.name;
}

INSTANTIATE_TEST_SUITE_P(Variants, Faults, ::testing::ValuesIn(registry(IOLAB_BIN_DIR)),
                         variant_name);
INSTANTIATE_TEST_SUITE_P(Variants, Soak, ::testing::ValuesIn(registry(IOLAB_BIN_DIR)),
                         variant_name);

}  // namespace
