#include "iolab/lab.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "common/stop.hpp"
#include "harness/clients.hpp"

namespace iolab {

ServerProcess start_pinned(const Variant& v, const std::vector<std::string>& extra,
                           const Pinning& pin) {
    pin_to_server(pin);
    ServerProcess p = ServerProcess::start(v, extra);
    pin_to_load(pin);
    return p;
}

CountedServer start_counted(const Variant& v, const std::vector<std::string>& extra,
                            const Pinning& pin) {
    CountedServer s;
    // The counters are opened on a thread that does nothing else: fork(2) copies them into the
    // server, and every count the thread itself adds (the fork, the wait for the listening line,
    // its exit) comes before the first read of a load point. It runs on the server's CPUs, which
    // the child inherits, so this thread's own CPU stays the load generator's.
    std::thread starter([&] {
        pin_to_server(pin);
        s.counters = KernelCounters::open_on_this_thread();
        s.process = ServerProcess::start(v, extra);
    });
    starter.join();
    return s;
}

void record_counters(RunInfo& info, const KernelCounters& counters, const std::string& command) {
    std::string how =
        counters.ok()
            ? "kernel: perf_event_open counters on raw_syscalls:sys_enter and "
              "io_uring:io_uring_complete, inherited by every thread and process of each server"
            : "traced (the servers' own STATS syscalls=): the kernel refused: " + counters.why();
    if (info.syscalls.find(how) != std::string::npos) {
        return;
    }
    info.syscalls += (info.syscalls.empty() ? "" : "; ") + how;
    if (!counters.ok()) {
        std::fprintf(stderr, "%s: syscalls %s\n", command.c_str(), how.c_str());
    }
}

std::optional<std::map<std::string, std::string>> ask_stats(const std::string& host, uint16_t port,
                                                            std::chrono::milliseconds deadline) {
    try {
        Client c = Client::connect(port, host, deadline);
        std::string line = c.ask("STATS", deadline);
        if (line.rfind("model=", 0) != 0) {
            return std::nullopt;
        }
        std::map<std::string, std::string> kv;
        std::istringstream in(line);
        std::string word;
        while (in >> word) {
            size_t eq = word.find('=');
            if (eq != std::string::npos) {
                kv[word.substr(0, eq)] = word.substr(eq + 1);
            }
        }
        return kv;
    } catch (const std::exception&) {
        return std::nullopt;
    }
}

namespace {

double stat_number(const std::optional<std::map<std::string, std::string>>& kv,
                   const std::string& key) {
    if (!kv) {
        return -1;
    }
    auto it = kv->find(key);
    return it == kv->end() ? -1 : std::atof(it->second.c_str());
}

}  // namespace

PointResult measure_point(ServerProcess& server, const std::string& variant, const PointSpec& spec,
                          long pss_idle_kib, const std::function<bool(double)>& tick,
                          Histogram* latency, const KernelCounters* kernel) {
    PointResult r;
    r.variant = variant;
    r.conns = spec.conns;
    r.payload = spec.payload;
    r.mode = spec.rate > 0 ? "open" : "closed";
    r.shape = spec.connect_per_request ? "per-request" : "persistent";
    r.rate = spec.rate;
    r.duration_s = spec.duration_s;

    // Without the kernel's counters, the server's own: it counts every IO call it makes
    // (TRACE_IO) and reports the total in STATS, asked before and after the point.
    bool from_kernel = kernel != nullptr && kernel->ok();
    std::optional<std::map<std::string, std::string>> before;
    if (!from_kernel && spec.mode == Mode::qa) {
        before = ask_stats(server.host(), server.port(), std::chrono::seconds(5));
    }

    LoadSpec load;
    load.mode = spec.mode;
    load.payload = spec.payload;
    load.connect_per_request = spec.connect_per_request;
    LoadGen gen(load);
    size_t t = gen.add_target(server.host(), server.port(), spec.conns, spec.rate);
    gen.connect(std::chrono::seconds(10));

    bool go_on = true;
    int64_t next_tick = now_ns();
    auto keep_going = [&](double fraction) {
        return [&, fraction] {
            if (stop_requested()) {
                go_on = false;
            } else if (tick && now_ns() >= next_tick) {
                next_tick = now_ns() + 250000000;
                go_on = tick(fraction);
            }
            return go_on;
        };
    };
    gen.start();
    gen.run_until(now_ns() + static_cast<int64_t>(spec.warmup_s * 1e9), keep_going(0));
    // What ended connections before the window (a cap's refusals at connect time, say) still
    // belongs to this point's outcomes.
    TargetStats warm = gen.stats(t);
    gen.reset_stats();

    int open_at_start = gen.open_conns(t);
    // Every figure of the server is taken over its process tree (a forking server works in its
    // children; for the others the tree is the process alone).
    auto k0 = from_kernel ? kernel->read() : std::nullopt;
    bool counted = k0.has_value();
    KernelCounters::Counts c0 = k0.value_or(KernelCounters::Counts{});
    double cpu0 = tree_cpu_s(server.pid());
    CtxSwitches ctx0 = tree_ctx_switches(server.pid());
    double client0 = thread_cpu_s();
    int64_t t0 = now_ns();
    int64_t end = t0 + static_cast<int64_t>(spec.duration_s * 1e9);
    while (go_on && now_ns() < end) {
        double done = static_cast<double>(now_ns() - t0) / static_cast<double>(end - t0);
        gen.run_until(std::min(end, now_ns() + 250000000), keep_going(done));
    }
    int64_t t1 = now_ns();
    auto k1 = from_kernel ? kernel->read() : std::nullopt;
    counted = counted && k1.has_value();
    KernelCounters::Counts c1 = k1.value_or(KernelCounters::Counts{});
    double client1 = thread_cpu_s();
    auto proc1 = read_proc_stats(server.pid());
    int threads1 = tree_threads(server.pid());
    int processes1 = tree_processes(server.pid());
    long pss1 = tree_pss_kib(server.pid());
    double cpu1 = tree_cpu_s(server.pid());
    CtxSwitches ctx1 = tree_ctx_switches(server.pid());
    uint64_t completed = gen.stats(t).completed;
    uint64_t connects = gen.stats(t).connects;
    gen.finish(std::chrono::milliseconds(spec.grace_ms));
    gen.close_all();
    if (spec.connect_per_request) {
        r.time_wait = time_wait_sockets(server.port());
    }

    const TargetStats& s = gen.stats(t);
    if (latency != nullptr) {
        *latency = s.latency;
    }
    double elapsed = static_cast<double>(t1 - t0) / 1e9;
    r.requests = completed;
    r.req_per_s = elapsed > 0 ? static_cast<double>(completed) / elapsed : 0;
    if (s.latency.count() > 0) {
        r.p50_us = static_cast<double>(s.latency.percentile(0.50)) / 1000;
        r.p99_us = static_cast<double>(s.latency.percentile(0.99)) / 1000;
        r.p999_us = static_cast<double>(s.latency.percentile(0.999)) / 1000;
        r.max_us = static_cast<double>(s.latency.max()) / 1000;
    }
    if (completed > 0 && cpu0 >= 0 && cpu1 >= 0) {
        r.server_cpu_us_per_req = (cpu1 - cpu0) * 1e6 / static_cast<double>(completed);
    }
    if (elapsed > 0 && spec.connect_per_request) {
        r.accepts_per_s = static_cast<double>(connects) / elapsed;
    }
    if (proc1) {
        r.threads = threads1;
        r.processes = std::max(processes1, 1);
        r.rss_kib = proc1->rss_kib;
        r.pss_kib = pss1;
        // Memory per connection is the growth of the tree's PSS: for a forking server RSS would
        // count every page the children share with the parent once per child.
        if (spec.conns > 0 && pss1 > 0) {
            r.rss_per_conn_kib =
                std::max(0.0, static_cast<double>(pss1 - pss_idle_kib) / spec.conns);
        }
    }
    r.ctx_switches_voluntary = ctx1.voluntary - ctx0.voluntary;
    r.ctx_switches_involuntary = ctx1.involuntary - ctx0.involuntary;
    r.client_cpu_pct = elapsed > 0 ? 100 * (client1 - client0) / elapsed : 0;
    r.client_bound = r.client_cpu_pct >= 90;
    r.conns_connected = open_at_start;

    // The outcomes: the window's and grace's, plus the connections that ended before the window.
    r.answered = s.completed;
    r.unanswered = s.timeouts;
    r.refused = warm.refused + s.refused;
    r.wrong = warm.wrong + s.wrong;
    r.lost = warm.lost + s.lost;
    uint64_t gone_before = static_cast<uint64_t>(std::max(spec.conns - open_at_start, 0));
    uint64_t classified = warm.refused + warm.wrong + warm.lost;
    if (gone_before > classified) {
        r.lost += gone_before - classified;
    }
    r.errors = r.refused + r.wrong + r.lost + r.unanswered;
    r.not_sent = s.skipped;
    // The gravest of the two messages: a wrong byte, then a lost connection, then the rest.
    bool warm_graver = (warm.wrong > 0 && s.wrong == 0) ||
                       (warm.lost > 0 && s.wrong + s.lost == 0) || s.first_error.empty();
    r.first_error = warm_graver ? warm.first_error : s.first_error;
    if (r.first_error.empty() && open_at_start < spec.conns) {
        r.first_error = std::to_string(spec.conns - open_at_start) +
                        " connection(s) lost before the measurement started";
    }

    if (counted && completed > 0) {
        r.syscalls_source = "kernel";
        r.syscalls_per_req =
            static_cast<double>(c1.syscalls - c0.syscalls) / static_cast<double>(completed);
        if (c0.uring_completions >= 0 && c1.uring_completions >= 0) {
            r.uring_ops_per_req = static_cast<double>(c1.uring_completions - c0.uring_completions) /
                                  static_cast<double>(completed);
        }
    } else if (spec.mode == Mode::qa && before) {
        auto after = ask_stats(server.host(), server.port(), std::chrono::seconds(5));
        double calls = stat_number(after, "syscalls") - stat_number(before, "syscalls");
        double reqs = stat_number(after, "requests") - stat_number(before, "requests");
        if (after && stat_number(after, "syscalls") >= 0 && reqs > 0) {
            r.syscalls_source = "traced";
            r.syscalls_per_req = calls / reqs;
        }
    }
    return r;
}

std::vector<int> parse_int_list(const std::string& text, const std::string& option, int least) {
    std::vector<int> out;
    std::stringstream in(text);
    std::string word;
    while (std::getline(in, word, ',')) {
        size_t used = 0;
        int v = 0;
        try {
            v = std::stoi(word, &used);
        } catch (const std::exception&) {
            used = 0;
        }
        if (used != word.size() || v < least) {
            throw std::invalid_argument(option + ": not a number of at least " +
                                        std::to_string(least) + ": " + word);
        }
        out.push_back(v);
    }
    if (out.empty()) {
        throw std::invalid_argument(option + ": empty list");
    }
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
}

std::vector<Variant> select_variants(const std::vector<Variant>& all, const std::string& list) {
    if (list.empty()) {
        return all;
    }
    std::vector<Variant> out;
    std::stringstream in(list);
    std::string word;
    while (std::getline(in, word, ',')) {
        if (word.empty()) {
            continue;
        }
        bool exact = false;
        for (const Variant& v : all) {
            exact = exact || v.name == word;
        }
        size_t found = 0;
        for (const Variant& v : all) {
            bool match = exact ? v.name == word : v.name.rfind(word, 0) == 0;
            bool seen = std::any_of(out.begin(), out.end(),
                                    [&](const Variant& o) { return o.name == v.name; });
            if (match) {
                ++found;
                if (!seen) {
                    out.push_back(v);
                }
            }
        }
        if (found == 0) {
            throw std::invalid_argument("no variant named " + word + " (see iolab list)");
        }
    }
    return out;
}

std::string format_seconds(double s) {
    long whole = std::lround(std::max(0.0, s));
    if (whole >= 60) {
        char text[32];
        std::snprintf(text, sizeof text, "%ldm%02lds", whole / 60, whole % 60);
        return text;
    }
    return std::to_string(whole) + "s";
}

}  // namespace iolab
