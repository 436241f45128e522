// The question-answer protocol, in two pieces that every model can use whether it blocks or not:
//   LineParser   bytes in as they arrive, complete request lines out, --max-line enforced;
//   parse_request / append_reply   one request line in, one reply line out.
// WORK and QUIT are reported to the caller instead of being carried out here, because who waits
// for a WORK (the only thread, a worker, the kernel) is exactly what differs between the models.
#pragma once

#include <atomic>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace iolab {

// Splits a byte stream into request lines. A line ends at '\n'; one '\r' before it is dropped.
// A line longer than max_line bytes (not counting "\r\n") makes the parser fail for good:
// too_long() turns true and next() returns nothing more.
//
// No copy in the common case: feed() takes a view of the bytes one read delivered (into a buffer
// the caller owns and reuses, e.g. one per loop or an io_uring provided buffer), and next()
// returns lines that point straight into it. Only a line that straddles two reads is copied, into
// the parser's own storage, so an idle connection costs the parser no buffer at all.
//
// The rule: before the caller reuses its buffer, either take every line with next() (until it
// returns nullopt) or call keep_rest(), which copies what is left. A view returned by next() is
// valid until the next call to next(), feed() or keep_rest().
class LineParser {
public:
    explicit LineParser(size_t max_line) : max_line_(max_line) {}

    void feed(std::string_view data);
    void feed(const char* data, size_t n) { feed(std::string_view(data, n)); }
    // A temporary string would be gone before next() reads it: refuse to compile that.
    template <class T>
    requires std::same_as<T, std::string>
    void feed(T&&) = delete;
    std::optional<std::string_view> next();
    // Copies the bytes fed but not yet returned into the parser's own storage.
    void keep_rest();

    bool too_long() const { return too_long_; }
    size_t max_line() const { return max_line_; }
    // Bytes received but not yet returned as requests.
    size_t buffered() const { return own_.size() - own_start_ + data_.size(); }

private:
    std::optional<std::string_view> finish(std::string_view line);
    void compact_own();

    size_t max_line_;
    std::string_view data_;  // the caller's bytes not yet parsed
    std::string own_;        // copied bytes: an unfinished line, or what keep_rest() saved
    size_t own_start_ = 0;   // bytes of own_ before this were already returned
    bool too_long_ = false;
};

enum class Verb { ping, echo, time, work, stats, quit, error };

struct Request {
    Verb verb = Verb::error;
    std::string_view text;  // ECHO's text, or the reason for ERR
    int work_ms = 0;        // WORK's argument
};

// Classifies one request line (case-insensitive command, then one space and the argument).
// The returned views point into `line`.
Request parse_request(std::string_view line);

// Counters every server keeps; STATS reports them. Relaxed atomics, so that threaded models can
// share one instance; the single-threaded models pay an uncontended increment.
struct ServerStats {
    explicit ServerStats(std::string model_name) : model(std::move(model_name)) {}
    std::string model;
    std::atomic<uint64_t> accepted{0};  // connections accepted since start
    std::atomic<uint64_t> conns{0};     // connections open now
    std::atomic<uint64_t> requests{0};  // requests answered
    std::atomic<uint64_t> refused{0};   // connections turned away (full, busy)
    // Extra "key=value ..." pairs a model adds to STATS (e.g. eagain= for busy polling).
    std::function<std::string()> extra;
};

// "model=05_epoll conns=3 accepted=10 requests=99 refused=0 threads=1 syscalls=1234 ..."
std::string stats_line(const ServerStats& stats);

// Appends the reply line (with its '\n') for any verb. For WORK it appends "DONE <ms>": call it
// after the wait. For QUIT it appends "BYE"; closing the connection is the caller's job.
void append_reply(std::string& out, const Request& req, const ServerStats& stats);

// The reply to an over-long line, and the ones for refused and idle connections.
std::string too_long_reply(size_t max_line);
inline constexpr std::string_view kServerFull = "ERR server full\n";
inline constexpr std::string_view kServerBusy = "ERR server busy\n";
inline constexpr std::string_view kIdleTimeout = "ERR idle timeout\n";
inline constexpr std::string_view kRequestTimeout = "ERR request timeout\n";

// The number of threads in this process, from /proc/self/status.
int thread_count();

}  // namespace iolab

namespace iolab {

// WORK's wait: blocks the calling thread for `ms` milliseconds, in short slices so that a stop
// signal (taken by whichever thread) ends it early. Returns false if it was cut short.
bool block_for_work(int ms);

}  // namespace iolab
