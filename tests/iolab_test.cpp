// The measurement lab's own tests: the open-loop schedule, the percentile code, the byte checker
// and the load generator against small servers written here (one correct, one that corrupts a
// byte, one that stalls), then the built `iolab compare` on a tiny configuration, run as a child
// process exactly as a user would run it.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/net.hpp"
#include "harness/loadgen.hpp"
#include "harness/procinfo.hpp"
#include "harness/registry.hpp"
#include "harness/histogram.hpp"
#include "harness/results.hpp"
#include "harness/spawn.hpp"
#include "harness/svg.hpp"

using namespace iolab;
using namespace std::chrono_literals;

// ---------------------------------------------------------------------------------------------
// The open-loop schedule

TEST(OpenLoopSchedule, RequestKIsDueAtStartPlusKOverRate) {
    OpenLoopSchedule s(1000, 5000);
    EXPECT_EQ(s.due(0), 5000);
    EXPECT_EQ(s.due(1), 5000 + 1000000);
    EXPECT_EQ(s.due(1000), 5000 + 1000000000LL);
    EXPECT_EQ(s.due_by(4999), 0u);
    EXPECT_EQ(s.due_by(5000), 1u);
    EXPECT_EQ(s.due_by(5000 + 999999), 1u);
    EXPECT_EQ(s.due_by(5000 + 1000000), 2u);
    EXPECT_EQ(s.due_by(5000 + 1000000000LL), 1001u);
}

TEST(OpenLoopSchedule, DueByAgreesWithDueAtEveryBoundary) {
    for (double rate : {3.0, 7.0, 1000.0, 33333.0, 250000.0}) {
        OpenLoopSchedule s(rate, 123456789);
        for (uint64_t k = 0; k < 2000; ++k) {
            int64_t t = s.due(k);
            ASSERT_EQ(s.due_by(t), k + 1) << "rate " << rate << " k " << k;
            ASSERT_EQ(s.due_by(t - 1), k) << "rate " << rate << " k " << k;
        }
    }
}

TEST(OpenLoopSchedule, TheRateHoldsOverTime) {
    OpenLoopSchedule s(12345, 0);
    EXPECT_NEAR(static_cast<double>(s.due_by(10000000000LL)), 123451, 1);
}

// ---------------------------------------------------------------------------------------------
// Percentiles

TEST(Histogram, EmptyGivesZero) {
    Histogram h;
    EXPECT_EQ(h.count(), 0u);
    EXPECT_EQ(h.percentile(0.99), 0u);
    EXPECT_EQ(h.max(), 0u);
}

TEST(Histogram, SmallValuesAreExact) {
    Histogram h;
    for (uint64_t v = 1; v <= 100; ++v) {
        h.record(v);
    }
    EXPECT_EQ(h.percentile(0.50), 50u);
    EXPECT_EQ(h.percentile(0.99), 99u);
    EXPECT_EQ(h.percentile(1.0), 100u);
    EXPECT_EQ(h.percentile(0.0), 1u);
    EXPECT_EQ(h.min(), 1u);
    EXPECT_DOUBLE_EQ(h.mean(), 50.5);
}

TEST(Histogram, NearestRankWithinOnePointSixPercent) {
    Histogram h;
    // 1 us .. 100 ms, 100,000 values spread evenly.
    for (uint64_t i = 1; i <= 100000; ++i) {
        h.record(i * 1000);
    }
    for (double q : {0.5, 0.9, 0.99, 0.999}) {
        double exact = q * 100000 * 1000;
        double got = static_cast<double>(h.percentile(q));
        EXPECT_GE(got, exact) << q;  // never below the true value: a conservative bucket edge
        EXPECT_LE(got, exact * 1.016) << q;
    }
    EXPECT_EQ(h.percentile(1.0), 100000u * 1000);
}

TEST(Histogram, OneOutlierIsTheP999OfAThousand) {
    Histogram h;
    for (int i = 0; i < 999; ++i) {
        h.record(20000);  // 20 us
    }
    h.record(300000000);  // one 300 ms stall
    EXPECT_LE(h.percentile(0.99), 20000u * 1.016);
    EXPECT_LE(h.percentile(0.999), 20000u * 1.016);
    EXPECT_EQ(h.percentile(0.9995), 300000000u);
}

TEST(Histogram, BucketsCoverEveryValue) {
    uint64_t v = 1;
    for (int i = 0; i < 2000; ++i) {
        size_t b = Histogram::bucket_of(v);
        ASSERT_GE(Histogram::bucket_upper(b), v);
        if (b > 0) {
            ASSERT_LT(Histogram::bucket_upper(b - 1), v);
        }
        v = v + v / 37 + 1;
        if (v > (1ULL << 62)) {
            break;
        }
    }
}

TEST(Histogram, MergeAddsCounts) {
    Histogram a, b;
    for (int i = 0; i < 50; ++i) {
        a.record(10);
        b.record(90);
    }
    a.merge(b);
    EXPECT_EQ(a.count(), 100u);
    EXPECT_EQ(a.percentile(0.5), 10u);
    EXPECT_EQ(a.percentile(0.51), 90u);
    EXPECT_EQ(a.min(), 10u);
    EXPECT_EQ(a.max(), 90u);
}

// ---------------------------------------------------------------------------------------------
// The byte checker

TEST(ReplyChecker, RepliesSplitAnyWayAreCounted) {
    ReplyChecker c;
    c.expect("hello\n");
    c.expect("world\n");
    EXPECT_EQ(c.feed("hel"), 0);
    EXPECT_EQ(c.feed("lo\nwo"), 1);
    EXPECT_EQ(c.pending(), 1u);
    EXPECT_EQ(c.feed("rld\n"), 1);
    EXPECT_EQ(c.pending(), 0u);
}

TEST(ReplyChecker, SeveralRepliesInOneRead) {
    ReplyChecker c;
    for (int i = 0; i < 5; ++i) {
        c.expect("PONG\n");
    }
    EXPECT_EQ(c.feed("PONG\nPONG\nPONG\nPO"), 3);
    EXPECT_EQ(c.feed("NG\nPONG\n"), 2);
}

TEST(ReplyChecker, OneWrongByteIsCaught) {
    ReplyChecker c;
    c.expect("abcdef\n");
    EXPECT_EQ(c.feed("abc"), 0);
    EXPECT_EQ(c.feed("dXf\n"), -1);
    EXPECT_NE(c.why().find("byte 4"), std::string::npos) << c.why();
    EXPECT_NE(c.why().find("\"Xf\\n\""), std::string::npos) << c.why();
}

TEST(ReplyChecker, BytesNobodyAskedForAreCaught) {
    ReplyChecker c;
    EXPECT_EQ(c.feed("ERR server full\n"), -1);
    EXPECT_NE(c.why().find("ERR server full"), std::string::npos) << c.why();
    ReplyChecker d;
    d.expect("x\n");
    EXPECT_EQ(d.feed("x\ny"), -1);
}

