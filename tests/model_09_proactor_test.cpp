// 09_proactor, its epoll emulation and Asio: what the conformance suite does not reach.
//  - Echo burst: 16 connections each send 1 MiB at once, reading while they write, then shut
//    down their write side; every byte comes back in order, then the server closes. This drives
//    the io_uring variant through provided-buffer exhaustion (-ENOBUFS), backpressure (cancelled
//    recvs) and short sends, and the others through their high-water marks.
//  - Head-of-line blocking, the seed's big handler: with WORK 600 in flight on one connection, a
//    PING on another is answered within 100 ms by the variants with workers, and only after the
//    WORK by the single-loop io_uring proactor.
//  - Connection churn: 300 connections opened, used and closed (some with RST) one after the
//    other, 200 more held open at once; afterwards STATS counts exactly the one asking, which
//    checks that the proactor frees a connection only after its last completion, and once.
//  - A last line (BYE, ERR line too long) after the replies to the requests before it, which a
//    WORK keeps in a worker or in the pool when it is read.
//  - The client, piped: every reply in order, exit 0; a long pipelined input.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "harness/clients.hpp"
#include "harness/process.hpp"
#include "harness/registry.hpp"

using namespace iolab;
using namespace std::chrono;

namespace model_09_proactor {

const char* const kVariants[] = {"09_proactor", "09_proactor_epoll", "09_proactor_asio"};

ServerProcess start(const std::string& name, const std::vector<std::string>& extra = {}) {
    for (const Variant& v : registry(IOLAB_BIN_DIR)) {
        if (v.name == name) {
            return ServerProcess::start(v, extra);
        }
    }
    ServerProcess none;
    return none;
}

// A sanitizer build may build only some variants (the ThreadSanitizer run, the threaded ones).
bool built(const std::string& name) {
    return ::access((std::string(IOLAB_BIN_DIR) + "/" + name + "_server").c_str(), X_OK) == 0;
}

// In a loop over the variants: a variant this machine refuses (exit 77), or this build did not
// build, is skipped; the others still run.
#define START_OR_SKIP(server, name)                                          \
    if (!built(name)) {                                                      \
        std::printf("skipping %s: not built here\n", (name));                \
        continue;                                                            \
    }                                                                        \
    ASSERT_NE((server).state(), ServerProcess::State::failed)                \
        << (name) << ": " << (server).reason();                              \
    if ((server).state() == ServerProcess::State::cannot_run) {              \
        std::printf("skipping %s: %s\n", (name), (server).reason().c_str()); \
        continue;                                                            \
    }

long stat_value(const std::string& stats, const std::string& key) {
    size_t at = stats.find(" " + key + "=");
    return at == std::string::npos ? -1 : std::stol(stats.substr(at + key.size() + 2));
}

// Sends every connection's bytes while reading what comes back, all at once with poll(2), then
// shuts down each write side and reads until the server closes. Returns false on the deadline.
bool echo_burst(std::vector<Client>& conns, const std::vector<std::string>& sent,
                std::vector<std::string>& got, milliseconds deadline) {
    size_t n = conns.size();
    std::vector<size_t> off(n, 0);
    std::vector<bool> eof(n, false);
    got.assign(n, {});
    for (auto& c : conns) {
        ::fcntl(c.fd(), F_SETFL, ::fcntl(c.fd(), F_GETFL) | O_NONBLOCK);
    }
    auto until = steady_clock::now() + deadline;
    char buf[65536];
    for (size_t open = n; open > 0;) {
        if (steady_clock::now() > until) {
            return false;
        }
        std::vector<pollfd> fds(n);
        for (size_t i = 0; i < n; ++i) {
            fds[i].fd = eof[i] ? -1 : conns[i].fd();
            fds[i].events = POLLIN | (off[i] < sent[i].size() ? POLLOUT : 0);
        }
        if (::poll(fds.data(), n, 100) < 0) {
            return false;
        }
        for (size_t i = 0; i < n; ++i) {
            if (fds[i].revents & POLLOUT) {
                ssize_t w = ::send(conns[i].fd(), sent[i].data() + off[i],
                                   std::min<size_t>(sent[i].size() - off[i], 65536), MSG_NOSIGNAL);
                if (w > 0 && (off[i] += static_cast<size_t>(w)) == sent[i].size()) {
                    conns[i]
                        .shutdown_write();  // the half-close: the server must finish, then close
                }
            }
            if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) {
                ssize_t r = ::recv(conns[i].fd(), buf, sizeof buf, 0);
                if (r > 0) {
                    got[i].append(buf, static_cast<size_t>(r));
                } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                    eof[i] = true;
                    --open;
                }
            }
        }
    }
    return true;
}

