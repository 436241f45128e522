// The iolab subcommands. Each returns the process's exit code.
#pragma once

#include <string>
#include <vector>

namespace iolab {

struct CompareOptions {
    std::string models;  // comma-separated names or prefixes; empty = every variant
    std::string conns = "1,100,1000";
    size_t payload = 64;
    std::string mode = "qa";  // qa: ECHO requests; echo: raw bytes, servers run with --mode echo
    double duration = 1.0;
    double warmup = 0.2;
    double rate = 0;  // 0 = closed loop
    std::string out = "results";
    // Also measure each point with a new connection per request, beside the persistent one.
    bool connect_per_request = false;
};
int run_compare(const CompareOptions& opt, const std::string& command_line);

struct BenchOptions {
    std::string variant;
    int conns = 100;
    size_t payload = 64;
    double duration = 3.0;
    double rate = 0;  // open-loop rate; 0 = half the closed-loop peak
    std::string out = "results";
};
int run_bench(const BenchOptions& opt, const std::string& command_line);

struct ScaleOptions {
    std::string variant;  // the variant (or, with --idle, a comma-separated list)
    std::string conns = "100,1000,2000,5000,10000";
    double rate = 2000;
    double duration = 1.0;
    std::string out = "results";
    // The idle sweep (iolab scale --idle): `active` closed-loop connections measured while each
    // count of idle connections in `idle` is held, every variant in `models` (and `variant`)
    // at every point, interleaved.
    bool idle_sweep = false;
    std::string idle = "0,1000,5000,10000";
    std::string models;
    int active = 100;
    size_t payload = 64;
    double warmup = 0.3;
    int rounds = 1;
};
int run_scale(const ScaleOptions& opt, const std::string& command_line);

struct DemoOptions {
    std::string models;
    int conns = 4;
    double rate = 200;
    bool stall = false;
    int stall_ms = 1000;
    double seconds = 0;  // 0 = until Ctrl-C
};
int run_demo(const DemoOptions& opt);

// iolab timeline (iolab/timeline.hpp): one variant, or every one, under a scripted scene, drawn as
// a swimlane SVG of who waits when.
struct TimelineCommand {
    std::string variant;
    bool all = false;
    std::string scene = "default";
    std::string out;  // the SVG for one variant (default: out_dir/timeline-NAME.svg)
    std::string out_dir = "results";
    std::string strace = "auto";  // auto: only where the trace misses threads; on; off
};
int run_timeline(const TimelineCommand& cmd);

struct LessonsOptions {
    bool quick = false;  // short load points: about a minute in all
    std::string out = "lessons";
    std::string only;  // comma-separated claim numbers; empty = all of them
};
int run_lessons(const LessonsOptions& opt, const std::string& command_line);

}  // namespace iolab