TEST(ReplyChecker, SaysWhetherTheDifferenceBeginsAReply) {
    ReplyChecker c;
    c.expect("0:1:abc\n");
    c.expect("0:2:abc\n");
    // The first reply matches, then a refusal line comes in place of the second: the reply
    // before it is consumed and the bytes from the start of the second are kept.
    EXPECT_EQ(c.feed("0:1:abc\nERR server busy\n"), -1);
    EXPECT_EQ(c.pending(), 1u);
    EXPECT_TRUE(c.differs_at_reply_start());
    EXPECT_EQ(c.unexpected(), "ERR server busy\n");
    // A difference inside a reply is not at its start.
    ReplyChecker d;
    d.expect("0:1:abc\n");
    EXPECT_EQ(d.feed("0:1:aXc\n"), -1);
    EXPECT_FALSE(d.differs_at_reply_start());
    EXPECT_EQ(d.unexpected(), "Xc\n");
    // Bytes when nothing is expected begin a reply nobody asked for.
    ReplyChecker e;
    EXPECT_EQ(e.feed("ERR server full\n"), -1);
    EXPECT_TRUE(e.differs_at_reply_start());
}

TEST(ReplyChecker, RefusalLinesAreExactlyTheProtocolsTwo) {
    EXPECT_TRUE(is_refusal("ERR server busy\n"));
    EXPECT_TRUE(is_refusal("ERR server full\n"));
    EXPECT_FALSE(is_refusal("ERR server busy"));
    EXPECT_FALSE(is_refusal("ERR server busy\nPONG\n"));
    EXPECT_FALSE(is_refusal("ERR idle timeout\n"));
    EXPECT_TRUE(could_be_refusal("ERR ser"));
    EXPECT_TRUE(could_be_refusal("ERR server f"));
    EXPECT_FALSE(could_be_refusal("ERR i"));
    EXPECT_FALSE(could_be_refusal("ERR server busy\nx"));
}

TEST(ReplyChecker, LongStreamsAcrossCompaction) {
    ReplyChecker c;
    std::string all;
    for (int i = 0; i < 20000; ++i) {
        std::string r = std::to_string(i) + "-reply\n";
        c.expect(r);
        all += r;
    }
    long done = 0;
    for (size_t off = 0; off < all.size(); off += 777) {
        long n = c.feed(std::string_view(all).substr(off, 777));
        ASSERT_GE(n, 0) << c.why();
        done += n;
    }
    EXPECT_EQ(done, 20000);
    EXPECT_EQ(c.pending(), 0u);
}

TEST(MakeRequest, QaRequestsEchoTheirPayload) {
    std::string req, rep;
    make_request(Mode::qa, 64, 3, 7, req, rep);
    EXPECT_EQ(rep.size(), 65u);
    EXPECT_EQ(req, "ECHO " + rep);
    EXPECT_EQ(rep.find('\n'), 64u);
    std::string req2, rep2;
    make_request(Mode::qa, 64, 3, 8, req2, rep2);
    EXPECT_NE(rep, rep2);  // a repeated or reordered reply would show
    make_request(Mode::qa, 0, 3, 8, req, rep);
    EXPECT_EQ(req, "PING\n");
    EXPECT_EQ(rep, "PONG\n");
    make_request(Mode::echo, 100, 1, 1, req, rep);
    EXPECT_EQ(req, rep);
    EXPECT_EQ(req.size(), 100u);
}

// ---------------------------------------------------------------------------------------------
// The load generator against small servers written here

namespace {

// A blocking QA server for one thread: answers "ECHO x" with "x" and PING with PONG on every
// connection it accepts, one at a time. `corrupt_at`: the reply number whose first byte it
// changes. `stall_at`/`stall_ms`: before that reply it sleeps (a stalled server).
class TinyServer {
public:
    explicit TinyServer(long corrupt_at = -1, long stall_at = -1, int stall_ms = 0)
        : listen_(listen_tcp("127.0.0.1", 0)) {
        port_ = local_port(listen_.get());
        thread_ = std::thread([=, this] { serve(corrupt_at, stall_at, stall_ms); });
    }
    ~TinyServer() {
        stop_ = true;
        ::shutdown(listen_.get(), SHUT_RDWR);
        thread_.join();
    }
    uint16_t port() const { return port_; }

private:
    void serve(long corrupt_at, long stall_at, int stall_ms) {
        long replies = 0;
        while (!stop_) {
            int fd = ::accept(listen_.get(), nullptr, nullptr);
            if (fd < 0) {
                return;
            }
            Fd conn(fd);
            set_io_timeouts(conn.get(), 0.2);
            std::string in;
            char buf[4096];
            while (!stop_) {
                ssize_t n = ::recv(conn.get(), buf, sizeof buf, 0);
                if (n < 0 && errno == EAGAIN) {
                    continue;
                }
                if (n <= 0) {
                    break;
                }
                in.append(buf, static_cast<size_t>(n));
                std::string out;
                size_t nl;
                while ((nl = in.find('\n')) != std::string::npos) {
                    std::string line = in.substr(0, nl);
                    in.erase(0, nl + 1);
                    std::string reply = line.rfind("ECHO ", 0) == 0 ? line.substr(5) : "PONG";
                    if (replies == stall_at) {
                        std::this_thread::sleep_for(std::chrono::milliseconds(stall_ms));
                    }
                    if (replies == corrupt_at && !reply.empty()) {
                        reply[0] ^= 1;
                    }
                    ++replies;
                    out += reply + "\n";
                }
                if (write_all(conn.get(), out) != 0) {
                    break;
                }
            }
        }
    }

    Fd listen_;
    uint16_t port_ = 0;
    std::atomic<bool> stop_{false};
    std::thread thread_;
};

// Turns every client away: sends `line` as soon as it accepts, then closes the way
// common/conn.hpp's refuse() does (shut down the write side, drain what the client sent, close),
// or, with keep_open, holds the connection until the server is destroyed.
class RefusingServer {
public:
    explicit RefusingServer(std::string line, bool keep_open = false)
        : listen_(listen_tcp("127.0.0.1", 0)) {
        port_ = local_port(listen_.get());
        thread_ = std::thread([this, line = std::move(line), keep_open] {
            for (;;) {
                int fd = ::accept(listen_.get(), nullptr, nullptr);
                if (fd < 0) {
                    return;
                }
                Fd conn(fd);
                write_all(conn.get(), line);
                if (keep_open) {
                    held_.push_back(std::move(conn));
                    continue;
                }
                ::shutdown(conn.get(), SHUT_WR);
                set_io_timeouts(conn.get(), 0.2);
                char buf[4096];
                while (::recv(conn.get(), buf, sizeof buf, 0) > 0) {
                }
            }
        });
    }
    ~RefusingServer() {
        ::shutdown(listen_.get(), SHUT_RDWR);
        thread_.join();
    }
    uint16_t port() const { return port_; }

private:
    Fd listen_;
    uint16_t port_ = 0;
    std::vector<Fd> held_;
    std::thread thread_;
};

// Runs a closed loop of `conns` connections against `port` for 200 ms, with 300 ms of grace.
TargetStats closed_loop_briefly(uint16_t port, int conns) {
    LoadGen gen(LoadSpec{});
    size_t t = gen.add_target("127.0.0.1", port, conns, 0);
    gen.connect(5s);
    gen.start();
    gen.run_until(now_ns() + 200000000);
    gen.finish(300ms);
    return gen.stats(t);
}

}  // namespace

