// What iolab measures and how it writes it down: a latency histogram with percentiles, one result
// row per variant and load point, and the outputs made from them (a text table, JSON, CSV and
// SVG charts that open in any browser). docs/measuring.md explains every figure.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace iolab {

// Latencies in nanoseconds, in log-linear buckets: exact below 128 ns, then 64 buckets per power
// of two, so a percentile is within 1.6% of the true value whatever the range (1 us .. 10 s) and
// the memory is fixed (~30 KiB) however many requests are recorded.
class Histogram {
public:
    Histogram();
    void record(uint64_t ns);
    void merge(const Histogram& other);
    void clear();

    uint64_t count() const { return count_; }
    uint64_t min() const { return count_ ? min_ : 0; }
    uint64_t max() const { return max_; }
    double mean() const { return count_ ? sum_ / static_cast<double>(count_) : 0; }
    // Nearest rank: the smallest recorded value v such that at least q (0..1] of all values are
    // <= v, to within its bucket (the bucket's upper edge, never more than max()). 0 when empty.
    uint64_t percentile(double q) const;
    // Non-empty buckets as (upper edge in ns, count), in increasing order: for distribution charts.
    std::vector<std::pair<uint64_t, uint64_t>> buckets() const;

    static size_t bucket_of(uint64_t ns);
    static uint64_t bucket_upper(size_t index);

private:
    std::vector<uint64_t> counts_;
    uint64_t count_ = 0;
    uint64_t min_ = 0;
    uint64_t max_ = 0;
    double sum_ = 0;
};

// Once per run: the machine the figures come from.
struct RunInfo {
    std::string command;     // the iolab command line that produced the results
    std::string started_at;  // UTC, ISO 8601
    std::string kernel;      // uname -sr
    std::string cpu_model;   // /proc/cpuinfo "model name"
    int cores = 0;           // CPUs this process may run on
    std::string io_uring;    // "available", or why not
    std::string pinning;     // which CPUs the server and the load generator ran on
    std::string load;        // the load: shape, payload, duration, warm-up
    std::string syscalls;    // how syscalls were counted: "kernel (...)", or "traced: why"
};
RunInfo describe_machine();

// One variant at one load point. A negative value means "could not be measured" and is written
// as null in JSON and empty in CSV.
struct PointResult {
    std::string variant;
    int conns = 0;
    size_t payload = 0;
    std::string mode;  // "closed" (each connection waits for its reply) or "open" (fixed rate)
    // "persistent" (connections held for the whole run) or "per-request" (a new connection for
    // every request: connect, request, reply, close)
    std::string shape = "persistent";
    double rate = 0;  // open loop: requests/s asked for; 0 for closed loop
    double duration_s = 0;
    uint64_t requests = 0;  // replies checked within the measured window
    double req_per_s = 0;
    double p50_us = -1;
    double p99_us = -1;
    double p999_us = -1;
    double max_us = -1;
    double server_cpu_us_per_req = -1;
    // System calls per reply. "kernel": every call of every thread and process of the server,
    // counted by the tracepoint raw_syscalls:sys_enter; "traced": only the calls the server
    // wraps in TRACE_IO (its STATS syscalls=), where the kernel refused the tracepoint; "": not
    // measured.
    double syscalls_per_req = -1;
    std::string syscalls_source;
    double uring_ops_per_req = -1;  // io_uring completions (CQEs) per reply; kernel counts only
    int threads = 0;
    long rss_kib = 0;              // the server process's resident set
    long pss_kib = -1;             // proportional set size of the server's process tree
    double rss_per_conn_kib = -1;  // growth of pss_kib per connection (RSS in iolab scale)
    long ctx_switches_voluntary = 0;
    long ctx_switches_involuntary = 0;
    double client_cpu_pct = 0;
    bool client_bound = false;
    // The outcomes (harness/loadgen.hpp). answered and unanswered count requests; refused,
    // wrong and lost count connections, each of which that failure ended. errors is the sum of
    // the four failures, as before they were told apart.
    uint64_t answered = 0;    // replies checked, in the window and the grace after it
    uint64_t refused = 0;     // ERR server busy|full, then close: the model's documented limit
    uint64_t unanswered = 0;  // no reply by the end of the grace (a serial model's queue)
    uint64_t wrong = 0;       // a byte that differs: a bug
    uint64_t lost = 0;        // connect failed, reset or EOF before a reply
    uint64_t errors = 0;
    uint64_t not_sent = 0;  // open loop: requests skipped by a connection 1000 replies behind
    int conns_connected = 0;
    std::string first_error;
    int processes = 1;          // the server's process tree (02_process_per_conn forks)
    double accepts_per_s = -1;  // per-request shape: connections accepted per second
    long time_wait = -1;        // per-request shape: TIME_WAIT sockets on the port afterwards
};

// A variant that did not produce figures: unavailable (exit 77: the model cannot run on this
// machine, not an error) or failed (did not start, or died).
struct Skipped {
    std::string variant;
    bool unavailable = false;
    std::string reason;
};

std::string json_escape(const std::string& s);
std::string xml_escape(const std::string& s);

// `extra`: more members for the top-level object, already in JSON ("\"idle\": {...}"), or "".
std::string results_json(const RunInfo& info, const std::vector<PointResult>& rows,
                         const std::vector<Skipped>& skipped, const std::string& extra = "");
std::string results_csv(const std::vector<PointResult>& rows);
// The table printed at the end of a run, one line per row, aligned for a terminal.
std::string results_table(const std::vector<PointResult>& rows,
                          const std::vector<Skipped>& skipped);

// SVG charts. A line chart draws one series per variant against x (log scale for connections);
// with a single x value it becomes a horizontal bar chart, one bar per variant, sorted. When the
// series carry groups (a model's family: "05" for 05_epoll and 05_epoll_et), the line chart is
// drawn as small multiples instead, one panel per group on shared axes, every other series in
// grey behind the group's own, so that no panel holds more than a family's few lines; the bars
// are coloured by group.
struct Series {
    std::string name;
    std::vector<std::pair<double, double>> points;  // (x, y); y < 0 means "no value"
    std::string group = "";                         // "" = no group
};
struct ChartSpec {
    std::string title;
    std::string x_label;
    std::string y_label;
    bool log_x = true;
    bool log_y = false;
    std::string note;  // one line under the title: the load and the machine
};
std::string svg_chart(const ChartSpec& spec, const std::vector<Series>& series);

// Writes `text` to `path` (creating parent directories); throws std::system_error on failure.
void write_text_file(const std::string& path, const std::string& text);

}  // namespace iolab