TEST(Proactor, EchoBurstSixteenConnectionsOneMiBEachLoseNothing) {
    for (const char* name : kVariants) {
        ServerProcess server = start(name, {"--mode", "echo"});
        START_OR_SKIP(server, name);
        std::mt19937 rng(9);
        std::vector<Client> conns;
        std::vector<std::string> sent;
        for (int i = 0; i < 16; ++i) {
            conns.push_back(Client::connect(server.port()));
            std::string bytes(1 << 20, '\0');
            for (auto& ch : bytes) {
                ch = static_cast<char>(rng());
            }
            sent.push_back(std::move(bytes));
        }
        std::vector<std::string> got;
        ASSERT_TRUE(echo_burst(conns, sent, got, 60s)) << name << ": not done within 60 s";
        for (size_t i = 0; i < conns.size(); ++i) {
            ASSERT_EQ(got[i].size(), sent[i].size()) << name << " connection " << i;
            EXPECT_TRUE(got[i] == sent[i]) << name << " connection " << i << ": bytes differ";
        }
        Client probe = Client::connect(server.port());
        probe.send("still there\n");
        EXPECT_EQ(probe.read_line(5s), "still there") << name;
        EXPECT_EQ(server.stop(), 0) << name;
    }
}

TEST(Proactor, WorkStallsOnlyTheSingleLoop) {
    for (const char* name : kVariants) {
        bool single_loop = std::string(name) == "09_proactor";
        ServerProcess server = start(name);
        START_OR_SKIP(server, name);
        Client busy = Client::connect(server.port());
        Client other = Client::connect(server.port());
        ASSERT_EQ(other.ask("PING"), "PONG") << name;
        busy.send("WORK 600\n");
        std::this_thread::sleep_for(100ms);
        auto t0 = steady_clock::now();
        EXPECT_EQ(other.ask("PING", 5s), "PONG") << name;
        auto took = duration_cast<milliseconds>(steady_clock::now() - t0);
        if (single_loop) {
            // The only thread is inside WORK: the PING waits for the remaining ~500 ms.
            EXPECT_GE(took, 400ms) << name << ": PING answered during WORK on a single loop?";
        } else {
            EXPECT_LT(took, 100ms) << name << ": a WORK on one connection stalled another";
        }
        EXPECT_EQ(busy.read_line(5s), "DONE 600") << name;
        // The emulated proactor's workers: four WORKs at once finish together, not in turn.
        if (!single_loop) {
            std::vector<Client> four;
            for (int i = 0; i < 4; ++i) {
                four.push_back(Client::connect(server.port()));
                four.back().send("WORK 300\n");
            }
            auto t1 = steady_clock::now();
            for (auto& c : four) {
                EXPECT_EQ(c.read_line(5s), "DONE 300") << name;
            }
            EXPECT_LT(steady_clock::now() - t1, 900ms) << name << ": WORKs ran one by one";
        }
        EXPECT_EQ(server.stop(), 0) << name;
    }
}

TEST(Proactor, ChurnConnectionsAreFreedOnceAndCounted) {
    for (const char* name : kVariants) {
        ServerProcess server = start(name);
        START_OR_SKIP(server, name);
        for (int i = 0; i < 300; ++i) {
            Client c = Client::connect(server.port());
            ASSERT_EQ(c.ask("ECHO " + std::to_string(i)), std::to_string(i)) << name;
            if (i % 3 == 0) {
                c.reset();  // RST: the recv in flight fails, the connection is cancelled
            } else if (i % 3 == 1) {
                c.send("PING\nPING\n");  // close with replies still to send
            }
        }
        std::vector<Client> held;
        for (int i = 0; i < 200; ++i) {
            held.push_back(Client::connect(server.port()));
        }
        for (auto& c : held) {
            ASSERT_EQ(c.ask("PING"), "PONG") << name;
        }
        held.clear();
        Client asker = Client::connect(server.port());
        long conns = -1;
        for (int tries = 0; tries < 50 && conns != 1; ++tries) {
            std::this_thread::sleep_for(20ms);
            conns = stat_value(asker.ask("STATS"), "conns");
        }
        EXPECT_EQ(conns, 1) << name << ": closed connections still counted";
        EXPECT_TRUE(server.alive()) << name;
        EXPECT_EQ(server.stop(), 0) << name;
    }
}