TEST(LoadGen, ClosedLoopCountsCheckedReplies) {
    TinyServer server;
    LoadGen gen(LoadSpec{});
    size_t t = gen.add_target("127.0.0.1", server.port(), 1, 0);
    ASSERT_EQ(gen.connect(5s), 1);
    gen.start();
    gen.run_until(now_ns() + 300000000);
    gen.finish(1000ms);
    const TargetStats& s = gen.stats(t);
    EXPECT_GT(s.completed, 100u);
    EXPECT_EQ(s.errors, 0u) << s.first_error;
    EXPECT_EQ(s.latency.count(), s.completed);
    EXPECT_EQ(s.sent, s.completed);
}

TEST(LoadGen, ConnectPerRequestOpensOneConnectionPerReply) {
    TinyServer server;
    LoadSpec spec;
    spec.connect_per_request = true;
    LoadGen gen(spec);
    size_t t = gen.add_target("127.0.0.1", server.port(), 1, 0);
    ASSERT_EQ(gen.connect(5s), 1);
    gen.start();
    gen.run_until(now_ns() + 300000000);
    gen.finish(1000ms);
    const TargetStats& s = gen.stats(t);
    EXPECT_GT(s.completed, 20u);
    EXPECT_EQ(s.errors, 0u) << s.first_error;
    // The first connection was made before start(); each reply after it needs a new one.
    EXPECT_GE(s.connects + 1, s.completed);
    EXPECT_LE(s.connects, s.completed + 1);
    // The client closed each one first: the TIME_WAIT sockets are on this port, from several
    // source addresses.
    EXPECT_GE(time_wait_sockets(server.port()), static_cast<long>(s.completed) - 2);
}

TEST(LoadGen, ACorruptedByteIsAnError) {
    TinyServer server(50);
    LoadGen gen(LoadSpec{});
    size_t t = gen.add_target("127.0.0.1", server.port(), 1, 0);
    ASSERT_EQ(gen.connect(5s), 1);
    gen.start();
    gen.run_until(now_ns() + 300000000);
    gen.finish(500ms);
    const TargetStats& s = gen.stats(t);
    EXPECT_EQ(s.completed, 50u);
    EXPECT_EQ(s.errors, 1u);
    EXPECT_EQ(s.wrong, 1u);
    EXPECT_EQ(s.refused + s.lost + s.timeouts, 0u);
    EXPECT_NE(s.first_error.find("differs"), std::string::npos) << s.first_error;
}

TEST(LoadGen, ARefusalLineThenCloseIsRefusedNotWrong) {
    for (const char* line : {"ERR server busy\n", "ERR server full\n"}) {
        RefusingServer server(line);
        TargetStats s = closed_loop_briefly(server.port(), 3);
        EXPECT_EQ(s.refused, 3u) << line << s.first_error;
        EXPECT_EQ(s.wrong, 0u) << line << s.first_error;
        EXPECT_EQ(s.lost, 0u) << line << s.first_error;
        EXPECT_EQ(s.timeouts, 0u) << line;
        EXPECT_EQ(s.errors, 3u) << line;
        EXPECT_EQ(s.completed, 0u) << line;
        EXPECT_NE(s.first_error.find(std::string(line, 15)), std::string::npos) << s.first_error;
    }
}

TEST(LoadGen, ARefusalLineLeftOpenIsStillRefused) {
    RefusingServer server("ERR server busy\n", true);
    TargetStats s = closed_loop_briefly(server.port(), 2);
    EXPECT_EQ(s.refused, 2u) << s.first_error;
    EXPECT_EQ(s.wrong + s.lost + s.timeouts, 0u) << s.first_error;
}

TEST(LoadGen, ARefusalLineCutShortOrFollowedByMoreIsWrong) {
    for (const char* bytes : {"ERR server bu", "ERR server busy\nPONG\n", "ERR idle timeout\n"}) {
        RefusingServer server(bytes);
        TargetStats s = closed_loop_briefly(server.port(), 1);
        EXPECT_EQ(s.wrong, 1u) << bytes << ": " << s.first_error;
        EXPECT_EQ(s.refused + s.lost + s.timeouts, 0u) << bytes << ": " << s.first_error;
        EXPECT_NE(s.first_error.find("differs"), std::string::npos) << s.first_error;
    }
}

TEST(LoadGen, ACloseBeforeTheReplyIsLost) {
    RefusingServer server("");
    TargetStats s = closed_loop_briefly(server.port(), 2);
    EXPECT_EQ(s.lost, 2u) << s.first_error;
    EXPECT_EQ(s.refused + s.wrong + s.timeouts, 0u) << s.first_error;
    EXPECT_EQ(s.errors, 2u);
}

TEST(LoadGen, OpenLoopChargesAStallToEveryRequestDueDuringIt) {
    // 1000 requests/s for 1 s; the server stalls 300 ms before its 100th reply. About 300
    // requests fall due during the stall, so the p90 must show it (tens of ms at least), while a
    // closed loop would have charged the stall to one request only.
    TinyServer server(-1, 100, 300);
    LoadGen gen(LoadSpec{});
    size_t t = gen.add_target("127.0.0.1", server.port(), 1, 1000);
    ASSERT_EQ(gen.connect(5s), 1);
    gen.start();
    gen.run_until(now_ns() + 1000000000);
    gen.finish(2000ms);
    const TargetStats& s = gen.stats(t);
    EXPECT_EQ(s.errors, 0u) << s.first_error;
    EXPECT_NEAR(static_cast<double>(s.sent), 1000, 20);
    EXPECT_GE(s.latency.percentile(0.90), 50000000u);  // >= 50 ms
    EXPECT_GE(s.latency.max(), 250000000u);            // the request due first waited ~300 ms
}

TEST(LoadGen, ClosedLoopHidesTheSameStall) {
    TinyServer server(-1, 100, 300);
    LoadGen gen(LoadSpec{});
    size_t t = gen.add_target("127.0.0.1", server.port(), 1, 0);
    ASSERT_EQ(gen.connect(5s), 1);
    gen.start();
    gen.run_until(now_ns() + 1000000000);
    gen.finish(2000ms);
    const TargetStats& s = gen.stats(t);
    EXPECT_EQ(s.errors, 0u) << s.first_error;
    EXPECT_LT(s.latency.percentile(0.90), 50000000u);
    EXPECT_GE(s.latency.max(), 250000000u);
}

