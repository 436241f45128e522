#include "harness/procinfo.hpp"

#include <dirent.h>
#include <linux/perf_event.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include <fstream>
#include <sstream>

namespace iolab {

namespace {

// The value of a "KEY: value" line if `line` is one for `key`: /proc/PID/status writes
// "Threads:\t4", /proc/cpuinfo "model name\t: ...", smaps_rollup "Pss:   1234 kB".
std::optional<std::string_view> value_of(std::string_view line, std::string_view key) {
    if (line.substr(0, key.size()) != key) {
        return std::nullopt;
    }
    size_t at = line.find_first_not_of(" \t", key.size());
    if (at == std::string_view::npos || line[at] != ':') {
        return std::nullopt;
    }
    at = line.find_first_not_of(" \t", at + 1);
    return at == std::string_view::npos ? std::string_view{} : line.substr(at);
}

}  // namespace

std::optional<std::string> proc_text(const std::string& path, std::string_view key) {
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line)) {
        if (auto value = value_of(line, key)) {
            return std::string(*value);
        }
    }
    return std::nullopt;
}

std::vector<long> proc_numbers(const std::string& path,
                               std::initializer_list<std::string_view> keys) {
    std::ifstream in(path);
    if (!in) {
        return {};
    }
    std::vector<long> out(keys.size(), -1);
    std::string line;
    size_t found = 0;
    while (found < keys.size() && std::getline(in, line)) {
        size_t i = 0;
        for (std::string_view key : keys) {
            auto value = value_of(line, key);
            if (value && out[i] < 0) {
                out[i] = std::atol(std::string(*value).c_str());
                ++found;
            }
            ++i;
        }
    }
    return out;
}

std::vector<long long> proc_stat(pid_t pid) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string text;
    if (!std::getline(stat, text)) {
        return {};
    }
    // The command name is in parentheses and may itself hold spaces and parentheses: the fields
    // resume after the last ')'.
    size_t close = text.rfind(')');
    if (close == std::string::npos) {
        return {};
    }
    std::vector<long long> fields(4, 0);  // [0] unused; 1 to 3: pid, name, state
    std::istringstream rest(text.substr(close + 2));
    std::string word;
    rest >> word;  // the state letter
    while (rest >> word) {
        fields.push_back(std::atoll(word.c_str()));
    }
    return fields;
}

double process_cpu_s(pid_t pid) {
    clockid_t clock;
    timespec ts;
    if (::clock_getcpuclockid(pid, &clock) != 0 || ::clock_gettime(clock, &ts) != 0) {
        return -1;
    }
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

CtxSwitches process_ctx_switches(pid_t pid) {
    CtxSwitches total;
    std::string dir = "/proc/" + std::to_string(pid) + "/task";
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) {
        return total;
    }
    while (dirent* e = ::readdir(d)) {
        if (e->d_name[0] == '.') {
            continue;
        }
        std::vector<long> n =
            proc_numbers(dir + "/" + e->d_name + "/status",
                         {"voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"});
        if (n.size() == 2) {
            total.voluntary += std::max(n[0], 0L);
            total.involuntary += std::max(n[1], 0L);
        }
    }
    ::closedir(d);
    return total;
}

std::optional<ProcStats> read_proc_stats(pid_t pid) {
    std::vector<long long> stat = proc_stat(pid);
    if (stat.empty()) {
        return std::nullopt;
    }
    auto field = [&](size_t n) { return n < stat.size() ? stat[n] : 0; };
    std::string dir = "/proc/" + std::to_string(pid);
    ProcStats s;
    double tick = static_cast<double>(::sysconf(_SC_CLK_TCK));
    s.cpu_user_s = static_cast<double>(field(14)) / tick;
    s.cpu_sys_s = static_cast<double>(field(15)) / tick;
    s.threads = static_cast<int>(field(20));
    s.rss_kib = static_cast<long>(field(24) * ::sysconf(_SC_PAGESIZE) / 1024);
    std::vector<long> rss = proc_numbers(dir + "/status", {"VmRSS"});
    if (!rss.empty() && rss[0] >= 0) {
        s.rss_kib = rss[0];
    }
    CtxSwitches ctx = process_ctx_switches(pid);
    s.ctx_voluntary = ctx.voluntary;
    s.ctx_involuntary = ctx.involuntary;
    if (DIR* d = ::opendir((dir + "/fd").c_str())) {
        while (dirent* e = ::readdir(d)) {
            if (e->d_name[0] != '.') {
                ++s.fds;
            }
        }
        ::closedir(d);
    }
    return s;
}

