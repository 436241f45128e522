// 07_aio_kernel: what the kernel does with Linux AIO on a socket, measured here on the running
// kernel, and what the conformance suite does not reach.
//  - IOCB_CMD_PREAD on a socket is not asynchronous: on an idle blocking socket io_submit itself
//    does not return until data arrives; on a non-blocking one it returns at once and the event,
//    already in the ring, says -EAGAIN. With data waiting, the bytes are copied before
//    io_submit returns.
//  - IOCB_CMD_POLL completes inside io_submit when the socket is ready, and while a poll is in
//    flight close(2) does not close the connection; io_cancel does (why close_conn cancels).
//  - The server with --read iocb: the trace shows the reads as io_submit and io_getevents, and
//    every conformance scenario passes in that mode too.
//  - io_setup refused (ENOSYS: no AIO in this kernel; EAGAIN: fs.aio-max-nr exhausted), by a
//    seccomp filter installed in the child before exec: the server and the client exit 77 with
//    one line on stderr.
//  - 07_aio_kernel_client piped against the server (tests/clients_test.cpp runs only the first
//    variant of each model directory).

#include <gtest/gtest.h>

#include <fcntl.h>
#include <linux/aio_abi.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "harness/clients.hpp"
#include "harness/process.hpp"
#include "harness/registry.hpp"
#include "harness/scenarios.hpp"

using namespace iolab;
using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

namespace model_07_aio_kernel {

Variant kernel_variant() {
    for (const Variant& v : registry(IOLAB_BIN_DIR)) {
        if (v.name == "07_aio_kernel") {
            return v;
        }
    }
    return {};
}

// A context of our own for the in-process measurements, or a skip where the kernel refuses AIO.
struct Context {
    aio_context_t id = 0;
    int error = 0;
    Context() {
        if (::syscall(SYS_io_setup, 8, &id) != 0) {
            error = errno;
            id = 0;
        }
    }
    ~Context() {
        if (id != 0) {
            ::syscall(SYS_io_destroy, id);
        }
    }
    long submit(iocb& cb) {
        iocb* list[] = {&cb};
        return ::syscall(SYS_io_submit, id, 1L, list);
    }
    // The events already in the ring, without waiting.
    long reap(io_event* ev, long nr) {
        timespec zero{0, 0};
        return ::syscall(SYS_io_getevents, id, 0L, nr, ev, &zero);
    }
};

// A connected loopback TCP pair, both ends blocking: [0] the "server" end, [1] the client.
struct TcpPair {
    Fd end[2];
    TcpPair() {
        Fd listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        sockaddr_in sa{};
        sa.sin_family = AF_INET;
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof sa;
        if (!listener || ::bind(listener.get(), reinterpret_cast<sockaddr*>(&sa), len) != 0 ||
            ::listen(listener.get(), 1) != 0 ||
            ::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&sa), &len) != 0) {
            return;
        }
        end[1] = Fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        if (::connect(end[1].get(), reinterpret_cast<sockaddr*>(&sa), len) != 0) {
            return;
        }
        end[0] = Fd(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
    }
    bool ok() const { return end[0].valid() && end[1].valid(); }
};

iocb pread_iocb(int fd, char* buf, size_t len) {
    iocb cb{};
    cb.aio_lio_opcode = IOCB_CMD_PREAD;
    cb.aio_fildes = static_cast<uint32_t>(fd);
    cb.aio_buf = reinterpret_cast<uint64_t>(buf);
    cb.aio_nbytes = len;
    return cb;
}

iocb poll_iocb(int fd, short events) {
    iocb cb{};
    cb.aio_lio_opcode = IOCB_CMD_POLL;
    cb.aio_fildes = static_cast<uint32_t>(fd);
    cb.aio_buf = static_cast<uint16_t>(events);
    return cb;
}

double ms_since(SteadyClock::time_point t) {
    return std::chrono::duration<double, std::milli>(SteadyClock::now() - t).count();
}

#define REQUIRE_AIO(ctx)                                                               \
    if ((ctx).id == 0) {                                                               \
        GTEST_SKIP() << "io_setup refused on this machine: " << strerror((ctx).error); \
    }

