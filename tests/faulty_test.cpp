// The suite proves it can fail: each deliberately faulty server is caught by the scenario meant
// to catch its fault, still passes the basics (so the catch is about that fault, not a server
// that does not work at all), and never appears in the registry.

#include <gtest/gtest.h>

#include <iostream>

#include "harness/registry.hpp"
#include "harness/scenarios.hpp"

namespace faulty_test {

using namespace iolab;

Target faulty(const std::string& fault) {
    return {"faulty " + fault,
            [fault](const std::vector<std::string>& extra) {
                std::vector<std::string> args{"--fault", fault};
                args.insert(args.end(), extra.begin(), extra.end());
                return ServerProcess::start_binary(
                    std::string(IOLAB_BIN_DIR) + "/iolab_faulty_server", args);
            },
            false};
}

TEST(FaultyServers, DroppedBytesAreCaught) {
    Target t = faulty("drop-byte");
    EXPECT_TRUE(qa_basics(t).passed());
    Outcome echo = echo_mode_8mib(t);
    EXPECT_TRUE(echo.failed()) << "the 8 MiB echo scenario missed a dropped byte";
    Outcome pipelined = pipelined_2000(t);
    EXPECT_TRUE(pipelined.failed()) << "the pipelined scenario missed a dropped byte";
    std::cout << "caught: " << echo.why << "\ncaught: " << pipelined.why << "\n";
}

TEST(FaultyServers, IgnoredShortWritesAreCaught) {
    Target t = faulty("short-write");
    EXPECT_TRUE(qa_basics(t).passed());
    Outcome o = echo_mode_8mib(t);
    EXPECT_TRUE(o.failed()) << "the 8 MiB echo scenario missed lost short writes";
    std::cout << "caught: " << o.why << "\n";
}

TEST(FaultyServers, DeathBySigpipeIsCaught) {
    Target t = faulty("sigpipe");
    EXPECT_TRUE(qa_basics(t).passed());
    Outcome o = resets_and_vanishing_clients(t);
    EXPECT_TRUE(o.failed()) << "the reset scenario missed a server killed by SIGPIPE";
    std::cout << "caught: " << o.why << "\n";
}

TEST(FaultyServers, NeverListed) {
    for (const Variant& v : registry(IOLAB_BIN_DIR)) {
        EXPECT_EQ(v.name.find("faulty"), std::string::npos) << v.name;
    }
}

}  // namespace faulty_test