// Runs `INPUT_COMMAND | 09_proactor_client --port P`; returns (exit status, stdout).
std::pair<int, std::string> run_client(const std::string& input_command, uint16_t port) {
    std::string cmd = input_command + " | timeout 10 " + std::string(IOLAB_BIN_DIR) +
                      "/09_proactor_client --port " + std::to_string(port);
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

// A connection's last line (BYE, ERR line too long) comes after the replies to every request
// before it, even when those are still being answered elsewhere (a worker, the WORK pool), and
// requests after a QUIT get no reply. Each burst arrives in one segment, so the over-long line and
// the QUIT are read while the WORK before them is still out.
TEST(Proactor, ALastLineComesAfterTheRepliesBeforeIt) {
    struct Case {
        std::string burst;
        std::string want;  // every byte until the server closes
    };
    const std::string too_long(100, 'x');
    const Case cases[] = {
        {"WORK 300\nPING\n" + too_long + "\nPING\n",
         "DONE 300\nPONG\nERR line too long (limit 64)\n"},
        {"WORK 300\nECHO a\nQUIT\nPING\n", "DONE 300\na\nBYE\n"},
    };
    for (const char* name : kVariants) {
        ServerProcess server = start(name, {"--max-line", "64"});
        START_OR_SKIP(server, name);
        for (const Case& c : cases) {
            Client client = Client::connect(server.port());
            ASSERT_TRUE(client.send(c.burst)) << name;
            auto got = client.read_until_close(5s);
            ASSERT_TRUE(got) << name << ": not closed within 5 s after '" << c.want << "'";
            EXPECT_EQ(*got, c.want) << name;
        }
        EXPECT_EQ(server.stop(), 0) << name;
    }
}

TEST(Proactor, ClientPipedPrintsEveryReplyInOrder) {
    // The client is built with the 09_proactor variant, which exists only where liburing was
    // found; where the variant is registered, a missing client is a build failure.
    bool configured = false;
    for (const Variant& v : registry(IOLAB_BIN_DIR)) {
        configured = configured || v.name == "09_proactor";
    }
    if (!configured) {
        GTEST_SKIP() << "09_proactor is not configured here (liburing was not found)";
    }
    ASSERT_EQ(::access((std::string(IOLAB_BIN_DIR) + "/09_proactor_client").c_str(), X_OK), 0)
        << "09_proactor is registered but 09_proactor_client is not built";
    for (const char* name : kVariants) {
        ServerProcess server = start(name);
        START_OR_SKIP(server, name);
        auto [rc, out] =
            run_client("printf 'PING\\nECHO two\\nWORK 50\\nECHO last'", server.port());
        if (rc == 77) {
            GTEST_SKIP() << "09_proactor_client: io_uring refused on this machine";
        }
        EXPECT_EQ(rc, 0) << name;
        EXPECT_EQ(out, "PONG\ntwo\nDONE 50\nlast\n") << name;
        // 5000 pipelined requests: every reply, in order.
        auto [rc2, out2] = run_client("seq 1 5000 | sed 's/^/ECHO /'", server.port());
        EXPECT_EQ(rc2, 0) << name;
        std::string want;
        for (int i = 1; i <= 5000; ++i) {
            want += std::to_string(i) + "\n";
        }
        EXPECT_TRUE(out2 == want) << name << ": " << out2.size() << " bytes, want " << want.size();
        EXPECT_EQ(server.stop(), 0) << name;
    }
}

}  // namespace model_09_proactor

// model_test compiles every model suite as one unit (tests/CMakeLists.txt).
#undef START_OR_SKIP
