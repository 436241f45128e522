// iolab timeline, the run: start the variant with --trace (under strace where the trace misses
// threads), play the scene's clients from threads of our own, each stamping its sends and replies
// on CLOCK_MONOTONIC, stop the server, and hand both records to the chart.

#include "iolab/timeline.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "common/net.hpp"
#include "harness/process.hpp"
#include "iolab/commands.hpp"

namespace iolab {

using Clock = std::chrono::steady_clock;

Scene default_scene() {
    return scene_by_name("default");
}

std::vector<std::string> scene_names() {
    return {"default", "slow", "work", "ping"};
}

Scene scene_by_name(const std::string& name) {
    SceneClient slow{"slow", 0, {"ECHO sl", "owly, in ", "pieces\n"}, 40, 1};
    SceneClient work{"work", 20, {"WORK 200\n"}, 0, 1};
    SceneClient ping{"ping", 60, {"PING\n"}, 0, 1};
    if (name == "default") {
        return {name,
                "three clients: \"slow\" sends ECHO in three pieces 40 ms apart, \"work\" sends "
                "WORK 200 at 20 ms, \"ping\" sends PING at 60 ms",
                {slow, work, ping}};
    }
    if (name == "slow") {
        return {name, "one client, \"slow\", sends ECHO in three pieces 40 ms apart", {slow}};
    }
    if (name == "work") {
        ping.start_ms = 40;
        return {name,
                "\"work\" sends WORK 200 at 20 ms, \"ping\" sends PING at 40 ms, while it runs",
                {work, ping}};
    }
    if (name == "ping") {
        ping.start_ms = 0;
        return {name, "one client, \"ping\", sends PING", {ping}};
    }
    std::string choices;
    for (const std::string& n : scene_names()) {
        choices += (choices.empty() ? "" : ", ") + n;
    }
    throw std::invalid_argument("unknown scene '" + name + "' (choose " + choices + ")");
}

namespace {

using timeline::ClientEvent;
using timeline::ClientRecord;

int64_t mono_ns(Clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

// CLOCK_REALTIME minus CLOCK_MONOTONIC, from the closest of a few back-to-back readings: what
// moves strace's wall-clock stamps onto the trace's clock.
int64_t realtime_minus_mono() {
    int64_t best_gap = INT64_MAX, offset = 0;
    for (int i = 0; i < 8; ++i) {
        timespec r1{}, m{}, r2{};
        ::clock_gettime(CLOCK_REALTIME, &r1);
        ::clock_gettime(CLOCK_MONOTONIC, &m);
        ::clock_gettime(CLOCK_REALTIME, &r2);
        auto ns = [](const timespec& t) { return int64_t{t.tv_sec} * 1000000000 + t.tv_nsec; };
        int64_t gap = ns(r2) - ns(r1);
        if (gap < best_gap) {
            best_gap = gap;
            offset = (ns(r1) + ns(r2)) / 2 - ns(m);
        }
    }
    return offset;
}

// One client of the scene, on its own thread: blocking calls with a 5 s timeout each, stamped.
ClientRecord play(const SceneClient& sc, const std::string& host, uint16_t port,
                  Clock::time_point t0, std::string& error) {
    ClientRecord rec{sc.label, {}};
    auto at = [&](int ms) { std::this_thread::sleep_until(t0 + std::chrono::milliseconds(ms)); };
    at(sc.start_ms);
    ClientEvent connect{ClientEvent::Kind::connect, mono_ns(Clock::now()), 0, ""};
    Fd fd;
    try {
        fd = connect_tcp(host, port);
    } catch (const std::exception& e) {
        error = sc.label + ": " + e.what();
        return rec;
    }
    connect.end_ns = mono_ns(Clock::now());
    rec.events.push_back(connect);
    set_io_timeouts(fd.get(), 5.0);
    set_nodelay(fd.get());
    for (size_t i = 0; i < sc.pieces.size(); ++i) {
        at(sc.start_ms + static_cast<int>(i) * sc.gap_ms);
        ClientEvent send{ClientEvent::Kind::send, mono_ns(Clock::now()), 0, sc.pieces[i]};
        if (write_all(fd.get(), sc.pieces[i]) != 0) {
            error = sc.label + ": the server closed before the request was sent";
            return rec;
        }
        send.end_ns = mono_ns(Clock::now());
        rec.events.push_back(send);
    }
    std::string pending;
    for (int r = 0; r < sc.replies; ++r) {
        int64_t start = mono_ns(Clock::now());
        size_t nl;
        while ((nl = pending.find('\n')) == std::string::npos) {
            char buf[4096];
            ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
            if (n <= 0) {
                error = sc.label +
                        (n == 0 ? ": the server closed before its reply" : ": no reply within 5 s");
                return rec;
            }
            pending.append(buf, static_cast<size_t>(n));
        }
        rec.events.push_back(
            {ClientEvent::Kind::reply, start, mono_ns(Clock::now()), pending.substr(0, nl)});
        pending.erase(0, nl + 1);
    }
    ClientEvent close{ClientEvent::Kind::close, mono_ns(Clock::now()), 0, ""};
    fd.reset();
    close.end_ns = mono_ns(Clock::now());
    rec.events.push_back(close);
    return rec;
}

bool strace_installed() {
    return ::access("/usr/bin/strace", X_OK) == 0;
}

// The variants whose own trace misses threads or calls: glibc's AIO helpers, libevent's wait,
// Asio's reactor.
bool trace_misses_threads(const Variant& v) {
    return v.name == "07_aio" || v.name == "08_reactor_libevent" || v.name == "09_proactor_asio";
}

std::string read_file(const std::string& path) {
    std::ifstream in(path);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

int first_pid_of(const std::string& strace_text) {
    return std::atoi(strace_text.c_str());
}

std::string lane_list(const TimelineResult& r) {
    std::string out;
    for (const LaneSummary& l : r.lanes) {
        out += (out.empty() ? "" : ", ") + l.label + " [" + l.source + "]";
    }
    return out;
}

}  // namespace

TimelineResult draw_timeline(const Variant& v, const Scene& scene, const std::string& svg_path,
                             const TimelineOptions& opt) {
    TimelineResult result;
    result.svg_path = svg_path;
    bool use_strace =
        strace_installed() && (opt.strace == StraceUse::on ||
                               (opt.strace == StraceUse::automatic && trace_misses_threads(v)));
    std::vector<std::string> notes;
    if (opt.strace != StraceUse::off && trace_misses_threads(v) && !strace_installed()) {
        notes.push_back(
            "strace is not installed: threads and calls the program does not trace "
            "itself are missing from this chart.");
    }

    std::vector<std::string> extra{"--trace"};
    extra.insert(extra.end(), opt.server_args.begin(), opt.server_args.end());
    std::string strace_path =
        (std::filesystem::temp_directory_path() /
         ("iolab-timeline-" + std::to_string(::getpid()) + "-" + v.name + ".strace"))
            .string();
    ServerProcess server;
    if (use_strace) {
        Variant traced = v;
        traced.binary = "/usr/bin/strace";
        traced.args = {"-f", "-ttt", "-T", "-o", strace_path, v.binary};
        traced.args.insert(traced.args.end(), v.args.begin(), v.args.end());
        server = ServerProcess::start(traced, extra);
        if (!server.running() && server.state() != ServerProcess::State::cannot_run) {
            notes.push_back("strace could not run the server (" + server.reason() +
                            "), so this chart has the program's own trace only.");
            use_strace = false;
        }
    }
    if (!use_strace) {
        server = ServerProcess::start(v, extra);
    }
    if (!server.running()) {
        result.cannot_run = server.state() == ServerProcess::State::cannot_run;
        result.why = server.reason();
        std::filesystem::remove(strace_path);
        return result;
    }
    result.used_strace = use_strace;
    int64_t offset = realtime_minus_mono();

    // The scene: every client on its own thread, all timed from one start.
    Clock::time_point t0 = Clock::now() + std::chrono::milliseconds(30);
    std::vector<ClientRecord> records(scene.clients.size());
    std::vector<std::string> errors(scene.clients.size());
    {
        std::vector<std::thread> threads;
        for (size_t i = 0; i < scene.clients.size(); ++i) {
            threads.emplace_back([&, i] {
                records[i] = play(scene.clients[i], server.host(), server.port(), t0, errors[i]);
            });
        }
        for (std::thread& t : threads) {
            t.join();
        }
    }
    int64_t t1 = mono_ns(t0);
    for (const ClientRecord& r : records) {
        for (const ClientEvent& e : r.events) {
            t1 = std::max(t1, e.end_ns);
        }
    }
    // The server's last calls of the scene (the recv that sees the last client's EOF) are
    // written a moment after the client closed.
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    t1 += 3000000;
    if (use_strace) {
        server.stop_tracee();  // the server, not strace: strace would detach and leave it running
    } else {
        server.stop();
    }
    std::string trace_text = server.stderr_text();

    timeline::ChartInput in;
    in.calls = timeline::parse_trace(trace_text);
    in.server_pid = server.pid();
    if (use_strace) {
        std::string st = read_file(strace_path);
        in.server_pid = first_pid_of(st);
        std::vector<timeline::Call> more = timeline::parse_strace(st, offset);
        in.calls.insert(in.calls.end(), more.begin(), more.end());
    }
    std::filesystem::remove(strace_path);
    in.clients = records;
    in.processes = v.has("processes");
    in.helper_name = v.name == "07_aio" ? "glibc AIO helper" : "";
    in.t0_ns = mono_ns(t0);
    in.t1_ns = t1;
    in.title = v.name + ": who waits when";
    in.subtitle = "Scene: " + scene.description +
                  ". Server: " + std::filesystem::path(v.binary).filename().string() + " --trace" +
                  (use_strace ? ", under strace -f -ttt -T" : "") + ".";
    for (size_t i = 0; i < errors.size(); ++i) {
        if (!errors[i].empty()) {
            notes.push_back("Client " + errors[i] + ".");
        }
    }
    if (in.calls.empty()) {
        result.why = "the server wrote no trace lines with mono_ns= (is it built from this tree?)";
        return result;
    }

    timeline::Chart chart = timeline::build_chart(in);
    std::string sources =
        "Sources: lanes marked --trace come from the server's own trace lines; "
        "client lanes from iolab's client threads, on the same clock.";
    if (use_strace) {
        sources +=
            " Lanes marked strace come from strace -f -ttt -T, its wall-clock stamps moved "
            "onto CLOCK_MONOTONIC; strace's stops slow every call a little.";
    }
    chart.notes.insert(chart.notes.begin(), sources);
    chart.notes.insert(chart.notes.end(), notes.begin(), notes.end());
    timeline::summarize(chart, in, result);
    result.title = chart.title;

    std::filesystem::path out(svg_path);
    if (out.has_parent_path()) {
        std::filesystem::create_directories(out.parent_path());
    }
    std::ofstream file(svg_path);
    file << timeline::render_svg(chart);
    if (!file) {
        result.why = "cannot write " + svg_path;
        return result;
    }
    result.ok = true;
    return result;
}

namespace {

void print_result(const std::string& name, const TimelineResult& r) {
    if (!r.ok) {
        std::printf("%s: %s%s\n", name.c_str(),
                    r.cannot_run ? "cannot run here: " : "failed: ", r.why.c_str());
        return;
    }
    std::printf(
        "%s: %s\n  lanes: %s\n  %d requests answered, %ld traced syscalls (%.1f per "
        "request), longest read %.0f us%s\n",
        name.c_str(), r.svg_path.c_str(), lane_list(r).c_str(), r.requests, r.server_syscalls,
        r.syscalls_per_request, r.longest_read_us,
        r.blocked_in_read ? " (a thread blocked in a read)" : "");
    if (r.blocking_recv_wait_us) {
        std::printf(
            "  the blocking recv of the slow client's last piece: waited %.0f us, then "
            "%.0f us from the send to its return\n",
            *r.blocking_recv_wait_us, *r.blocking_recv_copy_us);
    }
}

}  // namespace

int run_timeline(const TimelineCommand& cmd) {
    Scene scene = scene_by_name(cmd.scene);
    TimelineOptions opt;
    opt.strace = cmd.strace == "on"    ? StraceUse::on
                 : cmd.strace == "off" ? StraceUse::off
                                       : StraceUse::automatic;
    std::vector<Variant> all = registry(self_dir());
    std::vector<Variant> chosen;
    if (cmd.all) {
        chosen = all;
    } else {
        for (const Variant& v : all) {
            if (v.name == cmd.variant) {
                chosen.push_back(v);
            }
        }
        if (chosen.empty()) {
            std::fprintf(stderr, "iolab timeline: no variant '%s' (see iolab list)\n",
                         cmd.variant.c_str());
            return 2;
        }
    }
    int failures = 0;
    int cannot_run = 0;
    for (const Variant& v : chosen) {
        std::string path =
            cmd.all || cmd.out.empty()
                ? (std::filesystem::path(cmd.out_dir) / ("timeline-" + v.name + ".svg")).string()
                : cmd.out;
        TimelineResult r = draw_timeline(v, scene, path, opt);
        print_result(v.name, r);
        std::fflush(stdout);
        failures += !r.ok && !r.cannot_run ? 1 : 0;
        cannot_run += r.cannot_run ? 1 : 0;
    }
    if (failures > 0) {
        return 1;
    }
    return !cmd.all && cannot_run > 0 ? 77 : 0;
}

}  // namespace iolab
