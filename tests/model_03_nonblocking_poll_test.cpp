// 03_nonblocking_poll: what the conformance suite does not reach.
//  - STATS eagain= counts the calls that came back empty, and it climbs while nothing happens.
//  - --sleep-us bounds the passes: with 20 ms between them, half a second holds at most ~25.
//  - Replies far larger than a socket buffer (4 MiB of ECHO, read concurrently) arrive whole and
//    in order: short writes are kept in the connection's output buffer.
//  - The client, piped: every reply printed, exit 0.
//  - A connection we close on our own whose client never reads is closed by the linger timer.
//  - At EMFILE the spare descriptor turns the extra clients away, and the rest are served.
//  - QUIT, then the client's EOF, while replies are still owed: every reply arrives, then BYE.
// The CPU an idle busy-polling server burns is a figure, not a test: `iolab bench
// 03_nonblocking_poll` prints it, and IdleCpuFigure below records it without asserting on it.

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "common/fd.hpp"
#include "harness/clients.hpp"
#include "harness/process.hpp"
#include "harness/registry.hpp"

using namespace iolab;
using namespace std::chrono;

namespace model_03_nonblocking_poll {

ServerProcess start(const std::vector<std::string>& extra = {}) {
    for (const Variant& v : registry(IOLAB_BIN_DIR)) {
        if (v.name == "03_nonblocking_poll") {
            return ServerProcess::start(v, extra);
        }
    }
    return {};
}

// The value of key= in a STATS line, or -1.
long stat_value(const std::string& stats, const std::string& key) {
    size_t at = stats.find(" " + key + "=");
    return at == std::string::npos ? -1 : std::stol(stats.substr(at + key.size() + 2));
}

// A batch client: sends `count` ECHO requests and QUIT, shuts down its write side as soon as they
// are sent, and reads only afterwards, slowly, through a 4 KiB receive buffer. So the server
// reads QUIT and then our EOF while it still owes most of the replies; it must send them all
// (and BYE) before it closes. Returns what arrived; `expected` is what should have.
std::string quit_then_half_close(uint16_t port, int count, std::string& expected) {
    Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    int small = 4096;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    timeval limit{10, 0};
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
    ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        return "connect failed";
    }
    const std::string text(1000, 'q');
    std::string requests;
    expected.clear();
    for (int i = 0; i < count; ++i) {
        requests += "ECHO " + std::to_string(i) + text + "\n";
        expected += std::to_string(i) + text + "\n";
    }
    requests += "QUIT\n";
    expected += "BYE\n";
    std::thread writer([&] {
        size_t off = 0;
        while (off < requests.size()) {
            ssize_t n =
                ::send(fd.get(), requests.data() + off, requests.size() - off, MSG_NOSIGNAL);
            if (n <= 0) {
                break;  // the send timeout: the server stopped reading
            }
            off += static_cast<size_t>(n);
        }
        ::shutdown(fd.get(), SHUT_WR);
    });
    std::this_thread::sleep_for(300ms);
    std::string got;
    char buf[16384];
    auto deadline = steady_clock::now() + 30s;
    while (steady_clock::now() < deadline) {
        ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
        if (n <= 0) {
            break;  // the server closed (or the receive timeout)
        }
        got.append(buf, static_cast<size_t>(n));
        std::this_thread::sleep_for(1ms);
    }
    writer.join();
    return got;
}

