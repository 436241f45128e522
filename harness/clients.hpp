// Identical clients for every variant: a blocking test client with deadlines on every call, and
// the conformance scenarios built from it. A scenario returns a Check (ok, or why not) instead of
// asserting, so that the same scenario can be expected to pass on every real variant and to fail
// on the deliberately faulty servers.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/fd.hpp"
#include "harness/process.hpp"

namespace iolab {

struct Check {
    bool ok = true;
    std::string why;
    explicit operator bool() const { return ok; }
    static Check pass() { return {}; }
    static Check fail(std::string why) { return {false, std::move(why)}; }
};

class Client {
public:
    // Connects (blocking, with a deadline); throws std::system_error on failure.
    static Client connect(uint16_t port, const std::string& host = "127.0.0.1",
                          std::chrono::milliseconds deadline = 5s);
    Client() = default;
    Client(Client&&) = default;
    Client& operator=(Client&&) = default;

    int fd() const { return fd_.get(); }
    bool connected() const { return fd_.valid(); }

    // Writes every byte or fails at the deadline (a server that stopped reading).
    bool send(std::string_view bytes, std::chrono::milliseconds deadline = 10s);
    // One reply line without its '\n'; nullopt on EOF, error or deadline.
    std::optional<std::string> read_line(std::chrono::milliseconds deadline = 5s);
    // Exactly n bytes, or fewer if EOF/error/deadline came first.
    std::string read_exact(size_t n, std::chrono::milliseconds deadline = 10s);
    // Sends request + "\n" and returns the reply line, or "<no reply>".
    std::string ask(std::string_view request, std::chrono::milliseconds deadline = 5s);
    // Reads until the server closes; returns what arrived before that, or nullopt if the
    // deadline came first. A reset after the data counts as closed.
    std::optional<std::string> read_until_close(std::chrono::milliseconds deadline = 5s);
    void shutdown_write();
    // Closes with SO_LINGER 0, so the kernel sends RST instead of FIN.
    void reset();
    void close() { fd_.reset(); }

private:
    Fd fd_;
    std::string pending_;  // bytes read past the last line returned
};

}  // namespace iolab
