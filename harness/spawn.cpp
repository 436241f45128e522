#include "harness/spawn.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <system_error>
#include <thread>

extern char** environ;

namespace iolab {

namespace {

void check(int rc, const char* what) {
    if (rc != 0) {
        throw std::system_error(rc, std::generic_category(), what);
    }
}

// posix_spawn's attributes and file actions are C objects, each with an init and a destroy.
class Attributes {
public:
    Attributes() { check(::posix_spawnattr_init(&a_), "posix_spawnattr_init"); }
    ~Attributes() { ::posix_spawnattr_destroy(&a_); }
    Attributes(const Attributes&) = delete;
    Attributes& operator=(const Attributes&) = delete;
    posix_spawnattr_t* get() { return &a_; }

private:
    posix_spawnattr_t a_;
};

class FileActions {
public:
    FileActions() { check(::posix_spawn_file_actions_init(&fa_), "posix_spawn_file_actions_init"); }
    ~FileActions() { ::posix_spawn_file_actions_destroy(&fa_); }
    FileActions(const FileActions&) = delete;
    FileActions& operator=(const FileActions&) = delete;
    posix_spawn_file_actions_t* get() { return &fa_; }

private:
    posix_spawn_file_actions_t fa_;
};

// Our environment with spec.env's names replaced or added.
std::vector<std::string> child_environment(const std::vector<std::string>& add) {
    std::vector<std::string> env;
    for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
        env.emplace_back(*e);
    }
    for (const std::string& entry : add) {
        size_t eq = entry.find('=');
        if (eq == std::string::npos || eq == 0) {
            throw std::invalid_argument("spawn: environment entry '" + entry +
                                        "' is not NAME=value");
        }
        std::string name = entry.substr(0, eq + 1);
        std::erase_if(env, [&](const std::string& e) { return e.rfind(name, 0) == 0; });
        env.push_back(entry);
    }
    return env;
}

std::vector<char*> c_strings(std::vector<std::string>& strings) {
    std::vector<char*> out;
    for (std::string& s : strings) {
        out.push_back(s.data());
    }
    out.push_back(nullptr);
    return out;
}

}  // namespace

pid_t spawn(const SpawnSpec& spec) {
    if (spec.argv.empty()) {
        throw std::invalid_argument("spawn: no program given");
    }
    std::vector<std::string> args = spec.argv;
    if (spec.fd_limit > 0) {
        // posix_spawn has no attribute for resource limits and runs none of our code in the
        // child. A limit belongs to the whole process, so lowering ours around the call would
        // take descriptors from every other thread at that moment; prlimit(2) on the child's pid
        // comes too late, because glibc's posix_spawn returns only after the child has called
        // execve, and the program may have opened descriptors by then. So the child is /bin/sh,
        // which sets the limit with `ulimit -n` (soft and hard, as a student types it) and then
        // execs the program in its own place: the same pid, and the limit in force from the
        // program's first instruction.
        const std::string script = "ulimit -n " + std::to_string(spec.fd_limit) + " && exec \"$@\"";
        args.insert(args.begin(), {"/bin/sh", "-c", script, "sh"});
    }
    std::vector<std::string> env = child_environment(spec.env);
    std::vector<char*> argv = c_strings(args);
    std::vector<char*> envp = c_strings(env);

    // Signal dispositions and the mask survive execve (only caught signals are reset), so a
    // SIGPIPE the test runner ignores or a signal a thread of ours blocks would reach the child:
    // every signal goes back to its default, and none stays blocked. (glibc's posix_spawn leaves
    // its own two internal signals, 32 and 33, below SIGRTMIN, ignored; no model uses them.)
    Attributes attr;
    sigset_t all;
    sigset_t none;
    sigfillset(&all);
    sigemptyset(&none);
    check(::posix_spawnattr_setsigdefault(attr.get(), &all), "posix_spawnattr_setsigdefault");
    check(::posix_spawnattr_setsigmask(attr.get(), &none), "posix_spawnattr_setsigmask");
    check(::posix_spawnattr_setflags(attr.get(), POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK),
          "posix_spawnattr_setflags");

    // The file actions run in the child in this order, between its creation and execve. A
    // descriptor opened without O_CLOEXEC anywhere in our process (a library's, one inherited
    // from whatever started us) would stay open in the child and count against its
    // RLIMIT_NOFILE, so after 0, 1 and 2 are in place every other one is closed.
    FileActions actions;
    if (spec.stdin_fd >= 0) {
        check(::posix_spawn_file_actions_adddup2(actions.get(), spec.stdin_fd, STDIN_FILENO),
              "posix_spawn_file_actions_adddup2");
    } else {
        check(::posix_spawn_file_actions_addopen(actions.get(), STDIN_FILENO, "/dev/null", O_RDONLY,
                                                 0),
              "posix_spawn_file_actions_addopen");
    }
    if (spec.stdout_fd >= 0) {
        check(::posix_spawn_file_actions_adddup2(actions.get(), spec.stdout_fd, STDOUT_FILENO),
              "posix_spawn_file_actions_adddup2");
    }
    if (spec.stderr_fd >= 0) {
        check(::posix_spawn_file_actions_adddup2(actions.get(), spec.stderr_fd, STDERR_FILENO),
              "posix_spawn_file_actions_adddup2");
    }
    check(::posix_spawn_file_actions_addclosefrom_np(actions.get(), STDERR_FILENO + 1),
          "posix_spawn_file_actions_addclosefrom_np");

    pid_t pid = -1;
    int rc = ::posix_spawn(&pid, argv[0], actions.get(), attr.get(), argv.data(), envp.data());
    if (rc != 0) {
        throw std::system_error(rc, std::generic_category(), "posix_spawn " + args.front());
    }
    return pid;
}

int exit_code(int wait_status) {
    if (WIFEXITED(wait_status)) {
        return WEXITSTATUS(wait_status);
    }
    if (WIFSIGNALED(wait_status)) {
        return 128 + WTERMSIG(wait_status);
    }
    return -1;
}

std::optional<int> wait_or_kill(pid_t pid, std::chrono::milliseconds deadline) {
    using namespace std::chrono_literals;
    auto until = std::chrono::steady_clock::now() + deadline;
    int status = 0;
    for (;;) {
        pid_t r = ::waitpid(pid, &status, WNOHANG);
        if (r == pid) {
            return status;
        }
        if (r < 0 && errno != EINTR) {
            return std::nullopt;  // not our child, or already reaped
        }
        if (std::chrono::steady_clock::now() >= until) {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, &status, 0);
            return std::nullopt;
        }
        std::this_thread::sleep_for(5ms);
    }
}

}  // namespace iolab
