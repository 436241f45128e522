// The application's event handlers, the part of 08_reactor a server author writes once the
// reactor exists: an Acceptor (the listening socket), a Connection (one client: the QA protocol
// or echo, output buffering, backpressure, the polite close), a StopHandler (SIGINT/SIGTERM's
// self-pipe), and the Connections of one loop (the idle-timeout sweep). Nothing here waits: each
// handler runs when the reactor says its descriptor is ready, does what it can, and returns.
//
// Every variant (server.cpp, server_multi.cpp, server_workers.cpp) uses these handlers; what
// differs between them is only how many reactors run and which thread runs WORK.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "08_reactor/reactor.hpp"
#include "common/conn.hpp"
#include "common/options.hpp"
#include "common/qa.hpp"

namespace reactor {

using iolab::LineParser;
using iolab::ServerOptions;
using iolab::ServerStats;

class Connection;

// What every loop shares: the options and one set of counters for the whole process.
struct Server {
    ServerOptions opt;
    ServerStats stats;
    // Who runs WORK. Empty: the handler itself blocks for it, stalling its whole reactor (the
    // seed's "big handler"). Set (server_workers.cpp): it hands the request to another thread
    // and the reply arrives later through Connection::finish_work.
    std::function<void(Connection&, int ms)> offload;
};

// The connections one reactor serves, kept in a list so that a timer can sweep them for
// --idle-timeout, --request-timeout and for polite closes that have waited long enough.
class Connections {
public:
    Connections(Reactor& reactor, Server& server);
    // A new client: registers a Connection handler for it with this reactor. `counted` is false
    // for a refused client, which gets `ERR server full` and is not in stats.conns.
    // Returns nullptr if the kernel would not watch one more descriptor.
    Connection* open(Fd conn_fd, bool counted = true);
    // The connection at `fd`, if it is still the one with this serial number.
    Connection* find(int fd, uint64_t serial) const;
    void forget(Connection& c);

    Reactor& reactor() { return reactor_; }
    Server& server() { return server_; }

private:
    void sweep();

    Reactor& reactor_;
    Server& server_;
    std::vector<Connection*> all_;
    uint64_t next_serial_ = 1;
};

class Connection : public EventHandler {
public:
    Connection(Connections& table, Fd conn_fd, bool counted, uint64_t serial);
    int handle() const override { return fd_.get(); }
    void handle_read() override;
    void handle_write() override;
    void handle_error() override { close(); }

    // Queue `last_words`, send them, shut down the write side, and drain for a moment.
    void say_goodbye(std::string_view last_words);
    // Called by the sweep timer.
    void check_timers(Clock::time_point now);
    // server_workers.cpp: a worker finished this connection's WORK; in the loop's thread.
    void finish_work(int ms);
    void close();

    uint64_t serial() const { return serial_; }
    Reactor& reactor() { return table_.reactor(); }

private:
    friend class Connections;
    void answer_buffered();
    bool flush();
    void progress();
    bool wants_input() const;

    enum class State : uint8_t { open, closing, closed };

    Connections& table_;
    Fd fd_;
    LineParser in_;
    std::string out_;  // replies not yet accepted by the kernel's send buffer
    Clock::time_point last_active_;
    // --request-timeout: when the unfinished request line in in_ began; unset while none is.
    std::optional<Clock::time_point> request_since_;
    uint64_t serial_;
    uint32_t index_ = 0;  // position in table_.all_
    State state_ = State::open;
    bool counted_;
    bool busy_ = false;        // a worker holds this connection's WORK
    bool paused_ = false;      // out_ passed the high-water mark; reading stops
    bool more_lines_ = false;  // complete requests wait in in_ (paused or busy)
    bool peer_eof_ = false;    // the client shut down its write side
    bool write_shut_ = false;  // closing: our FIN has gone out, we drain
};

// The listening socket's handler: accepts every pending connection and passes each on.
class Acceptor : public EventHandler {
public:
    // `local` takes the refused connections; `on_accept` takes the others.
    Acceptor(Fd listen_fd, Connections& local, std::function<void(Fd)> on_accept);
    int handle() const override { return listen_fd_.get(); }
    void handle_read() override;

private:
    Fd listen_fd_;
    Connections& local_;
    std::function<void(Fd)> on_accept_;
    iolab::SpareFd spare_fd_;  // held in reserve for EMFILE, see handle_read
};

// SIGINT/SIGTERM: the stop self-pipe turned readable. The byte is left in the pipe, so every
// reactor watching it (one per loop) sees it too.
class StopHandler : public EventHandler {
public:
    explicit StopHandler(Reactor& r) : reactor_(r) {}
    int handle() const override;
    void handle_read() override { reactor_.stop(); }

private:
    Reactor& reactor_;
};

}  // namespace reactor