TEST(LoadGen, UnansweredRequestsAreTimeouts) {
    // TinyServer serves one connection at a time: the second one waits in the backlog.
    TinyServer server;
    LoadGen gen(LoadSpec{});
    size_t t = gen.add_target("127.0.0.1", server.port(), 2, 0);
    ASSERT_EQ(gen.connect(5s), 2);
    gen.start();
    gen.run_until(now_ns() + 200000000);
    gen.finish(200ms);
    const TargetStats& s = gen.stats(t);
    EXPECT_EQ(s.timeouts, 1u);
    EXPECT_EQ(s.errors, 1u);
    EXPECT_EQ(s.refused + s.wrong + s.lost, 0u) << s.first_error;
    EXPECT_NE(s.first_error.find("unanswered"), std::string::npos) << s.first_error;
}

TEST(LoadGen, ARefusedConnectionIsAnError) {
    uint16_t port;
    {
        Fd probe = listen_tcp("127.0.0.1", 0);
        port = local_port(probe.get());
    }  // closed: nobody listens there now
    LoadGen gen(LoadSpec{});
    size_t t = gen.add_target("127.0.0.1", port, 3, 0);
    EXPECT_EQ(gen.connect(2s), 0);
    EXPECT_EQ(gen.stats(t).errors, 3u);
    // Nobody listening is a failed connect (lost), not the protocol's refusal.
    EXPECT_EQ(gen.stats(t).lost, 3u);
    EXPECT_EQ(gen.stats(t).refused, 0u);
    EXPECT_NE(gen.stats(t).first_error.find("refused"), std::string::npos)
        << gen.stats(t).first_error;
}

// ---------------------------------------------------------------------------------------------
// The kernel's counters

TEST(KernelCounters, CountEveryThreadAndProcessCreatedAfterThemAndNothingElse) {
    // Opened on a thread of their own, which then starts a thread and forks a child (which forks
    // a grandchild), as iolab's start_counted does for a server. Between the two reads: the
    // thread makes 1000 calls, the child 2000, the grandchild 500, and this thread (outside the
    // tree) 5000, which must not be counted.
    constexpr int kThreadCalls = 1000, kChildCalls = 2000, kGrandchildCalls = 500;
    KernelCounters counters;
    std::thread worker;
    std::mutex m;
    std::condition_variable cv;
    bool go = false;
    int go_pipe[2];
    ASSERT_EQ(::pipe2(go_pipe, O_CLOEXEC), 0);
    pid_t child = -1;
    std::thread starter([&] {
        counters = KernelCounters::open_on_this_thread();
        if (!counters.ok()) {
            return;
        }
        worker = std::thread([&] {
            std::unique_lock<std::mutex> lock(m);
            cv.wait(lock, [&] { return go; });
            lock.unlock();
            for (int i = 0; i < kThreadCalls; ++i) {
                ::syscall(SYS_getppid);
            }
        });
        child = ::fork();
        if (child == 0) {
            // Only async-signal-safe calls after fork in a threaded process.
            char byte;
            if (::read(go_pipe[0], &byte, 1) != 1) {
                ::_exit(1);
            }
            for (int i = 0; i < kChildCalls; ++i) {
                ::syscall(SYS_getppid);
            }
            pid_t grandchild = ::fork();
            if (grandchild == 0) {
                for (int i = 0; i < kGrandchildCalls; ++i) {
                    ::syscall(SYS_getppid);
                }
                ::_exit(0);
            }
            int status = 0;
            ::waitpid(grandchild, &status, 0);
            ::_exit(WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 2);
        }
    });
    starter.join();
    if (!counters.ok()) {
        ::close(go_pipe[0]);
        ::close(go_pipe[1]);
        GTEST_SKIP() << "the kernel refuses the tracepoint counters here: " << counters.why();
    }
    ASSERT_GT(child, 0);
    auto k0 = counters.read();
    ASSERT_TRUE(k0.has_value());
    {
        std::lock_guard<std::mutex> lock(m);
        go = true;
    }
    cv.notify_all();
    ASSERT_EQ(::write(go_pipe[1], "g", 1), 1);
    for (int i = 0; i < 5000; ++i) {
        ::syscall(SYS_getppid);
    }
    worker.join();
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    auto k1 = counters.read();
    ASSERT_TRUE(k1.has_value());
    ::close(go_pipe[0]);
    ::close(go_pipe[1]);
    uint64_t counted = k1->syscalls - k0->syscalls;
    // Beside the getppid calls: the futex the thread wakes from, its exit, the child's read,
    // fork, wait4 and exits: a few dozen at most.
    EXPECT_GE(counted, static_cast<uint64_t>(kThreadCalls + kChildCalls + kGrandchildCalls));
    EXPECT_LE(counted, static_cast<uint64_t>(kThreadCalls + kChildCalls + kGrandchildCalls + 60));
    EXPECT_EQ(k1->uring_completions, k0->uring_completions);  // nobody used io_uring
}

// ---------------------------------------------------------------------------------------------
// Reports

namespace {

// A small well-formedness check: every tag closed in order, attributes quoted, no bare '<' or
// '&' in text. Enough to catch what a hand-written SVG writer gets wrong.
std::string xml_problem(const std::string& s) {
    std::vector<std::string> stack;
    size_t i = 0;
    if (s.rfind("<?xml", 0) == 0) {
        i = s.find("?>");
        if (i == std::string::npos) {
            return "unterminated XML declaration";
        }
        i += 2;
    }
    bool root_seen = false;
    while (i < s.size()) {
        if (s[i] == '&') {
            size_t semi = s.find(';', i);
            std::string ent = s.substr(i, semi == std::string::npos ? 8 : semi - i + 1);
            static const std::set<std::string> ok = {"&amp;", "&lt;", "&gt;", "&quot;", "&apos;"};
            if (!ok.count(ent)) {
                return "bad entity " + ent;
            }
            i = semi + 1;
            continue;
        }
        if (s[i] != '<') {
            if (stack.empty() && !std::isspace(static_cast<unsigned char>(s[i]))) {
                return "text outside the root element";
            }
            ++i;
            continue;
        }
        size_t end = i + 1;
        char quote = 0;
        while (end < s.size() && (quote || s[end] != '>')) {
            if (quote && s[end] == quote) {
                quote = 0;
            } else if (!quote && (s[end] == '"' || s[end] == '\'')) {
                quote = s[end];
            } else if (!quote && s[end] == '<') {
                return "'<' inside a tag at " + std::to_string(end);
            }
            ++end;
        }
        if (end >= s.size()) {
            return "unterminated tag";
        }
        std::string tag = s.substr(i + 1, end - i - 1);
        i = end + 1;
        if (tag.empty()) {
            return "empty tag";
        }
        if (tag[0] == '/') {
            std::string name = tag.substr(1);
            if (stack.empty() || stack.back() != name) {
                return "closing </" + name + "> does not match";
            }
            stack.pop_back();
            continue;
        }
        bool self_closing = tag.back() == '/';
        std::string name = tag.substr(0, tag.find_first_of(" \t\n/"));
        if (stack.empty()) {
            if (root_seen) {
                return "two root elements";
            }
            root_seen = true;
        }
        if (!self_closing) {
            stack.push_back(name);
        }
    }
    if (!stack.empty()) {
        return "<" + stack.back() + "> never closed";
    }
    return root_seen ? "" : "no root element";
}

}  // namespace

