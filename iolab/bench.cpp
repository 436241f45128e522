// iolab bench VARIANT: one variant in depth. Its CPU while nobody talks to it (a busy-polling
// model burns a core doing nothing: the lesson of 03), its threads under load (one per
// connection, or glibc's AIO helpers), and its latency distribution in a closed loop and in an
// open loop at half the closed loop's peak, with the kernel's count of its syscalls and every
// outcome apart (answered, refused, unanswered, wrong, lost).

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <thread>

#include "common/stop.hpp"
#include "iolab/commands.hpp"
#include "iolab/lab.hpp"

namespace iolab {

namespace {

// (latency in us, % of requests at or below it), from the histogram's buckets.
Series cdf_of(const std::string& name, const Histogram& h) {
    Series s{name, {}};
    uint64_t seen = 0;
    for (auto [upper, count] : h.buckets()) {
        seen += count;
        s.points.emplace_back(std::max(1.0, static_cast<double>(upper) / 1000),
                              100.0 * static_cast<double>(seen) / static_cast<double>(h.count()));
    }
    return s;
}

void print_latency(const char* label, const Histogram& h) {
    auto us = [&](double q) { return static_cast<double>(h.percentile(q)) / 1000; };
    std::printf("  %-12s p50 %.0f us   p90 %.0f us   p99 %.0f us   p99.9 %.0f us   max %.0f us\n",
                label, us(0.5), us(0.9), us(0.99), us(0.999), static_cast<double>(h.max()) / 1000);
    // A text histogram by powers of two: where the requests' latencies fall.
    uint64_t edge = 16000;  // 16 us
    uint64_t below = 0;
    std::vector<std::pair<uint64_t, uint64_t>> rows;
    for (auto [upper, count] : h.buckets()) {
        while (upper > edge) {
            rows.emplace_back(edge, below);
            below = 0;
            edge *= 2;
        }
        below += count;
    }
    rows.emplace_back(edge, below);
    uint64_t most = 1;
    for (auto [e, c] : rows) {
        most = std::max(most, c);
    }
    for (auto [e, c] : rows) {
        if (c == 0 && e < 64000) {
            continue;
        }
        int bar = static_cast<int>(
            std::lround(50.0 * static_cast<double>(c) / static_cast<double>(most)));
        std::printf("    <= %7.0f us %8llu %s\n", static_cast<double>(e) / 1000,
                    (unsigned long long)c, std::string(static_cast<size_t>(bar), '#').c_str());
    }
}

// "2.01 syscalls/request (kernel), 0.00 io_uring ops/request", or the traced count marked so.
std::string calls_text(const PointResult& r) {
    if (r.syscalls_per_req < 0) {
        return "syscalls not measured";
    }
    char text[120];
    std::snprintf(text, sizeof text, "%.2f syscalls/request (%s)", r.syscalls_per_req,
                  r.syscalls_source == "kernel" ? "kernel" : "traced: the kernel refused");
    std::string out = text;
    if (r.uring_ops_per_req >= 0) {
        std::snprintf(text, sizeof text, ", %.2f io_uring ops/request", r.uring_ops_per_req);
        out += text;
    }
    return out;
}

// The outcomes apart: a refusal is the model's documented limit, a wrong byte is a bug.
void print_outcomes(const PointResult& r) {
    std::printf(
        "  %-12s answered %llu   refused %llu   no reply %llu   wrong %llu   lost %llu%s%s\n",
        "outcomes", (unsigned long long)r.answered, (unsigned long long)r.refused,
        (unsigned long long)r.unanswered, (unsigned long long)r.wrong, (unsigned long long)r.lost,
        r.wrong > 0    ? "   BUG: "
        : r.errors > 0 ? "   "
                       : "",
        r.errors > 0 ? r.first_error.substr(0, 100).c_str() : "");
}

}  // namespace

int run_bench(const BenchOptions& opt, const std::string& command_line) {
    std::vector<Variant> found = select_variants(registry(self_dir()), opt.variant);
    const Variant* v = nullptr;
    for (const Variant& f : found) {
        if (f.name == opt.variant) {
            v = &f;
        }
    }
    if (v == nullptr) {
        std::fprintf(stderr, "iolab bench: no variant named %s (see iolab list)\n",
                     opt.variant.c_str());
        return 2;
    }
    Pinning pin = plan_pinning();
    raise_fd_limit();
    RunInfo info = describe_machine();
    info.command = command_line;
    info.pinning = pin.text;
    info.load = "bench: idle 1 s; closed loop; open loop at half the closed-loop peak";

    // The kernel's counters go in before the server starts, so that they count every call of
    // every thread and child it will have (KernelCounters in harness/procinfo.hpp).
    CountedServer counted =
        start_counted(*v,
                      {"--max-conns", std::to_string(std::max(1000, opt.conns + 16)), "--max-line",
                       std::to_string(std::max<size_t>(4096, opt.payload + 16))},
                      pin);
    ServerProcess& server = counted.process;
    record_counters(info, counted.counters, "iolab bench");
    if (!server.running()) {
        bool unavailable = server.state() == ServerProcess::State::cannot_run;
        std::printf("%s: %s: %s\n", v->name.c_str(), unavailable ? "unavailable here" : "FAILED",
                    server.reason().c_str());
        return unavailable ? 77 : 1;
    }
    std::printf("%s   %s\n", v->name.c_str(), pin.text.c_str());

    // Idle: nobody connected. A server that sleeps in the kernel (accept, epoll_wait, select,
    // io_uring_enter) uses no CPU; one that polls in user space uses a whole core.
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    double cpu0 = process_cpu_s(server.pid());
    int64_t t0 = now_ns();
    while (now_ns() - t0 < 1000000000 && !stop_requested()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    double idle_pct =
        100 * (process_cpu_s(server.pid()) - cpu0) / (static_cast<double>(now_ns() - t0) / 1e9);
    auto idle = read_proc_stats(server.pid());
    int idle_threads = idle ? idle->threads : 0;
    long idle_rss = idle ? idle->rss_kib : 0;
    long idle_pss = tree_pss_kib(server.pid());
    std::printf("idle:        CPU %.1f %%   threads %d   RSS %ld KiB\n", idle_pct, idle_threads,
                idle_rss);

    int max_threads = 0;
    auto sample = [&](double) {
        if (auto s = read_proc_stats(server.pid())) {
            max_threads = std::max(max_threads, s->threads);
        }
        return true;
    };
    PointSpec spec;
    spec.conns = opt.conns;
    spec.payload = opt.payload;
    spec.duration_s = opt.duration;
    spec.warmup_s = 0.3;
    Histogram closed_lat;
    PointResult closed =
        measure_point(server, v->name, spec, idle_pss, sample, &closed_lat, &counted.counters);
    std::printf(
        "closed loop: %d conns, %.0f req/s, %.2f us server CPU/request, %s, threads %d (max "
        "%d), RSS %ld KiB%s\n",
        closed.conns, closed.req_per_s, closed.server_cpu_us_per_req, calls_text(closed).c_str(),
        closed.threads, std::max(max_threads, closed.threads), closed.rss_kib,
        closed.client_bound ? " (client-bound)" : "");
    print_outcomes(closed);
    print_latency("closed loop", closed_lat);

    std::vector<PointResult> rows = {closed};
    Histogram open_lat;
    if (!stop_requested() && server.alive()) {
        spec.rate = opt.rate > 0 ? opt.rate : std::max(100.0, std::floor(closed.req_per_s / 2));
        max_threads = 0;
        PointResult open =
            measure_point(server, v->name, spec, idle_pss, sample, &open_lat, &counted.counters);
        std::printf(
            "open loop:   %.0f req/s asked, %.0f served, %.2f us server CPU/request, %s, "
            "threads %d (max %d)\n",
            open.rate, open.req_per_s, open.server_cpu_us_per_req, calls_text(open).c_str(),
            open.threads, std::max(max_threads, open.threads));
        print_outcomes(open);
        print_latency("open loop", open_lat);
        rows.push_back(open);
    }
    int code = server.stop(std::chrono::seconds(3));
    std::printf("SIGTERM: exit status %d\n", code);

    char idle_json[256];
    std::snprintf(idle_json, sizeof idle_json,
                  "\"idle\": {\"cpu_pct\": %.2f, \"threads\": %d, \"rss_kib\": %ld}, "
                  "\"max_threads_under_load\": %d, \"exit_status\": %d",
                  idle_pct, idle_threads, idle_rss, std::max(max_threads, closed.threads), code);
    std::string base = opt.out + "/bench-" + v->name;
    write_text_file(base + ".json", results_json(info, rows, {}, idle_json));
    std::vector<Series> series = {
        cdf_of("closed loop, " + std::to_string(opt.conns) + " conns", closed_lat)};
    if (open_lat.count() > 0) {
        series.push_back(
            cdf_of("open loop at " + std::to_string((long)rows.back().rate) + " req/s", open_lat));
    }
    ChartSpec chart{v->name + ": latency distribution",
                    "latency (us, log scale)",
                    "% of requests at or below",
                    true,
                    false,
                    std::to_string(opt.payload) + "-byte echo; " + pin.text};
    write_text_file(base + "-latency.svg", svg_chart(chart, series));
    std::printf("wrote %s.json and %s-latency.svg\n", base.c_str(), base.c_str());
    return code == 0 ? 0 : 1;
}

}  // namespace iolab