// The client writes 5 bytes 500 ms from now; until then the socket is idle.
std::thread write_later(int fd) {
    return std::thread([fd] {
        std::this_thread::sleep_for(500ms);
        ASSERT_EQ(::send(fd, "hello", 5, MSG_NOSIGNAL), 5);
    });
}

TEST(KernelAio, PreadOnAnIdleBlockingSocketBlocksInsideIoSubmitUntilDataArrives) {
    Context ctx;
    REQUIRE_AIO(ctx);
    TcpPair pair;
    ASSERT_TRUE(pair.ok());
    char buf[64];
    iocb cb = pread_iocb(pair.end[0].get(), buf, sizeof buf);

    std::thread writer = write_later(pair.end[1].get());
    auto t0 = SteadyClock::now();
    long submitted = ctx.submit(cb);
    double took = ms_since(t0);
    writer.join();

    ASSERT_EQ(submitted, 1) << strerror(errno);
    // The data came 500 ms after the call began, and io_submit waited for it: the "asynchronous"
    // read was a blocking recv on our own thread. 300 ms leaves room for a slow start.
    EXPECT_GE(took, 300.0) << "io_submit returned before the data arrived";
    // And the read is over: its event is in the ring already, with the bytes.
    io_event ev{};
    ASSERT_EQ(ctx.reap(&ev, 1), 1) << "the event should be there when io_submit returns";
    EXPECT_EQ(ev.res, 5);
    EXPECT_EQ(std::string(buf, 5), "hello");
}

TEST(KernelAio, PreadOnAnIdleNonBlockingSocketCompletesAtOnceWithEagain) {
    Context ctx;
    REQUIRE_AIO(ctx);
    TcpPair pair;
    ASSERT_TRUE(pair.ok());
    ASSERT_EQ(::fcntl(pair.end[0].get(), F_SETFL, O_NONBLOCK), 0);
    char buf[64];
    iocb cb = pread_iocb(pair.end[0].get(), buf, sizeof buf);

    std::thread writer = write_later(pair.end[1].get());
    auto t0 = SteadyClock::now();
    long submitted = ctx.submit(cb);
    double took = ms_since(t0);
    io_event ev{};
    long reaped = ctx.reap(&ev, 1);
    writer.join();

    ASSERT_EQ(submitted, 1) << strerror(errno);
    EXPECT_LT(took, 250.0) << "io_submit waited on a non-blocking socket";
    // Not queued for later: completed inside io_submit, with recv's EAGAIN as its result. The
    // bytes that arrive afterwards are never delivered to this request.
    ASSERT_EQ(reaped, 1) << "the PREAD was left in flight";
    EXPECT_EQ(ev.res, -EAGAIN);
}

TEST(KernelAio, PreadWithDataWaitingCopiesBeforeIoSubmitReturns) {
    Context ctx;
    REQUIRE_AIO(ctx);
    TcpPair pair;
    ASSERT_TRUE(pair.ok());
    ASSERT_EQ(::send(pair.end[1].get(), "PING\n", 5, MSG_NOSIGNAL), 5);
    pollfd pfd{pair.end[0].get(), POLLIN, 0};
    ASSERT_EQ(::poll(&pfd, 1, 5000), 1);
    char buf[64] = {};
    iocb cb = pread_iocb(pair.end[0].get(), buf, sizeof buf);
    ASSERT_EQ(ctx.submit(cb), 1) << strerror(errno);
    // No io_getevents has run yet, and the bytes are in our buffer.
    EXPECT_EQ(std::string(buf, 5), "PING\n");
    io_event ev{};
    ASSERT_EQ(ctx.reap(&ev, 1), 1);
    EXPECT_EQ(ev.res, 5);
}

