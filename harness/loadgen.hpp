// The load generator behind iolab compare, bench, scale and demo: one thread, one epoll set,
// every connection non-blocking, so that a single core can keep hundreds of thousands of
// requests per second in flight and the server, not the client, is what gets measured.
//
// Two load shapes, over persistent connections or, with connect_per_request, a new connection
// per request:
//   closed loop: each connection sends a request, waits for the whole reply, sends the next (the
//                peak a server can sustain with N clients);
//   open loop:   requests are due at a constant rate on a fixed schedule whatever the server does,
//                and latency runs from when a request was DUE, not from when it could be sent.
//                A server that stalls for 200 ms is charged 200 ms for every request that fell
//                due during the stall (no coordinated omission).
//   connect per request (closed loop only): each connection sends one request, and once its reply
//                has arrived it closes and connects again for the next; latency runs from the
//                connect, so it includes the handshake and the server's accept. This is what a
//                connection pool saves. The client closes first, so the TIME_WAIT sockets are
//                the client's; their ports are spread over the source addresses 127.0.0.2 to
//                127.0.0.254, since one source address has only ~28,000 ephemeral ports and a
//                socket in TIME_WAIT keeps its port for 60 s.
// Every reply is checked byte for byte against what the request asked for, and each failure is
// told apart by what the server did, because a refusal is a model's documented behaviour and a
// wrong byte is a bug:
//   refused:    the server sent exactly `ERR server busy` or `ERR server full` in place of a
//               reply, then closed (a pool or a cap turning a client away);
//   wrong:      a byte that differs from the reply expected, or bytes nobody asked for;
//   lost:       a connect that failed, or a reset or close before the reply;
//   unanswered: a request still without its reply when the run ends (a serial server's waiting
//               clients; counted in TargetStats::timeouts).
// The first three end their connection and count one each; the last counts requests.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "common/fd.hpp"
#include "common/options.hpp"
#include "harness/histogram.hpp"

namespace iolab {

// Monotonic time in nanoseconds (CLOCK_MONOTONIC, the clock every latency is taken on).
int64_t now_ns();
// CPU time (user + system) the calling thread has used, in seconds.
double thread_cpu_s();

// The open-loop schedule: request k (0, 1, 2, ...) is due at start + k / rate.
class OpenLoopSchedule {
public:
    OpenLoopSchedule() = default;
    OpenLoopSchedule(double rate, int64_t start_ns) : rate_(rate), start_(start_ns) {}
    int64_t due(uint64_t k) const {
        return start_ + static_cast<int64_t>(static_cast<double>(k) * 1e9 / rate_);
    }
    // How many requests are due at or before t (the k with due(k) <= t).
    uint64_t due_by(int64_t t) const;
    double rate() const { return rate_; }

private:
    double rate_ = 1;
    int64_t start_ = 0;
};

// Compares a byte stream with the bytes expected, reply by reply, as the bytes arrive in pieces.
class ReplyChecker {
public:
    // The next reply expected on this connection, after those already expected.
    void expect(std::string_view reply);
    // Checks `data` (the next bytes received). Returns the number of replies completed by it, or
    // -1 at the first byte that differs from what was expected, or that nobody asked for; why()
    // says which byte, what was expected and what came.
    // On -1 the bytes before the one that differs are consumed: pending() shows the replies
    // they completed.
    long feed(std::string_view data);
    size_t pending() const { return ends_.size(); }
    const std::string& why() const { return why_; }
    // After feed() returned -1: whether the first byte that differs is the first byte of a reply
    // (the next one expected, or one nobody asked for), and the bytes received from it on. A
    // refusal (`ERR server busy`) comes in place of a whole reply, never inside one.
    bool differs_at_reply_start() const { return at_start_; }
    const std::string& unexpected() const { return unexpected_; }
    void clear();

private:
    std::string expected_;     // expected bytes not yet received
    size_t pos_ = 0;           // bytes of expected_ already received and matched
    size_t start_ = 0;         // offset in expected_ where the first pending reply begins
    std::deque<size_t> ends_;  // end offset in expected_ of each pending reply
    uint64_t offset_ = 0;      // bytes matched since the start, for messages
    std::string why_;
    bool at_start_ = false;
    std::string unexpected_;
};

// True if `bytes` is exactly one of the QA protocol's refusal lines, `ERR server busy\n` or
// `ERR server full\n`; could_be_refusal: if it is the beginning of one.
bool is_refusal(std::string_view bytes);
bool could_be_refusal(std::string_view bytes);

// The request a load connection sends and the reply it must get, for request number `seq` of
// connection `conn`. QA mode: "ECHO <payload bytes>\n" -> "<payload bytes>\n" (payload 0: PING
// -> PONG). Echo mode: payload bytes (at least 1, the last one '\n') come back unchanged. The
// bytes differ from request to request, so a reply delivered twice, lost or out of order shows.
void make_request(Mode mode, size_t payload, uint64_t conn, uint64_t seq, std::string& request,
                  std::string& reply);

struct LoadSpec {
    Mode mode = Mode::qa;
    size_t payload = 64;
    int pipeline = 1;                  // closed loop: requests in flight per connection
    int max_outstanding = 1000;        // open loop: a connection further behind skips requests
    int max_connecting = 256;          // connects in flight at once (spares the listen backlog)
    bool connect_per_request = false;  // closed loop: a new connection for every request
};

struct TargetStats {
    uint64_t sent = 0;
    uint64_t completed = 0;  // answered: replies checked (not counting WORK connections)
    uint64_t work_completed = 0;
    // The failures, by kind (see the top of this file); errors is their sum.
    uint64_t refused = 0;   // connections turned away with ERR server busy|full, then closed
    uint64_t wrong = 0;     // connections ended by a byte that differs
    uint64_t lost = 0;      // connections failed, reset or closed before a reply
    uint64_t timeouts = 0;  // unanswered: requests without a reply at finish()
    uint64_t errors = 0;    // refused + wrong + lost + timeouts
    uint64_t skipped = 0;  // open loop: requests not sent because the connection was too far behind
    uint64_t connects = 0;  // connections established (connect per request: one per request)
    Histogram latency;
    // What the first failure was; a wrong byte replaces any earlier message of another kind,
    // since it is the one that shows a bug.
    std::string first_error;
};

class LoadGen {
public:
    explicit LoadGen(LoadSpec spec);
    ~LoadGen();
    LoadGen(const LoadGen&) = delete;
    LoadGen& operator=(const LoadGen&) = delete;

