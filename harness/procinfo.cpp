#include "harness/procinfo.hpp"

#include <dirent.h>
#include <sys/resource.h>
#include <time.h>

#include <fstream>

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