std::vector<pid_t> process_tree(pid_t pid) {
    std::vector<pid_t> tree;
    if (::kill(pid, 0) != 0 && errno == ESRCH) {
        return tree;
    }
    tree.push_back(pid);
    for (size_t i = 0; i < tree.size(); ++i) {
        std::string dir = "/proc/" + std::to_string(tree[i]) + "/task";
        DIR* d = ::opendir(dir.c_str());
        if (d == nullptr) {
            continue;
        }
        while (dirent* e = ::readdir(d)) {
            if (e->d_name[0] == '.') {
                continue;
            }
            std::ifstream children(dir + "/" + e->d_name + "/children");
            long child = 0;
            while (children >> child) {
                tree.push_back(static_cast<pid_t>(child));
            }
        }
        ::closedir(d);
    }
    return tree;
}

double tree_cpu_s(pid_t pid) {
    double total = process_cpu_s(pid);
    if (total < 0) {
        return -1;
    }
    double tick = static_cast<double>(::sysconf(_SC_CLK_TCK));
    std::vector<pid_t> tree = process_tree(pid);
    for (size_t i = 0; i < tree.size(); ++i) {
        if (i > 0) {
            total += std::max(0.0, process_cpu_s(tree[i]));
        }
        // A process's reaped children: cutime (field 16) and cstime (17), in clock ticks.
        std::vector<long long> stat = proc_stat(tree[i]);
        if (stat.size() > 17) {
            total += static_cast<double>(stat[16] + stat[17]) / tick;
        }
    }
    return total;
}

CtxSwitches tree_ctx_switches(pid_t pid) {
    CtxSwitches total;
    for (pid_t p : process_tree(pid)) {
        CtxSwitches one = process_ctx_switches(p);
        total.voluntary += one.voluntary;
        total.involuntary += one.involuntary;
    }
    return total;
}

int tree_threads(pid_t pid) {
    int total = 0;
    for (pid_t p : process_tree(pid)) {
        std::vector<long> n = proc_numbers("/proc/" + std::to_string(p) + "/status", {"Threads"});
        total += n.empty() ? 0 : static_cast<int>(std::max(n[0], 0L));
    }
    return total;
}

long tree_pss_kib(pid_t pid) {
    long total = 0;
    for (pid_t p : process_tree(pid)) {
        std::vector<long> n = proc_numbers("/proc/" + std::to_string(p) + "/smaps_rollup", {"Pss"});
        total += n.empty() ? 0 : std::max(n[0], 0L);
    }
    return total;
}

int tree_processes(pid_t pid) {
    return static_cast<int>(process_tree(pid).size());
}

long time_wait_sockets(uint16_t port) {
    long count = 0;
    for (const char* file : {"/proc/net/tcp", "/proc/net/tcp6"}) {
        std::ifstream in(file);
        std::string line;
        std::getline(in, line);  // the header
        while (std::getline(in, line)) {
            // "  0: 0100007F:2329 0100007F:D2F4 06 ...": local, remote, state (06 = TIME_WAIT).
            std::istringstream f(line);
            std::string slot, local, remote, state;
            f >> slot >> local >> remote >> state;
            if (state != "06") {
                continue;
            }
            auto port_of = [](const std::string& a) {
                size_t colon = a.rfind(':');
                return colon == std::string::npos
                           ? 0ul
                           : std::strtoul(a.c_str() + colon + 1, nullptr, 16);
            };
            count += port_of(local) == port || port_of(remote) == port;
        }
    }
    return count;
}

// ---------------------------------------------------------------------------------------------
// Kernel counters

namespace {

// Where tracefs shows its events: its own mount point since Linux 4.1, or under debugfs.
const char* const kTraceDirs[] = {"/sys/kernel/tracing", "/sys/kernel/debug/tracing"};

bool tracefs_present() {
    for (const char* dir : kTraceDirs) {
        struct stat st;
        if (::stat((std::string(dir) + "/events").c_str(), &st) == 0) {
            return true;
        }
    }
    return false;
}

// A tracepoint's id (the perf_event_attr.config for PERF_TYPE_TRACEPOINT), from
// events/CATEGORY/NAME/id in tracefs; -1 if no tracefs shows it.
long tracepoint_id(const std::string& event) {
    for (const char* dir : kTraceDirs) {
        std::ifstream in(std::string(dir) + "/events/" + event + "/id");
        long id = -1;
        if (in >> id) {
            return id;
        }
    }
    return -1;
}

// A counting event on the calling thread (pid 0, any CPU) that every task it creates inherits.
int open_tracepoint(long id) {
    perf_event_attr attr;
    std::memset(&attr, 0, sizeof attr);
    attr.type = PERF_TYPE_TRACEPOINT;
    attr.size = sizeof attr;
    attr.config = static_cast<uint64_t>(id);
    attr.inherit = 1;
    return static_cast<int>(::syscall(SYS_perf_event_open, &attr, 0, -1, -1, PERF_FLAG_FD_CLOEXEC));
}

std::string paranoid_level() {
    std::ifstream in("/proc/sys/kernel/perf_event_paranoid");
    std::string level;
    in >> level;
    return level.empty() ? "?" : level;
}

}  // namespace

