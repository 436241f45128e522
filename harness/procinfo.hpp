// What the kernel knows about a server process, read from /proc in one place: CPU time to the
// nanosecond for the whole process, context switches summed over every thread, its process tree,
// memory, and the kernel's own syscall counters; and CPU pinning.
#pragma once

#include <sched.h>
#include <sys/types.h>

#include <cstdint>

#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/fd.hpp"

namespace iolab {

// The two shapes of /proc text every reading here goes through.
//
// "KEY: value" lines (/proc/PID/status, smaps_rollup, /proc/cpuinfo's "model name\t: ..."): the
// value of the first line that starts with `key`, spaces, tabs and the colon trimmed; nullopt if
// the file cannot be read or has no such line.
std::optional<std::string> proc_text(const std::string& path, std::string_view key);
// The leading numbers of several keys' values, read in one pass ("VmRSS:   3876 kB" -> 3876), in
// the order of `keys`; -1 for a key the file does not have. Empty if the file cannot be read.
std::vector<long> proc_numbers(const std::string& path,
                               std::initializer_list<std::string_view> keys);
// /proc/PID/stat, numbered as in proc(5): stat[14] is utime, stat[20] num_threads, stat[24] rss.
// Fields 1 to 3 (pid, the command name in parentheses, which may hold spaces, and the state
// letter) read as 0, and so does [0]. Empty if the process is gone.
std::vector<long long> proc_stat(pid_t pid);

// What /proc/PID says about one process (not its children): CPU time from /proc/PID/stat, in
// 10 ms clock ticks (process_cpu_s is exact), its threads, its resident set (VmRSS), its open
// descriptors, and its context switches summed over every live thread, as process_ctx_switches.
struct ProcStats {
    int threads = 0;
    long rss_kib = 0;
    double cpu_user_s = 0;
    double cpu_sys_s = 0;
    long ctx_voluntary = 0;
    long ctx_involuntary = 0;
    int fds = 0;
    double cpu_s() const { return cpu_user_s + cpu_sys_s; }
};
std::optional<ProcStats> read_proc_stats(pid_t pid);

// User + system CPU time of every thread of `pid`, dead threads included, in seconds, from the
// process's CPU-time clock (clock_getcpuclockid). /proc/PID/stat counts in 10 ms ticks, too coarse
// for a one-second measurement. Negative if the process is gone.
double process_cpu_s(pid_t pid);

// Voluntary and involuntary context switches summed over the live threads of `pid`
// (/proc/PID/status counts the main thread only).
struct CtxSwitches {
    long voluntary = 0;
    long involuntary = 0;
};
CtxSwitches process_ctx_switches(pid_t pid);

// A server that forks (02_process_per_conn) does its work in its children, so every figure of it
// is taken over the whole tree: the process and every descendant alive now, found through
// /proc/PID/task/TID/children. For a server that does not fork it is the process alone.
std::vector<pid_t> process_tree(pid_t pid);
// CPU time of the tree in seconds: each live process's CPU clock, plus what the children it
// has already reaped used (cutime + cstime in /proc/PID/stat, in clock ticks). Negative if
// `pid` is gone.
double tree_cpu_s(pid_t pid);
CtxSwitches tree_ctx_switches(pid_t pid);
// Threads of every process in the tree.
int tree_threads(pid_t pid);
// Proportional set size (Pss in /proc/PID/smaps_rollup) summed over the tree, in KiB: a page
// shared by n processes counts 1/n in each, so the pages that fork() left shared between the
// parent and its children are counted once in all, not once per child as RSS would.
long tree_pss_kib(pid_t pid);
// The processes in the tree (1 for a server that does not fork).
int tree_processes(pid_t pid);

// Sockets in TIME_WAIT on `port` (either end), from /proc/net/tcp and /proc/net/tcp6: what a
// client that connects per request leaves behind.
long time_wait_sockets(uint16_t port);

// The kernel's own count of what a process tree does, from two tracepoints read through
// perf_event_open(2) as counters (no samples, no ring buffer): raw_syscalls:sys_enter fires on
// every system call any of its threads enters, whatever made the call (the model's own code,
// libev, Asio, glibc's AIO helper threads); io_uring:io_uring_complete fires for every CQE the
// kernel posts, that is every io_uring operation completed (0 where io_uring is not used).
//
// Each counter is opened with `inherit` on the calling thread. `inherit` copies a counter into a
// task when it is created (fork, clone of a thread, an io_uring worker) and never into a task
// that already exists, so counting a server that is already running would need one counter per
// thread it has, found in /proc/PID/task, and a thread its workers create while that list is
// read would be missed or counted twice. Opened on the thread that is about to fork the server,
// the counter is in the server from its first instruction: every thread and every child process
// it ever makes inherits it, and a read of the counter sums all of them, the dead included. The
// opening thread's own calls and the child's few calls before exec(2) happen before any load and
// drop out of a difference between two reads, provided that thread makes no more calls.
class KernelCounters {
public:
    struct Counts {
        uint64_t syscalls = 0;
        int64_t uring_completions = -1;  // -1: this kernel has no io_uring tracepoint
    };
    // Opens the counters on the calling thread (see above). Where the kernel refuses (no tracefs,
    // kernel.perf_event_paranoid, EACCES, ENOENT, ENODEV), ok() is false and why() says what
    // failed. With no tracefs mounted and root, tracefs is mounted at /sys/kernel/tracing first.
    static KernelCounters open_on_this_thread();

    KernelCounters() = default;
    bool ok() const { return syscalls_.valid(); }
    const std::string& why() const { return why_; }
    // The counts so far; nullopt if the counter cannot be read (or is not open).
    std::optional<Counts> read() const;

private:
    Fd syscalls_;
    Fd completions_;
    std::string why_ = "not opened";
};

// Where the server and the load generator run. With two or more CPUs allowed, the load generator
// takes the last one and the server the others, so that they never compete for a core.
struct Pinning {
    bool enabled = false;
    cpu_set_t server{};
    cpu_set_t load{};
    std::string text;  // "server on CPU 0, load generator on CPU 1"
};
Pinning plan_pinning();
// Pins the calling thread (and what it forks from now on) to the server's or the load's CPUs.
void pin_to_server(const Pinning& p);
void pin_to_load(const Pinning& p);

// Raises this process's soft RLIMIT_NOFILE to its hard limit (children inherit it). Returns the
// new soft limit.
long raise_fd_limit();

}  // namespace iolab
