// Starting a child process the way a shell starts a command, with posix_spawn(3): the one place
// in the harness and the tests where a process is created to run another program.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace iolab {

struct SpawnSpec {
    std::vector<std::string> argv;  // argv[0] is the program's path; PATH is not searched
    std::vector<std::string> env;   // "NAME=value" each, added to ours (or replacing ours)
    int stdin_fd = -1;              // becomes the child's 0; -1: /dev/null
    int stdout_fd = -1;             // becomes the child's 1; -1: ours
    int stderr_fd = -1;             // becomes the child's 2; -1: ours
    long fd_limit = 0;              // > 0: the child's RLIMIT_NOFILE, soft and hard
};

// Starts spec.argv and returns the child's pid; throws std::system_error when posix_spawn fails,
// which includes an exec that fails (glibc reports its errno; with fd_limit the exec is the
// shell's, which then exits 127 and says why on stderr). The child has descriptors 0, 1
// and 2 and no others, every signal at its default disposition, and no signal blocked, whatever
// the calling process had open, ignored or blocked. Nothing ties the child's life to the calling
// thread, so a short-lived thread may start it (iolab's start_counted does).
pid_t spawn(const SpawnSpec& spec);

// A wait(2) status as one number: the exit code, or 128 + the signal that killed the process.
int exit_code(int wait_status);

// Waits up to `deadline` for `pid` to exit and returns its wait status. At the deadline it
// kills the child with SIGKILL, reaps it and returns std::nullopt (also returned at once if
// `pid` is not a child of ours still to be reaped).
std::optional<int> wait_or_kill(pid_t pid, std::chrono::milliseconds deadline);

}  // namespace iolab
