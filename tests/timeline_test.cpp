// iolab timeline: the parsers and the layout on recorded trace text, then `iolab timeline` run
// against every variant, each drawing a well-formed SVG with the lanes its model must have.

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "harness/registry.hpp"
#include "harness/spawn.hpp"
#include "iolab/timeline.hpp"

namespace timeline_test {

using namespace iolab;
using namespace iolab::timeline;

constexpr int64_t kMs = 1000000;
constexpr int64_t kBase = 5000 * 1000 * kMs;  // a CLOCK_MONOTONIC moment, 5,000 s after boot

// "  <at> <call> fd= ret= dur_us= mono_ns= tid=" as common/trace.cpp writes it.
std::string line(const char* call, int fd, const char* ret, int64_t start_ns, int64_t dur_us,
                 int tid = 100) {
    char buf[256];
    std::snprintf(buf, sizeof buf, "%10lld %s fd=%d ret=%s dur_us=%lld mono_ns=%lld tid=%d\n",
                  static_cast<long long>((start_ns - kBase) / 1000), call, fd, ret,
                  static_cast<long long>(dur_us), static_cast<long long>(start_ns), tid);
    return buf;
}

ClientRecord client(const std::string& label, int64_t connect_at, std::vector<int64_t> sends,
                    int64_t reply_at, int64_t close_at) {
    ClientRecord r{label, {}};
    r.events.push_back({ClientEvent::Kind::connect, connect_at, connect_at + 50000, ""});
    for (size_t i = 0; i < sends.size(); ++i) {
        std::string text = i + 1 == sends.size() ? "ces\n" : "pie";
        r.events.push_back({ClientEvent::Kind::send, sends[i], sends[i] + 10000, text});
    }
    r.events.push_back({ClientEvent::Kind::reply, reply_at - 5000, reply_at, "pieces"});
    r.events.push_back({ClientEvent::Kind::close, close_at, close_at + 5000, ""});
    return r;
}

// A well-formed XML check: every tag closed in order, attributes quoted.
bool well_formed(const std::string& xml, std::string& why) {
    std::vector<std::string> open;
    size_t pos = 0;
    while ((pos = xml.find('<', pos)) != std::string::npos) {
        size_t end = xml.find('>', pos);
        if (end == std::string::npos) {
            why = "a tag never ends";
            return false;
        }
        std::string tag = xml.substr(pos + 1, end - pos - 1);
        pos = end + 1;
        if (tag.empty() || tag[0] == '?' || tag[0] == '!') {
            continue;
        }
        if (std::count(tag.begin(), tag.end(), '"') % 2 != 0) {
            why = "unbalanced quotes in <" + tag + ">";
            return false;
        }
        if (tag[0] == '/') {
            if (open.empty() || open.back() != tag.substr(1)) {
                why = "</" + tag.substr(1) + "> closes " + (open.empty() ? "nothing" : open.back());
                return false;
            }
            open.pop_back();
        } else if (tag.back() != '/') {
            open.push_back(tag.substr(0, tag.find_first_of(" \n")));
        }
    }
    if (!open.empty()) {
        why = "<" + open.back() + "> never closed";
        return false;
    }
    return true;
}

const Lane* lane_named(const Chart& chart, const std::string& label) {
    for (const Lane& l : chart.lanes) {
        if (l.label == label) {
            return &l;
        }
    }
    return nullptr;
}

TEST(TimelineParse, ReadsTraceLinesWithTheSharedClock) {
    auto c = parse_trace_line(
        "    390385 recv fd=6 ret=5 dur_us=14729 mono_ns=15396678309342 "
        "tid=4309");
    ASSERT_TRUE(c.has_value());
    EXPECT_EQ(c->name, "recv");
    EXPECT_EQ(c->fd, 6);
    EXPECT_EQ(c->result, 5);
    EXPECT_EQ(c->start_ns, 15396678309342);
    EXPECT_EQ(c->dur_ns, 14729000);
    EXPECT_EQ(c->tid, 4309);
    EXPECT_EQ(c->source, "--trace");

    auto again = parse_trace_line("1 recv fd=7 ret=-EAGAIN dur_us=1 mono_ns=10 tid=3");
    ASSERT_TRUE(again.has_value());
    EXPECT_EQ(again->result, -EAGAIN);
    EXPECT_EQ(again->ret, "-EAGAIN");

    // Lines from an older server (no mono_ns) and everything else on stderr are not calls.
    EXPECT_FALSE(parse_trace_line("   1534021 recv fd=7 ret=-EAGAIN dur_us=1").has_value());
    EXPECT_FALSE(parse_trace_line("listening on 127.0.0.1:9001 model=01_blocking").has_value());
    EXPECT_FALSE(parse_trace_line("05_epoll_server: bind 127.0.0.1:9005: in use").has_value());
    EXPECT_EQ(parse_trace("listening on x\n" + line("accept4", 3, "5", kBase, 10) +
                          line("recv", 5, "4", kBase + kMs, 3))
                  .size(),
              2u);
}

TEST(TimelineParse, ReadsStraceJoiningUnfinishedCalls) {
    std::string text =
        "7677  1000.000100 execve(\"/bin/x\", [\"x\"], 0x7ffc /* 41 vars */) = 0 <0.006856>\n"
        "7680  1000.001000 read(7,  <unfinished ...>\n"
        "7677  1000.001500 futex(0x7fb1, FUTEX_WAKE_PRIVATE, 1) = 0 <0.000021>\n"
        "7680  1000.041000 <... read resumed>\"PING\\n\", 4096) = 5 <0.040000>\n"
        "7677  1000.050000 recvfrom(9, 0x7ff, 64, 0, NULL, NULL) = -1 EAGAIN (Resource "
        "temporarily unavailable) <0.000004>\n"
        "7680  1000.060000 --- SIGIO {si_signo=SIGIO} ---\n"
        "7680  1000.070000 +++ exited with 0 +++\n";
    // Wall-clock 1000 s is monotonic 400 s here.
    std::vector<Call> calls = parse_strace(text, 600LL * 1000 * kMs);
    ASSERT_EQ(calls.size(), 4u);
    EXPECT_EQ(calls[0].name, "execve");
    EXPECT_EQ(calls[1].name, "read");
    EXPECT_EQ(calls[1].tid, 7680);
    EXPECT_EQ(calls[1].fd, 7);
    EXPECT_EQ(calls[1].result, 5);
    EXPECT_EQ(calls[1].start_ns, 400LL * 1000 * kMs + 1 * kMs);
    EXPECT_EQ(calls[1].dur_ns, 40 * kMs);
    EXPECT_EQ(calls[1].source, "strace");
    EXPECT_EQ(calls[2].name, "futex");
    EXPECT_EQ(calls[2].fd, -1);
    EXPECT_EQ(calls[3].result, -EAGAIN);
    EXPECT_EQ(calls[3].ret, "-EAGAIN");
}

// 01_blocking's scene, recorded: the blocking recv that receives the slow client's last piece
// waited for it and is split at the moment the client sent.
TEST(TimelineLayout, SplitsABlockingRecvAtTheClientsSend) {
    int64_t t0 = kBase;
    std::string trace =
        line("accept4", 3, "5", t0 - 5 * kMs, 5100) + line("recv", 5, "3", t0 + kMs / 5, 10) +
        line("recv", 5, "4", t0 + kMs / 4, 40000) +  // until 40.25 ms
        line("send", 5, "7", t0 + 41 * kMs, 20) + line("recv", 5, "0", t0 + 41 * kMs + 30000, 1000);
    ChartInput in;
    in.calls = parse_trace(trace);
    in.clients = {
        client("slow", t0, {t0 + kMs / 10, t0 + 40 * kMs}, t0 + 41 * kMs + 40000, t0 + 42 * kMs)};
    in.server_pid = 100;
    in.t0_ns = t0;
    in.t1_ns = t0 + 45 * kMs;
    Chart chart = build_chart(in);
    ASSERT_EQ(chart.lanes.size(), 2u);
    EXPECT_EQ(chart.lanes[0].label, "main thread");
    EXPECT_EQ(chart.lanes[0].source, "--trace");
    EXPECT_EQ(chart.lanes[1].label, "client slow");
    EXPECT_TRUE(chart.lanes[1].client);

    const Lane& main = chart.lanes[0];
    ASSERT_EQ(main.bars.size(), 5u);
    EXPECT_EQ(main.bars[0].start_ns, t0) << "the accept that began before the scene is clipped";
    EXPECT_EQ(main.bars[1].activity, Activity::copy) << "the first piece was already there";
    const Bar& blocking = main.bars[2];
    EXPECT_EQ(blocking.activity, Activity::wait);
    ASSERT_TRUE(blocking.split_ns.has_value());
    EXPECT_EQ(*blocking.split_ns, t0 + 40 * kMs);
    EXPECT_EQ(blocking.client, "slow");
    EXPECT_NE(blocking.title.find("recv fd=5 (client slow) ret=4"), std::string::npos)
        << blocking.title;
    // The recv that sees the client's close waits for it: the close splits it too.
    EXPECT_TRUE(main.bars[4].split_ns.has_value());

    TimelineResult r;
    summarize(chart, in, r);
    ASSERT_TRUE(r.blocking_recv_wait_us.has_value());
    EXPECT_DOUBLE_EQ(*r.blocking_recv_wait_us, 39750.0);
    EXPECT_DOUBLE_EQ(*r.blocking_recv_copy_us, 250.0);
    EXPECT_TRUE(r.blocked_in_read);
    EXPECT_EQ(r.requests, 1);
    EXPECT_EQ(r.server_syscalls, 5);

    std::string svg = render_svg(chart);
    std::string why;
    EXPECT_TRUE(well_formed(svg, why)) << why;
    EXPECT_NE(svg.find("data-lane=\"main thread\""), std::string::npos);
    EXPECT_NE(svg.find("data-lane=\"client slow\""), std::string::npos);
    EXPECT_NE(svg.find("<title>recv fd=5 (client slow) ret=4"), std::string::npos);
    // 40 ms with nothing starting or ending is cut to a band that says how long it was.
    EXPECT_NE(svg.find(">40 ms</text>"), std::string::npos);
}

// A busy poll: thousands of EAGAINs, each far narrower than a pixel, are one bar that counts them.
TEST(TimelineLayout, MergesARunOfTinyPollsIntoOneCountedBar) {
    int64_t t0 = kBase;
    std::string trace;
    for (int i = 0; i < 3000; ++i) {
        trace += line("recv", 5, "-EAGAIN", t0 + i * 10000, 1);
    }
    ChartInput in;
    in.calls = parse_trace(trace);
    in.server_pid = 100;
    in.t0_ns = t0;
    in.t1_ns = t0 + 30 * kMs;
    Chart chart = build_chart(in);
    ASSERT_EQ(chart.lanes.size(), 1u);
    EXPECT_EQ(chart.lanes[0].bars.size(), 3000u);
    EXPECT_EQ(chart.lanes[0].bars[0].activity, Activity::polling);
    std::string svg = render_svg(chart);
    size_t titles = 0;
    for (size_t p = 0; (p = svg.find("<title>", p)) != std::string::npos; ++p) {
        ++titles;
    }
    EXPECT_LT(titles, 200u) << "the polls were drawn one by one";
    EXPECT_NE(svg.find(" calls, each too short to draw alone"), std::string::npos);
}

// 07_aio's helpers: threads only strace saw get lanes of their own, named, after the traced ones;
// a strace call that repeats a traced one is kept once; the trace's own writes to fd 2 are not
// calls of the model.
TEST(TimelineLayout, GivesStraceOnlyThreadsTheirOwnNamedLanes) {
    int64_t t0 = kBase;
    ChartInput in;
    in.calls = parse_trace(line("aio_read", 5, "0", t0 + kMs, 30, 100) +
                           line("sigtimedwait", -1, "34", t0 + 2 * kMs, 20000, 100));
    auto strace_call = [](const char* name, int fd, int64_t start, int64_t dur, int tid) {
        Call c;
        c.name = name;
        c.fd = fd;
        c.start_ns = start;
        c.dur_ns = dur;
        c.tid = tid;
        c.source = "strace";
        c.ret = "0";
        return c;
    };
    in.calls.push_back(strace_call("rt_sigtimedwait", -1, t0 + 2 * kMs + 5000, 19000000, 100));
    in.calls.push_back(strace_call("write", 2, t0 + 23 * kMs, 5000, 100));
    in.calls.push_back(strace_call("read", 5, t0 + kMs + 40000, 10 * kMs, 101));
    in.calls.push_back(strace_call("futex", -1, t0 + 12 * kMs, 8 * kMs, 101));
    in.server_pid = 100;
    in.helper_name = "glibc AIO helper";
    in.t0_ns = t0;
    in.t1_ns = t0 + 30 * kMs;
    Chart chart = build_chart(in);
    ASSERT_EQ(chart.lanes.size(), 2u);
    EXPECT_EQ(chart.lanes[0].label, "main thread");
    EXPECT_EQ(chart.lanes[0].bars.size(), 2u) << "the strace copy of sigtimedwait, or the "
                                                 "trace's write, was drawn";
    const Lane* helper = lane_named(chart, "glibc AIO helper 1");
    ASSERT_NE(helper, nullptr);
    EXPECT_EQ(helper->source, "strace");
    ASSERT_EQ(helper->bars.size(), 2u);
    EXPECT_EQ(helper->bars[0].activity, Activity::wait) << "a 10 ms read is a wait";
    EXPECT_EQ(helper->bars[1].activity, Activity::wait);
}

// 09_proactor: completions are reaped, not read; the kernel's side gets a lane, each recv from
// the client's send to the reap, and no server thread blocks in a read.
TEST(TimelineLayout, DrawsTheKernelSideOfIoUring) {
    int64_t t0 = kBase;
    std::string trace = line("io_uring_submit_and_wait", 4, "1", t0, 10500) +
                        line("cqe_accept", 3, "6", t0 + 10500 * 1000, 0) +
                        line("io_uring_submit_and_wait", 4, "1", t0 + 11 * kMs, 9200) +
                        line("cqe_recv", 6, "5", t0 + 20 * kMs + 300000, 0) +
                        line("io_uring_submit_and_wait", 4, "1", t0 + 21 * kMs, 50);
    ChartInput in;
    in.calls = parse_trace(trace);
    ClientRecord ping{"ping", {}};
    ping.events.push_back({ClientEvent::Kind::connect, t0 + 10 * kMs, t0 + 10 * kMs + 50000, ""});
    ping.events.push_back({ClientEvent::Kind::send, t0 + 20 * kMs, t0 + 20 * kMs + 9000, "PING\n"});
    ping.events.push_back({ClientEvent::Kind::reply, t0 + 20 * kMs + 9000, t0 + 22 * kMs, "PONG"});
    ping.events.push_back({ClientEvent::Kind::close, t0 + 23 * kMs, t0 + 23 * kMs + 1000, ""});
    in.clients = {ping};
    in.server_pid = 100;
    in.t0_ns = t0;
    in.t1_ns = t0 + 25 * kMs;
    Chart chart = build_chart(in);
    const Lane* kernel = lane_named(chart, "io_uring (kernel)");
    ASSERT_NE(kernel, nullptr);
    ASSERT_EQ(kernel->bars.size(), 2u);
    EXPECT_EQ(kernel->bars[1].start_ns, t0 + 20 * kMs) << "the recv begins at the client's send";
    EXPECT_EQ(kernel->bars[1].end_ns, t0 + 20 * kMs + 300000) << "and ends when it is reaped";
    EXPECT_EQ(kernel->bars[1].client, "ping");
    // The wait that returned with the completion held both phases: split at the send.
    const Bar& wait = chart.lanes[0].bars[2];
    ASSERT_TRUE(wait.split_ns.has_value());
    EXPECT_EQ(*wait.split_ns, t0 + 20 * kMs);
    TimelineResult r;
    summarize(chart, in, r);
    EXPECT_EQ(r.server_syscalls, 3) << "completions reaped are not system calls";
    EXPECT_FALSE(r.blocked_in_read);
    EXPECT_DOUBLE_EQ(r.syscalls_per_request, 3.0);
}

TEST(TimelineScene, NamesEveryScene) {
    for (const std::string& name : scene_names()) {
        Scene s = scene_by_name(name);
        EXPECT_EQ(s.name, name);
        EXPECT_FALSE(s.clients.empty());
    }
    Scene d = default_scene();
    ASSERT_EQ(d.clients.size(), 3u);
    EXPECT_GT(d.clients[0].pieces.size(), 1u) << "one client sends slowly, in pieces";
    EXPECT_EQ(d.clients[1].pieces[0], "WORK 200\n");
    EXPECT_EQ(d.clients[2].pieces[0], "PING\n");
    EXPECT_THROW(scene_by_name("nonesuch"), std::invalid_argument);
}

// The processes left as children of this one: as a subreaper it inherits every orphan of the
// processes it started, so a server that outlived the iolab command which started it is here.
std::vector<pid_t> children_left() {
    std::vector<pid_t> out;
    for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
        std::ifstream in(task.path() / "children");
        for (long pid = 0; in >> pid;) {
            out.push_back(static_cast<pid_t>(pid));
        }
    }
    return out;
}

