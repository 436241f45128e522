#include "qa.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <ctime>

#include "trace.hpp"

namespace iolab {

void LineParser::compact_own() {
    own_.erase(0, own_start_);
    own_start_ = 0;
    // A long line once straddled two reads; do not keep its storage for an idle connection.
    if (own_.empty() && own_.capacity() > 1024) {
        std::string().swap(own_);
    }
}

void LineParser::keep_rest() {
    if (!data_.empty()) {
        compact_own();
        own_.append(data_);
        data_ = {};
    }
}

void LineParser::feed(std::string_view data) {
    keep_rest();
    data_ = data;
}

std::optional<std::string_view> LineParser::finish(std::string_view line) {
    if (!line.empty() && line.back() == '\r') {
        line.remove_suffix(1);
    }
    if (line.size() > max_line_) {
        too_long_ = true;
        return std::nullopt;
    }
    return line;
}

std::optional<std::string_view> LineParser::next() {
    if (too_long_) {
        return std::nullopt;
    }
    // First, complete lines already in our own storage (saved by keep_rest()).
    if (own_start_ < own_.size()) {
        size_t nl = own_.find('\n', own_start_);
        if (nl != std::string::npos) {
            std::string_view line(own_.data() + own_start_, nl - own_start_);
            own_start_ = nl + 1;
            return finish(line);
        }
    }
    compact_own();
    if (data_.empty()) {
        // Nothing new fed. Whatever own_ holds is an unfinished line; keep_rest() may have
        // saved more than a line's worth without a newline.
        if (own_.size() > max_line_ + 1) {
            too_long_ = true;
        }
        return std::nullopt;
    }
    const void* nl = std::memchr(data_.data(), '\n', data_.size());
    if (nl == nullptr) {
        // No complete line: keep the unfinished tail. It may still need a '\r' and the '\n'
        // after max_line bytes.
        if (own_.size() + data_.size() > max_line_ + 1) {
            too_long_ = true;
            data_ = {};
            return std::nullopt;
        }
        own_.append(data_);
        data_ = {};
        return std::nullopt;
    }
    size_t len = static_cast<size_t>(static_cast<const char*>(nl) - data_.data());
    std::string_view line;
    if (own_.empty()) {
        line = data_.substr(0, len);  // the common case: straight out of the caller's buffer
    } else {
        own_.append(data_.data(), len);  // the line began in an earlier read
        own_start_ = own_.size();
        line = own_;
    }
    data_.remove_prefix(len + 1);
    return finish(line);
}

namespace {

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) {
        return false;
    }
    for (size_t i = 0; i < a.size(); ++i) {
        if (std::toupper(static_cast<unsigned char>(a[i])) != b[i]) {
            return false;
        }
    }
    return true;
}

Request error(std::string_view why) {
    return {Verb::error, why, 0};
}

}  // namespace

Request parse_request(std::string_view line) {
    if (line.empty()) {
        return error("empty request");
    }
    size_t space = line.find(' ');
    std::string_view cmd = line.substr(0, space);
    bool has_arg = space != std::string_view::npos;
    std::string_view arg = has_arg ? line.substr(space + 1) : std::string_view{};

    if (iequals(cmd, "ECHO")) {
        return {Verb::echo, arg, 0};
    }
    if (iequals(cmd, "WORK")) {
        int ms = -1;
        auto [end, ec] = std::from_chars(arg.data(), arg.data() + arg.size(), ms);
        if (!has_arg || ec != std::errc() || end != arg.data() + arg.size() || ms < 0 ||
            ms > 10000) {
            return error("WORK wants milliseconds from 0 to 10000");
        }
        return {Verb::work, {}, ms};
    }
    Verb verb;
    if (iequals(cmd, "PING")) {
        verb = Verb::ping;
    } else if (iequals(cmd, "TIME")) {
        verb = Verb::time;
    } else if (iequals(cmd, "STATS")) {
        verb = Verb::stats;
    } else if (iequals(cmd, "QUIT")) {
        verb = Verb::quit;
    } else {
        return error("unknown command (try PING, ECHO, TIME, WORK, STATS, QUIT)");
    }
    if (has_arg) {
        return error("this command takes no argument");
    }
    return {verb, {}, 0};
}

int thread_count() {
    // Plain open/read, no iostream: STATS must work in a server that is out of descriptors
    // (EMFILE), and then this open fails and the count is reported as 0 instead of throwing.
    int fd = ::open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return 0;
    }
    char text[4096];
    ssize_t n = ::read(fd, text, sizeof text - 1);
    ::close(fd);
    if (n <= 0) {
        return 0;
    }
    text[n] = '\0';
    const char* at = std::strstr(text, "\nThreads:");
    return at != nullptr ? std::atoi(at + 9) : 0;
}

std::string stats_line(const ServerStats& s) {
    std::string out = "model=" + s.model;
    out += " conns=" + std::to_string(s.conns.load(std::memory_order_relaxed));
    out += " accepted=" + std::to_string(s.accepted.load(std::memory_order_relaxed));
    out += " requests=" + std::to_string(s.requests.load(std::memory_order_relaxed));
    out += " refused=" + std::to_string(s.refused.load(std::memory_order_relaxed));
    out += " threads=" + std::to_string(thread_count());
    out += " syscalls=" + std::to_string(trace::calls());
    if (s.extra) {
        std::string more = s.extra();
        if (!more.empty()) {
            out += ' ';
            out += more;
        }
    }
    return out;
}

void append_reply(std::string& out, const Request& req, const ServerStats& stats) {
    switch (req.verb) {
        case Verb::ping:
            out += "PONG\n";
            break;
        case Verb::echo:
            out.append(req.text);
            out += '\n';
            break;
        case Verb::time: {
            std::time_t now = std::time(nullptr);
            std::tm tm;
            ::gmtime_r(&now, &tm);
            char text[32];
            std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ\n", &tm);
            out += text;
            break;
        }
        case Verb::work:
            out += "DONE " + std::to_string(req.work_ms) + "\n";
            break;
        case Verb::stats:
            out += stats_line(stats);
            out += '\n';
            break;
        case Verb::quit:
            out += "BYE\n";
            break;
        case Verb::error:
            out += "ERR ";
            out.append(req.text);
            out += '\n';
            break;
    }
}

std::string too_long_reply(size_t max_line) {
    return "ERR line too long (limit " + std::to_string(max_line) + ")\n";
}

}  // namespace iolab

#include <thread>

#include "stop.hpp"

namespace iolab {

bool block_for_work(int ms) {
    using namespace std::chrono;
    auto start = steady_clock::now();
    auto until = start + milliseconds(ms);
    for (;;) {
        if (stop_requested()) {
            if (trace::enabled()) {
                trace::record("work", -1, -ECANCELED, start);
            }
            return false;
        }
        auto left = until - steady_clock::now();
        if (left <= steady_clock::duration::zero()) {
            // Not a system call: the handler's own time, so that a timeline can draw it (iolab
            // timeline). It is traced, not counted.
            if (trace::enabled()) {
                trace::record("work", -1, ms, start);
            }
            return true;
        }
        std::this_thread::sleep_for(std::min<steady_clock::duration>(left, milliseconds(20)));
    }
}

}  // namespace iolab
