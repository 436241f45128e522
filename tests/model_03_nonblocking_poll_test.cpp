// 03_nonblocking_poll: what the conformance suite does not reach.
//  - STATS eagain= counts the calls that came back empty, and it climbs while nothing happens.
//  - --sleep-us bounds the passes: with 20 ms between them, half a second holds at most ~25.
//  - Replies far larger than a socket buffer (4 MiB of ECHO, read concurrently) arrive whole and
//    in order: short writes are kept in the connection's output buffer.
//  - The client, piped: every reply printed, exit 0.
// The CPU an idle busy-polling server burns is a figure, not a test: `iolab bench
// 03_nonblocking_poll` prints it, and IdleCpuFigure below records it without asserting on it.

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "harness/clients.hpp"
#include "harness/process.hpp"
#include "harness/registry.hpp"

using namespace iolab;
using namespace std::chrono;

namespace {

ServerProcess start(const std::vector<std::string>& extra = {}) {
    for (const Variant& v : registry(IOLAB_BIN_DIR)) {
        if (v.name == "03_nonblocking_poll") {
            return ServerProcess::start(v, extra);
        }
    }
    return {};
}

long eagain_of(Client& c) {
    std::string stats = c.ask("STATS");
    size_t at = stats.find(" eagain=");
    return at == std::string::npos ? -1 : std::stol(stats.substr(at + 8));
}

TEST(BusyPoll, EagainClimbsWhileIdle) {
    ServerProcess server = start();
    ASSERT_TRUE(server.running()) << server.reason();
    Client c = Client::connect(server.port());
    long first = eagain_of(c);
    ASSERT_GE(first, 0) << "STATS has eagain=";
    std::this_thread::sleep_for(300ms);
    long second = eagain_of(c);
    // Even on a loaded machine the loop makes thousands of passes in 300 ms, each with an
    // accept and a recv that find nothing.
    EXPECT_GT(second - first, 1000);
    EXPECT_EQ(server.stop(), 0);
}

TEST(BusyPoll, SleepUsBoundsThePasses) {
    ServerProcess server = start({"--sleep-us", "20000"});
    ASSERT_TRUE(server.running()) << server.reason();
    Client c = Client::connect(server.port());
    long first = eagain_of(c);
    std::this_thread::sleep_for(500ms);
    long second = eagain_of(c);
    // At most ~25 passes in 500 ms, two empty calls each (accept, recv), plus slack.
    EXPECT_LT(second - first, 120);
    EXPECT_EQ(c.ask("PING"), "PONG");
    EXPECT_EQ(server.stop(), 0);
}

TEST(BusyPoll, LargeRepliesSurviveShortWrites) {
    ServerProcess server = start();
    ASSERT_TRUE(server.running()) << server.reason();
    Client c = Client::connect(server.port());
    const std::string text(1000, 'x');
    const int count = 4000;  // 4 MB of replies: far more than the socket buffers hold
    std::string requests, expected;
    for (int i = 0; i < count; ++i) {
        std::string line = std::to_string(i) + text;
        requests += "ECHO " + line + "\n";
        expected += line + "\n";
    }
    bool sent = false;
    std::thread writer([&] { sent = c.send(requests, 20s); });
    std::string got = c.read_exact(expected.size(), 20s);
    writer.join();
    EXPECT_TRUE(sent);
    EXPECT_EQ(got.size(), expected.size());
    EXPECT_TRUE(got == expected) << "replies differ from the requests";
    EXPECT_EQ(server.stop(), 0);
}

TEST(BusyPoll, IdleCpuFigure) {
    for (const char* sleep_us : {"0", "1000"}) {
        ServerProcess server = start({"--sleep-us", sleep_us});
        ASSERT_TRUE(server.running()) << server.reason();
        auto before = read_proc_stats(server.pid());
        std::this_thread::sleep_for(1s);
        auto after = read_proc_stats(server.pid());
        ASSERT_TRUE(before && after);
        double cpu = after->cpu_s() - before->cpu_s();
        std::printf("03_nonblocking_poll --sleep-us %s: %.0f%% of a core while idle\n", sleep_us,
                    cpu * 100);
        RecordProperty(std::string("idle_cpu_pct_sleep_us_") + sleep_us,
                       std::to_string(static_cast<int>(cpu * 100)));
        EXPECT_EQ(server.stop(), 0);
    }
}

TEST(BusyPoll, PipedClientPrintsEveryReply) {
    ServerProcess server = start();
    ASSERT_TRUE(server.running()) << server.reason();
    std::string cmd = "printf 'PING\\nECHO two\\nWORK 50\\nECHO last\\n' | timeout 10 " +
                      std::string(IOLAB_BIN_DIR) + "/03_nonblocking_poll_client --port " +
                      std::to_string(server.port());
    FILE* p = ::popen(cmd.c_str(), "r");
    ASSERT_NE(p, nullptr);
    std::string out;
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) {
        out.append(buf, n);
    }
    int status = ::pclose(p);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    EXPECT_EQ(out, "PONG\ntwo\nDONE 50\nlast\n");
    EXPECT_EQ(server.stop(), 0);
}

}  // namespace