TEST(KernelAio, PollOnAReadySocketCompletesInsideIoSubmit) {
    Context ctx;
    REQUIRE_AIO(ctx);
    TcpPair pair;
    ASSERT_TRUE(pair.ok());
    ASSERT_EQ(::send(pair.end[1].get(), "x", 1, MSG_NOSIGNAL), 1);
    pollfd pfd{pair.end[0].get(), POLLIN, 0};
    ASSERT_EQ(::poll(&pfd, 1, 5000), 1);
    iocb cb = poll_iocb(pair.end[0].get(), POLLIN | POLLOUT);
    cb.aio_data = 42;
    ASSERT_EQ(ctx.submit(cb), 1) << strerror(errno);
    io_event ev{};
    ASSERT_EQ(ctx.reap(&ev, 1), 1);
    EXPECT_EQ(ev.data, 42u);
    EXPECT_EQ(ev.res, POLLIN | POLLOUT);  // the revents mask
}

TEST(KernelAio, APollInFlightKeepsAClosedSocketOpenUntilCancelled) {
    Context ctx;
    REQUIRE_AIO(ctx);
    TcpPair pair;
    ASSERT_TRUE(pair.ok());
    iocb cb = poll_iocb(pair.end[0].get(), POLLIN);
    cb.aio_data = 7;
    ASSERT_EQ(ctx.submit(cb), 1) << strerror(errno);
    io_event ev{};
    ASSERT_EQ(ctx.reap(&ev, 1), 0) << "an idle socket's poll should stay in flight";

    pair.end[0].reset();  // close(2): the descriptor is gone, the socket is not
    pollfd peer{pair.end[1].get(), POLLIN, 0};
    EXPECT_EQ(::poll(&peer, 1, 300), 0) << "the client saw the close although a poll held it";

    long cancelled = ::syscall(SYS_io_cancel, ctx.id, &cb, &ev);
    EXPECT_EQ(cancelled, -1);
    EXPECT_EQ(errno, EINPROGRESS);  // the result comes through the ring, as every event does
    ASSERT_EQ(::poll(&peer, 1, 5000), 1) << "no FIN after io_cancel";
    char byte;
    EXPECT_EQ(::recv(pair.end[1].get(), &byte, 1, 0), 0);  // EOF: the socket is closed now

    timespec wait{5, 0};
    ASSERT_EQ(::syscall(SYS_io_getevents, ctx.id, 1L, 1L, &ev, &wait), 1);
    EXPECT_EQ(ev.data, 7u);
    EXPECT_EQ(ev.res, 0) << "a cancelled poll reports an empty mask";
}

TEST(KernelAioServer, ReadIocbTracesEachReadAsIoSubmitAndIoGetevents) {
    Variant v = kernel_variant();
    ASSERT_FALSE(v.name.empty()) << "07_aio_kernel is not registered";
    ServerProcess server = ServerProcess::start(v, {"--read", "iocb", "--trace"});
    if (server.state() == ServerProcess::State::cannot_run) {
        GTEST_SKIP() << server.reason();
    }
    ASSERT_TRUE(server.running()) << server.reason();
    Client c = Client::connect(server.port());
    EXPECT_EQ(c.ask("PING"), "PONG");
    std::string stats = c.ask("STATS");
    EXPECT_NE(stats.find("read=iocb"), std::string::npos) << stats;
    c.close();
    EXPECT_EQ(server.stop(), 0);

    // The PING's read: io_submit on the connection, io_getevents on the same descriptor, then
    // the event with the five bytes. No recv anywhere.
    std::istringstream trace(server.stderr_text());
    std::vector<std::string> calls;
    std::string line;
    bool saw_recv = false;
    while (std::getline(trace, line)) {
        std::istringstream fields(line);
        std::string at, call, fd, ret;
        fields >> at >> call >> fd >> ret;
        saw_recv = saw_recv || call == "recv";
        if (fd != "fd=-1") {
            calls.push_back(call + " " + fd + " " + ret);
        }
    }
    EXPECT_FALSE(saw_recv) << server.stderr_text();
    bool found = false;
    for (size_t i = 2; i < calls.size() && !found; ++i) {
        std::string fd = calls[i].substr(calls[i].find(' ') + 1);
        fd = fd.substr(0, fd.find(' '));
        found = calls[i] == "pread_event " + fd + " ret=5" &&
                calls[i - 1] == "io_getevents " + fd + " ret=1" &&
                calls[i - 2] == "io_submit " + fd + " ret=1";
    }
    EXPECT_TRUE(found) << "want io_submit, io_getevents, pread_event ret=5 on the connection:\n"
                       << server.stderr_text();
}

