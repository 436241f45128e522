// iolab timeline: one variant under a small scripted scene, traced, drawn as an SVG swimlane
// chart of who waits when. The server runs with --trace (every line carries mono_ns= and tid=,
// README.md "Trace lines"); the scene's clients are threads of iolab that stamp every send and
// every reply with the same clock, CLOCK_MONOTONIC, so a client's send and the server's receive
// line up on one axis. Where the program does not trace a thread itself (glibc's AIO helper
// threads, the internals of Asio and libevent), `strace -f -ttt -T` is a second source and the
// chart names the source of every lane.
//
// draw_timeline() is the whole command; the pieces below it (the parsers, the chart model and the
// SVG) are exposed for the unit tests, which feed them recorded trace text.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "harness/registry.hpp"

namespace iolab {

// One client of a scene: it connects at `start_ms` after the scene starts, sends `pieces` one
// after another `gap_ms` apart (a piece may end mid-line: a slow client), and reads `replies`
// reply lines before it closes.
struct SceneClient {
    std::string label;  // the lane's name: "slow", "work", "ping"
    int start_ms = 0;
    std::vector<std::string> pieces;
    int gap_ms = 0;
    int replies = 1;
};

struct Scene {
    std::string name;         // what --scene takes: "default", "slow", "work", "ping"
    std::string description;  // the chart's subtitle, in words
    std::vector<SceneClient> clients;
};

// The default scene: three clients; one sends its request slowly in pieces, one sends WORK 200,
// one pings.
Scene default_scene();
// Every scene --scene accepts, by name; throws std::invalid_argument naming the choices.
Scene scene_by_name(const std::string& name);
std::vector<std::string> scene_names();

enum class StraceUse { automatic, on, off };

struct TimelineOptions {
    StraceUse strace = StraceUse::automatic;  // automatic: only where the trace misses threads
    std::vector<std::string> server_args;     // extra arguments for the server
};

// What one lane of the chart holds, summed (microseconds).
struct LaneSummary {
    std::string label;   // "main thread", "thread 2", "AIO helper 1", "client slow"
    std::string source;  // "--trace", "strace", "client", "inferred"
    bool client = false;
    double wait_us = 0;     // phase 1 asleep: blocked waiting for readiness or completion
    double polling_us = 0;  // phase 1 awake: calls that answered EAGAIN / EINPROGRESS
    double copy_us = 0;     // phase 2: a recv/send/read/write moving bytes
    double handler_us = 0;  // running a handler (WORK)
    double other_us = 0;    // every other call (accept, epoll_ctl, submissions)
    int calls = 0;
};

struct TimelineResult {
    bool ok = false;
    bool cannot_run = false;  // the server exited 77: the model is refused on this machine
    std::string why;          // when !ok
    std::string svg_path;
    std::string title;
    std::vector<LaneSummary> lanes;  // top to bottom, server lanes first

