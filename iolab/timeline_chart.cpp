// iolab timeline, the chart: the two parsers (the lab's --trace lines and strace -f -ttt -T), the
// lanes built from their calls and the clients' records, and the measured numbers.
// timeline_svg.cpp draws a Chart; timeline.cpp runs the scene.

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <map>
#include <set>

#include "iolab/timeline.hpp"

namespace iolab::timeline {

namespace {

// "-EAGAIN" -> -11; strerrorname_np() is glibc's table of the names the trace prints.
long errno_by_name(std::string_view name) {
    for (int e = 1; e < 4096; ++e) {
        const char* n = ::strerrorname_np(e);
        if (n != nullptr && name == n) {
            return -e;
        }
    }
    return -1;
}

bool parse_int(std::string_view s, int64_t& out) {
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc{} && p == s.data() + s.size();
}

std::vector<std::string_view> split_spaces(std::string_view line) {
    std::vector<std::string_view> out;
    size_t i = 0;
    while (i < line.size()) {
        while (i < line.size() && line[i] == ' ') {
            ++i;
        }
        size_t j = i;
        while (j < line.size() && line[j] != ' ') {
            ++j;
        }
        if (j > i) {
            out.push_back(line.substr(i, j - i));
        }
        i = j;
    }
    return out;
}

std::string format_us(double us) {
    char buf[48];
    if (us >= 10000) {
        std::snprintf(buf, sizeof buf, "%.1f ms", us / 1000);
    } else if (us >= 1000) {
        std::snprintf(buf, sizeof buf, "%.2f ms", us / 1000);
    } else {
        std::snprintf(buf, sizeof buf, "%.0f µs", us);
    }
    return buf;
}

double us_of(int64_t ns) {
    return static_cast<double>(ns) / 1000.0;
}

bool is_one_of(const std::string& name, std::initializer_list<const char*> names) {
    return std::any_of(names.begin(), names.end(), [&](const char* n) { return name == n; });
}

bool is_completion(const std::string& name) {
    return name.rfind("cqe_", 0) == 0 || name == "pread_event";
}
bool is_read(const std::string& name) {
    return is_one_of(name, {"recv", "recvfrom", "recvmsg", "read", "readv", "pread64"});
}
bool is_write(const std::string& name) {
    return is_one_of(name, {"send", "sendto", "sendmsg", "write", "writev", "pwrite64"});
}
bool is_completion_wait(const std::string& name) {
    return is_one_of(
        name, {"io_uring_enter", "io_uring_submit_and_wait", "io_getevents", "io_pgetevents"});
}
// Calls that sleep until something is ready or complete: phase 1, or (for the completion waits)
// both phases done by someone else.
bool is_wait(const std::string& name) {
    return is_one_of(name, {"epoll_wait", "epoll_pwait", "epoll_pwait2", "select", "pselect6",
                            "poll", "ppoll", "sigsuspend", "rt_sigsuspend", "sigtimedwait",
                            "rt_sigtimedwait", "sigwaitinfo", "accept", "accept4", "futex",
                            "aio_suspend", "pause", "wait4"}) ||
           is_completion_wait(name);
}
bool is_accept(const std::string& name) {
    return name == "accept" || name == "accept4" || name == "cqe_accept";
}
bool is_handler(const std::string& name) {
    return is_one_of(name, {"work", "clock_nanosleep", "nanosleep"});
}
// What strace sees that says nothing about IO: the trace's own write(2) lines are dropped by fd.
bool is_noise(const Call& c) {
    if (c.source == "strace" && c.fd == 2 && is_write(c.name)) {
        return true;
    }
    return is_one_of(c.name, {"gettid",
                              "getpid",
                              "clock_gettime",
                              "gettimeofday",
                              "mmap",
                              "munmap",
                              "mprotect",
                              "brk",
                              "madvise",
                              "rt_sigprocmask",
                              "rt_sigaction",
                              "sigaltstack",
                              "set_robust_list",
                              "rseq",
                              "prctl",
                              "getrandom",
                              "sched_getaffinity",
                              "exit",
                              "exit_group",
                              "fstat",
                              "newfstatat",
                              "restart_syscall"});
}

}  // namespace

std::optional<Call> parse_trace_line(std::string_view line) {
    std::vector<std::string_view> f = split_spaces(line);
    int64_t at = 0;
    if (f.size() < 5 || !parse_int(f[0], at)) {
        return std::nullopt;
    }
    Call c;
    c.name = std::string(f[1]);
    c.source = "--trace";
    bool have_fd = false, have_ret = false, have_dur = false, have_mono = false;
    for (size_t i = 2; i < f.size(); ++i) {
        std::string_view kv = f[i];
        size_t eq = kv.find('=');
        if (eq == std::string_view::npos) {
            return std::nullopt;
        }
        std::string_view key = kv.substr(0, eq), value = kv.substr(eq + 1);
        int64_t n = 0;
        if (key == "fd" && parse_int(value, n)) {
            c.fd = static_cast<int>(n);
            have_fd = true;
        } else if (key == "ret") {
            c.ret = std::string(value);
            if (parse_int(value, n)) {
                c.result = static_cast<long>(n);
            } else if (!value.empty() && value[0] == '-') {
                c.result = errno_by_name(value.substr(1));
            } else {
                return std::nullopt;
            }
            have_ret = true;
        } else if (key == "dur_us" && parse_int(value, n)) {
            c.dur_ns = n * 1000;
            have_dur = true;
        } else if (key == "mono_ns" && parse_int(value, n)) {
            c.start_ns = n;
            have_mono = true;
        } else if (key == "tid" && parse_int(value, n)) {
            c.tid = static_cast<int>(n);
        }
    }
    if (!have_fd || !have_ret || !have_dur || !have_mono) {
        return std::nullopt;
    }
    return c;
}

std::vector<Call> parse_trace(std::string_view text) {
    std::vector<Call> out;
    size_t pos = 0;
    while (pos < text.size()) {
        size_t nl = text.find('\n', pos);
        std::string_view line =
            text.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
        if (auto c = parse_trace_line(line)) {
            out.push_back(std::move(*c));
        }
        pos = nl == std::string_view::npos ? text.size() : nl + 1;
    }
    return out;
}

namespace {

// "1700000000.123456" -> nanoseconds.
bool parse_stamp(std::string_view s, int64_t& ns) {
    size_t dot = s.find('.');
    int64_t sec = 0, frac = 0;
    if (dot == std::string_view::npos || !parse_int(s.substr(0, dot), sec) ||
        !parse_int(s.substr(dot + 1), frac)) {
        return false;
    }
    size_t digits = s.size() - dot - 1;
    for (size_t i = digits; i < 9; ++i) {
        frac *= 10;
    }
    ns = sec * 1000000000 + frac;
    return true;
}

// The tail of a finished call, "...) = -1 EAGAIN (Resource ...) <0.000012>": result and duration.
bool parse_outcome(std::string_view rest, Call& c) {
    size_t eq = rest.rfind(") = ");
    size_t lt = rest.rfind(" <");
    if (eq == std::string_view::npos || lt == std::string_view::npos || lt < eq) {
        return false;
    }
    std::vector<std::string_view> ret = split_spaces(rest.substr(eq + 4, lt - eq - 4));
    int64_t n = 0;
    if (ret.empty()) {
        return false;
    }
    if (ret[0] == "-1" && ret.size() >= 2) {
        c.result = errno_by_name(ret[1]);
        c.ret = "-" + std::string(ret[1]);
    } else if (parse_int(ret[0], n)) {
        c.result = static_cast<long>(n);
        c.ret = std::string(ret[0]);
    } else {
        c.result = 0;
        c.ret = std::string(ret[0]);
    }
    std::string_view dur = rest.substr(lt + 2);
    if (!dur.empty() && dur.back() == '>') {
        dur.remove_suffix(1);
    }
    int64_t dur_ns = 0;
    if (!parse_stamp(dur, dur_ns)) {
        return false;
    }
    c.dur_ns = dur_ns;
    return true;
}

// "read(7, ..." -> name "read", fd 7 (the first argument when it is a number).
void parse_head(std::string_view head, Call& c) {
    size_t paren = head.find('(');
    c.name = std::string(head.substr(0, paren));
    if (paren == std::string_view::npos) {
        return;
    }
    std::string_view args = head.substr(paren + 1);
    size_t end = 0;
    while (end < args.size() && args[end] >= '0' && args[end] <= '9') {
        ++end;
    }
    int64_t fd = 0;
    if (end > 0 && end < args.size() && (args[end] == ',' || args[end] == ')') &&
        parse_int(args.substr(0, end), fd)) {
        c.fd = static_cast<int>(fd);
    }
}

}  // namespace

std::vector<Call> parse_strace(std::string_view text, int64_t realtime_minus_mono_ns) {
    std::vector<Call> out;
    std::map<int, Call> unfinished;
    size_t pos = 0;
    while (pos < text.size()) {
        size_t nl = text.find('\n', pos);
        std::string_view line =
            text.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
        pos = nl == std::string_view::npos ? text.size() : nl + 1;
        size_t sp1 = line.find(' ');
        if (sp1 == std::string_view::npos) {
            continue;
        }
        size_t at = line.find_first_not_of(' ', sp1);
        size_t sp2 = at == std::string_view::npos ? at : line.find(' ', at);
        int64_t pid = 0, stamp = 0;
        if (sp2 == std::string_view::npos || !parse_int(line.substr(0, sp1), pid) ||
            !parse_stamp(line.substr(at, sp2 - at), stamp)) {
            continue;
        }
        std::string_view rest = line.substr(sp2 + 1);
        if (rest.rfind("---", 0) == 0 || rest.rfind("+++", 0) == 0) {
            continue;
        }
        int tid = static_cast<int>(pid);
        if (rest.rfind("<... ", 0) == 0) {
            auto it = unfinished.find(tid);
            if (it == unfinished.end()) {
                continue;
            }
            Call c = it->second;
            unfinished.erase(it);
            if (parse_outcome(rest, c)) {
                out.push_back(std::move(c));
            }
            continue;
        }
        Call c;
        c.tid = tid;
        c.source = "strace";
        c.start_ns = stamp - realtime_minus_mono_ns;
        parse_head(rest, c);
        if (rest.size() >= 16 && rest.substr(rest.size() - 16) == "<unfinished ...>") {
            unfinished[tid] = c;
        } else if (parse_outcome(rest, c)) {
            out.push_back(std::move(c));
        }
    }
    std::sort(out.begin(), out.end(),
              [](const Call& a, const Call& b) { return a.start_ns < b.start_ns; });
    return out;
}

namespace {

// Which of the scene's clients a server descriptor belonged to at a moment: every accept that
// returned a new descriptor is matched, in order, to the clients in the order their connects
// completed (the kernel's accept queue is first in, first out).
class FdOwners {
public:
    FdOwners(const std::vector<Call>& calls, const std::vector<ClientRecord>& clients,
             int64_t t0_ns, bool processes)
        : processes_(processes) {
        std::vector<std::pair<int64_t, std::string>> connected;
        for (const ClientRecord& r : clients) {
            for (const ClientEvent& e : r.events) {
                if (e.kind == ClientEvent::Kind::connect) {
                    connected.emplace_back(e.end_ns, r.label);
                }
            }
        }
        std::sort(connected.begin(), connected.end());
        size_t next = 0;
        for (const Call& c : calls) {
            if (first_call_.find(c.tid) == first_call_.end()) {
                first_call_[c.tid] = c.start_ns;
            }
            if (is_accept(c.name) && c.result >= 0 && c.end_ns() >= t0_ns &&
                next < connected.size()) {
                owners_.push_back(
                    {c.end_ns(), static_cast<int>(c.result), c.tid, connected[next++].second});
            }
        }
    }

