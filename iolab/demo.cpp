// iolab demo: for the classroom. Every server on its default port (9000 + model number; the
// other variants of a model on any free port), the same light open-loop load at each, and a live
// table redrawn every second. With --stall one more connection per server sends WORK in a loop:
// a single-loop server stops answering everyone else while it works, a threaded one does not.
// Ctrl-C (or --seconds) stops the load and every server, and says how each one exited.

#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <sstream>

#include "common/stop.hpp"
#include "iolab/commands.hpp"
#include "iolab/lab.hpp"

namespace iolab {

namespace {

struct DemoServer {
    Variant variant;
    ServerProcess process;
    std::string note;  // "unavailable: ...", "failed: ...", "default port busy"
    size_t target = 0;
    double cpu_s = 0;
};

// "05_epoll" -> 5; the model number is the name's first two digits.
int model_number(const std::string& name) {
    return name.size() >= 2 && std::isdigit(static_cast<unsigned char>(name[0])) &&
                   std::isdigit(static_cast<unsigned char>(name[1]))
               ? (name[0] - '0') * 10 + (name[1] - '0')
               : 0;
}

}  // namespace

int run_demo(const DemoOptions& opt) {
    std::vector<Variant> variants = select_variants(registry(self_dir()), opt.models);
    raise_fd_limit();

    // The first variant of each model (the shortest name) gets the contract's default port, so
    // that `nc 127.0.0.1 9005` reaches 05_epoll; the other variants take any free port.
    std::vector<std::unique_ptr<DemoServer>> servers;
    std::vector<bool> port_taken(100, false);
    for (const Variant& v : variants) {
        auto s = std::make_unique<DemoServer>();
        s->variant = v;
        int model = model_number(v.name);
        bool base = model > 0 && !port_taken[static_cast<size_t>(model)];
        if (base) {
            port_taken[static_cast<size_t>(model)] = true;
            s->process = ServerProcess::start(v, {"--port", std::to_string(9000 + model)});
            if (s->process.state() == ServerProcess::State::failed) {
                s->process = ServerProcess::start(v, {});
                s->note = "default port busy";
            }
        } else {
            s->process = ServerProcess::start(v, {});
        }
        if (s->process.state() == ServerProcess::State::cannot_run) {
            s->note = "unavailable: " + s->process.reason();
        } else if (!s->process.running()) {
            s->note = "FAILED: " + s->process.reason();
        }
        servers.push_back(std::move(s));
    }

    LoadSpec spec;
    LoadGen gen(spec);
    for (auto& s : servers) {
        if (s->process.running()) {
            s->target = gen.add_target(s->process.host(), s->process.port(), opt.conns, opt.rate,
                                       opt.stall ? 1 : 0, opt.stall_ms);
            s->cpu_s = process_cpu_s(s->process.pid());
        }
    }
    gen.connect(std::chrono::seconds(10));
    gen.reset_stats();
    gen.start();

    bool tty = ::isatty(STDOUT_FILENO);
    if (tty) {
        std::printf("\x1b[2J");
    }
    int64_t started = now_ns();
    int64_t last = started;
    while (!stop_requested()) {
        int64_t next = last + 1000000000;
        gen.run_until(next, [] { return !stop_requested(); });
        if (stop_requested()) {
            break;
        }
        int64_t now = now_ns();
        double dt = static_cast<double>(now - last) / 1e9;
        last = now;

        // The table fits the terminal: without the port and waiting columns below 90 columns,
        // without the legend when the window is too short, and no line longer than the width.
        winsize ws{};
        int width = 200, height = 1000;
        if (tty && ::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) {
            width = ws.ws_col;
            height = ws.ws_row;
        }
        bool wide = width >= 90;
        std::ostringstream o;
        char line[512];
        std::snprintf(line, sizeof line,
                      "iolab demo  %zu servers, %d conns and %.0f req/s each%s   %.0f s",
                      servers.size(), opt.conns, opt.rate,
                      opt.stall ? (", --stall WORK " + std::to_string(opt.stall_ms)).c_str() : "",
                      static_cast<double>(now - started) / 1e9);
        o << line << "\n\n";
        if (wide) {
            std::snprintf(line, sizeof line, "%-23s %5s %5s %6s %7s %6s %6s %4s %5s %5s  %s",
                          "variant", "port", "conns", "req/s", "p99 ms", "wait", "oldest", "thr",
                          "CPU%", "RSS M", "status");
        } else {
            std::snprintf(line, sizeof line, "%-23s %5s %6s %7s %6s %4s %5s %5s  %s", "variant",
                          "conns", "req/s", "p99 ms", "oldest", "thr", "CPU%", "RSS M", "status");
        }
        o << line << "\n";
        for (auto& s : servers) {
            if (!s->process.running()) {
                std::snprintf(line, sizeof line, "%-23s  %s", s->variant.name.c_str(),
                              s->note.c_str());
                o << line << "\n";
                continue;
            }
            TargetStats& st = gen.stats(s->target);
            double rps = static_cast<double>(st.completed) / dt;
            double p99 = static_cast<double>(st.latency.percentile(0.99)) / 1e6;
            uint64_t waiting = gen.outstanding(s->target);
            double oldest_ms = static_cast<double>(gen.oldest_waiting_ns(s->target, now)) / 1e6;
            char p99_text[32] = "-";
            if (st.latency.count() > 0) {
                std::snprintf(p99_text, sizeof p99_text, "%.1f", p99);
            }
            auto ps = read_proc_stats(s->process.pid());
            double cpu = process_cpu_s(s->process.pid());
            double cpu_pct = cpu >= 0 ? 100 * (cpu - s->cpu_s) / dt : 0;
            s->cpu_s = cpu;
            std::string status = "ok";
            if (!s->process.alive()) {
                status = "DIED";
            } else if (oldest_ms > 200 || p99 > 200) {
                status = "STALLED";
            }
            if (!st.first_error.empty()) {
                status += " (" + st.first_error + ")";
            }
            if (!s->note.empty()) {
                status += " [" + s->note + "]";
            }
            int threads = ps ? ps->threads : 0;
            double rss_mib = ps ? static_cast<double>(ps->rss_kib) / 1024 : 0;
            if (wide) {
                std::snprintf(line, sizeof line,
                              "%-23s %5u %5d %6.0f %7s %6llu %6.0f %4d %5.1f %5.1f  %s",
                              s->variant.name.c_str(), s->process.port(), gen.open_conns(s->target),
                              rps, p99_text, (unsigned long long)waiting, oldest_ms, threads,
                              cpu_pct, rss_mib, status.c_str());
            } else {
                std::snprintf(line, sizeof line, "%-23s %5d %6.0f %7s %6.0f %4d %5.1f %5.1f  %s",
                              s->variant.name.c_str(), gen.open_conns(s->target), rps, p99_text,
                              oldest_ms, threads, cpu_pct, rss_mib, status.c_str());
            }
            o << line << "\n";
        }
        if (static_cast<int>(servers.size()) + 8 <= height) {
            o << "\nreq/s, p99: replies in the last second, latency from when each was due.\n"
                 "wait: requests not answered yet (with --stall, the WORK too); oldest: how long\n"
                 "the oldest has waited (ms); STALLED: over 200 ms.   nc 127.0.0.1 PORT talks to "
                 "one.\nCtrl-C stops the load and every server.\n";
        }
        gen.reset_stats();
        std::string frame = o.str();
        if (tty) {
            // Home the cursor and overwrite, clearing each line's tail and what is below.
            std::string redraw = "\x1b[H";
            std::istringstream lines(frame);
            std::string l;
            while (std::getline(lines, l)) {
                redraw += l.substr(0, static_cast<size_t>(width - 1)) + "\x1b[K\n";
            }
            std::fputs((redraw + "\x1b[J").c_str(), stdout);
        } else {
            std::fputs((frame + "\n").c_str(), stdout);
        }
        std::fflush(stdout);
        if (opt.seconds > 0 && static_cast<double>(now - started) / 1e9 >= opt.seconds) {
            break;
        }
    }

    gen.close_all();
    std::printf("\nstopping: SIGTERM to every server\n");
    int bad = 0;
    for (auto& s : servers) {
        if (s->process.pid() <= 0 || s->process.state() != ServerProcess::State::running) {
            continue;
        }
        int code = s->process.stop(std::chrono::seconds(3));
        if (code != 0) {
            ++bad;
            std::printf("  %s: exit status %d\n", s->variant.name.c_str(), code);
        }
    }
    std::printf("%s\n", bad == 0 ? "every server exited 0" : "some servers did not exit 0");
    return bad == 0 ? 0 : 1;
}

}  // namespace iolab
