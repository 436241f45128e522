#include "harness/procinfo.hpp"

#include <dirent.h>
#include <signal.h>
#include <unistd.h>
#include <sys/resource.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>

#include <fstream>
#include <sstream>

namespace iolab {

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
        std::ifstream status(dir + "/" + e->d_name + "/status");
        std::string line;
        while (std::getline(status, line)) {
            if (line.rfind("voluntary_ctxt_switches:", 0) == 0) {
                total.voluntary += std::atol(line.c_str() + 24);
            } else if (line.rfind("nonvoluntary_ctxt_switches:", 0) == 0) {
                total.involuntary += std::atol(line.c_str() + 27);
            }
        }
    }
    ::closedir(d);
    return total;
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
        std::ifstream stat("/proc/" + std::to_string(tree[i]) + "/stat");
        std::string text;
        std::getline(stat, text);
        size_t close = text.rfind(')');
        if (close == std::string::npos) {
            continue;
        }
        std::istringstream rest(text.substr(close + 2));
        std::string word;
        // After the name: field 3 (state) ... cutime is field 16, cstime 17.
        for (int field = 3; rest >> word && field <= 17; ++field) {
            if (field == 16 || field == 17) {
                total += static_cast<double>(std::atoll(word.c_str())) / tick;
            }
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
        std::ifstream status("/proc/" + std::to_string(p) + "/status");
        std::string line;
        while (std::getline(status, line)) {
            if (line.rfind("Threads:", 0) == 0) {
                total += std::atoi(line.c_str() + 8);
            }
        }
    }
    return total;
}

long tree_pss_kib(pid_t pid) {
    long total = 0;
    for (pid_t p : process_tree(pid)) {
        std::ifstream rollup("/proc/" + std::to_string(p) + "/smaps_rollup");
        std::string line;
        while (std::getline(rollup, line)) {
            if (line.rfind("Pss:", 0) == 0) {
                total += std::atol(line.c_str() + 4);
            }
        }
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