    std::string owner(int fd, int64_t at_ns, int tid) const {
        bool accepted_here = std::any_of(owners_.begin(), owners_.end(),
                                         [&](const Owner& o) { return o.tid == tid; });
        // A child process holds the descriptor it was forked with, even after its parent reuses
        // the number for the next connection.
        int64_t limit = at_ns;
        if (processes_ && !accepted_here) {
            auto it = first_call_.find(tid);
            limit = it == first_call_.end() ? at_ns : it->second;
        }
        std::string found;
        for (const Owner& o : owners_) {
            if (o.fd == fd && o.at_ns <= limit + 1000 && (!accepted_here || o.tid == tid)) {
                found = o.client;
            }
        }
        return found;
    }

private:
    struct Owner {
        int64_t at_ns;
        int fd;
        int tid;
        std::string client;
    };
    std::vector<Owner> owners_;
    std::map<int, int64_t> first_call_;
    bool processes_;
};

// The client event that splits a call holding both phases: the first send (or close, for a
// read that returns 0) of `client` strictly inside the call; with client empty, any client's.
std::optional<int64_t> first_client_event_inside(const std::vector<ClientRecord>& clients,
                                                 const std::string& client, int64_t start,
                                                 int64_t end) {
    std::optional<int64_t> best;
    for (const ClientRecord& r : clients) {
        if (!client.empty() && r.label != client) {
            continue;
        }
        for (const ClientEvent& e : r.events) {
            bool moves_data =
                e.kind == ClientEvent::Kind::send || e.kind == ClientEvent::Kind::close;
            if (moves_data && e.start_ns > start && e.start_ns < end &&
                (!best || e.start_ns < *best)) {
                best = e.start_ns;
            }
        }
    }
    return best;
}

Activity activity_of(const Call& c) {
    if (c.result == -EAGAIN || (c.name == "aio_error" && c.result == EINPROGRESS)) {
        return Activity::polling;
    }
    if (is_handler(c.name)) {
        return Activity::handler;
    }
    if (is_completion(c.name)) {
        return Activity::completion;
    }
    if (is_wait(c.name)) {
        return Activity::wait;
    }
    if (is_read(c.name) || is_write(c.name)) {
        return Activity::copy;
    }
    return Activity::other;
}

// A blocking read longer than this that no client send split is drawn as waiting throughout.
constexpr int64_t kLongCallNs = 1000000;

Bar bar_of(const Call& c, const std::string& client, const std::vector<ClientRecord>& clients) {
    Bar b;
    b.start_ns = c.start_ns;
    b.end_ns = c.end_ns();
    b.activity = activity_of(c);
    b.client = client;
    b.source = c.source;
    b.read_call = is_read(c.name);
    std::string on =
        "fd=" + std::to_string(c.fd) + (client.empty() ? "" : " (client " + client + ")");
    b.title = c.name + " " + on + " ret=" + c.ret + ", " + format_us(us_of(c.dur_ns)) + " [" +
              c.source + "]";
    b.label = c.name;
    if (b.activity == Activity::copy && b.read_call && c.result >= 0) {
        if (auto split = first_client_event_inside(clients, client, b.start_ns, b.end_ns)) {
            b.split_ns = split;
            b.activity = Activity::wait;
            b.title += ": waited " + format_us(us_of(*split - b.start_ns)) +
                       " until the client sent, then " + format_us(us_of(b.end_ns - *split)) +
                       " to wake up and copy the bytes";
        } else if (c.dur_ns > kLongCallNs) {
            b.activity = Activity::wait;
        }
    } else if (b.activity == Activity::wait && is_completion_wait(c.name)) {
        if (auto split = first_client_event_inside(clients, "", b.start_ns, b.end_ns)) {
            b.split_ns = split;
            b.title += ": waited " + format_us(us_of(*split - b.start_ns)) +
                       " until a client sent, then " + format_us(us_of(b.end_ns - *split)) +
                       " while the kernel completed the operation (the copy included)";
        }
    }
    if (c.name == "work") {
        b.label = "WORK " + c.ret + " ms";
        b.title = "the handler ran WORK " + c.ret + " for " + format_us(us_of(c.dur_ns)) + " [" +
                  c.source + "]";
    }
    return b;
}

void clip(std::vector<Bar>& bars, int64_t t0, int64_t t1) {
    std::vector<Bar> kept;
    for (Bar& b : bars) {
        if (b.end_ns < t0 || b.start_ns > t1) {
            continue;
        }
        b.start_ns = std::max(b.start_ns, t0);
        b.end_ns = std::min(b.end_ns, t1);
        if (b.split_ns && (*b.split_ns < b.start_ns || *b.split_ns > b.end_ns)) {
            b.split_ns.reset();
        }
        kept.push_back(std::move(b));
    }
    bars = std::move(kept);
}

// block_for_work sleeps in slices of at most 20 ms; strace sees each slice as a call of its own.
void merge_handler_slices(std::vector<Bar>& bars) {
    std::vector<Bar> out;
    for (Bar& b : bars) {
        if (!out.empty() && b.activity == Activity::handler &&
            out.back().activity == Activity::handler && b.source == "strace" &&
            out.back().source == "strace" && b.start_ns - out.back().end_ns < 500000) {
            out.back().end_ns = b.end_ns;
            continue;
        }
        if (b.activity == Activity::handler && b.source == "strace") {
            b.label = "WORK (sleeping)";
        }
        out.push_back(std::move(b));
    }
    for (Bar& b : out) {
        if (b.activity == Activity::handler && b.source == "strace") {
            b.title = "the handler (WORK) slept " + format_us(us_of(b.end_ns - b.start_ns)) +
                      " in clock_nanosleep slices [strace]";
        }
    }
    bars = std::move(out);
}

int work_ms_of(const std::string& text) {
    size_t at = text.find("WORK ");
    if (at == std::string::npos) {
        return -1;
    }
    return std::atoi(text.c_str() + at + 5);
}

// Where neither the trace nor strace saw the handler, the longest stretch without a traced call
// on any server lane, between the WORK's send and its reply, is where it ran.
void infer_handlers(std::vector<Lane>& lanes, size_t server_lanes,
                    const std::vector<ClientRecord>& clients, std::vector<std::string>& notes) {
    for (const ClientRecord& r : clients) {
        int64_t sent = 0, replied = 0;
        int ms = -1;
        for (const ClientEvent& e : r.events) {
            if (e.kind == ClientEvent::Kind::send && work_ms_of(e.text) >= 0) {
                ms = work_ms_of(e.text);
                sent = e.start_ns;
            }
            if (e.kind == ClientEvent::Kind::reply && ms >= 0 && replied == 0) {
                replied = e.end_ns;
            }
        }
        if (ms <= 0 || replied == 0) {
            continue;
        }
        bool seen = false;
        for (size_t i = 0; i < server_lanes; ++i) {
            for (const Bar& b : lanes[i].bars) {
                seen = seen ||
                       (b.activity == Activity::handler && b.end_ns > sent && b.start_ns < replied);
            }
        }
        if (seen) {
            continue;
        }
        size_t best_lane = 0;
        int64_t best_start = 0, best_end = 0;
        for (size_t i = 0; i < server_lanes; ++i) {
            const std::vector<Bar>& bars = lanes[i].bars;
            int64_t busy_until = 0;
            for (size_t k = 0; k + 1 < bars.size(); ++k) {
                busy_until = std::max(busy_until, bars[k].end_ns);
                int64_t gap_start = std::max(busy_until, sent);
                int64_t gap_end = std::min(bars[k + 1].start_ns, replied);
                if (gap_end - gap_start > best_end - best_start) {
                    best_lane = i;
                    best_start = gap_start;
                    best_end = gap_end;
                }
            }
        }
        if (best_end - best_start < static_cast<int64_t>(ms) * 800000) {
            notes.push_back("The WORK " + std::to_string(ms) +
                            " ran on a thread that makes no traced call, so it is not drawn.");
            continue;
        }
        Bar b;
        b.start_ns = best_start;
        b.end_ns = best_end;
        b.activity = Activity::handler;
        b.client = r.label;
        b.source = "inferred";
        b.label = "WORK " + std::to_string(ms) + " ms";
        b.title = "the handler ran WORK " + std::to_string(ms) + " (client " + r.label +
                  "): no traced call on this thread for " +
                  format_us(us_of(best_end - best_start)) + " [inferred]";
        std::vector<Bar>& bars = lanes[best_lane].bars;
        bars.insert(
            std::upper_bound(bars.begin(), bars.end(), b,
                             [](const Bar& x, const Bar& y) { return x.start_ns < y.start_ns; }),
            b);
        notes.push_back(
            "The WORK bar is inferred: the thread made no traced call for as long as "
            "the handler ran.");
    }
}

std::string quoted(const std::string& text) {
    std::string out;
    for (char ch : text) {
        out += ch == '\n' ? std::string("\\n") : std::string(1, ch);
    }
    return "\"" + out + "\"";
}

Lane client_lane(const ClientRecord& r) {
    Lane lane;
    lane.label = "client " + r.label;
    lane.source = "iolab's client";
    lane.client = true;
    int64_t request_sent = 0;
    for (const ClientEvent& e : r.events) {
        Bar b;
        b.start_ns = e.start_ns;
        b.end_ns = e.end_ns;
        b.client = r.label;
        b.source = "client";
        switch (e.kind) {
            case ClientEvent::Kind::connect:
                b.activity = Activity::other;
                b.label = "connect";
                b.title = "connect: " + format_us(us_of(e.end_ns - e.start_ns));
                break;
            case ClientEvent::Kind::send:
                b.activity = Activity::copy;
                b.label = "send";
                b.title = "send " + quoted(e.text) + ", " + format_us(us_of(e.end_ns - e.start_ns));
                if (!e.text.empty() && e.text.back() == '\n') {
                    request_sent = e.end_ns;
                }
                break;
            case ClientEvent::Kind::reply:
                b.activity = Activity::wait;
                b.start_ns = request_sent != 0 ? request_sent : e.start_ns;
                b.label = "waiting for " + e.text;
                b.title = "waited " + format_us(us_of(e.end_ns - b.start_ns)) + " for the reply " +
                          quoted(e.text + "\n");
                request_sent = e.end_ns;
                break;
            case ClientEvent::Kind::close:
                b.activity = Activity::other;
                b.label = "close";
                b.title = "close";
                break;
        }
        lane.bars.push_back(std::move(b));
    }
    return lane;
}

// The kernel side of io_uring (or Linux AIO): each completion, from the client's send that
// produced it to the moment the server reaped it. No thread of the server ran in between.
std::optional<Lane> kernel_lane(const std::vector<Call>& calls, const FdOwners& owners,
                                const std::vector<ClientRecord>& clients) {
    Lane lane;
    bool uring = false;
    std::map<std::string, int64_t> last_reaped;
    for (const Call& c : calls) {
        if (!is_completion(c.name)) {
            continue;
        }
        uring = uring || c.name.rfind("cqe_", 0) == 0;
        bool is_recv = c.name == "cqe_recv" || c.name == "pread_event";
        if (!(is_recv && c.result > 0) && c.name != "cqe_accept") {
            continue;
        }
        std::string client = c.name == "cqe_accept" ? "" : owners.owner(c.fd, c.start_ns, c.tid);
        int64_t from = 0;
        for (const ClientRecord& r : clients) {
            if (!client.empty() && r.label != client) {
                continue;
            }
            for (const ClientEvent& e : r.events) {
                bool fits = c.name == "cqe_accept" ? e.kind == ClientEvent::Kind::connect
                                                   : e.kind == ClientEvent::Kind::send;
                if (fits && e.start_ns <= c.start_ns && e.start_ns > last_reaped[r.label] &&
                    (from == 0 || e.start_ns < from)) {
                    from = e.start_ns;
                }
            }
        }
        if (from == 0) {
            continue;
        }
        if (!client.empty()) {
            last_reaped[client] = c.start_ns;
        }
        Bar b;
        b.start_ns = from;
        b.end_ns = c.start_ns;
        b.activity = c.name == "cqe_accept" ? Activity::other : Activity::completion;
        b.client = client;
        b.source = "inferred";
        b.label = c.name == "cqe_accept" ? "accept" : "recv in flight";
        b.title = c.name == "cqe_accept"
                      ? "the kernel accepted the connection; the server reaped its CQE " +
                            format_us(us_of(c.start_ns - from)) + " after the client's connect"
                      : "the kernel received " + std::to_string(c.result) +
                            " bytes for fd=" + std::to_string(c.fd) +
                            (client.empty() ? "" : " (client " + client + ")") +
                            ": from the client's send until the server reaped the CQE " +
                            format_us(us_of(c.start_ns - from)) +
                            " later, the recv was the kernel's: it copied the bytes into the "
                            "server's buffer and posted the completion. No server thread called "
                            "recv.";
        lane.bars.push_back(std::move(b));
    }
    if (lane.bars.empty()) {
        return std::nullopt;
    }
    lane.label = uring ? "io_uring (kernel)" : "Linux AIO (kernel)";
    lane.source = "inferred from the completions";
    std::sort(lane.bars.begin(), lane.bars.end(),
              [](const Bar& a, const Bar& b) { return a.start_ns < b.start_ns; });
    return lane;
}

}  // namespace

Chart build_chart(const ChartInput& in) {
    Chart chart;
    chart.title = in.title;
    chart.subtitle = in.subtitle;
    chart.t0_ns = in.t0_ns;
    chart.t1_ns = in.t1_ns;

    std::vector<Call> calls = in.calls;
    std::sort(calls.begin(), calls.end(),
              [](const Call& a, const Call& b) { return a.start_ns < b.start_ns; });
    // The trace is the first source: a call strace also saw on a traced thread is kept once,
    // from the trace, whose stamps the strace stop does not delay.
    std::map<int, std::vector<std::pair<int64_t, int64_t>>> traced;
    for (const Call& c : calls) {
        if (c.source == "--trace") {
            traced[c.tid].emplace_back(c.start_ns - 20000, c.end_ns() + 20000);
        }
    }
    std::vector<Call> kept;
    for (const Call& c : calls) {
        if (is_noise(c)) {
            continue;
        }
        if (c.source == "strace") {
            auto it = traced.find(c.tid);
            bool dup = it != traced.end() &&
                       std::any_of(it->second.begin(), it->second.end(), [&](const auto& span) {
                           return c.start_ns < span.second && c.end_ns() > span.first &&
                                  !is_handler(c.name);
                       });
            if (dup) {
                continue;
            }
        }
        kept.push_back(c);
    }

    FdOwners owners(kept, in.clients, in.t0_ns, in.processes);

    // One lane per thread: the main thread first, then the others as they first appear.
    std::vector<int> order;
    std::map<int, std::vector<Bar>> by_tid;
    std::map<int, std::set<std::string>> sources;
    for (const Call& c : kept) {
        if (c.end_ns() < in.t0_ns || c.start_ns > in.t1_ns) {
            continue;
        }
        if (by_tid.find(c.tid) == by_tid.end()) {
            order.push_back(c.tid);
        }
        std::string client = c.fd >= 0 ? owners.owner(c.fd, c.start_ns, c.tid) : "";
        by_tid[c.tid].push_back(bar_of(c, client, in.clients));
        sources[c.tid].insert(c.source);
    }
    std::stable_partition(order.begin(), order.end(), [&](int t) { return t == in.server_pid; });
    std::stable_partition(order.begin(), order.end(),
                          [&](int t) { return sources[t].count("--trace") > 0; });
    int threads = 0, helpers = 0;
    for (int tid : order) {
        Lane lane;
        bool traced_here = sources[tid].count("--trace") > 0;
        if (tid == 0) {
            lane.label = "server";
        } else if (tid == in.server_pid) {
            lane.label = in.processes ? "parent process" : "main thread";
        } else if (!traced_here && !in.helper_name.empty()) {
            lane.label = in.helper_name + " " + std::to_string(++helpers);
        } else {
            lane.label = (in.processes ? "child process " : "thread ") +
                         std::to_string(++threads + (in.processes ? 0 : 1));
        }
        lane.source = traced_here ? (sources[tid].count("strace") ? "--trace + strace" : "--trace")
                                  : "strace";
        lane.bars = std::move(by_tid[tid]);
        clip(lane.bars, in.t0_ns, in.t1_ns);
        merge_handler_slices(lane.bars);
        chart.lanes.push_back(std::move(lane));
    }
    size_t server_lanes = chart.lanes.size();
    infer_handlers(chart.lanes, server_lanes, in.clients, chart.notes);
    if (auto k = kernel_lane(kept, owners, in.clients)) {
        clip(k->bars, in.t0_ns, in.t1_ns);
        chart.lanes.push_back(std::move(*k));
    }
    for (const ClientRecord& r : in.clients) {
        Lane lane = client_lane(r);
        clip(lane.bars, in.t0_ns, in.t1_ns);
        chart.lanes.push_back(std::move(lane));
    }
    return chart;
}

void summarize(const Chart& chart, const ChartInput& in, TimelineResult& result) {
    result.lanes.clear();
    for (const Lane& lane : chart.lanes) {
        LaneSummary s;
        s.label = lane.label;
        s.source = lane.source;
        s.client = lane.client;
        for (const Bar& b : lane.bars) {
            double all = us_of(b.end_ns - b.start_ns);
            ++s.calls;
            switch (b.activity) {
                case Activity::wait:
                    if (b.split_ns) {
                        s.wait_us += us_of(*b.split_ns - b.start_ns);
                        s.copy_us += us_of(b.end_ns - *b.split_ns);
                    } else {
                        s.wait_us += all;
                    }
                    break;
                case Activity::polling:
                    s.polling_us += all;
                    break;
                case Activity::copy:
                    s.copy_us += all;
                    break;
                case Activity::handler:
                    s.handler_us += all;
                    break;
                case Activity::other:
                case Activity::completion:
                    s.other_us += all;
                    break;
            }
        }
        result.lanes.push_back(std::move(s));
    }

    result.requests = 0;
    std::string slow;
    int64_t slow_last_send = 0;
    for (const ClientRecord& r : in.clients) {
        int sends = 0;
        for (const ClientEvent& e : r.events) {
            result.requests += e.kind == ClientEvent::Kind::reply ? 1 : 0;
            if (e.kind == ClientEvent::Kind::send) {
                ++sends;
                if (sends > 1 && slow.empty()) {
                    slow = r.label;
                }
                if (slow == r.label) {
                    slow_last_send = e.start_ns;
                }
            }
        }
    }

    result.server_syscalls = 0;
    result.longest_read_us = 0;
    for (const Call& c : in.calls) {
        if (c.end_ns() < in.t0_ns || c.start_ns > in.t1_ns) {
            continue;
        }
        if (c.source == "--trace" && !is_completion(c.name) && c.name != "work") {
            ++result.server_syscalls;
        }
        if (is_read(c.name) && !(c.source == "strace" && c.fd == 2)) {
            result.longest_read_us = std::max(result.longest_read_us, us_of(c.dur_ns));
        }
    }
    result.blocked_in_read = result.longest_read_us > us_of(kLongCallNs);
    result.syscalls_per_request =
        result.requests > 0 ? static_cast<double>(result.server_syscalls) / result.requests : 0;

    result.blocking_recv_wait_us.reset();
    result.blocking_recv_copy_us.reset();
    for (const Lane& lane : chart.lanes) {
        if (lane.client) {
            continue;
        }
        for (const Bar& b : lane.bars) {
            if (b.read_call && b.split_ns && !slow.empty() && b.client == slow &&
                *b.split_ns == slow_last_send) {
                result.blocking_recv_wait_us = us_of(*b.split_ns - b.start_ns);
                result.blocking_recv_copy_us = us_of(b.end_ns - *b.split_ns);
            }
        }
    }
}

}  // namespace iolab::timeline
