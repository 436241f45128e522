// One client served with blocking calls, the same loop as 01_blocking: what both 02 variants run
// on the thread that owns the connection. server.cpp gives each connection a thread of its own;
// server_pool.cpp hands connections to a fixed set of workers. The difference between them is
// who runs this code, not the code.
#pragma once

#include <sys/socket.h>

#include <cerrno>
#include <string>

#include "common/fd.hpp"
#include "common/net.hpp"
#include "common/options.hpp"
#include "common/qa.hpp"
#include "common/trace.hpp"

namespace iolab {

struct Conn {
    Fd fd;
    LineParser in;
    std::string out;  // replies to one batch of requests, sent with one write_all
};

// How a connection's thread is done with it: close it, or first let the client read an ERR line.
enum class Ending { close, drain };

inline bool flush(Conn& c) {
    int rc = write_all(c.fd.get(), c.out);
    c.out.clear();
    return rc == 0;
}

// Question-answer mode, the same loop as 01: read, answer every complete line, repeat.
inline Ending serve_qa(Conn& c, const ServerOptions& opt, ServerStats& stats) {
    char buf[16384];
    for (;;) {
        // Only this thread sleeps here (the connection's own thread, or the pool worker that
        // took it). The kernel wakes it when this client's bytes arrive.
        ssize_t n = TRACE_IO("recv", c.fd.get(), ::recv(c.fd.get(), buf, sizeof buf, 0));
        if (n == 0) {
            return Ending::close;  // the client closed its side, or main shut us down
        }
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {  // SO_RCVTIMEO expired
                c.out += kIdleTimeout;
                flush(c);
            }
            return Ending::close;
        }
        c.in.feed(buf, static_cast<size_t>(n));
        while (auto line = c.in.next()) {
            Request req = parse_request(*line);
            if (req.verb == Verb::work && !block_for_work(req.work_ms)) {
                return Ending::close;  // stopping
            }
            append_reply(c.out, req, stats);
            stats.requests.fetch_add(1, std::memory_order_relaxed);
            if (req.verb == Verb::quit) {
                flush(c);
                return Ending::close;
            }
        }
        if (c.in.too_long()) {
            c.out += too_long_reply(opt.max_line);
            flush(c);
            return Ending::drain;
        }
        if (!flush(c)) {
            return Ending::close;
        }
    }
}

// Echo mode: every byte back; EOF means the client has shut down its write side.
inline Ending serve_echo(Conn& c) {
    char buf[65536];
    for (;;) {
        ssize_t n = TRACE_IO("recv", c.fd.get(), ::recv(c.fd.get(), buf, sizeof buf, 0));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return Ending::close;
        }
        if (write_all(c.fd.get(), buf, static_cast<size_t>(n)) != 0) {
            return Ending::close;
        }
    }
}

}  // namespace iolab
