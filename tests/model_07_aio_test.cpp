// 07_aio: glibc runs POSIX AIO on a pool of helper threads, and a read parked on an idle socket
// holds one of them. These tests check that idle clients cannot starve an active one: either the
// active one is answered within a second (the pool was sized for them), or the connections past
// the documented cap (--max-aio) are refused with "ERR server busy" and the held ones still are.

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "harness/clients.hpp"
#include "harness/process.hpp"
#include "harness/registry.hpp"
#include "harness/scenarios.hpp"

using namespace iolab;
using Clock = std::chrono::steady_clock;

namespace model_07_aio {

constexpr int kIdle = 30;

Variant find_variant(const std::string& name) {
    for (const Variant& v : registry(IOLAB_BIN_DIR)) {
        if (v.name == name) {
            return v;
        }
    }
    return {};
}

ServerProcess start(const std::vector<std::string>& extra) {
    Variant v = find_variant("07_aio");
    if (v.name.empty()) {
        return {};
    }
    return ServerProcess::start(v, extra);
}

#define START_OR_SKIP(server, ...)                                     \
    ServerProcess server = start(__VA_ARGS__);                         \
    if (server.state() == ServerProcess::State::cannot_run) {          \
        GTEST_SKIP() << "07_aio cannot run here: " << server.reason(); \
    }                                                                  \
    ASSERT_TRUE(server.running()) << "07_aio did not start: " << server.reason()

// The value of key= in a STATS line, or -1.
long stat_value(const std::string& stats, const std::string& key) {
    size_t at = stats.find(" " + key + "=");
    if (at == std::string::npos) {
        return -1;
    }
    return std::stol(stats.substr(at + key.size() + 2));
}

// Asks PING and returns how long the PONG took, or nothing if it did not come within 1 s.
std::optional<std::chrono::milliseconds> timed_ping(Client& c) {
    auto start = Clock::now();
    if (c.ask("PING", 1000ms) != "PONG") {
        return std::nullopt;
    }
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
}

// With the default cap (256) all 30 idle clients are held, each parking a read on a helper
// thread, and the active one is still answered within a second.
TEST(Aio, ThirtyIdleClientsDoNotStarveAnActiveOne) {
    START_OR_SKIP(server, {});
    std::vector<Client> idle;
    for (int i = 0; i < kIdle; ++i) {
        idle.push_back(Client::connect(server.port()));
    }
    std::this_thread::sleep_for(300ms);  // let the server accept them and park their reads

    Client active = Client::connect(server.port());
    for (int round = 0; round < 5; ++round) {
        auto took = timed_ping(active);
        ASSERT_TRUE(took) << "round " << round << ": no PONG within 1 s beside " << kIdle
                          << " idle clients";
        EXPECT_LT(took->count(), 1000);
    }
    // The helper threads are visible: one per parked read, plus the main thread.
    std::string stats = active.ask("STATS", 1000ms);
    EXPECT_GE(stat_value(stats, "threads"), kIdle + 1) << stats;
    EXPECT_EQ(stat_value(stats, "conns"), kIdle + 1) << stats;
    EXPECT_EQ(stat_value(stats, "refused"), 0) << stats;

    // The idle ones were held, not refused: each still answers.
    for (int i = 0; i < kIdle; ++i) {
        ASSERT_EQ(idle[i].ask("PING", 2000ms), "PONG") << "idle client " << i;
    }
    EXPECT_EQ(server.stop(3s), 0);
}

// With --max-aio 8 the 9th and later connections are refused with ERR server busy and closed,
// the 8 held ones are answered at once, and a slot frees when one of them leaves.
TEST(Aio, ConnectionsPastTheCapAreRefusedBusy) {
    constexpr int kCap = 8;
    START_OR_SKIP(server, {"--max-aio", std::to_string(kCap)});
    std::vector<Client> clients;
    for (int i = 0; i < kIdle; ++i) {
        clients.push_back(Client::connect(server.port()));
        // Connect in order, and give the server the time to accept each before the next.
        std::this_thread::sleep_for(5ms);
    }
    int refused = 0;
    for (int i = kCap; i < kIdle; ++i) {
        auto line = clients[i].read_line(2000ms);
        ASSERT_TRUE(line) << "connection " << i + 1 << " past the cap got no line";
        EXPECT_EQ(*line, "ERR server busy") << "connection " << i + 1;
        EXPECT_TRUE(clients[i].read_until_close(2000ms)) << "refused connection left open";
        ++refused;
    }
    EXPECT_EQ(refused, kIdle - kCap);

    // The held ones: no line was sent to them, and each is answered within a second.
    for (int i = 0; i < kCap; ++i) {
        auto took = timed_ping(clients[i]);
        ASSERT_TRUE(took) << "held connection " << i + 1 << ": no PONG within 1 s";
    }
    std::string stats = clients[0].ask("STATS", 1000ms);
    EXPECT_EQ(stat_value(stats, "refused"), kIdle - kCap) << stats;
    EXPECT_EQ(stat_value(stats, "max_aio"), kCap) << stats;

    // A slot frees once the server has seen a held client leave.
    clients[kCap - 1].close();
    bool served = false;
    for (int attempt = 0; attempt < 40 && !served; ++attempt) {
        Client again = Client::connect(server.port());
        served = again.ask("PING", 1000ms) == "PONG";
        if (!served) {
            std::this_thread::sleep_for(50ms);
        }
    }
    EXPECT_TRUE(served) << "after one of " << kCap << " held clients left, a new one was refused";
    EXPECT_EQ(server.stop(3s), 0);
}

// 07_aio_uring falls back to single-shot accept/recv and a buffer per connection on kernels
// without multishot operations or buffer rings. --simple forces that path here, where the kernel
// has everything, so the fallback passes the same conformance scenarios as the fast path.
TEST(AioUring, SimplePathPassesEveryConformanceScenario) {
    Variant v = find_variant("07_aio_uring");
    if (v.name.empty()) {
        GTEST_SKIP() << "07_aio_uring is not built (no liburing)";
    }
    Target t{v.name + " --simple",
             [v](const std::vector<std::string>& extra) {
                 std::vector<std::string> args{"--simple"};
                 args.insert(args.end(), extra.begin(), extra.end());
                 return ServerProcess::start(v, args);
             },
             false};
    for (const NamedScenario& scenario : all_scenarios()) {
        Outcome o = scenario.run(t);
        if (o.kind == Outcome::Kind::skip) {
            GTEST_SKIP() << o.why;
        }
        EXPECT_TRUE(o.passed()) << scenario.name << ": " << o.why;
    }
}

}  // namespace model_07_aio

// model_test compiles every model suite as one unit (tests/CMakeLists.txt).
#undef START_OR_SKIP
