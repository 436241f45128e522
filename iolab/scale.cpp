// iolab scale: how a model copes with many connections, two ways.
//
// iolab scale VARIANT (the memory sweep): for each point a fresh server gets N connections, each
// of which asks one PING so that the server has set up whatever it keeps per connection (a
// thread, a buffer, a pollfd slot); then the server's RSS per connection is read while they sit
// idle, and an open-loop load at a fixed rate spread over all N connections gives p99. A model
// with a cap (select's FD_SETSIZE, a thread limit) shows where it refuses and how.
//
// iolab scale VARIANTS --idle [LIST] (the idle sweep): what the connections a server holds but
// that say nothing cost each request of the ones that talk. For each idle count a fresh server
// of each variant, in turn, gets that many idle connections (one PING each, then silence) and
// then 100 active connections in a closed loop: server CPU, p99 and system calls per request.
// select(2) and poll(2) hand the kernel every descriptor on each call, and SIGIO's handler scans
// every connection, so their cost grows with the idle ones; epoll_wait(2) and an io_uring CQE
// report only what is ready.

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <optional>
#include <thread>

#include "common/stop.hpp"
#include "harness/scenarios.hpp"
#include "iolab/commands.hpp"
#include "iolab/lab.hpp"
#include "iolab/scale_chart.hpp"

namespace iolab {

namespace {

const Variant* named(const std::vector<Variant>& all, const std::string& name) {
    for (const Variant& v : all) {
        if (v.name == name) {
            return &v;
        }
    }
    return nullptr;
}

// The syscall figure of a window: the kernel's count where its counters are open, else the
// server's own STATS count (asked before and after).
struct SyscallWindow {
    const KernelCounters& kernel;
    std::optional<KernelCounters::Counts> k0;
    std::optional<std::map<std::string, std::string>> stats0;
    ServerProcess& server;