class ReadIocbConformance : public ::testing::TestWithParam<NamedScenario> {};

TEST_P(ReadIocbConformance, Passes) {
    Variant v = kernel_variant();
    ASSERT_FALSE(v.name.empty()) << "07_aio_kernel is not registered";
    v.args.insert(v.args.end(), {"--read", "iocb"});
    Outcome o = GetParam().run(target_for(v));
    if (o.kind == Outcome::Kind::skip) {
        GTEST_SKIP() << o.why;
    }
    EXPECT_TRUE(o.passed()) << "07_aio_kernel --read iocb: " << o.why;
}

INSTANTIATE_TEST_SUITE_P(Scenarios, ReadIocbConformance, ::testing::ValuesIn(all_scenarios()),
                         [](const auto& info) { return std::string(info.param.name); });

// ---- io_setup refused ----

#if defined(__x86_64__)
constexpr uint32_t kArch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
constexpr uint32_t kArch = AUDIT_ARCH_AARCH64;
#elif defined(__riscv) && __riscv_xlen == 64
constexpr uint32_t kArch = AUDIT_ARCH_RISCV64;
#else
#error "add this architecture's AUDIT_ARCH_ value"
#endif

std::string read_memfd(int fd) {
    std::string text;
    char buf[4096];
    ::lseek(fd, 0, SEEK_SET);
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) {
        text.append(buf, static_cast<size_t>(n));
    }
    return text;
}

struct Exit {
    int status = -1;  // waitpid status, or -1 if it had to be killed at the deadline
    std::string out;
    std::string err;
};

// Runs `args` with every io_setup(2) failing with `error`, as a kernel without CONFIG_AIO
// (ENOSYS) or a machine whose fs.aio-max-nr is used up (EAGAIN) would make it fail. The filter
// is installed between fork and exec (PR_SET_NO_NEW_PRIVS lets an unprivileged process do so)
// and is inherited across execv.
Exit run_with_io_setup_failing(const std::vector<std::string>& args, int error) {
    std::vector<char*> argv;
    for (const std::string& a : args) {
        argv.push_back(const_cast<char*>(a.c_str()));
    }
    argv.push_back(nullptr);
    sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, kArch, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K,
                 SECCOMP_RET_ERRNO | (static_cast<uint32_t>(error) & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    sock_fprog prog{static_cast<unsigned short>(std::size(filter)), filter};

    Exit r;
    Fd out(::memfd_create("stdout", MFD_CLOEXEC));
    Fd err(::memfd_create("stderr", MFD_CLOEXEC));
    if (!out || !err) {
        ADD_FAILURE() << "memfd_create failed";
        return r;
    }
    pid_t pid = ::fork();
    if (pid == 0) {
        // Only async-signal-safe calls until execv.
        ::dup2(out.get(), STDOUT_FILENO);
        ::dup2(err.get(), STDERR_FILENO);
        ::signal(SIGPIPE, SIG_DFL);
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
            ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
            ::_exit(126);
        }
        ::execv(argv[0], argv.data());
        ::_exit(127);
    }
    if (pid < 0) {
        ADD_FAILURE() << "fork failed";
        return r;
    }
    auto until = SteadyClock::now() + 10s;
    int status = 0;
    pid_t done = 0;
    while ((done = ::waitpid(pid, &status, WNOHANG)) == 0 && SteadyClock::now() < until) {
        std::this_thread::sleep_for(10ms);
    }
    if (done == pid) {
        r.status = status;
    } else {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &status, 0);
    }
    r.out = read_memfd(out.get());
    r.err = read_memfd(err.get());
    return r;
}

class IoSetupRefused : public ::testing::TestWithParam<int> {};

