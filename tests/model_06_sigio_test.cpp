// 06_sigio: signals coalesce. A hundred clients each send a pipeline of requests in one write,
// all at once; while the server serves one wake-up, many sockets become readable, and plain SIGIO
// leaves one signal pending for all of them. A server that served "the socket the signal was
// for" would lose requests. Every reply must come back, byte for byte, on both variants, and on
// the real-time variant also when its signal queue overflows (RLIMIT_SIGPENDING at 1: the kernel
// falls back to plain SIGIO, and the server must fall back to a full scan).
//
// And signals report arrivals, not levels: a client that keeps its socket full raises no new
// signal for the bytes it has queued, so a server that reads each connection until EAGAIN before
// it looks at the others never gets past that one. The read budget (one recv per connection per
// pass, and a still-readable list served without sleeping) gives every connection its turn. The
// fairness test below measures it and prints its figures: README.md quotes them.

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "harness/clients.hpp"
#include "harness/process.hpp"
#include "harness/registry.hpp"

using namespace iolab;

namespace model_06_sigio {

constexpr int kClients = 100;
constexpr int kRequests = 200;  // per client, per round
constexpr int kRounds = 3;
constexpr int kPingers = 20;  // beside the heavy client, as in the conformance scenario Fairness

using Clock = std::chrono::steady_clock;

Variant find_variant(const std::string& name) {
    for (const Variant& v : registry(IOLAB_BIN_DIR)) {
        if (v.name == name) {
            return v;
        }
    }
    return {};
}

// Starts `name`, with the soft RLIMIT_SIGPENDING set to `sigpending` for the child if given.
ServerProcess start(const std::string& name, std::optional<rlim_t> sigpending = std::nullopt) {
    Variant v = find_variant(name);
    if (v.name.empty()) {
        return {};
    }
    rlimit old{};
    ::getrlimit(RLIMIT_SIGPENDING, &old);
    if (sigpending) {
        rlimit low = old;
        low.rlim_cur = *sigpending;
        ::setrlimit(RLIMIT_SIGPENDING, &low);
    }
    ServerProcess server = ServerProcess::start(v);
    ::setrlimit(RLIMIT_SIGPENDING, &old);
    return server;
}

// One round: every client writes its whole pipeline, then every client reads all its replies.
// Returns an empty string, or what went wrong first.
std::string pipeline_round(std::vector<Client>& clients, int round) {
    std::vector<std::string> expected(clients.size());
    for (size_t i = 0; i < clients.size(); ++i) {
        std::string requests;
        for (int j = 0; j < kRequests; ++j) {
            std::string tag =
                std::to_string(round) + "/" + std::to_string(i) + "/" + std::to_string(j);
            if (j % 10 == 9) {
                requests += "PING\n";
                expected[i] += "PONG\n";
            } else {
                requests += "ECHO " + tag + "\n";
                expected[i] += tag + "\n";
            }
        }
        if (!clients[i].send(requests, 5s)) {
            return "client " + std::to_string(i) + ": send failed";
        }
    }
    for (size_t i = 0; i < clients.size(); ++i) {
        std::string got = clients[i].read_exact(expected[i].size(), 10s);
        if (got != expected[i]) {
            return "client " + std::to_string(i) + ": got " + std::to_string(got.size()) + " of " +
                   std::to_string(expected[i].size()) + " bytes, or wrong ones";
        }
    }
    return "";
}

// The value of key= in a STATS line, or -1.
long stat_value(const std::string& stats, const std::string& key) {
    size_t at = stats.find(" " + key + "=");
    if (at == std::string::npos) {
        return -1;
    }
    return std::stol(stats.substr(at + key.size() + 2));
}

// Runs the rounds against a started server; returns its STATS line at the end.
std::string hundred_pipelining_clients(ServerProcess& server) {
    std::vector<Client> clients;
    for (int i = 0; i < kClients; ++i) {
        clients.push_back(Client::connect(server.port()));
    }
    for (int round = 0; round < kRounds; ++round) {
        std::string why = pipeline_round(clients, round);
        EXPECT_EQ(why, "") << "round " << round;
        if (!why.empty()) {
            return "";
        }
    }
    return clients.front().ask("STATS");
}

// What the ping clients saw beside the heavy one.
struct Fairness {
    std::vector<double> waits_ms;  // every round trip, and the wait of each reply still due
    int fewest = 0;                // replies to the ping client that got the fewest
    uint64_t heavy_replies = 0;
    std::string error;
    double percentile(double q) const {
        return waits_ms.empty() ? 0 : waits_ms[static_cast<size_t>(q * (waits_ms.size() - 1))];
    }
    std::string text() const {
        char line[200];
        std::snprintf(line, sizeof line,
                      "ping p50 %.2f ms, p99 %.2f ms, max %.1f ms, fewest replies %d; heavy "
                      "client %llu replies",
                      percentile(0.5), percentile(0.99), waits_ms.empty() ? 0 : waits_ms.back(),
                      fewest, static_cast<unsigned long long>(heavy_replies));
        return line;
    }
};

// One client pipelines ECHO requests without waiting (its replies are read on a second thread,
// so the server always has more of its requests and never stops for unread replies) while
// `pingers` clients each send PING, wait for PONG, and send the next, for `span`.
Fairness heavy_beside_pingers(uint16_t port, int pingers, std::chrono::milliseconds span) {
    Fairness f;
    std::vector<Client> ping;
    for (int i = 0; i < pingers; ++i) {
        ping.push_back(Client::connect(port));
        if (ping.back().ask("PING") != "PONG") {
            f.error = "ping client " + std::to_string(i) + " got no PONG before the load";
            return f;
        }
    }
    Client heavy = Client::connect(port);
    std::string burst;
    while (burst.size() < (64u << 10)) {
        burst += "ECHO a pipelining client sends this line again and again\n";
    }
    std::atomic<bool> done{false};
    std::atomic<uint64_t> replies{0};
    // A send cut short by its deadline leaves part of a line that the next burst finishes: one
    // longer ECHO, still far below --max-line.
    std::thread writer([&] {
        while (!done) {
            heavy.send(burst, 100ms);
        }
    });
    std::thread reader([&] {
        while (!done) {
            std::string got = heavy.read_exact(1u << 20, 20ms);
            replies += static_cast<uint64_t>(std::count(got.begin(), got.end(), '\n'));
        }
    });
    std::this_thread::sleep_for(200ms);  // the heavy client's socket fills first

    std::vector<pollfd> fds;
    std::vector<Clock::time_point> asked(ping.size(), Clock::now());
    std::vector<int> got(ping.size(), 0);
    for (Client& c : ping) {
        fds.push_back({c.fd(), POLLIN, 0});
        c.send("PING\n");
    }
    for (auto until = Clock::now() + span; Clock::now() < until && f.error.empty();) {
        ::poll(fds.data(), fds.size(), 10);
        for (size_t i = 0; i < ping.size() && f.error.empty(); ++i) {
            if (fds[i].revents == 0) {
                continue;
            }
            auto line = ping[i].read_line(0ms);
            if (!line) {
                if (fds[i].revents & (POLLHUP | POLLERR)) {
                    f.error = "ping client " + std::to_string(i) + " was closed";
                }
                continue;
            }
            if (*line != "PONG") {
                f.error = "ping client " + std::to_string(i) + " got '" + *line + "'";
                continue;
            }
            auto now = Clock::now();
            f.waits_ms.push_back(std::chrono::duration<double, std::milli>(now - asked[i]).count());
            ++got[i];
            ping[i].send("PING\n");
            asked[i] = now;
        }
    }
    // A reply still due counts with the time it has waited: a starved client must show.
    auto now = Clock::now();
    for (const auto& t : asked) {
        f.waits_ms.push_back(std::chrono::duration<double, std::milli>(now - t).count());
    }
    std::sort(f.waits_ms.begin(), f.waits_ms.end());
    f.fewest = *std::min_element(got.begin(), got.end());
    done = true;
    writer.join();
    reader.join();
    f.heavy_replies = replies;
    return f;
}

// The scene's figures on stdout, then the bounds: generous, so as not to flake on a loaded
// machine, and far below what a loop that drains one connection until EAGAIN gives (seconds).
void expect_fair(const std::string& what, const Fairness& f) {
    std::printf("%s, %d ping clients beside one that pipelines: %s\n", what.c_str(), kPingers,
                f.text().c_str());
    EXPECT_EQ(f.error, "");
    EXPECT_GT(f.heavy_replies, 1000u) << "the heavy client did not load the server";
    EXPECT_LT(f.percentile(0.99), 100.0) << f.text();
    EXPECT_GE(f.fewest, 10) << f.text();
}

class Sigio : public ::testing::TestWithParam<std::string> {};

TEST_P(Sigio, HundredPipeliningClientsLoseNothing) {
    ServerProcess server = start(GetParam());
    ASSERT_TRUE(server.running()) << GetParam() << " did not start: " << server.reason();
    std::string stats = hundred_pipelining_clients(server);
    EXPECT_EQ(stat_value(stats, "requests"), kClients * kRequests * kRounds) << stats;
    EXPECT_EQ(stat_value(stats, "conns"), kClients) << stats;
    EXPECT_EQ(server.stop(), 0) << server.stderr_text();
}

TEST_P(Sigio, OneHeavyClientDoesNotStarveTheOthers) {
    ServerProcess server = start(GetParam());
    ASSERT_TRUE(server.running()) << GetParam() << " did not start: " << server.reason();
    expect_fair(GetParam(), heavy_beside_pingers(server.port(), kPingers, 1s));
    EXPECT_EQ(server.stop(), 0) << server.stderr_text();
}

INSTANTIATE_TEST_SUITE_P(Variants, Sigio, ::testing::Values("06_sigio", "06_sigio_rt"),
                         [](const auto& info) { return info.param; });

// RLIMIT_SIGPENDING 1: nearly every real-time signal is refused by the full queue and becomes a
// plain SIGIO. Nothing may be lost, and STATS shows the fallback was taken.
TEST(SigioRt, QueueOverflowFallsBackToAFullScan) {
    ServerProcess server = start("06_sigio_rt", rlim_t{1});
    ASSERT_TRUE(server.running()) << "06_sigio_rt did not start: " << server.reason();
    std::string stats = hundred_pipelining_clients(server);
    EXPECT_EQ(stat_value(stats, "requests"), kClients * kRequests * kRounds) << stats;
    EXPECT_GT(stat_value(stats, "overflows"), 0) << stats;
    EXPECT_EQ(server.stop(), 0) << server.stderr_text();
}

// The same scene with RLIMIT_SIGPENDING at 1: the heavy client's events overflow the queue at
// once, so the server works from plain SIGIOs and full scans. Still every client gets its turn.
TEST(SigioRt, FairWhenTheQueueOverflows) {
    ServerProcess server = start("06_sigio_rt", rlim_t{1});
    ASSERT_TRUE(server.running()) << "06_sigio_rt did not start: " << server.reason();
    expect_fair("06_sigio_rt, RLIMIT_SIGPENDING 1",
                heavy_beside_pingers(server.port(), kPingers, 1s));
    std::string stats = Client::connect(server.port()).ask("STATS");
    EXPECT_GT(stat_value(stats, "overflows"), 0) << stats;
    EXPECT_EQ(server.stop(), 0) << server.stderr_text();
}

}  // namespace model_06_sigio
