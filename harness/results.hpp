// One result row per variant and load point, and the three outputs made from the rows: JSON,
// CSV and the text table printed at the end of a run. All three are driven by one table of the
// row's fields (harness/results.cpp), so a new field is added there once. docs/measuring.md says
// what every field means.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "harness/machine.hpp"

namespace iolab {

// One variant at one load point. A negative value means "could not be measured" and is written
// as null in JSON and empty in CSV (time_wait and pss_kib, older than that rule, are written as
// -1 in JSON).
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

// {"run": {...}, "results": [...], "skipped": [...]}, indented. `extra`: more members for the
// top-level object, as JSON text without the braces ("\"idle\": {...}, \"exit_status\": 0"), or
// ""; throws std::invalid_argument if it does not parse.
std::string results_json(const RunInfo& info, const std::vector<PointResult>& rows,
                         const std::vector<Skipped>& skipped, const std::string& extra = "");
// A header line naming every field, then one line per row.
std::string results_csv(const std::vector<PointResult>& rows);
// The table printed at the end of a run, one line per row, aligned for a terminal, with a line
// under it for every column that needs one.
std::string results_table(const std::vector<PointResult>& rows,
                          const std::vector<Skipped>& skipped);

// Writes `text` to `path` (creating parent directories); throws std::system_error on failure.
void write_text_file(const std::string& path, const std::string& text);

}  // namespace iolab
