#include "harness/loadgen.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstring>
#include <system_error>

#include "common/net.hpp"
#include "common/qa.hpp"

namespace iolab {

int64_t now_ns() {
    timespec ts;
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

double thread_cpu_s() {
    timespec ts;
    ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

uint64_t OpenLoopSchedule::due_by(int64_t t) const {
    if (t < start_) {
        return 0;
    }
    // due(k) <= t  <=>  k <= (t - start) * rate / 1e9; the floating-point estimate is corrected
    // against due() itself so that the two never disagree by one at a boundary.
    auto k = static_cast<uint64_t>(std::floor(static_cast<double>(t - start_) * rate_ / 1e9));
    while (due(k + 1) <= t) {
        ++k;
    }
    while (k > 0 && due(k) > t) {
        --k;
    }
    return k + 1;
}

// ---------------------------------------------------------------------------------------------
// ReplyChecker

namespace {

std::string printable(std::string_view s, size_t max = 40) {
    std::string out = "\"";
    for (size_t i = 0; i < s.size() && i < max; ++i) {
        unsigned char ch = static_cast<unsigned char>(s[i]);
        if (ch == '\n') {
            out += "\\n";
        } else if (ch == '\r') {
            out += "\\r";
        } else if (ch < 0x20 || ch >= 0x7f) {
            char esc[8];
            std::snprintf(esc, sizeof esc, "\\x%02x", ch);
            out += esc;
        } else {
            out += static_cast<char>(ch);
        }
    }
    return out + (s.size() > max ? "...\"" : "\"");
}

}  // namespace

void ReplyChecker::expect(std::string_view reply) {
    expected_.append(reply);
    ends_.push_back(expected_.size());
}

long ReplyChecker::feed(std::string_view data) {
    size_t avail = expected_.size() - pos_;
    size_t n = std::min(avail, data.size());
    size_t same = 0;
    while (same < n && expected_[pos_ + same] == data[same]) {
        ++same;
    }
    pos_ += same;
    offset_ += same;
    long done = 0;
    while (!ends_.empty() && ends_.front() <= pos_) {
        start_ = ends_.front();
        ends_.pop_front();
        ++done;
    }
    if (same < data.size()) {
        at_start_ = pos_ == start_;
        unexpected_.assign(data.substr(same));
        if (same < n) {
            why_ = "reply byte " + std::to_string(offset_) + " differs: expected " +
                   printable(std::string_view(expected_).substr(pos_)) + ", got " +
                   printable(unexpected_);
        } else {
            why_ = "bytes nobody asked for: " + printable(unexpected_);
        }
        return -1;
    }
    if (pos_ == expected_.size()) {
        expected_.clear();
        pos_ = 0;
        start_ = 0;
    } else if (pos_ >= 65536) {
        expected_.erase(0, pos_);
        for (size_t& e : ends_) {
            e -= pos_;
        }
        start_ -= pos_;
        pos_ = 0;
    }
    return done;
}

void ReplyChecker::clear() {
    expected_.clear();
    ends_.clear();
    pos_ = 0;
    start_ = 0;
    at_start_ = false;
    unexpected_.clear();
}

bool is_refusal(std::string_view bytes) {
    return bytes == kServerBusy || bytes == kServerFull;
}

bool could_be_refusal(std::string_view bytes) {
    auto begins = [&](std::string_view line) {
        return bytes.size() <= line.size() && line.substr(0, bytes.size()) == bytes;
    };
    return begins(kServerBusy) || begins(kServerFull);
}

void make_request(Mode mode, size_t payload, uint64_t conn, uint64_t seq, std::string& request,
                  std::string& reply) {
    static const char kAlphabet[] =
        "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    request.clear();
    reply.clear();
    if (mode == Mode::qa && payload == 0) {
        request = "PING\n";
        reply = "PONG\n";
        return;
    }
    size_t text_len = mode == Mode::qa ? payload : std::max<size_t>(payload, 1) - 1;
    char head[48];
    int head_len = std::snprintf(head, sizeof head, "%llu:%llu:", (unsigned long long)conn,
                                 (unsigned long long)seq);
    for (size_t i = 0; i < text_len; ++i) {
        reply += i < static_cast<size_t>(head_len) ? head[i] : kAlphabet[(seq + conn + i) % 62];
    }
    reply += '\n';
    request = mode == Mode::qa ? "ECHO " + reply : reply;
}

// ---------------------------------------------------------------------------------------------
// LoadGen

struct LoadGen::Conn {
    enum class State { idle, connecting, open, dead };
    Fd fd;
    size_t target = 0;
    uint64_t id = 0;
    bool work = false;  // sends WORK in a closed loop (demo --stall)
    State state = State::idle;
    bool want_out = false;  // EPOLLOUT is in the interest set
    std::string out;        // bytes not yet accepted by send(2)
    size_t out_off = 0;
    ReplyChecker check;
    // Bytes that came in place of a reply and may be a refusal line; it is one only if the
    // server closes after exactly that line, so the verdict waits for the close.
    std::string refusal;
    std::deque<int64_t> due;  // when each request in flight was due, oldest first
    uint64_t seq = 0;
    int64_t connect_started = 0;  // connect per request: the next request's latency starts here
};

struct LoadGen::Target {
    sockaddr_storage addr{};
    socklen_t addr_len = 0;
    std::string name;
    double rate = 0;
    int work_ms = 0;
    size_t first = 0;  // load connections: conns_[first, first + count)
    size_t count = 0;
    size_t end = 0;  // with the WORK connections: conns_[first, end)
    OpenLoopSchedule schedule;
    uint64_t next_k = 0;
    uint64_t outstanding = 0;
    TargetStats stats;
};

LoadGen::LoadGen(LoadSpec spec) : spec_(spec), buf_(256 * 1024) {
    epfd_.reset(::epoll_create1(EPOLL_CLOEXEC));
    if (!epfd_) {
        throw_errno("epoll_create1");
    }
}

LoadGen::~LoadGen() = default;

size_t LoadGen::add_target(const std::string& host, uint16_t port, int conns, double rate,
                           int work_conns, int work_ms) {
    Target t;
    t.name = host_port(host, port);
    SocketAddress addr = parse_address(host, port, "load target");
    t.addr = addr.storage;
    t.addr_len = addr.len;
    t.rate = rate;
    t.work_ms = work_ms;
    t.first = conns_.size();
    t.count = static_cast<size_t>(std::max(conns, 0));
    size_t index = targets_.size();
    for (int i = 0; i < conns + work_conns; ++i) {
        Conn c;
        c.target = index;
        c.id = conns_.size();
        c.work = i >= conns;
        conns_.push_back(std::move(c));
    }
    t.end = conns_.size();
    targets_.push_back(std::move(t));
    return index;
}

bool LoadGen::open_socket(Conn& c) {
    const Target& t = targets_[c.target];
    c.fd.reset(::socket(t.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!c.fd) {
        fail(c, Failure::lost, std::string("socket: ") + std::strerror(errno));
        return false;
    }
    int one = 1;
    ::setsockopt(c.fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    const auto* dst = reinterpret_cast<const sockaddr_in*>(&t.addr);
    if (spec_.connect_per_request && t.addr.ss_family == AF_INET &&
        (ntohl(dst->sin_addr.s_addr) >> 24) == 127) {
        // Every connection leaves a TIME_WAIT socket holding its 4-tuple for 60 s; one source
        // address has ~28,000 ephemeral ports, so a long run would run out. The whole of
        // 127.0.0.0/8 is loopback: spread the sources over 253 of its addresses.
        // IP_BIND_ADDRESS_NO_PORT lets connect(2) pick the port for the full 4-tuple.
        sockaddr_in src{};
        src.sin_family = AF_INET;
        src.sin_addr.s_addr = htonl((127u << 24) | (2 + next_source_++ % 253));
        ::setsockopt(c.fd.get(), IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (::bind(c.fd.get(), reinterpret_cast<const sockaddr*>(&src), sizeof src) < 0) {
            fail(c, Failure::lost, std::string("bind a source address: ") + std::strerror(errno));
            return false;
        }
    }
    c.connect_started = now_ns();
    int rc = ::connect(c.fd.get(), reinterpret_cast<const sockaddr*>(&t.addr), t.addr_len);
    if (rc < 0 && errno != EINPROGRESS) {
        // EADDRNOTAVAIL: out of ephemeral ports; EMFILE: out of descriptors. Either way the
        // connection is over and the point says why, rather than waiting forever.
        fail(c, Failure::lost, "connect " + t.name + ": " + std::strerror(errno));
        return false;
    }
    epoll_event ev{};
    ev.events = EPOLLOUT;
    ev.data.u64 = c.id;
    ::epoll_ctl(epfd_.get(), EPOLL_CTL_ADD, c.fd.get(), &ev);
    c.state = Conn::State::connecting;
    ++connecting_;
    return true;
}

void LoadGen::start_connects() {
    while (connecting_ < spec_.max_connecting && next_connect_ < conns_.size()) {
        open_socket(conns_[next_connect_++]);
    }
}

int LoadGen::connect(std::chrono::milliseconds deadline) {
    int64_t until = now_ns() + static_cast<int64_t>(deadline.count()) * 1000000;
    start_connects();
    run_until(until, [this] { return connecting_ > 0 || next_connect_ < conns_.size(); });
    int open = 0;
    for (Conn& c : conns_) {
        if (c.state == Conn::State::connecting || c.state == Conn::State::idle) {
            fail(c, Failure::lost,
                 "connect " + targets_[c.target].name + ": not connected within " +
                     std::to_string(deadline.count()) + " ms");
        }
        open += c.state == Conn::State::open;
    }
    next_connect_ = conns_.size();
    return open;
}

int LoadGen::open_conns(size_t target) const {
    int open = 0;
    for (const Conn& c : conns_) {
        // Connecting per request, a live connection is often between two connects.
        bool alive = c.state == Conn::State::open ||
                     (spec_.connect_per_request && c.state == Conn::State::connecting);
        open += c.target == target && alive;
    }
    return open;
}

uint64_t LoadGen::outstanding(size_t target) const {
    return targets_[target].outstanding;
}

int64_t LoadGen::oldest_waiting_ns(size_t target, int64_t now) const {
    int64_t oldest = 0;
    const Target& t = targets_[target];
    for (size_t i = t.first; i < t.end; ++i) {
        const Conn& c = conns_[i];
        if (!c.work && !c.due.empty()) {
            oldest = std::max(oldest, now - c.due.front());
        }
    }
    return oldest;
}

void LoadGen::on_connected(Conn& c) {
    c.state = Conn::State::open;
    targets_[c.target].stats.connects++;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = c.id;
    ::epoll_ctl(epfd_.get(), EPOLL_CTL_MOD, c.fd.get(), &ev);
    c.want_out = false;
    const Target& t = targets_[c.target];
    if (sending_ && (t.rate == 0 || c.work)) {
        if (spec_.connect_per_request && !c.work) {
            issue(c, c.connect_started);  // the handshake and the accept are part of its cost
        } else {
            int n = c.work ? 1 : spec_.pipeline;
            for (int i = 0; i < n; ++i) {
                issue(c, now_ns());
            }
        }
        flush(c);
    }
}

void LoadGen::fail(Conn& c, Failure kind, const std::string& why) {
    if (c.state == Conn::State::dead) {
        return;
    }
    if (c.state == Conn::State::connecting) {
        --connecting_;
    }
    std::string text = why;
    if (!c.refusal.empty()) {
        // The connection ended after bytes that came in place of a reply: exactly a refusal
        // line is the server's documented answer; anything shorter is a reply that differs.
        if (is_refusal(c.refusal)) {
            kind = Failure::refused;
            text = "refused: " + c.refusal.substr(0, c.refusal.size() - 1) + ", then " + why;
        } else {
            kind = Failure::wrong;
            text = c.check.why() + ", then " + why;
        }
    }
    TargetStats& st = targets_[c.target].stats;
    // first_error tells of the gravest kind seen: a wrong byte, then a lost connection, then
    // an unanswered request, then a refusal.
    bool gravest = kind == Failure::wrong  ? st.wrong == 0
                   : kind == Failure::lost ? st.wrong + st.lost == 0
                                           : st.errors == 0;
    if (gravest) {
        st.first_error = text;
    }
    (kind == Failure::refused ? st.refused : kind == Failure::wrong ? st.wrong : st.lost)++;
    st.errors++;
    Target& t = targets_[c.target];
    t.outstanding -= c.due.size();
    c.due.clear();
    c.check.clear();
    c.refusal.clear();
    c.out.clear();
    c.fd.reset();  // close(2) also takes it out of the epoll set
    c.state = Conn::State::dead;
}

void LoadGen::issue(Conn& c, int64_t due) {
    Target& t = targets_[c.target];
    if (c.work) {
        req_ = "WORK " + std::to_string(t.work_ms) + "\n";
        rep_ = "DONE " + std::to_string(t.work_ms) + "\n";
    } else {
        make_request(spec_.mode, spec_.payload, c.id, c.seq, req_, rep_);
    }
    ++c.seq;
    c.out.append(req_);
    c.check.expect(rep_);
    c.due.push_back(due);
    t.outstanding++;
    t.stats.sent++;
}

void LoadGen::flush(Conn& c) {
    while (c.out_off < c.out.size()) {
        ssize_t n = ::send(c.fd.get(), c.out.data() + c.out_off, c.out.size() - c.out_off,
                           MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            c.out_off += static_cast<size_t>(n);
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!c.want_out) {
                epoll_event ev{};
                ev.events = EPOLLIN | EPOLLOUT;
                ev.data.u64 = c.id;
                ::epoll_ctl(epfd_.get(), EPOLL_CTL_MOD, c.fd.get(), &ev);
                c.want_out = true;
            }
            return;
        }
        fail(c, Failure::lost, std::string("send: ") + std::strerror(errno));
        return;
    }
    c.out.clear();
    c.out_off = 0;
    if (c.want_out) {
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u64 = c.id;
        ::epoll_ctl(epfd_.get(), EPOLL_CTL_MOD, c.fd.get(), &ev);
        c.want_out = false;
    }
}

void LoadGen::answered(Conn& c, long replies, bool send_more) {
    Target& t = targets_[c.target];
    int64_t now = now_ns();
    for (long i = 0; i < replies; ++i) {
        int64_t due = c.due.front();
        c.due.pop_front();
        t.outstanding--;
        if (c.work) {
            t.stats.work_completed++;
        } else {
            t.stats.completed++;
            t.stats.latency.record(static_cast<uint64_t>(std::max<int64_t>(now - due, 0)));
        }
        if (send_more && sending_ && (t.rate == 0 || c.work) &&
            !(spec_.connect_per_request && !c.work)) {
            issue(c, now);
        }
    }
}

void LoadGen::on_readable(Conn& c) {
    ssize_t n = ::recv(c.fd.get(), buf_.data(), buf_.size(), MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        return;
    }
    if (n < 0) {
        // A reset after a refusal line still makes a refusal: the line was read first, since
        // the kernel hands out what is queued before it reports the reset.
        fail(c, Failure::lost, std::string("recv: ") + std::strerror(errno));
        return;
    }
    if (n == 0) {
        fail(c, Failure::lost,
             c.refusal.empty() ? "the server closed the connection with " +
                                     std::to_string(c.due.size()) + " replies outstanding"
                               : std::string("the server closed the connection"));
        return;
    }
    std::string_view data(buf_.data(), static_cast<size_t>(n));
    if (!c.refusal.empty()) {
        c.refusal.append(data);
        if (!could_be_refusal(c.refusal)) {
            fail(c, Failure::wrong, "more bytes came after it");
        }
        return;
    }
    size_t pending = c.check.pending();
    long done = c.check.feed(data);
    if (done < 0) {
        answered(c, static_cast<long>(pending - c.check.pending()), false);
        if (c.check.differs_at_reply_start() && could_be_refusal(c.check.unexpected())) {
            c.refusal = c.check.unexpected();
        } else {
            fail(c, Failure::wrong, c.check.why());
        }
        return;
    }
    answered(c, done, true);
    if (spec_.connect_per_request && !c.work && c.due.empty()) {
        // The reply is in: close (ours is the active close, so the TIME_WAIT is ours) and
        // connect again for the next request.
        c.fd.reset();
        c.check.clear();
        c.state = Conn::State::idle;
        if (sending_) {
            open_socket(c);
        }
        return;
    }
    flush(c);
}

void LoadGen::on_event(Conn& c, uint32_t events) {
    if (c.state == Conn::State::connecting) {
        int err = 0;
        socklen_t len = sizeof err;
        ::getsockopt(c.fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) {
            fail(c, Failure::lost,
                 "connect " + targets_[c.target].name + ": " + std::strerror(err));
        } else {
            --connecting_;
            on_connected(c);
        }
        start_connects();
        return;
    }
    if (c.state != Conn::State::open) {
        return;
    }
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        on_readable(c);
    }
    if (c.state == Conn::State::open && (events & EPOLLOUT)) {
        flush(c);
    }
}

void LoadGen::issue_due(int64_t now) {
    for (Target& t : targets_) {
        if (t.rate <= 0 || t.count == 0) {
            continue;
        }
        uint64_t due_count = t.schedule.due_by(now);
        for (; t.next_k < due_count; ++t.next_k) {
            Conn& c = conns_[t.first + t.next_k % t.count];
            if (c.state != Conn::State::open || !c.refusal.empty() ||
                c.due.size() >= static_cast<size_t>(spec_.max_outstanding)) {
                t.stats.skipped++;
                continue;
            }
            issue(c, t.schedule.due(t.next_k));
            flush(c);
        }
    }
}

int64_t LoadGen::next_due() const {
    int64_t next = INT64_MAX;
    for (const Target& t : targets_) {
        if (t.rate > 0 && t.count > 0) {
            next = std::min(next, t.schedule.due(t.next_k));
        }
    }
    return next;
}

uint64_t LoadGen::ping_all(std::chrono::milliseconds deadline) {
    uint64_t before = 0;
    for (const Target& t : targets_) {
        before += t.stats.completed;
    }
    int64_t now = now_ns();
    for (Conn& c : conns_) {
        if (c.state == Conn::State::open && !c.work) {
            issue(c, now);
            flush(c);
        }
    }
    run_until(now + static_cast<int64_t>(deadline.count()) * 1000000, [this] {
        for (const Target& t : targets_) {
            if (t.outstanding > 0) {
                return true;
            }
        }
        return false;
    });
    uint64_t after = 0;
    for (const Target& t : targets_) {
        after += t.stats.completed;
    }
    return after - before;
}

void LoadGen::start() {
    sending_ = true;
    int64_t now = now_ns();
    for (Target& t : targets_) {
        if (t.rate > 0) {
            t.schedule = OpenLoopSchedule(t.rate, now);
            t.next_k = 0;
        }
    }
    for (Conn& c : conns_) {
        const Target& t = targets_[c.target];
        if (c.state == Conn::State::open && (t.rate == 0 || c.work)) {
            int n = (c.work || spec_.connect_per_request) ? 1 : spec_.pipeline;
            for (int i = 0; i < n; ++i) {
                issue(c, now);
            }
            flush(c);
        }
    }
}

void LoadGen::run_until(int64_t until_ns, const std::function<bool()>& keep_going) {
    epoll_event events[512];
    for (;;) {
        int64_t now = now_ns();
        if (sending_) {
            issue_due(now);
        }
        if (now >= until_ns || (keep_going && !keep_going())) {
            return;
        }
        // Sleep until the next request is due, the end, or 100 ms; epoll_pwait2 takes a
        // nanosecond timeout, so an open loop at 100k requests/s keeps its schedule.
        int64_t wake = std::min(until_ns, now + 100000000);
        if (sending_) {
            wake = std::min(wake, next_due());
        }
        int64_t wait = std::max<int64_t>(wake - now, 0);
        timespec ts{static_cast<time_t>(wait / 1000000000), static_cast<long>(wait % 1000000000)};
        int nready = ::epoll_pwait2(epfd_.get(), events, 512, &ts, nullptr);
        if (nready < 0) {
            if (errno == EINTR) {
                continue;
            }
            throw_errno("epoll_pwait2");
        }
        for (int i = 0; i < nready; ++i) {
            on_event(conns_[events[i].data.u64], events[i].events);
        }
    }
}

void LoadGen::finish(std::chrono::milliseconds grace) {
    sending_ = false;
    int64_t until = now_ns() + static_cast<int64_t>(grace.count()) * 1000000;
    auto waiting = [this] {
        for (const Target& t : targets_) {
            if (t.outstanding > 0) {
                return true;
            }
        }
        return false;
    };
    if (waiting()) {
        run_until(until, waiting);
    }
    for (Conn& c : conns_) {
        if (c.state == Conn::State::open && !c.refusal.empty()) {
            fail(c, Failure::lost,
                 "not closed within " + std::to_string(grace.count()) + " ms after the line");
        }
    }
    for (Target& t : targets_) {
        uint64_t before = t.stats.timeouts;
        int conns = 0;
        for (size_t i = t.first; i < t.end; ++i) {
            Conn& c = conns_[i];
            if (c.state == Conn::State::open && !c.due.empty()) {
                t.stats.timeouts += c.due.size();
                t.outstanding -= c.due.size();
                c.due.clear();
                c.check.clear();
                ++conns;
            }
        }
        uint64_t unanswered = t.stats.timeouts - before;
        t.stats.errors += unanswered;
        if (unanswered > 0 && t.stats.wrong + t.stats.lost + before == 0) {
            t.stats.first_error = std::to_string(unanswered) + " request(s) on " +
                                  std::to_string(conns) + " connection(s) unanswered " +
                                  std::to_string(grace.count()) + " ms after the run";
        }
    }
}

void LoadGen::close_all() {
    for (Conn& c : conns_) {
        c.fd.reset();
        c.state = Conn::State::dead;
        c.due.clear();
        c.refusal.clear();
    }
    for (Target& t : targets_) {
        t.outstanding = 0;
    }
}

TargetStats& LoadGen::stats(size_t target) {
    return targets_[target].stats;
}

void LoadGen::reset_stats() {
    for (Target& t : targets_) {
        t.stats = TargetStats{};
    }
}

}  // namespace iolab
