// Every client the build has, piped, against its own variant's server (04_select_poll_client
// against 04_select_poll_server, ...): request lines on stdin, one reply per line on stdout, in
// order, exit 0 once every reply has arrived (shared/CONTRACT.md, Clients).

#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "harness/process.hpp"
#include "harness/registry.hpp"

namespace clients_test {

using namespace iolab;

std::string client_of(const Variant& v) {
    return std::string(IOLAB_BIN_DIR) + "/" + v.name + "_client";
}

// Every variant whose client was built: the variant's own name with _client.
std::vector<Variant> variants_with_client() {
    std::vector<Variant> out;
    for (const Variant& v : registry(IOLAB_BIN_DIR)) {
        if (::access(client_of(v).c_str(), X_OK) == 0) {
            out.push_back(v);
        }
    }
    return out;
}

struct Piped {
    int status = -1;
    std::string out;
};

// Runs `cat input | client --port P` under a 20 s deadline: stdin is a pipe, as in a shell.
Piped pipe_through(const std::string& client, uint16_t port, const std::string& input) {
    char path[] = "/tmp/iolab_clients_test_XXXXXX";
    int tmp = ::mkstemp(path);
    Piped r;
    if (tmp < 0) {
        return r;
    }
    ::close(tmp);
    std::ofstream(path, std::ios::binary) << input;
    std::string cmd =
        std::string("cat ") + path + " | timeout 20 " + client + " --port " + std::to_string(port);
    FILE* p = ::popen(cmd.c_str(), "r");
    if (p != nullptr) {
        char buf[4096];
        size_t n;
        while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) {
            r.out.append(buf, n);
        }
        int status = ::pclose(p);
        r.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    ::unlink(path);
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
    std::string client = client_of(v);

    Piped r = pipe_through(client, server.port(), "PING\necho piped  text\nWORK 10\nNOPE\nPING\n");
    // Exit 77 means "this machine refuses the model"; only io_uring can be refused here.
    if (r.status == 77 && v.has("uring")) {
        GTEST_SKIP() << v.name << "_client: io_uring refused";
    }
    EXPECT_EQ(r.status, 0) << r.out;
    EXPECT_EQ(r.out,
              "PONG\npiped  text\nDONE 10\n"
              "ERR unknown command (try PING, ECHO, TIME, WORK, STATS, QUIT)\nPONG\n");

    // QUIT in the middle: BYE, the server closes, and the client stops there.
    Piped q = pipe_through(client, server.port(), "PING\nQUIT\n");
    EXPECT_EQ(q.status, 0) << q.out;
    EXPECT_EQ(q.out, "PONG\nBYE\n");

    // A last line without its newline is still a request.
    Piped tail = pipe_through(client, server.port(), "PING\nPING");
    EXPECT_EQ(tail.status, 0) << tail.out;
    EXPECT_EQ(tail.out, "PONG\nPONG\n");

    // More requests than any client buffers before it stops reading stdin (2.6 MB), every reply
    // in request order.
    std::string many;
    std::string expected;
    for (int i = 0; i < 20000; ++i) {
        std::string text = std::to_string(i) + std::string(120, 'a' + i % 26);
        many += "ECHO " + text + "\n";
        expected += text + "\n";
    }
    Piped bulk = pipe_through(client, server.port(), many);
    EXPECT_EQ(bulk.status, 0);
    EXPECT_EQ(bulk.out.size(), expected.size());
    EXPECT_TRUE(bulk.out == expected)
        << "the replies differ from the requests, or are out of order";

    EXPECT_EQ(server.stop(), 0);
}

INSTANTIATE_TEST_SUITE_P(Models, PipedClient, ::testing::ValuesIn(variants_with_client()),
                         [](const auto& info) { return info.param.name; });

}  // namespace clients_test
