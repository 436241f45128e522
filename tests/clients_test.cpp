// Each model's own client, piped, against its own model's server: request lines on stdin, one
// reply per line on stdout, exit 0 once every reply has arrived (shared/CONTRACT.md, Clients).

#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <sys/wait.h>

#include "harness/process.hpp"
#include "harness/registry.hpp"

using namespace iolab;

namespace {

// The first variant of every model: the one whose name is the model's directory.
std::vector<Variant> base_variants() {
    std::vector<Variant> out;
    for (const Variant& v : registry(IOLAB_BIN_DIR)) {
        bool is_base = true;
        for (const Variant& other : out) {
            is_base = is_base && v.name.rfind(other.name, 0) != 0;
        }
        if (is_base) {
            out.push_back(v);
        }
    }
    return out;
}

struct Piped {
    int status = -1;
    std::string out;
};

// Runs `input | client --port P` under a 20 s deadline.
Piped pipe_through(const std::string& client, uint16_t port, const std::string& input) {
    std::string cmd =
        "printf '" + input + "' | timeout 20 " + client + " --port " + std::to_string(port);
    Piped r;
    FILE* p = ::popen(cmd.c_str(), "r");
    if (p == nullptr) {
        return r;
    }
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) {
        r.out.append(buf, n);
    }
    int status = ::pclose(p);
    r.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return r;
}

class PipedClient : public ::testing::TestWithParam<Variant> {};

TEST_P(PipedClient, PrintsEveryReplyAndExitsZero) {
    const Variant& v = GetParam();
    ServerProcess server = ServerProcess::start(v);
    if (server.state() == ServerProcess::State::cannot_run) {
        GTEST_SKIP() << server.reason();
    }
    ASSERT_TRUE(server.running()) << server.reason();
    std::string client = std::string(IOLAB_BIN_DIR) + "/" + v.name + "_client";

    Piped r =
        pipe_through(client, server.port(), "PING\\necho piped  text\\nWORK 10\\nNOPE\\nPING\\n");
    EXPECT_EQ(r.status, 0) << r.out;
    EXPECT_EQ(r.out,
              "PONG\npiped  text\nDONE 10\n"
              "ERR unknown command (try PING, ECHO, TIME, WORK, STATS, QUIT)\nPONG\n");

    // QUIT in the middle: BYE, the server closes, and the client stops there.
    Piped q = pipe_through(client, server.port(), "PING\\nQUIT\\n");
    EXPECT_EQ(q.status, 0) << q.out;
    EXPECT_EQ(q.out, "PONG\nBYE\n");

    // A last line without its newline is still a request.
    Piped tail = pipe_through(client, server.port(), "PING\\nPING");
    EXPECT_EQ(tail.out, "PONG\nPONG\n");

    EXPECT_EQ(server.stop(), 0);
}

INSTANTIATE_TEST_SUITE_P(Models, PipedClient, ::testing::ValuesIn(base_variants()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
