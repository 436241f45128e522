// 02_process_per_conn: what the conformance suite does not reach.
//  - One child process per connection, and STATS procs= counts them from shared memory, as do
//    conns=, accepted= and requests= (a child's request is seen from another child).
//  - No zombies: clients that come and go leave no child in state Z, and procs= returns to 0;
//    every child exited 0 (died=0: under ASan, a child's report would count there).
//  - Isolation: SIGKILL one child and only its connection is lost; the threaded server, killed
//    through one connection's thread, loses every connection at once.
//  - --max-procs: the client over it gets "ERR server busy"; a slot frees when a child exits.
//  - SIGTERM with a WORK in flight in a child: exit 0 within 3 s, no child left behind.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "harness/clients.hpp"
#include "harness/process.hpp"
#include "harness/registry.hpp"

using namespace iolab;
using namespace std::chrono;

namespace model_02_process_per_conn {

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

struct Child {
    pid_t pid;
    char state;  // R, S, Z, ... as in /proc/PID/stat
};

// Every process whose parent is `parent`, from /proc/*/stat.
std::vector<Child> children_of(pid_t parent) {
    std::vector<Child> out;
    for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
        std::string name = entry.path().filename().string();
        if (name.find_first_not_of("0123456789") != std::string::npos) {
            continue;
        }
        std::ifstream in(entry.path() / "stat");
        std::string text;
        if (!std::getline(in, text)) {
            continue;  // it exited meanwhile
        }
        // "pid (comm) state ppid ...": comm may hold spaces, so parse after the last ')'.
        size_t close = text.rfind(')');
        if (close == std::string::npos || close + 4 >= text.size()) {
            continue;
        }
        char state = text[close + 2];
        long ppid = std::strtol(text.c_str() + close + 4, nullptr, 10);
        if (ppid == parent) {
            out.push_back({static_cast<pid_t>(std::stol(name)), state});
        }
    }
    return out;
}

// Waits up to `deadline` for `pred`.
template <class Pred>
bool eventually(Pred pred, milliseconds deadline = 3s) {
    auto until = steady_clock::now() + deadline;
    while (!pred()) {
        if (steady_clock::now() > until) {
            return false;
        }
        std::this_thread::sleep_for(20ms);
    }
    return true;
}

#define START_OR_SKIP(server)                                                       \
    ASSERT_NE((server).state(), ServerProcess::State::failed) << (server).reason(); \
    if ((server).state() == ServerProcess::State::cannot_run) {                     \
        GTEST_SKIP() << (server).reason();                                          \
    }

TEST(ProcessPerConn, OneChildPerConnectionCountedInSharedMemory) {
    ServerProcess server = start("02_process_per_conn");
    START_OR_SKIP(server);
    std::vector<Client> clients;
    for (int i = 0; i < 8; ++i) {
        clients.push_back(Client::connect(server.port()));
        ASSERT_EQ(clients.back().ask("PING"), "PONG");
    }
    EXPECT_EQ(children_of(server.pid()).size(), 8u);
    // Each PING was answered by a different child; the last STATS sees all of them.
    std::string stats = clients.front().ask("STATS");
    EXPECT_EQ(stat_value(stats, "procs"), 8) << stats;
    EXPECT_EQ(stat_value(stats, "conns"), 8) << stats;
    EXPECT_EQ(stat_value(stats, "accepted"), 8) << stats;
    EXPECT_EQ(stat_value(stats, "requests"), 8) << stats;
    EXPECT_EQ(server.stop(), 0);
}

TEST(ProcessPerConn, NoZombies) {
    ServerProcess server = start("02_process_per_conn");
    START_OR_SKIP(server);
    for (int round = 0; round < 5; ++round) {
        std::vector<Client> clients;
        for (int i = 0; i < 10; ++i) {
            clients.push_back(Client::connect(server.port()));
            ASSERT_EQ(clients.back().ask("PING"), "PONG");
        }
        clients.front().ask("QUIT");  // one child ends on its own, the others at the close
    }
    // Every child exits when its client leaves, and is reaped at once: none is left, not even
    // as a zombie, and the shared counters agree.
    EXPECT_TRUE(eventually([&] { return children_of(server.pid()).empty(); }))
        << children_of(server.pid()).size() << " children left";
    Client last = Client::connect(server.port());
    std::string stats = last.ask("STATS");
    EXPECT_EQ(stat_value(stats, "procs"), 1) << stats;
    EXPECT_EQ(stat_value(stats, "conns"), 1) << stats;
    EXPECT_EQ(stat_value(stats, "died"), 0) << "every child exited 0: " << stats;
    EXPECT_EQ(server.stop(), 0);
}

