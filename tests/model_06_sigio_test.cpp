// 06_sigio: signals coalesce. A hundred clients each send a pipeline of requests in one write,
// all at once; while the server serves one wake-up, many sockets become readable, and plain SIGIO
// leaves one signal pending for all of them. A server that served "the socket the signal was
// for" would lose requests. Every reply must come back, byte for byte, on both variants, and on
// the real-time variant also when its signal queue overflows (RLIMIT_SIGPENDING at 1: the kernel
// falls back to plain SIGIO, and the server must fall back to a full scan).

#include <gtest/gtest.h>
#include <sys/resource.h>

#include <optional>
#include <string>
#include <vector>

#include "harness/clients.hpp"
#include "harness/process.hpp"
#include "harness/registry.hpp"

using namespace iolab;

namespace {

constexpr int kClients = 100;
constexpr int kRequests = 200;  // per client, per round
constexpr int kRounds = 3;

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

class Sigio : public ::testing::TestWithParam<std::string> {};

}  // namespace

TEST_P(Sigio, HundredPipeliningClientsLoseNothing) {
    ServerProcess server = start(GetParam());
    ASSERT_TRUE(server.running()) << GetParam() << " did not start: " << server.reason();
    std::string stats = hundred_pipelining_clients(server);
    EXPECT_EQ(stat_value(stats, "requests"), kClients * kRequests * kRounds) << stats;
    EXPECT_EQ(stat_value(stats, "conns"), kClients) << stats;
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
