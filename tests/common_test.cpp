// Unit tests for common/: the line parser, the QA request handler, Fd, the socket helpers.

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "common/fd.hpp"
#include "common/net.hpp"
#include "common/qa.hpp"

namespace common_test {

using namespace iolab;

std::vector<std::string> drain(LineParser& p) {
    std::vector<std::string> lines;
    while (auto line = p.next()) {
        lines.emplace_back(*line);
    }
    return lines;
}

TEST(LineParser, SeveralRequestsInOneRead) {
    LineParser p(100);
    p.feed("PING\nECHO a b\nTIME\n");
    EXPECT_EQ(drain(p), (std::vector<std::string>{"PING", "ECHO a b", "TIME"}));
    EXPECT_EQ(p.buffered(), 0u);
}

TEST(LineParser, RequestSplitAcrossReads) {
    LineParser p(100);
    std::string first = "ECH";
    p.feed(first);
    EXPECT_TRUE(drain(p).empty());
    first = "####";  // the caller reuses its buffer: the parser must have copied "ECH"
    std::string second = "O split\nPI";
    p.feed(second);
    EXPECT_EQ(drain(p), (std::vector<std::string>{"ECHO split"}));
    p.feed("NG\n");
    EXPECT_EQ(drain(p), (std::vector<std::string>{"PING"}));
}

TEST(LineParser, OneByteAtATime) {
    LineParser p(100);
    std::vector<std::string> got;
    for (char ch : std::string("PING\r\nECHO x\n")) {
        char buf[1] = {ch};
        p.feed(buf, 1);
        for (auto& l : drain(p)) {
            got.push_back(l);
        }
    }
    EXPECT_EQ(got, (std::vector<std::string>{"PING", "ECHO x"}));
}

TEST(LineParser, DropsOneCarriageReturn) {
    LineParser p(100);
    p.feed("PING\r\n\r\nA\r\r\n");
    EXPECT_EQ(drain(p), (std::vector<std::string>{"PING", "", "A\r"}));
}

TEST(LineParser, ExactlyAtTheLimit) {
    LineParser p(10);
    std::string bytes = std::string(10, 'a') + "\r\n" + std::string(10, 'b') + "\n";
    p.feed(bytes);
    EXPECT_EQ(drain(p), (std::vector<std::string>{std::string(10, 'a'), std::string(10, 'b')}));
    EXPECT_FALSE(p.too_long());
}

TEST(LineParser, OnePastTheLimitInOneRead) {
    LineParser p(10);
    std::string bytes = "PING\n" + std::string(11, 'a') + "\nPING\n";
    p.feed(bytes);
    EXPECT_EQ(drain(p), (std::vector<std::string>{"PING"}));
    EXPECT_TRUE(p.too_long());
    p.feed("PING\n");
    EXPECT_FALSE(p.next());
}

TEST(LineParser, OnePastTheLimitWithoutNewline) {
    LineParser p(10);
    std::string bytes(11, 'a');
    p.feed(bytes);  // 10 bytes and a '\r' could still be a valid line
    EXPECT_FALSE(p.next());
    EXPECT_FALSE(p.too_long());
    p.feed("a");
    EXPECT_FALSE(p.next());
    EXPECT_TRUE(p.too_long());
}

TEST(LineParser, LimitAppliesAcrossReads) {
    LineParser p(10);
    p.feed("aaaaaa");
    EXPECT_FALSE(p.next());
    p.feed("aaaaa\n");
    EXPECT_FALSE(p.next());
    EXPECT_TRUE(p.too_long());
}

TEST(LineParser, KeepRestSurvivesBufferReuse) {
    LineParser p(100);
    std::string buf = "PING\nTIME\nECHO tail";
    p.feed(buf);
    ASSERT_EQ(*p.next(), "PING");
    p.keep_rest();  // e.g. WORK is in progress and the read buffer is needed for others
    buf.assign(buf.size(), '#');
    EXPECT_EQ(*p.next(), "TIME");
    EXPECT_FALSE(p.next());
    p.feed(" end\n");
    EXPECT_EQ(drain(p), (std::vector<std::string>{"ECHO tail end"}));
}

TEST(LineParser, FeedWithoutDrainingKeepsOrder) {
    LineParser p(100);
    p.feed("A\nB\n");
    ASSERT_EQ(*p.next(), "A");
    p.feed("C\n");  // B was not taken yet
    EXPECT_EQ(drain(p), (std::vector<std::string>{"B", "C"}));
}

std::string reply_to(std::string_view line) {
    ServerStats stats("test_model");
    std::string out;
    append_reply(out, parse_request(line), stats);
    return out;
}

TEST(QaHandler, Replies) {
    EXPECT_EQ(reply_to("PING"), "PONG\n");
    EXPECT_EQ(reply_to("pInG"), "PONG\n");
    EXPECT_EQ(reply_to("ECHO hello  world "), "hello  world \n");
    EXPECT_EQ(reply_to("ECHO"), "\n");
    EXPECT_EQ(reply_to("QUIT"), "BYE\n");
    EXPECT_EQ(reply_to("WORK 250"), "DONE 250\n");
    EXPECT_EQ(reply_to("TIME").size(), std::string("2026-11-26T13:05:00Z\n").size());
    EXPECT_EQ(reply_to("TIME").back(), '\n');
}

TEST(QaHandler, EightBitCleanEcho) {
    std::string text;
    for (int b = 0; b < 256; ++b) {
        if (b != '\n') {
            text += static_cast<char>(b);
        }
    }
    std::string request = "ECHO " + text;
    EXPECT_EQ(reply_to(request), text + "\n");
}

TEST(QaHandler, Errors) {
    for (const char* bad : {"", "NOPE", "WORK", "WORK x", "WORK 10001", "WORK -5", "WORK 5x",
                            "PING now", "QUIT please", " PING"}) {
        std::string reply = reply_to(bad);
        EXPECT_EQ(reply.rfind("ERR ", 0), 0u) << "request '" << bad << "' got " << reply;
        EXPECT_EQ(reply.back(), '\n');
        EXPECT_EQ(reply.find('\n'), reply.size() - 1) << "one line only";
    }
}

TEST(QaHandler, WorkIsReportedNotPerformed) {
    Request r = parse_request("WORK 10000");
    EXPECT_EQ(r.verb, Verb::work);
    EXPECT_EQ(r.work_ms, 10000);
    EXPECT_EQ(parse_request("quit").verb, Verb::quit);
}

TEST(QaHandler, StatsLine) {
    ServerStats stats("05_epoll");
    stats.accepted = 3;
    stats.conns = 2;
    stats.requests = 7;
    stats.extra = [] { return std::string("eagain=9"); };
    std::string out;
    append_reply(out, parse_request("STATS"), stats);
    for (const char* want :
         {"model=05_epoll", "conns=2", "accepted=3", "requests=7", "threads=", "eagain=9"}) {
        EXPECT_NE(out.find(want), std::string::npos) << out;
    }
    EXPECT_EQ(too_long_reply(4096), "ERR line too long (limit 4096)\n");
}

TEST(Fd, ClosesOnDestructionAndMoves) {
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    int raw = fds[0];
    {
        Fd a(fds[0]);
        Fd b(std::move(a));
        EXPECT_FALSE(a.valid());
        EXPECT_EQ(b.get(), raw);
        Fd c;
        c = std::move(b);
        EXPECT_EQ(c.get(), raw);
    }
    EXPECT_EQ(::fcntl(raw, F_GETFD), -1) << "the descriptor should be closed";
    Fd w(fds[1]);
    int released = w.release();
    EXPECT_FALSE(w.valid());
    EXPECT_EQ(::close(released), 0);
    static_assert(!std::is_copy_constructible_v<Fd>);
    static_assert(!std::is_convertible_v<Fd, int>);
}

TEST(Net, WriteAllOverASocketpairWithShortWrites) {
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    Fd a(sv[0]), b(sv[1]);
    int small = 4096;
    ::setsockopt(a.get(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    std::string data(4 << 20, '\0');
    for (size_t i = 0; i < data.size(); ++i) {
        data[i] = static_cast<char>(i * 7);
    }
    std::string got;
    std::thread reader([&] {
        char buf[1000];  // small reads: the writer sees many short writes
        for (;;) {
            long n = read_some(b.get(), buf, sizeof buf);
            if (n <= 0) {
                break;
            }
            got.append(buf, static_cast<size_t>(n));
        }
    });
    EXPECT_EQ(write_all(a.get(), data), 0);
    a.reset();
    reader.join();
    EXPECT_EQ(got, data);
}

TEST(Net, WriteAllReportsAVanishedPeer) {
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    Fd a(sv[0]);
    ::close(sv[1]);
    EXPECT_EQ(write_all(a.get(), "hello"), -EPIPE);  // and no SIGPIPE killed us
}

TEST(Net, ListenOnPortZeroAndConnect) {
    Fd l = listen_tcp("127.0.0.1", 0);
    uint16_t port = local_port(l.get());
    EXPECT_GT(port, 0);
    Fd c = connect_tcp("127.0.0.1", port);
    EXPECT_EQ(local_address(l.get()), "127.0.0.1:" + std::to_string(port));
    set_nonblocking(c.get());
    EXPECT_TRUE(::fcntl(c.get(), F_GETFL) & O_NONBLOCK);
}

TEST(Net, SetupFailuresNameWhatWasAttempted) {
    Fd l = listen_tcp("127.0.0.1", 0);
    uint16_t port = local_port(l.get());
    try {
        listen_tcp("127.0.0.1", port);
        FAIL() << "binding a taken port should throw";
    } catch (const std::system_error& e) {
        EXPECT_NE(std::string(e.what()).find("bind 127.0.0.1:" + std::to_string(port)),
                  std::string::npos)
            << e.what();
        EXPECT_EQ(e.code().value(), EADDRINUSE);
    }
    EXPECT_THROW(listen_tcp("not-an-address", 0), std::system_error);
}

TEST(Net, OneAddressParserForIpv4AndIpv6) {
    SocketAddress v4 = parse_address("127.0.0.2", 9005, "connect");
    EXPECT_EQ(v4.family(), AF_INET);
    EXPECT_EQ(v4.len, sizeof(sockaddr_in));
    EXPECT_EQ(format_address(v4.get()), "127.0.0.2:9005");
    SocketAddress v6 = parse_address("::1", 9005, "connect");
    EXPECT_EQ(v6.family(), AF_INET6);
    EXPECT_EQ(v6.len, sizeof(sockaddr_in6));
    EXPECT_EQ(format_address(v6.get()), "[::1]:9005");
    EXPECT_EQ(host_port("10.0.0.1", 80), "10.0.0.1:80");
    EXPECT_EQ(host_port("::1", 80), "[::1]:80");
    // The error names what was attempted and the host it was given, never another one.
    for (const char* bad : {"localhost", "10.0.0.256", "", "::1:"}) {
        try {
            parse_address(bad, 1, "load target");
            FAIL() << "'" << bad << "' should not parse";
        } catch (const std::system_error& e) {
            EXPECT_EQ(e.code().value(), EINVAL);
            std::string what = e.what();
            EXPECT_EQ(what.rfind("load target: '" + std::string(bad) + "'", 0), 0u) << what;
            EXPECT_EQ(what.find("127.0.0.1"), std::string::npos) << what;
        }
    }
}

TEST(Net, ListenAndConnectOverIpv6Loopback) {
    Fd l;
    try {
        l = listen_tcp("::1", 0);
    } catch (const std::system_error& e) {
        GTEST_SKIP() << "no IPv6 loopback here: " << e.what();
    }
    uint16_t port = local_port(l.get());
    Fd c = connect_tcp("::1", port);
    EXPECT_EQ(peer_address(c.get()), "[::1]:" + std::to_string(port));
}

}  // namespace common_test
