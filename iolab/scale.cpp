// iolab scale VARIANT: how a model copes with many connections. For each point a fresh server
// gets N connections, each of which asks one PING so that the server has set up whatever it keeps
// per connection (a thread, a buffer, a pollfd slot); then the server's RSS per connection is
// read while they sit idle, and an open-loop load at a fixed rate spread over all N connections
// gives p99. A model with a cap (select's FD_SETSIZE, a thread limit) shows where it refuses and
// how: the first error says what the refused connections received.

#include <cstdio>
#include <thread>

#include "common/stop.hpp"
#include "iolab/commands.hpp"
#include "iolab/lab.hpp"

namespace iolab {

int run_scale(const ScaleOptions& opt, const std::string& command_line) {
    std::vector<Variant> found = select_variants(registry(self_dir()), opt.variant);
    const Variant* v = nullptr;
    for (const Variant& f : found) {
        if (f.name == opt.variant) {
            v = &f;
        }
    }
    if (v == nullptr) {
        std::fprintf(stderr, "iolab scale: no variant named %s (see iolab list)\n",
                     opt.variant.c_str());
        return 2;
    }
    std::vector<int> points = parse_int_list(opt.conns);
    // Every connection is a descriptor on each side: this process and the server (which inherits
    // the limit through fork and exec) both need more than the usual 1024.
    long limit = raise_fd_limit();
    Pinning pin = plan_pinning();
    RunInfo info = describe_machine();
    info.command = command_line;
    info.pinning = pin.text;
    char load[200];
    std::snprintf(load, sizeof load,
                  "scale: N idle connections (one PING each), then open loop at %.0f req/s over "
                  "all N for %.1f s; fd limit %ld",
                  opt.rate, opt.duration, limit);
    info.load = load;
    std::printf("%s   %s; fd limit %ld\n", v->name.c_str(), pin.text.c_str(), limit);
    std::printf("%7s %9s %7s %9s %9s %8s %6s %9s %9s %7s  %s\n", "conns", "connected", "served",
                "rss KiB", "KiB/conn", "threads", "fds", "req/s", "p99 us", "errors",
                "first error");

    std::vector<PointResult> rows;
    std::vector<Skipped> skipped;
    for (int n : points) {
        if (stop_requested()) {
            break;
        }
        if (n + 64 > limit) {
            std::printf("%7d  skipped: the fd limit is %ld\n", n, limit);
            continue;
        }
        ServerProcess server = start_pinned(*v, {"--max-conns", std::to_string(n + 16)}, pin);
        if (!server.running()) {
            bool unavailable = server.state() == ServerProcess::State::cannot_run;
            std::printf("%s: %s: %s\n", v->name.c_str(),
                        unavailable ? "unavailable here" : "FAILED", server.reason().c_str());
            skipped.push_back({v->name, unavailable, server.reason()});
            break;
        }
        auto idle = read_proc_stats(server.pid());
        long rss_idle = idle ? idle->rss_kib : 0;

        LoadSpec spec;
        LoadGen gen(spec);
        size_t t = gen.add_target(server.host(), server.port(), n, opt.rate);
        int connected = gen.connect(std::chrono::seconds(30));
        // A serial server (01) answers one connection and leaves the others in the backlog: do not
        // wait long for the rest.
        uint64_t served = gen.ping_all(std::chrono::seconds(v->has("serial") ? 2 : 15));
        std::this_thread::sleep_for(std::chrono::milliseconds(300));
        auto held = read_proc_stats(server.pid());
        uint64_t setup_errors = gen.stats(t).errors;
        std::string first_error = gen.stats(t).first_error;

        PointResult r;
        r.variant = v->name;
        r.conns = n;
        r.payload = spec.payload;
        r.mode = "open";
        r.rate = opt.rate;
        r.duration_s = opt.duration;
        r.conns_connected = connected;
        if (held) {
            r.rss_kib = held->rss_kib;
            r.threads = held->threads;
            r.rss_per_conn_kib = std::max(0.0, static_cast<double>(held->rss_kib - rss_idle) / n);
        }
        int fds = held ? held->fds : 0;

        gen.reset_stats();
        gen.start();
        gen.run_until(now_ns() + 200000000, [] { return !stop_requested(); });
        gen.reset_stats();
        double cpu0 = process_cpu_s(server.pid());
        CtxSwitches ctx0 = process_ctx_switches(server.pid());
        double client0 = thread_cpu_s();
        int64_t t0 = now_ns();
        gen.run_until(t0 + static_cast<int64_t>(opt.duration * 1e9),
                      [] { return !stop_requested(); });
        double elapsed = static_cast<double>(now_ns() - t0) / 1e9;
        double cpu1 = process_cpu_s(server.pid());
        CtxSwitches ctx1 = process_ctx_switches(server.pid());
        r.client_cpu_pct = 100 * (thread_cpu_s() - client0) / elapsed;
        r.client_bound = r.client_cpu_pct >= 90;
        uint64_t completed = gen.stats(t).completed;
        gen.finish(std::chrono::milliseconds(1000));
        const TargetStats& s = gen.stats(t);
        r.requests = completed;
        r.req_per_s = static_cast<double>(completed) / elapsed;
        if (s.latency.count() > 0) {
            r.p50_us = static_cast<double>(s.latency.percentile(0.5)) / 1000;
            r.p99_us = static_cast<double>(s.latency.percentile(0.99)) / 1000;
            r.p999_us = static_cast<double>(s.latency.percentile(0.999)) / 1000;
            r.max_us = static_cast<double>(s.latency.max()) / 1000;
        }
        if (completed > 0 && cpu0 >= 0 && cpu1 >= 0) {
            r.server_cpu_us_per_req = (cpu1 - cpu0) * 1e6 / static_cast<double>(completed);
        }
        r.ctx_switches_voluntary = ctx1.voluntary - ctx0.voluntary;
        r.ctx_switches_involuntary = ctx1.involuntary - ctx0.involuntary;
        // Errors: connections that failed or were refused while being set up (connect failed or
        // timed out, or the PING was answered with something else: ERR server full), plus the
        // errors under load.
        r.errors = setup_errors + s.errors;
        r.first_error = !first_error.empty() ? first_error : s.first_error;
        r.not_sent = s.skipped;
        gen.close_all();
        int code = server.stop(std::chrono::seconds(5));
        if (code != 0) {
            skipped.push_back(
                {v->name, false,
                 "conns=" + std::to_string(n) + ": SIGTERM: exit status " + std::to_string(code)});
        }
        std::printf("%7d %9d %7llu %9ld %9.2f %8d %6d %9.0f %9.0f %7llu  %s\n", n, connected,
                    (unsigned long long)served, r.rss_kib, r.rss_per_conn_kib, r.threads, fds,
                    r.req_per_s, r.p99_us, (unsigned long long)r.errors,
                    r.first_error.substr(0, 90).c_str());
        std::fflush(stdout);
        rows.push_back(r);
    }

    std::string base = opt.out + "/scale-" + v->name;
    write_text_file(base + ".json", results_json(info, rows, skipped));
    write_text_file(base + ".csv", results_csv(rows));
    std::vector<Series> mem = {{v->name, {}}}, p99 = {{v->name, {}}};
    for (const PointResult& r : rows) {
        mem[0].points.emplace_back(r.conns, r.rss_per_conn_kib);
        p99[0].points.emplace_back(r.conns, r.p99_us);
    }
    std::string note = v->name + ", open loop at " + std::to_string((long)opt.rate) + " req/s";
    write_text_file(base + "-memory.svg",
                    svg_chart({"Server memory (RSS) per idle connection", "connections",
                               "KiB per connection", true, false, note},
                              mem));
    write_text_file(base + "-p99.svg", svg_chart({"p99 latency against connections", "connections",
                                                  "p99 latency (us, log scale)", true, true, note},
                                                 p99));
    std::printf("wrote %s.json, %s.csv, %s-memory.svg, %s-p99.svg\n", base.c_str(), base.c_str(),
                base.c_str(), base.c_str());
    for (const Skipped& s : skipped) {
        std::printf("%s: %s\n", s.variant.c_str(), s.reason.c_str());
    }
    return stop_requested() ? 130 : 0;
}

}  // namespace iolab
