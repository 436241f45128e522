// The conformance suite: every scenario of harness/scenarios.hpp, run against every server
// variant in the registry, each server a child process on port 0. A variant that exits 77 (its
// model is refused on this machine) is skipped with the reason it gave.

#include <gtest/gtest.h>

#include <cstdlib>

#include "harness/registry.hpp"
#include "harness/scenarios.hpp"

using namespace iolab;

namespace {

class Conformance : public ::testing::TestWithParam<Variant> {
protected:
    void run(Scenario scenario) {
        Outcome o = scenario(target_for(GetParam()));
        if (o.kind == Outcome::Kind::skip) {
            GTEST_SKIP() << o.why;
        }
        EXPECT_TRUE(o.passed()) << GetParam().name << ": " << o.why;
    }
};

TEST_P(Conformance, QaBasics) {
    run(qa_basics);
}
TEST_P(Conformance, Pipelined2000) {
    run(pipelined_2000);
}
TEST_P(Conformance, OneByteAtATime) {
    run(one_byte_at_a_time);
}
TEST_P(Conformance, Echo8BitClean) {
    run(echo_8bit_clean);
}
TEST_P(Conformance, GarbageGetsErr) {
    run(garbage_gets_err);
}
TEST_P(Conformance, OverLongLine) {
    run(over_long_line);
}
TEST_P(Conformance, Concurrent200) {
    run(concurrent_200);
}
TEST_P(Conformance, SecondClient) {
    run(second_client_waits_or_not);
}
TEST_P(Conformance, ResetsAndVanishing) {
    run(resets_and_vanishing_clients);
}
TEST_P(Conformance, NeverReadingClient) {
    run(never_reading_client);
}
TEST_P(Conformance, MaxConns) {
    run(max_conns);
}
TEST_P(Conformance, IdleTimeout) {
    run(idle_timeout);
}
TEST_P(Conformance, SigtermRightAfterReply) {
    run(sigterm_right_after_reply);
}
TEST_P(Conformance, SigtermExitsZero) {
    run(sigterm_exits_zero);
}
TEST_P(Conformance, EchoMode8MiB) {
    run(echo_mode_8mib);
}
TEST_P(Conformance, RequestTimeout) {
    run(request_timeout);
}
TEST_P(Conformance, Fairness) {
    run(fairness);
}

// Every variant, or only those with the trait named by IOLAB_ONLY_TRAIT (the ThreadSanitizer run
// uses IOLAB_ONLY_TRAIT=threads).
std::vector<Variant> variants_under_test() {
    std::vector<Variant> all = registry(IOLAB_BIN_DIR);
    const char* trait = std::getenv("IOLAB_ONLY_TRAIT");
    if (trait == nullptr || *trait == '\0') {
        return all;
    }
    std::vector<Variant> some;
    for (auto& v : all) {
        if (v.has(trait)) {
            some.push_back(v);
        }
    }
    return some;
}

std::string variant_name(const ::testing::TestParamInfo<Variant>& info) {
    return info.param.name;
}

GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(Conformance);
INSTANTIATE_TEST_SUITE_P(Variants, Conformance, ::testing::ValuesIn(variants_under_test()),
                         variant_name);

}  // namespace