    void begin() {
        if (kernel.ok()) {
            k0 = kernel.read();
        } else {
            stats0 = ask_stats(server.host(), server.port(), std::chrono::seconds(5));
        }
    }
    void end(PointResult& r, uint64_t completed) {
        if (completed == 0) {
            return;
        }
        if (k0) {
            if (auto k1 = kernel.read()) {
                r.syscalls_source = "kernel";
                r.syscalls_per_req = static_cast<double>(k1->syscalls - k0->syscalls) /
                                     static_cast<double>(completed);
                if (k0->uring_completions >= 0 && k1->uring_completions >= 0) {
                    r.uring_ops_per_req =
                        static_cast<double>(k1->uring_completions - k0->uring_completions) /
                        static_cast<double>(completed);
                }
            }
        } else if (stats0) {
            auto stats1 = ask_stats(server.host(), server.port(), std::chrono::seconds(5));
            auto number = [](const auto& kv, const char* key) {
                auto it = kv->find(key);
                return it == kv->end() ? -1.0 : std::atof(it->second.c_str());
            };
            if (stats1 && number(stats0, "syscalls") >= 0 && number(stats1, "syscalls") >= 0) {
                r.syscalls_source = "traced";
                r.syscalls_per_req = (number(stats1, "syscalls") - number(stats0, "syscalls")) /
                                     static_cast<double>(completed);
            }
        }
    }
};

int memory_sweep(const Variant& v, const ScaleOptions& opt, const std::string& command_line) {
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
    std::printf("%s   %s; fd limit %ld\n", v.name.c_str(), pin.text.c_str(), limit);
    std::printf("%7s %9s %7s %9s %9s %8s %6s %9s %9s %9s %8s %8s %8s %6s %6s  %s\n", "conns",
                "connected", "served", "rss KiB", "KiB/conn", "threads", "fds", "req/s", "p99 us",
                "sysc/req", "answered", "refused", "no reply", "wrong", "lost", "first error");

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
        CountedServer counted = start_counted(v, {"--max-conns", std::to_string(n + 16)}, pin);
        ServerProcess& server = counted.process;
        record_counters(info, counted.counters, "iolab scale");
        if (!server.running()) {
            bool unavailable = server.state() == ServerProcess::State::cannot_run;
            std::printf("%s: %s: %s\n", v.name.c_str(), unavailable ? "unavailable here" : "FAILED",
                        server.reason().c_str());
            skipped.push_back({v.name, unavailable, server.reason()});
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
        uint64_t served = gen.ping_all(std::chrono::seconds(v.has("serial") ? 2 : 15));
        std::this_thread::sleep_for(std::chrono::milliseconds(300));
        auto held = read_proc_stats(server.pid());
        // What ended connections while they were set up (connect failed, ERR server full in
        // place of the PONG) belongs to the point's outcomes.
        TargetStats setup = gen.stats(t);

        PointResult r;
        r.variant = v.name;
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
        SyscallWindow calls{counted.counters, {}, {}, server};
        calls.begin();
        double cpu0 = tree_cpu_s(server.pid());
        CtxSwitches ctx0 = tree_ctx_switches(server.pid());
        double client0 = thread_cpu_s();
        int64_t t0 = now_ns();
        gen.run_until(t0 + static_cast<int64_t>(opt.duration * 1e9),
                      [] { return !stop_requested(); });
        double elapsed = static_cast<double>(now_ns() - t0) / 1e9;
        uint64_t completed = gen.stats(t).completed;
        calls.end(r, completed);
        double cpu1 = tree_cpu_s(server.pid());
        CtxSwitches ctx1 = tree_ctx_switches(server.pid());
        r.client_cpu_pct = 100 * (thread_cpu_s() - client0) / elapsed;
        r.client_bound = r.client_cpu_pct >= 90;
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
        r.answered = s.completed;
        r.unanswered = s.timeouts;
        r.refused = setup.refused + s.refused;
        r.wrong = setup.wrong + s.wrong;
        r.lost = setup.lost + s.lost;
        uint64_t never = static_cast<uint64_t>(std::max(n - connected, 0));
        if (never > setup.refused + setup.wrong + setup.lost) {
            r.lost += never - (setup.refused + setup.wrong + setup.lost);
        }
        r.errors = r.refused + r.wrong + r.lost + r.unanswered;
        r.first_error = !setup.first_error.empty() ? setup.first_error : s.first_error;
        r.not_sent = s.skipped;
        gen.close_all();
        int code = server.stop(std::chrono::seconds(5));
        if (code != 0) {
            skipped.push_back(
                {v.name, false,
                 "conns=" + std::to_string(n) + ": SIGTERM: exit status " + std::to_string(code)});
        }
        std::printf(
            "%7d %9d %7llu %9ld %9.2f %8d %6d %9.0f %9.0f %8.2f%s %8llu %8llu %8llu %6llu "
            "%6llu  %s\n",
            n, connected, (unsigned long long)served, r.rss_kib, r.rss_per_conn_kib, r.threads, fds,
            r.req_per_s, r.p99_us, r.syscalls_per_req, r.syscalls_source == "traced" ? "t" : " ",
            (unsigned long long)r.answered, (unsigned long long)r.refused,
            (unsigned long long)r.unanswered, (unsigned long long)r.wrong,
            (unsigned long long)r.lost, r.first_error.substr(0, 90).c_str());
        std::fflush(stdout);
        rows.push_back(r);
    }

    std::string base = opt.out + "/scale-" + v.name;
    write_text_file(base + ".json", results_json(info, rows, skipped));
    write_text_file(base + ".csv", results_csv(rows));
    std::vector<Series> mem = {{v.name, {}}}, p99 = {{v.name, {}}};
    for (const PointResult& r : rows) {
        mem[0].points.emplace_back(r.conns, r.rss_per_conn_kib);
        p99[0].points.emplace_back(r.conns, r.p99_us);
    }
    std::string note = v.name + ", open loop at " + std::to_string((long)opt.rate) + " req/s";
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

// One measurement of the idle sweep: the active connections' figures while `held` idle ones were
// open.
struct IdleRun {
    PointResult r;
    int held = 0;      // idle connections open when the active load started
    int held_end = 0;  // and when it had ended
    double idle_kib_per_conn = -1;
};

struct IdleOutcome {
    std::optional<IdleRun> run;  // nullopt: the server did not start
    std::string why;
    bool unavailable = false;  // exit 77: the model cannot run here
};

IdleOutcome idle_point(const Variant& v, int idle, const ScaleOptions& opt, const Pinning& pin,
                       RunInfo& info) {
    IdleOutcome out;
    CountedServer counted =
        start_counted(v,
                      {"--max-conns", std::to_string(opt.active + idle + 16), "--max-line",
                       std::to_string(std::max<size_t>(4096, opt.payload + 16))},
                      pin);
    ServerProcess& server = counted.process;
    record_counters(info, counted.counters, "iolab scale");
    if (!server.running()) {
        out.unavailable = server.state() == ServerProcess::State::cannot_run;
        out.why = server.reason();
        return out;
    }
    // What the server sets up on first use (buffer rings, a pool's stacks) is not charged to the
    // idle connections.
    ask_stats(server.host(), server.port(), std::chrono::seconds(2));
    long pss0 = tree_pss_kib(server.pid());

    // The idle connections: each asks one PING, so that the server has armed whatever it keeps
    // per connection (a read in flight, a slot in its set), and then says nothing. This loop is
    // not run again until the point ends: their sockets only sit in the server's sets.
    LoadSpec quiet;
    quiet.payload = 0;
    LoadGen idle_gen(quiet);
    size_t t = 0;
    IdleRun run;
    if (idle > 0) {
        t = idle_gen.add_target(server.host(), server.port(), idle, 0);
        idle_gen.connect(std::chrono::seconds(60));
        idle_gen.ping_all(std::chrono::seconds(30));
        run.held = idle_gen.open_conns(t);
    }
    long pss1 = tree_pss_kib(server.pid());
    if (idle > 0 && pss0 > 0 && pss1 > 0) {
        run.idle_kib_per_conn = std::max(0.0, static_cast<double>(pss1 - pss0) / idle);
    }

    PointSpec spec;
    spec.conns = opt.active;
    spec.payload = opt.payload;
    spec.duration_s = opt.duration;
    spec.warmup_s = opt.warmup;
    run.r = measure_point(server, v.name, spec, pss1, {}, nullptr, &counted.counters);
    if (idle > 0) {
        // Whatever the server did to the idle connections meanwhile (closed them, refused them
        // late) is read now.
        idle_gen.run_until(now_ns() + 50000000);
        run.held_end = idle_gen.open_conns(t);
        const TargetStats& s = idle_gen.stats(t);
        if (run.held < idle && run.r.first_error.empty()) {
            run.r.first_error = "idle connections: " + s.first_error;
        }
    }
    idle_gen.close_all();
    bool died = !server.alive();
    int code = server.stop(std::chrono::seconds(5));
    if (died || code != 0) {
        std::string why = died ? "the server died during the point"
                               : "SIGTERM: exit status " + std::to_string(code);
        run.r.first_error = why + (run.r.first_error.empty() ? "" : "; " + run.r.first_error);
    }
    out.run = run;
    return out;
}

double median(std::vector<double> v) {
    v.erase(std::remove_if(v.begin(), v.end(), [](double x) { return x < 0; }), v.end());
    if (v.empty()) {
        return -1;
    }
    std::sort(v.begin(), v.end());
    size_t m = v.size() / 2;
    return v.size() % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

// A CSV field: quoted when it holds a comma, a quote or a line break.
std::string csv_field(const std::string& s) {
    if (s.find_first_of(",\"\n") == std::string::npos) {
        return s;
    }
    std::string out = "\"";
    for (char c : s) {
        out += c == '"' ? std::string("\"\"") : std::string(1, c == '\n' ? ' ' : c);
    }
    return out + "\"";
}

std::string csv_number(double v, int decimals = 3) {
    if (v < 0) {
        return "";
    }
    char text[40];
    std::snprintf(text, sizeof text, "%.*f", decimals, v);
    return text;
}

nlohmann::json json_number(double v) {
    if (v < 0) {
        return nullptr;
    }
    return std::round(v * 1000) / 1000;
}

// What the sweep found at one variant and idle count, over its rounds.
struct IdleFigure {
    GrowthPoint g;
    double req_per_s = -1;
    double cpu_vs_none = -1;
    double uring_ops_per_req = -1;
    double idle_kib_per_conn = -1;
    int held_end = 0;
    uint64_t answered = 0, refused = 0, unanswered = 0, wrong = 0, lost = 0;
    std::string first_error;
    std::vector<size_t> rows;  // indices in the results
};

void print_block(const char* title, const std::vector<std::string>& names,
                 const std::vector<int>& idle, const std::map<std::string, size_t>& width_of,
                 const std::function<std::string(const std::string&, int)>& cell) {
    std::printf("\n%s\n%-*s", title, static_cast<int>(width_of.at("")), "variant");
    for (int n : idle) {
        std::printf(" %13s", ("idle " + std::to_string(n)).c_str());
    }
    std::printf("\n");
    for (const std::string& v : names) {
        std::printf("%-*s", static_cast<int>(width_of.at("")), v.c_str());
        for (int n : idle) {
            std::printf(" %13s", cell(v, n).c_str());
        }
        std::printf("\n");
    }
}

int run_idle_sweep(const std::vector<Variant>& variants, const ScaleOptions& opt,
                   const std::string& command_line) {
    std::vector<int> idle = parse_int_list(opt.idle, "--idle", 0);
    // Every idle connection is a descriptor in this process and one in the server, which
    // inherits the raised limit through fork and exec.
    long limit = raise_fd_limit();
    Pinning pin = plan_pinning();
    RunInfo info = describe_machine();
    info.command = command_line;
    info.pinning = pin.text;
    std::string counts;
    for (int n : idle) {
        counts += (counts.empty() ? "" : ", ") + std::to_string(n);
    }
    char load[400];
    std::snprintf(load, sizeof load,
                  "idle sweep: %d active connections in a closed loop, %zu-byte ECHO, %.1f s "
                  "measured after %.1f s of warm-up, while %s idle connections (one PING each, "
                  "then silent) are held; a fresh server per point, the variants in turn at each "
                  "point, %d round(s); fd limit %ld",
                  opt.active, opt.payload, opt.duration, opt.warmup, counts.c_str(), opt.rounds,
                  limit);
    info.load = load;
    size_t total = static_cast<size_t>(opt.rounds) * idle.size() * variants.size();
    std::fprintf(stderr, "iolab scale --idle: %zu variants x %zu idle counts x %d round(s); %s\n",
                 variants.size(), idle.size(), opt.rounds, pin.text.c_str());

    using Key = std::pair<std::string, int>;
    std::map<Key, std::vector<size_t>> runs;  // -> indices in rows
    std::map<Key, std::string> missing;
    std::vector<PointResult> rows;
    std::vector<IdleRun> details;
    std::vector<Skipped> skipped;
    std::map<std::string, std::string> gone;  // variant -> why it did not start
    size_t done = 0;
    for (int round = 0; round < opt.rounds && !stop_requested(); ++round) {
        for (size_t pi = 0; pi < idle.size() && !stop_requested(); ++pi) {
            int n = idle[pi];
            // The variants take turns at each point, the order reversed from one point to the
            // next, so that no variant always runs first on a machine whose speed drifts.
            std::vector<const Variant*> order;
            for (const Variant& v : variants) {
                order.push_back(&v);
            }
            if ((pi + static_cast<size_t>(round)) % 2 == 1) {
                std::reverse(order.begin(), order.end());
            }
            for (const Variant* v : order) {
                if (stop_requested()) {
                    break;
                }
                ++done;
                Key key{v->name, n};
                Cap cap = documented_cap(*v);
                if (gone.count(v->name)) {
                    missing[key] = gone[v->name];
                    continue;
                }
                if (cap.conns > 0 && opt.active + n > cap.conns) {
                    missing[key] = cap.why + "; the point needs " + std::to_string(opt.active + n) +
                                   " connections";
                    continue;
                }
                if (n + opt.active + 64 > limit) {
                    missing[key] = "RLIMIT_NOFILE is " + std::to_string(limit);
                    continue;
                }
                std::fprintf(stderr, "[%zu/%zu] %-24s idle=%-6d", done, total, v->name.c_str(), n);
                std::fflush(stderr);
                IdleOutcome o = idle_point(*v, n, opt, pin, info);
                if (!o.run) {
                    std::string why =
                        (o.unavailable ? "unavailable here: " : "did not start: ") + o.why;
                    std::fprintf(stderr, " %s\n", why.c_str());
                    gone[v->name] = why.substr(0, 120);
                    missing[key] = gone[v->name];
                    skipped.push_back({v->name, o.unavailable, o.why});
                    continue;
                }
                const PointResult& r = o.run->r;
                std::fprintf(
                    stderr,
                    " held %-6d %8.0f req/s  %6.2f us/req  %6.2f syscalls/req%s  p99 "
                    "%7.0f us%s\n",
                    o.run->held, r.req_per_s, r.server_cpu_us_per_req, r.syscalls_per_req,
                    r.syscalls_source == "traced" ? " (traced)" : "", r.p99_us,
                    r.errors > 0 ? ("  failures " + std::to_string(r.errors)).c_str() : "");
                runs[key].push_back(rows.size());
                rows.push_back(r);
                details.push_back(*o.run);
            }
        }
    }

    // Each variant and idle count: the median of its rounds, or why it has no figures.
    std::vector<std::string> names;
    for (const Variant& v : variants) {
        names.push_back(v.name);
    }
    std::map<Key, IdleFigure> figures;
    for (const std::string& v : names) {
        for (int n : idle) {
            Key key{v, n};
            IdleFigure& f = figures[key];
            f.g.variant = v;
            f.g.idle = n;
            auto it = runs.find(key);
            if (it == runs.end()) {
                f.g.missing = missing.count(key) ? missing[key] : "not run (interrupted)";
                continue;
            }
            f.rows = it->second;
            f.g.measured = true;
            f.g.held = n;
            f.held_end = n;
            std::vector<double> cpu, p99, calls, rate, uring, kib;
            for (size_t i : f.rows) {
                const PointResult& r = rows[i];
                cpu.push_back(r.server_cpu_us_per_req);
                p99.push_back(r.p99_us);
                calls.push_back(r.syscalls_per_req);
                rate.push_back(r.req_per_s);
                uring.push_back(r.uring_ops_per_req);
                kib.push_back(details[i].idle_kib_per_conn);
                f.g.held = std::min(f.g.held, n > 0 ? details[i].held : 0);
                f.held_end = std::min(f.held_end, n > 0 ? details[i].held_end : 0);
                f.g.syscalls_source = r.syscalls_source;
                f.answered += r.answered;
                f.refused += r.refused;
                f.unanswered += r.unanswered;
                f.wrong += r.wrong;
                f.lost += r.lost;
                if (f.first_error.empty()) {
                    f.first_error = r.first_error;
                }
            }
            f.g.cpu_us_per_req = median(cpu);
            f.g.p99_us = median(p99);
            f.g.syscalls_per_req = median(calls);
            f.req_per_s = median(rate);
            f.uring_ops_per_req = median(uring);
            f.idle_kib_per_conn = median(kib);
            f.g.held = std::min(f.g.held, f.held_end);
            f.g.failures = f.refused + f.unanswered + f.wrong + f.lost;
        }
        double base = figures[{v, idle.front()}].g.cpu_us_per_req;
        for (int n : idle) {
            IdleFigure& f = figures[{v, n}];
            if (idle.front() == 0 && base > 0 && f.g.cpu_us_per_req > 0) {
                f.cpu_vs_none = f.g.cpu_us_per_req / base;
            }
        }
    }

    std::map<std::string, size_t> width_of{{"", 8}};
    for (const std::string& v : names) {
        width_of[""] = std::max(width_of[""], v.size() + 1);
    }
    auto figure = [&](const std::string& v, int n, double value, const char* format) {
        const IdleFigure& f = figures[{v, n}];
        if (!f.g.measured) {
            return std::string("-");
        }
        char text[40];
        std::snprintf(text, sizeof text, format, value);
        return std::string(text) + (f.g.failures > 0 ? "!" : "");
    };
    char title[200];
    std::snprintf(title, sizeof title,
                  "Server CPU per request (us), %d active closed-loop connections, by idle "
                  "connections held",
                  opt.active);
    print_block(title, names, idle, width_of, [&](const std::string& v, int n) {
        const IdleFigure& f = figures[{v, n}];
        std::string text = figure(v, n, f.g.cpu_us_per_req, "%.2f");
        if (f.cpu_vs_none > 0 && n > 0) {
            char ratio[20];
            std::snprintf(ratio, sizeof ratio, " (%.2fx)", f.cpu_vs_none);
            text += ratio;
        }
        return text;
    });
    print_block("System calls per request (t: traced, the kernel refused its counter)", names, idle,
                width_of, [&](const std::string& v, int n) {
                    const IdleFigure& f = figures[{v, n}];
                    return figure(v, n, f.g.syscalls_per_req, "%.2f") +
                           (f.g.syscalls_source == "traced" ? "t" : "");
                });
    print_block("p99 latency (us)", names, idle, width_of, [&](const std::string& v, int n) {
        return figure(v, n, figures[{v, n}].g.p99_us, "%.0f");
    });
    print_block("Requests per second", names, idle, width_of, [&](const std::string& v, int n) {
        return figure(v, n, figures[{v, n}].req_per_s, "%.0f");
    });
    std::printf("\n");
    for (const std::string& v : names) {
        std::string said;
        for (int n : idle) {
            const IdleFigure& f = figures[{v, n}];
            if (!f.g.measured && f.g.missing != said) {
                std::printf("%s: no figures from idle %d on: %s\n", v.c_str(), n,
                            f.g.missing.c_str());
                said = f.g.missing;
            } else if (f.g.measured && f.g.failures > 0) {
                std::printf(
                    "%s, idle %d (!): refused %llu, no reply %llu, wrong %llu, lost %llu: %s\n",
                    v.c_str(), n, (unsigned long long)f.refused, (unsigned long long)f.unanswered,
                    (unsigned long long)f.wrong, (unsigned long long)f.lost,
                    f.first_error.substr(0, 100).c_str());
            } else if (f.g.measured && f.g.held < n) {
                std::printf("%s, idle %d: only %d idle connections stayed open\n", v.c_str(), n,
                            f.g.held);
            }
        }
    }

    nlohmann::json points = nlohmann::json::array();
    std::string csv =
        "variant,idle,measured,missing,idle_held,active,req_per_s,server_cpu_us_per_req,"
        "cpu_vs_none,p99_us,syscalls_per_req,syscalls_source,uring_ops_per_req,"
        "idle_pss_kib_per_conn,answered,refused,unanswered,wrong,lost,errors,first_error\n";
    for (const std::string& v : names) {
        for (int n : idle) {
            const IdleFigure& f = figures[{v, n}];
            const GrowthPoint& g = f.g;
            points.push_back({
                {"variant", v},
                {"idle", n},
                {"measured", g.measured},
                {"missing", g.measured ? nlohmann::json(nullptr) : nlohmann::json(g.missing)},
                {"idle_held", g.measured ? nlohmann::json(g.held) : nlohmann::json(nullptr)},
                {"active", opt.active},
                {"req_per_s", json_number(f.req_per_s)},
                {"server_cpu_us_per_req", json_number(g.cpu_us_per_req)},
                {"cpu_vs_none", json_number(f.cpu_vs_none)},
                {"p99_us", json_number(g.p99_us)},
                {"syscalls_per_req", json_number(g.syscalls_per_req)},
                {"syscalls_source", g.syscalls_source.empty() ? nlohmann::json(nullptr)
                                                              : nlohmann::json(g.syscalls_source)},
                {"uring_ops_per_req", json_number(f.uring_ops_per_req)},
                {"idle_pss_kib_per_conn", json_number(f.idle_kib_per_conn)},
                {"answered", f.answered},
                {"refused", f.refused},
                {"unanswered", f.unanswered},
                {"wrong", f.wrong},
                {"lost", f.lost},
                {"errors", g.failures},
                {"first_error", f.first_error},
                {"rows", f.rows},
            });
            csv +=
                csv_field(v) + "," + std::to_string(n) + "," + (g.measured ? "1" : "0") + "," +
                csv_field(g.missing) + "," + (g.measured ? std::to_string(g.held) : "") + "," +
                std::to_string(opt.active) + "," + csv_number(f.req_per_s, 0) + "," +
                csv_number(g.cpu_us_per_req) + "," + csv_number(f.cpu_vs_none) + "," +
                csv_number(g.p99_us, 0) + "," + csv_number(g.syscalls_per_req) + "," +
                g.syscalls_source + "," + csv_number(f.uring_ops_per_req) + "," +
                csv_number(f.idle_kib_per_conn) + "," +
                (g.measured ? std::to_string(f.answered) + "," + std::to_string(f.refused) + "," +
                                  std::to_string(f.unanswered) + "," + std::to_string(f.wrong) +
                                  "," + std::to_string(f.lost) + "," + std::to_string(g.failures)
                            : std::string(",,,,,")) +
                "," + csv_field(f.first_error) + "\n";
        }
    }
    nlohmann::json sweep = {{"active", opt.active},
                            {"idle", idle},
                            {"rounds", opt.rounds},
                            {"payload", opt.payload},
                            {"points", points}};
    std::string base = opt.out + "/scale-idle";
    write_text_file(base + ".json",
                    results_json(info, rows, skipped, "\"idle_sweep\": " + sweep.dump(2)));
    write_text_file(base + ".csv", csv);

    GrowthChart chart;
    char chart_title[200];
    std::snprintf(chart_title, sizeof chart_title,
                  "Cost of idle connections: %d active in a closed loop, %zu-byte ECHO, %.1f s per "
                  "point%s",
                  opt.active, opt.payload, opt.duration,
                  opt.rounds > 1 ? (", median of " + std::to_string(opt.rounds)).c_str() : "");
    chart.title = chart_title;
    chart.note = info.cpu_model + ", " + std::to_string(info.cores) + " cores; " + pin.text +
                 "; syscalls: " + info.syscalls.substr(0, info.syscalls.find(':'));
    chart.variants = names;
    chart.idle = idle;
    for (const auto& [key, f] : figures) {
        chart.points.push_back(f.g);
    }
    write_text_file(base + ".svg", growth_svg(chart));
    std::printf("\nwrote %s.json, %s.csv and %s.svg\n", base.c_str(), base.c_str(), base.c_str());
    if (stop_requested()) {
        std::fprintf(stderr, "iolab scale: interrupted; the results above are partial\n");
        return 130;
    }
    return 0;
}

}  // namespace

int run_scale(const ScaleOptions& opt, const std::string& command_line) {
    std::vector<Variant> all = registry(self_dir());
    if (opt.idle_sweep) {
        std::string list = opt.variant;
        if (!opt.models.empty()) {
            list += (list.empty() ? "" : ",") + opt.models;
        }
        if (list.empty()) {
            std::fprintf(stderr, "iolab scale --idle: name the variants (VARIANT or --models)\n");
            return 2;
        }
        return run_idle_sweep(select_variants(all, list), opt, command_line);
    }
    const Variant* v = named(all, opt.variant);
    if (v == nullptr || !opt.models.empty()) {
        std::fprintf(stderr, "iolab scale: %s (see iolab list); several variants need --idle\n",
                     v == nullptr ? ("no variant named " + opt.variant).c_str()
                                  : "--models is for the idle sweep");
        return 2;
    }
    return memory_sweep(*v, opt, command_line);
}

}  // namespace iolab