TEST(Report, SvgIsWellFormedAndEscaped) {
    ChartSpec spec{"A <title> & more", "connections", "requests/s", true, false, "note \"x\""};
    std::vector<Series> series = {{"a&b", {{1, 10}, {100, 2000}, {1000, -1}}},
                                  {"<c>", {{1, 5}, {100, 500}, {1000, 700}}}};
    std::string svg = svg_chart(spec, series);
    EXPECT_EQ(xml_problem(svg), "");
    EXPECT_NE(svg.find("a&amp;b"), std::string::npos);
    spec.log_y = true;
    EXPECT_EQ(xml_problem(svg_chart(spec, series)), "");
    // One x value: a bar chart.
    std::vector<Series> one = {{"x", {{100, 3}}}, {"y", {{100, 7}}}};
    std::string bars = svg_chart(spec, one);
    EXPECT_EQ(xml_problem(bars), "");
    EXPECT_NE(bars.find("<rect x="), std::string::npos);
    EXPECT_EQ(xml_problem(svg_chart(spec, {})), "");
    EXPECT_NE(xml_problem("<svg><g></svg>"), "");  // the checker itself can fail
}

TEST(Report, FamiliesAreSmallMultiplesOnSharedLogAxes) {
    ChartSpec spec{"CPU per request", "connections", "us per request", true, true, ""};
    std::vector<Series> series = {{"05_epoll", {{1, 10}, {100, 5}}, "05"},
                                  {"05_epoll_et", {{1, 12}, {100, 6}}, "05"},
                                  {"07_aio", {{1, 76}, {100, 300}}, "07"}};
    std::string svg = svg_chart(spec, series);
    EXPECT_EQ(xml_problem(svg), "");
    auto count = [&](const std::string& what) {
        size_t n = 0;
        for (size_t at = svg.find(what); at != std::string::npos; at = svg.find(what, at + 1)) {
            ++n;
        }
        return n;
    };
    // One panel per family, titled by the variant the others extend.
    EXPECT_EQ(count("font-weight=\"bold\""), 2u);
    EXPECT_NE(svg.find("font-weight=\"bold\">05_epoll</text>"), std::string::npos);
    // Each panel shows the other families' lines in grey: two in 07's, one in 05's.
    EXPECT_EQ(count("stroke=\"#d8d8d8\""), 3u);
    // Shared log axis from 5 to 500 with 1-2-5 ticks, so 76 us does not flatten 5 us.
    EXPECT_NE(svg.find(">500</text>"), std::string::npos);
    EXPECT_NE(svg.find(">5</text>"), std::string::npos);
    EXPECT_NE(svg.find(">20</text>"), std::string::npos);
    EXPECT_EQ(svg.find(">1k</text>"), std::string::npos);
    // A single load point: bars, coloured by family, on the same log axis.
    std::vector<Series> one = {{"05_epoll", {{100, 5}}, "05"}, {"07_aio", {{100, 300}}, "07"}};
    std::string bars = svg_chart(spec, one);
    EXPECT_EQ(xml_problem(bars), "");
    EXPECT_NE(bars.find(">500</text>"), std::string::npos);
}

namespace {

// Two rows that between them have every kind of value: a kernel-counted persistent point, and
// a per-request open-loop point with traced syscalls, failures and values that were not
// measured.
std::vector<PointResult> two_rows() {
    PointResult a;
    a.variant = "05_epoll";
    a.conns = 100;
    a.payload = 64;
    a.mode = "closed";
    a.duration_s = 1;
    a.requests = 29204;
    a.req_per_s = 29204.4;
    a.p50_us = 3408.26;
    a.p99_us = 8913;
    a.p999_us = 11101;
    a.max_us = 12000;
    a.server_cpu_us_per_req = 6.754;
    a.syscalls_per_req = 2.034;
    a.syscalls_source = "kernel";
    a.uring_ops_per_req = 0;
    a.threads = 1;
    a.rss_kib = 3920;
    a.pss_kib = 1200;
    a.rss_per_conn_kib = 0.22;
    a.client_cpu_pct = 20.04;
    a.answered = 29333;
    a.conns_connected = 100;
    PointResult b = a;
    b.variant = "02_thread_per_conn_pool";
    b.mode = "open";
    b.rate = 40000;
    b.shape = "per-request";
    b.p50_us = -1;
    b.syscalls_per_req = 0.5;
    b.syscalls_source = "traced";
    b.uring_ops_per_req = -1;
    b.refused = 996;
    b.wrong = 1;
    b.errors = 997;
    b.accepts_per_s = 5000.4;
    b.time_wait = 88;
    b.client_bound = true;
    b.client_cpu_pct = 95;
    b.first_error = "reply byte 0 differs: \"q\", then \xff\x01";
    return {a, b};
}

std::vector<std::string> split(const std::string& line, char sep) {
    std::vector<std::string> out(1);
    for (char ch : line) {
        if (ch == sep) {
            out.emplace_back();
        } else {
            out.back() += ch;
        }
    }
    return out;
}

}  // namespace

