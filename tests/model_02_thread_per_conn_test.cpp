// 02_thread_per_conn and its pool variant: what the conformance suite does not reach.
//  - One thread per client: STATS threads= grows with the connections, and a WORK on one
//    connection does not delay another.
//  - --max-threads: the client over it gets "ERR server busy", the server carries on.
//  - The pool: a client past the workers waits in the queue, unanswered, until a worker is free;
//    with the queue full and not moving, the next client gets "ERR server busy".
//  - The pool's --idle-timeout frees a worker held by a silent client.
//  - SIGTERM with many threads blocked in recv and one in WORK: exit 0 within 3 s.
//  - --request-timeout: tricklers that hold every thread (or every worker) are shed, and the
//    server answers again.
//  - The client, piped: every reply printed, exit 0.

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

namespace model_02_thread_per_conn {

ServerProcess start(const std::string& name, const std::vector<std::string>& extra = {}) {
    for (const Variant& v : registry(IOLAB_BIN_DIR)) {
        if (v.name == name) {
            return ServerProcess::start(v, extra);
        }
    }
    return {};
}

// The value of `key=` in a STATS line, or -1.
long stat_value(const std::string& stats, const std::string& key) {
    size_t at = stats.find(" " + key + "=");
    if (at == std::string::npos) {
        return -1;
    }
    return std::stol(stats.substr(at + key.size() + 2));
}

#define START_OR_SKIP(server)                                                       \
    ASSERT_NE((server).state(), ServerProcess::State::failed) << (server).reason(); \
    if ((server).state() == ServerProcess::State::cannot_run) {                     \
        GTEST_SKIP() << (server).reason();                                          \
    }

TEST(ThreadPerConn, ThreadsFollowConnections) {
    ServerProcess server = start("02_thread_per_conn");
    START_OR_SKIP(server);
    Client first = Client::connect(server.port());
    long before = stat_value(first.ask("STATS"), "threads");
    std::vector<Client> more;
    for (int i = 0; i < 10; ++i) {
        more.push_back(Client::connect(server.port()));
        ASSERT_EQ(more.back().ask("PING"), "PONG");
    }
    long after = stat_value(first.ask("STATS"), "threads");
    EXPECT_EQ(after - before, 10) << "one thread per connection";
    EXPECT_EQ(server.stop(), 0);
}

TEST(ThreadPerConn, WorkStallsOnlyItsOwnConnection) {
    ServerProcess server = start("02_thread_per_conn");
    START_OR_SKIP(server);
    Client worker = Client::connect(server.port());
    Client other = Client::connect(server.port());
    ASSERT_TRUE(worker.send("WORK 2000\n"));
    std::this_thread::sleep_for(100ms);
    auto t0 = steady_clock::now();
    EXPECT_EQ(other.ask("PING", 1500ms), "PONG");
    EXPECT_LT(steady_clock::now() - t0, 1000ms);
    EXPECT_EQ(worker.read_line(5s), "DONE 2000");
    EXPECT_EQ(server.stop(), 0);
}

TEST(ThreadPerConn, MaxThreadsTurnsClientsAway) {
    ServerProcess server = start("02_thread_per_conn", {"--max-threads", "2"});
    START_OR_SKIP(server);
    Client a = Client::connect(server.port());
    Client b = Client::connect(server.port());
    ASSERT_EQ(a.ask("PING"), "PONG");
    ASSERT_EQ(b.ask("PING"), "PONG");
    Client c = Client::connect(server.port());
    EXPECT_EQ(c.read_line(), "ERR server busy");
    EXPECT_EQ(c.read_until_close(), "");
    a.close();
    // The thread for `a` ends when it sees EOF; then there is room again.
    std::string reply;
    for (int i = 0; i < 50 && reply != "PONG"; ++i) {
        std::this_thread::sleep_for(20ms);
        Client d = Client::connect(server.port());
        reply = d.ask("PING");
    }
    EXPECT_EQ(reply, "PONG");
    EXPECT_GE(stat_value(b.ask("STATS"), "refused"), 1);
    EXPECT_EQ(server.stop(), 0);
}

TEST(ThreadPerConn, StopsWithThreadsBlocked) {
    ServerProcess server = start("02_thread_per_conn");
    START_OR_SKIP(server);
    std::vector<Client> idle;
    for (int i = 0; i < 50; ++i) {
        idle.push_back(Client::connect(server.port()));
    }
    Client worker = Client::connect(server.port());
    ASSERT_TRUE(worker.send("WORK 10000\n"));
    ASSERT_EQ(idle.back().ask("PING"), "PONG");
    auto t0 = steady_clock::now();
    EXPECT_EQ(server.stop(3s), 0);
    EXPECT_LT(steady_clock::now() - t0, 3s);
    // Every connection was closed by the server.
    EXPECT_TRUE(idle.front().read_until_close(1s).has_value());
}

TEST(Pool, QueuedClientWaitsForAWorker) {
    ServerProcess server = start("02_thread_per_conn_pool", {"--threads", "1", "--queue", "1"});
    START_OR_SKIP(server);
    Client served = Client::connect(server.port());
    ASSERT_EQ(served.ask("PING"), "PONG");
    Client queued = Client::connect(server.port());
    ASSERT_TRUE(queued.send("PING\n"));
    EXPECT_FALSE(queued.read_line(300ms).has_value()) << "no worker is free yet";
    EXPECT_EQ(stat_value(served.ask("STATS"), "queued"), 1);

    // The queue is full and stands still: after about a second, clients are turned away.
    auto t0 = steady_clock::now();
    Client refused = Client::connect(server.port());
    EXPECT_EQ(refused.read_line(5s), "ERR server busy");
    EXPECT_LT(steady_clock::now() - t0, 3s);

    served.close();
    EXPECT_EQ(queued.read_line(3s), "PONG") << "the worker takes the queued client";
    EXPECT_EQ(server.stop(), 0);
}

TEST(Pool, IdleTimeoutFreesTheWorker) {
    ServerProcess server =
        start("02_thread_per_conn_pool", {"--threads", "1", "--queue", "4", "--idle-timeout", "1"});
    START_OR_SKIP(server);
    Client silent = Client::connect(server.port());
    std::this_thread::sleep_for(100ms);
    Client waiting = Client::connect(server.port());
    ASSERT_TRUE(waiting.send("PING\n"));
    EXPECT_EQ(silent.read_line(3s), "ERR idle timeout");
    EXPECT_EQ(waiting.read_line(3s), "PONG");
    EXPECT_EQ(server.stop(), 0);
}

TEST(Pool, ThreadCountIsFixed) {
    ServerProcess server = start("02_thread_per_conn_pool", {"--threads", "3"});
    START_OR_SKIP(server);
    auto before = read_proc_stats(server.pid());
    std::vector<Client> clients;
    for (int i = 0; i < 3; ++i) {
        clients.push_back(Client::connect(server.port()));
        ASSERT_EQ(clients.back().ask("PING"), "PONG");
    }
    auto after = read_proc_stats(server.pid());
    ASSERT_TRUE(before && after);
    EXPECT_EQ(before->threads, after->threads);
    EXPECT_EQ(server.stop(), 0);
}

// Tricklers: each sends one byte of a request line that never ends every 200 ms.
class Tricklers {
public:
    Tricklers(uint16_t port, int n) {
        for (int i = 0; i < n; ++i) {
            clients_.push_back(Client::connect(port));
        }
    }
    // One byte each; returns how many got ERR request timeout since the last call.
    int tick() {
        int shed = 0;
        for (Client& c : clients_) {
            if (c.send("x", 100ms)) {
                auto line = c.read_line(1ms);
                shed += line && *line == "ERR request timeout";
            }
        }
        return shed;
    }

private:
    std::vector<Client> clients_;
};

TEST(ThreadPerConn, RequestTimeoutShedsTricklersHoldingEveryThread) {
    ServerProcess server = start("02_thread_per_conn", {"--max-threads", "20", "--max-conns", "100",
                                                        "--request-timeout", "1"});
    START_OR_SKIP(server);
    Tricklers loris(server.port(), 20);
    loris.tick();
    Client turned_away = Client::connect(server.port());
    EXPECT_EQ(turned_away.read_line(), "ERR server busy") << "20 tricklers hold all 20 threads";
    int shed = 0;
    auto t0 = steady_clock::now();
    while (shed < 20 && steady_clock::now() - t0 < 5s) {
        std::this_thread::sleep_for(200ms);
        shed += loris.tick();
    }
    EXPECT_EQ(shed, 20) << "every trickler gets ERR request timeout";
    EXPECT_GT(steady_clock::now() - t0, 700ms) << "not before the limit";
    std::string reply;
    for (int i = 0; i < 50 && reply != "PONG"; ++i) {
        Client probe = Client::connect(server.port());
        reply = probe.ask("PING");
        std::this_thread::sleep_for(20ms);
    }
    EXPECT_EQ(reply, "PONG") << "the threads are free again";
    EXPECT_EQ(server.stop(), 0);
}

TEST(Pool, RequestTimeoutFreesWorkersHeldByTricklers) {
    ServerProcess server = start("02_thread_per_conn_pool",
                                 {"--threads", "2", "--queue", "4", "--request-timeout", "1"});
    START_OR_SKIP(server);
    Tricklers loris(server.port(), 2);
    loris.tick();
    std::this_thread::sleep_for(100ms);
    Client waiting = Client::connect(server.port());
    ASSERT_TRUE(waiting.send("PING\n"));
    EXPECT_FALSE(waiting.read_line(500ms).has_value()) << "both workers are held";
    int shed = 0;
    for (int i = 0; i < 20 && shed < 2; ++i) {
        std::this_thread::sleep_for(200ms);
        shed += loris.tick();
    }
    EXPECT_EQ(shed, 2);
    EXPECT_EQ(waiting.read_line(3s), "PONG") << "a freed worker takes the queued client";
    EXPECT_EQ(server.stop(), 0);
}

// Runs `printf INPUT | CLIENT --port P` and returns (exit status, stdout).
std::pair<int, std::string> run_piped_client(const std::string& client, uint16_t port,
                                             const std::string& input) {
    std::string cmd = "printf '" + input + "' | timeout 10 " + std::string(IOLAB_BIN_DIR) + "/" +
                      client + " --port " + std::to_string(port);
    FILE* p = ::popen(cmd.c_str(), "r");
    std::string out;
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) {
        out.append(buf, n);
    }
    int status = ::pclose(p);
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

TEST(Client, PipedPrintsEveryReply) {
    for (const char* variant : {"02_thread_per_conn", "02_thread_per_conn_pool"}) {
        ServerProcess server = start(variant);
        START_OR_SKIP(server);
        auto [rc, out] = run_piped_client("02_thread_per_conn_client", server.port(),
                                          "PING\\nECHO two\\nWORK 50\\nECHO last\\n");
        EXPECT_EQ(rc, 0) << variant;
        EXPECT_EQ(out, "PONG\ntwo\nDONE 50\nlast\n") << variant;
        EXPECT_EQ(server.stop(), 0);
    }
}

}  // namespace model_02_thread_per_conn

// model_test compiles every model suite as one unit (tests/CMakeLists.txt).
#undef START_OR_SKIP
