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

// Every registered variant; binaries are looked up in `bin_dir`.
std::vector<Variant> registry(const std::string& bin_dir);

// What GoogleTest prints for a Variant parameter (found by argument-dependent lookup): its name.
void PrintTo(const Variant& v, std::ostream* os);

// The directory holding the running executable (build/bin for iolab and the tests).
std::string self_dir();

}  // namespace iolab