    // Adds `conns` connections to host:port (an IPv4 or IPv6 literal). rate > 0: open loop at
    // `rate` requests/s spread over them; rate == 0: closed loop. `work_conns` more connections
    // send "WORK work_ms" in a closed loop instead (iolab demo --stall); they are not in the
    // latency figures. Returns the target's index.
    size_t add_target(const std::string& host, uint16_t port, int conns, double rate,
                      int work_conns = 0, int work_ms = 0);

    // Opens every connection (non-blocking connects, max_connecting in flight) and waits until
    // each has connected or failed, or the deadline passed. Returns how many are connected.
    int connect(std::chrono::milliseconds deadline);
    // Each target's connections that are connected and alive now (connecting per request: or
    // connecting again).
    int open_conns(size_t target) const;
    // Requests sent and not yet answered, on the target's live connections.
    uint64_t outstanding(size_t target) const;
    // How long the oldest request in flight on the target's load connections (not the WORK
    // ones) has been waiting since it was due, in ns; 0 if none is.
    int64_t oldest_waiting_ns(size_t target, int64_t now) const;

    // Sends one request on every open connection (before start()) and waits up to `deadline`
    // for the replies, so that the server has set up whatever it keeps per connection. Returns
    // how many were answered.
    uint64_t ping_all(std::chrono::milliseconds deadline);

    // Starts sending: closed-loop connections send their first requests and the open-loop
    // schedules start now.
    void start();
    // Runs the event loop until `until_ns` (now_ns() time) or until keep_going() says false
    // (asked at least every 100 ms).
    void run_until(int64_t until_ns, const std::function<bool()>& keep_going = {});
    // Stops sending and waits up to `grace` for the replies in flight; those still missing are
    // counted as timeouts (unanswered). A connection that got a refusal line but was not closed
    // within `grace` counts as refused all the same.
    void finish(std::chrono::milliseconds grace);
    // Closes every connection.
    void close_all();

    TargetStats& stats(size_t target);
    // Zeroes every counter and histogram (end of warm-up, or each second in iolab demo).
    void reset_stats();

private:
    struct Conn;
    struct Target;
    void on_event(Conn& c, uint32_t events);
    void on_connected(Conn& c);
    void on_readable(Conn& c);
    void issue(Conn& c, int64_t due);
    void flush(Conn& c);
    enum class Failure { refused, wrong, lost };
    void fail(Conn& c, Failure kind, const std::string& why);
    void answered(Conn& c, long replies, bool send_more);
    void start_connects();
    bool open_socket(Conn& c);  // socket + connect (non-blocking); false if it failed
    void issue_due(int64_t now);
    int64_t next_due() const;

    LoadSpec spec_;
    Fd epfd_;
    std::vector<Target> targets_;
    std::vector<Conn> conns_;
    size_t next_connect_ = 0;  // connections not yet started: conns_[next_connect_..]
    int connecting_ = 0;
    bool sending_ = false;
    std::vector<char> buf_;
    std::string req_, rep_;     // scratch for make_request
    uint32_t next_source_ = 0;  // connect per request: the next source address, 127.0.0.2 + n
};

}  // namespace iolab
