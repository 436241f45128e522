#include "harness/scenarios.hpp"

#include <signal.h>

#include <atomic>
#include <random>
#include <regex>
#include <sstream>
#include <thread>

namespace iolab {

namespace {

using Clock = std::chrono::steady_clock;

// Starts the target; an Outcome that is not a pass means the scenario ends here.
struct Started {
    ServerProcess server;
    Outcome outcome;
    bool ok() const { return outcome.passed(); }
};

Started launch(const Target& t, const std::vector<std::string>& extra = {}) {
    Started s{t.start(extra), {}};
    if (s.server.state() == ServerProcess::State::cannot_run) {
        s.outcome = {Outcome::Kind::skip, t.name + " cannot run here: " + s.server.reason()};
    } else if (!s.server.running()) {
        s.outcome = {Outcome::Kind::fail, t.name + " did not start: " + s.server.reason()};
    }
    return s;
}

Outcome fail(std::string why) {
    return {Outcome::Kind::fail, std::move(why)};
}
Outcome pass() {
    return {};
}

// Expect one reply line; say what came instead.
bool expect_line(Client& c, const std::string& want, std::string& why,
                 std::chrono::milliseconds deadline = 5s) {
    auto got = c.read_line(deadline);
    if (!got) {
        why = "expected '" + want + "', got no line (closed or timed out)";
        return false;
    }
    if (*got != want) {
        why = "expected '" + want + "', got '" + got->substr(0, 200) + "'";
        return false;
    }
    return true;
}

// Ends a scenario: the server must still be alive and exit 0 on SIGTERM.
Outcome finish(ServerProcess& server, Outcome so_far = {}) {
    if (!so_far.passed()) {
        return so_far;
    }
    if (!server.alive()) {
        return fail("the server died during the scenario (exit " +
                    std::to_string(server.wait(0ms)) + "): " + server.stderr_text().substr(0, 400));
    }
    int code = server.stop(3s);
    if (code != 0) {
        return fail("after SIGTERM the server exited " + std::to_string(code) +
                    " (want 0 within 3 s)");
    }
    return pass();
}

// A fresh client can still get PONG: the server survived whatever came before.
bool still_serves(uint16_t port, std::string& why) {
    try {
        Client c = Client::connect(port);
        std::string reply = c.ask("PING", 10s);
        if (reply != "PONG") {
            why = "a fresh client asked PING and got '" + reply + "'";
            return false;
        }
        return true;
    } catch (const std::exception& e) {
        why = std::string("a fresh client could not connect: ") + e.what();
        return false;
    }
}

std::string random_bytes(size_t n, uint32_t seed) {
    std::mt19937 rng(seed);
    std::string s(n, '\0');
    for (auto& ch : s) {
        ch = static_cast<char>(rng() & 0xff);
    }
    return s;
}

}  // namespace

Target target_for(const Variant& v) {
    return {v.name,
            [v](const std::vector<std::string>& extra) { return ServerProcess::start(v, extra); },
            v.has("serial")};
}

Outcome qa_basics(const Target& t) {
    Started s = launch(t);
    if (!s.ok()) {
        return s.outcome;
    }
    Client c = Client::connect(s.server.port());
    struct Exchange {
        const char* request;
        const char* reply;  // exact reply, or nullptr when checked by pattern below
    };
    const Exchange exact[] = {
        {"PING", "PONG"},
        {"ping", "PONG"},
        {"PiNg\r", "PONG"},
        {"ECHO hello world", "hello world"},
        {"echo  two  spaces ", " two  spaces "},
        {"ECHO", ""},
        {"WORK 0", "DONE 0"},
        {"work 20", "DONE 20"},
    };
    std::string why;
    for (const auto& e : exact) {
        c.send(std::string(e.request) + "\n");
        if (!expect_line(c, e.reply, why)) {
            return fail(std::string("request '") + e.request + "': " + why);
        }
    }
    std::string time = c.ask("TIME");
    if (!std::regex_match(time, std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)"))) {
        return fail("TIME replied '" + time + "', want ISO 8601 UTC like 2026-11-26T13:05:00Z");
    }
    std::string stats = c.ask("stats");
    for (const char* key : {"model=", "conns=", "accepted=", "requests=", "threads="}) {
        if (stats.find(key) == std::string::npos) {
            return fail("STATS replied '" + stats + "', missing " + key);
        }
    }
    for (const char* bad :
         {"", "FROB", "WORK", "WORK abc", "WORK -1", "WORK 10001", "PING now", "\x01\x02"}) {
        std::string reply = c.ask(bad);
        if (reply.rfind("ERR ", 0) != 0) {
            return fail(std::string("request '") + bad + "' replied '" + reply + "', want ERR ...");
        }
    }
    if (c.ask("PING") != "PONG") {
        return fail("the connection was not usable after the ERR replies");
    }
    c.send("QUIT\n");
    if (!expect_line(c, "BYE", why)) {
        return fail("QUIT: " + why);
    }
    auto rest = c.read_until_close(5s);
    if (!rest) {
        return fail("after BYE the server did not close the connection within 5 s");
    }
    if (!rest->empty()) {
        return fail("after BYE the server sent more: '" + rest->substr(0, 100) + "'");
    }
    return finish(s.server);
}

Outcome pipelined_2000(const Target& t) {
    Started s = launch(t);
    if (!s.ok()) {
        return s.outcome;
    }
    Client c = Client::connect(s.server.port());
    std::string batch;
    for (int i = 0; i < 2000; ++i) {
        batch += "ECHO request " + std::to_string(i) + "\n";
    }
    if (!c.send(batch)) {
        return fail("could not send 2,000 pipelined requests");
    }
    for (int i = 0; i < 2000; ++i) {
        std::string why;
        if (!expect_line(c, "request " + std::to_string(i), why)) {
            return fail("reply " + std::to_string(i) + " of 2,000: " + why);
        }
    }
    return finish(s.server);
}

Outcome one_byte_at_a_time(const Target& t) {
    Started s = launch(t);
    if (!s.ok()) {
        return s.outcome;
    }
    Client c = Client::connect(s.server.port());
    std::string requests = "ECHO sent one byte at a time\r\nPING\n";
    for (char ch : requests) {
        c.send(std::string(1, ch));
        std::this_thread::sleep_for(1ms);
    }
    std::string why;
    if (!expect_line(c, "sent one byte at a time", why) || !expect_line(c, "PONG", why)) {
        return fail(why);
    }
    return finish(s.server);
}

Outcome echo_8bit_clean(const Target& t) {
    Started s = launch(t);
    if (!s.ok()) {
        return s.outcome;
    }
    Client c = Client::connect(s.server.port());
    std::string text;
    for (int b = 0; b < 256; ++b) {
        if (b != '\n') {
            text += static_cast<char>(b);
        }
    }
    text += "end";  // a '\r' only at the very end would be taken as a line ending
    c.send("ECHO " + text + "\n");
    std::string why;
    if (!expect_line(c, text, why)) {
        return fail("ECHO of every byte value: " + why);
    }
    return finish(s.server);
}

Outcome garbage_gets_err(const Target& t) {
    Started s = launch(t);
    if (!s.ok()) {
        return s.outcome;
    }
    Client c = Client::connect(s.server.port());
    std::string junk = random_bytes(1000, 7);
    for (auto& ch : junk) {
        if (ch == '\n') {
            ch = '#';
        }
    }
    junk[0] = '\xff';  // never a command by chance
    c.send(junk + "\n");
    auto reply = c.read_line();
    if (!reply || reply->rfind("ERR ", 0) != 0) {
        return fail("1,000 bytes of binary garbage got '" + reply.value_or("<nothing>") +
                    "', want ERR ...");
    }
    if (c.ask("PING") != "PONG") {
        return fail("after the garbage the connection was not usable");
    }
    return finish(s.server);
}

Outcome over_long_line(const Target& t) {
    Started s = launch(t, {"--max-line", "100"});
    if (!s.ok()) {
        return s.outcome;
    }
    std::string why;
    {
        // Exactly at the limit is fine.
        Client c = Client::connect(s.server.port());
        std::string text(95, 'x');  // "ECHO " + 95 = 100 bytes
        c.send("ECHO " + text + "\r\n");
        if (!expect_line(c, text, why)) {
            return fail("a line of exactly --max-line bytes: " + why);
        }
    }
    // One past the limit, followed by more that the client keeps sending: the ERR line must
    // still arrive (no reset that destroys it), and then the server closes.
    Client c = Client::connect(s.server.port());
    c.send("PING\n" + std::string(101, 'y') + "\n" + std::string(200000, 'z'), 5s);
    if (!expect_line(c, "PONG", why)) {
        return fail("the request before the long line: " + why);
    }
    if (!expect_line(c, "ERR line too long (limit 100)", why)) {
        return fail("an over-long line: " + why);
    }
    auto rest = c.read_until_close(5s);
    if (!rest) {
        return fail("after the over-long line's ERR the server did not close within 5 s");
    }
    if (!still_serves(s.server.port(), why)) {
        return fail(why);
    }
    return finish(s.server);
}

Outcome concurrent_200(const Target& t) {
    Started s = launch(t);
    if (!s.ok()) {
        return s.outcome;
    }
    constexpr int kClients = 200;
    std::vector<Client> clients;
    for (int i = 0; i < kClients; ++i) {
        clients.push_back(Client::connect(s.server.port()));
    }
    for (int i = 0; i < kClients; ++i) {
        if (!clients[i].send("ECHO client " + std::to_string(i) + "\nPING\n")) {
            return fail("client " + std::to_string(i) + " could not send");
        }
    }
    // In connect order, read each reply and leave: a serial server serves them one by one, a
    // concurrent one has answered them all already.
    for (int i = 0; i < kClients; ++i) {
        std::string why;
        if (!expect_line(clients[i], "client " + std::to_string(i), why, 20s) ||
            !expect_line(clients[i], "PONG", why, 20s)) {
            return fail("client " + std::to_string(i) + " of 200: " + why);
        }
        clients[i].close();
    }
    return finish(s.server);
}

Outcome second_client_waits_or_not(const Target& t) {
    Started s = launch(t);
    if (!s.ok()) {
        return s.outcome;
    }
    Client a = Client::connect(s.server.port());
    if (a.ask("PING") != "PONG") {
        return fail("the first client got no PONG");
    }
    Client b = Client::connect(s.server.port());
    b.send("PING\n");
    auto early = b.read_line(t.serial ? 500ms : 5s);
    if (t.serial) {
        // The documented behaviour of an iterative server: B waits in the backlog until A leaves.
        if (early) {
            return fail("serial server answered a second client while the first was connected");
        }
        a.close();
        std::string why;
        if (!expect_line(b, "PONG", why, 5s)) {
            return fail("after the first client left, the second: " + why);
        }
    } else if (!early || *early != "PONG") {
        return fail("a second client was not answered while the first stayed connected");
    }
    return finish(s.server);
}

Outcome resets_and_vanishing_clients(const Target& t) {
    Started s = launch(t);
    if (!s.ok()) {
        return s.outcome;
    }
    for (int round = 0; round < 5; ++round) {
        {
            Client c = Client::connect(s.server.port());
            c.send("ECHO half a requ");  // no newline, then RST
            c.reset();
        }
        {
            Client c = Client::connect(s.server.port());
            c.send("WORK 30\nPING\nPING\n");  // vanishes before its replies
            c.reset();
        }
        {
            Client c = Client::connect(s.server.port());
            c.send(std::string(1000, 'P'));
            c.close();  // plain FIN mid-request
        }
        // Replies to a peer that reset must not kill the server (SIGPIPE) on the next write.
        std::this_thread::sleep_for(60ms);
        std::string why;
        if (!still_serves(s.server.port(), why)) {
            return fail("round " + std::to_string(round) + ": " + why);
        }
    }
    return finish(s.server);
}

Outcome never_reading_client(const Target& t) {
    // A serial server can only shed such a client by a send timeout: give it one.
    Started s = t.serial ? launch(t, {"--idle-timeout", "1"}) : launch(t);
    if (!s.ok()) {
        return s.outcome;
    }
    auto before = read_proc_stats(s.server.pid());
    Client hog = Client::connect(s.server.port());
    std::atomic<size_t> sent{0};
    std::atomic<bool> done{false};
    std::thread writer([&] {
        // Sends up to 64 MiB of requests and never reads a reply. Stops when everything is sent,
        // or when the server has stopped taking bytes for a second (its backpressure), or when
        // the server closed it.
        std::string chunk;
        while (chunk.size() < (1 << 16)) {
            chunk += "ECHO never read\n";
        }
        while (sent < (64u << 20)) {
            if (!hog.send(chunk, 1s)) {
                break;
            }
            sent += chunk.size();
        }
        done = true;
    });
    std::string why;
    bool answered = false;
    if (!t.serial) {
        std::this_thread::sleep_for(300ms);
        Client other = Client::connect(s.server.port());
        answered = other.ask("PING", 10s) == "PONG";
        if (!answered) {
            why = "another client got no PONG while one client wrote and never read";
        }
    }
    writer.join();
    auto after = read_proc_stats(s.server.pid());
    if (t.serial) {
        // The hog is shed by the send timeout; then the next client is served.
        hog.close();
        answered = still_serves(s.server.port(), why);
    }
    hog.close();
    if (!answered) {
        return fail(why);
    }
    if (before && after) {
        long grown = after->rss_kib - before->rss_kib;
        if (grown > 16 * 1024) {
            return fail("a client that sent " + std::to_string(sent / (1 << 20)) +
                        " MiB and never read grew the server's RSS by " + std::to_string(grown) +
                        " KiB (want a few MiB at most)");
        }
    }
    return finish(s.server);
}

Outcome max_conns(const Target& t) {
    if (t.serial) {
        return second_client_waits_or_not(t);  // it holds one connection, by construction
    }
    Started s = launch(t, {"--max-conns", "3"});
    if (!s.ok()) {
        return s.outcome;
    }
    std::vector<Client> held;
    for (int i = 0; i < 3; ++i) {
        held.push_back(Client::connect(s.server.port()));
        if (held.back().ask("PING") != "PONG") {
            return fail("connection " + std::to_string(i + 1) + " of 3 allowed got no PONG");
        }
    }
    Client extra = Client::connect(s.server.port());
    auto line = extra.read_line(5s);
    if (!line || *line != "ERR server full") {
        return fail("the 4th connection with --max-conns 3 got '" + line.value_or("<nothing>") +
                    "', want 'ERR server full'");
    }
    if (!extra.read_until_close(5s)) {
        return fail("the refused connection was not closed");
    }
    held[0].close();
    // The slot frees once the server has seen the close; give it a moment.
    bool served = false;
    for (int attempt = 0; attempt < 50 && !served; ++attempt) {
        Client again = Client::connect(s.server.port());
        served = again.ask("PING", 2s) == "PONG";
        if (!served) {
            std::this_thread::sleep_for(50ms);
        }
    }
    if (!served) {
        return fail("after one of 3 connections closed, a new one was still refused");
    }
    for (int i = 1; i < 3; ++i) {
        if (held[i].ask("PING") != "PONG") {
            return fail("a held connection stopped answering");
        }
    }
    return finish(s.server);
}

Outcome idle_timeout(const Target& t) {
    Started s = launch(t, {"--idle-timeout", "1"});
    if (!s.ok()) {
        return s.outcome;
    }
    Client idle = Client::connect(s.server.port());
    idle.send("PING\n");
    std::string why;
    if (!expect_line(idle, "PONG", why)) {
        return fail(why);
    }
    auto start = Clock::now();
    Client busy;
    if (!t.serial) {
        busy = Client::connect(s.server.port());
        for (int i = 0; i < 8; ++i) {  // active for 2 s, a request every 250 ms
            if (busy.ask("PING") != "PONG") {
                return fail("an active connection was cut while another idled");
            }
            std::this_thread::sleep_for(250ms);
        }
    }
    if (!expect_line(idle, "ERR idle timeout", why, 6s)) {
        return fail("a connection silent past --idle-timeout 1: " + why);
    }
    if (!idle.read_until_close(3s)) {
        return fail("the idle connection got ERR idle timeout but was not closed");
    }
    double took = std::chrono::duration<double>(Clock::now() - start).count();
    if (took < 0.5) {
        return fail("the idle connection was closed after only " + std::to_string(took) + " s");
    }
    return finish(s.server);
}

Outcome sigterm_exits_zero(const Target& t) {
    Started s = launch(t);
    if (!s.ok()) {
        return s.outcome;
    }
    // One connection in the middle of a long WORK, one idle, one with half a request.
    Client working = Client::connect(s.server.port());
    working.send("WORK 8000\n");
    std::vector<Client> others;
    if (!t.serial) {
        others.push_back(Client::connect(s.server.port()));
        others.back().ask("PING");
        others.push_back(Client::connect(s.server.port()));
        others.back().send("ECHO unfini");
    }
    std::this_thread::sleep_for(200ms);
    auto start = Clock::now();
    int code = s.server.stop(3s);
    double took = std::chrono::duration<double>(Clock::now() - start).count();
    if (code != 0) {
        return fail("SIGTERM with clients connected (one in WORK 8000): exit " +
                    std::to_string(code) + " after " + std::to_string(took) +
                    " s; want exit 0 within 3 s");
    }
    return pass();
}

Outcome sigterm_right_after_reply(const Target& t) {
    // The signal lands while the server is between calls (it has just sent a reply and is about
    // to wait again): a model that checks a flag and then blocks would miss it.
    for (int round = 0; round < 3; ++round) {
        Started s = launch(t);
        if (!s.ok()) {
            return s.outcome;
        }
        Client c = Client::connect(s.server.port());
        if (c.ask("PING") != "PONG") {
            return fail("no PONG");
        }
        int code = s.server.stop(3s);
        if (code != 0) {
            return fail("SIGTERM right after a reply: exit " + std::to_string(code) +
                        " (want 0 within 3 s)");
        }
    }
    return pass();
}

Outcome echo_mode_8mib(const Target& t) {
    Started s = launch(t, {"--mode", "echo"});
    if (!s.ok()) {
        return s.outcome;
    }
    Client c = Client::connect(s.server.port());
    const std::string data = random_bytes(8u << 20, 42);
    std::atomic<bool> sent_ok{false};
    std::thread writer([&] {
        // A client must read while it writes, or both sides' buffers fill and nobody moves.
        bool ok = true;
        for (size_t off = 0; off < data.size() && ok; off += 100000) {
            ok = c.send(std::string_view(data).substr(off, 100000), 20s);
        }
        sent_ok = ok;
        c.shutdown_write();
    });
    auto got = c.read_until_close(30s);
    writer.join();
    if (!sent_ok) {
        return fail("could not send 8 MiB in echo mode");
    }
    if (!got) {
        return fail("after the client half-closed, the server did not close within the deadline");
    }
    if (got->size() != data.size()) {
        return fail("echo returned " + std::to_string(got->size()) + " bytes of " +
                    std::to_string(data.size()));
    }
    if (*got != data) {
        size_t at = 0;
        while (at < data.size() && (*got)[at] == data[at]) {
            ++at;
        }
        return fail("echo returned different bytes, first at offset " + std::to_string(at));
    }
    return finish(s.server);
}

const std::vector<NamedScenario>& all_scenarios() {
    static const std::vector<NamedScenario> list = {
        {"QaBasics", qa_basics},
        {"Pipelined2000", pipelined_2000},
        {"OneByteAtATime", one_byte_at_a_time},
        {"Echo8BitClean", echo_8bit_clean},
        {"GarbageGetsErr", garbage_gets_err},
        {"OverLongLine", over_long_line},
        {"Concurrent200", concurrent_200},
        {"SecondClient", second_client_waits_or_not},
        {"ResetsAndVanishing", resets_and_vanishing_clients},
        {"NeverReadingClient", never_reading_client},
        {"MaxConns", max_conns},
        {"IdleTimeout", idle_timeout},
        {"SigtermExitsZero", sigterm_exits_zero},
        {"SigtermRightAfterReply", sigterm_right_after_reply},
        {"EchoMode8MiB", echo_mode_8mib},
    };
    return list;
}

}  // namespace iolab
