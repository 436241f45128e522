// iolab compare: every variant in turn, under identical load, one fresh server per variant and
// the load points in increasing order of connections.

#include <unistd.h>

#include <cstdio>
#include <functional>
#include <map>
#include <set>

#include "common/stop.hpp"
#include "iolab/commands.hpp"
#include "iolab/lab.hpp"

namespace iolab {

namespace {

// The failures of a point, for the progress line and the bars: "  refused 996  WRONG 2", or "".
std::string outcome_text(const PointResult& r) {
    std::string text;
    auto add = [&](const char* name, uint64_t n) {
        if (n > 0) {
            text += std::string("  ") + name + " " + std::to_string(n);
        }
    };
    add("refused", r.refused);
    add("no reply", r.unanswered);
    add("lost", r.lost);
    add("WRONG", r.wrong);
    return text;
}

std::vector<Series> series_of(const std::vector<PointResult>& rows,
                              const std::function<double(const PointResult&)>& y, bool one_point) {
    std::vector<Series> out;
    std::map<std::string, size_t> index;
    for (const PointResult& r : rows) {
        std::string name = r.variant + (r.shape == "per-request" ? " (new conn per request)" : "");
        auto [it, fresh] = index.emplace(name, out.size());
        if (fresh) {
            // The model's family is its number: 05_epoll and 05_epoll_et share a panel.
            out.push_back({name, {}, r.variant.substr(0, r.variant.find('_'))});
            // A bar for one point says when it stands for part of the clients only: 01's p99
            // is that of the one connection it serves.
            std::string failures = outcome_text(r);
            if (one_point && !failures.empty()) {
                out.back().name += " (" + failures.substr(2) + ")";
            }
        }
        out[it->second].points.emplace_back(r.conns, y(r));
    }
    return out;
}

}  // namespace

void write_charts(const std::string& dir, const std::string& load, const std::string& note,
                  const std::vector<PointResult>& rows) {
    std::set<int> conns;
    for (const PointResult& r : rows) {
        conns.insert(r.conns);
    }
    // With one load point every chart is a bar per variant: the title says which point.
    std::string where = conns.size() == 1 ? " at " + std::to_string(*conns.begin()) + " connections"
                                          : " against connections";
    auto chart = [&](const std::string& file, const std::string& what, const std::string& y,
                     bool log_y, const std::function<double(const PointResult&)>& get) {
        ChartSpec spec{what + where + ": " + load, "concurrent connections", y, true, log_y, note};
        write_text_file(dir + "/" + file, svg_chart(spec, series_of(rows, get, conns.size() == 1)));
    };
    chart("req_per_s.svg", "Requests per second", "requests/s", false,
          [](const PointResult& r) { return r.req_per_s; });
    chart("p99.svg", "p99 latency", "p99 latency (us, log scale)", true,
          [](const PointResult& r) { return r.p99_us; });
    chart("cpu_per_req.svg", "Server CPU time per request",
          "server CPU (us) per request, log scale", true,
          [](const PointResult& r) { return r.server_cpu_us_per_req; });
    chart("rss_per_conn.svg", "Server memory (PSS) per connection",
          "KiB per connection (log scale)", true,
          [](const PointResult& r) { return r.rss_per_conn_kib; });
    chart("syscalls_per_req.svg", "System calls per request", "syscalls per request (log scale)",
          true, [](const PointResult& r) { return r.syscalls_per_req; });
}

int run_compare(const CompareOptions& opt, const std::string& command_line) {
    // The yardsticks (bench/) run only when named: they are measures, not lab servers.
    std::vector<Variant> variants = select_variants(
        registry(self_dir(), opt.models.empty() ? Rows::lab : Rows::with_yardsticks), opt.models);
    bool echo = opt.mode == "echo";
    std::vector<int> conns = parse_int_list(opt.conns);
    Pinning pin = plan_pinning();
    raise_fd_limit();

    RunInfo info = describe_machine();
    info.command = command_line;
    info.pinning = pin.text;
    char load[256];
    std::snprintf(load, sizeof load,
                  "%s, %s %zu bytes, %.1f s measured after %.1f s of "
                  "warm-up per point, every reply checked byte for byte",
                  opt.rate > 0
                      ? ("open loop at " + std::to_string((long)opt.rate) + " req/s").c_str()
                      : "closed loop",
                  echo ? "echo mode, requests of" : "QA requests ECHO with text of", opt.payload,
                  opt.duration, opt.warmup);
    info.load = load;

    int max_conns = conns.back();
    std::vector<bool> shapes = {false};  // connect per request?
    if (opt.connect_per_request) {
        shapes.push_back(true);
        info.load +=
            "; each point also with a new connection per request, its source address "
            "one of 127.0.0.2-127.0.0.254";
    }
    size_t total = variants.size() * conns.size() * shapes.size();
    size_t done = 0;
    double per_point = opt.duration + opt.warmup + 0.3;
    int64_t started = now_ns();
    bool tty = ::isatty(STDERR_FILENO);
    std::fprintf(stderr, "iolab compare: %zu variants x %zu points, about %s; %s\n",
                 variants.size(), conns.size(),
                 format_seconds(static_cast<double>(total) * per_point).c_str(), pin.text.c_str());

    std::vector<PointResult> rows;
    std::vector<Skipped> skipped;
    for (size_t vi = 0; vi < variants.size() && !stop_requested(); ++vi) {
        const Variant& v = variants[vi];
        CountedServer counted = start_counted(
            v,
            {"--max-conns", std::to_string(std::max(1000, max_conns + 16)), "--max-line",
             std::to_string(std::max<size_t>(4096, opt.payload + 16)), "--mode", opt.mode},
            pin);
        ServerProcess& server = counted.process;
        record_counters(info, counted.counters, "iolab compare");
        if (!server.running()) {
            bool unavailable = server.state() == ServerProcess::State::cannot_run;
            skipped.push_back({v.name, unavailable, server.reason()});
            std::fprintf(stderr, "[%zu/%zu] %s: %s: %s\n", vi + 1, variants.size(), v.name.c_str(),
                         unavailable ? "unavailable here" : "FAILED to start",
                         server.reason().c_str());
            done += conns.size() * shapes.size();
            continue;
        }
        // The baseline for memory per connection: the server after it has served one request,
        // so that what it sets up lazily on first use (buffer rings, a thread pool's stacks) is
        // not charged to the load's connections.
        ask_stats(server.host(), server.port(), std::chrono::seconds(2));
        long pss_idle = tree_pss_kib(server.pid());
        for (size_t point = 0; point < conns.size() * shapes.size(); ++point) {
            int n = conns[point / shapes.size()];
            bool per_request = shapes[point % shapes.size()];
            if (stop_requested()) {
                break;
            }
            if (!server.alive()) {
                break;
            }
            double elapsed = static_cast<double>(now_ns() - started) / 1e9;
            double left =
                done ? elapsed / static_cast<double>(done) * static_cast<double>(total - done)
                     : static_cast<double>(total - done) * per_point;
            char head[200];
            std::snprintf(head, sizeof head, "[%zu/%zu] %-28s conns=%-5d%s", vi + 1,
                          variants.size(), v.name.c_str(), n, per_request ? " new-conn" : "");
            std::fprintf(stderr, "%s  ~%s left", head, format_seconds(left).c_str());
            std::fflush(stderr);
            PointSpec spec;
            spec.conns = n;
            spec.payload = opt.payload;
            spec.mode = echo ? Mode::echo : Mode::qa;
            spec.rate = opt.rate;
            spec.duration_s = opt.duration;
            spec.warmup_s = opt.warmup;
            spec.connect_per_request = per_request;
            auto progress = [&](double f) {
                if (tty) {
                    std::fprintf(stderr, "\r%s  %3.0f%%  ~%s left   ", head, f * 100,
                                 format_seconds(left - f * per_point).c_str());
                    std::fflush(stderr);
                }
                return true;
            };
            PointResult r =
                measure_point(server, v.name, spec, pss_idle, progress, nullptr, &counted.counters);
            ++done;
            std::fprintf(stderr, "%s%s  %8.0f req/s  p99 %8.0f us%s%s\n", tty ? "\r" : "  ->  ",
                         head, r.req_per_s, r.p99_us, outcome_text(r).c_str(),
                         r.client_bound ? "  (client-bound)" : "");
            rows.push_back(r);
        }
        bool died = !server.alive();
        int code = server.stop(std::chrono::seconds(3));
        if (died || code != 0) {
            std::string why = died ? "the server died during the run"
                                   : "SIGTERM: exit status " + std::to_string(code);
            std::string err = server.stderr_text();
            if (!err.empty()) {
                why += ": " + err.substr(0, 200);
            }
            skipped.push_back({v.name, false, why});
        }
    }

    write_text_file(opt.out + "/results.json", results_json(info, rows, skipped));
    write_text_file(opt.out + "/results.csv", results_csv(rows));
    std::string table = results_table(rows, skipped);
    write_text_file(opt.out + "/results.txt", table);
    char load_title[160];
    std::snprintf(load_title, sizeof load_title, "%s, %zu-byte %s, %.1f s per point",
                  info.load.substr(0, info.load.find(',')).c_str(), opt.payload,
                  echo ? "echo" : "ECHO", opt.duration);
    std::string note = info.cpu_model + ", " + std::to_string(info.cores) + " cores; " + pin.text +
                       "; syscalls: " + info.syscalls.substr(0, info.syscalls.find(':'));
    write_charts(opt.out, load_title, note, rows);
    std::printf("%s", table.c_str());
    std::printf(
        "\nwrote %s/results.json, results.csv, results.txt and req_per_s.svg, p99.svg, "
        "cpu_per_req.svg, rss_per_conn.svg, syscalls_per_req.svg (%s)\n",
        opt.out.c_str(), format_seconds(static_cast<double>(now_ns() - started) / 1e9).c_str());
    if (stop_requested()) {
        std::fprintf(stderr, "iolab compare: interrupted; the results above are partial\n");
        return 130;
    }
    return 0;
}

}  // namespace iolab
