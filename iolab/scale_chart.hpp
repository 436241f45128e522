// The growth chart of iolab scale --idle: what each variant's requests cost as the idle
// connections it holds grow, in four panels on a shared x axis (idle connections held): server
// CPU per request, the same relative to the variant's figure with none held, p99 latency, and
// system calls per request. A point a variant could not hold is not left out silently: the
// legend says which points are missing and why.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace iolab {

// One variant at one idle count: its figures, or why it has none.
struct GrowthPoint {
    std::string variant;
    int idle = 0;                // idle connections asked for
    bool measured = false;       // false: `missing` says why there are no figures
    std::string missing;         // "--max-aio 256: one glibc AIO helper thread per connection"
    int held = 0;                // idle connections still open when the point ended
    double cpu_us_per_req = -1;  // negative: not measured
    double p99_us = -1;
    double syscalls_per_req = -1;
    std::string syscalls_source;  // "kernel" or "traced"
    uint64_t failures = 0;        // refused + unanswered + wrong + lost, active connections
};

struct GrowthChart {
    std::string title;                  // what was measured, and the load
    std::string note;                   // the machine and the pinning
    std::vector<std::string> variants;  // legend order
    std::vector<int> idle;              // the idle counts, increasing
    std::vector<GrowthPoint> points;    // one per variant and idle count
};

// The chart as a standalone SVG document.
std::string growth_svg(const GrowthChart& chart);

}  // namespace iolab
