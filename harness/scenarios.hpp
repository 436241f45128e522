// The conformance scenarios: what every server variant must do, written once and run against
// every variant in the registry (tests/conformance_test.cpp) and against the deliberately faulty
// servers (tests/faulty_test.cpp), which each scenario meant to catch a fault must catch.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "harness/clients.hpp"
#include "harness/process.hpp"
#include "harness/registry.hpp"

namespace iolab {

// The connections a variant holds at once with its default arguments, where the model documents
// a limit (conns 0: none), and the limit's name. The registry's traits do not carry these; the
// fault and soak rows scale under them, and iolab scale leaves out the points past them.
struct Cap {
    int conns = 0;
    std::string why;
};
Cap documented_cap(const Variant& v);

// A server under test: how to start it (extra arguments appended), and what it declares.
struct Target {
    std::string name;
    std::function<ServerProcess(const std::vector<std::string>&)> start;
    bool serial = false;  // serves one client at a time (01): checked as documented instead
    // Connections it serves at the same time with its default arguments, where that is fewer
    // than a scenario would open (0: no such cap). A scenario that needs more scales down under
    // it and says so.
    int served_at_once = 0;
};

Target target_for(const Variant& v);

// The result of a scenario: pass, fail (with why), or skipped (the server exited 77).
struct Outcome {
    enum class Kind { pass, fail, skip } kind = Kind::pass;
    std::string why;
    bool passed() const { return kind == Kind::pass; }
    bool failed() const { return kind == Kind::fail; }
};

using Scenario = Outcome (*)(const Target&);

Outcome qa_basics(const Target& t);
Outcome pipelined_2000(const Target& t);
Outcome one_byte_at_a_time(const Target& t);
Outcome echo_8bit_clean(const Target& t);
Outcome garbage_gets_err(const Target& t);
Outcome over_long_line(const Target& t);
Outcome concurrent_200(const Target& t);
Outcome second_client_waits_or_not(const Target& t);
Outcome resets_and_vanishing_clients(const Target& t);
Outcome never_reading_client(const Target& t);
Outcome max_conns(const Target& t);
Outcome idle_timeout(const Target& t);
Outcome sigterm_exits_zero(const Target& t);
Outcome sigterm_right_after_reply(const Target& t);
Outcome echo_mode_8mib(const Target& t);
Outcome request_timeout(const Target& t);
Outcome fairness(const Target& t);

struct NamedScenario {
    const char* name;
    Scenario run;
};
const std::vector<NamedScenario>& all_scenarios();

}  // namespace iolab