// `iolab timeline VARIANT` for every variant: exit 0 (77: refused here), a well-formed SVG with a
// lane for the main thread and one per client, and the lanes the model adds; and no process it
// started (the server, strace's tracee) outlives it.
class TimelineCommand : public ::testing::TestWithParam<Variant> {};

TEST_P(TimelineCommand, DrawsAValidChartWithTheExpectedLanes) {
    const Variant& v = GetParam();
    std::filesystem::path dir =
        std::filesystem::temp_directory_path() /
        ("iolab-timeline-test-" + std::to_string(::getpid()) + "-" + v.name);
    std::filesystem::create_directories(dir);
    std::string svg_path = (dir / "chart.svg").string();
    int out = ::open((dir / "stdout").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ASSERT_GE(out, 0);
    ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0) << std::strerror(errno);
    SpawnSpec spec;
    spec.argv = {std::string(IOLAB_BIN_DIR) + "/iolab", "timeline", v.name, "--out", svg_path};
    spec.stdout_fd = out;
    spec.stderr_fd = out;
    pid_t pid = spawn(spec);
    ::close(out);
    std::optional<int> status = wait_or_kill(pid, std::chrono::seconds(60));
    ASSERT_TRUE(status.has_value()) << "iolab timeline " << v.name << " ran past 60 s";
    std::vector<pid_t> left = children_left();
    for (pid_t p : left) {
        ::kill(p, SIGKILL);
        ::waitpid(p, nullptr, 0);
    }
    EXPECT_TRUE(left.empty()) << left.size() << " process(es) outlived iolab timeline " << v.name
                              << ", the first pid " << left.front();
    std::ifstream printed(dir / "stdout");
    std::string said((std::istreambuf_iterator<char>(printed)), std::istreambuf_iterator<char>());
    int code = exit_code(*status);
    if (code == 77) {
        std::filesystem::remove_all(dir);
        GTEST_SKIP() << said;
    }
    ASSERT_EQ(code, 0) << said;
    std::ifstream in(svg_path);
    std::string svg((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::filesystem::remove_all(dir);
    std::string why;
    ASSERT_TRUE(well_formed(svg, why)) << why;
    EXPECT_NE(svg.find("<svg xmlns=\"http://www.w3.org/2000/svg\""), std::string::npos);
    std::vector<std::string> lanes = {v.has("processes") ? "parent process" : "main thread",
                                      "client slow", "client work", "client ping"};
    if (v.name == "09_proactor" || v.name == "07_aio_uring") {
        lanes.push_back("io_uring (kernel)");
    }
    if (v.name == "07_aio" && ::access("/usr/bin/strace", X_OK) == 0) {
        lanes.push_back("glibc AIO helper 1");
    }
    if (v.has("threads") && v.name != "07_aio" && v.name != "09_proactor_asio") {
        lanes.push_back("thread 2");
    }
    if (v.has("processes")) {
        lanes.push_back("child process 1");
    }
    for (const std::string& lane : lanes) {
        EXPECT_NE(svg.find("data-lane=\"" + lane + "\""), std::string::npos)
            << "no lane '" << lane << "'; iolab said:\n"
            << said;
    }
    // Every client's request was answered and drawn.
    EXPECT_NE(svg.find("for the reply &quot;DONE 200"), std::string::npos) << said;
    EXPECT_NE(svg.find("for the reply &quot;PONG"), std::string::npos) << said;
    EXPECT_NE(svg.find("for the reply &quot;slowly, in pieces"), std::string::npos) << said;
}

INSTANTIATE_TEST_SUITE_P(Variants, TimelineCommand, ::testing::ValuesIn(registry(IOLAB_BIN_DIR)),
                         [](const ::testing::TestParamInfo<Variant>& info) {
                             return info.param.name;
                         });

}  // namespace timeline_test
