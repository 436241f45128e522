#include "harness/scenarios.hpp"

#include <poll.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <future>
#include <optional>
#include <random>
#include <sstream>
#include <thread>

namespace iolab {

namespace {

// "2026-11-26T13:05:00Z": the shape TIME must reply with.
bool iso8601_utc(const std::string& s) {
    const std::string shape = "dddd-dd-ddTdd:dd:ddZ";
    if (s.size() != shape.size()) {
        return false;
    }
    for (size_t i = 0; i < s.size(); ++i) {
        bool digit = std::isdigit(static_cast<unsigned char>(s[i])) != 0;
        if (shape[i] == 'd' ? !digit : s[i] != shape[i]) {
            return false;
        }
    }
    return true;
}

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

// From each model's documented defaults. select(2) sees only descriptors below FD_SETSIZE
// (1024), a few of which the server holds itself: the rows stay at 1000.
Cap documented_cap(const Variant& v) {
    if (v.has("serial")) {
        return {1, "serial: one client at a time"};
    }
    if (v.name == "02_thread_per_conn_pool") {
        return {4, "--threads 4: each worker holds one connection for its whole life"};
    }
    if (v.name == "07_aio") {
        return {256, "--max-aio 256: one glibc AIO helper thread per connection"};
    }
    if (v.name == "02_process_per_conn") {
        return {256, "--max-procs 256: one child process per connection"};
    }
    if (v.name == "02_thread_per_conn") {
        return {1000, "--max-threads 1000: one thread per connection"};
    }
    if (v.name == "04_select") {
        return {1000, "FD_SETSIZE 1024: select(2) takes no descriptor above 1023"};
    }
    return {};
}

Target target_for(const Variant& v) {
    return {v.name,
            [v](const std::vector<std::string>& extra) { return ServerProcess::start(v, extra); },
            v.has("serial"), documented_cap(v).conns};
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
    if (!iso8601_utc(time)) {
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
    // One connection in the middle of a long WORK, one idle, one with half a request. The idle
    // one asks its PING before the WORK starts: a single-loop server answers nothing while WORK
    // runs, and the PING would only wait out its deadline.
    std::vector<Client> others;
    if (!t.serial) {
        others.push_back(Client::connect(s.server.port()));
        others.back().ask("PING");
        others.push_back(Client::connect(s.server.port()));
        others.back().send("ECHO unfini");
    }
    Client working = Client::connect(s.server.port());
    working.send("WORK 8000\n");
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

namespace {

double seconds_since(Clock::time_point start) {
    return std::chrono::duration<double>(Clock::now() - start).count();
}

// What a slowloris client saw while it trickled.
struct Trickled {
    std::optional<std::string> line;  // the first line the server sent meanwhile
    bool lost = false;                // a send failed: the server closed without a line
    Clock::time_point last_byte;
};

// Sends one byte of a request line that never ends every 200 ms, for at most `span`, and
// listens between the bytes; stops at the first line the server sends.
Trickled trickle(Client& c, std::chrono::milliseconds span) {
    const std::string text = "ECHO this request line never ends ";
    Trickled r;
    auto start = Clock::now();
    for (size_t i = 0; Clock::now() - start < span; ++i) {
        if (!c.send(std::string(1, text[i % text.size()]), 1s)) {
            r.lost = true;
            break;
        }
        r.last_byte = Clock::now();
        r.line = c.read_line(200ms);
        if (r.line) {
            break;
        }
    }
    return r;
}

// With --request-timeout 1: the trickler is shed, a client that completes its lines is not, and
// a line sent slowly but finished in time is answered.
Outcome trickler_is_shed(const Target& t) {
    Started s = launch(t, {"--request-timeout", "1", "--idle-timeout", "0"});
    if (!s.ok()) {
        return s.outcome;
    }
    Client loris = Client::connect(s.server.port());
    Trickled seen;
    double err_at = -1;
    std::optional<std::string> rest;
    // A jthread joins when destroyed, so an exception from a connect below cannot leave it
    // running against the locals it fills.
    std::jthread slowloris([&] {
        auto first_byte = Clock::now();
        seen = trickle(loris, 6s);
        err_at = seconds_since(first_byte);
        rest = loris.read_until_close(3s);
        loris.close();
    });
    if (t.serial) {
        // One client at a time: the others would wait behind the trickler, so they come after.
        slowloris.join();
    }
    std::string why;
    // A client that completes its lines, a request every 250 ms for 2 s, each in one piece: its
    // connection lives twice as long as the limit, and must not be cut.
    Client busy = Client::connect(s.server.port());
    for (int i = 0; i < 8 && why.empty(); ++i) {
        std::string reply = busy.ask("PING");
        if (reply != "PONG") {
            why = "a client that completes every line (a PING every 250 ms) got '" + reply +
                  "' after " + std::to_string(i * 250) + " ms with --request-timeout 1";
        }
        std::this_thread::sleep_for(250ms);
    }
    busy.close();
    // Two lines in a row, each sent a byte at a time over 0.6 s: each is finished within the
    // limit, though together they take longer, so a timer not stopped at the first '\n' would
    // cut the second.
    Client patient = Client::connect(s.server.port());
    for (const char* word : {"first", "second"}) {
        if (!why.empty()) {
            break;
        }
        std::string line = std::string("ECHO slow ") + word + "\n";
        auto step = std::chrono::milliseconds(600 / line.size());
        for (char ch : line) {
            patient.send(std::string(1, ch));
            std::this_thread::sleep_for(step);
        }
        if (!expect_line(patient, std::string("slow ") + word, why)) {
            why = std::string("a line sent slowly over 0.6 s (the ") + word +
                  " of two) with --request-timeout 1: " + why;
        }
    }
    if (slowloris.joinable()) {
        slowloris.join();
    }
    if (!why.empty()) {
        return fail(why);
    }
    if (!seen.line) {
        return fail(std::string("a client that sends a byte every 200 ms and never a newline ") +
                    (seen.lost ? "was closed without a line" : "got nothing within 6 s") +
                    " with --request-timeout 1; want 'ERR request timeout' after about 1 s");
    }
    if (*seen.line != "ERR request timeout") {
        return fail("the trickler got '" + seen.line->substr(0, 200) +
                    "', want 'ERR request timeout'");
    }
    if (err_at < 0.8 || err_at > 4) {
        return fail("the trickler got ERR request timeout " + std::to_string(err_at) +
                    " s after its first byte; want about 1 s (--request-timeout 1)");
    }
    if (!rest) {
        return fail("after ERR request timeout the server did not close within 3 s");
    }
    if (!rest->empty()) {
        return fail("after ERR request timeout the server sent more: '" + rest->substr(0, 100) +
                    "'");
    }
    return finish(s.server);
}

// The difference from --idle-timeout: every byte is activity, so the idle timer alone never
// sheds a trickler; once it falls silent, the idle limit applies as usual.
Outcome trickler_outlives_idle_timeout(const Target& t) {
    Started s = launch(t, {"--idle-timeout", "1"});
    if (!s.ok()) {
        return s.outcome;
    }
    Client loris = Client::connect(s.server.port());
    Trickled seen = trickle(loris, 1600ms);
    if (seen.line || seen.lost) {
        return fail("with --idle-timeout 1 alone, a client sending a byte every 200 ms was " +
                    (seen.line ? "sent '" + seen.line->substr(0, 100) + "'" : "closed") +
                    " while it was still sending; the idle timer restarts on every byte");
    }
    auto line = loris.read_line(6s);
    double silent = seconds_since(seen.last_byte);
    if (!line || *line != "ERR idle timeout") {
        return fail("with --idle-timeout 1, a trickler that fell silent got '" +
                    line.value_or("<nothing within 6 s>") + "', want 'ERR idle timeout'");
    }
    if (silent < 0.75) {
        return fail("with --idle-timeout 1, the trickler was closed " + std::to_string(silent) +
                    " s after its last byte; want about 1 s of silence");
    }
    if (!loris.read_until_close(3s)) {
        return fail("after ERR idle timeout the trickler was not closed within 3 s");
    }
    return finish(s.server);
}

}  // namespace

Outcome request_timeout(const Target& t) {
    // The two halves on two servers at once, to keep the scenario short.
    auto idle_only =
        std::async(std::launch::async, [&t] { return trickler_outlives_idle_timeout(t); });
    Outcome shed = trickler_is_shed(t);
    Outcome idle = idle_only.get();
    return shed.passed() ? idle : shed;
}

namespace {

// One client that pipelines ECHO requests as fast as the server takes them. Its replies are read
// on a thread of its own, so it never stops the server by leaving them unread: the server always
// has more of its requests waiting, which is what starves the others in a loop that serves one
// connection until EAGAIN.
class HeavyClient {
public:
    explicit HeavyClient(uint16_t port) : c_(Client::connect(port)) {
        std::string line = "ECHO the heavy client pipelines without waiting 0123456789\n";
        while (chunk_.size() < (64u << 10)) {
            chunk_ += line;
        }
        writer_ = std::thread([this] {
            while (!stop_) {
                // A send cut short by its deadline leaves half a line, which the next chunk
                // completes: a longer ECHO, still far below --max-line.
                c_.send(chunk_, 200ms);
            }
        });
        reader_ = std::thread([this] {
            while (!stop_) {
                std::string got = c_.read_exact(1 << 20, 50ms);
                replies_ += static_cast<uint64_t>(std::count(got.begin(), got.end(), '\n'));
            }
        });
    }
    HeavyClient(const HeavyClient&) = delete;
    HeavyClient& operator=(const HeavyClient&) = delete;
    ~HeavyClient() { leave(); }

    // Stops both threads and closes (a reset, since its replies are left unread).
    void leave() {
        stop_ = true;
        if (writer_.joinable()) {
            writer_.join();
        }
        if (reader_.joinable()) {
            reader_.join();
        }
        c_.close();
    }
    uint64_t replies() const { return replies_; }

private:
    Client c_;
    std::string chunk_;
    std::atomic<bool> stop_{false};
    std::atomic<uint64_t> replies_{0};
    std::thread writer_;
    std::thread reader_;
};

struct PingPong {
    std::vector<double> latency_ms;  // sorted
    std::vector<int> replies;        // per client
    std::string error;
    double percentile(double q) const {
        if (latency_ms.empty()) {
            return 0;
        }
        size_t i = static_cast<size_t>(q * static_cast<double>(latency_ms.size() - 1));
        return latency_ms[i];
    }
    int fewest() const {
        return replies.empty() ? 0 : *std::min_element(replies.begin(), replies.end());
    }
};

// Each client sends PING, waits for PONG, sends the next, for `span`; one thread polls them all.
PingPong ping_pong(std::vector<Client>& clients, std::chrono::milliseconds span) {
    PingPong r;
    r.replies.assign(clients.size(), 0);
    std::vector<Clock::time_point> sent(clients.size());
    std::vector<pollfd> fds;
    for (size_t i = 0; i < clients.size(); ++i) {
        fds.push_back({clients[i].fd(), POLLIN | POLLRDHUP, 0});
        clients[i].send("PING\n");
        sent[i] = Clock::now();
    }
    auto until = Clock::now() + span;
    while (Clock::now() < until && r.error.empty()) {
        if (::poll(fds.data(), fds.size(), 10) < 0 && errno != EINTR) {
            r.error = std::string("poll: ") + std::strerror(errno);
            break;
        }
        for (size_t i = 0; i < clients.size() && r.error.empty(); ++i) {
            if (fds[i].revents == 0) {
                continue;
            }
            auto line = clients[i].read_line(0ms);
            if (!line) {
                if (fds[i].revents & (POLLRDHUP | POLLHUP | POLLERR)) {
                    r.error = "ping client " + std::to_string(i) + " was closed by the server";
                }
                continue;
            }
            if (*line != "PONG") {
                r.error = "ping client " + std::to_string(i) + " got '" + line->substr(0, 100) +
                          "', want PONG";
                break;
            }
            auto now = Clock::now();
            r.latency_ms.push_back(
                std::chrono::duration<double, std::milli>(now - sent[i]).count());
            ++r.replies[i];
            clients[i].send("PING\n");
            sent[i] = now;
        }
    }
    // The reply each client still waits for counts with the time it has waited so far: a client
    // starved for the whole run must show in the figures, not vanish from them.
    auto now = Clock::now();
    for (size_t i = 0; i < clients.size(); ++i) {
        r.latency_ms.push_back(std::chrono::duration<double, std::milli>(now - sent[i]).count());
    }
    std::sort(r.latency_ms.begin(), r.latency_ms.end());
    return r;
}

std::string describe(const PingPong& p) {
    char text[160];
    std::snprintf(text, sizeof text,
                  "ping-pong p50 %.2f ms, p99 %.2f ms, max %.1f ms, fewest "
                  "replies to one client %d",
                  p.percentile(0.5), p.percentile(0.99),
                  p.latency_ms.empty() ? 0.0 : p.latency_ms.back(), p.fewest());
    return text;
}

// 100 ms in the optimized build; an unoptimized or sanitized build does several times the work
// per request on a machine the tests share, and gets 400 ms (as model_05_epoll_test does). Both
// are far from a starving loop, whose ping clients wait the whole run and get no reply at all.
#if defined(NDEBUG) && !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
constexpr double kP99LimitMs = 100;
#else
constexpr double kP99LimitMs = 400;
#endif
constexpr int kFewestReplies = 10;

// A serial server serves one client at a time, so a heavy client holds it and nobody else is
// answered meanwhile: that is the model, as in SecondClient. What fairness means there is order:
// a ping client waits while the heavy client is connected, is answered once it leaves, and from
// then on gets the server to itself.
Outcome fairness_serial(const Target& t, ServerProcess& server) {
    std::string why;
    std::vector<Client> pinger;
    {
        HeavyClient heavy(server.port());
        std::this_thread::sleep_for(300ms);
        pinger.push_back(Client::connect(server.port()));
        pinger[0].send("PING\n");
        if (auto early = pinger[0].read_line(500ms)) {
            return fail(t.name + ", a serial server, answered '" + *early +
                        "' to a second client while a heavy client was connected");
        }
        heavy.leave();
        if (heavy.replies() < 1000) {
            return fail("the heavy client got only " + std::to_string(heavy.replies()) +
                        " replies in 0.8 s");
        }
    }
    if (!expect_line(pinger[0], "PONG", why, 5s)) {
        return fail("once the heavy client left, the waiting ping client: " + why);
    }
    PingPong p = ping_pong(pinger, 1000ms);
    if (!p.error.empty()) {
        return fail(p.error);
    }
    if (p.percentile(0.99) > kP99LimitMs) {
        return fail("alone on a serial server after the heavy client left: " + describe(p));
    }
    return finish(server);
}

Outcome fairness_once(const Target& t) {
    Started s = launch(t);
    if (!s.ok()) {
        return s.outcome;
    }
    if (t.serial) {
        return fairness_serial(t, s.server);
    }
    // 20 ping clients beside the heavy one; fewer under a cap (the pool's 4 workers), so that
    // every client is being served at once and what is measured is the turns, not a queue.
    int pingers = 20;
    if (t.served_at_once > 0) {
        pingers = std::min(pingers, t.served_at_once - 1);
    }
    std::vector<Client> clients;
    for (int i = 0; i < pingers; ++i) {
        clients.push_back(Client::connect(s.server.port()));
        if (clients.back().ask("PING") != "PONG") {
            return fail("ping client " + std::to_string(i) + " got no PONG before the load");
        }
    }
    HeavyClient heavy(s.server.port());
    std::this_thread::sleep_for(200ms);  // the heavy client's socket fills first
    PingPong p = ping_pong(clients, 1500ms);
    heavy.leave();
    if (!p.error.empty()) {
        return fail(p.error + " while a heavy client pipelined");
    }
    if (heavy.replies() < 1000) {
        return fail("the heavy client got only " + std::to_string(heavy.replies()) +
                    " replies in 1.7 s, so it did not load the server; " + describe(p));
    }
    if (p.percentile(0.99) > kP99LimitMs || p.fewest() < kFewestReplies) {
        return fail(std::to_string(pingers) + " ping clients beside one that pipelines ECHO (" +
                    std::to_string(heavy.replies()) + " replies): " + describe(p) +
                    "; want p99 under " + std::to_string(static_cast<int>(kP99LimitMs)) +
                    " ms and at least 10 replies each: one connection that keeps its socket "
                    "full must not keep the loop from the others");
    }
    return finish(s.server);
}

}  // namespace

Outcome fairness(const Target& t) {
    // A machine shared with other tests can stall every client at once for a moment, which is
    // not what this measures, so a failed run is tried once more. A loop that serves one
    // connection until it runs dry fails every run: the other clients get nothing at all.
    Outcome first = fairness_once(t);
    if (!first.failed()) {
        return first;
    }
    Outcome second = fairness_once(t);
    if (second.failed()) {
        second.why += " (the first run: " + first.why + ")";
    }
    return second;
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
        {"RequestTimeout", request_timeout},
        {"Fairness", fairness},
    };
    return list;
}

}  // namespace iolab
