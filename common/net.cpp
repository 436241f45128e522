#include "net.hpp"

#include "trace.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace iolab {

void throw_errno(const std::string& what) {
    throw std::system_error(errno, std::generic_category(), what);
}

SocketAddress parse_address(const std::string& host, uint16_t port, const std::string& what) {
    SocketAddress a;
    auto* v4 = reinterpret_cast<sockaddr_in*>(&a.storage);
    if (::inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(port);
        a.len = sizeof(sockaddr_in);
        return a;
    }
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&a.storage);
    if (::inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(port);
        a.len = sizeof(sockaddr_in6);
        return a;
    }
    throw std::system_error(EINVAL, std::generic_category(),
                            what + ": '" + host + "' is not a numeric IPv4 or IPv6 address");
}

std::string host_port(const std::string& host, uint16_t port) {
    if (host.find(':') != std::string::npos) {
        return "[" + host + "]:" + std::to_string(port);
    }
    return host + ":" + std::to_string(port);
}

Fd listen_tcp(const std::string& host, uint16_t port, int flags, bool reuse_port) {
    SocketAddress addr = parse_address(host, port, "listen");
    Fd fd(::socket(addr.family(), SOCK_STREAM | SOCK_CLOEXEC | flags, 0));
    if (!fd) {
        throw_errno("socket");
    }
    int on = 1;
    // SO_REUSEADDR lets a restarted server bind while old connections sit in TIME_WAIT.
    if (::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) < 0) {
        throw_errno("setsockopt SO_REUSEADDR");
    }
    if (reuse_port && ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) < 0) {
        throw_errno("setsockopt SO_REUSEPORT");
    }
    if (::bind(fd.get(), addr.get(), addr.len) < 0) {
        throw_errno("bind " + host_port(host, port));
    }
    if (::listen(fd.get(), SOMAXCONN) < 0) {
        throw_errno("listen " + host_port(host, port));
    }
    return fd;
}

Fd connect_tcp(const std::string& host, uint16_t port) {
    SocketAddress addr = parse_address(host, port, "connect");
    Fd fd(::socket(addr.family(), SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) {
        throw_errno("socket");
    }
    int rc;
    do {
        rc = ::connect(fd.get(), addr.get(), addr.len);
    } while (rc < 0 && errno == EINTR);
    if (rc < 0) {
        throw_errno("connect " + host_port(host, port));
    }
    return fd;
}

uint16_t local_port(int fd) {
    sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) < 0) {
        throw_errno("getsockname");
    }
    if (ss.ss_family == AF_INET6) {
        return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
    }
    return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
}

std::string format_address(const sockaddr* sa) {
    char text[INET6_ADDRSTRLEN] = "?";
    if (sa->sa_family == AF_INET6) {
        auto* v6 = reinterpret_cast<const sockaddr_in6*>(sa);
        ::inet_ntop(AF_INET6, &v6->sin6_addr, text, sizeof text);
        return "[" + std::string(text) + "]:" + std::to_string(ntohs(v6->sin6_port));
    }
    auto* v4 = reinterpret_cast<const sockaddr_in*>(sa);
    ::inet_ntop(AF_INET, &v4->sin_addr, text, sizeof text);
    return std::string(text) + ":" + std::to_string(ntohs(v4->sin_port));
}

std::string local_address(int fd) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) < 0) {
        return "?";
    }
    return format_address(reinterpret_cast<sockaddr*>(&ss));
}

std::string peer_address(int fd) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) < 0) {
        return "?";
    }
    return format_address(reinterpret_cast<sockaddr*>(&ss));
}

void set_nonblocking(int fd) {
    int flags = ::fcntl(fd, F_GETFL, 0);
    if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
        throw_errno("fcntl O_NONBLOCK");
    }
}

void set_nodelay(int fd) {
    int on = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
}

int write_all(int fd, const void* data, size_t len) {
    auto* p = static_cast<const char*>(data);
    while (len > 0) {
        // Traced and counted like the models' own calls, so STATS syscalls= is honest for the
        // blocking models, whose sends all go through here.
        ssize_t n = TRACE_IO("send", fd, ::send(fd, p, len, MSG_NOSIGNAL));
        if (n < 0 && errno == ENOTSOCK) {
            n = ::write(fd, p, len);
        }
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        p += n;
        len -= static_cast<size_t>(n);
    }
    return 0;
}

long read_some(int fd, void* buf, size_t len) {
    for (;;) {
        ssize_t n = ::read(fd, buf, len);
        if (n >= 0) {
            return n;
        }
        if (errno != EINTR) {
            return -errno;
        }
    }
}

long read_full(int fd, void* buf, size_t len) {
    auto* p = static_cast<char*>(buf);
    size_t got = 0;
    while (got < len) {
        long n = read_some(fd, p + got, len - got);
        if (n < 0) {
            return n;
        }
        if (n == 0) {
            break;
        }
        got += static_cast<size_t>(n);
    }
    return static_cast<long>(got);
}

}  // namespace iolab

#include <poll.h>

#include <chrono>

namespace iolab {

void shutdown_and_drain(Fd& fd, int ms) {
    ::shutdown(fd.get(), SHUT_WR);
    auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    char sink[4096];
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                        until - std::chrono::steady_clock::now())
                        .count();
        if (left <= 0) {
            break;
        }
        pollfd p{fd.get(), POLLIN, 0};
        int rc = ::poll(&p, 1, static_cast<int>(left));
        if (rc < 0 && errno == EINTR) {
            continue;
        }
        if (rc <= 0) {
            break;
        }
        ssize_t n = ::recv(fd.get(), sink, sizeof sink, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) {
            break;
        }
    }
    fd.reset();
}

void set_io_timeouts(int fd, double seconds) {
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(seconds);
    tv.tv_usec = static_cast<suseconds_t>((seconds - static_cast<double>(tv.tv_sec)) * 1e6);
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

}  // namespace iolab
