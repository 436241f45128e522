// 04_select: the FD_SETSIZE ceiling. With RLIMIT_NOFILE raised above 1024 (the server inherits
// it), accept(2) hands out descriptors past FD_SETSIZE; 04_select must refuse those connections
// ("ERR server full", then close) without ever putting them in an fd_set, keep serving the ones
// it holds, and not crash. 04_select_poll has no such ceiling and holds them all. Both must
// survive EMFILE without spinning. And a batch client that sends QUIT and its EOF before it
// reads gets every reply.

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/socket.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "common/fd.hpp"
#include "harness/clients.hpp"
#include "harness/process.hpp"
#include "harness/registry.hpp"

using namespace iolab;
using namespace std::chrono;

namespace model_04_select {

constexpr int kClients = 1100;  // enough to pass FD_SETSIZE (1024) on the server's side

Variant find_variant(const std::string& name) {
    for (const Variant& v : registry(IOLAB_BIN_DIR)) {
        if (v.name == name) {
            return v;
        }
    }
    return {};
}

// Sets the soft RLIMIT_NOFILE for this process (and so for the server it starts next);
// restores the old limit when it goes out of scope. ok() is false if the hard limit is too low.
class NofileLimit {
public:
    explicit NofileLimit(rlim_t want) {
        ::getrlimit(RLIMIT_NOFILE, &old_);
        rlimit lim = old_;
        lim.rlim_cur = std::min<rlim_t>(want, old_.rlim_max);
        ok_ = lim.rlim_cur >= want && ::setrlimit(RLIMIT_NOFILE, &lim) == 0;
    }
    ~NofileLimit() { ::setrlimit(RLIMIT_NOFILE, &old_); }
    bool ok() const { return ok_; }

private:
    rlimit old_{};
    bool ok_ = false;
};

// Starts the variant `name` (an empty ServerProcess, not running, if it is not registered).
ServerProcess start(const std::string& name, const std::vector<std::string>& extra) {
    Variant v = find_variant(name);
    if (v.name.empty()) {
        return {};
    }
    return ServerProcess::start(v, extra);
}

struct Tally {
    int held = 0;
    int refused = 0;
    int other = 0;
    std::string first_other;
};

// PING on every client, one at a time: each is either served (PONG) or was turned away
// ("ERR server full", then the server closes it; those are closed here too).
Tally ping_all(std::vector<Client>& clients) {
    Tally t;
    for (Client& c : clients) {
        std::string reply = c.ask("PING", 5s);
        if (reply == "PONG") {
            ++t.held;
        } else if (reply == "ERR server full") {
            ++t.refused;
            if (!c.read_until_close(2s)) {
                ++t.other;
                t.first_other = "a refused connection was not closed";
            }
            c.close();
        } else {
            ++t.other;
            if (t.first_other.empty()) {
                t.first_other = reply;
            }
        }
    }
    return t;
}

// The value of key= in a STATS line, or -1.
long stat_value(const std::string& stats, const std::string& key) {
    size_t at = stats.find(" " + key + "=");
    if (at == std::string::npos) {
        return -1;
    }
    return std::stol(stats.substr(at + key.size() + 2));
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

TEST(Select, ConnectionsPastFdSetSizeAreRefusedAndTheRestServed) {
    NofileLimit limit(4096);
    if (!limit.ok()) {
        GTEST_SKIP() << "cannot raise RLIMIT_NOFILE to 4096 here";
    }
    ServerProcess server = start("04_select", {"--max-conns", "5000"});
    ASSERT_TRUE(server.running()) << "04_select did not start: " << server.reason();

    std::vector<Client> clients;
    for (int i = 0; i < kClients; ++i) {
        clients.push_back(Client::connect(server.port()));
    }
    Tally t = ping_all(clients);
    EXPECT_EQ(t.other, 0) << t.first_other;
    EXPECT_GE(t.refused, kClients - FD_SETSIZE);
    EXPECT_LT(t.held, FD_SETSIZE);
    EXPECT_GE(t.held, FD_SETSIZE - 32);  // only the server's own few descriptors are missing
    ASSERT_TRUE(server.alive()) << server.stderr_text();

    // The held ones are still served, and the server counted what it refused.
    Client* first = nullptr;
    for (Client& c : clients) {
        if (c.connected()) {
            first = &c;
            break;
        }
    }
    ASSERT_NE(first, nullptr);
    std::string stats = first->ask("STATS");
    EXPECT_EQ(stat_value(stats, "refused"), t.refused) << stats;
    EXPECT_EQ(stat_value(stats, "conns"), t.held) << stats;

    // Closing held connections frees descriptors below FD_SETSIZE, which new clients get.
    int closed = 0;
    for (Client& c : clients) {
        if (c.connected() && &c != first && closed < 50) {
            c.close();
            ++closed;
        }
    }
    int served = 0;
    for (int attempt = 0; attempt < 100 && served < 10; ++attempt) {
        Client late = Client::connect(server.port());
        if (late.ask("PING") == "PONG") {
            ++served;
        } else {
            std::this_thread::sleep_for(20ms);  // the server has not seen the closes yet
        }
    }
    EXPECT_EQ(served, 10);
    EXPECT_EQ(first->ask("PING"), "PONG");
    EXPECT_EQ(server.stop(), 0) << server.stderr_text();
}

TEST(Select, PollHasNoFdSetSizeCeiling) {
    NofileLimit limit(4096);
    if (!limit.ok()) {
        GTEST_SKIP() << "cannot raise RLIMIT_NOFILE to 4096 here";
    }
    ServerProcess server = start("04_select_poll", {"--max-conns", "5000"});
    ASSERT_TRUE(server.running()) << "04_select_poll did not start: " << server.reason();

    std::vector<Client> clients;
    for (int i = 0; i < kClients; ++i) {
        clients.push_back(Client::connect(server.port()));
    }
    Tally t = ping_all(clients);
    EXPECT_EQ(t.other, 0) << t.first_other;
    EXPECT_EQ(t.held, kClients);
    EXPECT_EQ(server.stop(), 0) << server.stderr_text();
}

// With RLIMIT_NOFILE at 64, accept fails with EMFILE while clients wait in the backlog. The
// listening socket stays readable; a server that only retried would spin at 100% CPU. Ours turn
// the extra clients away with the spare descriptor and go back to sleep.
TEST(Select, EmfileNeitherSpinsNorStopsService) {
    for (const char* name : {"04_select", "04_select_poll"}) {
        SCOPED_TRACE(name);
        std::optional<ServerProcess> started;
        {
            NofileLimit limit(64);
            if (!limit.ok()) {
                GTEST_SKIP() << "cannot set RLIMIT_NOFILE to 64 here";
            }
            started = start(name, {"--max-conns", "1000"});
        }
        ServerProcess& server = *started;
        ASSERT_TRUE(server.running()) << server.reason();

        std::vector<Client> clients;
        for (int i = 0; i < 100; ++i) {
            clients.push_back(Client::connect(server.port()));
        }
        Tally t = ping_all(clients);
        EXPECT_EQ(t.other, 0) << t.first_other;
        EXPECT_GT(t.held, 40);
        EXPECT_GT(t.refused, 0);

        auto before = read_proc_stats(server.pid());
        std::this_thread::sleep_for(500ms);
        auto after = read_proc_stats(server.pid());
        ASSERT_TRUE(before && after);
        EXPECT_LT(after->cpu_s() - before->cpu_s(), 0.1) << "the server spins";
        EXPECT_EQ(server.stop(), 0) << server.stderr_text();
    }
}

// recv returning 0 on a connection we are closing means only that the client has shut down its
// side, not that it has read our replies: what is still owed must go out before the close.
TEST(Select, QuitThenEofStillGetsEveryReply) {
    for (const char* name : {"04_select", "04_select_poll"}) {
        SCOPED_TRACE(name);
        ServerProcess server = start(name, {});
        ASSERT_TRUE(server.running()) << server.reason();
        std::string expected;
        std::string got = quit_then_half_close(server.port(), 4000, expected);
        EXPECT_EQ(got.size(), expected.size());
        EXPECT_TRUE(got == expected) << "the replies before BYE were cut short or differ";
        EXPECT_EQ(server.stop(), 0) << server.stderr_text();
    }
}

}  // namespace model_04_select