KernelCounters KernelCounters::open_on_this_thread() {
    KernelCounters k;
    // The counter has a price: an enabled sys_enter tracepoint sends every system call of the
    // counted processes through the kernel's slower traced entry path. IOLAB_SYSCALL_COUNTER=off
    // measures without it (the figures fall back to the servers' own traced count), so that the
    // price itself can be measured (docs/measuring.md).
    if (const char* v = std::getenv("IOLAB_SYSCALL_COUNTER");
        v != nullptr && std::string(v) == "off") {
        k.why_ = "turned off by IOLAB_SYSCALL_COUNTER=off";
        return k;
    }
    if (!tracefs_present() && ::geteuid() == 0) {
        // A root shell in a fresh container or VM often lacks the mount; the tracepoint ids live
        // only there. If the mount fails, the error below says that no tracefs was found.
        ::mount("tracefs", kTraceDirs[0], "tracefs", 0, nullptr);
    }
    long syscalls_id = tracepoint_id("raw_syscalls/sys_enter");
    if (syscalls_id < 0) {
        k.why_ = tracefs_present()
                     ? "no raw_syscalls:sys_enter tracepoint in tracefs (kernel without "
                       "CONFIG_FTRACE_SYSCALLS?)"
                     : "no tracefs at /sys/kernel/tracing or /sys/kernel/debug/tracing (not "
                       "mounted, or not readable by this user)";
        return k;
    }
    int fd = open_tracepoint(syscalls_id);
    if (fd < 0) {
        int err = errno;
        k.why_ = std::string("perf_event_open raw_syscalls:sys_enter: ") + std::strerror(err);
        if (err == EACCES || err == EPERM) {
            k.why_ += " (kernel.perf_event_paranoid=" + paranoid_level() +
                      "; a tracepoint needs CAP_PERFMON, or root)";
        }
        return k;
    }
    k.syscalls_.reset(fd);
    k.why_.clear();
    // A kernel built without io_uring has no such tracepoint; the syscall count stands alone.
    long complete_id = tracepoint_id("io_uring/io_uring_complete");
    if (complete_id >= 0) {
        k.completions_.reset(open_tracepoint(complete_id));
    }
    return k;
}

std::optional<KernelCounters::Counts> KernelCounters::read() const {
    if (!syscalls_) {
        return std::nullopt;
    }
    // Without read_format flags the read is one u64: the event's count plus that of every copy
    // inherited from it, live or already exited.
    Counts c;
    uint64_t value = 0;
    if (::read(syscalls_.get(), &value, sizeof value) != sizeof value) {
        return std::nullopt;
    }
    c.syscalls = value;
    if (completions_ && ::read(completions_.get(), &value, sizeof value) == sizeof value) {
        c.uring_completions = static_cast<int64_t>(value);
    }
    return c;
}

namespace {

std::string cpu_list(const cpu_set_t& set) {
    std::string out;
    int count = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
        if (!CPU_ISSET(cpu, &set)) {
            continue;
        }
        int last = cpu;
        while (last + 1 < CPU_SETSIZE && CPU_ISSET(last + 1, &set)) {
            ++last;
        }
        out += (out.empty() ? "" : ",") + std::to_string(cpu);
        if (last > cpu) {
            out += "-" + std::to_string(last);
        }
        count += last - cpu + 1;
        cpu = last;
    }
    return (count > 1 ? "CPUs " : "CPU ") + out;
}

}  // namespace

Pinning plan_pinning() {
    Pinning p;
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    if (::sched_getaffinity(0, sizeof allowed, &allowed) != 0 || CPU_COUNT(&allowed) < 2) {
        p.text = "none: only one CPU, so the server and the load generator share it";
        p.server = allowed;
        p.load = allowed;
        return p;
    }
    int last = -1;
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
        if (CPU_ISSET(cpu, &allowed)) {
            last = cpu;
        }
    }
    p.enabled = true;
    p.server = allowed;
    CPU_CLR(last, &p.server);
    CPU_ZERO(&p.load);
    CPU_SET(last, &p.load);
    p.text = "server on " + cpu_list(p.server) + ", load generator on " + cpu_list(p.load) +
             " (sched_setaffinity)";
    return p;
}

void pin_to_server(const Pinning& p) {
    if (p.enabled) {
        ::sched_setaffinity(0, sizeof p.server, &p.server);
    }
}

void pin_to_load(const Pinning& p) {
    if (p.enabled) {
        ::sched_setaffinity(0, sizeof p.load, &p.load);
    }
}

long raise_fd_limit() {
    rlimit r;
    if (::getrlimit(RLIMIT_NOFILE, &r) != 0) {
        return -1;
    }
    if (r.rlim_cur < r.rlim_max) {
        r.rlim_cur = r.rlim_max;
        ::setrlimit(RLIMIT_NOFILE, &r);
    }
    return static_cast<long>(r.rlim_cur);
}

}  // namespace iolab
