// io_uring refused: every registered variant with the trait `uring` runs under a seccomp filter
// that makes io_uring_setup(2) fail with EPERM, the way container runtimes (Docker's default
// profile) and kernel.io_uring_disabled=2 refuse it. The contract says such a server prints one
// line on stderr saying why and exits 77, so that the tests skip it instead of failing.
//
// A seccomp filter belongs to a thread, not to a process: a thread of the test installs it,
// after PR_SET_NO_NEW_PRIVS (which lets an unprivileged thread install one), and then starts the
// server with posix_spawn. A process starts with copies of its creating thread's filter and
// no_new_privs, keeps them across execve and can never remove them; the test's other threads
// keep io_uring.

#include <gtest/gtest.h>

#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include "common/fd.hpp"
#include "harness/registry.hpp"
#include "harness/spawn.hpp"

using namespace iolab;

namespace model_uring_seccomp {

#if defined(__x86_64__)
constexpr uint32_t kArch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
constexpr uint32_t kArch = AUDIT_ARCH_AARCH64;
#elif defined(__riscv) && __riscv_xlen == 64
constexpr uint32_t kArch = AUDIT_ARCH_RISCV64;
#else
#error "add this architecture's AUDIT_ARCH_ value"
#endif

std::vector<Variant> uring_variants() {
    std::vector<Variant> out;
    for (const Variant& v : registry(IOLAB_BIN_DIR)) {
        if (v.has("uring")) {
            out.push_back(v);
        }
    }
    return out;
}

std::string read_all(int fd) {
    std::string text;
    char buf[4096];
    ::lseek(fd, 0, SEEK_SET);
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) {
        text.append(buf, static_cast<size_t>(n));
    }
    return text;
}

struct Outcome {
    int status = -1;  // waitpid status, or -1 if it had to be killed at the deadline
    std::string out;
    std::string err;
};

// Runs `argv` with io_uring_setup refused, and waits for it to exit (10 s at most).
Outcome run_without_io_uring(const std::vector<std::string>& args) {
    // Any other syscall: allowed. A foreign architecture's calls: allowed too (we only know our
    // own syscall numbers), which is fine for a test that runs our own binaries.
    sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, kArch, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    sock_fprog prog{static_cast<unsigned short>(std::size(filter)), filter};

    Outcome r;
    Fd out(::memfd_create("server-stdout", MFD_CLOEXEC));
    Fd err(::memfd_create("server-stderr", MFD_CLOEXEC));
    if (!out || !err) {
        ADD_FAILURE() << "memfd_create: " << std::strerror(errno);
        return r;
    }
    SpawnSpec spec;
    spec.argv = args;
    spec.stdout_fd = out.get();
    spec.stderr_fd = err.get();
    pid_t pid = -1;
    std::string failure;
    std::thread starter([&] {
        // The filter stays on this thread, which ends right after the spawn.
        if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
            ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
            failure = std::string("could not install the seccomp filter: ") + std::strerror(errno);
            return;
        }
        try {
            pid = spawn(spec);
        } catch (const std::exception& e) {
            failure = e.what();
        }
    });
    starter.join();
    if (!failure.empty()) {
        ADD_FAILURE() << failure;
        return r;
    }
    r.status = wait_or_kill(pid, std::chrono::seconds(10)).value_or(-1);
    r.out = read_all(out.get());
    r.err = read_all(err.get());
    return r;
}

class UringRefused : public ::testing::TestWithParam<Variant> {};

TEST_P(UringRefused, ExitsWith77AndSaysWhy) {
    const Variant& v = GetParam();
    ASSERT_EQ(::access(v.binary.c_str(), X_OK), 0) << v.binary << " is not built";
    std::vector<std::string> args{v.binary};
    args.insert(args.end(), v.args.begin(), v.args.end());
    args.insert(args.end(), {"--port", "0"});

    Outcome r = run_without_io_uring(args);
    ASSERT_NE(r.status, -1) << v.name
                            << " did not exit within 10 s with io_uring refused; stdout: " << r.out;
    ASSERT_TRUE(WIFEXITED(r.status))
        << v.name << " was killed by signal " << (WIFSIGNALED(r.status) ? WTERMSIG(r.status) : 0);
    EXPECT_EQ(WEXITSTATUS(r.status), 77) << v.name << " stderr: " << r.err;
    EXPECT_EQ(r.out.find("listening on"), std::string::npos)
        << v.name << " announced it was listening although io_uring was refused";
    // One line saying why.
    ASSERT_FALSE(r.err.empty()) << v.name << " exited 77 without a reason on stderr";
    EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "want exactly one line, got: " << r.err;
    EXPECT_NE(r.err.find("io_uring"), std::string::npos)
        << "the reason should name io_uring: " << r.err;
}

std::string variant_name(const ::testing::TestParamInfo<Variant>& info) {
    return info.param.name;
}

GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(UringRefused);
INSTANTIATE_TEST_SUITE_P(Variants, UringRefused, ::testing::ValuesIn(uring_variants()),
                         variant_name);

}  // namespace model_uring_seccomp