long eagain_of(Client& c) {
    return stat_value(c.ask("STATS"), "eagain");
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

// A connection we close on our own (here the idle timeout) owes replies its client never reads:
// the socket buffers are full and our send always says EAGAIN. The linger timer (kLinger, 1 s)
// closes it anyway, so it holds no descriptor and no output buffer for ever.
TEST(BusyPoll, ClosingConnectionWhoseClientNeverReadsIsClosed) {
    ServerProcess server = start({"--idle-timeout", "1"});
    ASSERT_TRUE(server.running()) << server.reason();
    Client hog = Client::connect(server.port());
    std::string chunk;
    while (chunk.size() < (1 << 16)) {
        chunk += "ECHO never read\n";
    }
    // Up to 64 MiB: far more than kHighWater and the socket buffers (several MiB each way on
    // loopback) hold, so the server stops taking bytes long before, and a send that makes no
    // progress for 300 ms ends the loop.
    int chunks = 0;
    while (chunks < 1024 && hog.send(chunk, 300ms)) {
        ++chunks;
    }
    ASSERT_LT(chunks, 1024) << "the server kept reading from a client that never reads";

    // 1 s idle, then 1 s of linger: closed about 2 s after its last bytes were taken.
    Client watcher = Client::connect(server.port());
    auto deadline = steady_clock::now() + 4500ms;
    long conns = -1;
    while (steady_clock::now() < deadline) {
        conns = stat_value(watcher.ask("STATS"), "conns");
        if (conns == 1) {
            break;
        }
        std::this_thread::sleep_for(100ms);
    }
    EXPECT_EQ(conns, 1) << "the never-reading connection is still open";
    EXPECT_EQ(watcher.ask("PING"), "PONG");
    EXPECT_EQ(server.stop(), 0);
}

// With RLIMIT_NOFILE at 64, accept4 fails with EMFILE while clients wait in the backlog. The spare
// descriptor lets the loop accept each of them, send ERR server full and close, so none waits
// for a descriptor that never comes, and the connections already held are still served.
TEST(BusyPoll, EmfileTurnsClientsAwayAndKeepsServing) {
    rlimit old_limit{};
    ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &old_limit), 0);
    rlimit low = old_limit;
    low.rlim_cur = 64;
    if (old_limit.rlim_max < 64 || ::setrlimit(RLIMIT_NOFILE, &low) != 0) {
        GTEST_SKIP() << "cannot set RLIMIT_NOFILE to 64 here";
    }
    ServerProcess server = start();  // inherits the limit
    ::setrlimit(RLIMIT_NOFILE, &old_limit);
    ASSERT_TRUE(server.running()) << server.reason();

    std::vector<Client> clients;
    for (int i = 0; i < 100; ++i) {
        clients.push_back(Client::connect(server.port()));
    }
    int held = 0;
    int refused = 0;
    int other = 0;
    std::string first_other;
    for (Client& c : clients) {
        std::string reply = c.ask("PING", 2s);
        if (reply == "PONG") {
            ++held;
        } else if (reply == "ERR server full") {
            ++refused;
            EXPECT_TRUE(c.read_until_close(2s)) << "a refused connection was not closed";
            c.close();
        } else if (other++ == 0) {
            first_other = reply;
        }
    }
    EXPECT_EQ(other, 0) << "first unexpected reply: '" << first_other << "'";
    EXPECT_GT(held, 40);
    EXPECT_GT(refused, 0);
    Client* first = nullptr;
    for (Client& c : clients) {
        if (c.connected()) {
            first = &c;
            break;
        }
    }
    ASSERT_NE(first, nullptr);
    EXPECT_EQ(stat_value(first->ask("STATS"), "refused"), refused);

    // Closing a held connection frees a descriptor, and the next client is served again.
    for (Client& c : clients) {
        if (c.connected() && &c != first) {
            c.close();
            break;
        }
    }
    bool served = false;
    for (int attempt = 0; attempt < 50 && !served; ++attempt) {
        Client late = Client::connect(server.port());
        served = late.ask("PING", 2s) == "PONG";
        if (!served) {
            std::this_thread::sleep_for(20ms);  // the server has not seen the close yet
        }
    }
    EXPECT_TRUE(served);
    EXPECT_EQ(first->ask("PING"), "PONG");
    EXPECT_EQ(server.stop(), 0);
}

TEST(BusyPoll, QuitThenEofStillGetsEveryReply) {
    ServerProcess server = start();
    ASSERT_TRUE(server.running()) << server.reason();
    std::string expected;
    std::string got = quit_then_half_close(server.port(), 4000, expected);
    EXPECT_EQ(got.size(), expected.size());
    EXPECT_TRUE(got == expected) << "the replies before BYE were cut short or differ";
    EXPECT_EQ(server.stop(), 0);
}

}  // namespace model_03_nonblocking_poll