TEST(Report, JsonAndCsvHaveTheSameFieldsInTheSameOrder) {
    std::vector<PointResult> rows = two_rows();
    RunInfo info;
    info.command = "iolab compare";
    std::string text = results_json(info, rows, {{"07_aio", true, "77"}});
    nlohmann::ordered_json doc = nlohmann::ordered_json::parse(text);
    ASSERT_EQ(doc.at("results").size(), 2u);
    EXPECT_TRUE(doc.at("run").at("syscalls").is_null());
    EXPECT_EQ(doc.at("skipped")[0].at("status"), "unavailable");
    std::vector<std::string> lines = split(results_csv(rows), '\n');
    ASSERT_EQ(lines.size(), 4u);  // the header, two rows, and the empty rest after the last \n
    std::vector<std::string> header = split(lines[0], ',');
    // The columns scripts read by position: the first ones and the last one never move.
    ASSERT_GE(header.size(), 37u);
    EXPECT_EQ(std::vector<std::string>(header.begin(), header.begin() + 5),
              (std::vector<std::string>{"variant", "conns", "payload", "mode", "rate"}));
    EXPECT_EQ(header.back(), "first_error");
    std::vector<std::string> keys;
    for (const auto& [key, value] : doc.at("results")[0].items()) {
        keys.push_back(key);
    }
    EXPECT_EQ(keys, header);

    // Row 0's CSV cells and JSON values agree field by field (no field in row 0 holds a comma).
    const nlohmann::ordered_json& first = doc.at("results")[0];
    std::vector<std::string> cells = split(lines[1], ',');
    ASSERT_EQ(cells.size(), header.size());
    for (size_t i = 0; i < header.size(); ++i) {
        const nlohmann::ordered_json& v = first.at(header[i]);
        if (v.is_string()) {
            EXPECT_EQ(cells[i], v.get<std::string>()) << header[i];
        } else if (v.is_boolean()) {
            EXPECT_EQ(cells[i], v.get<bool>() ? "true" : "false") << header[i];
        } else if (v.is_null() || (header[i] == "time_wait" && v.get<long>() == -1)) {
            EXPECT_EQ(cells[i], "") << header[i];
        } else {
            EXPECT_DOUBLE_EQ(std::stod(cells[i]), v.get<double>()) << header[i];
        }
    }
    EXPECT_EQ(first.at("p50_us").get<double>(), 3408.3);
    EXPECT_EQ(first.at("server_cpu_us_per_req").get<double>(), 6.75);
    EXPECT_EQ(first.at("req_per_s").get<long>(), 29204);

    // Not measured: null in JSON, empty in CSV; time_wait and pss_kib keep their -1 in JSON.
    const nlohmann::ordered_json& second = doc.at("results")[1];
    EXPECT_TRUE(second.at("p50_us").is_null());
    EXPECT_TRUE(second.at("uring_ops_per_req").is_null());
    EXPECT_EQ(first.at("time_wait").get<long>(), -1);
    EXPECT_EQ(second.at("time_wait").get<long>(), 88);
    EXPECT_EQ(second.at("syscalls_source"), "traced");
    // A server's bytes that are not UTF-8 still leave a file that parses.
    EXPECT_NE(second.at("first_error").get<std::string>().find("\"q\""), std::string::npos);
    EXPECT_NE(lines[2].find(",\"reply byte 0 differs: \"\"q\"\", then "), std::string::npos)
        << lines[2];
}

TEST(Report, TheTableShowsTheOutcomesApartAndThePerRequestColumnsOnlyWhenUsed) {
    std::vector<PointResult> rows = two_rows();
    std::string one = results_table({rows[0]}, {});
    std::string head = one.substr(0, one.find('\n'));
    EXPECT_EQ(head.find("TIME_WAIT"), std::string::npos) << head;
    for (const char* column : {"variant", "conns", "mode", "req/s", "p50", "p99", "p99.9",
                               "cpu/req", "sys/req", "uring/req", "threads", "rss KiB", "KiB/conn",
                               "client %", "answered", "refused", "no reply", "WRONG", "lost"}) {
        EXPECT_NE(head.find(column), std::string::npos) << column;
    }
    EXPECT_LT(head.find("sys/req"), head.find("uring/req"));
    EXPECT_LT(head.find("client %"), head.find("answered"));

    std::string both = results_table(rows, {{"07_aio", false, "died"}});
    std::vector<std::string> lines = split(both, '\n');
    EXPECT_NE(lines[0].find("accepts/s  TIME_WAIT"), std::string::npos) << lines[0];
    EXPECT_EQ(lines[1].rfind("05_epoll ", 0), 0u) << lines[1];
    // The second row: its mode, the traced mark, the client-bound mark, a wrong byte as a BUG.
    for (const char* cell : {"open@40000 new-conn", "0.50t", "95!", "1 BUG", "996", "88"}) {
        EXPECT_NE(lines[2].find(cell), std::string::npos) << cell << " in " << lines[2];
    }
    EXPECT_NE(both.find("  BUG 02_thread_per_conn_pool at 100 conns: reply byte 0 differs"),
              std::string::npos)
        << both;
    EXPECT_NE(both.find("07_aio: FAILED: died"), std::string::npos) << both;
    // Every line of the table is as wide as its header: numbers right-aligned under it.
    EXPECT_EQ(lines[1].size(), lines[0].size());
    EXPECT_EQ(lines[2].size(), lines[0].size());
}

TEST(Report, ExtraMembersJoinTheTopLevelObject) {
    std::string text =
        results_json({}, {}, {}, "\"idle\": {\"cpu_pct\": 0.25}, \"exit_status\": 0");
    nlohmann::json doc = nlohmann::json::parse(text);
    EXPECT_EQ(doc.at("idle").at("cpu_pct").get<double>(), 0.25);
    EXPECT_EQ(doc.at("exit_status").get<int>(), 0);
    EXPECT_THROW(results_json({}, {}, {}, "\"idle\": {"), std::invalid_argument);
}

TEST(Report, WriteTextFileCreatesTheDirectories) {
    char tmpl[] = "/tmp/iolab_write_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    std::string path = std::string(tmpl) + "/a/b/c.txt";
    write_text_file(path, "x\n");
    std::ifstream in(path);
    std::string line;
    EXPECT_TRUE(std::getline(in, line));
    EXPECT_EQ(line, "x");
    // A file where a directory must go: the error names what was attempted.
    try {
        write_text_file(path + "/d.txt", "y");
        ADD_FAILURE() << "a file is not a directory";
    } catch (const std::system_error& e) {
        EXPECT_NE(std::string(e.what()).find("mkdir"), std::string::npos) << e.what();
    }
    std::filesystem::remove_all(tmpl);
}

// ---------------------------------------------------------------------------------------------
// /proc

TEST(ProcInfo, KeyValueLinesAndStatFields) {
    std::vector<long> n = proc_numbers("/proc/self/status", {"Threads", "VmRSS", "NoSuchKey"});
    ASSERT_EQ(n.size(), 3u);
    EXPECT_GE(n[0], 1);
    EXPECT_GT(n[1], 0);
    EXPECT_EQ(n[2], -1);
    EXPECT_TRUE(proc_numbers("/proc/self/no-such-file", {"Threads"}).empty());
    EXPECT_TRUE(proc_text("/proc/cpuinfo", "processor").has_value());

    std::vector<long long> stat = proc_stat(::getpid());
    ASSERT_GT(stat.size(), 24u);
    EXPECT_EQ(stat[1], 0);      // the pid, the name and the state are not numbers
    EXPECT_EQ(stat[20], n[0]);  // num_threads
    EXPECT_GT(stat[24], 0);     // rss, in pages
    EXPECT_TRUE(proc_stat(-1).empty());
}

