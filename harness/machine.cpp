#include "harness/machine.hpp"

#include <linux/io_uring.h>
#include <sched.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>

#include "harness/procinfo.hpp"

namespace iolab {

namespace {

// Whether this process may create a ring at all: kernel.io_uring_disabled=2 refuses everyone, a
// seccomp filter or an old kernel refuses io_uring_setup(2) itself.
std::string io_uring_status() {
    std::ifstream disabled("/proc/sys/kernel/io_uring_disabled");
    int value = 0;
    if (disabled >> value && value == 2) {
        return "disabled (kernel.io_uring_disabled=2)";
    }
    io_uring_params p;
    std::memset(&p, 0, sizeof p);
    long fd = ::syscall(__NR_io_uring_setup, 4, &p);
    if (fd < 0) {
        return std::string("refused: io_uring_setup: ") + std::strerror(errno);
    }
    ::close(static_cast<int>(fd));
    return "available";
}

}  // namespace

RunInfo describe_machine() {
    RunInfo info;
    utsname u;
    if (::uname(&u) == 0) {
        info.kernel = std::string(u.sysname) + " " + u.release + " " + u.machine;
    }
    info.cpu_model = proc_text("/proc/cpuinfo", "model name").value_or("");
    cpu_set_t set;
    CPU_ZERO(&set);
    if (::sched_getaffinity(0, sizeof set, &set) == 0) {
        info.cores = CPU_COUNT(&set);
    }
    info.io_uring = io_uring_status();
    std::time_t now = std::time(nullptr);
    std::tm tm;
    ::gmtime_r(&now, &tm);
    char text[32];
    std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
    info.started_at = text;
    return info;
}

}  // namespace iolab
