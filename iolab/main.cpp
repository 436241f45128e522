// iolab: the lab bench for the IO models.
//
//   iolab list                      every server variant and the command that starts it
//   iolab compare [options]         every variant under identical load: table, JSON, CSV, charts
//   iolab bench VARIANT             one variant in depth: idle CPU, threads, latency distribution
//   iolab scale VARIANT             100 .. 10,000 connections: memory per connection, p99, refusals
//   iolab scale VARIANTS --idle     100 active connections beside 0 .. 10,000 idle: CPU, syscalls
//   iolab demo [--stall]            every server on its default port, a live table for the class
//   iolab timeline VARIANT          a scripted scene, traced, drawn as a swimlane SVG: who waits
//   when iolab lessons [--quick]         every claim of the course tested here: DIR/index.html
//
// docs/measuring.md explains how each figure is measured and what it costs.

#include <csignal>
#include <cstdio>
#include <iostream>

#include <CLI/CLI.hpp>

#include "common/cli.hpp"
#include "common/options.hpp"
#include "common/stop.hpp"
#include "harness/registry.hpp"
#include "iolab/commands.hpp"

using namespace iolab;

namespace {

int run_list() {
    std::vector<Variant> all = registry(self_dir());
    size_t width = 0;
    for (const Variant& v : all) {
        width = std::max(width, v.name.size());
    }
    for (const Variant& v : all) {
        std::string command = v.binary;
        for (const std::string& a : v.args) {
            command += " " + a;
        }
        std::printf("%-*s  %s\n", static_cast<int>(width), v.name.c_str(), command.c_str());
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"iolab: run, compare and watch the IO model servers", "iolab"};
    app.require_subcommand(1);

    app.add_subcommand("list", "Print every server variant and the command that starts it");

    CompareOptions cmp;
    CLI::App* compare = app.add_subcommand(
        "compare", "Run every variant in turn under identical load; write table, JSON, CSV, SVG");
    compare->add_option("--models", cmp.models,
                        "Variants to run, comma-separated names or prefixes (default: all)");
    compare->add_option("--conns", cmp.conns, "Connection counts, one load point each")
        ->capture_default_str();
    compare->add_option("--payload", cmp.payload, "Bytes of ECHO text per request (0 = PING)")
        ->capture_default_str()
        ->check(CLI::Range(size_t{0}, size_t{60000}));
    compare->add_option("--mode", cmp.mode, "qa: ECHO requests; echo: raw bytes echoed")
        ->capture_default_str()
        ->check(CLI::IsMember({"qa", "echo"}));
    compare->add_option("--duration", cmp.duration, "Seconds measured per point")
        ->capture_default_str()
        ->check(CLI::Range(0.1, 600.0));
    compare->add_option("--warmup", cmp.warmup, "Seconds of load before each measurement")
        ->capture_default_str()
        ->check(CLI::Range(0.0, 60.0));
    compare
        ->add_option("--rate", cmp.rate,
                     "Open loop: requests/s per point on a fixed schedule (default: closed loop)")
        ->check(CLI::Range(0.0, 10000000.0));
    compare->add_option("--out", cmp.out, "Directory for results.json, results.csv, *.svg")
        ->capture_default_str();
    compare
        ->add_flag("--connect-per-request", cmp.connect_per_request,
                   "Measure every point twice: over persistent connections, and with a new "
                   "connection per request (connect, request, reply, close), what a pool saves")
        ->excludes("--rate");

    BenchOptions bench;
    CLI::App* bench_cmd = app.add_subcommand(
        "bench", "One variant in depth: idle CPU, threads, latency distribution");
    bench_cmd->add_option("variant", bench.variant, "Variant name (see iolab list)")->required();
    bench_cmd->add_option("--conns", bench.conns, "Connections under load")
        ->capture_default_str()
        ->check(CLI::Range(1, 20000));
    bench_cmd->add_option("--payload", bench.payload, "Bytes of ECHO text per request")
        ->capture_default_str();
    bench_cmd->add_option("--duration", bench.duration, "Seconds per phase")
        ->capture_default_str()
        ->check(CLI::Range(0.1, 600.0));
    bench_cmd->add_option("--rate", bench.rate,
                          "Open-loop rate for the latency phase (default: half the peak)");
    bench_cmd->add_option("--out", bench.out, "Directory for bench-VARIANT.json and .svg")
        ->capture_default_str();

    ScaleOptions scale;
    CLI::App* scale_cmd = app.add_subcommand(
        "scale",
        "Sweep 100 .. 10,000 connections: memory per connection, p99, refusals; or, with --idle, "
        "what idle connections cost the requests of 100 active ones");
    scale_cmd->add_option("variant", scale.variant,
                          "Variant name (see iolab list); with --idle, names or prefixes, "
                          "comma-separated");
    CLI::Option* idle_opt =
        scale_cmd
            ->add_option("--idle", scale.idle,
                         "Idle sweep: hold each of these counts of idle connections in turn while "
                         "--active connections run a closed loop (alone: 0,1000,5000,10000)")
            ->expected(0, 1);
    scale_cmd
        ->add_option("--models", scale.models,
                     "Idle sweep: more variants, comma-separated names or prefixes; they take "
                     "turns at every point")
        ->needs(idle_opt);
    scale_cmd->add_option("--active", scale.active, "Idle sweep: closed-loop connections measured")
        ->capture_default_str()
        ->check(CLI::Range(1, 5000))
        ->needs(idle_opt);
    scale_cmd->add_option("--payload", scale.payload, "Idle sweep: bytes of ECHO text per request")
        ->capture_default_str()
        ->check(CLI::Range(size_t{0}, size_t{60000}))
        ->needs(idle_opt);
    scale_cmd
        ->add_option("--warmup", scale.warmup, "Idle sweep: seconds of load before each window")
        ->capture_default_str()
        ->check(CLI::Range(0.0, 60.0))
        ->needs(idle_opt);
    scale_cmd
        ->add_option("--rounds", scale.rounds,
                     "Idle sweep: measure every point this many times, interleaved; report the "
                     "median")
        ->capture_default_str()
        ->check(CLI::Range(1, 50))
        ->needs(idle_opt);
    scale_cmd->add_option("--conns", scale.conns, "Memory sweep: connection counts")
        ->capture_default_str()
        ->excludes(idle_opt);
    scale_cmd
        ->add_option("--rate", scale.rate,
                     "Memory sweep: open-loop requests/s spread over all connections")
        ->capture_default_str()
        ->check(CLI::Range(1.0, 10000000.0))
        ->excludes(idle_opt);
    scale_cmd->add_option("--duration", scale.duration, "Seconds of load measured per point")
        ->capture_default_str()
        ->check(CLI::Range(0.1, 600.0));
    scale_cmd
        ->add_option("--out", scale.out,
                     "Directory for scale-VARIANT.json, .csv, .svg (idle sweep: scale-idle.*)")
        ->capture_default_str();

    DemoOptions demo;
    CLI::App* demo_cmd = app.add_subcommand(
        "demo", "Every server on its default port, light load, a live table; Ctrl-C stops");
    demo_cmd->add_option("--models", demo.models, "Variants to start (default: all)");
    demo_cmd->add_option("--conns", demo.conns, "Load connections per server")
        ->capture_default_str()
        ->check(CLI::Range(1, 1000));
    demo_cmd->add_option("--rate", demo.rate, "Requests/s per server")
        ->capture_default_str()
        ->check(CLI::Range(1.0, 100000.0));
    demo_cmd->add_flag("--stall", demo.stall,
                       "One more connection per server sends WORK in a loop: watch who stalls");
    demo_cmd->add_option("--stall-ms", demo.stall_ms, "Milliseconds each WORK blocks")
        ->capture_default_str()
        ->check(CLI::Range(1, 10000));
    demo_cmd->add_option("--seconds", demo.seconds, "Stop by itself after this long (0 = Ctrl-C)")
        ->capture_default_str();

    LessonsOptions lessons;
    CLI::App* lessons_cmd = app.add_subcommand(
        "lessons",
        "Test every claim of the course on this machine: one experiment each, a page with the "
        "figures, the numbers and a verdict (DIR/index.html)");
    lessons_cmd->add_flag("--quick", lessons.quick,
                          "Short load points (0.3 s): about a minute in all");
    lessons_cmd->add_option("--out", lessons.out, "Directory for index.html and each claim's files")
        ->capture_default_str();
    lessons_cmd->add_option("--only", lessons.only, "Claim numbers to run, comma-separated");

    TimelineCommand timeline;
    CLI::App* timeline_cmd = app.add_subcommand(
        "timeline", "A scripted scene against one variant, traced, drawn as a swimlane SVG");
    timeline_cmd->add_option("variant", timeline.variant, "Variant name (see iolab list)");
    timeline_cmd->add_flag("--all", timeline.all, "Every variant, one SVG each in --out-dir");
    timeline_cmd->add_option("--scene", timeline.scene, "default, slow, work or ping")
        ->capture_default_str()
        ->check(CLI::IsMember({"default", "slow", "work", "ping"}));
    timeline_cmd->add_option("--out", timeline.out, "The SVG to write (one variant)");
    timeline_cmd->add_option("--out-dir", timeline.out_dir, "Directory for timeline-VARIANT.svg")
        ->capture_default_str();
    timeline_cmd
        ->add_option("--strace", timeline.strace,
                     "Also run the server under strace -f -ttt -T: auto (where the program does "
                     "not trace every thread itself), on, off")
        ->capture_default_str()
        ->check(CLI::IsMember({"auto", "on", "off"}));

    if (int rc = parse_command_line(app, argc, argv); rc >= 0) {
        return rc;
    }
    std::string command_line = "iolab";
    for (int i = 1; i < argc; ++i) {
        command_line += std::string(" ") + argv[i];
    }
    // The load generator writes to sockets whose server may vanish: EPIPE, not death.
    std::signal(SIGPIPE, SIG_IGN);
    try {
        install_stop_handlers();
        if (app.got_subcommand("list")) {
            return run_list();
        }
        if (app.got_subcommand(compare)) {
            return run_compare(cmp, command_line);
        }
        if (app.got_subcommand(bench_cmd)) {
            return run_bench(bench, command_line);
        }
        if (app.got_subcommand(scale_cmd)) {
            scale.idle_sweep = idle_opt->count() > 0;
            if (scale.idle_sweep && scale.idle.empty()) {
                scale.idle = ScaleOptions{}.idle;
            }
            return run_scale(scale, command_line);
        }
        if (app.got_subcommand(demo_cmd)) {
            return run_demo(demo);
        }
        if (app.got_subcommand(timeline_cmd)) {
            if (timeline.all == !timeline.variant.empty()) {
                std::fprintf(stderr, "iolab timeline: name one variant, or --all\n");
                return 2;
            }
            return run_timeline(timeline);
        }
        if (app.got_subcommand(lessons_cmd)) {
            return run_lessons(lessons, command_line);
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "iolab: %s\n", e.what());
        return 1;
    }
    return 2;
}
