#include "harness/clients.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/net.hpp"

namespace iolab {

namespace {

using Clock = std::chrono::steady_clock;

int ms_left(Clock::time_point until) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now());
    return left.count() < 0 ? 0 : static_cast<int>(left.count());
}

// Waits for `events` on fd until `until`; true if ready.
bool wait_for(int fd, short events, Clock::time_point until) {
    for (;;) {
        pollfd p{fd, events, 0};
        int rc = ::poll(&p, 1, ms_left(until));
        if (rc < 0 && errno == EINTR) {
            continue;
        }
        return rc > 0;
    }
}

}  // namespace

Client Client::connect(uint16_t port, const std::string& host, std::chrono::milliseconds deadline) {
    Client c;
    SocketAddress addr = parse_address(host, port, "connect");
    Fd fd(::socket(addr.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd) {
        throw_errno("socket");
    }
    int rc = ::connect(fd.get(), addr.get(), addr.len);
    if (rc < 0 && errno != EINPROGRESS) {
        throw_errno("connect " + host_port(host, port));
    }
    if (rc < 0) {
        if (!wait_for(fd.get(), POLLOUT, Clock::now() + deadline)) {
            throw std::system_error(ETIMEDOUT, std::generic_category(),
                                    "connect " + host_port(host, port));
        }
        int err = 0;
        socklen_t len = sizeof err;
        ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) {
            throw std::system_error(err, std::generic_category(),
                                    "connect " + host_port(host, port));
        }
    }
    set_nodelay(fd.get());
    c.fd_ = std::move(fd);
    return c;
}

bool Client::send(std::string_view bytes, std::chrono::milliseconds deadline) {
    auto until = Clock::now() + deadline;
    while (!bytes.empty()) {
        ssize_t n = ::send(fd_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL);
        if (n > 0) {
            bytes.remove_prefix(static_cast<size_t>(n));
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (!wait_for(fd_.get(), POLLOUT, until)) {
                return false;
            }
            continue;
        }
        return false;
    }
    return true;
}

std::optional<std::string> Client::read_line(std::chrono::milliseconds deadline) {
    auto until = Clock::now() + deadline;
    for (;;) {
        size_t nl = pending_.find('\n');
        if (nl != std::string::npos) {
            std::string line = pending_.substr(0, nl);
            pending_.erase(0, nl + 1);
            return line;
        }
        char buf[65536];
        ssize_t n = ::recv(fd_.get(), buf, sizeof buf, 0);
        if (n > 0) {
            pending_.append(buf, static_cast<size_t>(n));
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (!wait_for(fd_.get(), POLLIN, until)) {
                return std::nullopt;
            }
            continue;
        }
        return std::nullopt;
    }
}

std::string Client::read_exact(size_t want, std::chrono::milliseconds deadline) {
    auto until = Clock::now() + deadline;
    std::string out = std::move(pending_);
    pending_.clear();
    if (out.size() > want) {
        pending_ = out.substr(want);
        out.resize(want);
        return out;
    }
    out.reserve(want);
    std::string buf(1 << 16, '\0');
    while (out.size() < want) {
        ssize_t n = ::recv(fd_.get(), buf.data(), std::min(buf.size(), want - out.size()), 0);
        if (n > 0) {
            out.append(buf.data(), static_cast<size_t>(n));
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (!wait_for(fd_.get(), POLLIN, until)) {
                break;
            }
            continue;
        }
        break;
    }
    return out;
}

std::string Client::ask(std::string_view request, std::chrono::milliseconds deadline) {
    std::string line(request);
    line += '\n';
    if (!send(line, deadline)) {
        return "<no reply>";
    }
    auto reply = read_line(deadline);
    return reply ? *reply : "<no reply>";
}

std::optional<std::string> Client::read_until_close(std::chrono::milliseconds deadline) {
    auto until = Clock::now() + deadline;
    std::string out = std::move(pending_);
    pending_.clear();
    char buf[65536];
    for (;;) {
        ssize_t n = ::recv(fd_.get(), buf, sizeof buf, 0);
        if (n > 0) {
            out.append(buf, static_cast<size_t>(n));
            continue;
        }
        if (n == 0 || (n < 0 && errno == ECONNRESET)) {
            return out;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (!wait_for(fd_.get(), POLLIN, until)) {
                return std::nullopt;
            }
            continue;
        }
        return out;
    }
}

void Client::shutdown_write() {
    ::shutdown(fd_.get(), SHUT_WR);
}

void Client::reset() {
    linger lg{1, 0};
    ::setsockopt(fd_.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    fd_.reset();
}

}  // namespace iolab