    int requests = 0;  // requests of the scene whose reply arrived
    // Traced system calls of the server (its own --trace lines that are system calls, not
    // completions it reaps) from the scene's start to its end, and per answered request.
    long server_syscalls = 0;
    double syscalls_per_request = 0;
    // The longest single call on any server lane that reads a socket (recv, read, recvfrom...),
    // and whether a thread was blocked in one (longer than 1 ms): the blocking models' phase 1.
    double longest_read_us = 0;
    bool blocked_in_read = false;
    // The blocking recv that received the slow client's last piece (01_blocking, 02, helpers):
    // how long it waited before the client sent (phase 1) and how long from that send until the
    // call returned with the bytes (phase 2: wake-up and copy). Absent when no single call held
    // both phases.
    std::optional<double> blocking_recv_wait_us;
    std::optional<double> blocking_recv_copy_us;
    bool used_strace = false;
};

// Runs `v` with --trace (under strace where opt says so), plays `scene` against it, stops it, and
// writes the chart to svg_path. Never throws for a server that fails; result.why says what
// happened.
TimelineResult draw_timeline(const Variant& v, const Scene& scene, const std::string& svg_path,
                             const TimelineOptions& opt = {});

namespace timeline {

// One call on one thread, from either source; times in CLOCK_MONOTONIC nanoseconds.
struct Call {
    std::string name;  // "recv", "epoll_wait", "cqe_recv", strace's "recvfrom"
    int fd = -1;       // the descriptor (first argument), -1 if none
    long result = 0;   // bytes, count or new fd; a negative errno
    std::string ret;   // as printed: "5", "-EAGAIN"
    int64_t start_ns = 0;
    int64_t dur_ns = 0;
    int tid = 0;         // 0: the line carried none (an older server)
    std::string source;  // "--trace" or "strace"
    int64_t end_ns() const { return start_ns + dur_ns; }
};

// One --trace line (README.md "Trace lines"); nullopt for anything else on stderr, and for a line
// without mono_ns= (the timeline cannot place it on the shared clock).
std::optional<Call> parse_trace_line(std::string_view line);
std::vector<Call> parse_trace(std::string_view text);

// strace -f -ttt -T output (one process's file, "PID SECONDS.MICROS call(args) = ret <dur>"),
// unfinished and resumed calls joined; `realtime_minus_mono_ns` moves strace's CLOCK_REALTIME
// stamps onto CLOCK_MONOTONIC.
std::vector<Call> parse_strace(std::string_view text, int64_t realtime_minus_mono_ns);

// What a client of the scene did, stamped on CLOCK_MONOTONIC.
struct ClientEvent {
    enum class Kind { connect, send, reply, close };
    Kind kind;
    int64_t start_ns = 0;
    int64_t end_ns = 0;
    std::string text;  // the bytes sent, the reply line received
};
struct ClientRecord {
    std::string label;
    std::vector<ClientEvent> events;
};

// What a bar shows.
enum class Activity { wait, polling, copy, handler, other, completion };

struct Bar {
    int64_t start_ns = 0;
    int64_t end_ns = 0;
    Activity activity = Activity::other;
    // A call that held both phases: the moment the client sent, where waiting turns to copying.
    std::optional<int64_t> split_ns;
    std::string label;       // drawn inside the bar when it fits
    std::string title;       // the SVG <title>: call, fd, result, duration
    std::string client;      // the scene's client whose connection the call was on, if known
    bool read_call = false;  // recv, read, recvfrom...: a call that reads a socket itself
    std::string source;      // "--trace", "strace", "client", "inferred"
};

struct Lane {
    std::string label;
    std::string source;
    bool client = false;
    std::vector<Bar> bars;
};

struct Chart {
    std::string title;
    std::string subtitle;
    int64_t t0_ns = 0;  // the axis's zero: the scene's start
    int64_t t1_ns = 0;
    std::vector<Lane> lanes;
    std::vector<std::string> notes;  // lines under the legend: sources, what was inferred
};

struct ChartInput {
    std::vector<Call> calls;  // the server's, from every source
    std::vector<ClientRecord> clients;
    int server_pid = 0;       // its tid is the main thread
    bool processes = false;   // other tids are child processes (02_process_per_conn)
    std::string helper_name;  // what to call a thread only strace saw ("glibc AIO helper")
    int64_t t0_ns = 0;
    int64_t t1_ns = 0;
    std::string title;
    std::string subtitle;
};

// Builds the lanes: one per server thread (or process), one for io_uring's kernel side when the
// calls hold completions, one per client.
Chart build_chart(const ChartInput& in);

// The chart as a standalone SVG document, `width` pixels wide.
std::string render_svg(const Chart& chart, int width = 1600);

// The measured numbers of a chart (TimelineResult's fields other than the run's own).
void summarize(const Chart& chart, const ChartInput& in, TimelineResult& result);

}  // namespace timeline

}  // namespace iolab
