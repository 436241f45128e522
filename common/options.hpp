// The contract's options (shared/CONTRACT.md) as every binary holds them (common/cli.hpp parses
// them), plus the two lines every server prints: "listening on ..." and a setup failure.
#pragma once

#include <chrono>
#include <cstdint>
#include <exception>
#include <string>
#include <string_view>

namespace iolab {

enum class Mode { qa, echo };

struct ServerOptions {
    std::string host = "127.0.0.1";
    uint16_t port = 9000;
    Mode mode = Mode::qa;
    size_t max_line = 4096;
    int max_conns = 1000;
    double idle_timeout = 0;     // seconds; 0 = never
    double request_timeout = 0;  // seconds from a request line's first byte to its '\n'; 0 = never
    bool trace = false;

    // The two timeouts as durations, converted once; zero means never.
    std::chrono::steady_clock::duration idle_limit() const { return to_duration(idle_timeout); }
    std::chrono::steady_clock::duration request_limit() const {
        return to_duration(request_timeout);
    }
    static std::chrono::steady_clock::duration to_duration(double seconds) {
        return std::chrono::duration_cast<std::chrono::steady_clock::duration>(
            std::chrono::duration<double>(seconds));
    }
};

// Defaults for model number N (1..9): port 9000 + N.
ServerOptions server_defaults(int model_number);

struct ClientOptions {
    std::string host = "127.0.0.1";
    uint16_t port = 9000;
};
ClientOptions client_defaults(int model_number);

// Prints "listening on HOST:PORT model=NAME" on stdout and flushes it: the line the harness and
// the tests wait for. Also turns tracing on when --trace was given.
void announce_listening(int listen_fd, std::string_view model, const ServerOptions& opt);

// The one line main() prints for a setup failure ("05_epoll_server: bind 127.0.0.1:9005:
// Address already in use"). Returns the exit code, 1.
int report_setup_failure(std::string_view program, const std::exception& e);

}  // namespace iolab