TEST(ProcessPerConn, KilledChildLosesOnlyItsConnection) {
    ServerProcess server = start("02_process_per_conn");
    START_OR_SKIP(server);
    std::vector<Client> clients;
    for (int i = 0; i < 4; ++i) {
        clients.push_back(Client::connect(server.port()));
        ASSERT_EQ(clients.back().ask("PING"), "PONG");
    }
    // Any one child: it serves one of the four clients, and that one alone must be lost.
    std::vector<Child> kids = children_of(server.pid());
    ASSERT_EQ(kids.size(), 4u);
    ASSERT_EQ(::kill(kids.front().pid, SIGKILL), 0);
    int lost = 0;
    int served = 0;
    for (Client& c : clients) {
        auto reply = c.ask("PING", 2s);
        lost += reply == "<no reply>";
        served += reply == "PONG";
    }
    EXPECT_EQ(lost, 1) << "the killed child's client sees its connection end";
    EXPECT_EQ(served, 3) << "every other client is still served";
    Client fresh = Client::connect(server.port());
    EXPECT_EQ(fresh.ask("PING"), "PONG") << "the parent still accepts";
    EXPECT_TRUE(server.alive());
    EXPECT_TRUE(eventually([&] { return children_of(server.pid()).size() == 4; }))
        << "the killed child was reaped";
    std::string stats = fresh.ask("STATS");
    EXPECT_EQ(stat_value(stats, "died"), 1) << stats;
    EXPECT_EQ(stat_value(stats, "procs"), 4) << stats;
    EXPECT_EQ(server.stop(), 0);
}

TEST(ProcessPerConn, ThreadedServerSharesOneFate) {
    ServerProcess server = start("02_thread_per_conn");
    START_OR_SKIP(server);
    std::vector<Client> clients;
    for (int i = 0; i < 4; ++i) {
        clients.push_back(Client::connect(server.port()));
        ASSERT_EQ(clients.back().ask("PING"), "PONG");
    }
    // One connection's thread: any task of the process but the main one. A fatal signal sent
    // to a single thread ends the whole thread group.
    pid_t tid = -1;
    for (const auto& entry :
         std::filesystem::directory_iterator("/proc/" + std::to_string(server.pid()) + "/task")) {
        pid_t t = static_cast<pid_t>(std::stol(entry.path().filename().string()));
        if (t != server.pid()) {
            tid = t;
        }
    }
    ASSERT_GT(tid, 0);
    ASSERT_EQ(::syscall(SYS_tgkill, server.pid(), tid, SIGKILL), 0);
    EXPECT_EQ(server.wait(3s), 128 + SIGKILL);
    for (size_t i = 0; i < clients.size(); ++i) {
        EXPECT_TRUE(clients[i].read_until_close(3s).has_value()) << "client " << i << " lost too";
    }
}

TEST(ProcessPerConn, MaxProcsTurnsClientsAway) {
    ServerProcess server = start("02_process_per_conn", {"--max-procs", "2"});
    START_OR_SKIP(server);
    Client a = Client::connect(server.port());
    Client b = Client::connect(server.port());
    ASSERT_EQ(a.ask("PING"), "PONG");
    ASSERT_EQ(b.ask("PING"), "PONG");
    Client c = Client::connect(server.port());
    EXPECT_EQ(c.read_line(), "ERR server busy");
    EXPECT_EQ(c.read_until_close(), "");
    a.close();
    // The child for `a` exits at EOF and is reaped; then there is room again.
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

TEST(ProcessPerConn, StopsWithWorkInFlightInAChild) {
    ServerProcess server = start("02_process_per_conn");
    START_OR_SKIP(server);
    std::vector<Client> idle;
    for (int i = 0; i < 20; ++i) {
        idle.push_back(Client::connect(server.port()));
    }
    Client worker = Client::connect(server.port());
    ASSERT_TRUE(worker.send("WORK 10000\n"));
    ASSERT_EQ(idle.back().ask("PING"), "PONG");
    // The parent may not have accepted and forked for the WORK connection yet: the PING went to
    // an earlier one's child.
    ASSERT_TRUE(eventually([&] { return children_of(server.pid()).size() == 21; }))
        << children_of(server.pid()).size() << " children, want 21";
    std::vector<Child> kids = children_of(server.pid());
    auto t0 = steady_clock::now();
    EXPECT_EQ(server.stop(3s), 0);
    EXPECT_LT(steady_clock::now() - t0, 3s);
    for (const Child& k : kids) {
        // Had it outlived its parent, it would be running still, adopted by init.
        EXPECT_NE(::kill(k.pid, 0), 0) << "child " << k.pid << " outlived its parent";
    }
    EXPECT_TRUE(idle.front().read_until_close(1s).has_value());
}

}  // namespace model_02_process_per_conn

// model_test compiles every model suite as one unit (tests/CMakeLists.txt).
#undef START_OR_SKIP
