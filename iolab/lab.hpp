// What the iolab subcommands share: starting a variant pinned to the server's CPUs, asking it for
// STATS, and measuring one load point (warm-up, measured window, grace, figures).
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/options.hpp"
#include "harness/loadgen.hpp"
#include "harness/procinfo.hpp"
#include "harness/process.hpp"
#include "harness/registry.hpp"
#include "harness/report.hpp"

namespace iolab {

// Starts `v` with `extra` arguments on the server's CPUs (the child inherits the affinity of the
// thread that forks it), then moves this thread back to the load generator's CPU.
ServerProcess start_pinned(const Variant& v, const std::vector<std::string>& extra,
                           const Pinning& pin);

// A server with the kernel's counters in it (KernelCounters, harness/procinfo.hpp).
struct CountedServer {
    ServerProcess process;
    KernelCounters counters;  // counters.ok() false: the kernel refused, why() says why
};
// Starts `v` as start_pinned does, from a thread of its own that opens the counters first, so
// that the server and everything it creates inherits them; the thread ends once the server is
// listening.
CountedServer start_counted(const Variant& v, const std::vector<std::string>& extra,
                            const Pinning& pin);

// Records in info.syscalls how a run's syscalls were counted (by the kernel, or traced and why
// the kernel refused), once per distinct way; says the refusal on stderr, after `command`.
void record_counters(RunInfo& info, const KernelCounters& counters, const std::string& command);

// Sends STATS on a new connection and returns its key=value pairs; nullopt if no reply came
// within `deadline`.
std::optional<std::map<std::string, std::string>> ask_stats(const std::string& host, uint16_t port,
                                                            std::chrono::milliseconds deadline);

struct PointSpec {
    int conns = 100;
    size_t payload = 64;
    Mode mode = Mode::qa;
    double rate = 0;  // 0: closed loop
    double duration_s = 1.0;
    double warmup_s = 0.2;
    int grace_ms = 500;
    bool connect_per_request = false;  // closed loop, a new connection for every request
};

// Measures one load point against a running server. pss_idle_kib is tree_pss_kib() of the server
// before any load connection, for rss_per_conn_kib (memory per connection, as PSS). `tick` is
// called about every 250 ms with the fraction of the point done; it returns false to abandon the
// point (Ctrl-C). `latency`, if given, receives the latency histogram. `kernel`, if given and
// open, counts the server's syscalls and io_uring completions over the measured window
// (syscalls_source "kernel"); otherwise syscalls come from the server's own STATS counter
// ("traced") and uring_ops_per_req is not measured.
PointResult measure_point(ServerProcess& server, const std::string& variant, const PointSpec& spec,
                          long pss_idle_kib, const std::function<bool(double)>& tick = {},
                          Histogram* latency = nullptr, const KernelCounters* kernel = nullptr);

// Parses "1,10,100" into numbers, sorted and without repeats; throws std::invalid_argument,
// naming `option`, on anything else or a number below `least`.
std::vector<int> parse_int_list(const std::string& text, const std::string& option = "--conns",
                                int least = 1);

// The registry entries named in `list` (comma-separated; an entry matches a variant's exact name,
// or every variant whose name starts with it, e.g. "05" or "05_epoll"); all of them if `list` is
// empty. Throws std::invalid_argument naming an entry that matches nothing.
std::vector<Variant> select_variants(const std::vector<Variant>& all, const std::string& list);

// "1m05s", "12s".
std::string format_seconds(double s);

}  // namespace iolab
