// The registry: every server variant the build produced, with the traits the tests read.
// Generated at configure time from each model's iolab_server() calls (see CMakeLists.txt).
#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace iolab {

struct Variant {
    std::string name;               // "05_epoll_et"
    std::string binary;             // absolute path
    std::vector<std::string> args;  // fixed arguments that select the variant
    std::vector<std::string> traits;
    bool has(const std::string& trait) const;
};

// Which rows registry() returns. The yardsticks (bench/: minimal echo servers on the libraries
// some variants use, trait yardstick) are measures for `iolab compare`, not lab servers: they
// speak echo only, so the suites, `iolab list` and every caller that does not ask leave them out.
enum class Rows { lab, with_yardsticks };

// Every registered variant; binaries are looked up in `bin_dir`.
std::vector<Variant> registry(const std::string& bin_dir, Rows rows = Rows::lab);

// What GoogleTest prints for a Variant parameter (found by argument-dependent lookup): its name.
void PrintTo(const Variant& v, std::ostream* os);

// The directory holding the running executable (build/bin for iolab and the tests).
std::string self_dir();

}  // namespace iolab
