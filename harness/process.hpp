// Runs a server variant as a child process, exactly as a student would start it. What the kernel
// knows about it (read_proc_stats and the rest) is read from /proc by harness/procinfo.hpp.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/fd.hpp"
#include "harness/procinfo.hpp"
#include "harness/registry.hpp"

namespace iolab {

using namespace std::chrono_literals;

class ServerProcess {
public:
    enum class State { running, cannot_run, failed };

    // Starts `v` with its fixed args, then `extra`, then "--port 0" unless extra names a port.
    // The child starts as a shell would start it (harness/spawn.hpp): stdin /dev/null, stdout a
    // pipe to us, stderr a memfd, no other descriptor, every signal at its default disposition
    // and none blocked, whatever the test process had. Waits up to `deadline` for the
    // "listening on HOST:PORT" line.
    // state() tells how it went: running; cannot_run (exit 77: the model is refused on this
    // machine, reason() says why); failed (anything else, reason() says what).
    // fd_limit > 0 sets the child's RLIMIT_NOFILE (soft and hard, with `ulimit -n`) before it
    // execs the server, so that the server can never hold more than that many descriptors.
    static ServerProcess start(const Variant& v, const std::vector<std::string>& extra = {},
                               std::chrono::milliseconds deadline = 10s, long fd_limit = 0);
    // The same for any binary path (the faulty servers built for the tests).
    static ServerProcess start_binary(const std::string& binary,
                                      const std::vector<std::string>& args,
                                      std::chrono::milliseconds deadline = 10s, long fd_limit = 0);

    ServerProcess() = default;
    ServerProcess(ServerProcess&&) noexcept;
    ServerProcess& operator=(ServerProcess&&) noexcept;
    ~ServerProcess();  // SIGKILL to it and every process it started, if still running

    State state() const { return state_; }
    bool running() const { return state_ == State::running; }
    const std::string& reason() const { return reason_; }
    pid_t pid() const { return pid_; }
    uint16_t port() const { return port_; }
    const std::string& host() const { return host_; }

    // True while the child has not exited (reaps it if it has).
    bool alive();
    // SIGTERM, then wait up to `deadline`. Returns the exit code, 128+signal if a signal killed
    // it, or -1 if it had to be SIGKILLed after the deadline (it and every process it started:
    // a process-per-connection server's children do not die with their parent).
    int stop(std::chrono::milliseconds deadline = 3s);
    // For a server started under a tracer (strace -f SERVER ...): SIGTERM to the server, the
    // tracer's child, then wait up to `deadline` for the tracer, which exits once its tracee has.
    // A SIGTERM to strace would only make it detach and leave the server running.
    int stop_tracee(std::chrono::milliseconds deadline = 3s);
    // Sends a signal without waiting.
    void signal(int sig);
    // Waits for the child to exit by itself; same return values as stop(). At the deadline the
    // child and every process it started are SIGKILLed.
    int wait(std::chrono::milliseconds deadline);
    // Everything the server wrote to stderr so far (its --trace lines, error messages).
    std::string stderr_text() const;

private:
    pid_t pid_ = -1;
    State state_ = State::failed;
    std::string reason_;
    std::string host_;
    uint16_t port_ = 0;
    Fd stdout_;
    Fd stderr_;  // a memfd the child's stderr goes to
    int exit_code_ = -2;
};

}  // namespace iolab
