// The contract's command line (shared/CONTRACT.md) for every server and client: the shared
// options, a program's own ones, one parse. CLI11 parses; it is included by cli.cpp alone, so
// that the listings compile in a second instead of eight (CLI11 is header-only and heavy).
#pragma once

#include <initializer_list>
#include <memory>
#include <string>
#include <type_traits>

#include "common/options.hpp"

namespace CLI {
class App;
}

namespace iolab {

class CommandLine {
public:
    // `name` is the program's name in --help and in error lines; `description` its first line.
    CommandLine(std::string name, std::string description);
    ~CommandLine();
    CommandLine(const CommandLine&) = delete;
    CommandLine& operator=(const CommandLine&) = delete;

    const std::string& name() const { return name_; }

    // --host --port --mode --max-line --max-conns --idle-timeout --request-timeout --trace
    void add_server_options(ServerOptions& opt);
    // --host --port
    void add_client_options(ClientOptions& opt);

    // An option whose value must lie in [lo, hi]; --help shows its default. T is int,
    // unsigned long (size_t, uint64_t), unsigned long long or double.
    template <typename T>
    void add_option(const std::string& name, T& value, const std::string& help,
                    std::type_identity_t<T> lo, std::type_identity_t<T> hi);
    // An option that takes one of `allowed`; `required` makes it mandatory.
    void add_option(const std::string& name, std::string& value, const std::string& help,
                    std::initializer_list<const char*> allowed, bool required = false);
    void add_flag(const std::string& name, bool& value, const std::string& help);

    // Parses argv. Returns -1 when the program should go on; otherwise the exit code to return
    // at once: 0 after --help, 2 after a bad argument, reported on one line of stderr.
    int parse(int argc, char** argv);

private:
    std::string name_;
    std::unique_ptr<CLI::App> app_;
};

// The same parse for a CLI::App built by hand (iolab's subcommands): -1, 0 or 2 as above.
int parse_command_line(CLI::App& app, int argc, char** argv);

}  // namespace iolab