TEST_P(IoSetupRefused, ServerAndClientExit77WithOneLine) {
    Variant v = kernel_variant();
    ASSERT_FALSE(v.name.empty()) << "07_aio_kernel is not registered";
    std::string client = std::string(IOLAB_BIN_DIR) + "/07_aio_kernel_client";
    for (const std::vector<std::string>& args :
         {std::vector<std::string>{v.binary, "--port", "0"},
          std::vector<std::string>{v.binary, "--port", "0", "--read", "iocb"},
          std::vector<std::string>{client, "--port", "9"}}) {
        Exit r = run_with_io_setup_failing(args, GetParam());
        ASSERT_NE(r.status, -1) << args[0] << " did not exit within 10 s";
        ASSERT_TRUE(WIFEXITED(r.status)) << args[0] << " was killed by a signal";
        ASSERT_NE(WEXITSTATUS(r.status), 126) << "could not install the seccomp filter";
        EXPECT_EQ(WEXITSTATUS(r.status), 77) << args[0] << ": " << r.err;
        EXPECT_EQ(r.out.find("listening on"), std::string::npos) << r.out;
        ASSERT_FALSE(r.err.empty()) << args[0] << " exited without a reason on stderr";
        EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "want exactly one line: " << r.err;
        EXPECT_NE(r.err.find("io_setup"), std::string::npos) << r.err;
        EXPECT_NE(r.err.find(strerror(GetParam())), std::string::npos) << r.err;
    }
}

INSTANTIATE_TEST_SUITE_P(Errors, IoSetupRefused, ::testing::Values(ENOSYS, EAGAIN),
                         [](const auto& info) {
                             return std::string(info.param == ENOSYS ? "ENOSYS" : "EAGAIN");
                         });

// ---- the client ----

struct Piped {
    int status = -1;
    std::string out;
};

// Runs `printf input | 07_aio_kernel_client --port P` under a 20 s deadline.
Piped pipe_through(uint16_t port, const std::string& input) {
    std::string cmd = "printf '" + input + "' | timeout 20 " + std::string(IOLAB_BIN_DIR) +
                      "/07_aio_kernel_client --port " + std::to_string(port);
    Piped r;
    FILE* p = ::popen(cmd.c_str(), "r");
    if (p == nullptr) {
        return r;
    }
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) {
        r.out.append(buf, n);
    }
    int status = ::pclose(p);
    r.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return r;
}

TEST(KernelAioClient, PrintsEveryReplyAndExitsZero) {
    Variant v = kernel_variant();
    ASSERT_FALSE(v.name.empty()) << "07_aio_kernel is not registered";
    ServerProcess server = ServerProcess::start(v);
    if (server.state() == ServerProcess::State::cannot_run) {
        GTEST_SKIP() << server.reason();
    }
    ASSERT_TRUE(server.running()) << server.reason();

    Piped r = pipe_through(server.port(), "PING\\necho piped  text\\nWORK 10\\nNOPE\\nPING\\n");
    EXPECT_EQ(r.status, 0) << r.out;
    EXPECT_EQ(r.out,
              "PONG\npiped  text\nDONE 10\n"
              "ERR unknown command (try PING, ECHO, TIME, WORK, STATS, QUIT)\nPONG\n");
    Piped q = pipe_through(server.port(), "PING\\nQUIT\\n");
    EXPECT_EQ(q.status, 0) << q.out;
    EXPECT_EQ(q.out, "PONG\nBYE\n");
    Piped tail = pipe_through(server.port(), "PING\\nPING");
    EXPECT_EQ(tail.out, "PONG\nPONG\n");
    // Many requests in flight at once: the POLLOUT poll carries them out while the POLLIN poll
    // takes the replies.
    std::string many;
    for (int i = 0; i < 15000; ++i) {
        many += "PING\\n";
    }
    Piped big = pipe_through(server.port(), many);
    EXPECT_EQ(big.status, 0);
    EXPECT_EQ(big.out.size(), 15000u * 5) << "replies missing";
    EXPECT_EQ(server.stop(), 0);
}

}  // namespace model_07_aio_kernel

// model_test compiles every model suite as one unit (tests/CMakeLists.txt).
#undef REQUIRE_AIO
