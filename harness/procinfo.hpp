// More of what the kernel knows about a server process, beyond read_proc_stats(): CPU time to the
// nanosecond for the whole process, context switches summed over every thread, and CPU pinning.
#pragma once

#include <sched.h>
#include <sys/types.h>

#include <cstdint>

#include <string>
#include <vector>

namespace iolab {

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