TEST(ProcInfo, ContextSwitchesAreSummedOverEveryThread) {
    // A second thread sleeps 200 times, each sleep a voluntary switch of that thread alone:
    // /proc/PID/status (the main thread's own counts) does not see them, the sum over
    // /proc/PID/task/*/status does, while the thread lives.
    CtxSwitches before = process_ctx_switches(::getpid());
    long main_before = proc_numbers("/proc/self/status", {"voluntary_ctxt_switches"}).at(0);
    std::atomic<int> slept{0};
    std::atomic<bool> done{false};
    std::thread sleeper([&] {
        for (; slept < 200; ++slept) {
            std::this_thread::sleep_for(std::chrono::microseconds(100));
        }
        while (!done) {
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
    });
    while (slept < 200) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    CtxSwitches during = process_ctx_switches(::getpid());
    long main_during = proc_numbers("/proc/self/status", {"voluntary_ctxt_switches"}).at(0);
    done = true;
    sleeper.join();
    long all = during.voluntary - before.voluntary;
    EXPECT_GE(all, 200);
    EXPECT_LT(main_during - main_before, all);
    // "voluntary_ctxt_switches" is not read from the "nonvoluntary_ctxt_switches" line.
    std::vector<long> both = proc_numbers(
        "/proc/self/status", {"nonvoluntary_ctxt_switches", "voluntary_ctxt_switches"});
    EXPECT_GE(both.at(1), main_during);
}

// ---------------------------------------------------------------------------------------------
// The built `iolab`, run as a user runs it

namespace {

std::string read_file(const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// Runs argv with stdout and stderr to one file (harness/spawn.hpp); kills it after `deadline`.
// Returns the exit code, 128 + the signal that ended it, or -1 at the deadline.
int run_child(const std::vector<std::string>& args, const std::string& out_path,
              std::chrono::seconds deadline) {
    Fd out(::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!out) {
        return -1;
    }
    SpawnSpec spec;
    spec.argv = args;
    spec.stdout_fd = out.get();
    spec.stderr_fd = out.get();
    std::optional<int> status = wait_or_kill(spawn(spec), deadline);
    return status ? exit_code(*status) : -1;
}

}  // namespace

TEST(IolabCompare, TinyRunWritesEveryFieldAndValidSvg) {
    std::vector<Variant> all = registry(IOLAB_BIN_DIR);
    std::vector<std::string> names;
    for (const char* want : {"01_blocking", "05_epoll"}) {
        for (const Variant& v : all) {
            if (v.name == want && ::access(v.binary.c_str(), X_OK) == 0) {
                names.push_back(v.name);
            }
        }
    }
    for (const Variant& v : all) {  // whatever else is built, if those two are not
        if (names.size() < 2 && !v.has("uring") && ::access(v.binary.c_str(), X_OK) == 0 &&
            std::find(names.begin(), names.end(), v.name) == names.end()) {
            names.push_back(v.name);
        }
    }
    ASSERT_GE(names.size(), 2u) << "01_blocking and 05_epoll are always configured: not built?";
    char tmpl[] = "/tmp/iolab_test_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    std::string dir = tmpl;
    std::string iolab = std::string(IOLAB_BIN_DIR) + "/iolab";
    ASSERT_EQ(::access(iolab.c_str(), X_OK), 0) << iolab << " is not built (target iolab)";
    int code = run_child({iolab, "compare", "--models", names[0] + "," + names[1], "--conns", "1",
                          "--duration", "1", "--warmup", "0.1", "--out", dir},
                         dir + "/output.txt", 60s);
    std::string output = read_file(dir + "/output.txt");
    ASSERT_EQ(code, 0) << output;
    EXPECT_NE(output.find(names[0]), std::string::npos) << output;  // the table

    nlohmann::json doc;
    ASSERT_NO_THROW(doc = nlohmann::json::parse(read_file(dir + "/results.json")));
    const nlohmann::json& run = doc.at("run");
    for (const char* key : {"kernel", "cpu_model", "cores", "io_uring", "pinning"}) {
        ASSERT_TRUE(run.contains(key)) << key;
        EXPECT_FALSE(run.at(key).is_null()) << key;
    }
    // Where this machine's kernel lets a test open the tracepoint counters, iolab can too.
    std::string source = KernelCounters::open_on_this_thread().ok() ? "kernel" : "traced";
    ASSERT_TRUE(run.contains("syscalls"));
    EXPECT_EQ(run.at("syscalls").get<std::string>().rfind(source, 0), 0u) << output;
    const nlohmann::json& rows = doc.at("results");
    ASSERT_EQ(rows.size(), 2u) << output;
    for (const nlohmann::json& f : rows) {
        for (const char* key : {"variant",
                                "conns",
                                "payload",
                                "mode",
                                "req_per_s",
                                "p50_us",
                                "p99_us",
                                "p999_us",
                                "server_cpu_us_per_req",
                                "syscalls_per_req",
                                "syscalls_source",
                                "threads",
                                "rss_kib",
                                "rss_per_conn_kib",
                                "ctx_switches_voluntary",
                                "ctx_switches_involuntary",
                                "client_cpu_pct",
                                "client_bound",
                                "answered",
                                "refused",
                                "unanswered",
                                "wrong",
                                "lost",
                                "errors"}) {
            ASSERT_TRUE(f.contains(key)) << key;
            EXPECT_FALSE(f.at(key).is_null()) << key << " in " << output;
        }
        ASSERT_TRUE(f.contains("uring_ops_per_req"));
        EXPECT_EQ(f.at("syscalls_source").get<std::string>(), source) << output;
        auto number = [&](const char* key) { return f.at(key).get<double>(); };
        EXPECT_EQ(number("errors"), 0) << output;
        EXPECT_EQ(number("refused") + number("unanswered") + number("wrong") + number("lost"),
                  number("errors"));
        EXPECT_GE(number("answered"), number("requests")) << output;
        EXPECT_GT(number("req_per_s"), 100) << output;
        if (source == "kernel") {
            // Neither variant uses io_uring; both make a few calls per request (01_blocking:
            // exactly a recv and a send), never the dozens that counting the load generator or
            // every process on the machine would add.
            EXPECT_EQ(number("uring_ops_per_req"), 0) << output;
            EXPECT_GE(number("syscalls_per_req"), 1.9) << output;
            EXPECT_LE(number("syscalls_per_req"), 8) << output;
            if (f.at("variant").get<std::string>() == "01_blocking") {
                EXPECT_LE(number("syscalls_per_req"), 2.2) << output;
            }
        }
    }
    std::string csv = read_file(dir + "/results.csv");
    EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 3) << csv;
    for (const char* svg : {"req_per_s.svg", "p99.svg", "cpu_per_req.svg", "rss_per_conn.svg"}) {
        std::string text = read_file(dir + "/" + svg);
        ASSERT_FALSE(text.empty()) << svg;
        EXPECT_EQ(xml_problem(text), "") << svg;
        EXPECT_NE(text.find("<svg xmlns=\"http://www.w3.org/2000/svg\""), std::string::npos);
    }
    std::string cleanup = "rm -rf '" + dir + "'";
    EXPECT_EQ(std::system(cleanup.c_str()), 0);
}

TEST(IolabCompare, ConnectPerRequestReportsBothShapes) {
    char tmpl[] = "/tmp/iolab_test_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    std::string dir = tmpl;
    std::string iolab = std::string(IOLAB_BIN_DIR) + "/iolab";
    int code = run_child({iolab, "compare", "--connect-per-request", "--models", "05_epoll",
                          "--conns", "2", "--duration", "0.5", "--warmup", "0.1", "--out", dir},
                         dir + "/output.txt", 60s);
    std::string output = read_file(dir + "/output.txt");
    ASSERT_EQ(code, 0) << output;
    EXPECT_NE(output.find("TIME_WAIT"), std::string::npos) << output;
    nlohmann::json doc;
    ASSERT_NO_THROW(doc = nlohmann::json::parse(read_file(dir + "/results.json")));
    const nlohmann::json& rows = doc.at("results");
    ASSERT_EQ(rows.size(), 2u) << output;
    EXPECT_EQ(rows[0].at("shape").get<std::string>(), "persistent");
    EXPECT_EQ(rows[1].at("shape").get<std::string>(), "per-request");
    for (const nlohmann::json& row : rows) {
        EXPECT_EQ(row.at("errors").get<double>(), 0) << output;
    }
    const nlohmann::json& fresh = rows[1];
    EXPECT_GT(fresh.at("accepts_per_s").get<double>(), 50) << output;
    EXPECT_GT(fresh.at("time_wait").get<double>(), 10) << output;
    std::string cleanup = "rm -rf '" + dir + "'";
    EXPECT_EQ(std::system(cleanup.c_str()), 0);
}

TEST(IolabList, OneLinePerVariantWithItsCommand) {
    char tmpl[] = "/tmp/iolab_list_XXXXXX";
    int fd = ::mkstemp(tmpl);
    ASSERT_GE(fd, 0);
    ::close(fd);
    int code = run_child({std::string(IOLAB_BIN_DIR) + "/iolab", "list"}, tmpl, 10s);
    std::string out = read_file(tmpl);
    ::unlink(tmpl);
    ASSERT_EQ(code, 0) << out;
    std::vector<Variant> all = registry(IOLAB_BIN_DIR);
    std::istringstream in(out);
    std::string line;
    size_t n = 0;
    while (std::getline(in, line)) {
        ASSERT_LT(n, all.size());
        std::istringstream words(line);
        std::string name, binary;
        words >> name >> binary;
        EXPECT_EQ(name, all[n].name);
        EXPECT_EQ(binary, all[n].binary);
        EXPECT_EQ(binary[0], '/');
        ++n;
    }
    EXPECT_EQ(n, all.size());
}

// The JSON is read with nlohmann-json, as the harness writes it.
#include <nlohmann/json.hpp>

// iolab scale --idle: a small sweep writes every point, says why a capped variant has no figures
// where its cap is below the point's connections, and draws the growth chart.
TEST(IolabScale, IdleSweepWritesEveryPointTheMissingOnesWhyAndTheChart) {
    std::vector<Variant> all = registry(IOLAB_BIN_DIR);
    for (const char* want : {"05_epoll", "07_aio"}) {
        auto it = std::find_if(all.begin(), all.end(), [&](const Variant& v) {
            return v.name == want && ::access(v.binary.c_str(), X_OK) == 0;
        });
        ASSERT_NE(it, all.end()) << want << " is always configured: not built?";
    }
    char tmpl[] = "/tmp/iolab_scale_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    std::string dir = tmpl;
    std::string iolab = std::string(IOLAB_BIN_DIR) + "/iolab";
    // 07_aio holds --max-aio 256 connections: 100 active fit, 100 active and 200 idle do not.
    int code = run_child({iolab, "scale", "05_epoll", "--models", "07_aio", "--idle", "0,200",
                          "--duration", "0.5", "--warmup", "0.1", "--out", dir},
                         dir + "/output.txt", 90s);
    std::string output = read_file(dir + "/output.txt");
    ASSERT_EQ(code, 0) << output;

    nlohmann::json doc;
    ASSERT_NO_THROW(doc = nlohmann::json::parse(read_file(dir + "/scale-idle.json"))) << output;
    const nlohmann::json& sweep = doc.at("idle_sweep");
    EXPECT_EQ(sweep.at("active").get<int>(), 100);
    const nlohmann::json& points = sweep.at("points");
    ASSERT_EQ(points.size(), 4u) << output;
    std::string source = KernelCounters::open_on_this_thread().ok() ? "kernel" : "traced";
    int measured = 0;
    for (const nlohmann::json& p : points) {
        std::string variant = p.at("variant").get<std::string>();
        int idle = p.at("idle").get<int>();
        SCOPED_TRACE(variant + " idle " + std::to_string(idle) + "\n" + output);
        if (variant == "07_aio" && idle == 200) {
            EXPECT_FALSE(p.at("measured").get<bool>());
            EXPECT_NE(p.at("missing").get<std::string>().find("--max-aio 256"), std::string::npos);
            EXPECT_TRUE(p.at("server_cpu_us_per_req").is_null());
            continue;
        }
        ++measured;
        ASSERT_TRUE(p.at("measured").get<bool>());
        EXPECT_EQ(p.at("idle_held").get<int>(), idle);
        EXPECT_GT(p.at("server_cpu_us_per_req").get<double>(), 0);
        EXPECT_GT(p.at("p99_us").get<double>(), 0);
        EXPECT_GT(p.at("answered").get<double>(), 100);
        EXPECT_EQ(p.at("errors").get<double>(), 0);
        EXPECT_EQ(p.at("syscalls_source").get<std::string>(), source);
        if (variant == "05_epoll" && source == "kernel") {
            // A recv and a send per request, and an epoll_wait for several: the idle
            // connections, which say nothing, add no call.
            EXPECT_GE(p.at("syscalls_per_req").get<double>(), 1.5);
            EXPECT_LE(p.at("syscalls_per_req").get<double>(), 4);
        }
    }
    EXPECT_EQ(measured, 3);
    EXPECT_EQ(doc.at("results").size(), 3u);

    std::string csv = read_file(dir + "/scale-idle.csv");
    EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 5) << csv;
    std::string svg = read_file(dir + "/scale-idle.svg");
    ASSERT_FALSE(svg.empty());
    EXPECT_EQ(xml_problem(svg), "");
    EXPECT_NE(svg.find("<svg xmlns=\"http://www.w3.org/2000/svg\""), std::string::npos);
    EXPECT_NE(svg.find("100 active"), std::string::npos);  // the title says the load
    EXPECT_NE(svg.find("07_aio: no figures at 200 idle (--max-aio 256"), std::string::npos);
    std::string cleanup = "rm -rf '" + dir + "'";
    EXPECT_EQ(std::system(cleanup.c_str()), 0);
}
